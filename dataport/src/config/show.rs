//! `dataport config`: the effective configuration with each value's source (secrets masked),
//! and the README's reference table, both from the key declarations.

use std::fmt::Write as _;

use super::keys::{DefaultValue, KEYS, Key};
use super::value::Form;
use super::{Config, Overrides};

/// `dataport config [--json | --reference]`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    #[command(flatten)]
    overrides: Overrides,
    /// Print the effective values as JSON: `[{key, value, source}]`.
    #[arg(long, conflicts_with = "reference")]
    json: bool,
    /// Print the reference of every key as the README's Markdown table (no config is read).
    #[arg(long)]
    reference: bool,
}

/// The text of `dataport config`.
pub(crate) fn render(args: &ConfigArgs) -> Result<String, super::ConfigError> {
    if args.reference {
        return Ok(reference());
    }
    let config = Config::load(&args.overrides)?;
    if args.json {
        let rows: Vec<serde_json::Value> = config
            .effective
            .iter()
            .map(|e| {
                serde_json::json!({
                    "key": e.key.path,
                    "value": e.value,
                    "source": e.source.to_string(),
                })
            })
            .collect();
        return Ok(serde_json::Value::Array(rows).to_string() + "\n");
    }
    Ok(table(&config))
}

/// Key, value and source in aligned columns, after the config file's path.
fn table(config: &Config) -> String {
    let mut out = String::new();
    let file = config
        .config_file
        .as_ref()
        .map_or("none".to_string(), |p| p.display().to_string());
    let _ = writeln!(out, "# config file: {file}");
    for w in &config.warnings {
        let _ = writeln!(out, "# warning: {w}");
    }
    let key_width = KEYS.iter().map(|k| k.path.len()).max().unwrap_or(0);
    let value_width = config
        .effective
        .iter()
        .map(|e| e.value.chars().count().min(60))
        .max()
        .unwrap_or(0);
    for e in &config.effective {
        let _ = writeln!(
            out,
            "{:key_width$}  {:value_width$}  {}",
            e.key.path, e.value, e.source
        );
    }
    out
}

/// A flag's help: the doc line, the environment variable and the default.
pub(crate) fn help_line(key: &Key) -> String {
    let mut help = key.doc().replace('`', "");
    if let Some(env) = key.env() {
        let _ = write!(help, " [env: {env}]");
    }
    match key.default {
        DefaultValue::Value(v) => {
            let _ = write!(help, " [default: {v}]");
        }
        DefaultValue::Unset(meaning) => {
            let _ = write!(help, " [default: {}]", meaning.replace('`', ""));
        }
    }
    help
}

/// The Markdown table of every key (the README's configuration reference).
pub(crate) fn reference() -> String {
    let mut out =
        String::from("| YAML key | flag / env | default | meaning |\n|---|---|---|---|\n");
    for key in KEYS {
        let names = match (key.flag(), key.env()) {
            (Some(flag), Some(env)) => format!("`--{flag}` / `{env}`"),
            (None, Some(env)) => format!("`{env}` (no flag)"),
            _ => "file only".to_string(),
        };
        let names = if key.form == Form::List {
            names + " (comma separated)"
        } else {
            names
        };
        let default = match key.default {
            DefaultValue::Value(v) => format!("`{v}`"),
            DefaultValue::Unset(meaning) => meaning.to_string(),
        };
        let _ = writeln!(
            out,
            "| `{}` | {names} | {default} | {} |",
            key.path,
            key.doc().replace('|', "\\|")
        );
    }
    out
}

//! Where values come from, in rising precedence: the declared default, the YAML file, the
//! environment, the command line. The file's keys are checked against the declarations: an
//! unknown key is refused with the nearest known one suggested.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use yaml_serde::Value;

use super::ConfigError;
use super::keys::{DefaultValue, KEYS, Key, Naming};
use super::value::{Setting, invalid};

/// Where a key's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Default,
    File,
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("file"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Flag(flag) => write!(f, "flag --{flag}"),
        }
    }
}

/// A key's effective value as `dataport config` shows it (secrets masked).
#[derive(Debug, Clone)]
pub(crate) struct Effective {
    pub(crate) key: &'static Key,
    pub(crate) value: String,
    pub(crate) source: Source,
}

/// The values given for keys, by key path.
pub(crate) struct Layers<'a> {
    pub(crate) file: BTreeMap<String, Value>,
    pub(crate) env: &'a dyn Fn(&str) -> Option<String>,
    pub(crate) flags: &'a BTreeMap<String, String>,
}

impl Layers<'_> {
    /// A key's value: flag, else environment, else file, else the default.
    pub(crate) fn value<T: Setting>(
        &self,
        key: &'static Key,
        shown: &mut Vec<Effective>,
    ) -> Result<T, ConfigError> {
        let env = key.env();
        let (value, source) = if let Some(text) = self.flags.get(key.path) {
            let flag = key.flag().unwrap_or_default();
            (T::from_text(key.path, text)?, Source::Flag(flag))
        } else if let Some((name, text)) =
            env.and_then(|name| (self.env)(&name).map(|text| (name, text)))
        {
            (T::from_text(key.path, &text)?, Source::Env(name))
        } else if let Some(v) = self.file.get(key.path) {
            (T::from_yaml(key.path, v)?, Source::File)
        } else {
            let value = match key.default {
                DefaultValue::Value(text) => T::from_text(key.path, text)?,
                DefaultValue::Unset(_) => T::unset()
                    .ok_or_else(|| invalid(key.path, "has no default: give it a value"))?,
            };
            (value, Source::Default)
        };
        let text = match key.default {
            DefaultValue::Unset(meaning) if source == Source::Default => {
                format!("({})", meaning.replace('`', ""))
            }
            _ => value.show(),
        };
        shown.push(Effective {
            key,
            value: text,
            source,
        });
        Ok(value)
    }
}

/// The YAML file's values by key path. `${VAR}` is replaced by the environment variable
/// first (a missing one is an error); an unknown key is refused.
pub(crate) fn read_file(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, Value>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = substitute_env(&text, env).map_err(|var| ConfigError::MissingEnv {
        path: path.to_path_buf(),
        var,
    })?;
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let parse = |message: String| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let doc: Value = yaml_serde::from_str(&text).map_err(|e| parse(e.to_string()))?;
    flatten(doc).map_err(parse)
}

/// `{server: {http_addr: x}}` as `server.http_addr → x`, every path a declared key.
fn flatten(doc: Value) -> Result<BTreeMap<String, Value>, String> {
    let Value::Mapping(top) = doc else {
        return match doc {
            Value::Null => Ok(BTreeMap::new()),
            _ => Err("the file must be a map of sections (server:, engine:, …)".into()),
        };
    };
    let mut out = BTreeMap::new();
    for (name, value) in top {
        let name = key_name(&name)?;
        if Key::named(&name).is_some_and(|k| k.naming == Naming::File) {
            out.insert(name, value);
            continue;
        }
        if !KEYS.iter().any(|k| k.section() == Some(name.as_str())) {
            return Err(unknown(&name));
        }
        let entries = match value {
            Value::Mapping(m) => m,
            Value::Null => continue,
            _ => return Err(format!("{name}: must be a map of keys, like {name}: {{…}}")),
        };
        for (leaf, value) in entries {
            let path = format!("{name}.{}", key_name(&leaf)?);
            if Key::named(&path).is_none() {
                return Err(unknown(&path));
            }
            out.insert(path, value);
        }
    }
    Ok(out)
}

fn key_name(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("{other:?} is not a key name")),
    }
}

fn unknown(path: &str) -> String {
    match nearest(path) {
        Some(known) => format!("unknown key {path}; did you mean {known}?"),
        None => format!("unknown key {path}; `dataport config --reference` lists every key"),
    }
}

/// The declared key or section nearest to `given`: the same last word in another section,
/// else the smallest edit distance within a third of the name.
pub(crate) fn nearest(given: &str) -> Option<&'static str> {
    let leaf = given.rsplit('.').next().unwrap_or(given);
    if let Some(k) = KEYS
        .iter()
        .find(|k| k.path.rsplit('.').next() == Some(leaf))
    {
        return Some(k.path);
    }
    let sections = KEYS.iter().filter_map(Key::section);
    KEYS.iter()
        .map(|k| k.path)
        .chain(sections)
        .map(|known| (edit_distance(given, known), known))
        .filter(|(d, _)| *d <= given.len().max(3) / 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `DATAPORT_*` variables that are no key's but nearly one's (a typo would otherwise be
/// ignored): `(given, meant)`.
pub(crate) fn mistyped_env(names: impl Iterator<Item = String>) -> Vec<(String, String)> {
    let known: Vec<String> = KEYS.iter().filter_map(Key::env).collect();
    names
        .filter(|n| n.starts_with("DATAPORT_") && !known.contains(n))
        .filter_map(|n| {
            let meant = known
                .iter()
                .filter(|k| edit_distance(&n, k) <= 2)
                .min_by_key(|k| edit_distance(&n, k))?;
            Some((n.clone(), meant.clone()))
        })
        .collect()
}

/// Replace `${NAME}` with the variable's value; the error is the first missing name.
pub(crate) fn substitute_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    dataport_common::text::substitute(text, "${", "}", |name| {
        lookup(name).ok_or_else(|| name.to_string())
    })
}

/// The config file's path, absolute.
pub(crate) fn config_path(path: &Path) -> Result<PathBuf, ConfigError> {
    super::value::absolute("--config", path)
}

//! The six tables' entries in `docs/datasets/<source>.md`, written when a table is described
//! nowhere yet: descriptions, keys and the foreign keys to `issues`. An entry that exists (in
//! any description file, edited by hand or not) is never touched.

use std::fmt::Write as _;

use dataport_catalog::description;
use dataport_common::fs::write_bytes_atomic;

use super::rows::TABLES;
use super::store::Area;

fn about(table: &str) -> (&'static str, &'static str) {
    match table {
        "issues" => (
            "Jira issues, one row per issue, as of the last webhook or poll: status, people, dates, service-desk fields and SLAs.",
            "issue_key",
        ),
        "comments" => (
            "Comments on Jira issues, bodies as plain text.",
            "comment_id",
        ),
        "attachments" => (
            "Files attached to Jira issues; local_path is the downloaded copy (null above the size limit).",
            "attachment_id",
        ),
        "changelog" => (
            "Field changes of Jira issues, one row per changed field of each history entry.",
            "change_id, field_name",
        ),
        "issuelinks" => (
            "Links between Jira issues, from each side (inward or outward).",
            "issue_key, link_id",
        ),
        _ => (
            "Links from Jira issues to pages elsewhere (Confluence, other tools).",
            "issue_key, remote_link_id",
        ),
    }
}

fn columns(table: &str) -> &'static [(&'static str, &'static str)] {
    match table {
        "issues" => &[
            ("issue_key", "The issue's key, e.g. SUP-123."),
            ("description", "The description as plain text."),
            ("labels", "Labels, a JSON array."),
            (
                "created_at",
                "When the issue was created (UTC); its month is the partition.",
            ),
            (
                "first_response_breached",
                "Whether the first-response SLA (current or last cycle) is breached.",
            ),
            (
                "time_to_resolution_breached",
                "Whether the time-to-resolution SLA (current or last cycle) is breached.",
            ),
            (
                "_raw_file",
                "The stored API snapshot these values come from, relative to the data dir.",
            ),
        ],
        "comments" => &[("body", "The comment as plain text.")],
        "changelog" => &[
            (
                "from_value",
                "The value before the change (display text when Jira gives one).",
            ),
            ("to_value", "The value after the change."),
        ],
        "issuelinks" => &[("direction", "inward or outward, as seen from issue_key.")],
        _ => &[],
    }
}

/// The generated Markdown for `tables`.
fn entries(source: &str, schema: &str, tables: &[&str]) -> String {
    let mut out = String::from("```yaml\ntables:\n");
    for t in tables {
        let (text, key) = about(t);
        let _ = writeln!(out, "  - id: \"{source}.{t}\"");
        let _ = writeln!(out, "    name: {t}");
        let _ = writeln!(out, "    folder: {schema}");
        let _ = writeln!(out, "    source: {source}");
        let _ = writeln!(out, "    dataset: jira");
        let _ = writeln!(out, "    description: \"{text}\"");
        let _ = writeln!(out, "    primary_key: \"{key}\"");
        if *t != "issues" {
            let _ = writeln!(
                out,
                "    foreign_keys: [{{column: issue_key, references: issues.issue_key}}]"
            );
        }
        let cols = columns(t);
        if !cols.is_empty() {
            let _ = writeln!(out, "    column_descriptions:");
            for (c, d) in cols {
                let _ = writeln!(out, "      {c}: \"{d}\"");
            }
        }
    }
    out.push_str("```\n");
    out
}

/// Writes entries for the tables no description file mentions yet. Failures are logged: the
/// tables work without descriptions.
pub(super) async fn ensure(area: &Area, source: &str) {
    let area = area.clone();
    let source = source.to_string();
    let name = source.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<usize, String> {
        let data_dir = area.data_dir();
        let described = description::load(data_dir).map_err(|e| e.to_string())?;
        let missing: Vec<&str> = TABLES
            .iter()
            .copied()
            .filter(|t| {
                described
                    .as_ref()
                    .is_none_or(|d| d.for_table(area.schema(), t).is_none())
            })
            .collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let path = data_dir.join("docs").join("datasets").join(format!("{source}.md"));
        let mut text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                "# Jira ({source})\n\nThe tables of the Jira source `{source}`, kept current from Jira's webhooks and polls. \
                 Generated by Dataport for tables that had no entry; edit freely, edited entries are never rewritten.\n\n"
            ),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&entries(&source, area.schema(), &missing));
        write_bytes_atomic(&path, text.as_bytes()).map_err(|e| e.to_string())?;
        Ok(missing.len())
    })
    .await;
    match result {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => {
            tracing::info!(source = %name, tables = n, "described the Jira tables in docs/datasets")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the Jira tables' descriptions"),
        Err(e) => tracing::warn!(error = %e, "cannot write the Jira tables' descriptions"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_entries_parse_with_keys_and_foreign_keys() {
        let text = entries("jira", "jira", &TABLES);
        let parsed = description::parse(std::path::Path::new("jira.md"), &text).unwrap();
        assert_eq!(parsed.tables.len(), 6);
        let comments = parsed.for_table("jira", "comments").unwrap();
        assert_eq!(comments.primary_key, ["comment_id"]);
        assert_eq!(comments.source.as_deref(), Some("jira"));
        assert_eq!(comments.foreign_keys[0].references_table, "issues");
        let issues = parsed.for_table("jira", "issues").unwrap();
        assert_eq!(issues.primary_key, ["issue_key"]);
        assert!(issues.foreign_keys.is_empty());
    }
}

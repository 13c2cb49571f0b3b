//! Text for a model's context: results as compact tables, tables and the catalog as Markdown.
//! The server's laptop docs (`docs/tables/*.md`, `docs/README.md`) are written by the same
//! functions, so an assistant reads the same words online and offline.

use std::fmt::Write as _;

use serde_json::Value;

use crate::model::{KnowledgeHit, MetricInfo, QueryResult, TableInfo};

/// Longest cell shown in a compact table; longer text ends in `…`.
pub const MAX_CELL_CHARS: usize = 80;

fn cell_text(value: &Value) -> String {
    let text = match value {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = text.replace(['\n', '\r'], " ").replace('|', "\\|");
    if text.chars().count() > MAX_CELL_CHARS {
        let cut: String = text.chars().take(MAX_CELL_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn row_line(cells: impl Iterator<Item = String>) -> String {
    let cells: Vec<String> = cells.collect();
    format!("| {} |", cells.join(" | "))
}

/// A query result as a Markdown table with a line saying how many rows there were.
pub fn result_table(result: &QueryResult) -> String {
    let mut out = String::new();
    if result.columns.is_empty() {
        out.push_str("(no columns)\n");
    } else {
        let _ = writeln!(
            out,
            "{}",
            row_line(result.columns.iter().map(|c| c.name.replace('|', "\\|")))
        );
        let _ = writeln!(
            out,
            "{}",
            row_line(result.columns.iter().map(|_| "---".to_string()))
        );
        for row in &result.rows {
            let _ = writeln!(out, "{}", row_line(row.iter().map(cell_text)));
        }
    }
    let shown = result.rows.len() as u64;
    let rows = |n: u64| if n == 1 { "row" } else { "rows" };
    if shown == result.total_rows {
        let _ = write!(out, "{} {}", result.total_rows, rows(result.total_rows));
    } else {
        let _ = write!(
            out,
            "{shown} of {} {} shown",
            result.total_rows,
            rows(result.total_rows)
        );
        if let Some(why) = &result.truncated {
            let _ = write!(out, " ({why})");
        }
    }
    let _ = write!(out, "; {} ms.", result.elapsed_ms);
    out
}

/// One line per table: the catalog at a glance.
pub fn table_list(tables: &[TableInfo]) -> String {
    if tables.is_empty() {
        return "No tables: this account may not read any table yet (ask an administrator for a grant).".into();
    }
    let mut out = String::new();
    for t in tables {
        let _ = write!(out, "- {}", t.qualified());
        let mut facts = Vec::new();
        if let Some(n) = t.row_count {
            facts.push(format!("{n} rows"));
        }
        facts.push(format!("{} columns", t.columns.len()));
        if let Some(at) = &t.updated_at {
            facts.push(format!("updated {at}"));
        }
        let _ = write!(out, " ({})", facts.join(", "));
        if let Some(d) = &t.description {
            let _ = write!(out, ": {}", first_line(d));
        }
        out.push('\n');
    }
    out
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Tables whose foreign keys point at `table` (the other direction of its own keys).
pub fn referenced_by<'a>(
    table: &TableInfo,
    all: &'a [TableInfo],
) -> Vec<(&'a TableInfo, Vec<String>)> {
    let name = table.qualified();
    all.iter()
        .filter_map(|t| {
            let columns: Vec<String> = t
                .foreign_keys
                .iter()
                .filter(|fk| fk.references.eq_ignore_ascii_case(&name))
                .map(|fk| fk.columns.join(", "))
                .collect();
            (!columns.is_empty()).then_some((t, columns))
        })
        .collect()
}

/// A table as Markdown: description, columns, keys, related tables, metrics and the profile's
/// highlights and alerts. `all` is every table the caller may read (for the tables that refer
/// to this one); `profile` a trimmed profile ([`crate::profile::trim`]) when there is one.
pub fn table_markdown(
    table: &TableInfo,
    all: &[TableInfo],
    metrics: &[MetricInfo],
    profile: Option<&Value>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", table.qualified());
    if let Some(d) = &table.description {
        let _ = writeln!(out, "{}\n", d.trim());
    }
    let mut facts = Vec::new();
    if let Some(n) = table.row_count {
        facts.push(format!("**Rows:** {n}"));
    }
    if let Some(at) = &table.updated_at {
        facts.push(format!("**Updated:** {at}"));
    }
    if !table.primary_key.is_empty() {
        facts.push(format!("**Primary key:** {}", table.primary_key.join(", ")));
    }
    if !table.partition_columns.is_empty() {
        facts.push(format!(
            "**Partitioned by:** {}",
            table.partition_columns.join(", ")
        ));
    }
    if !facts.is_empty() {
        let _ = writeln!(out, "{}\n", facts.join(" · "));
    }

    let column_profile = |name: &str| -> Option<String> {
        let columns = profile?.get("columns")?.as_array()?;
        let c = columns
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))?;
        crate::profile::column_summary(c)
    };
    let _ = writeln!(out, "## Columns\n");
    let _ = writeln!(out, "| column | type | null | description | profile |");
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for c in &table.columns {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            c.name,
            c.data_type,
            if c.nullable { "yes" } else { "no" },
            c.description
                .as_deref()
                .map(|d| d.replace('|', "\\|").replace('\n', " "))
                .unwrap_or_default(),
            column_profile(&c.name)
                .unwrap_or_default()
                .replace('|', "\\|"),
        );
    }
    out.push('\n');

    let incoming = referenced_by(table, all);
    if !table.foreign_keys.is_empty() || !incoming.is_empty() {
        let _ = writeln!(out, "## Related tables\n");
        for fk in &table.foreign_keys {
            let target = if fk.referenced_columns.is_empty() {
                fk.references.clone()
            } else {
                format!("{} ({})", fk.references, fk.referenced_columns.join(", "))
            };
            let _ = write!(
                out,
                "- {} → {target}: join `{}` to it",
                fk.columns.join(", "),
                fk.columns.join(", ")
            );
            if let Some(d) = &fk.description {
                let _ = write!(out, " — {}", first_line(d));
            }
            out.push('\n');
        }
        for (t, columns) in incoming {
            for c in columns {
                let _ = writeln!(out, "- {} ({c}) refers to this table", t.qualified());
            }
        }
        out.push('\n');
    }

    let mine: Vec<&MetricInfo> = metrics
        .iter()
        .filter(|m| m.table.eq_ignore_ascii_case(&table.qualified()))
        .collect();
    if !mine.is_empty() {
        let _ = writeln!(out, "## Metrics\n");
        for m in mine {
            let _ = writeln!(out, "- {}", metric_line(m));
        }
        out.push('\n');
    }

    if let Some(p) = profile {
        let _ = writeln!(out, "## Profile\n");
        out.push_str(&crate::profile::highlights(p));
        out.push('\n');
    }
    out
}

/// A metric in one line: name, what it is, how it is computed and how it may be cut.
pub fn metric_line(m: &MetricInfo) -> String {
    let mut line = format!(
        "`{}`: {} = `{}`",
        m.name,
        first_line(&m.description),
        m.expression
    );
    if let Some(f) = &m.filter {
        let _ = write!(line, " where `{f}`");
    }
    let _ = write!(line, " on {}", m.table);
    if let Some(t) = &m.time_column {
        let _ = write!(
            line,
            "; over `{t}` by {}",
            m.grain.as_deref().unwrap_or("month")
        );
    }
    if !m.dimensions.is_empty() {
        let _ = write!(line, "; dimensions {}", m.dimensions.join(", "));
    }
    line
}

/// The whole granted catalog as Markdown, with how to query it (`how_to_query`: a paragraph
/// for where this is read: the server's tools, or DuckDB on the laptop).
pub fn catalog_markdown(
    title: &str,
    tables: &[TableInfo],
    metrics: &[MetricInfo],
    how_to_query: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {title}\n");
    let _ = writeln!(out, "{}\n", how_to_query.trim());
    let mut schema = "";
    for t in tables {
        if t.schema != schema {
            schema = &t.schema;
            let _ = writeln!(out, "## Schema `{schema}`\n");
        }
        let _ = write!(out, "- **{}**", t.qualified());
        if let Some(d) = &t.description {
            let _ = write!(out, ": {}", first_line(d));
        }
        let mut facts = Vec::new();
        if let Some(n) = t.row_count {
            facts.push(format!("{n} rows"));
        }
        if let Some(at) = &t.updated_at {
            facts.push(format!("updated {at}"));
        }
        if !t.primary_key.is_empty() {
            facts.push(format!("key {}", t.primary_key.join(", ")));
        }
        if !facts.is_empty() {
            let _ = write!(out, " ({})", facts.join("; "));
        }
        out.push('\n');
        let columns: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        let _ = writeln!(out, "  columns: {}", columns.join(", "));
    }
    if !metrics.is_empty() {
        let _ = writeln!(out, "\n## Metrics\n");
        for m in metrics {
            let _ = writeln!(out, "- {}", metric_line(m));
        }
    }
    out
}

/// Knowledge items as a numbered list.
pub fn knowledge_list(hits: &[KnowledgeHit]) -> String {
    if hits.is_empty() {
        return "No knowledge items match.".into();
    }
    let mut out = String::new();
    for (i, h) in hits.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}. **{}** [{}, score {}, id {}]\n   {}",
            i + 1,
            h.title,
            h.category,
            h.score,
            h.id,
            h.content.trim().replace('\n', "\n   ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ColumnInfo, ForeignKeyInfo, ResultColumn};
    use serde_json::json;

    fn table(schema: &str, name: &str) -> TableInfo {
        TableInfo {
            schema: schema.into(),
            name: name.into(),
            description: Some("Orders placed.\nMore text.".into()),
            row_count: Some(3),
            updated_at: None,
            columns: vec![ColumnInfo {
                name: "id".into(),
                data_type: "Int64".into(),
                nullable: false,
                description: Some("The id | key".into()),
            }],
            primary_key: vec!["id".into()],
            foreign_keys: Vec::new(),
            partition_columns: Vec::new(),
            profile: None,
        }
    }

    #[test]
    fn results_say_how_many_rows_there_were() {
        let r = QueryResult {
            columns: vec![ResultColumn {
                name: "n".into(),
                data_type: "Int64".into(),
            }],
            rows: vec![vec![json!(1)], vec![json!("a|b\nc")]],
            total_rows: 10,
            truncated: Some("max_rows is 2".into()),
            sql: "x".into(),
            elapsed_ms: 3,
        };
        let text = result_table(&r);
        assert!(
            text.starts_with("| n |\n| --- |\n| 1 |\n| a\\|b c |\n"),
            "{text}"
        );
        assert!(
            text.ends_with("2 of 10 rows shown (max_rows is 2); 3 ms."),
            "{text}"
        );
    }

    #[test]
    fn a_table_shows_who_refers_to_it() {
        let orders = table("s", "orders");
        let mut items = table("s", "items");
        items.foreign_keys.push(ForeignKeyInfo {
            columns: vec!["order_id".into()],
            references: "s.orders".into(),
            referenced_columns: vec!["id".into()],
            description: None,
        });
        let all = vec![orders.clone(), items.clone()];
        let md = table_markdown(&orders, &all, &[], None);
        assert!(
            md.contains("- s.items (order_id) refers to this table"),
            "{md}"
        );
        assert!(md.contains("The id \\| key"), "{md}");
        let md = table_markdown(&items, &all, &[], None);
        assert!(md.contains("order_id → s.orders (id)"), "{md}");
    }
}

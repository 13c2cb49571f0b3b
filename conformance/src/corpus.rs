//! The corpus: which `.slt` files run (a list kept in the repository), and what each SQL
//! text of them is to the suite.

use std::path::Path;

use anyhow::Context;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{self, Statement};

/// The files of the selection: one path per line (relative to the corpus), `#` comments.
pub(crate) fn selection(list: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(list).with_context(|| format!("cannot read {}", list.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// What a SQL text is to the suite.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A query: compared on every surface. `ordered` when the result has an ORDER BY.
    Query { ordered: bool },
    /// `EXECUTE name(args)`: the prepared statement `name` with the values of `args`, sent to
    /// the server as a Flight SQL prepared statement with bound parameters and as HTTP `params`.
    Execute { name: String, args: Vec<String> },
    /// `EXPLAIN`, `SHOW`, `DESCRIBE`, `information_schema`: answers that describe the engine
    /// and its catalog, which differ by design (the server's catalog is `dataport`, its plans
    /// read Parquet through its own scan). Run for errors, not compared.
    Introspection(&'static str),
    /// `PREPARE name [(types)] AS statement`: kept for `EXECUTE`.
    Prepare {
        name: String,
        types: Vec<String>,
        statement: String,
        ordered: bool,
    },
    /// `DEALLOCATE name`.
    Deallocate { name: String },
    /// `SET` or `RESET`: a session setting; the server's settings are its configuration's.
    Setting { key: String, reset: bool },
    /// DDL and DML: run in the setup context; the server must refuse it. `runs` is false for
    /// statements that write files (`COPY`), which the suite does not run.
    Change { kind: String, runs: bool },
    /// DataFusion's parser refuses it.
    Unparsable,
}

fn ordered(query: &ast::Query) -> bool {
    query.order_by.is_some()
}

/// Classify `sql` by its first statement, as DataFusion parses it.
pub(crate) fn classify(sql: &str) -> Kind {
    let statements = match DFParser::parse_sql(sql) {
        Ok(s) => s,
        Err(_) => return Kind::Unparsable,
    };
    let Some(first) = statements.front() else {
        return Kind::Unparsable;
    };
    match first {
        DfStatement::Statement(statement) => classify_statement(statement, sql),
        DfStatement::CreateExternalTable(_) => Kind::Change {
            kind: "CREATE EXTERNAL TABLE".into(),
            runs: true,
        },
        DfStatement::CopyTo(_) => Kind::Change {
            kind: "COPY".into(),
            runs: false,
        },
        DfStatement::Explain(_) => Kind::Introspection("EXPLAIN"),
        DfStatement::Reset(reset) => Kind::Setting {
            key: reset.to_string(),
            reset: true,
        },
    }
}

fn classify_statement(statement: &Statement, sql: &str) -> Kind {
    match statement {
        Statement::Query(q) if creates_table(q) => Kind::Change {
            kind: "SELECT … INTO".into(),
            runs: true,
        },
        Statement::Query(q) => {
            if sql.to_ascii_lowercase().contains("information_schema") {
                Kind::Introspection("information_schema")
            } else {
                Kind::Query {
                    ordered: ordered(q),
                }
            }
        }
        Statement::Explain { .. } | Statement::ExplainTable { .. } => {
            Kind::Introspection("EXPLAIN / DESCRIBE")
        }
        Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCollation { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_) => Kind::Introspection("SHOW"),
        Statement::Execute {
            name: Some(name),
            parameters,
            ..
        } => Kind::Execute {
            name: name.to_string(),
            args: parameters.iter().map(ToString::to_string).collect(),
        },
        Statement::Prepare {
            name,
            data_types,
            statement,
        } => Kind::Prepare {
            name: name.value.clone(),
            types: data_types.iter().map(ToString::to_string).collect(),
            ordered: matches!(statement.as_ref(), Statement::Query(q) if ordered(q)),
            statement: statement.to_string(),
        },
        Statement::Deallocate { name, .. } => Kind::Deallocate {
            name: name.value.clone(),
        },
        Statement::Set(set) => Kind::Setting {
            key: setting_key(set),
            reset: false,
        },
        other => Kind::Change {
            kind: statement_kind(other),
            runs: !matches!(other, Statement::Copy { .. }),
        },
    }
}

/// `SELECT … INTO t`: a query that creates a table.
fn creates_table(query: &ast::Query) -> bool {
    matches!(query.body.as_ref(), ast::SetExpr::Select(select) if select.into.is_some())
}

fn setting_key(set: &ast::Set) -> String {
    match set {
        ast::Set::SingleAssignment { variable, .. } => variable.to_string().to_ascii_lowercase(),
        ast::Set::SetTimeZone { .. } => "datafusion.execution.time_zone".into(),
        other => {
            let text = other.to_string();
            text.split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .to_ascii_lowercase()
        }
    }
}

/// A statement's kind in words: its first keywords (`CREATE TABLE`, `INSERT`, `DROP VIEW`).
fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(4).collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let take = match upper.first().map(String::as_str) {
        Some("CREATE") => {
            // CREATE [OR REPLACE] [TEMPORARY|EXTERNAL|UNBOUNDED] TABLE|VIEW|SCHEMA|FUNCTION …
            let mut n = 1;
            for w in upper.iter().skip(1) {
                n += 1;
                if matches!(
                    w.as_str(),
                    "TABLE" | "VIEW" | "SCHEMA" | "FUNCTION" | "DATABASE" | "CATALOG" | "INDEX"
                ) {
                    break;
                }
            }
            n
        }
        Some("DROP" | "ALTER" | "TRUNCATE") => 2,
        _ => 1,
    };
    upper
        .into_iter()
        .take(take)
        .filter(|w| !matches!(w.as_str(), "OR" | "REPLACE" | "TEMPORARY" | "TEMP"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a session setting leaves every query's answer as it is (it changes batch sizes,
/// parallelism, plans or EXPLAIN's output): queries after it are still compared, now between
/// differently planned runs. Any other setting (time zone, dialect, parsing of literals, null
/// ordering, default schema) may change answers, and the server keeps its configured values.
pub(crate) fn result_neutral(setting: &str) -> bool {
    [
        "datafusion.execution.batch_size",
        "datafusion.execution.target_partitions",
        "datafusion.execution.coalesce_batches",
        "datafusion.execution.skip_partial_aggregation_probe",
        "datafusion.execution.planning_concurrency",
        "datafusion.execution.sort_",
        "datafusion.execution.split_file_groups_by_statistics",
        "datafusion.optimizer.",
        "datafusion.explain.",
        "datafusion.catalog.information_schema",
    ]
    .iter()
    .any(|prefix| setting.starts_with(prefix))
}

/// Whether a query calls a function whose value changes between two runs, so that only its
/// shape (columns, types, row count) can be compared.
pub(crate) fn volatile(sql: &str) -> Option<&'static str> {
    let lower = sql.to_ascii_lowercase();
    [
        "random(",
        "uuid(",
        "now(",
        "current_time",
        "current_timestamp",
        "localtime",
        "clock_timestamp",
    ]
    .into_iter()
    .find(|f| lower.contains(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_statements() {
        assert!(matches!(
            classify("select 1 order by 1"),
            Kind::Query { ordered: true }
        ));
        assert!(matches!(
            classify("values (1)"),
            Kind::Query { ordered: false }
        ));
        assert!(matches!(
            classify("create table t as values (1)"),
            Kind::Change { ref kind, runs: true } if kind == "CREATE TABLE"
        ));
        assert!(matches!(
            classify("create or replace view v as select 1"),
            Kind::Change { ref kind, .. } if kind == "CREATE VIEW"
        ));
        assert!(
            matches!(classify("insert into t values (1)"), Kind::Change { ref kind, .. } if kind == "INSERT")
        );
        assert!(matches!(
            classify("copy t to 'x.csv'"),
            Kind::Change { runs: false, .. }
        ));
        assert!(matches!(
            classify("set datafusion.execution.batch_size = 1"),
            Kind::Setting { ref key, reset: false } if key == "datafusion.execution.batch_size"
        ));
        assert!(matches!(
            classify("explain select 1"),
            Kind::Introspection(_)
        ));
        assert!(matches!(classify("show tables"), Kind::Introspection(_)));
        assert!(matches!(
            classify("select * from information_schema.tables"),
            Kind::Introspection(_)
        ));
        match classify("PREPARE p(INT, VARCHAR) AS SELECT $1, $2 ORDER BY 1") {
            Kind::Prepare {
                name,
                types,
                statement,
                ordered,
            } => {
                assert_eq!(name, "p");
                assert_eq!(types, ["INT", "VARCHAR"]);
                assert!(statement.starts_with("SELECT $1"));
                assert!(ordered);
            }
            other => panic!("{other:?}"),
        }
        match classify("EXECUTE p(1, 'a')") {
            Kind::Execute { name, args, .. } => {
                assert_eq!(name, "p");
                assert_eq!(args, ["1", "'a'"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify("selec 1"), Kind::Unparsable));
    }

    #[test]
    fn settings_that_change_answers() {
        assert!(result_neutral("datafusion.execution.batch_size"));
        assert!(result_neutral("datafusion.optimizer.prefer_hash_join"));
        assert!(!result_neutral("datafusion.execution.time_zone"));
        assert!(!result_neutral(
            "datafusion.sql_parser.parse_float_as_decimal"
        ));
    }

    #[test]
    fn volatile_functions() {
        assert_eq!(volatile("select now()"), Some("now("));
        assert_eq!(volatile("select current_date"), None);
        assert_eq!(volatile("select 1"), None);
    }
}

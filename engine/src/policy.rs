//! The read-only SQL policy, checked on the parsed statement.
//!
//! Allowed: queries (`SELECT`, `WITH`, `VALUES`), `EXPLAIN` of an allowed statement, `SHOW`,
//! `DESCRIBE`. Everything else (DDL, DML, `COPY`, `SET`, `SELECT … INTO`) is refused, and so
//! is every table function except the pure generators in [`ALLOWED_TABLE_FUNCTIONS`]: table
//! functions are how engines read files and URLs, so none of those can run.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Query, SetExpr, Statement, TableFactor, Visit, Visitor};

use crate::error::EngineError;

/// Table functions that only generate values.
pub const ALLOWED_TABLE_FUNCTIONS: &[&str] = &["generate_series", "range"];

/// Refuse anything that is not a read-only query.
pub fn check(statement: &DfStatement) -> Result<(), EngineError> {
    match statement {
        DfStatement::Statement(s) => check_sql(s),
        DfStatement::Explain(e) => check(&e.statement),
        DfStatement::CreateExternalTable(_) => Err(refused("CREATE EXTERNAL TABLE")),
        DfStatement::CopyTo(_) => Err(refused("COPY")),
        DfStatement::Reset(_) => Err(refused("RESET")),
    }
}

fn refused(what: &str) -> EngineError {
    EngineError::refused(format!(
        "{what} is not allowed: Dataport is read-only; only SELECT, WITH, VALUES, EXPLAIN, SHOW and DESCRIBE run"
    ))
}

fn check_sql(statement: &Statement) -> Result<(), EngineError> {
    match statement {
        Statement::Query(q) => check_query(q),
        Statement::Explain { statement, .. } => check_sql(statement),
        Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowViews { .. } => statement_tables(statement),
        other => Err(refused(&statement_kind(other))),
    }
}

/// Statement kind for messages: its leading keyword, and for `CREATE`, `DROP`, `ALTER` and
/// `SHOW` the kind of object, past modifiers (`CREATE OR REPLACE TEMPORARY VIEW` is `CREATE
/// VIEW`).
fn statement_kind(statement: &Statement) -> String {
    const MODIFIERS: [&str; 8] = [
        "OR",
        "REPLACE",
        "TEMPORARY",
        "TEMP",
        "UNLOGGED",
        "GLOBAL",
        "LOCAL",
        "MATERIALIZED",
    ];
    let text = statement.to_string().to_ascii_uppercase();
    let mut words = text.split_whitespace();
    let Some(first) = words.next() else {
        return "this statement".to_string();
    };
    if !matches!(first, "CREATE" | "DROP" | "ALTER" | "SHOW") {
        return first.to_string();
    }
    match words.find(|w| !MODIFIERS.contains(w)) {
        Some(object) => format!("{first} {object}"),
        None => first.to_string(),
    }
}

/// `SELECT … INTO` and table functions are found by one walk over the whole statement.
fn check_query(query: &Query) -> Result<(), EngineError> {
    check_tree(query)
}

fn statement_tables(statement: &Statement) -> Result<(), EngineError> {
    check_tree(statement)
}

fn check_tree<T: Visit>(node: &T) -> Result<(), EngineError> {
    let mut v = TableFunctionCheck::default();
    let _ = node.visit(&mut v);
    v.result()
}

#[derive(Default)]
struct TableFunctionCheck {
    error: Option<EngineError>,
}

impl TableFunctionCheck {
    fn result(self) -> Result<(), EngineError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Visitor for TableFunctionCheck {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_ref()
            && select.into.is_some()
        {
            self.error = Some(refused("SELECT … INTO"));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        let name = match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => name.to_string(),
            TableFactor::TableFunction { expr, .. } => expr.to_string(),
            TableFactor::Function { name, .. } => name.to_string(),
            _ => return ControlFlow::Continue(()),
        };
        let base = name
            .rsplit('.')
            .next()
            .unwrap_or(&name)
            .to_ascii_lowercase();
        if ALLOWED_TABLE_FUNCTIONS.contains(&base.trim_matches('"')) {
            return ControlFlow::Continue(());
        }
        self.error = Some(EngineError::refused(format!(
            "table function {name}(…) is not allowed: tables come only from the Dataport catalog (allowed generators: {})",
            ALLOWED_TABLE_FUNCTIONS.join(", ")
        )));
        ControlFlow::Break(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn verdict(sql: &str) -> Result<(), EngineError> {
        let mut stmts = DFParser::parse_sql(sql).unwrap();
        check(&stmts.pop_front().unwrap())
    }

    #[test]
    fn queries_pass() {
        for sql in [
            "select 1",
            "with a as (select 1 x) select * from a",
            "values (1), (2)",
            "explain select * from t",
            "explain analyze select 1",
            "show tables",
            "show columns from t",
            "describe t",
            "select * from generate_series(1, 3)",
            "select * from t where x in (select y from u)",
        ] {
            assert!(verdict(sql).is_ok(), "{sql}: {:?}", verdict(sql));
        }
    }

    #[test]
    fn writes_and_files_are_refused() {
        for (sql, word) in [
            ("create table t(a int)", "CREATE TABLE"),
            ("create view v as select 1", "CREATE VIEW"),
            (
                "create or replace table t as values (1)",
                "CREATE TABLE is not",
            ),
            (
                "create or replace temporary view v as select 1",
                "CREATE VIEW is not",
            ),
            (
                "create external table x stored as parquet location '/etc'",
                "CREATE EXTERNAL TABLE",
            ),
            ("insert into t values (1)", "INSERT"),
            ("update t set a = 1", "UPDATE"),
            ("delete from t", "DELETE"),
            ("drop table t", "DROP TABLE"),
            ("copy (select 1) to '/tmp/x.parquet'", "COPY"),
            ("explain copy (select 1) to '/tmp/x.csv'", "COPY"),
            ("set datafusion.execution.batch_size = 1", "SET"),
            ("select * into t2 from t", "INTO"),
            ("select * from read_parquet('/etc/passwd')", "read_parquet"),
            (
                "select * from (select * from read_csv('x.csv')) s",
                "read_csv",
            ),
            (
                "with a as (select * from read_json('u')) select * from a",
                "read_json",
            ),
        ] {
            match verdict(sql) {
                Err(EngineError::Refused { message }) => {
                    assert!(message.contains(word), "{sql}: {message}")
                }
                other => panic!("{sql} was not refused: {other:?}"),
            }
        }
    }
}

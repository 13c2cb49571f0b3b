//! `?` parameters, as JDBC, ODBC and ADBC clients write them, numbered into DataFusion's `$n`.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Value, ValueWithSpan, VisitMut, VisitorMut};

use crate::error::EngineError;

/// Rewrite each `?` to `$1`, `$2`, … in the order they appear. Mixing `?` with `$n` in one
/// statement is refused: the numbering would be ambiguous.
pub(crate) fn number_placeholders(statement: &mut DfStatement) -> Result<(), EngineError> {
    let DfStatement::Statement(inner) = statement else {
        return Ok(());
    };
    let mut v = Numberer::default();
    let _ = inner.visit(&mut v);
    if v.question_marks > 0 && v.numbered > 0 {
        return Err(EngineError::InvalidParameters {
            message: "use either ? or $1, $2, … for parameters, not both in one statement".into(),
        });
    }
    Ok(())
}

#[derive(Default)]
struct Numberer {
    question_marks: usize,
    numbered: usize,
}

impl VisitorMut for Numberer {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Value(ValueWithSpan {
            value: Value::Placeholder(p),
            ..
        }) = expr
        {
            if p == "?" {
                self.question_marks += 1;
                *p = format!("${}", self.question_marks);
            } else {
                self.numbered += 1;
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn numbered(sql: &str) -> Result<String, EngineError> {
        let mut stmts = DFParser::parse_sql(sql).unwrap();
        let mut s = stmts.pop_front().unwrap();
        number_placeholders(&mut s)?;
        Ok(s.to_string())
    }

    #[test]
    fn question_marks_become_positions_in_order() {
        assert_eq!(
            numbered("select ?, a from t where b = ? and c in (?, ?) limit ?").unwrap(),
            "SELECT $1, a FROM t WHERE b = $2 AND c IN ($3, $4) LIMIT $5"
        );
        assert_eq!(
            numbered("select $2, $1").unwrap(),
            "SELECT $2, $1",
            "$n is left alone"
        );
        assert_eq!(numbered("select '?'").unwrap(), "SELECT '?'");
        assert!(matches!(
            numbered("select ?, $1"),
            Err(EngineError::InvalidParameters { .. })
        ));
    }
}

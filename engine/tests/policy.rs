use dataport_common::HasKind as _;
use dataport_engine::{EngineError, ErrorKind, Outcome, Surface};

use crate::common::*;

#[tokio::test]
async fn every_forbidden_statement_is_refused_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    write_table(&dir.path().join("parquet/s/t.parquet"), &[1, 2]);
    let engine = engine_with(dir.path(), |_| {}).await;
    let target = dir.path().join("out.parquet");
    let statements = [
        "create table x(a int)".to_string(),
        "create view v as select 1".into(),
        "create external table e stored as parquet location '/etc'".into(),
        "insert into s.t values (3, 'c')".into(),
        "delete from s.t".into(),
        "update s.t set name = 'x'".into(),
        "drop table s.t".into(),
        format!("copy (select 1) to '{}'", target.display()),
        format!("explain copy (select 1) to '{}'", target.display()),
        "set datafusion.execution.batch_size = 1".into(),
        "select * into s.copy from s.t".into(),
        "select * from read_parquet('/etc/passwd')".into(),
    ];
    for sql in &statements {
        let err = run(&engine, sql).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{sql}: {err}");
    }
    assert!(!target.exists(), "COPY wrote a file");
    assert_eq!(
        engine
            .metrics()
            .queries(Surface::Internal, Outcome::Refused),
        statements.len() as u64
    );
    // Still serving.
    assert_eq!(rows(&run(&engine, "select * from s.t").await.unwrap()), 2);
}

#[tokio::test]
async fn files_and_urls_are_not_tables() {
    let dir = tempfile::tempdir().unwrap();
    write_table(&dir.path().join("parquet/s/t.parquet"), &[1]);
    let engine = engine_with(dir.path(), |_| {}).await;
    let file = dir.path().join("parquet/s/t.parquet");
    for sql in [
        format!("select * from '{}'", file.display()),
        format!("select * from \"{}\"", file.display()),
        "select * from 'https://example.com/x.parquet'".to_string(),
        "select * from other_catalog.s.t".into(),
    ] {
        let err = run(&engine, &sql).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{sql}: {err}");
    }
}

#[tokio::test]
async fn read_only_statements_run() {
    let dir = tempfile::tempdir().unwrap();
    write_table(&dir.path().join("parquet/s/t.parquet"), &[1, 2, 3]);
    let engine = engine_with(dir.path(), |_| {}).await;
    for sql in [
        "select * from t",
        "with a as (select id from s.t) select * from a",
        "values (1, 'a')",
        "explain select * from t",
        "show tables",
        "show columns from s.t",
        "describe s.t",
        "select * from information_schema.tables",
        "select * from generate_series(1, 5)",
    ] {
        let out = run(&engine, sql).await;
        assert!(out.is_ok(), "{sql}: {:?}", out.err());
    }
    let tables = pretty(&run(&engine, "show tables").await.unwrap());
    assert!(tables.contains("| dataport      | s "), "{tables}");
    assert!(!tables.contains("_search_path"), "{tables}");
}

#[tokio::test]
async fn errors_are_classified_for_transports() {
    let dir = tempfile::tempdir().unwrap();
    write_table(&dir.path().join("parquet/a/t.parquet"), &[1]);
    write_table(&dir.path().join("parquet/b/t.parquet"), &[1]);
    let engine = engine_with(dir.path(), |_| {}).await;
    let cases = [
        ("selec 1", ErrorKind::InvalidArgument, "Expected"),
        ("select nope from a.t", ErrorKind::InvalidArgument, "nope"),
        ("select * from missing", ErrorKind::NotFound, "missing"),
        ("select * from t", ErrorKind::InvalidArgument, "a.t and b.t"),
        (
            "select 1; select 2",
            ErrorKind::InvalidArgument,
            "one statement",
        ),
        ("", ErrorKind::InvalidArgument, "no SQL"),
    ];
    for (sql, kind, needle) in cases {
        let err = run(&engine, sql).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{sql}: {err}");
        assert!(err.to_string().contains(needle), "{sql}: {err}");
        assert!(!err.to_string().contains("_search_path"), "{sql}: {err}");
    }
    let err = run(&engine, "select cast('x' as int)").await.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Execution { .. } | EngineError::InvalidQuery { .. }
        ),
        "{err:?}"
    );
}

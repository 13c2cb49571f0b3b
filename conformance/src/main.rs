//! `sql-conformance`: DataFusion's own sqllogictest files, run through a Dataport server's
//! Flight SQL and HTTP surfaces, every answer compared with in-process DataFusion.
//!
//! For each `.slt` file of the selection ([`corpus`]):
//! - statements that create or change tables run in-process; the tables are written as Parquet
//!   into the server's data dir and the catalog is refreshed, so the server and the in-process
//!   reference read the same files ([`reference`]);
//! - every statement that is not a query is also sent to the server, which must refuse it on
//!   both surfaces (the read-only policy);
//! - every query runs in-process and over Flight SQL (`GetFlightInfo` + `DoGet`, or a prepared
//!   statement with bound parameters for `EXECUTE`), HTTP Arrow IPC and HTTP JSON; the answers
//!   are compared ([`compare`]): Flight's announced schema must be the streamed one, types must
//!   be the reference's (as clients receive them), values equal, errors free of internal text.
//!
//! The report ([`report`]) counts what ran and passed and names every refusal with its reason.
//! The exit code is 1 when anything differs.
//!
//! Usage: `sql-conformance --bin DATAPORT --corpus TEST_FILES_DIR --files LIST --refuse LIST
//! --report OUT.md [--work DIR] [--only SUBSTRING]`

mod compare;
mod corpus;
mod reference;
mod report;
mod run;
mod server;

use std::path::PathBuf;

use anyhow::{Context, bail};

struct Args {
    bin: PathBuf,
    corpus: PathBuf,
    files: PathBuf,
    /// Statements the server must refuse, beyond the corpus's (`code | sql` per line).
    refuse: PathBuf,
    report: PathBuf,
    work: PathBuf,
    only: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut bin = None;
    let mut corpus = None;
    let mut files = None;
    let mut refuse = None;
    let mut report = None;
    let mut work = None;
    let mut only = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => bin = Some(PathBuf::from(value()?)),
            "--corpus" => corpus = Some(PathBuf::from(value()?)),
            "--files" => files = Some(PathBuf::from(value()?)),
            "--refuse" => refuse = Some(PathBuf::from(value()?)),
            "--report" => report = Some(PathBuf::from(value()?)),
            "--work" => work = Some(PathBuf::from(value()?)),
            "--only" => only = Some(value()?),
            other => bail!("unknown argument {other}"),
        }
    }
    let work = match work {
        Some(w) => w,
        None => std::env::temp_dir().join(format!("sql-conformance-{}", std::process::id())),
    };
    Ok(Args {
        bin: bin.context("--bin DATAPORT is required")?,
        corpus: corpus.context("--corpus DIR (the sqllogictest test_files) is required")?,
        files: files.context("--files LIST is required")?,
        refuse: refuse.context("--refuse LIST is required")?,
        report: report.context("--report OUT.md is required")?,
        work: std::path::absolute(work)?,
        only,
    })
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run::run(&args))?;
    std::fs::write(&args.report, outcome.markdown())
        .with_context(|| format!("cannot write {}", args.report.display()))?;
    eprintln!("{}", outcome.summary());
    eprintln!("report: {}", args.report.display());
    if outcome.failed() {
        std::process::exit(1);
    }
    Ok(())
}

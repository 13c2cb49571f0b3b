//! `tpch-datafusion`: the TPC-H queries in-process on DataFusion with its default settings,
//! over the same Parquet files the server serves. It is the benchmark harness's baseline for
//! "what DataFusion alone does here" (`benches/bench.py`, section `tpch`); it knows nothing of
//! Dataport.
//!
//! Usage: `tpch-datafusion --tables DIR --queries DIR --runs N --out DIR [--memory]`
//!
//! Registers every `DIR/<table>.parquet` as `<table>`, runs each `q<N>.sql` once as a warm-up
//! and then `N` times, prints one JSON line per query (`{"query", "seconds": [..], "rows"}`)
//! and writes the last result to `OUT/<query>.arrow` (Arrow IPC file) so the harness can check
//! it against the other engines. `--memory` loads the tables into memory as Arrow first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

struct Args {
    tables: PathBuf,
    queries: PathBuf,
    runs: usize,
    out: PathBuf,
    memory: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut tables = None;
    let mut queries = None;
    let mut runs = 3;
    let mut out = None;
    let mut memory = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--tables" => tables = Some(PathBuf::from(value()?)),
            "--queries" => queries = Some(PathBuf::from(value()?)),
            "--runs" => runs = value()?.parse().context("--runs takes a number")?,
            "--out" => out = Some(PathBuf::from(value()?)),
            "--memory" => memory = true,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        tables: tables.context("--tables DIR is required")?,
        queries: queries.context("--queries DIR is required")?,
        runs: runs.max(1),
        out: out.context("--out DIR is required")?,
        memory,
    })
}

/// The query statement of a file: the last statement that is a SELECT or WITH.
fn main_query(text: &str) -> String {
    text.split(';')
        .map(str::trim)
        .rfind(|s| {
            let lower = s.to_ascii_lowercase();
            lower.starts_with("select") || lower.starts_with("with")
        })
        .unwrap_or(text)
        .to_string()
}

fn query_files(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sql") {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path)?;
            out.push((name, main_query(&text)));
        }
    }
    out.sort_by_key(|(name, _)| {
        name.trim_start_matches('q')
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let ctx = SessionContext::new();
    for entry in std::fs::read_dir(&args.tables)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let location = path.to_string_lossy().into_owned();
        if args.memory {
            let df = ctx
                .read_parquet(location, ParquetReadOptions::default())
                .await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let partitions = df.collect_partitioned().await?;
            ctx.register_table(&name, Arc::new(MemTable::try_new(schema, partitions)?))?;
        } else {
            ctx.register_parquet(&name, location, ParquetReadOptions::default())
                .await?;
        }
    }
    std::fs::create_dir_all(&args.out)?;
    for (name, sql) in query_files(&args.queries)? {
        let mut seconds = Vec::with_capacity(args.runs);
        let mut last = Vec::new();
        let mut schema = None;
        for run in 0..=args.runs {
            let started = Instant::now();
            let df = ctx
                .sql(&sql)
                .await
                .with_context(|| format!("{name}: planning failed"))?;
            schema = Some(Arc::new(df.schema().as_arrow().clone()));
            let batches = df
                .collect()
                .await
                .with_context(|| format!("{name}: execution failed"))?;
            if run > 0 {
                seconds.push(started.elapsed().as_secs_f64());
            }
            last = batches;
        }
        let rows: usize = last.iter().map(|b| b.num_rows()).sum();
        if let Some(schema) = schema {
            let file = std::fs::File::create(args.out.join(format!("{name}.arrow")))?;
            let mut writer = arrow::ipc::writer::FileWriter::try_new(file, &schema)?;
            for b in &last {
                writer.write(b)?;
            }
            writer.finish()?;
        }
        println!(
            "{}",
            serde_json::json!({"query": name, "seconds": seconds, "rows": rows})
        );
    }
    Ok(())
}

//! The Keboola pull connector: the tables described in `data_description.md`, exported from
//! the Storage API and written as typed Parquet with the table's sync strategy
//! (Keboola's Storage API v2; see docs/connectors.md):
//! - `full_refresh`: one export, the table replaced;
//! - `incremental`: rows changed since the last sync minus `incremental_window_days` (the first
//!   run reaches back `max_history_days`, or takes everything), merged by primary key;
//! - `incremental` with `partition_by`, first run: a chunked initial load walking back from now
//!   in `initial_load_chunk_days` windows with one day of overlap, until `max_history_days`, or
//!   two empty chunks in a row when unbounded, at most 120 chunks;
//! - `partitioned`: one export split into partition files merged by primary key.
//!
//! A table with `where_filters` exports through the filters and ignores `changedSince`.

mod client;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dataport_catalog::description::{self, SyncStrategy, TableMeta, WhereFilter};
use dataport_catalog::names::sql_identifier;
use serde::{Deserialize, Serialize};

pub use client::{Client, ClientPolicy, TableDetail};

use crate::connector::{Connector, SourceTable, SyncContext, TableSync, load_descriptions};
use crate::error::{ConnectorError, Result};
use crate::sink::{Partitioning, TableTarget, WriteMode};
use crate::typed::{Converted, CsvOptions, csv_to_parquet};
use crate::typed::{declared_types, undeclared_column};

/// Seconds in a day.
const DAY: i64 = 86_400;
/// Most chunks of a chunked initial load.
const MAX_CHUNKS: usize = 120;
/// Default chunk size of an initial load, in days.
const DEFAULT_CHUNK_DAYS: u32 = 30;
/// Default re-fetch window of incremental tables, in days.
const DEFAULT_WINDOW_DAYS: u32 = 7;

/// `sources: [{type: keboola, …}]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeboolaConfig {
    /// The stack URL, e.g. `https://connection.keboola.com`.
    pub url: String,
    /// Name of the environment variable holding the Storage API token (never the token).
    pub token_env: String,
    /// Only these table ids (default: every table of `data_description.md`).
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Only tables of these buckets.
    #[serde(default)]
    pub buckets: Option<Vec<String>>,
    /// Give up on an export job after this many seconds (default 3600).
    #[serde(default)]
    pub job_timeout_secs: Option<u64>,
    /// First job poll delay in milliseconds (default 1000).
    #[serde(default)]
    pub poll_interval_ms: Option<u64>,
    /// Attempts per request (default 5).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// First retry delay in milliseconds (default 500).
    #[serde(default)]
    pub retry_backoff_ms: Option<u64>,
    /// Ask for gzip-compressed exports (default true).
    #[serde(default)]
    pub gzip: Option<bool>,
}

/// A configured Keboola source.
#[derive(Debug)]
pub struct KeboolaConnector {
    name: String,
    config: KeboolaConfig,
    client: Client,
    data_dir: PathBuf,
}

impl KeboolaConnector {
    pub fn new(
        name: &str,
        config: &KeboolaConfig,
        data_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let bad = |message: String| ConnectorError::Config {
            source_name: name.to_string(),
            message,
        };
        if !(config.url.starts_with("https://") || config.url.starts_with("http://")) {
            return Err(bad(format!(
                "url '{}' must start with https:// (or http://)",
                config.url
            )));
        }
        let token = env(&config.token_env)
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                bad(format!(
                    "the environment variable {} (token_env) is not set; put the Storage API token there",
                    config.token_env
                ))
            })?;
        let defaults = ClientPolicy::default();
        let policy = ClientPolicy {
            attempts: config.attempts.unwrap_or(defaults.attempts).max(1),
            backoff: config
                .retry_backoff_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.backoff),
            poll_interval: config
                .poll_interval_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.poll_interval),
            job_timeout: config
                .job_timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(defaults.job_timeout),
            ..defaults
        };
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            client: Client::new(&config.url, token.trim().to_string(), policy)?,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The API client (connection tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn wanted(&self, meta: &TableMeta) -> bool {
        let bucket = bucket_of(&meta.id);
        // Tables another source writes (a Jira source's generated entries) are not Keboola's.
        meta.source.as_ref().is_none_or(|s| *s == self.name)
            && self
                .config
                .tables
                .as_ref()
                .is_none_or(|t| t.contains(&meta.id))
            && self
                .config
                .buckets
                .as_ref()
                .is_none_or(|b| b.iter().any(|x| x == bucket))
    }
}

/// `in.c-crm` of `in.c-crm.orders`.
fn bucket_of(id: &str) -> &str {
    id.rsplit_once('.').map_or(id, |(b, _)| b)
}

/// The catalog schema of a described table: its folder, else the bucket as an identifier.
fn schema_of(meta: &TableMeta) -> String {
    meta.folder
        .clone()
        .or_else(|| sql_identifier(bucket_of(&meta.id)))
        .unwrap_or_else(|| "keboola".to_string())
}

fn strategy_name(s: Option<SyncStrategy>) -> &'static str {
    match s.unwrap_or(SyncStrategy::FullRefresh) {
        SyncStrategy::FullRefresh => "full_refresh",
        SyncStrategy::Incremental => "incremental",
        SyncStrategy::Partitioned => "partitioned",
    }
}

#[async_trait]
impl Connector for KeboolaConnector {
    fn source(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "keboola"
    }

    async fn discover(&self) -> Result<Vec<SourceTable>> {
        let described = load_descriptions(&self.name, &self.data_dir).await?;
        let Some(described) = described else {
            return Err(ConnectorError::Config {
                source_name: self.name.clone(),
                message: "no data_description.md describes tables to sync (docs/data_description.md in the data dir)".into(),
            });
        };
        Ok(described
            .tables
            .iter()
            .filter(|m| self.wanted(m))
            .map(|m| SourceTable {
                id: m.id.clone(),
                target: TableTarget {
                    schema: schema_of(m),
                    name: m.name.clone(),
                    primary_key: m.primary_key.clone(),
                    partitioning: m.partition_by.as_ref().map(|c| Partitioning {
                        column: c.clone(),
                        granularity: m
                            .partition_granularity
                            .unwrap_or(description::PartitionGranularity::Month),
                    }),
                },
                strategy: strategy_name(m.sync_strategy).to_string(),
            })
            .collect())
    }

    async fn sync_table(&self, table: &SourceTable, ctx: &SyncContext<'_>) -> Result<TableSync> {
        let meta = self.meta_of(table).await?;
        let name = table.target.qualified();
        ctx.progress.step(&name, "reading table detail");
        let detail = self.client.table(&table.id).await?;
        let columns = select_columns(&name, &detail, meta.columns.as_deref())?;
        let declared = declared_types(Some(&meta));
        if let Some(column) = undeclared_column(&declared, |c| columns.iter().any(|x| x == c)) {
            return Err(ConnectorError::Table {
                table: name,
                message: format!(
                    "data_description.md declares column_types for '{column}', which the Keboola table {} does not export (it has: {})",
                    table.id,
                    columns.join(", ")
                ),
            });
        }
        let schema = types::schema(detail.metadata(), &declared, &columns);
        let plan = plan(
            &meta,
            ctx.previous.and_then(|p| p.last_sync),
            ctx.full,
            ctx.now,
        )?;
        let gzip = self.config.gzip.unwrap_or(true);
        let today = DateTime::<Utc>::from_timestamp(ctx.now, 0).unwrap_or_default();
        let filters = resolve_filters(&meta.where_filters, today.date_naive())?;

        let mut staged: Vec<PathBuf> = Vec::new();
        let mut received = Converted::default();
        let mut empty_in_a_row = 0;
        for (i, window) in plan.windows.iter().enumerate() {
            let form = export_form(&columns, meta.columns.is_some(), gzip, window, &filters);
            ctx.progress.step(&name, &format!("export {}", i + 1));
            let job = self.client.export(&table.id, &form).await?;
            let file = self.client.wait_for_job(&name, job).await?;
            let dir = ctx.staging.join(format!("export-{i:03}"));
            std::fs::create_dir_all(&dir).map_err(|e| ConnectorError::io(&dir, e))?;
            let download = self
                .client
                .download(file, &dir, &|n| ctx.progress.bytes(&name, n))
                .await?;
            // Newer chunks (walked first) rank above older ones in the merge.
            let seq = ((MAX_CHUNKS - i.min(MAX_CHUNKS)) as u64) << 40;
            let options = CsvOptions {
                seq: table.target.ranks_rows().then_some(seq),
                infer: false,
            };
            let out = dir.join("staged.parquet");
            let (table_name, cols, sch, out2) = (
                name.clone(),
                columns.clone(),
                Arc::clone(&schema),
                out.clone(),
            );
            let converted = tokio::task::spawn_blocking(move || {
                csv_to_parquet(&table_name, &download.parts, &cols, &sch, &out2, options)
            })
            .await
            .map_err(|e| ConnectorError::Decode {
                table: name.clone(),
                what: "export".into(),
                message: format!("conversion task failed: {e}"),
            })??;
            received.rows += converted.rows;
            received.text_bytes += converted.text_bytes;
            staged.push(out);
            if plan.chunked {
                empty_in_a_row = if converted.rows == 0 {
                    empty_in_a_row + 1
                } else {
                    0
                };
                if plan.unbounded && empty_in_a_row >= 2 {
                    break;
                }
            }
        }
        ctx.progress.step(&name, "writing");
        let written = ctx.sink.write(&table.target, &staged, plan.mode).await?;
        Ok(TableSync {
            written,
            text_bytes: received.text_bytes,
            rows_received: received.rows,
        })
    }
}

impl KeboolaConnector {
    async fn meta_of(&self, table: &SourceTable) -> Result<TableMeta> {
        let data_dir = self.data_dir.clone();
        let described = tokio::task::spawn_blocking(move || description::load(&data_dir))
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten();
        described
            .and_then(|d| {
                d.tables.into_iter().find(|m| {
                    m.id == table.id
                        && m.name == table.target.name
                        && schema_of(m) == table.target.schema
                })
            })
            .ok_or_else(|| ConnectorError::Table {
                table: table.target.qualified(),
                message: format!("'{}' is no longer in data_description.md", table.id),
            })
    }
}

/// The columns to export: the description's subset (in the source's order) or all.
fn select_columns(
    table: &str,
    detail: &TableDetail,
    subset: Option<&[String]>,
) -> Result<Vec<String>> {
    let Some(subset) = subset else {
        return Ok(detail.columns.clone());
    };
    for c in subset {
        if !detail.columns.contains(c) {
            return Err(ConnectorError::Table {
                table: table.to_string(),
                message: format!(
                    "data_description.md lists column '{c}', which the source table does not have (it has: {})",
                    detail.columns.join(", ")
                ),
            });
        }
    }
    Ok(detail
        .columns
        .iter()
        .filter(|c| subset.contains(c))
        .cloned()
        .collect())
}

/// A `changedSince`/`changedUntil` window (Unix seconds); both `None` for a plain export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// The exports a sync makes and how the result is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub windows: Vec<Window>,
    pub mode: WriteMode,
    /// A chunked initial load (stops early on empty chunks when unbounded).
    pub chunked: bool,
    pub unbounded: bool,
}

/// Decides the exports of one sync from the table's description, its last successful sync
/// and the time now.
pub fn plan(meta: &TableMeta, last_sync: Option<i64>, full: bool, now: i64) -> Result<Plan> {
    let strategy = meta.sync_strategy.unwrap_or(SyncStrategy::FullRefresh);
    let plain = Window {
        since: None,
        until: None,
    };
    let first = full || last_sync.is_none();
    let history = meta.max_history_days.map(|d| now - i64::from(d) * DAY);
    let p = |windows, mode| Plan {
        windows,
        mode,
        chunked: false,
        unbounded: false,
    };
    Ok(match strategy {
        SyncStrategy::FullRefresh => p(vec![plain], WriteMode::Replace),
        SyncStrategy::Partitioned => {
            if meta.partition_by.is_none() {
                return Err(ConnectorError::Table {
                    table: meta.name.clone(),
                    message: "sync_strategy partitioned needs partition_by".into(),
                });
            }
            p(
                vec![plain],
                if full {
                    WriteMode::Replace
                } else {
                    WriteMode::Merge
                },
            )
        }
        SyncStrategy::Incremental => {
            if meta.primary_key.is_empty() {
                return Err(ConnectorError::Table {
                    table: meta.name.clone(),
                    message: "sync_strategy incremental needs a primary_key to merge by".into(),
                });
            }
            let mode = if first {
                WriteMode::Replace
            } else {
                WriteMode::Merge
            };
            if !meta.where_filters.is_empty() {
                return Ok(p(vec![plain], mode));
            }
            if !first {
                let window = i64::from(meta.incremental_window_days.unwrap_or(DEFAULT_WINDOW_DAYS));
                let since = last_sync.unwrap_or(now) - window * DAY;
                return Ok(p(
                    vec![Window {
                        since: Some(since),
                        until: None,
                    }],
                    mode,
                ));
            }
            if meta.partition_by.is_none() {
                return Ok(p(
                    vec![Window {
                        since: history,
                        until: None,
                    }],
                    mode,
                ));
            }
            // Chunked initial load, newest chunk first.
            let chunk = i64::from(
                meta.initial_load_chunk_days
                    .unwrap_or(DEFAULT_CHUNK_DAYS)
                    .max(1),
            ) * DAY;
            let mut windows = Vec::new();
            let mut until = now;
            while windows.len() < MAX_CHUNKS {
                let mut since = until - chunk;
                let last = history.is_some_and(|h| since <= h);
                if let Some(h) = history {
                    since = since.max(h);
                }
                windows.push(Window {
                    since: Some(since),
                    until: Some(until),
                });
                if last {
                    break;
                }
                // One day of overlap with the next (older) chunk.
                until = since + DAY;
            }
            Plan {
                windows,
                mode,
                chunked: true,
                unbounded: history.is_none(),
            }
        }
    })
}

/// The form of an export request, encoded as the spec says.
pub fn export_form(
    columns: &[String],
    subset: bool,
    gzip: bool,
    window: &Window,
    filters: &[WhereFilter],
) -> Vec<(String, String)> {
    let mut form = vec![
        ("format".to_string(), "rfc".to_string()),
        ("gzip".to_string(), if gzip { "1" } else { "0" }.to_string()),
    ];
    if subset {
        form.push(("columns".into(), columns.join(",")));
    }
    if filters.is_empty() {
        if let Some(s) = window.since {
            form.push(("changedSince".into(), s.to_string()));
        }
        if let Some(u) = window.until {
            form.push(("changedUntil".into(), u.to_string()));
        }
    }
    for (i, f) in filters.iter().enumerate() {
        form.push((format!("whereFilters[{i}][column]"), f.column.clone()));
        let op = serde_json::to_value(f.operator)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        form.push((format!("whereFilters[{i}][operator]"), op));
        for (j, v) in f.values.iter().enumerate() {
            form.push((format!("whereFilters[{i}][values][{j}]"), v.clone()));
        }
    }
    form
}

/// Filters with their date placeholders (`{{today}}`, `{{last_week}}`, …) resolved against
/// `today`.
pub fn resolve_filters(
    filters: &[WhereFilter],
    today: chrono::NaiveDate,
) -> Result<Vec<WhereFilter>> {
    filters
        .iter()
        .map(|f| {
            let values = f
                .values
                .iter()
                .map(|v| resolve_placeholders(v, today))
                .collect::<Result<Vec<_>>>()?;
            Ok(WhereFilter {
                column: f.column.clone(),
                operator: f.operator,
                values,
            })
        })
        .collect()
}

/// Days back of each placeholder.
const PLACEHOLDERS: &[(&str, i64)] = &[
    ("today", 0),
    ("last_week", 7),
    ("last_month", 30),
    ("last_2_months", 60),
    ("last_3_months", 90),
    ("last_6_months", 180),
    ("last_year", 365),
    ("last_2_years", 730),
];

fn resolve_placeholders(value: &str, today: chrono::NaiveDate) -> Result<String> {
    dataport_common::text::substitute(value, "{{", "}}", |name| {
        let name = name.trim();
        let Some((_, days)) = PLACEHOLDERS.iter().find(|(n, _)| *n == name) else {
            return Err(ConnectorError::Table {
                table: String::new(),
                message: format!(
                    "unknown placeholder {{{{{name}}}}} in where_filters; known: {}",
                    PLACEHOLDERS
                        .iter()
                        .map(|(n, _)| format!("{{{{{n}}}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        let date = today - chrono::Duration::days(*days);
        Ok(date.format("%Y-%m-%d").to_string())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use dataport_catalog::description::FilterOperator;

    #[test]
    fn placeholders_resolve_relative_to_today() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(
            resolve_placeholders("{{today}}", today).unwrap(),
            "2026-03-01"
        );
        assert_eq!(
            resolve_placeholders("{{last_week}}", today).unwrap(),
            "2026-02-22"
        );
        assert_eq!(
            resolve_placeholders("{{last_year}}", today).unwrap(),
            "2025-03-01"
        );
        assert_eq!(
            resolve_placeholders("x-{{ last_month }}-y", today).unwrap(),
            "x-2026-01-30-y"
        );
        assert_eq!(resolve_placeholders("plain", today).unwrap(), "plain");
        assert!(resolve_placeholders("{{yesterday}}", today).is_err());
    }

    #[test]
    fn export_form_encodes_filters_and_ignores_changed_since() {
        let filters = vec![WhereFilter {
            column: "status".into(),
            operator: FilterOperator::Ne,
            values: vec!["a".into(), "b".into()],
        }];
        let w = Window {
            since: Some(5),
            until: None,
        };
        let form = export_form(&["id".into(), "status".into()], true, true, &w, &filters);
        let expect: Vec<(String, String)> = [
            ("format", "rfc"),
            ("gzip", "1"),
            ("columns", "id,status"),
            ("whereFilters[0][column]", "status"),
            ("whereFilters[0][operator]", "ne"),
            ("whereFilters[0][values][0]", "a"),
            ("whereFilters[0][values][1]", "b"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(form, expect);
        let form = export_form(&[], false, false, &w, &[]);
        assert!(form.contains(&("changedSince".into(), "5".into())));
    }
}

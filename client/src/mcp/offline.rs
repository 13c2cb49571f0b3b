//! The tools' answers from the pull folder, for when the server cannot be reached: the catalog
//! and metrics from `docs/catalog.json`, profiles from `docs/profiles/`, SQL and metrics on
//! `analytics.duckdb` (read-only, [`super::duck`]), knowledge from the rule files in `rules/`.
//!
//! Everything here is what `dataport pull` wrote for the logged-in user, so it holds nothing
//! the server's tools would not show them. Tables in the catalog that were not pulled (outside
//! the sync settings) are described but cannot be queried, and the answers say so.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use dataport_mcp::tools::find_table;
use dataport_mcp::{
    Backend, CatalogDocument, KnowledgeHit, MetricCall, MetricInfo, QueryCall, QueryResult,
    ResultColumn, TableInfo, ToolError,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::duck::{self, Duck, DuckError, Kind};
use crate::views::Runner;

/// `docs/catalog.json`, in the pull folder.
pub(crate) const CATALOG_FILE: &str = "docs/catalog.json";
/// One page per pulled table: `docs/tables/<schema>.<table>.md`.
const TABLES_DIR: &str = "docs/tables";
/// One profile per pulled table: `docs/profiles/<schema>.<table>.json`.
const PROFILES_DIR: &str = "docs/profiles";
/// The corporate-memory rule files `dataport pull` keeps.
pub(crate) const RULES_DIR: &str = "rules";
const DATABASE_FILE: &str = "analytics.duckdb";

/// How offline SQL is read.
const DIALECT: &str = "DuckDB SQL (offline: the copy pulled to this computer; the server's \
    DataFusion SQL is not used); tables are schema.table";

/// What to install for offline queries.
const INSTALL: &str = "install DuckDB to query the pulled files offline: the CLI \
    (https://duckdb.org/docs/installation, or `pip install duckdb-cli`) or the Python module \
    (`pip install duckdb`)";

/// The offline answers, for one call: the pull folder as it is now.
#[derive(Debug)]
pub(crate) struct Offline {
    dir: PathBuf,
    /// The catalog, or why there is none.
    catalog: Result<CatalogDocument, String>,
    /// The pulled tables, `schema.table` in lower case.
    pulled: BTreeSet<String>,
    runner: Option<Runner>,
    timeout: Duration,
    notice: String,
}

impl Offline {
    /// Reads the pull folder `dir`. `why` says why the server is not answering (it opens the
    /// notice every answer starts with); `runner` is the DuckDB to query with.
    pub(crate) fn open(dir: &Path, why: &str, runner: Option<Runner>, timeout: Duration) -> Self {
        let catalog = read_catalog(dir);
        let pulled = pulled_tables(dir);
        let notice = notice(dir, why, &catalog, &pulled);
        Self {
            dir: dir.to_path_buf(),
            catalog,
            pulled,
            runner,
            timeout,
            notice,
        }
    }

    fn catalog(&self) -> Result<&CatalogDocument, ToolError> {
        self.catalog
            .as_ref()
            .map_err(|e| ToolError::unavailable(e.clone()))
    }

    fn is_pulled(&self, qualified: &str) -> bool {
        self.pulled.contains(&qualified.to_lowercase())
    }

    /// The tables of the catalog that were not pulled.
    fn not_pulled(&self) -> Vec<&TableInfo> {
        match &self.catalog {
            Ok(c) => c
                .tables
                .iter()
                .filter(|t| !self.is_pulled(&t.qualified()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn duck(&self) -> Result<Duck, ToolError> {
        let database = self.dir.join(DATABASE_FILE);
        if !database.is_file() {
            return Err(ToolError::unavailable(format!(
                "there is no {} to query: run `dataport pull` with DuckDB installed ({INSTALL})",
                database.display()
            )));
        }
        let Some(runner) = self.runner.clone() else {
            return Err(ToolError::unavailable(format!("no DuckDB here: {INSTALL}")));
        };
        Ok(Duck {
            runner,
            database: duck::allowed_dir(&self.dir).join(DATABASE_FILE),
            allowed: duck::allowed_dir(&self.dir),
            timeout: self.timeout,
        })
    }

    /// DuckDB's refusal as the model should read it, with what to do about tables that were
    /// not pulled or files outside the folder.
    fn error(&self, e: DuckError, sql: &str) -> ToolError {
        match e {
            DuckError::Sql(message) => {
                let mut text = message.clone();
                if message.contains("does not exist") || message.contains("not found") {
                    let lower = sql.to_lowercase();
                    let named: Vec<String> = self
                        .not_pulled()
                        .into_iter()
                        .filter(|t| lower.contains(&t.name.to_lowercase()))
                        .map(TableInfo::qualified)
                        .collect();
                    if !named.is_empty() {
                        text.push_str(&format!(
                            "\n{} is in your catalog but was not pulled to {}, so it cannot be \
                             queried offline: ask again when the server is back (or pull it then, \
                             e.g. `dataport pull --all`)",
                            named.join(", "),
                            self.dir.display()
                        ));
                    }
                }
                if message.contains("Permission Error") {
                    text.push_str(
                        "\nOffline queries may read only the pulled tables (schema.table), not \
                         files.",
                    );
                }
                ToolError::input(text)
            }
            DuckError::TooOld(..) | DuckError::Database(_) => ToolError::unavailable(format!(
                "{e}; if a `dataport pull` is running, ask again when it is done"
            )),
            DuckError::Timeout(_) => ToolError::limit(format!(
                "{e}: offline queries may run {} s on this computer; aggregate or filter more, \
                 or ask again when the server is back",
                self.timeout.as_secs()
            )),
            DuckError::Cancelled => ToolError::Cancelled,
            DuckError::Failed(m) => ToolError::internal(m),
        }
    }
}

fn read_catalog(dir: &Path) -> Result<CatalogDocument, String> {
    let path = dir.join(CATALOG_FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "nothing to answer from: {} cannot be read ({e}); run `dataport pull` while the \
             server can be reached",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is not a catalog this version reads ({e}); run `dataport pull` again",
            path.display()
        )
    })
}

/// `schema.table` (lower case) of each page in `docs/tables/`: the tables the last pull got.
fn pulled_tables(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join(TABLES_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".md").map(str::to_lowercase)
        })
        .collect()
}

/// When the files were pulled: the catalog's time, else its file's.
fn pulled_at(dir: &Path, catalog: &Result<CatalogDocument, String>) -> String {
    if let Ok(c) = catalog
        && let Ok(t) = chrono::DateTime::parse_from_rfc3339(&c.generated_at)
    {
        return t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M UTC")
            .to_string();
    }
    std::fs::metadata(dir.join(CATALOG_FILE))
        .and_then(|m| m.modified())
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or_else(|_| "an unknown time".into())
}

fn notice(
    dir: &Path,
    why: &str,
    catalog: &Result<CatalogDocument, String>,
    pulled: &BTreeSet<String>,
) -> String {
    let Ok(c) = catalog else {
        return format!(
            "Offline: {why}; and there is no pulled copy to answer from in {} (no {CATALOG_FILE}); \
             run `dataport pull` when back online.",
            dir.display()
        );
    };
    let mut text = format!(
        "Offline: {why}; answered from the files pulled to {} at {}; run `dataport pull` when \
         back online.",
        dir.display(),
        pulled_at(dir, catalog)
    );
    let missing: Vec<String> = c
        .tables
        .iter()
        .map(TableInfo::qualified)
        .filter(|q| !pulled.contains(&q.to_lowercase()))
        .collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(8).map(String::as_str).collect();
        text.push_str(&format!(
            " Only the {} pulled tables can be queried here; {} more in the catalog ({}{}) are \
             described but were not pulled.",
            c.tables.len() - missing.len(),
            missing.len(),
            shown.join(", "),
            if missing.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        ));
    }
    text.push_str(" SQL runs in DuckDB here.");
    text
}

#[async_trait::async_trait]
impl Backend for Offline {
    async fn tables(&self) -> Result<Vec<TableInfo>, ToolError> {
        let mut tables = self.catalog()?.tables.clone();
        for t in &mut tables {
            if !self.is_pulled(&t.qualified()) {
                let note = "[Not pulled to this computer: it cannot be queried offline.]";
                t.description = Some(match t.description.take() {
                    Some(d) => format!("{note} {d}"),
                    None => note.to_string(),
                });
            }
        }
        Ok(tables)
    }

    async fn metrics(&self) -> Result<Vec<MetricInfo>, ToolError> {
        Ok(self.catalog()?.metrics.clone())
    }

    async fn profile(&self, table: &str) -> Result<Value, ToolError> {
        let catalog = self.catalog()?;
        let t = find_table(&catalog.tables, table)?;
        let path = self
            .dir
            .join(PROFILES_DIR)
            .join(format!("{}.json", t.qualified()));
        let bytes = std::fs::read(&path).map_err(|_| {
            ToolError::not_found(format!(
                "no profile of {} was pulled to {}: {}",
                t.qualified(),
                self.dir.display(),
                if self.is_pulled(&t.qualified()) {
                    "it had none when it was pulled"
                } else {
                    "the table was not pulled"
                }
            ))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ToolError::internal(format!(
                "{} is damaged ({e}); run `dataport pull` again",
                path.display()
            ))
        })
    }

    async fn run_query(
        &self,
        call: QueryCall,
        cancel: CancellationToken,
    ) -> Result<QueryResult, ToolError> {
        let statement = duck::check(&call.sql).map_err(ToolError::input)?;
        let duck = self.duck()?;
        match statement.kind {
            Kind::Query => {
                let mut result = duck
                    .query(&statement.sql, call.max_rows, call.max_bytes, &cancel)
                    .await
                    .map_err(|e| self.error(e, &statement.sql))?;
                result.sql = call.sql.trim().to_string();
                Ok(result)
            }
            Kind::Explain { analyze } => {
                let started = std::time::Instant::now();
                let plan = duck
                    .explain(&statement.sql, analyze, &cancel)
                    .await
                    .map_err(|e| self.error(e, &statement.sql))?;
                Ok(QueryResult {
                    columns: vec![ResultColumn {
                        name: "plan".into(),
                        data_type: "VARCHAR".into(),
                    }],
                    rows: vec![vec![Value::String(plan)]],
                    total_rows: 1,
                    truncated: None,
                    sql: call.sql.trim().to_string(),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                })
            }
        }
    }

    async fn explain_query(
        &self,
        sql: &str,
        cancel: CancellationToken,
    ) -> Result<String, ToolError> {
        let statement = duck::check(sql).map_err(ToolError::input)?;
        let analyze = matches!(statement.kind, Kind::Explain { analyze: true });
        self.duck()?
            .explain(&statement.sql, analyze, &cancel)
            .await
            .map_err(|e| self.error(e, &statement.sql))
    }

    async fn run_metric(
        &self,
        call: MetricCall,
        max_rows: usize,
        max_bytes: usize,
        cancel: CancellationToken,
    ) -> Result<QueryResult, ToolError> {
        let catalog = self.catalog()?;
        let Some(metric) = catalog.metrics.iter().find(|m| m.name == call.name) else {
            let names: Vec<&str> = catalog.metrics.iter().map(|m| m.name.as_str()).collect();
            return Err(ToolError::not_found(format!(
                "no metric '{}' among the metrics you may run ({}); call list_metrics",
                call.name,
                if names.is_empty() {
                    "there are none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        if !self.is_pulled(&metric.table) {
            return Err(ToolError::unavailable(format!(
                "metric '{}' is computed from {}, which was not pulled to {}: ask again when the \
                 server is back",
                metric.name,
                metric.table,
                self.dir.display()
            )));
        }
        let sql = metric_sql(metric, &call).map_err(ToolError::input)?;
        let mut result = self
            .duck()?
            .query(&sql, max_rows, max_bytes, &cancel)
            .await
            .map_err(|e| self.error(e, &sql))?;
        result.sql = sql;
        Ok(result)
    }

    async fn search_knowledge(
        &self,
        query: &str,
        category: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KnowledgeHit>, ToolError> {
        let rules = read_rules(&self.dir.join(RULES_DIR));
        if rules.is_empty() {
            return Err(ToolError::unavailable(format!(
                "no corporate-memory rule files were pulled to {}: offline, search_knowledge \
                 searches only those (the items you upvoted, and the pinned ones); ask again \
                 when the server is back",
                self.dir.join(RULES_DIR).display()
            )));
        }
        Ok(search_rules(rules, query, category, limit))
    }

    fn notice(&self) -> Option<String> {
        Some(self.notice.clone())
    }

    fn dialect(&self) -> &'static str {
        DIALECT
    }
}

/// `name` as a quoted identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

const GRAINS: [&str; 5] = ["day", "week", "month", "quarter", "year"];

/// The query of a metric request, as the server builds it (one row per period and chosen
/// dimension, the value in a column named after the metric), in SQL DuckDB reads the same.
pub(crate) fn metric_sql(m: &MetricInfo, call: &MetricCall) -> Result<String, String> {
    let grain = match call.grain.as_deref() {
        Some("total") => None,
        Some(g) if GRAINS.contains(&g) => Some(g.to_string()),
        Some(g) => {
            return Err(format!(
                "'{g}' is not a grain: use day, week, month, quarter, year or total"
            ));
        }
        None => m.grain.clone(),
    };
    for d in &call.dimensions {
        if !m.dimensions.contains(d) {
            return Err(format!(
                "metric '{}' cannot be grouped by '{d}'; its dimensions are: {}",
                m.name,
                if m.dimensions.is_empty() {
                    "none".to_string()
                } else {
                    m.dimensions.join(", ")
                }
            ));
        }
    }
    let date = |field: &str, text: &Option<String>| -> Result<Option<NaiveDate>, String> {
        text.as_deref()
            .map(|t| {
                NaiveDate::parse_from_str(t, "%Y-%m-%d")
                    .map_err(|_| format!("'{field}' must be a date as YYYY-MM-DD, not '{t}'"))
            })
            .transpose()
    };
    let from = date("from", &call.from)?;
    let to = date("to", &call.to)?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(format!(
            "the date range is empty: 'from' ({f}) is after 'to' ({t})"
        ));
    }
    let needs_time = grain.is_some() || from.is_some() || to.is_some();
    let time = match (&m.time_column, needs_time) {
        (Some(c), _) => Some(quote(c)),
        (None, true) => {
            return Err(format!(
                "metric '{}' has no time_column, so it has no grain and no date range; ask for \
                 its total",
                m.name
            ));
        }
        (None, false) => None,
    };
    let mut groups = Vec::new();
    if let (Some(g), Some(t)) = (&grain, &time) {
        groups.push(format!("CAST(date_trunc('{g}', {t}) AS DATE) AS period"));
    }
    groups.extend(
        m.dimensions
            .iter()
            .filter(|d| call.dimensions.contains(d))
            .map(|d| quote(d)),
    );
    let mut conditions = Vec::new();
    if let Some(f) = &m.filter {
        conditions.push(format!("({f})"));
    }
    if let (Some(f), Some(t)) = (from, &time) {
        conditions.push(format!("{t} >= DATE '{}'", f.format("%Y-%m-%d")));
    }
    if let (Some(to), Some(t)) = (to, &time)
        && let Some(next) = to.succ_opt()
    {
        conditions.push(format!("{t} < DATE '{}'", next.format("%Y-%m-%d")));
    }
    let table = match m.table.split_once('.') {
        Some((s, t)) => format!("{}.{}", quote(s), quote(t)),
        None => quote(&m.table),
    };
    let mut sql = String::from("SELECT ");
    for g in &groups {
        sql.push_str(g);
        sql.push_str(", ");
    }
    sql.push_str(&format!(
        "{} AS {} FROM {table}",
        m.expression,
        quote(&m.name)
    ));
    if !conditions.is_empty() {
        sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
    }
    if !groups.is_empty() {
        let positions: Vec<String> = (1..=groups.len()).map(|i| i.to_string()).collect();
        let positions = positions.join(", ");
        sql.push_str(&format!(" GROUP BY {positions} ORDER BY {positions}"));
    }
    Ok(sql)
}

/// The rule files of `dir` (`<id>.md`, and the analyst's own `*.md`), as knowledge items.
fn read_rules(dir: &Path) -> Vec<KnowledgeHit> {
    let mut rules: Vec<KnowledgeHit> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let id = path.file_name()?.to_str()?.strip_suffix(".md")?.to_string();
            let text = std::fs::read_to_string(&path).ok()?;
            Some(parse_rule(&id, &text))
        })
        .collect();
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    rules
}

/// A rule file as `dataport pull` writes it: `# title`, the content, then after `---` the line
/// `Corporate memory item <id> · <category>[ · tags: a, b]`. Other Markdown files keep their
/// first line as the title and count as the category `note`.
fn parse_rule(id: &str, text: &str) -> KnowledgeHit {
    let text = text.trim();
    let (head, rest) = text.split_once('\n').unwrap_or((text, ""));
    let title = head.trim().trim_start_matches('#').trim().to_string();
    let (content, footer) = match rest.rfind("\n---\n") {
        Some(at) => (&rest[..at], &rest[at + 5..]),
        None => (rest, ""),
    };
    let mut category = "note".to_string();
    let mut tags = Vec::new();
    let mut item = id.to_string();
    if let Some(line) = footer
        .lines()
        .find_map(|l| l.trim().strip_prefix("Corporate memory item "))
    {
        let mut parts = line.split(" · ");
        if let Some(i) = parts.next() {
            item = i.trim().to_string();
        }
        if let Some(c) = parts.next() {
            category = c.trim().to_string();
        }
        if let Some(t) = parts.next().and_then(|t| t.trim().strip_prefix("tags:")) {
            tags = t
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect();
        }
    }
    KnowledgeHit {
        id: item,
        title: if title.is_empty() {
            id.to_string()
        } else {
            title
        },
        content: content.trim().to_string(),
        category,
        tags,
        score: 0,
    }
}

/// Lower-case words of two or more letters or digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
        .collect()
}

/// The rules matching the words of `query` (in the title counts thrice), best first.
fn search_rules(
    rules: Vec<KnowledgeHit>,
    query: &str,
    category: Option<&str>,
    limit: usize,
) -> Vec<KnowledgeHit> {
    let terms = words(query);
    let mut scored: Vec<(usize, KnowledgeHit)> = rules
        .into_iter()
        .filter(|r| category.is_none_or(|c| r.category.eq_ignore_ascii_case(c)))
        .filter_map(|r| {
            let title = words(&r.title);
            let body = words(&format!("{} {}", r.content, r.tags.join(" ")));
            let score: usize = terms
                .iter()
                .map(|t| {
                    3 * title.iter().filter(|w| w.starts_with(t.as_str())).count()
                        + body.iter().filter(|w| w.starts_with(t.as_str())).count()
                })
                .sum();
            (score > 0).then_some((score, r))
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    scored.into_iter().take(limit).map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataport_mcp::{ColumnInfo, McpServer, ServerInfo};
    use serde_json::json;

    fn table(schema: &str, name: &str, columns: &[&str]) -> TableInfo {
        TableInfo {
            schema: schema.into(),
            name: name.into(),
            description: Some(format!("The {name} table.")),
            row_count: Some(5),
            updated_at: None,
            columns: columns
                .iter()
                .map(|c| ColumnInfo {
                    name: (*c).into(),
                    data_type: "Int64".into(),
                    nullable: true,
                    description: None,
                })
                .collect(),
            primary_key: vec!["id".into()],
            foreign_keys: Vec::new(),
            partition_columns: Vec::new(),
            profile: None,
        }
    }

    fn metric() -> MetricInfo {
        MetricInfo {
            name: "total_amount".into(),
            description: "Sum of amounts".into(),
            table: "s.t".into(),
            expression: "sum(amount)".into(),
            filter: Some("id >= 1".into()),
            time_column: Some("day".into()),
            grain: Some("month".into()),
            dimensions: vec!["parity".into()],
            owner: "finance@example.com".into(),
        }
    }

    /// The docs a pull writes, for the tables of [`duck::tests::fixture`] (`s.t`, `s.u`) and
    /// one more in the catalog that was not pulled (`s.other`).
    fn write_docs(dir: &Path) {
        std::fs::create_dir_all(dir.join(TABLES_DIR)).unwrap();
        std::fs::create_dir_all(dir.join(PROFILES_DIR)).unwrap();
        std::fs::create_dir_all(dir.join(RULES_DIR)).unwrap();
        let mut t = table("s", "t", &["id", "name", "day", "amount", "parity"]);
        t.profile = Some(dataport_mcp::ProfileBrief {
            computed_at: "2025-01-01T00:00:00Z".into(),
            row_count: 5,
            avg_completeness_pct: 100.0,
            stale: false,
            alerts: Vec::new(),
        });
        let catalog = CatalogDocument {
            server: "https://data.example.com".into(),
            user: "ana".into(),
            generated_at: "2025-03-04T05:06:07Z".into(),
            tables: vec![t, table("s", "u", &["note"]), table("s", "other", &["id"])],
            metrics: vec![metric()],
        };
        std::fs::write(
            dir.join(CATALOG_FILE),
            serde_json::to_vec(&catalog).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join(TABLES_DIR).join("s.t.md"), "# s.t\n").unwrap();
        std::fs::write(dir.join(TABLES_DIR).join("s.u.md"), "# s.u\n").unwrap();
        std::fs::write(
            dir.join(PROFILES_DIR).join("s.t.json"),
            json!({"schema": "s", "table": "t", "computed_at": 1, "profile": {"row_count": 5, "columns": [
                {"name": "id", "data_type": "Int64", "completeness_pct": 100.0, "unique_count": 5}
            ]}})
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.join(RULES_DIR).join("km_0123456789ab.md"),
            "# Revenue means net revenue\n\nAlways subtract discounts from revenue.\n\n---\n\
             Corporate memory item km_0123456789ab · definition · tags: finance, revenue\n\
             Delivered by `dataport pull` because you upvoted it.\n",
        )
        .unwrap();
        std::fs::write(
            dir.join(RULES_DIR).join("my-notes.md"),
            "Parity\nEven rows are checked twice.\n",
        )
        .unwrap();
    }

    fn server() -> McpServer {
        McpServer {
            info: ServerInfo {
                name: "dataport".into(),
                title: "Dataport".into(),
                version: "test".into(),
            },
            limits: dataport_mcp::Limits::default(),
            knowledge: true,
        }
    }

    async fn call(backend: &Offline, tool: &str, arguments: Value) -> Value {
        let (result, _) = server()
            .handle(
                backend,
                "tools/call",
                Some(json!({"name": tool, "arguments": arguments})),
                CancellationToken::new(),
            )
            .await;
        result.unwrap()
    }

    fn text(answer: &Value) -> &str {
        answer["content"][0]["text"].as_str().unwrap()
    }

    #[tokio::test]
    async fn the_catalog_profiles_and_knowledge_come_from_the_pulled_docs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pulled");
        std::fs::create_dir_all(&dir).unwrap();
        write_docs(&dir);
        let offline = Offline::open(
            &dir,
            "the server at https://x could not be reached (connection refused)",
            None,
            Duration::from_secs(60),
        );
        let notice = offline.notice().unwrap();
        assert!(
            notice.starts_with("Offline: the server at https://x could not be reached (connection refused); answered from the files pulled to "),
            "{notice}"
        );
        assert!(notice.contains("at 2025-03-04 05:06 UTC"), "{notice}");
        assert!(
            notice.contains(
                "Only the 2 pulled tables can be queried here; 1 more in the catalog (s.other)"
            ),
            "{notice}"
        );

        let listed = call(&offline, "list_tables", json!({})).await;
        assert_eq!(listed["isError"], false);
        assert!(text(&listed).starts_with("Offline: "), "{listed}");
        let names: Vec<&str> = listed["structuredContent"]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["table"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["s.t", "s.u", "s.other"]);
        assert!(
            text(&listed).contains("- s.other (5 rows, 1 columns): [Not pulled"),
            "{}",
            text(&listed)
        );

        let profile = call(&offline, "profile", json!({"table": "t"})).await;
        assert_eq!(profile["isError"], false, "{profile}");
        assert!(
            text(&profile).contains("- id (Int64)"),
            "{}",
            text(&profile)
        );
        let none = call(&offline, "profile", json!({"table": "s.other"})).await;
        assert_eq!(none["isError"], true);
        assert!(
            text(&none).contains("the table was not pulled"),
            "{}",
            text(&none)
        );

        let metrics = call(&offline, "list_metrics", json!({})).await;
        assert!(text(&metrics).contains("`total_amount`"));

        let found = call(
            &offline,
            "search_knowledge",
            json!({"query": "revenue discounts"}),
        )
        .await;
        assert_eq!(found["isError"], false, "{found}");
        let items = found["structuredContent"]["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["id"], "km_0123456789ab");
        assert_eq!(items[0]["category"], "definition");
        assert_eq!(items[0]["tags"], json!(["finance", "revenue"]));
        assert_eq!(
            items[0]["content"],
            "Always subtract discounts from revenue."
        );
        let mine = call(
            &offline,
            "search_knowledge",
            json!({"query": "parity", "category": "note"}),
        )
        .await;
        assert_eq!(mine["structuredContent"]["items"][0]["title"], "Parity");

        // Without a database, queries say to pull; without DuckDB, what to install.
        let q = call(&offline, "run_query", json!({"sql": "select 1"})).await;
        assert!(text(&q).contains("there is no"), "{}", text(&q));
        std::fs::write(dir.join(DATABASE_FILE), b"").unwrap();
        let q = call(&offline, "run_query", json!({"sql": "select 1"})).await;
        assert_eq!(q["isError"], true);
        assert!(
            text(&q).contains("no DuckDB here: install DuckDB"),
            "{}",
            text(&q)
        );
        // The check comes first, with or without DuckDB.
        let q = call(&offline, "run_query", json!({"sql": "copy s.t to 'x.csv'"})).await;
        assert!(
            text(&q).contains("COPY statements are refused offline"),
            "{}",
            text(&q)
        );

        // No rules, no knowledge; no catalog, nothing but the reason.
        std::fs::remove_dir_all(dir.join(RULES_DIR)).unwrap();
        let e = offline.search_knowledge("x", None, 5).await.unwrap_err();
        assert!(matches!(e, ToolError::Unavailable { .. }), "{e:?}");
        std::fs::remove_file(dir.join(CATALOG_FILE)).unwrap();
        let empty = Offline::open(&dir, "not logged in", None, Duration::from_secs(60));
        assert!(
            empty
                .notice()
                .unwrap()
                .contains("there is no pulled copy to answer from")
        );
        let listed = call(&empty, "list_tables", json!({})).await;
        assert_eq!(listed["isError"], true);
        assert!(
            text(&listed).contains("run `dataport pull` while the server can be reached"),
            "{listed}"
        );
    }

    #[tokio::test]
    async fn queries_and_metrics_run_on_the_pulled_database() {
        for runner in duck::tests::runners() {
            let tmp = tempfile::tempdir().unwrap();
            let dir = duck::tests::fixture(&runner, tmp.path());
            write_docs(&dir);
            let offline =
                Offline::open(&dir, "down", Some(runner.clone()), Duration::from_secs(60));

            let q = call(&offline, "run_query", json!({"sql": "select parity, count(*) as n from s.t group by 1 order by 1", "max_rows": 1})).await;
            assert_eq!(q["isError"], false, "{runner:?}: {q}");
            assert_eq!(q["structuredContent"]["rows"], json!([["even", 3]]));
            assert_eq!(q["structuredContent"]["total_rows"], 2);
            assert!(text(&q).contains("1 of 2 rows shown"), "{}", text(&q));

            let q = call(
                &offline,
                "run_query",
                json!({"sql": "select * from s.other"}),
            )
            .await;
            assert_eq!(q["isError"], true);
            assert!(
                text(&q).contains("s.other is in your catalog but was not pulled"),
                "{}",
                text(&q)
            );

            let q = call(
                &offline,
                "run_query",
                json!({"sql": "explain select * from s.t"}),
            )
            .await;
            assert_eq!(q["isError"], false, "{q}");
            assert_eq!(q["structuredContent"]["columns"][0]["name"], "plan");
            let plan = call(
                &offline,
                "explain_query",
                json!({"sql": "select * from s.t"}),
            )
            .await;
            assert!(
                text(&plan).to_uppercase().contains("PARQUET"),
                "{}",
                text(&plan)
            );

            // total_amount: sum(amount) where id >= 1, by month of `day` (Jan 30 … Feb 3).
            let m = call(&offline, "run_metric", json!({"name": "total_amount"})).await;
            assert_eq!(m["isError"], false, "{m}");
            assert_eq!(
                m["structuredContent"]["rows"],
                json!([["2024-01-01", 1.5], ["2024-02-01", 13.5]])
            );
            let m = call(&offline, "run_metric", json!({"name": "total_amount", "grain": "total", "dimensions": ["parity"], "from": "2024-02-01", "to": "2024-02-02"})).await;
            assert_eq!(
                m["structuredContent"]["rows"],
                json!([["even", 3.0], ["odd", 4.5]]),
                "{m}"
            );
            assert!(
                m["structuredContent"]["sql"]
                    .as_str()
                    .unwrap()
                    .contains("\"day\" < DATE '2024-02-03'")
            );
            let m = call(
                &offline,
                "run_metric",
                json!({"name": "total_amount", "dimensions": ["name"]}),
            )
            .await;
            assert_eq!(m["isError"], true);
            assert!(text(&m).contains("cannot be grouped by 'name'"));
        }
    }

    #[test]
    fn metric_queries_match_the_servers() {
        let m = metric();
        let call = |v: Value| serde_json::from_value::<MetricCall>(v).unwrap();
        assert_eq!(
            metric_sql(&m, &call(json!({"name": "total_amount", "dimensions": ["parity"], "from": "2024-01-01", "to": "2024-12-31"}))).unwrap(),
            "SELECT CAST(date_trunc('month', \"day\") AS DATE) AS period, \"parity\", sum(amount) AS \"total_amount\" \
             FROM \"s\".\"t\" WHERE (id >= 1) AND \"day\" >= DATE '2024-01-01' AND \"day\" < DATE '2025-01-01' \
             GROUP BY 1, 2 ORDER BY 1, 2"
        );
        assert_eq!(
            metric_sql(&m, &call(json!({"name": "total_amount", "grain": "total"}))).unwrap(),
            "SELECT sum(amount) AS \"total_amount\" FROM \"s\".\"t\" WHERE (id >= 1)"
        );
        for (bad, why) in [
            (json!({"name": "x", "grain": "hour"}), "not a grain"),
            (json!({"name": "x", "from": "2024-13-01"}), "must be a date"),
            (
                json!({"name": "x", "from": "2024-02-01", "to": "2024-01-01"}),
                "empty",
            ),
        ] {
            let e = metric_sql(&m, &call(bad)).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let mut untimed = metric();
        untimed.time_column = None;
        untimed.grain = None;
        assert!(
            metric_sql(&untimed, &call(json!({"name": "x", "grain": "day"})))
                .unwrap_err()
                .contains("no time_column")
        );
    }
}

//! Business metrics: the numbers a team reports (revenue, open orders), each defined once —
//! an aggregate SQL expression over one table, with its time grain, the dimensions it may be
//! cut by and its owner — so every analyst and assistant computes it the same way.
//!
//! Definitions live beside `data_description.md`: `<data-dir>/docs/metrics.yml` (or `.yaml`)
//! and every `<data-dir>/docs/metrics/*.yml`. A file holds a `metrics:` list:
//!
//! ```yaml
//! metrics:
//!   - name: revenue                                   # lower case, digits, _
//!     description: Net revenue of shipped line items
//!     owner: finance@example.com
//!     table: tpch.lineitem                            # schema.table, or a unique table name
//!     expression: sum(l_extendedprice * (1 - l_discount))
//!     filter: l_returnflag <> 'R'                     # optional, a condition on the rows
//!     time_column: l_shipdate                         # needed for a grain or a date range
//!     grain: month                                    # day | week | month | quarter | year
//!     dimensions: [l_shipmode, l_linestatus]          # columns it may be grouped by
//! ```
//!
//! Each definition stands alone: one that cannot be read or does not fit its table (an unknown
//! column, an expression that is not SQL or not an aggregate) is reported as a
//! [`MetricProblem`] naming its file, line and reason, and the others load. A definition is
//! checked by planning its query against the snapshot it is served with, so a metric in the
//! catalog is one that runs.
//!
//! This module knows the definitions and the one query each request of a metric runs
//! ([`BusinessMetric::sql`]); who may see or run a metric is the engine's rule (the caller must
//! be able to read every column it uses), and running it goes through the engine like any
//! other query.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNode;
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr as LogicalExpr;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use serde::{Deserialize, Serialize};

use crate::provider::{CATALOG_NAME, SnapshotCatalogProvider, TableAccess};
use crate::snapshot::CatalogSnapshot;

/// The time grain of a metric: the period its values are summed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grain {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Grain {
    /// Every grain, finest first.
    pub const ALL: [Grain; 5] = [
        Grain::Day,
        Grain::Week,
        Grain::Month,
        Grain::Quarter,
        Grain::Year,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Quarter => "quarter",
            Self::Year => "year",
        }
    }

    /// The grain named `text` (`day` … `year`).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == text)
    }
}

/// A definition that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricProblem {
    /// The file, relative to the data dir (`docs/metrics.yml`).
    pub file: String,
    /// The line of the definition (or of the fault inside it), from 1.
    pub line: usize,
    /// The metric's name, when the definition got that far.
    pub metric: Option<String>,
    /// What is wrong, in words that say what to change.
    pub reason: String,
}

impl std::fmt::Display for MetricProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}: ", self.file, self.line)?;
        if let Some(name) = &self.metric {
            write!(f, "metric '{name}': ")?;
        }
        f.write_str(&self.reason)
    }
}

/// One metric, checked against the catalog it is served with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusinessMetric {
    pub name: String,
    pub description: String,
    pub owner: String,
    /// The table's schema and name, resolved.
    pub schema: String,
    pub table: String,
    /// The aggregate, as SQL (normalised by the parser).
    pub expression: String,
    /// The condition on the rows counted, as SQL.
    pub filter: Option<String>,
    pub time_column: Option<String>,
    /// The grain its values are reported at unless a request asks for another.
    pub grain: Option<Grain>,
    pub dimensions: Vec<String>,
    /// Every column of the table the metric reads (its expression, filter, time column and
    /// dimensions): a caller must be able to read them all to see the metric.
    pub columns: BTreeSet<String>,
    /// Where it is defined (relative to the data dir), and on which line.
    pub file: String,
    pub line: usize,
}

/// What one request of a metric asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricQuery {
    /// The period to group by; `None` is the metric's own grain.
    pub grain: Option<Grain>,
    /// No grouping by period at all, even if the metric has a grain (one total).
    pub total: bool,
    /// Dimensions to group by, among the metric's.
    pub dimensions: Vec<String>,
    /// First day counted (on the time column), inclusive.
    pub from: Option<NaiveDate>,
    /// Last day counted, inclusive.
    pub to: Option<NaiveDate>,
}

/// A request a metric cannot answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetricQueryError {
    #[error("metric '{metric}' cannot be grouped by '{dimension}'; its dimensions are: {allowed}")]
    UnknownDimension {
        metric: String,
        dimension: String,
        allowed: String,
    },
    #[error(
        "metric '{metric}' has no time_column, so it has no grain and no date range; ask for its total"
    )]
    NoTimeColumn { metric: String },
    #[error("the date range is empty: 'from' ({from}) is after 'to' ({to})")]
    EmptyRange { from: NaiveDate, to: NaiveDate },
}

impl crate::HasKind for MetricQueryError {
    fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidArgument
    }
}

/// Name of the period column of a metric's result.
pub const PERIOD_COLUMN: &str = "period";

impl BusinessMetric {
    /// The query that answers `query`: one row per period and combination of the chosen
    /// dimensions (ordered by them), the metric's value in a column named after it.
    pub fn sql(&self, query: &MetricQuery) -> Result<String, MetricQueryError> {
        for d in &query.dimensions {
            if !self.dimensions.contains(d) {
                return Err(MetricQueryError::UnknownDimension {
                    metric: self.name.clone(),
                    dimension: d.clone(),
                    allowed: if self.dimensions.is_empty() {
                        "none".into()
                    } else {
                        self.dimensions.join(", ")
                    },
                });
            }
        }
        let grain = if query.total {
            None
        } else {
            query.grain.or(self.grain)
        };
        let needs_time = grain.is_some() || query.from.is_some() || query.to.is_some();
        let time = match (&self.time_column, needs_time) {
            (Some(c), _) => Some(quote(c)),
            (None, true) => {
                return Err(MetricQueryError::NoTimeColumn {
                    metric: self.name.clone(),
                });
            }
            (None, false) => None,
        };
        if let (Some(from), Some(to)) = (query.from, query.to)
            && from > to
        {
            return Err(MetricQueryError::EmptyRange { from, to });
        }

        let mut groups: Vec<String> = Vec::new();
        if let (Some(g), Some(t)) = (grain, &time) {
            groups.push(format!(
                "CAST(date_trunc('{}', {t}) AS DATE) AS {PERIOD_COLUMN}",
                g.as_str()
            ));
        }
        // Dimensions in the metric's order, each once.
        groups.extend(
            self.dimensions
                .iter()
                .filter(|d| query.dimensions.contains(d))
                .map(|d| quote(d)),
        );
        let mut conditions: Vec<String> = Vec::new();
        if let Some(f) = &self.filter {
            conditions.push(format!("({f})"));
        }
        if let (Some(from), Some(t)) = (query.from, &time) {
            conditions.push(format!("{t} >= DATE '{}'", from.format("%Y-%m-%d")));
        }
        if let (Some(to), Some(t)) = (query.to, &time)
            && let Some(next) = to.succ_opt()
        {
            conditions.push(format!("{t} < DATE '{}'", next.format("%Y-%m-%d")));
        }

        let mut sql = String::from("SELECT ");
        for g in &groups {
            sql.push_str(g);
            sql.push_str(", ");
        }
        sql.push_str(&format!("{} AS {}", self.expression, quote(&self.name)));
        sql.push_str(&format!(
            " FROM {}.{}",
            quote(&self.schema),
            quote(&self.table)
        ));
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        if !groups.is_empty() {
            let positions = (1..=groups.len())
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            sql.push_str(&format!(" GROUP BY {positions} ORDER BY {positions}"));
        }
        Ok(sql)
    }

    /// The query of the metric at its own grain, grouped by every dimension: what loading
    /// checks, so each request's query (a subset of it) plans too.
    fn widest_sql(&self) -> Result<String, MetricQueryError> {
        self.sql(&MetricQuery {
            dimensions: self.dimensions.clone(),
            ..Default::default()
        })
    }
}

/// `name` as a quoted SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The metrics of one snapshot, and the definitions that could not be used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusinessMetrics {
    metrics: BTreeMap<String, Arc<BusinessMetric>>,
    problems: Vec<MetricProblem>,
    /// The definitions as read from the files (and their problems), which these were checked
    /// from: the same files on the same tables need no second check.
    read: (Vec<Draft>, Vec<MetricProblem>),
}

impl BusinessMetrics {
    /// Every metric, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<BusinessMetric>> {
        self.metrics.values()
    }
    pub fn get(&self, name: &str) -> Option<&Arc<BusinessMetric>> {
        self.metrics.get(name)
    }
    /// The metrics computed from `schema.table`.
    pub fn on_table<'a>(
        &'a self,
        schema: &'a str,
        table: &'a str,
    ) -> impl Iterator<Item = &'a Arc<BusinessMetric>> {
        self.all()
            .filter(move |m| m.schema == schema && m.table == table)
    }
    /// Definitions that could not be used.
    pub fn problems(&self) -> &[MetricProblem] {
        &self.problems
    }
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.problems.is_empty()
    }
    /// Whether these were checked from exactly `drafts` and `problems`.
    pub(crate) fn read_from(&self, drafts: &[Draft], problems: &[MetricProblem]) -> bool {
        self.read.0 == drafts && self.read.1 == problems
    }
}

/// A definition as written, before it meets the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    name: String,
    description: String,
    owner: String,
    table: String,
    expression: String,
    filter: Option<String>,
    time_column: Option<String>,
    grain: Option<Grain>,
    dimensions: Vec<String>,
    file: String,
    line: usize,
}

impl Draft {
    fn problem(&self, reason: impl Into<String>) -> MetricProblem {
        MetricProblem {
            file: self.file.clone(),
            line: self.line,
            metric: Some(self.name.clone()),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    metrics: Vec<yaml_serde::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    name: String,
    description: String,
    owner: String,
    table: String,
    expression: String,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    time_column: Option<String>,
    #[serde(default)]
    grain: Option<Grain>,
    #[serde(default)]
    dimensions: Vec<String>,
}

/// The metric definition files of a data dir, in the order they are read.
pub fn files(data_dir: &Path) -> Vec<PathBuf> {
    let docs = data_dir.join("docs");
    let mut out: Vec<PathBuf> = ["metrics.yml", "metrics.yaml"]
        .iter()
        .map(|n| docs.join(n))
        .filter(|p| p.is_file())
        .collect();
    if let Ok(entries) = std::fs::read_dir(docs.join("metrics")) {
        let mut extra: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "yml" || e == "yaml")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !crate::names::is_ignored(n))
                    && p.is_file()
            })
            .collect();
        extra.sort();
        out.extend(extra);
    }
    out
}

/// Reads every definition file of `data_dir`: the definitions that parse (each name once),
/// and a problem for each one that does not.
pub fn read(data_dir: &Path) -> (Vec<Draft>, Vec<MetricProblem>) {
    let mut drafts: Vec<Draft> = Vec::new();
    let mut problems = Vec::new();
    for path in files(data_dir) {
        let shown = path
            .strip_prefix(data_dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let (d, p) = parse(&shown, &text);
                drafts.extend(d);
                problems.extend(p);
            }
            Err(e) => problems.push(MetricProblem {
                file: shown,
                line: 1,
                metric: None,
                reason: format!("cannot read the file: {e}"),
            }),
        }
    }
    // A name defined twice is a problem at its second definition; the first stands.
    let mut seen: HashSet<String> = HashSet::new();
    let mut unique = Vec::with_capacity(drafts.len());
    for d in drafts {
        if seen.insert(d.name.clone()) {
            unique.push(d);
        } else {
            problems.push(d.problem("a metric of this name is already defined; rename one"));
        }
    }
    (unique, problems)
}

/// Parses one file's text (`file` is its name in messages).
pub fn parse(file: &str, text: &str) -> (Vec<Draft>, Vec<MetricProblem>) {
    let problem = |line: usize, metric: Option<String>, reason: String| MetricProblem {
        file: file.to_string(),
        line,
        metric,
        reason,
    };
    let raw: RawFile = match yaml_serde::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let line = e.location().map_or(1, |l| l.line());
            return (
                Vec::new(),
                vec![problem(
                    line,
                    None,
                    format!(
                        "not a metrics file ({}); it must hold a 'metrics:' list of definitions",
                        without_location(&e)
                    ),
                )],
            );
        }
    };
    let starts = item_lines(text).filter(|s| s.len() == raw.metrics.len());
    let mut drafts = Vec::new();
    let mut problems = Vec::new();
    for (i, value) in raw.metrics.into_iter().enumerate() {
        let line = starts.as_ref().map_or(1, |s| s[i]);
        let name = value
            .get("name")
            .and_then(yaml_serde::Value::as_str)
            .map(str::to_string);
        let metric: RawMetric = match yaml_serde::from_value(value) {
            Ok(m) => m,
            Err(e) => {
                // Read the definition's own lines again for the line of the fault.
                let line = starts
                    .as_ref()
                    .and_then(|s| fault_line(text, s, i))
                    .unwrap_or(line);
                problems.push(problem(line, name, without_location(&e)));
                continue;
            }
        };
        match draft(file, line, metric) {
            Ok(d) => drafts.push(d),
            Err(p) => problems.push(p),
        }
    }
    (drafts, problems)
}

/// A yaml error's message without its ` at line … column …` (the problem has the line).
fn without_location(e: &yaml_serde::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The line (from 1) of each item of the top-level `metrics:` block list, when the file is
/// written that way (a flow list `[…]` has no lines of its own).
fn item_lines(text: &str) -> Option<Vec<usize>> {
    let lines: Vec<&str> = text.lines().collect();
    let key = lines.iter().position(|l| {
        l.strip_prefix("metrics:")
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
    })?;
    let mut indent: Option<usize> = None;
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate().skip(key + 1) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let depth = line.len() - trimmed.len();
        if depth == 0 && !trimmed.starts_with('-') {
            break; // the next top-level key
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            match indent {
                None => {
                    indent = Some(depth);
                    out.push(n + 1);
                }
                Some(i) if i == depth => out.push(n + 1),
                Some(_) => {}
            }
        }
    }
    Some(out)
}

/// The line of the fault in item `i`, by parsing its lines alone.
fn fault_line(text: &str, starts: &[usize], i: usize) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let first = starts[i] - 1;
    let end = starts.get(i + 1).map_or(lines.len(), |n| n - 1);
    let chunk = lines.get(first..end)?.join("\n");
    let err = yaml_serde::from_str::<Vec<RawMetric>>(&dedent(&chunk)).err()?;
    Some(first + err.location()?.line())
}

fn dedent(chunk: &str) -> String {
    let depth = chunk.len() - chunk.trim_start_matches(' ').len();
    chunk
        .lines()
        .map(|l| {
            let spaces = l.len() - l.trim_start_matches(' ').len();
            &l[spaces.min(depth)..]
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks what can be checked without the catalog: the name, the SQL of the expression and
/// filter (each one expression, nothing after it), the grain's time column.
fn draft(file: &str, line: usize, m: RawMetric) -> Result<Draft, MetricProblem> {
    let fail = |reason: String| MetricProblem {
        file: file.to_string(),
        line,
        metric: Some(m.name.clone()),
        reason,
    };
    let valid_name = m
        .name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase())
        && m.name.len() <= 63
        && m.name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid_name {
        return Err(fail(
            "name must start with a lower-case letter and hold only lower-case letters, \
             digits and _ (at most 63)"
                .into(),
        ));
    }
    for (field, value) in [
        ("description", &m.description),
        ("owner", &m.owner),
        ("table", &m.table),
    ] {
        if value.trim().is_empty() {
            return Err(fail(format!("{field} is empty")));
        }
    }
    let expression = one_expression(&m.expression)
        .map_err(|e| fail(format!("expression is not one SQL expression: {e}")))?;
    let filter = match &m.filter {
        Some(f) => Some(
            one_expression(f).map_err(|e| fail(format!("filter is not one SQL condition: {e}")))?,
        ),
        None => None,
    };
    if m.grain.is_some() && m.time_column.is_none() {
        return Err(fail(
            "a grain needs a time_column (the date or timestamp column to group by)".into(),
        ));
    }
    let mut dimensions: Vec<String> = Vec::new();
    for d in m.dimensions {
        if dimensions.contains(&d) {
            return Err(fail(format!("dimension '{d}' is listed twice")));
        }
        dimensions.push(d);
    }
    Ok(Draft {
        name: m.name,
        description: m.description.trim().to_string(),
        owner: m.owner.trim().to_string(),
        table: m.table.trim().to_string(),
        expression,
        filter,
        time_column: m.time_column,
        grain: m.grain,
        dimensions,
        file: file.to_string(),
        line,
    })
}

/// `text` parsed as exactly one SQL expression, written back out by the parser: what a
/// metric's query is built from, so nothing but that expression can reach it.
fn one_expression(text: &str) -> Result<String, String> {
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(|e| e.to_string())?;
    let expr = parser.parse_expr().map_err(|e| e.to_string())?;
    match parser.peek_token().token {
        Token::EOF => Ok(expr.to_string()),
        other => Err(format!("unexpected '{other}' after the expression")),
    }
}

/// Resolves `drafts` against `snapshot` and plans each one's widest query with `state`:
/// the metrics that run, and a problem for each that does not (after `problems`).
pub(crate) async fn check(
    drafts: Vec<Draft>,
    mut problems: Vec<MetricProblem>,
    snapshot: Arc<CatalogSnapshot>,
    state: SessionState,
) -> BusinessMetrics {
    let read = (drafts.clone(), problems.clone());
    let list = Arc::new(MemoryCatalogProviderList::new());
    list.register_catalog(
        CATALOG_NAME.to_string(),
        Arc::new(SnapshotCatalogProvider::new(
            Arc::clone(&snapshot),
            Arc::new(|_| TableAccess::Full),
        )),
    );
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
        .with_catalog_list(list as Arc<dyn CatalogProviderList>)
        .build();
    let mut metrics = BTreeMap::new();
    for d in drafts {
        match resolve(&d, &snapshot, &state).await {
            Ok(m) => {
                metrics.insert(m.name.clone(), Arc::new(m));
            }
            Err(reason) => problems.push(d.problem(reason)),
        }
    }
    BusinessMetrics {
        metrics,
        problems,
        read,
    }
}

async fn resolve(
    d: &Draft,
    snapshot: &CatalogSnapshot,
    state: &SessionState,
) -> Result<BusinessMetric, String> {
    let (schema, name) = match d.table.split_once('.') {
        Some((s, n)) => (Some(s), n),
        None => (None, d.table.as_str()),
    };
    let table = snapshot
        .resolve(schema, name)
        .map_err(|e| format!("{e}; the table must be in the catalog (schema.table)"))?;
    let arrow = table.arrow_schema();
    let df_schema = DFSchema::try_from(arrow.as_ref().clone()).map_err(|e| e.to_string())?;
    let mut columns = BTreeSet::new();
    let known = |c: &str| arrow.field_with_name(c).is_ok();
    let list = |names: &mut dyn Iterator<Item = &str>| names.collect::<Vec<_>>().join(", ");
    for c in d.time_column.iter().chain(&d.dimensions) {
        if !known(c) {
            return Err(format!(
                "{} has no column '{c}' (its columns: {})",
                table.qualified_name(),
                list(&mut arrow.fields().iter().map(|f| f.name().as_str()))
            ));
        }
        columns.insert(c.clone());
    }
    if let Some(t) = &d.time_column {
        let ty = arrow
            .field_with_name(t)
            .map_err(|e| e.to_string())?
            .data_type();
        if !ty.is_temporal() {
            return Err(format!(
                "time_column '{t}' is {ty}, not a date or timestamp"
            ));
        }
    }
    for (what, sql) in
        std::iter::once(("expression", &d.expression)).chain(d.filter.iter().map(|f| ("filter", f)))
    {
        let expr = state.create_logical_expr(sql, &df_schema).map_err(|e| {
            format!(
                "{what} does not fit {}: {}",
                table.qualified_name(),
                clean(&e)
            )
        })?;
        if reads_other_tables(&expr) {
            return Err(format!(
                "{what} reads other tables (a subquery); a metric reads only its own table"
            ));
        }
        columns.extend(expr.column_refs().into_iter().map(|c| c.name.clone()));
    }
    let metric = BusinessMetric {
        name: d.name.clone(),
        description: d.description.clone(),
        owner: d.owner.clone(),
        schema: table.schema_name().to_string(),
        table: table.name().to_string(),
        expression: d.expression.clone(),
        filter: d.filter.clone(),
        time_column: d.time_column.clone(),
        grain: d.grain,
        dimensions: d.dimensions.clone(),
        columns,
        file: d.file.clone(),
        line: d.line,
    };
    let sql = metric.widest_sql().map_err(|e| e.to_string())?;
    state
        .create_logical_plan(&sql)
        .await
        .map_err(|e| format!("its query does not plan: {}", clean(&e)))?;
    Ok(metric)
}

fn reads_other_tables(expr: &LogicalExpr) -> bool {
    expr.exists(|e| {
        Ok(matches!(
            e,
            LogicalExpr::ScalarSubquery(_) | LogicalExpr::Exists(_) | LogicalExpr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// A DataFusion error's message without its internal prefixes and backtraces.
fn clean(e: &datafusion::error::DataFusionError) -> String {
    let text = e.strip_backtrace();
    let text = text
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("Schema error: ")
        .trim_start_matches("SQL error: ");
    text.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests;

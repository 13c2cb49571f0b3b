//! [`Engine`]: plans and runs SQL for every surface, on one catalog snapshot per query.

use dataport_common::HasKind as _;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use datafusion::common::{ParamValues, ScalarValue, TableReference};
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::stream::{RecordBatchReceiverStream, RecordBatchStreamAdapter};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use dataport_auth::{AuditEntry, AuditLog, GrantSource, Principal};
use dataport_catalog::metrics::BusinessMetric;
use dataport_catalog::{
    CATALOG_NAME, Catalog, CatalogOptions, CatalogSnapshot, CatalogTable, SEARCH_PATH_SCHEMA,
    SnapshotCatalogProvider,
};
use futures::{Stream, StreamExt};
use tracing::Instrument;

use crate::error::{EngineError, Result};
use crate::metrics::{Metrics, Outcome, Surface};
use crate::telemetry::Tally;
use crate::wire;

/// How the engine runs queries.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Memory all queries together may reserve, in bytes. Operators that can spill (sort,
    /// aggregate, join) spill to `spill_dir` beyond it; others fail with a clear error.
    pub memory_limit: usize,
    /// Where spill files go.
    pub spill_dir: PathBuf,
    /// Longest a query may run, planning and streaming included.
    pub query_timeout: Duration,
    /// Parallelism per query (default: number of cores).
    pub target_partitions: usize,
    /// Extra DataFusion settings (`datafusion.*` keys), applied after Dataport's.
    pub datafusion: Vec<(String, String)>,
    /// Where table grants come from; without it only the group rules apply.
    pub grants: Option<Arc<dyn GrantSource>>,
    /// Where every query is recorded; without it nothing is.
    pub audit: Option<AuditLog>,
}

impl EngineOptions {
    /// Defaults for a data dir: spill under `<data_dir>/spill`, 5 minute timeout.
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            memory_limit: 4 << 30,
            spill_dir: data_dir.join("spill"),
            query_timeout: Duration::from_secs(300),
            target_partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            datafusion: Vec::new(),
            grants: None,
            audit: None,
        }
    }
}

/// One request's identity and origin.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub principal: Principal,
    pub surface: Surface,
    /// Correlates logs, metrics and error bodies.
    pub request_id: String,
    /// Where the request's queries count the rows they serve, for its trace.
    pub tally: Arc<Tally>,
    /// The assistant's tool that asked (MCP), recorded with each query in the audit log.
    pub tool: Option<String>,
}

impl RequestContext {
    pub fn new(principal: Principal, surface: Surface, request_id: impl Into<String>) -> Self {
        Self {
            principal,
            surface,
            request_id: request_id.into(),
            tally: Arc::default(),
            tool: None,
        }
    }

    /// The context of a query asked for by the MCP tool `tool`.
    pub fn with_tool(mut self, tool: impl Into<String>) -> Self {
        self.tool = Some(tool.into());
        self
    }

    /// The context with the tally of the request's [`RequestTrace`](crate::telemetry::RequestTrace).
    pub fn with_tally(mut self, tally: Arc<Tally>) -> Self {
        self.tally = tally;
        self
    }
}

/// A statement's result schema and parameters, from [`Engine::describe`].
#[derive(Debug, Clone)]
pub struct Described {
    /// Schema of the result, in client-facing types.
    pub schema: SchemaRef,
    /// One field per parameter, named `$1`, `$2`, …; type `Null` where the statement does
    /// not determine it.
    pub parameters: SchemaRef,
}

/// Scalar function names by category, from [`Engine::sql_functions`].
#[derive(Debug, Clone, Default)]
pub struct SqlFunctions {
    pub numeric: Vec<String>,
    pub string: Vec<String>,
    pub datetime: Vec<String>,
    pub system: Vec<String>,
}

/// A SQL request.
#[derive(Debug, Clone, Default)]
pub struct QueryRequest {
    pub sql: String,
    /// Values for `$1`, `$2`, ….
    pub params: Vec<ScalarValue>,
    /// Stop after this many rows: the plan gets a LIMIT, so no more work is done. This
    /// changes the plan, and so may change the answer of a query that depends on row order
    /// (a window frame over ties): for previews, not where a result must match the full one.
    pub max_rows: Option<usize>,
}

impl QueryRequest {
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            ..Default::default()
        }
    }
}

/// The query engine. Clone it freely; clones share everything.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch};
/// use arrow::datatypes::Int64Type;
/// use dataport_catalog::{CatalogOptions, write::ParquetFileWriter};
/// use dataport_engine::{Engine, EngineOptions, Principal, QueryRequest, RequestContext, Surface};
/// use futures::TryStreamExt as _;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A data dir with one table, `sales.orders`, of three rows.
/// let data = tempfile::tempdir()?;
/// let ids: ArrayRef = Arc::new(Int64Array::from(vec![10, 20, 30]));
/// let batch = RecordBatch::try_from_iter([("id", ids)])?;
/// let path = data.path().join("parquet/sales/orders.parquet");
/// let mut file = ParquetFileWriter::try_new(&path, batch.schema())?;
/// file.write(&batch)?;
/// file.finish()?;
///
/// let mut catalog = CatalogOptions::new(data.path());
/// catalog.watch = false;
/// let engine = Engine::try_new(EngineOptions::new(data.path()), catalog).await?;
///
/// let ctx = RequestContext::new(Principal::local_admin(), Surface::Internal, "example-1");
/// let request = QueryRequest::new("SELECT count(*) AS n FROM sales.orders WHERE id > $1");
/// let request = QueryRequest { params: vec![15_i64.into()], ..request };
/// let batches: Vec<RecordBatch> = engine.execute(request, &ctx).await?.try_collect().await?;
/// assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 2);
///
/// // The engine is read-only: statements that change anything are refused.
/// let drop = engine.execute(QueryRequest::new("DROP TABLE sales.orders"), &ctx).await;
/// assert!(drop.is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Engine(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    options: EngineOptions,
    catalog: Catalog,
    runtime: Arc<RuntimeEnv>,
    base_state: SessionState,
    /// The base state shared with access rules, which parse row filters with it.
    parse_state: Arc<SessionState>,
    metrics: Arc<Metrics>,
    started: Instant,
}

impl Engine {
    /// Build the runtime (memory pool, spill dir), open the catalog and get ready to serve.
    pub async fn try_new(options: EngineOptions, catalog: CatalogOptions) -> Result<Self> {
        std::fs::create_dir_all(&options.spill_dir).map_err(|e| EngineError::Config {
            message: format!(
                "cannot create spill dir {}: {e}",
                options.spill_dir.display()
            ),
        })?;
        clear_stale_spill_files(&options.spill_dir);
        let pool: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(options.memory_limit),
            std::num::NonZeroUsize::MIN.saturating_add(4),
        ));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(
                DiskManagerMode::Directories(vec![options.spill_dir.clone()]),
            ))
            .build_arc()?;
        let config = session_config(&options)?;
        let catalog = Catalog::open(catalog, Arc::clone(&runtime), config.clone()).await?;
        let base_state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&runtime))
            .with_default_features()
            .build();
        Ok(Self(Arc::new(Inner {
            options,
            catalog,
            runtime,
            parse_state: Arc::new(base_state.clone()),
            base_state,
            metrics: Arc::default(),
            started: Instant::now(),
        })))
    }

    pub fn catalog(&self) -> &Catalog {
        &self.0.catalog
    }

    pub fn options(&self) -> &EngineOptions {
        &self.0.options
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The metrics, to keep beyond a borrow of the engine (a request's trace).
    pub fn shared_metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.0.metrics)
    }

    pub fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }

    /// Bytes reserved in the memory pool now.
    pub fn memory_reserved(&self) -> usize {
        self.0.runtime.memory_pool.reserved()
    }

    /// The catalog as `ctx`'s principal may see it: the one view every surface lists from.
    pub fn catalog_view(&self, ctx: &RequestContext) -> SnapshotCatalogProvider {
        self.view_of(self.0.catalog.snapshot(), ctx)
    }

    fn view_of(
        &self,
        snapshot: Arc<CatalogSnapshot>,
        ctx: &RequestContext,
    ) -> SnapshotCatalogProvider {
        let grants = self
            .0
            .options
            .grants
            .as_ref()
            .map_or_else(|| Arc::from(Vec::new()), |g| g.grants());
        SnapshotCatalogProvider::new(
            snapshot,
            crate::access::table_filter(&ctx.principal, grants, Arc::clone(&self.0.parse_state)),
        )
    }

    /// The business metrics `ctx`'s principal may see: those whose table and every column
    /// they read (expression, filter, time column, dimensions) the principal can read. Running
    /// one is a query like any other, under the same grants (row filters apply).
    pub fn business_metrics(&self, ctx: &RequestContext) -> Vec<Arc<BusinessMetric>> {
        let view = self.catalog_view(ctx);
        view.snapshot()
            .metrics()
            .all()
            .filter(|m| metric_visible(&view, m))
            .cloned()
            .collect()
    }

    /// The business metric `name`, if `ctx`'s principal may see it ([`Engine::business_metrics`]).
    pub fn business_metric(&self, ctx: &RequestContext, name: &str) -> Result<Arc<BusinessMetric>> {
        let view = self.catalog_view(ctx);
        view.snapshot()
            .metrics()
            .get(name)
            .filter(|m| metric_visible(&view, m))
            .cloned()
            .ok_or_else(|| EngineError::MetricNotFound {
                name: name.to_string(),
            })
    }

    /// Plan and start `request` on behalf of `ctx`. The returned stream holds the catalog
    /// snapshot the query was planned on; dropping it cancels the query.
    pub async fn execute(
        &self,
        request: QueryRequest,
        ctx: &RequestContext,
    ) -> Result<QueryStream> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.0.options.query_timeout;
        let span = tracing::info_span!(
            "query",
            request_id = %ctx.request_id,
            surface = ctx.surface.as_str(),
            principal = %ctx.principal.name,
        );
        tracing::debug!(parent: &span, sql = %truncate(&request.sql, 500), "query received");
        let mut guard = QueryGuard::new(self.clone(), ctx, &request.sql, started);
        let planned = tokio::time::timeout_at(deadline, self.plan(request, ctx, &mut guard.tables))
            .instrument(span.clone())
            .await;
        let (stream, snapshot) = match planned {
            Err(_) => {
                let e = EngineError::Timeout {
                    after: self.0.options.query_timeout,
                };
                guard.finish(Outcome::Timeout, Some(&e));
                return Err(e);
            }
            Ok(Err(e)) => {
                guard.finish(outcome_of(&e), Some(&e));
                tracing::info!(parent: &span, error = %e, kind = e.kind().code(), "query refused or failed to plan");
                return Err(e);
            }
            Ok(Ok(s)) => s,
        };
        // Batches already have the client's types (`execute_for_client`).
        Ok(QueryStream {
            schema: stream.schema(),
            inner: stream,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout: self.0.options.query_timeout,
            guard,
            _snapshot: snapshot,
            span,
            done: false,
        })
    }

    /// Parse, check and plan `sql` on the current snapshot, as `ctx`'s principal sees it.
    async fn logical_plan(
        &self,
        sql: &str,
        ctx: &RequestContext,
        tables: &mut Vec<String>,
    ) -> Result<(LogicalPlan, SessionState, Arc<CatalogSnapshot>)> {
        let mut statement = parse_one(sql, &self.0.base_state)?;
        crate::policy::check(&statement)?;
        crate::placeholders::number_placeholders(&mut statement)?;

        let snapshot = self.0.catalog.snapshot();
        let view = self.view_of(Arc::clone(&snapshot), ctx);
        let state = self.session_for(view.clone(), Arc::clone(&snapshot));
        // Every table must come from the catalog: this is also where a table the caller
        // may not read becomes "not found".
        let references = state.resolve_table_references(&statement)?;
        tables.extend(references.iter().map(|r| r.to_string()));
        for reference in references {
            check_reference(&view, &reference)?;
        }
        let plan = state.statement_to_plan(statement).await?;
        datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| {
                EngineError::refused(format!(
                    "statement is not allowed: {}",
                    EngineError::from(e)
                ))
            })?;
        Ok((plan, state, snapshot))
    }

    /// What `sql` would return and which parameters it takes, without running it: for
    /// prepared statements and result schemas announced before execution.
    ///
    /// The schema is the one [`Engine::execute`] streams for the same statement and `params`:
    /// both come from the physical plan after DataFusion's analyzer and optimizer (type
    /// coercion of `CASE` and `UNION` branches, rewrites), through [`wire::result_schema`].
    /// With parameters still unbound (`params` empty for a statement that has some) the
    /// physical plan cannot be built; the optimized logical plan's schema is the best answer
    /// until values are bound.
    ///
    /// A statement that cannot be planned (refused, a table the caller can't read, a syntax
    /// error) is recorded in the audit log and metrics like a failed query; one that plans is
    /// recorded when it is executed.
    pub async fn describe(
        &self,
        sql: &str,
        params: &[ScalarValue],
        ctx: &RequestContext,
    ) -> Result<Described> {
        let timeout = self.0.options.query_timeout;
        let mut tables = Vec::new();
        let described = tokio::time::timeout(
            timeout,
            self.describe_planned(sql, params, ctx, &mut tables),
        )
        .await
        .map_err(|_| EngineError::Timeout { after: timeout })
        .and_then(|r| r);
        if let Err(e) = &described {
            let mut guard = QueryGuard::new(self.clone(), ctx, sql, Instant::now());
            guard.tables = tables;
            guard.finish(outcome_of(e), Some(e));
        }
        described
    }

    async fn describe_planned(
        &self,
        sql: &str,
        params: &[ScalarValue],
        ctx: &RequestContext,
        tables: &mut Vec<String>,
    ) -> Result<Described> {
        let (plan, state, _snapshot) = self.logical_plan(sql, ctx, tables).await?;
        let mut declared = Vec::new();
        for (name, data_type) in plan.get_parameter_types()? {
            let position = name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| EngineError::InvalidParameters {
                    message: format!("named parameter {name} is not supported; use $1, $2, … or ?"),
                })?;
            declared.push((position, data_type));
        }
        declared.sort_by_key(|(position, _)| *position);
        let schema = if declared.is_empty() || !params.is_empty() {
            let plan = bind_params(plan, params.to_vec())?;
            state.create_physical_plan(&plan).await?.schema()
        } else {
            Arc::clone(state.optimize(&plan)?.schema().inner())
        };
        let fields: Vec<Field> = declared
            .into_iter()
            .map(|(position, data_type)| {
                let data_type = data_type.map_or(DataType::Null, |t| wire::client_type(&t));
                Field::new(format!("${position}"), data_type, true)
            })
            .collect();
        Ok(Described {
            schema: wire::result_schema(&schema),
            parameters: Arc::new(Schema::new(fields)),
        })
    }

    async fn plan(
        &self,
        request: QueryRequest,
        ctx: &RequestContext,
        tables: &mut Vec<String>,
    ) -> Result<(SendableRecordBatchStream, Arc<CatalogSnapshot>)> {
        let (plan, state, snapshot) = self.logical_plan(&request.sql, ctx, tables).await?;
        let plan = bind_params(plan, request.params)?;
        let plan = match request.max_rows {
            // EXPLAIN and DESCRIBE answer a few rows and cannot sit under a LIMIT.
            Some(n)
                if !matches!(
                    plan,
                    LogicalPlan::Explain(_)
                        | LogicalPlan::Analyze(_)
                        | LogicalPlan::DescribeTable(_)
                ) =>
            {
                LogicalPlanBuilder::from(plan).limit(0, Some(n))?.build()?
            }
            _ => plan,
        };
        let physical = state.create_physical_plan(&plan).await?;
        let physical = crate::cooperative::everywhere(physical)?;
        let stream = execute_for_client(physical, state.task_ctx())?;
        Ok((stream, snapshot))
    }

    /// A session for one query: its only catalog is `view` of `snapshot`, it plans with the
    /// statistics of `snapshot`'s in-memory tables, and its execution has started now — as
    /// `SessionContext::state` marks every query DataFusion runs, so `now()`,
    /// `current_date` and `current_time` are simplified to this query's start time when the
    /// plan is optimized (without it, planning leaves them to be invoked, which they refuse).
    fn session_for(
        &self,
        view: SnapshotCatalogProvider,
        snapshot: Arc<CatalogSnapshot>,
    ) -> SessionState {
        let list = Arc::new(MemoryCatalogProviderList::new());
        list.register_catalog(CATALOG_NAME.to_string(), Arc::new(view));
        let mut state = SessionStateBuilder::new_from_existing(self.0.base_state.clone())
            .with_catalog_list(list as Arc<dyn CatalogProviderList>)
            .with_statistics_registry(crate::statistics::registry(snapshot))
            .build();
        state.mark_start_execution();
        state
    }

    /// The scalar SQL functions this engine offers, grouped the way JDBC/ODBC metadata asks
    /// for them; each list sorted, upper case.
    pub fn sql_functions(&self) -> SqlFunctions {
        let mut out = SqlFunctions::default();
        for (name, udf) in self.0.base_state.scalar_functions() {
            let section = udf.documentation().map(|d| d.doc_section.label);
            let list = match section {
                Some("Math Functions") => &mut out.numeric,
                Some(
                    "String Functions" | "Binary String Functions" | "Regular Expression Functions",
                ) => &mut out.string,
                Some("Time and Date Functions") => &mut out.datetime,
                _ => &mut out.system,
            };
            list.push(name.to_ascii_uppercase());
        }
        for list in [
            &mut out.numeric,
            &mut out.string,
            &mut out.datetime,
            &mut out.system,
        ] {
            list.sort();
            list.dedup();
        }
        out
    }

    /// Prometheus text for the whole server: queries, memory, catalog.
    pub fn render_metrics(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.0.metrics.render(&mut out);
        let snapshot = self.0.catalog.snapshot();
        let status = self.0.catalog.status();
        let (files, bytes) = snapshot.totals();
        let gauges: [(&str, &str, String); 7] = [
            (
                "dataport_memory_pool_reserved_bytes",
                "Bytes reserved by running queries.",
                self.memory_reserved().to_string(),
            ),
            (
                "dataport_memory_pool_limit_bytes",
                "Memory limit for all queries.",
                self.0.options.memory_limit.to_string(),
            ),
            (
                "dataport_catalog_tables",
                "Tables in the current catalog snapshot.",
                snapshot.table_count().to_string(),
            ),
            (
                "dataport_catalog_files",
                "Parquet files in the current catalog snapshot.",
                files.to_string(),
            ),
            (
                "dataport_catalog_bytes",
                "Bytes of Parquet in the current catalog snapshot.",
                bytes.to_string(),
            ),
            (
                "dataport_catalog_snapshot_version",
                "Version of the current catalog snapshot.",
                snapshot.version().to_string(),
            ),
            (
                "dataport_catalog_errors",
                "Problems found by the last catalog refresh.",
                snapshot.issues().len().to_string(),
            ),
        ];
        for (name, help, value) in gauges {
            crate::metrics::header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        crate::metrics::header(
            &mut out,
            "dataport_catalog_refreshes_total",
            "counter",
            "Catalog refreshes by outcome.",
        );
        let _ = writeln!(
            out,
            "dataport_catalog_refreshes_total{{outcome=\"ok\"}} {}",
            status.refreshes - status.failed_refreshes
        );
        let _ = writeln!(
            out,
            "dataport_catalog_refreshes_total{{outcome=\"error\"}} {}",
            status.failed_refreshes
        );
        crate::metrics::header(
            &mut out,
            "dataport_catalog_table_loads_total",
            "counter",
            "Tables whose Parquet footers were (re)read.",
        );
        let _ = writeln!(
            out,
            "dataport_catalog_table_loads_total {}",
            self.0.catalog.table_loads()
        );
        crate::metrics::header(
            &mut out,
            "dataport_uptime_seconds",
            "gauge",
            "Seconds since start.",
        );
        let _ = writeln!(out, "dataport_uptime_seconds {}", self.uptime().as_secs());
        out
    }
}

/// Check that `sql` is a valid row filter for `table` (for grants): a boolean expression
/// over its columns, without subqueries, aggregates or parameters.
pub fn check_row_filter(table: &CatalogTable, sql: &str) -> Result<()> {
    let schema = datafusion::common::DFSchema::try_from(table.arrow_schema().as_ref().clone())?;
    let state = SessionStateBuilder::new().with_default_features().build();
    crate::access::parse_row_filter(sql, &schema, &state)
        .map(|_| ())
        .map_err(|reason| EngineError::InvalidQuery {
            message: format!(
                "invalid row filter for {}: {reason}",
                table.qualified_name()
            ),
        })
}

/// Whether the caller of `view` can read `metric`'s table and every column it uses.
fn metric_visible(view: &SnapshotCatalogProvider, metric: &BusinessMetric) -> bool {
    view.resolve(Some(&metric.schema), &metric.table)
        .is_ok_and(|t| {
            let schema = view.visible_schema(&t);
            metric
                .columns
                .iter()
                .all(|c| schema.field_with_name(c).is_ok())
        })
}

/// Check that a restricted grant fits `table` as it is now: every hidden column exists, not
/// every column is hidden (that shares nothing: revoke instead), and the row filter is valid
/// ([`check_row_filter`]).
pub fn check_grant(
    table: &CatalogTable,
    row_filter: Option<&str>,
    hidden_columns: &[String],
) -> Result<()> {
    let schema = table.arrow_schema();
    let invalid = |message: String| EngineError::InvalidQuery { message };
    for c in hidden_columns {
        if schema.field_with_name(c).is_err() {
            return Err(invalid(format!(
                "{} has no column '{c}'",
                table.qualified_name()
            )));
        }
    }
    if !hidden_columns.is_empty() && hidden_columns.len() >= schema.fields().len() {
        return Err(invalid(
            "hiding every column shares nothing; revoke the grant instead".into(),
        ));
    }
    match row_filter.map(str::trim).filter(|f| !f.is_empty()) {
        Some(filter) => check_row_filter(table, filter),
        None => Ok(()),
    }
}

/// The optimizer rule turned off by default (see [`session_config`]); the profiler turns it
/// off too.
const TOPK_AGGREGATION: &str = "datafusion.optimizer.enable_topk_aggregation";

/// The DataFusion settings of queries and of the catalog that reads the tables (with
/// `options.datafusion` over Dataport's defaults). Commands that open the catalog without an
/// engine use it too, so they see the tables with the server's types.
pub fn session_config(options: &EngineOptions) -> Result<SessionConfig> {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG_NAME, SEARCH_PATH_SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
        .with_target_partitions(options.target_partitions.max(1))
        .with_collect_statistics(true);
    let defaults: [(&str, &str); 6] = [
        ("datafusion.execution.parquet.pushdown_filters", "true"),
        ("datafusion.execution.parquet.reorder_filters", "true"),
        ("datafusion.execution.parquet.enable_page_index", "true"),
        // DataFusion 55's grouped top-k (`SELECT DISTINCT x … ORDER BY x LIMIT n`) panics on a
        // float column holding NaN among more than n values; plain aggregation is correct.
        (TOPK_AGGREGATION, "false"),
        // Build sides chosen from estimates through filters, aggregates and joins (see
        // `statistics`); TPC-H q18 hashed 6 M rows instead of 9 without it.
        ("datafusion.optimizer.use_statistics_registry", "true"),
        // Strings as clients receive them (`Utf8`), not as views: results, Flight DoGet and
        // Arrow IPC need no conversion (DoGet of TPC-H lineitem: 0.80 s -> 0.65 s), and
        // in-memory tables are 14 % smaller. Views group and compare short strings faster
        // (TPC-H over Flight SQL took 3.7 % longer without them); see BENCHMARKS.md.
        (
            "datafusion.execution.parquet.schema_force_view_types",
            "false",
        ),
    ];
    let user = options
        .datafusion
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()));
    for (key, value) in defaults.into_iter().chain(user) {
        config
            .options_mut()
            .set(key, value)
            .map_err(|e| EngineError::Config {
                message: format!("setting '{key}' = '{value}': {}", EngineError::from(e)),
            })?;
    }
    Ok(config)
}

fn parse_one(sql: &str, state: &SessionState) -> Result<DfStatement> {
    let recursion_limit = state.config().options().sql_parser.recursion_limit.get();
    let mut statements = DFParserBuilder::new(sql)
        .with_recursion_limit(recursion_limit)
        .build()?
        .parse_statements()?;
    match statements.len() {
        0 => Err(EngineError::InvalidQuery {
            message: "no SQL statement was given".into(),
        }),
        1 => statements.pop_front().ok_or_else(|| EngineError::Internal {
            message: "parser returned no statement".into(),
        }),
        n => Err(EngineError::InvalidQuery {
            message: format!("send one statement per request ({n} were given)"),
        }),
    }
}

fn check_reference(view: &SnapshotCatalogProvider, reference: &TableReference) -> Result<()> {
    let (catalog, schema, table) = match reference {
        TableReference::Bare { table } => (None, None, table.as_ref()),
        TableReference::Partial { schema, table } => (None, Some(schema.as_ref()), table.as_ref()),
        TableReference::Full {
            catalog,
            schema,
            table,
        } => (
            Some(catalog.as_ref()),
            Some(schema.as_ref()),
            table.as_ref(),
        ),
    };
    if catalog.is_some_and(|c| c != CATALOG_NAME) {
        return Err(dataport_catalog::CatalogError::TableNotFound {
            table: reference.to_string(),
        }
        .into());
    }
    if schema == Some("information_schema") {
        return Ok(());
    }
    match view.resolve(schema, table) {
        Ok(_) => Ok(()),
        // Table functions appear among the references; the policy already allowed only
        // pure generators through.
        Err(dataport_catalog::CatalogError::TableNotFound { .. })
            if schema.is_none() && crate::policy::ALLOWED_TABLE_FUNCTIONS.contains(&table) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn bind_params(plan: LogicalPlan, params: Vec<ScalarValue>) -> Result<LogicalPlan> {
    let expected = plan.get_parameter_types().map_err(EngineError::from)?.len();
    if params.len() != expected {
        return Err(EngineError::InvalidParameters {
            message: format!(
                "the query has {expected} parameter(s) ($1…) but {} value(s) were given",
                params.len()
            ),
        });
    }
    if params.is_empty() {
        return Ok(plan);
    }
    plan.with_param_values(ParamValues::List(
        params.into_iter().map(Into::into).collect(),
    ))
    .map_err(|e| EngineError::InvalidParameters {
        message: EngineError::from(e).to_string(),
    })
}

fn outcome_of(e: &EngineError) -> Outcome {
    match e {
        EngineError::Refused { .. } => Outcome::Refused,
        EngineError::Timeout { .. } => Outcome::Timeout,
        _ => Outcome::Error,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn clear_stale_spill_files(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove stale spill file");
        }
    }
}

/// Longest SQL text kept in the audit log.
const AUDIT_SQL_CHARS: usize = 10_000;

/// Records one query's outcome exactly once, in the metrics and the audit log; a query
/// dropped unfinished was cancelled.
#[derive(Debug)]
struct QueryGuard {
    engine: Engine,
    surface: Surface,
    account_id: i64,
    user: String,
    request_id: String,
    tally: Arc<Tally>,
    tool: Option<String>,
    sql: String,
    tables: Vec<String>,
    started: Instant,
    at_ms: i64,
    rows: u64,
    bytes: u64,
    finished: bool,
}

impl QueryGuard {
    fn new(engine: Engine, ctx: &RequestContext, sql: &str, started: Instant) -> Self {
        engine.0.metrics.query_started();
        Self {
            engine,
            surface: ctx.surface,
            account_id: ctx.principal.id,
            user: ctx.principal.name.clone(),
            request_id: ctx.request_id.clone(),
            tally: Arc::clone(&ctx.tally),
            tool: ctx.tool.clone(),
            sql: truncate(sql, AUDIT_SQL_CHARS).to_string(),
            tables: Vec::new(),
            started,
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            rows: 0,
            bytes: 0,
            finished: false,
        }
    }

    fn finish(&mut self, outcome: Outcome, error: Option<&EngineError>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let elapsed = self.started.elapsed();
        let m = &self.engine.0.metrics;
        m.rows_served(self.surface, self.rows);
        self.tally.add_rows(self.rows);
        m.query_finished(self.surface, outcome, elapsed);
        if let Some(audit) = &self.engine.0.options.audit {
            audit.record(AuditEntry {
                at_ms: self.at_ms,
                account_id: (self.account_id > 0).then_some(self.account_id),
                user: std::mem::take(&mut self.user),
                surface: self.surface.as_str().to_string(),
                request_id: std::mem::take(&mut self.request_id),
                sql: std::mem::take(&mut self.sql),
                tables: std::mem::take(&mut self.tables),
                rows: self.rows,
                bytes: self.bytes,
                duration_ms: elapsed.as_millis() as u64,
                outcome: outcome.as_str().to_string(),
                error: error.map(|e| truncate(&e.to_string(), 2_000).to_string()),
                tool: self.tool.take(),
            });
        }
    }
}

impl Drop for QueryGuard {
    fn drop(&mut self) {
        if !self.finished {
            tracing::info!(rows = self.rows, "query cancelled before it finished");
            self.finish(Outcome::Cancelled, None);
        }
    }
}

/// A running query's results, in client-facing types (see [`wire`]). Ends with an error
/// if the query fails or runs out of time; dropping it stops the query.
pub struct QueryStream {
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    guard: QueryGuard,
    _snapshot: Arc<CatalogSnapshot>,
    span: tracing::Span,
    done: bool,
}

/// Runs `plan` with its batches converted to the client's types ([`wire::result_schema`])
/// inside each partition, so the conversion runs in parallel; the partitions are then merged
/// as `execute_stream` merges them (one task per partition, a bounded channel).
fn execute_for_client(
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
) -> datafusion::error::Result<SendableRecordBatchStream> {
    let target = wire::result_schema(&plan.schema());
    let convert = |target: SchemaRef| {
        move |batch: datafusion::error::Result<RecordBatch>| {
            batch.and_then(|b| Ok(wire::to_client_batch(b, &target)?))
        }
    };
    let partitions = plan.properties().output_partitioning().partition_count();
    if partitions <= 1 {
        let stream = execute_stream(plan, task)?;
        return Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&target),
            stream.map(convert(target)),
        )));
    }
    let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&target), partitions);
    for partition in 0..partitions {
        let mut stream = plan
            .execute(partition, Arc::clone(&task))?
            .map(convert(Arc::clone(&target)));
        let tx = builder.tx();
        builder.spawn(async move {
            while let Some(batch) = stream.next().await {
                let failed = batch.is_err();
                // A closed channel means the query's stream was dropped: stop.
                if tx.send(batch).await.is_err() || failed {
                    break;
                }
            }
            Ok(())
        });
    }
    Ok(builder.build())
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("schema", &self.schema)
            .field("done", &self.done)
            .finish()
    }
}

impl QueryStream {
    /// Schema of every batch this stream yields.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn fail(&mut self, e: EngineError) -> Poll<Option<Result<RecordBatch>>> {
        self.done = true;
        let _enter = self.span.enter();
        tracing::info!(error = %e, kind = e.kind().code(), "query failed");
        drop(_enter);
        self.guard.finish(outcome_of(&e), Some(&e));
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let after = self.timeout;
            return self.fail(EngineError::Timeout { after });
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(batch))) => {
                self.guard.rows += batch.num_rows() as u64;
                self.guard.bytes += batch.get_array_memory_size() as u64;
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(e))) => self.fail(e.into()),
            Poll::Ready(None) => {
                self.done = true;
                let rows = self.guard.rows;
                let elapsed = self.guard.started.elapsed();
                let _enter = self.span.enter();
                tracing::info!(
                    rows,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "query finished"
                );
                drop(_enter);
                self.guard.finish(Outcome::Ok, None);
                Poll::Ready(None)
            }
        }
    }
}

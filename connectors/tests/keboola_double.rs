//! An in-process fake of the Keboola Storage API (v2, as docs/connectors.md uses it): buckets,
//! table detail, async exports with job polling, files (plain or sliced, optionally gzip-compressed)
//! served from `/s3/...` paths that must never see the storage token.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a broken double should fail loudly

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

const TOKEN_HEADER: &str = "x-storageapi-token";
/// Keboola-style timestamp used for import/change dates and metadata.
const TIMESTAMP: &str = "2024-01-01T00:00:00+0100";

/// One row of a fake table; `None` is NULL.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub(crate) struct DoubleRow {
    pub(crate) values: Vec<Option<String>>,
    /// Unix seconds, matched against `changedSince` / `changedUntil`.
    pub(crate) changed_at: i64,
}

/// A fake Storage table.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub(crate) struct DoubleTable {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) bucket: String,
    pub(crate) columns: Vec<String>,
    pub(crate) primary_key: Vec<String>,
    /// `(column, key, value, provider)`; empty serializes as `[]`, like the real API.
    pub(crate) column_metadata: Vec<(String, String, String, String)>,
    pub(crate) rows: Vec<DoubleRow>,
}

/// Behaviour knobs of the double.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub(crate) struct DoubleOptions {
    pub(crate) token: String,
    /// Export as sliced files (manifest + header-less slices).
    pub(crate) sliced: bool,
    /// Rows per slice; there is always at least one slice.
    pub(crate) slice_rows: usize,
    /// Polls answered `waiting`/`processing` before the job finishes.
    pub(crate) job_polls_before_success: u32,
    /// Every n-th `/v2` or `/s3` request answers 500 before doing anything.
    pub(crate) fail_every_nth_request: Option<u32>,
    /// Table ids whose export jobs end in `error`.
    pub(crate) fail_jobs_for: HashSet<String>,
}

impl Default for DoubleOptions {
    fn default() -> Self {
        Self {
            token: "test-token".to_owned(),
            sliced: false,
            slice_rows: 3,
            job_polls_before_success: 2,
            fail_every_nth_request: None,
            fail_jobs_for: HashSet::new(),
        }
    }
}

/// One request seen by the double, with its final status.
#[allow(dead_code)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoggedRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    /// Form body (export calls only).
    pub(crate) form: Vec<(String, String)>,
    pub(crate) had_token: bool,
    pub(crate) status: u16,
}

/// A running fake Keboola stack; the server stops when this is dropped.
#[allow(dead_code)]
pub(crate) struct KeboolaDouble {
    pub(crate) base_url: String,
    state: AppState,
    server: tokio::task::JoinHandle<()>,
}

#[allow(dead_code)]
impl KeboolaDouble {
    /// Bind `127.0.0.1:0` and serve the fake API on a background task.
    pub(crate) async fn start(tables: Vec<DoubleTable>, options: DoubleOptions) -> KeboolaDouble {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Keboola double");
        let address = listener.local_addr().expect("Keboola double address");
        let base_url = format!("http://{address}");
        let state = AppState {
            inner: Arc::new(Mutex::new(Inner {
                tables,
                options,
                last_id: 22_070_935,
                ..Inner::default()
            })),
            base: Arc::from(base_url.as_str()),
        };
        let app = Router::new()
            .route("/v2/storage/buckets", get(buckets))
            .route("/v2/storage/tables/{table_id}", get(table_detail))
            .route("/v2/storage/tables/{table_id}/export-async", post(export))
            .route("/v2/storage/jobs/{id}", get(job))
            .route("/v2/storage/files/{id}", get(file))
            .route("/s3/files/{id}", get(s3_file))
            .route("/s3/manifests/{id}", get(s3_manifest))
            .route("/s3/slices/{id}/{slice}", get(s3_slice))
            .fallback(unknown_route)
            .layer(middleware::from_fn_with_state(state.clone(), gate))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("Keboola double stopped: {e}");
            }
        });
        KeboolaDouble {
            base_url,
            state,
            server,
        }
    }

    /// All requests so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<LoggedRequest> {
        self.state.lock().requests.clone()
    }

    pub(crate) fn clear_requests(&self) {
        self.state.lock().requests.clear();
    }

    /// Form bodies of the export-async calls, in order.
    pub(crate) fn exports(&self) -> Vec<Vec<(String, String)>> {
        self.state.lock().exports.clone()
    }

    /// Replace a table's rows (between syncs).
    pub(crate) fn set_rows(&self, table_id: &str, rows: Vec<DoubleRow>) {
        self.state.lock().table_mut(table_id).rows = rows;
    }

    /// Schema drift: append a column; existing rows get `default`.
    pub(crate) fn add_column(&self, table_id: &str, column: &str, default: Option<&str>) {
        let mut inner = self.state.lock();
        let table = inner.table_mut(table_id);
        let width = table.columns.len();
        table.columns.push(column.to_owned());
        for row in &mut table.rows {
            row.values.resize(width, None);
            row.values.push(default.map(str::to_owned));
        }
    }

    /// Schema drift: remove a column (and its values and metadata).
    pub(crate) fn drop_column(&self, table_id: &str, column: &str) {
        let mut inner = self.state.lock();
        let table = inner.table_mut(table_id);
        let Some(index) = table.columns.iter().position(|c| c == column) else {
            return;
        };
        table.columns.remove(index);
        for row in &mut table.rows {
            if index < row.values.len() {
                row.values.remove(index);
            }
        }
        table.column_metadata.retain(|(c, _, _, _)| c != column);
    }

    pub(crate) fn set_column_metadata(
        &self,
        table_id: &str,
        metadata: Vec<(String, String, String, String)>,
    ) {
        self.state.lock().table_mut(table_id).column_metadata = metadata;
    }

    pub(crate) fn set_options(&self, f: impl FnOnce(&mut DoubleOptions)) {
        f(&mut self.state.lock().options);
    }
}

impl Drop for KeboolaDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Quote one RFC-4180 field; NULL becomes the empty field `""`.
#[allow(dead_code)]
pub(crate) fn csv_field(value: Option<&str>) -> String {
    format!("\"{}\"", value.unwrap_or_default().replace('"', "\"\""))
}

/// Parse RFC-4180 text (quoted fields may hold commas, quotes and newlines) into rows.
#[allow(dead_code)]
pub(crate) fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut pending) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        pending = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                pending = false;
            }
            _ => field.push(c),
        }
    }
    if pending {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[derive(Clone)]
struct AppState {
    inner: Arc<Mutex<Inner>>,
    base: Arc<str>,
}

impl AppState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("Keboola double state poisoned")
    }
}

#[derive(Default)]
struct Inner {
    tables: Vec<DoubleTable>,
    options: DoubleOptions,
    requests: Vec<LoggedRequest>,
    exports: Vec<Vec<(String, String)>>,
    jobs: HashMap<u64, Job>,
    files: HashMap<u64, StoredFile>,
    last_id: u64,
    request_count: u32,
}

struct Job {
    table_id: String,
    polls: u32,
    /// The file id, or the error message.
    outcome: Result<u64, String>,
}

struct StoredFile {
    name: String,
    sliced: bool,
    /// One part (with header) for a plain file, else the slices (without header).
    parts: Vec<Bytes>,
}

/// The form body of an export, kept on the response so the gate can log it.
#[derive(Clone)]
struct LoggedForm(Vec<(String, String)>);

impl Inner {
    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    fn table_mut(&mut self, table_id: &str) -> &mut DoubleTable {
        self.tables
            .iter_mut()
            .find(|t| t.id == table_id)
            .unwrap_or_else(|| panic!("no table {table_id} in the Keboola double"))
    }

    fn file(&self, id: &str) -> Option<(u64, &StoredFile)> {
        let id = id.parse::<u64>().ok()?;
        self.files.get(&id).map(|file| (id, file))
    }

    /// Run the export now and register its job; `None` when the table is unknown.
    fn create_job(&mut self, base: &str, table_id: &str, request: &ExportRequest) -> Option<Value> {
        let table = self.tables.iter().find(|t| t.id == table_id)?;
        let outcome = if self.options.fail_jobs_for.contains(table_id) {
            Err(format!("Export of table \"{table_id}\" failed"))
        } else {
            export_csv(table, request).map(|(header, lines)| {
                build_file(table_id, header, &lines, request.gzip, &self.options)
            })
        };
        let outcome = outcome.map(|file| {
            let id = self.next_id();
            self.files.insert(id, file);
            id
        });
        let id = self.next_id();
        let job = Job {
            table_id: table_id.to_owned(),
            polls: 0,
            outcome,
        };
        let body = job_json(base, id, &job, "waiting");
        self.jobs.insert(id, job);
        Some(body)
    }
}

#[derive(Default)]
struct ExportRequest {
    gzip: bool,
    columns: Option<Vec<String>>,
    since: Option<i64>,
    until: Option<i64>,
    filters: Vec<Filter>,
}

#[derive(Default)]
struct Filter {
    column: String,
    operator: String,
    values: Vec<String>,
}

impl Filter {
    /// NULL fails; `ne` must differ from all values, the others hold for any value.
    fn matches(&self, value: Option<&str>) -> bool {
        let Some(value) = value else { return false };
        let holds = |v: &String| {
            let ordering = compare(value, v);
            match self.operator.as_str() {
                "eq" => ordering.is_eq(),
                "ne" => ordering.is_ne(),
                "gt" => ordering.is_gt(),
                "ge" => ordering.is_ge(),
                "lt" => ordering.is_lt(),
                _ => ordering.is_le(),
            }
        };
        if self.operator == "ne" {
            self.values.iter().all(holds)
        } else {
            self.values.iter().any(holds)
        }
    }
}

/// Numeric comparison when both sides are numbers, else string comparison.
fn compare(left: &str, right: &str) -> Ordering {
    match (left.parse::<f64>(), right.parse::<f64>()) {
        (Ok(l), Ok(r)) => l.partial_cmp(&r).unwrap_or_else(|| left.cmp(right)),
        _ => left.cmp(right),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "true" => Ok(true),
        "0" | "false" | "" => Ok(false),
        other => Err(format!("Invalid gzip value \"{other}\"")),
    }
}

fn parse_seconds(key: &str, value: &str) -> Result<Option<i64>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("Invalid {key} value \"{value}\""))
}

/// Parse the ordered form pairs of an export call; errors become 400s.
fn parse_export(pairs: &[(String, String)]) -> Result<ExportRequest, String> {
    let mut request = ExportRequest::default();
    let mut filters: BTreeMap<usize, Filter> = BTreeMap::new();
    for (key, value) in pairs {
        match key.as_str() {
            "format" if value != "rfc" => return Err(format!("Unsupported format \"{value}\"")),
            "gzip" => request.gzip = parse_bool(value)?,
            "columns" => {
                let columns: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect();
                request.columns = (!columns.is_empty()).then_some(columns);
            }
            "changedSince" => request.since = parse_seconds(key, value)?,
            "changedUntil" => request.until = parse_seconds(key, value)?,
            _ => {
                let Some(rest) = key.strip_prefix("whereFilters[") else {
                    continue;
                };
                let malformed = || format!("Malformed filter parameter \"{key}\"");
                let (index, field) = rest.split_once(']').ok_or_else(malformed)?;
                let index = index.parse::<usize>().map_err(|_| malformed())?;
                let entry = filters.entry(index).or_default();
                match field {
                    "[column]" => entry.column.clone_from(value),
                    "[operator]" => entry.operator.clone_from(value),
                    _ if field.starts_with("[values][") && field.ends_with(']') => {
                        entry.values.push(value.clone());
                    }
                    _ => return Err(malformed()),
                }
            }
        }
    }
    for (index, filter) in &filters {
        let what = if filter.column.is_empty() {
            "column"
        } else if filter.values.is_empty() {
            "values"
        } else if !["eq", "ne", "gt", "ge", "lt", "le"].contains(&filter.operator.as_str()) {
            return Err(format!("Unknown operator \"{}\"", filter.operator));
        } else {
            continue;
        };
        return Err(format!("whereFilters[{index}] has no {what}"));
    }
    request.filters = filters.into_values().collect();
    Ok(request)
}

fn cell(row: &DoubleRow, index: usize) -> Option<&str> {
    row.values.get(index).and_then(Option::as_deref)
}

fn csv_line<'a>(fields: impl Iterator<Item = Option<&'a str>>) -> String {
    let mut line = fields.map(csv_field).collect::<Vec<_>>().join(",");
    line.push('\n');
    line
}

/// The header line and the data lines of an export; an unknown column is a job error.
fn export_csv(
    table: &DoubleTable,
    request: &ExportRequest,
) -> Result<(String, Vec<String>), String> {
    let position = |name: &str| {
        table
            .columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| format!("Column \"{name}\" not found in table \"{}\"", table.id))
    };
    let columns = request.columns.as_ref().unwrap_or(&table.columns);
    let positions = columns
        .iter()
        .map(|c| position(c.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let filters = request
        .filters
        .iter()
        .map(|f| position(f.column.as_str()).map(|i| (i, f)))
        .collect::<Result<Vec<_>, _>>()?;
    let lines = table
        .rows
        .iter()
        .filter(|row| request.since.is_none_or(|since| row.changed_at >= since))
        .filter(|row| request.until.is_none_or(|until| row.changed_at < until))
        .filter(|row| filters.iter().all(|(i, f)| f.matches(cell(row, *i))))
        .map(|row| csv_line(positions.iter().map(|&i| cell(row, i))))
        .collect();
    let header = csv_line(columns.iter().map(|c| Some(c.as_str())));
    Ok((header, lines))
}

fn compress(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

fn build_file(
    table_id: &str,
    header: String,
    lines: &[String],
    gzip: bool,
    options: &DoubleOptions,
) -> StoredFile {
    let parts: Vec<String> = if options.sliced {
        let mut slices: Vec<String> = lines
            .chunks(options.slice_rows.max(1))
            .map(|c| c.concat())
            .collect();
        if slices.is_empty() {
            slices.push(String::new());
        }
        slices
    } else {
        vec![header + &lines.concat()]
    };
    let encode = |part: String| {
        if gzip {
            Bytes::from(compress(part.as_bytes()))
        } else {
            Bytes::from(part)
        }
    };
    StoredFile {
        name: format!("{table_id}.csv{}", if gzip { ".gz" } else { "" }),
        sliced: options.sliced,
        parts: parts.into_iter().map(encode).collect(),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn table_not_found(table_id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("The table \"{table_id}\" was not found"),
    )
}

fn octets(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

fn bucket_json(id: &str) -> Value {
    let (stage, rest) = id.split_once('.').unwrap_or(("in", id));
    json!({ "id": id, "name": rest.strip_prefix("c-").unwrap_or(rest), "stage": stage })
}

fn column_metadata(table: &DoubleTable) -> Value {
    if table.column_metadata.is_empty() {
        return json!([]);
    }
    let mut map = serde_json::Map::new();
    for (i, (column, key, value, provider)) in table.column_metadata.iter().enumerate() {
        let entry = json!({
            "id": (i + 1).to_string(),
            "key": key,
            "value": value,
            "provider": provider,
            "timestamp": TIMESTAMP,
        });
        if let Value::Array(list) = map.entry(column.as_str()).or_insert_with(|| json!([])) {
            list.push(entry);
        }
    }
    Value::Object(map)
}

fn table_json(table: &DoubleTable) -> Value {
    let size: usize = table
        .rows
        .iter()
        .flat_map(|r| r.values.iter().flatten())
        .map(String::len)
        .sum();
    json!({
        "id": table.id,
        "name": table.name,
        "bucket": bucket_json(&table.bucket),
        "columns": table.columns,
        "primaryKey": table.primary_key,
        "rowsCount": table.rows.len(),
        "dataSizeBytes": size,
        "lastImportDate": TIMESTAMP,
        "lastChangeDate": TIMESTAMP,
        "isAlias": false,
        "columnMetadata": column_metadata(table),
    })
}

fn job_json(base: &str, id: u64, job: &Job, status: &str) -> Value {
    let mut body = json!({
        "id": id,
        "status": status,
        "url": format!("{base}/v2/storage/jobs/{id}"),
        "tableId": job.table_id,
        "operationName": "tableExport",
        "results": null,
        "error": null,
    });
    match (status, &job.outcome) {
        ("success", Ok(file)) => {
            body["results"] = json!({ "file": { "id": file }, "cacheHit": false });
        }
        ("error", Err(message)) => body["error"] = json!({ "message": message }),
        _ => {}
    }
    body
}

/// Counts, fails, authenticates and logs every request.
async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let token = request
        .headers()
        .get(TOKEN_HEADER)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let had_token = token.is_some();
    let (api, storage) = (path.starts_with("/v2/"), path.starts_with("/s3/"));
    let rejection = {
        let mut inner = state.lock();
        if api || storage {
            inner.request_count += 1;
        }
        let count = inner.request_count;
        let fail = inner
            .options
            .fail_every_nth_request
            .is_some_and(|n| count.is_multiple_of(n));
        if (api || storage) && fail {
            Some(error(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"))
        } else if api && token.as_deref() != Some(inner.options.token.as_str()) {
            Some(error(StatusCode::UNAUTHORIZED, "Invalid access token"))
        } else if storage && had_token {
            Some(error(
                StatusCode::FORBIDDEN,
                "The storage token must not be sent to file storage",
            ))
        } else {
            None
        }
    };
    let mut response = match rejection {
        Some(response) => response,
        None => next.run(request).await,
    };
    let form = response
        .extensions_mut()
        .remove::<LoggedForm>()
        .map(|f| f.0)
        .unwrap_or_default();
    let status = response.status().as_u16();
    state.lock().requests.push(LoggedRequest {
        method,
        path,
        query,
        form,
        had_token,
        status,
    });
    response
}

async fn unknown_route() -> Response {
    error(StatusCode::NOT_FOUND, "Not found")
}

async fn buckets(State(state): State<AppState>) -> Response {
    let inner = state.lock();
    let mut ids: Vec<&str> = Vec::new();
    for table in &inner.tables {
        if !ids.contains(&table.bucket.as_str()) {
            ids.push(&table.bucket);
        }
    }
    Json(ids.into_iter().map(bucket_json).collect::<Vec<_>>()).into_response()
}

async fn table_detail(State(state): State<AppState>, Path(table_id): Path<String>) -> Response {
    let inner = state.lock();
    match inner.tables.iter().find(|t| t.id == table_id) {
        Some(table) => Json(table_json(table)).into_response(),
        None => table_not_found(&table_id),
    }
}

async fn export(
    State(state): State<AppState>,
    Path(table_id): Path<String>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let pairs = match form {
        Ok(Form(pairs)) => pairs,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let mut response = {
        let mut inner = state.lock();
        inner.exports.push(pairs.clone());
        match parse_export(&pairs) {
            Err(message) => error(StatusCode::BAD_REQUEST, message),
            Ok(request) => match inner.create_job(&state.base, &table_id, &request) {
                Some(job) => (StatusCode::ACCEPTED, Json(job)).into_response(),
                None => table_not_found(&table_id),
            },
        }
    };
    response.extensions_mut().insert(LoggedForm(pairs));
    response
}

async fn job(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let mut inner = state.lock();
    let before = inner.options.job_polls_before_success;
    let not_found = || error(StatusCode::NOT_FOUND, format!("Job {id} not found"));
    let Ok(job_id) = id.parse::<u64>() else {
        return not_found();
    };
    let Some(job) = inner.jobs.get_mut(&job_id) else {
        return not_found();
    };
    job.polls += 1;
    let status = if job.polls > before {
        if job.outcome.is_ok() {
            "success"
        } else {
            "error"
        }
    } else if job.polls == 1 {
        "waiting"
    } else {
        "processing"
    };
    Json(job_json(&state.base, job_id, job, status)).into_response()
}

async fn file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let inner = state.lock();
    let Some((id, file)) = inner.file(&id) else {
        return error(StatusCode::NOT_FOUND, format!("File {id} not found"));
    };
    let kind = if file.sliced { "manifests" } else { "files" };
    let size: usize = file.parts.iter().map(Bytes::len).sum();
    let mut body = json!({
        "id": id,
        "url": format!("{}/s3/{kind}/{id}", state.base),
        "isSliced": file.sliced,
        "provider": "aws",
        "region": "us-east-1",
        "name": file.name,
        "sizeBytes": size,
    });
    let federation = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .any(|p| p == "federationToken=1" || p == "federationToken=true");
    if federation {
        body["credentials"] =
            json!({ "AccessKeyId": "x", "SecretAccessKey": "y", "SessionToken": "z" });
    }
    Json(body).into_response()
}

async fn s3_file(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let inner = state.lock();
    match inner
        .file(&id)
        .filter(|(_, f)| !f.sliced)
        .and_then(|(_, f)| f.parts.first())
    {
        Some(bytes) => octets(bytes.clone()),
        None => error(StatusCode::NOT_FOUND, "NoSuchKey"),
    }
}

async fn s3_manifest(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let inner = state.lock();
    let Some((id, file)) = inner.file(&id).filter(|(_, f)| f.sliced) else {
        return error(StatusCode::NOT_FOUND, "NoSuchKey");
    };
    let entries: Vec<Value> = (0..file.parts.len())
        .map(|k| json!({ "url": format!("{}/s3/slices/{id}/{k}", state.base) }))
        .collect();
    Json(json!({ "entries": entries })).into_response()
}

async fn s3_slice(
    State(state): State<AppState>,
    Path((id, slice)): Path<(String, String)>,
) -> Response {
    let inner = state.lock();
    let part = inner
        .file(&id)
        .filter(|(_, f)| f.sliced)
        .and_then(|(_, f)| f.parts.get(slice.parse::<usize>().ok()?));
    match part {
        Some(bytes) => octets(bytes.clone()),
        None => error(StatusCode::NOT_FOUND, "NoSuchKey"),
    }
}

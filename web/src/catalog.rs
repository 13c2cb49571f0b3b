//! `GET /api/v1/catalog`, `GET /api/v1/catalog/{schema}/{table}`, the table profiles
//! (`…/{schema}/{table}/profile`, `GET /api/v1/catalog/profiles.json`) and
//! `POST /api/v1/catalog/refresh`.

use axum::Json;
use axum::extract::{Path, State};
use dataport_catalog::{CatalogTable, ResolvedForeignKey, SnapshotCatalogProvider};
use dataport_engine::profiles::{ProfileSummary, ProfilesExport, ServedProfile};
use serde::Serialize;

use crate::auth::{Admin, Caller};
use crate::{ApiError, AppState, RequestId, request_context};

#[derive(Debug, Serialize)]
pub(crate) struct CatalogBody {
    pub(crate) catalog: &'static str,
    pub(crate) snapshot_version: u64,
    pub(crate) schemas: Vec<SchemaBody>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SchemaBody {
    pub(crate) name: String,
    pub(crate) tables: Vec<TableBody>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TableBody {
    pub(crate) schema: String,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) row_count: Option<u64>,
    pub(crate) size_bytes: u64,
    pub(crate) file_count: usize,
    /// Bytes of the table held in memory as Arrow (`catalog.memory_tables`), once loaded.
    pub(crate) in_memory_bytes: Option<u64>,
    pub(crate) columns: Vec<ColumnBody>,
    pub(crate) primary_key: Vec<String>,
    pub(crate) foreign_keys: Vec<ResolvedForeignKey>,
    pub(crate) partition_columns: Vec<String>,
    /// When the newest file of the table was written (Unix milliseconds): its freshness.
    pub(crate) updated_at_ms: Option<i64>,
    pub(crate) private: bool,
    pub(crate) sync_strategy: Option<dataport_catalog::description::SyncStrategy>,
    pub(crate) dataset: Option<String>,
    /// The table's profile in a few figures, when one has been computed (for a restricted
    /// grant: computed for that grant, on the first request of its profile).
    pub(crate) profile: Option<ProfileSummary>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ColumnBody {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) data_type: String,
    pub(crate) nullable: bool,
    pub(crate) description: Option<String>,
}

/// A table as the caller sees it: hidden columns, keys into tables they can't read, and
/// (for a row-filtered share) the whole table's size and row count are left out.
fn table_body(state: &AppState, view: &SnapshotCatalogProvider, t: &CatalogTable) -> TableBody {
    let schema = view.visible_schema(t);
    let restricted = view.is_restricted(t);
    TableBody {
        schema: t.schema_name().to_string(),
        name: t.name().to_string(),
        description: t.description().map(str::to_string),
        row_count: if restricted { None } else { t.row_count() },
        size_bytes: if restricted { 0 } else { t.size_bytes() },
        file_count: if restricted { 0 } else { t.file_count() },
        in_memory_bytes: if restricted { None } else { t.resident_bytes() },
        columns: schema
            .fields()
            .iter()
            .map(|f| ColumnBody {
                name: f.name().clone(),
                data_type: dataport_engine::wire::client_type(f.data_type()).to_string(),
                nullable: f.is_nullable(),
                description: t.column_description(f.name()).map(str::to_string),
            })
            .collect(),
        primary_key: view.primary_key(t),
        foreign_keys: view.foreign_keys(t),
        partition_columns: t
            .partition_columns()
            .iter()
            .filter(|c| schema.field_with_name(c).is_ok())
            .cloned()
            .collect(),
        updated_at_ms: t
            .updated_at()
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64),
        private: t.is_private(),
        sync_strategy: t.meta().and_then(|m| m.sync_strategy),
        dataset: t.meta().and_then(|m| m.dataset.clone()),
        profile: state.profiler.summary(view, t),
    }
}

pub(crate) async fn get_catalog(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
) -> Json<CatalogBody> {
    Json(catalog_body(&state, &principal, &request_id))
}

/// Every table `principal` may read, by schema, as they may see it (the API's and the
/// portal's one listing).
pub(crate) fn catalog_body(
    state: &AppState,
    principal: &dataport_engine::Principal,
    request_id: &str,
) -> CatalogBody {
    let view = state
        .engine
        .catalog_view(&request_context(principal, request_id));
    let mut schemas: Vec<SchemaBody> = Vec::new();
    for t in view.tables() {
        match schemas.last_mut() {
            Some(s) if s.name == t.schema_name() => s.tables.push(table_body(state, &view, t)),
            _ => schemas.push(SchemaBody {
                name: t.schema_name().to_string(),
                tables: vec![table_body(state, &view, t)],
            }),
        }
    }
    CatalogBody {
        catalog: dataport_catalog::CATALOG_NAME,
        snapshot_version: view.snapshot().version(),
        schemas,
    }
}

pub(crate) async fn get_table(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Path((schema, table)): Path<(String, String)>,
) -> Result<Json<TableBody>, ApiError> {
    let view = state
        .engine
        .catalog_view(&request_context(&principal, &request_id));
    view.resolve(Some(&schema), &table)
        .map(|t| Json(table_body(&state, &view, &t)))
        .map_err(|e| ApiError::of(&e, &request_id))
}

/// A table as `principal` sees it, and its profile for them (the table page's data).
pub(crate) async fn table_with_profile(
    state: &AppState,
    principal: &dataport_engine::Principal,
    request_id: &str,
    schema: &str,
    table: &str,
) -> Result<
    (
        TableBody,
        Result<ServedProfile, dataport_engine::profiles::ProfileError>,
    ),
    ApiError,
> {
    let view = state
        .engine
        .catalog_view(&request_context(principal, request_id));
    let t = view
        .resolve(Some(schema), table)
        .map_err(|e| ApiError::of(&e, request_id))?;
    let body = table_body(state, &view, &t);
    let profile = state.profiler.for_caller(&view, &t).await;
    Ok((body, profile))
}

/// `GET /api/v1/catalog/{schema}/{table}/profile`: the table's profile as the caller may see
/// it (a restricted grant gets a profile of its rows and columns only).
pub(crate) async fn get_profile(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Path((schema, table)): Path<(String, String)>,
) -> Result<Json<ServedProfile>, ApiError> {
    let view = state
        .engine
        .catalog_view(&request_context(&principal, &request_id));
    let t = view
        .resolve(Some(&schema), &table)
        .map_err(|e| ApiError::of(&e, &request_id))?;
    state
        .profiler
        .for_caller(&view, &t)
        .await
        .map(Json)
        .map_err(|e| ApiError::of(&e, &request_id))
}

/// `GET /api/v1/catalog/profiles.json`: every profile the caller may see, in the seed's
/// `profiles.json` shape (missing or outdated ones are computed first).
pub(crate) async fn get_profiles_export(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
) -> Json<ProfilesExport> {
    let view = state
        .engine
        .catalog_view(&request_context(&principal, &request_id));
    Json(state.profiler.export(&view).await)
}

pub(crate) async fn post_refresh(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Admin(_): Admin,
) -> Result<Json<dataport_catalog::RefreshReport>, ApiError> {
    state
        .engine
        .catalog()
        .refresh()
        .await
        .map(Json)
        .map_err(|e| ApiError::of(&e, &request_id))
}

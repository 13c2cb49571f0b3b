//! `GET /api/v1/catalog`, `GET /api/v1/catalog/{schema}/{table}`, `POST /api/v1/catalog/refresh`.

use axum::Json;
use axum::extract::{Path, State};
use dataport_catalog::{CatalogTable, ResolvedForeignKey};
use dataport_engine::{ErrorKind, Surface};
use serde::Serialize;

use crate::{ApiError, AppState, RequestId};

#[derive(Serialize)]
pub(crate) struct CatalogBody {
    catalog: &'static str,
    snapshot_version: u64,
    schemas: Vec<SchemaBody>,
}

#[derive(Serialize)]
struct SchemaBody {
    name: String,
    tables: Vec<TableBody>,
}

#[derive(Serialize)]
pub(crate) struct TableBody {
    schema: String,
    name: String,
    description: Option<String>,
    row_count: Option<u64>,
    size_bytes: u64,
    file_count: usize,
    columns: Vec<ColumnBody>,
    primary_key: Vec<String>,
    foreign_keys: Vec<ResolvedForeignKey>,
    partition_columns: Vec<String>,
    private: bool,
    sync_strategy: Option<dataport_catalog::description::SyncStrategy>,
    dataset: Option<String>,
}

#[derive(Serialize)]
struct ColumnBody {
    name: String,
    #[serde(rename = "type")]
    data_type: String,
    nullable: bool,
    description: Option<String>,
}

fn table_body(t: &CatalogTable) -> TableBody {
    let schema = t.arrow_schema();
    TableBody {
        schema: t.schema_name().to_string(),
        name: t.name().to_string(),
        description: t.description().map(str::to_string),
        row_count: t.row_count(),
        size_bytes: t.size_bytes(),
        file_count: t.file_count(),
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
        primary_key: t.primary_key().to_vec(),
        foreign_keys: t.foreign_keys().to_vec(),
        partition_columns: t.partition_columns().to_vec(),
        private: t.is_private(),
        sync_strategy: t.meta().and_then(|m| m.sync_strategy),
        dataset: t.meta().and_then(|m| m.dataset.clone()),
    }
}

pub(crate) async fn get_catalog(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
) -> Json<CatalogBody> {
    let view = state
        .engine
        .catalog_view(&state.request_context(&request_id, Surface::Http));
    let mut schemas: Vec<SchemaBody> = Vec::new();
    for t in view.tables() {
        match schemas.last_mut() {
            Some(s) if s.name == t.schema_name() => s.tables.push(table_body(t)),
            _ => schemas.push(SchemaBody {
                name: t.schema_name().to_string(),
                tables: vec![table_body(t)],
            }),
        }
    }
    Json(CatalogBody {
        catalog: dataport_catalog::CATALOG_NAME,
        snapshot_version: view.snapshot().version(),
        schemas,
    })
}

pub(crate) async fn get_table(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Path((schema, table)): Path<(String, String)>,
) -> Result<Json<TableBody>, ApiError> {
    let view = state
        .engine
        .catalog_view(&state.request_context(&request_id, Surface::Http));
    view.resolve(Some(&schema), &table)
        .map(|t| Json(table_body(&t)))
        .map_err(|e| ApiError::of_kind(e.kind(), e.to_string()).with_request_id(&request_id))
}

pub(crate) async fn post_refresh(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
) -> Result<Json<dataport_catalog::RefreshReport>, ApiError> {
    state
        .engine
        .catalog()
        .refresh()
        .await
        .map(Json)
        .map_err(|e| {
            let kind = e.kind();
            if kind == ErrorKind::Internal {
                tracing::error!(error = %e, "catalog refresh failed");
            }
            ApiError::of_kind(kind, e.to_string()).with_request_id(&request_id)
        })
}

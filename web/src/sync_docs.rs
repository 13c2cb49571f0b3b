//! `GET /api/v1/sync/docs`: what an assistant needs to work on the caller's laptop, as files
//! `dataport pull` keeps in `docs/`:
//!
//! - `README.md`: the caller's whole catalog (every table they may read, and the business
//!   metrics) and how to query it with DuckDB on the laptop: which tables are pulled and which
//!   are only on the server;
//! - `catalog.json`: the same as a [`CatalogDocument`] (what `dataport mcp` reads offline);
//! - `tables/<schema>.<table>.md`: a page for each table the caller pulls (the tables of their
//!   sync manifest): columns, keys, related tables, metrics and the profile's highlights;
//! - `profiles/<schema>.<table>.json`: the caller's profile of each of those tables, as
//!   `GET /api/v1/catalog/{schema}/{table}/profile` answers it.
//!
//! Everything comes from the caller's own listings (`crate::mcp::catalog`, the profiler's
//! `for_caller`), so no file says anything about a table they may not read. Nothing here
//! depends on the time of the request (`generated_at` is the catalog snapshot's), so a pull
//! with nothing changed rewrites nothing.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Query, State};
use dataport_common::sync::{DocFile, DocFiles};
use dataport_engine::Principal;
use dataport_engine::sync::SyncSettings;
use dataport_mcp::{CatalogDocument, TableInfo};
use serde_json::Value;

use crate::auth::Caller;
use crate::sync::ManifestParams;
use crate::{ApiError, AppState, RequestId, request_context};

/// The catalog for the README and `catalog.json`.
const README: &str = "README.md";
const CATALOG_JSON: &str = "catalog.json";
/// The folder of the pulled tables' pages.
const TABLES_DIR: &str = "tables";
/// The folder of the pulled tables' profiles.
const PROFILES_DIR: &str = "profiles";

/// `GET /api/v1/sync/docs[?all=true]`: the caller's `docs/` files (`all`: as for a pull of
/// every readable table, ignoring the caller's sync settings, like the manifest's `all`).
pub(crate) async fn get_docs(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Query(params): Query<ManifestParams>,
) -> Result<Json<DocFiles>, ApiError> {
    let settings = crate::sync::settings_for(&state, principal.id, params.all, &request_id)?;
    let files = docs(&state, &principal, &settings, &request_id).await?;
    Ok(Json(DocFiles { files }))
}

/// The caller's files: their catalog, and the pages and profiles of the tables they pull.
async fn docs(
    state: &AppState,
    principal: &Principal,
    settings: &SyncSettings,
    request_id: &str,
) -> Result<Vec<DocFile>, ApiError> {
    let view = state
        .engine
        .catalog_view(&request_context(principal, request_id));
    // The tables of the caller's manifest (the same rule: `SyncSettings::wants` over the tables
    // the caller may read) with their profiles as the caller may see them, first: computing a
    // missing profile now puts its figures in this answer's listing too, not the next one's.
    let mut pulled = BTreeMap::new();
    for t in view.tables().filter(|t| settings.wants(t)) {
        let name = t.qualified_name();
        let profile = match state.profiler.for_caller(&view, t).await {
            Ok(p) => match serde_json::to_value(&p) {
                Ok(v) => Some(v),
                Err(e) => return Err(ApiError::internal(e).with_request_id(request_id)),
            },
            Err(e) => {
                tracing::warn!(table = %name, error = %e, "docs: no profile for the table's page");
                None
            }
        };
        pulled.insert(name, profile);
    }
    let tables = crate::mcp::catalog::tables(state, principal, request_id);
    let metrics = crate::mcp::catalog::metrics(state, principal, request_id);
    // A table of another snapshot than the listing's is left to the next pull.
    let listed: BTreeSet<String> = tables.iter().map(TableInfo::qualified).collect();
    pulled.retain(|name, _| listed.contains(name));
    let generated_at_ms = view
        .snapshot()
        .created_at()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let document = CatalogDocument {
        server: state.options.public_url.trim_end_matches('/').to_string(),
        user: principal.name.clone(),
        generated_at: crate::mcp::catalog::rfc3339_ms(generated_at_ms),
        tables,
        metrics,
    };
    render(&document, &pulled).map_err(|e| ApiError::internal(e).with_request_id(request_id))
}

/// The files of `docs/` for `document`: `pulled` names the tables the caller pulls (by
/// `schema.table`), each with its profile if there is one. A table whose name can't be a file
/// name of `docs/` gets no page (it stays in the README and `catalog.json`).
fn render(
    document: &CatalogDocument,
    pulled: &BTreeMap<String, Option<Value>>,
) -> Result<Vec<DocFile>, serde_json::Error> {
    let readme = dataport_mcp::render::catalog_markdown(
        &format!("Data for {} on {}", document.user, document.server),
        &document.tables,
        &document.metrics,
        &how_to_query(document, pulled),
    );
    let mut files = vec![
        DocFile::new(README, readme),
        DocFile::new(
            CATALOG_JSON,
            format!("{}\n", serde_json::to_string_pretty(document)?),
        ),
    ];
    let mut profiles = Vec::new();
    for table in &document.tables {
        let name = table.qualified();
        let Some(profile) = pulled.get(&name) else {
            continue;
        };
        let page = format!("{TABLES_DIR}/{name}.md");
        if !DocFile::valid_path(&page) {
            tracing::warn!(table = %name.escape_debug(), "docs: no page for a table whose name is not a plain file name");
            continue;
        }
        let trimmed = profile.as_ref().map(dataport_mcp::profile::trim);
        files.push(DocFile::new(
            page,
            dataport_mcp::render::table_markdown(
                table,
                &document.tables,
                &document.metrics,
                trimmed.as_ref(),
            ),
        ));
        if let Some(p) = profile {
            profiles.push(DocFile::new(
                format!("{PROFILES_DIR}/{name}.json"),
                format!("{}\n", serde_json::to_string_pretty(p)?),
            ));
        }
    }
    files.extend(profiles);
    Ok(files)
}

fn name_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The README's opening: what this folder is, how to query the pulled tables with DuckDB,
/// which tables are only on the server, and where the rest of the docs are.
fn how_to_query(document: &CatalogDocument, pulled: &BTreeMap<String, Option<Value>>) -> String {
    let (local, remote): (Vec<String>, Vec<String>) = document
        .tables
        .iter()
        .map(TableInfo::qualified)
        .partition(|n| pulled.contains_key(n));
    let mut out = format!(
        "Every table you ({user}) may read on {server}, and the business metrics. \
         `dataport pull` writes this folder and rewrites it on every pull, so it follows your \
         grants and the catalog: a table not listed here is one you may not read. Do not edit \
         the files pull wrote; the next pull replaces them.\n\n",
        user = document.user,
        server = document.server,
    );
    out.push_str("## Querying on this laptop\n\n");
    if local.is_empty() {
        out.push_str(
            "No table is pulled to this laptop: your sync settings choose none (see \
             `GET /api/v1/sync/settings`), so every table below is only on the server.\n\n",
        );
    } else {
        out.push_str(
            "The pulled tables are DuckDB views in `analytics.duckdb`, in the folder above this \
             one. Open it with `duckdb analytics.duckdb` (or run a file: \
             `duckdb analytics.duckdb < query.sql`) and name each table `schema.table`, for \
             example `SELECT count(*) FROM ",
        );
        out.push_str(&local[0]);
        out.push_str(
            "`; a table name found in one schema only also works unqualified. The SQL is \
             DuckDB's. If `analytics.duckdb` is missing, create it with \
             `duckdb analytics.duckdb < views.sql`. A table granted to you in part (some rows or \
             columns) is your own copy: its counts are those of your share.\n\n",
        );
        out.push_str(&format!(
            "Pulled to this laptop ({}): {}.\n\n",
            local.len(),
            name_list(&local)
        ));
    }
    if !remote.is_empty() {
        out.push_str(&format!(
            "Only on the server ({}): {}. Query them there (the portal's SQL page, \
             `POST /api/v1/query`, Flight SQL), or add them to your sync settings and pull \
             again.\n\n",
            remote.len(),
            name_list(&remote)
        ));
    }
    if !document.metrics.is_empty() {
        out.push_str(
            "A business metric is one aggregate over one table: on the laptop, compute it with \
             its expression (and filter) over the pulled table, grouped by its time column and \
             dimensions.\n\n",
        );
    }
    out.push_str(&format!(
        "## Files\n\n\
         - `{README}`: this page.\n\
         - `{CATALOG_JSON}`: the same catalog as JSON (tables with columns, keys and profile \
         figures; metrics), which `dataport mcp` reads offline.\n\
         - `{TABLES_DIR}/<schema>.<table>.md`: a page for each pulled table: columns with their \
         profile, keys, related tables, metrics, the profile's highlights and alerts.\n\
         - `{PROFILES_DIR}/<schema>.<table>.json`: the full profile of each pulled table that \
         has one (completeness, distinct values, ranges, most common values, alerts)."
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataport_mcp::{ColumnInfo, ForeignKeyInfo, MetricInfo};
    use serde_json::json;

    fn table(schema: &str, name: &str) -> TableInfo {
        TableInfo {
            schema: schema.into(),
            name: name.into(),
            description: Some(format!("The {name} table.")),
            row_count: Some(10),
            updated_at: Some("2024-01-01T00:00:00Z".into()),
            columns: vec![ColumnInfo {
                name: format!("{name}_id"),
                data_type: "Int64".into(),
                nullable: false,
                description: None,
            }],
            primary_key: vec![format!("{name}_id")],
            foreign_keys: Vec::new(),
            partition_columns: Vec::new(),
            profile: None,
        }
    }

    fn document() -> CatalogDocument {
        let mut items = table("s", "items");
        items.foreign_keys.push(ForeignKeyInfo {
            columns: vec!["orders_id".into()],
            references: "s.orders".into(),
            referenced_columns: vec!["orders_id".into()],
            description: None,
        });
        CatalogDocument {
            server: "https://data.example.com".into(),
            user: "ana".into(),
            generated_at: "2024-01-02T00:00:00Z".into(),
            tables: vec![items, table("s", "orders"), table("s", "odd name")],
            metrics: vec![MetricInfo {
                name: "orders_placed".into(),
                description: "Orders placed".into(),
                table: "s.orders".into(),
                expression: "count(*)".into(),
                filter: None,
                time_column: None,
                grain: None,
                dimensions: Vec::new(),
                owner: String::new(),
            }],
        }
    }

    fn profile() -> Value {
        json!({
            "schema": "s", "table": "orders", "computed_at": 1_700_000_000, "stale": false,
            "profile": {
                "row_count": 10, "avg_completeness": 100.0,
                "alerts": [{"column": "orders_id", "type": "UNIQUE", "message": "orders_id is unique"}],
                "columns": [{"name": "orders_id", "completeness_pct": 100.0, "unique_count": 10}]
            }
        })
    }

    fn by_path(files: &[DocFile]) -> BTreeMap<&str, &str> {
        files
            .iter()
            .map(|f| (f.path.as_str(), f.content.as_str()))
            .collect()
    }

    #[test]
    fn pulled_tables_get_a_page_and_a_profile() {
        let doc = document();
        let pulled: BTreeMap<String, Option<Value>> = [
            ("s.orders".to_string(), Some(profile())),
            ("s.odd name".to_string(), None),
        ]
        .into();
        let files = render(&doc, &pulled).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        // `s.items` is not pulled; `s.odd name` can't be a file name.
        assert_eq!(
            paths,
            [
                "README.md",
                "catalog.json",
                "tables/s.orders.md",
                "profiles/s.orders.json"
            ]
        );
        for f in &files {
            assert!(DocFile::valid_path(&f.path), "{}", f.path);
            assert_eq!(
                f.sha256,
                dataport_common::digest::sha256_hex(f.content.as_bytes())
            );
        }
        let files = by_path(&files);
        let page = files["tables/s.orders.md"];
        assert!(page.starts_with("# s.orders\n"), "{page}");
        assert!(page.contains("| orders_id | Int64 | no |"), "{page}");
        assert!(page.contains("100% filled; 10 distinct"), "{page}");
        assert!(
            page.contains("- s.items (orders_id) refers to this table"),
            "{page}"
        );
        assert!(page.contains("`orders_placed`"), "{page}");
        assert!(page.contains("- orders_id: orders_id is unique"), "{page}");
        let full: Value = serde_json::from_str(files["profiles/s.orders.json"]).unwrap();
        assert_eq!(full, profile());
        let catalog: CatalogDocument = serde_json::from_str(files["catalog.json"]).unwrap();
        assert_eq!(catalog, doc);
    }

    #[test]
    fn the_readme_says_what_is_local_and_what_is_on_the_server() {
        let doc = document();
        let pulled: BTreeMap<String, Option<Value>> = [("s.orders".to_string(), None)].into();
        let files = render(&doc, &pulled).unwrap();
        let readme = by_path(&files)["README.md"];
        assert!(
            readme.starts_with("# Data for ana on https://data.example.com\n"),
            "{readme}"
        );
        assert!(readme.contains("`duckdb analytics.duckdb`"), "{readme}");
        assert!(readme.contains("SELECT count(*) FROM s.orders"), "{readme}");
        assert!(
            readme.contains("Pulled to this laptop (1): `s.orders`."),
            "{readme}"
        );
        assert!(
            readme.contains("Only on the server (2): `s.items`, `s.odd name`."),
            "{readme}"
        );
        assert!(readme.contains("## Schema `s`"), "{readme}");
        assert!(
            readme.contains("- **s.items**: The items table."),
            "{readme}"
        );
        assert!(
            readme.contains("`orders_placed`: Orders placed"),
            "{readme}"
        );
        // No profile: a page without one, and no profile file.
        assert!(!by_path(&files).contains_key("profiles/s.orders.json"));
        assert!(!by_path(&files)["tables/s.orders.md"].contains("## Profile"));

        let none = render(&doc, &BTreeMap::new()).unwrap();
        assert_eq!(none.len(), 2);
        assert!(by_path(&none)["README.md"].contains("No table is pulled to this laptop"));
    }

    #[test]
    fn the_same_catalog_renders_the_same_bytes() {
        let doc = document();
        let pulled: BTreeMap<String, Option<Value>> =
            [("s.orders".to_string(), Some(profile()))].into();
        assert_eq!(
            render(&doc, &pulled).unwrap(),
            render(&doc, &pulled).unwrap()
        );
    }
}

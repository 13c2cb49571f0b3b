//! Flight SQL metadata results, derived from the caller's view of the catalog.
//!
//! Only tables the caller may read appear; a foreign key is listed only when both of its
//! tables are visible. Key names follow PostgreSQL's convention (`<table>_pkey`,
//! `<table>_<columns>_fkey`) so tools that group by key name see one key per constraint.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, Int32Builder, RecordBatch, StringBuilder, UInt8Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::error::FlightError;
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetTableTypes, CommandGetTables,
    UpdateDeleteRules,
};
use dataport_catalog::{CATALOG_NAME, CatalogTable, ResolvedForeignKey, SnapshotCatalogProvider};
use dataport_engine::wire;

/// The only table type Dataport has.
pub(crate) const TABLE_TYPE: &str = "TABLE";

pub(crate) fn catalogs(cmd: CommandGetCatalogs) -> Result<RecordBatch, FlightError> {
    let mut b = cmd.into_builder();
    b.append(CATALOG_NAME);
    b.build()
}

pub(crate) fn db_schemas(
    cmd: CommandGetDbSchemas,
    view: &SnapshotCatalogProvider,
) -> Result<RecordBatch, FlightError> {
    let mut b = cmd.into_builder();
    let schemas: BTreeSet<&str> = view.tables().map(|t| t.schema_name()).collect();
    for schema in schemas {
        b.append(CATALOG_NAME, schema);
    }
    b.build()
}

pub(crate) fn tables(
    cmd: CommandGetTables,
    view: &SnapshotCatalogProvider,
) -> Result<RecordBatch, FlightError> {
    let mut b = cmd.into_builder();
    for t in view.tables() {
        let schema = wire::client_schema(&view.visible_schema(t));
        b.append(CATALOG_NAME, t.schema_name(), t.name(), TABLE_TYPE, &schema)?;
    }
    b.build()
}

pub(crate) fn table_types(cmd: CommandGetTableTypes) -> Result<RecordBatch, FlightError> {
    let mut b = cmd.into_builder();
    b.append(TABLE_TYPE);
    b.build()
}

/// Tables named exactly `table` (optionally in `schema`) that the caller can see; none when
/// the catalog is another one.
fn matching<'a>(
    view: &'a SnapshotCatalogProvider,
    catalog: Option<&str>,
    schema: Option<&str>,
    table: &str,
) -> Vec<&'a Arc<CatalogTable>> {
    if !in_catalog(catalog) {
        return Vec::new();
    }
    view.tables()
        .filter(|t| t.name() == table && schema.is_none_or(|s| t.schema_name() == s))
        .collect()
}

static PRIMARY_KEYS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
});

pub(crate) fn primary_keys(
    cmd: CommandGetPrimaryKeys,
    view: &SnapshotCatalogProvider,
) -> Result<RecordBatch, FlightError> {
    let mut catalog = StringBuilder::new();
    let mut schema = StringBuilder::new();
    let mut table = StringBuilder::new();
    let mut column = StringBuilder::new();
    let mut key_name = StringBuilder::new();
    let mut seq = Int32Builder::new();
    for t in matching(
        view,
        cmd.catalog.as_deref(),
        cmd.db_schema.as_deref(),
        &cmd.table,
    ) {
        for (i, c) in view.primary_key(t).iter().enumerate() {
            catalog.append_value(CATALOG_NAME);
            schema.append_value(t.schema_name());
            table.append_value(t.name());
            column.append_value(c);
            key_name.append_value(pk_name(t.name()));
            seq.append_value(sequence(i));
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(catalog.finish()),
        Arc::new(schema.finish()),
        Arc::new(table.finish()),
        Arc::new(column.finish()),
        Arc::new(key_name.finish()),
        Arc::new(seq.finish()),
    ];
    Ok(RecordBatch::try_new(
        Arc::clone(&PRIMARY_KEYS_SCHEMA),
        columns,
    )?)
}

/// Schema of `GetImportedKeys`, `GetExportedKeys` and `GetCrossReference` results.
static KEYS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
});

/// One column pair of one foreign key.
struct KeyRow<'a> {
    fk_table: &'a CatalogTable,
    fk: &'a ResolvedForeignKey,
    index: usize,
}

/// Foreign keys of the visible tables, filtered by `keep(fk_table, fk)`. Only keys whose
/// referenced table and columns are visible too.
fn foreign_keys<'a>(
    view: &'a SnapshotCatalogProvider,
    keep: impl Fn(&CatalogTable, &ResolvedForeignKey) -> bool,
) -> Vec<KeyRow<'a>> {
    let mut rows = Vec::new();
    for t in view.tables() {
        for fk in t.foreign_keys() {
            if !view.foreign_key_visible(t, fk) || !keep(t, fk) {
                continue;
            }
            for index in 0..fk.columns.len().min(fk.references.columns.len()) {
                rows.push(KeyRow {
                    fk_table: t,
                    fk,
                    index,
                });
            }
        }
    }
    rows
}

fn keys_batch(mut rows: Vec<KeyRow<'_>>, order: KeyOrder) -> Result<RecordBatch, FlightError> {
    rows.sort_by(|a, b| {
        let pk = |r: &KeyRow<'_>| {
            (
                r.fk.references.schema.clone(),
                r.fk.references.table.clone(),
            )
        };
        let fk = |r: &KeyRow<'_>| {
            (
                r.fk_table.schema_name().to_owned(),
                r.fk_table.name().to_owned(),
                fk_name(r.fk_table.name(), &r.fk.columns),
            )
        };
        match order {
            KeyOrder::ByPrimary => (pk(a), fk(a), a.index).cmp(&(pk(b), fk(b), b.index)),
            KeyOrder::ByForeign => (fk(a), pk(a), a.index).cmp(&(fk(b), pk(b), b.index)),
        }
    });
    let mut strings: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::new()).collect();
    let mut fk_key = StringBuilder::new();
    let mut pk_key = StringBuilder::new();
    let mut seq = Int32Builder::new();
    let mut update = UInt8Builder::new();
    let mut delete = UInt8Builder::new();
    let no_action = UpdateDeleteRules::NoAction as u8;
    for r in &rows {
        let refs = &r.fk.references;
        let values = [
            CATALOG_NAME,
            refs.schema.as_str(),
            refs.table.as_str(),
            refs.columns[r.index].as_str(),
            CATALOG_NAME,
            r.fk_table.schema_name(),
            r.fk_table.name(),
            r.fk.columns[r.index].as_str(),
        ];
        for (b, v) in strings.iter_mut().zip(values) {
            b.append_value(v);
        }
        seq.append_value(sequence(r.index));
        fk_key.append_value(fk_name(r.fk_table.name(), &r.fk.columns));
        pk_key.append_value(pk_name(&refs.table));
        update.append_value(no_action);
        delete.append_value(no_action);
    }
    let mut columns: Vec<ArrayRef> = strings
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    columns.push(Arc::new(seq.finish()));
    columns.push(Arc::new(fk_key.finish()));
    columns.push(Arc::new(pk_key.finish()));
    columns.push(Arc::new(update.finish()));
    columns.push(Arc::new(delete.finish()));
    Ok(RecordBatch::try_new(Arc::clone(&KEYS_SCHEMA), columns)?)
}

#[derive(Clone, Copy)]
enum KeyOrder {
    /// pk_catalog, pk_schema, pk_table, then key sequence (imported keys, cross reference).
    ByPrimary,
    /// fk_catalog, fk_schema, fk_table, fk key name, then key sequence (exported keys).
    ByForeign,
}

/// Whether a catalog filter selects Dataport's tables. `""` asks for tables without a
/// catalog, and every Dataport table has one.
fn in_catalog(catalog: Option<&str>) -> bool {
    catalog.is_none_or(|c| c == CATALOG_NAME)
}

fn same(schema: Option<&str>, actual: &str) -> bool {
    schema.is_none_or(|s| s == actual)
}

/// Foreign keys *of* a table: the primary keys it imports.
pub(crate) fn imported_keys(
    cmd: CommandGetImportedKeys,
    view: &SnapshotCatalogProvider,
) -> Result<RecordBatch, FlightError> {
    if !in_catalog(cmd.catalog.as_deref()) {
        return keys_batch(Vec::new(), KeyOrder::ByPrimary);
    }
    let rows = foreign_keys(view, |t, _| {
        t.name() == cmd.table && same(cmd.db_schema.as_deref(), t.schema_name())
    });
    keys_batch(rows, KeyOrder::ByPrimary)
}

/// Foreign keys of other tables that reference a table.
pub(crate) fn exported_keys(
    cmd: CommandGetExportedKeys,
    view: &SnapshotCatalogProvider,
) -> Result<RecordBatch, FlightError> {
    if !in_catalog(cmd.catalog.as_deref()) {
        return keys_batch(Vec::new(), KeyOrder::ByForeign);
    }
    let rows = foreign_keys(view, |_, fk| {
        fk.references.table == cmd.table && same(cmd.db_schema.as_deref(), &fk.references.schema)
    });
    keys_batch(rows, KeyOrder::ByForeign)
}

/// Foreign keys of `fk_table` that reference `pk_table`.
pub(crate) fn cross_reference(
    cmd: CommandGetCrossReference,
    view: &SnapshotCatalogProvider,
) -> Result<RecordBatch, FlightError> {
    if !in_catalog(cmd.pk_catalog.as_deref()) || !in_catalog(cmd.fk_catalog.as_deref()) {
        return keys_batch(Vec::new(), KeyOrder::ByPrimary);
    }
    let rows = foreign_keys(view, |t, fk| {
        t.name() == cmd.fk_table
            && same(cmd.fk_db_schema.as_deref(), t.schema_name())
            && fk.references.table == cmd.pk_table
            && same(cmd.pk_db_schema.as_deref(), &fk.references.schema)
    });
    keys_batch(rows, KeyOrder::ByPrimary)
}

fn pk_name(table: &str) -> String {
    format!("{table}_pkey")
}

fn fk_name(table: &str, columns: &[String]) -> String {
    format!("{table}_{}_fkey", columns.join("_"))
}

fn sequence(index: usize) -> i32 {
    i32::try_from(index + 1).unwrap_or(i32::MAX)
}

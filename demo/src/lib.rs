//! The demo dataset: generates the eight TPC-H tables as Parquet files under
//! `<data_dir>/parquet/tpch/` and writes the `docs/data_description.md` that describes them
//! (descriptions, primary and foreign keys, column descriptions) and the business metrics of
//! `docs/metrics.yml`, so a fresh Dataport install has
//! something to query; it also holds the demo analysts' notes ([`DEMO_NOTES`]) for corporate
//! memory. This crate only produces files, through the catalog's atomic writer; it
//! must not know about the server, the query engine or HTTP.
//!
//! # Example
//!
//! [`ensure_tpch`] is what the server runs at start: it generates the dataset once and reuses it
//! afterwards. Scale 1 has six million line items; this example uses a thousandth of that.
//!
//! ```
//! use dataport_demo::{DemoOutcome, TPCH_TABLES, ensure_tpch, tpch_dir};
//!
//! let data = tempfile::tempdir()?;
//! let DemoOutcome::Generated(report) = ensure_tpch(data.path(), 0.001)? else {
//!     return Err("an empty data dir gets a new dataset".into());
//! };
//! assert_eq!(report.tables.len(), TPCH_TABLES.len());
//! let rows = |name: &str| report.tables.iter().find(|t| t.name == name).map(|t| t.rows);
//! assert_eq!((rows("region"), rows("nation")), (Some(5), Some(25)));
//! assert!(tpch_dir(data.path()).join("lineitem.parquet").is_file());
//! assert!(report.description_path.is_file()); // docs/data_description.md
//!
//! assert_eq!(ensure_tpch(data.path(), 0.001)?, DemoOutcome::Reused);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, RecordBatchReader};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use arrow::error::ArrowError;
use dataport_catalog::write::{ParquetFileWriter, WriteError};
use dataport_common::fs::write_bytes_atomic;
use dataport_common::{ErrorKind, HasKind};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

/// Folder (under `<data_dir>/parquet/`) and source bucket id of the demo tables.
pub const TPCH_FOLDER: &str = "tpch";

/// The TPC-H tables, in generation order; these are the Parquet file stems.
pub const TPCH_TABLES: [&str; 8] = [
    "region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem",
];

/// Marker written last by [`ensure_tpch`]; underscore-prefixed so it is never registered as a
/// table.
pub const DEMO_MARKER: &str = "_demo_complete";

/// Rows per generated batch; batches are streamed straight into the Parquet writer.
const BATCH_SIZE: usize = 65_536;

/// Why generating the demo dataset failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The scale factor is not a finite number greater than zero.
    #[error("invalid TPC-H scale factor {scale}: it must be a finite number greater than 0")]
    InvalidScale { scale: f64 },

    /// The TPC-H generator failed to produce a batch.
    #[error("failed to generate TPC-H table {table}: {source}")]
    Generate {
        table: &'static str,
        source: ArrowError,
    },

    /// A generated batch could not be cast to the portable (non-view) schema.
    #[error("failed to convert TPC-H table {table} to portable Arrow types: {source}")]
    Convert {
        table: &'static str,
        source: ArrowError,
    },

    /// Writing a Parquet file, the description or the marker failed.
    #[error("failed to write the demo dataset: {source}")]
    Write {
        #[from]
        source: WriteError,
    },

    /// A stale completion marker could not be removed before regenerating.
    #[error("failed to remove stale demo marker {path}: {source}")]
    RemoveMarker { path: PathBuf, source: io::Error },
}

impl HasKind for DemoError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidScale { .. } => ErrorKind::InvalidArgument,
            Self::Generate { .. } | Self::Convert { .. } | Self::RemoveMarker { .. } => {
                ErrorKind::Internal
            }
            Self::Write { source } => source.kind(),
        }
    }
}

/// One table written by [`generate_tpch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// Table name (the Parquet file stem).
    pub name: &'static str,
    /// Location of the Parquet file.
    pub path: PathBuf,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// What [`generate_tpch`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoReport {
    /// TPC-H scale factor used.
    pub scale: f64,
    /// The tables, in [`TPCH_TABLES`] order.
    pub tables: Vec<TableReport>,
    /// Location of the written `data_description.md`.
    pub description_path: PathBuf,
    /// Wall-clock time the generation took.
    pub elapsed: Duration,
}

impl DemoReport {
    /// Rows over all tables.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// Bytes over all tables.
    pub fn total_bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.bytes).sum()
    }
}

/// Result of [`ensure_tpch`].
#[derive(Debug, Clone, PartialEq)]
pub enum DemoOutcome {
    /// A complete dataset was already present and left untouched.
    Reused,
    /// The dataset was (re)generated.
    Generated(DemoReport),
}

/// Directory holding the demo Parquet files: `<data_dir>/parquet/tpch`.
pub fn tpch_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("parquet").join(TPCH_FOLDER)
}

/// Location of the data description: `<data_dir>/docs/data_description.md`.
pub fn description_path(data_dir: &Path) -> PathBuf {
    data_dir.join("docs").join("data_description.md")
}

/// Location of the demo's business metrics: `<data_dir>/docs/metrics.yml`.
pub fn metrics_path(data_dir: &Path) -> PathBuf {
    data_dir.join("docs").join("metrics.yml")
}

/// The demo's business metrics (see `dataport_catalog::metrics`): revenue, orders, order
/// value, late shipments and active customers over the TPC-H tables.
pub const METRICS_YAML: &str = "\
# Business metrics of the demo data: each is one aggregate over one table, with its owner.
metrics:
  - name: revenue
    description: Net revenue of line items (extended price less discount), by ship date
    owner: finance@example.com
    table: tpch.lineitem
    expression: sum(l_extendedprice * (1 - l_discount))
    time_column: l_shipdate
    grain: month
    dimensions: [l_shipmode, l_returnflag, l_linestatus]

  - name: orders_placed
    description: Orders placed, by order date
    owner: sales-ops@example.com
    table: tpch.orders
    expression: count(*)
    time_column: o_orderdate
    grain: month
    dimensions: [o_orderstatus, o_orderpriority]

  - name: average_order_value
    description: Average total price of an order
    owner: finance@example.com
    table: tpch.orders
    expression: avg(o_totalprice)
    time_column: o_orderdate
    grain: quarter
    dimensions: [o_orderpriority]

  - name: late_shipments
    description: Line items received after the date committed to the customer
    owner: logistics@example.com
    table: tpch.lineitem
    expression: count(*)
    filter: l_receiptdate > l_commitdate
    time_column: l_shipdate
    grain: month
    dimensions: [l_shipmode]

  - name: active_customers
    description: Customers who placed at least one order
    owner: sales-ops@example.com
    table: tpch.orders
    expression: count(DISTINCT o_custkey)
    time_column: o_orderdate
    grain: year
";

/// Writes [`METRICS_YAML`] unless the data dir already has a metrics file of its own.
fn ensure_metrics(data_dir: &Path) -> Result<(), DemoError> {
    let path = metrics_path(data_dir);
    if !path.exists() {
        write_bytes_atomic(&path, METRICS_YAML.as_bytes()).map_err(WriteError::from)?;
        tracing::info!(path = %path.display(), "wrote the demo's business metrics");
    }
    Ok(())
}

fn marker_text(scale: f64) -> String {
    format!("scale = {scale}\n")
}

/// The demo analysts' notes (user, `notes.md`), as if each had pushed them: what the
/// corporate-memory collector extracts on a demo server. Each writes only about tables they
/// may read (`analyst` is `dataread`, so nothing on the private `tpch.customer`). One item is in both (it merges), one
/// line is marked private and one holds a password in a URL (both held for their author).
pub const DEMO_NOTES: [(&str, &str); 2] = [
    (
        "analyst",
        "# Notes on the TPC-H data\n\
         \n\
         ## Orders\n\
         - `orders.o_orderstatus` is F (fulfilled), O (open) or P (partly shipped); count P as open in the weekly report.\n\
         - Revenue is `l_extendedprice * (1 - l_discount)`; add `l_tax` only when finance asks for gross revenue.\n\
         - Join `lineitem` to `orders` on `l_orderkey = o_orderkey`; an order has one to seven line items.\n\
         \n\
         ## Parts\n\
         - `part.p_type` is three words (e.g. ECONOMY ANODIZED BRASS); filter the material with `LIKE '%BRASS'`.\n\
         - Ask maria.lopez@example.com before sharing supplier price lists outside the team. <!-- private -->\n\
         \n\
         ## Performance\n\
         - Filter `lineitem` on `l_shipdate` first: most queries only need the last year, and the scan reads far less.\n",
    ),
    (
        "insider",
        "# What I learned\n\
         \n\
         ## Orders\n\
         - Revenue is `l_extendedprice * (1 - l_discount)`; add `l_tax` only when finance asks for gross revenue.\n\
         - Returned line items have `l_returnflag = 'R'`; leave them out of net revenue.\n\
         \n\
         ## Customers\n\
         - `customer.c_mktsegment` has five segments; BUILDING is the largest.\n\
         \n\
         ## Suppliers\n\
         - `supplier.s_acctbal` can be negative: those suppliers owe us money, so do not sum it as a liability.\n\
         \n\
         ## Access\n\
         - The old staging copy is at postgres://etl:Sup3rSecret42@staging.internal:5432/tpch if the server is down.\n",
    ),
];

/// Makes sure the demo dataset exists.
///
/// Returns [`DemoOutcome::Reused`] when the completion marker (of this scale) and all eight
/// Parquet files are present. Otherwise removes any stale marker, runs [`generate_tpch`] (overwriting existing
/// files) and writes the marker last, so an interrupted run is redone next time.
pub fn ensure_tpch(data_dir: &Path, scale: f64) -> Result<DemoOutcome, DemoError> {
    let dir = tpch_dir(data_dir);
    let marker = dir.join(DEMO_MARKER);
    // the marker names the scale: a different scale regenerates
    let complete = fs::read_to_string(&marker).is_ok_and(|m| m == marker_text(scale))
        && TPCH_TABLES
            .iter()
            .all(|t| dir.join(format!("{t}.parquet")).is_file());
    if complete {
        tracing::info!(dir = %dir.display(), "demo TPC-H dataset already present, reusing it");
        ensure_metrics(data_dir)?;
        return Ok(DemoOutcome::Reused);
    }
    match fs::remove_file(&marker) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DemoError::RemoveMarker {
                path: marker,
                source,
            });
        }
    }
    let report = generate_tpch(data_dir, scale)?;
    write_bytes_atomic(&marker, marker_text(scale).as_bytes()).map_err(WriteError::from)?;
    Ok(DemoOutcome::Generated(report))
}

/// Generates all eight TPC-H tables at `scale` into `<data_dir>/parquet/tpch/<table>.parquet`
/// and writes `<data_dir>/docs/data_description.md` (and `docs/metrics.yml`, if absent).
///
/// String and binary view columns are stored as plain `Utf8` / `Binary` so every Parquet client
/// can read the files. Batches are streamed into the writer; no table is held in memory.
pub fn generate_tpch(data_dir: &Path, scale: f64) -> Result<DemoReport, DemoError> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(DemoError::InvalidScale { scale });
    }
    let started = Instant::now();
    let dir = tpch_dir(data_dir);
    let mut tables = Vec::with_capacity(TPCH_TABLES.len());
    for (name, generate) in GENERATORS {
        let path = dir.join(format!("{name}.parquet"));
        let table_started = Instant::now();
        let report = generate(name, scale, &path)?;
        tracing::info!(
            table = name,
            rows = report.rows,
            bytes = report.bytes,
            path = %report.path.display(),
            elapsed_ms = table_started.elapsed().as_millis() as u64,
            "wrote TPC-H table"
        );
        tables.push(report);
    }
    let description_path = description_path(data_dir);
    write_bytes_atomic(&description_path, data_description_markdown().as_bytes())
        .map_err(WriteError::from)?;
    tracing::info!(path = %description_path.display(), "wrote TPC-H data description");
    ensure_metrics(data_dir)?;
    let report = DemoReport {
        scale,
        tables,
        description_path,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        scale,
        rows = report.total_rows(),
        bytes = report.total_bytes(),
        elapsed_ms = report.elapsed.as_millis() as u64,
        "generated demo TPC-H dataset"
    );
    Ok(report)
}

/// Writes one table: `(table name, scale, destination) -> report`.
type TableGenerator = fn(&'static str, f64, &Path) -> Result<TableReport, DemoError>;

/// The generator of every table, in [`TPCH_TABLES`] order.
const GENERATORS: [(&str, TableGenerator); 8] = [
    ("region", |name, scale, path| {
        let generator = RegionGenerator::new(scale, 1, 1);
        write_table(
            name,
            path,
            RegionArrow::new(generator).with_batch_size(BATCH_SIZE),
        )
    }),
    ("nation", |name, scale, path| {
        let generator = NationGenerator::new(scale, 1, 1);
        write_table(
            name,
            path,
            NationArrow::new(generator).with_batch_size(BATCH_SIZE),
        )
    }),
    ("supplier", |name, scale, path| {
        let generator = SupplierGenerator::new(scale, 1, 1);
        write_table(
            name,
            path,
            SupplierArrow::new(generator).with_batch_size(BATCH_SIZE),
        )
    }),
    ("customer", |name, scale, path| {
        let generator = CustomerGenerator::new(scale, 1, 1);
        write_table(
            name,
            path,
            CustomerArrow::new(generator).with_batch_size(BATCH_SIZE),
        )
    }),
    ("part", |name, scale, path| {
        let generator = PartGenerator::new(scale, 1, 1);
        write_table(
            name,
            path,
            PartArrow::new(generator).with_batch_size(BATCH_SIZE),
        )
    }),
    ("partsupp", |name, scale, path| {
        let generator = PartSuppGenerator::new(scale, 1, 1);
        write_table(
            name,
            path,
            PartSuppArrow::new(generator).with_batch_size(BATCH_SIZE),
        )
    }),
    ("orders", |name, scale, path| {
        let generator = OrderGenerator::new(scale, 1, 1);
        write_table(
            name,
            path,
            OrderArrow::new(generator).with_batch_size(BATCH_SIZE),
        )
    }),
    ("lineitem", |name, scale, path| {
        let generator = LineItemGenerator::new(scale, 1, 1);
        write_table(
            name,
            path,
            LineItemArrow::new(generator).with_batch_size(BATCH_SIZE),
        )
    }),
];

/// Streams every batch of `reader` (converted to the portable schema) into a Parquet file.
fn write_table<R: RecordBatchReader>(
    table: &'static str,
    path: &Path,
    reader: R,
) -> Result<TableReport, DemoError> {
    let schema = portable_schema(&reader.schema());
    let mut writer = ParquetFileWriter::try_new(path, Arc::clone(&schema))?;
    for batch in reader {
        let batch = batch.map_err(|source| DemoError::Generate { table, source })?;
        let batch =
            to_portable(&batch, &schema).map_err(|source| DemoError::Convert { table, source })?;
        writer.write(&batch)?;
    }
    let written = writer.finish()?;
    Ok(TableReport {
        name: table,
        path: written.path,
        rows: written.rows,
        bytes: written.bytes,
    })
}

/// `schema` with every view type replaced by its plain counterpart, recursively.
fn portable_schema(schema: &Schema) -> SchemaRef {
    let fields: Fields = schema.fields().iter().map(portable_field).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn portable_field(field: &FieldRef) -> FieldRef {
    let data_type = portable_type(field.data_type());
    if &data_type == field.data_type() {
        Arc::clone(field)
    } else {
        Arc::new(Field::clone(field).with_data_type(data_type))
    }
}

/// Maps `Utf8View` to `Utf8`, `BinaryView` to `Binary` and `ListView` to `List`, also inside
/// nested types; every other type is kept.
fn portable_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) | DataType::ListView(f) => DataType::List(portable_field(f)),
        DataType::LargeList(f) | DataType::LargeListView(f) => {
            DataType::LargeList(portable_field(f))
        }
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(portable_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(portable_field).collect()),
        DataType::Map(f, sorted) => DataType::Map(portable_field(f), *sorted),
        DataType::Dictionary(key, value) => {
            DataType::Dictionary(key.clone(), Box::new(portable_type(value)))
        }
        other => other.clone(),
    }
}

/// Casts the columns of `batch` whose type differs from `schema`.
fn to_portable(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// A foreign key of a demo table.
struct ForeignKeyDoc {
    column: &'static str,
    references: &'static str,
    description: &'static str,
}

/// Documentation of one demo table, rendered into `data_description.md`.
struct TableDoc {
    name: &'static str,
    description: &'static str,
    primary_key: &'static str,
    private: bool,
    foreign_keys: &'static [ForeignKeyDoc],
    columns: &'static [(&'static str, &'static str)],
}

const fn fk(
    column: &'static str,
    references: &'static str,
    description: &'static str,
) -> ForeignKeyDoc {
    ForeignKeyDoc {
        column,
        references,
        description,
    }
}

/// The eight tables, in [`TPCH_TABLES`] order.
const TABLE_DOCS: [TableDoc; 8] = [
    TableDoc {
        name: "region",
        description: "The five world regions (Africa, America, Asia, Europe, Middle East) that group the nations.",
        primary_key: "r_regionkey",
        private: false,
        foreign_keys: &[],
        columns: &[
            ("r_regionkey", "Region identifier (0 to 4)"),
            ("r_name", "Region name, e.g. EUROPE"),
            ("r_comment", "Free-text comment"),
        ],
    },
    TableDoc {
        name: "nation",
        description: "The 25 nations in which customers and suppliers are located, each belonging to one region.",
        primary_key: "n_nationkey",
        private: false,
        foreign_keys: &[fk(
            "n_regionkey",
            "region.r_regionkey",
            "Region the nation belongs to",
        )],
        columns: &[
            ("n_nationkey", "Nation identifier (0 to 24)"),
            ("n_name", "Nation name, e.g. GERMANY"),
            ("n_regionkey", "Region the nation belongs to"),
            ("n_comment", "Free-text comment"),
        ],
    },
    TableDoc {
        name: "supplier",
        description: "Suppliers that stock parts and fulfil line items, with contact details and account balance.",
        primary_key: "s_suppkey",
        private: false,
        foreign_keys: &[fk(
            "s_nationkey",
            "nation.n_nationkey",
            "Nation the supplier is located in",
        )],
        columns: &[
            ("s_suppkey", "Supplier identifier"),
            ("s_name", "Supplier name, e.g. Supplier#000000001"),
            ("s_address", "Street address"),
            ("s_nationkey", "Nation the supplier is located in"),
            ("s_phone", "Phone number including the country code"),
            ("s_acctbal", "Account balance in dollars, can be negative"),
            (
                "s_comment",
                "Free-text comment, sometimes mentioning customer complaints",
            ),
        ],
    },
    TableDoc {
        name: "customer",
        description: "Customers who place orders, with contact details, account balance and market segment.",
        primary_key: "c_custkey",
        private: true,
        foreign_keys: &[fk(
            "c_nationkey",
            "nation.n_nationkey",
            "Nation the customer is located in",
        )],
        columns: &[
            ("c_custkey", "Customer identifier"),
            ("c_name", "Customer name, e.g. Customer#000000001"),
            ("c_address", "Street address"),
            ("c_nationkey", "Nation the customer is located in"),
            ("c_phone", "Phone number including the country code"),
            ("c_acctbal", "Account balance in dollars, can be negative"),
            (
                "c_mktsegment",
                "Market segment: AUTOMOBILE, BUILDING, FURNITURE, HOUSEHOLD or MACHINERY",
            ),
            ("c_comment", "Free-text comment"),
        ],
    },
    TableDoc {
        name: "part",
        description: "The catalog of parts that can be ordered, with manufacturer, brand, type, size, container and list price.",
        primary_key: "p_partkey",
        private: false,
        foreign_keys: &[],
        columns: &[
            ("p_partkey", "Part identifier"),
            ("p_name", "Part name made of five color words"),
            ("p_mfgr", "Manufacturer, e.g. Manufacturer#1"),
            ("p_brand", "Brand, e.g. Brand#13"),
            ("p_type", "Part type, e.g. PROMO BURNISHED COPPER"),
            ("p_size", "Size (1 to 50)"),
            ("p_container", "Container, e.g. JUMBO PKG"),
            ("p_retailprice", "List price of one unit in dollars"),
            ("p_comment", "Free-text comment"),
        ],
    },
    TableDoc {
        name: "partsupp",
        description: "Which supplier offers which part, with the quantity available and the supplier's cost per unit.",
        primary_key: "ps_partkey,ps_suppkey",
        private: false,
        foreign_keys: &[
            fk("ps_partkey", "part.p_partkey", "Part being supplied"),
            fk(
                "ps_suppkey",
                "supplier.s_suppkey",
                "Supplier offering the part",
            ),
        ],
        columns: &[
            ("ps_partkey", "Part being supplied"),
            ("ps_suppkey", "Supplier offering the part"),
            (
                "ps_availqty",
                "Units of the part the supplier has available",
            ),
            ("ps_supplycost", "Supplier's cost of one unit in dollars"),
            ("ps_comment", "Free-text comment"),
        ],
    },
    TableDoc {
        name: "orders",
        description: "Customer orders, one row per order, with status, total price, order date and priority.",
        primary_key: "o_orderkey",
        private: false,
        foreign_keys: &[fk(
            "o_custkey",
            "customer.c_custkey",
            "Customer who placed the order",
        )],
        columns: &[
            (
                "o_orderkey",
                "Order identifier (sparse, not every value is used)",
            ),
            ("o_custkey", "Customer who placed the order"),
            (
                "o_orderstatus",
                "F when all line items are shipped, O when none are, P when partially shipped",
            ),
            (
                "o_totalprice",
                "Total order price in dollars including discounts and tax",
            ),
            ("o_orderdate", "Date the order was placed (1992 to 1998)"),
            ("o_orderpriority", "Priority, from 1-URGENT to 5-LOW"),
            (
                "o_clerk",
                "Clerk who handled the order, e.g. Clerk#000000001",
            ),
            ("o_shippriority", "Shipping priority, always 0"),
            ("o_comment", "Free-text comment"),
        ],
    },
    TableDoc {
        name: "lineitem",
        description: "Order lines, one row per part shipped within an order, with quantity, price, discount, tax, status and ship dates.",
        primary_key: "l_orderkey,l_linenumber",
        private: false,
        foreign_keys: &[
            fk(
                "l_orderkey",
                "orders.o_orderkey",
                "Order the line belongs to",
            ),
            fk("l_partkey", "part.p_partkey", "Part shipped on this line"),
            fk(
                "l_suppkey",
                "supplier.s_suppkey",
                "Supplier that ships the part; together with l_partkey it also identifies a partsupp row",
            ),
        ],
        columns: &[
            ("l_orderkey", "Order the line belongs to"),
            ("l_partkey", "Part shipped on this line"),
            ("l_suppkey", "Supplier that ships the part"),
            (
                "l_linenumber",
                "Position of the line within its order (1 to 7)",
            ),
            ("l_quantity", "Number of units ordered (1 to 50)"),
            (
                "l_extendedprice",
                "Quantity times the part's retail price, in dollars, before discount and tax",
            ),
            ("l_discount", "Discount as a fraction (0.00 to 0.10)"),
            ("l_tax", "Tax as a fraction (0.00 to 0.08)"),
            (
                "l_returnflag",
                "R when returned, A when accepted, N when not yet received",
            ),
            ("l_linestatus", "O when not yet shipped, F when shipped"),
            ("l_shipdate", "Date the line was shipped"),
            ("l_commitdate", "Date the line was promised to ship"),
            ("l_receiptdate", "Date the customer received the line"),
            (
                "l_shipinstruct",
                "Shipping instruction, e.g. DELIVER IN PERSON or TAKE BACK RETURN",
            ),
            (
                "l_shipmode",
                "Shipping mode, e.g. AIR, MAIL, RAIL, SHIP or TRUCK",
            ),
            ("l_comment", "Free-text comment"),
        ],
    },
];

/// Quotes `s` as a YAML double-quoted scalar.
fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The Markdown `data_description.md` describing the demo tables: a short prose intro followed
/// by one fenced YAML block (see the data-description spec).
pub fn data_description_markdown() -> String {
    use std::fmt::Write as _;

    let mut md = String::new();
    md.push_str("# Demo dataset: TPC-H\n\n");
    md.push_str(
        "The demo data is the TPC-H benchmark schema: a wholesale supplier that sells parts \
         to customers. `orders` and their `lineitem` rows reference customers, parts and \
         suppliers; `partsupp` lists which supplier offers which part; `nation` and `region` \
         locate customers and suppliers. The data is synthetic (generated with tpchgen), so it \
         is safe to share; `customer` is still marked private to demonstrate access control.\n\n",
    );
    md.push_str("```yaml\n");
    let _ = writeln!(
        md,
        "folder_mapping: {{{}: {}}}",
        yaml_quote(TPCH_FOLDER),
        yaml_quote(TPCH_FOLDER)
    );
    md.push_str("tables:\n");
    for t in &TABLE_DOCS {
        let _ = writeln!(
            md,
            "  - id: {}",
            yaml_quote(&format!("{TPCH_FOLDER}.{}", t.name))
        );
        let _ = writeln!(md, "    name: {}", t.name);
        let _ = writeln!(md, "    folder: {TPCH_FOLDER}");
        let _ = writeln!(md, "    description: {}", yaml_quote(t.description));
        let _ = writeln!(md, "    primary_key: {}", yaml_quote(t.primary_key));
        md.push_str("    sync_strategy: full_refresh\n");
        if t.private {
            md.push_str("    access: private\n");
        }
        if !t.foreign_keys.is_empty() {
            md.push_str("    foreign_keys:\n");
            for f in t.foreign_keys {
                let _ = writeln!(md, "      - column: {}", f.column);
                let _ = writeln!(md, "        references: {}", yaml_quote(f.references));
                let _ = writeln!(md, "        description: {}", yaml_quote(f.description));
            }
        }
        md.push_str("    column_descriptions:\n");
        for (column, description) in t.columns {
            let _ = writeln!(md, "      {column}: {}", yaml_quote(description));
        }
    }
    md.push_str("```\n");
    md
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::fs::File;

    fn yaml_block(md: &str) -> &str {
        let start = md.find("```yaml\n").unwrap() + "```yaml\n".len();
        let len = md[start..].find("```").unwrap();
        &md[start..start + len]
    }

    #[test]
    fn generators_cover_all_tables_in_order() {
        let names: Vec<&str> = GENERATORS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, TPCH_TABLES);
    }

    #[test]
    fn table_docs_match_generated_schemas() {
        let schemas = [
            RegionArrow::schema_ref(),
            NationArrow::schema_ref(),
            SupplierArrow::schema_ref(),
            CustomerArrow::schema_ref(),
            PartArrow::schema_ref(),
            PartSuppArrow::schema_ref(),
            OrderArrow::schema_ref(),
            LineItemArrow::schema_ref(),
        ];
        for ((doc, name), schema) in TABLE_DOCS.iter().zip(TPCH_TABLES).zip(schemas) {
            assert_eq!(doc.name, name);
            let documented: Vec<&str> = doc.columns.iter().map(|(c, _)| *c).collect();
            let actual: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(documented, actual, "columns of {name}");
            for key in doc.primary_key.split(',') {
                assert!(actual.contains(&key), "{name} primary key {key}");
            }
            for f in doc.foreign_keys {
                assert!(actual.contains(&f.column), "{name} fk column {}", f.column);
                let (table, column) = f.references.split_once('.').unwrap();
                let target = TABLE_DOCS.iter().find(|d| d.name == table).unwrap();
                assert!(target.columns.iter().any(|(c, _)| *c == column));
            }
        }
    }

    #[test]
    fn description_yaml_parses() {
        let md = data_description_markdown();
        let value: yaml_serde::Value = yaml_serde::from_str(yaml_block(&md)).unwrap();
        assert_eq!(value["folder_mapping"]["tpch"].as_str(), Some("tpch"));
        let tables = value["tables"].as_sequence().unwrap();
        assert_eq!(tables.len(), 8);
        for (t, name) in tables.iter().zip(TPCH_TABLES) {
            assert_eq!(t["name"].as_str(), Some(name));
            assert_eq!(t["id"].as_str(), Some(format!("tpch.{name}").as_str()));
            assert_eq!(t["folder"].as_str(), Some("tpch"));
            assert_eq!(t["sync_strategy"].as_str(), Some("full_refresh"));
            assert!(!t["description"].as_str().unwrap().is_empty());
            assert_eq!(
                t["access"].as_str(),
                (name == "customer").then_some("private")
            );
            assert!(t["column_descriptions"].as_mapping().unwrap().len() >= 3);
        }
        let lineitem = &tables[7];
        assert_eq!(
            lineitem["primary_key"].as_str(),
            Some("l_orderkey,l_linenumber")
        );
        let fks = lineitem["foreign_keys"].as_sequence().unwrap();
        assert_eq!(fks.len(), 3);
        assert_eq!(fks[0]["references"].as_str(), Some("orders.o_orderkey"));
    }

    #[test]
    fn portable_type_replaces_views_recursively() {
        let nested = DataType::Struct(Fields::from(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new(
                "l",
                DataType::List(Arc::new(Field::new("item", DataType::BinaryView, true))),
                true,
            ),
        ]));
        let expected = DataType::Struct(Fields::from(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new(
                "l",
                DataType::List(Arc::new(Field::new("item", DataType::Binary, true))),
                true,
            ),
        ]));
        assert_eq!(portable_type(&nested), expected);
        assert_eq!(portable_type(&DataType::Int64), DataType::Int64);
    }

    #[test]
    fn rejects_invalid_scale() {
        let tmp = tempfile::tempdir().unwrap();
        for scale in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = generate_tpch(tmp.path(), scale).unwrap_err();
            assert!(matches!(err, DemoError::InvalidScale { .. }), "{err}");
        }
    }

    #[test]
    fn generates_and_reuses_tiny_dataset() {
        let tmp = tempfile::tempdir().unwrap();
        let scale = 0.001;

        let DemoOutcome::Generated(report) = ensure_tpch(tmp.path(), scale).unwrap() else {
            panic!("first call must generate");
        };
        let dir = tpch_dir(tmp.path());
        assert_eq!(report.tables.len(), 8);
        for (t, name) in report.tables.iter().zip(TPCH_TABLES) {
            assert_eq!(t.name, name);
            assert_eq!(t.path, dir.join(format!("{name}.parquet")));
            assert!(t.path.is_file(), "{name} exists");
            assert!(t.rows > 0 && t.bytes > 0, "{name} is not empty");
        }
        assert!(dir.join(DEMO_MARKER).is_file());

        // lineitem: row count matches tpchgen and strings are stored as Utf8.
        let expected_rows = LineItemGenerator::new(scale, 1, 1).iter().count();
        let lineitem = dir.join("lineitem.parquet");
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&lineitem).unwrap()).unwrap();
        let schema = Arc::clone(builder.schema());
        let rows: usize = builder
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
        assert_eq!(rows, expected_rows);
        assert_eq!(report.tables[7].rows, expected_rows as u64);
        assert_eq!(
            schema.field_with_name("l_comment").unwrap().data_type(),
            &DataType::Utf8
        );
        assert!(
            schema
                .fields()
                .iter()
                .all(|f| !matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView))
        );

        // The description names all tables and marks exactly one as private.
        let md = fs::read_to_string(description_path(tmp.path())).unwrap();
        assert_eq!(report.description_path, description_path(tmp.path()));
        let yaml = yaml_block(&md);
        for name in TPCH_TABLES {
            assert!(
                yaml.contains(&format!("name: {name}\n")),
                "{name} described"
            );
        }
        assert_eq!(md.matches("access: private").count(), 1);

        // Second call reuses; removing a file forces regeneration.
        assert_eq!(ensure_tpch(tmp.path(), scale).unwrap(), DemoOutcome::Reused);
        fs::remove_file(dir.join("nation.parquet")).unwrap();
        assert!(matches!(
            ensure_tpch(tmp.path(), scale).unwrap(),
            DemoOutcome::Generated(_)
        ));
        assert!(dir.join("nation.parquet").is_file());

        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

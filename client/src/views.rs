//! DuckDB over the pulled files: `views.sql`, one view per table in the server's schemas, and
//! applying it to `analytics.duckdb` with a `duckdb` executable when there is one.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::api::{Manifest, ManifestTable};

/// Which DuckDB applies the views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DuckDb {
    /// The `duckdb` executable on `PATH`; else the `duckdb` module of `python3` (or `python`)
    /// on `PATH`; else none.
    Auto,
    Path(PathBuf),
    /// Only write `views.sql`.
    Off,
}

/// What became of the views after a pull.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ViewsOutcome {
    /// `views.sql` was run against the database (by the CLI, or by the Python interpreter
    /// whose `duckdb` module ran it).
    Applied { duckdb: PathBuf, database: PathBuf },
    /// Neither a `duckdb` executable nor Python's `duckdb` module was found; `views.sql` is
    /// there to run by hand.
    NoDuckDb,
    /// Applying was switched off.
    Off,
    /// The executable failed (often: the database is open in another DuckDB process).
    Failed { duckdb: PathBuf, message: String },
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The DuckDB type of an Arrow type as the manifest names it, for the types a partition key
/// or an empty table's column commonly has.
fn duckdb_type(arrow: &str) -> Option<String> {
    let t = match arrow {
        "Boolean" => "BOOLEAN",
        "Int8" => "TINYINT",
        "Int16" => "SMALLINT",
        "Int32" => "INTEGER",
        "Int64" => "BIGINT",
        "UInt8" => "UTINYINT",
        "UInt16" => "USMALLINT",
        "UInt32" => "UINTEGER",
        "UInt64" => "UBIGINT",
        "Float16" | "Float32" => "FLOAT",
        "Float64" => "DOUBLE",
        "Utf8" | "LargeUtf8" | "Utf8View" => "VARCHAR",
        "Binary" | "LargeBinary" | "BinaryView" => "BLOB",
        "Date32" | "Date64" => "DATE",
        _ => {
            if let Some(rest) = arrow
                .strip_prefix("Decimal128(")
                .or_else(|| arrow.strip_prefix("Decimal256("))
            {
                let inner = rest.trim_end_matches(')');
                let mut parts = inner.split(',').map(|p| p.trim().parse::<u32>());
                return match (parts.next(), parts.next()) {
                    (Some(Ok(p)), Some(Ok(s))) if p <= 38 => Some(format!("DECIMAL({p},{s})")),
                    _ => Some("DOUBLE".into()),
                };
            }
            if arrow.starts_with("Timestamp") {
                // `Timestamp(ns)`, `Timestamp(Nanosecond, None)`, `Timestamp(µs, "UTC")`…
                let zoned = arrow.contains('"') || arrow.contains("Some(");
                return Some(if zoned { "TIMESTAMPTZ" } else { "TIMESTAMP" }.into());
            }
            return None;
        }
    };
    Some(t.to_string())
}

/// One `CREATE OR REPLACE VIEW` over a table's files (absolute paths under `dir`).
fn view_sql(dir: &Path, table: &ManifestTable) -> String {
    let name = format!("{}.{}", ident(&table.schema), ident(&table.table));
    let mut sql = String::new();
    if table.files.is_empty() {
        // No files (an empty partitioned table): a typed, empty view keeps queries working.
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                format!(
                    "CAST(NULL AS {}) AS {}",
                    duckdb_type(&c.data_type).unwrap_or_else(|| "VARCHAR".into()),
                    ident(&c.name)
                )
            })
            .collect();
        let select = if columns.is_empty() {
            "NULL AS \"_\"".to_string()
        } else {
            columns.join(", ")
        };
        sql.push_str(&format!(
            "CREATE OR REPLACE VIEW {name} AS SELECT {select} WHERE false;\n"
        ));
    } else {
        let files: Vec<String> = table
            .files
            .iter()
            .map(|f| literal(&dir.join(&f.local_path).to_string_lossy()))
            .collect();
        let mut options = String::new();
        if !table.partition_columns.is_empty() {
            options.push_str(", hive_partitioning = true");
            let typed: Vec<String> = table
                .partition_columns
                .iter()
                .filter_map(|p| {
                    let c = table.columns.iter().find(|c| &c.name == p)?;
                    Some(format!(
                        "{}: {}",
                        literal(p),
                        literal(&duckdb_type(&c.data_type)?)
                    ))
                })
                .collect();
            if typed.len() == table.partition_columns.len() {
                options.push_str(&format!(", hive_types = {{{}}}", typed.join(", ")));
            }
        }
        sql.push_str(&format!(
            "CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet([{}]{options});\n",
            files.join(", ")
        ));
    }
    if let Some(d) = table.description.as_deref().filter(|d| !d.is_empty()) {
        sql.push_str(&format!("COMMENT ON VIEW {name} IS {};\n", literal(d)));
    }
    for c in &table.columns {
        if let Some(d) = c.description.as_deref().filter(|d| !d.is_empty()) {
            sql.push_str(&format!(
                "COMMENT ON COLUMN {name}.{} IS {};\n",
                ident(&c.name),
                literal(d)
            ));
        }
    }
    sql
}

/// The script: drops the views of `dropped` tables (`(schema, table)`, from an earlier pull),
/// creates each schema and one view per table of `manifest` over its files under `dir`.
pub fn views_sql(
    dir: &Path,
    manifest: &Manifest,
    dropped: &[(String, String)],
    header: &str,
) -> String {
    let mut sql = String::new();
    for line in header.lines() {
        sql.push_str(&format!("-- {line}\n"));
    }
    for (schema, table) in dropped {
        sql.push_str(&format!(
            "DROP VIEW IF EXISTS {}.{};\n",
            ident(schema),
            ident(table)
        ));
    }
    let mut schemas: Vec<&str> = manifest.tables.iter().map(|t| t.schema.as_str()).collect();
    schemas.sort_unstable();
    schemas.dedup();
    for s in schemas {
        sql.push_str(&format!("CREATE SCHEMA IF NOT EXISTS {};\n", ident(s)));
    }
    for t in &manifest.tables {
        sql.push('\n');
        sql.push_str(&view_sql(dir, t));
    }
    sql.push_str(&unqualified_sql(manifest, dropped));
    sql
}

/// DuckDB's default schema, where unqualified names are looked up.
const DEFAULT_SCHEMA: &str = "main";

/// Views in DuckDB's default schema for the table names that are unambiguous across schemas,
/// so a query with unqualified names works on the laptop as it does on the server (which
/// searches every schema and refuses a name found in two). Names that became ambiguous, or
/// whose table was dropped, lose their view.
fn unqualified_sql(manifest: &Manifest, dropped: &[(String, String)]) -> String {
    let mut schemas_of: std::collections::BTreeMap<&str, Vec<&ManifestTable>> =
        std::collections::BTreeMap::new();
    for t in &manifest.tables {
        schemas_of.entry(t.table.as_str()).or_default().push(t);
    }
    let mut sql = String::new();
    // A table in `main` itself is its own view; no alias may replace it.
    let in_default = |name: &str| {
        schemas_of
            .get(name)
            .is_some_and(|ts| ts.iter().any(|t| t.schema == DEFAULT_SCHEMA))
    };
    let mut stale: Vec<&str> = dropped
        .iter()
        .map(|(_, table)| table.as_str())
        .filter(|name| !schemas_of.contains_key(name))
        .collect();
    stale.extend(
        schemas_of
            .iter()
            .filter(|(name, tables)| tables.len() > 1 && !in_default(name))
            .map(|(name, _)| *name),
    );
    stale.sort_unstable();
    stale.dedup();
    if !stale.is_empty() || !schemas_of.is_empty() {
        sql.push_str("\n-- unqualified names, as the server resolves them\n");
    }
    for name in stale {
        sql.push_str(&format!(
            "DROP VIEW IF EXISTS {}.{};\n",
            ident(DEFAULT_SCHEMA),
            ident(name)
        ));
    }
    for (name, tables) in &schemas_of {
        let [table] = tables.as_slice() else { continue };
        if table.schema == DEFAULT_SCHEMA {
            continue;
        }
        let alias = format!("{}.{}", ident(DEFAULT_SCHEMA), ident(name));
        sql.push_str(&format!(
            "CREATE OR REPLACE VIEW {alias} AS SELECT * FROM {}.{};\n",
            ident(&table.schema),
            ident(name)
        ));
        if let Some(d) = table.description.as_deref().filter(|d| !d.is_empty()) {
            sql.push_str(&format!("COMMENT ON VIEW {alias} IS {};\n", literal(d)));
        }
    }
    sql
}

/// What to install when no DuckDB was found, in one line.
pub const INSTALL_DUCKDB: &str = "install DuckDB to get analytics.duckdb: the CLI \
    (https://duckdb.org/docs/installation, or `pip install duckdb-cli`) or the Python module \
    (`pip install duckdb`), then pull again";

/// A DuckDB that runs SQL on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Runner {
    /// A `duckdb` executable: statements on standard input, the database as its argument.
    Cli(PathBuf),
    /// A Python interpreter whose `duckdb` module imports.
    Python(PathBuf),
}

/// Which DuckDB `duckdb` names: the executable given, or with [`DuckDb::Auto`] the `duckdb`
/// executable on `PATH`, else the first `python3` (or `python`) on `PATH` whose `duckdb` module
/// imports; `None` when there is none (or with [`DuckDb::Off`]).
pub(crate) fn find(duckdb: &DuckDb) -> Option<Runner> {
    match duckdb {
        DuckDb::Off => None,
        DuckDb::Path(p) => Some(Runner::Cli(p.clone())),
        DuckDb::Auto => find_on_path("duckdb").map(Runner::Cli).or_else(|| {
            ["python3", "python"]
                .into_iter()
                .filter_map(find_on_path)
                .find(|python| has_duckdb_module(python))
                .map(Runner::Python)
        }),
    }
}

/// Whether `import duckdb` works in `python`.
fn has_duckdb_module(python: &Path) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import duckdb"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `script` on `database` with the DuckDB [`find`] finds: the CLI (statements on standard
/// input, as it reads them) or Python's `duckdb` module.
pub(crate) fn apply(duckdb: &DuckDb, database: &Path, script: &Path) -> ViewsOutcome {
    let exe = match (duckdb, find(duckdb)) {
        (DuckDb::Off, _) => return ViewsOutcome::Off,
        (_, None) => return ViewsOutcome::NoDuckDb,
        (_, Some(Runner::Python(python))) => return apply_with_python(&python, database, script),
        (_, Some(Runner::Cli(exe))) => exe,
    };
    let failed = |message: String| ViewsOutcome::Failed {
        duckdb: exe.clone(),
        message,
    };
    let stdin = match std::fs::File::open(script) {
        Ok(f) => f,
        Err(e) => return failed(format!("cannot open {}: {e}", script.display())),
    };
    match std::process::Command::new(&exe)
        .arg(database)
        .stdin(stdin)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
    {
        Ok(out) if out.status.success() => {
            let err = String::from_utf8_lossy(&out.stderr);
            // The DuckDB CLI reports SQL errors on stderr and may still exit 0 in batch mode.
            if err.contains("Error") {
                failed(err.trim().to_string())
            } else {
                ViewsOutcome::Applied {
                    duckdb: exe.clone(),
                    database: database.to_path_buf(),
                }
            }
        }
        Ok(out) => failed(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => failed(format!("cannot run it: {e}")),
    }
}

/// Python that applies the script (`argv[2]`) to the database (`argv[1]`) with the `duckdb`
/// module, which runs several statements in one `execute`.
const PYTHON_APPLY: &str = "import sys
import duckdb
con = duckdb.connect(sys.argv[1])
try:
    with open(sys.argv[2], encoding='utf-8') as f:
        con.execute(f.read())
finally:
    con.close()
";

/// [`apply`] through `python`, whose `duckdb` module [`find`] found.
fn apply_with_python(python: &Path, database: &Path, script: &Path) -> ViewsOutcome {
    let output = std::process::Command::new(python)
        .arg("-c")
        .arg(PYTHON_APPLY)
        .arg(database)
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    match output {
        Ok(out) if out.status.success() => ViewsOutcome::Applied {
            duckdb: python.to_path_buf(),
            database: database.to_path_buf(),
        },
        Ok(out) => ViewsOutcome::Failed {
            duckdb: python.to_path_buf(),
            message: last_line(&String::from_utf8_lossy(&out.stderr)),
        },
        Err(e) => ViewsOutcome::Failed {
            duckdb: python.to_path_buf(),
            message: format!("cannot run it: {e}"),
        },
    }
}

/// A Python traceback's last line: the exception and its message.
fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed without a message")
        .trim()
        .to_string()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ManifestColumn, ManifestFile};

    fn table(schema: &str, name: &str, files: &[&str], partitions: &[&str]) -> ManifestTable {
        ManifestTable {
            schema: schema.into(),
            table: name.into(),
            description: Some("it's described".into()),
            columns: vec![
                ManifestColumn {
                    name: "id\"x".into(),
                    data_type: "Int64".into(),
                    description: Some("the key".into()),
                },
                ManifestColumn {
                    name: "day".into(),
                    data_type: "Date32".into(),
                    description: None,
                },
            ],
            partition_columns: partitions.iter().map(|p| p.to_string()).collect(),
            restricted: false,
            files: files
                .iter()
                .map(|f| ManifestFile {
                    path: format!("parquet/{f}"),
                    local_path: f.to_string(),
                    size: 1,
                    sha256: "0".repeat(64),
                    modified: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn views_quote_names_and_type_partitions() {
        let manifest = Manifest {
            generated_at: String::new(),
            snapshot_version: 1,
            tables: vec![
                table("s", "plain", &["s/plain.parquet"], &[]),
                table(
                    "s",
                    "parted",
                    &["s/parted/day=2024-01-01/a.parquet"],
                    &["day"],
                ),
                table("o'k", "empty", &[], &[]),
            ],
        };
        let sql = views_sql(
            Path::new("/data"),
            &manifest,
            &[("old".into(), "gone".into())],
            "generated\nby a test",
        );
        assert!(sql.starts_with("-- generated\n-- by a test\n"), "{sql}");
        assert!(sql.contains("DROP VIEW IF EXISTS \"old\".\"gone\";"));
        assert!(sql.contains("CREATE SCHEMA IF NOT EXISTS \"o'k\";"));
        assert!(sql.contains(
            "CREATE OR REPLACE VIEW \"s\".\"plain\" AS SELECT * FROM read_parquet(['/data/s/plain.parquet']);"
        ));
        assert!(sql.contains(
            "read_parquet(['/data/s/parted/day=2024-01-01/a.parquet'], hive_partitioning = true, hive_types = {'day': 'DATE'})"
        ));
        assert!(sql.contains(
            "CREATE OR REPLACE VIEW \"o'k\".\"empty\" AS SELECT CAST(NULL AS BIGINT) AS \"id\"\"x\", CAST(NULL AS DATE) AS \"day\" WHERE false;"
        ));
        assert!(sql.contains("COMMENT ON VIEW \"s\".\"plain\" IS 'it''s described';"));
        assert!(sql.contains("COMMENT ON COLUMN \"s\".\"plain\".\"id\"\"x\" IS 'the key';"));
        assert!(sql.contains(
            "CREATE OR REPLACE VIEW \"main\".\"plain\" AS SELECT * FROM \"s\".\"plain\";"
        ));
        assert!(sql.contains("DROP VIEW IF EXISTS \"main\".\"gone\";"));
    }

    #[test]
    fn unqualified_views_only_for_unambiguous_names() {
        let manifest = Manifest {
            generated_at: String::new(),
            snapshot_version: 1,
            tables: vec![
                table("a", "orders", &["a/orders.parquet"], &[]),
                table("b", "orders", &["b/orders.parquet"], &[]),
                table("a", "items", &["a/items.parquet"], &[]),
                table("main", "local", &["main/local.parquet"], &[]),
            ],
        };
        let dropped = [
            ("old".to_string(), "items".to_string()),
            ("old".to_string(), "gone".to_string()),
        ];
        let sql = views_sql(Path::new("/d"), &manifest, &dropped, "");
        // `orders` exists in two schemas: like the server, the laptop refuses to guess.
        assert!(!sql.contains("VIEW \"main\".\"orders\" AS"), "{sql}");
        assert!(
            sql.contains("DROP VIEW IF EXISTS \"main\".\"orders\";"),
            "{sql}"
        );
        assert!(sql.contains(
            "CREATE OR REPLACE VIEW \"main\".\"items\" AS SELECT * FROM \"a\".\"items\";"
        ));
        // A table dropped elsewhere while its name lives on keeps its alias; a gone name loses it.
        assert!(
            !sql.contains("DROP VIEW IF EXISTS \"main\".\"items\";"),
            "{sql}"
        );
        assert!(
            sql.contains("DROP VIEW IF EXISTS \"main\".\"gone\";"),
            "{sql}"
        );
        // A table of schema `main` is its own view, never replaced by an alias.
        assert!(!sql.contains("SELECT * FROM \"main\".\"local\""), "{sql}");
        assert!(
            !sql.contains("DROP VIEW IF EXISTS \"main\".\"local\""),
            "{sql}"
        );
    }

    #[test]
    fn arrow_types_map_to_duckdb_types() {
        assert_eq!(
            duckdb_type("Decimal128(15, 2)").as_deref(),
            Some("DECIMAL(15,2)")
        );
        assert_eq!(duckdb_type("Timestamp(ns)").as_deref(), Some("TIMESTAMP"));
        assert_eq!(
            duckdb_type("Timestamp(µs, \"UTC\")").as_deref(),
            Some("TIMESTAMPTZ")
        );
        assert_eq!(duckdb_type("Utf8").as_deref(), Some("VARCHAR"));
        assert_eq!(duckdb_type("Struct(a Int64)"), None);
    }
}

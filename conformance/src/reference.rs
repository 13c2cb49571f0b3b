//! In-process DataFusion: the reference answers, and the tables the server reads.
//!
//! Two contexts per `.slt` file, both with the server's DataFusion settings
//! (`dataport_engine::session_config`, so results may differ only by what the server's own
//! path does):
//! - `setup` runs the statements that create and change tables (in memory, as the file
//!   expects);
//! - after each such statement every table (and view) of `setup` is written as Parquet under
//!   the server's `parquet/<schema>/<table>.parquet` and registered from that file in `answers`,
//!   which answers the queries. The server and the reference thus read the same files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::execution::context::SessionContext;
use datafusion::prelude::{ParquetReadOptions, SessionConfig};

/// How long an in-process statement or query may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The catalog the `.slt` files create their tables in.
const CATALOG: &str = "datafusion";

/// The catalog the answers read from: named as the server's, so a query that names a catalog
/// resolves (or fails) alike on both sides.
const SERVED_CATALOG: &str = "dataport";

pub(crate) struct Reference {
    pub(crate) setup: SessionContext,
    pub(crate) answers: SessionContext,
    parquet_root: PathBuf,
    /// What was last written per `(schema, table)`, to write only what changed.
    written: BTreeMap<(String, String), Vec<RecordBatch>>,
    /// Tables the server cannot be given, with the reason.
    pub(crate) unrepresentable: BTreeMap<String, String>,
}

fn config(catalog: &str) -> anyhow::Result<SessionConfig> {
    let options = dataport_engine::EngineOptions::new(Path::new("."));
    let config = dataport_engine::session_config(&options)?;
    Ok(config
        .with_create_default_catalog_and_schema(true)
        .with_default_catalog_and_schema(catalog, "public"))
}

/// A reference answer: the result, or DataFusion's error text.
pub(crate) type Outcome = Result<(SchemaRef, Vec<RecordBatch>), String>;

impl Reference {
    pub(crate) fn new(parquet_root: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            setup: SessionContext::new_with_config(config(CATALOG)?),
            answers: SessionContext::new_with_config(config(SERVED_CATALOG)?),
            parquet_root: parquet_root.to_path_buf(),
            written: BTreeMap::new(),
            unrepresentable: BTreeMap::new(),
        })
    }

    /// Run `sql` on `ctx` to its end. The answer is in the schema the physical plan declares:
    /// DataFusion occasionally emits batches of other types than its plan's (a `UNION ALL`
    /// under a `LIMIT` may pass one branch's batches through uncoerced), which the server
    /// casts to the declared schema; so does the reference.
    pub(crate) async fn run(ctx: &SessionContext, sql: &str) -> Outcome {
        let work = async {
            let frame = ctx.sql(sql).await?;
            let task = Arc::new(frame.task_ctx());
            let plan = frame.create_physical_plan().await?;
            let schema = plan.schema();
            let batches = datafusion::physical_plan::collect(plan, task).await?;
            let batches = batches
                .into_iter()
                .map(|b| conform(b, &schema))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, datafusion::error::DataFusionError>((schema, batches))
        };
        match tokio::time::timeout(TIMEOUT, work).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("timed out after {}s", TIMEOUT.as_secs())),
        }
    }

    /// Write every table of `setup` that changed since the last call as Parquet under the
    /// server's data dir, remove the files of dropped tables, and register the files in
    /// `answers`. Returns whether anything changed (the server must refresh).
    pub(crate) async fn sync_tables(&mut self) -> anyhow::Result<bool> {
        let mut current: BTreeMap<(String, String), Vec<RecordBatch>> = BTreeMap::new();
        let catalog = self
            .setup
            .catalog(CATALOG)
            .context("the setup context lost its catalog")?;
        for schema_name in catalog.schema_names() {
            if schema_name == "information_schema" {
                continue;
            }
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            for table in schema.table_names() {
                let reference = TableReference::full(CATALOG, schema_name.as_str(), table.as_str());
                let Ok(frame) = self.setup.table(reference).await else {
                    continue;
                };
                match tokio::time::timeout(TIMEOUT, frame.collect()).await {
                    Ok(Ok(batches)) => {
                        current.insert((schema_name.clone(), table), batches);
                    }
                    Ok(Err(e)) => {
                        self.unrepresentable.insert(
                            format!("{schema_name}.{table}"),
                            format!("cannot be read in-process: {e}"),
                        );
                    }
                    Err(_) => {
                        self.unrepresentable.insert(
                            format!("{schema_name}.{table}"),
                            "reading it in-process timed out".into(),
                        );
                    }
                }
            }
        }
        let mut changed = false;
        let gone: Vec<(String, String)> = self
            .written
            .keys()
            .filter(|k| !current.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.written.remove(&key);
            let _ = std::fs::remove_file(self.file_of(&key));
            self.deregister(&key)?;
            changed = true;
        }
        for (key, batches) in current {
            if self.written.get(&key) == Some(&batches) {
                continue;
            }
            changed = true;
            let name = format!("{}.{}", key.0, key.1);
            if let Some(why) = server_name_problem(&key.0).or_else(|| server_name_problem(&key.1)) {
                self.unrepresentable.insert(name, why);
                continue;
            }
            let file = self.file_of(&key);
            match write_parquet(&file, &batches, self.setup_schema(&key).await) {
                Ok(()) => {
                    self.unrepresentable.remove(&name);
                    self.register(&key, &file).await?;
                    self.written.insert(key, batches);
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&file);
                    self.deregister(&key)?;
                    self.written.remove(&key);
                    self.unrepresentable
                        .insert(name, format!("Parquet cannot hold it: {e}"));
                }
            }
        }
        Ok(changed)
    }

    /// Remove every table written for this file.
    pub(crate) fn clear(&mut self) {
        for key in std::mem::take(&mut self.written).into_keys() {
            let _ = std::fs::remove_file(self.file_of(&key));
        }
        if let Ok(entries) = std::fs::read_dir(&self.parquet_root) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    async fn setup_schema(&self, key: &(String, String)) -> Option<SchemaRef> {
        let reference = TableReference::full(CATALOG, key.0.as_str(), key.1.as_str());
        let provider = self.setup.table_provider(reference).await.ok()?;
        Some(provider.schema())
    }

    fn file_of(&self, (schema, table): &(String, String)) -> PathBuf {
        self.parquet_root
            .join(schema)
            .join(format!("{table}.parquet"))
    }

    async fn register(
        &self,
        (schema, table): &(String, String),
        file: &Path,
    ) -> anyhow::Result<()> {
        let catalog = self
            .answers
            .catalog(SERVED_CATALOG)
            .context("the answers context lost its catalog")?;
        if catalog.schema(schema).is_none() {
            catalog.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
        }
        let reference = TableReference::full(SERVED_CATALOG, schema.as_str(), table.as_str());
        let _ = self.answers.deregister_table(reference.clone())?;
        self.answers
            .register_parquet(
                reference,
                file.to_str().context("a non-UTF-8 path")?,
                ParquetReadOptions::default(),
            )
            .await?;
        Ok(())
    }

    fn deregister(&self, (schema, table): &(String, String)) -> anyhow::Result<()> {
        let reference = TableReference::full(SERVED_CATALOG, schema.as_str(), table.as_str());
        if self
            .answers
            .catalog(SERVED_CATALOG)
            .and_then(|c| c.schema(schema))
            .is_some()
        {
            let _ = self.answers.deregister_table(reference)?;
        }
        Ok(())
    }
}

/// `batch` in `schema`'s types (a no-op when they agree).
fn conform(
    batch: RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, datafusion::error::DataFusionError> {
    if batch.schema_ref().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

/// Why a name can't be a server table or schema name as it is: the server derives identifiers
/// from file names (lower case, `[a-z0-9_]`, no leading digit or `.`/`_`).
fn server_name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '_');
    (!ok).then(|| {
        format!("'{name}' is not a name the server derives from a file name ([a-z][a-z0-9_]*)")
    })
}

fn write_parquet(
    file: &Path,
    batches: &[RecordBatch],
    schema: Option<SchemaRef>,
) -> anyhow::Result<()> {
    let schema = batches
        .first()
        .map(RecordBatch::schema)
        .or(schema)
        .context("a table without a schema")?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written beside the target under an ignored name, then renamed: the server never sees a
    // partial file.
    let tmp = file.with_file_name(format!(
        ".{}.tmp",
        file.file_name()
            .and_then(|n| n.to_str())
            .context("a non-UTF-8 file name")?
    ));
    let out = std::fs::File::create(&tmp)?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(out, schema, None)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.close()?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

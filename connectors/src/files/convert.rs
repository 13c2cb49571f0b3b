//! Convert stage: each file typed to the run's schema and written to a staged Parquet file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use dataport_catalog::write::ParquetFileWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::discover::{DropFile, FileFormat};
use super::moved::is_file_fault;
use super::read::{Probe, copy_without_bom, json_error, skip_bom, text};
use super::schema::{final_schema, whole_schemas};
use super::{Rejected, Run, blocking};
use crate::error::{ConnectorError, Result};
use crate::typed::{
    BATCH_ROWS, CsvOptions, CsvPart, SAMPLE_ROWS, csv_to_parquet, staged_schema, type_batch,
};

/// What converting a file came to; `None` until it is converted.
pub(super) type Outcome = Option<Result<Staged>>;

/// The files of a run that were staged, ready to be written to the table.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub(super) staged: Vec<PathBuf>,
    pub(super) files: Vec<DropFile>,
    /// Rows staged.
    pub(super) rows: u64,
    /// Bytes of the files staged, as dropped.
    pub(super) bytes: u64,
}

impl Run<'_> {
    /// Converts every probed file to one schema for the run. CSV types come from a sample of
    /// each file first; the conversion checks every row against them and, where the whole
    /// file gives other types, everything is converted again with those.
    pub(super) async fn convert(&self, probed: &[(DropFile, Probe)]) -> Result<Vec<Outcome>> {
        let stored = self.stored.as_deref();
        let schemas = probed.iter().map(|(_, p)| &p.schema);
        let schema = final_schema(schemas, &self.declared, stored);
        let mut outcomes: Vec<Outcome> = probed.iter().map(|_| None).collect();
        self.convert_pass(probed, &schema, true, &mut outcomes)
            .await?;
        if probed.iter().all(|(_, p)| p.complete) {
            return Ok(outcomes);
        }
        let whole = whole_schemas(probed, &outcomes);
        let retyped = final_schema(whole.iter(), &self.declared, stored);
        if retyped == schema {
            return Ok(outcomes);
        }
        tracing::info!(
            source = %self.files.name, table = %self.qualified,
            "later rows do not fit the types of the first {SAMPLE_ROWS}; converting again with the types of all rows"
        );
        self.convert_pass(probed, &retyped, false, &mut outcomes)
            .await?;
        Ok(outcomes)
    }

    /// Converts each file to `schema`, except those that failed before, numbering rows on
    /// from file to file. `first_pass`: CSV files the probe saw only a sample of infer their
    /// types over every row while converting.
    async fn convert_pass(
        &self,
        probed: &[(DropFile, Probe)],
        schema: &SchemaRef,
        first_pass: bool,
        outcomes: &mut [Outcome],
    ) -> Result<()> {
        let verb = if first_pass {
            "converting"
        } else {
            "converting again (types of all rows)"
        };
        let ranked = self.target.ranks_rows();
        let mut seq = 1u64;
        for (i, (file, probe)) in probed.iter().enumerate() {
            if matches!(outcomes[i], Some(Err(_))) {
                continue;
            }
            self.ctx
                .progress
                .step(&self.qualified, &format!("{verb} {}", file.name));
            let job = Convert {
                table: self.qualified.clone(),
                file: file.clone(),
                probe: probe.clone(),
                schema: Arc::clone(schema),
                declared: self.declared.clone(),
                out: self.ctx.staging.join(format!("part-{i:05}.parquet")),
                seq: ranked.then_some(seq),
                infer: first_pass && !probe.complete,
            };
            let outcome = match blocking(&self.qualified, move || job.run()).await {
                Ok(done) => {
                    seq += done.rows;
                    Ok(done)
                }
                Err(e) if is_file_fault(&e) => Err(e),
                Err(e) => return Err(e),
            };
            outcomes[i] = Some(outcome);
        }
        Ok(())
    }

    /// Sorts the converted files into those loaded and those `rejected` (a value did not
    /// fit), counting the bytes of the loaded ones as received.
    pub(super) fn collect(
        &self,
        probed: Vec<(DropFile, Probe)>,
        outcomes: Vec<Outcome>,
        rejected: &mut Rejected,
    ) -> Loaded {
        let mut loaded = Loaded::default();
        for ((file, _), outcome) in probed.into_iter().zip(outcomes) {
            match outcome {
                Some(Ok(Staged { unfit: Some(e), .. })) | Some(Err(e)) => rejected.push((file, e)),
                Some(Ok(done)) => {
                    loaded.rows += done.rows;
                    loaded.bytes += file.size;
                    self.ctx.progress.bytes(&self.qualified, file.size);
                    loaded.staged.push(done.path);
                    loaded.files.push(file);
                }
                None => {}
            }
        }
        loaded
    }
}

/// One file to stage as typed Parquet.
struct Convert {
    table: String,
    file: DropFile,
    probe: Probe,
    schema: SchemaRef,
    declared: BTreeMap<String, DataType>,
    out: PathBuf,
    /// The sequence number of the file's first row, when rows are ranked ([`SEQ_COLUMN`](crate::sink::SEQ_COLUMN)).
    seq: Option<u64>,
    /// Infer CSV types over every row while converting (the probe saw a sample).
    infer: bool,
}

/// A converted file.
pub(super) struct Staged {
    path: PathBuf,
    rows: u64,
    /// With [`Convert::infer`]: the types of all the file's rows.
    pub(super) inferred: Option<Schema>,
    /// With [`Convert::infer`]: a value that did not fit (nothing was staged).
    unfit: Option<ConnectorError>,
}

impl Convert {
    /// Stages the file by its format.
    fn run(self) -> Result<Staged> {
        let (rows, inferred, unfit) = match self.file.format {
            FileFormat::Csv => self.csv()?,
            FileFormat::Json => (self.json()?, None, None),
            FileFormat::Parquet => (self.parquet()?, None, None),
        };
        Ok(Staged {
            path: self.out,
            rows,
            inferred,
            unfit,
        })
    }

    fn csv(&self) -> Result<(u64, Option<Schema>, Option<ConnectorError>)> {
        // `csv_to_parquet` matches columns by the header's names, which must not carry a BOM.
        let source = if self.probe.bom {
            let copy = self.out.with_extension("csv");
            copy_without_bom(&self.file.path, &copy)?;
            copy
        } else {
            self.file.path.clone()
        };
        let parts = [CsvPart {
            path: source.clone(),
            has_header: true,
        }];
        let options = CsvOptions {
            seq: self.seq,
            infer: self.infer,
        };
        let original = |e: ConnectorError| match e {
            ConnectorError::Decode {
                table,
                what,
                message,
            } if what == source.display().to_string() => ConnectorError::Decode {
                table,
                what: self.file.path.display().to_string(),
                message,
            },
            other => other,
        };
        let converted = csv_to_parquet(&self.table, &parts, &[], &self.schema, &self.out, options)
            .map_err(original)?;
        Ok((
            converted.rows,
            converted.inferred,
            converted.unfit.map(original),
        ))
    }

    fn json(&self) -> Result<u64> {
        let path = &self.file.path;
        // Declared columns are decoded as text (numbers keep their digits), then cast.
        let fields: Vec<Field> = self
            .probe
            .schema
            .fields()
            .iter()
            .map(|f| {
                let as_text = self.declared.contains_key(f.name()) && !f.data_type().is_nested();
                let t = if as_text {
                    DataType::Utf8
                } else {
                    f.data_type().clone()
                };
                Field::new(f.name(), t, true)
            })
            .collect();
        let mut reader = text(path)?;
        if self.probe.bom {
            skip_bom(&mut reader).map_err(|e| ConnectorError::io(path, e))?;
        }
        let json = arrow::json::ReaderBuilder::new(Arc::new(Schema::new(fields)))
            .with_batch_size(BATCH_ROWS)
            .with_coerce_primitive(true)
            .build(reader)
            .map_err(|e| ConnectorError::decode(&self.table, path, e))?;
        self.stage(json, |e| json_error(&self.table, path, e))
    }

    fn parquet(&self) -> Result<u64> {
        let path = &self.file.path;
        let file = std::fs::File::open(path).map_err(|e| ConnectorError::io(path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
            .map_err(|e| ConnectorError::decode(&self.table, path, e))?;
        self.stage(reader, |e| ConnectorError::decode(&self.table, path, e))
    }

    /// Types each of `batches` to the schema and writes it to the staged file (`failed`
    /// says why a batch could not be read); the rows staged.
    fn stage(
        &self,
        batches: impl Iterator<Item = std::result::Result<RecordBatch, ArrowError>>,
        failed: impl Fn(ArrowError) -> ConnectorError,
    ) -> Result<u64> {
        let mut writer =
            ParquetFileWriter::try_new(&self.out, staged_schema(&self.schema, self.seq))?;
        let mut rows = 0u64;
        for batch in batches {
            let batch = batch.map_err(&failed)?;
            let seq = self.seq.map(|s| s + rows);
            let typed = type_batch(&self.table, &batch, &self.schema, rows, seq)?;
            writer.write(&typed)?;
            rows += batch.num_rows() as u64;
        }
        writer.finish()?;
        Ok(rows)
    }
}

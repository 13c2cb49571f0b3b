//! Read stage: each file's columns and types probed, its text decoded (gzip, byte order mark).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use arrow::datatypes::{Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::discover::{DropFile, FileFormat};
use super::moved::is_file_fault;
use super::schema::{check_columns, check_names, normalized};
use super::{Rejected, Run, blocking};
use crate::error::{ConnectorError, Result};
use crate::sink::SEQ_COLUMN;
use crate::typed::{
    Inference, READ_BUFFER, SAMPLE_ROWS, open_decoded, open_decoded_io, read_header, text_batches,
};

/// The UTF-8 byte order mark some tools put at the start of text files.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// What reading a file's columns found.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    /// The file's columns with their inferred types (all nullable).
    pub(super) schema: Schema,
    /// The text starts with a UTF-8 byte order mark.
    pub(super) bom: bool,
    /// The types were inferred from every row (else from the first [`SAMPLE_ROWS`]).
    pub(super) complete: bool,
}

impl Run<'_> {
    /// Reads each file's columns and types. A file that cannot be read, or lacks a declared
    /// column or a primary key column, is rejected; other errors end the sync.
    pub(super) async fn read(
        &self,
        files: Vec<DropFile>,
    ) -> Result<(Vec<(DropFile, Probe)>, Rejected)> {
        let qualified = &self.qualified;
        let mut rejected: Rejected = Vec::new();
        let mut probed: Vec<(DropFile, Probe)> = Vec::new();
        for file in files {
            self.ctx
                .progress
                .step(qualified, &format!("reading {}", file.name));
            let (t, p, format) = (qualified.clone(), file.path.clone(), file.format);
            match blocking(qualified, move || probe(&t, &p, format)).await {
                Ok(probe) => match check_columns(
                    qualified,
                    &file,
                    &probe.schema,
                    &self.declared,
                    &self.target.primary_key,
                ) {
                    Ok(()) => probed.push((file, probe)),
                    Err(e) => rejected.push((file, e)),
                },
                Err(e) if is_file_fault(&e) => rejected.push((file, e)),
                Err(e) => return Err(e),
            }
        }
        Ok((probed, rejected))
    }
}

fn probe(table: &str, path: &Path, format: FileFormat) -> Result<Probe> {
    let probe = match format {
        FileFormat::Csv => probe_csv(table, path)?,
        FileFormat::Json => probe_json(table, path)?,
        FileFormat::Parquet => probe_parquet(table, path)?,
    };
    check_names(table, path, &probe.schema)?;
    Ok(probe)
}

fn probe_csv(table: &str, path: &Path) -> Result<Probe> {
    let (mut reader, bom) = text_after_bom(path)?;
    let Some(names) = read_header(&mut reader).map_err(|e| ConnectorError::io(path, e))? else {
        return Ok(Probe {
            schema: Schema::empty(),
            bom,
            complete: true,
        });
    };
    let mut inference = Inference::new(names.clone());
    let mut rows = 0usize;
    let mut complete = true;
    for batch in
        text_batches(&names, &mut reader).map_err(|e| ConnectorError::decode(table, path, e))?
    {
        let batch = batch.map_err(|e| ConnectorError::decode(table, path, e))?;
        rows += batch.num_rows();
        inference.observe(&batch);
        if rows >= SAMPLE_ROWS {
            complete = false;
            break;
        }
    }
    Ok(Probe {
        schema: normalized(&inference.schema()),
        bom,
        complete,
    })
}

fn probe_json(table: &str, path: &Path) -> Result<Probe> {
    let (mut reader, bom) = text_after_bom(path)?;
    let (schema, _) = arrow::json::reader::infer_json_schema(&mut reader, None)
        .map_err(|e| json_error(table, path, e))?;
    Ok(Probe {
        schema: normalized(&schema),
        bom,
        complete: true,
    })
}

fn probe_parquet(table: &str, path: &Path) -> Result<Probe> {
    let file = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| ConnectorError::decode(table, path, e))?;
    // A sequence column of a copied staging file is not data.
    let fields: Vec<Field> = builder
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != SEQ_COLUMN)
        .map(|f| f.as_ref().clone())
        .collect();
    Ok(Probe {
        schema: normalized(&Schema::new(fields)),
        bom: false,
        complete: true,
    })
}

/// A dropped file's decoded text, buffered.
pub(super) type Text = BufReader<Box<dyn Read + Send>>;

/// The decoded text of the file at `path`, buffered.
pub(super) fn text(path: &Path) -> Result<Text> {
    Ok(BufReader::with_capacity(READ_BUFFER, open_decoded(path)?))
}

/// [`text`] past its UTF-8 byte order mark, and whether it had one.
fn text_after_bom(path: &Path) -> Result<(Text, bool)> {
    let mut reader = text(path)?;
    let bom = skip_bom(&mut reader).map_err(|e| ConnectorError::io(path, e))?;
    Ok((reader, bom))
}

/// Skips a UTF-8 byte order mark; whether there was one.
pub(super) fn skip_bom(reader: &mut impl BufRead) -> std::io::Result<bool> {
    let bom = reader.fill_buf()?.starts_with(&BOM);
    if bom {
        reader.consume(BOM.len());
    }
    Ok(bom)
}

/// Writes the decompressed text of `from` without its byte order mark to `to`.
pub(super) fn copy_without_bom(from: &Path, to: &Path) -> Result<()> {
    let (mut reader, _) = text_after_bom(from)?;
    let mut out = File::create(to).map_err(|e| ConnectorError::io(to, e))?;
    std::io::copy(&mut reader, &mut out).map_err(|e| ConnectorError::io(from, e))?;
    Ok(())
}

/// A JSON lines failure, located at the first line that is not a JSON object when there is
/// one.
pub(super) fn json_error(table: &str, path: &Path, e: arrow::error::ArrowError) -> ConnectorError {
    match first_bad_line(path) {
        Ok(Some((line, reason))) => ConnectorError::BadValue {
            table: table.to_string(),
            row: line,
            column: "(line)".into(),
            reason,
        },
        Ok(None) => ConnectorError::decode(table, path, e),
        Err(io) => ConnectorError::io(path, io),
    }
}

/// The first non-blank line (1-based) that is not one JSON object, and why.
fn first_bad_line(path: &Path) -> std::io::Result<Option<(u64, String)>> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, open_decoded_io(path)?);
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(None);
        }
        line += 1;
        let bytes = match buf.strip_prefix(&BOM) {
            Some(rest) if line == 1 => rest,
            _ => buf.as_slice(),
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Ok(Some((line, "the line is not valid UTF-8".into())));
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(other) => {
                let kind = match other {
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                return Ok(Some((
                    line,
                    format!(
                        "expected a JSON object, found {kind} (files are read as JSON lines: one object per line)"
                    ),
                )));
            }
            Err(e) => {
                return Ok(Some((
                    line,
                    format!(
                        "not valid JSON: {e} (files are read as JSON lines: one complete object per line)"
                    ),
                )));
            }
        }
    }
}

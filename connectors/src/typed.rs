//! Text to typed Arrow: CSV files (plain or gzip, with or without a header row) streamed into
//! a staged Parquet file of the target schema, batch by batch, so memory stays flat however
//! large the export. A value that does not fit its column fails the whole file with its row
//! number, column and value.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, UInt64Array, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::FormatOptions;
use dataport_catalog::write::ParquetFileWriter;
use flate2::read::MultiGzDecoder;

use crate::error::{ConnectorError, Result};
use crate::sink::SEQ_COLUMN;

/// Rows per batch while converting.
const BATCH_ROWS: usize = 8192;

/// A CSV file to convert.
#[derive(Debug, Clone)]
pub struct CsvPart {
    pub path: PathBuf,
    /// Whether the first record names the columns (slices of a sliced export have none).
    pub has_header: bool,
}

/// What a conversion produced.
#[derive(Debug, Clone, Copy, Default)]
pub struct Converted {
    pub rows: u64,
    /// Bytes of CSV read (after decompression).
    pub text_bytes: u64,
}

/// Streams CSV parts into the staged Parquet file `out` with `schema` plus a sequence column
/// ([`SEQ_COLUMN`]) numbering rows in arrival order from `*seq` on, so a merge can keep the
/// last version of a key.
///
/// `columns` names the columns of headerless parts, in order; a part with a header is matched
/// by name, and a column missing from it is NULL. Empty fields are NULL (the source does not
/// distinguish them from empty strings).
pub fn csv_to_parquet(
    table: &str,
    parts: &[CsvPart],
    columns: &[String],
    schema: &SchemaRef,
    out: &Path,
    seq: &mut u64,
) -> Result<Converted> {
    let out_schema = with_seq(schema);
    let mut writer = ParquetFileWriter::try_new(out, Arc::clone(&out_schema))?;
    let mut total = Converted::default();
    let null = regex::Regex::new("^$").map_err(|e| ConnectorError::Decode {
        table: table.to_string(),
        what: "CSV".into(),
        message: e.to_string(),
    })?;
    for part in parts {
        let file = File::open(&part.path).map_err(|e| ConnectorError::io(&part.path, e))?;
        let counting = Counting {
            inner: open_maybe_gzip(file, &part.path)?,
            bytes: 0,
        };
        let mut reader = BufReader::with_capacity(1 << 20, counting);
        let names: Vec<String> = if part.has_header {
            match read_header(&mut reader).map_err(|e| ConnectorError::io(&part.path, e))? {
                Some(h) => h,
                None => continue,
            }
        } else {
            columns.to_vec()
        };
        let text_schema = Arc::new(Schema::new(
            names
                .iter()
                .map(|n| Field::new(n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let csv = arrow::csv::ReaderBuilder::new(text_schema)
            .with_header(false)
            .with_null_regex(null.clone())
            .with_batch_size(BATCH_ROWS)
            .build_buffered(&mut reader)
            .map_err(|e| decode_error(table, &part.path, e))?;
        for batch in csv {
            let batch = batch.map_err(|e| decode_error(table, &part.path, e))?;
            let typed = type_batch(table, &batch, schema, total.rows, *seq)?;
            *seq += batch.num_rows() as u64;
            total.rows += batch.num_rows() as u64;
            writer.write(&typed)?;
        }
        total.text_bytes += reader.get_ref().bytes;
    }
    writer.finish()?;
    Ok(total)
}

/// The Arrow type of a type name as Keboola metadata and `column_types` in
/// `data_description.md` write them: STRING/VARCHAR/TEXT → Utf8; INTEGER/BIGINT → Int64;
/// NUMERIC/DECIMAL/NUMBER → Decimal128 when `p,s` is given (p ≤ 38), else Float64;
/// FLOAT/DOUBLE → Float64; BOOLEAN; DATE; TIMESTAMP/TIMESTAMP_NTZ → Timestamp(µs);
/// TIMESTAMP_TZ → Timestamp(µs, UTC). Unknown names are text.
pub fn map_type(name: &str, length: Option<&str>) -> DataType {
    let upper = name.trim().to_ascii_uppercase();
    // `NUMBER(38,2)` style names carry their own length.
    let (base, inline) = match upper.split_once('(') {
        Some((b, rest)) => (
            b.trim().to_string(),
            Some(rest.trim_end_matches(')').to_string()),
        ),
        None => (upper.clone(), None),
    };
    match base.as_str() {
        "INTEGER" | "INT" | "BIGINT" | "SMALLINT" | "TINYINT" | "BYTEINT" => DataType::Int64,
        "NUMERIC" | "DECIMAL" | "NUMBER" => {
            decimal(inline.as_deref().or(length)).unwrap_or(DataType::Float64)
        }
        "FLOAT" | "DOUBLE" | "REAL" | "FLOAT4" | "FLOAT8" | "DOUBLE PRECISION" => DataType::Float64,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "DATE" => DataType::Date32,
        "TIMESTAMP" | "TIMESTAMP_NTZ" | "DATETIME" => {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        }
        "TIMESTAMP_TZ" | "TIMESTAMP_LTZ" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
        }
        _ => DataType::Utf8,
    }
}

fn decimal(length: Option<&str>) -> Option<DataType> {
    let (p, s) = length?.split_once(',')?;
    let p: u8 = p.trim().parse().ok()?;
    let s: i8 = s.trim().parse().ok()?;
    (1..=38).contains(&p).then_some(())?;
    (s >= 0 && s as u8 <= p).then_some(DataType::Decimal128(p, s))
}

/// `schema` plus the sequence column.
pub fn with_seq(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(SEQ_COLUMN, DataType::UInt64, false)));
    Arc::new(Schema::new(fields))
}

/// Casts a batch of text columns to `schema` (by name) and appends the sequence column.
/// `rows_before` numbers rows in error messages (1-based over the whole input).
pub fn type_batch(
    table: &str,
    text: &RecordBatch,
    schema: &SchemaRef,
    rows_before: u64,
    seq_start: u64,
) -> Result<RecordBatch> {
    let n = text.num_rows();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len() + 1);
    for field in schema.fields() {
        let array = match text.column_by_name(field.name()) {
            None => new_null_array(field.data_type(), n),
            Some(col) => cast_column(table, col, field, rows_before)?,
        };
        arrays.push(array);
    }
    arrays.push(Arc::new(UInt64Array::from_iter_values(
        seq_start..seq_start + n as u64,
    )));
    RecordBatch::try_new(with_seq(schema), arrays).map_err(|e| ConnectorError::Decode {
        table: table.to_string(),
        what: "a batch".into(),
        message: e.to_string(),
    })
}

fn cast_column(table: &str, col: &ArrayRef, field: &Field, rows_before: u64) -> Result<ArrayRef> {
    if col.data_type() == field.data_type() {
        return Ok(Arc::clone(col));
    }
    let strict = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    match cast_with_options(col, field.data_type(), &strict) {
        Ok(a) => Ok(a),
        Err(e) => {
            // Find the first value that did not convert, to say where it is.
            let lenient = cast_with_options(col, field.data_type(), &CastOptions::default()).ok();
            let bad = (0..col.len())
                .find(|&i| col.is_valid(i) && lenient.as_ref().is_none_or(|a| a.is_null(i)));
            let (row, value) = match bad {
                Some(i) => (
                    rows_before + i as u64 + 1,
                    arrow::util::display::array_value_to_string(col, i).unwrap_or_default(),
                ),
                None => (rows_before + 1, String::new()),
            };
            Err(ConnectorError::BadValue {
                table: table.to_string(),
                row,
                column: field.name().clone(),
                reason: format!(
                    "'{}' is not a valid {} ({e})",
                    truncate(&value, 80),
                    field.data_type()
                ),
            })
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn decode_error(table: &str, path: &Path, e: arrow::error::ArrowError) -> ConnectorError {
    ConnectorError::Decode {
        table: table.to_string(),
        what: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The file as a reader, decompressed when it starts with the gzip magic bytes (exports may
/// or may not be compressed, whatever was asked).
fn open_maybe_gzip(mut file: File, path: &Path) -> Result<Box<dyn Read + Send>> {
    use std::io::{Seek, SeekFrom};
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut file, &mut magic).map_err(|e| ConnectorError::io(path, e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| ConnectorError::io(path, e))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(MultiGzDecoder::new(BufReader::new(file))))
    } else {
        Ok(Box::new(file))
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Reads one RFC-4180 record (the header) from `r`; `None` at end of input.
pub fn read_header(r: &mut impl BufRead) -> std::io::Result<Option<Vec<String>>> {
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut in_quotes = false;
    let mut after_quote = false;
    let mut any = false;
    let mut byte = [0u8; 1];
    loop {
        if r.read(&mut byte)? == 0 {
            break;
        }
        any = true;
        let b = byte[0];
        if in_quotes {
            if b == b'"' {
                in_quotes = false;
                after_quote = true;
            } else {
                field.push(b);
            }
            continue;
        }
        match b {
            b'"' if after_quote => {
                // A doubled quote inside a quoted field.
                field.push(b'"');
                in_quotes = true;
                after_quote = false;
            }
            b'"' => in_quotes = true,
            b',' => {
                fields.push(String::from_utf8_lossy(&field).into_owned());
                field.clear();
                after_quote = false;
            }
            b'\n' => break,
            b'\r' => {}
            _ => {
                field.push(b);
                after_quote = false;
            }
        }
    }
    if !any {
        return Ok(None);
    }
    fields.push(String::from_utf8_lossy(&field).into_owned());
    Ok(Some(fields))
}

/// Counts bytes passing through.
struct Counting<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn header_with_quotes_and_commas() {
        let mut r =
            std::io::Cursor::new(b"\"a\",\"b,c\",\"d\"\"e\"\r\n\"1\",\"2\",\"3\"\n".to_vec());
        let h = read_header(&mut r).unwrap().unwrap();
        assert_eq!(h, vec!["a", "b,c", "d\"e"]);
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "\"1\",\"2\",\"3\"\n");
    }

    #[test]
    fn empty_input_has_no_header() {
        let mut r = std::io::Cursor::new(Vec::new());
        assert!(read_header(&mut r).unwrap().is_none());
    }
}

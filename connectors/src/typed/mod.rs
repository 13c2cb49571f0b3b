//! Text to typed Arrow: CSV files (plain or gzip, with or without a header row) streamed into
//! a staged Parquet file of the target schema, batch by batch, so memory stays bounded however
//! large the export. A value that does not fit its column fails the whole file with its row
//! number, column and value.
//!
//! By stage: `csv` reads the text (gzip by content, the header, batches of text columns),
//! `infer` decides column types from the values, `cast` types text batches to a schema
//! (declared types win), and `encode` writes the typed rows as row groups encoded in parallel.
//! [`csv_to_parquet`], here, runs them in one pass.

mod cast;
mod csv;
mod encode;
mod infer;

use std::path::{Path, PathBuf};
use std::thread::Scope;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use dataport_catalog::write::PARQUET_MAX_ROW_GROUP_ROWS;

pub(crate) use cast::{declared_types, undeclared_column};
pub use cast::{map_type, staged_schema, type_batch};
pub(crate) use csv::{READ_BUFFER, open_decoded, open_decoded_io};
pub use csv::{read_header, text_batches};
pub use infer::Inference;

use crate::error::{ConnectorError, Result};
use csv::open_part;
use encode::{FileTarget, Groups, encoder_threads};
use infer::Observer;

/// Rows per batch while converting (CSV, JSON lines and Parquet alike).
pub(crate) const BATCH_ROWS: usize = 8192;

/// Rows of a CSV file whose values decide its column types before it is converted
/// ([`Inference`]); the conversion can then check every other row against them.
pub const SAMPLE_ROWS: usize = 100_000;

/// A CSV file to convert.
#[derive(Debug, Clone)]
pub struct CsvPart {
    pub path: PathBuf,
    /// Whether the first record names the columns (slices of a sliced export have none).
    pub has_header: bool,
}

/// What a conversion produced.
#[derive(Debug, Default)]
pub struct Converted {
    pub rows: u64,
    /// Bytes of CSV read (after decompression).
    pub text_bytes: u64,
    /// With [`CsvOptions::infer`]: the column types every row of the input gives
    /// ([`Inference`]), nullable, in the header's order.
    pub inferred: Option<Schema>,
    /// With [`CsvOptions::infer`]: the first value that did not fit its column. Writing
    /// stopped there (nothing was staged) while reading went on to infer the types, so the
    /// caller can convert again with them or report this error.
    pub unfit: Option<ConnectorError>,
}

/// How [`csv_to_parquet`] numbers and checks rows.
#[derive(Debug, Clone, Copy, Default)]
pub struct CsvOptions {
    /// The sequence number of the first row: the staged file gets [`SEQ_COLUMN`](crate::sink::SEQ_COLUMN) numbering
    /// rows in arrival order, so a merge can keep the last version of a key. `None`: no
    /// sequence column (nothing to de-duplicate).
    pub seq: Option<u64>,
    /// Infer column types over every row while converting (see [`Converted::inferred`]).
    pub infer: bool,
}

/// Streams CSV parts into the staged Parquet file `out` with `schema` (plus the sequence
/// column when [`CsvOptions::seq`] is set). Parsing and typing run on the calling thread;
/// row groups are encoded on up to one thread per core ([`MAX_ENCODERS`](encode::MAX_ENCODERS)),
/// several at once, and appended to the file in order. The reader may run up to a row group
/// ahead of each encoder, so memory is bounded by a few row groups, whatever the size of the
/// input. The first [`LAYOUT_SAMPLE_ROWS`](encode::LAYOUT_SAMPLE_ROWS) typed rows choose
/// which columns get a dictionary.
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
    options: CsvOptions,
) -> Result<Converted> {
    let file = FileTarget::new(out, schema, options.seq, PARQUET_MAX_ROW_GROUP_ROWS);
    convert(table, parts, columns, schema, options, &file)
}

/// [`csv_to_parquet`] into `file` (which sets the size of row groups).
fn convert(
    table: &str,
    parts: &[CsvPart],
    columns: &[String],
    schema: &SchemaRef,
    options: CsvOptions,
    file: &FileTarget<'_>,
) -> Result<Converted> {
    let encoders = encoder_threads();
    let (read, writer) = std::thread::scope(|scope| {
        let mut groups = Groups::start(scope, encoders, table, file);
        let read = read_parts(table, parts, columns, schema, options, &mut groups, scope);
        // Complete the file only when every row arrived and fit; otherwise dropping the
        // writer removes its temporary file.
        let complete = matches!(&read, Ok(c) if c.unfit.is_none());
        let closed = groups.close(complete);
        match (read, closed) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(read), Ok(writer)) => Ok((read, writer)),
        }
    })?;
    if let Some(writer) = writer {
        writer.finish()?;
    }
    Ok(read)
}

/// Reads, types and sends every part's rows; see [`csv_to_parquet`]. With
/// [`CsvOptions::infer`], the types are checked on a thread of `scope` ([`Observer`]).
fn read_parts<'scope>(
    table: &str,
    parts: &[CsvPart],
    columns: &[String],
    schema: &SchemaRef,
    options: CsvOptions,
    groups: &mut Groups<'_>,
    scope: &'scope Scope<'scope, '_>,
) -> Result<Converted> {
    let mut rows = Rows::new(table, schema, options);
    for part in parts {
        let Some((names, mut reader)) = open_part(part, columns)? else {
            continue;
        };
        rows.columns(scope, part, &names)?;
        let decode = |e: ArrowError| ConnectorError::decode(table, &part.path, e);
        for batch in text_batches(&names, &mut reader).map_err(decode)? {
            rows.take(part, &batch.map_err(decode)?, groups)?;
        }
        rows.total.text_bytes += reader.get_ref().bytes;
    }
    rows.finish()
}

/// One conversion's rows as they are read: observed, typed, sent to the file and counted.
struct Rows<'a, 'scope> {
    table: &'a str,
    schema: &'a SchemaRef,
    infer: bool,
    /// With [`CsvOptions::infer`]: the inference thread, started at the first part.
    observer: Option<Observer<'scope>>,
    total: Converted,
    /// The sequence number of the next row.
    seq: Option<u64>,
    /// Once a value did not fit (with `infer`), rows are only read to infer types.
    writing: bool,
}

impl<'a, 'scope> Rows<'a, 'scope> {
    fn new(table: &'a str, schema: &'a SchemaRef, options: CsvOptions) -> Self {
        Self {
            table,
            schema,
            infer: options.infer,
            observer: None,
            total: Converted::default(),
            seq: options.seq,
            writing: true,
        }
    }

    /// A part's columns: with `infer`, the first part's start the inference thread, and the
    /// other parts must name the same.
    fn columns(
        &mut self,
        scope: &'scope Scope<'scope, '_>,
        part: &CsvPart,
        names: &[String],
    ) -> Result<()> {
        if !self.infer {
            return Ok(());
        }
        match &self.observer {
            None => self.observer = Some(Observer::start(scope, names.to_vec())),
            Some(o) if o.names != names => {
                return Err(ConnectorError::decode(
                    self.table,
                    &part.path,
                    "the parts of one input must name the same columns",
                ));
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Takes one batch of `part`'s text: observes it, and types and sends it to `groups`
    /// until a value does not fit.
    fn take(&mut self, part: &CsvPart, batch: &RecordBatch, groups: &mut Groups<'_>) -> Result<()> {
        if let Some(o) = self.observer.as_ref()
            && !o.observe(batch)
        {
            return Err(ConnectorError::decode(
                self.table,
                &part.path,
                "the type inference thread stopped unexpectedly",
            ));
        }
        if self.writing {
            match type_batch(self.table, batch, self.schema, self.total.rows, self.seq) {
                Ok(typed) => groups.send(typed)?,
                Err(e) if self.infer => {
                    self.total.unfit = Some(e);
                    self.writing = false;
                }
                Err(e) => return Err(e),
            }
        }
        let n = batch.num_rows() as u64;
        if let Some(s) = self.seq.as_mut() {
            *s += n;
        }
        self.total.rows += n;
        Ok(())
    }

    /// What the conversion read, with the types of every row when they were inferred.
    fn finish(mut self) -> Result<Converted> {
        if let Some(observer) = self.observer {
            let inferred = observer.finish().ok_or_else(|| ConnectorError::Decode {
                table: self.table.to_string(),
                what: "the column types".into(),
                message: "the type inference thread stopped unexpectedly".into(),
            })?;
            self.total.inferred = Some(inferred);
        }
        Ok(self.total)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs::File;
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field};

    use super::*;

    fn lines(rows: std::ops::Range<usize>, bad_at: Option<usize>) -> String {
        let mut csv = String::from("id,name,day\n");
        for i in rows {
            let day = if Some(i) == bad_at {
                "soon".to_string()
            } else {
                format!("2024-01-{:02}", i % 28 + 1)
            };
            csv.push_str(&format!("{i},n{},{day}\n", i % 97));
        }
        csv
    }

    /// The `id` column's values and the rows per row group; the columns with a dictionary.
    fn converted_ids(path: &Path) -> (Vec<i64>, Vec<i64>, Vec<String>) {
        use parquet::file::reader::FileReader;
        let file = File::open(path).unwrap();
        let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
        let groups = (0..reader.metadata().num_row_groups())
            .map(|i| reader.metadata().row_group(i).num_rows())
            .collect();
        let with_dictionary = reader
            .metadata()
            .row_groups()
            .first()
            .map(|group| {
                group
                    .columns()
                    .iter()
                    .filter(|c| c.dictionary_page_offset().is_some())
                    .map(|c| c.column_path().string())
                    .collect()
            })
            .unwrap_or_default();
        let batches = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(path).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        let mut ids = Vec::new();
        for batch in batches {
            let batch = batch.unwrap();
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            ids.extend(column.values().iter().copied());
        }
        (ids, groups, with_dictionary)
    }

    /// One CSV file with a header, as `id_name_day`, in row groups of `group_rows`.
    fn convert_file(input: &Path, out: &Path, group_rows: usize) -> Result<Converted> {
        let parts = [CsvPart {
            path: input.to_path_buf(),
            has_header: true,
        }];
        let (options, schema) = (CsvOptions::default(), id_name_day());
        let file = FileTarget::new(out, &schema, options.seq, group_rows);
        convert("t", &parts, &[], &schema, options, &file)
    }

    fn id_name_day() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("day", DataType::Date32, true),
        ]))
    }

    #[test]
    fn row_groups_encoded_at_once_keep_the_rows_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // two parts, the second without a header; the file opens after the layout sample,
        // in the first part, with groups that end inside batches
        let first = dir.path().join("a.csv");
        std::fs::write(&first, lines(0..70_000, None)).unwrap();
        let second = dir.path().join("b.csv");
        let rest = lines(70_000..83_456, None);
        std::fs::write(&second, rest.split_once('\n').unwrap().1).unwrap();
        let parts = [
            CsvPart {
                path: first,
                has_header: true,
            },
            CsvPart {
                path: second,
                has_header: false,
            },
        ];
        let columns = ["id", "name", "day"].map(String::from);
        let out = dir.path().join("out/t.parquet");
        let (options, schema) = (CsvOptions::default(), id_name_day());
        let file = FileTarget::new(&out, &schema, options.seq, 10_000);
        let converted = convert("t", &parts, &columns, &schema, options, &file).unwrap();
        assert_eq!(converted.rows, 83_456);
        let (ids, groups, with_dictionary) = converted_ids(&out);
        assert_eq!(ids, (0..83_456).collect::<Vec<_>>());
        assert_eq!(groups.len(), 9);
        assert!(groups[..8].iter().all(|&g| g == 10_000), "{groups:?}");
        assert_eq!(groups[8], 3_456);
        // every id is new, names and days repeat
        assert_eq!(with_dictionary, ["name", "day"]);
    }

    #[test]
    fn a_file_shorter_than_the_layout_sample_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        for rows in [0, 1, 5_000] {
            let input = dir.path().join(format!("{rows}.csv"));
            std::fs::write(&input, lines(0..rows, None)).unwrap();
            let out = dir.path().join(format!("out/{rows}.parquet"));
            let converted = convert_file(&input, &out, 2_000).unwrap();
            assert_eq!(converted.rows, rows as u64);
            let (ids, groups, _) = converted_ids(&out);
            assert_eq!(ids, (0..rows as i64).collect::<Vec<_>>());
            assert_eq!(groups.iter().sum::<i64>(), rows as i64);
        }
    }

    #[test]
    fn a_bad_value_in_a_later_group_fails_the_file_with_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.csv");
        std::fs::write(&input, lines(0..30_000, Some(25_000))).unwrap();
        let out_dir = dir.path().join("out");
        let out = out_dir.join("t.parquet");
        let err = convert_file(&input, &out, 1_000).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("25001") && message.contains("soon"),
            "{message}"
        );
        let left: Vec<_> = std::fs::read_dir(&out_dir)
            .map(|d| d.collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "no file is left behind: {left:?}");
    }
}

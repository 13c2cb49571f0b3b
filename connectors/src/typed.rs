//! Text to typed Arrow: CSV files (plain or gzip, with or without a header row) streamed into
//! a staged Parquet file of the target schema, batch by batch, so memory stays bounded however
//! large the export. A value that does not fit its column fails the whole file with its row
//! number, column and value.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray, UInt64Array, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::FormatOptions;
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};

use std::collections::BTreeMap;

use dataport_catalog::description::TableMeta;
use dataport_catalog::write::{
    EncodedRowGroup, PARQUET_MAX_ROW_GROUP_ROWS, ParquetFileWriter, ParquetLayout, RowGroupEncoder,
};
use flate2::read::MultiGzDecoder;

use crate::error::{ConnectorError, Result};
use crate::sink::SEQ_COLUMN;

/// Rows per batch while converting.
const BATCH_ROWS: usize = 8192;

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
    /// The sequence number of the first row: the staged file gets [`SEQ_COLUMN`] numbering
    /// rows in arrival order, so a merge can keep the last version of a key. `None`: no
    /// sequence column (nothing to de-duplicate).
    pub seq: Option<u64>,
    /// Infer column types over every row while converting (see [`Converted::inferred`]).
    pub infer: bool,
}

/// Most row groups encoded at once, each on its own thread.
const MAX_ENCODERS: usize = 4;

/// Rows typed before the file is opened: they decide its layout ([`ParquetLayout::for_sample`]).
const LAYOUT_SAMPLE_ROWS: usize = 8 * BATCH_ROWS;

/// Streams CSV parts into the staged Parquet file `out` with `schema` (plus the sequence
/// column when [`CsvOptions::seq`] is set). Parsing and typing run on the calling thread;
/// row groups are encoded on up to one thread per core ([`MAX_ENCODERS`]), several at once,
/// and appended to the file in order. The reader may run up to a row group ahead of each
/// encoder, so memory is bounded by a few row groups, whatever the size of the input. The
/// first [`LAYOUT_SAMPLE_ROWS`] typed rows choose which columns get a dictionary.
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
    convert(
        table,
        parts,
        columns,
        schema,
        out,
        options,
        PARQUET_MAX_ROW_GROUP_ROWS,
    )
}

/// [`csv_to_parquet`] with row groups of `group_rows` rows.
fn convert(
    table: &str,
    parts: &[CsvPart],
    columns: &[String],
    schema: &SchemaRef,
    out: &Path,
    options: CsvOptions,
    group_rows: usize,
) -> Result<Converted> {
    let encoders = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, MAX_ENCODERS);
    let file = FileTarget {
        out,
        schema: staged_schema(schema, options.seq),
        group_rows,
    };
    let (read, writer) = std::thread::scope(|scope| {
        let mut groups = Groups::start(scope, encoders, table, &file);
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

/// The staged file a conversion writes, opened once its first rows are typed.
struct FileTarget<'a> {
    out: &'a Path,
    schema: SchemaRef,
    group_rows: usize,
}

/// A row group for an encoder thread: the group, and its rows as they are read.
struct Job {
    index: usize,
    encoder: RowGroupEncoder,
    batches: Receiver<RecordBatch>,
}

/// Encodes the row groups it is given, one after the other, and hands them back by index.
fn encode_groups(jobs: Receiver<Job>, done: Sender<(usize, Result<EncodedRowGroup>)>) {
    for job in jobs {
        let Job {
            index,
            mut encoder,
            batches,
        } = job;
        let mut encoded = Ok(());
        for batch in &batches {
            encoded = encoder.write(&batch);
            if encoded.is_err() {
                break;
            }
        }
        // On an error the batch channel closes here, which stops the reader.
        drop(batches);
        let result = encoded
            .and_then(|()| encoder.finish())
            .map_err(ConnectorError::from);
        if done.send((index, result)).is_err() {
            return;
        }
    }
}

/// The reader's side of the encoders: opens the file, starts row groups, feeds the open one,
/// and appends finished groups to the file in order.
struct Groups<'scope> {
    file: &'scope FileTarget<'scope>,
    /// Open once [`LAYOUT_SAMPLE_ROWS`] rows (or all, if fewer) are typed.
    writer: Option<ParquetFileWriter>,
    /// The typed rows that choose the file's layout, until it is open.
    sample: Vec<RecordBatch>,
    sample_rows: usize,
    jobs: Vec<SyncSender<Job>>,
    workers: Vec<std::thread::ScopedJoinHandle<'scope, ()>>,
    done: Receiver<(usize, Result<EncodedRowGroup>)>,
    /// The open group's batch channel and the rows it can still take.
    open: Option<(SyncSender<RecordBatch>, usize)>,
    started: usize,
    appended: usize,
    finished: std::collections::BTreeMap<usize, EncodedRowGroup>,
    table: &'scope str,
}

impl<'scope> Groups<'scope> {
    fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        encoders: usize,
        table: &'scope str,
        file: &'scope FileTarget<'scope>,
    ) -> Self {
        let (done_tx, done) = std::sync::mpsc::channel();
        let (jobs, workers) = (0..encoders)
            .map(|_| {
                // one group waiting per encoder while it encodes another
                let (tx, rx) = sync_channel::<Job>(1);
                let done = done_tx.clone();
                (tx, scope.spawn(move || encode_groups(rx, done)))
            })
            .unzip();
        Self {
            file,
            writer: None,
            sample: Vec::new(),
            sample_rows: 0,
            jobs,
            workers,
            done,
            open: None,
            started: 0,
            appended: 0,
            finished: Default::default(),
            table,
        }
    }

    /// Adds `batch`'s rows to the file: to the layout sample until the file is open, then to
    /// the open group, starting groups as they fill.
    fn send(&mut self, batch: RecordBatch) -> Result<()> {
        if self.writer.is_none() {
            self.sample_rows += batch.num_rows();
            self.sample.push(batch);
            if self.sample_rows >= LAYOUT_SAMPLE_ROWS {
                self.open_file(self.file.group_rows)?;
            }
            return Ok(());
        }
        let rows = batch.num_rows();
        let mut offset = 0;
        while offset < rows {
            let (tx, room) = match self.open.take() {
                Some(open) => open,
                None => self.open_group()?,
            };
            let len = room.min(rows - offset);
            if tx.send(batch.slice(offset, len)).is_err() {
                // the encoder stopped on an error, which it reported
                return Err(self.failure());
            }
            offset += len;
            if room > len {
                self.open = Some((tx, room - len));
            } else {
                drop(tx);
                self.append(false)?;
            }
        }
        Ok(())
    }

    /// Opens the file with the layout the sample calls for and sends the sample to it.
    /// `horizon`: the rows the layout plans for (a row group's, or all of a file shorter
    /// than the sample).
    fn open_file(&mut self, horizon: usize) -> Result<()> {
        let sample = std::mem::take(&mut self.sample);
        let schema = &self.file.schema;
        // a sample that cannot be joined only loses the layout choice
        let layout = arrow::compute::concat_batches(schema, &sample)
            .map(|rows| ParquetLayout::for_sample(&rows, horizon))
            .unwrap_or_default();
        let writer =
            ParquetFileWriter::try_new_with_layout(self.file.out, Arc::clone(schema), &layout)?
                .with_row_group_rows(self.file.group_rows);
        self.writer = Some(writer);
        sample.into_iter().try_for_each(|batch| self.send(batch))
    }

    fn writer(&mut self) -> Result<&mut ParquetFileWriter> {
        match self.writer.as_mut() {
            Some(writer) => Ok(writer),
            None => Err(ConnectorError::Decode {
                table: self.table.to_string(),
                what: self.file.out.display().to_string(),
                message: "a row group was started before its file was opened".into(),
            }),
        }
    }

    fn open_group(&mut self) -> Result<(SyncSender<RecordBatch>, usize)> {
        let encoder = self.writer()?.row_group()?;
        let room = encoder.room();
        // the reader may run a whole group ahead of a busy encoder
        let (tx, batches) = sync_channel(room.div_ceil(BATCH_ROWS) + 1);
        let job = Job {
            index: self.started,
            encoder,
            batches,
        };
        let worker = self.started % self.jobs.len();
        if self.jobs[worker].send(job).is_err() {
            return Err(self.failure());
        }
        self.started += 1;
        Ok((tx, room))
    }

    /// Appends the groups that are done, in order; with `wait`, every group started.
    fn append(&mut self, wait: bool) -> Result<()> {
        loop {
            while let Some(group) = self.finished.remove(&self.appended) {
                self.writer()?.append_row_group(group)?;
                self.appended += 1;
            }
            let next = if wait && self.appended < self.started {
                self.done.recv().map_err(|_| self.stopped())?
            } else {
                match self.done.try_recv() {
                    Ok(next) => next,
                    Err(_) => return Ok(()),
                }
            };
            let (index, group) = next;
            self.finished.insert(index, group?);
        }
    }

    /// Closes the open group, appends every group when `complete`, and stops the encoders.
    /// Returns the file to finish when `complete`.
    fn close(mut self, complete: bool) -> Result<Option<ParquetFileWriter>> {
        // a file shorter than the sample is all sample, so its rows are all there will be
        let opened = if complete && self.writer.is_none() {
            self.open_file(self.sample_rows.min(self.file.group_rows))
        } else {
            Ok(())
        };
        self.open = None;
        // Encoders still take the groups queued for them, then end; so waiting below ends
        // even when one of them died.
        self.jobs.clear();
        let appended = opened.and_then(|()| if complete { self.append(true) } else { Ok(()) });
        // join every worker, also after one that panicked
        let mut panicked = false;
        for worker in self.workers.drain(..) {
            panicked |= worker.join().is_err();
        }
        if panicked {
            return Err(ConnectorError::Decode {
                table: self.table.to_string(),
                what: self.file.out.display().to_string(),
                message: "a Parquet encoder thread panicked".into(),
            });
        }
        appended?;
        Ok(if complete { self.writer.take() } else { None })
    }

    /// The error an encoder reported, once a channel to it closed. Stops the encoders.
    fn failure(&mut self) -> ConnectorError {
        self.jobs.clear();
        self.open = None;
        while let Ok((_, result)) = self.done.recv() {
            if let Err(e) = result {
                return e;
            }
        }
        self.stopped()
    }

    fn stopped(&self) -> ConnectorError {
        ConnectorError::Decode {
            table: self.table.to_string(),
            what: self.file.out.display().to_string(),
            message: "a Parquet encoder thread stopped unexpectedly".into(),
        }
    }
}

/// Text batches waiting for the inference thread.
const OBSERVE_QUEUE: usize = 16;

/// [`Inference`] on a thread of its own (the reader is the conversion's longest thread).
struct Observer<'scope> {
    names: Vec<String>,
    batches: SyncSender<RecordBatch>,
    thread: std::thread::ScopedJoinHandle<'scope, Inference>,
}

impl<'scope> Observer<'scope> {
    fn start<'env>(scope: &'scope std::thread::Scope<'scope, 'env>, names: Vec<String>) -> Self {
        let (batches, received) = sync_channel::<RecordBatch>(OBSERVE_QUEUE);
        let mut inference = Inference::new(names.clone());
        let thread = scope.spawn(move || {
            for batch in received {
                inference.observe(&batch);
            }
            inference
        });
        Self {
            names,
            batches,
            thread,
        }
    }

    fn observe(&self, batch: &RecordBatch) -> bool {
        self.batches.send(batch.clone()).is_ok()
    }

    /// The types of every value observed.
    fn finish(self) -> Option<Schema> {
        drop(self.batches);
        self.thread.join().ok().map(|i| i.schema())
    }
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
    scope: &'scope std::thread::Scope<'scope, '_>,
) -> Result<Converted> {
    let mut observer: Option<Observer<'scope>> = None;
    let mut total = Converted::default();
    let mut seq = options.seq;
    // Once a value did not fit (with `infer`), rows are only read to infer types.
    let mut writing = true;
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
        if options.infer {
            match &observer {
                None => observer = Some(Observer::start(scope, names.clone())),
                Some(o) if o.names != names => {
                    return Err(ConnectorError::Decode {
                        table: table.to_string(),
                        what: part.path.display().to_string(),
                        message: "the parts of one input must name the same columns".into(),
                    });
                }
                Some(_) => {}
            }
        }
        for batch in
            text_batches(&names, &mut reader).map_err(|e| decode_error(table, &part.path, e))?
        {
            let batch = batch.map_err(|e| decode_error(table, &part.path, e))?;
            if let Some(o) = observer.as_ref()
                && !o.observe(&batch)
            {
                return Err(ConnectorError::Decode {
                    table: table.to_string(),
                    what: part.path.display().to_string(),
                    message: "the type inference thread stopped unexpectedly".into(),
                });
            }
            if writing {
                match type_batch(table, &batch, schema, total.rows, seq) {
                    Ok(typed) => groups.send(typed)?,
                    Err(e) if options.infer => {
                        total.unfit = Some(e);
                        writing = false;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(s) = seq.as_mut() {
                *s += batch.num_rows() as u64;
            }
            total.rows += batch.num_rows() as u64;
        }
        total.text_bytes += reader.get_ref().bytes;
    }
    if let Some(observer) = observer {
        let inferred = observer.finish().ok_or_else(|| ConnectorError::Decode {
            table: table.to_string(),
            what: "the column types".into(),
            message: "the type inference thread stopped unexpectedly".into(),
        })?;
        total.inferred = Some(inferred);
    }
    Ok(total)
}

/// The rows of a CSV text (after its header, if any) as batches of `names` text columns.
pub fn text_batches<R: BufRead>(
    names: &[String],
    reader: R,
) -> std::result::Result<arrow::csv::reader::BufReader<R>, arrow::error::ArrowError> {
    let text_schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    // Empty fields are NULL: the reader's default without a null pattern.
    arrow::csv::ReaderBuilder::new(text_schema)
        .with_header(false)
        .with_batch_size(BATCH_ROWS)
        .build_buffered(reader)
}

/// Column types of CSV text, decided value by value, so a sample and the whole input use one
/// rule. A column's type is the narrowest that holds every non-empty value it saw:
/// booleans (`true`/`false`, any case); integers (`-?[0-9]+` that fit 64 bits); floats
/// (decimal or exponent notation, `NaN`, `nan`, `inf`, `-inf`; integers mixed with floats are
/// floats); dates (`YYYY-MM-DD`); timestamps (`YYYY-MM-DD[T ]hh:mm:ss`, optionally with up to
/// nine fractional digits and a suffix such as a zone; dates mixed with timestamps are
/// timestamps, at the finest precision seen). Anything else, or a mix of kinds, is text; a
/// column without values is `Null`. These are Arrow's CSV inference rules, with ASCII digits.
#[derive(Debug, Clone)]
pub struct Inference {
    names: Vec<String>,
    /// Per column, one bit per kind of value seen ([`kind`]).
    seen: Vec<u16>,
}

const KIND_BOOLEAN: u16 = 1 << 0;
const KIND_INTEGER: u16 = 1 << 1;
const KIND_FLOAT: u16 = 1 << 2;
const KIND_DATE: u16 = 1 << 3;
const KIND_SECONDS: u16 = 1 << 4;
const KIND_MILLIS: u16 = 1 << 5;
const KIND_MICROS: u16 = 1 << 6;
const KIND_NANOS: u16 = 1 << 7;
const KIND_TEXT: u16 = 1 << 8;

impl Inference {
    /// Nothing seen yet for the columns `names`.
    pub fn new(names: Vec<String>) -> Self {
        let seen = vec![0; names.len()];
        Self { names, seen }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Takes in a batch of text columns, in the order of the names.
    pub fn observe(&mut self, text: &RecordBatch) {
        for (seen, column) in self.seen.iter_mut().zip(text.columns()) {
            if *seen & KIND_TEXT != 0 {
                continue;
            }
            let Some(values) = column.as_any().downcast_ref::<StringArray>() else {
                *seen |= KIND_TEXT;
                continue;
            };
            let (offsets, bytes, nulls) =
                (values.value_offsets(), values.value_data(), values.nulls());
            for (i, range) in offsets.windows(2).enumerate() {
                if nulls.is_some_and(|n| n.is_null(i)) {
                    continue;
                }
                let value = bytes
                    .get(range[0] as usize..range[1] as usize)
                    .unwrap_or_default();
                *seen |= kind_expecting(value, *seen);
                if *seen & KIND_TEXT != 0 {
                    break;
                }
            }
        }
    }

    /// The columns with their types so far (all nullable).
    pub fn schema(&self) -> Schema {
        Schema::new(
            self.names
                .iter()
                .zip(&self.seen)
                .map(|(n, seen)| Field::new(n, type_of(*seen), true))
                .collect::<Vec<_>>(),
        )
    }
}

/// The type of a column that saw the kinds `seen`.
fn type_of(seen: u16) -> DataType {
    const TEMPORAL: u16 = KIND_DATE | KIND_SECONDS | KIND_MILLIS | KIND_MICROS | KIND_NANOS;
    match seen {
        0 => DataType::Null,
        KIND_BOOLEAN => DataType::Boolean,
        KIND_INTEGER => DataType::Int64,
        KIND_FLOAT | 0b110 => DataType::Float64,
        t if t & !TEMPORAL == 0 => {
            if t & KIND_NANOS != 0 {
                DataType::Timestamp(TimeUnit::Nanosecond, None)
            } else if t & KIND_MICROS != 0 {
                DataType::Timestamp(TimeUnit::Microsecond, None)
            } else if t & KIND_MILLIS != 0 {
                DataType::Timestamp(TimeUnit::Millisecond, None)
            } else if t & KIND_SECONDS != 0 {
                DataType::Timestamp(TimeUnit::Second, None)
            } else {
                DataType::Date32
            }
        }
        _ => DataType::Utf8,
    }
}

/// [`kind`], trying first the one kind a column saw so far (`seen`), which most values repeat.
fn kind_expecting(b: &[u8], seen: u16) -> u16 {
    let expected = match seen {
        KIND_INTEGER => is_integer(b) && fits_i64(b),
        KIND_FLOAT => is_float(b),
        KIND_DATE => is_date(b),
        _ => false,
    };
    if expected { seen } else { kind(b) }
}

/// The kind of one non-empty value (kinds exclude each other, so the order of the checks
/// only matters for speed).
fn kind(b: &[u8]) -> u16 {
    if b.first() == Some(&b'"') {
        KIND_TEXT
    } else if is_integer(b) {
        if fits_i64(b) { KIND_INTEGER } else { KIND_TEXT }
    } else if is_float(b) || matches!(b, b"NaN" | b"nan" | b"inf" | b"-inf") {
        KIND_FLOAT
    } else if is_date(b) {
        KIND_DATE
    } else if let Some(k) = timestamp_kind(b) {
        k
    } else if b.eq_ignore_ascii_case(b"true") || b.eq_ignore_ascii_case(b"false") {
        KIND_BOOLEAN
    } else {
        KIND_TEXT
    }
}

/// Whether an integer (`-?[0-9]+`) fits 64 bits.
fn fits_i64(b: &[u8]) -> bool {
    b.len() < 19 || std::str::from_utf8(b).is_ok_and(|s| s.parse::<i64>().is_ok())
}

/// The number of ASCII digits at the start of `b`.
fn digits(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// `-?[0-9]+`
fn is_integer(b: &[u8]) -> bool {
    let b = b.strip_prefix(b"-").unwrap_or(b);
    !b.is_empty() && digits(b) == b.len()
}

/// `-?(([0-9]*\.[0-9]+|[0-9]+\.[0-9]*)([eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)`
fn is_float(b: &[u8]) -> bool {
    let b = b.strip_prefix(b"-").unwrap_or(b);
    let whole = digits(b);
    let mut rest = &b[whole..];
    let mut mantissa_digits = whole;
    let dotted = rest.first() == Some(&b'.');
    if dotted {
        let fraction = digits(&rest[1..]);
        mantissa_digits += fraction;
        rest = &rest[1 + fraction..];
    }
    if mantissa_digits == 0 {
        return false;
    }
    match rest.first() {
        None => dotted,
        Some(b'e' | b'E') => {
            let exp = &rest[1..];
            let exp = exp
                .strip_prefix(b"-")
                .or_else(|| exp.strip_prefix(b"+"))
                .unwrap_or(exp);
            !exp.is_empty() && digits(exp) == exp.len()
        }
        Some(_) => false,
    }
}

/// `YYYY-MM-DD` by shape (digits and dashes; the value is checked by the cast).
fn is_date(b: &[u8]) -> bool {
    b.len() == 10 && date_prefix(b)
}

fn date_prefix(b: &[u8]) -> bool {
    b.len() >= 10
        && digits(&b[..4]) == 4
        && b[4] == b'-'
        && digits(&b[5..7]) == 2
        && b[7] == b'-'
        && digits(&b[8..10]) == 2
}

/// `YYYY-MM-DD[T ]hh:mm:ss`, then nothing, a suffix that does not start with a digit or `.`,
/// or `.` and 1–9 fractional digits (the precision) and such a suffix. A suffix holds no line
/// break after its first character.
fn timestamp_kind(b: &[u8]) -> Option<u16> {
    if b.len() < 19
        || !date_prefix(b)
        || !matches!(b[10], b'T' | b' ')
        || digits(&b[11..13]) != 2
        || b[13] != b':'
        || digits(&b[14..16]) != 2
        || b[16] != b':'
        || digits(&b[17..19]) != 2
    {
        return None;
    }
    let suffix_ok = |s: &[u8]| s.len() <= 1 || !s[1..].contains(&b'\n');
    let rest = &b[19..];
    match rest.first() {
        None => Some(KIND_SECONDS),
        Some(b'.') => {
            let fraction = digits(&rest[1..]);
            let suffix = &rest[1 + fraction..];
            if !suffix_ok(suffix) {
                return None;
            }
            match fraction {
                1..=3 => Some(KIND_MILLIS),
                4..=6 => Some(KIND_MICROS),
                7..=9 => Some(KIND_NANOS),
                _ => None,
            }
        }
        Some(c) if c.is_ascii_digit() => None,
        Some(_) => suffix_ok(rest).then_some(KIND_SECONDS),
    }
}

/// The description's `column_types` as Arrow types: they win over what a source says or what
/// inference finds, in every connector.
pub(crate) fn declared_types(meta: Option<&TableMeta>) -> BTreeMap<String, DataType> {
    meta.map(|m| {
        m.column_types
            .iter()
            .map(|(column, type_name)| (column.clone(), map_type(type_name, None)))
            .collect()
    })
    .unwrap_or_default()
}

/// The first column of `declared` the source does not have (`has` tells which it has): a
/// declaration that matches nothing is a mistake in the description, refused by the caller.
pub(crate) fn undeclared_column(
    declared: &BTreeMap<String, DataType>,
    has: impl Fn(&str) -> bool,
) -> Option<&str> {
    declared.keys().map(String::as_str).find(|c| !has(c))
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

/// The schema of a staged file of `schema`'s rows: plus the sequence column when the rows are
/// numbered (`seq` is the first row's number).
pub fn staged_schema(schema: &SchemaRef, seq: Option<u64>) -> SchemaRef {
    if seq.is_none() {
        return Arc::clone(schema);
    }
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(SEQ_COLUMN, DataType::UInt64, false)));
    Arc::new(Schema::new(fields))
}

/// Casts a batch of text columns to `schema` (by name) and appends the sequence column
/// numbering rows from `seq_start`, if given. `rows_before` numbers rows in error messages
/// (1-based over the whole input).
pub fn type_batch(
    table: &str,
    text: &RecordBatch,
    schema: &SchemaRef,
    rows_before: u64,
    seq_start: Option<u64>,
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
    if let Some(start) = seq_start {
        arrays.push(Arc::new(UInt64Array::from_iter_values(
            start..start + n as u64,
        )));
    }
    let out_schema = staged_schema(schema, seq_start);
    RecordBatch::try_new(out_schema, arrays).map_err(|e| ConnectorError::Decode {
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

    /// The type `values` (one per row, none empty) give one column, by [`Inference`] and by
    /// Arrow's own CSV inference.
    fn both_inferences(values: &[&str]) -> (DataType, DataType) {
        let csv = format!("c\n{}\n", values.join("\n"));
        let (arrow_schema, _) = arrow::csv::reader::Format::default()
            .with_header(true)
            .infer_schema(csv.as_bytes(), None)
            .unwrap();
        let mut inference = Inference::new(vec!["c".into()]);
        let mut reader = std::io::Cursor::new(csv.into_bytes());
        read_header(&mut reader).unwrap();
        for batch in text_batches(&["c".to_string()], reader).unwrap() {
            inference.observe(&batch.unwrap());
        }
        (
            inference.schema().field(0).data_type().clone(),
            arrow_schema.field(0).data_type().clone(),
        )
    }

    #[test]
    fn inference_follows_arrows_csv_rules() {
        let single = [
            "1",
            "-1",
            "007",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "12345678901234567890",
            "1.5",
            ".5",
            "5.",
            "-0.25",
            "1e5",
            "1E-5",
            "-1.5e+3",
            "1.5e",
            "e5",
            ".",
            "-",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "Infinity",
            "true",
            "FALSE",
            "True",
            "yes",
            "2020-01-01",
            "2020-1-01",
            "2020-01-01x",
            "2020-01-01T10:00:00",
            "2020-01-01 10:00:00",
            "2020-01-01T10:00:00Z",
            "2020-01-01T10:00:00+02:00",
            "2020-01-01T10:00:00.1",
            "2020-01-01T10:00:00.123Z",
            "2020-01-01T10:00:00.1234",
            "2020-01-01T10:00:00.123456789",
            "2020-01-01T10:00:00.1234567890",
            "2020-01-01T10:00:001",
            "2020-01-01T10:00",
            "abc",
            " 1",
            "1 ",
        ];
        for v in single {
            let (ours, arrows) = both_inferences(&[v]);
            assert_eq!(ours, arrows, "{v:?}");
        }
        let mixed: [&[&str]; 7] = [
            &["1", "2.5"],
            &["1", "true"],
            &["2020-01-01", "2020-01-01T10:00:00"],
            &["2020-01-01T10:00:00", "2020-01-01T10:00:00.123456"],
            &["2020-01-01", "1"],
            &["1", "NaN"],
            &["1", "x", "2"],
        ];
        for values in mixed {
            let (ours, arrows) = both_inferences(values);
            assert_eq!(ours, arrows, "{values:?}");
        }
    }

    #[test]
    fn a_column_without_values_has_no_type_yet() {
        let mut inference = Inference::new(vec!["a".into(), "b".into()]);
        let mut reader = std::io::Cursor::new(b"1,\n2,\n".to_vec());
        for batch in text_batches(&["a".into(), "b".into()], &mut reader).unwrap() {
            inference.observe(&batch.unwrap());
        }
        let schema = inference.schema();
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        assert_eq!(schema.field(1).data_type(), &DataType::Null);
    }

    #[test]
    fn empty_input_has_no_header() {
        let mut r = std::io::Cursor::new(Vec::new());
        assert!(read_header(&mut r).unwrap().is_none());
    }

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
        let options = CsvOptions::default();
        convert("t", &parts, &[], &id_name_day(), out, options, group_rows)
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
        let converted = convert(
            "t",
            &parts,
            &columns,
            &id_name_day(),
            &out,
            CsvOptions::default(),
            10_000,
        )
        .unwrap();
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

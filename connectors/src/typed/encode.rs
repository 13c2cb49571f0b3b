//! Write stage: typed rows into the staged Parquet file, row groups encoded in parallel, in order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use dataport_catalog::write::{EncodedRowGroup, ParquetFileWriter, ParquetLayout, RowGroupEncoder};

use super::{BATCH_ROWS, staged_schema};
use crate::error::{ConnectorError, Result};

/// Most row groups encoded at once, each on its own thread.
const MAX_ENCODERS: usize = 4;

/// Rows typed before the file is opened: they decide its layout ([`ParquetLayout::for_sample`]).
const LAYOUT_SAMPLE_ROWS: usize = 8 * BATCH_ROWS;

/// Encoder threads for one file: one per core, at most [`MAX_ENCODERS`].
pub(super) fn encoder_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, MAX_ENCODERS)
}

/// The staged file a conversion writes, opened once its first rows are typed.
pub(super) struct FileTarget<'a> {
    out: &'a Path,
    schema: SchemaRef,
    group_rows: usize,
}

impl<'a> FileTarget<'a> {
    /// `out`, of `schema`'s rows (numbered from `seq`, if given), in row groups of
    /// `group_rows` rows.
    pub(super) fn new(
        out: &'a Path,
        schema: &SchemaRef,
        seq: Option<u64>,
        group_rows: usize,
    ) -> Self {
        Self {
            out,
            schema: staged_schema(schema, seq),
            group_rows,
        }
    }
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
pub(super) struct Groups<'scope> {
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
    finished: BTreeMap<usize, EncodedRowGroup>,
    table: &'scope str,
}

impl<'scope> Groups<'scope> {
    pub(super) fn start<'env>(
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
    pub(super) fn send(&mut self, batch: RecordBatch) -> Result<()> {
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
    pub(super) fn close(mut self, complete: bool) -> Result<Option<ParquetFileWriter>> {
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

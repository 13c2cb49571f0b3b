//! Read stage: CSV text decoded (gzip by content), its header, and its rows as text batches.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use flate2::read::MultiGzDecoder;

use super::{BATCH_ROWS, CsvPart};
use crate::error::{ConnectorError, Result};

/// Read buffer size.
pub(crate) const READ_BUFFER: usize = 1 << 20;

/// The file's bytes, decompressed when it starts with the gzip magic bytes (exports and drops
/// may or may not be compressed, whatever their name or request says).
pub(crate) fn open_decoded_io(path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 2];
    let mut filled = 0;
    while filled < magic.len() {
        match file.read(&mut magic[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    file.seek(SeekFrom::Start(0))?;
    if filled == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(MultiGzDecoder::new(BufReader::new(file))))
    } else {
        Ok(Box::new(file))
    }
}

/// [`open_decoded_io`], its errors naming the file.
pub(crate) fn open_decoded(path: &Path) -> Result<Box<dyn Read + Send>> {
    open_decoded_io(path).map_err(|e| ConnectorError::io(path, e))
}

/// A part's decoded text, counting the bytes read.
pub(super) type PartReader = BufReader<Counting<Box<dyn Read + Send>>>;

/// Opens a part past its header: the names of its columns (its header's, or `columns` when
/// it has none) and the reader of its rows. `None`: the part has a header but no text at all.
pub(super) fn open_part(
    part: &CsvPart,
    columns: &[String],
) -> Result<Option<(Vec<String>, PartReader)>> {
    let counting = Counting {
        inner: open_decoded(&part.path)?,
        bytes: 0,
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER, counting);
    let names = if part.has_header {
        match read_header(&mut reader).map_err(|e| ConnectorError::io(&part.path, e))? {
            Some(h) => h,
            None => return Ok(None),
        }
    } else {
        columns.to_vec()
    };
    Ok(Some((names, reader)))
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

/// Counts bytes passing through.
pub(super) struct Counting<R> {
    inner: R,
    /// Bytes read so far.
    pub(super) bytes: u64,
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

//! Type stage: column types inferred from CSV values ([`Inference`]), on a thread ([`Observer`]).

use std::sync::mpsc::{SyncSender, sync_channel};

use arrow::array::{Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

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

/// Text batches waiting for the inference thread.
const OBSERVE_QUEUE: usize = 16;

/// [`Inference`] on a thread of its own (the reader is the conversion's longest thread).
pub(super) struct Observer<'scope> {
    /// The columns observed, in order.
    pub(super) names: Vec<String>,
    batches: SyncSender<RecordBatch>,
    thread: std::thread::ScopedJoinHandle<'scope, Inference>,
}

impl<'scope> Observer<'scope> {
    pub(super) fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        names: Vec<String>,
    ) -> Self {
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

    /// Queues `batch` for the thread; `false` when the thread stopped.
    pub(super) fn observe(&self, batch: &RecordBatch) -> bool {
        self.batches.send(batch.clone()).is_ok()
    }

    /// The types of every value observed.
    pub(super) fn finish(self) -> Option<Schema> {
        drop(self.batches);
        self.thread.join().ok().map(|i| i.schema())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::typed::{read_header, text_batches};

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
}

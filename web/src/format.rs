//! Result encodings: JSON, NDJSON, CSV, Arrow IPC stream, Parquet.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use axum::http::HeaderMap;
use bytes::Bytes;

use crate::error::ApiError;

/// An output format of `POST /api/v1/query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    NdJson,
    Csv,
    Arrow,
    Parquet,
}

impl Format {
    const ALL: [Format; 5] = [
        Format::Json,
        Format::NdJson,
        Format::Csv,
        Format::Arrow,
        Format::Parquet,
    ];

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::NdJson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Arrow => "application/vnd.apache.arrow.stream",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::NdJson => "ndjson",
            Self::Csv => "csv",
            Self::Arrow => "arrow",
            Self::Parquet => "parquet",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "json" => Some(Self::Json),
            "ndjson" | "jsonl" => Some(Self::NdJson),
            "csv" => Some(Self::Csv),
            "arrow" | "ipc" | "arrows" => Some(Self::Arrow),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }

    fn from_media_type(media: &str) -> Option<Self> {
        match media.trim().to_ascii_lowercase().as_str() {
            "application/json" | "application/*" | "*/*" => Some(Self::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(Self::NdJson)
            }
            "text/csv" | "text/*" => Some(Self::Csv),
            "application/vnd.apache.arrow.stream" => Some(Self::Arrow),
            "application/vnd.apache.parquet" | "application/parquet" => Some(Self::Parquet),
            _ => None,
        }
    }

    /// `?format=` wins; else the first acceptable media type of `Accept` (by q-value); else JSON.
    pub fn negotiate(query: Option<&str>, headers: &HeaderMap) -> Result<Self, ApiError> {
        if let Some(name) = query {
            return Self::from_name(name).ok_or_else(|| {
                ApiError::not_acceptable(format!(
                    "unknown format '{name}'; use one of {}",
                    Self::ALL.map(Self::name).join(", ")
                ))
            });
        }
        let Some(accept) = headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty())
        else {
            return Ok(Self::Json);
        };
        let mut ranges: Vec<(f32, usize, &str)> = accept
            .split(',')
            .enumerate()
            .map(|(i, part)| {
                let mut pieces = part.split(';');
                let media = pieces.next().unwrap_or("").trim();
                let q = pieces
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (q, i, media)
            })
            .filter(|(q, _, _)| *q > 0.0)
            .collect();
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranges
            .iter()
            .find_map(|(_, _, m)| Self::from_media_type(m))
            .ok_or_else(|| {
                ApiError::not_acceptable(format!(
                    "cannot answer with '{accept}'; acceptable: {}",
                    Self::ALL.map(Self::content_type).join(", ")
                ))
            })
    }

    /// A streaming encoder for this format (JSON is buffered under a row cap by the caller).
    pub fn encoder(self, schema: &SchemaRef) -> Result<Box<dyn Encoder>, ArrowError> {
        Ok(match self {
            Self::Json => Box::new(JsonArrayEncoder::default()),
            Self::NdJson => Box::new(NdJsonEncoder),
            Self::Csv => Box::new(CsvEncoder {
                schema: Arc::clone(schema),
            }),
            Self::Arrow => Box::new(ArrowEncoder {
                writer: arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?,
            }),
            Self::Parquet => Box::new(ParquetEncoder::try_new(schema)?),
        })
    }
}

/// Turns batches into body chunks.
pub trait Encoder: Send {
    /// Bytes that open the body (header row, IPC schema, magic).
    fn begin(&mut self) -> Result<Bytes, ArrowError>;
    /// Bytes for one batch (may be empty while a row group fills).
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, ArrowError>;
    /// Bytes that close the body.
    fn finish(&mut self) -> Result<Bytes, ArrowError>;
}

fn json_writer<F: arrow::json::writer::JsonFormat>(
    buf: &mut Vec<u8>,
) -> arrow::json::Writer<&mut Vec<u8>, F> {
    arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_encoder_factory(crate::json::factory())
        .build::<_, F>(buf)
}

/// One JSON array of objects.
#[derive(Default)]
struct JsonArrayEncoder {
    started: bool,
}

impl Encoder for JsonArrayEncoder {
    fn begin(&mut self) -> Result<Bytes, ArrowError> {
        Ok(Bytes::from_static(b"["))
    }
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(Bytes::new());
        }
        let mut buf = Vec::new();
        {
            let mut w = json_writer::<arrow::json::writer::JsonArray>(&mut buf);
            w.write(batch)?;
            w.finish()?;
        }
        // Strip the per-batch brackets and join batches with commas.
        let inner = buf
            .strip_prefix(b"[")
            .and_then(|b| b.strip_suffix(b"]"))
            .unwrap_or(&buf);
        let mut out = Vec::with_capacity(inner.len() + 1);
        if self.started {
            out.push(b',');
        }
        out.extend_from_slice(inner);
        self.started = true;
        Ok(Bytes::from(out))
    }
    fn finish(&mut self) -> Result<Bytes, ArrowError> {
        Ok(Bytes::from_static(b"]\n"))
    }
}

struct NdJsonEncoder;

impl Encoder for NdJsonEncoder {
    fn begin(&mut self) -> Result<Bytes, ArrowError> {
        Ok(Bytes::new())
    }
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, ArrowError> {
        let mut buf = Vec::new();
        {
            let mut w = json_writer::<arrow::json::writer::LineDelimited>(&mut buf);
            w.write(batch)?;
            w.finish()?;
        }
        Ok(Bytes::from(buf))
    }
    fn finish(&mut self) -> Result<Bytes, ArrowError> {
        Ok(Bytes::new())
    }
}

struct CsvEncoder {
    schema: SchemaRef,
}

impl CsvEncoder {
    fn write(batch: &RecordBatch, header: bool) -> Result<Bytes, ArrowError> {
        let mut buf = Vec::new();
        {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(header)
                .build(&mut buf);
            w.write(batch)?;
        }
        Ok(Bytes::from(buf))
    }
}

impl Encoder for CsvEncoder {
    fn begin(&mut self) -> Result<Bytes, ArrowError> {
        Self::write(&RecordBatch::new_empty(Arc::clone(&self.schema)), true)
    }
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, ArrowError> {
        Self::write(batch, false)
    }
    fn finish(&mut self) -> Result<Bytes, ArrowError> {
        Ok(Bytes::new())
    }
}

struct ArrowEncoder {
    writer: arrow::ipc::writer::StreamWriter<Vec<u8>>,
}

impl ArrowEncoder {
    fn drain(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.writer.get_mut()))
    }
}

impl Encoder for ArrowEncoder {
    fn begin(&mut self) -> Result<Bytes, ArrowError> {
        Ok(self.drain())
    }
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, ArrowError> {
        self.writer.write(batch)?;
        Ok(self.drain())
    }
    fn finish(&mut self) -> Result<Bytes, ArrowError> {
        self.writer.finish()?;
        Ok(self.drain())
    }
}

/// Parquet, written row group by row group so memory stays bounded.
struct ParquetEncoder {
    writer: Option<parquet::arrow::ArrowWriter<Vec<u8>>>,
}

/// Flush a row group once this much is buffered.
const PARQUET_ROW_GROUP_BYTES: usize = 64 << 20;

impl ParquetEncoder {
    fn try_new(schema: &SchemaRef) -> Result<Self, ArrowError> {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(
                parquet::basic::ZstdLevel::default(),
            ))
            .build();
        let writer =
            parquet::arrow::ArrowWriter::try_new(Vec::new(), Arc::clone(schema), Some(props))
                .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
        Ok(Self {
            writer: Some(writer),
        })
    }

    fn writer(&mut self) -> Result<&mut parquet::arrow::ArrowWriter<Vec<u8>>, ArrowError> {
        self.writer.as_mut().ok_or_else(|| {
            ArrowError::InvalidArgumentError("parquet writer already finished".into())
        })
    }
}

impl Encoder for ParquetEncoder {
    fn begin(&mut self) -> Result<Bytes, ArrowError> {
        Ok(Bytes::new())
    }
    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, ArrowError> {
        let w = self.writer()?;
        w.write(batch)
            .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
        if w.in_progress_size() >= PARQUET_ROW_GROUP_BYTES {
            w.flush()
                .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
        }
        Ok(Bytes::from(std::mem::take(w.inner_mut())))
    }
    fn finish(&mut self) -> Result<Bytes, ArrowError> {
        let w = self.writer.take().ok_or_else(|| {
            ArrowError::InvalidArgumentError("parquet writer already finished".into())
        })?;
        let rest = w
            .into_inner()
            .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
        Ok(Bytes::from(rest))
    }
}

/// A batch's values as text, row by row (nulls empty): what the portal's tables show.
pub(crate) fn text_rows(
    batch: &arrow::record_batch::RecordBatch,
) -> Result<Vec<Vec<String>>, ApiError> {
    let options = arrow::util::display::FormatOptions::default().with_null("");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::internal(format!("formatting a result: {e}")))?;
    Ok((0..batch.num_rows())
        .map(|i| formatters.iter().map(|f| f.value(i).to_string()).collect())
        .collect())
}

//! Query tickets: self-contained, so any `DoGet` can run them without server-side state.
//!
//! A ticket is JSON (`{"v":1,"id":…,"sql":…,"params":…}`) inside the Flight SQL
//! `TicketStatementQuery.statement_handle`. Bound parameter values travel as a one-row Arrow
//! IPC stream. A ticket grants nothing: it runs as the caller who presents it, through the
//! same policy as any other statement. The `id` names the execution for cancellation.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::error::invalid;

const VERSION: u8 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct QueryTicket {
    v: u8,
    /// Names this execution for `CancelFlightInfo`.
    pub(crate) id: String,
    pub(crate) sql: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<String>,
}

impl QueryTicket {
    pub(crate) fn new(sql: String, params: &[ScalarValue]) -> Result<Self, Status> {
        let params = if params.is_empty() {
            None
        } else {
            Some(STANDARD.encode(encode_params(params)?))
        };
        Ok(Self {
            v: VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            sql,
            params,
        })
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, Status> {
        serde_json::to_vec(self)
            .map_err(|e| crate::error::internal(format!("encoding a ticket: {e}")))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Status> {
        let t: Self = serde_json::from_slice(bytes).map_err(|_| {
            invalid("the ticket is not a Dataport query ticket; use the ticket from GetFlightInfo unchanged")
        })?;
        if t.v != VERSION {
            return Err(invalid(format!(
                "ticket version {} is not supported; call GetFlightInfo again",
                t.v
            )));
        }
        Ok(t)
    }

    pub(crate) fn params(&self) -> Result<Vec<ScalarValue>, Status> {
        let Some(encoded) = &self.params else {
            return Ok(Vec::new());
        };
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| invalid("the ticket's parameters are not valid base64"))?;
        let reader = StreamReader::try_new(bytes.as_slice(), None)
            .map_err(|e| invalid(format!("the ticket's parameters are not Arrow IPC: {e}")))?;
        let mut batches = Vec::new();
        for batch in reader {
            batches
                .push(batch.map_err(|e| {
                    invalid(format!("the ticket's parameters are unreadable: {e}"))
                })?);
        }
        match batches.as_slice() {
            [batch] => row_values(batch),
            _ => Err(invalid("the ticket's parameters must be one batch")),
        }
    }
}

/// The values of a one-row batch, one per column.
pub(crate) fn row_values(batch: &RecordBatch) -> Result<Vec<ScalarValue>, Status> {
    if batch.num_rows() != 1 {
        return Err(invalid(format!(
            "bind exactly one row of parameter values to a query ({} rows were sent)",
            batch.num_rows()
        )));
    }
    batch
        .columns()
        .iter()
        .map(|c| {
            ScalarValue::try_from_array(c, 0)
                .map_err(|e| invalid(format!("unsupported parameter value: {e}")))
        })
        .collect()
}

fn encode_params(params: &[ScalarValue]) -> Result<Vec<u8>, Status> {
    let internal =
        |e: &dyn std::fmt::Display| crate::error::internal(format!("encoding parameters: {e}"));
    let mut fields = Vec::with_capacity(params.len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(params.len());
    for (i, value) in params.iter().enumerate() {
        let array = value.to_array().map_err(|e| internal(&e))?;
        fields.push(Field::new(
            format!("${}", i + 1),
            array.data_type().clone(),
            true,
        ));
        columns.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| internal(&e))?;
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &schema).map_err(|e| internal(&e))?;
    writer.write(&batch).map_err(|e| internal(&e))?;
    writer.finish().map_err(|e| internal(&e))?;
    drop(writer);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_params() {
        let params = vec![
            ScalarValue::Int64(Some(7)),
            ScalarValue::Utf8(Some("x".into())),
            ScalarValue::Null,
            ScalarValue::Float64(None),
        ];
        let t = QueryTicket::new("select $1, $2, $3, $4".into(), &params).unwrap();
        let back = QueryTicket::decode(&t.encode().unwrap()).unwrap();
        assert_eq!(back.sql, "select $1, $2, $3, $4");
        assert_eq!(back.id, t.id);
        assert_eq!(back.params().unwrap(), params);
        let plain = QueryTicket::new("select 1".into(), &[]).unwrap();
        assert!(
            QueryTicket::decode(&plain.encode().unwrap())
                .unwrap()
                .params()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn garbage_is_invalid_argument() {
        for bytes in [
            &b"nope"[..],
            b"{}",
            br#"{"v":9,"id":"a","sql":"x"}"#,
            br#"{"v":1,"id":"a","sql":"x","params":"!!"}"#,
        ] {
            let err = QueryTicket::decode(bytes).and_then(|t| t.params().map(|_| t));
            assert_eq!(err.unwrap_err().code(), tonic::Code::InvalidArgument);
        }
    }
}

//! JSON-RPC 2.0 as MCP uses it: one message per HTTP body or stdio line (MCP 2025-06-18
//! dropped batches), requests with an id, notifications without one.

use serde::Serialize;
use serde_json::{Value, json};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a JSON-RPC 2.0 request or notification.
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// The client cancelled the request (`notifications/cancelled`).
pub const REQUEST_CANCELLED: i64 = -32800;
/// A resource that does not exist, or that the caller may not read (MCP's code).
pub const RESOURCE_NOT_FOUND: i64 = -32002;
/// Too many calls or queries at once for this token; `data.retry_after_seconds` says when.
pub const RATE_LIMITED: i64 = -32029;
/// The request's size is over the server's limit.
pub const REQUEST_TOO_LARGE: i64 = -32013;
/// A request that needs an initialized session came before `initialize`.
pub const NOT_INITIALIZED: i64 = -32010;
/// The client asked for a protocol version this server does not speak.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// A request's id: a string or a number (null is not an id).
pub type Id = Value;

/// A JSON-RPC error object. Its `message` is written for the client (often a model) to act on.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{message} (JSON-RPC error {code})")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            METHOD_NOT_FOUND,
            format!(
                "unknown method '{method}': this server offers initialize, ping, tools/*, resources/* and prompts/*"
            ),
        )
    }

    pub fn cancelled() -> Self {
        Self::new(REQUEST_CANCELLED, "the request was cancelled by the client")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(INTERNAL_ERROR, message)
    }

    pub fn rate_limited(message: impl Into<String>, retry_after_seconds: u64) -> Self {
        Self::new(RATE_LIMITED, message)
            .with_data(json!({ "retry_after_seconds": retry_after_seconds }))
    }
}

/// One message from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Request {
        id: Id,
        method: String,
        params: Option<Value>,
    },
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// A response to a request of ours (this server sends none, so it is dropped).
    Response { id: Id },
}

impl Incoming {
    /// Reads one message. The error carries the id to answer with (null when unknown), as
    /// JSON-RPC asks.
    pub fn parse(bytes: &[u8]) -> Result<Self, (Id, RpcError)> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            (
                Value::Null,
                RpcError::new(PARSE_ERROR, format!("the body is not valid JSON: {e}")),
            )
        })?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, (Id, RpcError)> {
        let invalid = |id: Id, why: &str| {
            (
                id,
                RpcError::new(
                    INVALID_REQUEST,
                    format!("not a JSON-RPC 2.0 message: {why}"),
                ),
            )
        };
        let Value::Object(mut object) = value else {
            return Err(match value {
                Value::Array(_) => invalid(
                    Value::Null,
                    "batches are not accepted (MCP 2025-06-18 and later); send one message per request",
                ),
                _ => invalid(Value::Null, "expected a JSON object"),
            });
        };
        let id = object.remove("id");
        let id_ok = |id: &Option<Value>| match id {
            Some(Value::String(_)) => true,
            Some(Value::Number(n)) => n.is_i64() || n.is_u64(),
            _ => false,
        };
        let answer_id = if id_ok(&id) {
            id.clone().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(invalid(answer_id, "\"jsonrpc\" must be \"2.0\""));
        }
        let method = object.remove("method");
        let params = object.remove("params");
        if let Some(p) = &params
            && !p.is_object()
            && !p.is_array()
        {
            return Err(invalid(answer_id, "\"params\" must be an object"));
        }
        match (method, id) {
            (Some(Value::String(method)), None) => Ok(Self::Notification { method, params }),
            (Some(Value::String(method)), id @ Some(_)) if id_ok(&id) => Ok(Self::Request {
                id: id.unwrap_or(Value::Null),
                method,
                params,
            }),
            (Some(Value::String(_)), Some(_)) => Err(invalid(
                Value::Null,
                "\"id\" must be a string or an integer (not null)",
            )),
            (Some(_), _) => Err(invalid(answer_id, "\"method\" must be a string")),
            (None, Some(id)) if object.contains_key("result") || object.contains_key("error") => {
                Ok(Self::Response { id })
            }
            (None, _) => Err(invalid(answer_id, "\"method\" is missing")),
        }
    }
}

/// A success response.
pub fn result(id: &Id, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// An error response.
pub fn error(id: &Id, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

/// A notification from the server.
pub fn notification(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_requests_notifications_and_responses() {
        let r = Incoming::parse(br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#).unwrap();
        assert_eq!(
            r,
            Incoming::Request {
                id: json!(7),
                method: "ping".into(),
                params: None
            }
        );
        let n =
            Incoming::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(n, Incoming::Notification { .. }));
        let a = Incoming::parse(br#"{"jsonrpc":"2.0","id":"x","result":{}}"#).unwrap();
        assert_eq!(a, Incoming::Response { id: json!("x") });
    }

    #[test]
    fn refuses_what_is_not_json_rpc() {
        let code = |b: &[u8]| Incoming::parse(b).unwrap_err().1.code;
        assert_eq!(code(b"{not json"), PARSE_ERROR);
        assert_eq!(
            code(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            INVALID_REQUEST
        );
        assert_eq!(code(br#"{"id":1,"method":"ping"}"#), INVALID_REQUEST);
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1,"method":3}"#),
            INVALID_REQUEST
        );
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#),
            INVALID_REQUEST
        );
        // The id is echoed when it could be read.
        let (id, _) = Incoming::parse(br#"{"jsonrpc":"1.0","id":5,"method":"ping"}"#).unwrap_err();
        assert_eq!(id, json!(5));
    }
}

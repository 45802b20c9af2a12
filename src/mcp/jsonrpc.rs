//! JSON-RPC 2.0 as MCP uses it: one message per HTTP body (MCP 2025-06-18 dropped batches),
//! read into requests, notifications and responses; errors with the spec's codes, and the
//! names Kong's `kong_ai_mcp_error_total{type}` label uses for them.

use serde_json::{json, Map, Value};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a JSON-RPC message.
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Bad parameters (MCP: an unknown tool, arguments the tool's schema refuses).
pub const INVALID_PARAMS: i64 = -32602;
/// The server failed.
pub const INTERNAL_ERROR: i64 = -32603;

/// The name of an error code, as Kong's metrics label it.
pub fn code_name(code: i64) -> &'static str {
    match code {
        PARSE_ERROR => "Parse error",
        INVALID_REQUEST => "Invalid Request",
        METHOD_NOT_FOUND => "Method not found",
        INVALID_PARAMS => "Invalid params",
        INTERNAL_ERROR => "Internal error",
        -32099..=-32000 => "Server error",
        _ => "Application error",
    }
}

/// A JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that wants an answer (`id` is a string or a number).
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// A call without an answer.
    Notification { method: String, params: Value },
    /// An answer (to a request the server sent): `result` or `error`.
    Response { id: Value, body: Value },
}

/// Why a body is not a JSON-RPC message: the error to answer with (`id`: the request's,
/// when it could be read).
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub id: Value,
    pub code: i64,
    pub message: String,
}

impl Invalid {
    fn new(id: Value, code: i64, message: impl Into<String>) -> Invalid {
        Invalid {
            id,
            code,
            message: message.into(),
        }
    }

    /// The error response for the client.
    pub fn response(&self) -> Value {
        error(&self.id, self.code, &self.message, None)
    }
}

impl Message {
    /// Reads one message from a body.
    pub fn parse(body: &[u8]) -> Result<Message, Invalid> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| Invalid::new(Value::Null, PARSE_ERROR, format!("Parse error: {e}")))?;
        Message::from_value(v)
    }

    /// Reads one message from a JSON value.
    pub fn from_value(v: Value) -> Result<Message, Invalid> {
        let Value::Object(mut o) = v else {
            let what = if v.is_array() {
                "batches are not supported (MCP 2025-06-18): send one message per request"
            } else {
                "a JSON-RPC message is an object"
            };
            return Err(Invalid::new(Value::Null, INVALID_REQUEST, what));
        };
        let id = o.remove("id");
        let id_ok = |id: &Value| id.is_string() || id.is_i64() || id.is_u64();
        if id.as_ref().is_some_and(|i| !id_ok(i)) {
            return Err(Invalid::new(
                Value::Null,
                INVALID_REQUEST,
                "'id' must be a string or an integer",
            ));
        }
        let reply_id = id.clone().unwrap_or(Value::Null);
        if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(Invalid::new(
                reply_id,
                INVALID_REQUEST,
                "'jsonrpc' must be \"2.0\"",
            ));
        }
        match (o.remove("method"), id) {
            (Some(Value::String(method)), id) => {
                let params = o.remove("params").unwrap_or(Value::Null);
                if !(params.is_null() || params.is_object() || params.is_array()) {
                    return Err(Invalid::new(
                        reply_id,
                        INVALID_REQUEST,
                        "'params' must be an object or an array",
                    ));
                }
                Ok(match id {
                    Some(id) => Message::Request { id, method, params },
                    None => Message::Notification { method, params },
                })
            }
            (Some(_), _) => Err(Invalid::new(
                reply_id,
                INVALID_REQUEST,
                "'method' must be a string",
            )),
            (None, Some(id)) if o.contains_key("result") || o.contains_key("error") => {
                Ok(Message::Response {
                    id,
                    body: Value::Object(o),
                })
            }
            (None, _) => Err(Invalid::new(
                reply_id,
                INVALID_REQUEST,
                "a JSON-RPC request needs a 'method'",
            )),
        }
    }

    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response { .. } => None,
        }
    }
}

/// A success response.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response (`data`: extra detail the spec allows).
pub fn error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut e = Map::new();
    e.insert("code".into(), json!(code));
    e.insert("message".into(), json!(message));
    if let Some(d) = data {
        e.insert("data".into(), d);
    }
    json!({"jsonrpc": "2.0", "id": id, "error": e})
}

/// An id as Kong's log writes it (a string: `"19"` for 19).
pub fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_by_kind() {
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(
            m,
            Message::Request {
                id: json!(1),
                method: "tools/list".into(),
                params: Value::Null
            }
        );
        let n =
            Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(n.method(), Some("notifications/initialized"));
        assert!(matches!(n, Message::Notification { .. }));
        let r = Message::parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert!(matches!(r, Message::Response { .. }));
    }

    #[test]
    fn bad_messages_get_the_spec_codes() {
        let e = Message::parse(b"{nope").unwrap_err();
        assert_eq!((e.code, e.id.clone()), (PARSE_ERROR, Value::Null));
        assert_eq!(e.response()["error"]["code"], -32700);
        assert_eq!(e.response()["id"], Value::Null);
        for (body, id) in [
            (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, Value::Null),
            (r#"{"id":3,"method":"ping"}"#, json!(3)),
            (r#"{"jsonrpc":"2.0","id":4,"method":7}"#, json!(4)),
            (r#"{"jsonrpc":"2.0","id":5}"#, json!(5)),
            (
                r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"2.0","id":6,"method":"ping","params":3}"#,
                json!(6),
            ),
        ] {
            let e = Message::parse(body.as_bytes()).unwrap_err();
            assert_eq!((e.code, e.id), (INVALID_REQUEST, id), "{body}");
        }
        assert_eq!(code_name(INVALID_REQUEST), "Invalid Request");
        assert_eq!(id_text(&json!(19)), "19");
        assert_eq!(id_text(&json!("x")), "x");
    }
}

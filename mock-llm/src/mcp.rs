//! A small marketplace for `ai-mcp-proxy` tests: a REST API (`…/marketplace/users`,
//! `…/marketplace/orders`) for the conversion modes, and the same data as an MCP server
//! over streamable HTTP (`…/mcp` answers JSON, `…/mcp-sse` answers SSE) for passthrough:
//! `initialize` issues an `Mcp-Session-Id` that later requests must carry, notifications
//! get 202, `GET` 405, `DELETE` ends the session. The older HTTP+SSE transport (MCP
//! 2024-11-05) is served too: `GET …/mcp-legacy/sse` opens a stream whose first event,
//! `endpoint`, names where to POST (`…/mcp-legacy/messages/?session_id=…`); each POST gets
//! 202 and its answer comes on the stream.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;

use crate::body::MockBody;
use crate::server::json_response;

/// The endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Users,
    Orders,
    /// The MCP server; answers as SSE (true) or JSON.
    Mcp(bool),
    /// The HTTP+SSE transport's stream.
    LegacyStream,
    /// The HTTP+SSE transport's message endpoint.
    LegacyPost,
}

impl Endpoint {
    /// The endpoint of a request, by path suffix.
    pub(crate) fn of(path: &str) -> Option<Endpoint> {
        let path = path.trim_end_matches('/');
        if path.ends_with("/marketplace/users") {
            Some(Endpoint::Users)
        } else if path.ends_with("/marketplace/orders") {
            Some(Endpoint::Orders)
        } else if path.ends_with("/mcp-legacy/sse") {
            Some(Endpoint::LegacyStream)
        } else if path.ends_with("/mcp-legacy/messages") {
            Some(Endpoint::LegacyPost)
        } else if path.ends_with("/mcp-sse") {
            Some(Endpoint::Mcp(true))
        } else if path.ends_with("/mcp") {
            Some(Endpoint::Mcp(false))
        } else {
            None
        }
    }
}

/// Sessions the MCP server issued and has not ended.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    streamable: Mutex<HashSet<String>>,
    /// HTTP+SSE sessions: where their answers go.
    legacy: Mutex<HashMap<String, UnboundedSender<Bytes>>>,
}

fn users() -> Value {
    json!([
        {"id": "a1b2c3d4", "name": "Alice Johnson", "email": "alice@example.com"},
        {"id": "e5f6g7h8", "name": "Bob Smith", "email": "bob@example.com"}
    ])
}

fn orders() -> Value {
    json!([
        {"id": "ord-1", "userId": "a1b2c3d4", "item": "Laptop", "price": 1200},
        {"id": "ord-2", "userId": "a1b2c3d4", "item": "Mouse", "price": 25},
        {"id": "ord-3", "userId": "e5f6g7h8", "item": "Desk", "price": 300}
    ])
}

fn query_arg(query: Option<&str>, name: &str) -> Option<String> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| crate::percent_decode(&v.replace('+', " ")))
}

/// Answers one request to an endpoint.
pub(crate) fn respond(
    endpoint: Endpoint,
    parts: &http::request::Parts,
    body: &Bytes,
    sessions: &Sessions,
    n: u64,
) -> Response<MockBody> {
    let q = parts.uri.query();
    match endpoint {
        Endpoint::Users => match query_arg(q, "id") {
            None => json_response(StatusCode::OK, &users()),
            Some(id) => match users()
                .as_array()
                .and_then(|u| u.iter().find(|x| x["id"] == id.as_str()).cloned())
            {
                Some(u) => json_response(StatusCode::OK, &u),
                None => json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("no user {id}")}),
                ),
            },
        },
        Endpoint::Orders if parts.method == Method::POST => {
            let order: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if !order.is_object() {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "an order is a JSON object"}),
                );
            }
            json_response(
                StatusCode::CREATED,
                &json!({"id": format!("ord-{}", 100 + n), "order": order}),
            )
        }
        Endpoint::Orders => {
            let Some(user) = query_arg(q, "userid") else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "userid is required"}),
                );
            };
            let mine: Vec<Value> = orders()
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o["userId"] == user.as_str())
                .cloned()
                .collect();
            json_response(StatusCode::OK, &mine)
        }
        Endpoint::Mcp(sse) => mcp(parts, body, sessions, sse, n),
        Endpoint::LegacyStream => legacy_stream(parts, sessions, n),
        Endpoint::LegacyPost => legacy_post(parts, body, sessions),
    }
}

/// Opens an HTTP+SSE session: the stream, with the `endpoint` event first.
fn legacy_stream(parts: &http::request::Parts, sessions: &Sessions, n: u64) -> Response<MockBody> {
    if parts.method != Method::GET {
        return status_only(StatusCode::METHOD_NOT_ALLOWED);
    }
    let id = format!("legacy-{n}");
    let base = parts.uri.path().trim_end_matches('/');
    let base = base.strip_suffix("/sse").unwrap_or(base);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let first = format!("event: endpoint\ndata: {base}/messages/?session_id={id}\n\n");
    let _ = tx.send(Bytes::from(first));
    if let Ok(mut map) = sessions.legacy.lock() {
        map.retain(|_, tx| !tx.is_closed());
        map.insert(id, tx);
    }
    let mut r = Response::new(MockBody::Channel(rx));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r
}

/// A message for an HTTP+SSE session: 202, and the answer on the session's stream.
fn legacy_post(
    parts: &http::request::Parts,
    body: &Bytes,
    sessions: &Sessions,
) -> Response<MockBody> {
    if parts.method != Method::POST {
        return status_only(StatusCode::METHOD_NOT_ALLOWED);
    }
    let Some(id) = query_arg(parts.uri.query(), "session_id") else {
        return text_only(StatusCode::BAD_REQUEST, "session_id is required");
    };
    let tx = sessions
        .legacy
        .lock()
        .ok()
        .and_then(|m| m.get(&id).cloned());
    let Some(tx) = tx else {
        return text_only(StatusCode::NOT_FOUND, "Could not find session");
    };
    let Ok(msg) = serde_json::from_slice::<Value>(body) else {
        return text_only(StatusCode::BAD_REQUEST, "Could not parse message");
    };
    if msg.get("id").is_some() && msg.get("method").is_some() {
        let event = format!("event: message\ndata: {}\n\n", answer(&msg));
        if tx.send(Bytes::from(event)).is_err() {
            return text_only(StatusCode::NOT_FOUND, "Could not find session");
        }
    }
    text_only(StatusCode::ACCEPTED, "Accepted")
}

fn text_only(status: StatusCode, text: &'static str) -> Response<MockBody> {
    let mut r = Response::new(MockBody::full(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn status_only(status: StatusCode) -> Response<MockBody> {
    let mut r = Response::new(MockBody::full(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// The MCP server.
fn mcp(
    parts: &http::request::Parts,
    body: &Bytes,
    sessions: &Sessions,
    sse: bool,
    n: u64,
) -> Response<MockBody> {
    let session = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let known = |s: &Option<String>| {
        s.as_ref()
            .is_some_and(|s| sessions.streamable.lock().is_ok_and(|set| set.contains(s)))
    };
    match parts.method {
        Method::GET => return status_only(StatusCode::METHOD_NOT_ALLOWED),
        Method::DELETE => {
            if let (Some(s), Ok(mut set)) = (&session, sessions.streamable.lock()) {
                set.remove(s);
            }
            return status_only(StatusCode::OK);
        }
        Method::POST => {}
        _ => return status_only(StatusCode::METHOD_NOT_ALLOWED),
    }
    let Ok(msg) = serde_json::from_slice::<Value>(body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}}),
        );
    };
    let method = msg["method"].as_str().unwrap_or("");
    let id = msg.get("id").cloned();
    if method != "initialize" && !known(&session) {
        return match session {
            Some(_) => status_only(StatusCode::NOT_FOUND),
            None => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": "Bad Request: missing Mcp-Session-Id"}}),
            ),
        };
    }
    if id.is_none() {
        // A notification (or a response).
        return status_only(StatusCode::ACCEPTED);
    }
    let reply = answer(&msg);
    let mut resp = if sse {
        let text = format!("event: message\ndata: {reply}\n\n");
        let mut r = Response::new(MockBody::full(text.into_bytes()));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r
    } else {
        json_response(StatusCode::OK, &reply)
    };
    if method == "initialize" {
        let s = format!("mock-session-{n}");
        if let Ok(mut set) = sessions.streamable.lock() {
            set.insert(s.clone());
        }
        if let Ok(v) = HeaderValue::from_str(&s) {
            resp.headers_mut().insert("mcp-session-id", v);
        }
    }
    resp
}

/// The answer to a JSON-RPC request.
fn answer(msg: &Value) -> Value {
    let method = msg["method"].as_str().unwrap_or("");
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let (result, error) = match method {
        "initialize" => (
            Some(json!({
                "protocolVersion": msg.pointer("/params/protocolVersion").cloned().unwrap_or(json!("2025-06-18")),
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": "mock-marketplace", "version": "1.0.0"}
            })),
            None,
        ),
        "ping" => (Some(json!({})), None),
        "tools/list" => (Some(json!({"tools": tool_list()})), None),
        "tools/call" => call(&msg["params"]),
        _ => (
            None,
            Some(json!({"code": -32601, "message": format!("Method not found: {method}")})),
        ),
    };
    match (result, error) {
        (Some(r), _) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
        (None, e) => json!({"jsonrpc": "2.0", "id": id, "error": e}),
    }
}

fn tool_list() -> Value {
    let none = json!({"type": "object", "properties": {}});
    json!([
        {"name": "list_users", "description": "List users", "inputSchema": none},
        {"name": "get_user", "description": "Get user",
         "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}},
        {"name": "list_orders", "description": "List orders", "inputSchema": none},
        {"name": "list_orders_for_user", "description": "List orders for users",
         "inputSchema": {"type": "object", "properties": {"userId": {"type": "string"}}, "required": ["userId"]}},
        {"name": "search_orders", "description": "Search orders by name (case-insensitive substring)",
         "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}
    ])
}

/// A tool call: its result, or a JSON-RPC error.
fn call(params: &Value) -> (Option<Value>, Option<Value>) {
    let args = &params["arguments"];
    let text = |v: Value| {
        Some(json!({"content": [{"type": "text", "text": v.to_string()}], "isError": false}))
    };
    let all = |f: &dyn Fn(&Value) -> bool| {
        Value::Array(
            orders()
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| f(o))
                .cloned()
                .collect(),
        )
    };
    match params["name"].as_str().unwrap_or("") {
        "list_users" => (text(users()), None),
        "get_user" => match users()
            .as_array()
            .and_then(|u| u.iter().find(|x| x["id"] == args["id"]).cloned())
        {
            Some(u) => (text(u), None),
            None => (
                Some(
                    json!({"content": [{"type": "text", "text": "no such user"}], "isError": true}),
                ),
                None,
            ),
        },
        "list_orders" => (text(orders()), None),
        "list_orders_for_user" => (text(all(&|o| o["userId"] == args["userId"])), None),
        "search_orders" => {
            let needle = args["name"].as_str().unwrap_or("").to_lowercase();
            (
                text(all(&|o| {
                    o["item"]
                        .as_str()
                        .unwrap_or("")
                        .to_lowercase()
                        .contains(&needle)
                })),
                None,
            )
        }
        other => (
            None,
            Some(json!({"code": -32602, "message": format!("Unknown tool: {other}")})),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn req(method: Method, uri: &str, session: Option<&str>) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        if let Some(s) = session {
            b = b.header("mcp-session-id", s);
        }
        b.body(()).unwrap().into_parts().0
    }

    async fn body(r: Response<MockBody>) -> Value {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&b).to_string();
        let json = text.strip_prefix("event: message\ndata: ").unwrap_or(&text);
        serde_json::from_str(json.trim()).unwrap()
    }

    #[tokio::test]
    async fn rest_and_mcp_answer() {
        let s = Sessions::default();
        let get = |uri: &str| {
            respond(
                Endpoint::of(uri.split('?').next().unwrap()).unwrap(),
                &req(Method::GET, uri, None),
                &Bytes::new(),
                &s,
                1,
            )
        };
        assert_eq!(
            body(get("/marketplace/users?id=a1b2c3d4")).await["name"],
            "Alice Johnson"
        );
        assert_eq!(get("/marketplace/users?id=zz").status(), 404);
        assert_eq!(
            body(get("/marketplace/orders?userid=e5f6g7h8")).await[0]["item"],
            "Desk"
        );
        assert_eq!(get("/marketplace/orders").status(), 400);

        let post = |msg: Value, session: Option<&str>, sse: bool| {
            respond(
                Endpoint::Mcp(sse),
                &req(Method::POST, "/mcp", session),
                &Bytes::from(msg.to_string()),
                &s,
                7,
            )
        };
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
        assert_eq!(post(list.clone(), None, false).status(), 400);
        assert_eq!(post(list.clone(), Some("nope"), false).status(), 404);
        let init = post(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}),
            None,
            false,
        );
        let id = init.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            body(init).await["result"]["serverInfo"]["name"],
            "mock-marketplace"
        );
        assert_eq!(
            post(
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                Some(&id),
                false
            )
            .status(),
            202
        );
        assert_eq!(
            body(post(list, Some(&id), true)).await["result"]["tools"][0]["name"],
            "list_users"
        );
        let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "search_orders", "arguments": {"name": "LAP"}}});
        let text = body(post(call, Some(&id), false)).await["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.contains("Laptop") && !text.contains("Desk"), "{text}");
        let unknown =
            json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "x"}});
        assert_eq!(
            body(post(unknown, Some(&id), false)).await["error"]["code"],
            -32602
        );
        assert_eq!(
            respond(
                Endpoint::Mcp(false),
                &req(Method::GET, "/mcp", Some(&id)),
                &Bytes::new(),
                &s,
                8
            )
            .status(),
            405
        );
        assert_eq!(
            respond(
                Endpoint::Mcp(false),
                &req(Method::DELETE, "/mcp", Some(&id)),
                &Bytes::new(),
                &s,
                9
            )
            .status(),
            200
        );
        let ping = json!({"jsonrpc": "2.0", "id": 5, "method": "ping"});
        assert_eq!(
            post(ping, Some(&id), false).status(),
            404,
            "the session ended"
        );
    }

    #[tokio::test]
    async fn the_http_sse_transport_answers_on_the_stream() {
        let s = Sessions::default();
        let open = respond(
            Endpoint::LegacyStream,
            &req(Method::GET, "/base/mcp-legacy/sse", None),
            &Bytes::new(),
            &s,
            4,
        );
        assert_eq!(open.headers()[CONTENT_TYPE], "text/event-stream");
        let mut stream = open.into_body();
        let first = stream.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            &first[..],
            b"event: endpoint\ndata: /base/mcp-legacy/messages/?session_id=legacy-4\n\n"
        );
        let post = |uri: &str, msg: &str| {
            respond(
                Endpoint::LegacyPost,
                &req(Method::POST, uri, None),
                &Bytes::from(msg.to_string()),
                &s,
                5,
            )
        };
        let list = r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#;
        let uri = "/base/mcp-legacy/messages/?session_id=legacy-4";
        assert_eq!(post(uri, list).status(), 202);
        let event = stream.frame().await.unwrap().unwrap().into_data().unwrap();
        let text = String::from_utf8_lossy(&event).to_string();
        let data = text.strip_prefix("event: message\ndata: ").unwrap();
        let v: Value = serde_json::from_str(data.trim()).unwrap();
        assert_eq!(v["id"], 9);
        assert_eq!(v["result"]["tools"][0]["name"], "list_users");
        let other = "/base/mcp-legacy/messages/?session_id=nope";
        assert_eq!(post(other, list).status(), 404);
        assert_eq!(post(uri, "{").status(), 400);
        drop(stream);
        assert_eq!(post(uri, list).status(), 404, "the stream is gone");
    }
}

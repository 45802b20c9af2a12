//! OpenAI's Realtime API over WebSocket: `GET …/realtime?model=…` (Azure's
//! `/openai/realtime?api-version=…&deployment=…` too) with `Upgrade: websocket`. The
//! handshake is recorded as a `GET` (path with its query, headers), so tests see the model
//! and credentials that arrived. The session: `session.created` on connect,
//! `session.update` → `session.updated`, `conversation.item.create` →
//! `conversation.item.created`, `response.create` → `response.created`, the output item and
//! content part, one text delta per word, then `response.done` with `usage`. Event names
//! follow the GA protocol (`response.output_text.delta`), or the beta one
//! (`response.text.delta`) when the client sent `OpenAI-Beta: realtime=v1`.
//!
//! Faults: `x-mock: status=NNN` on the handshake refuses it with that status (and an
//! OpenAI error, or an HTML page with `non_json`); a
//! `[mock:status=NNN]` marker in the conversation or the response's instructions makes the
//! response fail (`response.done` with status `failed`); `[mock:reply=…]` and
//! `[mock:chunks=N]` shape the answer; a client event `{"type": "mock.close"}` makes the
//! mock close the connection with code 4000 and reason "mock close".

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::body::MockBody;
use crate::faults::Directives;
use crate::prompt::Reply;
use crate::MockState;

/// Whether `req` opens a Realtime session.
pub(crate) fn wanted(req: &Request<Incoming>) -> bool {
    req.method() == Method::GET
        && req.uri().path().ends_with("/realtime")
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the handshake (recorded first) and serves the session.
pub(crate) fn accept(state: Arc<MockState>, mut req: Request<Incoming>) -> Response<MockBody> {
    let (parts, _) = Request::new(()).into_parts();
    let mut recorded = parts;
    recorded.method = req.method().clone();
    recorded.uri = req.uri().clone();
    recorded.headers = req.headers().clone();
    state.record(&recorded, &Bytes::new());
    let mut directives = Directives::default();
    for v in req.headers().get_all("x-mock") {
        if let Ok(v) = v.to_str() {
            directives.apply_header(v);
        }
    }
    if let Some(status) = directives
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| !s.is_success())
    {
        let (body, content_type) = if directives.non_json {
            ("<html>refused</html>".to_owned(), "text/html")
        } else {
            let body = json!({"error": {"message": "mock refusal",
                "type": "invalid_request_error", "code": status.as_u16()}});
            (body.to_string(), "application/json")
        };
        let mut r = Response::new(MockBody::full(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        return r;
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        let mut r = Response::new(MockBody::full(Bytes::from_static(b"missing key")));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let beta = req
        .headers()
        .get_all("openai-beta")
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("realtime=v1")));
    let model = query_arg(req.uri(), "model")
        .or_else(|| query_arg(req.uri(), "deployment"))
        .unwrap_or_else(|| "gpt-realtime".into());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(io) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
        Session::new(model, beta).serve(ws).await;
    });
    let mut r = Response::new(MockBody::full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// A query argument as sent (model and deployment names need no decoding).
fn query_arg(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// One connection's state: its session and conversation.
struct Session {
    session: Map<String, Value>,
    items: Vec<Value>,
    beta: bool,
    next: u64,
}

impl Session {
    fn new(model: String, beta: bool) -> Session {
        let mut session = Map::new();
        session.insert("id".into(), json!("sess_mock"));
        session.insert("object".into(), json!("realtime.session"));
        session.insert("model".into(), json!(model));
        session.insert("modalities".into(), json!(["text", "audio"]));
        session.insert("instructions".into(), json!(""));
        if !beta {
            session.insert("type".into(), json!("realtime"));
        }
        Session {
            session,
            items: Vec::new(),
            beta,
            next: 0,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_mock{}", self.next)
    }

    /// Sends `event` with a fresh `event_id`; false once the client is gone.
    async fn send(&mut self, ws: &mut Ws, mut event: Value) -> bool {
        event["event_id"] = json!(self.id("event"));
        ws.send(Message::Text(event.to_string().into()))
            .await
            .is_ok()
    }

    async fn serve(mut self, mut ws: Ws) {
        let created = json!({"type": "session.created", "session": self.session.clone()});
        if !self.send(&mut ws, created).await {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(_) => return,
                _ => continue,
            };
            let Ok(Value::Object(event)) = serde_json::from_str::<Value>(text.as_str()) else {
                let e = json!({"type": "error", "error": {"type": "invalid_request_error",
                    "code": "invalid_json", "message": "not JSON"}});
                if !self.send(&mut ws, e).await {
                    return;
                }
                continue;
            };
            if !self.event(&mut ws, event).await {
                return;
            }
        }
    }

    /// One client event; false once the connection is over.
    async fn event(&mut self, ws: &mut Ws, event: Map<String, Value>) -> bool {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "session.update" => {
                if let Some(Value::Object(s)) = event.get("session") {
                    for (k, v) in s {
                        self.session.insert(k.clone(), v.clone());
                    }
                }
                let e = json!({"type": "session.updated", "session": self.session.clone()});
                self.send(ws, e).await
            }
            "conversation.item.create" => {
                let mut item = event.get("item").cloned().unwrap_or_else(|| json!({}));
                if item.get("id").is_none() {
                    item["id"] = json!(self.id("item"));
                }
                item["object"] = json!("realtime.item");
                item["status"] = json!("completed");
                let previous = self.items.last().and_then(|i| i.get("id")).cloned();
                self.items.push(item.clone());
                let e = json!({"type": "conversation.item.created",
                    "previous_item_id": previous, "item": item});
                self.send(ws, e).await
            }
            "response.create" => self.respond(ws, event.get("response")).await,
            "mock.close" => {
                let frame = CloseFrame {
                    code: CloseCode::Library(4000),
                    reason: "mock close".into(),
                };
                let _ = ws.close(Some(frame)).await;
                // Waits for the client's close reply, as a server should.
                while let Some(Ok(_)) = ws.next().await {}
                false
            }
            _ => true,
        }
    }

    /// Streams one response and its `response.done`.
    async fn respond(&mut self, ws: &mut Ws, params: Option<&Value>) -> bool {
        let mut directives = Directives::default();
        let mut prompt_words = 0u64;
        let instructions = params
            .and_then(|p| p.get("instructions"))
            .or_else(|| self.session.get("instructions"))
            .and_then(Value::as_str)
            .unwrap_or("");
        directives.apply_markers(instructions);
        prompt_words += instructions.split_whitespace().count() as u64;
        for item in &self.items {
            for part in item["content"].as_array().into_iter().flatten() {
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    directives.apply_markers(t);
                    prompt_words += t.split_whitespace().count() as u64;
                }
            }
        }
        let id = self.id("resp");
        let item_id = self.id("item");
        let mut response = json!({"id": id, "object": "realtime.response",
            "status": "in_progress", "output": [], "usage": null});
        let created = json!({"type": "response.created", "response": response.clone()});
        if !self.send(ws, created).await {
            return false;
        }
        let input = prompt_words.max(1);
        if let Some(status) = directives.status.filter(|s| *s >= 400) {
            response["status"] = json!("failed");
            response["status_details"] = json!({"type": "failed", "error": {
                "type": "server_error", "code": status, "message": "mock failure"}});
            response["usage"] = usage(input, 0);
            return self
                .send(ws, json!({"type": "response.done", "response": response}))
                .await;
        }
        let reply = Reply::new(
            directives
                .reply
                .as_deref()
                .unwrap_or("Hello from the realtime mock."),
            directives.chunks,
        );
        let (part_type, delta, done) = if self.beta {
            ("text", "response.text.delta", "response.text.done")
        } else {
            (
                "output_text",
                "response.output_text.delta",
                "response.output_text.done",
            )
        };
        let mut item = json!({"id": item_id, "object": "realtime.item", "type": "message",
            "status": "in_progress", "role": "assistant", "content": []});
        let at = json!({"response_id": id, "item_id": item_id, "output_index": 0,
            "content_index": 0});
        let mut events = vec![
            json!({"type": "response.output_item.added", "response_id": id,
                "output_index": 0, "item": item.clone()}),
            with(
                &at,
                json!({"type": "response.content_part.added",
                "part": {"type": part_type, "text": ""}}),
            ),
        ];
        for piece in reply.pieces() {
            events.push(with(&at, json!({"type": delta, "delta": piece})));
        }
        let part = json!({"type": part_type, "text": reply.text()});
        events.push(with(&at, json!({"type": done, "text": reply.text()})));
        events.push(with(
            &at,
            json!({"type": "response.content_part.done", "part": part.clone()}),
        ));
        item["status"] = json!("completed");
        item["content"] = json!([part]);
        events.push(
            json!({"type": "response.output_item.done", "response_id": id,
            "output_index": 0, "item": item.clone()}),
        );
        for e in events {
            if !self.send(ws, e).await {
                return false;
            }
        }
        self.items.push(item.clone());
        response["status"] = json!("completed");
        response["output"] = json!([item]);
        response["usage"] = usage(input, reply.tokens());
        self.send(ws, json!({"type": "response.done", "response": response}))
            .await
    }
}

/// `at`'s members added to `event`.
fn with(at: &Value, mut event: Value) -> Value {
    if let (Some(a), Some(e)) = (at.as_object(), event.as_object_mut()) {
        for (k, v) in a {
            e.insert(k.clone(), v.clone());
        }
    }
    event
}

/// A Realtime `usage` (text only: no audio tokens).
fn usage(input: u64, output: u64) -> Value {
    json!({"total_tokens": input + output, "input_tokens": input, "output_tokens": output,
        "input_token_details": {"cached_tokens": 0, "text_tokens": input, "audio_tokens": 0},
        "output_token_details": {"text_tokens": output, "audio_tokens": 0}})
}

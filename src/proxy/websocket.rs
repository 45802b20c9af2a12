//! Responses over WebSocket (Codex's default transport) on `llm/v1/responses` routes.
//!
//! Every upstream is bridged: each `response.create` frame becomes one streamed HTTP
//! Responses request through the route's whole plugin chain (so auth, retries, provider
//! translation, logs and usage work as for HTTP, one log record per response), and its SSE
//! events go back one per text frame. The connection keeps each response's conversation
//! (input and output items), so a frame that names a `previous_response_id` and carries
//! only the new items is sent upstream as the whole conversation. `generate: false`
//! warm-ups are answered here. Upstream errors become in-band `{"type": "error", "status"}`
//! frames.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::body::ClientBody;
use super::response::ProxyBody;
use super::ws_relay::{self, Client, RelayRoute};
use crate::config::entities::Route;
use crate::config::plugins::{LlmFormat, RouteType, StreamingMode};
use crate::error::{ErrorShape, GatewayError};
use crate::gateway::Snapshot;
use crate::plugins::request_transformer::UpstreamRequest;
use crate::plugins::{key_auth, Plugin};
use crate::rt::clock::millis_since_epoch;

use super::answer::kong_error;
use super::exchange::Exchange;
use super::headers::query_pairs;
use super::Conn;
use crate::gateway::Gateway;
use crate::llm::sse::Framer;
use crate::plugins::ai_proxy::AiProxy;

/// Where the upgrade request came from (the bridged requests look the same).
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub peer: SocketAddr,
    pub scheme: &'static str,
    pub local_port: u16,
}

/// The conversations one connection keeps, in bytes of JSON; the oldest go first.
const HISTORY_LIMIT: usize = 16 * 1024 * 1024;

/// Frames when the route sets no body limit.
const DEFAULT_FRAME_LIMIT: usize = 16 * 1024 * 1024;

/// A WebSocket upgrade on a route: refused before the upgrade when key-auth would refuse
/// the client (each frame is checked again when it is proxied), accepted on a route whose
/// ai-proxy serves the Responses API, relayed to the upstream's own WebSocket mode when
/// nothing per request stands in between.
#[allow(clippy::too_many_arguments)]
pub(super) fn upgrade(
    gw: &Arc<Gateway>,
    snap: &Arc<Snapshot>,
    (route, index): (&Route, usize),
    parts: &Parts,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    ai: Option<Arc<AiProxy>>,
    log: Exchange,
    c: &Conn<'_>,
) -> Response<ProxyBody> {
    let shape = match ai {
        Some(_) => ErrorShape::OpenAi,
        None => ErrorShape::Kong,
    };
    if let Some(Plugin::KeyAuth(ka)) = route
        .chain
        .first()
        .and_then(|i| snap.plugins.get(*i))
        .map(|p| &p.plugin)
    {
        let mut probe = UpstreamRequest {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: query_pairs(parts.uri.query()),
            headers: parts.headers.clone(),
            body: Bytes::new(),
        };
        let now = (millis_since_epoch() / 1000) as i64;
        if let Err(refusal) = key_auth::authenticate(ka, snap, &mut probe, now) {
            let e = GatewayError::Unauthorized {
                message: refusal.message(),
                challenge: key_auth::challenge(ka),
            };
            return kong_error(e, shape, log, snap.clone());
        }
    }
    // The relay talks to the upstream directly, so only a route without per-request
    // access plugins (keys, quotas, prompt plugins) may use it; any other goes through
    // the bridge, which runs the whole plugin chain for every request. (The relay's
    // handshake carries the client's headers as they are: request-transformer rules
    // do not apply to its frames, as before.)
    let plain_chain = !snap.consumer_plugins
        && route.chain.iter().all(|i| {
            snap.plugins.get(*i).is_some_and(|p| {
                matches!(
                    p.plugin,
                    Plugin::AiProxy(_)
                        | Plugin::FileLog(_)
                        | Plugin::HttpLog(_)
                        | Plugin::Prometheus(_)
                        | Plugin::RequestTransformer(_)
                )
            })
        });
    let service = route.service.and_then(|s| snap.services.get(s));
    match ai.as_ref().filter(|a| serves(a)) {
        Some(a) => accept(
            gw,
            parts,
            upgrade,
            a.max_body,
            Origin {
                peer: c.peer,
                scheme: c.scheme,
                local_port: c.local_port,
            },
            (plain_chain && ws_relay::relayable(a)).then(|| {
                let mut record = Request::new(());
                *record.method_mut() = parts.method.clone();
                *record.uri_mut() = parts.uri.clone();
                *record.headers_mut() = parts.headers.clone();
                (
                    RelayRoute {
                        ai: a.clone(),
                        route: index,
                        snapshot: snap.clone(),
                        trust: service.and_then(|s| s.tls.clone()),
                        analytics: gw.analytics.get().cloned(),
                        mode: ws_relay::Mode::Responses,
                        path: None,
                        model: None,
                        admission: None,
                    },
                    Client {
                        ip: c.ip.clone(),
                        scheme: c.scheme,
                        host: c.host.to_string(),
                        parts: record.into_parts().0,
                    },
                )
            }),
        )
        .unwrap_or_else(|e| kong_error(e, shape, log, snap.clone())),
        None => kong_error(GatewayError::UpgradeRefused, shape, log, snap.clone()),
    }
}

/// Whether WebSocket clients can be served on this plugin's route: a Responses target, the
/// OpenAI format on the client side, and streaming allowed.
pub fn serves(ai: &AiProxy) -> bool {
    ai.targets
        .iter()
        .any(|t| t.route_type == RouteType::Responses)
        && matches!(ai.llm_format, LlmFormat::Openai)
        && ai.streaming != StreamingMode::Deny
}

/// Answers the upgrade (101) and starts the session; errors are the handshake's.
pub fn accept(
    gw: &Arc<Gateway>,
    parts: &Parts,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    max_body: u64,
    origin: Origin,
    relay: Option<(RelayRoute, Client)>,
) -> Result<Response<ProxyBody>, GatewayError> {
    let accept_key = accept_key(parts)?;
    let upgrade = upgrade.ok_or(GatewayError::UpgradeRefused)?;
    let limit = frame_limit(max_body);
    let template = Template {
        uri: parts.uri.clone(),
        headers: forwardable(&parts.headers),
    };
    let gw = gw.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => {
                let ws = server_socket(io, limit).await;
                if let Some((route, client)) = relay {
                    match ws_relay::connect(&route, &template.headers).await {
                        Ok(upstream) => {
                            tracing::info!(path = template.uri.path(), "websocket session relayed");
                            ws_relay::run(ws, upstream, route, client).await;
                            tracing::info!(path = template.uri.path(), "websocket relay ended");
                            return;
                        }
                        Err(e) => tracing::info!(
                            path = template.uri.path(),
                            "upstream WebSocket unavailable ({e}); bridging over HTTP"
                        ),
                    }
                }
                Session::new(gw, template, origin).run(ws).await;
            }
            Err(e) => tracing::debug!("websocket upgrade failed: {e}"),
        }
    });
    Ok(switching(&accept_key))
}

/// The handshake's `Sec-WebSocket-Accept`, or why the upgrade request is refused.
pub(super) fn accept_key(parts: &Parts) -> Result<String, GatewayError> {
    let refused = |why: &str| GatewayError::BadRequest(format!("WebSocket upgrade: {why}"));
    if parts.method != Method::GET {
        return Err(refused("the method must be GET"));
    }
    let version = parts
        .headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok());
    if version != Some("13") {
        return Err(GatewayError::UpgradeRefused);
    }
    let key = parts
        .headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| refused("Sec-WebSocket-Key is missing"))?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// The largest client frame: the route's `max_request_body_size`, else 16 MiB.
pub(super) fn frame_limit(max_body: u64) -> usize {
    if max_body == 0 {
        DEFAULT_FRAME_LIMIT
    } else {
        usize::try_from(max_body).unwrap_or(DEFAULT_FRAME_LIMIT)
    }
}

/// The client's side of an accepted upgrade, its frames bounded by `limit`.
pub(super) async fn server_socket(io: hyper::upgrade::Upgraded, limit: usize) -> Ws {
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, Some(config)).await
}

/// The 101 answer to an upgrade.
pub(super) fn switching(accept_key: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::from(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// The client's headers that the bridged requests carry (not the handshake's).
fn forwardable(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.len());
    for (name, value) in h {
        let n = name.as_str();
        let skip = n.starts_with("sec-websocket-")
            || matches!(
                n,
                "upgrade"
                    | "connection"
                    | "content-length"
                    | "transfer-encoding"
                    | "te"
                    | "keep-alive"
                    | "accept"
                    | "accept-encoding"
            );
        if !skip {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The request every bridged response starts from.
struct Template {
    uri: http::Uri,
    headers: HeaderMap,
}

struct Session {
    gw: Arc<Gateway>,
    template: Template,
    origin: Origin,
    /// Response id → the whole conversation up to and including that response.
    history: VecDeque<(String, Vec<Value>, usize)>,
    history_bytes: usize,
}

pub(super) type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// What a bridged response ended with.
enum Ended {
    Done,
    ClientGone,
}

impl Session {
    fn new(gw: Arc<Gateway>, template: Template, origin: Origin) -> Session {
        Session {
            gw,
            template,
            origin,
            history: VecDeque::new(),
            history_bytes: 0,
        }
    }

    async fn run(mut self, mut ws: Ws) {
        let path = self.template.uri.path().to_string();
        tracing::info!(path, peer = %self.origin.peer, "websocket session started");
        let mut frames = 0u64;
        self.serve(&mut ws, &mut frames).await;
        tracing::info!(path, frames, "websocket session ended");
    }

    async fn serve(&mut self, ws: &mut Ws, frames: &mut u64) {
        while let Some(msg) = ws.next().await {
            let text = match msg {
                Ok(Message::Text(t)) => t,
                Ok(Message::Binary(_)) => {
                    let e = error_frame(
                        400,
                        "binary frames are not supported: send JSON text frames",
                    );
                    if ws.send(e).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(Message::Close(_)) => return,
                Ok(_) => continue,
                Err(WsError::Capacity(e)) => {
                    let _ = ws.send(too_large(&e)).await;
                    return;
                }
                Err(_) => return,
            };
            *frames += 1;
            match self.frame(ws, text.as_str()).await {
                Ended::Done => {}
                Ended::ClientGone => return,
            }
        }
    }

    /// One client frame.
    async fn frame(&mut self, ws: &mut Ws, text: &str) -> Ended {
        let mut event = match check_frame(text) {
            Ok(m) => m,
            Err(e) => return send(ws, e).await,
        };
        event.remove("type");
        // Some clients nest the parameters under "response".
        let mut body = match event.remove("response") {
            Some(Value::Object(inner)) => {
                let mut b = event;
                b.extend(inner);
                b
            }
            _ => event,
        };
        let input = self.conversation(&mut body);
        if body.remove("generate") == Some(Value::Bool(false)) {
            return self.warm_up(ws, &body, input).await;
        }
        body.insert("input".into(), Value::Array(input.clone()));
        body.insert("stream".into(), Value::Bool(true));
        self.bridge(ws, body, input).await
    }

    /// The whole input of a frame: the conversation behind its `previous_response_id`
    /// (when this connection has it; else the id is left for the upstream) and its items.
    fn conversation(&self, body: &mut Map<String, Value>) -> Vec<Value> {
        let mut items = Vec::new();
        let prev = body
            .get("previous_response_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(prev) = prev {
            if let Some((_, past, _)) = self.history.iter().find(|(id, _, _)| *id == prev) {
                items.extend(past.iter().cloned());
                body.remove("previous_response_id");
            }
        }
        match body.remove("input") {
            Some(Value::Array(a)) => items.extend(a),
            Some(Value::String(s)) => items.push(json!({"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": s}]})),
            _ => {}
        }
        items
    }

    fn remember(&mut self, id: String, items: Vec<Value>) {
        let size = serde_json::to_vec(&items).map(|v| v.len()).unwrap_or(0);
        self.history_bytes += size;
        self.history.push_back((id, items, size));
        while self.history_bytes > HISTORY_LIMIT && self.history.len() > 1 {
            if let Some((_, _, s)) = self.history.pop_front() {
                self.history_bytes -= s;
            }
        }
    }

    /// `generate: false`: no upstream call; the response only anchors the conversation.
    async fn warm_up(
        &mut self,
        ws: &mut Ws,
        body: &Map<String, Value>,
        input: Vec<Value>,
    ) -> Ended {
        let id = format!("resp_{}", uuid::Uuid::new_v4().simple());
        let created = super::unix_seconds();
        let mut response = json!({
            "id": id, "object": "response", "created_at": created, "status": "in_progress",
            "model": body.get("model").cloned().unwrap_or(Value::Null),
            "output": [], "usage": null,
        });
        if let Some(i) = body.get("instructions") {
            response["instructions"] = i.clone();
        }
        let started =
            json!({"type": "response.created", "sequence_number": 0, "response": response.clone()});
        if let Ended::ClientGone = send(ws, text(&started)).await {
            return Ended::ClientGone;
        }
        response["status"] = json!("completed");
        response["usage"] = json!({"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}});
        let done =
            json!({"type": "response.completed", "sequence_number": 1, "response": response});
        self.remember(id, input);
        send(ws, text(&done)).await
    }

    /// One streamed Responses request through the route; its events back as frames.
    async fn bridge(&mut self, ws: &mut Ws, body: Map<String, Value>, input: Vec<Value>) -> Ended {
        let payload = Bytes::from(serde_json::to_vec(&Value::Object(body)).unwrap_or_default());
        let mut req = Request::new(ClientBody::Ready(payload.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.template.uri.clone();
        *req.headers_mut() = self.template.headers.clone();
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(payload.len()));
        // Boxed: this future is inside the one `handle_request` spawns for the upgrade.
        let fut: std::pin::Pin<
            Box<dyn std::future::Future<Output = Response<ProxyBody>> + Send + '_>,
        > = Box::pin(super::handle_request(
            &self.gw,
            req,
            self.origin.peer,
            self.origin.scheme,
            self.origin.local_port,
        ));
        let resp = fut.await;
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut body = resp.into_body();
        if !status.is_success() || !is_sse {
            let bytes = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let error = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").cloned().or(Some(v)))
                .unwrap_or_else(|| json!({"message": String::from_utf8_lossy(&bytes)}));
            let code = if status.is_success() {
                502
            } else {
                status.as_u16()
            };
            let frame = json!({"type": "error", "status": code, "error": error});
            return send(ws, text(&frame)).await;
        }
        let mut framer = Framer::default();
        let mut completed: Option<Value> = None;
        loop {
            tokio::select! {
                frame = body.frame() => {
                    let Some(frame) = frame else { break };
                    let Ok(data) = frame.map(|f| f.into_data()) else { break };
                    let Ok(data) = data else { continue };
                    let mut out = Vec::new();
                    framer.push(&data, |e| out.push(e.data));
                    for d in out {
                        if let Some(r) = completed_response(&d) {
                            completed = Some(r);
                        }
                        if d.is_empty() || d == b"[DONE]" {
                            continue;
                        }
                        let Ok(t) = String::from_utf8(d) else { continue };
                        if ws.send(Message::Text(t.into())).await.is_err() {
                            // Dropping the body cancels the upstream request; its log
                            // record says the client went away.
                            return Ended::ClientGone;
                        }
                    }
                }
                msg = ws.next() => {
                    match msg {
                        // Pings are answered by the library; anything else waits.
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ended::ClientGone,
                        Some(Ok(_)) => {
                            let e = error_frame(409, "a response is in progress on this connection; send the next response.create after response.completed");
                            if ws.send(e).await.is_err() {
                                return Ended::ClientGone;
                            }
                        }
                    }
                }
            }
        }
        let mut rest = Vec::new();
        framer.finish(|e| rest.push(e.data));
        for d in rest {
            if let Some(r) = completed_response(&d) {
                completed = Some(r);
            }
            if d.is_empty() || d == b"[DONE]" {
                continue;
            }
            if let Ok(t) = String::from_utf8(d) {
                if ws.send(Message::Text(t.into())).await.is_err() {
                    return Ended::ClientGone;
                }
            }
        }
        if let Some(r) = completed {
            if let Some(id) = r.get("id").and_then(Value::as_str) {
                let mut items = input;
                if let Some(Value::Array(out)) = r.get("output") {
                    items.extend(out.iter().cloned());
                }
                self.remember(id.to_string(), items);
            }
        }
        Ended::Done
    }
}

/// The response of a `response.completed` event.
fn completed_response(data: &[u8]) -> Option<Value> {
    if !data.windows(18).any(|w| w == b"response.completed") {
        return None;
    }
    let v: Value = serde_json::from_slice(data).ok()?;
    (v.get("type").and_then(Value::as_str) == Some("response.completed"))
        .then(|| v.get("response").cloned())
        .flatten()
}

fn text(v: &Value) -> Message {
    Message::Text(v.to_string().into())
}

/// A client frame as both modes accept it: a JSON object of type `response.create`; else
/// the in-band 400 to answer with.
pub(super) fn check_frame(text: &str) -> Result<Map<String, Value>, Message> {
    let event = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(error_frame(
                400,
                "frames must be JSON objects with a \"type\"",
            ))
        }
    };
    match event.get("type").and_then(Value::as_str) {
        Some("response.create") => Ok(event),
        Some(other) => Err(error_frame(
            400,
            &format!("unsupported event type '{other}' (expected response.create)"),
        )),
        None => Err(error_frame(400, "the frame has no \"type\"")),
    }
}

/// The close frame for a client frame over the route's limit (1009).
pub(super) fn too_large(e: &impl std::fmt::Display) -> Message {
    let reason =
        format!("frame too large ({e}); the route's limit is config.max_request_body_size");
    Message::Close(Some(CloseFrame {
        code: CloseCode::Size,
        reason: reason.into(),
    }))
}

/// An in-band error, shaped like an HTTP error of that status.
pub(super) fn error_frame(status: u16, message: &str) -> Message {
    let kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    text(&json!({"type": "error", "status": status,
        "error": {"type": kind, "message": message, "code": null, "param": null}}))
}

async fn send(ws: &mut Ws, m: Message) -> Ended {
    match ws.send(m).await {
        Ok(()) => Ended::Done,
        Err(_) => Ended::ClientGone,
    }
}

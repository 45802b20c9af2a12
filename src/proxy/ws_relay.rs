//! Relaying Responses WebSocket connections to an upstream that speaks the WebSocket mode
//! itself (OpenAI): frames pass both ways unchanged, the route's credentials replace the
//! client's on the upstream handshake, and each response gets its own log record (usage
//! from its `response.completed`), as over HTTP.
//!
//! Only a route with a single OpenAI Responses target is relayed (balancing and failover
//! happen per request, which a long-lived connection does not have); when the upstream
//! refuses the WebSocket handshake the connection is bridged instead (`websocket.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::websocket::{check_frame, error_frame, too_large};
use crate::config::plugins::ParamLocation;
use crate::gateway::Snapshot;
use crate::llm::target::Target;
use crate::llm::usage::Usage;
use crate::net::upstream_tls::{self, Trust};
use crate::observe::log::{AiLog, Try};
use crate::plugins::ai_proxy::AiProxy;
use crate::proxy::exchange::Exchange;
use crate::proxy::response::Finish;

/// A byte stream of either kind (plain TCP or TLS) under the upstream WebSocket.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The upstream side of a relayed connection.
pub type Upstream = WebSocketStream<Box<dyn Io>>;

/// What a relay needs from the route.
#[derive(Clone)]
pub struct RelayRoute {
    pub ai: Arc<AiProxy>,
    pub route: usize,
    pub snapshot: Arc<Snapshot>,
    pub trust: Option<Trust>,
    /// Where each relayed response's usage record goes.
    pub analytics: Option<Arc<crate::observe::analytics::Analytics>>,
}

/// Whether this plugin's connections are relayed: one OpenAI Responses target, no bridge.
pub fn relayable(ai: &AiProxy) -> bool {
    match &ai.targets[..] {
        [t] => t.has_openai_responses_websocket(),
        _ => false,
    }
}

/// Headers the client sent that the upstream handshake must not carry.
fn hop_or_handshake(n: &str) -> bool {
    n.starts_with("sec-websocket-")
        || matches!(
            n,
            "host"
                | "upgrade"
                | "connection"
                | "content-length"
                | "transfer-encoding"
                | "te"
                | "keep-alive"
                | "accept-encoding"
        )
}

/// Opens the upstream WebSocket with the route's credentials.
pub async fn connect(r: &RelayRoute, client_headers: &HeaderMap) -> Result<Upstream, String> {
    let t: &Target = r.ai.targets.first().ok_or("no target")?;
    let up = &t.upstream;
    let path = up.path.as_deref().unwrap_or("/v1/responses");
    let ws_scheme = if up.scheme == "https" { "wss" } else { "ws" };
    let host = if up.host.contains(':') {
        format!("[{}]", up.host)
    } else {
        up.host.to_string()
    };
    let mut url = format!("{ws_scheme}://{host}:{}{path}", up.port);
    if let Some((name, secret, ParamLocation::Query)) = &t.auth.param {
        let value = secret.get()?;
        let sep = if url.contains('?') { '&' } else { '?' };
        let pair: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(name, value.expose())
            .finish();
        url.push(sep);
        url.push_str(&pair);
    }
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("upstream WebSocket URL: {e}"))?;
    let auth_name = t.auth.header.as_ref().map(|(n, _)| n.clone());
    let h = req.headers_mut();
    for (name, value) in client_headers {
        let n = name.as_str();
        let replaced = auth_name.as_ref().is_some_and(|a| a == name);
        if !hop_or_handshake(n) && !replaced && n != "authorization" {
            h.append(name.clone(), value.clone());
        }
    }
    if let Some((name, value)) = &t.auth.header {
        h.insert(name.clone(), value.value()?);
    }
    for (name, value) in &t.extra_headers {
        h.insert(name.clone(), value.clone());
    }
    if !h.contains_key("openai-beta") {
        h.insert(
            HeaderName::from_static("openai-beta"),
            HeaderValue::from_static("responses_websockets=2026-02-06"),
        );
    }
    let work = async {
        let tcp = TcpStream::connect((&*up.host, up.port))
            .await
            .map_err(|e| format!("connect to {}:{}: {e}", up.host, up.port))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if up.scheme == "https" {
            Box::new(upstream_tls::connect(r.trust.as_ref(), &up.host, tcp).await?)
        } else {
            Box::new(tcp)
        };
        let (ws, _) = tokio_tungstenite::client_async(req, io)
            .await
            .map_err(|e| format!("WebSocket handshake with {}: {e}", up.host))?;
        Ok::<_, String>(ws)
    };
    tokio::time::timeout(r.ai.timeouts(None).connect, work)
        .await
        .map_err(|_| format!("no WebSocket to {} within the connect timeout", up.host))?
}

/// A response.create sent upstream and not answered yet.
struct Pending {
    started: Instant,
    first_event: Option<Instant>,
    model: Option<String>,
    size: u64,
}

/// Where the connection came from, for the log records.
pub struct Client {
    pub ip: String,
    pub scheme: &'static str,
    pub host: String,
    pub parts: http::request::Parts,
}

/// Pumps frames both ways until either side closes.
pub async fn run<S>(
    mut client: WebSocketStream<S>,
    mut upstream: Upstream,
    r: RelayRoute,
    who: Client,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let end = loop {
        tokio::select! {
            msg = client.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let v = match check_frame(t.as_str()) {
                        Ok(v) => v,
                        Err(e) => {
                            if client.send(e).await.is_err() {
                                break "client closed the connection".to_string();
                            }
                            continue;
                        }
                    };
                    pending.push_back(Pending {
                        started: Instant::now(),
                        first_event: None,
                        model: v.get("model").and_then(Value::as_str).map(str::to_string),
                        size: t.len() as u64,
                    });
                    if upstream.send(Message::Text(t)).await.is_err() {
                        let _ = send_error(&mut client, 502, "the upstream closed the WebSocket").await;
                        break "upstream closed the WebSocket".to_string();
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    if send_error(&mut client, 400, "binary frames are not supported: send JSON text frames").await.is_err() {
                        break "client closed the connection".to_string();
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(f))) => {
                    let _ = upstream.send(Message::Close(f)).await;
                    break "client closed the connection before the response was complete".to_string();
                }
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e))) => {
                    let _ = client.send(too_large(&e)).await;
                    let _ = upstream.close(None).await;
                    break "client frame over the size limit".to_string();
                }
                Some(Err(e)) => {
                    let _ = upstream.close(None).await;
                    break format!("client closed the connection before the response was complete ({e})");
                }
                None => {
                    let _ = upstream.close(None).await;
                    break "client closed the connection before the response was complete".to_string();
                }
            },
            msg = upstream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    observe(&mut pending, t.as_str(), &r, &who);
                    if client.send(Message::Text(t)).await.is_err() {
                        let _ = upstream.close(None).await;
                        break "client closed the connection before the response was complete".to_string();
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    if !pending.is_empty() {
                        let _ = send_error(&mut client, 502, "the upstream closed the WebSocket").await;
                    }
                    let _ = client.close(None).await;
                    break "upstream closed the WebSocket".to_string();
                }
                Some(Ok(_)) => {}
            },
        }
    };
    while let Some(p) = pending.pop_front() {
        // Once events flowed the client had its 101 and a started response, as an HTTP
        // stream has its 200; before that the upstream never answered.
        let status = if p.first_event.is_some() { 200 } else { 502 };
        finish(p, &r, &who, status, None, None, Some(end.clone()));
    }
}

/// Reads a server event: a terminal one writes its response's log record.
fn observe(pending: &mut VecDeque<Pending>, text: &str, r: &RelayRoute, who: &Client) {
    if let Some(p) = pending.front_mut() {
        p.first_event.get_or_insert_with(Instant::now);
    }
    let kind_at = text.find("\"type\"");
    if kind_at.is_none() {
        return;
    }
    let terminal = [
        "response.completed",
        "response.failed",
        "response.incomplete",
        "\"error\"",
    ]
    .iter()
    .any(|k| text.contains(k));
    if !terminal {
        return;
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    let (status, error) = match kind {
        "response.completed" | "response.incomplete" => (200, None),
        "response.failed" => (
            200,
            Some("upstream reported a failure in the stream".to_string()),
        ),
        "error" => (
            v.get("status").and_then(Value::as_u64).unwrap_or(500) as u16,
            Some(
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error")
                    .to_string(),
            ),
        ),
        _ => return,
    };
    let Some(p) = pending.pop_front() else { return };
    let response = v.get("response");
    let usage = response
        .and_then(|r| r.get("usage"))
        .and_then(Usage::from_json);
    let model = response
        .and_then(|r| r.get("model"))
        .and_then(Value::as_str)
        .map(str::to_string);
    finish(p, r, who, status, usage, model, error);
}

fn finish(
    p: Pending,
    r: &RelayRoute,
    who: &Client,
    status: u16,
    usage: Option<Usage>,
    response_model: Option<String>,
    error: Option<String>,
) {
    let Some(route) = r.snapshot.routes.get(r.route) else {
        return;
    };
    let mut log = Exchange::new(super::next_request_id(), p.started);
    if route.logs {
        log.capture_request(&who.parts, &who.ip, who.scheme, &who.host);
    }
    log.route = Some(r.route);
    log.metrics = route.metrics;
    log.analytics = r.analytics.clone();
    log.status = status;
    log.upstream_status = Some(status);
    log.request_size = p.size;
    let t = r.ai.targets.first();
    let path = t
        .and_then(|t| t.upstream.path.as_deref().map(str::to_string))
        .unwrap_or_else(|| "/v1/responses".into());
    log.upstream_uri = Some(path.clone().into());
    let mut ai = AiLog::new(r.ai.targets.clone());
    ai.target = Some(0);
    ai.request_model = p.model.clone();
    ai.response_model = response_model.clone();
    ai.usage = usage;
    ai.stream = true;
    ai.llm_latency_ms = Some(p.started.elapsed().as_millis() as u64);
    ai.ttft_ms = p
        .first_event
        .map(|f| f.duration_since(p.started).as_millis() as u64);
    log.ai = Some(ai);
    if let Some(t) = t {
        log.tries = vec![Try {
            ip: None,
            port: t.upstream.port,
            host: t.upstream.host.clone(),
            scheme: if t.upstream.scheme == "https" {
                "wss"
            } else {
                "ws"
            }
            .into(),
            upstream_uri: path.into(),
            route_type: t.route_type.as_str().into(),
            provider: t.provider.as_str().into(),
            model: response_model.or(p.model),
            outcome: if error.is_none() {
                "success".into()
            } else {
                format!("http_{status}").into()
            },
            ..Default::default()
        }];
    }
    if let Some(f) = Finish::boxed(log, r.snapshot.clone(), None) {
        f.run(error);
    }
}

async fn send_error<S>(ws: &mut WebSocketStream<S>, status: u16, message: &str) -> Result<(), ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(error_frame(status, message)).await.map_err(|_| ())
}

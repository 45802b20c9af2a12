//! Relaying WebSocket connections to an upstream that speaks the protocol itself: the
//! Responses WebSocket mode (OpenAI) and the Realtime API (OpenAI, Azure). Frames pass
//! both ways unchanged, the route's credentials replace the client's on the upstream
//! handshake, and each response gets its own log record, as over HTTP: usage from its
//! `response.completed` (Responses) or `response.done` (Realtime).
//!
//! Only a Responses route with a single OpenAI target is relayed (balancing and failover
//! happen per request, which a long-lived connection does not have); when the upstream
//! refuses the WebSocket handshake the connection is bridged instead (`websocket.rs`).
//! Realtime connections are always relayed (`realtime.rs`): there is no HTTP to bridge to.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::websocket::{check_frame, error_frame, too_large};
use crate::config::plugins::ParamLocation;
use crate::gateway::Snapshot;
use crate::llm::target::Target;
use crate::llm::usage::Usage;
use crate::net::upstream_tls::{self, Trust};
use crate::observe::log::{AiLog, Try};
use crate::plugins::ai_proxy::AiProxy;
use crate::plugins::ai_rate_limiting::{Charge, Plan};
use crate::proxy::exchange::Exchange;
use crate::proxy::response::Finish;
use crate::quota::Counters;

/// A byte stream of either kind (plain TCP or TLS) under the upstream WebSocket.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The upstream side of a relayed connection.
pub type Upstream = WebSocketStream<Box<dyn Io>>;

/// Which WebSocket API a relayed connection speaks: it decides which client frames pass
/// and which server events open and close a response (one log record each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The Responses WebSocket mode: each client `response.create` is a response, closed
    /// by `response.completed` (or `.failed`, `.incomplete`, an `error`).
    Responses,
    /// The Realtime API: every event passes both ways (text and binary); a response runs
    /// from the server's `response.created` to its `response.done`.
    Realtime,
}

impl Mode {
    /// The upstream path when neither the route nor the target names one.
    fn default_path(self) -> &'static str {
        match self {
            Mode::Responses => "/v1/responses",
            Mode::Realtime => crate::llm::openai::REALTIME_PATH,
        }
    }
}

/// What the access phase decided at the upgrade, for every response's record: the
/// consumer, the chain its log plugins come from, and the token quotas each response's
/// usage is charged to.
#[derive(Clone, Default)]
pub struct Admission {
    pub consumer: Option<(usize, Option<String>)>,
    pub chain: Option<Vec<usize>>,
    pub logs: bool,
    pub metrics: bool,
    pub quotas: Vec<(Counters, Arc<Plan>)>,
}

impl Admission {
    /// The charges one response owes (nothing reserved: its usage is known when it is logged).
    fn charges(&self) -> Vec<Charge> {
        self.quotas
            .iter()
            .map(|(counters, plan)| Charge {
                counters: counters.clone(),
                plan: plan.clone(),
                held: Vec::new(),
            })
            .collect()
    }
}

/// What a relay needs from the route.
#[derive(Clone)]
pub struct RelayRoute {
    pub ai: Arc<AiProxy>,
    pub route: usize,
    pub snapshot: Arc<Snapshot>,
    pub trust: Option<Trust>,
    /// Where each relayed response's usage record goes.
    pub analytics: Option<Arc<crate::observe::analytics::Analytics>>,
    pub mode: Mode,
    /// The upstream path and query of this connection (Realtime: with its model); None:
    /// the target's own.
    pub path: Option<String>,
    /// The connection's model, for records whose events do not name one.
    pub model: Option<String>,
    /// Set when the access phase ran at the upgrade (Realtime).
    pub admission: Option<Admission>,
}

/// Why the upstream WebSocket could not be opened.
#[derive(Debug)]
pub enum Unreachable {
    /// No TCP or TLS connection (or a bad URL).
    Connect(String),
    /// Nothing within the connect timeout.
    Timeout(String),
    /// The upstream answered the handshake with another status than 101.
    Refused {
        status: u16,
        message: String,
        /// Its answer (an error in the provider's shape), with its content type.
        answer: Option<(Vec<u8>, Option<http::HeaderValue>)>,
    },
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreachable::Connect(m) | Unreachable::Timeout(m) => f.write_str(m),
            Unreachable::Refused { message, .. } => f.write_str(message),
        }
    }
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
pub async fn connect(r: &RelayRoute, client_headers: &HeaderMap) -> Result<Upstream, Unreachable> {
    let req = handshake(r, client_headers).map_err(Unreachable::Connect)?;
    let Some(t) = r.ai.targets.first() else {
        return Err(Unreachable::Connect("no target".into()));
    };
    let up = &t.upstream;
    let work = async {
        let tcp = TcpStream::connect((&*up.host, up.port))
            .await
            .map_err(|e| {
                Unreachable::Connect(format!("connect to {}:{}: {e}", up.host, up.port))
            })?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if up.scheme == "https" {
            Box::new(
                upstream_tls::connect(r.trust.as_ref(), &up.host, tcp)
                    .await
                    .map_err(Unreachable::Connect)?,
            )
        } else {
            Box::new(tcp)
        };
        match tokio_tungstenite::client_async(req, io).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status();
                let content_type = resp.headers().get(http::header::CONTENT_TYPE).cloned();
                Err(Unreachable::Refused {
                    status: status.as_u16(),
                    message: format!("{} refused the WebSocket handshake with {status}", up.host),
                    answer: resp.into_body().map(|b| (b, content_type)),
                })
            }
            Err(e) => Err(Unreachable::Connect(format!(
                "WebSocket handshake with {}: {e}",
                up.host
            ))),
        }
    };
    tokio::time::timeout(r.ai.timeouts(None).connect, work)
        .await
        .map_err(|_| {
            Unreachable::Timeout(format!(
                "no WebSocket to {} within the connect timeout",
                up.host
            ))
        })?
}

/// The upstream handshake request: the target's URL, the client's headers without its
/// credentials, the route's.
fn handshake(
    r: &RelayRoute,
    client_headers: &HeaderMap,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, String> {
    let t: &Target = r.ai.targets.first().ok_or("no target")?;
    let up = &t.upstream;
    let path = r
        .path
        .as_deref()
        .or(up.path.as_deref())
        .unwrap_or(r.mode.default_path());
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
        // Neither OpenAI's nor Azure's credential header of the client goes upstream.
        let credential = n == "authorization" || n == "api-key";
        if !hop_or_handshake(n) && !replaced && !credential {
            h.append(name.clone(), value.clone());
        }
    }
    if let Some((name, value)) = &t.auth.header {
        h.insert(name.clone(), value.value()?);
    }
    for (name, value) in &t.extra_headers {
        h.insert(name.clone(), value.clone());
    }
    // The Responses mode needs its beta header; a Realtime client sends
    // `OpenAI-Beta: realtime=v1` itself when it speaks the beta protocol (passed above).
    if r.mode == Mode::Responses && !h.contains_key("openai-beta") {
        h.insert(
            HeaderName::from_static("openai-beta"),
            HeaderValue::from_static("responses_websockets=2026-02-06"),
        );
    }
    Ok(req)
}

/// A response in flight: asked for (Responses) or started (Realtime), not done yet.
struct Pending {
    /// Realtime: the response's id, from its `response.created`.
    id: Option<String>,
    started: Instant,
    first_event: Option<Instant>,
    model: Option<String>,
    size: u64,
}

/// The responses of one connection.
#[derive(Default)]
struct Flight {
    pending: VecDeque<Pending>,
    /// Realtime: when the client last sent `response.create` (a response may also start
    /// on the server's voice detection), and the bytes it sent since the last response.
    asked: Option<Instant>,
    sent: u64,
}

/// Where the connection came from, for the log records.
pub struct Client {
    pub ip: String,
    pub scheme: &'static str,
    pub host: String,
    pub parts: http::request::Parts,
}

/// What the relay does after a frame.
enum Step {
    Go,
    End(String),
}

const CLIENT_LEFT: &str = "client closed the connection before the response was complete";
const UPSTREAM_LEFT: &str = "upstream closed the WebSocket";

/// Pumps frames both ways until either side closes.
pub async fn run<S>(
    mut client: WebSocketStream<S>,
    mut upstream: Upstream,
    r: RelayRoute,
    who: Client,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut f = Flight::default();
    // As nginx's proxy_read_timeout closes an idle WebSocket under Kong: no frame either
    // way for the read timeout (the balancer's, else 60 s) ends the session.
    let idle = r.ai.timeouts(None).read;
    let end = loop {
        let step = tokio::select! {
            msg = client.next() => from_client(msg, &mut client, &mut upstream, &mut f, r.mode).await,
            msg = upstream.next() => from_upstream(msg, &mut client, &mut upstream, &mut f, (&r, &who)).await,
            _ = tokio::time::sleep(idle) => idle_close(&mut client, idle).await,
        };
        if let Step::End(why) = step {
            break why;
        }
    };
    // Flushes the close handshake each side may still owe the other.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let _ = client.close(None).await;
        let _ = upstream.close(None).await;
    })
    .await;
    while let Some(p) = f.pending.pop_front() {
        // Once events flowed the client had its 101 and a started response, as an HTTP
        // stream has its 200; before that the upstream never answered.
        let status = if p.first_event.is_some() { 200 } else { 502 };
        finish(p, &r, &who, (status, None, None), Some(end.clone()));
    }
}

/// The session was idle for the read timeout: the client gets a close frame saying so.
async fn idle_close<S>(client: &mut WebSocketStream<S>, idle: std::time::Duration) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    let why = format!(
        "no frame either way within the read timeout ({} ms)",
        idle.as_millis()
    );
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: "idle: no frame within the read timeout".into(),
    };
    let _ = client.send(Message::Close(Some(frame))).await;
    Step::End(why)
}

/// One frame (or the end) from the client.
async fn from_client<S>(
    msg: Option<Result<Message, WsError>>,
    client: &mut WebSocketStream<S>,
    upstream: &mut Upstream,
    f: &mut Flight,
    mode: Mode,
) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let msg = match msg {
        Some(Ok(m)) => m,
        Some(Err(WsError::Capacity(e))) => {
            let _ = client.send(too_large(&e)).await;
            let _ = upstream.close(None).await;
            return Step::End("client frame over the size limit".into());
        }
        Some(Err(e)) => {
            let _ = upstream.close(None).await;
            return Step::End(format!("{CLIENT_LEFT} ({e})"));
        }
        None => {
            let _ = upstream.close(None).await;
            return Step::End(CLIENT_LEFT.into());
        }
    };
    let forward = match (mode, msg) {
        // The close goes on with its code and reason.
        (_, Message::Close(frame)) => {
            let _ = upstream.send(Message::Close(frame)).await;
            return Step::End(CLIENT_LEFT.into());
        }
        (Mode::Responses, Message::Text(t)) => {
            let v = match check_frame(t.as_str()) {
                Ok(v) => v,
                Err(e) => return sent(client.send(e).await),
            };
            f.pending.push_back(Pending {
                id: None,
                started: Instant::now(),
                first_event: None,
                model: v.get("model").and_then(Value::as_str).map(str::to_string),
                size: t.len() as u64,
            });
            Message::Text(t)
        }
        (Mode::Responses, Message::Binary(_)) => {
            let e = "binary frames are not supported: send JSON text frames";
            return sent(send_error(client, 400, e).await);
        }
        (Mode::Responses, _) | (Mode::Realtime, Message::Frame(_)) => return Step::Go,
        (Mode::Realtime, m) => {
            f.sent += m.len() as u64;
            if let Message::Text(t) = &m {
                if asks_response(t.as_str()) {
                    f.asked = Some(Instant::now());
                }
            }
            m
        }
    };
    if upstream.send(forward).await.is_err() {
        let _ = send_error(client, 502, "the upstream closed the WebSocket").await;
        return Step::End(UPSTREAM_LEFT.into());
    }
    Step::Go
}

/// Go on while the client takes frames.
fn sent<E>(r: Result<(), E>) -> Step {
    match r {
        Ok(()) => Step::Go,
        Err(_) => Step::End(CLIENT_LEFT.into()),
    }
}

/// A Realtime client event that asks for a response.
fn asks_response(text: &str) -> bool {
    text.contains("response.create")
        && serde_json::from_str::<Value>(text)
            .ok()
            .is_some_and(|v| v.get("type").and_then(Value::as_str) == Some("response.create"))
}

/// One frame (or the end) from the upstream.
async fn from_upstream<S>(
    msg: Option<Result<Message, WsError>>,
    client: &mut WebSocketStream<S>,
    upstream: &mut Upstream,
    f: &mut Flight,
    (r, who): (&RelayRoute, &Client),
) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let forward = match msg {
        Some(Ok(Message::Text(t))) => {
            observe(f, t.as_str(), r, who);
            Message::Text(t)
        }
        // Realtime: the upstream's close reaches the client with its code and reason.
        Some(Ok(Message::Close(frame))) if r.mode == Mode::Realtime => {
            let _ = client.send(Message::Close(frame)).await;
            return Step::End(UPSTREAM_LEFT.into());
        }
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
            if !f.pending.is_empty() {
                let _ = send_error(client, 502, "the upstream closed the WebSocket").await;
            }
            let _ = client.close(None).await;
            return Step::End(UPSTREAM_LEFT.into());
        }
        Some(Ok(m @ (Message::Binary(_) | Message::Ping(_) | Message::Pong(_))))
            if r.mode == Mode::Realtime =>
        {
            m
        }
        Some(Ok(_)) => return Step::Go,
    };
    if client.send(forward).await.is_err() {
        let _ = upstream.close(None).await;
        return Step::End(CLIENT_LEFT.into());
    }
    Step::Go
}

/// Reads a server event: the one that ends a response writes its log record.
fn observe(f: &mut Flight, text: &str, r: &RelayRoute, who: &Client) {
    if let Some(p) = f.pending.front_mut() {
        p.first_event.get_or_insert_with(Instant::now);
    }
    if !text.contains("\"type\"") {
        return;
    }
    // Only the events that matter are parsed (text deltas pass unread).
    let wanted: &[&str] = match r.mode {
        Mode::Responses => &[
            "response.completed",
            "response.failed",
            "response.incomplete",
            "\"error\"",
        ],
        Mode::Realtime => &["response.created", "response.done"],
    };
    if !wanted.iter().any(|k| text.contains(k)) {
        return;
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    let response = v.get("response");
    let (status, error) = match (r.mode, kind) {
        (Mode::Responses, "response.completed" | "response.incomplete") => (200, None),
        (Mode::Responses, "response.failed") => (
            200,
            Some("upstream reported a failure in the stream".to_string()),
        ),
        (Mode::Responses, "error") => (
            v.get("status").and_then(Value::as_u64).unwrap_or(500) as u16,
            Some(
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error")
                    .to_string(),
            ),
        ),
        (Mode::Realtime, "response.created") => {
            let now = Instant::now();
            f.pending.push_back(Pending {
                id: response_id(response),
                started: f.asked.take().unwrap_or(now),
                first_event: Some(now),
                model: r.model.clone(),
                size: std::mem::take(&mut f.sent),
            });
            return;
        }
        (Mode::Realtime, "response.done") => {
            let failed = response
                .and_then(|x| x.get("status"))
                .and_then(Value::as_str)
                == Some("failed");
            (
                200,
                failed.then(|| "upstream reported a failed response".to_string()),
            )
        }
        _ => return,
    };
    let p = match r.mode {
        Mode::Responses => f.pending.pop_front(),
        // Out-of-band responses may overlap: the done one is found by its id.
        Mode::Realtime => {
            let id = response_id(response);
            let at = f.pending.iter().position(|p| p.id == id).unwrap_or(0);
            f.pending.remove(at).or_else(|| {
                let now = Instant::now();
                Some(Pending {
                    id,
                    started: f.asked.take().unwrap_or(now),
                    first_event: Some(now),
                    model: r.model.clone(),
                    size: std::mem::take(&mut f.sent),
                })
            })
        }
    };
    let Some(p) = p else { return };
    let usage = response
        .and_then(|r| r.get("usage"))
        .and_then(Usage::from_json);
    let model = response
        .and_then(|r| r.get("model"))
        .and_then(Value::as_str)
        .map(str::to_string);
    finish(p, r, who, (status, usage, model), error);
}

fn response_id(response: Option<&Value>) -> Option<String> {
    response
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Writes one response's log record: its status, usage and model; the quotas it owes
/// are charged by the log phase, as for an HTTP request.
fn finish(
    p: Pending,
    r: &RelayRoute,
    who: &Client,
    (status, usage, response_model): (u16, Option<Usage>, Option<String>),
    error: Option<String>,
) {
    let Some(route) = r.snapshot.routes.get(r.route) else {
        return;
    };
    let mut log = Exchange::new(super::next_request_id(), p.started);
    let logs = r.admission.as_ref().map_or(route.logs, |a| a.logs);
    if logs {
        log.capture_request(&who.parts, &who.ip, who.scheme, &who.host);
    }
    log.route = Some(r.route);
    log.metrics = route.metrics;
    if let Some(a) = &r.admission {
        log.consumer = a.consumer.clone();
        log.chain = a.chain.clone();
        log.metrics = a.metrics;
        log.charges = a.charges();
    }
    log.analytics = r.analytics.clone();
    log.status = status;
    log.upstream_status = Some(status);
    log.request_size = p.size;
    let t = r.ai.targets.first();
    let path = r
        .path
        .clone()
        .or_else(|| t.and_then(|t| t.upstream.path.as_deref().map(str::to_string)))
        .unwrap_or_else(|| r.mode.default_path().into());
    log.upstream_uri = Some(path.clone().into());
    let response_model = response_model.or_else(|| r.model.clone());
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

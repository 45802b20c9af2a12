//! MCP's older HTTP+SSE transport (protocol 2024-11-05) through `passthrough-listener`.
//! The client's GET opens a stream whose first event, `endpoint`, names where to POST its
//! messages, and the answers to those POSTs come on that stream, not in the POSTs' own
//! answers (202). So the gateway rewrites the endpoint into the path the client reaches
//! the gateway by (the upstream only knows its own), hides denied tools from lists sent on
//! the stream, and answers a call the ACLs deny with an event on the client's stream.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::proxy::response::ProxyBody;

/// Events the gateway may queue for one stream before a denied call is refused instead.
const QUEUE: usize = 64;

/// Open HTTP+SSE streams by the endpoint their client POSTs to (path and query, as the
/// client sends them). Process-wide, not per configuration: a stream outlives the
/// configuration it was opened under.
static STREAMS: LazyLock<Mutex<HashMap<String, mpsc::Sender<Bytes>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Sends `event` on the stream whose messages are POSTed to `endpoint`; false when no such
/// stream is open on this node (or it is not reading).
pub(super) fn inject(endpoint: &str, event: Bytes) -> bool {
    let tx = STREAMS.lock().ok().and_then(|m| m.get(endpoint).cloned());
    tx.is_some_and(|tx| tx.try_send(event).is_ok())
}

/// A JSON-RPC message as one SSE `message` event.
pub(super) fn message_event(v: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {v}\n\n"))
}

/// How an upstream path maps to the path the client used: the two share their tail, and
/// differ in the prefix `strip_path` and the service path account for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PathMap {
    client: String,
    upstream: String,
}

impl PathMap {
    /// From the client's path and the upstream path it was proxied to.
    pub(super) fn new(client: &str, upstream: &str) -> PathMap {
        let (c, u) = (client.as_bytes(), upstream.as_bytes());
        let mut common = 0;
        while common < c.len().min(u.len()) && c[c.len() - 1 - common] == u[u.len() - 1 - common] {
            common += 1;
        }
        // The shared tail must start at a segment boundary.
        let tail = &client[client.len() - common..];
        let cut = match tail.find('/') {
            Some(0) => common,
            Some(i) => common - i,
            None => 0,
        };
        PathMap {
            client: client[..client.len() - cut].to_string(),
            upstream: upstream[..upstream.len() - cut].to_string(),
        }
    }

    /// The endpoint the upstream announced, as the client must reach it through the
    /// gateway. Only its path and query are kept: the client resolves them against the
    /// gateway's own address. An endpoint outside the upstream prefix is left as it is.
    pub(super) fn client_endpoint(&self, announced: &str) -> String {
        let path = match announced.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => announced,
        };
        if !path.starts_with('/') {
            // Relative: it resolves against the client's own URL.
            return path.to_string();
        }
        let up = self.upstream.trim_end_matches('/');
        match path.strip_prefix(up) {
            Some(rest) if rest.is_empty() || rest.starts_with(['/', '?']) => {
                let client = self.client.trim_end_matches('/');
                let rest = if client.is_empty() && !rest.starts_with('/') {
                    format!("/{rest}")
                } else {
                    rest.to_string()
                };
                format!("{client}{rest}")
            }
            _ => path.to_string(),
        }
    }
}

/// Resolves `endpoint` (as rewritten for the client) against the client's stream path, to
/// the path and query the client's POSTs will carry.
fn resolved(stream_path: &str, endpoint: &str) -> String {
    if endpoint.starts_with('/') {
        return endpoint.to_string();
    }
    let dir = stream_path.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{dir}/{endpoint}")
}

/// Where the bytes of one SSE event end (after its blank line), if they are all there.
fn event_end(b: &[u8]) -> Option<usize> {
    let mut line_start = true;
    let mut i = 0;
    while i < b.len() {
        let eol = match b[i] {
            b'\n' => 1,
            b'\r' if i + 1 == b.len() => return None,
            b'\r' if b[i + 1] == b'\n' => 2,
            b'\r' => 1,
            _ => {
                line_start = false;
                i += 1;
                continue;
            }
        };
        if line_start {
            return Some(i + eol);
        }
        line_start = true;
        i += eol;
    }
    None
}

/// An event's type and data (its `data:` lines joined).
fn fields(event: &str) -> (Option<&str>, String) {
    let mut name = None;
    let mut data: Vec<&str> = Vec::new();
    for line in event.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value),
            "data" => data.push(value),
            _ => {}
        }
    }
    (name, data.join("\n"))
}

/// The tools a client may see, for lists on the stream.
pub(super) type ToolFilter = Box<dyn Fn(&mut Value) + Send + Sync>;

/// The upstream's stream as the client gets it.
pub(super) struct Relay {
    inner: ProxyBody,
    /// Upstream bytes not yet making up a whole event.
    pending: Vec<u8>,
    map: PathMap,
    /// The path the client opened the stream with.
    stream_path: String,
    filter: Option<ToolFilter>,
    /// Events the gateway adds (denied calls); the sender is registered once the
    /// endpoint is known.
    rx: mpsc::Receiver<Bytes>,
    tx: Option<mpsc::Sender<Bytes>>,
    key: Option<String>,
    ended: bool,
}

impl Relay {
    /// Wraps the upstream's stream `inner`, opened by the client at `stream_path`.
    pub(super) fn new(
        inner: ProxyBody,
        map: PathMap,
        stream_path: &str,
        filter: Option<ToolFilter>,
    ) -> Relay {
        let (tx, rx) = mpsc::channel(QUEUE);
        Relay {
            inner,
            pending: Vec::new(),
            map,
            stream_path: stream_path.to_string(),
            filter,
            rx,
            tx: Some(tx),
            key: None,
            ended: false,
        }
    }

    /// The whole events in `pending`, each as the client gets it.
    fn take_events(&mut self) -> Bytes {
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.pending) {
            let event: Vec<u8> = self.pending.drain(..end).collect();
            match self.rewritten(&event) {
                Some(new) => out.extend_from_slice(&new),
                None => out.extend_from_slice(&event),
            }
        }
        Bytes::from(out)
    }

    /// The event rewritten for the client, or None to pass it as it is.
    fn rewritten(&mut self, event: &[u8]) -> Option<Bytes> {
        let text = std::str::from_utf8(event).ok()?;
        let (name, data) = fields(text);
        if name == Some("endpoint") {
            let endpoint = self.map.client_endpoint(data.trim());
            self.register(resolved(&self.stream_path, &endpoint));
            return Some(Bytes::from(format!(
                "event: endpoint\ndata: {endpoint}\n\n"
            )));
        }
        let filter = self.filter.as_ref()?;
        if !data.contains("\"tools\"") {
            return None;
        }
        let mut v: Value = serde_json::from_str(&data).ok()?;
        v.pointer("/result/tools")?;
        filter(&mut v);
        let name = name.unwrap_or("message");
        Some(Bytes::from(format!("event: {name}\ndata: {v}\n\n")))
    }

    fn register(&mut self, key: String) {
        let Some(tx) = self.tx.take() else { return };
        if let Ok(mut m) = STREAMS.lock() {
            m.retain(|_, tx| !tx.is_closed());
            m.insert(key.clone(), tx);
        }
        self.key = Some(key);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let (Some(key), Ok(mut m)) = (self.key.take(), STREAMS.lock()) {
            m.remove(&key);
        }
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            // Between the upstream's whole events, the gateway's own.
            if let Poll::Ready(Some(ev)) = this.rx.poll_recv(cx) {
                return Poll::Ready(Some(Ok(Frame::data(ev))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.pending.extend_from_slice(&data);
                        let out = this.take_events();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.ended = true;
                    if !this.pending.is_empty() {
                        let rest = Bytes::from(std::mem::take(&mut this.pending));
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_map_to_the_client_path() {
        // strip_path: /legacy → service path /mcp-legacy
        let m = PathMap::new("/legacy/sse", "/mcp-legacy/sse");
        assert_eq!(
            m.client_endpoint("/mcp-legacy/messages/?session_id=a"),
            "/legacy/messages/?session_id=a"
        );
        assert_eq!(
            m.client_endpoint("http://10.0.0.5:8080/mcp-legacy/messages?s=1"),
            "/legacy/messages?s=1"
        );
        assert_eq!(m.client_endpoint("messages?s=1"), "messages?s=1");
        assert_eq!(
            m.client_endpoint("/elsewhere/messages"),
            "/elsewhere/messages"
        );
        // No strip: the same path on both sides.
        let same = PathMap::new("/a/sse", "/a/sse");
        assert_eq!(same.client_endpoint("/a/messages?x=1"), "/a/messages?x=1");
        // Route at the root of a service path.
        let root = PathMap::new("/sse", "/mcp/sse");
        assert_eq!(root.client_endpoint("/mcp/messages?x=1"), "/messages?x=1");
        // Route /tools stripped onto the service root.
        let strip = PathMap::new("/tools/sse", "/sse");
        assert_eq!(
            strip.client_endpoint("/messages/?x=1"),
            "/tools/messages/?x=1"
        );
        assert_eq!(
            resolved("/tools/sse", "messages?x=1"),
            "/tools/messages?x=1"
        );
    }

    #[test]
    fn events_end_at_a_blank_line_in_any_line_ending() {
        assert_eq!(event_end(b"event: a\ndata: b\n\nrest"), Some(18));
        assert_eq!(event_end(b"event: a\r\ndata: b\r\n\r\nx"), Some(21));
        assert_eq!(event_end(b"data: b\r"), None);
        assert_eq!(event_end(b"data: b\n"), None);
        assert_eq!(fields("event: endpoint\r\ndata: /m?x=1\r\n").1, "/m?x=1");
    }
}

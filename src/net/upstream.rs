//! Upstream connections: HTTP/1.1 over TCP or rustls, pooled per endpoint, and driven
//! inline by the request that holds them.
//!
//! A pooled client in the usual shape (hyper-util's) runs a task per connection and hands
//! each body chunk to the request over a channel: two task switches and a flush per SSE
//! event. Here the request polls the connection itself, so the chunks already read from
//! the socket are decoded and forwarded in one go and nothing else wakes up.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::upstream_tls::{self, Trust};

/// Why an attempt failed, in the terms `failover_criteria` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Could not connect (refused, unreachable, DNS, TLS).
    Connect,
    /// Connect or response-header deadline passed.
    Timeout,
    /// Connection closed or reset before a complete response head.
    Reset,
    /// The response head was not valid HTTP.
    InvalidHeader,
}

impl FailureKind {
    /// The word used in logs (`tried_targets[].outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "error",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
            FailureKind::InvalidHeader => "invalid_header",
        }
    }
}

/// A failed attempt: the kind and a description for the operator log.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub detail: String,
    /// A streamed upload of which nothing was sent (no connection), for another attempt.
    pub unsent: Option<Upload>,
}

impl Failure {
    /// The client-facing error once no attempt is left: 504 for timeouts, else 502.
    pub fn into_gateway_error(self) -> crate::error::GatewayError {
        match self.kind {
            FailureKind::Timeout => crate::error::GatewayError::UpstreamTimeout(self.detail),
            _ => crate::error::GatewayError::UpstreamInvalid(self.detail),
        }
    }

    fn new(kind: FailureKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
            unsent: None,
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub https: bool,
    pub host: &'a str,
    pub port: u16,
    /// Certificates trusted for this upstream (None: the default trust).
    pub trust: Option<&'a Trust>,
}

/// A request to send: origin-form target (`/path?query`), headers including `host`.
#[derive(Debug, Default)]
pub struct OutRequest {
    pub method: Method,
    pub target: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// A body streamed from the client instead of `body` (a large upload).
    pub upload: Option<Upload>,
}

/// An error of a streamed request body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A request body streamed from the client to the upstream as it arrives.
pub type Upload = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// An upstream request's body: whole (almost every request), or streamed.
pub enum UpBody {
    Full(Full<Bytes>),
    Upload(Upload),
}

impl hyper::body::Body for UpBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
            UpBody::Upload(u) => Pin::new(u).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Full(b) => b.is_end_stream(),
            UpBody::Upload(u) => u.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            UpBody::Full(b) => b.size_hint(),
            UpBody::Upload(u) => u.size_hint(),
        }
    }
}

impl OutRequest {
    /// A copy to send again (a retry); None for a streamed upload, which is sent once.
    pub fn try_clone(&self) -> Option<OutRequest> {
        if self.upload.is_some() {
            return None;
        }
        Some(OutRequest {
            method: self.method.clone(),
            target: self.target.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            upload: None,
        })
    }

    fn into_request(self) -> Request<UpBody> {
        let body = match self.upload {
            Some(u) => UpBody::Upload(u),
            None => UpBody::Full(Full::new(self.body)),
        };
        let mut r = Request::new(body);
        *r.method_mut() = self.method;
        *r.uri_mut() = self.target;
        *r.headers_mut() = self.headers;
        r
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    https: bool,
    host: String,
    port: u16,
    /// The trust the connection was verified under.
    trust: u64,
    /// The proxy worker whose runtime the connection's socket is registered with.
    worker: u16,
}

/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;

struct Idle {
    conn: Conn,
    since: Instant,
}

struct PoolInner {
    /// FxHash rather than SipHash: two lookups per request, keys from the config.
    idle: Mutex<HashMap<PoolKey, Vec<Idle>, rustc_hash::FxBuildHasher>>,
}

/// Pooled upstream connections.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<PoolInner>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::new()
    }
}

/// One upstream connection, leased to a single request at a time. Boxed: a connection
/// moves between the pool, the request and its response body on every request, and hyper's
/// connection state is several hundred bytes (callgrind counted ~600 instructions of
/// memcpy per request for those moves).
pub struct Conn(Box<ConnState>);

struct ConnState {
    key: PoolKey,
    sender: SendRequest<UpBody>,
    driver: Connection<TokioIo<Stream>, UpBody>,
    peer: Option<SocketAddr>,
    pool: Arc<PoolInner>,
}

impl Conn {
    /// The upstream's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.0.peer
    }

    /// Moves the connection's I/O forward: reads, decodes, writes. Ready(Ok) means the
    /// connection has ended (closed by the upstream or `Connection: close`).
    pub fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.driver.poll_without_shutdown(cx)
    }

    /// Hands the connection back for reuse once its response body has been read to the end.
    pub fn release(mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        if self.poll_drive(&mut cx).is_ready() || self.0.sender.is_closed() {
            return;
        }
        let pool = self.0.pool.clone();
        let mut idle = match pool.idle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // The key is cloned only for an endpoint's first idle connection.
        let list = match idle.get_mut(&self.0.key) {
            Some(list) => list,
            None => idle.entry(self.0.key.clone()).or_default(),
        };
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push(Idle {
                conn: self,
                since: Instant::now(),
            });
        }
    }
}

impl Upstreams {
    /// An empty pool (TLS trust: see `upstream_tls`).
    pub fn new() -> Self {
        Upstreams {
            inner: Arc::new(PoolInner {
                idle: Mutex::new(HashMap::default()),
            }),
        }
    }

    fn take_idle(&self, key: &PoolKey) -> Option<Conn> {
        let mut idle = match self.inner.idle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let list = idle.get_mut(key)?;
        while let Some(mut i) = list.pop() {
            if i.since.elapsed() > IDLE_TIMEOUT || i.conn.0.sender.is_closed() {
                continue;
            }
            // An upstream that closed the idle connection shows up as a finished driver.
            let mut cx = Context::from_waker(Waker::noop());
            if i.conn.poll_drive(&mut cx).is_ready() {
                continue;
            }
            return Some(i.conn);
        }
        None
    }

    async fn connect(&self, ep: &Endpoint<'_>, connect_timeout: Duration) -> Result<Conn, Failure> {
        let key = PoolKey {
            https: ep.https,
            host: ep.host.to_string(),
            port: ep.port,
            trust: ep.trust.map_or(0, |t| t.id),
            worker: crate::rt::worker::id(),
        };
        let work = async {
            let tcp = TcpStream::connect((ep.host, ep.port)).await.map_err(|e| {
                Failure::new(
                    FailureKind::Connect,
                    format!("connect to {}:{}: {e}", ep.host, ep.port),
                )
            })?;
            let _ = tcp.set_nodelay(true);
            let peer = tcp.peer_addr().ok();
            let stream = if ep.https {
                let tls = upstream_tls::connect(ep.trust, ep.host, tcp)
                    .await
                    .map_err(|e| Failure::new(FailureKind::Connect, e))?;
                Stream::Tls(Box::new(tls))
            } else {
                Stream::Tcp(tcp)
            };
            let (sender, driver) = http1::Builder::new()
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| {
                    Failure::new(
                        FailureKind::Connect,
                        format!("HTTP handshake with {}: {e}", ep.host),
                    )
                })?;
            Ok(Conn(Box::new(ConnState {
                key,
                sender,
                driver,
                peer,
                pool: self.inner.clone(),
            })))
        };
        match tokio::time::timeout(connect_timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                FailureKind::Timeout,
                format!(
                    "connect to {}:{} took over {} ms",
                    ep.host,
                    ep.port,
                    connect_timeout.as_millis()
                ),
            )),
        }
    }

    /// Sends one request and waits for the response head. `connect_timeout` bounds the
    /// connection setup and `read_timeout` the wait for the head. A reused connection
    /// that turns out to be closed is replaced once by a fresh one.
    pub async fn send(
        &self,
        ep: &Endpoint<'_>,
        out: OutRequest,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<(Response<Incoming>, Conn), Failure> {
        let key = PoolKey {
            https: ep.https,
            host: ep.host.to_string(),
            port: ep.port,
            trust: ep.trust.map_or(0, |t| t.id),
            worker: crate::rt::worker::id(),
        };
        let mut req = out.into_request();
        let mut allow_reuse = true;
        loop {
            let (mut conn, reused) = match allow_reuse.then(|| self.take_idle(&key)).flatten() {
                Some(c) => (c, true),
                None => match self.connect(ep, connect_timeout).await {
                    Ok(c) => (c, false),
                    Err(mut f) => {
                        if let UpBody::Upload(u) = req.into_body() {
                            f.unsent = Some(u);
                        }
                        return Err(f);
                    }
                },
            };
            let mut fut = std::pin::pin!(conn.0.sender.try_send_request(req));
            let waited = tokio::time::timeout(
                read_timeout,
                poll_fn(|cx| {
                    if let Poll::Ready(Err(e)) = conn.poll_drive(cx) {
                        return Poll::Ready(Err(Err(e)));
                    }
                    fut.as_mut().poll(cx).map_err(Ok)
                }),
            )
            .await;
            match waited {
                Err(_) => {
                    return Err(Failure::new(
                        FailureKind::Timeout,
                        format!("no response head within {} ms", read_timeout.as_millis()),
                    ))
                }
                Ok(Ok(resp)) => {
                    crate::rt::busy_poll::touch();
                    return Ok((resp, conn));
                }
                // The upstream closed an idle connection just as we used it: when the request
                // was not written yet, hyper hands it back and a new connection gets it.
                Ok(Err(Ok(mut e))) => match e.take_message() {
                    Some(back) if reused => {
                        req = back;
                        allow_reuse = false;
                    }
                    Some(back) => {
                        let mut f = classify(e.error());
                        if let UpBody::Upload(u) = back.into_body() {
                            f.unsent = Some(u);
                        }
                        return Err(f);
                    }
                    None => return Err(classify(e.error())),
                },
                Ok(Err(Err(e))) => return Err(classify(&e)),
            }
        }
    }
}

fn classify(e: &hyper::Error) -> Failure {
    let detail = crate::rt::background::error_chain(e);
    let kind = if e.is_parse() {
        FailureKind::InvalidHeader
    } else if e.is_timeout() {
        FailureKind::Timeout
    } else {
        FailureKind::Reset
    };
    Failure {
        kind,
        detail,
        unsent: None,
    }
}

/// A plain or TLS connection to an upstream.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

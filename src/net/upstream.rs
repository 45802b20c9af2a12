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

use bytes::{Bytes, BytesMut};
use http::{Method, Response, Uri};
use hyper::body::Body as _;
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::h1;
use super::out_headers::OutHeaders;
use super::upstream_tls::{self, Trust};
use crate::rt::worker::{Padded, PerWorker};

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
pub struct OutRequest<'a> {
    pub method: Method,
    pub target: Uri,
    pub headers: OutHeaders<'a>,
    pub body: Bytes,
    /// A body streamed from the client instead of `body` (a large upload).
    pub upload: Option<Upload>,
}

/// An error of a streamed request body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A request body streamed from the client to the upstream as it arrives.
pub type Upload = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

impl OutRequest<'_> {
    /// A copy to send again (a retry); None for a streamed upload, which is sent once.
    pub fn try_clone(&self) -> Option<Self> {
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
    conn: Box<ConnState>,
    since: Instant,
}

/// The idle connections of one worker (see `Upstreams`).
struct PoolShard {
    /// FxHash rather than SipHash: two lookups per request, keys from the config.
    idle: Mutex<HashMap<PoolKey, Vec<Idle>, rustc_hash::FxBuildHasher>>,
}

/// A worker's shard of the pool, its lock and reference count on cache lines of their own.
type Shard = Arc<Padded<PoolShard>>;

/// Pooled upstream connections, a shard per worker: each request locks its worker's twice
/// and moves its reference count, which one pool shared by every worker paid for in cache
/// lines moving between their cores.
#[derive(Clone)]
pub struct Upstreams {
    shards: Arc<PerWorker<Shard>>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes read from an upstream per read call (a typical answer or SSE burst fits).
const READ_CHUNK: usize = 16 * 1024;

/// A request body up to this size is copied behind the head and sent with it in one write.
const COPY_BODY_MAX: usize = 64 * 1024;

/// One upstream connection: the socket and what was read from it but not yet taken. It
/// belongs to one request at a time: its response body reads from it and, at a clean end,
/// puts it back in the pool. Boxed: it moves between the pool, the request and the body.
struct ConnState {
    key: PoolKey,
    io: Stream,
    buf: BytesMut,
    peer: Option<SocketAddr>,
    pool: Shard,
}

impl ConnState {
    /// Back to the pool for the next request to this endpoint.
    fn release(self: Box<Self>) {
        let pool = self.pool.clone();
        let mut idle = match pool.idle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // The key is cloned only for an endpoint's first idle connection.
        let list = match idle.get_mut(&self.key) {
            Some(list) => list,
            None => idle.entry(self.key.clone()).or_default(),
        };
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push(Idle {
                conn: self,
                since: Instant::now(),
            });
        }
    }

    /// Whether an idle connection still looks usable: not closed by the upstream, and
    /// with nothing unasked-for to read.
    fn still_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut rb = ReadBuf::new(&mut probe);
        // Pending: nothing to read, the connection is fine. Anything else (EOF, an error,
        // stray bytes) makes it unusable.
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut rb)
            .is_pending()
    }
}

/// An upstream response's body, read from the connection as it is polled; the connection
/// goes back to the pool when the body ends cleanly (and is closed when the body is dropped
/// before its end).
pub struct Incoming {
    conn: Option<Box<ConnState>>,
    decoder: h1::Decoder,
    /// The response allows another request on the connection.
    reuse: bool,
    peer: Option<SocketAddr>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("decoder", &self.decoder)
            .field("peer", &self.peer)
            .finish()
    }
}

impl Incoming {
    /// The upstream's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The body is over: the connection is kept when the response allows it and nothing
    /// beyond the body was sent.
    fn finish(&mut self) {
        if let Some(c) = self.conn.take() {
            if self.reuse && c.buf.is_empty() {
                c.release();
            }
        }
    }

    fn fail(&mut self, e: impl Into<BodyError>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.conn = None;
        self.decoder = h1::Decoder::Done;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl hyper::body::Body for Incoming {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(c) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut c.buf) {
                Err(e) => return this.fail(e),
                Ok(Some(data)) => {
                    if this.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) if this.decoder.is_done() => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
            }
            c.buf.reserve(READ_CHUNK);
            let read = std::pin::pin!(c.io.read_buf(&mut c.buf)).poll(cx);
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return this.fail(e),
                Poll::Ready(Ok(0)) => {
                    if let Err(e) = this.decoder.at_eof() {
                        return this.fail(e);
                    }
                    // Read until the close: nothing to reuse.
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.decoder.remaining() {
            Some(n) => hyper::body::SizeHint::with_exact(n),
            None => hyper::body::SizeHint::default(),
        }
    }
}

impl Upstreams {
    /// An empty pool (TLS trust: see `upstream_tls`).
    pub fn new() -> Self {
        Upstreams {
            shards: Arc::new(PerWorker::new(|_| {
                Arc::new(Padded(PoolShard {
                    idle: Mutex::new(HashMap::default()),
                }))
            })),
        }
    }

    /// The shard of `key`'s worker.
    fn shard(&self, key: &PoolKey) -> &Shard {
        self.shards.of(key.worker)
    }

    fn take_idle(&self, key: &PoolKey) -> Option<Box<ConnState>> {
        let mut idle = match self.shard(key).idle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let list = idle.get_mut(key)?;
        while let Some(mut i) = list.pop() {
            if i.since.elapsed() > IDLE_TIMEOUT || !i.conn.still_open() {
                continue;
            }
            return Some(i.conn);
        }
        None
    }

    async fn connect(
        &self,
        ep: &Endpoint<'_>,
        key: &PoolKey,
        connect_timeout: Duration,
    ) -> Result<Box<ConnState>, Failure> {
        let work = async {
            let tcp = TcpStream::connect((ep.host, ep.port)).await.map_err(|e| {
                Failure::new(
                    FailureKind::Connect,
                    format!("connect to {}:{}: {e}", ep.host, ep.port),
                )
            })?;
            let _ = tcp.set_nodelay(true);
            let peer = tcp.peer_addr().ok();
            let io = if ep.https {
                let tls = upstream_tls::connect(ep.trust, ep.host, tcp)
                    .await
                    .map_err(|e| Failure::new(FailureKind::Connect, e))?;
                Stream::Tls(Box::new(tls))
            } else {
                Stream::Tcp(tcp)
            };
            Ok(Box::new(ConnState {
                key: key.clone(),
                io,
                buf: BytesMut::new(),
                peer,
                pool: self.shard(key).clone(),
            }))
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
        out: OutRequest<'_>,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Response<Incoming>, Failure> {
        let key = PoolKey {
            https: ep.https,
            host: ep.host.to_string(),
            port: ep.port,
            trust: ep.trust.map_or(0, |t| t.id),
            worker: crate::rt::worker::id(),
        };
        let OutRequest {
            method,
            target,
            headers,
            body,
            mut upload,
        } = out;
        let framing = match &upload {
            Some(u) => match hyper::body::Body::size_hint(u).exact() {
                Some(n) => h1::RequestFraming::Length(n),
                None => h1::RequestFraming::Chunked,
            },
            None => h1::RequestFraming::Length(body.len() as u64),
        };
        let mut head = Vec::with_capacity(512 + body.len().min(COPY_BODY_MAX));
        h1::encode_head(&mut head, &method, &target, &headers, framing);
        let head_len = head.len();
        let mut allow_reuse = true;
        loop {
            let (mut conn, reused) = match allow_reuse.then(|| self.take_idle(&key)).flatten() {
                Some(c) => (c, true),
                None => match self.connect(ep, &key, connect_timeout).await {
                    Ok(c) => (c, false),
                    Err(mut f) => {
                        f.unsent = upload;
                        return Err(f);
                    }
                },
            };
            head.truncate(head_len);
            let exchange = async {
                write_request(&mut conn, &mut head, &body, &mut upload, framing).await?;
                read_head(&mut conn, method == Method::HEAD, method.is_idempotent()).await
            };
            match tokio::time::timeout(read_timeout, exchange).await {
                Err(_) => {
                    return Err(Failure::new(
                        FailureKind::Timeout,
                        format!("no response head within {} ms", read_timeout.as_millis()),
                    ))
                }
                Ok(Ok(h)) => {
                    crate::rt::busy_poll::touch();
                    return Ok(respond(conn, h));
                }
                // The upstream closed an idle connection just as it was reused: a request
                // that did not reach it (or may safely be repeated) goes to a new one.
                Ok(Err(HeadError::Closed { resend: true, .. })) if reused => {
                    allow_reuse = false;
                }
                Ok(Err(e)) => {
                    let mut f = e.failure();
                    f.unsent = upload;
                    return Err(f);
                }
            }
        }
    }
}

/// Why no response head came.
enum HeadError {
    /// The connection failed or closed before a complete head; `resend`: the request
    /// may go to a new connection (it was not written, or it is idempotent and nothing
    /// of an answer came).
    Closed { detail: String, resend: bool },
    /// What came was not a valid HTTP response head.
    Invalid(h1::H1Error),
}

impl HeadError {
    fn failure(self) -> Failure {
        match self {
            HeadError::Closed { detail, .. } => Failure::new(FailureKind::Reset, detail),
            HeadError::Invalid(e) => Failure::new(FailureKind::InvalidHeader, e.to_string()),
        }
    }
}

/// Writes the head and body: a whole body in the head's write when small, a streamed
/// upload frame by frame (chunk-framed when its length is unknown). The upload leaves its
/// slot once the head is out: from then on it cannot be sent anywhere else.
async fn write_request(
    conn: &mut ConnState,
    head: &mut Vec<u8>,
    body: &Bytes,
    upload: &mut Option<Upload>,
    framing: h1::RequestFraming,
) -> Result<(), HeadError> {
    let closed = |e: io::Error, resend: bool| HeadError::Closed {
        detail: format!("sending the request: {e}"),
        resend,
    };
    if upload.is_none() {
        let r = if body.len() <= COPY_BODY_MAX {
            head.extend_from_slice(body);
            conn.io.write_all(head).await
        } else {
            match conn.io.write_all(head).await {
                Ok(()) => conn.io.write_all(body).await,
                Err(e) => Err(e),
            }
        };
        // TLS may hold records back until flushed (TCP's flush does nothing).
        return match r {
            Ok(()) => conn.io.flush().await,
            Err(e) => Err(e),
        }
        .map_err(|e| closed(e, true));
    }
    conn.io.write_all(head).await.map_err(|e| closed(e, true))?;
    let Some(mut up) = upload.take() else {
        return Ok(());
    };
    let chunked = framing == h1::RequestFraming::Chunked;
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut up).poll_frame(cx)).await {
        let data = match frame {
            Err(e) => {
                let e = io::Error::other(format!("reading the client's upload: {e}"));
                return Err(closed(e, false));
            }
            Ok(f) => match f.into_data() {
                Ok(d) if !d.is_empty() => d,
                _ => continue,
            },
        };
        let r = if chunked {
            let mut framed = Vec::with_capacity(data.len() + 20);
            framed.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            framed.extend_from_slice(&data);
            framed.extend_from_slice(b"\r\n");
            conn.io.write_all(&framed).await
        } else {
            conn.io.write_all(&data).await
        };
        r.map_err(|e| closed(e, false))?;
    }
    if chunked {
        conn.io
            .write_all(b"0\r\n\r\n")
            .await
            .map_err(|e| closed(e, false))?;
    }
    conn.io.flush().await.map_err(|e| closed(e, false))
}

/// Reads until a whole response head is in, and parses it. `idempotent`: a close before
/// any byte of an answer lets the request be sent again.
async fn read_head(
    conn: &mut ConnState,
    head_request: bool,
    idempotent: bool,
) -> Result<h1::Head, HeadError> {
    loop {
        if !conn.buf.is_empty() {
            match h1::parse_head(&mut conn.buf, head_request) {
                Ok(Some(h)) => return Ok(h),
                Ok(None) => {}
                Err(e) => return Err(HeadError::Invalid(e)),
            }
        }
        conn.buf.reserve(READ_CHUNK);
        let got = conn.io.read_buf(&mut conn.buf).await;
        let resend = idempotent && conn.buf.is_empty();
        match got {
            Ok(0) => {
                return Err(HeadError::Closed {
                    detail: "connection closed before a response head".into(),
                    resend,
                })
            }
            Ok(_) => {}
            Err(e) => {
                return Err(HeadError::Closed {
                    detail: format!("reading the response: {e}"),
                    resend,
                })
            }
        }
    }
}

/// The response: its head, and a body that reads the rest from the connection.
fn respond(conn: Box<ConnState>, h: h1::Head) -> Response<Incoming> {
    let peer = conn.peer;
    let mut body = Incoming {
        conn: Some(conn),
        decoder: h.body,
        reuse: h.keep_alive,
        peer,
    };
    // No body (204, HEAD, length 0): the connection is free right away.
    if body.decoder.is_done() {
        body.finish();
    }
    let mut r = Response::new(body);
    *r.status_mut() = h.status;
    *r.version_mut() = h.version;
    *r.headers_mut() = h.headers;
    r
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use http_body_util::BodyExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncBufReadExt as _;

    /// A raw HTTP/1.1 server on 127.0.0.1: answers each request on a connection with the
    /// next of `answers` (closing after the last), and counts the connections it accepted.
    async fn server(answers: Vec<&'static str>) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut s = tokio::io::BufReader::new(s);
                    for a in answers {
                        // The request head, then its content-length body.
                        let mut len = 0usize;
                        loop {
                            let mut line = String::new();
                            if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap();
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0u8; len];
                        s.read_exact(&mut body).await.unwrap();
                        s.get_mut().write_all(a.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (port, accepted)
    }

    fn request(body: &'static str) -> OutRequest<'static> {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, "up".parse().unwrap());
        OutRequest {
            method: Method::POST,
            target: "/v1/x".parse().unwrap(),
            headers: headers.into(),
            body: Bytes::from_static(body.as_bytes()),
            upload: None,
        }
    }

    async fn send(
        pool: &Upstreams,
        port: u16,
        body: &'static str,
    ) -> Result<Response<Incoming>, Failure> {
        let ep = Endpoint {
            https: false,
            host: "127.0.0.1",
            port,
            trust: None,
        };
        let t = Duration::from_secs(5);
        pool.send(&ep, request(body), t, t).await
    }

    async fn call(pool: &Upstreams, port: u16, body: &'static str) -> Result<(u16, Bytes), String> {
        let resp = send(pool, port, body).await.map_err(|f| f.detail)?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, bytes.to_bytes()))
    }

    #[tokio::test]
    async fn keep_alive_connections_are_reused() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let chunked = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n";
        let (port, accepted) = server(vec![ok, chunked, ok]).await;
        let pool = Upstreams::new();
        for (body, want) in [("{}", "ok"), ("", "abc"), ("x", "ok")] {
            let got = call(&pool, port, body).await.unwrap();
            assert_eq!(got, (200, Bytes::from(want)));
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for all three"
        );
    }

    #[tokio::test]
    async fn a_body_until_close_is_read_whole_and_its_connection_not_kept() {
        let close = "HTTP/1.1 200 OK\r\n\r\nall of it";
        let (port, accepted) = server(vec![close]).await;
        let pool = Upstreams::new();
        for _ in 0..2 {
            let got = call(&pool, port, "").await.unwrap();
            assert_eq!(got, (200, Bytes::from("all of it")));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_upstream_closed_is_replaced() {
        // One answer per connection, then the server closes it.
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (port, accepted) = server(vec![ok]).await;
        let pool = Upstreams::new();
        assert_eq!(call(&pool, port, "").await.unwrap().0, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(call(&pool, port, "").await.unwrap().0, 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn cut_and_invalid_answers_are_failures() {
        let (port, _) = server(vec!["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"]).await;
        let pool = Upstreams::new();
        let e = call(&pool, port, "").await.unwrap_err();
        assert!(e.contains("closed before the message completed"), "{e}");
        let (port, _) = server(vec!["HTTP/1.1 200 OK\r\nbad header line\r\n\r\n"]).await;
        let f = send(&pool, port, "").await.unwrap_err();
        assert_eq!(f.kind, FailureKind::InvalidHeader);
        let (port, _) = server(vec![""]).await;
        let f = send(&pool, port, "").await.unwrap_err();
        assert_eq!(f.kind, FailureKind::Reset, "{}", f.detail);
    }
}

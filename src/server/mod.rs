//! Listeners (proxy and admin), connection handling and graceful shutdown.

pub mod conns;
mod h1_conn;
mod h1_wire;
pub mod parse_errors;
pub mod reload;
mod rewind;
pub mod status;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::gateway::Gateway;
use crate::net::inbound;

/// Where to listen.
#[derive(Clone)]
pub struct ServeOptions {
    pub proxy_listen: SocketAddr,
    /// None disables the Admin API.
    pub admin_listen: Option<SocketAddr>,
    /// How long shutdown waits for in-flight requests and streams.
    pub drain_timeout: Duration,
    /// Keep polling this long after request activity before sleeping (0 = off).
    pub busy_poll: Duration,
    /// The proxy's TLS listener and its certificate; None = no TLS listener.
    pub proxy_tls: Option<(SocketAddr, tls::LiveAcceptor)>,
    /// The Admin API's TLS listener (same certificate); None = none.
    pub admin_tls: Option<(SocketAddr, tls::LiveAcceptor)>,
    /// Client connection timeouts and the connection cap.
    pub limits: conns::Limits,
    /// Threads that serve the proxy listeners, each with its own single-threaded runtime:
    /// the calling runtime plus `workers - 1` more (0 and 1 mean the calling one only).
    pub workers: usize,
}

/// A running gateway; `shutdown` drains it.
pub struct Running {
    pub proxy_addr: SocketAddr,
    /// The TLS listener's address, when there is one.
    pub proxy_tls_addr: Option<SocketAddr>,
    /// The Admin API's TLS listener address, when there is one.
    pub admin_tls_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, waits for in-flight requests and streams (up to the drain timeout).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        crate::proxy::response::settle_deferred(Duration::from_secs(2)).await;
        let gateway = self.gateway.clone();
        let flushed = tokio::task::spawn_blocking(move || flush_sinks(&gateway)).await;
        if let Err(e) = flushed {
            tracing::warn!(error = %e, "flushing the log queues on shutdown failed");
        }
    }
}

/// Binds the listeners and starts serving: the proxy answers with `admin.gw`, the Admin
/// API with `admin`.
pub async fn start(admin: Arc<Admin>, opts: ServeOptions) -> std::io::Result<Running> {
    let gateway = admin.gw.clone();
    let (stop, stop_rx) = watch::channel(false);
    crate::rt::busy_poll::spawn(opts.busy_poll);
    crate::proxy::response::start_log_runner();
    let limits = opts.limits;
    let body_ms = limits.body_timeout.map(|d| d.as_millis() as u64);
    gateway
        .body_timeout_ms
        .store(body_ms.unwrap_or(u64::MAX), Ordering::Relaxed);
    let registry = Arc::new(conns::Registry::new(conns::effective_max(
        limits.max_connections,
    )));
    let shared = (gateway.clone(), limits, registry);
    let proxy = bind("proxy (--proxy-listen)", opts.proxy_listen).await?;
    let proxy_addr = proxy.local_addr()?;
    let mut proxy_tls = None;
    if let Some((addr, acceptor)) = opts.proxy_tls.clone() {
        let l = bind("proxy TLS (--proxy-tls-listen)", addr).await?;
        proxy_tls = Some((l, acceptor));
    }
    let proxy_tls_addr = match &proxy_tls {
        Some((l, _)) => Some(l.local_addr()?),
        None => None,
    };
    let listeners = ProxyListeners {
        plain: proxy.into_std()?,
        tls: match proxy_tls {
            Some((l, a)) => Some((l.into_std()?, a)),
            None => None,
        },
    };
    let mut tasks = Vec::new();
    let drain = opts.drain_timeout;
    let counters = (0..opts.workers.max(1))
        .map(|_| Default::default())
        .collect();
    let _ = gateway.stats.worker_accepted.set(counters);
    for n in 1..opts.workers.max(1) {
        let copy = listeners.try_clone()?;
        let (stop, shared) = (stop_rx.clone(), shared.clone());
        tasks.push(start_worker(n, copy, stop, drain, shared, opts.busy_poll).await?);
    }
    tasks.extend(serve_proxy(listeners, &stop_rx, drain, &shared)?);
    let _ = gateway.proxy_listeners.set(
        std::iter::once((proxy_addr, false))
            .chain(proxy_tls_addr.map(|a| (a, true)))
            .collect(),
    );
    let admin_node = admin;
    let mut admin_addr = None;
    if let Some(a) = opts.admin_listen {
        let listener = bind("Admin API (--admin-listen)", a).await?;
        admin_addr = Some(listener.local_addr()?);
        let node = admin_node.clone();
        tasks.push(tokio::spawn(serve(
            false,
            listener,
            stop_rx.clone(),
            opts.drain_timeout,
            shared.clone(),
            move |req, _peer| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(crate::admin::handle(&node, req).await) }
            },
            None,
        )));
    }
    let mut admin_tls_addr = None;
    if let Some((a, acceptor)) = opts.admin_tls.clone() {
        let listener = bind("Admin API TLS (--admin-tls-listen)", a).await?;
        admin_tls_addr = Some(listener.local_addr()?);
        let node = admin_node.clone();
        tasks.push(tokio::spawn(serve(
            false,
            listener,
            stop_rx.clone(),
            opts.drain_timeout,
            shared.clone(),
            move |req, _peer| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(crate::admin::handle(&node, req).await) }
            },
            Some(acceptor),
        )));
    }
    let shown = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(
        %proxy_addr,
        proxy_tls = %shown(proxy_tls_addr),
        admin = %shown(admin_addr),
        admin_tls = %shown(admin_tls_addr),
        "tollgate listening"
    );
    Ok(Running {
        proxy_addr,
        proxy_tls_addr,
        admin_tls_addr,
        admin_addr,
        gateway,
        stop,
        tasks,
    })
}

/// The proxy's listening sockets, shared by every worker (each accepts from them).
struct ProxyListeners {
    plain: std::net::TcpListener,
    tls: Option<(std::net::TcpListener, tls::LiveAcceptor)>,
}

impl ProxyListeners {
    /// Another handle on the same sockets, for another worker.
    fn try_clone(&self) -> std::io::Result<ProxyListeners> {
        Ok(ProxyListeners {
            plain: self.plain.try_clone()?,
            tls: match &self.tls {
                Some((l, a)) => Some((l.try_clone()?, a.clone())),
                None => None,
            },
        })
    }
}

/// Starts accepting on the proxy listeners on the current runtime; the tasks end once
/// `stop` is set and their connections drained.
fn serve_proxy(
    listeners: ProxyListeners,
    stop: &watch::Receiver<bool>,
    drain: Duration,
    shared: &(Arc<Gateway>, conns::Limits, Arc<conns::Registry>),
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    let plain = TcpListener::from_std(listeners.plain)?;
    let port = plain.local_addr()?.port();
    // A worker's own handle on the gateway: each request clones this one, whose count no
    // other worker's core writes (the gateway's own count is shared by all of them).
    let gw = Arc::new(shared.0.clone());
    tasks.push(tokio::spawn(serve(
        true,
        plain,
        stop.clone(),
        drain,
        shared.clone(),
        move |req, peer| {
            let gw = gw.clone();
            async move { Ok::<_, Infallible>(crate::proxy::handle(&gw, req, peer, "http", port).await) }
        },
        None,
    )));
    if let Some((l, acceptor)) = listeners.tls {
        let l = TcpListener::from_std(l)?;
        let tls_port = l.local_addr()?.port();
        let gw = Arc::new(shared.0.clone());
        tasks.push(tokio::spawn(serve(
            true,
            l,
            stop.clone(),
            drain,
            shared.clone(),
            move |req, peer| {
                let gw = gw.clone();
                async move {
                    Ok::<_, Infallible>(
                        crate::proxy::handle(&gw, req, peer, "https", tls_port).await,
                    )
                }
            },
            Some(acceptor),
        )));
    }
    Ok(tasks)
}

/// Starts proxy worker `n`: a thread with its own single-threaded runtime (and busy
/// poller) accepting from the shared listeners, so requests are served without work
/// stealing or cross-thread wake-ups (the multi-threaded scheduler cost about 15 % more
/// CPU per request, bench/scaling.sh). The returned task ends when the worker has
/// drained its connections and deferred log phases after `stop`; it is returned once the
/// worker accepts, so the gateway announces its address only when every worker listens.
async fn start_worker(
    n: usize,
    listeners: ProxyListeners,
    stop: watch::Receiver<bool>,
    drain: Duration,
    shared: (Arc<Gateway>, conns::Limits, Arc<conns::Registry>),
    busy_poll: Duration,
) -> std::io::Result<JoinHandle<()>> {
    let (ready, listening) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("tg-worker-{n}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            crate::rt::worker::set(u16::try_from(n).unwrap_or(u16::MAX));
            rt.block_on(async move {
                crate::rt::busy_poll::spawn(busy_poll);
                crate::proxy::response::start_log_runner();
                let tasks = match serve_proxy(listeners, &stop, drain, &shared) {
                    Ok(tasks) => tasks,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                for t in tasks {
                    let _ = t.await;
                }
                crate::proxy::response::settle_deferred(Duration::from_secs(2)).await;
            });
            let _ = done.send(());
        })?;
    let started = listening.await.unwrap_or_else(|_| {
        Err(std::io::Error::other(
            "the worker thread ended before listening",
        ))
    });
    started.map_err(|e| std::io::Error::new(e.kind(), format!("proxy worker {n}: {e}")))?;
    Ok(tokio::spawn(async move {
        let _ = finished.await;
    }))
}

/// Binds a listener; the error names it and its address (`Address already in use` alone
/// does not say which of four).
async fn bind(which: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{which} on {addr}: {e}")))
}

/// What every connection task of a listener shares.
#[derive(Clone)]
struct Shared {
    gw: Arc<Gateway>,
    limits: conns::Limits,
    registry: Arc<conns::Registry>,
    stop: watch::Receiver<bool>,
    builder: auto::Builder<TokioExecutor>,
    /// Held by every connection task; the listener's drain waits until all are gone.
    _alive: mpsc::Sender<()>,
}

/// The HTTP/1.1 and HTTP/2 settings every listener uses.
fn builder(limits: &conns::Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // No timer for HTTP/1: hyper's header_read_timeout would arm a new boxed timer for
    // every request on a keep-alive connection; `drive` bounds the same waits with one
    // timer per connection (a request head is only ever awaited while nothing is in
    // flight).
    if let Some(k) = limits.keepalive_timeout {
        // Pings find HTTP/2 peers that vanished without closing (e.g. mid-stream).
        b.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(k)
            .keep_alive_timeout(Duration::from_secs(20));
    }
    b
}

/// Accepts and serves connections until `stop`; `proxy`: a proxy listener, which every
/// worker accepts from.
async fn serve<F, Fut, B>(
    proxy: bool,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
    drain: Duration,
    shared: (Arc<Gateway>, conns::Limits, Arc<conns::Registry>),
    handler: F,
    tls: Option<tls::LiveAcceptor>,
) where
    F: Handler<Fut>,
    Fut: Future<Output = Result<http::Response<B>, Infallible>> + Send + 'static,
    B: SendBody + Unpin,
{
    let (gw, limits, registry) = shared;
    let (alive, mut all_gone) = mpsc::channel::<()>(1);
    let shared = Shared {
        gw,
        limits,
        registry,
        stop: stop.clone(),
        builder: builder(&limits),
        _alive: alive,
    };
    let mut stop = stop;
    loop {
        if proxy && shared.gw.stats.accepted_ahead() {
            // Every worker is woken by a new connection, but a busy-polling one sees it
            // first and took them all (tests/serve.rs: [25, 0, 0]); past its share it leaves
            // the next one to the others for a moment, and takes it if none did.
            tokio::time::sleep(ACCEPT_LEAVE).await;
        }
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: free one by closing the
                        // connection idle the longest, and back off instead of spinning.
                        if shared.registry.evict_one() {
                            shared.gw.stats.evicted.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some((id, tracker, evicted)) = shared.registry.admit() else {
                    shared.gw.stats.refused.fetch_add(1, Ordering::Relaxed);
                    if shared.registry.should_warn() {
                        tracing::warn!(%peer, max = shared.registry.max(), "connection refused: every open connection is busy (--max-connections)");
                    }
                    continue;
                };
                if evicted {
                    shared.gw.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    if shared.registry.should_warn() {
                        tracing::warn!(max = shared.registry.max(), "at the connection cap: closed the connection idle the longest (--max-connections)");
                    }
                }
                let _ = stream.set_nodelay(true);
                shared.gw.stats.count_accepted();
                shared.gw.stats.active.fetch_add(1, Ordering::Relaxed);
                let h = handler.clone();
                let shared = shared.clone();
                let tls = tls.as_ref().map(|a| a.load_full());
                tokio::spawn(async move {
                    connection(stream, peer, tls, h, &tracker, &shared).await;
                    shared.registry.remove(id);
                    shared.gw.stats.active.fetch_sub(1, Ordering::Relaxed);
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    drop(shared);
    if tokio::time::timeout(drain, all_gone.recv()).await.is_err() {
        tracing::warn!(
            timeout_ms = drain.as_millis() as u64,
            "drain timeout reached; closing remaining connections"
        );
    }
}

/// A response body hyper can send on a connection (the proxy's and the Admin API's).
trait SendBody:
    hyper::body::Body<
        Data = bytes::Bytes,
        Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    > + Send
    + 'static
{
}

impl<B> SendBody for B where
    B: hyper::body::Body<
            Data = bytes::Bytes,
            Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
        > + Send
        + 'static
{
}

/// What a connection task serves: hyper's service bounds, written once.
trait ConnService<B: SendBody>:
    hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<S, B: SendBody> ConnService<B> for S where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// A request handler of a listener (the proxy's or the Admin API's).
trait Handler<Fut>:
    Fn(http::Request<inbound::Body>, SocketAddr) -> Fut + Clone + Send + Sync + 'static
{
}

impl<T, Fut> Handler<Fut> for T where
    T: Fn(http::Request<inbound::Body>, SocketAddr) -> Fut + Clone + Send + Sync + 'static
{
}

/// Serves one connection (after its TLS handshake, in the connection's own task, never in
/// the accept loop) until it ends, the gateway stops, or a limit closes it.
async fn connection<F, Fut, B>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<tokio_rustls::TlsAcceptor>>,
    handler: F,
    tracker: &Arc<conns::Tracker>,
    shared: &Shared,
) where
    F: Handler<Fut>,
    Fut: Future<Output = Result<http::Response<B>, Infallible>> + Send + 'static,
    B: SendBody + Unpin,
{
    let Some(acceptor) = tls else {
        return serve_io(stream, true, peer, handler, tracker, shared).await;
    };
    // The handshake counts toward the header timeout, as in nginx.
    let limit = shared.limits.header_timeout.unwrap_or(FAR);
    let shake = tokio::select! {
        r = tokio::time::timeout(limit, acceptor.accept(stream)) => r,
        _ = tracker.evict.notified() => return,
    };
    match shake {
        Ok(Ok(tls)) => {
            let h1 = tls.get_ref().1.alpn_protocol() != Some(b"h2");
            serve_io(tls, h1, peer, handler, tracker, shared).await
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => {
            shared
                .gw
                .stats
                .header_timeouts
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "closed a connection: TLS handshake not done within the header timeout");
        }
    }
}

/// Serves a connection's requests: HTTP/1.1 ones here (`h1`) until one needs hyper, the
/// rest (HTTP/2, upgrades, ...) by hyper, given the bytes already read.
async fn serve_io<I, F, Fut, B>(
    mut io: I,
    h1: bool,
    peer: SocketAddr,
    handler: F,
    tracker: &Arc<conns::Tracker>,
    shared: &Shared,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Handler<Fut>,
    Fut: Future<Output = Result<http::Response<B>, Infallible>> + Send + 'static,
    B: SendBody + Unpin,
{
    let read = if h1 {
        match h1_conn::serve(&mut io, &handler, peer, tracker, shared).await {
            h1_conn::End::Closed => return,
            h1_conn::End::Handover(read) => read,
        }
    } else {
        bytes::Bytes::new()
    };
    let t = tracker.clone();
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let guard = t.begin();
        let fut = handler(req.map(inbound::Body::Hyper), peer);
        async move {
            let resp = match fut.await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(resp.map(|b| conns::Tracked::new(b, guard)))
        }
    });
    let io = parse_errors::JsonParseErrors::new(TokioIo::new(rewind::Rewind::new(read, io)));
    let conn = shared
        .builder
        .serve_connection_with_upgrades(io, svc)
        .into_owned();
    drive(conn, peer, tracker, shared).await
}

/// A timeout that never fires (a limit turned off).
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How long a worker past its share of connections leaves a new one to the others.
const ACCEPT_LEAVE: Duration = Duration::from_millis(1);

/// How long a connection asked to close gracefully may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Runs a connection, closing it when it idles past its limit (the header timeout before
/// its first request, the keep-alive timeout after), when the cap evicts it, or gracefully
/// when the gateway stops.
async fn drive<I, S, B>(
    conn: auto::UpgradeableConnection<'static, I, S, TokioExecutor>,
    peer: SocketAddr,
    tracker: &conns::Tracker,
    shared: &Shared,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: ConnService<B>,
    B: SendBody,
{
    let limits = shared.limits;
    let stats = &shared.gw.stats;
    let mut stop = shared.stop.clone();
    let mut conn = std::pin::pin!(conn);
    let sleep = tokio::time::sleep(limits.header_timeout.unwrap_or(FAR));
    let mut sleep = std::pin::pin!(sleep);
    let mut closing = *stop.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    let mut grace_started = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                // A connection this loop already timed out is counted and logged.
                if grace_started {
                    return;
                }
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tracker.evict.notified() => {
                tracing::debug!(%peer, "closed a connection to make room at the connection cap");
                return;
            }
            _ = &mut sleep => {
                if grace_started {
                    return;
                }
                let now = tokio::time::Instant::now();
                let Some(idle) = tracker.idle_for() else {
                    sleep.as_mut().reset(now + limits.keepalive_timeout.unwrap_or(FAR));
                    continue;
                };
                let (allowed, what) = if tracker.served_any() {
                    (limits.keepalive_timeout, "no further request within the keep-alive timeout")
                } else {
                    (limits.header_timeout, "no complete request head within the header timeout")
                };
                let allowed = allowed.unwrap_or(FAR);
                if idle < allowed {
                    sleep.as_mut().reset(now + (allowed - idle));
                    continue;
                }
                if tracker.served_any() {
                    stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(%peer, "closed a connection: {what}");
                conn.as_mut().graceful_shutdown();
                closing = true;
                grace_started = true;
                sleep.as_mut().reset(now + CLOSE_GRACE);
            }
        }
    }
}

/// Writes out what every log sink still holds (shutdown): file-log's pending lines, then
/// the analytics and http-log queues, which hold the last moments' records: written,
/// delivered or spilled before the process exits, not lost with it (up to 5 s each).
fn flush_sinks(gateway: &crate::gateway::Gateway) {
    let limit = std::time::Duration::from_secs(5);
    crate::observe::file_log::FileLogSink::flush_all();
    if let Some(a) = gateway.analytics.get() {
        if !a.flush(limit) {
            tracing::warn!("analytics: shutdown came before every queued record was written");
        }
    }
    let snapshot = gateway.snapshot.load();
    for p in &snapshot.plugins {
        if let crate::plugins::Plugin::HttpLog(sink) = &p.plugin {
            if !sink.flush(limit) {
                tracing::warn!(
                    "http-log: shutdown came before every queued record was delivered or spilled"
                );
            }
        }
    }
}

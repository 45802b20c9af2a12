//! Listeners (proxy and admin), connection handling and graceful shutdown.

pub mod busy_poll;
pub mod reload;
pub mod sni;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::proxy::Gateway;

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
        let flushed =
            tokio::task::spawn_blocking(move || crate::observe::flush_sinks(&gateway)).await;
        if let Err(e) = flushed {
            tracing::warn!(error = %e, "flushing the log queues on shutdown failed");
        }
    }
}

/// Binds the listeners and starts serving.
pub async fn start(gateway: Arc<Gateway>, opts: ServeOptions) -> std::io::Result<Running> {
    let (stop, stop_rx) = watch::channel(false);
    busy_poll::spawn(opts.busy_poll);
    let proxy = TcpListener::bind(opts.proxy_listen).await?;
    let proxy_addr = proxy.local_addr()?;
    let mut tasks = Vec::new();
    let gw = gateway.clone();
    let port = proxy_addr.port();
    tasks.push(tokio::spawn(serve(
        proxy,
        stop_rx.clone(),
        opts.drain_timeout,
        gateway.clone(),
        move |req, peer| {
            let gw = gw.clone();
            async move { Ok::<_, Infallible>(crate::proxy::handle(gw, req, peer, "http", port).await) }
        },
        None,
    )));
    let mut proxy_tls_addr = None;
    if let Some((addr, acceptor)) = opts.proxy_tls.clone() {
        let l = TcpListener::bind(addr).await?;
        proxy_tls_addr = Some(l.local_addr()?);
        let tls_port = l.local_addr()?.port();
        let gw = gateway.clone();
        tasks.push(tokio::spawn(serve(
            l,
            stop_rx.clone(),
            opts.drain_timeout,
            gateway.clone(),
            move |req, peer| {
                let gw = gw.clone();
                async move {
                    Ok::<_, Infallible>(
                        crate::proxy::handle(gw, req, peer, "https", tls_port).await,
                    )
                }
            },
            Some(acceptor),
        )));
    }
    let mut admin_addr = None;
    if let Some(a) = opts.admin_listen {
        let admin = TcpListener::bind(a).await?;
        admin_addr = Some(admin.local_addr()?);
        let gw = gateway.clone();
        tasks.push(tokio::spawn(serve(
            admin,
            stop_rx.clone(),
            opts.drain_timeout,
            gateway.clone(),
            move |req, _peer| {
                let gw = gw.clone();
                async move { Ok::<_, Infallible>(crate::admin::handle(&gw, req).await) }
            },
            None,
        )));
    }
    let mut admin_tls_addr = None;
    if let Some((a, acceptor)) = opts.admin_tls.clone() {
        let admin = TcpListener::bind(a).await?;
        admin_tls_addr = Some(admin.local_addr()?);
        let gw = gateway.clone();
        tasks.push(tokio::spawn(serve(
            admin,
            stop_rx.clone(),
            opts.drain_timeout,
            gateway.clone(),
            move |req, _peer| {
                let gw = gw.clone();
                async move { Ok::<_, Infallible>(crate::admin::handle(&gw, req).await) }
            },
            Some(acceptor),
        )));
    }
    tracing::info!(%proxy_addr, admin = ?admin_addr, "tollgate listening");
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

async fn serve<F, Fut, B>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    gw: Arc<Gateway>,
    handler: F,
    tls: Option<tls::LiveAcceptor>,
) where
    F: Fn(http::Request<hyper::body::Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                gw.stats.accepted.fetch_add(1, Ordering::Relaxed);
                gw.stats.active.fetch_add(1, Ordering::Relaxed);
                let h = handler.clone();
                let svc = service_fn(move |req| h(req, peer));
                let gw = gw.clone();
                match &tls {
                    None => {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                        let fut = graceful.watch(conn);
                        tokio::spawn(async move {
                            if let Err(e) = fut.await {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                            gw.stats.active.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    Some(acceptor) => {
                        // The handshake runs in the connection's own task, never in the
                        // accept loop; a client that stalls in it is dropped after 10 s.
                        // The certificate current now (it may be renewed while we run).
                        let acceptor = acceptor.load_full();
                        let builder = builder.clone();
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            let shake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
                            match shake {
                                Ok(Ok(tls)) => {
                                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc).into_owned();
                                    if let Err(e) = watcher.watch(conn).await {
                                        tracing::debug!(error = %e, "connection ended with an error");
                                    }
                                }
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                            gw.stats.active.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = drain.as_millis() as u64,
            "drain timeout reached; closing remaining connections"
        );
    }
}

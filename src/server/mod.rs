//! Listeners (proxy and admin), connection handling and graceful shutdown.

pub mod busy_poll;
pub mod reload;

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
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub proxy_listen: SocketAddr,
    /// None disables the Admin API.
    pub admin_listen: Option<SocketAddr>,
    /// How long shutdown waits for in-flight requests and streams.
    pub drain_timeout: Duration,
    /// Keep polling this long after request activity before sleeping (0 = off).
    pub busy_poll: Duration,
}

/// A running gateway; `shutdown` drains it.
pub struct Running {
    pub proxy_addr: SocketAddr,
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
        crate::observe::file_log::FileLogSink::flush_all();
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
    )));
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
        )));
    }
    tracing::info!(%proxy_addr, admin = ?admin_addr, "tollgate listening");
    Ok(Running {
        proxy_addr,
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
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                let fut = graceful.watch(conn);
                let gw = gw.clone();
                tokio::spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    gw.stats.active.fetch_sub(1, Ordering::Relaxed);
                });
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

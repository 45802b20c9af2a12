//! Kong's status listener (`--status-listen`, off by default): `GET /status` and
//! `GET /status/ready` on a port of their own, for load balancers and Kubernetes probes,
//! without exposing the Admin API. It opens before the configuration is loaded, so a node
//! still waiting for its cluster's store answers `/status/ready` with 503 rather than not at
//! all.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::admin::Admin;

/// The listener: its address, and the node it reports on once it has one.
pub struct StatusListener {
    pub addr: SocketAddr,
    node: Arc<OnceLock<Arc<Admin>>>,
}

impl StatusListener {
    /// The node is serving: from now on `/status/ready` says so.
    pub fn serve_node(&self, admin: Arc<Admin>) {
        let _ = self.node.set(admin);
    }
}

/// Listens on `addr` and answers probes until the process ends.
pub async fn start(addr: SocketAddr) -> std::io::Result<StatusListener> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("status listener (--status-listen) on {addr}: {e}"),
        )
    })?;
    let addr = listener.local_addr()?;
    let node: Arc<OnceLock<Arc<Admin>>> = Arc::default();
    let shared = node.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let node = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let node = node.clone();
                    async move { Ok::<_, Infallible>(answer(node.get(), &req)) }
                });
                // Probes are short: one HTTP/1.1 connection each, no limits beyond hyper's.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(StatusListener { addr, node })
}

/// One probe's answer.
fn answer<B>(node: Option<&Arc<Admin>>, req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/');
    if path != "/status" && path != "/status/ready" {
        return reply(StatusCode::NOT_FOUND, json!({"message": "Not found"}));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "Method not allowed"}),
        );
    }
    let Some(node) = node else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"message": "no configuration loaded yet", "ready": false}),
        );
    };
    if path == "/status" {
        return reply(StatusCode::OK, crate::admin::status_of(node));
    }
    // Ready once a configuration is loaded; a shared store that is down is reported but
    // does not make the node unready, since it keeps serving its last configuration (taking
    // every node out of the load balancer when PostgreSQL blips would stop all traffic).
    let mut down = Vec::new();
    if let Some(c) = node.control.cluster.as_deref() {
        if !c.store_up() {
            down.push("configuration store (postgresql)");
        }
    }
    reply(
        StatusCode::OK,
        json!({"message": "ready", "ready": true, "stores_down": down}),
    )
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

//! One upstream attempt over a pooled HTTP/1.1 + HTTP/2 client (rustls for https).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{HttpConnector, HttpInfo};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The client type used for every upstream.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

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
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub detail: String,
}

/// Pooled clients keyed by connect timeout (hyper sets it per connector).
pub struct Upstreams {
    clients: Mutex<HashMap<u64, HttpClient>>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstreams {
    /// An empty pool set; clients are built on first use.
    pub fn new() -> Self {
        Upstreams {
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, connect_timeout: Duration) -> HttpClient {
        let key = connect_timeout.as_millis() as u64;
        let mut map = match self.clients.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(key)
            .or_insert_with(|| build_client(connect_timeout))
            .clone()
    }

    /// Sends one request and waits for the response head. The connector enforces
    /// `connect_timeout`; `read_timeout` bounds the whole wait for the head (hyper's pool
    /// does not say when a connection was set up, so a new connection's setup counts too).
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<(Response<Incoming>, Option<SocketAddr>), Failure> {
        let client = self.client(connect_timeout);
        match tokio::time::timeout(read_timeout, client.request(req)).await {
            Err(_) => Err(Failure {
                kind: FailureKind::Timeout,
                detail: format!("no response head within {} ms", read_timeout.as_millis()),
            }),
            Ok(Err(e)) => Err(classify(&e)),
            Ok(Ok(resp)) => {
                let addr = resp.extensions().get::<HttpInfo>().map(|i| i.remote_addr());
                Ok((resp, addr))
            }
        }
    }
}

fn build_client(connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build(https)
}

fn classify(e: &hyper_util::client::legacy::Error) -> Failure {
    use std::error::Error as _;
    let mut detail = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    let kind = if e.is_connect() {
        if detail.contains("timed out") || detail.contains("timeout") {
            FailureKind::Timeout
        } else {
            FailureKind::Connect
        }
    } else if let Some(h) = e.source().and_then(|s| s.downcast_ref::<hyper::Error>()) {
        if h.is_parse() {
            FailureKind::InvalidHeader
        } else if h.is_timeout() {
            FailureKind::Timeout
        } else {
            FailureKind::Reset
        }
    } else {
        FailureKind::Reset
    };
    Failure { kind, detail }
}

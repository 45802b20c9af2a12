//! `http-log`: the same records file-log writes, POSTed to a collector in batches by a
//! sender thread (its own single-threaded runtime, so a slow collector never touches the
//! proxy's). The queue is bounded (`queue.max_entries`); a batch that still fails after
//! retries with exponential backoff (`queue.max_retry_time`), and records that find the
//! queue full, are appended to a spill file and counted — never dropped silently.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};

use crate::config::plugins::nullable;
use crate::rt::deferred::Deferred;

/// Kong's `queue` record.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default = "one")]
    pub max_batch_size: u64,
    #[serde(default = "one_f")]
    pub max_coalescing_delay: f64,
    #[serde(default = "max_entries")]
    pub max_entries: u64,
    pub max_bytes: Option<u64>,
    #[serde(default = "sixty")]
    pub max_retry_time: f64,
    #[serde(default = "initial_delay")]
    pub initial_retry_delay: f64,
    #[serde(default = "sixty")]
    pub max_retry_delay: f64,
    /// Kong's `concurrency_limit` (1 or -1); one sender either way.
    pub concurrency_limit: Option<i64>,
}

fn one() -> u64 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn max_entries() -> u64 {
    10_000
}
fn sixty() -> f64 {
    60.0
}
fn initial_delay() -> f64 {
    0.01
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_batch_size: 1,
            max_coalescing_delay: 1.0,
            max_entries: 10_000,
            max_bytes: None,
            max_retry_time: 60.0,
            initial_retry_delay: 0.01,
            max_retry_delay: 60.0,
            concurrency_limit: None,
        }
    }
}

/// `http-log` config (Kong's fields).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpLogConfig {
    pub http_endpoint: String,
    #[serde(default = "post")]
    pub method: String,
    #[serde(default = "json_type")]
    pub content_type: String,
    #[serde(default = "timeout")]
    pub timeout: u64,
    #[serde(default = "keepalive")]
    pub keepalive: u64,
    /// Extra headers sent to the collector (e.g. its API key).
    #[serde(default, deserialize_with = "nullable")]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub queue: QueueConfig,
    /// Kong's deprecated queue fields (folded into `queue` by Kong); accepted.
    pub retry_count: Option<u64>,
    pub queue_size: Option<u64>,
    pub flush_timeout: Option<f64>,
    pub custom_fields_by_lua: Option<serde_json::Map<String, serde_json::Value>>,
}

fn post() -> String {
    "POST".into()
}
fn json_type() -> String {
    "application/json".into()
}
fn timeout() -> u64 {
    10_000
}
fn keepalive() -> u64 {
    60_000
}

impl HttpLogConfig {
    /// Field errors (path under `config`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        match self.http_endpoint.parse::<Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some() => {
            }
            _ => errs.push((
                "http_endpoint".into(),
                "missing host in url (an http:// or https:// URL is required)".into(),
            )),
        }
        if !matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            errs.push(("method".into(), "expected one of: POST, PUT, PATCH".into()));
        }
        if !matches!(
            self.content_type.as_str(),
            "application/json" | "application/json; charset=utf-8"
        ) {
            errs.push((
                "content_type".into(),
                "expected one of: application/json, application/json; charset=utf-8".into(),
            ));
        }
        if self
            .custom_fields_by_lua
            .as_ref()
            .is_some_and(|m| !m.is_empty())
        {
            errs.push((
                "custom_fields_by_lua".into(),
                "Lua is not supported by tollgate".into(),
            ));
        }
        if self.queue.max_batch_size == 0 || self.queue.max_entries == 0 {
            errs.push((
                "queue".into(),
                "max_batch_size and max_entries must be at least 1".into(),
            ));
        }
        for (k, v) in &self.headers {
            if HeaderName::try_from(k.as_str()).is_err()
                || HeaderValue::try_from(v.as_str()).is_err()
            {
                errs.push((format!("headers.{k}"), "not a valid header".into()));
            }
        }
        errs
    }
}

static SPILL_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Sets where undeliverable records go (the data directory); once, at start.
pub fn set_spill_dir(dir: PathBuf) {
    let _ = SPILL_DIR.set(dir);
}

/// Where undeliverable records go: the data directory, else the default one.
pub fn spill_dir() -> PathBuf {
    SPILL_DIR
        .get()
        .cloned()
        .unwrap_or_else(crate::rt::data_dir::default_data_dir)
}

/// Delivery counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct HttpLogStats {
    pub sent: AtomicU64,
    pub spilled: AtomicU64,
    pub retries: AtomicU64,
}

/// What a sender's queue carries.
enum Msg {
    Record(Arc<crate::observe::log::LogJob>),
    /// Deliver what is queued now, one attempt per batch, spilling what fails; then
    /// answer (shutdown).
    Flush(SyncSender<()>),
}

/// A compiled `http-log` instance: the queue into its sender thread.
#[derive(Debug)]
pub struct HttpLogSink {
    tx: SyncSender<Msg>,
    pub stats: Arc<HttpLogStats>,
    spill: PathBuf,
    /// The sender thread, started when the config goes into service.
    sender: Deferred,
}

impl HttpLogSink {
    /// The sink for `c` (records queue until [`HttpLogSink::activate`] starts its sender);
    /// undeliverable records go to `spill_dir/http-log-<id>.jsonl`.
    pub fn new(id: &str, c: &HttpLogConfig, spill_dir: PathBuf) -> Arc<HttpLogSink> {
        let capacity = usize::try_from(c.queue.max_entries)
            .unwrap_or(10_000)
            .max(1);
        let (tx, rx) = sync_channel(capacity);
        let stats = Arc::new(HttpLogStats::default());
        let spill = spill_dir.join(format!("http-log-{id}.jsonl"));
        let sender = Sender {
            rx,
            config: c.clone(),
            stats: stats.clone(),
            spill: spill.clone(),
        };
        Arc::new(HttpLogSink {
            tx,
            stats,
            spill,
            sender: Deferred::new("tollgate-http-log", move || sender.run()),
        })
    }

    /// Starts the sender thread (once): it replays what earlier runs spilled, then delivers.
    pub fn activate(&self) -> Result<(), String> {
        self.sender.start()
    }

    /// Queues one record; a full queue spills it.
    pub fn send(&self, record: Arc<crate::observe::log::LogJob>) {
        if let Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) =
            self.tx.try_send(Msg::Record(record))
        {
            if let Msg::Record(r) = m {
                spill(&self.spill, &[r], &self.stats);
            }
        }
    }

    /// Delivers (or spills) every record queued so far, waiting up to `limit`; false when
    /// the sender did not finish in time. Called on shutdown.
    pub fn flush(&self, limit: Duration) -> bool {
        if !self.sender.started() {
            // Never in service: nothing was queued.
            return true;
        }
        super::flush_queue(&self.tx, Msg::Flush, limit)
    }

    /// Where undeliverable records go.
    pub fn spill_path(&self) -> &std::path::Path {
        &self.spill
    }
}

fn spill(
    path: &std::path::Path,
    records: &[Arc<crate::observe::log::LogJob>],
    stats: &HttpLogStats,
) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = crate::rt::data_dir::private_options()
        .create(true)
        .append(true)
        .open(path);
    match file {
        Ok(f) => {
            let mut w = std::io::BufWriter::new(f);
            for r in records {
                let _ = w.write_all(r.line());
                let _ = w.write_all(b"\n");
            }
            let _ = w.flush();
            stats
                .spilled
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            tracing::warn!(records = records.len(), file = %path.display(), "http-log: records not delivered, spilled");
        }
        Err(e) => {
            tracing::error!(records = records.len(), error = %e, "http-log: records not delivered and the spill file is unusable")
        }
    }
}

struct Sender {
    rx: Receiver<Msg>,
    config: HttpLogConfig,
    stats: Arc<HttpLogStats>,
    spill: PathBuf,
}

impl Sender {
    fn run(self) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            tracing::error!("http-log: cannot start the sender runtime");
            return;
        };
        let q = &self.config.queue;
        let batch_max = usize::try_from(q.max_batch_size).unwrap_or(1).max(1);
        let coalesce = Duration::from_secs_f64(q.max_coalescing_delay.clamp(0.0, 3600.0));
        // Wakes every `max_coalescing_delay` (at most 1 s, at least 10 ms) rather than per
        // record, so the proxy does not pay a context switch per request.
        let poll = coalesce.clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut queued = Vec::new();
        let mut pending: Vec<Arc<crate::observe::log::LogJob>> = Vec::new();
        let mut flushes = Vec::new();
        let mut seen = 0;
        loop {
            std::thread::sleep(poll);
            let closed = super::take_queued(&self.rx, &mut queued);
            for msg in queued.drain(..) {
                match msg {
                    Msg::Record(r) => pending.push(r),
                    Msg::Flush(reply) => flushes.push(reply),
                }
            }
            // On shutdown there is no time for backoff: one attempt, then the spill file.
            let once = !flushes.is_empty();
            for batch in pending.chunks(batch_max) {
                // Formatting shares the proxy's core; sending waits on the network and
                // (while retrying) on backoff, which must not keep the poller aside.
                let body = batch_body(batch, batch_max > 1);
                rt.block_on(self.deliver(batch, body, once));
            }
            crate::observe::log::give_back(&mut pending, &mut seen);
            for reply in flushes.drain(..) {
                let _ = reply.send(());
            }
            if closed {
                return;
            }
        }
    }

    /// Sends one batch, retrying with exponential backoff until `max_retry_time` (with
    /// `once`, not at all), then spilling it.
    async fn deliver(&self, batch: &[Arc<crate::observe::log::LogJob>], body: Bytes, once: bool) {
        let q = &self.config.queue;
        let started = Instant::now();
        let mut delay = q.initial_retry_delay.max(0.001);
        loop {
            match self.post(body.clone()).await {
                Ok(()) => {
                    self.stats
                        .sent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    if once || started.elapsed().as_secs_f64() + delay > q.max_retry_time {
                        tracing::warn!(endpoint = %redact(&self.config.http_endpoint), error = %e, "http-log: giving up after retries");
                        spill(&self.spill, batch, &self.stats);
                        return;
                    }
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs_f64(delay)).await;
                    delay = (delay * 2.0).min(q.max_retry_delay.max(0.001));
                }
            }
        }
    }

    async fn post(&self, body: Bytes) -> Result<(), String> {
        let c = &self.config;
        let target = Collector {
            endpoint: &c.http_endpoint,
            method: &c.method,
            content_type: &c.content_type,
            headers: &c.headers,
            timeout_ms: c.timeout,
        };
        deliver_once(&target, body).await
    }
}

/// A batch's request body: a JSON array of the records, or the one record alone.
fn batch_body(batch: &[Arc<crate::observe::log::LogJob>], as_array: bool) -> Bytes {
    if !as_array {
        return Bytes::from(batch.first().map(|r| r.line().to_vec()).unwrap_or_default());
    }
    let mut aside = crate::rt::busy_poll::StepAside::new();
    let mut b = Vec::new();
    b.push(b'[');
    for (i, r) in batch.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(r.line());
        aside.tick();
    }
    b.push(b']');
    Bytes::from(b)
}

/// Where and how a batch is POSTed (http-log's collector, the OTLP endpoint).
pub(crate) struct Collector<'a> {
    pub endpoint: &'a str,
    pub method: &'a str,
    pub content_type: &'a str,
    pub headers: &'a std::collections::BTreeMap<String, String>,
    pub timeout_ms: u64,
}

/// Sends `body` once; a non-2xx answer is an error.
pub(crate) async fn deliver_once(c: &Collector<'_>, body: Bytes) -> Result<(), String> {
    let uri: Uri = c.endpoint.parse().map_err(|e| format!("{e}"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().unwrap_or("").to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let timeout = Duration::from_millis(c.timeout_ms.max(1));
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut req = Request::builder()
            .method(Method::from_bytes(c.method.as_bytes()).unwrap_or(Method::POST))
            .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(
                http::header::HOST,
                uri.authority().map(|a| a.as_str()).unwrap_or(&host),
            )
            .header(http::header::CONTENT_TYPE, c.content_type)
            .header(http::header::USER_AGENT, crate::SERVER_TOKEN);
        // Credentials in the URL become Basic auth, as Kong does.
        if let Some((userinfo, _)) = uri.authority().and_then(|a| a.as_str().rsplit_once('@')) {
            use base64::Engine;
            let token = base64::engine::general_purpose::STANDARD.encode(
                percent_encoding::percent_decode_str(userinfo)
                    .decode_utf8_lossy()
                    .as_bytes(),
            );
            req = req.header(http::header::AUTHORIZATION, format!("Basic {token}"));
        }
        for (k, v) in c.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let status = if https {
            let tls = crate::net::upstream_tls::connect(None, &host, tcp).await?;
            send(hyper_util::rt::TokioIo::new(tls), req).await?
        } else {
            send(hyper_util::rt::TokioIo::new(tcp), req).await?
        };
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("collector answered {status}"))
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| "timed out".to_string())?
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<http::StatusCode, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    // Read the body so the collector sees a complete exchange.
    let _ = resp.into_body().collect().await;
    Ok(status)
}

/// The endpoint without credentials, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn config_and_redaction() {
        let c: HttpLogConfig =
            serde_json::from_value(serde_json::json!({"http_endpoint": "http://127.0.0.1:9/x"}))
                .unwrap();
        assert!(c.validate().is_empty());
        assert_eq!((c.method.as_str(), c.queue.max_batch_size), ("POST", 1));
        let bad: HttpLogConfig =
            serde_json::from_value(serde_json::json!({"http_endpoint": "nope", "method": "GET"}))
                .unwrap();
        let e = bad.validate();
        assert_eq!(e[0].0, "http_endpoint");
        assert_eq!(e[1].0, "method");
        assert_eq!(
            redact("https://u:p@logs.example/x"),
            "https://…@logs.example/x"
        );
    }
}

//! `opentelemetry`: a span per request (with the GenAI semantic conventions' attributes)
//! and a child span per upstream attempt, exported over OTLP/HTTP with the JSON encoding;
//! W3C `traceparent` is continued from the client and passed to the upstream, one span id
//! per attempt. An exporter thread batches spans off the request path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::entities::Entities;
use crate::config::plugins::nullable;
use crate::observe::log::RequestLog;
use crate::rt::deferred::Deferred;

/// `opentelemetry` config (Kong's fields; traces only).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtelConfig {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://collector:4318/v1/traces`.
    pub traces_endpoint: String,
    /// Kong's logs export; not supported (an error when set).
    pub logs_endpoint: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub resource_attributes: BTreeMap<String, String>,
    /// Share of new traces recorded (0–1; default 1). A client's sampled flag wins.
    pub sampling_rate: Option<f64>,
    pub batch_span_count: Option<u64>,
    /// Seconds between exports (default 1).
    pub batch_flush_delay: Option<f64>,
    pub connect_timeout: Option<u64>,
    pub send_timeout: Option<u64>,
    pub read_timeout: Option<u64>,
    /// Answer the trace id in this response header.
    pub http_response_header_for_traceid: Option<String>,
    /// Kong's propagation settings (W3C `traceparent` is always read and written).
    pub propagation: Option<Value>,
    pub header_type: Option<String>,
    pub queue: Option<Value>,
    /// Tollgate: the OTLP transport — `http/protobuf` (default, as Kong sends),
    /// `http/json`, or `grpc` (the endpoint is then the collector's gRPC address, e.g.
    /// `http://collector:4317`).
    #[serde(default, deserialize_with = "nullable")]
    pub protocol: OtlpProtocol,
}

/// How spans travel to the collector.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
    #[serde(rename = "grpc")]
    Grpc,
}

impl OtelConfig {
    /// Field errors (path under `config`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        match self.traces_endpoint.parse::<http::Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some() => {
            }
            _ => errs.push((
                "traces_endpoint".into(),
                "an http:// or https:// URL of an OTLP/HTTP receiver is required".into(),
            )),
        }
        if self.logs_endpoint.as_deref().is_some_and(|l| !l.is_empty()) {
            errs.push((
                "logs_endpoint".into(),
                "exporting logs over OTLP is not supported by tollgate yet (use http-log)".into(),
            ));
        }
        if let Some(r) = self.sampling_rate {
            if !(0.0..=1.0).contains(&r) {
                errs.push((
                    "sampling_rate".into(),
                    "value must be between 0 and 1".into(),
                ));
            }
        }
        errs
    }
}

/// A request's trace: ids and whether it is recorded.
#[derive(Debug, Clone, Copy)]
pub struct TraceCtx {
    pub trace_id: [u8; 16],
    /// The client's span, when it sent `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// This request's span.
    pub span: [u8; 8],
    pub sampled: bool,
}

fn random16() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

/// A new random span id.
pub fn span_id() -> [u8; 8] {
    let b = random16();
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[..8]);
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl TraceCtx {
    /// Continues the client's W3C trace, or starts one sampled at `rate`.
    pub fn start(headers: &HeaderMap, rate: f64) -> TraceCtx {
        let incoming = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let mut p = v.trim().split('-');
                let (ver, t, s, f) = (p.next()?, p.next()?, p.next()?, p.next()?);
                if ver != "00" {
                    return None;
                }
                let trace: [u8; 16] = unhex(t)?;
                let span: [u8; 8] = unhex(s)?;
                let flags: [u8; 1] = unhex(f)?;
                (trace != [0; 16] && span != [0; 8]).then_some((trace, span, flags[0] & 1 == 1))
            });
        match incoming {
            Some((trace_id, parent, sampled)) => TraceCtx {
                trace_id,
                parent: Some(parent),
                span: span_id(),
                sampled,
            },
            None => {
                let trace_id = random16();
                // The trace id's random bits decide, so every node samples a trace alike.
                let n = u64::from_be_bytes([
                    trace_id[8],
                    trace_id[9],
                    trace_id[10],
                    trace_id[11],
                    trace_id[12],
                    trace_id[13],
                    trace_id[14],
                    trace_id[15],
                ]);
                TraceCtx {
                    trace_id,
                    parent: None,
                    span: span_id(),
                    sampled: (n as f64 / u64::MAX as f64) < rate,
                }
            }
        }
    }

    /// The `traceparent` naming `span` (a child of this request's span) as the parent.
    pub fn traceparent(&self, span: [u8; 8]) -> Option<HeaderValue> {
        let flags = if self.sampled { "01" } else { "00" };
        HeaderValue::from_str(&format!(
            "00-{}-{}-{flags}",
            hex(&self.trace_id),
            hex(&span)
        ))
        .ok()
    }

    /// The trace id as hex.
    pub fn trace_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

fn attr(key: &str, v: Value) -> Value {
    let value = match v {
        Value::String(s) => json!({ "stringValue": s }),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n }),
        Value::Bool(b) => json!({ "boolValue": b }),
        other => json!({ "stringValue": other.to_string() }),
    };
    json!({ "key": key, "value": value })
}

/// The request's spans in OTLP JSON (`Span` objects).
pub fn spans(log: &RequestLog, trace: &TraceCtx, snap: &Entities) -> Vec<Value> {
    let start_ns = log.started_at_ms as u128 * 1_000_000;
    let end_ns = start_ns + log.total_ms() as u128 * 1_000_000;
    let route = log.route.and_then(|r| snap.routes.get(r));
    let mut attrs = vec![
        attr("http.request.method", json!(log.request.method())),
        attr("http.response.status_code", json!(log.status)),
        attr(
            "url.path",
            json!(log.request.uri().split('?').next().unwrap_or("")),
        ),
        attr("kong.request.id", json!(log.request_id.as_str())),
    ];
    let names = log.names(snap);
    if !names.route.is_empty() {
        attrs.push(attr("http.route", json!(names.route)));
    }
    if !names.consumer.is_empty() {
        attrs.push(attr("kong.consumer", json!(names.consumer)));
    }
    let mut name = format!(
        "{} {}",
        log.request.method(),
        route.and_then(|r| r.name.as_deref()).unwrap_or("kong")
    );
    if let Some(ai) = &log.ai {
        let target = ai.target.and_then(|t| ai.targets.get(t));
        let op = target
            .map(|t| match t.route_type.as_str() {
                "llm/v1/embeddings" => "embeddings",
                "llm/v1/completions" => "text_completion",
                _ => "chat",
            })
            .unwrap_or("chat");
        let model = ai.request_model.as_deref().unwrap_or("");
        name = format!("{op} {model}");
        attrs.push(attr("gen_ai.operation.name", json!(op)));
        if let Some(t) = target {
            attrs.push(attr("gen_ai.system", json!(t.provider.as_str())));
        }
        attrs.push(attr("gen_ai.request.model", json!(model)));
        if let Some(m) = &ai.response_model {
            attrs.push(attr("gen_ai.response.model", json!(m)));
        }
        if let Some(u) = &ai.usage {
            attrs.push(attr("gen_ai.usage.input_tokens", json!(u.prompt_tokens)));
            attrs.push(attr(
                "gen_ai.usage.output_tokens",
                json!(u.completion_tokens),
            ));
        }
        attrs.push(attr("gen_ai.request.stream", json!(ai.stream)));
    }
    let mut root = json!({
        "traceId": hex(&trace.trace_id), "spanId": hex(&trace.span), "name": name,
        "kind": 2, "startTimeUnixNano": start_ns.to_string(), "endTimeUnixNano": end_ns.to_string(),
        "attributes": attrs,
        "status": { "code": if log.status >= 500 { 2 } else { 1 } },
    });
    if let Some(p) = trace.parent {
        root["parentSpanId"] = json!(hex(&p));
    }
    let mut out = vec![root];
    // Semantic routing's embeddings call (its result may come from the cache).
    if let Some((ai, (at, dur))) = log.ai.as_ref().and_then(|a| a.semantic_at.map(|t| (a, t))) {
        let s = start_ns + at as u128 * 1000;
        let sem = ai.semantic.as_ref();
        let field = |k: &str| sem.and_then(|v| v.get(k)).cloned().unwrap_or(Value::Null);
        let model = field("embeddings_model");
        out.push(json!({
            "traceId": hex(&trace.trace_id), "spanId": hex(&span_id()), "parentSpanId": hex(&trace.span),
            "name": format!("embeddings {}", model.as_str().unwrap_or("")), "kind": 3,
            "startTimeUnixNano": s.to_string(), "endTimeUnixNano": (s + dur as u128 * 1000).to_string(),
            "attributes": [
                attr("gen_ai.operation.name", json!("embeddings")),
                attr("gen_ai.system", field("embeddings_provider")),
                attr("gen_ai.request.model", model),
                attr("tollgate.semantic.outcome", field("outcome")),
            ],
            "status": { "code": 1 },
        }));
    }
    for t in &log.tries {
        let Some(span) = t.span_id else { continue };
        let s = start_ns + t.start_us as u128 * 1000;
        let e = s + t.duration_us as u128 * 1000;
        let mut a = vec![
            attr("server.address", json!(&*t.host)),
            attr("server.port", json!(t.port)),
            attr("url.path", json!(&*t.upstream_uri)),
            attr("gen_ai.system", json!(t.provider)),
            attr("kong.upstream.outcome", json!(t.outcome)),
        ];
        if let Some(m) = &t.model {
            a.push(attr("gen_ai.request.model", json!(m)));
        }
        out.push(json!({
            "traceId": hex(&trace.trace_id), "spanId": hex(&span), "parentSpanId": hex(&trace.span),
            "name": format!("upstream {}", t.provider), "kind": 3,
            "startTimeUnixNano": s.to_string(), "endTimeUnixNano": e.to_string(),
            "attributes": a,
            "status": { "code": if t.outcome == "success" { 1 } else { 2 } },
        }));
    }
    out
}

/// Export counters.
#[derive(Debug, Default)]
pub struct OtelStats {
    pub exported: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// A compiled `opentelemetry` instance: its config and exporter thread.
#[derive(Debug)]
pub struct Otel {
    pub config: OtelConfig,
    pub rate: f64,
    tx: SyncSender<Vec<Value>>,
    pub stats: Arc<OtelStats>,
    /// The exporter thread, started when the config goes into service.
    exporter: Deferred,
}

impl Otel {
    /// The exporter for `config`; spans queue until [`Otel::activate`] starts it.
    pub fn new(config: OtelConfig) -> Otel {
        let (tx, rx) = sync_channel(16_384);
        let stats = Arc::new(OtelStats::default());
        let exporter = Exporter {
            rx,
            config: config.clone(),
            stats: stats.clone(),
        };
        Otel {
            rate: config.sampling_rate.unwrap_or(1.0),
            config,
            tx,
            stats,
            exporter: Deferred::new("tollgate-otlp", move || exporter.run()),
        }
    }

    /// Starts the exporter thread (once).
    pub fn activate(&self) -> Result<(), String> {
        self.exporter.start()
    }

    /// Queues a request's spans; a full queue drops them (counted).
    pub fn export(&self, spans: Vec<Value>) {
        if self.tx.try_send(spans).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Exporter {
    rx: Receiver<Vec<Value>>,
    config: OtelConfig,
    stats: Arc<OtelStats>,
}

impl Exporter {
    fn run(self) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let every = Duration::from_secs_f64(
            self.config
                .batch_flush_delay
                .unwrap_or(1.0)
                .clamp(0.01, 60.0),
        );
        let max = usize::try_from(self.config.batch_span_count.unwrap_or(200))
            .unwrap_or(200)
            .max(1);
        let mut resource: Vec<Value> = vec![attr("service.name", json!("tollgate"))];
        for (k, v) in &self.config.resource_attributes {
            resource.retain(|a| a["key"] != json!(k));
            resource.push(attr(k, json!(v)));
        }
        let mut queued = Vec::new();
        loop {
            std::thread::sleep(every);
            let closed = super::take_queued(&self.rx, &mut queued);
            let spans: Vec<Value> = queued.drain(..).flatten().collect();
            for chunk in spans.chunks(max) {
                let body = json!({"resourceSpans": [{
                    "resource": {"attributes": resource},
                    "scopeSpans": [{"scope": {"name": "tollgate", "version": crate::VERSION}, "spans": chunk}],
                }]});
                let timeout_ms = self.config.send_timeout.unwrap_or(5000);
                let sent = match self.config.protocol {
                    OtlpProtocol::Grpc => rt.block_on(grpc_export(
                        &self.config.traces_endpoint,
                        &self.config.headers,
                        timeout_ms,
                        &crate::observe::otlp_proto::encode(&body),
                    )),
                    p => {
                        let (content_type, bytes) = match p {
                            OtlpProtocol::HttpJson => {
                                ("application/json", Bytes::from(body.to_string()))
                            }
                            _ => (
                                "application/x-protobuf",
                                Bytes::from(crate::observe::otlp_proto::encode(&body)),
                            ),
                        };
                        let target = crate::observe::http_log::Collector {
                            endpoint: &self.config.traces_endpoint,
                            method: "POST",
                            content_type,
                            headers: &self.config.headers,
                            timeout_ms,
                        };
                        rt.block_on(crate::observe::http_log::deliver_once(&target, bytes))
                    }
                };
                match sent {
                    Ok(()) => {
                        self.stats
                            .exported
                            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.stats
                            .failed
                            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        tracing::warn!(error = %e, spans = chunk.len(), "OTLP export failed");
                    }
                }
            }
            if closed {
                return;
            }
        }
    }
}

/// Sends one `ExportTraceServiceRequest` over gRPC (HTTP/2; cleartext for `http://`).
async fn grpc_export(
    endpoint: &str,
    headers: &BTreeMap<String, String>,
    timeout_ms: u64,
    message: &[u8],
) -> Result<(), String> {
    use http_body_util::{BodyExt, Full};
    let uri: http::Uri = endpoint.parse().map_err(|e| format!("{e}"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().unwrap_or("").to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 4317 });
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or(host.clone());
    // gRPC's length-prefixed message: not compressed, 4-byte big-endian length.
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let scheme = if https { "https" } else { "http" };
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!(
                "{scheme}://{authority}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            ))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .header(http::header::USER_AGENT, crate::SERVER_TOKEN);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(framed)))
            .map_err(|e| e.to_string())?;
        let resp = if https {
            let tls = crate::net::upstream_tls::connect(None, &host, tcp).await?;
            h2_send(tls, req).await?
        } else {
            h2_send(tcp, req).await?
        };
        let status = resp.status();
        let in_headers = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let in_trailers = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match (status.is_success(), in_trailers.or(in_headers).as_deref()) {
            (true, Some("0")) => Ok(()),
            (true, Some(code)) => Err(format!("collector answered grpc-status {code}")),
            (true, None) => Err("collector answered without grpc-status".into()),
            (false, _) => Err(format!("collector answered {status}")),
        }
    };
    tokio::time::timeout(Duration::from_millis(timeout_ms.max(1)), work)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Sends one request over a fresh HTTP/2 connection on `io` (gRPC export).
async fn h2_send<IO>(
    io: IO,
    req: http::Request<http_body_util::Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let exec = hyper_util::rt::TokioExecutor::new();
    let (mut s, conn) =
        hyper::client::conn::http2::handshake(exec, hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    s.send_request(req).await.map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_or_started() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let t = TraceCtx::start(&h, 0.0);
        assert_eq!(t.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.sampled, "the client's flag wins over the rate");
        let child = span_id();
        let v = t.traceparent(child).unwrap();
        assert!(v
            .to_str()
            .unwrap()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(v.to_str().unwrap().ends_with("-01"));
        let fresh = TraceCtx::start(&HeaderMap::new(), 1.0);
        assert!(fresh.sampled && fresh.parent.is_none());
        assert!(!TraceCtx::start(&HeaderMap::new(), 0.0).sampled);
    }
}

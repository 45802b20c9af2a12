//! Observability: Prometheus metrics at the Admin API's `/metrics` (Kong's names and labels,
//! plus tollgate's own), never carrying keys or prompts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use support::{get, send, Harness};

const CONFIG: &str = r#"
_format_version: "3.0"
consumers:
  - username: obs-alice
    keyauth_credentials: [{key: obs-alice-secret-key}]
plugins:
  - name: prometheus
    config: {status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true,
             ai_metrics: true, per_consumer: true}
services:
  - name: obs-svc
    url: http://unused.invalid
    routes:
      - name: obs-chat
        paths: ["/chat"]
        plugins:
          - name: key-auth
            config: {key_names: [ApiKey]}
          - name: ai-sanitizer
            config: {}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model:
                provider: openai
                name: obs-model
                options: {upstream_url: "{MOCK}/v1/chat/completions", input_cost: 1000, output_cost: 2000}
"#;

/// The sample of `name` whose labels contain every `want` pair.
fn value(text: &str, name: &str, want: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| want.iter().all(|w| l.contains(w)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn prometheus_metrics_follow_kong_names_and_never_carry_secrets() {
    let h = Harness::start(CONFIG).await;
    let chat = |key: Option<&'static str>, stream: bool| {
        let url = h.url("/chat");
        async move {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(k) = key {
                headers.push(("ApiKey", k));
            }
            let body = json!({"stream": stream, "messages": [
                {"role": "user", "content": "mail me at carol@example.com please"}]});
            send("POST", &url, &headers, body.to_string()).await
        }
    };
    let ok = chat(Some("obs-alice-secret-key"), false).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let usage = ok.json()["usage"].clone();
    assert_eq!(chat(Some("obs-alice-secret-key"), true).await.status, 200);
    assert_eq!(chat(None, false).await.status, 401);
    let r = get(&h.admin("/metrics")).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = r.text();
    let labels = [
        "service=\"obs-svc\"",
        "route=\"obs-chat\"",
        "workspace=\"default\"",
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        labels
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect()
    };
    assert_eq!(
        value(
            &m,
            "kong_http_requests_total",
            &with(&[
                "code=\"200\"",
                "source=\"service\"",
                "consumer=\"obs-alice\""
            ])
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            "kong_http_requests_total",
            &with(&["code=\"401\"", "source=\"kong\""])
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "kong_request_latency_ms_count", &labels),
        Some(3.0),
        "{m}"
    );
    assert!(value(&m, "kong_upstream_latency_ms_count", &labels).unwrap() >= 2.0);
    assert!(value(&m, "kong_bandwidth_bytes", &with(&["direction=\"egress\""])).unwrap() > 0.0);

    let ai = [
        "ai_provider=\"openai\"",
        "ai_model=\"obs-model\"",
        "consumer=\"obs-alice\"",
    ];
    let ai_with =
        |extra: &'static str| -> Vec<&str> { ai.iter().copied().chain([extra]).collect() };
    assert_eq!(
        value(
            &m,
            "kong_ai_llm_requests_total",
            &ai_with("request_mode=\"oneshot\"")
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            "kong_ai_llm_requests_total",
            &ai_with("request_mode=\"stream\"")
        ),
        Some(1.0),
        "{m}"
    );
    let prompt = value(
        &m,
        "kong_ai_llm_tokens_total",
        &ai_with("token_type=\"prompt_tokens\""),
    )
    .unwrap();
    assert!(
        prompt >= 2.0 * usage["prompt_tokens"].as_f64().unwrap(),
        "{m}"
    );
    assert!(
        value(&m, "kong_ai_llm_cost_total", &ai).unwrap() > 0.0,
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            "kong_ai_llm_provider_latency_ms_count",
            &ai_with("request_mode=\"oneshot\"")
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        value(
            &m,
            "tollgate_guardrail_hits_total",
            &[
                "plugin=\"ai-sanitizer\"",
                "action=\"masked\"",
                "category=\"email\""
            ]
        )
        .unwrap()
            >= 2.0,
        "{m}"
    );
    assert!(
        value(&m, "tollgate_upstream_attempts_total", &with_provider()).unwrap() >= 2.0,
        "{m}"
    );
    assert!(value(&m, "kong_nginx_requests_total", &[]).unwrap() >= 3.0);
    assert_eq!(value(&m, "tollgate_open_streams", &[]), Some(0.0), "{m}");
    // Labels never hold keys or prompts.
    assert!(!m.contains("obs-alice-secret-key") && !m.contains("carol@example.com"));
}

fn with_provider() -> Vec<&'static str> {
    vec!["route=\"obs-chat\"", "provider=\"openai\""]
}

// ---------------------------------------------------------------------------------------
// Usage analytics: records written off the request path, queried through the Admin API.

use std::sync::Arc;
use std::time::Duration;
use tollgate::observe::analytics::{Analytics, Backend};

const USAGE: &str = r#"
_format_version: "3.0"
consumers:
  - username: ana-alice
    keyauth_credentials: [{key: ana-alice-key}]
    groups: [{name: ana-gold}]
  - username: ana-bob
    keyauth_credentials: [{key: ana-bob-key}]
consumer_groups:
  - name: ana-gold
services:
  - name: ana-svc
    url: http://unused.invalid
    routes:
      - name: ana-chat
        paths: ["/chat"]
        plugins:
          - name: key-auth
            config: {key_names: [ApiKey]}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model:
                provider: openai
                options: {upstream_url: "{MOCK}/v1/chat/completions", input_cost: 1, output_cost: 2}
"#;

async fn ask(h: &Harness, key: &str, model: &str) -> serde_json::Value {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "how are you"}]});
    let r = send(
        "POST",
        &h.url("/chat"),
        &[("content-type", "application/json"), ("ApiKey", key)],
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["usage"].clone()
}

/// Waits until the writer has handled `n` records (written or spilled).
async fn settled(h: &Harness, n: u64) -> serde_json::Value {
    for _ in 0..100 {
        let s = get(&h.admin("/analytics/status")).await.json();
        let done = s["written"].as_u64().unwrap_or(0) + s["spilled"].as_u64().unwrap_or(0);
        if done >= n {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("analytics did not settle");
}

async fn usage_is_queryable(backend: Backend) {
    let start = tollgate::rt::clock::millis_since_epoch() / 1000;
    let h = Harness::start(USAGE).await;
    let dir =
        std::env::temp_dir().join(format!("tollgate-analytics-{}-{start}", std::process::id()));
    let a = Analytics::start(backend, dir.clone()).unwrap();
    h.gw.gateway.analytics.set(Arc::new(a)).unwrap();
    let mut alice_tokens = 0;
    for model in ["gpt-4o", "gpt-4o", "gpt-4o-mini"] {
        alice_tokens += ask(&h, "ana-alice-key", model).await["total_tokens"]
            .as_i64()
            .unwrap();
    }
    let bob_tokens = ask(&h, "ana-bob-key", "gpt-4o").await["total_tokens"]
        .as_i64()
        .unwrap();
    let r = send(
        "POST",
        &h.url("/chat"),
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 401);
    let status = settled(&h, 5).await;
    assert_eq!(status["written"], 5, "{status}");
    assert_eq!(status["dropped"], 0);

    let from = format!("from={start}");
    let by_consumer = get(&h.admin(&format!(
        "/analytics/usage?{from}&bucket=minute&group_by=consumer"
    )))
    .await;
    assert_eq!(by_consumer.status, 200, "{}", by_consumer.text());
    let v = by_consumer.json();
    let series = v["series"].as_array().unwrap();
    let total = |key: &str| -> i64 {
        series
            .iter()
            .filter(|s| s["key"] == key)
            .flat_map(|s| s["points"].as_array().unwrap().iter())
            .map(|p| p["total_tokens"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(total("ana-alice"), alice_tokens, "{v}");
    assert_eq!(total("ana-bob"), bob_tokens, "{v}");
    assert_eq!(v["totals"]["requests"], 5);
    assert_eq!(
        v["totals"]["errors"], 0,
        "the 401 is not an application's error"
    );
    assert_eq!(v["totals"]["unauthenticated"], 1, "{v}");
    assert!(v["totals"]["cost"].as_f64().unwrap() > 0.0);

    let top = get(&h.admin(&format!("/analytics/top?{from}&by=model&measure=requests")))
        .await
        .json();
    assert_eq!(top["data"][0]["key"], "gpt-4o", "{top}");
    assert_eq!(top["data"][0]["requests"], 3, "{top}");
    let groups = get(&h.admin(&format!("/analytics/top?{from}&by=consumer_group")))
        .await
        .json();
    assert!(
        groups["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["key"] == "ana-gold"),
        "{groups}"
    );
    let only_bob = get(&h.admin(&format!("/analytics/usage?{from}&consumer=ana-bob")))
        .await
        .json();
    assert_eq!(only_bob["totals"]["total_tokens"], bob_tokens);
    let bad = get(&h.admin("/analytics/usage?group_by=password")).await;
    assert_eq!(bad.status, 400);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn usage_records_go_to_sqlite_and_are_queryable() {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-sqlite-{}-{}",
        std::process::id(),
        tollgate::rt::clock::millis_since_epoch()
    ));
    usage_is_queryable(Backend::Sqlite(dir.join("analytics.db"))).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn usage_records_go_to_postgresql_and_are_queryable() {
    usage_is_queryable(Backend::Postgres(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into(),
    ))
    .await;
}

/// A store that is down never slows requests: records spill to a file under the data
/// directory, and the status says so.
#[tokio::test]
async fn records_spill_to_disk_when_the_store_is_down() {
    let h = Harness::start(USAGE).await;
    let dir = std::env::temp_dir().join(format!(
        "tollgate-spill-{}-{}",
        std::process::id(),
        tollgate::rt::clock::millis_since_epoch()
    ));
    let a = Analytics::start(
        Backend::Postgres(
            "host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=1".into(),
        ),
        dir.clone(),
    )
    .unwrap();
    let spill = a.spill_path().to_path_buf();
    h.gw.gateway.analytics.set(Arc::new(a)).unwrap();
    for _ in 0..3 {
        ask(&h, "ana-bob-key", "gpt-4o").await;
    }
    let status = settled(&h, 3).await;
    assert_eq!(status["spilled"], 3, "{status}");
    assert!(status["store_errors"].as_u64().unwrap() >= 1);
    // Rows (a second's requests each) go to the file.
    let lines = std::fs::read_to_string(&spill).unwrap();
    let spilled: i64 = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["requests"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert_eq!(spilled, 3, "{lines}");
    assert!(lines.contains("\"consumer\":\"ana-bob\""));
    assert!(!lines.contains("ana-bob-key"));
    let q = get(&h.admin("/analytics/usage")).await;
    assert_eq!(q.status, 503, "{}", q.text());
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// http-log: batches to a collector, retries, and a spill file for what cannot be delivered.

/// What a receiver got: each request's path and body.
type Received = Arc<std::sync::Mutex<Vec<(String, bytes::Bytes)>>>;

/// A server on 127.0.0.1 that keeps every request's path and body. HTTP/1.1 answering
/// `status`, or (`grpc`) HTTP/2 with a trailers-only gRPC OK.
async fn receiver(status: u16, grpc: bool) -> (std::net::SocketAddr, Received) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Received = Arc::default();
    let keep = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let keep = keep.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let keep = keep.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            keep.lock().unwrap().push((path, body));
                            let reply = if grpc { "" } else { "{}" };
                            let mut r = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(reply.as_bytes()),
                            ));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            if grpc {
                                r.headers_mut()
                                    .insert("content-type", "application/grpc".parse().unwrap());
                                r.headers_mut().insert("grpc-status", "0".parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(tcp);
                if grpc {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, svc)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    (addr, seen)
}

/// A JSON collector (http-log, OTLP/HTTP JSON) answering `status`.
async fn collector(status: u16) -> (String, Received) {
    let (addr, seen) = receiver(status, false).await;
    (format!("http://{addr}/logs"), seen)
}

/// The JSON bodies received so far.
fn json_bodies(seen: &Received) -> Vec<serde_json::Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, b)| serde_json::from_slice(b).ok())
        .collect()
}

/// Waits (bounded) until at least `n` spans of the OTLP JSON exports satisfy `keep`.
async fn spans_received(
    seen: &Received,
    n: usize,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut spans = Vec::new();
    for _ in 0..50 {
        spans = json_bodies(seen)
            .iter()
            .flat_map(|b| {
                b["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|s| keep(s))
            .collect();
        if spans.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    spans
}

const HTTP_LOG: &str = r#"
_format_version: "3.0"
consumers:
  - username: hl-app
    keyauth_credentials: [{key: hl-app-secret}]
services:
  - name: hl-svc
    url: http://unused.invalid
    routes:
      - name: hl-chat
        paths: ["/chat"]
        plugins:
          - name: key-auth
            config: {key_names: [ApiKey]}
          - name: http-log
            config:
              http_endpoint: "{COLLECTOR}"
              headers: {x-collector-key: c0llect}
              queue: {max_batch_size: 2, max_coalescing_delay: {DELAY}, max_retry_time: {RETRY}, initial_retry_delay: 0.05}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              logging: {log_statistics: true}
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
"#;

/// A gateway whose http-log posts to `collector`, retrying for `retry` seconds and
/// coalescing records for `delay` seconds.
async fn http_log_gateway(collector: &str, retry: &str, delay: &str) -> Harness {
    Harness::start(
        &HTTP_LOG
            .replace("{COLLECTOR}", collector)
            .replace("{RETRY}", retry)
            .replace("{DELAY}", delay),
    )
    .await
}

fn http_log_sink(h: &Harness) -> Arc<tollgate::observe::http_log::HttpLogSink> {
    let snap = h.gw.gateway.snapshot.load();
    snap.plugins
        .iter()
        .find_map(|p| match &p.plugin {
            tollgate::plugins::Plugin::HttpLog(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap()
}

#[tokio::test]
async fn http_log_posts_batches_and_spills_what_it_cannot_deliver() {
    let (url, seen) = collector(200).await;
    let h = http_log_gateway(&url, "5", "0.2").await;
    for _ in 0..3 {
        ask(&h, "hl-app-secret", "m").await;
    }
    let sink = http_log_sink(&h);
    for _ in 0..50 {
        if sink.stats.sent.load(std::sync::atomic::Ordering::Relaxed) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bodies = json_bodies(&seen);
    let records: Vec<&serde_json::Value> =
        bodies.iter().flat_map(|b| b.as_array().unwrap()).collect();
    assert_eq!(records.len(), 3, "{bodies:?}");
    assert!(
        bodies.iter().any(|b| b.as_array().unwrap().len() == 2),
        "batched: {bodies:?}"
    );
    assert_eq!(records[0]["route"]["name"], "hl-chat");
    assert_eq!(records[0]["consumer"]["username"], "hl-app");
    assert!(
        records[0]["ai"]["proxy"]["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(!serde_json::to_string(&bodies)
        .unwrap()
        .contains("hl-app-secret"));

    // A collector that keeps failing: retried, then spilled to a file (and counted).
    let (bad_url, _) = collector(503).await;
    let h = http_log_gateway(&bad_url, "0.3", "0.2").await;
    ask(&h, "hl-app-secret", "m").await;
    let sink = http_log_sink(&h);
    for _ in 0..60 {
        if sink
            .stats
            .spilled
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sink.stats
            .spilled
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(
        sink.stats
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    let spilled = std::fs::read_to_string(sink.spill_path()).unwrap();
    assert!(
        spilled.lines().any(|l| l.contains("\"hl-chat\"")),
        "{spilled}"
    );
    let _ = std::fs::remove_file(sink.spill_path());
}

#[tokio::test]
async fn records_queued_at_shutdown_are_delivered_not_lost() {
    // A coalescing delay far longer than the test: the records are still queued when the
    // gateway shuts down, and the shutdown delivers them.
    let (url, seen) = collector(200).await;
    let h = http_log_gateway(&url, "5", "30").await;
    let dir = std::env::temp_dir().join(format!(
        "tollgate-shutdown-{}-{}",
        std::process::id(),
        tollgate::rt::clock::millis_since_epoch()
    ));
    let a =
        Arc::new(Analytics::start(Backend::Sqlite(dir.join("analytics.db")), dir.clone()).unwrap());
    h.gw.gateway.analytics.set(a.clone()).unwrap();
    for _ in 0..5 {
        ask(&h, "hl-app-secret", "m").await;
    }
    let sink = http_log_sink(&h);
    h.gw.shutdown().await;
    assert_eq!(
        a.stats.written.load(std::sync::atomic::Ordering::Relaxed),
        5,
        "analytics rows written by the end of shutdown"
    );
    assert_eq!(
        sink.stats.sent.load(std::sync::atomic::Ordering::Relaxed),
        5,
        "http-log records delivered by the end of shutdown"
    );
    let bodies = json_bodies(&seen);
    let records = bodies.iter().flat_map(|b| b.as_array().unwrap()).count();
    assert_eq!(records, 5, "{bodies:?}");
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// OpenTelemetry: spans over OTLP/HTTP (JSON) to an in-process receiver, traceparent to the
// upstream.

const OTEL: &str = r#"
_format_version: "3.0"
plugins:
  - name: opentelemetry
    config:
      traces_endpoint: "{RECEIVER}"
      protocol: "{PROTOCOL}"
      headers: {x-otlp-key: k1}
      batch_flush_delay: 0.1
      http_response_header_for_traceid: x-trace-id
      resource_attributes: {deployment.environment: test}
services:
  - name: ot-svc
    url: http://unused.invalid
    routes:
      - name: ot-semantic
        paths: ["/semantic"]
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer: {algorithm: semantic, retries: 0}
              embeddings:
                model: {provider: openai, name: ot-emb, options: {upstream_url: "{MOCK}"}}
              vectordb: {dimensions: 16, distance_metric: cosine, threshold: 0.9}
              targets:
                - {route_type: llm/v1/chat, description: "programming and code",
                   model: {provider: openai, name: code, options: {upstream_url: "{MOCK}"}}}
                - {route_type: llm/v1/chat, description: CATCHALL,
                   model: {provider: openai, name: other, options: {upstream_url: "{MOCK}"}}}
      - name: ot-chat
        paths: ["/chat"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              logging: {log_statistics: true}
              model: {provider: openai, name: ot-model, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
"#;

/// A gateway exporting its spans to `receiver` over `protocol`.
async fn otel_gateway(receiver: &str, protocol: &str) -> Harness {
    Harness::start(
        &OTEL
            .replace("{RECEIVER}", receiver)
            .replace("{PROTOCOL}", protocol),
    )
    .await
}

#[tokio::test]
async fn spans_go_to_an_otlp_receiver_and_traceparent_to_the_upstream() {
    let (url, seen) = collector(200).await;
    let h = otel_gateway(&url.replace("/logs", "/v1/traces"), "http/json").await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = send(
        "POST",
        &h.url("/chat"),
        &[
            ("content-type", "application/json"),
            ("traceparent", parent),
        ],
        json!({"messages": [{"role": "user", "content": "hello"}]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-trace-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let upstream_tp = h
        .mock
        .last_request()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_string();
    assert!(
        upstream_tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{upstream_tp}"
    );
    assert!(
        !upstream_tp.contains("00f067aa0ba902b7"),
        "the upstream gets the gateway's span as parent"
    );
    let spans = spans_received(&seen, 2, |_| true).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let attr = |s: &serde_json::Value, k: &str| -> serde_json::Value {
        s["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == k)
            .map(|a| a["value"].clone())
            .unwrap_or(serde_json::Value::Null)
    };
    let root = spans.iter().find(|s| s["kind"] == 2).unwrap();
    assert_eq!(root["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(root["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(attr(root, "gen_ai.system")["stringValue"], "openai");
    assert_eq!(
        attr(root, "gen_ai.request.model")["stringValue"],
        "ot-model"
    );
    assert_eq!(attr(root, "gen_ai.operation.name")["stringValue"], "chat");
    assert!(attr(root, "gen_ai.usage.input_tokens")["intValue"]
        .as_str()
        .is_some());
    assert_eq!(attr(root, "http.response.status_code")["intValue"], "200");
    let child = spans.iter().find(|s| s["kind"] == 3).unwrap();
    assert_eq!(child["parentSpanId"], root["spanId"]);
    assert_eq!(
        upstream_tp.split('-').nth(2).unwrap(),
        child["spanId"].as_str().unwrap(),
        "the upstream's parent is the attempt's span"
    );
    assert_eq!(
        attr(child, "kong.upstream.outcome")["stringValue"],
        "success"
    );
    let body = json_bodies(&seen)[0].clone();
    let res = body["resourceSpans"][0]["resource"]["attributes"].to_string();
    assert!(
        res.contains("deployment.environment") && res.contains("tollgate"),
        "{res}"
    );
}

/// A gRPC (HTTP/2 cleartext) receiver.
async fn grpc_receiver() -> (String, Received) {
    let (addr, seen) = receiver(200, true).await;
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn spans_go_over_otlp_grpc() {
    let (url, seen) = grpc_receiver().await;
    let h = otel_gateway(&url, "grpc").await;
    let r = send(
        "POST",
        &h.url("/chat"),
        &[("content-type", "application/json")],
        json!({"messages": [{"role": "user", "content": "hello"}]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    let trace_hex = r.header("x-trace-id").unwrap().to_string();
    let trace: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_hex[i * 2..i * 2 + 2], 16).unwrap())
        .collect();
    for _ in 0..50 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (path, body) = seen.lock().unwrap().first().cloned().expect("an export");
    assert_eq!(
        path,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    );
    // gRPC framing: uncompressed, then the message length.
    assert_eq!(body[0], 0);
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    assert_eq!(len, body.len() - 5);
    let msg = &body[5..];
    assert!(
        msg.windows(16).any(|w| w == trace.as_slice()),
        "the trace id"
    );
    for text in [
        "gen_ai.system",
        "openai",
        "ot-model",
        "deployment.environment",
    ] {
        assert!(
            msg.windows(text.len()).any(|w| w == text.as_bytes()),
            "{text}"
        );
    }
}

#[tokio::test]
async fn semantic_routing_embeddings_calls_get_their_own_span() {
    let (url, seen) = collector(200).await;
    let h = otel_gateway(&url.replace("/logs", "/v1/traces"), "http/json").await;
    let r = send(
        "POST",
        &h.url("/semantic"),
        &[("content-type", "application/json")],
        json!({"messages": [{"role": "user", "content": "fix this code bug"}]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let trace = r.header("x-trace-id").unwrap().to_string();
    let spans = spans_received(&seen, 3, |s| s["traceId"] == trace.as_str()).await;
    let emb = spans
        .iter()
        .find(|s| s["name"] == "embeddings ot-emb")
        .unwrap_or_else(|| panic!("{spans:?}"));
    let root = spans.iter().find(|s| s["kind"] == 2).unwrap();
    assert_eq!(emb["parentSpanId"], root["spanId"]);
    let attrs = emb["attributes"].to_string();
    assert!(
        attrs.contains("\"gen_ai.operation.name\"") && attrs.contains("\"embeddings\""),
        "{attrs}"
    );
    assert!(attrs.contains("\"openai\""), "{attrs}");
}

/// A spill file an earlier run left (here with one record twice, as a crash mid-replay
/// could leave it) is replayed into SQLite when the pipeline starts, each record once.
#[tokio::test]
async fn a_spill_file_left_behind_is_replayed_into_sqlite_at_start() {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-replay-{}-{}",
        std::process::id(),
        tollgate::rt::clock::millis_since_epoch()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let record = |id: &str| {
        // An older release's record: no consumer_id, credential… (they default).
        json!({"ts_ms": 1, "request_id": id, "consumer": "c", "application": "a",
            "consumer_group": "", "route": "r", "service": "s", "provider": "openai",
            "model": "m", "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
            "cost": 0.0, "latency_ms": 4, "status": 200, "guardrail": ""})
        .to_string()
    };
    std::fs::write(
        dir.join("analytics-spill.jsonl"),
        [record("left-1"), record("left-2"), record("left-1")].join("\n") + "\n",
    )
    .unwrap();
    let a = Analytics::start(Backend::Sqlite(dir.join("analytics.db")), dir.clone()).unwrap();
    for _ in 0..100 {
        if a.stats.replayed.load(std::sync::atomic::Ordering::Relaxed) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.status()["replayed"], 3, "{}", a.status());
    assert!(!a.spill_path().exists());
    let db = rusqlite::Connection::open(dir.join("analytics.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM tollgate_usage", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2, "each request id once");
    let _ = std::fs::remove_dir_all(dir);
}

/// A spill file that appears while the store works (here written by hand; in practice left
/// by failures the store has recovered from) is replayed within the 30 s check.
#[tokio::test]
async fn a_spill_file_is_looked_for_periodically() {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-replay-late-{}-{}",
        std::process::id(),
        tollgate::rt::clock::millis_since_epoch()
    ));
    let a = Analytics::start(Backend::Sqlite(dir.join("analytics.db")), dir.clone()).unwrap();
    // The start-up look found nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.status()["replayed"], 0);
    let line = json!({"ts_ms": 1, "request_id": "late-1", "route": "r", "status": 200});
    std::fs::write(a.spill_path(), format!("{line}\n")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while a.stats.replayed.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "not replayed: {}",
            a.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!a.spill_path().exists());
    let _ = std::fs::remove_dir_all(dir);
}

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

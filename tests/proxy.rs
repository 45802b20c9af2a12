//! The request path through real HTTP: gateway in-process in front of mock-llm.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// Scenario S1's config (Kong's Codex how-to), upstream pointed at the mock.
const S1: &str = r#"
_format_version: "3.0"
services:
  - name: codex-service
    url: http://localhost:32000
    routes:
      - name: codex-route
        paths: ["/codex"]
    plugins:
      - name: ai-proxy-advanced
        config:
          genai_category: text/generation
          llm_format: openai
          max_request_body_size: 131072
          model_name_header: true
          response_streaming: allow
          balancer:
            algorithm: round-robin
            tokens_count_strategy: total-tokens
            latency_strategy: tpot
            retries: 3
          targets:
            - route_type: llm/v1/responses
              auth:
                header_name: Authorization
                header_value: Bearer sk-provider-secret
              logging:
                log_payloads: true
                log_statistics: true
              model:
                provider: openai
                options:
                  upstream_url: "{MOCK}/v1/responses"
                  input_cost: 2.0
                  output_cost: 8.0
      - name: request-transformer
        config:
          replace:
            uri: "/"
      - name: file-log
        config:
          path: "{DIR}/codex.log"
"#;

const PING: &str = r#"{"model":"gpt-4o","input":[{"role":"user","content":"Ping"}]}"#;

#[tokio::test]
async fn s1_ping_reaches_responses_and_is_logged() {
    let h = Harness::start(S1).await;
    let r = send(
        "POST",
        &h.url("/codex"),
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer client-key-123"),
            // Hop-by-hop for this request only (named in Connection), and one to forward.
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "secret"),
            ("x-keep", "1"),
            ("accept-encoding", "gzip"),
        ],
        PING,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["object"], "response");
    assert_eq!(r.header("x-kong-llm-model"), Some("openai/gpt-4o"));
    assert!(r
        .header("x-kong-request-id")
        .map(|v| v.len() == 32)
        .unwrap_or(false));
    assert!(
        r.header("x-kong-upstream-latency").is_some() && r.header("x-kong-proxy-latency").is_some()
    );

    let seen = h.mock.last_request().expect("upstream saw the request");
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-provider-secret")
    );
    assert_eq!(seen.json().unwrap()["model"], "gpt-4o");
    // The head the gateway wrote: the client's own header forwarded, the hop-by-hop ones
    // not, the gateway's values over the client's.
    assert_eq!(seen.header("x-keep"), Some("1"));
    assert_eq!(seen.header("x-hop"), None);
    assert_ne!(seen.header("connection"), Some("keep-alive, x-hop"));
    assert_eq!(seen.header("accept-encoding"), Some("identity"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    // The upstream gets the client's request id and where the client came from.
    assert_eq!(
        seen.header("x-kong-request-id"),
        r.header("x-kong-request-id")
    );
    let gateway = h.url("/");
    let port = gateway.rsplit(':').next().and_then(|p| p.strip_suffix('/'));
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-host"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-port"), port);

    let lines = h.wait_log("codex.log", 1).await;
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    let t = &l["ai"]["proxy"]["tried_targets"][0];
    assert_eq!(t["upstream_uri"], "/v1/responses");
    assert_eq!(t["provider"], "openai");
    assert_eq!(t["host"], "127.0.0.1");
    assert_eq!(t["port"], h.mock.addr().port());
    assert_eq!(t["upstream_scheme"], "http");
    assert_eq!(t["route_type"], "llm/v1/responses");
    let meta = &l["ai"]["proxy"]["meta"];
    assert_eq!(meta["provider_name"], "openai");
    assert_eq!(meta["request_model"], "gpt-4o");
    assert_eq!(meta["request_mode"], "oneshot");
    let usage = &l["ai"]["proxy"]["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
    assert!(usage["cost"].as_f64().unwrap() > 0.0);
    assert_eq!(l["response"]["status"], 200);
    assert_eq!(l["request"]["method"], "POST");
    assert_eq!(l["route"]["name"], "codex-route");
    assert_eq!(l["service"]["name"], "codex-service");
    assert!(l["ai"]["proxy"]["payload"]["request"]
        .as_str()
        .unwrap()
        .contains("Ping"));

    let raw = std::fs::read_to_string(h.dir.path().join("codex.log")).unwrap();
    assert!(
        !raw.contains("sk-provider-secret"),
        "provider key leaked into the log"
    );
    assert!(
        !raw.contains("client-key-123"),
        "client key leaked into the log"
    );
}

#[tokio::test]
async fn s1_codex_style_streaming_responses() {
    let h = Harness::start(S1).await;
    let body = json!({"model":"gpt-4o","stream":true,"input":[{"role":"developer","content":"sys"},{"role":"user","content":"Ping"}]});
    let r = send(
        "POST",
        &h.url("/codex/responses"),
        &[
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_data(&r.text());
    let types: Vec<String> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .map(|v| v["type"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(types.contains(&"response.output_item.done".to_string()));
    assert_eq!(types.last().map(String::as_str), Some("response.completed"));
    assert_eq!(h.mock.last_request().unwrap().path, "/v1/responses");
    let l = &h.wait_log("codex.log", 1).await[0];
    assert_eq!(l["ai"]["proxy"]["meta"]["request_mode"], "stream");
    assert!(
        l["ai"]["proxy"]["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(l["ai"]["proxy"]["usage"]["time_to_first_token"].is_number());
    assert!(l["ai"]["proxy"].get("error").is_none(), "{l}");
}

/// Scenario S2's config (Kong's dynamic-model route).
const S2: &str = r#"
_format_version: "3.0"
services:
  - name: openai
    url: https://api.openai.com
    routes:
      - name: dynamic
        paths: ["~/(?<model>[^#?/]+)/chat/completions$"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth:
                header_name: Authorization
                header_value: Bearer sk-x
              model:
                provider: openai
                name: "$(uri_captures.model)"
                options:
                  upstream_url: "{MOCK}/v1/chat/completions"
              logging:
                log_statistics: true
      - name: loose
        paths: ["~/loose/(?<model>.+)/chat/completions$"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model:
                provider: openai
                name: "$(uri_captures.model)"
                options:
                  upstream_url: "{MOCK}"
"#;

#[tokio::test]
async fn s2_model_from_the_path() {
    let h = Harness::start(S2).await;
    let r = post_json(
        &h.url("/gpt-4/chat/completions"),
        &json!({"messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.mock.last_request().unwrap().json().unwrap()["model"],
        "gpt-4"
    );
    assert_eq!(r.header("x-kong-llm-model"), Some("openai/gpt-4"));
    assert_eq!(r.json()["object"], "chat.completion");

    // The client may repeat the configured model, but not pick another.
    let r = post_json(
        &h.url("/gpt-4/chat/completions"),
        &json!({"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post_json(
        &h.url("/gpt-4/chat/completions"),
        &json!({"model":"o3","messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "cannot use own model - must be: gpt-4"
    );

    // upstream_url without a path gets the route type's path.
    let r = post_json(
        &h.url("/loose/gpt-4o/chat/completions"),
        &json!({"messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.mock.last_request().unwrap().path, "/v1/chat/completions");
}

#[tokio::test]
async fn captures_cannot_inject_into_the_upstream_url() {
    let h = Harness::start(S2).await;
    let before = h.mock.requests().len();
    for path in [
        "/loose/evil.com%2Fx/chat/completions",
        "/loose/a/b/chat/completions",
        "/loose/a..b/chat/completions",
        "/loose/x%3Fy/chat/completions",
        "/loose/x%23y/chat/completions",
        "/loose/user@evil.com/chat/completions",
    ] {
        let r = post_json(
            &h.url(path),
            &json!({"messages":[{"role":"user","content":"hi"}]}),
        )
        .await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.json()["error"]["message"].as_str().is_some());
    }
    assert_eq!(
        h.mock.requests().len(),
        before,
        "nothing may reach the upstream"
    );
}

const CHAT: &str = r#"
_format_version: "3.0"
services:
  - name: chat
    url: http://upstream.invalid
    routes:
      - name: chat
        paths: ["/chat"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              max_request_body_size: 2048
              model:
                provider: openai
                name: gpt-4o-mini
                options:
                  upstream_url: "{MOCK}/v1/chat/completions"
                  max_tokens: 256
              auth:
                header_name: Authorization
                header_value: Bearer sk-chat-secret
              logging:
                log_statistics: true
                log_payloads: true
      - name: nostream
        paths: ["/nostream"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              response_streaming: deny
              model:
                provider: openai
                options:
                  upstream_url: "{MOCK}"
      - name: completions
        paths: ["/completions"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/completions
              model:
                provider: openai
                options:
                  upstream_url: "{MOCK}"
      - name: embeddings
        paths: ["/embeddings"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/embeddings
              model:
                provider: openai
                name: text-embedding-3-small
                options:
                  upstream_url: "{MOCK}"
      - name: slow
        paths: ["/slow"]
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer:
                read_timeout: 300
                retries: 0
              targets:
                - route_type: llm/v1/chat
                  model:
                    provider: openai
                    options:
                      upstream_url: "{MOCK}"
      - name: dead
        paths: ["/dead"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth:
                header_name: Authorization
                header_value: Bearer sk-dead-secret
              model:
                provider: openai
                options:
                  upstream_url: "http://127.0.0.1:{DEAD}"
plugins:
  - name: file-log
    config:
      path: "{DIR}/all.log"
"#;

async fn chat_harness() -> Harness {
    let (dead, port) = support::dead_port();
    let mut h = Harness::start(&CHAT.replace("{DEAD}", &port.to_string())).await;
    h.held.push(dead);
    h
}

fn msg(text: &str) -> Value {
    json!({"messages":[{"role":"user","content":text}]})
}

#[tokio::test]
async fn chat_fills_config_options_and_keeps_request_values() {
    let h = chat_harness().await;
    let r = post_json(&h.url("/chat"), &msg("hello")).await;
    assert_eq!(r.status, 200);
    let up = h.mock.last_request().unwrap().json().unwrap();
    assert_eq!(up["model"], "gpt-4o-mini");
    assert_eq!(up["max_tokens"], 256);
    let mut m = msg("hello");
    m["max_tokens"] = json!(5);
    post_json(&h.url("/chat"), &m).await;
    assert_eq!(
        h.mock.last_request().unwrap().json().unwrap()["max_tokens"],
        5
    );
}

#[tokio::test]
async fn streaming_is_passed_through_event_by_event() {
    let h = chat_harness().await;
    let mut body = msg("[mock:chunks=5][mock:chunk_delay_ms=80] hi");
    body["stream"] = json!(true);
    let r = post_json(&h.url("/chat"), &body).await;
    assert_eq!(r.status, 200);
    let content_frames: Vec<&(Duration, bytes::Bytes)> = r
        .frames
        .iter()
        .filter(|(_, b)| String::from_utf8_lossy(b).contains("\"content\""))
        .collect();
    assert!(
        content_frames.len() >= 5,
        "events arrived in {} frames",
        content_frames.len()
    );
    let first = content_frames.first().unwrap().0;
    let last = content_frames.last().unwrap().0;
    assert!(
        last - first >= Duration::from_millis(250),
        "events were bunched: {:?}",
        r.frames.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    // The gateway asked upstream for usage on its own; the client must not see it.
    let up = h.mock.last_request().unwrap().json().unwrap();
    assert_eq!(up["stream_options"]["include_usage"], true);
    let text = r.text();
    assert!(!text.contains("\"choices\":[]"), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let lines = h.wait_log("all.log", 1).await;
    let u = &lines[0]["ai"]["proxy"]["usage"];
    assert_eq!(u["completion_tokens"], 5);
    assert!(u["time_to_first_token"].as_u64().is_some());
}

#[tokio::test]
async fn client_asked_usage_chunk_is_kept() {
    let h = chat_harness().await;
    let mut body = msg("hi");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post_json(&h.url("/chat"), &body).await;
    let events = sse_data(&r.text());
    assert!(events
        .iter()
        .any(|e| e.contains("\"usage\"") && e.contains("\"choices\":[]")));
}

#[tokio::test]
async fn completions_and_embeddings() {
    let h = chat_harness().await;
    let r = post_json(
        &h.url("/completions"),
        &json!({"model":"gpt-3.5-turbo-instruct","prompt":"Say hi"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["object"], "text_completion");
    assert_eq!(h.mock.last_request().unwrap().path, "/v1/completions");
    let r = post_json(
        &h.url("/embeddings"),
        &json!({"input":["a","b"],"encoding_format":"base64"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    let seen = h.mock.last_request().unwrap();
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(seen.json().unwrap()["model"], "text-embedding-3-small");
}

fn assert_openai_error(r: &Reply, status: u16, contains: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    let m = v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not OpenAI-shaped: {v}"));
    assert!(m.contains(contains), "{m:?} lacks {contains:?}");
    assert!(v["error"]["type"].is_string() && v["error"]["code"].is_string());
    for secret in ["sk-chat-secret", "sk-dead-secret", "127.0.0.1"] {
        assert!(!r.text().contains(secret), "{secret} leaked: {}", r.text());
    }
}

#[tokio::test]
async fn bad_requests_get_precise_errors() {
    let h = chat_harness().await;
    let ct = [("content-type", "application/json")];
    let r = send("POST", &h.url("/chat"), &ct, "{\"messages\": [").await;
    assert_openai_error(
        &r,
        400,
        "invalid JSON in request body: EOF while parsing a list at line 1 column 14",
    );
    let r = send(
        "POST",
        &h.url("/chat"),
        &[("content-type", "text/plain")],
        msg("x").to_string(),
    )
    .await;
    assert_openai_error(&r, 400, "content-type header does not match");
    let r = send("POST", &h.url("/chat"), &ct, vec![b'{', 0xff, 0xfe, b'}']).await;
    assert_openai_error(&r, 400, "invalid JSON in request body");
    let r = send("POST", &h.url("/chat"), &ct, "[1,2]").await;
    assert_openai_error(&r, 400, "request body must be a JSON object");
    let big = json!({"messages":[{"role":"user","content":"x".repeat(4096)}]});
    let r = post_json(&h.url("/chat"), &big).await;
    assert_openai_error(&r, 413, "larger than the limit of 2048 bytes");
    let r = post_json(
        &h.url("/chat"),
        &json!({"messages":[{"role":"user","content":"x"}],"prompt":"y"}),
    )
    .await;
    assert_openai_error(&r, 400, "request matches multiple LLM request formats");
    let r = post_json(&h.url("/chat"), &json!({"model":"x"})).await;
    assert_openai_error(&r, 400, "request body doesn't contain valid prompts");
    let r = post_json(&h.url("/chat"), &json!({"prompt":"x"})).await;
    assert_openai_error(&r, 400, "not compatible with [llm/v1/chat] route type");
    let mut s = msg("x");
    s["stream"] = json!(true);
    let r = post_json(&h.url("/nostream"), &s).await;
    assert_openai_error(&r, 400, "response streaming is not enabled for this LLM");
    let r = post_json(&h.url("/nostream"), &msg("x")).await;
    assert_openai_error(
        &r,
        400,
        "model parameter not found in request, nor in gateway configuration",
    );
    let r = post_json(&h.url("/nowhere"), &msg("x")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "no Route matched with those values");
    assert!(r.json()["request_id"].is_string());
}

#[tokio::test]
async fn upstream_failures_get_precise_errors() {
    let h = chat_harness().await;
    let r = post_json(
        &h.url("/dead"),
        &json!({"model":"m","messages":[{"role":"user","content":"x"}]}),
    )
    .await;
    assert_openai_error(&r, 502, "invalid response was received from the upstream");
    let r = post_json(
        &h.url("/slow"),
        &json!({"model":"m","messages":[{"role":"user","content":"[mock:hang] x"}]}),
    )
    .await;
    assert_openai_error(&r, 504, "timing out");
    let r = post_json(&h.url("/chat"), &msg("[mock:reset] x")).await;
    assert_openai_error(&r, 502, "invalid response");
    let r = post_json(&h.url("/chat"), &msg("[mock:non_json] x")).await;
    assert_openai_error(
        &r,
        500,
        "transformation failed from type openai://llm/v1/chat",
    );
    // Upstream errors pass through with their status and body.
    let r = post_json(&h.url("/chat"), &msg("[mock:status=503] x")).await;
    assert_eq!(r.status, 503);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("injected"));
    let r = post_json(&h.url("/chat"), &msg("[mock:status=429] x")).await;
    assert_eq!(r.status, 429);
}

#[tokio::test]
async fn mid_stream_cut_ends_with_an_error_event_and_is_logged() {
    let h = chat_harness().await;
    let mut body = msg("[mock:chunks=6][mock:disconnect_after=3] x");
    body["stream"] = json!(true);
    let r = post_json(&h.url("/chat"), &body).await;
    assert_eq!(r.status, 200);
    let events = sse_data(&r.text());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_cut", "{events:?}");
    assert!(!r.text().contains("[DONE]"));
    let lines = h.wait_log("all.log", 1).await;
    assert!(lines[0]["ai"]["proxy"]["error"]
        .as_str()
        .unwrap()
        .contains("mid-stream"));
}

#[tokio::test]
async fn client_disconnect_still_writes_the_log() {
    let h = chat_harness().await;
    let mut body = msg("[mock:chunks=50][mock:chunk_delay_ms=50] x");
    body["stream"] = json!(true);
    let addr = h.gw.proxy_addr;
    let payload = body.to_string();
    // Raw TCP so we can hang up mid-stream.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        payload.len(),
        payload
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(s);
    let lines = h.wait_log("all.log", 1).await;
    assert_eq!(lines.len(), 1);
    assert!(lines[0]["ai"]["proxy"]["error"]
        .as_str()
        .unwrap()
        .contains("client closed"));
}

#[tokio::test]
async fn log_payloads_never_contain_secrets() {
    let h = chat_harness().await;
    send(
        "POST",
        &h.url("/chat?api-key=q"),
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer sk-client-zzz"),
            ("x-api-key", "xk-zzz"),
        ],
        msg("hello").to_string(),
    )
    .await;
    let lines = h.wait_log("all.log", 1).await;
    let raw = serde_json::to_string(&lines).unwrap();
    for s in ["sk-client-zzz", "xk-zzz", "sk-chat-secret"] {
        assert!(!raw.contains(s), "{s} in log");
    }
    assert_eq!(lines[0]["request"]["headers"]["authorization"], "REDACTED");
    assert!(lines[0]["ai"]["proxy"]["payload"]["response"]
        .as_str()
        .unwrap()
        .contains("chat.completion"));
}

const BALANCED: &str = r#"
_format_version: "3.0"
services:
  - name: svc
    host: example.invalid
    routes:
      - name: r
        paths: ["/v1/chat/completions"]
        strip_path: false
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer:
                retries: 2
              targets:
                - route_type: llm/v1/chat
                  weight: 100
                  model: {provider: openai, name: dead-model, options: {upstream_url: "http://127.0.0.1:{DEAD}"}}
                  logging: {log_statistics: true}
                - route_type: llm/v1/chat
                  weight: 300
                  model: {provider: openai, name: big, options: {upstream_url: "{MOCK}"}}
                  logging: {log_statistics: true}
                - route_type: llm/v1/chat
                  weight: 100
                  model: {provider: openai, name: small, options: {upstream_url: "{MOCK}"}}
                  logging: {log_statistics: true}
          - name: file-log
            config: {path: "{DIR}/b.log"}
"#;

#[tokio::test]
async fn round_robin_by_weight_with_failover_on_connect_errors() {
    let (_dead, dead_port) = support::dead_port();
    let h = Harness::start(&BALANCED.replace("{DEAD}", &dead_port.to_string())).await;
    for _ in 0..10 {
        let r = post_json(&h.url("/v1/chat/completions"), &msg("hi")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let models: Vec<String> = h
        .mock
        .requests()
        .iter()
        .map(|r| r.json().unwrap()["model"].as_str().unwrap().to_string())
        .collect();
    let big = models.iter().filter(|m| *m == "big").count();
    let small = models.iter().filter(|m| *m == "small").count();
    assert_eq!(big + small, 10);
    assert!(big >= 6 && small >= 2, "big={big} small={small}");
    let lines = h.wait_log("b.log", 10).await;
    let failed_over = lines
        .iter()
        .find(|l| l["ai"]["proxy"]["tried_targets"].as_array().unwrap().len() == 2)
        .expect("some request tried the dead target first");
    let tried = failed_over["ai"]["proxy"]["tried_targets"]
        .as_array()
        .unwrap();
    assert_eq!(tried[0]["outcome"], "error");
    assert_eq!(tried[1]["outcome"], "success");
}

const PLAIN: &str = r#"
_format_version: "3.0"
services:
  - name: plain
    url: "{MOCK}/v1"
    routes:
      - name: p
        paths: ["/api"]
        plugins:
          - name: request-transformer
            config:
              add:
                headers: ["x-team:$(headers[\"x-user\"])", "x-static:yes"]
                querystring: ["source:gw"]
              remove:
                headers: ["x-drop"]
"#;

#[tokio::test]
async fn plain_proxy_with_request_transformer() {
    let h = Harness::start(PLAIN).await;
    let r = send(
        "POST",
        &h.url("/api/chat/completions?x=1"),
        &[
            ("content-type", "application/json"),
            ("x-user", "ana"),
            ("x-drop", "1"),
        ],
        msg("hi").to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = h.mock.last_request().unwrap();
    assert!(
        seen.path.starts_with("/v1/chat/completions?"),
        "{}",
        seen.path
    );
    assert_eq!(seen.query_param("source").as_deref(), Some("gw"));
    assert_eq!(seen.query_param("x").as_deref(), Some("1"));
    assert_eq!(seen.header("x-team"), Some("ana"));
    assert_eq!(seen.header("x-static"), Some("yes"));
    assert_eq!(seen.header("x-drop"), None);
    assert!(r.header("via").unwrap().contains("tollgate"));
    // Kong-shaped errors on non-AI routes.
    let r = get(&h.url("/nope")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "no Route matched with those values");
}

#[tokio::test]
async fn admin_api_reads_in_kong_shapes() {
    let h = Harness::start(S1).await;
    let root = get(&h.admin("/")).await.json();
    assert_eq!(
        root["plugins"]["available_on_server"]["ai-proxy"]["priority"],
        770
    );
    assert!(root["node_id"].is_string());
    let status = get(&h.admin("/status")).await.json();
    assert_eq!(status["configuration_hash"].as_str().unwrap().len(), 32);
    assert!(status["server"]["total_requests"].is_number());
    let services = get(&h.admin("/services")).await.json();
    assert_eq!(services["data"][0]["name"], "codex-service");
    assert_eq!(services["data"][0]["port"], 32000);
    assert!(services["next"].is_null());
    let id = services["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        get(&h.admin(&format!("/services/{id}"))).await.json()["name"],
        "codex-service"
    );
    assert_eq!(
        get(&h.admin("/services/codex-service/routes")).await.json()["data"][0]["paths"][0],
        "/codex"
    );
    let plugins = get(&h.admin("/plugins")).await.json();
    assert_eq!(plugins["data"].as_array().unwrap().len(), 3);
    let text = plugins.to_string();
    assert!(
        !text.contains("sk-provider-secret"),
        "secret in admin output"
    );
    assert!(text.contains("[REDACTED]"));
    let page = get(&h.admin("/plugins?size=1")).await.json();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], "/plugins?offset=1&size=1");
    assert_eq!(get(&h.admin("/plugins?size=0")).await.status, 400);
    assert_eq!(get(&h.admin("/routes/nope")).await.status, 404);
    let cfg = get(&h.admin("/config")).await.json();
    let y = cfg["config"].as_str().unwrap();
    assert!(y.contains("codex-service") && !y.contains("sk-provider-secret"));
    // Writes are covered in tests/admin.rs; this one lacks the required host.
    let r = send("POST", &h.admin("/services"), &[], "{}").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["fields"]["host"], "required field missing");
}

const AUTH: &str = r#"
_format_version: "3.0"
services:
  - name: s
    host: unused.invalid
    routes:
      - name: query-auth
        paths: ["/q"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {param_name: key, param_value: gw-key, param_location: query}
              model: {provider: openai, name: "$(headers.x-model)", options: {upstream_url: "{MOCK}"}}
      - name: body-auth
        paths: ["/b"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {param_name: api_key, param_value: gw-body-key, param_location: body}
              model: {provider: openai, name: "$(query_params.m)", options: {upstream_url: "{MOCK}"}}
      - name: override
        paths: ["/o"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              response_streaming: always
              auth: {header_name: Authorization, header_value: Bearer gw, allow_override: true}
              model: {provider: openai, options: {upstream_url: "{MOCK}"}}
      - name: preserve
        paths: ["/preserve"]
        plugins:
          - name: ai-proxy
            config:
              route_type: preserve
              auth: {header_name: x-api-key, header_value: pk}
              model: {provider: openai, options: {upstream_url: "{MOCK}"}}
"#;

#[tokio::test]
async fn auth_params_templates_and_override() {
    let h = Harness::start(AUTH).await;
    let r = send(
        "POST",
        &h.url("/q?key=client-key&x=1"),
        &[("content-type", "application/json"), ("x-model", "gpt-4.1")],
        msg("hi").to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = h.mock.last_request().unwrap();
    assert_eq!(seen.query_param("key").as_deref(), Some("gw-key"));
    assert_eq!(seen.query_param("x").as_deref(), Some("1"));
    assert_eq!(seen.json().unwrap()["model"], "gpt-4.1");
    let r = send(
        "POST",
        &h.url("/q"),
        &[("content-type", "application/json")],
        msg("hi").to_string(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "headers key x-model was not provided"
    );

    let r = post_json(&h.url("/b?m=o4-mini"), &msg("hi")).await;
    assert_eq!(r.status, 200);
    let up = h.mock.last_request().unwrap().json().unwrap();
    assert_eq!(up["api_key"], "gw-body-key");
    assert_eq!(up["model"], "o4-mini");

    // allow_override keeps the client's credential; `always` forces streaming.
    let mut m = msg("hi");
    m["model"] = json!("gpt-4o");
    let r = send(
        "POST",
        &h.url("/o"),
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer own"),
        ],
        m.to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let seen = h.mock.last_request().unwrap();
    assert_eq!(seen.header("authorization"), Some("Bearer own"));
    assert_eq!(seen.json().unwrap()["stream"], true);
    let r = post_json(&h.url("/o"), &m).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        h.mock.last_request().unwrap().header("authorization"),
        Some("Bearer gw")
    );
}

#[tokio::test]
async fn preserve_passes_the_body_and_path_through() {
    let h = Harness::start(AUTH).await;
    let raw = "{\"model\":\"m\",\"input\":\"x\",  \"custom\":[1,2]}";
    let r = send(
        "POST",
        &h.url("/preserve/v1/embeddings"),
        &[("content-type", "application/json")],
        raw,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = h.mock.last_request().unwrap();
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(seen.body, raw.as_bytes());
    assert_eq!(seen.header("x-api-key"), Some("pk"));
}

#[tokio::test]
async fn s1_route_accepts_the_responses_websocket_upgrade() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(S1).await;
    let mut s = tokio::net::TcpStream::connect(h.gw.proxy_addr)
        .await
        .unwrap();
    let req =
        "GET /codex/responses HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
openai-beta: responses_websockets=2026-02-06\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    // Served (tests/websocket.rs covers the session; routes that cannot serve it get 426).
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{text}"
    );
    assert!(h.mock.requests().is_empty());
}

/// A minimal keep-alive upstream that counts connections and can close idle ones.
async fn counting_upstream(
    close_after_each: bool,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Read one request: head, then content-length bytes.
                    let head_end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    let body = r#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
                        body.len(),
                        body
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    if close_after_each {
                        // Close the idle keep-alive connection without saying so.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        return;
                    }
                }
            });
        }
    });
    (port, accepted)
}

fn upstream_config(port: u16) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
  - name: s
    host: unused.invalid
    routes:
      - name: r
        paths: ["/chat"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {{provider: openai, name: m, options: {{upstream_url: "http://127.0.0.1:{port}"}}}}
"#
    )
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let (port, accepted) = counting_upstream(false).await;
    let h = Harness::start(&upstream_config(port)).await;
    for _ in 0..5 {
        let r = post_json(&h.url("/chat"), &msg("hi")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "keep-alive connection reused"
    );
}

/// A plain (non-AI) route streams the upstream body through; with a Content-Length the
/// server stops reading that body after its last byte, and the connection must still go
/// back to the pool instead of being closed.
#[tokio::test]
async fn plain_route_reuses_upstream_connections() {
    let (port, accepted) = counting_upstream(false).await;
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: s
    url: "http://127.0.0.1:{port}"
    routes:
      - name: r
        paths: ["/plain"]
"#
    );
    let h = Harness::start(&yaml).await;
    for _ in 0..5 {
        let r = post_json(&h.url("/plain"), &msg("hi")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("chat.completion"), "{}", r.text());
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "keep-alive connection reused on a plain route"
    );
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_upstream_is_replaced() {
    let (port, accepted) = counting_upstream(true).await;
    let h = Harness::start(&upstream_config(port)).await;
    for _ in 0..3 {
        let r = post_json(&h.url("/chat"), &msg("hi")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// One HTTP/1.1 response off a raw connection (bytes past it stay in `pending`): status,
/// head, body (by content-length or chunked; none for HEAD).
async fn raw_response(
    s: &mut tokio::net::TcpStream,
    pending: &mut Vec<u8>,
    head_request: bool,
) -> (u16, String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    async fn more(s: &mut tokio::net::TcpStream, pending: &mut Vec<u8>) {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("answered in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(pending));
        pending.extend_from_slice(&chunk[..n]);
    }
    let end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        more(s, pending).await;
    };
    let head = String::from_utf8(pending.drain(..end).collect()).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if head_request {
        return (status, head, body);
    }
    if let Some(v) = lower.split("content-length: ").nth(1) {
        let n: usize = v.split("\r\n").next().unwrap().parse().unwrap();
        while pending.len() < n {
            more(s, pending).await;
        }
        body = pending.drain(..n).collect();
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let Some(line) = pending.windows(2).position(|w| w == b"\r\n") else {
                more(s, pending).await;
                continue;
            };
            let size = std::str::from_utf8(&pending[..line]).unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            while pending.len() < line + 2 + size + 2 {
                more(s, pending).await;
            }
            body.extend_from_slice(&pending[line + 2..line + 2 + size]);
            pending.drain(..line + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    }
    (status, head, body)
}

#[tokio::test]
async fn http1_requests_pipelined_split_slow_or_chunked_are_all_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = chat_harness().await;
    let body = msg("hello").to_string();
    let post = |extra: &str| {
        format!(
            "POST /chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let ok = |(status, head, body): (u16, String, Vec<u8>)| {
        let text = String::from_utf8_lossy(&body).to_string();
        assert_eq!(status, 200, "{head}{text}");
        assert!(head.contains("\r\ndate: "), "{head}");
        assert!(text.contains("chat.completion"), "{text}");
    };
    let mut s = tokio::net::TcpStream::connect(h.gw.proxy_addr)
        .await
        .unwrap();
    let mut pending = Vec::new();
    // Two requests in one write: two answers, in order.
    s.write_all((post("") + &post("")).as_bytes())
        .await
        .unwrap();
    ok(raw_response(&mut s, &mut pending, false).await);
    ok(raw_response(&mut s, &mut pending, false).await);
    // The body a moment after its head (as clients that write them apart send it).
    let req = post("");
    let (head, rest) = req.split_at(head_of(&req).len());
    s.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.write_all(rest.as_bytes()).await.unwrap();
    ok(raw_response(&mut s, &mut pending, false).await);
    // A HEAD answer has no body: the next answer on the connection is read cleanly.
    s.write_all(b"HEAD /chat HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, head, _) = raw_response(&mut s, &mut pending, true).await;
    assert!(status >= 200, "{head}");
    s.write_all(post("").as_bytes()).await.unwrap();
    ok(raw_response(&mut s, &mut pending, false).await);
    // A body that takes longer to follow still arrives, and the connection goes on.
    s.write_all(head_of(&post("")).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.write_all(body.as_bytes()).await.unwrap();
    ok(raw_response(&mut s, &mut pending, false).await);
    s.write_all(post("").as_bytes()).await.unwrap();
    ok(raw_response(&mut s, &mut pending, false).await);
    assert!(pending.is_empty());
    // A chunked upload, then `connection: close`: answered with it, and closed.
    let mut s = tokio::net::TcpStream::connect(h.gw.proxy_addr)
        .await
        .unwrap();
    let chunked = format!(
        "POST /chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    s.write_all(chunked.as_bytes()).await.unwrap();
    ok(raw_response(&mut s, &mut pending, false).await);
    let mut s = tokio::net::TcpStream::connect(h.gw.proxy_addr)
        .await
        .unwrap();
    s.write_all(post("connection: close\r\n").as_bytes())
        .await
        .unwrap();
    let answer = raw_response(&mut s, &mut pending, false).await;
    assert!(
        answer.1.contains("\r\nconnection: close\r\n"),
        "{}",
        answer.1
    );
    ok(answer);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "closed after the answer: {read:?}"
    );
    // Every upstream request carried the client's body whole.
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 8);
    for r in seen {
        assert_eq!(r.json().unwrap()["messages"][0]["content"], "hello");
    }
    // 200 KB each way: the upload read whole with its head, the answer written as it is;
    // the connection goes on after both.
    let mut s = tokio::net::TcpStream::connect(h.gw.proxy_addr)
        .await
        .unwrap();
    let big = "x".repeat(200_000);
    let mut upload = msg(&format!("[mock:reply={big}]"));
    upload["model"] = json!("gpt-4o-mini");
    let upload = upload.to_string();
    let req = format!(
        "POST /nostream HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{upload}",
        upload.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let (status, head, answer) = raw_response(&mut s, &mut pending, false).await;
    assert_eq!(status, 200, "{head}{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], big);
    s.write_all(post("").as_bytes()).await.unwrap();
    ok(raw_response(&mut s, &mut pending, false).await);
}

/// A request's head (through its blank line).
fn head_of(req: &str) -> &str {
    &req[..req.find("\r\n\r\n").unwrap() + 4]
}

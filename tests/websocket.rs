//! Responses over WebSocket (Codex's default transport): the bridge to a native Responses
//! upstream and to a chat-only one, conversations rebuilt from `previous_response_id`,
//! warm-ups answered locally, in-band errors, frame limits, and a client that goes away.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{send, Harness};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const CONFIG: &str = r#"
_format_version: "3.0"
consumers:
  - username: codex-app
    keyauth_credentials: [{key: ws-app-key}]
services:
  - name: s
    url: http://unused.invalid
    routes:
      - name: codex
        paths: ["/codex"]
        plugins:
          - name: ai-proxy-advanced
            config:
              max_request_body_size: 4096
              targets:
                - route_type: llm/v1/responses
                  auth: {header_name: Authorization, header_value: Bearer sk-ws-secret}
                  logging: {log_statistics: true, log_payloads: true}
                  model: {provider: openai, options: {upstream_url: "{MOCK}/v1/responses"}}
          - name: file-log
            config: {path: "{DIR}/codex.log"}
      - name: claude
        paths: ["/claude"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/responses
              auth: {header_name: x-api-key, header_value: sk-ant-ws}
              logging: {log_statistics: true}
              model: {provider: anthropic, name: claude-x, options: {anthropic_version: "2023-06-01", upstream_url: "{MOCK}"}}
          - name: file-log
            config: {path: "{DIR}/claude.log"}
      - name: keyed
        paths: ["/keyed"]
        plugins:
          - name: key-auth
            config: {key_names: [ApiKey]}
          - name: ai-proxy
            config:
              route_type: llm/v1/responses
              model: {provider: openai, options: {upstream_url: "{MOCK}/v1/responses"}}
      - name: chat
        paths: ["/chat"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
"#;

type Ws = WebSocketStream<TcpStream>;

async fn connect(h: &Harness, path: &str, headers: &[(&str, &str)]) -> Ws {
    let url = format!("ws://{}{path}", h.gw.proxy_addr);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "openai-beta",
        "responses_websockets=2026-02-06".parse().unwrap(),
    );
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse::<http::HeaderValue>().unwrap(),
        );
    }
    let tcp = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the connection is open")
            .unwrap();
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Sends a frame and reads events up to the terminal one; returns them all.
async fn turn(ws: &mut Ws, frame: Value) -> Vec<Value> {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    let mut events = Vec::new();
    loop {
        let e = next_json(ws).await;
        let t = e["type"].as_str().unwrap_or("").to_string();
        events.push(e);
        if matches!(
            t.as_str(),
            "response.completed" | "response.failed" | "response.incomplete" | "error"
        ) {
            return events;
        }
    }
}

fn completed(events: &[Value]) -> &Value {
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed", "{events:?}");
    &last["response"]
}

fn user(text: &str) -> Value {
    json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
}

/// The POSTs the mock received (not the WebSocket handshakes it refused).
fn posts(h: &Harness) -> Vec<mock_llm::RecordedRequest> {
    h.mock
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect()
}

/// The inputs the upstream received, in order, as (role or type, text).
fn upstream_inputs(h: &Harness, n: usize) -> Vec<Value> {
    let reqs = posts(h);
    reqs[n].json().unwrap()["input"].as_array().unwrap().clone()
}

#[tokio::test]
async fn codex_style_session_bridged_to_a_responses_upstream_without_websocket() {
    let h = Harness::start(CONFIG).await;
    // The upstream refuses its WebSocket mode: the gateway bridges over HTTP.
    let mut ws = connect(
        &h,
        "/codex/responses",
        &[
            ("authorization", "Bearer client-key"),
            ("x-mock", "no_websocket"),
        ],
    )
    .await;

    // Warm-up: answered here, nothing sent upstream.
    let warm = turn(
        &mut ws,
        json!({"type": "response.create", "model": "gpt-5-codex", "generate": false,
               "instructions": "You are Codex.",
               "input": [{"type": "message", "role": "developer",
                          "content": [{"type": "input_text", "text": "sandbox: read-only"}]}]}),
    )
    .await;
    assert_eq!(warm[0]["type"], "response.created");
    let r0 = completed(&warm)["id"].as_str().unwrap().to_string();
    assert!(posts(&h).is_empty());

    // Turn 1: only the new item; the upstream gets the whole conversation, streamed.
    let t1 = turn(
        &mut ws,
        json!({"type": "response.create", "model": "gpt-5-codex", "instructions": "You are Codex.",
               "previous_response_id": r0, "input": [user("Ping")]}),
    )
    .await;
    assert!(t1.iter().any(|e| e["type"] == "response.output_text.delta"));
    let r1 = completed(&t1)["id"].as_str().unwrap().to_string();
    let sent = posts(&h)[0].json().unwrap();
    assert_eq!(sent["stream"], true);
    assert!(sent.get("previous_response_id").is_none(), "{sent}");
    assert!(sent.get("generate").is_none() && sent.get("type").is_none());
    let input = upstream_inputs(&h, 0);
    assert_eq!(input.len(), 2, "{input:?}");
    assert_eq!(input[0]["role"], "developer");
    assert_eq!(input[1]["content"][0]["text"], "Ping");
    assert_eq!(
        posts(&h)[0].header("authorization"),
        Some("Bearer sk-ws-secret"),
        "the route's key, not the client's"
    );

    // Turn 2: the conversation includes turn 1's answer.
    let t2 = turn(
        &mut ws,
        json!({"type": "response.create", "model": "gpt-5-codex",
               "previous_response_id": r1, "input": [user("And again")]}),
    )
    .await;
    completed(&t2);
    let input = upstream_inputs(&h, 1);
    assert_eq!(input.len(), 4, "{input:?}");
    assert_eq!(input[2]["type"], "message");
    assert_eq!(input[2]["role"], "assistant");
    assert_eq!(input[3]["content"][0]["text"], "And again");

    // One log record per response, none for the warm-up or the connection.
    ws.close(None).await.unwrap();
    let log = h.wait_log("codex.log", 2).await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["response"]["status"], 200);
    assert!(
        log[0]["ai"]["proxy"]["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(!std::fs::read_to_string(h.dir.path().join("codex.log"))
        .unwrap()
        .contains("sk-ws-secret"));
}

#[tokio::test]
async fn websocket_bridges_to_a_chat_only_provider() {
    let h = Harness::start(CONFIG).await;
    let mut ws = connect(&h, "/claude/responses", &[]).await;
    let t1 = turn(
        &mut ws,
        json!({"type": "response.create", "input": [user("Ping")]}),
    )
    .await;
    let r1 = completed(&t1).clone();
    assert_eq!(h.mock.requests()[0].path, "/v1/messages");
    let t2 = turn(
        &mut ws,
        json!({"type": "response.create", "previous_response_id": r1["id"], "input": [user("More")]}),
    )
    .await;
    completed(&t2);
    let msgs = h.mock.requests()[1].json().unwrap()["messages"].clone();
    assert_eq!(msgs.as_array().unwrap().len(), 3, "{msgs}");
    assert_eq!(msgs[1]["role"], "assistant");
    let log = h.wait_log("claude.log", 2).await;
    assert_eq!(log.len(), 2);
}

#[tokio::test]
async fn bad_frames_and_upstream_errors_come_back_in_band() {
    let h = Harness::start(CONFIG).await;
    let mut ws = connect(&h, "/codex/responses", &[]).await;
    ws.send(Message::Text("not json".into())).await.unwrap();
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["type"].clone(), e["status"].clone()),
        (json!("error"), json!(400))
    );
    ws.send(Message::Text(
        json!({"type": "session.update"}).to_string().into(),
    ))
    .await
    .unwrap();
    let e = next_json(&mut ws).await;
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("session.update"),
        "{e}"
    );
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["status"], 400);
    // The connection still works after bad frames.
    let ok = turn(
        &mut ws,
        json!({"type": "response.create", "model": "m", "input": [user("Ping")]}),
    )
    .await;
    completed(&ok);

    // An upstream 429 is an in-band error with that status.
    let mut ws = connect(&h, "/codex/responses", &[("x-mock", "status=429")]).await;
    let ev = turn(
        &mut ws,
        json!({"type": "response.create", "model": "m", "input": [user("Ping")]}),
    )
    .await;
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "error", "{ev:?}");
    assert_eq!(last["status"], 429, "{last}");

    // A frame over the route's max_request_body_size closes with 1009.
    let mut ws = connect(&h, "/codex/responses", &[]).await;
    let big = json!({"type": "response.create", "model": "m", "input": [user(&"x".repeat(8000))]});
    ws.send(Message::Text(big.to_string().into()))
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    match closed {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1009, "{f:?}"),
        other => panic!("expected a close frame, got {other:?}"),
    }

    // Routes that cannot serve WebSocket refuse the upgrade with 426 (Codex falls back).
    let r = send(
        "GET",
        &h.url("/chat/responses"),
        &[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 426);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_and_is_logged() {
    // Relayed, then bridged.
    for (n, headers) in [(1, &[][..]), (2, &[("x-mock", "no_websocket")][..])] {
        client_goes_away(n, headers).await;
    }
}

async fn client_goes_away(n: usize, headers: &[(&str, &str)]) {
    let h = Harness::start(CONFIG).await;
    let mut ws = connect(&h, "/codex/responses", headers).await;
    ws.send(Message::Text(
        json!({"type": "response.create", "model": "m",
               "input": [user("count [mock:chunk_delay_ms=100] [mock:chunks=30]")]})
        .to_string()
        .into(),
    ))
    .await
    .unwrap();
    let first = next_json(&mut ws).await;
    assert_eq!(first["type"], "response.created");
    drop(ws);
    let log = h.wait_log("codex.log", 1).await;
    assert_eq!(log.len(), 1, "variant {n}");
    let err = log[0]["ai"]["proxy"]["error"]
        .as_str()
        .or(log[0]["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| log[0].to_string());
    assert!(err.contains("client closed"), "{}", log[0]);
}

/// An upstream with the WebSocket mode (OpenAI) gets the frames as sent, over one upstream
/// connection opened with the route's key; each response is logged with its usage.
#[tokio::test]
async fn websocket_is_relayed_to_an_upstream_that_speaks_it() {
    let h = Harness::start(CONFIG).await;
    let mut ws = connect(
        &h,
        "/codex/responses",
        &[("authorization", "Bearer client-key")],
    )
    .await;
    let t1 = turn(
        &mut ws,
        json!({"type": "response.create", "model": "gpt-5-codex", "input": [user("Ping")]}),
    )
    .await;
    let r1 = completed(&t1)["id"].as_str().unwrap().to_string();
    let t2 = turn(
        &mut ws,
        json!({"type": "response.create", "model": "gpt-5-codex",
               "previous_response_id": r1, "input": [user("Again")]}),
    )
    .await;
    completed(&t2);
    let reqs = h.mock.requests();
    assert_eq!(reqs.len(), 2);
    let second = reqs[1].json().unwrap();
    assert_eq!(
        second["previous_response_id"],
        r1.as_str(),
        "relayed as sent: {second}"
    );
    assert_eq!(second["input"].as_array().unwrap().len(), 1);
    assert_eq!(reqs[0].header("authorization"), Some("Bearer sk-ws-secret"));
    assert!(reqs[0].header("openai-beta").is_some());
    // Unknown events are refused here, not relayed.
    ws.send(Message::Text(
        json!({"type": "session.update"}).to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["status"], 400);
    ws.close(None).await.unwrap();
    let log = h.wait_log("codex.log", 2).await;
    assert_eq!(log.len(), 2, "one record per response");
    assert_eq!(log[0]["response"]["status"], 200);
    assert!(
        log[0]["ai"]["proxy"]["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{}",
        log[0]
    );
    assert_eq!(
        log[1]["ai"]["proxy"]["tried_targets"][0]["upstream_scheme"], "ws",
        "{}",
        log[1]
    );
    assert!(!std::fs::read_to_string(h.dir.path().join("codex.log"))
        .unwrap()
        .contains("sk-ws-secret"));
}

/// key-auth on a WebSocket route: no key, no upgrade (401); with a key every request goes
/// through the plugin chain (the bridge, never the direct relay), so the upstream gets the
/// consumer's identity and never the key.
#[tokio::test]
async fn websocket_routes_with_key_auth_authenticate_the_upgrade() {
    let h = Harness::start(CONFIG).await;
    let url = format!("ws://{}/keyed/responses", h.gw.proxy_addr);
    let req = url.clone().into_client_request().unwrap();
    let tcp = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
        }
        other => panic!("expected a 401, got {:?}", other.map(|(_, r)| r.status())),
    }
    let mut ws = connect(&h, "/keyed/responses", &[("apikey", "ws-app-key")]).await;
    let t = turn(
        &mut ws,
        json!({"type": "response.create", "model": "gpt-5-codex", "input": [user("Ping")]}),
    )
    .await;
    completed(&t);
    let reqs = posts(&h);
    assert_eq!(reqs.len(), 1, "sent over HTTP by the bridge");
    assert_eq!(reqs[0].header("x-consumer-username"), Some("codex-app"));
    assert!(
        reqs[0].header("apikey").is_none(),
        "the key stays at the gateway"
    );
}

// The Realtime API (`realtime/v1/realtime`): relayed to the upstream's own WebSocket.

const REALTIME: &str = r#"
_format_version: "3.0"
consumers:
  - username: voice-app
    keyauth_credentials: [{key: rt-app-key}]
services:
  - name: s
    url: http://unused.invalid
    routes:
      - name: realtime
        paths: ["/v1/realtime"]
        plugins:
          - name: ai-proxy-advanced
            config:
              genai_category: realtime/generation
              targets:
                - route_type: realtime/v1/realtime
                  auth: {header_name: Authorization, header_value: Bearer sk-rt-secret}
                  logging: {log_statistics: true}
                  model: {provider: openai, options: {upstream_url: "{MOCK}"}}
          - name: file-log
            config: {path: "{DIR}/realtime.log"}
      - name: idle
        paths: ["/idle/realtime"]
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer: {read_timeout: 400}
              targets:
                - route_type: realtime/v1/realtime
                  auth: {header_name: Authorization, header_value: Bearer sk-rt-secret}
                  model: {provider: openai, options: {upstream_url: "{MOCK}"}}
      - name: pinned
        paths: ["/pinned"]
        plugins:
          - name: ai-proxy
            config:
              route_type: realtime/v1/realtime
              auth: {header_name: Authorization, header_value: Bearer sk-rt-secret}
              model: {provider: openai, name: gpt-realtime, options: {upstream_url: "{MOCK_WS}"}}
      - name: azure
        paths: ["/azure/realtime"]
        plugins:
          - name: ai-proxy
            config:
              route_type: realtime/v1/realtime
              auth: {header_name: api-key, header_value: azure-rt-secret}
              logging: {log_statistics: true}
              model:
                provider: azure
                name: gpt-4o-realtime
                options: {azure_instance: res, azure_deployment_id: rt-deploy, upstream_url: "{MOCK}"}
          - name: file-log
            config: {path: "{DIR}/azure.log"}
      - name: metered
        paths: ["/metered/realtime"]
        plugins:
          - name: key-auth
            config: {key_names: [ApiKey]}
          - name: ai-rate-limiting-advanced
            config:
              reserve_in_flight: false
              llm_providers: [{name: openai, limit: [5], window_size: [3600]}]
          - name: ai-proxy
            config:
              route_type: realtime/v1/realtime
              auth: {header_name: Authorization, header_value: Bearer sk-rt-secret}
              logging: {log_statistics: true}
              model: {provider: openai, options: {upstream_url: "{MOCK}"}}
          - name: file-log
            config: {path: "{DIR}/metered.log"}
"#;

async fn realtime_harness() -> Harness {
    Harness::start(REALTIME).await
}

/// Opens a Realtime connection; the handshake's HTTP refusal comes back as Err.
async fn realtime(h: &Harness, path: &str, headers: &[(&str, &str)]) -> Result<Ws, (u16, Value)> {
    let url = format!("ws://{}{path}", h.gw.proxy_addr);
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse::<http::HeaderValue>().unwrap(),
        );
    }
    let tcp = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, resp)) => {
            assert_eq!(resp.status(), 101);
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            Err((
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ))
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

/// Sends a client event and reads server events until one of type `until`.
async fn exchange(ws: &mut Ws, event: Value, until: &str) -> Vec<Value> {
    ws.send(Message::Text(event.to_string().into()))
        .await
        .unwrap();
    let mut events = Vec::new();
    loop {
        let e = next_json(ws).await;
        let done = e["type"] == until;
        events.push(e);
        if done {
            return events;
        }
    }
}

fn item(text: &str) -> Value {
    json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": text}]}})
}

/// The mock's recorded Realtime handshakes.
fn handshakes(h: &Harness) -> Vec<mock_llm::RecordedRequest> {
    h.mock
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect()
}

#[tokio::test]
async fn realtime_session_is_relayed_with_the_routes_key_and_each_response_logged() {
    let h = realtime_harness().await;
    // The OpenAI SDK's shape: base_url <gateway>/v1 → /v1/realtime?model=…
    let mut ws = realtime(
        &h,
        "/v1/realtime?model=gpt-realtime",
        &[
            ("authorization", "Bearer client-key"),
            ("openai-beta", "realtime=v1"),
        ],
    )
    .await
    .unwrap();
    let created = next_json(&mut ws).await;
    assert_eq!(created["type"], "session.created", "{created}");
    assert_eq!(created["session"]["model"], "gpt-realtime");
    let updated = exchange(
        &mut ws,
        json!({"type": "session.update", "session": {"instructions": "Be brief."}}),
        "session.updated",
    )
    .await;
    assert_eq!(
        updated.last().unwrap()["session"]["instructions"],
        "Be brief."
    );
    let added = exchange(&mut ws, item("Say hello"), "conversation.item.created").await;
    assert_eq!(added.len(), 1);
    let events = exchange(&mut ws, json!({"type": "response.create"}), "response.done").await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds[0], "response.created");
    assert!(kinds.contains(&"response.output_item.added"), "{kinds:?}");
    // The beta protocol's names, since the client asked for realtime=v1.
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(text, "Hello from the realtime mock.");
    let done = events.last().unwrap();
    assert_eq!(done["response"]["status"], "completed");
    let usage = &done["response"]["usage"];
    assert!(usage["total_tokens"].as_u64().unwrap() > 0);
    // Binary frames and pings pass too; the session goes on.
    ws.send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    ws.send(Message::Ping(vec![7u8].into())).await.unwrap();
    let again = exchange(&mut ws, json!({"type": "response.create"}), "response.done").await;
    assert_eq!(again.last().unwrap()["response"]["status"], "completed");
    ws.close(None).await.unwrap();

    let hs = handshakes(&h);
    assert_eq!(hs.len(), 1, "one upstream connection");
    assert_eq!(hs[0].path, "/v1/realtime?model=gpt-realtime");
    assert_eq!(hs[0].header("authorization"), Some("Bearer sk-rt-secret"));
    assert_eq!(hs[0].header("openai-beta"), Some("realtime=v1"));

    let log = h.wait_log("realtime.log", 2).await;
    assert_eq!(log.len(), 2, "one record per response.done");
    let ai = &log[0]["ai"]["proxy"];
    assert_eq!(
        ai["usage"]["total_tokens"].as_u64(),
        usage["total_tokens"].as_u64(),
        "{}",
        log[0]
    );
    assert_eq!(
        ai["usage"]["completion_tokens"].as_u64(),
        usage["output_tokens"].as_u64()
    );
    assert_eq!(ai["meta"]["request_model"], "gpt-realtime", "{}", log[0]);
    let tried = &ai["tried_targets"][0];
    assert_eq!(tried["route_type"], "realtime/v1/realtime");
    assert_eq!(tried["upstream_scheme"], "ws");
    assert_eq!(tried["upstream_uri"], "/v1/realtime?model=gpt-realtime");
    assert_eq!(log[0]["response"]["status"], 200);
    let text = std::fs::read_to_string(h.dir.path().join("realtime.log")).unwrap();
    assert!(!text.contains("sk-rt-secret"));
}

#[tokio::test]
async fn realtime_refusals_come_before_the_upgrade() {
    let h = realtime_harness().await;
    // A model other than the configured one: Kong's 400.
    let (status, body) = realtime(&h, "/pinned?model=gpt-other", &[])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "cannot use own model - must be: gpt-realtime"
    );
    // Without upgrade: 426 with a JSON body.
    let r = support::get(&h.url("/v1/realtime?model=gpt-realtime")).await;
    assert_eq!(r.status, 426);
    assert_eq!(r.json()["error"]["code"], "websocket_required");
    assert_eq!(r.header("upgrade"), Some("websocket"));
    // The configured model fills in; ws:// upstream_url works.
    let mut ws = realtime(&h, "/pinned", &[]).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "session.created");
    assert_eq!(handshakes(&h)[0].path, "/v1/realtime?model=gpt-realtime");
    // The upstream's close reaches the client with its code and reason.
    ws.send(Message::Text(
        json!({"type": "mock.close"}).to_string().into(),
    ))
    .await
    .unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(f))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 4000);
    assert_eq!(close.reason.as_str(), "mock close");
    // An upstream that refuses the handshake: its status and error reach the client, as
    // they would without the gateway (the SDK reports the provider's own message).
    let (status, body) = realtime(&h, "/v1/realtime?model=m", &[("x-mock", "status=401")])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["message"], "mock refusal", "{body}");
    // One whose refusal is no error a client parses (a proxy's page): the gateway's 502.
    let (status, body) = realtime(
        &h,
        "/v1/realtime?model=m",
        &[("x-mock", "status=503;non_json")],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
}

#[tokio::test]
async fn realtime_on_azure_uses_the_deployment_path_and_api_key() {
    let h = realtime_harness().await;
    let mut ws = realtime(&h, "/azure/realtime", &[("api-key", "client-azure-key")])
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "session.created");
    exchange(&mut ws, item("Hi"), "conversation.item.created").await;
    let events = exchange(&mut ws, json!({"type": "response.create"}), "response.done").await;
    // The GA protocol's names without the beta header.
    assert!(events
        .iter()
        .any(|e| e["type"] == "response.output_text.delta"));
    ws.close(None).await.unwrap();
    let hs = handshakes(&h);
    assert_eq!(
        hs[0].path,
        "/openai/realtime?api-version=2024-10-01-preview&deployment=rt-deploy"
    );
    assert_eq!(hs[0].header("api-key"), Some("azure-rt-secret"));
    assert!(hs[0].header("authorization").is_none());
    let log = h.wait_log("azure.log", 1).await;
    assert_eq!(
        log[0]["ai"]["proxy"]["tried_targets"][0]["provider"],
        "azure"
    );
    assert!(
        log[0]["ai"]["proxy"]["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

/// key-auth and the token quota run at the upgrade; each response's usage is charged to
/// the consumer's quota, so a spent quota refuses the next connection.
#[tokio::test]
async fn realtime_upgrade_is_authenticated_and_charged_to_the_token_quota() {
    let h = realtime_harness().await;
    let (status, _) = realtime(&h, "/metered/realtime?model=gpt-realtime", &[])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    let mut ws = realtime(
        &h,
        "/metered/realtime?model=gpt-realtime",
        &[("apikey", "rt-app-key")],
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "session.created");
    exchange(
        &mut ws,
        item("Tell me a story please"),
        "conversation.item.created",
    )
    .await;
    let events = exchange(&mut ws, json!({"type": "response.create"}), "response.done").await;
    let used = events.last().unwrap()["response"]["usage"]["total_tokens"]
        .as_u64()
        .unwrap();
    assert!(used > 5, "the mock's answer spends the quota of 5");
    ws.close(None).await.unwrap();
    let hs = handshakes(&h);
    assert_eq!(hs[0].header("x-consumer-username"), Some("voice-app"));
    assert!(hs[0].header("apikey").is_none(), "the key stays here");
    // The 401 above, then the response.
    let log = h.wait_log("metered.log", 2).await;
    assert_eq!(log[1]["consumer"]["username"], "voice-app", "{}", log[1]);
    assert_eq!(
        log[1]["ai"]["proxy"]["usage"]["total_tokens"].as_u64(),
        Some(used)
    );
    // The quota is spent: the next upgrade is refused.
    let (status, body) = realtime(
        &h,
        "/metered/realtime?model=gpt-realtime",
        &[("apikey", "rt-app-key")],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(status, 429, "{body}");
}

/// A response the upstream reports failed is logged with its error.
#[tokio::test]
async fn a_failed_realtime_response_is_logged_as_failed() {
    let h = realtime_harness().await;
    let mut ws = realtime(&h, "/v1/realtime?model=gpt-realtime", &[])
        .await
        .unwrap();
    next_json(&mut ws).await;
    exchange(
        &mut ws,
        item("[mock:status=500] boom"),
        "conversation.item.created",
    )
    .await;
    let events = exchange(&mut ws, json!({"type": "response.create"}), "response.done").await;
    assert_eq!(events.last().unwrap()["response"]["status"], "failed");
    ws.close(None).await.unwrap();
    let log = h.wait_log("realtime.log", 1).await;
    assert_eq!(
        log[0]["ai"]["proxy"]["tried_targets"][0]["outcome"], "http_200",
        "{}",
        log[0]
    );
    assert!(log[0]
        .to_string()
        .contains("upstream reported a failed response"));
}

/// A session with no frame either way for the read timeout is closed (1001), as nginx's
/// proxy_read_timeout closes an idle WebSocket under Kong; frames keep it open.
#[tokio::test]
async fn an_idle_realtime_session_is_closed_after_the_read_timeout() {
    let h = realtime_harness().await;
    let mut ws = realtime(&h, "/idle/realtime?model=gpt-realtime", &[])
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "session.created");
    // Busy for longer than the timeout: each frame resets it.
    for _ in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let r = exchange(
            &mut ws,
            json!({"type": "session.update", "session": {}}),
            "session.updated",
        )
        .await;
        assert_eq!(r.last().unwrap()["type"], "session.updated");
    }
    let started = std::time::Instant::now();
    let close = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1001);
    assert!(close.reason.contains("idle"), "{}", close.reason);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

//! Anthropic's Messages API: OpenAI requests translated both ways, streams, tools, errors,
//! Anthropic's own clients passing through, and the dialect's golden transcripts.

use serde_json::{json, Value};
use tollgate::llm::Wire;

use crate::common::weather_tools;
use crate::golden;
use crate::support::{post_json, send, sse_data, Harness};

/// One chat route to Anthropic with a file-log; `{MOCK}` and `{DIR}` are filled in by the harness.
pub const ANTHROPIC: &str = r#"
_format_version: "3.0"
services:
  - name: claude
    host: unused.invalid
    routes:
      - name: claude
        paths: ["/claude"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {header_name: x-api-key, header_value: sk-ant-test}
              logging: {log_statistics: true}
              model:
                provider: anthropic
                name: claude-sonnet-4-5
                options:
                  anthropic_version: "2023-06-01"
                  upstream_url: "{MOCK}"
                  max_tokens: 512
          - name: file-log
            config: {path: "{DIR}/claude.log"}
"#;

#[tokio::test]
async fn anthropic_chat_is_translated_both_ways() {
    let h = Harness::start(ANTHROPIC).await;
    let r = post_json(
        &h.url("/claude"),
        &json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"}],
            "temperature": 0.2, "stop": "END"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["model"], "claude-sonnet-4-5");
    assert_eq!(b["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        b["choices"][0]["message"]["content"],
        "Hello from mock-llm."
    );
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    let u = &b["usage"];
    assert_eq!(u["completion_tokens"], 3);
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + 3)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));

    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    let up = seen.json().unwrap();
    assert_eq!(up["model"], "claude-sonnet-4-5");
    assert_eq!(up["system"], "Be brief.");
    assert_eq!(up["max_tokens"], 512);
    assert_eq!(up["temperature"], 0.2);
    assert_eq!(up["stop_sequences"], json!(["END"]));
    assert_eq!(
        up["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}])
    );

    let log = h.wait_log("claude.log", 1).await;
    let ai = &log[0]["ai"]["proxy"];
    assert_eq!(ai["usage"]["completion_tokens"], 3, "{}", log[0]);
    assert_eq!(ai["meta"]["provider_name"], "anthropic", "{}", log[0]);
    assert!(!log[0].to_string().contains("sk-ant-test"), "key in log");
}

#[tokio::test]
async fn anthropic_stream_becomes_openai_chunks() {
    let h = Harness::start(ANTHROPIC).await;
    let r = post_json(
        &h.url("/claude"),
        &json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/event-stream"));
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "claude-sonnet-4-5"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from mock-llm.");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "usage chunk only when asked"
    );
    // The upstream saw a streaming Messages request, without OpenAI-only fields.
    let up = h.mock.requests()[0].json().unwrap();
    assert_eq!(up["stream"], true);
    assert!(up.get("stream_options").is_none());
    let log = h.wait_log("claude.log", 1).await;
    assert_eq!(
        log[0]["ai"]["proxy"]["usage"]["completion_tokens"], 3,
        "{}",
        log[0]
    );

    // Asked for: the usage chunk comes before [DONE].
    let r = post_json(
        &h.url("/claude"),
        &json!({"messages": [{"role": "user", "content": "hi"}], "stream": true,
                "stream_options": {"include_usage": true}}),
    )
    .await;
    let data = sse_data(&r.text());
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn anthropic_tool_calls_buffered_and_streamed() {
    let h = Harness::start(ANTHROPIC).await;
    let ask = json!({"messages": [{"role": "user", "content": "weather? [mock:tool]"}],
        "tools": weather_tools(), "tool_choice": "required"});
    let r = post_json(&h.url("/claude"), &ask).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let call = &b["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "mock"}));
    assert_eq!(b["choices"][0]["finish_reason"], "tool_calls");
    let up = h.mock.requests()[0].json().unwrap();
    assert_eq!(up["tool_choice"], json!({"type": "any"}));
    assert_eq!(up["tools"][0]["name"], "get_weather");
    assert_eq!(up["tools"][0]["input_schema"]["type"], "object");

    // The tool result goes back as a user turn with a tool_result block.
    let id = call["id"].as_str().unwrap().to_string();
    let follow = json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call.clone()]},
        {"role": "tool", "tool_call_id": id, "content": "sunny"}],
        "tools": weather_tools()});
    let r = post_json(&h.url("/claude"), &follow).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = h.mock.requests()[1].json().unwrap();
    assert_eq!(
        up["messages"][1]["content"][0],
        json!({"type": "tool_use", "id": id, "name": "get_weather", "input": {"city": "mock"}})
    );
    assert_eq!(
        up["messages"][2],
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "sunny"}]})
    );

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let r = post_json(&h.url("/claude"), &streamed).await;
    let data = sse_data(&r.text());
    let chunks: Vec<Value> = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(deltas[0][0]["function"]["name"], "get_weather");
    assert_eq!(deltas[0][0]["index"], 0);
    let args: String = deltas
        .iter()
        .filter_map(|d| d[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "mock"})
    );
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
}

#[tokio::test]
async fn anthropic_errors_keep_their_status_in_openai_shape() {
    let h = Harness::start(ANTHROPIC).await;
    let r = post_json(
        &h.url("/claude"),
        &json!({"messages": [{"role": "user", "content": "x [mock:status=429]"}]}),
    )
    .await;
    assert_eq!(r.status, 429);
    let b = r.json();
    assert_eq!(b["error"]["message"], "mock-llm injected status 429");
    assert_eq!(b["error"]["type"], "rate_limit_error");

    // What the Messages API cannot express is refused before it leaves, naming the field.
    for (body, field) in [
        (
            json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            "'n'",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}),
            "'response_format'",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "'messages[0].content[0].type'",
        ),
    ] {
        let r = post_json(&h.url("/claude"), &body).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let m = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(m.contains(field) && m.contains("anthropic"), "{m}");
    }
    assert_eq!(h.mock.requests().len(), 1, "refused requests never left");
}

#[tokio::test]
async fn anthropic_stream_cut_ends_with_an_error_event() {
    let h = Harness::start(ANTHROPIC).await;
    let r = send(
        "POST",
        &h.url("/claude"),
        &[
            ("content-type", "application/json"),
            ("x-mock", "disconnect_after=3"),
        ],
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    let data = sse_data(&r.text());
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_cut", "{data:?}");
    let log = h.wait_log("claude.log", 1).await;
    assert!(log[0]["ai"]["proxy"]["error"].is_string(), "{}", log[0]);
}

/// `llm_format: anthropic`: Anthropic clients (Claude Code, the Anthropic SDK) get
/// Anthropic's own API through the gateway, with the key injected and usage still logged.
#[tokio::test]
async fn anthropic_native_clients_pass_through_with_usage_logged() {
    let yaml = ANTHROPIC.replace(
        "            config:\n              route_type: llm/v1/chat",
        "            config:\n              llm_format: anthropic\n              route_type: llm/v1/chat",
    );
    assert!(yaml.contains("llm_format: anthropic"));
    let h = Harness::start(&yaml).await;
    let native = json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
        "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]});
    let r = post_json(&h.url("/claude"), &native).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["type"], "message", "the answer stays Anthropic's: {b}");
    assert_eq!(b["content"][0]["text"], "Hello from mock-llm.");
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(
        seen.json().unwrap(),
        native,
        "the body goes as the client sent it"
    );

    let mut streamed = native.clone();
    streamed["stream"] = json!(true);
    let r = post_json(&h.url("/claude"), &streamed).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(
        !text.contains("chat.completion.chunk") && !text.contains("[DONE]"),
        "{text}"
    );
    let log = h.wait_log("claude.log", 2).await;
    for line in &log {
        assert_eq!(
            line["ai"]["proxy"]["usage"]["completion_tokens"], 3,
            "{line}"
        );
        assert!(line["ai"]["proxy"].get("error").is_none(), "{line}");
    }

    // Messages clients reach other providers' chat (tests/bridges.rs), not their other
    // route types.
    let on_openai = ANTHROPIC
        .replace("provider: anthropic", "provider: openai")
        .replace(
            "            config:\n              route_type",
            "            config:\n              llm_format: anthropic\n              route_type",
        );
    let load = |y: &str| tollgate::gateway::load_str(&y.replace("{MOCK}", "http://127.0.0.1:9"));
    assert!(load(&on_openai).is_ok());
    let bad = on_openai.replace("llm/v1/chat", "llm/v1/embeddings");
    let e = load(&bad).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("config.llm_format") && e.contains("route_type llm/v1/chat"),
        "{e}"
    );
}

#[test]
fn anthropic_transcripts() {
    let stream = std::fs::read(golden::dir("anthropic").join("stream.response.sse")).unwrap();
    golden::transcripts("anthropic", Wire::Anthropic, "claude-sonnet-4-5", &stream);
}

//! Providers other than OpenAI, through real HTTP: the gateway translates OpenAI requests
//! to each provider's API (mock-llm speaks them by path) and the answers back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use support::{post_json, send, sse_data, Harness};

const ANTHROPIC: &str = r#"
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

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

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

    let bad = ANTHROPIC
        .replace("provider: anthropic", "provider: openai")
        .replace(
            "            config:\n              route_type",
            "            config:\n              llm_format: anthropic\n              route_type",
        );
    let e = tollgate::config::load_str(&bad.replace("{MOCK}", "http://127.0.0.1:9"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("config.llm_format"), "{e}");
}

const AZURE: &str = r#"
_format_version: "3.0"
services:
  - name: az
    host: unused.invalid
    routes:
      - name: az
        paths: ["/az"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {header_name: api-key, header_value: az-key-1}
              model:
                provider: azure
                name: gpt-4o
                options: {azure_instance: my-inst, azure_deployment_id: gpt4o-prod, upstream_url: "{MOCK}"}
"#;

#[tokio::test]
async fn azure_uses_the_deployment_path_and_api_version() {
    let h = Harness::start(AZURE).await;
    let hi = json!({"messages": [{"role": "user", "content": "hi"}]});
    let r = post_json(&h.url("/az"), &hi).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &h.mock.requests()[0];
    assert_eq!(
        seen.path,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2023-05-15"
    );
    assert_eq!(seen.header("api-key"), Some("az-key-1"));
    // The client's own api-version wins, and is not sent twice.
    let r = post_json(&h.url("/az?api-version=2024-10-21"), &hi).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.mock.requests()[1].path,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );

    // Without upstream_url the instance names the host.
    let snap =
        tollgate::config::load_str(&AZURE.replace(", upstream_url: \"{MOCK}\"", "")).unwrap();
    let tollgate::plugins::Plugin::AiProxy(ai) = &snap.plugins[0].plugin else {
        panic!("ai-proxy")
    };
    assert_eq!(&*ai.targets[0].upstream.host, "my-inst.openai.azure.com");
    assert_eq!(ai.targets[0].upstream.port, 443);
    let e = tollgate::config::load_str(&AZURE.replace("azure_instance: my-inst, ", ""))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("model.options.azure_instance"), "{e}");

    // Responses: Azure's v1 API, answered natively (not bridged).
    let responses = AZURE.replace("llm/v1/chat", "llm/v1/responses");
    let h = Harness::start(&responses).await;
    let r = post_json(&h.url("/az"), &json!({"input": "hi"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "response");
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/openai/v1/responses");
    assert_eq!(seen.json().unwrap()["model"], "gpt-4o");
    let preview = responses.replace(
        "azure_deployment_id: gpt4o-prod,",
        "azure_deployment_id: gpt4o-prod, azure_api_version: preview,",
    );
    let h = Harness::start(&preview).await;
    let r = post_json(&h.url("/az"), &json!({"input": "hi"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.mock.requests()[0].path,
        "/openai/v1/responses?api-version=preview"
    );
}

#[tokio::test]
async fn provider_config_errors_name_the_field() {
    let no_version = ANTHROPIC.replace("anthropic_version: \"2023-06-01\"", "max_tokens: 1");
    let e = tollgate::config::load_str(&no_version.replace("{MOCK}", "http://127.0.0.1:9"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("model.options.anthropic_version") && e.contains("required"),
        "{e}"
    );
    let embeddings = ANTHROPIC.replace("llm/v1/chat", "llm/v1/embeddings");
    let e = tollgate::config::load_str(&embeddings.replace("{MOCK}", "http://127.0.0.1:9"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("route_type") && e.contains("anthropic"), "{e}");
    let mistral = ANTHROPIC
        .replace("provider: anthropic", "provider: mistral")
        .replace("anthropic_version: \"2023-06-01\"", "top_k: 1");
    let e = tollgate::config::load_str(&mistral.replace("{MOCK}", "http://127.0.0.1:9"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("model.options.mistral_format"), "{e}");
}

#[tokio::test]
async fn openai_compatible_providers_use_the_chat_api() {
    let yaml = r#"
_format_version: "3.0"
services:
  - name: ds
    host: unused.invalid
    routes:
      - name: ds
        paths: ["/ds"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {header_name: Authorization, header_value: "Bearer sk-ds"}
              model: {provider: deepseek, name: deepseek-chat, options: {upstream_url: "{MOCK}"}}
"#;
    let h = Harness::start(yaml).await;
    let r = post_json(
        &h.url("/ds"),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "deepseek-chat");
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-ds"));
}

/// A service with one ai-proxy route per `(path, route_type, model yaml)`; `{MOCK}` is the
/// mock, `{DIR}/<path>.log` each route's file-log.
fn routes(auth: &str, list: &[(&str, &str, &str)]) -> String {
    let mut y = String::from(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    host: unused.invalid\n    routes:\n",
    );
    for (path, rt, model) in list {
        y.push_str(&format!(
            "      - name: {path}\n        paths: [\"/{path}\"]\n        plugins:\n          - name: ai-proxy\n            config:\n              route_type: {rt}\n              auth: {auth}\n              logging: {{log_statistics: true}}\n              model: {model}\n          - name: file-log\n            config: {{path: \"{{DIR}}/{path}.log\"}}\n"
        ));
    }
    y
}

/// The JSON chunks of an OpenAI stream, after checking it ends with `[DONE]`.
fn chunks(r: &support::Reply) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/event-stream"),
        "{:?}",
        r.header("content-type")
    );
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn finish_reasons(chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .map(|c| c["choices"][0]["finish_reason"].clone())
        .filter(|f| !f.is_null())
        .collect()
}

/// Streamed tool calls: (name of the first, its arguments joined).
fn streamed_call(chunks: &[Value]) -> (String, Value) {
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert!(!deltas.is_empty(), "{chunks:?}");
    assert_eq!(deltas[0][0]["index"], 0);
    assert!(deltas[0][0]["id"].as_str().is_some_and(|s| !s.is_empty()));
    let args: String = deltas
        .iter()
        .filter_map(|d| d[0]["function"]["arguments"].as_str())
        .collect();
    (
        deltas[0][0]["function"]["name"]
            .as_str()
            .unwrap()
            .to_string(),
        serde_json::from_str(&args).unwrap(),
    )
}

fn load_error(yaml: &str) -> String {
    tollgate::config::load_str(&yaml.replace("{MOCK}", "http://127.0.0.1:9"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

fn cohere_yaml() -> String {
    routes(
        "{header_name: Authorization, header_value: \"Bearer co-key\"}",
        &[
            (
                "co",
                "llm/v1/chat",
                "{provider: cohere, name: command-a-03-2025, options: {upstream_url: \"{MOCK}\", top_k: 40}}",
            ),
            (
                "co-embed",
                "llm/v1/embeddings",
                "{provider: cohere, name: embed-v4.0, options: {upstream_url: \"{MOCK}\", cohere: {embedding_input_type: search_query}}}",
            ),
        ],
    )
}

#[tokio::test]
async fn cohere_chat_buffered_and_streamed() {
    let h = Harness::start(&cohere_yaml()).await;
    let r = post_json(
        &h.url("/co"),
        &json!({"messages": [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"}], "top_p": 0.5, "stop": ["END"], "max_tokens": 50}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["model"], "command-a-03-2025");
    assert_eq!(
        b["choices"][0]["message"]["content"],
        "Hello from mock-llm."
    );
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    assert_eq!(b["usage"]["completion_tokens"], 3);
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v2/chat");
    assert_eq!(seen.header("authorization"), Some("Bearer co-key"));
    let up = seen.json().unwrap();
    assert_eq!(up["p"], 0.5);
    assert_eq!(up["k"], 40);
    assert_eq!(up["max_tokens"], 50);
    assert_eq!(up["stop_sequences"], json!(["END"]));
    assert_eq!(up["stream"], false);
    assert_eq!(
        up["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );

    // Streamed, one event per upstream frame.
    let r = send(
        "POST",
        &h.url("/co"),
        &[
            ("content-type", "application/json"),
            ("x-mock", "chunks=5;chunk_delay_ms=2"),
        ],
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true,
            "stream_options": {"include_usage": true}})
        .to_string(),
    )
    .await;
    let c = chunks(&r);
    assert!(c.iter().all(|c| c["model"] == "command-a-03-2025"));
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&c), "tok0 tok1 tok2 tok3 tok4");
    assert_eq!(finish_reasons(&c), [json!("stop")]);
    assert_eq!(c.last().unwrap()["usage"]["completion_tokens"], 5);
    let log = h.wait_log("co.log", 2).await;
    assert_eq!(
        log[1]["ai"]["proxy"]["usage"]["completion_tokens"], 5,
        "{}",
        log[1]
    );
    assert!(!log[1].to_string().contains("co-key"), "key in log");
}

#[tokio::test]
async fn cohere_tool_calls_buffered_and_streamed() {
    let h = Harness::start(&cohere_yaml()).await;
    let ask = json!({"messages": [{"role": "user", "content": "weather? [mock:tool]"}],
        "tools": weather_tools(), "tool_choice": "required"});
    let r = post_json(&h.url("/co"), &ask).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let call = &b["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "mock"}));
    assert_eq!(b["choices"][0]["finish_reason"], "tool_calls");
    let up = h.mock.requests()[0].json().unwrap();
    assert_eq!(up["tool_choice"], "REQUIRED");
    assert_eq!(up["tools"][0]["function"]["name"], "get_weather");

    // The result goes back as a tool message; the assistant's call keeps its id.
    let id = call["id"].as_str().unwrap().to_string();
    let follow = json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call.clone()]},
        {"role": "tool", "tool_call_id": id, "content": "sunny"}],
        "tools": weather_tools()});
    let r = post_json(&h.url("/co"), &follow).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = h.mock.requests()[1].json().unwrap();
    assert_eq!(up["messages"][1]["tool_calls"][0]["id"], json!(id));
    assert_eq!(
        up["messages"][2],
        json!({"role": "tool", "tool_call_id": id, "content": "sunny"})
    );

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let c = chunks(&post_json(&h.url("/co"), &streamed).await);
    let (name, args) = streamed_call(&c);
    assert_eq!(
        (name.as_str(), args),
        ("get_weather", json!({"city": "mock"}))
    );
    assert_eq!(finish_reasons(&c), [json!("tool_calls")]);
    assert_eq!(streamed_text(&c), "Hello from mock-llm.", "the tool plan");
}

#[tokio::test]
async fn cohere_errors_and_refusals() {
    let h = Harness::start(&cohere_yaml()).await;
    let r = post_json(
        &h.url("/co"),
        &json!({"messages": [{"role": "user", "content": "x [mock:status=429]"}]}),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["message"], "mock-llm injected status 429");
    for (body, field) in [
        (
            json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            "'n'",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "'messages[0].content[0].type'",
        ),
    ] {
        let r = post_json(&h.url("/co"), &body).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let m = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(m.contains(field) && m.contains("cohere"), "{m}");
    }
    assert_eq!(h.mock.requests().len(), 1, "refused requests never left");
}

#[tokio::test]
async fn cohere_embeddings() {
    let h = Harness::start(&cohere_yaml()).await;
    let r = post_json(
        &h.url("/co-embed"),
        &json!({"input": ["one two", "three"], "encoding_format": "float"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["object"], "list");
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    assert_eq!(b["data"][1]["index"], 1);
    assert_eq!(b["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(b["model"], "embed-v4.0");
    assert_eq!(b["usage"]["prompt_tokens"], 3);
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v2/embed");
    let up = seen.json().unwrap();
    assert_eq!(up["texts"], json!(["one two", "three"]));
    assert_eq!(up["input_type"], "search_query");
    assert_eq!(up["embedding_types"], json!(["float"]));
    let r = post_json(&h.url("/co-embed"), &json!({"input": [[1, 2, 3]]})).await;
    assert_eq!(r.status, 400, "{}", r.text());
}

/// `routes(...)` with `llm_format: {format}` on every route.
fn native_routes(format: &str, auth: &str, list: &[(&str, &str, &str)]) -> String {
    let y = routes(auth, list).replace(
        "            config:\n              route_type:",
        &format!(
            "            config:\n              llm_format: {format}\n              route_type:"
        ),
    );
    assert_eq!(y.matches("llm_format").count(), list.len());
    y
}

/// A native stream reached the client as it came, frame by frame, not buffered.
fn streamed_untouched(r: &support::Reply, sent: &str) {
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        !text.contains("chat.completion.chunk") && !text.contains("[DONE]") || sent == "openai",
        "{text}"
    );
    assert!(r.frames.len() > 1, "streamed, not buffered: {:?}", r.frames);
    let (first, last) = (r.frames[0].0, r.frames[r.frames.len() - 1].0);
    assert!(
        last - first >= std::time::Duration::from_millis(60),
        "frames passed as they came: {:?}",
        r.frames.iter().map(|f| f.0).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn cohere_native_clients_pass_through_with_usage_logged() {
    let yaml = native_routes(
        "cohere",
        "{header_name: Authorization, header_value: \"Bearer co-key\"}",
        &[
            (
                "co",
                "llm/v1/chat",
                "{provider: cohere, name: command-a-03-2025, options: {upstream_url: \"{MOCK}\"}}",
            ),
            // No model configured: each call names its own (chat, rerank) or uses Cohere's default.
            (
                "co-any",
                "llm/v1/chat",
                "{provider: cohere, options: {upstream_url: \"{MOCK}\"}}",
            ),
            // A configured path replaces the client's.
            (
                "co-fixed",
                "llm/v1/chat",
                "{provider: cohere, options: {upstream_url: \"{MOCK}/v2/chat\"}}",
            ),
        ],
    );
    let h = Harness::start(&yaml).await;
    let client = [
        ("content-type", "application/json"),
        ("authorization", "Bearer client-own-key"),
        ("x-mock", "chunk_delay_ms=40"),
    ];
    // v2 chat, buffered: Cohere's answer, the body upstream byte for byte.
    let v2 = r#"{ "model":"command-a-03-2025", "messages": [{"role":"user","content":"hi there"}], "max_tokens" : 50 }"#;
    let r = send("POST", &h.url("/co/v2/chat"), &client, v2).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(
        b["message"]["content"][0]["text"], "Hello from mock-llm.",
        "the answer stays Cohere's: {b}"
    );
    assert_eq!(b["usage"]["billed_units"]["output_tokens"], 3);
    let seen = h.mock.last_request().unwrap();
    assert_eq!(seen.path, "/v2/chat");
    assert_eq!(seen.header("authorization"), Some("Bearer co-key"));
    assert_eq!(
        seen.body,
        v2.as_bytes(),
        "the body goes as the client sent it"
    );

    // v2 chat, streamed: Cohere's SSE, observed as it passes.
    let v2s = r#"{"stream":true,"model":"command-a-03-2025","messages":[{"role":"user","content":"hi there"}]}"#;
    let r = send("POST", &h.url("/co/v2/chat"), &client, v2s).await;
    streamed_untouched(&r, "cohere");
    assert!(
        r.text().starts_with("event: message-start\n"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("event: message-end\n"), "{}", r.text());
    assert_eq!(h.mock.last_request().unwrap().body, v2s.as_bytes());

    // Another model than the configured one is refused before anything is sent.
    let r = post_json(
        &h.url("/co/v2/chat"),
        &json!({"model": "command-r", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("cannot use own model"), "{}", r.text());
    assert_eq!(h.mock.requests().len(), 2);

    let log = h.wait_log("co.log", 3).await;
    assert_eq!(log[2]["response"]["status"], 400);
    for line in &log[..2] {
        let ai = &line["ai"]["proxy"];
        assert_eq!(ai["usage"]["prompt_tokens"], 2, "{line}");
        assert_eq!(ai["usage"]["completion_tokens"], 3, "{line}");
        assert_eq!(ai["usage"]["total_tokens"], 5, "{line}");
        assert_eq!(ai["meta"]["request_model"], "command-a-03-2025", "{line}");
        assert!(ai.get("error").is_none(), "{line}");
        assert_eq!(line["upstream_uri"], "/v2/chat", "{line}");
    }
    assert_eq!(log[1]["ai"]["proxy"]["meta"]["request_mode"], "stream");

    // v1 chat (no model anywhere: Cohere's default), buffered and as an NDJSON stream.
    let v1 = r#"{"message":"hi there","chat_history":[{"role":"USER","message":"one two"}]}"#;
    let r = send("POST", &h.url("/co-any/v1/chat"), &client, v1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["text"], "Hello from mock-llm.");
    let seen = h.mock.last_request().unwrap();
    assert_eq!(
        (seen.path.as_str(), &seen.body[..]),
        ("/v1/chat", v1.as_bytes())
    );
    assert_eq!(seen.header("authorization"), Some("Bearer co-key"));
    let v1s = r#"{"message":"hi there","chat_history":[{"role":"USER","message":"one two"}],"stream":true}"#;
    let r = send("POST", &h.url("/co-any/v1/chat"), &client, v1s).await;
    streamed_untouched(&r, "cohere");
    assert_eq!(r.header("content-type"), Some("application/stream+json"));
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["event_type"], "stream-end");
    assert_eq!(h.mock.last_request().unwrap().body, v1s.as_bytes());

    // Rerank bills search units, logged as such (no tokens).
    let rerank = r#"{"model":"rerank-v3.5","query":"capital of France","documents":["Berlin","Paris is the capital of France"]}"#;
    let r = send("POST", &h.url("/co-any/v2/rerank"), &client, rerank).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["index"], 1);
    assert_eq!(h.mock.last_request().unwrap().path, "/v2/rerank");

    let log = h.wait_log("co-any.log", 3).await;
    for line in &log[..2] {
        let ai = &line["ai"]["proxy"];
        assert_eq!(ai["usage"]["prompt_tokens"], 4, "{line}");
        assert_eq!(ai["usage"]["completion_tokens"], 3, "{line}");
        assert_eq!(ai["meta"]["request_model"], "UNSPECIFIED", "{line}");
        assert!(ai.get("error").is_none(), "{line}");
    }
    assert_eq!(log[1]["ai"]["proxy"]["meta"]["request_mode"], "stream");
    let ai = &log[2]["ai"]["proxy"];
    assert_eq!(ai["usage"]["search_units"], 1, "{}", log[2]);
    assert_eq!(ai["usage"]["total_tokens"], 0, "{}", log[2]);
    assert_eq!(ai["meta"]["request_model"], "rerank-v3.5", "{}", log[2]);

    let r = send("POST", &h.url("/co-fixed/v1/other"), &client, v2).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.mock.last_request().unwrap().path, "/v2/chat");

    for seen in h.mock.requests() {
        assert!(
            seen.headers
                .iter()
                .all(|(_, v)| !v.contains("client-own-key")),
            "the client's own key is replaced: {:?}",
            seen.headers
        );
    }

    // Every target must be Cohere with chat (or preserve).
    let e = load_error(&yaml.replace(
        "provider: cohere, name: command",
        "provider: openai, name: command",
    ));
    assert!(
        e.contains("config.llm_format") && e.contains("provider 'cohere'"),
        "{e}"
    );
    let e = load_error(&native_routes(
        "cohere",
        "{}",
        &[(
            "e",
            "llm/v1/embeddings",
            "{provider: cohere, name: embed-v4.0}",
        )],
    ));
    assert!(e.contains("config.llm_format"), "{e}");
}

#[tokio::test]
async fn huggingface_native_clients_pass_through_with_usage_logged() {
    let yaml = native_routes(
        "huggingface",
        "{header_name: Authorization, header_value: \"Bearer hf_test\"}",
        &[(
            "tgi",
            "llm/v1/chat",
            "{provider: huggingface, name: meta-llama/Llama-3.1-8B-Instruct, options: {upstream_url: \"{MOCK}\"}}",
        )],
    );
    let h = Harness::start(&yaml).await;
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer hf_client_own"),
        ("x-mock", "chunk_delay_ms=40"),
    ];
    // TGI's generate: no model in the body, and none is added.
    let gen = r#"{"inputs":"hi there","parameters":{"max_new_tokens":20,"details":true}}"#;
    let r = send("POST", &h.url("/tgi/generate"), &headers, gen).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["generated_text"],
        "Hello from mock-llm.",
        "TGI's answer: {}",
        r.text()
    );
    let seen = h.mock.last_request().unwrap();
    assert_eq!(
        (seen.path.as_str(), &seen.body[..]),
        ("/generate", gen.as_bytes())
    );
    assert_eq!(seen.header("authorization"), Some("Bearer hf_test"));

    // generate_stream streams by its path; TGI's events pass untouched.
    let r = send("POST", &h.url("/tgi/generate_stream"), &headers, gen).await;
    streamed_untouched(&r, "huggingface");
    assert!(
        r.text().starts_with("data: {\"index\":1,\"token\""),
        "{}",
        r.text()
    );
    let seen = h.mock.last_request().unwrap();
    assert_eq!(
        (seen.path.as_str(), &seen.body[..]),
        ("/generate_stream", gen.as_bytes())
    );

    // The router's OpenAI-compatible path, buffered and streamed.
    let chat = r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi there"}]}"#;
    let r = send("POST", &h.url("/tgi/v1/chat/completions"), &headers, chat).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(h.mock.last_request().unwrap().body, chat.as_bytes());
    let chat_s = r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi there"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let r = send("POST", &h.url("/tgi/v1/chat/completions"), &headers, chat_s).await;
    streamed_untouched(&r, "openai");
    assert_eq!(h.mock.last_request().unwrap().body, chat_s.as_bytes());
    assert_eq!(h.mock.last_request().unwrap().path, "/v1/chat/completions");

    let log = h.wait_log("tgi.log", 4).await;
    let usage = |i: usize| {
        let u = &log[i]["ai"]["proxy"]["usage"];
        assert!(log[i]["ai"]["proxy"].get("error").is_none(), "{}", log[i]);
        (u["prompt_tokens"].clone(), u["completion_tokens"].clone())
    };
    // TGI counts generated tokens only (its stream's last event counts the end token too).
    assert_eq!(usage(0), (json!(0), json!(3)));
    assert_eq!(usage(1), (json!(0), json!(4)));
    assert_eq!(usage(2), (json!(2), json!(3)));
    assert_eq!(usage(3), (json!(2), json!(3)));
    assert_eq!(log[1]["ai"]["proxy"]["meta"]["request_mode"], "stream");
    assert_eq!(log[2]["upstream_uri"], "/v1/chat/completions");
    for seen in h.mock.requests() {
        assert!(
            seen.headers
                .iter()
                .all(|(_, v)| !v.contains("hf_client_own")),
            "the client's own key is replaced: {:?}",
            seen.headers
        );
    }

    let e = load_error(&yaml.replace("provider: huggingface", "provider: cohere"));
    assert!(
        e.contains("config.llm_format") && e.contains("provider 'huggingface'"),
        "{e}"
    );
}

fn ollama_yaml() -> String {
    routes(
        "{}",
        &[
            (
                "ol",
                "llm/v1/chat",
                "{provider: ollama, name: llama3.2, options: {upstream_url: \"{MOCK}\", temperature: 0.1}}",
            ),
            (
                "ol-embed",
                "llm/v1/embeddings",
                "{provider: ollama, name: all-minilm, options: {upstream_url: \"{MOCK}\"}}",
            ),
            (
                "mi",
                "llm/v1/chat",
                "{provider: mistral, name: mistral, options: {mistral_format: ollama, upstream_url: \"{MOCK}\"}}",
            ),
            (
                "ll",
                "llm/v1/chat",
                "{provider: llama2, name: llama2, options: {llama2_format: ollama, upstream_url: \"{MOCK}\"}}",
            ),
        ],
    )
}

#[tokio::test]
async fn ollama_chat_buffered_and_ndjson_stream() {
    let h = Harness::start(&ollama_yaml()).await;
    let r = post_json(
        &h.url("/ol"),
        &json!({"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 64}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let b = r.json();
    assert_eq!(b["model"], "llama3.2");
    assert_eq!(
        b["choices"][0]["message"]["content"],
        "Hello from mock-llm."
    );
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    assert_eq!(b["usage"]["completion_tokens"], 3);
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/api/chat");
    let up = seen.json().unwrap();
    assert_eq!(up["stream"], false, "Ollama would stream without it");
    assert_eq!(
        up["options"],
        json!({"num_predict": 64, "temperature": 0.1})
    );

    // Ollama's NDJSON becomes OpenAI SSE, one line per upstream frame.
    let r = send(
        "POST",
        &h.url("/ol"),
        &[
            ("content-type", "application/json"),
            ("x-mock", "chunk_delay_ms=2"),
        ],
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string(),
    )
    .await;
    let c = chunks(&r);
    assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&c), "Hello from mock-llm.");
    assert_eq!(finish_reasons(&c), [json!("stop")]);
    assert!(
        c.iter().all(|c| c.get("usage").is_none()),
        "usage only when asked"
    );
    let log = h.wait_log("ol.log", 2).await;
    assert_eq!(
        log[1]["ai"]["proxy"]["usage"]["completion_tokens"], 3,
        "{}",
        log[1]
    );
    assert!(log[1]["ai"]["proxy"].get("error").is_none(), "{}", log[1]);

    // A length stop is reported as such.
    let r = post_json(
        &h.url("/ol"),
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    )
    .await;
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn ollama_tools_errors_and_embeddings() {
    let h = Harness::start(&ollama_yaml()).await;
    let ask = json!({"messages": [{"role": "user", "content": "weather? [mock:tool]"}],
        "tools": weather_tools()});
    let b = post_json(&h.url("/ol"), &ask).await.json();
    let call = &b["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"mock\"}");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(b["choices"][0]["finish_reason"], "tool_calls");

    // The call goes back with an object as arguments, the result with the tool's name.
    let follow = json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call.clone()]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]});
    let r = post_json(&h.url("/ol"), &follow).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = h.mock.requests()[1].json().unwrap();
    assert_eq!(
        up["messages"][1]["tool_calls"][0]["function"]["arguments"],
        json!({"city": "mock"})
    );
    assert_eq!(up["messages"][2]["tool_name"], "get_weather");

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let c = chunks(&post_json(&h.url("/ol"), &streamed).await);
    let (name, args) = streamed_call(&c);
    assert_eq!(
        (name.as_str(), args),
        ("get_weather", json!({"city": "mock"}))
    );
    assert_eq!(finish_reasons(&c), [json!("tool_calls")]);

    let r = post_json(
        &h.url("/ol"),
        &json!({"messages": [{"role": "user", "content": "x [mock:status=404]"}]}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["message"], "mock-llm injected status 404");
    let r = post_json(
        &h.url("/ol"),
        &json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required",
            "tools": weather_tools()}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("'tool_choice'"), "{}", r.text());

    let r = post_json(&h.url("/ol-embed"), &json!({"input": "hello there"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(b["model"], "all-minilm");
    assert_eq!(b["usage"]["prompt_tokens"], 2);
    assert_eq!(h.mock.last_request().unwrap().path, "/api/embed");
}

#[tokio::test]
async fn mistral_and_llama2_in_ollama_format_use_the_native_api() {
    let h = Harness::start(&ollama_yaml()).await;
    for (path, model) in [("/mi", "mistral"), ("/ll", "llama2")] {
        let r = post_json(
            &h.url(path),
            &json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}),
        )
        .await;
        let c = chunks(&r);
        assert_eq!(streamed_text(&c), "Hello from mock-llm.");
        let seen = h.mock.last_request().unwrap();
        assert_eq!(seen.path, "/api/chat");
        assert_eq!(seen.json().unwrap()["model"], model);
    }
}

#[tokio::test]
async fn llama2_raw_buffered_and_streamed() {
    let yaml = routes(
        "{header_name: Authorization, header_value: \"Bearer hf-key\"}",
        &[
            (
                "raw",
                "llm/v1/chat",
                "{provider: llama2, name: llama-2-7b-chat, options: {llama2_format: raw, upstream_url: \"{MOCK}\", max_tokens: 100}}",
            ),
            (
                "raw-path",
                "llm/v1/chat",
                "{provider: llama2, name: llama-2-7b-chat, options: {llama2_format: raw, upstream_url: \"{MOCK}/models/x/generate\"}}",
            ),
        ],
    );
    let h = Harness::start(&yaml).await;
    let ask = json!({"messages": [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"}]});
    let r = post_json(&h.url("/raw"), &ask).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["model"], "llama-2-7b-chat");
    assert_eq!(
        b["choices"][0]["message"]["content"],
        "Hello from mock-llm."
    );
    assert_eq!(b["usage"]["completion_tokens"], 3);
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/generate");
    assert_eq!(seen.header("authorization"), Some("Bearer hf-key"));
    let up = seen.json().unwrap();
    assert_eq!(
        up["inputs"],
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhi [/INST]"
    );
    assert_eq!(up["parameters"]["max_new_tokens"], 100);

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let c = chunks(&post_json(&h.url("/raw"), &streamed).await);
    assert_eq!(streamed_text(&c), "Hello from mock-llm.");
    assert_eq!(finish_reasons(&c), [json!("stop")]);
    assert_eq!(h.mock.last_request().unwrap().path, "/generate_stream");

    // A path in upstream_url is used as given.
    let r = post_json(&h.url("/raw-path"), &ask).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.mock.last_request().unwrap().path, "/models/x/generate");

    let r = post_json(
        &h.url("/raw"),
        &json!({"messages": [{"role": "user", "content": "x"}], "tools": weather_tools()}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("'tools'"), "{}", r.text());
    let r = post_json(
        &h.url("/raw"),
        &json!({"messages": [{"role": "user", "content": "x [mock:status=503]"}]}),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["message"], "mock-llm injected status 503");
}

#[tokio::test]
async fn huggingface_uses_the_router_chat_api() {
    let yaml = routes(
        "{header_name: Authorization, header_value: \"Bearer hf_test\"}",
        &[(
            "hf",
            "llm/v1/chat",
            "{provider: huggingface, name: meta-llama/Llama-3.1-8B-Instruct, options: {upstream_url: \"{MOCK}\", huggingface: {use_cache: false, wait_for_model: true}}}",
        ), (
            "hf-embed",
            "llm/v1/embeddings",
            "{provider: huggingface, name: BAAI/bge-small-en-v1.5, options: {upstream_url: \"{MOCK}\", huggingface: {wait_for_model: true}}}",
        )],
    );
    let h = Harness::start(&yaml).await;
    let r = post_json(
        &h.url("/hf"),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "meta-llama/Llama-3.1-8B-Instruct");
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("authorization"), Some("Bearer hf_test"));
    assert_eq!(seen.header("x-use-cache"), Some("false"));
    assert_eq!(seen.header("x-wait-for-model"), Some("true"));

    // Embeddings go to the feature-extraction pipeline, the model (with its slash) in the path.
    let r = post_json(&h.url("/hf-embed"), &json!({"input": ["a b", "c"]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    assert_eq!(b["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(b["model"], "BAAI/bge-small-en-v1.5");
    let seen = h.mock.last_request().unwrap();
    assert_eq!(
        seen.path,
        "/hf-inference/models/BAAI/bge-small-en-v1.5/pipeline/feature-extraction"
    );
    assert_eq!(seen.json().unwrap(), json!({"inputs": ["a b", "c"]}));
    assert_eq!(seen.header("x-wait-for-model"), Some("true"));
    let r = post_json(
        &h.url("/hf-embed"),
        &json!({"input": "x [mock:status=503]"}),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["message"], "mock-llm injected status 503");

    let snap = tollgate::config::load_str(&yaml.replace("upstream_url: \"{MOCK}\", ", "")).unwrap();
    let tollgate::plugins::Plugin::AiProxy(ai) = &snap.plugins[0].plugin else {
        panic!("ai-proxy")
    };
    assert_eq!(&*ai.targets[0].upstream.host, "router.huggingface.co");
}

#[tokio::test]
async fn new_provider_config_errors_name_the_field() {
    let one = |model: &str, rt: &str| routes("{}", &[("x", rt, model)]);
    for (yaml, field) in [
        (one("{provider: ollama, name: m}", "llm/v1/chat"), "model.options.upstream_url"),
        (
            one("{provider: llama2, name: m, options: {upstream_url: \"{MOCK}\"}}", "llm/v1/chat"),
            "model.options.llama2_format",
        ),
        (
            one("{provider: llama2, name: m, options: {llama2_format: raw}}", "llm/v1/chat"),
            "model.options.upstream_url",
        ),
        (
            one(
                "{provider: llama2, name: m, options: {llama2_format: raw, upstream_url: \"{MOCK}\"}}",
                "llm/v1/embeddings",
            ),
            "route_type",
        ),
        (
            one("{provider: mistral, name: m, options: {mistral_format: ollama}}", "llm/v1/chat"),
            "model.options.upstream_url",
        ),
        (
            one("{provider: mistral, name: m, options: {mistral_format: vllm}}", "llm/v1/chat"),
            "model.options.mistral_format",
        ),
        (
            one("{provider: cohere, name: m, options: {cohere: {embedding_input_type: poems}}}", "llm/v1/embeddings"),
            "embedding_input_type",
        ),
        (
            one("{provider: huggingface, name: m, options: {huggingface: {use_gpu: true}}}", "llm/v1/chat"),
            "use_gpu",
        ),
        (one("{provider: cohere, name: m}", "llm/v1/files"), "route_type"),
    ] {
        let e = load_error(&yaml);
        assert!(e.contains(field), "{field}: {e}");
    }
    // Cohere needs nothing but a key: its endpoint is the default.
    let snap =
        tollgate::config::load_str(&one("{provider: cohere, name: m}", "llm/v1/chat")).unwrap();
    let tollgate::plugins::Plugin::AiProxy(ai) = &snap.plugins[0].plugin else {
        panic!("ai-proxy")
    };
    assert_eq!(&*ai.targets[0].upstream.host, "api.cohere.com");
    assert_eq!(ai.targets[0].upstream.path.as_deref(), Some("/v2/chat"));
}

/// Golden transcripts under `tests/fixtures/llm/<provider>/`: a client request and the
/// upstream body it becomes, a provider answer and the OpenAI answer it becomes, a provider
/// stream and the OpenAI stream it becomes (fed whole and in 7-byte pieces).
/// `UPDATE_GOLDEN=1` rewrites the expected files; review the diff before committing.
const GEMINI: &str = r#"
_format_version: "3.0"
services:
  - name: gem
    host: unused.invalid
    routes:
      - name: gem
        paths: ["/gem"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {header_name: x-goog-api-key, header_value: AIza-test-key}
              logging: {log_statistics: true}
              model:
                provider: gemini
                name: gemini-2.5-flash
                options:
                  upstream_url: "{MOCK}"
                  max_tokens: 256
                  top_k: 40
          - name: file-log
            config: {path: "{DIR}/gem.log"}
      - name: gem-embed
        paths: ["/gem-embed"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/embeddings
              auth: {param_name: key, param_value: AIza-query-key, param_location: query}
              logging: {log_statistics: true}
              model:
                provider: gemini
                name: text-embedding-004
                options: {upstream_url: "{MOCK}"}
          - name: file-log
            config: {path: "{DIR}/embed.log"}
"#;

/// Posts JSON with the placeholder key an OpenAI SDK always sends.
async fn post_openai_sdk(url: &str, body: &Value) -> support::Reply {
    send(
        "POST",
        url,
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer sk-placeholder"),
        ],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn gemini_chat_is_translated_both_ways() {
    let h = Harness::start(GEMINI).await;
    let r = post_openai_sdk(
        &h.url("/gem"),
        &json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"}],
            "temperature": 0.2, "stop": "END"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["model"], "gemini-2.5-flash");
    assert_eq!(b["id"], "mock-gemini-1");
    assert_eq!(b["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        b["choices"][0]["message"]["content"],
        "Hello from mock-llm."
    );
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    let u = &b["usage"];
    assert_eq!(u["completion_tokens"], 3);
    assert_eq!(u["prompt_tokens"], 4);
    assert_eq!(u["total_tokens"], 7);
    assert_eq!(
        r.header("x-kong-llm-model"),
        Some("gemini/gemini-2.5-flash")
    );

    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(seen.header("x-goog-api-key"), Some("AIza-test-key"));
    assert_eq!(
        seen.header("authorization"),
        None,
        "the SDK's placeholder stays behind"
    );
    let up = seen.json().unwrap();
    assert_eq!(
        up,
        json!({"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 256, "stopSequences": ["END"],
                "temperature": 0.2, "topK": 40}})
    );

    let log = h.wait_log("gem.log", 1).await;
    let ai = &log[0]["ai"]["proxy"];
    assert_eq!(ai["usage"]["completion_tokens"], 3, "{}", log[0]);
    assert_eq!(ai["meta"]["provider_name"], "gemini", "{}", log[0]);
    assert!(!log[0].to_string().contains("AIza-test-key"), "key in log");
}

#[tokio::test]
async fn gemini_stream_becomes_openai_chunks() {
    let h = Harness::start(GEMINI).await;
    // Five reply pieces, each its own upstream write.
    let r = send(
        "POST",
        &h.url("/gem"),
        &[
            ("content-type", "application/json"),
            ("x-mock", "chunks=5;chunk_delay_ms=5"),
        ],
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/event-stream"));
    assert!(r.frames.len() > 1, "streamed, not buffered");
    let seen = &h.mock.requests()[0];
    assert_eq!(
        seen.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"
        && c["model"] == "gemini-2.5-flash"
        && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    let log = h.wait_log("gem.log", 1).await;
    assert_eq!(
        log[0]["ai"]["proxy"]["usage"]["completion_tokens"], 5,
        "the latest running total: {}",
        log[0]
    );

    let r = post_json(
        &h.url("/gem"),
        &json!({"messages": [{"role": "user", "content": "hi"}], "stream": true,
                "stream_options": {"include_usage": true}}),
    )
    .await;
    let data = sse_data(&r.text());
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);

    // A stream cut before the finish reason ends with an error event, not [DONE].
    let r = send(
        "POST",
        &h.url("/gem"),
        &[
            ("content-type", "application/json"),
            ("x-mock", "disconnect_after=2"),
        ],
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string(),
    )
    .await;
    let data = sse_data(&r.text());
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_cut", "{data:?}");
}

#[tokio::test]
async fn gemini_tool_calls_round_trip() {
    let h = Harness::start(GEMINI).await;
    let ask = json!({"messages": [{"role": "user", "content": "weather? [mock:tool]"}],
        "tools": weather_tools(), "tool_choice": "required"});
    let r = post_json(&h.url("/gem"), &ask).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let msg = &b["choices"][0]["message"];
    assert_eq!(msg["content"], Value::Null);
    let call = &msg["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "mock"}));
    assert_eq!(b["choices"][0]["finish_reason"], "tool_calls");
    let up = h.mock.requests()[0].json().unwrap();
    assert_eq!(
        up["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
    assert_eq!(
        up["tools"][0]["functionDeclarations"][0],
        json!({"name": "get_weather", "description": "Weather",
            "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
    );

    // The result goes back as a functionResponse named after the call it answers.
    let id = call["id"].as_str().unwrap().to_string();
    let follow = json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call.clone()]},
        {"role": "tool", "tool_call_id": id, "content": "sunny"},
        {"role": "tool", "tool_call_id": id, "content": "{\"temp_c\": 21}"}],
        "tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": "get_weather"}}});
    let r = post_json(&h.url("/gem"), &follow).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = h.mock.requests()[1].json().unwrap();
    assert_eq!(
        up["contents"],
        json!([
            {"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "mock"}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}},
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}]}])
    );
    assert_eq!(
        up["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let r = post_json(&h.url("/gem"), &streamed).await;
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
    assert_eq!(deltas.len(), 1, "{data:?}");
    assert_eq!(deltas[0][0]["index"], 0);
    assert_eq!(deltas[0][0]["function"]["name"], "get_weather");
    assert_eq!(deltas[0][0]["function"]["arguments"], "{\"city\":\"mock\"}");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
}

#[tokio::test]
async fn gemini_embeddings_use_batch_embed_contents_and_a_query_key() {
    let h = Harness::start(GEMINI).await;
    let r = post_openai_sdk(
        &h.url("/gem-embed"),
        &json!({"input": ["first text", "second"], "model": "text-embedding-004", "dimensions": 4}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["object"], "list");
    assert_eq!(b["model"], "text-embedding-004");
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    assert_eq!(b["data"][1]["index"], 1);
    assert_eq!(b["data"][1]["object"], "embedding");
    assert_eq!(b["data"][0]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(b["usage"], json!({"prompt_tokens": 5, "total_tokens": 5}));
    let seen = &h.mock.requests()[0];
    assert_eq!(
        seen.path,
        "/v1beta/models/text-embedding-004:batchEmbedContents?key=AIza-query-key"
    );
    assert_eq!(seen.query_param("key").as_deref(), Some("AIza-query-key"));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.json().unwrap()["requests"][0],
        json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "first text"}]},
            "outputDimensionality": 4})
    );
    let log = h.wait_log("embed.log", 1).await;
    let line = log[0].to_string();
    assert!(!line.contains("AIza-query-key"), "key in log: {line}");
    assert!(
        log[0]["ai"]["proxy"]["tried_targets"][0]["upstream_uri"]
            .as_str()
            .unwrap_or("")
            .ends_with("key=REDACTED"),
        "{line}"
    );
}

#[tokio::test]
async fn gemini_errors_keep_their_status_in_openai_shape() {
    let h = Harness::start(GEMINI).await;
    let r = post_json(
        &h.url("/gem"),
        &json!({"messages": [{"role": "user", "content": "x [mock:status=429]"}]}),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "mock-llm injected status 429", "type": "rate_limit_error",
            "param": null, "code": "RESOURCE_EXHAUSTED"}})
    );
    // Google's own refusals keep their status too: a key in the body is no key to Gemini.
    let yaml = GEMINI.replace(
        "auth: {header_name: x-goog-api-key, header_value: AIza-test-key}",
        "auth: {param_name: api_key, param_value: k, param_location: body}",
    );
    let h2 = Harness::start(&yaml).await;
    let r = post_json(
        &h2.url("/gem"),
        &json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "UNAUTHENTICATED");
    assert_eq!(r.json()["error"]["type"], "authentication_error");

    for (body, field) in [
        (
            json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
            "'messages[0].tool_call_id'",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "flac"}}]}]}),
            "'messages[0].content[0].input_audio.format'",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "grammar"}}),
            "'response_format'",
        ),
    ] {
        let r = post_json(&h.url("/gem"), &body).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let m = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(m.contains(field) && m.contains("gemini"), "{m}");
    }
    let old = GEMINI.replace("name: gemini-2.5-flash", "name: gemini-1.0-pro");
    let h3 = Harness::start(&old).await;
    let r = post_json(
        &h3.url("/gem"),
        &json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    let m = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        m.contains("'messages[0]'") && m.contains("systemInstruction"),
        "{m}"
    );
    assert_eq!(h.mock.requests().len(), 1, "refused requests never left");
    assert!(h3.mock.requests().is_empty());
}

/// `llm_format: gemini`: clients of Google's own SDKs call `…/models/{m}:generateContent`
/// through the route; the body and answer pass untouched, the key is the gateway's, and usage
/// is still logged (buffered and `alt=sse` streamed).
#[tokio::test]
async fn gemini_native_clients_pass_through_with_usage_logged() {
    let yaml = GEMINI.replace(
        "            config:\n              route_type: llm/v1/chat",
        "            config:\n              llm_format: gemini\n              route_type: llm/v1/chat",
    );
    assert!(yaml.contains("llm_format: gemini"));
    let h = Harness::start(&yaml).await;
    let native = json!({"contents": [{"role": "user", "parts": [{"text": "hi there"}]}],
        "generationConfig": {"temperature": 0.1}});
    let r = send(
        "POST",
        &h.url("/gem/v1beta/models/gemini-2.5-flash:generateContent"),
        &[
            ("content-type", "application/json"),
            ("x-goog-api-key", "client-own-key"),
        ],
        native.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(
        b["candidates"][0]["content"]["parts"][0]["text"], "Hello from mock-llm.",
        "the answer stays Gemini's: {b}"
    );
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(seen.header("x-goog-api-key"), Some("AIza-test-key"));
    assert_eq!(
        seen.json().unwrap(),
        native,
        "the body goes as the client sent it"
    );

    let r = post_json(
        &h.url("/gem/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
        &native,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.starts_with("data: {\"candidates\""), "{text}");
    assert!(
        !text.contains("chat.completion.chunk") && !text.contains("[DONE]"),
        "{text}"
    );
    assert_eq!(
        h.mock.requests()[1].path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    let log = h.wait_log("gem.log", 2).await;
    for line in &log {
        let ai = &line["ai"]["proxy"];
        assert_eq!(ai["usage"]["prompt_tokens"], 2, "{line}");
        assert_eq!(ai["usage"]["completion_tokens"], 3, "{line}");
        assert!(ai.get("error").is_none(), "{line}");
    }
    assert_eq!(
        log[1]["ai"]["proxy"]["meta"]["request_mode"], "stream",
        "{}",
        log[1]
    );

    // Another model than the configured one is refused, as for OpenAI clients.
    let r = post_json(
        &h.url("/gem/v1beta/models/gemini-2.5-pro:generateContent"),
        &native,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(h.mock.requests().len(), 2);

    let e = tollgate::config::load_str(
        &yaml
            .replace("provider: gemini", "provider: openai")
            .replace("{MOCK}", "http://127.0.0.1:9"),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("config.llm_format"), "{e}");
}

/// A service-account key file around the test-only RSA key, its tokens from `token_uri`.
fn service_account_json(token_uri: &str) -> String {
    let pem = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gcp/test-only-rsa-key.pem"),
    )
    .unwrap();
    json!({"type": "service_account", "project_id": "tollgate-test", "private_key_id": "test-only",
        "private_key": pem, "client_email": "gateway@tollgate-test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_uri})
    .to_string()
}

fn vertex_yaml(sa_json: &str) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
  - name: vx
    host: unused.invalid
    routes:
      - name: vx
        paths: ["/vx"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth:
                gcp_use_service_account: true
                gcp_service_account_json: '{sa_json}'
              model:
                provider: gemini
                name: gemini-2.5-pro
                options:
                  upstream_url: "{{MOCK}}"
                  gemini:
                    api_endpoint: us-central1-aiplatform.googleapis.com
                    project_id: tollgate-test
                    location_id: us-central1
"#
    )
}

#[tokio::test]
async fn vertex_fetches_one_service_account_token_for_many_requests() {
    let h = Harness::start(&vertex_yaml(&service_account_json("{MOCK}/token"))).await;
    let hi = json!({"messages": [{"role": "user", "content": "hi"}]});
    // Requests arriving together while no token exists wait for one fetch.
    let concurrent: Vec<_> = (0..4)
        .map(|_| {
            let url = h.url("/vx");
            let hi = hi.clone();
            tokio::spawn(async move { post_json(&url, &hi).await.status })
        })
        .collect();
    for c in concurrent {
        assert_eq!(c.await.unwrap(), 200);
    }
    for _ in 0..3 {
        let r = post_openai_sdk(&h.url("/vx"), &hi).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(h.mock.token_fetches(), 1, "one token serves every request");
    let calls: Vec<_> = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path != "/token")
        .collect();
    assert_eq!(calls.len(), 7);
    for c in &calls {
        assert_eq!(
            c.path,
            "/v1/projects/tollgate-test/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent"
        );
        assert_eq!(c.header("authorization"), Some("Bearer ya29.mock-1"));
    }
    let token_req = h
        .mock
        .requests()
        .into_iter()
        .find(|r| r.path == "/token")
        .unwrap();
    assert_eq!(
        token_req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );

    // A token endpoint that cannot be reached: 502 naming the cause, never the key.
    let (_dead, port) = support::dead_port();
    let dead = format!("http://127.0.0.1:{port}/token");
    let h = Harness::start(&vertex_yaml(&service_account_json(&dead))).await;
    let r = post_json(&h.url("/vx"), &hi).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let m = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(m.starts_with("failed to get a GCP access token: "), "{m}");
    assert!(!m.contains("PRIVATE KEY") && !m.contains("MII"), "{m}");
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn gemini_config_errors_name_the_field() {
    let load = |yaml: &str| {
        tollgate::config::load_str(&yaml.replace("{MOCK}", "http://127.0.0.1:9"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let sa = service_account_json("https://oauth2.googleapis.com/token");
    let no_project =
        vertex_yaml(&sa).replace("                    project_id: tollgate-test\n", "");
    let e = load(&no_project);
    assert!(
        e.contains("config.model.options.gemini.project_id") && e.contains("required"),
        "{e}"
    );
    let bad_key = vertex_yaml(&sa.replace("BEGIN PRIVATE KEY", "BEGIN NOTHING"));
    let e = load(&bad_key);
    assert!(
        e.contains("config.auth.gcp_service_account_json") && e.contains("private_key"),
        "{e}"
    );
    assert!(!e.contains("MII"), "key material in the error: {e}");
    let e = load(&vertex_yaml("{not json"));
    assert!(e.contains("config.auth.gcp_service_account_json"), "{e}");
    let override_on = GEMINI.replace(
        "header_value: AIza-test-key}",
        "header_value: AIza-test-key, allow_override: true}",
    );
    let e = load(&override_on);
    assert!(
        e.contains("config.auth.allow_override")
            && e.contains("bedrock and gemini only support auth.allow_override = false"),
        "{e}"
    );
    let vertex_embed = vertex_yaml(&sa).replace("llm/v1/chat", "llm/v1/embeddings");
    assert!(load(&vertex_embed).contains("config.route_type"));
    assert!(load(&GEMINI.replace("llm/v1/embeddings", "llm/v1/files")).contains("route_type"));

    // Without a key in the config, GCP_SERVICE_ACCOUNT from the environment is used.
    let from_env = vertex_yaml("x").replace("                gcp_service_account_json: 'x'\n", "");
    let text = from_env.replace("{MOCK}", "http://127.0.0.1:9");
    let env = |k: &str| (k == "GCP_SERVICE_ACCOUNT").then(|| sa.clone());
    let raw = tollgate::config::parse_document(&text, &env).unwrap();
    assert!(tollgate::config::Snapshot::compile(raw, &env).is_ok());
    let none = |_: &str| None;
    let raw = tollgate::config::parse_document(&text, &none).unwrap();
    let e = tollgate::config::Snapshot::compile(raw, &none)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("config.auth.gcp_service_account_json") && e.contains("GCP_SERVICE_ACCOUNT"),
        "{e}"
    );
}

const BEDROCK: &str = r#"
_format_version: "3.0"
services:
  - name: br
    host: unused.invalid
    routes:
      - name: br
        paths: ["/br"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {aws_access_key_id: AKIDMOCKLLM, aws_secret_access_key: "{SECRET}"}
              logging: {log_statistics: true}
              model:
                provider: bedrock
                name: "anthropic.claude-3-haiku-20240307-v1:0"
                options:
                  bedrock: {aws_region: eu-west-3}
                  upstream_url: "{MOCK}"
                  max_tokens: 256
          - name: file-log
            config: {path: "{DIR}/br.log"}
      - name: br-any
        paths: ["/br-any"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {aws_access_key_id: AKIDMOCKLLM, aws_secret_access_key: "{SECRET}"}
              model:
                provider: bedrock
                options: {bedrock: {aws_region: eu-west-3}, upstream_url: "{MOCK}"}
"#;

const BEDROCK_MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

async fn bedrock(secret: &str) -> Harness {
    Harness::start(&BEDROCK.replace("{SECRET}", secret)).await
}

#[tokio::test]
async fn bedrock_chat_is_signed_and_translated() {
    let h = bedrock(mock_llm::BEDROCK_SECRET_ACCESS_KEY).await;
    let r = post_json(
        &h.url("/br"),
        &json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"}],
            "temperature": 0.2, "stop": "END"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["model"], BEDROCK_MODEL);
    assert!(b["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(
        b["choices"][0]["message"]["content"],
        "Hello from mock-llm."
    );
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    assert_eq!(b["usage"]["completion_tokens"], 3);
    assert_eq!(r.header("content-type"), Some("application/json"));

    // mock-llm verified the signature (it answers 403 otherwise); this is what it saw.
    let seen = &h.mock.requests()[0];
    assert_eq!(
        seen.path,
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    );
    let auth = seen.header("authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDMOCKLLM/")
            && auth.contains(
                "/eu-west-3/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature="
            ),
        "{auth}"
    );
    assert_eq!(seen.header("x-amz-date").map(str::len), Some(16));
    let up = seen.json().unwrap();
    assert_eq!(up["system"], json!([{"text": "Be brief."}]));
    assert_eq!(
        up["inferenceConfig"],
        json!({"maxTokens": 256, "temperature": 0.2, "stopSequences": ["END"]})
    );
    assert_eq!(
        up["messages"],
        json!([{"role": "user", "content": [{"text": "Say hello"}]}])
    );

    let log = h.wait_log("br.log", 1).await;
    let ai = &log[0]["ai"]["proxy"];
    assert_eq!(ai["usage"]["completion_tokens"], 3, "{}", log[0]);
    assert_eq!(ai["meta"]["provider_name"], "bedrock", "{}", log[0]);
    assert_eq!(ai["meta"]["request_model"], BEDROCK_MODEL, "{}", log[0]);
    assert_eq!(ai["meta"]["response_model"], BEDROCK_MODEL, "{}", log[0]);
    let line = log[0].to_string();
    assert!(
        !line.contains(mock_llm::BEDROCK_SECRET_ACCESS_KEY),
        "secret in log"
    );
}

fn chunks_of(text: &str) -> Vec<Value> {
    sse_data(text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn bedrock_event_stream_becomes_openai_sse() {
    let h = bedrock(mock_llm::BEDROCK_SECRET_ACCESS_KEY).await;
    // Frames re-cut at odd sizes: event-stream messages arrive split and glued together.
    for split in ["1", "7", "50", "4096"] {
        let r = send(
            "POST",
            &h.url("/br"),
            &[
                ("content-type", "application/json"),
                ("x-mock", &format!("split={split}")),
            ],
            json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let text = r.text();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let chunks = chunks_of(&text);
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"
            && c["model"] == BEDROCK_MODEL
            && c["id"] == chunks[0]["id"]));
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Hello from mock-llm.", "split={split}");
        let finish: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [&json!("stop")]);
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    }
    assert!(h.mock.requests()[0].path.ends_with("%3A0/converse-stream"));
    let log = h.wait_log("br.log", 4).await;
    assert_eq!(
        log[0]["ai"]["proxy"]["usage"]["completion_tokens"], 3,
        "{}",
        log[0]
    );
    assert!(log[0]["ai"]["proxy"].get("error").is_none(), "{}", log[0]);

    let r = post_json(
        &h.url("/br"),
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
async fn bedrock_tool_calls_round_trip() {
    let h = bedrock(mock_llm::BEDROCK_SECRET_ACCESS_KEY).await;
    let ask = json!({"messages": [{"role": "user", "content": "weather? [mock:tool]"}],
        "tools": weather_tools(), "tool_choice": "required"});
    let r = post_json(&h.url("/br"), &ask).await;
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
    assert_eq!(up["toolConfig"]["toolChoice"], json!({"any": {}}));
    assert_eq!(
        up["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "get_weather"
    );
    assert_eq!(
        up["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["type"],
        "object"
    );

    // Two results of one assistant turn go back in one user turn; mock-llm refuses the
    // request (as Bedrock does) if roles do not alternate or toolConfig is missing.
    let id = call["id"].as_str().unwrap().to_string();
    let mut second = call.clone();
    second["id"] = json!("tooluse_second");
    let follow = json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call.clone(), second]},
        {"role": "tool", "tool_call_id": id, "content": "{\"sky\": \"sunny\"}"},
        {"role": "tool", "tool_call_id": "tooluse_second", "content": "rain"}],
        "tools": weather_tools()});
    let r = post_json(&h.url("/br"), &follow).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = h.mock.requests()[1].json().unwrap();
    assert_eq!(
        up["messages"][1]["content"][0],
        json!({"toolUse": {"toolUseId": id, "name": "get_weather", "input": {"city": "mock"}}})
    );
    assert_eq!(
        up["messages"][2],
        json!({"role": "user", "content": [
            {"toolResult": {"toolUseId": id, "content": [{"json": {"sky": "sunny"}}], "status": "success"}},
            {"toolResult": {"toolUseId": "tooluse_second", "content": [{"text": "rain"}], "status": "success"}}]})
    );

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let r = send(
        "POST",
        &h.url("/br"),
        &[("content-type", "application/json"), ("x-mock", "split=5")],
        streamed.to_string(),
    )
    .await;
    let chunks = chunks_of(&r.text());
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(deltas[0][0]["function"]["name"], "get_weather");
    assert!(deltas[0][0]["id"].as_str().unwrap().starts_with("tooluse_"));
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
async fn bedrock_errors_keep_their_status_in_openai_shape() {
    let h = bedrock(mock_llm::BEDROCK_SECRET_ACCESS_KEY).await;
    let r = post_json(
        &h.url("/br"),
        &json!({"messages": [{"role": "user", "content": "x [mock:status=429]"}]}),
    )
    .await;
    assert_eq!(r.status, 429);
    let b = r.json();
    assert_eq!(b["error"]["message"], "mock-llm injected status 429");
    assert_eq!(b["error"]["type"], "rate_limit_error");
    assert_eq!(b["error"]["code"], "ThrottlingException");

    // What Converse cannot express is refused before it leaves, naming the field.
    let user = |c: Value| json!([{"role": "user", "content": c}]);
    for (path, body, field) in [
        ("/br", json!({"messages": user(json!("x")), "n": 2}), "'n'"),
        (
            "/br",
            json!({"messages": user(json!("x")), "response_format": {"type": "json_object"}}),
            "'response_format'",
        ),
        (
            "/br",
            json!({"messages": user(json!([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]))}),
            "'messages[0].content[0].image_url.url'",
        ),
        (
            "/br-any",
            json!({"model": "amazon.titan-text-express-v1",
                   "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}]}),
            "'messages[0]'",
        ),
    ] {
        let r = post_json(&h.url(path), &body).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let m = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(m.contains(field) && m.contains("bedrock"), "{m}");
    }
    assert_eq!(h.mock.requests().len(), 1, "refused requests never left");

    // The client names the model on a route without one.
    let r = post_json(
        &h.url("/br-any"),
        &json!({"model": "amazon.nova-lite-v1:0", "messages": user(json!("x"))}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "amazon.nova-lite-v1:0");
    assert_eq!(
        h.mock.requests()[1].path,
        "/model/amazon.nova-lite-v1%3A0/converse"
    );
}

#[tokio::test]
async fn bedrock_wrong_secret_is_refused_by_the_signature_check() {
    let h = bedrock("not-the-secret").await;
    let r = post_json(
        &h.url("/br"),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["type"], "authentication_error");
    assert_eq!(e["code"], "InvalidSignatureException");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("The request signature we calculated does not match"));
    assert!(!r.text().contains("not-the-secret"));
}

#[tokio::test]
async fn bedrock_cut_stream_ends_with_an_error_event() {
    let h = bedrock(mock_llm::BEDROCK_SECRET_ACCESS_KEY).await;
    for faults in ["disconnect_after=3", "split=11, disconnect_after=9"] {
        let r = send(
            "POST",
            &h.url("/br"),
            &[("content-type", "application/json"), ("x-mock", faults)],
            json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string(),
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(r.body_error.is_none(), "the client's body ends cleanly");
        let data = sse_data(&r.text());
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "upstream_stream_cut", "{data:?}");
        assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    }
    let log = h.wait_log("br.log", 2).await;
    assert!(log[0]["ai"]["proxy"]["error"].is_string(), "{}", log[0]);
}

/// `llm_format: bedrock`: clients that speak Converse themselves (AWS SDKs pointed at the
/// route) call `/model/{id}/converse[-stream]`; the body goes as sent, the gateway signs
/// it with its own credentials, and usage is still logged.
#[tokio::test]
async fn bedrock_native_clients_pass_through_re_signed() {
    let yaml = BEDROCK.replace("{SECRET}", mock_llm::BEDROCK_SECRET_ACCESS_KEY).replace(
        "            config:\n              route_type: llm/v1/chat",
        "            config:\n              llm_format: bedrock\n              route_type: llm/v1/chat",
    );
    assert!(yaml.contains("llm_format: bedrock"));
    let h = Harness::start(&yaml).await;
    let native = json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "inferenceConfig": {"maxTokens": 64}});
    let headers = [
        ("content-type", "application/json"),
        // A client's own (here bogus) signature is replaced by the gateway's.
        ("authorization", "AWS4-HMAC-SHA256 Credential=CLIENT/20200101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00"),
    ];
    let path = "/br/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse";
    let r = send("POST", &h.url(path), &headers, native.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(
        b["output"]["message"]["content"][0]["text"], "Hello from mock-llm.",
        "{b}"
    );
    assert_eq!(b["stopReason"], "end_turn");
    let seen = &h.mock.requests()[0];
    assert_eq!(
        seen.path,
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    );
    assert_eq!(
        seen.json().unwrap(),
        native,
        "the body goes as the client sent it"
    );
    assert!(seen
        .header("authorization")
        .unwrap()
        .contains("Credential=AKIDMOCKLLM/"));

    let r = send(
        "POST",
        &h.url(&format!("{path}-stream")),
        &headers,
        native.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.amazon.eventstream")
    );
    let mut messages = Vec::new();
    let mut d = tollgate::llm::eventstream::Decoder::default();
    d.push(&r.body, &mut messages).unwrap();
    let kinds: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.header_str(":event-type"))
        .collect();
    assert_eq!(kinds.first(), Some(&"messageStart"));
    assert_eq!(kinds.last(), Some(&"metadata"));
    assert!(h.mock.requests()[1].path.ends_with("%3A0/converse-stream"));

    let log = h.wait_log("br.log", 2).await;
    for line in &log {
        assert_eq!(
            line["ai"]["proxy"]["usage"]["completion_tokens"], 3,
            "{line}"
        );
        assert_eq!(
            line["ai"]["proxy"]["meta"]["response_model"], BEDROCK_MODEL,
            "{line}"
        );
        assert!(line["ai"]["proxy"].get("error").is_none(), "{line}");
    }

    // Another model than the configured one is refused, as for OpenAI clients; so is a
    // path without a model.
    let r = send(
        "POST",
        &h.url("/br/model/amazon.nova-lite-v1:0/converse"),
        &headers,
        native.to_string(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = send(
        "POST",
        &h.url("/br/v1/chat/completions"),
        &headers,
        native.to_string(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("/converse"), "{}", r.text());
    let r = send(
        "POST",
        &h.url("/br-any/model/amazon.nova-lite-v1:0/converse"),
        &headers,
        native.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.mock.requests()[2].path,
        "/model/amazon.nova-lite-v1%3A0/converse"
    );

    let wrong = yaml.replace("provider: bedrock", "provider: openai");
    let e = load_with_env(&wrong, &[]).unwrap_err();
    assert!(e.contains("config.llm_format"), "{e}");
}

fn load_with_env(yaml: &str, vars: &[(&str, &str)]) -> Result<(), String> {
    let env = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let yaml = yaml.replace("{MOCK}", "http://127.0.0.1:9");
    let raw = tollgate::config::parse_document(&yaml, &env).map_err(|e| e.to_string())?;
    tollgate::config::snapshot::Snapshot::compile(raw, &env)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn bedrock_config_errors_name_the_field() {
    let base = BEDROCK.replace("{SECRET}", "s");
    assert_eq!(load_with_env(&base, &[]), Ok(()));
    let no_region = base
        .replace("bedrock: {aws_region: eu-west-3}", "max_tokens: 1")
        .replace("options: {bedrock: {aws_region: eu-west-3}, ", "options: {");
    let e = load_with_env(&no_region, &[]).unwrap_err();
    assert!(
        e.contains("config.model.options.bedrock.aws_region")
            && e.contains("AWS region not specified anywhere"),
        "{e}"
    );
    assert_eq!(
        load_with_env(&no_region, &[("AWS_REGION", "us-east-1")]),
        Ok(())
    );
    assert_eq!(
        load_with_env(&no_region, &[("AWS_DEFAULT_REGION", "us-west-2")]),
        Ok(())
    );

    let no_creds = base.replace(
        "auth: {aws_access_key_id: AKIDMOCKLLM, aws_secret_access_key: \"s\"}",
        "auth: {}",
    );
    let e = load_with_env(&no_creds, &[]).unwrap_err();
    assert!(e.contains("config.auth.aws_access_key_id"), "{e}");
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKID"),
        ("AWS_SECRET_ACCESS_KEY", "k"),
    ];
    assert_eq!(load_with_env(&no_creds, &env), Ok(()));
    let half = base.replace(", aws_secret_access_key: \"s\"", "");
    let e = load_with_env(&half, &[]).unwrap_err();
    assert!(e.contains("config.auth.aws_secret_access_key"), "{e}");

    let overriding = base.replace(
        "auth: {aws_access_key_id",
        "auth: {allow_override: true, aws_access_key_id",
    );
    let e = load_with_env(&overriding, &[]).unwrap_err();
    assert!(
        e.contains("config.auth.allow_override")
            && e.contains("bedrock and gemini only support auth.allow_override = false"),
        "{e}"
    );
    let assume = base.replace(
        "bedrock: {aws_region: eu-west-3}",
        "bedrock: {aws_region: eu-west-3, aws_assume_role_arn: \"arn:aws:iam::1:role/r\"}",
    );
    let e = load_with_env(&assume, &[]).unwrap_err();
    assert!(
        e.contains("config.model.options.bedrock.aws_assume_role_arn"),
        "{e}"
    );
    let unknown = base.replace("bedrock: {aws_region: eu-west-3}", "bedrock: {region: x}");
    assert!(load_with_env(&unknown, &[]).unwrap_err().contains("region"));
    let files = base.replacen("llm/v1/chat", "llm/v1/files", 1);
    let e = load_with_env(&files, &[]).unwrap_err();
    assert!(e.contains("route_type"), "{e}");

    // Without upstream_url the region names the host.
    let direct = base
        .replace("                  upstream_url: \"{MOCK}\"\n", "")
        .replace("{MOCK}", "http://127.0.0.1:9");
    let snap = tollgate::config::load_str(&direct).unwrap();
    let tollgate::plugins::Plugin::AiProxy(ai) = &snap.plugins[0].plugin else {
        panic!("ai-proxy")
    };
    assert_eq!(
        &*ai.targets[0].upstream.host,
        "bedrock-runtime.eu-west-3.amazonaws.com"
    );
    assert_eq!(ai.targets[0].upstream.port, 443);
}

#[tokio::test]
async fn bedrock_embeddings_via_invoke_model() {
    let yaml = BEDROCK.replace("{SECRET}", mock_llm::BEDROCK_SECRET_ACCESS_KEY);
    let yaml = yaml
        .replacen(
            "route_type: llm/v1/chat",
            "route_type: llm/v1/embeddings",
            1,
        )
        .replace(
            "name: \"anthropic.claude-3-haiku-20240307-v1:0\"",
            "name: amazon.titan-embed-text-v2:0",
        )
        .replace(
            "bedrock: {aws_region: eu-west-3}\n",
            "bedrock: {aws_region: eu-west-3, embeddings_normalize: true}\n",
        );
    let h = Harness::start(&yaml).await;
    let r = post_json(
        &h.url("/br"),
        &json!({"input": "hello world", "dimensions": 256}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["object"], "list");
    assert_eq!(b["model"], "amazon.titan-embed-text-v2:0");
    assert_eq!(b["data"][0]["embedding"].as_array().unwrap().len(), 256);
    assert!(b["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    assert_eq!(
        seen.json().unwrap(),
        json!({"inputText": "hello world", "dimensions": 256, "normalize": true})
    );
    assert!(seen
        .header("authorization")
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256 "));

    // Titan embeds one text per request: several are refused before anything is sent.
    let r = post_json(&h.url("/br"), &json!({"input": ["a", "b"]})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("one text per request"), "{}", r.text());
    assert_eq!(h.mock.requests().len(), 1);

    // Cohere Embed on Bedrock takes several.
    let cohere = yaml.replace("amazon.titan-embed-text-v2:0", "cohere.embed-english-v3");
    let h = Harness::start(&cohere).await;
    let r = post_json(&h.url("/br"), &json!({"input": ["first text", "second"]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    assert_eq!(b["data"][1]["index"], 1);
    assert_eq!(
        b["usage"]["prompt_tokens"], 5,
        "estimated: ceil(10/4) + ceil(6/4)"
    );
    let up = h.mock.requests()[0].json().unwrap();
    assert_eq!(up["texts"], json!(["first text", "second"]));
    assert_eq!(up["input_type"], "search_document");
}

#[tokio::test]
async fn dashscope_and_databricks_are_openai_compatible() {
    let yaml = routes(
        "{header_name: Authorization, header_value: \"Bearer k\"}",
        &[
            (
                "ds",
                "llm/v1/chat",
                "{provider: dashscope, name: qwen-plus, options: {upstream_url: \"{MOCK}\"}}",
            ),
            (
                "db",
                "llm/v1/chat",
                "{provider: databricks, name: my-endpoint, options: {upstream_url: \"{MOCK}\"}}",
            ),
        ],
    );
    let h = Harness::start(&yaml).await;
    let ask = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true,
        "stream_options": {"include_usage": true}});
    let r = post_json(&h.url("/ds"), &ask).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/compatible-mode/v1/chat/completions");
    assert_eq!(
        seen.json().unwrap()["stream_options"]["include_usage"],
        true
    );
    let r = post_json(&h.url("/db"), &ask).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &h.mock.requests()[1];
    assert_eq!(seen.path, "/serving-endpoints/chat/completions");
    let up = seen.json().unwrap();
    assert_eq!(up["model"], "my-endpoint");
    assert!(
        up.get("stream_options").is_none(),
        "not forwarded to databricks"
    );

    // Without upstream_url: the region or workspace names the host.
    let direct = |m: &str| {
        let y = routes("{}", &[("x", "llm/v1/chat", m)]);
        let snap = tollgate::config::load_str(&y.replace("{DIR}", "/tmp")).unwrap();
        let tollgate::plugins::Plugin::AiProxy(ai) = &snap.plugins[0].plugin else {
            panic!("ai-proxy")
        };
        ai.targets[0].upstream.host.to_string()
    };
    assert_eq!(
        direct("{provider: dashscope}"),
        "dashscope-intl.aliyuncs.com"
    );
    assert_eq!(
        direct("{provider: dashscope, options: {dashscope: {international: false}}}"),
        "dashscope.aliyuncs.com"
    );
    assert_eq!(
        direct("{provider: databricks, options: {databricks: {workspace_instance_id: dbc-1-2}}}"),
        "dbc-1-2.cloud.databricks.com"
    );
}

mod golden {
    use std::path::PathBuf;

    use serde_json::Value;
    use tollgate::config::plugins::{ModelOptions, RouteType};
    use tollgate::llm::body::BodyView;
    use tollgate::llm::stream::Mapper;
    use tollgate::llm::{self, Wire};

    const CREATED: u64 = 1_700_000_000;

    fn dir(provider: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/llm")
            .join(provider)
    }

    fn check(path: PathBuf, actual: &str) {
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(actual, expected, "{} differs", path.display());
    }

    fn pretty(bytes: &[u8]) -> String {
        let v: Value = serde_json::from_slice(bytes).unwrap();
        serde_json::to_string_pretty(&v).unwrap() + "\n"
    }

    /// Runs one provider's transcripts in `tests/fixtures/llm/<dir>/`: the OpenAI request
    /// `chat_tools.request.json` encodes to `chat_tools.upstream.json`, the native answer
    /// `answer.response.json` decodes to `answer.openai.json`, and the native stream (bytes
    /// given by the caller, since some dialects are binary) maps to `stream.openai.sse`,
    /// the same whether fed whole or in 7-byte pieces.
    fn transcripts(dir_name: &str, wire: Wire, model: &str, stream: &[u8]) {
        let d = dir(dir_name);
        let req = std::fs::read(d.join("chat_tools.request.json")).unwrap();
        let view = BodyView::parse(&req).unwrap();
        let options = ModelOptions::default();
        let e = llm::Encode {
            model: Some(model),
            options: &options,
            stream: true,
            body_param: None,
        };
        let up = llm::encode(wire, RouteType::Chat, &view, &e).unwrap();
        check(d.join("chat_tools.upstream.json"), &pretty(&up));

        let answer = std::fs::read(d.join("answer.response.json")).unwrap();
        let asked = llm::Asked {
            model: Some(model),
            request: &req,
            request_id: "0123456789abcdef0123456789abcdef",
        };
        let decoded = llm::decode(wire, RouteType::Chat, &answer, CREATED, &asked).unwrap();
        check(d.join("answer.openai.json"), &pretty(&decoded.body));

        let mut m = Mapper::new(wire, CREATED, &asked, false).unwrap();
        let mut whole = m.on_chunk(stream).to_vec();
        let before = whole.len();
        whole.extend_from_slice(&m.finish());
        let tail = String::from_utf8_lossy(&whole[before..]).into_owned();
        assert!(
            !tail.contains("upstream_stream_cut"),
            "the stream's terminal event ends it"
        );
        let mut pieces = Vec::new();
        let mut m = Mapper::new(wire, CREATED, &asked, false).unwrap();
        for c in stream.chunks(7) {
            pieces.extend_from_slice(&m.on_chunk(c));
        }
        pieces.extend_from_slice(&m.finish());
        assert_eq!(whole, pieces, "framing does not depend on chunk boundaries");
        check(
            d.join("stream.openai.sse"),
            &String::from_utf8(whole).unwrap(),
        );
    }

    #[test]
    fn cohere_transcripts() {
        let stream = std::fs::read(dir("cohere").join("stream.response.sse")).unwrap();
        transcripts("cohere", Wire::Cohere, "command-a-03-2025", &stream);
    }

    #[test]
    fn ollama_transcripts() {
        let stream = std::fs::read(dir("ollama").join("stream.response.ndjson")).unwrap();
        transcripts("ollama", Wire::Ollama, "llama3.2", &stream);
    }

    #[test]
    fn llama2_raw_transcripts() {
        let stream = std::fs::read(dir("llama2-raw").join("stream.response.sse")).unwrap();
        transcripts("llama2-raw", Wire::Llama2Raw, "llama-2-13b-chat", &stream);
    }

    #[test]
    fn anthropic_transcripts() {
        let stream = std::fs::read(dir("anthropic").join("stream.response.sse")).unwrap();
        transcripts("anthropic", Wire::Anthropic, "claude-sonnet-4-5", &stream);
    }

    #[test]
    fn gemini_transcripts() {
        let stream = std::fs::read(dir("gemini").join("stream.response.sse")).unwrap();
        transcripts("gemini", Wire::Gemini, "gemini-2.5-flash", &stream);
    }

    /// The Bedrock stream fixture is a readable list of ConverseStream events; the binary
    /// event stream is made from it with mock-llm's encoder.
    #[test]
    fn bedrock_transcripts() {
        let events: Vec<Value> = serde_json::from_slice(
            &std::fs::read(dir("bedrock").join("stream.events.json")).unwrap(),
        )
        .unwrap();
        let mut stream = Vec::new();
        for e in &events {
            let payload = e["payload"].to_string();
            stream.extend(mock_llm::eventstream::event(
                e["event"].as_str().unwrap(),
                payload.as_bytes(),
            ));
        }
        transcripts(
            "bedrock",
            Wire::Bedrock,
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            &stream,
        );
    }

    /// Every dialect's decoders and stream mappers (alone and under both bridges) take cut,
    /// corrupted and random input without panicking, and a cut stream never ends as if it
    /// were whole.
    #[test]
    fn broken_input_never_panics() {
        let asked = llm::Asked {
            model: Some("m"),
            request: b"{}",
            request_id: "rid",
        };
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect()
        };
        let bedrock_stream = {
            let events: Vec<Value> = serde_json::from_slice(
                &std::fs::read(dir("bedrock").join("stream.events.json")).unwrap(),
            )
            .unwrap();
            let mut b = Vec::new();
            for e in &events {
                b.extend(mock_llm::eventstream::event(
                    e["event"].as_str().unwrap(),
                    e["payload"].to_string().as_bytes(),
                ));
            }
            b
        };
        let cases: [(&str, Wire, Vec<u8>); 6] = [
            (
                "anthropic",
                Wire::Anthropic,
                std::fs::read(dir("anthropic").join("stream.response.sse")).unwrap(),
            ),
            (
                "gemini",
                Wire::Gemini,
                std::fs::read(dir("gemini").join("stream.response.sse")).unwrap(),
            ),
            (
                "cohere",
                Wire::Cohere,
                std::fs::read(dir("cohere").join("stream.response.sse")).unwrap(),
            ),
            (
                "ollama",
                Wire::Ollama,
                std::fs::read(dir("ollama").join("stream.response.ndjson")).unwrap(),
            ),
            (
                "llama2-raw",
                Wire::Llama2Raw,
                std::fs::read(dir("llama2-raw").join("stream.response.sse")).unwrap(),
            ),
            ("bedrock", Wire::Bedrock, bedrock_stream),
        ];
        for (name, wire, stream) in cases {
            let answer = std::fs::read(dir(name).join("answer.response.json")).unwrap();
            for cut in (0..answer.len()).step_by(3) {
                let _ = llm::decode(wire, RouteType::Chat, &answer[..cut], CREATED, &asked);
                let _ = llm::decode_error(wire, 500, &http::HeaderMap::new(), &answer[..cut]);
                let _ = llm::read_usage(wire, &answer[..cut]);
            }
            let _ = llm::decode(wire, RouteType::Chat, &noise(512), CREATED, &asked);
            // Cut streams: every prefix, through the plain, Responses and completions mappers.
            for cut in (0..stream.len()).step_by(5) {
                let mut m = Mapper::new(wire, CREATED, &asked, false).unwrap();
                let mut out = m.on_chunk(&stream[..cut]).to_vec();
                out.extend_from_slice(&m.finish());
                let meta = llm::responses::to_chat(
                    &BodyView::parse(br#"{"input":"hi"}"#).unwrap(),
                    None,
                    true,
                    CREATED,
                )
                .unwrap()
                .meta;
                let mut r = Mapper::responses(
                    wire,
                    CREATED,
                    &asked,
                    llm::responses::StreamMapper::new(meta),
                    None,
                );
                let mut rout = r.on_chunk(&stream[..cut]).to_vec();
                rout.extend_from_slice(&r.finish());
                let rtext = String::from_utf8_lossy(&rout);
                // The fixtures' terminal events are all in their last third.
                if cut < stream.len() * 2 / 3 {
                    assert!(
                        !rtext.contains("response.completed"),
                        "{name}: a stream cut at {cut}/{} completed",
                        stream.len()
                    );
                }
                let mut c = Mapper::completions(wire, CREATED, &asked);
                let _ = c.on_chunk(&stream[..cut]);
                let _ = c.finish();
            }
            let mut m = Mapper::new(wire, CREATED, &asked, false).unwrap();
            for _ in 0..20 {
                let _ = m.on_chunk(&noise(97));
            }
            let _ = m.finish();
        }
    }
}

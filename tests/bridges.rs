//! APIs bridged onto providers that only have chat. The Responses API: requests become chat
//! (or the provider's own dialect), answers and streams become Response objects and events,
//! and `previous_response_id` continues a conversation the gateway kept. Legacy completions:
//! the prompt becomes one chat message, the answer a `text_completion`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use support::{post_json, Harness};

const CONFIG: &str = r#"
_format_version: "3.0"
services:
  - name: llm
    host: unused.invalid
    routes:
      - name: claude
        paths: ["/claude"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/responses
              auth: {header_name: x-api-key, header_value: sk-ant-test}
              logging: {log_statistics: true}
              model:
                provider: anthropic
                name: claude-sonnet-4-5
                options:
                  anthropic_version: "2023-06-01"
                  upstream_url: "{MOCK}"
          - name: file-log
            config: {path: "{DIR}/claude.log"}
      - name: chat-only
        paths: ["/chat-only"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/responses
              auth: {header_name: Authorization, header_value: Bearer sk-ds}
              logging: {log_statistics: true}
              model:
                provider: deepseek
                options:
                  upstream_url: "{MOCK}"
          - name: file-log
            config: {path: "{DIR}/chat.log"}
      - name: xai
        paths: ["/xai"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/responses
              auth: {header_name: Authorization, header_value: Bearer sk-xai}
              model:
                provider: xai
                options:
                  upstream_url: "{MOCK}"
"#;

/// The `data:` JSON of each event, in order.
fn events(body: &str) -> Vec<Value> {
    support::sse_data(body)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect()
}

fn types(ev: &[Value]) -> Vec<&str> {
    ev.iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect()
}

fn shell_tool() -> Value {
    json!([{"type": "function", "name": "shell", "description": "Runs a command",
        "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}}}])
}

#[tokio::test]
async fn buffered_response_from_anthropic() {
    let h = Harness::start(CONFIG).await;
    let r = post_json(
        &h.url("/claude"),
        &json!({"model": "claude-sonnet-4-5", "instructions": "Be brief.", "input": "Say hello",
            "max_output_tokens": 100, "temperature": 0.3}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["object"], "response");
    assert!(b["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(b["status"], "completed");
    assert_eq!(b["model"], "claude-sonnet-4-5");
    assert_eq!(b["instructions"], "Be brief.");
    assert_eq!(b["output"][0]["type"], "message");
    assert_eq!(b["output"][0]["role"], "assistant");
    assert_eq!(b["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(b["output"][0]["content"][0]["text"], "Hello from mock-llm.");
    let u = &b["usage"];
    assert_eq!(u["output_tokens"], 3);
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["input_tokens"].as_u64().unwrap() + 3)
    );
    assert!(u.get("prompt_tokens").is_none(), "Responses names only");

    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    let up = seen.json().unwrap();
    assert_eq!(up["system"], "Be brief.");
    assert_eq!(up["max_tokens"], 100);
    assert_eq!(up["temperature"], 0.3);
    assert_eq!(
        up["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}])
    );
    let log = h.wait_log("claude.log", 1).await;
    assert_eq!(log[0]["ai"]["proxy"]["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn streamed_tool_call_from_anthropic() {
    let h = Harness::start(CONFIG).await;
    let r = post_json(
        &h.url("/claude"),
        &json!({"model": "claude-sonnet-4-5", "stream": true, "tools": shell_tool(), "tool_choice": "auto",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files [mock:tool]"}]}
            ]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = events(&r.text());
    let t = types(&ev);
    assert_eq!(t[0], "response.created");
    assert_eq!(t[1], "response.in_progress");
    assert_eq!(t.last(), Some(&"response.completed"), "{t:?}");
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64);
    }
    let added: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"] == "response.output_item.added")
        .map(|e| &e["item"])
        .collect();
    let call = added
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap_or_else(|| panic!("no function_call item: {t:?}"));
    assert_eq!(call["name"], "shell");
    let args: String = ev
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    let done = ev
        .iter()
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done["arguments"].as_str().unwrap(), args);
    serde_json::from_str::<Value>(&args).expect("arguments are JSON");
    let completed = &ev.last().unwrap()["response"];
    let out = completed["output"].as_array().unwrap();
    let fc = out.iter().find(|i| i["type"] == "function_call").unwrap();
    assert_eq!(fc["status"], "completed");
    assert_eq!(fc["call_id"], call["call_id"]);
    assert_eq!(fc["arguments"].as_str().unwrap(), args);
    assert!(completed["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // Upstream saw the developer message as system, and the tool as an Anthropic tool.
    let up = h.mock.requests()[0].json().unwrap();
    assert_eq!(up["system"], "You are Codex.");
    assert_eq!(up["tools"][0]["name"], "shell");
    assert_eq!(up["stream"], true);

    // The function result comes back as the next request's input.
    let r2 = post_json(
        &h.url("/claude"),
        &json!({"model": "claude-sonnet-4-5", "stream": true, "tools": shell_tool(),
            "previous_response_id": completed["id"],
            "input": [{"type": "function_call_output", "call_id": fc["call_id"], "output": "a.txt\nb.txt"}]}),
    )
    .await;
    assert_eq!(r2.status, 200, "{}", r2.text());
    let ev2 = events(&r2.text());
    assert_eq!(types(&ev2).last(), Some(&"response.completed"));
    let up2 = h.mock.requests()[1].json().unwrap();
    let msgs = up2["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"][0]["type"], "tool_use");
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    assert_eq!(msgs[2]["content"][0]["tool_use_id"], fc["call_id"]);
    let log = h.wait_log("claude.log", 2).await;
    assert!(
        log[1]["ai"]["proxy"]["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn chat_only_provider_streams_and_continues_conversations() {
    let h = Harness::start(CONFIG).await;
    let r = post_json(
        &h.url("/chat-only"),
        &json!({"model": "deepseek-chat", "stream": true, "instructions": "Be brief.",
            "input": "Say hello [mock:chunks=4]"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = events(&r.text());
    let t = types(&ev);
    assert_eq!(
        t.iter()
            .filter(|t| **t == "response.output_text.delta")
            .count(),
        4,
        "{t:?}"
    );
    let text: String = ev
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    let item_done = ev
        .iter()
        .find(|e| e["type"] == "response.output_item.done")
        .unwrap();
    assert_eq!(item_done["item"]["content"][0]["text"], text);
    let completed = &ev.last().unwrap()["response"];
    assert_eq!(ev.last().unwrap()["type"], "response.completed");
    assert_eq!(completed["model"], "deepseek-chat");
    assert!(completed["usage"]["input_tokens"].as_u64().unwrap() > 0);

    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    let up = seen.json().unwrap();
    assert_eq!(up["stream_options"]["include_usage"], true);
    assert_eq!(
        up["messages"],
        json!([{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello [mock:chunks=4]"}])
    );

    // Continue: the upstream gets the whole conversation; instructions are not carried over.
    let r2 = post_json(
        &h.url("/chat-only"),
        &json!({"model": "deepseek-chat", "previous_response_id": completed["id"],
            "input": [{"role": "user", "content": "And again"}]}),
    )
    .await;
    assert_eq!(r2.status, 200, "{}", r2.text());
    assert_eq!(r2.json()["previous_response_id"], completed["id"]);
    let up2 = h.mock.requests()[1].json().unwrap();
    assert_eq!(
        up2["messages"],
        json!([{"role": "user", "content": "Say hello [mock:chunks=4]"},
            {"role": "assistant", "content": text},
            {"role": "user", "content": "And again"}])
    );
}

#[tokio::test]
async fn unknown_or_unstored_previous_response_is_a_400() {
    let h = Harness::start(CONFIG).await;
    let r = post_json(
        &h.url("/chat-only"),
        &json!({"model": "m", "previous_response_id": "resp_nope", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], "previous_response_not_found");
    assert_eq!(
        e["message"],
        "Previous response with id 'resp_nope' not found."
    );
    assert!(h.mock.requests().is_empty(), "nothing sent upstream");

    let r = post_json(
        &h.url("/chat-only"),
        &json!({"model": "m", "store": false, "input": "hi"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = post_json(
        &h.url("/chat-only"),
        &json!({"model": "m", "previous_response_id": id, "input": "more"}),
    )
    .await;
    assert_eq!(r.status, 400, "store:false keeps nothing: {}", r.text());
}

#[tokio::test]
async fn provider_errors_and_untranslatable_input() {
    let h = Harness::start(CONFIG).await;
    let r = post_json(&h.url("/claude"), &json!({"input": "hi [mock:status=429]"})).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");

    let r = post_json(
        &h.url("/chat-only"),
        &json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'input[0].type' 'item_reference'"),
        "{}",
        r.text()
    );

    // A stream cut before its end fails the response instead of completing it.
    let r = post_json(
        &h.url("/chat-only"),
        &json!({"model": "m", "stream": true, "input": "hi [mock:chunks=6] [mock:disconnect_after=3]"}),
    )
    .await;
    assert_eq!(r.status, 200);
    let ev = events(&r.text());
    assert_eq!(
        ev.last().unwrap()["type"],
        "response.failed",
        "{:?}",
        types(&ev)
    );
    assert!(!types(&ev).contains(&"response.completed"));
}

#[tokio::test]
async fn chat_only_tool_calls_function_and_custom() {
    let h = Harness::start(CONFIG).await;
    let tools = json!([
        {"type": "custom", "name": "apply_patch", "description": "Edit files",
            "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
        {"type": "function", "name": "shell", "parameters": {"type": "object", "required": ["command"],
            "properties": {"command": {"type": "array", "items": {"type": "string"}}}}},
        {"type": "web_search"}
    ]);
    // Buffered: a function call item with the model's arguments.
    let r = post_json(
        &h.url("/chat-only"),
        &json!({"model": "m", "tools": tools, "input": "run it [mock:tool=shell]"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let out = b["output"].as_array().unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["type"], "function_call");
    assert_eq!(out[0]["name"], "shell");
    assert_eq!(
        serde_json::from_str::<Value>(out[0]["arguments"].as_str().unwrap()).unwrap(),
        json!({"command": ["echo", "mock-tool-ran"]})
    );
    let up = h.mock.requests()[0].json().unwrap();
    let names: Vec<&str> = up["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["apply_patch", "shell"], "hosted tools are not sent");
    assert!(up["tools"][0]["function"]["description"]
        .as_str()
        .unwrap()
        .contains("start: /.+/"));

    // Streamed: a custom tool's call comes back as a custom_tool_call with the raw input.
    let r = post_json(
        &h.url("/chat-only"),
        &json!({"model": "m", "stream": true, "tools": tools, "input": "patch it [mock:tool=apply_patch]"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = events(&r.text());
    let done: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"] == "response.output_item.done")
        .map(|e| &e["item"])
        .collect();
    assert_eq!(done.len(), 1, "{:?}", types(&ev));
    assert_eq!(done[0]["type"], "custom_tool_call");
    assert_eq!(done[0]["name"], "apply_patch");
    assert_eq!(done[0]["input"], "mock");
    assert!(!types(&ev).contains(&"response.function_call_arguments.delta"));
    let completed = &ev.last().unwrap()["response"];
    assert_eq!(completed["output"][0]["type"], "custom_tool_call");

    // Its output goes back as a tool message carrying the call id.
    let r = post_json(
        &h.url("/chat-only"),
        &json!({"model": "m", "tools": tools, "input": [
            {"type": "message", "role": "user", "content": "patch it"},
            {"type": "custom_tool_call", "call_id": done[0]["call_id"], "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": done[0]["call_id"], "output": "Done!"}
        ]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = h.mock.requests()[2].json().unwrap();
    let m = up["messages"].as_array().unwrap();
    assert_eq!(
        m[1]["tool_calls"][0]["function"]["arguments"],
        json!({"input": "*** Begin Patch"}).to_string()
    );
    assert_eq!(
        m[2],
        json!({"role": "tool", "tool_call_id": done[0]["call_id"], "content": "Done!"})
    );
}

#[tokio::test]
async fn responses_native_providers_are_not_bridged() {
    let h = Harness::start(CONFIG).await;
    let body = json!({"model": "grok-4", "input": "hi", "store": false});
    let r = post_json(&h.url("/xai"), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "response");
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(seen.json().unwrap(), body, "the client's body as sent");
}

/// One bridged Responses route per translated dialect.
fn dialects_yaml() -> String {
    let routes = [
        (
            "gem",
            "{header_name: x-goog-api-key, header_value: AIza-test}",
            "{provider: gemini, name: gemini-2.5-flash, options: {upstream_url: \"{MOCK}\"}}",
        ),
        (
            "br",
            &format!(
                "{{aws_access_key_id: AKIDMOCKLLM, aws_secret_access_key: \"{}\"}}",
                mock_llm::BEDROCK_SECRET_ACCESS_KEY
            ),
            "{provider: bedrock, name: \"anthropic.claude-3-haiku-20240307-v1:0\", options: {bedrock: {aws_region: eu-west-3}, upstream_url: \"{MOCK}\"}}",
        ),
        (
            "co",
            "{header_name: Authorization, header_value: \"Bearer co-key\"}",
            "{provider: cohere, name: command-a-03-2025, options: {upstream_url: \"{MOCK}\"}}",
        ),
        (
            "ol",
            "{}",
            "{provider: ollama, name: llama3.2, options: {upstream_url: \"{MOCK}\"}}",
        ),
    ];
    let mut y = String::from(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    host: unused.invalid\n    routes:\n",
    );
    for (path, auth, model) in routes {
        y.push_str(&format!(
            "      - name: {path}\n        paths: [\"/{path}\"]\n        plugins:\n          - name: ai-proxy\n            config:\n              route_type: llm/v1/responses\n              auth: {auth}\n              logging: {{log_statistics: true}}\n              model: {model}\n          - name: file-log\n            config: {{path: \"{{DIR}}/{path}.log\"}}\n"
        ));
    }
    y
}

#[tokio::test]
async fn every_translated_dialect_serves_responses() {
    let h = Harness::start(&dialects_yaml()).await;
    for path in ["gem", "br", "co", "ol"] {
        // Buffered text.
        let r = post_json(&h.url(&format!("/{path}")), &json!({"input": "Say hello"})).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let b = r.json();
        assert_eq!(b["object"], "response", "{path}");
        assert_eq!(b["status"], "completed", "{path}: {b}");
        assert_eq!(
            b["output"][0]["content"][0]["text"], "Hello from mock-llm.",
            "{path}: {b}"
        );
        assert!(
            b["usage"]["output_tokens"].as_u64().unwrap() > 0,
            "{path}: {b}"
        );

        // Streamed tool call: the function call item and response.completed.
        let r = post_json(
            &h.url(&format!("/{path}")),
            &json!({"stream": true, "tools": shell_tool(), "input": "list files [mock:tool]"}),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let ev = events(&r.text());
        let t = types(&ev);
        assert_eq!(t.last(), Some(&"response.completed"), "{path}: {t:?}");
        let done = &ev.last().unwrap()["response"];
        let call = done["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "function_call")
            .unwrap_or_else(|| panic!("{path}: no function call in {done}"));
        assert_eq!(call["name"], "shell", "{path}");
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{path}: arguments {e}"));
        assert!(
            done["usage"]["total_tokens"].as_u64().unwrap() > 0,
            "{path}"
        );
        let log = h.wait_log(&format!("{path}.log"), 2).await;
        assert!(
            log[1]["ai"]["proxy"]["usage"]["total_tokens"]
                .as_u64()
                .unwrap()
                > 0,
            "{path}: {}",
            log[1]
        );
    }
}

const COMPLETIONS: &str = r#"
_format_version: "3.0"
services:
  - name: llm
    host: unused.invalid
    routes:
      - name: claude-complete
        paths: ["/claude-complete"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/completions
              auth: {header_name: x-api-key, header_value: sk-ant-test}
              logging: {log_statistics: true}
              model:
                provider: anthropic
                name: claude-sonnet-4-5
                options:
                  anthropic_version: "2023-06-01"
                  upstream_url: "{MOCK}"
          - name: file-log
            config: {path: "{DIR}/complete.log"}
      - name: gem-complete
        paths: ["/gem-complete"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/completions
              auth: {header_name: x-goog-api-key, header_value: AIza-test}
              model:
                provider: gemini
                name: gemini-2.5-flash
                options: {upstream_url: "{MOCK}"}
      - name: hf-complete
        paths: ["/hf-complete"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/completions
              auth: {header_name: Authorization, header_value: Bearer hf-test}
              logging: {log_statistics: true}
              model:
                provider: huggingface
                name: meta-llama/Llama-3.1-8B-Instruct
                options: {upstream_url: "{MOCK}"}
          - name: file-log
            config: {path: "{DIR}/hf-complete.log"}
      - name: mistral-complete
        paths: ["/mistral-complete"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/completions
              auth: {header_name: Authorization, header_value: Bearer mistral-test}
              model:
                provider: mistral
                name: mistral-small-latest
                options: {upstream_url: "{MOCK}"}
      - name: raw-complete
        paths: ["/raw-complete"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/completions
              model:
                provider: llama2
                name: llama-2-7b-chat
                options: {llama2_format: raw, upstream_url: "{MOCK}"}
"#;

#[tokio::test]
async fn completions_on_chat_only_dialects() {
    let h = Harness::start(COMPLETIONS).await;
    let r = post_json(
        &h.url("/claude-complete"),
        &json!({"prompt": "Say hello", "max_tokens": 20, "stop": ["\n\n"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["object"], "text_completion");
    assert_eq!(b["model"], "claude-sonnet-4-5");
    assert_eq!(b["choices"][0]["text"], "Hello from mock-llm.");
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    assert_eq!(b["usage"]["completion_tokens"], 3);
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    let up = seen.json().unwrap();
    assert_eq!(
        up["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}])
    );
    assert_eq!(up["max_tokens"], 20);
    assert_eq!(up["stop_sequences"], json!(["\n\n"]));
    let log = h.wait_log("complete.log", 1).await;
    assert_eq!(log[0]["ai"]["proxy"]["usage"]["completion_tokens"], 3);

    // Kong serves completions on Hugging Face, Mistral and raw Llama 2 too: their chat gets
    // the prompt (the raw format wrapped in [INST], as Kong wraps it).
    for (path, upstream_path) in [
        ("/hf-complete", "/v1/chat/completions"),
        ("/mistral-complete", "/v1/chat/completions"),
        ("/raw-complete", "/generate"),
    ] {
        let before = h.mock.requests().len();
        let r = post_json(
            &h.url(path),
            &json!({"prompt": "Say hello", "max_tokens": 20}),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let b = r.json();
        assert_eq!(b["object"], "text_completion", "{path}: {b}");
        assert_eq!(
            b["choices"][0]["text"], "Hello from mock-llm.",
            "{path}: {b}"
        );
        let seen = &h.mock.requests()[before];
        assert_eq!(seen.path, upstream_path, "{path}");
        let up = seen.json().unwrap();
        if path == "/raw-complete" {
            let inputs = up["inputs"].as_str().unwrap();
            assert!(
                inputs.contains("[INST]") && inputs.contains("Say hello"),
                "{inputs}"
            );
        } else {
            assert_eq!(
                up["messages"],
                json!([{"role": "user", "content": "Say hello"}]),
                "{path}"
            );
        }
    }
    let log = h.wait_log("hf-complete.log", 1).await;
    assert_eq!(log[0]["ai"]["proxy"]["usage"]["completion_tokens"], 3);

    // Streamed, with and without the usage chunk.
    for (path, include_usage) in [
        ("/claude-complete", false),
        ("/gem-complete", true),
        ("/hf-complete", true),
        ("/raw-complete", false),
    ] {
        let r = post_json(
            &h.url(path),
            &json!({"prompt": "Say hello [mock:chunks=3]", "stream": true,
                "stream_options": {"include_usage": include_usage}}),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let data = support::sse_data(&r.text());
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{path}: {data:?}"
        );
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(
            chunks.iter().all(|c| c["object"] == "text_completion"),
            "{path}: {chunks:?}"
        );
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(text, "Hello from mock-llm.", "{path}");
        let usage = chunks.iter().filter(|c| c.get("usage").is_some()).count();
        assert_eq!(usage, usize::from(include_usage), "{path}: {chunks:?}");
    }

    // What the chat dialects cannot express is refused before anything is sent.
    let before = h.mock.requests().len();
    let r = post_json(
        &h.url("/claude-complete"),
        &json!({"prompt": "x", "suffix": "y"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("'suffix'"), "{}", r.text());
    assert_eq!(h.mock.requests().len(), before);
}

/// Anthropic Messages clients (Claude Code) on `llm_format: anthropic` routes whose targets
/// are other providers: OpenAI, Gemini, Bedrock; one behind key-auth.
fn messages_yaml() -> String {
    let routes = [
        (
            "cc-openai",
            "{header_name: Authorization, header_value: \"Bearer sk-oa\"}",
            "{provider: openai, name: gpt-4o, options: {upstream_url: \"{MOCK}\"}}",
        ),
        (
            "cc-gem",
            "{header_name: x-goog-api-key, header_value: AIza-test}",
            "{provider: gemini, name: gemini-2.5-flash, options: {upstream_url: \"{MOCK}\"}}",
        ),
        (
            "cc-br",
            &format!(
                "{{aws_access_key_id: AKIDMOCKLLM, aws_secret_access_key: \"{}\"}}",
                mock_llm::BEDROCK_SECRET_ACCESS_KEY
            ),
            "{provider: bedrock, name: \"anthropic.claude-3-haiku-20240307-v1:0\", options: {bedrock: {aws_region: eu-west-3}, upstream_url: \"{MOCK}\"}}",
        ),
    ];
    let mut y = String::from(
        "_format_version: \"3.0\"\nconsumers:\n  - username: dev\n    keyauth_credentials: [{key: dev-key}]\nservices:\n  - name: svc\n    host: unused.invalid\n    routes:\n",
    );
    for (path, auth, model) in routes {
        y.push_str(&format!(
            "      - name: {path}\n        paths: [\"/{path}\"]\n        plugins:\n          - name: ai-proxy\n            config:\n              llm_format: anthropic\n              route_type: llm/v1/chat\n              auth: {auth}\n              logging: {{log_statistics: true}}\n              model: {model}\n          - name: file-log\n            config: {{path: \"{{DIR}}/{path}.log\"}}\n"
        ));
    }
    y.push_str(
        "      - name: cc-keyed\n        paths: [\"/cc-keyed\"]\n        plugins:\n          - name: key-auth\n            config: {key_names: [x-api-key]}\n          - name: ai-proxy\n            config:\n              llm_format: anthropic\n              route_type: llm/v1/chat\n              auth: {header_name: Authorization, header_value: \"Bearer sk-oa\"}\n              model: {provider: openai, name: gpt-4o, options: {upstream_url: \"{MOCK}\"}}\n",
    );
    y
}

/// `(event name, data)` of each event of an SSE body.
fn named_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            let data: String = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            let v = serde_json::from_str(&data).unwrap_or_else(|err| panic!("{err}: {e}"));
            (name, v)
        })
        .collect()
}

fn bash_tool() -> Value {
    json!([{"name": "Bash", "description": "Runs a shell command",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}])
}

#[tokio::test]
async fn messages_clients_reach_chat_providers() {
    let h = Harness::start(&messages_yaml()).await;
    let models = [
        ("cc-openai", "gpt-4o"),
        ("cc-gem", "gemini-2.5-flash"),
        ("cc-br", "anthropic.claude-3-haiku-20240307-v1:0"),
    ];
    for (path, model) in models {
        let url = h.url(&format!("/{path}/v1/messages?beta=true"));
        // Buffered text, with a system prompt as blocks.
        let r = post_json(
            &url,
            &json!({"model": model, "max_tokens": 256,
                "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": "Say hello"}]}),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let m = r.json();
        assert_eq!(m["type"], "message", "{path}: {m}");
        assert!(m["id"].as_str().unwrap().starts_with("msg_"), "{m}");
        assert_eq!(m["role"], "assistant");
        assert_eq!(m["stop_reason"], "end_turn", "{path}: {m}");
        assert_eq!(
            m["content"],
            json!([{"type": "text", "text": "Hello from mock-llm."}]),
            "{path}"
        );
        assert!(m["usage"]["input_tokens"].as_u64().unwrap() > 0, "{m}");
        assert_eq!(m["usage"]["output_tokens"], 3, "{path}: {m}");

        // Streamed tool call: Messages events, a tool_use block with JSON input.
        let r = post_json(
            &url,
            &json!({"model": model, "max_tokens": 256, "stream": true, "tools": bash_tool(),
                "messages": [{"role": "user", "content": [{"type": "text", "text": "list files [mock:tool]"}]}]}),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("text/event-stream"),
            "{path}"
        );
        let ev = named_events(&r.text());
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{path}: {names:?}");
        assert_eq!(names.last(), Some(&"message_stop"), "{path}: {names:?}");
        for (n, d) in &ev {
            assert_eq!(
                d["type"],
                n.as_str(),
                "{path}: data type matches the event name"
            );
        }
        let start = ev
            .iter()
            .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
            .unwrap_or_else(|| panic!("{path}: no tool_use block: {names:?}"));
        assert_eq!(start.1["content_block"]["name"], "Bash");
        let index = &start.1["index"];
        let input: String = ev
            .iter()
            .filter(|(n, d)| n == "content_block_delta" && &d["index"] == index)
            .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap_or(""))
            .collect();
        let input: Value = serde_json::from_str(&input).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(input["command"].is_string(), "{path}: {input}");
        let delta = &ev.iter().find(|(n, _)| n == "message_delta").unwrap().1;
        assert_eq!(delta["delta"]["stop_reason"], "tool_use", "{path}");
        assert!(
            delta["usage"]["output_tokens"].as_u64().unwrap() > 0,
            "{path}"
        );

        // The tool's result goes back as a tool_result block; the answer is text.
        let call_id = start.1["content_block"]["id"].clone();
        let r = post_json(
            &url,
            &json!({"model": model, "max_tokens": 256, "stream": true, "tools": bash_tool(),
                "messages": [
                    {"role": "user", "content": "list files [mock:tool]"},
                    {"role": "assistant", "content": [
                        {"type": "thinking", "thinking": "ok", "signature": "sig"},
                        {"type": "tool_use", "id": call_id, "name": "Bash", "input": input}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": call_id, "content": [{"type": "text", "text": "a.txt"}]}]}
                ]}),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let ev = named_events(&r.text());
        let delta = &ev.iter().find(|(n, _)| n == "message_delta").unwrap().1;
        assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{path}");
        assert!(ev
            .iter()
            .any(|(n, d)| n == "content_block_delta" && d["delta"]["type"] == "text_delta"));

        let log = h.wait_log(&format!("{path}.log"), 3).await;
        for rec in &log {
            assert!(
                rec["ai"]["proxy"]["usage"]["total_tokens"]
                    .as_u64()
                    .unwrap()
                    > 0,
                "{path}: {rec}"
            );
        }
    }
    // What the OpenAI target was sent: chat, with the system prompt and the tool result.
    let seen: Vec<_> = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.json().is_some_and(|b| b["model"] == "gpt-4o"))
        .collect();
    assert_eq!(seen.len(), 3);
    assert!(
        seen[0].path.ends_with("/chat/completions"),
        "{}",
        seen[0].path
    );
    let first = seen[0].json().unwrap();
    assert_eq!(
        first["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(first["model"], "gpt-4o");
    let third = seen[2].json().unwrap();
    let msgs = third["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["tool_calls"][0]["function"]["name"], "Bash");
    assert_eq!(msgs[2]["role"], "tool");
    assert_eq!(msgs[2]["content"], "a.txt");
}

#[tokio::test]
async fn messages_count_tokens_and_errors_in_anthropics_shape() {
    let h = Harness::start(&messages_yaml()).await;
    let r = post_json(
        &h.url("/cc-openai/v1/messages/count_tokens?beta=true"),
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Count the tokens of this sentence, please."}],
            "tools": bash_tool()}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let n = r.json()["input_tokens"].as_u64().unwrap();
    assert!(n > 10 && n < 200, "{n}");
    assert!(h.mock.requests().is_empty(), "counted locally");

    let anthropic_error = |r: &support::Reply, status: u16, kind: &str, says: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let b = r.json();
        assert_eq!(b["type"], "error", "{b}");
        assert_eq!(b["error"]["type"], kind, "{b}");
        let m = b["error"]["message"].as_str().unwrap();
        assert!(m.contains(says), "{m}");
    };
    // A content block chat cannot take.
    let r = post_json(
        &h.url("/cc-openai/v1/messages"),
        &json!({"model": "gpt-4o", "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "container_upload", "file_id": "f"}]}]}),
    )
    .await;
    anthropic_error(
        &r,
        400,
        "invalid_request_error",
        "messages.0.content.0.type",
    );
    // Not JSON.
    let r = support::send(
        "POST",
        &h.url("/cc-openai/v1/messages"),
        &[("content-type", "application/json")],
        "{\"model\":",
    )
    .await;
    anthropic_error(&r, 400, "invalid_request_error", "JSON");
    // Kong's model check.
    let r = post_json(
        &h.url("/cc-openai/v1/messages"),
        &json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    anthropic_error(
        &r,
        400,
        "invalid_request_error",
        "cannot use own model - must be: gpt-4o",
    );
    // The provider's own errors, buffered and streamed.
    for stream in [false, true] {
        let r = post_json(
            &h.url("/cc-gem/v1/messages"),
            &json!({"model": "gemini-2.5-flash", "max_tokens": 10, "stream": stream,
                "messages": [{"role": "user", "content": "x [mock:status=429]"}]}),
        )
        .await;
        anthropic_error(&r, 429, "rate_limit_error", "");
    }
    // key-auth's 401.
    let r = post_json(
        &h.url("/cc-keyed/v1/messages"),
        &json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    anthropic_error(&r, 401, "authentication_error", "No API key found");
    let r = support::send(
        "POST",
        &h.url("/cc-keyed/v1/messages"),
        &[("content-type", "application/json"), ("x-api-key", "dev-key")],
        json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A stream cut before its end ends with an error event, not message_stop.
    let r = post_json(
        &h.url("/cc-openai/v1/messages"),
        &json!({"model": "gpt-4o", "max_tokens": 10, "stream": true,
            "messages": [{"role": "user", "content": "hi [mock:chunks=6] [mock:disconnect_after=3]"}]}),
    )
    .await;
    let ev = named_events(&r.text());
    assert_eq!(ev.last().unwrap().0, "error", "{}", r.text());
    assert!(!ev.iter().any(|(n, _)| n == "message_stop"));
}

//! Gemini's API and Vertex AI (service-account tokens): chat, streams, tools, embeddings,
//! errors, Google's own clients passing through, config errors, and the golden transcripts.

use serde_json::{json, Value};
use tollgate::llm::Wire;

use crate::common::weather_tools;
use crate::golden;
use crate::support::{post_json, send, sse_data, Harness};

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
async fn post_openai_sdk(url: &str, body: &Value) -> crate::support::Reply {
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

    // A method path given in upstream_url still streams in events: alt=sse is added, as
    // Kong adds it (without it Google answers one JSON array at the end).
    let own = GEMINI.replace(
        "upstream_url: \"{MOCK}\"\n                  max_tokens",
        "upstream_url: \"{MOCK}/v1beta/models/gemini-2.5-flash:streamGenerateContent\"\n                  max_tokens",
    );
    assert_ne!(own, GEMINI);
    let h = Harness::start(&own).await;
    let r = send(
        "POST",
        &h.url("/gem"),
        &[("content-type", "application/json")],
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.mock.requests()[0].path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");

    // A path that asks for JSON (`alt=json`) gets one JSON array; it is still read element
    // by element into chunks, not refused.
    let array = own.replace(
        ":streamGenerateContent\"",
        ":streamGenerateContent?alt=json\"",
    );
    assert_ne!(array, own);
    let h = Harness::start(&array).await;
    let r = send(
        "POST",
        &h.url("/gem"),
        &[("content-type", "application/json")],
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true,
            "stream_options": {"include_usage": true}})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(h.mock.requests()[0].path.ends_with("?alt=json"));
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from mock-llm.");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 3);
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
    // OpenAI's fields for the SDK, and Google's own error, whole, beside them.
    assert_eq!(
        r.json(),
        json!({"error": {"message": "mock-llm injected status 429", "type": "rate_limit_error",
            "param": null, "code": "RESOURCE_EXHAUSTED", "provider_error": {"error": {"code": 429,
            "message": "mock-llm injected status 429", "status": "RESOURCE_EXHAUSTED"}}}})
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

    let e = tollgate::gateway::load_str(
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
    let (_dead, port) = crate::support::dead_port();
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
        tollgate::gateway::load_str(&yaml.replace("{MOCK}", "http://127.0.0.1:9"))
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
    // A service-account key is checked when first used, as Kong reads it: the load warns,
    // requests on the target get a 500 (the reason in the gateway's log, never the key).
    for (key, says) in [
        (
            sa.replace("BEGIN PRIVATE KEY", "BEGIN NOTHING"),
            "private_key",
        ),
        ("{not json".to_string(), "not a usable service-account key"),
    ] {
        let yaml = vertex_yaml(&key).replace("{MOCK}", "http://127.0.0.1:9");
        let snap = tollgate::gateway::load_str(&yaml).unwrap();
        let w = snap
            .warnings
            .iter()
            .find(|w| w.path.ends_with("config.auth.gcp_service_account_json"))
            .unwrap_or_else(|| panic!("no warning: {:?}", snap.warnings));
        assert!(w.message.contains(says), "{}", w.message);
        assert!(!w.message.contains("MII"), "key material: {}", w.message);
    }
    let h = Harness::start(&vertex_yaml("{not json")).await;
    let r = post_json(
        &h.url("/vx"),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(
        r.json()["error"]["message"],
        "LLM request failed before proxying"
    );
    assert!(h.mock.requests().is_empty());
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
    assert!(tollgate::gateway::Snapshot::compile(raw, &env).is_ok());
    let none = |_: &str| None;
    let raw = tollgate::config::parse_document(&text, &none).unwrap();
    // Neither: it loads with a warning naming both ways to give the key.
    let snap = tollgate::gateway::Snapshot::compile(raw, &none).unwrap();
    assert!(
        snap.warnings.iter().any(|w| {
            w.path.ends_with("config.auth.gcp_service_account_json")
                && w.message.contains("GCP_SERVICE_ACCOUNT")
        }),
        "{:?}",
        snap.warnings
    );
}

#[test]
fn gemini_transcripts() {
    let stream = std::fs::read(golden::dir("gemini").join("stream.response.sse")).unwrap();
    golden::transcripts("gemini", Wire::Gemini, "gemini-2.5-flash", &stream);
}

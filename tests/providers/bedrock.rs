//! Bedrock's Converse API, signed with SigV4: chat, event streams, tools, errors, embeddings,
//! AWS clients passing through re-signed, config errors, and the golden transcripts.

use serde_json::{json, Value};
use tollgate::llm::Wire;

use crate::common::weather_tools;
use crate::golden;
use crate::support::{post_json, send, sse_data, Harness};

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
    tollgate::gateway::snapshot::Snapshot::compile(raw, &env)
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
    let snap = tollgate::gateway::load_str(&direct).unwrap();
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

#[test]
fn bedrock_transcripts() {
    golden::transcripts(
        "bedrock",
        Wire::Bedrock,
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        &golden::bedrock_stream(),
    );
}

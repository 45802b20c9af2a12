//! Cohere's v2 chat and embed APIs, translated both ways; Cohere's own clients (v1, v2,
//! rerank) passing through; and the dialect's golden transcripts.

use serde_json::{json, Value};
use tollgate::llm::Wire;

use crate::common::{
    chunks, finish_reasons, load_error, native_routes, routes, streamed_call, streamed_text,
    streamed_untouched, weather_tools,
};
use crate::golden;
use crate::support::{post_json, send, Harness};

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

#[test]
fn cohere_transcripts() {
    let stream = std::fs::read(golden::dir("cohere").join("stream.response.sse")).unwrap();
    golden::transcripts("cohere", Wire::Cohere, "command-a-03-2025", &stream);
}

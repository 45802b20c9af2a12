//! Ollama's native API (also `mistral_format`/`llama2_format: ollama`) and Llama 2's raw
//! TGI-style generate API, with their golden transcripts.

use serde_json::json;
use tollgate::llm::Wire;

use crate::common::{chunks, finish_reasons, routes, streamed_call, streamed_text, weather_tools};
use crate::golden;
use crate::support::{post_json, send, Harness};

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

#[test]
fn ollama_transcripts() {
    let stream = std::fs::read(golden::dir("ollama").join("stream.response.ndjson")).unwrap();
    golden::transcripts("ollama", Wire::Ollama, "llama3.2", &stream);
}

#[test]
fn llama2_raw_transcripts() {
    let stream = std::fs::read(golden::dir("llama2-raw").join("stream.response.sse")).unwrap();
    golden::transcripts("llama2-raw", Wire::Llama2Raw, "llama-2-13b-chat", &stream);
}

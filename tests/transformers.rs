//! ai-request-transformer and ai-response-transformer through real HTTP: the gateway
//! in-process, mock-llm as both the LLM and the route's service.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use support::*;

/// Routes to the mock as a plain service, each with one transformer; the LLM is the mock
/// too, told what to answer by the `[mock:...]` markers in the prompt.
const CONFIG: &str = r#"
_format_version: "3.0"
services:
  - name: embeddings
    url: "{MOCK}/v1/embeddings"
    routes:
      - name: rewrite
        paths: ["/rewrite"]
        plugins:
          - name: ai-request-transformer
            config:
              prompt: 'Add the country. [mock:reply={"model":"e","input":"Paris, France"}]'
              llm:
                route_type: llm/v1/chat
                auth: {header_name: Authorization, header_value: Bearer llm-key}
                model:
                  provider: openai
                  name: gpt-4o
                  options: {upstream_url: "{MOCK}/v1/chat/completions", temperature: 0.2}
      - name: extract
        paths: ["/extract"]
        plugins:
          - name: ai-request-transformer
            config:
              prompt: 'Sure [mock:reply=Here it is: {"model":"e","input":"x"} Anything else?]'
              transformation_extract_pattern: '{((.|\n)*)}'
              llm:
                route_type: llm/v1/chat
                model:
                  provider: openai
                  name: gpt-4o
                  options: {upstream_url: "{MOCK}/v1/chat/completions"}
      - name: no-match
        paths: ["/no-match"]
        plugins:
          - name: ai-request-transformer
            config:
              prompt: 'p [mock:reply=plain words]'
              transformation_extract_pattern: '^\{.*\}$'
              llm:
                route_type: llm/v1/chat
                model:
                  provider: openai
                  name: gpt-4o
                  options: {upstream_url: "{MOCK}/v1/chat/completions"}
      - name: rewrite-anthropic
        paths: ["/rewrite-anthropic"]
        plugins:
          - name: ai-request-transformer
            config:
              prompt: 'Add the country. [mock:reply={"model":"e","input":"Lyon, France"}]'
              llm:
                route_type: llm/v1/chat
                auth: {header_name: x-api-key, header_value: anthropic-key}
                model:
                  provider: anthropic
                  name: claude-3-5-haiku-latest
                  options:
                    upstream_url: "{MOCK}/v1/messages"
                    anthropic_version: "2023-06-01"
                    max_tokens: 256
      - name: llm-down
        paths: ["/llm-down"]
        plugins:
          - name: ai-request-transformer
            config:
              prompt: 'p [mock:status=500]'
              llm:
                route_type: llm/v1/chat
                model:
                  provider: openai
                  name: gpt-4o
                  options: {upstream_url: "{MOCK}/v1/chat/completions"}
  - name: chat
    url: "{MOCK}/v1/chat/completions"
    routes:
      - name: answer
        paths: ["/answer"]
        plugins:
          - name: ai-response-transformer
            config:
              prompt: 'Translate to French. [mock:reply=Bonjour de mock-llm.]'
              llm:
                route_type: llm/v1/chat
                model:
                  provider: openai
                  name: gpt-4o
                  options: {upstream_url: "{MOCK}/v1/chat/completions"}
      - name: instructions
        paths: ["/instructions"]
        plugins:
          - name: ai-response-transformer
            config:
              prompt: 'Add a header. [mock:reply=Here: {"status": 201, "headers": {"new-header": "header-value", "content-type": "text/plain"}, "body": "new response body"}]'
              transformation_extract_pattern: '{((.|\n)*)}'
              parse_llm_response_json_instructions: true
              llm:
                route_type: llm/v1/chat
                model:
                  provider: openai
                  name: gpt-4o
                  options: {upstream_url: "{MOCK}/v1/chat/completions"}
      - name: bad-instructions
        paths: ["/bad-instructions"]
        plugins:
          - name: ai-response-transformer
            config:
              prompt: 'p [mock:reply=not json]'
              parse_llm_response_json_instructions: true
              llm:
                route_type: llm/v1/chat
                model:
                  provider: openai
                  name: gpt-4o
                  options: {upstream_url: "{MOCK}/v1/chat/completions"}
      - name: answer-llm-down
        paths: ["/answer-llm-down"]
        plugins:
          - name: ai-response-transformer
            config:
              prompt: 'p [mock:status=503]'
              llm:
                route_type: llm/v1/chat
                model:
                  provider: openai
                  name: gpt-4o
                  options: {upstream_url: "{MOCK}/v1/chat/completions"}
"#;

fn chat() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

/// The recorded requests' paths and JSON bodies, in order.
fn seen(h: &Harness) -> Vec<(String, Value)> {
    h.mock
        .requests()
        .into_iter()
        .map(|r| (r.path.clone(), r.json().unwrap_or(Value::Null)))
        .collect()
}

#[tokio::test]
async fn the_service_gets_the_llms_answer_as_its_request_body() {
    let h = Harness::start(CONFIG).await;
    let r = post_json(&h.url("/rewrite"), &json!({"city": "Paris"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reqs = h.mock.requests();
    assert_eq!(reqs.len(), 2, "the LLM, then the service");
    let llm = &reqs[0];
    assert_eq!(llm.path, "/v1/chat/completions");
    assert_eq!(llm.header("authorization"), Some("Bearer llm-key"));
    let asked = llm.json().unwrap();
    assert_eq!(asked["model"], "gpt-4o");
    assert_eq!(asked["stream"], false);
    assert_eq!(asked["temperature"], 0.2);
    assert_eq!(asked["messages"][0]["role"], "system");
    assert!(asked["messages"][0]["content"]
        .as_str()
        .unwrap()
        .starts_with("Add the country."));
    assert_eq!(asked["messages"][1]["role"], "user");
    assert_eq!(asked["messages"][1]["content"], r#"{"city":"Paris"}"#);
    let service = &reqs[1];
    assert_eq!(service.path, "/v1/embeddings");
    assert_eq!(
        &service.body[..],
        br#"{"model":"e","input":"Paris, France"}"#
    );
    assert_eq!(
        service.header("content-length"),
        Some(service.body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn the_extract_pattern_cuts_the_llms_answer() {
    let h = Harness::start(CONFIG).await;
    let r = post_json(&h.url("/extract"), &json!({"city": "Paris"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reqs = h.mock.requests();
    assert_eq!(&reqs[1].body[..], br#"{"model":"e","input":"x"}"#);

    h.mock.clear();
    let r = post_json(&h.url("/no-match"), &json!({"city": "Paris"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "AI response did not match specified regular expression"}})
    );
    assert_eq!(seen(&h).len(), 1, "the service is not called");
}

#[tokio::test]
async fn a_failing_llm_gives_kongs_error() {
    let h = Harness::start(CONFIG).await;
    let r = post_json(&h.url("/llm-down"), &json!({"city": "Paris"})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"error": {"message": "failed to introspect request with AI service: status code 500"}})
    );
    assert_eq!(seen(&h).len(), 1, "the service is not called");

    h.mock.clear();
    let r = post_json(&h.url("/answer-llm-down"), &chat()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"error": {"message": "failed to introspect request with AI service: status code 503"}})
    );
    let paths: Vec<String> = seen(&h).into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths.len(), 2, "the service, then the LLM: {paths:?}");
}

#[tokio::test]
async fn the_client_gets_the_llms_answer_to_the_services_response() {
    let h = Harness::start(CONFIG).await;
    let r = post_json(&h.url("/answer"), &chat()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "Bonjour de mock-llm.");
    assert_eq!(r.header("content-length"), Some("20"));
    let reqs = h.mock.requests();
    assert_eq!(reqs.len(), 2, "the service, then the LLM");
    assert_eq!(reqs[0].header("accept-encoding"), Some("identity"));
    let asked = reqs[1].json().unwrap();
    let upstream_answer = asked["messages"][1]["content"].as_str().unwrap();
    let upstream_answer: Value = serde_json::from_str(upstream_answer).unwrap();
    assert_eq!(
        upstream_answer["choices"][0]["message"]["content"],
        "Hello from mock-llm."
    );
}

#[tokio::test]
async fn json_instructions_set_status_headers_and_body() {
    let h = Harness::start(CONFIG).await;
    let r = post_json(&h.url("/instructions"), &chat()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("new-header"), Some("header-value"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.text(), "new response body");
    assert_eq!(r.header("content-length"), Some("17"));

    let r = post_json(&h.url("/bad-instructions"), &chat()).await;
    assert_eq!(r.status, 500, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.starts_with("failed to parse JSON response instructions from AI backend: "),
        "{message}"
    );
}

#[tokio::test]
async fn a_translated_provider_serves_as_the_llm() {
    let h = Harness::start(CONFIG).await;
    let r = post_json(&h.url("/rewrite-anthropic"), &json!({"city": "Lyon"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reqs = h.mock.requests();
    assert_eq!(reqs[0].path, "/v1/messages");
    assert_eq!(reqs[0].header("x-api-key"), Some("anthropic-key"));
    assert_eq!(reqs[0].header("anthropic-version"), Some("2023-06-01"));
    let asked = reqs[0].json().unwrap();
    assert!(
        asked["system"].to_string().contains("Add the country."),
        "{asked}"
    );
    assert_eq!(asked["max_tokens"], 256);
    assert_eq!(
        &reqs[1].body[..],
        br#"{"model":"e","input":"Lyon, France"}"#
    );
}

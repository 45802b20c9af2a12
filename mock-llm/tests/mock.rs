//! End-to-end tests: a real server and a real HTTP client.

// A failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mock_llm::MockLlm;
use serde_json::{json, Value};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn content_type(&self) -> &str {
        self.headers["content-type"].to_str().unwrap()
    }
}

fn request(
    mock: &MockLlm,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Request<Full<Bytes>> {
    let mut builder = Request::post(format!("{}{path}", mock.url()));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap()
}

async fn send(
    mock: &MockLlm,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> hyper::Response<Incoming> {
    let body = serde_json::to_vec(body).unwrap();
    client()
        .request(request(mock, path, headers, &body))
        .await
        .unwrap()
}

async fn post(mock: &MockLlm, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let response = send(mock, path, headers, body).await;
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// The `data:` payloads of an SSE body (`[DONE]` kept as a string).
fn sse_data(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let data = event
                .lines()
                .find_map(|line| line.strip_prefix("data: "))
                .unwrap();
            if data == "[DONE]" {
                Value::String(data.to_owned())
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

fn chat_body(content: &str) -> Value {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn chat_completion() {
    let mock = MockLlm::start().await.unwrap();
    let reply = post(
        &mock,
        "/v1/chat/completions",
        &[],
        &chat_body("say hello please"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "application/json");
    let body = reply.json();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(
        body["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": "Hello from mock-llm."}, "finish_reason": "stop", "logprobs": null}])
    );
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
    );

    // Any prefix works, and the model defaults.
    let reply = post(
        &mock,
        "/openai/chat/completions",
        &[],
        &json!({"messages": []}),
    )
    .await;
    assert_eq!(reply.json()["model"], "mock-model");
    assert_eq!(reply.json()["usage"]["prompt_tokens"], 1);
}

#[tokio::test]
async fn chat_stream_without_usage() {
    let mock = MockLlm::start().await.unwrap();
    let mut body = chat_body("hi");
    body["stream"] = json!(true);
    let reply = post(
        &mock,
        "/v1/chat/completions",
        &[("accept", "application/json")],
        &body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "text/event-stream");
    let events = sse_data(reply.text());
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(
        events[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = events[1..4]
        .iter()
        .map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello from mock-llm.");
    assert_eq!(events[4]["choices"][0]["delta"], json!({}));
    assert_eq!(events[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[5], "[DONE]");
    assert!(events[..5].iter().all(|e| e.get("usage").is_none()));
    assert!(reply.text().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn chat_stream_with_usage() {
    let mock = MockLlm::start().await.unwrap();
    let mut body = chat_body("one two");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = post(&mock, "/v1/chat/completions", &[], &body).await;
    let events = sse_data(reply.text());
    assert_eq!(events.len(), 7, "{events:?}");
    assert_eq!(events[1]["usage"], Value::Null);
    assert_eq!(events[5]["choices"], json!([]));
    assert_eq!(
        events[5]["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})
    );
    assert_eq!(events[6], "[DONE]");
}

#[tokio::test]
async fn legacy_completions() {
    let mock = MockLlm::start().await.unwrap();
    let body = json!({"model": "davinci", "prompt": "once upon a time"});
    let reply = post(&mock, "/v1/completions", &[], &body).await;
    let json = reply.json();
    assert_eq!(json["object"], "text_completion");
    assert_eq!(
        json["choices"],
        json!([{"text": "Hello from mock-llm.", "index": 0, "finish_reason": "stop", "logprobs": null}])
    );
    assert_eq!(json["usage"]["prompt_tokens"], 4);

    let body = json!({"prompt": "x", "stream": true, "stream_options": {"include_usage": true}});
    let reply = post(&mock, "/v1/completions", &[("x-mock", "chunks=2")], &body).await;
    let events = sse_data(reply.text());
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(events[..3].iter().all(|e| e["object"] == "text_completion"));
    assert_eq!(events[0]["choices"][0]["text"], "Hello ");
    assert_eq!(events[1]["choices"][0]["text"], "from mock-llm.");
    assert_eq!(events[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[3]["usage"]["completion_tokens"], 2);
    assert_eq!(events[4], "[DONE]");
}

fn base64_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        bits = (bits << 6) | alphabet.iter().position(|a| *a == c).unwrap() as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let mock = MockLlm::start().await.unwrap();
    let body = json!({"model": "embed-1", "input": ["alpha beta", "gamma"]});
    let floats = post(&mock, "/v1/embeddings", &[], &body).await.json();
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["model"], "embed-1");
    assert_eq!(
        floats["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );
    let data = floats["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[1]["index"], 1);
    let first: Vec<f32> = serde_json::from_value(data[0]["embedding"].clone()).unwrap();
    assert_eq!(first.len(), 8);
    let norm: f32 = first.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);

    // Same text, same vector, whatever the encoding.
    let body = json!({"input": "alpha beta", "encoding_format": "base64"});
    let encoded = post(&mock, "/v1/embeddings", &[], &body).await.json();
    let bytes = base64_decode(encoded["data"][0]["embedding"].as_str().unwrap());
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, first);

    let body = json!({"input": [[1, 2, 3], [4]], "dimensions": 5});
    let sized = post(&mock, "/v1/embeddings", &[], &body).await.json();
    assert_eq!(sized["data"][0]["embedding"].as_array().unwrap().len(), 5);
    assert_eq!(sized["data"].as_array().unwrap().len(), 2);
    assert_eq!(sized["usage"]["prompt_tokens"], 4);
}

#[tokio::test]
async fn responses_non_streaming() {
    let mock = MockLlm::start().await.unwrap();
    let body = json!({"model": "gpt-5", "input": [{"role": "user", "content": [{"type": "input_text", "text": "a b c"}]}]});
    let json = post(&mock, "/v1/responses", &[], &body).await.json();
    assert!(json["id"].as_str().unwrap().starts_with("resp_mock_"));
    assert_eq!(json["object"], "response");
    assert_eq!(json["status"], "completed");
    assert_eq!(json["model"], "gpt-5");
    assert_eq!(json["output"][0]["type"], "message");
    assert_eq!(json["output"][0]["role"], "assistant");
    assert_eq!(
        json["output"][0]["content"],
        json!([{"type": "output_text", "text": "Hello from mock-llm.", "annotations": []}])
    );
    assert_eq!(
        json["usage"],
        json!({"input_tokens": 3, "output_tokens": 3, "total_tokens": 6})
    );
}

/// `(event: name, data JSON)` pairs of a Responses stream.
fn named_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let mut lines = event.lines();
            let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            (name.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn responses_stream_event_order() {
    let mock = MockLlm::start().await.unwrap();
    let body = json!({"model": "gpt-5", "input": "hello there", "stream": true});
    let reply = post(&mock, "/v1/responses", &[], &body).await;
    assert_eq!(reply.content_type(), "text/event-stream");
    let events = named_events(reply.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i);
    }
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert_eq!(events[2].1["item"]["content"], json!([]));
    let item_id = events[2].1["item"]["id"].as_str().unwrap();
    let deltas: String = events[4..7]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["item_id"], item_id);
            assert_eq!(d["output_index"], 0);
            assert_eq!(d["content_index"], 0);
            d["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(deltas, "Hello from mock-llm.");
    assert_eq!(events[7].1["text"], "Hello from mock-llm.");
    let done = &events[9].1["item"];
    assert_eq!(done["type"], "message");
    assert_eq!(done["role"], "assistant");
    assert_eq!(done["content"][0]["type"], "output_text");
    assert_eq!(done["content"][0]["text"], "Hello from mock-llm.");
    let completed = &events[10].1["response"];
    assert!(completed["id"].as_str().unwrap().starts_with("resp_mock_"));
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"][0], *done);
    assert_eq!(
        completed["usage"],
        json!({"input_tokens": 2, "output_tokens": 3, "total_tokens": 5})
    );
    assert!(!reply.text().contains("[DONE]"));
}

#[tokio::test]
async fn records_requests() {
    let mock = MockLlm::start().await.unwrap();
    post(
        &mock,
        "/v1/chat/completions?api-version=2024-10-21",
        &[("authorization", "Bearer sk-1")],
        &chat_body("x"),
    )
    .await;
    post(&mock, "/v1/embeddings", &[], &json!({"input": "y"})).await;
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions?api-version=2024-10-21");
    assert_eq!(
        first.query_param("api-version").as_deref(),
        Some("2024-10-21")
    );
    assert_eq!(first.header("Authorization"), Some("Bearer sk-1"));
    assert!(first.headers.iter().any(|(name, _)| name == "content-type"));
    assert_eq!(first.json().unwrap()["messages"][0]["content"], "x");
    assert_eq!(mock.last_request().unwrap().path, "/v1/embeddings");

    mock.clear();
    assert!(mock.requests().is_empty());
    mock.set_recording(false);
    post(&mock, "/v1/embeddings", &[], &json!({"input": "y"})).await;
    assert!(mock.last_request().is_none());
    mock.set_recording(true);
    post(&mock, "/v1/embeddings", &[], &json!({"input": "y"})).await;
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn health_unknown_path_and_bad_json() {
    let mock = MockLlm::start().await.unwrap();
    let response = client()
        .get(format!("{}/health", mock.url()).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );

    let reply = post(&mock, "/v1/models/x", &[], &json!({})).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let error = &reply.json()["error"];
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("mock-llm: unknown path"));
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "not_found");

    let response = client()
        .request(request(&mock, "/v1/chat/completions", &[], b"{not json"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn injected_status() {
    let mock = MockLlm::start().await.unwrap();
    let cases = [
        (429, "rate_limit_error"),
        (400, "invalid_request_error"),
        (503, "server_error"),
    ];
    for (status, kind) in cases {
        let header = format!("status={status}");
        let reply = post(
            &mock,
            "/v1/chat/completions",
            &[("x-mock", &header)],
            &chat_body("x"),
        )
        .await;
        assert_eq!(reply.status.as_u16(), status);
        let json = reply.json();
        assert_eq!(
            json["error"]["message"],
            format!("mock-llm injected status {status}")
        );
        assert_eq!(json["error"]["type"], kind);
        assert_eq!(json["error"]["code"], Value::Null);
    }
    // From a prompt marker, and the header wins over it.
    let body = chat_body("please [mock:status=500] fail");
    assert_eq!(
        post(&mock, "/v1/chat/completions", &[], &body).await.status,
        500
    );
    let reply = post(
        &mock,
        "/v1/chat/completions",
        &[("x-mock", "status=502")],
        &body,
    )
    .await;
    assert_eq!(reply.status, 502);
}

#[tokio::test]
async fn reply_and_chunks_from_markers() {
    let mock = MockLlm::start().await.unwrap();
    let body = chat_body("[mock:reply=Yes, indeed; quite so] hi");
    let json = post(&mock, "/v1/chat/completions", &[], &body).await.json();
    assert_eq!(
        json["choices"][0]["message"]["content"],
        "Yes, indeed; quite so"
    );
    assert_eq!(json["usage"]["completion_tokens"], 4);

    let mut body = chat_body("hi [mock:chunks=5]");
    body["stream"] = json!(true);
    let reply = post(&mock, "/v1/chat/completions", &[], &body).await;
    let events = sse_data(reply.text());
    let pieces: Vec<&str> = events[1..6]
        .iter()
        .map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(pieces, ["tok0 ", "tok1 ", "tok2 ", "tok3 ", "tok4"]);
}

#[tokio::test]
async fn delay_before_headers() {
    let mock = MockLlm::start().await.unwrap();
    let start = Instant::now();
    let reply = post(
        &mock,
        "/v1/chat/completions",
        &[("x-mock", "delay_ms=100")],
        &chat_body("x"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn chunk_delay_spaces_events() {
    let mock = MockLlm::start().await.unwrap();
    let mut body = chat_body("x");
    body["stream"] = json!(true);
    let response = send(
        &mock,
        "/v1/chat/completions",
        &[("x-mock", "chunk_delay_ms=20")],
        &body,
    )
    .await;
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        if frame.unwrap().is_data() {
            arrivals.push(Instant::now());
        }
    }
    // 6 events, 5 gaps of 20 ms: frames arrive one by one, spread out.
    assert!(arrivals.len() >= 4, "{} frames", arrivals.len());
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(spread >= Duration::from_millis(50), "spread {spread:?}");
}

#[tokio::test]
async fn disconnect_after_breaks_the_body() {
    let mock = MockLlm::start().await.unwrap();
    let mut body = chat_body("x");
    body["stream"] = json!(true);
    let response = send(
        &mock,
        "/v1/chat/completions",
        &[("x-mock", "disconnect_after=2")],
        &body,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = Vec::new();
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(frame.data_ref().unwrap()),
            Some(Err(err)) => break err,
            None => panic!("body ended cleanly"),
        }
    };
    // hyper reports the missing terminating chunk as an unexpected EOF.
    assert!(format!("{error:?}").contains("EOF"), "{error:?}");
    let events = sse_data(std::str::from_utf8(&received).unwrap());
    assert_eq!(events.len(), 2);
}

#[tokio::test]
async fn reset_closes_without_response() {
    let mock = MockLlm::start().await.unwrap();
    let body = serde_json::to_vec(&chat_body("[mock:reset]")).unwrap();
    let result = client()
        .request(request(&mock, "/v1/chat/completions", &[], &body))
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn hang_never_answers() {
    let mock = MockLlm::start().await.unwrap();
    let body = chat_body("x");
    let request = send(&mock, "/v1/chat/completions", &[("x-mock", "hang")], &body);
    let result = tokio::time::timeout(Duration::from_millis(150), request).await;
    assert!(result.is_err());
}

#[tokio::test]
async fn non_json_body() {
    let mock = MockLlm::start().await.unwrap();
    let reply = post(
        &mock,
        "/v1/chat/completions",
        &[("x-mock", "non_json")],
        &chat_body("x"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "application/json");
    assert_eq!(reply.text(), "this is not json");
}

#[tokio::test]
async fn responses_failed() {
    let mock = MockLlm::start().await.unwrap();
    let body = json!({"input": "x", "stream": true});
    let reply = post(&mock, "/v1/responses", &[("x-mock", "failed")], &body).await;
    let events = named_events(reply.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["response.created", "response.failed"]);
    let failed = &events[1].1["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["error"],
        json!({"code": "server_error", "message": "mock-llm injected failure"})
    );
}

#[tokio::test]
async fn keep_alive_and_shutdown_on_drop() {
    let mock = MockLlm::start().await.unwrap();
    let client = client();
    for _ in 0..20 {
        let body = serde_json::to_vec(&chat_body("x")).unwrap();
        let response = client
            .request(request(&mock, "/v1/chat/completions", &[], &body))
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(mock.requests().len(), 20);

    let addr = mock.addr();
    drop(mock);
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still listening after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn cohere_chat_stream_tools_and_errors() {
    let mock = MockLlm::start().await.unwrap();
    let body = json!({"model": "command-a-03-2025",
        "messages": [{"role": "user", "content": "hi"}]});
    let r = post(&mock, "/v2/chat", &[], &body).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["message"]["content"][0]["text"], "Hello from mock-llm.");
    assert_eq!(v["finish_reason"], "COMPLETE");
    assert_eq!(v["usage"]["billed_units"]["output_tokens"], 3);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post(&mock, "/v2/chat", &[], &streamed).await;
    assert_eq!(r.content_type(), "text/event-stream");
    let events = sse_data(r.text());
    assert_eq!(events[0]["type"], "message-start");
    assert_eq!(events.last().unwrap()["type"], "message-end");

    let tools = json!({"model": "c", "messages": [{"role": "user", "content": "w [mock:tool]"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]});
    let v = post(&mock, "/v2/chat", &[], &tools).await.json();
    assert_eq!(v["finish_reason"], "TOOL_CALL");
    assert_eq!(
        v["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );

    let r = post(&mock, "/v2/chat", &[("x-mock", "status=429")], &body).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["message"], "mock-llm injected status 429");
    let r = post(
        &mock,
        "/v2/chat",
        &[],
        &json!({"model": "c", "messages": [], "top_p": 1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["message"].as_str().unwrap().contains("top_p"));

    let r = post(
        &mock,
        "/v2/embed",
        &[],
        &json!({"model": "embed-v4.0", "texts": ["a", "b"],
        "input_type": "classification", "embedding_types": ["float"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["embeddings"]["float"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn cohere_v1_chat_ndjson_and_rerank() {
    let mock = MockLlm::start().await.unwrap();
    let body = json!({"model": "command-r", "message": "hi there",
        "chat_history": [{"role": "USER", "message": "before"}]});
    let v = post(&mock, "/v1/chat", &[], &body).await.json();
    assert_eq!(v["text"], "Hello from mock-llm.");
    assert_eq!(v["meta"]["billed_units"]["input_tokens"], 3);
    assert_eq!(v["meta"]["billed_units"]["output_tokens"], 3);
    assert_eq!(v["chat_history"].as_array().unwrap().len(), 3);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post(&mock, "/v1/chat", &[], &streamed).await;
    assert_eq!(r.content_type(), "application/stream+json");
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["event_type"], "stream-start");
    let end = lines.last().unwrap();
    assert_eq!(end["event_type"], "stream-end");
    assert_eq!(end["response"]["meta"]["billed_units"]["output_tokens"], 3);
    let r = post(
        &mock,
        "/v1/chat",
        &[],
        &json!({"model": "c", "messages": []}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let rerank = json!({"model": "rerank-v3.5", "query": "capital of France",
        "documents": ["Berlin is in Germany", "Paris is the capital of France"], "top_n": 1});
    let v = post(&mock, "/v2/rerank", &[], &rerank).await.json();
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    assert_eq!(v["results"][0]["index"], 1);
    assert_eq!(v["meta"]["billed_units"]["search_units"], 1);
    let r = post(
        &mock,
        "/v2/rerank",
        &[],
        &json!({"query": "x", "documents": []}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "v2 needs a model");
    let r = post(&mock, "/v1/rerank", &[("x-mock", "status=429")], &rerank).await;
    assert_eq!(r.json()["message"], "mock-llm injected status 429");
}

#[tokio::test]
async fn ollama_chat_ndjson_and_embed() {
    let mock = MockLlm::start().await.unwrap();
    let body = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let v = post(&mock, "/api/chat", &[], &body).await.json();
    assert_eq!(v["message"]["content"], "Hello from mock-llm.");
    assert_eq!(v["done"], true);
    assert_eq!(v["eval_count"], 3);

    // Without `stream`, Ollama streams NDJSON.
    let r = post(
        &mock,
        "/api/chat",
        &[],
        &json!({"model": "m", "messages": []}),
    )
    .await;
    assert_eq!(r.content_type(), "application/x-ndjson");
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["done_reason"], "stop");

    let r = post(&mock, "/api/chat", &[("x-mock", "status=404")], &body).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "mock-llm injected status 404");

    let v = post(
        &mock,
        "/api/embed",
        &[],
        &json!({"model": "all-minilm", "input": ["a"]}),
    )
    .await
    .json();
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tgi_generate_and_stream() {
    let mock = MockLlm::start().await.unwrap();
    let body = json!({"inputs": "<s>[INST] hi [/INST]", "parameters": {"details": true}});
    let v = post(&mock, "/generate", &[], &body).await.json();
    assert_eq!(v["generated_text"], "Hello from mock-llm.");
    assert_eq!(v["details"]["generated_tokens"], 3);
    let r = post(&mock, "/generate_stream", &[], &body).await;
    let events = sse_data(r.text());
    assert_eq!(events.len(), 4);
    assert_eq!(events[3]["generated_text"], "Hello from mock-llm.");
    let r = post(&mock, "/generate", &[], &json!({"parameters": {}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error_type"], "validation");
}

/// Sends any request and reads the whole answer.
async fn exchange(req: Request<Full<Bytes>>) -> Reply {
    let (parts, body) = client().request(req).await.unwrap().into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test]
async fn azure_token_endpoints() {
    let mock = MockLlm::start().await.unwrap();
    let imds = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fcognitiveservices.azure.com";
    let get = |with_header: bool| {
        let mut b = Request::get(format!("{}{imds}", mock.url()));
        if with_header {
            b = b.header("metadata", "true");
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    // IMDS refuses requests without `Metadata: true`.
    let r = exchange(get(false)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_request");
    let r = exchange(get(true)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    assert_eq!(j["access_token"], "azure-mock-1");
    assert_eq!(j["expires_in"], "86399", "IMDS sends numbers as strings");
    assert_eq!(mock.token_fetches(), 1);

    let grant = |secret: &str| {
        let body = format!("grant_type=client_credentials&client_id=app&client_secret={secret}&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default");
        Request::post(format!("{}/tenant-1/oauth2/v2.0/token", mock.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let r = exchange(grant("wrong")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "invalid_client");
    assert!(!r.text().contains("wrong"));
    let r = exchange(grant(mock_llm::AZURE_CLIENT_SECRET)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["access_token"], "azure-mock-2");
    assert_eq!(r.json()["expires_in"], 3599);
    assert_eq!(mock.token_fetches(), 2);
}

//! End-to-end tests of OpenAI's non-chat APIs (files, batches, assistants,
//! audio, images, videos): a real server and a real HTTP client.

// A failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mock_llm::MockLlm;
use serde_json::{json, Value};

const BOUNDARY: &str = "----mock-test-boundary";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// How many data frames the body arrived in.
    frames: usize,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn content_type(&self) -> &str {
        self.headers["content-type"].to_str().unwrap()
    }

    /// Asserts an OpenAI-shaped error naming `param`.
    fn assert_error(&self, status: u16, param: Option<&str>) -> String {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        let error = &self.json()["error"];
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], json!(param));
        assert!(error.get("code").is_some());
        error["message"].as_str().unwrap().to_owned()
    }
}

async fn call(
    mock: &MockLlm,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{}{path}", mock.url()));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::from(body))).unwrap();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await.unwrap();
    let (parts, mut body) = response.into_parts();
    let mut data = Vec::new();
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame.unwrap().into_data() {
            frames += 1;
            data.extend_from_slice(&chunk);
        }
    }
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: data.into(),
        frames,
    }
}

async fn get(mock: &MockLlm, path: &str) -> Reply {
    call(mock, Method::GET, path, &[], Vec::new()).await
}

async fn post_json(mock: &MockLlm, path: &str, body: &Value) -> Reply {
    let body = serde_json::to_vec(body).unwrap();
    let headers = [("content-type", "application/json")];
    call(mock, Method::POST, path, &headers, body).await
}

/// `(name, filename, content)` parts as a multipart/form-data body.
fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, data) in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match filename {
            Some(f) => out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

async fn post_form(mock: &MockLlm, path: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Reply {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let headers = [("content-type", content_type.as_str())];
    call(mock, Method::POST, path, &headers, form(parts)).await
}

async fn upload(mock: &MockLlm, name: &str, purpose: &str, data: &[u8]) -> Value {
    let reply = post_form(
        mock,
        "/v1/files",
        &[
            ("purpose", None, purpose.as_bytes()),
            ("file", Some(name), data),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.json()
}

#[tokio::test]
async fn files_round_trip() {
    let mock = MockLlm::start().await.unwrap();
    let data: Vec<u8> = (0..=255u8).chain(*b"\r\n--x\r\n").collect();
    let file = upload(&mock, "blob.bin", "assistants", &data).await;
    let id = file["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("file-mock-"));
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], data.len());
    assert_eq!(file["filename"], "blob.bin");
    assert_eq!(file["purpose"], "assistants");
    assert_eq!(file["status"], "processed");
    assert!(file["created_at"].as_u64().unwrap() > 1_600_000_000);
    // The multipart body is recorded raw.
    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.method, "POST");
    assert!(recorded
        .header("content-type")
        .unwrap()
        .starts_with("multipart/form-data"));
    assert!(recorded.body.windows(data.len()).any(|w| w == data));

    assert_eq!(get(&mock, &format!("/v1/files/{id}")).await.json(), file);
    let content = get(&mock, &format!("/v1/files/{id}/content")).await;
    assert_eq!(content.content_type(), "application/octet-stream");
    assert_eq!(content.body, data);

    let list = get(&mock, "/v1/files").await.json();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"], json!([file]));
    assert_eq!(list["has_more"], false);
    let list = get(&mock, "/v1/files?purpose=batch").await.json();
    assert_eq!(list["data"], json!([]));

    let deleted = call(
        &mock,
        Method::DELETE,
        &format!("/v1/files/{id}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(
        deleted.json(),
        json!({"id": id, "object": "file", "deleted": true})
    );
    let gone = get(&mock, &format!("/v1/files/{id}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        gone.json(),
        json!({"error": {"message": format!("No such File object: {id}"),
            "type": "invalid_request_error", "param": "id", "code": null}})
    );
    let gone = get(&mock, &format!("/v1/files/{id}/content")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn files_reject_bad_forms() {
    let mock = MockLlm::start().await.unwrap();
    let reply = post_form(&mock, "/v1/files", &[("purpose", None, b"batch")]).await;
    assert!(reply.assert_error(400, Some("file")).contains("'file'"));
    let reply = post_form(&mock, "/v1/files", &[("file", Some("a.txt"), b"x")]).await;
    reply.assert_error(400, Some("purpose"));
    // No boundary, a wrong one, or JSON.
    for content_type in [
        "multipart/form-data",
        "multipart/form-data; boundary=other",
        "application/json",
    ] {
        let body = form(&[("file", Some("a"), b"x"), ("purpose", None, b"batch")]);
        let reply = call(
            &mock,
            Method::POST,
            "/v1/files",
            &[("content-type", content_type)],
            body,
        )
        .await;
        let message = reply.assert_error(400, None);
        assert!(message.contains("multipart"), "{message}");
    }
}

#[tokio::test]
async fn azure_paths_match() {
    let mock = MockLlm::start().await.unwrap();
    let reply = post_form(
        &mock,
        "/openai/files?api-version=2024-10-21",
        &[
            ("purpose", None, b"batch"),
            ("file", Some("a.jsonl"), b"{}"),
        ],
    )
    .await;
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    let reply = get(&mock, &format!("/openai/files/{id}?api-version=2024-10-21")).await;
    assert_eq!(reply.json()["filename"], "a.jsonl");
    let reply = post_json(
        &mock,
        "/openai/deployments/my-tts/audio/speech?api-version=2025-03-01-preview",
        &json!({"model": "tts", "input": "hi", "voice": "alloy"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "audio/mpeg");
}

fn batch_line(custom_id: &str, url: &str, content: &str) -> String {
    json!({"custom_id": custom_id, "method": "POST", "url": url,
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}})
    .to_string()
}

#[tokio::test]
async fn batches_run_at_once() {
    let mock = MockLlm::start().await.unwrap();
    let input = [
        batch_line("a", "/v1/chat/completions", "one two three"),
        batch_line("b", "/v1/chat/completions", "fail [mock:status=500]"),
        batch_line("c", "/v1/chat/completions", "four"),
    ]
    .join("\n")
        + "\n";
    let file = upload(&mock, "in.jsonl", "batch", input.as_bytes()).await;
    let create = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h", "metadata": {"k": "v"}});
    let batch = post_json(&mock, "/v1/batches", &create).await.json();
    let id = batch["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("batch_mock_"));
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["status"], "completed");
    assert_eq!(batch["endpoint"], "/v1/chat/completions");
    assert_eq!(batch["input_file_id"], file["id"]);
    assert_eq!(batch["completion_window"], "24h");
    assert_eq!(batch["metadata"], json!({"k": "v"}));
    assert_eq!(batch["model"], "gpt-4o-mini");
    assert_eq!(
        batch["request_counts"],
        json!({"total": 3, "completed": 2, "failed": 1})
    );
    assert!(batch["completed_at"].as_u64().is_some());
    assert_eq!(batch["usage"]["input_tokens"], 4);
    assert_eq!(batch["usage"]["output_tokens"], 6);

    let output = get(
        &mock,
        &format!(
            "/v1/files/{}/content",
            batch["output_file_id"].as_str().unwrap()
        ),
    )
    .await;
    let lines: Vec<Value> = std::str::from_utf8(&output.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["custom_id"], "a");
    assert_eq!(lines[1]["custom_id"], "c");
    assert_eq!(lines[0]["response"]["status_code"], 200);
    assert_eq!(lines[0]["error"], Value::Null);
    let answer = &lines[0]["response"]["body"];
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "gpt-4o-mini");
    assert_eq!(answer["usage"]["prompt_tokens"], 3);
    let errors = get(
        &mock,
        &format!(
            "/v1/files/{}/content",
            batch["error_file_id"].as_str().unwrap()
        ),
    )
    .await;
    let error: Value = serde_json::from_slice(errors.body.trim_ascii()).unwrap();
    assert_eq!(error["custom_id"], "b");
    assert_eq!(error["response"]["status_code"], 500);

    assert_eq!(get(&mock, &format!("/v1/batches/{id}")).await.json(), batch);
    let list = get(&mock, "/v1/batches").await.json();
    assert_eq!(list["data"][0]["id"], id.as_str());
    let cancelled = post_json(&mock, &format!("/v1/batches/{id}/cancel"), &json!({})).await;
    let cancelled = cancelled.json();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["cancelled_at"].as_u64().is_some());
    assert_eq!(cancelled["output_file_id"], batch["output_file_id"]);

    // An unknown input file, or a missing parameter.
    let mut bad = create.clone();
    bad["input_file_id"] = json!("file-nope");
    let reply = post_json(&mock, "/v1/batches", &bad).await;
    assert!(reply
        .assert_error(400, Some("input_file_id"))
        .contains("file-nope"));
    let reply = post_json(&mock, "/v1/batches", &json!({"input_file_id": "x"})).await;
    reply.assert_error(400, Some("endpoint"));
    let reply = get(&mock, "/v1/batches/batch_nope").await;
    reply.assert_error(404, Some("batch_id"));
}

#[tokio::test]
async fn batch_with_invalid_lines_fails() {
    let mock = MockLlm::start().await.unwrap();
    let input = format!(
        "{}\nnot json\n{}\n",
        batch_line("a", "/v1/chat/completions", "x"),
        batch_line("b", "/v1/embeddings", "y")
    );
    let file = upload(&mock, "in.jsonl", "batch", input.as_bytes()).await;
    let batch = post_json(
        &mock,
        "/v1/batches",
        &json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
    )
    .await
    .json();
    assert_eq!(batch["status"], "failed");
    assert_eq!(batch["output_file_id"], Value::Null);
    let errors = batch["errors"]["data"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["line"], 2);
    assert_eq!(errors[0]["code"], "invalid_json_line");
    assert_eq!(errors[1]["line"], 3);
    assert_eq!(errors[1]["code"], "mismatched_endpoint");

    // Embeddings batches answer with embeddings.
    let input = json!({"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
        "body": {"model": "text-embedding-3-small", "input": "hello world"}})
    .to_string();
    let file = upload(&mock, "emb.jsonl", "batch", input.as_bytes()).await;
    let batch = post_json(
        &mock,
        "/v1/batches",
        &json!({"input_file_id": file["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}),
    )
    .await
    .json();
    assert_eq!(batch["status"], "completed");
    let output = get(
        &mock,
        &format!(
            "/v1/files/{}/content",
            batch["output_file_id"].as_str().unwrap()
        ),
    )
    .await;
    let line: Value = serde_json::from_slice(output.body.trim_ascii()).unwrap();
    assert_eq!(line["response"]["body"]["object"], "list");
    assert_eq!(line["response"]["body"]["usage"]["prompt_tokens"], 2);
}

#[tokio::test]
async fn assistants_threads_and_messages() {
    let mock = MockLlm::start().await.unwrap();
    let beta = [
        ("content-type", "application/json"),
        ("openai-beta", "assistants=v2"),
    ];
    let body = json!({"model": "gpt-4o", "name": "Helper", "instructions": "Be brief."});
    let reply = call(
        &mock,
        Method::POST,
        "/v1/assistants",
        &beta,
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(
        mock.last_request().unwrap().header("OpenAI-Beta"),
        Some("assistants=v2")
    );
    let assistant = reply.json();
    let id = assistant["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("asst_mock_"));
    assert_eq!(assistant["object"], "assistant");
    assert_eq!(assistant["model"], "gpt-4o");
    assert_eq!(assistant["name"], "Helper");
    assert_eq!(assistant["instructions"], "Be brief.");
    assert_eq!(assistant["tools"], json!([]));
    assert_eq!(
        get(&mock, &format!("/v1/assistants/{id}")).await.json(),
        assistant
    );
    get(&mock, "/v1/assistants/asst_nope")
        .await
        .assert_error(404, None);
    post_json(&mock, "/v1/assistants", &json!({"name": "x"}))
        .await
        .assert_error(400, Some("model"));

    let thread = post_json(
        &mock,
        "/v1/threads",
        &json!({"messages": [{"role": "user", "content": "first"}]}),
    )
    .await
    .json();
    let thread_id = thread["id"].as_str().unwrap().to_owned();
    assert_eq!(thread["object"], "thread");
    let path = format!("/v1/threads/{thread_id}/messages");
    let message = post_json(
        &mock,
        &path,
        &json!({"role": "user", "content": [{"type": "text", "text": "second"}]}),
    )
    .await
    .json();
    assert_eq!(message["object"], "thread.message");
    assert_eq!(message["thread_id"], thread_id.as_str());
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": {"value": "second", "annotations": []}}])
    );
    let list = get(&mock, &path).await.json();
    let texts: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"][0]["text"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["second", "first"]);
    let list = get(&mock, &format!("{path}?order=asc&limit=1"))
        .await
        .json();
    assert_eq!(list["data"][0]["content"][0]["text"]["value"], "first");
    assert_eq!(list["has_more"], true);
    get(&mock, "/v1/threads/thread_nope/messages")
        .await
        .assert_error(404, None);
}

#[tokio::test]
async fn speech_streams_binary_frames() {
    let mock = MockLlm::start().await.unwrap();
    let reply = post_json(
        &mock,
        "/v1/audio/speech",
        &json!({"model": "gpt-4o-mini-tts", "input": "Hello there.", "voice": "alloy"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "audio/mpeg");
    assert!(reply.headers.get("content-length").is_none());
    assert!(reply.body.len() > 2048);
    assert!(reply.frames > 1, "{} frames", reply.frames);
    assert_eq!(&reply.body[..2], &[0xff, 0xfb]);
    let again = post_json(
        &mock,
        "/v1/audio/speech",
        &json!({"model": "gpt-4o-mini-tts", "input": "Hello there.", "voice": "alloy"}),
    )
    .await;
    assert_eq!(again.body, reply.body, "deterministic");

    let wav = post_json(
        &mock,
        "/v1/audio/speech",
        &json!({"model": "tts-1", "input": "hi", "voice": "nova", "response_format": "wav"}),
    )
    .await;
    assert_eq!(wav.content_type(), "audio/wav");
    assert_eq!(&wav.body[..4], b"RIFF");

    let sse = post_json(
        &mock,
        "/v1/audio/speech",
        &json!({"model": "gpt-4o-mini-tts", "input": "hi", "voice": "nova", "stream_format": "sse"}),
    )
    .await;
    assert_eq!(sse.content_type(), "text/event-stream");
    let text = std::str::from_utf8(&sse.body).unwrap();
    // Base64 of the first MP3 frame header, 0xff 0xfb 0x90 0xc4.
    assert!(text.starts_with("data: {\"type\":\"speech.audio.delta\",\"audio\":\"//uQxA"));
    assert!(text.contains("\"type\":\"speech.audio.done\""));

    post_json(&mock, "/v1/audio/speech", &json!({"voice": "alloy"}))
        .await
        .assert_error(400, Some("input"));
    post_json(
        &mock,
        "/v1/audio/speech",
        &json!({"input": "x", "voice": "alloy", "response_format": "ogg"}),
    )
    .await
    .assert_error(400, Some("response_format"));
}

#[tokio::test]
async fn transcriptions_and_translations() {
    let mock = MockLlm::start().await.unwrap();
    let audio = [0u8; 3000];
    let reply = post_form(
        &mock,
        "/v1/audio/transcriptions",
        &[
            ("file", Some("talk.mp3"), &audio),
            ("model", None, b"gpt-4o-transcribe"),
            ("prompt", None, b"names: Ada"),
        ],
    )
    .await;
    assert_eq!(
        reply.json(),
        json!({"text": "mock transcript of talk.mp3 (3000 bytes)", "usage": {
            "type": "tokens", "input_tokens": 4,
            "input_token_details": {"text_tokens": 2, "audio_tokens": 2},
            "output_tokens": 6, "total_tokens": 10}})
    );
    let reply = post_form(
        &mock,
        "/v1/audio/transcriptions",
        &[
            ("file", Some("a.wav"), b"xy"),
            ("model", None, b"whisper-1"),
            ("response_format", None, b"text"),
        ],
    )
    .await;
    assert!(reply.content_type().starts_with("text/plain"));
    assert_eq!(&reply.body[..], b"mock transcript of a.wav (2 bytes)\n");
    let reply = post_form(
        &mock,
        "/v1/audio/transcriptions",
        &[
            ("file", Some("a.wav"), b"xy"),
            ("model", None, b"whisper-1"),
            ("response_format", None, b"verbose_json"),
            ("language", None, b"fr"),
        ],
    )
    .await;
    let verbose = reply.json();
    assert_eq!(verbose["task"], "transcribe");
    assert_eq!(verbose["language"], "fr");
    assert_eq!(verbose["segments"][0]["text"], verbose["text"]);

    let reply = post_form(
        &mock,
        "/openai/deployments/whisper/audio/translations?api-version=2024-06-01",
        &[
            ("file", Some("fr.m4a"), b"abc"),
            ("model", None, b"whisper-1"),
        ],
    )
    .await;
    assert_eq!(reply.json()["text"], "mock transcript of fr.m4a (3 bytes)");

    let reply = post_form(
        &mock,
        "/v1/audio/transcriptions",
        &[("model", None, b"whisper-1")],
    )
    .await;
    assert!(reply.assert_error(400, Some("file")).contains("'file'"));
}

#[tokio::test]
async fn images_generate_and_edit() {
    let mock = MockLlm::start().await.unwrap();
    let reply = post_json(
        &mock,
        "/v1/images/generations",
        &json!({"model": "gpt-image-1", "prompt": "a red cat", "n": 2, "size": "1024x1024"}),
    )
    .await;
    let body = reply.json();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let b64 = data[0]["b64_json"].as_str().unwrap();
    assert!(b64.starts_with("iVBORw0KGgo"), "a PNG");
    assert!(body["created"].as_u64().is_some());
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 3, "input_tokens_details": {"text_tokens": 3, "image_tokens": 0},
            "output_tokens": 544, "total_tokens": 547})
    );
    let reply = post_json(
        &mock,
        "/v1/images/generations",
        &json!({"model": "dall-e-3", "prompt": "x", "response_format": "url"}),
    )
    .await;
    let url = reply.json()["data"][0]["url"].as_str().unwrap().to_owned();
    let path = url
        .split_once("/v1/")
        .map(|(_, p)| format!("/v1/{p}"))
        .unwrap();
    let png = get(&mock, &path).await;
    assert_eq!(png.content_type(), "image/png");
    assert_eq!(&png.body[..4], b"\x89PNG");
    post_json(&mock, "/v1/images/generations", &json!({"model": "x"}))
        .await
        .assert_error(400, Some("prompt"));

    let reply = post_form(
        &mock,
        "/v1/images/edits",
        &[
            ("image[]", Some("a.png"), &png.body),
            ("image[]", Some("b.png"), &png.body),
            ("mask", Some("m.png"), &png.body),
            ("prompt", None, b"make it blue"),
            ("model", None, b"gpt-image-1"),
        ],
    )
    .await;
    let body = reply.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert_eq!(body["usage"]["input_tokens_details"]["image_tokens"], 195);
    let reply = post_form(
        &mock,
        "/v1/images/edits",
        &[("image", Some("a.png"), &png.body), ("prompt", None, b"x")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = post_form(&mock, "/v1/images/edits", &[("prompt", None, b"x")]).await;
    assert!(reply.assert_error(400, Some("image")).contains("'image'"));
}

#[tokio::test]
async fn videos_lifecycle() {
    let mock = MockLlm::start().await.unwrap();
    let video = post_form(
        &mock,
        "/v1/videos",
        &[
            ("model", None, b"sora-2"),
            ("prompt", None, b"a sunrise"),
            ("seconds", None, b"8"),
            ("size", None, b"1280x720"),
        ],
    )
    .await
    .json();
    let id = video["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("video_mock_"));
    assert_eq!(video["object"], "video");
    assert_eq!(video["model"], "sora-2");
    assert_eq!(video["status"], "completed");
    assert_eq!(video["progress"], 100);
    assert_eq!(video["seconds"], "8");
    assert_eq!(video["size"], "1280x720");
    assert_eq!(get(&mock, &format!("/v1/videos/{id}")).await.json(), video);
    let content = get(&mock, &format!("/v1/videos/{id}/content")).await;
    assert_eq!(content.content_type(), "video/mp4");
    assert_eq!(&content.body[4..8], b"ftyp");
    let thumb = get(&mock, &format!("/v1/videos/{id}/content?variant=thumbnail")).await;
    assert_eq!(thumb.content_type(), "image/png");
    let list = get(&mock, "/v1/videos").await.json();
    assert_eq!(list["data"][0]["id"], id.as_str());
    let deleted = call(
        &mock,
        Method::DELETE,
        &format!("/v1/videos/{id}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(deleted.json()["deleted"], true);
    get(&mock, &format!("/v1/videos/{id}"))
        .await
        .assert_error(404, Some("video_id"));

    // JSON works too, and so does Kong's `videos/generations` name.
    let video = post_json(
        &mock,
        "/v1/videos/generations",
        &json!({"prompt": "waves", "seconds": 4}),
    )
    .await
    .json();
    assert_eq!(video["model"], "sora-2");
    assert_eq!(video["seconds"], "4");
    post_json(&mock, "/v1/videos", &json!({"model": "sora-2"}))
        .await
        .assert_error(400, Some("prompt"));
}

#[tokio::test]
async fn directives_apply_before_the_endpoint() {
    let mock = MockLlm::start().await.unwrap();
    let reply = call(
        &mock,
        Method::GET,
        "/v1/files",
        &[("x-mock", "status=503")],
        vec![],
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["error"]["type"], "server_error");
    let body = form(&[("file", Some("a"), b"x"), ("purpose", None, b"batch")]);
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let reply = call(
        &mock,
        Method::POST,
        "/v1/files",
        &[("content-type", &content_type), ("x-mock", "status=429")],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    // Nothing was stored.
    assert_eq!(get(&mock, "/v1/files").await.json()["data"], json!([]));
    // A marker in a JSON prompt works too.
    let reply = post_json(
        &mock,
        "/v1/images/generations",
        &json!({"prompt": "cat [mock:status=400]"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // Frames of speech can be spaced out.
    let started = std::time::Instant::now();
    let reply = call(
        &mock,
        Method::POST,
        "/v1/audio/speech",
        &[("x-mock", "chunk_delay_ms=20")],
        serde_json::to_vec(&json!({"input": "hi", "voice": "alloy"})).unwrap(),
    )
    .await;
    assert!(reply.frames >= 4);
    assert!(started.elapsed() >= std::time::Duration::from_millis(60));
}

//! OpenAI's other APIs behind Kong's route types (files, batches, assistants, audio,
//! images, videos): the client's method, body and path suffix reach the API's path on
//! OpenAI and Azure; answers pass as they are, with usage read where the API reports it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use support::{send, Harness};

const CONFIG: &str = r#"
_format_version: "3.0"
services:
  - name: apis
    host: unused.invalid
    routes:
      - name: files
        paths: ["/files"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/files
              auth: {header_name: Authorization, header_value: Bearer sk-up}
              model: {provider: openai, options: {upstream_url: "{MOCK}"}}
          - name: file-log
            config: {path: "{DIR}/apis.log"}
      - name: images
        paths: ["/img"]
        plugins:
          - name: ai-proxy
            config:
              route_type: image/v1/images/generations
              auth: {header_name: Authorization, header_value: Bearer sk-up}
              logging: {log_statistics: true}
              model: {provider: openai, name: gpt-image-1, options: {upstream_url: "{MOCK}"}}
          - name: file-log
            config: {path: "{DIR}/images.log"}
      - name: batches
        paths: ["/batches"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/batches
              auth: {header_name: Authorization, header_value: Bearer sk-up}
              logging: {log_statistics: true}
              model: {provider: openai, options: {upstream_url: "{MOCK}", input_cost: 1.25, output_cost: 5}}
          - name: file-log
            config: {path: "{DIR}/batches.log"}
      - name: az-videos
        paths: ["/az-videos"]
        plugins:
          - name: ai-proxy
            config:
              route_type: video/v1/videos/generations
              auth: {header_name: api-key, header_value: az-key}
              model:
                provider: azure
                options: {azure_instance: inst, azure_deployment_id: sora-2, upstream_url: "{MOCK}"}
      - name: hf-videos
        paths: ["/hf-videos"]
        plugins:
          - name: ai-proxy
            config:
              route_type: video/v1/videos/generations
              auth: {header_name: Authorization, header_value: Bearer hf-key}
              model: {provider: huggingface, name: Wan-AI/Wan2.2-T2V-A14B, options: {upstream_url: "{MOCK}"}}
      - name: az-batches
        paths: ["/az-batches"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/batches
              auth: {header_name: api-key, header_value: az-key}
              model:
                provider: azure
                options: {azure_instance: inst, azure_deployment_id: gpt-4o, azure_api_version: 2025-01-01-preview, upstream_url: "{MOCK}"}
      - name: az-transcribe
        paths: ["/az-transcribe"]
        plugins:
          - name: ai-proxy
            config:
              route_type: audio/v1/audio/transcriptions
              auth: {header_name: api-key, header_value: az-key}
              model:
                provider: azure
                options: {azure_instance: inst, azure_deployment_id: whisper, upstream_url: "{MOCK}"}
"#;

fn multipart(model: &str) -> (String, Vec<u8>) {
    let b = "tgboundary7";
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....WAVEfmt \r\n--{b}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n--{b}--\r\n"
    );
    (
        format!("multipart/form-data; boundary={b}"),
        body.into_bytes(),
    )
}

#[tokio::test]
async fn api_route_types_reach_the_provider_apis() {
    let h = Harness::start(CONFIG).await;
    // A file upload (multipart, as sent), then its content by id below the route.
    let b = "up9";
    let upload = format!("--{b}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n{{\"x\":1}}\n\r\n--{b}--\r\n");
    let ct = format!("multipart/form-data; boundary={b}");
    let r = send(
        "POST",
        &h.url("/files"),
        &[("content-type", &ct)],
        upload.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let seen = h.mock.last_request().unwrap();
    assert_eq!(seen.path, "/v1/files");
    assert_eq!(seen.body, upload.as_bytes(), "the body goes as sent");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-up"));
    assert!(seen
        .header("content-type")
        .unwrap()
        .starts_with("multipart/form-data; boundary=up9"));
    let r = send("GET", &h.url(&format!("/files/{id}/content")), &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), b"{\"x\":1}\n");
    assert_eq!(
        h.mock.last_request().unwrap().path,
        format!("/v1/files/{id}/content")
    );
    let r = send("DELETE", &h.url(&format!("/files/{id}")), &[], "").await;
    assert_eq!(r.json()["deleted"], true);

    // Methods the API has not, and paths that leave it, are refused before the upstream.
    let before = h.mock.requests().len();
    let r = send("PUT", &h.url("/files"), &[], "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST, DELETE"));
    let r = send("GET", &h.url("/files/a/../../admin"), &[], "").await;
    assert!(r.status == 400 || r.status == 404, "{}", r.status);
    assert_eq!(h.mock.requests().len(), before);

    // Image generation: the configured model is checked like chat's; usage is logged.
    let r = send(
        "POST",
        &h.url("/img"),
        &[("content-type", "application/json")],
        json!({"model": "dall-e-2", "prompt": "a cat"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r
        .text()
        .contains("cannot use own model - must be: gpt-image-1"));
    let r = send(
        "POST",
        &h.url("/img"),
        &[("content-type", "application/json")],
        json!({"prompt": "a cat", "n": 2}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    let log = h.wait_log("images.log", 2).await;
    let p = &log[1]["ai"]["proxy"];
    assert!(p["usage"]["total_tokens"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(p["meta"]["request_model"], "gpt-image-1");

    // Azure: batches on the resource, transcriptions on the deployment, api-version added.
    let r = send(
        "POST",
        &h.url("/az-batches/b1/cancel"),
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    let seen = h.mock.last_request().unwrap();
    assert_eq!(
        seen.path,
        "/openai/batches/b1/cancel?api-version=2025-01-01-preview"
    );
    assert_eq!(seen.header("api-key"), Some("az-key"));
    assert_eq!(r.status, 404, "the mock has no batch b1: {}", r.text());
    let (ct, body) = multipart("whisper-1");
    let r = send(
        "POST",
        &h.url("/az-transcribe"),
        &[("content-type", &ct)],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["text"].as_str().unwrap().contains("a.wav"));
    assert_eq!(
        h.mock.last_request().unwrap().path,
        "/openai/deployments/whisper/audio/transcriptions?api-version=2023-05-15"
    );
}

#[test]
fn api_route_types_are_refused_where_the_provider_has_no_such_api() {
    let yaml = "_format_version: \"3.0\"\nplugins: [{name: ai-proxy, config: {route_type: llm/v1/files, model: {provider: anthropic, name: c}}}]\n";
    let e = tollgate::gateway::load_str(yaml).err().unwrap().to_string();
    assert!(
        e.contains("route_type 'llm/v1/files' is not supported for provider 'anthropic'"),
        "{e}"
    );
    let yaml = "_format_version: \"3.0\"\nplugins: [{name: ai-proxy, config: {route_type: image/v1/images/generations, model: {provider: xai, name: grok-2-image}}}]\n";
    assert!(tollgate::gateway::load_str(yaml).is_ok());
    // Nova Reel writes its videos to the user's bucket: without one the route cannot work.
    let yaml = "_format_version: \"3.0\"\nplugins: [{name: ai-proxy, config: {route_type: video/v1/videos/generations, auth: {aws_access_key_id: A, aws_secret_access_key: B}, model: {provider: bedrock, name: amazon.nova-reel-v1:0, options: {bedrock: {aws_region: us-east-1}}}}}]\n";
    let e = tollgate::gateway::load_str(yaml).err().unwrap().to_string();
    assert!(
        e.contains("config.model.options.bedrock.video_output_s3_uri") && e.contains("required"),
        "{e}"
    );
}

/// Image generation on Gemini's image models is translated, as Kong translates it:
/// generateContent with image output, inline images back as b64_json.
#[tokio::test]
async fn gemini_image_generation_is_translated() {
    let yaml = r#"
_format_version: "3.0"
services:
  - name: s
    host: unused.invalid
    routes:
      - name: gem-img
        paths: ["/gem-img"]
        plugins:
          - name: ai-proxy
            config:
              route_type: image/v1/images/generations
              genai_category: image/generation
              auth: {header_name: x-goog-api-key, header_value: AIza-test}
              logging: {log_statistics: true}
              model: {provider: gemini, name: gemini-2.5-flash-image, options: {upstream_url: "{MOCK}"}}
          - name: file-log
            config: {path: "{DIR}/gem.log"}
"#;
    let h = Harness::start(yaml).await;
    let r = send(
        "POST",
        &h.url("/gem-img"),
        &[("content-type", "application/json")],
        json!({"prompt": "a red circle", "n": 2,
            "generationConfig": {"imageConfig": {"aspectRatio": "4:3"}}})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let data = b["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(
        data[0]["b64_json"].as_str().unwrap().starts_with("iVBOR"),
        "a PNG"
    );
    assert!(b["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let seen = h.mock.last_request().unwrap();
    assert_eq!(
        seen.path,
        "/v1beta/models/gemini-2.5-flash-image:generateContent"
    );
    let up = seen.json().unwrap();
    assert_eq!(up["contents"][0]["parts"][0]["text"], "a red circle");
    assert_eq!(
        up["generationConfig"]["responseModalities"],
        json!(["IMAGE"])
    );
    assert_eq!(up["generationConfig"]["imageConfig"]["aspectRatio"], "4:3");
    let log = h.wait_log("gem.log", 1).await;
    assert!(
        log[0]["ai"]["proxy"]["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            >= 1290
    );
    let r = send(
        "POST",
        &h.url("/gem-img"),
        &[("content-type", "application/json")],
        json!({"prompt": "x", "response_format": "url"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
}

/// A body fed from a channel: the test decides when each part is sent.
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// Multipart uploads are streamed: the upstream reads the first half while the client still
/// holds the second (a buffering gateway would wait for the whole body, and this would
/// time out); past the limit the upload is cut and the client gets a 413.
#[tokio::test]
async fn multipart_uploads_stream_through_and_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let (first_seen, first_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        let mut first_seen = Some(first_seen);
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the upstream connection closed early");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if text.contains("FIRST-HALF-END") {
                if let Some(tx) = first_seen.take() {
                    let _ = tx.send(());
                }
            }
            if text.contains("--bnd--") {
                break;
            }
        }
        let body = br#"{"id":"file-1","object":"file"}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        String::from_utf8_lossy(&got).into_owned()
    });
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: s
    host: unused.invalid
    routes:
      - name: files
        paths: ["/v1/files"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/files
              max_request_body_size: 1000000
              auth: {{header_name: Authorization, header_value: Bearer sk-up}}
              model: {{provider: openai, options: {{upstream_url: "http://127.0.0.1:{port}"}}}}
      - name: mock-files
        paths: ["/mock-files"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/files
              max_request_body_size: 1000000
              model: {{provider: openai, options: {{upstream_url: "{{MOCK}}"}}}}
"#
    );
    let h = Harness::start(&yaml).await;
    let first = b"--bnd\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n\r\nFIRST-HALF-END".to_vec();
    let second = b"\r\n--bnd\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--bnd--\r\n".to_vec();
    let total = first.len() + second.len();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let addr = h
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/v1/files")
        .header("host", "gw")
        .header("content-type", "multipart/form-data; boundary=bnd")
        .header("content-length", total)
        .body(ChannelBody(rx))
        .unwrap();
    let resp = tokio::spawn(async move { sender.send_request(req).await });
    tx.send(bytes::Bytes::from(first)).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), first_rx)
        .await
        .expect("the upstream saw the first half before the client sent the rest")
        .unwrap();
    tx.send(bytes::Bytes::from(second)).await.unwrap();
    let resp = resp.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let seen = server.await.unwrap();
    assert!(seen.starts_with("POST /v1/files HTTP/1.1\r\n"), "{seen}");
    assert!(
        seen.to_ascii_lowercase()
            .contains(&format!("content-length: {total}")),
        "{seen}"
    );
    assert!(seen.contains("authorization: Bearer sk-up"), "{seen}");

    // Over the limit: a declared length is refused at once, a chunked upload when it passes.
    let big = vec![b'x'; 1_100_000];
    let mut body =
        b"--bnd\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n".to_vec();
    body.extend_from_slice(&big);
    body.extend_from_slice(b"\r\n--bnd--\r\n");
    let r = send(
        "POST",
        &h.url("/v1/files"),
        &[("content-type", "multipart/form-data; boundary=bnd")],
        body,
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("request_too_large"), "{}", r.text());
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = http::Request::post("/mock-files")
        .header("host", "gw")
        .header("content-type", "multipart/form-data; boundary=bnd")
        .body(ChannelBody(rx))
        .unwrap();
    let resp = tokio::spawn(async move { sender.send_request(req).await });
    let chunk = bytes::Bytes::from(vec![b'y'; 100_000]);
    for _ in 0..12 {
        if tx.send(chunk.clone()).await.is_err() {
            break;
        }
    }
    drop(tx);
    let resp = resp.await.unwrap().unwrap();
    assert_eq!(resp.status(), 413, "a chunked upload past the limit");

    // A multipart body without its boundary cannot be split into parts: 400 at once.
    let r = send(
        "POST",
        &h.url("/mock-files"),
        &[("content-type", "multipart/form-data")],
        "--x\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("without a valid boundary"),
        "{}",
        r.text()
    );
}

/// Image generation on Bedrock's image models, translated through InvokeModel (signed).
#[tokio::test]
async fn bedrock_image_generation_is_translated() {
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: s
    host: unused.invalid
    routes:
      - name: br-img
        paths: ["/br-img"]
        plugins:
          - name: ai-proxy
            config:
              route_type: image/v1/images/generations
              auth: {{aws_access_key_id: AKIDMOCKLLM, aws_secret_access_key: "{}"}}
              model:
                provider: bedrock
                name: amazon.nova-canvas-v1:0
                options: {{bedrock: {{aws_region: us-east-1}}, upstream_url: "{{MOCK}}"}}
"#,
        mock_llm::BEDROCK_SECRET_ACCESS_KEY
    );
    let h = Harness::start(&yaml).await;
    let r = send(
        "POST",
        &h.url("/br-img"),
        &[("content-type", "application/json")],
        json!({"prompt": "a lighthouse", "n": 2, "size": "1024x1024"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let data = r.json()["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 2);
    assert!(data[0]["b64_json"].as_str().unwrap().starts_with("iVBOR"));
    let seen = h.mock.last_request().unwrap();
    assert_eq!(seen.path, "/model/amazon.nova-canvas-v1%3A0/invoke");
    assert!(seen
        .header("authorization")
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256"));
    let up = seen.json().unwrap();
    assert_eq!(up["taskType"], "TEXT_IMAGE");
    assert_eq!(up["imageGenerationConfig"]["numberOfImages"], 2);
    assert_eq!(up["imageGenerationConfig"]["width"], 1024);
}

/// A streamed audio upload: its form's `model` is read before sending (checked against the
/// configured model and logged), and when a target cannot be connected to, the untouched
/// upload fails over to the next one.
#[tokio::test]
async fn streamed_uploads_are_checked_and_fail_over_before_sending() {
    let (_dead, dead) = support::dead_port();
    let target = |url: &str| {
        format!(
            r#"
                - route_type: audio/v1/audio/transcriptions
                  auth: {{header_name: Authorization, header_value: Bearer sk-up}}
                  logging: {{log_statistics: true}}
                  model: {{provider: openai, name: whisper-1, options: {{upstream_url: "{url}"}}}}"#
        )
    };
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: s
    host: unused.invalid
    routes:
      - name: transcribe
        paths: ["/v1/audio/transcriptions"]
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer: {{algorithm: round-robin, retries: 2, failover_criteria: [error]}}
              targets:{}{}
          - name: file-log
            config: {{path: "{{DIR}}/up.log"}}
"#,
        target(&format!("http://127.0.0.1:{dead}")),
        target("{MOCK}"),
    );
    let h = Harness::start(&yaml).await;
    let url = h.url("/v1/audio/transcriptions");
    // The model comes after 40 KB of audio: still within what is read before sending.
    let b = "tgb";
    let form = |model: &str| {
        let mut body = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&vec![b'w'; 40_000]);
        body.extend_from_slice(
            format!("\r\n--{b}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n--{b}--\r\n")
                .as_bytes(),
        );
        body
    };
    let ct = format!("multipart/form-data; boundary={b}");
    let mut answered = 0;
    for _ in 0..2 {
        let r = send("POST", &url, &[("content-type", &ct)], form("whisper-1")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["text"].as_str().unwrap().contains("a.wav"));
        answered += 1;
    }
    let log = h.wait_log("up.log", answered).await;
    // Round robin sends one of the two to the dead target first: it fails over.
    let failed_over = log
        .iter()
        .find(|l| l["ai"]["proxy"]["tried_targets"].as_array().map(Vec::len) == Some(2))
        .expect("one request tried the dead target first");
    assert_eq!(
        failed_over["ai"]["proxy"]["meta"]["request_model"], "whisper-1",
        "{failed_over}"
    );
    assert_eq!(failed_over["response"]["status"], 200);

    let r = send(
        "POST",
        &url,
        &[("content-type", &ct)],
        form("gpt-4o-transcribe"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("cannot use own model - must be: whisper-1"),
        "{}",
        r.text()
    );
}

/// A batch's usage (and cost) is recorded once, when the provider first reports it
/// completed; the retrieves that repeat it add nothing.
#[tokio::test]
async fn a_completed_batch_is_counted_once() {
    let h = Harness::start(CONFIG).await;
    let b = "bt1";
    let line = json!({"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}});
    let upload = format!("--{b}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n{line}\n\r\n--{b}--\r\n");
    let ct = format!("multipart/form-data; boundary={b}");
    let r = send("POST", &h.url("/files"), &[("content-type", &ct)], upload).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let file = r.json()["id"].as_str().unwrap().to_string();
    let create = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let r = send(
        "POST",
        &h.url("/batches"),
        &[("content-type", "application/json")],
        create.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let batch = r.json();
    assert_eq!(batch["status"], "completed", "{batch}");
    let reported = batch["usage"]["input_tokens"].as_u64().unwrap();
    assert!(reported > 0, "{batch}");
    let id = batch["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let r = send("GET", &h.url(&format!("/batches/{id}")), &[], "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json()["usage"],
            batch["usage"],
            "the answer passes as it is"
        );
    }
    let log = h.wait_log("batches.log", 3).await;
    let usage = |i: usize| &log[i]["ai"]["proxy"]["usage"];
    assert_eq!(
        usage(0)["prompt_tokens"].as_u64(),
        Some(reported),
        "{}",
        log[0]
    );
    assert_eq!(
        usage(0)["completion_tokens"],
        batch["usage"]["output_tokens"],
        "{}",
        log[0]
    );
    assert!(usage(0)["cost"].as_f64().unwrap() > 0.0, "{}", log[0]);
    for retrieved in &log[1..3] {
        let total = retrieved["ai"]["proxy"]["usage"]["total_tokens"].as_u64();
        assert!(
            total.unwrap_or(0) == 0,
            "a retrieve repeats the usage already counted: {retrieved}"
        );
    }
}

/// Videos on Azure (Sora 2 on Azure's v1 API) and on Hugging Face's router: OpenAI's Videos
/// API, the route's credentials, the provider's path.
#[tokio::test]
async fn videos_reach_azure_and_hugging_face() {
    let h = Harness::start(CONFIG).await;
    let create = json!({"model": "sora-2", "prompt": "a lighthouse at dawn", "seconds": "4"});
    let r = send(
        "POST",
        &h.url("/az-videos"),
        &[("content-type", "application/json")],
        create.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "video");
    let id = r.json()["id"].as_str().unwrap().to_string();
    let seen = h.mock.last_request().unwrap();
    assert_eq!(seen.path, "/openai/v1/videos");
    assert_eq!(seen.header("api-key"), Some("az-key"));
    let r = send("GET", &h.url(&format!("/az-videos/{id}/content")), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.mock.last_request().unwrap().path,
        format!("/openai/v1/videos/{id}/content")
    );

    let create = json!({"model": "Wan-AI/Wan2.2-T2V-A14B", "prompt": "waves"});
    let r = send(
        "POST",
        &h.url("/hf-videos"),
        &[("content-type", "application/json")],
        create.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = h.mock.last_request().unwrap();
    assert_eq!(seen.path, "/v1/videos");
    assert_eq!(seen.header("authorization"), Some("Bearer hf-key"));
}

/// Veo (Gemini API and Vertex AI) and Nova Reel (Bedrock) run videos as jobs: the OpenAI
/// client creates a video, polls it and downloads it; the gateway translates each call
/// and fetches the finished video from where the provider put it.
#[tokio::test]
async fn videos_on_gemini_vertex_and_bedrock_are_translated_jobs() {
    let pem = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gcp/test-only-rsa-key.pem"),
    )
    .unwrap();
    let sa = json!({"type": "service_account", "project_id": "tg", "private_key_id": "test-only",
        "private_key": pem, "client_email": "gw@tg.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "{MOCK}/token"})
    .to_string();
    let yaml = format!(
        r#"
_format_version: "3.0"
services:
  - name: s
    host: unused.invalid
    routes:
      - name: gem
        paths: ["/gem/videos"]
        plugins:
          - name: ai-proxy
            config:
              route_type: video/v1/videos/generations
              auth: {{header_name: x-goog-api-key, header_value: AIza-test}}
              logging: {{log_statistics: true}}
              model: {{provider: gemini, name: veo-3.1-generate-preview, options: {{upstream_url: "{{MOCK}}"}}}}
          - name: file-log
            config: {{path: "{{DIR}}/gem.log"}}
      - name: vx
        paths: ["/vx/videos"]
        plugins:
          - name: ai-proxy
            config:
              route_type: video/v1/videos/generations
              auth: {{gcp_use_service_account: true, gcp_service_account_json: '{sa}'}}
              model:
                provider: gemini
                name: veo-3.1-generate-001
                options:
                  upstream_url: "{{MOCK}}"
                  gemini: {{api_endpoint: us-central1-aiplatform.googleapis.com, project_id: tg, location_id: us-central1}}
      - name: br
        paths: ["/br/videos"]
        plugins:
          - name: ai-proxy
            config:
              route_type: video/v1/videos/generations
              auth: {{aws_access_key_id: AKIDMOCKLLM, aws_secret_access_key: "{secret}"}}
              model:
                provider: bedrock
                name: amazon.nova-reel-v1:0
                options: {{upstream_url: "{{MOCK}}", bedrock: {{aws_region: us-east-1, video_output_s3_uri: "s3://videos-bkt/out"}}}}
"#,
        secret = mock_llm::BEDROCK_SECRET_ACCESS_KEY
    );
    let h = Harness::start(&yaml).await;
    let post = |path: &str, body: serde_json::Value| {
        let url = h.url(path);
        async move {
            send(
                "POST",
                &url,
                &[("content-type", "application/json")],
                body.to_string(),
            )
            .await
        }
    };
    let get = |path: String| {
        let url = h.url(&path);
        async move { send("GET", &url, &[], "").await }
    };
    let mp4 = |b: &[u8]| b.len() > 24 && &b[4..12] == b"ftypmp42";

    // Gemini API: predictLongRunning, the operation, then the file download.
    let r = post(
        "/gem/videos",
        json!({"prompt": "a fox in the snow", "seconds": "8", "size": "1280x720"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["object"].as_str(), v["status"].as_str()),
        (Some("video"), Some("queued")),
        "{v}"
    );
    assert_eq!(
        (v["seconds"].as_str(), v["size"].as_str()),
        (Some("8"), Some("1280x720"))
    );
    assert_eq!(v["model"], "veo-3.1-generate-preview");
    let id = v["id"].as_str().unwrap().to_string();
    let seen = h.mock.last_request().unwrap();
    assert_eq!(
        seen.path,
        "/v1beta/models/veo-3.1-generate-preview:predictLongRunning"
    );
    let sent = seen.json().unwrap();
    assert_eq!(sent["parameters"]["durationSeconds"], 8);
    assert_eq!(sent["parameters"]["aspectRatio"], "16:9");
    let r = get(format!("/gem/videos/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["status"].as_str(), r.json()["progress"].as_u64()),
        (Some("completed"), Some(100))
    );
    assert_eq!(r.json()["id"], id.as_str());
    let r = get(format!("/gem/videos/{id}/content?variant=video")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("video/mp4"));
    assert!(mp4(&r.body), "an MP4");
    let seen = h.mock.last_request().unwrap();
    assert!(seen.path.contains(":download"), "{}", seen.path);
    assert_eq!(seen.header("x-goog-api-key"), Some("AIza-test"));
    // A job that fails, one still running, an id the gateway never gave, an operation the
    // job APIs do not have.
    let failed = post("/gem/videos", json!({"prompt": "[mock:failed] boom"}))
        .await
        .json();
    let r = get(format!("/gem/videos/{}", failed["id"].as_str().unwrap())).await;
    assert_eq!(r.json()["status"], "failed", "{}", r.text());
    assert_eq!(r.json()["error"]["message"], "mock video generation failed");
    let running = post("/gem/videos", json!({"prompt": "[mock:hang] slow"}))
        .await
        .json();
    let running = running["id"].as_str().unwrap().to_string();
    assert_eq!(
        get(format!("/gem/videos/{running}")).await.json()["status"],
        "in_progress"
    );
    let r = get(format!("/gem/videos/{running}/content")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("is not ready"), "{}", r.text());
    let r = get("/gem/videos/video_nope".into()).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = send("DELETE", &h.url(&format!("/gem/videos/{id}")), &[], "").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("can be created"), "{}", r.text());
    let log = h.wait_log("gem.log", 8).await;
    assert_eq!(
        log[0]["ai"]["proxy"]["meta"]["request_model"], "veo-3.1-generate-preview",
        "{}",
        log[0]
    );

    // OpenAI's SDK sends the create as a form: its fields are read as the JSON body.
    let b = "vform";
    let form = format!("--{b}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na form fox\r\n--{b}\r\nContent-Disposition: form-data; name=\"seconds\"\r\n\r\n4\r\n--{b}--\r\n");
    let ct = format!("multipart/form-data; boundary={b}");
    let r = send(
        "POST",
        &h.url("/gem/videos"),
        &[("content-type", &ct)],
        form,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["seconds"], "4");
    let sent = h.mock.last_request().unwrap().json().unwrap();
    assert_eq!(sent["instances"][0]["prompt"], "a form fox");
    assert_eq!(sent["parameters"]["durationSeconds"], 4);
    let form = format!("--{b}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n--{b}\r\nContent-Disposition: form-data; name=\"input_reference\"; filename=\"a.png\"\r\n\r\nPNG\r\n--{b}--\r\n");
    let r = send(
        "POST",
        &h.url("/gem/videos"),
        &[("content-type", &ct)],
        form,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("input_reference"), "{}", r.text());

    // Vertex AI: the operation is read with fetchPredictOperation, the video comes inline.
    let r = post(
        "/vx/videos",
        json!({"prompt": "waves at night", "size": "720x1280"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = get(format!("/vx/videos/{id}/content")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(mp4(&r.body), "an MP4");
    let seen = h.mock.last_request().unwrap();
    assert!(
        seen.path
            .ends_with("/models/veo-3.1-generate-001:fetchPredictOperation"),
        "{}",
        seen.path
    );
    assert_eq!(seen.header("authorization"), Some("Bearer ya29.mock-1"));

    // Bedrock: StartAsyncInvoke, GetAsyncInvoke, then the S3 object, signed for S3.
    let r = post(
        "/br/videos",
        json!({"prompt": "a red square", "extra_body": {"fps": 24, "seed": 7}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let job = h.mock.video_jobs().pop().unwrap();
    assert_eq!(job.model, "amazon.nova-reel-v1:0");
    assert_eq!(
        job.request["modelInput"]["videoGenerationConfig"]["seed"],
        7
    );
    assert_eq!(
        job.request["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"],
        "s3://videos-bkt/out"
    );
    let r = get(format!("/br/videos/{id}")).await;
    assert_eq!(r.json()["status"], "completed", "{}", r.text());
    assert_eq!(r.json()["model"], "amazon.nova-reel-v1:0");
    let r = get(format!("/br/videos/{id}/content")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(mp4(&r.body), "an MP4");
    let seen = h.mock.last_request().unwrap();
    assert!(
        seen.path.starts_with("/videos-bkt/out/") && seen.path.ends_with("/output.mp4"),
        "{}",
        seen.path
    );
    assert!(seen
        .header("authorization")
        .unwrap()
        .contains("/s3/aws4_request"));
    // A video of one provider is not looked for at another.
    let gem_id = failed["id"].as_str().unwrap();
    let r = get(format!("/br/videos/{gem_id}")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("created on gemini"), "{}", r.text());
}

//! Upstream answers in a content coding: gzip (and deflate) are decoded wherever the gateway
//! reads the answer (usage, translation), buffered or streamed; where it reads nothing
//! (`preserve`), the bytes and their `Content-Encoding` pass untouched.

use serde_json::{json, Value};

use crate::common::{chunks, routes};
use crate::support::{post_json, Harness};

fn yaml() -> String {
    routes(
        "{header_name: x-goog-api-key, header_value: AIza-test}",
        &[
            (
                "oa",
                "llm/v1/chat",
                "{provider: openai, name: gpt-4o, options: {upstream_url: \"{MOCK}\"}}",
            ),
            (
                "gem",
                "llm/v1/chat",
                "{provider: gemini, name: gemini-2.5-flash, options: {upstream_url: \"{MOCK}\"}}",
            ),
            (
                "keep",
                "preserve",
                "{provider: openai, options: {upstream_url: \"{MOCK}/v1/chat/completions\"}}",
            ),
        ],
    )
}

#[tokio::test]
async fn gzip_answers_are_decoded_where_the_gateway_reads_them() {
    let h = Harness::start(&yaml()).await;
    let ask = |stream: bool| json!({"stream": stream, "messages": [{"role": "user", "content": "Say hello [mock:gzip]"}]});
    for path in ["oa", "gem"] {
        let r = post_json(&h.url(&format!("/{path}")), &ask(false)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-encoding"), None, "{path}");
        let b = r.json();
        assert_eq!(
            b["choices"][0]["message"]["content"], "Hello from mock-llm.",
            "{path}"
        );
        assert_eq!(b["usage"]["completion_tokens"], 3, "{path}");

        let r = post_json(&h.url(&format!("/{path}")), &ask(true)).await;
        assert_eq!(r.header("content-encoding"), None, "{path}");
        let text: String = chunks(&r)
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello from mock-llm.", "{path}");
        let log = h.wait_log(&format!("{path}.log"), 2).await;
        for rec in &log {
            assert_eq!(
                rec["ai"]["proxy"]["usage"]["completion_tokens"], 3,
                "{path}: {rec}"
            );
        }
    }
    // Nothing read: the client gets the upstream's gzip bytes as they came.
    let r = post_json(&h.url("/keep"), &ask(false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(&r.body[..2], &[0x1f, 0x8b], "still gzip");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut plain).unwrap();
    let v: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from mock-llm."
    );
}

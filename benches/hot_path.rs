//! Micro benchmarks of the per-request work: route matching, body parse/patch, SSE
//! observation and target picking. Run with `cargo bench --bench hot_path`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use divan::{black_box, Bencher};
use std::time::Duration;

use tollgate::balancer::health::Breaker;
use tollgate::balancer::{Balancer, PickCtx, Settings};
use tollgate::config::plugins::Algorithm;
use tollgate::config::plugins::{ModelOptions, RouteType};
use tollgate::gateway::router::{RequestView, RouteSpec, Router};
use tollgate::llm::body::BodyView;
use tollgate::llm::openai::{self, Patch};
use tollgate::llm::stream::{Dialect, SseObserver};
use tollgate::llm::usage::Usage;

fn main() {
    divan::main();
}

/// 1 route, or 1,000 routes with the measured one matched last in priority order.
fn router(n: usize) -> Router {
    let mut specs: Vec<RouteSpec> = (0..n.saturating_sub(1))
        .map(|i| RouteSpec {
            paths: vec![if i % 2 == 0 {
                format!("/tenant-{i}/v1/chat/completions/long/enough/to/win")
            } else {
                format!("~/r{i}/(?<model>[^/]+)/chat$")
            }],
            ..Default::default()
        })
        .collect();
    specs.push(RouteSpec {
        paths: vec!["/v1/chat/completions".into()],
        ..Default::default()
    });
    Router::new(&specs).unwrap()
}

#[divan::bench(args = [1, 1000])]
fn route_match(bencher: Bencher, n: usize) {
    let r = router(n);
    let headers = http::HeaderMap::new();
    bencher.bench(|| {
        let m = r.find(&RequestView {
            method: "POST",
            host: "gateway.local",
            path: black_box("/v1/chat/completions"),
            headers: &headers,
        });
        assert!(m.is_some());
        m
    });
}

fn chat_body() -> Vec<u8> {
    format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"You are a helpful assistant. Answer briefly and precisely."}},{{"role":"user","content":"{}"}}],"temperature":0.2,"stream":true}}"#,
        "lorem ipsum dolor sit amet ".repeat(30)
    )
    .into_bytes()
}

#[divan::bench]
fn body_parse_unchanged(bencher: Bencher) {
    let body = chat_body();
    bencher.bench(|| {
        let v = BodyView::parse(black_box(&body)).unwrap();
        let patch = Patch {
            model: Some("gpt-4o-mini"),
            options: None,
            force_stream: false,
            add_include_usage: false,
            body_param: None,
            drop_stream_options: false,
        };
        openai::patch_request(RouteType::Chat, &v, &patch)
    });
}

#[divan::bench]
fn body_parse_and_patch(bencher: Bencher) {
    let body = chat_body();
    let options = ModelOptions {
        max_tokens: Some(512),
        ..Default::default()
    };
    bencher.bench(|| {
        let v = BodyView::parse(black_box(&body)).unwrap();
        let patch = Patch {
            model: Some("gpt-4o"),
            options: Some(&options),
            force_stream: false,
            add_include_usage: true,
            body_param: None,
            drop_stream_options: false,
        };
        openai::patch_request(RouteType::Chat, &v, &patch)
    });
}

fn chat_stream(chunks: usize) -> Vec<Bytes> {
    let mut events: Vec<Bytes> = (0..chunks)
        .map(|i| {
            Bytes::from(format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
            ))
        })
        .collect();
    events.push(Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":20,\"total_tokens\":140}}\n\ndata: [DONE]\n\n",
    ));
    events
}

#[divan::bench(args = [false, true])]
fn sse_observe_21_events(bencher: Bencher, strip: bool) {
    let events = chat_stream(20);
    bencher.bench(|| {
        let mut o = SseObserver::new(Dialect::ChatLike, strip);
        for e in &events {
            black_box(o.on_chunk(e.clone()));
        }
        assert!(o.usage.is_some());
        o.finish()
    });
}

/// One `pick` per algorithm over 16 targets, with learned state in place (the target:
/// well under a microsecond; semantic's pick is round-robin among its candidates).
#[divan::bench(args = ["round-robin", "consistent-hashing", "least-connections", "lowest-latency", "lowest-usage", "priority", "semantic"])]
fn balancer_pick_16(bencher: Bencher, algorithm: &str) {
    let algorithm: Algorithm =
        serde_json::from_value(serde_json::Value::String(algorithm.into())).unwrap_or_default();
    let weights: Vec<u32> = (0..16).map(|i| 100 + (i % 4) * 50).collect();
    let mut s = Settings::round_robin(weights);
    s.algorithm = algorithm;
    s.breaker = Breaker {
        max_fails: 3,
        fail_timeout: Duration::from_secs(10),
    };
    let b = Balancer::new(s);
    let u = Usage {
        prompt_tokens: 100,
        completion_tokens: 50,
        total_tokens: 150,
        ..Usage::default()
    };
    for i in 0..16 {
        b.begin(i);
        b.success(i, Duration::from_millis(10 + i as u64), Some(&u));
    }
    let tried = [3usize];
    let candidates = [1usize, 5, 9];
    let ctx = PickCtx {
        hash_key: Some(b"user-1234"),
        exclude: &tried,
        candidates: (algorithm == Algorithm::Semantic).then_some(&candidates[..]),
    };
    bencher.bench(|| b.pick(black_box(&ctx)));
}

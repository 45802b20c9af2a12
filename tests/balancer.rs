//! ai-proxy-advanced's balancer through real HTTP: several mock-llm instances (one slow,
//! one failing, one that dies mid-test) behind one route; traffic goes where the algorithm
//! says and no client request fails while a healthy target remains.
//!
//! Per-target behaviour comes from each target's own `auth` header: mock-llm reads an
//! `x-mock` header as fault directives (`delay_ms=…`, `status=…`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use mock_llm::MockLlm;
use serde_json::{json, Value};
use support::{post_json, send, Harness};

/// One target of `provider: openai` at `url`, with `weight` and an `x-mock` header.
fn target(url: &str, weight: u32, x_mock: &str, extra_model: &str) -> String {
    format!(
        r#"
                - route_type: llm/v1/chat
                  weight: {weight}
                  auth: {{header_name: x-mock, header_value: "{x_mock}"}}
                  logging: {{log_statistics: true}}
                  model:
                    provider: openai
                    {extra_model}
                    options: {{upstream_url: "{url}"}}"#
    )
}

/// A route `/lb` with ai-proxy-advanced over `targets` and `balancer` settings.
fn config(balancer: &str, targets: &[String]) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: unused.invalid
    routes:
      - name: lb
        paths: ["/lb"]
        plugins:
          - name: ai-proxy-advanced
            config:
              model_name_header: true
              balancer: {balancer}
              targets:{}
          - name: file-log
            config: {{path: "{{DIR}}/lb.log"}}
"#,
        targets.concat()
    )
}

fn chat(text: &str) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": text}]})
}

async fn ask(h: &Harness, text: &str) -> support::Reply {
    post_json(&h.url("/lb"), &chat(text)).await
}

#[tokio::test]
async fn round_robin_shares_follow_weights() {
    let b = MockLlm::start().await.unwrap();
    let yaml = config(
        "{algorithm: round-robin}",
        &[
            target("{MOCK}", 300, "delay_ms=0", ""),
            target(&b.url(), 100, "delay_ms=0", ""),
        ],
    );
    let h = Harness::start(&yaml).await;
    for i in 0..40 {
        assert_eq!(ask(&h, &format!("q{i}")).await.status, 200);
    }
    assert_eq!(h.mock.requests().len(), 30);
    assert_eq!(b.requests().len(), 10);
}

#[tokio::test]
async fn consistent_hashing_is_sticky_per_header_value() {
    let b = MockLlm::start().await.unwrap();
    let c = MockLlm::start().await.unwrap();
    let yaml = config(
        "{algorithm: consistent-hashing, hash_on_header: X-User}",
        &[
            target("{MOCK}", 100, "delay_ms=0", ""),
            target(&b.url(), 100, "delay_ms=0", ""),
            target(&c.url(), 100, "delay_ms=0", ""),
        ],
    );
    let h = Harness::start(&yaml).await;
    let counts = |h: &Harness| {
        [
            h.mock.requests().len(),
            b.requests().len(),
            c.requests().len(),
        ]
    };
    let body = chat("hi").to_string();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let before = counts(&h);
        for _ in 0..5 {
            let r = send(
                "POST",
                &h.url("/lb"),
                &[("content-type", "application/json"), ("x-user", user)],
                body.clone(),
            )
            .await;
            assert_eq!(r.status, 200);
        }
        let after = counts(&h);
        let moved: Vec<usize> = (0..3).map(|i| after[i] - before[i]).collect();
        assert!(
            moved.contains(&5),
            "{user}: all five on one target: {moved:?}"
        );
    }
    // Without the header: round-robin (documented fallback).
    let before = counts(&h);
    for _ in 0..9 {
        assert_eq!(ask(&h, "no header").await.status, 200);
    }
    let after = counts(&h);
    assert_eq!(
        (0..3).map(|i| after[i] - before[i]).collect::<Vec<_>>(),
        vec![3, 3, 3]
    );
}

#[tokio::test]
async fn lowest_latency_moves_traffic_to_the_fast_target_but_keeps_probing() {
    let fast = MockLlm::start().await.unwrap();
    let yaml = config(
        "{algorithm: lowest-latency, latency_strategy: e2e}",
        &[
            target("{MOCK}", 100, "delay_ms=60", ""),
            target(&fast.url(), 100, "delay_ms=0", ""),
        ],
    );
    let h = Harness::start(&yaml).await;
    for i in 0..60 {
        assert_eq!(ask(&h, &format!("q{i}")).await.status, 200);
    }
    let slow_n = h.mock.requests().len();
    let fast_n = fast.requests().len();
    assert!(fast_n >= 50, "fast {fast_n}, slow {slow_n}");
    assert!(slow_n >= 2, "the slow target is still probed: {slow_n}");
}

#[tokio::test]
async fn lowest_usage_spreads_tokens() {
    let b = MockLlm::start().await.unwrap();
    let yaml = config(
        "{algorithm: lowest-usage, tokens_count_strategy: total-tokens}",
        &[
            target("{MOCK}", 100, "delay_ms=0", ""),
            target(&b.url(), 100, "delay_ms=0", ""),
        ],
    );
    let h = Harness::start(&yaml).await;
    // A long prompt lands on one target; the next few go to the other until it catches up.
    let long = "word ".repeat(400);
    assert_eq!(ask(&h, &long).await.status, 200);
    let first_on_a = h.mock.requests().len() == 1;
    for i in 0..5 {
        assert_eq!(ask(&h, &format!("short {i}")).await.status, 200);
    }
    let (a, bn) = (h.mock.requests().len(), b.requests().len());
    if first_on_a {
        assert_eq!((a, bn), (1, 5));
    } else {
        assert_eq!((a, bn), (5, 1));
    }
}

#[tokio::test]
async fn failover_and_circuit_breaker_keep_clients_served() {
    let good = MockLlm::start().await.unwrap();
    let yaml = config(
        "{algorithm: round-robin, retries: 3, max_fails: 2, fail_timeout: 60000, failover_criteria: [error, timeout, http_500, non_idempotent]}",
        &[
            target("{MOCK}", 100, "status=500", ""),
            target(&good.url(), 100, "delay_ms=0", ""),
        ],
    );
    let h = Harness::start(&yaml).await;
    for i in 0..20 {
        let r = ask(&h, &format!("q{i}")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    // Two failures open the breaker: the failing target is not tried again.
    assert_eq!(h.mock.requests().len(), 2);
    assert_eq!(good.requests().len(), 20);
    let log = h.wait_log("lb.log", 20).await;
    let tried = &log[0]["ai"]["proxy"]["tried_targets"];
    let first = log
        .iter()
        .find(|l| l["ai"]["proxy"]["tried_targets"].as_array().map(Vec::len) == Some(2))
        .unwrap_or_else(|| panic!("a failed-over request is logged: {tried}"));
    let t = first["ai"]["proxy"]["tried_targets"].as_array().unwrap();
    assert_eq!(t[0]["outcome"], "http_500", "{t:?}");
    assert_eq!(t[1]["outcome"], "success", "{t:?}");
}

#[tokio::test]
async fn a_target_dying_mid_test_fails_no_request() {
    let dying = MockLlm::start().await.unwrap();
    let healthy = MockLlm::start().await.unwrap();
    let yaml = config(
        "{algorithm: least-connections, retries: 2, max_fails: 1, fail_timeout: 60000}",
        &[
            target(&dying.url(), 100, "delay_ms=0", ""),
            target(&healthy.url(), 100, "delay_ms=0", ""),
        ],
    );
    let h = Harness::start(&yaml).await;
    for i in 0..10 {
        assert_eq!(ask(&h, &format!("before {i}")).await.status, 200);
    }
    assert!(dying.requests().len() >= 3, "both served before");
    drop(dying);
    for i in 0..20 {
        let r = ask(&h, &format!("after {i}")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert!(healthy.requests().len() >= 25);
}

#[tokio::test]
async fn priority_falls_to_the_next_group_only_when_the_first_is_down() {
    let primary = MockLlm::start().await.unwrap();
    let backup = MockLlm::start().await.unwrap();
    let yaml = config(
        "{algorithm: priority, retries: 2, max_fails: 1, fail_timeout: 60000}",
        &[
            target(&primary.url(), 10, "delay_ms=0", ""),
            target(&backup.url(), 5, "delay_ms=0", ""),
        ],
    );
    let h = Harness::start(&yaml).await;
    for i in 0..10 {
        assert_eq!(ask(&h, &format!("q{i}")).await.status, 200);
    }
    assert_eq!((primary.requests().len(), backup.requests().len()), (10, 0));
    drop(primary);
    for i in 0..10 {
        assert_eq!(ask(&h, &format!("r{i}")).await.status, 200);
    }
    assert_eq!(backup.requests().len(), 10);
}

#[tokio::test]
async fn every_target_down_is_a_500() {
    let yaml = config(
        "{algorithm: round-robin, retries: 1, max_fails: 1, fail_timeout: 60000, failover_criteria: [error, http_503, non_idempotent]}",
        &[
            target("{MOCK}", 100, "status=503", ""),
            target("http://127.0.0.1:9", 100, "delay_ms=0", ""),
        ],
    );
    let h = Harness::start(&yaml).await;
    // The first request tries both (a 503, a refused connection) and gets the last
    // attempt's error; both targets are then down.
    let r = ask(&h, "one").await;
    assert!(matches!(r.status, 502 | 503), "{}", r.text());
    let r = ask(&h, "two").await;
    assert_eq!(r.status, 500, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], "all_targets_unhealthy");
}

#[tokio::test]
async fn model_alias_picks_its_targets() {
    let smart = MockLlm::start().await.unwrap();
    let yaml = config(
        "{algorithm: round-robin}",
        &[
            target(
                "{MOCK}",
                100,
                "delay_ms=0",
                "name: small-model\n                    model_alias: fast",
            ),
            target(
                &smart.url(),
                100,
                "delay_ms=0",
                "name: big-model\n                    model_alias: smart",
            ),
        ],
    );
    let h = Harness::start(&yaml).await;
    for _ in 0..4 {
        let r = post_json(
            &h.url("/lb"),
            &json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-kong-llm-model"), Some("openai/big-model"));
    }
    assert_eq!(smart.requests().len(), 4);
    assert_eq!(smart.requests()[0].json().unwrap()["model"], "big-model");
    // No alias matched: the balancer over all targets (a configured name then refuses a
    // different client model, as in Kong).
    let r = post_json(
        &h.url("/lb"),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn acls_limit_which_targets_a_request_may_use() {
    let premium = MockLlm::start().await.unwrap();
    let yaml = config(
        "{algorithm: round-robin}",
        &[
            target("{MOCK}", 100, "delay_ms=0", "name: basic"),
            target(&premium.url(), 100, "delay_ms=0", "name: premium"),
        ],
    )
    .replace(
        "              model_name_header: true\n",
        "              model_name_header: true\n              acls:\n                deny:\n                  - match: [{type: header, key: x-tier, values: [free]}, {type: model, values: [premium]}]\n                  - match: [{type: path, values: [\"/lb/blocked*\"]}]\n",
    );
    let h = Harness::start(&yaml).await;
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..6 {
        let r = send(
            "POST",
            &h.url("/lb"),
            &[("content-type", "application/json"), ("x-tier", "free")],
            body.to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        premium.requests().len(),
        0,
        "free tier never reaches 'premium'"
    );
    assert_eq!(h.mock.requests().len(), 6);
    // Without the header both share the traffic.
    for _ in 0..4 {
        assert_eq!(post_json(&h.url("/lb"), &body).await.status, 200);
    }
    assert_eq!(premium.requests().len(), 2);
    // A path every target is denied on: Kong's ACL answer.
    let r = post_json(&h.url("/lb/blocked"), &body).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        r.json()["error"]["message"],
        "You cannot consume this service"
    );
}

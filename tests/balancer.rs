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

#[tokio::test]
async fn balancer_settings_out_of_range_fail_at_load() {
    for (setting, field) in [
        ("{max_fails: 40000}", "config.balancer.max_fails"),
        ("{retries: 40000}", "config.balancer.retries"),
        ("{slots: 5}", "config.balancer.slots"),
        (
            "{algorithm: consistent-hashing, hash_on_header: \"bad header\"}",
            "config.balancer.hash_on_header",
        ),
        (
            "{algorithm: lowest-usage, tokens_count_strategy: llm-accuracy}",
            "config.balancer.tokens_count_strategy",
        ),
    ] {
        let yaml = config(
            setting,
            &[target("http://127.0.0.1:9", 100, "delay_ms=0", "")],
        );
        let e = tollgate::gateway::load_str(&yaml.replace("{DIR}", "/tmp"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(field), "{setting}: {e}");
    }
}

/// Semantic routing (scenario S3): embeddings on mock-llm, whose vectors follow a small
/// topic vocabulary (programming, mathematics, geography, …), so the scenario's prompts
/// land where S3 says.
mod semantic {
    use std::sync::Once;
    use std::time::Duration;

    use serde_json::{json, Value};

    use crate::support::{dead_port, post_json, send, Harness, MockLlm, Reply};

    const CODE: &str = "How do I reverse a linked list in Python? My function has a bug.";
    const CALCULUS: &str = "What is the derivative of x^2 * sin(x)? Show the calculus steps.";
    const ARGENTINA: &str = "What is the capital of Argentina?";

    /// The embeddings key comes from a vault reference, as in S3.
    fn vault_env() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| std::env::set_var("TOLLGATE_TEST_EMBEDDINGS_KEY", "Bearer sk-emb-test"));
    }

    /// S3's plugin: programming → gpt-code, mathematics → gpt-math, CATCHALL → a Mistral
    /// target. `{EMB}` is the embeddings base URL, `{VECTORDB}` extra vectordb members.
    const S3: &str = r#"
_format_version: "3.0"
services:
  - name: s3
    url: http://127.0.0.1:1
    routes:
      - name: chat
        paths: ["/chat"]
        plugins:
          - name: ai-proxy-advanced
            id: {PLUGIN_ID}
            config:
              balancer:
                algorithm: semantic
                retries: 1
              embeddings:
                auth:
                  header_name: Authorization
                  header_value: "{vault://env/tollgate-test-embeddings-key}"
                model:
                  provider: openai
                  name: text-embedding-3-small
                  options:
                    upstream_url: "{EMB}/v1/embeddings"
              vectordb:
                dimensions: 64
                distance_metric: cosine
                threshold: 0.8
                {VECTORDB}
              targets:
                - route_type: llm/v1/chat
                  description: "Programming: writing and debugging code, software, algorithms"
                  weight: 100
                  logging: {log_statistics: true}
                  model:
                    provider: openai
                    name: gpt-code
                    options: {upstream_url: "{MOCK}/v1/chat/completions", max_tokens: 512, temperature: 0.2, input_cost: 2.5, output_cost: 10}
                - route_type: llm/v1/chat
                  description: "Mathematics: calculus, algebra, equations and proofs"
                  weight: 100
                  logging: {log_statistics: true}
                  model:
                    provider: openai
                    name: gpt-math
                    options: {upstream_url: "{MOCK}/v1/chat/completions", max_tokens: 512, temperature: 0.0, input_cost: 2.5, output_cost: 10}
                - route_type: llm/v1/chat
                  description: CATCHALL
                  weight: 100
                  logging: {log_statistics: true}
                  model:
                    provider: mistral
                    name: mistral-small
                    options: {mistral_format: openai, upstream_url: "{MOCK}/v1/chat/completions", max_tokens: 256, temperature: 0.7, input_cost: 0.2, output_cost: 0.6}
plugins:
  - name: file-log
    config:
      path: "{DIR}/s3.log"
"#;

    fn s3(plugin_id: &str, emb: &str, vectordb: &str) -> String {
        S3.replace("{PLUGIN_ID}", plugin_id)
            .replace("{EMB}", emb)
            .replace("{VECTORDB}", vectordb)
    }

    fn new_id() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    async fn ask(h: &Harness, prompt: &str) -> Reply {
        post_json(
            &h.url("/chat"),
            &json!({"messages": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": prompt}]}),
        )
        .await
    }

    /// Embeddings calls the mock received: (inputs per call).
    fn embedding_calls(m: &MockLlm) -> Vec<Vec<String>> {
        m.requests()
            .iter()
            .filter(|r| r.path.ends_with("/embeddings"))
            .map(|r| {
                let b: Value = serde_json::from_slice(&r.body).unwrap();
                b["input"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    }

    /// Calls that embedded the descriptions (all of them at once).
    fn description_calls(m: &MockLlm) -> usize {
        embedding_calls(m).iter().filter(|c| c.len() == 2).count()
    }

    #[tokio::test]
    async fn s3_prompts_land_on_their_targets() {
        vault_env();
        let mock = MockLlm::start().await.unwrap();
        let h = Harness::start(&s3(&new_id(), &mock.url(), "")).await;
        let cases = [
            (CODE, "openai/gpt-code", "gpt-code"),
            (CALCULUS, "openai/gpt-math", "gpt-math"),
            (ARGENTINA, "mistral/mistral-small", "mistral-small"),
        ];
        for (prompt, header, model) in cases {
            let r = ask(&h, prompt).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("x-kong-llm-model"), Some(header), "{prompt}");
            assert_eq!(r.json()["model"], model, "{prompt}");
        }
        // Model options went with each target.
        let chats: Vec<Value> = h
            .mock
            .requests()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        assert_eq!(chats[0]["temperature"], 0.2);
        assert_eq!(chats[2]["max_tokens"], 256);

        // The descriptions were embedded once (one call for both), each prompt once; the
        // key came from the vault and the dimensions from vectordb.
        let calls = embedding_calls(&mock);
        assert_eq!(description_calls(&mock), 1, "{calls:?}");
        assert_eq!(calls.len(), 4, "{calls:?}");
        let first = &mock.requests()[0];
        assert_eq!(first.header("authorization"), Some("Bearer sk-emb-test"));
        let body: Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(body["model"], "text-embedding-3-small");
        assert_eq!(body["dimensions"], 64);

        // The same prompt again: routed the same, no embedding call (cached).
        let r = ask(&h, CODE).await;
        assert_eq!(r.header("x-kong-llm-model"), Some("openai/gpt-code"));
        assert_eq!(embedding_calls(&mock).len(), 4);

        let log = h.wait_log("s3.log", 4).await;
        let sem = |i: usize| log[i]["ai"]["proxy"]["semantic"].clone();
        assert_eq!(sem(0)["outcome"], "matched");
        assert!(sem(0)["description"]
            .as_str()
            .unwrap()
            .starts_with("Programming"));
        assert_eq!(sem(0)["targets"], json!([0]));
        assert!(sem(0)["distance"].as_f64().unwrap() <= 0.8);
        assert_eq!(sem(0)["embeddings_model"], "text-embedding-3-small");
        assert_eq!(sem(1)["targets"], json!([1]));
        assert_eq!(sem(2)["outcome"], "catchall");
        assert_eq!(sem(2)["description"], "CATCHALL");
        assert!(sem(2)["distance"].as_f64().unwrap() > 0.8);
        assert_eq!(log[2]["ai"]["proxy"]["meta"]["provider_name"], "mistral");
        assert!(!log[0].to_string().contains("sk-emb-test"));
    }

    #[tokio::test]
    async fn concurrent_first_requests_share_one_description_embedding() {
        vault_env();
        let mock = MockLlm::start().await.unwrap();
        let h = Harness::start(&s3(&new_id(), &mock.url(), "")).await;
        let url = h.url("/chat");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let url = url.clone();
            let prompt = if i % 2 == 0 { CODE } else { CALCULUS };
            tasks.push(tokio::spawn(async move {
                post_json(
                    &url,
                    &json!({"messages": [{"role": "user", "content": prompt}]}),
                )
                .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.await.unwrap();
            let want = if i % 2 == 0 {
                "openai/gpt-code"
            } else {
                "openai/gpt-math"
            };
            assert_eq!(r.header("x-kong-llm-model"), Some(want));
        }
        assert_eq!(description_calls(&mock), 1);
    }

    #[tokio::test]
    async fn embedding_failure_routes_to_catchall_and_is_retried_later() {
        vault_env();
        let (dead, port) = dead_port();
        let emb = format!("http://127.0.0.1:{port}");
        let h = Harness::start(&s3(&new_id(), &emb, "")).await;
        let r = ask(&h, CODE).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-kong-llm-model"), Some("mistral/mistral-small"));
        let log = h.wait_log("s3.log", 1).await;
        let sem = &log[0]["ai"]["proxy"]["semantic"];
        assert_eq!(sem["outcome"], "embedding_failed", "{sem}");
        assert_eq!(sem["description"], "CATCHALL");
        assert!(
            sem["error"]
                .as_str()
                .unwrap()
                .contains("openai/text-embedding-3-small"),
            "{sem}"
        );
        assert!(!sem.to_string().contains("sk-emb-test"));

        // The provider comes back: the failure was not kept, the next request routes.
        let mock = MockLlm::start_with(dead.listen(64).unwrap()).unwrap();
        let r = ask(&h, CODE).await;
        assert_eq!(r.header("x-kong-llm-model"), Some("openai/gpt-code"));
        assert_eq!(description_calls(&mock), 1);
        let log = h.wait_log("s3.log", 2).await;
        assert_eq!(log[1]["ai"]["proxy"]["semantic"]["outcome"], "matched");
    }

    #[tokio::test]
    async fn provider_error_status_is_an_embedding_failure() {
        vault_env();
        let mock = MockLlm::start().await.unwrap();
        let h = Harness::start(&s3(&new_id(), &mock.url(), "")).await;
        // The mock answers the status a `[mock:status=…]` marker in a text asks for: the
        // prompt's embedding call fails (the descriptions, without the marker, do not).
        let r = send(
            "POST",
            &h.url("/chat"),
            &[("content-type", "application/json")],
            json!({"messages": [{"role": "user", "content": "[mock:status=503] fix my python code"}]})
                .to_string(),
        )
        .await;
        // The embeddings call answered 503 → CATCHALL, which (same marker) answers 503 too.
        assert_eq!(r.status, 503);
        let log = h.wait_log("s3.log", 1).await;
        let sem = &log[0]["ai"]["proxy"]["semantic"];
        assert_eq!(sem["outcome"], "embedding_failed", "{sem}");
        assert!(sem["error"].as_str().unwrap().contains("HTTP 503"), "{sem}");
        assert_eq!(
            log[0]["ai"]["proxy"]["tried_targets"][0]["model"],
            "mistral-small"
        );
    }

    const SHARED: &str = r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - name: chat
        paths: ["/chat"]
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer: {algorithm: semantic, retries: 0}
              embeddings:
                model: {provider: openai, name: emb, options: {upstream_url: "{MOCK}"}}
              vectordb: {dimensions: 16, distance_metric: euclidean, threshold: 0.6}
              targets:
                - {route_type: llm/v1/chat, description: "programming and code", weight: 75,
                   model: {provider: openai, name: code-big, options: {upstream_url: "{MOCK}"}}}
                - {route_type: llm/v1/chat, description: "mathematics and calculus", weight: 100,
                   model: {provider: openai, name: math, options: {upstream_url: "{MOCK}"}}}
                - {route_type: llm/v1/chat, description: "programming and code", weight: 25,
                   model: {provider: openai, name: code-small, options: {upstream_url: "{MOCK}"}}}
"#;

    #[tokio::test]
    async fn shared_descriptions_split_by_weight() {
        let h = Harness::start(SHARED).await;
        let mut big = 0;
        let mut small = 0;
        for _ in 0..40 {
            let r = ask(&h, CODE).await;
            match r.json()["model"].as_str().unwrap() {
                "code-big" => big += 1,
                "code-small" => small += 1,
                other => panic!("{other} answered a programming question"),
            }
        }
        assert_eq!((big, small), (30, 10));
        assert_eq!(ask(&h, CALCULUS).await.json()["model"], "math");
    }

    const NO_CATCHALL: &str = r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - name: chat
        paths: ["/chat"]
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer: {algorithm: semantic}
              embeddings:
                model: {provider: openai, name: emb, options: {upstream_url: "{EMB}"}}
              vectordb: {dimensions: 16, distance_metric: cosine, threshold: 0.5}
              targets:
                - {route_type: llm/v1/chat, description: "programming and code",
                   model: {provider: openai, name: code, options: {upstream_url: "{MOCK}"}}}
"#;

    #[tokio::test]
    async fn without_catchall_no_match_is_400_and_failure_502() {
        let h = Harness::start(&NO_CATCHALL.replace("{EMB}", "{MOCK}")).await;
        assert_eq!(ask(&h, CODE).await.json()["model"], "code");
        let r = ask(&h, ARGENTINA).await;
        assert_eq!(r.status, 400);
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains("vectordb.threshold") && msg.contains("CATCHALL"),
            "{msg}"
        );
        // No text to embed (an image only).
        let r = post_json(
            &h.url("/chat"),
            &json!({"messages": [{"role": "user", "content": [{"type": "image_url",
                "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}),
        )
        .await;
        assert_eq!(r.status, 400);
        assert!(r.text().contains("no text prompt"), "{}", r.text());

        let (_dead, port) = dead_port();
        let dead = NO_CATCHALL.replace("{EMB}", &format!("http://127.0.0.1:{port}"));
        let h = Harness::start(&dead).await;
        let r = ask(&h, CODE).await;
        assert_eq!(r.status, 502);
        assert!(h.mock.requests().is_empty(), "no target was tried");
    }

    /// A second gateway with the same plugin reads the description vectors the first one
    /// stored in Redis instead of computing them.
    #[tokio::test]
    async fn redis_strategy_shares_description_vectors_across_gateways() {
        vault_env();
        let id = new_id();
        let vectordb = "strategy: redis\n                redis: {host: 127.0.0.1, port: 6379}";
        let mock_a = MockLlm::start().await.unwrap();
        let a = Harness::start(&s3(&id, &mock_a.url(), vectordb)).await;
        assert_eq!(
            ask(&a, CALCULUS).await.header("x-kong-llm-model"),
            Some("openai/gpt-math")
        );
        assert_eq!(description_calls(&mock_a), 1);

        let client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let pattern = format!("tollgate:semantic:{id}:*");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(keys.len(), 2, "{keys:?}");
        let stored: String = redis::cmd("GET")
            .arg(&keys[0])
            .query_async(&mut con)
            .await
            .unwrap();
        let v: Vec<f32> = serde_json::from_str(&stored).unwrap();
        assert_eq!(v.len(), 64);

        let mock_b = MockLlm::start().await.unwrap();
        let b = Harness::start(&s3(&id, &mock_b.url(), vectordb)).await;
        for (prompt, want) in [
            (CODE, "openai/gpt-code"),
            (ARGENTINA, "mistral/mistral-small"),
        ] {
            assert_eq!(ask(&b, prompt).await.header("x-kong-llm-model"), Some(want));
        }
        assert_eq!(
            description_calls(&mock_b),
            0,
            "{:?}",
            embedding_calls(&mock_b)
        );
        assert_eq!(embedding_calls(&mock_b).len(), 2, "only the prompts");

        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut con)
            .await
            .unwrap();
    }

    /// `tollgate_vectordb_errors_total` for one plugin and operation, from `/metrics`.
    async fn vectordb_errors(h: &Harness, plugin_id: &str, operation: &str) -> f64 {
        let text = crate::support::get(&h.admin("/metrics")).await.text();
        let series = format!(
            "tollgate_vectordb_errors_total{{plugin_id=\"{plugin_id}\",strategy=\"redis\",operation=\"{operation}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|v| v.parse().unwrap())
            .unwrap_or(0.0)
    }

    /// A Redis that is down from the start changes no routing: the descriptions are
    /// embedded through the provider and searched in memory; the outage is counted.
    #[tokio::test]
    async fn redis_down_changes_no_routing() {
        vault_env();
        let mock = MockLlm::start().await.unwrap();
        let (_dead, port) = dead_port();
        let vectordb = format!(
            "strategy: redis\n                redis: {{host: 127.0.0.1, port: {port}, connect_timeout: 500}}"
        );
        let id = new_id();
        let h = Harness::start(&s3(&id, &mock.url(), &vectordb)).await;
        for (prompt, want) in [
            (CODE, "openai/gpt-code"),
            (CALCULUS, "openai/gpt-math"),
            (ARGENTINA, "mistral/mistral-small"),
        ] {
            let r = ask(&h, prompt).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("x-kong-llm-model"), Some(want), "{prompt}");
        }
        let log = h.wait_log("s3.log", 3).await;
        let sem = &log[0]["ai"]["proxy"]["semantic"];
        assert_eq!(sem["outcome"], "matched", "{sem}");
        assert_eq!(description_calls(&mock), 1, "the index was built once");
        assert_eq!(vectordb_errors(&h, &id, "get").await, 1.0);
    }

    /// A Redis of the test's own that goes away after the vectors were stored in it: a
    /// reload (a new snapshot, a new index) still routes each prompt to its target, with
    /// the vectors this process kept (the provider is not asked for them again).
    #[tokio::test]
    async fn redis_going_away_changes_no_routing() {
        vault_env();
        let (spare, port) = dead_port();
        drop(spare);
        let mut redis = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/services.sh installs it)");
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
        let mut up = false;
        for _ in 0..100 {
            if let Ok(mut con) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .is_ok()
                {
                    up = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "redis-server on port {port} did not answer");

        let mock = MockLlm::start().await.unwrap();
        let id = new_id();
        let vectordb = format!(
            "strategy: redis\n                redis: {{host: 127.0.0.1, port: {port}, connect_timeout: 500}}"
        );
        let yaml = s3(&id, &mock.url(), &vectordb);
        let h = Harness::start(&yaml).await;
        assert_eq!(
            ask(&h, CODE).await.header("x-kong-llm-model"),
            Some("openai/gpt-code")
        );
        assert_eq!(description_calls(&mock), 1);
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("tollgate:semantic:{id}:*"))
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(keys.len(), 2, "stored in the test's Redis: {keys:?}");

        redis.kill().unwrap();
        redis.wait().unwrap();
        let text = yaml
            .replace("{MOCK}", &h.mock.url())
            .replace("{DIR}", &h.dir.path().display().to_string());
        let (snap, _) = tollgate::load(&text).unwrap();
        h.gw.gateway.snapshot.store(std::sync::Arc::new(snap));
        for (prompt, want) in [
            (CODE, "openai/gpt-code"),
            (CALCULUS, "openai/gpt-math"),
            (ARGENTINA, "mistral/mistral-small"),
        ] {
            let r = ask(&h, prompt).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("x-kong-llm-model"), Some(want), "{prompt}");
        }
        assert_eq!(description_calls(&mock), 1, "{:?}", embedding_calls(&mock));
        let log = h.wait_log("s3.log", 4).await;
        assert_eq!(log[1]["ai"]["proxy"]["semantic"]["outcome"], "matched");
        assert_eq!(vectordb_errors(&h, &id, "get").await, 1.0, "counted once");
    }

    async fn load_error(yaml: &str) -> String {
        match tollgate::run(
            yaml,
            tollgate::server::ServeOptions {
                proxy_listen: "127.0.0.1:0".parse().unwrap(),
                admin_listen: None,
                drain_timeout: Duration::from_secs(1),
                busy_poll: Duration::ZERO,
                proxy_tls: None,
                admin_tls: None,
                limits: Default::default(),
                workers: 1,
            },
        )
        .await
        {
            Ok(_) => panic!("the config loaded"),
            Err(e) => e,
        }
    }

    /// A client of the local PostgreSQL (trust auth) as its superuser.
    async fn pg(database: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port=5432 user=postgres dbname={database}"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (scripts/services.sh starts it)");
        tokio::spawn(connection);
        client
    }

    /// Like the Redis strategy, through a table with pgvector's `vector` column: the second
    /// gateway reads what the first stored.
    #[tokio::test]
    async fn pgvector_strategy_shares_description_vectors_across_gateways() {
        vault_env();
        let id = new_id();
        let vectordb = "strategy: pgvector\n                pgvector: {host: 127.0.0.1, port: 5432, database: test, user: postgres}";
        let mock_a = MockLlm::start().await.unwrap();
        let a = Harness::start(&s3(&id, &mock_a.url(), vectordb)).await;
        assert_eq!(
            ask(&a, CALCULUS).await.header("x-kong-llm-model"),
            Some("openai/gpt-math")
        );
        assert_eq!(description_calls(&mock_a), 1);

        let db = pg("test").await;
        let pattern = format!("tollgate:semantic:{id}:%");
        let rows = db
            .query(
                "SELECT key, vector_dims(embedding), embedding <-> embedding \
                 FROM tollgate_semantic_vectors WHERE key LIKE $1",
                &[&pattern],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 2, "one row per distinct description");
        for r in &rows {
            assert_eq!(r.get::<_, i32>(1), 64);
            assert_eq!(r.get::<_, f64>(2), 0.0);
        }

        let mock_b = MockLlm::start().await.unwrap();
        let b = Harness::start(&s3(&id, &mock_b.url(), vectordb)).await;
        for (prompt, want) in [
            (CODE, "openai/gpt-code"),
            (ARGENTINA, "mistral/mistral-small"),
        ] {
            assert_eq!(ask(&b, prompt).await.header("x-kong-llm-model"), Some(want));
        }
        assert_eq!(
            description_calls(&mock_b),
            0,
            "{:?}",
            embedding_calls(&mock_b)
        );
        assert_eq!(embedding_calls(&mock_b).len(), 2, "only the prompts");
        db.execute(
            "DELETE FROM tollgate_semantic_vectors WHERE key LIKE $1",
            &[&pattern],
        )
        .await
        .unwrap();
    }

    /// A database that answers no is refused at load, saying why; one that does not answer
    /// is a warning at load, and routing goes on without it.
    #[tokio::test]
    async fn pgvector_problems_at_load_and_at_request_time() {
        vault_env();
        let yaml = |pgvector: &str| {
            s3(
                &new_id(),
                "http://127.0.0.1:1",
                &format!("strategy: pgvector\n                pgvector: {pgvector}"),
            )
            .replace("{MOCK}", "http://127.0.0.1:1")
            .replace("{DIR}", "/tmp")
        };
        // Kong's default database name, which this server does not have.
        let e = load_error(&yaml("{host: 127.0.0.1}")).await;
        assert!(e.contains("config.vectordb.pgvector"), "{e}");
        assert!(
            e.contains(r#"database "kong-pgvector" does not exist"#),
            "{e}"
        );

        // pgvector is installed on the server, but not created in this database and the
        // user may not create it.
        let admin = pg("postgres").await;
        for sql in [
            "CREATE ROLE tollgate_plain LOGIN",
            "CREATE DATABASE tollgate_noext",
        ] {
            if let Err(e) = admin.batch_execute(sql).await {
                let code = e.code().cloned();
                assert!(
                    code == Some(tokio_postgres::error::SqlState::DUPLICATE_OBJECT)
                        || code == Some(tokio_postgres::error::SqlState::DUPLICATE_DATABASE),
                    "{sql}: {e}"
                );
            }
        }
        pg("tollgate_noext")
            .await
            .batch_execute("DROP EXTENSION IF EXISTS vector")
            .await
            .unwrap();
        let e = load_error(&yaml(
            "{host: 127.0.0.1, database: tollgate_noext, user: tollgate_plain, password: not-shown}",
        ))
        .await;
        assert!(e.contains("config.vectordb.pgvector"), "{e}");
        assert!(e.contains("not created in this database"), "{e}");
        assert!(e.contains("CREATE EXTENSION vector"), "{e}");
        assert!(!e.contains("not-shown"), "{e}");

        // Nothing listening: the config loads, and routing does not depend on the store.
        let mock = MockLlm::start().await.unwrap();
        let (_dead, port) = dead_port();
        let pgvector = format!("{{host: 127.0.0.1, port: {port}, timeout: 500}}");
        let id = new_id();
        let h = Harness::start(&s3(
            &id,
            &mock.url(),
            &format!("strategy: pgvector\n                pgvector: {pgvector}"),
        ))
        .await;
        let r = ask(&h, CODE).await;
        assert_eq!(r.header("x-kong-llm-model"), Some("openai/gpt-code"));
        let log = h.wait_log("s3.log", 1).await;
        assert_eq!(log[0]["ai"]["proxy"]["semantic"]["outcome"], "matched");
        let metrics = crate::support::get(&h.admin("/metrics")).await.text();
        assert!(
            metrics.contains(&format!(
                "tollgate_vectordb_errors_total{{plugin_id=\"{id}\",strategy=\"pgvector\",operation=\"get\"}} 1"
            )),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn load_errors_name_the_fields() {
        let base = NO_CATCHALL
            .replace("{EMB}", "http://127.0.0.1:1")
            .replace("{MOCK}", "http://127.0.0.1:1");
        let e = load_error(&base.replace("description: \"programming and code\",", "")).await;
        assert!(e.contains("config.targets[0].description"), "{e}");
        let e = load_error(&base.replace("distance_metric: cosine", "distance_metric: dot")).await;
        assert!(e.contains("config.vectordb.distance_metric"), "{e}");
        let e = load_error(&base.replace("name: emb,", "")).await;
        assert!(e.contains("config.embeddings.model"), "{e}");
        let no_vectordb = base.replace(
            "vectordb: {dimensions: 16, distance_metric: cosine, threshold: 0.5}",
            "",
        );
        let e = load_error(&no_vectordb).await;
        assert!(e.contains("config.vectordb"), "{e}");
    }
}

/// Active health checks (`balancer.healthchecks.active`): a target that cannot be reached
/// is taken out by its probes before any request meets it, shown in /status and the
/// metrics, and comes back once its probes succeed.
#[tokio::test]
async fn active_health_checks_take_a_dead_target_out_before_traffic_finds_it() {
    let mock = MockLlm::start().await.unwrap();
    let (socket, dead) = support::dead_port();
    let target = |url: &str| {
        format!(
            r#"
                - route_type: llm/v1/chat
                  model: {{provider: openai, name: m, options: {{upstream_url: "{url}/v1/chat/completions"}}}}"#
        )
    };
    let yaml = format!(
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
              balancer:
                algorithm: round-robin
                retries: 0
                healthchecks:
                  active:
                    http_path: /health
                    timeout: 0.5
                    healthy: {{interval: 0.05, successes: 2}}
                    unhealthy: {{interval: 0.05, tcp_failures: 2}}
              targets:{}{}
"#,
        target(&format!("http://127.0.0.1:{dead}")),
        target(&mock.url()),
    );
    let h = Harness::start(&yaml).await;
    let targets = |s: &Value| s["ai_targets"].as_array().cloned().unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let s = support::get(&h.admin("/status")).await.json();
        let t = targets(&s);
        if t.len() == 2 && t[0]["healthy"] == false {
            assert_eq!(t[0]["down_by"], "healthcheck", "{s}");
            assert_eq!(t[1]["healthy"], true, "{s}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dead target stayed in: {s}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let metrics = support::get(&h.admin("/metrics")).await.text();
    assert!(
        metrics.contains(&format!("target=\"0\",upstream=\"127.0.0.1:{dead}\"}} 0")),
        "{metrics}"
    );
    // No retries: without the health check, every other request would fail.
    for _ in 0..6 {
        assert_eq!(ask(&h, "hi").await.status, 200);
    }
    // The target comes back: its probes succeed and it takes requests again.
    let listener = socket.listen(16).unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let s = support::get(&h.admin("/status")).await.json();
        if targets(&s)[0]["healthy"] == true {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the target never came back: {s}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

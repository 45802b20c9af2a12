//! The semantic plugins through the real gateway, with mock-llm's embeddings (whose vectors
//! follow a small topic vocabulary: texts on one topic are close, on different topics far):
//! `ai-semantic-cache`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{post_json, send, sse_data, Harness, Reply};

const CACHE: &str = r#"
_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials: [{key: alice-key}]
  - username: bob
    keyauth_credentials: [{key: bob-key}]
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: chat
        paths: ["/chat"]
        plugins:
          - name: key-auth
            config: {key_names: [ApiKey]}
          - name: file-log
            config: {path: "{DIR}/chat.log"}
          - name: ai-semantic-cache
            id: {CHAT_CACHE}
            config:
              exact_caching: true
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine, threshold: 0.1}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              logging: {log_statistics: true}
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions", input_cost: 5, output_cost: 15}}
      - name: short
        paths: ["/short"]
        plugins:
          - name: ai-semantic-cache
            id: {SHORT_CACHE}
            config:
              cache_ttl: 1
              partition_by: route
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine, threshold: 0.1}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: responses
        paths: ["/responses"]
        plugins:
          - name: ai-semantic-cache
            id: {RESPONSES_CACHE}
            config:
              partition_by: route
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine, threshold: 0.1}
          - name: ai-proxy
            config:
              route_type: llm/v1/responses
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/responses"}}
"#;

/// A gateway on [`CACHE`] whose cache instances are its own (entries are kept by plugin id
/// across reloads, so tests running at once would otherwise share them).
async fn start() -> Harness {
    let mut yaml = CACHE.to_string();
    for k in ["{CHAT_CACHE}", "{SHORT_CACHE}", "{RESPONSES_CACHE}"] {
        yaml = yaml.replace(k, &uuid::Uuid::new_v4().to_string());
    }
    Harness::start(&yaml).await
}

/// Chat completions the mock answered (the upstream calls).
fn upstream_calls(h: &Harness) -> usize {
    h.mock
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions") || r.path.ends_with("/responses"))
        .count()
}

fn embedding_calls(h: &Harness) -> usize {
    h.mock
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/embeddings"))
        .count()
}

async fn chat(h: &Harness, key: &str, body: Value, extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![("ApiKey", key), ("content-type", "application/json")];
    headers.extend_from_slice(extra);
    send("POST", &h.url("/chat"), &headers, body.to_string()).await
}

fn ask(prompt: &str) -> Value {
    json!({"messages": [{"role": "user", "content": prompt}]})
}

/// `prompt` as a chat request to `path`.
async fn asked(h: &Harness, path: &str, prompt: &str) -> Reply {
    post_json(&h.url(path), &ask(prompt)).await
}

fn content(r: &Reply) -> String {
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", r.text()))
        .to_string()
}

fn streamed_text(r: &Reply) -> String {
    sse_data(&r.text())
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn the_cache_answers_repeats_and_paraphrases_per_consumer() {
    let h = start().await;
    let question = "How do I write a loop in Python?";

    // A miss goes upstream and is stored.
    let first = chat(&h, "alice-key", ask(question), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-cache-status"), Some("Miss"));
    let answer = content(&first);
    let (calls, embeds) = (upstream_calls(&h), embedding_calls(&h));
    assert_eq!(calls, 1);

    // The exact repeat: from the cache, without the upstream or the embeddings provider.
    let again = chat(&h, "alice-key", ask(question), &[]).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("x-cache-status"), Some("Hit"));
    assert_eq!(content(&again), answer);
    let key = again.header("x-cache-key").unwrap();
    assert!(key.starts_with("kong_semantic_cache:"), "{key}");
    let ttl: u64 = again.header("x-cache-ttl").unwrap().parse().unwrap();
    assert!((295..=300).contains(&ttl), "{ttl}");
    assert_eq!(again.header("age"), Some("0"));
    assert_eq!((upstream_calls(&h), embedding_calls(&h)), (calls, embeds));

    // A paraphrase: embedded, found within the threshold, still no upstream call.
    let para = chat(
        &h,
        "alice-key",
        ask("In Python, how should I code a loop?"),
        &[],
    )
    .await;
    assert_eq!(
        para.header("x-cache-status"),
        Some("Hit"),
        "{}",
        para.text()
    );
    assert_eq!(content(&para), answer);
    assert_eq!(upstream_calls(&h), calls);
    assert_eq!(embedding_calls(&h), embeds + 1);

    // Streamed, the hit is a well-formed stream with the same text.
    let mut streamed = ask(question);
    streamed["stream"] = json!(true);
    let s = chat(&h, "alice-key", streamed, &[]).await;
    assert_eq!(s.header("x-cache-status"), Some("Hit"));
    assert!(s
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(streamed_text(&s), answer);
    assert_eq!(
        sse_data(&s.text()).last().map(String::as_str),
        Some("[DONE]")
    );
    assert_eq!(upstream_calls(&h), calls);

    // Another consumer never gets alice's answer.
    let bob = chat(&h, "bob-key", ask(question), &[]).await;
    assert_eq!(bob.header("x-cache-status"), Some("Miss"));
    // Another topic is a miss.
    let other = chat(&h, "alice-key", ask("What is the capital of France?"), &[]).await;
    assert_eq!(other.header("x-cache-status"), Some("Miss"));
    assert_eq!(upstream_calls(&h), calls + 2);

    // The log: the hit's cache section, no usage, and what it saved.
    let lines = h.wait_log("chat.log", 6).await;
    let hit = lines
        .iter()
        .find(|l| l["ai"]["proxy"]["cache"]["cache_status"] == "Hit")
        .unwrap_or_else(|| panic!("{lines:?}"));
    let cache = &hit["ai"]["proxy"]["cache"];
    assert_eq!(cache["embeddings_provider"], "openai");
    assert_eq!(cache["embeddings_model"], "text-embedding-3-small");
    assert_eq!(cache["vector_db"], "memory");
    assert!(cache["cost_savings"].as_f64().unwrap() > 0.0, "{cache}");
    assert_eq!(hit["ai"]["proxy"]["usage"]["total_tokens"], 0, "{hit}");
}

#[tokio::test]
async fn streamed_misses_are_stored_and_failures_never_are() {
    let h = start().await;
    // A streamed miss is kept, and answers a later buffered request.
    let mut s = ask("Explain recursion in Rust code");
    s["stream"] = json!(true);
    let r = chat(&h, "bob-key", s, &[]).await;
    assert_eq!(r.header("x-cache-status"), Some("Miss"));
    let text = streamed_text(&r);
    assert!(!text.is_empty(), "{}", r.text());
    let again = chat(&h, "bob-key", ask("Explain recursion in Rust code"), &[]).await;
    assert_eq!(
        again.header("x-cache-status"),
        Some("Hit"),
        "{}",
        again.text()
    );
    assert_eq!(content(&again), text);

    // An upstream error is not stored: the same prompt misses again (the fault is asked of
    // the upstream in a header, so the embeddings call is not affected).
    let failing = ask("What is a derivative in calculus?");
    for _ in 0..2 {
        let r = chat(&h, "bob-key", failing.clone(), &[("x-mock", "status=500")]).await;
        assert_eq!(r.status, 500, "{}", r.text());
        assert_eq!(r.header("x-cache-status"), Some("Miss"));
    }
    // Nor is a stream cut before its end.
    let mut cut = ask("Give me a soup recipe for the kitchen");
    cut["stream"] = json!(true);
    for _ in 0..2 {
        let r = chat(
            &h,
            "bob-key",
            cut.clone(),
            &[("x-mock", "disconnect_after=2")],
        )
        .await;
        assert_eq!(r.header("x-cache-status"), Some("Miss"), "{}", r.text());
    }
    // The same prompt answered in full is then kept.
    let whole = chat(&h, "bob-key", cut.clone(), &[]).await;
    assert_eq!(whole.header("x-cache-status"), Some("Miss"));
    let r = chat(&h, "bob-key", cut, &[]).await;
    assert_eq!(r.header("x-cache-status"), Some("Hit"), "{}", r.text());
}

#[tokio::test]
async fn bypass_rules_and_ttl() {
    let h = start().await;
    let q = "Which SQL query finds duplicate rows?";
    assert_eq!(
        chat(&h, "alice-key", ask(q), &[])
            .await
            .header("x-cache-status"),
        Some("Miss")
    );
    let cases = [
        (json!({"temperature": 0.7}), "Bypass"),
        (json!({"n": 2}), "Bypass"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
            "Bypass",
        ),
        (json!({"temperature": 0}), "Hit"),
    ];
    for (extra, status) in cases {
        let mut body = ask(q);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = chat(&h, "alice-key", body, &[]).await;
        assert_eq!(
            r.header("x-cache-status"),
            Some(status),
            "{extra}: {}",
            r.text()
        );
    }
    let r = chat(&h, "alice-key", ask(q), &[("cache-control", "no-store")]).await;
    assert_eq!(r.header("x-cache-status"), Some("Bypass"));

    // cache_ttl: 1 — gone after a second.
    let p = "What is the population of Brazil?";
    assert_eq!(
        asked(&h, "/short", p).await.header("x-cache-status"),
        Some("Miss")
    );
    assert_eq!(
        asked(&h, "/short", p).await.header("x-cache-status"),
        Some("Hit")
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        asked(&h, "/short", p).await.header("x-cache-status"),
        Some("Miss")
    );
}

#[tokio::test]
async fn responses_clients_get_hits_as_responses_and_streams() {
    let h = start().await;
    let post = |body: Value| {
        let url = h.url("/responses");
        async move { post_json(&url, &body).await }
    };
    let q = json!({"model": "gpt-4o", "input": "What is a matrix in algebra?"});
    let first = post(q.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-cache-status"), Some("Miss"));
    let text = first.json()["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", first.text()))
        .to_string();
    let hit = post(q.clone()).await;
    assert_eq!(hit.header("x-cache-status"), Some("Hit"), "{}", hit.text());
    let body = hit.json();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["content"][0]["text"], json!(text));
    let mut s = q;
    s["stream"] = json!(true);
    let streamed = post(s).await;
    assert_eq!(streamed.header("x-cache-status"), Some("Hit"));
    let events: Vec<Value> = sse_data(&streamed.text())
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let delta: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(delta, text);
    assert_eq!(events.last().unwrap()["type"], "response.completed");
}

const SHARED: &str = r#"
_format_version: "3.0"
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: chat
        paths: ["/chat"]
        plugins:
          - name: ai-semantic-cache
            id: {ID}
            config:
              partition_by: route
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine, threshold: 0.1, {STORE}}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
"#;

/// Two gateways on one shared store: what one stored, the other answers (exact and
/// paraphrased), and the store's name is in the log's `vector_db`.
async fn shared_between_nodes(store: &str) {
    let yaml = SHARED
        .replace("{ID}", &uuid::Uuid::new_v4().to_string())
        .replace("{STORE}", store);
    let (a, b) = (Harness::start(&yaml).await, Harness::start(&yaml).await);
    let q = "How do I fix this bug in my JavaScript function?";
    let first = asked(&a, "/chat", q).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-cache-status"), Some("Miss"));
    // The store is written off the request path.
    // Until it lands, b misses and asks the upstream itself (counted).
    let (mut hit, mut misses) = (None, 0);
    for _ in 0..50 {
        let r = asked(&b, "/chat", q).await;
        if r.header("x-cache-status") == Some("Hit") {
            hit = Some(r);
            break;
        }
        misses += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hit = hit.expect("node b answers from what node a stored");
    assert_eq!(content(&hit), content(&first));
    let para = asked(
        &b,
        "/chat",
        "My JavaScript function has a bug, how do I fix it?",
    )
    .await;
    assert_eq!(
        para.header("x-cache-status"),
        Some("Hit"),
        "{}",
        para.text()
    );
    assert_eq!(
        upstream_calls(&b),
        misses,
        "node b called the upstream only before a's entry reached the store"
    );
    let other = asked(&b, "/chat", "What is the capital of Argentina?").await;
    assert_eq!(other.header("x-cache-status"), Some("Miss"));
}

#[tokio::test]
async fn redis_shares_entries_between_nodes() {
    shared_between_nodes("strategy: redis, redis: {host: 127.0.0.1, port: 6379}").await;
}

#[tokio::test]
async fn pgvector_shares_entries_between_nodes() {
    shared_between_nodes(
        "strategy: pgvector, pgvector: {host: 127.0.0.1, port: 5432, user: postgres, database: test}",
    )
    .await;
}

const FAULTS: &str = r#"
_format_version: "3.0"
plugins:
  - name: prometheus
    config: {ai_metrics: true}
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: down
        paths: ["/down"]
        plugins:
          - name: ai-semantic-cache
            id: {DOWN}
            config:
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine, threshold: 0.1, strategy: redis, redis: {host: 127.0.0.1, port: 1}}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: strict
        paths: ["/strict"]
        plugins:
          - name: ai-semantic-cache
            config:
              stop_on_failure: true
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine, threshold: 0.1, strategy: redis, redis: {host: 127.0.0.1, port: 1}}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: quota
        paths: ["/quota"]
        plugins:
          - name: ai-rate-limiting-advanced
            id: {QUOTA}
            config: {identifier: ip, window_type: fixed, strategy: local, reserve_in_flight: false, llm_providers: [{name: openai, limit: [100000], window_size: [3600]}]}
          - name: ai-semantic-cache
            id: {QUOTA_CACHE}
            config:
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine, threshold: 0.1}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions", input_cost: 5, output_cost: 15}}
"#;

/// The quota counter of plugin `id` (from `/quotas`).
async fn used(h: &Harness, id: &str) -> f64 {
    let r = support::get(&h.admin("/quotas")).await;
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["plugin_id"] == id && row["used"].is_number())
        .map(|row| row["used"].as_f64().unwrap())
        .sum()
}

#[tokio::test]
async fn a_failing_store_goes_upstream_unless_told_to_stop_and_hits_cost_no_quota() {
    let quota = uuid::Uuid::new_v4().to_string();
    let yaml = FAULTS
        .replace("{DOWN}", &uuid::Uuid::new_v4().to_string())
        .replace("{QUOTA}", &quota)
        .replace("{QUOTA_CACHE}", &uuid::Uuid::new_v4().to_string());
    let h = Harness::start(&yaml).await;
    // Redis unreachable: the request is answered by the upstream, the failure counted.
    let r = asked(&h, "/down", "Write a python function").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-cache-status"), Some("Failed"));
    // stop_on_failure: Kong's 500, which does not name the store's address.
    let r = asked(&h, "/strict", "Write a python function").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(
        r.json()["error"]["message"],
        "Failed to query 'redis' for cached response"
    );

    // A hit charges the token quota nothing.
    let q = "What is an integral in calculus?";
    assert_eq!(
        asked(&h, "/quota", q).await.header("x-cache-status"),
        Some("Miss")
    );
    let mut spent = 0.0;
    for _ in 0..50 {
        spent = used(&h, &quota).await;
        if spent > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(spent > 0.0, "the miss was charged");
    let hit = asked(&h, "/quota", q).await;
    assert_eq!(hit.header("x-cache-status"), Some("Hit"), "{}", hit.text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(used(&h, &quota).await, spent, "the hit was not charged");

    // Metrics: Kong's AI families with the cache labels, the saved tokens and cost, and the
    // store failures.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = support::get(&h.admin("/metrics")).await.text();
    let has = |needle: &str| m.lines().any(|l| l.contains(needle));
    assert!(
        has("kong_ai_llm_requests_total{") && has("cache_status=\"hit\""),
        "{m}"
    );
    assert!(
        has("cache_status=\"miss\"") && has("vector_db=\"memory\""),
        "{m}"
    );
    assert!(has("kong_ai_cache_fetch_latency_ms_bucket{"), "{m}");
    assert!(has("kong_ai_cache_embeddings_latency_ms_bucket{"), "{m}");
    assert!(has("tollgate_ai_cache_saved_tokens_total{"), "{m}");
    assert!(has("tollgate_ai_cache_saved_cost_total{"), "{m}");
    assert!(
        m.lines()
            .any(|l| l.starts_with("tollgate_vectordb_errors_total{")
                && l.contains("strategy=\"redis\"")
                && l.contains("operation=\"search\"")),
        "{m}"
    );
}

/// Usage analytics mark hits as cached, with what they saved (SQLite and PostgreSQL).
async fn analytics_count_hits(backend: tollgate::observe::analytics::Backend) {
    let start = tollgate::rt::clock::millis_since_epoch() / 1000;
    let yaml = FAULTS
        .replace("{DOWN}", &uuid::Uuid::new_v4().to_string())
        .replace("{QUOTA}", &uuid::Uuid::new_v4().to_string())
        .replace("{QUOTA_CACHE}", &uuid::Uuid::new_v4().to_string());
    let h = Harness::start(&yaml).await;
    let dir = std::env::temp_dir().join(format!(
        "tollgate-cache-analytics-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let a = tollgate::observe::analytics::Analytics::start(backend, dir.clone()).unwrap();
    h.gw.gateway.analytics.set(std::sync::Arc::new(a)).unwrap();
    let body = ask("What is a polynomial in algebra?").to_string();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = send(
            "POST",
            &h.url("/quota"),
            &[("content-type", "application/json")],
            body.clone(),
        )
        .await;
        statuses.push(r.header("x-cache-status").unwrap_or("").to_string());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses, ["Miss", "Hit", "Hit"]);
    let mut totals = Value::Null;
    for _ in 0..100 {
        let u = support::get(&h.admin(&format!("/analytics/usage?from={start}&bucket=hour"))).await;
        totals = u.json()["totals"].clone();
        if totals["requests"].as_i64() == Some(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(totals["requests"], 3, "{totals}");
    assert_eq!(totals["cached"], 2, "{totals}");
    let saved = totals["saved_cost"].as_f64().unwrap();
    assert!(saved > 0.0, "{totals}");
    // The hits cost nothing: the cost is the miss's alone, half of what the hits saved.
    let cost = totals["cost"].as_f64().unwrap();
    assert!((saved - 2.0 * cost).abs() < 1e-9, "{totals}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn analytics_show_cached_answers_and_savings_in_sqlite() {
    let dir = std::env::temp_dir().join(format!("tollgate-cache-db-{}", uuid::Uuid::new_v4()));
    analytics_count_hits(tollgate::observe::analytics::Backend::Sqlite(
        dir.join("a.db"),
    ))
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn analytics_show_cached_answers_and_savings_in_postgresql() {
    analytics_count_hits(tollgate::observe::analytics::Backend::Postgres(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into(),
    ))
    .await;
}

const GUARD: &str = r#"
_format_version: "3.0"
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: deny
        paths: ["/deny"]
        plugins:
          - name: ai-semantic-prompt-guard
            config:
              rules: {deny_prompts: ["Questions about cooking recipes and baking in the kitchen"]}
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: allow
        paths: ["/allow"]
        plugins:
          - name: ai-semantic-prompt-guard
            config:
              rules:
                allow_prompts: ["Programming questions about code and software"]
                deny_prompts: ["Investing money in the stock market and bank loans"]
              search: {threshold: 0.8}
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine, strategy: redis, redis: {host: 127.0.0.1, port: 6379}}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: blind
        paths: ["/blind"]
        plugins:
          - name: ai-semantic-prompt-guard
            config:
              rules: {deny_prompts: ["anything about money"]}
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "http://127.0.0.1:9/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
"#;

#[tokio::test]
async fn the_semantic_prompt_guard_refuses_by_meaning() {
    let h = Harness::start(GUARD).await;
    let post = |path: &str, body: Value| {
        let url = h.url(path);
        async move { post_json(&url, &body).await }
    };
    // A deny rule refuses prompts near it, in other words than the rule's.
    let r = post(
        "/deny",
        ask("Give me a recipe for a soup I can cook tonight"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["message"], "bad request");
    let r = post("/deny", ask("How do I write a loop in Python?")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Only the latest user message is checked by default; with history it would be.
    let convo = json!({"messages": [
        {"role": "user", "content": "Give me a soup recipe"},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "Now explain recursion in Rust code"}]});
    assert_eq!(post("/deny", convo).await.status, 200);

    // Allow rules: a prompt must be near one; a deny rule still wins.
    assert_eq!(
        post(
            "/allow",
            ask("Why does my JavaScript function return undefined?")
        )
        .await
        .status,
        200
    );
    let r = post("/allow", ask("What is the capital of Argentina?")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Near the deny rule (and no allow rule): refused.
    let r = post(
        "/allow",
        ask("Should I put my money in a bank or invest in stock?"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        upstream_calls(&h),
        3,
        "refused prompts never reach the upstream"
    );

    // The embeddings provider is down: refused (Kong fails closed).
    let r = post("/blind", ask("hello there")).await;
    assert_eq!(r.status, 400, "{}", r.text());

    // A streamed request is checked the same way: refused as JSON before any stream, or
    // streamed when allowed.
    let mut soup = ask("Give me a recipe for a soup I can cook tonight");
    soup["stream"] = json!(true);
    let r = post("/deny", soup).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["message"], "bad request");
    let mut code = ask("How do I write a loop in Python?");
    code["stream"] = json!(true);
    let r = post("/deny", code).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!streamed_text(&r).is_empty(), "{}", r.text());
    // The rules were embedded once for the configuration, not per request.
    let rule_calls = h
        .mock
        .requests()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("Questions about cooking recipes"))
        .count();
    assert_eq!(rule_calls, 1);
}

const ROUTING: &str = r#"
_format_version: "3.0"
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: described
        paths: ["/described"]
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer: {algorithm: semantic}
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine, threshold: 0.3}
              targets:
                - {route_type: llm/v1/chat, description: "coding assistant", model: {provider: openai, name: gpt-code, options: {upstream_url: "{MOCK}/v1/chat/completions"}}}
                - {route_type: llm/v1/chat, description: "numbers helper", {UTTERANCES} model: {provider: openai, name: gpt-math, options: {upstream_url: "{MOCK}/v1/chat/completions"}}}
                - {route_type: llm/v1/chat, description: CATCHALL, model: {provider: openai, name: gpt-other, options: {upstream_url: "{MOCK}/v1/chat/completions"}}}
"#;

/// A target whose one-line description says little is found through its example
/// utterances (a Tollgate extension next to Kong's `description`).
#[tokio::test]
async fn utterances_route_prompts_a_description_alone_misses() {
    let route = |h: &Harness, prompt: &str| {
        let url = h.url("/described");
        let body = ask(prompt).to_string();
        async move {
            let r = send("POST", &url, &[("content-type", "application/json")], body).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["model"].as_str().unwrap_or("").to_string()
        }
    };
    let prompt = "Compute the integral of this polynomial";
    let bare = Harness::start(&ROUTING.replace("{UTTERANCES}", "")).await;
    assert_eq!(
        route(&bare, prompt).await,
        "gpt-other",
        "the description alone misses"
    );
    let taught = Harness::start(&ROUTING.replace(
        "{UTTERANCES}",
        r#"utterances: ["solve this equation for x", "what is the derivative of this function", "compute the integral over an interval"],"#,
    ))
    .await;
    assert_eq!(route(&taught, prompt).await, "gpt-math");
    assert_eq!(
        route(&taught, "Fix the bug in my Python code").await,
        "gpt-code"
    );
    assert_eq!(
        route(&taught, "What is the capital of France?").await,
        "gpt-other"
    );
}

/// `tollgate route-test` shows where each prompt goes and the nearest texts.
#[tokio::test]
async fn route_test_shows_targets_and_distances() {
    let mock = mock_llm::MockLlm::start().await.unwrap();
    let dir = support::tempdir::TempDir::new();
    let file = dir.path().join("kong.yaml");
    let yaml = ROUTING.replace("{MOCK}", &mock.url()).replace(
        "{UTTERANCES}",
        r#"utterances: ["compute the integral over an interval"],"#,
    );
    std::fs::write(&file, yaml).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("route-test")
            .arg(&file)
            .args([
                "Compute the integral of this polynomial",
                "What is the capital of France?",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("→ openai/gpt-math"), "{text}");
    assert!(
        text.contains("utterance \"compute the integral over an interval\" of \"numbers helper\""),
        "{text}"
    );
    assert!(text.contains("→ CATCHALL openai/gpt-other"), "{text}");
}

const RESPONSE_GUARD: &str = r#"
_format_version: "3.0"
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: deny
        paths: ["/deny"]
        plugins:
          - name: file-log
            config: {path: "{DIR}/guard.log"}
          - name: ai-semantic-response-guard
            config:
              rules: {deny_responses: ["Cooking recipes and baking food in the kitchen"]}
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: allow
        paths: ["/allow"]
        plugins:
          - name: ai-semantic-response-guard
            config:
              rules: {allow_responses: ["Programming questions about code and software"]}
              search: {threshold: 0.8}
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine, strategy: redis, redis: {host: 127.0.0.1, port: 6379}}
          - name: ai-proxy
            config:
              route_type: llm/v1/responses
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/responses"}}
      - name: cached
        paths: ["/cached"]
        plugins:
          - name: ai-semantic-cache
            id: {CACHE_ID}
            config:
              exact_caching: true
              partition_by: route
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine, threshold: 0.1}
          - name: ai-semantic-response-guard
            config:
              rules: {deny_responses: ["Cooking recipes and baking food in the kitchen"]}
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: small
        paths: ["/small"]
        plugins:
          - name: ai-semantic-response-guard
            config:
              rules: {deny_responses: ["anything about money"], max_response_body_size: 64}
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: blind
        paths: ["/blind"]
        plugins:
          - name: ai-semantic-response-guard
            config:
              rules: {deny_responses: ["anything about money"]}
              embeddings:
                model: {provider: openai, name: text-embedding-3-small, options: {upstream_url: "http://127.0.0.1:9/v1/embeddings"}}
              vectordb: {dimensions: 64, distance_metric: cosine}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
"#;

/// What the mock was asked to stream on its last chat or Responses call.
fn last_upstream_stream(h: &Harness) -> Option<bool> {
    let r = h.mock.requests();
    let last = r
        .iter()
        .rev()
        .find(|r| r.path.ends_with("/chat/completions") || r.path.ends_with("/responses"))?;
    let body: Value = serde_json::from_slice(&last.body).ok()?;
    Some(body["stream"].as_bool().unwrap_or(false))
}

#[tokio::test]
async fn the_semantic_response_guard_holds_answers_until_checked() {
    let yaml = RESPONSE_GUARD.replace("{CACHE_ID}", &uuid::Uuid::new_v4().to_string());
    let h = Harness::start(&yaml).await;
    let reply = |text: &str| format!("Tell me something [mock:reply={text}]");
    // Buffered: an answer near the deny rule is refused with Kong's vague text, as a 403.
    let r = asked(
        &h,
        "/deny",
        &reply("Bake the bread in the kitchen: this recipe needs flour"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["message"], "bad response");
    assert_eq!(r.json()["error"]["code"], "response_blocked");
    assert!(
        !r.text().contains("recipe"),
        "the refusal never quotes the answer"
    );
    let r = asked(&h, "/deny", &reply("Use a for loop in your Python code")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(content(&r), "Use a for loop in your Python code");

    // Streamed: the upstream is asked for the whole answer; the client still gets a stream
    // (with the usage chunk it asked for), or the refusal before any byte of it.
    let streamed = |text: &str| {
        json!({"messages": [{"role": "user", "content": reply(text)}], "stream": true,
               "stream_options": {"include_usage": true}})
    };
    let r = post_json(
        &h.url("/deny"),
        &streamed("Explain Rust code and its compiler"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_upstream_stream(&h), Some(false));
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(streamed_text(&r), "Explain Rust code and its compiler");
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(
        usage["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    let r = post_json(&h.url("/deny"), &streamed("Cook the soup with this recipe")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let log = h.wait_log("guard.log", 4).await;
    let status: Vec<&Value> = log.iter().map(|l| &l["response"]["status"]).collect();
    assert_eq!(status, [403, 200, 200, 403]);

    // Responses API with an allow rule (rules in Redis): on topic passes, as JSON and as
    // the Responses event stream; off topic is refused.
    let responses = |text: &str, stream: bool| json!({"model": "gpt-4o", "input": reply(text), "stream": stream});
    let r = post_json(
        &h.url("/allow"),
        &responses("Your code needs a software update", false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["output"][0]["content"][0]["text"],
        "Your code needs a software update"
    );
    let r = post_json(
        &h.url("/allow"),
        &responses("Your code needs a software update", true),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let events: Vec<Value> = sse_data(&r.text())
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert_eq!(events[0]["type"], "response.created");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "response.completed", "{done}");
    assert_eq!(
        done["response"]["output"][0]["content"][0]["text"],
        "Your code needs a software update"
    );
    let r = post_json(
        &h.url("/allow"),
        &responses("Paris is the capital of France", false),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());

    // With the cache: a hit goes through the guard too (replayed as the stream asked for);
    // a refused answer is never stored.
    let q = reply("Compile the Rust code again");
    assert_eq!(
        asked(&h, "/cached", &q).await.header("x-cache-status"),
        Some("Miss")
    );
    let mut hit = None;
    for _ in 0..50 {
        let r = post_json(
            &h.url("/cached"),
            &json!({"messages": [{"role": "user", "content": q}], "stream": true}),
        )
        .await;
        if r.header("x-cache-status") == Some("Hit") {
            hit = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hit = hit.expect("the answer was stored");
    assert_eq!(hit.status, 200, "{}", hit.text());
    assert_eq!(streamed_text(&hit), "Compile the Rust code again");
    let before = upstream_calls(&h);
    let bad = reply("This soup recipe needs a hot kitchen");
    assert_eq!(asked(&h, "/cached", &bad).await.status, 403);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = asked(&h, "/cached", &bad).await;
    assert_eq!(
        (again.status, again.header("x-cache-status")),
        (403, Some("Miss"))
    );
    assert_eq!(upstream_calls(&h), before + 2);

    // What the guard cannot check is refused (Kong fails closed): an answer over
    // `max_response_body_size`, an embeddings provider that is down.
    let r = asked(
        &h,
        "/small",
        &reply("A short answer that still makes a body of more than 64 bytes"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = asked(&h, "/blind", &reply("hello")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // Each guard embedded its rules once, however many answers it checked.
    let rule_calls = h
        .mock
        .requests()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("Cooking recipes and baking food"))
        .count();
    assert_eq!(rule_calls, 2, "/deny and /cached each once");
    // Upstream errors pass as they are (there is no answer to check).
    let r = asked(&h, "/deny", "[mock:status=429] slow down").await;
    assert_eq!(r.status, 429, "{}", r.text());
}

/// A route whose ai-proxy would never give the guard a whole OpenAI answer is refused at
/// load, naming the plugin.
#[test]
fn the_response_guard_refuses_routes_it_cannot_check() {
    let doc = |ai_extra: &str| {
        format!(
            r#"
_format_version: "3.0"
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: r
        paths: ["/r"]
        plugins:
          - name: ai-semantic-response-guard
            config:
              rules: {{deny_responses: ["x"]}}
              embeddings: {{model: {{provider: openai, name: e, options: {{upstream_url: "http://127.0.0.1:1/v1/embeddings"}}}}}}
              vectordb: {{dimensions: 8, distance_metric: cosine}}
          - name: ai-proxy
            config: {{route_type: llm/v1/chat, {ai_extra} model: {{provider: openai, name: m}}}}
"#
        )
    };
    let load = |text: &str| {
        let env = |_: &str| None;
        let raw = tollgate::config::parse_document(text, &env).unwrap();
        tollgate::gateway::Snapshot::compile(raw, &env)
            .err()
            .map(|e| e.0.iter().map(|i| i.to_string()).collect::<Vec<_>>())
    };
    assert_eq!(load(&doc("")), None);
    for (extra, why) in [
        ("response_streaming: always,", "response_streaming: always"),
        ("llm_format: anthropic,", "llm_format anthropic"),
    ] {
        let e = load(&doc(extra)).expect("refused");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("services[0].routes[0].plugins[0]: ai-semantic-response-guard checks whole OpenAI-format answers, but its ai-proxy has "), "{e:?}");
        assert!(e[0].contains(why), "{e:?}");
    }
}

/// Three targets described in one line each, as Kong's semantic balancer has them; with
/// `{CODE}`, `{MATH}` and `{TRAVEL}` replaced by utterances (or nothing). The embeddings are
/// mock-llm's lexical model (`mock-words`): texts are as close as the words they share, so a
/// one-line description is found only by prompts that use its words.
const ACCURACY: &str = r#"
_format_version: "3.0"
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: assistants
        paths: ["/assistants"]
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer: {algorithm: semantic}
              embeddings:
                model: {provider: openai, name: mock-words, options: {upstream_url: "{MOCK}/v1/embeddings"}}
              vectordb: {dimensions: 256, distance_metric: cosine, threshold: 2}
              targets:
                - {route_type: llm/v1/chat, description: "Programming and software development", {CODE} model: {provider: openai, name: code, options: {upstream_url: "{MOCK}/v1/chat/completions"}}}
                - {route_type: llm/v1/chat, description: "Mathematics and calculations", {MATH} model: {provider: openai, name: math, options: {upstream_url: "{MOCK}/v1/chat/completions"}}}
                - {route_type: llm/v1/chat, description: "Travel planning and tourism", {TRAVEL} model: {provider: openai, name: travel, options: {upstream_url: "{MOCK}/v1/chat/completions"}}}
"#;

/// Example requests for each target, written as a user tuning the router would write them
/// (none is a prompt of the labelled set).
const UTTERANCES: [(&str, &str); 3] = [
    (
        "{CODE}",
        r#"utterances: ["fix this bug in my function", "why does my script throw an error", "write a unit test for this class", "refactor this code to make it faster", "install a package with npm or pip", "explain this compiler error message", "what does this regular expression match", "review my pull request and the API design", "debug a crash in my program", "read and parse a file in Python, Java or Rust"],"#,
    ),
    (
        "{MATH}",
        r#"utterances: ["solve this equation for x", "what is the derivative of this function", "compute the integral over an interval", "calculate the probability of rolling two sixes", "what is 15 percent of 240", "prove that the square root of two is irrational", "find the area of a triangle with these sides", "simplify this fraction and factor the polynomial", "multiply and divide these numbers", "what is the average of these values"],"#,
    ),
    (
        "{TRAVEL}",
        r#"utterances: ["plan a three day trip to Rome", "which hotel should I book near the beach", "cheap flights to Tokyo in spring", "do I need a visa to visit Canada", "best things to see in Paris for a weekend", "pack a suitcase for a hiking holiday", "recommend restaurants and sights for my vacation", "how early should I arrive at the airport for my flight", "where to stay on a first visit to a city", "a family holiday by the sea"],"#,
    ),
];

/// The share of the labelled prompts `tollgate route-test` sends to their target.
async fn routing_accuracy(utterances: bool) -> (usize, usize) {
    let labelled: Vec<(String, String)> = include_str!("fixtures/routing/labelled.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (t, p) = l.split_once('\t').unwrap();
            (t.to_string(), p.to_string())
        })
        .collect();
    let mock = mock_llm::MockLlm::start().await.unwrap();
    let mut yaml = ACCURACY.replace("{MOCK}", &mock.url());
    for (k, v) in UTTERANCES {
        yaml = yaml.replace(k, if utterances { v } else { "" });
    }
    let dir = support::tempdir::TempDir::new();
    let file = dir.path().join("kong.yaml");
    std::fs::write(&file, yaml).unwrap();
    let prompts: Vec<String> = labelled.iter().map(|(_, p)| p.clone()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("route-test")
            .arg(&file)
            .args(&prompts)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let went: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("→ openai/"))
        .collect();
    assert_eq!(went.len(), labelled.len(), "{text}");
    let right = labelled
        .iter()
        .zip(&went)
        .filter(|((target, _), to)| target == *to)
        .count();
    (right, labelled.len())
}

/// A routing-accuracy figure: 66 labelled prompts over three targets, routed by the
/// descriptions alone and with ten example utterances per target (written as a user would,
/// without looking at the labelled prompts), through `tollgate route-test`.
#[tokio::test]
async fn utterances_make_semantic_routing_accurate() {
    let (bare, n) = routing_accuracy(false).await;
    let (taught, _) = routing_accuracy(true).await;
    println!("routing accuracy over {n} labelled prompts: descriptions only {bare}/{n}, with utterances {taught}/{n}");
    assert!(n >= 60);
    // The model is deterministic, so these are the figures, not estimates (21/66 and 40/66
    // when written): a lexical model finds a one-line description only through its own
    // words, so alone it does no better than chance over three targets.
    assert!(
        taught >= bare + n / 5,
        "descriptions only {bare}/{n}, with utterances {taught}/{n}"
    );
    assert!(taught * 100 >= n * 55, "with utterances only {taught}/{n}");
}

/// A pgvector store is checked as the config goes into service, for the cache and both
/// guards: an unreachable database is a warning naming the field (tried again on the first
/// request), not a refusal.
#[test]
fn semantic_plugins_check_pgvector_as_they_go_into_service() {
    let store = "vectordb: {dimensions: 8, distance_metric: cosine, strategy: pgvector, pgvector: {host: 127.0.0.1, port: 1, database: x}}";
    let embeddings = r#"embeddings: {model: {provider: openai, name: e, options: {upstream_url: "http://127.0.0.1:1/v1/embeddings"}}}"#;
    for (name, rules) in [
        ("ai-semantic-cache", ""),
        ("ai-semantic-prompt-guard", "rules: {deny_prompts: [x]}, "),
        (
            "ai-semantic-response-guard",
            "rules: {deny_responses: [x]}, ",
        ),
    ] {
        let doc = format!(
            "_format_version: \"3.0\"\nplugins:\n  - name: {name}\n    config: {{{rules}{embeddings}, {store}}}\n"
        );
        let env = |_: &str| None;
        let raw = tollgate::config::parse_document(&doc, &env).unwrap();
        let mut snap = tollgate::gateway::Snapshot::compile(raw, &env).unwrap();
        snap.activate().unwrap();
        let w: Vec<String> = snap.warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            w.iter()
                .any(|w| w.starts_with("plugins[0].config.vectordb.pgvector: ")
                    && w.contains("tried again on the first request")),
            "{name}: {w:?}"
        );
    }
}

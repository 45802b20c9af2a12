//! Governance: consumers and API keys (`key-auth`). Keys are stored hashed, shown once at
//! creation, and never reach the upstream; the upstream learns who called.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{get, send, Harness, Reply};

const CONFIG: &str = r#"
_format_version: "3.0"
consumers:
  - username: alice
    custom_id: app-1
    keyauth_credentials:
      - key: alice-key-123
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          model: {provider: openai, name: alice-model, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
  - username: guest
  - username: carol
    keyauth_credentials:
      - key: carol-key-456
consumer_groups:
  - name: gold
    consumers: [{username: carol}, {username: alice}]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          model: {provider: openai, name: gold-model, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
services:
  - name: s
    url: http://unused.invalid
    routes:
      - name: chat
        paths: ["/chat"]
        plugins:
          - name: key-auth
            config: {key_names: [ApiKey, apikey], realm: tollgate}
          - name: file-log
            config: {path: "{DIR}/chat.log"}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: open
        paths: ["/open"]
        plugins:
          - name: key-auth
            config: {anonymous: guest}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
"#;

/// POSTs `body` as JSON with the extra `headers`.
async fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send("POST", url, &all, body.to_string()).await
}

async fn chat(h: &Harness, path: &str, headers: &[(&str, &str)]) -> Reply {
    let hi = json!({"messages": [{"role": "user", "content": "hi"}]});
    post(&h.url(path), headers, &hi).await
}

#[tokio::test]
async fn key_auth_identifies_the_consumer_and_hides_the_key() {
    let h = Harness::start(CONFIG).await;
    let r = chat(&h, "/chat", &[]).await;
    assert_eq!(r.status, 401);
    assert!(
        r.text().contains("No API key found in request"),
        "{}",
        r.text()
    );
    assert_eq!(r.header("www-authenticate"), Some("Key realm=\"tollgate\""));
    let r = chat(&h, "/chat", &[("ApiKey", "wrong")]).await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("Unauthorized"), "{}", r.text());
    assert!(h.mock.requests().is_empty());

    let r = chat(
        &h,
        "/chat",
        &[
            ("ApiKey", "alice-key-123"),
            ("x-consumer-username", "mallory"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = h.mock.last_request().unwrap();
    assert_eq!(seen.header("x-consumer-username"), Some("alice"));
    assert_eq!(seen.header("x-consumer-custom-id"), Some("app-1"));
    assert!(seen.header("x-consumer-id").is_some());
    assert!(seen.header("x-credential-identifier").is_some());
    assert!(
        seen.header("apikey").is_none(),
        "the key never reaches the upstream"
    );
    assert!(!format!("{:?}", seen.headers).contains("alice-key-123"));

    // From the query string too, removed before the upstream.
    let r = chat(&h, "/chat?apikey=alice-key-123&x=1", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!h
        .mock
        .last_request()
        .unwrap()
        .path
        .contains("alice-key-123"));
    // The same key twice is refused.
    let r = send(
        "POST",
        &h.url("/chat"),
        &[
            ("content-type", "application/json"),
            ("ApiKey", "a"),
            ("ApiKey", "b"),
        ],
        "{}",
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("Duplicate API key found"), "{}", r.text());

    // anonymous: no key → the anonymous consumer.
    let r = chat(&h, "/open", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = h.mock.last_request().unwrap();
    assert_eq!(seen.header("x-anonymous-consumer"), Some("true"));
    assert_eq!(seen.header("x-consumer-username"), Some("guest"));
}

#[tokio::test]
async fn keys_are_created_shown_once_and_stored_hashed() {
    let h = Harness::start(CONFIG).await;
    let admin = |p: &str| h.admin(p);
    let r = send(
        "POST",
        &admin("/consumers/alice/key-auth"),
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("tg_") && key.len() > 40, "{key}");
    let id = created["id"].as_str().unwrap().to_string();
    let again = get(&admin(&format!("/key-auths/{id}"))).await.json();
    assert_eq!(again["key"], "[REDACTED]");
    assert_eq!(
        get(&admin(&format!("/key-auths/{key}"))).await.json()["id"],
        id.as_str()
    );
    assert_eq!(
        get(&admin(&format!("/key-auths/{id}/consumer")))
            .await
            .json()["username"],
        "alice"
    );
    let list = get(&admin("/consumers/alice/key-auth")).await.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let cfg = get(&admin("/config")).await.text();
    assert!(
        !cfg.contains(&key) && !cfg.contains("alice-key-123"),
        "{cfg}"
    );
    assert!(cfg.contains("sha256:"), "{cfg}");
    assert_eq!(chat(&h, "/chat", &[("ApiKey", &key)]).await.status, 200);

    // ttl: the key stops working when it expires. Expiry is counted in whole seconds from
    // the second the key was created, so a ttl of 1 could leave it under a second of life
    // on a busy machine; 3 leaves it at least 2.
    let r = send(
        "POST",
        &admin("/consumers/alice/key-auth"),
        &[("content-type", "application/json")],
        json!({"key": "short-lived-key", "ttl": 3}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["key"], "short-lived-key");
    assert_eq!(
        chat(&h, "/chat", &[("ApiKey", "short-lived-key")])
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        chat(&h, "/chat", &[("ApiKey", "short-lived-key")])
            .await
            .status,
        401
    );

    // A key in use is a 409 (without echoing it); deleting the consumer revokes its keys.
    let r = send(
        "POST",
        &admin("/consumers/guest/key-auth"),
        &[("content-type", "application/json")],
        json!({"key": "alice-key-123"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(!r.text().contains("alice-key-123"));
    assert_eq!(
        send("DELETE", &admin("/consumers/alice"), &[], "")
            .await
            .status,
        204
    );
    assert_eq!(chat(&h, "/chat", &[("ApiKey", &key)]).await.status, 401);
    let v: Value = get(&admin("/key-auths")).await.json();
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        1,
        "only carol's is left"
    );
}

/// `tollgate keys create` through the Admin API of a running gateway.
#[tokio::test]
async fn the_keys_cli_creates_a_working_key() {
    let h = Harness::start(CONFIG).await;
    let admin = format!("http://{}", h.gw.admin_addr.unwrap());
    let run = |args: Vec<String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .env_remove("TOLLGATE_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let base = |c: &str| {
        vec![
            "keys".to_string(),
            "create".into(),
            "--consumer".into(),
            c.into(),
            "--admin".into(),
            admin.clone(),
        ]
    };
    let args = base("nobody");
    // Off the test's runtime: the gateway answering the CLI runs on it.
    let out = tokio::task::spawn_blocking(move || run(args))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no consumer 'nobody'"));
    let mut args = base("bob");
    args.push("--create-consumer".into());
    let out = tokio::task::spawn_blocking(move || run(args))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("tg_"), "{key}");
    let r = chat(&h, "/chat", &[("ApiKey", &key)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.mock.last_request().unwrap().header("x-consumer-username"),
        Some("bob")
    );
}

/// After authentication the consumer's own plugins apply (Kong's precedence), and the log
/// record names the consumer but never holds the key.
#[tokio::test]
async fn consumer_plugins_apply_and_the_log_names_the_consumer() {
    let h = Harness::start(CONFIG).await;
    let r = chat(&h, "/chat?apikey=alice-key-123", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["model"],
        "alice-model",
        "alice's own ai-proxy instance"
    );
    let r = chat(&h, "/open", &[]).await;
    assert_eq!(
        r.json()["model"],
        "m",
        "the anonymous guest gets the route's"
    );
    let r = chat(&h, "/chat", &[("ApiKey", "alice-key-123")]).await;
    assert_eq!(
        r.json()["model"],
        "alice-model",
        "the consumer's own beats its group's"
    );
    let log = h.wait_log("chat.log", 2).await;
    assert_eq!(log.len(), 2);
    // carol has no plugin of her own: her group's applies.
    let r = chat(&h, "/chat", &[("ApiKey", "carol-key-456")]).await;
    assert_eq!(r.json()["model"], "gold-model", "{}", r.text());
    assert_eq!(log[0]["consumer"]["username"], "alice", "{}", log[0]);
    assert!(log[0]["authenticated_entity"]["id"].is_string());
    assert_eq!(log[0]["request"]["querystring"]["apikey"], "REDACTED");
    assert_eq!(log[1]["request"]["headers"]["apikey"], "REDACTED");
    let text = std::fs::read_to_string(h.dir.path().join("chat.log")).unwrap();
    assert!(!text.contains("alice-key-123"), "{text}");
}

// ---------------------------------------------------------------------------------------
// Quotas: rate-limiting (requests) and ai-rate-limiting-advanced (tokens).

/// A fresh id, so counters in the shared Redis never carry over between runs.
fn fresh_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = t ^ u128::from(std::process::id()) << 64;
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Waits out the last seconds of an hour so a test's hour window cannot roll over mid-test.
async fn not_at_hour_end() {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 3600 - s % 3600;
    if left < 10 {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

/// A `tollgate serve` process on the config file `path`.
struct Node {
    child: std::process::Child,
    proxy: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(path: &std::path::Path) -> Node {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(path)
        .args(["--proxy-listen", "127.0.0.1:0", "--admin-listen", "off"])
        .env("TOLLGATE_PROXY_TLS_LISTEN", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let proxy = loop {
        let line = lines.next().expect("tollgate printed its address").unwrap();
        if let Some(a) = line.strip_prefix("tollgate proxy on ") {
            break a.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Node { child, proxy }
}

const QUOTAS: &str = r#"
_format_version: "3.0"
consumers:
  - username: app1
    keyauth_credentials: [{key: app1-key}]
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: requests
        paths: ["/requests"]
        plugins:
          - name: key-auth
            config: {key_names: [ApiKey]}
          - name: rate-limiting
            id: {RL_ID}
            config: {hour: 5, policy: redis, redis: {host: 127.0.0.1, port: 6379}}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: tokens
        paths: ["/tokens"]
        plugins:
          - name: key-auth
            config: {key_names: [ApiKey]}
          - name: ai-rate-limiting-advanced
            id: {ARL_ID}
            config:
              strategy: redis
              window_type: fixed
              reserve_in_flight: false
              redis: {host: 127.0.0.1, port: 6379}
              llm_providers: [{name: openai, limit: [60], window_size: [3600]}]
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
"#;

/// Two gateway processes share one Redis: a request quota of 5 admits exactly 5 requests
/// across both, and a token quota admits requests until its tokens are spent.
#[tokio::test]
async fn two_gateway_processes_share_quotas_through_redis() {
    not_at_hour_end().await;
    let mock = mock_llm::MockLlm::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-quota-{}", fresh_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kong.yaml");
    let text = QUOTAS
        .replace("{MOCK}", &mock.url())
        .replace("{RL_ID}", &fresh_id())
        .replace("{ARL_ID}", &fresh_id());
    std::fs::write(&path, text).unwrap();
    let (a, b) = (node(&path), node(&path));
    let hi = json!({"messages": [{"role": "user", "content": "hi"}]});
    let call = |n: &Node, route: &str| {
        let url = format!("{}{route}", n.proxy);
        let hi = hi.clone();
        async move { post(&url, &[("ApiKey", "app1-key")], &hi).await }
    };

    // Requests: 5 per hour, whichever node answers.
    for i in 0..5 {
        let n = if i % 2 == 0 { &a } else { &b };
        let r = call(n, "/requests").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.header("x-ratelimit-limit-hour"), Some("5"));
        assert_eq!(
            r.header("x-ratelimit-remaining-hour"),
            Some((4 - i).to_string().as_str())
        );
    }
    for n in [&a, &b] {
        let r = call(n, "/requests").await;
        assert_eq!(r.status, 429, "{}", r.text());
        assert_eq!(r.json()["error"]["message"], "API rate limit exceeded");
        assert_eq!(r.json()["error"]["type"], "rate_limit_exceeded");
        assert_eq!(r.header("x-ratelimit-remaining-hour"), Some("0"));
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&retry), "{retry}");
        assert_eq!(r.header("x-ratelimit-reset"), r.header("retry-after"));
    }
    assert_eq!(
        mock.requests().len(),
        5,
        "refused requests never reach the upstream"
    );

    // Tokens: 60 per hour. "hi" is estimated at 8 prompt tokens (3 per message + role +
    // text + 3 priming); the real usage is charged after each answer.
    const ESTIMATE: u64 = 8;
    let mut spent = 0;
    let mut admitted = 0;
    loop {
        let n = if admitted % 2 == 0 { &a } else { &b };
        let r = call(n, "/tokens").await;
        if r.status == 429 {
            assert!(
                spent + ESTIMATE > 60,
                "refused with {spent} of 60 spent: {}",
                r.text()
            );
            // Kong's text, then what ran out and when it frees up.
            let message = r.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(
                message.starts_with("AI token rate limit exceeded for provider(s): openai ("),
                "{message}"
            );
            assert!(message.contains(" of 60 tokens used"), "{message}");
            assert_eq!(r.header("x-ai-ratelimit-limit-3600-openai"), Some("60"));
            let left = 60u64.saturating_sub(spent).to_string();
            assert_eq!(
                r.header("x-ai-ratelimit-remaining-3600-openai"),
                Some(left.as_str())
            );
            assert!(r.header("x-ai-ratelimit-retry-after-3600-openai").is_some());
            assert!(r.header("retry-after").is_some());
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(spent + ESTIMATE <= 60, "admitted with {spent} spent");
        let left = (60 - spent).to_string();
        assert_eq!(
            r.header("x-ai-ratelimit-remaining-3600-openai"),
            Some(left.as_str()),
            "the previous answers' usage was charged"
        );
        spent += r.json()["usage"]["total_tokens"].as_u64().unwrap();
        admitted += 1;
        assert!(admitted < 60, "never refused");
        // The charge lands in Redis right after the answer; give it a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted >= 2, "both nodes charged the same quota");
    let _ = std::fs::remove_dir_all(&dir);
}

const LOCAL_QUOTAS: &str = r#"
_format_version: "3.0"
consumers:
  - username: app1
    keyauth_credentials: [{key: app1-key}]
  - username: app2
    keyauth_credentials: [{key: app2-key}]
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: tokens
        paths: ["/tokens"]
        plugins:
          - name: key-auth
            config: {key_names: [ApiKey]}
          - name: ai-rate-limiting-advanced
            config:
              policies:
                - match: [{type: model, values: [big-model]}]
                  limits: [{limit: 100000, window_size: 60}]
                - limits: [{limit: 200, window_size: 60}]
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: per-second
        paths: ["/per-second"]
        plugins:
          - name: rate-limiting
            config: {second: 2, limit_by: ip}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: down-open
        paths: ["/down-open"]
        plugins:
          - name: rate-limiting
            config: {minute: 100, policy: redis, redis: {host: 127.0.0.1, port: 1}}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: down-closed
        paths: ["/down-closed"]
        plugins:
          - name: rate-limiting
            config: {minute: 100, policy: redis, fault_tolerant: false, redis_host: 127.0.0.1, redis_port: 1}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
"#;

/// In-memory token quotas: the prompt estimate must fit before the request, streamed
/// usage is charged after it, each consumer has its own counters, and policies pick
/// limits by model. A Redis outage lets requests through or refuses them as configured.
#[tokio::test]
async fn token_quotas_estimate_prompts_charge_streams_and_pick_policies() {
    let h = Harness::start(LOCAL_QUOTAS).await;
    let ask = |key: &'static str, model: &'static str, text: String, stream: bool| {
        let url = h.url("/tokens");
        let body = json!({"model": model, "stream": stream,
                          "messages": [{"role": "user", "content": text}]});
        async move { post(&url, &[("ApiKey", key)], &body).await }
    };
    // A prompt that alone needs more than the 200-token fallback quota is refused before
    // reaching the upstream, as too large for the quota (no wait would help).
    let long = "lorem ipsum ".repeat(150);
    let r = ask("app1-key", "m", long.clone(), false).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "prompt_exceeds_quota");
    assert!(r.header("retry-after").is_none());
    assert!(h.mock.requests().is_empty());
    // The model-matched policy has room for it.
    let r = ask("app1-key", "big-model", long, false).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ai-ratelimit-limit-60-policy1"), Some("100000"));

    // A stream without include_usage is still charged its real usage.
    let r = ask("app1-key", "m", "hi there".into(), true).await;
    assert_eq!(r.status, 200);
    let events = support::sse_data(&r.text());
    assert!(
        events.iter().all(|e| !e.contains("\"usage\":{")),
        "the usage chunk the gateway asked for is not shown to the client"
    );
    let r = ask("app1-key", "m", "hi".into(), false).await;
    let left: u64 = r
        .header("x-ai-ratelimit-remaining-60-policy2")
        .unwrap()
        .parse()
        .unwrap();
    assert!(left < 200, "the stream's usage was charged: {left} left");
    // The Admin API lists this node's counters, by consumer name.
    let q = get(&h.admin("/quotas")).await.json();
    let mine = q["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["key"]
                .as_str()
                .unwrap()
                .starts_with("consumer:app1:policy2")
        })
        .unwrap_or_else(|| panic!("{q}"))
        .clone();
    assert_eq!(mine["plugin"], "ai-rate-limiting-advanced");
    assert_eq!(mine["limit"], 200.0);
    assert!(mine["used"].as_f64().unwrap() > 0.0, "{mine}");
    // app2 has its own counters: only its own reservation (8 prompt + 10 completion
    // tokens) is taken from them.
    let body = json!({"model": "m", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = post(&h.url("/tokens"), &[("ApiKey", "app2-key")], &body).await;
    assert_eq!(r.header("x-ai-ratelimit-remaining-60-policy2"), Some("182"));

    // A spent window refuses until it resets, then admits again.
    let mut refused = None;
    for _ in 0..4 {
        let r = chat(&h, "/per-second", &[]).await;
        if r.status == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let refused = refused.expect("a third request within one second is refused");
    assert_eq!(refused.header("x-ratelimit-limit-second"), Some("2"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        chat(&h, "/per-second", &[]).await.status,
        200,
        "the window reset"
    );

    // Redis unreachable: fault_tolerant (default) proxies, fault_tolerant: false refuses.
    let r = chat(&h, "/down-open", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = chat(&h, "/down-closed", &[]).await;
    assert_eq!(r.status, 500, "{}", r.text());
    let status = get(&h.admin("/status")).await.json();
    let errors = status["quotas"]["store_errors"].as_u64().unwrap();
    assert!(errors >= 2, "{status}");
    assert!(
        status["quotas"]["rejections"].as_u64().unwrap() >= 1,
        "{status}"
    );
}

// ---------------------------------------------------------------------------------------
// Prompt shaping: ai-prompt-template, ai-prompt-decorator, ai-prompt-guard.

const PROMPTS: &str = r#"
_format_version: "3.0"
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: chat
        paths: ["/chat"]
        plugins:
          - name: ai-prompt-template
            config:
              templates:
                - name: translate
                  template: '{"messages": [{"role": "user", "content": "Translate to {{lang}}: {{text}}"}]}'
          - name: ai-prompt-decorator
            config:
              prompts:
                prepend: [{role: system, content: "You are the ACME assistant."}]
                append: [{role: user, content: "Answer briefly."}]
          - name: ai-prompt-guard
            config:
              deny_patterns: ['(?i)password']
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: short
        paths: ["/short"]
        plugins:
          - name: ai-prompt-guard
            config: {deny_patterns: [secret], max_request_body_size: 200}
          - name: ai-prompt-length-guard
            config: {max_prompt_chars: 20, max_prompt_tokens: 12}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: responses
        paths: ["/v1/responses"]
        plugins:
          - name: ai-prompt-decorator
            config:
              prompts:
                prepend: [{role: system, content: "Follow ACME policy."}]
          - name: ai-proxy
            config:
              route_type: llm/v1/responses
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/responses"}}
"#;

#[tokio::test]
async fn prompt_template_decorator_and_guard_shape_what_the_upstream_sees() {
    let h = Harness::start(PROMPTS).await;
    let post = |path: &str, v: Value| {
        let url = h.url(path);
        async move { post(&url, &[], &v).await }
    };
    let r = post(
        "/chat",
        json!({"messages": "{template://translate}", "properties": {"lang": "French", "text": "say \"hi\""}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value = serde_json::from_slice(&h.mock.last_request().unwrap().body).unwrap();
    let m = sent["messages"].as_array().unwrap();
    assert_eq!(
        m[0],
        json!({"role": "system", "content": "You are the ACME assistant."})
    );
    assert_eq!(m[1]["content"], "Translate to French: say \"hi\"");
    assert_eq!(m[2], json!({"role": "user", "content": "Answer briefly."}));

    let r = post("/chat", json!({"messages": "{template://nope}"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "could not find template name [nope]"
    );

    let before = h.mock.requests().len();
    let r = post(
        "/chat",
        json!({"messages": [{"role": "user", "content": "what is the admin Password?"}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["message"], "bad request");
    assert_eq!(
        h.mock.requests().len(),
        before,
        "a guarded prompt never leaves"
    );

    // The length guard names the limit and the size, never the text.
    let msg = |t: &str| json!({"messages": [{"role": "user", "content": t}]});
    assert_eq!(post("/short", msg("short enough")).await.status, 200);
    let r = post("/short", msg("this prompt is longer than twenty")).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "prompt is too long: 33 characters, the limit is 20"
    );
    let r = post("/short", msg("a b c d e f g h i j")).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("tokens, the limit is 12"),
        "{}",
        r.text()
    );

    // A body above a prompt plugin's max_request_body_size is a 413.
    let r = post("/short", msg(&"x".repeat(300))).await;
    assert_eq!(r.status, 413, "{}", r.text());

    // Responses (Codex): the decorator's text leads the instructions.
    let r = post(
        "/v1/responses",
        json!({"model": "m", "instructions": "Be terse.", "input": "hello"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value = serde_json::from_slice(&h.mock.last_request().unwrap().body).unwrap();
    assert_eq!(sent["instructions"], "Follow ACME policy.\n\nBe terse.");
}

// ---------------------------------------------------------------------------------------
// ai-sanitizer: personal data masked before the upstream, restored in the answer.

const PII: &str = r#"
_format_version: "3.0"
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: pii
        paths: ["/pii"]
        plugins:
          - name: ai-sanitizer
            config:
              anonymize: [all_and_credentials, custom]
              custom_patterns: [{name: employee, regex: 'EMP-\d{6}'}]
          - name: file-log
            config: {path: "{DIR}/pii.log"}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              logging: {log_payloads: true, log_statistics: true}
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: block
        paths: ["/block"]
        plugins:
          - name: ai-sanitizer
            config: {block_if_detected: true}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: responses
        paths: ["/v1/responses"]
        plugins:
          - name: ai-sanitizer
            config: {recover_redacted: false}
          - name: ai-proxy
            config:
              route_type: llm/v1/responses
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/responses"}}
"#;

#[tokio::test]
async fn pii_is_masked_before_the_upstream_and_restored_in_the_answer() {
    let h = Harness::start(PII).await;
    let prompt = "Mail bob@example.com, card 4111 1111 1111 1111, id EMP-123456, key sk-proj-Ab3dEf9hIj2kLm5nOp7q";
    let secrets = [
        "bob@example.com",
        "4111 1111 1111 1111",
        "EMP-123456",
        "sk-proj-Ab3dEf9hIj2kLm5nOp7q",
    ];
    let reply = "reply=Saved [EMAIL_1] and [CREDITCARD_1] for [EMPLOYEE_1]";
    for stream in [false, true] {
        let body = json!({"stream": stream, "messages": [{"role": "user", "content": prompt}]});
        let mock = format!("{reply};split=7");
        let r = post(&h.url("/pii"), &[("x-mock", &mock)], &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let sent = String::from_utf8_lossy(&h.mock.last_request().unwrap().body).into_owned();
        for s in secrets {
            assert!(!sent.contains(s), "{s} reached the upstream: {sent}");
        }
        assert!(
            sent.contains("[EMAIL_1]") && sent.contains("[EMPLOYEE_1]"),
            "{sent}"
        );
        let text = if stream {
            support::sse_data(&r.text())
                .iter()
                .filter(|d| d.as_str() != "[DONE]")
                .map(|d| {
                    let v: Value = serde_json::from_str(d).unwrap();
                    v["choices"][0]["delta"]["content"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .collect::<String>()
        } else {
            r.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            text, "Saved bob@example.com and 4111 1111 1111 1111 for EMP-123456",
            "stream={stream}"
        );
    }

    // The log keeps what the upstream saw and said: placeholders, not the values.
    let log = h.wait_log("pii.log", 2).await;
    let text = serde_json::to_string(&log).unwrap();
    assert!(text.contains("[EMAIL_1]"), "{text}");
    for s in secrets {
        assert!(!text.contains(s), "{s} is in the log");
    }

    // block_if_detected: a 400 that names what was found, never the value.
    let body = json!({"messages": [{"role": "user", "content": "I am bob@example.com"}]});
    let r = post(&h.url("/block"), &[], &body).await;
    assert_eq!(r.status, 400);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("email") && !msg.contains("bob@"), "{msg}");

    // Responses (Codex): instructions and input items are masked too.
    let body = json!({"model": "m", "instructions": "Owner: alice@example.org",
                      "input": [{"type": "message", "role": "user",
                                 "content": [{"type": "input_text", "text": "ping 10.1.2.3"}]}]});
    let r = post(&h.url("/v1/responses"), &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value = serde_json::from_slice(&h.mock.last_request().unwrap().body).unwrap();
    assert_eq!(sent["instructions"], "Owner: [EMAIL_1]");
    assert_eq!(sent["input"][0]["content"][0]["text"], "ping [IP_1]");
}

// ---------------------------------------------------------------------------------------
// Token quotas a client can act on (issue 20, item 1) and reservations (item 17).

const SMALL_QUOTA: &str = r#"
_format_version: "3.0"
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: small
        paths: ["/small"]
        plugins:
          - name: file-log
            config: {path: "{DIR}/quota.log"}
          - name: ai-rate-limiting-advanced
            id: 5f0c3a52-8f7e-4d7e-9d35-1f3b2a9c0a11
            config:
              identifier: ip
              window_type: fixed
              llm_providers: [{name: openai, limit: [100], window_size: [3600]}]
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
"#;

/// This node's counter rows for `plugin_id` (from `GET /quotas`).
async fn quota_rows(h: &Harness, plugin_id: &str) -> Vec<Value> {
    let q = get(&h.admin("/quotas")).await.json();
    q["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["plugin_id"] == plugin_id)
        .cloned()
        .collect()
}

/// What the live counter of `plugin_id` shows now (0 before any).
async fn used_now(h: &Harness, plugin_id: &str) -> f64 {
    quota_rows(h, plugin_id)
        .await
        .iter()
        .find(|r| !r["key"].as_str().unwrap().contains('*'))
        .and_then(|r| r["used"].as_f64())
        .unwrap_or(0.0)
}

/// Waits until the live counter of `plugin_id` shows `used` (settlements run right after
/// each response); returns what it last showed.
async fn wait_used(h: &Harness, plugin_id: &str, used: f64) -> f64 {
    let mut last = f64::NAN;
    for _ in 0..200 {
        last = used_now(h, plugin_id).await;
        if (last - used).abs() < 1e-6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    last
}

/// A prompt larger than the whole quota gets a 413 that says so (no `Retry-After`, so
/// clients stop); an ordinary refusal tells what is left, what the request needs and when
/// it fits; the log record carries the headers and the reason; `/quotas` lists a limit
/// before any request and shows a PATCHed limit at once.
#[tokio::test]
async fn quota_refusals_say_why_and_when_and_quotas_show_configured_limits() {
    not_at_hour_end().await;
    let h = Harness::start(SMALL_QUOTA).await;
    const ID: &str = "5f0c3a52-8f7e-4d7e-9d35-1f3b2a9c0a11";
    let rows = quota_rows(&h, ID).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["key"], "ip:*:openai:total_tokens");
    assert_eq!(rows[0]["limit"], 100.0);
    assert_eq!(rows[0]["used"], 0.0);
    assert_eq!(rows[0]["window"], 3600);

    let ask = |text: String| {
        let url = h.url("/small");
        let body = json!({"max_tokens": 5, "messages": [{"role": "user", "content": text}]});
        async move { post(&url, &[], &body).await }
    };
    let r = ask("lorem ipsum ".repeat(150)).await;
    assert_eq!(r.status, 413, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["code"], "prompt_exceeds_quota");
    let message = e["message"].as_str().unwrap();
    let tokens: u64 = message
        .split("about ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    assert!(tokens > 100, "the prompt's estimate is named: {message}");
    assert!(
        message.contains("100 tokens per 3600 s (openai)"),
        "{message}"
    );
    assert!(r.header("retry-after").is_none());
    assert!(r.header("x-ai-ratelimit-retry-after").is_none());
    assert_eq!(r.header("x-ai-ratelimit-limit-3600-openai"), None);
    assert!(h.mock.requests().is_empty());

    // 20 words: the mock counts 20 prompt tokens and answers 3.
    let words = "alpha beta gamma delta epsilon ".repeat(4);
    let mut spent = 0.0;
    let refused = loop {
        let r = ask(words.clone()).await;
        if r.status != 200 {
            break r;
        }
        spent += r.json()["usage"]["total_tokens"].as_f64().unwrap();
        assert_eq!(
            wait_used(&h, ID, spent).await,
            spent,
            "settled to the real usage"
        );
        assert!(spent < 100.0, "never refused");
    };
    assert_eq!(refused.status, 429, "{}", refused.text());
    let left = (100.0 - spent).to_string();
    assert_eq!(
        refused.header("x-ai-ratelimit-remaining-3600-openai"),
        Some(left.as_str()),
        "what is really left"
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    let reset: u64 = refused
        .header("x-ai-ratelimit-reset-3600-openai")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, reset, "a fixed window frees up when it ends");
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with("AI token rate limit exceeded for provider(s): openai ("),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "openai: {spent} of 100 tokens used or reserved in the 3600 s window, this request needs"
        )),
        "{message}"
    );
    assert!(
        message.ends_with(&format!("retry in {retry} s)")),
        "{message}"
    );

    // The log records of both refusals carry the quota headers and the reason.
    let lines = h.wait_log("quota.log", 3).await;
    let over = lines
        .iter()
        .find(|l| l["response"]["status"] == 413)
        .unwrap();
    assert_eq!(over["quota_refusal"]["code"], "prompt_exceeds_quota");
    let limited = lines
        .iter()
        .find(|l| l["response"]["status"] == 429)
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(limited["quota_refusal"]["code"], "rate_limit_exceeded");
    assert_eq!(limited["quota_refusal"]["message"], message.as_str());
    let headers = &limited["response"]["headers"];
    assert_eq!(headers["x-ai-ratelimit-limit-3600-openai"], "100");
    assert_eq!(
        headers["x-ai-ratelimit-remaining-3600-openai"],
        left.as_str()
    );
    assert_eq!(headers["retry-after"], retry.to_string());

    // The counter is listed by who it counts, and a PATCHed limit shows at once.
    let rows = quota_rows(&h, ID).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["key"], "ip:127.0.0.1:openai:total_tokens");
    assert_eq!(rows[0]["used"], spent);
    let r = send(
        "PATCH",
        &h.admin(&format!("/plugins/{ID}")),
        &[("content-type", "application/json")],
        json!({"config": {"llm_providers": [{"name": "openai", "limit": [1000], "window_size": [3600]}]}})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rows = quota_rows(&h, ID).await;
    assert_eq!(rows[0]["limit"], 1000.0, "{rows:?}");
    assert_eq!(rows[0]["used"], spent);
}

const BUSY: &str = r#"
_format_version: "3.0"
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: busy
        paths: ["/busy"]
        plugins:
          - name: ai-rate-limiting-advanced
            id: {ARL_ID}
            config:
              identifier: ip
              window_type: fixed
              {STORE}
              llm_providers: [{name: openai, limit: [1000], window_size: [3600]}]
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
"#;

/// 64 clients at once, each asking `urls[i % urls.len()]` for a completion the mock
/// answers after 500 ms. Returns (admitted, refused, real tokens of the admitted, the
/// largest single request's tokens); checks that each refusal says that requests in
/// flight hold the quota and that a second's wait may do.
async fn burst(urls: &[String]) -> (usize, usize, f64, f64) {
    let body = json!({"max_tokens": 8, "messages": [{"role": "user",
        "content": "[mock:delay_ms=500] please count these twenty words for me now one two three four five six seven eight nine ten eleven"}]});
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            let body = body.clone();
            tokio::spawn(async move { post(&url, &[], &body).await })
        })
        .collect();
    let (mut ok, mut refused, mut total, mut largest) = (0, 0, 0.0, 0.0f64);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => {
                let used = r.json()["usage"]["total_tokens"].as_f64().unwrap();
                ok += 1;
                total += used;
                largest = largest.max(used);
            }
            429 => {
                refused += 1;
                let message = r.json()["error"]["message"].as_str().unwrap().to_string();
                assert!(message.contains("held by requests in flight"), "{message}");
                assert_eq!(r.header("retry-after"), Some("1"), "{message}");
            }
            s => panic!("{s}: {}", r.text()),
        }
    }
    (ok, refused, total, largest)
}

/// A gateway with the `BUSY` quota route, counters in this process's memory.
async fn busy_local(id: &str) -> Harness {
    Harness::start(
        &BUSY
            .replace("{ARL_ID}", id)
            .replace("{STORE}", "strategy: local"),
    )
    .await
}

/// Concurrent requests each reserve their estimate at admission, so 64 clients against a
/// 1,000-token quota overshoot it by less than one request's tokens; afterwards the
/// counter holds exactly the real usage.
#[tokio::test]
async fn concurrent_requests_reserve_tokens_and_cannot_overshoot_the_quota() {
    not_at_hour_end().await;
    let id = fresh_id();
    let h = busy_local(&id).await;
    let (ok, refused, total, largest) = burst(&[h.url("/busy")]).await;
    assert!(ok >= 2 && refused >= 1, "{ok} admitted, {refused} refused");
    assert!(
        total < 1000.0 + largest,
        "{ok} requests used {total} tokens of a 1000-token quota"
    );
    assert_eq!(
        wait_used(&h, &id, total).await,
        total,
        "reservations settled"
    );
}

/// The same burst through two gateway processes sharing Redis.
#[tokio::test]
async fn two_nodes_reserve_tokens_in_redis_and_cannot_overshoot_the_quota() {
    not_at_hour_end().await;
    let mock = mock_llm::MockLlm::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-reserve-{}", fresh_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kong.yaml");
    let id = fresh_id();
    let text = BUSY
        .replace("{MOCK}", &mock.url())
        .replace("{ARL_ID}", &id)
        .replace(
            "{STORE}",
            "strategy: redis\n              redis: {host: 127.0.0.1, port: 6379}",
        );
    std::fs::write(&path, text).unwrap();
    let (a, b) = (node(&path), node(&path));
    let urls = [format!("{}/busy", a.proxy), format!("{}/busy", b.proxy)];
    let (ok, refused, total, largest) = burst(&urls).await;
    assert!(ok >= 2 && refused >= 1, "{ok} admitted, {refused} refused");
    assert!(
        total < 1000.0 + largest,
        "{ok} requests used {total} tokens of a 1000-token quota on two nodes"
    );
    // The shared counter ends at the real usage and nothing is held any more: every
    // reservation was settled.
    let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let (mut used, mut held) = (0.0, f64::NAN);
    for _ in 0..200 {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("tollgate:quota:ai:{id}:*"))
            .query_async(&mut con)
            .await
            .unwrap();
        keys.sort();
        assert_eq!(
            keys.len(),
            2,
            "the window's counter and the held one: {keys:?}"
        );
        assert!(keys[1].ends_with(":held"), "{keys:?}");
        let v: Vec<String> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut con)
            .await
            .unwrap();
        used = v[0].parse().unwrap();
        held = v[1].parse().unwrap();
        if (used - total).abs() < 1e-6 && held.abs() < 1e-6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(held, 0.0, "nothing held after the burst");
    assert_eq!(used, total, "reservations settled in Redis");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reservation lives as long as its request: an upstream error or a client that goes
/// away gives it back, so the counter returns to the real usage.
#[tokio::test]
async fn reservations_are_released_on_upstream_errors_and_client_disconnects() {
    not_at_hour_end().await;
    let id = fresh_id();
    let h = busy_local(&id).await;
    let url = h.url("/busy");
    let ask = |text: &str| {
        let url = url.clone();
        let body = json!({"max_tokens": 8, "messages": [{"role": "user", "content": text}]});
        async move { post(&url, &[], &body).await }
    };
    let r = ask("hi").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let real = r.json()["usage"]["total_tokens"].as_f64().unwrap();
    assert_eq!(wait_used(&h, &id, real).await, real);

    // The upstream fails: nothing is charged, the reservation goes back.
    let r = ask("hi [mock:status=500]").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(wait_used(&h, &id, real).await, real, "released after a 500");

    // The client goes away while the upstream is still thinking.
    let pending = tokio::spawn(ask("hi [mock:delay_ms=3000]"));
    let mut held = real;
    for _ in 0..100 {
        held = used_now(&h, &id).await;
        if held > real {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        held > real,
        "the request in flight holds its estimate: {held}"
    );
    pending.abort();
    let _ = pending.await;
    assert_eq!(
        wait_used(&h, &id, real).await,
        real,
        "released when the client left"
    );
}

/// `/quotas` reads Redis-backed counters from Redis: a configured limit shows before any
/// request, then the shared counter with its real usage.
#[tokio::test]
async fn quotas_lists_redis_backed_counters() {
    not_at_hour_end().await;
    let id = fresh_id();
    let h = Harness::start(&BUSY.replace("{ARL_ID}", &id).replace(
        "{STORE}",
        "strategy: redis\n              redis: {host: 127.0.0.1, port: 6379}",
    ))
    .await;
    let rows = quota_rows(&h, &id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["key"], "ip:*:openai:total_tokens");
    assert_eq!(rows[0]["store"], "redis");
    assert_eq!(rows[0]["used"], 0.0);
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let r = post(&h.url("/busy"), &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let real = r.json()["usage"]["total_tokens"].as_f64().unwrap();
    assert_eq!(wait_used(&h, &id, real).await, real);
    let rows = quota_rows(&h, &id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["key"], "ip:127.0.0.1:openai:total_tokens");
    assert_eq!(rows[0]["store"], "redis");
    assert_eq!(rows[0]["limit"], 1000.0);
}

const CLAUDE_CODE: &str = r#"
_format_version: "3.0"
consumers:
  - username: cc-app
    keyauth_credentials: [{key: cc-app-key}]
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: cc
        paths: ["/cc"]
        plugins:
          - name: key-auth
            config: {key_names: [x-api-key]}
          - name: ai-rate-limiting-advanced
            config:
              policies:
                - limits: [{limit: 400, window_size: 3600}]
          - name: ai-prompt-decorator
            config:
              prompts:
                prepend: [{role: system, content: "Follow the ACME engineering policy."}]
          - name: ai-sanitizer
            config:
              anonymize: [email]
          - name: file-log
            config: {path: "{DIR}/cc.log"}
          - name: ai-proxy
            config:
              llm_format: anthropic
              route_type: llm/v1/chat
              logging: {log_statistics: true}
              model: {provider: openai, name: gpt-4o, options: {upstream_url: "{MOCK}"}}
"#;

/// Claude Code's requests (Anthropic Messages, its key in `x-api-key`) on a translated
/// route get the same governance as OpenAI clients: key-auth, a prompt decorator, PII
/// masking, a token quota, all errors in Anthropic's shape.
#[tokio::test]
async fn messages_clients_are_governed_like_openai_clients() {
    let h = Harness::start(CLAUDE_CODE).await;
    let url = h.url("/cc/v1/messages?beta=true");
    let ask = |text: &str| {
        json!({"model": "gpt-4o", "max_tokens": 64, "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]})
    };
    let r = post(&url, &[], &ask("hi")).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "authentication_error");

    let key = [("x-api-key", "cc-app-key")];
    let r = post(&url, &key, &ask("mail bob@example.com the plan")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("event: message_stop"), "{}", r.text());
    let up = h.mock.requests()[0].json().unwrap();
    let msgs = up["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "system");
    assert_eq!(msgs[0]["content"], "You are Claude Code.");
    assert!(
        msgs.iter()
            .any(|m| m["content"] == "Follow the ACME engineering policy."),
        "{msgs:?}"
    );
    let user = msgs.iter().find(|m| m["role"] == "user").unwrap();
    let text = user["content"].as_str().unwrap();
    assert!(!text.contains("bob@example.com"), "{text}");
    assert!(text.contains("mail "), "{text}");
    let seen = &h.mock.requests()[0];
    assert!(
        !seen.headers.iter().any(|(k, _)| k == "x-api-key"),
        "the client's key stays at the gateway"
    );
    let log = h.wait_log("cc.log", 2).await;
    let rec = &log[1];
    assert_eq!(rec["consumer"]["username"], "cc-app", "{rec}");
    assert!(
        rec["ai"]["proxy"]["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    // The quota (400 tokens an hour) runs out; the refusal is Anthropic-shaped.
    let mut refused = None;
    for _ in 0..20 {
        let r = post(&url, &key, &ask(&"many words here ".repeat(20))).await;
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the token quota refuses at some point");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
}

const SYNCED: &str = r#"
_format_version: "3.0"
services:
  - name: llm
    url: http://unused.invalid
    routes:
      - name: batched
        paths: ["/batched"]
        plugins:
          - name: ai-rate-limiting-advanced
            id: {SLOW}
            config: {identifier: ip, window_type: fixed, strategy: redis, sync_rate: 30, reserve_in_flight: false, redis: {host: 127.0.0.1, port: 6379}, llm_providers: [{name: openai, limit: [100], window_size: [3600]}]}
          - name: ai-proxy
            config: {route_type: llm/v1/chat, model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}}
      - name: fast
        paths: ["/fast"]
        plugins:
          - name: ai-rate-limiting-advanced
            id: {FAST}
            config: {identifier: ip, window_type: fixed, strategy: redis, sync_rate: 0.2, reserve_in_flight: false, redis: {host: 127.0.0.1, port: 6379}, llm_providers: [{name: openai, limit: [100], window_size: [3600]}]}
          - name: ai-proxy
            config: {route_type: llm/v1/chat, model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}}
      - name: counted
        paths: ["/counted"]
        plugins:
          - name: rate-limiting
            id: {RL}
            config: {hour: 3, limit_by: ip, policy: redis, sync_rate: 30, redis: {host: 127.0.0.1, port: 6379}}
          - name: ai-proxy
            config: {route_type: llm/v1/chat, model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}}
      - name: alone
        paths: ["/alone"]
        plugins:
          - name: ai-rate-limiting-advanced
            id: {ALONE}
            config: {identifier: ip, window_type: fixed, strategy: redis, sync_rate: -1, redis: {host: 127.0.0.1, port: 6379}, llm_providers: [{name: openai, limit: [100], window_size: [3600]}]}
          - name: ai-proxy
            config: {route_type: llm/v1/chat, model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}}
"#;

/// The tokens `url` admits before its first 429 (at most 40 requests).
async fn until_refused(url: &str) -> f64 {
    let body = json!({"messages": [{"role": "user", "content": "count to twenty for me please"}]});
    let mut total = 0.0;
    for _ in 0..40 {
        let r = post(url, &[], &body).await;
        match r.status {
            200 => total += r.json()["usage"]["total_tokens"].as_f64().unwrap(),
            429 => return total,
            s => panic!("{s}: {}", r.text()),
        }
    }
    panic!("{url} never refused: {total} tokens admitted");
}

/// The values of the Redis counters of quota plugin `id`.
async fn redis_counts(id: &str) -> Vec<f64> {
    let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("tollgate:quota:ai:{id}:*"))
        .query_async(&mut con)
        .await
        .unwrap();
    let mut out = Vec::new();
    for k in keys {
        let v: String = redis::cmd("GET")
            .arg(&k)
            .query_async(&mut con)
            .await
            .unwrap();
        out.push(v.parse().unwrap());
    }
    out
}

/// Kong's `sync_rate` on two nodes sharing Redis: a batched instance decides on each node
/// and syncs later (each node may admit the whole limit between syncs, the documented
/// overshoot), a sync brings every node's usage to the others, and -1 keeps counters on
/// the node.
#[tokio::test]
async fn sync_rate_batches_redis_updates_with_bounded_overshoot() {
    not_at_hour_end().await;
    let mock = mock_llm::MockLlm::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-sync-{}", fresh_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kong.yaml");
    let (slow, fast, alone) = (fresh_id(), fresh_id(), fresh_id());
    let text = SYNCED
        .replace("{MOCK}", &mock.url())
        .replace("{SLOW}", &slow)
        .replace("{FAST}", &fast)
        .replace("{ALONE}", &alone)
        .replace("{RL}", &fresh_id());
    std::fs::write(&path, text).unwrap();
    let (a, b) = (node(&path), node(&path));
    let at = |n: &Node, route: &str| format!("{}{route}", n.proxy);

    // Syncing every 30 s: within this test nothing reaches Redis, so each node admits what
    // fits in the whole 100-token limit on its own.
    let on_a = until_refused(&at(&a, "/batched")).await;
    let on_b = until_refused(&at(&b, "/batched")).await;
    assert!(on_a > 50.0, "{on_a}");
    // A response's tokens are charged in its log phase, which runs just after the answer
    // went out: on a busy machine the next request can be decided before the last charge
    // landed, so a node may admit one request (9 tokens) more. Had b seen a's usage, it
    // would admit at most 100 - on_a.
    assert!(
        (on_b - on_a).abs() <= 9.0,
        "b did not see a's usage: a admitted {on_a} tokens, b {on_b}"
    );
    assert_eq!(
        redis_counts(&slow).await,
        Vec::<f64>::new(),
        "no Redis write per request"
    );

    // Syncing every 0.2 s: b has counted one request, then a spends the limit; within a
    // few syncs Redis holds both nodes' usage and b refuses.
    let body = json!({"messages": [{"role": "user", "content": "count to twenty for me please"}]});
    let r = post(&at(&b, "/fast"), &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = r.json()["usage"]["total_tokens"].as_f64().unwrap();
    let on_a = until_refused(&at(&a, "/fast")).await;
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = redis_counts(&fast).await;
        if seen == vec![first + on_a] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, vec![first + on_a], "both nodes' usage synced");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = post(&at(&b, "/fast"), &[], &body).await;
    assert_eq!(r.status, 429, "b learned a's usage: {}", r.text());

    // rate-limiting's `sync_rate` batches the same way: 3 an hour on each node.
    for n in [&a, &b] {
        for i in 0..4 {
            let r = post(&at(n, "/counted"), &[], &body).await;
            assert_eq!(r.status, if i < 3 { 200 } else { 429 }, "{i}: {}", r.text());
        }
    }

    // -1: this node's memory only, whatever the strategy.
    until_refused(&at(&a, "/alone")).await;
    let r = post(&at(&b, "/alone"), &[], &body).await;
    assert_eq!(r.status, 200, "b counts alone: {}", r.text());
    assert_eq!(redis_counts(&alone).await, Vec::<f64>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

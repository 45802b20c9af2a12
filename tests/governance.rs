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

async fn chat(h: &Harness, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send(
        "POST",
        &h.url(path),
        &all,
        json!({"messages": [{"role": "user", "content": "hi"}]}).to_string(),
    )
    .await
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

    // ttl: the key stops working when it expires.
    let r = send(
        "POST",
        &admin("/consumers/alice/key-auth"),
        &[("content-type", "application/json")],
        json!({"key": "short-lived-key", "ttl": 1}).to_string(),
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
    tokio::time::sleep(Duration::from_millis(2100)).await;
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

//! Admin API writes through a running gateway: Kong's CRUD semantics and error bodies,
//! snapshot swaps that take effect at once without dropping requests in flight, saving to
//! the declarative file, and the admin token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{get, post_json, send, tempdir::TempDir, MockLlm, Reply};
use tollgate::server::{Running, ServeOptions};

fn opts() -> ServeOptions {
    ServeOptions {
        proxy_listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        drain_timeout: Duration::from_secs(5),
        busy_poll: Duration::ZERO,
        proxy_tls: None,
        admin_tls: None,
        limits: Default::default(),
        workers: 1,
    }
}

struct Gw {
    run: Running,
}

impl Gw {
    async fn start(yaml: &str) -> Gw {
        Gw {
            run: tollgate::run(yaml, opts()).await.unwrap(),
        }
    }
    async fn start_with(yaml: &str, file: Option<&std::path::Path>, token: Option<&str>) -> Gw {
        Gw {
            run: tollgate::run_with(
                yaml,
                file.map(|f| f.to_path_buf()),
                token.map(str::to_string),
                opts(),
            )
            .await
            .unwrap(),
        }
    }
    fn admin(&self, path: &str) -> String {
        format!("http://{}{}", self.run.admin_addr.unwrap(), path)
    }
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.run.proxy_addr, path)
    }
    async fn call(&self, method: &str, path: &str, body: Value) -> Reply {
        send(
            method,
            &self.admin(path),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }
}

const EMPTY: &str = "_format_version: \"3.0\"\n";

/// The seed's ai-proxy body (S2): the model from the path, the key in a header.
fn ai_proxy(mock: &str) -> Value {
    json!({"name": "ai-proxy", "config": {
        "route_type": "llm/v1/chat",
        "auth": {"header_name": "Authorization", "header_value": "Bearer sk-admin-secret"},
        "model": {"provider": "openai", "name": "$(uri_captures.model)",
                  "options": {"upstream_url": format!("{mock}/v1/chat/completions")}}}})
}

async fn chat(gw: &Gw, path: &str) -> Reply {
    post_json(
        &gw.url(path),
        &json!({"messages": [{"role": "user", "content": "Ping"}]}),
    )
    .await
}

#[tokio::test]
async fn crud_builds_a_working_route_and_kong_semantics_hold() {
    let mock = MockLlm::start().await.unwrap();
    let gw = Gw::start(EMPTY).await;
    assert_eq!(chat(&gw, "/gpt-4/chat/completions").await.status, 404);

    let r = gw
        .call(
            "POST",
            "/services",
            json!({"name": "llm", "url": "http://unused.invalid:8080/v1"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let service = r.json();
    assert_eq!(service["host"], "unused.invalid");
    assert_eq!(service["port"], 8080);
    assert_eq!(service["path"], "/v1");
    assert_eq!(service["retries"], 5, "defaults filled in");
    assert!(service["created_at"].as_i64().unwrap() > 1_700_000_000);

    let r = gw
        .call(
            "POST",
            "/services/llm/routes",
            json!({"name": "dyn", "paths": ["~/(?<model>[^#?/]+)/chat/completions$"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let route_id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["service"]["id"], service["id"]);

    let r = gw
        .call(
            "POST",
            &format!("/routes/{route_id}/plugins"),
            ai_proxy(&mock.url()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let plugin = r.json();
    assert_eq!(plugin["route"]["id"], route_id.as_str());
    assert_eq!(
        plugin["config"]["auth"]["header_value"], "[REDACTED]",
        "secrets are not echoed"
    );
    assert!(!r.text().contains("sk-admin-secret"));

    // The new snapshot serves at once.
    let r = chat(&gw, "/gpt-4/chat/completions").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "gpt-4");
    assert_eq!(
        mock.requests().last().unwrap().header("authorization"),
        Some("Bearer sk-admin-secret")
    );

    // PATCH merges into config; the redacted value sent back keeps the secret.
    let pid = plugin["id"].as_str().unwrap();
    let mut back = plugin.clone();
    back["config"]["model"]["name"] = json!("pinned-model");
    let r = gw
        .call(
            "PATCH",
            &format!("/plugins/{pid}"),
            json!({"config": back["config"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = chat(&gw, "/gpt-4/chat/completions").await;
    assert_eq!(r.json()["model"], "pinned-model");
    assert_eq!(
        mock.requests().last().unwrap().header("authorization"),
        Some("Bearer sk-admin-secret")
    );

    // PUT replaces: fields left out go back to their defaults.
    let r = gw
        .call(
            "PUT",
            "/services/llm/routes/dyn",
            json!({"paths": ["~/(?<model>[^#?/]+)/chat/completions$"], "strip_path": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], route_id.as_str(), "PUT keeps the id");
    assert_eq!(r.json()["strip_path"], false);
    assert_eq!(
        r.json()["name"],
        Value::Null,
        "PUT resets what it is not given"
    );
    // PUT on a new name creates.
    let r = gw
        .call("PUT", "/services/other", json!({"host": "h.invalid"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "other");

    // Lists page like Kong.
    let page = gw.call("GET", "/services?size=1", Value::Null).await.json();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], "/services?offset=1&size=1");

    // A service with routes cannot go; deleting the route cascades to its plugins.
    let r = gw.call("DELETE", "/services/llm", Value::Null).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], 4);
    assert_eq!(
        r.json()["message"],
        "an existing 'routes' entity references this 'services' entity"
    );
    assert_eq!(
        gw.call("DELETE", &format!("/routes/{route_id}"), Value::Null)
            .await
            .status,
        204
    );
    assert_eq!(
        gw.call("GET", &format!("/plugins/{pid}"), Value::Null)
            .await
            .status,
        404
    );
    assert_eq!(
        gw.call("DELETE", "/services/llm", Value::Null).await.status,
        204
    );
    assert_eq!(
        gw.call("DELETE", "/services/llm", Value::Null).await.status,
        204,
        "idempotent"
    );
    assert_eq!(chat(&gw, "/gpt-4/chat/completions").await.status, 404);
}

#[tokio::test]
async fn bad_writes_get_kongs_codes_and_change_nothing() {
    let mock = MockLlm::start().await.unwrap();
    let gw = Gw::start(EMPTY).await;
    let hash = get(&gw.admin("/status")).await.json()["configuration_hash"].clone();

    let r = send("POST", &gw.admin("/services"), &[], "{not json").await;
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (400, json!("Cannot parse JSON body"))
    );

    let r = gw
        .call("POST", "/services", json!({"name": "s", "hots": "x"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], 2);
    assert_eq!(r.json()["fields"]["hots"], "unknown field");
    assert_eq!(
        r.json()["message"],
        "schema violation (hots: unknown field)"
    );

    let r = gw.call("POST", "/services", json!({"name": "s"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["fields"]["host"],
        "required field missing",
        "{}",
        r.text()
    );

    assert_eq!(
        gw.call(
            "POST",
            "/services",
            json!({"name": "s", "host": "a.invalid"})
        )
        .await
        .status,
        201
    );
    let r = gw
        .call(
            "POST",
            "/services",
            json!({"name": "s", "host": "b.invalid"}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["code"], 5);
    assert_eq!(
        r.json()["message"],
        "UNIQUE violation detected on '{name=\"s\"}'"
    );

    let r = gw
        .call(
            "POST",
            "/routes",
            json!({"paths": ["/x"], "service": {"id": "5a4b1c9e-0000-4000-8000-000000000000"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], 4);
    assert_eq!(r.json()["name"], "foreign key violation");

    let r = gw
        .call(
            "POST",
            "/routes",
            json!({"paths": ["nope"], "service": "s"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["fields"]["paths"][0]
            .as_str()
            .unwrap()
            .contains("should start with"),
        "{}",
        r.text()
    );

    // A plugin config is validated like a config file, fields named under config.
    let mut bad = ai_proxy(&mock.url());
    bad["config"]["route_type"] = json!("llm/v1/nope");
    let r = gw.call("POST", "/services/s/plugins", bad).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["fields"]["config"]["route_type"].is_string(),
        "{}",
        r.text()
    );

    // One plugin of a name per scope.
    assert_eq!(
        gw.call("POST", "/services/s/plugins", ai_proxy(&mock.url()))
            .await
            .status,
        201
    );
    let r = gw
        .call("POST", "/services/s/plugins", ai_proxy(&mock.url()))
        .await;
    assert_eq!(r.status, 409, "{}", r.text());

    assert_eq!(
        gw.call("GET", "/services/nope", Value::Null).await.status,
        404
    );
    assert_eq!(
        gw.call("PATCH", "/services/nope", json!({"port": 1}))
            .await
            .status,
        404
    );
    assert_eq!(gw.call("POST", "/nothing", json!({})).await.status, 404);
    let big = "x".repeat(33 * 1024 * 1024);
    let r = send("POST", &gw.admin("/services"), &[], big).await;
    assert_eq!(r.status, 413);

    let after = get(&gw.admin("/status")).await.json()["configuration_hash"].clone();
    assert_ne!(hash, after, "the good writes changed the hash");
    assert_eq!(
        get(&gw.admin("/services")).await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn the_seed_curls_work_verbatim() {
    let mock = MockLlm::start().await.unwrap();
    let gw = Gw::start(EMPTY).await;
    let s = gw
        .call(
            "POST",
            "/services",
            json!({"name": "openai", "url": "http://unused.invalid"}),
        )
        .await
        .json();
    let r = gw
        .call("POST", "/routes", json!({"name": "openai-chat", "paths": ["~/(?<model>[^#?/]+)/chat/completions$"], "service": {"id": s["id"]}}))
        .await
        .json();
    let c = gw
        .call("POST", "/consumers", json!({"username": "alice"}))
        .await;
    assert_eq!(c.status, 201, "{}", c.text());
    let c = c.json();
    let g = gw
        .call("POST", "/consumer_groups", json!({"name": "gold"}))
        .await
        .json();
    for (path, scope) in [
        ("/plugins".to_string(), None),
        (
            format!("/services/{}/plugins", s["id"].as_str().unwrap()),
            Some(("service", &s)),
        ),
        (
            format!("/routes/{}/plugins", r["id"].as_str().unwrap()),
            Some(("route", &r)),
        ),
        (
            format!("/consumers/{}/plugins", c["id"].as_str().unwrap()),
            Some(("consumer", &c)),
        ),
        (
            format!("/consumer_groups/{}/plugins", g["id"].as_str().unwrap()),
            Some(("consumer_group", &g)),
        ),
    ] {
        let p = gw.call("POST", &path, ai_proxy(&mock.url())).await;
        assert_eq!(p.status, 201, "{path}: {}", p.text());
        if let Some((field, parent)) = scope {
            assert_eq!(p.json()[field]["id"], parent["id"], "{path}");
        }
    }
    let plugins = get(&gw.admin("/plugins")).await.json();
    assert_eq!(plugins["data"].as_array().unwrap().len(), 5);
    let mine = get(&gw.admin("/consumers/alice/plugins")).await.json();
    assert_eq!(mine["data"].as_array().unwrap().len(), 1);
    // The route's own instance is the most specific one and answers.
    let r = chat(&gw, "/gpt-4o/chat/completions").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "gpt-4o");
}

#[tokio::test]
async fn consumer_groups_and_vaults() {
    let gw = Gw::start(EMPTY).await;
    for u in ["alice", "bob"] {
        assert_eq!(
            gw.call("POST", "/consumers", json!({"username": u}))
                .await
                .status,
            201
        );
    }
    assert_eq!(
        gw.call("POST", "/consumer_groups", json!({"name": "gold"}))
            .await
            .status,
        201
    );
    let r = gw
        .call(
            "POST",
            "/consumer_groups/gold/consumers",
            json!({"consumer": ["alice", "bob"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["consumers"].as_array().unwrap().len(), 2);
    let r = gw
        .call(
            "POST",
            "/consumer_groups/gold/consumers",
            json!({"consumer": "alice"}),
        )
        .await;
    assert_eq!(r.status, 409);
    let r = gw
        .call("GET", "/consumers/bob/consumer_groups", Value::Null)
        .await
        .json();
    assert_eq!(r["data"][0]["name"], "gold");
    assert_eq!(
        gw.call("DELETE", "/consumer_groups/gold/consumers/bob", Value::Null)
            .await
            .status,
        204
    );
    let members = gw
        .call("GET", "/consumer_groups/gold/consumers", Value::Null)
        .await
        .json();
    assert_eq!(members["data"].as_array().unwrap().len(), 1);
    // Deleting a consumer removes its memberships.
    assert_eq!(
        gw.call("DELETE", "/consumers/alice", Value::Null)
            .await
            .status,
        204
    );
    let members = gw
        .call("GET", "/consumer_groups/gold/consumers", Value::Null)
        .await
        .json();
    assert_eq!(members["data"].as_array().unwrap().len(), 0);

    let r = gw
        .call(
            "POST",
            "/vaults",
            json!({"name": "env", "prefix": "my-env", "config": {"prefix": "TG_"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        gw.call("GET", "/vaults/my-env", Value::Null).await.json()["config"]["prefix"],
        "TG_"
    );
    let r = gw
        .call("POST", "/vaults", json!({"name": "hcv", "prefix": "hv", "config": {"token": "s.secret-token", "host": "127.0.0.1", "port": 1}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["config"]["token"], "[REDACTED]");
    assert!(!get(&gw.admin("/config"))
        .await
        .text()
        .contains("s.secret-token"));
}

#[tokio::test]
async fn post_config_replaces_everything_and_checks_the_hash() {
    let mock = MockLlm::start().await.unwrap();
    let gw = Gw::start(EMPTY).await;
    let doc = format!(
        r#"_format_version: "3.0"
services:
  - name: s
    url: http://unused.invalid
    routes:
      - name: r
        paths: ["~/(?<model>[^#?/]+)/chat/completions$"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {{header_name: Authorization, header_value: Bearer sk-doc-secret}}
              model:
                provider: openai
                name: $(uri_captures.model)
                options: {{upstream_url: "{}/v1/chat/completions"}}
"#,
        mock.url()
    );
    let r = gw.call("POST", "/config", json!({"config": doc})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(!r.text().contains("sk-doc-secret"));
    assert_eq!(
        chat(&gw, "/m1/chat/completions").await.json()["model"],
        "m1"
    );
    let r = send("POST", &gw.admin("/config?check_hash=1"), &[], doc.clone()).await;
    assert_eq!(r.status, 304, "{}", r.text());
    let r = send(
        "POST",
        &gw.admin("/config"),
        &[],
        "_format_version: \"3.0\"\nservices: [{name: x}]",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], 14);
    assert!(r.text().contains("services[0].host"), "{}", r.text());
    assert_eq!(
        chat(&gw, "/m1/chat/completions").await.status,
        200,
        "still the old config"
    );
    // The entities posted nested can be edited by name afterwards.
    let r = gw
        .call(
            "PATCH",
            "/routes/r",
            json!({"paths": ["~/v2/(?<model>[^#?/]+)/chat/completions$"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        chat(&gw, "/v2/m2/chat/completions").await.json()["model"],
        "m2"
    );
}

/// The rewrite mode (`serve --admin-writes-to-config`; by default writes go to the data
/// directory's state file, see tests/serve.rs admin_writes_leave_the_config_file_alone).
#[tokio::test]
async fn writes_are_saved_to_the_file_with_templates_kept() {
    std::env::set_var("DECK_ADMIN_TEST_KEY", "sk-from-deck-env");
    let mock = MockLlm::start().await.unwrap();
    let dir = TempDir::new();
    let file = dir.path().join("kong.yaml");
    let text = format!(
        r#"_format_version: "3.0"
# a comment the rewrite drops (the .bak keeps it)
services:
  - name: s
    url: http://unused.invalid
    routes:
      - name: r
        paths: ["/chat"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {{header_name: Authorization, header_value: '${{{{ env "DECK_ADMIN_TEST_KEY" }}}}'}}
              model: {{provider: openai, name: m, options: {{upstream_url: "{}/v1/chat/completions"}}}}
"#,
        mock.url()
    );
    std::fs::write(&file, &text).unwrap();
    let gw = Gw::start_with(&text, Some(&file), None).await;
    assert_eq!(chat(&gw, "/chat").await.status, 200);
    assert_eq!(
        mock.requests().last().unwrap().header("authorization"),
        Some("sk-from-deck-env")
    );
    let r = gw
        .call("POST", "/consumers", json!({"username": "carol"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains("carol"), "{saved}");
    assert!(
        saved.contains("DECK_ADMIN_TEST_KEY"),
        "the template is kept: {saved}"
    );
    assert!(
        !saved.contains("sk-from-deck-env"),
        "no secret baked in: {saved}"
    );
    let bak = std::fs::read_to_string(dir.path().join("kong.yaml.bak")).unwrap();
    assert_eq!(bak, text);
    // A restart from the saved file has the change and the same ids.
    let route_id = gw.call("GET", "/routes/r", Value::Null).await.json()["id"].clone();
    let again = Gw::start_with(&saved, Some(&file), None).await;
    assert_eq!(
        again
            .call("GET", "/consumers/carol", Value::Null)
            .await
            .status,
        200
    );
    assert_eq!(
        again.call("GET", "/routes/r", Value::Null).await.json()["id"],
        route_id
    );
    assert_eq!(chat(&again, "/chat").await.status, 200);
    assert_eq!(
        mock.requests().last().unwrap().header("authorization"),
        Some("sk-from-deck-env")
    );

    // A write that cannot be saved is not applied.
    let ro = TempDir::new();
    let missing = ro.path().join("no-such-dir").join("\0bad");
    let gw = Gw::start_with(EMPTY, Some(&missing), None).await;
    let r = gw
        .call("POST", "/consumers", json!({"username": "dave"}))
        .await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("not applied"));
    assert_eq!(
        gw.call("GET", "/consumers/dave", Value::Null).await.status,
        404
    );
}

#[tokio::test]
async fn admin_token_guards_every_endpoint() {
    let gw = Gw::start_with(EMPTY, None, Some("t0ken")).await;
    let r = get(&gw.admin("/services")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["message"], "Unauthorized");
    let r = send(
        "GET",
        &gw.admin("/services"),
        &[("authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    let auth = [
        ("authorization", "Bearer t0ken"),
        ("content-type", "application/json"),
    ];
    assert_eq!(
        send("GET", &gw.admin("/services"), &auth, "").await.status,
        200
    );
    let r = send(
        "POST",
        &gw.admin("/consumers"),
        &auth,
        r#"{"username":"x"}"#,
    )
    .await;
    assert_eq!(r.status, 201);
}

/// A write swaps the snapshot under a stream in flight: the stream finishes on the old
/// config, new requests see the new one.
#[tokio::test]
async fn writes_do_not_disturb_requests_in_flight() {
    let mock = MockLlm::start().await.unwrap();
    let gw = Gw::start(EMPTY).await;
    gw.call(
        "POST",
        "/services",
        json!({"name": "s", "url": "http://unused.invalid"}),
    )
    .await;
    gw.call(
        "POST",
        "/services/s/routes",
        json!({"name": "r", "paths": ["/chat"]}),
    )
    .await;
    let mut p = ai_proxy(&mock.url());
    p["config"]["model"]["name"] = json!("old-model");
    assert_eq!(gw.call("POST", "/routes/r/plugins", p).await.status, 201);

    let url = gw.url("/chat");
    let stream = tokio::spawn(async move {
        send(
            "POST",
            &url,
            &[("content-type", "application/json")],
            json!({"stream": true, "messages": [{"role": "user",
                "content": "count slowly [mock:chunk_delay_ms=80] [mock:chunks=10]"}]})
            .to_string(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = get(&gw.admin("/routes/r/plugins")).await.json()["data"][0]["id"].clone();
    let r = gw
        .call(
            "PATCH",
            &format!("/plugins/{}", pid.as_str().unwrap()),
            json!({"config": {"model": {"name": "new-model"}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(chat(&gw, "/chat").await.json()["model"], "new-model");
    let s = stream.await.unwrap();
    assert_eq!(s.status, 200);
    assert!(s.body_error.is_none(), "{:?}", s.body_error);
    let text = s.text();
    assert!(
        text.contains("old-model") && text.trim_end().ends_with("[DONE]"),
        "{text}"
    );
}

#[tokio::test]
async fn certificate_keys_are_not_shown() {
    let ck = rcgen::generate_simple_self_signed(vec!["a.example.test".to_string()]).unwrap();
    let indent = |pem: &str| -> String { pem.lines().map(|l| format!("      {l}\n")).collect() };
    let yaml = format!(
        "_format_version: \"3.0\"\ncertificates:\n  - snis: [a.example.test]\n    cert: |\n{}    key: |\n{}",
        indent(&ck.cert.pem()),
        indent(&ck.key_pair.serialize_pem())
    );
    let gw = Gw::start(&yaml).await;
    let cfg = get(&gw.admin("/config")).await.text();
    assert!(
        cfg.contains("a.example.test") && cfg.contains("[REDACTED]"),
        "{cfg}"
    );
    assert!(!cfg.contains("PRIVATE KEY"), "{cfg}");
}

/// Kong's curl habit: form fields, dotted keys for config, strings converted by the schema.
#[tokio::test]
async fn form_encoded_bodies_work_like_kongs() {
    let mock = MockLlm::start().await.unwrap();
    let gw = Gw::start(EMPTY).await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = send(
        "POST",
        &gw.admin("/services"),
        &form,
        "name=f&host=unused.invalid&port=8080&retries=2",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["port"], 8080);
    let r = send(
        "POST",
        &gw.admin("/services/f/routes"),
        &form,
        "name=fr&paths[]=/form&strip_path=false",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["strip_path"], false);
    let body = format!(
        "name=ai-proxy&config.route_type=llm/v1/chat&config.model.provider=openai&config.model.name=form-model&config.model.options.max_tokens=64&config.model.options.upstream_url={}",
        form_urlencoded::byte_serialize(format!("{}/v1/chat/completions", mock.url()).as_bytes())
            .collect::<String>()
    );
    let r = send("POST", &gw.admin("/routes/fr/plugins"), &form, body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["config"]["model"]["options"]["max_tokens"], 64);
    let r = chat(&gw, "/form").await;
    assert_eq!(r.json()["model"], "form-model", "{}", r.text());
    let r = send("PATCH", &gw.admin("/services/f"), &form, "port=notanumber").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["fields"]["port"].is_string(), "{}", r.text());
}

#[tokio::test]
async fn plugin_schemas_in_kongs_format() {
    let gw = Gw::start(EMPTY).await;
    let r = get(&gw.admin("/schemas/plugins/ai-proxy-advanced")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let config = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f.get("config"))
        .unwrap()
        .clone();
    assert_eq!(config["type"], "record");
    let names: Vec<String> = config["fields"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f.as_object().unwrap().keys().cloned())
        .collect();
    for want in [
        "targets",
        "balancer",
        "embeddings",
        "vectordb",
        "response_streaming",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let r = get(&gw.admin("/schemas/plugins/nope")).await;
    assert_eq!(r.status, 404);
}

/// Credentials in the governance and observability plugins' configs (Redis passwords, a
/// collector's API key header, a URL with user:password) never come back from the Admin
/// API, and a config written back with the redacted values keeps the real ones.
#[tokio::test]
async fn plugin_credentials_are_redacted() {
    let h = support::Harness::start(
        r#"
_format_version: "3.0"
plugins:
  - name: rate-limiting
    config: {minute: 5, policy: redis, redis: {host: 127.0.0.1, password: redis-s3cret}, redis_password: flat-s3cret}
  - name: http-log
    config: {http_endpoint: "http://user:url-s3cret@127.0.0.1:9/logs", headers: {x-api-key: hdr-s3cret}}
  - name: opentelemetry
    config: {traces_endpoint: "http://127.0.0.1:9/v1/traces", headers: {authorization: Bearer otel-s3cret}}
"#,
    )
    .await;
    for path in ["/plugins", "/config"] {
        let text = get(&h.admin(path)).await.text();
        for secret in [
            "redis-s3cret",
            "flat-s3cret",
            "url-s3cret",
            "hdr-s3cret",
            "otel-s3cret",
        ] {
            assert!(!text.contains(secret), "{path} shows {secret}: {text}");
        }
        assert!(text.contains("[REDACTED]"), "{text}");
    }
    let plugins = get(&h.admin("/plugins")).await.json();
    let otel = plugins["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "opentelemetry")
        .unwrap()
        .clone();
    assert_eq!(
        otel["config"]["traces_endpoint"],
        "http://127.0.0.1:9/v1/traces"
    );
    // Writing back what was read keeps the real header value.
    let id = otel["id"].as_str().unwrap();
    let r = send(
        "PATCH",
        &h.admin(&format!("/plugins/{id}")),
        &[("content-type", "application/json")],
        serde_json::json!({"config": otel["config"]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let snap = h.gw.gateway.snapshot.load();
    let cfg = &snap
        .plugins
        .iter()
        .find(|p| p.name == "opentelemetry")
        .unwrap()
        .config_json;
    assert_eq!(cfg["headers"]["authorization"], "Bearer otel-s3cret");
}

/// The calls the Kong Ingress Controller (3.x) makes to each DB-less gateway it drives, as
/// its source makes them (`internal/adminapi`, `internal/dataplane/sendconfig`,
/// `internal/manager/kongconfig`), and the fields it reads from the answers.
#[tokio::test]
async fn kong_ingress_controller_can_drive_a_node() {
    let gw = Gw::start_with(EMPTY, None, Some("kic-t0ken")).await;
    let kic = [
        ("kong-admin-token", "kic-t0ken"),
        ("content-type", "application/json"),
    ];
    // Discovery: the version (3.4.1 or later), a DB-less node, a router flavor.
    let root = send("GET", &gw.admin("/"), &kic, "").await;
    assert_eq!(root.status, 200, "{}", root.text());
    let info = root.json();
    let version: Vec<u64> = info["version"]
        .as_str()
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(version.len() == 3 && version >= vec![3, 4, 1], "{info}");
    assert_eq!(info["configuration"]["database"], "off");
    assert!(info["configuration"]["router_flavor"].is_string(), "{info}");
    // No configuration yet: Kong's all-zero hash, which makes KIC push.
    let status = send("GET", &gw.admin("/status"), &kic, "").await.json();
    assert_eq!(status["configuration_hash"], "0".repeat(32), "{status}");
    assert!(status["server"]["total_requests"].is_u64());

    // The push: KIC's translated configuration, entities nested and tagged.
    let tags = |name: &str, kind: &str| {
        json!([
            format!("k8s-name:{name}"),
            "k8s-namespace:default",
            format!("k8s-kind:{kind}"),
            "k8s-uid:7f0c",
            "k8s-group:configuration.konghq.com",
            "k8s-version:v1"
        ])
    };
    // Plain Kubernetes Services reach their pods through an upstream and its targets (one
    // of them down here: the retry goes to the next).
    let mock = MockLlm::start().await.unwrap();
    let (_dead, dead) = support::dead_port();
    let pod = mock.url().trim_start_matches("http://").to_string();
    let echo = json!({
        "name": "default.echo.80", "host": "echo.default.80.svc", "port": 80,
        "protocol": "http", "path": "/health", "tags": tags("echo", "Service"),
        "routes": [{"name": "default.echo.echo.80", "paths": ["/echo"], "strip_path": true,
                    "path_handling": "v0", "tags": tags("echo", "Ingress")}]
    });
    let upstreams = json!([{
        "name": "echo.default.80.svc", "algorithm": "round-robin", "slots": 10000,
        "tags": tags("echo", "Service"),
        "targets": [{"target": format!("127.0.0.1:{dead}"), "weight": 100},
                    {"target": pod, "weight": 100}]
    }]);
    let config = |provider: &str| {
        json!({
            "_format_version": "3.0",
            "upstreams": upstreams,
            "services": [echo, {
                "name": "default.llm.80", "host": "llm.default.80.svc", "port": 80,
                "protocol": "http", "path": "/", "retries": 5, "connect_timeout": 60000,
                "read_timeout": 60000, "write_timeout": 60000, "tags": tags("llm", "Service"),
                "routes": [{
                    "name": "default.llm.llm.80", "paths": ["/chat"], "path_handling": "v0",
                    "preserve_host": true, "protocols": ["http", "https"], "regex_priority": 0,
                    "strip_path": true, "https_redirect_status_code": 426,
                    "request_buffering": true, "response_buffering": true,
                    "tags": tags("llm", "Ingress"),
                    "plugins": [{
                        "name": "ai-proxy", "tags": tags("openai-chat", "KongPlugin"),
                        "config": {"route_type": "llm/v1/chat",
                                   "model": {"provider": provider, "name": "gpt-4o"}}
                    }]
                }]
            }],
            "consumers": [{"username": "alice", "tags": tags("alice", "KongConsumer"),
                           "keyauth_credentials": [{"key": "alice-key"}]}]
        })
    };
    let push = |body: Value| {
        let url = gw.admin("/config?check_hash=1&flatten_errors=1");
        async move { send("POST", &url, &kic, body.to_string()).await }
    };
    // An empty configuration, as KIC sends it: a placeholder upstream.
    let r = push(json!({"_format_version": "3.0", "upstreams": [{"name": "kong"}]})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = push(config("openai")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    for _ in 0..4 {
        let r = get(&gw.url("/echo")).await;
        assert_eq!(r.status, 200, "through the upstream: {}", r.text());
    }
    let hash =
        send("GET", &gw.admin("/status"), &kic, "").await.json()["configuration_hash"].clone();
    assert_ne!(hash, json!("0".repeat(32)));
    assert_eq!(
        send("GET", &gw.admin("/routes/default.llm.llm.80"), &kic, "")
            .await
            .status,
        200
    );
    // The same configuration again: unchanged (KIC counts any 2xx/3xx as success).
    let r = push(config("openai")).await;
    assert_eq!(r.status, 304, "{}", r.text());

    // A configuration that does not load: 400 with Kong's flattened errors, naming the
    // entity by its tags so KIC can report it on the Kubernetes object.
    let r = push(config("opena1")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    let flat = body["flattened_errors"].as_array().unwrap();
    let plugin = flat
        .iter()
        .find(|e| e["entity_type"] == "plugin")
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        plugin["entity_tags"]
            .as_array()
            .unwrap()
            .contains(&json!("k8s-kind:KongPlugin")),
        "{body}"
    );
    let error = &plugin["errors"][0];
    assert_eq!(error["type"], "field", "{body}");
    assert!(
        error["field"].as_str().unwrap().starts_with("config"),
        "{body}"
    );
    assert!(error["message"].as_str().is_some());
    // The running configuration is the last good one.
    let after = send("GET", &gw.admin("/status"), &kic, "").await.json();
    assert_eq!(after["configuration_hash"], hash);

    // Gateway API listener status: the proxy's listeners.
    let root = send("GET", &gw.admin("/"), &kic, "").await.json();
    let listeners = root["configuration"]["proxy_listeners"].as_array().unwrap();
    assert_eq!(
        listeners[0]["port"].as_u64(),
        Some(u64::from(gw.run.proxy_addr.port())),
        "{root}"
    );
    assert!(root["configuration"]["stream_listeners"].is_array());

    // A restarted controller recovers the last configuration from a gateway: it lists
    // every collection (`size=1000`, following `offset`), each of which must answer or, for
    // the optional ones, answer 404.
    let dump = |path: String| {
        let url = gw.admin(&format!("{path}?size=1000"));
        async move { send("GET", &url, &kic, "").await }
    };
    let mut upstream_ids = Vec::new();
    for coll in [
        "services",
        "routes",
        "plugins",
        "certificates",
        "snis",
        "upstreams",
        "consumers",
    ] {
        let r = dump(format!("/{coll}")).await;
        assert_eq!(r.status, 200, "{coll}: {}", r.text());
        let body = r.json();
        assert!(body["offset"].is_null(), "{coll}: one page: {body}");
        let data = body["data"].as_array().unwrap();
        if coll == "upstreams" {
            assert_eq!(data.len(), 1, "{body}");
            assert_eq!(data[0]["name"], "echo.default.80.svc");
            assert!(data[0].get("targets").is_none(), "{body}");
            upstream_ids.extend(data.iter().map(|u| u["id"].as_str().unwrap().to_string()));
        }
        if coll == "services" || coll == "routes" || coll == "consumers" {
            assert!(!data.is_empty(), "{coll}: {body}");
        }
    }
    for id in &upstream_ids {
        let r = dump(format!("/upstreams/{id}/targets")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let targets = r.json()["data"].as_array().unwrap().clone();
        assert_eq!(targets.len(), 2, "{targets:?}");
        assert_eq!(targets[1]["target"], json!(pod));
        assert_eq!(targets[1]["upstream"]["id"], json!(id));
    }
    for coll in [
        "ca_certificates",
        "vaults",
        "consumer_groups",
        "key-auths",
        "hmac-auths",
        "jwts",
        "basic-auths",
        "oauth2",
        "acls",
        "mtls-auths",
        "keys",
        "key-sets",
        "partials",
        "filter-chains",
    ] {
        let r = dump(format!("/{coll}")).await;
        assert!(
            r.status == 200 || (r.status == 404 && r.json()["message"].is_string()),
            "{coll}: {} {}",
            r.status,
            r.text()
        );
    }

    // Plugin defaults come from the plugin's schema.
    let schema = send("GET", &gw.admin("/schemas/plugins/ai-proxy"), &kic, "").await;
    assert_eq!(schema.status, 200);
    assert!(schema.json()["fields"].is_array(), "{}", schema.text());
    // The admission webhook's checks: a valid route, an invalid plugin, an unknown consumer.
    let route = json!({"name": "r", "paths": ["/x"], "protocols": ["http", "https"]});
    let r = send(
        "POST",
        &gw.admin("/schemas/routes/validate"),
        &kic,
        route.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let plugin = json!({"name": "ai-proxy", "config": {"route_type": "llm/v1/chat",
                        "model": {"provider": "opena1"}}});
    let r = send(
        "POST",
        &gw.admin("/schemas/plugins/validate"),
        &kic,
        plugin.to_string(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["message"].is_string(), "{}", r.text());
    let r = send("GET", &gw.admin("/consumers/nobody"), &kic, "").await;
    assert_eq!(r.status, 404, "{}", r.text());
    // Without the token, nothing.
    let r = send("GET", &gw.admin("/"), &[("kong-admin-token", "nope")], "").await;
    assert_eq!(r.status, 401);
}

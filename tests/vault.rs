//! HashiCorp Vault references through real HTTP: a mock Vault (KV v1 and v2 read API,
//! token checked) on its own thread, the gateway in front of mock-llm, and the key the
//! mock LLM receives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::*;
use tollgate::server::{Running, ServeOptions};

const TOKEN: &str = "hvs.test-root-token-9f8e7d";

/// A Vault that answers the KV read API: mount `secret` is KV v2, mount `kv` is KV v1.
struct MockVault {
    addr: SocketAddr,
    state: Arc<VaultState>,
}

#[derive(Default)]
struct VaultState {
    /// (mount, path) → every version written, oldest first.
    secrets: Mutex<HashMap<(String, String), Vec<Value>>>,
    reads: AtomicUsize,
    sealed: AtomicBool,
    namespaces: Mutex<Vec<String>>,
}

impl MockVault {
    fn start() -> MockVault {
        Self::start_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// Serves on its own thread and runtime: the gateway's loader blocks the test's.
    fn start_on(listener: std::net::TcpListener) -> MockVault {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(VaultState::default());
        let s = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let s = s.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let s = s.clone();
                            async move { Ok::<_, Infallible>(answer(&s, req)) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    });
                }
            });
        });
        MockVault { addr, state }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Writes a new version of a secret (`vault kv put`).
    fn put(&self, mount: &str, path: &str, data: Value) {
        self.state
            .secrets
            .lock()
            .unwrap()
            .entry((mount.into(), path.into()))
            .or_default()
            .push(data);
    }

    fn reads(&self) -> usize {
        self.state.reads.load(Ordering::SeqCst)
    }
}

fn answer(
    s: &VaultState,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let reply = |status: u16, body: Value| {
        let mut r = http::Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    };
    s.reads.fetch_add(1, Ordering::SeqCst);
    if s.sealed.load(Ordering::SeqCst) {
        return reply(503, json!({"errors": ["Vault is sealed"]}));
    }
    if let Some(ns) = req.headers().get("x-vault-namespace") {
        s.namespaces
            .lock()
            .unwrap()
            .push(ns.to_str().unwrap().to_string());
    }
    if req.method() != http::Method::GET {
        return reply(405, json!({"errors": []}));
    }
    if req.headers().get("x-vault-token").map(|t| t.as_bytes()) != Some(TOKEN.as_bytes()) {
        return reply(403, json!({"errors": ["permission denied"]}));
    }
    let path = req.uri().path().to_string();
    let version: Option<usize> = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("version="))
        .and_then(|v| v.parse().ok());
    let secrets = s.secrets.lock().unwrap();
    if let Some(p) = path.strip_prefix("/v1/secret/data/") {
        let Some(versions) = secrets.get(&("secret".to_string(), p.to_string())) else {
            return reply(404, json!({"errors": []}));
        };
        let n = version.filter(|v| *v > 0).unwrap_or(versions.len());
        let Some(data) = versions.get(n - 1) else {
            return reply(404, json!({"errors": []}));
        };
        return reply(
            200,
            json!({"request_id": "r", "lease_id": "", "renewable": false, "lease_duration": 0,
                   "data": {"data": data, "metadata": {"created_time": "2024-01-01T00:00:00Z",
                   "deletion_time": "", "destroyed": false, "version": n}}}),
        );
    }
    if let Some(p) = path.strip_prefix("/v1/kv/") {
        return match secrets
            .get(&("kv".to_string(), p.to_string()))
            .and_then(|v| v.last())
        {
            Some(data) => reply(
                200,
                json!({"request_id": "r", "lease_id": "", "renewable": false,
                       "lease_duration": 2764800, "data": data}),
            ),
            None => reply(404, json!({"errors": []})),
        };
    }
    reply(404, json!({"errors": []}))
}

/// Every log line of this test binary (all levels), to prove no secret is ever written.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(b.clone()))
            .try_init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_no_leak(texts: &[&str], secrets: &[&str]) {
    let logged = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    for s in secrets.iter().chain([&TOKEN]) {
        assert!(!logged.contains(s), "the log shows a secret ({s})");
        for t in texts {
            assert!(!t.contains(s), "a message shows a secret ({s}): {t}");
        }
    }
}

struct Gateway {
    gw: Running,
    mock: MockLlm,
    warnings: Vec<String>,
}

impl Gateway {
    /// Loads `yaml` (`{MOCK}` = mock-llm) with the given environment (only these variables)
    /// and serves it, as `tollgate serve` does.
    async fn start(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        logs();
        let mock = MockLlm::start().await.unwrap();
        let text = yaml.replace("{MOCK}", &mock.url());
        let vars: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let raw = tollgate::config::parse_document(&text, &lookup).unwrap();
        let mut snap = tollgate::gateway::Snapshot::compile(raw, &lookup).unwrap();
        snap.activate().unwrap();
        let warnings: Vec<String> = snap.warnings.iter().map(|w| w.to_string()).collect();
        for w in &warnings {
            tracing::warn!("config: {w}");
        }
        let gw = tollgate::server::start(
            Arc::new(tollgate::admin::Admin {
                gw: Arc::new(tollgate::gateway::Gateway::new(snap)),
                control: Default::default(),
            }),
            ServeOptions {
                proxy_listen: "127.0.0.1:0".parse().unwrap(),
                admin_listen: Some("127.0.0.1:0".parse().unwrap()),
                drain_timeout: Duration::from_secs(1),
                busy_poll: Duration::ZERO,
                proxy_tls: None,
                admin_tls: None,
                limits: Default::default(),
                workers: 1,
            },
        )
        .await
        .unwrap();
        Gateway { gw, mock, warnings }
    }

    /// A chat request on route `/<route>`; (status, body, Authorization the mock LLM got).
    async fn chat(&self, route: &str) -> (u16, String, Option<String>) {
        self.mock.clear();
        let r = post_json(
            &format!("http://{}/{route}", self.gw.proxy_addr),
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        let auth = self
            .mock
            .last_request()
            .and_then(|q| q.header("authorization").map(str::to_string));
        (r.status, r.text(), auth)
    }

    /// Asks until route `/<route>` sends `want` upstream (the refresh runs in the background).
    async fn wait_for_key(&self, route: &str, want: &str) -> Duration {
        let start = Instant::now();
        loop {
            let (status, _, auth) = self.chat(route).await;
            if status == 200 && auth.as_deref() == Some(want) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "route {route} never sent the expected key (last: {status})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A config whose routes `/<name>` send `Authorization: <reference>` to the mock.
fn config(vaults: &str, routes: &[(&str, &str)]) -> String {
    let mut y = format!("_format_version: \"3.0\"\n{vaults}services:\n  - name: s\n    url: http://localhost:9\n    routes:\n");
    for (name, reference) in routes {
        y.push_str(&format!(
            "      - name: {name}\n        paths: [\"/{name}\"]\n        plugins:\n          - name: ai-proxy\n            config:\n              route_type: llm/v1/chat\n              auth: {{header_name: Authorization, header_value: \"{reference}\"}}\n              model: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"{{MOCK}}/v1/chat/completions\"}}}}\n"
        ));
    }
    y
}

/// Kong's docs example: an `hcv` entity with prefix `hashicorp-vault`, KV v2 at `secret`.
fn hcv_entity(port: u16, extra: &str) -> String {
    format!("vaults:\n  - name: hcv\n    prefix: hashicorp-vault\n    description: Storing secrets in HashiCorp Vault\n    config: {{protocol: http, host: 127.0.0.1, port: {port}, mount: secret, kv: v2, token: {TOKEN}{extra}}}\n")
}

#[tokio::test]
async fn kv2_entity_and_kv1_environment_secrets_reach_the_upstream() {
    let vault = MockVault::start();
    vault.put(
        "secret",
        "openai",
        json!({"key": "Bearer sk-kv2-first-1a2b"}),
    );
    vault.put(
        "secret",
        "openai",
        json!({"key": "Bearer sk-kv2-second-3c4d", "org": "o-1"}),
    );
    vault.put("kv", "team/openai", json!({"key": "Bearer sk-kv1-5e6f"}));
    let port = vault.port().to_string();
    let yaml = config(
        &hcv_entity(vault.port(), ", namespace: team-a"),
        &[
            ("v2", "{vault://hashicorp-vault/openai/key}"),
            ("v2again", "{vault://hashicorp-vault/openai/key}"),
            ("pinned", "{vault://hashicorp-vault/openai/key#1}"),
            // The bare backend name reads its configuration from KONG_VAULT_HCV_*.
            ("v1", "{vault://hcv/team/openai/key}"),
            ("whole", "{vault://hashicorp-vault/openai/}"),
        ],
    );
    let env = [
        ("KONG_VAULT_HCV_HOST", "127.0.0.1"),
        ("KONG_VAULT_HCV_PORT", port.as_str()),
        ("KONG_VAULT_HCV_MOUNT", "kv"),
        ("KONG_VAULT_HCV_KV", "v1"),
        ("KONG_VAULT_HCV_TOKEN", TOKEN),
    ];
    let g = Gateway::start(&yaml, &env).await;
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    // One read per secret path and version, however many references use it.
    assert_eq!(vault.reads(), 3);
    assert_eq!(
        *vault.state.namespaces.lock().unwrap(),
        ["team-a", "team-a"],
        "the entity's namespace goes in X-Vault-Namespace"
    );
    for (route, want) in [
        ("v2", "Bearer sk-kv2-second-3c4d"),
        ("v2again", "Bearer sk-kv2-second-3c4d"),
        ("pinned", "Bearer sk-kv2-first-1a2b"),
        ("v1", "Bearer sk-kv1-5e6f"),
    ] {
        let (status, body, auth) = g.chat(route).await;
        assert_eq!(status, 200, "{route}: {body}");
        assert_eq!(auth.as_deref(), Some(want), "{route}");
    }
    // A reference without a key is the whole secret as JSON (as in Kong).
    let (status, body, auth) = g.chat("whole").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        auth.as_deref(),
        Some(r#"{"key":"Bearer sk-kv2-second-3c4d","org":"o-1"}"#)
    );
    // The Admin API shows the references, never the values.
    let cfg = get(&format!("http://{}/config", g.gw.admin_addr.unwrap()))
        .await
        .text();
    assert!(
        cfg.contains("{vault://hashicorp-vault/openai/key}"),
        "{cfg}"
    );
    assert_no_leak(
        &[&cfg, &body],
        &["sk-kv2-first-1a2b", "sk-kv2-second-3c4d", "sk-kv1-5e6f"],
    );
}

#[tokio::test]
async fn a_rotated_secret_reaches_later_requests_after_the_ttl() {
    let vault = MockVault::start();
    vault.put("secret", "openai", json!({"key": "Bearer sk-rot-old-7a7a"}));
    vault.put(
        "secret",
        "anthropic",
        json!({"key": "Bearer sk-static-8b8b"}),
    );
    let yaml = config(
        &hcv_entity(vault.port(), ""),
        &[
            ("rotating", "{vault://hashicorp-vault/openai/key?ttl=0.3}"),
            // No ttl: Kong's default 0 never re-reads.
            ("fixed", "{vault://hashicorp-vault/anthropic/key}"),
        ],
    );
    let g = Gateway::start(&yaml, &[]).await;
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    let (status, _, auth) = g.chat("rotating").await;
    assert_eq!(
        (status, auth.as_deref()),
        (200, Some("Bearer sk-rot-old-7a7a"))
    );

    vault.put("secret", "openai", json!({"key": "Bearer sk-rot-new-9c9c"}));
    vault.put(
        "secret",
        "anthropic",
        json!({"key": "Bearer sk-static-new-0d0d"}),
    );
    let took = g.wait_for_key("rotating", "Bearer sk-rot-new-9c9c").await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    for _ in 0..3 {
        let (_, _, auth) = g.chat("rotating").await;
        assert_eq!(auth.as_deref(), Some("Bearer sk-rot-new-9c9c"));
    }
    let (_, _, auth) = g.chat("fixed").await;
    assert_eq!(auth.as_deref(), Some("Bearer sk-static-8b8b"));

    // The vault goes down: the last good value stays in use (resurrect_ttl, ~3 years).
    vault.state.sealed.store(true, Ordering::SeqCst);
    let sealed_at = vault.reads();
    while vault.reads() < sealed_at + 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, auth) = g.chat("rotating").await;
    assert_eq!(
        (status, auth.as_deref()),
        (200, Some("Bearer sk-rot-new-9c9c"))
    );
    let logged = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        logged.contains("vault: refresh failed") && logged.contains("keeping_previous_value=true"),
        "the failed refresh is logged: {logged}"
    );
    assert_no_leak(
        &[],
        &[
            "sk-rot-old-7a7a",
            "sk-rot-new-9c9c",
            "sk-static-8b8b",
            "sk-static-new-0d0d",
        ],
    );
}

#[tokio::test]
async fn after_resurrect_ttl_a_failing_vault_fails_requests() {
    let vault = MockVault::start();
    vault.put("secret", "openai", json!({"key": "Bearer sk-res-1e1e"}));
    let yaml = config(
        &hcv_entity(vault.port(), ", ttl: 0.2, neg_ttl: 0.1, resurrect_ttl: 0.4"),
        &[("r", "{vault://hashicorp-vault/openai/key}")],
    );
    let g = Gateway::start(&yaml, &[]).await;
    assert_eq!(g.chat("r").await.0, 200);
    vault.state.sealed.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let body = loop {
        let (status, body, auth) = g.chat("r").await;
        if status == 500 {
            assert_eq!(auth, None);
            break body;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Not before resurrect_ttl has passed since the last good value expired.
    assert!(
        start.elapsed() >= Duration::from_millis(350),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["message"],
        "LLM request failed before proxying"
    );
    // Unsealed: the next retry fills it again.
    vault.state.sealed.store(false, Ordering::SeqCst);
    g.wait_for_key("r", "Bearer sk-res-1e1e").await;
    assert_no_leak(&[&body], &["sk-res-1e1e"]);
}

#[tokio::test]
async fn wrong_token_or_missing_key_is_a_load_warning_and_a_500() {
    let vault = MockVault::start();
    vault.put("secret", "openai", json!({"key": "Bearer sk-ok-2f2f"}));
    let vaults = format!(
        "vaults:\n  - name: hcv\n    prefix: hashicorp-vault\n    config: {{port: {p}, kv: v2, token: hvs.not-the-right-one}}\n  - name: hcv\n    prefix: right\n    config: {{port: {p}, kv: v2, token: {TOKEN}}}\n",
        p = vault.port()
    );
    let yaml = config(
        &vaults,
        &[
            ("denied", "{vault://hashicorp-vault/openai/key}"),
            ("nokey", "{vault://right/openai/api_key}"),
            ("nopath", "{vault://right/nothing-here/key}"),
            ("ok", "{vault://right/openai/key}"),
        ],
    );
    let g = Gateway::start(&yaml, &[]).await;
    let w = g.warnings.join("\n");
    assert_eq!(g.warnings.len(), 3, "{w}");
    assert!(w.contains("routes[0].plugins[0].config.auth.header_value: could not resolve {vault://hashicorp-vault/openai/key}: Vault answered 403: permission denied"), "{w}");
    assert!(
        w.contains(
            "could not resolve {vault://right/openai/api_key}: the secret has no field 'api_key'"
        ),
        "{w}"
    );
    assert!(
        w.contains("could not resolve {vault://right/nothing-here/key}: Vault answered 404"),
        "{w}"
    );
    for route in ["denied", "nokey", "nopath"] {
        let (status, body, auth) = g.chat(route).await;
        assert_eq!(status, 500, "{route}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["error"]["message"],
            "LLM request failed before proxying"
        );
        assert_eq!(auth, None, "{route}: nothing may leave without its key");
    }
    // The rest of the config serves.
    let (status, _, auth) = g.chat("ok").await;
    assert_eq!((status, auth.as_deref()), (200, Some("Bearer sk-ok-2f2f")));
    assert_no_leak(&[&w], &["sk-ok-2f2f", "hvs.not-the-right-one"]);
}

#[tokio::test]
async fn a_vault_down_at_load_is_filled_in_when_it_comes_back() {
    let (dead, port) = dead_port();
    let yaml = config(
        &hcv_entity(port, ", neg_ttl: 0.2"),
        &[
            ("a", "{vault://hashicorp-vault/openai/key}"),
            ("b", "{vault://hashicorp-vault/mistral/key}"),
        ],
    );
    let loading = Instant::now();
    let g = Gateway::start(&yaml, &[]).await;
    assert!(
        loading.elapsed() < Duration::from_secs(3),
        "a refused connection fails fast"
    );
    assert_eq!(g.warnings.len(), 2, "{:?}", g.warnings);
    for w in &g.warnings {
        assert!(w.contains("Vault unreachable"), "{w}");
    }
    let (status, body, auth) = g.chat("a").await;
    assert_eq!((status, auth), (500, None));

    // The port was held closed until now: the vault comes back on the same socket.
    let vault = MockVault::start_on(dead.listen(64).unwrap().into_std().unwrap());
    vault.put("secret", "openai", json!({"key": "Bearer sk-late-3a3a"}));
    vault.put("secret", "mistral", json!({"key": "Bearer sk-late-4b4b"}));
    g.wait_for_key("a", "Bearer sk-late-3a3a").await;
    g.wait_for_key("b", "Bearer sk-late-4b4b").await;
    assert_no_leak(
        &[&body, &g.warnings.join("\n")],
        &["sk-late-3a3a", "sk-late-4b4b"],
    );
}

#[tokio::test]
async fn config_errors_name_the_field() {
    let yaml = config(
        "vaults:\n  - name: hcv\n    prefix: hv\n    config: {auth_method: approle, approle_role_id: r}\n",
        &[("a", "{vault://hv/openai/key}")],
    );
    let raw = tollgate::config::parse_document(&yaml, &|_| None).unwrap();
    let e = tollgate::gateway::Snapshot::compile(raw, &|_| None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("vaults[0].config.approle_role_id: only auth_method 'token' is supported by tollgate yet"), "{e}");
    assert!(
        e.contains("vaults[0].config.auth_method: auth_method 'approle' is not supported"),
        "{e}"
    );
    // A token in the reference would show in every message about it: refused.
    let yaml = config("", &[("a", "{vault://hcv/openai/key?token=hvs.x}")]);
    let raw = tollgate::config::parse_document(&yaml, &|_| None).unwrap();
    let e = tollgate::gateway::Snapshot::compile(raw, &|_| None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("config.auth.header_value: the Vault token cannot be given in a reference"),
        "{e}"
    );
}

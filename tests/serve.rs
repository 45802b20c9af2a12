//! The real binary: `tollgate serve` with the embedded default and a file, and SIGTERM
//! draining in-flight streams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

struct Gateway {
    child: Child,
    proxy: String,
    admin: String,
    /// Every stdout line up to the listen lines.
    out: Vec<String>,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `tollgate serve` with extra args and waits for its listen lines.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Gateway {
    let mut all = vec!["--admin-listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    spawn_raw(&all, env)
}

/// Like `spawn`, with no admin listen address of its own.
fn spawn_raw(args: &[&str], env: &[(&str, &str)]) -> Gateway {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.env("TOLLGATE_PROXY_TLS_LISTEN", "off");
    cmd.arg("serve")
        .args(["--proxy-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("OPENAI_AUTH_HEADER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tollgate");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut proxy = String::new();
    let mut admin = String::new();
    let mut out = Vec::new();
    while proxy.is_empty() || admin.is_empty() {
        let line = lines
            .next()
            .expect("tollgate printed its addresses")
            .unwrap();
        out.push(line.clone());
        if let Some(a) = line.strip_prefix("tollgate proxy on ") {
            proxy = a.to_string();
        } else if let Some(a) = line.strip_prefix("tollgate admin on ") {
            admin = a.to_string();
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Gateway {
        child,
        proxy,
        admin,
        out,
        stderr: rx,
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn embedded_default_config_starts_and_names_the_missing_key() {
    // A fresh data directory: no config saved by an earlier Admin API write.
    let data = tempdir::TempDir::new();
    let gw = spawn(&["--data-dir", data.path().to_str().unwrap()], &[]);
    let r = get(&format!("{}/status", gw.admin)).await;
    assert_eq!(r.status, 200);
    let routes = get(&format!("{}/routes", gw.admin)).await.json();
    assert_eq!(routes["data"].as_array().unwrap().len(), 3);
    // No key configured: the request fails before anything leaves the machine.
    let r = post_json(
        &format!("{}/openai/v1/chat/completions", gw.proxy),
        &json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json()["error"]["message"],
        "LLM request failed before proxying"
    );
    // The warning is read from the child's stderr by another thread: wait for it.
    let mut warned: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !warned
        .iter()
        .any(|l| l.contains("OPENAI_AUTH_HEADER is not set"))
    {
        assert!(
            Instant::now() < deadline,
            "no warning naming the variable: {warned:?}"
        );
        if let Ok(l) = gw.stderr.recv_timeout(Duration::from_millis(100)) {
            warned.push(l);
        }
    }
}

#[tokio::test]
async fn invalid_config_file_exits_with_every_error() {
    let dir = tempdir::TempDir::new();
    let file = dir.path().join("kong.yaml");
    std::fs::write(
        &file,
        "_format_version: \"3.0\"\nservices: [{name: s}]\nplugins: [{name: nope}]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env("TOLLGATE_PROXY_TLS_LISTEN", "off")
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--proxy-listen", "127.0.0.1:0", "--admin-listen", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("services[0].host: required field missing"),
        "{err}"
    );
    assert!(
        err.contains("plugins[0].name: plugin 'nope' not enabled"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_streams() {
    let mock = MockLlm::start().await.unwrap();
    let dir = tempdir::TempDir::new();
    let file = dir.path().join("kong.yaml");
    std::fs::write(
        &file,
        format!(
            r#"_format_version: "3.0"
services:
  - name: s
    host: unused.invalid
    routes:
      - name: chat
        paths: ["/chat"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {{provider: openai, name: m, options: {{upstream_url: "{}"}}}}
              logging: {{log_statistics: true}}
          - name: file-log
            config: {{path: "{}/drain.log"}}
"#,
            mock.url(),
            dir.path().display()
        ),
    )
    .unwrap();
    let gw = spawn(
        &["--config", file.to_str().unwrap(), "--drain-seconds", "10"],
        &[],
    );
    let url = format!("{}/chat", gw.proxy);
    let body = json!({"stream": true, "messages":[{"role":"user","content":"[mock:chunks=8][mock:chunk_delay_ms=100] x"}]});
    let started = Instant::now();
    let stream = tokio::spawn(async move { post_json(&url, &body).await });
    tokio::time::sleep(Duration::from_millis(250)).await;
    sigterm(&gw.child);
    let r = stream.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body_error.is_none(), "{:?}", r.body_error);
    assert!(
        r.text().trim_end().ends_with("data: [DONE]"),
        "stream was cut: {}",
        r.text()
    );
    assert!(started.elapsed() >= Duration::from_millis(700));
    // New connections are refused once draining started; the process then exits 0.
    let mut gw = gw;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = gw.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "tollgate did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let log = std::fs::read_to_string(dir.path().join("drain.log")).unwrap();
    assert_eq!(
        log.lines().count(),
        1,
        "the drained request was logged before exit"
    );
}

/// A route `/name` proxying chat to the mock with a pinned model.
fn watched_config(mock: &str, routes: &[(&str, &str)]) -> String {
    let mut y = String::from(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    host: unused.invalid\n    routes:\n",
    );
    for (path, model) in routes {
        y.push_str(&format!(
            "      - name: {path}\n        paths: [\"/{path}\"]\n        plugins:\n          - name: ai-proxy\n            config:\n              route_type: llm/v1/chat\n              model: {{provider: openai, name: {model}, options: {{upstream_url: \"{mock}\"}}}}\n"
        ));
    }
    y
}

#[tokio::test]
async fn watch_reloads_changed_config_and_keeps_the_old_one_on_errors() {
    let mock = MockLlm::start().await.unwrap();
    let dir = tempdir::TempDir::new();
    let file = dir.path().join("kong.yaml");
    std::fs::write(&file, watched_config(&mock.url(), &[("one", "m1")])).unwrap();
    let gw = spawn(&["--watch", "--config", file.to_str().unwrap()], &[]);
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let proxy = gw.proxy.clone();
    let ask = |path: &str| {
        let url = format!("{proxy}/{path}");
        let body = body.clone();
        async move { post_json(&url, &body).await }
    };
    let r = ask("one").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "m1");
    assert_eq!(ask("two").await.status, 404);

    // A new route and a changed model appear without a restart.
    std::fs::write(
        &file,
        watched_config(&mock.url(), &[("one", "m1-new"), ("two", "m2")]),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ask("two").await.status != 200 {
        assert!(Instant::now() < deadline, "the new config was not loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ask("one").await.json()["model"], "m1-new");

    // A broken file: errors logged with their field paths, the running config kept.
    std::fs::write(
        &file,
        "_format_version: \"3.0\"\nservices: [{name: s}]\nplugins: [{name: nope}]\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while !seen.contains("keeping the running config") {
        assert!(Instant::now() < deadline, "no reload error logged: {seen}");
        while let Ok(l) = gw.stderr.try_recv() {
            seen.push_str(&l);
            seen.push('\n');
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.contains("services[0].host: required field missing"),
        "{seen}"
    );
    assert_eq!(ask("two").await.status, 200, "still the last good config");
    // /status and the metrics say the last reload failed, when and why.
    let st = get(&format!("{}/status", gw.admin)).await.json();
    let reload = &st["config_reload"];
    assert_eq!(reload["last"]["ok"], false, "{st}");
    assert!(reload["failures"].as_u64().unwrap() >= 1, "{st}");
    assert!(
        reload["last"]["at"].as_u64().unwrap() > 1_700_000_000,
        "{st}"
    );
    assert!(
        reload["last"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e
                .as_str()
                .unwrap()
                .contains("services[0].host: required field missing")),
        "{st}"
    );
    let m = get(&format!("{}/metrics", gw.admin)).await.text();
    assert!(
        m.contains("\ntollgate_config_last_reload_success 0\n"),
        "{m}"
    );
    assert!(
        !m.contains("tollgate_config_reload_failures_total 0\n"),
        "{m}"
    );
}

#[tokio::test]
async fn watch_needs_a_config_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env("TOLLGATE_PROXY_TLS_LISTEN", "off")
        .args([
            "serve",
            "--watch",
            "--proxy-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--watch needs --config"));
}

/// One request over TLS to `addr`, trusting only `cert` (PEM), offering `alpn`; the
/// negotiated protocol and the response status and body.
async fn https_post(
    addr: &str,
    cert: &std::path::Path,
    alpn: &[u8],
    path: &str,
    body: &str,
) -> (Vec<u8>, u16, String) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the generated certificate is trusted for localhost");
    let negotiated = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    let req = http::Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let resp = if negotiated == b"h2" {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = req;
        req.headers_mut()
            .insert("host", http::HeaderValue::from_static("localhost"));
        send.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        negotiated,
        status,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn tls_listener_with_a_generated_certificate_speaks_h2_and_http1() {
    let mock = MockLlm::start().await.unwrap();
    let dir = tempdir::TempDir::new();
    let file = dir.path().join("kong.yaml");
    std::fs::write(&file, watched_config(&mock.url(), &[("one", "m1")])).unwrap();
    let data = dir.path().join("data");
    let gw = spawn(
        &[
            "--config",
            file.to_str().unwrap(),
            "--proxy-tls-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    let cert_line = gw
        .out
        .iter()
        .find(|l| l.starts_with("tollgate tls generated a self-signed certificate: "))
        .unwrap_or_else(|| panic!("{:?}", gw.out));
    let cert = std::path::PathBuf::from(cert_line.rsplit(": ").next().unwrap());
    assert_eq!(cert, data.join("tls/cert.pem"));
    let addr = gw
        .out
        .iter()
        .find_map(|l| l.strip_prefix("tollgate proxy tls on https://"))
        .unwrap_or_else(|| panic!("{:?}", gw.out))
        .to_string();
    let body = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let (negotiated, status, text) = https_post(&addr, &cert, alpn, "/one", &body).await;
        assert_eq!(negotiated, alpn);
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"model\":\"m1\""), "{text}");
    }
    drop(gw);

    // The Admin API over TLS, with the same certificate.
    let gw = spawn(
        &[
            "--config",
            file.to_str().unwrap(),
            "--admin-tls-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    let admin = gw
        .out
        .iter()
        .find_map(|l| l.strip_prefix("tollgate admin tls on https://"))
        .unwrap_or_else(|| panic!("{:?}", gw.out))
        .to_string();
    assert!(!gw.out.iter().any(|l| l.starts_with("tollgate proxy tls")));
    // The Admin API's own answer (it has no write endpoint for /status) came over TLS.
    let (_, status, text) = https_post(&admin, &cert, b"h2", "/status", "{}").await;
    assert_eq!(status, 405, "{text}");
    assert!(text.contains("Method not allowed"), "{text}");
    drop(gw);

    // A second start reuses the certificate; a bad certificate file fails with its name.
    let gw = spawn(
        &[
            "--config",
            file.to_str().unwrap(),
            "--proxy-tls-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        gw.out
            .iter()
            .any(|l| l == &format!("tollgate tls certificate: {}", cert.display())),
        "{:?}",
        gw.out
    );
    drop(gw);
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "garbage").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env("TOLLGATE_PROXY_TLS_LISTEN", "off")
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--proxy-listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(["--proxy-tls-listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&bad)
        .arg("--tls-key")
        .arg(data.join("tls/key.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.pem"), "{err}");
}

#[tokio::test]
async fn renewed_tls_certificate_files_are_picked_up_without_a_restart() {
    let mock = MockLlm::start().await.unwrap();
    let dir = tempdir::TempDir::new();
    let file = dir.path().join("kong.yaml");
    std::fs::write(&file, watched_config(&mock.url(), &[("one", "m1")])).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let issue = |cert: &std::path::Path, key: &std::path::Path| {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(key, ck.key_pair.serialize_pem()).unwrap();
        std::fs::write(cert, ck.cert.pem()).unwrap();
    };
    issue(&cert, &key);
    let gw = spawn(
        &[
            "--config",
            file.to_str().unwrap(),
            "--proxy-tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    let addr = gw
        .out
        .iter()
        .find_map(|l| l.strip_prefix("tollgate proxy tls on https://"))
        .unwrap()
        .to_string();
    let body = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    let (_, status, _) = https_post(&addr, &cert, b"http/1.1", "/one", &body).await;
    assert_eq!(status, 200);

    // Renew: a new key and certificate in the same files. A client that trusts only the new
    // one gets through once the gateway has reloaded them.
    let old = dir.path().join("old.pem");
    std::fs::copy(&cert, &old).unwrap();
    issue(&cert, &key);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = tokio::spawn({
            let (addr, cert, body) = (addr.clone(), cert.clone(), body.clone());
            async move { https_post(&addr, &cert, b"http/1.1", "/one", &body).await }
        })
        .await
        .is_ok_and(|(_, s, _)| s == 200);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The old certificate is no longer what the listener presents.
    let old_client = tokio::spawn({
        let (addr, old, body) = (addr.clone(), old.clone(), body.clone());
        async move { https_post(&addr, &old, b"http/1.1", "/one", &body).await }
    })
    .await;
    assert!(
        old_client.is_err(),
        "a client trusting only the old certificate fails"
    );
}

/// Without --config, Admin API writes are saved under --data-dir and loaded at the next
/// start instead of the embedded default.
#[tokio::test]
async fn admin_writes_survive_a_restart() {
    let mock = MockLlm::start().await.unwrap();
    let data = tempdir::TempDir::new();
    let dir = data.path().to_str().unwrap();
    let gw = spawn(&["--data-dir", dir], &[]);
    let post = |path: &str, body: serde_json::Value| {
        let url = format!("{}{path}", gw.admin);
        async move { post_json(&url, &body).await }
    };
    assert_eq!(
        post(
            "/services",
            json!({"name": "mine", "url": "http://unused.invalid"})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        post(
            "/services/mine/routes",
            json!({"name": "r", "paths": ["/mine"]})
        )
        .await
        .status,
        201
    );
    let r = post(
        "/routes/r/plugins",
        json!({"name": "ai-proxy", "config": {"route_type": "llm/v1/chat",
            "model": {"provider": "openai", "name": "saved-model",
                      "options": {"upstream_url": format!("{}/v1/chat/completions", mock.url())}}}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    drop(gw);
    assert!(data.path().join("kong.yaml").exists());

    let gw = spawn(&["--data-dir", dir], &[]);
    assert!(
        gw.out.iter().any(|l| l.contains("saved by the Admin API")),
        "{:?}",
        gw.out
    );
    let r = post_json(
        &format!("{}/mine", gw.proxy),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "saved-model");
    let routes = get(&format!("{}/routes", gw.admin)).await.json();
    assert_eq!(
        routes["data"].as_array().unwrap().len(),
        4,
        "the default's 3 and mine"
    );
}

#[tokio::test]
async fn admin_beyond_loopback_needs_a_token() {
    let data = tempdir::TempDir::new();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env("TOLLGATE_PROXY_TLS_LISTEN", "off")
        .args([
            "serve",
            "--proxy-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "0.0.0.0:0",
        ])
        .args(["--data-dir", data.path().to_str().unwrap()])
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TOLLGATE_ADMIN_TOKEN"), "{err}");

    let mut cmd_args = vec!["--data-dir", data.path().to_str().unwrap()];
    cmd_args.extend(["--admin-listen", "0.0.0.0:0"]);
    let gw = spawn_raw(&cmd_args, &[("TOLLGATE_ADMIN_TOKEN", "s3cret-admin")]);
    let admin = gw.admin.replace("0.0.0.0", "127.0.0.1");
    let r = get(&format!("{admin}/services")).await;
    assert_eq!(r.status, 401);
    let r = send(
        "GET",
        &format!("{admin}/services"),
        &[("authorization", "Bearer s3cret-admin")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!gw.out.iter().any(|l| l.contains("s3cret-admin")));
}

/// With --watch, the Admin API's own saves do not trigger reloads, and a hand edit of the
/// file reaches the Admin API's state (a later write keeps it).
#[tokio::test]
async fn watch_and_admin_writes_share_the_file() {
    let mock = MockLlm::start().await.unwrap();
    let dir = tempdir::TempDir::new();
    let file = dir.path().join("kong.yaml");
    std::fs::write(&file, watched_config(&mock.url(), &[("one", "m1")])).unwrap();
    let gw = spawn(&["--watch", "--config", file.to_str().unwrap()], &[]);
    let r = post_json(
        &format!("{}/consumers", gw.admin),
        &json!({"username": "u1"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(std::fs::read_to_string(&file).unwrap().contains("u1"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let logged: Vec<String> = gw.stderr.try_iter().collect();
    assert!(
        !logged.iter().any(|l| l.contains("config reloaded")),
        "{logged:?}"
    );

    // A hand edit (the saved file plus a route) is loaded, and the next write keeps it.
    let saved = std::fs::read_to_string(&file).unwrap();
    let edited = saved.replace(
        "routes:\n",
        "routes:\n- name: hand\n  paths: [/hand]\n  service: {name: s}\n",
    );
    assert_ne!(saved, edited);
    std::fs::write(&file, &edited).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&format!("{}/routes/hand", gw.admin)).await.status != 200 {
        assert!(Instant::now() < deadline, "the hand edit was not loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = post_json(
        &format!("{}/consumers", gw.admin),
        &json!({"username": "u2"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(
        after.contains("hand") && after.contains("u1") && after.contains("u2"),
        "{after}"
    );
}

/// Runs the real `curl` and returns what `-w` printed (and its exit code on failure).
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        code
    } else {
        format!("{code} (curl exit {:?})", out.status.code())
    }
}

#[tokio::test]
async fn h2_bodies_over_the_limit_get_a_readable_413() {
    // curl over HTTP/2 lost the 413 when the stream was reset while it was still
    // uploading (`curl: (92)`); the rest of the body is drained first now.
    let dir = tempdir::TempDir::new();
    let file = dir.path().join("kong.yaml");
    let route = watched_config("http://127.0.0.1:9/v1/chat/completions", &[("chat", "m")]).replace(
        "route_type: llm/v1/chat\n",
        "route_type: llm/v1/chat\n              max_request_body_size: 1048576\n",
    );
    std::fs::write(&file, route).unwrap();
    let body = dir.path().join("big.json");
    std::fs::write(&body, vec![b'a'; 2 << 20]).unwrap();
    let data = dir.path().join("data");
    let gw = spawn(
        &[
            "--config",
            file.to_str().unwrap(),
            "--proxy-tls-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    let tls = gw
        .out
        .iter()
        .find_map(|l| l.strip_prefix("tollgate proxy tls on "))
        .unwrap_or_else(|| panic!("{:?}", gw.out))
        .to_string();
    let upload = format!("@{}", body.display());
    let h2c = format!("{}/chat", gw.proxy);
    let h2 = format!("{tls}/chat");
    let nowhere = format!("{}/nowhere", gw.proxy);
    let common = ["-H", "content-type: application/json", "--data-binary"];
    let runs = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let mut a = vec!["--http2-prior-knowledge"];
            a.extend_from_slice(&common);
            a.extend_from_slice(&[upload.as_str(), h2c.as_str()]);
            seen.push(("h2c", curl(&a)));
            let mut a = vec!["--http2", "-k"];
            a.extend_from_slice(&common);
            a.extend_from_slice(&[upload.as_str(), h2.as_str()]);
            seen.push(("h2", curl(&a)));
            // Answered without reading the body at all (no route): drained the same way.
            let mut a = vec!["--http2-prior-knowledge"];
            a.extend_from_slice(&common);
            a.extend_from_slice(&[upload.as_str(), nowhere.as_str()]);
            seen.push(("h2c 404", curl(&a)));
        }
        seen
    })
    .await
    .unwrap();
    let bad: Vec<_> = runs
        .iter()
        .filter(|(what, c)| c != if *what == "h2c 404" { "404" } else { "413" })
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
}

/// Reads until the gateway closes the connection; what it sent, or None if it was still
/// open after `within`.
async fn read_until_closed(s: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// A proxy address without the scheme.
fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// One HTTP/2 (h2c, prior knowledge) GET for `/x` with only static-table HPACK fields.
fn h2_get_frames() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    let block = [0x82, 0x86, 0x84, 0x41, 0x01, b'x']; // GET, http, /, :authority x
    out.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    out
}

#[tokio::test]
async fn slow_silent_and_idle_connections_are_closed_by_the_timeouts() {
    use tokio::io::AsyncWriteExt;
    let gw = spawn(
        &[
            "--client-header-timeout",
            "1",
            "--client-body-timeout",
            "1",
            "--keepalive-timeout",
            "1",
        ],
        &[("OPENAI_AUTH_HEADER", "Bearer x")],
    );
    let addr = host_port(&gw.proxy);
    let open = || tokio::net::TcpStream::connect(addr.clone());
    let limit = Duration::from_secs(15);

    // Slowloris: a header line every 300 ms never completes the head.
    let mut s = open().await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut cut = false;
    while started.elapsed() < limit {
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.peek(&mut probe)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "a slowloris connection stayed open for {limit:?}");

    // Silent after connecting.
    let mut s = open().await.unwrap();
    assert!(
        read_until_closed(&mut s, limit).await.is_some(),
        "silent connection kept"
    );

    // A long request line that never gets its version or end.
    let mut s = open().await.unwrap();
    let line = format!("GET /{}", "a".repeat(8000));
    s.write_all(line.as_bytes()).await.unwrap();
    let cut = read_until_closed(&mut s, limit).await;
    assert!(cut.is_some(), "unfinished request line kept");

    // Idle keep-alive after one request.
    let mut s = open().await.unwrap();
    s.write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let seen = read_until_closed(&mut s, limit)
        .await
        .expect("idle keep-alive closed");
    assert!(
        seen.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&seen)
    );

    // A body that stops half way: 408 in the route's error shape, then the close.
    let mut s = open().await.unwrap();
    s.write_all(
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let seen = read_until_closed(&mut s, limit)
        .await
        .expect("half body cut");
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");

    // HTTP/2: an idle connection after its request gets GOAWAY and the close.
    let mut s = open().await.unwrap();
    s.write_all(&h2_get_frames()).await.unwrap();
    let seen = read_until_closed(&mut s, limit)
        .await
        .expect("idle h2 closed");
    let mut frames = Vec::new();
    let mut rest = &seen[..];
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        frames.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert!(frames.contains(&1), "a response HEADERS frame: {frames:?}");
    assert!(frames.contains(&7), "GOAWAY: {frames:?}");

    // Counted, by reason.
    let m = get(&format!("{}/metrics", gw.admin)).await.text();
    let count = |reason: &str| -> f64 {
        let key = format!("tollgate_connections_closed_total{{reason=\"{reason}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {m}"))
    };
    assert!(count("header_timeout") >= 3.0, "{m}");
    assert!(count("idle_timeout") >= 2.0, "{m}");
    assert!(count("body_timeout") >= 1.0, "{m}");
}

#[tokio::test]
async fn at_the_connection_cap_the_longest_idle_connection_goes_first() {
    let gw = spawn(&["--max-connections", "3"], &[]);
    let addr = host_port(&gw.proxy);
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        assert!(ask(&mut s).await.unwrap().starts_with("HTTP/1.1 404"));
        conns.push(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A fourth client still gets in; the first (idle the longest) is closed for it.
    let mut fourth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(ask(&mut fourth).await.unwrap().starts_with("HTTP/1.1 404"));
    assert!(
        read_until_closed(&mut conns[0], Duration::from_secs(10))
            .await
            .is_some(),
        "the oldest idle connection was closed"
    );
    // The others still work.
    assert!(ask(&mut conns[2])
        .await
        .unwrap()
        .starts_with("HTTP/1.1 404"));
    drop(conns);
    drop(fourth);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = get(&format!("{}/metrics", gw.admin)).await.text();
    assert!(
        m.lines().any(
            |l| l.starts_with("tollgate_connections_closed_total{reason=\"evicted\"} ")
                && !l.ends_with(" 0")
        ),
        "{m}"
    );
}

/// One HTTP/1.1 request on an open connection; the start of the answer.
async fn ask(s: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).to_string())
}

#[tokio::test]
async fn lenient_http_is_refused_with_json_bodies() {
    use tokio::io::AsyncWriteExt;
    let gw = spawn(&[], &[("OPENAI_AUTH_HEADER", "Bearer x")]);
    let addr = host_port(&gw.proxy);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    // More header fields than hyper takes (100).
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big_head = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"GET /a b c\r\n\r\n".to_vec(), "400", "Bad request"),
        (b"GET /\x01 HTTP/1.1\r\n\r\n".to_vec(), "400", "Bad request"),
        (long_uri.into_bytes(), "414", "URI too long"),
        (big_head.into_bytes(), "431", "Request header or cookie too large"),
        (
            b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: a\r\nHost: b\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
            "400",
            "Bad request",
        ),
        (
            b"TRACE /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n".to_vec(),
            "405",
            "Method not allowed",
        ),
        (
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nconnection: close\r\n\r\n".to_vec(),
            "405",
            "Method not allowed",
        ),
    ];
    for (request, status, message) in cases {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // No half-close: hyper drops a connection whose client shut its side mid-request.
        let _ = s.write_all(&request).await;
        let seen = read_until_closed(&mut s, Duration::from_secs(10))
            .await
            .expect("answered and closed");
        let text = String::from_utf8_lossy(&seen);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{status} {message}: {text}"
        );
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["message"], message, "{text}");
        assert_eq!(v["request_id"].as_str().unwrap().len(), 32, "{text}");
        if status == "405" {
            assert!(head.contains("allow: GET"), "{head}");
        }
    }
}

#[tokio::test]
async fn ops_messages_name_addresses_and_logs_have_no_colours() {
    // A taken port: the error says which listener and which address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = tempdir::TempDir::new();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env("TOLLGATE_PROXY_TLS_LISTEN", "off")
        .args([
            "serve",
            "--admin-listen",
            "127.0.0.1:0",
            "--proxy-listen",
            &addr,
        ])
        .args(["--data-dir", data.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("proxy (--proxy-listen) on {addr}")) && err.contains("in use"),
        "{err}"
    );
    assert!(
        !err.contains('\x1b'),
        "no ANSI colours in piped stderr: {err:?}"
    );

    // The listening line: addresses or `off`, never `Some(…)`, and no colours.
    let gw = spawn(&["--data-dir", data.path().to_str().unwrap()], &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Ok(l) = gw.stderr.recv_timeout(Duration::from_millis(200)) {
            if l.contains("tollgate listening") {
                break l;
            }
        }
        assert!(Instant::now() < deadline, "no listening line");
    };
    assert!(!line.contains('\x1b'), "{line:?}");
    assert!(!line.contains("Some("), "{line}");
    let admin = gw.admin.trim_start_matches("http://");
    assert!(line.contains(&format!("admin={admin}")), "{line}");
    assert!(line.contains("proxy_tls=off"), "{line}");
}

#[tokio::test]
async fn the_generated_certificate_names_this_host_and_lasts_a_year() {
    let data = tempdir::TempDir::new();
    let _gw = spawn(
        &[
            "--proxy-tls-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        &[],
    );
    let cert = data.path().join("tls/cert.pem");
    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-enddate",
            "-ext",
            "subjectAltName",
            "-in",
        ])
        .arg(&cert)
        .output()
        .expect("the openssl command is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_ascii_lowercase();
    assert!(text.contains(&format!("CN = {host}")), "{text}");
    assert!(text.contains("O = Tollgate"), "{text}");
    for san in [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
    ] {
        assert!(text.contains(san), "{san} in {text}");
    }
    assert!(text.contains(&format!("DNS:{host}")), "{text}");
    assert!(!text.contains("rcgen"), "{text}");
    // notAfter=Dec  6 09:40:00 2027 GMT: a year from now.
    let end_year: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("notAfter="))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|y| y.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let this_year = 1970 + now / 31_556_952;
    assert_eq!(end_year, this_year + 1, "{text}");
    assert_ne!(end_year, 4096);
}

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
        .env_remove("OPENAI_API_KEY")
        .env_remove("TOLLGATE_DEMO")
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

/// `serve --config file --data-dir data`, then `extra`.
fn spawn_config(file: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> Gateway {
    let (file, data) = (file.to_str().unwrap(), data.to_str().unwrap());
    let args = ["--config", file, "--data-dir", data];
    spawn(&[&args[..], extra].concat(), &[])
}

/// `serve --config file` with the TLS listener on a free port and `data` as the data dir.
fn spawn_tls(file: &std::path::Path, data: &std::path::Path) -> Gateway {
    spawn_config(file, data, &["--proxy-tls-listen", "127.0.0.1:0"])
}

/// The TLS listener's URL, from the gateway's startup lines.
fn tls_url(gw: &Gateway) -> String {
    gw.out
        .iter()
        .find_map(|l| l.strip_prefix("tollgate proxy tls on "))
        .unwrap_or_else(|| panic!("{:?}", gw.out))
        .to_string()
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
        .any(|l| l.contains("OPENAI_API_KEY is not set") && l.contains("--demo"))
    {
        assert!(
            Instant::now() < deadline,
            "no warning naming the variable: {warned:?}"
        );
        if let Ok(l) = gw.stderr.recv_timeout(Duration::from_millis(100)) {
            warned.push(l);
        }
    }
    // The reference form is shown as written (nothing secret in it).
    let plugins = get(&format!("{}/plugins", gw.admin)).await.json();
    assert_eq!(
        plugins["data"][0]["config"]["auth"]["header_value"],
        "Bearer {vault://env/openai-api-key}"
    );
    // The default's names are its own: Kong's examples' names are free.
    let r = post_json(
        &format!("{}/routes", gw.admin),
        &json!({"name": "openai-chat", "paths": ["/chat"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = post_json(
        &format!("{}/services", gw.admin),
        &json!({"name": "openai", "url": "https://api.openai.com"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
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

/// A config file in `dir`: `/chat` streams from the mock (usage logged) and file-log
/// writes `dir/drain.log`.
fn drain_config(mock: &MockLlm, dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("kong.yaml");
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
            dir.display()
        ),
    )
    .unwrap();
    file
}

/// Waits up to 10 s for the gateway to exit after SIGTERM; its exit status.
fn exit_status(gw: &mut Gateway) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = gw.child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "tollgate did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_streams() {
    let mock = MockLlm::start().await.unwrap();
    let dir = tempdir::TempDir::new();
    let file = drain_config(&mock, dir.path());
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
    assert!(exit_status(&mut gw).success());
    let log = std::fs::read_to_string(dir.path().join("drain.log")).unwrap();
    assert_eq!(
        log.lines().count(),
        1,
        "the drained request was logged before exit"
    );
}

#[tokio::test]
async fn proxy_workers_share_the_listener_and_drain_together() {
    let mock = MockLlm::start().await.unwrap();
    let dir = tempdir::TempDir::new();
    let file = drain_config(&mock, dir.path());
    let data = dir.path().join("data");
    let gw = spawn_config(&file, &data, &["--workers", "3"]);
    // Two worker threads besides the main runtime, each accepting from the same sockets.
    let threads = std::fs::read_dir(format!("/proc/{}/task", gw.child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|name| name.starts_with("tg-worker-"))
        .count();
    assert_eq!(threads, 2);
    // 24 streams at once, each on its own connection, still running at SIGTERM.
    let body = json!({"stream": true, "messages":[{"role":"user","content":"[mock:chunks=6][mock:chunk_delay_ms=100] x"}]});
    let streams: Vec<_> = (0..24)
        .map(|_| {
            let (url, body) = (format!("{}/chat", gw.proxy), body.clone());
            tokio::spawn(async move { post_json(&url, &body).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // /status counts each worker's connections: the 24 spread over more than one.
    let status = get(&format!("{}/status", gw.admin)).await.json();
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3, "{status}");
    let accepted: Vec<u64> = workers
        .iter()
        .map(|w| w["connections_accepted"].as_u64().unwrap())
        .collect();
    assert!(accepted.iter().sum::<u64>() >= 24, "{accepted:?}");
    assert!(
        accepted.iter().filter(|n| **n > 0).count() >= 2,
        "one worker took every connection: {accepted:?}"
    );
    sigterm(&gw.child);
    for s in streams {
        let r = s.await.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            r.text().trim_end().ends_with("data: [DONE]"),
            "a stream was cut at shutdown: {}",
            r.text()
        );
    }
    let mut gw = gw;
    assert!(exit_status(&mut gw).success());
    // Every worker's log phases ran before the process flushed its logs and exited.
    let log = std::fs::read_to_string(dir.path().join("drain.log")).unwrap();
    assert_eq!(log.lines().count(), 24);
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
    let gw = spawn_tls(&file, &data);
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
    let gw = spawn_tls(&file, &data);
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

/// Without --config, Admin API writes are saved under --data-dir (created 0700) in a state
/// file (0600) and loaded at the next start on top of the embedded default; key-auth keys
/// are kept only as digests, and a provider key in clear is warned about.
#[tokio::test]
async fn admin_writes_survive_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mock = MockLlm::start().await.unwrap();
    let tmp = tempdir::TempDir::new();
    let data = tmp.path().join("data");
    let dir = data.to_str().unwrap();
    let tls = ["--proxy-tls-listen", "127.0.0.1:0", "--data-dir", dir];
    let gw = spawn(&tls, &[]);
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
            "auth": {"header_name": "Authorization", "header_value": "Bearer sk-plain-provider-key"},
            "model": {"provider": "openai", "name": "saved-model",
                      "options": {"upstream_url": format!("{}/v1/chat/completions", mock.url())}}}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        post("/consumers", json!({"username": "u"})).await.status,
        201
    );
    let r = post("/consumers/u/key-auth", json!({"key": "clear-api-key-123"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let state = data.join("admin-state.yaml");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(!saved.contains("clear-api-key-123"), "{saved}");
    assert!(!data.join("kong.yaml").exists());
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&state), 0o600);
    assert_eq!(mode(&data.join("analytics.db")), 0o600);
    let key = std::fs::read_dir(data.join("tls"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("key"))
        .unwrap();
    assert_eq!(mode(&key), 0o600);
    // The clear provider key is warned about, by field, never by value.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut logged: Vec<String> = Vec::new();
    while !logged
        .iter()
        .any(|l| l.contains("config.auth.header_value") && l.contains("vault://"))
    {
        assert!(
            Instant::now() < deadline,
            "no clear-secret warning: {logged:?}"
        );
        if let Ok(l) = gw.stderr.recv_timeout(Duration::from_millis(100)) {
            logged.push(l);
        }
    }
    assert!(!logged.iter().any(|l| l.contains("sk-plain-provider-key")));
    drop(gw);

    let gw = spawn(&tls, &[]);
    assert!(
        gw.out
            .iter()
            .any(|l| l.contains("admin-state.yaml (Admin API writes on top of embedded default)")),
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
    // The key still works though only its digest was saved.
    let r = send(
        "GET",
        &format!("{}/consumers/u/key-auth", gw.admin),
        &[],
        "",
    )
    .await;
    assert_eq!(
        r.json()["data"].as_array().unwrap().len(),
        1,
        "{}",
        r.text()
    );
}

/// With --config, Admin API writes leave the file byte for byte and persist in the data
/// directory while the file is unchanged; an edited file wins (the writes set aside); with
/// --admin-writes-to-config the file itself is rewritten.
#[tokio::test]
async fn admin_writes_leave_the_config_file_alone() {
    let mock = MockLlm::start().await.unwrap();
    let tmp = tempdir::TempDir::new();
    let file = tmp.path().join("kong.yaml");
    let data = tmp.path().join("data");
    let text = format!(
        "# my hand-written config\n{}",
        watched_config(&mock.url(), &[("one", "m1")])
    );
    std::fs::write(&file, &text).unwrap();
    let args = [
        "--config",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let gw = spawn(&args, &[]);
    let r = send(
        "PATCH",
        &format!("{}/routes/one", gw.admin),
        &[("content-type", "application/json")],
        json!({"paths": ["/patched"]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    {
        use std::os::unix::fs::PermissionsExt;
        let saved = state_file(&data, ".yaml");
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    drop(gw);

    let gw = spawn(&args, &[]);
    let r = post_json(
        &format!("{}/patched", gw.proxy),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "the PATCH survived the restart: {}",
        r.text()
    );
    drop(gw);

    // The user edits the file: it wins, and the earlier writes are kept aside.
    std::fs::write(&file, text.replace("my hand-written", "my edited")).unwrap();
    let gw = spawn(&args, &[]);
    let r = post_json(
        &format!("{}/one", gw.proxy),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(state_file(&data, ".yaml.old").exists());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut logged: Vec<String> = Vec::new();
    while !logged
        .iter()
        .any(|l| l.contains("changed since the Admin API last saved"))
    {
        assert!(Instant::now() < deadline, "{logged:?}");
        if let Ok(l) = gw.stderr.recv_timeout(Duration::from_millis(100)) {
            logged.push(l);
        }
    }
    drop(gw);

    // Asked to, the Admin API rewrites the file (flat form, .bak kept).
    let mut with_flag = args.to_vec();
    with_flag.push("--admin-writes-to-config");
    let gw = spawn(&with_flag, &[]);
    let before = std::fs::read_to_string(&file).unwrap();
    let r = post_json(
        &format!("{}/consumers", gw.admin),
        &json!({"username": "carol"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(after.contains("carol"), "{after}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("kong.yaml.bak")).unwrap(),
        before
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

/// With --watch and --admin-writes-to-config, the Admin API's own saves do not trigger
/// reloads, and a hand edit of the file reaches the Admin API's state (a later write keeps
/// it).
#[tokio::test]
async fn watch_and_admin_writes_share_the_file() {
    let mock = MockLlm::start().await.unwrap();
    let dir = tempdir::TempDir::new();
    let file = dir.path().join("kong.yaml");
    std::fs::write(&file, watched_config(&mock.url(), &[("one", "m1")])).unwrap();
    let gw = spawn(
        &[
            "--watch",
            "--admin-writes-to-config",
            "--config",
            file.to_str().unwrap(),
        ],
        &[],
    );
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

/// The embedded default as `tollgate default-config` prints it, with only its upstream moved
/// to the mock: the key in OPENAI_API_KEY reaches the upstream as a Bearer header.
#[tokio::test]
async fn default_config_sends_openai_api_key_as_bearer() {
    let mock = MockLlm::start().await.unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("default-config")
        .output()
        .unwrap();
    let default = String::from_utf8(out.stdout).unwrap();
    let moved = default.replace(
        "                provider: openai\n",
        &format!(
            "                provider: openai\n                options: {{upstream_url: \"{}\"}}\n",
            mock.url()
        ),
    );
    assert_eq!(moved.matches("upstream_url").count(), 3, "{moved}");
    let dir = tempdir::TempDir::new();
    let file = dir.path().join("default.yaml");
    std::fs::write(&file, moved).unwrap();
    let gw = spawn(
        &[
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[("OPENAI_API_KEY", "sk-test-bare-key")],
    );
    let r = post_json(
        &format!("{}/openai/v1/chat/completions", gw.proxy),
        &json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mock.last_request().unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-test-bare-key")
    );
    assert!(seen.path.ends_with("/v1/chat/completions"), "{}", seen.path);
}

/// `--demo`: the default routes answer from the built-in mock, with no key and no network.
#[tokio::test]
async fn demo_serves_the_default_routes_offline() {
    let data = tempdir::TempDir::new();
    let gw = spawn(
        &["--demo", "--data-dir", data.path().to_str().unwrap()],
        &[],
    );
    assert!(
        gw.out.iter().any(|l| l.starts_with("tollgate demo:")),
        "{:?}",
        gw.out
    );
    let r = post_json(
        &format!("{}/openai/v1/chat/completions", gw.proxy),
        &json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    let r = post_json(
        &format!("{}/openai/v1/responses", gw.proxy),
        &json!({"model":"gpt-4o-mini","input":"hi"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "response");
    // No key is asked for, and the demo saves nothing a later real start would load.
    let logged: Vec<String> = gw.stderr.try_iter().collect();
    assert!(
        !logged.iter().any(|l| l.contains("OPENAI_API_KEY")),
        "{logged:?}"
    );
    let r = post_json(
        &format!("{}/consumers", gw.admin),
        &json!({"username": "demo-user"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(std::fs::read_dir(data.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("yaml")));
}

/// With --watch and no --admin-writes-to-config, a hand edit of the file that loads replaces
/// the Admin API's writes, whose state file is set aside; a `kong.yaml` saved in the data
/// directory by an earlier version becomes the state file (0600).
#[tokio::test]
async fn watched_edits_set_admin_writes_aside_and_legacy_saves_move() {
    use std::os::unix::fs::PermissionsExt;
    let mock = MockLlm::start().await.unwrap();
    let tmp = tempdir::TempDir::new();
    let file = tmp.path().join("kong.yaml");
    let data = tmp.path().join("data");
    let text = watched_config(&mock.url(), &[("one", "m1")]);
    std::fs::write(&file, &text).unwrap();
    let gw = spawn_config(&file, &data, &["--watch"]);
    let r = post_json(
        &format!("{}/consumers", gw.admin),
        &json!({"username": "u1"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let state = state_file(&data, ".yaml");
    assert!(std::fs::read_to_string(&state).unwrap().contains("u1"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    std::fs::write(&file, watched_config(&mock.url(), &[("two", "m2")])).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&format!("{}/routes/two", gw.admin)).await.status != 200 {
        assert!(Instant::now() < deadline, "the edit was not loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&format!("{}/consumers/u1", gw.admin)).await.status, 404);
    assert!(!state.exists());
    assert!(state_file(&data, ".yaml.old").exists());
    drop(gw);

    // An earlier version's save over the embedded default.
    let legacy_dir = tmp.path().join("legacy");
    std::fs::create_dir_all(&legacy_dir).unwrap();
    std::fs::write(
        legacy_dir.join("kong.yaml"),
        "_format_version: \"3.0\"\nconsumers: [{username: old-user}]\n",
    )
    .unwrap();
    let gw = spawn(&["--data-dir", legacy_dir.to_str().unwrap()], &[]);
    assert_eq!(
        get(&format!("{}/consumers/old-user", gw.admin))
            .await
            .status,
        200
    );
    assert!(!legacy_dir.join("kong.yaml").exists());
    let moved = legacy_dir.join("admin-state.yaml");
    assert_eq!(
        std::fs::metadata(&moved).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// The state file (or its set-aside copy) of the one `--config` file used with `data`.
fn state_file(data: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let found: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("admin-state-")
                && n.ends_with(suffix)
                && !n[..n.len() - suffix.len()].contains('.')
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

// ---------------------------------------------------------------------------------------
// Usage analytics through the binary.

/// Two applications behind key-auth: one consumer with a username (its key tagged), one
/// with only a custom_id.
fn applications_config(mock: &str) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
  - username: mobile-app
    keyauth_credentials:
      - {{id: 6f1c2a10-0000-4000-8000-000000000001, key: mobile-key, tags: [team-red, ios]}}
  - custom_id: billing-batch
    keyauth_credentials:
      - {{id: 6f1c2a10-0000-4000-8000-000000000002, key: billing-key}}
services:
  - name: apps
    url: http://unused.invalid
    routes:
      - name: apps-chat
        paths: ["/chat"]
        plugins:
          - name: key-auth
            config: {{key_names: [apikey]}}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model:
                provider: openai
                name: gpt-4o
                options: {{upstream_url: "{mock}/v1/chat/completions"}}
"#
    )
}

/// The usage table of the first release (16 columns), with one record: a file an older
/// gateway left in the data directory.
fn old_analytics_db(path: &std::path::Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE tollgate_usage (
            ts_ms INTEGER NOT NULL, request_id TEXT NOT NULL, consumer TEXT NOT NULL,
            application TEXT NOT NULL, consumer_group TEXT NOT NULL, route TEXT NOT NULL,
            service TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
            total_tokens INTEGER NOT NULL, cost REAL NOT NULL, latency_ms INTEGER NOT NULL,
            status INTEGER NOT NULL, guardrail TEXT NOT NULL);
         INSERT INTO tollgate_usage VALUES (1000, 'old-1', 'someone', 'some-credential-id', '',
            'r', 's', 'openai', 'm', 1, 2, 3, 0.0, 5, 200, '');",
    )
    .unwrap();
}

/// Usage by application names the applications (not their keys' ids), and key-auth's
/// refusals are counted as unauthenticated, apart from the applications' errors; an
/// analytics file of an older release gains the new columns.
#[tokio::test]
async fn analytics_name_applications_and_count_refusals_apart() {
    let mock = MockLlm::start().await.unwrap();
    let data = tempdir::TempDir::new();
    old_analytics_db(&data.path().join("analytics.db"));
    let file = data.path().join("kong.yaml");
    std::fs::write(&file, applications_config(&mock.url())).unwrap();
    let start = tollgate::rt::clock::millis_since_epoch() / 1000;
    let gw = spawn_config(&file, data.path(), &[]);
    let chat = |key: Option<&'static str>| {
        let url = format!("{}/chat", gw.proxy);
        async move {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(k) = key {
                headers.push(("apikey", k));
            }
            let body = json!({"messages": [{"role": "user", "content": "hi"}]});
            send("POST", &url, &headers, body.to_string()).await.status
        }
    };
    for key in [Some("mobile-key"), Some("mobile-key"), Some("billing-key")] {
        assert_eq!(chat(key).await, 200);
    }
    for key in [None, Some("wrong-key"), None] {
        assert_eq!(chat(key).await, 401);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = get(&format!("{}/analytics/status", gw.admin)).await.json();
        if s["written"].as_u64().unwrap_or(0) >= 6 {
            break;
        }
        assert!(Instant::now() < deadline, "records not written: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let r = get(&format!(
        "{}/analytics/usage?from={start}&group_by=application",
        gw.admin
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let requests = |key: &str| -> i64 {
        v["series"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["key"] == key)
            .flat_map(|s| s["points"].as_array().unwrap().iter())
            .map(|p| p["requests"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(requests("mobile-app"), 2, "{v}");
    assert_eq!(requests("billing-batch"), 1, "the custom_id names it: {v}");
    assert_eq!(requests("(unauthenticated)"), 3, "{v}");
    assert_eq!(v["series"].as_array().unwrap().len(), 3, "{v}");
    assert!(!v.to_string().contains("6f1c2a10"), "no credential id: {v}");
    assert_eq!(v["totals"]["requests"], 6, "{v}");
    assert_eq!(v["totals"]["errors"], 0, "refusals are not errors: {v}");
    assert_eq!(v["totals"]["unauthenticated"], 3, "{v}");

    let top = get(&format!(
        "{}/analytics/top?from={start}&by=credential&measure=requests",
        gw.admin
    ))
    .await
    .json();
    let mobile_key = top["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "6f1c2a10-0000-4000-8000-000000000001")
        .unwrap_or_else(|| panic!("{top}"));
    assert_eq!(mobile_key["requests"], 2, "{top}");

    // The credential's tags and the ids have their own columns; the old record is kept,
    // as one request whose latency is its maximum. Rows hold a second's requests each.
    let db = rusqlite::Connection::open(data.path().join("analytics.db")).unwrap();
    type Columns = (String, String, String, String, i64, i64, i64);
    let rows: Vec<Columns> = db
        .prepare(
            "SELECT application, consumer_id, credential, credential_tags, unauthenticated, \
             requests, latency_max FROM tollgate_usage ORDER BY ts_ms, request_id",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.iter().map(|r| r.5).sum::<i64>(), 7, "{rows:?}");
    assert_eq!(
        (&rows[0].0[..], rows[0].5, rows[0].6),
        ("some-credential-id", 1, 5)
    );
    let mobile: Vec<_> = rows.iter().filter(|r| r.0 == "mobile-app").collect();
    assert_eq!(mobile.iter().map(|r| r.5).sum::<i64>(), 2, "{rows:?}");
    assert!(mobile
        .iter()
        .all(|r| r.2 == "6f1c2a10-0000-4000-8000-000000000001"
            && r.3 == "team-red,ios"
            && !r.1.is_empty()));
    let refused: Vec<_> = rows.iter().filter(|r| r.4 > 0).collect();
    assert_eq!(refused.iter().map(|r| r.4).sum::<i64>(), 3, "{rows:?}");
    assert!(refused
        .iter()
        .all(|r| r.0 == "(unauthenticated)" && r.2.is_empty() && r.4 == r.5));
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

/// `/analytics/status` once `ready` holds of it (30 s at most).
async fn analytics_status(
    gw: &Gateway,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = get(&format!("{}/analytics/status", gw.admin)).await.json();
        if ready(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "analytics status: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rows spilled while PostgreSQL was unreachable survive SIGTERM and a restart: the new
/// process replays the spill file at start-up, and a file a crash left mid-replay too, each
/// row exactly once (one was in the table already). The table, made by an older
/// release (16 columns, a record stored twice), is brought up to date on the way.
#[tokio::test]
async fn spilled_analytics_are_replayed_once_after_a_restart() {
    let db = format!(
        "tollgate_spill_{}_{}",
        std::process::id(),
        tollgate::rt::clock::millis_since_epoch()
    );
    let admin = pg("postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let old_columns = "ts_ms, request_id, consumer, application, consumer_group, route, \
        service, provider, model, prompt_tokens, completion_tokens, total_tokens, cost, \
        latency_ms, status, guardrail";
    let fresh = pg(&db).await;
    fresh
        .batch_execute(&format!(
            "CREATE TABLE tollgate_usage (
                ts_ms BIGINT NOT NULL, request_id TEXT NOT NULL, consumer TEXT NOT NULL,
                application TEXT NOT NULL, consumer_group TEXT NOT NULL, route TEXT NOT NULL,
                service TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
                prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,
                total_tokens BIGINT NOT NULL, cost DOUBLE PRECISION NOT NULL,
                latency_ms BIGINT NOT NULL, status BIGINT NOT NULL, guardrail TEXT NOT NULL);
             INSERT INTO tollgate_usage ({old_columns}) VALUES
                (1, 'old-twice', '', '', '', 'r', 's', '', '', 0, 0, 0, 0, 7, 200, ''),
                (1, 'old-twice', '', '', '', 'r', 's', '', '', 0, 0, 0, 0, 7, 200, '');"
        ))
        .await
        .unwrap();

    let mock = MockLlm::start().await.unwrap();
    let data = tempdir::TempDir::new();
    let file = data.path().join("kong.yaml");
    std::fs::write(
        &file,
        watched_config(
            &format!("{}/v1/chat/completions", mock.url()),
            &[("one", "m1")],
        ),
    )
    .unwrap();
    let (_dead, port) = dead_port();
    let down = format!("host=127.0.0.1 port={port} user=postgres dbname={db} connect_timeout=1");
    let up = format!("host=127.0.0.1 port=5432 user=postgres dbname={db}");
    let spawn_with = |conn: &str| {
        let analytics = ["--analytics", "postgres", "--analytics-postgres", conn];
        spawn_config(&file, data.path(), &analytics)
    };

    const N: usize = 30;
    let mut gw = spawn_with(&down);
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..N {
        let r = post_json(&format!("{}/one", gw.proxy), &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let s = analytics_status(&gw, |s| s["spilled"].as_u64() == Some(N as u64)).await;
    assert_eq!(s["written"], 0, "{s}");
    sigterm(&gw.child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "tollgate did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(gw);

    // The spill file holds rows (a second's requests each), their ids their first
    // requests'.
    let spill = data.path().join("analytics-spill.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&spill)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let rows: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let spilled: i64 = rows.iter().map(|r| r["requests"].as_i64().unwrap()).sum();
    assert_eq!(spilled, N as i64, "{lines:?}");
    // As a crash halfway through a replay leaves it: the first row renamed aside, and in
    // the table already.
    std::fs::write(
        data.path().join("analytics-spill.jsonl.replaying"),
        lines[..1].join("\n") + "\n",
    )
    .unwrap();
    std::fs::write(&spill, lines[1..].join("\n") + "\n").unwrap();
    let first = &rows[0];
    fresh
        .execute(
            &format!("INSERT INTO tollgate_usage ({old_columns}) VALUES (1, $1, '', '', '', 'one', 's', '', '', 0, 0, 0, 0, 0, 200, '')"),
            &[&first["request_id"].as_str().unwrap()],
        )
        .await
        .unwrap();

    let gw = spawn_with(&up);
    let s = analytics_status(&gw, |s| s["replayed"].as_u64() == Some(N as u64)).await;
    assert_eq!(s["spilled"], 0, "{s}");
    assert!(!spill.exists());
    assert!(!data.path().join("analytics-spill.jsonl.replaying").exists());
    let stored = fresh
        .query(
            "SELECT request_id, COUNT(*), SUM(latency_max)::BIGINT FROM tollgate_usage GROUP BY request_id",
            &[],
        )
        .await
        .unwrap();
    let counts: std::collections::HashMap<String, (i64, i64)> = stored
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    assert_eq!(counts.len(), rows.len() + 1, "{counts:?}");
    assert_eq!(
        counts["old-twice"],
        (1, 7),
        "the old duplicate is gone; its latency is its longest"
    );
    for r in &rows {
        let id = r["request_id"].as_str().unwrap();
        assert_eq!(counts.get(id).map(|c| c.0), Some(1), "{id}: {counts:?}");
    }
    // New records still go in, and the table took the new columns.
    let r = post_json(&format!("{}/one", gw.proxy), &body).await;
    assert_eq!(r.status, 200);
    analytics_status(&gw, |s| s["written"].as_u64() == Some(1)).await;
    let n: i64 = fresh
        .query_one(
            "SELECT SUM(requests)::BIGINT FROM tollgate_usage WHERE unauthenticated = 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // The old row, the spilled ones (the first stored before the crash, as one request of
    // an older release's insert) and the new one.
    let first_requests = first["requests"].as_i64().unwrap();
    assert_eq!(n, 1 + (N as i64 - first_requests + 1) + 1);
    drop(gw);
    drop(fresh);
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}

// ---- Issue 20 (hardening): the AI request path, through the real binary ----

/// The binary in front of a fresh mock-llm, with `yaml` (`{MOCK}`: the mock's URL,
/// `{DIR}`: a scratch directory, also the data dir).
async fn binary_with(yaml: &str) -> (Gateway, MockLlm, tempdir::TempDir) {
    let mock = MockLlm::start().await.unwrap();
    let dir = tempdir::TempDir::new();
    let file = dir.path().join("kong.yaml");
    let text = yaml
        .replace("{MOCK}", &mock.url())
        .replace("{DIR}", &dir.path().display().to_string());
    std::fs::write(&file, text).unwrap();
    let data = dir.path().join("data");
    let gw = spawn_config(&file, &data, &["--analytics", "off"]);
    (gw, mock, dir)
}

/// File-log lines, waiting up to 5 s for `n` of them (a writer thread writes them).
async fn file_log(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const HARDENING: &str = r#"_format_version: "3.0"
consumers:
  - username: app
    keyauth_credentials: [{key: app-key}]
services:
  - name: s
    url: http://unused.invalid
    read_timeout: 1000
    routes:
      - name: chat
        paths: ["/chat"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
              logging: {log_statistics: true, log_payloads: true}
          - name: file-log
            config: {path: "{DIR}/chat.log"}
      - name: decorated
        paths: ["/decorated"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/responses
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/responses"}}
          - name: ai-prompt-decorator
            config: {prompts: {prepend: [{role: system, content: Be brief.}]}}
      - name: keyed
        paths: ["/keyed"]
        plugins:
          - name: key-auth
            config: {key_names: [ApiKey]}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
      - name: advanced
        paths: ["/advanced"]
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer: {retries: 0}
              targets:
                - route_type: llm/v1/chat
                  model: {provider: openai, name: m, options: {upstream_url: "{MOCK}/v1/chat/completions"}}
"#;

fn chat_body(content: &str) -> serde_json::Value {
    json!({"messages": [{"role": "user", "content": content}]})
}

/// Item 7: malformed JSON is called that, with its position; a bad Responses `input`
/// is named, not answered "only supports llm/chat type requests".
#[tokio::test]
async fn invalid_json_is_named_with_its_position() {
    let (gw, mock, _dir) = binary_with(HARDENING).await;
    let ct = [("content-type", "application/json")];
    for path in ["/chat", "/decorated"] {
        let r = send("POST", &format!("{}{path}", gw.proxy), &ct, "{\"input\": [").await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(
            r.json()["error"]["message"],
            "invalid JSON in request body: EOF while parsing a list at line 1 column 11",
            "{path}"
        );
    }
    let r = post_json(&format!("{}/decorated", gw.proxy), &json!({"input": 42})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "'input' must be a string or an array of input items, not a number"
    );
    let r = send("POST", &format!("{}/chat", gw.proxy), &ct, "[1]").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("request body must be a JSON object"));
    assert!(mock.requests().is_empty());
}

/// Item 16: what is not I-JSON never goes upstream.
#[tokio::test]
async fn lone_surrogates_and_deep_nesting_are_refused() {
    let (gw, mock, _dir) = binary_with(HARDENING).await;
    let ct = [("content-type", "application/json")];
    let url = format!("{}/chat", gw.proxy);
    let lone = r#"{"messages":[{"role":"user","content":"a\ud800b"}]}"#;
    let r = send("POST", &url, &ct, lone).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["error"]["message"],
        "invalid JSON in request body: unpaired UTF-16 surrogate \\ud800 at line 1 column 41 (RFC 7493 I-JSON)"
    );
    let depth = 100_000;
    let deep = format!(
        r#"{{"messages":[{{"role":"user","content":{}{}}}]}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let r = send("POST", &url, &ct, deep).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nested deeper than 128 levels at line 1 column"),
        "{}",
        r.text()
    );
    assert!(mock.requests().is_empty());
    // A surrogate pair (an emoji) is fine.
    let pair = r#"{"messages":[{"role":"user","content":"\ud83d\ude00"}]}"#;
    assert_eq!(send("POST", &url, &ct, pair).await.status, 200);
}

/// Item 13: identity headers a client sends itself never reach the upstream.
#[tokio::test]
async fn spoofed_identity_headers_are_stripped() {
    let (gw, mock, _dir) = binary_with(HARDENING).await;
    let spoofed = [
        "x-consumer-groups",
        "x-authenticated-groups",
        "x-authenticated-scope",
        "x-authenticated-userid",
        "x-consumer-username",
    ];
    let mut headers = vec![("content-type", "application/json"), ("apikey", "app-key")];
    headers.extend(spoofed.iter().map(|h| (*h, "admins")));
    let r = send(
        "POST",
        &format!("{}/keyed", gw.proxy),
        &headers,
        chat_body("hi").to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mock.last_request().unwrap();
    for h in spoofed {
        assert_ne!(seen.header(h), Some("admins"), "{h} reached the upstream");
    }
    assert_eq!(seen.header("x-consumer-username"), Some("app"));
}

/// Item 14: LLM routes take POST; other methods get 405 with `Allow`, in OpenAI's shape.
#[tokio::test]
async fn llm_routes_take_post_only() {
    let (gw, mock, _dir) = binary_with(HARDENING).await;
    let long = "X".repeat(10_000);
    // (TRACE and CONNECT are refused for every route, before routing.)
    for method in ["GET", "PUT", "FOO", "post", long.as_str()] {
        let r = send(
            method,
            &format!("{}/chat", gw.proxy),
            &[("content-type", "application/json")],
            chat_body("hi").to_string(),
        )
        .await;
        let short = &method[..method.len().min(10)];
        assert_eq!(r.status, 405, "{short}: {}", r.text());
        assert_eq!(r.header("allow"), Some("POST"), "{short}");
        let m = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(m.starts_with("method "), "{m}");
        assert!(m.len() < 120, "the method is quoted cut short: {m}");
        assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    }
    assert!(mock.requests().is_empty());
}

/// Item 15: a streaming request answered 200 with a non-stream body ends in an SSE error
/// event, and the log says what came instead.
#[tokio::test]
async fn a_stream_answered_without_a_stream_gets_an_error_event() {
    let (gw, _mock, dir) = binary_with(HARDENING).await;
    let mut body = chat_body("[mock:non_json] hi");
    body["stream"] = json!(true);
    let r = post_json(&format!("{}/chat", gw.proxy), &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = sse_data(&r.text());
    assert_eq!(events.len(), 1, "{}", r.text());
    let ev: serde_json::Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(ev["error"]["code"], "upstream_invalid_stream");
    let lines = file_log(&dir.path().join("chat.log"), 1).await;
    let err = lines[0]["ai"]["proxy"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        err.contains("non-stream body (application/json"),
        "{}",
        lines[0]
    );
}

/// Item 14: over HTTP/2, a `host` header naming another authority than `:authority` is
/// refused like two Host headers; the same request with a matching one is served.
#[tokio::test]
async fn h2_host_conflicting_with_authority_is_refused() {
    use http_body_util::{BodyExt, Full};
    let (gw, mock, _dir) = binary_with(HARDENING).await;
    let addr = gw.proxy.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (host, status) in [("evil.example", 400), (addr.as_str(), 200)] {
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/chat"))
            .header("host", host)
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(chat_body("hi").to_string())))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "host {host}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if status == 400 {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["message"], "Bad request");
        }
    }
    assert_eq!(mock.requests().len(), 1);
}

/// Item 12: the service's `read_timeout` (1 s here) cuts a hung upstream and a stream
/// whose events stop, on ai-proxy and on ai-proxy-advanced left at its defaults.
#[tokio::test]
async fn service_timeouts_apply_to_ai_routes() {
    let (gw, _mock, _dir) = binary_with(HARDENING).await;
    for path in ["/chat", "/advanced"] {
        let started = Instant::now();
        let r = post_json(
            &format!("{}{path}", gw.proxy),
            &chat_body("[mock:delay_ms=8000] hi"),
        )
        .await;
        assert_eq!(r.status, 504, "{path}: {}", r.text());
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{path}: cut after {:?}, not by the 1 s read_timeout",
            started.elapsed()
        );
    }
    let mut body = chat_body("[mock:chunks=4][mock:chunk_delay_ms=3000] hi");
    body["stream"] = json!(true);
    let started = Instant::now();
    let r = post_json(&format!("{}/chat", gw.proxy), &body).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("upstream_timeout"),
        "no timeout event: {}",
        r.text()
    );
    assert!(started.elapsed() < Duration::from_secs(8));
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
    // uploading (`curl: (92)`), and when it saw the 413 before the end of its upload: it
    // then stops sending, and h2 resets the short stream (PROTOCOL_ERROR). The rest of the
    // body is drained before the answer now.
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
    let gw = spawn_tls(&file, &data);
    let tls = tls_url(&gw);
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
            "method TRACE is not allowed; use GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        ),
        (
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nconnection: close\r\n\r\n".to_vec(),
            "405",
            "method CONNECT is not allowed; use GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
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

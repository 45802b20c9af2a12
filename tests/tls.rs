//! Upstream TLS: certificates are verified by default; a service's `ca_certificates` or
//! `tls_verify: false` change that; `--upstream-ca-bundle` adds CAs for the whole process.
//! The upstream is mock-llm behind a TLS terminator with a certificate from a test CA.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use support::{post_json, tempdir::TempDir, Harness, MockLlm};
use tokio::net::{TcpListener, TcpStream};

/// A test CA and an HTTPS front for mock-llm whose certificate it signed.
struct TlsUpstream {
    ca_pem: String,
    addr: SocketAddr,
    mock: MockLlm,
}

async fn tls_upstream() -> TlsUpstream {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tollgate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();

    let certs = vec![CertificateDer::from_pem_slice(leaf.pem().as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let mock = MockLlm::start().await.unwrap();
    let backend: SocketAddr = mock.url().trim_start_matches("http://").parse().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    TlsUpstream {
        ca_pem: ca.pem(),
        addr,
        mock,
    }
}

fn config(up: &TlsUpstream) -> String {
    let url = format!("https://localhost:{}/v1/chat/completions", up.addr.port());
    let indented: String = up.ca_pem.lines().map(|l| format!("      {l}\n")).collect();
    let mut y = String::from("_format_version: \"3.0\"\nca_certificates:\n  - id: 8d0f1b6e-6f2f-4a53-9d3c-6a1f7d3c2b10\n    cert: |\n");
    y.push_str(&indented);
    y.push_str("services:\n");
    for (name, extra) in [
        ("default", ""),
        (
            "ca",
            "    ca_certificates: [8d0f1b6e-6f2f-4a53-9d3c-6a1f7d3c2b10]\n",
        ),
        ("noverify", "    tls_verify: false\n"),
    ] {
        y.push_str(&format!(
            "  - name: {name}\n    url: https://localhost:{port}\n{extra}    routes:\n      - name: {name}-ai\n        paths: [\"/{name}-ai\"]\n        plugins:\n          - name: ai-proxy\n            config:\n              route_type: llm/v1/chat\n              model: {{provider: openai, name: m, options: {{upstream_url: \"{url}\"}}}}\n      - name: {name}-plain\n        paths: [\"/{name}-plain\"]\n",
            port = up.addr.port()
        ));
    }
    y
}

#[tokio::test]
async fn upstream_certificates_are_verified_unless_a_service_says_otherwise() {
    let up = tls_upstream().await;
    let h = Harness::start(&config(&up)).await;
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    // The test CA is not trusted by default.
    let r = post_json(&h.url("/default-ai"), &body).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(up.mock.requests().is_empty());
    // Trusted through the service's ca_certificates, for AI and plain routes.
    let r = post_json(&h.url("/ca-ai"), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "m");
    let r = post_json(
        &h.url("/ca-plain/v1/chat/completions"),
        &json!({"model": "p", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // tls_verify: false skips verification.
    let r = post_json(&h.url("/noverify-ai"), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(
        &h.url("/default-plain/v1/chat/completions"),
        &json!({"model": "p", "messages": []}),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
}

#[tokio::test]
async fn bad_tls_settings_fail_at_load_naming_the_field() {
    let up = tls_upstream().await;
    let base = config(&up);
    let e = tollgate::gateway::load_str(
        &base.replace("-----BEGIN CERTIFICATE-----", "-----BEGIN NONSENSE-----"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ca_certificates[0].cert"), "{e}");
    let e = tollgate::gateway::load_str(&base.replace(
        "ca_certificates: [8d0f1b6e-6f2f-4a53-9d3c-6a1f7d3c2b10]",
        "ca_certificates: [00000000-0000-4000-8000-000000000000]",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("services[1].ca_certificates[0]"), "{e}");
    let e = tollgate::gateway::load_str(
        &base.replace("    tls_verify: false\n", "    tls_verify_depth: 2\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("services[2].tls_verify_depth"), "{e}");
}

/// `--upstream-ca-bundle` (process-wide) through the real binary.
#[tokio::test]
async fn the_upstream_ca_bundle_flag_adds_trust() {
    let up = tls_upstream().await;
    let dir = TempDir::new();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &up.ca_pem).unwrap();
    let file = dir.path().join("kong.yaml");
    std::fs::write(&file, config(&up)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env("TOLLGATE_PROXY_TLS_LISTEN", "off")
        .args([
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--proxy-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--admin-listen",
            "off",
            "--upstream-ca-bundle",
            "/nonexistent/ca.pem",
        ])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .env("TOLLGATE_PROXY_TLS_LISTEN", "off")
        .args([
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--proxy-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--admin-listen",
            "off",
            "--upstream-ca-bundle",
            bundle.to_str().unwrap(),
        ])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let proxy = loop {
        let l = lines.next().unwrap().unwrap();
        if let Some(a) = l.strip_prefix("tollgate proxy on ") {
            break a.to_string();
        }
    };
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let r = post_json(&format!("{proxy}/default-ai"), &body).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A TLS client trusting only the certificates of `root_pem`.
fn trusting(root_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Starts `tollgate serve` as `cmd` says (stdout piped) and reads the address it prints
/// after `prefix`; the rest of its output is drained.
fn started(cmd: &mut std::process::Command, prefix: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = loop {
        let l = lines.next().unwrap().unwrap();
        if let Some(a) = l.strip_prefix(prefix) {
            break a.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Completes a TLS handshake with `addr` for `server_name`, trusting only `root_pem`.
async fn handshake(addr: &str, server_name: &str, root_pem: &str) -> Result<(), String> {
    let connector = trusting(root_pem);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    connector
        .connect(name, tcp)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Kong `certificates`/`snis` pick the listener's certificate by server name; other names
/// get the listener's own (here the generated self-signed one).
#[tokio::test]
async fn the_tls_listener_presents_certificates_by_sni() {
    let dir = TempDir::new();
    let api = rcgen::generate_simple_self_signed(vec!["api.example.test".to_string()]).unwrap();
    let wild = rcgen::generate_simple_self_signed(vec!["*.wild.test".to_string()]).unwrap();
    let indent = |pem: &str| -> String { pem.lines().map(|l| format!("      {l}\n")).collect() };
    let yaml = format!(
        "_format_version: \"3.0\"\ncertificates:\n  - id: 3f1c6f5e-2b7a-4c1e-9a57-1d2b3c4d5e6f\n    snis: [api.example.test]\n    cert: |\n{}    key: |\n{}  - id: 7a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d\n    cert: |\n{}    key: |\n{}snis:\n  - name: \"*.wild.test\"\n    certificate: {{id: 7a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d}}\n",
        indent(&api.cert.pem()),
        indent(&api.key_pair.serialize_pem()),
        indent(&wild.cert.pem()),
        indent(&wild.key_pair.serialize_pem()),
    );
    let file = dir.path().join("kong.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let (mut child, tls) = started(
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .env("TOLLGATE_PROXY_TLS_LISTEN", "off")
            .args([
                "serve",
                "--config",
                file.to_str().unwrap(),
                "--proxy-listen",
                "127.0.0.1:0",
            ])
            .args(["--admin-listen", "off", "--proxy-tls-listen", "127.0.0.1:0"])
            .args(["--data-dir", dir.path().to_str().unwrap()]),
        "tollgate proxy tls on https://",
    );
    let own = std::fs::read_to_string(dir.path().join("tls/cert.pem")).unwrap();
    let results = (
        handshake(&tls, "api.example.test", &api.cert.pem()).await,
        handshake(&tls, "x.wild.test", &wild.cert.pem()).await,
        handshake(&tls, "localhost", &own).await,
        handshake(&tls, "localhost", &api.cert.pem()).await,
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(results.0.is_ok(), "{:?}", results.0);
    assert!(results.1.is_ok(), "{:?}", results.1);
    assert!(results.2.is_ok(), "{:?}", results.2);
    assert!(
        results.3.is_err(),
        "localhost must not get the api certificate"
    );

    // Bad entries are named at load.
    let e = tollgate::gateway::load_str(
        &yaml.replace("certificate: {id: 7a0b", "certificate: {id: 0a0b"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("snis[0].certificate"), "{e}");
    let e = tollgate::gateway::load_str(
        &yaml.replace("snis: [api.example.test]", "snis: [\"a.*.test\"]"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("certificates[0].snis[0]"), "{e}");
}

/// The Ingress Controller reaches each gateway's Admin API at `https://<pod IP>:<port>`
/// with the server name `pod.<admin service>.<namespace>.svc`, verifying the certificate
/// against the CA it is given: a `--tls-cert` made for that name passes, and the Admin API
/// answers behind it (with its token).
#[tokio::test]
async fn the_admin_api_answers_the_ingress_controller_over_tls_by_pod_name() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new();
    let name = "pod.kong-admin.kong.svc";
    let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("admin.crt"), dir.path().join("admin.key"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let file = dir.path().join("kong.yaml");
    std::fs::write(&file, "_format_version: \"3.0\"\n").unwrap();
    let (mut child, admin) = started(
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .env("TOLLGATE_PROXY_TLS_LISTEN", "off")
            .env("TOLLGATE_ADMIN_TOKEN", "kic-t0ken")
            .args(["serve", "--config", file.to_str().unwrap()])
            .args(["--proxy-listen", "127.0.0.1:0", "--admin-listen", "off"])
            .args(["--admin-tls-listen", "127.0.0.1:0"])
            .args(["--tls-cert", cert_file.to_str().unwrap()])
            .args(["--tls-key", key_file.to_str().unwrap()])
            .args(["--data-dir", dir.path().to_str().unwrap()]),
        "tollgate admin tls on https://",
    );
    let connector = trusting(&cert.cert.pem());
    let get = |path: &'static str| {
        let connector = connector.clone();
        let admin = admin.clone();
        async move {
            let tcp = TcpStream::connect(&admin).await.unwrap();
            let sni = rustls::pki_types::ServerName::try_from(name).unwrap();
            let mut tls = connector.connect(sni, tcp).await.unwrap();
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {admin}\r\nKong-Admin-Token: kic-t0ken\r\nConnection: close\r\n\r\n"
            );
            tls.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let _ = tls.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).to_string()
        }
    };
    let status = get("/status").await;
    let root = get("/").await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(status.contains(&"0".repeat(32)), "{status}");
    assert!(root.contains("\"database\":\"off\""), "{root}");
}

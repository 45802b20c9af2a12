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
    let e = tollgate::config::load_str(
        &base.replace("-----BEGIN CERTIFICATE-----", "-----BEGIN NONSENSE-----"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ca_certificates[0].cert"), "{e}");
    let e = tollgate::config::load_str(&base.replace(
        "ca_certificates: [8d0f1b6e-6f2f-4a53-9d3c-6a1f7d3c2b10]",
        "ca_certificates: [00000000-0000-4000-8000-000000000000]",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("services[1].ca_certificates[0]"), "{e}");
    let e = tollgate::config::load_str(
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

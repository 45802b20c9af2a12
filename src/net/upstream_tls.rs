//! Which certificates upstream TLS trusts.
//!
//! By default an upstream's certificate is verified against the Mozilla roots
//! (webpki-roots), the system's CA bundle (`SSL_CERT_FILE`, else the usual Debian/RHEL/
//! Alpine/macOS paths) and the optional `--upstream-ca-bundle`. A service may narrow that to
//! its own `ca_certificates` (Kong's semantics: then only those are trusted), or turn
//! verification off with `tls_verify: false`.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

/// A TLS client configuration and the id pooled connections are keyed by (so a connection
/// made under one trust is never reused under another).
#[derive(Clone)]
pub struct Trust {
    pub id: u64,
    pub connector: TlsConnector,
    /// For logs and errors: `default`, `ca_certificates`, `tls_verify off`.
    pub label: &'static str,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Trust({}, {})", self.id, self.label)
    }
}

/// Where the system CA bundle usually is.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

static EXTRA_BUNDLE: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
static DEFAULT: OnceLock<Option<Trust>> = OnceLock::new();

/// Reads `--upstream-ca-bundle` (PEM); call before the first upstream connection.
pub fn set_extra_bundle(path: &Path) -> Result<usize, String> {
    let certs = read_pem(path)?;
    let n = certs.len();
    EXTRA_BUNDLE
        .set(certs)
        .map_err(|_| "the upstream CA bundle was already set".to_string())?;
    Ok(n)
}

/// The certificates in a PEM file; a file without any is an error naming it.
pub fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = parse_pem(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(certs)
}

/// The certificates in PEM text.
pub fn parse_pem(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) found".into());
    }
    Ok(certs)
}

fn next_id() -> u64 {
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The trust every upstream gets unless its service says otherwise (id 0).
pub fn default_trust() -> Option<Trust> {
    DEFAULT
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let system = std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .into_iter()
                .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from))
                .find(|p| p.is_file());
            if let Some(p) = system {
                if let Ok(certs) = read_pem(&p) {
                    let (added, _) = roots.add_parsable_certificates(certs);
                    tracing::debug!(file = %p.display(), added, "system CA bundle");
                }
            }
            if let Some(extra) = EXTRA_BUNDLE.get() {
                let (added, ignored) = roots.add_parsable_certificates(extra.iter().cloned());
                if ignored > 0 {
                    tracing::warn!(
                        added,
                        ignored,
                        "upstream CA bundle: some certificates could not be used"
                    );
                }
            }
            build(roots, None, 0, "default")
        })
        .clone()
}

/// TLS over `tcp` to `host` under `trust` (None: the default trust); errors say which step
/// failed.
pub async fn connect(
    trust: Option<&Trust>,
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let default;
    let trust = match trust {
        Some(t) => t,
        None => {
            default = default_trust().ok_or("TLS is not available")?;
            &default
        }
    };
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("bad TLS server name {host}: {e}"))?;
    trust
        .connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {host}: {e}"))
}

/// Trust only `cas` (a service's `ca_certificates`).
pub fn only(cas: &[CertificateDer<'static>]) -> Result<Trust, String> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(cas.iter().cloned());
    if added == 0 {
        return Err("none of the CA certificates can be used as a trust anchor".into());
    }
    build(roots, None, next_id(), "ca_certificates").ok_or_else(|| "TLS client setup failed".into())
}

/// No verification (`tls_verify: false`).
pub fn insecure() -> Option<Trust> {
    static INSECURE: OnceLock<Option<Trust>> = OnceLock::new();
    INSECURE
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(NoVerify(provider));
            build(
                rustls::RootCertStore::empty(),
                Some(verifier),
                u64::MAX,
                "tls_verify off",
            )
        })
        .clone()
}

fn build(
    roots: rustls::RootCertStore,
    verifier: Option<Arc<NoVerify>>,
    id: u64,
    label: &'static str,
) -> Option<Trust> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "TLS client setup failed; https upstreams will be unreachable");
            return None;
        }
    };
    let mut cfg = match verifier {
        Some(v) => builder
            .dangerous()
            .with_custom_certificate_verifier(v)
            .with_no_client_auth(),
        None => builder.with_root_certificates(roots).with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(Trust {
        id,
        connector: TlsConnector::from(Arc::new(cfg)),
        label,
    })
}

/// Accepts any certificate (signatures on the handshake are still checked, so the
/// connection is encrypted to whoever holds the presented key).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

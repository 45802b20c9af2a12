//! Google Cloud service-account credentials, without I/O: the key parsed at load, the
//! RS256-signed JWT assertion that buys an OAuth2 access token (RFC 7523 jwt-bearer grant)
//! and the form that posts it. The fetching, the answer and the caching live in
//! `net::cloud_token`.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::Deserialize;
use serde_json::json;

/// The OAuth2 scope Vertex AI (and AI Studio) accept for service-account tokens.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, used when the key file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Lifetime asked for in the assertion (Google's maximum).
pub const ASSERTION_TTL_SECS: u64 = 3600;

/// A parsed service-account key. The private key never leaves this value: Debug shows the
/// account only.
pub struct ServiceAccount {
    pub client_email: String,
    pub token_uri: String,
    key_id: Option<String>,
    key: RsaKeyPair,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("key", &"REDACTED")
            .finish()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Parses a service-account key file (the JSON Google Cloud hands out). Errors say what
    /// is wrong without quoting the key.
    pub fn parse(json: &str) -> Result<ServiceAccount, String> {
        let f: KeyFile = serde_json::from_str(json)
            .map_err(|e| format!("not a service-account JSON key file: {e}"))?;
        if let Some(kind) = f.kind.as_deref() {
            if kind != "service_account" {
                return Err(format!(
                    "'type' is '{kind}'; a service-account key file has 'service_account'"
                ));
            }
        }
        let client_email = f
            .client_email
            .filter(|e| !e.is_empty())
            .ok_or("'client_email' is missing")?;
        let pem = f
            .private_key
            .filter(|k| !k.is_empty())
            .ok_or("'private_key' is missing")?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| "'private_key' is not a PEM-encoded PKCS#8 private key".to_string())?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| format!("'private_key' is not a usable RSA key ({e})"))?;
        let token_uri = f
            .token_uri
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
        if !(token_uri.starts_with("https://") || token_uri.starts_with("http://")) {
            return Err("'token_uri' must be an http(s) URL".into());
        }
        Ok(ServiceAccount {
            client_email,
            token_uri,
            key_id: f.private_key_id.filter(|k| !k.is_empty()),
            key,
        })
    }

    /// The signed JWT assertion for a token valid from `now` (Unix seconds) for an hour.
    pub fn assertion(&self, now: u64) -> Result<String, String> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_TTL_SECS,
        });
        let mut signing_input = URL_SAFE_NO_PAD.encode(header.to_string());
        signing_input.push('.');
        signing_input.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| "signing the JWT assertion failed".to_string())?;
        signing_input.push('.');
        signing_input.push_str(&URL_SAFE_NO_PAD.encode(&sig));
        Ok(signing_input)
    }

    /// The RSA public key (PKCS#1 DER), for checking signatures in tests.
    pub fn public_key_der(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        self.key.public_key().as_ref().to_vec()
    }
}

/// The form body of a jwt-bearer token request.
pub fn token_request_body(assertion: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
        .append_pair("assertion", assertion)
        .finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    const PEM: &str = include_str!("../../tests/fixtures/gcp/test-only-rsa-key.pem");

    fn key_file(token_uri: &str) -> String {
        json!({"type": "service_account", "project_id": "p", "private_key_id": "kid1",
            "private_key": PEM, "client_email": "gw@p.iam.gserviceaccount.com",
            "token_uri": token_uri})
        .to_string()
    }

    #[test]
    fn assertion_is_a_signed_rs256_jwt() {
        let sa = ServiceAccount::parse(&key_file("https://oauth2.example/token")).unwrap();
        let jwt = sa.assertion(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "kid1"}));
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({"iss": "gw@p.iam.gserviceaccount.com", "scope": SCOPE,
                "aud": "https://oauth2.example/token", "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64})
        );
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, sa.public_key_der());
        let signed = format!("{}.{}", parts[0], parts[1]);
        public.verify(signed.as_bytes(), &sig).unwrap();
        assert!(public.verify(b"something else", &sig).is_err());
        let body = token_request_body(&jwt);
        assert!(body.starts_with(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
        ));
    }

    #[test]
    fn bad_key_files_say_why_without_the_key() {
        let cases = [
            ("not json".to_string(), "not a service-account JSON"),
            (
                json!({"type": "authorized_user"}).to_string(),
                "'type' is 'authorized_user'",
            ),
            (
                json!({"private_key": PEM}).to_string(),
                "'client_email' is missing",
            ),
            (
                json!({"client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"})
                    .to_string(),
                "'private_key'",
            ),
            (
                json!({"client_email": "a@b", "private_key": PEM, "token_uri": "ftp://x"})
                    .to_string(),
                "'token_uri'",
            ),
        ];
        for (json, want) in cases {
            let e = ServiceAccount::parse(&json).unwrap_err();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("MII"), "key material in {e}");
        }
        let sa =
            ServiceAccount::parse(&json!({"client_email": "a@b", "private_key": PEM}).to_string())
                .unwrap();
        assert_eq!(sa.token_uri, DEFAULT_TOKEN_URI);
        assert!(!format!("{sa:?}").contains("MII"));
    }
}

//! OAuth2 access tokens for cloud identities: a Google Cloud service account (Vertex AI,
//! the jwt-bearer grant), an Azure managed identity (the instance metadata service) or an
//! Entra app registration (the client credentials grant). Each is fetched through the
//! gateway's own upstream client, cached per identity and shared by every request and
//! target using it, refreshed when less than five minutes remain. Concurrent requests wait
//! for one fetch instead of each starting their own. What differs by cloud is only how the
//! token request is built (`net::gcp`, `net::azure`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Uri};
use serde::Deserialize;

use super::azure;
use super::gcp::{self, ServiceAccount};
use crate::error::{Cloud, GatewayError};
use crate::net::upstream::{Endpoint, OutRequest, Upstreams};
use crate::secret::Secret;

/// A token is replaced this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How long a token is taken to live when its answer does not say.
const DEFAULT_TTL_SECS: u64 = 3600;

/// Whose token a source fetches, and how it asks for it.
pub enum Credential {
    /// A Google service account: a signed assertion posted to its token URL.
    Gcp {
        /// Boxed: the RSA key is large, and the other kinds are small.
        account: Box<ServiceAccount>,
        token_url: String,
        /// Part of the cache key: a rotated key gets a source of its own.
        key_digest: String,
    },
    /// An Azure managed identity, asked of the metadata service (a user-assigned one when
    /// `client_id` is set).
    AzureManagedIdentity {
        client_id: Option<String>,
        imds_host: String,
    },
    /// An Entra app registration's client credentials grant.
    AzureClientCredentials {
        tenant_id: String,
        client_id: String,
        client_secret: Secret<String>,
        authority_host: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Identities only: never the key or the secret.
        match self {
            Credential::Gcp { account, .. } => f
                .debug_struct("Gcp")
                .field("client_email", &account.client_email)
                .finish(),
            Credential::AzureManagedIdentity { client_id, .. } => f
                .debug_struct("AzureManagedIdentity")
                .field("client_id", client_id)
                .finish(),
            Credential::AzureClientCredentials {
                tenant_id,
                client_id,
                ..
            } => f
                .debug_struct("AzureClientCredentials")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .finish(),
        }
    }
}

/// A short hex digest of a secret, to tell credentials apart without keeping them in keys.
fn digest(secret: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Credential {
    /// A service account from its key file text `json`, its tokens from `token_url` (an
    /// override) or the key file's `token_uri`.
    pub fn gcp(json: &str, token_url: Option<&str>) -> Result<Credential, String> {
        let account = ServiceAccount::parse(json)?;
        let token_url = token_url.unwrap_or(&account.token_uri).to_string();
        Ok(Credential::Gcp {
            account: Box::new(account),
            token_url,
            key_digest: digest(json),
        })
    }

    /// The cloud whose token this is (named in errors).
    pub fn cloud(&self) -> Cloud {
        match self {
            Credential::Gcp { .. } => Cloud::Gcp,
            _ => Cloud::Azure,
        }
    }

    /// Who the token is for, for logs.
    pub fn identity(&self) -> &str {
        match self {
            Credential::Gcp { account, .. } => &account.client_email,
            Credential::AzureManagedIdentity { client_id, .. } => {
                client_id.as_deref().unwrap_or("system-assigned")
            }
            Credential::AzureClientCredentials { client_id, .. } => client_id,
        }
    }

    /// Where the token request goes.
    pub fn token_url(&self) -> String {
        match self {
            Credential::Gcp { token_url, .. } => token_url.clone(),
            Credential::AzureManagedIdentity {
                client_id,
                imds_host,
            } => azure::imds_token_url(imds_host, client_id.as_deref()),
            Credential::AzureClientCredentials {
                tenant_id,
                authority_host,
                ..
            } => azure::entra_token_url(authority_host, tenant_id),
        }
    }

    /// The name sources are shared under: the same identity at the same URL (with the same
    /// key or secret) is one source across targets and reloads.
    fn cache_key(&self) -> String {
        let url = self.token_url();
        match self {
            Credential::Gcp {
                account,
                key_digest,
                ..
            } => format!("gcp\n{}\n{url}\n{key_digest}", account.client_email),
            Credential::AzureManagedIdentity { .. } => format!("azure-mi\n{url}"),
            Credential::AzureClientCredentials {
                client_id,
                client_secret,
                ..
            } => format!(
                "azure-cc\n{url}\n{client_id}\n{}",
                digest(client_secret.expose())
            ),
        }
    }

    /// The token request's method, headers (besides Host) and body, at `now` (Unix
    /// seconds).
    fn request(&self, now: u64) -> Result<(Method, HeaderMap, Bytes), String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let form = |headers: &mut HeaderMap, body: String| {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            Bytes::from(body)
        };
        match self {
            Credential::Gcp { account, .. } => {
                let body = gcp::token_request_body(&account.assertion(now)?);
                let body = form(&mut headers, body);
                Ok((Method::POST, headers, body))
            }
            Credential::AzureManagedIdentity { .. } => {
                // IMDS refuses requests without it (a guard against SSRF through proxies).
                headers.insert("metadata", HeaderValue::from_static("true"));
                Ok((Method::GET, headers, Bytes::new()))
            }
            Credential::AzureClientCredentials {
                client_id,
                client_secret,
                ..
            } => {
                let body = azure::client_credentials_body(client_id, client_secret.expose());
                let body = form(&mut headers, body);
                Ok((Method::POST, headers, body))
            }
        }
    }

    /// `reason` with the client secret (if any) blotted out: the reason reaches clients
    /// and logs, and an endpoint might quote what it was sent.
    fn scrub(&self, reason: String) -> String {
        match self {
            Credential::AzureClientCredentials { client_secret, .. }
                if !client_secret.expose().is_empty() =>
            {
                reason.replace(client_secret.expose().as_str(), "REDACTED")
            }
            _ => reason,
        }
    }
}

/// Where tokens come from for one identity, and the one it holds now.
pub struct TokenSource {
    credential: Credential,
    https: bool,
    host: String,
    port: u16,
    target: Uri,
    host_header: HeaderValue,
    current: Mutex<Option<Cached>>,
    /// Held while a fetch runs, so requests arriving meanwhile wait for its token.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("credential", &self.credential)
            .field("token_url", &self.target)
            .finish()
    }
}

struct Cached {
    /// `Bearer <token>`, marked sensitive.
    header: HeaderValue,
    refresh_at: Instant,
}

/// When a token fetched at `fetched_at` and living `expires_in` seconds is replaced (at once
/// when it lives less than the margin).
fn refresh_at(fetched_at: Instant, expires_in: u64) -> Instant {
    fetched_at + Duration::from_secs(expires_in).saturating_sub(REFRESH_MARGIN)
}

/// Sources alive anywhere in the process, by identity and token URL: targets (and config
/// reloads) naming the same identity share its token.
static SOURCES: LazyLock<Mutex<HashMap<String, Weak<TokenSource>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl TokenSource {
    /// The shared source for a credential (a new one if none is alive).
    pub fn shared(credential: Credential) -> Result<Arc<TokenSource>, String> {
        let name = credential.cache_key();
        let mut all = match SOURCES.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        all.retain(|_, w| w.strong_count() > 0);
        if let Some(s) = all.get(&name).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let s = Arc::new(TokenSource::new(credential)?);
        all.insert(name, Arc::downgrade(&s));
        Ok(s)
    }

    fn new(credential: Credential) -> Result<TokenSource, String> {
        let url = credential.token_url();
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("token URL '{url}' is not a valid URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("token URL '{url}' must be http(s)")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("token URL '{url}' has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
        let host_header = HeaderValue::from_str(authority)
            .map_err(|_| format!("token URL '{url}' has a bad host"))?;
        let target: Uri = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .parse()
            .map_err(|_| format!("token URL '{url}' has a bad path"))?;
        Ok(TokenSource {
            credential,
            https,
            host,
            port,
            target,
            host_header,
            current: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Who the tokens are for (for logs).
    pub fn identity(&self) -> &str {
        self.credential.identity()
    }

    /// The cloud the tokens come from.
    pub fn cloud(&self) -> Cloud {
        self.credential.cloud()
    }

    /// Where the tokens are fetched (it names no secret).
    pub fn token_url(&self) -> String {
        self.credential.token_url()
    }

    fn fresh(&self) -> Option<HeaderValue> {
        let cur = match self.current.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        cur.as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.header.clone())
    }

    /// `Authorization: Bearer …` for the next request: the cached token, or a new one.
    pub async fn authorization(
        &self,
        upstreams: &Upstreams,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<HeaderValue, GatewayError> {
        if let Some(h) = self.fresh() {
            return Ok(h);
        }
        // Boxed: the fetch (a whole upstream exchange) would otherwise sit inline in every
        // request's future, fetched or not, and make each one larger to build and move.
        Box::pin(self.refresh(upstreams, connect_timeout, read_timeout)).await
    }

    fn failure(&self, reason: String) -> GatewayError {
        GatewayError::CloudAuth {
            cloud: self.cloud(),
            reason: self.credential.scrub(reason),
        }
    }

    /// Fetches a new token (one fetch at a time; a waiter takes the one just fetched).
    async fn refresh(
        &self,
        upstreams: &Upstreams,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<HeaderValue, GatewayError> {
        let _one_fetch = self.fetching.lock().await;
        if let Some(h) = self.fresh() {
            return Ok(h);
        }
        let fetched_at = Instant::now();
        let token = self
            .fetch(upstreams, connect_timeout, read_timeout)
            .await
            .map_err(|e| self.failure(e))?;
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.token.expose()))
            .map_err(|_| {
                self.failure(
                    "the token endpoint gave a token that is not a valid header value".into(),
                )
            })?;
        header.set_sensitive(true);
        let refresh_at = refresh_at(fetched_at, token.expires_in);
        tracing::debug!(
            cloud = ?self.cloud(),
            identity = self.identity(),
            expires_in = token.expires_in,
            "fetched a cloud access token"
        );
        let mut cur = match self.current.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *cur = Some(Cached {
            header: header.clone(),
            refresh_at,
        });
        Ok(header)
    }

    async fn fetch(
        &self,
        upstreams: &Upstreams,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<AccessToken, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (method, mut headers, body) = self.credential.request(now)?;
        headers.insert(header::HOST, self.host_header.clone());
        let out = OutRequest {
            method,
            target: self.target.clone(),
            headers: headers.into(),
            body,
            upload: None,
        };
        let ep = Endpoint {
            https: self.https,
            host: &self.host,
            port: self.port,
            trust: None,
        };
        let resp = upstreams
            .send(&ep, out, connect_timeout, read_timeout)
            .await
            .map_err(|f| f.detail)?;
        let status = resp.status().as_u16();
        let bytes = crate::net::body::read_buffered(resp.into_body(), read_timeout)
            .await
            .map_err(|e| e.to_string())?;
        parse_token_response(status, &bytes)
    }
}

/// An access token and how long it lives.
#[derive(Debug)]
pub struct AccessToken {
    pub token: Secret<String>,
    pub expires_in: u64,
}

/// `expires_in` as a number (Google, Entra) or a string of digits (Azure's metadata
/// service).
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u64),
        Text(String),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        Some(Either::Number(n)) => Some(n),
        Some(Either::Text(s)) => s.trim().parse().ok(),
        None => None,
    })
}

/// Reads a token endpoint answer: `{access_token, expires_in, token_type}` on 200, or
/// OAuth's `{error, error_description}` otherwise (which is what the error message says).
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<AccessToken, String> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
        #[serde(default, deserialize_with = "seconds")]
        expires_in: Option<u64>,
        token_type: Option<String>,
        error: Option<serde_json::Value>,
        error_description: Option<String>,
    }
    let a: Option<Answer> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let why = a
            .map(|a| {
                let code = match a.error {
                    Some(serde_json::Value::String(s)) => s,
                    Some(serde_json::Value::Object(o)) => o
                        .get("message")
                        .and_then(|m| m.as_str())
                        .unwrap_or("error")
                        .to_string(),
                    _ => "error".into(),
                };
                match a.error_description {
                    Some(d) => format!("{code}: {d}"),
                    None => code,
                }
            })
            .unwrap_or_else(|| "unreadable answer".into());
        return Err(format!("token endpoint answered {status} ({why})"));
    }
    let a = a.ok_or("token endpoint answer is not JSON")?;
    if let Some(t) = a.token_type.as_deref() {
        if !t.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "token endpoint gave a '{t}' token, not a Bearer one"
            ));
        }
    }
    let token = a
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or("token endpoint answer has no access_token")?;
    Ok(AccessToken {
        token: Secret::new(token),
        expires_in: a.expires_in.unwrap_or(DEFAULT_TTL_SECS),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const PEM: &str = include_str!("../../tests/fixtures/gcp/test-only-rsa-key.pem");

    #[test]
    fn refreshed_five_minutes_before_expiry() {
        let t0 = Instant::now();
        assert_eq!(refresh_at(t0, 3600), t0 + Duration::from_secs(3300));
        assert_eq!(refresh_at(t0, 60), t0);
    }

    #[test]
    fn one_source_per_account_and_key() {
        let key = |email: &str| {
            serde_json::json!({"client_email": email, "private_key": PEM,
                "token_uri": "http://127.0.0.1:1/token"})
            .to_string()
        };
        let gcp = |email: &str, url: Option<&str>| {
            TokenSource::shared(Credential::gcp(&key(email), url)?)
        };
        let a = gcp("a@x", None).unwrap();
        let again = gcp("a@x", None).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let b = gcp("b@x", None).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        let other_url = gcp("a@x", Some("http://127.0.0.1:2/t")).unwrap();
        assert!(!Arc::ptr_eq(&a, &other_url));
        assert_eq!(other_url.port, 2);
        assert!(gcp("a@x", Some("ftp://x")).is_err());
        assert!(!format!("{a:?}").contains("MII"));
        assert_eq!(a.cloud(), Cloud::Gcp);
    }

    fn client_credentials(secret: &str) -> Credential {
        Credential::AzureClientCredentials {
            tenant_id: "t1".into(),
            client_id: "app".into(),
            client_secret: Secret::new(secret.into()),
            authority_host: "http://127.0.0.1:3".into(),
        }
    }

    #[test]
    fn one_source_per_azure_identity_and_secret() {
        let mi = |id: Option<&str>| {
            TokenSource::shared(Credential::AzureManagedIdentity {
                client_id: id.map(Into::into),
                imds_host: "http://127.0.0.1:4".into(),
            })
            .unwrap()
        };
        assert!(Arc::ptr_eq(&mi(None), &mi(None)));
        assert!(!Arc::ptr_eq(&mi(None), &mi(Some("uai"))));
        assert_eq!(mi(None).cloud(), Cloud::Azure);
        assert_eq!(mi(None).identity(), "system-assigned");
        let cc = |s: &str| TokenSource::shared(client_credentials(s)).unwrap();
        let a = cc("s3cret-one");
        assert!(Arc::ptr_eq(&a, &cc("s3cret-one")));
        assert!(!Arc::ptr_eq(&a, &cc("s3cret-two")), "a rotated secret");
        assert_eq!(a.target.to_string(), "/t1/oauth2/v2.0/token");
        let shown = format!("{a:?}");
        assert!(
            shown.contains("app") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn azure_token_requests() {
        let (m, h, body) = Credential::AzureManagedIdentity {
            client_id: None,
            imds_host: "http://127.0.0.1:4".into(),
        }
        .request(0)
        .unwrap();
        assert_eq!(m, Method::GET);
        assert_eq!(h.get("metadata").unwrap(), "true");
        assert!(body.is_empty());
        let cred = client_credentials("p@ss");
        let (m, h, body) = cred.request(0).unwrap();
        assert_eq!(m, Method::POST);
        assert_eq!(
            h.get(header::CONTENT_TYPE).unwrap(),
            "application/x-www-form-urlencoded"
        );
        assert!(body.starts_with(b"grant_type=client_credentials&client_id=app&"));
        assert_eq!(
            cred.scrub("echoed p@ss back".into()),
            "echoed REDACTED back"
        );
    }

    #[test]
    fn token_answers() {
        let t = parse_token_response(
            200,
            br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!((t.token.expose().as_str(), t.expires_in), ("ya29.x", 3599));
        // Azure's metadata service sends the lifetime as a string.
        let t = parse_token_response(
            200,
            br#"{"access_token":"eyJ0","expires_in":"86399","expires_on":"1","resource":"https://cognitiveservices.azure.com","token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(t.expires_in, 86399);
        let e = parse_token_response(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "token endpoint answered 400 (invalid_grant: Invalid JWT Signature.)"
        );
        let e = parse_token_response(
            401,
            br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}"#,
        )
        .unwrap_err();
        assert!(e.contains("401 (invalid_client: AADSTS7000215"), "{e}");
        assert!(parse_token_response(200, b"{}").is_err());
        assert!(parse_token_response(200, br#"{"access_token":"a","token_type":"mac"}"#).is_err());
        assert!(parse_token_response(500, b"<html>")
            .unwrap_err()
            .contains("500"));
    }
}

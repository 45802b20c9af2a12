//! OAuth2 access tokens for Google Cloud service accounts (Vertex AI auth): fetched with the
//! jwt-bearer grant through the gateway's own upstream client, cached per service account
//! and shared by every request and target using it, refreshed when less than five minutes
//! remain. Concurrent requests wait for one fetch instead of each starting their own.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Uri};

use super::gcp::{self, ServiceAccount};
use crate::error::GatewayError;
use crate::net::upstream::{Endpoint, OutRequest, Upstreams};

/// A token is replaced this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Where tokens come from for one service account, and the one it holds now.
pub struct TokenSource {
    sa: ServiceAccount,
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
            .field("client_email", &self.sa.client_email)
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

/// Sources alive anywhere in the process, by service account and token URL: targets (and
/// config reloads) naming the same account share its token.
static SOURCES: LazyLock<Mutex<HashMap<String, Weak<TokenSource>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl TokenSource {
    /// The shared source for a service account (its key file text `json`), posting to
    /// `token_url` (an override) or the key file's `token_uri`.
    pub fn shared(json: &str, token_url: Option<&str>) -> Result<Arc<TokenSource>, String> {
        let sa = ServiceAccount::parse(json)?;
        let url = token_url.unwrap_or(&sa.token_uri).to_string();
        // The key's digest is part of the name: a rotated key gets a source of its own.
        let digest = ring::digest::digest(&ring::digest::SHA256, json.as_bytes());
        let name = format!("{}\n{url}\n{:x?}", sa.client_email, &digest.as_ref()[..16]);
        let mut all = match SOURCES.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        all.retain(|_, w| w.strong_count() > 0);
        if let Some(s) = all.get(&name).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let s = Arc::new(TokenSource::new(sa, &url)?);
        all.insert(name, Arc::downgrade(&s));
        Ok(s)
    }

    fn new(sa: ServiceAccount, url: &str) -> Result<TokenSource, String> {
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
            sa,
            https,
            host,
            port,
            target,
            host_header,
            current: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The service account's e-mail (for logs).
    pub fn client_email(&self) -> &str {
        &self.sa.client_email
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
            .map_err(GatewayError::CloudAuth)?;
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.token.expose()))
            .map_err(|_| {
                GatewayError::CloudAuth(
                    "the token endpoint gave a token that is not a valid header value".into(),
                )
            })?;
        header.set_sensitive(true);
        let refresh_at = refresh_at(fetched_at, token.expires_in);
        tracing::debug!(
            client_email = self.client_email(),
            expires_in = token.expires_in,
            "fetched a GCP access token"
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
    ) -> Result<gcp::AccessToken, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let body = Bytes::from(gcp::token_request_body(&self.sa.assertion(now)?));
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, self.host_header.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let out = OutRequest {
            method: Method::POST,
            target: self.target.clone(),
            headers,
            body,
        };
        let ep = Endpoint {
            https: self.https,
            host: &self.host,
            port: self.port,
            trust: None,
        };
        let (resp, conn) = upstreams
            .send(&ep, out, connect_timeout, read_timeout)
            .await
            .map_err(|f| f.detail)?;
        let status = resp.status().as_u16();
        let bytes = crate::net::body::read_buffered(resp.into_body(), conn, read_timeout)
            .await
            .map_err(|e| e.to_string())?;
        gcp::parse_token_response(status, &bytes)
    }
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
        let a = TokenSource::shared(&key("a@x"), None).unwrap();
        let again = TokenSource::shared(&key("a@x"), None).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let b = TokenSource::shared(&key("b@x"), None).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        let other_url = TokenSource::shared(&key("a@x"), Some("http://127.0.0.1:2/t")).unwrap();
        assert!(!Arc::ptr_eq(&a, &other_url));
        assert_eq!(other_url.port, 2);
        assert!(TokenSource::shared(&key("a@x"), Some("ftp://x")).is_err());
        assert!(!format!("{a:?}").contains("MII"));
    }
}

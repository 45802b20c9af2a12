//! What the gateway forwards and adds: hop-by-hop headers dropped, X-Forwarded-* and
//! X-Kong-* added, the upstream query string.

use http::{header, HeaderMap, HeaderName, HeaderValue, Response};

use crate::net::out_headers::OutHeaders;
use crate::observe::log::RequestLog;
use crate::plugins::request_transformer::UpstreamRequest;
use crate::proxy::response::ProxyBody;

use super::access;

/// What X-Forwarded-* headers say about the client connection.
pub struct Forwarded<'a> {
    pub client_ip: &'a str,
    pub proto: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    pub request_id: &'a crate::observe::log::RequestId,
    pub prior_for: Option<&'a str>,
    /// The client's Host header as sent (with port).
    pub original_host: &'a str,
}

// Header names the request path sets, made at compile time (`from_static` at run time
// checks the name on every call).
pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PATH: HeaderName = HeaderName::from_static("x-forwarded-path");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_KONG_REQUEST_ID: HeaderName = HeaderName::from_static("x-kong-request-id");
const X_KONG_UPSTREAM_LATENCY: HeaderName = HeaderName::from_static("x-kong-upstream-latency");
const X_KONG_PROXY_LATENCY: HeaderName = HeaderName::from_static("x-kong-proxy-latency");
/// Kong's request header asking for debug response headers.
pub(super) const KONG_DEBUG: HeaderName = HeaderName::from_static("kong-debug");

/// Hop-by-hop headers, never forwarded in either direction (RFC 9110 §7.6.1).
pub(super) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers the gateway sets itself for the upstream.
pub(super) const RECOMPUTED: &[&str] = &["host", "content-length"];

/// The client's headers as the upstream should see them: read in place, with the
/// gateway's Host and X-Forwarded-* set over them (see `net::out_headers`).
pub fn forward_headers<'a>(
    client: &'a HeaderMap,
    host: HeaderValue,
    f: &Forwarded<'_>,
) -> OutHeaders<'a> {
    // Room for what the gateway sets here and on the AI path (encoding, type, credential).
    let mut h = OutHeaders::forwarding(client, never_forwarded, 16);
    for listed in connection_listed(client) {
        if let Ok(name) = HeaderName::from_bytes(listed.as_bytes()) {
            h.remove(&name);
        }
    }
    // Each name below is set once, into a list holding none of them yet: appended, where
    // `insert` would look for it first.
    h.append(header::HOST, host);
    let set = |h: &mut OutHeaders<'_>, name: HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.append(name, v);
        }
    };
    let ip = LAST_IP.with(|c| c.borrow_mut().value(f.client_ip));
    match (f.prior_for, &ip) {
        (Some(p), _) => set(&mut h, X_FORWARDED_FOR, &format!("{p}, {}", f.client_ip)),
        // One value for both headers: a clone shares its bytes.
        (None, Some(ip)) => h.append(X_FORWARDED_FOR, ip.clone()),
        (None, None) => {}
    }
    if let Some(ip) = ip {
        h.append(X_REAL_IP, ip);
    }
    let proto = match f.proto {
        "https" => HeaderValue::from_static("https"),
        "http" => HeaderValue::from_static("http"),
        other => HeaderValue::from_str(other).unwrap_or(HeaderValue::from_static("http")),
    };
    h.append(X_FORWARDED_PROTO, proto);
    if let Some(v) = LAST_HOST.with(|c| c.borrow_mut().value(f.host)) {
        h.append(X_FORWARDED_HOST, v);
    }
    let mut port = itoa::Buffer::new();
    let port = port.format(f.port);
    if let Some(v) = LAST_PORT.with(|c| c.borrow_mut().value(port)) {
        h.append(X_FORWARDED_PORT, v);
    }
    set(&mut h, X_FORWARDED_PATH, f.path);
    h.append(X_KONG_REQUEST_ID, f.request_id.header());
    h
}

/// A client header never forwarded: hop-by-hop, or one the gateway sets itself.
fn never_forwarded(name: &HeaderName) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n) || RECOMPUTED.contains(&n)
}

/// The header value of the text a worker thread saw last in one place (the client's
/// address, its host, its port): these repeat request after request, and a cached value's
/// clone shares its bytes where making one allocates, copies and checks the text.
#[derive(Default)]
struct LastValue {
    text: String,
    value: Option<HeaderValue>,
}

impl LastValue {
    /// `text` as a header value (None when it cannot be one).
    fn value(&mut self, text: &str) -> Option<HeaderValue> {
        if self.text != text || self.value.is_none() {
            self.value = Some(HeaderValue::from_str(text).ok()?);
            text.clone_into(&mut self.text);
        }
        self.value.clone()
    }
}

thread_local! {
    static LAST_IP: std::cell::RefCell<LastValue> = std::cell::RefCell::default();
    static LAST_HOST: std::cell::RefCell<LastValue> = std::cell::RefCell::default();
    static LAST_PORT: std::cell::RefCell<LastValue> = std::cell::RefCell::default();
}

/// The header names the client's `Connection` header lists (hop-by-hop for this request);
/// none allocated without one.
fn connection_listed(client: &HeaderMap) -> Vec<String> {
    let mut listed = Vec::new();
    for v in client.get_all(header::CONNECTION) {
        let Ok(v) = v.to_str() else { continue };
        listed.extend(v.split(',').map(|s| s.trim().to_ascii_lowercase()));
    }
    listed
}

/// A raw query string's decoded pairs, in order.
pub(super) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The query string to send: the client's raw one unless a plugin changed the pairs.
pub fn query_string(up: &UpstreamRequest, raw: Option<&str>) -> Option<String> {
    let original = query_pairs(raw);
    if original == up.query {
        return raw.map(str::to_string).filter(|q| !q.is_empty());
    }
    if up.query.is_empty() {
        return None;
    }
    Some(
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&up.query)
            .finish(),
    )
}

pub(super) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names, and a (hashed) removal only for those present: usually
    // none, where removing each name by string cost a lookup apiece.
    let present: Vec<HeaderName> = h
        .keys()
        .filter(|k| HOP_BY_HOP.contains(&k.as_str()))
        .cloned()
        .collect();
    for name in present {
        h.remove(name);
    }
}

/// A latency in milliseconds as a header value; the common small ones are made once and
/// shared, since formatting a number into a header allocates.
pub(super) fn ms_header(n: u64) -> HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..256u64).map(HeaderValue::from).collect());
    usize::try_from(n)
        .ok()
        .and_then(|i| SMALL.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

pub(super) fn add_proxy_headers(h: &mut HeaderMap, log: &RequestLog) {
    h.insert(
        X_KONG_UPSTREAM_LATENCY,
        ms_header(log.upstream_latency_ms.unwrap_or(0)),
    );
    h.insert(
        X_KONG_PROXY_LATENCY,
        ms_header(log.proxy_latency_ms.unwrap_or(0)),
    );
    h.insert(X_KONG_REQUEST_ID, log.request_id.header());
    h.append(header::VIA, HeaderValue::from_static(crate::VIA_TOKEN));
}

/// Adds the headers plugins set for the client (quota state, trace id) to a response.
pub(super) fn add_headers(resp: &mut Response<ProxyBody>, headers: access::Headers) {
    for (k, v) in headers {
        resp.headers_mut().insert(k, v);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use http::HeaderName;

    #[test]
    fn forwarded_headers_drop_hop_by_hop_and_add_x_forwarded() {
        let mut client = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("host", "gw.example:8000"),
            ("content-length", "12"),
            ("x-user", "ana"),
            ("accept", "a"),
        ] {
            client.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        client.append("accept", HeaderValue::from_static("b"));
        let f = Forwarded {
            client_ip: "10.1.2.3",
            proto: "http",
            host: "gw.example",
            port: 8000,
            path: "/chat",
            request_id: &crate::observe::log::RequestId::new("rid".into()),
            prior_for: Some("1.1.1.1"),
            original_host: "gw.example:8000",
        };
        let h = forward_headers(&client, HeaderValue::from_static("api.example.com"), &f).to_map();
        for gone in [
            "connection",
            "keep-alive",
            "x-secret-hop",
            "transfer-encoding",
            "content-length",
        ] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(h["host"], "api.example.com");
        assert_eq!(h["x-user"], "ana");
        assert_eq!(h.get_all("accept").iter().count(), 2);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        assert_eq!(h["x-forwarded-port"], "8000");
        assert_eq!(h["x-kong-request-id"], "rid");
        assert_eq!(h["x-real-ip"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        let first_hop = Forwarded {
            prior_for: None,
            proto: "https",
            ..f
        };
        let h = forward_headers(&client, HeaderValue::from_static("a"), &first_hop).to_map();
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        // The per-thread values follow each request's own address, host and port.
        let other = Forwarded {
            client_ip: "10.9.9.9",
            host: "other.example",
            port: 8443,
            ..first_hop
        };
        for (f, ip, host, port) in [
            (&other, "10.9.9.9", "other.example", "8443"),
            (&first_hop, "10.1.2.3", "gw.example", "8000"),
        ] {
            let h = forward_headers(&client, HeaderValue::from_static("a"), f).to_map();
            assert_eq!(h["x-real-ip"], ip);
            assert_eq!(h["x-forwarded-for"], ip);
            assert_eq!(h["x-forwarded-host"], host);
            assert_eq!(h["x-forwarded-port"], port);
        }
        let bad = Forwarded {
            host: "bad\nhost",
            ..first_hop
        };
        let h = forward_headers(&client, HeaderValue::from_static("a"), &bad).to_map();
        assert!(!h.contains_key("x-forwarded-host"));
        let h = forward_headers(&client, HeaderValue::from_static("a"), &first_hop).to_map();
        assert_eq!(h["x-forwarded-host"], "gw.example");
    }
}

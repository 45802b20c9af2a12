//! What the log record keeps of a request and its response, copied into one buffer each.
//!
//! A logged request used to copy its client address, method, URL, path and headers into
//! six allocations, and its response headers into two more; on the request path each
//! allocation (and its free on another thread) costs more than the copying itself. Here a
//! request is one `Vec` and a response one. A clone of the header map instead would share
//! the connection's read buffer (header values point into it), and a record waiting in a
//! writer's queue would keep that whole buffer alive.

use std::net::IpAddr;

/// Bytes before each header's name: name length (u16, as the `http` crate caps names at
/// 64 KiB), value length (u32) and the hidden flag.
const HEAD: usize = 7;

/// Headers laid out one after another: per header its head, name, then value, in the
/// map's order (a repeated name's values together).
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers<'a>(&'a [u8]);

/// Bytes `map` takes in the layout.
fn encoded_len(map: &http::HeaderMap) -> usize {
    map.iter()
        .map(|(n, v)| HEAD + n.as_str().len() + v.len())
        .sum()
}

/// Appends `map` in the layout.
fn encode(buf: &mut Vec<u8>, map: &http::HeaderMap) {
    for (name, value) in map {
        let name = name.as_str().as_bytes();
        let name = &name[..name.len().min(usize::from(u16::MAX))];
        let value = value.as_bytes();
        let value = &value[..value.len().min(u32::MAX as usize)];
        buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
        buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        buf.push(0);
        buf.extend_from_slice(name);
        buf.extend_from_slice(value);
    }
}

/// One header's place in the layout: where its flag, name and value are.
struct Slot {
    flag: usize,
    name: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

/// The header starting at `at`, if the layout holds a whole one there.
fn slot(bytes: &[u8], at: usize) -> Option<Slot> {
    let head = bytes.get(at..at + HEAD)?;
    let name_len = usize::from(u16::from_le_bytes([head[0], head[1]]));
    let value_len = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let name = at + HEAD..at + HEAD + name_len;
    let value = name.end..name.end + value_len;
    (value.end <= bytes.len()).then_some(Slot {
        flag: at + HEAD - 1,
        name,
        value,
    })
}

impl<'a> Headers<'a> {
    /// (name, value, hidden) per header; names are lowercase ASCII, as `http` keeps them.
    pub fn iter(self) -> impl Iterator<Item = (&'a [u8], &'a [u8], bool)> {
        let bytes = self.0;
        let mut at = 0;
        std::iter::from_fn(move || {
            let s = slot(bytes, at)?;
            at = s.value.end;
            Some((&bytes[s.name], &bytes[s.value], bytes[s.flag] != 0))
        })
    }

    /// True when there are none.
    pub fn is_empty(self) -> bool {
        self.0.is_empty()
    }
}

/// Hides the values of header `name` in the layout; false when absent.
fn redact(bytes: &mut [u8], name: &str) -> bool {
    let mut at = 0;
    let mut found = false;
    while let Some(s) = slot(bytes, at) {
        if bytes[s.name].eq_ignore_ascii_case(name.as_bytes()) {
            bytes[s.flag] = 1;
            found = true;
        }
        at = s.value.end;
    }
    found
}

/// A response's headers, copied for the log record.
#[derive(Debug, Default, Clone)]
pub struct HeaderCopy {
    bytes: Vec<u8>,
}

impl HeaderCopy {
    /// A copy of `map`.
    pub fn of(map: &http::HeaderMap) -> HeaderCopy {
        let mut bytes = Vec::with_capacity(encoded_len(map));
        encode(&mut bytes, map);
        HeaderCopy { bytes }
    }

    /// The copied headers.
    pub fn headers(&self) -> Headers<'_> {
        Headers(&self.bytes)
    }

    /// Hides the values of header `name` (`REDACTED` in the record); false when absent.
    pub fn redact(&mut self, name: &str) -> bool {
        redact(&mut self.bytes, name)
    }
}

/// A request as the log record shows it: client address, method, URL (whose tail is the
/// path and query) and headers, in one buffer.
#[derive(Debug, Default, Clone)]
pub struct RequestCopy {
    /// Client address, URL, then the headers' layout.
    bytes: Vec<u8>,
    ip_end: usize,
    /// Where the path starts in the URL, and where the URL ends.
    uri_start: usize,
    url_end: usize,
    method: http::Method,
}

impl RequestCopy {
    /// A copy of the request `parts` from `client_ip`, reached at `scheme://host`.
    pub fn of(
        parts: &http::request::Parts,
        client_ip: &str,
        scheme: &str,
        host: &str,
    ) -> RequestCopy {
        let uri = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut bytes = Vec::with_capacity(
            client_ip.len()
                + scheme.len()
                + 3
                + host.len()
                + uri.len()
                + encoded_len(&parts.headers),
        );
        bytes.extend_from_slice(client_ip.as_bytes());
        let ip_end = bytes.len();
        for part in [scheme, "://", host] {
            bytes.extend_from_slice(part.as_bytes());
        }
        let uri_start = bytes.len();
        bytes.extend_from_slice(uri.as_bytes());
        let url_end = bytes.len();
        encode(&mut bytes, &parts.headers);
        RequestCopy {
            bytes,
            ip_end,
            uri_start,
            url_end,
            method: parts.method.clone(),
        }
    }

    fn text(&self, range: std::ops::Range<usize>) -> &str {
        // Built from `&str`s, so always UTF-8; `""` only if that ever broke.
        self.bytes
            .get(range)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// The client's address (text), empty when not captured.
    pub fn client_ip(&self) -> &str {
        self.text(0..self.ip_end)
    }

    /// The client's address, when it is one.
    pub fn client_addr(&self) -> Option<IpAddr> {
        self.client_ip().parse().ok()
    }

    /// The request method.
    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    /// `scheme://host/path?query`.
    pub fn url(&self) -> &str {
        self.text(self.ip_end..self.url_end)
    }

    /// The path and query.
    pub fn uri(&self) -> &str {
        self.text(self.uri_start..self.url_end)
    }

    /// The client's address as UTF-8 bytes (no check: the log line escapes it anyway).
    pub fn client_ip_bytes(&self) -> &[u8] {
        self.bytes.get(..self.ip_end).unwrap_or_default()
    }

    /// `scheme://host/path?query` as UTF-8 bytes.
    pub fn url_bytes(&self) -> &[u8] {
        self.bytes
            .get(self.ip_end..self.url_end)
            .unwrap_or_default()
    }

    /// The path and query as UTF-8 bytes.
    pub fn uri_bytes(&self) -> &[u8] {
        self.bytes
            .get(self.uri_start..self.url_end)
            .unwrap_or_default()
    }

    /// The copied headers.
    pub fn headers(&self) -> Headers<'_> {
        Headers(self.bytes.get(self.url_end..).unwrap_or_default())
    }

    /// Hides the values of header `name`; false when absent.
    pub fn redact_header(&mut self, name: &str) -> bool {
        let at = self.url_end.min(self.bytes.len());
        redact(&mut self.bytes[at..], name)
    }

    /// Replaces the path and query (URL's tail) with `uri`, e.g. with a secret redacted.
    pub fn set_uri(&mut self, uri: &str) {
        let tail = self.bytes.split_off(self.url_end.min(self.bytes.len()));
        self.bytes.truncate(self.uri_start);
        self.bytes.extend_from_slice(uri.as_bytes());
        self.url_end = self.bytes.len();
        self.bytes.extend_from_slice(&tail);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn request() -> http::request::Parts {
        let (parts, ()) = http::Request::builder()
            .method("PATCH")
            .uri("/v1/chat?apikey=k1&x=2")
            .header("apikey", "k1")
            .header("accept", "*/*")
            .header("accept", "text/html")
            .header("x-long", "v".repeat(300))
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn a_request_reads_back_as_it_came() {
        let r = RequestCopy::of(&request(), "10.0.0.7", "https", "gw.example:8443");
        assert_eq!(r.client_ip(), "10.0.0.7");
        assert_eq!(r.client_addr(), Some([10, 0, 0, 7].into()));
        assert_eq!(r.method(), "PATCH");
        assert_eq!(r.url(), "https://gw.example:8443/v1/chat?apikey=k1&x=2");
        assert_eq!(r.uri(), "/v1/chat?apikey=k1&x=2");
        let h: Vec<_> = r.headers().iter().collect();
        assert_eq!(h.len(), 4);
        assert_eq!(h[0], (&b"apikey"[..], &b"k1"[..], false));
        assert_eq!(h[1], (&b"accept"[..], &b"*/*"[..], false));
        assert_eq!(h[2], (&b"accept"[..], &b"text/html"[..], false));
        assert_eq!(h[3].0, b"x-long");
        assert_eq!(h[3].1.len(), 300);
    }

    #[test]
    fn redaction_and_a_new_uri_keep_the_rest() {
        let mut r = RequestCopy::of(&request(), "::1", "http", "h");
        assert!(r.redact_header("ApiKey"));
        assert!(!r.redact_header("x-none"));
        r.set_uri("/v1/chat?apikey=REDACTED&x=2");
        assert_eq!(r.url(), "http://h/v1/chat?apikey=REDACTED&x=2");
        assert_eq!(r.uri(), "/v1/chat?apikey=REDACTED&x=2");
        assert_eq!(r.client_ip(), "::1");
        let h: Vec<_> = r.headers().iter().collect();
        assert_eq!(h[0], (&b"apikey"[..], &b"k1"[..], true));
        assert!(h[1..].iter().all(|(_, _, hidden)| !hidden));
        assert_eq!(r.headers().iter().count(), 4);
    }

    #[test]
    fn an_empty_copy_and_a_cut_layout_read_as_nothing() {
        let r = RequestCopy::default();
        assert_eq!((r.client_ip(), r.url(), r.uri()), ("", "", ""));
        assert!(r.headers().is_empty());
        let mut map = http::HeaderMap::new();
        map.insert("a", http::HeaderValue::from_static("1"));
        map.insert("b", http::HeaderValue::from_static("2"));
        let c = HeaderCopy::of(&map);
        let cut = Headers(&c.bytes[..c.bytes.len() - 1]);
        assert_eq!(cut.iter().count(), 1);
    }
}

//! HTTP/1.1 as the listeners speak it to clients, for the requests the gateway reads
//! itself (`h1_conn.rs`): the request head parsed with `httparse` (header values share the
//! read buffer), and the response head written from the handler's header map with the
//! framing hyper would choose.
//!
//! Anything outside the plain request/response exchange (HTTP/1.0, upgrades, `Expect`,
//! chunked uploads, CONNECT and other request targets, heads hyper would refuse) is not
//! handled here: the connection goes to hyper with the bytes already read, so its answers
//! and errors stay hyper's.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, CONNECTION, CONTENT_LENGTH, DATE};
use http::{Method, Request, StatusCode, Uri, Version};

/// The largest request head read here (as the upstream client's); a longer one goes to
/// hyper, which answers 431.
pub use crate::net::h1::MAX_HEAD;
use crate::net::h1::{self, MAX_HEADERS};

/// A request head taken off the read buffer.
#[derive(Debug)]
pub struct Head {
    /// Method, target, version and headers; the body is added once it has been read.
    pub request: Request<()>,
    /// The head's bytes (the header values point into them), kept to hand the request to
    /// hyper unread if its body does not come in time.
    pub raw: Bytes,
    /// The body's length (`content-length`, 0 without one).
    pub body_len: u64,
    /// The client did not ask to close after this exchange.
    pub keep_alive: bool,
}

/// What the front of the read buffer holds.
#[derive(Debug)]
// Returned once per request and unpacked at once: boxing the head would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request served here.
    Head(Head),
    /// A request for hyper: the bytes taken off the buffer (put back in front of the rest).
    Handover(Bytes),
}

/// Takes a request head off the front of `buf` when it is one served here.
pub fn parse_request(buf: &mut BytesMut) -> Parsed {
    // Uninitialised slots: zeroing 100 of them costs more than parsing a typical head.
    let mut slots = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Handover(Bytes::new()),
    };
    if req.version != Some(1) {
        return Parsed::Handover(Bytes::new());
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Parsed::Handover(Bytes::new());
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Handover(Bytes::new());
    };
    if method == Method::CONNECT || !path.starts_with('/') {
        return Parsed::Handover(Bytes::new());
    }
    // The target's place in the head, like the headers' (net::h1::header_spans).
    let at = path.as_ptr() as usize - buf.as_ptr() as usize;
    let target = at..at + path.len();
    let (spans, count) = h1::header_spans(buf, req.headers);
    let raw = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(raw.slice(target)) else {
        return Parsed::Handover(raw);
    };
    let Some(headers) = h1::header_map(&raw, &spans[..count], 0) else {
        return Parsed::Handover(raw);
    };
    let Some((body_len, keep_alive)) = plain_exchange(&headers) else {
        return Parsed::Handover(raw);
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Head(Head {
        request,
        raw,
        body_len,
        keep_alive,
    })
}

/// The body's length and whether the connection stays open, for a request that is a plain
/// exchange; None for what hyper handles (upgrades, `Expect`, chunked or ambiguous bodies).
fn plain_exchange(headers: &HeaderMap) -> Option<(u64, bool)> {
    let mut body_len = None;
    let mut keep_alive = true;
    for (name, value) in headers {
        if name == CONTENT_LENGTH {
            let n = std::str::from_utf8(value.as_bytes()).ok()?.parse().ok()?;
            if body_len.replace(n).is_some() {
                return None;
            }
        } else if name == CONNECTION {
            for token in value.to_str().ok()?.split(',') {
                let t = token.trim();
                if t.eq_ignore_ascii_case("upgrade") {
                    return None;
                }
                keep_alive &= !t.eq_ignore_ascii_case("close");
            }
        } else if name == http::header::TRANSFER_ENCODING
            || name == http::header::UPGRADE
            || name == http::header::EXPECT
        {
            return None;
        }
    }
    Some((body_len.unwrap_or(0), keep_alive))
}

/// How a response body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body is written (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (a `transfer-encoding` other than chunked).
    Close,
}

/// Appends the response head: status line, the map's headers, `date` when the map has
/// none, the framing hyper would add, `connection: close` when the connection ends after
/// this response. `exact`: the body's length when it is known (hyper's size hint).
/// Returns the framing and whether the connection may stay open.
pub fn encode_head(
    buf: &mut Vec<u8>,
    (status, headers): (StatusCode, &HeaderMap),
    head_request: bool,
    exact: Option<u64>,
    keep_alive: bool,
) -> (Framing, bool) {
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    let mut keep_alive = keep_alive;
    let (mut length, mut coding, mut date, mut said_close) = (None, None, false, false);
    for (name, value) in headers {
        if name == CONTENT_LENGTH {
            length = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
        } else if name == http::header::TRANSFER_ENCODING {
            coding = Some(value);
        } else if name == DATE {
            date = true;
        } else if name == CONNECTION {
            let close = value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
            said_close |= close;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    keep_alive &= !said_close;
    if !date {
        buf.extend_from_slice(b"date: ");
        now_http_date(|d| buf.extend_from_slice(d));
        buf.extend_from_slice(b"\r\n");
    }
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::None
    } else if let Some(te) = coding {
        let chunked = te.to_str().is_ok_and(|v| {
            v.rsplit(',')
                .map(str::trim)
                .find(|t| !t.is_empty())
                .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        });
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if let Some(n) = exact {
        buf.extend_from_slice(b"content-length: ");
        buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        buf.extend_from_slice(b"\r\n");
        Framing::Length(n)
    } else {
        buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    keep_alive &= framing != Framing::Close;
    if !keep_alive && !said_close {
        buf.extend_from_slice(b"connection: close\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

/// Appends one chunk's size line (the data and its CRLF follow).
pub fn chunk_start(buf: &mut Vec<u8>, len: usize) {
    let mut hex = [0u8; 16];
    let mut at = hex.len();
    let mut n = len;
    loop {
        at -= 1;
        hex[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&hex[at..]);
    buf.extend_from_slice(b"\r\n");
}

/// The end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Calls `f` with the current time as an HTTP date, formatted once a second per thread.
fn now_http_date(f: impl FnOnce(&[u8])) {
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        f(c.1.as_bytes())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Parsed {
        parse_request(&mut BytesMut::from(text))
    }

    #[test]
    fn a_plain_request_is_parsed_and_its_body_left_in_the_buffer() {
        let mut buf =
            BytesMut::from("POST /v1/chat?x=1 HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\n{}GET");
        let Parsed::Head(h) = parse_request(&mut buf) else {
            panic!()
        };
        assert_eq!(&buf[..], b"{}GET");
        assert_eq!(h.request.method(), Method::POST);
        assert_eq!(h.request.uri().path(), "/v1/chat");
        assert_eq!(h.request.uri().query(), Some("x=1"));
        assert_eq!(h.request.headers()["host"], "gw");
        let a: Vec<_> = h.request.headers().get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert_eq!((h.body_len, h.keep_alive), (2, true));
        assert!(h.raw.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn partial_heads_wait_and_close_is_seen() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: a\r\n"),
            Parsed::Partial
        ));
        let Parsed::Head(h) = parse("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!((h.body_len, h.keep_alive), (0, false));
    }

    #[test]
    fn what_hyper_handles_is_handed_over_with_the_bytes_taken() {
        for head in [
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(head);
            let Parsed::Handover(taken) = parse_request(&mut buf) else {
                panic!("{head}")
            };
            let mut whole = taken.to_vec();
            whole.extend_from_slice(&buf);
            assert_eq!(whole, head.as_bytes(), "nothing lost: {head}");
        }
        let huge = format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&huge), Parsed::Handover(_)));
    }

    fn head(
        status: u16,
        headers: &[(&str, &str)],
        head_req: bool,
        exact: Option<u64>,
    ) -> (String, Framing, bool) {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let mut buf = Vec::new();
        let status = StatusCode::from_u16(status).unwrap();
        let (f, k) = encode_head(&mut buf, (status, &map), head_req, exact, true);
        (String::from_utf8(buf).unwrap(), f, k)
    }

    #[test]
    fn response_framing_follows_the_headers_then_the_size() {
        let (text, f, k) = head(200, &[("content-type", "application/json")], false, Some(7));
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: "));
        assert!(
            text.ends_with(" GMT\r\ncontent-length: 7\r\n\r\n"),
            "{text}"
        );
        assert_eq!((f, k), (Framing::Length(7), true));
        let (text, f, _) = head(200, &[], false, None);
        assert!(text.ends_with("transfer-encoding: chunked\r\n\r\n"));
        assert_eq!(f, Framing::Chunked);
        let (text, f, _) = head(200, &[("content-length", "12")], false, None);
        assert!(!text.contains("chunked"));
        assert_eq!(f, Framing::Length(12));
        let (_, f, _) = head(
            200,
            &[("transfer-encoding", "gzip, chunked")],
            false,
            Some(3),
        );
        assert_eq!(f, Framing::Chunked);
        let (text, f, k) = head(200, &[("transfer-encoding", "gzip")], false, None);
        assert_eq!((f, k), (Framing::Close, false));
        assert!(text.ends_with("connection: close\r\n\r\n"));
        for (status, head_req) in [(204, false), (304, false), (200, true)] {
            let (text, f, k) = head(status, &[], head_req, Some(5));
            assert_eq!((f, k), (Framing::None, true));
            assert!(!text.contains("content-length") && !text.contains("chunked"));
        }
        let (text, _, k) = head(
            599,
            &[("Date", "x"), ("connection", "close")],
            false,
            Some(0),
        );
        assert!(text.starts_with("HTTP/1.1 599 \r\ndate: x\r\nconnection: close\r\n"));
        assert!(!k);
    }

    #[test]
    fn mangled_heads_never_panic_and_lose_no_bytes() {
        let good = b"POST /v1/chat/completions?a=1 HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nX-Key: v\r\n\r\n{}";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut bytes = good.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len() as u64) as usize;
                match next() % 3 {
                    0 => bytes[at] = next() as u8,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(
                        at,
                        [b'\r', b'\n', b':', b' ', 0, 0xff][(next() % 6) as usize],
                    ),
                }
            }
            let mut buf = BytesMut::from(&bytes[..]);
            match parse_request(&mut buf) {
                Parsed::Partial => assert_eq!(&buf[..], &bytes[..]),
                Parsed::Handover(taken) => {
                    let mut whole = taken.to_vec();
                    whole.extend_from_slice(&buf);
                    assert_eq!(whole, bytes);
                }
                Parsed::Head(h) => {
                    let mut whole = h.raw.to_vec();
                    whole.extend_from_slice(&buf);
                    assert_eq!(whole, bytes);
                }
            }
        }
    }

    #[test]
    fn chunk_sizes_are_hex() {
        for (n, hex) in [
            (0usize, "0\r\n"),
            (10, "a\r\n"),
            (4096, "1000\r\n"),
            (0x1f2e, "1f2e\r\n"),
        ] {
            let mut buf = Vec::new();
            chunk_start(&mut buf, n);
            assert_eq!(buf, hex.as_bytes());
        }
    }
}

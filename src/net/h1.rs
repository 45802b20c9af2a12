//! HTTP/1.1 as the upstream client speaks it: the request head written straight from the
//! header map into one buffer, the response head parsed with `httparse` (its header values
//! share the read buffer), and the response body's framing (length, chunked, until close)
//! taken off that buffer in place.
//!
//! Written here rather than used through hyper's client because the proxy's exchange has
//! one shape (one request, then its response, on a connection the request owns): hyper's
//! client adds a dispatch channel, a response oneshot and a connection task to drive, which
//! callgrind counted at several thousand instructions per proxied request.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH};
use http::{Method, StatusCode, Uri, Version};

use super::out_headers::OutHeaders;

/// The largest response head accepted (nginx's default is 4–8 KiB).
pub const MAX_HEAD: usize = 64 * 1024 - 1;
/// Headers a head may carry (hyper's limit too).
pub const MAX_HEADERS: usize = 100;
/// Headers an answer's map has room for beyond its own.
const ANSWER_ROOM: usize = 6;
/// The longest chunk-size line (with extensions) and all trailers together.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

/// Why a response could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum H1Error {
    #[error("invalid HTTP response head: {0}")]
    Head(&'static str),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid chunked body: {0}")]
    Chunked(&'static str),
    #[error("connection closed before the message completed")]
    Incomplete,
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// `content-length: n` (omitted for an empty body of a method that takes none).
    Length(u64),
    /// `transfer-encoding: chunked` (a streamed upload of unknown length).
    Chunked,
}

/// Headers the client frames itself, whatever the map holds.
fn framing_header(name: &HeaderName) -> bool {
    name == CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING
}

/// Appends the request head: request line, the headers, the framing, blank line.
/// Header values cannot hold CR or LF (`HeaderValue` refuses them), so nothing a client
/// sent can split the head.
pub fn encode_head(
    buf: &mut Vec<u8>,
    method: &Method,
    target: &Uri,
    headers: &OutHeaders<'_>,
    framing: RequestFraming,
) {
    let path = target.path_and_query().map_or("/", |p| p.as_str());
    buf.extend_from_slice(method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(path.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    headers.each(|name, value| {
        if !framing_header(name) {
            buf.extend_from_slice(name.as_str().as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
    });
    match framing {
        RequestFraming::Length(0) if !takes_body(method) => {}
        RequestFraming::Length(n) => {
            buf.extend_from_slice(b"content-length: ");
            buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    buf.extend_from_slice(b"\r\n");
}

/// Methods whose empty body is still announced (`content-length: 0`), as hyper did.
fn takes_body(m: &Method) -> bool {
    matches!(*m, Method::POST | Method::PUT | Method::PATCH)
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// How its body is framed.
    pub body: Decoder,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Takes a complete response head off the front of `buf`; `Ok(None)` when more bytes are
/// needed. Informational (1xx) heads are skipped. `head_request`: the request was HEAD,
/// so the response has no body whatever its headers say.
pub fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, H1Error> {
    loop {
        // Uninitialised slots: zeroing 100 of them cost more than parsing a typical head.
        let mut slots = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(H1Error::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Ok(httparse::Status::Complete(_)) => return Err(H1Error::HeadTooLarge),
            Err(httparse::Error::TooManyHeaders) => return Err(H1Error::Head("too many headers")),
            Err(_) => return Err(H1Error::Head("not a valid status line and headers")),
        };
        let code = resp.code.ok_or(H1Error::Head("no status code"))?;
        let status = StatusCode::from_u16(code).map_err(|_| H1Error::Head("status code"))?;
        let version = if resp.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let (spans, count) = header_spans(buf, resp.headers);
        let head = buf.split_to(len).freeze();
        if status.is_informational() {
            // 100 Continue and 103 Early Hints precede the real answer.
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(H1Error::Head("unexpected 101 Switching Protocols"));
            }
            continue;
        }
        let headers =
            // Room for the headers the gateway adds to an answer (Kong's latency, request
            // id and Via headers): growing the map rehashes every header (callgrind:
            // ~1.1k instructions per request).
            header_map(&head, &spans[..count], ANSWER_ROOM)
                .ok_or(H1Error::Head("header name or value"))?;
        let keep_alive = keeps_alive(version, &headers);
        let body = framing(status, head_request, &headers)?;
        // A body that ends when the connection does leaves nothing to reuse.
        let keep_alive = keep_alive && !matches!(body, Decoder::Eof);
        return Ok(Some(Head {
            status,
            version,
            headers,
            body,
            keep_alive,
        }));
    }
}

/// Where each header's name and value sit in a parsed head, as (name start, name end,
/// value start, value end) offsets into `buf` (16 bits: a head is at most 64 KiB), so the
/// values can share the head's bytes once it is frozen; and how many there are.
pub fn header_spans(
    buf: &[u8],
    headers: &[httparse::Header<'_>],
) -> ([(u16, u16, u16, u16); MAX_HEADERS], usize) {
    let base = buf.as_ptr() as usize;
    let at = |p: *const u8| (p as usize - base) as u16;
    let mut spans = [(0u16, 0u16, 0u16, 0u16); MAX_HEADERS];
    for (slot, h) in spans.iter_mut().zip(headers) {
        let (name, value) = (at(h.name.as_ptr()), at(h.value.as_ptr()));
        *slot = (
            name,
            name + h.name.len() as u16,
            value,
            value + h.value.len() as u16,
        );
    }
    (spans, headers.len().min(MAX_HEADERS))
}

/// The header map of a frozen head from its [`header_spans`]; values share `head`, and
/// `room` more headers fit without the map growing. None when a name or value is not one
/// `http` accepts.
pub fn header_map(head: &Bytes, spans: &[(u16, u16, u16, u16)], room: usize) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(spans.len() + room);
    for &(name_at, name_end, value_at, value_end) in spans {
        let name = &head[usize::from(name_at)..usize::from(name_end)];
        let value = head.slice(usize::from(value_at)..usize::from(value_end));
        let name = HeaderName::from_bytes(name).ok()?;
        headers.append(name, HeaderValue::from_maybe_shared(value).ok()?);
    }
    Some(headers)
}

/// HTTP/1.1 keeps the connection unless told `close`; 1.0 only with `keep-alive`.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep = false;
    for v in headers.get_all(CONNECTION) {
        for token in v.to_str().unwrap_or("").split(',') {
            let t = token.trim();
            close |= t.eq_ignore_ascii_case("close");
            keep |= t.eq_ignore_ascii_case("keep-alive");
        }
    }
    !close && (version == Version::HTTP_11 || keep)
}

/// The body's framing (RFC 9112 §6.3).
fn framing(
    status: StatusCode,
    head_request: bool,
    headers: &HeaderMap,
) -> Result<Decoder, H1Error> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Decoder::Done);
    }
    let te = headers.get_all(http::header::TRANSFER_ENCODING);
    if te.iter().next().is_some() {
        // Chunked must be the last coding; anything else is read until the close.
        let last = te
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case("chunked") => Decoder::Chunked(Chunk::Size),
            _ => Decoder::Eof,
        });
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all(CONTENT_LENGTH) {
        for part in v.to_str().unwrap_or("x").split(',') {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| H1Error::Head("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Head("conflicting content-length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Decoder::Done,
        Some(n) => Decoder::Length(n),
        None => Decoder::Eof,
    })
}

/// Where a chunked body's reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until a blank one (bytes seen so far).
    Trailers(usize),
}

/// A response body's framing and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// Bytes left of a `content-length` body.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the connection closes.
    Eof,
    /// The body is complete.
    Done,
}

impl Decoder {
    /// Whether the whole body has been taken.
    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// Bytes left, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of body data off `buf`; `Ok(None)` when `buf` holds none (then
    /// either the body is done or more bytes must be read). Chunk framing around the data
    /// is consumed as far as `buf` reaches, so the end is seen with the last data.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, H1Error> {
        let mut data: Option<Bytes> = None;
        loop {
            match *self {
                Decoder::Done => return Ok(data),
                Decoder::Length(n) => {
                    if data.is_some() || buf.is_empty() {
                        return Ok(data);
                    }
                    let take = (buf.len() as u64).min(n) as usize;
                    let left = n - take as u64;
                    *self = if left == 0 {
                        Decoder::Done
                    } else {
                        Decoder::Length(left)
                    };
                    return Ok(Some(buf.split_to(take).freeze()));
                }
                Decoder::Eof => {
                    if buf.is_empty() {
                        return Ok(data);
                    }
                    return Ok(Some(buf.split().freeze()));
                }
                Decoder::Chunked(state) => {
                    let Some(next) = chunk_step(state, buf, &mut data)? else {
                        return Ok(data);
                    };
                    *self = next;
                }
            }
        }
    }

    /// The connection closed: fine only for a body that ends with it.
    pub fn at_eof(&mut self) -> Result<(), H1Error> {
        match self {
            Decoder::Eof | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(H1Error::Incomplete),
        }
    }
}

/// One step of chunked decoding: the next state, or None when `buf` must grow first (or
/// data was taken and the caller should return it).
fn chunk_step(
    state: Chunk,
    buf: &mut BytesMut,
    data: &mut Option<Bytes>,
) -> Result<Option<Decoder>, H1Error> {
    match state {
        Chunk::Size => {
            let Some(end) = memchr::memchr(b'\n', buf) else {
                if buf.len() > MAX_CHUNK_LINE {
                    return Err(H1Error::Chunked("chunk size line too long"));
                }
                return Ok(None);
            };
            let size = chunk_size(&buf[..end])?;
            // Framing is skipped, not split off: a split made and dropped a shared handle
            // three times per chunk (callgrind: ~3k instructions per 20-chunk stream).
            buf.advance(end + 1);
            Ok(Some(if size == 0 {
                Decoder::Chunked(Chunk::Trailers(0))
            } else {
                Decoder::Chunked(Chunk::Data(size))
            }))
        }
        Chunk::Data(n) => {
            if data.is_some() || buf.is_empty() {
                return Ok(None);
            }
            let take = (buf.len() as u64).min(n) as usize;
            *data = Some(buf.split_to(take).freeze());
            let left = n - take as u64;
            Ok(Some(Decoder::Chunked(if left == 0 {
                Chunk::DataEnd
            } else {
                Chunk::Data(left)
            })))
        }
        Chunk::DataEnd => {
            let skip = match buf.first() {
                None => return Ok(None),
                Some(b'\n') => 1,
                Some(b'\r') if buf.len() < 2 => return Ok(None),
                Some(b'\r') if buf[1] == b'\n' => 2,
                Some(_) => return Err(H1Error::Chunked("no CRLF after chunk data")),
            };
            buf.advance(skip);
            Ok(Some(Decoder::Chunked(Chunk::Size)))
        }
        Chunk::Trailers(seen) => {
            let Some(end) = memchr::memchr(b'\n', buf) else {
                if seen + buf.len() > MAX_TRAILERS {
                    return Err(H1Error::Chunked("trailers too large"));
                }
                return Ok(None);
            };
            let blank = end == 0 || (end == 1 && buf[0] == b'\r');
            buf.advance(end + 1);
            // Trailers are read past, not passed on (nginx does not forward them either).
            Ok(Some(if blank {
                Decoder::Done
            } else {
                Decoder::Chunked(Chunk::Trailers(seen + end + 1))
            }))
        }
    }
}

/// A chunk-size line's size: hex digits, then optional extensions after `;`.
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(H1Error::Chunked("chunk size"));
    }
    let mut size = 0u64;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(H1Error::Chunked("chunk size")),
        };
        size = size * 16 + u64::from(v);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, H1Error> {
        parse_head(&mut BytesMut::from(text), false)
    }

    /// All of a body through the decoder, fed `step` bytes at a time.
    fn body(mut d: Decoder, wire: &[u8], step: usize) -> Result<Vec<u8>, H1Error> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(b) = d.decode(&mut buf)? {
                out.extend_from_slice(&b);
            }
        }
        if !d.is_done() {
            d.at_eof()?;
        }
        Ok(out)
    }

    #[test]
    fn request_head_is_framed_by_the_client() {
        let uri: Uri = "/v1/chat?x=1".parse().unwrap();
        let enc = |m: Method, h: &HeaderMap, f: RequestFraming| {
            let mut buf = Vec::new();
            encode_head(&mut buf, &m, &uri, &OutHeaders::from(h.clone()), f);
            String::from_utf8(buf).unwrap()
        };
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("up:80"));
        h.insert("content-length", HeaderValue::from_static("999"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        assert_eq!(
            enc(Method::POST, &h, RequestFraming::Length(12)),
            "POST /v1/chat?x=1 HTTP/1.1\r\nhost: up:80\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 12\r\n\r\n"
        );
        let none = HeaderMap::new();
        assert_eq!(
            enc(Method::GET, &none, RequestFraming::Length(0)),
            "GET /v1/chat?x=1 HTTP/1.1\r\n\r\n"
        );
        assert!(enc(Method::POST, &none, RequestFraming::Chunked)
            .ends_with("transfer-encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn heads_parse_with_their_framing() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Y: a b\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.headers["x-y"], "a b");
        assert_eq!(h.body, Decoder::Length(5));
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, Decoder::Chunked(Chunk::Size));
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.body, Decoder::Eof);
        assert!(
            !h.keep_alive,
            "a body read until close leaves no connection"
        );
        let h = head("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, Decoder::Done);
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(
            parse_head(&mut buf, true).unwrap().unwrap().body,
            Decoder::Done
        );
    }

    #[test]
    fn informational_heads_are_skipped() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        );
        let h = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.status, 201);
        assert!(h.headers.get("link").is_none());
        assert_eq!(&buf[..], b"ok");
    }

    #[test]
    fn partial_and_bad_heads() {
        assert!(head("HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        assert!(head("").unwrap().is_none());
        assert!(matches!(head("garbage\r\n\r\n"), Err(H1Error::Head(_))));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(H1Error::Head(_))
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Err(H1Error::Head(_))
        ));
        let big = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD + 1));
        assert_eq!(head(&big).unwrap_err(), H1Error::HeadTooLarge);
        assert_eq!(
            head(&format!("{big}\r\n\r\n")).unwrap_err(),
            H1Error::HeadTooLarge
        );
        assert!(matches!(
            head("HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Err(H1Error::Head(_))
        ));
    }

    #[test]
    fn bodies_decode_whatever_the_read_sizes() {
        let chunked = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            let got = body(Decoder::Chunked(Chunk::Size), chunked, step).unwrap();
            assert_eq!(got, b"hello world", "step {step}");
            assert_eq!(body(Decoder::Length(5), b"hello", step).unwrap(), b"hello");
            assert_eq!(
                body(Decoder::Eof, b"until close", step).unwrap(),
                b"until close"
            );
        }
        // The last chunk's framing, already read, ends the body with its data.
        let mut d = Decoder::Chunked(Chunk::Size);
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap(), "ok");
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert!(d.is_done());
        assert!(buf.is_empty());
        // A length body leaves the next response's bytes alone.
        let mut d = Decoder::Length(2);
        let mut buf = BytesMut::from(&b"okHTTP"[..]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap(), "ok");
        assert!(d.is_done());
        assert_eq!(&buf[..], b"HTTP");
    }

    #[test]
    fn cut_or_broken_bodies_are_errors() {
        assert_eq!(
            body(Decoder::Length(10), b"short", 3).unwrap_err(),
            H1Error::Incomplete
        );
        assert_eq!(
            body(Decoder::Chunked(Chunk::Size), b"5\r\nhel", 2).unwrap_err(),
            H1Error::Incomplete
        );
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"1234567890abcdef0\r\n",
        ] {
            assert!(
                matches!(
                    body(Decoder::Chunked(Chunk::Size), bad, 100),
                    Err(H1Error::Chunked(_))
                ),
                "{bad:?}"
            );
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(matches!(
            body(Decoder::Chunked(Chunk::Size), &long, 1000),
            Err(H1Error::Chunked(_))
        ));
    }
}

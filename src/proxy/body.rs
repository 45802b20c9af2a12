//! Reading a client's request body with a size limit.

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http_body_util::BodyExt;

use crate::error::GatewayError;
use crate::net::inbound;

/// A request body: from the connection, or already in memory (requests the gateway makes
/// for a WebSocket client).
pub enum ClientBody {
    Incoming(inbound::Body),
    Ready(Bytes),
}

/// How a body is read: the wait allowed between two reads, and whether an oversized body
/// is drained after the 413.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Longest wait for the next part of the body (Kong's `client_body_timeout`); a client
    /// that stalls longer gets a 408.
    pub timeout: std::time::Duration,
    /// Read and throw away the rest of an oversized body before answering 413 (HTTP/2):
    /// dropping the body resets the stream, and a client that sees the error before it
    /// finished sending (curl stops sending, which h2 then resets for its short
    /// Content-Length) loses the answer.
    pub linger: bool,
}

/// The most of an oversized body drained after its 413, and for how long.
const LINGER_MAX_BYTES: u64 = 64 << 20;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the whole body; more than `limit` bytes (0 = unlimited) is a 413.
pub async fn read_limited(
    body: ClientBody,
    content_length: Option<u64>,
    limit: u64,
    opts: ReadOptions,
) -> Result<Bytes, GatewayError> {
    let body = match body {
        // Read with its head (HTTP/1.1): already whole, nothing to copy.
        ClientBody::Incoming(inbound::Body::Whole(b)) => ClientBody::Ready(b.unwrap_or_default()),
        b => b,
    };
    let mut body = match body {
        ClientBody::Incoming(b) => b,
        ClientBody::Ready(b) if limit > 0 && b.len() as u64 > limit => {
            return Err(GatewayError::BodyTooLarge { limit })
        }
        ClientBody::Ready(b) => return Ok(b),
    };
    if limit > 0 && content_length.map(|l| l > limit).unwrap_or(false) {
        if opts.linger {
            // Boxed: only oversized HTTP/2 bodies pay for the drain's state.
            Box::pin(drain(body, limit)).await;
        }
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut buf = BytesMut::with_capacity(content_length.unwrap_or(0).min(1 << 20) as usize);
    loop {
        // A frame already here costs no timer; only a read that has to wait gets one.
        let next = match body.frame().now_or_never() {
            Some(f) => f,
            None => match tokio::time::timeout(opts.timeout, body.frame()).await {
                Ok(f) => f,
                Err(_) => return Err(GatewayError::BodyTimeout),
            },
        };
        let Some(frame) = next else { break };
        let frame = frame.map_err(|_| GatewayError::ClientAborted)?;
        if let Ok(data) = frame.into_data() {
            if limit > 0 && (buf.len() + data.len()) as u64 > limit {
                if opts.linger {
                    Box::pin(drain(body, limit)).await;
                }
                return Err(GatewayError::BodyTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// An HTTP/2 request answered without reading its body (no route, refused): its body,
/// when some of it is still to come, to be drained ([`drain_rest`]) before the answer, as
/// after a 413, so a client still uploading reads the answer.
pub fn unread(body: ClientBody, version: http::Version) -> Option<inbound::Body> {
    match body {
        ClientBody::Incoming(b)
            if version == http::Version::HTTP_2 && !hyper::body::Body::is_end_stream(&b) =>
        {
            Some(b)
        }
        _ => None,
    }
}

/// Drains what [`unread`] left, against the default limit.
pub async fn drain_rest(body: inbound::Body) {
    drain(body, DEFAULT_DRAIN_LIMIT).await
}

/// The limit [`drain_rest`] drains against (8x = 8 MiB).
const DEFAULT_DRAIN_LIMIT: u64 = 1 << 20;

/// Reads and discards what is left of a body the gateway refuses (bounded in bytes and
/// time), before the refusal is sent: a client that reads an error before it finished
/// sending may stop short (curl does, "HTTP error before end of send"), and h2 then resets
/// the stream for its Content-Length (PROTOCOL_ERROR), so the client reports the reset
/// instead of the answer. Past the bounds the answer goes anyway.
async fn drain(mut body: inbound::Body, limit: u64) {
    let budget = limit.saturating_mul(8).clamp(1 << 20, LINGER_MAX_BYTES);
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut seen = 0u64;
    while seen <= budget {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => {
                seen += f.data_ref().map(|d| d.len() as u64).unwrap_or(0);
            }
            _ => break,
        }
    }
}

/// A client's upload (a multipart file for one of OpenAI's APIs) streamed to the upstream
/// as it arrives instead of buffered whole, counted against the route's limit on the way.
pub struct UploadSlot {
    body: std::sync::Mutex<Option<crate::net::upstream::Upload>>,
    over: std::sync::Arc<std::sync::atomic::AtomicBool>,
    model: Option<String>,
}

/// How much of a streamed upload is held before sending, to find its `model` field.
const UPLOAD_PEEK: usize = 64 << 10;

impl UploadSlot {
    /// The upload of `body`. A declared length over `limit` is a 413 before anything is
    /// sent. With the form's boundary in `model_in`, the start of the body is read first,
    /// up to its `model` field (at most 64 KiB: SDKs send the form's fields before its
    /// file), so the model is known, checked and logged before the upload goes out.
    pub async fn new(
        mut body: inbound::Body,
        length: Option<u64>,
        (limit, opts): (u64, ReadOptions),
        model_in: Option<&str>,
    ) -> Result<Self, GatewayError> {
        let over_limit = |n: u64| limit > 0 && n > limit;
        if length.is_some_and(over_limit) {
            if opts.linger {
                Box::pin(drain(body, limit)).await;
            }
            return Err(GatewayError::BodyTooLarge { limit });
        }
        let mut head = BytesMut::new();
        let mut model = None;
        while let Some(boundary) = model_in.filter(|_| head.len() < UPLOAD_PEEK) {
            let next = match tokio::time::timeout(opts.timeout, body.frame()).await {
                Ok(f) => f,
                Err(_) => return Err(GatewayError::BodyTimeout),
            };
            let Some(frame) = next else { break };
            let frame = frame.map_err(|_| GatewayError::ClientAborted)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if over_limit((head.len() + data.len()) as u64) {
                if opts.linger {
                    Box::pin(drain(body, limit)).await;
                }
                return Err(GatewayError::BodyTooLarge { limit });
            }
            head.extend_from_slice(&data);
            model = crate::llm::multipart::field(&head, boundary, "model");
            if model.is_some() {
                break;
            }
        }
        let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let head = head.freeze();
        let counted = Counted {
            seen: head.len() as u64,
            head: (!head.is_empty()).then_some(head),
            inner: body,
            limit,
            over: over.clone(),
        };
        Ok(UploadSlot {
            body: std::sync::Mutex::new(Some(BodyExt::boxed_unsync(counted))),
            over,
            model,
        })
    }

    /// The body, for the attempt that sends it.
    pub fn take(&self) -> Option<crate::net::upstream::Upload> {
        match self.body.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        }
    }

    /// Gives back a body no byte of which was sent (the connection failed), for the next
    /// attempt.
    pub fn put_back(&self, upload: crate::net::upstream::Upload) {
        match self.body.lock() {
            Ok(mut g) => *g = Some(upload),
            Err(p) => *p.into_inner() = Some(upload),
        }
    }

    /// The form's `model` field, when it came within the first 64 KiB.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The upload went over the limit (and was cut).
    pub fn over_limit(&self) -> bool {
        self.over.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The client's body, failing once it passes the limit.
struct Counted {
    /// What was read before sending (to find the model), sent first.
    head: Option<Bytes>,
    inner: inbound::Body,
    seen: u64,
    limit: u64,
    over: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = crate::net::upstream::BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if let Some(head) = self.head.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(head))));
        }
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        let std::task::Poll::Ready(Some(Ok(frame))) = polled else {
            return polled.map_err(Into::into);
        };
        if let Some(d) = frame.data_ref() {
            self.seen += d.len() as u64;
            if self.limit > 0 && self.seen > self.limit {
                self.over.store(true, std::sync::atomic::Ordering::Relaxed);
                return std::task::Poll::Ready(Some(Err(
                    "the upload is larger than the limit".into()
                )));
            }
        }
        std::task::Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = hyper::body::SizeHint::new();
        hint.set_lower(inner.lower() + head);
        if let Some(u) = inner.upper() {
            hint.set_upper(u + head);
        }
        hint
    }
}

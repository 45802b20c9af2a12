//! Reading a client's request body with a size limit.

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::error::GatewayError;

/// A request body: from the connection, or already in memory (requests the gateway makes
/// for a WebSocket client).
pub enum ClientBody {
    Incoming(Incoming),
    Ready(Bytes),
}

/// How a body is read: the wait allowed between two reads, and whether an oversized body
/// is drained after the 413.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Longest wait for the next part of the body (Kong's `client_body_timeout`); a client
    /// that stalls longer gets a 408.
    pub timeout: std::time::Duration,
    /// Read and throw away the rest of an oversized body after answering 413 (HTTP/2):
    /// dropping the body there resets the stream, and clients still uploading (curl)
    /// then lose the 413.
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
    let mut body = match body {
        ClientBody::Incoming(b) => b,
        ClientBody::Ready(b) if limit > 0 && b.len() as u64 > limit => {
            return Err(GatewayError::BodyTooLarge { limit })
        }
        ClientBody::Ready(b) => return Ok(b),
    };
    if limit > 0 && content_length.map(|l| l > limit).unwrap_or(false) {
        if opts.linger {
            linger(body, limit);
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
                    linger(body, limit);
                }
                return Err(GatewayError::BodyTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// An HTTP/2 request answered without reading its body (no route, refused): the body is
/// drained as after a 413, so a client still uploading reads the answer.
pub fn drain_unread(body: ClientBody, version: http::Version) {
    if version != http::Version::HTTP_2 {
        return;
    }
    if let ClientBody::Incoming(b) = body {
        if !hyper::body::Body::is_end_stream(&b) {
            linger(b, DEFAULT_DRAIN_LIMIT);
        }
    }
}

/// The limit [`drain_unread`] drains against (8x = 8 MiB).
const DEFAULT_DRAIN_LIMIT: u64 = 1 << 20;

/// Reads and discards what is left of an oversized body (bounded in bytes and time), as
/// nginx's lingering close does, so the stream ends when the upload does instead of with
/// a reset the client may read as a failure.
fn linger(mut body: Incoming, limit: u64) {
    let budget = limit.saturating_mul(8).clamp(1 << 20, LINGER_MAX_BYTES);
    tokio::spawn(async move {
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
    });
}

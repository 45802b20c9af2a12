//! Reading a whole upstream body (a buffered answer, a token or embeddings response),
//! bounded in size and in the wait between frames.

use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Body as _;

use super::upstream::{FailureKind, Incoming};
use crate::error::GatewayError;

/// Largest upstream response the gateway buffers to check and account for it.
pub const MAX_BUFFERED_RESPONSE: usize = 64 << 20;

/// A whole upstream body for a buffered answer; the connection goes back to the pool.
pub async fn read_buffered(body: Incoming, read_timeout: Duration) -> Result<Bytes, GatewayError> {
    match collect_limited(body, MAX_BUFFERED_RESPONSE, read_timeout).await {
        Ok(b) => Ok(b),
        Err(FailureKind::Timeout) => Err(GatewayError::UpstreamTimeout(
            "reading response body".into(),
        )),
        Err(_) => Err(GatewayError::UpstreamInvalid(
            "upstream closed the connection while sending the body".into(),
        )),
    }
}

/// Reads a buffered upstream body (its connection goes back to the pool at the end);
/// `read_timeout` applies between frames, as in Kong. A body that arrives in one frame is
/// kept as is (no copy).
async fn collect_limited(
    mut body: Incoming,
    limit: usize,
    read_timeout: Duration,
) -> Result<Bytes, FailureKind> {
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    loop {
        let next = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        });
        match tokio::time::timeout(read_timeout, next).await {
            Err(_) => return Err(FailureKind::Timeout),
            Ok(None) => {
                return Ok(match first {
                    Some(f) if buf.is_empty() => f,
                    _ => buf.freeze(),
                })
            }
            Ok(Some(Err(()))) => return Err(FailureKind::Reset),
            Ok(Some(Ok(f))) => {
                let Ok(d) = f.into_data() else { continue };
                let total = buf.len() + first.as_ref().map(Bytes::len).unwrap_or(0) + d.len();
                if total > limit {
                    return Err(FailureKind::InvalidHeader);
                }
                match first.take() {
                    None if buf.is_empty() => first = Some(d),
                    Some(f) => {
                        buf.extend_from_slice(&f);
                        buf.extend_from_slice(&d);
                    }
                    None => buf.extend_from_slice(&d),
                }
            }
        }
    }
}

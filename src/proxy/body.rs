//! Reading a client's request body with a size limit.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::error::GatewayError;

/// A request body: from the connection, or already in memory (requests the gateway makes
/// for a WebSocket client).
pub enum ClientBody {
    Incoming(Incoming),
    Ready(Bytes),
}

/// Reads the whole body; more than `limit` bytes (0 = unlimited) is a 413.
pub async fn read_limited(
    body: ClientBody,
    content_length: Option<u64>,
    limit: u64,
) -> Result<Bytes, GatewayError> {
    if limit > 0 && content_length.map(|l| l > limit).unwrap_or(false) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut body = match body {
        ClientBody::Incoming(b) => b,
        ClientBody::Ready(b) if limit > 0 && b.len() as u64 > limit => {
            return Err(GatewayError::BodyTooLarge { limit })
        }
        ClientBody::Ready(b) => return Ok(b),
    };
    let mut buf = BytesMut::with_capacity(content_length.unwrap_or(0).min(1 << 20) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| GatewayError::ClientAborted)?;
        if let Ok(data) = frame.into_data() {
            if limit > 0 && (buf.len() + data.len()) as u64 > limit {
                return Err(GatewayError::BodyTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Whether a Content-Type is JSON (`application/json`, `…+json`), or absent (Kong's default).
pub fn is_json(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || mime.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let h = |s: &'static str| http::HeaderValue::from_static(s);
        assert!(is_json(None));
        assert!(is_json(Some(&h("application/json; charset=utf-8"))));
        assert!(is_json(Some(&h("application/vnd.api+json"))));
        assert!(!is_json(Some(&h("text/plain"))));
        assert!(!is_json(Some(&h("multipart/form-data; boundary=x"))));
    }
}

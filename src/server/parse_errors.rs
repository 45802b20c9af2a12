//! hyper answers an HTTP/1 request it cannot parse (bad request line or header, URI or head
//! too long) by itself, with `400`/`414`/`431` and an empty body, before the gateway sees
//! the request. This wrapper around the connection's I/O recognises that exact answer as it
//! is written and sends the gateway's JSON error body (Kong's `{"message","request_id"}`)
//! in its place, so every error the gateway sends has the documented shape.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// The connection's I/O, with hyper's bodiless parse-error answers given a JSON body.
pub struct JsonParseErrors<T> {
    inner: T,
    /// The replacement being written: its bytes, how many are out, and how many of
    /// hyper's bytes it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<T> JsonParseErrors<T> {
    /// Wraps a connection's I/O.
    pub fn new(inner: T) -> Self {
        JsonParseErrors {
            inner,
            pending: None,
        }
    }
}

/// hyper's answer to an unparsable request: exactly a status line, `connection: close`,
/// `content-length: 0` and `date` (no response of the gateway's own is this bare); the
/// status code and the date when it is one.
fn automatic_error(buf: &[u8]) -> Option<(u16, &str)> {
    // Every other write (any body, any head of the gateway's) fails this at once.
    if buf.len() > 160 || !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let text = std::str::from_utf8(buf).ok()?;
    let head = text.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.strip_prefix("HTTP/1.1 ")?;
    let code: u16 = status.get(..3)?.parse().ok()?;
    if !matches!(code, 400 | 414 | 431) {
        return None;
    }
    let (mut close, mut empty, mut date) = (false, false, None);
    for line in lines {
        match line.split_once(": ")? {
            ("connection", "close") => close = true,
            ("content-length", "0") => empty = true,
            ("date", d) => date = Some(d),
            _ => return None,
        }
    }
    (close && empty).then_some(())?;
    Some((code, date?))
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for JsonParseErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> JsonParseErrors<T> {
    /// Writes the pending replacement out; Ready(n) once it is, n = hyper's bytes.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        while let Some((bytes, at, claimed)) = self.pending.as_mut() {
            if *at >= bytes.len() {
                let n = *claimed;
                self.pending = None;
                return Poll::Ready(Ok(n));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *at += n;
        }
        Poll::Ready(Ok(0))
    }

    fn arm(&mut self, buf: &[u8]) -> bool {
        if self.pending.is_some() {
            return true;
        }
        let Some((code, date)) = automatic_error(buf) else {
            return false;
        };
        let id = crate::proxy::next_request_id();
        let bytes = crate::error::raw_parse_error(code, date, &id);
        tracing::debug!(status = code, request_id = %id, "unparsable request answered");
        self.pending = Some((bytes, 0, buf.len()));
        true
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for JsonParseErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.arm(buf) {
            return this.poll_pending(cx);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        // hyper's error answer is a head alone: one slice.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            if this.arm(only) {
                return this.poll_pending(cx);
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_answer_is_recognised() {
        let date = "Sun, 06 Dec 2026 09:18:57 GMT";
        let bare =
            format!("HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: {date}\r\n\r\n");
        assert_eq!(automatic_error(bare.as_bytes()), Some((414, date)));
        let ours = format!(
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\nserver: x\r\ndate: {date}\r\n\r\n"
        );
        assert_eq!(automatic_error(ours.as_bytes()), None);
        let other = bare.replace("414 URI Too Long", "404 Not Found");
        assert_eq!(automatic_error(other.as_bytes()), None);
        assert_eq!(automatic_error(&bare.as_bytes()[..20]), None);
    }
}

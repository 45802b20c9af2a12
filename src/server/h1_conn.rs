//! A client's HTTP/1.1 connection served by the gateway itself: read a request head and
//! its body, run the handler (dropped when the client hangs up first), write the response
//! as its body yields, and go on with the next request, under the same limits hyper's
//! connections have (header and keep-alive timeouts, the cap's eviction, graceful stop).
//!
//! Written here rather than served through hyper because the proxy's requests are almost
//! all one shape (a head with a small body in one read, then one response): hyper's
//! server spent ~6k instructions per request in its dispatcher and buffers, a tenth of
//! the proxied request (callgrind, issue 26). Whatever is not that shape (see
//! `h1_wire.rs`) is handed to hyper with the bytes already read.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::h1_wire::{self, Framing, Parsed};
use super::{conns, Shared, FAR};
use crate::net::inbound;

/// The read buffer a connection starts with (hyper's is 8 KiB too).
const READ_BUF: usize = 8 * 1024;
/// The largest body read here with its head; a longer one is streamed by hyper.
const MAX_BODY: u64 = 1 << 20;
/// How long the rest of a body may take to follow its head before the request goes to
/// hyper (which then waits the body timeout): clients that write the head and the body
/// separately send both at once.
const BODY_WAIT: Duration = Duration::from_millis(100);
/// Response bytes gathered before they are written, when more are ready at once.
const WRITE_BATCH: usize = 64 * 1024;

/// How a connection served here ended.
pub(super) enum End {
    /// Closed (by either side, a limit, or the gateway stopping).
    Closed,
    /// The rest is hyper's, starting with these bytes already read.
    Handover(Bytes),
}

/// Serves requests on `io` until it closes or one needs hyper.
pub(super) async fn serve<I, F, Fut, B>(
    io: &mut I,
    handler: &F,
    peer: SocketAddr,
    tracker: &Arc<conns::Tracker>,
    shared: &Shared,
) -> End
where
    I: AsyncRead + AsyncWrite + Unpin,
    F: Fn(Request<inbound::Body>, SocketAddr) -> Fut,
    Fut: Future<Output = Result<Response<B>, Infallible>>,
    B: super::SendBody,
{
    let mut buf = BytesMut::with_capacity(READ_BUF);
    let mut out = Vec::new();
    let mut stop = shared.stop.clone();
    // One timer for the connection's life, reset only when it fires early (a new one per
    // request would be inserted into and taken out of the timer wheel every time).
    let mut timer = std::pin::pin!(tokio::time::sleep(FAR));
    loop {
        let waits = (&mut stop, timer.as_mut());
        let head = match next_head((&mut *io, &mut buf), (peer, tracker), shared, waits).await {
            Ok(h) => h,
            Err(end) => return end,
        };
        let body = match body_of(io, &mut buf, head.body_len).await {
            Ok(b) => b,
            Err(()) => return handover(head.raw, buf),
        };
        let guard = tracker.begin();
        let head_request = head.request.method() == Method::HEAD;
        let request = head.request.map(|()| inbound::Body::whole(body));
        let answer = handler(request, peer);
        // The handler is dropped (the upstream call cancelled) if the client leaves first.
        let resp = tokio::select! {
            biased;
            r = answer => match r {
                Ok(r) => r,
                Err(never) => match never {},
            },
            () = until_closed(io, &mut buf) => return End::Closed,
        };
        let keep_alive = head.keep_alive && !*stop.borrow();
        let keep_alive =
            write_response(io, resp, head_request, keep_alive, (&mut out, &mut buf)).await;
        drop(guard);
        if !keep_alive || *stop.borrow() {
            let _ = io.shutdown().await;
            return End::Closed;
        }
        // An idle keep-alive connection holds a read buffer's worth, not the largest
        // exchange it once had (a big upload's tail, a big answer's copy).
        if out.capacity() > READ_BUF {
            out = Vec::new();
        }
        if buf.is_empty() && buf.capacity() > 2 * READ_BUF {
            buf = BytesMut::with_capacity(READ_BUF);
        }
    }
}

/// The connection for hyper: what was taken off the buffer, then the rest of it.
fn handover(taken: Bytes, rest: BytesMut) -> End {
    if taken.is_empty() {
        return End::Handover(rest.freeze());
    }
    let mut all = BytesMut::with_capacity(taken.len() + rest.len());
    all.extend_from_slice(&taken);
    all.extend_from_slice(&rest);
    End::Handover(all.freeze())
}

/// Waits for the next request head, within the header timeout (first request) or the
/// keep-alive timeout (later ones), and not past eviction or the gateway's stop.
async fn next_head<I: AsyncRead + Unpin>(
    (io, buf): (&mut I, &mut BytesMut),
    (peer, tracker): (SocketAddr, &conns::Tracker),
    shared: &Shared,
    (stop, mut timer): (
        &mut tokio::sync::watch::Receiver<bool>,
        std::pin::Pin<&mut tokio::time::Sleep>,
    ),
) -> Result<h1_wire::Head, End> {
    let (allowed, what) = if tracker.served_any() {
        (
            shared.limits.keepalive_timeout,
            "no further request within the keep-alive timeout",
        )
    } else {
        (
            shared.limits.header_timeout,
            "no complete request head within the header timeout",
        )
    };
    let allowed = allowed.unwrap_or(FAR);
    // Nothing is in flight here: idle since the last answer (or the accept).
    let left = |t: &conns::Tracker| allowed.saturating_sub(t.idle_for().unwrap_or_default());
    let deadline = tokio::time::Instant::now() + left(tracker);
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    let mut closing = *stop.borrow();
    loop {
        if !buf.is_empty() {
            match h1_wire::parse_request(buf) {
                Parsed::Head(h) => return Ok(h),
                Parsed::Handover(taken) => return Err(handover(taken, std::mem::take(buf))),
                Parsed::Partial => {}
            }
        } else if closing {
            return Err(End::Closed);
        }
        reserve(buf);
        tokio::select! {
            read = io.read_buf(buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return Err(End::Closed);
                }
            }
            () = timer.as_mut() => {
                let left = left(tracker);
                if !left.is_zero() {
                    timer.as_mut().reset(tokio::time::Instant::now() + left);
                    continue;
                }
                let stats = &shared.gw.stats;
                if tracker.served_any() {
                    stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(%peer, "closed a connection: {what}");
                return Err(End::Closed);
            }
            _ = stop.changed(), if !closing => closing = true,
            () = tracker.evict.notified() => {
                tracing::debug!(%peer, "closed a connection to make room at the connection cap");
                return Err(End::Closed);
            }
        }
    }
}

/// Room to read into (`read_buf` reads nothing into a full buffer).
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_BUF);
    }
}

/// The request's body, read whole; Err when it is too long to read here or does not
/// follow its head promptly (then hyper reads it).
async fn body_of<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    len: u64,
) -> Result<Bytes, ()> {
    if len > MAX_BODY {
        return Err(());
    }
    let len = len as usize;
    if buf.len() < len {
        buf.reserve(len - buf.len());
        let deadline = tokio::time::Instant::now() + BODY_WAIT;
        while buf.len() < len {
            match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(()),
            }
        }
    }
    Ok(buf.split_to(len).freeze())
}

/// Resolves when the client closes the connection (or it fails); bytes it sends meanwhile
/// (a pipelined request) are kept for later, up to a head's worth.
async fn until_closed<I: AsyncRead + Unpin>(io: &mut I, buf: &mut BytesMut) {
    loop {
        if buf.len() > h1_wire::MAX_HEAD {
            std::future::pending::<()>().await;
        }
        reserve(buf);
        match io.read_buf(buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// Writes the response, its body as it comes; whether the connection may carry another
/// request.
async fn write_response<I, B>(
    io: &mut I,
    resp: Response<B>,
    head_request: bool,
    keep_alive: bool,
    (out, buf): (&mut Vec<u8>, &mut BytesMut),
) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
    B: super::SendBody,
{
    let (parts, body) = resp.into_parts();
    let mut body = std::pin::pin!(body);
    let exact = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    out.clear();
    let at = (parts.status, &parts.headers);
    let (framing, mut keep_alive) = h1_wire::encode_head(out, at, head_request, exact, keep_alive);
    drop(parts);
    if framing == Framing::None {
        return send(io, out).await && keep_alive;
    }
    let mut sent = 0u64;
    loop {
        // What the body has ready goes out in one write; waiting for more writes first.
        let next = match body.frame().now_or_never() {
            Some(f) => f,
            None => {
                if !send(io, out).await {
                    return false;
                }
                tokio::select! {
                    biased;
                    f = body.frame() => f,
                    () = until_closed(io, buf) => return false,
                }
            }
        };
        let frame = match next.map(|f| f.map_err(Into::into)) {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                let e: Box<dyn std::error::Error + Send + Sync> = e;
                tracing::debug!(error = %e, "response body failed; closing the connection");
                // What came before the failure is the client's; the cut framing tells it
                // the rest is missing.
                let _ = send(io, out).await;
                return false;
            }
        };
        // Trailers are dropped: an HTTP/1.1 client did not ask for them.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let payload: &[u8] = match framing {
            Framing::Chunked if !data.is_empty() => {
                h1_wire::chunk_start(out, data.len());
                &data
            }
            Framing::Length(n) => {
                let room = n.saturating_sub(sent).min(data.len() as u64) as usize;
                sent += room as u64;
                keep_alive &= room == data.len();
                &data[..room]
            }
            Framing::Close => &data,
            Framing::Chunked | Framing::None => &[],
        };
        if payload.len() >= WRITE_BATCH {
            // A large frame is written from where it is rather than copied.
            if !send(io, out).await || io.write_all(payload).await.is_err() {
                return false;
            }
        } else {
            out.extend_from_slice(payload);
        }
        if framing == Framing::Chunked && !payload.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= WRITE_BATCH && !send(io, out).await {
            return false;
        }
    }
    match framing {
        Framing::Chunked => out.extend_from_slice(h1_wire::LAST_CHUNK),
        // A body shorter than its announced length: the client learns it by the close.
        Framing::Length(n) => keep_alive &= sent == n,
        Framing::Close | Framing::None => {}
    }
    send(io, out).await && keep_alive
}

/// Writes `out` (then empties it) and flushes what is written; false when the client is
/// gone.
async fn send<I: AsyncWrite + Unpin>(io: &mut I, out: &mut Vec<u8>) -> bool {
    let written = out.is_empty() || io.write_all(out).await.is_ok();
    out.clear();
    written && io.flush().await.is_ok()
}

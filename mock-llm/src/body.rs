//! Response bodies: a whole buffer, or server-sent events written one frame
//! at a time with optional gaps and an optional abrupt end.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// Body of every response the mock sends.
#[derive(Debug)]
pub(crate) enum MockBody {
    /// A complete body, sent with a content-length.
    Full(Option<Bytes>),
    /// An event stream, sent chunked.
    Events(EventStream),
    /// A stream fed as it goes (an MCP HTTP+SSE session); ends when every sender is gone.
    Channel(tokio::sync::mpsc::UnboundedReceiver<Bytes>),
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> MockBody {
        MockBody::Full(Some(bytes.into()))
    }

    /// The bytes of a complete body (`None` for a stream).
    pub(crate) fn into_full(self) -> Option<Bytes> {
        match self {
            MockBody::Full(bytes) => bytes,
            MockBody::Events(_) | MockBody::Channel(_) => None,
        }
    }
}

/// `response` gzip-encoded: a full body whole, an event stream event by event (each
/// flushed, so the client can decode every frame as it comes).
pub(crate) fn gzipped(response: http::Response<MockBody>) -> http::Response<MockBody> {
    use std::io::Write;
    let (mut parts, body) = response.into_parts();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut take = |bytes: &[u8], finish: bool| -> Bytes {
        let _ = enc.write_all(bytes);
        let _ = enc.flush();
        if finish {
            let _ = enc.try_finish();
        }
        Bytes::from(std::mem::take(enc.get_mut()))
    };
    let body = match body {
        MockBody::Full(b) => MockBody::full(take(b.as_deref().unwrap_or_default(), true)),
        MockBody::Events(mut s) => {
            let n = s.events.len();
            let mut events = std::mem::take(&mut s.events);
            for (i, e) in events.iter_mut().enumerate() {
                *e = take(e, i + 1 == n);
            }
            s.events = events;
            MockBody::Events(s)
        }
        MockBody::Channel(rx) => MockBody::Channel(rx),
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.insert(
        http::header::CONTENT_ENCODING,
        http::HeaderValue::from_static("gzip"),
    );
    http::Response::from_parts(parts, body)
}

/// A binary body sent in frames of `frame` bytes (chunked), with the gap and the
/// cut of a stream.
pub(crate) fn framed(
    data: &[u8],
    frame: usize,
    gap: Duration,
    disconnect_after: Option<usize>,
) -> MockBody {
    let events = data
        .chunks(frame.max(1))
        .map(Bytes::copy_from_slice)
        .collect();
    MockBody::Events(EventStream::new(events, gap, disconnect_after))
}

/// Events yielded as separate frames so a client can observe the gaps.
#[derive(Debug)]
pub(crate) struct EventStream {
    events: VecDeque<Bytes>,
    gap: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    sent: usize,
    disconnect_after: Option<usize>,
    /// Whether hyper was given its chance to flush before the cut.
    flushed: bool,
}

impl EventStream {
    /// `gap` is waited between consecutive events; with `disconnect_after`
    /// the body fails after that many events, which makes hyper drop the
    /// connection without the terminating chunk.
    pub(crate) fn new(
        events: Vec<Bytes>,
        gap: Duration,
        disconnect_after: Option<usize>,
    ) -> EventStream {
        EventStream {
            events: events.into(),
            gap,
            sleep: None,
            sent: 0,
            disconnect_after,
            flushed: false,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            MockBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Events(stream) => stream.poll_event(cx),
            MockBody::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Events(_) | MockBody::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            MockBody::Events(_) | MockBody::Channel(_) => SizeHint::default(),
        }
    }
}

impl EventStream {
    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let cut = self
            .disconnect_after
            .is_some_and(|limit| self.sent >= limit);
        if cut || (self.events.is_empty() && self.disconnect_after.is_some()) {
            if !self.flushed {
                // hyper drops its write buffer on a body error; yielding once
                // makes it flush the events already sent, so the client sees
                // them before the connection drops.
                self.flushed = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.disconnect_after = None;
            self.events.clear();
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock-llm injected disconnect",
            ))));
        }
        if self.events.is_empty() {
            return Poll::Ready(None);
        }
        if self.sent > 0 && !self.gap.is_zero() {
            let gap = self.gap;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        match self.events.pop_front() {
            Some(event) => {
                self.sent += 1;
                Poll::Ready(Some(Ok(Frame::data(event))))
            }
            None => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn events_come_out_as_separate_frames() {
        let events = vec![Bytes::from("a"), Bytes::from("b")];
        let mut body = MockBody::Events(EventStream::new(events, Duration::ZERO, None));
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(frames, ["a", "b"]);
    }

    #[tokio::test]
    async fn disconnect_after_fails_the_body() {
        let events = vec![Bytes::from("a"), Bytes::from("b"), Bytes::from("c")];
        let mut body = MockBody::Events(EventStream::new(events, Duration::ZERO, Some(2)));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_err());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn full_body_reports_exact_size() {
        let body = MockBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    }
}

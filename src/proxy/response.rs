//! The response body the gateway sends: a buffered body or the upstream's body passed
//! through frame by frame. Either way, the log phase runs exactly once — at the end of
//! the body or when the client goes away.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::gateway::Snapshot;
use crate::llm::stream::{Dialect, Mapper, SseObserver};
use crate::llm::usage::Usage;
use crate::net::upstream::Incoming;
use crate::observe::log::RequestLog;
use crate::plugins::ai_proxy::AiProxy;
use crate::plugins::phases::Log;
use crate::proxy::exchange::Exchange;

/// Upstream bodies being passed through right now (`tollgate_open_streams`), counted per
/// worker: every stream moves it twice.
static OPEN_STREAMS: crate::rt::worker::Counter = crate::rt::worker::Counter::new();

/// How many upstream bodies are being passed through right now.
pub fn open_streams() -> u64 {
    OPEN_STREAMS.get()
}

/// Counts one open stream for as long as it lives.
struct StreamGauge;

impl StreamGauge {
    fn new() -> StreamGauge {
        OPEN_STREAMS.incr();
        StreamGauge
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        OPEN_STREAMS.decr();
    }
}

/// Largest response payload kept for `log_payloads`.
const PAYLOAD_CAP: usize = 1 << 20;

/// What the balancer learns from one answered request, reported when its body is over
/// (requests in flight, latency, usage, circuit breaker). Dropped without `finish` (the
/// response failed before its body was sent), it only ends the in-flight count.
pub struct Feedback {
    ai: Arc<AiProxy>,
    target: usize,
    sent_at: Instant,
    /// The upstream answered 2xx (anything else was already judged by the retry loop).
    ok: bool,
    finished: bool,
}

impl Feedback {
    /// Feedback for target `target` of `ai`, sent at `sent_at`.
    pub fn new(ai: Arc<AiProxy>, target: usize, sent_at: Instant, ok: bool) -> Feedback {
        Feedback {
            ai,
            target,
            sent_at,
            ok,
            finished: false,
        }
    }

    /// The body is over: a 2xx that ended cleanly counts as a success with its latency
    /// (request sent → last byte) and usage.
    pub fn finish(mut self, usage: Option<&Usage>, clean: bool) {
        self.finished = true;
        if self.ok && clean {
            self.ai
                .balancer
                .success(self.target, self.sent_at.elapsed(), usage);
        } else if self.ok {
            // Cut mid-body: the target failed this request after all.
            self.ai.balancer.failure(self.target);
        }
    }
}

impl Drop for Feedback {
    fn drop(&mut self) {
        self.ai.balancer.end(self.target);
    }
}

/// What the log phase needs once the body is done.
pub struct Finish {
    pub log: Exchange,
    pub snapshot: Arc<Snapshot>,
    /// Capture the response for `ai.proxy.payload.response`.
    pub capture: Option<Vec<u8>>,
    pub feedback: Option<Feedback>,
}

impl Finish {
    /// The log phase for `log`, or nothing when no log plugin will read it.
    pub fn boxed(
        log: Exchange,
        snapshot: Arc<Snapshot>,
        capture: Option<Vec<u8>>,
    ) -> Option<Box<Finish>> {
        Finish::with_feedback(log, snapshot, capture, None)
    }

    /// The log phase and the balancer's feedback; nothing when neither is wanted.
    pub fn with_feedback(
        log: Exchange,
        snapshot: Arc<Snapshot>,
        capture: Option<Vec<u8>>,
        feedback: Option<Feedback>,
    ) -> Option<Box<Finish>> {
        let wanted = log.enabled
            || log.trace.is_some_and(|t| t.sampled)
            || feedback.is_some()
            || !log.charges.is_empty()
            || log.metrics
            || log.analytics.is_some()
            || log.cache.is_some();
        wanted.then(|| {
            Box::new(Finish {
                log,
                snapshot,
                capture,
                feedback,
            })
        })
    }

    /// Runs the log phase: every log plugin of the route (or the global ones) gets the record.
    pub fn run(mut self, stream_error: Option<String>) {
        self.log.finished_ms = Some(self.log.started.elapsed().as_millis() as u64);
        if let Some(fb) = self.feedback.take() {
            let usage = self.log.ai.as_ref().and_then(|a| a.usage.as_ref());
            fb.finish(usage, stream_error.is_none());
        }
        if let Some(p) = self.log.cache.take() {
            p.finish(self.log.status, stream_error.is_some());
        }
        if !self.log.charges.is_empty() {
            let charges = std::mem::take(&mut self.log.charges);
            crate::plugins::phases::settle(charges, &self.log);
        }
        let analytics = self.log.analytics.take();
        let sinks = self.log.enabled;
        if sinks || analytics.is_some() {
            if let (Some(ai), Some(cap)) = (self.log.ai.as_mut(), self.capture.take()) {
                ai.payload_response = Some(String::from_utf8_lossy(&cap).into_owned());
            }
            if let (Some(ai), Some(e)) = (self.log.ai.as_mut(), stream_error) {
                ai.stream_error = Some(e);
            }
        }
        // Every plugin's log handler, in PRIORITY order; file-log formats its line here,
        // while the record is still in the core's cache, and the other sinks take the
        // record itself to their threads, which serialize it off the request path.
        let snapshot: &Snapshot = &self.snapshot;
        let mut cx = Log {
            record: &self.log.record,
            entities: &snapshot.entities,
            sinks,
            line: None,
            http: Vec::new(),
        };
        for &i in chain_of(cx.record, snapshot) {
            if let Some(p) = snapshot.plugins.get(i) {
                p.plugin.log(&mut cx);
            }
        }
        let Log { line, http, .. } = cx;
        if let Some(a) = analytics {
            // Summed on this thread when its log-phase runner hands the rows over.
            let batched = LOG_QUEUE.with(|q| q.borrow().runner);
            a.record(&self.log.record.usage(&snapshot.entities), batched);
        }
        if !http.is_empty() {
            let started = self.log.started;
            let log = std::mem::replace(
                &mut self.log.record,
                Box::new(RequestLog::new(Default::default(), started)),
            );
            let job =
                crate::observe::log::LogJob::new(log, snapshot.entities.clone(), line.clone());
            for sink in http {
                sink.send(job.clone());
            }
            drop(job);
        }
        if let Some(l) = line {
            crate::observe::file_log::recycle_line(l);
        }
        crate::observe::log::reap();
    }
}

enum Kind {
    Full(Option<Bytes>),
    /// Boxed: a response is moved several times on its way out (each layer's return
    /// value, then hyper's state), and a stream's state is over a kilobyte.
    Upstream(Box<Stream>),
    /// A body that rewrites another as it streams (MCP's HTTP+SSE relay).
    Wrapped(Pin<Box<dyn Body<Data = Bytes, Error = std::io::Error> + Send>>),
}

/// The upstream's body, passed through frame by frame.
struct Stream {
    /// Read from its connection, which goes back to the pool when the body ends cleanly.
    inner: Incoming,
    /// Translates a provider's native stream first.
    mapper: Option<Mapper>,
    observer: Option<SseObserver>,
    idle: Pin<Box<Sleep>>,
    /// A frame arrived since the idle timer was armed.
    active: bool,
    read_timeout: Duration,
    /// For SSE an upstream failure becomes a final error event, then the end.
    sse: Option<Dialect>,
    ended: bool,
    /// `ai-sanitizer` rewriting the stream (restoring, masking).
    filter: Option<Box<crate::plugins::ai_sanitizer_filter::SseFilter>>,
    /// A gzip- or deflate-encoded stream the gateway reads, decoded first.
    decoder: Option<Box<crate::net::encoding::StreamDecoder>>,
    _gauge: StreamGauge,
}

/// What one poll of the upstream body came to.
enum Step {
    /// Bytes for the client (none, when the mapper or filter holds them back).
    Chunk(Chunk),
    /// A frame that is not data (trailers), passed on as it is.
    Trailers(Frame<Bytes>),
    /// The upstream failed: the message for the log, and the error code.
    Failed(String, &'static str),
    /// The body ended at an earlier poll.
    Ended,
    /// Nothing yet; the upstream or the idle timer wakes the task.
    Pending,
}

/// What the client gets of the upstream's bytes.
struct Chunk {
    out: Bytes,
    /// What the upstream said, when a filter rewrote it for the client (the log keeps it).
    upstream: Option<Bytes>,
}

/// The body of every gateway response.
pub struct ProxyBody {
    kind: Kind,
    finish: Option<Box<Finish>>,
    sent: u64,
}

impl From<Bytes> for ProxyBody {
    fn from(b: Bytes) -> Self {
        ProxyBody::full(b, None)
    }
}

impl ProxyBody {
    /// A complete body; `finish` runs after it was handed to the connection.
    pub fn full(b: Bytes, finish: Option<Box<Finish>>) -> Self {
        ProxyBody {
            kind: Kind::Full(Some(b)),
            finish,
            sent: 0,
        }
    }

    /// Streams the upstream body; `sse` makes upstream failures a clean error event.
    pub fn upstream(
        inner: Incoming,
        mapper: Option<Mapper>,
        observer: Option<SseObserver>,
        sse: Option<Dialect>,
        read_timeout: Duration,
        finish: Option<Box<Finish>>,
    ) -> Self {
        ProxyBody {
            kind: Kind::Upstream(Box::new(Stream {
                inner,
                mapper,
                observer,
                idle: Box::pin(tokio::time::sleep(read_timeout)),
                active: false,
                read_timeout,
                sse,
                ended: false,
                filter: None,
                decoder: None,
                _gauge: StreamGauge::new(),
            })),
            finish,
            sent: 0,
        }
    }

    /// A body streamed through `body`, which holds the one it rewrites (and that body's
    /// log phase).
    pub fn wrapped(body: impl Body<Data = Bytes, Error = std::io::Error> + Send + 'static) -> Self {
        ProxyBody {
            kind: Kind::Wrapped(Box::pin(body)),
            finish: None,
            sent: 0,
        }
    }

    /// A complete body's bytes, taken out with its log phase to be checked before the
    /// client gets them (None: the body is a stream, left as it is).
    pub fn take_full(&mut self) -> Option<(Bytes, Option<Box<Finish>>)> {
        match &mut self.kind {
            Kind::Full(b) => {
                let bytes = b.take()?;
                Some((bytes, self.finish.take()))
            }
            Kind::Upstream(_) | Kind::Wrapped(_) => None,
        }
    }

    /// The log phase, taken out (the body then ends without it).
    pub fn take_finish(&mut self) -> Option<Box<Finish>> {
        self.finish.take()
    }

    /// Rewrites the streamed body through `f` (`ai-sanitizer`).
    pub fn set_filter(&mut self, f: crate::plugins::ai_sanitizer_filter::SseFilter) {
        if let Kind::Upstream(s) = &mut self.kind {
            s.filter = Some(Box::new(f));
        }
    }

    /// Decodes the upstream's content coding before anything reads the stream (the client
    /// then gets it decoded).
    pub fn set_decoder(&mut self, coding: crate::net::encoding::Coding) {
        if let Kind::Upstream(s) = &mut self.kind {
            s.decoder = Some(Box::new(crate::net::encoding::StreamDecoder::new(coding)));
        }
    }

    fn complete(&mut self, error: Option<String>) {
        crate::rt::busy_poll::touch();
        if let Some(mut f) = self.finish.take() {
            f.log.response_size = self.sent;
            let observer = match &self.kind {
                Kind::Upstream(s) => s.observer.as_ref(),
                _ => None,
            };
            if let (Some(o), Some(ai)) = (observer, f.log.record.ai.as_mut()) {
                if o.usage.is_some() {
                    ai.usage = o.usage.clone();
                }
                if o.model.is_some() {
                    ai.response_model = o.model.clone();
                }
                ai.ttft_ms = o
                    .first_event_at
                    .map(|t| t.duration_since(f.log.record.started).as_millis() as u64);
                ai.llm_latency_ms = Some(f.log.record.started.elapsed().as_millis() as u64);
            }
            let error = error.or_else(|| match observer {
                Some(o) if o.failed => Some("upstream reported a failure in the stream".into()),
                Some(o) if !o.completed => {
                    Some("upstream stream ended without a terminal event".into())
                }
                _ => None,
            });
            defer(f, error);
        }
    }

    /// Hands `chunk` to the client and counts it for the log; None when there is nothing
    /// to send and the next frame is wanted.
    fn emit(&mut self, chunk: Chunk) -> Option<Frame<Bytes>> {
        let Chunk { out, upstream } = chunk;
        if let Some(p) = self.finish.as_mut().and_then(|f| f.log.cache.as_mut()) {
            p.tap(&out);
        }
        match upstream {
            Some(upstream) => {
                self.payload(&upstream);
                self.sent += out.len() as u64;
            }
            None if out.is_empty() => {}
            None => self.capture(&out),
        }
        if out.is_empty() {
            None
        } else {
            Some(Frame::data(out))
        }
    }

    fn capture(&mut self, data: &[u8]) {
        self.sent += data.len() as u64;
        self.payload(data);
    }

    /// Keeps `data` for `log_payloads` (up to the cap).
    fn payload(&mut self, data: &[u8]) {
        if let Some(cap) = self.finish.as_mut().and_then(|f| f.capture.as_mut()) {
            let room = PAYLOAD_CAP.saturating_sub(cap.len());
            cap.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
}

/// The plugins that applied to the request `log` records: its own chain when
/// consumer-scoped plugins changed it, else its route's, else the global one.
fn chain_of<'a>(log: &'a RequestLog, snap: &'a Snapshot) -> &'a [usize] {
    match (&log.chain, log.route.and_then(|r| snap.routes.get(r))) {
        (Some(c), _) => c,
        (None, Some(r)) => &r.chain,
        (None, None) => &snap.global_chain,
    }
}

/// Log phases queued to run after their responses went out, counted per worker: every
/// logged request moves it twice.
static DEFERRED: crate::rt::worker::Counter = crate::rt::worker::Counter::new();

/// Runs the log phase after the response, so the connection flushes the response's last
/// bytes first: metrics, log records and quota charges are not part of the client's
/// latency. On a proxy worker the phase waits in the worker's queue for its runner task;
/// elsewhere (a multi-threaded runtime in tests) it is a task of its own. Without a
/// runtime (a body dropped during shutdown) it runs right away.
fn defer(f: Box<Finish>, error: Option<String>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return f.run(error);
    };
    DEFERRED.incr();
    let Err((f, error)) = queue_for_runner(f, error) else {
        return;
    };
    rt.spawn(async move { run_deferred(f, error) });
}

/// Runs one deferred log phase and counts it done. A panic in it is caught: on a runner it
/// would otherwise stop every later request's log phase.
fn run_deferred(f: Box<Finish>, error: Option<String>) {
    let run = std::panic::AssertUnwindSafe(|| f.run(error));
    if std::panic::catch_unwind(run).is_err() {
        tracing::error!("a log phase panicked; its record is lost");
    }
    DEFERRED.decr();
}

/// Log phases waiting for this thread's runner (see [`start_log_runner`]).
#[derive(Default)]
struct LogQueue {
    /// A runner drains this queue on this thread.
    runner: bool,
    jobs: Vec<(Box<Finish>, Option<String>)>,
    /// The runner, when it waits for work.
    waiting: Option<std::task::Waker>,
}

thread_local! {
    static LOG_QUEUE: std::cell::RefCell<LogQueue> = std::cell::RefCell::default();
}

/// Queues a log phase for this thread's runner; gives it back when the thread has none.
#[allow(clippy::type_complexity)]
fn queue_for_runner(
    f: Box<Finish>,
    error: Option<String>,
) -> Result<(), (Box<Finish>, Option<String>)> {
    let waiting = LOG_QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        if !q.runner {
            return Err((f, error));
        }
        q.jobs.push((f, error));
        Ok(q.waiting.take())
    })?;
    if let Some(w) = waiting {
        w.wake();
    }
    Ok(())
}

/// Starts the current thread's log-phase runner when the runtime is single-threaded (a
/// proxy worker): one long-lived task runs the deferred log phases of every request the
/// thread serves, where a task per request cost an allocation, a spawn and a drop each
/// (callgrind: ~1.3k instructions per request). A multi-threaded runtime could run the
/// runner on another thread than the queue's, so it keeps a task per log phase.
pub fn start_log_runner() {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
        return;
    }
    let started = LOG_QUEUE.with(|q| std::mem::replace(&mut q.borrow_mut().runner, true));
    if started {
        return;
    }
    rt.spawn(async {
        let mut batch = Vec::new();
        // Analytics rows this thread summed go to the writer when due, also when no request
        // comes to hand them over: one timer, armed once per hand-over window (a timeout
        // around each wait cost a timer entry per request).
        let hand_over = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(hand_over);
        let mut armed = false;
        loop {
            if !armed {
                if let Some(due) = crate::observe::analytics::pending_due_in() {
                    hand_over.as_mut().reset(tokio::time::Instant::now() + due);
                    armed = true;
                }
            }
            let due = std::future::poll_fn(|cx| {
                if armed && hand_over.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(true);
                }
                LOG_QUEUE.with(|q| {
                    let mut q = q.borrow_mut();
                    if q.jobs.is_empty() {
                        q.waiting = Some(cx.waker().clone());
                        Poll::Pending
                    } else {
                        std::mem::swap(&mut q.jobs, &mut batch);
                        Poll::Ready(false)
                    }
                })
            })
            .await;
            if due {
                armed = false;
                crate::observe::analytics::hand_over_pending();
            }
            for (f, error) in batch.drain(..) {
                run_deferred(f, error);
            }
        }
    });
}

/// Waits (up to `limit`) until every deferred log phase has run, then hands this thread's
/// analytics rows to the writer (shutdown: called on every worker's thread).
pub async fn settle_deferred(limit: Duration) {
    let until = std::time::Instant::now() + limit;
    while DEFERRED.get() > 0 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // This thread's analytics rows go to the writer before it is flushed.
    crate::observe::analytics::hand_over_pending();
}

/// The final SSE event sent when the upstream fails after the stream started.
pub(crate) fn error_event(dialect: Dialect, message: &str, code: &str) -> Bytes {
    let err = serde_json::json!({"message": message, "type": "server_error", "code": code});
    let text = match dialect {
        Dialect::ChatLike => format!("data: {}\n\n", serde_json::json!({ "error": err })),
        Dialect::Responses => format!(
            "event: error\ndata: {}\n\n",
            serde_json::json!({"type": "error", "code": code, "message": message, "error": err})
        ),
        Dialect::Messages => format!(
            "event: error\ndata: {}\n\n",
            serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}})
        ),
    };
    Bytes::from(text)
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            let step = match &mut this.kind {
                Kind::Full(b) => match b.take() {
                    Some(b) => {
                        this.sent += b.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(b))));
                    }
                    None => {
                        this.complete(None);
                        return Poll::Ready(None);
                    }
                },
                Kind::Upstream(s) => s.poll_step(cx),
                Kind::Wrapped(b) => return b.as_mut().poll_frame(cx),
            };
            match step {
                Step::Chunk(chunk) => {
                    if let Some(frame) = this.emit(chunk) {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                }
                Step::Trailers(frame) => return Poll::Ready(Some(Ok(frame))),
                Step::Failed(msg, code) => return this.fail(msg, code),
                Step::Ended => {
                    this.complete(None);
                    return Poll::Ready(None);
                }
                Step::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None)) && self.finish.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream(_) | Kind::Wrapped(_) => SizeHint::default(),
        }
    }
}

impl Stream {
    /// Polls the upstream once.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Step {
        if self.ended {
            return Step::Ended;
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // No clock read per frame: the idle timer re-arms itself lazily.
                self.active = true;
                match frame.into_data() {
                    Ok(data) => match self.decoder.as_mut().map(|d| d.push(&data)) {
                        None => Step::Chunk(self.on_data(data)),
                        Some(Ok(decoded)) => Step::Chunk(self.on_data(Bytes::from(decoded))),
                        Some(Err(e)) => Step::Failed(e.to_string(), "upstream_invalid_stream"),
                    },
                    Err(frame) => Step::Trailers(frame),
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let msg = format!("upstream connection failed mid-stream: {e}");
                Step::Failed(msg, "upstream_stream_cut")
            }
            Poll::Ready(None) => Step::Chunk(self.on_end()),
            Poll::Pending => self.poll_idle(cx),
        }
    }

    /// One upstream data frame through the mapper, the observer and the filter.
    fn on_data(&mut self, data: Bytes) -> Chunk {
        let (forward, mut seen) = match self.mapper.as_mut() {
            Some(m) if m.observe_only() => {
                let mapped = m.on_chunk(&data);
                (Some(data), mapped)
            }
            Some(m) => (None, m.on_chunk(&data)),
            None => (None, data),
        };
        let end = self.inner.is_end_stream();
        if end {
            if let Some(m) = self.mapper.as_mut() {
                seen = [seen, m.finish()].concat().into();
            }
        }
        let mut out = match self.observer.as_mut() {
            Some(o) => o.on_chunk(seen),
            None => seen,
        };
        if let Some(f) = forward {
            out = f;
        }
        // With a Content-Length, hyper stops polling (and drops this body) once that many
        // bytes went out, so the end is handled with the last frame, not after it.
        if end {
            self.ended = true;
            if let Some(tail) = self.observer.as_mut().and_then(SseObserver::finish) {
                out = [out, tail].concat().into();
            }
        }
        match self.filter.as_mut() {
            Some(f) => {
                // The log keeps what the upstream said (masked), the client gets the
                // restored text.
                let upstream = out;
                let mut out = f.on_chunk(&upstream);
                if end {
                    out = [out, f.finish()].concat().into();
                }
                Chunk {
                    out,
                    upstream: Some(upstream),
                }
            }
            None => Chunk {
                out,
                upstream: None,
            },
        }
    }

    /// The upstream body is over: what the mapper and the observer still hold.
    fn on_end(&mut self) -> Chunk {
        self.ended = true;
        let mut tail = Bytes::new();
        let native = self.mapper.as_ref().is_some_and(Mapper::observe_only);
        if let Some(m) = self.mapper.as_mut() {
            let rest = m.finish();
            tail = match self.observer.as_mut() {
                Some(o) => o.on_chunk(rest),
                None => rest,
            };
        }
        if let Some(t) = self.observer.as_mut().and_then(SseObserver::finish) {
            tail = [tail, t].concat().into();
        }
        if native {
            // The client already has every upstream byte.
            tail = Bytes::new();
        }
        match self.filter.as_mut() {
            Some(f) => {
                let upstream = tail;
                let out = [f.on_chunk(&upstream), f.finish()].concat().into();
                Chunk {
                    out,
                    upstream: Some(upstream),
                }
            }
            None => Chunk {
                out: tail,
                upstream: None,
            },
        }
    }

    /// Nothing from the upstream yet: a failure once it was silent for `read_timeout`.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Step {
        // The timer fires read_timeout after it was armed; if frames came since, re-arm it
        // instead (so the limit holds within 2× its value).
        while self.idle.as_mut().poll(cx).is_ready() && self.active {
            self.active = false;
            self.idle
                .as_mut()
                .reset(tokio::time::Instant::now() + self.read_timeout);
        }
        if self.idle.is_elapsed() {
            let msg = format!(
                "upstream sent nothing for {} ms (read_timeout)",
                self.read_timeout.as_millis()
            );
            return Step::Failed(msg, "upstream_timeout");
        }
        Step::Pending
    }
}

impl ProxyBody {
    /// Ends the body after an upstream failure: an error event for SSE, an aborted
    /// connection otherwise (so the client can tell the body is incomplete).
    fn fail(
        &mut self,
        msg: String,
        code: &str,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        tracing::warn!(code, "{msg}");
        let to_client = match code {
            "upstream_timeout" => "The upstream server is timing out",
            _ => "The upstream connection closed before the response was complete",
        };
        let (dialect, mapped) = match &mut self.kind {
            Kind::Upstream(s) => {
                s.ended = true;
                let mapped = s.mapper.as_mut().and_then(|m| m.fail(code, to_client));
                (s.sse, mapped)
            }
            Kind::Full(_) | Kind::Wrapped(_) => (None, None),
        };
        match dialect {
            Some(d) => {
                let ev = mapped.unwrap_or_else(|| error_event(d, to_client, code));
                self.sent += ev.len() as u64;
                // Complete now so the log records the cause; the next poll ends the body.
                self.complete(Some(msg));
                Poll::Ready(Some(Ok(Frame::data(ev))))
            }
            None => {
                self.complete(Some(msg.clone()));
                Poll::Ready(Some(Err(std::io::Error::other(msg))))
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if self.finish.is_some() {
            let ended = match &self.kind {
                Kind::Full(None) => true,
                Kind::Upstream(s) => s.ended,
                _ => false,
            };
            let msg = (!ended).then(|| {
                "client closed the connection before the response was complete".to_string()
            });
            self.complete(msg);
        }
    }
}

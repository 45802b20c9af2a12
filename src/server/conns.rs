//! Client connection limits, as Kong's nginx sets them: how long a client may take to send
//! its request headers (`client_header_timeout`), how long a connection may sit idle between
//! requests (`keepalive_timeout`), and how many may be open at once — at the cap the
//! connection idle the longest is closed to make room, so a flood of silent connections
//! cannot lock everyone else out. (`client_body_timeout` is applied where bodies are read,
//! `proxy/body.rs`.)

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// Kong's defaults (`client_header_timeout`, `client_body_timeout`, `keepalive_timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The limits every listener applies; `None` turns a timeout off.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accepting a connection to its first complete request head; the TLS handshake
    /// counts. (Later requests are bounded by the keep-alive timeout.)
    pub header_timeout: Option<Duration>,
    /// Longest wait between two reads of a request body.
    pub body_timeout: Option<Duration>,
    /// How long a connection may stay open with no request in flight.
    pub keepalive_timeout: Option<Duration>,
    /// Open client connections, all listeners together; 0 = half the open-file limit.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Some(DEFAULT_TIMEOUT),
            body_timeout: Some(DEFAULT_TIMEOUT),
            keepalive_timeout: Some(DEFAULT_TIMEOUT),
            max_connections: 0,
        }
    }
}

/// The process's soft open-file limit (Linux: `/proc/self/limits`), if it can be read.
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The connection cap for `configured` (0 = half the open-file limit, leaving the other
/// half to upstream connections and files; 512 where the limit cannot be read).
pub fn effective_max(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    open_file_limit().map(|n| (n / 2).max(16)).unwrap_or(512)
}

/// Why a connection was closed by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No complete request head in time (or a stalled TLS handshake).
    HeaderTimeout,
    /// Idle longer than the keep-alive timeout.
    IdleTimeout,
    /// Closed to make room at the connection cap.
    Evicted,
}

/// One open connection as the cap sees it.
pub struct Tracker {
    in_flight: AtomicU32,
    /// Requests started on this connection.
    served: AtomicU64,
    /// When the last request ended (or the connection was accepted), ms since `epoch`.
    idle_since_ms: AtomicU64,
    epoch: Instant,
    /// Told to close at once (the cap needs its slot).
    pub evict: Notify,
}

impl Tracker {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Marks a request as started; it ends when the guard (held by the response body)
    /// is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// How long the connection has had no request in flight (None while one is).
    pub fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.idle_since_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(self.now_ms().saturating_sub(since)))
    }

    /// Whether a request has been seen on this connection yet.
    pub fn served_any(&self) -> bool {
        self.served.load(Ordering::Relaxed) > 0
    }
}

/// A request in flight on its connection.
pub struct InFlight(Arc<Tracker>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let t = &self.0;
        t.idle_since_ms.store(t.now_ms(), Ordering::Release);
        t.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every open client connection of the process.
pub struct Registry {
    open: Mutex<HashMap<u64, Arc<Tracker>>>,
    next: AtomicU64,
    max: usize,
    epoch: Instant,
    last_warned: AtomicU64,
}

impl Registry {
    /// A registry admitting at most `max` connections.
    pub fn new(max: usize) -> Registry {
        Registry {
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            max: max.max(1),
            epoch: Instant::now(),
            last_warned: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Tracker>>> {
        match self.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Admits a new connection, closing the one idle the longest when at the cap; None
    /// when every open connection has a request in flight (the new one is refused).
    pub fn admit(&self) -> Option<(u64, Arc<Tracker>, bool)> {
        let mut open = self.lock();
        let mut evicted = false;
        if open.len() >= self.max {
            if !Self::evict_oldest(&mut open) {
                return None;
            }
            evicted = true;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let t = Arc::new(Tracker {
            in_flight: AtomicU32::new(0),
            served: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            epoch: self.epoch,
            evict: Notify::new(),
        });
        open.insert(id, t.clone());
        Some((id, t, evicted))
    }

    /// Closes the connection idle the longest (out of file descriptors); false if none is.
    pub fn evict_one(&self) -> bool {
        Self::evict_oldest(&mut self.lock())
    }

    fn evict_oldest(open: &mut HashMap<u64, Arc<Tracker>>) -> bool {
        let oldest = open
            .iter()
            .filter_map(|(id, t)| t.idle_for().map(|d| (d, *id)))
            .max()
            .map(|(_, id)| id);
        match oldest.and_then(|id| open.remove(&id)) {
            Some(t) => {
                // notify_one keeps the permit if the connection's task is not waiting yet.
                t.evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// Forgets a closed connection.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// True at most once a second: the cap's warnings must not flood the log in a flood.
    pub fn should_warn(&self) -> bool {
        let now = self.epoch.elapsed().as_secs() + 1;
        let last = self.last_warned.load(Ordering::Relaxed);
        now > last
            && self
                .last_warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A response body that keeps its request counted as in flight until it is done.
pub struct Tracked<B> {
    inner: B,
    _guard: InFlight,
}

impl<B> Tracked<B> {
    /// Wraps `inner`, holding `guard` until the body is dropped.
    pub fn new(inner: B, guard: InFlight) -> Self {
        Tracked {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_goes_first_and_busy_ones_stay() {
        let r = Registry::new(2);
        let (a, ta, _) = r.admit().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let (_b, tb, _) = r.admit().unwrap();
        let busy = tb.begin();
        let (_c, _tc, evicted) = r.admit().unwrap();
        assert!(evicted);
        assert!(!r.lock().contains_key(&a), "the idle one was closed");
        assert!(ta.evict.notified().now_or_never_ready());
        // Now b is busy and c idle: c goes next; with both busy, the newcomer is refused.
        let _busy_c = _tc.begin();
        assert!(r.admit().is_none());
        drop(busy);
        assert!(r.admit().is_some());
    }

    trait Ready {
        fn now_or_never_ready(self) -> bool;
    }
    impl<F: std::future::Future> Ready for F {
        fn now_or_never_ready(self) -> bool {
            use futures_util::FutureExt;
            self.now_or_never().is_some()
        }
    }

    #[test]
    fn max_defaults_to_half_the_file_limit() {
        assert_eq!(effective_max(7), 7);
        if let Some(n) = open_file_limit() {
            assert_eq!(effective_max(0), (n / 2).max(16));
        }
    }
}

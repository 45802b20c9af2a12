//! The compiled gateway: a config's [`Snapshot`] (entities, router, plugin chains) and the
//! state a running node shares across requests and config swaps.

pub mod conversations;
pub mod load;
pub mod router;
pub mod snapshot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::net::upstream::Upstreams;

use self::conversations::Conversations;
use crate::rt::clock::millis_since_epoch;

pub use load::{load_file, load_str, load_str_env, validate_str};
pub use snapshot::Snapshot;

/// Body limit for routes without ai-proxy that still need the body (request-transformer,
/// plain proxying; Kong buffers request bodies by default too).
pub const DEFAULT_BODY_LIMIT: u64 = 16 << 20;

/// Kong's `client_body_timeout` default: the longest wait between two body reads.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Connection and request counters for `/status`.
#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    /// Requests received, counted per worker.
    pub total_requests: crate::rt::worker::Counter,
    /// Requests a quota refused.
    pub quota_rejections: AtomicU64,
    /// Times the quota counter store (Redis) could not be used.
    pub quota_store_errors: AtomicU64,
    /// Connections closed before a complete request head (or TLS handshake) in time.
    pub header_timeouts: AtomicU64,
    /// Request bodies cut for stalling between two reads (408).
    pub body_timeouts: AtomicU64,
    /// Connections closed after idling past the keep-alive timeout.
    pub idle_timeouts: AtomicU64,
    /// Idle connections closed to make room at the connection cap.
    pub evicted: AtomicU64,
    /// New connections refused at the cap (every open one had a request in flight).
    pub refused: AtomicU64,
    /// Connections each proxy worker accepted (index: `rt::worker::id`), sized at start.
    pub worker_accepted: std::sync::OnceLock<Box<[AtomicU64]>>,
}

impl Stats {
    /// True when the current thread's worker has accepted `ACCEPTED_AHEAD` connections more
    /// than the worker that accepted fewest (never with one worker).
    pub fn accepted_ahead(&self) -> bool {
        /// How far ahead a worker may run before it leaves new connections to the others.
        const ACCEPTED_AHEAD: u64 = 2;
        let Some(w) = self.worker_accepted.get().filter(|w| w.len() > 1) else {
            return false;
        };
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mine = w.get(usize::from(crate::rt::worker::id())).map_or(0, n);
        let least = w.iter().map(n).min().unwrap_or(0);
        mine >= least + ACCEPTED_AHEAD
    }

    /// Counts a connection accepted by the current thread's proxy worker.
    pub fn count_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let worker = usize::from(crate::rt::worker::id());
        if let Some(n) = self.worker_accepted.get().and_then(|w| w.get(worker)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The outcome of the last config reload (`--watch`, SIGHUP), for `/status` and metrics.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    /// Reloads that failed since start.
    pub failures: AtomicU64,
    /// The last attempt, if any.
    pub last: std::sync::Mutex<Option<LastReload>>,
}

/// One reload attempt.
#[derive(Debug, Clone)]
pub struct LastReload {
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The file read.
    pub file: String,
    /// Why it failed (the config errors as logged: field paths and messages, never
    /// values of secrets); empty when it succeeded.
    pub errors: Vec<String>,
}

impl ReloadStatus {
    /// Records an attempt; `errors` empty = it succeeded.
    pub fn record(&self, file: &str, errors: Vec<String>) {
        if !errors.is_empty() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let last = LastReload {
            at_ms: millis_since_epoch(),
            file: file.to_string(),
            errors,
        };
        match self.last.lock() {
            Ok(mut g) => *g = Some(last),
            Err(p) => *p.into_inner() = Some(last),
        }
    }

    /// The last attempt.
    pub fn last(&self) -> Option<LastReload> {
        match self.last.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Shared state of a running gateway.
pub struct Gateway {
    /// The running config; shared with the TLS listener's certificate resolver.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub upstreams: Upstreams,
    pub stats: Stats,
    pub node_id: String,
    /// Conversations behind `previous_response_id` on bridged Responses routes.
    pub conversations: Arc<Conversations>,
    /// This node's quota counters (`policy: local`); they outlive config reloads.
    pub quota: Arc<crate::quota::local::Local>,
    /// Usage analytics (set once at start; none = off).
    pub analytics: std::sync::OnceLock<Arc<crate::observe::analytics::Analytics>>,
    /// Longest wait between two reads of a request body, in ms (`--client-body-timeout`).
    pub body_timeout_ms: AtomicU64,
    /// How the last config reload went.
    pub reload: ReloadStatus,
    /// Batches whose usage was recorded (a finished batch reports it on every retrieve).
    pub batches_recorded: crate::observe::first_seen::FirstSeen,
    /// The proxy's listening addresses and whether each speaks TLS (set once bound).
    pub proxy_listeners: std::sync::OnceLock<Vec<(std::net::SocketAddr, bool)>>,
}

impl Gateway {
    /// A gateway serving `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Gateway {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            upstreams: Upstreams::new(),
            stats: Stats::default(),
            node_id: uuid::Uuid::new_v4().to_string(),
            conversations: Arc::new(Conversations::default()),
            quota: Arc::default(),
            analytics: std::sync::OnceLock::new(),
            body_timeout_ms: AtomicU64::new(DEFAULT_BODY_TIMEOUT.as_millis() as u64),
            reload: ReloadStatus::default(),
            batches_recorded: Default::default(),
            proxy_listeners: std::sync::OnceLock::new(),
        }
    }
}

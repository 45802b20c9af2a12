//! What the gateway tells operators: the per-request log record and its sinks.

pub mod analytics;
pub mod captured;
pub mod file_log;
pub mod first_seen;
pub mod http_log;
mod json_out;
pub mod log;
pub mod mcp_log;
pub mod metrics;
pub mod otel;
pub mod otlp_proto;

/// How long a log writer sleeps between looks at its queue. Waking per record would cost
/// the proxy a context switch per request, so writers poll; while records arrive, every
/// 10 ms: at 20k requests/s that is ~200 records (~600 KiB), still in the core's cache when
/// formatted and freed, where 50-100 ms piled up megabytes and made each a cache miss twice.
/// Much shorter turns cost more per record (each turn's wake-up, write and step-aside: at
/// 2 ms the writers' CPU per request at c=1 nearly doubled). An idle writer backs off to
/// `IDLE`.
pub(crate) struct Pace {
    idle_turns: u32,
}

impl Pace {
    /// The pause while records arrive.
    pub const BUSY: std::time::Duration = std::time::Duration::from_millis(10);
    /// The pause once none came for a while.
    pub const IDLE: std::time::Duration = std::time::Duration::from_millis(50);

    /// A pace that starts idle.
    pub fn new() -> Pace {
        Pace {
            idle_turns: u32::MAX,
        }
    }

    /// Sleeps before the next look; `took` is how many records the last look found.
    pub fn sleep(&mut self, took: usize) {
        self.idle_turns = if took > 0 {
            0
        } else {
            self.idle_turns.saturating_add(1)
        };
        std::thread::sleep(self.pause());
    }

    /// The pause after the looks so far: short until ten in a row found nothing.
    fn pause(&self) -> std::time::Duration {
        if self.idle_turns < 10 {
            Self::BUSY
        } else {
            Self::IDLE
        }
    }
}

/// Moves what waits in a writer's queue into `into`; true once every sender is gone.
/// The writers sleep between calls rather than block on their queue, so the request path
/// never pays for waking one.
pub(crate) fn take_queued<T>(rx: &std::sync::mpsc::Receiver<T>, into: &mut Vec<T>) -> bool {
    loop {
        match rx.try_recv() {
            Ok(m) => into.push(m),
            Err(std::sync::mpsc::TryRecvError::Empty) => return false,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return true,
        }
    }
}

/// Puts a flush request (`flush`, built around its reply channel) in a writer's queue and
/// waits for the answer, up to `limit` in all; false when the writer did not answer in
/// time. A full queue is retried: the writer is draining it.
pub(crate) fn flush_queue<M>(
    tx: &std::sync::mpsc::SyncSender<M>,
    flush: impl FnOnce(std::sync::mpsc::SyncSender<()>) -> M,
    limit: std::time::Duration,
) -> bool {
    use std::sync::mpsc::TrySendError;
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    let deadline = std::time::Instant::now() + limit;
    let mut msg = flush(done_tx);
    loop {
        match tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(_) => return false,
        }
    }
    done_rx
        .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        .is_ok()
}

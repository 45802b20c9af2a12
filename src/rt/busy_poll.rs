//! Adaptive busy polling: right after request activity the worker keeps polling for
//! readiness instead of sleeping, for a bounded time.
//!
//! On a virtual machine an idle core takes tens of microseconds to wake up, and a proxied
//! request crosses two of those wake-ups on the gateway's core (request in, upstream
//! answer in). Polling for a short while after activity removes them while traffic flows,
//! and costs nothing once the gateway is idle (the poller then sleeps like everything
//! else). This is the idea of Linux's `busy_poll`, done in user space because loopback and
//! most virtual NICs do not support the kernel's.
//!
//! Background threads that share the core (the log and analytics writers) hold a
//! [`StepAside`] while they work: the poller then stops spinning, so the proxy's thread
//! sleeps in `epoll_wait` between events and the writers get the idle time in between,
//! and they yield after each `TURN` of work. Without both, a writer that the scheduler
//! picks keeps the core for a whole time slice while requests wait: the bench's c=1 p99
//! went from about 0.25 ms to 2–3 ms with file-log or analytics on.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::worker::Padded;

/// Shared activity clock: the last time anything happened, and a wake-up for the poller.
pub struct Activity {
    epoch: Instant,
    last_ns: AtomicU64,
    notify: Notify,
    /// Turns this poller has spun (each one non-blocking readiness check); for tests.
    /// Kept per worker: two spinning workers adding to one count would move its cache line
    /// between their cores on every turn.
    turns: AtomicU64,
}

thread_local! {
    /// This thread's clock: each proxy worker is a thread with its own runtime and
    /// poller, woken by the requests it serves.
    static ACTIVITY: Arc<Activity> = Arc::new(Activity {
        epoch: Instant::now(),
        last_ns: AtomicU64::new(0),
        notify: Notify::new(),
        turns: AtomicU64::new(0),
    });
}

/// How long a worker has been without activity before its poll offers the core to other
/// threads on each turn.
const YIELD_AFTER_NS: u64 = 10_000;

/// Background threads at work right now (see [`StepAside`]). Read on every turn of every
/// worker's poller, so on cache lines of its own: nothing written often shares them.
static STEPPED_ASIDE: Padded<AtomicUsize> = Padded(AtomicUsize::new(0));

/// Pollers that stopped spinning for a background thread while their worker was active,
/// woken when the last one is done.
static INTERRUPTED: Mutex<Vec<Arc<Activity>>> = Mutex::new(Vec::new());

/// Pollers woken again by the last [`StepAside`] to go; for tests.
static RESUMED: AtomicU64 = AtomicU64::new(0);

/// The longest a background thread works before offering the core to the proxy's thread.
/// Not shorter: at 50 µs the c=1 p99 with everything on improved (405 -> 333 µs), but
/// under saturation each yield costs the writer a whole scheduler slice, and analytics fell
/// behind and dropped 40 % of its rows (25 s at c=64).
const TURN: Duration = Duration::from_micros(200);

/// While alive, the poller does not spin: held by a background thread while it works.
///
/// Once the scheduler has picked a thread it keeps it for a whole time slice (about a
/// millisecond) unless the thread gives the core up: the holder calls [`StepAside::tick`]
/// after each small piece of work, and once a turn has passed it yields, so a request that
/// arrived meanwhile waits for at most about a turn, not for the whole batch.
pub struct StepAside {
    turn_started: Instant,
}

impl StepAside {
    /// Asks the poller to stop spinning until the returned guard is dropped.
    pub fn new() -> Self {
        STEPPED_ASIDE.fetch_add(1, Ordering::SeqCst);
        StepAside {
            turn_started: Instant::now(),
        }
    }

    /// Marks the end of a piece of work; at the end of a turn lets a waiting thread run.
    pub fn tick(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.turn_started) >= TURN {
            std::thread::yield_now();
            self.turn_started = Instant::now();
        }
    }
}

impl Default for StepAside {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StepAside {
    fn drop(&mut self) {
        if STEPPED_ASIDE.fetch_sub(1, Ordering::SeqCst) == 1 {
            let stopped = std::mem::take(&mut *lock_interrupted());
            for a in stopped {
                RESUMED.fetch_add(1, Ordering::Relaxed);
                a.notify.notify_one();
            }
        }
    }
}

fn lock_interrupted() -> std::sync::MutexGuard<'static, Vec<Arc<Activity>>> {
    INTERRUPTED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// True when the poller must stop for a background thread: it is then on the list the last
/// one to finish wakes (it registers before looking again, so a thread finishing between
/// the two looks cannot miss it).
fn stepped_aside(a: &Arc<Activity>) -> bool {
    if STEPPED_ASIDE.load(Ordering::SeqCst) == 0 {
        return false;
    }
    lock_interrupted().push(a.clone());
    STEPPED_ASIDE.load(Ordering::SeqCst) > 0
}

/// Records request activity (cheap: a clock read and two atomics).
pub fn touch() {
    ACTIVITY.with(|a| {
        let now = a.epoch.elapsed().as_nanos() as u64;
        a.last_ns.store(now, Ordering::Relaxed);
        a.notify.notify_one();
    });
}

/// Runs the poller on the current runtime until the runtime stops, woken by the requests
/// of the calling thread (the runtime's one thread: pollers are for single-threaded
/// runtimes). `budget` is how long after the last activity it keeps polling; zero
/// disables it.
pub fn spawn(budget: Duration) {
    if budget.is_zero() {
        return;
    }
    let a = ACTIVITY.with(Arc::clone);
    let budget_ns = budget.as_nanos() as u64;
    tokio::spawn(async move {
        loop {
            a.notify.notified().await;
            loop {
                let now = a.epoch.elapsed().as_nanos() as u64;
                let idle = now.saturating_sub(a.last_ns.load(Ordering::Relaxed));
                if idle > budget_ns || stepped_aside(&a) {
                    break;
                }
                a.turns.fetch_add(1, Ordering::Relaxed);
                // The core may be shared (the load, the upstream, another worker): once
                // the worker has had nothing to do for a moment, a thread waiting for the
                // core runs now rather than at the end of this one's time slice, so the
                // spinning takes only time nobody else wants. Not on every turn: a busy
                // worker's turns between its requests need no syscall.
                if idle > YIELD_AFTER_NS {
                    std::thread::yield_now();
                }
                // Deferred until the scheduler has polled the I/O driver without blocking,
                // so each turn of this loop is one non-blocking readiness check.
                tokio::task::yield_now().await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Turns this thread's poller has spun so far.
    fn turns() -> u64 {
        ACTIVITY.with(|a| a.turns.load(Ordering::Relaxed))
    }

    /// Turns spun while `touch` is called every millisecond for 30 ms.
    async fn turns_while_active() -> u64 {
        let before = turns();
        for _ in 0..30 {
            touch();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        turns() - before
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_poller_spins_after_activity_and_not_while_a_writer_steps_aside() {
        spawn(Duration::from_secs(5));
        assert!(
            turns_while_active().await > 30,
            "the poller spins after activity"
        );
        let aside = StepAside::new();
        let aside_turns = turns_while_active().await;
        // One turn per wake-up at most: it sees the writer and goes back to sleep.
        assert!(
            aside_turns <= 31,
            "the poller spun {aside_turns} turns while stepped aside"
        );
        drop(aside);
        assert!(
            turns_while_active().await > 30,
            "it spins again once the writer is done"
        );
        // Stopped by a writer while active, it spins again as soon as the writer is done,
        // without waiting for the next request.
        let aside = StepAside::new();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let (resumed, before) = (RESUMED.load(Ordering::Relaxed), turns());
        drop(aside);
        // Other tests' writers may hold the core a while longer: the poller resumes once
        // the last of them is done.
        for _ in 0..500 {
            if turns() - before > 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(
            RESUMED.load(Ordering::Relaxed) > resumed,
            "the writer woke the poller"
        );
        let spun = turns() - before;
        assert!(
            spun > 2,
            "the poller spun {spun} turns after the writer was done"
        );
    }
}

//! Adaptive busy polling: right after request activity the worker keeps polling for
//! readiness instead of sleeping, for a bounded time.
//!
//! On a virtual machine an idle core takes tens of microseconds to wake up, and a proxied
//! request crosses two of those wake-ups on the gateway's core (request in, upstream
//! answer in). Polling for a short while after activity removes them while traffic flows,
//! and costs nothing once the gateway is idle (the poller then sleeps like everything
//! else). This is the idea of Linux's `busy_poll`, done in user space because loopback and
//! most virtual NICs do not support the kernel's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Shared activity clock: the last time anything happened, and a wake-up for the poller.
pub struct Activity {
    epoch: Instant,
    last_ns: AtomicU64,
    notify: Notify,
}

fn global() -> &'static Arc<Activity> {
    static A: OnceLock<Arc<Activity>> = OnceLock::new();
    A.get_or_init(|| {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ns: AtomicU64::new(0),
            notify: Notify::new(),
        })
    })
}

/// Records request activity (cheap: a clock read and two atomics).
pub fn touch() {
    let a = global();
    let now = a.epoch.elapsed().as_nanos() as u64;
    a.last_ns.store(now, Ordering::Relaxed);
    a.notify.notify_one();
}

/// Runs the poller on the current runtime until the runtime stops. `budget` is how long
/// after the last activity it keeps polling; zero disables it.
pub fn spawn(budget: Duration) {
    if budget.is_zero() {
        return;
    }
    let a = global().clone();
    let budget_ns = budget.as_nanos() as u64;
    tokio::spawn(async move {
        loop {
            a.notify.notified().await;
            loop {
                let now = a.epoch.elapsed().as_nanos() as u64;
                if now.saturating_sub(a.last_ns.load(Ordering::Relaxed)) > budget_ns {
                    break;
                }
                // Deferred until the scheduler has polled the I/O driver without blocking,
                // so each turn of this loop is one non-blocking readiness check.
                tokio::task::yield_now().await;
            }
        }
    });
}

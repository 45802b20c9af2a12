//! Per-target state the balancer learns from answers: the circuit breaker (`max_fails`,
//! `fail_timeout`), requests in flight, a peak-EWMA of latency and accumulated usage.
//! Lock-free on the read side: atomics only, so `pick` stays in the nanoseconds.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How fast an old latency observation loses weight (Finagle's peak-EWMA uses ~10 s).
const DECAY: Duration = Duration::from_secs(10);

/// One target's learned state. Times are microseconds since the balancer's epoch.
#[derive(Debug, Default)]
pub struct TargetState {
    /// Failures counted by the breaker since the last reset.
    fails: AtomicU32,
    /// When the last failure happened (µs since epoch + 1; 0 = never).
    last_fail: AtomicU64,
    /// Until when the target is skipped (µs since epoch; 0 = healthy).
    down_until: AtomicU64,
    /// Requests sent and not yet finished.
    pub in_flight: AtomicU32,
    /// Peak-EWMA of the latency metric, as f64 bits (0 = no observation yet).
    ewma: AtomicU64,
    /// When `ewma` was last updated (µs since epoch).
    ewma_at: AtomicU64,
    /// Accumulated usage (tokens, or cost in millionths of the cost unit).
    pub usage: AtomicU64,
    /// The active health check took the target out (`balancer.healthchecks.active`).
    probe_down: std::sync::atomic::AtomicBool,
}

/// The breaker's settings.
#[derive(Debug, Clone, Copy)]
pub struct Breaker {
    /// 0 = off.
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

impl TargetState {
    /// Whether the active health check lets requests through.
    pub fn probe_healthy(&self) -> bool {
        !self.probe_down.load(Ordering::Relaxed)
    }

    /// Records the active health check's verdict.
    pub fn set_probe_healthy(&self, healthy: bool) {
        self.probe_down.store(!healthy, Ordering::Relaxed);
    }

    /// Whether the breaker lets requests through at `now` (after `fail_timeout` a downed
    /// target is tried again: one success restores it, one failure keeps it out).
    pub fn healthy(&self, now_us: u64) -> bool {
        let until = self.down_until.load(Ordering::Relaxed);
        until == 0 || now_us >= until
    }

    /// Counts a failure; at `max_fails` the target goes down for `fail_timeout`.
    pub fn failed(&self, b: &Breaker, now_us: u64) {
        if b.max_fails == 0 {
            return;
        }
        let n = self.fails.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        self.last_fail.store(now_us + 1, Ordering::Relaxed);
        if n >= b.max_fails {
            let timeout = u64::try_from(b.fail_timeout.as_micros()).unwrap_or(u64::MAX);
            self.down_until
                .store(now_us.saturating_add(timeout), Ordering::Relaxed);
        }
    }

    /// A success: the count resets once `fail_timeout` has passed since the last failure
    /// (Kong counts failures in total, not consecutively), and a downed target is restored.
    pub fn succeeded(&self, b: &Breaker, now_us: u64) {
        if b.max_fails == 0 {
            return;
        }
        let last = self.last_fail.load(Ordering::Relaxed);
        if last == 0 {
            return;
        }
        let since = now_us.saturating_sub(last - 1);
        if u128::from(since) >= b.fail_timeout.as_micros() {
            self.fails.store(0, Ordering::Relaxed);
            self.last_fail.store(0, Ordering::Relaxed);
        }
        self.down_until.store(0, Ordering::Relaxed);
    }

    /// Folds one latency observation into the peak-EWMA: a slower sample takes over at
    /// once (peak), a faster one pulls the average down with a weight that grows with the
    /// time since the last update.
    pub fn observe_latency(&self, sample: f64, now_us: u64) {
        if !sample.is_finite() || sample < 0.0 {
            return;
        }
        let old = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let at = self.ewma_at.swap(now_us, Ordering::Relaxed);
        let new = if old == 0.0 || sample > old {
            sample
        } else {
            let dt = now_us.saturating_sub(at) as f64 / 1e6;
            let w = (-dt / DECAY.as_secs_f64()).exp();
            old * w + sample * (1.0 - w)
        };
        self.ewma
            .store(new.max(f64::MIN_POSITIVE).to_bits(), Ordering::Relaxed);
    }

    /// The latency score at `now`: the EWMA decays towards zero while nothing is observed,
    /// so a target that was slow once is probed again after a while; 0 = never observed.
    pub fn latency(&self, now_us: u64) -> f64 {
        let v = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        if v == 0.0 {
            return 0.0;
        }
        let dt = now_us.saturating_sub(self.ewma_at.load(Ordering::Relaxed)) as f64 / 1e6;
        v * (-dt / (DECAY.as_secs_f64() * 6.0)).exp()
    }
}

/// Microseconds since `epoch` (the balancer's creation).
pub fn micros_since(epoch: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(epoch).as_micros() as u64
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_at_max_fails_and_closes_on_success_after_the_timeout() {
        let b = Breaker {
            max_fails: 2,
            fail_timeout: Duration::from_millis(100),
        };
        let t = TargetState::default();
        t.failed(&b, 1_000);
        assert!(t.healthy(1_001), "one failure of two");
        t.failed(&b, 2_000);
        assert!(!t.healthy(2_001));
        assert!(!t.healthy(101_999));
        assert!(t.healthy(102_000), "tried again after fail_timeout");
        // Failing again on the retry keeps it out.
        t.failed(&b, 102_500);
        assert!(!t.healthy(150_000));
        // A success after the timeout restores it and resets the count.
        t.succeeded(&b, 250_000);
        assert!(t.healthy(250_001));
        t.failed(&b, 250_002);
        assert!(t.healthy(250_003), "count was reset");
    }

    #[test]
    fn breaker_off_never_downs() {
        let b = Breaker {
            max_fails: 0,
            fail_timeout: Duration::from_secs(10),
        };
        let t = TargetState::default();
        for i in 0..100 {
            t.failed(&b, i);
        }
        assert!(t.healthy(100));
    }

    #[test]
    fn peak_ewma_takes_peaks_and_decays() {
        let t = TargetState::default();
        t.observe_latency(100.0, 0);
        assert_eq!(t.latency(0), 100.0);
        t.observe_latency(500.0, 1_000);
        assert_eq!(t.latency(1_000), 500.0, "a peak takes over at once");
        t.observe_latency(100.0, 1_000 + 10_000_000);
        let after = t.latency(1_000 + 10_000_000);
        assert!(after < 500.0 && after > 100.0, "{after}");
        // Unobserved for minutes: the score decays so the target gets probed again.
        assert!(t.latency(1_000 + 10_000_000 + 300_000_000) < after / 10.0);
    }
}

//! Quota counters for `rate-limiting` and `ai-rate-limiting-advanced`: fixed or sliding
//! windows, kept in memory (one node) or in Redis (shared by every node, updated by one
//! atomic script per request, or synced in batches every `sync_rate` seconds).
//!
//! A sliding window is estimated as Kong does: the current window's count plus the
//! previous window's, weighted by how much of it still overlaps the last `window` seconds.

pub mod local;
pub mod redis;
pub mod synced;

use std::sync::Arc;

/// One counter to check or charge: its key (without the window) and limit.
#[derive(Debug, Clone)]
pub struct Slot {
    pub key: String,
    pub limit: f64,
    /// Window length in seconds (at least 1).
    pub window: u64,
    pub sliding: bool,
}

/// What an operation does with `amount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse when any slot has no room for `amount`; otherwise add it to every slot.
    CheckAndAdd,
    /// Refuse when any slot has no room for `amount`; add nothing.
    Check,
    /// Add `amount` to every slot, whatever the limits.
    Add,
}

/// A slot's state after an operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Used in the window (the sliding estimate for sliding windows), after the operation.
    pub used: f64,
    pub limit: f64,
    pub window: u64,
    /// Seconds until the current window ends.
    pub reset: u64,
    /// Seconds until `amount` would fit (0 when it fits now).
    pub retry_after: u64,
    /// The part of `used` reserved by requests still in flight.
    pub held: f64,
}

impl Reading {
    /// This reading with `held` of its usage reserved by requests in flight: when only
    /// they stand in the way of `amount`, room comes back as soon as they finish (their
    /// real usage is rarely all they reserved), so the wait is a second, not the window.
    pub fn with_held(mut self, held: f64, amount: f64) -> Reading {
        self.held = held.max(0.0);
        if self.retry_after > 0 && !refuses(self.used - self.held, amount, self.limit) {
            self.retry_after = 1;
        }
        self
    }

    /// What is left of the limit (never negative).
    pub fn remaining(&self) -> f64 {
        (self.limit - self.used).max(0.0)
    }
}

/// The result of one operation over a set of slots.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub allowed: bool,
    pub readings: Vec<Reading>,
}

/// `v[i]`, or `v`'s only value for every slot.
pub fn at(v: &[f64], i: usize) -> f64 {
    v.get(i).or_else(|| v.last()).copied().unwrap_or(0.0)
}

/// What an operation adds to each slot (see [`at`]).
#[derive(Debug, Clone, Copy)]
pub struct Adds<'a> {
    /// Added to the window's count.
    pub total: &'a [f64],
    /// The part of `total` that is a reservation of a request in flight.
    pub held: &'a [f64],
}

/// Settling one slot of a reservation: the real usage to charge to the current window, and
/// the reserved amount to give back to the window it was taken from (if still counted).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settlement {
    pub real: f64,
    pub reserved: f64,
    /// Start (ms) of the window the reservation was added to.
    pub reserved_at: u64,
}

/// Where counters live.
#[derive(Debug, Clone)]
pub enum Counters {
    Local(Arc<local::Local>),
    Redis(Arc<redis::RedisCounters>),
    /// Decided on this node, synced with Redis in batches.
    Synced(Arc<synced::Synced>),
}

/// The counter store could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl Counters {
    /// Applies `amount` to `slots` under `mode`, atomically across the slots.
    pub async fn apply(
        &self,
        slots: &[Slot],
        amount: f64,
        mode: Mode,
        now_ms: u64,
    ) -> Result<Outcome, StoreError> {
        let add = Adds {
            total: &[amount],
            held: &[0.0],
        };
        self.apply_each(slots, &[amount], add, mode, now_ms).await
    }

    /// [`Counters::apply`] with amounts per slot: slot `i` must have room for `need[i]` and
    /// gets `add.total[i]`, of which `add.held[i]` is a reservation given back by
    /// [`Counters::settle`] (a one-element slice applies to every slot).
    pub async fn apply_each(
        &self,
        slots: &[Slot],
        need: &[f64],
        add: Adds<'_>,
        mode: Mode,
        now_ms: u64,
    ) -> Result<Outcome, StoreError> {
        match self {
            Counters::Local(l) => Ok(l.apply_each(slots, need, add, mode, now_ms)),
            Counters::Redis(r) => r.apply_each(slots, need, add, mode, now_ms).await,
            Counters::Synced(s) => s.apply_each(slots, need, add, mode, now_ms).await,
        }
    }

    /// Charges real usage and gives reservations back, slot by slot.
    pub async fn settle(
        &self,
        slots: &[Slot],
        items: &[Settlement],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        match self {
            Counters::Local(l) => {
                l.settle(slots, items, now_ms);
                Ok(())
            }
            Counters::Redis(r) => r.settle(slots, items, now_ms).await,
            Counters::Synced(s) => {
                s.settle(slots, items, now_ms);
                Ok(())
            }
        }
    }
}

/// Start of the window holding `now_ms`.
pub fn window_start(now_ms: u64, window: u64) -> u64 {
    let w = window.max(1) * 1000;
    now_ms - now_ms % w
}

/// The part of the previous window still inside the last `window` seconds (0..=1).
pub fn previous_weight(now_ms: u64, window: u64) -> f64 {
    let w = (window.max(1) * 1000) as f64;
    let elapsed = (now_ms - window_start(now_ms, window)) as f64;
    ((w - elapsed) / w).clamp(0.0, 1.0)
}

/// Whether `amount` does not fit under `limit` with `used` already spent. An exhausted
/// limit refuses even a zero-cost request.
pub fn refuses(used: f64, amount: f64, limit: f64) -> bool {
    used >= limit || used + amount > limit
}

/// The reading for a slot with `cur` in the current window and `prev` in the previous one
/// (after the operation).
pub fn reading(slot: &Slot, cur: f64, prev: f64, amount: f64, now_ms: u64) -> Reading {
    let w_ms = slot.window.max(1) * 1000;
    let start = window_start(now_ms, slot.window);
    let end = start + w_ms;
    let weight = previous_weight(now_ms, slot.window);
    let used = if slot.sliding {
        cur + prev * weight
    } else {
        cur
    };
    let reset = (end - now_ms).div_ceil(1000);
    let need = amount.max(f64::MIN_POSITIVE);
    let retry_after = if !refuses(used, amount, slot.limit) {
        0
    } else if !slot.sliding {
        reset
    } else {
        sliding_wait(slot, cur, prev, need, now_ms)
    };
    Reading {
        used,
        limit: slot.limit,
        window: slot.window,
        reset,
        retry_after,
        held: 0.0,
    }
}

/// Seconds until a sliding window has room for `need`: first the previous window decays
/// within this one, then this window's count decays within the next.
fn sliding_wait(slot: &Slot, cur: f64, prev: f64, need: f64, now_ms: u64) -> u64 {
    let w_ms = (slot.window.max(1) * 1000) as f64;
    let start = window_start(now_ms, slot.window) as f64;
    let now = now_ms as f64;
    let room = slot.limit - need;
    let wait_ms = if room < 0.0 {
        // Never fits: wait for both windows to pass.
        2.0 * w_ms - (now - start)
    } else if cur <= room && prev > 0.0 {
        // prev * (w - e) / w <= room - cur  ⇒  e >= w * (1 - (room - cur) / prev)
        let e = w_ms * (1.0 - (room - cur) / prev);
        (start + e - now).max(0.0)
    } else {
        // Next window: cur * (w - e) / w <= room  ⇒  e >= w * (1 - room / cur)
        let e = if cur > 0.0 {
            w_ms * (1.0 - room / cur)
        } else {
            0.0
        };
        (start + w_ms + e - now).max(0.0)
    };
    ((wait_ms / 1000.0).ceil() as u64).max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn slot(limit: f64, window: u64, sliding: bool) -> Slot {
        Slot {
            key: "k".into(),
            limit,
            window,
            sliding,
        }
    }

    #[test]
    fn windows() {
        assert_eq!(window_start(125_500, 60), 120_000);
        assert!((previous_weight(150_000, 60) - 0.5).abs() < 1e-9);
        let r = reading(&slot(10.0, 60, false), 10.0, 0.0, 1.0, 150_000);
        assert_eq!((r.reset, r.retry_after, r.remaining()), (30, 30, 0.0));
        let r = reading(&slot(10.0, 60, false), 4.0, 0.0, 1.0, 150_000);
        assert_eq!((r.retry_after, r.remaining()), (0, 6.0));
    }

    #[test]
    fn sliding_estimate_and_wait() {
        // Half-way through: 8 of the previous window still count as 4.
        let s = slot(10.0, 60, true);
        let r = reading(&s, 6.0, 8.0, 1.0, 150_000);
        assert!((r.used - 10.0).abs() < 1e-9);
        // 1 more fits once prev*(w-e)/w <= 3, i.e. e >= 37.5 s: 7.5 s from now → 8.
        assert_eq!(r.retry_after, 8);
        // This window alone is full: wait into the next one.
        let r = reading(&s, 10.0, 0.0, 1.0, 150_000);
        assert_eq!(r.retry_after, 30 + 6);
    }
}

//! Counters in this process's memory (`policy: local`, `strategy: local`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{reading, refuses, window_start, Mode, Outcome, Slot};

/// How often expired windows are swept out (ms).
const SWEEP_EVERY_MS: u64 = 10_000;

/// Counts per key: the current window and the one before it (all a sliding estimate
/// needs); a key is dropped once neither can be read any more.
#[derive(Debug, Default)]
pub struct Local {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counts: HashMap<String, Entry>,
    last_sweep: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Start (ms) of the window `cur` counts.
    start: u64,
    cur: f64,
    /// The count of the window before `start`.
    prev: f64,
    /// After this (ms) neither count can be read.
    expires: u64,
    /// The slot's limit and window (s), for listing.
    limit: f64,
    window: u64,
}

impl Entry {
    /// (current, previous) counts as seen from the window starting at `start`.
    fn at(&self, start: u64, w_ms: u64) -> (f64, f64) {
        if self.start == start {
            (self.cur, self.prev)
        } else if self.start + w_ms == start {
            (0.0, self.cur)
        } else {
            (0.0, 0.0)
        }
    }
}

impl Local {
    /// Applies `amount` to `slots` under `mode`; one lock makes it atomic across slots.
    pub fn apply(&self, slots: &[Slot], amount: f64, mode: Mode, now_ms: u64) -> Outcome {
        let mut inner = match self.inner.lock() {
            Ok(g) => g,
            // A panic elsewhere cannot leave the counts half-updated in a harmful way.
            Err(poisoned) => poisoned.into_inner(),
        };
        if now_ms.saturating_sub(inner.last_sweep) > SWEEP_EVERY_MS {
            inner.counts.retain(|_, e| e.expires > now_ms);
            inner.last_sweep = now_ms;
        }
        let mut state: Vec<(f64, f64)> = Vec::with_capacity(slots.len());
        let mut allowed = true;
        for s in slots {
            let start = window_start(now_ms, s.window);
            let w_ms = s.window.max(1) * 1000;
            let (cur, prev) = inner
                .counts
                .get(s.key.as_str())
                .map(|e| e.at(start, w_ms))
                .unwrap_or((0.0, 0.0));
            let prev = if s.sliding { prev } else { 0.0 };
            let used = if s.sliding {
                cur + prev * super::previous_weight(now_ms, s.window)
            } else {
                cur
            };
            if mode != Mode::Add && refuses(used, amount, s.limit) {
                allowed = false;
            }
            state.push((cur, prev));
        }
        let add = match mode {
            Mode::Add => true,
            Mode::CheckAndAdd => allowed,
            Mode::Check => false,
        };
        let mut readings = Vec::with_capacity(slots.len());
        for (s, (cur, prev)) in slots.iter().zip(state) {
            let cur = if add && amount > 0.0 {
                let start = window_start(now_ms, s.window);
                let w_ms = s.window.max(1) * 1000;
                let fresh = Entry {
                    start,
                    cur: cur + amount,
                    prev,
                    expires: start + 2 * w_ms,
                    limit: s.limit,
                    window: s.window,
                };
                match inner.counts.get_mut(s.key.as_str()) {
                    Some(e) => {
                        let (_, p) = e.at(start, w_ms);
                        *e = Entry { prev: p, ..fresh };
                    }
                    None => {
                        inner.counts.insert(s.key.clone(), fresh);
                    }
                }
                cur + amount
            } else {
                cur
            };
            let pending = if add { 0.0 } else { amount };
            readings.push(reading(s, cur, prev, pending, now_ms));
        }
        Outcome { allowed, readings }
    }
}

/// One counter as the Admin API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub key: String,
    pub window: u64,
    pub used: f64,
    pub limit: f64,
}

impl Local {
    /// Every live counter: its key, window, what is used now (sliding windows included
    /// as estimated) and its limit.
    pub fn list(&self, now_ms: u64) -> Vec<Listed> {
        let inner = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut out: Vec<Listed> = inner
            .counts
            .iter()
            .filter(|(_, e)| e.expires > now_ms)
            .map(|(k, e)| {
                let start = window_start(now_ms, e.window);
                let (cur, prev) = e.at(start, e.window.max(1) * 1000);
                let used = if k.starts_with("ai:") {
                    cur + prev * super::previous_weight(now_ms, e.window)
                } else {
                    cur
                };
                Listed {
                    key: k.clone(),
                    window: e.window,
                    used,
                    limit: e.limit,
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn slots() -> Vec<Slot> {
        vec![
            Slot {
                key: "a:s".into(),
                limit: 2.0,
                window: 1,
                sliding: false,
            },
            Slot {
                key: "a:m".into(),
                limit: 3.0,
                window: 60,
                sliding: false,
            },
        ]
    }

    #[test]
    fn refused_requests_are_not_counted() {
        let l = Local::default();
        let s = slots();
        let t = 600_000;
        assert!(l.apply(&s, 1.0, Mode::CheckAndAdd, t).allowed);
        assert!(l.apply(&s, 1.0, Mode::CheckAndAdd, t).allowed);
        let o = l.apply(&s, 1.0, Mode::CheckAndAdd, t);
        assert!(!o.allowed);
        assert_eq!(o.readings[0].retry_after, 1);
        // Next second: the per-second limit has room again, the minute one has 1 left.
        let o = l.apply(&s, 1.0, Mode::CheckAndAdd, t + 1000);
        assert!(o.allowed);
        assert_eq!(o.readings[1].remaining(), 0.0);
        assert!(!l.apply(&s, 1.0, Mode::CheckAndAdd, t + 2000).allowed);
        // A new minute resets it.
        assert!(l.apply(&s, 1.0, Mode::CheckAndAdd, t + 60_000).allowed);
    }

    #[test]
    fn check_then_add_tokens() {
        let l = Local::default();
        let s = vec![Slot {
            key: "t".into(),
            limit: 100.0,
            window: 60,
            sliding: true,
        }];
        let t = 6_000_000;
        assert!(l.apply(&s, 40.0, Mode::Check, t).allowed);
        l.apply(&s, 90.0, Mode::Add, t);
        let o = l.apply(&s, 20.0, Mode::Check, t);
        assert!(!o.allowed);
        assert_eq!(o.readings[0].used, 90.0);
        // Half of the next window later, half of the 90 still counts.
        let o = l.apply(&s, 20.0, Mode::Check, t + 90_000);
        assert!(o.allowed);
        assert!((o.readings[0].used - 45.0).abs() < 1e-6);
    }
}

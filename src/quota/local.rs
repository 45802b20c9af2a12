//! Counters in this process's memory (`policy: local`, `strategy: local`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{at, reading, refuses, window_start, Adds, Mode, Outcome, Settlement, Slot};

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
    /// Reservations of requests in flight, part of the counts.
    held: f64,
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
        let add = Adds {
            total: &[amount],
            held: &[0.0],
        };
        self.apply_each(slots, &[amount], add, mode, now_ms)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            // A panic elsewhere cannot leave the counts half-updated in a harmful way.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Slot `i` must have room for `need[i]` and gets `add.total[i]` (see [`at`]); one
    /// lock makes it atomic across slots.
    pub fn apply_each(
        &self,
        slots: &[Slot],
        need: &[f64],
        add: Adds<'_>,
        mode: Mode,
        now_ms: u64,
    ) -> Outcome {
        let mut inner = self.lock();
        if now_ms.saturating_sub(inner.last_sweep) > SWEEP_EVERY_MS {
            inner.counts.retain(|_, e| e.expires > now_ms);
            inner.last_sweep = now_ms;
        }
        let mut state: Vec<(f64, f64, f64)> = Vec::with_capacity(slots.len());
        let mut allowed = true;
        for (i, s) in slots.iter().enumerate() {
            let start = window_start(now_ms, s.window);
            let w_ms = s.window.max(1) * 1000;
            let (cur, prev, held) = inner
                .counts
                .get(s.key.as_str())
                .map(|e| {
                    let (c, p) = e.at(start, w_ms);
                    (c, p, e.held)
                })
                .unwrap_or((0.0, 0.0, 0.0));
            let prev = if s.sliding { prev } else { 0.0 };
            let used = if s.sliding {
                cur + prev * super::previous_weight(now_ms, s.window)
            } else {
                cur
            };
            if mode != Mode::Add && refuses(used, at(need, i), s.limit) {
                allowed = false;
            }
            state.push((cur, prev, held));
        }
        let added = match mode {
            Mode::Add => true,
            Mode::CheckAndAdd => allowed,
            Mode::Check => false,
        };
        let mut readings = Vec::with_capacity(slots.len());
        for (i, (s, (cur, prev, held))) in slots.iter().zip(state).enumerate() {
            let amount = at(add.total, i);
            let (cur, held) = if added && amount > 0.0 {
                let h = at(add.held, i);
                inner.add(s, amount, h, now_ms);
                (cur + amount, held + h)
            } else {
                (cur, held)
            };
            let pending = if added { 0.0 } else { at(need, i) };
            readings.push(reading(s, cur, prev, pending, now_ms).with_held(held, pending));
        }
        Outcome { allowed, readings }
    }

    /// Charges each slot's real usage to its current window and takes its reservation back
    /// from the window it was added to, if that window still counts.
    pub fn settle(&self, slots: &[Slot], items: &[Settlement], now_ms: u64) {
        let mut inner = self.lock();
        for (s, it) in slots.iter().zip(items) {
            let w_ms = s.window.max(1) * 1000;
            if it.reserved > 0.0 {
                if let Some(e) = inner.counts.get_mut(s.key.as_str()) {
                    e.held = (e.held - it.reserved).max(0.0);
                    if e.start == it.reserved_at {
                        e.cur = (e.cur - it.reserved).max(0.0);
                    } else if e.start == it.reserved_at + w_ms {
                        e.prev = (e.prev - it.reserved).max(0.0);
                    }
                }
            }
            if it.real > 0.0 {
                inner.add(s, it.real, 0.0, now_ms);
            }
        }
    }
}

impl Local {
    /// Sets the counts of `slot`'s window holding `now_ms` and of the one before it
    /// (keeping the reservations in flight): a synced view learning the shared totals.
    pub fn set(&self, slot: &Slot, now_ms: u64, cur: f64, prev: f64) {
        let start = window_start(now_ms, slot.window);
        let w_ms = slot.window.max(1) * 1000;
        let mut inner = self.lock();
        let held = inner.counts.get(slot.key.as_str()).map_or(0.0, |e| e.held);
        inner.counts.insert(
            slot.key.clone(),
            Entry {
                start,
                cur: cur.max(0.0),
                prev: prev.max(0.0),
                expires: start + 2 * w_ms,
                limit: slot.limit,
                window: slot.window,
                held,
            },
        );
    }
}

impl Inner {
    /// Adds `amount` (`held` of it reserved) to the window of `s` holding `now_ms`, rolling
    /// the entry forward.
    fn add(&mut self, s: &Slot, amount: f64, held: f64, now_ms: u64) {
        let start = window_start(now_ms, s.window);
        let w_ms = s.window.max(1) * 1000;
        match self.counts.get_mut(s.key.as_str()) {
            Some(e) => {
                let (cur, prev) = e.at(start, w_ms);
                *e = Entry {
                    start,
                    cur: cur + amount,
                    prev,
                    expires: start + 2 * w_ms,
                    limit: s.limit,
                    window: s.window,
                    held: e.held + held,
                };
            }
            None => {
                self.counts.insert(
                    s.key.clone(),
                    Entry {
                        start,
                        cur: amount,
                        prev: 0.0,
                        expires: start + 2 * w_ms,
                        limit: s.limit,
                        window: s.window,
                        held,
                    },
                );
            }
        }
    }
}

/// One counter as the Admin API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub key: String,
    pub window: u64,
    pub used: f64,
    pub limit: f64,
    /// The current and the previous window's counts (a sliding window weighs the latter).
    pub cur: f64,
    pub prev: f64,
}

impl Local {
    /// Every live counter: its key, window, what is used now (sliding windows included
    /// as estimated) and its limit.
    pub fn list(&self, now_ms: u64) -> Vec<Listed> {
        let inner = self.lock();
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
                    cur,
                    prev,
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
    fn reservations_settle_to_real_usage_in_their_own_window() {
        let l = Local::default();
        let s = vec![Slot {
            key: "r".into(),
            limit: 100.0,
            window: 60,
            sliding: false,
        }];
        let t = 6_000_000;
        // Needs 10 of room, holds 60.
        let hold = Adds {
            total: &[60.0],
            held: &[60.0],
        };
        let o = l.apply_each(&s, &[10.0], hold, Mode::CheckAndAdd, t);
        assert!(o.allowed);
        assert_eq!(o.readings[0].remaining(), 40.0);
        assert!(
            l.apply_each(&s, &[10.0], hold, Mode::CheckAndAdd, t)
                .allowed
        );
        // 120 held: nothing more fits until one settles, which may be any moment.
        let o = l.apply_each(&s, &[10.0], hold, Mode::CheckAndAdd, t);
        assert!(!o.allowed);
        assert_eq!((o.readings[0].held, o.readings[0].retry_after), (120.0, 1));
        let settle = |real, at| Settlement {
            real,
            reserved: 60.0,
            reserved_at: at,
        };
        l.settle(&s, &[settle(25.0, t)], t + 1);
        assert_eq!(l.list(t + 1)[0].used, 85.0);
        // 25 used and 60 held: the window's usage alone refuses 80, so wait for its end.
        let o = l.apply(&s, 80.0, Mode::Check, t + 1);
        assert_eq!((o.readings[0].held, o.readings[0].retry_after), (60.0, 60));
        // 25 used and 60 held: the window's usage alone refuses 80, so wait for its end.
        let o = l.apply(&s, 80.0, Mode::Check, t + 1);
        assert_eq!((o.readings[0].held, o.readings[0].retry_after), (60.0, 60));
        // The other one settles in the next window: its hold leaves the old window, its
        // usage counts in the new one.
        l.settle(&s, &[settle(5.0, t)], t + 60_000);
        let o = l.apply(&s, 0.0, Mode::Check, t + 60_000);
        assert_eq!(o.readings[0].used, 5.0);
        let sliding = vec![Slot {
            sliding: true,
            ..s[0].clone()
        }];
        // The old window (weighted half in a sliding view) kept only the real 25.
        let o = l.apply(&sliding, 0.0, Mode::Check, t + 90_000);
        assert!((o.readings[0].used - (5.0 + 25.0 * 0.5)).abs() < 1e-9);
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

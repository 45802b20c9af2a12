//! Which proxy worker the current thread is. Each worker is a thread with its own
//! single-threaded runtime (see `server::start`), and what holds I/O registered with a
//! runtime's reactor (pooled upstream connections) is kept per worker, so a request never
//! polls a socket another worker's reactor watches.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static WORKER: Cell<u16> = const { Cell::new(0) };
}

/// The current thread's worker number (0: the main runtime and every other thread).
pub fn id() -> u16 {
    WORKER.with(Cell::get)
}

/// Marks the current thread as worker `n` (called once, when a worker thread starts).
pub fn set(n: u16) {
    WORKER.with(|w| w.set(n));
}

/// Slots of a [`Counter`]: workers up to this number each add on their own line.
const SLOTS: usize = 16;

/// One slot on its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// A counter that every worker adds to on its own cache line, read as the sum. A count that
/// every request bumps in one shared place moves that line between the workers' cores on
/// each request (~160 ns per move on the bench's 2-core VM). It may also count down (a
/// gauge): a slot then wraps below zero when another thread counted the same item up, and
/// the wrapping sum is still the number of items.
#[derive(Debug)]
pub struct Counter([Slot; SLOTS]);

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

impl Counter {
    /// A counter at zero (usable in a `static`).
    pub const fn new() -> Self {
        Counter([const { Slot(AtomicU64::new(0)) }; SLOTS])
    }

    /// The current worker's slot.
    fn slot(&self) -> &AtomicU64 {
        &self.0[usize::from(id()) % SLOTS].0
    }

    /// Adds one on the current worker's slot.
    pub fn incr(&self) {
        self.slot().fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one off on the current worker's slot (atomics wrap, see the type).
    pub fn decr(&self) {
        self.slot().fetch_sub(1, Ordering::Relaxed);
    }

    /// The total over every worker.
    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_counter_sums_what_every_worker_added() {
        let c = std::sync::Arc::new(Counter::default());
        c.incr();
        let threads: Vec<_> = (1..=20u16)
            .map(|n| {
                let c = c.clone();
                std::thread::spawn(move || {
                    set(n);
                    for _ in 0..n {
                        c.incr();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Workers 17 to 20 share slots with 1 to 4: nothing is lost either way.
        assert_eq!(c.get(), 1 + (1..=20).sum::<u64>());
    }

    /// As a gauge: what one worker counts up and another counts down sums to what is left.
    #[test]
    fn a_gauge_counted_down_on_another_worker_sums_right() {
        static G: Counter = Counter::new();
        set(3);
        for _ in 0..5 {
            G.incr();
        }
        std::thread::spawn(|| {
            set(7);
            for _ in 0..3 {
                G.decr();
            }
        })
        .join()
        .unwrap();
        assert_eq!(G.get(), 2);
    }
}

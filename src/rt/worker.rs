//! Which proxy worker the current thread is. Each worker is a thread with its own
//! single-threaded runtime (see `server::start`), and what holds I/O registered with a
//! runtime's reactor (pooled upstream connections) is kept per worker, so a request never
//! polls a socket another worker's reactor watches.

use std::cell::Cell;

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

//! Counters decided on this node and synchronised with Redis every `sync_rate` seconds
//! (Kong's batched sync). A request is decided on this node's view — Redis's totals at the
//! last sync plus what this node added since — so it waits on Redis only the first time a
//! counter is used; the background sync pushes this node's additions and pulls the other
//! nodes'. The price is overshoot: between two syncs each node may admit up to the room it
//! last saw, so N nodes can together admit up to N times that room (a whole limit each when
//! the window is shorter than the sync interval).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::local::Local;
use super::redis::{Push, RedisCounters};
use super::{at, window_start, Adds, Mode, Outcome, Settlement, Slot, StoreError};

/// Most counters pushed by one script call.
const BATCH: usize = 500;

/// A Redis-backed counter set synced in batches.
pub struct Synced {
    redis: Arc<RedisCounters>,
    every: Duration,
    /// This node's view: the shared totals at the last sync plus its own additions since.
    view: Local,
    book: Mutex<Book>,
    /// The runtime the sync task runs on (also used to push what is left when dropped).
    runtime: OnceLock<tokio::runtime::Handle>,
    /// The last sync failed (logged once per outage).
    down: AtomicBool,
}

#[derive(Default)]
struct Book {
    /// The counters this node uses, by key, with when each was last used (ms).
    slots: HashMap<String, (Slot, u64)>,
    /// What this node added per (key, window start) since the last sync.
    pending: HashMap<(String, u64), f64>,
}

impl std::fmt::Debug for Synced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Synced")
            .field("redis", &self.redis.address())
            .field("every", &self.every)
            .finish()
    }
}

impl Synced {
    /// Counters in `redis`, synced every `every`.
    pub fn new(redis: Arc<RedisCounters>, every: Duration) -> Synced {
        Synced {
            redis,
            every,
            view: Local::default(),
            book: Mutex::new(Book::default()),
            runtime: OnceLock::new(),
            down: AtomicBool::new(false),
        }
    }

    /// The Redis the counters are synced with.
    pub fn redis(&self) -> &Arc<RedisCounters> {
        &self.redis
    }

    /// How often the counters are synced.
    pub fn every(&self) -> Duration {
        self.every
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        match self.book.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// [`super::Counters::apply_each`] on this node's view. A counter this node has not
    /// used yet is first read from Redis (the only wait on Redis); when that fails the
    /// error is returned and nothing is counted.
    pub async fn apply_each(
        self: &Arc<Self>,
        slots: &[Slot],
        need: &[f64],
        add: Adds<'_>,
        mode: Mode,
        now_ms: u64,
    ) -> Result<Outcome, StoreError> {
        self.start();
        let missing: Vec<Slot> = {
            let book = self.book();
            slots
                .iter()
                .filter(|s| !book.slots.contains_key(&s.key))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            self.pull(&missing, now_ms).await?;
        }
        let mut book = self.book();
        let out = self.view.apply_each(slots, need, add, mode, now_ms);
        let added = mode == Mode::Add || (mode == Mode::CheckAndAdd && out.allowed);
        for (i, s) in slots.iter().enumerate() {
            let amount = at(add.total, i);
            if added && amount > 0.0 {
                *book
                    .pending
                    .entry((s.key.clone(), window_start(now_ms, s.window)))
                    .or_default() += amount;
            }
            if let Some(e) = book.slots.get_mut(&s.key) {
                e.1 = now_ms;
            }
        }
        Ok(out)
    }

    /// Charges real usage and gives reservations back on this node's view; the next sync
    /// carries both to Redis.
    pub fn settle(&self, slots: &[Slot], items: &[Settlement], now_ms: u64) {
        let mut book = self.book();
        self.view.settle(slots, items, now_ms);
        for (s, it) in slots.iter().zip(items) {
            if it.reserved > 0.0 {
                *book
                    .pending
                    .entry((s.key.clone(), it.reserved_at))
                    .or_default() -= it.reserved;
            }
            if it.real > 0.0 {
                *book
                    .pending
                    .entry((s.key.clone(), window_start(now_ms, s.window)))
                    .or_default() += it.real;
            }
        }
    }

    /// Reads counters this node has not used yet from Redis into the view.
    async fn pull(&self, slots: &[Slot], now_ms: u64) -> Result<(), StoreError> {
        let pushes: Vec<Push> = slots
            .iter()
            .map(|s| Push {
                slot: s.clone(),
                start: window_start(now_ms, s.window),
                cur: 0.0,
                prev: 0.0,
            })
            .collect();
        let totals = self.redis.sync(&pushes).await?;
        let mut book = self.book();
        for (p, (cur, prev)) in pushes.into_iter().zip(totals) {
            if book.slots.contains_key(&p.slot.key) {
                // Another request read it first; its view already counts since then.
                continue;
            }
            self.learn(&book, &p, cur, prev, now_ms);
            book.slots.insert(p.slot.key.clone(), (p.slot, now_ms));
        }
        Ok(())
    }

    /// Sets the view of one counter to Redis's totals plus what this node added since
    /// they were read.
    fn learn(&self, book: &Book, p: &Push, cur: f64, prev: f64, now_ms: u64) {
        let w_ms = p.slot.window.max(1) * 1000;
        let mine = |start: u64| {
            book.pending
                .get(&(p.slot.key.clone(), start))
                .copied()
                .unwrap_or(0.0)
        };
        let cur = cur + mine(p.start);
        let prev = prev + mine(p.start.saturating_sub(w_ms));
        self.view.set(&p.slot, now_ms, cur, prev);
    }

    /// Pushes what this node added since the last sync and pulls every used counter's
    /// totals. On failure the additions are kept for the next sync and the view goes on
    /// counting this node's requests.
    pub async fn sync(&self, now_ms: u64) {
        let pushes = self.take(now_ms);
        for (n, chunk) in pushes.chunks(BATCH).enumerate() {
            match self.redis.sync(chunk).await {
                Ok(totals) => {
                    let book = self.book();
                    for (p, (cur, prev)) in chunk.iter().zip(totals) {
                        if window_start(now_ms, p.slot.window) == p.start {
                            self.learn(&book, p, cur, prev, now_ms);
                        }
                    }
                    drop(book);
                    if self.down.swap(false, Ordering::Relaxed) {
                        tracing::info!(redis = %self.redis.address(), "quota counters synced again");
                    }
                }
                Err(e) => {
                    let mut book = self.book();
                    for p in &pushes[n * BATCH..] {
                        let w_ms = p.slot.window.max(1) * 1000;
                        let key = &p.slot.key;
                        *book.pending.entry((key.clone(), p.start)).or_default() += p.cur;
                        *book
                            .pending
                            .entry((key.clone(), p.start.saturating_sub(w_ms)))
                            .or_default() += p.prev;
                    }
                    drop(book);
                    if !self.down.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "quota counters could not be synced; counting on this node until Redis is back");
                    }
                    return;
                }
            }
        }
    }

    /// Takes this node's additions since the last sync, one push per counter in use (its
    /// current and previous windows), and forgets counters whose windows have passed.
    /// Additions to older windows are dropped: Redis no longer reads them either.
    fn take(&self, now_ms: u64) -> Vec<Push> {
        let mut book = self.book();
        let mut pending = std::mem::take(&mut book.pending);
        book.slots
            .retain(|_, (s, last)| now_ms.saturating_sub(*last) < 2 * s.window.max(1) * 1000);
        book.slots
            .values()
            .map(|(s, _)| {
                let start = window_start(now_ms, s.window);
                let w_ms = s.window.max(1) * 1000;
                let mut mine = |at: u64| pending.remove(&(s.key.clone(), at)).unwrap_or(0.0);
                Push {
                    slot: s.clone(),
                    start,
                    cur: mine(start),
                    prev: mine(start.saturating_sub(w_ms)),
                }
            })
            .collect()
    }

    /// Starts the sync task on the current runtime, once.
    fn start(self: &Arc<Self>) {
        if self.runtime.get().is_some() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.runtime.set(rt.clone()).is_err() {
            return;
        }
        let me: Weak<Synced> = Arc::downgrade(self);
        let every = self.every;
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { break };
                me.sync(crate::rt::clock::millis_since_epoch()).await;
            }
        });
    }
}

impl Drop for Synced {
    /// A replaced configuration's counters push what they have not synced yet.
    fn drop(&mut self) {
        let now = crate::rt::clock::millis_since_epoch();
        let pushes: Vec<Push> = self
            .take(now)
            .into_iter()
            .filter(|p| p.cur != 0.0 || p.prev != 0.0)
            .collect();
        let Some(rt) = self.runtime.get() else { return };
        if pushes.is_empty() {
            return;
        }
        let redis = self.redis.clone();
        rt.spawn(async move {
            for chunk in pushes.chunks(BATCH) {
                if let Err(e) = redis.sync(chunk).await {
                    tracing::warn!(error = %e, "quota counters of a replaced configuration could not be synced");
                }
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn redis() -> Arc<RedisCounters> {
        let cfg: crate::store::redis::RedisConfig =
            serde_json::from_value(serde_json::json!({"host": "127.0.0.1", "port": 6379})).unwrap();
        let mut errors = Vec::new();
        let store =
            crate::store::redis::RedisStore::compile("redis", &cfg, Ok(None), &mut errors).unwrap();
        Arc::new(RedisCounters::new(store))
    }

    fn slot(key: &str, limit: f64) -> Slot {
        Slot {
            key: key.into(),
            limit,
            window: 3600,
            sliding: false,
        }
    }

    /// Two nodes (two views) on one Redis: each decides alone between syncs, and a sync
    /// brings in the other's usage; reservations settle to the real usage in Redis.
    #[tokio::test]
    async fn views_meet_at_each_sync() {
        let key = format!(
            "synced-test:{}:{}",
            std::process::id(),
            crate::rt::clock::millis_since_epoch()
        );
        let s = vec![slot(&key, 10.0)];
        let now = crate::rt::clock::millis_since_epoch();
        let (a, b) = (
            Arc::new(Synced::new(redis(), Duration::from_secs(3600))),
            Arc::new(Synced::new(redis(), Duration::from_secs(3600))),
        );
        let one = |n: &Arc<Synced>| {
            let n = n.clone();
            let s = s.clone();
            async move {
                n.apply_each(
                    &s,
                    &[1.0],
                    Adds {
                        total: &[1.0],
                        held: &[0.0],
                    },
                    Mode::CheckAndAdd,
                    now,
                )
                .await
                .unwrap()
                .allowed
            }
        };
        // Between syncs each node sees only its own requests: 8 + 8 admitted of 10.
        for _ in 0..8 {
            assert!(one(&a).await);
            assert!(one(&b).await);
        }
        a.sync(now).await;
        b.sync(now).await;
        // b's sync brought a's 8; a learns b's at its next one.
        assert!(one(&a).await);
        a.sync(now).await;
        // Both now see 17 and refuse.
        assert!(!one(&a).await);
        assert!(!one(&b).await);
        // A reservation of 5 settled to 2 reaches Redis as +2.
        let hold = Adds {
            total: &[5.0],
            held: &[5.0],
        };
        let o = a
            .apply_each(&s, &[0.0], hold, Mode::Add, now)
            .await
            .unwrap();
        assert_eq!(o.readings[0].used, 22.0);
        let start = window_start(now, 3600);
        a.settle(
            &s,
            &[Settlement {
                real: 2.0,
                reserved: 5.0,
                reserved_at: start,
            }],
            now,
        );
        a.sync(now).await;
        let push = Push {
            slot: s[0].clone(),
            start,
            cur: 0.0,
            prev: 0.0,
        };
        assert_eq!(redis().sync(&[push]).await.unwrap()[0].0, 19.0);
    }
}

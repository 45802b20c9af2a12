//! Usage analytics: one record per request (who, which route, provider and model, tokens,
//! cost, latency, status), summed off the request path into one row per second and set of
//! dimensions (`rollup`) and written in batches to an embedded SQLite file (default) or
//! PostgreSQL, and aggregate queries over them for the Admin API and the dashboard.
//!
//! The request path only `try_send`s into a bounded queue. The writer thread inserts
//! batches; when the store fails, the batch's records are appended to a spill file (JSON
//! lines) under the data directory and replayed once the store answers again — also at
//! start-up and every 30 s, so records an earlier run spilled are not stranded. A replayed
//! record is a row of its own; the store keeps one row per id (a row's id is its first
//! request's), so a record replayed twice (a crash mid-replay) is kept once. A full queue
//! drops the record and counts it — nothing blocks a request.

mod postgres;
pub mod query;
mod rollup;
mod sqlite;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::rt::busy_poll::StepAside;

pub use query::{Query, TopQuery};
use rollup::Rollup;

/// Finished requests waiting for the writer at most (each holds its log record until
/// the writer takes it).
pub const QUEUE: usize = 16_384;
/// Records inserted per batch at most.
const BATCH: usize = 1000;
/// How often the records taken are written to the store at most (they are taken at the
/// writers' pace, `observe::Pace`).
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often a failed store is tried again (and the spill file replayed).
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// How often a working store's writer looks for a spill file (one an earlier run left, or
/// one this run's failures left behind); the first look is at start-up.
const SPILL_CHECK_EVERY: Duration = Duration::from_secs(30);

/// What `application` says of a request that key-auth refused (it has no application).
pub const UNAUTHENTICATED: &str = "(unauthenticated)";

/// One request's usage. Fields added since the first release are `serde(default)`, so a
/// spill file written by an older gateway still replays.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Record {
    /// Start of the request (ms since the epoch).
    pub ts_ms: i64,
    pub request_id: String,
    /// Consumer username (or id); empty when anonymous.
    pub consumer: String,
    /// The application, as a WSO2-style user names it: the authenticated consumer's
    /// username, else its `custom_id`, else its id; `(unauthenticated)` when key-auth
    /// refused the request; empty on routes without authentication.
    pub application: String,
    /// The consumer's id (empty when none authenticated).
    pub consumer_id: String,
    /// The key-auth credential's id (empty for an anonymous consumer or none).
    pub credential: String,
    /// The credential's `tags`, comma-separated.
    pub credential_tags: String,
    /// key-auth refused the request (401): counted apart from the errors of applications.
    pub unauthenticated: bool,
    pub consumer_group: String,
    pub route: String,
    pub service: String,
    pub provider: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost: f64,
    pub latency_ms: i64,
    pub status: i64,
    /// What a guardrail did (`masked`, `blocked`, or empty).
    pub guardrail: String,
    /// Answered by `ai-semantic-cache` (no provider call).
    pub cached: bool,
    /// What a cached answer would have cost from the provider.
    pub saved_cost: f64,
}

/// Where records go.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`host=… user=… dbname=…` or a `postgres://` URL).
    Postgres(String),
}

impl Backend {
    /// For logs and the status endpoint (a Postgres password is not shown).
    pub fn describe(&self) -> String {
        match self {
            Backend::Sqlite(p) => format!("sqlite {}", p.display()),
            Backend::Postgres(url) => {
                let shown = match url.split_once('@') {
                    Some((_, rest)) if url.contains("://") => format!("postgres://…@{rest}"),
                    _ => url
                        .split_whitespace()
                        .filter(|kv| !kv.starts_with("password="))
                        .collect::<Vec<_>>()
                        .join(" "),
                };
                format!("postgres {shown}")
            }
        }
    }
}

/// The store's operations, one enum per backend (no trait objects).
pub(crate) enum Store {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

impl Store {
    fn open(b: &Backend) -> Result<Store, String> {
        match b {
            Backend::Sqlite(p) => sqlite::Sqlite::open(p).map(Store::Sqlite),
            Backend::Postgres(url) => postgres::Postgres::open(url).map(Store::Postgres),
        }
    }

    fn insert(&mut self, batch: &[Rollup<'_>], aside: &mut StepAside) -> Result<(), String> {
        match self {
            Store::Sqlite(s) => s.insert(batch, aside),
            Store::Postgres(p) => p.insert(batch, aside),
        }
    }
}

/// Counters of the pipeline, for `GET /analytics/status` and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub written: AtomicU64,
    pub spilled: AtomicU64,
    pub replayed: AtomicU64,
    pub dropped: AtomicU64,
    pub store_errors: AtomicU64,
    /// Jobs queued for the writer and not yet taken (at most `QUEUE`).
    queued: AtomicUsize,
}

/// What the writer's queue carries.
enum Msg {
    Job(Arc<crate::observe::log::LogJob>),
    /// Write everything queued before this now, then answer (shutdown).
    Flush(SyncSender<()>),
}

/// A running analytics pipeline.
#[derive(Debug)]
pub struct Analytics {
    /// Unbounded, with `Stats::queued` as its bound: a bounded channel allocates (and
    /// touches) all `QUEUE` slots up front, half a megabyte of idle memory.
    tx: Sender<Msg>,
    pub backend: Backend,
    pub stats: Arc<Stats>,
    spill: PathBuf,
}

impl Analytics {
    /// Opens the store (creating its table) and starts the writer thread. A store that
    /// cannot be opened now is an error only for SQLite; PostgreSQL is retried in the
    /// background, spilling meanwhile.
    pub fn start(backend: Backend, spill_dir: PathBuf) -> Result<Analytics, String> {
        // SQLite opens here so a bad path fails the start; PostgreSQL connects from the
        // writer thread (its own runtime), and spills until it answers.
        let store = match &backend {
            Backend::Sqlite(_) => Some(Store::open(&backend)?),
            Backend::Postgres(_) => None,
        };
        std::fs::create_dir_all(&spill_dir)
            .map_err(|e| format!("analytics: {}: {e}", spill_dir.display()))?;
        let spill = spill_dir.join("analytics-spill.jsonl");
        let (tx, rx) = channel();
        let stats = Arc::new(Stats::default());
        let writer = Writer {
            rx,
            store,
            backend: backend.clone(),
            stats: stats.clone(),
            spill: spill.clone(),
            failed_at: None,
            spill_checked_at: None,
        };
        std::thread::Builder::new()
            .name("tollgate-analytics".into())
            .spawn(move || writer.run())
            .map_err(|e| format!("analytics writer thread: {e}"))?;
        Ok(Analytics {
            tx,
            backend,
            stats,
            spill,
        })
    }

    /// Queues a finished request (its record is built on the writer thread); never blocks
    /// (a full queue drops it and counts the drop).
    pub fn submit(&self, r: Arc<crate::observe::log::LogJob>) {
        let full = self.stats.queued.fetch_add(1, Ordering::Relaxed) >= QUEUE;
        if full || self.tx.send(Msg::Job(r)).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes (or spills) every record queued so far, waiting up to `limit`; false when
    /// the writer did not finish in time. Called on shutdown, so that the last moments'
    /// records are not lost with the process.
    pub fn flush(&self, limit: Duration) -> bool {
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        self.tx.send(Msg::Flush(done_tx)).is_ok() && done_rx.recv_timeout(limit).is_ok()
    }

    /// Where undelivered records wait.
    pub fn spill_path(&self) -> &std::path::Path {
        &self.spill
    }

    /// Runs an aggregate query (on a blocking thread; SQLite reads use their own
    /// connection).
    pub async fn usage(&self, q: Query) -> Result<serde_json::Value, String> {
        let backend = self.backend.clone();
        match backend {
            Backend::Sqlite(p) => tokio::task::spawn_blocking(move || sqlite::usage(&p, &q))
                .await
                .map_err(|e| e.to_string())?,
            Backend::Postgres(url) => postgres::usage(&url, &q).await,
        }
    }

    /// The top keys by a measure over a time range.
    pub async fn top(&self, q: TopQuery) -> Result<serde_json::Value, String> {
        let backend = self.backend.clone();
        match backend {
            Backend::Sqlite(p) => tokio::task::spawn_blocking(move || sqlite::top(&p, &q))
                .await
                .map_err(|e| e.to_string())?,
            Backend::Postgres(url) => postgres::top(&url, &q).await,
        }
    }

    /// The pipeline's counters as JSON.
    pub fn status(&self) -> serde_json::Value {
        let s = &self.stats;
        serde_json::json!({
            "store": self.backend.describe(),
            "written": s.written.load(Ordering::Relaxed),
            "spilled": s.spilled.load(Ordering::Relaxed),
            "replayed": s.replayed.load(Ordering::Relaxed),
            "dropped": s.dropped.load(Ordering::Relaxed),
            "store_errors": s.store_errors.load(Ordering::Relaxed),
            "spill_file": self.spill.display().to_string(),
        })
    }
}

struct Writer {
    rx: Receiver<Msg>,
    store: Option<Store>,
    backend: Backend,
    stats: Arc<Stats>,
    spill: PathBuf,
    failed_at: Option<Instant>,
    /// When the writer last looked for a spill file while the store worked.
    spill_checked_at: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        let mut queued = Vec::new();
        let mut flushes = Vec::new();
        let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
        let (mut done, mut seen) = (Vec::new(), 0);
        let (mut pace, mut took) = (super::Pace::new(), 0);
        let mut written_at = Instant::now();
        loop {
            pace.sleep(took);
            let closed = super::take_queued(&self.rx, &mut queued);
            took = queued.len();
            let jobs = queued.iter().filter(|m| matches!(m, Msg::Job(_))).count();
            self.stats.queued.fetch_sub(jobs, Ordering::Relaxed);
            let mut aside = StepAside::new();
            // Usage records are built as soon as the jobs are taken, and the jobs go back
            // to be freed on the request threads (see `log::give_back`); the store gets
            // the records in batches.
            for msg in queued.drain(..) {
                match msg {
                    Msg::Job(job) => {
                        batch.push(job.usage_record());
                        done.push(job);
                    }
                    Msg::Flush(reply) => flushes.push(reply),
                }
                aside.tick();
            }
            crate::observe::log::give_back(&mut done, &mut seen);
            let due = batch.len() >= BATCH
                || written_at.elapsed() >= FLUSH_EVERY
                || closed
                || !flushes.is_empty();
            if due {
                self.retry_store(&mut aside);
                // Written and freed a few at a time between ticks: freeing a whole batch
                // at once held the core for a millisecond.
                for chunk in batch.chunks(BATCH) {
                    self.write(chunk, &mut aside);
                }
                for record in batch.drain(..) {
                    drop(record);
                    aside.tick();
                }
                written_at = Instant::now();
            }
            drop(aside);
            for reply in flushes.drain(..) {
                let _ = reply.send(());
            }
            if closed {
                return;
            }
        }
    }

    /// After a failure: reopen the store now and then, and replay what was spilled.
    fn retry_store(&mut self, aside: &mut StepAside) {
        let due = self.failed_at.is_none_or(|t| t.elapsed() >= RETRY_EVERY);
        if self.store.is_none() && due {
            match Store::open(&self.backend) {
                Ok(s) => self.store = Some(s),
                Err(e) => {
                    if self.failed_at.is_none() {
                        tracing::warn!(store = %self.backend.describe(), error = %e, "analytics store unavailable; records spill to {} until it answers", self.spill.display());
                    }
                    self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    self.failed_at = Some(Instant::now());
                    return;
                }
            }
        }
        let look = self
            .spill_checked_at
            .is_none_or(|t| t.elapsed() >= SPILL_CHECK_EVERY);
        let replay = match self.failed_at {
            Some(_) => due,
            None => look,
        };
        if self.store.is_some() && replay {
            self.spill_checked_at = Some(Instant::now());
            self.replay(aside);
        }
    }

    /// Writes a batch as rollups (spilled as records when the store fails: a replay
    /// recognises each by its request id).
    fn write(&mut self, batch: &[Record], aside: &mut StepAside) {
        let result = match self.store.as_mut() {
            Some(s) => s.insert(&rollup::rollup(batch), aside),
            None => Err("store unavailable".into()),
        };
        match result {
            Ok(()) => {
                self.stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed(&e);
                self.spill_out(batch);
            }
        }
    }

    /// Notes a failed insert: counted, logged once per outage, retried later.
    fn failed(&mut self, e: &str) {
        self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
        if self.failed_at.is_none() {
            tracing::warn!(store = %self.backend.describe(), error = %e, "analytics store failed; spilling records to {}", self.spill.display());
        }
        self.failed_at = Some(Instant::now());
        // A broken connection is reopened on the next retry.
        if matches!(self.backend, Backend::Postgres(_)) {
            self.store = None;
        }
    }

    fn spill_out(&self, batch: &[Record]) {
        let file = crate::rt::data_dir::private_options()
            .create(true)
            .append(true)
            .open(&self.spill);
        let mut file = match file {
            Ok(f) => std::io::BufWriter::new(f),
            Err(e) => {
                tracing::error!(error = %e, "analytics spill file {} unusable; {} records lost", self.spill.display(), batch.len());
                self.stats
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                return;
            }
        };
        for r in batch {
            if let Ok(line) = serde_json::to_string(r) {
                let _ = writeln!(file, "{line}");
            }
        }
        let _ = file.flush();
        self.stats
            .spilled
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }

    /// Moves the spilled records into the store. The spill file is renamed first, so records
    /// spilled meanwhile go to a new one; a renamed file a crash left behind goes first (and
    /// is never overwritten). Its records may be in the store already: the store keeps one
    /// row per id.
    fn replay(&mut self, aside: &mut StepAside) {
        let taking = self.spill.with_extension("jsonl.replaying");
        let mut ok = !taking.exists() || self.replay_file(&taking, aside);
        if ok && self.spill.exists() {
            ok = std::fs::rename(&self.spill, &taking).is_ok() && self.replay_file(&taking, aside);
        }
        if ok {
            self.failed_at = None;
        }
    }

    /// Inserts a file's records and removes it (records that fail go back to the spill
    /// file); false when some failed or the file could not be read.
    fn replay_file(&mut self, path: &std::path::Path, aside: &mut StepAside) -> bool {
        let Ok(f) = std::fs::File::open(path) else {
            return false;
        };
        let mut chunk: Vec<Record> = Vec::with_capacity(BATCH);
        let mut ok = true;
        for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
            if let Ok(r) = serde_json::from_str::<Record>(&line) {
                chunk.push(r);
            }
            if chunk.len() == BATCH {
                ok &= self.replay_chunk(&chunk, aside);
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            ok &= self.replay_chunk(&chunk, aside);
        }
        let _ = std::fs::remove_file(path);
        if ok {
            tracing::info!(store = %self.backend.describe(), replayed = self.stats.replayed.load(Ordering::Relaxed), "analytics: spilled records replayed");
        }
        ok
    }

    /// Inserts spilled records, each a row of its own: the spill file may hold some the
    /// store has already (a crash mid-replay), and only their own ids tell them apart.
    fn replay_chunk(&mut self, chunk: &[Record], aside: &mut StepAside) -> bool {
        let rows: Vec<Rollup<'_>> = chunk.iter().map(Rollup::single).collect();
        let result = match self.store.as_mut() {
            Some(s) => s.insert(&rows, aside),
            None => Err("store unavailable".into()),
        };
        match result {
            Ok(()) => {
                self.stats
                    .replayed
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.failed(&e);
                self.spill_out(chunk);
                false
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The queue holds `QUEUE` jobs the writer has not taken; more are dropped and counted,
    /// never blocking the request.
    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, rx) = channel();
        let a = Analytics {
            tx,
            backend: Backend::Sqlite(PathBuf::from("unused.db")),
            stats: Arc::new(Stats::default()),
            spill: PathBuf::from("unused.jsonl"),
        };
        let started = std::time::Instant::now();
        let job = || {
            let log = crate::observe::log::RequestLog::new(String::new(), started);
            crate::observe::log::LogJob::new(Box::new(log), Arc::default(), None)
        };
        for _ in 0..QUEUE + 3 {
            a.submit(job());
        }
        assert_eq!(a.stats.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(a.stats.queued.load(Ordering::Relaxed), QUEUE);
        let mut taken = Vec::new();
        super::super::take_queued(&rx, &mut taken);
        assert_eq!(taken.len(), QUEUE);
    }
}

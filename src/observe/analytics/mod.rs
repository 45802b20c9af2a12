//! Usage analytics: one record per request (who, which route, provider and model, tokens,
//! cost, latency, status), summed by the proxy worker that served it into one row per
//! second and set of dimensions (`rollup`), written in batches by a writer thread to an
//! embedded SQLite file (default) or PostgreSQL, and aggregate queries over them for the
//! Admin API and the dashboard.
//!
//! A worker hands its rows to the writer's bounded queue every 100 ms. The writer inserts
//! batches; when the store fails, the batch's rows are appended to a spill file (JSON
//! lines) under the data directory and replayed once the store answers again — also at
//! start-up and every 30 s, so rows an earlier run spilled are not stranded. The store
//! keeps one row per id (a row's id is its first request's), so a row replayed twice (a
//! crash mid-replay) is kept once. A full queue drops the rows and counts their requests —
//! nothing blocks a request.

mod postgres;
pub mod query;
mod rollup;
mod sqlite;

use std::cell::RefCell;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::rt::busy_poll::StepAside;

pub use query::{Query, TopQuery};
use rollup::Pending;

/// Rows waiting for the writer at most.
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

/// One request's usage, or a row summing a second's requests with the same dimensions
/// (`rollup`). Fields added since the first release are `serde(default)`, so a spill file
/// written by an older gateway (one request per line) still replays.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Usage<S = String> {
    /// Start of the request (ms since the epoch).
    pub ts_ms: i64,
    pub request_id: S,
    /// Consumer username (or id); empty when anonymous.
    pub consumer: S,
    /// The application, as a WSO2-style user names it: the authenticated consumer's
    /// username, else its `custom_id`, else its id; `(unauthenticated)` when key-auth
    /// refused the request; empty on routes without authentication.
    pub application: S,
    /// The consumer's id (empty when none authenticated).
    pub consumer_id: S,
    /// The key-auth credential's id (empty for an anonymous consumer or none).
    pub credential: S,
    /// The credential's `tags`, comma-separated.
    pub credential_tags: S,
    /// key-auth refused the request (401): counted apart from the errors of applications.
    pub unauthenticated: bool,
    pub consumer_group: S,
    pub route: S,
    pub service: S,
    pub provider: S,
    pub model: S,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost: f64,
    pub latency_ms: i64,
    pub status: i64,
    /// What a guardrail did (`masked`, `blocked`, or empty).
    pub guardrail: S,
    /// Requests `ai-semantic-cache` answered (no provider call); an older spill file's
    /// `true`/`false` reads as 1/0.
    #[serde(deserialize_with = "count")]
    pub cached: i64,
    /// What the cached answers would have cost from the provider.
    pub saved_cost: f64,
    /// The requests the row sums up (1: one request's record).
    #[serde(default = "one")]
    pub requests: i64,
    /// The longest of their latencies (`latency_ms` is their sum).
    pub latency_max: i64,
}

/// A request's usage or a row, owned: what the writer stores and spills.
pub type Record = Usage<String>;

fn one() -> i64 {
    1
}

/// A count written as a number, or as a flag by an older release.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Count {
        Number(i64),
        Flag(bool),
    }
    Ok(match Count::deserialize(d)? {
        Count::Number(n) => n,
        Count::Flag(f) => i64::from(f),
    })
}

impl<S> Usage<S> {
    /// The same usage with every string mapped by `f` (borrowed, or owned).
    pub fn map<'a, T>(&'a self, f: impl Fn(&'a S) -> T) -> Usage<T> {
        Usage {
            ts_ms: self.ts_ms,
            request_id: f(&self.request_id),
            consumer: f(&self.consumer),
            application: f(&self.application),
            consumer_id: f(&self.consumer_id),
            credential: f(&self.credential),
            credential_tags: f(&self.credential_tags),
            unauthenticated: self.unauthenticated,
            consumer_group: f(&self.consumer_group),
            route: f(&self.route),
            service: f(&self.service),
            provider: f(&self.provider),
            model: f(&self.model),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.total_tokens,
            cost: self.cost,
            latency_ms: self.latency_ms,
            status: self.status,
            guardrail: f(&self.guardrail),
            cached: self.cached,
            saved_cost: self.saved_cost,
            requests: self.requests,
            latency_max: self.latency_max,
        }
    }
}

impl Usage<&str> {
    /// The owned row.
    pub fn to_record(&self) -> Record {
        self.map(|s| s.to_string())
    }
}

impl Record {
    /// The row borrowed.
    pub fn view(&self) -> Usage<&str> {
        self.map(String::as_str)
    }

    /// A spilled line as a row: an older release's line is one request, whose latency is
    /// its longest.
    fn normalized(mut self) -> Record {
        if self.requests <= 1 {
            self.requests = 1;
            self.latency_max = self.latency_max.max(self.latency_ms);
        }
        self
    }
}

/// A row's requests key-auth refused (all or none: refusal is one of its dimensions).
fn refused(r: &Record) -> i64 {
    if r.unauthenticated {
        r.requests
    } else {
        0
    }
}

/// The requests a batch of rows sums up.
fn requests(rows: &[Record]) -> u64 {
    rows.iter().map(|r| r.requests.max(0) as u64).sum()
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

    fn insert(&mut self, batch: &[Record], aside: &mut StepAside) -> Result<(), String> {
        match self {
            Store::Sqlite(s) => s.insert(batch, aside),
            Store::Postgres(p) => p.insert(batch, aside),
        }
    }
}

/// Counters of the pipeline (in requests), for `GET /analytics/status` and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub written: AtomicU64,
    pub spilled: AtomicU64,
    pub replayed: AtomicU64,
    pub dropped: AtomicU64,
    pub store_errors: AtomicU64,
    /// Rows queued for the writer and not yet taken (at most `QUEUE`).
    queued: AtomicUsize,
}

/// What the writer's queue carries.
enum Msg {
    /// A worker's rows.
    Rows(Vec<Record>),
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

    /// Counts a finished request: added to this thread's rows when `batched` (a proxy
    /// worker, whose log-phase runner hands them over, see [`pending_due_in`]), else
    /// queued for the writer now. Never blocks (a full queue drops and counts).
    pub fn record(self: &Arc<Self>, u: &Usage<&str>, batched: bool) {
        if !batched {
            self.hand_over(vec![u.to_record()]);
            return;
        }
        let due = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            p.0.add(u);
            match &p.1 {
                Some(a) if Arc::ptr_eq(a, self) => {}
                // Another pipeline's rows (a test's gateways on one thread) go to theirs.
                Some(_) => return Some(hand_over_taken(&mut p)),
                None => p.1 = Some(self.clone()),
            }
            p.0.due().then(|| hand_over_taken(&mut p))
        });
        if let Some((a, rows)) = due.flatten() {
            a.hand_over(rows);
        }
    }

    /// Queues rows for the writer; a full queue drops them and counts their requests.
    fn hand_over(&self, rows: Vec<Record>) {
        let n = rows.len();
        let full = self.stats.queued.fetch_add(n, Ordering::Relaxed) >= QUEUE;
        if full {
            self.stats.queued.fetch_sub(n, Ordering::Relaxed);
            self.stats
                .dropped
                .fetch_add(requests(&rows), Ordering::Relaxed);
            return;
        }
        if let Err(e) = self.tx.send(Msg::Rows(rows)) {
            self.stats.queued.fetch_sub(n, Ordering::Relaxed);
            if let Msg::Rows(rows) = e.0 {
                self.stats
                    .dropped
                    .fetch_add(requests(&rows), Ordering::Relaxed);
            }
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

thread_local! {
    /// This thread's rows not yet handed over, and the pipeline they go to.
    static PENDING: RefCell<(Pending, Option<Arc<Analytics>>)> = RefCell::default();
}

/// Takes the thread's rows (with their pipeline) out of `p`.
fn hand_over_taken(
    p: &mut (Pending, Option<Arc<Analytics>>),
) -> Option<(Arc<Analytics>, Vec<Record>)> {
    let rows = p.0.take();
    let a = p.1.clone()?;
    (!rows.is_empty()).then_some((a, rows))
}

/// How long until this thread's rows are due for the writer (None when it holds none).
pub fn pending_due_in() -> Option<Duration> {
    PENDING.with(|p| p.borrow().0.due_in())
}

/// Hands this thread's rows to the writer now (when due, at idle, and when the worker
/// stops).
pub fn hand_over_pending() {
    let taken = PENDING.with(|p| hand_over_taken(&mut p.borrow_mut()));
    if let Some((a, rows)) = taken {
        a.hand_over(rows);
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
        let (mut pace, mut took) = (super::Pace::new(), 0);
        let mut written_at = Instant::now();
        loop {
            pace.sleep(took);
            let closed = super::take_queued(&self.rx, &mut queued);
            took = queued.len();
            for msg in queued.drain(..) {
                match msg {
                    Msg::Rows(rows) => {
                        self.stats.queued.fetch_sub(rows.len(), Ordering::Relaxed);
                        batch.extend(rows);
                    }
                    Msg::Flush(reply) => flushes.push(reply),
                }
            }
            // A turn with nothing to write leaves the proxy's poller alone (see StepAside).
            let due = batch.len() >= BATCH
                || closed
                || !flushes.is_empty()
                || (written_at.elapsed() >= FLUSH_EVERY
                    && (!batch.is_empty() || self.housekeeping_due()));
            if due {
                let mut aside = StepAside::new();
                self.retry_store(&mut aside);
                for chunk in batch.chunks(BATCH) {
                    self.write(chunk, &mut aside);
                }
                batch.clear();
                written_at = Instant::now();
            }
            for reply in flushes.drain(..) {
                let _ = reply.send(());
            }
            if closed {
                return;
            }
        }
    }

    /// True when `retry_store` has something to do even without rows: a failed store to
    /// retry, or a spill file to look for.
    fn housekeeping_due(&self) -> bool {
        self.failed_at.is_some()
            || self.store.is_none()
            || self
                .spill_checked_at
                .is_none_or(|t| t.elapsed() >= SPILL_CHECK_EVERY)
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

    /// Writes a batch of rows (spilled when the store fails: a replay recognises each by
    /// its id).
    fn write(&mut self, batch: &[Record], aside: &mut StepAside) {
        let result = match self.store.as_mut() {
            Some(s) => s.insert(batch, aside),
            None => Err("store unavailable".into()),
        };
        match result {
            Ok(()) => {
                self.stats
                    .written
                    .fetch_add(requests(batch), Ordering::Relaxed);
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
                tracing::error!(error = %e, "analytics spill file {} unusable; {} requests' rows lost", self.spill.display(), requests(batch));
                self.stats
                    .dropped
                    .fetch_add(requests(batch), Ordering::Relaxed);
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
            .fetch_add(requests(batch), Ordering::Relaxed);
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
                chunk.push(r.normalized());
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

    /// Inserts spilled rows as they were: the spill file may hold some the store has
    /// already (a crash mid-replay), and their ids tell them apart.
    fn replay_chunk(&mut self, chunk: &[Record], aside: &mut StepAside) -> bool {
        let result = match self.store.as_mut() {
            Some(s) => s.insert(chunk, aside),
            None => Err("store unavailable".into()),
        };
        match result {
            Ok(()) => {
                self.stats
                    .replayed
                    .fetch_add(requests(chunk), Ordering::Relaxed);
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
        let a = Arc::new(Analytics {
            tx,
            backend: Backend::Sqlite(PathBuf::from("unused.db")),
            stats: Arc::new(Stats::default()),
            spill: PathBuf::from("unused.jsonl"),
        });
        for i in 0..QUEUE + 3 {
            let r = Record {
                request_id: format!("r{i}"),
                requests: 1,
                ..Record::default()
            };
            a.record(&r.view(), false);
        }
        assert_eq!(a.stats.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(a.stats.queued.load(Ordering::Relaxed), QUEUE);
        let mut taken = Vec::new();
        super::super::take_queued(&rx, &mut taken);
        assert_eq!(taken.len(), QUEUE);
    }

    /// A worker's requests are summed on its thread and reach the writer as rows: when
    /// handed over (at idle or on shutdown), or once due.
    #[test]
    fn a_workers_requests_reach_the_writer_as_rows() {
        let (tx, rx) = channel();
        let a = Arc::new(Analytics {
            tx,
            backend: Backend::Sqlite(PathBuf::from("unused.db")),
            stats: Arc::new(Stats::default()),
            spill: PathBuf::from("unused.jsonl"),
        });
        let record = |i: i64| Record {
            ts_ms: 7_000 + i,
            request_id: format!("r{i}"),
            route: "chat".into(),
            latency_ms: i,
            latency_max: i,
            total_tokens: 3,
            requests: 1,
            ..Record::default()
        };
        for i in 0..5 {
            a.record(&record(i).view(), true);
        }
        assert!(rx.try_recv().is_err(), "held by the worker");
        assert!(pending_due_in().is_some());
        hand_over_pending();
        assert!(pending_due_in().is_none());
        let Ok(Msg::Rows(rows)) = rx.try_recv() else {
            panic!("no rows handed over");
        };
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.request_id.as_str(), r.ts_ms, r.requests),
            ("r0", 7_000, 5)
        );
        assert_eq!((r.total_tokens, r.latency_ms, r.latency_max), (15, 10, 4));
        // Once the oldest row is due, the next request hands them over itself.
        a.record(&record(5).view(), true);
        std::thread::sleep(rollup::HAND_OVER_EVERY);
        a.record(&record(6).view(), true);
        let Ok(Msg::Rows(rows)) = rx.try_recv() else {
            panic!("due rows not handed over");
        };
        assert_eq!(rows[0].requests, 2);
    }

    /// An older release's spill line (a flag for `cached`, no `requests`) reads as one
    /// request; a row's line reads as the row.
    #[test]
    fn spill_lines_of_either_release_read_back() {
        let old = r#"{"ts_ms": 1, "request_id": "x", "latency_ms": 9, "cached": true}"#;
        let r = serde_json::from_str::<Record>(old).unwrap().normalized();
        assert_eq!((r.requests, r.cached, r.latency_max), (1, 1, 9));
        let row = Record {
            requests: 4,
            latency_ms: 20,
            latency_max: 8,
            cached: 2,
            ..Record::default()
        };
        let back = serde_json::from_str::<Record>(&serde_json::to_string(&row).unwrap())
            .unwrap()
            .normalized();
        assert_eq!(back, row);
    }
}

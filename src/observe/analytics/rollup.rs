//! What the store keeps: one row per second and set of dimensions (who, which route,
//! provider, model, status…) with the requests' sums, instead of one row per request.
//!
//! Inserting a row costs the writer ~15k instructions whatever it holds (callgrind: the
//! statement's VM, binding its values, three B-trees), as much as a request's whole proxy
//! path takes; a second's requests of one application on one model share a row, so the
//! cost per request falls with the load. Every answer of the Admin API stays exact: its
//! finest bucket is a minute, and an average is a sum over a count.
//!
//! Each proxy worker sums its own requests (`Pending`, on the thread that served them,
//! right after the response) and hands the rows to the writer every `HAND_OVER_EVERY`:
//! the writer thread then wakes a few times a second for a few rows instead of taking
//! every request's record, which cost the core's other requests up to a few hundred
//! microseconds each time it ran (bench c=1 p99).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Record, Usage};

/// The rows' time resolution.
const SECOND_MS: i64 = 1000;
/// How long a worker keeps its rows before handing them to the writer at most.
pub const HAND_OVER_EVERY: Duration = Duration::from_millis(100);
/// Rows a worker keeps at most before handing them over (distinct dimension sets).
const ROWS_MAX: usize = 1000;

/// Everything a row is grouped by: every column but the sums and the id.
type Key<'a> = (i64, [&'a str; 11], i64, bool);

fn key<'a>(r: &Usage<&'a str>) -> Key<'a> {
    (
        r.ts_ms.div_euclid(SECOND_MS),
        [
            r.consumer,
            r.application,
            r.consumer_id,
            r.credential,
            r.credential_tags,
            r.consumer_group,
            r.route,
            r.service,
            r.provider,
            r.model,
            r.guardrail,
        ],
        r.status,
        r.unauthenticated,
    )
}

/// Adds `r`'s requests to `row` (same dimensions).
fn merge(row: &mut Record, r: &Usage<&str>) {
    row.requests += r.requests;
    row.prompt_tokens += r.prompt_tokens;
    row.completion_tokens += r.completion_tokens;
    row.total_tokens += r.total_tokens;
    row.cost += r.cost;
    row.latency_ms += r.latency_ms;
    row.latency_max = row.latency_max.max(r.latency_max);
    row.cached += r.cached;
    row.saved_cost += r.saved_cost;
}

/// A worker's rows not yet handed to the writer. A row's id (`request_id`) is its first
/// request's: ids are unique per request, so a row's id is too, and a row written twice
/// (replayed from a spill file after a crash) is recognised.
#[derive(Debug, Default)]
pub struct Pending {
    /// Rows by their key's hash (FxHash: one lookup per request, keys the gateway wrote).
    index: HashMap<u64, Vec<usize>, rustc_hash::FxBuildHasher>,
    rows: Vec<Record>,
    /// The row the last request went to: the next one nearly always shares it (same
    /// second, same dimensions), found by comparing keys without hashing them.
    last: Option<usize>,
    /// When the oldest row came.
    since: Option<Instant>,
}

impl Pending {
    /// Adds one request's usage (or a row) to the row of its second and dimensions.
    pub fn add(&mut self, r: &Usage<&str>) {
        use std::hash::BuildHasher;
        let k = key(r);
        if let Some(row) = self.last.and_then(|i| self.rows.get_mut(i)) {
            if key(&row.view()) == k {
                return merge(row, r);
            }
        }
        let hash = rustc_hash::FxBuildHasher.hash_one(k);
        let slot = self.index.entry(hash).or_default();
        let found = slot
            .iter()
            .copied()
            .find(|&i| self.rows.get(i).is_some_and(|row| key(&row.view()) == k));
        self.last = Some(found.unwrap_or(self.rows.len()));
        match found.and_then(|i| self.rows.get_mut(i)) {
            Some(row) => merge(row, r),
            None => {
                let mut row = r.to_record();
                row.ts_ms = r.ts_ms.div_euclid(SECOND_MS) * SECOND_MS;
                slot.push(self.rows.len());
                self.rows.push(row);
                self.since.get_or_insert_with(Instant::now);
            }
        }
    }

    /// True when the rows should go to the writer now.
    pub fn due(&self) -> bool {
        self.rows.len() >= ROWS_MAX || self.since.is_some_and(|t| t.elapsed() >= HAND_OVER_EVERY)
    }

    /// How long until the rows are due (None when there are none).
    pub fn due_in(&self) -> Option<Duration> {
        self.since
            .map(|t| HAND_OVER_EVERY.saturating_sub(t.elapsed()))
    }

    /// The rows, in the order of their first requests; the worker starts afresh.
    pub fn take(&mut self) -> Vec<Record> {
        self.index.clear();
        self.last = None;
        self.since = None;
        std::mem::take(&mut self.rows)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(id: &str, ts_ms: i64, consumer: &str, latency_ms: i64) -> Record {
        Record {
            ts_ms,
            request_id: id.into(),
            consumer: consumer.into(),
            model: "gpt-4o".into(),
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
            cost: 0.25,
            latency_ms,
            latency_max: latency_ms,
            status: 200,
            requests: 1,
            ..Record::default()
        }
    }

    /// A second's requests with the same dimensions share a row holding their sums, their
    /// latencies' sum and maximum; another second, consumer, status or a refusal is
    /// another row; the row takes its first request's id and its second's start.
    #[test]
    fn a_seconds_requests_share_a_row_per_dimension_set() {
        let mut batch = [
            record("a", 5_040, "alice", 30),
            record("b", 5_999, "alice", 70),
            record("c", 5_500, "bob", 10),
            record("d", 6_000, "alice", 20),
            record("e", 5_100, "alice", 40),
            record("f", 5_200, "alice", 1),
            record("g", 5_300, "", 2),
        ];
        batch[5].status = 429;
        batch[6].status = 401;
        batch[6].unauthenticated = true;
        batch[4].cached = 1;
        batch[4].saved_cost = 0.5;
        let mut p = Pending::default();
        assert!(p.due_in().is_none() && !p.due());
        for r in &batch {
            p.add(&r.view());
        }
        assert!(p.due_in().is_some_and(|d| d <= HAND_OVER_EVERY));
        let rows = p.take();
        assert!(p.take().is_empty() && p.due_in().is_none());
        let ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "d", "f", "g"]);
        let a = &rows[0];
        assert_eq!(
            (a.ts_ms, a.requests, a.prompt_tokens, a.total_tokens),
            (5_000, 3, 30, 45)
        );
        assert_eq!((a.latency_ms, a.latency_max), (140, 70));
        assert_eq!((a.cost, a.cached, a.saved_cost), (0.75, 1, 0.5));
        assert_eq!((rows[2].ts_ms, rows[2].requests), (6_000, 1));
        assert_eq!((rows[3].status, rows[3].requests), (429, 1));
        assert!(rows[4].unauthenticated);
        let total: i64 = rows.iter().map(|r| r.requests).sum();
        assert_eq!(total, batch.len() as i64);
        // Rows merge into rows (a worker's sums are rows too).
        let mut q = Pending::default();
        q.add(&rows[0].view());
        q.add(&rows[0].view());
        let merged = q.take();
        assert_eq!(
            (merged.len(), merged[0].requests, merged[0].latency_max),
            (1, 6, 70)
        );
    }
}

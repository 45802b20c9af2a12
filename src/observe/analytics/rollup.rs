//! What the store keeps: one row per second and set of dimensions (who, which route,
//! provider, model, status…) with the requests' sums, instead of one row per request.
//!
//! Inserting a row costs the writer ~15k instructions whatever it holds (callgrind: the
//! statement's VM, binding its values, three B-trees), as much as a request's whole proxy
//! path takes; a second's requests of one application on one model share a row, so the
//! cost per request falls with the load. Every answer of the Admin API stays exact: its
//! finest bucket is a minute, and an average is a sum over a count.

use std::collections::HashMap;

use super::Record;

/// The rows' time resolution.
const SECOND_MS: i64 = 1000;

/// One row of the store: the requests of one second with the same dimensions (or one
/// request, when replayed from a spill file).
#[derive(Debug, Clone, PartialEq)]
pub struct Rollup<'a> {
    /// The dimensions, and the row's id (its `request_id`): the first request's. Ids are
    /// unique per request, so a row's id is too, and a row written again is recognised.
    pub first: &'a Record,
    /// The second's start (a replayed request's own start).
    pub ts_ms: i64,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost: f64,
    /// The requests' latencies summed (the average is this over `requests`).
    pub latency_ms: i64,
    pub latency_max: i64,
    /// Requests key-auth refused: all of the row's or none (it is a dimension).
    pub unauthenticated: i64,
    /// Requests the semantic cache answered, and what they would have cost.
    pub cached: i64,
    pub saved_cost: f64,
}

impl<'a> Rollup<'a> {
    /// One request as a row of its own.
    pub fn single(r: &'a Record) -> Rollup<'a> {
        Rollup {
            first: r,
            ts_ms: r.ts_ms,
            requests: 1,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            total_tokens: r.total_tokens,
            cost: r.cost,
            latency_ms: r.latency_ms,
            latency_max: r.latency_ms,
            unauthenticated: i64::from(r.unauthenticated),
            cached: i64::from(r.cached),
            saved_cost: r.saved_cost,
        }
    }

    fn add(&mut self, r: &Record) {
        self.requests += 1;
        self.prompt_tokens += r.prompt_tokens;
        self.completion_tokens += r.completion_tokens;
        self.total_tokens += r.total_tokens;
        self.cost += r.cost;
        self.latency_ms += r.latency_ms;
        self.latency_max = self.latency_max.max(r.latency_ms);
        self.unauthenticated += i64::from(r.unauthenticated);
        self.cached += i64::from(r.cached);
        self.saved_cost += r.saved_cost;
    }
}

/// Everything a row is grouped by: every column but the sums and the id.
type Key<'a> = (i64, [&'a str; 11], i64, bool);

fn key(r: &Record) -> Key<'_> {
    (
        r.ts_ms.div_euclid(SECOND_MS),
        [
            &r.consumer,
            &r.application,
            &r.consumer_id,
            &r.credential,
            &r.credential_tags,
            &r.consumer_group,
            &r.route,
            &r.service,
            &r.provider,
            &r.model,
            &r.guardrail,
        ],
        r.status,
        r.unauthenticated,
    )
}

/// A batch's rows, in the order of their first requests.
pub fn rollup(batch: &[Record]) -> Vec<Rollup<'_>> {
    // FxHash rather than SipHash: one lookup per request, keys the gateway wrote.
    let mut index: HashMap<Key<'_>, usize, rustc_hash::FxBuildHasher> = HashMap::default();
    let mut rows: Vec<Rollup<'_>> = Vec::new();
    for r in batch {
        match index.entry(key(r)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                if let Some(row) = rows.get_mut(*e.get()) {
                    row.add(r);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(rows.len());
                let mut row = Rollup::single(r);
                row.ts_ms = r.ts_ms.div_euclid(SECOND_MS) * SECOND_MS;
                rows.push(row);
            }
        }
    }
    rows
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
            status: 200,
            ..Record::default()
        }
    }

    /// A second's requests with the same dimensions share a row holding their sums, their
    /// latencies' sum and maximum; another second, consumer, status or a refusal is
    /// another row; the row takes its first request's id.
    #[test]
    fn a_seconds_requests_share_a_row_per_dimension_set() {
        let mut batch = vec![
            record("a", 5_000, "alice", 30),
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
        batch[4].cached = true;
        batch[4].saved_cost = 0.5;
        let rows = rollup(&batch);
        let ids: Vec<&str> = rows.iter().map(|r| r.first.request_id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "d", "f", "g"]);
        let a = &rows[0];
        assert_eq!(
            (a.ts_ms, a.requests, a.prompt_tokens, a.total_tokens),
            (5_000, 3, 30, 45)
        );
        assert_eq!((a.latency_ms, a.latency_max), (140, 70));
        assert_eq!((a.cost, a.cached, a.saved_cost), (0.75, 1, 0.5));
        assert_eq!((rows[2].ts_ms, rows[2].requests), (6_000, 1));
        assert_eq!((rows[3].first.status, rows[3].requests), (429, 1));
        assert_eq!((rows[4].unauthenticated, rows[4].requests), (1, 1));
        let total: i64 = rows.iter().map(|r| r.requests).sum();
        assert_eq!(total, batch.len() as i64);
        // The same batch rolls up the same way (a replayed batch is recognised by its ids).
        assert_eq!(rollup(&batch), rows);
    }

    /// A replayed request keeps its own time and counts as one.
    #[test]
    fn a_single_request_is_a_row_of_one() {
        let r = record("x", 1_234, "alice", 9);
        let row = Rollup::single(&r);
        assert_eq!(
            (row.ts_ms, row.requests, row.latency_ms, row.latency_max),
            (1_234, 1, 9, 9)
        );
    }
}

//! The embedded store: a SQLite file (WAL mode, so the Admin API reads while the writer
//! inserts) of usage rows (`rollup`).

use std::path::Path;

use rusqlite::{params, params_from_iter, Connection, ToSql};

use super::query::{top_answer, usage_answer, Query, Row, TopQuery};
use super::Record;
use crate::rt::busy_poll::StepAside;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS tollgate_usage (
    ts_ms INTEGER NOT NULL, request_id TEXT NOT NULL, consumer TEXT NOT NULL,
    application TEXT NOT NULL, consumer_group TEXT NOT NULL, route TEXT NOT NULL,
    service TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL, cost REAL NOT NULL, latency_ms INTEGER NOT NULL,
    status INTEGER NOT NULL, guardrail TEXT NOT NULL,
    consumer_id TEXT NOT NULL DEFAULT '', credential TEXT NOT NULL DEFAULT '',
    credential_tags TEXT NOT NULL DEFAULT '', unauthenticated INTEGER NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0, saved_cost REAL NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 1, latency_max INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS tollgate_usage_ts ON tollgate_usage (ts_ms);";

/// Columns added since the table's first version, added to an older file when it opens.
const ADDED: [(&str, &str); 8] = [
    ("consumer_id", "TEXT NOT NULL DEFAULT ''"),
    ("credential", "TEXT NOT NULL DEFAULT ''"),
    ("credential_tags", "TEXT NOT NULL DEFAULT ''"),
    ("unauthenticated", "INTEGER NOT NULL DEFAULT 0"),
    ("cached", "INTEGER NOT NULL DEFAULT 0"),
    ("saved_cost", "REAL NOT NULL DEFAULT 0"),
    // A row of an older file is one request: its latency is its own maximum.
    ("requests", "INTEGER NOT NULL DEFAULT 1"),
    ("latency_max", "INTEGER NOT NULL DEFAULT 0"),
];

/// The insert, with its columns named (an older file's added columns come last); a row id
/// already stored (a replayed record) is skipped.
const INSERT: &str = "INSERT OR IGNORE INTO tollgate_usage (ts_ms, request_id, consumer, application, \
    consumer_group, route, service, provider, model, prompt_tokens, completion_tokens, \
    total_tokens, cost, latency_ms, status, guardrail, consumer_id, credential, \
    credential_tags, unauthenticated, cached, saved_cost, requests, latency_max) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)";

/// Rows per multi-row insert.
const ROWS: usize = 32;
/// Columns per row, in the insert's order.
const COLUMNS: usize = 24;

/// A row's values in the insert's column order; `refused` is its count of requests
/// key-auth refused.
fn columns<'a>(r: &'a Record, refused: &'a i64) -> [&'a dyn ToSql; COLUMNS] {
    [
        &r.ts_ms,
        &r.request_id,
        &r.consumer,
        &r.application,
        &r.consumer_group,
        &r.route,
        &r.service,
        &r.provider,
        &r.model,
        &r.prompt_tokens,
        &r.completion_tokens,
        &r.total_tokens,
        &r.cost,
        &r.latency_ms,
        &r.status,
        &r.guardrail,
        &r.consumer_id,
        &r.credential,
        &r.credential_tags,
        refused,
        &r.cached,
        &r.saved_cost,
        &r.requests,
        &r.latency_max,
    ]
}

/// The insert of `ROWS` records in one statement.
fn insert_many() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let head = INSERT.split_once(" VALUES ").map_or(INSERT, |(h, _)| h);
        let row = format!("({})", vec!["?"; COLUMNS].join(", "));
        format!("{head} VALUES {}", vec![row; ROWS].join(", "))
    })
}

/// The writer's connection.
pub struct Sqlite {
    conn: Connection,
}

fn open_conn(path: &Path) -> Result<Connection, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("analytics: {}: {e}", dir.display()))?;
    }
    // Created owner-only before SQLite opens it (its -wal and -shm files take this mode).
    crate::rt::data_dir::private_options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("analytics {}: {e}", path.display()))?;
    let conn = Connection::open(path).map_err(|e| format!("analytics {}: {e}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

impl Sqlite {
    /// Opens (or creates) the file and its table.
    pub fn open(path: &Path) -> Result<Sqlite, String> {
        let conn = open_conn(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| e.to_string())?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| e.to_string())?;
        conn.execute_batch(SCHEMA)
            .and_then(|()| migrate(&conn))
            .map_err(|e| format!("analytics {}: {e}", path.display()))?;
        Ok(Sqlite { conn })
    }

    /// Inserts rows in one transaction, `ROWS` per statement (each execution of a
    /// statement has a fixed cost: callgrind put a one-row insert at ~15k instructions).
    pub fn insert(&mut self, batch: &[Record], aside: &mut StepAside) -> Result<(), String> {
        let refused: Vec<i64> = batch.iter().map(super::refused).collect();
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        {
            let mut chunks = batch.chunks_exact(ROWS);
            let mut counts = refused.chunks_exact(ROWS);
            if batch.len() >= ROWS {
                let mut many = tx
                    .prepare_cached(insert_many())
                    .map_err(|e| e.to_string())?;
                let mut values: Vec<&dyn ToSql> = Vec::with_capacity(ROWS * COLUMNS);
                for (chunk, refused) in (&mut chunks).zip(&mut counts) {
                    values.clear();
                    for (r, n) in chunk.iter().zip(refused) {
                        values.extend_from_slice(&columns(r, n));
                    }
                    many.execute(params_from_iter(values.iter()))
                        .map_err(|e| e.to_string())?;
                    aside.tick();
                }
            }
            let mut one = tx.prepare_cached(INSERT).map_err(|e| e.to_string())?;
            for (r, n) in chunks.remainder().iter().zip(counts.remainder()) {
                one.execute(params_from_iter(columns(r, n)))
                    .map_err(|e| e.to_string())?;
                aside.tick();
            }
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

/// Brings a file written by an older gateway to the current columns (records already in
/// it keep the credential's id as their application, as written then) and to one row per
/// request id: an older gateway could store a record twice (a batch that failed halfway
/// was spilled whole and replayed), and the copies are the same record.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let have: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('tollgate_usage')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for (column, kind) in ADDED {
        if !have.iter().any(|h| h == column) {
            let add = format!("ALTER TABLE tollgate_usage ADD COLUMN {column} {kind}");
            if column == "latency_max" {
                // With its value, or a crash in between would leave old rows without it.
                conn.execute_batch(&format!(
                    "BEGIN; {add}; UPDATE tollgate_usage SET latency_max = latency_ms; COMMIT;"
                ))?;
            } else {
                conn.execute_batch(&add)?;
            }
        }
    }
    let unique: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'tollgate_usage_request_id'",
        [],
        |r| r.get(0),
    )?;
    if unique == 0 {
        conn.execute_batch(
            "BEGIN;
             DELETE FROM tollgate_usage WHERE rowid NOT IN
                 (SELECT MIN(rowid) FROM tollgate_usage GROUP BY request_id);
             CREATE UNIQUE INDEX tollgate_usage_request_id ON tollgate_usage (request_id);
             COMMIT;",
        )?;
    }
    Ok(())
}

/// A result row of a usage query (`series`: bucketed, with latency) or a top query; the
/// columns are in the order `Query::sql` and `TopQuery::sql` select them.
fn row(r: &rusqlite::Row<'_>, series: bool) -> rusqlite::Result<Row> {
    Ok(if series {
        Row {
            t: r.get(0)?,
            key: r.get(1)?,
            requests: r.get(2)?,
            prompt_tokens: r.get(3)?,
            completion_tokens: r.get(4)?,
            total_tokens: r.get(5)?,
            cost: r.get(6)?,
            errors: r.get(7)?,
            latency_avg: r.get(8)?,
            latency_max: r.get(9)?,
            unauthenticated: r.get(10)?,
            cached: r.get(11)?,
            saved_cost: r.get(12)?,
        }
    } else {
        Row {
            key: r.get(0)?,
            requests: r.get(1)?,
            prompt_tokens: r.get(2)?,
            completion_tokens: r.get(3)?,
            total_tokens: r.get(4)?,
            cost: r.get(5)?,
            errors: r.get(6)?,
            unauthenticated: r.get(7)?,
            cached: r.get(8)?,
            saved_cost: r.get(9)?,
            ..Row::default()
        }
    })
}

/// Runs a usage query on its own connection.
pub fn usage(path: &Path, q: &Query) -> Result<serde_json::Value, String> {
    let conn = open_conn(path)?;
    let mut st = conn.prepare(&q.sql(false)).map_err(|e| e.to_string())?;
    let map = |r: &rusqlite::Row<'_>| row(r, true);
    let rows: Result<Vec<Row>, _> = match &q.filter {
        Some((_, v)) => st
            .query_map(params![q.bucket_ms, q.from_ms, q.to_ms, v], map)
            .map_err(|e| e.to_string())?
            .collect(),
        None => st
            .query_map(params![q.bucket_ms, q.from_ms, q.to_ms], map)
            .map_err(|e| e.to_string())?
            .collect(),
    };
    Ok(usage_answer(q, rows.map_err(|e| e.to_string())?))
}

/// Runs a top query on its own connection.
pub fn top(path: &Path, q: &TopQuery) -> Result<serde_json::Value, String> {
    let conn = open_conn(path)?;
    let mut st = conn.prepare(&q.sql(false)).map_err(|e| e.to_string())?;
    let rows: Result<Vec<Row>, _> = st
        .query_map(params![q.from_ms, q.to_ms, q.limit], |r| row(r, false))
        .map_err(|e| e.to_string())?
        .collect();
    Ok(top_answer(q, rows.map_err(|e| e.to_string())?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::rollup::Pending;
    use super::*;

    /// Batches go in `ROWS` at a time with the rest one by one, every column in its place,
    /// and a request id already stored is skipped in either form of the insert.
    #[test]
    fn batches_insert_every_record_once() {
        let dir = std::env::temp_dir().join(format!("tollgate-sqlite-{}", uuid::Uuid::new_v4()));
        let path = dir.join("a.db");
        let mut db = Sqlite::open(&path).unwrap();
        let record = |i: usize| Record {
            ts_ms: 1_000 + i as i64,
            request_id: format!("r{i}"),
            consumer: format!("c{}", i % 3),
            model: "m".into(),
            prompt_tokens: i as i64,
            total_tokens: 2 * i as i64,
            cost: 0.5,
            status: 200,
            unauthenticated: i == 5,
            cached: i64::from(i == 6),
            saved_cost: 0.25,
            requests: 1,
            ..Record::default()
        };
        let batch: Vec<Record> = (0..ROWS * 2 + 6).map(record).collect();
        db.insert(&batch, &mut StepAside::new()).unwrap();
        // A replay of a whole multi-row chunk and of single rows changes nothing.
        db.insert(&batch[..ROWS + 1], &mut StepAside::new())
            .unwrap();
        let n: i64 = db
            .conn
            .query_row("SELECT COUNT(*) FROM tollgate_usage", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n as usize, batch.len());
        let (tokens, unauth, cached): (i64, i64, i64) = db
            .conn
            .query_row(
                "SELECT SUM(total_tokens), SUM(unauthenticated), SUM(cached) FROM tollgate_usage",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let want: i64 = batch.iter().map(|r| r.total_tokens).sum();
        assert_eq!((tokens, unauth, cached), (want, 1, 1));
        let (consumer, saved): (String, f64) = db
            .conn
            .query_row(
                "SELECT consumer, saved_cost FROM tollgate_usage WHERE request_id = 'r40'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((consumer.as_str(), saved), ("c1", 0.25));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Rolled-up rows and single ones answer the Admin API's questions as one row per
    /// request would: counts, sums, errors apart from refusals, latency average and maximum.
    #[test]
    fn rollups_answer_queries_exactly() {
        let dir = std::env::temp_dir().join(format!("tollgate-sqlite-{}", uuid::Uuid::new_v4()));
        let path = dir.join("a.db");
        let mut db = Sqlite::open(&path).unwrap();
        let record = |i: i64, consumer: &str, status: i64, latency_ms: i64| Record {
            // Three seconds of one minute.
            ts_ms: 60_000 + (i % 3) * 1000 + i,
            request_id: format!("r{i}"),
            consumer: consumer.into(),
            model: "m".into(),
            prompt_tokens: 2,
            completion_tokens: 1,
            total_tokens: 3,
            cost: 0.5,
            latency_ms,
            latency_max: latency_ms,
            status,
            unauthenticated: status == 401,
            requests: 1,
            ..Record::default()
        };
        let mut batch: Vec<Record> = (0..30).map(|i| record(i, "alice", 200, 10 + i)).collect();
        batch.extend((30..40).map(|i| record(i, "", 401, 1)));
        batch.extend((40..45).map(|i| record(i, "alice", 502, 100)));
        let mut pending = Pending::default();
        for r in &batch {
            pending.add(&r.view());
        }
        let rows = pending.take();
        assert!(rows.len() <= 9, "{} rows", rows.len());
        db.insert(&rows, &mut StepAside::new()).unwrap();
        // An older release's spilled record: one request, its own row.
        let late = record(45, "alice", 200, 500);
        db.insert(&[late], &mut StepAside::new()).unwrap();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let q = Query::parse(
            &pairs(&[
                ("from", "60"),
                ("to", "120"),
                ("bucket", "minute"),
                ("group_by", "consumer"),
            ]),
            0,
        )
        .unwrap();
        let v = usage(&path, &q).unwrap();
        assert_eq!(v["totals"]["requests"], 46, "{v}");
        assert_eq!(v["totals"]["total_tokens"], 138, "{v}");
        assert_eq!(v["totals"]["errors"], 5, "refusals apart: {v}");
        assert_eq!(v["totals"]["unauthenticated"], 10, "{v}");
        let alice = &v["series"][1]["points"][0];
        assert_eq!(v["series"][1]["key"], "alice", "{v}");
        assert_eq!(alice["requests"], 36, "{v}");
        assert_eq!(alice["latency_ms_max"], 500, "{v}");
        // (10 + … + 39) + 5 × 100 + 500 over 36 requests.
        let want = f64::from((10..40).sum::<i32>() + 500 + 500) / 36.0;
        assert_eq!(alice["latency_ms_avg"], (want * 10.0).round() / 10.0, "{v}");
        let top = TopQuery::parse(
            &pairs(&[("from", "60"), ("to", "120"), ("measure", "requests")]),
            0,
        )
        .unwrap();
        let t = super::top(&path, &top).unwrap();
        assert_eq!(
            (
                t["data"][0]["key"].as_str(),
                t["data"][0]["requests"].as_i64()
            ),
            (Some("alice"), Some(36)),
            "{t}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

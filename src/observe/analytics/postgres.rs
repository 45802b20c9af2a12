//! The shared store: PostgreSQL (every gateway node writes its records to one table). The
//! writer thread drives its own single-threaded runtime; queries run on the gateway's.

use tokio_postgres::{Client, NoTls};

use super::query::{top_answer, usage_answer, Query, Row, TopQuery};
use super::Record;
use crate::rt::busy_poll::StepAside;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS tollgate_usage (
    ts_ms BIGINT NOT NULL, request_id TEXT NOT NULL, consumer TEXT NOT NULL,
    application TEXT NOT NULL, consumer_group TEXT NOT NULL, route TEXT NOT NULL,
    service TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL, cost DOUBLE PRECISION NOT NULL, latency_ms BIGINT NOT NULL,
    status BIGINT NOT NULL, guardrail TEXT NOT NULL,
    consumer_id TEXT NOT NULL DEFAULT '', credential TEXT NOT NULL DEFAULT '',
    credential_tags TEXT NOT NULL DEFAULT '', unauthenticated BIGINT NOT NULL DEFAULT 0,
    cached BIGINT NOT NULL DEFAULT 0, saved_cost DOUBLE PRECISION NOT NULL DEFAULT 0,
    requests BIGINT NOT NULL DEFAULT 1, latency_max BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS tollgate_usage_ts ON tollgate_usage (ts_ms);";

/// Columns added since the table's first version, added to an older table when a gateway
/// connects.
const ADDED: [(&str, &str); 8] = [
    ("consumer_id", "TEXT NOT NULL DEFAULT ''"),
    ("credential", "TEXT NOT NULL DEFAULT ''"),
    ("credential_tags", "TEXT NOT NULL DEFAULT ''"),
    ("unauthenticated", "BIGINT NOT NULL DEFAULT 0"),
    ("cached", "BIGINT NOT NULL DEFAULT 0"),
    ("saved_cost", "DOUBLE PRECISION NOT NULL DEFAULT 0"),
    // A row of an older table is one request: its latency is its own maximum.
    ("requests", "BIGINT NOT NULL DEFAULT 1"),
    ("latency_max", "BIGINT NOT NULL DEFAULT 0"),
];

/// The insert's columns (an older table's added columns come last).
const COLUMNS: &str = "ts_ms, request_id, consumer, application, consumer_group, route, \
    service, provider, model, prompt_tokens, completion_tokens, total_tokens, cost, latency_ms, \
    status, guardrail, consumer_id, credential, credential_tags, unauthenticated, cached, \
    saved_cost, requests, latency_max";
/// Values per row.
const PER_ROW: usize = 24;

/// Any number: it only has to be the same for every gateway (one node at a time creates or
/// changes the table).
const SCHEMA_LOCK: i64 = 0x746f_6c6c_6761_7465;

/// How long connecting may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn connect(url: &str) -> Result<Client, String> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| "analytics postgres: connect timed out".to_string())?
        .map_err(|e| format!("analytics postgres: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The writer's connection, with the runtime that drives it.
pub struct Postgres {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Postgres {
    /// Connects and creates the table.
    pub fn open(url: &str) -> Result<Postgres, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let client = rt.block_on(async {
            let mut c = connect(url).await?;
            prepare_table(&mut c)
                .await
                .map_err(|e| format!("analytics postgres: {e}"))?;
            Ok::<_, String>(c)
        })?;
        Ok(Postgres { rt, client })
    }

    /// Inserts rows with one multi-row statement per 100 (the statement is encoded in one
    /// go, so smaller ones let the proxy's thread in more often), all in one transaction: a
    /// batch that fails is spilled whole, so none of it may stay.
    pub fn insert(&mut self, batch: &[Record], aside: &mut StepAside) -> Result<(), String> {
        let client = &mut self.client;
        let pg = |e: tokio_postgres::Error| format!("analytics postgres: {e}");
        self.rt.block_on(async {
            let tx = client.transaction().await.map_err(pg)?;
            for chunk in batch.chunks(100) {
                let mut sql = format!("INSERT INTO tollgate_usage ({COLUMNS}) VALUES ");
                let refused: Vec<i64> = chunk.iter().map(super::refused).collect();
                let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
                for (i, (r, refused)) in chunk.iter().zip(&refused).enumerate() {
                    aside.tick();
                    if i > 0 {
                        sql.push(',');
                    }
                    let b = i * PER_ROW;
                    sql.push('(');
                    sql.push_str(
                        &(1..=PER_ROW)
                            .map(|n| format!("${}", b + n))
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                    sql.push(')');
                    args.extend_from_slice(&[
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
                    ]);
                }
                // A replayed row whose id is stored already is kept once.
                sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
                tx.execute(sql.as_str(), &args).await.map_err(pg)?;
            }
            tx.commit().await.map_err(pg)
        })
    }
}

/// Creates the table, or brings an older one to the current columns (records already in it
/// keep the credential's id as their application, as written then) and to one row per
/// request id (an older gateway could store a record twice: a batch that failed halfway was
/// spilled whole and replayed; the copies are the same record). Under a lock, so that
/// gateways starting together do not trip over each other's DDL.
async fn prepare_table(c: &mut Client) -> Result<(), tokio_postgres::Error> {
    let tx = c.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await?;
    tx.batch_execute(SCHEMA).await?;
    let have: Vec<String> = tx
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'tollgate_usage'",
            &[],
        )
        .await?
        .iter()
        .filter_map(|r| r.try_get(0).ok())
        .collect();
    for (column, kind) in ADDED {
        if !have.iter().any(|h| h == column) {
            tx.batch_execute(&format!(
                "ALTER TABLE tollgate_usage ADD COLUMN IF NOT EXISTS {column} {kind}"
            ))
            .await?;
            if column == "latency_max" {
                tx.batch_execute("UPDATE tollgate_usage SET latency_max = latency_ms")
                    .await?;
            }
        }
    }
    let unique = tx
        .query_one(
            "SELECT to_regclass('tollgate_usage_request_id') IS NOT NULL",
            &[],
        )
        .await?
        .try_get::<_, bool>(0)?;
    if !unique {
        tx.batch_execute(
            "DELETE FROM tollgate_usage a USING tollgate_usage b
                 WHERE a.request_id = b.request_id AND a.ctid > b.ctid;
             CREATE UNIQUE INDEX tollgate_usage_request_id ON tollgate_usage (request_id);",
        )
        .await?;
    }
    tx.commit().await
}

fn row(r: &tokio_postgres::Row, series: bool) -> Result<Row, tokio_postgres::Error> {
    Ok(if series {
        Row {
            t: r.try_get(0)?,
            key: r.try_get(1)?,
            requests: r.try_get(2)?,
            prompt_tokens: r.try_get(3)?,
            completion_tokens: r.try_get(4)?,
            total_tokens: r.try_get(5)?,
            cost: r.try_get(6)?,
            errors: r.try_get(7)?,
            latency_avg: r.try_get(8)?,
            latency_max: r.try_get(9)?,
            unauthenticated: r.try_get(10)?,
            cached: r.try_get(11)?,
            saved_cost: r.try_get(12)?,
        }
    } else {
        Row {
            key: r.try_get(0)?,
            requests: r.try_get(1)?,
            prompt_tokens: r.try_get(2)?,
            completion_tokens: r.try_get(3)?,
            total_tokens: r.try_get(4)?,
            cost: r.try_get(5)?,
            errors: r.try_get(6)?,
            unauthenticated: r.try_get(7)?,
            cached: r.try_get(8)?,
            saved_cost: r.try_get(9)?,
            ..Row::default()
        }
    })
}

/// Runs a usage query.
pub async fn usage(url: &str, q: &Query) -> Result<serde_json::Value, String> {
    let c = connect(url).await?;
    let sql = q.sql(true);
    let rows = match &q.filter {
        Some((_, v)) => {
            c.query(&sql, &[&q.bucket_ms, &q.from_ms, &q.to_ms, v])
                .await
        }
        None => c.query(&sql, &[&q.bucket_ms, &q.from_ms, &q.to_ms]).await,
    }
    .map_err(|e| format!("analytics postgres: {e}"))?;
    let rows: Result<Vec<Row>, _> = rows.iter().map(|r| row(r, true)).collect();
    Ok(usage_answer(
        q,
        rows.map_err(|e| format!("analytics postgres: {e}"))?,
    ))
}

/// Runs a top query.
pub async fn top(url: &str, q: &TopQuery) -> Result<serde_json::Value, String> {
    let c = connect(url).await?;
    let rows = c
        .query(&q.sql(true), &[&q.from_ms, &q.to_ms, &q.limit])
        .await
        .map_err(|e| format!("analytics postgres: {e}"))?;
    let rows: Result<Vec<Row>, _> = rows.iter().map(|r| row(r, false)).collect();
    Ok(top_answer(
        q,
        rows.map_err(|e| format!("analytics postgres: {e}"))?,
    ))
}

//! The configuration in PostgreSQL, for gateways that run as a cluster
//! (`serve --store postgres`): one row holds the declarative document (Kong's flat form,
//! as the Admin API keeps it) and its version. A write replaces the document only over the
//! version it was made from, so two nodes writing at once cannot lose either change: the
//! second finds the version moved, reads the newer document and makes its change again.
//! Every commit notifies channel [`CHANNEL`] with the new version, which the other nodes
//! LISTEN on; they also compare versions periodically, in case a notification is lost.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// The channel commits are announced on (the payload is the new version).
pub const CHANNEL: &str = "tollgate_config";

/// How long connecting, or one statement, may take before the store counts as down.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Any number, the same on every node: one node at a time creates the schema.
const SCHEMA_LOCK: i64 = 0x746f_6c6c_6366_6731;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection (refused, unreachable, timed out, authentication).
    #[error("PostgreSQL is unreachable: {0}")]
    Unreachable(String),
    /// A statement failed on a live connection.
    #[error("PostgreSQL refused the statement: {0}")]
    Query(String),
}

/// A stored document and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub version: i64,
    pub document: String,
}

/// What a save did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Committed as this version.
    Committed(i64),
    /// Another node committed first: the document was not saved.
    Conflict,
}

/// The configuration store of one node: a connection, opened on first use and again after
/// it broke.
pub struct ConfigStore {
    url: String,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.write_str("ConfigStore")
    }
}

async fn connect(
    url: &str,
) -> Result<
    (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    StoreError,
> {
    tokio::time::timeout(TIMEOUT, tokio_postgres::connect(url, NoTls))
        .await
        .map_err(|_| {
            StoreError::Unreachable(format!("no connection within {} s", TIMEOUT.as_secs()))
        })?
        .map_err(|e| StoreError::Unreachable(describe(&e)))
}

/// An error with its causes (tokio-postgres says "error connecting to server" and keeps
/// the reason, e.g. "Connection refused", in its source).
fn describe(e: &tokio_postgres::Error) -> String {
    crate::rt::background::error_chain(e)
}

fn query_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) if !e.is_closed() => StoreError::Query(db.message().to_string()),
        _ => StoreError::Unreachable(describe(&e)),
    }
}

impl ConfigStore {
    /// A store at `url` (a conninfo string or a postgres:// URL); nothing is connected yet.
    pub fn new(url: &str) -> ConfigStore {
        ConfigStore {
            url: url.to_string(),
            client: Mutex::new(None),
        }
    }

    /// Runs `work` on the connection (opened if needed), within the timeout; a connection
    /// that broke is dropped so the next call opens a new one.
    async fn with_client<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(
            &'c mut Client,
        )
            -> futures_util::future::BoxFuture<'c, Result<T, tokio_postgres::Error>>,
    {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            let (client, conn) = connect(&self.url).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            *guard = Some(client);
        }
        let Some(client) = guard.as_mut() else {
            return Err(StoreError::Unreachable("no connection".into()));
        };
        let result = match tokio::time::timeout(TIMEOUT, work(client)).await {
            Ok(r) => r.map_err(query_error),
            Err(_) => Err(StoreError::Unreachable(format!(
                "no answer within {} s",
                TIMEOUT.as_secs()
            ))),
        };
        if let Err(StoreError::Unreachable(_)) = &result {
            *guard = None;
        }
        result
    }

    /// Creates the schema if it is not there (idempotent; safe from many nodes at once).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.with_client(|c| {
            Box::pin(async move {
                // "already exists, skipping" is no news on every start after the first.
                c.batch_execute("SET client_min_messages = warning").await?;
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                    .await?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS tollgate_config (
                        id smallint PRIMARY KEY CHECK (id = 1),
                        version bigint NOT NULL,
                        document text NOT NULL,
                        updated_at timestamptz NOT NULL DEFAULT now()
                    )",
                )
                .await?;
                tx.commit().await
            })
        })
        .await
    }

    /// The stored document, if one was ever saved.
    pub async fn current(&self) -> Result<Option<Stored>, StoreError> {
        self.with_client(|c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT version, document FROM tollgate_config WHERE id = 1",
                        &[],
                    )
                    .await?;
                Ok(row.map(|r| Stored {
                    version: r.get(0),
                    document: r.get(1),
                }))
            })
        })
        .await
    }

    /// The stored version (0: nothing saved yet).
    pub async fn version(&self) -> Result<i64, StoreError> {
        self.with_client(|c| {
            Box::pin(async move {
                let row = c
                    .query_opt("SELECT version FROM tollgate_config WHERE id = 1", &[])
                    .await?;
                Ok(row.map_or(0, |r| r.get(0)))
            })
        })
        .await
    }

    /// Saves `document` over version `over` (0: over nothing) and announces the new
    /// version; [`Saved::Conflict`] when the stored version is another.
    pub async fn save(&self, over: i64, document: &str) -> Result<Saved, StoreError> {
        let document = document.to_string();
        self.with_client(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let row = if over == 0 {
                    tx.query_opt(
                        "INSERT INTO tollgate_config (id, version, document) VALUES (1, 1, $1)
                         ON CONFLICT (id) DO NOTHING RETURNING version",
                        &[&document],
                    )
                    .await?
                } else {
                    tx.query_opt(
                        "UPDATE tollgate_config SET version = version + 1, document = $1,
                         updated_at = now() WHERE id = 1 AND version = $2 RETURNING version",
                        &[&document, &over],
                    )
                    .await?
                };
                let Some(row) = row else {
                    tx.rollback().await?;
                    return Ok(Saved::Conflict);
                };
                let version: i64 = row.get(0);
                tx.execute(
                    "SELECT pg_notify($1, $2)",
                    &[&CHANNEL, &version.to_string()],
                )
                .await?;
                tx.commit().await?;
                Ok(Saved::Committed(version))
            })
        })
        .await
    }
}

/// Follows the versions other nodes commit: each notification's version is sent on the
/// returned channel, as is a `0` whenever the listening connection was (re)opened, when a
/// notification may have been missed. It reconnects after a second while PostgreSQL is down.
pub fn listen(url: &str) -> mpsc::Receiver<i64> {
    let (tx, rx) = mpsc::channel(16);
    let url = url.to_string();
    tokio::spawn(async move {
        loop {
            if tx.is_closed() {
                return;
            }
            if let Err(e) = follow(&url, &tx).await {
                tracing::debug!("config store: listening stopped: {e}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    rx
}

/// One listening connection, until it breaks.
async fn follow(url: &str, tx: &mpsc::Sender<i64>) -> Result<(), StoreError> {
    let (client, mut conn) = connect(url).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    let statement = format!("LISTEN {CHANNEL}");
    let listening = client.batch_execute(&statement);
    // The connection is driven by reading its messages; the LISTEN completes meanwhile.
    let mut listening = std::pin::pin!(listening);
    loop {
        tokio::select! {
            done = &mut listening => {
                done.map_err(query_error)?;
                break;
            }
            m = messages.next() => match m {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(query_error(e)),
                None => return Err(StoreError::Unreachable("the connection closed".into())),
            },
        }
    }
    // Listening from here: whatever was committed before may have been missed.
    if tx.send(0).await.is_err() {
        return Ok(());
    }
    while let Some(m) = messages.next().await {
        match m.map_err(query_error)? {
            AsyncMessage::Notification(n) if n.channel() == CHANNEL => {
                let version = n.payload().parse().unwrap_or(0);
                if tx.send(version).await.is_err() {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    Err(StoreError::Unreachable("the connection closed".into()))
}

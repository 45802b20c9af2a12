//! `vectordb.strategy: pgvector`: description vectors in a PostgreSQL table whose column has
//! pgvector's `vector` type, so a cluster computes each description once and the vectors can
//! be inspected (and searched) with pgvector's operators.
//!
//! The table `tollgate_semantic_vectors (key text primary key, embedding vector, created_at)`
//! is created when missing, and the `vector` extension too when the user may create it. A
//! server without pgvector, or a database where it cannot be created, is refused at load
//! with a message that says which.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::config::vault::{self, VaultTable};

use super::FieldErrors;

/// `vectordb.pgvector` (Kong's record); TLS fields are accepted only when off.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgvectorConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default = "default_user")]
    pub user: String,
    pub password: Option<String>,
    #[serde(default)]
    pub ssl: bool,
    #[serde(default)]
    pub ssl_required: bool,
    pub ssl_verify: Option<bool>,
    pub ssl_version: Option<String>,
    pub ssl_cert: Option<String>,
    pub ssl_cert_key: Option<String>,
    /// Milliseconds, for connecting and for each statement.
    pub timeout: Option<u64>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_database() -> String {
    "kong-pgvector".into()
}
fn default_user() -> String {
    "postgres".into()
}

/// Kong's default `vectordb.pgvector.timeout` (ms).
const TIMEOUT_MS: u64 = 5000;

/// The table holding the vectors.
const TABLE: &str = "tollgate_semantic_vectors";
/// The semantic cache's entries (`ai-semantic-cache`).
const CACHE_TABLE: &str = "tollgate_semantic_cache";

/// One cache entry read back: key, answer, stored and expiry times (ms), distance.
pub type CacheRow = (String, String, u64, u64, f64);

/// Why a check failed.
#[derive(Debug)]
pub enum Problem {
    /// No answer (refused, timed out): may be temporary.
    Unreachable(String),
    /// The server answered no (authentication, missing database, no pgvector, privileges).
    Refused(String),
}

impl Problem {
    fn message(self) -> String {
        match self {
            Problem::Unreachable(m) | Problem::Refused(m) => m,
        }
    }
}

/// A PostgreSQL database holding description vectors.
pub struct PgStore {
    config: tokio_postgres::Config,
    timeout: Duration,
    /// The connection the semantic cache keeps open (its lookups are on the request path).
    shared: tokio::sync::Mutex<Option<std::sync::Arc<Client>>>,
    /// Puts since the last sweep of expired cache entries.
    puts: std::sync::atomic::AtomicU64,
    /// `user@host:port/database`: shown in errors and logs instead of the config (which holds
    /// the password).
    address: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("address", &self.address)
            .finish()
    }
}

/// Databases this process has already checked (and prepared): config reloads and admin
/// writes recompile every plugin, and need not ask again.
fn checked() -> &'static Mutex<HashSet<String>> {
    static CHECKED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    CHECKED.get_or_init(|| Mutex::new(HashSet::new()))
}

fn was_checked(address: &str) -> bool {
    checked()
        .lock()
        .map(|s| s.contains(address))
        .unwrap_or(false)
}

impl PgStore {
    /// The store `p` describes (at `path`), not yet connected; errors name the field.
    pub(super) fn compile(
        path: &str,
        p: &PgvectorConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut FieldErrors,
    ) -> Option<PgStore> {
        let before = errors.len();
        let tls = [
            ("ssl", p.ssl),
            ("ssl_required", p.ssl_required),
            (
                "ssl_cert",
                p.ssl_cert.as_deref().is_some_and(|c| !c.is_empty()),
            ),
            (
                "ssl_cert_key",
                p.ssl_cert_key.as_deref().is_some_and(|c| !c.is_empty()),
            ),
        ];
        for (field, on) in tls {
            if on {
                errors.push((
                    format!("{path}.{field}"),
                    "not supported by tollgate yet (PostgreSQL over plain TCP is)".into(),
                ));
            }
        }
        for (field, value) in [
            ("host", &p.host),
            ("database", &p.database),
            ("user", &p.user),
        ] {
            if value.is_empty() {
                errors.push((format!("{path}.{field}"), "required".into()));
            }
        }
        if p.timeout == Some(0) {
            errors.push((format!("{path}.timeout"), "must be at least 1 (ms)".into()));
        }
        let password = vault::field_secret(
            &format!("{path}.password"),
            p.password.as_deref(),
            vaults,
            env,
        )
        .unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        if errors.len() > before {
            return None;
        }
        let timeout = Duration::from_millis(p.timeout.unwrap_or(TIMEOUT_MS));
        let mut config = tokio_postgres::Config::new();
        config
            .host(&p.host)
            .port(p.port)
            .dbname(&p.database)
            .user(&p.user)
            .application_name("tollgate")
            .connect_timeout(timeout);
        if let Some(pw) = &password {
            config.password(pw.expose().as_bytes());
        }
        Some(PgStore {
            config,
            timeout,
            shared: tokio::sync::Mutex::new(None),
            puts: std::sync::atomic::AtomicU64::new(0),
            address: format!("{}@{}:{}/{}", p.user, p.host, p.port, p.database),
        })
    }

    /// `user@host:port/database`, for logs.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// [`PgStore::check`] from synchronous code (the config loader), on a thread of its
    /// own: the loader may run inside a runtime, which cannot block on another one.
    pub(super) fn check_blocking(&self) -> Result<(), Problem> {
        if was_checked(&self.address) {
            return Ok(());
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        Problem::Unreachable(format!("cannot start a runtime to check: {e}"))
                    })?;
                rt.block_on(self.check())
            })
            .join()
            .unwrap_or_else(|_| Err(Problem::Unreachable("the check failed".into())))
        })
    }

    /// Connects, makes sure the `vector` extension and the table exist, and remembers that
    /// this database is ready.
    async fn check(&self) -> Result<(), Problem> {
        let client = self.client().await?;
        self.prepare(&client).await?;
        if let Ok(mut s) = checked().lock() {
            s.insert(self.address.clone());
        }
        Ok(())
    }

    async fn client(&self) -> Result<Client, Problem> {
        let connect = self.config.connect(NoTls);
        let (client, connection) = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| {
                Problem::Unreachable(format!(
                    "postgresql {}: no connection within {} ms",
                    self.address,
                    self.timeout.as_millis()
                ))
            })?
            .map_err(|e| self.problem(&e))?;
        // The connection task ends when `client` is dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("pgvector connection closed: {e}");
            }
        });
        Ok(client)
    }

    fn problem(&self, e: &tokio_postgres::Error) -> Problem {
        match e.as_db_error() {
            Some(db) => Problem::Refused(format!("postgresql {}: {}", self.address, db.message())),
            None => Problem::Unreachable(format!("postgresql {}: {e}", self.address)),
        }
    }

    async fn timed<T>(
        &self,
        what: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Problem> {
        match tokio::time::timeout(self.timeout, what).await {
            Ok(r) => r.map_err(|e| self.problem(&e)),
            Err(_) => Err(Problem::Unreachable(format!(
                "postgresql {}: no answer within {} ms",
                self.address,
                self.timeout.as_millis()
            ))),
        }
    }

    async fn prepare(&self, client: &Client) -> Result<(), Problem> {
        let created = self
            .timed(client.query_opt("SELECT 1 FROM pg_extension WHERE extname = 'vector'", &[]))
            .await?
            .is_some();
        if !created {
            let available = self
                .timed(client.query_opt(
                    "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'",
                    &[],
                ))
                .await?
                .is_some();
            if !available {
                return Err(Problem::Refused(format!(
                    "postgresql {} has no pgvector: the 'vector' extension is not installed on that server (install pgvector there, or use vectordb.strategy 'redis', or no strategy for an in-memory index)",
                    self.address
                )));
            }
            match tokio::time::timeout(
                self.timeout,
                client.batch_execute("CREATE EXTENSION IF NOT EXISTS vector"),
            )
            .await
            {
                Ok(Ok(())) => {}
                // Another gateway created it at the same moment.
                Ok(Err(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
                Ok(Err(e)) => {
                    let why = e
                        .as_db_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or_else(|| e.to_string());
                    return Err(Problem::Refused(format!(
                        "postgresql {}: pgvector is installed but the 'vector' extension is not created in this database, and creating it failed ({why}); run CREATE EXTENSION vector; in it as a superuser",
                        self.address
                    )));
                }
                Err(_) => {
                    return Err(Problem::Unreachable(format!(
                        "postgresql {}: CREATE EXTENSION vector got no answer within {} ms",
                        self.address,
                        self.timeout.as_millis()
                    )))
                }
            }
        }
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (key text PRIMARY KEY, embedding vector NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        );
        match tokio::time::timeout(self.timeout, client.batch_execute(&create)).await {
            Ok(Ok(())) => Ok(()),
            // Two gateways creating it at once: one wins, the other sees the type's row.
            Ok(Err(e))
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                    || e.code() == Some(&SqlState::DUPLICATE_TABLE) =>
            {
                Ok(())
            }
            Ok(Err(e)) => Err(self.problem(&e)),
            Err(_) => Err(Problem::Unreachable(format!(
                "postgresql {}: CREATE TABLE got no answer within {} ms",
                self.address,
                self.timeout.as_millis()
            ))),
        }
    }

    /// A connection to a prepared database (prepared now if the load could not).
    async fn ready(&self) -> Result<Client, String> {
        let client = self.client().await.map_err(Problem::message)?;
        if !was_checked(&self.address) {
            self.prepare(&client).await.map_err(Problem::message)?;
            if let Ok(mut s) = checked().lock() {
                s.insert(self.address.clone());
            }
        }
        Ok(client)
    }

    /// The vectors stored under `keys`, as pgvector's text form (`[1,2,3]`), None where
    /// missing.
    pub async fn get(&self, keys: &[String]) -> Result<Vec<Option<String>>, String> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.ready().await?;
        let sql = format!("SELECT key, embedding::text FROM {TABLE} WHERE key = ANY($1)");
        let rows = self
            .timed(client.query(&sql, &[&keys]))
            .await
            .map_err(Problem::message)?;
        let mut out = vec![None; keys.len()];
        for row in rows {
            let (Ok(key), Ok(vector)) = (row.try_get::<_, String>(0), row.try_get::<_, String>(1))
            else {
                continue;
            };
            if let Some(i) = keys.iter().position(|k| *k == key) {
                out[i] = Some(vector);
            }
        }
        Ok(out)
    }

    /// Stores each `(key, vector)` pair (a vector as a JSON array, which is pgvector's text
    /// form); a key another gateway stored first keeps its vector.
    pub async fn set(&self, pairs: &[(String, String)]) -> Result<(), String> {
        if pairs.is_empty() {
            return Ok(());
        }
        let client = self.ready().await?;
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        let vectors: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
        let sql = format!(
            "INSERT INTO {TABLE} (key, embedding) SELECT k, v::vector FROM unnest($1::text[], $2::text[]) AS t(k, v) ON CONFLICT (key) DO NOTHING"
        );
        self.timed(client.execute(&sql, &[&keys, &vectors]))
            .await
            .map_err(Problem::message)?;
        Ok(())
    }

    /// The cache's open connection, its table created the first time.
    async fn cache_client(&self) -> Result<std::sync::Arc<Client>, String> {
        let mut shared = self.shared.lock().await;
        if let Some(c) = shared.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = self.ready().await?;
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {CACHE_TABLE} (ns text NOT NULL, key text NOT NULL, embedding vector NOT NULL, answer text NOT NULL, stored_ms bigint NOT NULL, expires_ms bigint NOT NULL, PRIMARY KEY (ns, key))"
        );
        match self.timed(client.batch_execute(&create)).await {
            Ok(()) => {}
            // Two gateways creating it at once.
            Err(Problem::Refused(e)) if e.contains("already exists") => {}
            Err(e) => return Err(e.message()),
        }
        let client = std::sync::Arc::new(client);
        *shared = Some(client.clone());
        Ok(client)
    }

    fn row(r: &tokio_postgres::Row) -> Option<CacheRow> {
        Some((
            r.try_get(0).ok()?,
            r.try_get(1).ok()?,
            r.try_get::<_, i64>(2).ok()? as u64,
            r.try_get::<_, i64>(3).ok()? as u64,
            r.try_get::<_, f64>(4).unwrap_or(0.0),
        ))
    }

    /// The live cache entry `key` of `ns`.
    pub async fn cache_exact(
        &self,
        ns: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<CacheRow>, String> {
        let c = self.cache_client().await?;
        let sql = format!(
            "SELECT key, answer, stored_ms, expires_ms, 0::float8 FROM {CACHE_TABLE} WHERE ns = $1 AND key = $2 AND expires_ms > $3"
        );
        let row = self
            .timed(c.query_opt(&sql, &[&ns, &key, &(now_ms as i64)]))
            .await
            .map_err(Problem::message)?;
        Ok(row.as_ref().and_then(Self::row))
    }

    /// The live cache entry of `ns` nearest `v` (pgvector's `<=>` cosine distance or `<->`
    /// L2 distance), if within `threshold`.
    pub async fn cache_nearest(
        &self,
        ns: &str,
        v: &[f32],
        cosine: bool,
        threshold: f64,
        now_ms: u64,
    ) -> Result<Option<CacheRow>, String> {
        let c = self.cache_client().await?;
        let op = if cosine { "<=>" } else { "<->" };
        let sql = format!(
            "SELECT key, answer, stored_ms, expires_ms, (embedding {op} $2::text::vector)::float8 AS d FROM {CACHE_TABLE} WHERE ns = $1 AND expires_ms > $3 AND vector_dims(embedding) = $4 ORDER BY d LIMIT 1"
        );
        let vector = super::encode(v);
        let dims = v.len() as i32;
        let row = self
            .timed(c.query_opt(&sql, &[&ns, &vector, &(now_ms as i64), &dims]))
            .await
            .map_err(Problem::message)?;
        Ok(row
            .as_ref()
            .and_then(Self::row)
            .filter(|r| r.4 <= threshold))
    }

    /// Stores a cache entry (replacing one with its key), sweeping expired entries now and
    /// then.
    #[allow(clippy::too_many_arguments)]
    pub async fn cache_put(
        &self,
        ns: &str,
        key: &str,
        v: &[f32],
        answer: &str,
        stored_ms: u64,
        expires_ms: u64,
    ) -> Result<(), String> {
        let c = self.cache_client().await?;
        let sql = format!(
            "INSERT INTO {CACHE_TABLE} (ns, key, embedding, answer, stored_ms, expires_ms) VALUES ($1, $2, $3::text::vector, $4, $5, $6) ON CONFLICT (ns, key) DO UPDATE SET embedding = EXCLUDED.embedding, answer = EXCLUDED.answer, stored_ms = EXCLUDED.stored_ms, expires_ms = EXCLUDED.expires_ms"
        );
        let vector = super::encode(v);
        let (s, e) = (stored_ms as i64, expires_ms as i64);
        self.timed(c.execute(&sql, &[&ns, &key, &vector, &answer, &s, &e]))
            .await
            .map_err(Problem::message)?;
        if self.puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64 == 0 {
            let sweep = format!("DELETE FROM {CACHE_TABLE} WHERE expires_ms < $1");
            self.timed(c.execute(&sweep, &[&s]))
                .await
                .map_err(Problem::message)?;
        }
        Ok(())
    }
}

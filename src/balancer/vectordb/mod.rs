//! `config.vectordb`: where semantic routing keeps the target descriptions' vectors.
//!
//! The search itself is always exact and in memory (`balancer::semantic`); the strategy
//! decides where the vectors come from when a config snapshot is first used:
//! - none given: computed through the embeddings provider, kept in memory (a tollgate
//!   extension; Kong requires a strategy);
//! - `redis` / `pgvector`: read from the store first, computed and stored there when
//!   missing, so every gateway of a cluster computes each description once.
//!
//! Either way the process keeps every description vector it has had (`semantic_router`),
//! so a store that is down changes no routing: its vectors come from the process, or are
//! computed again.

pub mod pgvector;

use serde::Deserialize;
use serde_json::Value;

use crate::balancer::semantic::Metric;
use crate::config::vault::{self, VaultTable};

pub mod cache;

pub use self::pgvector::{PgStore, PgvectorConfig};
pub use crate::store::redis::{RedisConfig, RedisStore};

/// `config.vectordb`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VectordbConfig {
    pub strategy: Option<Strategy>,
    pub dimensions: u64,
    pub distance_metric: Metric,
    pub threshold: Option<f64>,
    pub redis: Option<RedisConfig>,
    pub pgvector: Option<PgvectorConfig>,
}

/// `vectordb.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Redis,
    Pgvector,
}

type FieldErrors = Vec<(String, String)>;

/// Where the description vectors live.
#[derive(Debug)]
pub enum Store {
    Memory,
    Redis(Box<RedisStore>),
    Pgvector(Box<PgStore>),
}

/// Checks a `pgvector` database as a config goes into service (see [`Store::activate`]).
pub fn check_pgvector(
    store: &pgvector::PgStore,
    path: &str,
) -> Result<Option<(String, String)>, (String, String)> {
    let path = format!("{path}.pgvector");
    match store.check_blocking() {
        Ok(()) => Ok(None),
        Err(pgvector::Problem::Unreachable(e)) => Ok(Some((
            path,
            format!("{e}; it is tried again on the first request that needs it (semantic routing meanwhile keeps description vectors in the process)"),
        ))),
        Err(pgvector::Problem::Refused(e)) => Err((path, e)),
    }
}

impl Store {
    /// The store `c` asks for (at `path`); errors name the field. Nothing is connected
    /// here: [`Store::activate`] checks a `pgvector` database when the config goes into
    /// service.
    pub fn compile(
        path: &str,
        c: &VectordbConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut FieldErrors,
    ) -> Option<Store> {
        match c.strategy {
            None => Some(Store::Memory),
            Some(Strategy::Pgvector) => {
                let p = match &c.pgvector {
                    Some(p) => p.clone(),
                    None => defaults::<PgvectorConfig>()?,
                };
                let path = format!("{path}.pgvector");
                let store = PgStore::compile(&path, &p, vaults, env, errors)?;
                Some(Store::Pgvector(Box::new(store)))
            }
            Some(Strategy::Redis) => {
                let r = c.redis.clone().unwrap_or_default();
                let at = format!("{path}.redis");
                let password = vault::field_secret(
                    &format!("{at}.password"),
                    r.password.as_deref(),
                    vaults,
                    env,
                );
                RedisStore::compile(&at, &r, password, errors).map(|r| Store::Redis(Box::new(r)))
            }
        }
    }

    /// Checks a `pgvector` store (the extension and the table) as its config goes into
    /// service, `path` naming its field: Ok with a warning when the database cannot be
    /// reached now (it is tried again on the first request), Err when it refuses.
    pub fn activate(&self, path: &str) -> Result<Option<(String, String)>, (String, String)> {
        match self {
            Store::Pgvector(store) => check_pgvector(store, path),
            _ => Ok(None),
        }
    }

    /// The vectors stored under `keys` (None where missing; all None in memory).
    pub async fn get(&self, keys: &[String]) -> Result<Vec<Option<String>>, String> {
        match self {
            Store::Memory => Ok(vec![None; keys.len()]),
            Store::Redis(r) => r.get(keys).await,
            Store::Pgvector(p) => p.get(keys).await,
        }
    }

    /// Stores each `(key, vector)` pair (nothing in memory: the index is the memory).
    pub async fn set(&self, pairs: &[(String, String)]) -> Result<(), String> {
        match self {
            Store::Memory => Ok(()),
            Store::Redis(r) => r.set(pairs).await,
            Store::Pgvector(p) => p.set(pairs).await,
        }
    }

    /// The strategy's name (metric label).
    pub fn strategy(&self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Redis(_) => "redis",
            Store::Pgvector(_) => "pgvector",
        }
    }

    /// Where the vectors live, for logs.
    pub fn describe(&self) -> String {
        match self {
            Store::Memory => "memory".into(),
            Store::Redis(r) => format!("redis {}", r.address()),
            Store::Pgvector(p) => format!("pgvector {}", p.address()),
        }
    }
}

/// A record with every field at its default (Kong's defaults when the block is left out).
pub(crate) fn defaults<T: serde::de::DeserializeOwned>() -> Option<T> {
    serde_json::from_value(Value::Object(Default::default())).ok()
}

/// The store key of one description's vector: the plugin, the embeddings model, the
/// dimensions and the description (hashed: descriptions may be long) name it, so a changed
/// model or description never reads a stale vector.
pub fn key(plugin_id: &str, model: &str, dimensions: u64, description: &str) -> String {
    let mut material = Vec::new();
    for part in [
        model.as_bytes(),
        dimensions.to_string().as_bytes(),
        description.as_bytes(),
    ] {
        material.extend_from_slice(&(part.len() as u64).to_be_bytes());
        material.extend_from_slice(part);
    }
    let d = ring::digest::digest(&ring::digest::SHA256, &material);
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("tollgate:semantic:{plugin_id}:{hex}")
}

/// A vector as stored (a JSON array of numbers).
pub fn encode(v: &[f32]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// A stored vector, if it is one of `dimensions` numbers.
pub fn decode(s: &str, dimensions: u64) -> Option<Vec<f32>> {
    let v: Vec<f32> = serde_json::from_str(s).ok()?;
    (v.len() as u64 == dimensions).then_some(v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(v: Value) -> Result<Store, FieldErrors> {
        let c: VectordbConfig = serde_json::from_value(v).unwrap();
        let mut e = Vec::new();
        let vaults = VaultTable::new();
        match Store::compile("config.vectordb", &c, &vaults, &|_| None, &mut e) {
            Some(s) if e.is_empty() => Ok(s),
            _ => Err(e),
        }
    }

    #[test]
    fn strategies() {
        let base = json!({"dimensions": 8, "distance_metric": "cosine", "threshold": 0.5});
        assert!(matches!(compile(base.clone()), Ok(Store::Memory)));
        let mut r = base.clone();
        r["strategy"] = json!("redis");
        r["redis"] = json!({"host": "127.0.0.1", "port": 6379, "password": "pw"});
        match compile(r).unwrap() {
            Store::Redis(s) => {
                assert_eq!(s.address(), "127.0.0.1:6379/0");
                assert!(!format!("{s:?}").contains("pw"));
            }
            other => panic!("redis expected, got {other:?}"),
        }
        // Refused before any connection is tried (the database checks are in
        // tests/balancer.rs, against the local PostgreSQL).
        let mut p = base.clone();
        p["strategy"] = json!("pgvector");
        p["pgvector"] = json!({"ssl": true, "user": "", "timeout": 0, "password": "pw"});
        let e = compile(p).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "config.vectordb.pgvector.ssl",
                "config.vectordb.pgvector.user",
                "config.vectordb.pgvector.timeout"
            ]
        );
        assert!(!format!("{e:?}").contains("pw"));
        let mut s = base;
        s["strategy"] = json!("redis");
        s["redis"] = json!({"ssl": true, "cluster_nodes": [{"ip": "1.2.3.4", "port": 1}]});
        let e = compile(s).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].0, "config.vectordb.redis.ssl");
    }

    #[test]
    fn keys_and_values() {
        let k = key("p1", "openai/m", 8, "code");
        assert!(k.starts_with("tollgate:semantic:p1:"));
        assert_eq!(k, key("p1", "openai/m", 8, "code"));
        assert_ne!(k, key("p1", "openai/m", 8, "math"));
        assert_ne!(k, key("p1", "openai/other", 8, "code"));
        assert_ne!(k, key("p1", "openai/m", 16, "code"));
        assert_ne!(k, key("p2", "openai/m", 8, "code"));
        let s = encode(&[0.5, -1.0]);
        assert_eq!(decode(&s, 2), Some(vec![0.5, -1.0]));
        assert_eq!(decode(&s, 3), None);
        assert_eq!(decode("nope", 2), None);
    }
}

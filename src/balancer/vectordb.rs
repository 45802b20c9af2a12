//! `config.vectordb`: where semantic routing keeps the target descriptions' vectors.
//!
//! The search itself is always exact and in memory (`balancer::semantic`); the strategy
//! decides where the vectors come from when a config snapshot is first used:
//! - none given: computed through the embeddings provider, kept in memory (a tollgate
//!   extension; Kong requires a strategy);
//! - `redis`: read from Redis first, computed and stored there when missing, so every
//!   gateway of a cluster computes each description once. Plain keys (`GET`/`SET`), no
//!   RediSearch module needed;
//! - `pgvector`: refused at load (see `docs/balancer.md`).

use std::time::Duration;

use redis::{AsyncCommands, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use serde::Deserialize;
use serde_json::Value;

use crate::balancer::semantic::Metric;
use crate::config::vault::{self, VaultTable};
use crate::secret::Secret;

/// `config.vectordb`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectordbConfig {
    pub strategy: Option<Strategy>,
    pub dimensions: u64,
    pub distance_metric: Metric,
    pub threshold: Option<f64>,
    pub redis: Option<RedisConfig>,
    pub pgvector: Option<Value>,
}

/// `vectordb.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Redis,
    Pgvector,
}

/// Kong's shared Redis record (`vectordb.redis`); the fields tollgate does not support are
/// accepted only when unset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub database: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(default)]
    pub ssl: bool,
    pub ssl_verify: Option<bool>,
    pub server_name: Option<String>,
    pub connect_timeout: Option<u64>,
    pub send_timeout: Option<u64>,
    pub read_timeout: Option<u64>,
    pub timeout: Option<u64>,
    pub keepalive_pool_size: Option<u64>,
    pub keepalive_backlog: Option<u64>,
    pub sentinel_master: Option<Value>,
    pub sentinel_role: Option<Value>,
    pub sentinel_addresses: Option<Value>,
    pub sentinel_nodes: Option<Value>,
    pub sentinel_username: Option<Value>,
    pub sentinel_password: Option<Value>,
    pub cluster_addresses: Option<Value>,
    pub cluster_nodes: Option<Value>,
    pub cluster_max_redirections: Option<Value>,
    pub connection_is_proxied: Option<bool>,
    pub cloud_authentication: Option<Value>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    6379
}

/// Kong's Redis default for connect/send/read timeouts (ms).
const REDIS_TIMEOUT_MS: u64 = 2000;

type FieldErrors = Vec<(String, String)>;

/// Where the description vectors live.
#[derive(Debug)]
pub enum Store {
    Memory,
    Redis(Box<RedisStore>),
}

/// A Redis holding description vectors under keys named by plugin, model and description.
pub struct RedisStore {
    info: redis::ConnectionInfo,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// Shown in errors and logs instead of the connection info (which holds the password).
    address: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.address)
            .finish()
    }
}

impl Store {
    /// The store `c` asks for (at `path`); errors name the field.
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
                errors.push((
                    format!("{path}.strategy"),
                    "'pgvector' is not supported by tollgate yet (use 'redis', or no strategy for an in-memory index)".into(),
                ));
                None
            }
            Some(Strategy::Redis) => {
                let r = match &c.redis {
                    Some(r) => r.clone(),
                    None => {
                        serde_json::from_value::<RedisConfig>(Value::Object(Default::default()))
                            .ok()?
                    }
                };
                RedisStore::compile(&format!("{path}.redis"), &r, vaults, env, errors)
                    .map(|r| Store::Redis(Box::new(r)))
            }
        }
    }
}

impl RedisStore {
    fn compile(
        path: &str,
        r: &RedisConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut FieldErrors,
    ) -> Option<RedisStore> {
        let before = errors.len();
        let unsupported: [(&str, bool); 11] = [
            ("ssl", r.ssl),
            ("sentinel_master", set(&r.sentinel_master)),
            ("sentinel_role", set(&r.sentinel_role)),
            ("sentinel_addresses", set(&r.sentinel_addresses)),
            ("sentinel_nodes", set(&r.sentinel_nodes)),
            ("sentinel_username", set(&r.sentinel_username)),
            ("sentinel_password", set(&r.sentinel_password)),
            ("cluster_addresses", set(&r.cluster_addresses)),
            ("cluster_nodes", set(&r.cluster_nodes)),
            (
                "connection_is_proxied",
                r.connection_is_proxied == Some(true),
            ),
            ("cloud_authentication", set(&r.cloud_authentication)),
        ];
        for (field, on) in unsupported {
            if on {
                errors.push((
                    format!("{path}.{field}"),
                    "not supported by tollgate yet (a single Redis over plain TCP is)".into(),
                ));
            }
        }
        if r.host.is_empty() {
            errors.push((format!("{path}.host"), "required".into()));
        }
        let password = match r.password.as_deref().filter(|p| !p.is_empty()) {
            Some(p) if vault::is_reference(p) => {
                match vault::resolve_with(&format!("{path}.password"), p, vaults, env)
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.current())
                {
                    Ok(s) => Some(s),
                    Err(e) => {
                        errors.push((
                            format!("{path}.password"),
                            format!("could not resolve {p}: {e}"),
                        ));
                        None
                    }
                }
            }
            Some(p) => Some(Secret::new(p.to_string())),
            None => None,
        };
        if errors.len() > before {
            return None;
        }
        let mut settings = RedisConnectionInfo::default().set_db(r.database);
        if let Some(u) = r.username.as_deref().filter(|u| !u.is_empty()) {
            settings = settings.set_username(u);
        }
        if let Some(p) = &password {
            settings = settings.set_password(p.expose());
        }
        let info = match ConnectionAddr::Tcp(r.host.clone(), r.port).into_connection_info() {
            Ok(i) => i.set_redis_settings(settings),
            Err(e) => {
                errors.push((format!("{path}.host"), e.to_string()));
                return None;
            }
        };
        let ms = |v: Option<u64>| {
            Duration::from_millis(v.or(r.timeout).unwrap_or(REDIS_TIMEOUT_MS).max(1))
        };
        Some(RedisStore {
            info,
            connect_timeout: ms(r.connect_timeout),
            response_timeout: ms(r.read_timeout).max(ms(r.send_timeout)),
            address: format!("{}:{}/{}", r.host, r.port, r.database),
        })
    }

    /// `host:port/db`, for logs.
    pub fn address(&self) -> &str {
        &self.address
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let client = redis::Client::open(self.info.clone()).map_err(|e| self.error(e))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(e))
    }

    fn error(&self, e: redis::RedisError) -> String {
        format!("redis {}: {e}", self.address)
    }

    /// The values stored under `keys` (None where a key is missing).
    pub async fn get(&self, keys: &[String]) -> Result<Vec<Option<String>>, String> {
        let mut con = self.connection().await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut con)
            .await
            .map_err(|e| self.error(e))
    }

    /// Stores each `(key, value)` pair.
    pub async fn set(&self, pairs: &[(String, String)]) -> Result<(), String> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut con = self.connection().await?;
        con.mset::<_, _, ()>(pairs).await.map_err(|e| self.error(e))
    }
}

fn set(v: &Option<Value>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_null())
}

/// The Redis key of one description's vector: the plugin, the embeddings model, the
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
        match Store::compile("config.vectordb", &c, &VaultTable::new(), &|_| None, &mut e) {
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
            Store::Memory => panic!("redis expected"),
        }
        let mut p = base.clone();
        p["strategy"] = json!("pgvector");
        let e = compile(p).unwrap_err();
        assert_eq!(e[0].0, "config.vectordb.strategy");
        assert!(e[0].1.contains("pgvector"));
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

//! Kong's shared Redis record and the client built from it: token quotas and
//! rate-limiting counters (`quota::redis`) and semantic vectors (`vectordb.strategy:
//! redis`, plain keys with `MGET`/`MSET`, so no RediSearch module is needed) use it.

use std::time::Duration;

use redis::{AsyncCommands, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use serde::Deserialize;
use serde_json::Value;

use crate::secret::Secret;

/// `(field path, message)` pairs, as the config loader reports them.
type FieldErrors = Vec<(String, String)>;

/// Kong's shared Redis record (`vectordb.redis`); the fields tollgate does not support are
/// accepted only when unset.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
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

impl Default for RedisConfig {
    /// The record Kong uses when the block is left out: 127.0.0.1:6379, database 0.
    fn default() -> Self {
        RedisConfig {
            host: default_host(),
            port: default_port(),
            database: 0,
            username: None,
            password: None,
            ssl: false,
            ssl_verify: None,
            server_name: None,
            connect_timeout: None,
            send_timeout: None,
            read_timeout: None,
            timeout: None,
            keepalive_pool_size: None,
            keepalive_backlog: None,
            sentinel_master: None,
            sentinel_role: None,
            sentinel_addresses: None,
            sentinel_nodes: None,
            sentinel_username: None,
            sentinel_password: None,
            cluster_addresses: None,
            cluster_nodes: None,
            cluster_max_redirections: None,
            connection_is_proxied: None,
            cloud_authentication: None,
        }
    }
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    6379
}

/// Kong's Redis default for connect/send/read timeouts (ms).
const REDIS_TIMEOUT_MS: u64 = 2000;

/// One Redis server: where it is, how long to wait for it, and its credentials.
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

impl RedisStore {
    /// The store `r` describes (at config `path`); `password` is `r.password` already
    /// resolved by the caller (it may be a vault reference), or why it could not be.
    /// Errors name the field.
    pub fn compile(
        path: &str,
        r: &RedisConfig,
        password: Result<Option<Secret<String>>, (String, String)>,
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
        let password = password.unwrap_or_else(|e| {
            errors.push(e);
            None
        });
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

    /// A new multiplexed connection with the configured timeouts.
    pub async fn connect(&self) -> Result<redis::aio::MultiplexedConnection, String> {
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
        let mut con = self.connect().await?;
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
        let mut con = self.connect().await?;
        con.mset::<_, _, ()>(pairs).await.map_err(|e| self.error(e))
    }
}

fn set(v: &Option<Value>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_null())
}

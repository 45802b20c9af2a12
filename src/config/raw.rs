//! Serde mirror of Kong's declarative `kong.yaml` (decK state file), unknown fields rejected.
//!
//! Plugin `config` stays a JSON value here; `plugins.rs` types it per plugin name so that
//! one bad plugin does not hide the errors of the others.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The whole declarative document.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(rename = "_format_version")]
    pub format_version: Option<String>,
    #[serde(
        rename = "_transform",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub transform: Option<bool>,
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(rename = "_info", default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    #[serde(
        rename = "_workspace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub workspace: Option<String>,
    #[serde(default)]
    pub services: Vec<RawService>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub plugins: Vec<RawPlugin>,
    #[serde(default)]
    pub consumers: Vec<RawConsumer>,
    #[serde(default)]
    pub consumer_groups: Vec<RawConsumerGroup>,
    #[serde(default)]
    pub vaults: Vec<RawVault>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<RawUpstream>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<RawTarget>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<RawCertificate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<RawCaCertificate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snis: Vec<RawSni>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyauth_credentials: Vec<RawKeyauthCredential>,
}

/// A reference to another entity: a plain name/id string or `{id|name}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum EntityRef {
    /// Name or id.
    Key(String),
    /// `{id: …}` or `{name: …}`.
    Object {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
    },
}

impl EntityRef {
    /// The string used to look the entity up (id, name or username).
    pub fn key(&self) -> Option<&str> {
        match self {
            EntityRef::Key(k) => Some(k),
            EntityRef::Object { id, name, username } => {
                id.as_deref().or(name.as_deref()).or(username.as_deref())
            }
        }
    }
}

/// A Kong service.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub retries: Option<u32>,
    pub connect_timeout: Option<u64>,
    pub write_timeout: Option<u64>,
    pub read_timeout: Option<u64>,
    pub enabled: Option<bool>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    pub client_certificate: Option<Value>,
    pub tls_verify: Option<bool>,
    pub tls_verify_depth: Option<u32>,
    pub ca_certificates: Option<Vec<String>>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RawRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<RawPlugin>,
}

/// A Kong upstream: a name services use as their host, balanced over its targets.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub id: Option<String>,
    pub name: Option<String>,
    pub algorithm: Option<String>,
    pub slots: Option<u32>,
    pub hash_on: Option<String>,
    pub hash_fallback: Option<String>,
    pub hash_on_header: Option<String>,
    pub hash_fallback_header: Option<String>,
    pub hash_on_cookie: Option<String>,
    pub hash_on_cookie_path: Option<String>,
    pub hash_on_query_arg: Option<String>,
    pub hash_fallback_query_arg: Option<String>,
    pub hash_on_uri_capture: Option<String>,
    pub hash_fallback_uri_capture: Option<String>,
    pub healthchecks: Option<Value>,
    pub host_header: Option<String>,
    pub client_certificate: Option<Value>,
    pub use_srv_name: Option<bool>,
    pub sticky_sessions_cookie: Option<String>,
    pub sticky_sessions_cookie_path: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<RawTarget>,
}

/// A Kong target: an `address:port` of an upstream, with its weight.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub id: Option<String>,
    pub target: Option<String>,
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<EntityRef>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    pub created_at: Option<f64>,
    pub updated_at: Option<f64>,
}

/// A Kong route.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<EntityRef>,
    pub protocols: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub hosts: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    pub strip_path: Option<bool>,
    pub preserve_host: Option<bool>,
    pub regex_priority: Option<i64>,
    pub path_handling: Option<String>,
    pub https_redirect_status_code: Option<u16>,
    pub request_buffering: Option<bool>,
    pub response_buffering: Option<bool>,
    pub snis: Option<Vec<String>>,
    pub sources: Option<Value>,
    pub destinations: Option<Value>,
    pub expression: Option<String>,
    pub priority: Option<u64>,
    pub tags: Option<Vec<String>>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<RawPlugin>,
}

/// A plugin instance; `config` is typed later by `plugins.rs`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    pub id: Option<String>,
    pub name: String,
    pub instance_name: Option<String>,
    pub enabled: Option<bool>,
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<EntityRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<EntityRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<EntityRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<EntityRef>,
    pub config: Option<Value>,
    pub protocols: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partials: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// A consumer (identity for later auth plugins).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    pub id: Option<String>,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<RawPlugin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyauth_credentials: Vec<RawKeyauthCredential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<EntityRef>>,
}

/// A consumer group.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumerGroup {
    pub id: Option<String>,
    pub name: String,
    pub tags: Option<Vec<String>>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<RawPlugin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<Vec<EntityRef>>,
}

/// A vault entity (`env` with an optional variable prefix, or `hcv`: HashiCorp Vault).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    pub id: Option<String>,
    pub name: String,
    pub prefix: String,
    pub description: Option<String>,
    pub config: Option<BTreeMap<String, Value>>,
    pub tags: Option<Vec<String>>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// A CA certificate services may trust (`services[].ca_certificates` names its id).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaCertificate {
    pub id: Option<String>,
    pub cert: String,
    pub cert_digest: Option<String>,
    pub tags: Option<Vec<String>>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// A certificate the TLS listener presents for its `snis`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub id: Option<String>,
    pub cert: String,
    pub key: String,
    pub cert_alt: Option<String>,
    pub key_alt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snis: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// A server name and the certificate to present for it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSni {
    pub id: Option<String>,
    pub name: String,
    pub certificate: EntityRef,
    pub tags: Option<Vec<String>>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// A `key-auth` credential. `key` is the key as Kong writes it; tollgate writes `key_hash`
/// (`sha256:<hex>`) instead, so saved files never hold a key in clear.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyauthCredential {
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<EntityRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<String>,
    pub ttl: Option<u64>,
    pub tags: Option<Vec<String>>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

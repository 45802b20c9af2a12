//! Kong vault references (`{vault://env/openai-api-key}`, `{vault://hcv/openai/key}`) in
//! referenceable fields.
//!
//! Backends: `env` (resolved once at load) and `hcv`, HashiCorp Vault (read at load, then
//! kept current in the background; see `hcv`). A reference that cannot be resolved is a
//! load warning, not an error, so the gateway still serves its other routes; requests that
//! need it get a 500.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::HeaderValue;
use serde_json::Value;
use thiserror::Error;

use super::hcv;
use super::raw::RawVault;
use crate::secret::Secret;

/// Why a reference could not be resolved; never contains the secret.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum VaultError {
    #[error("invalid vault reference: {0}")]
    Syntax(String),
    #[error("vault '{0}' not found (declare it under `vaults` or use the `env` backend)")]
    UnknownVault(String),
    /// A vault option (in the reference, the entity or the environment) is wrong: fatal.
    #[error("{0}")]
    Config(String),
    #[error("environment variable {0} is not set")]
    EnvNotSet(String),
    #[error("environment variable {var} does not hold a JSON object with a string field '{key}'")]
    NoKey { var: String, key: String },
    /// A HashiCorp Vault reference without a token.
    #[error("{0}")]
    NoToken(String),
}

/// A parsed `{vault://host/resource[/key][?query][#version]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultRef {
    pub host: String,
    pub resource: String,
    pub key: Option<String>,
    pub query: Vec<(String, String)>,
    pub version: Option<u32>,
}

/// True when the whole field value is a vault reference.
pub fn is_reference(value: &str) -> bool {
    value.starts_with("{vault://") && value.ends_with('}')
}

/// True when the value is a vault reference, alone or after an auth scheme word such as
/// `Bearer ` (nothing secret in it: it may be shown as written). Other literal text before a
/// reference could be part of a secret, so such values stay redacted.
pub fn is_reference_form(value: &str) -> bool {
    is_reference(value)
        || split_prefixed(value).is_some_and(|(prefix, _)| {
            let word = prefix.strip_suffix(' ').unwrap_or(prefix);
            (1..=16).contains(&word.len()) && word.chars().all(|c| c.is_ascii_alphabetic())
        })
}

/// Splits `Bearer {vault://env/openai-api-key}` into the literal text before the reference
/// and the reference (Kong takes only whole-value references; Tollgate also takes a literal
/// prefix, so a header value can be built from a bare API key). None for any other shape.
pub fn split_prefixed(value: &str) -> Option<(&str, &str)> {
    let i = value.find("{vault://")?;
    let (prefix, reference) = value.split_at(i);
    (i > 0 && !prefix.contains('{') && is_reference(reference) && !reference[1..].contains('{'))
        .then_some((prefix, reference))
}

/// Parses a reference; the reference must be the entire value, as in Kong.
pub fn parse(value: &str) -> Result<VaultRef, VaultError> {
    let inner = value
        .strip_prefix("{vault://")
        .and_then(|v| v.strip_suffix('}'))
        .ok_or_else(|| VaultError::Syntax("must look like {vault://<vault>/<resource>}".into()))?;
    let (inner, version) = match inner.split_once('#') {
        Some((i, v)) => (
            i,
            Some(
                v.parse::<u32>()
                    .map_err(|_| VaultError::Syntax(format!("bad version '{v}'")))?,
            ),
        ),
        None => (inner, None),
    };
    let (inner, query) = match inner.split_once('?') {
        Some((i, q)) => (
            i,
            form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
        ),
        None => (inner, Vec::new()),
    };
    let (host, path) = inner
        .split_once('/')
        .ok_or_else(|| VaultError::Syntax("missing resource after the vault name".into()))?;
    if host.is_empty() || path.is_empty() {
        return Err(VaultError::Syntax("empty vault name or resource".into()));
    }
    let (resource, key) = if path.ends_with('/') {
        (path.trim_end_matches('/').to_string(), None)
    } else {
        match path.rsplit_once('/') {
            Some((r, k)) => (r.to_string(), Some(k.to_string())),
            None => (path.to_string(), None),
        }
    };
    Ok(VaultRef {
        host: host.to_string(),
        resource,
        key,
        query,
        version,
    })
}

/// How a declared vault entity (or a bare backend name) resolves references.
#[derive(Debug, Clone)]
enum Backend {
    /// Environment variables, with an optional name prefix.
    Env { prefix: Option<String> },
    /// HashiCorp Vault; the entity's own options (the environment fills the rest).
    Hcv {
        options: BTreeMap<String, String>,
        path: String,
    },
}

/// The vaults of one config load: declared entities by prefix, and the Vault reads made
/// while compiling (read once per path, then refreshed in the background).
#[derive(Default)]
pub struct VaultTable {
    entities: HashMap<String, Backend>,
    hcv: hcv::Session,
}

impl std::fmt::Debug for VaultTable {
    /// The declared prefixes only: backends hold tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut prefixes: Vec<&String> = self.entities.keys().collect();
        prefixes.sort();
        f.debug_struct("VaultTable")
            .field("prefixes", &prefixes)
            .finish_non_exhaustive()
    }
}

impl VaultTable {
    /// No declared vaults (`env` and `hcv` still work by backend name).
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares an `env` vault under `prefix` reading variables named `var_prefix` + resource.
    pub fn add_env(&mut self, prefix: &str, var_prefix: Option<String>) {
        self.entities
            .insert(prefix.to_string(), Backend::Env { prefix: var_prefix });
    }

    /// The declared `vaults` entities; problems come back as (field path, message).
    pub fn from_entities(
        vaults: &[RawVault],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (VaultTable, Vec<(String, String)>) {
        let mut t = VaultTable::new();
        let mut errors = Vec::new();
        for (i, v) in vaults.iter().enumerate() {
            let vp = format!("vaults[{i}]");
            let config = v.config.clone().unwrap_or_default();
            match v.name.as_str() {
                "env" => {
                    for k in config.keys() {
                        if k != "prefix" && k != "base64_decode" {
                            errors.push((format!("{vp}.config.{k}"), "unknown field".into()));
                        }
                    }
                    let prefix = config
                        .get("prefix")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    t.add_env(&v.prefix, prefix);
                }
                "hcv" => {
                    let mut options = BTreeMap::new();
                    for (k, val) in &config {
                        let field = format!("{vp}.config.{k}");
                        if let Some(m) = hcv::check_option(k) {
                            errors.push((field, m));
                            continue;
                        }
                        match val {
                            Value::Null => {}
                            Value::String(s) => {
                                options.insert(k.clone(), s.clone());
                            }
                            Value::Number(n) => {
                                options.insert(k.clone(), n.to_string());
                            }
                            _ => errors.push((field, "expected a string or a number".into())),
                        }
                    }
                    let backend = Backend::Hcv {
                        options,
                        path: format!("{vp}.config"),
                    };
                    // Checked now so a bad entity fails the load even when nothing uses it.
                    if let Err(e) = hcv_config(&backend, &[], env) {
                        errors.push(e);
                    }
                    t.entities.insert(v.prefix.clone(), backend);
                }
                other => errors.push((
                    format!("{vp}.name"),
                    format!(
                        "vault backend '{other}' is not supported by tollgate yet (supported: env, hcv)"
                    ),
                )),
            }
        }
        (t, errors)
    }

    /// Starts refreshing the HashiCorp Vault secrets read during this load (call once the
    /// config compiled).
    pub fn start_refresh(&self) {
        self.hcv.start_refresh();
    }
}

/// The effective HashiCorp Vault options: the reference's query, then the entity's
/// config, then `KONG_VAULT_HCV_*`, then Kong's defaults.
fn hcv_config(
    backend: &Backend,
    query: &[(String, String)],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<hcv::Config, hcv::Found> {
    let (options, path) = match backend {
        Backend::Hcv { options, path } => (Some(options), path.as_str()),
        Backend::Env { .. } => (None, ""),
    };
    hcv::Config::build(&|name| {
        if let Some((_, v)) = query.iter().find(|(k, _)| k == name) {
            return Some((v.clone(), format!("reference option '{name}'")));
        }
        if let Some(v) = options.and_then(|o| o.get(name)) {
            return Some((v.clone(), format!("{path}.{name}")));
        }
        let var = hcv::env_name(name);
        env(&var).map(|v| (v, var))
    })
}

/// A resolved reference: fixed at load (`env`), or kept current by the refresher (`hcv`).
#[derive(Debug)]
pub enum Resolved {
    Fixed(Secret<String>),
    Live(Arc<hcv::Cell>),
}

impl Resolved {
    /// The value now (or the message a request is refused with).
    pub fn current(&self) -> Result<Secret<String>, String> {
        match self {
            Resolved::Fixed(s) => Ok(s.clone()),
            Resolved::Live(c) => c.get(),
        }
    }
}

/// A credential read per request: fixed at load, or the current value of a rotating
/// vault reference.
#[derive(Debug)]
pub enum LiveSecret {
    Fixed(Result<Secret<String>, String>),
    Vault(Arc<hcv::Cell>),
}

impl LiveSecret {
    /// This request's value, or why there is none (for the operator log; never the secret).
    pub fn get(&self) -> Result<Cow<'_, Secret<String>>, String> {
        match self {
            LiveSecret::Fixed(r) => r.as_ref().map(Cow::Borrowed).map_err(Clone::clone),
            LiveSecret::Vault(c) => c.get().map(Cow::Owned),
        }
    }
}

/// An auth header value read per request: built once at load, or the current value of a
/// rotating vault reference (rebuilt only when the secret changes).
#[derive(Debug)]
pub enum LiveHeader {
    Fixed(Result<HeaderValue, String>),
    Vault(Arc<hcv::Cell>),
}

impl LiveHeader {
    /// This request's header value (marked sensitive), or why there is none.
    pub fn value(&self) -> Result<HeaderValue, String> {
        match self {
            LiveHeader::Fixed(r) => r.clone(),
            LiveHeader::Vault(c) => c.header(),
        }
    }
}

/// Resolves a reference with the process environment.
pub fn resolve(field: &str, value: &str, vaults: &VaultTable) -> Result<Resolved, VaultError> {
    resolve_with(field, value, vaults, &|name| std::env::var(name).ok())
}

/// A secret field of a store record (a Redis or PostgreSQL password): a vault reference
/// resolved now, or the value itself; empty means none. The error is `(path, message)`.
pub fn field_secret(
    path: &str,
    value: Option<&str>,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret<String>>, (String, String)> {
    match value.filter(|p| !p.is_empty()) {
        Some(p) if is_reference(p) => resolve_with(path, p, vaults, env)
            .map_err(|e| e.to_string())
            .and_then(|r| r.current())
            .map(Some)
            .map_err(|e| (path.to_string(), format!("could not resolve {p}: {e}"))),
        Some(p) => Ok(Some(Secret::new(p.to_string()))),
        None => Ok(None),
    }
}

/// Resolves a reference in config field `field` with the given environment lookup (tests
/// pass their own). HashiCorp Vault references are read now (once per path per load).
pub fn resolve_with(
    field: &str,
    value: &str,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, VaultError> {
    resolve_prefixed(field, "", value, vaults, env)
}

/// Like [`resolve_with`], the resolved secret preceded by the literal `prefix` (see
/// [`split_prefixed`]).
pub fn resolve_prefixed(
    field: &str,
    prefix: &str,
    value: &str,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, VaultError> {
    let r = parse(value)?;
    let backend = match vaults.entities.get(&r.host) {
        Some(b) => b.clone(),
        None if r.host == "env" => Backend::Env { prefix: None },
        None if r.host == "hcv" => Backend::Hcv {
            options: BTreeMap::new(),
            path: String::new(),
        },
        None => return Err(VaultError::UnknownVault(r.host.clone())),
    };
    match backend {
        Backend::Env { prefix: var_prefix } => resolve_env(&r, var_prefix, env).map(|s| {
            Resolved::Fixed(if prefix.is_empty() {
                s
            } else {
                Secret::new(format!("{prefix}{}", s.expose()))
            })
        }),
        Backend::Hcv { .. } => {
            for (k, _) in &r.query {
                if k == "token" {
                    return Err(VaultError::Config(
                        "the Vault token cannot be given in a reference (use config.token or KONG_VAULT_HCV_TOKEN)".into(),
                    ));
                }
                if let Some(m) = hcv::check_option(k) {
                    return Err(VaultError::Syntax(format!("option '{k}': {m}")));
                }
            }
            hcv::check_resource(&r.resource).map_err(VaultError::Syntax)?;
            let cfg = hcv_config(&backend, &r.query, env)
                .map_err(|(o, m)| VaultError::Config(format!("{o}: {m}")))?;
            if cfg.token.is_none() {
                return Err(VaultError::NoToken(hcv::no_token()));
            }
            Ok(Resolved::Live(vaults.hcv.resolve(
                cfg,
                &r.resource,
                r.version,
                r.key.clone(),
                hcv::Written {
                    field: field.to_string(),
                    reference: value.to_string(),
                    prefix: prefix.to_string(),
                },
            )))
        }
    }
}

fn resolve_env(
    r: &VaultRef,
    entity_prefix: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret<String>, VaultError> {
    let prefix = r
        .query
        .iter()
        .find(|(k, _)| k == "prefix")
        .map(|(_, v)| v.clone())
        .or(entity_prefix)
        .unwrap_or_default();
    let mut var = format!("{prefix}{}", r.resource)
        .to_uppercase()
        .replace('-', "_");
    if r.version == Some(2) {
        var.push_str("_PREVIOUS");
    }
    let raw = env(&var).ok_or_else(|| VaultError::EnvNotSet(var.clone()))?;
    match &r.key {
        None => Ok(Secret::new(raw)),
        Some(key) => serde_json::from_str::<serde_json::Value>(&raw)
            .ok()
            .and_then(|v| v.get(key).and_then(|f| f.as_str()).map(str::to_string))
            .map(Secret::new)
            .ok_or(VaultError::NoKey {
                var,
                key: key.clone(),
            }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "OPENAI_API_KEY" => Some("Bearer sk-1".into()),
            "PG_CREDS" => Some(r#"{"username":"u","n":1}"#.into()),
            "SSL_CERT" => Some("c".into()),
            "OPENAI_API_KEY_PREVIOUS" => Some("old".into()),
            _ => None,
        }
    }

    fn value(reference: &str, v: &VaultTable) -> Result<String, VaultError> {
        resolve_with("f", reference, v, &env).map(|r| match r {
            Resolved::Fixed(s) => s.expose().clone(),
            Resolved::Live(_) => panic!("env references are fixed"),
        })
    }

    #[test]
    fn env_backend() {
        let v = VaultTable::new();
        assert_eq!(
            value("{vault://env/openai-api-key}", &v),
            Ok("Bearer sk-1".into())
        );
        assert_eq!(value("{vault://env/pg-creds/username}", &v), Ok("u".into()));
        assert_eq!(value("{vault://env/cert?prefix=ssl_}", &v), Ok("c".into()));
        assert_eq!(
            value("{vault://env/openai-api-key#2}", &v),
            Ok("old".into())
        );
    }

    #[test]
    fn reference_forms() {
        assert!(is_reference_form("{vault://env/k}"));
        assert!(is_reference_form("Bearer {vault://env/k}"));
        assert!(!is_reference_form("sk-partly-secret {vault://env/k}"));
        assert!(!is_reference_form("Bearer sk-1"));
        assert_eq!(
            split_prefixed("Bearer {vault://env/k}"),
            Some(("Bearer ", "{vault://env/k}"))
        );
        assert_eq!(split_prefixed("{vault://env/k} x"), None);
    }

    #[test]
    fn declared_vault_prefix() {
        let mut v = VaultTable::new();
        v.add_env("my-env", Some("OPENAI_".into()));
        assert_eq!(
            value("{vault://my-env/api-key}", &v),
            Ok("Bearer sk-1".into())
        );
    }

    #[test]
    fn errors() {
        let v = VaultTable::new();
        assert_eq!(
            value("{vault://env/nope}", &v),
            Err(VaultError::EnvNotSet("NOPE".into()))
        );
        assert!(matches!(
            value("{vault://elsewhere/x/y}", &v),
            Err(VaultError::UnknownVault(_))
        ));
        assert!(matches!(
            value("{vault://env/pg-creds/n}", &v),
            Err(VaultError::NoKey { .. })
        ));
        for bad in [
            "{vault://}",
            "{vault://env}",
            "{vault://env/}",
            "{vault://env/x#z}",
        ] {
            assert!(value(bad, &v).is_err(), "{bad}");
        }
    }

    #[test]
    fn hcv_references_are_checked_before_any_read() {
        let v = VaultTable::new();
        // No token anywhere: a warning-level failure, and nothing is read.
        assert!(matches!(
            resolve_with("f", "{vault://hcv/openai/key}", &v, &env),
            Err(VaultError::NoToken(_))
        ));
        let with_token = |n: &str| (n == "KONG_VAULT_HCV_TOKEN").then(|| "s.tok".to_string());
        for (bad, want) in [
            (
                "{vault://hcv/openai/key?token=x}",
                "cannot be given in a reference",
            ),
            (
                "{vault://hcv/openai/key?kube_role=x}",
                "only auth_method 'token'",
            ),
            ("{vault://hcv/openai/key?colour=x}", "unknown field"),
            ("{vault://hcv/a//b/key}", "not a secret path"),
            (
                "{vault://hcv/openai/key?kv=v9}",
                "reference option 'kv': 'v9'",
            ),
        ] {
            let e = resolve_with("f", bad, &v, &with_token).unwrap_err();
            assert!(
                matches!(e, VaultError::Syntax(_) | VaultError::Config(_)),
                "{bad}: {e:?}"
            );
            assert!(e.to_string().contains(want), "{bad}: {e}");
            assert!(!e.to_string().contains("s.tok"));
        }
        let bad_env = |n: &str| match n {
            "KONG_VAULT_HCV_TOKEN" => Some("s.tok".to_string()),
            "KONG_VAULT_HCV_PORT" => Some("eighty".to_string()),
            _ => None,
        };
        let e = resolve_with("f", "{vault://hcv/openai/key}", &v, &bad_env).unwrap_err();
        assert_eq!(
            e,
            VaultError::Config("KONG_VAULT_HCV_PORT: 'eighty' is not a port (1-65535)".into())
        );
    }

    #[test]
    fn hcv_entities() {
        let raw = |name: &str, config: serde_json::Value| RawVault {
            name: name.into(),
            prefix: "p".into(),
            config: serde_json::from_value(config).unwrap(),
            ..RawVault::default()
        };
        let none = |_: &str| None;
        let (_, e) = VaultTable::from_entities(
            &[raw(
                "hcv",
                serde_json::json!({"host": "vault", "port": 8200, "kv": "v2", "mount": "secret", "token": "s.x", "ttl": 60}),
            )],
            &none,
        );
        assert!(e.is_empty(), "{e:?}");
        let (_, e) = VaultTable::from_entities(
            &[raw(
                "hcv",
                serde_json::json!({"kv": "v3", "approle_role_id": "r", "port": [1]}),
            )],
            &none,
        );
        let e: Vec<String> = e.iter().map(|(p, m)| format!("{p}: {m}")).collect();
        assert_eq!(
            e,
            [
                "vaults[0].config.approle_role_id: only auth_method 'token' is supported by tollgate yet",
                "vaults[0].config.port: expected a string or a number",
                "vaults[0].config.kv: 'v3' is not one of: v1, v2",
            ]
        );
        let (_, e) = VaultTable::from_entities(&[raw("aws", serde_json::json!({}))], &none);
        assert!(e[0].1.contains("supported: env, hcv"), "{e:?}");
    }
}

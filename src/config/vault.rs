//! Kong vault references (`{vault://env/openai-api-key}`) in referenceable fields.
//!
//! Only the `env` backend exists so far; a reference is resolved when a snapshot is built,
//! and a failure is kept (not fatal) so the gateway still serves its other routes.

use std::collections::HashMap;

use thiserror::Error;

use crate::secret::Secret;

/// Why a reference could not be resolved; never contains the secret.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum VaultError {
    #[error("invalid vault reference: {0}")]
    Syntax(String),
    #[error("vault '{0}' not found (declare it under `vaults` or use the `env` backend)")]
    UnknownVault(String),
    #[error("vault backend '{0}' is not supported (supported: env)")]
    UnsupportedBackend(String),
    #[error("environment variable {0} is not set")]
    EnvNotSet(String),
    #[error("environment variable {var} does not hold a JSON object with a string field '{key}'")]
    NoKey { var: String, key: String },
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

/// Declared vault entities by prefix: (backend name, env variable prefix).
pub type VaultTable = HashMap<String, (String, Option<String>)>;

/// Resolves a reference with the process environment.
pub fn resolve(value: &str, vaults: &VaultTable) -> Result<Secret<String>, VaultError> {
    resolve_with(value, vaults, &|name| std::env::var(name).ok())
}

/// Resolves a reference with the given environment lookup (tests pass their own).
pub fn resolve_with(
    value: &str,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret<String>, VaultError> {
    let r = parse(value)?;
    let (backend, entity_prefix) = match vaults.get(&r.host) {
        Some((backend, prefix)) => (backend.as_str(), prefix.clone()),
        None if r.host == "env" => ("env", None),
        None => return Err(VaultError::UnknownVault(r.host.clone())),
    };
    if backend != "env" {
        return Err(VaultError::UnsupportedBackend(backend.to_string()));
    }
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
    match r.key {
        None => Ok(Secret::new(raw)),
        Some(key) => serde_json::from_str::<serde_json::Value>(&raw)
            .ok()
            .and_then(|v| v.get(&key).and_then(|f| f.as_str()).map(str::to_string))
            .map(Secret::new)
            .ok_or(VaultError::NoKey { var, key }),
    }
}

#[cfg(test)]
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

    #[test]
    fn env_backend() {
        let v = VaultTable::new();
        let got = resolve_with("{vault://env/openai-api-key}", &v, &env);
        assert_eq!(got.map(|s| s.expose().clone()), Ok("Bearer sk-1".into()));
        let got = resolve_with("{vault://env/pg-creds/username}", &v, &env);
        assert_eq!(got.map(|s| s.expose().clone()), Ok("u".into()));
        let got = resolve_with("{vault://env/cert?prefix=ssl_}", &v, &env);
        assert_eq!(got.map(|s| s.expose().clone()), Ok("c".into()));
        let got = resolve_with("{vault://env/openai-api-key#2}", &v, &env);
        assert_eq!(got.map(|s| s.expose().clone()), Ok("old".into()));
    }

    #[test]
    fn declared_vault_prefix() {
        let mut v = VaultTable::new();
        v.insert("my-env".into(), ("env".into(), Some("OPENAI_".into())));
        let got = resolve_with("{vault://my-env/api-key}", &v, &env);
        assert_eq!(got.map(|s| s.expose().clone()), Ok("Bearer sk-1".into()));
    }

    #[test]
    fn errors() {
        let v = VaultTable::new();
        assert_eq!(
            resolve_with("{vault://env/nope}", &v, &env).map(|_| ()),
            Err(VaultError::EnvNotSet("NOPE".into()))
        );
        assert!(matches!(
            resolve_with("{vault://hcv/x/y}", &v, &env),
            Err(VaultError::UnknownVault(_))
        ));
        assert!(matches!(
            resolve_with("{vault://env/pg-creds/n}", &v, &env),
            Err(VaultError::NoKey { .. })
        ));
        for bad in [
            "{vault://}",
            "{vault://env}",
            "{vault://env/}",
            "{vault://env/x#z}",
        ] {
            assert!(resolve_with(bad, &v, &env).is_err(), "{bad}");
        }
    }
}

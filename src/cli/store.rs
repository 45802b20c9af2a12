//! `tollgate migrations up` and `tollgate config import|export`: a cluster's configuration
//! store (`serve --store postgres`) prepared, filled and read without a running node.

use crate::store::config_pg::{ConfigStore, Saved};

/// How often an import is tried again when a node saved at the same moment.
const IMPORT_ATTEMPTS: usize = 5;

/// Creates the store's schema (idempotent).
pub async fn migrations_up(url: &str) -> Result<String, String> {
    let store = ConfigStore::new(url);
    store.migrate().await.map_err(|e| e.to_string())?;
    let version = store.version().await.map_err(|e| e.to_string())?;
    Ok(match version {
        0 => "tollgate_config is ready (no configuration stored yet)".to_string(),
        v => format!("tollgate_config is ready (configuration version {v})"),
    })
}

/// Replaces the stored configuration with `text` (already checked to load); the version it
/// became. Every node swaps it in, as after an Admin API `POST /config`.
pub async fn import(url: &str, text: &str) -> Result<i64, String> {
    // Stored as a node stores a write: plain secrets sealed with TOLLGATE_STORE_KEY.
    let sealer = crate::store::seal::Sealer::from_env(&|n| std::env::var(n).ok())?;
    let text = &crate::admin::cluster::seal_document(text, sealer.as_ref())?;
    let store = ConfigStore::new(url);
    store.migrate().await.map_err(|e| e.to_string())?;
    for _ in 0..IMPORT_ATTEMPTS {
        let over = store.version().await.map_err(|e| e.to_string())?;
        match store.save(over, text).await.map_err(|e| e.to_string())? {
            Saved::Committed(v) => return Ok(v),
            Saved::Conflict => continue,
        }
    }
    Err("the configuration kept changing on the nodes while it was imported; retry".into())
}

/// The stored configuration's text and version (secrets stay sealed, as stored).
pub async fn export(url: &str) -> Result<(i64, String), String> {
    let store = ConfigStore::new(url);
    match store.current().await {
        Ok(Some(s)) => Ok((s.version, s.document)),
        Ok(None) => Err("the store holds no configuration yet (a node's first start, or `tollgate config import FILE`, puts one there)".into()),
        Err(e) => Err(e.to_string()),
    }
}

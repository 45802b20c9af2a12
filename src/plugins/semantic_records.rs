//! The `embeddings` and `vectordb` records of the semantic plugins (`ai-semantic-cache`,
//! `ai-semantic-prompt-guard`), typed and compiled into the embeddings provider and the
//! vector store, errors naming fields under `config`.

use std::time::Duration;

use serde_json::Value;

use crate::balancer::embed::{Embedder, EmbeddingsConfig};
use crate::balancer::vectordb::{self, VectordbConfig};
use crate::config::vault::VaultTable;

type FieldErrors = Vec<(String, String)>;

/// Timeouts of the embeddings calls (connect, read).
const EMBED_TIMEOUTS: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(30));

/// A plugin's embeddings provider and vector store, and the vectordb settings.
pub struct Compiled {
    pub embedder: Embedder,
    pub store: vectordb::Store,
    pub vectordb: VectordbConfig,
    pub warnings: FieldErrors,
}

/// Compiles the two records (both required).
pub fn compile(
    embeddings: &Option<Value>,
    vectordb: &Option<Value>,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Compiled, FieldErrors> {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let embeddings = typed::<EmbeddingsConfig>("config.embeddings", embeddings, &mut errors);
    let vectordb = typed::<VectordbConfig>("config.vectordb", vectordb, &mut errors);
    let (Some(embeddings), Some(vectordb)) = (embeddings, vectordb) else {
        return Err(errors);
    };
    if vectordb.dimensions == 0 {
        errors.push((
            "config.vectordb.dimensions".into(),
            "must be at least 1".into(),
        ));
    }
    if vectordb
        .threshold
        .is_some_and(|t| !t.is_finite() || t < 0.0)
    {
        errors.push((
            "config.vectordb.threshold".into(),
            "must be a number ≥ 0".into(),
        ));
    }
    let store = vectordb::Store::compile("config.vectordb", &vectordb, vaults, env, &mut errors);
    let embedder = Embedder::compile(
        "config.embeddings",
        &embeddings,
        vectordb.dimensions,
        EMBED_TIMEOUTS,
        vaults,
        env,
        &mut errors,
        &mut warnings,
    );
    match (embedder, store) {
        (Some(embedder), Some(store)) if errors.is_empty() => Ok(Compiled {
            embedder,
            store,
            vectordb,
            warnings,
        }),
        _ => Err(errors),
    }
}

/// `value` typed as `T`; a missing record is an error at `path`.
fn typed<T: serde::de::DeserializeOwned>(
    path: &str,
    value: &Option<Value>,
    errors: &mut FieldErrors,
) -> Option<T> {
    let Some(v) = value.as_ref().filter(|v| !v.is_null()) else {
        errors.push((path.to_string(), "required field missing".into()));
        return None;
    };
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.path().to_string();
            let field = if inner == "." || inner.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            errors.push((field, e.inner().to_string()));
            None
        }
    }
}

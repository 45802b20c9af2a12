//! The `embeddings` and `vectordb` records of the semantic plugins (`ai-semantic-cache`,
//! `ai-semantic-prompt-guard`), typed and compiled into the embeddings provider and the
//! vector store, errors naming fields under `config`.

use std::time::Duration;

use serde_json::Value;

use crate::balancer::embed::{Embedder, EmbeddingsConfig};
use crate::balancer::vectordb::{self, VectordbConfig};
use crate::config::collect::record_at;
use crate::config::vault::VaultTable;

/// Kong's error for a required record left out.
const MISSING: &str = "required field missing";

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
    let embeddings = record_at::<EmbeddingsConfig>(
        "config.embeddings",
        embeddings.as_ref(),
        MISSING,
        &mut errors,
    );
    let vectordb =
        record_at::<VectordbConfig>("config.vectordb", vectordb.as_ref(), MISSING, &mut errors);
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

//! The vectors of a fixed set of texts a plugin compares prompts with (semantic routing's
//! target descriptions, the semantic prompt guard's rules), computed once per configuration
//! snapshot: read from the vector store, else from what this process already has, else
//! embedded through the provider in one call (and stored for the other nodes).
//!
//! Lazily on the first request that needs them: concurrent first requests wait for one
//! computation and share its result (or its failure); a failure is not kept, the next
//! request tries again. A store that is down changes nothing but where the vectors come
//! from; its outage is logged once and counted in `tollgate_vectordb_errors_total`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::balancer::embed::Embedder;
use crate::balancer::vectordb::{self, Store};
use crate::net::upstream::Upstreams;

/// One plugin's texts and, once computed, their vectors (in the texts' order).
#[derive(Debug)]
pub struct VectorSet {
    plugin_id: String,
    /// Who uses them, for logs ("semantic routing", "semantic prompt guard").
    purpose: &'static str,
    texts: Vec<String>,
    dimensions: u64,
    built: OnceCell<Arc<Vec<Vec<f32>>>>,
    /// Held while the vectors are computed.
    building: tokio::sync::Mutex<()>,
    /// Failed computations so far, and the last one's reason: requests that waited for a
    /// computation that failed take its failure instead of starting another.
    failures: AtomicU64,
    last_failure: Mutex<String>,
    /// The vector store failed last time it was used (its outage is logged once).
    store_down: AtomicBool,
}

/// Vectors this process has had, by store key (which names the plugin, the embeddings
/// model, the dimensions and the text): a reload, or a vector store that is down, then needs
/// neither the store nor the provider for them.
static KNOWN: Mutex<Option<HashMap<String, Vec<f32>>>> = Mutex::new(None);
/// Past this many vectors the memory starts afresh (texts of removed plugins are never
/// looked up again; the current ones are found again at the next build).
const KNOWN_MAX: usize = 4096;

fn known(key: &str) -> Option<Vec<f32>> {
    let guard = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    guard.as_ref().and_then(|m| m.get(key).cloned())
}

fn remember(pairs: impl Iterator<Item = (String, Vec<f32>)>) {
    let mut guard = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    for (k, v) in pairs {
        if map.len() >= KNOWN_MAX && !map.contains_key(&k) {
            map.clear();
        }
        map.insert(k, v);
    }
}

/// The error for vectors of the wrong length.
pub fn wrong_dimensions(embedder: &Embedder, got: usize, dimensions: u64) -> String {
    format!(
        "{} returned {got}-dimensional vectors; vectordb.dimensions is {dimensions}",
        embedder.name()
    )
}

impl VectorSet {
    /// The set of `texts` of plugin `plugin_id`, for vectors of `dimensions`.
    pub fn new(
        plugin_id: &str,
        purpose: &'static str,
        texts: Vec<String>,
        dimensions: u64,
    ) -> VectorSet {
        VectorSet {
            plugin_id: plugin_id.to_string(),
            purpose,
            texts,
            dimensions,
            built: OnceCell::new(),
            building: tokio::sync::Mutex::new(()),
            failures: AtomicU64::new(0),
            last_failure: Mutex::new(String::new()),
            store_down: AtomicBool::new(false),
        }
    }

    /// The texts.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// The texts' vectors, computed once; concurrent callers wait for one computation.
    pub async fn vectors(
        &self,
        embedder: &Embedder,
        store: &Store,
        upstreams: &Upstreams,
    ) -> Result<Arc<Vec<Vec<f32>>>, String> {
        if let Some(v) = self.built.get() {
            return Ok(Arc::clone(v));
        }
        let failures_seen = self.failures.load(Ordering::Acquire);
        let _one_build = self.building.lock().await;
        if let Some(v) = self.built.get() {
            return Ok(Arc::clone(v));
        }
        if self.failures.load(Ordering::Acquire) != failures_seen {
            // The build this request waited for failed: share its failure.
            return Err(self.last_failure());
        }
        match Box::pin(self.build(embedder, store, upstreams)).await {
            Ok(v) => {
                let v = Arc::new(v);
                // Only this task sets the cell (under `building`), so this cannot fail.
                let _ = self.built.set(Arc::clone(&v));
                Ok(v)
            }
            Err(e) => {
                if let Ok(mut l) = self.last_failure.lock() {
                    l.clone_from(&e);
                }
                self.failures.fetch_add(1, Ordering::Release);
                Err(e)
            }
        }
    }

    fn last_failure(&self) -> String {
        match self.last_failure.lock() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    async fn build(
        &self,
        embedder: &Embedder,
        store: &Store,
        upstreams: &Upstreams,
    ) -> Result<Vec<Vec<f32>>, String> {
        let model = embedder.name();
        let keys: Vec<String> = self
            .texts
            .iter()
            .map(|d| vectordb::key(&self.plugin_id, &model, self.dimensions, d))
            .collect();
        let stored = match store.get(&keys).await {
            Ok(s) => Some(s),
            Err(e) => {
                self.store_failed(store, "get", &e);
                None
            }
        };
        let mut out: Vec<Option<Vec<f32>>> = stored
            .iter()
            .flatten()
            .map(|s| {
                s.as_deref()
                    .and_then(|s| vectordb::decode(s, self.dimensions))
            })
            .collect();
        out.resize(self.texts.len(), None);
        let in_store: Vec<bool> = out.iter().map(Option::is_some).collect();
        for (v, k) in out.iter_mut().zip(&keys) {
            if v.is_none() {
                *v = known(k);
            }
        }
        let missing: Vec<usize> = (0..self.texts.len())
            .filter(|i| out[*i].is_none())
            .collect();
        if !missing.is_empty() {
            let ask: Vec<&str> = missing.iter().map(|i| self.texts[*i].as_str()).collect();
            let computed = self.compute(embedder, upstreams, &ask).await?;
            for (i, v) in missing.iter().zip(computed) {
                out[*i] = Some(v);
            }
        }
        // The shared copy gets what it lacked, unless it is down (no second wait for it).
        let pairs: Vec<(String, String)> = (0..self.texts.len())
            .filter(|i| !in_store[*i])
            .filter_map(|i| Some((keys[i].clone(), vectordb::encode(out[i].as_ref()?))))
            .collect();
        if stored.is_some() && !pairs.is_empty() {
            match store.set(&pairs).await {
                Ok(()) => self.store_answered(store),
                Err(e) => self.store_failed(store, "set", &e),
            }
        } else if stored.is_some() {
            self.store_answered(store);
        }
        remember(
            keys.iter()
                .zip(&out)
                .filter_map(|(k, v)| Some((k.clone(), v.clone()?))),
        );
        tracing::debug!(plugin_id = %self.plugin_id, store = %store.describe(), read = in_store.iter().filter(|s| **s).count(), computed = missing.len(), "{}: text vectors", self.purpose);
        let vectors: Vec<Vec<f32>> = out.into_iter().flatten().collect();
        if vectors.len() != self.texts.len() {
            return Err("the text vectors are incomplete".into());
        }
        Ok(vectors)
    }

    /// Counts a vector store failure, and logs it when the store was working until now.
    fn store_failed(&self, store: &Store, operation: &str, e: &str) {
        crate::observe::metrics::global()
            .vectordb_errors
            .add(&[&self.plugin_id, store.strategy(), operation], 1.0);
        if !self.store_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(plugin_id = %self.plugin_id, store = %store.describe(), error = %e, "{}: the vector store failed; going on with the vectors kept in this process (or computed again)", self.purpose);
        }
    }

    fn store_answered(&self, store: &Store) {
        if self.store_down.swap(false, Ordering::Relaxed) {
            tracing::info!(plugin_id = %self.plugin_id, store = %store.describe(), "{}: the vector store answers again", self.purpose);
        }
    }

    /// Embeds texts through the provider (one call) and checks their dimensions.
    async fn compute(
        &self,
        embedder: &Embedder,
        upstreams: &Upstreams,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, String> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let vs = embedder.embed_many(upstreams, texts).await?;
        if let Some(bad) = vs.iter().find(|v| v.len() as u64 != self.dimensions) {
            return Err(wrong_dimensions(embedder, bad.len(), self.dimensions));
        }
        Ok(vs.iter().map(|v| v.to_vec()).collect())
    }
}

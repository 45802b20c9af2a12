//! Semantic routing at request time (`balancer.algorithm: semantic`): the compiled
//! embeddings provider, vector store and description index of one plugin instance.
//!
//! The descriptions are embedded once per config snapshot (`vector_set`), lazily on the first request
//! that needs them: concurrent first requests wait for one computation and share its
//! result (or its failure); a failure is not kept, the next request tries again. Each
//! request's prompt is embedded during the access phase (cached per text), then the nearest
//! description's targets become the candidates the retry loop balances among.
//!
//! Outcomes (logged as `ai.proxy.semantic.outcome`):
//! - `matched`: a description within the threshold; its targets serve the request;
//! - `catchall`: none within the threshold → the CATCHALL target(s);
//! - `no_prompt`: the request has no text to embed → CATCHALL;
//! - `embedding_failed`: the embeddings provider failed → CATCHALL.
//!
//! The description vectors are kept in the process once known (across config reloads),
//! and the index is searched in memory: with `redis`/`pgvector` the store is the shared
//! copy only. When it fails, routing does not change: the vectors come from the process
//! (or from the embeddings provider); the outage is logged once and counted in
//! `tollgate_vectordb_errors_total`.
//!
//! Without a CATCHALL target, `catchall` and `no_prompt` answer 400 and
//! `embedding_failed` answers 502 (the log keeps the reason).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::balancer::embed::{Embedder, EmbeddingsConfig};
use crate::balancer::semantic::{self, Entry, Index, Metric};
use crate::balancer::vector_set::VectorSet;
use crate::config::collect::record_at;

/// The error for a record semantic routing needs and the config leaves out.
const SEMANTIC_ONLY: &str = "required for balancer.algorithm 'semantic'";
use crate::balancer::vectordb::{Store, VectordbConfig};
use crate::config::plugins::TargetConfig;
use crate::config::vault::VaultTable;
use crate::error::GatewayError;
use crate::llm::body::BodyView;
use crate::net::upstream::Upstreams;

type FieldErrors = Vec<(String, String)>;

/// One plugin instance's semantic routing.
#[derive(Debug)]
pub struct SemanticRouter {
    plugin_id: String,
    embedder: Embedder,
    store: Store,
    metric: Metric,
    threshold: Option<f64>,
    dimensions: u64,
    /// Distinct descriptions and the targets sharing each.
    groups: Vec<(String, Vec<usize>)>,
    catchall: Vec<usize>,
    /// Each text a group is known by (its description, then its targets' utterances), by
    /// group index.
    texts: Vec<(usize, String)>,
    /// The texts' vectors, computed once per snapshot.
    set: VectorSet,
    index: std::sync::OnceLock<Arc<Index>>,
}

/// One text near a prompt (see [`SemanticRouter::explain`]).
#[derive(Debug, Clone)]
pub struct Near {
    pub description: String,
    pub text: String,
    pub targets: Vec<usize>,
    pub distance: f64,
}

/// What semantic routing decided for one request.
#[derive(Debug)]
pub struct Routed {
    /// The targets to try first, or the error the client gets.
    pub candidates: Result<Vec<usize>, GatewayError>,
    /// `ai.proxy.semantic` of the log record.
    pub log: Value,
}

/// Compiles `embeddings` and `vectordb` of an ai-proxy-advanced config whose algorithm is
/// `semantic`; errors name the fields.
#[allow(clippy::too_many_arguments)]
pub fn compile(
    plugin_id: &str,
    embeddings: Option<&Value>,
    vectordb: Option<&Value>,
    targets: &[TargetConfig],
    timeouts: (Duration, Duration),
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut FieldErrors,
    warnings: &mut FieldErrors,
) -> Option<SemanticRouter> {
    let before = errors.len();
    let embeddings =
        record_at::<EmbeddingsConfig>("config.embeddings", embeddings, SEMANTIC_ONLY, errors);
    let vectordb = record_at::<VectordbConfig>("config.vectordb", vectordb, SEMANTIC_ONLY, errors);
    for (i, t) in targets.iter().enumerate() {
        if t.description
            .as_deref()
            .map(str::trim)
            .unwrap_or("")
            .is_empty()
        {
            errors.push((
                format!("config.targets[{i}].description"),
                "required for balancer.algorithm 'semantic' (a topic, or CATCHALL)".into(),
            ));
        }
    }
    let descriptions: Vec<Option<&str>> =
        targets.iter().map(|t| t.description.as_deref()).collect();
    let (groups, catchall) = semantic::group(&descriptions);
    let texts = texts_of(&groups, targets, errors);
    let (embeddings, vectordb) = (embeddings?, vectordb?);
    if vectordb.dimensions == 0 {
        errors.push((
            "config.vectordb.dimensions".into(),
            "must be at least 1".into(),
        ));
    }
    if let Some(t) = vectordb.threshold {
        if !t.is_finite() || t < 0.0 {
            errors.push((
                "config.vectordb.threshold".into(),
                "must be a number ≥ 0".into(),
            ));
        }
    }
    let embedder = Embedder::compile(
        "config.embeddings",
        &embeddings,
        vectordb.dimensions,
        timeouts,
        vaults,
        env,
        errors,
        warnings,
    );
    let store = Store::compile("config.vectordb", &vectordb, vaults, env, errors);
    if errors.len() > before {
        return None;
    }
    let set_texts = texts.iter().map(|(_, t)| t.clone()).collect();
    Some(SemanticRouter {
        plugin_id: plugin_id.to_string(),
        embedder: embedder?,
        store: store?,
        metric: vectordb.distance_metric,
        threshold: vectordb.threshold,
        dimensions: vectordb.dimensions,
        groups,
        catchall,
        texts,
        set: VectorSet::new(
            plugin_id,
            "semantic routing",
            set_texts,
            vectordb.dimensions,
        ),
        index: std::sync::OnceLock::new(),
    })
}

/// Each group's texts: its description, then its targets' utterances (trimmed, each once).
/// Utterances of a CATCHALL target, or empty ones, are errors naming the field.
fn texts_of(
    groups: &[(String, Vec<usize>)],
    targets: &[TargetConfig],
    errors: &mut FieldErrors,
) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (g, (description, members)) in groups.iter().enumerate() {
        out.push((g, description.clone()));
        for &i in members {
            let Some(t) = targets.get(i) else { continue };
            for (j, u) in t.utterances.iter().enumerate() {
                let u = u.trim();
                if u.is_empty() {
                    errors.push((
                        format!("config.targets[{i}].utterances[{j}]"),
                        "must not be empty".into(),
                    ));
                } else if !out.iter().any(|(h, x)| *h == g && x == u) {
                    out.push((g, u.to_string()));
                }
            }
        }
    }
    for (i, t) in targets.iter().enumerate() {
        let catchall = t.description.as_deref().map(str::trim) == Some(semantic::CATCHALL);
        if catchall && !t.utterances.is_empty() {
            errors.push((
                format!("config.targets[{i}].utterances"),
                "a CATCHALL target takes what matches nothing else; it has no utterances".into(),
            ));
        }
    }
    out
}

impl SemanticRouter {
    /// Connects to the vector store as the config goes into service (see
    /// [`Store::activate`]); paths are relative to the plugin.
    pub fn activate(&self) -> Result<Option<(String, String)>, (String, String)> {
        self.store.activate("config.vectordb")
    }

    /// Picks the candidate targets for a request body.
    pub async fn route(&self, upstreams: &Upstreams, body: &BodyView<'_>) -> Routed {
        let started = Instant::now();
        let Some(text) = semantic::prompt_text(body) else {
            return self.fallback("no_prompt", None, None, None, started);
        };
        let index = match self.index(upstreams).await {
            Ok(i) => i,
            Err(e) => return self.fallback("embedding_failed", None, None, Some(e), started),
        };
        let query = match self.embedder.embed_one(upstreams, &text).await {
            Ok(v) if v.len() as u64 == self.dimensions => v,
            Ok(v) => {
                let e = self.wrong_dimensions(v.len());
                return self.fallback("embedding_failed", None, None, Some(e), started);
            }
            Err(e) => return self.fallback("embedding_failed", None, None, Some(e), started),
        };
        let found = index.search(&query);
        let nearest = found
            .nearest
            .and_then(|(i, d)| index.entries.get(i).map(|e| (e, d)));
        match nearest {
            Some((entry, distance)) if found.matched => {
                let mut log = self.log_base("matched", started);
                log.insert("description".into(), json!(entry.description));
                if entry.text != entry.description {
                    log.insert("utterance".into(), json!(entry.text));
                }
                log.insert("distance".into(), json!(distance));
                log.insert("targets".into(), json!(entry.targets));
                Routed {
                    candidates: Ok(entry.targets.clone()),
                    log: Value::Object(log),
                }
            }
            Some((entry, distance)) => self.fallback(
                "catchall",
                Some(distance),
                Some(&entry.description),
                None,
                started,
            ),
            None => self.fallback("catchall", None, None, None, started),
        }
    }

    /// For tuning (`tollgate route-test`): the texts nearest `prompt` (description or
    /// utterance, with their group's description and targets, and the distance), nearest
    /// first, and whether the nearest is within the threshold.
    pub async fn explain(
        &self,
        upstreams: &Upstreams,
        prompt: &str,
    ) -> Result<(Vec<Near>, bool), String> {
        let index = self.index(upstreams).await?;
        let v = self.embedder.embed_one(upstreams, prompt).await?;
        if v.len() as u64 != self.dimensions {
            return Err(self.wrong_dimensions(v.len()));
        }
        let mut near: Vec<Near> = index
            .entries
            .iter()
            .filter_map(|e| {
                Some(Near {
                    description: e.description.clone(),
                    text: e.text.clone(),
                    targets: e.targets.clone(),
                    distance: self.metric.distance(&v, &e.vector)?,
                })
            })
            .collect();
        near.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        let matched = near
            .first()
            .is_some_and(|n| self.threshold.is_none_or(|t| n.distance <= t));
        Ok((near, matched))
    }

    /// The CATCHALL targets.
    pub fn catchall(&self) -> &[usize] {
        &self.catchall
    }

    fn log_base(&self, outcome: &str, started: Instant) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("outcome".into(), json!(outcome));
        m.insert(
            "embeddings_provider".into(),
            json!(self.embedder.target.provider.as_str()),
        );
        m.insert("embeddings_model".into(), json!(self.embedder.model));
        m.insert("distance_metric".into(), json!(self.metric.as_str()));
        m.insert(
            "latency".into(),
            json!(started.elapsed().as_millis() as u64),
        );
        m
    }

    /// The CATCHALL target(s), or the error a config without one gives.
    fn fallback(
        &self,
        outcome: &str,
        distance: Option<f64>,
        nearest: Option<&str>,
        error: Option<String>,
        started: Instant,
    ) -> Routed {
        let mut log = self.log_base(outcome, started);
        if let Some(d) = distance {
            log.insert("distance".into(), json!(d));
        }
        if let Some(n) = nearest {
            log.insert("nearest".into(), json!(n));
        }
        if let Some(e) = &error {
            tracing::warn!(plugin_id = %self.plugin_id, error = %e, "semantic routing: embedding failed, using the CATCHALL target");
            log.insert("error".into(), json!(e));
        }
        let candidates = if !self.catchall.is_empty() {
            log.insert("description".into(), json!(semantic::CATCHALL));
            log.insert("targets".into(), json!(self.catchall));
            Ok(self.catchall.clone())
        } else {
            Err(match outcome {
                "embedding_failed" => GatewayError::UpstreamInvalid(format!(
                    "semantic routing: {}",
                    error.as_deref().unwrap_or("embedding failed")
                )),
                "no_prompt" => GatewayError::BadRequest(
                    "semantic routing: the request has no text prompt to route by, and no target has description CATCHALL".into(),
                ),
                _ => GatewayError::BadRequest(
                    "semantic routing: no target description is within vectordb.threshold of the prompt, and no target has description CATCHALL".into(),
                ),
            })
        };
        Routed {
            candidates,
            log: Value::Object(log),
        }
    }

    fn wrong_dimensions(&self, got: usize) -> String {
        crate::balancer::vector_set::wrong_dimensions(&self.embedder, got, self.dimensions)
    }

    /// The description index: built once its vectors are (concurrent callers wait for one
    /// computation).
    async fn index(&self, upstreams: &Upstreams) -> Result<Arc<Index>, String> {
        if let Some(i) = self.index.get() {
            return Ok(Arc::clone(i));
        }
        let vectors = self
            .set
            .vectors(&self.embedder, &self.store, upstreams)
            .await?;
        let entries = self
            .texts
            .iter()
            .zip(vectors.iter())
            .filter_map(|((g, text), vector)| {
                let (description, targets) = self.groups.get(*g)?;
                Some(Entry {
                    description: description.clone(),
                    text: text.clone(),
                    vector: vector.clone(),
                    targets: targets.clone(),
                })
            })
            .collect();
        let index = Arc::new(Index {
            metric: self.metric,
            threshold: self.threshold,
            entries,
        });
        Ok(Arc::clone(self.index.get_or_init(|| index)))
    }
}

/// Targets to leave out of a balancer pick so that only untried candidates remain.
pub fn exclude_outside(n: usize, candidates: &[usize], tried: &[usize]) -> Vec<usize> {
    (0..n)
        .filter(|i| !candidates.contains(i) || tried.contains(i))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn targets(descriptions: &[Option<&str>]) -> Vec<TargetConfig> {
        descriptions
            .iter()
            .map(|d| {
                serde_json::from_value(json!({"route_type": "llm/v1/chat",
                    "model": {"provider": "openai", "name": "m"}, "description": d}))
                .unwrap()
            })
            .collect()
    }

    fn compile_with(e: Value, v: Value, t: &[TargetConfig]) -> Result<SemanticRouter, FieldErrors> {
        let (mut errs, mut warns) = (Vec::new(), Vec::new());
        let r = compile(
            "p",
            Some(&e),
            Some(&v),
            t,
            (Duration::from_secs(1), Duration::from_secs(1)),
            &VaultTable::new(),
            &|_| None,
            &mut errs,
            &mut warns,
        );
        match r {
            Some(r) if errs.is_empty() => Ok(r),
            _ => Err(errs),
        }
    }

    #[test]
    fn load_checks_name_fields() {
        let e = json!({"model": {"provider": "openai", "name": "emb"}});
        let v = json!({"dimensions": 8, "distance_metric": "cosine", "threshold": 0.5});
        let r = compile_with(
            e.clone(),
            v.clone(),
            &targets(&[Some("a"), Some("a"), Some("CATCHALL")]),
        )
        .unwrap();
        assert_eq!(r.groups, vec![("a".into(), vec![0, 1])]);
        assert_eq!(r.catchall, vec![2]);
        let errs = compile_with(e.clone(), v.clone(), &targets(&[Some("a"), None])).unwrap_err();
        assert_eq!(errs[0].0, "config.targets[1].description");
        let errs = compile_with(
            e.clone(),
            json!({"dimensions": 8, "distance_metric": "dot"}),
            &targets(&[Some("a")]),
        )
        .unwrap_err();
        assert_eq!(errs[0].0, "config.vectordb.distance_metric", "{errs:?}");
        let errs = compile_with(
            json!({"model": {"provider": "openai"}}),
            v.clone(),
            &targets(&[Some("a")]),
        )
        .unwrap_err();
        assert!(errs[0].0.starts_with("config.embeddings"), "{errs:?}");
        let errs = compile_with(
            e,
            json!({"dimensions": 8, "distance_metric": "cosine", "threshold": -1}),
            &targets(&[Some("a")]),
        )
        .unwrap_err();
        assert_eq!(errs[0].0, "config.vectordb.threshold");
        let (mut errs, mut warns) = (Vec::new(), Vec::new());
        let none = compile(
            "p",
            None,
            Some(&v),
            &targets(&[Some("a")]),
            (Duration::ZERO, Duration::ZERO),
            &VaultTable::new(),
            &|_| None,
            &mut errs,
            &mut warns,
        );
        assert!(none.is_none());
        assert_eq!(errs[0].0, "config.embeddings");
    }

    #[test]
    fn utterances_join_their_group_and_catchall_has_none() {
        let mut t = targets(&[Some("a"), Some("a"), Some("CATCHALL")]);
        t[0].utterances = vec!["u1".into(), " u2 ".into()];
        t[1].utterances = vec!["u1".into()];
        let (groups, _) = semantic::group(&[Some("a"), Some("a"), Some("CATCHALL")]);
        let mut errs = Vec::new();
        let texts = texts_of(&groups, &t, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            texts,
            vec![
                (0, "a".to_string()),
                (0, "u1".to_string()),
                (0, "u2".to_string())
            ]
        );
        t[2].utterances = vec!["x".into()];
        t[0].utterances.push(" ".into());
        texts_of(&groups, &t, &mut errs);
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "config.targets[0].utterances[2]",
                "config.targets[2].utterances"
            ]
        );
    }

    #[test]
    fn exclusions_keep_untried_candidates() {
        assert_eq!(exclude_outside(4, &[1, 2], &[]), vec![0, 3]);
        assert_eq!(exclude_outside(4, &[1, 2], &[2]), vec![0, 2, 3]);
        assert_eq!(exclude_outside(2, &[], &[]), vec![0, 1]);
    }
}

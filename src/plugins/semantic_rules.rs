//! The allow and deny rules of the semantic guards (`ai-semantic-prompt-guard`,
//! `ai-semantic-response-guard`): embedded once per configuration, and a text compared with
//! them by meaning. Deny wins; when allow rules exist, a text near none of them is refused.
//!
//! Near means: within `vectordb.threshold` (a distance, as in Kong's code) when it is given;
//! otherwise a cosine similarity of at least `search.threshold` (Kong's documented score,
//! default 0.5), i.e. the distance that similarity gives under the configured metric.

use serde_json::{json, Value};

use crate::balancer::embed::Embedder;
use crate::balancer::semantic::Metric;
use crate::balancer::vector_set::VectorSet;
use crate::balancer::vectordb;
use crate::config::vault::VaultTable;
use crate::net::upstream::Upstreams;

type FieldErrors = Vec<(String, String)>;

/// Kong's limits on the rule lists.
const MAX_RULES: usize = 100;
const MAX_RULE_CHARS: usize = 500;
/// Kong's `search.threshold` default (a similarity).
const DEFAULT_SIMILARITY: f64 = 0.5;

/// Why a text was refused (for the log; the client reads only the guard's vague answer).
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// Near a deny rule (its index and the distance).
    Denied(usize, f64),
    /// Allow rules exist and none is near.
    NotAllowed,
    /// No text to check (not a body the guard reads).
    NoText,
    /// The text is longer than the guard reads (its length and the limit, in bytes).
    TooLarge(usize, u64),
    /// The embeddings provider or the store failed.
    Failed(String),
}

impl Refusal {
    /// The reason as the log and the `ai` record name it.
    pub fn reason(&self) -> String {
        match self {
            Refusal::Denied(i, d) => format!("near deny rule {i} (distance {d:.3})"),
            Refusal::NotAllowed => "near no allow rule".into(),
            Refusal::NoText => "no text the guard can read".into(),
            Refusal::TooLarge(n, limit) => {
                format!("{n} bytes, more than the {limit} the guard reads")
            }
            Refusal::Failed(e) => format!("the guard could not check it: {e}"),
        }
    }
}

/// Field errors of a guard's config: its records, its rule lists (`allow`/`deny`: their
/// names under `config.rules`), its threshold and its format (`reads`: what it reads, for
/// the message).
pub fn check_guard(
    (embeddings, vectordb): (&Option<Value>, &Option<Value>),
    allow: (&str, &[String]),
    deny: (&str, &[String]),
    threshold: Option<f64>,
    (llm_format, reads): (crate::plugins::ai_prompt_decorator::LlmFormat, &str),
) -> FieldErrors {
    let mut errs = Vec::new();
    for (field, v) in [("embeddings", embeddings), ("vectordb", vectordb)] {
        if v.as_ref().is_none_or(Value::is_null) {
            errs.push((field.into(), "required field missing".into()));
        }
    }
    errs.extend(check_lists(allow, deny, threshold));
    if llm_format != crate::plugins::ai_prompt_decorator::LlmFormat::Openai {
        errs.push((
            "llm_format".into(),
            format!("tollgate's {reads} (chat, completions, Responses)"),
        ));
    }
    errs
}

/// Field errors of the rule lists (`allow`/`deny`: their names under `config.rules`).
fn check_lists(
    (allow_name, allow): (&str, &[String]),
    (deny_name, deny): (&str, &[String]),
    threshold: Option<f64>,
) -> FieldErrors {
    let mut errs = Vec::new();
    if allow.is_empty() && deny.is_empty() {
        errs.push((
            "config".into(),
            format!("at least one of these fields must be non-empty: 'config.rules.{allow_name}', 'config.rules.{deny_name}'"),
        ));
    }
    for (field, list) in [(allow_name, allow), (deny_name, deny)] {
        if list.len() > MAX_RULES {
            errs.push((
                format!("rules.{field}"),
                format!("length must be at most {MAX_RULES}"),
            ));
        }
        for (i, p) in list.iter().enumerate() {
            let n = p.chars().count();
            if n == 0 || n > MAX_RULE_CHARS {
                errs.push((
                    format!("rules.{field}[{i}]"),
                    format!("length must be between 1 and {MAX_RULE_CHARS}"),
                ));
            }
        }
    }
    if threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        errs.push((
            "search.threshold".into(),
            "value should be between 0 and 1".into(),
        ));
    }
    errs
}

/// A guard's compiled rules, with the embeddings provider and store they use.
#[derive(Debug)]
pub struct RuleSet {
    embedder: Embedder,
    store: vectordb::Store,
    metric: Metric,
    /// Largest distance at which a text matches a rule.
    max_distance: f64,
    dimensions: u64,
    /// The allow rules, then the deny rules.
    rules: VectorSet,
    allow: usize,
}

/// What a guard's config gives its rule set.
pub struct RuleSource<'a> {
    /// The plugin instance's id and kind (names the vectors in the store and in errors).
    pub id: &'a str,
    pub kind: &'static str,
    pub allow: &'a [String],
    pub deny: &'a [String],
    /// `search.threshold` (a similarity).
    pub similarity: Option<f64>,
    pub embeddings: &'a Option<Value>,
    pub vectordb: &'a Option<Value>,
}

impl RuleSet {
    /// Compiles the rules; errors (and warnings) name fields under `config`.
    pub fn compile(
        src: RuleSource<'_>,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(RuleSet, FieldErrors), FieldErrors> {
        let super::semantic_records::Compiled {
            embedder,
            store,
            vectordb,
            warnings,
        } = super::semantic_records::compile(src.embeddings, src.vectordb, vaults, env)?;
        let metric = vectordb.distance_metric;
        let similarity = src.similarity.unwrap_or(DEFAULT_SIMILARITY);
        let max_distance = vectordb.threshold.unwrap_or(match metric {
            Metric::Cosine => 1.0 - similarity,
            // Unit vectors: |a − b|² = 2 (1 − cos).
            Metric::Euclidean => (2.0 * (1.0 - similarity)).sqrt(),
        });
        let texts = src.allow.iter().chain(src.deny).cloned().collect();
        let set = RuleSet {
            rules: VectorSet::new(src.id, src.kind, texts, vectordb.dimensions),
            embedder,
            store,
            metric,
            max_distance,
            dimensions: vectordb.dimensions,
            allow: src.allow.len(),
        };
        Ok((set, warnings))
    }

    /// Checks the vector store as the config goes into service (pgvector: reachable, with
    /// the extension); paths are relative to the plugin.
    pub fn activate(&self) -> Result<Option<(String, String)>, (String, String)> {
        self.store.activate("config.vectordb")
    }

    /// Checks a text: Ok with what it matched (for the log), or why it is refused.
    pub async fn check(&self, upstreams: &Upstreams, text: &str) -> Result<Value, Refusal> {
        let rules = self
            .rules
            .vectors(&self.embedder, &self.store, upstreams)
            .await
            .map_err(Refusal::Failed)?;
        let v = self
            .embedder
            .embed_one(upstreams, text)
            .await
            .map_err(Refusal::Failed)?;
        if v.len() as u64 != self.dimensions {
            let e = crate::balancer::vector_set::wrong_dimensions(
                &self.embedder,
                v.len(),
                self.dimensions,
            );
            return Err(Refusal::Failed(e));
        }
        let nearest = |range: std::ops::Range<usize>| {
            range
                .filter_map(|i| Some((i, self.metric.distance(&rules[i], &v)?)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
        };
        if let Some((i, d)) =
            nearest(self.allow..rules.len()).filter(|(_, d)| *d <= self.max_distance)
        {
            return Err(Refusal::Denied(i - self.allow, d));
        }
        if self.allow == 0 {
            return Ok(json!({"outcome": "allowed"}));
        }
        match nearest(0..self.allow).filter(|(_, d)| *d <= self.max_distance) {
            Some((i, d)) => Ok(json!({"outcome": "allowed", "allow_rule": i, "distance": d})),
            None => Err(Refusal::NotAllowed),
        }
    }
}

//! `ai-semantic-prompt-guard` (Kong's config and answer): the prompt is embedded and compared
//! with the allow and deny rules (embedded once per configuration): a prompt near a deny rule
//! is refused; when allow rules exist, a prompt near none of them is refused. Deny wins. The
//! refusal is Kong's deliberately vague 400 `bad request`; an embeddings or store failure is
//! refused the same way (Kong fails closed).
//!
//! Near means: within `vectordb.threshold` (a distance, as in Kong's code) when it is given;
//! otherwise a cosine similarity of at least `search.threshold` (Kong's documented score,
//! default 0.5), i.e. the distance that similarity gives under the configured metric.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::balancer::embed::Embedder;
use crate::balancer::semantic::Metric;
use crate::balancer::vector_set::VectorSet;
use crate::balancer::vectordb;
use crate::config::plugins::nullable;
use crate::config::vault::VaultTable;
use crate::net::upstream::Upstreams;
use crate::plugins::ai_prompt_decorator::LlmFormat;

type FieldErrors = Vec<(String, String)>;

/// Kong's limits on the rule lists.
const MAX_RULES: usize = 100;
const MAX_RULE_CHARS: usize = 500;
/// Kong's `search.threshold` default (a similarity).
const DEFAULT_SIMILARITY: f64 = 0.5;

/// `config.rules`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default, deserialize_with = "nullable")]
    pub allow_prompts: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub deny_prompts: Vec<String>,
    /// Check every message of the conversation (joined), not only the latest.
    #[serde(default, deserialize_with = "nullable")]
    pub match_all_conversation_history: bool,
    /// Check messages of every role, not only `user`.
    #[serde(default, deserialize_with = "nullable")]
    pub match_all_roles: bool,
    /// Kong's deprecated body limit (bytes); the top-level field replaces it.
    pub max_request_body_size: Option<u64>,
}

/// `config.search`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// The cosine similarity a prompt must reach to match a rule (when
    /// `vectordb.threshold` is not given).
    pub threshold: Option<f64>,
}

/// Plugin config, Kong's field names.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiSemanticPromptGuardConfig {
    pub embeddings: Option<Value>,
    pub vectordb: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub rules: Rules,
    #[serde(default, deserialize_with = "nullable")]
    pub search: SearchConfig,
    /// Largest body the plugin reads (bytes; Kong: 1 MiB); a larger one is a 413.
    pub max_request_body_size: Option<u64>,
    /// Kong EE's category (accepted, unused).
    pub genai_category: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub llm_format: LlmFormat,
}

impl AiSemanticPromptGuardConfig {
    /// Field errors (path under `config`, message).
    pub fn validate(&self) -> FieldErrors {
        let mut errs = Vec::new();
        for (field, v) in [
            ("embeddings", &self.embeddings),
            ("vectordb", &self.vectordb),
        ] {
            if v.as_ref().is_none_or(Value::is_null) {
                errs.push((field.into(), "required field missing".into()));
            }
        }
        let r = &self.rules;
        if r.allow_prompts.is_empty() && r.deny_prompts.is_empty() {
            errs.push((
                "config".into(),
                "at least one of these fields must be non-empty: 'config.rules.allow_prompts', 'config.rules.deny_prompts'".into(),
            ));
        }
        for (field, list) in [
            ("allow_prompts", &r.allow_prompts),
            ("deny_prompts", &r.deny_prompts),
        ] {
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
        if self
            .search
            .threshold
            .is_some_and(|t| !(0.0..=1.0).contains(&t))
        {
            errs.push((
                "search.threshold".into(),
                "value should be between 0 and 1".into(),
            ));
        }
        if self.llm_format != LlmFormat::Openai {
            errs.push((
                "llm_format".into(),
                "tollgate's semantic prompt guard reads OpenAI-format bodies (chat, completions, Responses)".into(),
            ));
        }
        errs
    }
}

/// A compiled instance.
#[derive(Debug)]
pub struct SemanticPromptGuard {
    pub config: AiSemanticPromptGuardConfig,
    embedder: Embedder,
    store: vectordb::Store,
    metric: Metric,
    /// Largest distance at which a prompt matches a rule.
    max_distance: f64,
    dimensions: u64,
    /// The allow rules, then the deny rules.
    rules: VectorSet,
    allow: usize,
}

/// Why a prompt was refused (for the log; the client only reads `bad request`).
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// Near a deny rule (its index and the distance).
    Denied(usize, f64),
    /// Allow rules exist and none is near.
    NotAllowed,
    /// No text to check (not a chat, completions or Responses body, or non-text content).
    NoText,
    /// The embeddings provider or the store failed.
    Failed(String),
}

impl SemanticPromptGuard {
    /// Compiles `config` for plugin `id`; errors name fields under `config`.
    pub fn compile(
        id: &str,
        config: AiSemanticPromptGuardConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(SemanticPromptGuard, FieldErrors), FieldErrors> {
        let super::semantic_records::Compiled {
            embedder,
            store,
            vectordb,
            warnings,
        } = super::semantic_records::compile(&config.embeddings, &config.vectordb, vaults, env)?;
        let metric = vectordb.distance_metric;
        let similarity = config.search.threshold.unwrap_or(DEFAULT_SIMILARITY);
        let max_distance = vectordb.threshold.unwrap_or(match metric {
            Metric::Cosine => 1.0 - similarity,
            // Unit vectors: |a − b|² = 2 (1 − cos).
            Metric::Euclidean => (2.0 * (1.0 - similarity)).sqrt(),
        });
        let allow = config.rules.allow_prompts.len();
        let texts = config
            .rules
            .allow_prompts
            .iter()
            .chain(&config.rules.deny_prompts)
            .cloned()
            .collect();
        let guard = SemanticPromptGuard {
            rules: VectorSet::new(id, "semantic prompt guard", texts, vectordb.dimensions),
            embedder,
            store,
            metric,
            max_distance,
            dimensions: vectordb.dimensions,
            allow,
            config,
        };
        Ok((guard, warnings))
    }

    /// The body size limit (Kong's top-level field, else its deprecated rules one).
    pub fn max_body(&self) -> u64 {
        self.config
            .max_request_body_size
            .or(self.config.rules.max_request_body_size)
            .unwrap_or(crate::config::plugins::default_body_size())
    }

    /// The text of `doc` the guard checks.
    pub fn text(&self, doc: &Value) -> Option<String> {
        let r = &self.config.rules;
        super::ai_prompt_guard::prompt_text(
            doc,
            !r.match_all_conversation_history,
            r.match_all_roles,
        )
    }

    /// Checks a prompt's text: Ok with what it matched (for the log), or why it is refused.
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_fields() {
        let c: AiSemanticPromptGuardConfig = serde_json::from_value(json!({
            "rules": {"deny_prompts": ["", "x".repeat(501)]},
            "search": {"threshold": 2}
        }))
        .unwrap();
        let e = c.validate();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "embeddings",
                "vectordb",
                "rules.deny_prompts[0]",
                "rules.deny_prompts[1]",
                "search.threshold"
            ]
        );
        let none: AiSemanticPromptGuardConfig = serde_json::from_value(json!({})).unwrap();
        assert!(none
            .validate()
            .iter()
            .any(|(f, m)| f == "config" && m.contains("allow_prompts")));
    }
}

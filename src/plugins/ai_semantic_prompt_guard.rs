//! `ai-semantic-prompt-guard` (Kong's config and answer): the prompt is embedded and compared
//! with the allow and deny rules (embedded once per configuration): a prompt near a deny rule
//! is refused; when allow rules exist, a prompt near none of them is refused. Deny wins. The
//! refusal is Kong's deliberately vague 400 `bad request`; an embeddings or store failure is
//! refused the same way (Kong fails closed). The matching itself is
//! [`super::semantic_rules`], shared with `ai-semantic-response-guard`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::semantic_rules::{Refusal, RuleSet, RuleSource};
use crate::config::plugins::nullable;
use crate::config::vault::VaultTable;
use crate::net::upstream::Upstreams;
use crate::plugins::ai_prompt_decorator::LlmFormat;

type FieldErrors = Vec<(String, String)>;

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
        let r = &self.rules;
        super::semantic_rules::check_guard(
            (&self.embeddings, &self.vectordb),
            ("allow_prompts", &r.allow_prompts),
            ("deny_prompts", &r.deny_prompts),
            self.search.threshold,
            (
                self.llm_format,
                "semantic prompt guard reads OpenAI-format bodies",
            ),
        )
    }
}

/// A compiled instance.
#[derive(Debug)]
pub struct SemanticPromptGuard {
    pub config: AiSemanticPromptGuardConfig,
    rules: RuleSet,
}

impl SemanticPromptGuard {
    /// Compiles `config` for plugin `id`; errors name fields under `config`.
    pub fn compile(
        id: &str,
        config: AiSemanticPromptGuardConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(SemanticPromptGuard, FieldErrors), FieldErrors> {
        let src = RuleSource {
            id,
            kind: "semantic prompt guard",
            allow: &config.rules.allow_prompts,
            deny: &config.rules.deny_prompts,
            similarity: config.search.threshold,
            embeddings: &config.embeddings,
            vectordb: &config.vectordb,
        };
        let (rules, warnings) = RuleSet::compile(src, vaults, env)?;
        Ok((SemanticPromptGuard { config, rules }, warnings))
    }

    /// Checks the vector store as the config goes into service.
    pub fn activate(&self) -> Result<Option<(String, String)>, (String, String)> {
        self.rules.activate()
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
        self.rules.check(upstreams, text).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

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

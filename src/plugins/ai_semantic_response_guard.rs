//! `ai-semantic-response-guard` (Kong's config): the LLM's whole answer is embedded and
//! compared with the allow and deny rules ([`super::semantic_rules`], as the prompt guard
//! does with prompts) before any of it reaches the client. As Kong documents, the plugin
//! turns streaming off upstream so the answer arrives whole; a client that asked for a
//! stream gets the checked answer replayed as one (`llm::replay`). A refused answer (or one
//! the guard could not check: Kong fails closed) is a vague 403 `bad response`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ai_semantic_prompt_guard::SearchConfig;
use super::semantic_rules::{Refusal, RuleSet, RuleSource};
use crate::config::plugins::{nullable, RouteType};
use crate::config::vault::VaultTable;
use crate::net::upstream::Upstreams;
use crate::plugins::ai_prompt_decorator::LlmFormat;

type FieldErrors = Vec<(String, String)>;

/// Kong's default for `rules.max_response_body_size` (bytes).
const DEFAULT_MAX_BODY: u64 = 8192;

/// `config.rules`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default, deserialize_with = "nullable")]
    pub allow_responses: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub deny_responses: Vec<String>,
    /// The largest answer body the guard reads (bytes; 0: any). A larger one cannot be
    /// checked and is refused.
    pub max_response_body_size: Option<u64>,
}

/// Plugin config, Kong's field names.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiSemanticResponseGuardConfig {
    pub embeddings: Option<Value>,
    pub vectordb: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub rules: Rules,
    #[serde(default, deserialize_with = "nullable")]
    pub search: SearchConfig,
    /// Kong EE's category (accepted, unused).
    pub genai_category: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub llm_format: LlmFormat,
}

impl AiSemanticResponseGuardConfig {
    /// Field errors (path under `config`, message).
    pub fn validate(&self) -> FieldErrors {
        let r = &self.rules;
        super::semantic_rules::check_guard(
            (&self.embeddings, &self.vectordb),
            ("allow_responses", &r.allow_responses),
            ("deny_responses", &r.deny_responses),
            self.search.threshold,
            (
                self.llm_format,
                "semantic response guard reads OpenAI-format answers",
            ),
        )
    }
}

/// A compiled instance.
#[derive(Debug)]
pub struct SemanticResponseGuard {
    pub config: AiSemanticResponseGuardConfig,
    rules: RuleSet,
}

impl SemanticResponseGuard {
    /// Compiles `config` for plugin `id`; errors name fields under `config`.
    pub fn compile(
        id: &str,
        config: AiSemanticResponseGuardConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(SemanticResponseGuard, FieldErrors), FieldErrors> {
        let src = RuleSource {
            id,
            kind: "semantic response guard",
            allow: &config.rules.allow_responses,
            deny: &config.rules.deny_responses,
            similarity: config.search.threshold,
            embeddings: &config.embeddings,
            vectordb: &config.vectordb,
        };
        let (rules, warnings) = RuleSet::compile(src, vaults, env)?;
        Ok((SemanticResponseGuard { config, rules }, warnings))
    }

    /// Checks the vector store as the config goes into service.
    pub fn activate(&self) -> Result<Option<(String, String)>, (String, String)> {
        self.rules.activate()
    }

    /// The largest answer body the guard reads (0: any).
    pub fn max_body(&self) -> u64 {
        self.config
            .rules
            .max_response_body_size
            .unwrap_or(DEFAULT_MAX_BODY)
    }

    /// Checks a whole answer of `route_type` (the client's form): Ok with what it matched,
    /// or why it is refused. Route types without text (embeddings, images…) pass.
    pub async fn check(
        &self,
        upstreams: &Upstreams,
        route_type: RouteType,
        body: &[u8],
    ) -> Result<Value, Refusal> {
        if !guards(route_type) {
            return Ok(serde_json::json!({"outcome": "not checked"}));
        }
        let limit = self.max_body();
        if limit > 0 && body.len() as u64 > limit {
            return Err(Refusal::TooLarge(body.len(), limit));
        }
        let text = answer_text(route_type, body).ok_or(Refusal::NoText)?;
        if text.trim().is_empty() {
            return Ok(serde_json::json!({"outcome": "allowed", "empty": true}));
        }
        self.rules.check(upstreams, &text).await
    }
}

/// The route types whose answers the guard reads.
pub fn guards(route_type: RouteType) -> bool {
    matches!(
        route_type,
        RouteType::Chat | RouteType::Completions | RouteType::Responses
    )
}

/// What an answer says: its text, refusals and tool calls (name and arguments), every
/// choice or output item, one per line. None: not an answer of that route type.
pub fn answer_text(route_type: RouteType, body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut out: Vec<&str> = Vec::new();
    match route_type {
        RouteType::Chat => {
            for c in v.get("choices")?.as_array()? {
                let m = c.get("message")?;
                match m.get("content") {
                    Some(Value::Array(parts)) => {
                        out.extend(parts.iter().filter_map(|p| str_of(p.get("text"))))
                    }
                    other => out.extend(str_of(other)),
                }
                out.extend(str_of(m.get("refusal")));
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    out.extend(str_of(call.pointer("/function/name")));
                    out.extend(str_of(call.pointer("/function/arguments")));
                }
            }
        }
        RouteType::Completions => {
            for c in v.get("choices")?.as_array()? {
                out.extend(str_of(c.get("text")));
            }
        }
        RouteType::Responses => {
            for item in v.get("output")?.as_array()? {
                match str_of(item.get("type")) {
                    Some("message") => {
                        for p in item
                            .get("content")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            out.extend(str_of(p.get("text")));
                            out.extend(str_of(p.get("refusal")));
                        }
                    }
                    Some("function_call") => {
                        out.extend(str_of(item.get("name")));
                        out.extend(str_of(item.get("arguments")));
                    }
                    _ => {}
                }
            }
        }
        _ => return None,
    }
    Some(out.join("\n"))
}

fn str_of(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_errors_name_fields() {
        let c: AiSemanticResponseGuardConfig = serde_json::from_value(json!({
            "rules": {"allow_responses": ["ok", ""]},
            "llm_format": "anthropic"
        }))
        .unwrap();
        let fields: Vec<String> = c.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "embeddings",
                "vectordb",
                "rules.allow_responses[1]",
                "llm_format"
            ]
        );
        let unknown = serde_json::from_value::<AiSemanticResponseGuardConfig>(
            json!({"rules": {"deny_prompts": ["x"]}}),
        );
        assert!(unknown.unwrap_err().to_string().contains("deny_prompts"));
    }

    #[test]
    fn answers_read_as_text() {
        let chat = json!({"choices": [
            {"message": {"content": "first"}},
            {"message": {"content": [{"type": "text", "text": "second"}], "refusal": "no",
             "tool_calls": [{"function": {"name": "lookup", "arguments": "{\"q\":1}"}}]}}]});
        assert_eq!(
            answer_text(RouteType::Chat, chat.to_string().as_bytes()).unwrap(),
            "first\nsecond\nno\nlookup\n{\"q\":1}"
        );
        let done = json!({"choices": [{"text": "a"}, {"text": "b"}]});
        assert_eq!(
            answer_text(RouteType::Completions, done.to_string().as_bytes()).unwrap(),
            "a\nb"
        );
        let resp = json!({"output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "hi"}]},
            {"type": "function_call", "name": "f", "arguments": "{}"}]});
        assert_eq!(
            answer_text(RouteType::Responses, resp.to_string().as_bytes()).unwrap(),
            "hi\nf\n{}"
        );
        assert!(answer_text(RouteType::Chat, b"{\"error\":1}").is_none());
        assert!(answer_text(RouteType::Chat, b"not json").is_none());
        assert!(answer_text(RouteType::Embeddings, b"{}").is_none());
    }
}

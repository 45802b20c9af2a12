//! `ai-prompt-length-guard` (a tollgate plugin): refuses prompts longer than a number of
//! characters or (estimated, tiktoken-compatible) tokens with a 400 that says which limit
//! was exceeded and by how much, before the upstream is paid for them. It runs after the
//! template and decorator plugins, so it measures what the upstream would receive.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `ai-prompt-length-guard` config.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiPromptLengthConfig {
    /// Most characters of prompt text (all messages, instructions and input) allowed.
    pub max_prompt_chars: Option<u64>,
    /// Most prompt tokens allowed, as OpenAI's tokenizer counts them for the request's
    /// model (chat formatting overhead included).
    pub max_prompt_tokens: Option<u64>,
}

impl AiPromptLengthConfig {
    /// Field errors (path under `config`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.max_prompt_chars.is_none() && self.max_prompt_tokens.is_none() {
            errs.push((
                "config".into(),
                "at least one of these fields must be non-empty: 'config.max_prompt_chars', 'config.max_prompt_tokens'".into(),
            ));
        }
        for (f, v) in [
            ("max_prompt_chars", self.max_prompt_chars),
            ("max_prompt_tokens", self.max_prompt_tokens),
        ] {
            if v == Some(0) {
                errs.push((f.into(), "value must be greater than 0".into()));
            }
        }
        errs
    }
}

/// Checks `body` against the limits; the error is the client's 400 message.
pub fn check(cfg: &AiPromptLengthConfig, body: &Value) -> Result<(), String> {
    if let Some(max) = cfg.max_prompt_chars {
        let chars: u64 = crate::llm::tokens::prompt_texts(body)
            .iter()
            .map(|t| t.chars().count() as u64)
            .sum();
        if chars > max {
            return Err(format!(
                "prompt is too long: {chars} characters, the limit is {max}"
            ));
        }
    }
    if let Some(max) = cfg.max_prompt_tokens {
        let tokens = crate::llm::tokens::estimate_prompt(body, None);
        if tokens > max {
            return Err(format!(
                "prompt is too long: {tokens} tokens, the limit is {max}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_characters_and_tokens() {
        let c = AiPromptLengthConfig {
            max_prompt_chars: Some(10),
            max_prompt_tokens: None,
        };
        let ok = json!({"messages": [{"role": "user", "content": "0123456789"}]});
        assert!(check(&c, &ok).is_ok());
        let long = json!({"instructions": "abc", "input": "0123456789"});
        assert_eq!(
            check(&c, &long).unwrap_err(),
            "prompt is too long: 13 characters, the limit is 10"
        );
        let c = AiPromptLengthConfig {
            max_prompt_chars: None,
            max_prompt_tokens: Some(5),
        };
        let e = check(
            &c,
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]}),
        );
        assert_eq!(
            e.unwrap_err(),
            "prompt is too long: 9 tokens, the limit is 5"
        );
        let none: AiPromptLengthConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(none.validate().len(), 1);
    }
}

//! `ai-prompt-guard`: allow/deny regexes over the client's prompt text (Kong's OSS plugin),
//! as a pure check of the JSON request body. Any refusal is the deliberately vague
//! `bad request`, so clients cannot tell a guard is in use.

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::plugins::ai_prompt_decorator::LlmFormat;

/// The only refusal text (Kong's: it does not reveal the guard).
pub const BAD_REQUEST: &str = "bad request";

/// Kong's limit on each pattern list.
const MAX_PATTERNS: usize = 10;
/// Kong's limit on one pattern's length.
const MAX_PATTERN_CHARS: usize = 500;
/// Kong EE's `genai_category` default.
const DEFAULT_GENAI_CATEGORY: &str = "text/generation";
/// Separator between collected messages (Kong's, so words of two messages do not merge).
const SEPARATOR: &str = " ";

fn default_genai_category() -> String {
    DEFAULT_GENAI_CATEGORY.into()
}

/// `genai_category` with null meaning the default.
fn nullable_genai_category<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(default_genai_category))
}

/// Plugin config, Kong's field names; unknown fields rejected.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiPromptGuardConfig {
    /// Regexes of which at least one must match (when any are given).
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub allow_patterns: Vec<String>,
    /// Regexes of which none may match.
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub deny_patterns: Vec<String>,
    /// True: only the latest matching message is checked, the history is let through.
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub allow_all_conversation_history: bool,
    /// Check messages of every role, not only `user` (and Responses `instructions`).
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub match_all_roles: bool,
    /// Largest body the plugin reads (bytes); a larger one is a 413.
    #[serde(
        default = "crate::config::plugins::default_body_size",
        deserialize_with = "crate::config::plugins::nullable_body_size"
    )]
    pub max_request_body_size: u64,
    /// Client wire format.
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub llm_format: LlmFormat,
    /// Kong EE's category (accepted, unused).
    #[serde(
        default = "default_genai_category",
        deserialize_with = "nullable_genai_category"
    )]
    pub genai_category: String,
}

impl AiPromptGuardConfig {
    /// Checks what serde cannot, patterns compiled included; returns (path relative to
    /// `config`, message) pairs. An empty path is an entity-level error (Kong's `@entity`).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = self.validate_shape();
        compile_all(&self.allow_patterns, "allow_patterns", &mut errs);
        compile_all(&self.deny_patterns, "deny_patterns", &mut errs);
        errs
    }

    /// Everything but the regexes themselves.
    fn validate_shape(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.allow_patterns.is_empty() && self.deny_patterns.is_empty() {
            errs.push((
                String::new(),
                "at least one of these fields must be non-empty: 'config.allow_patterns', \
                 'config.deny_patterns'"
                    .into(),
            ));
        }
        // Kong's conditional entity check: matching every role over the whole history only.
        if self.match_all_roles && self.allow_all_conversation_history {
            errs.push((
                String::new(),
                "failed conditional validation given value of field 'config.match_all_roles'"
                    .into(),
            ));
            errs.push((
                "allow_all_conversation_history".into(),
                "value must be false".into(),
            ));
        }
        for (name, list) in [
            ("allow_patterns", &self.allow_patterns),
            ("deny_patterns", &self.deny_patterns),
        ] {
            if list.len() > MAX_PATTERNS {
                errs.push((
                    name.to_string(),
                    format!("length must be at most {MAX_PATTERNS}"),
                ));
            }
        }
        if self.max_request_body_size == 0 {
            errs.push((
                "max_request_body_size".into(),
                "value must be greater than 0".into(),
            ));
        }
        errs
    }
}

/// The length message for a pattern, if its length is out of Kong's bounds.
fn length_error(pattern: &str) -> Option<String> {
    // Kong measures string lengths in UTF-8 characters.
    let n = pattern.chars().count();
    if n == 0 {
        Some("length must be at least 1".into())
    } else if n > MAX_PATTERN_CHARS {
        Some(format!("length must be at most {MAX_PATTERN_CHARS}"))
    } else {
        None
    }
}

/// The regex crate's message without its multi-line caret diagram: the `error:` line.
fn regex_message(pattern: &str, e: &regex::Error) -> String {
    let full = e.to_string();
    let reason = full
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(full.as_str());
    format!("invalid regex '{pattern}': {reason}")
}

/// Compiles a list; errors (length or syntax) are pushed at `name[i]`.
fn compile_all(patterns: &[String], name: &str, errs: &mut Vec<(String, String)>) -> Vec<Regex> {
    let mut out = Vec::with_capacity(patterns.len());
    for (i, p) in patterns.iter().enumerate() {
        if let Some(msg) = length_error(p) {
            errs.push((format!("{name}[{i}]"), msg));
            continue;
        }
        match Regex::new(p) {
            Ok(r) => out.push(r),
            Err(e) => errs.push((format!("{name}[{i}]"), regex_message(p, &e))),
        }
    }
    out
}

/// The compiled plugin: the config and its regexes.
#[derive(Debug, Clone)]
pub struct PromptGuard {
    config: AiPromptGuardConfig,
    allow: Vec<Regex>,
    deny: Vec<Regex>,
}

impl PromptGuard {
    /// Validates the config and compiles its patterns; errors as from `validate`.
    pub fn new(cfg: &AiPromptGuardConfig) -> Result<PromptGuard, Vec<(String, String)>> {
        let mut errs = cfg.validate_shape();
        let allow = compile_all(&cfg.allow_patterns, "allow_patterns", &mut errs);
        let deny = compile_all(&cfg.deny_patterns, "deny_patterns", &mut errs);
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(PromptGuard {
            config: cfg.clone(),
            allow,
            deny,
        })
    }

    /// The config this guard was built from.
    pub fn config(&self) -> &AiPromptGuardConfig {
        &self.config
    }

    /// Ok when the prompt passes; otherwise `Err("bad request")` (the caller answers 400).
    /// Bodies of no known shape, and content that is not text, are refused the same way.
    pub fn check(&self, body: &Value) -> Result<(), String> {
        let text = self.collect(body).ok_or_else(|| BAD_REQUEST.to_string())?;
        if self.deny.iter().any(|r| r.is_match(&text)) {
            return Err(BAD_REQUEST.into());
        }
        if self.allow.is_empty() || self.allow.iter().any(|r| r.is_match(&text)) {
            Ok(())
        } else {
            Err(BAD_REQUEST.into())
        }
    }

    /// The text the patterns run on, newest message first; None: not a checkable body.
    ///
    /// `allow_all_conversation_history` is read as Kong's code reads it (guard-prompt.lua:
    /// `local just_pick_latest = conf.allow_all_conversation_history`), which matches its
    /// schema description ("if true, will ignore all previous chat prompts"): TRUE checks only
    /// the latest matching message and lets the history through; FALSE checks them all.
    /// The spec line we were given is ambiguous on this; Kong's code is what we follow.
    fn collect(&self, body: &Value) -> Option<String> {
        prompt_text(
            body,
            self.config.allow_all_conversation_history,
            self.config.match_all_roles,
        )
    }
}

/// The text a guard checks, newest message first (`latest_only`: only the latest message
/// of a checked role; `all_roles`: every role, not only `user`, and Responses
/// `instructions`); None: not a checkable body.
pub fn prompt_text(body: &Value, latest_only: bool, all_roles: bool) -> Option<String> {
    let obj = body.as_object()?;
    if let Some(Value::Array(messages)) = obj.get("messages") {
        return collect_messages(messages.iter().rev(), None, latest_only, all_roles);
    }
    if let Some(prompt) = obj.get("prompt") {
        // Completions: Kong checks a string prompt and refuses anything else.
        return prompt.as_str().map(str::to_owned);
    }
    match obj.get("input")? {
        Value::String(s) => {
            // A string input is the user's (latest) message.
            let mut texts = vec![s.clone()];
            if all_roles {
                texts.extend(instructions(obj)?);
            }
            Some(texts.join(SEPARATOR))
        }
        Value::Array(items) => {
            // Only message items carry prompts (tool calls, reasoning etc. are skipped).
            let messages = items.iter().rev().filter(|item| {
                item.get("type")
                    .is_none_or(|t| t.as_str() == Some("message"))
            });
            let extra = if all_roles { instructions(obj)? } else { None };
            collect_messages(messages, extra, latest_only, all_roles)
        }
        _ => None,
    }
}

/// Kong's loop over messages (newest first): every message must have a string role; those
/// of role `user` (any role with `all_roles`) contribute their text. `oldest` (Responses
/// `instructions`) is appended after the history when all of it is checked.
fn collect_messages<'a>(
    newest_first: impl Iterator<Item = &'a Value>,
    oldest: Option<String>,
    latest_only: bool,
    all_roles: bool,
) -> Option<String> {
    let mut texts: Vec<String> = Vec::new();
    for m in newest_first {
        let role = m.get("role")?.as_str()?;
        if role == "user" || all_roles {
            texts.push(content_text(m.get("content"))?);
            if latest_only {
                break;
            }
        }
    }
    // all_roles requires the full history, so `oldest` never meets latest_only.
    if !latest_only {
        texts.extend(oldest);
    }
    Some(texts.join(SEPARATOR))
}

/// Responses `instructions`: Some(None) when absent, None (refuse) when not a string.
fn instructions(obj: &serde_json::Map<String, Value>) -> Option<Option<String>> {
    match obj.get("instructions") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => None,
    }
}

/// A message's text: a string, or content parts that all carry `text` (chat `text`,
/// Responses `input_text`/`output_text`), joined by the separator. Null content (assistant
/// tool calls) has no text. Anything else (images, audio, files) cannot be checked, so the
/// caller refuses it: Kong refuses every non-string content; text-only parts are accepted
/// here because OpenAI clients commonly send them.
fn content_text(content: Option<&Value>) -> Option<String> {
    match content {
        None | Some(Value::Null) => Some(String::new()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(parts)) => {
            let texts = parts
                .iter()
                .map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Option<Vec<&str>>>()?;
            Some(texts.join(SEPARATOR))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> AiPromptGuardConfig {
        serde_json::from_value(v).unwrap()
    }

    fn guard(v: Value) -> PromptGuard {
        PromptGuard::new(&cfg(v)).unwrap()
    }

    fn chat(msgs: &[(&str, &str)]) -> Value {
        let messages: Vec<Value> = msgs
            .iter()
            .map(|(r, c)| json!({"role": r, "content": c}))
            .collect();
        json!({"model": "m", "messages": messages})
    }

    fn refused() -> Result<(), String> {
        Err(BAD_REQUEST.to_string())
    }

    #[test]
    fn config_defaults_and_nulls() {
        let c = cfg(json!({"deny_patterns": ["x"]}));
        assert!(c.allow_patterns.is_empty());
        assert!(!c.allow_all_conversation_history);
        assert!(!c.match_all_roles);
        assert_eq!(c.max_request_body_size, 1_048_576);
        assert_eq!(c.llm_format, LlmFormat::Openai);
        assert_eq!(c.genai_category, "text/generation");
        assert!(c.validate().is_empty());

        let c = cfg(json!({
            "allow_patterns": null, "deny_patterns": ["x"],
            "allow_all_conversation_history": null, "match_all_roles": null,
            "max_request_body_size": null, "llm_format": null, "genai_category": null
        }));
        assert!(c.allow_patterns.is_empty());
        assert_eq!(c.max_request_body_size, 1_048_576);
        assert_eq!(c.genai_category, "text/generation");
        assert_eq!(PromptGuard::new(&c).unwrap().config().deny_patterns, ["x"]);

        let c = cfg(json!({"deny_patterns": ["x"], "llm_format": "gemini",
            "genai_category": "audio/speech"}));
        assert_eq!(c.llm_format, LlmFormat::Gemini);
        assert_eq!(c.genai_category, "audio/speech");
    }

    #[test]
    fn config_rejects_unknown() {
        for bad in [
            json!({"deny_patterns": ["x"], "nope": true}),
            json!({"deny_patterns": "x"}),
            json!({"deny_patterns": ["x"], "llm_format": "xml"}),
        ] {
            assert!(serde_json::from_value::<AiPromptGuardConfig>(bad).is_err());
        }
    }

    #[test]
    fn config_validation() {
        let errs = cfg(json!({"allow_patterns": [], "deny_patterns": null})).validate();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "");
        assert!(errs[0].1.starts_with("at least one of these fields"));

        let errs = cfg(json!({"deny_patterns": ["x"], "match_all_roles": true,
            "allow_all_conversation_history": true}))
        .validate();
        assert_eq!(errs.len(), 2);
        assert_eq!(
            errs[1],
            (
                "allow_all_conversation_history".to_string(),
                "value must be false".to_string()
            )
        );
        assert!(
            cfg(json!({"deny_patterns": ["x"], "match_all_roles": true}))
                .validate()
                .is_empty()
        );

        let eleven: Vec<String> = (0..11).map(|i| format!("p{i}")).collect();
        let errs = cfg(
            json!({"allow_patterns": eleven, "deny_patterns": ["", "a".repeat(501)],
            "max_request_body_size": 0}),
        )
        .validate();
        assert_eq!(
            errs,
            vec![
                (
                    "allow_patterns".to_string(),
                    "length must be at most 10".to_string()
                ),
                (
                    "max_request_body_size".to_string(),
                    "value must be greater than 0".to_string()
                ),
                (
                    "deny_patterns[0]".to_string(),
                    "length must be at least 1".to_string()
                ),
                (
                    "deny_patterns[1]".to_string(),
                    "length must be at most 500".to_string()
                ),
            ]
        );
    }

    #[test]
    fn invalid_regex_path() {
        let c = cfg(json!({"allow_patterns": ["a", "b", "(unclosed"]}));
        let errs = PromptGuard::new(&c).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "allow_patterns[2]");
        assert!(errs[0].1.contains("(unclosed"), "{}", errs[0].1);
        assert!(errs[0].1.contains("unclosed group"), "{}", errs[0].1);
        assert_eq!(c.validate(), errs);
    }

    #[test]
    fn deny_only() {
        let g = guard(json!({"deny_patterns": [".*leicester.*"]}));
        assert_eq!(g.check(&chat(&[("user", "I like cheddar")])), Ok(()));
        assert_eq!(g.check(&chat(&[("user", "I like leicester")])), refused());
    }

    #[test]
    fn allow_only() {
        let g = guard(json!({"allow_patterns": ["cheddar", "brie"]}));
        assert_eq!(g.check(&chat(&[("user", "some brie")])), Ok(()));
        assert_eq!(g.check(&chat(&[("user", "some edam")])), refused());
        // Allow patterns see user messages only; the system prompt does not count.
        assert_eq!(
            g.check(&chat(&[("system", "cheddar"), ("user", "edam")])),
            refused()
        );
    }

    #[test]
    fn both_lists_deny_wins() {
        let g = guard(json!({"allow_patterns": ["cheddar"], "deny_patterns": ["edam"]}));
        assert_eq!(g.check(&chat(&[("user", "cheddar")])), Ok(()));
        assert_eq!(g.check(&chat(&[("user", "cheddar and edam")])), refused());
        assert_eq!(g.check(&chat(&[("user", "brie")])), refused());
    }

    #[test]
    fn history_flag() {
        let history = chat(&[
            ("user", "tell me about edam"),
            ("assistant", "edam is..."),
            ("user", "and cheddar?"),
        ]);
        // false (default): the whole history is checked, the old `edam` is found.
        let strict = guard(json!({"deny_patterns": ["edam"]}));
        assert_eq!(strict.check(&history), refused());
        // true: only the latest user message.
        let lax = guard(json!({"deny_patterns": ["edam"], "allow_all_conversation_history": true}));
        assert_eq!(lax.check(&history), Ok(()));
        // Newest first, joined by spaces.
        let order = guard(json!({"allow_patterns": ["^and cheddar\\? tell me about edam$"]}));
        assert_eq!(order.check(&history), Ok(()));
    }

    #[test]
    fn match_all_roles() {
        let body = chat(&[("system", "secret edam"), ("user", "cheddar")]);
        assert_eq!(
            guard(json!({"deny_patterns": ["edam"]})).check(&body),
            Ok(())
        );
        let all = guard(json!({"deny_patterns": ["edam"], "match_all_roles": true}));
        assert_eq!(all.check(&body), refused());
    }

    #[test]
    fn completions_prompt() {
        let g = guard(json!({"deny_patterns": ["edam"]}));
        assert_eq!(g.check(&json!({"prompt": "cheddar"})), Ok(()));
        assert_eq!(g.check(&json!({"prompt": "edam"})), refused());
        assert_eq!(g.check(&json!({"prompt": ["edam"]})), refused());
    }

    #[test]
    fn malformed_and_multimodal_refused() {
        let g = guard(json!({"deny_patterns": ["edam"]}));
        for body in [
            json!({"model": "m"}),
            json!("text"),
            json!({"messages": "{template://x}"}),
            json!({"messages": [{"content": "no role"}]}),
            json!({"messages": [{"role": 1, "content": "x"}]}),
            json!({"messages": [{"role": "user", "content": {"a": 1}}]}),
            json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:..."}}
            ]}]}),
            json!({"input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "https://x"}
            ]}]}),
            json!({"input": 3}),
        ] {
            assert_eq!(g.check(&body), refused(), "{body}");
        }
        // Text-only parts are checked like strings.
        let parts = |t: &str| json!({"messages": [{"role": "user", "content": [{"type": "text", "text": t}]}]});
        assert_eq!(g.check(&parts("cheddar")), Ok(()));
        assert_eq!(g.check(&parts("edam")), refused());
        // Assistant tool calls (null content) are fine even when all roles are matched.
        let all = guard(json!({"deny_patterns": ["edam"], "match_all_roles": true}));
        let body = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": []},
            {"role": "tool", "content": "result", "tool_call_id": "1"}
        ]});
        assert_eq!(all.check(&body), Ok(()));
    }

    #[test]
    fn responses_input() {
        let g = guard(json!({"deny_patterns": ["edam"]}));
        assert_eq!(g.check(&json!({"input": "cheddar"})), Ok(()));
        assert_eq!(g.check(&json!({"input": "edam"})), refused());
        // Instructions only count with match_all_roles.
        let body = json!({"instructions": "edam", "input": "cheddar"});
        assert_eq!(g.check(&body), Ok(()));
        let all = guard(json!({"deny_patterns": ["edam"], "match_all_roles": true}));
        assert_eq!(all.check(&body), refused());

        let items = json!({"input": [
            {"type": "message", "role": "developer", "content": "edam"},
            {"role": "user", "content": [{"type": "input_text", "text": "cheddar"}]},
            {"type": "function_call_output", "call_id": "c", "output": "edam"},
            {"type": "message", "role": "user", "content": "brie"}
        ]});
        assert_eq!(g.check(&items), Ok(()));
        assert_eq!(all.check(&items), refused());
        let deny_cheddar = guard(json!({"deny_patterns": ["cheddar"]}));
        assert_eq!(deny_cheddar.check(&items), refused());
        let latest = guard(json!({"deny_patterns": ["cheddar"],
            "allow_all_conversation_history": true}));
        assert_eq!(latest.check(&items), Ok(()));
    }
}

//! `ai-prompt-decorator`: fixed messages put before and after the client's conversation
//! (Kong's OSS plugin), as a pure function over the JSON request body. Chat bodies get
//! `{role, content}` messages around `messages`; Responses API bodies (tollgate's extension)
//! get system/developer prompts in front of `instructions` and the others as `input` items.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Kong's 400 text for bodies that are not JSON objects.
pub const NOT_JSON: &str = "this LLM route only supports application/json requests";
/// Kong's 400 text for bodies without a chat conversation.
pub const NOT_CHAT: &str = "this LLM route only supports llm/chat type requests";

/// Kong's OSS limit on each list.
const MAX_PROMPTS: usize = 15;
/// Kong EE's limit on a prompt's content (OSS allows 500).
const MAX_CONTENT_CHARS: usize = 100_000;

pub use crate::config::plugins::LlmFormat;

/// Role of an injected prompt.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PromptRole {
    /// `system` (Kong's default).
    #[default]
    System,
    /// `assistant`.
    Assistant,
    /// `user`.
    User,
    /// `developer` (tollgate's extension; OpenAI's newer name for system).
    Developer,
}

impl PromptRole {
    /// The role as sent upstream.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptRole::System => "system",
            PromptRole::Assistant => "assistant",
            PromptRole::User => "user",
            PromptRole::Developer => "developer",
        }
    }

    /// Whether the Responses API carries this role in `instructions`.
    fn is_instruction(self) -> bool {
        matches!(self, PromptRole::System | PromptRole::Developer)
    }
}

/// One injected message.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptMessage {
    /// Who says it (default `system`).
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub role: PromptRole,
    /// The text.
    pub content: String,
}

/// `prompts`: what goes before and after the conversation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prompts {
    /// Messages put before the client's, in this order.
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub prepend: Vec<PromptMessage>,
    /// Messages put after the client's, in this order.
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub append: Vec<PromptMessage>,
}

/// Plugin config, Kong's field names; unknown fields rejected.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiPromptDecoratorConfig {
    /// The prompts to inject.
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub prompts: Prompts,
    /// Largest body the plugin reads (bytes); a larger one is a 413.
    #[serde(
        default = "crate::config::plugins::default_body_size",
        deserialize_with = "crate::config::plugins::nullable_body_size"
    )]
    pub max_request_body_size: u64,
    /// Client wire format.
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub llm_format: LlmFormat,
}

impl AiPromptDecoratorConfig {
    /// Checks what serde cannot; returns (path relative to `config`, message) pairs. An empty
    /// path is an entity-level error (Kong's `@entity`).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let p = &self.prompts;
        if p.prepend.is_empty() && p.append.is_empty() {
            errs.push((
                String::new(),
                "at least one of these fields must be non-empty: 'config.prompts.prepend', \
                 'config.prompts.append'"
                    .into(),
            ));
        }
        for (name, list) in [("prepend", &p.prepend), ("append", &p.append)] {
            if list.len() > MAX_PROMPTS {
                errs.push((
                    format!("prompts.{name}"),
                    format!("length must be at most {MAX_PROMPTS}"),
                ));
            }
            for (i, m) in list.iter().enumerate() {
                // Kong measures string lengths in UTF-8 characters.
                let n = m.content.chars().count();
                let msg = if n == 0 {
                    "length must be at least 1".to_string()
                } else if n > MAX_CONTENT_CHARS {
                    format!("length must be at most {MAX_CONTENT_CHARS}")
                } else {
                    continue;
                };
                errs.push((format!("prompts.{name}[{i}].content"), msg));
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

/// A chat message `{role, content}`.
fn chat_message(m: &PromptMessage) -> Value {
    let mut o = Map::new();
    o.insert("role".into(), Value::String(m.role.as_str().into()));
    o.insert("content".into(), Value::String(m.content.clone()));
    Value::Object(o)
}

/// A Responses API input item `{type: message, role, content}`.
fn input_item(role: &str, content: &str) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), Value::String("message".into()));
    o.insert("role".into(), Value::String(role.into()));
    o.insert("content".into(), Value::String(content.into()));
    Value::Object(o)
}

/// Adds the configured prompts to the body in place. Chat (`messages`, a non-empty array, as
/// Kong requires) and Responses (`input`) bodies are decorated; anything else, completions
/// (`prompt`) included, is refused with Kong's 400 text.
pub fn decorate(cfg: &AiPromptDecoratorConfig, body: &mut Value) -> Result<(), String> {
    let Value::Object(obj) = body else {
        return Err(NOT_JSON.into());
    };
    if let Some(Value::Array(messages)) = obj.get_mut("messages") {
        if messages.is_empty() {
            return Err(NOT_CHAT.into());
        }
        decorate_chat(&cfg.prompts, messages);
        return Ok(());
    }
    match obj.get("input") {
        Some(Value::String(_) | Value::Array(_)) => decorate_responses(&cfg.prompts, obj),
        // A Responses body with a bad `input`: say so, not that the route wants chat.
        Some(other) if !obj.contains_key("messages") && !obj.contains_key("prompt") => {
            Err(format!(
                "'input' must be a string or an array of input items, not {}",
                crate::llm::body::kind_name(other)
            ))
        }
        _ => Err(NOT_CHAT.into()),
    }
}

/// Kong's behaviour: prepend, the client's messages, append.
fn decorate_chat(prompts: &Prompts, messages: &mut Vec<Value>) {
    let old = std::mem::take(messages);
    messages.reserve(prompts.prepend.len() + old.len() + prompts.append.len());
    messages.extend(prompts.prepend.iter().map(chat_message));
    messages.extend(old);
    messages.extend(prompts.append.iter().map(chat_message));
}

/// `instructions` is where the Responses API takes a system prompt (and, not being carried
/// over by `previous_response_id`, it applies on every turn), so prepended system/developer
/// prompts go there; the rest become `input` message items.
fn decorate_responses(prompts: &Prompts, obj: &mut Map<String, Value>) -> Result<(), String> {
    let instructions: Vec<&str> = prompts
        .prepend
        .iter()
        .filter(|m| m.role.is_instruction())
        .map(|m| m.content.as_str())
        .collect();
    let mut head: Vec<Value> = Vec::new();
    if !instructions.is_empty() {
        match obj.get_mut("instructions") {
            None | Some(Value::Null) => {
                obj.insert(
                    "instructions".into(),
                    Value::String(instructions.join("\n\n")),
                );
            }
            Some(Value::String(existing)) => {
                let mut joined = instructions.join("\n\n");
                if !existing.is_empty() {
                    joined.push_str("\n\n");
                    joined.push_str(existing);
                }
                *existing = joined;
            }
            // Not a string we can prefix (the API only defines strings here): keep the
            // client's value and put the prompts first in `input` instead, so they still
            // come before everything the client sent.
            Some(_) => head.extend(
                prompts
                    .prepend
                    .iter()
                    .filter(|m| m.role.is_instruction())
                    .map(|m| input_item(m.role.as_str(), &m.content)),
            ),
        }
    }
    head.extend(
        prompts
            .prepend
            .iter()
            .filter(|m| !m.role.is_instruction())
            .map(|m| input_item(m.role.as_str(), &m.content)),
    );
    if head.is_empty() && prompts.append.is_empty() {
        // Nothing goes into `input`: a string input stays a string.
        return Ok(());
    }
    if let Some(Value::String(text)) = obj.get("input") {
        // A string input is one user message; items can only be added around it as a list.
        let item = input_item("user", text);
        obj.insert("input".into(), Value::Array(vec![item]));
    }
    let Some(Value::Array(items)) = obj.get_mut("input") else {
        return Err(NOT_CHAT.into());
    };
    let old = std::mem::take(items);
    items.reserve(head.len() + old.len() + prompts.append.len());
    items.extend(head);
    items.extend(old);
    items.extend(
        prompts
            .append
            .iter()
            .map(|m| input_item(m.role.as_str(), &m.content)),
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> AiPromptDecoratorConfig {
        serde_json::from_value(v).unwrap()
    }

    fn both() -> AiPromptDecoratorConfig {
        cfg(json!({"prompts": {
            "prepend": [
                {"role": "system", "content": "S1"},
                {"role": "user", "content": "U1"}
            ],
            "append": [{"role": "assistant", "content": "A1"}]
        }}))
    }

    #[test]
    fn config_defaults_and_nulls() {
        let c = cfg(json!({"prompts": {"prepend": [{"content": "x"}]}}));
        assert_eq!(c.prompts.prepend[0].role, PromptRole::System);
        assert!(c.prompts.append.is_empty());
        assert_eq!(c.max_request_body_size, 1_048_576);
        assert_eq!(c.llm_format, LlmFormat::Openai);
        assert!(c.validate().is_empty());

        let c = cfg(json!({
            "prompts": {"prepend": null, "append": [{"role": null, "content": "x"}]},
            "max_request_body_size": null,
            "llm_format": null
        }));
        assert!(c.prompts.prepend.is_empty());
        assert_eq!(c.prompts.append[0].role, PromptRole::System);
        assert_eq!(c.max_request_body_size, 1_048_576);
        assert_eq!(c.llm_format, LlmFormat::Openai);

        let c = cfg(
            json!({"prompts": {"append": [{"role": "developer", "content": "x"}]},
            "llm_format": "bedrock", "max_request_body_size": 10}),
        );
        assert_eq!(c.llm_format, LlmFormat::Bedrock);
        assert_eq!(c.max_request_body_size, 10);
        assert_eq!(c.prompts.append[0].role, PromptRole::Developer);
    }

    #[test]
    fn config_rejects_unknown() {
        for bad in [
            json!({"prompts": {"prepend": []}, "nope": 1}),
            json!({"prompts": {"prepend": [], "nope": 1}}),
            json!({"prompts": {"prepend": [{"content": "x", "nope": 1}]}}),
            json!({"prompts": {"prepend": [{"role": "tool", "content": "x"}]}}),
            json!({"prompts": {"prepend": [{"role": "user"}]}}),
            json!({"prompts": {"prepend": [{"content": "x"}]}, "llm_format": "nope"}),
        ] {
            assert!(
                serde_json::from_value::<AiPromptDecoratorConfig>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn config_validation() {
        let errs = cfg(json!({})).validate();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "");
        assert!(errs[0].1.starts_with("at least one of these fields"));
        assert_eq!(
            cfg(json!({"prompts": {"prepend": [], "append": []}}))
                .validate()
                .len(),
            1
        );

        let sixteen: Vec<Value> = (0..16).map(|_| json!({"content": "x"})).collect();
        let errs = cfg(json!({"prompts": {"append": sixteen}})).validate();
        assert_eq!(
            errs,
            vec![(
                "prompts.append".to_string(),
                "length must be at most 15".to_string()
            )]
        );

        let long = "é".repeat(100_001);
        let ok = "é".repeat(100_000);
        let errs = cfg(json!({"prompts": {
            "prepend": [{"content": ok}, {"content": ""}],
            "append": [{"content": long}]
        }, "max_request_body_size": 0}))
        .validate();
        assert_eq!(
            errs,
            vec![
                (
                    "prompts.prepend[1].content".to_string(),
                    "length must be at least 1".to_string()
                ),
                (
                    "prompts.append[0].content".to_string(),
                    "length must be at most 100000".to_string()
                ),
                (
                    "max_request_body_size".to_string(),
                    "value must be greater than 0".to_string()
                ),
            ]
        );
    }

    #[test]
    fn chat_prepend_and_append() {
        let mut body = json!({"model": "m", "messages": [
            {"role": "system", "content": "client system"},
            {"role": "user", "content": "hi"}
        ]});
        decorate(&both(), &mut body).unwrap();
        assert_eq!(
            body,
            json!({"model": "m", "messages": [
                {"role": "system", "content": "S1"},
                {"role": "user", "content": "U1"},
                {"role": "system", "content": "client system"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "A1"}
            ]})
        );
    }

    #[test]
    fn chat_refusals() {
        for (mut body, msg) in [
            (json!({"messages": []}), NOT_CHAT),
            (json!({"prompt": "hello"}), NOT_CHAT),
            (json!({"model": "m"}), NOT_CHAT),
            (json!({"messages": "{template://x}"}), NOT_CHAT),
            (
                json!({"input": {"a": 1}}),
                "'input' must be a string or an array of input items, not an object",
            ),
            (
                json!({"input": 42}),
                "'input' must be a string or an array of input items, not a number",
            ),
            (json!(["messages"]), NOT_JSON),
            (json!("text"), NOT_JSON),
        ] {
            assert_eq!(decorate(&both(), &mut body), Err(msg.to_string()));
        }
    }

    #[test]
    fn responses_instructions_created_and_string_input_converted() {
        let mut body = json!({"model": "m", "input": "hi"});
        decorate(&both(), &mut body).unwrap();
        assert_eq!(
            body,
            json!({"model": "m", "input": [
                {"type": "message", "role": "user", "content": "U1"},
                {"type": "message", "role": "user", "content": "hi"},
                {"type": "message", "role": "assistant", "content": "A1"}
            ], "instructions": "S1"})
        );
    }

    #[test]
    fn responses_instructions_prefixed_and_array_input() {
        let c = cfg(json!({"prompts": {
            "prepend": [
                {"role": "system", "content": "S1"},
                {"role": "developer", "content": "D1"}
            ],
            "append": [{"role": "user", "content": "U9"}]
        }}));
        let mut body = json!({"instructions": "client", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        ]});
        decorate(&c, &mut body).unwrap();
        assert_eq!(
            body,
            json!({"instructions": "S1\n\nD1\n\nclient", "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "message", "role": "user", "content": "U9"}
            ]})
        );

        // Empty or null instructions: just the prompts.
        for given in [json!(""), Value::Null] {
            let mut body = json!({"instructions": given, "input": "x"});
            decorate(&c, &mut body).unwrap();
            assert_eq!(body["instructions"], json!("S1\n\nD1"));
        }
    }

    #[test]
    fn responses_system_only_keeps_string_input() {
        let c = cfg(json!({"prompts": {"prepend": [{"content": "S"}]}}));
        let mut body = json!({"input": "hi"});
        decorate(&c, &mut body).unwrap();
        assert_eq!(body, json!({"input": "hi", "instructions": "S"}));
    }

    #[test]
    fn responses_non_string_instructions_fall_back_to_input() {
        let c = cfg(json!({"prompts": {"prepend": [{"content": "S"}]}}));
        let mut body = json!({"instructions": [{"x": 1}], "input": "hi"});
        decorate(&c, &mut body).unwrap();
        assert_eq!(
            body,
            json!({"instructions": [{"x": 1}], "input": [
                {"type": "message", "role": "system", "content": "S"},
                {"type": "message", "role": "user", "content": "hi"}
            ]})
        );
    }

    #[test]
    fn chat_wins_over_input() {
        let c = cfg(json!({"prompts": {"append": [{"role": "user", "content": "U"}]}}));
        let mut body = json!({"messages": [{"role": "user", "content": "a"}], "input": "b"});
        decorate(&c, &mut body).unwrap();
        assert_eq!(body["messages"][1], json!({"role": "user", "content": "U"}));
        assert_eq!(body["input"], json!("b"));
    }
}

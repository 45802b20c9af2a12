//! `ai-prompt-template`: named request templates with `{{placeholders}}` filled from the
//! client's `properties` (Kong's OSS plugin), as a pure function over the JSON request body.
//! A client sends `{"messages": "{template://NAME}", "properties": {…}}` (or `prompt`); the
//! rendered template is the new body, with the client's other top-level fields laid over it.

use std::collections::{HashMap, HashSet};

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Kong's 400 text for bodies that are not JSON objects.
pub const NOT_JSON: &str = "this LLM route only supports application/json requests";

/// A reference is `{template://NAME}`, the whole string.
const REFERENCE_PREFIX: &str = "{template://";
const REFERENCE_SUFFIX: &str = "}";
/// Kong's `{{([%w_]+)}}`, with spaces allowed inside the braces (`{{ name }}`).
const PLACEHOLDER: &str = r"\{\{[ \t]*([A-Za-z0-9_]+)[ \t]*\}\}";
/// Client fields the rendered body replaces rather than keeps.
const TEMPLATE_FIELDS: [&str; 3] = ["messages", "prompt", "properties"];

fn yes() -> bool {
    true
}

/// A boolean whose default (and meaning of null) is true.
fn nullable_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// One named template.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Unique name, called as `{template://NAME}`.
    pub name: String,
    /// The request body as JSON text with `{{placeholders}}`.
    pub template: String,
}

/// Plugin config, Kong's field names; unknown fields rejected.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiPromptTemplateConfig {
    /// The templates (required, at least one; null reads as empty and fails validation).
    #[serde(deserialize_with = "crate::config::plugins::nullable")]
    pub templates: Vec<Template>,
    /// Let requests that do not reference a template through unchanged.
    #[serde(default = "yes", deserialize_with = "nullable_true")]
    pub allow_untemplated_requests: bool,
    /// Log the client's original body (done by the caller).
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub log_original_request: bool,
    /// Largest body the plugin reads (bytes); a larger one is a 413.
    #[serde(
        default = "crate::config::plugins::default_body_size",
        deserialize_with = "crate::config::plugins::nullable_body_size"
    )]
    pub max_request_body_size: u64,
}

impl AiPromptTemplateConfig {
    /// Checks what serde cannot; returns (path relative to `config`, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.templates.is_empty() {
            errs.push(("templates".into(), "length must be at least 1".into()));
        }
        let mut seen = HashSet::new();
        for (i, t) in self.templates.iter().enumerate() {
            // Kong's strings are non-empty unless a schema says otherwise.
            if t.name.is_empty() {
                errs.push((
                    format!("templates[{i}].name"),
                    "length must be at least 1".into(),
                ));
            } else if !seen.insert(t.name.as_str()) {
                errs.push((
                    format!("templates[{i}].name"),
                    format!("template name '{}' is not unique", t.name),
                ));
            }
            if t.template.is_empty() {
                errs.push((
                    format!("templates[{i}].template"),
                    "length must be at least 1".into(),
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

/// A template cut at its placeholders, so rendering needs no regex.
#[derive(Debug, Clone)]
enum Piece {
    /// Text kept as is.
    Text(String),
    /// A `{{name}}` to replace.
    Var(String),
}

/// Splits a template into text and placeholders.
fn parse(template: &str, placeholder: &Regex) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut at = 0;
    for caps in placeholder.captures_iter(template) {
        let (Some(whole), Some(name)) = (caps.get(0), caps.get(1)) else {
            continue;
        };
        if whole.start() > at {
            pieces.push(Piece::Text(template[at..whole.start()].to_string()));
        }
        pieces.push(Piece::Var(name.as_str().to_string()));
        at = whole.end();
    }
    if at < template.len() {
        pieces.push(Piece::Text(template[at..].to_string()));
    }
    pieces
}

/// The compiled plugin: templates by name, pre-split at their placeholders.
#[derive(Debug, Clone)]
pub struct PromptTemplates {
    config: AiPromptTemplateConfig,
    templates: HashMap<String, Vec<Piece>>,
}

impl PromptTemplates {
    /// Validates the config and prepares its templates; errors as from `validate`.
    pub fn new(cfg: &AiPromptTemplateConfig) -> Result<PromptTemplates, Vec<(String, String)>> {
        let errs = cfg.validate();
        if !errs.is_empty() {
            return Err(errs);
        }
        // A constant pattern; a failure here is a bug, reported rather than panicking.
        let placeholder = Regex::new(PLACEHOLDER)
            .map_err(|e| vec![("templates".to_string(), format!("internal error: {e}"))])?;
        let templates = cfg
            .templates
            .iter()
            .map(|t| (t.name.clone(), parse(&t.template, &placeholder)))
            .collect();
        Ok(PromptTemplates {
            config: cfg.clone(),
            templates,
        })
    }

    /// The config these templates were built from (for `log_original_request` and
    /// `max_request_body_size`).
    pub fn config(&self) -> &AiPromptTemplateConfig {
        &self.config
    }

    /// Ok(None): not a templated request (allowed); Ok(Some(v)): the rendered body; Err(message) → 400.
    pub fn render(&self, body: &Value) -> Result<Option<Value>, String> {
        let Value::Object(obj) = body else {
            return Err(NOT_JSON.into());
        };
        let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
        let (messages, prompt) = (present("messages"), present("prompt"));
        // Kong refuses both fields together whether or not either is a reference.
        if messages.is_some() && prompt.is_some() {
            return Err("cannot run 'messages' and 'prompt' templates at the same time".into());
        }
        // Neither field (e.g. a Responses body) is treated as untemplated; Kong refuses such
        // bodies outright, but they are simply not template calls.
        let Some(name) = messages.or(prompt).and_then(template_name) else {
            return if self.config.allow_untemplated_requests {
                Ok(None)
            } else {
                Err("this LLM route only supports templated requests".into())
            };
        };
        let pieces = self
            .templates
            .get(name)
            .ok_or_else(|| format!("could not find template name [{name}]"))?;
        let properties = sanitize_properties(present("properties"))?;
        let text = fill(pieces, &properties)?;
        let rendered: Value = serde_json::from_str(&text).map_err(|e| {
            format!("failed to render the template: rendered text is not valid JSON: {e}")
        })?;
        let Value::Object(mut out) = rendered else {
            return Err("failed to render the template: rendered text is not a JSON object".into());
        };
        // The client's other fields (model, stream, temperature…) win over the template's.
        for (k, v) in obj {
            if !TEMPLATE_FIELDS.contains(&k.as_str()) {
                out.insert(k.clone(), v.clone());
            }
        }
        Ok(Some(Value::Object(out)))
    }
}

/// The NAME of a `{template://NAME}` reference; None for anything else.
fn template_name(reference: &Value) -> Option<&str> {
    reference
        .as_str()?
        .strip_prefix(REFERENCE_PREFIX)?
        .strip_suffix(REFERENCE_SUFFIX)
}

/// Kong's type names (Lua's) for property values that are not strings.
fn lua_type(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::Array(_) | Value::Object(_) => "table",
        Value::String(_) => "string",
        // Kong would say `userdata` (cjson.null), which helps nobody.
        Value::Null => "null",
    }
}

/// The properties, each value escaped as inside a JSON string (without the quotes), so a
/// value cannot break out of the string it is put in.
fn sanitize_properties(properties: Option<&Value>) -> Result<HashMap<&str, String>, String> {
    let Some(properties) = properties else {
        return Ok(HashMap::new());
    };
    let Value::Object(map) = properties else {
        return Err("properties must be an object".into());
    };
    let mut out = HashMap::with_capacity(map.len());
    for (k, v) in map {
        let Value::String(s) = v else {
            return Err(format!(
                "property values must be a string, got {}",
                lua_type(v)
            ));
        };
        out.insert(k.as_str(), json_escape(s));
    }
    Ok(out)
}

/// `s` as a JSON string literal's body.
fn json_escape(s: &str) -> String {
    let quoted = Value::String(s.to_string()).to_string();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_string()
}

/// The template with every placeholder replaced; the missing ones are listed (first
/// appearance order, once each) as Kong does.
fn fill(pieces: &[Piece], properties: &HashMap<&str, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut missing: Vec<&str> = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(name) => match properties.get(name.as_str()) {
                Some(v) => out.push_str(v),
                None => {
                    if !missing.contains(&name.as_str()) {
                        missing.push(name);
                    }
                }
            },
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        let list: Vec<String> = missing.iter().map(|m| format!("[{m}]")).collect();
        Err(format!("missing template parameters: {}", list.join(", ")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> AiPromptTemplateConfig {
        serde_json::from_value(v).unwrap()
    }

    fn templates(extra: Value) -> PromptTemplates {
        let mut c = json!({"templates": [
            {"name": "developer-chat", "template":
                r#"{"messages": [{"role": "system", "content": "You are a {{program}} developer."}, {"role": "user", "content": "Explain {{ function }} in {{program}}."}], "model": "template-model"}"#},
            {"name": "completion", "template": r#"{"prompt": "Say {{word}}"}"#},
            {"name": "broken", "template": r#"{"messages": {{word}}}"#},
            {"name": "list", "template": r#"["{{word}}"]"#}
        ]});
        if let (Value::Object(c), Value::Object(extra)) = (&mut c, extra) {
            c.extend(extra);
        }
        PromptTemplates::new(&cfg(c)).unwrap()
    }

    #[test]
    fn config_defaults_and_nulls() {
        let c = cfg(json!({"templates": [{"name": "a", "template": "{}"}]}));
        assert!(c.allow_untemplated_requests);
        assert!(!c.log_original_request);
        assert_eq!(c.max_request_body_size, 1_048_576);
        assert!(c.validate().is_empty());

        let c = cfg(json!({"templates": [{"name": "a", "template": "{}"}],
            "allow_untemplated_requests": null, "log_original_request": null,
            "max_request_body_size": null}));
        assert!(c.allow_untemplated_requests);
        assert!(!c.log_original_request);
        assert_eq!(c.max_request_body_size, 1_048_576);

        let c = cfg(json!({"templates": null}));
        assert_eq!(
            c.validate(),
            vec![(
                "templates".to_string(),
                "length must be at least 1".to_string()
            )]
        );
    }

    #[test]
    fn config_rejects_unknown_and_missing() {
        for bad in [
            json!({}),
            json!({"templates": [], "nope": 1}),
            json!({"templates": [{"name": "a", "template": "{}", "nope": 1}]}),
            json!({"templates": [{"name": "a"}]}),
        ] {
            assert!(
                serde_json::from_value::<AiPromptTemplateConfig>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn config_validation() {
        let c = cfg(json!({"templates": [
            {"name": "a", "template": "{}"},
            {"name": "", "template": ""},
            {"name": "a", "template": "{}"}
        ], "max_request_body_size": 0}));
        assert_eq!(
            c.validate(),
            vec![
                (
                    "templates[1].name".to_string(),
                    "length must be at least 1".to_string()
                ),
                (
                    "templates[1].template".to_string(),
                    "length must be at least 1".to_string()
                ),
                (
                    "templates[2].name".to_string(),
                    "template name 'a' is not unique".to_string()
                ),
                (
                    "max_request_body_size".to_string(),
                    "value must be greater than 0".to_string()
                ),
            ]
        );
        assert_eq!(PromptTemplates::new(&c).unwrap_err(), c.validate());
    }

    #[test]
    fn renders_chat_with_escaping_and_keeps_client_fields() {
        let t = templates(json!({}));
        let body = json!({
            "model": "client-model",
            "messages": "{template://developer-chat}",
            "stream": true,
            "properties": {"program": "C \"sharp\"\nnext", "function": "printf"}
        });
        let out = t.render(&body).unwrap().unwrap();
        assert_eq!(
            out,
            json!({
                "messages": [
                    {"role": "system", "content": "You are a C \"sharp\"\nnext developer."},
                    {"role": "user", "content": "Explain printf in C \"sharp\"\nnext."}
                ],
                "model": "client-model",
                "stream": true
            })
        );
        assert!(out.get("properties").is_none());
    }

    #[test]
    fn renders_prompt_template() {
        let t = templates(json!({}));
        let body = json!({"prompt": "{template://completion}", "properties": {"word": "hi"}});
        assert_eq!(t.render(&body).unwrap(), Some(json!({"prompt": "Say hi"})));
    }

    #[test]
    fn missing_parameters_listed_once_in_order() {
        let t = templates(json!({}));
        let body = json!({"messages": "{template://developer-chat}"});
        assert_eq!(
            t.render(&body),
            Err("missing template parameters: [program], [function]".to_string())
        );
        let body = json!({"messages": "{template://developer-chat}",
            "properties": {"function": "f"}});
        assert_eq!(
            t.render(&body),
            Err("missing template parameters: [program]".to_string())
        );
    }

    #[test]
    fn request_errors() {
        let t = templates(json!({}));
        let cases = [
            (
                json!({"messages": "{template://nope}"}),
                "could not find template name [nope]",
            ),
            (
                json!({"messages": "{template://completion}", "properties": ["a"]}),
                "properties must be an object",
            ),
            (
                json!({"messages": "{template://completion}", "properties": {"word": 1}}),
                "property values must be a string, got number",
            ),
            (
                json!({"messages": "{template://completion}", "properties": {"word": {}}}),
                "property values must be a string, got table",
            ),
            (
                json!({"messages": "{template://completion}", "prompt": "x"}),
                "cannot run 'messages' and 'prompt' templates at the same time",
            ),
            (json!("{template://completion}"), NOT_JSON),
            (
                json!({"prompt": "{template://list}", "properties": {"word": "w"}}),
                "failed to render the template: rendered text is not a JSON object",
            ),
        ];
        for (body, msg) in cases {
            assert_eq!(t.render(&body), Err(msg.to_string()), "{body}");
        }
        let err = t
            .render(&json!({"prompt": "{template://broken}", "properties": {"word": "w"}}))
            .unwrap_err();
        assert!(
            err.starts_with("failed to render the template: rendered text is not valid JSON: "),
            "{err}"
        );
    }

    #[test]
    fn untemplated_requests() {
        let allowed = templates(json!({}));
        let refused = templates(json!({"allow_untemplated_requests": false}));
        for body in [
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            json!({"prompt": "hi"}),
            json!({"messages": "{template:/x}"}),
            json!({"input": "hi"}),
            json!({"messages": null, "prompt": "hi"}),
        ] {
            assert_eq!(allowed.render(&body), Ok(None), "{body}");
            assert_eq!(
                refused.render(&body),
                Err("this LLM route only supports templated requests".to_string()),
                "{body}"
            );
        }
        // A templated request works either way.
        let body = json!({"prompt": "{template://completion}", "properties": {"word": "x"}});
        assert!(refused.render(&body).unwrap().is_some());
    }

    #[test]
    fn json_escape_controls_and_unicode() {
        assert_eq!(
            json_escape("a\"b\\c\n\t\u{1}é"),
            "a\\\"b\\\\c\\n\\t\\u0001é"
        );
    }
}

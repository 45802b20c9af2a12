//! The OpenAI dialect: upstream paths, request patching and response checks.
//! Client and upstream speak the same dialect, so bodies are patched, never rebuilt.

use serde_json::{json, Value};

use crate::config::plugins::{ModelOptions, RouteType};
use crate::llm::usage::Usage;

/// OpenAI's public endpoint.
pub const DEFAULT_BASE: (&str, &str, u16) = ("https", "api.openai.com", 443);

/// The upstream path for a route type (None for `preserve`, which keeps the client's path).
pub fn default_path(route_type: RouteType) -> Option<&'static str> {
    match route_type {
        RouteType::Chat => Some("/v1/chat/completions"),
        RouteType::Completions => Some("/v1/completions"),
        RouteType::Embeddings => Some("/v1/embeddings"),
        RouteType::Responses => Some("/v1/responses"),
        _ => None,
    }
}

/// What to change in a client's body before it goes upstream.
pub struct Patch<'a> {
    pub model: Option<&'a str>,
    pub options: Option<&'a ModelOptions>,
    /// `response_streaming: always` forces `stream: true`.
    pub force_stream: bool,
    /// Ask upstream for a usage chunk the client did not request (stripped on the way back).
    pub add_include_usage: bool,
}

/// Applies `patch` to a parsed request body. Request values win; config fills gaps
/// (Kong EE 3.15 behaviour, spec §3.5 step 4). `top_k` is not an OpenAI parameter.
pub fn patch_request(route_type: RouteType, body: &mut Value, patch: &Patch<'_>) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    if let Some(m) = patch.model {
        obj.insert("model".into(), Value::String(m.to_string()));
    }
    if let Some(o) = patch.options {
        if route_type != RouteType::Embeddings {
            let max_key = if route_type == RouteType::Responses {
                "max_output_tokens"
            } else {
                "max_tokens"
            };
            let has_max = obj.contains_key(max_key)
                || (route_type == RouteType::Chat && obj.contains_key("max_completion_tokens"));
            if let (Some(v), false) = (o.max_tokens, has_max) {
                obj.insert(max_key.into(), json!(v));
            }
            if let (Some(v), false) = (o.temperature, obj.contains_key("temperature")) {
                obj.insert("temperature".into(), json!(v));
            }
            if let (Some(v), false) = (o.top_p, obj.contains_key("top_p")) {
                obj.insert("top_p".into(), json!(v));
            }
        }
        obj.remove("top_k");
    }
    if patch.force_stream {
        obj.insert("stream".into(), Value::Bool(true));
    }
    if patch.add_include_usage {
        let so = obj.entry("stream_options").or_insert_with(|| json!({}));
        if let Some(so) = so.as_object_mut() {
            so.insert("include_usage".into(), Value::Bool(true));
        }
    }
}

/// True when the client asked for the usage chunk itself.
pub fn client_wants_usage(body: &Value) -> bool {
    body.get("stream_options")
        .and_then(|s| s.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// What the gateway learns from a buffered 200 response.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub usage: Option<Usage>,
    pub model: Option<String>,
}

/// Checks a buffered 200 body has the route type's shape and reads usage and model.
pub fn decode_response(route_type: RouteType, body: &[u8]) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let ok = match route_type {
        RouteType::Chat | RouteType::Completions => v.get("choices").is_some(),
        RouteType::Embeddings => v.get("data").is_some(),
        RouteType::Responses => {
            v.get("output").is_some() || v.get("object") == Some(&json!("response"))
        }
        _ => true,
    };
    if !ok {
        return Err(match route_type {
            RouteType::Embeddings => "response has no 'data'".into(),
            RouteType::Responses => "response has no 'output'".into(),
            _ => "response has no 'choices'".into(),
        });
    }
    Ok(Decoded {
        usage: v.get("usage").and_then(Usage::from_json),
        model: v.get("model").and_then(Value::as_str).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wins_config_fills_gaps() {
        let opts = ModelOptions {
            max_tokens: Some(100),
            temperature: Some(0.2),
            top_k: Some(5),
            ..Default::default()
        };
        let mut b = json!({"model":"x","messages":[],"temperature":1.0,"top_k":3});
        patch_request(
            RouteType::Chat,
            &mut b,
            &Patch {
                model: Some("gpt-4o"),
                options: Some(&opts),
                force_stream: false,
                add_include_usage: false,
            },
        );
        assert_eq!(
            b,
            json!({"model":"gpt-4o","messages":[],"temperature":1.0,"max_tokens":100})
        );
        let mut r = json!({"input":"hi"});
        patch_request(
            RouteType::Responses,
            &mut r,
            &Patch {
                model: None,
                options: Some(&opts),
                force_stream: true,
                add_include_usage: false,
            },
        );
        assert_eq!(r["max_output_tokens"], 100);
        assert_eq!(r["stream"], true);
    }

    #[test]
    fn include_usage_added_and_detected() {
        let mut b = json!({"messages":[],"stream":true});
        assert!(!client_wants_usage(&b));
        patch_request(
            RouteType::Chat,
            &mut b,
            &Patch {
                model: None,
                options: None,
                force_stream: false,
                add_include_usage: true,
            },
        );
        assert!(client_wants_usage(&b));
    }

    #[test]
    fn decode_checks_shape() {
        let d = decode_response(RouteType::Chat, br#"{"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#);
        assert_eq!(
            d.map(|d| (d.model, d.usage.map(|u| u.total_tokens))),
            Ok((Some("m".into()), Some(3)))
        );
        assert!(decode_response(RouteType::Chat, b"{}").is_err());
        assert!(decode_response(RouteType::Chat, b"nope").is_err());
        assert!(decode_response(RouteType::Embeddings, br#"{"data":[]}"#).is_ok());
    }
}

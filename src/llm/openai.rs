//! The OpenAI dialect: upstream paths, request patching and response checks.
//! Client and upstream speak the same dialect, so bodies are patched, never rebuilt.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use crate::config::plugins::{ModelOptions, RouteType};
use crate::llm::body::{BodyView, JsonStr};
use crate::llm::usage::{Usage, UsageWire};

/// OpenAI's public endpoint.
pub const DEFAULT_BASE: (&str, &str, u16) = ("https", "api.openai.com", 443);

/// The prefix OpenAI's APIs live under (an API route type's resource follows it).
pub const API_PREFIX: &str = "/v1";

/// The resources an API route type reaches, as paths under the API prefix: a client path
/// that starts with one of them names it (an SDK whose base URL is the route); any other
/// path is taken below the first (a route that is the endpoint itself, as in Kong's how-tos).
pub fn api_roots(rt: RouteType) -> &'static [&'static str] {
    match rt {
        RouteType::Files => &["/files"],
        RouteType::Batches => &["/batches"],
        RouteType::Assistants => &["/assistants", "/threads"],
        RouteType::AudioSpeech => &["/audio/speech"],
        RouteType::AudioTranscriptions => &["/audio/transcriptions"],
        RouteType::AudioTranslations => &["/audio/translations"],
        RouteType::ImageGenerations => &["/images/generations"],
        RouteType::ImageEdits => &["/images/edits"],
        RouteType::VideoGenerations => &["/videos"],
        _ => &[],
    }
}

/// The upstream path of an API request: `prefix` (the provider's, or the path configured in
/// `upstream_url`), the resource, and what the client's path adds after the route's own
/// prefix (`suffix`: an id, `/content`, `/cancel`…). The resource is the one the suffix
/// names, else the one the route's matched path ends with (`matched`, e.g. a route on
/// `/v1/threads`), else the route type's first. Dot segments and empty segments are
/// refused, so a client cannot climb out of the API it was given.
pub fn api_path(
    rt: RouteType,
    prefix: &str,
    matched: &str,
    suffix: &str,
) -> Result<String, String> {
    if !(suffix.is_empty() || suffix.starts_with('/'))
        || suffix
            .split('/')
            .skip(1)
            .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('%'))
    {
        return Err(format!("'{suffix}' is not a path of this API"));
    }
    let roots = api_roots(rt);
    let names = |p: &str, r: &str| p == r || p.starts_with(&format!("{r}/"));
    let prefix = prefix.trim_end_matches('/');
    // A configured path may already name the resource (`upstream_url: …/v1/files`).
    if let Some(r) = roots.iter().find(|r| prefix.ends_with(*r)) {
        let rest = suffix
            .strip_prefix(r)
            .filter(|_| names(suffix, r))
            .unwrap_or(suffix);
        return Ok(format!("{prefix}{rest}"));
    }
    if roots.iter().any(|r| names(suffix, r)) {
        return Ok(format!("{prefix}{suffix}"));
    }
    let matched = matched.trim_end_matches('/');
    let root = roots
        .iter()
        .find(|r| matched.ends_with(*r))
        .or(roots.first())
        .copied()
        .unwrap_or("");
    Ok(format!("{prefix}{root}{suffix}"))
}

/// The Realtime API's WebSocket endpoint (`?model=` follows per connection).
pub const REALTIME_PATH: &str = "/v1/realtime";

/// The upstream path for a route type (None for `preserve`, which keeps the client's path).
pub fn default_path(route_type: RouteType) -> Option<&'static str> {
    match route_type {
        RouteType::Chat => Some("/v1/chat/completions"),
        RouteType::Completions => Some("/v1/completions"),
        RouteType::Embeddings => Some("/v1/embeddings"),
        RouteType::Responses => Some("/v1/responses"),
        RouteType::Realtime => Some(REALTIME_PATH),
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
    /// An auth parameter to put in the body (`auth.param_location: body`).
    pub body_param: Option<(&'a str, &'a str)>,
    /// The upstream refuses `stream_options` (Databricks): it is not forwarded.
    pub drop_stream_options: bool,
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn json_number(v: f64) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| "0".into())
}

/// The upstream body for a client's body, or `None` when the client's bytes can go as they
/// are. Request values win; config fills gaps (Kong EE 3.15 behaviour, spec §3.5 step 4).
/// `top_k` is not an OpenAI parameter and is dropped.
pub fn patch_request(
    route_type: RouteType,
    body: &BodyView<'_>,
    patch: &Patch<'_>,
) -> Option<Vec<u8>> {
    let mut set: Vec<(&str, String)> = Vec::new();
    let mut remove: Vec<&str> = Vec::new();
    if let Some(m) = patch.model {
        if body.str("model").as_deref() != Some(m) {
            set.push(("model", json_string(m)));
        }
    }
    if let Some(o) = patch.options {
        if route_type != RouteType::Embeddings {
            let max_key = if route_type == RouteType::Responses {
                "max_output_tokens"
            } else {
                "max_tokens"
            };
            let has_max = body.has(max_key)
                || (route_type == RouteType::Chat && body.has("max_completion_tokens"));
            if let (Some(v), false) = (o.max_tokens, has_max) {
                set.push((max_key, v.to_string()));
            }
            if let (Some(v), false) = (o.temperature, body.has("temperature")) {
                set.push(("temperature", json_number(v)));
            }
            if let (Some(v), false) = (o.top_p, body.has("top_p")) {
                set.push(("top_p", json_number(v)));
            }
        }
    }
    if body.has("top_k") {
        remove.push("top_k");
    }
    if patch.force_stream && body.bool("stream") != Some(true) {
        set.push(("stream", "true".into()));
    }
    if patch.drop_stream_options {
        if body.has("stream_options") {
            remove.push("stream_options");
        }
    } else if patch.add_include_usage {
        let mut so = body
            .raw("stream_options")
            .and_then(|r| serde_json::from_str::<serde_json::Map<String, Value>>(r).ok())
            .unwrap_or_default();
        so.insert("include_usage".into(), Value::Bool(true));
        set.push(("stream_options", Value::Object(so).to_string()));
    }
    if let Some((name, value)) = patch.body_param {
        set.push((name, json_string(value)));
    }
    if set.is_empty() && remove.is_empty() {
        return None;
    }
    Some(body.rewrite(&remove, &set))
}

/// True when the client asked for the usage chunk itself.
pub fn client_wants_usage(body: &BodyView<'_>) -> bool {
    #[derive(Deserialize)]
    struct StreamOptions {
        include_usage: Option<bool>,
    }
    body.raw("stream_options")
        .and_then(|r| serde_json::from_str::<StreamOptions>(r).ok())
        .and_then(|s| s.include_usage)
        .unwrap_or(false)
}

/// What the gateway learns from a buffered 200 response.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded<'a> {
    pub usage: Option<Usage>,
    pub model: Option<Cow<'a, str>>,
    /// The id of a batch object whose status is `completed` (its usage is final).
    pub completed_batch: Option<Cow<'a, str>>,
}

/// The members of a response the gateway looks at; everything else is skipped unparsed.
#[derive(Deserialize)]
struct ResponseHead<'a> {
    choices: Option<IgnoredAny>,
    data: Option<IgnoredAny>,
    output: Option<IgnoredAny>,
    #[serde(borrow)]
    object: Option<JsonStr<'a>>,
    #[serde(borrow)]
    model: Option<JsonStr<'a>>,
    usage: Option<UsageWire>,
    #[serde(borrow)]
    id: Option<JsonStr<'a>>,
    #[serde(borrow)]
    status: Option<JsonStr<'a>>,
}

/// Checks a buffered 200 body has the route type's shape and reads usage and model.
pub fn decode_response(route_type: RouteType, body: &[u8]) -> Result<Decoded<'_>, String> {
    let v: ResponseHead<'_> =
        super::body::from_bytes(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let ok = match route_type {
        RouteType::Chat | RouteType::Completions => v.choices.is_some(),
        RouteType::Embeddings => v.data.is_some(),
        RouteType::Responses => {
            v.output.is_some() || v.object.as_ref().map(|o| o.0.as_ref()) == Some("response")
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
    let is = |f: &Option<JsonStr<'_>>, value: &str| f.as_ref().is_some_and(|s| s.0 == value);
    let completed_batch = (is(&v.object, "batch") && is(&v.status, "completed"))
        .then_some(v.id)
        .flatten()
        .map(|id| id.0);
    Ok(Decoded {
        usage: v.usage.as_ref().and_then(UsageWire::usage),
        model: v.model.map(|m| m.0),
        completed_batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_take_the_resource_once() {
        let p = |rt, prefix, suffix| api_path(rt, prefix, "/route", suffix);
        assert_eq!(p(RouteType::Files, "/v1", ""), Ok("/v1/files".into()));
        assert_eq!(
            p(RouteType::Files, "/v1", "/file-1/content"),
            Ok("/v1/files/file-1/content".into())
        );
        assert_eq!(
            p(RouteType::Files, "/v1", "/files/file-1"),
            Ok("/v1/files/file-1".into())
        );
        assert_eq!(
            p(RouteType::Files, "/v1/", "/filesx"),
            Ok("/v1/files/filesx".into())
        );
        assert_eq!(
            p(RouteType::Assistants, "/v1", "/threads/t1/runs"),
            Ok("/v1/threads/t1/runs".into())
        );
        assert_eq!(
            p(RouteType::Assistants, "/v1", ""),
            Ok("/v1/assistants".into())
        );
        assert_eq!(
            p(
                RouteType::AudioSpeech,
                "/openai/deployments/tts",
                "/audio/speech"
            ),
            Ok("/openai/deployments/tts/audio/speech".into())
        );
        assert_eq!(
            p(RouteType::Batches, "/v1/batches", "/b1/cancel"),
            Ok("/v1/batches/b1/cancel".into())
        );
        assert_eq!(
            p(RouteType::Batches, "/v1/batches", "/batches/b1"),
            Ok("/v1/batches/b1".into())
        );
        assert_eq!(
            api_path(RouteType::Assistants, "/v1", "/v1/threads", "/t1/messages"),
            Ok("/v1/threads/t1/messages".into())
        );
        for bad in ["/../admin", "/a//b", "x", "/%2e%2e", "/./a"] {
            assert!(p(RouteType::Files, "/v1", bad).is_err(), "{bad}");
        }
    }

    fn patched(rt: RouteType, body: &str, patch: &Patch<'_>) -> Option<Value> {
        let v = BodyView::parse(body.as_bytes()).unwrap();
        patch_request(rt, &v, patch).map(|b| serde_json::from_slice(&b).unwrap())
    }

    fn none<'a>() -> Patch<'a> {
        Patch {
            model: None,
            options: None,
            force_stream: false,
            add_include_usage: false,
            body_param: None,
            drop_stream_options: false,
        }
    }

    #[test]
    fn request_wins_config_fills_gaps() {
        let opts = ModelOptions {
            max_tokens: Some(100),
            temperature: Some(0.2),
            top_k: Some(5),
            ..Default::default()
        };
        let out = patched(
            RouteType::Chat,
            r#"{"model":"x","messages":[],"temperature":1.0,"top_k":3}"#,
            &Patch {
                model: Some("gpt-4o"),
                options: Some(&opts),
                ..none()
            },
        );
        assert_eq!(
            out,
            Some(
                serde_json::json!({"messages":[],"temperature":1.0,"model":"gpt-4o","max_tokens":100})
            )
        );
        let r = patched(
            RouteType::Responses,
            r#"{"input":"hi"}"#,
            &Patch {
                options: Some(&opts),
                force_stream: true,
                ..none()
            },
        )
        .unwrap();
        assert_eq!(r["max_output_tokens"], 100);
        assert_eq!(r["stream"], true);
    }

    #[test]
    fn unchanged_bodies_are_not_rewritten() {
        let v = BodyView::parse(br#"{"model":"gpt-4o","stream":true}"#).unwrap();
        assert!(patch_request(
            RouteType::Chat,
            &v,
            &Patch {
                model: Some("gpt-4o"),
                force_stream: true,
                ..none()
            }
        )
        .is_none());
    }

    #[test]
    fn include_usage_added_and_detected() {
        let b = r#"{"messages":[],"stream":true,"stream_options":{"x":1}}"#;
        assert!(!client_wants_usage(&BodyView::parse(b.as_bytes()).unwrap()));
        let out = patched(
            RouteType::Chat,
            b,
            &Patch {
                add_include_usage: true,
                ..none()
            },
        )
        .unwrap();
        assert_eq!(
            out["stream_options"],
            serde_json::json!({"x":1,"include_usage":true})
        );
        let again = out.to_string();
        assert!(client_wants_usage(
            &BodyView::parse(again.as_bytes()).unwrap()
        ));
    }

    #[test]
    fn body_param_is_added() {
        let out = patched(
            RouteType::Chat,
            r#"{"a":1}"#,
            &Patch {
                body_param: Some(("api_key", "k\"1")),
                ..none()
            },
        )
        .unwrap();
        assert_eq!(out["api_key"], "k\"1");
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
        assert!(decode_response(RouteType::Responses, br#"{"object":"response"}"#).is_ok());
    }
}

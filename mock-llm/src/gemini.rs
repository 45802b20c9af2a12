//! Google's Gemini API (`…/models/{model}:generateContent`, `:streamGenerateContent` as SSE
//! with `alt=sse` or a JSON array without, `:batchEmbedContents`), with Google's error shape,
//! and an OAuth2 token endpoint (`POST /token`, jwt-bearer grant) for Vertex AI-style
//! service-account auth. `[mock:tool]` makes the model call the request's first function.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::MockBody;
use crate::embeddings::embed;
use crate::server::{json_response, Ctx};
use crate::tools::{self, ToolCall};
use crate::MockState;

/// Which Gemini method a path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Generate,
    Stream,
    Embed,
}

impl Method {
    /// The method and model of a path like `/v1beta/models/gemini-2.5-flash:generateContent`.
    pub(crate) fn of(path: &str) -> Option<(Method, &str)> {
        let (head, method) = path.rsplit_once(':')?;
        let method = match method {
            "generateContent" => Method::Generate,
            "streamGenerateContent" => Method::Stream,
            "batchEmbedContents" => Method::Embed,
            _ => return None,
        };
        let model = head.rsplit_once("/models/")?.1;
        (!model.is_empty() && !model.contains('/')).then_some((method, model))
    }
}

/// The `status` Google puts next to an HTTP code.
fn rpc_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// Google's error body.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    json_response(
        status,
        &json!({"error": {"code": status.as_u16(), "message": message,
                          "status": rpc_status(status.as_u16())}}),
    )
}

fn invalid(message: &str) -> Response<MockBody> {
    error(StatusCode::BAD_REQUEST, message)
}

/// AI Studio takes a key (`x-goog-api-key` or `?key=`), Vertex AI a bearer token; a bearer
/// token must be one this mock's `/token` issued.
pub(crate) fn check_auth(
    headers: &HeaderMap,
    query: Option<&str>,
    state: &MockState,
) -> Option<Response<MockBody>> {
    let has_key = headers.contains_key("x-goog-api-key")
        || query.is_some_and(|q| q.split('&').any(|p| p.starts_with("key=") && p.len() > 4));
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match bearer {
        Some(token) if !state.issued_token(token) => Some(error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        )),
        Some(_) => None,
        None if has_key => None,
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        )),
    }
}

/// Top-level members of a `GenerateContentRequest` (REST accepts both spellings).
const REQUEST_FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "system_instruction",
    "tools",
    "toolConfig",
    "tool_config",
    "generationConfig",
    "generation_config",
    "safetySettings",
    "safety_settings",
    "cachedContent",
    "cached_content",
    "labels",
    "model",
];

const GENERATION_FIELDS: &[&str] = &[
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "responseModalities",
    "imageConfig",
    "mediaResolution",
];

/// What the real API refuses with 400 before generating anything.
fn check_request(body: &Value) -> Result<(), String> {
    let Some(obj) = body.as_object() else {
        return Err("Invalid JSON payload received.".into());
    };
    for k in obj.keys() {
        if !REQUEST_FIELDS.contains(&k.as_str()) {
            return Err(format!(
                "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
            ));
        }
    }
    if let Some(gc) = body.get("generationConfig").and_then(Value::as_object) {
        for k in gc.keys() {
            if !GENERATION_FIELDS.contains(&k.as_str()) {
                return Err(format!(
                    "Invalid JSON payload received. Unknown name \"{k}\" at 'generation_config': Cannot find field."
                ));
            }
        }
    }
    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
    for (i, c) in contents.iter().enumerate() {
        match c.get("role").and_then(Value::as_str) {
            None | Some("user" | "model") => {}
            Some(_) => return Err("Please use a valid role: user, model.".into()),
        }
        let parts = c
            .get("parts")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                format!("* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
            })?;
        for p in parts {
            if let Some(fr) = p.get("functionResponse") {
                if fr
                    .get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(format!(
                        "* GenerateContentRequest.contents[{i}].parts: function_response.name is required"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The function call `[mock:tool]` asks for, unless the last turn already answers one.
fn first_function(ctx: &Ctx<'_>) -> Option<ToolCall> {
    let answered = ctx
        .body
        .get("contents")
        .and_then(Value::as_array)
        .and_then(|c| c.last())
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .is_some_and(|p| p.iter().any(|p| p.get("functionResponse").is_some()));
    let decls = ctx
        .body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("functionDeclarations").and_then(Value::as_array))
        .flatten()
        .filter_map(|d| {
            let schema = d
                .get("parametersJsonSchema")
                .or_else(|| d.get("parameters"));
            Some((d.get("name")?.as_str()?, schema))
        });
    tools::pick(ctx.directives, decls, answered)
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"promptTokenCount": prompt, "candidatesTokenCount": completion,
           "totalTokenCount": prompt + completion})
}

/// `:generateContent` and `:streamGenerateContent`.
pub(crate) fn generate(ctx: &Ctx<'_>, model: &str, stream: bool, sse: bool) -> Response<MockBody> {
    if let Err(m) = check_request(ctx.body) {
        return invalid(&m);
    }
    let reply = ctx.reply();
    let id = format!("mock-gemini-{}", ctx.n);
    let call = first_function(ctx);
    let n = ctx
        .body
        .pointer("/generationConfig/candidateCount")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 8);
    let call_part = |c: &ToolCall| json!({"functionCall": {"name": c.name, "args": c.arguments}});
    // Image models asked for image output (`responseModalities: ["IMAGE"]`) answer with an
    // inline PNG, as gemini-2.5-flash-image does.
    let wants_image = ctx
        .body
        .pointer("/generationConfig/responseModalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x == "IMAGE"));
    if wants_image && !stream {
        let png = crate::media::png_base64();
        let candidates: Vec<Value> = (0..n)
            .map(|i| json!({"content": {"role": "model", "parts": [
                {"inlineData": {"mimeType": "image/png", "data": png}}]}, "finishReason": "STOP", "index": i}))
            .collect();
        return json_response(
            ctx.status(),
            &json!({"candidates": candidates,
                    "usageMetadata": usage(ctx.prompt_tokens, 1290 * n),
                    "modelVersion": model, "responseId": id}),
        );
    }
    if !stream {
        let candidates: Vec<Value> = (0..n)
            .map(|i| {
                let parts = match &call {
                    Some(c) => vec![call_part(c)],
                    None => vec![json!({"text": reply.text()})],
                };
                json!({"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": i})
            })
            .collect();
        return json_response(
            ctx.status(),
            &json!({"candidates": candidates,
                    "usageMetadata": usage(ctx.prompt_tokens, reply.tokens() * n),
                    "modelVersion": model, "responseId": id}),
        );
    }
    let mut answers: Vec<Value> = Vec::new();
    let pieces: Vec<&str> = reply.pieces().collect();
    let last = pieces.len().saturating_sub(1);
    for (k, piece) in pieces.iter().enumerate() {
        let mut cand =
            json!({"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0});
        if k == last && call.is_none() {
            cand["finishReason"] = json!("STOP");
        }
        answers.push(json!({"candidates": [cand],
            "usageMetadata": usage(ctx.prompt_tokens, k as u64 + 1),
            "modelVersion": model, "responseId": id}));
    }
    if let Some(c) = &call {
        answers.push(
            json!({"candidates": [{"content": {"parts": [call_part(c)], "role": "model"},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage(ctx.prompt_tokens, reply.tokens() + 1),
            "modelVersion": model, "responseId": id}),
        );
    }
    let mut events: Vec<Bytes> = Vec::with_capacity(answers.len() + 2);
    if sse {
        for a in &answers {
            let mut b = b"data: ".to_vec();
            b.extend_from_slice(a.to_string().as_bytes());
            // Google ends its events with CRLF pairs.
            b.extend_from_slice(b"\r\n\r\n");
            events.push(b.into());
        }
        return ctx.event_stream(events);
    }
    for (k, a) in answers.iter().enumerate() {
        let sep = if k == 0 { "[" } else { ",\r\n" };
        events.push(format!("{sep}{a}").into());
    }
    events.push(Bytes::from_static(b"]"));
    let mut r = ctx.event_stream(events);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `:batchEmbedContents`: one deterministic vector per request.
pub(crate) fn embed_batch(ctx: &Ctx<'_>, model: &str) -> Response<MockBody> {
    let Some(requests) = ctx.body.get("requests").and_then(Value::as_array) else {
        return invalid("* BatchEmbedContentsRequest.requests: requests is not specified");
    };
    let want = format!("models/{model}");
    let mut out = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        if r.get("model").and_then(Value::as_str) != Some(want.as_str()) {
            return invalid(&format!(
                "* BatchEmbedContentsRequest.requests[{i}].model: the model must be {want}"
            ));
        }
        let text: String = r
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(|p| p.get("text")?.as_str()).collect())
            .unwrap_or_default();
        let dims = r
            .get("outputDimensionality")
            .and_then(Value::as_u64)
            .map_or(8, |d| usize::try_from(d).unwrap_or(8).clamp(1, 3072));
        out.push(json!({"values": embed(text.as_bytes(), dims)}));
    }
    json_response(ctx.status(), &json!({ "embeddings": out }))
}

/// Standard or URL-safe base64, padding optional; None on anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn oauth_error(description: &str) -> Response<MockBody> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": "invalid_grant", "error_description": description}),
    )
}

/// `POST /token`: the jwt-bearer grant. Checks the assertion's shape (three parts, an RS256
/// header, `aud` = this endpoint's URL), not its signature, and counts the tokens issued.
pub(crate) fn token(body: &[u8], host: &str, path: &str, state: &MockState) -> Response<MockBody> {
    let form = String::from_utf8_lossy(body);
    let field = |name: &str| {
        form.split('&').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k == name).then(|| crate::percent_decode(v))
        })
    };
    if field("grant_type").as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type: "}),
        );
    }
    let Some(assertion) = field("assertion") else {
        return oauth_error("Missing required parameter: assertion");
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return oauth_error(
            "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe",
        );
    }
    let decode = |p: &str| -> Option<Value> { serde_json::from_slice(&base64_decode(p)?).ok() };
    let (Some(header), Some(claims)) = (decode(parts[0]), decode(parts[1])) else {
        return oauth_error("Invalid JWT: not base64url-encoded JSON");
    };
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return oauth_error("Invalid JWT: the algorithm must be RS256");
    }
    let aud = format!("http://{host}{path}");
    if claims.get("aud").and_then(Value::as_str) != Some(aud.as_str()) {
        return oauth_error(&format!("Invalid JWT: audience must be {aud}"));
    }
    for claim in ["iss", "scope"] {
        if claims
            .get(claim)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return oauth_error(&format!("Invalid JWT: missing claim {claim}"));
        }
    }
    let n = state.token_fetches.fetch_add(1, Ordering::Relaxed) + 1;
    let token = format!("ya29.mock-{n}");
    state.remember_token(&token);
    json_response(
        StatusCode::OK,
        &json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer"}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_models_from_paths() {
        assert_eq!(
            Method::of("/v1beta/models/gemini-2.5-flash:generateContent"),
            Some((Method::Generate, "gemini-2.5-flash"))
        );
        assert_eq!(
            Method::of(
                "/v1/projects/p/locations/l/publishers/google/models/g:streamGenerateContent"
            ),
            Some((Method::Stream, "g"))
        );
        assert_eq!(
            Method::of("/v1beta/models/e:batchEmbedContents"),
            Some((Method::Embed, "e"))
        );
        assert_eq!(Method::of("/v1beta/models/g:countTokens"), None);
        assert_eq!(Method::of("/v1/chat/completions"), None);
    }

    #[test]
    fn request_checks_match_the_real_api() {
        let ok = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
        assert!(check_request(&ok).is_ok());
        for (bad, want) in [
            (json!({"contents": []}), "contents is not specified"),
            (
                json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}),
                "valid role",
            ),
            (
                json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "messages": []}),
                "Unknown name \"messages\"",
            ),
            (
                json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": {"max_tokens": 1}}),
                "Unknown name \"max_tokens\"",
            ),
            (
                json!({"contents": [{"role": "user", "parts": [{"functionResponse": {"response": {}}}]}]}),
                "function_response.name",
            ),
        ] {
            let e = check_request(&bad).err().unwrap_or_default();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn base64_both_alphabets() {
        assert_eq!(
            base64_decode("eyJhIjoxfQ").as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        assert_eq!(base64_decode("Zm9vYg==").as_deref(), Some(&b"foob"[..]));
        assert_eq!(base64_decode("-_8").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(base64_decode("a b"), None);
    }
}

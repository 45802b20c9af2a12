//! The Gemini dialect (Google AI Studio and Vertex AI `generateContent`): OpenAI chat
//! requests encoded as `contents`/`systemInstruction`/`generationConfig` bodies, embeddings as
//! `batchEmbedContents`, and answers, errors and `?alt=sse` streams decoded back into
//! OpenAI shapes. Field mappings follow spec §5.2/§5.3 and Google's current REST reference;
//! finish reasons use OpenAI's values, since OpenAI clients validate them.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::config::plugins::RouteType;
use crate::llm::body::BodyView;
use crate::llm::framing::{Framed, MapEvents};
use crate::llm::sse;
use crate::llm::translate::{self as t, bad, field, Chunks, ToolChoice};
use crate::llm::usage::Usage;
use crate::llm::{Asked, Decoded, Encode, EncodeError};

/// Google AI Studio's endpoint.
pub const AI_STUDIO_BASE: (&str, &str, u16) = ("https", "generativelanguage.googleapis.com", 443);
/// AI Studio's path up to the model.
pub const AI_STUDIO_PREFIX: &str = "/v1beta/models/";

/// Vertex AI's path up to the model, for a project and location.
pub fn vertex_prefix(project_id: &str, location_id: &str) -> String {
    format!("/v1/projects/{project_id}/locations/{location_id}/publishers/google/models/")
}

/// Characters kept as they are in the model path segment (RFC 3986 unreserved).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `prefix` + model + method. The gateway always streams with `alt=sse`, so a stream is SSE
/// whose events are whole `GenerateContentResponse`s.
pub fn request_path(rt: RouteType, prefix: &str, model: &str, stream: bool) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let model: String = percent_encoding::utf8_percent_encode(model, SEGMENT).collect();
    let method = match rt {
        RouteType::Embeddings => ":batchEmbedContents",
        _ if stream => ":streamGenerateContent?alt=sse",
        _ => ":generateContent",
    };
    format!("{prefix}{model}{method}")
}

/// A streamed request's configured path (`upstream_url`) with `alt=sse`, which Google's
/// `streamGenerateContent` needs to answer in events (without it the answer is one JSON
/// array at the end); a path that already names `alt` is kept, as Kong keeps it.
pub fn sse_path(path: &str) -> std::borrow::Cow<'_, str> {
    let (head, query) = path.split_once('?').unwrap_or((path, ""));
    let streams = head
        .rsplit_once(':')
        .is_some_and(|(_, m)| m == "streamGenerateContent");
    let has_alt = form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "alt");
    if !streams || has_alt {
        return std::borrow::Cow::Borrowed(path);
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    std::borrow::Cow::Owned(format!("{path}{sep}alt=sse"))
}

/// The model of a Gemini-native client's path (`…/models/{model}:{method}`).
pub fn model_in_path(path: &str) -> Option<&str> {
    let (head, _method) = path.rsplit_once(':')?;
    let model = head.rsplit_once("/models/")?.1;
    (!model.is_empty() && !model.contains('/')).then_some(model)
}

/// Whether a Gemini-native client's path asks for a stream.
pub fn path_streams(path: &str) -> bool {
    path.rsplit_once(':')
        .is_some_and(|(_, m)| m.starts_with("streamGenerateContent"))
}

/// An OpenAI chat body as a `generateContent` body.
pub fn encode_chat(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Vec<u8>, EncodeError> {
    let model = t::model(body, e)?;
    let model = model.strip_prefix("models/").unwrap_or(&model);
    let mut out = Map::new();

    let (system, contents) = encode_messages(&t::messages(body)?, model)?;
    out.insert("contents".into(), Value::Array(contents));
    if let Some(s) = system {
        out.insert("systemInstruction".into(), json!({"parts": [{"text": s}]}));
    }

    let mut gc = Map::new();
    if let Some(m) = t::max_tokens(body, e)? {
        gc.insert("maxOutputTokens".into(), json!(m));
    }
    if let Some(s) = t::stop(body)? {
        gc.insert("stopSequences".into(), Value::Array(s));
    }
    // Request values win; the config fills the gaps (spec §3.5 step 4).
    for (ours, theirs, conf) in [
        (
            "temperature",
            "temperature",
            e.options.temperature.map(|v| json!(v)),
        ),
        ("top_p", "topP", e.options.top_p.map(|v| json!(v))),
        ("top_k", "topK", e.options.top_k.map(|v| json!(v))),
    ] {
        if let Some(v) = t::sampling(body, ours, conf)? {
            gc.insert(theirs.into(), v);
        }
    }
    for (ours, theirs) in [
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ] {
        if let Some(v) = field(body, ours)? {
            gc.insert(theirs.into(), v);
        }
    }
    if let Some(n) = field(body, "n")? {
        let n = n
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad("'n' must be a positive integer"))?;
        if n > 1 {
            gc.insert("candidateCount".into(), json!(n));
        }
    }
    if let Some(rf) = field(body, "response_format")? {
        match rf.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => {}
            "json_object" => {
                gc.insert("responseMimeType".into(), json!("application/json"));
            }
            "json_schema" => {
                let schema = rf
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .filter(|s| s.is_object())
                    .ok_or_else(|| bad("'response_format.json_schema.schema' is required"))?;
                gc.insert("responseMimeType".into(), json!("application/json"));
                // responseJsonSchema takes JSON Schema as OpenAI clients write it
                // (additionalProperties, $ref…), which the OpenAPI-subset responseSchema rejects.
                gc.insert("responseJsonSchema".into(), schema.clone());
            }
            other => {
                return Err(bad(format!(
                    "'response_format' type '{other}' is not supported by provider gemini"
                )))
            }
        }
    }
    if !gc.is_empty() {
        out.insert("generationConfig".into(), Value::Object(gc));
    }
    if let Some(tools) = field(body, "tools")? {
        // parametersJsonSchema takes the JSON Schema OpenAI tools carry as it is.
        let decls: Vec<Value> = t::function_tools(&tools, "gemini")?
            .into_iter()
            .map(|f| f.declaration("parametersJsonSchema", |p| p))
            .collect();
        out.insert("tools".into(), json!([{ "functionDeclarations": decls }]));
    }
    if let Some(tc) = field(body, "tool_choice")? {
        let config = match t::tool_choice(&tc)? {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Function(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        out.insert(
            "toolConfig".into(),
            json!({ "functionCallingConfig": config }),
        );
    }
    if let Some((k, v)) = e.body_param {
        out.insert(k.into(), Value::String(v.into()));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))
}

/// System messages joined into the system instruction; the rest as `contents` (assistant →
/// `model`, tool results → `user` turns of `functionResponse` parts), consecutive turns of one
/// role merged, as Gemini wants all responses to one model turn together.
fn encode_messages(
    messages: &[Value],
    model: &str,
) -> Result<(Option<String>, Vec<Value>), EncodeError> {
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Tool call id → function name: Gemini's functionResponse names the function, OpenAI's
    // tool message only points at the call.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("'messages[{i}].role' is required")))?;
        let (role, parts) = match role {
            "system" | "developer" => {
                if model.starts_with("gemini-1.0") {
                    return Err(bad(format!(
                        "'messages[{i}]': provider gemini has no systemInstruction for {model} (gemini-1.0 models); put the instructions in a user message"
                    )));
                }
                system.push(t::text_of(m.get("content"), i, None)?);
                continue;
            }
            "user" => ("user", content_parts(m.get("content"), i)?),
            "assistant" => {
                let mut parts = match m.get("content") {
                    None | Some(Value::Null) => Vec::new(),
                    c => content_parts(c, i)?,
                };
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (j, c) in calls.iter().enumerate() {
                        let (part, id, name) = function_call_part(c, i, j)?;
                        if let Some(id) = id {
                            call_names.insert(id, name);
                        }
                        parts.push(part);
                    }
                }
                ("model", parts)
            }
            "tool" => {
                let id = t::tool_call_id(m, i)?;
                let name = call_names.get(id).ok_or_else(|| {
                    bad(format!(
                        "'messages[{i}].tool_call_id' '{id}' matches no tool call of an earlier assistant message; provider gemini needs the function's name"
                    ))
                })?;
                let text = t::text_of(m.get("content"), i, None)?;
                // Gemini wants an object; a JSON object result goes as it is.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({ "content": text }),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            other => {
                return Err(bad(format!(
                    "'messages[{i}].role' '{other}' is not supported by provider gemini"
                )))
            }
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, p)) if *r == role => p.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n"));
    let turns = turns
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    Ok((system, turns))
}

fn content_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, EncodeError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({ "text": s })]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| content_part(p, i, j))
            .collect(),
        Some(_) => Err(bad(format!(
            "'messages[{i}].content' must be a string or an array"
        ))),
    }
}

fn content_part(p: &Value, i: usize, j: usize) -> Result<Value, EncodeError> {
    let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
    let field = |f: &str| format!("'messages[{i}].content[{j}].{f}'");
    match kind {
        "text" => Ok(json!({"text": p.get("text").and_then(Value::as_str).unwrap_or("")})),
        "image_url" => {
            let url = t::image_url(p, i, j)?;
            Ok(match t::data_url(url) {
                Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
                None => match image_mime(url) {
                    Some(mime) => json!({"fileData": {"mimeType": mime, "fileUri": url}}),
                    None => json!({"fileData": {"fileUri": url}}),
                },
            })
        }
        "input_audio" => {
            let a = p.get("input_audio");
            let data = a
                .and_then(|a| a.get("data"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{} is required", field("input_audio.data"))))?;
            let mime = match a.and_then(|a| a.get("format")).and_then(Value::as_str) {
                Some("wav") => "audio/wav",
                Some("mp3") => "audio/mp3",
                other => {
                    return Err(bad(format!(
                        "{} '{}' is not supported by provider gemini (wav, mp3)",
                        field("input_audio.format"),
                        other.unwrap_or("")
                    )))
                }
            };
            Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
        }
        "file" => {
            let f = p.get("file");
            match f
                .and_then(|f| f.get("file_data"))
                .and_then(Value::as_str)
                .and_then(t::data_url)
            {
                Some((mime, data)) => Ok(json!({"inlineData": {"mimeType": mime, "data": data}})),
                None => Err(bad(format!(
                    "{}: provider gemini takes files as base64 data URLs only",
                    field("file.file_data")
                ))),
            }
        }
        other => Err(bad(format!(
            "{} '{other}' is not supported by provider gemini",
            field("type")
        ))),
    }
}

/// An image's MIME type from its URL's extension; Gemini's `fileData.mimeType` is optional,
/// so an unknown one is left out rather than guessed.
fn image_mime(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => return None,
    })
}

/// An assistant tool call as a `functionCall` part, with its id and name for the tool
/// messages that answer it.
fn function_call_part(
    call: &Value,
    i: usize,
    j: usize,
) -> Result<(Value, Option<&str>, &str), EncodeError> {
    let c = t::tool_call(call, i, j)?;
    let args = t::arguments_object(c.arguments, i, j)?;
    let mut part = json!({"functionCall": {"name": c.name, "args": args}});
    // Thinking models want their signature back with the call (Google's OpenAI-compatible
    // API carries it in the same place).
    if let Some(sig) = call
        .pointer("/extra_content/google/thought_signature")
        .and_then(Value::as_str)
    {
        part["thoughtSignature"] = json!(sig);
    }
    Ok((part, c.id, c.name))
}

/// An OpenAI embeddings body as a `batchEmbedContents` body: one request per input text.
pub fn encode_embeddings(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Vec<u8>, EncodeError> {
    let model = t::model(body, e)?;
    let model = format!("models/{}", model.strip_prefix("models/").unwrap_or(&model));
    let texts: Vec<String> = match field(body, "input")? {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad(format!(
                    "'input[{i}]': provider gemini embeds text only (no token arrays)"
                ))),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("'input' must be a string or an array of strings")),
    };
    if texts.is_empty() {
        return Err(bad("'input' must not be empty"));
    }
    if let Some(f) = body.str("encoding_format") {
        if f != "float" {
            return Err(bad(format!(
                "'encoding_format' '{f}' is not supported by provider gemini (float only)"
            )));
        }
    }
    let dims = match field(body, "dimensions")? {
        Some(d) => Some(
            d.as_u64()
                .ok_or_else(|| bad("'dimensions' must be a positive integer"))?,
        ),
        None => None,
    };
    let requests: Vec<Value> = texts
        .into_iter()
        .map(|t| {
            let mut r = json!({"model": model, "content": {"parts": [{"text": t}]}});
            if let Some(d) = dims {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    let mut out = json!({ "requests": requests });
    if let Some((k, v)) = e.body_param {
        out[k] = json!(v);
    }
    serde_json::to_vec(&out).map_err(|e| bad(e.to_string()))
}

/// A `batchEmbedContents` answer as an OpenAI embedding list for `asked.model`. Gemini's
/// answer carries no token count unless it has `usageMetadata`; otherwise prompt tokens are
/// estimated as ceil(characters / 4) of the client's inputs, as Kong does for providers
/// without counts.
pub fn decode_embeddings(body: &[u8], asked: &Asked<'_>) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let embeddings = v
        .get("embeddings")
        .and_then(Value::as_array)
        .ok_or("response has no 'embeddings'")?;
    let data: Vec<Value> = embeddings
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({"object": "embedding", "index": i,
                   "embedding": e.get("values").cloned().unwrap_or_else(|| json!([]))})
        })
        .collect();
    let prompt = v
        .pointer("/usageMetadata/promptTokenCount")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| estimate_input_tokens(asked.request));
    let usage = Usage {
        search_units: None,
        prompt_tokens: prompt,
        completion_tokens: 0,
        total_tokens: prompt,
        cached_tokens: None,
        reasoning_tokens: None,
    };
    let model = asked
        .model
        .map(|m| m.strip_prefix("models/").unwrap_or(m).to_string());
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    });
    let body = serde_json::to_vec(&out).map_err(|e| e.to_string())?;
    Ok(Decoded {
        body,
        usage: Some(usage),
        model,
    })
}

/// ceil(chars / 4) over the texts of an OpenAI embeddings `input`.
fn estimate_input_tokens(request: &[u8]) -> u64 {
    let est = |t: &str| (t.chars().count() as u64).div_ceil(4);
    let Ok(v) = serde_json::from_slice::<Value>(request) else {
        return 0;
    };
    match v.get("input") {
        Some(Value::String(s)) => est(s),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(est).sum(),
        _ => 0,
    }
}

/// Gemini's `finishReason` as an OpenAI `finish_reason`.
pub fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

/// Gemini `usageMetadata` → OpenAI usage. Thinking tokens are billed as output, so they count
/// as completion tokens (and as reasoning tokens); `promptTokenCount` already includes cached
/// content, and tool-use prompt tokens are input too.
pub fn usage(u: &Value) -> Option<Usage> {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    if n("promptTokenCount").is_none()
        && n("candidatesTokenCount").is_none()
        && n("totalTokenCount").is_none()
    {
        return None;
    }
    let prompt = n("promptTokenCount").unwrap_or(0) + n("toolUsePromptTokenCount").unwrap_or(0);
    let thoughts = n("thoughtsTokenCount");
    let completion = n("candidatesTokenCount").unwrap_or(0) + thoughts.unwrap_or(0);
    Some(Usage {
        search_units: None,
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: n("totalTokenCount").unwrap_or(prompt + completion),
        cached_tokens: n("cachedContentTokenCount").filter(|c| *c > 0),
        reasoning_tokens: thoughts.filter(|t| *t > 0),
    })
}

/// Why Gemini gave no candidates, for the error the client gets.
fn no_candidates(v: &Value) -> String {
    let base = "no generation candidates received from Gemini, or max_tokens too short";
    match v
        .pointer("/promptFeedback/blockReason")
        .and_then(Value::as_str)
    {
        Some(r) => format!("{base} (prompt blocked: {r})"),
        None => base.to_string(),
    }
}

/// An id for a tool call Gemini gave none: unique within the answer and stable for it.
fn call_id(response_id: &str, candidate: u64, k: usize) -> String {
    format!("call_{response_id}_{candidate}_{k}")
}

fn tool_call(part: &Value, id_if_none: String) -> Option<Value> {
    let fc = part.get("functionCall")?;
    let id = fc.get("id").and_then(Value::as_str);
    let mut call = t::openai_tool_call(
        id.unwrap_or(&id_if_none),
        fc.get("name"),
        t::arguments_string(fc.get("args")),
    );
    if let Some(sig) = part.get("thoughtSignature").and_then(Value::as_str) {
        call["extra_content"] = json!({"google": {"thought_signature": sig}});
    }
    Some(call)
}

/// Text (not thoughts) and function calls of one candidate's parts.
fn read_parts(
    parts: Option<&Vec<Value>>,
    response_id: &str,
    candidate: u64,
    first_call: usize,
) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in parts.into_iter().flatten() {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        let k = first_call + calls.len();
        if let Some(c) = tool_call(p, call_id(response_id, candidate, k)) {
            calls.push(c);
        }
    }
    (text, calls)
}

fn response_id(v: &Value, created: u64) -> String {
    v.get("responseId")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("gemini-{created}-{}", uuid::Uuid::new_v4().simple()))
}

/// A `generateContent` answer as an OpenAI `chat.completion` (one choice per candidate).
pub fn decode_chat(body: &[u8], created: u64) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let candidates = v
        .get("candidates")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| no_candidates(&v))?;
    let id = response_id(&v, created);
    let mut choices = Vec::with_capacity(candidates.len());
    for (pos, c) in candidates.iter().enumerate() {
        let index = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
        let parts = c.pointer("/content/parts").and_then(Value::as_array);
        let (text, calls) = read_parts(parts, &id, index, 0);
        let mut message = json!({
            "role": "assistant",
            "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
        });
        let finish = finish_reason(
            c.get("finishReason")
                .and_then(Value::as_str)
                .unwrap_or("STOP"),
            !calls.is_empty(),
        );
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        choices.push(
            json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish}),
        );
    }
    let model = v
        .get("modelVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    let usage = v.get("usageMetadata").and_then(usage);
    let mut out = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
    });
    if let Some(u) = &usage {
        out["usage"] = u.openai_json();
    }
    let body = serde_json::to_vec(&out).map_err(|e| e.to_string())?;
    Ok(Decoded { body, usage, model })
}

/// Usage and model of a native Gemini answer, for the log of a native (untranslated) route;
/// a streamed answer without `alt=sse` is a JSON array whose last usage is the total.
pub fn read_usage(body: &[u8]) -> (Option<Usage>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let v = match v {
        Value::Array(items) => match items
            .into_iter()
            .rev()
            .find(|i| i.get("usageMetadata").is_some())
        {
            Some(i) => i,
            None => return (None, None),
        },
        v => v,
    };
    let model = v
        .get("modelVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    (v.get("usageMetadata").and_then(usage), model)
}

/// OpenAI's `error.type` for a Google RPC status.
fn error_type(status: &str) -> &'static str {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => "invalid_request_error",
        "UNAUTHENTICATED" => "authentication_error",
        "PERMISSION_DENIED" => "permission_error",
        "NOT_FOUND" => "not_found_error",
        "RESOURCE_EXHAUSTED" => "rate_limit_error",
        _ => "server_error",
    }
}

/// A Google error body (`{"error":{"code","message","status"}}`, also inside a one-element
/// array as `streamGenerateContent` without `alt=sse` sends it) in OpenAI's shape.
pub fn decode_error(body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let v = match v {
        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        v => v,
    };
    let e = v.get("error")?;
    let message = e.get("message").and_then(Value::as_str)?;
    let status = e.get("status").and_then(Value::as_str).unwrap_or("UNKNOWN");
    serde_json::to_vec(&json!({"error": {
        "message": message, "type": error_type(status), "param": null, "code": status,
    }}))
    .ok()
}

/// Gemini's `?alt=sse` stream (each event a whole `GenerateContentResponse`) → OpenAI
/// `chat.completion.chunk` events. Gemini sends no terminal event: the finish reason marks the
/// last answer chunk and the body's end the stream's, so the end writes the usage chunk and
/// `[DONE]`.
pub type StreamMapper = Framed<EventMapper>;

impl StreamMapper {
    /// A mapper stamping chunks with `created`.
    pub fn new(created: u64) -> Self {
        Framed::wrap(EventMapper {
            chunks: Chunks {
                created,
                ..Chunks::default()
            },
            ..EventMapper::default()
        })
    }
}

/// One Gemini event at a time (see [`StreamMapper`]).
#[derive(Debug, Default)]
pub struct EventMapper {
    /// The id is the first event's (None before it).
    chunks: Chunks<Option<String>>,
    /// Per candidate index: tool calls so far (OpenAI numbers them from 0 per choice).
    started: Vec<(u64, usize)>,
    usage: Option<Value>,
    finished: bool,
}

impl MapEvents for EventMapper {
    // Without `alt=sse` Gemini streams one JSON array of the same objects.
    type Framing = crate::llm::framing::SseOrJsonArray;

    fn on_event(&mut self, ev: &sse::Event, out: &mut Vec<u8>) {
        let Ok(v) = serde_json::from_slice::<Value>(&ev.data) else {
            return;
        };
        if let Some(e) = v.get("error") {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error");
            let status = e.get("status").and_then(Value::as_str).unwrap_or("UNKNOWN");
            t::error_event(message, error_type(status), status, out);
            return;
        }
        let id = match &self.chunks.id {
            Some(id) => id.clone(),
            None => {
                let id = response_id(&v, self.chunks.created);
                self.chunks.id = Some(id.clone());
                id
            }
        };
        if self.chunks.model.is_empty() {
            if let Some(m) = v.get("modelVersion").and_then(Value::as_str) {
                self.chunks.model = m.to_string();
            }
        }
        if let Some(u) = v.get("usageMetadata").filter(|u| u.is_object()) {
            // A running total: the latest one is the answer's.
            self.usage = Some(u.clone());
        }
        let candidates = v.get("candidates").and_then(Value::as_array);
        for (pos, c) in candidates.into_iter().flatten().enumerate() {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
            let slot = match self.started.iter().position(|(i, _)| *i == index) {
                Some(s) => s,
                None => {
                    self.started.push((index, 0));
                    self.chunks.delta_at(
                        index,
                        json!({"role": "assistant", "content": ""}),
                        None,
                        out,
                    );
                    self.started.len() - 1
                }
            };
            let first_call = self.started[slot].1;
            let parts = c.pointer("/content/parts").and_then(Value::as_array);
            let (text, calls) = read_parts(parts, &id, index, first_call);
            if !text.is_empty() {
                self.chunks
                    .delta_at(index, json!({ "content": text }), None, out);
            }
            if !calls.is_empty() {
                let deltas: Vec<Value> = calls
                    .into_iter()
                    .enumerate()
                    .map(|(k, mut c)| {
                        if let Some(o) = c.as_object_mut() {
                            o.insert("index".into(), json!(first_call + k));
                        }
                        c
                    })
                    .collect();
                self.started[slot].1 += deltas.len();
                self.chunks
                    .delta_at(index, json!({ "tool_calls": deltas }), None, out);
            }
            if let Some(r) = c.get("finishReason").and_then(Value::as_str) {
                let has_calls = self.started[slot].1 > 0;
                self.chunks
                    .delta_at(index, json!({}), Some(finish_reason(r, has_calls)), out);
                self.finished = true;
            }
        }
        if candidates.is_none_or(|c| c.is_empty()) {
            if let Some(r) = v
                .pointer("/promptFeedback/blockReason")
                .and_then(Value::as_str)
            {
                t::error_event(&no_candidates(&v), "invalid_request_error", r, out);
            }
        }
    }

    /// The usage chunk and `[DONE]` when a finish reason came (true); nothing when the
    /// stream was cut (false).
    fn end(&mut self, out: &mut Vec<u8>) -> bool {
        if !self.finished {
            return false;
        }
        let u = self.usage.as_ref().and_then(usage);
        self.chunks.end(u.as_ref(), out);
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn configured_stream_paths_get_alt_sse() {
        let p = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";
        assert_eq!(sse_path(p), format!("{p}?alt=sse"));
        assert_eq!(
            sse_path(&format!("{p}?key=k")),
            format!("{p}?key=k&alt=sse")
        );
        assert_eq!(sse_path(&format!("{p}?alt=json")), format!("{p}?alt=json"));
        let buffered = "/v1beta/models/gemini-2.5-flash:generateContent";
        assert_eq!(sse_path(buffered), buffered);
    }
    use crate::config::plugins::ModelOptions;

    fn enc(body: Value, model: &str, options: &ModelOptions) -> Result<Value, String> {
        let text = body.to_string();
        let view = BodyView::parse(text.as_bytes()).unwrap();
        let e = Encode {
            model: Some(model),
            options,
            stream: false,
            body_param: None,
        };
        encode_chat(&view, &e)
            .map(|b| serde_json::from_slice(&b).unwrap())
            .map_err(|e| e.0)
    }

    #[test]
    fn paths_for_studio_vertex_stream_and_embeddings() {
        assert_eq!(
            request_path(RouteType::Chat, AI_STUDIO_PREFIX, "gemini-2.5-flash", false),
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            request_path(RouteType::Chat, &vertex_prefix("p1", "us-central1"), "models/gemini-2.5-pro", true),
            "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            request_path(RouteType::Embeddings, AI_STUDIO_PREFIX, "a/b?c", false),
            "/v1beta/models/a%2Fb%3Fc:batchEmbedContents"
        );
    }

    #[test]
    fn config_fills_gaps_and_request_wins() {
        let opts = ModelOptions {
            max_tokens: Some(100),
            temperature: Some(0.2),
            top_k: Some(40),
            top_p: Some(0.5),
            ..Default::default()
        };
        let v = enc(
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 1.0, "n": 2}),
            "gemini-2.5-flash",
            &opts,
        )
        .unwrap();
        assert_eq!(
            v["generationConfig"],
            json!({"maxOutputTokens": 100, "temperature": 1.0, "topP": 0.5, "topK": 40, "candidateCount": 2})
        );
        assert_eq!(
            v["contents"],
            json!([{"role": "user", "parts": [{"text": "hi"}]}])
        );
        assert!(v.get("systemInstruction").is_none());
    }

    #[test]
    fn refusals_name_the_field() {
        let o = ModelOptions::default();
        let sys = json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]});
        let e = enc(sys.clone(), "gemini-1.0-pro", &o).unwrap_err();
        assert!(
            e.contains("'messages[0]'") && e.contains("systemInstruction"),
            "{e}"
        );
        assert!(enc(sys, "gemini-1.5-pro", &o).is_ok());
        let e = enc(
            json!({"messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]}),
            "g",
            &o,
        )
        .unwrap_err();
        assert!(
            e.contains("'messages[0].tool_call_id'") && e.contains("gemini"),
            "{e}"
        );
        let e = enc(
            json!({"messages": [{"role": "user", "content": "u"}], "response_format": {"type": "json_schema", "json_schema": {}}}),
            "g",
            &o,
        )
        .unwrap_err();
        assert!(e.contains("'response_format.json_schema.schema'"), "{e}");
        let e = enc(
            json!({"messages": [{"role": "user", "content": "u"}], "tools": [{"type": "web_search"}]}),
            "g",
            &o,
        )
        .unwrap_err();
        assert!(e.contains("'tools[0].type'"), "{e}");
    }

    #[test]
    fn json_modes_and_tool_choice() {
        let o = ModelOptions::default();
        let v = enc(
            json!({"messages": [{"role": "user", "content": "u"}], "response_format": {"type": "json_object"},
                   "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"}),
            "g",
            &o,
        )
        .unwrap();
        assert_eq!(
            v["generationConfig"]["responseMimeType"],
            "application/json"
        );
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig": {"mode": "NONE"}})
        );
        assert_eq!(
            v["tools"],
            json!([{"functionDeclarations": [{"name": "f"}]}])
        );
    }

    #[test]
    fn finish_reasons_and_usage() {
        assert_eq!(finish_reason("STOP", false), "stop");
        assert_eq!(finish_reason("STOP", true), "tool_calls");
        assert_eq!(finish_reason("MAX_TOKENS", true), "length");
        for r in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
        ] {
            assert_eq!(finish_reason(r, false), "content_filter");
        }
        let u = usage(&json!({"promptTokenCount": 10, "candidatesTokenCount": 5,
            "thoughtsTokenCount": 7, "cachedContentTokenCount": 4, "totalTokenCount": 22}))
        .unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.total_tokens,
                u.cached_tokens,
                u.reasoning_tokens
            ),
            (10, 12, 22, Some(4), Some(7))
        );
        assert_eq!(usage(&json!({})), None);
    }

    #[test]
    fn no_candidates_is_an_error_with_the_block_reason() {
        let e = decode_chat(br#"{"promptFeedback":{"blockReason":"SAFETY"}}"#, 1)
            .err()
            .unwrap();
        assert_eq!(
            e,
            "no generation candidates received from Gemini, or max_tokens too short (prompt blocked: SAFETY)"
        );
        assert!(decode_chat(br#"{"candidates":[]}"#, 1).is_err());
    }

    #[test]
    fn errors_in_openai_shape() {
        let b = decode_error(
            br#"[{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}]"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "Quota exceeded", "type": "rate_limit_error", "param": null, "code": "RESOURCE_EXHAUSTED"}})
        );
        assert!(decode_error(b"not json").is_none());
        assert!(decode_error(br#"{"other":1}"#).is_none());
    }

    #[test]
    fn embeddings_both_ways() {
        let body = json!({"input": ["a b", "hello"], "dimensions": 4});
        let text = body.to_string();
        let view = BodyView::parse(text.as_bytes()).unwrap();
        let o = ModelOptions::default();
        let e = Encode {
            model: Some("text-embedding-004"),
            options: &o,
            stream: false,
            body_param: None,
        };
        let up = encode_embeddings(&view, &e).unwrap();
        let v: Value = serde_json::from_slice(&up).unwrap();
        assert_eq!(
            v["requests"][1],
            json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 4})
        );
        let asked = Asked {
            model: Some("text-embedding-004"),
            request: text.as_bytes(),
            request_id: "rid",
        };
        let d = decode_embeddings(
            br#"{"embeddings":[{"values":[0.1,0.2]},{"values":[0.3]}]}"#,
            &asked,
        )
        .unwrap();
        let out: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(
            out["data"][1],
            json!({"object": "embedding", "index": 1, "embedding": [0.3]})
        );
        assert_eq!(out["model"], "text-embedding-004");
        assert_eq!(out["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
        let bad = json!({"input": [[1, 2]]}).to_string();
        let view = BodyView::parse(bad.as_bytes()).unwrap();
        assert!(encode_embeddings(&view, &e)
            .unwrap_err()
            .0
            .contains("'input[0]'"));
    }

    #[test]
    fn stream_without_finish_reason_is_cut() {
        let mut m = StreamMapper::new(1);
        let mut out = Vec::new();
        m.on_chunk(
            b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"}}]}\r\n\r\n",
            &mut out,
        );
        assert!(!m.finish(&mut out));
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("\"content\":\"Hi\"") && !s.contains("[DONE]"),
            "{s}"
        );
    }
}

//! Amazon Bedrock's Converse API: OpenAI chat requests encoded as `/model/{m}/converse`
//! bodies, Converse answers, errors and ConverseStream event streams decoded back into
//! OpenAI shapes. The proxy signs each request with SigV4 ([`crate::llm::sigv4`]).
//! Converse answers name neither the model nor an id: the model is the one the request
//! was sent for, the id is made from the gateway's request id.

use http::HeaderMap;
use serde_json::{json, Map, Value};

use crate::llm::body::BodyView;
use crate::llm::eventstream::{Decoder, Message};
use crate::llm::sigv4::UNRESERVED;
use crate::llm::translate::{self as t, bad, field, Chunks, ToolChoice};
use crate::llm::usage::Usage;
use crate::llm::{Asked, Decoded, Encode, EncodeError};

/// The SigV4 service name.
pub const SERVICE: &str = "bedrock";
/// The path up to the model id; the method (`converse`, `converse-stream`) follows it.
pub const MODEL_PREFIX: &str = "/model/";

/// Bedrock Runtime's endpoint host in `region`.
pub fn host(region: &str) -> String {
    format!("bedrock-runtime.{region}.amazonaws.com")
}

/// `{prefix}{model}/converse[-stream]`, the model id encoded as AWS SDKs send it (only
/// unreserved characters kept: `:` becomes `%3A`, an ARN's `/` becomes `%2F`).
pub fn request_path(prefix: &str, model: &str, stream: bool) -> String {
    let model = percent_encoding::utf8_percent_encode(model, UNRESERVED);
    let method = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!("{prefix}{model}/{method}")
}

/// `{prefix}{model}/invoke`: InvokeModel, which serves the embedding models.
pub fn invoke_path(prefix: &str, model: &str) -> String {
    let model = percent_encoding::utf8_percent_encode(model, UNRESERVED);
    format!("{prefix}{model}/invoke")
}

/// The model id and whether it streams, from the path of a client that speaks Converse
/// itself (`…/model/{id}/converse` or `…/converse-stream`, `llm_format: bedrock`).
pub fn native_call(path: &str) -> Option<(String, bool)> {
    let path = path.split('?').next().unwrap_or(path).trim_end_matches('/');
    let (rest, stream) = match path.strip_suffix("/converse-stream") {
        Some(r) => (r, true),
        None => (path.strip_suffix("/converse")?, false),
    };
    let (_, model) = rest.rsplit_once("/model/")?;
    let model = percent_encoding::percent_decode_str(model)
        .decode_utf8()
        .ok()?
        .into_owned();
    let plain = !model.is_empty() && !model.contains('/');
    (plain || model.starts_with("arn:")).then_some((model, stream))
}

/// Models whose Converse support has no system prompt (AWS's "supported models and model
/// features" table); Kong refuses these too.
pub fn refuses_system(model: &str) -> bool {
    let id = model.rsplit('/').next().unwrap_or(model);
    [
        "amazon.titan",
        "cohere.command-text",
        "cohere.command-light-text",
        "mistral.mistral-7b-instruct",
        "mistral.mixtral-8x7b-instruct",
    ]
    .iter()
    .any(|p| id.contains(p))
}

/// `toolResult.status` is only accepted for Anthropic Claude and Amazon Nova models.
fn takes_tool_status(model: &str) -> bool {
    model.contains("anthropic.") || model.contains("amazon.nova")
}

/// Top-level members of a client's `bedrock` object that go into the Converse body.
const PASSED_THROUGH: &[&str] = &[
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "guardrailConfig",
    "performanceConfig",
    "promptVariables",
    "requestMetadata",
    "toolConfig",
];

/// An OpenAI chat body as a Converse body (the model and streaming are in the path).
pub fn encode_chat(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Vec<u8>, EncodeError> {
    let model = t::model(body, e)?;
    let mut out = Map::new();

    let conv = encode_messages(t::messages(body)?, &model)?;
    if let Some(i) = conv.first_system {
        if refuses_system(&model) {
            return Err(bad(format!(
                "'messages[{i}]': model '{model}' takes no system prompt on provider bedrock (the Converse API refuses 'system' for it)"
            )));
        }
        out.insert("system".into(), Value::Array(conv.system));
    }
    out.insert("messages".into(), Value::Array(conv.turns));

    let mut inference = Map::new();
    if let Some(m) = t::max_tokens(body, e)? {
        inference.insert("maxTokens".into(), json!(m));
    }
    for (ours, theirs, conf) in [
        ("temperature", "temperature", e.options.temperature),
        ("top_p", "topP", e.options.top_p),
    ] {
        match field(body, ours)? {
            Some(v) if v.is_number() => {
                inference.insert(theirs.into(), v);
            }
            Some(_) => return Err(bad(format!("'{ours}' must be a number"))),
            None => {
                if let Some(c) = conf {
                    inference.insert(theirs.into(), json!(c));
                }
            }
        }
    }
    if let Some(s) = t::stop(body)? {
        inference.insert("stopSequences".into(), Value::Array(s));
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }

    let mut extra = Map::new();
    if let Some(k) = t::sampling(body, "top_k", e.options.top_k.map(|k| json!(k)))? {
        extra.insert("top_k".into(), k);
    }

    t::only_one_choice(body, "bedrock")?;
    if let Some(rf) = field(body, "response_format")? {
        let kind = rf.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "text" {
            return Err(bad(format!(
                "'response_format' type '{kind}' is not supported by provider bedrock: the Converse API has no JSON mode (describe the format in the prompt, or use a tool with an input schema)"
            )));
        }
    }

    let tools: Vec<Value> = match field(body, "tools")? {
        Some(tools) => t::function_tools(&tools, "bedrock")?
            .into_iter()
            .map(|f| {
                let spec = f.declaration("inputSchema", |p| {
                    Some(json!({ "json": t::schema_or_empty(p) }))
                });
                json!({ "toolSpec": spec })
            })
            .collect(),
        None => Vec::new(),
    };
    let choice = match field(body, "tool_choice")? {
        None => None,
        Some(tc) => Some(match t::tool_choice(&tc)? {
            ToolChoice::None if conv.has_tool_blocks => {
                return Err(bad(
                    "'tool_choice' 'none' cannot be expressed by provider bedrock once the conversation has tool calls (Converse then requires the tools, and has no 'none' choice)",
                ));
            }
            ToolChoice::None => None,
            ToolChoice::Auto => Some(json!({"auto": {}})),
            ToolChoice::Required => Some(json!({"any": {}})),
            ToolChoice::Function(name) => Some(json!({"tool": {"name": name}})),
        }),
    };
    match choice {
        Some(None) => {}
        Some(Some(_)) if tools.is_empty() => {
            return Err(bad("'tool_choice' needs 'tools'"));
        }
        c => {
            if !tools.is_empty() {
                let mut tc = Map::new();
                tc.insert("tools".into(), Value::Array(tools));
                if let Some(Some(choice)) = c {
                    tc.insert("toolChoice".into(), choice);
                }
                out.insert("toolConfig".into(), Value::Object(tc));
            }
        }
    }

    if let Some(b) = field(body, "bedrock")? {
        let Value::Object(b) = b else {
            return Err(bad("'bedrock' must be an object"));
        };
        for (k, v) in b {
            if !PASSED_THROUGH.contains(&k.as_str()) {
                return Err(bad(format!(
                    "'bedrock.{k}' is not a Converse request field tollgate passes (allowed: {})",
                    PASSED_THROUGH.join(", ")
                )));
            }
            if k == "additionalModelRequestFields" {
                let Value::Object(fields) = v else {
                    return Err(bad(
                        "'bedrock.additionalModelRequestFields' must be an object",
                    ));
                };
                extra.extend(fields);
            } else {
                out.insert(k, v);
            }
        }
    }
    if !extra.is_empty() {
        out.insert("additionalModelRequestFields".into(), Value::Object(extra));
    }
    // Kong reads a guardrail from the body's top level too (`bedrock.guardrailConfig` wins).
    if let Some(g) = field(body, "guardrailConfig")? {
        if !g.is_object() {
            return Err(bad("'guardrailConfig' must be an object"));
        }
        out.entry("guardrailConfig").or_insert(g);
    }
    if let Some(latency) = e
        .options
        .bedrock
        .as_ref()
        .and_then(|b| b.performance_config_latency.as_deref())
    {
        // The operator's setting is forced over the client's, as in Kong.
        out.insert("performanceConfig".into(), json!({ "latency": latency }));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))
}

/// Messages split into system blocks and alternating turns.
struct Conversation {
    system: Vec<Value>,
    /// Index of the first system message, for the error when the model refuses one.
    first_system: Option<usize>,
    turns: Vec<Value>,
    has_tool_blocks: bool,
}

/// Tool results become user turns; consecutive same-role turns are merged, since Converse
/// requires user and assistant to alternate.
fn encode_messages(messages: Vec<Value>, model: &str) -> Result<Conversation, EncodeError> {
    let mut system = Vec::new();
    let mut first_system = None;
    let mut has_tool_blocks = false;
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.into_iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("'messages[{i}].role' is required")))?;
        let (role, blocks) = match role {
            "system" | "developer" => {
                first_system.get_or_insert(i);
                let text = t::text_of(m.get("content"), i, None)?;
                if !text.is_empty() {
                    system.push(json!({ "text": text }));
                }
                continue;
            }
            "user" => ("user", content_blocks(m.get("content"), i)?),
            "assistant" => {
                let mut blocks = content_blocks(m.get("content"), i)?;
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (j, c) in calls.iter().enumerate() {
                        let (id, name, input) = t::tool_use(c, i, j)?;
                        blocks.push(
                            json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}),
                        );
                        has_tool_blocks = true;
                    }
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = t::tool_call_id(&m, i)?;
                let text = t::text_of(m.get("content"), i, None)?;
                // A JSON object result goes as `json` (models see its structure), anything
                // else as text.
                let content = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => json!({ "json": v }),
                    _ => json!({ "text": text }),
                };
                let mut result = json!({"toolUseId": id, "content": [content]});
                if takes_tool_status(model) {
                    result["status"] = json!("success");
                }
                has_tool_blocks = true;
                ("user", vec![json!({ "toolResult": result })])
            }
            other => {
                return Err(bad(format!(
                    "'messages[{i}].role' '{other}' is not supported by provider bedrock"
                )))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    Ok(Conversation {
        system,
        first_system,
        turns: turns
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect(),
        has_tool_blocks,
    })
}

/// Converse refuses blank text blocks, so empty text is left out.
fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, EncodeError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({ "text": s })]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                if let Some(b) = content_part(p, i, j)? {
                    out.push(b);
                }
            }
            Ok(out)
        }
        Some(_) => Err(bad(format!(
            "'messages[{i}].content' must be a string or an array"
        ))),
    }
}

fn content_part(p: &Value, i: usize, j: usize) -> Result<Option<Value>, EncodeError> {
    let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => match p.get("text") {
            Some(Value::String(t)) if t.is_empty() => Ok(None),
            Some(Value::String(t)) => Ok(Some(json!({ "text": t }))),
            _ => Err(bad(format!(
                "'messages[{i}].content[{j}].text' must be a string"
            ))),
        },
        "image_url" => {
            let field = format!("messages[{i}].content[{j}].image_url.url");
            let url = t::image_url(p, i, j)?;
            let Some((media, data)) = t::data_url(url) else {
                return Err(bad(format!(
                    "'{field}': provider bedrock takes images only as base64 data URLs (the Converse API does not fetch remote images)"
                )));
            };
            let format = match media {
                "image/png" => "png",
                "image/jpeg" | "image/jpg" => "jpeg",
                "image/gif" => "gif",
                "image/webp" => "webp",
                other => {
                    return Err(bad(format!(
                        "'{field}': image type '{other}' is not supported by provider bedrock (png, jpeg, gif, webp)"
                    )))
                }
            };
            Ok(Some(
                json!({"image": {"format": format, "source": {"bytes": data}}}),
            ))
        }
        other => Err(bad(format!(
            "'messages[{i}].content[{j}].type' '{other}' is not supported by provider bedrock"
        ))),
    }
}

/// Converse's `stopReason` as an OpenAI `finish_reason`.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// Converse usage → OpenAI usage. Like Anthropic's, Bedrock's `inputTokens` leaves out
/// the cached input, which OpenAI's `prompt_tokens` includes (the read part is also
/// `cached_tokens`).
pub fn usage(u: &Value) -> Option<Usage> {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    if n("inputTokens").is_none() && n("outputTokens").is_none() {
        return None;
    }
    let read = n("cacheReadInputTokens").unwrap_or(0);
    let prompt = n("inputTokens").unwrap_or(0) + read + n("cacheWriteInputTokens").unwrap_or(0);
    let completion = n("outputTokens").unwrap_or(0);
    Some(Usage {
        search_units: None,
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        cached_tokens: (read > 0).then_some(read),
        reasoning_tokens: None,
    })
}

fn chat_id(ex: &Asked<'_>) -> String {
    format!("chatcmpl-{}", ex.request_id)
}

/// A Converse answer as an OpenAI `chat.completion`.
pub fn decode_chat(body: &[u8], created: u64, ex: &Asked<'_>) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let content = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or("response has no 'output.message.content'")?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in content {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(u) = block.get("toolUse") {
            calls.push(t::openai_tool_call(
                u.get("toolUseId"),
                u.get("name"),
                t::arguments_string(u.get("input")),
            ));
        }
    }
    let usage = v.get("usage").and_then(usage);
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let finish = v
        .get("stopReason")
        .and_then(Value::as_str)
        .map(finish_reason)
        .unwrap_or("stop");
    let mut out = json!({
        "id": chat_id(ex),
        "object": "chat.completion",
        "created": created,
        "model": ex.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(u) = &usage {
        out["usage"] = u.openai_json();
    }
    let body = serde_json::to_vec(&out).map_err(|e| e.to_string())?;
    // No model in the answer: the log keeps the requested one.
    Ok(Decoded {
        body,
        usage,
        model: None,
    })
}

/// The texts of an OpenAI embeddings `input` (a string or strings; token arrays cannot be
/// sent to Bedrock's text models).
fn embedding_texts(body: &BodyView<'_>) -> Result<Vec<String>, EncodeError> {
    let input: Value = body
        .raw("input")
        .and_then(|r| serde_json::from_str(r).ok())
        .ok_or_else(|| bad("'input' is required"))?;
    match input {
        Value::String(s) => Ok(vec![s]),
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => Ok(a
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()),
        _ => Err(bad(
            "'input': provider bedrock embeds a string or an array of strings",
        )),
    }
}

/// An OpenAI embeddings request as an InvokeModel body for Amazon Titan text embeddings
/// (one text per request; `dimensions`, `model.options.bedrock.embeddings_normalize`) or
/// Cohere Embed on Bedrock (`texts`, `input_type` from `model.options.cohere`).
pub fn encode_embeddings(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Vec<u8>, EncodeError> {
    let model = e
        .model
        .ok_or_else(|| bad("model parameter not found in request, nor in gateway configuration"))?;
    let texts = embedding_texts(body)?;
    if let Some(enc) = body.str("encoding_format") {
        if enc != "float" {
            return Err(bad(format!(
                "'encoding_format' '{enc}' is not supported by provider bedrock (float only)"
            )));
        }
    }
    let dimensions = body
        .raw("dimensions")
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .filter(|v| !v.is_null());
    let out = if model.contains("titan-embed") {
        let [text] = texts.as_slice() else {
            return Err(bad(format!(
                "'input': provider bedrock's Amazon Titan embeddings take one text per request, got {}",
                texts.len()
            )));
        };
        let mut o = json!({ "inputText": text });
        if let Some(d) = dimensions {
            o["dimensions"] = d;
        }
        if e.options
            .bedrock
            .as_ref()
            .is_some_and(|b| b.embeddings_normalize)
        {
            o["normalize"] = json!(true);
        }
        o
    } else if model.contains("cohere.embed") {
        if dimensions.is_some() {
            return Err(bad(
                "'dimensions' is not supported by Cohere Embed on provider bedrock",
            ));
        }
        let input_type = e
            .options
            .cohere
            .as_ref()
            .and_then(|c| c.embedding_input_type)
            .map(|t| t.as_str())
            .unwrap_or("search_document");
        json!({"texts": texts, "input_type": input_type, "embedding_types": ["float"]})
    } else {
        return Err(bad(format!(
            "'model': provider bedrock translates embeddings for Amazon Titan (amazon.titan-embed-*) and Cohere Embed (cohere.embed-*) models, not '{model}'"
        )));
    };
    serde_json::to_vec(&out).map_err(|e| bad(e.to_string()))
}

/// An InvokeModel embeddings answer (Titan or Cohere) as an OpenAI embedding list. Cohere's
/// answer carries no token count (Bedrock sends it in a header): the prompt tokens are then
/// estimated as ceil(characters / 4) of the request's texts.
pub fn decode_embeddings(body: &[u8], asked: &Asked<'_>) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let (vectors, tokens): (Vec<Value>, Option<u64>) = if let Some(e) = v.get("embedding") {
        (
            vec![e.clone()],
            v.get("inputTextTokenCount").and_then(Value::as_u64),
        )
    } else {
        let e = v
            .get("embeddings")
            .ok_or("response has no 'embedding' or 'embeddings'")?;
        // `embedding_types` answers nest the vectors under their type.
        let list = e.get("float").unwrap_or(e);
        let list = list.as_array().ok_or("'embeddings' is not a list")?;
        (list.clone(), None)
    };
    let prompt = tokens.unwrap_or_else(|| {
        let request: Value = serde_json::from_slice(asked.request).unwrap_or(Value::Null);
        let count = |t: &Value| (t.as_str().unwrap_or("").chars().count() as u64).div_ceil(4);
        match request.get("input") {
            Some(Value::Array(a)) => a.iter().map(count).sum(),
            Some(t) => count(t),
            None => 0,
        }
    });
    let usage = Usage {
        prompt_tokens: prompt,
        total_tokens: prompt,
        ..Usage::default()
    };
    let model = asked.model.map(str::to_string);
    let body = t::embedding_list(vectors, model.as_deref(), Some(&usage))?;
    Ok(Decoded {
        body,
        usage: Some(usage),
        model,
    })
}

/// Usage of a Converse answer, for the log of a native (untranslated) route; Converse
/// answers name no model.
pub fn read_usage(body: &[u8]) -> (Option<Usage>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    (v.get("usage").and_then(usage), None)
}

/// The OpenAI error type for an AWS error.
fn error_type(status: u16, aws_type: &str) -> &'static str {
    match (status, aws_type) {
        (_, "AccessDeniedException") => "permission_error",
        (401 | 403, _) => "authentication_error",
        (429, _) => "rate_limit_error",
        (400..=499, _) if aws_type != "ModelErrorException" => "invalid_request_error",
        _ => "server_error",
    }
}

/// The AWS error name for a status, when neither the header nor the body gives one.
fn default_aws_type(status: u16) -> &'static str {
    match status {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// A Bedrock error (`{"message": …}` with the error name in `x-amzn-errortype`) in
/// OpenAI's shape; None when the body is not one.
pub fn decode_error(status: u16, headers: &HeaderMap, body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let message = v
        .get("message")
        .or_else(|| v.get("Message"))
        .and_then(Value::as_str)?;
    // `x-amzn-errortype: InvalidSignatureException:http://internal.amazon.com/…`, or a
    // `__type` of `com.amazon.bedrock#ValidationException` in the body.
    let aws_type = headers
        .get("x-amzn-errortype")
        .and_then(|h| h.to_str().ok())
        .map(|t| t.split(':').next().unwrap_or(t))
        .or_else(|| {
            v.get("__type")
                .and_then(Value::as_str)
                .map(|t| t.rsplit('#').next().unwrap_or(t))
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| default_aws_type(status));
    serde_json::to_vec(&json!({"error": {
        "message": message,
        "type": error_type(status, aws_type),
        "param": null,
        "code": aws_type,
    }}))
    .ok()
}

/// The OpenAI error type for a ConverseStream exception (`throttlingException`, …).
fn stream_error_type(exception: &str) -> &'static str {
    match exception {
        "throttlingException" | "serviceUnavailableException" => "rate_limit_error",
        "validationException" => "invalid_request_error",
        _ => "server_error",
    }
}

/// ConverseStream's event stream → OpenAI `chat.completion.chunk` events, one upstream
/// chunk at a time. A stream is complete at its `metadata` event (usage chunk, then
/// `[DONE]`); one that ends right after `messageStop` still has the whole answer, so it
/// gets `[DONE]` without usage and counts as complete. A cut or corrupt stream, or an
/// exception event, is not complete: the caller adds its error event.
///
/// The binary event stream keeps its own framer rather than [`crate::llm::framing`]'s: its
/// frames can be corrupt (CRC), which ends the mapping with an error event, and a body cut
/// inside a frame is what makes the stream incomplete, neither of which a text framing has.
#[derive(Debug, Default)]
pub struct StreamMapper {
    decoder: Decoder,
    /// Converse names no model: `null` in the chunks when the request named none either.
    chunks: Chunks<String, Option<String>>,
    /// Content block index → tool call index (OpenAI numbers tool calls from 0).
    tool_index: Vec<(u64, u64)>,
    stopped: bool,
    done: bool,
    /// A corrupt frame or an exception: nothing more is mapped.
    failed: bool,
}

impl StreamMapper {
    /// A mapper stamping chunks with `created` and the exchange's model and id.
    pub fn new(created: u64, ex: &Asked<'_>) -> Self {
        StreamMapper {
            chunks: Chunks {
                id: chat_id(ex),
                model: ex.model.map(str::to_string),
                created,
            },
            ..Default::default()
        }
    }

    /// Maps the complete messages in `chunk`; an unfinished one waits for the next chunk.
    pub fn on_chunk(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.failed || self.done {
            return;
        }
        let mut messages = Vec::new();
        let result = self.decoder.push(chunk, &mut messages);
        for m in &messages {
            if !self.failed && !self.done {
                self.on_message(m, out);
            }
        }
        if let Err(e) = result {
            if !self.failed && !self.done {
                self.failed = true;
                self.chunks.error(
                    &format!("The upstream event stream is corrupt: {e}"),
                    "upstream_stream_corrupt",
                    out,
                );
            }
        }
    }

    /// At the end of the upstream body: whether the stream was complete.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        if self.failed || self.decoder.has_partial() {
            return false;
        }
        if !self.done && self.stopped {
            self.chunks.end(None, out);
            self.done = true;
        }
        self.done
    }

    fn on_message(&mut self, m: &Message, out: &mut Vec<u8>) {
        match m.header_str(":message-type").unwrap_or("event") {
            "event" => {}
            "exception" => {
                let kind = m.header_str(":exception-type").unwrap_or("exception");
                let message = serde_json::from_slice::<Value>(&m.payload)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| "upstream error".into());
                t::error_event(&message, stream_error_type(kind), kind, out);
                self.failed = true;
                return;
            }
            "error" => {
                let code = m.header_str(":error-code").unwrap_or("error");
                let message = m.header_str(":error-message").unwrap_or("upstream error");
                self.chunks.error(message, code, out);
                self.failed = true;
                return;
            }
            _ => return,
        }
        let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else {
            return;
        };
        let index = v
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match m.header_str(":event-type").unwrap_or("") {
            "messageStart" => {
                self.chunks
                    .delta(json!({"role": "assistant", "content": ""}), None, out)
            }
            "contentBlockStart" => {
                if let Some(tu) = v.pointer("/start/toolUse") {
                    let ti = self.tool_index.len() as u64;
                    self.tool_index.push((index, ti));
                    self.chunks.delta(
                        t::tool_call_start(ti, tu.get("toolUseId"), tu.get("name"), ""),
                        None,
                        out,
                    );
                }
            }
            "contentBlockDelta" => {
                let d = v.get("delta");
                if let Some(t) = d.and_then(|d| d.get("text")).and_then(Value::as_str) {
                    self.chunks.delta(json!({ "content": t }), None, out);
                } else if let Some(p) = d
                    .and_then(|d| d.pointer("/toolUse/input"))
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                {
                    let ti = self
                        .tool_index
                        .iter()
                        .find(|(b, _)| *b == index)
                        .map(|(_, t)| *t)
                        .unwrap_or(0);
                    self.chunks.delta(t::tool_call_arguments(ti, p), None, out);
                }
            }
            "messageStop" => {
                let stop = v.get("stopReason").and_then(Value::as_str).unwrap_or("");
                self.chunks.delta(json!({}), Some(finish_reason(stop)), out);
                self.stopped = true;
            }
            "metadata" => {
                let u = v.get("usage").and_then(usage);
                self.chunks.end(u.as_ref(), out);
                self.done = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::plugins::{BedrockOptions, ModelOptions};
    use mock_llm::eventstream;

    const EX: Asked<'static> = Asked {
        model: Some("amazon.nova-pro-v1:0"),
        request: b"",
        request_id: "rid",
    };

    fn encode_with(v: Value, model: &str, options: &ModelOptions) -> Result<Value, String> {
        let text = v.to_string();
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

    fn encode(v: Value) -> Result<Value, String> {
        encode_with(v, "meta.llama3-70b-instruct-v1:0", &ModelOptions::default())
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    #[test]
    fn native_paths_name_the_model_and_method() {
        assert_eq!(
            native_call("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
            Some(("anthropic.claude-3-haiku-20240307-v1:0".into(), false))
        );
        assert_eq!(
            native_call("/bedrock/model/amazon.nova-lite-v1:0/converse-stream/"),
            Some(("amazon.nova-lite-v1:0".into(), true))
        );
        assert_eq!(
            native_call(
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.m/converse"
            ),
            Some((
                "arn:aws:bedrock:us-east-1:1:inference-profile/us.m".into(),
                false
            ))
        );
        for bad in [
            "/model//converse",
            "/model/m/invoke",
            "/v1/chat/completions",
            "/model/a%2Fb/converse",
        ] {
            assert_eq!(native_call(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths_encode_the_model_like_aws_sdks() {
        assert_eq!(
            request_path(
                MODEL_PREFIX,
                "anthropic.claude-3-haiku-20240307-v1:0",
                false
            ),
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
        assert_eq!(
            request_path(
                "/model/",
                "arn:aws:bedrock:us-east-1:123:inference-profile/us.x_y~z",
                true
            ),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fus.x_y~z/converse-stream"
        );
    }

    #[test]
    fn tool_results_take_status_only_where_bedrock_allows_it() {
        let body = json!({"messages": [
            user("q"),
            {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function",
                "function": {"name": "f", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "[1, 2]"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]});
        let out = encode(body.clone()).unwrap();
        assert_eq!(
            out["messages"][2]["content"][0],
            json!({"toolResult": {"toolUseId": "t1", "content": [{"text": "[1, 2]"}]}}),
            "no status for Llama; a JSON array is sent as text"
        );
        assert_eq!(
            out["messages"][1]["content"][0]["toolUse"]["input"],
            json!({})
        );
        assert_eq!(
            out["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"],
            json!({"type": "object", "properties": {}})
        );
        let nova = encode_with(body, "amazon.nova-pro-v1:0", &ModelOptions::default()).unwrap();
        assert_eq!(
            nova["messages"][2]["content"][0]["toolResult"]["status"],
            "success"
        );
    }

    #[test]
    fn tool_choice_none_drops_tools_unless_the_conversation_needs_them() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let out = encode(json!({"messages": [user("q")], "tools": tools, "tool_choice": "none"}))
            .unwrap();
        assert!(out.get("toolConfig").is_none());
        let e = encode(json!({"messages": [user("q"),
            {"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t", "content": "x"}],
            "tools": tools, "tool_choice": "none"}))
        .unwrap_err();
        assert!(e.contains("'tool_choice'") && e.contains("bedrock"), "{e}");
        let out = encode(json!({"messages": [user("q")], "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "f"}}}))
        .unwrap();
        assert_eq!(
            out["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "f"}})
        );
        assert!(encode(json!({"messages": [user("q")], "tool_choice": "auto"})).is_err());
    }

    #[test]
    fn options_fill_gaps_and_client_fields_pass() {
        let options = ModelOptions {
            max_tokens: Some(100),
            temperature: Some(0.3),
            top_k: Some(5),
            bedrock: Some(BedrockOptions {
                performance_config_latency: Some("optimized".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let out = encode_with(
            json!({"messages": [user("q")], "temperature": 0.9,
                "bedrock": {"additionalModelRequestFields": {"reasoning": true},
                            "guardrailConfig": {"guardrailIdentifier": "g", "guardrailVersion": "1"},
                            "performanceConfig": {"latency": "standard"}}}),
            "m",
            &options,
        )
        .unwrap();
        assert_eq!(
            out["inferenceConfig"],
            json!({"maxTokens": 100, "temperature": 0.9})
        );
        assert_eq!(
            out["additionalModelRequestFields"],
            json!({"top_k": 5, "reasoning": true})
        );
        assert_eq!(out["guardrailConfig"]["guardrailIdentifier"], "g");
        assert_eq!(out["performanceConfig"], json!({"latency": "optimized"}));
        // Kong's top-level guardrailConfig.
        let g =
            json!({"guardrailIdentifier": "top", "guardrailVersion": "DRAFT", "trace": "enabled"});
        let out = encode(json!({"messages": [user("q")], "guardrailConfig": g})).unwrap();
        assert_eq!(out["guardrailConfig"], g);
        assert!(encode(json!({"messages": [user("q")], "guardrailConfig": "g"})).is_err());
        let e = encode(json!({"messages": [user("q")], "bedrock": {"modelId": "x"}})).unwrap_err();
        assert!(e.contains("'bedrock.modelId'"), "{e}");
    }

    #[test]
    fn refusals_name_the_field() {
        for (body, field) in [
            (
                json!({"messages": [{"role": "function", "content": "x"}]}),
                "'messages[0].role'",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url",
                "image_url": {"url": "data:image/bmp;base64,AA"}}]}]}),
                "image type 'image/bmp'",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "'messages[0].content[0].type'",
            ),
            (json!({"messages": [user("q")], "stop": 3}), "'stop'"),
            (
                json!({"messages": [user("q")], "response_format": {"type": "json_schema"}}),
                "no JSON mode",
            ),
        ] {
            let e = encode(body).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
        for model in [
            "amazon.titan-text-premier-v1:0",
            "cohere.command-light-text-v14",
            "mistral.mixtral-8x7b-instruct-v0:1",
        ] {
            let body = json!({"messages": [user("q"), {"role": "system", "content": "s"}]});
            let e = encode_with(body, model, &ModelOptions::default()).unwrap_err();
            assert!(e.starts_with("'messages[1]'") && e.contains(model), "{e}");
        }
        let ok = encode_with(
            json!({"messages": [{"role": "system", "content": "s"}, user("q")]}),
            "mistral.mistral-large-2402-v1:0",
            &ModelOptions::default(),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn decodes_answers_and_errors() {
        let d = decode_chat(
            br#"{"output":{"message":{"role":"assistant","content":[{"text":"a"},{"text":"b"}]}},
                "stopReason":"guardrail_intervened","usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5}}"#,
            7,
            &EX,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(v["id"], "chatcmpl-rid");
        assert_eq!(v["model"], "amazon.nova-pro-v1:0");
        assert_eq!(v["choices"][0]["message"]["content"], "ab");
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(d.usage.map(|u| u.total_tokens), Some(5));
        assert!(d.model.is_none());
        assert!(decode_chat(b"{}", 7, &EX).is_err());
        assert!(decode_chat(b"nope", 7, &EX).is_err());

        let mut h = HeaderMap::new();
        h.insert(
            "x-amzn-errortype",
            "UnrecognizedClientException:http://internal.amazon.com/coral/com.amazon.coral.service/"
                .parse()
                .unwrap(),
        );
        let e: Value = serde_json::from_slice(
            &decode_error(
                403,
                &h,
                br#"{"message":"The security token included in the request is invalid."}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(e["error"]["type"], "authentication_error");
        assert_eq!(e["error"]["code"], "UnrecognizedClientException");
        let e: Value = serde_json::from_slice(
            &decode_error(
                400,
                &HeaderMap::new(),
                br#"{"__type":"com.amazon.bedrock#ValidationException","Message":"bad"}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (e["error"]["type"].as_str(), e["error"]["code"].as_str()),
            (Some("invalid_request_error"), Some("ValidationException"))
        );
        let e: Value = serde_json::from_slice(
            &decode_error(503, &HeaderMap::new(), br#"{"message":"x"}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(e["error"]["code"], "ServiceUnavailableException");
        assert_eq!(e["error"]["type"], "server_error");
        assert!(decode_error(500, &HeaderMap::new(), b"<html>").is_none());
        assert_eq!(
            read_usage(br#"{"usage":{"inputTokens":1,"outputTokens":1}}"#)
                .0
                .map(|u| u.total_tokens),
            Some(2)
        );
    }

    fn event(kind: &str, payload: Value) -> Vec<u8> {
        eventstream::event(kind, payload.to_string().as_bytes())
    }

    fn map(stream: &[u8]) -> (String, bool) {
        let mut m = StreamMapper::new(1, &EX);
        let mut out = Vec::new();
        m.on_chunk(stream, &mut out);
        let done = m.finish(&mut out);
        (String::from_utf8(out).unwrap(), done)
    }

    #[test]
    fn stream_ends_and_failures() {
        let start = event("messageStart", json!({"role": "assistant"}));
        let text = event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "hi"}}),
        );
        let stop = event("messageStop", json!({"stopReason": "max_tokens"}));
        let meta = event(
            "metadata",
            json!({"usage": {"inputTokens": 2, "outputTokens": 1, "totalTokens": 3}}),
        );

        let (out, done) = map(&[start.clone(), text.clone(), stop.clone(), meta].concat());
        assert!(done && out.ends_with("data: [DONE]\n\n"), "{out}");
        assert!(out.contains(r#""finish_reason":"length""#) && out.contains(r#""total_tokens":3"#));

        // The whole answer but no metadata: complete, without usage.
        let (out, done) = map(&[start.clone(), text.clone(), stop].concat());
        assert!(
            done && out.ends_with("data: [DONE]\n\n") && !out.contains("usage"),
            "{out}"
        );

        // Cut inside a message (the body ended cleanly): not complete, no [DONE].
        let cut = [start.clone(), text.clone()].concat();
        let (out, done) = map(&cut[..cut.len() - 5]);
        assert!(
            !done && !out.contains("[DONE]") && out.contains("assistant"),
            "{out}"
        );

        // An exception in the stream becomes an error event.
        let exc = eventstream::exception("throttlingException", "Too many tokens, please wait.");
        let (out, done) = map(&[start.clone(), exc, text.clone()].concat());
        assert!(!done, "{out}");
        assert!(out.contains(r#""error":{"message":"Too many tokens, please wait.","type":"rate_limit_error","code":"throttlingException"}"#), "{out}");
        assert!(
            !out.contains(r#""content":"hi""#),
            "nothing is mapped after the exception"
        );

        // A corrupt frame: an error event, and nothing after it.
        let mut bad = text.clone();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        let (out, done) = map(&[start, bad, text].concat());
        assert!(!done && out.contains("upstream_stream_corrupt"), "{out}");
        assert!(!out.contains(r#""content":"hi""#));
    }

    #[test]
    fn usage_counts_cached_input_as_prompt() {
        let u = usage(
            &json!({"inputTokens": 10, "outputTokens": 5, "totalTokens": 45,
            "cacheReadInputTokens": 20, "cacheWriteInputTokens": 10}),
        )
        .unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.total_tokens,
                u.cached_tokens
            ),
            (40, 5, 45, Some(20))
        );
        assert!(usage(&json!({})).is_none());
    }
}

//! The Anthropic Messages dialect: OpenAI chat requests encoded as `/v1/messages` bodies,
//! Anthropic answers, errors and event streams decoded back into OpenAI shapes.
//! Field mappings follow spec §5.2/§5.3; where Kong passes Anthropic values through
//! (finish reasons), the OpenAI values are used, since OpenAI clients validate them.

use serde_json::{json, Map, Value};

use crate::llm::body::BodyView;
use crate::llm::framing::{Framed, MapEvents};
use crate::llm::sse;
use crate::llm::translate::{self as t, bad, field, Chunks, ToolChoice};
use crate::llm::usage::Usage;
use crate::llm::{Decoded, Encode, EncodeError};

/// Anthropic's public endpoint.
pub const DEFAULT_BASE: (&str, &str, u16) = ("https", "api.anthropic.com", 443);
/// The Messages API path.
pub const MESSAGES_PATH: &str = "/v1/messages";
/// Anthropic requires `max_tokens`; used when neither the request nor the config sets it.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// An OpenAI chat body as a Messages API body.
pub fn encode_chat(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(t::model(body, e)?));

    let (system, turns) = encode_messages(t::messages(body)?)?;
    if let Some(s) = system {
        out.insert("system".into(), s);
    }
    out.insert("messages".into(), Value::Array(turns));

    let max_tokens = t::max_tokens(body, e)?;
    out.insert(
        "max_tokens".into(),
        json!(max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    // `top_k` is Anthropic's own parameter: the client may send it, config fills the gap.
    let o = e.options;
    for (k, conf) in [
        ("temperature", o.temperature.map(|v| json!(v))),
        ("top_p", o.top_p.map(|v| json!(v))),
        ("top_k", o.top_k.map(|v| json!(v))),
    ] {
        if let Some(v) = t::sampling(body, k, conf)? {
            out.insert(k.into(), v);
        }
    }
    if let Some(s) = t::stop(body)? {
        out.insert("stop_sequences".into(), Value::Array(s));
    }
    t::only_one_choice(body, "anthropic")?;
    if let Some(rf) = field(body, "response_format")? {
        let kind = rf.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "text" {
            return Err(bad(format!(
                "'response_format' type '{kind}' is not supported by provider anthropic"
            )));
        }
    }
    if let Some(user) = field(body, "user")? {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    if let Some(tools) = field(body, "tools")? {
        let tools = t::function_tools(&tools, "anthropic")?
            .into_iter()
            .map(|f| f.declaration("input_schema", |p| Some(t::schema_or_empty(p))))
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    let parallel = field(body, "parallel_tool_calls")?.and_then(|v| v.as_bool());
    if let Some(tc) = field(body, "tool_choice")? {
        let mut choice = match t::tool_choice(&tc)? {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
        };
        if parallel == Some(false) {
            if let Some(o) = choice.as_object_mut() {
                o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
            }
        }
        out.insert("tool_choice".into(), choice);
    } else if parallel == Some(false) && out.contains_key("tools") {
        out.insert(
            "tool_choice".into(),
            json!({"type": "auto", "disable_parallel_tool_use": true}),
        );
    }
    if e.stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    if let Some((k, v)) = e.body_param {
        out.insert(k.into(), Value::String(v.into()));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))
}

/// System messages joined into `system`; the rest as alternating turns, with tool results
/// as user turns and consecutive same-role turns merged (Anthropic wants all results of one
/// assistant turn in the next user turn).
fn encode_messages(messages: Vec<Value>) -> Result<(Option<Value>, Vec<Value>), EncodeError> {
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, m) in messages.into_iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("'messages[{i}].role' is required")))?
            .to_string();
        let (role, blocks) = match role.as_str() {
            "system" | "developer" => {
                system.push(t::text_of(m.get("content"), i, None)?);
                continue;
            }
            "user" => ("user", content_blocks(m.get("content"), i)?),
            "assistant" => {
                let mut blocks = match m.get("content") {
                    None | Some(Value::Null) => Vec::new(),
                    c => content_blocks(c, i)?,
                };
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (j, c) in calls.iter().enumerate() {
                        let (id, name, input) = t::tool_use(c, i, j)?;
                        blocks.push(
                            json!({"type": "tool_use", "id": id, "name": name, "input": input}),
                        );
                    }
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = t::tool_call_id(&m, i)?;
                let content = t::text_of(m.get("content"), i, None)?;
                (
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})],
                )
            }
            other => {
                return Err(bad(format!(
                    "'messages[{i}].role' '{other}' is not supported by provider anthropic"
                )))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, b)) if r == role => b.extend(blocks),
            _ => turns.push((role.to_string(), blocks)),
        }
    }
    let system = (!system.is_empty()).then(|| Value::String(system.join("\n")));
    let turns = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, turns))
}

fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, EncodeError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
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
    match kind {
        "text" => {
            Ok(json!({"type": "text", "text": p.get("text").cloned().unwrap_or(Value::Null)}))
        }
        "image_url" => {
            let url = t::image_url(p, i, j)?;
            Ok(match t::data_url(url) {
                Some((media, data)) => {
                    json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
                }
                None => json!({"type": "image", "source": {"type": "url", "url": url}}),
            })
        }
        other => Err(bad(format!(
            "'messages[{i}].content[{j}].type' '{other}' is not supported by provider anthropic"
        ))),
    }
}

/// Anthropic's `stop_reason` as an OpenAI `finish_reason`.
pub fn finish_reason(stop: &str) -> &str {
    match stop {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
}

/// Anthropic usage → OpenAI usage. Anthropic's `input_tokens` leaves out cached input;
/// OpenAI's `prompt_tokens` includes it, with the cached part in `cached_tokens`.
pub fn usage(u: &Value) -> Option<Usage> {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    if n("input_tokens").is_none() && n("output_tokens").is_none() {
        return None;
    }
    let read = n("cache_read_input_tokens").unwrap_or(0);
    let prompt =
        n("input_tokens").unwrap_or(0) + read + n("cache_creation_input_tokens").unwrap_or(0);
    let completion = n("output_tokens").unwrap_or(0);
    Some(Usage {
        search_units: None,
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        cached_tokens: (read > 0).then_some(read),
        reasoning_tokens: None,
    })
}

/// A Messages API answer as an OpenAI `chat.completion`.
pub fn decode_chat(body: &[u8], created: u64) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let content = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or("response has no 'content'")?;
    let mut text: Vec<&str> = Vec::new();
    let mut calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.extend(block.get("text").and_then(Value::as_str)),
            Some("tool_use") => calls.push(t::openai_tool_call(
                block.get("id"),
                block.get("name"),
                t::arguments_string(block.get("input")),
            )),
            _ => {}
        }
    }
    let model = v.get("model").and_then(Value::as_str).map(str::to_string);
    let usage = v.get("usage").and_then(usage);
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text.join("\n")) },
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let finish = v
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(finish_reason)
        .unwrap_or("stop");
    let mut out = json!({
        "id": v.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(u) = &usage {
        out["usage"] = u.openai_json();
    }
    let body = serde_json::to_vec(&out).map_err(|e| e.to_string())?;
    Ok(Decoded { body, usage, model })
}

/// Usage and model of a Messages API answer, for the log of a native (untranslated) route.
pub fn read_usage(body: &[u8]) -> (Option<Usage>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let model = v.get("model").and_then(Value::as_str).map(str::to_string);
    (v.get("usage").and_then(usage), model)
}

/// An Anthropic error body (`{"type":"error","error":{"type","message"}}`) in OpenAI's shape;
/// None when the body is not one.
pub fn decode_error(body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let message = e.get("message").and_then(Value::as_str)?;
    let kind = e.get("type").and_then(Value::as_str).unwrap_or("api_error");
    serde_json::to_vec(
        &json!({"error": {"message": message, "type": kind, "param": null, "code": kind}}),
    )
    .ok()
}

/// Anthropic's event stream → OpenAI `chat.completion.chunk` events, one upstream chunk at a
/// time. Always ends with a usage chunk and `[DONE]`; the observer behind it strips the usage
/// chunk when the client did not ask for it.
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

/// One Anthropic event at a time (see [`StreamMapper`]).
#[derive(Debug, Default)]
pub struct EventMapper {
    chunks: Chunks,
    /// Content block index → tool call index (OpenAI numbers tool calls from 0).
    tool_index: Vec<(u64, u64)>,
    usage: Option<Value>,
    done: bool,
}

impl MapEvents for EventMapper {
    type Framing = sse::Framer;

    fn on_event(&mut self, ev: &sse::Event, out: &mut Vec<u8>) {
        let Ok(v) = serde_json::from_slice::<Value>(&ev.data) else {
            return;
        };
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message_start" => {
                let m = v.get("message");
                let s = |k: &str| {
                    m.and_then(|m| m.get(k))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                self.chunks.id = s("id");
                self.chunks.model = s("model");
                self.usage = m.and_then(|m| m.get("usage")).cloned();
                self.chunks
                    .delta(json!({"role": "assistant", "content": ""}), None, out);
            }
            "content_block_start" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = v.get("content_block");
                match block.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("tool_use") => {
                        let ti = self.tool_index.len() as u64;
                        self.tool_index.push((index, ti));
                        let b = block.unwrap_or(&Value::Null);
                        self.chunks.delta(
                            t::tool_call_start(ti, b.get("id"), b.get("name"), ""),
                            None,
                            out,
                        );
                    }
                    Some("text") => {
                        if let Some(t) = block
                            .and_then(|b| b.get("text"))
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            self.chunks.delta(json!({ "content": t }), None, out);
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let d = v.get("delta");
                match d.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = d
                            .and_then(|d| d.get("text"))
                            .cloned()
                            .unwrap_or(Value::Null);
                        self.chunks.delta(json!({ "content": t }), None, out);
                    }
                    Some("input_json_delta") => {
                        let ti = self
                            .tool_index
                            .iter()
                            .find(|(b, _)| *b == index)
                            .map(|(_, t)| *t)
                            .unwrap_or(0);
                        let p = d
                            .and_then(|d| d.get("partial_json"))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if p.is_empty() {
                            return;
                        }
                        self.chunks.delta(t::tool_call_arguments(ti, p), None, out);
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage").and_then(Value::as_object) {
                    let merged = self.usage.get_or_insert_with(|| json!({}));
                    if let Some(m) = merged.as_object_mut() {
                        for (k, val) in u {
                            if !val.is_null() {
                                m.insert(k.clone(), val.clone());
                            }
                        }
                    }
                }
                if let Some(stop) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.chunks.delta(json!({}), Some(finish_reason(stop)), out);
                }
            }
            "message_stop" => {
                let u = self.usage.as_ref().and_then(usage);
                self.chunks.end(u.as_ref(), out);
                self.done = true;
            }
            "error" => {
                let e = v.get("error");
                let message = e
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error");
                let code = e
                    .and_then(|e| e.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                t::error_event(message, code, code, out);
            }
            _ => {}
        }
    }

    /// True once `message_stop` was seen.
    fn end(&mut self, _out: &mut Vec<u8>) -> bool {
        self.done
    }
}

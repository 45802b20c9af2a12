//! Anthropic's Messages API on providers that only have chat (Claude Code and other
//! Anthropic clients on `llm_format: anthropic` routes with any target): a Messages request
//! becomes an OpenAI chat request, which the target's dialect then encodes as usual, and the
//! chat answer or chunk stream becomes a Message object or Messages events. Pure functions.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::llm::body::{kind_name, BodyView};
use crate::llm::framing::{Framed, MapEvents};
use crate::llm::sse;
use crate::llm::translate::{bad, chat_chunk, field, ChatChunk};
use crate::llm::usage::Usage;
use crate::llm::EncodeError;

/// A Messages request as a chat request, with what the answer needs to echo.
pub struct ChatRequest {
    /// The OpenAI chat body.
    pub body: Vec<u8>,
    pub meta: Arc<Meta>,
}

/// What a Message object repeats from its request.
#[derive(Debug, Default)]
pub struct Meta {
    /// The message id (`msg_…`).
    pub id: String,
    /// The client's model, named in the answer when the provider's answer names none.
    pub model: Option<String>,
    /// The client's `stop_sequences`: a chat `stop` finish names one of them only when
    /// there is exactly one (chat answers do not say which matched).
    pub stop_sequences: Vec<String>,
}

/// A new message id.
pub fn new_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// Translates a Messages body (`stream`: the answer streams, `response_streaming` applied).
pub fn to_chat(body: &BodyView<'_>, stream: bool) -> Result<ChatRequest, EncodeError> {
    let mut out = Map::new();
    let model = body.str("model").map(|m| m.into_owned());
    if let Some(m) = &model {
        out.insert("model".into(), json!(m));
    }
    let mut messages = Vec::new();
    if let Some(s) = field(body, "system")? {
        messages.push(json!({"role": "system", "content": system_text(&s)?}));
    }
    match field(body, "messages")? {
        Some(Value::Array(turns)) => {
            for (i, m) in turns.iter().enumerate() {
                turn(m, i, &mut messages)?;
            }
        }
        Some(other) => {
            return Err(bad(format!(
                "messages: Input should be a valid list, not {}",
                kind_name(&other)
            )))
        }
        None => return Err(bad("messages: Field required")),
    }
    if !messages.iter().any(|m| m["role"] != "system") {
        return Err(bad("messages: at least one message is required"));
    }
    out.insert("messages".into(), Value::Array(messages));
    match field(body, "max_tokens")? {
        Some(v @ Value::Number(_)) if v.as_u64().is_some_and(|n| n > 0) => {
            out.insert("max_tokens".into(), v);
        }
        Some(_) => return Err(bad("max_tokens: Input should be a positive integer")),
        // Anthropic requires it; chat providers have their own default.
        None => {}
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = field(body, k)? {
            if !v.is_number() {
                return Err(bad(format!("{k}: Input should be a valid number")));
            }
            out.insert(k.into(), v);
        }
    }
    let mut stop_sequences = Vec::new();
    if let Some(s) = field(body, "stop_sequences")? {
        let Some(list) = s.as_array() else {
            return Err(bad("stop_sequences: Input should be a valid list"));
        };
        for (i, v) in list.iter().enumerate() {
            let s = v.as_str().ok_or_else(|| {
                bad(format!(
                    "stop_sequences.{i}: Input should be a valid string"
                ))
            })?;
            stop_sequences.push(s.to_string());
        }
        if !stop_sequences.is_empty() {
            out.insert("stop".into(), json!(stop_sequences));
        }
    }
    tools(body, &mut out)?;
    out.insert("stream".into(), json!(stream));
    if stream {
        // The usage of the last chunk feeds `message_delta`.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let body = serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))?;
    Ok(ChatRequest {
        body,
        meta: Arc::new(Meta {
            id: new_id(),
            model,
            stop_sequences,
        }),
    })
}

/// `system`: a string, or text blocks (their `cache_control` has no chat equivalent).
fn system_text(s: &Value) -> Result<String, EncodeError> {
    match s {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (j, b) in blocks.iter().enumerate() {
                match (block_type(b), b.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => texts.push(t),
                    (Some("text"), None) => {
                        return Err(bad(format!("system.{j}.text: Field required")))
                    }
                    (other, _) => {
                        return Err(bad(format!(
                            "system.{j}.type: expected 'text', got {}",
                            shown(other)
                        )))
                    }
                }
            }
            Ok(texts.join("\n\n"))
        }
        other => Err(bad(format!(
            "system: Input should be a valid string or list of text blocks, not {}",
            kind_name(other)
        ))),
    }
}

fn block_type(b: &Value) -> Option<&str> {
    b.get("type").and_then(Value::as_str)
}

fn shown(t: Option<&str>) -> String {
    t.map(|t| format!("'{t}'")).unwrap_or_else(|| "none".into())
}

/// One Messages turn appended as chat messages: a user turn's `tool_result` blocks become
/// `tool` messages (before the rest of the turn, as chat wants them right after the call),
/// an assistant turn's `tool_use` blocks become `tool_calls`; `thinking` blocks are dropped,
/// since chat providers take no reasoning back.
fn turn(m: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), EncodeError> {
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages.{i}.role: Field required")))?;
    let content = m
        .get("content")
        .ok_or_else(|| bad(format!("messages.{i}.content: Field required")))?;
    match role {
        // Prompt decorators add chat-style system messages to the client's turns.
        "system" => {
            out.push(json!({"role": "system", "content": system_text(content)?}));
            Ok(())
        }
        "user" => user_turn(content, i, out),
        "assistant" => assistant_turn(content, i, out),
        other => Err(bad(format!(
            "messages.{i}.role: Input should be 'user' or 'assistant', not '{other}'"
        ))),
    }
}

fn blocks(content: &Value, i: usize) -> Result<&[Value], EncodeError> {
    match content {
        Value::Array(b) => Ok(b),
        other => Err(bad(format!(
            "messages.{i}.content: Input should be a valid string or list of content blocks, not {}",
            kind_name(other)
        ))),
    }
}

fn user_turn(content: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), EncodeError> {
    if let Value::String(s) = content {
        out.push(json!({"role": "user", "content": s}));
        return Ok(());
    }
    let mut parts = Vec::new();
    for (j, b) in blocks(content, i)?.iter().enumerate() {
        match block_type(b) {
            Some("text") => parts.push(json!({"type": "text", "text": text(b, i, j)?})),
            Some("image") => parts.push(image(b, i, j)?),
            Some("tool_result") => out.push(tool_result(b, i, j)?),
            Some("document") => parts.push(json!({"type": "text", "text": document(b, i, j)?})),
            other => {
                return Err(bad(format!(
                    "messages.{i}.content.{j}.type: {} cannot be translated to chat completions",
                    shown(other)
                )))
            }
        }
    }
    if !parts.is_empty() {
        // A text-only turn goes as a string: every chat provider reads that.
        let content = match parts.iter().all(|p| p["type"] == "text") {
            true => json!(parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")),
            false => Value::Array(parts),
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

fn text(b: &Value, i: usize, j: usize) -> Result<&str, EncodeError> {
    b.get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages.{i}.content.{j}.text: Field required")))
}

/// An image block as a chat `image_url` part (a base64 source as a data URL).
fn image(b: &Value, i: usize, j: usize) -> Result<Value, EncodeError> {
    let src = b.get("source");
    let s = |k: &str| src.and_then(|s| s.get(k)).and_then(Value::as_str);
    let url = match s("type") {
        Some("base64") => match (s("media_type"), s("data")) {
            (Some(mt), Some(data)) => format!("data:{mt};base64,{data}"),
            _ => {
                return Err(bad(format!(
                    "messages.{i}.content.{j}.source: media_type and data are required"
                )))
            }
        },
        Some("url") => s("url")
            .ok_or_else(|| {
                bad(format!(
                    "messages.{i}.content.{j}.source.url: Field required"
                ))
            })?
            .to_string(),
        other => {
            return Err(bad(format!(
                "messages.{i}.content.{j}.source.type: {} cannot be translated to chat completions",
                shown(other)
            )))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A plain-text document's text (other document sources have no chat form).
fn document(b: &Value, i: usize, j: usize) -> Result<String, EncodeError> {
    let src = b.get("source");
    match src.and_then(|s| s.get("type")).and_then(Value::as_str) {
        Some("text") => Ok(src
            .and_then(|s| s.get("data"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()),
        other => Err(bad(format!(
            "messages.{i}.content.{j}.source.type: document source {} cannot be translated to chat completions",
            shown(other)
        ))),
    }
}

/// A `tool_result` block as a chat `tool` message (an error result says so in its text).
fn tool_result(b: &Value, i: usize, j: usize) -> Result<Value, EncodeError> {
    let id = b
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad(format!(
                "messages.{i}.content.{j}.tool_use_id: Field required"
            ))
        })?;
    let mut content = match b.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (k, p) in parts.iter().enumerate() {
                match (block_type(p), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => texts.push(t),
                    // Chat tool messages carry text only.
                    (Some("image"), _) => texts.push("[image]"),
                    (other, _) => {
                        return Err(bad(format!(
                            "messages.{i}.content.{j}.content.{k}.type: {} cannot be translated to chat completions",
                            shown(other)
                        )))
                    }
                }
            }
            texts.join("\n")
        }
        Some(other) => {
            return Err(bad(format!(
                "messages.{i}.content.{j}.content: Input should be a valid string or list, not {}",
                kind_name(other)
            )))
        }
    };
    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
        content = format!("Error: {content}");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

fn assistant_turn(content: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), EncodeError> {
    if let Value::String(s) = content {
        out.push(json!({"role": "assistant", "content": s}));
        return Ok(());
    }
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks(content, i)?.iter().enumerate() {
        match block_type(b) {
            Some("text") => texts.push(text(b, i, j)?),
            Some("tool_use") => {
                let s = |k: &str| b.get(k).and_then(Value::as_str);
                let (Some(id), Some(name)) = (s("id"), s("name")) else {
                    return Err(bad(format!(
                        "messages.{i}.content.{j}: a tool_use block needs an id and a name"
                    )));
                };
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": input.to_string()}}));
            }
            Some("thinking") | Some("redacted_thinking") => {}
            other => {
                return Err(bad(format!(
                    "messages.{i}.content.{j}.type: {} cannot be translated to chat completions",
                    shown(other)
                )))
            }
        }
    }
    if texts.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let mut m = json!({"role": "assistant",
        "content": if texts.is_empty() { Value::Null } else { json!(texts.join("\n")) }});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    out.push(m);
    Ok(())
}

/// `tools` and `tool_choice`: client tools become functions; Anthropic's server tools (web
/// search, code execution…) run on Anthropic's side only and are refused by name.
fn tools(body: &BodyView<'_>, out: &mut Map<String, Value>) -> Result<(), EncodeError> {
    if let Some(tools) = field(body, "tools")? {
        let Value::Array(tools) = &tools else {
            return Err(bad("tools: Input should be a valid list"));
        };
        let mut fns = Vec::with_capacity(tools.len());
        for (i, t) in tools.iter().enumerate() {
            match block_type(t) {
                None | Some("custom") => {}
                Some(other) => {
                    return Err(bad(format!(
                        "tools.{i}.type: '{other}' is an Anthropic server tool and cannot be translated to chat completions"
                    )))
                }
            }
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("tools.{i}.name: Field required")))?;
            let mut f = json!({"name": name,
                "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
            if let Some(d) = t.get("description").filter(|d| d.is_string()) {
                f["description"] = d.clone();
            }
            fns.push(json!({"type": "function", "function": f}));
        }
        if !fns.is_empty() {
            out.insert("tools".into(), Value::Array(fns));
        }
    }
    let Some(tc) = field(body, "tool_choice")? else {
        return Ok(());
    };
    let choice = match block_type(&tc) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = tc
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.name: Field required"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        other => {
            return Err(bad(format!(
                "tool_choice.type: expected 'auto', 'any', 'tool' or 'none', got {}",
                shown(other)
            )))
        }
    };
    if out.contains_key("tools") {
        out.insert("tool_choice".into(), choice);
        if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(())
}

/// A chat `finish_reason` as Anthropic's `stop_reason`.
pub fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// The stop sequence a `stop` finish stands for, when the request named exactly one.
fn stop_sequence(meta: &Meta, stop: &str) -> Value {
    match (stop, meta.stop_sequences.as_slice()) {
        ("end_turn", [only]) => json!(only),
        _ => Value::Null,
    }
}

/// Usage in Anthropic's shape: `input_tokens` leaves out cached input, which has its own
/// counts.
pub fn usage_json(u: Option<&Usage>) -> Value {
    let u = u.cloned().unwrap_or_default();
    let cached = u.cached_tokens.unwrap_or(0);
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(cached),
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    })
}

/// A chat completion (OpenAI's shape) as a Message object.
pub fn from_chat(chat: &[u8], meta: &Meta, usage: Option<&Usage>) -> Result<Vec<u8>, String> {
    let v: Value = serde_json::from_slice(chat).map_err(|e| format!("invalid JSON: {e}"))?;
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or("response has no 'choices'")?;
    let msg = choice.get("message");
    let mut content = Vec::new();
    if let Some(t) = msg
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in msg
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = c.get("function");
        let args = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("{}");
        content.push(
            json!({"type": "tool_use", "id": c.get("id"), "name": f.and_then(|f| f.get("name")),
            "input": tool_input(args)}),
        );
    }
    let stop = stop_reason(choice.get("finish_reason").and_then(Value::as_str));
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| meta.model.clone());
    let out = json!({
        "id": meta.id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": stop_sequence(meta, stop),
        "usage": usage_json(usage),
    });
    serde_json::to_vec(&out).map_err(|e| e.to_string())
}

/// A tool call's arguments as the `input` object Anthropic clients expect; arguments that
/// are not a JSON object (a model's slip) go as `{}` rather than break the client.
fn tool_input(args: &str) -> Value {
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// An error in Anthropic's shape, the one Anthropic clients parse.
pub fn error_body(kind: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "error", "error": {"type": kind, "message": message}}))
        .unwrap_or_default()
}

/// An error body in OpenAI's shape (`{"error":{"message",…}}`, or Kong's `{"message"}`) in
/// Anthropic's; None when the body carries no message.
pub fn error_from_openai(status: u16, body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("type").and_then(Value::as_str) == Some("error") {
        return None; // Already Anthropic's shape.
    }
    let message = v
        .get("error")
        .and_then(|e| e.get("message").or(Some(e)))
        .and_then(Value::as_str)
        .or_else(|| v.get("message").and_then(Value::as_str))?;
    Some(error_body(crate::error::anthropic_type(status), message))
}

/// An upstream error body (already in OpenAI's shape where the provider's was known) as
/// Anthropic's; a body without a message (an HTML page from a proxy) is quoted, cut short.
pub fn error_for_client(status: u16, body: &[u8]) -> Vec<u8> {
    if let Some(b) = error_from_openai(status, body) {
        return b;
    }
    let is_anthropic = serde_json::from_slice::<Value>(body)
        .is_ok_and(|v| v.get("type").and_then(Value::as_str) == Some("error"));
    if is_anthropic {
        return body.to_vec();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    let message = match text.trim() {
        "" => format!("upstream answered HTTP {status}"),
        t => format!("upstream answered HTTP {status}: {t}"),
    };
    error_body(crate::error::anthropic_type(status), &message)
}

/// OpenAI chat chunks (SSE) → Messages events (SSE), one chunk at a time.
pub type StreamMapper = Framed<EventMapper>;

impl StreamMapper {
    /// A mapper for the message described by `meta`.
    pub fn new(meta: Arc<Meta>) -> Self {
        Framed::wrap(EventMapper {
            meta,
            started: false,
            open: None,
            blocks: 0,
            calls: Vec::new(),
            finish: None,
            usage: None,
            model: None,
            ended: false,
        })
    }
}

/// The content block being streamed.
#[derive(Debug, Clone, Copy)]
enum Open {
    Text(u64),
    /// A tool call's block.
    Tool(u64),
}

/// One chat event at a time (see [`StreamMapper`]).
#[derive(Debug)]
pub struct EventMapper {
    meta: Arc<Meta>,
    started: bool,
    open: Option<Open>,
    /// Blocks started so far (the next block's index).
    blocks: u64,
    /// Chat tool-call index → block index.
    calls: Vec<(u64, u64)>,
    finish: Option<String>,
    usage: Option<Usage>,
    model: Option<String>,
    /// `message_stop` or `error` written.
    ended: bool,
}

impl EventMapper {
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut v: Value) {
        if let Some(o) = v.as_object_mut() {
            o.insert("type".into(), json!(kind));
        }
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.push(b'\n');
        sse::write_data(out, &v);
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let model = self.model.clone().or_else(|| self.meta.model.clone());
        let message = json!({"id": self.meta.id, "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": usage_json(self.usage.as_ref())});
        self.emit(out, "message_start", json!({ "message": message }));
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some(o) = self.open.take() {
            let index = match o {
                Open::Text(i) | Open::Tool(i) => i,
            };
            self.emit(out, "content_block_stop", json!({ "index": index }));
        }
    }

    fn open(&mut self, out: &mut Vec<u8>, block: Value) -> u64 {
        self.close(out);
        let index = self.blocks;
        self.blocks += 1;
        self.emit(
            out,
            "content_block_start",
            json!({"index": index, "content_block": block}),
        );
        index
    }

    fn text_delta(&mut self, t: &str, out: &mut Vec<u8>) {
        let index = match self.open {
            Some(Open::Text(i)) => i,
            _ => {
                let i = self.open(out, json!({"type": "text", "text": ""}));
                self.open = Some(Open::Text(i));
                i
            }
        };
        self.emit(
            out,
            "content_block_delta",
            json!({"index": index, "delta": {"type": "text_delta", "text": t}}),
        );
    }

    fn call_delta(&mut self, c: &Value, out: &mut Vec<u8>) {
        let chat_index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
        let f = c.get("function");
        let known = self.calls.iter().find(|(ci, _)| *ci == chat_index).copied();
        let index = match known {
            Some((_, bi)) => bi,
            None => {
                let block = json!({"type": "tool_use", "id": c.get("id"),
                    "name": f.and_then(|f| f.get("name")), "input": {}});
                let bi = self.open(out, block);
                self.calls.push((chat_index, bi));
                self.open = Some(Open::Tool(bi));
                bi
            }
        };
        let args = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if args.is_empty() {
            return;
        }
        // A piece for a call whose block was already closed (chat may interleave calls)
        // still names that block's index.
        self.emit(
            out,
            "content_block_delta",
            json!({"index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
        );
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        let stop = stop_reason(self.finish.as_deref());
        let delta = json!({"stop_reason": stop, "stop_sequence": stop_sequence(&self.meta, stop)});
        let usage = usage_json(self.usage.as_ref());
        self.emit(
            out,
            "message_delta",
            json!({"delta": delta, "usage": usage}),
        );
        self.emit(out, "message_stop", json!({}));
        self.ended = true;
    }

    /// An `error` event, which ends the stream for Anthropic clients.
    pub fn fail(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        if self.ended {
            return;
        }
        self.emit(
            out,
            "error",
            json!({"error": {"type": kind, "message": message}}),
        );
        self.ended = true;
    }

    fn chat_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if data == b"[DONE]" {
            self.complete(out);
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        let (model, usage, choice) = match chat_chunk(&v) {
            ChatChunk::Error { message, .. } => {
                self.fail(out, "api_error", message);
                return;
            }
            ChatChunk::Data {
                model,
                usage,
                choice,
            } => (model, usage, choice),
        };
        if self.model.is_none() {
            self.model = model.map(str::to_string);
        }
        if let Some(u) = usage {
            self.usage = Usage::from_json(u);
        }
        let Some(choice) = choice else {
            return;
        };
        self.start(out);
        if let Some(t) = choice.text {
            self.text_delta(t, out);
        }
        for c in choice.calls {
            self.call_delta(c, out);
        }
        if let Some(f) = choice.finish {
            self.finish = Some(f.to_string());
        }
    }
}

impl MapEvents for EventMapper {
    type Framing = sse::Framer;

    fn on_event(&mut self, ev: &sse::Event, out: &mut Vec<u8>) {
        self.chat_event(&ev.data, out);
    }

    /// A stream that ended without `[DONE]` after its finish reason still completes (some
    /// servers omit it); one cut before that gets an error event.
    fn end(&mut self, out: &mut Vec<u8>) -> bool {
        if self.ended {
            return true;
        }
        if self.finish.is_some() {
            self.complete(out);
            return true;
        }
        self.fail(
            out,
            "api_error",
            "The upstream stream ended before it was complete",
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value, stream: bool) -> Value {
        let bytes = serde_json::to_vec(&body).unwrap();
        let view = BodyView::parse(&bytes).unwrap();
        let r = to_chat(&view, stream).unwrap();
        serde_json::from_slice(&r.body).unwrap()
    }

    fn refused(body: Value) -> String {
        let bytes = serde_json::to_vec(&body).unwrap();
        let view = BodyView::parse(&bytes).unwrap();
        match to_chat(&view, false) {
            Ok(_) => panic!("accepted {body}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn a_claude_code_turn_becomes_chat() {
        let c = chat(
            json!({
                "model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": true,
                "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                           {"type": "text", "text": "Be brief."}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "run it"}]},
                    {"role": "assistant", "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "text", "text": "Running."},
                        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "echo hi"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "hi"}]},
                        {"type": "text", "text": "and now?"}]}
                ],
                "tools": [{"name": "Bash", "description": "Runs a command",
                           "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}],
                "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
                "metadata": {"user_id": "u"}, "temperature": 1, "thinking": {"type": "enabled", "budget_tokens": 1024}
            }),
            true,
        );
        assert_eq!(
            c["messages"],
            json!([
                {"role": "system", "content": "You are Claude Code.\n\nBe brief."},
                {"role": "user", "content": "run it"},
                {"role": "assistant", "content": "Running.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"echo hi\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "hi"},
                {"role": "user", "content": "and now?"}
            ])
        );
        assert_eq!(c["tools"][0]["function"]["name"], "Bash");
        assert_eq!(
            c["tools"][0]["function"]["parameters"]["required"],
            json!(["command"])
        );
        assert_eq!(c["tool_choice"], "auto");
        assert_eq!(c["parallel_tool_calls"], false);
        assert_eq!(c["max_tokens"], 32000);
        assert_eq!(c["temperature"], 1);
        assert_eq!(c["stream"], true);
        assert_eq!(c["stream_options"]["include_usage"], true);
        assert!(c.get("thinking").is_none() && c.get("metadata").is_none());
    }

    #[test]
    fn images_errors_and_choices_translate() {
        let c = chat(
            json!({"model": "m", "max_tokens": 10, "stop_sequences": ["END"],
                "messages": [{"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "text", "text": "what is it?"},
                    {"type": "tool_result", "tool_use_id": "t", "content": "boom", "is_error": true}]}],
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "tool", "name": "f"}}),
            false,
        );
        assert_eq!(
            c["messages"][0],
            json!({"role": "tool", "tool_call_id": "t", "content": "Error: boom"})
        );
        assert_eq!(
            c["messages"][1]["content"][0]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
        assert_eq!(c["stop"], json!(["END"]));
        assert_eq!(c["tool_choice"]["function"]["name"], "f");
        assert!(c.get("stream_options").is_none());
    }

    #[test]
    fn bad_bodies_are_refused_naming_the_field() {
        for (body, want) in [
            (json!({"model": "m"}), "messages: Field required"),
            (
                json!({"messages": "hi"}),
                "messages: Input should be a valid list",
            ),
            (json!({"messages": []}), "at least one message"),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "messages.0.role",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "video"}]}]}),
                "messages.0.content.0.type: 'video'",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages.0.content.0.text: Field required",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
                "max_tokens",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}],
                    "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "server tool",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "maybe"}}),
                "tool_choice.type",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "system": 3}),
                "system",
            ),
        ] {
            let got = refused(body.clone());
            assert!(got.contains(want), "{body}: {got}");
        }
    }

    fn meta() -> Meta {
        Meta {
            id: "msg_1".into(),
            model: Some("client-model".into()),
            stop_sequences: vec![],
        }
    }

    #[test]
    fn a_chat_answer_becomes_a_message() {
        let chat = json!({"id": "c", "object": "chat.completion", "model": "gpt-x",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "content": "Let me look.", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}}]}}]});
        let u = Usage {
            prompt_tokens: 100,
            completion_tokens: 7,
            total_tokens: 107,
            cached_tokens: Some(40),
            ..Usage::default()
        };
        let out = from_chat(&serde_json::to_vec(&chat).unwrap(), &meta(), Some(&u)).unwrap();
        let m: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(m["id"], "msg_1");
        assert_eq!(m["type"], "message");
        assert_eq!(m["model"], "gpt-x");
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(
            m["content"][0],
            json!({"type": "text", "text": "Let me look."})
        );
        assert_eq!(
            m["content"][1],
            json!({"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}})
        );
        assert_eq!(
            m["usage"],
            json!({"input_tokens": 60, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 40})
        );
        assert!(from_chat(b"{}", &meta(), None).is_err());
    }

    fn events(out: &[u8]) -> Vec<(String, Value)> {
        let mut f = sse::Framer::default();
        let mut evs = Vec::new();
        f.push(out, |e| {
            evs.push((
                e.kind.unwrap_or_default(),
                serde_json::from_slice(&e.data).unwrap(),
            ))
        });
        evs
    }

    #[test]
    fn chat_chunks_become_messages_events_across_any_split() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \"}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"Bash\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"command\\\":\\\"ls\\\"}\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        let whole = {
            let mut m = StreamMapper::new(Arc::new(meta()));
            let mut out = Vec::new();
            m.on_chunk(stream, &mut out);
            assert!(m.finish(&mut out));
            out
        };
        let evs = events(&whole);
        let kinds: Vec<&str> = evs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(evs[0].1["message"]["model"], "gpt-x");
        assert_eq!(evs[2].1["delta"]["text"], "Hi ");
        assert_eq!(evs[4].1["content_block"]["name"], "Bash");
        assert_eq!(evs[4].1["index"], 1);
        assert_eq!(evs[5].1["delta"]["partial_json"], "{\"command\":\"ls\"}");
        assert_eq!(evs[7].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(evs[7].1["usage"]["input_tokens"], 9);
        assert_eq!(evs[7].1["usage"]["output_tokens"], 4);
        for i in 0..stream.len() {
            let mut m = StreamMapper::new(Arc::new(meta()));
            let mut out = Vec::new();
            m.on_chunk(&stream[..i], &mut out);
            m.on_chunk(&stream[i..], &mut out);
            m.finish(&mut out);
            // Ids are the meta's, so every split writes the same bytes.
            assert_eq!(out, whole, "split at {i}");
        }
    }

    #[test]
    fn a_cut_stream_ends_with_an_error_event() {
        let mut m = StreamMapper::new(Arc::new(meta()));
        let mut out = Vec::new();
        m.on_chunk(
            b"data: {\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}\n\n",
            &mut out,
        );
        assert!(!m.finish(&mut out));
        let evs = events(&out);
        let last = evs.last().unwrap();
        assert_eq!(last.0, "error");
        assert_eq!(last.1["error"]["type"], "api_error");
    }

    #[test]
    fn errors_take_anthropics_shape() {
        let e = error_from_openai(
            400,
            br#"{"error":{"message":"bad thing","type":"invalid_request_error"}}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad thing"}})
        );
        let kong = error_from_openai(429, br#"{"message":"API rate limit exceeded"}"#).unwrap();
        assert!(String::from_utf8_lossy(&kong).contains("rate_limit_error"));
        assert!(error_from_openai(500, br#"{"type":"error","error":{}}"#).is_none());
        assert!(error_from_openai(500, b"<html>").is_none());
        let html: Value =
            serde_json::from_slice(&error_for_client(502, b"<html>bad</html>")).unwrap();
        assert_eq!(html["error"]["type"], "api_error");
        assert_eq!(
            html["error"]["message"],
            "upstream answered HTTP 502: <html>bad</html>"
        );
        let own = br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#;
        assert_eq!(error_for_client(529, own), own.to_vec());
    }
}

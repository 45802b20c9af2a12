//! The Responses API on providers that only have chat: a Responses request becomes an OpenAI
//! chat request (which the target's dialect then encodes as usual), and the chat answer or
//! chunk stream becomes a Response object or Responses events. Pure functions; the store of
//! conversations behind `previous_response_id` lives in the proxy.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::llm::body::BodyView;
use crate::llm::framing::{Framed, MapEvents};
use crate::llm::sse;
use crate::llm::translate::{bad, chat_chunk, field, ChatChunk};
use crate::llm::usage::Usage;
use crate::llm::EncodeError;

/// The schema given to a free-form (`custom`) tool turned into a function: chat providers
/// only call functions, so the raw input travels as one string argument.
const CUSTOM_INPUT: &str = "input";

/// A Responses request as a chat request, with what the answer needs to echo.
pub struct ChatRequest {
    /// The OpenAI chat body.
    pub body: Vec<u8>,
    /// The conversation without `instructions` (history + this input), kept so the next
    /// request can name this response as its `previous_response_id`.
    pub conversation: Vec<Value>,
    pub meta: Arc<Meta>,
}

/// What a Response object repeats from its request, and how tool calls map back.
#[derive(Debug, Default)]
pub struct Meta {
    pub id: String,
    pub created_at: u64,
    pub model: Option<String>,
    /// Request fields a Response object echoes (`instructions`, `tools`, `tool_choice`…).
    pub echo: Map<String, Value>,
    /// Names of `custom` tools (their calls are `custom_tool_call` items, not functions).
    pub custom_tools: Vec<String>,
    /// Whether the client wants the response kept for `previous_response_id`.
    pub store: bool,
}

impl Meta {
    fn is_custom(&self, name: &str) -> bool {
        self.custom_tools.iter().any(|n| n == name)
    }

    /// A Response object with this request's echoed fields.
    fn response(&self, status: &str, output: Vec<Value>, usage: Option<&Usage>) -> Value {
        let mut r = Map::new();
        r.insert("id".into(), json!(self.id));
        r.insert("object".into(), json!("response"));
        r.insert("created_at".into(), json!(self.created_at));
        r.insert("status".into(), json!(status));
        r.insert("error".into(), Value::Null);
        r.insert("incomplete_details".into(), Value::Null);
        r.insert("model".into(), json!(self.model));
        r.insert("output".into(), Value::Array(output));
        for (k, v) in &self.echo {
            r.insert(k.clone(), v.clone());
        }
        r.insert(
            "usage".into(),
            usage.map(responses_usage).unwrap_or(Value::Null),
        );
        Value::Object(r)
    }
}

/// Chat usage in the Responses names (Codex refuses chat-style names here).
fn responses_usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens.unwrap_or(0)},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens.unwrap_or(0)},
        "total_tokens": u.total_tokens,
    })
}

/// A fresh id with OpenAI's prefix style (`resp_…`, `msg_…`, `fc_…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Translates a Responses body. `history` is the conversation stored for the request's
/// `previous_response_id` (the caller looks it up and answers an unknown id itself).
pub fn to_chat(
    body: &BodyView<'_>,
    history: Option<&[Value]>,
    stream: bool,
    created_at: u64,
) -> Result<ChatRequest, EncodeError> {
    let mut out = Map::new();
    let mut echo = Map::new();
    let model = body.str("model").map(|m| m.into_owned());
    if let Some(m) = &model {
        out.insert("model".into(), json!(m));
    }

    let mut conversation: Vec<Value> = history.map(<[Value]>::to_vec).unwrap_or_default();
    match field(body, "input")? {
        None => {}
        Some(Value::String(s)) => conversation.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut conversation)?;
            }
        }
        Some(_) => return Err(bad("'input' must be a string or an array of items")),
    }
    let mut messages = Vec::with_capacity(conversation.len() + 1);
    match field(body, "instructions")? {
        None => {}
        Some(Value::String(s)) => {
            messages.push(json!({"role": "system", "content": s}));
            echo.insert("instructions".into(), Value::String(s));
        }
        Some(_) => return Err(bad("'instructions' must be a string")),
    }
    messages.extend(conversation.iter().cloned());
    if messages.is_empty() {
        return Err(bad("'input' is required"));
    }
    out.insert("messages".into(), Value::Array(messages));

    let mut custom_tools = Vec::new();
    if let Some(tools) = field(body, "tools")? {
        let Value::Array(tools) = &tools else {
            return Err(bad("'tools' must be an array"));
        };
        let mut fns = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            if let Some(f) = tool(t, i, &mut custom_tools)? {
                fns.push(f);
            }
        }
        if !fns.is_empty() {
            out.insert("tools".into(), Value::Array(fns));
        }
        echo.insert("tools".into(), Value::Array(tools.clone()));
    }
    if let Some(tc) = field(body, "tool_choice")? {
        let choice = match &tc {
            Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => tc.clone(),
            Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                Some("function") | Some("custom") => {
                    let name = o
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("'tool_choice.name' is required"))?;
                    json!({"type": "function", "function": {"name": name}})
                }
                Some(other) => {
                    return Err(bad(format!(
                        "'tool_choice' type '{other}' cannot be translated to chat completions"
                    )))
                }
                None => return Err(bad("'tool_choice.type' is required")),
            },
            _ => {
                return Err(bad(
                    "'tool_choice' must be auto, none, required or an object",
                ))
            }
        };
        if out.contains_key("tools") || choice == json!("none") {
            out.insert("tool_choice".into(), choice);
        }
        echo.insert("tool_choice".into(), tc);
    }
    for (ours, theirs) in [
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("user", "user"),
    ] {
        if let Some(v) = field(body, ours)? {
            out.insert(theirs.into(), v.clone());
            echo.insert(ours.into(), v);
        }
    }
    if let Some(text) = field(body, "text")? {
        if let Some(format) = text.get("format") {
            if let Some(rf) = response_format(format)? {
                out.insert("response_format".into(), rf);
            }
        }
        echo.insert("text".into(), text);
    }
    if let Some(prev) = body.str("previous_response_id") {
        echo.insert("previous_response_id".into(), json!(prev));
    }
    if let Some(md) = field(body, "metadata")? {
        echo.insert("metadata".into(), md);
    }
    let store = body.bool("store") != Some(false);
    echo.insert("store".into(), json!(store));
    out.insert("stream".into(), json!(stream));
    if stream {
        // The usage of the last chunk feeds `response.completed`.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let body = serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))?;
    Ok(ChatRequest {
        body,
        conversation,
        meta: Arc::new(Meta {
            id: new_id("resp"),
            created_at,
            model,
            echo,
            custom_tools,
            store,
        }),
    })
}

/// One `input` item appended to the chat conversation.
fn input_item(item: &Value, i: usize, conv: &mut Vec<Value>) -> Result<(), EncodeError> {
    let kind = item.get("type").and_then(Value::as_str);
    let s = |k: &str| item.get(k).and_then(Value::as_str);
    match kind {
        None | Some("message") => {
            let role = match s("role") {
                Some("developer") | Some("system") => "system",
                Some("user") => "user",
                Some("assistant") => "assistant",
                Some(r) => return Err(bad(format!("'input[{i}].role' '{r}' is not supported"))),
                None => return Err(bad(format!("'input[{i}].role' is required"))),
            };
            let content = message_content(item.get("content"), i, role)?;
            conv.push(json!({"role": role, "content": content}));
        }
        Some("function_call") | Some("custom_tool_call") => {
            let call_id =
                s("call_id").ok_or_else(|| bad(format!("'input[{i}].call_id' is required")))?;
            let name = s("name").ok_or_else(|| bad(format!("'input[{i}].name' is required")))?;
            let arguments = if kind == Some("custom_tool_call") {
                json!({ CUSTOM_INPUT: s("input").unwrap_or("") }).to_string()
            } else {
                s("arguments").unwrap_or("{}").to_string()
            };
            let call = json!({"id": call_id, "type": "function",
                "function": {"name": name, "arguments": arguments}});
            // Consecutive calls (and the text before them) form one assistant message.
            match conv.last_mut() {
                Some(last) if last.get("role").and_then(Value::as_str) == Some("assistant") => {
                    if let Some(o) = last.as_object_mut() {
                        let calls = o.entry("tool_calls").or_insert_with(|| json!([]));
                        if let Some(a) = calls.as_array_mut() {
                            a.push(call);
                        }
                    }
                }
                _ => conv.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        Some("function_call_output") | Some("custom_tool_call_output") => {
            let call_id =
                s("call_id").ok_or_else(|| bad(format!("'input[{i}].call_id' is required")))?;
            let output = match item.get("output") {
                Some(Value::String(o)) => o.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            conv.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        // The model's hidden reasoning: chat providers cannot take it back, and it only ever
        // came from a provider that answers Responses natively.
        Some("reasoning") => {}
        Some(other) => {
            return Err(bad(format!(
                "'input[{i}].type' '{other}' cannot be translated to chat completions"
            )))
        }
    }
    Ok(())
}

/// Message content: a string, or parts (text parts join; images become `image_url` parts).
fn message_content(content: Option<&Value>, i: usize, role: &str) -> Result<Value, EncodeError> {
    match content {
        None | Some(Value::Null) => Ok(json!("")),
        Some(Value::String(s)) => Ok(json!(s)),
        Some(Value::Array(parts)) => {
            let mut texts: Vec<&str> = Vec::new();
            let mut rich: Vec<Value> = Vec::new();
            let mut has_image = false;
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text") | Some("output_text") | Some("text") => {
                        let t = p.get("text").and_then(Value::as_str).unwrap_or("");
                        texts.push(t);
                        rich.push(json!({"type": "text", "text": t}));
                    }
                    Some("refusal") => {
                        let t = p.get("refusal").and_then(Value::as_str).unwrap_or("");
                        texts.push(t);
                        rich.push(json!({"type": "text", "text": t}));
                    }
                    Some("input_image") => {
                        let url = p.get("image_url").and_then(Value::as_str).ok_or_else(|| {
                            bad(format!(
                                "'input[{i}].content[{j}]': only images given by 'image_url' can be translated (not 'file_id')"
                            ))
                        })?;
                        has_image = true;
                        let mut image = json!({"url": url});
                        if let Some(d) = p.get("detail") {
                            image["detail"] = d.clone();
                        }
                        rich.push(json!({"type": "image_url", "image_url": image}));
                    }
                    Some(other) => {
                        return Err(bad(format!(
                            "'input[{i}].content[{j}].type' '{other}' cannot be translated to chat completions"
                        )))
                    }
                    None => return Err(bad(format!("'input[{i}].content[{j}].type' is required"))),
                }
            }
            if has_image && role == "user" {
                Ok(Value::Array(rich))
            } else if has_image {
                Err(bad(format!(
                    "'input[{i}].content': images are only accepted in user messages"
                )))
            } else {
                Ok(json!(texts.join("")))
            }
        }
        Some(_) => Err(bad(format!(
            "'input[{i}].content' must be a string or an array"
        ))),
    }
}

/// A Responses tool as a chat tool; None for hosted tools a chat provider cannot run.
fn tool(t: &Value, i: usize, custom: &mut Vec<String>) -> Result<Option<Value>, EncodeError> {
    let name = || {
        t.get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("'tools[{i}].name' is required")))
    };
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {
            let mut f = json!({"name": name()?});
            if let Some(d) = t.get("description") {
                f["description"] = d.clone();
            }
            f["parameters"] = t
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            if let Some(s) = t.get("strict") {
                f["strict"] = s.clone();
            }
            Ok(Some(json!({"type": "function", "function": f})))
        }
        Some("custom") => {
            let n = name()?;
            custom.push(n.to_string());
            let mut desc = t
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some(def) = t.get("format").and_then(|f| f.get("definition")) {
                if let Some(d) = def.as_str() {
                    desc.push_str("\n\nThe input must follow this grammar:\n");
                    desc.push_str(d);
                }
            }
            Ok(Some(json!({"type": "function", "function": {
                "name": n,
                "description": desc,
                "parameters": {
                    "type": "object",
                    "properties": {CUSTOM_INPUT: {"type": "string", "description": "The raw input for the tool."}},
                    "required": [CUSTOM_INPUT],
                },
            }})))
        }
        // Hosted tools (web_search, file_search, local_shell, …) run at OpenAI; a chat
        // provider has none, so the model simply does not see them.
        Some(_) => Ok(None),
        None => Err(bad(format!("'tools[{i}].type' is required"))),
    }
}

/// `text.format` as a chat `response_format`.
fn response_format(format: &Value) -> Result<Option<Value>, EncodeError> {
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut js = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(k) {
                    js.insert(k.into(), v.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": js})))
        }
        Some(other) => Err(bad(format!(
            "'text.format.type' '{other}' is not supported"
        ))),
    }
}

/// A decoded answer: the Response object and the assistant turn for the conversation store.
pub struct FromChat {
    pub body: Vec<u8>,
    pub assistant: Option<Value>,
}

/// Output items and status from a chat answer's first choice.
fn items_of(meta: &Meta, text: &str, calls: &[(String, String, String)]) -> Vec<Value> {
    let mut output = Vec::new();
    if !text.is_empty() || calls.is_empty() {
        output.push(message_item(&new_id("msg"), text, "completed"));
    }
    for (id, name, args) in calls {
        output.push(call_item(meta, &new_id("fc"), id, name, args, "completed"));
    }
    output
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    };
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn call_item(meta: &Meta, id: &str, call_id: &str, name: &str, args: &str, status: &str) -> Value {
    if meta.is_custom(name) {
        let input = serde_json::from_str::<Value>(args)
            .ok()
            .and_then(|v| {
                v.get(CUSTOM_INPUT)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default();
        json!({"id": id, "type": "custom_tool_call", "status": status, "call_id": call_id,
            "name": name, "input": input})
    } else {
        json!({"id": id, "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": args})
    }
}

/// The assistant turn as a chat message, for the stored conversation.
fn assistant_message(text: &str, calls: &[(String, String, String)]) -> Value {
    let mut m = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        m["tool_calls"] = calls
            .iter()
            .map(|(id, name, args)| {
                json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
            })
            .collect();
    }
    m
}

/// Status and `incomplete_details` for a chat finish reason.
fn status_of(finish: Option<&str>) -> (&'static str, Value) {
    match finish {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// An OpenAI `chat.completion` as a Response object.
pub fn from_chat(chat: &[u8], meta: &Meta, usage: Option<&Usage>) -> Result<FromChat, String> {
    let v: Value = serde_json::from_slice(chat).map_err(|e| format!("invalid JSON: {e}"))?;
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or("response has no 'choices'")?;
    let message = choice.get("message").ok_or("choice has no 'message'")?;
    let text = message
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let calls: Vec<(String, String, String)> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| {
                    let f = c.get("function");
                    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
                    (
                        s(c.get("id")),
                        s(f.and_then(|f| f.get("name"))),
                        s(f.and_then(|f| f.get("arguments"))),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let output = items_of(meta, &text, &calls);
    let (status, incomplete) = status_of(choice.get("finish_reason").and_then(Value::as_str));
    let mut meta_model = None;
    if meta.model.is_none() {
        meta_model = v.get("model").cloned();
    }
    let mut r = meta.response(status, output, usage);
    r["incomplete_details"] = incomplete;
    if let Some(m) = meta_model {
        r["model"] = m;
    } else if let Some(m) = v.get("model") {
        // The model that answered, as OpenAI reports it.
        r["model"] = m.clone();
    }
    let body = serde_json::to_vec(&r).map_err(|e| e.to_string())?;
    Ok(FromChat {
        body,
        assistant: Some(assistant_message(&text, &calls)),
    })
}

/// One streamed function call being assembled.
#[derive(Debug)]
struct Call {
    item_id: String,
    call_id: String,
    name: String,
    args: String,
    output_index: usize,
}

/// OpenAI chat chunks (SSE) → Responses events (SSE), one chunk at a time.
pub type StreamMapper = Framed<EventMapper>;

impl StreamMapper {
    /// A mapper for the response described by `meta`.
    pub fn new(meta: Arc<Meta>) -> Self {
        Framed::wrap(EventMapper {
            meta,
            seq: 0,
            started: false,
            text: None,
            calls: Vec::new(),
            done_items: Vec::new(),
            next_index: 0,
            finish: None,
            usage: None,
            model: None,
            ended: false,
            assistant: None,
        })
    }
}

/// One chat event at a time (see [`StreamMapper`]).
#[derive(Debug)]
pub struct EventMapper {
    meta: Arc<Meta>,
    seq: u64,
    started: bool,
    /// The open message item: id, output index, text so far.
    text: Option<(String, usize, String)>,
    calls: Vec<Call>,
    /// Closed items, in output order.
    done_items: Vec<Value>,
    next_index: usize,
    finish: Option<String>,
    usage: Option<Usage>,
    model: Option<String>,
    /// `response.completed` / `response.failed` written.
    ended: bool,
    /// The full text and calls, kept for the conversation store once completed.
    pub assistant: Option<Value>,
}

impl EventMapper {
    /// The response's id.
    pub fn response_id(&self) -> &str {
        &self.meta.id
    }

    /// Whether the stream completed (the conversation may then be stored).
    pub fn completed(&self) -> bool {
        self.ended && self.assistant.is_some()
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut v: Value) {
        if let Some(o) = v.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.push(b'\n');
        sse::write_data(out, &v);
    }

    fn response(&self, status: &str, output: Vec<Value>) -> Value {
        let mut r = self.meta.response(status, output, self.usage.as_ref());
        if let Some(m) = &self.model {
            r["model"] = json!(m);
        }
        r
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self.response("in_progress", Vec::new());
        self.emit(out, "response.created", json!({"response": r.clone()}));
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    fn chat_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if data == b"[DONE]" {
            if self.finish.is_some() || self.started {
                self.complete(out);
            }
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        let (model, usage, choice) = match chat_chunk(&v) {
            ChatChunk::Error { message, code } => {
                self.fail(out, code.unwrap_or("server_error"), message);
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

    fn text_delta(&mut self, t: &str, out: &mut Vec<u8>) {
        if self.text.is_none() {
            let id = new_id("msg");
            let index = self.next_index;
            self.next_index += 1;
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": message_item(&id, "", "in_progress")}),
            );
            self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
            self.text = Some((id, index, String::new()));
        }
        let Some((id, index)) = self.text.as_mut().map(|(id, index, text)| {
            text.push_str(t);
            (id.clone(), *index)
        }) else {
            return;
        };
        self.emit(
            out,
            "response.output_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t, "logprobs": []}),
        );
    }

    fn close_text(&mut self, out: &mut Vec<u8>) {
        let Some((id, index, text)) = self.text.take() else {
            return;
        };
        self.emit(
            out,
            "response.output_text.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
        );
        self.emit(
            out,
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": text, "annotations": []}}),
        );
        let item = message_item(&id, &text, "completed");
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item.clone()}),
        );
        self.done_items.push(item);
    }

    fn call_delta(&mut self, c: &Value, out: &mut Vec<u8>) {
        let idx = c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
        let f = c.get("function");
        let args = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if idx >= self.calls.len() {
            // A new call: text before it is finished.
            self.close_text(out);
            let call_id = c
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| new_id("call"));
            let name = f
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let item_id = new_id("fc");
            let output_index = self.next_index;
            self.next_index += 1;
            let item = call_item(&self.meta, &item_id, &call_id, &name, "", "in_progress");
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            );
            self.calls.push(Call {
                item_id,
                call_id,
                name,
                args: String::new(),
                output_index,
            });
        }
        let at = idx.min(self.calls.len().saturating_sub(1));
        let Some(call) = self.calls.get_mut(at) else {
            return;
        };
        if args.is_empty() {
            return;
        }
        call.args.push_str(args);
        let (item_id, output_index, custom) = (
            call.item_id.clone(),
            call.output_index,
            self.meta.is_custom(&call.name),
        );
        // A custom tool's input is one string inside the JSON arguments: it is sent whole
        // with the item, not as argument deltas.
        if !custom {
            self.emit(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": output_index, "delta": args}),
            );
        }
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        let text = self.text.as_ref().map(|t| t.2.clone());
        self.close_text(out);
        let calls = std::mem::take(&mut self.calls);
        for c in &calls {
            let item = call_item(
                &self.meta,
                &c.item_id,
                &c.call_id,
                &c.name,
                &c.args,
                "completed",
            );
            if item.get("type").and_then(Value::as_str) == Some("function_call") {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": c.item_id, "output_index": c.output_index, "arguments": c.args}),
                );
            }
            self.emit(
                out,
                "response.output_item.done",
                json!({"output_index": c.output_index, "item": item.clone()}),
            );
            self.done_items.push(item);
        }
        let triples: Vec<(String, String, String)> = calls
            .into_iter()
            .map(|c| (c.call_id, c.name, c.args))
            .collect();
        self.assistant = Some(assistant_message(text.as_deref().unwrap_or(""), &triples));
        let (status, incomplete) = status_of(self.finish.as_deref());
        let items = std::mem::take(&mut self.done_items);
        let mut r = self.response(status, items);
        r["incomplete_details"] = incomplete;
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, kind, json!({"response": r}));
        self.ended = true;
    }

    /// Ends the response as failed (no-op once it ended).
    pub fn fail(&mut self, out: &mut Vec<u8>, code: &str, message: &str) {
        if self.ended {
            return;
        }
        self.start(out);
        let items = std::mem::take(&mut self.done_items);
        let mut r = self.response("failed", items);
        r["error"] = json!({"code": code, "message": message});
        self.emit(out, "response.failed", json!({"response": r}));
        self.ended = true;
        self.assistant = None;
    }
}

impl MapEvents for EventMapper {
    type Framing = sse::Framer;

    fn on_event(&mut self, ev: &sse::Event, out: &mut Vec<u8>) {
        self.chat_event(&ev.data, out);
    }

    /// Completes the response, or fails it when the chat stream was cut. True when
    /// `response.completed` was written.
    fn end(&mut self, out: &mut Vec<u8>) -> bool {
        if !self.ended {
            if self.finish.is_some() {
                // A finish reason came but no [DONE]: the answer itself is whole.
                self.complete(out);
            } else {
                self.fail(
                    out,
                    "upstream_stream_cut",
                    "The upstream stream ended before it was complete",
                );
            }
        }
        self.completed()
    }
}

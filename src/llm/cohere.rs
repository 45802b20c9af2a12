//! The Cohere v2 dialect: OpenAI chat requests encoded as `POST /v2/chat` bodies and
//! embeddings requests as `POST /v2/embed`; Cohere answers, errors and event streams
//! decoded back into OpenAI shapes. Kong's driver targets v1 (`message` + `chat_history`);
//! v2 is Cohere's current API and the only one with OpenAI-like messages and tool calls.

use serde_json::{json, Map, Value};

use crate::llm::body::BodyView;
use crate::llm::framing::{Framed, MapEvents};
use crate::llm::sse;
use crate::llm::translate::{self as t, bad, field, Answer, Chunks, ToolChoice};
use crate::llm::usage::Usage;
use crate::llm::{Decoded, Encode, EncodeError};

/// Cohere's public endpoint.
pub const DEFAULT_BASE: (&str, &str, u16) = ("https", "api.cohere.com", 443);
/// The v2 Chat API path.
pub const CHAT_PATH: &str = "/v2/chat";
/// The v2 Embed API path.
pub const EMBED_PATH: &str = "/v2/embed";
/// Kong's default `options.cohere.embedding_input_type`.
pub const DEFAULT_INPUT_TYPE: &str = "classification";

const P: &str = "cohere";

/// An OpenAI chat body as a v2 Chat body.
pub fn encode_chat(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(t::model(body, e)?));
    out.insert(
        "messages".into(),
        Value::Array(encode_messages(t::messages(body)?)?),
    );
    t::only_one_choice(body, P)?;
    if let Some(n) = t::max_tokens(body, e)? {
        out.insert("max_tokens".into(), json!(n));
    }
    let o = e.options;
    for (ours, theirs, conf) in [
        (
            "temperature",
            "temperature",
            o.temperature.map(|v| json!(v)),
        ),
        ("top_p", "p", o.top_p.map(|v| json!(v))),
        ("top_k", "k", o.top_k.map(|v| json!(v))),
    ] {
        if let Some(v) = t::sampling(body, ours, conf)? {
            out.insert(theirs.into(), v);
        }
    }
    if let Some(s) = t::stop(body)? {
        out.insert("stop_sequences".into(), Value::Array(s));
    }
    for k in ["seed", "frequency_penalty", "presence_penalty"] {
        if let Some(v) = field(body, k)? {
            out.insert(k.into(), v);
        }
    }
    if let Some(rf) = field(body, "response_format")? {
        if let Some(f) = response_format(&rf)? {
            out.insert("response_format".into(), f);
        }
    }
    let mut tools = match field(body, "tools")? {
        Some(tools) => t::function_tools(&tools, P)?,
        None => Vec::new(),
    };
    if let Some(tc) = field(body, "tool_choice")? {
        match t::tool_choice(&tc)? {
            ToolChoice::Auto => {}
            ToolChoice::None => {
                out.insert("tool_choice".into(), json!("NONE"));
            }
            ToolChoice::Required => {
                out.insert("tool_choice".into(), json!("REQUIRED"));
            }
            ToolChoice::Function(name) => {
                // Cohere can only force "some tool": offering just the named one forces it.
                tools.retain(|f| f.name == name);
                if tools.is_empty() {
                    return Err(bad(format!(
                        "'tool_choice.function.name' '{name}' is not one of 'tools'"
                    )));
                }
                out.insert("tool_choice".into(), json!("REQUIRED"));
            }
        }
    }
    if !tools.is_empty() {
        let tools = tools.into_iter().map(t::FunctionTool::openai).collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    out.insert("stream".into(), Value::Bool(e.stream));
    if let Some((k, v)) = e.body_param {
        out.insert(k.into(), Value::String(v.into()));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))
}

/// OpenAI `response_format` as Cohere's (`json_object`, optionally with a schema).
fn response_format(rf: &Value) -> Result<Option<Value>, EncodeError> {
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let schema = rf
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .cloned()
                .ok_or_else(|| bad("'response_format.json_schema.schema' is required"))?;
            Ok(Some(json!({"type": "json_object", "json_schema": schema})))
        }
        other => Err(bad(format!(
            "'response_format' type '{}' is not supported by provider cohere",
            other.unwrap_or("")
        ))),
    }
}

fn encode_messages(messages: Vec<Value>) -> Result<Vec<Value>, EncodeError> {
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        match t::role(m, i)? {
            "system" | "developer" => out.push(
                json!({"role": "system", "content": t::text_of(m.get("content"), i, Some(P))?}),
            ),
            "user" => {
                out.push(json!({"role": "user", "content": user_content(m.get("content"), i)?}))
            }
            "assistant" => {
                let text = t::text_of(m.get("content"), i, Some(P))?;
                let mut msg = Map::new();
                msg.insert("role".into(), json!("assistant"));
                let calls = match m.get("tool_calls").and_then(Value::as_array) {
                    Some(calls) if !calls.is_empty() => calls,
                    _ => {
                        if text.is_empty() {
                            continue;
                        }
                        msg.insert("content".into(), Value::String(text));
                        out.push(Value::Object(msg));
                        continue;
                    }
                };
                // With tool calls, Cohere carries the assistant's words as its tool plan.
                if !text.is_empty() {
                    msg.insert("tool_plan".into(), Value::String(text));
                }
                let mut list = Vec::with_capacity(calls.len());
                for (j, c) in calls.iter().enumerate() {
                    let call = t::tool_call(c, i, j)?;
                    let Some(id) = call.id.filter(|id| !id.is_empty()) else {
                        return Err(bad(format!(
                            "'messages[{i}].tool_calls[{j}].id' is required"
                        )));
                    };
                    let args = match call.arguments {
                        a if a.trim().is_empty() => "{}",
                        a => a,
                    };
                    list.push(t::openai_tool_call(id, call.name, args.to_string()));
                }
                msg.insert("tool_calls".into(), Value::Array(list));
                out.push(Value::Object(msg));
            }
            "tool" => {
                let id = t::tool_call_id(m, i)?;
                let content = t::text_of(m.get("content"), i, Some(P))?;
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            other => {
                return Err(bad(format!(
                    "'messages[{i}].role' '{other}' is not supported by provider cohere"
                )))
            }
        }
    }
    Ok(out)
}

/// A user turn: a string stays one; parts become Cohere's text / image_url parts.
fn user_content(content: Option<&Value>, i: usize) -> Result<Value, EncodeError> {
    let Some(Value::Array(parts)) = content else {
        return Ok(Value::String(t::text_of(content, i, Some(P))?));
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        match p.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => out
                .push(json!({"type": "text", "text": p.get("text").cloned().unwrap_or(json!(""))})),
            "image_url" => {
                let url = t::image_url(p, i, j)?;
                out.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            other => {
                return Err(bad(format!(
                "'messages[{i}].content[{j}].type' '{other}' is not supported by provider cohere"
            )))
            }
        }
    }
    Ok(Value::Array(out))
}

/// Cohere's `finish_reason` as OpenAI's; None for the failures (`ERROR`, `TIMEOUT`), which
/// are reported as errors instead.
pub fn finish_reason(r: &str) -> Option<&'static str> {
    match r {
        "COMPLETE" | "STOP_SEQUENCE" => Some("stop"),
        "MAX_TOKENS" => Some("length"),
        "TOOL_CALL" => Some("tool_calls"),
        "ERROR" | "TIMEOUT" | "ERROR_TOXIC" | "ERROR_LIMIT" => None,
        _ => Some("stop"),
    }
}

/// Cohere usage → OpenAI usage: billed units (what the key is charged for), else the
/// model's token counts; `cached_tokens` is Cohere's own count of cached input.
pub fn usage(u: &Value) -> Option<Usage> {
    let counts = |k: &str| {
        let o = u.get(k)?;
        let n = |f: &str| o.get(f).and_then(Value::as_f64).map(|v| v as u64);
        (n("input_tokens").is_some() || n("output_tokens").is_some()).then(|| {
            (
                n("input_tokens").unwrap_or(0),
                n("output_tokens").unwrap_or(0),
            )
        })
    };
    let (prompt, completion) = counts("billed_units").or_else(|| counts("tokens"))?;
    let cached = u
        .get("cached_tokens")
        .and_then(Value::as_f64)
        .map(|v| v as u64)
        .filter(|c| *c > 0);
    Some(Usage {
        search_units: None,
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        cached_tokens: cached,
        reasoning_tokens: None,
    })
}

/// A v2 Chat answer as an OpenAI `chat.completion`; `model` is the requested model
/// (Cohere's answer does not name it).
pub fn decode_chat(body: &[u8], created: u64, model: Option<&str>) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let m = v.get("message").ok_or("response has no 'message'")?;
    let reason = v
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("COMPLETE");
    let finish = finish_reason(reason).ok_or_else(|| {
        let detail = v
            .get("message")
            .and_then(|m| m.get("error"))
            .and_then(Value::as_str);
        format!(
            "cohere finished with {reason}{}",
            detail.map(|d| format!(": {d}")).unwrap_or_default()
        )
    })?;
    let mut text = String::new();
    let mut thinking = String::new();
    for c in m
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match c.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(c.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                thinking.push_str(c.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            _ => {}
        }
    }
    if text.is_empty() {
        if let Some(plan) = m.get("tool_plan").and_then(Value::as_str) {
            text.push_str(plan);
        }
    }
    let calls: Vec<Value> = m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let f = c.get("function");
            let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
            let args = s(f.and_then(|f| f.get("arguments")));
            t::openai_tool_call(
                s(c.get("id")),
                s(f.and_then(|f| f.get("name"))),
                if args.is_empty() { "{}".into() } else { args },
            )
        })
        .collect();
    let usage = v.get("usage").and_then(usage);
    let id = v.get("id").and_then(Value::as_str).unwrap_or("");
    let body = t::completion(Answer {
        id,
        created,
        model,
        content: text,
        reasoning: Some(thinking),
        tool_calls: calls,
        finish_reason: finish,
        usage: usage.as_ref(),
    })?;
    Ok(Decoded {
        body,
        usage,
        model: model.map(str::to_string),
    })
}

/// An OpenAI embeddings body as a v2 Embed body.
pub fn encode_embeddings(
    body: &BodyView<'_>,
    e: &Encode<'_>,
    input_type: &str,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(t::model(body, e)?));
    out.insert("texts".into(), json!(t::embedding_inputs(body, P)?));
    out.insert("input_type".into(), json!(input_type));
    out.insert("embedding_types".into(), json!(["float"]));
    if let Some(d) = field(body, "dimensions")? {
        out.insert("output_dimension".into(), d);
    }
    if let Some((k, v)) = e.body_param {
        out.insert(k.into(), Value::String(v.into()));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))
}

/// A v2 Embed answer as an OpenAI embeddings list.
pub fn decode_embeddings(body: &[u8], model: Option<&str>) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let vectors = match v.get("embeddings") {
        // embeddings_by_type (v2) or the bare float list (v1's embeddings_floats).
        Some(Value::Object(by_type)) => by_type.get("float").and_then(Value::as_array).cloned(),
        Some(Value::Array(list)) => Some(list.clone()),
        _ => None,
    }
    .ok_or("response has no float 'embeddings'")?;
    let billed = v
        .get("meta")
        .and_then(|m| m.get("billed_units"))
        .and_then(|b| b.get("input_tokens"))
        .and_then(Value::as_f64)
        .map(|n| n as u64);
    let usage = billed.map(|n| Usage {
        prompt_tokens: n,
        total_tokens: n,
        ..Usage::default()
    });
    let body = t::embedding_list(vectors, model, usage.as_ref())?;
    Ok(Decoded {
        body,
        usage,
        model: model.map(str::to_string),
    })
}

/// Usage of a native answer, for the log of an untranslated route: v2 chat's `usage`,
/// else `meta` (v1 chat and generate, embed, rerank); rerank bills search units, not
/// tokens, kept apart in [`Usage::search_units`]. Cohere's answers name no model.
pub fn read_usage(body: &[u8]) -> (Option<Usage>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let meta = v.get("usage").or_else(|| v.get("meta"));
    let mut u = meta.and_then(usage);
    let search_units = meta
        .and_then(|m| m.get("billed_units"))
        .and_then(|b| b.get("search_units"))
        .and_then(Value::as_f64)
        .filter(|n| *n > 0.0)
        .map(|n| n as u64);
    if let Some(n) = search_units {
        u.get_or_insert_with(Usage::default).search_units = Some(n);
    }
    (u, None)
}

/// A Cohere error body (`{"message": ...}`, v2 adds `id`) in OpenAI's shape.
pub fn decode_error(body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let message = v.get("message").and_then(Value::as_str)?;
    t::openai_error(message, "api_error", None)
}

/// Cohere's v2 event stream → OpenAI chunks, one upstream chunk at a time. A native
/// client's v1 stream (NDJSON, first byte `{`, never SSE's) goes to the v1 reader.
#[derive(Debug, Default)]
pub struct StreamMapper {
    v2: Framed<EventMapper>,
    /// The first non-blank byte was seen (SSE or NDJSON is known).
    framing_known: bool,
    v1: Option<Box<crate::llm::cohere_v1::StreamMapper>>,
}

impl StreamMapper {
    /// A mapper stamping chunks with `created` and the requested `model`.
    pub fn new(created: u64, model: Option<&str>) -> Self {
        StreamMapper {
            v2: Framed::wrap(EventMapper {
                chunks: Chunks {
                    created,
                    model: model.unwrap_or_default().to_string(),
                    ..Chunks::default()
                },
                ..EventMapper::default()
            }),
            ..Default::default()
        }
    }

    /// Maps the complete events in `chunk`; an unfinished event waits for the next chunk.
    pub fn on_chunk(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if !self.framing_known {
            if let Some(first) = chunk.iter().find(|b| !b.is_ascii_whitespace()) {
                self.framing_known = true;
                if *first == b'{' {
                    let c = &self.v2.mapper().chunks;
                    self.v1 = Some(Box::new(crate::llm::cohere_v1::StreamMapper::new(
                        c.created, &c.model,
                    )));
                }
            }
        }
        match self.v1.as_mut() {
            Some(v1) => v1.on_chunk(chunk, out),
            None => self.v2.on_chunk(chunk, out),
        }
    }

    /// At the end of the upstream body: the rest; true when `message-end` (v1:
    /// `stream-end`) was seen.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        match self.v1.as_mut() {
            Some(v1) => v1.finish(out),
            None => self.v2.finish(out),
        }
    }
}

/// One v2 event at a time (see [`StreamMapper`]).
#[derive(Debug, Default)]
pub struct EventMapper {
    chunks: Chunks,
    /// Cohere tool-call index → OpenAI tool-call index.
    tool_index: Vec<(u64, u64)>,
    done: bool,
}

impl EventMapper {
    fn tool_index(&mut self, cohere: u64, create: bool) -> u64 {
        if let Some((_, t)) = self.tool_index.iter().find(|(c, _)| *c == cohere) {
            return *t;
        }
        let t = self.tool_index.len() as u64;
        if create {
            self.tool_index.push((cohere, t));
        }
        t
    }
}

impl MapEvents for EventMapper {
    type Framing = sse::Framer;

    fn on_event(&mut self, ev: &sse::Event, out: &mut Vec<u8>) {
        let Ok(v) = serde_json::from_slice::<Value>(&ev.data) else {
            return;
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.kind.as_deref())
            .unwrap_or("");
        let msg = v.get("delta").and_then(|d| d.get("message"));
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message-start" => {
                self.chunks.id = v
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                self.chunks
                    .delta(json!({"role": "assistant", "content": ""}), None, out);
            }
            "content-start" | "content-delta" => {
                let c = msg.and_then(|m| m.get("content"));
                let text = c.and_then(|c| c.get("text")).and_then(Value::as_str);
                let thinking = c.and_then(|c| c.get("thinking")).and_then(Value::as_str);
                if let Some(t) = text.filter(|t| !t.is_empty()) {
                    self.chunks.delta(json!({ "content": t }), None, out);
                }
                if let Some(t) = thinking.filter(|t| !t.is_empty()) {
                    self.chunks
                        .delta(json!({ "reasoning_content": t }), None, out);
                }
            }
            "tool-plan-delta" => {
                if let Some(p) = msg
                    .and_then(|m| m.get("tool_plan"))
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                {
                    self.chunks.delta(json!({ "content": p }), None, out);
                }
            }
            "tool-call-start" => {
                let ti = self.tool_index(index, true);
                let c = msg.and_then(|m| m.get("tool_calls"));
                let f = c.and_then(|c| c.get("function"));
                fn s(v: Option<&Value>) -> &str {
                    v.and_then(Value::as_str).unwrap_or("")
                }
                let start = t::tool_call_start(
                    ti,
                    s(c.and_then(|c| c.get("id"))),
                    s(f.and_then(|f| f.get("name"))),
                    s(f.and_then(|f| f.get("arguments"))),
                );
                self.chunks.delta(start, None, out);
            }
            "tool-call-delta" => {
                let ti = self.tool_index(index, false);
                let args = msg
                    .and_then(|m| m.get("tool_calls"))
                    .and_then(|c| c.get("function"))
                    .and_then(|f| f.get("arguments"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !args.is_empty() {
                    self.chunks
                        .delta(t::tool_call_arguments(ti, args), None, out);
                }
            }
            "message-end" => {
                let d = v.get("delta");
                let reason = d
                    .and_then(|d| d.get("finish_reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("COMPLETE");
                match finish_reason(reason) {
                    Some(f) => self.chunks.delta(json!({}), Some(f), out),
                    None => {
                        let detail = d.and_then(|d| d.get("error")).and_then(Value::as_str);
                        let m = format!(
                            "cohere finished with {reason}{}",
                            detail.map(|d| format!(": {d}")).unwrap_or_default()
                        );
                        self.chunks.error(&m, "upstream_error", out);
                    }
                }
                let u = d.and_then(|d| d.get("usage")).and_then(usage);
                self.chunks.end(u.as_ref(), out);
                self.done = true;
            }
            _ => {}
        }
    }

    /// True once `message-end` was seen.
    fn end(&mut self, _out: &mut Vec<u8>) -> bool {
        self.done
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::plugins::ModelOptions;

    fn enc(v: Value) -> Result<Value, String> {
        let s = v.to_string();
        let view = BodyView::parse(s.as_bytes()).unwrap();
        let o = ModelOptions {
            top_k: Some(7),
            ..ModelOptions::default()
        };
        let e = Encode {
            model: Some("command-a-03-2025"),
            options: &o,
            stream: false,
            body_param: None,
        };
        encode_chat(&view, &e)
            .map(|b| serde_json::from_slice(&b).unwrap())
            .map_err(|e| e.0)
    }

    #[test]
    fn sampling_names_and_config_gaps() {
        let b = enc(
            json!({"messages": [{"role": "user", "content": "hi"}], "top_p": 0.5,
            "stop": "X", "max_tokens": 9}),
        )
        .unwrap();
        assert_eq!(b["p"], 0.5);
        assert_eq!(b["k"], 7, "config fills top_k");
        assert_eq!(b["stop_sequences"], json!(["X"]));
        assert_eq!(b["max_tokens"], 9);
        assert_eq!(b["stream"], false);
        assert!(b.get("top_p").is_none());
    }

    #[test]
    fn named_tool_choice_offers_only_that_tool() {
        let tools = json!([
            {"type": "function", "function": {"name": "a"}},
            {"type": "function", "function": {"name": "b"}}]);
        let b = enc(
            json!({"messages": [{"role": "user", "content": "x"}], "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "b"}}}),
        )
        .unwrap();
        assert_eq!(b["tool_choice"], "REQUIRED");
        assert_eq!(b["tools"].as_array().unwrap().len(), 1);
        assert_eq!(b["tools"][0]["function"]["name"], "b");
        let e = enc(
            json!({"messages": [{"role": "user", "content": "x"}], "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "zz"}}}),
        )
        .unwrap_err();
        assert!(e.contains("'tool_choice.function.name'"), "{e}");
    }

    #[test]
    fn refusals_name_the_field() {
        for (v, f) in [
            (
                json!({"messages": [{"role": "user", "content": "x"}], "n": 3}),
                "'n'",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "grammar"}}),
                "'response_format'",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "'messages[0].content[0].type'",
            ),
            (
                json!({"messages": [{"role": "function", "content": "x"}]}),
                "'messages[0].role'",
            ),
        ] {
            let e = enc(v).unwrap_err();
            assert!(e.contains(f) && e.contains("cohere"), "{e}");
        }
    }

    #[test]
    fn failed_generations_are_errors_not_answers() {
        let body =
            br#"{"id":"x","finish_reason":"ERROR","message":{"role":"assistant","content":[]}}"#;
        let e = decode_chat(body, 1, Some("m")).err().unwrap();
        assert!(e.contains("ERROR"), "{e}");
        let mut m = StreamMapper::new(1, Some("m"));
        let mut out = Vec::new();
        m.on_chunk(
            b"event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"ERROR\",\"error\":\"boom\"}}\n\n",
            &mut out,
        );
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("boom") && s.ends_with("data: [DONE]\n\n"), "{s}");
        assert!(m.finish(&mut Vec::new()));
    }

    #[test]
    fn native_usage_of_v1_v2_embed_and_rerank() {
        let (u, m) = read_usage(
            br#"{"id":"x","message":{},"usage":{"billed_units":{"input_tokens":5,"output_tokens":2}}}"#,
        );
        let u = u.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, m), (5, 2, None));
        let (u, _) = read_usage(
            br#"{"text":"hi","meta":{"api_version":{"version":"1"},"billed_units":{"input_tokens":9,"output_tokens":4}}}"#,
        );
        assert_eq!(u.unwrap().total_tokens, 13);
        let (u, _) = read_usage(
            br#"{"id":"r","results":[{"index":0,"relevance_score":0.9}],"meta":{"billed_units":{"search_units":1}}}"#,
        );
        let u = u.unwrap();
        assert_eq!(u.search_units, Some(1));
        assert_eq!(u.total_tokens, 0, "search units are not tokens");
        assert_eq!(read_usage(b"{}").0, None);
        assert_eq!(read_usage(b"nope").0, None);
    }

    #[test]
    fn v1_ndjson_streams_are_recognised() {
        let mut m = StreamMapper::new(1, Some("command-r"));
        let mut out = Vec::new();
        m.on_chunk(b"\n{\"event_type\":\"stream-start\",\"generation_id\":\"g\"}\n{\"event_type\":\"text-gen", &mut out);
        m.on_chunk(b"eration\",\"text\":\"Hi\"}\n{\"event_type\":\"stream-end\",\"finish_reason\":\"MAX_TOKENS\",\"response\":{\"meta\":{\"billed_units\":{\"input_tokens\":3,\"output_tokens\":1}}}}\n", &mut out);
        assert!(m.finish(&mut out));
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("\"content\":\"Hi\"") && s.contains("\"length\""),
            "{s}"
        );
        assert!(s.contains("\"prompt_tokens\":3"), "{s}");
    }

    #[test]
    fn errors_and_usage() {
        let e = decode_error(br#"{"id":"1","message":"invalid api token"}"#).unwrap();
        let v: Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["error"]["message"], "invalid api token");
        assert!(decode_error(b"<html>").is_none());
        let u = usage(
            &json!({"billed_units": {"input_tokens": 5, "output_tokens": 2},
            "tokens": {"input_tokens": 70, "output_tokens": 2}, "cached_tokens": 3}),
        )
        .unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (5, 2, 7)
        );
        assert_eq!(u.cached_tokens, Some(3));
        assert!(usage(&json!({})).is_none());
    }
}

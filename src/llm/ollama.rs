//! The Ollama dialect (`/api/chat`, `/api/embed`): OpenAI chat requests as native chat
//! bodies, native answers and NDJSON streams back as OpenAI shapes. Used by provider
//! `ollama`, and by `mistral` / `llama2` with their `*_format: ollama`.

use serde_json::{json, Map, Value};

use crate::llm::body::BodyView;
use crate::llm::framing::{Framed, MapEvents, Ndjson};
use crate::llm::translate::{self as t, bad, field, Answer, Chunks};
use crate::llm::usage::Usage;
use crate::llm::{Decoded, Encode, EncodeError};

/// The native chat path.
pub const CHAT_PATH: &str = "/api/chat";
/// The native embeddings path.
pub const EMBED_PATH: &str = "/api/embed";

const P: &str = "ollama";

/// An OpenAI chat body as an `/api/chat` body.
pub fn encode_chat(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(t::model(body, e)?));
    out.insert(
        "messages".into(),
        Value::Array(encode_messages(t::messages(body)?)?),
    );
    t::only_one_choice(body, P)?;
    let mut tools_off = false;
    match field(body, "tool_choice")? {
        None => {}
        Some(Value::String(s)) if s == "auto" => {}
        Some(Value::String(s)) if s == "none" => tools_off = true,
        Some(_) => {
            return Err(bad(
                "'tool_choice': provider ollama cannot force a tool call (use 'auto' or 'none')",
            ))
        }
    }
    if let Some(tools) = field(body, "tools")? {
        let tools = t::function_tools(&tools, P)?;
        if !tools_off && !tools.is_empty() {
            let list = tools.into_iter().map(t::FunctionTool::openai).collect();
            out.insert("tools".into(), Value::Array(list));
        }
    }
    if let Some(rf) = field(body, "response_format")? {
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                out.insert("format".into(), json!("json"));
            }
            Some("json_schema") => {
                let schema = rf
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .cloned()
                    .ok_or_else(|| bad("'response_format.json_schema.schema' is required"))?;
                out.insert("format".into(), schema);
            }
            other => {
                return Err(bad(format!(
                    "'response_format' type '{}' is not supported by provider ollama",
                    other.unwrap_or("")
                )))
            }
        }
    }
    let mut options = Map::new();
    if let Some(n) = t::max_tokens(body, e)? {
        options.insert("num_predict".into(), json!(n));
    }
    let o = e.options;
    for (k, conf) in [
        ("temperature", o.temperature.map(|v| json!(v))),
        ("top_p", o.top_p.map(|v| json!(v))),
        ("top_k", o.top_k.map(|v| json!(v))),
    ] {
        if let Some(v) = t::sampling(body, k, conf)? {
            options.insert(k.into(), v);
        }
    }
    for k in ["seed", "frequency_penalty", "presence_penalty"] {
        if let Some(v) = field(body, k)? {
            options.insert(k.into(), v);
        }
    }
    if let Some(s) = t::stop(body)? {
        options.insert("stop".into(), Value::Array(s));
    }
    if !options.is_empty() {
        out.insert("options".into(), Value::Object(options));
    }
    // Ollama streams unless told otherwise.
    out.insert("stream".into(), Value::Bool(e.stream));
    if let Some((k, v)) = e.body_param {
        out.insert(k.into(), Value::String(v.into()));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))
}

fn encode_messages(messages: Vec<Value>) -> Result<Vec<Value>, EncodeError> {
    // Tool results name their tool in Ollama; OpenAI only gives the call id.
    let mut call_names: Vec<(&str, &str)> = Vec::new();
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = t::role(m, i)?;
        match role {
            "system" | "developer" => out.push(
                json!({"role": "system", "content": t::text_of(m.get("content"), i, Some(P))?}),
            ),
            "user" => {
                let (text, images) = user_content(m.get("content"), i)?;
                let mut msg = json!({"role": "user", "content": text});
                if !images.is_empty() {
                    msg["images"] = json!(images);
                }
                out.push(msg);
            }
            "assistant" => {
                let mut msg = Map::new();
                msg.insert("role".into(), json!("assistant"));
                msg.insert(
                    "content".into(),
                    Value::String(t::text_of(m.get("content"), i, Some(P))?),
                );
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    let mut list = Vec::with_capacity(calls.len());
                    for (j, c) in calls.iter().enumerate() {
                        let call = t::tool_call(c, i, j)?;
                        let arguments = t::arguments_object(call.arguments, i, j)?;
                        list.push(json!({"function": {"name": call.name, "arguments": arguments}}));
                        call_names.push((call.id.unwrap_or(""), call.name));
                    }
                    if !list.is_empty() {
                        msg.insert("tool_calls".into(), Value::Array(list));
                    }
                }
                out.push(Value::Object(msg));
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                let mut msg =
                    json!({"role": "tool", "content": t::text_of(m.get("content"), i, Some(P))?});
                if let Some((_, name)) = call_names.iter().rev().find(|(c, _)| *c == id) {
                    msg["tool_name"] = json!(name);
                }
                out.push(msg);
            }
            other => {
                return Err(bad(format!(
                    "'messages[{i}].role' '{other}' is not supported by provider ollama"
                )))
            }
        }
    }
    Ok(out)
}

/// A user turn's text and its images (base64, from data URLs: Ollama fetches nothing).
fn user_content(content: Option<&Value>, i: usize) -> Result<(String, Vec<String>), EncodeError> {
    let Some(Value::Array(parts)) = content else {
        return Ok((t::text_of(content, i, Some(P))?, Vec::new()));
    };
    let mut text = Vec::new();
    let mut images = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        match p.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => text.push(p.get("text").and_then(Value::as_str).unwrap_or("")),
            "image_url" => {
                // Without a URL, the refusal below says what Ollama takes.
                let url = t::image_url(p, i, j).unwrap_or("");
                let (_, data) = t::data_url(url).ok_or_else(|| {
                    bad(format!(
                        "'messages[{i}].content[{j}].image_url.url': provider ollama takes images as base64 data URLs only"
                    ))
                })?;
                images.push(data.to_string());
            }
            other => {
                return Err(bad(format!(
                "'messages[{i}].content[{j}].type' '{other}' is not supported by provider ollama"
            )))
            }
        }
    }
    Ok((text.join("\n"), images))
}

/// Usage from a final (`done: true`) object.
fn usage(v: &Value) -> Option<Usage> {
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    if n("prompt_eval_count").is_none() && n("eval_count").is_none() {
        return None;
    }
    let (p, c) = (
        n("prompt_eval_count").unwrap_or(0),
        n("eval_count").unwrap_or(0),
    );
    Some(Usage {
        prompt_tokens: p,
        completion_tokens: c,
        total_tokens: p + c,
        ..Usage::default()
    })
}

/// Ollama's tool calls (whole, arguments as an object) as OpenAI ones; ids are made from
/// the call itself, since Ollama sends none (or, in newer versions, sometimes one).
fn tool_calls(message: Option<&Value>, created: u64, first: usize) -> Vec<Value> {
    let calls = message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array);
    calls
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(k, c)| {
            let f = c.get("function");
            let name = f
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let args = match f.and_then(|f| f.get("arguments")) {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => "{}".to_string(),
            };
            let index = (first + k) as u64;
            let id = match c.get("id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => format!(
                    "call_{:016x}",
                    t::fnv(&[
                        &created.to_le_bytes(),
                        &index.to_le_bytes(),
                        name.as_bytes(),
                        args.as_bytes()
                    ])
                ),
            };
            t::openai_tool_call(&id, name, args)
        })
        .collect()
}

fn finish(done_reason: Option<&str>, had_tools: bool) -> &'static str {
    match done_reason {
        Some("length") => "length",
        _ if had_tools => "tool_calls",
        _ => "stop",
    }
}

fn answer_id(created: u64, body: &[u8]) -> String {
    format!("chatcmpl-{:016x}", t::fnv(&[&created.to_le_bytes(), body]))
}

/// An `/api/chat` answer (`stream: false`) as an OpenAI `chat.completion`.
pub fn decode_chat(body: &[u8], created: u64, model: Option<&str>) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let m = v.get("message").ok_or("response has no 'message'")?;
    let content = m
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let thinking = m
        .get("thinking")
        .and_then(Value::as_str)
        .map(str::to_string);
    let calls = tool_calls(Some(m), created, 0);
    let usage = usage(&v);
    let model = v.get("model").and_then(Value::as_str).or(model);
    let done_reason = v.get("done_reason").and_then(Value::as_str);
    let id = answer_id(created, body);
    let out = t::completion(Answer {
        id: &id,
        created,
        model,
        content,
        reasoning: thinking,
        finish_reason: finish(done_reason, !calls.is_empty()),
        tool_calls: calls,
        usage: usage.as_ref(),
    })?;
    Ok(Decoded {
        body: out,
        usage,
        model: model.map(str::to_string),
    })
}

/// An OpenAI embeddings body as an `/api/embed` body.
pub fn encode_embeddings(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(t::model(body, e)?));
    out.insert("input".into(), json!(t::embedding_inputs(body, P)?));
    if let Some(d) = field(body, "dimensions")? {
        out.insert("dimensions".into(), d);
    }
    if let Some((k, v)) = e.body_param {
        out.insert(k.into(), Value::String(v.into()));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))
}

/// An `/api/embed` answer as an OpenAI embeddings list.
pub fn decode_embeddings(body: &[u8], model: Option<&str>) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let vectors = v
        .get("embeddings")
        .and_then(Value::as_array)
        .cloned()
        .ok_or("response has no 'embeddings'")?;
    let model = v.get("model").and_then(Value::as_str).or(model);
    let usage = v
        .get("prompt_eval_count")
        .and_then(Value::as_u64)
        .map(|n| Usage {
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

/// Usage and model of a native answer.
pub fn read_usage(body: &[u8]) -> (Option<Usage>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let model = v.get("model").and_then(Value::as_str).map(str::to_string);
    (usage(&v), model)
}

/// An Ollama error body (`{"error": "..."}`) in OpenAI's shape.
pub fn decode_error(body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let message = v.get("error").and_then(Value::as_str)?;
    t::openai_error(message, "api_error", None)
}

/// Ollama's NDJSON stream (one JSON object per line) → OpenAI chunks.
pub type StreamMapper = Framed<EventMapper>;

impl StreamMapper {
    /// A mapper stamping chunks with `created` (the model comes with every line).
    pub fn new(created: u64, model: Option<&str>) -> Self {
        Framed::wrap(EventMapper {
            chunks: Chunks {
                created,
                model: model.unwrap_or_default().to_string(),
                ..Chunks::default()
            },
            ..EventMapper::default()
        })
    }
}

/// One Ollama line at a time (see [`StreamMapper`]).
#[derive(Debug, Default)]
pub struct EventMapper {
    chunks: Chunks,
    started: bool,
    tools: usize,
    done: bool,
}

impl MapEvents for EventMapper {
    type Framing = Ndjson;

    fn on_event(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let line = line.trim_ascii();
        if !line.starts_with(b"{") {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        if let Some(e) = v.get("error") {
            let m = e
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string());
            self.chunks.error(&m, "upstream_error", out);
            return;
        }
        if !self.started {
            self.started = true;
            if let Some(m) = v.get("model").and_then(Value::as_str) {
                self.chunks.model = m.to_string();
            }
            self.chunks.id = answer_id(self.chunks.created, line);
            self.chunks
                .delta(json!({"role": "assistant", "content": ""}), None, out);
        }
        let m = v.get("message");
        if let Some(th) = m
            .and_then(|m| m.get("thinking"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            self.chunks
                .delta(json!({ "reasoning_content": th }), None, out);
        }
        if let Some(c) = m
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            self.chunks.delta(json!({ "content": c }), None, out);
        }
        let calls = tool_calls(m, self.chunks.created, self.tools);
        for (k, c) in calls.iter().enumerate() {
            let delta = json!({"index": self.tools + k, "id": c["id"], "type": "function",
                "function": c["function"]});
            self.chunks
                .delta(json!({ "tool_calls": [delta] }), None, out);
        }
        self.tools += calls.len();
        if v.get("done").and_then(Value::as_bool) == Some(true) {
            let reason = v.get("done_reason").and_then(Value::as_str);
            self.chunks
                .delta(json!({}), Some(finish(reason, self.tools > 0)), out);
            self.chunks.end(usage(&v).as_ref(), out);
            self.done = true;
        }
    }

    /// True once the `done: true` line was seen.
    fn end(&mut self, _out: &mut Vec<u8>) -> bool {
        self.done
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::plugins::ModelOptions;

    fn enc(v: Value, stream: bool) -> Result<Value, String> {
        let s = v.to_string();
        let view = BodyView::parse(s.as_bytes()).unwrap();
        let o = ModelOptions {
            temperature: Some(0.3),
            ..ModelOptions::default()
        };
        let e = Encode {
            model: Some("llama3.2"),
            options: &o,
            stream,
            body_param: None,
        };
        encode_chat(&view, &e)
            .map(|b| serde_json::from_slice(&b).unwrap())
            .map_err(|e| e.0)
    }

    #[test]
    fn options_and_explicit_stream_flag() {
        let b = enc(
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stop": "x",
                "response_format": {"type": "json_object"}}),
            false,
        )
        .unwrap();
        assert_eq!(b["stream"], false, "Ollama streams by default");
        assert_eq!(b["options"]["num_predict"], 5);
        assert_eq!(b["options"]["temperature"], 0.3);
        assert_eq!(b["options"]["stop"], json!(["x"]));
        assert_eq!(b["format"], "json");
    }

    #[test]
    fn images_must_be_data_urls_and_tool_choice_cannot_force() {
        let e = enc(
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
            false,
        )
        .unwrap_err();
        assert!(e.contains("'messages[0].content[0].image_url.url'"), "{e}");
        let e = enc(
            json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}),
            false,
        )
        .unwrap_err();
        assert!(e.contains("'tool_choice'") && e.contains("ollama"), "{e}");
    }

    #[test]
    fn ndjson_lines_split_anywhere() {
        let s = b"{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"length\",\"prompt_eval_count\":4,\"eval_count\":1}\n";
        let mut whole = Vec::new();
        let mut m = StreamMapper::new(1, None);
        m.on_chunk(s, &mut whole);
        assert!(m.finish(&mut whole));
        for step in [1, 3, 50] {
            let mut out = Vec::new();
            let mut m = StreamMapper::new(1, None);
            for c in s.chunks(step) {
                m.on_chunk(c, &mut out);
            }
            assert!(m.finish(&mut out));
            assert_eq!(out, whole);
        }
        let text = String::from_utf8(whole).unwrap();
        assert!(text.contains("\"finish_reason\":\"length\""), "{text}");
        assert!(text.contains("\"total_tokens\":5"), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn errors() {
        let e = decode_error(br#"{"error":"model 'x' not found"}"#).unwrap();
        assert!(String::from_utf8(e)
            .unwrap()
            .contains("model 'x' not found"));
        assert!(decode_error(br#"{"message":"x"}"#).is_none());
        let mut out = Vec::new();
        let mut m = StreamMapper::new(1, None);
        m.on_chunk(b"{\"error\":\"out of memory\"}\n", &mut out);
        assert!(!m.finish(&mut out));
        assert!(String::from_utf8(out).unwrap().contains("out of memory"));
    }
}

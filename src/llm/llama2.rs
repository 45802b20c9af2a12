//! `llama2_format: raw`: OpenAI chat requests as one Llama-2 chat prompt
//! (`<s>[INST] <<SYS>>…<</SYS>> … [/INST]`) for a text-generation-inference style
//! `generate` endpoint (`{inputs, parameters}`), and its answers — `{generated_text}`,
//! `[{generated_text}]`, or Kong's `{data: [{generated_text}]}` — and its SSE token stream
//! back as OpenAI shapes.

use serde_json::{json, Map, Value};

use crate::llm::body::BodyView;
use crate::llm::framing::{Framed, MapEvents};
use crate::llm::sse;
use crate::llm::translate::{self as t, bad, field, Answer, Chunks};
use crate::llm::usage::Usage;
use crate::llm::{Decoded, Encode, EncodeError};

/// The buffered and streaming paths under a bare `upstream_url`.
pub const GENERATE_PATH: &str = "/generate";
/// See [`GENERATE_PATH`].
pub const GENERATE_STREAM_PATH: &str = "/generate_stream";

const P: &str = "llama2 (raw format)";

/// The Llama-2 chat prompt for OpenAI messages (the format Meta's chat models were tuned
/// on): system text inside the first instruction, each user turn an `[INST]` block, each
/// answer closed by `</s>`.
pub fn prompt(messages: &[Value]) -> Result<String, EncodeError> {
    let mut system: Vec<String> = Vec::new();
    // (user text, answer) pairs; the last user turn has no answer yet.
    let mut turns: Vec<(String, Option<String>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let text = t::text_of(m.get("content"), i, Some(P))?;
        match t::role(m, i)? {
            "system" | "developer" => system.push(text),
            "user" => match turns.last_mut() {
                Some((u, None)) => {
                    u.push_str("\n\n");
                    u.push_str(&text);
                }
                _ => turns.push((text, None)),
            },
            "assistant" => {
                if m.get("tool_calls")
                    .and_then(Value::as_array)
                    .is_some_and(|c| !c.is_empty())
                {
                    return Err(bad(format!(
                        "'messages[{i}].tool_calls': provider {P} has no tool calling"
                    )));
                }
                match turns.last_mut() {
                    Some((_, a @ None)) => *a = Some(text),
                    Some((_, Some(a))) => {
                        a.push_str("\n\n");
                        a.push_str(&text);
                    }
                    None => turns.push((String::new(), Some(text))),
                }
            }
            other => {
                return Err(bad(format!(
                    "'messages[{i}].role' '{other}' is not supported by provider {P}"
                )))
            }
        }
    }
    let mut out = String::new();
    if turns.is_empty() {
        turns.push((String::new(), None));
    }
    for (k, (user, answer)) in turns.iter().enumerate() {
        out.push_str("<s>[INST] ");
        if k == 0 && !system.is_empty() {
            out.push_str("<<SYS>>\n");
            out.push_str(&system.join("\n"));
            out.push_str("\n<</SYS>>\n\n");
        }
        out.push_str(user.trim());
        out.push_str(" [/INST]");
        if let Some(a) = answer {
            out.push(' ');
            out.push_str(a.trim());
            out.push_str(" </s>");
        }
    }
    Ok(out)
}

/// An OpenAI chat body as a `generate` body.
pub fn encode_chat(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Vec<u8>, EncodeError> {
    let messages = t::messages(body)?;
    t::only_one_choice(body, P)?;
    for k in ["tools", "response_format"] {
        if let Some(v) = field(body, k)? {
            let harmless =
                k == "response_format" && v.get("type").and_then(Value::as_str) == Some("text");
            if !harmless {
                return Err(bad(format!("'{k}' is not supported by provider {P}")));
            }
        }
    }
    let mut params = Map::new();
    if let Some(n) = t::max_tokens(body, e)? {
        params.insert("max_new_tokens".into(), json!(n));
    }
    let o = e.options;
    for (k, conf) in [
        ("temperature", o.temperature.map(|v| json!(v))),
        ("top_p", o.top_p.map(|v| json!(v))),
        ("top_k", o.top_k.map(|v| json!(v))),
        ("seed", None),
    ] {
        if let Some(v) = t::sampling(body, k, conf)? {
            params.insert(k.into(), v);
        }
    }
    if let Some(s) = t::stop(body)? {
        params.insert("stop".into(), Value::Array(s));
    }
    // Token counts and the finish reason come with the details.
    params.insert("details".into(), json!(true));
    params.insert("return_full_text".into(), json!(false));
    let mut out = Map::new();
    out.insert("inputs".into(), Value::String(prompt(&messages)?));
    out.insert("parameters".into(), Value::Object(params));
    if e.stream {
        // Read by TGI's `/` route, which streams or not by it; `/generate_stream` needs none.
        out.insert("stream".into(), json!(true));
    }
    if let Some((k, v)) = e.body_param {
        out.insert(k.into(), Value::String(v.into()));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))
}

/// The answer after the prompt, when the server echoes it.
fn reply_text(generated: &str) -> &str {
    let after = match generated.rfind("[/INST]") {
        Some(i) => &generated[i + "[/INST]".len()..],
        None => generated,
    };
    after.trim()
}

fn finish_reason(details: Option<&Value>) -> &'static str {
    match details
        .and_then(|d| d.get("finish_reason"))
        .and_then(Value::as_str)
    {
        Some("length") => "length",
        _ => "stop",
    }
}

/// Generated tokens from TGI's details; the prompt's count only when the server sent its
/// prefill tokens (TGI does so only on request), else 0.
fn usage(details: Option<&Value>) -> Option<Usage> {
    let d = details?;
    let completion = d.get("generated_tokens").and_then(Value::as_u64)?;
    let prompt = d
        .get("prefill")
        .and_then(Value::as_array)
        .map(|p| p.len() as u64)
        .unwrap_or(0);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        ..Usage::default()
    })
}

/// A `generate` answer as an OpenAI `chat.completion`.
pub fn decode_chat(body: &[u8], created: u64, model: Option<&str>) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let item = match &v {
        Value::Array(a) if a.len() == 1 => &a[0],
        Value::Object(o) => match o.get("data") {
            Some(Value::Array(a)) if a.len() == 1 => &a[0],
            _ => &v,
        },
        _ => return Err("expected one generation".into()),
    };
    let text = item
        .get("generated_text")
        .and_then(Value::as_str)
        .ok_or("response has no 'generated_text'")?;
    let details = item.get("details");
    let usage = usage(details);
    let id = format!("chatcmpl-{:016x}", t::fnv(&[&created.to_le_bytes(), body]));
    let out = t::completion(Answer {
        id: &id,
        created,
        model,
        content: reply_text(text).to_string(),
        reasoning: None,
        tool_calls: Vec::new(),
        finish_reason: finish_reason(details),
        usage: usage.as_ref(),
    })?;
    Ok(Decoded {
        body: out,
        usage,
        model: model.map(str::to_string),
    })
}

/// Usage of a native answer.
pub fn read_usage(body: &[u8]) -> (Option<Usage>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let item = v.as_array().and_then(|a| a.first()).unwrap_or(&v);
    (usage(item.get("details")), None)
}

/// A TGI / Hugging Face error (`{"error": "...", "error_type"?}`) in OpenAI's shape.
pub fn decode_error(body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let message = v.get("error").and_then(Value::as_str)?;
    let code = v.get("error_type").and_then(Value::as_str);
    t::openai_error(message, "api_error", code)
}

/// TGI's token stream (`data: {token, generated_text, details}`) → OpenAI chunks.
pub type StreamMapper = Framed<EventMapper>;

impl StreamMapper {
    /// A mapper stamping chunks with `created` and the requested `model`.
    pub fn new(created: u64, model: Option<&str>) -> Self {
        Framed::wrap(EventMapper::new(created, model))
    }
}

/// One TGI event at a time (see [`StreamMapper`]; Hugging Face's reader feeds it too).
#[derive(Debug, Default)]
pub struct EventMapper {
    chunks: Chunks,
    started: bool,
    wrote_text: bool,
    done: bool,
}

impl EventMapper {
    /// A mapper stamping chunks with `created` and the requested `model`.
    pub fn new(created: u64, model: Option<&str>) -> Self {
        EventMapper {
            chunks: Chunks {
                created,
                model: model.unwrap_or_default().to_string(),
                ..Chunks::default()
            },
            ..Default::default()
        }
    }
}

impl MapEvents for EventMapper {
    type Framing = sse::Framer;

    fn on_event(&mut self, ev: &sse::Event, out: &mut Vec<u8>) {
        let Ok(v) = serde_json::from_slice::<Value>(&ev.data) else {
            return;
        };
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            self.chunks.error(e, "upstream_error", out);
            return;
        }
        if !self.started {
            self.started = true;
            self.chunks.id = format!(
                "chatcmpl-{:016x}",
                t::fnv(&[&self.chunks.created.to_le_bytes(), &ev.data])
            );
            self.chunks
                .delta(json!({"role": "assistant", "content": ""}), None, out);
        }
        let token = v.get("token");
        let special = token
            .and_then(|t| t.get("special"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(mut text) = token
            .and_then(|t| t.get("text"))
            .and_then(Value::as_str)
            .filter(|_| !special)
        {
            // The space before the first word belongs to the prompt's `[/INST]`, as in
            // the buffered answer, which is trimmed.
            if !self.wrote_text {
                text = text.trim_start();
            }
            if !text.is_empty() {
                self.wrote_text = true;
                self.chunks.delta(json!({ "content": text }), None, out);
            }
        }
        let last = v.get("generated_text").is_some_and(|g| !g.is_null())
            || v.get("details").is_some_and(|d| !d.is_null());
        if last {
            let details = v.get("details").filter(|d| !d.is_null());
            self.chunks
                .delta(json!({}), Some(finish_reason(details)), out);
            self.chunks.end(usage(details).as_ref(), out);
            self.done = true;
        }
    }

    /// True once the final event (with the whole text) was seen.
    fn end(&mut self, _out: &mut Vec<u8>) -> bool {
        self.done
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn llama2_prompt_format() {
        let m = json!([
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "2+2?"}]);
        assert_eq!(
            prompt(m.as_array().unwrap()).unwrap(),
            "<s>[INST] <<SYS>>\nBe terse.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] 2+2? [/INST]"
        );
        let m = json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]);
        assert_eq!(
            prompt(m.as_array().unwrap()).unwrap(),
            "<s>[INST] a\n\nb [/INST]"
        );
    }

    #[test]
    fn answers_in_every_shape() {
        for body in [
            &br#"[{"generated_text":"<s>[INST] x [/INST]  Four. "}]"#[..],
            br#"{"generated_text":"Four.","details":{"finish_reason":"eos_token","generated_tokens":2}}"#,
            br#"{"data":[{"generated_text":"[INST] x [/INST] Four."}]}"#,
        ] {
            let d = decode_chat(body, 1, Some("llama-2")).unwrap();
            let v: Value = serde_json::from_slice(&d.body).unwrap();
            assert_eq!(v["choices"][0]["message"]["content"], "Four.");
            assert_eq!(v["model"], "llama-2");
        }
        assert!(decode_chat(b"[]", 1, None).is_err());
    }

    #[test]
    fn tools_refused() {
        let body = br#"{"messages":[{"role":"user","content":"x"}],"tools":[]}"#;
        let view = BodyView::parse(body).unwrap();
        let o = crate::config::plugins::ModelOptions::default();
        let e = Encode {
            model: Some("m"),
            options: &o,
            stream: false,
            body_param: None,
        };
        let err = encode_chat(&view, &e).err().unwrap().0;
        assert!(err.contains("'tools'") && err.contains("llama2"), "{err}");
    }
}

//! Prompt token estimates, counted the way OpenAI bills them: tiktoken's `o200k_base`
//! (GPT-4o, o-series, GPT-4.1/5) or `cl100k_base` (GPT-4, GPT-3.5, text-embedding-*), plus
//! the chat format's per-message overhead. Other providers' models are estimated with
//! `o200k_base`, which is close for modern BPE vocabularies; their real usage is charged
//! after the answer anyway.

use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// Tokens the chat format adds per message (`<|start|>role…<|end|>`).
const PER_MESSAGE: u64 = 3;
/// Tokens a message's `name` adds.
const PER_NAME: u64 = 1;
/// Tokens priming the assistant's reply.
const REPLY_PRIMING: u64 = 3;
/// OpenAI's charge for an image part at low detail; the gateway does not fetch images.
const IMAGE_PART: u64 = 85;

/// The BPE vocabulary OpenAI uses for `model`.
fn encoding(model: Option<&str>) -> &'static CoreBPE {
    let m = model.unwrap_or("").to_ascii_lowercase();
    let m = m.rsplit('/').next().unwrap_or("");
    let gpt4_classic =
        m.starts_with("gpt-4") && !m.starts_with("gpt-4o") && !m.starts_with("gpt-4.");
    let cl100k = gpt4_classic
        || m.starts_with("gpt-3.5")
        || m.starts_with("gpt-35")
        || m.starts_with("text-embedding-3")
        || m.starts_with("text-embedding-ada");
    if cl100k {
        tiktoken_rs::cl100k_base_singleton()
    } else {
        tiktoken_rs::o200k_base_singleton()
    }
}

/// Loads the vocabularies off the request path (the first load takes a while).
pub fn warm_up() {
    std::thread::spawn(|| {
        let _ = tiktoken_rs::o200k_base_singleton();
        let _ = tiktoken_rs::cl100k_base_singleton();
    });
}

/// Tokens of `text` for `model`.
pub fn count(text: &str, model: Option<&str>) -> u64 {
    if text.is_empty() {
        return 0;
    }
    encoding(model).encode_ordinary(text).len() as u64
}

/// The text of a message's `content`: a string, or the text parts of an array.
fn content_tokens(bpe: &CoreBPE, content: &Value) -> u64 {
    match content {
        Value::String(s) => bpe.encode_ordinary(s).len() as u64,
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => bpe.encode_ordinary(s).len() as u64,
                Value::Object(o) => match o.get("text").and_then(Value::as_str) {
                    Some(t) => bpe.encode_ordinary(t).len() as u64,
                    None if o.get("type").and_then(Value::as_str).is_some_and(|t| {
                        t == "image_url" || t == "input_image" || t == "image"
                    }) =>
                    {
                        IMAGE_PART
                    }
                    // Anthropic blocks: a tool's result and a call's input are prompt too.
                    None => match o.get("type").and_then(Value::as_str) {
                        Some("tool_result") => o
                            .get("content")
                            .map(|c| content_tokens(bpe, c))
                            .unwrap_or(0),
                        Some("tool_use") => o
                            .get("input")
                            .map(|i| bpe.encode_ordinary(&i.to_string()).len() as u64)
                            .unwrap_or(0),
                        _ => 0,
                    },
                },
                _ => 0,
            })
            .sum(),
        Value::Null => 0,
        other => bpe.encode_ordinary(&other.to_string()).len() as u64,
    }
}

/// One chat (or Responses input) message.
fn message_tokens(bpe: &CoreBPE, m: &Value) -> u64 {
    let Some(o) = m.as_object() else {
        return match m {
            Value::String(s) => PER_MESSAGE + bpe.encode_ordinary(s).len() as u64,
            _ => 0,
        };
    };
    let mut n = PER_MESSAGE;
    if let Some(r) = o.get("role").and_then(Value::as_str) {
        n += bpe.encode_ordinary(r).len() as u64;
    }
    if let Some(name) = o.get("name").and_then(Value::as_str) {
        n += PER_NAME + bpe.encode_ordinary(name).len() as u64;
    }
    if let Some(c) = o.get("content") {
        n += content_tokens(bpe, c);
    }
    // Responses items that are not messages carry their text elsewhere.
    for key in ["output", "arguments"] {
        if let Some(v) = o.get(key) {
            n += content_tokens(bpe, v);
        }
    }
    if let Some(calls) = o.get("tool_calls") {
        n += bpe.encode_ordinary(&calls.to_string()).len() as u64;
    }
    n
}

/// The estimated prompt tokens of an OpenAI-shaped request body (chat, completions,
/// Responses or embeddings), for `model` (the body's own when None).
pub fn estimate_prompt(body: &Value, model: Option<&str>) -> u64 {
    let model = model.or_else(|| body.get("model").and_then(Value::as_str));
    let bpe = encoding(model);
    let mut n = 0;
    if let Some(ms) = body.get("messages").and_then(Value::as_array) {
        n += ms.iter().map(|m| message_tokens(bpe, m)).sum::<u64>() + REPLY_PRIMING;
    }
    if let Some(i) = body.get("instructions").and_then(Value::as_str) {
        n += PER_MESSAGE + bpe.encode_ordinary(i).len() as u64;
    }
    // Anthropic Messages bodies (Claude Code) carry the system prompt beside the messages.
    if let Some(s) = body.get("system").filter(|s| !s.is_null()) {
        n += PER_MESSAGE + content_tokens(bpe, s);
    }
    match body.get("input") {
        Some(Value::String(s)) => n += bpe.encode_ordinary(s).len() as u64,
        Some(Value::Array(items)) => {
            n += items.iter().map(|m| message_tokens(bpe, m)).sum::<u64>() + REPLY_PRIMING
        }
        _ => {}
    }
    match body.get("prompt") {
        Some(Value::String(s)) => n += bpe.encode_ordinary(s).len() as u64,
        Some(Value::Array(ps)) => n += ps.iter().map(|p| content_tokens(bpe, p)).sum::<u64>(),
        _ => {}
    }
    // Tool definitions are part of the prompt the model sees.
    if let Some(t) = body.get("tools").filter(|t| !t.is_null()) {
        n += bpe.encode_ordinary(&t.to_string()).len() as u64;
    }
    n
}

/// The prompt's text pieces (message contents, `instructions`, `input`, `prompt`), for
/// size limits that count characters.
pub fn prompt_texts(body: &Value) -> Vec<&str> {
    fn content<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(parts) => {
                for p in parts {
                    match p {
                        Value::String(s) => out.push(s),
                        Value::Object(o) => {
                            if let Some(t) = o.get("text").and_then(Value::as_str) {
                                out.push(t);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    fn message<'a>(m: &'a Value, out: &mut Vec<&'a str>) {
        match m {
            Value::String(s) => out.push(s),
            Value::Object(o) => {
                for key in ["content", "output", "arguments"] {
                    if let Some(v) = o.get(key) {
                        content(v, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(ms) = body.get("messages").and_then(Value::as_array) {
        ms.iter().for_each(|m| message(m, &mut out));
    }
    if let Some(i) = body.get("instructions").and_then(Value::as_str) {
        out.push(i);
    }
    match body.get("input") {
        Some(Value::Array(items)) => items.iter().for_each(|m| message(m, &mut out)),
        Some(v) => content(v, &mut out),
        None => {}
    }
    if let Some(p) = body.get("prompt") {
        content(p, &mut out);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_like_tiktoken() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(count("hello world", Some("gpt-4o")), 2);
        assert_eq!(count("tiktoken is great!", Some("gpt-4")), 6);
        assert_eq!(count("", None), 0);
    }

    #[test]
    fn chat_overhead_matches_openai_cookbook() {
        // The cookbook's formula: 3 per message + role + content, + 3 for the reply.
        let body = json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "hello world"}
        ]});
        let expect = 3
            + count("system", Some("gpt-4o"))
            + count("You are helpful.", Some("gpt-4o"))
            + 3
            + count("user", Some("gpt-4o"))
            + 2
            + 3;
        assert_eq!(estimate_prompt(&body, None), expect);
    }

    #[test]
    fn responses_and_completions() {
        let r = json!({"model": "gpt-5", "instructions": "be brief", "input": "hello world"});
        assert_eq!(estimate_prompt(&r, None), 3 + count("be brief", None) + 2);
        let c = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "hello world"});
        assert_eq!(estimate_prompt(&c, None), 2);
        let parts = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "hello world"}, {"type": "image_url", "image_url": {"url": "x"}}
        ]}]});
        assert_eq!(estimate_prompt(&parts, None), 3 + 1 + 2 + IMAGE_PART + 3);
    }

    #[test]
    fn anthropic_messages_count_system_tools_and_results() {
        let m = json!({"model": "claude", "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "hello world"}]}
        ]});
        let expect = (3 + count("be brief", None))
            + (3 + count("assistant", None) + count("{\"a\":1}", None))
            + (3 + 1 + 2)
            + 3;
        assert_eq!(estimate_prompt(&m, None), expect);
    }
}

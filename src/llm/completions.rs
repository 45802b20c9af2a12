//! Legacy completions (`llm/v1/completions`) on providers that only translate chat: the
//! prompt becomes one user message, the chat answer (or chunk stream) becomes a
//! `text_completion`. Pure functions; the target's dialect does the rest.

use serde_json::{json, Map, Value};

use crate::llm::body::BodyView;
use crate::llm::framing::{Framed, MapEvents};
use crate::llm::sse;
use crate::llm::translate::bad;
use crate::llm::EncodeError;

/// Request fields that mean the same in both APIs.
const SHARED: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "stream",
];

/// A completions body as a chat body (one user message).
pub fn to_chat(body: &BodyView<'_>, stream: bool) -> Result<Vec<u8>, EncodeError> {
    let prompt = match body.raw("prompt").map(serde_json::from_str::<Value>) {
        Some(Ok(Value::String(p))) => p,
        Some(Ok(Value::Array(a))) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Some(Ok(Value::Array(_))) => {
            return Err(bad(
                "'prompt': only a single prompt string can be translated for this provider",
            ))
        }
        _ => return Err(bad("'prompt' must be a string")),
    };
    for field in ["suffix", "echo", "best_of", "logprobs", "logit_bias"] {
        if body.raw(field).is_some_and(|r| r != "null" && r != "false") {
            return Err(bad(format!(
                "'{field}' cannot be translated for this provider (it only has chat)"
            )));
        }
    }
    let mut out = Map::new();
    for k in SHARED {
        if let Some(raw) = body.raw(k) {
            let v: Value =
                serde_json::from_str(raw).map_err(|_| bad(format!("'{k}' is not valid JSON")))?;
            out.insert((*k).to_string(), v);
        }
    }
    out.insert(
        "messages".into(),
        json!([{"role": "user", "content": prompt}]),
    );
    out.insert("stream".into(), json!(stream));
    if stream {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))
}

/// One chat choice as a completions choice.
fn choice(c: &Value, text_of: &str) -> Value {
    json!({
        "text": c.get(text_of).and_then(|m| m.get("content")).and_then(Value::as_str).unwrap_or(""),
        "index": c.get("index").cloned().unwrap_or(json!(0)),
        "logprobs": null,
        "finish_reason": c.get("finish_reason").cloned().unwrap_or(Value::Null),
    })
}

/// A chat object or chunk as a `text_completion` one (`text_of`: `message` or `delta`).
fn convert(v: &Value, text_of: &str) -> Value {
    let choices: Vec<Value> = v
        .get("choices")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().map(|c| choice(c, text_of)).collect())
        .unwrap_or_default();
    let mut out = json!({
        "id": v.get("id").cloned().unwrap_or(Value::Null),
        "object": "text_completion",
        "created": v.get("created").cloned().unwrap_or(Value::Null),
        "model": v.get("model").cloned().unwrap_or(Value::Null),
        "choices": choices,
    });
    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
        out["usage"] = u.clone();
    }
    out
}

/// An OpenAI `chat.completion` as a `text_completion`.
pub fn from_chat(chat: &[u8]) -> Result<Vec<u8>, String> {
    let v: Value = serde_json::from_slice(chat).map_err(|e| format!("invalid JSON: {e}"))?;
    if !v.get("choices").is_some_and(Value::is_array) {
        return Err("response has no 'choices'".into());
    }
    serde_json::to_vec(&convert(&v, "message")).map_err(|e| e.to_string())
}

/// Chat chunks (SSE) → `text_completion` chunks, one event at a time.
pub type StreamMapper = Framed<EventMapper>;

/// One chat event at a time (see [`StreamMapper`]).
#[derive(Debug, Default)]
pub struct EventMapper;

impl MapEvents for EventMapper {
    type Framing = sse::Framer;

    /// Errors and `[DONE]` pass as they are.
    fn on_event(&mut self, ev: &sse::Event, out: &mut Vec<u8>) {
        let data = &ev.data[..];
        if data.is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            // `[DONE]` (or anything else that is not a chunk) goes on unchanged.
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\n\n");
            return;
        };
        if v.get("error").is_some() {
            sse::write_data(out, &v);
            return;
        }
        sse::write_data(out, &convert(&v, "delta"));
    }

    /// Whether the chat stream was complete is for the mapper before this one to say.
    fn end(&mut self, _out: &mut Vec<u8>) -> bool {
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn prompt_becomes_a_user_message_and_answers_text_completions() {
        let req = br#"{"model":"m","prompt":"Say hi","max_tokens":5,"stop":["\n"],"stream":true}"#;
        let chat: Value =
            serde_json::from_slice(&to_chat(&BodyView::parse(req).unwrap(), true).unwrap())
                .unwrap();
        assert_eq!(
            chat["messages"],
            json!([{"role": "user", "content": "Say hi"}])
        );
        assert_eq!(chat["max_tokens"], 5);
        assert_eq!(chat["stop"], json!(["\n"]));
        assert_eq!(chat["stream_options"]["include_usage"], true);
        assert!(chat.get("prompt").is_none());

        let bad_req = br#"{"prompt":"x","suffix":"y"}"#;
        let e = to_chat(&BodyView::parse(bad_req).unwrap(), false)
            .err()
            .unwrap();
        assert!(e.0.contains("'suffix'"), "{e}");
        let many = br#"{"prompt":["a","b"]}"#;
        assert!(to_chat(&BodyView::parse(many).unwrap(), false).is_err());

        let answer = br#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#;
        let t: Value = serde_json::from_slice(&from_chat(answer).unwrap()).unwrap();
        assert_eq!(t["object"], "text_completion");
        assert_eq!(t["choices"][0]["text"], "Hi");
        assert_eq!(t["choices"][0]["finish_reason"], "stop");
        assert_eq!(t["usage"]["total_tokens"], 3);

        let mut m = StreamMapper::default();
        let mut out = Vec::new();
        let stream = "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\ndata: [DONE]\n\n";
        for c in stream.as_bytes().chunks(5) {
            m.on_chunk(c, &mut out);
        }
        m.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"object\":\"text_completion\""), "{text}");
        assert!(text.contains("\"text\":\"Hi\""), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }
}

//! Answers kept by `ai-semantic-cache`: a complete answer is kept as one OpenAI
//! `chat.completion` (its text, finish reason, model and usage), read back from what the
//! client got (JSON or a stream, chat or Responses), and replayed in the form the next client
//! asks for (JSON or SSE, chat or Responses). One stored form lets a chat client and a
//! Responses client with the same prompt share an entry.

use serde_json::{json, Value};

use super::responses::{self, Meta, StreamMapper};
use super::sse::{self, Framer};
use super::usage::Usage;

/// The API a client speaks on a cached route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Responses,
}

/// The `chat.completion` a client's complete answer amounts to, or None when it is not one
/// to keep: not complete (no finish reason, a stream cut before its end), not text (tool
/// calls), or not an answer at all.
pub fn answer_of(api: Api, stream: bool, body: &[u8]) -> Option<Value> {
    match (api, stream) {
        (Api::Chat, false) => chat_from_json(&serde_json::from_slice(body).ok()?),
        (Api::Chat, true) => chat_from_sse(body),
        (Api::Responses, false) => chat_from_response(&serde_json::from_slice(body).ok()?),
        (Api::Responses, true) => {
            let completed = events(body).into_iter().find_map(|(kind, v)| {
                (kind.as_deref() == Some("response.completed")
                    || v.get("type").and_then(Value::as_str) == Some("response.completed"))
                .then(|| v.get("response").cloned())
                .flatten()
            })?;
            chat_from_response(&completed)
        }
    }
}

/// The stored form: only what a replay needs.
fn stored(model: Option<&Value>, text: &str, finish: &str, usage: Option<&Value>) -> Value {
    json!({
        "object": "chat.completion",
        "model": model.cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish}],
        "usage": usage.cloned().unwrap_or(Value::Null),
    })
}

fn chat_from_json(v: &Value) -> Option<Value> {
    let choices = v.get("choices")?.as_array()?;
    // One answer only: `n > 1` is not cached.
    let [choice] = choices.as_slice() else {
        return None;
    };
    let message = choice.get("message")?;
    if message.get("tool_calls").is_some_and(|t| !t.is_null()) {
        return None;
    }
    let text = message.get("content")?.as_str()?;
    let finish = choice.get("finish_reason")?.as_str()?;
    Some(stored(v.get("model"), text, finish, v.get("usage")))
}

/// Every event of an SSE body: its `event:` name and its JSON data (`[DONE]` left out).
fn events(body: &[u8]) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    let mut f = Framer::default();
    let mut take = |e: sse::Event| {
        if let Ok(v) = serde_json::from_slice::<Value>(&e.data) {
            out.push((e.kind, v));
        }
    };
    f.push(body, &mut take);
    f.finish(&mut take);
    out
}

fn chat_from_sse(body: &[u8]) -> Option<Value> {
    if !body
        .windows(b"[DONE]".len())
        .any(|w| w == b"[DONE]".as_slice())
    {
        return None;
    }
    let (mut text, mut finish, mut model, mut usage) = (String::new(), None, None, None);
    for (_, v) in events(body) {
        if v.get("error").is_some() {
            return None;
        }
        if let Some(m) = v.get("model").filter(|m| !m.is_null()) {
            model = Some(m.clone());
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            continue;
        };
        for c in choices {
            if c.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                return None;
            }
            let delta = c.get("delta");
            if delta
                .and_then(|d| d.get("tool_calls"))
                .is_some_and(|t| !t.is_null())
            {
                return None;
            }
            if let Some(t) = delta.and_then(|d| d.get("content")).and_then(Value::as_str) {
                text.push_str(t);
            }
            if let Some(f) = c.get("finish_reason").and_then(Value::as_str) {
                finish = Some(f.to_string());
            }
        }
    }
    Some(stored(model.as_ref(), &text, &finish?, usage.as_ref()))
}

/// A Response object's text answer as chat (None for one with function calls, or not done).
fn chat_from_response(r: &Value) -> Option<Value> {
    let finish = match (r.get("status")?.as_str()?, r.get("incomplete_details")) {
        ("completed", _) => "stop",
        ("incomplete", Some(d))
            if d.get("reason").and_then(Value::as_str) == Some("max_output_tokens") =>
        {
            "length"
        }
        _ => return None,
    };
    let mut text = String::new();
    for item in r.get("output")?.as_array()? {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for part in item.get("content").and_then(Value::as_array)? {
                    if let Some(t) = part.get("text").and_then(Value::as_str) {
                        text.push_str(t);
                    }
                }
            }
            // Reasoning summaries are not part of the answer's text.
            Some("reasoning") => {}
            _ => return None,
        }
    }
    let usage = r.get("usage").filter(|u| !u.is_null()).map(|u| {
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        json!({"prompt_tokens": n("input_tokens"), "completion_tokens": n("output_tokens"),
               "total_tokens": n("total_tokens")})
    });
    Some(stored(r.get("model"), &text, finish, usage.as_ref()))
}

/// The stored answer's text, finish reason and model.
fn parts(answer: &Value) -> (&str, &str, Value) {
    let choice = &answer["choices"][0];
    (
        choice["message"]["content"].as_str().unwrap_or(""),
        choice["finish_reason"].as_str().unwrap_or("stop"),
        answer.get("model").cloned().unwrap_or(Value::Null),
    )
}

/// A stored answer as a chat `chat.completion` body with `id` and `created`.
pub fn chat_json(answer: &Value, id: &str, created: u64) -> Vec<u8> {
    let mut v = answer.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), json!(id));
        o.insert("created".into(), json!(created));
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A stored answer as a chat completion stream: the role and the text, the finish reason,
/// the usage when the client asked for it, then `[DONE]`.
pub fn chat_sse(answer: &Value, id: &str, created: u64, include_usage: bool) -> Vec<u8> {
    let (text, finish, model) = parts(answer);
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut out = Vec::new();
    sse::write_data(
        &mut out,
        &chunk(json!({"role": "assistant", "content": text}), Value::Null),
    );
    sse::write_data(&mut out, &chunk(json!({}), json!(finish)));
    if include_usage {
        let mut last = chunk(json!({}), Value::Null);
        last["choices"] = json!([]);
        last["usage"] = answer.get("usage").cloned().unwrap_or(Value::Null);
        sse::write_data(&mut out, &last);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

/// The stored answer's usage, as the gateway counts it.
pub fn usage(answer: &Value) -> Option<Usage> {
    answer
        .get("usage")
        .filter(|u| !u.is_null())
        .and_then(Usage::from_json)
}

/// A stored answer as the Response object answering the Responses request `meta` describes.
pub fn responses_json(answer: &Value, meta: &Meta) -> Vec<u8> {
    let chat = chat_json(answer, "cached", meta.created_at);
    responses::from_chat(&chat, meta, usage(answer).as_ref())
        .map(|r| r.body)
        .unwrap_or_default()
}

/// A stored answer as the Responses event stream answering the request `meta` describes.
pub fn responses_sse(answer: &Value, meta: std::sync::Arc<Meta>) -> Vec<u8> {
    let chat = chat_sse(answer, "cached", meta.created_at, true);
    let mut mapper = StreamMapper::new(meta);
    let mut out = Vec::new();
    mapper.on_chunk(&chat, &mut out);
    mapper.finish(&mut out);
    out
}

/// Whether a value read back from a store is a stored answer.
pub fn is_stored(v: &Value) -> bool {
    v.get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.len() == 1)
        && v.get("object").and_then(Value::as_str) == Some("chat.completion")
}

/// The stored answer's text.
pub fn text_of(answer: &Value) -> &str {
    parts(answer).0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chat_answers_round_trip_through_json_and_sse() {
        let body = json!({"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
        let a = answer_of(Api::Chat, false, &serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(text_of(&a), "Hi there");
        let sse = chat_sse(&a, "k", 1, true);
        let again = answer_of(Api::Chat, true, &sse).unwrap();
        assert_eq!(again, a);
        let j: Value = serde_json::from_slice(&chat_json(&a, "k", 1)).unwrap();
        assert_eq!(j["id"], "k");
        assert_eq!(j["choices"][0]["message"]["content"], "Hi there");
        assert_eq!(usage(&a).unwrap().total_tokens, 5);
    }

    #[test]
    fn incomplete_or_tool_answers_are_not_kept() {
        let cut = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
        assert!(answer_of(Api::Chat, true, cut).is_none(), "no [DONE]");
        let no_finish = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\ndata: [DONE]\n\n";
        assert!(answer_of(Api::Chat, true, no_finish).is_none());
        let tools = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c"}]}, "finish_reason": "tool_calls"}]});
        assert!(answer_of(Api::Chat, false, &serde_json::to_vec(&tools).unwrap()).is_none());
        let two = json!({"choices": [{"index": 0, "message": {"content": "a"}, "finish_reason": "stop"},
                                     {"index": 1, "message": {"content": "b"}, "finish_reason": "stop"}]});
        assert!(answer_of(Api::Chat, false, &serde_json::to_vec(&two).unwrap()).is_none());
    }

    #[test]
    fn responses_answers_are_kept_as_chat_and_replayed_as_responses() {
        let r = json!({"id": "resp_1", "object": "response", "status": "completed", "model": "m",
            "output": [{"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": "Paris."}]}],
            "usage": {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}});
        let a = answer_of(Api::Responses, false, &serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(text_of(&a), "Paris.");
        assert_eq!(a["usage"]["total_tokens"], 6);
        let meta = std::sync::Arc::new(Meta {
            id: "resp_new".into(),
            created_at: 7,
            ..Meta::default()
        });
        let j: Value = serde_json::from_slice(&responses_json(&a, &meta)).unwrap();
        assert_eq!(j["id"], "resp_new");
        assert_eq!(j["output"][0]["content"][0]["text"], "Paris.");
        let sse = responses_sse(&a, meta);
        let text = String::from_utf8(sse.clone()).unwrap();
        assert!(text.contains("response.output_text.delta"), "{text}");
        assert!(text.contains("response.completed"), "{text}");
        assert_eq!(
            answer_of(Api::Responses, true, &sse).unwrap()["choices"],
            a["choices"]
        );
    }
}

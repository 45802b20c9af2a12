//! Whole OpenAI answers replayed as the streams a client asked for: a `chat.completion` as
//! chat chunks, a `text_completion` as completion chunks, a Response object as the
//! Responses API's events. Used when the gateway had to take the answer whole first
//! (`ai-semantic-response-guard` reads the complete answer before anything is released),
//! so a client that asked for a stream still parses one. Every choice, tool call and
//! output item is kept; the text of each comes in one delta.

use serde_json::{json, Map, Value};

use super::sse;

/// A `chat.completion` body as a chat completion stream (None: not one).
pub fn chat_stream(body: &[u8], include_usage: bool) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let choices = v.get("choices")?.as_array()?;
    let head = |choices: Value| {
        let mut c = Map::new();
        for k in [
            "id",
            "created",
            "model",
            "system_fingerprint",
            "service_tier",
        ] {
            if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
                c.insert(k.into(), x.clone());
            }
        }
        c.insert("object".into(), json!("chat.completion.chunk"));
        c.insert("choices".into(), choices);
        Value::Object(c)
    };
    let mut out = Vec::new();
    for (i, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(i));
        let message = choice.get("message").cloned().unwrap_or(json!({}));
        let mut delta = Map::new();
        delta.insert(
            "role".into(),
            message.get("role").cloned().unwrap_or(json!("assistant")),
        );
        for k in ["content", "refusal", "reasoning_content"] {
            if let Some(x) = message.get(k).filter(|x| !x.is_null()) {
                delta.insert(k.into(), x.clone());
            }
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            // A stream's tool calls carry their position in the message.
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(n, c)| {
                    let mut c = c.clone();
                    if let Some(o) = c.as_object_mut() {
                        o.insert("index".into(), json!(n));
                    }
                    c
                })
                .collect();
            delta.insert("tool_calls".into(), Value::Array(calls));
        }
        let first = json!([{"index": index, "delta": delta, "finish_reason": null}]);
        sse::write_data(&mut out, &head(first));
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        let last = json!([{"index": index, "delta": {}, "finish_reason": finish}]);
        sse::write_data(&mut out, &head(last));
    }
    if include_usage {
        let mut u = head(json!([]));
        u["usage"] = v.get("usage").cloned().unwrap_or(Value::Null);
        sse::write_data(&mut out, &u);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(out)
}

/// A `text_completion` body as a completions stream (None: not one).
pub fn completion_stream(body: &[u8], include_usage: bool) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let choices = v.get("choices")?.as_array()?;
    let chunk = |choices: Value| {
        json!({"id": v.get("id"), "object": "text_completion", "created": v.get("created"),
               "model": v.get("model"), "choices": choices})
    };
    let mut out = Vec::new();
    for (i, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(i));
        let text = choice.get("text").cloned().unwrap_or(json!(""));
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        let c = json!([{"text": text, "index": index, "logprobs": null, "finish_reason": finish}]);
        sse::write_data(&mut out, &chunk(c));
    }
    if include_usage {
        let mut u = chunk(json!([]));
        u["usage"] = v.get("usage").cloned().unwrap_or(Value::Null);
        sse::write_data(&mut out, &u);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(out)
}

/// The Responses API's event stream, numbered as it is written.
struct Events {
    out: Vec<u8>,
    seq: u64,
}

impl Events {
    fn emit(&mut self, kind: &str, mut v: Value) {
        if let Some(o) = v.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        self.out.extend_from_slice(b"event: ");
        self.out.extend_from_slice(kind.as_bytes());
        self.out.push(b'\n');
        sse::write_data(&mut self.out, &v);
    }
}

/// A Response object as the Responses API's event stream (None: not one).
pub fn responses_stream(body: &[u8]) -> Option<Vec<u8>> {
    let r: Value = serde_json::from_slice(body).ok()?;
    let output = r.get("output")?.as_array()?;
    let status = r.get("status")?.as_str()?;
    let mut e = Events {
        out: Vec::new(),
        seq: 0,
    };
    let mut started = r.clone();
    started["status"] = json!("in_progress");
    started["output"] = json!([]);
    started["usage"] = Value::Null;
    e.emit("response.created", json!({"response": started.clone()}));
    e.emit("response.in_progress", json!({"response": started}));
    for (n, item) in output.iter().enumerate() {
        item_events(&mut e, n, item);
    }
    let last = match status {
        "incomplete" => "response.incomplete",
        "failed" => "response.failed",
        _ => "response.completed",
    };
    e.emit(last, json!({"response": r}));
    Some(e.out)
}

/// One output item's events: added, its parts or arguments, done.
fn item_events(e: &mut Events, n: usize, item: &Value) {
    let id = item.get("id").cloned().unwrap_or(Value::Null);
    let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
    let mut opened = item.clone();
    if let Some(o) = opened.as_object_mut() {
        o.insert("status".into(), json!("in_progress"));
        match kind {
            "message" => {
                o.insert("content".into(), json!([]));
            }
            "function_call" => {
                o.insert("arguments".into(), json!(""));
            }
            _ => {}
        }
    }
    e.emit(
        "response.output_item.added",
        json!({"output_index": n, "item": opened}),
    );
    match kind {
        "message" => {
            let parts = item.get("content").and_then(Value::as_array);
            for (p, part) in parts.into_iter().flatten().enumerate() {
                let at = json!({"item_id": id, "output_index": n, "content_index": p});
                let with = |extra: Value| {
                    let mut v = at.clone();
                    if let (Some(o), Some(x)) = (v.as_object_mut(), extra.as_object()) {
                        o.extend(x.clone());
                    }
                    v
                };
                let ptype = part.get("type").and_then(Value::as_str).unwrap_or("");
                let mut empty = part.clone();
                if let Some(o) = empty.as_object_mut() {
                    for k in ["text", "refusal"] {
                        if o.contains_key(k) {
                            o.insert(k.into(), json!(""));
                        }
                    }
                }
                e.emit("response.content_part.added", with(json!({"part": empty})));
                let text = part.get("text").cloned().unwrap_or(json!(""));
                match ptype {
                    "output_text" => {
                        e.emit("response.output_text.delta", with(json!({"delta": text})));
                        e.emit("response.output_text.done", with(json!({"text": text})));
                    }
                    "refusal" => {
                        let r = part.get("refusal").cloned().unwrap_or(json!(""));
                        e.emit("response.refusal.delta", with(json!({"delta": r})));
                        e.emit("response.refusal.done", with(json!({"refusal": r})));
                    }
                    _ => {}
                }
                e.emit("response.content_part.done", with(json!({"part": part})));
            }
        }
        "function_call" => {
            let args = item.get("arguments").cloned().unwrap_or(json!(""));
            let at = json!({"item_id": id, "output_index": n});
            let mut delta = at.clone();
            delta["delta"] = args.clone();
            e.emit("response.function_call_arguments.delta", delta);
            let mut done = at;
            done["arguments"] = args;
            e.emit("response.function_call_arguments.done", done);
        }
        _ => {}
    }
    e.emit(
        "response.output_item.done",
        json!({"output_index": n, "item": item}),
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn datas(sse_bytes: &[u8]) -> Vec<Value> {
        let text = String::from_utf8(sse_bytes.to_vec()).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn chat_answers_replay_as_chunks_with_tool_calls_and_usage() {
        let body = json!({"id": "c1", "object": "chat.completion", "created": 7, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "t1", "type": "function",
                                "function": {"name": "f", "arguments": "{}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
        let out = chat_stream(body.to_string().as_bytes(), true).unwrap();
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        let d = datas(&out);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0]["object"], "chat.completion.chunk");
        assert_eq!(d[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(
            d[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert!(d[0]["choices"][0]["delta"].get("content").is_none());
        assert_eq!(d[1]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(d[2]["usage"]["total_tokens"], 3);
        assert_eq!(d[2]["choices"], json!([]));
        let no_usage = chat_stream(body.to_string().as_bytes(), false).unwrap();
        assert_eq!(datas(&no_usage).len(), 2);
        assert!(chat_stream(b"[1]", false).is_none());
    }

    #[test]
    fn completions_replay_as_chunks() {
        let body = json!({"id": "x", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"text": "hi", "index": 0, "finish_reason": "length"}]});
        let d = datas(&completion_stream(body.to_string().as_bytes(), false).unwrap());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0]["choices"][0]["text"], "hi");
        assert_eq!(d[0]["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn responses_replay_as_numbered_events() {
        let body = json!({"id": "resp_1", "object": "response", "status": "completed",
            "model": "m", "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
            "output": [
                {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "Hello", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f",
                 "arguments": "{\"a\":1}", "status": "completed"}]});
        let out = responses_stream(body.to_string().as_bytes()).unwrap();
        let d = datas(&out);
        let kinds: Vec<&str> = d.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let seqs: Vec<u64> = d
            .iter()
            .map(|v| v["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..13).collect::<Vec<u64>>());
        assert_eq!(d[0]["response"]["status"], "in_progress");
        assert_eq!(d[4]["delta"], "Hello");
        assert_eq!(d[3]["part"]["text"], "");
        assert_eq!(d[9]["delta"], "{\"a\":1}");
        assert_eq!(d[12]["response"]["usage"]["total_tokens"], 3);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: response.created\ndata: "));
    }
}

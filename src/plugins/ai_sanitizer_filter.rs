//! `ai-sanitizer` on the way back: values the request's sanitizing replaced are put back
//! into the answer (`recover_redacted`), then, in OUTPUT/BOTH mode, personal data in the
//! answer is masked. Buffered answers are rewritten whole; OpenAI-shaped SSE streams (and
//! the Messages events of translated Anthropic routes) are rewritten event by event, text
//! deltas per choice (or per Responses content part, or Messages content block), with a
//! replacement split across deltas held back until it is complete.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::plugins::ai_sanitizer::{Redactions, Sanitizer, StreamRestorer};

/// What to do with an answer's text.
#[derive(Clone)]
pub struct Filter {
    /// The request's replacements, to put back.
    pub restore: Option<Arc<Redactions>>,
    /// Mask personal data in the answer.
    pub output: Option<Arc<Sanitizer>>,
}

impl Filter {
    /// Whether the filter changes anything.
    pub fn active(&self) -> bool {
        self.restore.is_some() || self.output.is_some()
    }

    fn text(&self, s: &str) -> String {
        let restored = match &self.restore {
            Some(r) => r.restore(s).into_owned(),
            None => s.to_string(),
        };
        match &self.output {
            Some(san) => {
                let mut r = Redactions::default();
                san.sanitize_text(&restored, &mut r).unwrap_or(restored)
            }
            None => restored,
        }
    }

    /// Rewrites a whole JSON answer (chat, completions or Responses object).
    pub fn body(&self, bytes: &Bytes) -> Bytes {
        let Ok(raw) = std::str::from_utf8(bytes) else {
            return bytes.clone();
        };
        let restored = match &self.restore {
            Some(r) => r.restore_json(raw),
            None => std::borrow::Cow::Borrowed(raw),
        };
        if self.output.is_none() {
            return Bytes::from(restored.into_owned());
        }
        match serde_json::from_str::<Value>(&restored) {
            Ok(mut v) => {
                self.mask_texts(&mut v);
                serde_json::to_vec(&v)
                    .map(Bytes::from)
                    .unwrap_or_else(|_| bytes.clone())
            }
            Err(_) => Bytes::from(restored.into_owned()),
        }
    }

    /// Masks the answer text fields (`content`, `text`, `output_text`) anywhere in `v`.
    fn mask_texts(&self, v: &mut Value) {
        let Some(san) = &self.output else {
            return;
        };
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match x {
                        Value::String(s)
                            if matches!(k.as_str(), "content" | "text" | "output_text") =>
                        {
                            let mut r = Redactions::default();
                            if let Some(masked) = san.sanitize_text(s, &mut r) {
                                *s = masked;
                            }
                        }
                        _ => self.mask_texts(x),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.mask_texts(x)),
            _ => {}
        }
    }
}

/// One text stream (a choice, or a Responses content part).
struct Lane {
    restorer: Option<StreamRestorer>,
    /// Answer text not yet masked: kept up to the last whitespace, so a value split
    /// across deltas is seen whole.
    pending: String,
}

/// Rewrites an OpenAI-shaped SSE stream.
pub struct SseFilter {
    filter: Filter,
    buf: Vec<u8>,
    lanes: HashMap<String, Lane>,
}

impl SseFilter {
    /// A stream filter applying `filter`.
    pub fn new(filter: Filter) -> SseFilter {
        SseFilter {
            filter,
            buf: Vec::new(),
            lanes: HashMap::new(),
        }
    }

    fn lane(&mut self, key: &str) -> &mut Lane {
        let restore = self.filter.restore.clone();
        self.lanes.entry(key.to_string()).or_insert_with(|| Lane {
            restorer: restore.map(StreamRestorer::new),
            pending: String::new(),
        })
    }

    /// The text of a delta that may be sent now.
    fn delta(&mut self, key: &str, s: &str) -> String {
        let masking = self.filter.output.clone();
        let lane = self.lane(key);
        let restored = match lane.restorer.as_mut() {
            Some(r) => r.push(s),
            None => s.to_string(),
        };
        match masking {
            None => restored,
            Some(san) => {
                lane.pending.push_str(&restored);
                let cut = lane
                    .pending
                    .rfind(char::is_whitespace)
                    .map(|i| i + lane.pending[i..].chars().next().map_or(1, char::len_utf8));
                match cut {
                    Some(c) => {
                        let ready: String = lane.pending.drain(..c).collect();
                        let mut r = Redactions::default();
                        san.sanitize_text(&ready, &mut r).unwrap_or(ready)
                    }
                    None => String::new(),
                }
            }
        }
    }

    /// Whatever a lane still holds, at the end of its text.
    fn flush(&mut self, key: &str) -> String {
        let masking = self.filter.output.clone();
        let Some(mut lane) = self.lanes.remove(key) else {
            return String::new();
        };
        let mut tail = lane.pending;
        if let Some(r) = lane.restorer.as_mut() {
            tail.push_str(&r.finish());
        }
        match masking {
            Some(san) if !tail.is_empty() => {
                let mut r = Redactions::default();
                san.sanitize_text(&tail, &mut r).unwrap_or(tail)
            }
            _ => tail,
        }
    }

    /// Complete events of `data` rewritten; a partial event waits for the next chunk.
    pub fn on_chunk(&mut self, data: &[u8]) -> Bytes {
        self.buf.extend_from_slice(data);
        let mut out = Vec::with_capacity(self.buf.len());
        let mut start = 0;
        while let Some(end) = find(&self.buf[start..], b"\n\n") {
            let event = self.buf[start..start + end].to_vec();
            self.event(&event, &mut out);
            out.extend_from_slice(b"\n\n");
            start += end + 2;
        }
        self.buf.drain(..start);
        Bytes::from(out)
    }

    /// The end of the stream: what is left, as it is.
    pub fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.buf))
    }

    fn event(&mut self, event: &[u8], out: &mut Vec<u8>) {
        let Ok(text) = std::str::from_utf8(event) else {
            out.extend_from_slice(event);
            return;
        };
        let mut lines: Vec<String> = Vec::new();
        let mut before: Vec<String> = Vec::new();
        for line in text.split('\n') {
            match line.strip_prefix("data:") {
                Some(d) => {
                    let d = d.strip_prefix(' ').unwrap_or(d);
                    let (pre, data) = self.data(d);
                    if let Some(p) = pre {
                        before.push(p);
                    }
                    lines.push(format!("data: {data}"));
                }
                None => lines.push(line.to_string()),
            }
        }
        for p in before {
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        out.extend_from_slice(lines.join("\n").as_bytes());
    }

    /// One `data:` payload rewritten, with an event to send before it when held-back text
    /// must be flushed as its own delta.
    fn data(&mut self, d: &str) -> (Option<String>, String) {
        if d == "[DONE]" {
            return (None, d.to_string());
        }
        let Ok(mut v) = serde_json::from_str::<Value>(d) else {
            return (None, d.to_string());
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut pre = None;
        if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
            for (n, c) in choices.iter_mut().enumerate() {
                let key = format!(
                    "c{}",
                    c.get("index").and_then(Value::as_u64).unwrap_or(n as u64)
                );
                let done = c.get("finish_reason").is_some_and(|f| !f.is_null());
                let field = if c.get("delta").is_some() {
                    "delta"
                } else {
                    ""
                };
                let slot = if field == "delta" {
                    c.get_mut("delta").and_then(|d| d.as_object_mut())
                } else {
                    c.as_object_mut()
                };
                let Some(obj) = slot else { continue };
                let name = if field == "delta" { "content" } else { "text" };
                let mut text = match obj.get(name).and_then(Value::as_str) {
                    Some(s) => self.delta(&key, s),
                    None => String::new(),
                };
                if done {
                    text.push_str(&self.flush(&key));
                }
                if obj.get(name).is_some_and(Value::is_string) || !text.is_empty() {
                    obj.insert(name.into(), Value::String(text));
                }
            }
        } else if kind == "response.output_text.delta" {
            let key = responses_key(&v);
            if let Some(s) = v.get("delta").and_then(Value::as_str).map(str::to_string) {
                let t = self.delta(&key, &s);
                v["delta"] = Value::String(t);
            }
        } else if kind == "response.output_text.done" {
            let key = responses_key(&v);
            let held = self.flush(&key);
            if !held.is_empty() {
                let mut extra = v.clone();
                extra["type"] = Value::String("response.output_text.delta".into());
                if let Some(o) = extra.as_object_mut() {
                    o.remove("text");
                    o.remove("logprobs");
                }
                extra["delta"] = Value::String(held);
                pre = Some(format!(
                    "event: response.output_text.delta\ndata: {}",
                    serde_json::to_string(&extra).unwrap_or_default()
                ));
            }
            if let Some(s) = v.get("text").and_then(Value::as_str).map(str::to_string) {
                v["text"] = Value::String(self.filter.text(&s));
            }
        } else if kind == "content_block_delta" {
            // Anthropic Messages events (Messages clients on translated routes).
            let key = format!("m{}", v.get("index").and_then(Value::as_u64).unwrap_or(0));
            let d = v.get("delta");
            if d.and_then(|d| d.get("type")).and_then(Value::as_str) == Some("text_delta") {
                if let Some(s) = d.and_then(|d| d.get("text")).and_then(Value::as_str) {
                    let t = self.delta(&key, s);
                    v["delta"]["text"] = Value::String(t);
                }
            }
        } else if kind == "content_block_stop" {
            let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
            let held = self.flush(&format!("m{index}"));
            if !held.is_empty() {
                let extra = serde_json::json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": held}});
                pre = Some(format!("event: content_block_delta\ndata: {extra}"));
            }
        } else if kind.starts_with("response.") {
            let raw = serde_json::to_string(&v).unwrap_or_default();
            let rewritten = self.filter.body(&Bytes::from(raw));
            return (pre, String::from_utf8_lossy(&rewritten).into_owned());
        }
        (
            pre,
            serde_json::to_string(&v).unwrap_or_else(|_| d.to_string()),
        )
    }
}

fn responses_key(v: &Value) -> String {
    format!(
        "r{}:{}",
        v.get("output_index").and_then(Value::as_u64).unwrap_or(0),
        v.get("content_index").and_then(Value::as_u64).unwrap_or(0)
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::plugins::ai_sanitizer::AiSanitizerConfig;
    use serde_json::json;

    fn redacted(text: &str) -> (Arc<Sanitizer>, Arc<Redactions>, String) {
        let s = Sanitizer::new(&AiSanitizerConfig::default()).unwrap();
        let mut body = json!({"messages": [{"role": "user", "content": text}]});
        let r = s.sanitize_request(&mut body).unwrap();
        let masked = body["messages"][0]["content"].as_str().unwrap().to_string();
        (Arc::new(s), Arc::new(r), masked)
    }

    #[test]
    fn chat_stream_restores_a_placeholder_split_across_chunks() {
        let (_, r, masked) = redacted("mail bob@example.com now");
        assert!(masked.contains("[EMAIL_1]"), "{masked}");
        let mut f = SseFilter::new(Filter {
            restore: Some(r),
            output: None,
        });
        let chunk = |t: &str, fin: bool| {
            let fr = if fin { json!("stop") } else { Value::Null };
            format!(
                "data: {}\n\n",
                json!({"id": "x", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": fr}]})
            )
        };
        let mut out = String::new();
        for (t, fin) in [
            ("Write to [EM", false),
            ("AIL_", false),
            ("1] today", false),
            ("", true),
        ] {
            out.push_str(std::str::from_utf8(&f.on_chunk(chunk(t, fin).as_bytes())).unwrap());
        }
        out.push_str(std::str::from_utf8(&f.on_chunk(b"data: [DONE]\n\n")).unwrap());
        let text: String = out
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| {
                serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(text, "Write to bob@example.com today");
        assert!(out.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn messages_events_restore_a_placeholder_split_across_deltas() {
        let (_, r, _) = redacted("mail bob@example.com now");
        let mut f = SseFilter::new(Filter {
            restore: Some(r),
            output: None,
        });
        let ev = |v: Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap());
        let delta = |t: &str| {
            ev(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": t}}))
        };
        let mut out = String::new();
        for e in [
            delta("Write to [EM"),
            delta("AIL_1] tod"),
            delta("ay [EMA"),
            ev(json!({"type": "content_block_stop", "index": 0})),
        ] {
            out += std::str::from_utf8(&f.on_chunk(e.as_bytes())).unwrap();
        }
        let mut text = String::new();
        let mut kinds = Vec::new();
        for e in out.split("\n\n").filter(|e| !e.is_empty()) {
            let name = e.lines().next().unwrap().trim_start_matches("event: ");
            let data: Value = serde_json::from_str(e.split("data: ").nth(1).unwrap()).unwrap();
            assert_eq!(data["type"], name, "{e}");
            kinds.push(name.to_string());
            text += data["delta"]["text"].as_str().unwrap_or("");
        }
        assert_eq!(text, "Write to bob@example.com today [EMA");
        assert_eq!(kinds.last().map(String::as_str), Some("content_block_stop"));
    }

    #[test]
    fn responses_events_and_bodies() {
        let (san, r, _) = redacted("call +1 415 555 0100 please");
        let f = Filter {
            restore: Some(r.clone()),
            output: None,
        };
        let body = Bytes::from(
            json!({"choices": [{"message": {"content": "Calling [PHONE_1]"}}]}).to_string(),
        );
        let v: Value = serde_json::from_slice(&f.body(&body)).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "Calling +1 415 555 0100"
        );
        let mut s = SseFilter::new(f);
        let ev = |v: Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap());
        let mut out = String::new();
        for d in ["x [PHO", "NE_1] ["] {
            let e = ev(
                json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": d}),
            );
            out += std::str::from_utf8(&s.on_chunk(e.as_bytes())).unwrap();
        }
        let done = ev(
            json!({"type": "response.output_text.done", "output_index": 0, "content_index": 0, "text": "x [PHONE_1] ["}),
        );
        out += std::str::from_utf8(&s.on_chunk(done.as_bytes())).unwrap();
        let deltas: Vec<String> = out
            .split("\n\n")
            .filter_map(|e| e.split("data: ").nth(1))
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .filter(|v| v["type"] == "response.output_text.delta")
            .map(|v| v["delta"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(deltas.concat(), "x +1 415 555 0100 [", "{out}");
        assert_eq!(
            deltas.last().unwrap(),
            "[",
            "held back, then flushed before done"
        );
        assert!(out.contains("\"text\":\"x +1 415 555 0100 [\""), "{out}");
        // OUTPUT mode masks what the model says.
        let f = Filter {
            restore: None,
            output: Some(san),
        };
        let body = Bytes::from(
            json!({"choices": [{"message": {"content": "reach me at eve@corp.example"}}]})
                .to_string(),
        );
        let v: Value = serde_json::from_slice(&f.body(&body)).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "reach me at [EMAIL_1]"
        );
    }
}

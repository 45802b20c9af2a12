//! Cohere's v1 Chat stream, read for native clients (`llm_format: cohere`) that call
//! `/v1/chat` themselves: newline-delimited JSON events (`stream-start`, `text-generation`,
//! `tool-calls-generation`, `stream-end` carrying the whole response and its `meta`) as
//! OpenAI chunks for the stream observer. The gateway itself only speaks v2 to Cohere.

use serde_json::{json, Value};

use crate::llm::cohere::{finish_reason, usage};
use crate::llm::framing::{Framed, MapEvents, Ndjson};
use crate::llm::translate::{self as t, Chunks};

/// v1 stream lines → OpenAI chunks, one upstream chunk at a time.
pub type StreamMapper = Framed<EventMapper>;

impl StreamMapper {
    /// A mapper stamping chunks with `created` and the requested `model` (v1 events name
    /// no model).
    pub fn new(created: u64, model: &str) -> Self {
        Framed::wrap(EventMapper {
            chunks: Chunks {
                created,
                model: model.to_string(),
                ..Chunks::default()
            },
            ..EventMapper::default()
        })
    }
}

/// One v1 line at a time (see [`StreamMapper`]).
#[derive(Debug, Default)]
pub struct EventMapper {
    chunks: Chunks,
    started: bool,
    tools: u64,
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
        let kind = v.get("event_type").and_then(Value::as_str).unwrap_or("");
        if !self.started && kind != "stream-end" {
            self.started = true;
            self.chunks.id = v
                .get("generation_id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("chatcmpl-{:016x}", t::fnv(&[line])));
            self.chunks
                .delta(json!({"role": "assistant", "content": ""}), None, out);
        }
        match kind {
            "text-generation" => {
                if let Some(text) = v
                    .get("text")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    self.chunks.delta(json!({ "content": text }), None, out);
                }
            }
            // The whole calls (the `tool-calls-chunk` events before it are their pieces).
            "tool-calls-generation" => {
                for call in v
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let name = call.get("name").and_then(Value::as_str).unwrap_or("");
                    let args = call
                        .get("parameters")
                        .map(Value::to_string)
                        .unwrap_or_else(|| "{}".into());
                    // v1 calls carry no id: one made from the stream's id and the call.
                    let id = format!(
                        "call_{:016x}",
                        t::fnv(&[self.chunks.id.as_bytes(), &self.tools.to_le_bytes()])
                    );
                    let call = t::tool_call_start(self.tools, id, name, &args);
                    self.chunks.delta(call, None, out);
                    self.tools += 1;
                }
            }
            "stream-end" => {
                let reason = v
                    .get("finish_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("COMPLETE");
                let response = v.get("response");
                match finish_reason(reason) {
                    Some(f) => {
                        let f = if self.tools > 0 && f == "stop" {
                            "tool_calls"
                        } else {
                            f
                        };
                        self.chunks.delta(json!({}), Some(f), out);
                    }
                    None => {
                        let m = format!("cohere finished with {reason}");
                        self.chunks.error(&m, "upstream_error", out);
                    }
                }
                let u = response.and_then(|r| r.get("meta")).and_then(usage);
                self.chunks.end(u.as_ref(), out);
                self.done = true;
            }
            _ => {}
        }
    }

    /// True once `stream-end` was seen.
    fn end(&mut self, _out: &mut Vec<u8>) -> bool {
        self.done
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "{\"is_finished\":false,\"event_type\":\"stream-start\",\"generation_id\":\"g-1\"}\n",
        "{\"is_finished\":false,\"event_type\":\"text-generation\",\"text\":\"Hel\"}\n",
        "{\"is_finished\":false,\"event_type\":\"text-generation\",\"text\":\"lo\"}\n",
        "{\"is_finished\":true,\"event_type\":\"stream-end\",\"finish_reason\":\"COMPLETE\",",
        "\"response\":{\"response_id\":\"r\",\"text\":\"Hello\",\"generation_id\":\"g-1\",",
        "\"meta\":{\"api_version\":{\"version\":\"1\"},\"billed_units\":{\"input_tokens\":9,",
        "\"output_tokens\":2},\"tokens\":{\"input_tokens\":70,\"output_tokens\":2}}}}\n",
    );

    fn data(out: &[u8]) -> Vec<Value> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn lines_split_anywhere_give_text_finish_and_billed_usage() {
        for split in [1, 7, 64, STREAM.len()] {
            let mut m = StreamMapper::new(5, "command-r");
            let mut out = Vec::new();
            for piece in STREAM.as_bytes().chunks(split) {
                m.on_chunk(piece, &mut out);
            }
            assert!(m.finish(&mut out), "split {split}");
            let s = String::from_utf8(out.clone()).unwrap();
            assert!(s.ends_with("data: [DONE]\n\n"), "{s}");
            let events = data(&out);
            assert_eq!(events[0]["id"], "g-1");
            assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
            let text: String = events
                .iter()
                .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
                .collect();
            assert_eq!(text, "Hello");
            let last = events.last().unwrap();
            assert_eq!(last["usage"]["prompt_tokens"], 9);
            assert_eq!(last["usage"]["completion_tokens"], 2);
            assert_eq!(
                events[events.len() - 2]["choices"][0]["finish_reason"],
                "stop"
            );
        }
    }

    #[test]
    fn tool_calls_and_failures() {
        let mut m = StreamMapper::new(5, "command-r");
        let mut out = Vec::new();
        m.on_chunk(
            concat!(
                "{\"event_type\":\"stream-start\",\"generation_id\":\"g\"}\n",
                "{\"event_type\":\"tool-calls-generation\",\"tool_calls\":",
                "[{\"name\":\"get_weather\",\"parameters\":{\"city\":\"Paris\"}}]}\n",
                "{\"event_type\":\"stream-end\",\"finish_reason\":\"COMPLETE\",\"response\":{}}\n",
            )
            .as_bytes(),
            &mut out,
        );
        assert!(m.finish(&mut out));
        let events = data(&out);
        let call = &events[1]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(events[2]["choices"][0]["finish_reason"], "tool_calls");

        let mut m = StreamMapper::new(5, "command-r");
        let mut out = Vec::new();
        m.on_chunk(
            b"{\"event_type\":\"stream-end\",\"finish_reason\":\"ERROR_TOXIC\"}",
            &mut out,
        );
        assert!(m.finish(&mut out), "a last line without newline counts");
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("ERROR_TOXIC") && s.contains("\"error\""), "{s}");

        let mut m = StreamMapper::new(5, "command-r");
        let mut out = Vec::new();
        m.on_chunk(
            b"{\"event_type\":\"text-generation\",\"text\":\"cut\"}\n",
            &mut out,
        );
        assert!(!m.finish(&mut out), "no stream-end: not complete");
        m.on_chunk(b"not json\n\n{broken\n", &mut out);
    }
}

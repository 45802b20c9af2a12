//! Watching an SSE stream as it passes: usage, model and terminal events, without holding
//! anything back. Optionally drops the usage-only chunk the gateway asked for on its own.

use std::sync::LazyLock;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use crate::llm::usage::{Usage, UsageWire};
use crate::llm::{Asked, Wire};

/// Which event vocabulary the stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `chat.completion.chunk` / `text_completion` events ending with `[DONE]`.
    ChatLike,
    /// Responses API events ending with `response.completed`.
    Responses,
    /// Anthropic Messages events ending with `message_stop`.
    Messages,
}

/// One dialect's stream turned into OpenAI chunks.
#[derive(Debug)]
enum Native {
    Anthropic(crate::llm::anthropic::StreamMapper),
    Cohere(crate::llm::cohere::StreamMapper),
    Ollama(crate::llm::ollama::StreamMapper),
    Llama2Raw(crate::llm::llama2::StreamMapper),
    HuggingFace(crate::llm::huggingface::StreamMapper),
    Gemini(crate::llm::gemini::StreamMapper),
    Bedrock(crate::llm::bedrock::StreamMapper),
}

/// Called with the assistant turn when a bridged Responses stream completes.
pub type OnComplete = Box<dyn FnOnce(Value) + Send>;

/// Chat chunks turned into Responses events (the Responses API bridged onto chat).
struct ResponsesStage {
    mapper: crate::llm::responses::StreamMapper,
    on_complete: Option<OnComplete>,
}

impl std::fmt::Debug for ResponsesStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponsesStage")
            .field("mapper", &self.mapper)
            .finish_non_exhaustive()
    }
}

/// Rewrites a provider's native stream into OpenAI chunks (and those into Responses
/// events when the Responses API is bridged) before the observer sees it.
#[derive(Debug)]
pub struct Mapper {
    native: Option<Native>,
    responses: Option<Box<ResponsesStage>>,
    /// Chat chunks turned into `text_completion` chunks (completions bridged onto chat).
    completions: Option<crate::llm::completions::StreamMapper>,
    /// Chat chunks turned into Messages events (Anthropic clients on other providers).
    messages: Option<Box<crate::llm::messages::StreamMapper>>,
    /// The client speaks the provider's API too: its bytes pass untouched, the mapped copy
    /// only feeds the observer (usage, model, terminal event).
    observe_only: bool,
}

impl Native {
    /// The mapper for `wire`'s stream; None for OpenAI (its chunks need no mapping) and
    /// dialects that do not stream.
    fn new(wire: Wire, created: u64, asked: &Asked<'_>) -> Option<Native> {
        use crate::llm::{anthropic, bedrock, cohere, huggingface, llama2, ollama};
        let model = asked.model;
        Some(match wire {
            Wire::OpenAi => return None,
            // Only native clients' streams (embeddings, its translated route, do not stream).
            Wire::HuggingFace => {
                Native::HuggingFace(huggingface::StreamMapper::new(created, model))
            }
            Wire::Anthropic => Native::Anthropic(anthropic::StreamMapper::new(created)),
            Wire::Cohere => Native::Cohere(cohere::StreamMapper::new(created, model)),
            Wire::Ollama => Native::Ollama(ollama::StreamMapper::new(created, model)),
            Wire::Llama2Raw => Native::Llama2Raw(llama2::StreamMapper::new(created, model)),
            Wire::Gemini => Native::Gemini(crate::llm::gemini::StreamMapper::new(created)),
            Wire::Bedrock => Native::Bedrock(bedrock::StreamMapper::new(created, asked)),
        })
    }

    fn on_chunk(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        match self {
            Native::Anthropic(m) => m.on_chunk(chunk, out),
            Native::Cohere(m) => m.on_chunk(chunk, out),
            Native::Ollama(m) => m.on_chunk(chunk, out),
            Native::Llama2Raw(m) => m.on_chunk(chunk, out),
            Native::HuggingFace(m) => m.on_chunk(chunk, out),
            Native::Gemini(m) => m.on_chunk(chunk, out),
            Native::Bedrock(m) => m.on_chunk(chunk, out),
        }
    }

    /// True when the dialect's terminal event was seen.
    fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        match self {
            Native::Anthropic(m) => m.finish(out),
            Native::Cohere(m) => m.finish(out),
            Native::Ollama(m) => m.finish(out),
            Native::Llama2Raw(m) => m.finish(out),
            Native::HuggingFace(m) => m.finish(out),
            Native::Gemini(m) => m.finish(out),
            Native::Bedrock(m) => m.finish(out),
        }
    }
}

impl Mapper {
    /// The mapper for `wire`'s stream (None for OpenAI, whose chunks need no mapping),
    /// stamping chunks with `created`, and with what was asked (model, request id) where the
    /// provider's stream does not name it.
    pub fn new(wire: Wire, created: u64, asked: &Asked<'_>, observe_only: bool) -> Option<Mapper> {
        Some(Mapper {
            native: Some(Native::new(wire, created, asked)?),
            responses: None,
            completions: None,
            messages: None,
            observe_only,
        })
    }

    /// A bridged Responses stream: `wire`'s stream → chat chunks → Responses events;
    /// `on_complete` gets the assistant turn once `response.completed` is written.
    pub fn responses(
        wire: Wire,
        created: u64,
        asked: &Asked<'_>,
        mapper: crate::llm::responses::StreamMapper,
        on_complete: Option<OnComplete>,
    ) -> Mapper {
        Mapper {
            native: Native::new(wire, created, asked),
            responses: Some(Box::new(ResponsesStage {
                mapper,
                on_complete,
            })),
            completions: None,
            messages: None,
            observe_only: false,
        }
    }

    /// A bridged completions stream: `wire`'s stream → chat chunks → `text_completion`
    /// chunks.
    pub fn completions(wire: Wire, created: u64, asked: &Asked<'_>) -> Mapper {
        Mapper {
            native: Native::new(wire, created, asked),
            responses: None,
            completions: Some(crate::llm::completions::StreamMapper::default()),
            messages: None,
            observe_only: false,
        }
    }

    /// A Messages client's stream from a chat provider: `wire`'s stream → chat chunks →
    /// Messages events.
    pub fn messages(
        wire: Wire,
        created: u64,
        asked: &Asked<'_>,
        stage: crate::llm::messages::StreamMapper,
    ) -> Mapper {
        Mapper {
            native: Native::new(wire, created, asked),
            responses: None,
            completions: None,
            messages: Some(Box::new(stage)),
            observe_only: false,
        }
    }

    /// Whether the client gets the upstream bytes rather than the mapped ones.
    pub fn observe_only(&self) -> bool {
        self.observe_only
    }

    /// The events made from one upstream chunk (possibly none yet).
    pub fn on_chunk(&mut self, chunk: &[u8]) -> Bytes {
        let mut chat = Vec::new();
        let chat: &[u8] = match &mut self.native {
            Some(n) => {
                n.on_chunk(chunk, &mut chat);
                &chat
            }
            None => chunk,
        };
        if let Some(c) = &mut self.completions {
            let mut out = Vec::new();
            c.on_chunk(chat, &mut out);
            return Bytes::from(out);
        }
        if let Some(m) = &mut self.messages {
            let mut out = Vec::new();
            m.on_chunk(chat, &mut out);
            return Bytes::from(out);
        }
        match &mut self.responses {
            Some(r) => {
                let mut out = Vec::new();
                r.mapper.on_chunk(chat, &mut out);
                Bytes::from(out)
            }
            None => Bytes::copy_from_slice(chat),
        }
    }

    /// The stream's own failure event when the upstream fails mid-stream (a bridged
    /// Responses stream ends with `response.failed`); None to use the dialect's generic one.
    pub fn fail(&mut self, code: &str, message: &str) -> Option<Bytes> {
        if let Some(m) = self.messages.as_mut() {
            let mut out = Vec::new();
            let kind = match code {
                "upstream_timeout" => "timeout_error",
                _ => "api_error",
            };
            m.mapper_mut().fail(&mut out, kind, message);
            return Some(Bytes::from(out));
        }
        let r = self.responses.as_mut()?;
        let mut out = Vec::new();
        r.mapper.mapper_mut().fail(&mut out, code, message);
        Some(Bytes::from(out))
    }

    /// At the end of the upstream body: what is left, plus an error event when the
    /// provider's stream ended without its terminal event.
    pub fn finish(&mut self) -> Bytes {
        let mut chat = Vec::new();
        let done = match &mut self.native {
            Some(n) => n.finish(&mut chat),
            None => true,
        };
        if !done {
            crate::llm::translate::error_event(
                "The upstream stream ended before it was complete",
                "server_error",
                "upstream_stream_cut",
                &mut chat,
            );
        }
        if let Some(c) = &mut self.completions {
            let mut out = Vec::new();
            c.on_chunk(&chat, &mut out);
            c.finish(&mut out);
            return Bytes::from(out);
        }
        if let Some(m) = &mut self.messages {
            let mut out = Vec::new();
            m.on_chunk(&chat, &mut out);
            m.finish(&mut out);
            return Bytes::from(out);
        }
        let Some(r) = self.responses.as_mut() else {
            return Bytes::from(chat);
        };
        let mut out = Vec::new();
        r.mapper.on_chunk(&chat, &mut out);
        if r.mapper.finish(&mut out) {
            let assistant = r.mapper.mapper_mut().assistant.take();
            if let (Some(f), Some(a)) = (r.on_complete.take(), assistant) {
                f(a);
            }
        }
        Bytes::from(out)
    }
}

/// State gathered from a stream so far.
#[derive(Debug)]
pub struct SseObserver {
    dialect: Dialect,
    strip_usage_chunk: bool,
    /// Bytes of an event not yet terminated by a blank line.
    pending: BytesMut,
    pub usage: Option<Usage>,
    pub model: Option<String>,
    pub first_event_at: Option<Instant>,
    /// `[DONE]` or `response.completed` seen.
    pub completed: bool,
    /// `response.failed`, `error` event or an error object seen.
    pub failed: bool,
    pub events: u64,
}

impl SseObserver {
    /// A new observer; `strip_usage_chunk` drops the chat usage chunk from what is forwarded.
    pub fn new(dialect: Dialect, strip_usage_chunk: bool) -> Self {
        SseObserver {
            dialect,
            strip_usage_chunk,
            pending: BytesMut::new(),
            usage: None,
            model: None,
            first_event_at: None,
            completed: false,
            failed: false,
            events: 0,
        }
    }

    /// Observes one upstream chunk and returns what to forward (the chunk itself unless
    /// stripping, in which case only complete events are forwarded).
    pub fn on_chunk(&mut self, chunk: Bytes) -> Bytes {
        if self.first_event_at.is_none() && !chunk.is_empty() {
            self.first_event_at = Some(Instant::now());
        }
        if self.pending.is_empty() {
            // Fast path: look at the events in place; forward the chunk itself, or slices of
            // it around a dropped event, holding back only an unfinished last event.
            let mut start = 0;
            let mut kept_from = 0;
            let mut out: Option<BytesMut> = None;
            while let Some((end, sep, one_line)) = find_event_end(&chunk[start..]) {
                let keep = self.inspect(&chunk[start..start + end], one_line);
                if !keep && self.strip_usage_chunk {
                    let o = out.get_or_insert_with(|| BytesMut::with_capacity(chunk.len()));
                    o.extend_from_slice(&chunk[kept_from..start]);
                    kept_from = start + end + sep;
                }
                start += end + sep;
            }
            if start < chunk.len() {
                self.pending.extend_from_slice(&chunk[start..]);
            }
            if !self.strip_usage_chunk {
                return chunk;
            }
            return match out {
                Some(mut o) => {
                    o.extend_from_slice(&chunk[kept_from..start]);
                    o.freeze()
                }
                None if start == chunk.len() => chunk,
                None => chunk.slice(..start),
            };
        }
        self.pending.extend_from_slice(&chunk);
        let mut out = if self.strip_usage_chunk {
            Some(BytesMut::with_capacity(chunk.len()))
        } else {
            None
        };
        while let Some((end, sep, one_line)) = find_event_end(&self.pending) {
            let event = self.pending.split_to(end + sep).freeze();
            let keep = self.inspect(&event[..end], one_line);
            if let (Some(o), true) = (out.as_mut(), keep) {
                o.extend_from_slice(&event);
            }
        }
        match out {
            Some(o) => o.freeze(),
            None => chunk,
        }
    }

    /// Called at end of stream: forwards any unterminated tail (only when stripping;
    /// otherwise it was already forwarded as it arrived).
    pub fn finish(&mut self) -> Option<Bytes> {
        if self.pending.is_empty() {
            return None;
        }
        let tail = self.pending.split().freeze();
        let keep = self.inspect(&tail, false);
        (self.strip_usage_chunk && keep).then_some(tail)
    }

    /// Looks at one event (`one_line`: it holds no line break); returns false when it
    /// must not be forwarded.
    fn inspect(&mut self, event: &[u8], one_line: bool) -> bool {
        // Almost every event is a single `data:` line: borrow it; join only real multi-line data.
        let mut single: Option<&[u8]> = None;
        let mut joined: Option<Vec<u8>> = None;
        let mut event_type: Option<&[u8]> = None;
        for line in lines(event, one_line) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(d) = line.strip_prefix(b"data:") {
                let d = d.strip_prefix(b" ").unwrap_or(d);
                match (&mut joined, single) {
                    (Some(j), _) => {
                        j.push(b'\n');
                        j.extend_from_slice(d);
                    }
                    (None, Some(first)) => {
                        let mut j = first.to_vec();
                        j.push(b'\n');
                        j.extend_from_slice(d);
                        joined = Some(j);
                    }
                    (None, None) => single = Some(d),
                }
            } else if let Some(t) = line.strip_prefix(b"event:") {
                event_type = Some(t.strip_prefix(b" ").unwrap_or(t));
            }
        }
        let data: &[u8] = match (&joined, single) {
            (Some(j), _) => j,
            (None, Some(d)) => d,
            (None, None) => return true,
        };
        self.events += 1;
        if data == b"[DONE]" {
            self.completed = true;
            return true;
        }
        match self.dialect {
            Dialect::ChatLike => self.inspect_chat(data),
            Dialect::Responses => {
                self.inspect_responses(data, event_type);
                true
            }
            Dialect::Messages => {
                self.inspect_messages(data);
                true
            }
        }
    }

    fn inspect_chat(&mut self, data: &[u8]) -> bool {
        // Parse only the events that can carry what we need: the first (model), a non-null
        // usage, or an error. OpenAI sends `"usage":null` on every chunk once usage is on.
        let wanted = self.model.is_none() || has_usage(data) || ERROR.find(data).is_some();
        if !wanted {
            return true;
        }
        #[derive(serde::Deserialize)]
        struct Chunk<'a> {
            #[serde(borrow)]
            model: Option<std::borrow::Cow<'a, str>>,
            choices: Option<Vec<serde::de::IgnoredAny>>,
            usage: Option<crate::llm::usage::UsageWire>,
            error: Option<serde::de::IgnoredAny>,
        }
        let Ok(v) = serde_json::from_slice::<Chunk<'_>>(data) else {
            return true;
        };
        if self.model.is_none() {
            self.model = v.model.map(|m| m.into_owned());
        }
        if v.error.is_some() {
            self.failed = true;
        }
        if let Some(u) = v.usage.as_ref().and_then(UsageWire::usage) {
            self.usage = Some(u);
            let usage_only = v.choices.map(|c| c.is_empty()).unwrap_or(false);
            if usage_only && self.strip_usage_chunk {
                return false;
            }
        }
        true
    }

    /// Anthropic events: the model in `message_start`, the usage in `message_delta` (which
    /// the gateway's own Messages events carry whole), `message_stop` or `error` at the end.
    fn inspect_messages(&mut self, data: &[u8]) {
        let interesting = [
            &b"message_start"[..],
            b"message_delta",
            b"message_stop",
            b"\"error\"",
        ];
        if !interesting.iter().any(|t| contains(data, t)) {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let m = v.get("message");
                self.model = m
                    .and_then(|m| m.get("model"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            "message_delta" => {
                if let Some(u) = v.get("usage").and_then(crate::llm::anthropic::usage) {
                    self.usage = Some(u);
                }
            }
            "message_stop" => self.completed = true,
            "error" => self.failed = true,
            _ => {}
        }
    }

    fn inspect_responses(&mut self, data: &[u8], event_type: Option<&[u8]>) {
        let terminal = [
            &b"response.completed"[..],
            b"response.failed",
            b"response.incomplete",
            b"\"error\"",
        ];
        let is_terminal = terminal.iter().any(|t| contains(data, t))
            || event_type.map(|t| t == b"error").unwrap_or(false);
        if !is_terminal && self.model.is_some() {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        if let Some(r) = v.get("response") {
            if let Some(m) = r.get("model").and_then(Value::as_str) {
                self.model = Some(m.to_string());
            }
            if let Some(u) = r
                .get("usage")
                .filter(|u| !u.is_null())
                .and_then(Usage::from_json)
            {
                self.usage = Some(u);
            }
        }
        match ty {
            "response.completed" | "response.incomplete" => self.completed = true,
            "response.failed" | "error" => self.failed = true,
            _ => {}
        }
    }
}

/// Position and separator length of the first blank line (`\n\n` or `\r\n\r\n`), and
/// whether the event before it is one line (nearly always: one `data:` line), which spares
/// [`lines`] a second search.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize, bool)> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]).map(|i| i + from) {
        match buf.get(i + 1) {
            Some(b'\n') => return Some((i, 2, from == 0)),
            Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some((i, 3, from == 0)),
            None => return None,
            _ => from = i + 1,
        }
    }
    None
}

/// An event's lines, found with `memchr` (a byte-at-a-time `split` was most of the
/// observer's time on a ~200-byte event).
fn lines(event: &[u8], one_line: bool) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(event);
    std::iter::from_fn(move || {
        let r = rest?;
        let next = if one_line {
            None
        } else {
            memchr::memchr(b'\n', r)
        };
        match next {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// Searchers built once: building a memmem searcher costs more than running it on one event.
/// (One aho-corasick pass for both keys, its packed Teddy searcher, cost more than these two
/// passes: 9.8k vs 8.0k instructions per 20-chunk stream.)
static USAGE: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
static ERROR: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\"error\""));

/// A `"usage"` member whose value is not `null`.
fn has_usage(data: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = USAGE.find(&data[from..]) {
        let rest = &data[from + i + 7..];
        let value = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b':' | b'\t' | b'\r' | b'\n'))
            .map(|p| &rest[p..]);
        if !matches!(value, Some(v) if v.starts_with(b"null")) {
            return true;
        }
        from += i + 7;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = "data: {\"id\":\"1\",\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"id\":\"1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n\
data: [DONE]\n\n";

    fn feed(o: &mut SseObserver, text: &str, step: usize) -> String {
        let mut out = Vec::new();
        for c in text.as_bytes().chunks(step) {
            out.extend_from_slice(&o.on_chunk(Bytes::copy_from_slice(c)));
        }
        if let Some(t) = o.finish() {
            out.extend_from_slice(&t);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn passes_through_and_reads_usage_across_splits() {
        for step in [1, 7, 4096] {
            let mut o = SseObserver::new(Dialect::ChatLike, false);
            assert_eq!(feed(&mut o, CHAT, step), CHAT);
            assert_eq!(o.usage.as_ref().map(|u| u.total_tokens), Some(4));
            assert_eq!(o.model.as_deref(), Some("gpt-4o"));
            assert!(o.completed);
        }
    }

    #[test]
    fn strips_the_usage_chunk_only() {
        for step in [1, 13, 4096] {
            let mut o = SseObserver::new(Dialect::ChatLike, true);
            let out = feed(&mut o, CHAT, step);
            assert!(!out.contains("usage"), "{out}");
            assert!(out.contains("finish_reason") && out.ends_with("data: [DONE]\n\n"));
            assert_eq!(o.usage.as_ref().map(|u| u.prompt_tokens), Some(3));
        }
    }

    /// An event's data may span lines (joined with a newline, as SSE says), with comments
    /// and CRLF endings between them; the observer reads it whole.
    #[test]
    fn multi_line_data_is_joined() {
        let s = ": keep-alive\r\ndata: {\"model\":\"gpt-4o\",\r\ndata: \"choices\":[],\n\
data: \"usage\":{\"prompt_tokens\":2,\"completion_tokens\":5,\"total_tokens\":7}}\n\n\
data: [DONE]\n\n";
        reads_chat_whole(s, [1, 9, 4096], 7);
    }

    /// Fed in steps of each size, `s` passes through unchanged and its model (gpt-4o),
    /// usage (`total` tokens) and end are read.
    fn reads_chat_whole(s: &str, steps: [usize; 3], total: u64) {
        for step in steps {
            let mut o = SseObserver::new(Dialect::ChatLike, false);
            assert_eq!(feed(&mut o, s, step), s);
            assert_eq!(o.model.as_deref(), Some("gpt-4o"));
            assert_eq!(o.usage.as_ref().map(|u| u.total_tokens), Some(total));
            assert!(o.completed);
        }
    }

    /// One-line events (read without a second search for line breaks), with CRLF endings.
    #[test]
    fn one_line_events_with_crlf_endings() {
        assert_eq!(find_event_end(b"data: x\r\n\r\nmore"), Some((8, 3, true)));
        assert_eq!(
            find_event_end(b"event: e\ndata: x\n\n"),
            Some((16, 2, false))
        );
        assert_eq!(find_event_end(b"data: x\n"), None);
        let s = "data: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\
\"completion_tokens\":2,\"total_tokens\":3}}\r\n\r\ndata: [DONE]\r\n\r\n";
        reads_chat_whole(s, [1, 5, 4096], 3);
    }

    #[test]
    fn responses_usage_and_failure() {
        let s = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"model\":\"gpt-4o\"}}\n\n\
event: response.completed\r\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"usage\":{\"input_tokens\":5,\"output_tokens\":2,\"total_tokens\":7}}}\r\n\r\n";
        let mut o = SseObserver::new(Dialect::Responses, false);
        assert_eq!(feed(&mut o, s, 5), s);
        assert!(o.completed && !o.failed);
        assert_eq!(o.usage.map(|u| u.completion_tokens), Some(2));
        let mut o = SseObserver::new(Dialect::Responses, false);
        feed(
            &mut o,
            "data: {\"type\":\"response.failed\",\"response\":{}}\n\n",
            3,
        );
        assert!(o.failed && !o.completed);
    }

    #[test]
    fn garbage_never_panics() {
        let mut o = SseObserver::new(Dialect::ChatLike, true);
        feed(
            &mut o,
            "data: {not json\n\n\n\n:\n\ndata:\ndata: \"usage\"\n\r\n",
            2,
        );
        let mut o = SseObserver::new(Dialect::Responses, false);
        feed(
            &mut o,
            "data: {\"type\":\"response.completed\"\n\n\u{0}\u{ff}",
            1,
        );
    }
}

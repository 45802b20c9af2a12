//! One wrapper for every stream mapper: a [`Framing`] cuts the upstream bytes, which arrive in
//! arbitrary TCP chunks, into complete events, and the dialect's [`MapEvents`] sees one whole
//! event at a time. A dialect then only says what one event means.

use crate::llm::sse;

/// How a stream's bytes split into events; a partial event waits for the next chunk.
pub trait Framing: Default {
    /// One complete event.
    type Event: ?Sized;

    /// Feeds bytes; `emit` gets each event they complete.
    fn push(&mut self, bytes: &[u8], emit: impl FnMut(&Self::Event));

    /// End of the body: `emit` gets what is left, if it counts as an event.
    fn finish(&mut self, emit: impl FnMut(&Self::Event));
}

impl Framing for sse::Framer {
    type Event = sse::Event;

    fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&sse::Event)) {
        sse::Framer::push(self, bytes, |ev| emit(&ev));
    }

    fn finish(&mut self, mut emit: impl FnMut(&sse::Event)) {
        sse::Framer::finish(self, |ev| emit(&ev));
    }
}

/// Newline-delimited JSON (Ollama's streams, Cohere's v1 chat): each line is an event.
#[derive(Debug, Default)]
pub struct Ndjson {
    /// A line not yet ended by `\n`.
    line: Vec<u8>,
}

impl Framing for Ndjson {
    type Event = [u8];

    fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        while let Some(i) = memchr::memchr(b'\n', bytes) {
            // A line wholly inside this chunk is handed over in place, without a copy.
            if self.line.is_empty() {
                emit(&bytes[..i]);
            } else {
                self.line.extend_from_slice(&bytes[..i]);
                let line = std::mem::take(&mut self.line);
                emit(&line);
            }
            bytes = &bytes[i + 1..];
        }
        self.line.extend_from_slice(bytes);
    }

    /// The last line may lack its newline; it is handed over even when empty (mappers skip
    /// lines that are not JSON objects).
    fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        let line = std::mem::take(&mut self.line);
        emit(&line);
    }
}

/// SSE, or one JSON array whose elements arrive over time (what Gemini's
/// `streamGenerateContent` answers without `alt=sse`): the first byte decides, and each
/// array element is handed over as an event's data.
#[derive(Debug, Default)]
pub struct SseOrJsonArray {
    mode: Option<ArrayOrSse>,
}

#[derive(Debug)]
enum ArrayOrSse {
    Sse(sse::Framer),
    Array(JsonArray),
}

impl Framing for SseOrJsonArray {
    type Event = sse::Event;

    fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&sse::Event)) {
        let mode = match &mut self.mode {
            Some(m) => m,
            None => {
                let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
                    return;
                };
                self.mode.insert(match first {
                    b'[' => ArrayOrSse::Array(JsonArray::default()),
                    _ => ArrayOrSse::Sse(sse::Framer::default()),
                })
            }
        };
        match mode {
            ArrayOrSse::Sse(f) => f.push(bytes, |ev| emit(&ev)),
            ArrayOrSse::Array(a) => a.push(bytes, |el| {
                emit(&sse::Event {
                    kind: None,
                    data: el.to_vec(),
                })
            }),
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(&sse::Event)) {
        if let Some(ArrayOrSse::Sse(f)) = &mut self.mode {
            f.finish(|ev| emit(&ev));
        }
        // An array cut before its last element closed has nothing whole left to hand over.
    }
}

/// The top-level elements of one JSON array, as their bytes complete. Written by hand: a
/// streaming JSON parser would be a dependency for what is a bracket counter that knows
/// strings.
#[derive(Debug, Default)]
struct JsonArray {
    /// `[` seen.
    opened: bool,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The element so far.
    element: Vec<u8>,
}

impl JsonArray {
    fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        for &b in bytes {
            if !self.opened {
                self.opened = b == b'[';
                continue;
            }
            if self.depth == 0 && !self.in_string {
                // Between elements: separators, whitespace and the closing bracket.
                match b {
                    b'{' | b'[' => self.depth = 1,
                    b'"' => self.in_string = true,
                    _ => continue,
                }
                self.element.push(b);
                continue;
            }
            self.element.push(b);
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                if self.in_string || self.depth > 0 {
                    continue;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
                if self.depth > 0 || self.in_string {
                    continue;
                }
            }
            emit(&self.element);
            self.element.clear();
        }
    }
}

/// A dialect's stream mapping, one complete event at a time.
pub trait MapEvents {
    /// The framing of the dialect's stream.
    type Framing: Framing;

    /// Writes the OpenAI events (chunks, errors) that one upstream event means.
    fn on_event(&mut self, ev: &<Self::Framing as Framing>::Event, out: &mut Vec<u8>);

    /// After the last event: whatever the dialect writes at the end; true when the stream
    /// was complete (its terminal event seen), false when it was cut.
    fn end(&mut self, out: &mut Vec<u8>) -> bool;
}

/// A dialect's event mapper behind its framing: takes upstream chunks as they arrive.
#[derive(Debug, Default)]
pub struct Framed<M: MapEvents> {
    framing: M::Framing,
    mapper: M,
}

impl<M: MapEvents> Framed<M> {
    /// `mapper` behind an empty framing.
    pub fn wrap(mapper: M) -> Self {
        Framed {
            framing: M::Framing::default(),
            mapper,
        }
    }

    /// Maps the events completed by `chunk`; an unfinished one waits for the next chunk.
    pub fn on_chunk(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mapper = &mut self.mapper;
        self.framing.push(chunk, |ev| mapper.on_event(ev, out));
    }

    /// At the end of the upstream body: the rest, then the mapper's end; true when the
    /// stream was complete.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        let mapper = &mut self.mapper;
        self.framing.finish(|ev| mapper.on_event(ev, out));
        self.mapper.end(out)
    }

    /// The event mapper.
    pub fn mapper(&self) -> &M {
        &self.mapper
    }

    /// The event mapper, for dialect operations besides mapping (a bridged Responses
    /// stream's failure, its assistant turn).
    pub fn mapper_mut(&mut self) -> &mut M {
        &mut self.mapper
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut f = Ndjson::default();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, |l| out.push(l.to_vec()));
        }
        f.finish(|l| out.push(l.to_vec()));
        out
    }

    fn array_events(chunks: &[&[u8]]) -> Vec<String> {
        let mut f = SseOrJsonArray::default();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, |e| {
                out.push(String::from_utf8_lossy(&e.data).into_owned())
            });
        }
        f.finish(|e| out.push(String::from_utf8_lossy(&e.data).into_owned()));
        out
    }

    #[test]
    fn json_array_elements_across_chunks() {
        let whole: &[u8] = b"[{\"a\":\"x]}\\\"\",\"b\":[1,{\"c\":2}]}\r\n,\r\n{\"d\":{}}\n]";
        let expect = vec![
            "{\"a\":\"x]}\\\"\",\"b\":[1,{\"c\":2}]}".to_string(),
            "{\"d\":{}}".to_string(),
        ];
        assert_eq!(array_events(&[whole]), expect);
        for i in 0..whole.len() {
            assert_eq!(
                array_events(&[&whole[..i], &whole[i..]]),
                expect,
                "split at {i}"
            );
        }
        // SSE still frames as SSE.
        assert_eq!(array_events(&[b"data: {\"e\":1}\n\n"]), vec!["{\"e\":1}"]);
        // A cut array hands over only whole elements.
        assert_eq!(array_events(&[b"[{\"a\":1},{\"b\""]), vec!["{\"a\":1}"]);
    }

    #[test]
    fn ndjson_lines_across_chunks() {
        let whole: &[u8] = b"{\"a\":1}\n\n{\"b\":2}\n{\"c\"";
        let expect: Vec<Vec<u8>> = vec![
            b"{\"a\":1}".to_vec(),
            b"".to_vec(),
            b"{\"b\":2}".to_vec(),
            b"{\"c\"".to_vec(),
        ];
        assert_eq!(lines(&[whole]), expect);
        for i in 0..whole.len() {
            assert_eq!(lines(&[&whole[..i], &whole[i..]]), expect, "split at {i}");
        }
    }
}

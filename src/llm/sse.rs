//! Server-sent events framing for streams the gateway rewrites: events split out of
//! arbitrary TCP chunks, and `data:` lines written back.

use serde::Serialize;

/// One complete event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, if any.
    pub kind: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: Vec<u8>,
}

/// Reassembles events across chunk boundaries (an event ends at a blank line; `\n`,
/// `\r\n` and `\r` line ends are all accepted, as the SSE spec says).
#[derive(Debug, Default)]
pub struct Framer {
    line: Vec<u8>,
    event: Event,
    has_data: bool,
    /// The previous chunk ended with `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
}

impl Framer {
    /// Feeds bytes; `emit` gets each event completed by them.
    pub fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(Event)) {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', bytes) {
            self.line.extend_from_slice(&bytes[..i]);
            let cr = bytes[i] == b'\r';
            bytes = &bytes[i + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.after_cr = true,
                    _ => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, &mut emit);
        }
        self.line.extend_from_slice(bytes);
    }

    /// End of stream: an event left without its blank line still counts.
    pub fn finish(&mut self, mut emit: impl FnMut(Event)) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, &mut emit);
        }
        self.on_line(b"", &mut emit);
    }

    fn on_line(&mut self, line: &[u8], emit: &mut impl FnMut(Event)) {
        if line.is_empty() {
            if self.has_data || self.event.kind.is_some() {
                self.has_data = false;
                emit(std::mem::take(&mut self.event));
            }
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => return, // a comment
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.event.data.push(b'\n');
                }
                self.event.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event.kind = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }
}

/// Appends `data: <json>\n\n`.
pub fn write_data<T: Serialize>(out: &mut Vec<u8>, v: &T) {
    out.extend_from_slice(b"data: ");
    // Writing JSON into a Vec cannot fail for serde_json::Value and plain structs.
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(chunks: &[&[u8]]) -> Vec<Event> {
        let mut f = Framer::default();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, |e| out.push(e));
        }
        f.finish(|e| out.push(e));
        out
    }

    #[test]
    fn events_across_chunks_and_line_ends() {
        let whole: &[u8] = b"event: a\ndata: {\"x\":1}\n\n: ping\n\nevent: b\r\ndata: l1\r\ndata: l2\r\n\r\ndata: tail";
        let expect = vec![
            Event {
                kind: Some("a".into()),
                data: b"{\"x\":1}".to_vec(),
            },
            Event {
                kind: Some("b".into()),
                data: b"l1\nl2".to_vec(),
            },
            Event {
                kind: None,
                data: b"tail".to_vec(),
            },
        ];
        assert_eq!(frame(&[whole]), expect);
        // Every split point, including between \r and \n.
        for i in 0..whole.len() {
            assert_eq!(frame(&[&whole[..i], &whole[i..]]), expect, "split at {i}");
        }
    }
}

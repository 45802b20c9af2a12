//! Per-request fault-injection directives, from the `x-mock` header and
//! `[mock:...]` markers in the prompt text.

/// Marker prefix looked for in prompt text.
const MARKER: &str = "[mock:";

/// Upper bound for `chunks=N`, so a typo cannot make one request allocate
/// gigabytes.
pub(crate) const MAX_CHUNKS: usize = 100_000;

/// What a request asked the mock to do differently.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Directives {
    pub status: Option<u16>,
    pub delay_ms: Option<u64>,
    pub chunk_delay_ms: Option<u64>,
    pub chunks: Option<usize>,
    pub reply: Option<String>,
    pub disconnect_after: Option<usize>,
    pub reset: bool,
    pub hang: bool,
    pub non_json: bool,
    pub failed: bool,
    /// Answer with a tool call: the request's first tool, or the one named by `tool=NAME`.
    pub tool: bool,
    pub tool_name: Option<String>,
    /// Re-cut a stream's bytes into frames of this size, so frames no longer line up
    /// with events (the way TCP may deliver them).
    pub split: Option<usize>,
    /// Answer gzip-encoded (`Content-Encoding: gzip`) whatever the request's
    /// `Accept-Encoding` said, as some servers and proxies do.
    pub gzip: bool,
}

impl Directives {
    /// Applies an `x-mock` header value: `key=value` pairs separated by `;`
    /// or `,`.
    pub(crate) fn apply_header(&mut self, value: &str) {
        for pair in value.split([';', ',']) {
            self.apply_pair(pair);
        }
    }

    /// Applies every `[mock:...]` marker found in `text`.
    pub(crate) fn apply_markers(&mut self, text: &str) {
        let mut rest = text;
        while let Some(start) = rest.find(MARKER) {
            let after = &rest[start + MARKER.len()..];
            let Some(end) = after.find(']') else {
                break;
            };
            let content = &after[..end];
            // A reply runs to the closing bracket so it may contain `;` and `,`.
            match content.trim_start().strip_prefix("reply=") {
                Some(reply) => self.reply = Some(reply.to_owned()),
                None => self.apply_header(content),
            }
            rest = &after[end + 1..];
        }
    }

    fn apply_pair(&mut self, pair: &str) {
        let pair = pair.trim();
        if pair.is_empty() {
            return;
        }
        let (key, value) = match pair.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim())),
            None => (pair, None),
        };
        let number = || value.and_then(|v| v.parse::<u64>().ok());
        match key {
            "status" => {
                if let Some(n) = value.and_then(|v| v.parse::<u16>().ok()) {
                    self.status = Some(n);
                }
            }
            "delay_ms" => self.delay_ms = number().or(self.delay_ms),
            "chunk_delay_ms" => self.chunk_delay_ms = number().or(self.chunk_delay_ms),
            "gzip" => self.gzip = true,
            "chunks" => {
                if let Some(n) = number().filter(|n| *n > 0) {
                    self.chunks = Some(usize::try_from(n).unwrap_or(MAX_CHUNKS).min(MAX_CHUNKS));
                }
            }
            "disconnect_after" => {
                if let Some(n) = number() {
                    self.disconnect_after = Some(usize::try_from(n).unwrap_or(usize::MAX));
                }
            }
            "reply" => self.reply = Some(value.unwrap_or_default().to_owned()),
            "reset" => self.reset = flag(value),
            "hang" => self.hang = flag(value),
            "non_json" => self.non_json = flag(value),
            "failed" => self.failed = flag(value),
            "tool" => {
                self.tool = flag(value);
                self.tool_name = value
                    .filter(|v| {
                        !matches!(
                            *v,
                            "0" | "1" | "true" | "false" | "on" | "off" | "yes" | "no"
                        )
                    })
                    .map(str::to_owned);
            }
            "split" => {
                if let Some(n) = number().filter(|n| *n > 0) {
                    self.split = Some(usize::try_from(n).unwrap_or(usize::MAX));
                }
            }
            _ => {}
        }
    }
}

/// A bare flag means on; `=0`/`=false`/`=off` lets a header undo a marker.
fn flag(value: Option<&str>) -> bool {
    !matches!(value, Some("0" | "false" | "off" | "no"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_pairs_with_both_separators() {
        let mut d = Directives::default();
        d.apply_header("status=503; delay_ms=20,chunks=4 ,reset, unknown=1, split=7");
        assert_eq!(d.status, Some(503));
        assert_eq!(d.split, Some(7));
        assert_eq!(d.delay_ms, Some(20));
        assert_eq!(d.chunks, Some(4));
        assert!(d.reset);
        assert!(!d.hang);
    }

    #[test]
    fn markers_anywhere_in_text() {
        let mut d = Directives::default();
        d.apply_markers("hi [mock:chunk_delay_ms=5] there [mock:reply=Yes, sir; ok] [mock:hang]");
        assert_eq!(d.chunk_delay_ms, Some(5));
        assert_eq!(d.reply.as_deref(), Some("Yes, sir; ok"));
        assert!(d.hang);
    }

    #[test]
    fn marker_with_several_pairs_and_unclosed_marker() {
        let mut d = Directives::default();
        d.apply_markers("[mock:status=429;delay_ms=1] [mock:non_json");
        assert_eq!(d.status, Some(429));
        assert_eq!(d.delay_ms, Some(1));
        assert!(!d.non_json);
    }

    #[test]
    fn bad_values_are_ignored_and_flags_can_be_undone() {
        let mut d = Directives::default();
        d.apply_markers("[mock:failed]");
        d.apply_header("status=abc;chunks=0;delay_ms=-1;failed=false;chunks=999999999");
        assert_eq!(d.status, None);
        assert_eq!(d.delay_ms, None);
        assert_eq!(d.chunks, Some(MAX_CHUNKS));
        assert!(!d.failed);
    }
}

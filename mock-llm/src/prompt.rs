//! Walking request prompts (for token counts and `[mock:...]` markers) and
//! splitting the reply into stream pieces.

use serde_json::Value;

use crate::faults::Directives;

/// Reply used when the request does not override it.
pub(crate) const DEFAULT_REPLY: &str = "Hello from mock-llm.";

/// Counts prompt words and applies markers while visiting prompt text.
#[derive(Debug, Default)]
pub(crate) struct PromptScan {
    tokens: u64,
}

impl PromptScan {
    /// Prompt token count, never below 1 like a real tokenizer with a BOS
    /// token.
    pub(crate) fn tokens(&self) -> u64 {
        self.tokens.max(1)
    }

    fn text(&mut self, text: &str, directives: &mut Directives) {
        self.tokens += text.split_whitespace().count() as u64;
        if text.contains("[mock:") {
            directives.apply_markers(text);
        }
    }

    /// Chat: `messages[].content` as a string or as `{type:"text",text}`
    /// parts.
    pub(crate) fn chat(&mut self, body: &Value, directives: &mut Directives) {
        let Some(messages) = body.get("messages").and_then(Value::as_array) else {
            return;
        };
        for message in messages {
            match message.get("content") {
                Some(Value::String(text)) => self.text(text, directives),
                Some(Value::Array(parts)) => {
                    for part in parts {
                        match part {
                            Value::String(text) => self.text(text, directives),
                            _ => {
                                if let Some(text) = part.get("text").and_then(Value::as_str) {
                                    self.text(text, directives);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// A list of `{text}` blocks (Bedrock's `system`).
    pub(crate) fn text_blocks(&mut self, value: Option<&Value>, directives: &mut Directives) {
        for block in value.and_then(Value::as_array).into_iter().flatten() {
            if let Some(text) = block.get("text").and_then(Value::as_str) {
                self.text(text, directives);
            }
        }
    }

    /// Gemini: `contents[].parts[].text`, `systemInstruction.parts[].text`, and the texts
    /// of `batchEmbedContents` requests.
    pub(crate) fn gemini(&mut self, body: &Value, directives: &mut Directives) {
        let mut parts_of = |content: Option<&Value>| {
            let parts = content
                .and_then(|c| c.get("parts"))
                .and_then(Value::as_array);
            for part in parts.into_iter().flatten() {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    self.text(text, directives);
                }
            }
        };
        for c in body
            .get("contents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            parts_of(Some(c));
        }
        parts_of(body.get("systemInstruction"));
        for r in body
            .get("requests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            parts_of(r.get("content"));
        }
    }

    /// Legacy completions `prompt` and embeddings `input`: a string, token
    /// array, or array of either.
    pub(crate) fn prompt(&mut self, value: Option<&Value>, directives: &mut Directives) {
        match value {
            Some(Value::String(text)) => self.text(text, directives),
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(text) => self.text(text, directives),
                        Value::Array(tokens) => self.tokens += tokens.len() as u64,
                        Value::Number(_) => self.tokens += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// Responses `input`: a string, or items whose `content` is a string or
    /// parts carrying `text`.
    pub(crate) fn responses(&mut self, body: &Value, directives: &mut Directives) {
        match body.get("input") {
            Some(Value::String(text)) => self.text(text, directives),
            Some(Value::Array(items)) => {
                for item in items {
                    match item.get("content") {
                        Some(Value::String(text)) => self.text(text, directives),
                        Some(Value::Array(parts)) => {
                            for part in parts {
                                if let Some(text) = part.get("text").and_then(Value::as_str) {
                                    self.text(text, directives);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// The assistant's answer and where it is cut into stream pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    text: String,
    /// Byte offsets where each piece starts; a piece ends where the next
    /// starts.
    starts: Vec<usize>,
}

impl Reply {
    /// Splits `text` one piece per word (trailing whitespace included), or
    /// into exactly `chunks` pieces.
    pub(crate) fn new(text: &str, chunks: Option<usize>) -> Reply {
        let mut starts = word_starts(text);
        let Some(n) = chunks.filter(|n| *n > 0) else {
            return Reply {
                text: text.to_owned(),
                starts,
            };
        };
        if starts.len() < n {
            // Too few words for N pieces: make up N words so the count is exact.
            let mut text = String::with_capacity(n * 7);
            for i in 0..n {
                if i > 0 {
                    text.push(' ');
                }
                text.push_str("tok");
                text.push_str(&i.to_string());
            }
            let starts = word_starts(&text);
            return Reply { text, starts };
        }
        let words = starts.len();
        starts = (0..n).map(|j| starts[j * words / n]).collect();
        Reply {
            text: text.to_owned(),
            starts,
        }
    }

    /// The whole reply.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Number of pieces, which is also the completion token count.
    pub(crate) fn tokens(&self) -> u64 {
        self.starts.len() as u64
    }

    /// The pieces in order; concatenated they give [`Reply::text`].
    pub(crate) fn pieces(&self) -> impl Iterator<Item = &str> {
        let ends = self.starts.iter().skip(1).copied().chain([self.text.len()]);
        self.starts
            .iter()
            .zip(ends)
            .map(|(&start, end)| &self.text[start..end])
    }
}

/// Start offsets of the pieces of `text`, one per word; leading whitespace
/// belongs to the first piece so the pieces cover the whole text.
fn word_starts(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if prev_space && !space {
            starts.push(if starts.is_empty() { 0 } else { i });
        }
        prev_space = space;
    }
    if starts.is_empty() && !text.is_empty() {
        starts.push(0);
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pieces(r: &Reply) -> Vec<&str> {
        r.pieces().collect()
    }

    #[test]
    fn default_split_is_one_piece_per_word() {
        let r = Reply::new(DEFAULT_REPLY, None);
        assert_eq!(pieces(&r), ["Hello ", "from ", "mock-llm."]);
        assert_eq!(r.tokens(), 3);
    }

    #[test]
    fn leading_whitespace_and_empty() {
        let r = Reply::new("  a  b ", None);
        assert_eq!(pieces(&r), ["  a  ", "b "]);
        assert_eq!(Reply::new("", None).tokens(), 0);
        assert_eq!(pieces(&Reply::new("   ", None)), ["   "]);
    }

    #[test]
    fn chunks_groups_words() {
        let r = Reply::new("a b c d e", Some(2));
        assert_eq!(pieces(&r), ["a b ", "c d e"]);
        assert_eq!(r.tokens(), 2);
    }

    #[test]
    fn chunks_generates_words_when_too_few() {
        let r = Reply::new("hi", Some(4));
        assert_eq!(r.text(), "tok0 tok1 tok2 tok3");
        assert_eq!(pieces(&r), ["tok0 ", "tok1 ", "tok2 ", "tok3"]);
    }

    #[test]
    fn chat_scan_counts_words_and_reads_markers() {
        let body = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "one two [mock:chunks=2]"}, {"type": "image_url"}]},
            {"role": "assistant", "content": null}
        ]});
        let mut d = Directives::default();
        let mut scan = PromptScan::default();
        scan.chat(&body, &mut d);
        assert_eq!(scan.tokens(), 5);
        assert_eq!(d.chunks, Some(2));
    }

    #[test]
    fn prompt_and_responses_scan() {
        let mut d = Directives::default();
        let mut scan = PromptScan::default();
        scan.prompt(Some(&json!(["a b", [1, 2, 3]])), &mut d);
        assert_eq!(scan.tokens(), 5);

        let mut scan = PromptScan::default();
        scan.prompt(Some(&json!([1, 2])), &mut d);
        assert_eq!(scan.tokens(), 2);

        let mut scan = PromptScan::default();
        let body = json!({"input": [
            {"role": "user", "content": "x y"},
            {"role": "user", "content": [{"type": "input_text", "text": "z [mock:status=500]"}]}
        ]});
        scan.responses(&body, &mut d);
        assert_eq!(scan.tokens(), 4);
        assert_eq!(d.status, Some(500));

        assert_eq!(PromptScan::default().tokens(), 1);
    }
}

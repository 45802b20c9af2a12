//! A JSON writer for the log records, which are written once per request: fields are
//! appended straight to a byte buffer, and strings that need no escaping (nearly all of
//! them) are copied whole after a word-at-a-time scan. Written by hand because serde_json's
//! serializer escapes byte by byte through a table, which made the log line the costliest
//! part of a logged request (see bench/results/2026-12-02-callgrind.md).

/// Appends JSON to a buffer; the caller keeps the structure (commas via `sep`).
pub struct Out {
    pub buf: Vec<u8>,
    /// Whether the next member of the current object or array needs a comma first.
    first: bool,
}

/// True when one of the 8 bytes in `w` is a quote, a backslash or a control character.
#[inline]
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    // Bytes below 0x20: subtracting 0x20 borrows into the high bit (for bytes < 0x80).
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    control | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\'))) != 0
}

/// How many bytes at the start of `bytes` need no escaping: a word at a time, then the
/// last partial word at once. (A 32-byte loop the compiler vectorizes, in front, did not
/// count fewer instructions per log line: its strings are short.)
#[inline]
fn clean_prefix(bytes: &[u8]) -> usize {
    let n = bytes.len();
    let mut i = 0;
    while i + 8 <= n {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i..i + 8]);
        if needs_escape(u64::from_le_bytes(w)) {
            return i;
        }
        i += 8;
    }
    if i < n {
        let clean = if n >= 8 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[n - 8..]);
            !needs_escape(u64::from_le_bytes(w))
        } else {
            bytes[i..]
                .iter()
                .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
        };
        if clean {
            i = n;
        }
    }
    i
}

impl Out {
    /// A writer that appends to `buf` (a sink's reusable buffer).
    pub fn appending(buf: Vec<u8>) -> Out {
        Out { buf, first: true }
    }

    /// Opens an object (`{`).
    #[inline]
    pub fn open(&mut self) {
        self.buf.push(b'{');
        self.first = true;
    }

    /// Closes an object (`}`).
    #[inline]
    pub fn close(&mut self) {
        self.buf.push(b'}');
        self.first = false;
    }

    /// Opens an array (`[`).
    pub fn open_array(&mut self) {
        self.buf.push(b'[');
        self.first = true;
    }

    /// Closes an array (`]`).
    pub fn close_array(&mut self) {
        self.buf.push(b']');
        self.first = false;
    }

    /// A comma unless this is the first member.
    #[inline]
    fn sep(&mut self) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
    }

    /// Starts an array element.
    pub fn elem(&mut self) {
        self.sep();
    }

    /// Writes `"name":` (names are the code's own, never needing escapes).
    #[inline]
    pub fn key(&mut self, name: &str) {
        self.sep();
        self.buf.push(b'"');
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b"\":");
        // The value follows directly; an object or array value resets `first` itself.
        self.first = true;
    }

    /// Writes a key whose name comes from input (escaped).
    pub fn key_escaped(&mut self, name: &str) {
        self.key_bytes(name.as_bytes());
    }

    /// Writes a key whose name is input bytes (a header name), as [`Out::string_bytes`] does.
    pub fn key_bytes(&mut self, name: &[u8]) {
        self.sep();
        self.string_bytes(name);
        self.buf.push(b':');
        self.first = true;
    }

    /// Writes a key that is an HTTP header name, copied as it is: `http` admits only token
    /// characters in names (no quote, backslash, control or non-ASCII byte), so the escape
    /// scan of [`Out::key_bytes`] would find nothing.
    pub fn header_name(&mut self, name: &[u8]) {
        debug_assert!(name
            .iter()
            .all(|b| b.is_ascii_graphic() && *b != b'"' && *b != b'\\'));
        self.sep();
        self.buf.push(b'"');
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(b"\":");
        self.first = true;
    }

    /// A string value, escaped as JSON requires.
    pub fn string(&mut self, s: &str) {
        self.quoted(s.as_bytes());
    }

    /// A string value from bytes that are nearly always ASCII (header values): checked as
    /// UTF-8 only when some byte is not ASCII, and invalid sequences written as
    /// `String::from_utf8_lossy` would (the check and its copy were a fifth of a log line).
    pub fn string_bytes(&mut self, b: &[u8]) {
        if b.is_ascii() {
            self.quoted(b);
        } else {
            self.quoted(String::from_utf8_lossy(b).as_bytes());
        }
    }

    /// `bytes` (UTF-8) in quotes, escaped.
    fn quoted(&mut self, bytes: &[u8]) {
        self.buf.reserve(bytes.len() + 2);
        self.buf.push(b'"');
        let mut start = 0;
        let mut i = clean_prefix(bytes);
        while i < bytes.len() {
            let b = bytes[i];
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => b"",
                _ => {
                    i += 1;
                    continue;
                }
            };
            self.buf.extend_from_slice(&bytes[start..i]);
            if esc.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.buf.extend_from_slice(b"\\u00");
                self.buf.push(HEX[usize::from(b >> 4)]);
                self.buf.push(HEX[usize::from(b & 0xf)]);
            } else {
                self.buf.extend_from_slice(esc);
            }
            i += 1;
            start = i;
        }
        self.buf.extend_from_slice(&bytes[start..]);
        self.buf.push(b'"');
        self.first = false;
    }

    /// An optional string (`null` when absent).
    pub fn opt_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.null(),
        }
    }

    /// `null`.
    pub fn null(&mut self) {
        self.buf.extend_from_slice(b"null");
        self.first = false;
    }

    /// `true` or `false`.
    pub fn bool(&mut self, v: bool) {
        self.buf
            .extend_from_slice(if v { b"true" } else { b"false" });
        self.first = false;
    }

    /// An unsigned integer.
    #[inline]
    pub fn u64(&mut self, v: u64) {
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self.first = false;
    }

    /// A signed integer.
    pub fn i64(&mut self, v: i64) {
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self.first = false;
    }

    /// A float as serde_json writes it (`null` when not finite).
    pub fn f64(&mut self, v: f64) {
        if v.is_finite() {
            if serde_json::to_writer(&mut self.buf, &v).is_err() {
                self.buf.extend_from_slice(b"null");
            }
        } else {
            self.buf.extend_from_slice(b"null");
        }
        self.first = false;
    }

    /// Any serializable value, through serde_json (for the rare nested documents).
    pub fn value<T: serde::Serialize + ?Sized>(&mut self, v: &T) {
        if serde_json::to_writer(&mut self.buf, v).is_err() {
            self.buf.extend_from_slice(b"null");
        }
        self.first = false;
    }

    /// A string of `v`'s text, which must never need escaping (an address, a number).
    pub fn display(&mut self, v: impl std::fmt::Display) {
        use std::io::Write;
        self.buf.push(b'"');
        // Writing to a Vec cannot fail.
        let _ = write!(self.buf, "{v}");
        self.buf.push(b'"');
        self.first = false;
    }

    /// JSON that is already valid, copied as is.
    pub fn raw(&mut self, json: &str) {
        self.buf.extend_from_slice(json.as_bytes());
        self.first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        let mut o = Out::appending(Vec::with_capacity(16));
        o.string(s);
        String::from_utf8(o.buf).unwrap_or_default()
    }

    #[test]
    fn strings_escape_as_serde_json_does() {
        for s in [
            "",
            "plain ascii that is longer than one word",
            "quote \" and backslash \\ inside a long string",
            "\u{1}\u{1f}\n\r\t\u{8}\u{c} controls",
            "tab\tat 3, then long text after it",
            "ünïcödé → ✓ and \"quotes\" 🙂",
            "12345678\"",
            "1234567\\",
            "\u{7f} is not escaped",
            "ab\"",
            "a\u{1}",
            "123456789\n",
            "0123456789abcdef\t",
        ] {
            let want = serde_json::to_string(s).unwrap_or_default();
            assert_eq!(enc(s), want, "{s:?}");
        }
    }

    #[test]
    fn an_escape_anywhere_is_found() {
        for len in [1, 7, 8, 9, 31, 32, 33, 63, 64, 70] {
            for at in 0..len {
                for c in ['"', '\\', '\n', '\u{1f}'] {
                    let s: String = (0..len).map(|i| if i == at { c } else { 'x' }).collect();
                    let want = serde_json::to_string(&s).unwrap_or_default();
                    assert_eq!(enc(&s), want, "{s:?}");
                }
            }
        }
    }

    #[test]
    fn byte_strings_match_lossy_text() {
        for b in [
            &b"application/json"[..],
            b"a \"quoted\" value\twith a tab",
            "caf\u{e9} \u{2713}".as_bytes(),
            b"bad \xff\xfe utf-8 \xe2\x82",
            b"",
        ] {
            let mut o = Out::appending(Vec::new());
            o.string_bytes(b);
            assert_eq!(
                o.buf,
                enc(&String::from_utf8_lossy(b)).into_bytes(),
                "{b:?}"
            );
        }
        let mut o = Out::appending(Vec::new());
        o.open();
        o.key_bytes(b"x-\"odd\"");
        o.u64(1);
        o.close();
        assert_eq!(o.buf, br#"{"x-\"odd\"":1}"#);
    }

    #[test]
    fn objects_arrays_and_numbers() {
        let mut o = Out::appending(Vec::with_capacity(64));
        o.open();
        o.key("a");
        o.u64(1);
        o.key("b");
        o.open_array();
        o.elem();
        o.i64(-2);
        o.elem();
        o.f64(0.5);
        o.elem();
        o.f64(f64::NAN);
        o.close_array();
        o.key("c");
        o.open();
        o.close();
        o.key_escaped("d\"e");
        o.opt_string(None);
        o.key("f");
        o.bool(true);
        o.close();
        let text = String::from_utf8(o.buf).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"a":1,"b":[-2,0.5,null],"c":{},"d\"e":null,"f":true}"#
        );
    }
}

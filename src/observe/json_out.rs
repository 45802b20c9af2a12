//! A JSON writer for the log records, which are written once per request: fields are
//! appended straight to a byte buffer, and strings that need no escaping (nearly all of
//! them) are copied whole after a word-at-a-time scan. Written by hand because serde_json's
//! serializer escapes byte by byte through a table, which made the log line the costliest
//! part of a logged request (see bench/results/2026-12-02-callgrind.md).

/// `key!(o, "name")`: writes the key `"name":` as one copy (`Out::lit`, comma included
/// unless it is the first member).
macro_rules! key {
    ($o:expr, $name:literal) => {
        $o.lit(concat!(",\"", $name, "\":"))
    };
}
pub(crate) use key;

/// Appends JSON to a buffer; the caller keeps the structure (commas via `sep`).
pub struct Out {
    pub buf: Vec<u8>,
    /// Whether the next member of the current object or array needs a comma first.
    first: bool,
}

const HIGH: u64 = 0x8080_8080_8080_8080;

/// True when one of the 8 bytes in `w` is a quote, a backslash or a control character,
/// or (with `ASCII`) is not ASCII. Without `ASCII` a byte of 0x80 or above may be flagged
/// too: the caller then looks at the bytes one by one.
#[inline]
fn needs_escape<const ASCII: bool>(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    // Bytes below 0x20: subtracting 0x20 borrows into the high bit (for bytes < 0x80).
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let high = if ASCII { w & HIGH } else { 0 };
    control
        | high
        | has_zero(w ^ (ONES * u64::from(b'"')))
        | has_zero(w ^ (ONES * u64::from(b'\\')))
        != 0
}

/// How many bytes at the start of `bytes` need no escaping (with `ASCII`: and are ASCII),
/// a word at a time, then the last partial word at once; a string shorter than a word is
/// read as one word padded with spaces (which need no escaping). (A
/// 32-byte loop the compiler vectorizes, in front, did not count fewer instructions per
/// log line: its strings are short.)
#[inline]
fn clean_prefix<const ASCII: bool>(bytes: &[u8]) -> usize {
    let n = bytes.len();
    let mut i = 0;
    while i + 8 <= n {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i..i + 8]);
        if needs_escape::<ASCII>(u64::from_le_bytes(w)) {
            return i;
        }
        i += 8;
    }
    if i < n {
        let clean = if n >= 8 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[n - 8..]);
            !needs_escape::<ASCII>(u64::from_le_bytes(w))
        } else {
            // Padding with spaces keeps the unused lanes clean.
            let mut w = [b' '; 8];
            w[..n].copy_from_slice(bytes);
            !needs_escape::<ASCII>(u64::from_le_bytes(w))
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

    /// Writes JSON text that the code spells out, starting with a comma (`,{"ip":`, a
    /// key from [`key!`]), as the next member or element: without the comma when it comes
    /// first. A value written after a key sets `first` itself.
    #[inline]
    pub fn lit(&mut self, comma_json: &'static str) {
        let b = comma_json.as_bytes();
        self.buf
            .extend_from_slice(if self.first { &b[1..] } else { b });
        self.after(b);
    }

    /// Writes JSON text that the code spells out (closing brackets, keys and constant
    /// values in one run), exactly as given.
    #[inline]
    pub fn put(&mut self, json: &'static str) {
        self.buf.extend_from_slice(json.as_bytes());
        self.after(json.as_bytes());
    }

    /// After text that opened an object or array its first member needs no comma.
    #[inline]
    fn after(&mut self, text: &[u8]) {
        self.first = matches!(text.last(), Some(b'{' | b'['));
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
        // One pass answers both questions for nearly every value: ASCII and nothing to escape.
        if clean_prefix::<true>(b) == b.len() {
            self.copied(b);
        } else if b.is_ascii() {
            self.quoted(b);
        } else {
            self.quoted(String::from_utf8_lossy(b).as_bytes());
        }
    }

    /// A string value given as bytes that are UTF-8 (copied from a `&str`), escaped.
    pub fn text_bytes(&mut self, b: &[u8]) {
        self.quoted(b);
    }

    /// A string value that never needs escaping (an id, a number, a name from a fixed
    /// set), copied without the scan.
    pub fn clean(&mut self, s: impl AsRef<[u8]>) {
        let s = s.as_ref();
        debug_assert_eq!(clean_prefix::<true>(s), s.len(), "{s:?}");
        self.copied(s);
    }

    /// `bytes` in quotes as they are.
    #[inline]
    fn copied(&mut self, bytes: &[u8]) {
        self.buf.reserve(bytes.len() + 2);
        self.buf.push(b'"');
        self.buf.extend_from_slice(bytes);
        self.buf.push(b'"');
        self.first = false;
    }

    /// `bytes` (UTF-8) in quotes, escaped.
    fn quoted(&mut self, bytes: &[u8]) {
        self.buf.reserve(bytes.len() + 2);
        self.buf.push(b'"');
        let mut start = 0;
        let mut i = clean_prefix::<false>(bytes);
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
            "\u{0}",
            "x\u{0}y",
            "ok",
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
            b"\x00",
            b"ok\x7f",
            b"\xc3\xa9",
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
    fn spelled_out_runs_keep_the_commas_right() {
        let mut o = Out::appending(Vec::new());
        o.put(r#"{"a":{"b":"#);
        o.u64(1);
        o.put(r#"},"c":["#);
        for i in 0..3 {
            o.lit(r#",{"i":"#);
            o.u64(i);
            o.close();
        }
        o.put(r#"],"d":"#);
        o.clean("x");
        key!(o, "e");
        o.open();
        key!(o, "f");
        o.null();
        o.close();
        o.close();
        let text = String::from_utf8(o.buf).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"a":{"b":1},"c":[{"i":0},{"i":1},{"i":2}],"d":"x","e":{"f":null}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert!(v.is_object());
    }

    #[test]
    fn objects_arrays_and_numbers() {
        let mut o = Out::appending(Vec::with_capacity(64));
        o.open();
        key!(o, "a");
        o.u64(1);
        key!(o, "b");
        o.open_array();
        o.elem();
        o.i64(-2);
        o.elem();
        o.f64(0.5);
        o.elem();
        o.f64(f64::NAN);
        o.close_array();
        key!(o, "c");
        o.open();
        o.close();
        o.key_escaped("d\"e");
        o.opt_string(None);
        key!(o, "f");
        o.bool(true);
        o.close();
        let text = String::from_utf8(o.buf).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"a":1,"b":[-2,0.5,null],"c":{},"d\"e":null,"f":true}"#
        );
    }
}

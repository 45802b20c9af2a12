//! A client's JSON body seen without building a tree: its top-level members as slices of
//! the original bytes. Most requests then go upstream as the very bytes the client sent;
//! when something must change, only the changed members are re-encoded.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level members of a JSON object, in order, values untouched.
#[derive(Debug)]
pub struct BodyView<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// Why a body is not a JSON object an LLM route can take; the text says what and where.
#[derive(Debug, thiserror::Error)]
pub enum NotAnObject {
    /// Not JSON, or JSON that I-JSON (RFC 7493) forbids: unpaired surrogates, deep nesting.
    #[error("invalid JSON in request body: {0}")]
    Invalid(String),
    /// Valid JSON of another kind than an object.
    #[error("request body must be a JSON object: {0}")]
    NotObject(String),
}

impl From<serde_json::Error> for NotAnObject {
    fn from(e: serde_json::Error) -> Self {
        match e.classify() {
            // A type mismatch: valid JSON, but not the object expected.
            serde_json::error::Category::Data => NotAnObject::NotObject(e.to_string()),
            _ => NotAnObject::Invalid(e.to_string()),
        }
    }
}

/// The deepest nesting a body may have: serde_json's own recursion limit, so anything that
/// later parses the body into a tree (translation, plugins, the upstream's own parser) can.
pub const MAX_DEPTH: usize = 128;

struct MembersVisitor;

/// Deserializes JSON bytes, read as text when they are UTF-8: serde_json then checks the
/// body's UTF-8 once instead of once per key and string (a tenth of a chat answer's
/// decoding, callgrind). Other bytes go through `from_slice`, whose errors name the
/// position of the bad byte.
pub fn from_bytes<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// A body's top-level members, the whole input consumed.
fn members<'a, R: serde_json::de::Read<'a>>(
    mut de: serde_json::Deserializer<R>,
) -> serde_json::Result<Vec<(Cow<'a, str>, &'a RawValue)>> {
    let members = (&mut de).deserialize_map(MembersVisitor)?;
    de.end()?;
    Ok(members)
}

/// A JSON string borrowed from the input when it has no escapes. serde's own `Cow<str>`
/// always allocates (also with `#[serde(borrow)]` inside an `Option`), and keys and
/// `model` are read on every request.
pub struct JsonStr<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = JsonStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(JsonStr(key)) = map.next_key::<JsonStr<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            out.push((key, value));
        }
        Ok(out)
    }
}

impl<'a> BodyView<'a> {
    /// Parses (and fully validates, as I-JSON) a JSON object.
    pub fn parse(bytes: &'a [u8]) -> Result<BodyView<'a>, NotAnObject> {
        // As text when it is UTF-8 (see `from_bytes`); other bytes keep from_slice's errors.
        let members = match std::str::from_utf8(bytes) {
            Ok(text) => members(serde_json::Deserializer::from_str(text)),
            Err(_) => members(serde_json::Deserializer::from_slice(bytes)),
        }
        .map_err(NotAnObject::from)?;
        // RawValue skips nested values without checking surrogates or depth (serde_json
        // only checks those when it builds a tree), so they would reach the upstream as sent.
        check_ijson(bytes).map_err(NotAnObject::Invalid)?;
        Ok(BodyView { members })
    }

    /// The raw JSON of a member (the last one if the key repeats, as a JSON tree would keep).
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.members
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.get())
    }

    /// Whether a member exists (even as `null`).
    pub fn has(&self, key: &str) -> bool {
        self.members.iter().any(|(k, _)| k == key)
    }

    /// A string member, unescaped.
    pub fn str(&self, key: &str) -> Option<Cow<'a, str>> {
        self.raw(key)
            .filter(|r| r.starts_with('"'))
            .and_then(|r| serde_json::from_str::<JsonStr<'a>>(r).ok())
            .map(|s| s.0)
    }

    /// A boolean member.
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.raw(key) {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        }
    }

    /// The JSON kind of a member, by its first character.
    pub fn kind(&self, key: &str) -> Option<Kind> {
        let r = self.raw(key)?;
        Some(match r.as_bytes().first() {
            Some(b'"') => Kind::String,
            Some(b'[') => {
                if r[1..].trim_start().starts_with(']') {
                    Kind::EmptyArray
                } else {
                    Kind::Array
                }
            }
            Some(b'{') => Kind::Object,
            Some(b'n') => Kind::Null,
            Some(b't' | b'f') => Kind::Bool,
            _ => Kind::Number,
        })
    }

    /// Writes the object with `remove` keys dropped and `set` members replacing or
    /// appending (values are raw JSON).
    pub fn rewrite(&self, remove: &[&str], set: &[(&str, String)]) -> Vec<u8> {
        let size: usize = self
            .members
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(
            size + 64
                + set
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 4)
                    .sum::<usize>(),
        );
        out.push(b'{');
        let mut first = true;
        let mut push = |out: &mut Vec<u8>, k: &str, v: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            // Keys are re-escaped from their decoded form; serde_json's writer cannot fail on a Vec.
            let _ = serde_json::to_writer(&mut *out, k);
            out.push(b':');
            out.extend_from_slice(v.as_bytes());
        };
        for (k, v) in &self.members {
            if remove.contains(&k.as_ref()) || set.iter().any(|(s, _)| s == k) {
                continue;
            }
            push(&mut out, k, v.get());
        }
        for (k, v) in set {
            push(&mut out, k, v);
        }
        out.push(b'}');
        out
    }
}

/// What I-JSON adds to a syntax check of already valid JSON: no unpaired UTF-16 surrogate
/// escapes, and nesting no deeper than [`MAX_DEPTH`].
fn check_ijson(bytes: &[u8]) -> Result<(), String> {
    // Nesting can only be too deep with more brackets than the limit: one vectorized count
    // spares the byte-by-byte walk for nearly every body.
    if memchr::memchr2_iter(b'[', b'{', bytes)
        .nth(MAX_DEPTH)
        .is_some()
    {
        if let Some(at) = too_deep(bytes) {
            return Err(format!(
                "nested deeper than {MAX_DEPTH} levels at {}",
                position(bytes, at)
            ));
        }
    }
    let mut paired_low = usize::MAX;
    for i in memchr::memmem::find_iter(bytes, b"\\u") {
        // Only outside strings can a backslash be anything but an escape, and valid JSON has
        // none there; an even run of backslashes before this one means it is itself escaped.
        let run = bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count();
        if run % 2 == 1 || i == paired_low {
            continue;
        }
        let unpaired = match hex4(bytes, i + 2) {
            Some(0xD800..=0xDBFF) => {
                let low = bytes.get(i + 6..i + 8) == Some(&b"\\u"[..])
                    && matches!(hex4(bytes, i + 8), Some(0xDC00..=0xDFFF));
                paired_low = i + 6;
                !low
            }
            Some(0xDC00..=0xDFFF) => true,
            _ => false,
        };
        if unpaired {
            let text = String::from_utf8_lossy(bytes.get(i..i + 6).unwrap_or_default());
            return Err(format!(
                "unpaired UTF-16 surrogate {text} at {} (RFC 7493 I-JSON)",
                position(bytes, i)
            ));
        }
    }
    Ok(())
}

/// The offset of the first bracket that opens level `MAX_DEPTH + 1`, if any.
fn too_deep(bytes: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The four hex digits at `at` as a code unit.
fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    u16::from_str_radix(digits, 16).ok()
}

/// "line L column C" of a byte offset, counted as serde_json counts them.
fn position(bytes: &[u8], at: usize) -> String {
    let before = &bytes[..at.min(bytes.len())];
    let line = memchr::memchr_iter(b'\n', before).count() + 1;
    let column = at - memchr::memrchr(b'\n', before).map_or(0, |n| n + 1) + 1;
    format!("line {line} column {column}")
}

/// A JSON value's kind as an error message names it ("an array").
pub fn kind_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Kinds of JSON value the format checks care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Array,
    EmptyArray,
    Object,
    Null,
    Bool,
    Number,
}

/// Whether a Content-Type is JSON (`application/json`, `…+json`), or absent (Kong's default).
pub fn is_json(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let mime = ct.split(';').next().unwrap_or("").trim().as_bytes();
    // Compared in place, case-insensitively: lower-casing a copy allocated per request.
    let suffix = mime.len().checked_sub(5).and_then(|at| mime.get(at..));
    mime.eq_ignore_ascii_case(b"application/json")
        || suffix.is_some_and(|s| s.eq_ignore_ascii_case(b"+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let h = |s: &'static str| http::HeaderValue::from_static(s);
        assert!(is_json(None));
        assert!(is_json(Some(&h("application/json; charset=utf-8"))));
        assert!(is_json(Some(&h("application/vnd.api+json"))));
        assert!(is_json(Some(&h("Application/JSON"))));
        assert!(is_json(Some(&h(" APPLICATION/VND.API+JSON ; q=1"))));
        assert!(!is_json(Some(&h("json"))));
        assert!(!is_json(Some(&h("application/jsonx"))));
        assert!(!is_json(Some(&h("text/plain"))));
        assert!(!is_json(Some(&h("multipart/form-data; boundary=x"))));
    }

    #[test]
    fn reads_members_without_a_tree() {
        let src = br#" {"model":"gpt-\u0034o","messages":[ {"role":"user"} ],"stream":true,"n":null,"e":[ ]} "#;
        let v = BodyView::parse(src).unwrap();
        assert_eq!(v.str("model").as_deref(), Some("gpt-4o"));
        assert_eq!(v.kind("messages"), Some(Kind::Array));
        assert_eq!(v.kind("e"), Some(Kind::EmptyArray));
        assert_eq!(v.bool("stream"), Some(true));
        assert!(v.has("n") && !v.has("x"));
        assert_eq!(v.raw("messages"), Some(r#"[ {"role":"user"} ]"#));
    }

    #[test]
    fn plain_keys_and_strings_borrow_the_input() {
        let v = BodyView::parse(br#"{"model":"gpt-4o","k\u0065y":"a\nb"}"#).unwrap();
        assert!(matches!(v.members[0].0, Cow::Borrowed("model")));
        assert!(matches!(v.members[1].0, Cow::Owned(ref k) if k == "key"));
        assert!(matches!(v.str("model"), Some(Cow::Borrowed("gpt-4o"))));
        assert_eq!(v.str("key").as_deref(), Some("a\nb"));
    }

    #[test]
    fn rewrite_keeps_order_and_bytes() {
        let v = BodyView::parse(br#"{"a":1,"model":"x","k\"ey":{"z": 2},"top_k":3}"#).unwrap();
        let out = v.rewrite(
            &["top_k"],
            &[("model", "\"y\"".into()), ("new", "true".into())],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":1,"k\"ey":{"z": 2},"model":"y","new":true}"#
        );
        let v = BodyView::parse(b"{}").unwrap();
        assert_eq!(v.rewrite(&[], &[("a", "1".into())]), b"{\"a\":1}");
    }

    #[test]
    fn duplicate_keys_last_wins_and_rewrite_dedups() {
        let v = BodyView::parse(br#"{"model":"a","model":"b"}"#).unwrap();
        assert_eq!(v.str("model").as_deref(), Some("b"));
        assert_eq!(
            v.rewrite(&[], &[("model", "\"c\"".into())]),
            br#"{"model":"c"}"#
        );
    }

    #[test]
    fn refuses_what_i_json_forbids() {
        let lone = br#"{"messages":[{"content":"a\ud800b"}]}"#;
        let e = BodyView::parse(lone).unwrap_err().to_string();
        assert!(
            e.contains("unpaired UTF-16 surrogate \\ud800 at line 1 column 27"),
            "{e}"
        );
        let low = br#"{"a":"\udc00"}"#;
        assert!(BodyView::parse(low).is_err());
        let reversed = br#"{"a":"\udc00\ud800"}"#;
        assert!(BodyView::parse(reversed).is_err());
        let high_at_end = br#"{"a":"x\ud83d"}"#;
        assert!(BodyView::parse(high_at_end).is_err());
        // A pair, an escaped backslash before a `u`, and ordinary escapes are fine.
        let ok = br#"{"a":"\ud83d\ude00 \\ud800 \u00e9","b":"\\\ud83d\ude00"}"#;
        BodyView::parse(ok).unwrap();

        let deep = |n: usize| {
            let mut b = b"{\"a\":".to_vec();
            b.extend(std::iter::repeat_n(b'[', n));
            b.extend(std::iter::repeat_n(b']', n));
            b.push(b'}');
            b
        };
        BodyView::parse(&deep(MAX_DEPTH - 1)).unwrap();
        let e = BodyView::parse(&deep(100_000)).unwrap_err().to_string();
        assert!(
            e.contains("nested deeper than 128 levels at line 1 column 133"),
            "{e}"
        );
        // Brackets inside strings do not count.
        let text = format!("{{\"a\":\"{}\"}}", "[".repeat(500));
        BodyView::parse(text.as_bytes()).unwrap();
    }

    #[test]
    fn rejects_non_objects_and_bad_json() {
        for bad in [
            &b"[1]"[..],
            b"\"s\"",
            b"{",
            b"{\"a\":1} x",
            b"{\"a\":\xff}",
            b"",
        ] {
            assert!(
                BodyView::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

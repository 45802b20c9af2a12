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

/// The body is not a JSON object (or not valid JSON at all).
#[derive(Debug, thiserror::Error)]
#[error("request body is not a JSON object: {0}")]
pub struct NotAnObject(String);

struct MembersVisitor;

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
    /// Parses (and fully validates) a JSON object.
    pub fn parse(bytes: &'a [u8]) -> Result<BodyView<'a>, NotAnObject> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let members = (&mut de)
            .deserialize_map(MembersVisitor)
            .map_err(|e| NotAnObject(e.to_string()))?;
        de.end().map_err(|e| NotAnObject(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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

//! Form-encoded Admin API bodies (`curl --data name=ai-proxy --data config.route_type=…`),
//! as Kong accepts them: dotted keys nest (`config.model.name`), `key[]` and repeated keys
//! make arrays, `key[2]` sets an index. Values arrive as strings; Kong converts them by the
//! schema, which tollgate does from the typing errors: a string where a number, boolean or
//! list is expected is converted, and the entity typed again.

use serde_json::{Map, Value};

/// Whether a Content-Type is a form.
pub fn is_form(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The body as a JSON object of strings.
pub fn parse(body: &[u8]) -> Map<String, Value> {
    let mut root = Value::Object(Map::new());
    for (key, value) in form_urlencoded::parse(body) {
        let segs = segments(&key, true);
        if segs.is_empty() {
            continue;
        }
        insert(&mut root, &segs, Value::String(value.into_owned()));
    }
    match root {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[derive(Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
    Push,
}

/// `one_based`: form indexes (`hosts[1]`, as Kong counts); error paths count from 0.
fn segments(key: &str, one_based: bool) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(b) => (&part[..b], &part[b..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::Key(name.to_string()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(e) = inner.find(']') else { break };
            let idx = &inner[..e];
            out.push(if idx.is_empty() {
                Seg::Push
            } else {
                match idx.parse::<usize>() {
                    Ok(n) if one_based => Seg::Index(n.saturating_sub(1).min(1023)),
                    Ok(n) => Seg::Index(n.min(1023)),
                    Err(_) => Seg::Key(idx.to_string()),
                }
            });
            rest = &inner[e + 1..];
        }
    }
    out
}

fn insert(node: &mut Value, segs: &[Seg], value: Value) {
    let Some((first, rest)) = segs.split_first() else {
        // A repeated key makes a list.
        match node {
            Value::Null => *node = value,
            Value::Array(a) => a.push(value),
            other => {
                let prev = std::mem::take(other);
                *other = Value::Array(vec![prev, value]);
            }
        }
        return;
    };
    match first {
        Seg::Key(k) => {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            if let Value::Object(m) = node {
                insert(m.entry(k.clone()).or_insert(Value::Null), rest, value);
            }
        }
        Seg::Index(i) => {
            if !node.is_array() {
                *node = Value::Array(Vec::new());
            }
            if let Value::Array(a) = node {
                if a.len() <= *i {
                    a.resize(*i + 1, Value::Null);
                }
                insert(&mut a[*i], rest, value);
            }
        }
        Seg::Push => {
            if !node.is_array() {
                *node = Value::Array(Vec::new());
            }
            if let Value::Array(a) = node {
                a.push(Value::Null);
                if let Some(last) = a.last_mut() {
                    insert(last, rest, value);
                }
            }
        }
    }
}

/// Converts the string at `path` (dotted, `[i]` indexes) to what a typing error `message`
/// says was expected; false when it cannot (the error then stands).
pub fn coerce(entity: &mut Map<String, Value>, path: &str, message: &str) -> bool {
    if !message.starts_with("invalid type: string") {
        return false;
    }
    let mut node: Option<&mut Value> = None;
    for seg in segments(path, false) {
        let next = match (node.take(), seg) {
            (None, Seg::Key(k)) => entity.get_mut(&k),
            (Some(Value::Object(m)), Seg::Key(k)) => m.get_mut(&k),
            (Some(Value::Array(a)), Seg::Index(i)) => a.get_mut(i),
            _ => None,
        };
        let Some(n) = next else { return false };
        node = Some(n);
    }
    let Some(v) = node else { return false };
    let Value::String(s) = v else { return false };
    let expected = message.rsplit("expected ").next().unwrap_or("");
    let new =
        if expected.contains("sequence") || expected.contains("set") || expected.contains("list") {
            Value::Array(vec![Value::String(std::mem::take(s))])
        } else if expected.contains("bool") {
            match s.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return false,
            }
        } else if let Ok(n) = s.parse::<i64>() {
            Value::from(n)
        } else if let Ok(f) = s.parse::<f64>() {
            match serde_json::Number::from_f64(f) {
                Some(n) => Value::Number(n),
                None => return false,
            }
        } else {
            return false;
        };
    *v = new;
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_keys_and_lists() {
        let m = parse(
            b"name=ai-proxy&config.model.name=gpt-4o&config.route_type=llm%2Fv1%2Fchat&paths[]=/a&paths[]=/b&tags=x&tags=y&hosts[1]=h",
        );
        assert_eq!(
            Value::Object(m),
            json!({"name": "ai-proxy", "config": {"model": {"name": "gpt-4o"}, "route_type": "llm/v1/chat"},
                   "paths": ["/a", "/b"], "tags": ["x", "y"], "hosts": ["h"]})
        );
        assert!(is_form(Some(
            "application/x-www-form-urlencoded; charset=utf-8"
        )));
        assert!(!is_form(Some("application/json")));
    }

    #[test]
    fn coercion_follows_the_typing_error() {
        let mut m = parse(b"port=8080&enabled=false&paths=/one&config.max=1.5");
        assert!(coerce(
            &mut m,
            "port",
            "invalid type: string \"8080\", expected u16"
        ));
        assert!(coerce(
            &mut m,
            "enabled",
            "invalid type: string \"false\", expected a boolean"
        ));
        assert!(coerce(
            &mut m,
            "paths",
            "invalid type: string \"/one\", expected a sequence"
        ));
        assert!(coerce(
            &mut m,
            "config.max",
            "invalid type: string \"1.5\", expected f64"
        ));
        assert_eq!(
            Value::Object(m.clone()),
            json!({"port": 8080, "enabled": false, "paths": ["/one"], "config": {"max": 1.5}})
        );
        assert!(!coerce(&mut m, "nope", "invalid type: string"));
    }
}

//! `GET /schemas/plugins/{name}`: a plugin's schema in Kong's format (`fields`, each a
//! one-key object `{name: {type, required, default, one_of, fields | elements | values}}`),
//! built from the JSON Schema of the same Rust types the config is parsed with, so it cannot
//! drift from what the gateway accepts.

use schemars::Schema;
use serde_json::{json, Map, Value};

fn config_schema(name: &str) -> Option<Schema> {
    crate::plugins::registry::config_schema(name)
}

/// Kong's schema for plugin `name`, or None for a plugin this gateway does not serve.
pub fn plugin(name: &str) -> Option<Value> {
    let schema = config_schema(name)?;
    let root = schema.as_value();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut config = field(root, &defs, 0);
    if let Value::Object(m) = &mut config {
        m.insert("required".into(), Value::Bool(true));
    }
    let foreign = |entity: &str| json!({"type": "foreign", "reference": entity, "eq": null});
    let protocols = ["grpc", "grpcs", "http", "https", "ws", "wss"];
    Some(json!({
        "fields": [
            {"id": {"type": "string", "uuid": true, "auto": true}},
            {"name": {"type": "string", "required": true}},
            {"instance_name": {"type": "string"}},
            {"created_at": {"type": "integer", "timestamp": true, "auto": true}},
            {"updated_at": {"type": "integer", "timestamp": true, "auto": true}},
            {"route": foreign("routes")},
            {"service": foreign("services")},
            {"consumer": foreign("consumers")},
            {"consumer_group": foreign("consumer_groups")},
            {"protocols": {"type": "set", "required": true,
                "default": ["grpc", "grpcs", "http", "https"],
                "elements": {"type": "string", "one_of": protocols}}},
            {"enabled": {"type": "boolean", "default": true}},
            {"tags": {"type": "set", "elements": {"type": "string"}}},
            {"config": config},
        ]
    }))
}

/// One field's Kong schema from its JSON Schema (`$ref`s resolved, `Option`s unwrapped).
fn field(s: &Value, defs: &Map<String, Value>, depth: usize) -> Value {
    if depth > 24 {
        return json!({"type": "any"});
    }
    let s = resolve(s, defs);
    // Option<T>: anyOf [T, null] / type [T, "null"].
    if let Some(alts) = s.get("anyOf").and_then(Value::as_array) {
        let non_null: Vec<&Value> = alts
            .iter()
            .filter(|a| resolve(a, defs).get("type") != Some(&json!("null")))
            .collect();
        if non_null.len() == 1 {
            let mut f = field(non_null[0], defs, depth + 1);
            copy_default(s, &mut f);
            return f;
        }
        return with_default(s, json!({"type": "any"}));
    }
    // Enums: oneOf of consts / enums.
    if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
        let mut values: Vec<Value> = Vec::new();
        for a in alts {
            let a = resolve(a, defs);
            if let Some(c) = a.get("const") {
                values.push(c.clone());
            } else if let Some(e) = a.get("enum").and_then(Value::as_array) {
                values.extend(e.iter().cloned());
            } else {
                return with_default(s, json!({"type": "any"}));
            }
        }
        return with_default(s, json!({"type": "string", "one_of": values}));
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        let values: Vec<Value> = e.iter().filter(|v| !v.is_null()).cloned().collect();
        return with_default(s, json!({"type": "string", "one_of": values}));
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("any")
            .to_string(),
        _ => "any".into(),
    };
    let out = match ty.as_str() {
        "object" => match s.get("properties").and_then(Value::as_object) {
            Some(props) => {
                let required: Vec<&str> = s
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let fields: Vec<Value> = props
                    .iter()
                    .map(|(name, p)| {
                        let mut f = field(p, defs, depth + 1);
                        if required.contains(&name.as_str()) {
                            if let Value::Object(m) = &mut f {
                                m.insert("required".into(), Value::Bool(true));
                            }
                        }
                        let mut one = Map::new();
                        one.insert(name.clone(), f);
                        Value::Object(one)
                    })
                    .collect();
                json!({"type": "record", "fields": fields})
            }
            None => {
                let values = s
                    .get("additionalProperties")
                    .filter(|v| v.is_object())
                    .map(|v| field(v, defs, depth + 1))
                    .unwrap_or(json!({"type": "any"}));
                json!({"type": "map", "keys": {"type": "string"}, "values": values})
            }
        },
        "array" => {
            let elements = s
                .get("items")
                .map(|i| field(i, defs, depth + 1))
                .unwrap_or(json!({"type": "any"}));
            let kind = if s.get("uniqueItems") == Some(&Value::Bool(true)) {
                "set"
            } else {
                "array"
            };
            json!({"type": kind, "elements": elements})
        }
        "integer" => {
            let mut f = json!({"type": "integer"});
            if let (Some(lo), Some(hi)) = (s.get("minimum"), s.get("maximum")) {
                f["between"] = json!([lo, hi]);
            }
            f
        }
        "number" | "string" | "boolean" => json!({"type": ty}),
        _ => json!({"type": "any"}),
    };
    with_default(s, out)
}

fn resolve<'a>(s: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    match s
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
    {
        Some(d) => d,
        None => s,
    }
}

fn with_default(s: &Value, mut f: Value) -> Value {
    copy_default(s, &mut f);
    f
}

fn copy_default(s: &Value, f: &mut Value) {
    if let (Some(d), Value::Object(m)) = (s.get("default"), f) {
        if !d.is_null() {
            m.insert("default".into(), d.clone());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn config_field<'a>(schema: &'a Value, name: &str) -> &'a Value {
        let config = schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|f| f.get("config"))
            .unwrap();
        config["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|f| f.get(name))
            .unwrap_or_else(|| panic!("no config.{name} in {config}"))
    }

    #[test]
    fn schemas_follow_the_config_types() {
        let ai = plugin("ai-proxy").unwrap();
        let rt = config_field(&ai, "route_type");
        assert_eq!(rt["type"], "string");
        assert!(rt["one_of"]
            .as_array()
            .unwrap()
            .contains(&json!("llm/v1/responses")));
        let model = config_field(&ai, "model");
        assert_eq!(model["type"], "record", "{model}");
        let ka = plugin("key-auth").unwrap();
        assert_eq!(config_field(&ka, "key_names")["default"], json!(["apikey"]));
        assert_eq!(config_field(&ka, "hide_credentials")["default"], true);
        for name in [
            "ai-proxy",
            "ai-proxy-advanced",
            "request-transformer",
            "file-log",
            "key-auth",
        ] {
            assert!(plugin(name).is_some(), "{name}");
        }
        assert!(plugin("nope").is_none());
    }
}

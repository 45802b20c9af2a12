//! Read-only Admin API views of the document's collections that the Admin API does not
//! write: `upstreams` and their `targets`, `certificates`, `snis` and `ca_certificates`, in
//! Kong's shapes. The Ingress Controller reads every one of them (with the writable ones)
//! to recover a gateway's last configuration; a 404 there would fail its whole read.

use serde_json::{json, Map, Value};

use super::state::State;
use crate::config::ids;

/// `e`'s `id`, or the id tollgate derives from `key` for entities written without one.
fn id_or(e: &Map<String, Value>, entity: &str, key: &str) -> String {
    e.get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| ids::entity_id(entity, key))
}

/// A string field of `e`.
fn text<'a>(e: &'a Map<String, Value>, field: &str) -> &'a str {
    e.get(field).and_then(Value::as_str).unwrap_or("")
}

/// The key a reference names (`"x"` or `{"id": "x"}` or `{"name": "x"}`).
fn reference(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::String(s) => Some(s),
        Value::Object(o) => o
            .get("id")
            .or_else(|| o.get("name"))
            .and_then(Value::as_str),
        _ => None,
    }
}

/// Every upstream, without its nested targets, with Kong's defaults filled in.
pub fn upstreams(st: &State) -> Vec<Value> {
    st.other("upstreams")
        .iter()
        .filter_map(Value::as_object)
        .map(|u| {
            let mut u = u.clone();
            u.remove("targets");
            let id = id_or(&u, "upstreams", text(&u, "name"));
            u.insert("id".into(), Value::String(id));
            for (k, v) in [
                ("algorithm", json!("round-robin")),
                ("slots", json!(10000)),
                ("hash_on", json!("none")),
                ("hash_fallback", json!("none")),
                ("tags", Value::Null),
            ] {
                u.entry(k).or_insert(v);
            }
            Value::Object(u)
        })
        .collect()
}

/// The upstream whose id or name is `key`.
pub fn upstream(st: &State, key: &str) -> Option<Value> {
    upstreams(st)
        .into_iter()
        .find(|u| u["id"] == key || u["name"] == key)
}

/// The targets of the upstream `key`: those nested in it and those naming it at the top.
pub fn targets(st: &State, key: &str) -> Option<Vec<Value>> {
    let found = upstream(st, key)?;
    let (id, name) = (found["id"].as_str()?, found["name"].as_str().unwrap_or(""));
    let nested = st
        .other("upstreams")
        .iter()
        .filter_map(Value::as_object)
        .filter(|u| u.get("id").and_then(Value::as_str) == Some(id) || text(u, "name") == name)
        .flat_map(|u| {
            u.get("targets")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        });
    let top = st
        .other("targets")
        .iter()
        .filter(|t| {
            reference(t.get("upstream")).is_some_and(|r| r == id || (!name.is_empty() && r == name))
        })
        .cloned();
    Some(
        nested
            .chain(top)
            .filter_map(|t| t.as_object().cloned())
            .map(|mut t| {
                let tid = id_or(&t, "targets", &format!("{id}:{}", text(&t, "target")));
                t.insert("id".into(), Value::String(tid));
                t.insert("upstream".into(), json!({"id": id}));
                t.entry("weight").or_insert(json!(100));
                t.entry("tags").or_insert(Value::Null);
                Value::Object(t)
            })
            .collect(),
    )
}

/// Every certificate, its private keys redacted, its SNIs as names (as Kong lists them).
pub fn certificates(st: &State) -> Vec<Value> {
    let mut out = Vec::new();
    for c in st.other("certificates").iter().filter_map(Value::as_object) {
        let mut c = c.clone();
        let id = id_or(&c, "certificates", text(&c, "cert"));
        c.insert("id".into(), Value::String(id.clone()));
        let names: Vec<Value> = sni_names(&c)
            .into_iter()
            .chain(
                st.other("snis")
                    .iter()
                    .filter(|s| reference(s.get("certificate")) == Some(id.as_str()))
                    .filter_map(|s| s.get("name").cloned()),
            )
            .collect();
        c.insert("snis".into(), Value::Array(names));
        c.entry("tags").or_insert(Value::Null);
        out.push(Value::Object(c));
    }
    let mut doc = json!({"certificates": out});
    super::write::redact_vaults(&mut doc);
    match doc["certificates"].take() {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

/// The SNI names nested in a certificate (strings or `{name}` objects).
fn sni_names(c: &Map<String, Value>) -> Vec<Value> {
    c.get("snis")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| match s {
            Value::String(n) => Some(json!(n)),
            Value::Object(o) => o.get("name").cloned(),
            _ => None,
        })
        .collect()
}

/// Every SNI, nested in its certificate or at the top, with its certificate's id.
pub fn snis(st: &State) -> Vec<Value> {
    let mut out = Vec::new();
    for c in st.other("certificates").iter().filter_map(Value::as_object) {
        let cid = id_or(c, "certificates", text(c, "cert"));
        for name in sni_names(c) {
            let n = name.as_str().unwrap_or("");
            out.push(json!({"id": ids::entity_id("snis", n), "name": n,
                            "certificate": {"id": cid}, "tags": null}));
        }
    }
    for s in st.other("snis").iter().filter_map(Value::as_object) {
        let mut s = s.clone();
        let id = id_or(&s, "snis", text(&s, "name"));
        s.insert("id".into(), Value::String(id));
        if let Some(c) = reference(s.get("certificate")).map(str::to_string) {
            s.insert("certificate".into(), json!({"id": c}));
        }
        s.entry("tags").or_insert(Value::Null);
        out.push(Value::Object(s));
    }
    out
}

/// Every CA certificate.
pub fn ca_certificates(st: &State) -> Vec<Value> {
    st.other("ca_certificates")
        .iter()
        .filter_map(Value::as_object)
        .map(|c| {
            let mut c = c.clone();
            let id = id_or(&c, "ca_certificates", text(&c, "cert"));
            c.insert("id".into(), Value::String(id));
            c.entry("tags").or_insert(Value::Null);
            Value::Object(c)
        })
        .collect()
}

/// The collection named by `coll` (one of [`COLLECTIONS`]).
pub fn collection(st: &State, coll: &str) -> Vec<Value> {
    match coll {
        "upstreams" => upstreams(st),
        "certificates" => certificates(st),
        "snis" => snis(st),
        _ => ca_certificates(st),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_top_level_entities_are_listed_with_ids() {
        let st = State::from_text(
            r#"
_format_version: "3.0"
upstreams:
  - name: echo.svc
    targets: [{target: "10.0.0.1:80"}]
targets:
  - {target: "10.0.0.2:80", weight: 5, upstream: echo.svc}
certificates:
  - id: 0d3c5f4e-56e4-4a35-9f38-8f7a32c0e9a1
    cert: "-----BEGIN CERTIFICATE-----"
    key: "-----BEGIN PRIVATE KEY-----"
    snis: [{name: a.example}]
"#,
            &|_| None,
        )
        .unwrap();
        let u = upstreams(&st);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0]["algorithm"], "round-robin");
        assert!(u[0].get("targets").is_none());
        let t = targets(&st, "echo.svc").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["weight"], 100);
        assert_eq!(t[1]["weight"], 5);
        assert_eq!(t[1]["upstream"]["id"], u[0]["id"]);
        assert_eq!(targets(&st, u[0]["id"].as_str().unwrap()).unwrap().len(), 2);
        assert!(targets(&st, "nope").is_none());
        let c = certificates(&st);
        assert_eq!(c[0]["key"], "[REDACTED]");
        assert_eq!(c[0]["snis"], json!(["a.example"]));
        let s = snis(&st);
        assert_eq!(
            s[0]["certificate"]["id"],
            "0d3c5f4e-56e4-4a35-9f38-8f7a32c0e9a1"
        );
    }
}

//! Every typing error of a document in one pass, hints for misplaced or misspelt fields, and
//! the static check of vault references that `tollgate validate` adds.
//!
//! serde stops at the first error. [`deserialize_all`] records it, removes the offending
//! value from a working copy and deserializes again, until the copy types or nothing more
//! can be removed. An error that only follows from a removal (the removed field was
//! required) is not reported: the object missing it is removed in turn, so no error is
//! invented and the search goes on in the rest of the value.

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use super::ConfigIssue;

/// The most errors reported for one value (each costs one more deserialization).
const MAX_ERRORS: usize = 64;

/// A path step in the working copy.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `T` from `value`, or every error found (paths relative to `value`, empty for the value
/// itself, messages as serde words them).
pub fn deserialize_all<T: DeserializeOwned>(value: &Value) -> Result<T, Vec<(String, String)>> {
    match deserialize_partial(value) {
        (Some(t), errors) if errors.is_empty() => Ok(t),
        (_, errors) => Err(errors),
    }
}

/// Every error of `value` as [`deserialize_all`] finds them, and `T` from what is left once
/// the offending values are removed (None when nothing types).
pub fn deserialize_partial<T: DeserializeOwned>(
    value: &Value,
) -> (Option<T>, Vec<(String, String)>) {
    let first = match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => return (Some(t), Vec::new()),
        Err(e) => e,
    };
    let mut work = value.clone();
    let mut errors = Vec::new();
    // Array elements removed so far, to report later errors at their original index.
    let mut removed: Vec<(Vec<Step>, usize)> = Vec::new();
    let mut removed_fields: Vec<Vec<Step>> = Vec::new();
    let mut next = Some(first);
    while let Some(e) = next.take() {
        let steps: Option<Vec<Step>> = e
            .path()
            .iter()
            .map(|s| match s {
                Segment::Map { key } => Some(Step::Key(key.clone())),
                Segment::Seq { index } => Some(Step::Index(*index)),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect();
        let message = e.into_inner().to_string();
        let Some(steps) = steps else {
            errors.push((String::new(), message));
            break;
        };
        // A required field removed for its own error: the object that misses it goes too
        // (unreported), so the search goes on elsewhere.
        let consequence = missing_field(&message).is_some_and(|f| {
            let mut field = steps.clone();
            field.push(Step::Key(f.to_string()));
            removed_fields.contains(&field)
        });
        if !consequence {
            errors.push((render(&original(&steps, &removed)), message));
        }
        if errors.len() >= MAX_ERRORS || steps.is_empty() || !remove(&mut work, &steps) {
            break;
        }
        match steps.split_last() {
            Some((Step::Index(i), array)) => removed.push((array.to_vec(), *i)),
            _ => removed_fields.push(steps),
        }
        match serde_path_to_error::deserialize::<_, T>(&work) {
            Ok(t) => return (Some(t), errors),
            Err(e) => next = Some(e),
        }
    }
    (None, errors)
}

/// The field serde says is missing.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// Removes the value at `steps` from `v`; false when there is none.
fn remove(v: &mut Value, steps: &[Step]) -> bool {
    let Some((last, parent)) = steps.split_last() else {
        return false;
    };
    let mut cur = v;
    for s in parent {
        let child = match (s, cur) {
            (Step::Key(k), Value::Object(m)) => m.get_mut(k),
            (Step::Index(i), Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match child {
            Some(c) => cur = c,
            None => return false,
        }
    }
    match (last, cur) {
        (Step::Key(k), Value::Object(m)) => m.remove(k).is_some(),
        (Step::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// `steps` in the working copy, with array indices as they were before removals.
fn original(steps: &[Step], removed: &[(Vec<Step>, usize)]) -> Vec<Step> {
    let mut out = steps.to_vec();
    for (n, s) in steps.iter().enumerate() {
        let Step::Index(mut i) = s else {
            continue;
        };
        let array = &steps[..n];
        for (_, r) in removed.iter().rev().filter(|(p, _)| p == array) {
            if i >= *r {
                i += 1;
            }
        }
        out[n] = Step::Index(i);
    }
    out
}

fn render(steps: &[Step]) -> String {
    let mut s = String::new();
    for step in steps {
        match step {
            Step::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The unknown field and the fields serde expected in its place, from serde's message
/// (``unknown field `x`, expected one of `a`, `b` `` or ``expected `a` ``), quotes either
/// backticks or double quotes.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let m = message.replace('`', "\"");
    let rest = m.strip_prefix("unknown field \"")?;
    let (name, rest) = rest.split_once('"')?;
    let expected = rest
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((name.to_string(), expected))
}

/// A hint for an unknown-field error at `path` (e.g. `config.balancer.targets`): the same
/// name where the schema has it (`known`: every field path of the value, `[]` for array
/// elements, relative to `root`, e.g. `config`), else the closest expected name at this
/// level.
pub fn did_you_mean(path: &str, message: &str, root: &str, known: &[String]) -> Option<String> {
    let (name, expected) = unknown_field(message)?;
    let parent = path.strip_suffix(&name)?.trim_end_matches('.');
    let join = |p: &str| {
        [root, p]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(".")
    };
    let generic = strip_indices(parent);
    let elsewhere = known
        .iter()
        .filter(|k| k.rsplit('.').next() == Some(name.as_str()))
        .filter(|k| {
            let parent_of_k = k.rsplit_once('.').map_or("", |(p, _)| p);
            join(parent_of_k) != generic
        })
        .max_by_key(|k| {
            let shared = common_prefix(&join(k), &generic);
            (shared, std::cmp::Reverse(k.len()))
        });
    if let Some(k) = elsewhere {
        return Some(format!("did you mean `{}`?", join(k).replace("[]", "[…]")));
    }
    let close = expected
        .iter()
        .map(|e| (edit_distance(&name, e), e))
        .filter(|(d, e)| *d <= (name.len().max(e.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)?;
    let field = if parent.is_empty() {
        close.1.clone()
    } else {
        format!("{parent}.{}", close.1)
    };
    Some(format!("did you mean `{field}`?"))
}

fn strip_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// Whole path segments two paths share from the start.
fn common_prefix(a: &str, b: &str) -> usize {
    a.split('.')
        .zip(b.split('.'))
        .take_while(|(x, y)| x == y)
        .count()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// Every field path of a JSON Schema (`$ref`s into `$defs` followed, `Option`s and
/// `anyOf`/`oneOf` variants merged, array elements as `[]`), e.g. `balancer.retries`,
/// `targets[].model.provider`.
pub fn schema_field_paths(schema: &Value) -> Vec<String> {
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let mut out = Vec::new();
    walk_schema(schema, &defs, "", 0, &mut out);
    out.sort();
    out.dedup();
    out
}

fn walk_schema(s: &Value, defs: &Value, path: &str, depth: usize, out: &mut Vec<String>) {
    if depth > 12 {
        return;
    }
    let s = match s.get("$ref").and_then(Value::as_str) {
        Some(r) => match r.strip_prefix("#/$defs/").and_then(|n| defs.get(n)) {
            Some(d) => d,
            None => return,
        },
        None => s,
    };
    for key in ["anyOf", "oneOf", "allOf"] {
        for v in s.get(key).and_then(Value::as_array).into_iter().flatten() {
            walk_schema(v, defs, path, depth + 1, out);
        }
    }
    if let Some(items) = s.get("items") {
        walk_schema(items, defs, &format!("{path}[]"), depth + 1, out);
    }
    if let Some(extra) = s.get("additionalProperties").filter(|v| v.is_object()) {
        walk_schema(extra, defs, &format!("{path}.*"), depth + 1, out);
    }
    for (name, v) in s
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let p = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        out.push(p.clone());
        walk_schema(v, defs, &p, depth + 1, out);
    }
}

/// Vault references whose vault is neither a built-in backend (`env`, `hcv`) nor a declared
/// `vaults` prefix: a typo that would otherwise surface only as a 500 per request.
pub fn unknown_vault_prefixes(doc: &Value) -> Vec<ConfigIssue> {
    let mut known = vec!["env".to_string(), "hcv".to_string()];
    for v in doc
        .get("vaults")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(p) = v.get("prefix").and_then(Value::as_str) {
            known.push(p.to_string());
        }
    }
    let mut out = Vec::new();
    walk_strings(doc, "", &mut |path, s| {
        let mut rest = s;
        while let Some(i) = rest.find("{vault://") {
            let after = &rest[i + "{vault://".len()..];
            let host: String = after
                .chars()
                .take_while(|c| *c != '/' && *c != '}' && *c != '?' && *c != '#')
                .collect();
            if !known.contains(&host) {
                let message = if ["aws", "gcp", "azure", "conjur"].contains(&host.as_str()) {
                    format!("vault backend '{host}' is not supported by tollgate yet (supported: env, hcv)")
                } else {
                    format!(
                        "unknown vault '{host}' in a vault reference (known: {}; declare it under `vaults`)",
                        known.join(", ")
                    )
                };
                out.push(ConfigIssue {
                    path: path.to_string(),
                    message,
                });
            }
            rest = after;
        }
    });
    out
}

fn walk_strings(v: &Value, path: &str, f: &mut dyn FnMut(&str, &str)) {
    match v {
        Value::String(s) => f(path, s),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk_strings(x, &format!("{path}[{i}]"), f);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk_strings(x, &p, f);
            }
        }
        _ => {}
    }
}

/// A config record `value` typed as `T`, the first error named by its path under `path`;
/// a missing (or null) record is the error `missing` at `path`.
pub fn record_at<T: DeserializeOwned>(
    path: &str,
    value: Option<&Value>,
    missing: &str,
    errors: &mut Vec<(String, String)>,
) -> Option<T> {
    let Some(v) = value.filter(|v| !v.is_null()) else {
        errors.push((path.to_string(), missing.to_string()));
        return None;
    };
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.path().to_string();
            let field = if inner == "." || inner.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            errors.push((field, e.into_inner().to_string()));
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
        #[serde(default)]
        s: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        #[serde(default)]
        items: Vec<Inner>,
        name: String,
        #[serde(default)]
        extra: Option<Inner>,
    }

    #[test]
    fn every_error_once_at_its_original_path() {
        let v = json!({"name": "x", "bogus": 1,
            "items": [{"n": "a"}, {"n": 1, "typo": 2}, {"n": 2, "s": 3}],
            "extra": {"n": 1, "zz": true}});
        let e = deserialize_all::<Outer>(&v).unwrap_err();
        let mut paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "bogus",
                "extra.zz",
                "items[0].n",
                "items[1].typo",
                "items[2].s"
            ],
            "{e:?}"
        );
        // A removed array element does not shift the indices reported after it.
        let v = json!({"name": "x", "items": [5, {"n": 1, "typo": 2}, 7]});
        let e = deserialize_all::<Outer>(&v).unwrap_err();
        let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["items[0]", "items[1].typo", "items[2]"], "{e:?}");
        // A required field removed for its error is not reported again as missing.
        let e = deserialize_all::<Outer>(&json!({"name": 5, "other": 1})).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(!e.iter().any(|(_, m)| m.contains("missing")), "{e:?}");
        assert!(deserialize_all::<Outer>(&json!({"name": "ok"})).is_ok());
    }

    #[test]
    fn hints() {
        let known = vec![
            "targets".to_string(),
            "targets[].model".to_string(),
            "balancer".to_string(),
            "balancer.retries".to_string(),
        ];
        let m = "unknown field `targets`, expected one of `retries`, `algorithm`";
        assert_eq!(
            did_you_mean("config.balancer.targets", m, "config", &known).as_deref(),
            Some("did you mean `config.targets`?")
        );
        let m = "unknown field `retires`, expected one of `retries`, `algorithm`";
        assert_eq!(
            did_you_mean("config.balancer.retires", m, "config", &known).as_deref(),
            Some("did you mean `config.balancer.retries`?")
        );
        let m = "unknown field \"pathz\", expected one of \"paths\", \"hosts\"";
        assert_eq!(
            did_you_mean("services[0].routes[0].pathz", m, "", &[]).as_deref(),
            Some("did you mean `services[0].routes[0].paths`?")
        );
        assert_eq!(
            did_you_mean(
                "x.qqqqq",
                "unknown field `qqqqq`, expected `paths`",
                "",
                &[]
            ),
            None
        );
    }

    #[test]
    fn vault_prefixes() {
        let doc = json!({"vaults": [{"name": "env", "prefix": "mine"}],
            "plugins": [{"config": {"a": "{vault://nope/x}", "b": "Bearer {vault://mine/k}", "c": "{vault://env/k}"}}]});
        let e = unknown_vault_prefixes(&doc);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "plugins[0].config.a");
        assert!(e[0].message.contains("'nope'"));
    }
}

//! Kong's OSS request-transformer plugin (priority 801, so it runs before ai-proxy).
//!
//! Follows `kong/plugins/request-transformer/{schema,access}.lua`. Order: uri → http_method →
//! headers → body → querystring, and within each: remove, rename, replace, add, append.
//! Config entries are `name:value` and are split like Kong's `^([^:]+):*(.-)$`: the name runs to
//! the first colon, *all* colons right after it are skipped (`a::b` has value `b`), and an empty
//! value counts as nil (no template is rendered; replace of a query arg/body field then deletes it,
//! add/append do nothing, as in Kong).
//!
//! Templated values are rendered with [`render_transformer`]: a `$(…)` whose value is missing
//! renders as the empty string — Kong's Penlight template compiles `$(e)` to `tostring(e or '')`,
//! so a missing header, query arg or capture is never an error there.
//!
//! Decisions where Kong's behaviour comes from nginx or is accidental:
//! * Header values that end up empty are not sent: replace removes the header, add and append do
//!   nothing. nginx (`ngx.req.set_header`) treats an empty input-header value as a deletion.
//! * `host` can be replaced (even when absent: the upstream Host is then set), but never removed,
//!   renamed, added or appended — Kong drops `host` from its working copy of the headers first.
//! * JSON body: only objects are transformed and only top-level keys; anything else that is not
//!   an object (array, scalar, invalid JSON) is forwarded untouched. A key is "present" when it
//!   exists, even with `null`/`false` (Kong's newest code tests truthiness, which treats `false`
//!   as absent; we read that as a bug). Key order is kept; new keys go last; values are strings.
//! * The body is re-serialised only when something changed, so untouched bodies stay byte-exact
//!   (Kong re-encodes whenever a body operation is configured).
//! * Multipart bodies are forwarded untouched (Kong rewrites their simple parts); ai-proxy
//!   forwards multipart untouched as well.
//! * When the body is rewritten and the request carried `Content-Length`, it is set to the new
//!   length; without one (chunked) none is added and the HTTP client frames the new body.
//! * `http_method` GET/HEAD/TRACE with a form body copies the form fields into the query string,
//!   as Kong does; the body itself is left in place.
//! * Body and method decisions use the client's original `Content-Type` (from the template
//!   sources), like Kong's `kong.request.get_header`.
//! * A rendered `replace.uri` must start with `/` (Kong's `set_path` raises otherwise) and is
//!   percent-escaped where a path cannot hold the character, including `?` and `#` since the query
//!   is kept separately here.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::plugins::template::{render_transformer, TemplateError, TemplateSources};

/// Null in a decK dump means "use the default", as Kong's schema does.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `remove`: bare names to delete.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveSpec {
    /// Body field names.
    #[serde(default, deserialize_with = "nullable")]
    pub body: Vec<String>,
    /// Header names (case-insensitive).
    #[serde(default, deserialize_with = "nullable")]
    pub headers: Vec<String>,
    /// Query argument names (case-sensitive).
    #[serde(default, deserialize_with = "nullable")]
    pub querystring: Vec<String>,
}

/// `rename`: `old:new` pairs; values are kept.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameSpec {
    /// Body field renames.
    #[serde(default, deserialize_with = "nullable")]
    pub body: Vec<String>,
    /// Header renames.
    #[serde(default, deserialize_with = "nullable")]
    pub headers: Vec<String>,
    /// Query argument renames.
    #[serde(default, deserialize_with = "nullable")]
    pub querystring: Vec<String>,
}

/// `replace`: `name:value` pairs applied only where the name is present, plus the upstream path.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceSpec {
    /// Body fields to overwrite.
    #[serde(default, deserialize_with = "nullable")]
    pub body: Vec<String>,
    /// Headers to overwrite (`host` is always replaceable).
    #[serde(default, deserialize_with = "nullable")]
    pub headers: Vec<String>,
    /// Query arguments to overwrite.
    #[serde(default, deserialize_with = "nullable")]
    pub querystring: Vec<String>,
    /// New upstream path (template allowed).
    #[serde(default)]
    pub uri: Option<String>,
}

/// `add` / `append`: `name:value` pairs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSpec {
    /// Body fields.
    #[serde(default, deserialize_with = "nullable")]
    pub body: Vec<String>,
    /// Headers.
    #[serde(default, deserialize_with = "nullable")]
    pub headers: Vec<String>,
    /// Query arguments.
    #[serde(default, deserialize_with = "nullable")]
    pub querystring: Vec<String>,
}

/// Plugin config, Kong's field names; unknown fields rejected.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestTransformerConfig {
    /// Method to send upstream (uppercase letters).
    #[serde(default)]
    pub http_method: Option<String>,
    /// Names to delete.
    #[serde(default, deserialize_with = "nullable")]
    pub remove: RemoveSpec,
    /// Names to rename.
    #[serde(default, deserialize_with = "nullable")]
    pub rename: RenameSpec,
    /// Values to overwrite where present, and the path.
    #[serde(default, deserialize_with = "nullable")]
    pub replace: ReplaceSpec,
    /// Values to set where absent.
    #[serde(default, deserialize_with = "nullable")]
    pub add: AddSpec,
    /// Values to add alongside existing ones.
    #[serde(default, deserialize_with = "nullable")]
    pub append: AddSpec,
}

/// Which of Kong's entry checks a list gets.
#[derive(Clone, Copy, PartialEq)]
enum EntryCheck {
    /// `match = "^[^:]+:.*$"`.
    Colon,
    /// Colon, and the name is a valid header (replace/add/append headers).
    ColonHeaderName,
    /// Colon, and both names are valid headers (rename headers).
    ColonHeaderPair,
}

impl RequestTransformerConfig {
    /// Checks what serde cannot (entry syntax "name:value", http_method uppercase letters, header names valid); returns (field path relative to config, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if let Some(m) = &self.http_method {
            // typedefs.http_method: `match = "^%u+$"`.
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                errs.push(("http_method".to_string(), format!("invalid value: {m}")));
            }
        }
        for (i, entry) in self.remove.headers.iter().enumerate() {
            let name = split_entry(entry).map(|(n, _)| n);
            if !name.is_some_and(valid_header_name) {
                errs.push((format!("remove.headers[{i}]"), not_a_header(name)));
            }
        }
        let lists: [(&str, &[String], EntryCheck); 12] = [
            ("rename.body", &self.rename.body, EntryCheck::Colon),
            (
                "rename.headers",
                &self.rename.headers,
                EntryCheck::ColonHeaderPair,
            ),
            (
                "rename.querystring",
                &self.rename.querystring,
                EntryCheck::Colon,
            ),
            ("replace.body", &self.replace.body, EntryCheck::Colon),
            (
                "replace.headers",
                &self.replace.headers,
                EntryCheck::ColonHeaderName,
            ),
            (
                "replace.querystring",
                &self.replace.querystring,
                EntryCheck::Colon,
            ),
            ("add.body", &self.add.body, EntryCheck::Colon),
            (
                "add.headers",
                &self.add.headers,
                EntryCheck::ColonHeaderName,
            ),
            ("add.querystring", &self.add.querystring, EntryCheck::Colon),
            ("append.body", &self.append.body, EntryCheck::Colon),
            (
                "append.headers",
                &self.append.headers,
                EntryCheck::ColonHeaderName,
            ),
            (
                "append.querystring",
                &self.append.querystring,
                EntryCheck::Colon,
            ),
        ];
        for (path, list, check) in lists {
            for (i, entry) in list.iter().enumerate() {
                if let Some(msg) = check_entry(entry, check) {
                    errs.push((format!("{path}[{i}]"), msg));
                }
            }
        }
        errs
    }
}

/// Kong's schema messages: `match` failures, then the header custom validator.
fn check_entry(entry: &str, check: EntryCheck) -> Option<String> {
    let Some((name, value)) = split_entry(entry).filter(|_| entry.contains(':')) else {
        return Some(format!("invalid value: {entry}"));
    };
    if check != EntryCheck::Colon && !valid_header_name(name) {
        return Some(not_a_header(Some(name)));
    }
    if check == EntryCheck::ColonHeaderPair && !valid_header_name(value) {
        return Some(not_a_header(Some(value)));
    }
    None
}

/// `kong.tools.http.validate_header_name`: `^[a-zA-Z0-9-_]+$`.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn not_a_header(name: Option<&str>) -> String {
    // Lua's tostring(nil) when the entry has no name at all.
    format!("'{}' is not a valid header", name.unwrap_or("nil"))
}

/// Kong's `^([^:]+):*(.-)$`: the name up to the first colon (non-empty), then every colon skipped.
fn split_entry(entry: &str) -> Option<(&str, &str)> {
    let end = entry.find(':').unwrap_or(entry.len());
    if end == 0 {
        return None;
    }
    Some((&entry[..end], entry[end..].trim_start_matches(':')))
}

/// The upstream request as plugins see and change it before ai-proxy.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Method sent upstream.
    pub method: Method,
    /// Path as sent on the wire (percent-encoded), without the query.
    pub path: String,
    /// Decoded query arguments in order; a repeated name is a multi-valued argument.
    pub query: Vec<(String, String)>,
    /// Headers sent upstream.
    pub headers: HeaderMap,
    /// Body sent upstream.
    pub body: Bytes,
}

/// Why the transformation failed; Kong answers 500 for all of these.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TransformError {
    /// A value template could not be rendered.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A rendered header value is not sendable (control characters).
    #[error("invalid header value for {0}")]
    HeaderValue(String),
    /// A header name (from config or a rendered rename target) is not a valid name.
    #[error("invalid header name {0}")]
    HeaderName(String),
    /// The rendered `replace.uri` does not start with `/`.
    #[error("invalid path '{0}': path must start with /")]
    Path(String),
    /// `http_method` is not a valid method token.
    #[error("invalid http_method {0}")]
    Method(String),
}

/// Applies the transformations in Kong's order: uri → http_method → headers → body → querystring; within each remove, rename, replace, add, append.
pub fn apply(
    cfg: &RequestTransformerConfig,
    req: &mut UpstreamRequest,
    src: &TemplateSources<'_>,
) -> Result<(), TransformError> {
    transform_uri(cfg, req, src)?;
    transform_method(cfg, req, src)?;
    transform_headers(cfg, &mut req.headers, src)?;
    transform_body(cfg, req, src)?;
    transform_query(cfg, &mut req.query, src)?;
    Ok(())
}

/// Characters a path cannot carry literally; `%` stays so existing escapes survive (as Kong's
/// `set_path` escaping does).
const PATH_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'?')
    .add(b'#');

fn transform_uri(
    cfg: &RequestTransformerConfig,
    req: &mut UpstreamRequest,
    src: &TemplateSources<'_>,
) -> Result<(), TransformError> {
    // Kong skips an empty template (param_value returns nil for "").
    let Some(uri) = cfg.replace.uri.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(());
    };
    let path = render_transformer(uri, src)?;
    if !path.starts_with('/') {
        return Err(TransformError::Path(path.into_owned()));
    }
    req.path = utf8_percent_encode(&path, PATH_ESCAPE).to_string();
    Ok(())
}

fn transform_method(
    cfg: &RequestTransformerConfig,
    req: &mut UpstreamRequest,
    src: &TemplateSources<'_>,
) -> Result<(), TransformError> {
    let Some(method) = cfg.http_method.as_deref() else {
        return Ok(());
    };
    req.method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| TransformError::Method(method.to_string()))?;
    // Kong compares the configured text, which the schema already forces to uppercase.
    if matches!(method, "GET" | "HEAD" | "TRACE") && body_kind(src.headers) == Some(BodyKind::Form)
    {
        let fields: Vec<(String, String)> =
            form_urlencoded::parse(&req.body).into_owned().collect();
        for (name, value) in fields {
            pairs_append(&mut req.query, name, value);
        }
    }
    Ok(())
}

/// A config entry after splitting; `None` value = nothing after the colon(s) (Kong's nil).
type Entry<'c> = (&'c str, Option<String>);

/// Splits and renders every entry of a list, in order. An entry with an empty name cannot pass
/// `validate`; Kong would fail on it at runtime, we skip it.
fn render_entries<'c>(
    list: &'c [String],
    src: &TemplateSources<'_>,
) -> Result<Vec<Entry<'c>>, TransformError> {
    let mut out = Vec::with_capacity(list.len());
    for entry in list {
        let Some((name, raw)) = split_entry(entry) else {
            continue;
        };
        let value = if raw.is_empty() {
            None
        } else {
            Some(render_transformer(raw, src)?.into_owned())
        };
        out.push((name, value));
    }
    Ok(out)
}

/// The names of a `remove` list (anything after a colon is ignored).
fn names(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter().filter_map(|e| split_entry(e).map(|(n, _)| n))
}

fn header_name(name: &str) -> Result<HeaderName, TransformError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| TransformError::HeaderName(name.to_string()))
}

fn header_value(name: &HeaderName, value: &str) -> Result<HeaderValue, TransformError> {
    HeaderValue::from_bytes(value.as_bytes())
        .map_err(|_| TransformError::HeaderValue(name.as_str().to_string()))
}

fn transform_headers(
    cfg: &RequestTransformerConfig,
    headers: &mut HeaderMap,
    src: &TemplateSources<'_>,
) -> Result<(), TransformError> {
    for name in names(&cfg.remove.headers) {
        let name = header_name(name)?;
        if name != HOST {
            headers.remove(&name);
        }
    }
    for (old, new) in render_entries(&cfg.rename.headers, src)? {
        let Some(new) = new else { continue };
        let old = header_name(old)?;
        let new = header_name(&new)?;
        // Header names are case-insensitive here, so a case-only rename changes nothing.
        if old == HOST || old == new {
            continue;
        }
        let values: Vec<HeaderValue> = headers.get_all(&old).iter().cloned().collect();
        if values.is_empty() {
            continue;
        }
        headers.remove(&old);
        headers.remove(&new);
        for v in values {
            headers.append(new.clone(), v);
        }
    }
    for (name, value) in render_entries(&cfg.replace.headers, src)? {
        let name = header_name(name)?;
        let Some(value) = value else { continue };
        if headers.contains_key(&name) || name == HOST {
            if value.is_empty() {
                headers.remove(&name);
            } else {
                let v = header_value(&name, &value)?;
                headers.insert(name, v);
            }
        }
    }
    for (name, value) in render_entries(&cfg.add.headers, src)? {
        let name = header_name(name)?;
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        if name != HOST && !headers.contains_key(&name) {
            let v = header_value(&name, &value)?;
            headers.insert(name, v);
        }
    }
    for (name, value) in render_entries(&cfg.append.headers, src)? {
        let name = header_name(name)?;
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        if name != HOST {
            let v = header_value(&name, &value)?;
            headers.append(name, v);
        }
    }
    Ok(())
}

/// Body formats Kong recognises, in its order of `Content-Type` substring checks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BodyKind {
    Json,
    Multipart,
    Form,
}

fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let ct = headers.get(CONTENT_TYPE)?;
    let ct = String::from_utf8_lossy(ct.as_bytes()).to_ascii_lowercase();
    if ct.contains("application/json") {
        Some(BodyKind::Json)
    } else if ct.contains("multipart/form-data") {
        Some(BodyKind::Multipart)
    } else if ct.contains("application/x-www-form-urlencoded") {
        Some(BodyKind::Form)
    } else {
        None
    }
}

/// One target's five operation lists.
struct Lists<'c> {
    remove: &'c [String],
    rename: &'c [String],
    replace: &'c [String],
    add: &'c [String],
    append: &'c [String],
}

impl Lists<'_> {
    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }
}

fn body_lists(cfg: &RequestTransformerConfig) -> Lists<'_> {
    Lists {
        remove: &cfg.remove.body,
        rename: &cfg.rename.body,
        replace: &cfg.replace.body,
        add: &cfg.add.body,
        append: &cfg.append.body,
    }
}

fn transform_body(
    cfg: &RequestTransformerConfig,
    req: &mut UpstreamRequest,
    src: &TemplateSources<'_>,
) -> Result<(), TransformError> {
    let lists = body_lists(cfg);
    if lists.is_empty() {
        return Ok(());
    }
    let new_body = match body_kind(src.headers) {
        Some(BodyKind::Json) => json_body(&lists, &req.body, src)?,
        Some(BodyKind::Form) => {
            let mut fields: Vec<(String, String)> =
                form_urlencoded::parse(&req.body).into_owned().collect();
            // Kong only removes/renames/replaces when there is a body to change.
            let changed = transform_pairs(&mut fields, &lists, !req.body.is_empty(), src)?;
            changed.then(|| {
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&fields)
                    .finish()
                    .into_bytes()
            })
        }
        Some(BodyKind::Multipart) | None => None,
    };
    if let Some(body) = new_body {
        if req.headers.contains_key(CONTENT_LENGTH) {
            req.headers
                .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        req.body = Bytes::from(body);
    }
    Ok(())
}

/// The new JSON body, or `None` when it stays as it is.
fn json_body(
    lists: &Lists<'_>,
    body: &[u8],
    src: &TemplateSources<'_>,
) -> Result<Option<Vec<u8>>, TransformError> {
    let has_content = !body.is_empty();
    let mut obj = if has_content {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            _ => return Ok(None),
        }
    } else {
        Map::new()
    };
    let mut changed = false;
    if has_content {
        for name in names(lists.remove) {
            changed |= obj.shift_remove(name).is_some();
        }
        for (old, new) in render_entries(lists.rename, src)? {
            if let Some(new) = new {
                changed |= rename_key(&mut obj, old, &new);
            }
        }
        for (name, value) in render_entries(lists.replace, src)? {
            if obj.contains_key(name) {
                match value {
                    Some(v) => {
                        obj.insert(name.to_string(), Value::String(v));
                    }
                    // Kong assigns nil, which deletes the field.
                    None => {
                        obj.shift_remove(name);
                    }
                }
                changed = true;
            }
        }
    }
    for (name, value) in render_entries(lists.add, src)? {
        if let Some(v) = value {
            if !obj.contains_key(name) {
                obj.insert(name.to_string(), Value::String(v));
                changed = true;
            }
        }
    }
    for (name, value) in render_entries(lists.append, src)? {
        let Some(v) = value else { continue };
        let v = Value::String(v);
        match obj.get_mut(name) {
            Some(Value::Array(items)) => items.push(v),
            // cjson's null is not a string/number/boolean, so Kong's append_value drops it.
            Some(slot) if slot.is_null() => *slot = Value::Array(vec![v]),
            Some(slot) => {
                let old = std::mem::take(slot);
                *slot = Value::Array(vec![old, v]);
            }
            None => {
                obj.insert(name.to_string(), Value::Array(vec![v]));
            }
        }
        changed = true;
    }
    Ok(if changed {
        serde_json::to_vec(&obj).ok()
    } else {
        None
    })
}

/// Renames `old` to `new` in place, dropping an existing `new`; false when `old` is absent.
fn rename_key(obj: &mut Map<String, Value>, old: &str, new: &str) -> bool {
    if old == new || !obj.contains_key(old) {
        return false;
    }
    for (k, v) in std::mem::take(obj) {
        if k == new {
            continue;
        }
        let k = if k == old { new.to_string() } else { k };
        obj.insert(k, v);
    }
    true
}

fn transform_query(
    cfg: &RequestTransformerConfig,
    query: &mut Vec<(String, String)>,
    src: &TemplateSources<'_>,
) -> Result<(), TransformError> {
    let lists = Lists {
        remove: &cfg.remove.querystring,
        rename: &cfg.rename.querystring,
        replace: &cfg.replace.querystring,
        add: &cfg.add.querystring,
        append: &cfg.append.querystring,
    };
    transform_pairs(query, &lists, true, src)?;
    Ok(())
}

/// The five operations on an ordered multi-map (query args, form fields); true if it changed.
fn transform_pairs(
    pairs: &mut Vec<(String, String)>,
    lists: &Lists<'_>,
    touch_existing: bool,
    src: &TemplateSources<'_>,
) -> Result<bool, TransformError> {
    let mut changed = false;
    if touch_existing {
        for name in names(lists.remove) {
            let before = pairs.len();
            pairs.retain(|(k, _)| k != name);
            changed |= pairs.len() != before;
        }
        for (old, new) in render_entries(lists.rename, src)? {
            if let Some(new) = new {
                changed |= pairs_rename(pairs, old, &new);
            }
        }
        for (name, value) in render_entries(lists.replace, src)? {
            changed |= pairs_replace(pairs, name, value);
        }
    }
    for (name, value) in render_entries(lists.add, src)? {
        if let Some(v) = value {
            if !pairs.iter().any(|(k, _)| k == name) {
                pairs.push((name.to_string(), v));
                changed = true;
            }
        }
    }
    for (name, value) in render_entries(lists.append, src)? {
        if let Some(v) = value {
            pairs_append(pairs, name.to_string(), v);
            changed = true;
        }
    }
    Ok(changed)
}

fn pairs_rename(pairs: &mut Vec<(String, String)>, old: &str, new: &str) -> bool {
    if old == new || !pairs.iter().any(|(k, _)| k == old) {
        return false;
    }
    // Kong assigns the old value over the new name, so earlier values of `new` go.
    pairs.retain(|(k, _)| k != new);
    for (k, _) in pairs.iter_mut() {
        if k == old {
            *k = new.to_string();
        }
    }
    true
}

/// One value in place of all of `name`'s, at its first position; nil deletes it (Kong: `t[k] = nil`).
fn pairs_replace(pairs: &mut Vec<(String, String)>, name: &str, value: Option<String>) -> bool {
    let Some(first) = pairs.iter().position(|(k, _)| k == name) else {
        return false;
    };
    match value {
        Some(v) => {
            pairs[first].1 = v;
            let mut idx = 0;
            pairs.retain(|(k, _)| {
                let keep = idx == first || k != name;
                idx += 1;
                keep
            });
        }
        None => pairs.retain(|(k, _)| k != name),
    }
    true
}

/// Adds a value after the name's last one, so a multi-valued argument stays together.
fn pairs_append(pairs: &mut Vec<(String, String)>, name: String, value: String) {
    match pairs.iter().rposition(|(k, _)| *k == name) {
        Some(i) => pairs.insert(i + 1, (name, value)),
        None => pairs.push((name, value)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::plugins::template::UriCaptures;
    use serde_json::json;

    /// The client's original request: template sources and the starting upstream request.
    struct Client {
        headers: HeaderMap,
        query: Vec<(String, String)>,
        captures: UriCaptures,
        body: Bytes,
        method: Method,
        path: String,
    }

    impl Client {
        fn new() -> Self {
            Client {
                headers: HeaderMap::new(),
                query: Vec::new(),
                captures: UriCaptures {
                    named: vec![("deployment".into(), "dep-9".into())],
                    positional: vec!["dep-9".into()],
                },
                body: Bytes::new(),
                method: Method::POST,
                path: "/v1/chat/completions".into(),
            }
        }

        fn header(mut self, name: &'static str, value: &'static str) -> Self {
            self.headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
            self
        }

        fn query(mut self, name: &str, value: &str) -> Self {
            self.query.push((name.into(), value.into()));
            self
        }

        fn json(self, body: &str) -> Self {
            self.header("content-type", "application/json").body(body)
        }

        fn form(self, body: &str) -> Self {
            self.header("content-type", "application/x-www-form-urlencoded")
                .body(body)
        }

        fn body(mut self, body: &str) -> Self {
            self.body = Bytes::from(body.to_string());
            self
        }

        fn request(&self) -> UpstreamRequest {
            UpstreamRequest {
                method: self.method.clone(),
                path: self.path.clone(),
                query: self.query.clone(),
                headers: self.headers.clone(),
                body: self.body.clone(),
            }
        }

        fn run(&self, cfg: &RequestTransformerConfig) -> Result<UpstreamRequest, TransformError> {
            let mut req = self.request();
            let src = TemplateSources {
                headers: &self.headers,
                query: &self.query,
                uri_captures: &self.captures,
            };
            apply(cfg, &mut req, &src)?;
            Ok(req)
        }

        fn ok(&self, cfg: &RequestTransformerConfig) -> UpstreamRequest {
            self.run(cfg).unwrap()
        }
    }

    fn cfg(v: serde_json::Value) -> RequestTransformerConfig {
        let c: RequestTransformerConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c.validate(), Vec::<(String, String)>::new(), "{c:?}");
        c
    }

    fn all(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn body_json(req: &UpstreamRequest) -> Value {
        serde_json::from_slice(&req.body).unwrap()
    }

    fn body_str(req: &UpstreamRequest) -> &str {
        std::str::from_utf8(&req.body).unwrap()
    }

    // ---------------------------------------------------------------- config

    #[test]
    fn config_defaults_and_nulls() {
        let c: RequestTransformerConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(c, RequestTransformerConfig::default());
        let dump = json!({
            "http_method": null,
            "remove": {"body": [], "headers": [], "querystring": []},
            "rename": {"body": [], "headers": null, "querystring": []},
            "replace": {"body": [], "headers": [], "querystring": [], "uri": null},
            "add": {"body": [], "headers": [], "querystring": []},
            "append": null
        });
        let c: RequestTransformerConfig = serde_json::from_value(dump).unwrap();
        assert_eq!(c, RequestTransformerConfig::default());
        assert!(c.validate().is_empty());
    }

    #[test]
    fn config_full_and_roundtrip() {
        let v = json!({
            "http_method": "GET",
            "remove": {"body": ["a"], "headers": ["x-a"], "querystring": ["qa"]},
            "rename": {"body": ["b:c"], "headers": ["x-b:x-c"], "querystring": ["qb:qc"]},
            "replace": {"body": ["d:1"], "headers": ["x-d:1"], "querystring": ["qd:1"], "uri": "/x"},
            "add": {"body": ["e:2"], "headers": ["x-e:2"], "querystring": ["qe:2"]},
            "append": {"body": ["f:3"], "headers": ["x-f:3"], "querystring": ["qf:3"]}
        });
        let c = cfg(v.clone());
        assert_eq!(c.replace.uri.as_deref(), Some("/x"));
        assert_eq!(c.append.querystring, vec!["qf:3".to_string()]);
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
        // Kong's field order survives serialisation.
        let keys: Vec<String> = serde_json::to_value(&c)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "http_method",
                "remove",
                "rename",
                "replace",
                "add",
                "append"
            ]
        );
    }

    #[test]
    fn config_unknown_fields_rejected() {
        for v in [
            json!({"bogus": 1}),
            json!({"remove": {"uri": "/x"}}),
            json!({"add": {"header": ["a:b"]}}),
            json!({"append": {"uri": "/x"}}),
            json!({"replace": {"json_types": []}}),
        ] {
            let r = serde_json::from_value::<RequestTransformerConfig>(v.clone());
            assert!(
                r.as_ref()
                    .is_err_and(|e| e.to_string().contains("unknown field")),
                "{v}: {r:?}"
            );
        }
        assert!(serde_json::from_value::<RequestTransformerConfig>(
            json!({"add": {"headers": "a:b"}})
        )
        .is_err());
    }

    #[test]
    fn validate_http_method() {
        for (m, ok) in [
            ("GET", true),
            ("PATCH", true),
            ("FOO", true),
            ("get", false),
            ("Get", false),
            ("", false),
            ("GET1", false),
            ("GE T", false),
            ("ÉT", false),
        ] {
            let c = RequestTransformerConfig {
                http_method: Some(m.to_string()),
                ..Default::default()
            };
            let errs = c.validate();
            if ok {
                assert!(errs.is_empty(), "{m}: {errs:?}");
            } else {
                assert_eq!(
                    errs,
                    vec![("http_method".to_string(), format!("invalid value: {m}"))]
                );
            }
        }
    }

    #[test]
    fn validate_entries() {
        let c: RequestTransformerConfig = serde_json::from_value(json!({
            "remove": {"headers": ["ok", "bad name", "", "x:y"], "body": ["", ":"], "querystring": ["a:b"]},
            "rename": {"headers": ["a:b", "a", "a:b c", "a:", "a b:c"], "body": ["x", "x:y"], "querystring": [":x"]},
            "replace": {"headers": ["h:any value: with colons", "h", "h!:v"], "body": ["b:"], "querystring": ["q"]},
            "add": {"headers": ["x-a:$(headers.y)", "foo"], "body": ["k:v", "k"], "querystring": ["::"]},
            "append": {"headers": ["é:v", "x_y:v"], "body": ["a::b"], "querystring": ["", "p:v"]}
        }))
        .unwrap();
        let got = c.validate();
        let want: Vec<(String, String)> = [
            ("remove.headers[1]", "'bad name' is not a valid header"),
            ("remove.headers[2]", "'nil' is not a valid header"),
            ("rename.body[0]", "invalid value: x"),
            ("rename.headers[1]", "invalid value: a"),
            ("rename.headers[2]", "'b c' is not a valid header"),
            ("rename.headers[3]", "'' is not a valid header"),
            ("rename.headers[4]", "'a b' is not a valid header"),
            ("rename.querystring[0]", "invalid value: :x"),
            ("replace.headers[1]", "invalid value: h"),
            ("replace.headers[2]", "'h!' is not a valid header"),
            ("replace.querystring[0]", "invalid value: q"),
            ("add.body[1]", "invalid value: k"),
            ("add.headers[1]", "invalid value: foo"),
            ("add.querystring[0]", "invalid value: ::"),
            ("append.headers[0]", "'é' is not a valid header"),
            ("append.querystring[0]", "invalid value: "),
        ]
        .iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn split_entry_like_kong() {
        assert_eq!(split_entry("a:b"), Some(("a", "b")));
        assert_eq!(split_entry("a::b"), Some(("a", "b")));
        assert_eq!(split_entry("a:b:c"), Some(("a", "b:c")));
        assert_eq!(split_entry("a:http://x"), Some(("a", "http://x")));
        assert_eq!(split_entry("a:"), Some(("a", "")));
        assert_eq!(split_entry("a"), Some(("a", "")));
        assert_eq!(split_entry(":a"), None);
        assert_eq!(split_entry(""), None);
        assert_eq!(split_entry("é:ü"), Some(("é", "ü")));
    }

    // ---------------------------------------------------------------- headers

    #[test]
    fn headers_remove() {
        let c = Client::new()
            .header("x-a", "1")
            .header("x-a", "2")
            .header("x-b", "3")
            .header("host", "client.example");
        let r = c.ok(&cfg(
            json!({"remove": {"headers": ["X-A", "x-missing", "host"]}}),
        ));
        assert!(!r.headers.contains_key("x-a"));
        assert_eq!(all(&r.headers, "x-b"), ["3"]);
        assert_eq!(
            all(&r.headers, "host"),
            ["client.example"],
            "host is never removed"
        );
    }

    #[test]
    fn headers_rename_keeps_values() {
        let c = Client::new()
            .header("x-old", "1")
            .header("x-old", "2")
            .header("x-new", "gone")
            .header("host", "h");
        let r = c.ok(&cfg(json!({"rename": {"headers": [
            "X-Old:X-New", "x-absent:x-other", "host:x-host", "x-keep:x-keep"
        ]}})));
        assert!(!r.headers.contains_key("x-old"));
        assert_eq!(all(&r.headers, "x-new"), ["1", "2"]);
        assert!(!r.headers.contains_key("x-other"));
        assert!(!r.headers.contains_key("x-host"));
        assert_eq!(all(&r.headers, "host"), ["h"]);
        let c = Client::new().header("x-keep", "v");
        let r = c.ok(&cfg(json!({"rename": {"headers": ["X-KEEP:x-keep"]}})));
        assert_eq!(all(&r.headers, "x-keep"), ["v"]);
    }

    #[test]
    fn headers_replace_only_present_but_host_always() {
        let c = Client::new().header("x-a", "1").header("x-a", "2");
        let r = c.ok(&cfg(json!({"replace": {"headers": [
            "X-A:new", "x-absent:nope", "Host:upstream.example"
        ]}})));
        assert_eq!(all(&r.headers, "x-a"), ["new"]);
        assert!(!r.headers.contains_key("x-absent"));
        assert_eq!(all(&r.headers, "host"), ["upstream.example"]);
    }

    #[test]
    fn headers_add_only_absent_never_host() {
        let c = Client::new().header("x-a", "orig");
        let r = c.ok(&cfg(json!({"add": {"headers": [
            "X-A:new", "x-b:b1", "x-b:b2", "host:evil", "x-c:with: colon"
        ]}})));
        assert_eq!(all(&r.headers, "x-a"), ["orig"]);
        assert_eq!(all(&r.headers, "x-b"), ["b1"], "second add sees the first");
        assert!(!r.headers.contains_key("host"));
        assert_eq!(all(&r.headers, "x-c"), ["with: colon"]);
    }

    #[test]
    fn headers_append() {
        let c = Client::new().header("x-a", "1");
        let r = c.ok(&cfg(json!({"append": {"headers": [
            "x-a:2", "X-A:3", "x-new:n", "host:h2"
        ]}})));
        assert_eq!(all(&r.headers, "x-a"), ["1", "2", "3"]);
        assert_eq!(all(&r.headers, "x-new"), ["n"]);
        assert!(!r.headers.contains_key("host"));
    }

    #[test]
    fn headers_operation_order() {
        // remove → rename → replace → add → append, each seeing the previous result.
        let c = Client::new().header("x-a", "a").header("x-b", "b");
        let r = c.ok(&cfg(json!({
            "remove": {"headers": ["x-a"]},
            "rename": {"headers": ["x-b:x-a"]},
            "replace": {"headers": ["x-a:replaced"]},
            "add": {"headers": ["x-a:added", "x-b:added-b"]},
            "append": {"headers": ["x-a:appended"]}
        })));
        assert_eq!(all(&r.headers, "x-a"), ["replaced", "appended"]);
        assert_eq!(all(&r.headers, "x-b"), ["added-b"]);
    }

    #[test]
    fn headers_templates() {
        let c = Client::new()
            .header("x-user", "alice")
            .header("x-tenant", "t1")
            .query("key", "secret");
        let r = c.ok(&cfg(json!({
            "add": {"headers": [
                "x-from-header:$(headers.x_user)",
                "authorization:Bearer $(query_params.key)",
                "x-capture:$(uri_captures.deployment)/$(uri_captures[1])",
                "x-default:$(headers['x-nope'] or 'anon')",
                "x-missing:$(headers.nope)",
                "x-literal:$('$(not_a_template)')"
            ]},
            "replace": {"headers": ["x-tenant:$(headers.nope)"]}
        })));
        assert_eq!(all(&r.headers, "x-from-header"), ["alice"]);
        assert_eq!(all(&r.headers, "authorization"), ["Bearer secret"]);
        assert_eq!(all(&r.headers, "x-capture"), ["dep-9/dep-9"]);
        assert_eq!(all(&r.headers, "x-default"), ["anon"]);
        assert!(
            !r.headers.contains_key("x-missing"),
            "empty value is not added"
        );
        assert!(
            !r.headers.contains_key("x-tenant"),
            "replace with empty value removes"
        );
        assert_eq!(all(&r.headers, "x-literal"), ["$(not_a_template)"]);
    }

    #[test]
    fn headers_templates_read_the_original_request() {
        let c = Client::new().header("x-a", "orig");
        let r = c.ok(&cfg(json!({
            "remove": {"headers": ["x-a"]},
            "add": {"headers": ["x-copy:$(headers.x_a)"]}
        })));
        assert!(!r.headers.contains_key("x-a"));
        assert_eq!(all(&r.headers, "x-copy"), ["orig"]);
    }

    #[test]
    fn headers_empty_config_value_is_nil() {
        let c = Client::new().header("x-a", "1");
        let r = c.ok(&cfg(json!({
            "replace": {"headers": ["x-a:"]},
            "add": {"headers": ["x-b:"]},
            "append": {"headers": ["x-a:", "x-c:"]}
        })));
        assert_eq!(all(&r.headers, "x-a"), ["1"]);
        assert!(!r.headers.contains_key("x-b"));
        assert!(!r.headers.contains_key("x-c"));
    }

    #[test]
    fn headers_errors() {
        let c = Client::new().query("evil", "a\r\nb");
        let e = c.run(&cfg(
            json!({"add": {"headers": ["x-evil:$(query_params.evil)"]}}),
        ));
        assert_eq!(e.unwrap_err(), TransformError::HeaderValue("x-evil".into()));
        let e = c.run(&cfg(json!({"add": {"headers": ["x-s:$(shared.k)"]}})));
        assert_eq!(
            e.unwrap_err(),
            TransformError::Template(TemplateError::BadExpression("$(shared.k)".into()))
        );
        // Unvalidated config: a name http cannot carry.
        let bad = RequestTransformerConfig {
            add: AddSpec {
                headers: vec!["bad name:v".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            c.run(&bad).unwrap_err(),
            TransformError::HeaderName("bad name".into())
        );
        // A rendered rename target that is not a header name.
        let c = Client::new().header("x-a", "1").header("x-t", "a b");
        let bad = RequestTransformerConfig {
            rename: RenameSpec {
                headers: vec!["x-a:$(headers.x_t)".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            c.run(&bad).unwrap_err(),
            TransformError::HeaderName("a b".into())
        );
        // Errors surface even when the operation would not apply (Kong renders every entry).
        let e = Client::new().run(&cfg(json!({"replace": {"headers": ["x-absent:$(nope)"]}})));
        assert!(matches!(e, Err(TransformError::Template(_))));
    }

    // ---------------------------------------------------------------- querystring

    #[test]
    fn query_each_operation() {
        let c = Client::new()
            .query("a", "1")
            .query("b", "2")
            .query("b", "3")
            .query("c", "4")
            .query("A", "case");
        let r = c.ok(&cfg(json!({"remove": {"querystring": ["a", "zz"]}})));
        assert_eq!(
            r.query,
            q(&[("b", "2"), ("b", "3"), ("c", "4"), ("A", "case")])
        );
        let r = c.ok(&cfg(json!({"rename": {"querystring": ["b:c", "zz:yy"]}})));
        assert_eq!(
            r.query,
            q(&[("a", "1"), ("c", "2"), ("c", "3"), ("A", "case")])
        );
        let r = c.ok(&cfg(json!({"replace": {"querystring": ["b:9", "zz:1"]}})));
        assert_eq!(
            r.query,
            q(&[("a", "1"), ("b", "9"), ("c", "4"), ("A", "case")])
        );
        let r = c.ok(&cfg(json!({"add": {"querystring": ["a:x", "d:5", "d:6"]}})));
        assert_eq!(
            r.query,
            q(&[
                ("a", "1"),
                ("b", "2"),
                ("b", "3"),
                ("c", "4"),
                ("A", "case"),
                ("d", "5")
            ])
        );
        let r = c.ok(&cfg(
            json!({"append": {"querystring": ["b:4", "a:2", "e:1"]}}),
        ));
        assert_eq!(
            r.query,
            q(&[
                ("a", "1"),
                ("a", "2"),
                ("b", "2"),
                ("b", "3"),
                ("b", "4"),
                ("c", "4"),
                ("A", "case"),
                ("e", "1")
            ])
        );
    }

    #[test]
    fn query_names_are_case_sensitive() {
        let c = Client::new().query("Key", "v");
        let r = c.ok(&cfg(
            json!({"remove": {"querystring": ["key"]}, "add": {"querystring": ["key:new"]}}),
        ));
        assert_eq!(r.query, q(&[("Key", "v"), ("key", "new")]));
    }

    #[test]
    fn query_order_and_templates() {
        let c = Client::new()
            .header("x-api-version", "2024-06-01")
            .query("old", "o")
            .query("drop", "d");
        let r = c.ok(&cfg(json!({
            "remove": {"querystring": ["drop"]},
            "rename": {"querystring": ["old:new"]},
            "replace": {"querystring": ["new:$(query_params.old)!", "drop:back"]},
            "add": {"querystring": ["api-version:$(headers.x_api_version)", "new:no"]},
            "append": {"querystring": ["new:$(query_params.drop)", "m:$(query_params.none)"]}
        })));
        assert_eq!(
            r.query,
            q(&[
                ("new", "o!"),
                ("new", "d"),
                ("api-version", "2024-06-01"),
                ("m", "")
            ])
        );
    }

    #[test]
    fn query_empty_config_value_is_nil() {
        let c = Client::new().query("a", "1").query("b", "2");
        let r = c.ok(&cfg(json!({
            "replace": {"querystring": ["a:"]},
            "add": {"querystring": ["c:"]},
            "append": {"querystring": ["b:"]}
        })));
        assert_eq!(
            r.query,
            q(&[("b", "2")]),
            "replace with nil deletes (Kong: t[k] = nil)"
        );
    }

    #[test]
    fn query_rename_overwrites_target_and_templated_target() {
        let c = Client::new()
            .query("a", "1")
            .query("b", "2")
            .query("t", "dest");
        let r = c.ok(&cfg(json!({"rename": {"querystring": ["a:b"]}})));
        assert_eq!(r.query, q(&[("b", "1"), ("t", "dest")]));
        let r = c.ok(&cfg(
            json!({"rename": {"querystring": ["a:$(query_params.t)", "b:b"]}}),
        ));
        assert_eq!(r.query, q(&[("dest", "1"), ("b", "2"), ("t", "dest")]));
    }

    // ---------------------------------------------------------------- JSON body

    #[test]
    fn json_each_operation_keeps_order() {
        let c = Client::new()
            .json(r#"{"model":"m","temperature":0.5,"stream":false,"user":"u","n":null}"#)
            .header("content-length", "64");
        let r = c.ok(&cfg(json!({"remove": {"body": ["temperature", "absent"]}})));
        assert_eq!(
            body_str(&r),
            r#"{"model":"m","stream":false,"user":"u","n":null}"#
        );
        assert_eq!(
            all(&r.headers, "content-length"),
            [r.body.len().to_string()]
        );

        let r = c.ok(&cfg(
            json!({"rename": {"body": ["temperature:temp", "absent:x"]}}),
        ));
        assert_eq!(
            body_str(&r),
            r#"{"model":"m","temp":0.5,"stream":false,"user":"u","n":null}"#
        );

        let r = c.ok(&cfg(
            json!({"replace": {"body": ["stream:true", "n:x", "absent:1"]}}),
        ));
        assert_eq!(
            body_str(&r),
            r#"{"model":"m","temperature":0.5,"stream":"true","user":"u","n":"x"}"#,
            "values are strings; present-but-false/null counts as present"
        );

        let r = c.ok(&cfg(
            json!({"add": {"body": ["model:other", "max_tokens:10", "stream:x"]}}),
        ));
        assert_eq!(
            body_str(&r),
            r#"{"model":"m","temperature":0.5,"stream":false,"user":"u","n":null,"max_tokens":"10"}"#
        );

        let r = c.ok(&cfg(
            json!({"append": {"body": ["model:m2", "user:u2", "user:u3", "n:v", "tags:t"]}}),
        ));
        assert_eq!(
            body_json(&r),
            json!({"model":["m","m2"],"temperature":0.5,"stream":false,"user":["u","u2","u3"],"n":["v"],"tags":["t"]})
        );
    }

    #[test]
    fn json_append_to_array_and_other_types() {
        let c = Client::new().json(r#"{"a":[1,"x"],"o":{"k":1},"b":true,"num":2}"#);
        let r = c.ok(&cfg(
            json!({"append": {"body": ["a:y", "o:z", "b:c", "num:3"]}}),
        ));
        assert_eq!(
            body_json(&r),
            json!({"a":[1,"x","y"],"o":[{"k":1},"z"],"b":[true,"c"],"num":[2,"3"]})
        );
    }

    #[test]
    fn json_rename_in_place_and_overwrite() {
        let c = Client::new().json(r#"{"a":1,"b":2,"c":3}"#);
        let r = c.ok(&cfg(json!({"rename": {"body": ["b:z"]}})));
        assert_eq!(body_str(&r), r#"{"a":1,"z":2,"c":3}"#);
        let r = c.ok(&cfg(json!({"rename": {"body": ["c:a"]}})));
        assert_eq!(body_str(&r), r#"{"b":2,"a":3}"#);
        let r = c.ok(&cfg(json!({"rename": {"body": ["a:a"]}})));
        assert_eq!(body_str(&r), r#"{"a":1,"b":2,"c":3}"#);
    }

    #[test]
    fn json_only_top_level_keys() {
        let c = Client::new().json(r#"{"options":{"temperature":1},"options.temperature":2}"#);
        let r = c.ok(&cfg(json!({
            "remove": {"body": ["temperature"]},
            "replace": {"body": ["options.temperature:9"]},
            "add": {"body": ["options.max:5"]}
        })));
        assert_eq!(
            body_str(&r),
            r#"{"options":{"temperature":1},"options.temperature":"9","options.max":"5"}"#
        );
    }

    #[test]
    fn json_unchanged_body_stays_byte_exact() {
        let raw = "{ \"a\" : 1.50, \"big\": 123456789012345678901234567890 }";
        let c = Client::new().json(raw).header("content-length", "55");
        let r = c.ok(&cfg(json!({
            "remove": {"body": ["nope"]},
            "rename": {"body": ["nope:x"]},
            "replace": {"body": ["nope:x"]},
            "add": {"body": ["a:no"]}
        })));
        assert_eq!(body_str(&r), raw);
        assert_eq!(all(&r.headers, "content-length"), ["55"]);
    }

    #[test]
    fn json_unparseable_or_not_object_untouched() {
        for raw in [
            "{not json",
            "[1,2]",
            "\"str\"",
            "42",
            "null",
            "   ",
            "{\"a\":1} trailing",
        ] {
            let c = Client::new().json(raw);
            let r = c.ok(&cfg(
                json!({"add": {"body": ["k:v"]}, "append": {"body": ["a:b"]}}),
            ));
            assert_eq!(body_str(&r), raw);
        }
    }

    #[test]
    fn json_empty_body() {
        // Kong builds a new object for add/append but leaves remove/rename/replace alone.
        let c = Client::new().json("").header("content-length", "0");
        let r = c.ok(&cfg(json!({
            "remove": {"body": ["x"]},
            "replace": {"body": ["x:1"]},
            "add": {"body": ["model:gpt-4o"]},
            "append": {"body": ["tags:a"]}
        })));
        assert_eq!(body_str(&r), r#"{"model":"gpt-4o","tags":["a"]}"#);
        assert_eq!(
            all(&r.headers, "content-length"),
            [r.body.len().to_string()]
        );
        let r = c.ok(&cfg(
            json!({"remove": {"body": ["x"]}, "replace": {"body": ["x:1"]}}),
        ));
        assert_eq!(body_str(&r), "");
    }

    #[test]
    fn json_templates_and_nil_values() {
        let c = Client::new()
            .json(r#"{"model":"m","user":"u"}"#)
            .header("x-model", "from-header")
            .query("u", "q-user");
        let r = c.ok(&cfg(json!({
            "replace": {"body": ["model:$(headers.x_model)", "user:"]},
            "add": {"body": ["route:$(uri_captures.deployment)", "empty:$(headers.none)", "nil:"]},
            "append": {"body": ["who:$(query_params.u)", "nil2:"]}
        })));
        assert_eq!(
            body_str(&r),
            r#"{"model":"from-header","route":"dep-9","empty":"","who":["q-user"]}"#
        );
    }

    #[test]
    fn json_content_type_variants() {
        for ct in [
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/json-patch+json",
        ] {
            let mut c = Client::new().body("{}");
            c.headers
                .insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            let r = c.ok(&cfg(json!({"add": {"body": ["a:b"]}})));
            assert_eq!(body_str(&r), r#"{"a":"b"}"#, "{ct}");
        }
        let c = Client::new()
            .header("content-type", "text/plain")
            .body("{}");
        let r = c.ok(&cfg(json!({"add": {"body": ["a:b"]}})));
        assert_eq!(body_str(&r), "{}");
        let c = Client::new().body("{}");
        let r = c.ok(&cfg(json!({"add": {"body": ["a:b"]}})));
        assert_eq!(body_str(&r), "{}", "no content type: untouched");
    }

    #[test]
    fn content_length_not_invented() {
        let c = Client::new().json("{}");
        let r = c.ok(&cfg(json!({"add": {"body": ["a:b"]}})));
        assert_eq!(body_str(&r), r#"{"a":"b"}"#);
        assert!(!r.headers.contains_key("content-length"));
    }

    #[test]
    fn body_kind_uses_original_content_type() {
        // The header ops may rewrite Content-Type; the body is still parsed as the client sent it.
        let c = Client::new().json(r#"{"a":1}"#);
        let r = c.ok(&cfg(json!({
            "replace": {"headers": ["content-type:text/plain"]},
            "add": {"body": ["b:2"]}
        })));
        assert_eq!(body_str(&r), r#"{"a":1,"b":"2"}"#);
        assert_eq!(all(&r.headers, "content-type"), ["text/plain"]);
    }

    // ---------------------------------------------------------------- form body

    #[test]
    fn form_each_operation() {
        let c = Client::new()
            .form("a=1&b=2&b=3&c=x+y%21")
            .header("content-length", "21");
        let r = c.ok(&cfg(json!({"remove": {"body": ["b"]}})));
        assert_eq!(body_str(&r), "a=1&c=x+y%21");
        assert_eq!(all(&r.headers, "content-length"), ["12"]);
        let r = c.ok(&cfg(json!({"rename": {"body": ["b:d"]}})));
        assert_eq!(body_str(&r), "a=1&d=2&d=3&c=x+y%21");
        let r = c.ok(&cfg(json!({"replace": {"body": ["b:z z", "none:1"]}})));
        assert_eq!(body_str(&r), "a=1&b=z+z&c=x+y%21");
        let r = c.ok(&cfg(json!({"add": {"body": ["a:no", "e:é&="]}})));
        assert_eq!(body_str(&r), "a=1&b=2&b=3&c=x+y%21&e=%C3%A9%26%3D");
        let r = c.ok(&cfg(json!({"append": {"body": ["a:2", "f:1"]}})));
        assert_eq!(body_str(&r), "a=1&a=2&b=2&b=3&c=x+y%21&f=1");
    }

    #[test]
    fn form_empty_body_and_nil_values() {
        let c = Client::new().form("");
        let r = c.ok(&cfg(json!({
            "remove": {"body": ["x"]},
            "replace": {"body": ["x:1"]},
            "add": {"body": ["k:$(uri_captures.deployment)"]}
        })));
        assert_eq!(body_str(&r), "k=dep-9");
        let c = Client::new().form("a=1&b=2");
        let r = c.ok(&cfg(
            json!({"replace": {"body": ["a:"]}, "add": {"body": ["c:"]}}),
        ));
        assert_eq!(body_str(&r), "b=2");
        let r = c.ok(&cfg(json!({"remove": {"body": ["zz"]}})));
        assert_eq!(body_str(&r), "a=1&b=2");
    }

    #[test]
    fn multipart_untouched() {
        let raw = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ--\r\n";
        let c = Client::new()
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(raw);
        let r = c.ok(&cfg(
            json!({"remove": {"body": ["a"]}, "add": {"body": ["b:2"]}}),
        ));
        assert_eq!(body_str(&r), raw);
    }

    // ---------------------------------------------------------------- method

    #[test]
    fn method_is_set() {
        let c = Client::new().json("{}");
        let r = c.ok(&cfg(json!({"http_method": "PUT"})));
        assert_eq!(r.method, Method::PUT);
        assert_eq!(body_str(&r), "{}");
        let r = c.ok(&cfg(json!({"http_method": "PURGE"})));
        assert_eq!(r.method.as_str(), "PURGE");
    }

    #[test]
    fn method_get_moves_form_fields_to_query() {
        let c = Client::new()
            .form("a=1&b=x+y&a=3")
            .query("a", "0")
            .query("z", "9");
        let r = c.ok(&cfg(json!({"http_method": "GET"})));
        assert_eq!(r.method, Method::GET);
        assert_eq!(
            r.query,
            q(&[("a", "0"), ("a", "1"), ("a", "3"), ("z", "9"), ("b", "x y")])
        );
        assert_eq!(
            body_str(&r),
            "a=1&b=x+y&a=3",
            "Kong leaves the body in place"
        );
        for m in ["HEAD", "TRACE"] {
            let r = c.ok(&cfg(json!({ "http_method": m })));
            assert_eq!(r.query.len(), 5, "{m}");
        }
        let r = c.ok(&cfg(json!({"http_method": "POST"})));
        assert_eq!(r.query, q(&[("a", "0"), ("z", "9")]));
        let j = Client::new().json(r#"{"a":1}"#);
        assert!(j.ok(&cfg(json!({"http_method": "GET"}))).query.is_empty());
    }

    #[test]
    fn method_moved_fields_then_query_ops() {
        let c = Client::new().form("b=2");
        let r = c.ok(&cfg(json!({
            "http_method": "GET",
            "rename": {"querystring": ["b:c"]},
            "remove": {"body": ["b"]}
        })));
        assert_eq!(r.query, q(&[("c", "2")]));
        assert_eq!(body_str(&r), "");
    }

    #[test]
    fn method_invalid_unvalidated() {
        let bad = RequestTransformerConfig {
            http_method: Some("G T".into()),
            ..Default::default()
        };
        assert_eq!(
            Client::new().run(&bad).unwrap_err(),
            TransformError::Method("G T".into())
        );
    }

    // ---------------------------------------------------------------- uri

    #[test]
    fn uri_replace() {
        let mut c = Client::new().query("v", "2");
        c.headers
            .insert("x-dep", HeaderValue::from_str("d 1/é?#").unwrap());
        let r = c.ok(&cfg(
            json!({"replace": {"uri": "/openai/deployments/$(uri_captures.deployment)/chat"}}),
        ));
        assert_eq!(r.path, "/openai/deployments/dep-9/chat");
        let r = c.ok(&cfg(json!({"replace": {"uri": "/x/$(headers.x_dep)"}})));
        assert_eq!(r.path, "/x/d%201/%C3%A9%3F%23");
        let r = c.ok(&cfg(json!({"replace": {"uri": "/already%20escaped"}})));
        assert_eq!(r.path, "/already%20escaped");
        let r = c.ok(&cfg(json!({"replace": {"uri": ""}})));
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.query, q(&[("v", "2")]), "query is not part of the path");
    }

    #[test]
    fn uri_must_start_with_slash() {
        let c = Client::new();
        let e = c.run(&cfg(json!({"replace": {"uri": "$(headers.missing)"}})));
        assert_eq!(e.unwrap_err(), TransformError::Path(String::new()));
        let e = c.run(&cfg(json!({"replace": {"uri": "relative"}})));
        assert_eq!(e.unwrap_err(), TransformError::Path("relative".into()));
        let e = c.run(&cfg(json!({"replace": {"uri": "/$(shared.x)"}})));
        assert!(matches!(
            e,
            Err(TransformError::Template(TemplateError::BadExpression(_)))
        ));
    }

    // ---------------------------------------------------------------- whole plugin

    #[test]
    fn empty_config_changes_nothing() {
        let c = Client::new()
            .json(r#"{ "a" : 1 }"#)
            .header("x-a", "1")
            .query("q", "1");
        let r = c.ok(&RequestTransformerConfig::default());
        let before = c.request();
        assert_eq!(r.method, before.method);
        assert_eq!(r.path, before.path);
        assert_eq!(r.query, before.query);
        assert_eq!(r.headers, before.headers);
        assert_eq!(r.body, before.body);
    }

    #[test]
    fn full_pipeline_order() {
        let c = Client::new()
            .form("model=gpt&secret=s")
            .header("content-length", "19")
            .header("x-user", "bob")
            .query("keep", "k");
        let r = c.ok(&cfg(json!({
            "http_method": "GET",
            "replace": {"uri": "/u/$(headers.x_user)", "querystring": ["model:$(headers.x_user)"]},
            "remove": {"headers": ["x-user"], "body": ["secret"], "querystring": ["secret"]},
            "add": {"headers": ["x-seen:$(headers.x_user)"], "body": ["extra:1"], "querystring": ["v:1"]}
        })));
        assert_eq!(r.path, "/u/bob");
        assert_eq!(r.method, Method::GET);
        assert!(!r.headers.contains_key("x-user"));
        assert_eq!(all(&r.headers, "x-seen"), ["bob"]);
        // Body ops ran on the original form; its fields had been copied to the query before.
        assert_eq!(body_str(&r), "model=gpt&extra=1");
        assert_eq!(all(&r.headers, "content-length"), ["17"]);
        assert_eq!(r.query, q(&[("keep", "k"), ("model", "bob"), ("v", "1")]));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            TransformError::HeaderValue("x".into()).to_string(),
            "invalid header value for x"
        );
        assert_eq!(
            TransformError::from(TemplateError::BadExpression("$(a)".into())).to_string(),
            "cannot parse expression for field '$(a)'"
        );
        assert_eq!(
            TransformError::Path("x".into()).to_string(),
            "invalid path 'x': path must start with /"
        );
    }
}

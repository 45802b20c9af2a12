//! Admin API writes: POST/PUT/PATCH/DELETE on entities and their nested endpoints,
//! consumer group membership, `POST /config`, and schema validation. Every write is
//! checked like a config file (it is compiled with the whole document) before it applies.

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::admin::control::Control;
use crate::admin::errors::AdminError;
use crate::admin::state::{ref_id, Kind, State};
use crate::admin::Admin;
use crate::config::raw::{
    RawConsumer, RawConsumerGroup, RawPlugin, RawRoute, RawService, RawVault,
};
use crate::config::tidy_serde_message;
use crate::gateway::snapshot::redact_secrets;
use crate::gateway::Snapshot;

/// A write's answer: status and body (None: no body, e.g. 204).
pub type Answer = Result<(StatusCode, Option<Value>), AdminError>;

/// The value Admin API answers show instead of a secret; sent back, it keeps the secret.
const REDACTED: &str = "[REDACTED]";

/// Foreign key fields and the collections they name.
const FOREIGN: [(&str, Kind); 4] = [
    ("service", Kind::Services),
    ("route", Kind::Routes),
    ("consumer", Kind::Consumers),
    ("consumer_group", Kind::ConsumerGroups),
];

/// A write's body: JSON, or a form (Kong accepts both).
#[derive(Clone, Copy)]
pub struct Body<'a> {
    pub bytes: &'a [u8],
    pub form: bool,
}

/// Answers a write (any method but GET/HEAD) to `segs`.
pub async fn handle(
    a: &Admin,
    method: &Method,
    segs: &[&str],
    query: &[(String, String)],
    body: Body<'_>,
) -> Answer {
    let control: &Control = &a.control;
    let mut guard = control.state.lock().await;
    let Some(state) = guard.as_mut() else {
        return Err(AdminError::Unsupported(
            "this gateway was started without a declarative document; writes are not possible"
                .into(),
        ));
    };
    let Some(cluster) = &control.cluster else {
        return dispatch(a, state, method, segs, query, body).await;
    };
    // On a cluster the change is made over the stored configuration; when another node
    // saved first, it is made again over that one.
    for _ in 0..CLUSTER_ATTEMPTS {
        cluster.sync(&a.gw, state).await?;
        match dispatch(a, state, method, segs, query, body).await {
            Err(AdminError::Conflict) => continue,
            answer => return answer,
        }
    }
    Err(AdminError::Conflict)
}

/// How often a write is made again over a configuration another node changed meanwhile.
const CLUSTER_ATTEMPTS: usize = 5;

/// A write made on `state`.
async fn dispatch(
    a: &Admin,
    state: &mut State,
    method: &Method,
    segs: &[&str],
    query: &[(String, String)],
    body: Body<'_>,
) -> Answer {
    let m = method.clone();
    match segs {
        ["config"] if m == Method::POST => post_config(a, state, query, body.bytes).await,
        ["schemas", "plugins", "validate"] if m == Method::POST => {
            validate(state, Kind::Plugins, body).await
        }
        ["schemas", entity, "validate"] if m == Method::POST => match Kind::from_segment(entity) {
            Some(kind) => validate(state, kind, body).await,
            None => Err(AdminError::NotFound),
        },
        [] | ["status" | "metrics"] | ["plugins", "enabled"] | ["schemas", ..] => {
            Err(AdminError::MethodNotAllowed)
        }
        [kind] => {
            let kind = Kind::from_segment(kind).ok_or(AdminError::NotFound)?;
            match m {
                Method::POST => create(a, state, kind, None, body).await,
                _ => Err(AdminError::MethodNotAllowed),
            }
        }
        ["consumer_groups", g, "consumers"] => group_consumers(a, state, &m, g, body).await,
        ["consumer_groups", g, "consumers", c] if m == Method::DELETE => {
            leave_group(a, state, g, c).await
        }
        ["consumers", c, "consumer_groups"] if m == Method::POST => {
            consumer_joins(a, state, c, body).await
        }
        ["consumers", c, "consumer_groups", g] if m == Method::DELETE => {
            leave_group(a, state, g, c).await
        }
        [kind, key] => {
            let kind = Kind::from_segment(kind).ok_or(AdminError::NotFound)?;
            one(a, state, &m, kind, key, None, body).await
        }
        [parent, pkey, child] => {
            let (pkind, field, ckind) = nested(parent, child)?;
            let pi = state.find(pkind, pkey).ok_or(AdminError::NotFound)?;
            let pid = state.id(pkind, pi).unwrap_or_default();
            match m {
                Method::POST => create(a, state, ckind, Some((field, pid)), body).await,
                _ => Err(AdminError::MethodNotAllowed),
            }
        }
        [parent, pkey, child, ckey] => {
            let (pkind, field, ckind) = nested(parent, child)?;
            let pi = state.find(pkind, pkey).ok_or(AdminError::NotFound)?;
            let pid = state.id(pkind, pi).unwrap_or_default();
            one(a, state, &m, ckind, ckey, Some((field, pid)), body).await
        }
        _ => Err(AdminError::NotFound),
    }
}

/// A nested collection: (parent kind, the child's foreign key field, child kind).
fn nested(parent: &str, child: &str) -> Result<(Kind, &'static str, Kind), AdminError> {
    Ok(match (parent, child) {
        ("services", "routes") => (Kind::Services, "service", Kind::Routes),
        ("services", "plugins") => (Kind::Services, "service", Kind::Plugins),
        ("routes", "plugins") => (Kind::Routes, "route", Kind::Plugins),
        ("consumers", "plugins") => (Kind::Consumers, "consumer", Kind::Plugins),
        ("consumer_groups", "plugins") => (Kind::ConsumerGroups, "consumer_group", Kind::Plugins),
        ("consumers", "key-auth") => (Kind::Consumers, "consumer", Kind::KeyauthCredentials),
        _ => return Err(AdminError::NotFound),
    })
}

/// PUT/PATCH/DELETE of one entity (under `parent` when nested: it must belong to it).
async fn one(
    a: &Admin,
    state: &mut State,
    m: &Method,
    kind: Kind,
    key: &str,
    parent: Option<(&'static str, String)>,
    body: Body<'_>,
) -> Answer {
    let found = state.find(kind, key).filter(|i| match &parent {
        Some((field, pid)) => {
            state.get(kind, *i).and_then(|e| ref_id(e.get(*field))) == Some(pid.as_str())
        }
        None => true,
    });
    match *m {
        Method::DELETE => {
            let Some(i) = found else {
                return Ok((StatusCode::NO_CONTENT, None));
            };
            if let Some(child) = state.restricted_by(kind, i) {
                return Err(AdminError::Restricted(kind.name(), child));
            }
            let mut candidate = state.clone();
            candidate.remove(kind, i);
            a.control.commit(&a.gw, state, candidate, None).await?;
            Ok((StatusCode::NO_CONTENT, None))
        }
        Method::PUT => {
            let mut entity = object(body)?;
            if let Some((field, pid)) = &parent {
                entity.insert((*field).into(), json!({"id": pid}));
            }
            match found {
                Some(i) => {
                    let old = state.get(kind, i).cloned().unwrap_or(Value::Null);
                    entity.insert("id".into(), old.get("id").cloned().unwrap_or(Value::Null));
                    keep_redacted(&mut entity, &old);
                    let created = old.get("created_at").cloned();
                    if body.form {
                        coerce_form(kind, &mut entity);
                    }
                    save(a, state, kind, Some(i), entity, created, StatusCode::OK).await
                }
                None => {
                    if uuid::Uuid::parse_str(key).is_ok() {
                        entity.insert("id".into(), Value::String(key.to_string()));
                    } else if let Some(f) = kind.unique_fields().first() {
                        entity.insert((*f).into(), Value::String(key.to_string()));
                    }
                    if body.form {
                        coerce_form(kind, &mut entity);
                    }
                    save(a, state, kind, None, entity, None, StatusCode::OK).await
                }
            }
        }
        Method::PATCH => {
            let i = found.ok_or(AdminError::NotFound)?;
            let patch = object(body)?;
            let old = state.get(kind, i).cloned().unwrap_or(Value::Null);
            let mut entity = old.as_object().cloned().unwrap_or_default();
            for (k, v) in patch {
                if k == "id" {
                    continue;
                }
                match (entity.get_mut(&k), v) {
                    (Some(Value::Object(cur)), Value::Object(new)) if k == "config" => {
                        merge(cur, new)
                    }
                    (_, v) => {
                        entity.insert(k, v);
                    }
                }
            }
            keep_redacted(&mut entity, &old);
            let created = old.get("created_at").cloned();
            if body.form {
                coerce_form(kind, &mut entity);
            }
            save(a, state, kind, Some(i), entity, created, StatusCode::OK).await
        }
        Method::POST => Err(AdminError::MethodNotAllowed),
        _ => Err(AdminError::MethodNotAllowed),
    }
}

/// POST to a collection (nested: the parent's foreign key set from the URL).
async fn create(
    a: &Admin,
    state: &mut State,
    kind: Kind,
    parent: Option<(&'static str, String)>,
    body: Body<'_>,
) -> Answer {
    let mut entity = object(body)?;
    if let Some((field, pid)) = parent {
        entity.insert(field.into(), json!({"id": pid}));
    }
    if let Some(id) = entity.get("id").and_then(Value::as_str) {
        if state.find(kind, id).is_some() {
            return Err(AdminError::PrimaryKey(id.to_string()));
        }
    }
    if body.form {
        coerce_form(kind, &mut entity);
    }
    save(a, state, kind, None, entity, None, StatusCode::CREATED).await
}

/// Checks `entity`, puts it at `at` (or adds it), and commits. Answers with the entity as
/// the Admin API shows it.
async fn save(
    a: &Admin,
    state: &mut State,
    kind: Kind,
    at: Option<usize>,
    mut entity: Map<String, Value>,
    created_at: Option<Value>,
    status: StatusCode,
) -> Answer {
    for k in ["created_at", "updated_at"] {
        entity.remove(k);
    }
    // A key is shown once, in this answer; only its digest is kept.
    let mut new_key: Option<String> = None;
    if kind == Kind::KeyauthCredentials {
        if entity.contains_key("key_hash") {
            return Err(AdminError::Schema(vec![(
                "key_hash".into(),
                "set by the gateway; send 'key', or nothing to have one generated".into(),
            )]));
        }
        let key = match entity.remove("key") {
            Some(Value::String(k)) if !k.is_empty() => k,
            Some(Value::Null) | None => generate_key(),
            Some(_) => {
                return Err(AdminError::Schema(vec![(
                    "key".into(),
                    "expected a string".into(),
                )]))
            }
        };
        let d = crate::config::entities::key_digest(&key);
        entity.insert(
            "key_hash".into(),
            Value::String(crate::config::entities::key_hash_text(&d)),
        );
        new_key = Some(key);
    }
    check_shape(kind, &entity)?;
    resolve_foreign(state, &mut entity)?;
    if kind == Kind::Services {
        expand_url(&mut entity)?;
    }
    if let Some((field, value)) = state.unique_clash(kind, &entity, at) {
        return Err(AdminError::Unique(field, value));
    }
    let id = match entity.get("id").and_then(Value::as_str) {
        Some(id) => {
            if uuid::Uuid::parse_str(id).is_err() {
                return Err(AdminError::Schema(vec![(
                    "id".into(),
                    "expected a valid UUID".into(),
                )]));
            }
            id.to_string()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    entity.insert("id".into(), Value::String(id.clone()));
    let now = now();
    entity.insert("created_at".into(), created_at.unwrap_or(json!(now)));
    entity.insert("updated_at".into(), json!(now));
    let plain = plain_secrets(&Value::Object(entity.clone()));
    let mut candidate = state.clone();
    let i = match at {
        Some(i) => {
            candidate.replace(kind, i, entity);
            i
        }
        None => candidate.insert(kind, entity),
    };
    a.control
        .commit(&a.gw, state, candidate, Some((kind, i)))
        .await?;
    if let (Some(file), false) = (&a.control.file, plain.is_empty()) {
        tracing::warn!(
            "{} {id}: {} saved in clear in {} (readable by its owner only); prefer a vault reference such as {{vault://env/NAME}}",
            kind.name(),
            plain.join(", "),
            file.display()
        );
    }
    let snap = a.gw.snapshot.load_full();
    let mut shown = view(kind, state, &snap, &id);
    if let Some(k) = new_key {
        shown["key"] = Value::String(k);
    }
    Ok((status, Some(shown)))
}

/// The paths of the secret fields of `v` that hold a literal secret (not a vault reference
/// or a decK template).
fn plain_secrets(v: &Value) -> Vec<String> {
    fn walk(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, va) in x {
                    if let Some(vb) = y.get(k) {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        walk(va, vb, &p, out);
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                    walk(va, vb, &format!("{path}[{i}]"), out);
                }
            }
            (Value::String(x), _) if a != b && !x.contains("${{") && x != REDACTED => {
                out.push(path.to_string());
            }
            _ => {}
        }
    }
    let mut redacted = v.clone();
    crate::gateway::snapshot::redact_secrets(&mut redacted);
    let mut out = Vec::new();
    walk(v, &redacted, "", &mut out);
    out
}

/// A new API key: 32 random bytes, URL-safe base64, with a prefix that makes leaked keys
/// easy to find in code scanners.
pub fn generate_key() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    let rng = ring::rand::SystemRandom::new();
    if ring::rand::SecureRandom::fill(&rng, &mut bytes).is_err() {
        // The system RNG failing is not survivable for key material: fall back to v4 UUIDs
        // (also from the OS RNG, through getrandom).
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        bytes[..16].copy_from_slice(a.as_bytes());
        bytes[16..].copy_from_slice(b.as_bytes());
    }
    format!(
        "tg_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The entity with id `id` as the Admin API shows it: with defaults for the compiled kinds,
/// secrets redacted.
pub fn view(kind: Kind, state: &State, snap: &Snapshot, id: &str) -> Value {
    let compiled = match kind {
        Kind::Services => snap
            .services
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.to_json()),
        Kind::Routes => snap
            .routes
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.to_json(snap)),
        Kind::Plugins => snap
            .plugins
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.to_json(snap)),
        _ => None,
    };
    if let Some(v) = compiled {
        return v;
    }
    let Some(e) = state.find(kind, id).and_then(|i| state.get(kind, i)) else {
        return Value::Null;
    };
    let pick = |fields: &[&str]| -> Value {
        let mut out = Map::new();
        for f in fields {
            out.insert((*f).into(), e.get(*f).cloned().unwrap_or(Value::Null));
        }
        Value::Object(out)
    };
    match kind {
        Kind::Consumers => pick(&[
            "id",
            "username",
            "custom_id",
            "tags",
            "created_at",
            "updated_at",
        ]),
        Kind::ConsumerGroups => pick(&["id", "name", "tags", "created_at", "updated_at"]),
        Kind::KeyauthCredentials => {
            let mut v = pick(&["id", "consumer", "ttl", "tags", "created_at", "updated_at"]);
            v["key"] = Value::String(REDACTED.into());
            v
        }
        Kind::Vaults => {
            let mut v = pick(&[
                "id",
                "name",
                "prefix",
                "description",
                "config",
                "tags",
                "created_at",
                "updated_at",
            ]);
            redact_vault(&mut v["config"]);
            v
        }
        _ => e.clone(),
    }
}

/// Redacts the vault configs and the certificates' private keys of a whole document.
pub fn redact_vaults(doc: &mut Value) {
    for v in doc
        .get_mut("vaults")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        redact_vault(&mut v["config"]);
    }
    for c in doc
        .get_mut("certificates")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for k in ["key", "key_alt"] {
            if c.get(k).is_some_and(|v| {
                v.as_str()
                    .is_some_and(|s| !crate::config::vault::is_reference(s))
            }) {
                c[k] = Value::String(REDACTED.into());
            }
        }
    }
}

/// Vault configs hold tokens and secret ids: shown only as vault references.
fn redact_vault(config: &mut Value) {
    if let Value::Object(m) = config {
        for (k, v) in m.iter_mut() {
            let secret = ["token", "approle_secret_id", "password"].contains(&k.as_str());
            if secret
                && v.as_str()
                    .is_some_and(|s| !crate::config::vault::is_reference(s))
            {
                *v = Value::String(REDACTED.into());
            }
        }
    }
}

/// `created_at` values are Unix seconds, as in Kong.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A JSON object body (Kong's 400 for anything else), or a form's fields.
fn object(body: Body<'_>) -> Result<Map<String, Value>, AdminError> {
    if body.form {
        return Ok(super::form::parse(body.bytes));
    }
    if body.bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body.bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(AdminError::BadJson),
    }
}

/// Form values are strings: converts those the typing says should be numbers, booleans or
/// lists (the entity's fields, then a plugin's config).
fn coerce_form(kind: Kind, entity: &mut Map<String, Value>) {
    for _ in 0..64 {
        let err = match check_shape(kind, entity) {
            Err(AdminError::Schema(e)) => e.into_iter().next(),
            _ if kind == Kind::Plugins => {
                let name = entity.get("name").and_then(Value::as_str).unwrap_or("");
                crate::plugins::registry::parse(name, entity.get("config"))
                    .err()
                    .and_then(|e| e.into_iter().next())
            }
            _ => None,
        };
        let Some((path, message)) = err else { return };
        if !super::form::coerce(entity, &path, &tidy_serde_message(&message)) {
            return;
        }
    }
}

/// Types the entity like a config file would, so unknown fields and wrong types are named.
fn check_shape(kind: Kind, entity: &Map<String, Value>) -> Result<(), AdminError> {
    // Nested collections belong to their own endpoints in the Admin API.
    for nested in [
        "routes",
        "plugins",
        "keyauth_credentials",
        "groups",
        "consumers",
    ] {
        let allowed = kind == Kind::ConsumerGroups && nested == "consumers";
        if entity.contains_key(nested) && !allowed && kind != Kind::Plugins {
            return Err(AdminError::Schema(vec![(
                nested.into(),
                "unknown field".into(),
            )]));
        }
    }
    let v = Value::Object(entity.clone());
    fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<(), (String, String)> {
        serde_path_to_error::deserialize::<_, T>(v)
            .map(|_| ())
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = tidy_serde_message(&e.into_inner().to_string());
                // serde names the unknown field in the message, not the path.
                if inner.starts_with("unknown field") {
                    // serde_path_to_error's path already ends with the unknown field.
                    return (path, "unknown field".into());
                }
                if let Some(rest) = inner.strip_prefix("missing field \"") {
                    let field = rest.split('"').next().unwrap_or("").to_string();
                    let at = if path == "." {
                        field
                    } else {
                        format!("{path}.{field}")
                    };
                    return (at, "required field missing".into());
                }
                (if path == "." { String::new() } else { path }, inner)
            })
    }
    let r = match kind {
        Kind::Services => typed::<RawService>(v),
        Kind::Routes => typed::<RawRoute>(v),
        Kind::Plugins => typed::<RawPlugin>(v),
        Kind::Consumers => typed::<RawConsumer>(v),
        Kind::ConsumerGroups => typed::<RawConsumerGroup>(v),
        Kind::Vaults => typed::<RawVault>(v),
        Kind::KeyauthCredentials => typed::<crate::config::raw::RawKeyauthCredential>(v),
    };
    r.map_err(|e| AdminError::Schema(vec![e]))
}

/// Foreign keys given as `{id}`, `{name}` or a plain key become `{id}` of an existing
/// entity (`null` removes them).
fn resolve_foreign(state: &State, entity: &mut Map<String, Value>) -> Result<(), AdminError> {
    for (field, kind) in FOREIGN {
        let Some(v) = entity.get(field) else { continue };
        let key = match v {
            Value::Null => {
                entity.remove(field);
                continue;
            }
            Value::String(s) => s.clone(),
            Value::Object(o) => match ["id", "name", "username"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str))
            {
                Some(k) => k.to_string(),
                None => {
                    return Err(AdminError::Schema(vec![(
                        field.into(),
                        "expected a reference: {\"id\": …}".into(),
                    )]))
                }
            },
            _ => {
                return Err(AdminError::Schema(vec![(
                    field.into(),
                    "expected a record".into(),
                )]))
            }
        };
        let id = state
            .find(kind, &key)
            .and_then(|i| state.id(kind, i))
            .ok_or_else(|| AdminError::ForeignKey(field.into(), key.clone(), kind.name()))?;
        entity.insert(field.into(), json!({"id": id}));
    }
    Ok(())
}

/// Kong's `url` shorthand, split into protocol/host/port/path when written.
fn expand_url(entity: &mut Map<String, Value>) -> Result<(), AdminError> {
    let Some(url) = entity.remove("url") else {
        return Ok(());
    };
    let bad = || AdminError::Schema(vec![("url".into(), "missing host in url".into())]);
    let Some(text) = url.as_str() else {
        return Err(bad());
    };
    let u: http::Uri = text.parse().map_err(|_| bad())?;
    let (Some(scheme), Some(host)) = (u.scheme_str(), u.host()) else {
        return Err(bad());
    };
    let port = u
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    entity.insert("protocol".into(), json!(scheme));
    entity.insert("host".into(), json!(host));
    entity.insert("port".into(), json!(port));
    let path = u.path();
    let path = if path.is_empty() || (path == "/" && !text.ends_with('/')) {
        Value::Null
    } else {
        json!(path)
    };
    entity.insert("path".into(), path);
    Ok(())
}

/// Deep-merges `new` into `cur` (records merge, everything else replaces).
fn merge(cur: &mut Map<String, Value>, new: Map<String, Value>) {
    for (k, v) in new {
        match (cur.get_mut(&k), v) {
            (Some(Value::Object(c)), Value::Object(n)) => merge(c, n),
            (_, v) => {
                cur.insert(k, v);
            }
        }
    }
}

/// `"[REDACTED]"` sent back where the stored entity has a value keeps that value, so an
/// entity read from the API can be written back without erasing its secrets.
fn keep_redacted(new: &mut Map<String, Value>, old: &Value) {
    for (k, v) in new.iter_mut() {
        let o = old.get(k);
        match v {
            Value::String(s) if s == REDACTED => {
                if let Some(o) = o.filter(|o| !o.is_null()) {
                    *v = o.clone();
                }
            }
            Value::Object(m) => {
                if let Some(o) = o {
                    keep_redacted(m, o);
                }
            }
            Value::Array(items) => {
                for (j, item) in items.iter_mut().enumerate() {
                    if let (Value::Object(m), Some(oi)) = (item, o.and_then(|o| o.get(j))) {
                        keep_redacted(m, oi);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `POST/DELETE /consumer_groups/{g}/consumers` (GET is a read).
async fn group_consumers(
    a: &Admin,
    state: &mut State,
    m: &Method,
    g: &str,
    body: Body<'_>,
) -> Answer {
    let gi = state
        .find(Kind::ConsumerGroups, g)
        .ok_or(AdminError::NotFound)?;
    let mut members = state.members(gi);
    match *m {
        Method::DELETE => members.clear(),
        Method::POST => {
            let b = object(body)?;
            let given = names(&b, "consumer")?;
            for key in given {
                let id = state
                    .find(Kind::Consumers, &key)
                    .and_then(|i| state.id(Kind::Consumers, i))
                    .ok_or_else(|| {
                        AdminError::ForeignKey("consumer".into(), key.clone(), "consumers")
                    })?;
                if members.contains(&id) {
                    return Err(AdminError::Unique("consumer".into(), key));
                }
                members.push(id);
            }
        }
        _ => return Err(AdminError::MethodNotAllowed),
    }
    let mut candidate = state.clone();
    candidate.set_members(gi, members);
    a.control.commit(&a.gw, state, candidate, None).await?;
    if *m == Method::DELETE {
        return Ok((StatusCode::NO_CONTENT, None));
    }
    let snap = a.gw.snapshot.load_full();
    let gid = state.id(Kind::ConsumerGroups, gi).unwrap_or_default();
    let consumers: Vec<Value> = state
        .members(gi)
        .iter()
        .map(|c| view(Kind::Consumers, state, &snap, c))
        .collect();
    Ok((
        StatusCode::CREATED,
        Some(
            json!({"consumer_group": view(Kind::ConsumerGroups, state, &snap, &gid), "consumers": consumers}),
        ),
    ))
}

/// A membership body's `field`: one name or id, or a list of them.
fn names(b: &Map<String, Value>, field: &str) -> Result<Vec<String>, AdminError> {
    match b.get(field) {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => Ok(a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()),
        _ => Err(AdminError::Schema(vec![(
            field.into(),
            "required field missing".into(),
        )])),
    }
}

/// `POST /consumers/{c}/consumer_groups` with `{"group": …}`.
async fn consumer_joins(a: &Admin, state: &mut State, c: &str, body: Body<'_>) -> Answer {
    let ci = state.find(Kind::Consumers, c).ok_or(AdminError::NotFound)?;
    let cid = state.id(Kind::Consumers, ci).unwrap_or_default();
    let b = object(body)?;
    let groups = names(&b, "group")?;
    let mut candidate = state.clone();
    let mut joined = Vec::new();
    for g in groups {
        let gi = candidate
            .find(Kind::ConsumerGroups, &g)
            .ok_or_else(|| AdminError::ForeignKey("group".into(), g.clone(), "consumer_groups"))?;
        let mut members = candidate.members(gi);
        if members.contains(&cid) {
            return Err(AdminError::Unique("group".into(), g));
        }
        members.push(cid.clone());
        candidate.set_members(gi, members);
        joined.push(candidate.id(Kind::ConsumerGroups, gi).unwrap_or_default());
    }
    a.control.commit(&a.gw, state, candidate, None).await?;
    let snap = a.gw.snapshot.load_full();
    let groups: Vec<Value> = joined
        .iter()
        .map(|g| view(Kind::ConsumerGroups, state, &snap, g))
        .collect();
    Ok((
        StatusCode::CREATED,
        Some(
            json!({"consumer": view(Kind::Consumers, state, &snap, &cid), "consumer_groups": groups}),
        ),
    ))
}

/// Removes consumer `c` from group `g` (204 also when it was not a member).
async fn leave_group(a: &Admin, state: &mut State, g: &str, c: &str) -> Answer {
    let gi = state
        .find(Kind::ConsumerGroups, g)
        .ok_or(AdminError::NotFound)?;
    let ci = state.find(Kind::Consumers, c).ok_or(AdminError::NotFound)?;
    let cid = state.id(Kind::Consumers, ci).unwrap_or_default();
    let mut members = state.members(gi);
    if !members.contains(&cid) {
        return Ok((StatusCode::NO_CONTENT, None));
    }
    members.retain(|m| *m != cid);
    let mut candidate = state.clone();
    candidate.set_members(gi, members);
    a.control.commit(&a.gw, state, candidate, None).await?;
    Ok((StatusCode::NO_CONTENT, None))
}

/// `POST /config`: replaces the whole declarative config. The body is the document (JSON
/// or YAML), or `{"config": "<yaml or json text>"}`; `check_hash=1` answers 304 when the
/// document is the one running.
async fn post_config(
    a: &Admin,
    state: &mut State,
    query: &[(String, String)],
    body: &[u8],
) -> Answer {
    let text = std::str::from_utf8(body).map_err(|_| {
        AdminError::Declarative(vec![crate::config::ConfigIssue {
            path: String::new(),
            message: "expected a declarative configuration (UTF-8 YAML or JSON)".into(),
        }])
    })?;
    let text = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) if m.len() == 1 && m.get("config").is_some_and(Value::is_string) => m
            .get("config")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => text.to_string(),
    };
    if text.trim().is_empty() {
        return Err(AdminError::Declarative(vec![crate::config::ConfigIssue {
            path: String::new(),
            message: "expected a declarative configuration".into(),
        }]));
    }
    let env = |name: &str| std::env::var(name).ok();
    // Errors name the submitted entities (name, id, tags) where the document parses.
    let with_doc = |e: AdminError| match (e, serde_norway::from_str::<Value>(&text)) {
        (AdminError::Declarative(issues), Ok(doc)) => {
            AdminError::DeclarativeIn(issues, Box::new(doc))
        }
        (e, _) => e,
    };
    let candidate =
        State::from_text(&text, &env).map_err(|e| with_doc(AdminError::Declarative(e.0)))?;
    let check_hash = query
        .iter()
        .any(|(k, v)| k == "check_hash" && (v == "1" || v == "true"));
    if check_hash && candidate.hash() == a.gw.snapshot.load().hash {
        return Ok((StatusCode::NOT_MODIFIED, None));
    }
    // Compile errors name the document as flattened (nested entities moved to the top,
    // with their ids): look their entities up there.
    let flat = candidate.document();
    a.control
        .commit(&a.gw, state, candidate, None)
        .await
        .map_err(|e| match e {
            AdminError::Declarative(issues) => AdminError::DeclarativeIn(issues, Box::new(flat)),
            e => e,
        })?;
    let mut doc = state.document();
    redact_secrets(&mut doc);
    redact_vaults(&mut doc);
    Ok((StatusCode::CREATED, Some(doc)))
}

/// `POST /schemas/{entity}/validate` and `/schemas/plugins/validate`: checks the entity
/// with the whole running document, applies nothing.
async fn validate(state: &State, kind: Kind, body: Body<'_>) -> Answer {
    let mut entity = object(body)?;
    if body.form {
        coerce_form(kind, &mut entity);
    }
    check_shape(kind, &entity)?;
    resolve_foreign(state, &mut entity)?;
    if kind == Kind::Services {
        expand_url(&mut entity)?;
    }
    let id = uuid::Uuid::new_v4().to_string();
    entity.insert("id".into(), Value::String(id));
    let mut candidate = state.clone();
    let i = candidate.insert(kind, entity);
    let compiled = tokio::task::spawn_blocking(move || {
        let env = |name: &str| std::env::var(name).ok();
        candidate.compile(&env).map(|_| ())
    })
    .await
    .unwrap_or_else(|e| {
        Err(crate::config::ConfigErrors::single(
            "",
            format!("validation failed: {e}"),
        ))
    });
    match compiled {
        Ok(()) => Ok((
            StatusCode::OK,
            Some(json!({"message": "schema validation successful"})),
        )),
        Err(e) => Err(crate::admin::control::entity_errors(kind, i, e)),
    }
}

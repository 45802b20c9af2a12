//! The declarative document behind the running config, in Kong's flat form (every entity at
//! the top level with an explicit id, references by `{id}`), which Admin API writes edit.
//!
//! A write edits a copy, the copy is compiled exactly like a config file, and only a copy
//! that compiles replaces the running snapshot (and this state). The document keeps decK
//! `${{ env "DECK_…" }}` templates as written when it can (see [`State::from_text`]), so that
//! writing it back to the file never bakes a secret from the environment into it.

use serde_json::{json, Map, Value};

use crate::config::{self, env, ids, ConfigErrors};
use crate::gateway::snapshot::Snapshot;

/// The entity collections the Admin API writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Services,
    Routes,
    Plugins,
    Consumers,
    ConsumerGroups,
    Vaults,
    KeyauthCredentials,
}

impl Kind {
    /// The collection for a URL segment.
    pub fn from_segment(s: &str) -> Option<Kind> {
        Some(match s {
            "services" => Kind::Services,
            "routes" => Kind::Routes,
            "plugins" => Kind::Plugins,
            "consumers" => Kind::Consumers,
            "consumer_groups" => Kind::ConsumerGroups,
            "vaults" => Kind::Vaults,
            "key-auths" | "keyauth_credentials" => Kind::KeyauthCredentials,
            _ => return None,
        })
    }

    /// The document's (and Kong's) name for the collection.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::Routes => "routes",
            Kind::Plugins => "plugins",
            Kind::Consumers => "consumers",
            Kind::ConsumerGroups => "consumer_groups",
            Kind::Vaults => "vaults",
            Kind::KeyauthCredentials => "keyauth_credentials",
        }
    }

    /// Fields that identify an entity besides its id (Kong's endpoint key first).
    pub fn unique_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Services | Kind::Routes | Kind::ConsumerGroups => &["name"],
            Kind::Plugins => &["instance_name"],
            Kind::Consumers => &["username", "custom_id"],
            Kind::Vaults => &["prefix"],
            Kind::KeyauthCredentials => &[],
        }
    }

    /// Child collections whose foreign key names this kind, and whether deleting the
    /// parent deletes them (else it is refused while they exist).
    fn children(self) -> &'static [(Kind, &'static str, bool)] {
        match self {
            Kind::Services => &[
                (Kind::Routes, "service", false),
                (Kind::Plugins, "service", true),
            ],
            Kind::Routes => &[(Kind::Plugins, "route", true)],
            Kind::Consumers => &[
                (Kind::Plugins, "consumer", true),
                (Kind::KeyauthCredentials, "consumer", true),
            ],
            Kind::ConsumerGroups => &[(Kind::Plugins, "consumer_group", true)],
            Kind::Plugins | Kind::Vaults | Kind::KeyauthCredentials => &[],
        }
    }
}

/// Every kind, in declaration order (`Kind as usize` indexes this).
pub const KINDS: [Kind; 7] = [
    Kind::Services,
    Kind::Routes,
    Kind::Plugins,
    Kind::Consumers,
    Kind::ConsumerGroups,
    Kind::Vaults,
    Kind::KeyauthCredentials,
];

/// The flat declarative document.
#[derive(Debug, Clone)]
pub struct State {
    /// `_format_version` and the other top-level fields that are not entity collections.
    meta: Map<String, Value>,
    /// The entities, by `Kind as usize`.
    lists: [Vec<Value>; 7],
    /// The document holds decK templates and they are kept: compile substitutes them.
    templated: bool,
    /// Why the file cannot be written back (its templates could not be kept), if so.
    pub unwritable: Option<String>,
}

impl State {
    /// The state of config `text` (YAML or JSON, decK templates allowed), which must load.
    ///
    /// Templates are kept when the text parses as YAML without substituting them and
    /// substituting them value by value gives the same document as substituting the text
    /// (true unless a template writes YAML structure, e.g. with `indent`); otherwise the
    /// state holds the substituted values and is marked unwritable.
    pub fn from_text(
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<State, ConfigErrors> {
        let substituted = config::parse_value(text, lookup)?;
        let resolved_flat = flatten(&substituted)?;
        if !text.contains("${{") {
            return Ok(State::new(resolved_flat, false, None));
        }
        let kept = serde_norway::from_str::<Value>(text)
            .ok()
            .filter(|raw| substitute_values(raw, lookup).ok().as_ref() == Some(&substituted));
        match kept.map(|raw| flatten(&raw).map(|f| (raw, f))) {
            Some(Ok((_, mut flat))) => {
                copy_ids(&resolved_flat, &mut flat);
                Ok(State::new(flat, true, None))
            }
            _ => Ok(State::new(
                resolved_flat,
                false,
                Some("its decK templates (${{ … }}) build YAML structure, which tollgate cannot keep when rewriting the file".into()),
            )),
        }
    }

    /// No entities at all.
    pub fn empty() -> State {
        State::new(Map::new(), false, None)
    }

    fn new(mut doc: Map<String, Value>, templated: bool, unwritable: Option<String>) -> State {
        let lists = KINDS.map(|k| match doc.remove(k.name()) {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        });
        State {
            meta: doc,
            lists,
            templated,
            unwritable,
        }
    }

    /// The document as stored (templates unresolved, secrets in clear): for the file.
    pub fn document(&self) -> Value {
        let mut doc = Map::new();
        for (k, v) in &self.meta {
            if k.starts_with('_') {
                doc.insert(k.clone(), v.clone());
            }
        }
        for kind in KINDS {
            let list = &self.lists[kind as usize];
            if !list.is_empty() {
                doc.insert(kind.name().into(), Value::Array(list.clone()));
            }
        }
        for (k, v) in &self.meta {
            if !k.starts_with('_') {
                doc.insert(k.clone(), v.clone());
            }
        }
        Value::Object(doc)
    }

    /// `configuration_hash`: 32 hex digits of the stored document (ids included, so the
    /// same file loaded twice has the same hash).
    pub fn hash(&self) -> String {
        // Kong's hash of "no configuration": the Ingress Controller pushes its configuration
        // again to a gateway that reports it (after a restart, say).
        let empty =
            self.lists.iter().all(Vec::is_empty) && self.meta.keys().all(|k| k.starts_with('_'));
        if empty {
            return "0".repeat(32);
        }
        let text = serde_json::to_string(&self.document()).unwrap_or_default();
        let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        d.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Compiles the document into a snapshot (blocking: vaults and databases may be read).
    pub fn compile(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Snapshot, ConfigErrors> {
        let doc = self.document();
        let doc = if self.templated {
            substitute_values(&doc, lookup).map_err(|e| ConfigErrors::single("", e))?
        } else {
            doc
        };
        let raw = config::typed_document(doc)?;
        let mut snap = Snapshot::compile(raw, lookup)?;
        snap.hash = self.hash();
        Ok(snap)
    }

    /// A top-level collection the Admin API does not write (`upstreams`, `certificates`, …),
    /// as written in the document.
    pub fn other(&self, name: &str) -> &[Value] {
        match self.meta.get(name) {
            Some(Value::Array(a)) => a,
            _ => &[],
        }
    }

    /// The entities of `kind`.
    pub fn list(&self, kind: Kind) -> &[Value] {
        &self.lists[kind as usize]
    }

    fn list_mut(&mut self, kind: Kind) -> &mut Vec<Value> {
        &mut self.lists[kind as usize]
    }

    /// The position of the entity of `kind` whose id or endpoint key is `key`.
    pub fn find(&self, kind: Kind, key: &str) -> Option<usize> {
        let list = self.list(kind);
        if kind == Kind::KeyauthCredentials {
            // By id, or by the key itself (stored as its digest).
            let hash =
                crate::config::entities::key_hash_text(&crate::config::entities::key_digest(key));
            return list.iter().position(|e| {
                e.get("id").and_then(Value::as_str) == Some(key)
                    || e.get("key_hash").and_then(Value::as_str) == Some(hash.as_str())
                    || e.get("key").and_then(Value::as_str) == Some(key)
            });
        }
        list.iter()
            .position(|e| e.get("id").and_then(Value::as_str) == Some(key))
            .or_else(|| {
                kind.unique_fields().iter().find_map(|f| {
                    list.iter()
                        .position(|e| e.get(*f).and_then(Value::as_str) == Some(key))
                })
            })
    }

    /// The entity at `i`.
    pub fn get(&self, kind: Kind, i: usize) -> Option<&Value> {
        self.list(kind).get(i)
    }

    /// The id of the entity of `kind` at `i`.
    pub fn id(&self, kind: Kind, i: usize) -> Option<String> {
        self.get(kind, i)
            .and_then(|e| e.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// Another entity of `kind` (not at `except`) already using one of `entity`'s unique
    /// values: the field and value.
    pub fn unique_clash(
        &self,
        kind: Kind,
        entity: &Map<String, Value>,
        except: Option<usize>,
    ) -> Option<(String, String)> {
        for f in kind.unique_fields() {
            let Some(v) = entity.get(*f).and_then(Value::as_str) else {
                continue;
            };
            let clash =
                self.list(kind).iter().enumerate().any(|(i, e)| {
                    Some(i) != except && e.get(*f).and_then(Value::as_str) == Some(v)
                });
            if clash {
                return Some(((*f).to_string(), v.to_string()));
            }
        }
        None
    }

    /// Adds `entity` at the end; returns its position.
    pub fn insert(&mut self, kind: Kind, entity: Map<String, Value>) -> usize {
        let list = self.list_mut(kind);
        list.push(Value::Object(entity));
        list.len() - 1
    }

    /// Replaces the entity at `i`.
    pub fn replace(&mut self, kind: Kind, i: usize, entity: Map<String, Value>) {
        if let Some(slot) = self.list_mut(kind).get_mut(i) {
            *slot = Value::Object(entity);
        }
    }

    /// The first collection with entities referencing the entity at `i` that may not be
    /// deleted with it.
    pub fn restricted_by(&self, kind: Kind, i: usize) -> Option<&'static str> {
        let id = self.id(kind, i)?;
        kind.children()
            .iter()
            .filter(|(_, _, cascade)| !cascade)
            .find(|(child, field, _)| {
                self.list(*child)
                    .iter()
                    .any(|e| ref_id(e.get(*field)) == Some(id.as_str()))
            })
            .map(|(child, _, _)| child.name())
    }

    /// Deletes the entity at `i`, the entities that cascade with it, and its group
    /// memberships.
    pub fn remove(&mut self, kind: Kind, i: usize) {
        let Some(id) = self.id(kind, i) else {
            return;
        };
        self.list_mut(kind).remove(i);
        for (child, field, _) in kind.children() {
            self.list_mut(*child)
                .retain(|e| ref_id(e.get(*field)) != Some(id.as_str()));
        }
        if kind == Kind::Consumers {
            for g in self.list_mut(Kind::ConsumerGroups) {
                if let Some(Value::Array(members)) = g.get_mut("consumers") {
                    members.retain(|m| ref_id(Some(m)) != Some(id.as_str()));
                }
            }
        }
    }

    /// The consumers of group `g` (their ids).
    pub fn members(&self, g: usize) -> Vec<String> {
        self.get(Kind::ConsumerGroups, g)
            .and_then(|e| e.get("consumers"))
            .and_then(Value::as_array)
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| ref_id(Some(m)).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets the consumers of group `g`.
    pub fn set_members(&mut self, g: usize, ids: Vec<String>) {
        if let Some(Value::Object(e)) = self.list_mut(Kind::ConsumerGroups).get_mut(g) {
            if ids.is_empty() {
                e.remove("consumers");
            } else {
                let refs = ids.into_iter().map(|id| json!({"id": id})).collect();
                e.insert("consumers".into(), Value::Array(refs));
            }
        }
    }
}

/// The id a reference names: `{id: …}` or a plain string.
pub fn ref_id(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::String(s) => Some(s),
        Value::Object(m) => m.get("id").and_then(Value::as_str),
        _ => None,
    }
}

/// Substitutes decK templates inside each string of `v`. A string that is one whole action
/// ending in `toInt`/`toFloat`/`toBool` becomes a number or boolean, as the same template
/// in a YAML text would.
pub fn substitute_values(
    v: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) if s.contains("${{") => {
            let out = env::substitute(s, lookup).map_err(|e| e.to_string())?;
            let t = s.trim();
            let whole = t.starts_with("${{") && t.ends_with("}}") && t.matches("${{").count() == 1;
            let typed = whole && ["toInt", "toFloat", "toBool"].iter().any(|f| t.contains(f));
            if typed {
                serde_norway::from_str::<Value>(&out)
                    .ok()
                    .filter(|v| v.is_number() || v.is_boolean())
                    .unwrap_or(Value::String(out))
            } else {
                Value::String(out)
            }
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| substitute_values(x, lookup))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), substitute_values(x, lookup)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Copies the ids of `from` (the substituted document, whose names the compiler hashed)
/// into `to` (the same document with templates kept), entity by entity.
fn copy_ids(from: &Map<String, Value>, to: &mut Map<String, Value>) {
    for kind in KINDS {
        let (Some(Value::Array(src)), Some(Value::Array(dst))) =
            (from.get(kind.name()), to.get_mut(kind.name()))
        else {
            continue;
        };
        for (s, d) in src.iter().zip(dst.iter_mut()) {
            if let (Some(id), Value::Object(d)) = (s.get("id"), d) {
                d.insert("id".into(), id.clone());
            }
        }
    }
}

/// The flat form of a declarative document: nested routes and plugins moved to the top
/// level with `{id}` references, decK's `consumers[].groups` moved to the groups'
/// `consumers`, and every entity given the id the compiler would give it.
pub fn flatten(doc: &Value) -> Result<Map<String, Value>, ConfigErrors> {
    let Some(top) = doc.as_object() else {
        return Err(ConfigErrors::single(
            "",
            "expected a declarative configuration (a mapping with _format_version)",
        ));
    };
    let mut f = Flat::default();
    for (i, s) in array(top, "services").iter().enumerate() {
        let path = format!("services[{i}]");
        let Some(mut s) = s.as_object().cloned() else {
            continue;
        };
        let routes = take_array(&mut s, "routes");
        let plugins = take_array(&mut s, "plugins");
        let sid = id_of(&s, "services", &["name"], &path);
        s.insert("id".into(), Value::String(sid.clone()));
        f.services.push(s);
        for (j, r) in routes.into_iter().enumerate() {
            if let Value::Object(mut r) = r {
                r.insert("service".into(), json!({"id": sid}));
                f.route(r, &format!("{path}.routes[{j}]"));
            }
        }
        for p in plugins {
            if let Value::Object(mut p) = p {
                p.insert("service".into(), json!({"id": sid}));
                f.plugins.push(p);
            }
        }
    }
    for (i, r) in array(top, "routes").iter().enumerate() {
        if let Some(mut r) = r.as_object().cloned() {
            if let Some(key) = key_of(r.get("service")) {
                let id = f
                    .services
                    .iter()
                    .find(|s| {
                        s.get("id").and_then(Value::as_str) == Some(&key)
                            || s.get("name").and_then(Value::as_str) == Some(&key)
                    })
                    .and_then(|s| s.get("id").cloned());
                if let Some(id) = id {
                    r.insert("service".into(), json!({"id": id}));
                }
            }
            f.route(r, &format!("routes[{i}]"));
        }
    }
    let mut memberships: Vec<(String, String)> = Vec::new();
    for (i, c) in array(top, "consumers").iter().enumerate() {
        let path = format!("consumers[{i}]");
        let Some(mut c) = c.as_object().cloned() else {
            continue;
        };
        let plugins = take_array(&mut c, "plugins");
        let groups = take_array(&mut c, "groups");
        let creds = take_array(&mut c, "keyauth_credentials");
        let cid = id_of(&c, "consumers", &["username", "custom_id"], &path);
        c.insert("id".into(), Value::String(cid.clone()));
        for k in creds {
            if let Value::Object(mut k) = k {
                k.insert("consumer".into(), json!({"id": cid}));
                f.creds.push(k);
            }
        }
        for g in groups {
            if let Some(k) = key_of(Some(&g)) {
                memberships.push((k, cid.clone()));
            }
        }
        for p in plugins {
            if let Value::Object(mut p) = p {
                p.insert("consumer".into(), json!({"id": cid}));
                f.plugins.push(p);
            }
        }
        f.consumers.push(c);
    }
    for (i, g) in array(top, "consumer_groups").iter().enumerate() {
        let path = format!("consumer_groups[{i}]");
        let Some(mut g) = g.as_object().cloned() else {
            continue;
        };
        let plugins = take_array(&mut g, "plugins");
        let gid = id_of(&g, "consumer_groups", &["name"], &path);
        g.insert("id".into(), Value::String(gid.clone()));
        for p in plugins {
            if let Value::Object(mut p) = p {
                p.insert("consumer_group".into(), json!({"id": gid}));
                f.plugins.push(p);
            }
        }
        f.groups.push(g);
    }
    for p in array(top, "plugins") {
        if let Some(p) = p.as_object() {
            f.plugins.push(p.clone());
        }
    }
    // Group memberships by consumer id (the groups' own lists may use names).
    for g in &mut f.groups {
        let gid = g.get("id").cloned().unwrap_or(Value::Null);
        let gname = g.get("name").cloned().unwrap_or(Value::Null);
        let mut ids: Vec<String> = Vec::new();
        if let Some(Value::Array(ms)) = g.get("consumers") {
            for m in ms {
                if let Some(k) = key_of(Some(m)) {
                    if let Some(id) = f.consumers.iter().find_map(|c| {
                        let hit = ["id", "username", "custom_id"]
                            .iter()
                            .any(|k2| c.get(*k2).and_then(Value::as_str) == Some(&k));
                        hit.then(|| c.get("id").and_then(Value::as_str).map(str::to_string))
                            .flatten()
                    }) {
                        ids.push(id);
                    }
                }
            }
        }
        for (k, cid) in &memberships {
            if Some(k.as_str()) == gid.as_str() || Some(k.as_str()) == gname.as_str() {
                ids.push(cid.clone());
            }
        }
        ids.dedup();
        if ids.is_empty() {
            g.remove("consumers");
        } else {
            let refs = ids.into_iter().map(|id| json!({"id": id})).collect();
            g.insert("consumers".into(), Value::Array(refs));
        }
    }
    // Plugins: references by id, and the id the compiler derives from their scope.
    let find = |list: &[Map<String, Value>], key: &str, fields: &[&str]| -> Option<String> {
        list.iter()
            .find(|e| {
                e.get("id").and_then(Value::as_str) == Some(key)
                    || fields
                        .iter()
                        .any(|f| e.get(*f).and_then(Value::as_str) == Some(key))
            })
            .and_then(|e| e.get("id").and_then(Value::as_str).map(str::to_string))
    };
    for p in &mut f.plugins {
        let sid = key_of(p.get("service")).map(|k| find(&f.services, &k, &["name"]).unwrap_or(k));
        let rid = key_of(p.get("route")).map(|k| find(&f.routes, &k, &["name"]).unwrap_or(k));
        let consumer_key = key_of(p.get("consumer"));
        if !p.get("id").is_some_and(Value::is_string) {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            let id = ids::plugin_id(
                name,
                rid.as_deref().unwrap_or(""),
                sid.as_deref().unwrap_or(""),
                consumer_key.as_deref().unwrap_or(""),
            );
            p.insert("id".into(), Value::String(id));
        }
        if let Some(s) = sid {
            p.insert("service".into(), json!({"id": s}));
        }
        if let Some(r) = rid {
            p.insert("route".into(), json!({"id": r}));
        }
        if let Some(c) = consumer_key {
            let id = find(&f.consumers, &c, &["username", "custom_id"]).unwrap_or(c);
            p.insert("consumer".into(), json!({"id": id}));
        }
        if let Some(g) = key_of(p.get("consumer_group")) {
            let id = find(&f.groups, &g, &["name"]).unwrap_or(g);
            p.insert("consumer_group".into(), json!({"id": id}));
        }
    }
    for k in array(top, "keyauth_credentials") {
        if let Some(mut k) = k.as_object().cloned() {
            if let Some(c) = key_of(k.get("consumer")) {
                let id = find(&f.consumers, &c, &["username", "custom_id"]).unwrap_or(c);
                k.insert("consumer".into(), json!({"id": id}));
            }
            f.creds.push(k);
        }
    }
    // Keys are kept as digests from here on (a decK template is left as written).
    for k in &mut f.creds {
        let plain = k.get("key").and_then(Value::as_str).map(str::to_string);
        if let Some(key) = plain.filter(|p| !p.contains("${{")) {
            let d = crate::config::entities::key_digest(&key);
            k.remove("key");
            k.insert(
                "key_hash".into(),
                Value::String(crate::config::entities::key_hash_text(&d)),
            );
        }
        if !k.get("id").is_some_and(Value::is_string) {
            if let Some(h) = k
                .get("key_hash")
                .and_then(Value::as_str)
                .map(str::to_string)
            {
                k.insert(
                    "id".into(),
                    Value::String(ids::entity_id("keyauth_credentials", &h)),
                );
            }
        }
    }
    let mut vaults = Vec::new();
    for (i, v) in array(top, "vaults").iter().enumerate() {
        if let Some(mut v) = v.as_object().cloned() {
            let id = id_of(&v, "vaults", &["prefix"], &format!("vaults[{i}]"));
            v.insert("id".into(), Value::String(id));
            vaults.push(v);
        }
    }
    let mut out = Map::new();
    for (k, v) in top {
        if k.starts_with('_') {
            out.insert(k.clone(), v.clone());
        }
    }
    out.entry("_format_version")
        .or_insert_with(|| Value::String("3.0".into()));
    let objects =
        |v: Vec<Map<String, Value>>| Value::Array(v.into_iter().map(Value::Object).collect());
    for (name, list) in [
        ("services", f.services),
        ("routes", f.routes),
        ("consumers", f.consumers),
        ("consumer_groups", f.groups),
        ("plugins", f.plugins),
        ("vaults", vaults),
        ("keyauth_credentials", f.creds),
    ] {
        if !list.is_empty() {
            out.insert(name.into(), objects(list));
        }
    }
    // Entities tollgate refuses are carried over so the compiler still names them.
    for (k, v) in top {
        if !k.starts_with('_') && !out.contains_key(k) && !KINDS.iter().any(|kd| kd.name() == k) {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Flat {
    services: Vec<Map<String, Value>>,
    routes: Vec<Map<String, Value>>,
    consumers: Vec<Map<String, Value>>,
    groups: Vec<Map<String, Value>>,
    plugins: Vec<Map<String, Value>>,
    creds: Vec<Map<String, Value>>,
}

impl Flat {
    fn route(&mut self, mut r: Map<String, Value>, path: &str) {
        let plugins = take_array(&mut r, "plugins");
        let rid = id_of(&r, "routes", &["name"], path);
        r.insert("id".into(), Value::String(rid.clone()));
        self.routes.push(r);
        for p in plugins {
            if let Value::Object(mut p) = p {
                p.insert("route".into(), json!({"id": rid}));
                self.plugins.push(p);
            }
        }
    }
}

fn array<'a>(m: &'a Map<String, Value>, k: &str) -> &'a [Value] {
    m.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn take_array(m: &mut Map<String, Value>, k: &str) -> Vec<Value> {
    match m.remove(k) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    }
}

/// The id the compiler gives an entity: its own, else derived from its first named key,
/// else from its position in the document.
fn id_of(e: &Map<String, Value>, entity: &str, keys: &[&str], path: &str) -> String {
    if let Some(id) = e.get("id").and_then(Value::as_str) {
        return id.to_string();
    }
    keys.iter()
        .find_map(|k| e.get(*k).and_then(Value::as_str))
        .map(|k| ids::entity_id(entity, k))
        .unwrap_or_else(|| ids::positional_id(entity, path))
}

/// The key a reference uses: a string, or `{id|name|username}`.
fn key_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => ["id", "name", "username"]
            .iter()
            .find_map(|k| m.get(*k).and_then(Value::as_str))
            .map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const NESTED: &str = r#"
_format_version: "3.0"
services:
  - name: s
    host: a.invalid
    routes:
      - paths: ["/unnamed"]
        plugins:
          - name: file-log
            config: {path: /tmp/x.log}
      - name: named
        paths: ["/named"]
    plugins:
      - name: request-transformer
routes:
  - name: top
    service: s
    paths: ["/top"]
  - name: top2
    service: {name: s}
    paths: ["/top2"]
consumers:
  - username: alice
    plugins:
      - name: file-log
        config: {path: /tmp/y.log}
    groups: [{name: gold}]
  - custom_id: c-2
consumer_groups:
  - name: gold
    consumers: [{username: c-2}]
plugins:
  - name: file-log
    route: top
    config: {path: /tmp/z.log}
  - name: request-transformer
    consumer: alice
"#;

    fn ids(s: &Snapshot) -> Vec<String> {
        let mut v: Vec<String> = s
            .services
            .iter()
            .map(|x| x.id.clone())
            .chain(s.routes.iter().map(|x| x.id.clone()))
            .chain(s.plugins.iter().map(|x| format!("{}:{}", x.name, x.id)))
            .chain(s.consumers.iter().map(|x| x.id.clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_flat_form_compiles_to_the_same_entities_and_ids() {
        let env = |_: &str| None;
        let original = crate::gateway::load_str(NESTED).unwrap();
        let state = State::from_text(NESTED, &env).unwrap();
        let flat = state.compile(&env).unwrap();
        assert_eq!(ids(&original), ids(&flat));
        assert_eq!(flat.routes.len(), 4);
        assert_eq!(state.list(Kind::Plugins).len(), 5);
        // Memberships from both sides, by consumer id.
        let gold = state.find(Kind::ConsumerGroups, "gold").unwrap();
        let members = state.members(gold);
        assert_eq!(members.len(), 2);
        for m in &members {
            assert!(state.find(Kind::Consumers, m).is_some());
        }
        // The flat document loads on its own too (what the file will hold).
        let text = serde_norway::to_string(&state.document()).unwrap();
        let again = State::from_text(&text, &env).unwrap();
        assert_eq!(again.hash(), state.hash());
        assert_eq!(
            ids(&crate::gateway::load_str(&text).unwrap()),
            ids(&original)
        );
    }

    #[test]
    fn templates_are_kept_unless_they_build_structure() {
        let env = |n: &str| (n == "DECK_PORT").then(|| "8080".to_string());
        let text = "_format_version: \"3.0\"\nservices:\n  - name: s\n    host: h.invalid\n    port: ${{ env \"DECK_PORT\" | toInt }}\n";
        let state = State::from_text(text, &env).unwrap();
        assert!(state.unwritable.is_none());
        let doc = state.document().to_string();
        assert!(doc.contains("DECK_PORT"), "{doc}");
        assert_eq!(state.compile(&env).unwrap().services[0].port, 8080);
        let env2 = |n: &str| (n == "DECK_BLOCK").then(|| "    port: 81".to_string());
        let text = "_format_version: \"3.0\"\nservices:\n  - name: s\n    host: h.invalid\n${{ env \"DECK_BLOCK\" }}\n";
        let state = State::from_text(text, &env2).unwrap();
        assert!(state.unwritable.is_some());
        assert_eq!(state.compile(&env2).unwrap().services[0].port, 81);
    }

    #[test]
    fn deletes_cascade_or_are_refused() {
        let env = |_: &str| None;
        let mut state = State::from_text(NESTED, &env).unwrap();
        let s = state.find(Kind::Services, "s").unwrap();
        assert_eq!(state.restricted_by(Kind::Services, s), Some("routes"));
        let top = state.find(Kind::Routes, "top").unwrap();
        state.remove(Kind::Routes, top);
        assert_eq!(
            state.list(Kind::Plugins).len(),
            4,
            "the route's plugin went with it"
        );
        let alice = state.find(Kind::Consumers, "alice").unwrap();
        state.remove(Kind::Consumers, alice);
        assert_eq!(state.list(Kind::Plugins).len(), 2);
        let gold = state.find(Kind::ConsumerGroups, "gold").unwrap();
        assert_eq!(state.members(gold).len(), 1);
        assert!(state.compile(&env).is_ok());
    }
}

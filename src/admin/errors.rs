//! Kong's Admin API error bodies (`{"code", "name", "message", "fields"}`) and statuses.

use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::config::ConfigIssue;

/// Why an Admin API request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("Cannot parse JSON body")]
    BadJson,
    #[error("Not found")]
    NotFound,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("Unauthorized")]
    Unauthorized,
    #[error("request body too large (the limit is {0} bytes)")]
    TooLarge(usize),
    /// The client stalled mid-body past `--client-body-timeout`.
    #[error("Request timeout")]
    BodyTimeout,
    /// Field path (dotted, with `[i]`) → message.
    #[error("schema violation")]
    Schema(Vec<(String, String)>),
    #[error("primary key violation on key '{{id=\"{0}\"}}'")]
    PrimaryKey(String),
    /// (field, the key given, the collection it should name).
    #[error("the foreign key '{{id=\"{1}\"}}' does not reference an existing '{2}' entity.")]
    ForeignKey(String, String, &'static str),
    /// (parent collection, child collection).
    #[error("an existing '{1}' entity references this '{0}' entity")]
    Restricted(&'static str, &'static str),
    /// (field, value).
    #[error("UNIQUE violation detected on '{{{0}=\"{1}\"}}'")]
    Unique(String, String),
    /// A plugin whose name and scope another instance has (the whole message).
    #[error("{0}")]
    UniqueScope(String),
    /// `POST /config` with a document that does not load.
    #[error("declarative config is invalid")]
    Declarative(Vec<ConfigIssue>),
    /// The same, with the submitted document, whose entities the flattened errors name
    /// (their name, id and tags: the Kong Ingress Controller maps them back to Kubernetes
    /// objects by their `k8s-*` tags).
    #[error("declarative config is invalid")]
    DeclarativeIn(Vec<ConfigIssue>, Box<Value>),
    #[error("{0}")]
    Unsupported(String),
    /// The change could not be saved (nothing was applied).
    #[error("{0}")]
    Persist(String),
    /// The cluster's configuration store is down: nothing can be written (503).
    #[error("the change was not applied: the configuration store is unavailable ({0}); this node keeps serving its last configuration, retry when the store is back")]
    StoreDown(String),
    /// Another node changed the configuration while this change was made; it is made
    /// again over the newer configuration (never reaches a client unless that keeps
    /// happening).
    #[error("the configuration kept changing on other nodes while this change was made; retry it")]
    Conflict,
}

impl AdminError {
    /// The status and Kong-shaped body.
    pub fn response(&self) -> (StatusCode, Value) {
        let msg = self.to_string();
        match self {
            AdminError::BadJson => (StatusCode::BAD_REQUEST, json!({"message": msg})),
            AdminError::NotFound => (StatusCode::NOT_FOUND, json!({"message": msg})),
            AdminError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, json!({"message": msg}))
            }
            AdminError::Unauthorized => (StatusCode::UNAUTHORIZED, json!({"message": msg})),
            AdminError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, json!({"message": msg})),
            AdminError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, json!({"message": msg})),
            AdminError::Schema(errors) => {
                let parts: Vec<String> = errors.iter().map(|(f, m)| format!("{f}: {m}")).collect();
                let message = if parts.len() == 1 {
                    format!("schema violation ({})", parts[0])
                } else {
                    format!("{} schema violations ({})", parts.len(), parts.join("; "))
                };
                (
                    StatusCode::BAD_REQUEST,
                    json!({"code": 2, "name": "schema violation", "message": message,
                           "fields": fields(errors)}),
                )
            }
            AdminError::PrimaryKey(id) => (
                StatusCode::BAD_REQUEST,
                json!({"code": 3, "name": "primary key violation", "message": msg,
                       "fields": {"id": id}}),
            ),
            AdminError::ForeignKey(field, key, _) => (
                StatusCode::BAD_REQUEST,
                json!({"code": 4, "name": "foreign key violation", "message": msg,
                       "fields": {field.as_str(): {"id": key}}}),
            ),
            AdminError::Restricted(_, child) => (
                StatusCode::BAD_REQUEST,
                json!({"code": 4, "name": "foreign key violation", "message": msg,
                       "fields": {"@referenced_by": child}}),
            ),
            AdminError::Unique(field, value) => (
                StatusCode::CONFLICT,
                json!({"code": 5, "name": "unique constraint violation", "message": msg,
                       "fields": {field.as_str(): value}}),
            ),
            AdminError::UniqueScope(_) => (
                StatusCode::CONFLICT,
                json!({"code": 5, "name": "unique constraint violation", "message": msg}),
            ),
            AdminError::Declarative(issues) => declarative(issues, None),
            AdminError::DeclarativeIn(issues, doc) => declarative(issues, Some(doc)),
            AdminError::Unsupported(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"code": 12, "name": "operation unsupported", "message": msg}),
            ),
            AdminError::Persist(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"code": 8, "name": "database error", "message": msg}),
            ),
            AdminError::StoreDown(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"code": 8, "name": "database error", "message": msg}),
            ),
            AdminError::Conflict => (
                StatusCode::CONFLICT,
                json!({"code": 8, "name": "database error", "message": msg}),
            ),
        }
    }
}

/// Kong's answer to a declarative document that does not load: `fields` nested by path,
/// and `flattened_errors`, one per entity with its errors.
fn declarative(issues: &[ConfigIssue], doc: Option<&Value>) -> (StatusCode, Value) {
    let pairs: Vec<(String, String)> = issues
        .iter()
        .map(|i| (i.path.clone(), i.message.clone()))
        .collect();
    let flat: Vec<String> = issues.iter().map(ToString::to_string).collect();
    (
        StatusCode::BAD_REQUEST,
        json!({"code": 14, "name": "invalid declarative configuration",
               "message": format!("declarative config is invalid: {}", flat.join("; ")),
               "fields": fields(&pairs), "flattened_errors": flattened(issues, doc)}),
    )
}

/// The entity type of a collection of the declarative format.
fn entity_type(collection: &str) -> Option<&'static str> {
    Some(match collection {
        "services" => "service",
        "routes" => "route",
        "plugins" => "plugin",
        "consumers" => "consumer",
        "consumer_groups" => "consumer_group",
        "vaults" => "vault",
        "keyauth_credentials" => "keyauth_credential",
        "upstreams" => "upstream",
        "targets" => "target",
        "certificates" => "certificate",
        "ca_certificates" => "ca_certificate",
        "snis" => "sni",
        "acls" => "acl",
        "basicauth_credentials" => "basicauth_credential",
        _ => return None,
    })
}

/// Kong's `flattened_errors`: the issues grouped by the entity they are about (the deepest
/// `collection[i]` of the path), each with the entity's name, id and tags from `doc`, and
/// its errors by field (`type: field`) or about the entity itself (`type: entity`).
fn flattened(issues: &[ConfigIssue], doc: Option<&Value>) -> Value {
    let mut out: Vec<(String, Value)> = Vec::new();
    for issue in issues {
        let segments: Vec<&str> = issue.path.split('.').filter(|s| !s.is_empty()).collect();
        // The deepest segment naming an entity: `routes[1]`.
        let at = segments.iter().rposition(|s| {
            s.split_once('[')
                .is_some_and(|(c, _)| entity_type(c).is_some())
        });
        let (entity_path, field, kind) = match at {
            Some(i) => (segments[..=i].join("."), segments[i + 1..].join("."), {
                let c = segments[i].split_once('[').map_or("", |(c, _)| c);
                entity_type(c).unwrap_or_default()
            }),
            None => (
                segments.first().copied().unwrap_or_default().to_string(),
                String::new(),
                segments
                    .first()
                    .and_then(|c| entity_type(c))
                    .unwrap_or_default(),
            ),
        };
        let error = if field.is_empty() {
            json!({"type": "entity", "message": issue.message})
        } else {
            json!({"type": "field", "field": field, "message": issue.message})
        };
        match out.iter_mut().find(|(p, _)| *p == entity_path) {
            Some((_, e)) => {
                if let Some(errors) = e["errors"].as_array_mut() {
                    errors.push(error);
                }
            }
            None => {
                let entity = doc.and_then(|d| lookup(d, &entity_path));
                let get = |k: &str| entity.and_then(|e| e.get(k)).cloned();
                let name = get("name")
                    .or_else(|| get("username"))
                    .unwrap_or(Value::Null);
                out.push((
                    entity_path.clone(),
                    json!({"entity_type": kind, "entity_name": name,
                           "entity_id": get("id").unwrap_or(Value::Null),
                           "entity_tags": get("tags").unwrap_or(Value::Null),
                           "errors": [error]}),
                ));
            }
        }
    }
    Value::Array(out.into_iter().map(|(_, e)| e).collect())
}

/// The value at a document path such as `services[0].routes[1]`.
fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = doc;
    for seg in path.split('.') {
        let (key, index) = match seg.split_once('[') {
            Some((k, rest)) => (k, rest.strip_suffix(']')?.parse::<usize>().ok()),
            None => (seg, None),
        };
        node = node.get(key)?;
        if let Some(i) = index {
            node = node.get(i)?;
        }
    }
    Some(node)
}

/// Kong's nested `fields` object from dotted paths (`config.targets[0].model.name`); an
/// empty path is an entity-level error (`@entity`).
pub fn fields(errors: &[(String, String)]) -> Value {
    let mut root = Value::Object(Map::new());
    for (path, message) in errors {
        if path.is_empty() {
            let entity = root
                .as_object_mut()
                .map(|m| m.entry("@entity").or_insert_with(|| json!([])));
            if let Some(Value::Array(a)) = entity {
                a.push(Value::String(message.clone()));
            }
            continue;
        }
        let mut node = &mut root;
        let segments = segments(path);
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            node = match seg {
                Seg::Key(k) => {
                    if !node.is_object() {
                        *node = Value::Object(Map::new());
                    }
                    let Value::Object(m) = node else { break };
                    let slot = m.entry(k.clone()).or_insert(Value::Null);
                    if last {
                        *slot = Value::String(message.clone());
                    }
                    slot
                }
                Seg::Index(n) => {
                    if !node.is_array() {
                        *node = Value::Array(Vec::new());
                    }
                    let Value::Array(a) = node else { break };
                    if a.len() <= *n {
                        a.resize(*n + 1, Value::Null);
                    }
                    if last {
                        a[*n] = Value::String(message.clone());
                    }
                    &mut a[*n]
                }
            };
        }
    }
    root
}

enum Seg {
    Key(String),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(b) = rest.find('[') {
            if b > 0 {
                out.push(Seg::Key(rest[..b].to_string()));
            }
            rest = &rest[b..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(e) = stripped.find(']') else { break };
                match stripped[..e].parse() {
                    Ok(n) => out.push(Seg::Index(n)),
                    Err(_) => out.push(Seg::Key(stripped[..e].to_string())),
                }
                rest = &stripped[e + 1..];
            }
        } else if !rest.is_empty() {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn nested_fields_and_messages() {
        let e = AdminError::Schema(vec![
            (
                "config.targets[1].model.name".into(),
                "required field missing".into(),
            ),
            ("host".into(), "required field missing".into()),
        ]);
        let (status, body) = e.response();
        assert_eq!(status, 400);
        assert_eq!(body["code"], 2);
        assert_eq!(
            body["fields"]["config"]["targets"][1]["model"]["name"],
            "required field missing"
        );
        assert_eq!(body["fields"]["targets"], Value::Null);
        assert_eq!(body["fields"]["host"], "required field missing");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .starts_with("2 schema violations (config.targets[1].model.name: required"));
        let (status, body) = AdminError::Unique("name".into(), "s".into()).response();
        assert_eq!(status, 409);
        assert_eq!(
            body["message"],
            "UNIQUE violation detected on '{name=\"s\"}'"
        );
        let (_, body) = AdminError::Restricted("services", "routes").response();
        assert_eq!(
            body["message"],
            "an existing 'routes' entity references this 'services' entity"
        );
        assert_eq!(body["fields"]["@referenced_by"], "routes");
    }
}

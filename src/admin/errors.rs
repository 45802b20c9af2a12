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
            AdminError::Declarative(issues) => {
                let pairs: Vec<(String, String)> = issues
                    .iter()
                    .map(|i| (i.path.clone(), i.message.clone()))
                    .collect();
                let flat: Vec<String> = issues.iter().map(ToString::to_string).collect();
                (
                    StatusCode::BAD_REQUEST,
                    json!({"code": 14, "name": "invalid declarative configuration",
                           "message": format!("declarative config is invalid: {}", flat.join("; ")),
                           "fields": fields(&pairs), "flattened_errors": flat}),
                )
            }
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

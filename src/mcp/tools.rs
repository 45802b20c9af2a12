//! REST endpoints described as MCP tools (`ai-mcp-proxy`'s `tools[]`, Kong's fields): each
//! becomes a tool whose input schema takes its OpenAPI parameters as `{in}_{name}`
//! (`query_q`, `path_petId`, `header_X-Trace`, `cookie_session`) and its request body as
//! `body`, and a call's arguments become the HTTP request to send (path placeholders
//! filled and encoded, query, headers, cookies, a JSON or form body).

use std::collections::BTreeMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::acl::Acl;

type FieldErrors = Vec<(String, String)>;

/// `tools[].method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
pub enum ToolMethod {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "PATCH")]
    Patch,
    #[serde(rename = "DELETE")]
    Delete,
}

impl ToolMethod {
    /// The HTTP method.
    pub fn http(self) -> http::Method {
        match self {
            ToolMethod::Get => http::Method::GET,
            ToolMethod::Post => http::Method::POST,
            ToolMethod::Put => http::Method::PUT,
            ToolMethod::Patch => http::Method::PATCH,
            ToolMethod::Delete => http::Method::DELETE,
        }
    }
}

/// `tools[].annotations` (MCP's tool hints, snake_case in Kong's config).
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Annotations {
    pub title: Option<String>,
    pub read_only_hint: Option<bool>,
    pub destructive_hint: Option<bool>,
    pub idempotent_hint: Option<bool>,
    pub open_world_hint: Option<bool>,
}

/// One `tools[]` entry, Kong's field names.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// The tool's name (in passthrough mode: the upstream tool an ACL applies to).
    pub name: Option<String>,
    pub description: String,
    pub method: Option<ToolMethod>,
    /// The route-side path (relative: under the route's path); `{name}` placeholders take
    /// `path_<name>` arguments.
    pub path: Option<String>,
    pub host: Option<String>,
    pub scheme: Option<String>,
    /// Fixed headers and query arguments sent with every call.
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    pub query: Option<BTreeMap<String, Vec<String>>>,
    /// OpenAPI 3 Parameter Objects.
    pub parameters: Option<Vec<Value>>,
    /// An OpenAPI requestBody (`content.<media type>.schema`).
    pub request_body: Option<Value>,
    /// OpenAPI responses (validated answers; accepted, the answer goes back as text).
    pub responses: Option<Value>,
    pub annotations: Option<Annotations>,
    pub acl: Option<Acl>,
}

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Query,
    Path,
    Header,
    Cookie,
}

impl In {
    fn name(self) -> &'static str {
        match self {
            In::Query => "query",
            In::Path => "path",
            In::Header => "header",
            In::Cookie => "cookie",
        }
    }
}

#[derive(Debug, Clone)]
struct Param {
    name: String,
    at: In,
    required: bool,
    schema: Value,
}

impl Param {
    fn arg(&self) -> String {
        format!("{}_{}", self.at.name(), self.name)
    }
}

/// The request body a tool takes.
#[derive(Debug, Clone)]
struct BodySpec {
    content_type: String,
    schema: Value,
    required: bool,
}

/// A tool, compiled.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: String,
    pub config: ToolConfig,
    params: Vec<Param>,
    body: Option<BodySpec>,
    input_schema: Value,
}

/// The HTTP request a tool call amounts to (the path is the tool's, route-side).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: http::Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// Content type and bytes.
    pub body: Option<(String, Vec<u8>)>,
}

/// Bytes a path parameter keeps as they are: RFC 3986's unreserved set without `.`, so a
/// value can never make `..` or `/` in the path.
const PATH_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

impl Tool {
    /// Compiles `tools[index]`; `route` names the tool when neither `name` nor
    /// `annotations.title` does (`<route>-<index + 1>`, as Kong names them). Errors name
    /// fields under `tools[index]`.
    pub fn compile(config: ToolConfig, index: usize, route: &str) -> Result<Tool, FieldErrors> {
        let at = |f: &str| format!("tools[{index}].{f}");
        let mut errs = Vec::new();
        let name = config
            .name
            .clone()
            .or_else(|| config.annotations.as_ref().and_then(|a| a.title.clone()))
            .unwrap_or_else(|| format!("{route}-{}", index + 1));
        let mut params = Vec::new();
        for (j, p) in config.parameters.iter().flatten().enumerate() {
            match param(p) {
                Ok(p) => params.push(p),
                Err(e) => errs.push((at(&format!("parameters[{j}]")), e)),
            }
        }
        if let Some(path) = &config.path {
            for p in params.iter().filter(|p| p.at == In::Path) {
                if !path.contains(&format!("{{{}}}", p.name)) {
                    errs.push((
                        at("parameters"),
                        format!(
                            "path parameter '{}' has no {{{}}} in the tool's path",
                            p.name, p.name
                        ),
                    ));
                }
            }
        }
        let body = match config.request_body.as_ref().map(body_spec) {
            None => None,
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                errs.push((at("request_body"), e));
                None
            }
        };
        if let Some(s) = config
            .scheme
            .as_deref()
            .filter(|s| *s != "http" && *s != "https")
        {
            errs.push((
                at("scheme"),
                format!("expected one of: http, https (got '{s}')"),
            ));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let input_schema = input_schema(&params, body.as_ref());
        Ok(Tool {
            name,
            config,
            params,
            body,
            input_schema,
        })
    }

    /// The tool as `tools/list` shows it.
    pub fn listing(&self) -> Value {
        let mut t = Map::new();
        t.insert("name".into(), json!(self.name));
        t.insert("description".into(), json!(self.config.description));
        t.insert("inputSchema".into(), self.input_schema.clone());
        if let Some(a) = &self.config.annotations {
            let mut m = Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            };
            put("title", a.title.clone().map(Value::String));
            put("readOnlyHint", a.read_only_hint.map(Value::Bool));
            put("destructiveHint", a.destructive_hint.map(Value::Bool));
            put("idempotentHint", a.idempotent_hint.map(Value::Bool));
            put("openWorldHint", a.open_world_hint.map(Value::Bool));
            if let Some(Value::String(title)) = m.get("title") {
                t.insert("title".into(), json!(title));
            }
            t.insert("annotations".into(), Value::Object(m));
        }
        Value::Object(t)
    }

    /// The HTTP request for a call with `arguments`; Err: why the arguments do not fit the
    /// tool's schema (the client's `-32602`).
    pub fn call(&self, arguments: &Value) -> Result<Call, String> {
        let empty = Map::new();
        let args = match arguments {
            Value::Object(o) => o,
            Value::Null => &empty,
            _ => return Err("'arguments' must be an object".into()),
        };
        for k in args.keys() {
            let known =
                k == "body" && self.body.is_some() || self.params.iter().any(|p| p.arg() == *k);
            if !known {
                return Err(format!("unknown argument '{k}' for tool '{}'", self.name));
            }
        }
        let mut call = Call {
            method: self.config.method.unwrap_or(ToolMethod::Get).http(),
            path: self.config.path.clone().unwrap_or_default(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
        };
        for (k, vs) in self.config.query.iter().flatten() {
            call.query.extend(vs.iter().map(|v| (k.clone(), v.clone())));
        }
        for (k, vs) in self.config.headers.iter().flatten() {
            call.headers
                .extend(vs.iter().map(|v| (k.clone(), v.clone())));
        }
        let mut cookies = Vec::new();
        for p in &self.params {
            let arg = p.arg();
            let Some(v) = args.get(&arg).filter(|v| !v.is_null()) else {
                if p.required {
                    return Err(format!("missing required argument '{arg}'"));
                }
                continue;
            };
            check_type(&arg, v, &p.schema)?;
            let text = scalar_text(v);
            match p.at {
                In::Query => call.query.push((p.name.clone(), text)),
                In::Header => call.headers.push((p.name.clone(), text)),
                In::Cookie => cookies.push(format!("{}={}", p.name, text)),
                In::Path => {
                    let encoded = utf8_percent_encode(&text, PATH_VALUE).to_string();
                    call.path = call.path.replace(&format!("{{{}}}", p.name), &encoded);
                }
            }
        }
        if !cookies.is_empty() {
            call.headers.push(("cookie".into(), cookies.join("; ")));
        }
        match (&self.body, args.get("body").filter(|v| !v.is_null())) {
            (Some(b), Some(v)) => {
                check_type("body", v, &b.schema)?;
                call.body = Some((b.content_type.clone(), encode_body(&b.content_type, v)?));
            }
            (Some(b), None) if b.required => {
                return Err("missing required argument 'body'".into());
            }
            _ => {}
        }
        Ok(call)
    }
}

/// An OpenAPI Parameter Object as a tool parameter.
fn param(p: &Value) -> Result<Param, String> {
    let name = p
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("a parameter needs a 'name'")?;
    let at = match p.get("in").and_then(Value::as_str) {
        Some("query") => In::Query,
        Some("path") => In::Path,
        Some("header") => In::Header,
        Some("cookie") => In::Cookie,
        other => {
            return Err(format!(
                "parameter '{name}': 'in' must be one of query, path, header, cookie (got {})",
                other.map_or("nothing".to_string(), |o| format!("'{o}'"))
            ))
        }
    };
    if p.get("$ref").is_some() || p.pointer("/schema/$ref").is_some() {
        return Err(format!("parameter '{name}': $ref is not supported"));
    }
    let mut schema = p
        .get("schema")
        .cloned()
        .unwrap_or(json!({"type": "string"}));
    if let (Some(d), Some(o)) = (p.get("description"), schema.as_object_mut()) {
        o.entry("description").or_insert(d.clone());
    }
    Ok(Param {
        name: name.to_string(),
        at,
        // Path parameters are always required (OpenAPI).
        required: at == In::Path || p.get("required").and_then(Value::as_bool) == Some(true),
        schema,
    })
}

/// The body an OpenAPI requestBody describes: its first media type (JSON preferred).
fn body_spec(rb: &Value) -> Result<BodySpec, String> {
    if rb.to_string().contains("\"$ref\"") {
        return Err("$ref is not supported in request_body".into());
    }
    let content = rb
        .get("content")
        .and_then(Value::as_object)
        .filter(|c| !c.is_empty())
        .ok_or("request_body needs 'content' with a media type")?;
    let (content_type, media) = content
        .iter()
        .find(|(k, _)| k.starts_with("application/json"))
        .or_else(|| {
            content
                .iter()
                .find(|(k, _)| k.starts_with("application/x-www-form-urlencoded"))
        })
        .ok_or_else(|| {
            let types: Vec<&str> = content.keys().map(String::as_str).collect();
            format!(
                "request_body: only application/json and application/x-www-form-urlencoded bodies are supported (got {})",
                types.join(", ")
            )
        })?;
    Ok(BodySpec {
        content_type: content_type.clone(),
        schema: media
            .get("schema")
            .cloned()
            .unwrap_or(json!({"type": "object"})),
        required: rb.get("required").and_then(Value::as_bool) == Some(true),
    })
}

/// The JSON Schema of a tool's arguments.
fn input_schema(params: &[Param], body: Option<&BodySpec>) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for p in params {
        props.insert(p.arg(), p.schema.clone());
        if p.required {
            required.push(json!(p.arg()));
        }
    }
    if let Some(b) = body {
        props.insert("body".into(), b.schema.clone());
        if b.required {
            required.push(json!("body"));
        }
    }
    let mut s = json!({"type": "object", "properties": props});
    if !required.is_empty() {
        s["required"] = Value::Array(required);
    }
    s
}

/// Checks a value against the `type` (and `enum`) of its schema.
fn check_type(arg: &str, v: &Value, schema: &Value) -> Result<(), String> {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            return Err(format!(
                "argument '{arg}' must be one of {}",
                Value::Array(allowed.clone())
            ));
        }
    }
    let Some(t) = schema.get("type").and_then(Value::as_str) else {
        return Ok(());
    };
    let ok = match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    };
    if !ok {
        return Err(format!("argument '{arg}' must be of type {t}"));
    }
    if let (Some(o), Some(req)) = (
        v.as_object(),
        schema.get("required").and_then(Value::as_array),
    ) {
        if let Some(missing) = req
            .iter()
            .filter_map(Value::as_str)
            .find(|k| !o.contains_key(*k))
        {
            return Err(format!(
                "argument '{arg}' is missing its required property '{missing}'"
            ));
        }
    }
    Ok(())
}

/// A scalar argument as text (strings without quotes).
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The body in its content type.
fn encode_body(content_type: &str, v: &Value) -> Result<Vec<u8>, String> {
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let o = v.as_object().ok_or("a form body must be an object")?;
        let mut f = form_urlencoded::Serializer::new(String::new());
        for (k, x) in o {
            f.append_pair(k, &scalar_text(x));
        }
        return Ok(f.finish().into_bytes());
    }
    serde_json::to_vec(v).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tool(v: Value) -> Tool {
        let c: ToolConfig = serde_json::from_value(v).unwrap();
        Tool::compile(c, 0, "mcp-route").unwrap()
    }

    #[test]
    fn names_and_schemas_follow_kong() {
        let t = tool(
            json!({"description": "Get users", "method": "GET", "path": "/marketplace/users",
            "parameters": [{"name": "id", "in": "query", "required": false, "schema": {"type": "string"},
                            "description": "Optional user ID"}]}),
        );
        assert_eq!(t.name, "mcp-route-1");
        let l = t.listing();
        assert_eq!(l["inputSchema"]["properties"]["query_id"]["type"], "string");
        assert_eq!(
            l["inputSchema"]["properties"]["query_id"]["description"],
            "Optional user ID"
        );
        assert!(l["inputSchema"].get("required").is_none());
        let titled = tool(
            json!({"description": "d", "annotations": {"title": "Get users", "read_only_hint": true}}),
        );
        assert_eq!(titled.name, "Get users");
        assert_eq!(titled.listing()["annotations"]["readOnlyHint"], true);
        let named =
            tool(json!({"name": "list_users", "description": "d", "annotations": {"title": "x"}}));
        assert_eq!(named.name, "list_users");
    }

    #[test]
    fn calls_become_requests() {
        let t = tool(
            json!({"name": "get-flight", "description": "d", "method": "POST",
            "path": "/flights/{flightNumber}",
            "query": {"key": ["k1"]}, "headers": {"x-fixed": ["1"]},
            "parameters": [
                {"name": "flightNumber", "in": "path", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                {"name": "X-Trace", "in": "header"},
                {"name": "session_id", "in": "cookie", "required": true}],
            "request_body": {"required": true, "content": {"application/json": {"schema":
                {"type": "object", "required": ["number"], "properties": {"number": {"type": "string"}}}}}}}),
        );
        let c = t
            .call(
                &json!({"path_flightNumber": "../a b", "query_limit": 5, "header_X-Trace": "t",
                          "cookie_session_id": "s1", "body": {"number": "KL1"}}),
            )
            .unwrap();
        assert_eq!(c.method, http::Method::POST);
        assert_eq!(c.path, "/flights/%2E%2E%2Fa%20b");
        assert_eq!(
            c.query,
            [
                ("key".to_string(), "k1".to_string()),
                ("limit".into(), "5".into())
            ]
        );
        assert!(c.headers.contains(&("X-Trace".into(), "t".into())));
        assert!(c
            .headers
            .contains(&("cookie".into(), "session_id=s1".into())));
        assert!(c.headers.contains(&("x-fixed".into(), "1".into())));
        assert_eq!(c.body.unwrap().1, br#"{"number":"KL1"}"#);
        let schema = &t.listing()["inputSchema"];
        assert_eq!(
            schema["required"],
            json!(["path_flightNumber", "cookie_session_id", "body"])
        );

        for (args, why) in [
            (
                json!({"cookie_session_id": "s", "body": {"number": "1"}}),
                "missing required argument 'path_flightNumber'",
            ),
            (
                json!({"path_flightNumber": "1", "cookie_session_id": "s", "body": {"number": "1"}, "nope": 1}),
                "unknown argument 'nope'",
            ),
            (
                json!({"path_flightNumber": "1", "cookie_session_id": "s", "query_limit": "5", "body": {"number": "1"}}),
                "must be of type integer",
            ),
            (
                json!({"path_flightNumber": "1", "cookie_session_id": "s", "body": {}}),
                "required property 'number'",
            ),
            (
                json!({"path_flightNumber": "1", "cookie_session_id": "s"}),
                "missing required argument 'body'",
            ),
            (json!([1]), "'arguments' must be an object"),
        ] {
            let e = t.call(&args).unwrap_err();
            assert!(e.contains(why), "{e} vs {why}");
        }
    }

    #[test]
    fn forms_and_bad_configs() {
        let t = tool(json!({"description": "d", "method": "POST", "path": "/f",
            "request_body": {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}}}));
        let c = t.call(&json!({"body": {"a": "x y", "n": 2}})).unwrap();
        assert_eq!(
            c.body.unwrap(),
            (
                "application/x-www-form-urlencoded".to_string(),
                b"a=x+y&n=2".to_vec()
            )
        );
        for (v, field, why) in [
            (
                json!({"description": "d", "parameters": [{"name": "x", "in": "body"}]}),
                "tools[0].parameters[0]",
                "'in' must be one of",
            ),
            (
                json!({"description": "d", "path": "/a", "parameters": [{"name": "id", "in": "path"}]}),
                "tools[0].parameters",
                "has no {id}",
            ),
            (
                json!({"description": "d", "request_body": {"content": {"application/xml": {}}}}),
                "tools[0].request_body",
                "only application/json",
            ),
            (
                json!({"description": "d", "request_body": {"content": {"application/json": {"schema": {"$ref": "#/x"}}}}}),
                "tools[0].request_body",
                "$ref",
            ),
            (
                json!({"description": "d", "scheme": "ftp"}),
                "tools[0].scheme",
                "http, https",
            ),
        ] {
            let c: ToolConfig = serde_json::from_value(v).unwrap();
            let e = Tool::compile(c, 0, "r").unwrap_err();
            assert_eq!(e[0].0, field);
            assert!(e[0].1.contains(why), "{:?}", e);
        }
    }
}

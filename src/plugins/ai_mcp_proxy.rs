//! `ai-mcp-proxy` (Kong 3.12+, ACLs 3.13+): MCP on a route. Its config, Kong's field names
//! and defaults (docs/research/kong-ai-mcp-proxy.md), checked at load; the tools a
//! conversion mode exports, compiled once per configuration.
//!
//! Modes: `passthrough-listener` proxies MCP to the route's service (an MCP server);
//! `conversion-listener` is itself the MCP server for `tools[]` (REST endpoints of the
//! route's service); `conversion-only` exports its tools to `listener` instances whose
//! `server.tag` is one of its plugin tags.

use serde::{Deserialize, Serialize};

use crate::config::plugins::nullable;
use crate::mcp::acl::Acl;
use crate::mcp::tools::{Tool, ToolConfig};
use crate::store::redis::RedisConfig;

type FieldErrors = Vec<(String, String)>;

/// Kong's default for `max_request_body_size` (3.13+; 3.12's was 8192).
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
/// Kong's default for `server.timeout` (milliseconds).
pub const DEFAULT_TIMEOUT_MS: f64 = 10_000.0;

/// `config.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    PassthroughListener,
    ConversionListener,
    ConversionOnly,
    Listener,
}

impl Mode {
    /// Kong's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::PassthroughListener => "passthrough-listener",
            Mode::ConversionListener => "conversion-listener",
            Mode::ConversionOnly => "conversion-only",
            Mode::Listener => "listener",
        }
    }

    /// Whether this mode answers MCP clients on its route.
    pub fn listens(self) -> bool {
        self != Mode::ConversionOnly
    }
}

/// `config.server.session.client`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionClient {
    #[serde(default, deserialize_with = "nullable")]
    pub secrets: Vec<String>,
}

/// `config.server.session` (3.14).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Session {
    #[serde(default = "yes")]
    pub managed: bool,
    /// `client` or `redis`.
    pub strategy: Option<String>,
    pub session_ttl: Option<f64>,
    pub client: Option<SessionClient>,
    pub redis: Option<RedisConfig>,
}

/// `config.server`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The tag whose conversion-only tools a `listener` serves.
    pub tag: Option<String>,
    #[serde(default = "yes")]
    pub forward_client_headers: bool,
    /// Milliseconds a tool call may take.
    pub timeout: Option<f64>,
    pub session: Option<Session>,
}

impl Default for Server {
    fn default() -> Server {
        Server {
            tag: None,
            forward_client_headers: true,
            timeout: None,
            session: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// `config.logging`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    #[serde(default, deserialize_with = "nullable")]
    pub log_statistics: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub log_payloads: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub log_audits: bool,
}

/// `config.default_acl[]`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopedAcl {
    /// Only `tools` (Kong's default).
    pub scope: Option<String>,
    #[serde(flatten)]
    pub acl: Acl,
}

/// Which consumer field ACL entries name.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerIdentifier {
    ConsumerId,
    CustomId,
    #[default]
    Username,
}

/// The plugin's config, Kong's field names.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiMcpProxyConfig {
    pub mode: Option<Mode>,
    /// Largest MCP request body (bytes; 0: any).
    pub max_request_body_size: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    pub server: Server,
    #[serde(default, deserialize_with = "nullable")]
    pub logging: Logging,
    #[serde(default, deserialize_with = "nullable")]
    pub include_consumer_groups: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub consumer_identifier: ConsumerIdentifier,
    /// `consumer` (Kong's default) or `oauth_access_token`.
    pub acl_attribute_type: Option<String>,
    pub access_token_claim_field: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub default_acl: Vec<ScopedAcl>,
    #[serde(default, deserialize_with = "nullable")]
    pub tools: Vec<ToolConfig>,
}

impl AiMcpProxyConfig {
    /// Field errors (path under `config`, message): Kong's required fields and enums, and
    /// what Tollgate does not serve yet, named.
    pub fn validate(&self) -> FieldErrors {
        let mut errs = Vec::new();
        let Some(mode) = self.mode else {
            errs.push(("mode".into(), "required field missing".into()));
            return errs;
        };
        if let Some(t) = self
            .acl_attribute_type
            .as_deref()
            .filter(|t| *t != "consumer")
        {
            let why = if t == "oauth_access_token" {
                "'oauth_access_token' is not supported by tollgate yet (ACL subjects are consumers and their groups)".to_string()
            } else {
                format!("expected one of: consumer, oauth_access_token (got '{t}')")
            };
            errs.push(("acl_attribute_type".into(), why));
        }
        if let Some(s) = self
            .server
            .session
            .as_ref()
            .filter(|s| s.strategy.is_some())
        {
            let _ = s;
            errs.push((
                "server.session.strategy".into(),
                "shared MCP sessions (client, redis) are not supported by tollgate yet; sessions are kept by the node that created them".into(),
            ));
        }
        for (i, a) in self.default_acl.iter().enumerate() {
            if a.scope.as_deref().is_some_and(|s| s != "tools") {
                errs.push((
                    format!("default_acl[{i}].scope"),
                    "only the 'tools' scope is supported".into(),
                ));
            }
        }
        match mode {
            Mode::Listener if self.server.tag.is_none() => errs.push((
                "server.tag".into(),
                "a listener serves the tools of the conversion-only plugins tagged with server.tag: it is required".into(),
            )),
            Mode::ConversionListener | Mode::ConversionOnly if self.tools.is_empty() => errs.push((
                "tools".into(),
                format!("mode {} needs at least one tool", mode.as_str()),
            )),
            _ => {}
        }
        if self.server.timeout.is_some_and(|t| t.is_nan() || t <= 0.0) {
            errs.push(("server.timeout".into(), "must be greater than 0".into()));
        }
        errs
    }

    /// The ACL a tool gets: its own, else the default one.
    pub fn acl_for<'a>(&'a self, own: Option<&'a Acl>) -> Option<&'a Acl> {
        own.or_else(|| self.default_acl.first().map(|a| &a.acl))
    }

    /// The exported tools, compiled (`route`: the route's name, for tools named by index).
    pub fn compile_tools(&self, route: &str) -> Result<Vec<Tool>, FieldErrors> {
        let mut tools = Vec::new();
        let mut errs = Vec::new();
        for (i, t) in self.tools.iter().enumerate() {
            match Tool::compile(t.clone(), i, route) {
                Ok(t) => tools.push(t),
                Err(e) => errs.extend(e),
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in tools.iter().enumerate() {
            if !seen.insert(t.name.as_str()) {
                errs.push((
                    format!("tools[{i}].name"),
                    format!("tool '{}' is defined twice", t.name),
                ));
            }
        }
        if errs.is_empty() {
            Ok(tools)
        } else {
            Err(errs)
        }
    }
}

/// MCP protocol versions Tollgate speaks (a client asking another gets the latest Kong
/// speaks).
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// The version Kong's plugin speaks, answered to clients asking for one Tollgate does not.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// Sessions this node opened (`Mcp-Session-Id`), with when each was last used (seconds).
#[derive(Debug, Default)]
pub struct Sessions(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl Sessions {
    /// Opens a session.
    pub fn open(&self, now: u64) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        if let Ok(mut m) = self.0.lock() {
            // Expired sessions go when a new one comes, so the map stays bounded by use.
            m.retain(|_, last| now.saturating_sub(*last) < SESSION_TTL);
            m.insert(id.clone(), now);
        }
        id
    }

    /// Whether `id` is open (and now used again).
    pub fn touch(&self, id: &str, now: u64) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return false;
        };
        match m.get_mut(id) {
            Some(last) if now.saturating_sub(*last) < SESSION_TTL => {
                *last = now;
                true
            }
            Some(_) => {
                m.remove(id);
                false
            }
            None => false,
        }
    }

    /// Ends a session; whether it was open.
    pub fn close(&self, id: &str) -> bool {
        self.0.lock().is_ok_and(|mut m| m.remove(id).is_some())
    }
}

/// Kong's `server.session.session_ttl` default (seconds).
const SESSION_TTL: u64 = 86_400;

/// A compiled instance.
#[derive(Debug)]
pub struct McpProxy {
    pub config: AiMcpProxyConfig,
    pub mode: Mode,
    /// The tools a conversion mode exports.
    pub tools: Vec<Tool>,
    /// Sessions of a listening conversion mode (passthrough's belong to its upstream).
    pub sessions: Sessions,
}

impl McpProxy {
    /// Compiles the config of an instance on the route named `route` (None: not on a
    /// route); errors name fields under the plugin.
    pub fn compile(config: AiMcpProxyConfig, route: Option<&str>) -> Result<McpProxy, FieldErrors> {
        let mode = config.mode.unwrap_or(Mode::PassthroughListener);
        let converts = matches!(mode, Mode::ConversionListener | Mode::ConversionOnly);
        let Some(route) = route.or((!converts).then_some("")) else {
            return Err(vec![(
                "route".into(),
                format!(
                    "mode {} must be scoped to a route (its tools are calls through that route)",
                    mode.as_str()
                ),
            )]);
        };
        // Passthrough's tools only name upstream tools for their ACLs.
        let tools = config.compile_tools(route).map_err(|e| {
            e.into_iter()
                .map(|(f, m)| (format!("config.{f}"), m))
                .collect::<Vec<_>>()
        })?;
        Ok(McpProxy {
            config,
            mode,
            tools,
            sessions: Sessions::default(),
        })
    }

    /// The tool a passthrough ACL or a conversion call names.
    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// Largest MCP request body (0: any).
    pub fn max_body(&self) -> u64 {
        self.config
            .max_request_body_size
            .unwrap_or(DEFAULT_MAX_BODY)
    }

    /// Milliseconds a tool call may take.
    pub fn timeout(&self) -> std::time::Duration {
        let ms = self.config.server.timeout.unwrap_or(DEFAULT_TIMEOUT_MS);
        std::time::Duration::from_millis(ms as u64)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: serde_json::Value) -> AiMcpProxyConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn kong_examples_parse_and_bad_fields_are_named() {
        let c = config(
            json!({"mode": "passthrough-listener", "include_consumer_groups": true,
            "default_acl": [{"scope": "tools", "allow": ["developer", "admin"], "deny": ["suspended"]}],
            "logging": {"log_payloads": false, "log_statistics": true, "log_audits": true},
            "tools": [{"description": "List users", "name": "list_users", "acl": {"allow": ["admin", "eason"], "deny": ["developer"]}}]}),
        );
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert!(c.server.forward_client_headers);
        assert_eq!(
            c.acl_for(None).unwrap().deny,
            Some(vec!["suspended".to_string()])
        );
        let fields = |v| {
            config(v)
                .validate()
                .into_iter()
                .map(|(f, _)| f)
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(json!({})), ["mode"]);
        assert_eq!(fields(json!({"mode": "listener"})), ["server.tag"]);
        assert_eq!(fields(json!({"mode": "conversion-only"})), ["tools"]);
        assert_eq!(
            fields(
                json!({"mode": "listener", "server": {"tag": "t", "timeout": 0, "session": {"strategy": "redis"}},
                          "acl_attribute_type": "oauth_access_token", "default_acl": [{"scope": "prompts"}]})
            ),
            [
                "acl_attribute_type",
                "server.session.strategy",
                "default_acl[0].scope",
                "server.timeout"
            ]
        );
        assert!(serde_json::from_value::<AiMcpProxyConfig>(json!({"mode": "proxy"})).is_err());
        assert!(serde_json::from_value::<AiMcpProxyConfig>(
            json!({"mode": "listener", "tolls": []})
        )
        .is_err());
    }

    #[test]
    fn tools_compile_once_with_kong_names() {
        let c = config(json!({"mode": "conversion-listener", "tools": [
            {"description": "a", "method": "GET", "path": "/marketplace/users"},
            {"description": "b", "annotations": {"title": "Get orders"}},
            {"description": "c", "name": "Get orders"}]}));
        let e = c.compile_tools("mcp-route").unwrap_err();
        assert_eq!(
            e,
            [(
                "tools[2].name".to_string(),
                "tool 'Get orders' is defined twice".to_string()
            )]
        );
        let ok = config(json!({"mode": "conversion-listener", "tools": [
            {"description": "a"}, {"description": "b", "annotations": {"title": "get-orders"}}]}));
        let names: Vec<String> = ok
            .compile_tools("mcp-route")
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["mcp-route-1", "get-orders"]);
    }
}

//! The `ai.mcp` part of a log record (Kong's shape): the MCP session, one entry per
//! JSON-RPC request (method, tool, latency, answer size, error, and the payloads with
//! `log_payloads`), and the ACL decisions (`audit`, with `log_audits`).

use serde_json::{json, Map, Value};

/// One JSON-RPC request as the log records it.
#[derive(Debug, Clone, Default)]
pub struct McpRpc {
    /// The request's id, as text (Kong logs `"19"` for 19).
    pub id: Option<String>,
    pub method: String,
    pub tool_name: Option<String>,
    pub latency_ms: u64,
    pub response_body_size: u64,
    /// The JSON-RPC error's code and message, or a tool result's failure.
    pub error: Option<(i64, String)>,
    /// The request and the answer as sent (`log_payloads`).
    pub payload: Option<(String, String)>,
}

/// An ACL decision (`log_audits`).
#[derive(Debug, Clone)]
pub struct McpAudit {
    pub tool: String,
    pub allowed: bool,
    /// The consumer's id, the subject that decided (a consumer or group name), and what
    /// that subject is (`consumer`, `consumer_group`).
    pub consumer: Option<(String, Option<String>, &'static str)>,
}

/// What an MCP request logs.
#[derive(Debug, Clone, Default)]
pub struct McpLog {
    /// The request's JSON-RPC method and tool, for usage analytics (always kept).
    pub method: Option<String>,
    pub tool: Option<String>,
    pub session_id: Option<String>,
    /// Per-request statistics (`log_statistics` or `log_payloads`).
    pub rpc: Vec<McpRpc>,
    pub audit: Vec<McpAudit>,
    /// `log_statistics`: the metrics read the entries too.
    pub statistics: bool,
}

impl McpLog {
    /// Whether the log's `ai.mcp` has anything (the `logging` switches were on).
    pub fn logged(&self) -> bool {
        self.session_id.is_some() || !self.rpc.is_empty() || !self.audit.is_empty()
    }

    /// `{"mcp": {...}}`, the object written under the record's `ai`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(s) = &self.session_id {
            m.insert("mcp_session_id".into(), json!(s));
        }
        if !self.rpc.is_empty() {
            let rpc: Vec<Value> = self.rpc.iter().map(rpc_json).collect();
            m.insert("rpc".into(), Value::Array(rpc));
        }
        if !self.audit.is_empty() {
            let audit: Vec<Value> = self.audit.iter().map(audit_json).collect();
            m.insert("audit".into(), Value::Array(audit));
        }
        json!({"mcp": m})
    }
}

fn rpc_json(r: &McpRpc) -> Value {
    let mut o = Map::new();
    o.insert("method".into(), json!(r.method));
    if let Some(id) = &r.id {
        o.insert("id".into(), json!(id));
    }
    if let Some(t) = &r.tool_name {
        o.insert("tool_name".into(), json!(t));
    }
    o.insert("latency".into(), json!(r.latency_ms));
    o.insert("response_body_size".into(), json!(r.response_body_size));
    if let Some((_, e)) = &r.error {
        o.insert("error".into(), json!(e));
    }
    if let Some((req, resp)) = &r.payload {
        o.insert("payload".into(), json!({"request": req, "response": resp}));
    }
    Value::Object(o)
}

fn audit_json(a: &McpAudit) -> Value {
    let mut o = json!({
        "primitive_name": a.tool,
        "primitive": "tool",
        "action": if a.allowed { "allow" } else { "deny" },
        "scope": "primitive",
    });
    if let Some((id, name, identifier)) = &a.consumer {
        o["consumer"] = json!({"id": id, "name": name, "identifier": identifier});
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_shape() {
        let log = McpLog {
            session_id: Some("s1".into()),
            rpc: vec![McpRpc {
                id: Some("2".into()),
                method: "tools/call".into(),
                tool_name: Some("list_orders".into()),
                latency_ms: 6,
                response_body_size: 5030,
                error: None,
                payload: None,
            }],
            audit: vec![McpAudit {
                tool: "list_orders".into(),
                allowed: true,
                consumer: Some(("c-1".into(), Some("admin".into()), "consumer_group")),
            }],
            statistics: true,
            ..Default::default()
        };
        assert_eq!(
            log.to_json(),
            json!({"mcp": {"mcp_session_id": "s1",
                "rpc": [{"method": "tools/call", "latency": 6, "id": "2", "response_body_size": 5030, "tool_name": "list_orders"}],
                "audit": [{"primitive_name": "list_orders", "consumer": {"id": "c-1", "name": "admin", "identifier": "consumer_group"},
                           "scope": "primitive", "primitive": "tool", "action": "allow"}]}})
        );
    }
}

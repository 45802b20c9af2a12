//! MCP as the gateway speaks it (`ai-mcp-proxy`): JSON-RPC messages ([`jsonrpc`]), access
//! lists ([`acl`]) and REST endpoints described as tools ([`tools`]). Pure functions, no
//! I/O: the request path (`proxy::mcp`) does the calls.

pub mod acl;
pub mod jsonrpc;
pub mod tools;

/// The header that marks a tool call the gateway makes through a route (with the value
/// of [`call_marker`]): `ai-mcp-proxy` lets it through to the route's service instead of
/// answering it as MCP.
pub const CALL_HEADER: &str = "x-tollgate-mcp-call";

/// This process's value of [`CALL_HEADER`]: random, so a client cannot forge it.
pub fn call_marker() -> &'static str {
    static MARKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MARKER.get_or_init(|| uuid::Uuid::new_v4().simple().to_string())
}

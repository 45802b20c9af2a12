//! MCP as the gateway speaks it (`ai-mcp-proxy`): JSON-RPC messages ([`jsonrpc`]), access
//! lists ([`acl`]) and REST endpoints described as tools ([`tools`]). Pure functions, no
//! I/O: the request path (`proxy::mcp`) does the calls.

pub mod acl;
pub mod jsonrpc;
pub mod tools;

//! Tollgate: an AI gateway that reads Kong's declarative config and speaks OpenAI's API.

pub mod admin;
pub mod balancer;
pub mod config;
pub mod error;
pub mod llm;
pub mod observe;
pub mod plugins;
pub mod proxy;
pub mod secret;
pub mod server;

/// Crate version, shown by the Admin API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// `Server` header on gateway-generated responses.
pub const SERVER_TOKEN: &str = concat!("tollgate/", env!("CARGO_PKG_VERSION"));
/// `Via` header on proxied responses.
pub const VIA_TOKEN: &str = concat!("1.1 tollgate/", env!("CARGO_PKG_VERSION"));
/// Kong's id of the default workspace (log records carry it).
pub const DEFAULT_WORKSPACE_ID: &str = "0dc6f45b-8f8d-40d2-a504-473544ee190b";

use std::sync::Arc;

/// Starts a gateway from config text (tests and benches use this with `127.0.0.1:0`).
pub async fn run(config_text: &str, opts: server::ServeOptions) -> Result<server::Running, String> {
    let snap = config::load_str(config_text).map_err(|e| e.to_string())?;
    for w in &snap.warnings {
        tracing::warn!("config: {w}");
    }
    let gw = Arc::new(proxy::Gateway::new(snap));
    server::start(gw, opts).await.map_err(|e| e.to_string())
}

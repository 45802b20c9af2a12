//! Tollgate: an AI gateway that reads Kong's declarative config and speaks OpenAI's API.

pub mod admin;
pub mod balancer;
pub mod cli;
pub mod config;
pub mod error;
pub mod gateway;
pub mod llm;
pub mod mcp;
pub mod net;
pub mod observe;
pub mod plugins;
pub mod proxy;
pub mod quota;
pub mod rt;
pub mod secret;
pub mod server;
pub mod store;

pub use admin::load;

/// Crate version, shown by the Admin API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The Kong Gateway version whose configuration, Admin API and AI plugins Tollgate serves
/// (the Admin API's `version`, which Kong's tools check).
pub const KONG_VERSION: &str = "3.15.0";
/// `Server` header on gateway-generated responses.
pub const SERVER_TOKEN: &str = concat!("tollgate/", env!("CARGO_PKG_VERSION"));
/// `Via` header on proxied responses.
pub const VIA_TOKEN: &str = concat!("1.1 tollgate/", env!("CARGO_PKG_VERSION"));
/// Kong's id of the default workspace (log records carry it).
pub const DEFAULT_WORKSPACE_ID: &str = "0dc6f45b-8f8d-40d2-a504-473544ee190b";

use std::sync::Arc;

/// Starts a gateway from config text (tests and benches use this with `127.0.0.1:0`);
/// Admin API writes are kept in memory.
pub async fn run(config_text: &str, opts: server::ServeOptions) -> Result<server::Running, String> {
    run_with(config_text, None, None, opts).await
}

/// Starts a gateway from config text whose Admin API writes rewrite `file` (when given, as
/// `serve --admin-writes-to-config` does) and need `admin_token` (when given).
pub async fn run_with(
    config_text: &str,
    file: Option<std::path::PathBuf>,
    admin_token: Option<String>,
    opts: server::ServeOptions,
) -> Result<server::Running, String> {
    let loaded = load(config_text).map_err(|e| e.to_string())?;
    start(loaded, file, admin_token, opts).await
}

/// Like [`run`], reading environment variables (vault `env` references, settings such as
/// `AZURE_AUTHORITY_HOST`) through `env` rather than the process's, so tests can set them
/// without touching the process; Admin API writes recompile with the process environment.
pub async fn run_env(
    config_text: &str,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    opts: server::ServeOptions,
) -> Result<server::Running, String> {
    let loaded = admin::load_env(config_text, env).map_err(|e| e.to_string())?;
    start(loaded, None, None, opts).await
}

async fn start(
    (snap, state): (gateway::Snapshot, admin::state::State),
    file: Option<std::path::PathBuf>,
    admin_token: Option<String>,
    opts: server::ServeOptions,
) -> Result<server::Running, String> {
    for w in &snap.warnings {
        tracing::warn!("config: {w}");
    }
    let control = admin::control::Control::new(state, file, admin_token.map(secret::Secret::new));
    let gw = Arc::new(gateway::Gateway::new(snap));
    let node = Arc::new(admin::Admin { gw, control });
    server::start(node, opts).await.map_err(|e| e.to_string())
}

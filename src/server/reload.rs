//! `tollgate serve --watch`: the config file is reloaded when it changes (and on SIGHUP). A
//! file that does not compile leaves the running config in place, and every error is logged
//! with its field path. Requests in flight finish on the snapshot they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::admin::Admin;
use crate::gateway::Gateway;

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

/// Loads `path` and swaps it in (with the declarative state Admin API writes edit); false
/// (with the errors logged) when it does not compile. A file holding exactly what the
/// Admin API last wrote is already running and is skipped.
pub async fn reload(admin: &Admin, path: &Path) -> bool {
    let gw: &Gateway = &admin.gw;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(file = %path.display(), "config not reloaded: cannot read it: {e}");
            let why = format!("cannot read it: {}", e.kind());
            gw.reload.record(&path.display().to_string(), vec![why]);
            return false;
        }
    };
    if admin.control.wrote(&text) {
        return true;
    }
    // Writes wait while the file is compiled, so none is lost between read and swap.
    let mut state = admin.control.state.lock().await;
    // Loading may read vaults over the network and compiles every plugin: off the workers.
    let loaded =
        tokio::task::spawn_blocking(move || crate::admin::load(&text).map(|l| (l, text))).await;
    match loaded {
        Ok(Ok(((snap, new_state), text))) => {
            for w in &snap.warnings {
                tracing::warn!("config: {w}");
            }
            tracing::info!(
                file = %path.display(),
                services = snap.services.len(),
                routes = snap.routes.len(),
                plugins = snap.plugins.len(),
                "config reloaded"
            );
            gw.snapshot.store(Arc::new(snap));
            if state.is_some() {
                *state = Some(new_state);
            }
            admin.control.rebased(&text);

            gw.reload.record(&path.display().to_string(), Vec::new());
            true
        }
        Ok(Err(errors)) => {
            for e in &errors.0 {
                tracing::error!(file = %path.display(), "config not reloaded: {e}");
            }
            tracing::error!(
                file = %path.display(),
                errors = errors.0.len(),
                "keeping the running config"
            );
            let why = errors.0.iter().map(|e| e.to_string()).collect();
            gw.reload.record(&path.display().to_string(), why);
            false
        }
        Err(e) => {
            tracing::error!(file = %path.display(), "config reload failed: {e}");
            let why = vec!["the reload task failed".to_string()];
            gw.reload.record(&path.display().to_string(), why);
            false
        }
    }
}

/// Watches `path` every `interval` (polling the file's size and modification time, which
/// works on every filesystem, editors' atomic renames included) and reloads on SIGHUP too.
pub fn spawn(admin: Arc<Admin>, path: PathBuf, interval: Duration) {
    tokio::spawn(async move {
        let mut last = stamp(&path);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let forced = match hup.as_mut() {
                Some(h) => tokio::select! {
                    _ = tick.tick() => false,
                    _ = h.recv() => true,
                },
                None => {
                    tick.tick().await;
                    false
                }
            };
            #[cfg(not(unix))]
            let forced = {
                tick.tick().await;
                false
            };
            let now = stamp(&path);
            if forced || (now.is_some() && now != last) {
                last = now;
                reload(&admin, &path).await;
            }
        }
    });
}

//! A node of a cluster (`serve --store postgres`): the configuration lives in PostgreSQL
//! (`store::config_pg`), every Admin API write on any node is saved there over the version
//! it was made from, and every node follows the stored version (notified at once, checked
//! every two seconds as well). A node keeps serving its last configuration while the store
//! is down, and keeps a copy of it in its data directory, so a node that starts while the
//! store is down serves that copy.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::admin::errors::AdminError;
use crate::admin::state::State;
use crate::admin::Admin;
use crate::gateway::Gateway;
use crate::store::config_pg::{self, ConfigStore, Saved, Stored};

/// How often a node compares its version with the store's, besides the notifications.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The first line of the cached copy: the version it is.
const CACHE_TAG: &str = "# tollgate-store-version: ";

/// This node's side of the cluster's configuration.
#[derive(Debug)]
pub struct Cluster {
    pub store: ConfigStore,
    url: String,
    /// The stored version the running configuration came from (0: none yet).
    version: AtomicI64,
    /// Whether the store answered the last time it was asked.
    up: AtomicBool,
    /// The copy of the last stored configuration, for a start while the store is down.
    cache: PathBuf,
}

impl Cluster {
    /// A node of the cluster whose store is at `url`, caching in `data_dir`.
    pub fn new(url: &str, data_dir: &Path) -> Cluster {
        Cluster {
            store: ConfigStore::new(url),
            url: url.to_string(),
            version: AtomicI64::new(0),
            up: AtomicBool::new(true),
            cache: data_dir.join("cluster-config.yaml"),
        }
    }

    /// The stored version the running configuration came from.
    pub fn version(&self) -> i64 {
        self.version.load(Ordering::Acquire)
    }

    /// Whether the store answered the last time it was asked.
    pub fn store_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records whether the store answered, saying so in the log when that changes.
    fn mark(&self, up: bool, why: Option<&str>) {
        let was = self.up.swap(up, Ordering::Relaxed);
        match (was, up) {
            (true, false) => tracing::warn!(
                "configuration store unavailable ({}): serving the last configuration (version {}) until it is back",
                why.unwrap_or("no answer"),
                self.version()
            ),
            (false, true) => tracing::info!("configuration store reachable again"),
            _ => {}
        }
    }

    /// Runs the configuration `stored` (now the running one) and keeps a copy of it.
    pub fn adopted(&self, stored: &Stored) {
        self.version.store(stored.version, Ordering::Release);
        let text = format!("{CACHE_TAG}{}\n{}", stored.version, stored.document);
        if let Err(e) = crate::admin::control::write_private(&self.cache, &text) {
            tracing::warn!(file = %self.cache.display(), "cannot keep a copy of the configuration: {e}");
        }
    }

    /// The copy kept by the last [`Cluster::adopted`], if any.
    pub fn cached(&self) -> Option<Stored> {
        let text = std::fs::read_to_string(&self.cache).ok()?;
        let (first, document) = text.split_once('\n')?;
        let version = first.strip_prefix(CACHE_TAG)?.trim().parse().ok()?;
        Some(Stored {
            version,
            document: document.to_string(),
        })
    }

    /// Saves a write's document over the running version: the write's commit.
    pub async fn save(&self, document: &str) -> Result<(), AdminError> {
        match self.store.save(self.version(), document).await {
            Ok(Saved::Committed(version)) => {
                self.mark(true, None);
                self.adopted(&Stored {
                    version,
                    document: document.to_string(),
                });
                Ok(())
            }
            Ok(Saved::Conflict) => Err(AdminError::Conflict),
            Err(e) => {
                self.mark(false, Some(&e.to_string()));
                Err(AdminError::StoreDown(e.to_string()))
            }
        }
    }

    /// Brings the running configuration (and `state`, the document writes edit) up to the
    /// stored version, so a write is made over the newest configuration.
    pub async fn sync(&self, gw: &Gateway, state: &mut State) -> Result<(), AdminError> {
        let stored = match self.store.current().await {
            Ok(s) => s,
            Err(e) => {
                self.mark(false, Some(&e.to_string()));
                return Err(AdminError::StoreDown(e.to_string()));
            }
        };
        self.mark(true, None);
        match stored {
            Some(s) if s.version != self.version() => {
                *state = self.apply(gw, s).await.map_err(AdminError::Persist)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Compiles a stored configuration and swaps it in; its state for writes to edit.
    async fn apply(&self, gw: &Gateway, stored: Stored) -> Result<State, String> {
        let text = stored.document.clone();
        let loaded = tokio::task::spawn_blocking(move || crate::admin::load(&text))
            .await
            .map_err(|e| format!("the compile task failed: {e}"))?;
        let (snap, state) = loaded.map_err(|errors| {
            format!(
                "stored configuration version {} does not load here: {errors}",
                stored.version
            )
        })?;
        for w in &snap.warnings {
            tracing::warn!("config: {w}");
        }
        tracing::info!(
            version = stored.version,
            services = snap.services.len(),
            routes = snap.routes.len(),
            plugins = snap.plugins.len(),
            "configuration from the store"
        );
        gw.snapshot.store(Arc::new(snap));
        self.adopted(&stored);
        Ok(state)
    }

    /// Catches up with the store if it holds a newer version (a notification, or the
    /// periodic check, said so).
    async fn catch_up(&self, admin: &Admin) {
        let version = match self.store.version().await {
            Ok(v) => v,
            Err(e) => return self.mark(false, Some(&e.to_string())),
        };
        self.mark(true, None);
        if version == self.version() {
            return;
        }
        // Writes wait while the newer configuration is compiled, so none is made over an
        // older one.
        let mut guard = admin.control.state.lock().await;
        let stored = match self.store.current().await {
            Ok(Some(s)) if s.version != self.version() => s,
            Ok(_) => return,
            Err(e) => return self.mark(false, Some(&e.to_string())),
        };
        let version = stored.version;
        match self.apply(&admin.gw, stored).await {
            Ok(state) => {
                if let Some(g) = guard.as_mut() {
                    *g = state;
                }
            }
            Err(e) => {
                tracing::error!("configuration version {version} not applied: {e}");
                // Not retried until the next version: the same document fails the same way.
                self.version.store(version, Ordering::Release);
            }
        }
    }
}

/// Follows the store for the life of the node: each notified version, and a check every
/// [`CHECK_EVERY`].
pub fn spawn_follower(admin: Arc<Admin>) {
    let Some(cluster) = admin.control.cluster.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut notified = config_pg::listen(&cluster.url);
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                v = notified.recv() => match v {
                    Some(v) if v != 0 && v == cluster.version() => continue,
                    Some(_) => {}
                    None => return,
                },
                _ = tick.tick() => {}
            }
            cluster.catch_up(&admin).await;
        }
    });
}

/// What a node starts with on a cluster: the stored configuration (the store's schema
/// created, and `seed` saved as version 1, on the cluster's first start), or, while the
/// store is down, the copy this node kept. With neither, it waits for the store: a node
/// never serves an empty configuration.
pub async fn boot(
    url: &str,
    data_dir: &Path,
    seed: &str,
) -> Result<(crate::gateway::Snapshot, State, Arc<Cluster>), String> {
    let cluster = Arc::new(Cluster::new(url, data_dir));
    let mut said = false;
    let stored = loop {
        match first_stored(&cluster, seed).await {
            Ok(s) => break s,
            Err(e) => {
                if let Some(copy) = cluster.cached() {
                    tracing::warn!(
                        "configuration store unavailable ({e}): serving the copy of version {} kept in {} until it is back",
                        copy.version,
                        cluster.cache.display()
                    );
                    cluster.up.store(false, Ordering::Relaxed);
                    break copy;
                }
                if !said {
                    tracing::warn!(
                        "configuration store unavailable ({e}) and no copy of its configuration in {}: waiting for it; nothing is served until then",
                        data_dir.display()
                    );
                    said = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let text = stored.document.clone();
    let (snap, state) = tokio::task::spawn_blocking(move || crate::admin::load(&text))
        .await
        .map_err(|e| format!("the compile task failed: {e}"))?
        .map_err(|errors| {
            format!(
                "stored configuration version {} does not load here:\n{errors}",
                stored.version
            )
        })?;
    cluster.adopted(&stored);
    tracing::info!(version = stored.version, "configuration from the store");
    Ok((snap, state, cluster))
}

/// The stored configuration; on the cluster's first start, `seed` saved as its first
/// version (one node wins when several start at once; the others read its version).
async fn first_stored(cluster: &Cluster, seed: &str) -> Result<Stored, config_pg::StoreError> {
    cluster.store.migrate().await?;
    if let Some(s) = cluster.store.current().await? {
        return Ok(s);
    }
    match cluster.store.save(0, seed).await? {
        Saved::Committed(version) => {
            tracing::info!("configuration store was empty: it now holds this node's configuration as version {version}");
            Ok(Stored {
                version,
                document: seed.to_string(),
            })
        }
        Saved::Conflict => cluster.store.current().await?.ok_or_else(|| {
            config_pg::StoreError::Query("the stored configuration vanished".into())
        }),
    }
}

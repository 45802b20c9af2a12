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
use crate::store::seal::{self, Sealer};

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
    /// Seals the plain secrets of what is stored, and opens them again.
    sealer: Option<Sealer>,
}

impl Cluster {
    /// A node of the cluster whose store is at `url`, caching in `data_dir`, sealing
    /// secrets with the keys `env` names.
    pub fn new(
        url: &str,
        data_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Cluster, String> {
        Ok(Cluster {
            store: ConfigStore::new(url),
            url: url.to_string(),
            version: AtomicI64::new(0),
            up: AtomicBool::new(true),
            cache: data_dir.join("cluster-config.yaml"),
            sealer: Sealer::from_env(env)?,
        })
    }

    /// `document` as it is stored: its plain secrets sealed.
    pub fn sealed(&self, document: &str) -> Result<String, String> {
        seal_document(document, self.sealer.as_ref())
    }

    /// A stored document as it runs: its sealed secrets opened.
    fn opened(&self, stored: &Stored) -> Result<String, String> {
        open_document(&stored.document, self.sealer.as_ref())
            .map_err(|e| format!("stored configuration version {}: {e}", stored.version))
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
        let document = &self.sealed(document).map_err(AdminError::Persist)?;
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
        let text = self.opened(&stored)?;
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
    let env = |name: &str| std::env::var(name).ok();
    let cluster = Arc::new(Cluster::new(url, data_dir, &env)?);
    // The seed is stored as every write is, its plain secrets sealed; needed only when the
    // store is empty (refused then without a key).
    let seed = cluster.sealed(seed);
    let mut said = false;
    let stored = loop {
        match first_stored(&cluster, &seed).await {
            Ok(s) => break s,
            Err(Boot::Seed(e)) => return Err(format!("the store is empty and {e}")),
            Err(Boot::Store(e)) => {
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
    let text = cluster.opened(&stored)?;
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
async fn first_stored(cluster: &Cluster, seed: &Result<String, String>) -> Result<Stored, Boot> {
    cluster.store.migrate().await?;
    if let Some(s) = cluster.store.current().await? {
        return Ok(s);
    }
    let seed = seed.as_deref().map_err(|e| Boot::Seed(e.clone()))?;
    match cluster.store.save(0, seed).await? {
        Saved::Committed(version) => {
            tracing::info!("configuration store was empty: it now holds this node's configuration as version {version}");
            Ok(Stored {
                version,
                document: seed.to_string(),
            })
        }
        Saved::Conflict => cluster.store.current().await?.ok_or_else(|| {
            Boot::Store(config_pg::StoreError::Query(
                "the stored configuration vanished".into(),
            ))
        }),
    }
}

/// Why a node could not take its first configuration from the store.
enum Boot {
    /// The store could not be used (down): the node waits, or serves its copy.
    Store(config_pg::StoreError),
    /// The store is empty and this node's configuration cannot seed it.
    Seed(String),
}

impl From<config_pg::StoreError> for Boot {
    fn from(e: config_pg::StoreError) -> Boot {
        Boot::Store(e)
    }
}

/// `text` (a declarative document) with the plain values of its secret fields sealed by
/// `sealer`; vault references and decK `${{ env … }}` templates stay as written, since they
/// hold no secret. Without a sealer, a plain secret is refused: it would sit in the
/// database in clear.
pub fn seal_document(text: &str, sealer: Option<&Sealer>) -> Result<String, String> {
    let mut doc: serde_json::Value =
        serde_norway::from_str(text).map_err(|e| format!("the configuration: {e}"))?;
    let mut plain = 0usize;
    let mut failed = None;
    crate::gateway::snapshot::visit_secrets(&mut doc, &mut |v| {
        let serde_json::Value::String(s) = v else {
            return;
        };
        let inert = s.is_empty()
            || s.starts_with(seal::PREFIX)
            || s.contains("${{")
            || crate::config::vault::is_reference_form(s);
        match (inert, sealer) {
            (true, _) => {}
            (false, Some(k)) => match k.seal(s) {
                Ok(sealed) => *s = sealed,
                Err(e) => failed = Some(e),
            },
            (false, None) => plain += 1,
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if plain > 0 {
        return Err(format!(
            "{plain} plain secret value(s) (a provider key, a password…) would be stored in PostgreSQL in clear: set {} on every node (32 random bytes in base64, e.g. `openssl rand -base64 32`) to store them encrypted, or write them as {{vault://…}} references",
            seal::KEY_VAR
        ));
    }
    serde_norway::to_string(&doc).map_err(|e| format!("cannot render the configuration: {e}"))
}

/// A stored document with its sealed values opened.
pub fn open_document(text: &str, sealer: Option<&Sealer>) -> Result<String, String> {
    if !text.contains(seal::PREFIX) {
        return Ok(text.to_string());
    }
    let Some(sealer) = sealer else {
        return Err(format!(
            "it holds encrypted secrets: set {} to the cluster's key",
            seal::KEY_VAR
        ));
    };
    let mut doc: serde_json::Value =
        serde_norway::from_str(text).map_err(|e| format!("the configuration: {e}"))?;
    open_values(&mut doc, sealer)?;
    serde_norway::to_string(&doc).map_err(|e| format!("cannot render the configuration: {e}"))
}

fn open_values(v: &mut serde_json::Value, sealer: &Sealer) -> Result<(), String> {
    match v {
        serde_json::Value::String(s) if s.starts_with(seal::PREFIX) => {
            *s = sealer.open(s)?;
            Ok(())
        }
        serde_json::Value::Object(m) => m.values_mut().try_for_each(|x| open_values(x, sealer)),
        serde_json::Value::Array(a) => a.iter_mut().try_for_each(|x| open_values(x, sealer)),
        _ => Ok(()),
    }
}

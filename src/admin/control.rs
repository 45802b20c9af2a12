//! What Admin API writes need besides the snapshot: the declarative state they edit, where
//! it is saved, and the admin token. One write at a time: each builds a new snapshot from
//! an edited copy of the state, saves the copy, then swaps both in (requests in flight
//! finish on the snapshot they started with).
//!
//! Where writes are saved (docs/admin.md, "Where changes are saved"): by default to a state
//! file in the data directory, tagged with the SHA-256 of the config it was made from (the
//! `--config` file or the embedded default); the next start loads it instead of that config
//! while the config is unchanged, and sets it aside when the config changed. The user's
//! file is rewritten only when asked (`--admin-writes-to-config`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Mutex as AsyncMutex;

use crate::admin::errors::AdminError;
use crate::admin::state::{Kind, State};
use crate::config::{ConfigErrors, ConfigIssue};
use crate::gateway::Gateway;
use crate::gateway::Snapshot;
use crate::secret::Secret;

/// The Admin API's write side.
#[derive(Debug, Default)]
pub struct Control {
    /// None when the gateway was built from a snapshot alone (no document to edit).
    pub state: AsyncMutex<Option<State>>,
    /// The file writes are saved to (None: kept in memory only).
    pub file: Option<PathBuf>,
    /// Set when `file` is a data-directory state file rather than the config itself.
    base: Option<Mutex<Base>>,
    /// Required as `Authorization: Bearer …` when set.
    pub token: Option<Secret<String>>,
    /// SHA-256 of the text last written to `file`, so the watcher skips its own writes.
    written: Mutex<Option<Vec<u8>>>,
    /// Set on a node of a cluster: writes are saved in the shared store instead of a file.
    pub cluster: Option<Arc<crate::admin::cluster::Cluster>>,
}

/// The config a state file was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Base {
    /// Hex SHA-256 of the config's text.
    pub digest: String,
    /// The `--config` path, or `embedded default`.
    pub source: String,
}

impl Base {
    /// The base of config `text` read from `source`.
    pub fn of(text: &str, source: &str) -> Base {
        Base {
            digest: hex(&digest(text)),
            source: source.to_string(),
        }
    }
}

/// The state file's name in the data directory over the embedded default.
pub const STATE_FILE: &str = "admin-state.yaml";

/// The state file's name in the data directory for config `file` (the embedded default
/// when None): one per config path, so gateways sharing a data directory with different
/// configs do not set each other's writes aside.
pub fn state_file_name(file: Option<&Path>) -> String {
    match file {
        None => STATE_FILE.to_string(),
        Some(f) => {
            let path = std::fs::canonicalize(f).unwrap_or_else(|_| f.to_path_buf());
            let d = digest(&path.to_string_lossy());
            format!("admin-state-{}.yaml", hex(&d[..6]))
        }
    }
}

/// Makes `text` (a config saved without a base tag) the state file of `base`.
pub fn adopt(file: &Path, text: &str, base: &Base) -> std::io::Result<()> {
    write_private(
        file,
        &format!("{BASE_TAG}{} {}\n{text}", base.digest, base.source),
    )
}

/// The first line of a state file names its base.
const BASE_TAG: &str = "# tollgate-base: ";

/// What the start does with a state file (see [`load_state_file`]).
#[derive(Debug, PartialEq)]
pub enum Saved {
    /// No state file.
    None,
    /// The state file's text, made from this very config: run it.
    Current(String),
    /// The config changed since: the state file was moved to this path, not loaded.
    SetAside(PathBuf),
}

/// Reads the state file `file` against the config it must have been made from; one made
/// from another version of the config is renamed `FILE.old` (kept, not loaded).
pub fn load_state_file(file: &Path, base: &Base) -> std::io::Result<Saved> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::None),
        Err(e) => return Err(e),
    };
    let tagged = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix(BASE_TAG))
        .and_then(|l| l.split_whitespace().next());
    if tagged == Some(base.digest.as_str()) {
        return Ok(Saved::Current(text));
    }
    let old = set_aside(file)?;
    Ok(Saved::SetAside(old))
}

fn set_aside(file: &Path) -> std::io::Result<PathBuf> {
    let mut old = file.as_os_str().to_owned();
    old.push(".old");
    let old = PathBuf::from(old);
    match std::fs::rename(file, &old) {
        // Another gateway starting from the same directory moved it first.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(old),
    }
}

impl Control {
    /// Writes edit `state` and are saved to `file` (if any), which they rewrite.
    pub fn new(state: State, file: Option<PathBuf>, token: Option<Secret<String>>) -> Control {
        Control {
            state: AsyncMutex::new(Some(state)),
            file,
            base: None,
            token,
            written: Mutex::new(None),
            cluster: None,
        }
    }

    /// Writes edit `state` and are saved to the state file `file` (mode 0600), tagged with
    /// the config `base` they apply to.
    pub fn with_state_file(
        state: State,
        file: PathBuf,
        base: Base,
        token: Option<Secret<String>>,
    ) -> Control {
        Control {
            state: AsyncMutex::new(Some(state)),
            file: Some(file),
            base: Some(Mutex::new(base)),
            token,
            written: Mutex::new(None),
            cluster: None,
        }
    }

    /// Writes edit `state` (the stored configuration this node runs) and are saved in the
    /// cluster's store.
    pub fn clustered(
        state: State,
        cluster: Arc<crate::admin::cluster::Cluster>,
        token: Option<Secret<String>>,
    ) -> Control {
        Control {
            cluster: Some(cluster),
            ..Control::new(state, None, token)
        }
    }

    /// The config file was reloaded with `text` (`--watch`): it is the new base, and a
    /// state file made from the previous version is set aside (the file wins).
    pub fn rebased(&self, text: &str) {
        let (Some(base), Some(file)) = (&self.base, &self.file) else {
            return;
        };
        let Ok(mut b) = base.lock() else {
            return;
        };
        *b = Base::of(text, &b.source);
        if file.exists() {
            match set_aside(file) {
                Ok(old) => tracing::warn!(
                    "{} changed: it replaces the Admin API writes made since the start, which are kept in {} (not loaded)",
                    b.source,
                    old.display()
                ),
                Err(e) => tracing::warn!("cannot set {} aside: {e}", file.display()),
            }
        }
    }

    /// The file holds exactly what the last write saved.
    pub fn wrote(&self, text: &str) -> bool {
        let d = digest(text);
        self.written
            .lock()
            .map(|w| w.as_deref() == Some(d.as_slice()))
            .unwrap_or(false)
    }

    /// Compiles `candidate`, saves it, and makes it the running config. Compile errors
    /// about the entity at `focus` name its fields; others name their document path.
    pub async fn commit(
        &self,
        gw: &Gateway,
        current: &mut State,
        candidate: State,
        focus: Option<(Kind, usize)>,
    ) -> Result<(), AdminError> {
        let snap = compile(candidate.clone()).await.map_err(|e| match focus {
            Some((kind, i)) => entity_errors(kind, i, e),
            None => AdminError::Declarative(e.0),
        })?;
        match &self.cluster {
            Some(c) => {
                c.save(&render(&candidate).map_err(AdminError::Persist)?)
                    .await?
            }
            None => self.save(&candidate)?,
        }
        for w in &snap.warnings {
            tracing::warn!("config: {w}");
        }
        gw.snapshot.store(Arc::new(snap));
        *current = candidate;
        Ok(())
    }

    /// Writes the state to the file (temp file + rename; the previous file kept as
    /// `FILE.bak`). Nothing to do without a file.
    fn save(&self, state: &State) -> Result<(), AdminError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if let Some(why) = &state.unwritable {
            return Err(AdminError::Persist(format!(
                "the change was not applied: {} cannot be rewritten: {why}",
                file.display()
            )));
        }
        let (text, private) = match &self.base {
            None => (render(state).map_err(AdminError::Persist)?, false),
            Some(base) => {
                let base = base
                    .lock()
                    .map(|b| b.clone())
                    .map_err(|_| AdminError::Persist("the state lock is poisoned".into()))?;
                (
                    render_state_file(state, &base).map_err(AdminError::Persist)?,
                    true,
                )
            }
        };
        let write = if private {
            write_private(file, &text)
        } else {
            write_atomic(file, &text)
        };
        write.map_err(|e| {
            AdminError::Persist(format!(
                "the change was not applied: cannot write {}: {e}",
                file.display()
            ))
        })?;
        if let Ok(mut w) = self.written.lock() {
            *w = Some(digest(&text));
        }
        Ok(())
    }
}

async fn compile(state: State) -> Result<Snapshot, ConfigErrors> {
    // Compiling may read vaults, and activating checks databases, over the network: off
    // the workers.
    tokio::task::spawn_blocking(move || {
        let env = |name: &str| std::env::var(name).ok();
        let mut snap = state.compile(&env)?;
        snap.activate()?;
        Ok(snap)
    })
    .await
    .unwrap_or_else(|e| Err(ConfigErrors::single("", format!("compile failed: {e}"))))
}

/// Compile errors as the Admin API reports them for a write to one entity.
pub(crate) fn entity_errors(kind: Kind, i: usize, e: ConfigErrors) -> AdminError {
    let prefix = format!("{}[{i}]", kind.name());
    let mut own = Vec::new();
    for ConfigIssue { path, message } in e.0 {
        let rel = if path == prefix {
            Some(String::new())
        } else {
            path.strip_prefix(&format!("{prefix}.")).map(str::to_string)
        };
        if message.starts_with("UNIQUE violation detected on ") {
            return AdminError::UniqueScope(message);
        }
        own.push((rel.unwrap_or(path), message));
    }
    AdminError::Schema(own)
}

/// The state as the YAML file holds it.
pub fn render(state: &State) -> Result<String, String> {
    let yaml = serde_norway::to_string(&state.document())
        .map_err(|e| format!("cannot render the config: {e}"))?;
    Ok(format!(
        "# Written by tollgate's Admin API (Kong's flat declarative form); the previous\n# version of this file is kept next to it as .bak.\n{yaml}"
    ))
}

/// The state file's text: the base tag, then the document (whose key-auth keys are
/// already digests: the state keeps no other form).
fn render_state_file(state: &State, base: &Base) -> Result<String, String> {
    let doc = state.document();
    let yaml =
        serde_norway::to_string(&doc).map_err(|e| format!("cannot render the config: {e}"))?;
    Ok(format!(
        "{BASE_TAG}{} {}\n# Saved by tollgate's Admin API: the running config, made from {} as it was then\n# (SHA-256 above). Loaded at start instead of it while it has not changed. Mode 0600.\n{yaml}",
        base.digest, base.source, base.source
    ))
}

/// Replaces `path` with `text` atomically; the new file is the owner's only (0600) and no
/// backup is kept (the state may hold secrets).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::rt::data_dir::private_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.tollgate-{}", std::process::id()));
    let result = (|| {
        let mut f = crate::rt::data_dir::private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        crate::rt::data_dir::set_mode(&tmp, 0o600)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Replaces `path` with `text` atomically, keeping the old file as `path.bak` and the old
/// file's permissions.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{name}.tollgate-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
            std::fs::copy(path, dir.join(format!("{name}.bak")))?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn digest(text: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .to_vec()
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn state_files_load_only_over_their_base() {
        let dir = std::env::temp_dir().join(format!("tollgate-state-{}", std::process::id()));
        let file = dir.join(STATE_FILE);
        let base = Base::of("a: 1\n", "kong.yaml");
        assert_eq!(load_state_file(&file, &base).unwrap(), Saved::None);
        let text = "_format_version: \"3.0\"\nconsumers: [{username: u}]\nkeyauth_credentials: [{key: clear-k, consumer: {username: u}}]\n";
        let state = State::from_text(text, &|_| None).unwrap();
        write_private(&file, &render_state_file(&state, &base).unwrap()).unwrap();
        let Saved::Current(saved) = load_state_file(&file, &base).unwrap() else {
            panic!()
        };
        assert!(!saved.contains("clear-k"), "{saved}");
        assert!(saved.contains("key_hash: sha256:"), "{saved}");
        let other = Base::of("a: 2\n", "kong.yaml");
        assert_eq!(
            load_state_file(&file, &other).unwrap(),
            Saved::SetAside(dir.join("admin-state.yaml.old"))
        );
        assert!(!file.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

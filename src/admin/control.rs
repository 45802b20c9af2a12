//! What Admin API writes need besides the snapshot: the declarative state they edit, where
//! it is saved, and the admin token. One write at a time: each builds a new snapshot from
//! an edited copy of the state, saves the copy, then swaps both in (requests in flight
//! finish on the snapshot they started with).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Mutex as AsyncMutex;

use crate::admin::errors::AdminError;
use crate::admin::state::{Kind, State};
use crate::config::{ConfigErrors, ConfigIssue, Snapshot};
use crate::proxy::Gateway;
use crate::secret::Secret;

/// The Admin API's write side.
#[derive(Debug, Default)]
pub struct Control {
    /// None when the gateway was built from a snapshot alone (no document to edit).
    pub state: AsyncMutex<Option<State>>,
    /// The file writes are saved to (None: kept in memory only).
    pub file: Option<PathBuf>,
    /// Required as `Authorization: Bearer …` when set.
    pub token: Option<Secret<String>>,
    /// SHA-256 of the text last written to `file`, so the watcher skips its own writes.
    written: Mutex<Option<Vec<u8>>>,
}

impl Control {
    /// Writes edit `state` and are saved to `file` (if any).
    pub fn new(state: State, file: Option<PathBuf>, token: Option<Secret<String>>) -> Control {
        Control {
            state: AsyncMutex::new(Some(state)),
            file,
            token,
            written: Mutex::new(None),
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
        self.save(&candidate)?;
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
        let text = render(state).map_err(AdminError::Persist)?;
        write_atomic(file, &text).map_err(|e| {
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
    // Compiling may read vaults and databases over the network: off the workers.
    tokio::task::spawn_blocking(move || {
        let env = |name: &str| std::env::var(name).ok();
        state.compile(&env)
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

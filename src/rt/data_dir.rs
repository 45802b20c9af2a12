//! The data directory: where it is by default, and the files under it. The directory is private to its owner (0700) and every
//! file that may hold a secret (saved Admin API state, keys, usage records, spilled log
//! lines) is created readable by the owner only (0600).

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

/// The default data directory: `$TOLLGATE_DATA_DIR`, else `$XDG_DATA_HOME/tollgate`, else
/// `~/.local/share/tollgate`, else `./tollgate-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TOLLGATE_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("tollgate");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/tollgate"),
        None => PathBuf::from("tollgate-data"),
    }
}

/// Creates `dir` (and missing parents) with mode 0700; true when it did not exist. An
/// existing directory keeps its mode: the caller decides whether to tighten it.
pub fn private_dir(dir: &Path) -> io::Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)?;
    Ok(true)
}

/// The permission bits group and others have on `path` (0 when none, or not on unix).
pub fn shared_bits(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o077)
            .unwrap_or(0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        0
    }
}

/// Sets `path`'s mode to `mode` (unix only; elsewhere nothing).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// Open options whose newly created file is readable and writable by the owner only.
pub fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

//! Files under the data directory: the directory is private to its owner (0700) and every
//! file that may hold a secret (saved Admin API state, keys, usage records, spilled log
//! lines) is created readable by the owner only (0600).

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

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

//! Compiling config text into a [`Snapshot`]: what `serve`, `validate`, `--watch` and the
//! Admin API run.

use crate::config::{self, ConfigErrors};

use super::Snapshot;

/// Like [`load_str`], stricter, for `tollgate validate`: a vault reference naming a vault
/// that is neither built in nor declared is an error (at load it is a warning and a 500 on
/// the requests that need it).
pub fn validate_str(text: &str) -> Result<Snapshot, ConfigErrors> {
    let env = |name: &str| std::env::var(name).ok();
    let value = config::parse_value(text, &env)?;
    let mut errors = config::collect::unknown_vault_prefixes(&value);
    let (raw, typing) = config::typed_partial(&value);
    // The rest of the document is still compiled, so its errors show in the same run;
    // those about an object that lost a value to a typing error are left out (they may
    // only follow from the removal).
    let compiled = raw.map(|raw| Snapshot::compile(raw, &env));
    let lost = |path: &str| {
        typing.0.iter().any(|t| {
            t.path == path
                || t.path.starts_with(&format!("{path}."))
                || t.path.starts_with(&format!("{path}["))
        })
    };
    let snap = match compiled {
        Some(Ok(snap)) => Some(snap),
        Some(Err(e)) => {
            errors.extend(e.0.into_iter().filter(|c| !lost(&c.path)));
            None
        }
        None => None,
    };
    let mut all = typing.0;
    for e in errors {
        if !all
            .iter()
            .any(|x| x.path == e.path && x.message == e.message)
        {
            all.push(e);
        }
    }
    match snap {
        Some(snap) if all.is_empty() => Ok(snap),
        _ => Err(ConfigErrors(all)),
    }
}

/// Loads and compiles config text using the process environment.
pub fn load_str(text: &str) -> Result<Snapshot, ConfigErrors> {
    load_str_env(text, &|name: &str| std::env::var(name).ok())
}

/// Loads and compiles config text, reading environment variables through `env`.
pub fn load_str_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Snapshot, ConfigErrors> {
    let raw = config::parse_document(text, env)?;
    Snapshot::compile(raw, env)
}

/// Loads and compiles a config file.
pub fn load_file(path: &std::path::Path) -> Result<Snapshot, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single("", format!("cannot read {}: {e}", path.display())))?;
    load_str(&text)
}

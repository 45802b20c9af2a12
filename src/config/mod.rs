//! Kong's declarative config as data: text → decK templates → raw document (typed, every
//! error with its field path), vault references and ids. Compiling it into a running
//! snapshot is `gateway::`'s job.

pub mod collect;
pub mod entities;
pub mod env;
pub mod hcv;
pub mod ids;
pub mod plugins;
pub mod raw;
pub mod vault;

use std::fmt;

/// One problem in a config, with the path of the field it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config (load fails when there is at least one).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// A single error without a field path.
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigIssue {
            path: path.into(),
            message: message.into(),
        }])
    }
}

/// serde's messages quote with backticks; Kong users expect double quotes.
pub(crate) fn tidy_serde_message(m: &str) -> String {
    m.replace('`', "\"")
}

/// Parses YAML or JSON text (after decK substitution) into a JSON value: a mapping.
pub fn parse_value(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<serde_json::Value, ConfigErrors> {
    let text = env::substitute(text, env).map_err(|e| ConfigErrors::single("", e.to_string()))?;
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text)
            .map_err(|e| ConfigErrors::single("", format!("invalid JSON: {e}")))?
    } else {
        yaml_value(&text)?
    };
    if !value.is_object() {
        return Err(ConfigErrors::single(
            "",
            "expected a declarative configuration (a mapping with _format_version)",
        ));
    }
    Ok(value)
}

/// A YAML document as JSON. `<<` merge keys (YAML 1.1, which decK files use to share plugin
/// configs) are resolved first; that goes through YAML's own value, which refuses duplicate
/// keys, so documents without merge keys keep the direct path (a repeated key: the last one
/// wins, as in Kong).
fn yaml_value(text: &str) -> Result<serde_json::Value, ConfigErrors> {
    let invalid =
        |e: &dyn std::fmt::Display| ConfigErrors::single("", format!("invalid YAML: {e}"));
    if !text.contains("<<") {
        return serde_norway::from_str(text).map_err(|e| invalid(&e));
    }
    let mut yaml: serde_norway::Value = serde_norway::from_str(text).map_err(|e| invalid(&e))?;
    yaml.apply_merge().map_err(|e| invalid(&e))?;
    serde_json::to_value(yaml).map_err(|e| invalid(&e))
}

/// Types a parsed document; every error names its field (a misspelt one with a hint).
pub fn typed_document(value: serde_json::Value) -> Result<raw::RawConfig, ConfigErrors> {
    match typed_partial(&value) {
        (Some(raw), e) if e.0.is_empty() => Ok(raw),
        (_, e) => Err(e),
    }
}

/// The document's typing errors, and the document typed without the values in error.
pub fn typed_partial(value: &serde_json::Value) -> (Option<raw::RawConfig>, ConfigErrors) {
    let (raw, errors) = collect::deserialize_partial::<raw::RawConfig>(value);
    let errors = errors
        .into_iter()
        .map(|(path, m)| {
            let message = match collect::did_you_mean(&path, &m, "", &[]) {
                Some(hint) => tidy_serde_message(&format!("{m}; {hint}")),
                None => tidy_serde_message(&m),
            };
            ConfigIssue { path, message }
        })
        .collect();
    (raw, ConfigErrors(errors))
}

/// Parses YAML or JSON text (after decK substitution) into the raw document.
pub fn parse_document(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<raw::RawConfig, ConfigErrors> {
    typed_document(parse_value(text, env)?)
}

/// The config used when `tollgate serve` is given no `--config` (documented in README.md).
pub const EMBEDDED_DEFAULT: &str = include_str!("default.yaml");

/// The environment variable the embedded default reads the OpenAI key from.
pub const DEFAULT_KEY_VARIABLE: &str = "OPENAI_API_KEY";

/// The embedded default with every route sent to `upstream` (a local mock) and no provider
/// key: what `tollgate serve --demo` runs.
pub fn demo_config(upstream: &str) -> Result<String, String> {
    let mut doc: serde_json::Value = serde_norway::from_str(EMBEDDED_DEFAULT)
        .map_err(|e| format!("the embedded default: {e}"))?;
    let services = doc
        .get_mut("services")
        .and_then(serde_json::Value::as_array_mut)
        .ok_or("the embedded default has no services")?;
    for service in services {
        service["url"] = serde_json::Value::String(upstream.to_string());
        let routes = service
            .get_mut("routes")
            .and_then(serde_json::Value::as_array_mut)
            .into_iter()
            .flatten();
        let plugins = routes.flat_map(|r| {
            r.get_mut("plugins")
                .and_then(serde_json::Value::as_array_mut)
                .into_iter()
                .flatten()
        });
        for config in plugins.filter_map(|p| p.get_mut("config")) {
            if let Some(c) = config.as_object_mut() {
                c.remove("auth");
            }
            config["model"]["options"]["upstream_url"] =
                serde_json::Value::String(upstream.to_string());
        }
    }
    serde_norway::to_string(&doc).map_err(|e| format!("the demo config: {e}"))
}

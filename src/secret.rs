//! Secrets that cannot leak by accident: `Debug` and `Serialize` print a redaction marker.

use std::fmt;

/// A secret value (provider key, API key); only `expose()` reveals it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// The secret itself, for the one place that must send it (an upstream header).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(REDACTED)")
    }
}

impl<T> serde::Serialize for Secret<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("REDACTED")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("sk-very-secret".to_string());
        assert_eq!(format!("{s:?}"), "Secret(REDACTED)");
        assert_eq!(
            serde_json::to_string(&s).unwrap_or_default(),
            "\"REDACTED\""
        );
        assert_eq!(s.expose(), "sk-very-secret");
    }
}

//! Secrets sealed for a shared store (a cluster's configuration in PostgreSQL): AES-256-GCM
//! under a key from the environment (`TOLLGATE_STORE_KEY`), so a plain provider key written
//! through the Admin API never sits in the database in clear. A previous key
//! (`TOLLGATE_STORE_KEY_PREVIOUS`) still opens what it sealed while a rotation is under way;
//! every save seals with the current one.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// What a sealed value starts with.
pub const PREFIX: &str = "tgenc:v1:";

/// The environment variable holding the current key (32 bytes, base64).
pub const KEY_VAR: &str = "TOLLGATE_STORE_KEY";
/// The environment variable holding the key being rotated out.
pub const PREVIOUS_KEY_VAR: &str = "TOLLGATE_STORE_KEY_PREVIOUS";

/// The keys secrets are sealed and opened with.
pub struct Sealer {
    current: LessSafeKey,
    previous: Option<LessSafeKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

/// A key from its base64 text.
fn key(var: &str, text: &str) -> Result<LessSafeKey, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| format!("{var} is not base64 (make one with `openssl rand -base64 32`)"))?;
    let unbound = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| {
        format!(
            "{var} must be 32 bytes once decoded, not {} (make one with `openssl rand -base64 32`)",
            bytes.len()
        )
    })?;
    Ok(LessSafeKey::new(unbound))
}

impl Sealer {
    /// The keys named by the environment (`env` reads a variable); None without a current
    /// key.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Sealer>, String> {
        let Some(current) = env(KEY_VAR).filter(|k| !k.trim().is_empty()) else {
            return Ok(None);
        };
        let previous = env(PREVIOUS_KEY_VAR)
            .filter(|k| !k.trim().is_empty())
            .map(|k| key(PREVIOUS_KEY_VAR, &k))
            .transpose()?;
        Ok(Some(Sealer {
            current: key(KEY_VAR, &current)?,
            previous,
            rng: SystemRandom::new(),
        }))
    }

    /// `plain` sealed with the current key (a fresh nonce each time).
    pub fn seal(&self, plain: &str) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| "no randomness for a nonce".to_string())?;
        let mut data = plain.as_bytes().to_vec();
        self.current
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// The plain text of a sealed value, with the current key or the previous one.
    pub fn open(&self, sealed: &str) -> Result<String, String> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|r| r.len() > NONCE_LEN)
            .ok_or("not a sealed value")?;
        let (nonce, data) = raw.split_at(NONCE_LEN);
        for k in std::iter::once(&self.current).chain(self.previous.as_ref()) {
            let Ok(nonce) = Nonce::try_assume_unique_for_key(nonce) else {
                break;
            };
            let mut buf = data.to_vec();
            if let Ok(plain) = k.open_in_place(nonce, Aad::empty(), &mut buf) {
                return String::from_utf8(plain.to_vec())
                    .map_err(|_| "a sealed value is not text".to_string());
            }
        }
        Err(format!(
            "a sealed secret opens with neither {KEY_VAR} nor {PREVIOUS_KEY_VAR}: this node has another key than the one that sealed it"
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    const A: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const B: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    #[test]
    fn seals_opens_and_rotates() {
        let a = Sealer::from_env(&env(&[(KEY_VAR, A)])).unwrap().unwrap();
        let sealed = a.seal("sk-secret").unwrap();
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("sk-secret"));
        assert_ne!(
            sealed,
            a.seal("sk-secret").unwrap(),
            "a fresh nonce each time"
        );
        assert_eq!(a.open(&sealed).unwrap(), "sk-secret");
        // Rotated: B is current, A previous; A's values still open, new ones are B's.
        let b = Sealer::from_env(&env(&[(KEY_VAR, B), (PREVIOUS_KEY_VAR, A)]))
            .unwrap()
            .unwrap();
        assert_eq!(b.open(&sealed).unwrap(), "sk-secret");
        let only_b = Sealer::from_env(&env(&[(KEY_VAR, B)])).unwrap().unwrap();
        assert!(only_b.open(&sealed).unwrap_err().contains("another key"));
        assert!(Sealer::from_env(&env(&[])).unwrap().is_none());
        let short = Sealer::from_env(&env(&[(KEY_VAR, "c2hvcnQ=")])).unwrap_err();
        assert!(short.contains("32 bytes"), "{short}");
    }
}

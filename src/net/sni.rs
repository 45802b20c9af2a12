//! Kong `certificates` and `snis`: which certificate the TLS listener presents for a server
//! name. Exact names win, then leading wildcards (`*.example.com`), then trailing ones
//! (`example.*`); a name with no entry gets the listener's own certificate.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Certificates by server name.
#[derive(Default)]
pub struct SniTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` → ".example.com".
    leading: Vec<(String, Arc<CertifiedKey>)>,
    /// `example.*` → "example.".
    trailing: Vec<(String, Arc<CertifiedKey>)>,
}

impl std::fmt::Debug for SniTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniTable")
            .field("names", &self.len())
            .finish()
    }
}

impl SniTable {
    /// Adds `name` (checked by the caller) for `key`; false when it is taken.
    pub fn insert(&mut self, name: &str, key: Arc<CertifiedKey>) -> bool {
        let name = name.to_ascii_lowercase();
        if let Some(suffix) = name.strip_prefix('*') {
            if self.leading.iter().any(|(s, _)| s == suffix) {
                return false;
            }
            self.leading.push((suffix.to_string(), key));
        } else if let Some(prefix) = name.strip_suffix('*') {
            if self.trailing.iter().any(|(p, _)| p == prefix) {
                return false;
            }
            self.trailing.push((prefix.to_string(), key));
        } else {
            if self.exact.contains_key(&name) {
                return false;
            }
            self.exact.insert(name, key);
        }
        true
    }

    /// The certificate for `name`, if an entry covers it.
    pub fn find(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        // The longest wildcard wins, as in Kong.
        let lead = self
            .leading
            .iter()
            .filter(|(s, _)| name.ends_with(s.as_str()) && name.len() > s.len())
            .max_by_key(|(s, _)| s.len());
        if let Some((_, k)) = lead {
            return Some(k.clone());
        }
        self.trailing
            .iter()
            .filter(|(p, _)| name.starts_with(p.as_str()) && name.len() > p.len())
            .max_by_key(|(p, _)| p.len())
            .map(|(_, k)| k.clone())
    }

    /// How many names it holds.
    pub fn len(&self) -> usize {
        self.exact.len() + self.leading.len() + self.trailing.len()
    }

    /// It holds no name.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `name` is a valid SNI entry name: a host name, with at most one `*` as its whole
/// first or last label.
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be a host name".into());
    }
    let stars = name.matches('*').count();
    if stars > 1 {
        return Err("only one wildcard is allowed".into());
    }
    if stars == 1 && !(name.starts_with("*.") || name.ends_with(".*")) {
        return Err("wildcard must be leftmost or rightmost character".into());
    }
    let ok = name.split('.').all(|l| {
        l == "*" || (!l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    });
    if !ok || name.parse::<std::net::IpAddr>().is_ok() {
        return Err("must be a host name (not an IP address)".into());
    }
    Ok(())
}

/// A certificate chain and its key from PEM text; errors say which part is wrong.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, (String, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ("cert".to_string(), format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(("cert".into(), "no PEM certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| ("key".to_string(), format!("not a PEM private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        (
            "key".to_string(),
            format!("does not fit the certificate: {e}"),
        )
    })?;
    Ok(Arc::new(ck))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        certified_key(&ck.cert.pem(), &ck.key_pair.serialize_pem()).unwrap()
    }

    #[test]
    fn exact_then_leading_then_trailing() {
        let (a, b, c) = (key("a"), key("b"), key("c"));
        let mut t = SniTable::default();
        assert!(t.insert("api.example.com", a.clone()));
        assert!(t.insert("*.example.com", b.clone()));
        assert!(t.insert("api.*", c.clone()));
        assert!(
            !t.insert("API.example.com", a.clone()),
            "names are case-insensitive"
        );
        let same = |x: &Option<Arc<CertifiedKey>>, y: &Arc<CertifiedKey>| {
            x.as_ref().is_some_and(|x| Arc::ptr_eq(x, y))
        };
        assert!(same(&t.find("API.example.com"), &a));
        assert!(same(&t.find("www.example.com"), &b));
        assert!(same(&t.find("api.example.org"), &c));
        assert!(t.find("example.com").is_none());
        assert!(t.find("other.org").is_none());
        assert!(valid_name("*.example.com").is_ok());
        assert!(valid_name("a.*.com").is_err());
        assert!(valid_name("127.0.0.1").is_err());
        let bad = certified_key("nope", "nope").unwrap_err();
        assert_eq!(bad.0, "cert");
    }
}

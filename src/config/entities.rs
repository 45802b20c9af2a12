//! The compiled entities of a config (services, routes, consumers, credentials, groups):
//! plain data the log serializers, key-auth and the Admin API read. `gateway::snapshot`
//! builds them; log records keep them alive past a config swap.

use std::collections::HashMap;

/// A compiled service.
#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub name: Option<String>,
    pub protocol: String,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub retries: u32,
    pub connect_timeout: u64,
    pub write_timeout: u64,
    pub read_timeout: u64,
    pub enabled: bool,
    pub tags: Option<Vec<String>>,
    pub created_at: i64,
    pub updated_at: i64,
    /// `tls_verify` / `ca_certificates` (None: the default trust).
    pub tls: Option<crate::net::upstream_tls::Trust>,
    /// The upstream its host names, if any.
    pub upstream: Option<std::sync::Arc<Upstream>>,
    pub tls_verify: Option<bool>,
    pub ca_certificates: Option<Vec<String>>,
}

/// A Kong upstream: services whose host is its name go to its targets, by weighted round
/// robin (Kong's default algorithm), a retry to the next one.
#[derive(Debug)]
pub struct Upstream {
    pub id: String,
    pub name: String,
    /// (host, port, weight), weight above 0.
    pub targets: Vec<(String, u16, u32)>,
    /// The `Host` header its requests carry (Kong's `host_header`; None: the upstream's name).
    pub host_header: Option<String>,
    /// Where the next pick starts, in units of weight.
    next: std::sync::atomic::AtomicU64,
}

impl Upstream {
    /// An upstream over `targets`.
    pub fn new(
        id: String,
        name: String,
        targets: Vec<(String, u16, u32)>,
        host_header: Option<String>,
    ) -> Upstream {
        Upstream {
            id,
            name,
            targets,
            host_header,
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The target for the next attempt, weights taken into account, skipping `tried` while
    /// another is left; None without targets.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let total: u64 = self.targets.iter().map(|t| u64::from(t.2)).sum();
        if total == 0 {
            return None;
        }
        let slot = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % total;
        let mut acc = 0u64;
        let first = self.targets.iter().position(|t| {
            acc += u64::from(t.2);
            slot < acc
        })?;
        let n = self.targets.len();
        (0..n)
            .map(|k| (first + k) % n)
            .find(|i| !tried.contains(i))
            .or(Some(first))
    }
}

/// A compiled route with its resolved plugin chain.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
    pub name: Option<String>,
    pub service: Option<usize>,
    pub protocols: Vec<String>,
    pub methods: Option<Vec<String>>,
    pub hosts: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub headers: Option<Vec<(String, Vec<String>)>>,
    pub strip_path: bool,
    pub preserve_host: bool,
    pub regex_priority: i64,
    pub path_handling: String,
    pub https_redirect_status_code: u16,
    pub request_buffering: bool,
    pub response_buffering: bool,
    pub tags: Option<Vec<String>>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Plugin indexes in execution order (Kong PRIORITY, descending).
    pub chain: Vec<usize>,
    /// The chain has a log plugin (the request details are captured only then).
    pub logs: bool,
    /// The chain has a plugin that reads the client's headers as they came after other
    /// plugins changed them (request-transformer's templates; ai-mcp-proxy's tool calls,
    /// which forward the key key-auth hides): they are kept.
    pub transforms: bool,
    /// The chain has a quota plugin (`rate-limiting`, `ai-rate-limiting-advanced`).
    pub quotas: bool,
    /// The chain has a plugin that reads or rewrites the prompt (template, decorator,
    /// guard, sanitizer).
    pub shapes_prompt: bool,
    /// The chain has `prometheus`.
    pub metrics: bool,
    /// The chain has `opentelemetry`.
    pub tracing: bool,
}

/// One consumer (kept for the Admin API and for later auth plugins).
#[derive(Debug, Clone)]
pub struct Consumer {
    pub id: String,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub created_at: i64,
}

/// A `key-auth` credential: whose it is and until when.
#[derive(Debug, Clone)]
pub struct Credential {
    pub id: String,
    /// Index into `consumers`.
    pub consumer: usize,
    /// Unix seconds (`created_at + ttl`); None: never expires.
    pub expires_at: Option<i64>,
    /// `tags`, comma-separated ("" when none).
    pub tags: String,
}

/// The entities of one compiled config.
#[derive(Debug, Default)]
pub struct Entities {
    pub services: Vec<Service>,
    pub routes: Vec<Route>,
    pub consumers: Vec<Consumer>,
    /// `key-auth` credentials by the digest of their key.
    pub credentials: HashMap<[u8; 32], Credential>,
    /// The `tags` of the credentials that have some, comma-separated, by credential id
    /// (usage records carry them).
    pub credential_tags: HashMap<String, String>,
    /// Consumer groups: (id, name).
    pub groups: Vec<(String, String)>,
    /// Each consumer's groups (indexes into `groups`), the name sorting first first.
    pub member_of: Vec<Vec<usize>>,
    /// Each route's and service's JSON as log records show it (index-aligned).
    pub route_log: Vec<Option<Box<serde_json::value::RawValue>>>,
    pub service_log: Vec<Option<Box<serde_json::value::RawValue>>>,
}

/// The digest a key is stored and looked up by (keys are never kept in clear).
pub fn key_digest(key: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"tollgate key-auth\0");
    ctx.update(key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `sha256:<hex>`, as `key_hash` fields hold it.
pub fn key_hash_text(d: &[u8; 32]) -> String {
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod upstream_tests {
    use super::Upstream;

    #[test]
    fn picks_by_weight_and_skips_what_was_tried() {
        let t = |h: &str, w| (h.to_string(), 80, w);
        let u = Upstream::new(
            "id".into(),
            "u".into(),
            vec![t("a", 300), t("b", 100)],
            None,
        );
        let mut seen = [0; 2];
        for _ in 0..400 {
            seen[u.pick(&[]).unwrap()] += 1;
        }
        assert_eq!(seen, [300, 100]);
        assert_eq!(u.pick(&[0]), Some(1));
        assert_eq!(
            u.pick(&[0, 1]).map(|i| i < 2),
            Some(true),
            "all tried: any again"
        );
        let empty = Upstream::new("id".into(), "e".into(), Vec::new(), None);
        assert_eq!(empty.pick(&[]), None);
    }
}

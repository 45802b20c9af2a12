//! The immutable, compiled view of one config: entities with ids, the router, and each
//! route's plugin chain. A new snapshot replaces the old one atomically.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::entities::{
    key_digest, key_hash_text, Consumer, Credential, Entities, Route, Service,
};
use crate::config::raw::{EntityRef, RawConfig, RawPlugin, RawRoute, RawService};
use crate::config::vault::{self, VaultTable};
use crate::config::{ids, tidy_serde_message, ConfigErrors, ConfigIssue};
use crate::gateway::router::{RouteSpec, Router};
use crate::plugins::registry::{self, PluginConfig};
use crate::plugins::Plugin;

/// A plugin instance: entity fields plus its compiled runtime.
#[derive(Debug)]
pub struct PluginInstance {
    pub id: String,
    pub name: String,
    pub instance_name: Option<String>,
    pub enabled: bool,
    pub service: Option<usize>,
    pub route: Option<usize>,
    pub consumer: Option<String>,
    /// The consumer group's id (consumer-group-scoped instances).
    pub consumer_group: Option<String>,
    pub protocols: Vec<String>,
    pub tags: Option<Vec<String>>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The config with defaults filled in, as the Admin API shows it (secrets redacted there).
    pub config_json: Value,
    pub plugin: Plugin,
    /// Where the instance is in the document (`services[0].routes[1].plugins[0]`), for
    /// what activating it reports.
    pub path: String,
}

/// The compiled config: its entities (shared with log records, which outlive a swap)
/// and what runs them.
#[derive(Debug)]
pub struct Snapshot {
    pub entities: Arc<Entities>,
    pub plugins: Vec<PluginInstance>,
    pub router: Router,
    /// Global plugins, for requests that match no route.
    pub global_chain: Vec<usize>,
    /// The global chain has a log plugin.
    pub global_logs: bool,
    /// A global `prometheus` instance (requests no route matched are counted too).
    pub global_metrics: bool,
    /// `configuration_hash` (32 hex digits).
    pub hash: String,
    /// Problems that do not stop loading (e.g. an unset vault variable).
    pub warnings: Vec<ConfigIssue>,
    pub format_version: String,
    /// The TLS listener's certificates by server name (`certificates`, `snis`).
    pub sni: Arc<crate::net::sni::SniTable>,
    /// Some plugin is scoped to a consumer or group (chains are then resolved per request).
    pub consumer_plugins: bool,
    /// The vaults its secrets were read from (refreshed once it is in service).
    vaults: VaultTable,
}

impl std::ops::Deref for Snapshot {
    type Target = Entities;
    fn deref(&self) -> &Entities {
        &self.entities
    }
}

fn parse_key_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The `keyauth_credentials`, nested under consumers or at the top level.
fn credentials(
    b: &mut Builder<'_>,
    raw: &RawConfig,
    consumers: &[Consumer],
) -> HashMap<[u8; 32], Credential> {
    let mut out: HashMap<[u8; 32], Credential> = HashMap::new();
    let nested = raw.consumers.iter().enumerate().flat_map(|(i, c)| {
        c.keyauth_credentials.iter().enumerate().map(move |(j, k)| {
            (
                p(&p("", "consumers", i), "keyauth_credentials", j),
                Some(i),
                k,
            )
        })
    });
    let top = raw
        .keyauth_credentials
        .iter()
        .enumerate()
        .map(|(j, k)| (p("", "keyauth_credentials", j), None, k));
    let all: Vec<_> = nested.chain(top).collect();
    for (path, owner, k) in all {
        let consumer = match (owner, k.consumer.as_ref().and_then(EntityRef::key)) {
            (Some(i), None) => Some(i),
            (Some(_), Some(_)) => {
                b.err(
                    format!("{path}.consumer"),
                    "must not be set on a credential nested under a consumer",
                );
                continue;
            }
            (None, Some(key)) => consumers.iter().position(|c| {
                c.id == key
                    || c.username.as_deref() == Some(key)
                    || c.custom_id.as_deref() == Some(key)
            }),
            (None, None) => {
                b.err(format!("{path}.consumer"), "required field missing");
                continue;
            }
        };
        let Some(consumer) = consumer else {
            b.err(
                format!("{path}.consumer"),
                "invalid reference (no such entry in 'consumers')",
            );
            continue;
        };
        let digest = match (&k.key, &k.key_hash) {
            (Some(key), None) if !key.is_empty() => key_digest(key),
            (None, Some(h)) => match parse_key_hash(h) {
                Some(d) => d,
                None => {
                    b.err(
                        format!("{path}.key_hash"),
                        "expected sha256:<64 hex digits>",
                    );
                    continue;
                }
            },
            (Some(_), Some(_)) => {
                b.err(path.clone(), "only one of 'key' and 'key_hash' may be set");
                continue;
            }
            _ => {
                b.err(format!("{path}.key"), "required field missing");
                continue;
            }
        };
        let id =
            k.id.clone()
                .unwrap_or_else(|| ids::entity_id("keyauth_credentials", &key_hash_text(&digest)));
        let created = k
            .created_at
            .unwrap_or_else(|| (crate::rt::clock::millis_since_epoch() / 1000) as i64);
        let expires_at = k
            .ttl
            .filter(|t| *t > 0)
            .map(|t| created.saturating_add(t as i64));
        if out
            .insert(
                digest,
                Credential {
                    id,
                    consumer,
                    expires_at,
                    tags: k.tags.as_deref().unwrap_or_default().join(","),
                },
            )
            .is_some()
        {
            // The key itself is never echoed.
            b.err(
                format!("{path}.key"),
                "UNIQUE violation detected on '{key=[REDACTED]}'",
            );
        }
    }
    out
}

/// Builds `path` strings like `services[0].routes[1].plugins[2]`.
fn p(parent: &str, field: &str, i: usize) -> String {
    if parent.is_empty() {
        format!("{field}[{i}]")
    } else {
        format!("{parent}.{field}[{i}]")
    }
}

/// A plugin found while walking the document: (path, entity, nested service, nested route, nested consumer).
type FoundPlugin = (
    String,
    RawPlugin,
    Option<usize>,
    Option<usize>,
    Option<String>,
);
/// A plugin's scope: (name, service, route, consumer).
type Scope = (
    String,
    Option<usize>,
    Option<usize>,
    Option<String>,
    Option<String>,
);

struct Builder<'a> {
    errors: Vec<ConfigIssue>,
    warnings: Vec<ConfigIssue>,
    services: Vec<Service>,
    routes: Vec<Route>,
    /// (path, raw plugin, service idx, route idx, consumer key)
    plugins: Vec<FoundPlugin>,
    route_specs: Vec<RouteSpec>,
    env: &'a dyn Fn(&str) -> Option<String>,
    legacy_paths: bool,
    /// `ca_certificates` by id.
    cas: HashMap<String, Vec<rustls::pki_types::CertificateDer<'static>>>,
    /// `upstreams` by name.
    upstreams: HashMap<String, Arc<crate::config::entities::Upstream>>,
}

impl Builder<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }

    fn service(&mut self, path: &str, s: &RawService) -> Option<usize> {
        let mut protocol = s.protocol.clone().unwrap_or_else(|| "http".into());
        let mut host = s.host.clone();
        let mut port = s.port;
        let mut spath = s.path.clone();
        if let Some(url) = &s.url {
            match url.parse::<http::Uri>() {
                Ok(u) if u.scheme().is_some() && u.host().is_some() => {
                    protocol = u.scheme_str().unwrap_or("http").to_string();
                    host = u.host().map(str::to_string);
                    port =
                        u.port_u16()
                            .or(port)
                            .or(Some(if protocol == "https" { 443 } else { 80 }));
                    let up = u.path();
                    spath = if up.is_empty() || (up == "/" && !url.ends_with('/')) {
                        None
                    } else {
                        Some(up.to_string())
                    };
                }
                _ => {
                    self.err(format!("{path}.url"), "invalid url");
                    return None;
                }
            }
        }
        if !matches!(protocol.as_str(), "http" | "https") {
            let allowed = [
                "grpc",
                "grpcs",
                "tcp",
                "tls",
                "tls_passthrough",
                "udp",
                "ws",
                "wss",
            ];
            let msg = if allowed.contains(&protocol.as_str()) {
                format!("protocol '{protocol}' is not supported by tollgate (http, https)")
            } else {
                "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp, ws, wss"
                    .to_string()
            };
            self.err(format!("{path}.protocol"), msg);
        }
        let Some(host) = host else {
            self.err(format!("{path}.host"), "required field missing");
            return None;
        };
        if let Some(sp) = &spath {
            if !sp.starts_with('/') {
                self.err(format!("{path}.path"), "should start with: /");
            }
        }
        let id = s.id.clone().unwrap_or_else(|| match &s.name {
            Some(n) => ids::entity_id("services", n),
            None => ids::positional_id("services", path),
        });
        let tls = self.service_trust(path, s);
        self.services.push(Service {
            id,
            name: s.name.clone(),
            port: port.unwrap_or(if protocol == "https" { 443 } else { 80 }),
            protocol,
            path: spath,
            retries: s.retries.unwrap_or(5),
            connect_timeout: s.connect_timeout.unwrap_or(60000),
            write_timeout: s.write_timeout.unwrap_or(60000),
            read_timeout: s.read_timeout.unwrap_or(60000),
            enabled: s.enabled.unwrap_or(true),
            tags: s.tags.clone(),
            created_at: s.created_at.unwrap_or(0),
            updated_at: s.updated_at.unwrap_or(0),
            tls,
            tls_verify: s.tls_verify,
            ca_certificates: s.ca_certificates.clone(),
            upstream: self.upstreams.get(&host).cloned(),
            host,
        });
        Some(self.services.len() - 1)
    }

    /// Kong `upstreams` (with their nested `targets`) and top-level `targets`, what
    /// Tollgate balances as Kong does by default: weighted round robin; what it cannot
    /// honour (other algorithms, hashing, health checks, client certificates, sticky
    /// sessions) is refused naming the field.
    fn upstreams(&mut self, raw: &crate::config::raw::RawConfig) {
        // (id, name, targets, host_header)
        type Built = (String, String, Vec<(String, u16, u32)>, Option<String>);
        let mut built: Vec<Built> = Vec::new();
        for (i, u) in raw.upstreams.iter().enumerate() {
            let path = p("", "upstreams", i);
            let Some(name) = u.name.clone() else {
                self.err(format!("{path}.name"), "required field missing");
                continue;
            };
            self.upstream_unsupported(&path, u);
            let id =
                u.id.clone()
                    .unwrap_or_else(|| ids::entity_id("upstreams", &name));
            let mut targets = Vec::new();
            for (j, t) in u.targets.iter().enumerate() {
                if let Some(t) = self.target(&p(&path, "targets", j), t) {
                    targets.push(t);
                }
            }
            built.push((id, name, targets, u.host_header.clone()));
        }
        for (j, t) in raw.targets.iter().enumerate() {
            let path = p("", "targets", j);
            let key = t
                .upstream
                .as_ref()
                .and_then(|r| r.key())
                .map(str::to_string);
            let Some(at) =
                key.and_then(|k| built.iter().position(|(id, n, ..)| *id == k || *n == k))
            else {
                self.err(
                    format!("{path}.upstream"),
                    "does not name an upstream of this configuration",
                );
                continue;
            };
            if let Some(t) = self.target(&path, t) {
                built[at].2.push(t);
            }
        }
        for (id, name, targets, host_header) in built {
            let u = crate::config::entities::Upstream::new(id, name.clone(), targets, host_header);
            self.upstreams.insert(name, Arc::new(u));
        }
    }

    /// A target's `address:port` and weight (Kong's defaults: port 8000, weight 100); a
    /// weight of 0 takes it out.
    fn target(
        &mut self,
        path: &str,
        t: &crate::config::raw::RawTarget,
    ) -> Option<(String, u16, u32)> {
        let Some(text) = t.target.as_deref() else {
            self.err(format!("{path}.target"), "required field missing");
            return None;
        };
        let weight = t.weight.unwrap_or(100);
        if weight > 65_535 {
            self.err(
                format!("{path}.weight"),
                "value should be between 0 and 65535",
            );
            return None;
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((h, port)) if !h.ends_with(']') || h.starts_with('[') => match port.parse::<u16>()
            {
                Ok(port) => (h.trim_matches(|c| c == '[' || c == ']').to_string(), port),
                Err(_) => {
                    self.err(
                        format!("{path}.target"),
                        "invalid target: expected host[:port]",
                    );
                    return None;
                }
            },
            _ => (text.to_string(), 8000),
        };
        (weight > 0).then_some((host, port, weight))
    }

    /// The upstream fields whose behaviour Tollgate does not have: refused by name.
    fn upstream_unsupported(&mut self, path: &str, u: &crate::config::raw::RawUpstream) {
        if let Some(a) = u.algorithm.as_deref().filter(|a| *a != "round-robin") {
            self.err(
                format!("{path}.algorithm"),
                format!("'{a}' is not supported by tollgate yet (round-robin is)"),
            );
        }
        if let Some(h) = u.hash_on.as_deref().filter(|h| *h != "none") {
            self.err(
                format!("{path}.hash_on"),
                format!("'{h}' is not supported by tollgate yet (none is)"),
            );
        }
        if u.client_certificate.as_ref().is_some_and(|c| !c.is_null()) {
            self.err(
                format!("{path}.client_certificate"),
                "client certificates to upstreams are not supported by tollgate yet",
            );
        }
        if u.sticky_sessions_cookie.is_some() {
            self.err(
                format!("{path}.sticky_sessions_cookie"),
                "sticky sessions are not supported by tollgate yet",
            );
        }
        // Kong's defaults (all thresholds 0) check nothing; anything else would.
        let checks = u.healthchecks.as_ref().map(|h| {
            let n = |p: &str| h.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
            [
                "/active/healthy/interval",
                "/active/unhealthy/interval",
                "/passive/unhealthy/http_failures",
                "/passive/unhealthy/tcp_failures",
                "/passive/unhealthy/timeouts",
            ]
            .iter()
            .any(|p| n(p) > 0.0)
        });
        if checks == Some(true) {
            self.err(format!("{path}.healthchecks"), "upstream health checks are not supported by tollgate yet (ai-proxy-advanced's balancer.healthchecks are)");
        }
    }

    /// The upstream TLS trust a service asks for: `tls_verify: false` turns verification
    /// off; `ca_certificates` trusts only those CAs; otherwise the default trust.
    fn service_trust(
        &mut self,
        path: &str,
        s: &RawService,
    ) -> Option<crate::net::upstream_tls::Trust> {
        use crate::net::upstream_tls;
        if s.tls_verify_depth.is_some() {
            self.err(
                format!("{path}.tls_verify_depth"),
                "not supported by tollgate (rustls bounds certificate chains itself)",
            );
        }
        if s.client_certificate.as_ref().is_some_and(|c| !c.is_null()) {
            self.err(
                format!("{path}.client_certificate"),
                "client certificates to upstreams are not supported by tollgate yet",
            );
        }
        if s.tls_verify == Some(false) {
            return upstream_tls::insecure();
        }
        let ids = s.ca_certificates.as_ref().filter(|c| !c.is_empty())?;
        let mut certs = Vec::new();
        for (j, id) in ids.iter().enumerate() {
            match self.cas.get(id) {
                Some(c) => certs.extend(c.iter().cloned()),
                None => self.err(
                    p(path, "ca_certificates", j),
                    format!("invalid reference 'ca_certificates: {id}' (no such entry in 'ca_certificates')"),
                ),
            }
        }
        if certs.is_empty() {
            return None;
        }
        match upstream_tls::only(&certs) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(format!("{path}.ca_certificates"), e);
                None
            }
        }
    }

    fn route(&mut self, path: &str, r: &RawRoute, service: Option<usize>) -> Option<usize> {
        let mut paths = r.paths.clone();
        if let Some(ps) = paths.as_mut() {
            for (i, pth) in ps.iter_mut().enumerate() {
                if self.legacy_paths && !pth.starts_with('~') && looks_like_regex(pth) {
                    // _format_version < 3.0: Kong auto-prefixes regex-looking paths on load.
                    pth.insert(0, '~');
                }
                let at = p(path, "paths", i);
                if !(pth.starts_with('/') || pth.starts_with("~/")) {
                    self.err(at, "should start with: / (fixed path) or ~/ (regex path)");
                } else if !pth.starts_with('~') && pth.contains("//") {
                    self.err(at, "must not have empty segments");
                } else if let Some(re) = pth.strip_prefix('~') {
                    if let Err(e) = crate::gateway::router::compile_path_regex(re) {
                        self.err(at, e.to_string());
                    }
                }
            }
        }
        let protocols = r
            .protocols
            .clone()
            .unwrap_or_else(|| vec!["http".into(), "https".into()]);
        for (i, proto) in protocols.iter().enumerate() {
            if !matches!(proto.as_str(), "http" | "https") {
                self.err(
                    p(path, "protocols", i),
                    format!("protocol '{proto}' is not supported by tollgate (http, https)"),
                );
            }
        }
        let empty = |v: &Option<Vec<String>>| v.as_ref().map(|v| v.is_empty()).unwrap_or(true);
        let no_headers = r.headers.as_ref().map(|h| h.is_empty()).unwrap_or(true);
        if empty(&r.methods) && empty(&r.hosts) && empty(&paths) && no_headers && empty(&r.snis) {
            self.err(
                path.to_string(),
                "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'",
            );
        }
        let headers: Option<Vec<(String, Vec<String>)>> = r
            .headers
            .as_ref()
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        if let Some(hs) = &headers {
            for (k, _) in hs {
                if k.eq_ignore_ascii_case("host") {
                    self.err(
                        format!("{path}.headers"),
                        "cannot contain 'host' header, which must be specified in the 'hosts' attribute",
                    );
                }
            }
        }
        if r.expression.is_some() || r.priority.is_some() {
            self.err(
                path.to_string(),
                "'expression' and 'priority' need router_flavor=expressions, which tollgate does not support",
            );
        }
        if let Some(code) = r.https_redirect_status_code {
            if ![426, 301, 302, 307, 308].contains(&code) {
                self.err(
                    format!("{path}.https_redirect_status_code"),
                    "expected one of: 426, 301, 302, 307, 308",
                );
            }
        }
        let id = r.id.clone().unwrap_or_else(|| match &r.name {
            Some(n) => ids::entity_id("routes", n),
            None => ids::positional_id("routes", path),
        });
        self.route_specs.push(RouteSpec {
            methods: r.methods.clone().unwrap_or_default(),
            hosts: r.hosts.clone().unwrap_or_default(),
            headers: headers.clone().unwrap_or_default(),
            paths: paths.clone().unwrap_or_default(),
            regex_priority: r.regex_priority.unwrap_or(0),
            snis: r.snis.as_ref().map(Vec::len).unwrap_or(0),
        });
        self.routes.push(Route {
            id,
            name: r.name.clone(),
            service,
            protocols,
            methods: r.methods.clone(),
            hosts: r.hosts.clone(),
            paths,
            headers,
            strip_path: r.strip_path.unwrap_or(true),
            preserve_host: r.preserve_host.unwrap_or(false),
            regex_priority: r.regex_priority.unwrap_or(0),
            path_handling: r.path_handling.clone().unwrap_or_else(|| "v0".into()),
            https_redirect_status_code: r.https_redirect_status_code.unwrap_or(426),
            request_buffering: r.request_buffering.unwrap_or(true),
            response_buffering: r.response_buffering.unwrap_or(true),
            tags: r.tags.clone(),
            created_at: r.created_at.unwrap_or(0),
            updated_at: r.updated_at.unwrap_or(0),
            chain: Vec::new(),
            logs: false,
            transforms: false,
            quotas: false,
            shapes_prompt: false,
            metrics: false,
            tracing: false,
        });
        Some(self.routes.len() - 1)
    }

    fn find_service(&self, key: &str) -> Option<usize> {
        self.services
            .iter()
            .position(|s| s.id == key || s.name.as_deref() == Some(key))
    }

    fn find_route(&self, key: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.id == key || r.name.as_deref() == Some(key))
    }
}

/// Kong's heuristic for pre-3.0 configs: a path with characters outside the URI-safe set is a regex.
fn looks_like_regex(path: &str) -> bool {
    !path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/.-_~%".contains(c))
}

impl Snapshot {
    /// Validates and compiles a raw document; every error is collected, each with its path.
    pub fn compile(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut b = Builder {
            errors: Vec::new(),
            warnings: Vec::new(),
            services: Vec::new(),
            routes: Vec::new(),
            plugins: Vec::new(),
            route_specs: Vec::new(),
            env,
            legacy_paths: false,
            cas: HashMap::new(),
            upstreams: HashMap::new(),
        };
        let format_version = match raw.format_version.as_deref() {
            Some(v @ ("1.1" | "2.1" | "3.0")) => v.to_string(),
            Some(v) => {
                b.err("_format_version", format!("unsupported declarative config version '{v}' (expected one of: 1.1, 2.1, 3.0)"));
                v.to_string()
            }
            None => {
                b.err("_format_version", "required field missing");
                String::new()
            }
        };
        b.legacy_paths = format_version != "3.0";
        b.upstreams(&raw);

        for (i, ca) in raw.ca_certificates.iter().enumerate() {
            let path = p("", "ca_certificates", i);
            match crate::net::upstream_tls::parse_pem(ca.cert.as_bytes()) {
                Ok(certs) => {
                    let id = ca
                        .id
                        .clone()
                        .unwrap_or_else(|| ids::entity_id("ca_certificates", ca.cert.trim()));
                    b.cas.insert(id, certs);
                }
                Err(e) => b.err(format!("{path}.cert"), e),
            }
        }
        // Services and their nested routes/plugins.
        for (i, s) in raw.services.iter().enumerate() {
            let sp = p("", "services", i);
            let Some(si) = b.service(&sp, s) else {
                continue;
            };
            for (j, r) in s.routes.iter().enumerate() {
                let rp = p(&sp, "routes", j);
                if r.service.is_some() {
                    b.err(
                        format!("{rp}.service"),
                        "must not be set on a route nested under a service",
                    );
                }
                if let Some(ri) = b.route(&rp, r, Some(si)) {
                    for (k, pl) in r.plugins.iter().enumerate() {
                        b.plugins
                            .push((p(&rp, "plugins", k), pl.clone(), None, Some(ri), None));
                    }
                }
            }
            for (k, pl) in s.plugins.iter().enumerate() {
                b.plugins
                    .push((p(&sp, "plugins", k), pl.clone(), Some(si), None, None));
            }
        }
        // Top-level routes reference a service by name or id.
        for (i, r) in raw.routes.iter().enumerate() {
            let rp = p("", "routes", i);
            let service = match r.service.as_ref().and_then(EntityRef::key) {
                Some(key) => {
                    match b.find_service(key) {
                        Some(si) => Some(si),
                        None => {
                            b.err(format!("{rp}.service"), format!("invalid reference 'service: {key}' (no such entry in 'services')"));
                            None
                        }
                    }
                }
                None => None,
            };
            if let Some(ri) = b.route(&rp, r, service) {
                for (k, pl) in r.plugins.iter().enumerate() {
                    b.plugins
                        .push((p(&rp, "plugins", k), pl.clone(), None, Some(ri), None));
                }
            }
        }
        // Consumers (plugins scoped to them are kept but cannot match without an auth plugin).
        let mut consumers = Vec::new();
        for (i, c) in raw.consumers.iter().enumerate() {
            let cp = p("", "consumers", i);
            if c.username.is_none() && c.custom_id.is_none() {
                b.err(
                    cp.clone(),
                    "at least one of these fields must be non-empty: 'custom_id', 'username'",
                );
            }
            let id = c.id.clone().unwrap_or_else(|| {
                ids::entity_id(
                    "consumers",
                    c.username
                        .as_deref()
                        .or(c.custom_id.as_deref())
                        .unwrap_or(&cp),
                )
            });
            for (k, pl) in c.plugins.iter().enumerate() {
                b.plugins.push((
                    p(&cp, "plugins", k),
                    pl.clone(),
                    None,
                    None,
                    Some(id.clone()),
                ));
            }
            consumers.push(Consumer {
                id,
                username: c.username.clone(),
                custom_id: c.custom_id.clone(),
                tags: c.tags.clone(),
                created_at: c.created_at.unwrap_or(0),
            });
        }
        let credentials = credentials(&mut b, &raw, &consumers);
        let credential_tags = credentials
            .values()
            .filter(|c| !c.tags.is_empty())
            .map(|c| (c.id.clone(), c.tags.clone()))
            .collect();
        // Consumer groups: ids, their plugins (scoped by a group reference), memberships.
        let groups: Vec<(String, String)> = raw
            .consumer_groups
            .iter()
            .map(|g| {
                let id =
                    g.id.clone()
                        .unwrap_or_else(|| ids::entity_id("consumer_groups", &g.name));
                (id, g.name.clone())
            })
            .collect();
        let find_consumer = |k: &str| {
            consumers.iter().position(|c| {
                c.id == k || c.username.as_deref() == Some(k) || c.custom_id.as_deref() == Some(k)
            })
        };
        let find_group = |k: &str| groups.iter().position(|(id, name)| id == k || name == k);
        let mut member_of: Vec<Vec<usize>> = vec![Vec::new(); consumers.len()];
        for (gi, g) in raw.consumer_groups.iter().enumerate() {
            let gp = p("", "consumer_groups", gi);
            for (k, pl) in g.plugins.iter().enumerate() {
                let mut pl = pl.clone();
                pl.consumer_group = Some(EntityRef::Key(groups[gi].0.clone()));
                b.plugins.push((p(&gp, "plugins", k), pl, None, None, None));
            }
            for (j, m) in g.consumers.iter().flatten().enumerate() {
                match m.key().and_then(&find_consumer) {
                    Some(ci) => member_of[ci].push(gi),
                    None => b.err(
                        p(&gp, "consumers", j),
                        "invalid reference (no such entry in 'consumers')",
                    ),
                }
            }
        }
        for (ci, c) in raw.consumers.iter().enumerate() {
            for (j, g) in c.groups.iter().flatten().enumerate() {
                match g.key().and_then(&find_group) {
                    Some(gi) => member_of[ci].push(gi),
                    None => b.err(
                        p(&p("", "consumers", ci), "groups", j),
                        "invalid reference (no such entry in 'consumer_groups')",
                    ),
                }
            }
        }
        // A consumer in several groups: the group whose name sorts first wins (Kong EE).
        for m in &mut member_of {
            m.sort_by(|a, b| groups[*a].1.cmp(&groups[*b].1));
            m.dedup();
        }
        for (i, pl) in raw.plugins.iter().enumerate() {
            b.plugins
                .push((p("", "plugins", i), pl.clone(), None, None, None));
        }
        let vaults = vault_table(&mut b, &raw);
        check_unique(&mut b);
        let sni = sni_table(&mut b, &raw);

        // Type and compile every plugin.
        let mut plugins: Vec<PluginInstance> = Vec::new();
        let raw_plugins = std::mem::take(&mut b.plugins);
        let mut scopes: HashSet<Scope> = HashSet::new();
        for (path, pl, nested_service, nested_route, nested_consumer) in raw_plugins {
            let service = match (nested_service, pl.service.as_ref().and_then(EntityRef::key)) {
                (Some(s), None) => Some(s),
                (Some(_), Some(_)) => {
                    b.err(
                        format!("{path}.service"),
                        "must not be set on a plugin nested under a service",
                    );
                    continue;
                }
                (None, Some(key)) => {
                    match b.find_service(key) {
                        Some(s) => Some(s),
                        None => {
                            b.err(format!("{path}.service"), format!("invalid reference 'service: {key}' (no such entry in 'services')"));
                            continue;
                        }
                    }
                }
                (None, None) => None,
            };
            let route = match (nested_route, pl.route.as_ref().and_then(EntityRef::key)) {
                (Some(r), None) => Some(r),
                (Some(_), Some(_)) => {
                    b.err(
                        format!("{path}.route"),
                        "must not be set on a plugin nested under a route",
                    );
                    continue;
                }
                (None, Some(key)) => match b.find_route(key) {
                    Some(r) => Some(r),
                    None => {
                        b.err(
                            format!("{path}.route"),
                            format!("invalid reference 'route: {key}' (no such entry in 'routes')"),
                        );
                        continue;
                    }
                },
                (None, None) => None,
            };
            let consumer_key = nested_consumer.or_else(|| {
                pl.consumer
                    .as_ref()
                    .and_then(EntityRef::key)
                    .map(str::to_string)
            });
            // The id, whichever key the plugin named the consumer by (the plugin's derived id
            // below still uses the key as written, as Kong's cache key does).
            let consumer_id = match &consumer_key {
                Some(k) => {
                    match consumers.iter().find(|c| {
                        c.id == *k
                            || c.username.as_deref() == Some(k)
                            || c.custom_id.as_deref() == Some(k)
                    }) {
                        Some(c) => Some(c.id.clone()),
                        None => {
                            b.err(
                            format!("{path}.consumer"),
                            format!("invalid reference 'consumer: {k}' (no such entry in 'consumers')"),
                        );
                            continue;
                        }
                    }
                }
                None => None,
            };
            let consumer = consumer_key;
            let consumer_group = match pl.consumer_group.as_ref().and_then(EntityRef::key) {
                Some(k) => match find_group(k) {
                    Some(gi) => Some(groups[gi].0.clone()),
                    None => {
                        b.err(
                            format!("{path}.consumer_group"),
                            format!("invalid reference 'consumer_group: {k}' (no such entry in 'consumer_groups')"),
                        );
                        continue;
                    }
                },
                None => None,
            };
            if pl.condition.is_some() {
                b.err(
                    format!("{path}.condition"),
                    "plugin conditions are not supported by tollgate yet",
                );
            }
            if pl.ordering.as_ref().map(|v| !v.is_null()).unwrap_or(false) {
                b.err(
                    format!("{path}.ordering"),
                    "dynamic plugin ordering is not supported by tollgate yet",
                );
            }
            if !scopes.insert((
                pl.name.clone(),
                service,
                route,
                consumer.clone(),
                consumer_group.clone(),
            )) {
                b.err(path.clone(), format!("UNIQUE violation detected on '{{consumer=null,name=\"{}\",route={},service={}}}'",
                    pl.name,
                    route.map(|r| format!("{{id=\"{}\"}}", b.routes[r].id)).unwrap_or_else(|| "null".into()),
                    service.map(|s| format!("{{id=\"{}\"}}", b.services[s].id)).unwrap_or_else(|| "null".into())));
                continue;
            }
            let typed = match registry::parse(&pl.name, pl.config.as_ref()) {
                Ok(t) => t,
                Err(errs) => {
                    for (fp, m) in errs {
                        b.err(format!("{path}.{fp}"), tidy_serde_message(&m));
                    }
                    continue;
                }
            };
            if let PluginConfig::KeyAuth(ka) = &typed {
                if let Some(anon) = ka.anonymous.as_deref().filter(|a| !a.is_empty()) {
                    let known = consumers
                        .iter()
                        .any(|c| c.id == anon || c.username.as_deref() == Some(anon));
                    if !known {
                        b.err(
                            format!("{path}.config.anonymous"),
                            format!("no consumer with id or username '{anon}'"),
                        );
                        continue;
                    }
                }
            }
            let id = pl.id.clone().unwrap_or_else(|| {
                let rid = route.map(|r| b.routes[r].id.clone()).unwrap_or_default();
                let sid = service
                    .map(|s| b.services[s].id.clone())
                    .unwrap_or_default();
                ids::plugin_id(&pl.name, &rid, &sid, consumer.as_deref().unwrap_or(""))
            });
            let config_json = registry::to_json(&typed);
            let route_name = route.map(|r| {
                let r = &b.routes[r];
                r.name.clone().unwrap_or_else(|| r.id.clone())
            });
            let at = (path.as_str(), route_name.as_deref());
            let plugin = match registry::compile(at, &id, typed, &vaults, b.env) {
                Ok((plugin, warnings)) => {
                    b.warnings.extend(warnings);
                    plugin
                }
                Err(errs) => {
                    b.errors.extend(errs);
                    continue;
                }
            };
            plugins.push(PluginInstance {
                id,
                name: pl.name.clone(),
                instance_name: pl.instance_name.clone(),
                enabled: pl.enabled.unwrap_or(true),
                service,
                route,
                consumer: consumer_id,
                consumer_group,
                protocols: pl.protocols.clone().unwrap_or_else(|| {
                    ["grpc", "grpcs", "http", "https"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                }),
                tags: pl.tags.clone(),
                created_at: pl.created_at.unwrap_or(0),
                updated_at: pl.updated_at.unwrap_or(0),
                config_json,
                plugin,
                path: path.clone(),
            });
        }

        let router = match Router::new(&b.route_specs) {
            Ok(r) => Some(r),
            Err(e) => {
                // Paths were checked one by one above; this catches header regexes.
                b.err("routes", e.to_string());
                None
            }
        };
        if !b.errors.is_empty() {
            return Err(ConfigErrors(b.errors));
        }
        let router = router.unwrap_or_default();

        // Resolve each route's chain: the most specific enabled instance per plugin name.
        let mut routes = b.routes;
        let has =
            |chain: &[usize], f: fn(&Plugin) -> bool| chain.iter().any(|i| f(&plugins[*i].plugin));
        let mut unsupported = Vec::new();
        for (ri, route) in routes.iter_mut().enumerate() {
            route.chain = resolve_chain(&plugins, Some(ri), route.service, None, &[]);
            let name = route.name.as_deref().unwrap_or(&route.id);
            unsupported.extend(response_transformer_on_ai(&plugins, &route.chain, name));
            unsupported.extend(response_guard_on_ai(&plugins, &route.chain, name));
            route.logs = has(&route.chain, Plugin::logs);
            route.transforms = has(&route.chain, |p| {
                matches!(p, Plugin::RequestTransformer(_) | Plugin::McpProxy(_))
            });
            route.quotas = has(&route.chain, |p| {
                matches!(p, Plugin::RateLimiting(_) | Plugin::AiRateLimiting(_))
            });
            route.shapes_prompt = has(&route.chain, Plugin::shapes_prompt);
            route.metrics = has(&route.chain, |p| matches!(p, Plugin::Prometheus(_)));
            route.tracing = has(&route.chain, |p| matches!(p, Plugin::OpenTelemetry(_)));
        }
        if !unsupported.is_empty() {
            return Err(ConfigErrors(unsupported));
        }
        let global_chain = resolve_chain(&plugins, None, None, None, &[]);
        let consumer_plugins = plugins
            .iter()
            .any(|p| p.enabled && (p.consumer.is_some() || p.consumer_group.is_some()));
        let global_logs = has(&global_chain, Plugin::logs);
        let global_metrics = has(&global_chain, |p| matches!(p, Plugin::Prometheus(_)));
        let hash = config_hash(&raw);
        let mut entities = Entities {
            services: b.services,
            routes,
            consumers,
            credentials,
            credential_tags,
            groups,
            member_of,
            route_log: Vec::new(),
            service_log: Vec::new(),
        };
        // Log records embed these as they are; built once per config, not per request.
        let raw = |v: Value| serde_json::value::RawValue::from_string(v.to_string()).ok();
        entities.route_log = entities
            .routes
            .iter()
            .map(|r| raw(r.to_json(&entities)))
            .collect();
        entities.service_log = entities.services.iter().map(|s| raw(s.to_json())).collect();
        Ok(Snapshot {
            entities: Arc::new(entities),
            plugins,
            router,
            global_chain,
            global_logs,
            global_metrics,
            hash,
            warnings: b.warnings,
            format_version,
            sni: Arc::new(sni),
            consumer_plugins,
            vaults,
        })
    }

    /// Puts a compiled config in service, before it answers its first request: starts the
    /// plugins' exporter and sender threads, checks the stores they connect to, and keeps
    /// the config's Vault secrets refreshed. Warnings join [`Snapshot::warnings`]; an error
    /// means the config must not be served. Compiling alone (`tollgate validate`) does none
    /// of this. Calling it again does nothing more.
    pub fn activate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        for p in &self.plugins {
            let at = |(field, message): (String, String)| ConfigIssue {
                path: format!("{}.{field}", p.path),
                message,
            };
            match p.plugin.activate() {
                Ok(w) => self.warnings.extend(w.into_iter().map(at)),
                Err(e) => errors.extend(e.into_iter().map(at)),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        self.vaults.start_refresh();
        Ok(())
    }

    /// An empty config (no routes): every request gets Kong's 404.
    pub fn empty() -> Snapshot {
        Snapshot {
            entities: Arc::default(),
            plugins: Vec::new(),
            router: Router::default(),
            global_chain: Vec::new(),
            global_logs: false,
            global_metrics: false,
            hash: "0".repeat(32),
            warnings: Vec::new(),
            format_version: "3.0".into(),
            sni: Arc::default(),
            consumer_plugins: false,
            vaults: VaultTable::new(),
        }
    }
}

fn vault_table(b: &mut Builder<'_>, raw: &RawConfig) -> VaultTable {
    let (t, errors) = VaultTable::from_entities(&raw.vaults, b.env);
    for (path, message) in errors {
        b.err(path, message);
    }
    t
}

/// The `certificates` (with their nested `snis`) and top-level `snis` as a lookup table.
fn sni_table(b: &mut Builder<'_>, raw: &RawConfig) -> crate::net::sni::SniTable {
    use crate::net::sni;
    let mut table = sni::SniTable::default();
    let mut by_id: HashMap<String, Arc<rustls::sign::CertifiedKey>> = HashMap::new();
    let add = |b: &mut Builder<'_>, table: &mut sni::SniTable, at: String, name: &str, key| {
        if let Err(e) = sni::valid_name(name) {
            b.err(at, e);
        } else if !table.insert(name, key) {
            b.err(
                at,
                format!("UNIQUE violation detected on '{{name=\"{name}\"}}'"),
            );
        }
    };
    for (i, c) in raw.certificates.iter().enumerate() {
        let path = p("", "certificates", i);
        for alt in [("cert_alt", &c.cert_alt), ("key_alt", &c.key_alt)] {
            if alt.1.as_deref().is_some_and(|v| !v.is_empty()) {
                b.err(
                    format!("{path}.{}", alt.0),
                    "alternate certificates are not supported by tollgate yet",
                );
            }
        }
        let key = match sni::certified_key(&c.cert, &c.key) {
            Ok(k) => k,
            Err((field, e)) => {
                b.err(format!("{path}.{field}"), e);
                continue;
            }
        };
        let id =
            c.id.clone()
                .unwrap_or_else(|| ids::entity_id("certificates", c.cert.trim()));
        for (j, name) in c.snis.iter().flatten().enumerate() {
            add(b, &mut table, p(&path, "snis", j), name, key.clone());
        }
        by_id.insert(id, key);
    }
    for (i, s) in raw.snis.iter().enumerate() {
        let path = p("", "snis", i);
        let Some(key) = s.certificate.key().and_then(|k| by_id.get(k)).cloned() else {
            b.err(
                format!("{path}.certificate"),
                format!(
                    "invalid reference 'certificate: {}' (no such entry in 'certificates')",
                    s.certificate.key().unwrap_or("")
                ),
            );
            continue;
        };
        add(b, &mut table, format!("{path}.name"), &s.name, key);
    }
    table
}

fn check_unique(b: &mut Builder<'_>) {
    let services = duplicates(b.services.iter().filter_map(|s| s.name.as_deref()));
    let routes = duplicates(b.routes.iter().filter_map(|r| r.name.as_deref()));
    for (entity, names) in [("services", services), ("routes", routes)] {
        for n in names {
            b.err(
                entity,
                format!("UNIQUE violation detected on '{{name=\"{n}\"}}'"),
            );
        }
    }
}

/// Names that occur more than once, each reported once.
fn duplicates<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    names
        .filter(|n| {
            let c = seen.entry(*n).or_insert(0);
            *c += 1;
            *c == 2
        })
        .map(str::to_string)
        .collect()
}

/// ai-response-transformer rewrites the answer of a plain route's service; on a route
/// whose chain has ai-proxy the answer takes ai-proxy's own path, which it does not hook.
fn response_transformer_on_ai(
    plugins: &[PluginInstance],
    chain: &[usize],
    route: &str,
) -> Option<ConfigIssue> {
    let plugin = |i: &usize| plugins.get(*i);
    chain
        .iter()
        .filter_map(plugin)
        .any(|p| matches!(p.plugin, Plugin::AiProxy(_)))
        .then(|| {
            chain
                .iter()
                .filter_map(plugin)
                .find(|p| matches!(p.plugin, Plugin::AiResponseTransformer(_)))
        })
        .flatten()
        .map(|p| ConfigIssue {
            path: p.path.clone(),
            message: format!(
                "ai-response-transformer is not supported by tollgate yet on a route with \
                 ai-proxy (route '{route}'); use it on routes to a service"
            ),
        })
}

/// ai-semantic-response-guard reads the whole OpenAI-format answer: a route whose ai-proxy
/// speaks another format to its clients, or always streams, would never give it one.
fn response_guard_on_ai(
    plugins: &[PluginInstance],
    chain: &[usize],
    route: &str,
) -> Option<ConfigIssue> {
    let plugin = |i: &usize| plugins.get(*i);
    let guard = chain
        .iter()
        .filter_map(plugin)
        .find(|p| matches!(p.plugin, Plugin::SemanticResponseGuard(_)))?;
    let ai = chain
        .iter()
        .filter_map(plugin)
        .find_map(|p| match &p.plugin {
            Plugin::AiProxy(a) => Some(a),
            _ => None,
        })?;
    let why = if ai.llm_format != crate::config::plugins::LlmFormat::Openai {
        let name = serde_json::to_value(ai.llm_format).unwrap_or_default();
        format!(
            "its ai-proxy has llm_format {}",
            name.as_str().unwrap_or("?")
        )
    } else if ai.streaming == crate::config::plugins::StreamingMode::Always {
        "its ai-proxy has response_streaming: always".to_string()
    } else {
        return None;
    };
    Some(ConfigIssue {
        path: guard.path.clone(),
        message: format!(
            "ai-semantic-response-guard checks whole OpenAI-format answers, but {why} \
             (route '{route}')"
        ),
    })
}

/// Kong's precedence without consumers: route+service > route > service > global.
/// The plugins that run for a route (and, once authenticated, a consumer): one instance
/// per plugin name, the most specific by Kong's precedence (consumer+route+service,
/// consumer+route, consumer+service, route+service, consumer, route, service, global),
/// in PRIORITY order.
pub fn resolve_chain(
    plugins: &[PluginInstance],
    route: Option<usize>,
    service: Option<usize>,
    consumer: Option<&str>,
    groups: &[&str],
) -> Vec<usize> {
    // (rank, preference among the consumer's groups: lower is better) per plugin name.
    let mut best: HashMap<&str, (u8, usize, usize)> = HashMap::new();
    for (i, pl) in plugins.iter().enumerate() {
        if !pl.enabled {
            continue;
        }
        let with_consumer = match pl.consumer.as_deref() {
            None => false,
            Some(c) if Some(c) == consumer => true,
            Some(_) => continue,
        };
        let group_pos = match pl.consumer_group.as_deref() {
            None => None,
            Some(g) => match groups.iter().position(|x| *x == g) {
                Some(pos) => Some(pos),
                None => continue,
            },
        };
        let scope = match (pl.route, pl.service) {
            (Some(r), Some(s)) if Some(r) == route && Some(s) == service => 3,
            (Some(r), None) if Some(r) == route => 2,
            (None, Some(s)) if Some(s) == service => 1,
            (None, None) => 0,
            _ => continue,
        };
        let rank = match (with_consumer, group_pos.is_some(), scope) {
            (true, _, 3) => 12,
            (false, true, 3) => 11,
            (true, _, 2) => 10,
            (true, _, 1) => 9,
            (false, true, 2) => 8,
            (false, true, 1) => 7,
            (false, false, 3) => 6,
            (true, _, _) => 5,
            (false, true, _) => 4,
            (false, false, 2) => 3,
            (false, false, 1) => 2,
            (false, false, _) => 1,
        };
        let pos = group_pos.unwrap_or(0);
        let e = best.entry(pl.name.as_str()).or_insert((0, usize::MAX, i));
        if rank > e.0 || (rank == e.0 && pos < e.1) {
            *e = (rank, pos, i);
        }
    }
    let mut chain: Vec<usize> = best.values().map(|(_, _, i)| *i).collect();
    let priority = |i: usize| crate::plugins::priority(&plugins[i].name);
    chain.sort_by(|a, b| priority(*b).cmp(&priority(*a)).then(a.cmp(b)));
    chain
}

/// `configuration_hash`: 32 hex digits of the document.
pub fn config_hash(raw: &RawConfig) -> String {
    let text = serde_json::to_string(raw).unwrap_or_default();
    let mut a = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    (text.len(), &text).hash(&mut b);
    format!("{:016x}{:016x}", a.finish(), b.finish())
}

impl Service {
    /// The Admin API / log shape of a service.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "protocol": self.protocol, "host": self.host,
            "port": self.port, "path": self.path, "retries": self.retries,
            "connect_timeout": self.connect_timeout, "write_timeout": self.write_timeout,
            "read_timeout": self.read_timeout, "enabled": self.enabled, "tags": self.tags,
            "client_certificate": null, "tls_verify": self.tls_verify, "tls_verify_depth": null,
            "ca_certificates": self.ca_certificates, "created_at": self.created_at, "updated_at": self.updated_at,
        })
    }
}

impl Route {
    /// The Admin API / log shape of a route.
    pub fn to_json(&self, snap: &Entities) -> Value {
        let headers = self
            .headers
            .as_ref()
            .map(|h| Value::Object(h.iter().map(|(k, v)| (k.clone(), json!(v))).collect()));
        json!({
            "id": self.id, "name": self.name,
            "service": self.service.and_then(|s| snap.services.get(s)).map(|s| json!({"id": s.id})),
            "protocols": self.protocols, "methods": self.methods, "hosts": self.hosts,
            "paths": self.paths, "headers": headers, "strip_path": self.strip_path,
            "preserve_host": self.preserve_host, "regex_priority": self.regex_priority,
            "path_handling": self.path_handling,
            "https_redirect_status_code": self.https_redirect_status_code,
            "request_buffering": self.request_buffering, "response_buffering": self.response_buffering,
            "snis": null, "sources": null, "destinations": null, "tags": self.tags,
            "created_at": self.created_at, "updated_at": self.updated_at,
        })
    }
}

/// Config fields that hold secrets; shown only when they are vault references.
const SECRET_FIELDS: &[&str] = &[
    "header_value",
    "param_value",
    "gcp_service_account_json",
    "aws_secret_access_key",
    "aws_access_key_id",
    "azure_client_secret",
    // Redis (quota counters, vector stores) and Postgres credentials.
    "password",
    "redis_password",
    "sentinel_password",
];

/// Config maps whose every value may be a credential (http-log's and opentelemetry's
/// `headers` carry the collector's API key).
const SECRET_MAPS: &[&str] = &["headers"];

/// URL fields that may carry `user:password@`.
const SECRET_URLS: &[&str] = &["http_endpoint", "traces_endpoint"];

/// Replaces secret values by `"[REDACTED]"` unless they are `{vault://…}` references.
pub fn redact_secrets(v: &mut Value) {
    visit_secrets(v, &mut |val| {
        if let Value::String(s) = val {
            if !vault::is_reference_form(s) {
                *val = Value::String("[REDACTED]".into());
            }
        }
    });
}

/// Calls `f` on every value of `v` that holds a secret (the fields above, the values of the
/// secret maps, URLs with credentials in them).
pub fn visit_secrets(v: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                let k = k.as_str();
                if SECRET_FIELDS.contains(&k) {
                    f(val);
                } else if SECRET_MAPS.contains(&k) && val.is_object() {
                    val.as_object_mut()
                        .into_iter()
                        .flat_map(|m| m.values_mut())
                        .for_each(&mut *f);
                } else if SECRET_URLS.contains(&k)
                    && val.as_str().is_some_and(|u| {
                        u.split_once("://").is_some_and(|(_, rest)| {
                            rest.split('/').next().is_some_and(|a| a.contains('@'))
                        })
                    })
                {
                    f(val);
                } else {
                    visit_secrets(val, f);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| visit_secrets(x, f)),
        _ => {}
    }
}

impl PluginInstance {
    /// The Admin API shape of a plugin (secrets redacted).
    pub fn to_json(&self, snap: &Snapshot) -> Value {
        let mut config = self.config_json.clone();
        redact_secrets(&mut config);
        json!({
            "id": self.id, "name": self.name, "instance_name": self.instance_name,
            "enabled": self.enabled, "config": config, "protocols": self.protocols,
            "service": self.service.and_then(|s| snap.services.get(s)).map(|s| json!({"id": s.id})),
            "route": self.route.and_then(|r| snap.routes.get(r)).map(|r| json!({"id": r.id})),
            "consumer": self.consumer.as_ref().map(|c| json!({"id": c})),
            "consumer_group": self.consumer_group.as_ref().map(|g| json!({"id": g})),
            "tags": self.tags, "created_at": self.created_at, "updated_at": self.updated_at,
        })
    }
}

//! HashiCorp Vault (`hcv`) references: KV v1/v2 secrets read over HTTP(S) with a token.
//!
//! A reference is read once while the config loads (a blocking read on a helper thread, so
//! loading stays synchronous and works inside or outside a runtime), then kept current by
//! a background task per secret path that re-reads it every `ttl` and retries a failed read
//! every `neg_ttl`. Requests only read the cached value: they never wait for Vault.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde_json::{Map, Value};

use crate::net::upstream::{Endpoint, OutRequest, Upstreams};
use crate::secret::Secret;

/// Options a `hcv` vault takes (Kong's names); `token` is the only auth method tollgate has.
pub const OPTIONS: &[&str] = &[
    "protocol",
    "host",
    "port",
    "mount",
    "kv",
    "token",
    "namespace",
    "auth_method",
    "ttl",
    "neg_ttl",
    "resurrect_ttl",
];

/// Option prefixes of Kong's other Vault auth methods (refused with a clear message).
const OTHER_AUTH: &[&str] = &[
    "kube_",
    "approle_",
    "cert_auth_",
    "oauth2_",
    "gcp_",
    "azure_",
    "aws_",
    "jwt_",
];

/// Kong's default `resurrect_ttl`: a value stays in use ~3 years after a failed refresh.
const RESURRECT_DEFAULT: Duration = Duration::from_secs(100_000_000);
/// A failed read is retried this often when `neg_ttl` is 0 (Kong retries on the next use).
pub const RETRY_WITHOUT_NEG_TTL: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle refresh task checks that its config is still loaded.
const LIVENESS_TICK: Duration = Duration::from_secs(1);

/// The environment variable Kong reads for an option (`KONG_VAULT_HCV_TOKEN`).
pub fn env_name(option: &str) -> String {
    format!("KONG_VAULT_HCV_{}", option.to_uppercase())
}

/// Why an option is refused, or `None` when it is one tollgate knows.
pub fn check_option(name: &str) -> Option<String> {
    if OPTIONS.contains(&name) {
        None
    } else if OTHER_AUTH.iter().any(|p| name.starts_with(p)) {
        Some("only auth_method 'token' is supported by tollgate yet".into())
    } else {
        Some("unknown field".into())
    }
}

/// A Vault server and how secrets read from it are cached.
#[derive(Clone, PartialEq)]
pub struct Config {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub mount: String,
    pub kv2: bool,
    pub namespace: Option<String>,
    pub token: Option<Secret<String>>,
    pub ttl: Duration,
    pub neg_ttl: Duration,
    pub resurrect_ttl: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is left out entirely, not even as a redaction marker's length.
        write!(f, "{}", self.describe())
    }
}

/// A value from one configuration layer and where it came from (for error messages).
pub type Found = (String, String);

impl Config {
    /// Builds a config from layered lookups (`get` returns the value and its origin, e.g.
    /// `vaults[0].config.port` or `KONG_VAULT_HCV_PORT`). An error is (origin, message).
    pub fn build(get: &dyn Fn(&str) -> Option<Found>) -> Result<Config, Found> {
        let bad = |(v, origin): &Found, what: &str| (origin.clone(), format!("'{v}' {what}"));
        let https = match get("protocol") {
            None => false,
            Some((v, _)) if v == "http" => false,
            Some((v, _)) if v == "https" => true,
            Some(f) => return Err(bad(&f, "is not one of: http, https")),
        };
        let host = match get("host") {
            None => "127.0.0.1".to_string(),
            Some((v, o)) if v.is_empty() || v.contains(['/', ' ', '?', '#', '@']) => {
                return Err(bad(&(v, o), "is not a host name"))
            }
            Some((v, _)) => v.trim_start_matches('[').trim_end_matches(']').to_string(),
        };
        let port = match get("port") {
            None => 8200,
            Some(f) => match f.0.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad(&f, "is not a port (1-65535)")),
            },
        };
        let mount = match get("mount") {
            None => "secret".to_string(),
            Some(f) => {
                let m = f.0.trim_matches('/').to_string();
                if m.is_empty() || m.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
                    return Err(bad(&f, "is not a mount path"));
                }
                m
            }
        };
        let kv2 = match get("kv") {
            None => false,
            Some((v, _)) if v == "v1" => false,
            Some((v, _)) if v == "v2" => true,
            Some(f) => return Err(bad(&f, "is not one of: v1, v2")),
        };
        if let Some(f) = get("auth_method") {
            if f.0 != "token" {
                return Err((
                    f.1,
                    format!(
                        "auth_method '{}' is not supported by tollgate yet (supported: token)",
                        f.0
                    ),
                ));
            }
        }
        let seconds = |name: &str, default: Duration| -> Result<Duration, Found> {
            match get(name) {
                None => Ok(default),
                Some(f) => {
                    f.0.parse::<f64>()
                        .ok()
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                        .ok_or_else(|| bad(&f, "is not a number of seconds (0 or more)"))
                }
            }
        };
        Ok(Config {
            https,
            host,
            port,
            mount,
            kv2,
            namespace: get("namespace").map(|f| f.0).filter(|n| !n.is_empty()),
            token: get("token")
                .map(|f| f.0)
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            ttl: seconds("ttl", Duration::ZERO)?,
            neg_ttl: seconds("neg_ttl", Duration::ZERO)?,
            resurrect_ttl: seconds("resurrect_ttl", RESURRECT_DEFAULT)?,
        })
    }

    /// `http://host:port` and the mount, for logs and messages (never the token).
    pub fn describe(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let scheme = if self.https { "https" } else { "http" };
        let kv = if self.kv2 { "v2" } else { "v1" };
        format!(
            "{scheme}://{host}:{} mount {} (kv {kv})",
            self.port, self.mount
        )
    }

    /// The read API's path: `/v1/<mount>/data/<path>[?version=N]` (v2) or `/v1/<mount>/<path>`.
    pub fn read_path(&self, resource: &str, version: Option<u32>) -> String {
        let segments: Vec<String> = resource
            .split('/')
            .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        let resource = segments.join("/");
        match (self.kv2, version) {
            (true, Some(v)) => format!("/v1/{}/data/{resource}?version={v}", self.mount),
            (true, None) => format!("/v1/{}/data/{resource}", self.mount),
            (false, _) => format!("/v1/{}/{resource}", self.mount),
        }
    }
}

/// Characters escaped in a secret path segment (RFC 3986 path-segment rules).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Checks a secret path: non-empty segments, no `.`/`..`.
pub fn check_resource(resource: &str) -> Result<(), String> {
    if resource
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!("'{resource}' is not a secret path"));
    }
    Ok(())
}

/// The secret's fields from a Vault read answer (KV v1 `data`, KV v2 `data.data`).
pub fn parse_answer(kv2: bool, status: u16, body: &[u8]) -> Result<Map<String, Value>, String> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if status == 404 {
        return Err("Vault answered 404: no secret at that path".into());
    }
    if !(200..300).contains(&status) {
        let said: Vec<String> = json
            .as_ref()
            .and_then(|j| j.get("errors"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let mut said = said.join("; ");
        if said.len() > 200 {
            let cut = (0..=200)
                .rev()
                .find(|i| said.is_char_boundary(*i))
                .unwrap_or(0);
            said.truncate(cut);
            said.push('…');
        }
        return Err(if said.is_empty() {
            format!("Vault answered {status}")
        } else {
            format!("Vault answered {status}: {said}")
        });
    }
    let Some(json) = json else {
        return Err("Vault's answer is not JSON".into());
    };
    let data = json.get("data");
    let data = if kv2 {
        data.and_then(|d| d.get("data"))
    } else {
        data
    };
    match data {
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(Value::Null) if kv2 => {
            Err("that secret version has no data (deleted or destroyed)".into())
        }
        _ if kv2 => Err("Vault's answer has no data.data object (is the mount kv v2?)".into()),
        _ => Err("Vault's answer has no data object".into()),
    }
}

/// The value a reference takes from a secret: one string field, or the whole secret as
/// JSON when the reference names no key (as Kong does).
pub fn pick(data: &Map<String, Value>, key: Option<&str>) -> Result<String, String> {
    match key {
        None => Ok(Value::Object(data.clone()).to_string()),
        Some(k) => match data.get(k) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("field '{k}' of the secret is not a string")),
            None => Err(format!("the secret has no field '{k}'")),
        },
    }
}

/// Reads one secret path.
pub async fn fetch(
    upstreams: &Upstreams,
    cfg: &Config,
    resource: &str,
    version: Option<u32>,
) -> Result<Map<String, Value>, String> {
    let Some(token) = &cfg.token else {
        return Err(no_token());
    };
    let path = cfg.read_path(resource, version);
    let target: Uri = path
        .parse()
        .map_err(|_| format!("'{resource}' does not make a valid request path"))?;
    let mut headers = HeaderMap::new();
    let authority = match (cfg.https, cfg.port) {
        (true, 443) | (false, 80) => cfg.host.clone(),
        _ => format!("{}:{}", cfg.host, cfg.port),
    };
    let host = HeaderValue::from_str(&authority).map_err(|_| "bad Vault host name".to_string())?;
    headers.insert(header::HOST, host);
    let mut t = HeaderValue::from_str(token.expose())
        .map_err(|_| "the Vault token is not a valid header value".to_string())?;
    t.set_sensitive(true);
    headers.insert(HeaderName::from_static("x-vault-token"), t);
    if let Some(ns) = &cfg.namespace {
        let ns = HeaderValue::from_str(ns)
            .map_err(|_| "the Vault namespace is not a valid header value".to_string())?;
        headers.insert(HeaderName::from_static("x-vault-namespace"), ns);
    }
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let out = OutRequest {
        method: Method::GET,
        target,
        headers: headers.into(),
        body: Bytes::new(),
        upload: None,
    };
    let ep = Endpoint {
        https: cfg.https,
        host: &cfg.host,
        port: cfg.port,
        trust: None,
    };
    let resp = upstreams
        .send(&ep, out, CONNECT_TIMEOUT, READ_TIMEOUT)
        .await
        .map_err(|f| format!("Vault unreachable: {}", f.detail))?;
    let status = resp.status().as_u16();
    let body = crate::net::body::read_buffered(resp.into_body(), READ_TIMEOUT)
        .await
        .map_err(|e| format!("reading Vault's answer: {e}"))?;
    parse_answer(cfg.kv2, status, &body)
}

/// Why a reference without a token cannot be read.
pub fn no_token() -> String {
    "no Vault token (set config.token on the hcv vault entity or KONG_VAULT_HCV_TOKEN)".into()
}

/// The current value of one reference: the secret (and its header form), or why not.
struct Current {
    secret: Result<Secret<String>, String>,
    /// The secret as a sensitive header value, built once per change, not per request.
    header: Option<HeaderValue>,
}

/// How a reference is written in the config: its field, the reference, and literal text
/// before it (`Bearer ` in `Bearer {vault://…}`).
pub struct Written {
    pub field: String,
    pub reference: String,
    pub prefix: String,
}

/// One reference's cached value, shared by the compiled config and its refresh task.
pub struct Cell {
    /// The config field that holds the reference, for messages.
    field: String,
    reference: String,
    key: Option<String>,
    /// Literal text put before the secret (`Bearer ` in `Bearer {vault://…}`).
    prefix: String,
    current: ArcSwap<Current>,
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultCell({})", self.reference)
    }
}

impl Cell {
    fn new(field: String, reference: String, key: Option<String>, prefix: String) -> Cell {
        Cell {
            field,
            reference,
            key,
            prefix,
            current: ArcSwap::from_pointee(Current {
                secret: Err("not read yet".into()),
                header: None,
            }),
        }
    }

    fn set(&self, data: &Result<Arc<Map<String, Value>>, String>) {
        let secret = match data {
            Ok(d) => {
                pick(d, self.key.as_deref()).map(|s| Secret::new(format!("{}{s}", self.prefix)))
            }
            Err(e) => Err(e.clone()),
        };
        let header = secret.as_ref().ok().and_then(|s| {
            let mut h = HeaderValue::from_str(s.expose()).ok()?;
            h.set_sensitive(true);
            Some(h)
        });
        self.current.store(Arc::new(Current { secret, header }));
    }

    /// Why the reference has no value now (the bare reason), or `None` when it has one.
    pub fn failure(&self) -> Option<String> {
        self.current.load().secret.as_ref().err().cloned()
    }

    fn message(&self, reason: &str) -> String {
        format!(
            "{}: could not resolve {}: {reason}",
            self.field, self.reference
        )
    }

    /// The current secret, or the message a request's 500 is logged with.
    pub fn get(&self) -> Result<Secret<String>, String> {
        self.current
            .load()
            .secret
            .clone()
            .map_err(|e| self.message(&e))
    }

    /// The current secret as a header value (marked sensitive).
    pub fn header(&self) -> Result<HeaderValue, String> {
        let cur = self.current.load();
        match (&cur.header, &cur.secret) {
            (Some(h), _) => Ok(h.clone()),
            (None, Err(e)) => Err(self.message(e)),
            (None, Ok(_)) => Err(self.message("the secret is not a valid header value")),
        }
    }
}

/// One secret path of one Vault, read as a whole for every reference to it.
struct Source {
    cfg: Config,
    resource: String,
    version: Option<u32>,
    cells: Mutex<Vec<Weak<Cell>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Source {
    fn label(&self) -> String {
        format!(
            "{}/{} at {}",
            self.cfg.mount,
            self.resource,
            self.cfg.describe()
        )
    }

    /// Whether a loaded config still uses this path (forgets the cells it dropped).
    fn in_use(&self) -> bool {
        let mut cells = lock(&self.cells);
        cells.retain(|c| c.strong_count() > 0);
        !cells.is_empty()
    }

    fn publish(&self, data: &Result<Arc<Map<String, Value>>, String>) {
        for c in lock(&self.cells).iter().filter_map(Weak::upgrade) {
            c.set(data);
        }
    }
}

/// A path read during this load: its source and what the read gave.
struct Loaded {
    source: Arc<Source>,
    data: Result<Arc<Map<String, Value>>, String>,
    read_at: Instant,
}

/// The Vault reads of one config load: each path is read once however many references
/// use it, and a server that cannot be reached is not tried again during the load.
#[derive(Default)]
pub struct Session {
    loaded: Mutex<Vec<Loaded>>,
    unreachable: Mutex<Vec<(bool, String, u16, String)>>,
}

impl Session {
    /// A cell for one reference, read now unless the same path was read in this load.
    pub fn resolve(
        &self,
        cfg: Config,
        resource: &str,
        version: Option<u32>,
        key: Option<String>,
        written: Written,
    ) -> Arc<Cell> {
        let cell = Arc::new(Cell::new(
            written.field,
            written.reference,
            key,
            written.prefix,
        ));
        let mut loaded = lock(&self.loaded);
        if let Some(l) = loaded.iter().find(|l| {
            l.source.cfg == cfg && l.source.resource == resource && l.source.version == version
        }) {
            cell.set(&l.data);
            lock(&l.source.cells).push(Arc::downgrade(&cell));
            return cell;
        }
        let data = self.read_blocking(&cfg, resource, version).map(Arc::new);
        cell.set(&data);
        let source = Arc::new(Source {
            cfg,
            resource: resource.to_string(),
            version,
            cells: Mutex::new(vec![Arc::downgrade(&cell)]),
        });
        loaded.push(Loaded {
            source,
            data,
            read_at: Instant::now(),
        });
        cell
    }

    fn read_blocking(
        &self,
        cfg: &Config,
        resource: &str,
        version: Option<u32>,
    ) -> Result<Map<String, Value>, String> {
        if cfg.token.is_none() {
            return Err(no_token());
        }
        let server = (cfg.https, cfg.host.clone(), cfg.port);
        if let Some(u) = lock(&self.unreachable)
            .iter()
            .find(|u| (u.0, &u.1, u.2) == (server.0, &server.1, server.2))
        {
            return Err(u.3.clone());
        }
        // A thread of its own: the loader may run inside a runtime, which cannot block on
        // another one.
        let got = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a runtime to read Vault: {e}"))?;
                rt.block_on(fetch(&Upstreams::new(), cfg, resource, version))
            })
            .join()
            .unwrap_or_else(|_| Err("the Vault read failed".into()))
        });
        if let Err(e) = &got {
            if e.starts_with("Vault unreachable") {
                lock(&self.unreachable).push((server.0, server.1, server.2, e.clone()));
            }
        }
        got
    }

    /// Starts the background refresh of every path read in this load (a thread with one
    /// task per path; each task ends when no loaded config uses its path any more).
    pub fn start_refresh(&self) {
        let loaded = std::mem::take(&mut *lock(&self.loaded));
        let tasks: Vec<Loaded> = loaded
            .into_iter()
            .filter(|l| l.data.is_err() || !l.source.cfg.ttl.is_zero())
            .collect();
        if tasks.is_empty() {
            return;
        }
        let what = "vault refreshes (secrets will not be refreshed)";
        crate::rt::background::spawn("tollgate-vault", what, move || async move {
            let upstreams = Upstreams::new();
            let mut set = tokio::task::JoinSet::new();
            for l in tasks {
                set.spawn(refresh(l, upstreams.clone()));
            }
            while set.join_next().await.is_some() {}
        });
    }
}

/// Sleeps `wait`; false as soon as no loaded config uses the path.
async fn sleep_while_used(source: &Source, wait: Duration) -> bool {
    let start = Instant::now();
    loop {
        if !source.in_use() {
            return false;
        }
        let Some(left) = wait.checked_sub(start.elapsed()).filter(|d| !d.is_zero()) else {
            return true;
        };
        tokio::time::sleep(left.min(LIVENESS_TICK)).await;
    }
}

/// Keeps one path current: re-read every `ttl` after a good read (never when `ttl` is 0,
/// as in Kong), every `neg_ttl` after a failed one. A failed refresh keeps the last good
/// value until `resurrect_ttl` after it expired.
async fn refresh(first: Loaded, upstreams: Upstreams) {
    let Loaded {
        source,
        data,
        read_at,
    } = first;
    let cfg = source.cfg.clone();
    let mut ok = data.is_ok();
    let until = |at: Instant| at.checked_add(cfg.ttl + cfg.resurrect_ttl);
    let mut usable_until = if ok { until(read_at) } else { Some(read_at) };
    loop {
        let wait = if ok {
            if cfg.ttl.is_zero() {
                return;
            }
            cfg.ttl
        } else if cfg.neg_ttl.is_zero() {
            RETRY_WITHOUT_NEG_TTL
        } else {
            cfg.neg_ttl
        };
        if !sleep_while_used(&source, wait).await {
            return;
        }
        let read_at = Instant::now();
        match fetch(&upstreams, &cfg, &source.resource, source.version).await {
            Ok(d) => {
                if !ok {
                    tracing::info!(secret = %source.label(), "vault: secret read again");
                }
                source.publish(&Ok(Arc::new(d)));
                ok = true;
                usable_until = until(read_at);
            }
            Err(e) => {
                let resurrect = usable_until.is_none_or(|u| read_at < u);
                if ok {
                    tracing::warn!(secret = %source.label(), error = %e, keeping_previous_value = resurrect, "vault: refresh failed");
                } else {
                    tracing::debug!(secret = %source.label(), error = %e, "vault: read failed again");
                }
                if !resurrect {
                    source.publish(&Err(e));
                }
                ok = false;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, String> {
        build(pairs).map_err(|(o, m)| format!("{o}: {m}"))
    }

    fn build(pairs: &[(&str, &str)]) -> Result<Config, Found> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::build(&|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| (v.clone(), format!("config.{name}")))
        })
    }

    #[test]
    fn defaults_are_kongs() {
        let c = cfg(&[]).unwrap();
        assert_eq!(
            (c.https, c.host.as_str(), c.port, c.mount.as_str(), c.kv2),
            (false, "127.0.0.1", 8200, "secret", false)
        );
        assert_eq!(
            (c.ttl, c.neg_ttl, c.resurrect_ttl),
            (Duration::ZERO, Duration::ZERO, RESURRECT_DEFAULT)
        );
        assert!(c.token.is_none());
    }

    #[test]
    fn read_paths() {
        let v2 = cfg(&[("kv", "v2"), ("mount", "/kv/team/")]).unwrap();
        assert_eq!(v2.read_path("openai", None), "/v1/kv/team/data/openai");
        assert_eq!(
            v2.read_path("a/b c", Some(3)),
            "/v1/kv/team/data/a/b%20c?version=3"
        );
        let v1 = cfg(&[("kv", "v1")]).unwrap();
        assert_eq!(v1.read_path("openai", Some(3)), "/v1/secret/openai");
    }

    #[test]
    fn bad_options_name_their_origin() {
        for (k, v, want) in [
            ("protocol", "ftp", "config.protocol: 'ftp' is not one of"),
            ("port", "0", "config.port: '0' is not a port"),
            ("kv", "v3", "config.kv: 'v3' is not one of: v1, v2"),
            ("ttl", "-1", "config.ttl: '-1' is not a number of seconds"),
            (
                "auth_method",
                "kubernetes",
                "auth_method 'kubernetes' is not supported",
            ),
            ("mount", "a/../b", "is not a mount path"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err();
            assert!(e.contains(want), "{k}: {e}");
        }
        assert_eq!(
            check_option("kube_role").unwrap(),
            "only auth_method 'token' is supported by tollgate yet"
        );
        assert_eq!(check_option("nope").unwrap(), "unknown field");
        assert!(check_option("namespace").is_none());
    }

    #[test]
    fn answers() {
        let v2 = br#"{"data":{"data":{"key":"sk-1","n":2},"metadata":{"version":3}}}"#;
        let d = parse_answer(true, 200, v2).unwrap();
        assert_eq!(pick(&d, Some("key")).unwrap(), "sk-1");
        assert!(pick(&d, Some("n")).unwrap_err().contains("not a string"));
        assert!(pick(&d, Some("x")).unwrap_err().contains("no field 'x'"));
        assert_eq!(pick(&d, None).unwrap(), r#"{"key":"sk-1","n":2}"#);
        let v1 = br#"{"data":{"key":"sk-1"},"lease_duration":2764800}"#;
        assert_eq!(
            pick(&parse_answer(false, 200, v1).unwrap(), Some("key")).unwrap(),
            "sk-1"
        );
        // A v1 answer read as v2 (wrong kv setting) says so.
        assert!(parse_answer(true, 200, v1).unwrap_err().contains("kv v2"));
        let deleted =
            br#"{"data":{"data":null,"metadata":{"deletion_time":"2024-01-01T00:00:00Z"}}}"#;
        assert!(parse_answer(true, 200, deleted)
            .unwrap_err()
            .contains("deleted"));
        assert_eq!(
            parse_answer(true, 403, br#"{"errors":["permission denied"]}"#).unwrap_err(),
            "Vault answered 403: permission denied"
        );
        assert!(parse_answer(true, 404, br#"{"errors":[]}"#)
            .unwrap_err()
            .contains("404"));
        assert_eq!(
            parse_answer(false, 503, b"").unwrap_err(),
            "Vault answered 503"
        );
        let long = format!(r#"{{"errors":["{}"]}}"#, "é".repeat(300));
        assert!(parse_answer(false, 500, long.as_bytes()).unwrap_err().len() < 260);
    }

    #[test]
    fn resources() {
        assert!(check_resource("a/b").is_ok());
        for bad in ["", "a//b", "../x", "a/./b"] {
            assert!(check_resource(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cells_never_print_their_value() {
        let c = Cell::new(
            "f".into(),
            "{vault://hcv/p/k}".into(),
            Some("k".into()),
            String::new(),
        );
        let mut m = Map::new();
        m.insert("k".into(), Value::String("sk-hidden".into()));
        c.set(&Ok(Arc::new(m)));
        assert_eq!(c.get().unwrap().expose(), "sk-hidden");
        assert!(c.header().unwrap().is_sensitive());
        assert!(!format!("{c:?}").contains("sk-hidden"));
        let t = cfg(&[("token", "s.tok")]).unwrap();
        assert!(!format!("{t:?}").contains("s.tok"));
        c.set(&Err("Vault answered 403: permission denied".into()));
        assert_eq!(
            c.get().unwrap_err(),
            "f: could not resolve {vault://hcv/p/k}: Vault answered 403: permission denied"
        );
    }
}

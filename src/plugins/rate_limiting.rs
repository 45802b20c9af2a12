//! `rate-limiting`: request counts per second/minute/hour/day/month/year, per consumer,
//! credential, consumer group, IP, header, path or service; Kong's config, headers and
//! 429. Counters live in memory (`policy: local`) or Redis (`policy: redis`, shared by
//! every node, per request or in batches every `sync_rate` seconds). Months are 30 days and years 365, windows aligned to the Unix epoch.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::config::vault::{self, VaultTable};
use crate::quota::redis::RedisCounters;
use crate::quota::synced::Synced;
use crate::quota::{Counters, Mode, Reading, Slot};
use crate::store::redis::{RedisConfig, RedisStore};

/// `limit_by` / `identifier`: what a counter is kept per.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum LimitBy {
    #[default]
    Consumer,
    ConsumerGroup,
    Credential,
    Header,
    Ip,
    Path,
    Service,
}

/// `policy` / `strategy`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Local,
    /// Kong's database-backed counters; refused at load (tollgate shares counters in Redis).
    Cluster,
    Redis,
}

/// `rate-limiting` config (Kong's fields; the flat `redis_*` ones are Kong's deprecated
/// spellings of `redis.*`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    pub second: Option<f64>,
    pub minute: Option<f64>,
    pub hour: Option<f64>,
    pub day: Option<f64>,
    pub month: Option<f64>,
    pub year: Option<f64>,
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub limit_by: LimitBy,
    pub header_name: Option<String>,
    pub path: Option<String>,
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub policy: Policy,
    /// Proxy anyway when the counter store is down (default true); false answers 500.
    pub fault_tolerant: Option<bool>,
    pub redis: Option<RedisConfig>,
    pub redis_host: Option<String>,
    pub redis_port: Option<u16>,
    pub redis_username: Option<String>,
    pub redis_password: Option<String>,
    pub redis_database: Option<i64>,
    pub redis_timeout: Option<u64>,
    pub redis_ssl: Option<bool>,
    pub redis_ssl_verify: Option<bool>,
    pub redis_server_name: Option<String>,
    #[serde(default, deserialize_with = "crate::config::plugins::nullable")]
    pub hide_client_headers: bool,
    pub error_code: Option<f64>,
    pub error_message: Option<String>,
    /// Seconds between batched syncs of `redis` counters; -1 (Kong's default) or 0:
    /// every request updates Redis.
    pub sync_rate: Option<f64>,
}

/// The periods in the order Kong reports them: name, length in seconds, and the names of
/// their `X-RateLimit-Limit-*` / `X-RateLimit-Remaining-*` headers.
pub const PERIODS: [(&str, u64, &str, &str); 6] = [
    (
        "Second",
        1,
        "x-ratelimit-limit-second",
        "x-ratelimit-remaining-second",
    ),
    (
        "Minute",
        60,
        "x-ratelimit-limit-minute",
        "x-ratelimit-remaining-minute",
    ),
    (
        "Hour",
        3600,
        "x-ratelimit-limit-hour",
        "x-ratelimit-remaining-hour",
    ),
    (
        "Day",
        86_400,
        "x-ratelimit-limit-day",
        "x-ratelimit-remaining-day",
    ),
    (
        "Month",
        30 * 86_400,
        "x-ratelimit-limit-month",
        "x-ratelimit-remaining-month",
    ),
    (
        "Year",
        365 * 86_400,
        "x-ratelimit-limit-year",
        "x-ratelimit-remaining-year",
    ),
];

/// Where a plugin's counters live.
#[derive(Debug, Clone)]
pub enum Store {
    /// The gateway's in-memory counters.
    Local,
    Redis(Arc<RedisCounters>),
    /// Decided on this node, synced with Redis every `sync_rate` seconds.
    Synced(Arc<Synced>),
}

/// How Redis-backed counters keep in step with Redis (`sync_rate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SyncMode {
    /// One atomic Redis script per request: exact across nodes.
    Synchronous,
    /// This node's memory only, whatever the strategy says.
    LocalOnly,
    /// Decided on this node, synced in batches.
    Every(std::time::Duration),
}

/// The shortest batched sync interval Kong accepts (seconds).
pub const MIN_SYNC_RATE: f64 = 0.02;

impl SyncMode {
    /// Kong's `sync_rate` of `ai-rate-limiting-advanced` (and the Enterprise rate
    /// limiters): 0 or unset synchronous, -1 local only, otherwise seconds between syncs.
    pub fn advanced(sync_rate: Option<f64>) -> SyncMode {
        match sync_rate {
            None => SyncMode::Synchronous,
            Some(-1.0) => SyncMode::LocalOnly,
            Some(v) if v >= MIN_SYNC_RATE && v.is_finite() => {
                SyncMode::Every(std::time::Duration::from_secs_f64(v))
            }
            Some(_) => SyncMode::Synchronous,
        }
    }

    /// Kong's `sync_rate` of `rate-limiting` (Kong's default -1, and 0): synchronous;
    /// otherwise seconds between syncs.
    pub fn basic(sync_rate: Option<f64>) -> SyncMode {
        match sync_rate {
            Some(v) if v >= MIN_SYNC_RATE && v.is_finite() => {
                SyncMode::Every(std::time::Duration::from_secs_f64(v))
            }
            _ => SyncMode::Synchronous,
        }
    }
}

/// The field error for a `sync_rate` neither mode accepts (`local_only`: whether -1 means
/// this node only; otherwise -1 is synchronous).
pub fn check_sync_rate(sync_rate: Option<f64>, local_only: bool) -> Option<(String, String)> {
    let v = sync_rate?;
    let ok = v == -1.0 || v == 0.0 || (v.is_finite() && v >= MIN_SYNC_RATE);
    let minus_one = if local_only {
        "-1 (counters in this node's memory only)"
    } else {
        "-1 (synchronous)"
    };
    (!ok).then(|| {
        (
            "sync_rate".into(),
            format!("must be {minus_one}, 0 (synchronous) or at least {MIN_SYNC_RATE} seconds between batched syncs"),
        )
    })
}

impl Store {
    /// The counters to use for one request (`local` is the gateway's own).
    pub fn counters(&self, local: &Arc<crate::quota::local::Local>) -> Counters {
        match self {
            Store::Local => Counters::Local(local.clone()),
            Store::Redis(r) => Counters::Redis(r.clone()),
            Store::Synced(s) => Counters::Synced(s.clone()),
        }
    }

    /// The Redis the counters are kept in or synced with, if any.
    pub fn redis(&self) -> Option<&Arc<RedisCounters>> {
        match self {
            Store::Local => None,
            Store::Redis(r) => Some(r),
            Store::Synced(s) => Some(s.redis()),
        }
    }

    /// The counters for `policy` with the Redis settings `redis` (at config `path`), kept
    /// in step with Redis as `sync` says.
    pub fn compile(
        policy: Policy,
        field: &str,
        redis: Option<&RedisConfig>,
        sync: SyncMode,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Store, Vec<(String, String)>> {
        match (policy, sync) {
            (Policy::Local, _) | (Policy::Redis, SyncMode::LocalOnly) => Ok(Store::Local),
            (Policy::Cluster, _) => Err(vec![(
                field.into(),
                "'cluster' keeps counters in Kong's database; tollgate shares counters across nodes with 'redis'".into(),
            )]),
            (Policy::Redis, _) => {
                let r = redis.cloned().unwrap_or_default();
                let password =
                    vault::field_secret("redis.password", r.password.as_deref(), vaults, env);
                let mut errors = Vec::new();
                let counters = match RedisStore::compile("redis", &r, password, &mut errors) {
                    Some(s) if errors.is_empty() => Arc::new(RedisCounters::new(s)),
                    _ => return Err(errors),
                };
                Ok(match sync {
                    SyncMode::Every(every) => Store::Synced(Arc::new(Synced::new(counters, every))),
                    _ => Store::Redis(counters),
                })
            }
        }
    }
}

/// A compiled `rate-limiting` instance.
#[derive(Debug)]
pub struct RateLimiting {
    pub config: RateLimitingConfig,
    /// The plugin's id: counters of different instances never mix.
    pub id: String,
    /// (period name, seconds, limit), shortest first.
    pub periods: Vec<(&'static str, u64, f64)>,
    pub store: Store,
}

impl RateLimitingConfig {
    /// Field errors (path under `config`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let limits = self.limits();
        if limits.is_empty() {
            errs.push((
                "config".into(),
                "at least one of these fields must be non-empty: 'config.second', 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'".into(),
            ));
        }
        for (name, _, v) in &limits {
            if v.is_nan() || *v < 0.0 {
                errs.push((
                    name.to_lowercase(),
                    "value must be a non-negative number".into(),
                ));
            }
        }
        // Kong: a longer period cannot allow fewer requests than a shorter one.
        for w in limits.windows(2) {
            let ((short, _, a), (long, _, b)) = (w[0], w[1]);
            if b < a {
                errs.push((
                    "config".into(),
                    format!(
                        "the limit for {}({b}) cannot be lower than the limit for {}({a})",
                        long.to_lowercase(),
                        short.to_lowercase()
                    ),
                ));
            }
        }
        if self.limit_by == LimitBy::Header && self.header_name.as_deref().unwrap_or("").is_empty()
        {
            errs.push((
                "header_name".into(),
                "required when limit_by is header".into(),
            ));
        }
        if self.limit_by == LimitBy::Path && self.path.as_deref().unwrap_or("").is_empty() {
            errs.push(("path".into(), "required when limit_by is path".into()));
        }
        if let Some(c) = self.error_code {
            if !(100.0..=599.0).contains(&c) {
                errs.push((
                    "error_code".into(),
                    "must be an HTTP status (100-599)".into(),
                ));
            }
        }
        errs.extend(check_sync_rate(self.sync_rate, false));
        errs
    }

    /// The configured (period, seconds, limit), shortest first.
    pub fn limits(&self) -> Vec<(&'static str, u64, f64)> {
        let vals = [
            self.second,
            self.minute,
            self.hour,
            self.day,
            self.month,
            self.year,
        ];
        PERIODS
            .iter()
            .zip(vals)
            .filter_map(|((n, s, _, _), v)| v.map(|v| (*n, *s, v)))
            .collect()
    }

    /// `redis`, with Kong's deprecated flat `redis_*` fields folded in.
    pub fn redis_record(&self) -> Option<RedisConfig> {
        let flat = self.redis_host.is_some()
            || self.redis_port.is_some()
            || self.redis_password.is_some()
            || self.redis_username.is_some()
            || self.redis_database.is_some()
            || self.redis_timeout.is_some()
            || self.redis_ssl.is_some();
        if !flat {
            return self.redis.clone();
        }
        let mut r = self.redis.clone().unwrap_or_default();
        if let Some(h) = &self.redis_host {
            r.host = h.clone();
        }
        if let Some(p) = self.redis_port {
            r.port = p;
        }
        if self.redis_password.is_some() {
            r.password = self.redis_password.clone();
        }
        if self.redis_username.is_some() {
            r.username = self.redis_username.clone();
        }
        if let Some(d) = self.redis_database {
            r.database = d;
        }
        if self.redis_timeout.is_some() {
            r.timeout = self.redis_timeout;
        }
        if let Some(s) = self.redis_ssl {
            r.ssl = s;
        }
        Some(r)
    }
}

impl RateLimiting {
    /// Compiles `config` for plugin `id`.
    pub fn new(
        id: &str,
        config: RateLimitingConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RateLimiting, Vec<(String, String)>> {
        let store = Store::compile(
            config.policy,
            "policy",
            config.redis_record().as_ref(),
            SyncMode::basic(config.sync_rate),
            vaults,
            env,
        )?;
        Ok(RateLimiting {
            periods: config.limits(),
            config,
            id: id.to_string(),
            store,
        })
    }

    /// The counters for the request identified by `identity`.
    pub fn slots(&self, identity: &str) -> Vec<Slot> {
        self.periods
            .iter()
            .map(|(name, secs, limit)| Slot {
                key: format!("rl:{}:{identity}:{name}", self.id),
                limit: *limit,
                window: *secs,
                sliding: false,
            })
            .collect()
    }

    /// The status and message of a refusal.
    pub fn refusal(&self) -> (StatusCode, String) {
        (
            status(self.config.error_code),
            self.config
                .error_message
                .clone()
                .unwrap_or_else(|| "API rate limit exceeded".into()),
        )
    }

    /// Kong's headers for these readings (`X-RateLimit-{Limit,Remaining}-<Period>`, then
    /// `RateLimit-*` and the unsuffixed `X-RateLimit-*` for the limit closest to running
    /// out) and `Retry-After` when refused.
    pub fn headers(
        &self,
        readings: &[Reading],
        refused: bool,
        out: &mut Vec<(HeaderName, HeaderValue)>,
    ) {
        if self.config.hide_client_headers {
            if refused {
                if let Some(r) = readings.iter().map(|r| r.retry_after).max() {
                    push_named(out, http::header::RETRY_AFTER, r.max(1));
                }
            }
            return;
        }
        for ((name, _, _), r) in self.periods.iter().zip(readings) {
            if let Some((_, _, limit, remaining)) = PERIODS.iter().find(|p| p.0 == *name) {
                push_named(out, HeaderName::from_static(limit), r.limit);
                push_named(
                    out,
                    HeaderName::from_static(remaining),
                    r.remaining().floor(),
                );
            }
        }
        summary_headers(readings, refused, out);
    }
}

/// The summary headers' names (lower-case, as `HeaderName::from_static` wants them).
const SUMMARY: [[&str; 3]; 2] = [
    ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"],
    [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ],
];

/// `RateLimit-Limit/Remaining/Reset`, `X-RateLimit-Limit/Remaining/Reset` for the reading
/// closest to running out, and `Retry-After` on a refusal.
pub fn summary_headers(
    readings: &[Reading],
    refused: bool,
    out: &mut Vec<(HeaderName, HeaderValue)>,
) {
    let tightest = readings.iter().min_by(|a, b| {
        let ra = a.remaining() / a.limit.max(f64::MIN_POSITIVE);
        let rb = b.remaining() / b.limit.max(f64::MIN_POSITIVE);
        ra.total_cmp(&rb).then(b.reset.cmp(&a.reset))
    });
    if let Some(t) = tightest {
        for [limit, remaining, reset] in SUMMARY {
            push_named(out, HeaderName::from_static(limit), t.limit);
            push_named(
                out,
                HeaderName::from_static(remaining),
                t.remaining().floor(),
            );
            push_named(out, HeaderName::from_static(reset), t.reset);
        }
    }
    if refused {
        let wait = readings.iter().map(|r| r.retry_after).max().unwrap_or(1);
        push_named(out, http::header::RETRY_AFTER, wait.max(1));
    }
}

/// Adds a header whose value is a number (integers printed without a fraction).
pub fn push(out: &mut Vec<(HeaderName, HeaderValue)>, name: &str, v: impl Into<Num>) {
    // Names are lower-case ASCII here; from_bytes only checks them (no lower-casing copy).
    if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
        push_named(out, n, v);
    }
}

/// [`push`] for a name already made.
pub fn push_named(out: &mut Vec<(HeaderName, HeaderValue)>, name: HeaderName, v: impl Into<Num>) {
    let value = match v.into() {
        // HeaderValue's own integer formatting skips the fmt machinery.
        Num::U(u) => HeaderValue::from(u),
        Num::F(f) if f.fract() == 0.0 && (0.0..1e15).contains(&f) => HeaderValue::from(f as u64),
        Num::F(f) => match HeaderValue::try_from(format!("{f:.6}").trim_end_matches('0')) {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    out.push((name, value));
}

/// A header's numeric value.
pub enum Num {
    U(u64),
    F(f64),
}
impl From<u64> for Num {
    fn from(v: u64) -> Num {
        Num::U(v)
    }
}
impl From<f64> for Num {
    fn from(v: f64) -> Num {
        Num::F(v)
    }
}

/// `error_code` as a status (429 when unset or odd).
pub fn status(code: Option<f64>) -> StatusCode {
    code.and_then(|c| StatusCode::from_u16(c as u16).ok())
        .unwrap_or(StatusCode::TOO_MANY_REQUESTS)
}

/// Who a request is, for picking its counters.
pub struct Subject<'a> {
    pub consumer: Option<&'a str>,
    pub credential: Option<&'a str>,
    /// The consumer group the plugin is scoped to, else the consumer's first group.
    pub group: Option<&'a str>,
    pub ip: &'a str,
    pub headers: &'a HeaderMap,
    pub path: &'a str,
    pub service: Option<&'a str>,
}

/// The counter identity for `by`; like Kong, a request without a consumer, credential,
/// group or header is counted by its IP.
pub fn identity(
    by: LimitBy,
    header_name: Option<&str>,
    path: Option<&str>,
    s: &Subject<'_>,
) -> String {
    let found = match by {
        LimitBy::Consumer => s.consumer.map(|c| format!("consumer:{c}")),
        LimitBy::Credential => s.credential.map(|c| format!("credential:{c}")),
        LimitBy::ConsumerGroup => s.group.map(|g| format!("group:{g}")),
        LimitBy::Header => header_name
            .and_then(|h| s.headers.get(h))
            .and_then(|v| v.to_str().ok())
            .map(|v| format!("header:{v}")),
        LimitBy::Path => Some(format!("path:{}", path.unwrap_or(s.path))),
        LimitBy::Service => s.service.map(|x| format!("service:{x}")),
        LimitBy::Ip => None,
    };
    found.unwrap_or_else(|| format!("ip:{}", s.ip))
}

/// The prefix [`identity`] gives counters kept `by` (an IP when nothing else is known).
pub fn identity_kind(by: LimitBy) -> &'static str {
    match by {
        LimitBy::Consumer => "consumer",
        LimitBy::Credential => "credential",
        LimitBy::ConsumerGroup => "group",
        LimitBy::Header => "header",
        LimitBy::Path => "path",
        LimitBy::Service => "service",
        LimitBy::Ip => "ip",
    }
}

/// Whether a `limit_by: path` plugin applies to this request path.
pub fn path_applies(by: LimitBy, path: Option<&str>, request_path: &str) -> bool {
    by != LimitBy::Path || path.is_none_or(|p| p == request_path)
}

/// Runs a check-and-count for one request.
pub async fn count_request(
    rl: &RateLimiting,
    counters: &Counters,
    identity: &str,
    now_ms: u64,
) -> Result<crate::quota::Outcome, crate::quota::StoreError> {
    counters
        .apply(&rl.slots(identity), 1.0, Mode::CheckAndAdd, now_ms)
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let c: RateLimitingConfig =
            serde_json::from_value(serde_json::json!({"minute": 10, "hour": 5})).unwrap();
        let e = c.validate();
        assert_eq!(
            e[0].1,
            "the limit for hour(5) cannot be lower than the limit for minute(10)"
        );
        let c: RateLimitingConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(c.validate()[0]
            .1
            .starts_with("at least one of these fields"));
        let c: RateLimitingConfig = serde_json::from_value(
            serde_json::json!({"minute": 1, "limit_by": "header", "redis_host": "10.0.0.1", "redis_port": 6380}),
        )
        .unwrap();
        assert_eq!(c.validate()[0].0, "header_name");
        let r = c.redis_record().unwrap();
        assert_eq!((r.host.as_str(), r.port), ("10.0.0.1", 6380));
    }

    #[test]
    fn headers_and_identity() {
        let c: RateLimitingConfig =
            serde_json::from_value(serde_json::json!({"second": 2, "minute": 10})).unwrap();
        let rl = RateLimiting::new("p", c, &VaultTable::default(), &|_| None).unwrap();
        let readings = [
            Reading {
                used: 2.0,
                limit: 2.0,
                window: 1,
                reset: 1,
                retry_after: 1,
                held: 0.0,
            },
            Reading {
                used: 2.0,
                limit: 10.0,
                window: 60,
                reset: 40,
                retry_after: 0,
                held: 0.0,
            },
        ];
        let mut h = Vec::new();
        rl.headers(&readings, true, &mut h);
        let get = |n: &str| {
            h.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("x-ratelimit-limit-second").as_deref(), Some("2"));
        assert_eq!(get("x-ratelimit-remaining-minute").as_deref(), Some("8"));
        assert_eq!(get("ratelimit-remaining").as_deref(), Some("0"));
        assert_eq!(get("x-ratelimit-reset").as_deref(), Some("1"));
        assert_eq!(get("retry-after").as_deref(), Some("1"));
        let headers = HeaderMap::new();
        let s = Subject {
            consumer: None,
            credential: None,
            group: None,
            ip: "10.1.1.1",
            headers: &headers,
            path: "/x",
            service: None,
        };
        assert_eq!(identity(LimitBy::Consumer, None, None, &s), "ip:10.1.1.1");
    }
}

//! The per-request log record in Kong's `kong.log.serialize()` shape, plus `ai.proxy.*`.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::config::Snapshot;
use crate::llm::usage::Usage;
use crate::plugins::ai_proxy::{AiProxy, Target};

/// Header names whose values never reach a log line.
const REDACTED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "apikey",
    "cookie",
    "set-cookie",
];

/// One upstream attempt, for `tries` and `ai.proxy.tried_targets`.
#[derive(Debug, Clone, Default)]
pub struct Try {
    pub ip: String,
    pub port: u16,
    pub host: String,
    pub scheme: String,
    pub upstream_uri: String,
    pub route_type: String,
    pub provider: String,
    pub model: Option<String>,
    pub balancer_start: u64,
    pub balancer_latency: u64,
    /// `success`, `http_<status>`, `error`, `timeout`, `reset`…
    pub outcome: String,
    /// When the attempt started (µs after the request did) and how long it took until
    /// the upstream's response head (or the failure).
    pub start_us: u64,
    pub duration_us: u64,
    /// The attempt's span (its `traceparent` to the upstream), when tracing.
    pub span_id: Option<[u8; 8]>,
}

/// What ai-proxy adds to the record.
#[derive(Debug, Clone)]
pub struct AiLog {
    pub proxy: Arc<AiProxy>,
    /// The target that answered (the first target until one did).
    pub target: Option<usize>,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub usage: Option<Usage>,
    pub llm_latency_ms: Option<u64>,
    pub ttft_ms: Option<u64>,
    pub stream: bool,
    pub payload_request: Option<String>,
    pub payload_response: Option<String>,
    /// Why a stream ended badly (client abort, upstream cut…).
    pub stream_error: Option<String>,
    /// Semantic routing's decision (`ai.proxy.semantic`).
    pub semantic: Option<Value>,
    /// When semantic routing ran (µs after the request started) and for how long.
    pub semantic_at: Option<(u64, u64)>,
}

impl AiLog {
    /// An empty AI section for `proxy`.
    pub fn new(proxy: Arc<AiProxy>) -> AiLog {
        AiLog {
            proxy,
            target: None,
            request_model: None,
            response_model: None,
            usage: None,
            llm_latency_ms: None,
            ttft_ms: None,
            stream: false,
            payload_request: None,
            payload_response: None,
            stream_error: None,
            semantic: None,
            semantic_at: None,
        }
    }

    fn target(&self) -> Option<&Target> {
        self.proxy.targets.get(self.target.unwrap_or(0))
    }

    /// Provider auth header names, redacted like Authorization.
    fn secret_headers(&self) -> Vec<String> {
        self.proxy
            .targets
            .iter()
            .filter_map(|t| t.auth.header.as_ref().map(|(n, _)| n.as_str().to_string()))
            .collect()
    }
}

/// Everything the log phase knows about one request.
#[derive(Debug)]
pub struct RequestLog {
    pub request_id: String,
    pub started_at_ms: u64,
    pub started: Instant,
    pub client_ip: String,
    pub method: String,
    pub uri: String,
    pub url: String,
    pub request_headers: http::HeaderMap,
    pub request_size: u64,
    pub route: Option<usize>,
    pub upstream_uri: Option<String>,
    pub upstream_status: Option<u16>,
    pub status: u16,
    pub response_headers: http::HeaderMap,
    pub response_size: u64,
    /// Time spent in the gateway before the request left (ms).
    pub proxy_latency_ms: Option<u64>,
    /// Time from sending upstream to its response headers (ms).
    pub upstream_latency_ms: Option<u64>,
    pub tries: Vec<Try>,
    pub ai: Option<AiLog>,
    /// `upstream` or `kong` (the gateway answered itself).
    pub source: &'static str,
    /// A log plugin will read this record (set by `capture_request`).
    pub enabled: bool,
    /// The authenticated consumer (index into the snapshot's consumers) and credential id.
    pub consumer: Option<(usize, Option<String>)>,
    /// Token quotas owed this request's usage once the answer is complete.
    pub charges: Vec<crate::plugins::ai_rate_limiting::Charge>,
    /// A `prometheus` instance applies: the log phase records metrics.
    pub metrics: bool,
    /// Where the usage record goes.
    pub analytics: Option<Arc<crate::observe::analytics::Analytics>>,
    /// What a guardrail did to the prompt (`masked`, `blocked`).
    pub guardrail: Option<&'static str>,
    /// Total time (ms), set when the log phase runs.
    pub finished_ms: Option<u64>,
    /// The request's trace (an `opentelemetry` instance applies).
    pub trace: Option<crate::observe::otel::TraceCtx>,
    /// The plugin chain when it differs from the route's (consumer-scoped plugins).
    pub chain: Option<Vec<usize>>,
}

impl RequestLog {
    /// A record with only what every response needs; `capture_request` fills the rest when
    /// a log plugin will read it.
    pub fn new(request_id: String, started: Instant) -> RequestLog {
        RequestLog {
            request_id,
            started_at_ms: crate::proxy::millis_since_epoch()
                .saturating_sub(started.elapsed().as_millis() as u64),
            started,
            client_ip: String::new(),
            method: String::new(),
            uri: String::new(),
            url: String::new(),
            request_headers: http::HeaderMap::new(),
            request_size: 0,
            route: None,
            upstream_uri: None,
            upstream_status: None,
            status: 0,
            response_headers: http::HeaderMap::new(),
            response_size: 0,
            proxy_latency_ms: None,
            upstream_latency_ms: None,
            tries: Vec::new(),
            ai: None,
            source: "kong",
            enabled: false,
            consumer: None,
            charges: Vec::new(),
            metrics: false,
            analytics: None,
            guardrail: None,
            finished_ms: None,
            trace: None,
            chain: None,
        }
    }

    /// The request's total time (ms): fixed when the log phase ran, so writers that
    /// serialize the record later report the request's time, not their queue's.
    pub fn total_ms(&self) -> u64 {
        self.finished_ms
            .unwrap_or_else(|| self.started.elapsed().as_millis() as u64)
    }

    /// Copies the request's details for the log record.
    pub fn capture_request(
        &mut self,
        parts: &http::request::Parts,
        client_ip: &str,
        scheme: &str,
        host: &str,
    ) {
        let uri = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        self.client_ip = client_ip.to_string();
        self.method = parts.method.to_string();
        self.url = format!("{scheme}://{host}{uri}");
        self.uri = uri.to_string();
        self.request_headers = parts.headers.clone();
        self.enabled = true;
    }
}

/// A header map as the log shows it: one string per header (an array when repeated),
/// secrets as `REDACTED`; serialized straight to the output, no JSON tree.
struct Headers<'a> {
    map: &'a http::HeaderMap,
    secret: &'a [String],
}

impl<'a> serde::Serialize for Headers<'a> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = ser.serialize_map(Some(self.map.keys_len()))?;
        for name in self.map.keys() {
            let key = name.as_str();
            let secret = REDACTED_HEADERS.contains(&key)
                || self.secret.iter().any(|s| s.eq_ignore_ascii_case(key));
            let text = |v: &'a http::HeaderValue| -> std::borrow::Cow<'a, str> {
                if secret {
                    "REDACTED".into()
                } else {
                    String::from_utf8_lossy(v.as_bytes())
                }
            };
            let mut values = self.map.get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(one), None) => m.serialize_entry(key, &text(one))?,
                _ => {
                    let all: Vec<_> = self.map.get_all(name).iter().map(text).collect();
                    m.serialize_entry(key, &all)?
                }
            }
        }
        m.end()
    }
}

/// The query string as Kong logs it: `name: value`, `name: true` for a bare name.
struct Query<'a>(&'a str);

impl serde::Serialize for Query<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let pairs: Vec<(String, String)> = match self.0.split_once('?') {
            Some((_, q)) => form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
            None => Vec::new(),
        };
        // A repeated name keeps its last value, as a JSON object holds one.
        let mut seen: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
        for (k, v) in &pairs {
            match seen.iter_mut().find(|(n, _)| n == k) {
                Some(e) => e.1 = v,
                None => seen.push((k, v)),
            }
        }
        let mut m = ser.serialize_map(Some(seen.len()))?;
        for (k, v) in seen {
            if v.is_empty() {
                m.serialize_entry(k, &true)?;
            } else {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

#[derive(serde::Serialize)]
struct RequestPart<'a> {
    id: &'a str,
    uri: &'a str,
    url: &'a str,
    querystring: Query<'a>,
    method: &'a str,
    headers: Headers<'a>,
    size: u64,
}

#[derive(serde::Serialize)]
struct ResponsePart<'a> {
    status: u16,
    headers: Headers<'a>,
    size: u64,
}

#[derive(serde::Serialize)]
struct Latencies {
    kong: u64,
    proxy: i64,
    request: u64,
    receive: u64,
}

#[derive(serde::Serialize)]
struct TryPart<'a> {
    ip: &'a str,
    port: u16,
    balancer_start: u64,
    balancer_latency: u64,
}

#[derive(serde::Serialize)]
struct ConsumerPart<'a> {
    id: &'a str,
    username: &'a Option<String>,
    custom_id: &'a Option<String>,
}

#[derive(serde::Serialize)]
struct Entity<'a> {
    id: &'a str,
}

/// Kong's log record (`kong.log.serialize()`), field by field.
#[derive(serde::Serialize)]
struct Record<'a> {
    request: RequestPart<'a>,
    upstream_uri: &'a str,
    upstream_status: String,
    response: ResponsePart<'a>,
    latencies: Latencies,
    tries: Vec<TryPart<'a>>,
    client_ip: &'a str,
    started_at: u64,
    source: &'a str,
    workspace: &'static str,
    workspace_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer: Option<ConsumerPart<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authenticated_entity: Option<Entity<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ai: Option<AiPart<'a>>,
}

impl RequestLog {
    /// The record as one JSON line's bytes (without the newline), written straight from
    /// the log's fields (route and service JSON come ready-made from the snapshot).
    pub fn to_bytes(&self, snap: &Snapshot) -> Vec<u8> {
        let total = self.total_ms();
        let proxy = self.upstream_latency_ms.map(|v| v as i64).unwrap_or(-1);
        let extra: Vec<String> = self
            .ai
            .as_ref()
            .map(AiLog::secret_headers)
            .unwrap_or_default();
        let route = self.route.and_then(|r| snap.routes.get(r).map(|x| (r, x)));
        let service = route.and_then(|(_, r)| r.service);
        let consumer = self
            .consumer
            .as_ref()
            .and_then(|(ci, cred)| snap.consumers.get(*ci).map(|c| (c, cred)));
        let rec = Record {
            request: RequestPart {
                id: &self.request_id,
                uri: &self.uri,
                url: &self.url,
                querystring: Query(&self.uri),
                method: &self.method,
                headers: Headers {
                    map: &self.request_headers,
                    secret: &extra,
                },
                size: self.request_size,
            },
            upstream_uri: self.upstream_uri.as_deref().unwrap_or(""),
            upstream_status: self
                .upstream_status
                .map(|s| s.to_string())
                .unwrap_or_default(),
            response: ResponsePart {
                status: self.status,
                headers: Headers {
                    map: &self.response_headers,
                    secret: &extra,
                },
                size: self.response_size,
            },
            latencies: Latencies {
                kong: self.proxy_latency_ms.unwrap_or(total),
                proxy,
                request: total,
                receive: total
                    .saturating_sub(self.proxy_latency_ms.unwrap_or(0))
                    .saturating_sub(proxy.max(0) as u64),
            },
            tries: self
                .tries
                .iter()
                .map(|t| TryPart {
                    ip: &t.ip,
                    port: t.port,
                    balancer_start: t.balancer_start,
                    balancer_latency: t.balancer_latency,
                })
                .collect(),
            client_ip: &self.client_ip,
            started_at: self.started_at_ms,
            source: self.source,
            workspace: crate::DEFAULT_WORKSPACE_ID,
            workspace_name: "default",
            route: route
                .and_then(|(r, _)| snap.route_log.get(r))
                .and_then(|v| v.as_deref()),
            service: service
                .and_then(|s| snap.service_log.get(s))
                .and_then(|v| v.as_deref()),
            consumer: consumer.map(|(c, _)| ConsumerPart {
                id: &c.id,
                username: &c.username,
                custom_id: &c.custom_id,
            }),
            authenticated_entity: consumer
                .and_then(|(_, cred)| cred.as_deref())
                .map(|id| Entity { id }),
            ai: self.ai.as_ref().map(|ai| ai.part(&self.tries)),
        };
        serde_json::to_vec(&rec).unwrap_or_default()
    }
}

#[derive(serde::Serialize)]
struct AiPart<'a> {
    proxy: ProxyPart<'a>,
}

#[derive(serde::Serialize)]
struct TriedPart<'a> {
    ip: &'a str,
    port: u16,
    host: &'a str,
    upstream_scheme: &'a str,
    upstream_uri: &'a str,
    route_type: &'a str,
    provider: &'a str,
    model: &'a Option<String>,
    outcome: &'a str,
}

#[derive(serde::Serialize)]
struct MetaPart<'a> {
    plugin_id: &'a str,
    provider_name: &'a str,
    request_model: &'a str,
    response_model: &'a str,
    llm_latency: u64,
    request_mode: &'static str,
}

#[derive(serde::Serialize)]
struct Cached {
    cached_tokens: u64,
}

#[derive(serde::Serialize)]
struct Reasoning {
    reasoning_tokens: u64,
}

#[derive(serde::Serialize)]
struct UsagePart {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    cost: f64,
    time_per_token: f64,
    time_to_first_token: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<Cached>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<Reasoning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    search_units: Option<u64>,
}

#[derive(serde::Serialize)]
struct PayloadPart<'a> {
    request: &'a Option<String>,
    response: &'a Option<String>,
}

/// `ai.proxy` (spec §6.1): what was tried, and with `log_statistics` the meta and usage.
#[derive(serde::Serialize)]
struct ProxyPart<'a> {
    tried_targets: Vec<TriedPart<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    semantic: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<MetaPart<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsagePart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<PayloadPart<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl AiLog {
    fn part<'a>(&'a self, tries: &'a [Try]) -> AiPart<'a> {
        let target = self.target();
        let (stats, payloads) = target
            .map(|t| (t.logging.log_statistics, t.logging.log_payloads))
            .unwrap_or((false, false));
        let request_model = self.request_model.as_deref().unwrap_or("UNSPECIFIED");
        let llm_latency = self.llm_latency_ms.unwrap_or(0);
        let usage = stats.then(|| {
            let u = self.usage.clone().unwrap_or_default();
            UsagePart {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
                cost: u.cost(
                    target.and_then(|t| t.options.input_cost),
                    target.and_then(|t| t.options.output_cost),
                ),
                time_per_token: if u.completion_tokens > 0 {
                    llm_latency as f64 / u.completion_tokens as f64
                } else {
                    0.0
                },
                time_to_first_token: self.ttft_ms.unwrap_or(llm_latency),
                prompt_tokens_details: u.cached_tokens.map(|c| Cached { cached_tokens: c }),
                completion_tokens_details: u.reasoning_tokens.map(|r| Reasoning {
                    reasoning_tokens: r,
                }),
                search_units: u.search_units,
            }
        });
        AiPart {
            proxy: ProxyPart {
                tried_targets: tries
                    .iter()
                    .map(|t| TriedPart {
                        ip: &t.ip,
                        port: t.port,
                        host: &t.host,
                        upstream_scheme: &t.scheme,
                        upstream_uri: &t.upstream_uri,
                        route_type: &t.route_type,
                        provider: &t.provider,
                        model: &t.model,
                        outcome: &t.outcome,
                    })
                    .collect(),
                semantic: self.semantic.as_ref(),
                meta: stats.then(|| MetaPart {
                    plugin_id: &self.proxy.plugin_id,
                    provider_name: target.map(|t| t.provider.as_str()).unwrap_or(""),
                    request_model,
                    response_model: self.response_model.as_deref().unwrap_or(request_model),
                    llm_latency,
                    request_mode: if self.stream { "stream" } else { "oneshot" },
                }),
                usage,
                payload: payloads.then_some(PayloadPart {
                    request: &self.payload_request,
                    response: &self.payload_response,
                }),
                error: self.stream_error.as_deref(),
            },
        }
    }
}

/// What metrics, traces and usage records call a request's route, service and consumer:
/// their names, else their ids ("" when there is none).
pub struct Names<'a> {
    pub route: &'a str,
    pub service: &'a str,
    pub consumer: &'a str,
}

impl RequestLog {
    /// The request's route, service and consumer by name.
    pub fn names<'a>(&self, snap: &'a Snapshot) -> Names<'a> {
        let route = self.route.and_then(|r| snap.routes.get(r));
        let service = route
            .and_then(|r| r.service)
            .and_then(|s| snap.services.get(s));
        let consumer = self
            .consumer
            .as_ref()
            .and_then(|(c, _)| snap.consumers.get(*c));
        Names {
            route: route
                .map(|r| r.name.as_deref().unwrap_or(&r.id))
                .unwrap_or(""),
            service: service
                .map(|s| s.name.as_deref().unwrap_or(&s.id))
                .unwrap_or(""),
            consumer: consumer
                .map(|c| c.username.as_deref().unwrap_or(&c.id))
                .unwrap_or(""),
        }
    }
}

impl RequestLog {
    /// The request's usage record for analytics.
    pub fn usage_record(&self, snap: &Snapshot) -> crate::observe::analytics::Record {
        let elapsed = self.total_ms() as i64;
        let names = self.names(snap);
        let (application, group) = match &self.consumer {
            Some((c, credential)) => (
                credential.clone().unwrap_or_default(),
                snap.member_of
                    .get(*c)
                    .and_then(|g| g.first())
                    .and_then(|g| snap.groups.get(*g))
                    .map(|(_, name)| name.clone())
                    .unwrap_or_default(),
            ),
            None => Default::default(),
        };
        let mut r = crate::observe::analytics::Record {
            ts_ms: self.started_at_ms as i64,
            request_id: self.request_id.clone(),
            consumer: names.consumer.to_string(),
            application,
            consumer_group: group,
            route: names.route.to_string(),
            service: names.service.to_string(),
            latency_ms: elapsed,
            status: i64::from(self.status),
            guardrail: self.guardrail.unwrap_or("").to_string(),
            ..Default::default()
        };
        if let Some(ai) = &self.ai {
            let target = ai.target.and_then(|t| ai.proxy.targets.get(t));
            r.provider = target
                .map(|t| t.provider.as_str().to_string())
                .unwrap_or_default();
            r.model = ai
                .response_model
                .clone()
                .or_else(|| ai.request_model.clone())
                .unwrap_or_default();
            if let Some(u) = &ai.usage {
                r.prompt_tokens = u.prompt_tokens as i64;
                r.completion_tokens = u.completion_tokens as i64;
                r.total_tokens = u.total_tokens as i64;
                r.cost = u.cost(
                    target.and_then(|t| t.options.input_cost),
                    target.and_then(|t| t.options.output_cost),
                );
            }
        }
        r
    }
}

/// A finished request's record on its way to the log writers: serialized once, by the
/// first writer thread that needs it, so the request path does not pay for the JSON.
pub struct LogJob {
    log: RequestLog,
    snap: Arc<Snapshot>,
    line: std::sync::OnceLock<Vec<u8>>,
}

impl LogJob {
    /// A job for `log`, read against the config it ran under.
    pub fn new(log: RequestLog, snap: Arc<Snapshot>) -> Arc<LogJob> {
        Arc::new(LogJob {
            log,
            snap,
            line: std::sync::OnceLock::new(),
        })
    }

    /// The request's usage record for analytics.
    pub fn usage_record(&self) -> crate::observe::analytics::Record {
        self.log.usage_record(&self.snap)
    }

    /// The record's JSON (without the newline).
    pub fn line(&self) -> &[u8] {
        self.line.get_or_init(|| self.log.to_bytes(&self.snap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "authorization",
            http::HeaderValue::from_static("Bearer sk-secret"),
        );
        h.insert("my-key", http::HeaderValue::from_static("k-secret"));
        h.insert("accept", http::HeaderValue::from_static("*/*"));
        h.append("accept", http::HeaderValue::from_static("text/html"));
        let secret = ["My-Key".to_string()];
        let v = serde_json::to_string(&Headers {
            map: &h,
            secret: &secret,
        })
        .unwrap_or_default();
        assert!(!v.contains("secret"), "{v}");
        assert!(v.contains(r#""accept":["*/*","text/html"]"#), "{v}");
    }

    #[test]
    fn query_parsing() {
        let q = |u: &str| serde_json::to_value(Query(u)).unwrap_or_default();
        assert_eq!(q("/a?x=1&flag"), json!({"x":"1","flag":true}));
        assert_eq!(q("/a"), json!({}));
    }
}

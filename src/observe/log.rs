//! The per-request log record in Kong's `kong.log.serialize()` shape, plus `ai.proxy.*`.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

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
    /// The plugin chain when it differs from the route's (consumer-scoped plugins).
    pub chain: Option<Vec<usize>>,
}

impl RequestLog {
    /// A record with only what every response needs; `capture_request` fills the rest when
    /// a log plugin will read it.
    pub fn new(request_id: String, started: Instant) -> RequestLog {
        RequestLog {
            request_id,
            started_at_ms: 0,
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
            chain: None,
        }
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
        self.started_at_ms = crate::proxy::millis_since_epoch()
            .saturating_sub(self.started.elapsed().as_millis() as u64);
        self.client_ip = client_ip.to_string();
        self.method = parts.method.to_string();
        self.url = format!("{scheme}://{host}{uri}");
        self.uri = uri.to_string();
        self.request_headers = parts.headers.clone();
        self.enabled = true;
    }
}

fn headers_json(h: &http::HeaderMap, extra_secret: &[String]) -> Value {
    let mut m = Map::new();
    for name in h.keys() {
        let key = name.as_str();
        let secret = REDACTED_HEADERS.contains(&key)
            || extra_secret.iter().any(|s| s.eq_ignore_ascii_case(key));
        let values: Vec<Value> = h
            .get_all(name)
            .iter()
            .map(|v| {
                if secret {
                    Value::String("REDACTED".into())
                } else {
                    Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned())
                }
            })
            .collect();
        let v = if values.len() == 1 {
            values.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(values)
        };
        m.insert(key.to_string(), v);
    }
    Value::Object(m)
}

fn querystring(uri: &str) -> Value {
    let mut m = Map::new();
    if let Some((_, q)) = uri.split_once('?') {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            let v = if v.is_empty() {
                Value::Bool(true)
            } else {
                Value::String(v.into_owned())
            };
            m.insert(k.into_owned(), v);
        }
    }
    Value::Object(m)
}

impl RequestLog {
    /// Serializes the record as one JSON line's worth of bytes.
    pub fn to_json(&self, snap: &Snapshot) -> Value {
        let total = self.started.elapsed().as_millis() as u64;
        let proxy = self.upstream_latency_ms.map(|v| v as i64).unwrap_or(-1);
        let extra: Vec<String> = self
            .ai
            .as_ref()
            .map(AiLog::secret_headers)
            .unwrap_or_default();
        let mut rec = json!({
            "request": {
                "id": self.request_id,
                "uri": self.uri,
                "url": self.url,
                "querystring": querystring(&self.uri),
                "method": self.method,
                "headers": headers_json(&self.request_headers, &extra),
                "size": self.request_size,
            },
            "upstream_uri": self.upstream_uri.clone().unwrap_or_default(),
            "upstream_status": self.upstream_status.map(|s| s.to_string()).unwrap_or_default(),
            "response": {
                "status": self.status,
                "headers": headers_json(&self.response_headers, &extra),
                "size": self.response_size,
            },
            "latencies": {
                "kong": self.proxy_latency_ms.unwrap_or(total),
                "proxy": proxy,
                "request": total,
                "receive": total.saturating_sub(self.proxy_latency_ms.unwrap_or(0)).saturating_sub(proxy.max(0) as u64),
            },
            "tries": self.tries.iter().map(|t| json!({
                "ip": t.ip, "port": t.port, "balancer_start": t.balancer_start,
                "balancer_latency": t.balancer_latency,
            })).collect::<Vec<_>>(),
            "client_ip": self.client_ip,
            "started_at": self.started_at_ms,
            "source": self.source,
            "workspace": crate::DEFAULT_WORKSPACE_ID,
            "workspace_name": "default",
        });
        if let Some(ri) = self.route {
            if let Some(r) = snap.routes.get(ri) {
                rec["route"] = r.to_json(snap);
                if let Some(s) = r.service.and_then(|s| snap.services.get(s)) {
                    rec["service"] = s.to_json();
                }
            }
        }
        if let Some((ci, credential)) = &self.consumer {
            if let Some(c) = snap.consumers.get(*ci) {
                rec["consumer"] =
                    json!({"id": c.id, "username": c.username, "custom_id": c.custom_id});
                if let Some(id) = credential {
                    rec["authenticated_entity"] = json!({"id": id});
                }
            }
        }
        if let Some(ai) = &self.ai {
            rec["ai"] = json!({ "proxy": ai.to_json(&self.tries) });
        }
        rec
    }
}

impl AiLog {
    fn to_json(&self, tries: &[Try]) -> Value {
        let mut proxy = Map::new();
        let tried: Vec<Value> = tries
            .iter()
            .map(|t| {
                json!({
                    "ip": t.ip, "port": t.port, "host": t.host, "upstream_scheme": t.scheme,
                    "upstream_uri": t.upstream_uri, "route_type": t.route_type,
                    "provider": t.provider, "model": t.model, "outcome": t.outcome,
                })
            })
            .collect();
        proxy.insert("tried_targets".into(), Value::Array(tried));
        if let Some(s) = &self.semantic {
            proxy.insert("semantic".into(), s.clone());
        }
        let target = self.target();
        let logging = target.map(|t| t.logging.clone()).unwrap_or_default();
        if logging.log_statistics {
            let request_model = self
                .request_model
                .clone()
                .unwrap_or_else(|| "UNSPECIFIED".into());
            let response_model = self
                .response_model
                .clone()
                .unwrap_or_else(|| request_model.clone());
            let llm_latency = self.llm_latency_ms.unwrap_or(0);
            proxy.insert(
                "meta".into(),
                json!({
                    "plugin_id": self.proxy.plugin_id,
                    "provider_name": target.map(|t| t.provider.as_str()).unwrap_or(""),
                    "request_model": request_model,
                    "response_model": response_model,
                    "llm_latency": llm_latency,
                    "request_mode": if self.stream { "stream" } else { "oneshot" },
                }),
            );
            let u = self.usage.clone().unwrap_or_default();
            let mut usage = json!({
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens,
                "cost": u.cost(
                    target.and_then(|t| t.options.input_cost),
                    target.and_then(|t| t.options.output_cost),
                ),
                "time_per_token": if u.completion_tokens > 0 { llm_latency as f64 / u.completion_tokens as f64 } else { 0.0 },
                "time_to_first_token": self.ttft_ms.unwrap_or(llm_latency),
            });
            if let Some(c) = u.cached_tokens {
                usage["prompt_tokens_details"] = json!({ "cached_tokens": c });
            }
            if let Some(r) = u.reasoning_tokens {
                usage["completion_tokens_details"] = json!({ "reasoning_tokens": r });
            }
            if let Some(n) = u.search_units {
                usage["search_units"] = json!(n);
            }
            proxy.insert("usage".into(), usage);
        }
        if logging.log_payloads {
            proxy.insert(
                "payload".into(),
                json!({ "request": self.payload_request, "response": self.payload_response }),
            );
        }
        if let Some(e) = &self.stream_error {
            proxy.insert("error".into(), Value::String(e.clone()));
        }
        Value::Object(proxy)
    }
}

impl RequestLog {
    /// The request's usage record for analytics.
    pub fn usage_record(&self, snap: &Snapshot) -> crate::observe::analytics::Record {
        let elapsed = self.started.elapsed().as_millis() as i64;
        let route = self.route.and_then(|r| snap.routes.get(r));
        let service = route
            .and_then(|r| r.service)
            .and_then(|s| snap.services.get(s));
        let (consumer, application, group) = match &self.consumer {
            Some((c, credential)) => (
                snap.consumers
                    .get(*c)
                    .map(|c| c.username.clone().unwrap_or_else(|| c.id.clone()))
                    .unwrap_or_default(),
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
            ts_ms: crate::proxy::millis_since_epoch() as i64 - elapsed,
            request_id: self.request_id.clone(),
            consumer,
            application,
            consumer_group: group,
            route: route
                .map(|r| r.name.clone().unwrap_or_else(|| r.id.clone()))
                .unwrap_or_default(),
            service: service
                .map(|s| s.name.clone().unwrap_or_else(|| s.id.clone()))
                .unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "authorization",
            http::HeaderValue::from_static("Bearer sk-secret"),
        );
        h.insert("my-key", http::HeaderValue::from_static("k-secret"));
        h.insert("accept", http::HeaderValue::from_static("*/*"));
        let v = headers_json(&h, &["My-Key".to_string()]).to_string();
        assert!(!v.contains("secret"), "{v}");
        assert!(v.contains("*/*"));
    }

    #[test]
    fn query_parsing() {
        assert_eq!(querystring("/a?x=1&flag"), json!({"x":"1","flag":true}));
        assert_eq!(querystring("/a"), json!({}));
    }
}

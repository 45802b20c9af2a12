//! The per-request log record in Kong's `kong.log.serialize()` shape, plus `ai.proxy.*`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

pub use super::captured::HeaderCopy;
use super::captured::{Headers, RequestCopy};
use super::json_out::{key, Out};

use crate::config::entities::Entities;
use crate::llm::target::{Target, TargetSet};
use crate::llm::usage::Usage;

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
    /// The upstream's address: the connection's peer, else the host's when it is one.
    pub ip: Option<std::net::IpAddr>,
    pub port: u16,
    /// Shared with the target's config: no copy per request.
    pub host: Arc<str>,
    /// Static for AI targets; a service's configured protocol otherwise.
    pub scheme: Cow<'static, str>,
    pub upstream_uri: UriText,
    pub route_type: Cow<'static, str>,
    pub provider: Cow<'static, str>,
    pub model: Option<String>,
    pub balancer_start: u64,
    pub balancer_latency: u64,
    /// `success`, `http_<status>`, `error`, `timeout`, `reset`…
    pub outcome: Cow<'static, str>,
    /// When the attempt started (µs after the request did) and how long it took until
    /// the upstream's response head (or the failure).
    pub start_us: u64,
    pub duration_us: u64,
    /// The attempt's span (its `traceparent` to the upstream), when tracing.
    pub span_id: Option<[u8; 8]>,
}

/// An upstream path and query for the log: the route type's fixed path and a target's
/// configured one are shared, not copied per request.
#[derive(Debug, Clone)]
pub enum UriText {
    Fixed(&'static str),
    Configured(Arc<str>),
    Built(String),
}

impl Default for UriText {
    fn default() -> Self {
        UriText::Fixed("")
    }
}

impl std::ops::Deref for UriText {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            UriText::Fixed(s) => s,
            UriText::Configured(s) => s,
            UriText::Built(s) => s,
        }
    }
}

impl From<String> for UriText {
    fn from(s: String) -> Self {
        UriText::Built(s)
    }
}

/// What ai-proxy adds to the record.
#[derive(Debug, Clone)]
pub struct AiLog {
    /// The ai-proxy instance's targets (and its id).
    pub targets: Arc<TargetSet>,
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
    /// `ai-semantic-cache`'s part (`ai.proxy.cache`).
    pub cache: Option<Value>,
    /// The cache's embeddings call (unrounded ms), when it made one: the histogram's source.
    pub cache_embeddings_ms: Option<f64>,
}

impl AiLog {
    /// An empty AI section for an ai-proxy instance with `targets`.
    pub fn new(targets: Arc<TargetSet>) -> AiLog {
        AiLog {
            targets,
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
            cache: None,
            cache_embeddings_ms: None,
        }
    }

    fn target(&self) -> Option<&Target> {
        self.targets.get(self.target.unwrap_or(0))
    }
}

/// A request's id, held as the header value it is sent as: the upstream's and the
/// client's `X-Kong-Request-Id` share its bytes (as text it was copied into a new value
/// for each, and cloned for the handler).
#[derive(Debug, Clone)]
pub struct RequestId(http::HeaderValue);

impl RequestId {
    /// An id from its text, whose buffer becomes the value; empty when the text is not
    /// visible ASCII (so [`as_str`](Self::as_str) always has it).
    pub fn new(text: String) -> RequestId {
        let value = text
            .is_ascii()
            .then(|| http::HeaderValue::from_maybe_shared(bytes::Bytes::from(text)));
        match value {
            Some(Ok(v)) => RequestId(v),
            _ => RequestId::default(),
        }
    }

    /// The id as a header value (a clone shares its bytes).
    pub fn header(&self) -> http::HeaderValue {
        self.0.clone()
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // `new` only keeps visible ASCII.
        self.0.to_str().unwrap_or_default()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId(http::HeaderValue::from_static(""))
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the log phase knows about one request.
#[derive(Debug)]
pub struct RequestLog {
    pub request_id: RequestId,
    pub started_at_ms: u64,
    pub started: Instant,
    /// Client address, method, URL and headers (set by `capture_request`).
    pub request: RequestCopy,
    pub request_size: u64,
    pub route: Option<usize>,
    pub upstream_uri: Option<UriText>,
    pub upstream_status: Option<u16>,
    pub status: u16,
    pub response_headers: HeaderCopy,
    pub response_size: u64,
    /// Time spent in the gateway before the request left (ms).
    pub proxy_latency_ms: Option<u64>,
    /// Time from sending upstream to its response headers (ms).
    pub upstream_latency_ms: Option<u64>,
    pub tries: Vec<Try>,
    pub ai: Option<AiLog>,
    /// `ai-mcp-proxy`'s part (`ai.mcp`), on MCP routes.
    pub mcp: Option<Box<super::mcp_log::McpLog>>,
    /// `upstream` or `kong` (the gateway answered itself).
    pub source: &'static str,
    /// A log plugin will read this record (set by `capture_request`).
    pub enabled: bool,
    /// The authenticated consumer (index into the snapshot's consumers) and credential id.
    pub consumer: Option<(usize, Option<String>)>,
    /// A `prometheus` instance applies: the log phase records metrics.
    pub metrics: bool,
    /// Where the usage record goes.
    pub analytics: Option<Arc<crate::observe::analytics::Analytics>>,
    /// What a guardrail did to the prompt (`masked`, `blocked`), or the code of a quota's
    /// refusal (`rate_limit_exceeded`, `prompt_exceeds_quota`).
    pub guardrail: Option<&'static str>,
    /// Why a quota refused the request (the message the client got).
    pub refusal: Option<String>,
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
    pub fn new(request_id: RequestId, started: Instant) -> RequestLog {
        RequestLog {
            request_id,
            started_at_ms: crate::rt::clock::millis_since_epoch()
                .saturating_sub(started.elapsed().as_millis() as u64),
            started,
            request: RequestCopy::default(),
            request_size: 0,
            route: None,
            upstream_uri: None,
            upstream_status: None,
            status: 0,
            response_headers: HeaderCopy::default(),
            response_size: 0,
            proxy_latency_ms: None,
            upstream_latency_ms: None,
            tries: Vec::new(),
            ai: None,
            mcp: None,
            source: "kong",
            enabled: false,
            consumer: None,
            metrics: false,
            analytics: None,
            guardrail: None,
            refusal: None,
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
        self.request = RequestCopy::of(parts, client_ip, scheme, host);
        self.enabled = true;
    }
}

/// Whether a header's value is a secret (shown as `REDACTED`): the usual credential
/// headers and every provider auth header name of the AI plugin.
fn secret_header(key: &[u8], ai: Option<&AiLog>) -> bool {
    REDACTED_HEADERS.iter().any(|h| h.as_bytes() == key)
        || ai.is_some_and(|ai| {
            ai.targets.iter().any(|t| {
                t.auth
                    .header
                    .as_ref()
                    .is_some_and(|(n, _)| n.as_str().as_bytes().eq_ignore_ascii_case(key))
            })
        })
}

/// A header map as the log shows it: one string per header (an array when repeated),
/// secrets as `REDACTED`.
fn write_headers(o: &mut Out, headers: Headers<'_>, ai: Option<&AiLog>) {
    fn value(o: &mut Out, v: &[u8], hidden: bool) {
        if hidden {
            o.string("REDACTED");
        } else {
            o.string_bytes(v);
        }
    }
    o.open();
    let mut it = headers.iter().peekable();
    while let Some((key, first, hidden)) = it.next() {
        let secret = secret_header(key, ai);
        // A repeated header's values follow its first one.
        o.header_name(key);
        if it.peek().is_some_and(|(n, ..)| *n == key) {
            o.open_array();
            o.elem();
            value(o, first, hidden || secret);
            while let Some((_, v, hidden)) = it.next_if(|(n, ..)| *n == key) {
                o.elem();
                value(o, v, hidden || secret);
            }
            o.close_array();
        } else {
            value(o, first, hidden || secret);
        }
    }
    o.close();
}

/// A try's upstream address (`""` when there was none).
fn write_ip(o: &mut Out, t: &Try) {
    match t.ip.or_else(|| t.host.parse().ok()) {
        Some(std::net::IpAddr::V4(v4)) => write_ipv4(o, v4),
        Some(ip) => o.display(ip),
        None => o.string(""),
    }
}

/// An IPv4 address as a JSON string, by hand: `Display` goes through `fmt`'s padding
/// machinery, about 2k instructions a line for four small numbers.
fn write_ipv4(o: &mut Out, ip: std::net::Ipv4Addr) {
    let mut text = [0u8; 15];
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            text[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            text[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        text[n] = b'0' + octet % 10;
        n += 1;
    }
    o.clean(&text[..n]);
}

/// The query string as Kong logs it: `name: value`, `name: true` for a bare name.
fn write_query(o: &mut Out, uri: &str) {
    o.open();
    if let Some((_, q)) = uri.split_once('?') {
        let pairs: Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> =
            form_urlencoded::parse(q.as_bytes()).collect();
        // A repeated name keeps its last value, as a JSON object holds one.
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == k) {
                continue;
            }
            let v = pairs.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v);
            o.key_escaped(k);
            match v {
                Some(v) if !v.is_empty() => o.string(v),
                _ => o.bool(true),
            }
        }
    }
    o.close();
}

impl RequestLog {
    /// The record (Kong's `kong.log.serialize()`, field by field) as one JSON line's bytes
    /// (without the newline); route and service JSON come ready-made from the snapshot.
    pub fn to_bytes(&self, snap: &Entities) -> Vec<u8> {
        self.append_to(snap, Vec::with_capacity(2048))
    }

    /// Appends the record's JSON line (without the newline) to `buf` and returns it.
    pub fn append_to(&self, snap: &Entities, buf: Vec<u8>) -> Vec<u8> {
        let total = self.total_ms();
        let proxy = self.upstream_latency_ms.map(|v| v as i64).unwrap_or(-1);
        let ai = self.ai.as_ref();
        let route = self.route.and_then(|r| snap.routes.get(r).map(|x| (r, x)));
        let service = route.and_then(|(_, r)| r.service);
        let consumer = self
            .consumer
            .as_ref()
            .and_then(|(ci, cred)| snap.consumers.get(*ci).map(|c| (c, cred)));
        let mut o = Out::appending(buf);
        // A line is ~2.3 KB: one reservation instead of growing through 1, 2 and 4 KiB.
        o.buf.reserve(3072);
        o.put(r#"{"request":{"id":"#);
        o.string(&self.request_id);
        key!(o, "uri");
        o.text_bytes(self.request.uri_bytes());
        key!(o, "url");
        o.text_bytes(self.request.url_bytes());
        key!(o, "querystring");
        write_query(&mut o, self.request.uri());
        key!(o, "method");
        // `http` admits only token characters in a method.
        o.clean(self.request.method());
        key!(o, "headers");
        write_headers(&mut o, self.request.headers(), ai);
        key!(o, "size");
        o.u64(self.request_size);
        o.put(r#"},"upstream_uri":"#);
        o.string(self.upstream_uri.as_deref().unwrap_or(""));
        key!(o, "upstream_status");
        match self.upstream_status {
            Some(s) => o.clean(itoa::Buffer::new().format(s)),
            None => o.clean(""),
        }
        o.put(r#","response":{"status":"#);
        o.u64(u64::from(self.status));
        key!(o, "headers");
        write_headers(&mut o, self.response_headers.headers(), ai);
        key!(o, "size");
        o.u64(self.response_size);
        o.put(r#"},"latencies":{"kong":"#);
        o.u64(self.proxy_latency_ms.unwrap_or(total));
        key!(o, "proxy");
        o.i64(proxy);
        key!(o, "request");
        o.u64(total);
        key!(o, "receive");
        o.u64(
            total
                .saturating_sub(self.proxy_latency_ms.unwrap_or(0))
                .saturating_sub(proxy.max(0) as u64),
        );
        o.put(r#"},"tries":["#);
        for t in &self.tries {
            o.lit(r#",{"ip":"#);
            write_ip(&mut o, t);
            key!(o, "port");
            o.u64(u64::from(t.port));
            key!(o, "balancer_start");
            o.u64(t.balancer_start);
            key!(o, "balancer_latency");
            o.u64(t.balancer_latency);
            o.close();
        }
        o.put(r#"],"client_ip":"#);
        o.text_bytes(self.request.client_ip_bytes());
        key!(o, "started_at");
        o.u64(self.started_at_ms);
        key!(o, "source");
        o.clean(self.source);
        o.put(concat!(
            r#","workspace":""#,
            "0dc6f45b-8f8d-40d2-a504-473544ee190b",
            r#"","workspace_name":"default""#
        ));
        if let Some(r) = route
            .and_then(|(r, _)| snap.route_log.get(r))
            .and_then(|v| v.as_deref())
        {
            key!(o, "route");
            o.raw(r.get());
        }
        if let Some(s) = service
            .and_then(|s| snap.service_log.get(s))
            .and_then(|v| v.as_deref())
        {
            key!(o, "service");
            o.raw(s.get());
        }
        if let Some((c, cred)) = consumer {
            key!(o, "consumer");
            o.open();
            key!(o, "id");
            o.string(&c.id);
            key!(o, "username");
            o.opt_string(c.username.as_deref());
            key!(o, "custom_id");
            o.opt_string(c.custom_id.as_deref());
            o.close();
            if let Some(id) = cred.as_deref() {
                key!(o, "authenticated_entity");
                o.open();
                key!(o, "id");
                o.string(id);
                o.close();
            }
        }
        if let Some(ai) = ai {
            key!(o, "ai");
            ai.write(&mut o, &self.tries);
        } else if let Some(mcp) = self.mcp.as_deref().filter(|m| m.logged()) {
            // MCP routes have no ai-proxy (Kong: the two are not combined).
            key!(o, "ai");
            o.raw(&mcp.to_json().to_string());
        }
        if let (Some(code), Some(message)) = (self.guardrail, self.refusal.as_deref()) {
            // Tollgate's own field: which quota refused the request, and why.
            key!(o, "quota_refusal");
            o.open();
            key!(o, "code");
            o.string(code);
            key!(o, "message");
            o.string(message);
            o.close();
        }
        o.close();
        o.buf
    }
}

impl AiLog {
    /// `ai.proxy` (spec §6.1): what was tried, and with `log_statistics` the meta and usage.
    fn write(&self, o: &mut Out, tries: &[Try]) {
        let target = self.target();
        let (stats, payloads) = target
            .map(|t| (t.logging.log_statistics, t.logging.log_payloads))
            .unwrap_or((false, false));
        let request_model = self.request_model.as_deref().unwrap_or("UNSPECIFIED");
        let llm_latency = self.llm_latency_ms.unwrap_or(0);
        o.put(r#"{"proxy":{"tried_targets":["#);
        for t in tries {
            o.lit(r#",{"ip":"#);
            write_ip(o, t);
            key!(o, "port");
            o.u64(u64::from(t.port));
            key!(o, "host");
            o.string(&t.host);
            key!(o, "upstream_scheme");
            o.string(&t.scheme);
            key!(o, "upstream_uri");
            o.string(&t.upstream_uri);
            key!(o, "route_type");
            o.string(&t.route_type);
            key!(o, "provider");
            o.string(&t.provider);
            key!(o, "model");
            o.opt_string(t.model.as_deref());
            key!(o, "outcome");
            o.string(&t.outcome);
            o.close();
        }
        o.close_array();
        if let Some(v) = &self.semantic {
            key!(o, "semantic");
            o.value(v);
        }
        if let Some(v) = &self.cache {
            key!(o, "cache");
            o.value(v);
        }
        if stats {
            o.lit(r#","meta":{"plugin_id":"#);
            o.string(&self.targets.plugin_id);
            key!(o, "provider_name");
            o.string(target.map(|t| t.provider.as_str()).unwrap_or(""));
            key!(o, "request_model");
            o.string(request_model);
            key!(o, "response_model");
            o.string(self.response_model.as_deref().unwrap_or(request_model));
            key!(o, "llm_latency");
            o.u64(llm_latency);
            key!(o, "request_mode");
            o.clean(if self.stream { "stream" } else { "oneshot" });
            o.put(r#"},"usage":{"prompt_tokens":"#);
            let u = self.usage.clone().unwrap_or_default();
            o.u64(u.prompt_tokens);
            key!(o, "completion_tokens");
            o.u64(u.completion_tokens);
            key!(o, "total_tokens");
            o.u64(u.total_tokens);
            key!(o, "cost");
            o.f64(u.cost(
                target.and_then(|t| t.options.input_cost),
                target.and_then(|t| t.options.output_cost),
            ));
            key!(o, "time_per_token");
            o.f64(if u.completion_tokens > 0 {
                llm_latency as f64 / u.completion_tokens as f64
            } else {
                0.0
            });
            key!(o, "time_to_first_token");
            o.u64(self.ttft_ms.unwrap_or(llm_latency));
            if let Some(c) = u.cached_tokens {
                key!(o, "prompt_tokens_details");
                o.open();
                key!(o, "cached_tokens");
                o.u64(c);
                o.close();
            }
            if let Some(r) = u.reasoning_tokens {
                key!(o, "completion_tokens_details");
                o.open();
                key!(o, "reasoning_tokens");
                o.u64(r);
                o.close();
            }
            if let Some(s) = u.search_units {
                key!(o, "search_units");
                o.u64(s);
            }
            o.close();
        }
        if payloads {
            key!(o, "payload");
            o.open();
            key!(o, "request");
            o.opt_string(self.payload_request.as_deref());
            key!(o, "response");
            o.opt_string(self.payload_response.as_deref());
            o.close();
        }
        if let Some(e) = self.stream_error.as_deref() {
            key!(o, "error");
            o.string(e);
        }
        o.close();
        o.close();
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
    pub fn names<'a>(&self, snap: &'a Entities) -> Names<'a> {
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
    /// The request's usage for analytics, borrowed from the record and the config.
    pub fn usage<'a>(&'a self, snap: &'a Entities) -> crate::observe::analytics::Usage<&'a str> {
        let elapsed = self.total_ms() as i64;
        let names = self.names(snap);
        let mut u = crate::observe::analytics::Usage::<&str> {
            ts_ms: self.started_at_ms as i64,
            request_id: &self.request_id,
            consumer: names.consumer,
            route: names.route,
            service: names.service,
            latency_ms: elapsed,
            latency_max: elapsed,
            requests: 1,
            status: i64::from(self.status),
            guardrail: self.guardrail.unwrap_or(""),
            ..Default::default()
        };
        self.who(snap, &mut u);
        if let Some(ai) = &self.ai {
            let target = ai.target.and_then(|t| ai.targets.get(t));
            u.provider = target.map(|t| t.provider.as_str()).unwrap_or_default();
            u.model = ai
                .response_model
                .as_deref()
                .or(ai.request_model.as_deref())
                .unwrap_or_default();
            if let Some(usage) = &ai.usage {
                u.prompt_tokens = usage.prompt_tokens as i64;
                u.completion_tokens = usage.completion_tokens as i64;
                u.total_tokens = usage.total_tokens as i64;
                u.cost = usage.cost(
                    target.and_then(|t| t.options.input_cost),
                    target.and_then(|t| t.options.output_cost),
                );
            }
            if let Some(c) = ai.cache.as_ref().filter(|c| c["cache_status"] == "Hit") {
                u.cached = 1;
                u.saved_cost = c["cost_savings"].as_f64().unwrap_or(0.0);
            }
        } else if let Some(m) = self.mcp.as_deref() {
            // MCP calls count by consumer and tool: the provider is `mcp`, the model the
            // tool (or the method, for requests that call none).
            u.provider = "mcp";
            u.model = m
                .tool
                .as_deref()
                .or(m.method.as_deref())
                .unwrap_or_default();
        }
        u
    }
}

impl RequestLog {
    /// The usage's application, consumer and credential: the consumer's name (a
    /// credential's id means nothing to whoever reads the usage), its id, the credential's
    /// id and tags; or the mark of a request key-auth refused.
    fn who<'a>(&'a self, snap: &'a Entities, u: &mut crate::observe::analytics::Usage<&'a str>) {
        let Some((c, credential)) = &self.consumer else {
            // The gateway's only 401 of its own is key-auth's refusal (an upstream's 401
            // has source `upstream`; an authenticated one has a consumer).
            if self.status == 401 && self.source == "kong" {
                u.application = crate::observe::analytics::UNAUTHENTICATED;
                u.unauthenticated = true;
            }
            return;
        };
        if let Some(consumer) = snap.consumers.get(*c) {
            u.application = consumer
                .username
                .as_deref()
                .or(consumer.custom_id.as_deref())
                .unwrap_or(&consumer.id);
            u.consumer_id = &consumer.id;
        }
        if let Some(id) = credential {
            u.credential = id;
            if let Some(tags) = snap.credential_tags.get(id) {
                u.credential_tags = tags;
            }
        }
        u.consumer_group = snap
            .member_of
            .get(*c)
            .and_then(|g| g.first())
            .and_then(|g| snap.groups.get(*g))
            .map(|(_, name)| name.as_str())
            .unwrap_or_default();
    }
}

/// A finished request's record on its way to the log writers: serialized once, by the
/// first writer thread that needs it, so the request path does not pay for the JSON.
pub struct LogJob {
    log: Box<RequestLog>,
    snap: Arc<Entities>,
    line: std::sync::OnceLock<Vec<u8>>,
}

impl LogJob {
    /// A job for `log`, read against the config it ran under; `line` is its JSON when
    /// already formatted.
    pub fn new(log: Box<RequestLog>, snap: Arc<Entities>, line: Option<Vec<u8>>) -> Arc<LogJob> {
        Arc::new(LogJob {
            log,
            snap,
            line: line.map(std::sync::OnceLock::from).unwrap_or_default(),
        })
    }

    /// The record.
    pub fn log(&self) -> &RequestLog {
        &self.log
    }

    /// The record's JSON (without the newline).
    pub fn line(&self) -> &[u8] {
        self.line.get_or_init(|| self.log.to_bytes(&self.snap))
    }
}

/// Jobs the writers are done with, waiting to be freed on a request thread. A job's memory
/// comes from the thread that served the request; freed by a writer thread, glibc's malloc
/// puts it in that thread's caches, and the request thread's next allocations all take the
/// slow, locked path (bench c=64: a quarter more CPU per request). Freed where it came from,
/// it goes back to the request thread's own caches.
static RETURNED: std::sync::Mutex<Vec<Arc<LogJob>>> = std::sync::Mutex::new(Vec::new());
/// How many times a request thread took jobs from `RETURNED`.
static REAPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Whether `RETURNED` may hold jobs (set by the writers under its lock). Read first by
/// every request, so that without http-log (no jobs) no request writes to the lock's
/// cache line, which would move between the workers' cores on each one.
static PILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Jobs a request frees: more than a request adds (one per writer), so the pile shrinks.
const REAP_PER_REQUEST: usize = 4;
/// Past this many, a writer frees the surplus itself.
const RETURNED_MAX: usize = 16 * 1024;

/// A writer hands back the jobs it is done with (draining `done`). `seen` is the writer's
/// last look at the reap count: when no request took any since, the gateway is idle and
/// the writer frees what waits itself, so nothing is held until the next request.
pub fn give_back(done: &mut Vec<Arc<LogJob>>, seen: &mut u64) {
    let mut free_here = Vec::new();
    if let Ok(mut pile) = RETURNED.lock() {
        let reaped = REAPED.load(std::sync::atomic::Ordering::Relaxed);
        if reaped == *seen {
            free_here = std::mem::take(&mut *pile);
        }
        *seen = reaped;
        pile.append(done);
        if pile.len() > RETURNED_MAX {
            let surplus = pile.len() - RETURNED_MAX;
            free_here.extend(pile.drain(..surplus));
        }
        PILED.store(!pile.is_empty(), std::sync::atomic::Ordering::Relaxed);
    }
    drop(free_here);
    done.clear();
}

/// Frees a few of the jobs the writers handed back (called on a request thread, after the
/// response went out).
pub fn reap() {
    if !PILED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let mut taken: [Option<Arc<LogJob>>; REAP_PER_REQUEST] = Default::default();
    {
        let Ok(mut pile) = RETURNED.try_lock() else {
            return;
        };
        if pile.is_empty() {
            PILED.store(false, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        for slot in taken.iter_mut() {
            *slot = pile.pop();
        }
    }
    REAPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    drop(taken);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers_json(h: &http::HeaderMap) -> String {
        let mut o = Out::appending(Vec::with_capacity(64));
        let mut copy = HeaderCopy::of(h);
        assert!(copy.redact("X-One"));
        assert!(!copy.redact("x-none"));
        write_headers(&mut o, copy.headers(), None);
        String::from_utf8(o.buf).unwrap_or_default()
    }

    #[test]
    fn ipv4_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.0.9",
        ] {
            let ip: std::net::Ipv4Addr = ip.parse().unwrap();
            let mut o = Out::appending(Vec::new());
            write_ipv4(&mut o, ip);
            assert_eq!(String::from_utf8(o.buf).unwrap(), format!("\"{ip}\""));
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "authorization",
            http::HeaderValue::from_static("Bearer sk-secret"),
        );
        h.insert("apikey", http::HeaderValue::from_static("k-secret"));
        h.insert("accept", http::HeaderValue::from_static("*/*"));
        h.append("accept", http::HeaderValue::from_static("text/html"));
        h.insert("x-one", http::HeaderValue::from_static("1"));
        let v = headers_json(&h);
        assert!(!v.contains("secret"), "{v}");
        assert!(v.contains(r#""accept":["*/*","text/html"]"#), "{v}");
        let parsed: Value = serde_json::from_str(&v).unwrap_or_default();
        assert_eq!(parsed["x-one"], json!("REDACTED"), "{v}");
        assert_eq!(parsed["authorization"], json!("REDACTED"), "{v}");
    }

    #[test]
    fn query_parsing() {
        let q = |u: &str| {
            let mut o = Out::appending(Vec::with_capacity(16));
            write_query(&mut o, u);
            serde_json::from_slice::<Value>(&o.buf).unwrap_or_default()
        };
        assert_eq!(q("/a?x=1&flag"), json!({"x":"1","flag":true}));
        assert_eq!(q("/a"), json!({}));
        assert_eq!(q("/a?x=1&x=2&y=%22"), json!({"x":"2","y":"\""}));
    }
}

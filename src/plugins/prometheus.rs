//! `prometheus`: Kong's metrics for the requests it applies to, recorded in the log phase
//! into the process registry (`observe::metrics`) and scraped at the Admin API's
//! `GET /metrics`. Kong's switches decide which families are filled; labels are names
//! (service, route, provider, model, consumer when `per_consumer`), never keys or prompts.

use serde::{Deserialize, Serialize};

use crate::config::entities::Entities;
use crate::config::plugins::nullable;
use crate::observe::log::RequestLog;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock, RwLock};

use crate::observe::metrics::{global, Family, Series};

/// `prometheus` config (Kong's fields; all off by default, as in Kong 3).
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Adds the `consumer` label (its username) where Kong has one.
    #[serde(default, deserialize_with = "nullable")]
    pub per_consumer: bool,
    /// `kong_http_requests_total`.
    #[serde(default, deserialize_with = "nullable")]
    pub status_code_metrics: bool,
    /// `kong_{request,upstream,kong}_latency_ms`.
    #[serde(default, deserialize_with = "nullable")]
    pub latency_metrics: bool,
    /// `kong_bandwidth_bytes`.
    #[serde(default, deserialize_with = "nullable")]
    pub bandwidth_metrics: bool,
    /// Kong's upstream target health gauges; tollgate reports the balancer's attempts and
    /// failovers (`tollgate_upstream_*`) instead, always.
    #[serde(default, deserialize_with = "nullable")]
    pub upstream_health_metrics: bool,
    /// `kong_ai_llm_*` (needs `logging.log_statistics` on the AI plugin in Kong; tollgate
    /// reads usage whenever this is on).
    #[serde(default, deserialize_with = "nullable")]
    pub ai_metrics: bool,
    /// Kong's WebAssembly filter metrics; accepted, there are none here.
    #[serde(default, deserialize_with = "nullable")]
    pub wasm_metrics: bool,
}

/// What decides a request's label values (besides its upstream attempts): requests with
/// the same key update the same series, so they share one [`Bundle`].
#[derive(Debug, Hash, PartialEq, Eq)]
struct Key<S> {
    service: S,
    route: S,
    consumer: S,
    status: u16,
    from_upstream: bool,
    provider: S,
    model: S,
    stream: bool,
}

impl Key<&str> {
    fn owned(&self) -> Key<Box<str>> {
        Key {
            service: self.service.into(),
            route: self.route.into(),
            consumer: self.consumer.into(),
            status: self.status,
            from_upstream: self.from_upstream,
            provider: self.provider.into(),
            model: self.model.into(),
            stream: self.stream,
        }
    }
}

impl Key<Box<str>> {
    fn matches(&self, k: &Key<&str>) -> bool {
        *self.service == *k.service
            && *self.route == *k.route
            && *self.consumer == *k.consumer
            && self.status == k.status
            && self.from_upstream == k.from_upstream
            && *self.provider == *k.provider
            && *self.model == *k.model
            && self.stream == k.stream
    }
}

type Slot = OnceLock<Arc<Series>>;

/// The series one kind of request updates, each looked up in its family the first time
/// it is needed (so a series appears in `/metrics` only once it has a value). The log
/// phase then finds all of them with one hash lookup instead of one per family.
#[derive(Debug)]
struct Bundle {
    key: Key<Box<str>>,
    http_requests: Slot,
    request_latency: Slot,
    upstream_latency: Slot,
    kong_latency: Slot,
    ingress: Slot,
    egress: Slot,
    ai_requests: Slot,
    ai_latency: Slot,
    ai_cost: Slot,
    tokens: [Slot; 3],
    time_per_token: Slot,
    /// `upstream_attempts` for a successful try of the key's provider (nearly every try).
    attempt_ok: Slot,
}

/// Bundles kept at most; past that the cache starts over (the series themselves live on
/// in their families, so nothing is lost but the shortcut).
const MAX_BUNDLES: usize = 4096;

// The keys are hashes already: Fx mixes them in one multiplication.
type Bundles = RwLock<HashMap<u64, Vec<Arc<Bundle>>, rustc_hash::FxBuildHasher>>;

fn bundles() -> &'static Bundles {
    static B: OnceLock<Bundles> = OnceLock::new();
    B.get_or_init(|| RwLock::new(HashMap::default()))
}

fn bundle(key: &Key<&str>) -> Arc<Bundle> {
    let hash = rustc_hash::FxBuildHasher.hash_one(key);
    if let Ok(map) = bundles().read() {
        if let Some(b) = map
            .get(&hash)
            .and_then(|v| v.iter().find(|b| b.key.matches(key)))
        {
            return b.clone();
        }
    }
    let mut map = match bundles().write() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    if map.len() >= MAX_BUNDLES {
        map.clear();
    }
    let slot = map.entry(hash).or_default();
    if let Some(b) = slot.iter().find(|b| b.key.matches(key)) {
        return b.clone();
    }
    let b = Arc::new(Bundle {
        key: key.owned(),
        http_requests: Slot::new(),
        request_latency: Slot::new(),
        upstream_latency: Slot::new(),
        kong_latency: Slot::new(),
        ingress: Slot::new(),
        egress: Slot::new(),
        ai_requests: Slot::new(),
        ai_latency: Slot::new(),
        ai_cost: Slot::new(),
        tokens: [Slot::new(), Slot::new(), Slot::new()],
        time_per_token: Slot::new(),
        attempt_ok: Slot::new(),
    });
    slot.push(b.clone());
    b
}

/// The slot's series, looked up in `family` with `labels` the first time.
fn get<'a>(slot: &'a Slot, family: &Family, labels: &[&str]) -> &'a Series {
    slot.get_or_init(|| family.series(labels))
}

/// Kong's MCP families (`logging.log_statistics`): per JSON-RPC request, its latency, its
/// answer's size and its errors, by method and tool.
fn record_mcp(
    m: &crate::observe::metrics::Registry,
    mcp: &crate::observe::mcp_log::McpLog,
    [service, route, ws]: [&str; 3],
) {
    for r in &mcp.rpc {
        let tool = r.tool_name.as_deref().unwrap_or("");
        let labels = [service, route, r.method.as_str(), ws, tool];
        m.mcp_latency.observe(&labels, r.latency_ms as f64);
        if r.response_body_size > 0 {
            m.mcp_response_size
                .observe(&labels, r.response_body_size as f64);
        }
        if let Some((code, _)) = &r.error {
            let kind = match code {
                0 => "Tool error",
                c => crate::mcp::jsonrpc::code_name(*c),
            };
            m.mcp_errors
                .add(&[service, route, kind, r.method.as_str(), ws, tool], 1.0);
        }
    }
}

/// Kong's AI families for a request `ai-semantic-cache` looked up, with its labels
/// (`cache_status` lower-case, as Kong's exporter writes it), its fetch and embeddings
/// latencies, and what a hit saved.
fn record_cached(
    m: &crate::observe::metrics::Registry,
    c: &serde_json::Value,
    target: Option<&crate::llm::target::Target>,
    ai: &crate::observe::log::AiLog,
    [provider, model, ws, consumer, mode]: [&str; 5],
) {
    let text = |k: &str| c.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
    let status = text("cache_status").to_ascii_lowercase();
    let (vdb, ep, em) = (
        text("vector_db"),
        text("embeddings_provider"),
        text("embeddings_model"),
    );
    let labels = [provider, model, &status, vdb, ep, em, ws, consumer, mode];
    m.ai_requests.add(&labels, 1.0);
    let ms = |k: &str| c.get(k).and_then(serde_json::Value::as_f64);
    if let Some(v) = ms("fetch_latency") {
        m.cache_fetch_latency.observe(&labels, v);
    }
    if let Some(v) = ai.cache_embeddings_ms {
        m.cache_embeddings_latency.observe(&labels, v);
    }
    if let Some(l) = ai.llm_latency_ms.filter(|_| status != "hit") {
        m.ai_latency.observe(&labels, l as f64);
    }
    let saved = [provider, model, vdb, consumer];
    if let Some(t) = c.get("saved_tokens").and_then(serde_json::Value::as_f64) {
        m.cache_saved_tokens.add(&saved, t);
    }
    if let Some(v) = ms("cost_savings").filter(|v| *v > 0.0) {
        m.cache_saved_cost.add(&saved, v);
    }
    let Some(u) = &ai.usage else {
        return;
    };
    let cost = u.cost(
        target.and_then(|t| t.options.input_cost),
        target.and_then(|t| t.options.output_cost),
    );
    if cost > 0.0 {
        m.ai_cost.add(&labels, cost);
    }
    for (kind, n) in [
        ("prompt_tokens", u.prompt_tokens),
        ("completion_tokens", u.completion_tokens),
        ("total_tokens", u.total_tokens),
    ] {
        m.ai_tokens.add(
            &[provider, model, &status, vdb, ep, em, ws, consumer, kind],
            n as f64,
        );
    }
}

/// Records `log` (a finished request) as `cfg` asks.
pub fn record(cfg: &PrometheusConfig, log: &RequestLog, snap: &Entities) {
    let m = global();
    let names = log.names(snap);
    let ai = log.ai.as_ref();
    let target = ai.and_then(|ai| ai.target.and_then(|t| ai.targets.get(t)));
    let key = Key {
        service: names.service,
        route: names.route,
        consumer: if cfg.per_consumer { names.consumer } else { "" },
        status: log.status,
        from_upstream: log.source == "upstream",
        provider: target.map(|t| t.provider.as_str()).unwrap_or(""),
        model: ai
            .and_then(|ai| ai.request_model.as_deref())
            .unwrap_or("UNSPECIFIED"),
        stream: ai.is_some_and(|ai| ai.stream),
    };
    let b = bundle(&key);
    let k = &b.key;
    let (service, route, consumer) = (&*k.service, &*k.route, &*k.consumer);
    let ws = "default";
    if cfg.status_code_metrics {
        let mut buf = itoa::Buffer::new();
        let code = buf.format(k.status);
        let source = if k.from_upstream { "service" } else { "kong" };
        let s = get(
            &b.http_requests,
            &m.http_requests,
            &[service, route, code, source, ws, consumer],
        );
        Family::add_to(s, 1.0);
    }
    if cfg.latency_metrics {
        let labels = [service, route, ws];
        let total = log.total_ms() as f64;
        let s = get(&b.request_latency, &m.request_latency, &labels);
        m.request_latency.observe_in(s, total);
        if let Some(u) = log.upstream_latency_ms {
            let s = get(&b.upstream_latency, &m.upstream_latency, &labels);
            m.upstream_latency.observe_in(s, u as f64);
        }
        let s = get(&b.kong_latency, &m.kong_latency, &labels);
        m.kong_latency
            .observe_in(s, log.proxy_latency_ms.map(|v| v as f64).unwrap_or(total));
    }
    if cfg.bandwidth_metrics {
        for (slot, dir, n) in [
            (&b.ingress, "ingress", log.request_size),
            (&b.egress, "egress", log.response_size),
        ] {
            let s = get(slot, &m.bandwidth, &[service, route, dir, ws, consumer]);
            Family::add_to(s, n as f64);
        }
    }
    for t in &log.tries {
        let labels = [service, route, &*t.provider, &*t.outcome];
        if t.outcome == "success" && *t.provider == *k.provider {
            Family::add_to(get(&b.attempt_ok, &m.upstream_attempts, &labels), 1.0);
        } else {
            m.upstream_attempts.add(&labels, 1.0);
        }
    }
    if log.tries.len() > 1 {
        m.failovers.add(&[service, route], 1.0);
    }
    if !cfg.ai_metrics {
        return;
    }
    if let Some(mcp) = log.mcp.as_deref().filter(|l| l.statistics) {
        record_mcp(m, mcp, [service, route, ws]);
    }
    let Some(ai) = ai else {
        return;
    };
    let (provider, model) = (&*k.provider, &*k.model);
    let mode = if k.stream { "stream" } else { "oneshot" };
    if let Some(c) = &ai.cache {
        // Routes with ai-semantic-cache carry its labels (series looked up per request).
        return record_cached(m, c, target, ai, [provider, model, ws, consumer, mode]);
    }
    let labels = [provider, model, "", "", "", "", ws, consumer, mode];
    Family::add_to(get(&b.ai_requests, &m.ai_requests, &labels), 1.0);
    if let Some(l) = ai.llm_latency_ms {
        let s = get(&b.ai_latency, &m.ai_latency, &labels);
        m.ai_latency.observe_in(s, l as f64);
    }
    let Some(u) = &ai.usage else {
        return;
    };
    let cost = u.cost(
        target.and_then(|t| t.options.input_cost),
        target.and_then(|t| t.options.output_cost),
    );
    if cost > 0.0 {
        Family::add_to(get(&b.ai_cost, &m.ai_cost, &labels), cost);
    }
    for (slot, kind, n) in [
        (&b.tokens[0], "prompt_tokens", u.prompt_tokens),
        (&b.tokens[1], "completion_tokens", u.completion_tokens),
        (&b.tokens[2], "total_tokens", u.total_tokens),
    ] {
        let s = get(
            slot,
            &m.ai_tokens,
            &[provider, model, "", "", "", "", ws, consumer, kind],
        );
        Family::add_to(s, n as f64);
    }
    if let (Some(l), true) = (ai.llm_latency_ms, u.completion_tokens > 0) {
        let s = get(&b.time_per_token, &m.ai_time_per_token, &[provider, model]);
        m.ai_time_per_token
            .observe_in(s, l as f64 / u.completion_tokens as f64);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::observe::log::{RequestId, RequestLog, Try};

    fn attempts(text: &str, outcome: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("tollgate_upstream_attempts_total{")
                    && l.contains("provider=\"\"")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .unwrap_or("x 0");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// A successful try counts through the request's cached series, any other outcome
    /// through its own: each lands on its labels. (No route, service or provider: the only
    /// test in this binary that records metrics, so the empty labels are its own.)
    #[test]
    fn attempts_count_per_outcome_whether_cached_or_not() {
        let snap = Entities::default();
        let cfg = PrometheusConfig::default();
        let tried = |outcome: &'static str| Try {
            outcome: outcome.into(),
            ..Try::default()
        };
        let mut log = RequestLog::new(RequestId::new("1".repeat(32)), std::time::Instant::now());
        log.tries = vec![tried("http_503"), tried("success")];
        record(&cfg, &log, &snap);
        log.tries = vec![tried("success")];
        record(&cfg, &log, &snap);
        let mut text = String::new();
        global().render(&mut text);
        assert_eq!(attempts(&text, "success"), 2.0, "{text}");
        assert_eq!(attempts(&text, "http_503"), 1.0, "{text}");
    }
}

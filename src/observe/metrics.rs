//! Prometheus metrics: one process-wide registry (as a Prometheus client library keeps),
//! rendered in the text exposition format at the Admin API's `GET /metrics`.
//!
//! Written by hand rather than with a client crate because the gateway needs only counters,
//! gauges and fixed-bucket histograms, and a lookup that costs no allocation when a series
//! already exists: labels are hashed as borrowed strings, and the series found is checked
//! against them before use.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// What a family measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram(&'static [f64]),
}

/// One labelled series: a value, or a histogram's buckets, sum and count.
#[derive(Debug)]
pub struct Series {
    labels: Box<[String]>,
    /// Counter or gauge value, or histogram count (f64 bits).
    value: AtomicU64,
    sum: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

fn add_f64(cell: &AtomicU64, v: f64) {
    let mut cur = cell.load(Ordering::Relaxed);
    loop {
        let next = (f64::from_bits(cur) + v).to_bits();
        match cell.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

/// A metric name with its help text, type, label names and series.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    help: &'static str,
    kind: Kind,
    label_names: &'static [&'static str],
    /// By the labels' hash; label values are compared on a hit, so collisions are harmless.
    series: RwLock<HashMap<u64, Vec<Arc<Series>>, rustc_hash::FxBuildHasher>>,
}

impl Family {
    fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        label_names: &'static [&'static str],
    ) -> Family {
        Family {
            name,
            help,
            kind,
            label_names,
            series: RwLock::new(HashMap::default()),
        }
    }

    /// The series for `labels` (in `label_names` order), created on first use.
    pub fn series(&self, labels: &[&str]) -> Arc<Series> {
        let key = rustc_hash::FxBuildHasher.hash_one(labels);
        let same = |s: &Arc<Series>| {
            s.labels.len() == labels.len() && s.labels.iter().zip(labels).all(|(a, b)| a == b)
        };
        if let Ok(map) = self.series.read() {
            if let Some(found) = map.get(&key).and_then(|v| v.iter().find(|s| same(s))) {
                return found.clone();
            }
        }
        let mut map = match self.series.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let slot = map.entry(key).or_default();
        if let Some(found) = slot.iter().find(|s| same(s)) {
            return found.clone();
        }
        let n = match self.kind {
            Kind::Histogram(b) => b.len(),
            _ => 0,
        };
        let s = Arc::new(Series {
            labels: labels.iter().map(|l| l.to_string()).collect(),
            value: AtomicU64::new(0f64.to_bits()),
            sum: AtomicU64::new(0f64.to_bits()),
            buckets: (0..n).map(|_| AtomicU64::new(0)).collect(),
        });
        slot.push(s.clone());
        s
    }

    /// Adds `v` to a counter (or gauge).
    pub fn add(&self, labels: &[&str], v: f64) {
        add_f64(&self.series(labels).value, v);
    }

    /// Adds `v` to a counter series already looked up.
    pub fn add_to(s: &Series, v: f64) {
        add_f64(&s.value, v);
    }

    /// Sets a gauge.
    pub fn set(&self, labels: &[&str], v: f64) {
        self.series(labels)
            .value
            .store(v.to_bits(), Ordering::Relaxed);
    }

    /// Records one observation in a histogram.
    pub fn observe(&self, labels: &[&str], v: f64) {
        self.observe_in(&self.series(labels), v);
    }

    /// Records one observation in a histogram series of this family already looked up.
    pub fn observe_in(&self, s: &Series, v: f64) {
        if let Kind::Histogram(bounds) = self.kind {
            // Buckets are stored non-cumulatively and summed when rendered.
            if let Some(i) = bounds.iter().position(|b| v <= *b) {
                if let Some(b) = s.buckets.get(i) {
                    b.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        add_f64(&s.value, 1.0);
        add_f64(&s.sum, v);
    }

    fn render(&self, out: &mut String) {
        let map = match self.series.read() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let mut all: Vec<&Arc<Series>> = map.values().flatten().collect();
        if all.is_empty() {
            return;
        }
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        let kind = match self.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram(_) => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
        for s in all {
            let labels = self.labels(&s.labels, None);
            let value = f64::from_bits(s.value.load(Ordering::Relaxed));
            match self.kind {
                Kind::Counter | Kind::Gauge => {
                    let _ = writeln!(out, "{}{labels} {}", self.name, num(value));
                }
                Kind::Histogram(bounds) => {
                    let mut cumulative = 0u64;
                    for (b, c) in bounds.iter().zip(s.buckets.iter()) {
                        cumulative += c.load(Ordering::Relaxed);
                        let l = self.labels(&s.labels, Some(&num(*b)));
                        let _ = writeln!(out, "{}_bucket{l} {cumulative}", self.name);
                    }
                    let l = self.labels(&s.labels, Some("+Inf"));
                    let _ = writeln!(out, "{}_bucket{l} {}", self.name, num(value));
                    let sum = f64::from_bits(s.sum.load(Ordering::Relaxed));
                    let _ = writeln!(out, "{}_sum{labels} {}", self.name, num(sum));
                    let _ = writeln!(out, "{}_count{labels} {}", self.name, num(value));
                }
            }
        }
    }

    fn labels(&self, values: &[String], le: Option<&str>) -> String {
        let mut parts: Vec<String> = self
            .label_names
            .iter()
            .zip(values)
            .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
            .collect();
        if let Some(le) = le {
            parts.push(format!("le=\"{le}\""));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", parts.join(","))
        }
    }
}

/// A label value escaped for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: integers without a fraction.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Kong's latency buckets (ms) for request, upstream and gateway latency.
pub const LATENCY_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 750.0, 1000.0,
    3000.0, 6000.0,
];
/// Kong's buckets (ms) for `kong_ai_llm_provider_latency_ms`.
pub const AI_LATENCY_BUCKETS: &[f64] = &[
    250.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 3500.0, 4000.0, 4500.0, 5000.0, 10000.0,
    30000.0, 60000.0,
];

/// Kong's buckets (ms) for the AI cache's fetch and embeddings latencies.
pub const CACHE_LATENCY_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 750.0, 1000.0, 2000.0,
];

/// Buckets (ms) for `kong_ai_mcp_latency_ms` (Kong does not publish its own).
pub const MCP_LATENCY_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];

/// Buckets (bytes) for `kong_ai_mcp_response_body_size_bytes`.
pub const MCP_SIZE_BUCKETS: &[f64] = &[
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
];

/// Labels of Kong's MCP metrics.
pub const MCP_LABELS: &[&str] = &["service", "route", "method", "workspace", "tool_name"];

/// Labels of Kong's AI metrics (the cache and vector-db ones are empty on routes without
/// `ai-semantic-cache`).
pub const AI_LABELS: &[&str] = &[
    "ai_provider",
    "ai_model",
    "cache_status",
    "vector_db",
    "embeddings_provider",
    "embeddings_model",
    "workspace",
    "consumer",
    "request_mode",
];
/// [`AI_LABELS`] plus `token_type` (Kong's token counter has no `request_mode`).
pub const AI_TOKEN_LABELS: &[&str] = &[
    "ai_provider",
    "ai_model",
    "cache_status",
    "vector_db",
    "embeddings_provider",
    "embeddings_model",
    "workspace",
    "consumer",
    "token_type",
];

/// Every family the gateway exports.
#[derive(Debug)]
pub struct Registry {
    pub http_requests: Family,
    pub request_latency: Family,
    pub upstream_latency: Family,
    pub kong_latency: Family,
    pub bandwidth: Family,
    pub ai_requests: Family,
    pub ai_cost: Family,
    pub ai_tokens: Family,
    pub ai_latency: Family,
    pub ai_time_per_token: Family,
    pub upstream_attempts: Family,
    pub failovers: Family,
    pub guardrail_hits: Family,
    pub vectordb_errors: Family,
    pub cache_fetch_latency: Family,
    pub cache_embeddings_latency: Family,
    pub cache_saved_tokens: Family,
    pub cache_saved_cost: Family,
    pub mcp_latency: Family,
    pub mcp_response_size: Family,
    pub mcp_errors: Family,
}

impl Registry {
    fn new() -> Registry {
        use Kind::*;
        Registry {
            http_requests: Family::new(
                "kong_http_requests_total",
                "HTTP status codes per service/route in Kong",
                Counter,
                &[
                    "service",
                    "route",
                    "code",
                    "source",
                    "workspace",
                    "consumer",
                ],
            ),
            request_latency: Family::new(
                "kong_request_latency_ms",
                "Total latency incurred during requests for each service/route in Kong",
                Histogram(LATENCY_BUCKETS),
                &["service", "route", "workspace"],
            ),
            upstream_latency: Family::new(
                "kong_upstream_latency_ms",
                "Latency added by upstream response for each service/route in Kong",
                Histogram(LATENCY_BUCKETS),
                &["service", "route", "workspace"],
            ),
            kong_latency: Family::new(
                "kong_kong_latency_ms",
                "Latency added by Kong and enabled plugins for each service/route in Kong",
                Histogram(LATENCY_BUCKETS),
                &["service", "route", "workspace"],
            ),
            bandwidth: Family::new(
                "kong_bandwidth_bytes",
                "Total bandwidth (ingress/egress) throughput in bytes",
                Counter,
                &["service", "route", "direction", "workspace", "consumer"],
            ),
            ai_requests: Family::new(
                "kong_ai_llm_requests_total",
                "AI requests total per ai_provider in Kong",
                Counter,
                AI_LABELS,
            ),
            ai_cost: Family::new(
                "kong_ai_llm_cost_total",
                "AI requests cost per ai_provider/cache in Kong",
                Counter,
                AI_LABELS,
            ),
            ai_tokens: Family::new(
                "kong_ai_llm_tokens_total",
                "AI requests tokens per ai_provider/cache in Kong",
                Counter,
                AI_TOKEN_LABELS,
            ),
            ai_latency: Family::new(
                "kong_ai_llm_provider_latency_ms",
                "LLM response Latency for each AI plugins per ai_provider in Kong",
                Histogram(AI_LATENCY_BUCKETS),
                AI_LABELS,
            ),
            ai_time_per_token: Family::new(
                "tollgate_ai_llm_time_per_token_ms",
                "Milliseconds per completion token (llm latency / completion tokens)",
                Histogram(&[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]),
                &["ai_provider", "ai_model"],
            ),
            upstream_attempts: Family::new(
                "tollgate_upstream_attempts_total",
                "Upstream attempts by provider and outcome (ok, or why the retry loop moved on)",
                Counter,
                &["service", "route", "provider", "outcome"],
            ),
            failovers: Family::new(
                "tollgate_upstream_failovers_total",
                "Requests answered after more than one upstream attempt",
                Counter,
                &["service", "route"],
            ),
            guardrail_hits: Family::new(
                "tollgate_guardrail_hits_total",
                "Prompts a guardrail plugin changed or refused, by plugin and what it found",
                Counter,
                &["plugin", "action", "category"],
            ),
            vectordb_errors: Family::new(
                "tollgate_vectordb_errors_total",
                "Vector store and embeddings failures of the semantic plugins (routing then uses the vectors kept in the process; the semantic cache lets the request go upstream)",
                Counter,
                &["plugin_id", "strategy", "operation"],
            ),
            cache_fetch_latency: Family::new(
                "kong_ai_cache_fetch_latency_ms",
                "AI cache fetch latency per ai_provider/cache in Kong",
                Histogram(CACHE_LATENCY_BUCKETS),
                AI_LABELS,
            ),
            cache_embeddings_latency: Family::new(
                "kong_ai_cache_embeddings_latency_ms",
                "AI cache embeddings latency per ai_provider/cache in Kong",
                Histogram(CACHE_LATENCY_BUCKETS),
                AI_LABELS,
            ),
            cache_saved_tokens: Family::new(
                "tollgate_ai_cache_saved_tokens_total",
                "Tokens the semantic cache answered without calling the provider",
                Counter,
                &["ai_provider", "ai_model", "vector_db", "consumer"],
            ),
            cache_saved_cost: Family::new(
                "tollgate_ai_cache_saved_cost_total",
                "Cost (the targets' input_cost/output_cost) the semantic cache saved",
                Counter,
                &["ai_provider", "ai_model", "vector_db", "consumer"],
            ),
            mcp_latency: Family::new(
                "kong_ai_mcp_latency_ms",
                "MCP server latencies in milliseconds",
                Histogram(MCP_LATENCY_BUCKETS),
                MCP_LABELS,
            ),
            mcp_response_size: Family::new(
                "kong_ai_mcp_response_body_size_bytes",
                "MCP server response body sizes in bytes",
                Histogram(MCP_SIZE_BUCKETS),
                MCP_LABELS,
            ),
            mcp_errors: Family::new(
                "kong_ai_mcp_error_total",
                "Total MCP server errors by type",
                Counter,
                &["service", "route", "type", "method", "workspace", "tool_name"],
            ),
        }
    }

    fn families(&self) -> [&Family; 21] {
        [
            &self.http_requests,
            &self.request_latency,
            &self.upstream_latency,
            &self.kong_latency,
            &self.bandwidth,
            &self.ai_requests,
            &self.ai_cost,
            &self.ai_tokens,
            &self.ai_latency,
            &self.ai_time_per_token,
            &self.upstream_attempts,
            &self.failovers,
            &self.guardrail_hits,
            &self.vectordb_errors,
            &self.cache_fetch_latency,
            &self.cache_embeddings_latency,
            &self.cache_saved_tokens,
            &self.cache_saved_cost,
            &self.mcp_latency,
            &self.mcp_response_size,
            &self.mcp_errors,
        ]
    }

    /// The exposition text of every family that has a series.
    pub fn render(&self, out: &mut String) {
        for f in self.families() {
            f.render(out);
        }
    }
}

/// The process's registry.
pub fn global() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::new)
}

/// A gauge or counter line for values the gateway keeps elsewhere (connections, quotas).
pub fn sample(out: &mut String, name: &str, kind: &str, help: &str, labels: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name}{labels} {}", num(v));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_text_format() {
        let f = Family::new("t_total", "help", Kind::Counter, &["a", "b"]);
        f.add(&["x", "y\"z"], 1.0);
        f.add(&["x", "y\"z"], 2.5);
        f.add(&["x", "w"], 1.0);
        let mut out = String::new();
        f.render(&mut out);
        assert!(out.contains("# TYPE t_total counter"));
        assert!(out.contains("t_total{a=\"x\",b=\"y\\\"z\"} 3.5"), "{out}");
        assert!(out.contains("t_total{a=\"x\",b=\"w\"} 1"), "{out}");
        let h = Family::new("h_ms", "help", Kind::Histogram(&[10.0, 100.0]), &["r"]);
        for v in [5.0, 50.0, 500.0] {
            h.observe(&["r1"], v);
        }
        let mut out = String::new();
        h.render(&mut out);
        assert!(out.contains("h_ms_bucket{r=\"r1\",le=\"10\"} 1"), "{out}");
        assert!(out.contains("h_ms_bucket{r=\"r1\",le=\"100\"} 2"), "{out}");
        assert!(out.contains("h_ms_bucket{r=\"r1\",le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("h_ms_sum{r=\"r1\"} 555"), "{out}");
        assert!(out.contains("h_ms_count{r=\"r1\"} 3"), "{out}");
    }

    #[test]
    fn the_same_labels_give_the_same_series() {
        let f = Family::new("c", "h", Kind::Counter, &["a"]);
        let a = f.series(&["v"]);
        let b = f.series(&["v"]);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &f.series(&["w"])));
    }
}

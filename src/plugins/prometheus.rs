//! `prometheus`: Kong's metrics for the requests it applies to, recorded in the log phase
//! into the process registry (`observe::metrics`) and scraped at the Admin API's
//! `GET /metrics`. Kong's switches decide which families are filled; labels are names
//! (service, route, provider, model, consumer when `per_consumer`), never keys or prompts.

use serde::{Deserialize, Serialize};

use crate::config::plugins::nullable;
use crate::config::Snapshot;
use crate::observe::log::RequestLog;
use crate::observe::metrics::global;

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

/// Records `log` (a finished request) as `cfg` asks.
pub fn record(cfg: &PrometheusConfig, log: &RequestLog, snap: &Snapshot) {
    let m = global();
    let names = log.names(snap);
    let (route_name, service_name) = (names.route, names.service);
    let consumer = if cfg.per_consumer { names.consumer } else { "" };
    let ws = "default";
    if cfg.status_code_metrics {
        let code = log.status.to_string();
        let source = if log.source == "upstream" {
            "service"
        } else {
            "kong"
        };
        m.http_requests.add(
            &[service_name, route_name, &code, source, ws, consumer],
            1.0,
        );
    }
    if cfg.latency_metrics {
        let labels = [service_name, route_name, ws];
        let total = log.total_ms() as f64;
        m.request_latency.observe(&labels, total);
        if let Some(u) = log.upstream_latency_ms {
            m.upstream_latency.observe(&labels, u as f64);
        }
        m.kong_latency.observe(
            &labels,
            log.proxy_latency_ms.map(|v| v as f64).unwrap_or(total),
        );
    }
    if cfg.bandwidth_metrics {
        for (dir, n) in [("ingress", log.request_size), ("egress", log.response_size)] {
            m.bandwidth
                .add(&[service_name, route_name, dir, ws, consumer], n as f64);
        }
    }
    for t in &log.tries {
        m.upstream_attempts
            .add(&[service_name, route_name, &t.provider, &t.outcome], 1.0);
    }
    if log.tries.len() > 1 {
        m.failovers.add(&[service_name, route_name], 1.0);
    }
    if !cfg.ai_metrics {
        return;
    }
    let Some(ai) = &log.ai else {
        return;
    };
    let target = ai.target.and_then(|t| ai.proxy.targets.get(t));
    let provider = target.map(|t| t.provider.as_str()).unwrap_or("");
    let model = ai.request_model.as_deref().unwrap_or("UNSPECIFIED");
    let mode = if ai.stream { "stream" } else { "oneshot" };
    let labels = [provider, model, "", "", "", "", ws, consumer, mode];
    m.ai_requests.add(&labels, 1.0);
    if let Some(l) = ai.llm_latency_ms {
        m.ai_latency.observe(&labels, l as f64);
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
            &[provider, model, "", "", "", "", ws, consumer, kind],
            n as f64,
        );
    }
    if let (Some(l), true) = (ai.llm_latency_ms, u.completion_tokens > 0) {
        m.ai_time_per_token
            .observe(&[provider, model], l as f64 / u.completion_tokens as f64);
    }
}

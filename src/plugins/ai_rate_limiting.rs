//! `ai-rate-limiting-advanced`: token (or cost) quotas per provider (`llm_providers`) or by
//! policy (`policies`, Kong 3.14), in fixed or sliding windows, kept per consumer, group,
//! credential, IP, header, path or service.
//!
//! Before the request, its estimated prompt tokens must fit in what is left; after the
//! answer, the upstream's real usage (also read from streams) is charged, so a spent quota
//! refuses the next request until the window moves on. `requestPrompt` limits count the
//! estimated prompt tokens when the request is admitted.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::balancer::vectordb::RedisConfig;
use crate::config::plugins::nullable;
use crate::config::vault::VaultTable;
use crate::llm::usage::Usage;
use crate::plugins::rate_limiting::{push, summary_headers, LimitBy, Policy, Store};
use crate::quota::{Counters, Reading, Slot};

/// `window_type`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WindowType {
    #[default]
    Sliding,
    Fixed,
}

/// `tokens_count_strategy`: what a limit counts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TokensCount {
    #[default]
    TotalTokens,
    PromptTokens,
    CompletionTokens,
    /// Money, from the target's `model.options.input_cost`/`output_cost` (per 1M tokens).
    Cost,
}

impl TokensCount {
    /// Kong's name for the strategy.
    pub fn as_str(self) -> &'static str {
        match self {
            TokensCount::TotalTokens => "total_tokens",
            TokensCount::PromptTokens => "prompt_tokens",
            TokensCount::CompletionTokens => "completion_tokens",
            TokensCount::Cost => "cost",
        }
    }
}

/// One entry of `llm_providers` (Kong's pre-3.14 shape).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderLimits {
    pub name: String,
    pub limit: Vec<f64>,
    pub window_size: Vec<f64>,
}

/// `policies[].match[].type`: the same attributes `acls` conditions look at.
pub use crate::balancer::acl::ConditionType as MatchType;

/// `policies[].match[]`: all of a policy's conditions must hold.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(rename = "type")]
    pub kind: MatchType,
    /// consumer: id|username|custom_id; consumer_group: id|name; header: the header name.
    pub key: Option<String>,
    /// Values to match; none = any value.
    pub values: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub partition_by: bool,
}

/// `policies[].limits[]`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyLimit {
    pub limit: f64,
    pub window_size: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub tokens_count_strategy: TokensCount,
}

/// `policies[]`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A reference to a stored policy entity; tollgate needs the limits inline.
    pub id: Option<String>,
    #[serde(rename = "match", default, deserialize_with = "nullable")]
    pub matches: Vec<MatchConfig>,
    #[serde(default, deserialize_with = "nullable")]
    pub limits: Vec<PolicyLimit>,
    pub window_type: Option<WindowType>,
}

/// `ai-rate-limiting-advanced` config (Kong's fields).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiRateLimitingConfig {
    #[serde(default, deserialize_with = "nullable")]
    pub llm_providers: Vec<ProviderLimits>,
    #[serde(default, deserialize_with = "nullable")]
    pub policies: Vec<PolicyConfig>,
    #[serde(default, deserialize_with = "nullable")]
    pub strategy: Policy,
    #[serde(default, deserialize_with = "nullable")]
    pub identifier: LimitBy,
    pub header_name: Option<String>,
    pub path: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub window_type: WindowType,
    #[serde(default, deserialize_with = "nullable")]
    pub tokens_count_strategy: TokensCount,
    /// Counters are always updated synchronously; any value is accepted.
    pub sync_rate: Option<f64>,
    pub error_code: Option<f64>,
    pub error_message: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub error_hide_providers: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub hide_client_headers: bool,
    pub retry_after_jitter_max: Option<f64>,
    #[serde(default, deserialize_with = "nullable")]
    pub disable_penalty: bool,
    /// Kong's shared-dict name; unused (counters live in the gateway or in Redis).
    pub dictionary_name: Option<String>,
    /// Counters of instances sharing a namespace are shared.
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub decrease_by_fractions_in_redis: bool,
    pub request_prompt_count_function: Option<String>,
    pub custom_cost_count_function: Option<String>,
    pub llm_format: Option<String>,
    pub redis: Option<RedisConfig>,
}

/// Provider names `llm_providers[].name` accepts.
const PROVIDER_NAMES: [&str; 11] = [
    "anthropic",
    "azure",
    "bedrock",
    "cohere",
    "customCost",
    "gemini",
    "huggingface",
    "llama2",
    "mistral",
    "openai",
    "requestPrompt",
];

impl AiRateLimitingConfig {
    /// Field errors (path under `config`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        match (self.llm_providers.is_empty(), self.policies.is_empty()) {
            (true, true) => errs.push((
                "config".into(),
                "at least one of these fields must be non-empty: 'config.llm_providers', 'config.policies'".into(),
            )),
            (false, false) => errs.push((
                "config".into(),
                "'llm_providers' and 'policies' are mutually exclusive".into(),
            )),
            _ => {}
        }
        for (i, p) in self.llm_providers.iter().enumerate() {
            if !PROVIDER_NAMES.contains(&p.name.as_str()) {
                errs.push((
                    format!("llm_providers[{i}].name"),
                    format!("expected one of: {}", PROVIDER_NAMES.join(", ")),
                ));
            }
            if p.limit.len() != p.window_size.len() || p.limit.is_empty() {
                errs.push((
                    format!("llm_providers[{i}]"),
                    "'limit' and 'window_size' must be non-empty and have the same length".into(),
                ));
            }
            if p.window_size.iter().any(|w| *w < 1.0) {
                errs.push((
                    format!("llm_providers[{i}].window_size"),
                    "window sizes are whole seconds, at least 1".into(),
                ));
            }
            if p.name == "customCost" {
                errs.push((
                    format!("llm_providers[{i}].name"),
                    "'customCost' needs a Lua custom_cost_count_function, which tollgate does not run; use tokens_count_strategy: cost".into(),
                ));
            }
        }
        for (i, p) in self.policies.iter().enumerate() {
            if p.id.is_some() {
                errs.push((
                    format!("policies[{i}].id"),
                    "stored policy entities are not supported; give the limits inline".into(),
                ));
            }
            if p.limits.is_empty() {
                errs.push((
                    format!("policies[{i}].limits"),
                    "length must be at least 1".into(),
                ));
            }
            for (j, l) in p.limits.iter().enumerate() {
                if l.window_size == 0 {
                    errs.push((
                        format!("policies[{i}].limits[{j}].window_size"),
                        "must be at least 1".into(),
                    ));
                }
            }
            for (j, m) in p.matches.iter().enumerate() {
                if m.kind == MatchType::Header && m.key.as_deref().unwrap_or("").is_empty() {
                    errs.push((
                        format!("policies[{i}].match[{j}].key"),
                        "required for type header (the header name)".into(),
                    ));
                }
                if m.kind == MatchType::Ip {
                    for (k, v) in m.values.iter().flatten().enumerate() {
                        if let Err(e) = crate::balancer::acl::parse_cidr(v) {
                            errs.push((format!("policies[{i}].match[{j}].values[{k}]"), e));
                        }
                    }
                }
            }
        }
        if self
            .policies
            .iter()
            .filter(|p| p.matches.is_empty())
            .count()
            > 1
        {
            errs.push((
                "policies".into(),
                "only one policy may leave out 'match' (the fallback policy)".into(),
            ));
        }
        for (field, set) in [
            (
                "request_prompt_count_function",
                &self.request_prompt_count_function,
            ),
            (
                "custom_cost_count_function",
                &self.custom_cost_count_function,
            ),
        ] {
            if set.as_deref().is_some_and(|s| !s.is_empty()) {
                errs.push((
                    field.into(),
                    "Lua functions are not supported by tollgate".into(),
                ));
            }
        }
        if self.identifier == LimitBy::Header
            && self.header_name.as_deref().unwrap_or("").is_empty()
        {
            errs.push((
                "header_name".into(),
                "required when identifier is header".into(),
            ));
        }
        errs
    }
}

/// One limit of a compiled instance.
#[derive(Debug, Clone)]
struct Limit {
    /// The provider name or `policy<N>`, as the headers show it.
    label: String,
    limit: f64,
    window: u64,
    sliding: bool,
    count: TokensCount,
    /// `requestPrompt`: counted at admission from the estimated prompt.
    request_prompt: bool,
    /// A provider's limit applies only to requests that provider answers.
    provider: Option<String>,
}

#[derive(Debug)]
struct CompiledPolicy {
    matches: Vec<(MatchConfig, Vec<(IpAddr, u8)>)>,
    limits: Vec<Limit>,
}

/// A compiled `ai-rate-limiting-advanced` instance.
#[derive(Debug)]
pub struct AiRateLimiting {
    pub config: AiRateLimitingConfig,
    pub id: String,
    pub store: Store,
    providers: Vec<Limit>,
    policies: Vec<CompiledPolicy>,
}

/// What a request looks like to the policies.
pub struct Facts<'a> {
    pub subject: &'a crate::plugins::rate_limiting::Subject<'a>,
    pub consumer_username: Option<&'a str>,
    pub consumer_custom_id: Option<&'a str>,
    /// The consumer's groups as (id, name).
    pub groups: &'a [(&'a str, &'a str)],
    pub model: Option<&'a str>,
    /// Providers the route's targets may send this request to.
    pub providers: &'a [&'a str],
}

/// The limits that apply to one request, with the counters to check now and to charge
/// once the answer's usage is known.
#[derive(Debug)]
pub struct Plan {
    limits: Vec<Limit>,
    slots: Vec<Slot>,
}

/// Usage owed to a quota once the answer is complete.
#[derive(Debug)]
pub struct Charge {
    pub counters: Counters,
    pub plan: Arc<Plan>,
}

impl AiRateLimiting {
    /// Compiles `config` for plugin `id`.
    pub fn new(
        id: &str,
        config: AiRateLimitingConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AiRateLimiting, Vec<(String, String)>> {
        let store = Store::compile(
            config.strategy,
            "strategy",
            config.redis.as_ref(),
            vaults,
            env,
        )?;
        let sliding = config.window_type == WindowType::Sliding;
        let providers = config
            .llm_providers
            .iter()
            .flat_map(|p| {
                p.limit.iter().zip(&p.window_size).map(|(l, w)| Limit {
                    label: p.name.clone(),
                    limit: *l,
                    window: (*w as u64).max(1),
                    sliding,
                    count: config.tokens_count_strategy,
                    request_prompt: p.name == "requestPrompt",
                    provider: (p.name != "requestPrompt").then(|| p.name.clone()),
                })
            })
            .collect();
        let policies = config
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let sliding = p.window_type.unwrap_or(config.window_type) == WindowType::Sliding;
                CompiledPolicy {
                    matches: p
                        .matches
                        .iter()
                        .map(|m| {
                            let nets = match m.kind {
                                MatchType::Ip => m
                                    .values
                                    .iter()
                                    .flatten()
                                    .filter_map(|v| crate::balancer::acl::parse_cidr(v).ok())
                                    .collect(),
                                _ => Vec::new(),
                            };
                            (m.clone(), nets)
                        })
                        .collect(),
                    limits: p
                        .limits
                        .iter()
                        .map(|l| Limit {
                            label: format!("policy{}", i + 1),
                            limit: l.limit,
                            window: l.window_size.max(1),
                            sliding,
                            count: l.tokens_count_strategy,
                            request_prompt: false,
                            provider: None,
                        })
                        .collect(),
                }
            })
            .collect();
        if config.tokens_count_strategy != TokensCount::Cost {
            crate::llm::tokens::warm_up();
        }
        Ok(AiRateLimiting {
            id: id.to_string(),
            store,
            providers,
            policies,
            config,
        })
    }

    /// The limits that apply to a request, or None when none does.
    pub fn plan(&self, identity: &str, f: &Facts<'_>) -> Option<Plan> {
        let scope = self.config.namespace.as_deref().unwrap_or(&self.id);
        let (limits, partition): (Vec<Limit>, String) = if self.policies.is_empty() {
            let limits = self
                .providers
                .iter()
                .filter(|l| {
                    l.provider
                        .as_deref()
                        .is_none_or(|p| f.providers.contains(&p))
                })
                .cloned()
                .collect();
            (limits, String::new())
        } else {
            let matched = self
                .policies
                .iter()
                .enumerate()
                .find_map(|(i, p)| {
                    let parts = (!p.matches.is_empty())
                        .then(|| policy_matches(p, f))
                        .flatten()?;
                    Some((i, parts))
                })
                .or_else(|| {
                    self.policies
                        .iter()
                        .position(|p| p.matches.is_empty())
                        .map(|i| (i, String::new()))
                })?;
            let (i, parts) = matched;
            (self.policies.get(i)?.limits.clone(), parts)
        };
        if limits.is_empty() {
            return None;
        }
        let slots = limits
            .iter()
            .map(|l| Slot {
                key: format!(
                    "ai:{scope}:{identity}{partition}:{}:{}",
                    l.label,
                    l.count.as_str()
                ),
                limit: l.limit,
                window: l.window,
                sliding: l.sliding,
            })
            .collect();
        Some(Plan { limits, slots })
    }

    /// The status and message of a refusal naming the `labels` that ran out.
    pub fn refusal(&self, labels: &[&str]) -> (StatusCode, String) {
        let base = self
            .config
            .error_message
            .clone()
            .unwrap_or_else(|| "AI token rate limit exceeded for provider(s): ".into());
        let message = if self.config.error_hide_providers
            || self.config.error_message.is_some() && !base.ends_with(": ")
        {
            base.trim_end().trim_end_matches(':').to_string()
        } else {
            format!("{base}{}", labels.join(", "))
        };
        (
            crate::plugins::rate_limiting::status(self.config.error_code),
            message,
        )
    }
}

/// The partition suffix when every condition of `p` holds.
fn policy_matches(p: &CompiledPolicy, f: &Facts<'_>) -> Option<String> {
    let mut parts = String::new();
    for (m, nets) in &p.matches {
        let any = m.values.as_ref().is_none_or(|v| v.is_empty());
        let hit = |candidates: &[&str]| -> Option<String> {
            candidates
                .iter()
                .find(|c| any || m.values.iter().flatten().any(|v| v == *c))
                .map(|c| c.to_string())
        };
        let value: Option<String> = match m.kind {
            MatchType::Consumer => {
                let cands: Vec<&str> = match m.key.as_deref() {
                    Some("id") => f.subject.consumer.into_iter().collect(),
                    Some("custom_id") => f.consumer_custom_id.into_iter().collect(),
                    Some("username") => f.consumer_username.into_iter().collect(),
                    _ => f
                        .consumer_username
                        .into_iter()
                        .chain(f.subject.consumer)
                        .collect(),
                };
                hit(&cands)
            }
            MatchType::ConsumerGroup => {
                let cands: Vec<&str> = match m.key.as_deref() {
                    Some("id") => f.groups.iter().map(|g| g.0).collect(),
                    Some("name") => f.groups.iter().map(|g| g.1).collect(),
                    _ => f.groups.iter().flat_map(|g| [g.1, g.0]).collect(),
                };
                hit(&cands)
            }
            MatchType::Header => {
                let v = m
                    .key
                    .as_deref()
                    .and_then(|k| f.subject.headers.get(k))
                    .and_then(|v| v.to_str().ok());
                hit(&v.into_iter().collect::<Vec<_>>())
            }
            MatchType::Ip => {
                let ip: Option<IpAddr> = f.subject.ip.parse().ok();
                match ip {
                    Some(ip)
                        if any || nets.iter().any(|n| crate::balancer::acl::in_cidr(ip, *n)) =>
                    {
                        Some(f.subject.ip.to_string())
                    }
                    _ => None,
                }
            }
            MatchType::Model => hit(&f.model.into_iter().collect::<Vec<_>>()),
            MatchType::Path => {
                let p = f.subject.path;
                let ok = any
                    || m.values.iter().flatten().any(|v| {
                        p == v
                            || (p.starts_with(v.as_str())
                                && (v.ends_with('/') || p[v.len()..].starts_with('/')))
                    });
                ok.then(|| p.to_string())
            }
            MatchType::Provider => hit(f.providers),
        };
        let v = value?;
        if m.partition_by {
            parts.push(':');
            parts.push_str(&v);
        }
    }
    Some(parts)
}

impl Plan {
    /// The counters this plan reads.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// How much of the estimated prompt each limit must have room for now: prompt and
    /// total token limits need the estimate, the others only need to be unspent.
    pub fn admission(&self, estimate: u64) -> Vec<f64> {
        self.limits
            .iter()
            .map(|l| match l.count {
                TokensCount::TotalTokens | TokensCount::PromptTokens => estimate as f64,
                TokensCount::CompletionTokens | TokensCount::Cost => 0.0,
            })
            .collect()
    }

    /// The `requestPrompt` limits, charged at admission.
    pub fn request_prompt(&self) -> Vec<usize> {
        (0..self.limits.len())
            .filter(|i| self.limits.get(*i).is_some_and(|l| l.request_prompt))
            .collect()
    }

    /// The labels of the limits whose readings refuse.
    pub fn refused_labels(&self, refused: &[bool]) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (l, r) in self.limits.iter().zip(refused) {
            if *r && !out.contains(&l.label.as_str()) {
                out.push(&l.label);
            }
        }
        out
    }

    /// What each limit is owed for an answer with `usage` from `provider`.
    pub fn owed(
        &self,
        usage: &Usage,
        provider: &str,
        input_cost: Option<f64>,
        output_cost: Option<f64>,
    ) -> Vec<(usize, f64)> {
        self.limits
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                !l.request_prompt && l.provider.as_deref().is_none_or(|p| p == provider)
            })
            .map(|(i, l)| {
                let amount = match l.count {
                    TokensCount::TotalTokens => usage
                        .total_tokens
                        .max(usage.prompt_tokens + usage.completion_tokens)
                        as f64,
                    TokensCount::PromptTokens => usage.prompt_tokens as f64,
                    TokensCount::CompletionTokens => usage.completion_tokens as f64,
                    TokensCount::Cost => usage.cost(input_cost, output_cost),
                };
                (i, amount)
            })
            .filter(|(_, a)| *a > 0.0)
            .collect()
    }

    /// Kong's `X-AI-RateLimit-*` headers for `readings`, plus the summary `RateLimit-*` /
    /// `X-RateLimit-*` and, on a refusal, `Retry-After`.
    pub fn headers(
        &self,
        readings: &[Reading],
        refused: bool,
        out: &mut Vec<(HeaderName, HeaderValue)>,
    ) {
        let mut worst_retry = 0;
        let mut soonest_reset: Option<u64> = None;
        for (l, r) in self.limits.iter().zip(readings) {
            let suffix = format!("{}-{}", l.window, l.label.to_ascii_lowercase());
            push(out, &format!("x-ai-ratelimit-limit-{suffix}"), r.limit);
            push(
                out,
                &format!("x-ai-ratelimit-remaining-{suffix}"),
                r.remaining().floor(),
            );
            push(out, &format!("x-ai-ratelimit-reset-{suffix}"), r.reset);
            if refused && r.retry_after > 0 {
                push(
                    out,
                    &format!("x-ai-ratelimit-retry-after-{suffix}"),
                    r.retry_after,
                );
                worst_retry = worst_retry.max(r.retry_after);
            }
            soonest_reset = Some(soonest_reset.map_or(r.reset, |s| s.min(r.reset)));
        }
        if let Some(reset) = soonest_reset {
            push(out, "x-ai-ratelimit-reset", reset);
        }
        if refused {
            push(out, "x-ai-ratelimit-retry-after", worst_retry.max(1));
        }
        summary_headers(readings, refused, out);
    }
}

/// The headers a client gets for a request: empty when the instance hides them.
pub fn visible(
    ai: &AiRateLimiting,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Vec<(HeaderName, HeaderValue)> {
    if !ai.config.hide_client_headers {
        return headers;
    }
    headers
        .into_iter()
        .filter(|(n, _)| n == "retry-after")
        .collect()
}

/// A header map view used by tests.
#[cfg(test)]
fn header_map(h: &[(HeaderName, HeaderValue)]) -> http::HeaderMap {
    h.iter().cloned().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::plugins::rate_limiting::Subject;
    use http::HeaderMap;

    fn compile(v: serde_json::Value) -> AiRateLimiting {
        let c: AiRateLimitingConfig = serde_json::from_value(v).unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        AiRateLimiting::new("p1", c, &VaultTable::default(), &|_| None).unwrap()
    }

    #[test]
    fn provider_limits_apply_to_their_provider() {
        let ai = compile(serde_json::json!({"llm_providers": [
            {"name": "openai", "limit": [100, 1000], "window_size": [60, 3600]},
            {"name": "anthropic", "limit": [5], "window_size": [60]}
        ]}));
        let h = HeaderMap::new();
        let s = Subject {
            consumer: Some("c1"),
            credential: None,
            group: None,
            ip: "1.2.3.4",
            headers: &h,
            path: "/",
            service: None,
        };
        let f = Facts {
            subject: &s,
            consumer_username: Some("alice"),
            consumer_custom_id: None,
            groups: &[],
            model: Some("gpt-4o"),
            providers: &["openai"],
        };
        let plan = ai.plan("consumer:c1", &f).unwrap();
        assert_eq!(plan.slots().len(), 2);
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
            ..Default::default()
        };
        assert_eq!(
            plan.owed(&usage, "openai", None, None),
            vec![(0, 15.0), (1, 15.0)]
        );
        assert!(plan.owed(&usage, "anthropic", None, None).is_empty());
        let readings = [
            Reading {
                used: 100.0,
                limit: 100.0,
                window: 60,
                reset: 20,
                retry_after: 20,
            },
            Reading {
                used: 100.0,
                limit: 1000.0,
                window: 3600,
                reset: 200,
                retry_after: 0,
            },
        ];
        let mut out = Vec::new();
        plan.headers(&readings, true, &mut out);
        let m = header_map(&out);
        assert_eq!(m["x-ai-ratelimit-limit-60-openai"], "100");
        assert_eq!(m["x-ai-ratelimit-remaining-3600-openai"], "900");
        assert_eq!(m["x-ai-ratelimit-retry-after-60-openai"], "20");
        assert_eq!(m["retry-after"], "20");
        assert_eq!(m["x-ratelimit-remaining"], "0");
        assert_eq!(
            ai.refusal(&["openai"]).1,
            "AI token rate limit exceeded for provider(s): openai"
        );
    }

    #[test]
    fn policies_match_partition_and_fall_back() {
        let ai = compile(serde_json::json!({"policies": [
            {"match": [{"type": "consumer_group", "values": ["gold"]}, {"type": "model", "partition_by": true}],
             "limits": [{"limit": 1000, "window_size": 3600}]},
            {"limits": [{"limit": 10, "window_size": 60, "tokens_count_strategy": "prompt_tokens"}], "window_type": "fixed"}
        ]}));
        let h = HeaderMap::new();
        let s = Subject {
            consumer: Some("c1"),
            credential: None,
            group: None,
            ip: "1.2.3.4",
            headers: &h,
            path: "/",
            service: None,
        };
        let gold = [("g1", "gold")];
        let f = Facts {
            subject: &s,
            consumer_username: Some("alice"),
            consumer_custom_id: None,
            groups: &gold,
            model: Some("gpt-4o"),
            providers: &["openai"],
        };
        let plan = ai.plan("consumer:c1", &f).unwrap();
        assert_eq!(plan.slots()[0].limit, 1000.0);
        assert!(
            plan.slots()[0].key.contains(":gpt-4o:"),
            "{}",
            plan.slots()[0].key
        );
        assert!(plan.slots()[0].sliding);
        let f = Facts { groups: &[], ..f };
        let plan = ai.plan("consumer:c1", &f).unwrap();
        assert_eq!(plan.slots()[0].limit, 10.0);
        assert!(!plan.slots()[0].sliding);
        assert_eq!(plan.admission(7), vec![7.0]);
    }

    #[test]
    fn config_errors_name_fields() {
        let c: AiRateLimitingConfig = serde_json::from_value(serde_json::json!({
            "llm_providers": [{"name": "openai", "limit": [1, 2], "window_size": [60]}],
            "custom_cost_count_function": "return 1"
        }))
        .unwrap();
        let e = c.validate();
        assert_eq!(e[0].0, "llm_providers[0]");
        assert_eq!(e[1].0, "custom_cost_count_function");
        let bad: Result<AiRateLimitingConfig, _> =
            serde_json::from_value(serde_json::json!({"policies": [], "bogus": 1}));
        assert!(bad.is_err());
    }
}

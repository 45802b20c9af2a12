//! `ai-rate-limiting-advanced`: token (or cost) quotas per provider (`llm_providers`) or by
//! policy (`policies`, Kong 3.14), in fixed or sliding windows, kept per consumer, group,
//! credential, IP, header, path or service.
//!
//! Before the request, its estimated prompt tokens must fit in what is left (a prompt no
//! window could hold is refused for good, 413); an admitted request holds its estimate
//! (prompt + bounded completion) while in flight (tollgate's `reserve_in_flight`), and after
//! the answer the upstream's real usage (also read from streams) replaces it, so a spent
//! quota refuses the next request until the window moves on. `requestPrompt` limits count
//! the estimated prompt tokens when the request is admitted.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::config::plugins::nullable;
use crate::config::vault::VaultTable;
use crate::llm::usage::Usage;
use crate::plugins::rate_limiting::{
    check_sync_rate, push, summary_headers, LimitBy, Policy, Store, SyncMode,
};
use crate::quota::{Counters, Reading, Settlement, Slot};
use crate::store::redis::RedisConfig;

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
    /// Kong's: 0 (or unset) updates Redis on every request, -1 keeps counters in this
    /// node's memory only, more is the seconds between batched syncs.
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
    /// Tollgate: hold each admitted request's estimated tokens (prompt plus a bounded
    /// completion) in the counters while it is in flight, settled to the real usage once
    /// the answer is complete (released if it fails). `false` keeps Kong's behaviour: only
    /// finished answers count, so concurrent requests can overshoot. Default true.
    pub reserve_in_flight: Option<bool>,
    /// Tollgate: the completion tokens reserved for a request that names no `max_tokens`,
    /// `max_completion_tokens` or `max_output_tokens` (nor does its target's
    /// `model.options.max_tokens`). Default 512.
    pub reserve_completion_tokens: Option<u64>,
}

/// Completion tokens reserved when neither the request nor the target bounds them.
pub const RESERVE_COMPLETION_TOKENS: u64 = 512;

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
        errs.extend(check_sync_rate(self.sync_rate, true));
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

/// A request's token estimate at admission.
#[derive(Debug, Clone, Copy, Default)]
pub struct Estimate {
    pub prompt: u64,
    /// The completion tokens to reserve (the request's bound, else a default).
    pub completion: u64,
    /// The dearest input and output cost (per 1M tokens) among the route's targets.
    pub costs: (f64, f64),
}

/// What an admission does to each counter of a plan.
#[derive(Debug, Default)]
pub struct Amounts {
    /// Room each counter must have now.
    pub need: Vec<f64>,
    /// Added to each counter at admission.
    pub hold: Vec<f64>,
    /// The part of each hold that is a reservation, settled once the answer is known (a
    /// `requestPrompt` charge is not).
    pub reserved: Vec<f64>,
}

/// Usage owed to a quota once the answer is complete, and the reservations made for it.
/// Dropped unsettled (the client went away first), it gives the reservations back.
#[derive(Debug)]
pub struct Charge {
    pub counters: Counters,
    pub plan: Arc<Plan>,
    /// Per slot: the tokens reserved at admission (0: none) and the start (ms) of the
    /// window they were added to.
    pub held: Vec<(f64, u64)>,
}

impl Charge {
    /// Charges `owed` (slot index, real usage) and gives every reservation back: at once
    /// for local counters, off the request path for Redis.
    pub fn settle(&mut self, owed: &[(usize, f64)], now_ms: u64) {
        let held = std::mem::take(&mut self.held);
        // One settlement per slot (nothing to do for most), so local counters need no copy
        // of the slots.
        let items: Vec<Settlement> = (0..self.plan.slots.len())
            .map(|i| {
                let (reserved, reserved_at) = held.get(i).copied().unwrap_or((0.0, 0));
                Settlement {
                    real: owed.iter().filter(|(j, _)| *j == i).map(|(_, a)| a).sum(),
                    reserved,
                    reserved_at,
                }
            })
            .collect();
        if items.iter().all(|it| it.real <= 0.0 && it.reserved <= 0.0) {
            return;
        }
        match &self.counters {
            Counters::Local(l) => l.settle(&self.plan.slots, &items, now_ms),
            Counters::Synced(s) => s.settle(&self.plan.slots, &items, now_ms),
            Counters::Redis(r) => {
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let (slots, items): (Vec<Slot>, Vec<Settlement>) = self
                    .plan
                    .slots
                    .iter()
                    .zip(items)
                    .filter(|(_, it)| it.real > 0.0 || it.reserved > 0.0)
                    .map(|(s, it)| (s.clone(), it))
                    .unzip();
                let r = r.clone();
                rt.spawn(async move {
                    if let Err(e) = r.settle(&slots, &items, now_ms).await {
                        tracing::warn!(error = %e, "quota usage could not be settled");
                    }
                });
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.held.iter().any(|(h, _)| *h > 0.0) {
            self.settle(&[], crate::rt::clock::millis_since_epoch());
        }
    }
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
            SyncMode::advanced(config.sync_rate),
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
        let scope = self.scope();
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

    /// The status and message of a refusal naming the `labels` that ran out. Kong's
    /// default text is kept as the start; `detail` (see [`Plan::refusal_detail`]) follows
    /// it unless the message is the operator's own.
    pub fn refusal(&self, labels: &[&str], detail: &str) -> (StatusCode, String) {
        let base = self
            .config
            .error_message
            .clone()
            .unwrap_or_else(|| "AI token rate limit exceeded for provider(s): ".into());
        let mut message = if self.config.error_hide_providers
            || self.config.error_message.is_some() && !base.ends_with(": ")
        {
            base.trim_end().trim_end_matches(':').to_string()
        } else {
            format!("{base}{}", labels.join(", "))
        };
        if self.config.error_message.is_none() {
            message.push_str(detail);
        }
        (
            crate::plugins::rate_limiting::status(self.config.error_code),
            message,
        )
    }

    /// The scope its counters are kept under (`namespace`, else the plugin id).
    pub fn scope(&self) -> &str {
        self.config.namespace.as_deref().unwrap_or(&self.id)
    }

    /// Every limit it may apply: the end of its counters' keys (`:<label>:<what>`), window
    /// (s), limit and whether the window slides.
    pub fn configured(&self) -> Vec<(String, u64, f64, bool)> {
        self.providers
            .iter()
            .chain(self.policies.iter().flat_map(|p| p.limits.iter()))
            .map(|l| {
                (
                    format!(":{}:{}", l.label, l.count.as_str()),
                    l.window,
                    l.limit,
                    l.sliding,
                )
            })
            .collect()
    }

    /// Whether admitted requests hold their estimate while in flight.
    pub fn reserves(&self) -> bool {
        self.config.reserve_in_flight.unwrap_or(true)
    }

    /// The completion tokens reserved for a request that does not bound them.
    pub fn default_completion(&self) -> u64 {
        self.config
            .reserve_completion_tokens
            .unwrap_or(RESERVE_COMPLETION_TOKENS)
    }

    /// The message for a prompt of `prompt` tokens that exceeds `limit` tokens per `window`
    /// seconds (limit `label`) on its own.
    pub fn never_fits_message(&self, prompt: u64, label: &str, limit: f64, window: u64) -> String {
        let of = if self.config.error_hide_providers {
            String::new()
        } else {
            format!(" ({label})")
        };
        format!(
            "This request's prompt is about {prompt} tokens, more than the token quota allows \
             in any window: {limit} tokens per {window} s{of}. Retrying cannot help; shorten \
             the prompt or ask for a larger quota."
        )
    }
}

/// What a limit counts, for messages.
fn unit(count: TokensCount) -> &'static str {
    match count {
        TokensCount::TotalTokens => "tokens",
        TokensCount::PromptTokens => "prompt tokens",
        TokensCount::CompletionTokens => "completion tokens",
        TokensCount::Cost => "cost units",
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

    /// What admitting a request with estimate `e` does to each counter. Prompt and total
    /// token limits need room for the prompt, the others only need to be unspent (Kong's
    /// admission). With `reserve`, each counter also holds the request's estimate for it
    /// (never more than the limit) until the answer settles it; `requestPrompt` limits
    /// are charged the prompt for good either way.
    pub fn amounts(&self, e: &Estimate, reserve: bool) -> Amounts {
        let p = e.prompt as f64;
        let c = e.completion as f64;
        let mut out = Amounts::default();
        for l in &self.limits {
            let need = match l.count {
                TokensCount::TotalTokens | TokensCount::PromptTokens => p,
                TokensCount::CompletionTokens | TokensCount::Cost => 0.0,
            };
            let (hold, reserved) = if l.request_prompt {
                (p, false)
            } else if reserve {
                let full = match l.count {
                    TokensCount::TotalTokens => p + c,
                    TokensCount::PromptTokens => p,
                    TokensCount::CompletionTokens => c,
                    TokensCount::Cost => (p * e.costs.0 + c * e.costs.1) / 1_000_000.0,
                };
                (full.min(l.limit.max(0.0)), true)
            } else {
                (0.0, false)
            };
            out.need.push(need);
            out.hold.push(hold);
            out.reserved.push(if reserved { hold } else { 0.0 });
        }
        out
    }

    /// The first limit a prompt of `prompt` tokens alone exceeds, so that no wait could
    /// ever admit it: its label, limit and window (s).
    pub fn never_fits(&self, prompt: u64) -> Option<(&str, f64, u64)> {
        self.limits
            .iter()
            .find(|l| {
                matches!(
                    l.count,
                    TokensCount::TotalTokens | TokensCount::PromptTokens
                ) && prompt as f64 > l.limit
            })
            .map(|l| (l.label.as_str(), l.limit, l.window))
    }

    /// What the refusing limits look like, for the message: used of limit in the window,
    /// what this request needs, and when it would fit.
    pub fn refusal_detail(&self, readings: &[Reading], need: &[f64], hide: bool) -> String {
        let mut parts = Vec::new();
        let mut wait = 0;
        for ((l, r), n) in self.limits.iter().zip(readings).zip(need) {
            if !crate::quota::refuses(r.used, *n, r.limit) {
                continue;
            }
            wait = wait.max(r.retry_after);
            let who = if hide {
                String::new()
            } else {
                format!("{}: ", l.label)
            };
            let in_flight = if r.held > 0.0 {
                format!(" ({} held by requests in flight)", r.held.ceil())
            } else {
                String::new()
            };
            parts.push(format!(
                "{who}{} of {} {} used or reserved in the {} s window{in_flight}, this request needs {}",
                r.used.ceil(),
                r.limit,
                unit(l.count),
                l.window,
                n.ceil()
            ));
        }
        if parts.is_empty() {
            return String::new();
        }
        format!(" ({}; retry in {} s)", parts.join("; "), wait.max(1))
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
                held: 0.0,
            },
            Reading {
                used: 100.0,
                limit: 1000.0,
                window: 3600,
                reset: 200,
                retry_after: 0,
                held: 0.0,
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
            ai.refusal(&["openai"], "").1,
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
        let e = Estimate {
            prompt: 7,
            completion: 50,
            costs: (0.0, 0.0),
        };
        let a = plan.amounts(&e, true);
        // A prompt-token limit needs and holds the prompt only.
        assert_eq!(
            (a.need, a.hold, a.reserved),
            (vec![7.0], vec![7.0], vec![7.0])
        );
        assert_eq!(plan.amounts(&e, false).hold, vec![0.0]);
        assert_eq!(plan.never_fits(11).map(|n| n.1), Some(10.0));
        assert!(plan.never_fits(10).is_none());
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
        for (rate, ok) in [
            (-1.0, true),
            (0.0, true),
            (0.02, true),
            (5.0, true),
            (0.01, false),
            (-2.0, false),
        ] {
            let c: AiRateLimitingConfig = serde_json::from_value(serde_json::json!({
                "llm_providers": [{"name": "openai", "limit": [1], "window_size": [60]}],
                "sync_rate": rate
            }))
            .unwrap();
            let e = c.validate();
            assert_eq!(e.is_empty(), ok, "{rate}: {e:?}");
            if !ok {
                assert_eq!(e[0].0, "sync_rate");
                assert!(
                    e[0].1.contains("-1 (counters in this node's memory only)"),
                    "{e:?}"
                );
            }
        }
        let bad: Result<AiRateLimitingConfig, _> =
            serde_json::from_value(serde_json::json!({"policies": [], "bogus": 1}));
        assert!(bad.is_err());
    }
}

//! The access phase's quota and prompt steps: `rate-limiting` (910) and
//! `ai-rate-limiting-advanced` (905) decide before anything else touches the request; the
//! prompt plugins (template 773, decorator 772, guard 771, sanitizer) then work on the JSON
//! body once, parsed a single time and written back a single time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue};
use serde_json::Value;

use crate::error::GatewayError;
use crate::gateway::Snapshot;
use crate::llm::body::NotAnObject;
use crate::plugins::ai_proxy::AiProxy;
use crate::plugins::ai_rate_limiting::{self, Amounts, Charge, Estimate, Facts};
use crate::plugins::rate_limiting::{self, Subject};
use crate::plugins::request_transformer::UpstreamRequest;
use crate::plugins::Plugin;
use crate::quota::{Mode, Outcome, StoreError};
use crate::rt::clock::millis_since_epoch;

use crate::gateway::Gateway;

/// Response headers plugins add for the client (on success and on refusal).
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// Who is asking, as far as quotas care.
pub struct Caller<'a> {
    pub consumer: Option<usize>,
    pub credential: Option<&'a str>,
    pub ip: &'a str,
    /// The client's path (before `strip_path`).
    pub path: &'a str,
    pub service: Option<usize>,
}

/// Second of the last "counter store down" warning, so an outage logs once a second, not
/// once a request.
static LAST_STORE_WARNING: AtomicU64 = AtomicU64::new(0);

fn store_down(gw: &Gateway, plugin: &str, e: &StoreError, outcome: &str) {
    gw.stats.quota_store_errors.fetch_add(1, Ordering::Relaxed);
    let now = millis_since_epoch() / 1000;
    if LAST_STORE_WARNING.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(plugin, error = %e, "quota counters unavailable: {outcome}");
    }
}

/// Runs the quota plugins of `chain`. Ok: the headers to add and the usage charges owed
/// once the answer is complete; Err: the refusal (with its headers).
#[allow(clippy::too_many_arguments)]
pub async fn quotas(
    gw: &Gateway,
    snap: &Snapshot,
    chain: &[usize],
    caller: &Caller<'_>,
    up: &UpstreamRequest,
    ai: Option<&AiProxy>,
    headers: &mut Headers,
    charges: &mut Vec<Charge>,
) -> Result<(), GatewayError> {
    let now = millis_since_epoch();
    let consumer = caller.consumer.and_then(|c| snap.consumers.get(c));
    let groups: Vec<(&str, &str)> = caller
        .consumer
        .and_then(|c| snap.member_of.get(c))
        .into_iter()
        .flatten()
        .filter_map(|g| {
            snap.groups
                .get(*g)
                .map(|(id, name)| (id.as_str(), name.as_str()))
        })
        .collect();
    let service_id = caller
        .service
        .and_then(|s| snap.services.get(s))
        .map(|s| s.id.as_str());
    let mut body: Option<Option<Value>> = None;
    for &i in chain {
        let Some(pl) = snap.plugins.get(i) else {
            continue;
        };
        // A group-scoped instance counts per that group; otherwise the consumer's first.
        let group = pl
            .consumer_group
            .as_deref()
            .or_else(|| groups.first().map(|g| g.0));
        let subject = Subject {
            consumer: consumer.map(|c| c.id.as_str()),
            credential: caller.credential,
            group,
            ip: caller.ip,
            headers: &up.headers,
            path: caller.path,
            service: service_id,
        };
        match &pl.plugin {
            Plugin::RateLimiting(rl) => {
                let c = &rl.config;
                if !rate_limiting::path_applies(c.limit_by, c.path.as_deref(), caller.path) {
                    continue;
                }
                let id = rate_limiting::identity(
                    c.limit_by,
                    c.header_name.as_deref(),
                    c.path.as_deref(),
                    &subject,
                );
                let counters = rl.store.counters(&gw.quota);
                match rate_limiting::count_request(rl, &counters, &id, now).await {
                    Ok(o) => {
                        rl.headers(&o.readings, !o.allowed, headers);
                        if !o.allowed {
                            gw.stats.quota_rejections.fetch_add(1, Ordering::Relaxed);
                            let (status, message) = rl.refusal();
                            return Err(GatewayError::RateLimited { status, message });
                        }
                    }
                    Err(e) if c.fault_tolerant.unwrap_or(true) => {
                        store_down(gw, "rate-limiting", &e, "requests pass (fault_tolerant)");
                    }
                    Err(e) => {
                        store_down(
                            gw,
                            "rate-limiting",
                            &e,
                            "requests refused (fault_tolerant: false)",
                        );
                        return Err(GatewayError::Internal(format!("rate-limiting: {e}")));
                    }
                }
            }
            Plugin::AiRateLimiting(arl) => {
                let c = &arl.config;
                let doc =
                    body.get_or_insert_with(|| serde_json::from_slice::<Value>(&up.body).ok());
                let first = ai.and_then(|a| a.targets.first());
                let model = doc
                    .as_ref()
                    .and_then(|d| d.get("model"))
                    .and_then(Value::as_str)
                    .or_else(|| first.and_then(|t| t.model_name.as_deref()));
                let mut providers: Vec<&str> = Vec::new();
                for t in ai.map(|a| &a.targets[..]).unwrap_or(&[]) {
                    if !providers.contains(&t.provider.as_str()) {
                        providers.push(t.provider.as_str());
                    }
                }
                let facts = Facts {
                    subject: &subject,
                    consumer_username: consumer.and_then(|c| c.username.as_deref()),
                    consumer_custom_id: consumer.and_then(|c| c.custom_id.as_deref()),
                    groups: &groups,
                    model,
                    providers: &providers,
                };
                let id = rate_limiting::identity(
                    c.identifier,
                    c.header_name.as_deref(),
                    c.path.as_deref(),
                    &subject,
                );
                let Some(plan) = arl.plan(&id, &facts) else {
                    continue;
                };
                let estimate = estimate(arl, doc.as_ref(), model, ai);
                charges.push(admit_ai(gw, arl, plan, &estimate, now, headers).await?);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Admits a request under one `ai-rate-limiting-advanced` plan: a prompt no window could
/// hold is refused for good (413), a request that does not fit now with the quota's state
/// (429); an admitted one holds its estimate until [`settle`].
async fn admit_ai(
    gw: &Gateway,
    arl: &ai_rate_limiting::AiRateLimiting,
    plan: ai_rate_limiting::Plan,
    estimate: &Estimate,
    now: u64,
    headers: &mut Headers,
) -> Result<Charge, GatewayError> {
    let c = &arl.config;
    if let Some((label, limit, window)) = plan.never_fits(estimate.prompt) {
        gw.stats.quota_rejections.fetch_add(1, Ordering::Relaxed);
        let message = arl.never_fits_message(estimate.prompt, label, limit, window);
        return Err(GatewayError::PromptOverQuota(message));
    }
    let amounts = plan.amounts(estimate, arl.reserves());
    let mut counters = arl.store.counters(&gw.quota);
    let outcome = match admit(&counters, &plan, &amounts, now).await {
        Ok(o) => o,
        Err(e) => {
            // Kong's behaviour: a Redis outage falls back to this node's counters.
            store_down(
                gw,
                "ai-rate-limiting-advanced",
                &e,
                "counting on this node only until it is back",
            );
            counters = crate::quota::Counters::Local(gw.quota.clone());
            admit(&counters, &plan, &amounts, now)
                .await
                .map_err(|e| GatewayError::Internal(e.to_string()))?
        }
    };
    let mut h = Vec::new();
    plan.headers(&outcome.readings, !outcome.allowed, &mut h);
    headers.extend(ai_rate_limiting::visible(arl, h));
    if !outcome.allowed {
        gw.stats.quota_rejections.fetch_add(1, Ordering::Relaxed);
        let refused: Vec<bool> = outcome
            .readings
            .iter()
            .zip(&amounts.need)
            .map(|(r, n)| crate::quota::refuses(r.used, *n, r.limit))
            .collect();
        // Hidden headers keep the numbers out of the message too.
        let detail = if c.hide_client_headers {
            String::new()
        } else {
            plan.refusal_detail(&outcome.readings, &amounts.need, c.error_hide_providers)
        };
        let (status, message) = arl.refusal(&plan.refused_labels(&refused), &detail);
        return Err(GatewayError::RateLimited { status, message });
    }
    let held = plan
        .slots()
        .iter()
        .zip(&amounts.reserved)
        .map(|(s, h)| (*h, crate::quota::window_start(now, s.window)))
        .collect();
    Ok(Charge {
        counters,
        plan: Arc::new(plan),
        held,
    })
}

/// The request's token estimate: its prompt, the completion it bounds (`max_tokens`,
/// `max_completion_tokens`, `max_output_tokens`, else the target's `max_tokens`, else the
/// instance's default) and the dearest costs among the route's targets.
fn estimate(
    arl: &ai_rate_limiting::AiRateLimiting,
    doc: Option<&Value>,
    model: Option<&str>,
    ai: Option<&AiProxy>,
) -> Estimate {
    let targets = ai.map(|a| &a.targets[..]).unwrap_or(&[]);
    let asked = doc.and_then(|d| {
        ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| d.get(*k).and_then(Value::as_u64))
    });
    let completion = asked
        .or_else(|| targets.first().and_then(|t| t.options.max_tokens))
        .unwrap_or_else(|| arl.default_completion());
    let dearest = |f: fn(&crate::config::plugins::ModelOptions) -> Option<f64>| {
        targets
            .iter()
            .filter_map(|t| f(&t.options))
            .fold(0.0, f64::max)
    };
    Estimate {
        prompt: doc
            .map(|d| crate::llm::tokens::estimate_prompt(d, model))
            .unwrap_or(0),
        completion,
        costs: (dearest(|o| o.input_cost), dearest(|o| o.output_cost)),
    }
}

/// Admits a request under `plan` in one atomic step: every limit must have room for what
/// it needs, and then each holds its amount (reservations, `requestPrompt` charges).
async fn admit(
    counters: &crate::quota::Counters,
    plan: &ai_rate_limiting::Plan,
    amounts: &Amounts,
    now: u64,
) -> Result<Outcome, StoreError> {
    counters
        .apply_each(
            plan.slots(),
            &amounts.need,
            crate::quota::Adds {
                total: &amounts.hold,
                held: &amounts.reserved,
            },
            Mode::CheckAndAdd,
            now,
        )
        .await
}

/// Charges the answer's usage to every pending quota and gives back what was reserved
/// (everything when there is no usage: the request failed or the client went away).
pub fn settle(
    charges: Vec<Charge>,
    usage: Option<&crate::llm::usage::Usage>,
    provider: Option<&str>,
    costs: (Option<f64>, Option<f64>),
) {
    let now = millis_since_epoch();
    for mut ch in charges {
        let owed = usage
            .map(|u| ch.plan.owed(u, provider.unwrap_or(""), costs.0, costs.1))
            .unwrap_or_default();
        ch.settle(&owed, now);
    }
}

/// What the prompt plugins left for the rest of the request.
#[derive(Default)]
pub struct Shaped {
    /// `ai-sanitizer`'s work on the answer.
    pub filter: Option<crate::plugins::ai_sanitizer_filter::Filter>,
    /// `ai-sanitizer` replaced something.
    pub masked: bool,
}

/// Runs the prompt plugins of `chain` over the JSON body, rewriting it once if any ran.
pub fn shape_prompt(
    snap: &Snapshot,
    chain: &[usize],
    up: &mut UpstreamRequest,
) -> Result<Shaped, GatewayError> {
    let plugins: Vec<&Plugin> = chain
        .iter()
        .filter_map(|i| snap.plugins.get(*i).map(|p| &p.plugin))
        .filter(|p| p.shapes_prompt())
        .collect();
    if plugins.is_empty() {
        return Ok(Shaped::default());
    }
    let not_json = || {
        GatewayError::BadRequest("this LLM route only supports application/json requests".into())
    };
    if !super::body::is_json(up.headers.get(header::CONTENT_TYPE)) {
        return Err(not_json());
    }
    // Each plugin reads bodies up to its own `max_request_body_size` (Kong's field).
    for p in &plugins {
        let limit = match p {
            Plugin::PromptTemplate(t) => t.config().max_request_body_size,
            Plugin::PromptDecorator(c) => c.max_request_body_size,
            Plugin::PromptGuard(g) => g.config().max_request_body_size,
            _ => 0,
        };
        if limit > 0 && up.body.len() as u64 > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
    }
    let bad = |e: NotAnObject| GatewayError::BadRequest(e.to_string());
    let mut doc: Value = serde_json::from_slice(&up.body).map_err(|e| bad(e.into()))?;
    if !doc.is_object() {
        let kind = crate::llm::body::kind_name(&doc);
        return Err(bad(NotAnObject::NotObject(format!("found {kind}"))));
    }
    let mut changed = false;
    let mut filter: Option<crate::plugins::ai_sanitizer_filter::Filter> = None;
    let mut masked = false;
    for p in plugins {
        match p {
            Plugin::PromptTemplate(t) => {
                if let Some(v) = t.render(&doc).map_err(GatewayError::BadRequest)? {
                    doc = v;
                    changed = true;
                }
            }
            Plugin::PromptDecorator(c) => {
                crate::plugins::ai_prompt_decorator::decorate(c, &mut doc)
                    .map_err(GatewayError::BadRequest)?;
                changed = true;
            }
            Plugin::PromptGuard(g) => {
                g.check(&doc).map_err(|e| {
                    guardrail("ai-prompt-guard", "blocked", "");
                    GatewayError::PromptBlocked(e)
                })?;
            }
            Plugin::Sanitizer(s) => {
                if s.on_input() {
                    let r = s.sanitize_request(&mut doc).map_err(|b| {
                        guardrail("ai-sanitizer", "blocked", "");
                        GatewayError::PromptBlocked(b.0)
                    })?;
                    if !r.is_empty() {
                        changed = true;
                        masked = true;
                        for (category, n) in r.categories() {
                            crate::observe::metrics::global()
                                .guardrail_hits
                                .add(&["ai-sanitizer", "masked", &category], n as f64);
                        }
                        let found: Vec<String> = r
                            .categories()
                            .iter()
                            .map(|(c, n)| format!("{c}={n}"))
                            .collect();
                        tracing::debug!(found = %found.join(","), "ai-sanitizer masked the prompt");
                        if s.config().recover_redacted {
                            filter
                                .get_or_insert(crate::plugins::ai_sanitizer_filter::Filter {
                                    restore: None,
                                    output: None,
                                })
                                .restore = Some(Arc::new(r));
                        }
                    }
                }
                if s.on_output() {
                    filter
                        .get_or_insert(crate::plugins::ai_sanitizer_filter::Filter {
                            restore: None,
                            output: None,
                        })
                        .output = Some(s.clone());
                }
            }
            Plugin::PromptLength(c) => {
                crate::plugins::ai_prompt_length::check(c, &doc).map_err(|e| {
                    guardrail("ai-prompt-length-guard", "blocked", "");
                    GatewayError::BadRequest(e)
                })?;
            }
            _ => {}
        }
    }
    if changed {
        let bytes = serde_json::to_vec(&doc)
            .map_err(|e| GatewayError::Internal(format!("prompt plugins: {e}")))?;
        up.body = Bytes::from(bytes);
        if up.headers.contains_key(header::CONTENT_LENGTH) {
            up.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(up.body.len()));
        }
    }
    Ok(Shaped { filter, masked })
}

/// Counts a guardrail's decision (`tollgate_guardrail_hits_total`).
fn guardrail(plugin: &str, action: &str, category: &str) {
    crate::observe::metrics::global()
        .guardrail_hits
        .add(&[plugin, action, category], 1.0);
}

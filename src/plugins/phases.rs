//! Kong's phases as a plugin sees them: what its access handler may read and change
//! ([`Access`]), and what its log handler reads ([`Log`]). The handlers themselves are the
//! arms of [`Plugin::access`] and [`Plugin::log`]; the request path (`proxy::access`,
//! `proxy::response`) runs them in PRIORITY order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::ai_proxy::AiProxy;
use super::ai_rate_limiting::{self, Amounts, Charge, Estimate, Facts};
use super::ai_sanitizer_filter::Filter;
use super::ai_transformer::Transformer;
use super::rate_limiting::{self, Subject};
use super::request_transformer::UpstreamRequest;
use super::template::{TemplateSources, UriCaptures};
use super::{key_auth, Plugin};
use crate::config::entities::Entities;
use crate::error::GatewayError;
use crate::llm::body::NotAnObject;
use crate::net::upstream::Upstreams;
use crate::observe::http_log::HttpLogSink;
use crate::observe::log::RequestLog;
use crate::quota::local::Local;
use crate::quota::{Mode, Outcome, StoreError};
use crate::rt::clock::millis_since_epoch;

/// Response headers plugins set for the client (on success and on refusal).
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// What the access phase's handlers work on: Kong's `kong.request` (the client's request
/// as it came), `kong.service.request` (the request as it will go upstream) and
/// `kong.ctx` (what a handler leaves for later phases).
pub struct Access<'a> {
    /// The config's consumers, groups and services.
    pub entities: &'a Entities,
    /// The request as it will go upstream; handlers rewrite it.
    pub up: &'a mut UpstreamRequest,
    /// The request's log record (key-auth names the consumer in it, guardrails their
    /// decisions).
    pub record: &'a mut RequestLog,
    /// The client's address, as quotas count it.
    pub client_ip: &'a str,
    /// The client's path (before `strip_path`).
    pub path: &'a str,
    /// The route's service (index into the entities).
    pub service: Option<usize>,
    /// The route's ai-proxy instance, for token estimates (the consumer's, once its own
    /// chain applies).
    pub ai: Option<Arc<AiProxy>>,
    /// What templates read: the client's headers as they came (kept when a plugin may
    /// change them first), query and URI captures.
    pub original_headers: Option<HeaderMap>,
    pub query: &'a [(String, String)],
    pub captures: &'a UriCaptures,
    /// This node's counters (`policy: local`, and the fallback when Redis is down).
    pub counters: &'a Arc<Local>,
    /// Requests a quota refused, and times the counter store failed (for `/status`).
    pub rejections: &'a AtomicU64,
    pub store_errors: &'a AtomicU64,
    /// The scope of the instance running now (`consumer_group` of a group-scoped one).
    pub instance_group: Option<&'a str>,
    /// Out: headers for the client (quota state, the trace id).
    pub headers: Headers,
    /// Out: token quotas owed the answer's usage (settled in the log phase).
    pub charges: Vec<Charge>,
    /// Out: `ai-sanitizer`'s work on the answer (restoring, masking).
    pub filter: Option<Filter>,
    /// Out: `ai-sanitizer` replaced something in the prompt.
    pub masked: bool,
    /// The gateway's upstream client, for plugins that call an LLM themselves.
    pub upstreams: &'a Upstreams,
    /// Out: `ai-response-transformer`, to run on the service's answer.
    pub respond: Option<Arc<Transformer>>,
    /// Out: `ai-semantic-cache`, looked up once the body is final, with the request's
    /// partition.
    pub cache: Option<ArmedCache>,
    /// Out: `ai-semantic-response-guard`, to check the whole answer before it is released.
    pub response_guard: Option<ArmedGuard>,
    /// Out: `ai-mcp-proxy` answers this request as MCP.
    pub mcp: Option<ArmedMcp>,
    /// The JSON body the prompt plugins share, parsed once (see [`Access::open_prompt`]).
    prompt: Option<Prompt>,
    /// The body as quotas read it (parsed once, before the prompt plugins change it).
    quota_doc: Option<Option<Value>>,
}

/// The prompt plugins' shared view of the body: parsed once, written back once.
struct Prompt {
    doc: Value,
    changed: bool,
}

impl<'a> Access<'a> {
    /// A context for one request's access phase.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        entities: &'a Entities,
        up: &'a mut UpstreamRequest,
        record: &'a mut RequestLog,
        client_ip: &'a str,
        path: &'a str,
        service: Option<usize>,
        query: &'a [(String, String)],
        captures: &'a UriCaptures,
        counters: &'a Arc<Local>,
        stats: (&'a AtomicU64, &'a AtomicU64),
        upstreams: &'a Upstreams,
    ) -> Access<'a> {
        Access {
            entities,
            up,
            record,
            client_ip,
            path,
            service,
            ai: None,
            original_headers: None,
            query,
            captures,
            counters,
            rejections: stats.0,
            store_errors: stats.1,
            instance_group: None,
            headers: Vec::new(),
            charges: Vec::new(),
            filter: None,
            masked: false,
            upstreams,
            respond: None,
            cache: None,
            response_guard: None,
            mcp: None,
            prompt: None,
            quota_doc: None,
        }
    }

    /// Before the first prompt plugin: the body must be a JSON object within every prompt
    /// plugin's `max_request_body_size` (all checked before any runs), parsed once.
    pub fn open_prompt<'p>(
        &mut self,
        prompt_plugins: impl Iterator<Item = &'p Plugin>,
    ) -> Result<(), GatewayError> {
        if self.prompt.is_some() {
            return Ok(());
        }
        let not_json = || {
            GatewayError::BadRequest(
                "this LLM route only supports application/json requests".into(),
            )
        };
        if !crate::llm::body::is_json(self.up.headers.get(header::CONTENT_TYPE)) {
            return Err(not_json());
        }
        // Each plugin reads bodies up to its own `max_request_body_size` (Kong's field).
        for p in prompt_plugins {
            let limit = match p {
                Plugin::PromptTemplate(t) => t.config().max_request_body_size,
                Plugin::PromptDecorator(c) => c.max_request_body_size,
                Plugin::PromptGuard(g) => g.config().max_request_body_size,
                Plugin::SemanticPromptGuard(g) => g.max_body(),
                _ => 0,
            };
            if limit > 0 && self.up.body.len() as u64 > limit {
                return Err(GatewayError::BodyTooLarge { limit });
            }
        }
        let bad = |e: NotAnObject| GatewayError::BadRequest(e.to_string());
        let doc: Value = serde_json::from_slice(&self.up.body).map_err(|e| bad(e.into()))?;
        if !doc.is_object() {
            let kind = crate::llm::body::kind_name(&doc);
            return Err(bad(NotAnObject::NotObject(format!("found {kind}"))));
        }
        self.prompt = Some(Prompt {
            doc,
            changed: false,
        });
        Ok(())
    }

    /// After the access phase: the prompt plugins' changes written back into the body once.
    pub fn close_prompt(&mut self) -> Result<(), GatewayError> {
        let Some(p) = self.prompt.take().filter(|p| p.changed) else {
            return Ok(());
        };
        self.write_body(&p.doc, "prompt plugins")
    }

    /// `doc` as the body that goes upstream (its Content-Length too, when it has one).
    fn write_body(&mut self, doc: &Value, who: &str) -> Result<(), GatewayError> {
        let bytes =
            serde_json::to_vec(doc).map_err(|e| GatewayError::Internal(format!("{who}: {e}")))?;
        self.up.body = Bytes::from(bytes);
        if self.up.headers.contains_key(header::CONTENT_LENGTH) {
            self.up.headers.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(self.up.body.len()),
            );
        }
        Ok(())
    }

    /// Edits the JSON body (`edit` says whether it changed it): the prompt plugins' shared
    /// document when it is open, else the body itself. A body that is not a JSON object is
    /// left for ai-proxy to refuse.
    fn edit_body(&mut self, edit: impl FnOnce(&mut Value) -> bool) -> Result<(), GatewayError> {
        if let Some(p) = self.prompt.as_mut() {
            p.changed |= edit(&mut p.doc);
            return Ok(());
        }
        let Ok(mut doc) = serde_json::from_slice::<Value>(&self.up.body) else {
            return Ok(());
        };
        if !doc.is_object() || !edit(&mut doc) {
            return Ok(());
        }
        self.write_body(&doc, "body rewrite")
    }

    /// The prompt document ([`Access::open_prompt`] ran first).
    fn prompt(&mut self) -> Result<&mut Prompt, GatewayError> {
        self.prompt
            .as_mut()
            .ok_or_else(|| GatewayError::Internal("prompt plugins: body not parsed".into()))
    }

    fn store_down(&self, plugin: &str, e: &StoreError, outcome: &str) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
        let now = millis_since_epoch() / 1000;
        if LAST_STORE_WARNING.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(plugin, error = %e, "quota counters unavailable: {outcome}");
        }
    }

    /// Who is asking, as quota identifiers see it.
    fn subject(&self) -> Subject<'_> {
        let consumer = self.consumer();
        let group = self
            .instance_group
            .or_else(|| self.groups().first().map(|g| g.0));
        Subject {
            consumer: consumer.map(|c| c.id.as_str()),
            credential: self.record.consumer.as_ref().and_then(|c| c.1.as_deref()),
            group,
            ip: self.client_ip,
            headers: &self.up.headers,
            path: self.path,
            service: self
                .service
                .and_then(|s| self.entities.services.get(s))
                .map(|s| s.id.as_str()),
        }
    }

    fn consumer(&self) -> Option<&'a crate::config::entities::Consumer> {
        let entities: &'a Entities = self.entities;
        self.record
            .consumer
            .as_ref()
            .and_then(|c| entities.consumers.get(c.0))
    }

    /// The consumer's groups: (id, name), the name sorting first first.
    fn groups(&self) -> Vec<(&'a str, &'a str)> {
        let entities: &'a Entities = self.entities;
        self.record
            .consumer
            .as_ref()
            .and_then(|c| entities.member_of.get(c.0))
            .into_iter()
            .flatten()
            .filter_map(|g| {
                entities
                    .groups
                    .get(*g)
                    .map(|(id, name)| (id.as_str(), name.as_str()))
            })
            .collect()
    }
}

/// Second of the last "counter store down" warning, so an outage logs once a second, not
/// once a request.
static LAST_STORE_WARNING: AtomicU64 = AtomicU64::new(0);

/// key-auth (1250): names the consumer, or refuses the request.
pub(super) fn authenticate(
    ka: &key_auth::KeyAuth,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    let preflight = cx.up.method == http::Method::OPTIONS;
    if preflight && !ka.config.run_on_preflight {
        return Ok(());
    }
    let now = (millis_since_epoch() / 1000) as i64;
    let who = key_auth::authenticate(ka, cx.entities, cx.up, now);
    key_auth::redact_log(&ka.config, cx.record);
    match who {
        Ok(who) => {
            cx.record.consumer = Some((who.consumer, who.credential));
            Ok(())
        }
        Err(refusal) => Err(GatewayError::Unauthorized {
            message: refusal.message(),
            challenge: key_auth::challenge(ka),
        }),
    }
}

/// rate-limiting (910): counts the request, refuses it over a limit.
pub(super) async fn count_request(
    rl: &rate_limiting::RateLimiting,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    let c = &rl.config;
    if !rate_limiting::path_applies(c.limit_by, c.path.as_deref(), cx.path) {
        return Ok(());
    }
    let id = rate_limiting::identity(
        c.limit_by,
        c.header_name.as_deref(),
        c.path.as_deref(),
        &cx.subject(),
    );
    let counters = rl.store.counters(cx.counters);
    match rate_limiting::count_request(rl, &counters, &id, millis_since_epoch()).await {
        Ok(o) => {
            rl.headers(&o.readings, !o.allowed, &mut cx.headers);
            if !o.allowed {
                cx.rejections.fetch_add(1, Ordering::Relaxed);
                let (status, message) = rl.refusal();
                return Err(GatewayError::RateLimited { status, message });
            }
            Ok(())
        }
        Err(e) if c.fault_tolerant.unwrap_or(true) => {
            cx.store_down("rate-limiting", &e, "requests pass (fault_tolerant)");
            Ok(())
        }
        Err(e) => {
            cx.store_down(
                "rate-limiting",
                &e,
                "requests refused (fault_tolerant: false)",
            );
            Err(GatewayError::Internal(format!("rate-limiting: {e}")))
        }
    }
}

/// ai-rate-limiting-advanced (905): admits the request's token estimate under the plan
/// that applies to it, or refuses it; an admitted one owes its real usage later.
pub(super) async fn admit_tokens(
    arl: &ai_rate_limiting::AiRateLimiting,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    // Lent out of the context while the plan is read, so it is parsed once and never copied.
    let doc = match cx.quota_doc.take() {
        Some(d) => d,
        None => serde_json::from_slice::<Value>(&cx.up.body).ok(),
    };
    let admitted = admit_tokens_for(arl, cx, doc.as_ref()).await;
    cx.quota_doc = Some(doc);
    admitted
}

/// [`admit_tokens`] for the body `doc` (None: not JSON).
async fn admit_tokens_for(
    arl: &ai_rate_limiting::AiRateLimiting,
    cx: &mut Access<'_>,
    doc: Option<&Value>,
) -> Result<(), GatewayError> {
    let c = &arl.config;
    let ai = cx.ai.as_deref();
    let first = ai.and_then(|a| a.targets.first());
    let model = doc
        .and_then(|d| d.get("model"))
        .and_then(Value::as_str)
        .or_else(|| first.and_then(|t| t.model_name.as_deref()));
    let mut providers: Vec<&str> = Vec::new();
    for t in ai.map(|a| &a.targets[..]).unwrap_or(&[]) {
        if !providers.contains(&t.provider.as_str()) {
            providers.push(t.provider.as_str());
        }
    }
    let consumer = cx.consumer();
    let groups = cx.groups();
    let subject = cx.subject();
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
        return Ok(());
    };
    let estimate = estimate(arl, doc, model, ai);
    let mut headers = Vec::new();
    let admitted = admit_ai(cx, arl, plan, &estimate, &mut headers).await;
    cx.headers.extend(headers);
    cx.charges.push(admitted?);
    Ok(())
}

/// Admits a request under one `ai-rate-limiting-advanced` plan: a prompt no window could
/// hold is refused for good (413), a request that does not fit now with the quota's state
/// (429); an admitted one holds its estimate until it is settled.
async fn admit_ai(
    cx: &Access<'_>,
    arl: &ai_rate_limiting::AiRateLimiting,
    plan: ai_rate_limiting::Plan,
    estimate: &Estimate,
    headers: &mut Headers,
) -> Result<Charge, GatewayError> {
    let c = &arl.config;
    let now = millis_since_epoch();
    if let Some((label, limit, window)) = plan.never_fits(estimate.prompt) {
        cx.rejections.fetch_add(1, Ordering::Relaxed);
        let message = arl.never_fits_message(estimate.prompt, label, limit, window);
        return Err(GatewayError::PromptOverQuota(message));
    }
    let amounts = plan.amounts(estimate, arl.reserves());
    let mut counters = arl.store.counters(cx.counters);
    let outcome = match admit(&counters, &plan, &amounts, now).await {
        Ok(o) => o,
        Err(e) => {
            // Kong's behaviour: a Redis outage falls back to this node's counters.
            cx.store_down(
                "ai-rate-limiting-advanced",
                &e,
                "counting on this node only until it is back",
            );
            counters = crate::quota::Counters::Local(cx.counters.clone());
            admit(&counters, &plan, &amounts, now)
                .await
                .map_err(|e| GatewayError::Internal(e.to_string()))?
        }
    };
    let mut h = Vec::new();
    plan.headers(&outcome.readings, !outcome.allowed, &mut h);
    headers.extend(ai_rate_limiting::visible(arl, h));
    if !outcome.allowed {
        cx.rejections.fetch_add(1, Ordering::Relaxed);
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
pub fn settle(charges: Vec<Charge>, record: &RequestLog) {
    let ai = record.ai.as_ref();
    let usage = ai.and_then(|a| a.usage.as_ref());
    let target = ai.and_then(|a| a.target.and_then(|t| a.targets.get(t)));
    let provider = target.map(|t| t.provider.as_str());
    let costs = (
        target.and_then(|t| t.options.input_cost),
        target.and_then(|t| t.options.output_cost),
    );
    let now = millis_since_epoch();
    for mut ch in charges {
        let owed = usage
            .map(|u| ch.plan.owed(u, provider.unwrap_or(""), costs.0, costs.1))
            .unwrap_or_default();
        ch.settle(&owed, now);
    }
}

/// request-transformer (801): rewrites the upstream request; its templates read the
/// client's request as it came.
pub(super) fn transform(
    cfg: &super::request_transformer::RequestTransformerConfig,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    let Some(orig) = cx.original_headers.as_ref() else {
        return Err(GatewayError::Internal(
            "request-transformer: the client's headers were not kept".into(),
        ));
    };
    let sources = TemplateSources {
        headers: orig,
        query: cx.query,
        uri_captures: cx.captures,
    };
    super::request_transformer::apply(cfg, cx.up, &sources)
        .map_err(|e| GatewayError::Internal(format!("request-transformer: {e}")))
}

/// ai-prompt-template (773): a template named by the body is rendered into it.
pub(super) fn render_template(
    t: &super::ai_prompt_template::PromptTemplates,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    let p = cx.prompt()?;
    if let Some(v) = t.render(&p.doc).map_err(GatewayError::BadRequest)? {
        p.doc = v;
        p.changed = true;
    }
    Ok(())
}

/// ai-prompt-decorator (772): messages added before and after the client's.
pub(super) fn decorate(
    c: &super::ai_prompt_decorator::AiPromptDecoratorConfig,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    let p = cx.prompt()?;
    super::ai_prompt_decorator::decorate(c, &mut p.doc).map_err(GatewayError::BadRequest)?;
    p.changed = true;
    Ok(())
}

/// ai-prompt-guard (771): allow and deny patterns over the prompt.
pub(super) fn guard(
    g: &super::ai_prompt_guard::PromptGuard,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    let p = cx.prompt()?;
    g.check(&p.doc).map_err(|e| {
        blocked("ai-prompt-guard");
        GatewayError::PromptBlocked(e)
    })
}

/// ai-semantic-prompt-guard (775): the prompt compared with the allow and deny rules by
/// meaning; any refusal (or failure: Kong fails closed) is the vague `bad request`.
pub(super) async fn semantic_guard(
    g: &super::ai_semantic_prompt_guard::SemanticPromptGuard,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    use super::semantic_rules::Refusal;
    let text = g.text(&cx.prompt()?.doc);
    let refusal = match text {
        None => Refusal::NoText,
        Some(t) => match g.check(cx.upstreams, &t).await {
            Ok(_) => return Ok(()),
            Err(r) => r,
        },
    };
    if let Refusal::Failed(e) = &refusal {
        tracing::warn!(plugin = "ai-semantic-prompt-guard", error = %e, "prompt refused: the guard could not check it");
    }
    tracing::debug!(
        plugin = "ai-semantic-prompt-guard",
        ?refusal,
        "prompt refused"
    );
    blocked("ai-semantic-prompt-guard");
    Err(GatewayError::PromptBlocked(
        super::ai_prompt_guard::BAD_REQUEST.into(),
    ))
}

/// ai-prompt-length-guard (771): the prompt's size in tokens or characters.
pub(super) fn check_length(
    c: &super::ai_prompt_length::AiPromptLengthConfig,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    let p = cx.prompt()?;
    super::ai_prompt_length::check(c, &p.doc).map_err(|e| {
        blocked("ai-prompt-length-guard");
        GatewayError::BadRequest(e)
    })
}

/// ai-sanitizer (771): personal data in the prompt masked (or the request blocked), and
/// the answer's filter set up: restoring what was masked, masking OUTPUT.
pub(super) fn sanitize(
    s: &Arc<super::ai_sanitizer::Sanitizer>,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    if s.on_input() {
        let p = cx.prompt()?;
        let r = s.sanitize_request(&mut p.doc);
        let r = match r {
            Ok(r) => r,
            Err(b) => {
                blocked("ai-sanitizer");
                return Err(GatewayError::PromptBlocked(b.0));
            }
        };
        if !r.is_empty() {
            p.changed = true;
            cx.masked = true;
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
                cx.filter
                    .get_or_insert(Filter {
                        restore: None,
                        output: None,
                    })
                    .restore = Some(Arc::new(r));
            }
        }
    }
    if s.on_output() {
        cx.filter
            .get_or_insert(Filter {
                restore: None,
                output: None,
            })
            .output = Some(s.clone());
    }
    Ok(())
}

/// A guardrail blocked the prompt: counted (`tollgate_guardrail_hits_total`).
fn blocked(plugin: &str) {
    crate::observe::metrics::global()
        .guardrail_hits
        .add(&[plugin, "blocked", ""], 1.0);
}

/// opentelemetry (rewrite): the request's trace starts, continuing the client's
/// `traceparent`; plain services see this request's span as their parent.
pub(super) fn start_trace(o: &crate::observe::otel::Otel, cx: &mut Access<'_>) {
    let trace = crate::observe::otel::TraceCtx::start(&cx.up.headers, o.rate);
    // AI routes give each upstream attempt its own span (proxy::retry).
    if let Some(v) = trace.traceparent(trace.span) {
        cx.up.headers.insert("traceparent", v);
    }
    if let Some(name) = o.config.http_response_header_for_traceid.as_deref() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name),
            HeaderValue::from_str(&trace.trace_hex()),
        ) {
            cx.headers.push((n, v));
        }
    }
    cx.record.trace = Some(trace);
}

/// What the log phase's handlers read: the finished record (borrowed for `'r`) and the
/// config (for `'c`, which outlives the record's borrow).
pub struct Log<'r, 'c> {
    pub record: &'r RequestLog,
    pub entities: &'c Entities,
    /// The log sinks (file-log, http-log) write this record.
    pub sinks: bool,
    /// file-log's line, formatted once for every file-log instance.
    pub line: Option<Vec<u8>>,
    /// The http-log instances that take the record to their threads.
    pub http: Vec<&'c Arc<HttpLogSink>>,
}

/// ai-request-transformer (777): the LLM's answer to the prompt and the client's body
/// becomes the body that goes on (to the prompt plugins, ai-proxy or the service).
pub(super) async fn transform_with_llm(
    t: &Transformer,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    if cx.up.body.len() as u64 > t.max_body {
        return Err(GatewayError::BodyTooLarge { limit: t.max_body });
    }
    let body = t.introspect(cx.upstreams, &cx.up.body).await?;
    cx.up.body = Bytes::from(body);
    if cx.up.headers.contains_key(header::CONTENT_LENGTH) {
        cx.up
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(cx.up.body.len()));
    }
    Ok(())
}

/// ai-response-transformer (768): Kong runs it in the access phase around its own call to
/// the service; here the proxy runs it on the service's answer (`proxy::plain`).
/// An `ai-semantic-cache` instance armed for one request, with the partition its entries
/// are kept in.
#[derive(Debug, Clone)]
pub struct ArmedCache {
    pub cache: Arc<crate::plugins::ai_semantic_cache::SemanticCache>,
    pub partition: String,
}

/// ai-semantic-cache (765): arms the lookup, which runs once the body is final (after the
/// prompt plugins, with the request's model and stream flag known).
pub(super) fn arm_cache(
    c: &Arc<crate::plugins::ai_semantic_cache::SemanticCache>,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    let consumer = cx.consumer().map(|c| c.id.as_str());
    let group = cx
        .instance_group
        .or_else(|| cx.groups().first().map(|g| g.0));
    let route = cx
        .record
        .route
        .and_then(|r| cx.entities.routes.get(r))
        .map(|r| r.id.as_str());
    let partition = crate::plugins::ai_semantic_cache::partition(
        c.config.partition_by,
        consumer,
        group,
        cx.client_ip,
        route,
    );
    cx.cache = Some(ArmedCache {
        cache: Arc::clone(c),
        partition,
    });
    Ok(())
}

/// An `ai-semantic-response-guard` instance armed for one request, with what the client
/// asked of the answer before the guard turned streaming off.
#[derive(Debug, Clone)]
pub struct ArmedGuard {
    pub guard: Arc<crate::plugins::ai_semantic_response_guard::SemanticResponseGuard>,
    /// The client asked for a stream: the checked answer is replayed as one.
    pub stream: bool,
    /// …with the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// ai-semantic-response-guard (775): on a chat, completions or Responses route, streaming
/// is turned off upstream (as Kong does) so the whole answer can be checked before the
/// client sees any of it; the answer phase checks it (`proxy::guarded`). A stream ai-proxy
/// denies is left for ai-proxy to refuse.
pub(super) fn arm_response_guard(
    g: &Arc<crate::plugins::ai_semantic_response_guard::SemanticResponseGuard>,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    let Some(ai) = cx.ai.as_deref() else {
        return Ok(());
    };
    let route_type = ai.targets.first().map(|t| t.route_type);
    if !route_type.is_some_and(crate::plugins::ai_semantic_response_guard::guards) {
        return Ok(());
    }
    let denied = ai.streaming == crate::config::plugins::StreamingMode::Deny;
    let (mut stream, mut include_usage) = (false, false);
    cx.edit_body(|doc| {
        stream = doc.get("stream").and_then(Value::as_bool) == Some(true);
        include_usage = doc
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        if !stream || denied {
            return false;
        }
        if let Some(o) = doc.as_object_mut() {
            o.insert("stream".into(), Value::Bool(false));
            o.remove("stream_options");
        }
        true
    })?;
    cx.response_guard = Some(ArmedGuard {
        guard: Arc::clone(g),
        stream: stream && !denied,
        include_usage,
    });
    Ok(())
}

/// An `ai-mcp-proxy` instance armed for one request, with who is asking.
#[derive(Debug, Clone)]
pub struct ArmedMcp {
    pub mcp: Arc<crate::plugins::ai_mcp_proxy::McpProxy>,
    /// What ACL entries are compared with: the consumer's identifier (by
    /// `consumer_identifier`), then its groups' names (`include_consumer_groups`).
    pub subjects: Vec<String>,
    /// The consumer (id, username), for the audit log.
    pub consumer: Option<(String, Option<String>)>,
}

/// ai-mcp-proxy (510): a listening mode answers the request as MCP; a tool call the
/// gateway itself makes through the route (marked) goes on to the route's service.
pub(super) fn arm_mcp(
    m: &Arc<crate::plugins::ai_mcp_proxy::McpProxy>,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    let marker = cx.up.headers.remove(crate::mcp::CALL_HEADER);
    if marker.is_some_and(|v| v.as_bytes() == crate::mcp::call_marker().as_bytes()) {
        return Ok(());
    }
    if !m.mode.listens() {
        return Ok(());
    }
    use crate::plugins::ai_mcp_proxy::ConsumerIdentifier;
    let consumer = cx.consumer();
    let mut subjects: Vec<String> = consumer
        .and_then(|c| match m.config.consumer_identifier {
            ConsumerIdentifier::Username => c.username.clone(),
            ConsumerIdentifier::CustomId => c.custom_id.clone(),
            ConsumerIdentifier::ConsumerId => Some(c.id.clone()),
        })
        .into_iter()
        .collect();
    if m.config.include_consumer_groups {
        subjects.extend(cx.groups().into_iter().map(|(_, name)| name.to_string()));
    }
    cx.mcp = Some(ArmedMcp {
        mcp: Arc::clone(m),
        subjects,
        consumer: consumer.map(|c| (c.id.clone(), c.username.clone())),
    });
    Ok(())
}

pub(super) fn arm_response_transformer(
    t: &Arc<Transformer>,
    cx: &mut Access<'_>,
) -> Result<(), GatewayError> {
    if cx.ai.is_some() {
        // A consumer's own chain can pair it with ai-proxy, which load refuses for routes.
        return Err(GatewayError::Internal(
            "ai-response-transformer on an ai-proxy route is not supported".into(),
        ));
    }
    cx.respond = Some(Arc::clone(t));
    Ok(())
}

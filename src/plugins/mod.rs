//! Plugins as a closed enum, run in Kong's PRIORITY order (highest first).

pub mod ai_mcp_proxy;
pub mod ai_probe;
pub mod ai_prompt_decorator;
pub mod ai_prompt_guard;
pub mod ai_prompt_length;
pub mod ai_prompt_template;
pub mod ai_proxy;
pub mod ai_rate_limiting;
pub mod ai_sanitizer;
pub mod ai_sanitizer_filter;
pub mod ai_semantic_cache;
pub mod ai_semantic_prompt_guard;
pub mod ai_semantic_response_guard;
pub mod ai_transformer;
pub mod key_auth;
pub mod phases;
pub mod prometheus;
pub mod rate_limiting;
pub mod registry;
pub mod request_transformer;
pub mod semantic_records;
pub mod semantic_rules;
pub mod template;

use std::sync::Arc;

use crate::error::GatewayError;
use crate::observe::file_log::FileLogSink;

use self::phases::{Access, Log};

pub use registry::{priority, KONG_PLUGINS};

/// A compiled plugin instance.
#[derive(Debug)]
pub enum Plugin {
    /// `ai-proxy` and `ai-proxy-advanced` (a single target is a one-target balancer).
    AiProxy(Arc<ai_proxy::AiProxy>),
    RequestTransformer(Box<request_transformer::RequestTransformerConfig>),
    FileLog(Arc<FileLogSink>),
    KeyAuth(Arc<key_auth::KeyAuth>),
    RateLimiting(Arc<rate_limiting::RateLimiting>),
    AiRateLimiting(Arc<ai_rate_limiting::AiRateLimiting>),
    PromptTemplate(Arc<ai_prompt_template::PromptTemplates>),
    PromptDecorator(Arc<ai_prompt_decorator::AiPromptDecoratorConfig>),
    PromptGuard(Arc<ai_prompt_guard::PromptGuard>),
    PromptLength(Arc<ai_prompt_length::AiPromptLengthConfig>),
    Sanitizer(Arc<ai_sanitizer::Sanitizer>),
    Prometheus(Arc<prometheus::PrometheusConfig>),
    HttpLog(Arc<crate::observe::http_log::HttpLogSink>),
    OpenTelemetry(Arc<crate::observe::otel::Otel>),
    /// `ai-request-transformer`: the request body rewritten by an LLM.
    AiRequestTransformer(Arc<ai_transformer::Transformer>),
    /// `ai-response-transformer`: the service's answer rewritten by an LLM.
    AiResponseTransformer(Arc<ai_transformer::Transformer>),
    /// `ai-semantic-cache`: answers kept and replayed (looked up once the body is final).
    SemanticCache(Arc<ai_semantic_cache::SemanticCache>),
    /// `ai-semantic-prompt-guard`: prompts compared with allow/deny rules by meaning.
    SemanticPromptGuard(Arc<ai_semantic_prompt_guard::SemanticPromptGuard>),
    /// `ai-semantic-response-guard`: whole answers compared with allow/deny rules.
    SemanticResponseGuard(Arc<ai_semantic_response_guard::SemanticResponseGuard>),
    /// `ai-mcp-proxy`: MCP on the route (answered by `proxy::mcp`).
    McpProxy(Arc<ai_mcp_proxy::McpProxy>),
}

/// What putting an instance in service said: warnings, or the errors that refuse it
/// (`(field path relative to the plugin, message)`).
pub type Activation = Result<Vec<(String, String)>, Vec<(String, String)>>;

/// One check's warning or error as an [`Activation`].
fn one(checked: Result<Option<(String, String)>, (String, String)>) -> Activation {
    match checked {
        Ok(w) => Ok(w.into_iter().collect()),
        Err(e) => Err(vec![e]),
    }
}

impl Plugin {
    /// Puts a compiled instance in service: starts its exporter or sender thread and checks
    /// the stores it connects to. Compiling a config does neither, so `tollgate validate`
    /// and configs that are never served start and touch nothing.
    pub fn activate(&self) -> Activation {
        let started = match self {
            Plugin::OpenTelemetry(o) => o.activate(),
            Plugin::HttpLog(s) => s.activate(),
            Plugin::SemanticCache(c) => return one(c.activate()),
            Plugin::SemanticPromptGuard(g) => return one(g.activate()),
            Plugin::SemanticResponseGuard(g) => return one(g.activate()),
            Plugin::AiProxy(a) => {
                if let Some(hc) = a.healthchecks.as_ref().filter(|h| ai_probe::enabled(h)) {
                    ai_probe::start(a, hc.clone());
                }
                return one(a.semantic.as_ref().map_or(Ok(None), |s| s.activate()));
            }
            _ => Ok(()),
        };
        started
            .map(|()| Vec::new())
            .map_err(|e| vec![("config".to_string(), e)])
    }

    /// Whether this plugin identifies the consumer: it runs before every other access
    /// handler, so the consumer's own plugins apply to the rest of the request.
    pub fn authenticates(&self) -> bool {
        matches!(self, Plugin::KeyAuth(_))
    }

    /// Kong's rewrite phase, after authentication and before the other access handlers:
    /// the request's trace starts here, so its spans cover every later step (a quota's
    /// refusal too).
    pub fn rewrite(&self, cx: &mut Access<'_>) {
        if let Plugin::OpenTelemetry(o) = self {
            phases::start_trace(o, cx);
        }
    }

    /// Kong's access phase: checks and rewrites the request before it goes upstream; an
    /// error is the answer the client gets.
    pub async fn access(&self, cx: &mut Access<'_>) -> Result<(), GatewayError> {
        match self {
            Plugin::KeyAuth(k) => phases::authenticate(k, cx),
            Plugin::RateLimiting(r) => phases::count_request(r, cx).await,
            Plugin::AiRateLimiting(r) => phases::admit_tokens(r, cx).await,
            Plugin::RequestTransformer(t) => phases::transform(t, cx),
            Plugin::PromptTemplate(t) => phases::render_template(t, cx),
            Plugin::PromptDecorator(c) => phases::decorate(c, cx),
            Plugin::PromptGuard(g) => phases::guard(g, cx),
            Plugin::PromptLength(c) => phases::check_length(c, cx),
            Plugin::Sanitizer(s) => phases::sanitize(s, cx),
            // Boxed: the LLM call (a whole upstream exchange) would otherwise sit inline in
            // every request's future, transformer or not, and make each one larger to move.
            Plugin::AiRequestTransformer(t) => Box::pin(phases::transform_with_llm(t, cx)).await,
            Plugin::AiResponseTransformer(t) => phases::arm_response_transformer(t, cx),
            Plugin::SemanticCache(c) => phases::arm_cache(c, cx),
            Plugin::SemanticPromptGuard(g) => phases::semantic_guard(g, cx).await,
            Plugin::SemanticResponseGuard(g) => phases::arm_response_guard(g, cx),
            Plugin::McpProxy(m) => phases::arm_mcp(m, cx),
            // ai-proxy answers once the access phase is over (`proxy::ai`); the rest act in
            // the rewrite and log phases.
            Plugin::AiProxy(_)
            | Plugin::FileLog(_)
            | Plugin::HttpLog(_)
            | Plugin::Prometheus(_)
            | Plugin::OpenTelemetry(_) => Ok(()),
        }
    }

    /// Kong's log phase, once the answer is complete (or the client went away).
    pub fn log<'c>(&'c self, cx: &mut Log<'_, 'c>) {
        match self {
            Plugin::OpenTelemetry(o) => {
                if let Some(trace) = cx.record.trace.filter(|t| t.sampled) {
                    o.export(crate::observe::otel::spans(cx.record, &trace, cx.entities));
                }
            }
            Plugin::Prometheus(cfg) => {
                if cx.record.metrics {
                    prometheus::record(cfg, cx.record, cx.entities);
                }
            }
            Plugin::FileLog(sink) => {
                if cx.sinks {
                    let (record, entities) = (cx.record, cx.entities);
                    let line = cx.line.get_or_insert_with(|| {
                        crate::observe::file_log::format_line(record, entities)
                    });
                    sink.write(line);
                }
            }
            Plugin::HttpLog(sink) => {
                if cx.sinks {
                    cx.http.push(sink);
                }
            }
            Plugin::AiProxy(_)
            | Plugin::RequestTransformer(_)
            | Plugin::KeyAuth(_)
            | Plugin::RateLimiting(_)
            | Plugin::AiRateLimiting(_)
            | Plugin::PromptTemplate(_)
            | Plugin::PromptDecorator(_)
            | Plugin::PromptGuard(_)
            | Plugin::PromptLength(_)
            | Plugin::Sanitizer(_)
            | Plugin::AiRequestTransformer(_)
            | Plugin::AiResponseTransformer(_)
            | Plugin::SemanticCache(_)
            | Plugin::SemanticPromptGuard(_)
            | Plugin::SemanticResponseGuard(_)
            | Plugin::McpProxy(_) => {}
        }
    }

    /// Whether this plugin writes the request's log record (so its details are captured).
    pub fn logs(&self) -> bool {
        matches!(self, Plugin::FileLog(_) | Plugin::HttpLog(_))
    }

    /// Whether this plugin reads or rewrites the JSON request body before ai-proxy.
    pub fn shapes_prompt(&self) -> bool {
        matches!(
            self,
            Plugin::PromptTemplate(_)
                | Plugin::PromptDecorator(_)
                | Plugin::PromptGuard(_)
                | Plugin::PromptLength(_)
                | Plugin::Sanitizer(_)
                | Plugin::SemanticPromptGuard(_)
        )
    }
}

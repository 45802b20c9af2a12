//! Plugins as a closed enum, run in Kong's PRIORITY order (highest first).

pub mod ai_prompt_decorator;
pub mod ai_prompt_guard;
pub mod ai_prompt_length;
pub mod ai_prompt_template;
pub mod ai_proxy;
pub mod ai_rate_limiting;
pub mod ai_sanitizer;
pub mod key_auth;
pub mod prometheus;
pub mod rate_limiting;
pub mod request_transformer;

use std::sync::Arc;

use crate::observe::file_log::FileLogSink;

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
}

impl Plugin {
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
        )
    }

    /// Kong's static PRIORITY.
    pub fn priority(&self) -> i32 {
        match self {
            Plugin::KeyAuth(_) => 1250,
            Plugin::RateLimiting(_) => 910,
            Plugin::AiRateLimiting(_) => 905,
            Plugin::RequestTransformer(_) => 801,
            Plugin::PromptTemplate(_) => 773,
            Plugin::PromptDecorator(_) => 772,
            Plugin::PromptGuard(_) => 771,
            Plugin::PromptLength(_) => 771,
            // After the template and decorator (their text is sanitized too), before ai-proxy.
            Plugin::Sanitizer(_) => 771,
            Plugin::AiProxy(_) => 770,
            Plugin::Prometheus(_) => 13,
            Plugin::HttpLog(_) => 12,
            Plugin::OpenTelemetry(_) => 14,
            Plugin::FileLog(_) => 9,
        }
    }
}

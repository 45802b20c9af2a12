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
pub mod template;

use std::sync::Arc;

use crate::observe::file_log::FileLogSink;

/// Every plugin this gateway serves, by Kong name, with Kong's static PRIORITY (a route's
/// plugins run highest first; ties in config order): the one place either is written.
pub const KONG_PLUGINS: [(&str, i32); 15] = [
    ("ai-proxy", 770),
    ("ai-proxy-advanced", 770),
    ("file-log", 9),
    ("ai-prompt-decorator", 772),
    ("ai-prompt-guard", 771),
    ("ai-prompt-length-guard", 771),
    ("ai-prompt-template", 773),
    ("ai-rate-limiting-advanced", 905),
    // After the template and decorator (their text is sanitized too), before ai-proxy.
    ("ai-sanitizer", 771),
    ("http-log", 12),
    ("key-auth", 1250),
    ("opentelemetry", 14),
    ("prometheus", 13),
    ("rate-limiting", 910),
    ("request-transformer", 801),
];

/// Kong's PRIORITY of the plugin named `name` (0 for one this gateway does not serve).
pub fn priority(name: &str) -> i32 {
    KONG_PLUGINS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, p)| *p)
}

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
}

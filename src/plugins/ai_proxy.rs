//! `ai-proxy` / `ai-proxy-advanced`: the compiled instance (its targets, from
//! `llm::target`, and their balancer) and the request-side checks (format, model,
//! streaming). Sending and retrying live in `proxy::retry`.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::balancer::acl::{Acls, AclsConfig};
use crate::balancer::health::Breaker;
use crate::balancer::{Balancer, Settings};
use crate::config::plugins::{
    AiProxyAdvancedConfig, AiProxyConfig, Algorithm, FailoverCriterion, LlmFormat, ProviderName,
    RouteType, StreamingMode, TargetConfig, TokensCountStrategy,
};
use crate::config::vault::VaultTable;
use crate::error::GatewayError;
use crate::llm::body::{BodyView, Kind};
use crate::llm::target::{compile_target, Target, TargetSet};
use crate::llm::Wire;
use crate::plugins::template::{self, TemplateSources};

/// A compiled ai-proxy(-advanced) instance.
#[derive(Debug)]
pub struct AiProxy {
    pub plugin_id: String,
    pub targets: Arc<TargetSet>,
    pub weights: Vec<u32>,
    pub balancer: Balancer,
    /// The header consistent-hashing hashes (None for other algorithms).
    pub hash_on_header: Option<HeaderName>,
    /// `model.model_alias` → the targets that answer to it.
    pub aliases: Vec<(String, Vec<usize>)>,
    /// `acls`: which targets a request may use.
    pub acls: Acls,
    pub streaming: StreamingMode,
    /// 0 = unlimited.
    pub max_body: u64,
    pub model_name_header: bool,
    pub llm_format: LlmFormat,
    /// Extra attempts after the first failure.
    pub retries: u32,
    /// The balancer's own timeouts; `None` takes the service's (see [`AiProxy::timeouts`]).
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub failover: Vec<FailoverCriterion>,
    /// `balancer.algorithm: semantic`: picks the candidate targets per request.
    pub semantic: Option<Arc<crate::balancer::semantic_router::SemanticRouter>>,
    /// `balancer.healthchecks.active` (ai-proxy-advanced): the targets' probes.
    pub healthchecks: Option<crate::config::plugins::ActiveHealthcheck>,
}

type FieldErrors = Vec<(String, String)>;

/// `balancer.healthchecks.active` within Kong's ranges for upstream health checks.
fn check_healthchecks(hc: &crate::config::plugins::ActiveHealthcheck, errors: &mut FieldErrors) {
    let at = |f: &str| format!("config.balancer.healthchecks.active.{f}");
    if !matches!(hc.kind.as_str(), "http" | "https" | "tcp") {
        errors.push((at("type"), "expected one of: http, https, tcp".into()));
    }
    if !hc.http_path.starts_with('/') || hc.http_path.parse::<http::Uri>().is_err() {
        errors.push((at("http_path"), "should start with: /".into()));
    }
    if !(hc.timeout > 0.0 && hc.timeout <= 65_535.0) {
        errors.push((at("timeout"), "value should be between 0 and 65535".into()));
    }
    for (f, v) in [
        ("healthy.interval", hc.healthy.interval),
        ("unhealthy.interval", hc.unhealthy.interval),
    ] {
        if !(0.0..=65_535.0).contains(&v) {
            errors.push((at(f), "value should be between 0 and 65535".into()));
        }
    }
    for (f, statuses) in [
        ("healthy.http_statuses", &hc.healthy.http_statuses),
        ("unhealthy.http_statuses", &hc.unhealthy.http_statuses),
    ] {
        if statuses.iter().any(|s| !(100..=999).contains(s)) {
            errors.push((at(f), "value should be between 100 and 999".into()));
        }
    }
}

/// Kong's default for every upstream timeout (services and the balancer alike), in ms.
const DEFAULT_TIMEOUT_MS: u64 = 60_000;

/// A balancer timeout left at Kong's default defers to the service's, so a service's
/// `read_timeout: 2000` is not silently widened to 60 s by a field nobody set.
fn own_timeout(ms: u64) -> Option<Duration> {
    (ms != DEFAULT_TIMEOUT_MS).then(|| Duration::from_millis(ms.max(1)))
}

/// The upstream timeouts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the connection (TCP and TLS).
    pub connect: Duration,
    /// Between two reads of the answer: headers, body frames, stream events.
    pub read: Duration,
    /// Between two writes of the request.
    pub write: Duration,
}

impl AiProxy {
    /// The error shape this route's clients parse: Anthropic's for Messages clients.
    pub fn error_shape(&self) -> crate::error::ErrorShape {
        match self.llm_format {
            LlmFormat::Anthropic => crate::error::ErrorShape::Anthropic,
            _ => crate::error::ErrorShape::OpenAi,
        }
    }

    /// The timeouts of a request on this plugin: the balancer's where set, else those of the
    /// route's service (`[connect, write, read]` in ms, as Kong applies them to nginx's
    /// upstream), else Kong's 60 s.
    pub fn timeouts(&self, service_ms: Option<[u64; 3]>) -> Timeouts {
        let [connect, write, read] = service_ms.unwrap_or([DEFAULT_TIMEOUT_MS; 3]);
        let ms = |v: u64| Duration::from_millis(v.max(1));
        Timeouts {
            connect: self.connect_timeout.unwrap_or(ms(connect)),
            read: self.read_timeout.unwrap_or(ms(read)),
            write: self.write_timeout.unwrap_or(ms(write)),
        }
    }

    /// Compiles `ai-proxy` (one target; retries on connect errors/timeouts like the service would).
    pub fn from_single(
        id: &str,
        c: &AiProxyConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(AiProxy, FieldErrors), FieldErrors> {
        let t = TargetConfig {
            route_type: c.route_type,
            auth: c.auth.clone(),
            model: c.model.clone(),
            logging: c.logging.clone(),
            weight: 100,
            description: None,
            utterances: Vec::new(),
            metadata: None,
        };
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        check_llm_format(c.llm_format, &[&t], &mut errors);
        let target = compile_target("config", &t, vaults, env, &mut errors, &mut warnings);
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut targets: Vec<Target> = target.into_iter().collect();
        apply_llm_format(c.llm_format, &mut targets);
        Ok((
            AiProxy {
                plugin_id: id.to_string(),
                weights: targets.iter().map(|t| t.weight).collect(),
                balancer: Balancer::round_robin(targets.len()),
                hash_on_header: None,
                aliases: Vec::new(),
                acls: Acls::default(),
                targets: Arc::new(TargetSet {
                    plugin_id: id.to_string(),
                    targets,
                }),
                streaming: c.response_streaming,
                max_body: c.max_request_body_size,
                model_name_header: c.model_name_header,
                llm_format: c.llm_format,
                retries: 0,
                connect_timeout: None,
                read_timeout: None,
                write_timeout: None,
                failover: vec![FailoverCriterion::Error, FailoverCriterion::Timeout],
                semantic: None,
                healthchecks: None,
            },
            warnings,
        ))
    }

    /// Compiles `ai-proxy-advanced`.
    pub fn from_advanced(
        id: &str,
        c: &AiProxyAdvancedConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(AiProxy, FieldErrors), FieldErrors> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let all: Vec<&TargetConfig> = c.targets.iter().collect();
        check_llm_format(c.llm_format, &all, &mut errors);
        if c.targets.is_empty() {
            errors.push(("config.targets".into(), "length must be at least 1".into()));
        }
        if c.balancer.tokens_count_strategy == TokensCountStrategy::LlmAccuracy
            && c.balancer.algorithm == Algorithm::LowestUsage
        {
            errors.push((
                "config.balancer.tokens_count_strategy".into(),
                "'llm-accuracy' needs the ai-llm-as-judge plugin, which tollgate does not have"
                    .into(),
            ));
        }
        for (field, v, max) in [
            ("max_fails", u64::from(c.balancer.max_fails), 32_767),
            ("retries", u64::from(c.balancer.retries), 32_767),
            ("fail_timeout", c.balancer.fail_timeout, 2_147_483_646),
        ] {
            if v > max {
                errors.push((
                    format!("config.balancer.{field}"),
                    format!("value should be between 0 and {max}"),
                ));
            }
        }
        check_healthchecks(&c.balancer.healthchecks.active, &mut errors);
        if !(10..=65536).contains(&c.balancer.slots) {
            errors.push((
                "config.balancer.slots".into(),
                "value should be between 10 and 65536".into(),
            ));
        }
        let hash_on_header = match c.balancer.algorithm {
            Algorithm::ConsistentHashing => {
                match HeaderName::from_bytes(c.balancer.hash_on_header.as_bytes()) {
                    Ok(h) => Some(h),
                    Err(_) => {
                        errors.push((
                            "config.balancer.hash_on_header".into(),
                            "not a valid header name".into(),
                        ));
                        None
                    }
                }
            }
            _ => None,
        };
        let acls = match c.acls.as_ref().filter(|v| !v.is_null()) {
            None => Acls::default(),
            Some(v) => match serde_json::from_value::<AclsConfig>(v.clone()) {
                Ok(a) => Acls::compile(&a, "config.acls").unwrap_or_else(|e| {
                    errors.extend(e);
                    Acls::default()
                }),
                Err(e) => {
                    errors.push(("config.acls".into(), e.to_string()));
                    Acls::default()
                }
            },
        };
        let mut targets = Vec::new();
        for (i, t) in c.targets.iter().enumerate() {
            let path = format!("config.targets[{i}]");
            if t.weight == 0 || t.weight > 65535 {
                errors.push((
                    format!("{path}.weight"),
                    "value should be between 1 and 65535".into(),
                ));
            }
            if let Some(t) = compile_target(&path, t, vaults, env, &mut errors, &mut warnings) {
                targets.push(t);
            }
        }
        // Semantic routing: embeddings provider, vector store, descriptions.
        let b = &c.balancer;
        let semantic = if b.algorithm == Algorithm::Semantic {
            crate::balancer::semantic_router::compile(
                id,
                c.embeddings.as_ref(),
                c.vectordb.as_ref(),
                &c.targets,
                (
                    Duration::from_millis(b.connect_timeout.max(1)),
                    Duration::from_millis(b.read_timeout.max(1)),
                ),
                vaults,
                env,
                &mut errors,
                &mut warnings,
            )
            .map(Arc::new)
        } else {
            for (i, t) in c.targets.iter().enumerate() {
                if !t.utterances.is_empty() {
                    errors.push((
                        format!("config.targets[{i}].utterances"),
                        "only used by balancer.algorithm 'semantic'".into(),
                    ));
                }
            }
            for (field, v) in [("embeddings", &c.embeddings), ("vectordb", &c.vectordb)] {
                if v.as_ref().is_some_and(|v| !v.is_null()) {
                    warnings.push((
                        format!("config.{field}"),
                        "only used by balancer.algorithm 'semantic'; ignored".into(),
                    ));
                }
            }
            None
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        apply_llm_format(c.llm_format, &mut targets);
        let b = &c.balancer;
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let balancer = Balancer::new(Settings {
            algorithm: b.algorithm,
            weights: weights.clone(),
            slots: b.slots,
            latency_strategy: b.latency_strategy,
            tokens_count_strategy: b.tokens_count_strategy,
            costs: targets
                .iter()
                .map(|t| {
                    (
                        t.options.input_cost.unwrap_or(0.0),
                        t.options.output_cost.unwrap_or(0.0),
                    )
                })
                .collect(),
            breaker: Breaker {
                max_fails: b.max_fails,
                fail_timeout: Duration::from_millis(b.fail_timeout.max(1)),
            },
        });
        let mut aliases: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            if let Some(a) = &t.model_alias {
                match aliases.iter_mut().find(|(name, _)| name == a) {
                    Some((_, v)) => v.push(i),
                    None => aliases.push((a.clone(), vec![i])),
                }
            }
        }
        Ok((
            AiProxy {
                plugin_id: id.to_string(),
                weights,
                balancer,
                hash_on_header,
                aliases,
                acls,
                targets: Arc::new(TargetSet {
                    plugin_id: id.to_string(),
                    targets,
                }),
                streaming: c.response_streaming,
                max_body: c.max_request_body_size,
                model_name_header: c.model_name_header,
                llm_format: c.llm_format,
                retries: b.retries,
                connect_timeout: own_timeout(b.connect_timeout),
                read_timeout: own_timeout(b.read_timeout),
                write_timeout: own_timeout(b.write_timeout),
                failover: b.failover_criteria.clone(),
                semantic,
                healthchecks: Some(b.healthchecks.active.clone()),
            },
            warnings,
        ))
    }
}

/// `llm_format` other than openai: the client speaks the provider's own API, so every
/// target must be that provider.
fn check_llm_format(f: LlmFormat, targets: &[&TargetConfig], errors: &mut FieldErrors) {
    let provider = match f {
        LlmFormat::Openai => return,
        LlmFormat::Bedrock => ProviderName::Bedrock,
        LlmFormat::Anthropic => ProviderName::Anthropic,
        LlmFormat::Gemini => ProviderName::Gemini,
        LlmFormat::Cohere => ProviderName::Cohere,
        LlmFormat::Huggingface => ProviderName::Huggingface,
    };
    let ok = |t: &&TargetConfig| {
        (t.model.provider == provider
            && matches!(t.route_type, RouteType::Chat | RouteType::Preserve))
            // Messages clients reach any provider's chat through the translation.
            || (f == LlmFormat::Anthropic && t.route_type == RouteType::Chat)
    };
    if f == LlmFormat::Anthropic && !targets.iter().all(ok) {
        errors.push((
            "config.llm_format".into(),
            "llm_format 'anthropic' needs route_type llm/v1/chat on every target (or preserve with provider 'anthropic')".into(),
        ));
    } else if !targets.iter().all(ok) {
        let name = provider.as_str();
        errors.push((
            "config.llm_format".into(),
            format!(
                "llm_format '{name}' needs provider '{name}' with route_type llm/v1/chat or preserve on every target"
            ),
        ));
    }
}

/// Hugging Face native clients call TGI's `generate` (or the router's OpenAI-compatible
/// paths) themselves: their answers are read as [`Wire::HuggingFace`], which knows both.
/// Anthropic clients reach other providers' chat through the Messages translation.
fn apply_llm_format(f: LlmFormat, targets: &mut [Target]) {
    if f == LlmFormat::Anthropic {
        for t in targets
            .iter_mut()
            .filter(|t| t.provider != ProviderName::Anthropic)
        {
            t.bridge_messages = true;
        }
    }
    if f == LlmFormat::Huggingface {
        for t in targets
            .iter_mut()
            .filter(|t| t.route_type == RouteType::Chat)
        {
            t.wire = Wire::HuggingFace;
            t.use_configured_path();
        }
    }
}

/// Kong's request-format check (spec §3.5 / §8) for the OpenAI dialect.
pub fn check_format(route_type: RouteType, body: &BodyView<'_>) -> Result<(), GatewayError> {
    let bad = |m: &str| Err(GatewayError::BadRequest(m.to_string()));
    match route_type {
        RouteType::Chat | RouteType::Completions => {
            let is_chat = body.kind("messages") == Some(Kind::Array);
            let is_prompt = matches!(body.kind("prompt"), Some(Kind::String | Kind::Array));
            match (is_chat, is_prompt, route_type) {
                (true, true, _) => bad("request matches multiple LLM request formats"),
                // Kong checks for prompts first (normalize-request), then the format.
                (false, false, _) => bad("request body doesn't contain valid prompts"),
                (false, true, RouteType::Chat) => {
                    bad("[llm/v1/completions] message format is not compatible with [llm/v1/chat] route type")
                }
                (true, false, RouteType::Completions) => {
                    bad("[llm/v1/chat] message format is not compatible with [llm/v1/completions] route type")
                }
                _ => Ok(()),
            }
        }
        RouteType::Embeddings => match body.kind("input") {
            Some(Kind::String | Kind::Array | Kind::EmptyArray) => Ok(()),
            _ => bad("request body doesn't contain valid prompts"),
        },
        RouteType::Responses => match body.kind("input") {
            Some(Kind::String | Kind::Array | Kind::EmptyArray) => Ok(()),
            None if body.has("previous_response_id") || body.has("prompt") => Ok(()),
            _ => bad("request body doesn't contain valid prompts"),
        },
        _ => Ok(()),
    }
}

/// The model sent upstream: config name (templated) or the client's; Kong's errors otherwise.
pub fn resolve_model(
    target: &Target,
    client: Option<&str>,
    src: &TemplateSources<'_>,
) -> Result<Option<String>, GatewayError> {
    let configured = match &target.model_name {
        Some(n) => Some(render(n, src)?),
        None => None,
    };
    match (configured, client) {
        (Some(c), Some(m)) if c != m => Err(GatewayError::BadRequest(format!(
            "cannot use own model - must be: {c}"
        ))),
        (Some(c), _) => Ok(Some(c)),
        (None, Some(m)) => Ok(Some(m.to_string())),
        (None, None) if target.route_type == RouteType::Preserve => Ok(None),
        (None, None) => Err(GatewayError::BadRequest(
            "model parameter not found in request, nor in gateway configuration".into(),
        )),
    }
}

/// Renders a templated config value; a value taken from the request may not steer the URL.
pub fn render(value: &str, src: &TemplateSources<'_>) -> Result<String, GatewayError> {
    let out =
        template::render_ai(value, src).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    if out != value && !safe_template_value(&out) {
        return Err(GatewayError::BadRequest(format!(
            "template value for '{value}' contains characters that are not allowed in a model name"
        )));
    }
    Ok(out.into_owned())
}

/// A rendered value must not inject path segments, queries, fragments or a host.
fn safe_template_value(v: &str) -> bool {
    !v.is_empty()
        && !v.contains("..")
        && !v
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '?' | '#' | '@' | '%' | ' ') || c.is_control())
        && !v.contains("://")
}

/// Whether this request streams (`asked` = the body's `stream`), and Kong's 400 when
/// streaming is denied.
pub fn streaming(mode: StreamingMode, asked: bool) -> Result<bool, GatewayError> {
    match mode {
        StreamingMode::Always => Ok(true),
        StreamingMode::Deny if asked => Err(GatewayError::BadRequest(
            "response streaming is not enabled for this LLM".into(),
        )),
        _ => Ok(asked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(rt: RouteType, v: serde_json::Value) -> Result<(), GatewayError> {
        let text = v.to_string();
        check_format(rt, &BodyView::parse(text.as_bytes()).unwrap())
    }

    #[test]
    fn format_checks_use_kong_texts() {
        let msg = |r: Result<(), GatewayError>| r.err().map(|e| e.to_string()).unwrap_or_default();
        let both = json!({"messages":[{"role":"user","content":"x"}],"prompt":"x"});
        assert_eq!(
            msg(check(RouteType::Chat, both)),
            "request matches multiple LLM request formats"
        );
        assert_eq!(
            msg(check(RouteType::Chat, json!({}))),
            "request body doesn't contain valid prompts"
        );
        assert_eq!(
            msg(check(RouteType::Chat, json!({"messages":[]}))),
            "request body doesn't contain valid prompts"
        );
        assert!(msg(check(RouteType::Chat, json!({"prompt":"x"})))
            .contains("not compatible with [llm/v1/chat]"));
        assert!(check(RouteType::Completions, json!({"prompt":"x"})).is_ok());
        assert!(check(RouteType::Responses, json!({"input":[]})).is_ok());
        assert!(check(RouteType::Embeddings, json!({"input":3})).is_err());
    }

    #[test]
    fn template_values_cannot_steer_the_url() {
        for bad in [
            "a/b",
            "..",
            "x?y",
            "x#y",
            "evil.com/x",
            "a b",
            "http://h",
            "%2F",
            "",
        ] {
            assert!(!safe_template_value(bad), "{bad}");
        }
        assert!(safe_template_value("gpt-4o-mini"));
        assert!(safe_template_value("meta-llama:3.1_8b"));
    }

    #[test]
    fn streaming_modes() {
        assert_eq!(streaming(StreamingMode::Always, false).ok(), Some(true));
        assert!(streaming(StreamingMode::Deny, true).is_err());
        assert_eq!(streaming(StreamingMode::Deny, false).ok(), Some(false));
        assert_eq!(streaming(StreamingMode::Allow, true).ok(), Some(true));
    }
}

//! The plugin registry: every plugin this gateway serves, by Kong name, with its PRIORITY,
//! its config type (typed with Kong's field names, validated, described as a JSON Schema)
//! and how a typed config compiles into a [`Plugin`]. Adding a plugin: its file, one
//! entry in each table here, its variant of [`Plugin`], its tests.

use std::sync::Arc;

use serde_json::Value;

use super::ai_proxy::AiProxy;
use super::ai_semantic_cache::{AiSemanticCacheConfig, SemanticCache};
use super::ai_semantic_prompt_guard::{AiSemanticPromptGuardConfig, SemanticPromptGuard};
use super::ai_semantic_response_guard::{AiSemanticResponseGuardConfig, SemanticResponseGuard};
use super::ai_transformer::{AiRequestTransformerConfig, AiResponseTransformerConfig, Transformer};
use super::request_transformer::RequestTransformerConfig;
use super::Plugin;
use crate::config::plugins::{AiProxyAdvancedConfig, AiProxyConfig};
use crate::config::vault::VaultTable;
use crate::config::{collect, ConfigIssue};
use crate::observe::file_log::FileLogConfig;

/// Every plugin this gateway serves, by Kong name, with Kong's static PRIORITY (a route's
/// plugins run highest first; ties in config order): the one place either is written.
pub const KONG_PLUGINS: [(&str, i32); 21] = [
    ("ai-proxy", 770),
    // Before the prompt plugins and ai-proxy, so they see the rewritten body.
    ("ai-request-transformer", 777),
    // After ai-proxy, as Kong runs it.
    ("ai-response-transformer", 768),
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
    // After the prompt plugins (it caches what goes upstream), before ai-proxy answers.
    ("ai-semantic-cache", 765),
    // Before the prompt template, decorator and guards, as in Kong.
    ("ai-semantic-prompt-guard", 775),
    // Kong does not publish it: next to its prompt twin, so it turns streaming off before
    // the cache and ai-proxy read the body.
    ("ai-semantic-response-guard", 775),
    // After authentication and the quotas (Kong's figure is not in its docs), before the
    // AI plugins, which MCP routes do not combine with.
    ("ai-mcp-proxy", 510),
];

/// Kong's PRIORITY of the plugin named `name` (0 for one this gateway does not serve).
pub fn priority(name: &str) -> i32 {
    KONG_PLUGINS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, p)| *p)
}

/// A typed plugin config, one variant per implemented plugin.
#[derive(Debug, Clone)]
pub enum PluginConfig {
    AiProxy(Box<AiProxyConfig>),
    AiProxyAdvanced(Box<AiProxyAdvancedConfig>),
    RequestTransformer(Box<RequestTransformerConfig>),
    FileLog(FileLogConfig),
    KeyAuth(super::key_auth::KeyAuthConfig),
    RateLimiting(Box<super::rate_limiting::RateLimitingConfig>),
    AiRateLimiting(Box<super::ai_rate_limiting::AiRateLimitingConfig>),
    PromptTemplate(Box<super::ai_prompt_template::AiPromptTemplateConfig>),
    PromptDecorator(Box<super::ai_prompt_decorator::AiPromptDecoratorConfig>),
    PromptGuard(Box<super::ai_prompt_guard::AiPromptGuardConfig>),
    PromptLength(super::ai_prompt_length::AiPromptLengthConfig),
    Sanitizer(Box<super::ai_sanitizer::AiSanitizerConfig>),
    Prometheus(super::prometheus::PrometheusConfig),
    HttpLog(Box<crate::observe::http_log::HttpLogConfig>),
    OpenTelemetry(Box<crate::observe::otel::OtelConfig>),
    AiRequestTransformer(Box<AiRequestTransformerConfig>),
    AiResponseTransformer(Box<AiResponseTransformerConfig>),
    SemanticCache(Box<AiSemanticCacheConfig>),
    SemanticPromptGuard(Box<AiSemanticPromptGuardConfig>),
    SemanticResponseGuard(Box<AiSemanticResponseGuardConfig>),
    McpProxy(Box<super::ai_mcp_proxy::AiMcpProxyConfig>),
}

/// Kong plugins Tollgate knows by name but does not implement yet (a clearer error than "unknown").
const KNOWN_UNIMPLEMENTED: &[&str] = &[
    "acl",
    "cors",
    "request-size-limiting",
    "response-transformer",
];

/// A plugin config error: the path inside `config` and the message.
pub type FieldError = (String, String);

/// Types `config` for plugin `name`; errors carry paths relative to the plugin (`config.…`).
pub fn parse(name: &str, config: Option<&Value>) -> Result<PluginConfig, Vec<FieldError>> {
    parse_unhinted(name, config).map_err(|e| with_hints(name, e))
}

fn parse_unhinted(name: &str, config: Option<&Value>) -> Result<PluginConfig, Vec<FieldError>> {
    let empty = Value::Object(Default::default());
    let config = match config {
        Some(Value::Null) | None => &empty,
        Some(c) => c,
    };
    match name {
        "ai-proxy" => typed::<AiProxyConfig>(config).map(|c| PluginConfig::AiProxy(Box::new(c))),
        "ai-proxy-advanced" => typed::<AiProxyAdvancedConfig>(config)
            .map(|c| PluginConfig::AiProxyAdvanced(Box::new(c))),
        "request-transformer" => {
            let c = typed::<RequestTransformerConfig>(config)?;
            let errs: Vec<FieldError> = c
                .validate()
                .into_iter()
                .map(|(p, m)| (format!("config.{p}"), m))
                .collect();
            if errs.is_empty() {
                Ok(PluginConfig::RequestTransformer(Box::new(c)))
            } else {
                Err(errs)
            }
        }
        "file-log" => typed::<FileLogConfig>(config).map(PluginConfig::FileLog),
        "key-auth" => {
            let c = typed::<super::key_auth::KeyAuthConfig>(config)?;
            let errs: Vec<FieldError> = c
                .validate()
                .into_iter()
                .map(|(p, m)| (format!("config.{p}"), m))
                .collect();
            if errs.is_empty() {
                Ok(PluginConfig::KeyAuth(c))
            } else {
                Err(errs)
            }
        }
        "rate-limiting" => validated(
            config,
            super::rate_limiting::RateLimitingConfig::validate,
            |c| PluginConfig::RateLimiting(Box::new(c)),
        ),
        "ai-rate-limiting-advanced" => validated(
            config,
            super::ai_rate_limiting::AiRateLimitingConfig::validate,
            |c| PluginConfig::AiRateLimiting(Box::new(c)),
        ),
        "ai-prompt-template" => validated(
            config,
            super::ai_prompt_template::AiPromptTemplateConfig::validate,
            |c| PluginConfig::PromptTemplate(Box::new(c)),
        ),
        "ai-prompt-decorator" => validated(
            config,
            super::ai_prompt_decorator::AiPromptDecoratorConfig::validate,
            |c| PluginConfig::PromptDecorator(Box::new(c)),
        ),
        "ai-prompt-guard" => validated(
            config,
            super::ai_prompt_guard::AiPromptGuardConfig::validate,
            |c| PluginConfig::PromptGuard(Box::new(c)),
        ),
        "ai-prompt-length-guard" => validated(
            config,
            super::ai_prompt_length::AiPromptLengthConfig::validate,
            PluginConfig::PromptLength,
        ),
        "ai-sanitizer" => validated(
            config,
            super::ai_sanitizer::AiSanitizerConfig::validate,
            |c| PluginConfig::Sanitizer(Box::new(c)),
        ),
        "http-log" => {
            let c = typed::<crate::observe::http_log::HttpLogConfig>(config)?;
            checked(c.validate(), || PluginConfig::HttpLog(Box::new(c.clone())))
        }
        "opentelemetry" => validated(config, crate::observe::otel::OtelConfig::validate, |c| {
            PluginConfig::OpenTelemetry(Box::new(c))
        }),
        "prometheus" => {
            typed::<super::prometheus::PrometheusConfig>(config).map(PluginConfig::Prometheus)
        }
        "ai-request-transformer" => validated(config, AiRequestTransformerConfig::validate, |c| {
            PluginConfig::AiRequestTransformer(Box::new(c))
        }),
        "ai-response-transformer" => {
            validated(config, AiResponseTransformerConfig::validate, |c| {
                PluginConfig::AiResponseTransformer(Box::new(c))
            })
        }
        "ai-semantic-cache" => validated(config, AiSemanticCacheConfig::validate, |c| {
            PluginConfig::SemanticCache(Box::new(c))
        }),
        "ai-semantic-prompt-guard" => {
            validated(config, AiSemanticPromptGuardConfig::validate, |c| {
                PluginConfig::SemanticPromptGuard(Box::new(c))
            })
        }
        "ai-mcp-proxy" => validated(
            config,
            super::ai_mcp_proxy::AiMcpProxyConfig::validate,
            |c| PluginConfig::McpProxy(Box::new(c)),
        ),
        "ai-semantic-response-guard" => {
            validated(config, AiSemanticResponseGuardConfig::validate, |c| {
                PluginConfig::SemanticResponseGuard(Box::new(c))
            })
        }
        n if KNOWN_UNIMPLEMENTED.contains(&n) => Err(vec![(
            "name".into(),
            format!("plugin '{n}' is not supported by tollgate yet"),
        )]),
        n => Err(vec![(
            "name".into(),
            format!("plugin '{n}' not enabled; is it installed?"),
        )]),
    }
}

/// The typed config of a plugin whose `validate` checks what serde cannot, wrapped as its
/// variant; every error with its path under the plugin.
fn validated<T: serde::de::DeserializeOwned>(
    config: &Value,
    validate: fn(&T) -> Vec<FieldError>,
    wrap: fn(T) -> PluginConfig,
) -> Result<PluginConfig, Vec<FieldError>> {
    let c = typed::<T>(config)?;
    checked(validate(&c), || wrap(c))
}

/// The config when `errs` (paths relative to `config`) is empty.
fn checked(
    errs: Vec<FieldError>,
    ok: impl FnOnce() -> PluginConfig,
) -> Result<PluginConfig, Vec<FieldError>> {
    if errs.is_empty() {
        return Ok(ok());
    }
    Err(errs
        .into_iter()
        .map(|(p, m)| match p.as_str() {
            "" | "config" => ("config".to_string(), m),
            _ => (format!("config.{p}"), m),
        })
        .collect())
}

/// The typed config, or every error in it (paths from `config`).
fn typed<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T, Vec<FieldError>> {
    collect::deserialize_all::<T>(config).map_err(|errors| {
        errors
            .into_iter()
            .map(|(p, m)| {
                let path = if p.is_empty() {
                    "config".to_string()
                } else {
                    format!("config.{p}")
                };
                (path, m)
            })
            .collect()
    })
}

/// Adds a "did you mean" hint to each unknown-field error of plugin `name`'s config: the
/// same field where the config's schema has it, else the closest name at that level.
fn with_hints(name: &str, errors: Vec<FieldError>) -> Vec<FieldError> {
    let known = config_schema(name)
        .map(|s| collect::schema_field_paths(s.as_value()))
        .unwrap_or_default();
    errors
        .into_iter()
        .map(
            |(path, message)| match collect::did_you_mean(&path, &message, "config", &known) {
                Some(hint) => (path, format!("{message}; {hint}")),
                None => (path, message),
            },
        )
        .collect()
}

/// The JSON Schema of plugin `name`'s config (the types it is parsed with), for the plugins
/// this gateway serves.
pub fn config_schema(name: &str) -> Option<schemars::Schema> {
    use schemars::schema_for;
    Some(match name {
        "ai-proxy" => schema_for!(AiProxyConfig),
        "ai-proxy-advanced" => schema_for!(AiProxyAdvancedConfig),
        "request-transformer" => schema_for!(RequestTransformerConfig),
        "file-log" => schema_for!(FileLogConfig),
        "key-auth" => schema_for!(super::key_auth::KeyAuthConfig),
        "rate-limiting" => schema_for!(super::rate_limiting::RateLimitingConfig),
        "ai-rate-limiting-advanced" => {
            schema_for!(super::ai_rate_limiting::AiRateLimitingConfig)
        }
        "ai-prompt-template" => {
            schema_for!(super::ai_prompt_template::AiPromptTemplateConfig)
        }
        "ai-prompt-decorator" => {
            schema_for!(super::ai_prompt_decorator::AiPromptDecoratorConfig)
        }
        "ai-prompt-length-guard" => {
            schema_for!(super::ai_prompt_length::AiPromptLengthConfig)
        }
        "http-log" => schema_for!(crate::observe::http_log::HttpLogConfig),
        "opentelemetry" => schema_for!(crate::observe::otel::OtelConfig),
        "prometheus" => schema_for!(super::prometheus::PrometheusConfig),
        "ai-sanitizer" => schema_for!(super::ai_sanitizer::AiSanitizerConfig),
        "ai-prompt-guard" => schema_for!(super::ai_prompt_guard::AiPromptGuardConfig),
        "ai-request-transformer" => schema_for!(AiRequestTransformerConfig),
        "ai-response-transformer" => schema_for!(AiResponseTransformerConfig),
        "ai-semantic-cache" => schema_for!(AiSemanticCacheConfig),
        "ai-semantic-prompt-guard" => schema_for!(AiSemanticPromptGuardConfig),
        "ai-semantic-response-guard" => schema_for!(AiSemanticResponseGuardConfig),
        "ai-mcp-proxy" => schema_for!(super::ai_mcp_proxy::AiMcpProxyConfig),
        _ => return None,
    })
}

/// A typed config as JSON (the Admin API shows it with Kong's defaults filled in).
pub fn to_json(c: &PluginConfig) -> Value {
    let v = match c {
        PluginConfig::AiProxy(c) => serde_json::to_value(c),
        PluginConfig::AiProxyAdvanced(c) => serde_json::to_value(c),
        PluginConfig::RequestTransformer(c) => serde_json::to_value(c),
        PluginConfig::FileLog(c) => serde_json::to_value(c),
        PluginConfig::KeyAuth(c) => serde_json::to_value(c),
        PluginConfig::RateLimiting(c) => serde_json::to_value(c),
        PluginConfig::AiRateLimiting(c) => serde_json::to_value(c),
        PluginConfig::PromptTemplate(c) => serde_json::to_value(c),
        PluginConfig::PromptDecorator(c) => serde_json::to_value(c),
        PluginConfig::PromptGuard(c) => serde_json::to_value(c),
        PluginConfig::PromptLength(c) => serde_json::to_value(c),
        PluginConfig::Sanitizer(c) => serde_json::to_value(c),
        PluginConfig::Prometheus(c) => serde_json::to_value(c),
        PluginConfig::HttpLog(c) => serde_json::to_value(c),
        PluginConfig::OpenTelemetry(c) => serde_json::to_value(c),
        PluginConfig::AiRequestTransformer(c) => serde_json::to_value(c),
        PluginConfig::AiResponseTransformer(c) => serde_json::to_value(c),
        PluginConfig::SemanticCache(c) => serde_json::to_value(c),
        PluginConfig::SemanticPromptGuard(c) => serde_json::to_value(c),
        PluginConfig::SemanticResponseGuard(c) => serde_json::to_value(c),
        PluginConfig::McpProxy(c) => serde_json::to_value(c),
    };
    v.unwrap_or(Value::Null)
}

/// A compiled plugin and the warnings its config gave.
pub type Compiled = (Plugin, Vec<ConfigIssue>);

/// Compiles a typed config (of the instance `id`, at config `path`): errors and warnings
/// name the field.
pub fn compile(
    (path, route): (&str, Option<&str>),
    id: &str,
    typed: PluginConfig,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Compiled, Vec<ConfigIssue>> {
    let issues = |errs: Vec<(String, String)>| {
        errs.into_iter()
            .map(|(f, m)| ConfigIssue {
                path: format!("{path}.{f}"),
                message: m,
            })
            .collect::<Vec<_>>()
    };
    match typed {
        PluginConfig::AiProxy(c) => {
            let (ai, warnings) = AiProxy::from_single(id, &c, vaults, env).map_err(issues)?;
            Ok((Plugin::AiProxy(Arc::new(ai)), issues(warnings)))
        }
        PluginConfig::AiProxyAdvanced(c) => {
            let (ai, warnings) = AiProxy::from_advanced(id, &c, vaults, env).map_err(issues)?;
            Ok((Plugin::AiProxy(Arc::new(ai)), issues(warnings)))
        }
        PluginConfig::RequestTransformer(c) => Ok((Plugin::RequestTransformer(c), Vec::new())),
        PluginConfig::KeyAuth(c) => Ok((
            Plugin::KeyAuth(Arc::new(super::key_auth::KeyAuth::new(c))),
            Vec::new(),
        )),
        PluginConfig::RateLimiting(c) => {
            let rl = super::rate_limiting::RateLimiting::new(id, *c, vaults, env)
                .map_err(|e| issues(config_paths(e)))?;
            Ok((Plugin::RateLimiting(Arc::new(rl)), Vec::new()))
        }
        PluginConfig::AiRateLimiting(c) => {
            let rl = super::ai_rate_limiting::AiRateLimiting::new(id, *c, vaults, env)
                .map_err(|e| issues(config_paths(e)))?;
            Ok((Plugin::AiRateLimiting(Arc::new(rl)), Vec::new()))
        }
        PluginConfig::PromptTemplate(c) => {
            let t = super::ai_prompt_template::PromptTemplates::new(&c)
                .map_err(|e| issues(config_paths(e)))?;
            Ok((Plugin::PromptTemplate(Arc::new(t)), Vec::new()))
        }
        PluginConfig::PromptDecorator(c) => Ok((Plugin::PromptDecorator(Arc::new(*c)), Vec::new())),
        PluginConfig::PromptGuard(c) => {
            let g = super::ai_prompt_guard::PromptGuard::new(&c)
                .map_err(|e| issues(config_paths(e)))?;
            Ok((Plugin::PromptGuard(Arc::new(g)), Vec::new()))
        }
        PluginConfig::PromptLength(c) => {
            crate::llm::tokens::warm_up();
            Ok((Plugin::PromptLength(Arc::new(c)), Vec::new()))
        }
        PluginConfig::Sanitizer(c) => {
            let s = super::ai_sanitizer::Sanitizer::new(&c).map_err(|e| issues(config_paths(e)))?;
            Ok((Plugin::Sanitizer(Arc::new(s)), Vec::new()))
        }
        PluginConfig::Prometheus(c) => Ok((Plugin::Prometheus(Arc::new(c)), Vec::new())),
        PluginConfig::OpenTelemetry(c) => Ok((
            Plugin::OpenTelemetry(Arc::new(crate::observe::otel::Otel::new(*c))),
            Vec::new(),
        )),
        PluginConfig::HttpLog(c) => {
            let spill = crate::observe::http_log::spill_dir();
            let sink = crate::observe::http_log::HttpLogSink::new(id, &c, spill);
            Ok((Plugin::HttpLog(sink), Vec::new()))
        }
        PluginConfig::FileLog(c) => {
            let sink = crate::observe::file_log::compile(&c).map_err(issues)?;
            Ok((Plugin::FileLog(sink), Vec::new()))
        }
        PluginConfig::AiRequestTransformer(c) => {
            let t = Transformer::request(&c, vaults, env).map_err(|e| issues(config_paths(e)))?;
            Ok((Plugin::AiRequestTransformer(Arc::new(t)), Vec::new()))
        }
        PluginConfig::AiResponseTransformer(c) => {
            let t = Transformer::response(&c, vaults, env).map_err(|e| issues(config_paths(e)))?;
            Ok((Plugin::AiResponseTransformer(Arc::new(t)), Vec::new()))
        }
        PluginConfig::SemanticCache(c) => {
            let (cache, warnings) = SemanticCache::compile(id, *c, vaults, env).map_err(issues)?;
            Ok((Plugin::SemanticCache(Arc::new(cache)), issues(warnings)))
        }
        PluginConfig::SemanticPromptGuard(c) => {
            let (guard, warnings) =
                SemanticPromptGuard::compile(id, *c, vaults, env).map_err(issues)?;
            Ok((
                Plugin::SemanticPromptGuard(Arc::new(guard)),
                issues(warnings),
            ))
        }
        PluginConfig::McpProxy(c) => {
            let m = super::ai_mcp_proxy::McpProxy::compile(*c, route).map_err(issues)?;
            Ok((Plugin::McpProxy(Arc::new(m)), Vec::new()))
        }
        PluginConfig::SemanticResponseGuard(c) => {
            let (guard, warnings) =
                SemanticResponseGuard::compile(id, *c, vaults, env).map_err(issues)?;
            Ok((
                Plugin::SemanticResponseGuard(Arc::new(guard)),
                issues(warnings),
            ))
        }
    }
}

/// Field errors relative to `config` as paths under the plugin.
fn config_paths(errs: Vec<(String, String)>) -> Vec<(String, String)> {
    errs.into_iter()
        .map(|(p, m)| match p.as_str() {
            "" | "config" => ("config".to_string(), m),
            _ => (format!("config.{p}"), m),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plugins::StreamingMode;
    use serde_json::json;

    #[test]
    fn ai_proxy_defaults() {
        let c = parse(
            "ai-proxy",
            Some(&json!({"route_type":"llm/v1/chat","model":{"provider":"openai"}})),
        );
        let Ok(PluginConfig::AiProxy(c)) = c else {
            panic!("{c:?}")
        };
        assert_eq!(c.max_request_body_size, 1_048_576);
        assert!(c.model_name_header);
        assert_eq!(c.response_streaming, StreamingMode::Allow);
    }

    #[test]
    fn unknown_variant_has_path() {
        let e = parse(
            "ai-proxy",
            Some(&json!({"route_type":"llm/v1/chat","model":{"provider":"opena1"}})),
        )
        .err()
        .unwrap_or_default();
        assert_eq!(e[0].0, "config.model.provider");
        assert!(e[0].1.starts_with("unknown variant `opena1`"), "{}", e[0].1);
    }

    #[test]
    fn unknown_field_and_plugin() {
        let e = parse(
            "ai-proxy",
            Some(&json!({"route_type":"llm/v1/chat","model":{"provider":"openai"},"bogus":1})),
        )
        .err()
        .unwrap_or_default();
        assert_eq!(e[0].0, "config.bogus");
        assert!(e[0].1.contains("unknown field `bogus`"));
        let e = parse("nope", None).err().unwrap_or_default();
        assert_eq!(e[0].0, "name");
    }

    #[test]
    fn nulls_mean_defaults() {
        let c = parse(
            "ai-proxy-advanced",
            Some(
                &json!({"targets":[{"route_type":"llm/v1/chat","model":{"provider":"openai","options":null},"auth":null}],
                "balancer": null, "embeddings": null, "vectordb": null}),
            ),
        );
        let Ok(PluginConfig::AiProxyAdvanced(c)) = c else {
            panic!("{c:?}")
        };
        assert_eq!(c.balancer.retries, 5);
        assert_eq!(c.targets[0].weight, 100);
    }
}

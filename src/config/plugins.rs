//! Typed plugin configs, Kong's field names and defaults; `config` of each plugin instance is
//! deserialized into one of these with its field path kept for error messages.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::plugins::request_transformer::RequestTransformerConfig;

/// Null in a decK dump means "use the default", as Kong's schema does.
pub(crate) fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Kong's `route_type` values (all accepted by the schema; unsupported ones are refused at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
pub enum RouteType {
    #[serde(rename = "llm/v1/chat")]
    Chat,
    #[serde(rename = "llm/v1/completions")]
    Completions,
    #[serde(rename = "llm/v1/embeddings")]
    Embeddings,
    #[serde(rename = "llm/v1/responses")]
    Responses,
    #[serde(rename = "preserve")]
    Preserve,
    #[serde(rename = "llm/v1/files")]
    Files,
    #[serde(rename = "llm/v1/batches")]
    Batches,
    #[serde(rename = "llm/v1/assistants")]
    Assistants,
    #[serde(rename = "audio/v1/audio/speech")]
    AudioSpeech,
    #[serde(rename = "audio/v1/audio/transcriptions")]
    AudioTranscriptions,
    #[serde(rename = "audio/v1/audio/translations")]
    AudioTranslations,
    #[serde(rename = "image/v1/images/generations")]
    ImageGenerations,
    #[serde(rename = "image/v1/images/edits")]
    ImageEdits,
    #[serde(rename = "realtime/v1/realtime")]
    Realtime,
    #[serde(rename = "video/v1/videos/generations")]
    VideoGenerations,
}

impl RouteType {
    /// Kong's name for the route type.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteType::Chat => "llm/v1/chat",
            RouteType::Completions => "llm/v1/completions",
            RouteType::Embeddings => "llm/v1/embeddings",
            RouteType::Responses => "llm/v1/responses",
            RouteType::Preserve => "preserve",
            RouteType::Files => "llm/v1/files",
            RouteType::Batches => "llm/v1/batches",
            RouteType::Assistants => "llm/v1/assistants",
            RouteType::AudioSpeech => "audio/v1/audio/speech",
            RouteType::AudioTranscriptions => "audio/v1/audio/transcriptions",
            RouteType::AudioTranslations => "audio/v1/audio/translations",
            RouteType::ImageGenerations => "image/v1/images/generations",
            RouteType::ImageEdits => "image/v1/images/edits",
            RouteType::Realtime => "realtime/v1/realtime",
            RouteType::VideoGenerations => "video/v1/videos/generations",
        }
    }
    /// Whether Tollgate implements this route type yet.
    pub fn supported(self) -> bool {
        matches!(
            self,
            RouteType::Chat
                | RouteType::Completions
                | RouteType::Embeddings
                | RouteType::Responses
                | RouteType::Preserve
        )
    }
}

/// Kong's `model.provider` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    Openai,
    Azure,
    Anthropic,
    Cohere,
    Mistral,
    Llama2,
    Gemini,
    Bedrock,
    Huggingface,
    Cerebras,
    Dashscope,
    Xai,
    Databricks,
    Deepseek,
    Ollama,
    Vllm,
}

impl ProviderName {
    /// Kong's name for the provider.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::Openai => "openai",
            ProviderName::Azure => "azure",
            ProviderName::Anthropic => "anthropic",
            ProviderName::Cohere => "cohere",
            ProviderName::Mistral => "mistral",
            ProviderName::Llama2 => "llama2",
            ProviderName::Gemini => "gemini",
            ProviderName::Bedrock => "bedrock",
            ProviderName::Huggingface => "huggingface",
            ProviderName::Cerebras => "cerebras",
            ProviderName::Dashscope => "dashscope",
            ProviderName::Xai => "xai",
            ProviderName::Databricks => "databricks",
            ProviderName::Deepseek => "deepseek",
            ProviderName::Ollama => "ollama",
            ProviderName::Vllm => "vllm",
        }
    }
}

/// `response_streaming`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum StreamingMode {
    #[default]
    Allow,
    Deny,
    Always,
}

/// `llm_format`: the API the client speaks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LlmFormat {
    #[default]
    Openai,
    Bedrock,
    Gemini,
    Cohere,
    Huggingface,
    Anthropic,
}

/// `genai_category` (analytics only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
pub enum GenaiCategory {
    #[serde(rename = "text/generation")]
    TextGeneration,
    #[serde(rename = "text/embeddings")]
    TextEmbeddings,
    #[serde(rename = "image/generation")]
    ImageGeneration,
    #[serde(rename = "audio/speech")]
    AudioSpeech,
    #[serde(rename = "audio/transcription")]
    AudioTranscription,
    #[serde(rename = "video/generation")]
    VideoGeneration,
    #[serde(rename = "realtime/generation")]
    RealtimeGeneration,
}

/// `auth.param_location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamLocation {
    Query,
    Body,
}

/// ai-proxy `auth` record (every string referenceable).
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub header_name: Option<String>,
    pub header_value: Option<String>,
    pub param_name: Option<String>,
    pub param_value: Option<String>,
    pub param_location: Option<ParamLocation>,
    #[serde(default, deserialize_with = "nullable")]
    pub allow_override: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub gcp_use_service_account: bool,
    pub gcp_service_account_json: Option<String>,
    pub gcp_metadata_url: Option<String>,
    pub gcp_oauth_token_url: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub azure_use_managed_identity: bool,
    pub azure_client_id: Option<String>,
    pub azure_client_secret: Option<String>,
    pub azure_tenant_id: Option<String>,
}

/// ai-proxy `model` record.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub provider: ProviderName,
    pub name: Option<String>,
    pub model_alias: Option<String>,
    pub options: Option<ModelOptions>,
}

/// ai-proxy `model.options`; provider-specific sub-records are kept as given for later providers.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelOptions {
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub input_cost: Option<f64>,
    pub output_cost: Option<f64>,
    pub upstream_url: Option<String>,
    pub upstream_path: Option<String>,
    pub anthropic_version: Option<String>,
    pub azure_instance: Option<String>,
    pub azure_deployment_id: Option<String>,
    pub azure_api_version: Option<String>,
    pub mistral_format: Option<String>,
    pub llama2_format: Option<String>,
    pub gemini: Option<GeminiOptions>,
    pub bedrock: Option<BedrockOptions>,
    pub huggingface: Option<HuggingfaceOptions>,
    pub cohere: Option<CohereOptions>,
    pub dashscope: Option<DashscopeOptions>,
    pub databricks: Option<DatabricksOptions>,
    pub embeddings_dimensions: Option<u64>,
    pub cache_read_cost: Option<f64>,
    pub cache_write_cost: Option<f64>,
    pub cache_write_cost_list: Option<Value>,
    pub context_window_factor: Option<Value>,
    pub service_tier_factor: Option<Value>,
}

/// ai-proxy `model.options.bedrock` (Kong's names; which ones tollgate honours is checked
/// when the target is compiled).
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BedrockOptions {
    pub aws_region: Option<String>,
    pub aws_assume_role_arn: Option<String>,
    pub aws_role_session_name: Option<String>,
    pub aws_sts_endpoint_url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub embeddings_normalize: bool,
    /// `standard` or `optimized`: forced into every Converse request's `performanceConfig`.
    pub performance_config_latency: Option<String>,
    pub batch_bucket_prefix: Option<String>,
    pub batch_role_arn: Option<String>,
    pub video_output_s3_uri: Option<String>,
}

/// `model.options.huggingface`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HuggingfaceOptions {
    pub use_cache: Option<bool>,
    pub wait_for_model: Option<bool>,
}

/// Cohere's `embedding_input_type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CohereInputType {
    Classification,
    Clustering,
    Image,
    SearchDocument,
    SearchQuery,
}

impl CohereInputType {
    /// The value Cohere's Embed API takes.
    pub fn as_str(self) -> &'static str {
        match self {
            CohereInputType::Classification => "classification",
            CohereInputType::Clustering => "clustering",
            CohereInputType::Image => "image",
            CohereInputType::SearchDocument => "search_document",
            CohereInputType::SearchQuery => "search_query",
        }
    }
}

/// `model.options.cohere`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CohereOptions {
    pub embedding_input_type: Option<CohereInputType>,
    pub wait_for_model: Option<bool>,
}

/// `model.options.dashscope`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DashscopeOptions {
    /// The international endpoint (default) or mainland China's.
    pub international: Option<bool>,
}

/// `model.options.databricks`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabricksOptions {
    /// The workspace host's first label (`dbc-xxx-yyy` in `dbc-xxx-yyy.cloud.databricks.com`).
    pub workspace_instance_id: Option<String>,
}

/// `model.options.gemini`: all three of `api_endpoint`, `project_id`, `location_id` select
/// Vertex AI instead of AI Studio.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeminiOptions {
    pub api_endpoint: Option<String>,
    pub project_id: Option<String>,
    pub location_id: Option<String>,
    /// Kong EE 3.12 Model Garden endpoints (refused: not supported yet).
    pub endpoint_id: Option<String>,
}

/// ai-proxy `logging`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default, deserialize_with = "nullable")]
    pub log_statistics: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub log_payloads: bool,
}

fn default_true() -> bool {
    true
}

/// Kong EE's `max_request_body_size` default for the AI plugins (OSS used 8192, which
/// breaks Codex's ~40 KB requests).
pub(crate) const AI_BODY_SIZE: u64 = 1_048_576;

pub(crate) fn default_body_size() -> u64 {
    AI_BODY_SIZE
}

/// `max_request_body_size` with null meaning the (non-zero) default.
pub(crate) fn nullable_body_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or(AI_BODY_SIZE))
}

/// The `ai-proxy` plugin config.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiProxyConfig {
    pub route_type: RouteType,
    #[serde(default, deserialize_with = "nullable")]
    pub auth: AuthConfig,
    pub model: ModelConfig,
    #[serde(default, deserialize_with = "nullable")]
    pub logging: LoggingConfig,
    #[serde(default, deserialize_with = "nullable")]
    pub response_streaming: StreamingMode,
    #[serde(default = "default_body_size")]
    pub max_request_body_size: u64,
    #[serde(default = "default_true")]
    pub model_name_header: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub llm_format: LlmFormat,
    pub genai_category: Option<GenaiCategory>,
}

/// One ai-proxy-advanced target: the ai-proxy record plus balancing fields.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub route_type: RouteType,
    #[serde(default, deserialize_with = "nullable")]
    pub auth: AuthConfig,
    pub model: ModelConfig,
    #[serde(default, deserialize_with = "nullable")]
    pub logging: LoggingConfig,
    #[serde(default = "default_weight")]
    pub weight: u32,
    pub description: Option<String>,
    pub metadata: Option<Value>,
}

fn default_weight() -> u32 {
    100
}

/// `balancer.algorithm`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    #[default]
    RoundRobin,
    ConsistentHashing,
    LeastConnections,
    LowestLatency,
    LowestUsage,
    Priority,
    Semantic,
}

/// `balancer.latency_strategy`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LatencyStrategy {
    #[default]
    Tpot,
    E2e,
}

/// `balancer.tokens_count_strategy`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum TokensCountStrategy {
    #[default]
    TotalTokens,
    PromptTokens,
    CompletionTokens,
    Cost,
    LlmAccuracy,
}

/// `balancer.failover_criteria` entries (nginx `proxy_next_upstream` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailoverCriterion {
    Error,
    Timeout,
    InvalidHeader,
    #[serde(rename = "http_403")]
    Http403,
    #[serde(rename = "http_404")]
    Http404,
    #[serde(rename = "http_429")]
    Http429,
    #[serde(rename = "http_500")]
    Http500,
    #[serde(rename = "http_502")]
    Http502,
    #[serde(rename = "http_503")]
    Http503,
    #[serde(rename = "http_504")]
    Http504,
    NonIdempotent,
}

/// ai-proxy-advanced `balancer`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BalancerConfig {
    #[serde(default, deserialize_with = "nullable")]
    pub algorithm: Algorithm,
    #[serde(default = "default_hash_header")]
    pub hash_on_header: String,
    #[serde(default, deserialize_with = "nullable")]
    pub latency_strategy: LatencyStrategy,
    #[serde(default, deserialize_with = "nullable")]
    pub tokens_count_strategy: TokensCountStrategy,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_slots")]
    pub slots: u32,
    #[serde(default = "default_timeout")]
    pub connect_timeout: u64,
    #[serde(default = "default_timeout")]
    pub read_timeout: u64,
    #[serde(default = "default_timeout")]
    pub write_timeout: u64,
    #[serde(default = "default_failover")]
    pub failover_criteria: Vec<FailoverCriterion>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_fails: u32,
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: u64,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            algorithm: Algorithm::RoundRobin,
            hash_on_header: default_hash_header(),
            latency_strategy: LatencyStrategy::Tpot,
            tokens_count_strategy: TokensCountStrategy::TotalTokens,
            retries: default_retries(),
            slots: default_slots(),
            connect_timeout: default_timeout(),
            read_timeout: default_timeout(),
            write_timeout: default_timeout(),
            failover_criteria: default_failover(),
            max_fails: 0,
            fail_timeout: default_fail_timeout(),
        }
    }
}

fn default_hash_header() -> String {
    "X-Kong-LLM-Request-ID".into()
}
fn default_retries() -> u32 {
    5
}
fn default_slots() -> u32 {
    10000
}
fn default_timeout() -> u64 {
    60000
}
fn default_fail_timeout() -> u64 {
    10000
}
fn default_failover() -> Vec<FailoverCriterion> {
    vec![FailoverCriterion::Error, FailoverCriterion::Timeout]
}

/// The `ai-proxy-advanced` plugin config.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiProxyAdvancedConfig {
    pub targets: Vec<TargetConfig>,
    #[serde(default, deserialize_with = "nullable")]
    pub balancer: BalancerConfig,
    pub embeddings: Option<Value>,
    pub vectordb: Option<Value>,
    pub acls: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub response_streaming: StreamingMode,
    #[serde(default = "default_body_size")]
    pub max_request_body_size: u64,
    #[serde(default = "default_true")]
    pub model_name_header: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub llm_format: LlmFormat,
    pub genai_category: Option<GenaiCategory>,
}

/// The `file-log` plugin config.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLogConfig {
    pub path: String,
    #[serde(default, deserialize_with = "nullable")]
    pub reopen: bool,
    pub custom_fields_by_lua: Option<serde_json::Map<String, Value>>,
}

/// A typed plugin config, one variant per implemented plugin.
#[derive(Debug, Clone)]
pub enum PluginConfig {
    AiProxy(Box<AiProxyConfig>),
    AiProxyAdvanced(Box<AiProxyAdvancedConfig>),
    RequestTransformer(Box<RequestTransformerConfig>),
    FileLog(FileLogConfig),
    KeyAuth(crate::plugins::key_auth::KeyAuthConfig),
    RateLimiting(Box<crate::plugins::rate_limiting::RateLimitingConfig>),
    AiRateLimiting(Box<crate::plugins::ai_rate_limiting::AiRateLimitingConfig>),
    PromptTemplate(Box<crate::plugins::ai_prompt_template::AiPromptTemplateConfig>),
    PromptDecorator(Box<crate::plugins::ai_prompt_decorator::AiPromptDecoratorConfig>),
    PromptGuard(Box<crate::plugins::ai_prompt_guard::AiPromptGuardConfig>),
    PromptLength(crate::plugins::ai_prompt_length::AiPromptLengthConfig),
    Sanitizer(Box<crate::plugins::ai_sanitizer::AiSanitizerConfig>),
    Prometheus(crate::plugins::prometheus::PrometheusConfig),
    HttpLog(Box<crate::observe::http_log::HttpLogConfig>),
    OpenTelemetry(Box<crate::observe::otel::OtelConfig>),
}

/// Kong plugins Tollgate knows by name but does not implement yet (a clearer error than "unknown").
const KNOWN_UNIMPLEMENTED: &[&str] = &[
    "acl",
    "cors",
    "request-size-limiting",
    "ai-request-transformer",
    "ai-response-transformer",
    "ai-semantic-cache",
    "ai-semantic-prompt-guard",
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
            let c = typed::<crate::plugins::key_auth::KeyAuthConfig>(config)?;
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
        "rate-limiting" => {
            let c = typed::<crate::plugins::rate_limiting::RateLimitingConfig>(config)?;
            checked(c.validate(), || {
                PluginConfig::RateLimiting(Box::new(c.clone()))
            })
        }
        "ai-rate-limiting-advanced" => {
            let c = typed::<crate::plugins::ai_rate_limiting::AiRateLimitingConfig>(config)?;
            checked(c.validate(), || {
                PluginConfig::AiRateLimiting(Box::new(c.clone()))
            })
        }
        "ai-prompt-template" => {
            let c = typed::<crate::plugins::ai_prompt_template::AiPromptTemplateConfig>(config)?;
            checked(c.validate(), || {
                PluginConfig::PromptTemplate(Box::new(c.clone()))
            })
        }
        "ai-prompt-decorator" => {
            let c = typed::<crate::plugins::ai_prompt_decorator::AiPromptDecoratorConfig>(config)?;
            checked(c.validate(), || {
                PluginConfig::PromptDecorator(Box::new(c.clone()))
            })
        }
        "ai-prompt-guard" => {
            let c = typed::<crate::plugins::ai_prompt_guard::AiPromptGuardConfig>(config)?;
            checked(c.validate(), || {
                PluginConfig::PromptGuard(Box::new(c.clone()))
            })
        }
        "ai-prompt-length-guard" => {
            let c = typed::<crate::plugins::ai_prompt_length::AiPromptLengthConfig>(config)?;
            checked(c.validate(), || PluginConfig::PromptLength(c.clone()))
        }
        "ai-sanitizer" => {
            let c = typed::<crate::plugins::ai_sanitizer::AiSanitizerConfig>(config)?;
            checked(c.validate(), || {
                PluginConfig::Sanitizer(Box::new(c.clone()))
            })
        }
        "http-log" => {
            let c = typed::<crate::observe::http_log::HttpLogConfig>(config)?;
            checked(c.validate(), || PluginConfig::HttpLog(Box::new(c.clone())))
        }
        "opentelemetry" => {
            let c = typed::<crate::observe::otel::OtelConfig>(config)?;
            checked(c.validate(), || {
                PluginConfig::OpenTelemetry(Box::new(c.clone()))
            })
        }
        "prometheus" => typed::<crate::plugins::prometheus::PrometheusConfig>(config)
            .map(PluginConfig::Prometheus),
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
    super::collect::deserialize_all::<T>(config).map_err(|errors| {
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
        .map(|s| super::collect::schema_field_paths(s.as_value()))
        .unwrap_or_default();
    errors
        .into_iter()
        .map(|(path, message)| {
            match super::collect::did_you_mean(&path, &message, "config", &known) {
                Some(hint) => (path, format!("{message}; {hint}")),
                None => (path, message),
            }
        })
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
        "key-auth" => schema_for!(crate::plugins::key_auth::KeyAuthConfig),
        "rate-limiting" => schema_for!(crate::plugins::rate_limiting::RateLimitingConfig),
        "ai-rate-limiting-advanced" => {
            schema_for!(crate::plugins::ai_rate_limiting::AiRateLimitingConfig)
        }
        "ai-prompt-template" => {
            schema_for!(crate::plugins::ai_prompt_template::AiPromptTemplateConfig)
        }
        "ai-prompt-decorator" => {
            schema_for!(crate::plugins::ai_prompt_decorator::AiPromptDecoratorConfig)
        }
        "ai-prompt-length-guard" => {
            schema_for!(crate::plugins::ai_prompt_length::AiPromptLengthConfig)
        }
        "http-log" => schema_for!(crate::observe::http_log::HttpLogConfig),
        "opentelemetry" => schema_for!(crate::observe::otel::OtelConfig),
        "prometheus" => schema_for!(crate::plugins::prometheus::PrometheusConfig),
        "ai-sanitizer" => schema_for!(crate::plugins::ai_sanitizer::AiSanitizerConfig),
        "ai-prompt-guard" => schema_for!(crate::plugins::ai_prompt_guard::AiPromptGuardConfig),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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

//! Typed plugin configs, Kong's field names and defaults; `config` of each plugin instance is
//! deserialized into one of these with its field path kept for error messages.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

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
    /// Whether Tollgate implements this route type yet (every one Kong has, now).
    pub fn supported(self) -> bool {
        true
    }

    /// One of the provider's APIs beside chat (files, batches, assistants, audio, images,
    /// videos): the client's request goes to the API's path with its own method and body
    /// (JSON or multipart), and the answer (JSON, audio, video) comes back as it is.
    pub fn is_api(self) -> bool {
        matches!(
            self,
            RouteType::Files
                | RouteType::Batches
                | RouteType::Assistants
                | RouteType::AudioSpeech
                | RouteType::AudioTranscriptions
                | RouteType::AudioTranslations
                | RouteType::ImageGenerations
                | RouteType::ImageEdits
                | RouteType::VideoGenerations
        )
    }

    /// The client's body and the upstream's answer pass as they are (`preserve` and the API
    /// route types): nothing is parsed as a chat request or rebuilt.
    pub fn passes_through(self) -> bool {
        self == RouteType::Preserve || self.is_api()
    }

    /// Answers that report token usage in their JSON (image generation, transcription, a
    /// completed batch).
    pub fn reports_usage(self) -> bool {
        matches!(
            self,
            RouteType::ImageGenerations
                | RouteType::ImageEdits
                | RouteType::AudioTranscriptions
                | RouteType::AudioTranslations
                | RouteType::Batches
        )
    }

    /// The methods an API route type takes (its API's operations: create, list, retrieve,
    /// cancel, delete); other route types take POST (preserve: any).
    pub fn methods(self) -> &'static str {
        match self {
            RouteType::Files | RouteType::Assistants | RouteType::VideoGenerations => {
                "GET, POST, DELETE"
            }
            RouteType::Batches => "GET, POST",
            RouteType::Preserve => "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
            _ => "POST",
        }
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
    /// Tollgate: example prompts for semantic routing, matched like the description.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub utterances: Vec<String>,
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
    /// Active health checks of the targets (a Tollgate extension, with the field names of
    /// Kong's upstream `healthchecks`; Kong's ai-proxy-advanced has only the passive breaker).
    #[serde(default, deserialize_with = "nullable")]
    pub healthchecks: Healthchecks,
}

/// `balancer.healthchecks`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Healthchecks {
    #[serde(default, deserialize_with = "nullable")]
    pub active: ActiveHealthcheck,
}

/// `balancer.healthchecks.active`: a probe of every target, as Kong probes upstream targets.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthcheck {
    /// `http` or `https` (a request to `http_path`, on the target's own scheme) or `tcp` (a
    /// connection only).
    #[serde(default = "default_probe_type", rename = "type")]
    pub kind: String,
    #[serde(default = "default_probe_path")]
    pub http_path: String,
    /// Seconds a probe may take.
    #[serde(default = "default_probe_timeout")]
    pub timeout: f64,
    #[serde(default, deserialize_with = "nullable")]
    pub healthy: HealthyProbes,
    #[serde(default, deserialize_with = "nullable")]
    pub unhealthy: UnhealthyProbes,
}

impl Default for ActiveHealthcheck {
    fn default() -> Self {
        ActiveHealthcheck {
            kind: default_probe_type(),
            http_path: default_probe_path(),
            timeout: default_probe_timeout(),
            healthy: HealthyProbes::default(),
            unhealthy: UnhealthyProbes::default(),
        }
    }
}

/// When a target counts as healthy again (Kong's `healthchecks.active.healthy`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthyProbes {
    /// Seconds between probes of a healthy target (0: not probed).
    #[serde(default, deserialize_with = "nullable")]
    pub interval: f64,
    /// Successful probes in a row that make a downed target healthy (0: never by probes).
    #[serde(default, deserialize_with = "nullable")]
    pub successes: u32,
    #[serde(default = "default_healthy_statuses")]
    pub http_statuses: Vec<u16>,
}

impl Default for HealthyProbes {
    fn default() -> Self {
        HealthyProbes {
            interval: 0.0,
            successes: 0,
            http_statuses: default_healthy_statuses(),
        }
    }
}

/// When a target counts as down (Kong's `healthchecks.active.unhealthy`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnhealthyProbes {
    /// Seconds between probes of a downed target (0: not probed).
    #[serde(default, deserialize_with = "nullable")]
    pub interval: f64,
    /// Probes in a row answered with one of `http_statuses` that take a target down (0: off).
    #[serde(default, deserialize_with = "nullable")]
    pub http_failures: u32,
    /// Probes in a row that could not connect (0: off).
    #[serde(default, deserialize_with = "nullable")]
    pub tcp_failures: u32,
    /// Probes in a row that timed out (0: off).
    #[serde(default, deserialize_with = "nullable")]
    pub timeouts: u32,
    #[serde(default = "default_unhealthy_statuses")]
    pub http_statuses: Vec<u16>,
}

impl Default for UnhealthyProbes {
    fn default() -> Self {
        UnhealthyProbes {
            interval: 0.0,
            http_failures: 0,
            tcp_failures: 0,
            timeouts: 0,
            http_statuses: default_unhealthy_statuses(),
        }
    }
}

fn default_probe_type() -> String {
    "http".into()
}
fn default_probe_path() -> String {
    "/".into()
}
fn default_probe_timeout() -> f64 {
    1.0
}
fn default_healthy_statuses() -> Vec<u16> {
    vec![200, 302]
}
fn default_unhealthy_statuses() -> Vec<u16> {
    vec![429, 404, 500, 501, 502, 503, 504, 505]
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
            healthchecks: Healthchecks::default(),
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

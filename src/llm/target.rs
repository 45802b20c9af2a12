//! The provider catalog: one `ai-proxy` target compiled from its config record — where
//! its requests go (`upstream_url` or the provider's endpoint for the route type), how
//! they authenticate (header, query/body parameter, GCP service account, Azure managed
//! identity or client credentials, AWS SigV4) and
//! which dialect they speak. Pure data built at load; `balancer`, `observe` and the
//! request path read it.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::config::plugins::{
    AuthConfig, LoggingConfig, ModelOptions, ParamLocation, ProviderName, RouteType, TargetConfig,
};
use crate::config::vault::{self, LiveHeader, LiveSecret, Resolved, VaultTable};
use crate::llm::sigv4::{Credentials, Signer};
use crate::llm::{anthropic, bedrock, cohere, gemini, huggingface, ollama, openai};
use crate::net::azure;
use crate::net::cloud_token::{Credential, TokenSource};
use crate::secret::Secret;

type FieldErrors = Vec<(String, String)>;

/// A secret resolved at load, or why it could not be (reported when a request needs it).
pub type SecretSlot = Result<Secret<String>, String>;

/// Credentials injected into upstream requests.
#[derive(Debug)]
pub struct Auth {
    /// The header value is built (and marked sensitive) at load, or when a rotating vault
    /// secret changes.
    pub header: Option<(HeaderName, LiveHeader)>,
    pub param: Option<(String, LiveSecret, ParamLocation)>,
    pub allow_override: bool,
    /// A cloud identity whose OAuth2 token goes in `Authorization` (a GCP service account
    /// for Vertex AI, an Azure identity for Azure OpenAI), or why its credentials could not
    /// be read at load (a vault reference that did not resolve).
    pub cloud_token: Option<Result<Arc<TokenSource>, String>>,
}

/// Where a target's requests go.
#[derive(Debug, Clone)]
pub struct UpstreamBase {
    pub scheme: &'static str,
    /// Shared with each attempt's log entry.
    pub host: std::sync::Arc<str>,
    pub port: u16,
    /// A path given in `upstream_url` (used as-is); otherwise the route type's default.
    pub path: Option<std::sync::Arc<str>>,
    /// The Host header, built once: cloning it per request costs no allocation.
    pub host_header: HeaderValue,
}

impl UpstreamBase {
    /// An upstream at `scheme://host:port` (`host` without IPv6 brackets).
    pub fn new(scheme: &'static str, host: String, port: u16, path: Option<String>) -> Self {
        let mut b = UpstreamBase {
            scheme,
            host: host.into(),
            port,
            path: path.map(Into::into),
            host_header: HeaderValue::from_static(""),
        };
        if let Ok(v) = HeaderValue::from_str(&b.authority()) {
            b.host_header = v;
        }
        b
    }

    /// `host[:port]` for the Host header (default ports omitted, IPv6 in brackets).
    pub fn authority(&self) -> String {
        let default = (self.scheme == "https" && self.port == 443)
            || (self.scheme == "http" && self.port == 80);
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.to_string()
        };
        if default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

use super::Wire;

/// One compiled target.
#[derive(Debug)]
pub struct Target {
    pub route_type: RouteType,
    pub provider: ProviderName,
    pub wire: Wire,
    /// Headers the provider needs besides auth (e.g. `anthropic-version`).
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    pub model_name: Option<String>,
    pub options: ModelOptions,
    pub auth: Auth,
    pub logging: LoggingConfig,
    pub weight: u32,
    /// `model.model_alias`: the client-facing model name that selects this target.
    pub model_alias: Option<String>,
    pub upstream: UpstreamBase,
    /// `upstream.path` is a prefix that the model (and the dialect's method) completes per
    /// request (Gemini, Bedrock, Hugging Face put the model in the path).
    pub model_path: bool,
    /// The user configured the upstream path (`upstream_url` with a path, or
    /// `upstream_path`); otherwise a native client's own path may go upstream.
    pub path_configured: bool,
    /// The upstream path holds a template (a templated Azure deployment), rendered per
    /// request.
    pub templated_path: bool,
    /// A `llm/v1/responses` target whose provider only has chat: requests and answers are
    /// translated (`llm::responses`).
    pub bridge_responses: bool,
    /// A `llm/v1/completions` target whose dialect is translated for chat only: the prompt
    /// goes as a chat message, the answer comes back as a `text_completion`.
    pub bridge_completions: bool,
    /// A chat target of a route whose clients speak Anthropic's Messages API
    /// (`llm_format: anthropic`) but whose provider is not Anthropic: requests and answers
    /// are translated (`llm::messages`).
    pub bridge_messages: bool,
    /// Videos run as the provider's jobs, translated (`llm::video`): Veo, Nova Reel.
    pub video: Option<crate::llm::video::Family>,
    /// AWS SigV4 signing of every upstream request (Bedrock).
    pub sigv4: Option<Signer>,
}

/// The targets of one `ai-proxy(-advanced)` instance: shared by the compiled plugin and
/// each request's log record, which reads the answering target's provider, model and
/// logging settings.
#[derive(Debug)]
pub struct TargetSet {
    /// The plugin instance's id (`ai.proxy.meta.plugin_id`).
    pub plugin_id: String,
    pub targets: Vec<Target>,
}

impl std::ops::Deref for TargetSet {
    type Target = [Target];
    fn deref(&self) -> &[Target] {
        &self.targets
    }
}

impl Target {
    /// Native clients of this provider call its own endpoints (Cohere's, Hugging Face's)
    /// with bodies the gateway does not interpret; their streamed calls are read as streams
    /// whatever content type they come with (the mappers know the framing).
    pub fn native_clients_own_api(&self) -> bool {
        matches!(
            self.provider,
            ProviderName::Cohere | ProviderName::Huggingface
        )
    }

    /// The path of `upstream_url` exactly as configured, without the chat path Kong adds
    /// for Hugging Face (native clients call the endpoint they name, e.g. TGI's `generate`).
    pub fn use_configured_path(&mut self) {
        let configured = self
            .options
            .upstream_url
            .as_deref()
            .and_then(|u| parse_upstream_url(u).ok())
            .and_then(|b| b.path);
        if let Some(p) = configured {
            self.upstream.path = Some(p);
        }
    }

    /// The client's body and the upstream's answer pass as they are: `preserve`, and
    /// OpenAI's other APIs on a provider that speaks them (Gemini's image generation is
    /// translated instead).
    pub fn passes_through(&self) -> bool {
        self.route_type.passes_through() && self.wire == Wire::OpenAi
            || self.route_type == RouteType::Preserve
    }

    /// Requests go upstream as chat translated from another API (Responses, completions,
    /// Messages).
    pub fn bridges_chat(&self) -> bool {
        self.bridge_responses || self.bridge_completions || self.bridge_messages
    }

    /// The provider rejects OpenAI's `stream_options` (Databricks, spec §5.3).
    pub fn rejects_stream_options(&self) -> bool {
        self.provider == ProviderName::Databricks
    }

    /// The upstream is OpenAI's own Responses API, which has a WebSocket mode to relay to
    /// (no bridge, no request signing or token exchange in between).
    pub fn has_openai_responses_websocket(&self) -> bool {
        self.route_type == RouteType::Responses
            && self.provider == ProviderName::Openai
            && self.wire == Wire::OpenAi
            && !self.bridge_responses
            && self.sigv4.is_none()
            && self.auth.cloud_token.is_none()
    }
}

/// Which providers serve an API route type (where the provider has that API).
fn api_served(provider: ProviderName, rt: RouteType) -> bool {
    match provider {
        ProviderName::Openai => true,
        ProviderName::Azure => true,
        // Hugging Face's router serves OpenAI's Videos API for its video models.
        ProviderName::Huggingface => rt == RouteType::VideoGenerations,
        // Gemini's and Bedrock's image models are translated (`llm::gemini_image`,
        // `llm::bedrock_image`).
        ProviderName::Xai => rt == RouteType::ImageGenerations,
        // Veo and Nova Reel videos run as the providers' own jobs (`llm::video`).
        ProviderName::Gemini | ProviderName::Bedrock => {
            matches!(
                rt,
                RouteType::ImageGenerations | RouteType::VideoGenerations
            )
        }
        _ => false,
    }
}

/// The api-version of Azure OpenAI's Realtime API when `azure_api_version` is not set (the
/// chat default, 2023-05-15, predates it).
pub const AZURE_REALTIME_API_VERSION: &str = "2024-10-01-preview";

/// Anthropic's API version Kong sends when `anthropic_version` is not set.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// The options Kong 3.15 no longer requires, filled with what Kong then uses: Anthropic's
/// current API version, Mistral's OpenAI-compatible API, and an Azure deployment named
/// like the model (Azure's own default when deploying a model).
fn with_kong_defaults(t: &TargetConfig, mut o: ModelOptions) -> ModelOptions {
    match t.model.provider {
        ProviderName::Anthropic => {
            o.anthropic_version
                .get_or_insert_with(|| DEFAULT_ANTHROPIC_VERSION.to_string());
        }
        ProviderName::Mistral => {
            o.mistral_format.get_or_insert_with(|| "openai".to_string());
        }
        ProviderName::Azure => {
            if let (None, Some(name)) = (&o.azure_deployment_id, &t.model.name) {
                o.azure_deployment_id = Some(name.clone());
            }
        }
        _ => {}
    }
    o
}

/// Compiles one target record (also the embeddings provider of semantic routing).
pub fn compile_target(
    path: &str,
    t: &TargetConfig,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut FieldErrors,
    warnings: &mut FieldErrors,
) -> Option<Target> {
    let before = errors.len();
    if !t.route_type.supported() {
        errors.push((
            format!("{path}.route_type"),
            format!(
                "route_type '{}' is not supported by tollgate yet",
                t.route_type.as_str()
            ),
        ));
    }
    let options = with_kong_defaults(t, t.model.options.clone().unwrap_or_default());
    let opath = format!("{path}.model.options");
    // Providers without a Responses API get it bridged: the target is reached as a chat one.
    let bridge_responses = t.route_type == RouteType::Responses
        && !matches!(
            t.model.provider,
            ProviderName::Openai | ProviderName::Azure | ProviderName::Xai | ProviderName::Vllm
        );
    // Legacy completions on a provider whose dialect the gateway translates only for chat:
    // the prompt travels as one user message.
    // Hugging Face's router, Mistral's API and a raw Llama-2 server have no completions
    // endpoint either: Kong serves the prompt to their chat (the raw format wraps it in
    // `[INST]`, as Kong does).
    let translated_chat = match t.model.provider {
        ProviderName::Anthropic
        | ProviderName::Gemini
        | ProviderName::Bedrock
        | ProviderName::Cohere
        | ProviderName::Ollama
        | ProviderName::Mistral
        | ProviderName::Huggingface => true,
        ProviderName::Llama2 => matches!(options.llama2_format.as_deref(), Some("ollama" | "raw")),
        _ => false,
    };
    let bridge_completions = t.route_type == RouteType::Completions && translated_chat;
    let provider = provider_profile(
        t.model.provider,
        if bridge_responses || bridge_completions {
            RouteType::Chat
        } else {
            t.route_type
        },
        &options,
        path,
        &opath,
        env,
        errors,
    );
    let sigv4 = if t.model.provider == ProviderName::Bedrock {
        if t.auth.allow_override {
            errors.push((
                format!("{path}.auth.allow_override"),
                "bedrock and gemini only support auth.allow_override = false".into(),
            ));
        }
        bedrock_region(&options, env).and_then(|region| {
            let credentials = aws_credentials(path, &t.auth, vaults, env, errors, warnings)?;
            Some(Signer {
                region,
                service: bedrock::SERVICE,
                credentials,
            })
        })
    } else {
        for (f, set) in [
            ("aws_access_key_id", t.auth.aws_access_key_id.is_some()),
            (
                "aws_secret_access_key",
                t.auth.aws_secret_access_key.is_some(),
            ),
        ] {
            if set {
                errors.push((
                    format!("{path}.auth.{f}"),
                    "AWS credentials are used only by provider 'bedrock'".into(),
                ));
            }
        }
        None
    };
    let range = |v: Option<f64>, lo: f64, hi: f64| v.map(|v| v < lo || v > hi).unwrap_or(false);
    if range(options.temperature, 0.0, 5.0) {
        errors.push((
            format!("{opath}.temperature"),
            "value should be between 0 and 5".into(),
        ));
    }
    if range(options.top_p, 0.0, 1.0) {
        errors.push((
            format!("{opath}.top_p"),
            "value should be between 0 and 1".into(),
        ));
    }
    if options.top_k.map(|k| k > 500).unwrap_or(false) {
        errors.push((
            format!("{opath}.top_k"),
            "value should be between 0 and 500".into(),
        ));
    }
    for (name, v) in [
        ("input_cost", options.input_cost),
        ("output_cost", options.output_cost),
    ] {
        if v.map(|v| v < 0.0 || !v.is_finite()).unwrap_or(false) {
            errors.push((
                format!("{opath}.{name}"),
                "value must be a positive number".into(),
            ));
        }
    }
    // Whether the provider's path prefix gets the model (and method) appended per request;
    // a path the user gives is used as it is.
    let mut model_path = provider.as_ref().is_some_and(|p| p.model_path);
    let mut path_configured = false;
    let websocket_url = options
        .upstream_url
        .as_deref()
        .is_some_and(|u| u.starts_with("ws://") || u.starts_with("wss://"));
    if websocket_url && t.route_type != RouteType::Realtime {
        errors.push((
            format!("{opath}.upstream_url"),
            "ws:// and wss:// are for route_type 'realtime/v1/realtime'; use http:// or https://"
                .into(),
        ));
    }
    let mut upstream = match &options.upstream_url {
        Some(u) => match parse_upstream_url(u) {
            // A bare base URL gets the provider's own path for the route type.
            Ok(mut b) => {
                if b.path.is_none() {
                    b.path = provider
                        .as_ref()
                        .and_then(|p| p.path.as_deref())
                        .map(Into::into);
                } else {
                    model_path = false;
                    path_configured = true;
                }
                b
            }
            Err(m) => {
                errors.push((format!("{opath}.upstream_url"), m));
                UpstreamBase::new("https", String::new(), 443, None)
            }
        },
        None => match &provider {
            Some(p) => {
                let (scheme, host, port) = &p.base;
                if options.upstream_path.is_some() {
                    model_path = false;
                    path_configured = true;
                }
                let path = options.upstream_path.clone().or(p.path.clone());
                UpstreamBase::new(scheme, host.clone(), *port, path)
            }
            None => UpstreamBase::new("https", String::new(), 443, None),
        },
    };
    if t.model.provider == ProviderName::Azure && path_configured {
        azure_api_version(&mut upstream, t.route_type, &options);
    }
    let chat_rt = matches!(t.route_type, RouteType::Chat | RouteType::Completions);
    if t.model.provider == ProviderName::Huggingface && chat_rt && options.upstream_path.is_none() {
        huggingface_chat_path(&mut upstream);
    }
    let mut auth = compile_auth(
        &format!("{path}.auth"),
        &t.auth,
        vaults,
        env,
        errors,
        warnings,
    );
    if matches!(
        t.model.provider,
        ProviderName::Gemini | ProviderName::Bedrock
    ) && t.auth.allow_override
    {
        errors.push((
            format!("{path}.auth.allow_override"),
            "bedrock and gemini only support auth.allow_override = false".into(),
        ));
    }
    let gcp = compile_gcp(
        &format!("{path}.auth"),
        &t.auth,
        t.model.provider,
        vaults,
        env,
        errors,
        warnings,
    );
    let azure = compile_azure(
        &format!("{path}.auth"),
        &t.auth,
        t.model.provider,
        vaults,
        env,
        errors,
        warnings,
    );
    // Each is for one provider (the other is an error above), so at most one is set.
    auth.cloud_token = gcp.or(azure);
    if errors.len() > before {
        return None;
    }
    let provider = provider?;
    let templated_path = upstream.path.as_deref().is_some_and(|p| p.contains("$("));
    let vertex = options
        .gemini
        .as_ref()
        .is_some_and(|g| g.project_id.is_some());
    let video = (t.route_type == RouteType::VideoGenerations)
        .then(|| crate::llm::video::family(provider.wire, vertex))
        .flatten();
    Some(Target {
        route_type: t.route_type,
        provider: t.model.provider,
        wire: provider.wire,
        extra_headers: provider.headers,
        model_name: t.model.name.clone(),
        options,
        auth,
        logging: t.logging.clone(),
        weight: t.weight,
        model_alias: t.model.model_alias.clone(),
        upstream,
        model_path,
        path_configured,
        templated_path,
        bridge_responses,
        bridge_completions,
        bridge_messages: false,
        video,
        sigv4,
    })
}

/// The region Bedrock requests go to and are signed for: the option, else the
/// environment, as in Kong.
fn bedrock_region(options: &ModelOptions, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    options
        .bedrock
        .as_ref()
        .and_then(|b| b.aws_region.clone())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .filter(|r| !r.is_empty())
}

/// Static AWS credentials: the plugin's (referenceable) pair, else the environment's.
/// Kong also falls back to the rest of the AWS default chain (profiles, instance roles);
/// tollgate does not, and says so at load.
fn aws_credentials(
    path: &str,
    a: &AuthConfig,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut FieldErrors,
    warnings: &mut FieldErrors,
) -> Option<Result<Credentials, String>> {
    let field = |f: &str| format!("{path}.auth.{f}");
    match (&a.aws_access_key_id, &a.aws_secret_access_key) {
        (Some(id), Some(key)) => {
            let id = secret(
                field("aws_access_key_id"),
                id,
                vaults,
                env,
                errors,
                warnings,
            );
            let key = secret(
                field("aws_secret_access_key"),
                key,
                vaults,
                env,
                errors,
                warnings,
            );
            Some(id.and_then(|id| {
                Ok(Credentials {
                    access_key_id: id.expose().clone(),
                    secret_access_key: key?,
                    session_token: None,
                })
            }))
        }
        (Some(_), None) | (None, Some(_)) => {
            let missing = if a.aws_access_key_id.is_none() {
                "aws_access_key_id"
            } else {
                "aws_secret_access_key"
            };
            errors.push((
                field(missing),
                "all or none of aws_access_key_id, aws_secret_access_key must be set".into(),
            ));
            None
        }
        (None, None) => {
            let var = |n: &str| env(n).filter(|v| !v.is_empty());
            match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(key)) => Some(Ok(Credentials {
                    access_key_id: id,
                    secret_access_key: Secret::new(key),
                    session_token: var("AWS_SESSION_TOKEN").map(Secret::new),
                })),
                _ => {
                    errors.push((
                        field("aws_access_key_id"),
                        "AWS credentials not specified anywhere: set auth.aws_access_key_id and auth.aws_secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment (tollgate does not read AWS profiles or instance roles)".into(),
                    ));
                    None
                }
            }
        }
    }
}

/// How a provider is reached: its dialect, default endpoint and extra headers.
struct Profile {
    wire: Wire,
    base: (&'static str, String, u16),
    /// The path for the target's route type (None: the OpenAI default for it).
    path: Option<String>,
    /// `path` is a prefix completed per request by [`crate::llm::request_path`].
    model_path: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Checks what a provider needs for this route type; None (with errors) when it cannot
/// serve it.
fn provider_profile(
    provider: ProviderName,
    rt: RouteType,
    options: &ModelOptions,
    path: &str,
    opath: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut FieldErrors,
) -> Option<Profile> {
    let unsupported_rt = |errors: &mut FieldErrors, what: &str| {
        errors.push((
            format!("{path}.route_type"),
            format!(
                "route_type '{}' is not supported for provider '{}' by tollgate ({what})",
                rt.as_str(),
                provider.as_str()
            ),
        ));
    };
    if rt.is_api() && !api_served(provider, rt) {
        unsupported_rt(
            errors,
            "its files, batches and assistants are served on openai and azure, audio on openai and azure, image generation on openai, azure, xai, gemini and bedrock, videos on openai, azure, huggingface, gemini and bedrock",
        );
        return None;
    }
    // The Realtime API is OpenAI's and Azure OpenAI's only.
    if rt == RouteType::Realtime && !matches!(provider, ProviderName::Openai | ProviderName::Azure)
    {
        unsupported_rt(errors, "the Realtime API is served on openai and azure");
        return None;
    }
    let openai_compatible = |base: (&'static str, &'static str, u16), chat_only: bool| {
        // Responses only gets here for providers that serve it themselves (others are
        // profiled as chat and bridged).
        let ok = rt == RouteType::Preserve
            || rt == RouteType::Chat
            || rt == RouteType::Responses
            || rt.is_api()
            || (!chat_only && rt == RouteType::Embeddings);
        ok.then_some(Profile {
            wire: Wire::OpenAi,
            base: (base.0, base.1.to_string(), base.2),
            path: None,
            model_path: false,
            headers: Vec::new(),
        })
    };
    let need_upstream_url = |errors: &mut FieldErrors, who: &str| {
        if options.upstream_url.is_none() {
            errors.push((
                format!("{opath}.upstream_url"),
                format!("required for provider {who}"),
            ));
        }
    };
    // Ollama's native API (provider ollama, and mistral / llama2 in their ollama format).
    let ollama_profile = |errors: &mut FieldErrors| {
        let path = match rt {
            RouteType::Chat => Some(ollama::CHAT_PATH.to_string()),
            RouteType::Embeddings => Some(ollama::EMBED_PATH.to_string()),
            RouteType::Preserve => None,
            _ => {
                unsupported_rt(
                    errors,
                    "Ollama's API serves llm/v1/chat, llm/v1/embeddings and preserve",
                );
                return None;
            }
        };
        Some(Profile {
            wire: Wire::Ollama,
            base: ("http", "localhost".into(), 11434),
            path,
            model_path: false,
            headers: Vec::new(),
        })
    };
    let profile = match provider {
        ProviderName::Openai => Some(Profile {
            wire: Wire::OpenAi,
            base: (
                openai::DEFAULT_BASE.0,
                openai::DEFAULT_BASE.1.to_string(),
                openai::DEFAULT_BASE.2,
            ),
            path: (rt == RouteType::Realtime).then(|| openai::REALTIME_PATH.to_string()),
            model_path: false,
            headers: Vec::new(),
        }),
        ProviderName::Anthropic => {
            let v = options
                .anthropic_version
                .as_deref()
                .unwrap_or(DEFAULT_ANTHROPIC_VERSION);
            let version = match HeaderValue::from_str(v) {
                Ok(v) => Some(v),
                Err(_) => {
                    errors.push((
                        format!("{opath}.anthropic_version"),
                        "not a valid header value".into(),
                    ));
                    None
                }
            };
            match rt {
                RouteType::Chat | RouteType::Preserve => Some(Profile {
                    wire: Wire::Anthropic,
                    base: (
                        anthropic::DEFAULT_BASE.0,
                        anthropic::DEFAULT_BASE.1.to_string(),
                        anthropic::DEFAULT_BASE.2,
                    ),
                    path: (rt == RouteType::Chat).then(|| anthropic::MESSAGES_PATH.to_string()),
                    model_path: false,
                    headers: version
                        .map(|v| vec![(HeaderName::from_static("anthropic-version"), v)])
                        .unwrap_or_default(),
                }),
                _ => {
                    unsupported_rt(errors, "it serves llm/v1/chat and preserve");
                    return None;
                }
            }
        }
        ProviderName::Mistral => match options.mistral_format.as_deref().unwrap_or("openai") {
            "openai" => openai_compatible(("https", "api.mistral.ai", 443), false),
            "ollama" => {
                need_upstream_url(errors, "mistral with mistral_format 'ollama'");
                return ollama_profile(errors);
            }
            other => {
                errors.push((
                    format!("{opath}.mistral_format"),
                    format!("'{other}' is not a valid value (openai, ollama)"),
                ));
                return None;
            }
        },
        ProviderName::Ollama => {
            need_upstream_url(errors, "ollama");
            return ollama_profile(errors);
        }
        ProviderName::Llama2 => {
            need_upstream_url(errors, "llama2");
            match options.llama2_format.as_deref() {
                Some("openai") => openai_compatible(("http", "localhost", 8000), false),
                Some("ollama") => return ollama_profile(errors),
                Some("raw") => {
                    return match rt {
                        // A bare upstream_url gets `/generate` or `/generate_stream`.
                        RouteType::Chat | RouteType::Preserve => Some(Profile {
                            wire: Wire::Llama2Raw,
                            base: ("http", "localhost".into(), 8080),
                            path: (rt == RouteType::Chat).then(String::new),
                            model_path: rt == RouteType::Chat,
                            headers: Vec::new(),
                        }),
                        _ => {
                            unsupported_rt(
                                errors,
                                "the raw format serves llm/v1/chat and preserve",
                            );
                            None
                        }
                    };
                }
                Some(other) => {
                    errors.push((
                        format!("{opath}.llama2_format"),
                        format!("'{other}' is not a valid value (raw, openai, ollama)"),
                    ));
                    return None;
                }
                None => {
                    errors.push((
                        format!("{opath}.llama2_format"),
                        "required for provider 'llama2' (raw, openai, ollama)".into(),
                    ));
                    return None;
                }
            }
        }
        ProviderName::Cohere => {
            let path = match rt {
                RouteType::Chat => Some(cohere::CHAT_PATH.to_string()),
                RouteType::Embeddings => Some(cohere::EMBED_PATH.to_string()),
                RouteType::Preserve => None,
                _ => {
                    unsupported_rt(
                        errors,
                        "it serves llm/v1/chat, llm/v1/embeddings, video/v1/videos/generations and preserve",
                    );
                    return None;
                }
            };
            let (scheme, host, port) = cohere::DEFAULT_BASE;
            return Some(Profile {
                wire: Wire::Cohere,
                base: (scheme, host.to_string(), port),
                path,
                model_path: false,
                headers: Vec::new(),
            });
        }
        ProviderName::Huggingface => {
            // Hugging Face's current OpenAI-compatible router (the api-inference host
            // Kong's docs name is retired); the options are the Inference API's headers.
            let mut headers = Vec::new();
            if let Some(h) = &options.huggingface {
                for (name, v) in [
                    ("x-use-cache", h.use_cache),
                    ("x-wait-for-model", h.wait_for_model),
                ] {
                    if let Some(v) = v {
                        headers.push((
                            HeaderName::from_static(name),
                            HeaderValue::from_static(if v { "true" } else { "false" }),
                        ));
                    }
                }
            }
            match rt {
                RouteType::Chat | RouteType::Preserve | RouteType::VideoGenerations => {
                    Some(Profile {
                        wire: Wire::OpenAi,
                        base: ("https", "router.huggingface.co".into(), 443),
                        path: None,
                        model_path: false,
                        headers,
                    })
                }
                RouteType::Embeddings => Some(Profile {
                    wire: Wire::HuggingFace,
                    base: ("https", "router.huggingface.co".into(), 443),
                    path: Some(huggingface::EMBED_PREFIX.to_string()),
                    model_path: true,
                    headers,
                }),
                _ => {
                    unsupported_rt(
                        errors,
                        "it serves llm/v1/chat, llm/v1/embeddings, image and video generations, and preserve",
                    );
                    return None;
                }
            }
        }
        ProviderName::Azure => {
            let need = |errors: &mut FieldErrors, v: &Option<String>, name: &str| {
                let safe = |s: &str| {
                    !s.is_empty()
                        && s.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
                        })
                };
                // A deployment may be a template (`$(uri_captures.x)`), rendered and checked
                // per request, as Kong renders model options.
                let template = name == "azure_deployment_id"
                    && v.as_deref()
                        .is_some_and(|s| s.contains("$(") && s.contains(')'));
                let ok = template || v.as_deref().is_some_and(safe);
                if !ok {
                    errors.push((
                        format!("{opath}.{name}"),
                        "required for provider 'azure' (letters, digits, '-', '_', '.')".into(),
                    ));
                }
                v.clone().unwrap_or_default()
            };
            let instance = need(errors, &options.azure_instance, "azure_instance");
            let deployment = need(errors, &options.azure_deployment_id, "azure_deployment_id");
            let version = options
                .azure_api_version
                .clone()
                .unwrap_or_else(|| "2023-05-15".to_string());
            let version: String = form_urlencoded::byte_serialize(version.as_bytes()).collect();
            let tail = match rt {
                RouteType::Chat => Some("chat/completions"),
                RouteType::Completions => Some("completions"),
                RouteType::Embeddings => Some("embeddings"),
                _ => None,
            };
            // Every Azure API is OpenAI's dialect on the resource's host; only the path differs.
            let on_resource = |path: Option<String>| Profile {
                wire: Wire::OpenAi,
                base: ("https", format!("{instance}.openai.azure.com"), 443),
                path,
                model_path: false,
                headers: Vec::new(),
            };
            // Azure's v1 API takes `api-version` only when it is configured.
            let v1 = |p: &str| match &options.azure_api_version {
                Some(_) => format!("{p}?api-version={version}"),
                None => p.to_string(),
            };
            // None: the route type has no Azure API; Some(None): the client's own path.
            let path: Option<Option<String>> = match (rt, tail) {
                // The Responses API lives in Azure's v1 API, outside the deployment path (the
                // body's `model` names the deployment).
                (RouteType::Responses, _) => Some(Some(v1("/openai/v1/responses"))),
                // Realtime sessions open on the resource with the deployment in the query;
                // Azure's realtime API needs a preview api-version, so that is the default.
                (RouteType::Realtime, _) => Some(Some(format!(
                    "/openai/realtime?api-version={}&deployment={deployment}",
                    match &options.azure_api_version {
                        Some(_) => version.as_str(),
                        None => AZURE_REALTIME_API_VERSION,
                    }
                ))),
                (RouteType::Preserve, _) => Some(None),
                // Sora 2's videos are served by Azure's v1 API with OpenAI's own Videos API
                // (the body's `model` names the deployment).
                (RouteType::VideoGenerations, _) => Some(Some(v1("/openai/v1"))),
                // Files, batches and assistants belong to the resource; audio and images
                // to a deployment. The resource's path follows per request.
                (rt, _) if rt.is_api() => Some(Some(match rt {
                    RouteType::Files | RouteType::Batches | RouteType::Assistants => {
                        format!("/openai?api-version={version}")
                    }
                    _ => format!("/openai/deployments/{deployment}?api-version={version}"),
                })),
                (_, Some(tail)) => Some(Some(format!(
                    "/openai/deployments/{deployment}/{tail}?api-version={version}"
                ))),
                _ => None,
            };
            path.map(on_resource)
        }
        ProviderName::Gemini => return gemini_profile(rt, options, opath, errors, unsupported_rt),
        ProviderName::Bedrock => {
            let b = options.bedrock.clone().unwrap_or_default();
            for (name, set) in [
                ("aws_assume_role_arn", b.aws_assume_role_arn.is_some()),
                ("aws_role_session_name", b.aws_role_session_name.is_some()),
                ("aws_sts_endpoint_url", b.aws_sts_endpoint_url.is_some()),
            ] {
                if set {
                    errors.push((
                        format!("{opath}.bedrock.{name}"),
                        "assuming an IAM role (STS) is not supported by tollgate yet; give static credentials in auth.aws_access_key_id / auth.aws_secret_access_key or the environment".into(),
                    ));
                }
            }
            if let Some(l) = &b.performance_config_latency {
                if !matches!(l.as_str(), "standard" | "optimized") {
                    errors.push((
                        format!("{opath}.bedrock.performance_config_latency"),
                        "expected one of: standard, optimized".into(),
                    ));
                }
            }
            let region = match bedrock_region(options, env) {
                Some(r)
                    if r.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') =>
                {
                    r
                }
                Some(_) => {
                    errors.push((
                        format!("{opath}.bedrock.aws_region"),
                        "not a valid AWS region (e.g. us-east-1)".into(),
                    ));
                    String::new()
                }
                None => {
                    errors.push((
                        format!("{opath}.bedrock.aws_region"),
                        "AWS region not specified anywhere (set it here, or AWS_REGION / AWS_DEFAULT_REGION in the environment)".into(),
                    ));
                    String::new()
                }
            };
            if rt == RouteType::VideoGenerations {
                let ok = b
                    .video_output_s3_uri
                    .as_deref()
                    .and_then(|u| u.strip_prefix("s3://"))
                    .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
                if !ok {
                    errors.push((
                        format!("{opath}.bedrock.video_output_s3_uri"),
                        "required for video generation on bedrock: the s3://bucket/prefix Bedrock writes the videos to".into(),
                    ));
                }
            }
            match rt {
                RouteType::Chat
                | RouteType::Embeddings
                | RouteType::ImageGenerations
                | RouteType::VideoGenerations
                | RouteType::Preserve => Some(Profile {
                    wire: Wire::Bedrock,
                    base: ("https", bedrock::host(&region), 443),
                    path: (rt != RouteType::Preserve).then(|| bedrock::MODEL_PREFIX.to_string()),
                    model_path: rt != RouteType::Preserve,
                    headers: Vec::new(),
                }),
                _ => {
                    unsupported_rt(
                        errors,
                        "it serves llm/v1/chat, llm/v1/embeddings, image and video generations, and preserve",
                    );
                    return None;
                }
            }
        }
        ProviderName::Dashscope => {
            let intl = options
                .dashscope
                .as_ref()
                .and_then(|d| d.international)
                .unwrap_or(true);
            let host = if intl {
                "dashscope-intl.aliyuncs.com"
            } else {
                "dashscope.aliyuncs.com"
            };
            let tail = match rt {
                RouteType::Chat => Some("chat/completions"),
                RouteType::Embeddings => Some("embeddings"),
                _ => None,
            };
            match (rt, tail) {
                (RouteType::Preserve, _) | (_, Some(_)) => Some(Profile {
                    wire: Wire::OpenAi,
                    base: ("https", host.to_string(), 443),
                    path: tail.map(|t| format!("/compatible-mode/v1/{t}")),
                    model_path: false,
                    headers: Vec::new(),
                }),
                _ => None,
            }
        }
        ProviderName::Databricks => {
            let ws = options
                .databricks
                .as_ref()
                .and_then(|d| d.workspace_instance_id.clone())
                .filter(|w| {
                    !w.is_empty()
                        && w.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                });
            if ws.is_none() && options.upstream_url.is_none() {
                errors.push((
                    format!("{opath}.databricks.workspace_instance_id"),
                    "required for provider 'databricks' (e.g. dbc-a1b2c3d4-e5f6), unless upstream_url is set".into(),
                ));
            }
            // Databricks serves the OpenAI API under /serving-endpoints (the body's `model`
            // names the serving endpoint), as its OpenAI SDK examples use it.
            let tail = match rt {
                RouteType::Chat => Some("chat/completions"),
                RouteType::Embeddings => Some("embeddings"),
                _ => None,
            };
            match (rt, tail) {
                (RouteType::Preserve, _) | (_, Some(_)) => Some(Profile {
                    wire: Wire::OpenAi,
                    base: (
                        "https",
                        format!("{}.cloud.databricks.com", ws.unwrap_or_default()),
                        443,
                    ),
                    path: tail.map(|t| format!("/serving-endpoints/{t}")),
                    model_path: false,
                    headers: Vec::new(),
                }),
                _ => None,
            }
        }
        ProviderName::Deepseek => openai_compatible(("https", "api.deepseek.com", 443), true),
        ProviderName::Xai => openai_compatible(("https", "api.x.ai", 443), true),
        ProviderName::Cerebras => openai_compatible(("https", "api.cerebras.ai", 443), true),
        ProviderName::Vllm => {
            if options.upstream_url.is_none() {
                errors.push((
                    format!("{opath}.upstream_url"),
                    "required for provider 'vllm'".into(),
                ));
            }
            openai_compatible(("http", "localhost", 8000), true)
        }
    };
    if profile.is_none() {
        unsupported_rt(errors, "its OpenAI-compatible API serves chat and preserve");
    }
    profile
}

/// Gemini: AI Studio, or Vertex AI when all of `options.gemini.{api_endpoint, project_id,
/// location_id}` are set. The model (and method) complete the path per request.
fn gemini_profile(
    rt: RouteType,
    options: &ModelOptions,
    opath: &str,
    errors: &mut FieldErrors,
    unsupported_rt: impl Fn(&mut FieldErrors, &str),
) -> Option<Profile> {
    let g = options.gemini.clone().unwrap_or_default();
    let gpath = format!("{opath}.gemini");
    if g.endpoint_id.is_some() {
        errors.push((
            format!("{gpath}.endpoint_id"),
            "Vertex AI Model Garden endpoints are not supported by tollgate yet".into(),
        ));
    }
    let fields = [
        ("api_endpoint", &g.api_endpoint),
        ("project_id", &g.project_id),
        ("location_id", &g.location_id),
    ];
    let given = fields.iter().filter(|(_, v)| v.is_some()).count();
    if given != 0 && given != fields.len() {
        for (name, v) in fields {
            if v.is_none() {
                errors.push((
                    format!("{gpath}.{name}"),
                    "required: api_endpoint, project_id and location_id are set together (they select Vertex AI)".into(),
                ));
            }
        }
        return None;
    }
    let segment_ok = |v: &str| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    let (base, prefix, vertex) = match (&g.api_endpoint, &g.project_id, &g.location_id) {
        (Some(endpoint), Some(project), Some(location)) => {
            for (name, v) in [("project_id", project), ("location_id", location)] {
                if !segment_ok(v) {
                    errors.push((
                        format!("{gpath}.{name}"),
                        "letters, digits, '-', '_', '.' only".into(),
                    ));
                }
            }
            let host = endpoint
                .trim_start_matches("https://")
                .trim_end_matches('/');
            let (host, port) = match host.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().ok()),
                None => (host, Some(443)),
            };
            let (true, Some(port)) = (segment_ok(host), port) else {
                errors.push((
                    format!("{gpath}.api_endpoint"),
                    "a host name such as 'us-central1-aiplatform.googleapis.com'".into(),
                ));
                return None;
            };
            (
                ("https", host.to_string(), port),
                gemini::vertex_prefix(project, location),
                true,
            )
        }
        _ => (
            (
                gemini::AI_STUDIO_BASE.0,
                gemini::AI_STUDIO_BASE.1.to_string(),
                gemini::AI_STUDIO_BASE.2,
            ),
            gemini::AI_STUDIO_PREFIX.to_string(),
            false,
        ),
    };
    let translated = |prefix: String| Profile {
        wire: Wire::Gemini,
        base: base.clone(),
        path: Some(prefix),
        model_path: true,
        headers: Vec::new(),
    };
    match rt {
        RouteType::Chat | RouteType::ImageGenerations | RouteType::VideoGenerations => {
            Some(translated(prefix))
        }
        RouteType::Embeddings if !vertex => Some(translated(prefix)),
        RouteType::Embeddings => {
            unsupported_rt(
                errors,
                "Vertex AI serves embeddings through :predict, which is not translated yet; AI Studio's batchEmbedContents is",
            );
            None
        }
        RouteType::Preserve => Some(Profile {
            wire: Wire::Gemini,
            base,
            path: None,
            model_path: false,
            headers: Vec::new(),
        }),
        _ => {
            unsupported_rt(
                errors,
                "it serves llm/v1/chat, llm/v1/embeddings, image and video generations, and preserve",
            );
            None
        }
    }
}

/// Azure's `api-version` on a path the user gave in `upstream_url`: Kong sends it on every
/// request (`azure_api_version`, default 2023-05-15) unless the path already has one; the
/// Responses API (Azure's v1 API) only when it is configured, as on Azure's own host.
fn azure_api_version(upstream: &mut UpstreamBase, rt: RouteType, options: &ModelOptions) {
    let Some(path) = upstream.path.as_deref() else {
        return;
    };
    let has = path.split_once('?').is_some_and(|(_, q)| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "api-version")
    });
    let wanted = match rt {
        RouteType::Responses => options.azure_api_version.is_some(),
        RouteType::Chat | RouteType::Completions | RouteType::Embeddings => true,
        _ => false,
    };
    if has || !wanted {
        return;
    }
    let version = options.azure_api_version.as_deref().unwrap_or("2023-05-15");
    let version: String = form_urlencoded::byte_serialize(version.as_bytes()).collect();
    let sep = if path.contains('?') { '&' } else { '?' };
    upstream.path = Some(format!("{path}{sep}api-version={version}").into());
}

/// Kong appends Hugging Face's chat path to an `upstream_url` that names an endpoint (a
/// dedicated Inference Endpoint, a router provider prefix) unless it already ends with it.
fn huggingface_chat_path(upstream: &mut UpstreamBase) {
    let Some(path) = upstream.path.as_deref() else {
        return;
    };
    let (p, q) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    if p.ends_with("/chat/completions") {
        return;
    }
    let mut out = format!("{}/v1/chat/completions", p.trim_end_matches('/'));
    if let Some(q) = q {
        out.push('?');
        out.push_str(q);
    }
    upstream.path = Some(out.into());
}

/// `upstream_url`: scheme/host/port always; the path only when it is more than `/`.
fn parse_upstream_url(u: &str) -> Result<UpstreamBase, String> {
    let uri: http::Uri = u.parse().map_err(|e| format!("invalid URL: {e}"))?;
    // ws:// and wss:// name the same endpoints (the Realtime API's); the upgrade follows.
    let scheme = match uri.scheme_str() {
        Some("http" | "ws") => "http",
        Some("https" | "wss") => "https",
        _ => return Err("must be an http:// or https:// URL".into()),
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or("missing host")?;
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => None,
        Some(p) => Some(p.to_string()),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(UpstreamBase::new(scheme, host.to_string(), port, path))
}

/// A referenceable field read per request: a literal, or a vault reference (HashiCorp Vault
/// ones stay current in the background).
fn live_secret(
    path: String,
    value: &str,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut FieldErrors,
    warnings: &mut FieldErrors,
) -> LiveSecret {
    let (prefix, reference) = match vault::split_prefixed(value) {
        Some(split) => split,
        None if vault::is_reference(value) => ("", value),
        None => {
            if value.contains("{vault://") {
                errors.push((path, "a vault reference must be the entire value, or follow literal text as in 'Bearer {vault://env/openai-api-key}'".into()));
            }
            return LiveSecret::Fixed(Ok(Secret::new(value.to_string())));
        }
    };
    match vault::resolve_prefixed(&path, prefix, reference, vaults, env) {
        Ok(Resolved::Fixed(s)) => LiveSecret::Fixed(Ok(s)),
        Ok(Resolved::Live(cell)) => {
            // Not fatal: the refresher fills it when the vault answers; until then a 500.
            if let Some(reason) = cell.failure() {
                warnings.push((path, format!("could not resolve {value}: {reason}")));
            }
            LiveSecret::Vault(cell)
        }
        Err(e @ (vault::VaultError::Syntax(_) | vault::VaultError::Config(_))) => {
            errors.push((path, e.to_string()));
            LiveSecret::Fixed(Err(e.to_string()))
        }
        Err(e) => {
            // Not fatal: the gateway serves its other routes; requests here get a 500.
            warnings.push((path.clone(), format!("could not resolve {value}: {e}")));
            LiveSecret::Fixed(Err(format!("{path}: could not resolve {value}: {e}")))
        }
    }
}

/// A referenceable field used once at load (AWS keys, a GCP service account): its value
/// now; a HashiCorp Vault secret here is not rotated.
fn secret(
    path: String,
    value: &str,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut FieldErrors,
    warnings: &mut FieldErrors,
) -> SecretSlot {
    match live_secret(path, value, vaults, env, errors, warnings) {
        LiveSecret::Fixed(r) => r,
        LiveSecret::Vault(cell) => cell.get(),
    }
}

fn compile_auth(
    path: &str,
    a: &AuthConfig,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut FieldErrors,
    warnings: &mut FieldErrors,
) -> Auth {
    let header = match (&a.header_name, &a.header_value) {
        (Some(n), Some(v)) => match HeaderName::from_bytes(n.as_bytes()) {
            Ok(name) => {
                let value = match live_secret(
                    format!("{path}.header_value"),
                    v,
                    vaults,
                    env,
                    errors,
                    warnings,
                ) {
                    LiveSecret::Fixed(r) => LiveHeader::Fixed(r.and_then(|s| {
                        let mut hv = HeaderValue::from_str(s.expose()).map_err(|_| {
                            format!("auth header {name} has a value that is not a valid header")
                        })?;
                        hv.set_sensitive(true);
                        Ok(hv)
                    })),
                    LiveSecret::Vault(cell) => LiveHeader::Vault(cell),
                };
                Some((name, value))
            }
            Err(_) => {
                errors.push((format!("{path}.header_name"), "invalid header name".into()));
                None
            }
        },
        (None, None) => None,
        (Some(_), None) => {
            errors.push((
                format!("{path}.header_value"),
                "required when header_name is set (all or none of header_name, header_value)"
                    .into(),
            ));
            None
        }
        (None, Some(_)) => {
            errors.push((
                format!("{path}.header_name"),
                "required when header_value is set (all or none of header_name, header_value)"
                    .into(),
            ));
            None
        }
    };
    let param = match (&a.param_name, &a.param_value, a.param_location) {
        (Some(n), Some(v), Some(l)) => Some((
            n.clone(),
            live_secret(
                format!("{path}.param_value"),
                v,
                vaults,
                env,
                errors,
                warnings,
            ),
            l,
        )),
        (None, None, None) => None,
        _ => {
            errors.push((path.to_string(), "all or none of these fields must be set: 'param_name', 'param_value', 'param_location'".into()));
            None
        }
    };
    Auth {
        header,
        param,
        allow_override: a.allow_override,
        cloud_token: None,
    }
}

/// `gcp_use_service_account`: the key file from `gcp_service_account_json` (referenceable)
/// or the `GCP_SERVICE_ACCOUNT` environment variable. As in Kong, a key that is missing or
/// unusable does not fail the load: it is a warning, and the target's requests get a 500
/// saying why until the configuration gives a usable key.
fn compile_gcp(
    path: &str,
    a: &AuthConfig,
    provider: ProviderName,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut FieldErrors,
    warnings: &mut FieldErrors,
) -> Option<Result<Arc<TokenSource>, String>> {
    if a.gcp_metadata_url.is_some() {
        errors.push((
            format!("{path}.gcp_metadata_url"),
            "the GCP metadata server is not supported by tollgate yet (give a service-account key)"
                .into(),
        ));
    }
    if !a.gcp_use_service_account {
        if a.gcp_service_account_json.is_some() {
            warnings.push((
                format!("{path}.gcp_service_account_json"),
                "ignored: gcp_use_service_account is false".into(),
            ));
        }
        return None;
    }
    let field = format!("{path}.gcp_service_account_json");
    if provider != ProviderName::Gemini {
        errors.push((
            format!("{path}.gcp_use_service_account"),
            format!(
                "GCP service-account auth is for provider 'gemini', not '{}'",
                provider.as_str()
            ),
        ));
        return None;
    }
    let json = match &a.gcp_service_account_json {
        Some(v) => match secret(field.clone(), v, vaults, env, errors, warnings) {
            Ok(s) => s,
            // Reported as a warning already; requests on this target get a 500.
            Err(e) => return Some(Err(e)),
        },
        None => match env("GCP_SERVICE_ACCOUNT") {
            Some(v) => Secret::new(v),
            None => {
                let why = "no service-account key: set gcp_service_account_json or the GCP_SERVICE_ACCOUNT environment variable";
                warnings.push((
                    field,
                    format!("{why}; requests on this target fail until then"),
                ));
                return Some(Err(why.into()));
            }
        },
    };
    let source = Credential::gcp(json.expose(), a.gcp_oauth_token_url.as_deref())
        .and_then(TokenSource::shared);
    match source {
        Ok(s) => Some(Ok(s)),
        Err(e) => {
            let from = if a.gcp_service_account_json.is_some() {
                "not a usable service-account key"
            } else {
                "GCP_SERVICE_ACCOUNT (environment) is not a usable service-account key"
            };
            let why = format!("{from}: {e}");
            warnings.push((
                field,
                format!("{why}; requests on this target fail until it is"),
            ));
            Some(Err(why))
        }
    }
}

/// `azure_use_managed_identity`, as Kong (lua-resty-azure) reads it: with all of
/// `azure_client_id`, `azure_client_secret` and `azure_tenant_id`, Entra's client
/// credentials grant; otherwise the instance's managed identity through the metadata
/// service (a user-assigned one when `azure_client_id` is set). `AZURE_AUTHORITY_HOST` and
/// `AZURE_POD_IDENTITY_AUTHORITY_HOST` move those endpoints, as they do for Azure's SDKs.
fn compile_azure(
    path: &str,
    a: &AuthConfig,
    provider: ProviderName,
    vaults: &VaultTable,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut FieldErrors,
    warnings: &mut FieldErrors,
) -> Option<Result<Arc<TokenSource>, String>> {
    let fields = [
        ("azure_client_id", &a.azure_client_id),
        ("azure_client_secret", &a.azure_client_secret),
        ("azure_tenant_id", &a.azure_tenant_id),
    ];
    if !a.azure_use_managed_identity {
        for (f, v) in fields {
            if v.is_some() {
                warnings.push((
                    format!("{path}.{f}"),
                    "ignored: azure_use_managed_identity is false".into(),
                ));
            }
        }
        return None;
    }
    if provider != ProviderName::Azure {
        errors.push((
            format!("{path}.azure_use_managed_identity"),
            format!(
                "Azure identity auth is for provider 'azure', not '{}'",
                provider.as_str()
            ),
        ));
        return None;
    }
    // A secret or a tenant only mean something to the client credentials grant, which
    // needs all three; a client id alone names a user-assigned managed identity.
    if a.azure_client_secret.is_some() || a.azure_tenant_id.is_some() {
        let before = errors.len();
        for (f, v) in fields {
            if v.is_none() {
                errors.push((
                    format!("{path}.{f}"),
                    "required for Entra client credentials (all or none of azure_client_secret, azure_tenant_id, with azure_client_id)".into(),
                ));
            }
        }
        if errors.len() > before {
            return None;
        }
    }
    // All three are referenceable, as in Kong; a reference that does not resolve is a
    // warning (reported by `secret`) and a 500 on this target's requests.
    let mut read = |f: &str, v: &Option<String>| -> Option<SecretSlot> {
        let v = v.as_deref()?;
        let field = format!("{path}.{f}");
        let slot = secret(field.clone(), v, vaults, env, errors, warnings);
        if slot.as_ref().is_ok_and(|s| s.expose().is_empty()) {
            errors.push((field.clone(), "must not be empty".into()));
            return Some(Err(format!("{field} is empty")));
        }
        Some(slot)
    };
    let client_id = match read("azure_client_id", &a.azure_client_id).transpose() {
        Ok(id) => id.map(|s| s.expose().clone()),
        Err(e) => return Some(Err(e)),
    };
    let secret_slot = read("azure_client_secret", &a.azure_client_secret);
    let tenant = read("azure_tenant_id", &a.azure_tenant_id);
    // A host from the environment, else Azure's own; a bad one fails the load (it would
    // fail every request).
    let mut host = |var: &str, default: &str| {
        let value = env(var).filter(|v| !v.trim().is_empty());
        match value.as_deref().map(azure::base_url) {
            None => Some(default.to_string()),
            Some(Ok(url)) => Some(url),
            Some(Err(e)) => {
                errors.push((
                    format!("{path}.azure_use_managed_identity"),
                    format!("{var} (environment): {e}"),
                ));
                None
            }
        }
    };
    let credential = match (client_id, secret_slot, tenant) {
        (Some(client_id), Some(client_secret), Some(tenant)) => {
            let (client_secret, tenant_id) = match (client_secret, tenant) {
                (Ok(s), Ok(t)) => (s, t.expose().clone()),
                (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
            };
            if !azure::tenant_id_ok(&tenant_id) {
                errors.push((
                    format!("{path}.azure_tenant_id"),
                    "a directory (tenant) id or domain: letters, digits, '-', '_', '.'".into(),
                ));
                return None;
            }
            Credential::AzureClientCredentials {
                tenant_id,
                client_id,
                client_secret,
                authority_host: host(azure::AUTHORITY_HOST_ENV, azure::DEFAULT_AUTHORITY_HOST)?,
            }
        }
        (client_id, _, _) => Credential::AzureManagedIdentity {
            client_id,
            imds_host: host(azure::IMDS_HOST_ENV, azure::DEFAULT_IMDS_HOST)?,
        },
    };
    match TokenSource::shared(credential) {
        Ok(s) => Some(Ok(s)),
        Err(e) => {
            // The hosts are checked above; this would be a bug, reported where it shows.
            errors.push((format!("{path}.azure_use_managed_identity"), e));
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn upstream_url_forms() {
        let b = parse_upstream_url("http://127.0.0.1:9000").ok();
        assert_eq!(
            b.map(|b| (b.host, b.port, b.path)),
            Some(("127.0.0.1".into(), 9000, None))
        );
        let b = parse_upstream_url("https://x.example/v1/responses").ok();
        assert_eq!(
            b.map(|b| (b.port, b.path)),
            Some((443, Some("/v1/responses".into())))
        );
        assert!(parse_upstream_url("ftp://x").is_err());
        assert!(parse_upstream_url("not a url").is_err());
    }

    #[test]
    fn huggingface_endpoints_get_the_chat_path() {
        let path = |u: &str| {
            let mut b = parse_upstream_url(u).unwrap();
            huggingface_chat_path(&mut b);
            b.path.map(|p| p.to_string())
        };
        assert_eq!(path("https://x.endpoints.huggingface.cloud"), None);
        assert_eq!(
            path("https://router.huggingface.co/hf-inference/models/m?x=1"),
            Some("/hf-inference/models/m/v1/chat/completions?x=1".into())
        );
        assert_eq!(
            path("https://e.cloud/v1/chat/completions"),
            Some("/v1/chat/completions".into())
        );
    }
}

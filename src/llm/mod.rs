//! LLM dialects: request encoding, response decoding, stream observation, usage.
//! Pure functions only; the proxy does the I/O. Each operation is one `match` on [`Wire`]
//! here, calling plain functions in the dialect's own file.

pub mod anthropic;
pub mod bedrock;
pub mod bedrock_image;
pub mod body;
pub mod cached;
pub mod cohere;
pub mod cohere_v1;
pub mod completions;
pub mod eventstream;
pub mod framing;
pub mod gemini;
pub mod gemini_image;
pub mod huggingface;
pub mod llama2;
pub mod messages;
pub mod multipart;
pub mod ollama;
pub mod openai;
pub mod replay;
pub mod responses;
pub mod sigv4;
pub mod sse;
pub mod stream;
pub mod target;
pub mod tokens;
pub mod translate;
pub mod usage;
pub mod video;

use crate::config::plugins::{ModelOptions, RouteType};
use body::BodyView;
use usage::Usage;

/// The API a target's upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI's (and every OpenAI-compatible server's): bodies are patched, not rebuilt.
    OpenAi,
    /// Anthropic Messages: bodies, answers and streams are translated.
    Anthropic,
    /// Cohere v2 Chat and Embed.
    Cohere,
    /// Ollama's native `/api/chat` and `/api/embed` (NDJSON streams).
    Ollama,
    /// A Llama-2 prompt for a text-generation-inference `generate` endpoint.
    Llama2Raw,
    /// Hugging Face's feature-extraction pipeline (embeddings; its chat is OpenAI's); for
    /// native clients (`llm_format: huggingface`), TGI's `generate` or the router's
    /// OpenAI-compatible answers, read for usage.
    HuggingFace,
    /// Gemini `generateContent` (AI Studio and Vertex AI): translated; the model and method
    /// are in the path.
    Gemini,
    /// Amazon Bedrock Converse / ConverseStream (binary event stream), SigV4-signed.
    Bedrock,
}

/// A request the provider's API cannot express; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(pub String);

/// What the gateway decides for the upstream body besides the client's fields.
pub struct Encode<'a> {
    /// The model sent upstream (config or client); None only when neither names one.
    pub model: Option<&'a str>,
    pub options: &'a ModelOptions,
    pub stream: bool,
    /// An auth parameter to put in the body (`auth.param_location: body`).
    pub body_param: Option<(&'a str, &'a str)>,
}

/// What the gateway asked upstream, for answers that do not say it themselves.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The model sent upstream.
    pub model: Option<&'a str>,
    /// The client's (OpenAI-shaped) request body.
    pub request: &'a [u8],
    /// The gateway's id of the request, unique per request (for answers without an id).
    pub request_id: &'a str,
}

/// A decoded buffered answer in OpenAI's shape.
pub struct Decoded {
    pub body: Vec<u8>,
    pub usage: Option<Usage>,
    pub model: Option<String>,
}

fn not_translated(wire: Wire, rt: RouteType) -> String {
    format!(
        "route_type '{}' is not translated for the {wire:?} dialect",
        rt.as_str()
    )
}

/// The upstream path for a provider that names the model (and the method) in it: `prefix`
/// is the provider's path up to the model.
pub fn request_path(wire: Wire, rt: RouteType, prefix: &str, model: &str, stream: bool) -> String {
    let _ = rt;
    if wire == Wire::HuggingFace {
        return huggingface::embed_path(prefix, model);
    }
    let encoded = || -> String {
        percent_encoding::utf8_percent_encode(model, percent_encoding::NON_ALPHANUMERIC).collect()
    };
    match wire {
        // The endpoint (not the model) differs when streaming.
        Wire::Llama2Raw if stream => format!("{prefix}{}", llama2::GENERATE_STREAM_PATH),
        Wire::Llama2Raw => format!("{prefix}{}", llama2::GENERATE_PATH),
        Wire::Gemini => gemini::request_path(rt, prefix, model, stream),
        Wire::Bedrock if matches!(rt, RouteType::Embeddings | RouteType::ImageGenerations) => {
            bedrock::invoke_path(prefix, model)
        }
        Wire::Bedrock => bedrock::request_path(prefix, model, stream),
        Wire::OpenAi | Wire::Anthropic | Wire::Cohere | Wire::Ollama | Wire::HuggingFace => {
            format!("{prefix}{}", encoded())
        }
    }
}

/// An OpenAI request body (of route type `rt`) in the upstream's native shape.
pub fn encode(
    wire: Wire,
    rt: RouteType,
    body: &BodyView<'_>,
    e: &Encode<'_>,
) -> Result<Vec<u8>, EncodeError> {
    match (wire, rt) {
        (Wire::Anthropic, RouteType::Chat) => anthropic::encode_chat(body, e),
        (Wire::Cohere, RouteType::Chat) => cohere::encode_chat(body, e),
        (Wire::Cohere, RouteType::Embeddings) => {
            let input_type = e
                .options
                .cohere
                .as_ref()
                .and_then(|c| c.embedding_input_type)
                .map(|t| t.as_str())
                .unwrap_or(cohere::DEFAULT_INPUT_TYPE);
            cohere::encode_embeddings(body, e, input_type)
        }
        (Wire::Ollama, RouteType::Chat) => ollama::encode_chat(body, e),
        (Wire::Ollama, RouteType::Embeddings) => ollama::encode_embeddings(body, e),
        (Wire::Llama2Raw, RouteType::Chat) => llama2::encode_chat(body, e),
        (Wire::HuggingFace, RouteType::Embeddings) => huggingface::encode_embeddings(body, e),
        (Wire::Gemini, RouteType::Chat) => gemini::encode_chat(body, e),
        (Wire::Gemini, RouteType::Embeddings) => gemini::encode_embeddings(body, e),
        (Wire::Gemini, RouteType::ImageGenerations) => gemini_image::encode(body, e),
        (Wire::Bedrock, RouteType::Chat) => bedrock::encode_chat(body, e),
        (Wire::Bedrock, RouteType::Embeddings) => bedrock::encode_embeddings(body, e),
        (Wire::Bedrock, RouteType::ImageGenerations) => bedrock_image::encode(body, e),
        _ => Err(EncodeError(not_translated(wire, rt))),
    }
}

/// A native 200 answer as the OpenAI object of route type `rt`; `asked` names the model
/// (and request) when the provider's answer does not.
pub fn decode(
    wire: Wire,
    rt: RouteType,
    body: &[u8],
    created: u64,
    asked: &Asked<'_>,
) -> Result<Decoded, String> {
    let model = asked.model;
    match (wire, rt) {
        (Wire::Anthropic, RouteType::Chat) => anthropic::decode_chat(body, created),
        (Wire::Cohere, RouteType::Chat) => cohere::decode_chat(body, created, model),
        (Wire::Cohere, RouteType::Embeddings) => cohere::decode_embeddings(body, model),
        (Wire::Ollama, RouteType::Chat) => ollama::decode_chat(body, created, model),
        (Wire::Ollama, RouteType::Embeddings) => ollama::decode_embeddings(body, model),
        (Wire::Llama2Raw, RouteType::Chat) => llama2::decode_chat(body, created, model),
        (Wire::HuggingFace, RouteType::Embeddings) => huggingface::decode_embeddings(body, model),
        (Wire::Gemini, RouteType::Chat) => gemini::decode_chat(body, created),
        (Wire::Gemini, RouteType::Embeddings) => gemini::decode_embeddings(body, asked),
        (Wire::Gemini, RouteType::ImageGenerations) => gemini_image::decode(body, created),
        (Wire::Bedrock, RouteType::Chat) => bedrock::decode_chat(body, created, asked),
        (Wire::Bedrock, RouteType::Embeddings) => bedrock::decode_embeddings(body, asked),
        (Wire::Bedrock, RouteType::ImageGenerations) => bedrock_image::decode(body, created),
        _ => Err(not_translated(wire, rt)),
    }
}

/// A native error body (with its status and headers, where some providers put the error
/// name) in OpenAI's error shape, the provider's own error object kept whole beside it as
/// `error.provider_error` (Kong passes it unchanged; a client that reads its fields still
/// finds them); None when the body is not the provider's error shape (it then goes to the
/// client as it came).
pub fn decode_error(
    wire: Wire,
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<Vec<u8>> {
    let mapped = match wire {
        Wire::Anthropic => anthropic::decode_error(body),
        Wire::Cohere => cohere::decode_error(body),
        Wire::Ollama => ollama::decode_error(body),
        // Both speak `{"error": "...", "error_type"?}`.
        Wire::Llama2Raw | Wire::HuggingFace => llama2::decode_error(body),
        Wire::Gemini => gemini::decode_error(body),
        Wire::Bedrock => bedrock::decode_error(status, headers, body),
        Wire::OpenAi => None,
    }?;
    Some(with_provider_error(mapped, body))
}

/// `mapped` (OpenAI's error shape) with the provider's `original` error as
/// `error.provider_error`.
fn with_provider_error(mapped: Vec<u8>, original: &[u8]) -> Vec<u8> {
    let parsed = (
        serde_json::from_slice::<serde_json::Value>(&mapped),
        serde_json::from_slice::<serde_json::Value>(original),
    );
    let (Ok(mut out), Ok(original)) = parsed else {
        return mapped;
    };
    match out
        .get_mut("error")
        .and_then(serde_json::Value::as_object_mut)
    {
        Some(e) => {
            e.insert("provider_error".into(), original);
            serde_json::to_vec(&out).unwrap_or(mapped)
        }
        None => mapped,
    }
}

/// Usage and model of a native answer, for the log of a route whose client speaks the
/// provider's own API.
pub fn read_usage(wire: Wire, body: &[u8]) -> (Option<Usage>, Option<String>) {
    match wire {
        Wire::Anthropic => anthropic::read_usage(body),
        Wire::Cohere => cohere::read_usage(body),
        Wire::Ollama => ollama::read_usage(body),
        Wire::Llama2Raw => llama2::read_usage(body),
        Wire::HuggingFace => huggingface::read_usage(body),
        Wire::OpenAi => (None, None),
        Wire::Gemini => gemini::read_usage(body),
        Wire::Bedrock => bedrock::read_usage(body),
    }
}

/// Whether an upstream answer with `content_type` is a stream the gateway reads event by
/// event: SSE for every dialect, NDJSON for Ollama's (and Cohere's v1 chat, which native
/// clients may call), the AWS event stream for Bedrock's.
pub fn is_native_stream(wire: Wire, content_type: &str) -> bool {
    let ct = content_type.trim_start();
    let is = |prefix: &str| {
        ct.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    is("text/event-stream")
        || (matches!(wire, Wire::Ollama | Wire::Cohere)
            && (is("application/x-ndjson") || is("application/stream+json")))
        || (wire == Wire::Bedrock && is("application/vnd.amazon.eventstream"))
}

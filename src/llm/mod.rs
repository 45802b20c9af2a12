//! LLM dialects: request encoding, response decoding, stream observation, usage.
//! Pure functions only; the proxy does the I/O. Each operation is one `match` on [`Wire`]
//! here, calling plain functions in the dialect's own file.

pub mod anthropic;
pub mod body;
pub mod gcp;
pub mod gemini;
pub mod openai;
pub mod sse;
pub mod stream;
pub mod usage;

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
    /// Gemini `generateContent` (AI Studio and Vertex AI): translated; the model and method
    /// are in the path.
    Gemini,
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
pub struct Asked<'a> {
    /// The model sent upstream.
    pub model: Option<&'a str>,
    /// The client's (OpenAI-shaped) request body.
    pub request: &'a [u8],
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
    let encoded = || -> String {
        percent_encoding::utf8_percent_encode(model, percent_encoding::NON_ALPHANUMERIC).collect()
    };
    match wire {
        Wire::OpenAi | Wire::Anthropic => format!("{prefix}{}", encoded()),
        Wire::Gemini => gemini::request_path(rt, prefix, model, stream),
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
        (Wire::Gemini, RouteType::Chat) => gemini::encode_chat(body, e),
        (Wire::Gemini, RouteType::Embeddings) => gemini::encode_embeddings(body, e),
        _ => Err(EncodeError(not_translated(wire, rt))),
    }
}

/// A native 200 answer as the OpenAI object of route type `rt`.
pub fn decode(
    wire: Wire,
    rt: RouteType,
    body: &[u8],
    created: u64,
    asked: &Asked<'_>,
) -> Result<Decoded, String> {
    match (wire, rt) {
        (Wire::Anthropic, RouteType::Chat) => anthropic::decode_chat(body, created),
        (Wire::Gemini, RouteType::Chat) => gemini::decode_chat(body, created),
        (Wire::Gemini, RouteType::Embeddings) => gemini::decode_embeddings(body, asked),
        _ => Err(not_translated(wire, rt)),
    }
}

/// A native error body in OpenAI's error shape; None when the body is not the provider's
/// error shape (it then goes to the client as it came).
pub fn decode_error(wire: Wire, body: &[u8]) -> Option<Vec<u8>> {
    match wire {
        Wire::Anthropic => anthropic::decode_error(body),
        Wire::Gemini => gemini::decode_error(body),
        Wire::OpenAi => None,
    }
}

/// Usage and model of a native answer, for the log of a route whose client speaks the
/// provider's own API.
pub fn read_usage(wire: Wire, body: &[u8]) -> (Option<Usage>, Option<String>) {
    match wire {
        Wire::Anthropic => anthropic::read_usage(body),
        Wire::Gemini => gemini::read_usage(body),
        Wire::OpenAi => (None, None),
    }
}

//! LLM dialects: request encoding, response decoding, stream observation, usage.
//! Pure functions only; the proxy does the I/O. Each operation is one `match` on [`Wire`]
//! here, calling plain functions in the dialect's own file.

pub mod anthropic;
pub mod bedrock;
pub mod body;
pub mod eventstream;
pub mod openai;
pub mod sigv4;
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

/// What the gateway knows about an exchange that a provider's answer may leave out
/// (Bedrock's Converse answers name neither the model nor an id).
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The model the request was sent for.
    pub model: Option<&'a str>,
    /// The gateway's id of the request, unique per request.
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
    let encoded = || -> String {
        percent_encoding::utf8_percent_encode(model, percent_encoding::NON_ALPHANUMERIC).collect()
    };
    match wire {
        Wire::OpenAi | Wire::Anthropic => format!("{prefix}{}", encoded()),
        Wire::Bedrock => bedrock::request_path(prefix, model, stream),
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
        (Wire::Bedrock, RouteType::Chat) => bedrock::encode_chat(body, e),
        _ => Err(EncodeError(not_translated(wire, rt))),
    }
}

/// A native 200 answer as the OpenAI object of route type `rt`.
pub fn decode(
    wire: Wire,
    rt: RouteType,
    body: &[u8],
    created: u64,
    ex: &Exchange<'_>,
) -> Result<Decoded, String> {
    match (wire, rt) {
        (Wire::Anthropic, RouteType::Chat) => anthropic::decode_chat(body, created),
        (Wire::Bedrock, RouteType::Chat) => bedrock::decode_chat(body, created, ex),
        _ => Err(not_translated(wire, rt)),
    }
}

/// A native error body (with its status and headers, where some providers put the error
/// name) in OpenAI's error shape; None when the body is not the provider's error shape
/// (it then goes to the client as it came).
pub fn decode_error(
    wire: Wire,
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<Vec<u8>> {
    match wire {
        Wire::Anthropic => anthropic::decode_error(body),
        Wire::Bedrock => bedrock::decode_error(status, headers, body),
        Wire::OpenAi => None,
    }
}

/// Usage and model of a native answer, for the log of a route whose client speaks the
/// provider's own API.
pub fn read_usage(wire: Wire, body: &[u8]) -> (Option<Usage>, Option<String>) {
    match wire {
        Wire::Anthropic => anthropic::read_usage(body),
        Wire::Bedrock => bedrock::read_usage(body),
        Wire::OpenAi => (None, None),
    }
}

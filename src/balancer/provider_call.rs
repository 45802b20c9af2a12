//! One buffered, non-streamed request to a compiled provider target, outside ai-proxy's
//! retry loop: the embeddings of semantic routing and the AI transformers' chat calls.
//! The OpenAI-shaped request is encoded for the target's dialect (`llm::encode`, or
//! patched in place for OpenAI-compatible wires), authenticated the way the target is
//! (header, query or body parameter, GCP token, SigV4), sent with the gateway's upstream
//! client and its answer decoded back into OpenAI's shape (`llm::decode`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Uri};

use crate::config::plugins::{ModelOptions, ParamLocation, RouteType};
use crate::llm::body::BodyView;
use crate::llm::target::Target;
use crate::llm::{self, openai, Wire};
use crate::net::upstream::{Endpoint, OutRequest, Upstreams};
use crate::net::upstream_tls::Trust;

/// One call: what to ask which target, and how long to wait.
pub struct Call<'a> {
    pub target: &'a Target,
    pub route_type: RouteType,
    /// The model asked for (it also completes a model-in-path endpoint).
    pub model: &'a str,
    /// The request in OpenAI's shape.
    pub request: &'a [u8],
    /// `model.options` patched into an OpenAI-compatible body (the translating dialects
    /// always apply the target's).
    pub patch_options: Option<&'a ModelOptions>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// What TLS trusts for this call (None: the default roots).
    pub trust: Option<&'a Trust>,
}

/// Why a call gave no answer; never quotes a credential.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request could not be written for the target's dialect.
    #[error("{0}")]
    Encode(String),
    /// A credential (vault reference, GCP token, SigV4 signature) was not available.
    #[error("{0}")]
    Credential(String),
    /// The provider could not be reached, or the connection failed.
    #[error("{kind}: {detail}")]
    Send { kind: &'static str, detail: String },
    /// The answer's body could not be read.
    #[error("{0}")]
    Read(String),
    /// The provider answered with an error status.
    #[error("HTTP {status}: {snippet}")]
    Status { status: u16, snippet: String },
    /// The answer is not what the dialect promises.
    #[error("{0}")]
    Decode(String),
}

/// Sends `c` and returns the provider's answer in OpenAI's shape.
pub async fn send(upstreams: &Upstreams, c: &Call<'_>) -> Result<Vec<u8>, CallError> {
    let t = c.target;
    let body = encode(c)?;
    let target = uri(c)?;
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, t.upstream.host_header.clone());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Some((name, value)) = &t.auth.header {
        headers.insert(name.clone(), value.value().map_err(CallError::Credential)?);
    }
    for (name, value) in &t.extra_headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(cloud) = &t.auth.cloud_token {
        let source = cloud
            .as_ref()
            .map_err(|e| CallError::Credential(e.clone()))?;
        let v = source
            .authorization(upstreams, c.connect_timeout, c.read_timeout)
            .await
            .map_err(|e| CallError::Credential(e.to_string()))?;
        headers.insert(header::AUTHORIZATION, v);
    }
    if let Some(signer) = &t.sigv4 {
        // Last: the signature covers the final path, Host and body.
        signer
            .sign(
                &Method::POST,
                &target,
                &mut headers,
                &body,
                SystemTime::now(),
            )
            .map_err(CallError::Credential)?;
    }
    let out = OutRequest {
        method: Method::POST,
        target,
        headers: headers.into(),
        body,
        upload: None,
    };
    let up = &t.upstream;
    let ep = Endpoint {
        https: up.scheme == "https",
        host: &up.host,
        port: up.port,
        trust: c.trust,
    };
    let resp = upstreams
        .send(&ep, out, c.connect_timeout, c.read_timeout)
        .await
        .map_err(|f| CallError::Send {
            kind: f.kind.as_str(),
            detail: f.detail,
        })?;
    let status = resp.status();
    let bytes = crate::net::body::read_buffered(resp.into_body(), c.read_timeout)
        .await
        .map_err(|e| CallError::Read(e.to_string()))?;
    if !status.is_success() {
        return Err(CallError::Status {
            status: status.as_u16(),
            snippet: snippet(&bytes),
        });
    }
    decode(c, &bytes)
}

/// The request body for the target's dialect.
fn encode(c: &Call<'_>) -> Result<Bytes, CallError> {
    let t = c.target;
    let view = BodyView::parse(c.request).map_err(|e| CallError::Encode(e.to_string()))?;
    let param_value = match &t.auth.param {
        Some((name, value, ParamLocation::Body)) => {
            Some((name.as_str(), value.get().map_err(CallError::Credential)?))
        }
        _ => None,
    };
    let body_param = param_value
        .as_ref()
        .map(|(name, v)| (*name, v.expose().as_str()));
    Ok(match t.wire {
        Wire::OpenAi => {
            let patch = openai::Patch {
                model: None,
                options: c.patch_options,
                force_stream: false,
                add_include_usage: false,
                body_param,
                drop_stream_options: false,
            };
            openai::patch_request(c.route_type, &view, &patch)
                .map(Bytes::from)
                .unwrap_or_else(|| Bytes::copy_from_slice(c.request))
        }
        wire => {
            let e = llm::Encode {
                model: Some(c.model),
                options: &t.options,
                stream: false,
                body_param,
            };
            Bytes::from(
                llm::encode(wire, c.route_type, &view, &e).map_err(|e| CallError::Encode(e.0))?,
            )
        }
    })
}

/// The request's path and query: the configured path (completed with the model when it
/// is a prefix) or the route type's default, with a query auth parameter.
fn uri(c: &Call<'_>) -> Result<Uri, CallError> {
    let t = c.target;
    let mut path = match &t.upstream.path {
        Some(prefix) if t.model_path => {
            llm::request_path(t.wire, c.route_type, prefix, c.model, false)
        }
        Some(p) => p.to_string(),
        None => openai::default_path(c.route_type)
            .ok_or_else(|| {
                CallError::Encode(format!(
                    "route_type '{}' has no default path",
                    c.route_type.as_str()
                ))
            })?
            .to_string(),
    };
    if let Some((name, value, ParamLocation::Query)) = &t.auth.param {
        let v = value.get().map_err(CallError::Credential)?;
        let pair = form_urlencoded::Serializer::new(String::new())
            .append_pair(name, v.expose())
            .finish();
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&pair);
    }
    path.parse()
        .map_err(|_| CallError::Encode("the provider path is not a valid URI".into()))
}

/// The answer in OpenAI's shape.
fn decode(c: &Call<'_>, bytes: &[u8]) -> Result<Vec<u8>, CallError> {
    match c.target.wire {
        Wire::OpenAi => Ok(bytes.to_vec()),
        wire => {
            let created = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let asked = llm::Asked {
                model: Some(c.model),
                request: c.request,
                request_id: "",
            };
            llm::decode(wire, c.route_type, bytes, created, &asked)
                .map(|d| d.body)
                .map_err(CallError::Decode)
        }
    }
}

/// The start of an error body, for the operator's log (providers do not echo keys).
fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.chars().take(200).collect()
}

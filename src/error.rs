//! The one place that turns a failure into an HTTP response: status, JSON shape and log line.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

/// Every error a request can end with, by what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no Route matched with those values")]
    NoRoute,
    /// `key-auth` refused the request (401, Kong's text and `WWW-Authenticate`).
    #[error("{message}")]
    Unauthorized {
        message: &'static str,
        challenge: HeaderValue,
    },
    /// A client mistake: 400 with Kong's text.
    #[error("{0}")]
    BadRequest(String),
    /// The client names an object the provider's API does not know (404, e.g. a video id).
    #[error("{0}")]
    UnknownObject(String),
    /// `previous_response_id` names no conversation the gateway holds (400, OpenAI's text).
    #[error("Previous response with id '{0}' not found.")]
    UnknownPreviousResponse(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the client closed the connection while sending the request body")]
    ClientAborted,
    /// A method the route does not take (405 with `Allow`); the method is cut short.
    #[error("method {method} is not allowed; use {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    /// The client stalled mid-body longer than `--client-body-timeout` (408, Kong's text).
    #[error("Request timeout")]
    BodyTimeout,
    /// A WebSocket upgrade on a route that only speaks HTTP: 426 makes Codex fall back to
    /// HTTP + SSE at once (any other refusal costs it several retries).
    #[error("WebSocket is not supported on this route; use HTTP")]
    UpgradeRefused,
    /// A plain HTTP request on a route that only speaks WebSocket (the Realtime API): 426
    /// with `Upgrade: websocket`.
    #[error("this route serves the Realtime API over WebSocket: connect with Upgrade: websocket")]
    WebSocketRequired,
    /// Upstream could not be reached (after retries): 502.
    #[error("An invalid response was received from the upstream server")]
    UpstreamInvalid(String),
    /// `acls` leave no target for this request: 403 with Kong's ACL text.
    #[error("You cannot consume this service")]
    AclDenied,
    /// The circuit breaker has every target out: 500, as Kong answers.
    #[error("All upstream targets are unhealthy (circuit breaker open); try again later")]
    AllTargetsUnhealthy,
    /// Upstream refused connections: 503 (Kong's text).
    #[error("The upstream server is currently unavailable")]
    UpstreamUnavailable(String),
    #[error("The upstream server is timing out")]
    UpstreamTimeout(String),
    /// Upstream answered 200 but the body could not be read as the route type's format.
    #[error("transformation failed from type {provider}://{route_type}: {reason}")]
    Transformation {
        provider: String,
        route_type: String,
        reason: String,
    },
    /// No OAuth2 access token for the upstream (GCP service account, Azure identity): 502.
    #[error("failed to get {} access token: {reason}", .cloud.with_article())]
    CloudAuth { cloud: Cloud, reason: String },
    /// A secret (vault reference) or other precondition failed before the request left.
    #[error("LLM request failed before proxying")]
    BeforeProxying(String),
    /// A quota is spent (`rate-limiting`, `ai-rate-limiting-advanced`): the plugin's
    /// `error_code` (429 by default) and `error_message`.
    #[error("{message}")]
    RateLimited { status: StatusCode, message: String },
    /// The request's prompt alone is more than a token quota allows in any window, so no
    /// wait can help: 413, without `Retry-After`, so clients stop retrying.
    #[error("{0}")]
    PromptOverQuota(String),
    /// A guardrail refused the prompt (400); the message never quotes what was found.
    #[error("{0}")]
    PromptBlocked(String),
    /// `ai-semantic-response-guard` refused the answer (403); as vague as Kong's text.
    #[error("{0}")]
    ResponseBlocked(String),
    /// An AI transformer plugin's refusal: Kong's status and text, in the body shape
    /// Kong's transformers answer with on every route (`{"error":{"message"}}`).
    #[error("{message}")]
    AiTransformer { status: StatusCode, message: String },
    /// `ai-semantic-cache` with `stop_on_failure` could not look the request up (500 with
    /// Kong's text, which names the operation, not the store's address).
    #[error("{0}")]
    CacheFailed(String),
    #[error("An unexpected error occurred")]
    Internal(String),
}

/// The cloud an upstream access token comes from: clients are told which one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Gcp,
    Azure,
}

impl Cloud {
    /// The cloud's name as the error text reads it ("a GCP", "an Azure").
    pub fn with_article(self) -> &'static str {
        match self {
            Cloud::Gcp => "a GCP",
            Cloud::Azure => "an Azure",
        }
    }
}

/// Which body shape the route's clients expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error":{"message","type","code"}}` for AI routes.
    OpenAi,
    /// `{"message","request_id"}` for everything else (Kong core).
    Kong,
    /// `{"type":"error","error":{"type","message"}}` for routes whose clients speak
    /// Anthropic's Messages API (`llm_format: anthropic`), since that is what they parse.
    Anthropic,
}

/// Anthropic's `error.type` for an HTTP status.
pub fn anthropic_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

impl GatewayError {
    /// 405 for `method`, quoted at most 32 bytes long (a client may send a 10 KB one).
    pub fn method_not_allowed(method: &http::Method, allow: &'static str) -> GatewayError {
        let m = method.as_str();
        let cut = (0..=m.len().min(32))
            .rev()
            .find(|&i| m.is_char_boundary(i))
            .unwrap_or(0);
        let more = if cut < m.len() { "…" } else { "" };
        GatewayError::MethodNotAllowed {
            method: format!("{}{more}", &m[..cut]),
            allow,
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NoRoute | GatewayError::UnknownObject(_) => StatusCode::NOT_FOUND,
            GatewayError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::BadRequest(_)
            | GatewayError::UnknownPreviousResponse(_)
            | GatewayError::PromptBlocked(_) => StatusCode::BAD_REQUEST,
            GatewayError::RateLimited { status, .. }
            | GatewayError::AiTransformer { status, .. } => *status,
            GatewayError::BodyTooLarge { .. } | GatewayError::PromptOverQuota(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            GatewayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::ClientAborted => StatusCode::BAD_REQUEST,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UpgradeRefused | GatewayError::WebSocketRequired => {
                StatusCode::UPGRADE_REQUIRED
            }
            GatewayError::AclDenied | GatewayError::ResponseBlocked(_) => StatusCode::FORBIDDEN,
            GatewayError::UpstreamInvalid(_) | GatewayError::CloudAuth { .. } => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::UpstreamUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Transformation { .. }
            | GatewayError::AllTargetsUnhealthy
            | GatewayError::BeforeProxying(_)
            | GatewayError::CacheFailed(_)
            | GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `error.type` for this error.
    fn openai_type(&self) -> &'static str {
        if let GatewayError::RateLimited { .. } = self {
            return "rate_limit_exceeded";
        }
        match self.status().as_u16() {
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// A stable machine-readable code for clients and logs.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::NoRoute => "route_not_found",
            GatewayError::Unauthorized { .. } => "unauthorized",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::UnknownPreviousResponse(_) => "previous_response_not_found",
            GatewayError::UnknownObject(_) => "not_found",
            GatewayError::BodyTooLarge { .. } => "request_too_large",
            GatewayError::UnsupportedMediaType(_) => "unsupported_media_type",
            GatewayError::ClientAborted => "client_aborted",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::BodyTimeout => "request_timeout",
            GatewayError::UpgradeRefused => "websocket_not_supported",
            GatewayError::WebSocketRequired => "websocket_required",
            GatewayError::AclDenied => "acl_denied",
            GatewayError::UpstreamInvalid(_) => "upstream_error",
            GatewayError::CloudAuth { .. } => "upstream_auth_failed",
            GatewayError::UpstreamUnavailable(_) => "upstream_unavailable",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::AllTargetsUnhealthy => "all_targets_unhealthy",
            GatewayError::Transformation { .. } => "transformation_failed",
            GatewayError::BeforeProxying(_) => "before_proxying",
            GatewayError::RateLimited { .. } => "rate_limit_exceeded",
            GatewayError::PromptOverQuota(_) => "prompt_exceeds_quota",
            GatewayError::PromptBlocked(_) => "prompt_blocked",
            GatewayError::ResponseBlocked(_) => "response_blocked",
            GatewayError::AiTransformer { .. } => "ai_transformer_failed",
            GatewayError::CacheFailed(_) => "cache_failed",
            GatewayError::Internal(_) => "internal_error",
        }
    }

    /// Details for the operator's log only (never sent to the client).
    fn detail(&self) -> Option<&str> {
        match self {
            GatewayError::UpstreamInvalid(d)
            | GatewayError::UpstreamUnavailable(d)
            | GatewayError::UpstreamTimeout(d)
            | GatewayError::BeforeProxying(d)
            | GatewayError::Internal(d) => Some(d),
            _ => None,
        }
    }
}

/// The JSON body for an error in the given shape.
pub fn body(err: &GatewayError, shape: ErrorShape, request_id: &str) -> Bytes {
    let message = err.to_string();
    if let GatewayError::AiTransformer { .. } = err {
        return Bytes::from(json!({"error": {"message": message}}).to_string());
    }
    let v = match shape {
        ErrorShape::OpenAi => json!({"error": {
            "message": message, "type": err.openai_type(), "code": err.code(),
        }}),
        ErrorShape::Kong => json!({"message": message, "request_id": request_id}),
        ErrorShape::Anthropic => json!({"type": "error", "error": {
            "type": anthropic_type(err.status().as_u16()), "message": message,
        }, "request_id": request_id}),
    };
    Bytes::from(v.to_string())
}

/// Builds the response for `err` and logs it once.
pub fn respond<B: From<Bytes>>(
    err: &GatewayError,
    shape: ErrorShape,
    request_id: &str,
) -> Response<B> {
    let status = err.status();
    if status.is_server_error() {
        tracing::warn!(
            request_id,
            code = err.code(),
            detail = err.detail().unwrap_or(""),
            "{err}"
        );
    } else {
        tracing::debug!(request_id, code = err.code(), "{err}");
    }
    let mut resp = Response::new(B::from(body(err, shape, request_id)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-kong-request-id", v);
    }
    if let GatewayError::Unauthorized { challenge, .. } = err {
        h.insert(header::WWW_AUTHENTICATE, challenge.clone());
    }
    if let GatewayError::WebSocketRequired = err {
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    if let GatewayError::MethodNotAllowed { allow, .. } = err {
        h.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    h.insert(
        header::SERVER,
        HeaderValue::from_static(crate::SERVER_TOKEN),
    );
    resp
}

/// hyper's own answer to a request it could not parse (`400`, `414`, `431`), written on the
/// raw connection: the same status with Kong's body for it, then the connection closes.
pub fn raw_parse_error(status: u16, date: &str, request_id: &str) -> Vec<u8> {
    let (reason, message) = match status {
        414 => ("URI Too Long", "URI too long"),
        431 => (
            "Request Header Fields Too Large",
            "Request header or cookie too large",
        ),
        _ => ("Bad Request", "Bad request"),
    };
    let body = json!({"message": message, "request_id": request_id}).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\nx-kong-request-id: {request_id}\r\n\
         server: {}\r\ndate: {date}\r\n\r\n{body}",
        body.len(),
        crate::SERVER_TOKEN,
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let e = GatewayError::BodyTooLarge { limit: 10 };
        let v: serde_json::Value =
            serde_json::from_slice(&body(&e, ErrorShape::OpenAi, "r1")).unwrap_or_default();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "request_too_large");
        let v: serde_json::Value =
            serde_json::from_slice(&body(&GatewayError::NoRoute, ErrorShape::Kong, "r1"))
                .unwrap_or_default();
        assert_eq!(v["message"], "no Route matched with those values");
        assert_eq!(v["request_id"], "r1");
    }

    #[test]
    fn details_stay_out_of_the_body() {
        let e = GatewayError::UpstreamUnavailable("connect to 10.0.0.1:443 refused".into());
        let b = body(&e, ErrorShape::OpenAi, "r");
        assert!(!String::from_utf8_lossy(&b).contains("10.0.0.1"));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

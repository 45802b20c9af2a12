//! The answers the gateway builds: its own errors (which still go through the log phase)
//! and the upstream's answer in each of the forms an AI route gives it.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::config::plugins::RouteType;
use crate::error::{self, ErrorShape, GatewayError};
use crate::gateway::Snapshot;
use crate::llm::stream::Dialect;
use crate::llm::target::Target;
use crate::llm::{self};
use crate::observe::log::{HeaderCopy, RequestLog};
use crate::proxy::exchange::Exchange;
use crate::proxy::response::{Feedback, Finish, ProxyBody};

use super::headers::add_headers;
use super::{access, ms, response};
use crate::plugins::ai_sanitizer_filter;

/// A gateway-generated error response that still goes through the log phase.
pub(super) fn kong_error(
    err: GatewayError,
    shape: ErrorShape,
    log: Exchange,
    snap: Arc<Snapshot>,
) -> Response<ProxyBody> {
    kong_error_with(err, shape, log, snap, Vec::new())
}

/// [`kong_error`] with plugin headers (a quota's), which the log record shows too.
pub(super) fn kong_error_with(
    err: GatewayError,
    shape: ErrorShape,
    mut log: Exchange,
    snap: Arc<Snapshot>,
    headers: access::Headers,
) -> Response<ProxyBody> {
    let mut resp: Response<ProxyBody> = error::respond(&err, shape, &log.request_id);
    add_headers(&mut resp, headers);
    resp.headers_mut().insert(
        "x-kong-response-latency",
        HeaderValue::from(ms(log.started.elapsed())),
    );
    log.status = resp.status().as_u16();
    if log.enabled {
        log.response_headers = HeaderCopy::of(resp.headers());
    }
    log.source = "kong";
    if let Some(ai) = log.ai.as_mut() {
        ai.stream_error = Some(err.to_string());
    }
    let body = error::body(&err, shape, &log.request_id);
    *resp.body_mut() = ProxyBody::full(body, Finish::boxed(log, snap, None));
    resp
}

/// A successful answer after `ai-sanitizer` restored and masked it; the log's payload
/// keeps what the upstream said.
pub(super) fn answer_filtered(
    f: Option<&ai_sanitizer_filter::Filter>,
    status: StatusCode,
    out: Bytes,
    capture: &mut Option<Vec<u8>>,
) -> Bytes {
    match f {
        Some(f) if status == StatusCode::OK && f.active() => {
            if let Some(cap) = capture.as_mut() {
                cap.extend_from_slice(&out[..out.len().min(1 << 20)]);
            }
            f.body(&out)
        }
        _ => out,
    }
}

/// The usage and model of a buffered answer, for the log (and the balancer's feedback).
pub(super) fn note_answer(
    log: &mut RequestLog,
    usage: Option<llm::usage::Usage>,
    model: Option<String>,
) {
    if let Some(a) = log.ai.as_mut() {
        a.usage = usage;
        a.response_model = model;
        a.llm_latency_ms = Some(ms(log.started.elapsed()));
    }
}

/// A body the gateway rewrote (a translated answer, or a provider error in OpenAI's shape),
/// sent as JSON with its own length.
pub(super) fn json_answer(
    status: StatusCode,
    mut headers: HeaderMap,
    out: Bytes,
    log: Exchange,
    snap: Arc<Snapshot>,
    capture: Option<Vec<u8>>,
    feedback: Option<Feedback>,
) -> Response<ProxyBody> {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    headers.remove(header::CONTENT_ENCODING);
    buffered_response(status, headers, out, log, snap, capture, feedback)
}

/// The client's response for a buffered answer, with the log phase after its body.
pub(super) fn buffered_response(
    status: StatusCode,
    headers: HeaderMap,
    bytes: Bytes,
    mut log: Exchange,
    snap: Arc<Snapshot>,
    mut capture: Option<Vec<u8>>,
    feedback: Option<Feedback>,
) -> Response<ProxyBody> {
    log.status = status.as_u16();
    if log.enabled {
        log.response_headers = HeaderCopy::of(&headers);
    }
    if let Some(p) = log.cache.as_mut() {
        p.tap(&bytes);
    }
    // Already holding the upstream's answer when the gateway rewrote it for the client.
    if let Some(cap) = capture.as_mut().filter(|c| c.is_empty()) {
        cap.extend_from_slice(&bytes[..bytes.len().min(1 << 20)]);
    }
    let finish = Finish::with_feedback(log, snap, capture, feedback);
    let mut resp = Response::new(ProxyBody::full(bytes, finish));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// A streaming request answered 200 with something other than a stream (an upstream that
/// ignored `stream: true`, a captive portal's page): the client parses SSE, so it gets one
/// SSE error event, as for a stream cut short, and the log says what came instead.
pub(super) fn not_a_stream(
    target: &Target,
    mut headers: HeaderMap,
    sent: Bytes,
    mut log: Exchange,
    snap: Arc<Snapshot>,
    mut capture: Option<Vec<u8>>,
    feedback: Option<Feedback>,
) -> Response<ProxyBody> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type")
        .to_string();
    let why = format!(
        "upstream answered a streaming request with a non-stream body ({ct}, {} bytes)",
        sent.len()
    );
    tracing::warn!(provider = target.provider.as_str(), "{why}");
    if let Some(cap) = capture.as_mut() {
        cap.extend_from_slice(&sent[..sent.len().min(1 << 20)]);
    }
    if let Some(a) = log.ai.as_mut() {
        a.stream_error = Some(why);
    }
    let event = response::error_event(
        sse_dialect(target),
        "The upstream server answered the streaming request without a stream",
        "upstream_invalid_stream",
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::CONTENT_ENCODING);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    buffered_response(StatusCode::OK, headers, event, log, snap, capture, feedback)
}

/// The SSE event shape the client of `target`'s route type reads.
pub(super) fn sse_dialect(target: &Target) -> Dialect {
    if target.bridge_messages {
        Dialect::Messages
    } else if target.route_type == RouteType::Responses {
        Dialect::Responses
    } else {
        Dialect::ChatLike
    }
}

/// A 200 answer that is not what the route type promises.
pub(super) fn transformation_error(target: &Target, reason: String) -> GatewayError {
    GatewayError::Transformation {
        provider: target.provider.as_str().into(),
        route_type: target.route_type.as_str().into(),
        reason,
    }
}

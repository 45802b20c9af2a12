//! `ai-semantic-response-guard` on an AI route's answer: the whole answer (from the
//! upstream or the semantic cache) is held and checked before any of it is released; a
//! refused one becomes the guard's 403, a passed one goes out as it is, or replayed as the
//! stream the client asked for (the guard turned streaming off upstream).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::config::plugins::RouteType;
use crate::error::GatewayError;
use crate::gateway::{Gateway, Snapshot};
use crate::llm::replay;
use crate::observe::log::HeaderCopy;
use crate::plugins::ai_proxy::AiProxy;
use crate::plugins::phases::ArmedGuard;
use crate::plugins::semantic_rules::Refusal;
use crate::proxy::exchange::Exchange;
use crate::proxy::response::{Finish, ProxyBody};

use super::answer::kong_error;

/// Kong's deliberately vague text for a refused answer.
const BAD_RESPONSE: &str = "bad response";

/// Checks `resp` (a 200 answer) with the armed guard; errors and other statuses pass.
/// `ids`: the request's id and start, for a refusal when no log phase was set up.
pub(super) async fn screen(
    gw: &Gateway,
    armed: ArmedGuard,
    ai: &AiProxy,
    mut resp: Response<ProxyBody>,
    ids: (&str, Instant),
    snap: Arc<Snapshot>,
) -> Response<ProxyBody> {
    let Some(route_type) = ai.targets.first().map(|t| t.route_type) else {
        return resp;
    };
    if resp.status() != StatusCode::OK
        || !crate::plugins::ai_semantic_response_guard::guards(route_type)
    {
        return resp;
    }
    let Some((bytes, finish)) = resp.body_mut().take_full() else {
        // Streamed after all (ai-proxy's `response_streaming: always`): never seen whole.
        let finish = resp.body_mut().take_finish();
        let why = Refusal::Failed("the answer was streamed, so it could not be held".into());
        return refuse(why, finish, ai, ids, snap);
    };
    let checked = armed.guard.check(&gw.upstreams, route_type, &bytes).await;
    match checked.and_then(|_| replayed(&armed, route_type, &bytes)) {
        Ok(stream) => release(resp, bytes, stream, finish),
        Err(why) => refuse(why, finish, ai, ids, snap),
    }
}

/// The answer as the client asked for it: None (as it came), or replayed as a stream.
fn replayed(
    armed: &ArmedGuard,
    route_type: RouteType,
    bytes: &Bytes,
) -> Result<Option<Bytes>, Refusal> {
    if !armed.stream {
        return Ok(None);
    }
    let usage = armed.include_usage;
    let stream = match route_type {
        RouteType::Chat => replay::chat_stream(bytes, usage),
        RouteType::Completions => replay::completion_stream(bytes, usage),
        _ => replay::responses_stream(bytes),
    };
    stream.map(|s| Some(Bytes::from(s))).ok_or(Refusal::NoText)
}

/// Sends the checked answer: `bytes` as they were, or `stream` in their place.
fn release(
    mut resp: Response<ProxyBody>,
    bytes: Bytes,
    stream: Option<Bytes>,
    mut finish: Option<Box<Finish>>,
) -> Response<ProxyBody> {
    let out = match stream {
        Some(s) => {
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(s.len()));
            if let Some(f) = finish.as_mut().filter(|f| f.log.enabled) {
                f.log.response_headers = HeaderCopy::of(resp.headers());
            }
            s
        }
        None => bytes,
    };
    *resp.body_mut() = ProxyBody::full(out, finish);
    resp
}

/// The guard's refusal (or failure to check: Kong fails closed), as a 403.
fn refuse(
    why: Refusal,
    finish: Option<Box<Finish>>,
    ai: &AiProxy,
    (request_id, started): (&str, Instant),
    snap: Arc<Snapshot>,
) -> Response<ProxyBody> {
    let plugin = "ai-semantic-response-guard";
    match &why {
        Refusal::Failed(_) | Refusal::TooLarge(..) | Refusal::NoText => {
            tracing::warn!(plugin, request_id, "answer refused: {}", why.reason());
        }
        _ => tracing::debug!(plugin, request_id, "answer refused: {}", why.reason()),
    }
    crate::observe::metrics::global()
        .guardrail_hits
        .add(&[plugin, "blocked", ""], 1.0);
    let mut log = match finish {
        Some(f) => f.log,
        None => Exchange::new(
            crate::observe::log::RequestId::new(request_id.to_owned()),
            started,
        ),
    };
    log.guardrail = Some("blocked");
    let e = GatewayError::ResponseBlocked(BAD_RESPONSE.into());
    kong_error(e, ai.error_shape(), log, snap)
}

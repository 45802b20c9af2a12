//! An AI route's request: parsed once, checked as Kong checks it, bridged or translated
//! for its targets, sent through the retry loop, and answered in the form the client asked.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::config::plugins::{LlmFormat, RouteType};
use crate::error::{ErrorShape, GatewayError};
use crate::gateway::Gateway;
use crate::gateway::Snapshot;
use crate::llm::body::BodyView;
use crate::llm::responses;
use crate::llm::stream::{Dialect, Mapper, SseObserver};
use crate::llm::target::Target;
use crate::llm::Wire;
use crate::llm::{self, openai};
use crate::net::body::read_buffered;
use crate::net::upstream_tls;
use crate::observe::log::{AiLog, HeaderCopy, Try};
use crate::plugins::ai_proxy::AiProxy;
use crate::plugins::request_transformer::UpstreamRequest;
use crate::plugins::template::TemplateSources;
use crate::proxy::exchange::Exchange;
use crate::proxy::response::{Feedback, Finish, ProxyBody};

use super::answer::{
    answer_filtered, buffered_response, json_answer, kong_error, not_a_stream, note_answer,
    sse_dialect, transformation_error,
};
use super::headers::{add_proxy_headers, strip_hop_by_hop, Forwarded};
use super::{ms, retry, unix_seconds};
use crate::plugins::ai_sanitizer_filter;

pub(super) struct AiCtx<'a> {
    pub(super) gw: &'a Gateway,
    pub(super) ai: &'a Arc<AiProxy>,
    pub(super) up: &'a UpstreamRequest,
    pub(super) raw_query: Option<&'a str>,
    pub(super) sources: &'a TemplateSources<'a>,
    pub(super) forwarded: &'a Forwarded<'a>,
    pub(super) is_debug: bool,
    /// The route's service's upstream TLS trust (None: the default).
    pub(super) trust: Option<&'a upstream_tls::Trust>,
    /// `ai-sanitizer`'s work on the answer (restoring, masking).
    pub(super) filter: Option<ai_sanitizer_filter::Filter>,
    pub(super) timeouts: crate::plugins::ai_proxy::Timeouts,
}

pub(super) async fn proxy_ai(
    c: AiCtx<'_>,
    mut log: Exchange,
    snap: Arc<Snapshot>,
) -> Response<ProxyBody> {
    let ai: &AiProxy = c.ai;
    let first = ai.targets.first();
    let preserve_only = ai
        .targets
        .iter()
        .all(|t| t.route_type == RouteType::Preserve);
    let log_statistics = first.map(|t| t.logging.log_statistics).unwrap_or(false);
    let log_payloads = log.enabled && first.map(|t| t.logging.log_payloads).unwrap_or(false);
    // The balancer reads usage from the log record even when no log plugin does.
    let charging = !log.charges.is_empty();
    if log.enabled
        || ai.balancer.learns()
        || charging
        || log.metrics
        || log.analytics.is_some()
        || log.trace.is_some_and(|t| t.sampled)
    {
        let mut a = AiLog::new(c.ai.targets.clone());
        if log_payloads {
            a.payload_request = Some(String::from_utf8_lossy(&c.up.body).into_owned());
        }
        log.ai = Some(a);
    }

    // Kong's LLM route types are POST APIs (the WebSocket GET was answered before this).
    if !preserve_only && c.up.method != http::Method::POST {
        let e = GatewayError::method_not_allowed(&c.up.method, "POST");
        return kong_error(e, ErrorShape::OpenAi, log, snap);
    }
    // Parse once; a non-preserve route needs a JSON object.
    let bad_json = || {
        GatewayError::BadRequest(
            "content-type header does not match request body, or bad JSON formatting".into(),
        )
    };
    let parsed: Option<BodyView<'_>> = if preserve_only {
        None
    } else {
        if !crate::llm::body::is_json(c.up.headers.get(header::CONTENT_TYPE)) {
            return kong_error(bad_json(), ErrorShape::OpenAi, log, snap);
        }
        match BodyView::parse(&c.up.body) {
            Ok(v) => Some(v),
            Err(e) => {
                let e = GatewayError::BadRequest(e.to_string());
                return kong_error(e, ErrorShape::OpenAi, log, snap);
            }
        }
    };
    // A client speaking Converse names the model and streaming in its path.
    let native_call = match (ai.llm_format, &parsed) {
        (LlmFormat::Bedrock, Some(_)) => match llm::bedrock::native_call(&c.up.path) {
            Some(call) => Some(call),
            None => {
                let e = GatewayError::BadRequest(
                    "llm_format bedrock: the path must end with /model/{modelId}/converse or /model/{modelId}/converse-stream".into(),
                );
                return kong_error(e, ErrorShape::OpenAi, log, snap);
            }
        },
        _ => None,
    };
    let asked = match &native_call {
        Some((_, stream)) => *stream,
        // Gemini's clients pick the streaming method in the path.
        None if ai.llm_format == LlmFormat::Gemini => llm::gemini::path_streams(&c.up.path),
        // TGI streams at `generate_stream`; the router's paths (and Cohere's) by the body.
        None if ai.llm_format == LlmFormat::Huggingface
            && llm::huggingface::path_streams(&c.up.path) =>
        {
            true
        }
        None => parsed.as_ref().and_then(|b| b.bool("stream")) == Some(true),
    };
    let stream = if parsed.is_some() {
        match crate::plugins::ai_proxy::streaming(ai.streaming, asked) {
            Ok(s) => s,
            Err(e) => return kong_error(e, ErrorShape::OpenAi, log, snap),
        }
    } else {
        false
    };
    let client_wants_usage = parsed
        .as_ref()
        .map(openai::client_wants_usage)
        .unwrap_or(false);
    if let Some(a) = log.ai.as_mut() {
        a.stream = stream;
    }
    // Targets without a Responses API get the request as chat: translated once, here.
    let bridge = match (&parsed, ai.targets.iter().any(|t| t.bridge_responses)) {
        (Some(p), true) => match bridge_request(c.gw, p, stream) {
            Ok(b) => Some(b),
            Err(e) => return kong_error(e, ErrorShape::OpenAi, log, snap),
        },
        _ => None,
    };
    // Completions on chat-only dialects: the prompt as one chat message.
    let completions_chat: Option<Bytes> =
        match (&parsed, ai.targets.iter().any(|t| t.bridge_completions)) {
            (Some(p), true) => match llm::completions::to_chat(p, stream) {
                Ok(b) => Some(Bytes::from(b)),
                Err(e) => {
                    return kong_error(GatewayError::BadRequest(e.0), ErrorShape::OpenAi, log, snap)
                }
            },
            _ => None,
        };
    let chat_bytes = bridge
        .as_ref()
        .map(|b| &b.bytes)
        .or(completions_chat.as_ref());
    let chat_view = match chat_bytes.map(|b| BodyView::parse(b)) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            let e = GatewayError::Internal(format!("chat bridge: {e}"));
            return kong_error(e, ErrorShape::OpenAi, log, snap);
        }
    };
    // model_alias: a client model naming an alias picks among that alias's targets.
    let candidates: Option<&[usize]> = match (&parsed, ai.aliases.is_empty()) {
        (Some(p), false) => p.str("model").and_then(|m| {
            ai.aliases
                .iter()
                .find(|(alias, _)| *alias == m)
                .map(|(_, t)| t.as_slice())
        }),
        _ => None,
    };
    // acls: the targets this request may use (within the alias's, if one matched).
    let acl_allowed: Option<Vec<usize>> = (!ai.acls.is_empty()).then(|| {
        let client_model = parsed.as_ref().and_then(|p| p.str("model"));
        let r = crate::balancer::acl::Request {
            headers: &c.up.headers,
            ip: c.forwarded.client_ip.parse().ok(),
            // The client's path, as the route saw it (before strip_path).
            path: c.forwarded.path,
            model: client_model.as_deref(),
        };
        let pool: Vec<usize> = match candidates {
            Some(c) => c.to_vec(),
            None => (0..ai.targets.len()).collect(),
        };
        pool.into_iter()
            .filter(|i| {
                ai.targets.get(*i).is_some_and(|t| {
                    ai.acls.permits(
                        &r,
                        &crate::balancer::acl::TargetView {
                            provider: t.provider.as_str(),
                            model: t.model_name.as_deref(),
                        },
                    )
                })
            })
            .collect()
    });
    if acl_allowed.as_ref().is_some_and(Vec::is_empty) {
        return kong_error(GatewayError::AclDenied, ErrorShape::OpenAi, log, snap);
    }
    let candidates = acl_allowed.as_deref().or(candidates);
    let force_stream = stream && !asked;
    // Token quotas and metrics need the usage of streams too.
    let add_include_usage = stream
        && !client_wants_usage
        && (log_statistics || charging || log.metrics || log.analytics.is_some());
    // Semantic routing picks the preferred targets before the retry loop (access phase).
    let preferred = match (&ai.semantic, &parsed) {
        (Some(s), Some(p)) => {
            let began = log.started.elapsed();
            let routed = Box::pin(s.route(&c.gw.upstreams, p)).await;
            let took = log.started.elapsed() - began;
            if let Some(a) = log.ai.as_mut() {
                a.semantic = Some(routed.log);
                a.semantic_at = Some((began.as_micros() as u64, took.as_micros() as u64));
            }
            match routed.candidates {
                Ok(c) => Some(c),
                Err(e) => return kong_error(e, ErrorShape::OpenAi, log, snap),
            }
        }
        _ => None,
    };
    let req = retry::AiRequest {
        body: parsed.as_ref(),
        chat: chat_view.as_ref().zip(chat_bytes),
        up: c.up,
        raw_query: c.raw_query,
        sources: c.sources,
        force_stream,
        stream,
        native: ai.llm_format != LlmFormat::Openai,
        path_model: native_call.as_ref().map(|(m, _)| m.as_str()),
        add_include_usage: add_include_usage && ai.llm_format == LlmFormat::Openai,
        forwarded: c.forwarded,
        record: log.enabled || log.metrics || log.trace.is_some(),
        hash_key: ai
            .hash_on_header
            .as_ref()
            .and_then(|h| c.up.headers.get(h))
            .map(HeaderValue::as_bytes),
        candidates,
        preferred: preferred.as_deref(),
        trust: c.trust,
        trace: log.trace,
        timeouts: c.timeouts,
    };
    log.proxy_latency_ms = Some(ms(log.started.elapsed()));
    let mut tries: Vec<Try> = Vec::new();
    let result = retry::run(&c.gw.upstreams, ai, &req, &mut tries, log.started).await;
    log.tries = tries;
    let answered = match result {
        Ok(a) => a,
        Err(e) => return kong_error(e, ErrorShape::OpenAi, log, snap),
    };
    // From here every return carries (or drops) this, ending the target's in-flight count.
    let feedback = ai.balancer.learns().then(|| {
        Feedback::new(
            c.ai.clone(),
            answered.target,
            answered.sent_at,
            answered.resp.status().is_success(),
        )
    });
    let Some(target) = ai.targets.get(answered.target) else {
        return kong_error(
            GatewayError::Internal("target".into()),
            ErrorShape::OpenAi,
            log,
            snap,
        );
    };
    log.upstream_latency_ms = Some(ms(answered.sent_at.elapsed()));
    log.upstream_uri = log.tries.last().map(|t| t.upstream_uri.clone());
    if let Some(a) = log.ai.as_mut() {
        a.target = Some(answered.target);
        a.request_model = answered.model.clone();
    }
    let conn = answered.conn;
    let (mut parts, body) = answered.resp.into_parts();
    let status = parts.status;
    log.upstream_status = Some(status.as_u16());
    strip_hop_by_hop(&mut parts.headers);
    let mut headers = parts.headers;
    headers.remove(header::SET_COOKIE);
    add_proxy_headers(&mut headers, &log);
    if status == StatusCode::OK && (ai.model_name_header || c.is_debug) {
        if let Some(m) = &answered.model {
            if let Ok(v) = HeaderValue::from_str(&format!("{}/{}", target.provider.as_str(), m)) {
                headers.insert("x-kong-llm-model", v);
            }
        }
    }
    log.source = "upstream";
    let read_timeout = c.timeouts.read;
    let mut capture = log_payloads.then(Vec::new);
    // A stream the gateway can read: SSE, or the binary event stream Bedrock answers
    // ConverseStream with.
    let is_sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| llm::is_native_stream(target.wire, v))
        .unwrap_or(false)
        // A native client's own streamed call is read as a stream, never buffered.
        || (status == StatusCode::OK
            && stream
            && !force_stream
            && ai.llm_format != LlmFormat::Openai
            && target.native_clients_own_api());
    // What the upstream was asked, for answers and streams that do not say it.
    let asked = llm::Asked {
        model: answered.model.as_deref(),
        request: &c.up.body,
        request_id: &log.request_id,
    };

    let native = ai.llm_format != LlmFormat::Openai;
    let translated =
        target.wire != Wire::OpenAi && target.route_type != RouteType::Preserve && !native;
    if native && status == StatusCode::OK && !is_sse && target.route_type != RouteType::Preserve {
        // The provider's answer goes to the client as it is; only usage is read for the log.
        let bytes = match read_buffered(body, conn, read_timeout).await {
            Ok(b) => b,
            Err(e) => return kong_error(e, ErrorShape::OpenAi, log, snap),
        };
        let latency = ms(log.started.elapsed());
        if let Some(a) = log.ai.as_mut() {
            (a.usage, a.response_model) = llm::read_usage(target.wire, &bytes);
            a.llm_latency_ms = Some(latency);
        }
        return buffered_response(status, headers, bytes, log, snap, capture, feedback);
    }
    if target.bridge_completions && !(status == StatusCode::OK && is_sse) {
        // A chat answer (in the provider's dialect) rebuilt as a `text_completion`.
        let bytes = match read_buffered(body, conn, read_timeout).await {
            Ok(b) => b,
            Err(e) => return kong_error(e, ErrorShape::OpenAi, log, snap),
        };
        let out = if status == StatusCode::OK {
            let decoded = llm::decode(target.wire, RouteType::Chat, &bytes, unix_seconds(), &asked)
                .and_then(|d| Ok((llm::completions::from_chat(&d.body)?, d.usage, d.model)));
            match decoded {
                Ok((out, usage, model)) => {
                    note_answer(&mut log, usage, model);
                    Bytes::from(out)
                }
                Err(reason) => {
                    let e = transformation_error(target, reason);
                    return kong_error(e, ErrorShape::OpenAi, log, snap);
                }
            }
        } else {
            llm::decode_error(target.wire, status.as_u16(), &headers, &bytes)
                .map(Bytes::from)
                .unwrap_or(bytes)
        };
        let out = answer_filtered(c.filter.as_ref(), status, out, &mut capture);
        return json_answer(status, headers, out, log, snap, capture, feedback);
    }
    let bridged = target.bridge_responses && bridge.is_some();
    if bridged && !(status == StatusCode::OK && is_sse) {
        // A chat answer (in the provider's dialect) rebuilt as a Response object.
        let bytes = match read_buffered(body, conn, read_timeout).await {
            Ok(b) => b,
            Err(e) => return kong_error(e, ErrorShape::OpenAi, log, snap),
        };
        let out = if status == StatusCode::OK {
            let Some(b) = bridge else {
                return kong_error(
                    GatewayError::Internal("bridge".into()),
                    ErrorShape::OpenAi,
                    log,
                    snap,
                );
            };
            match bridged_answer(c.gw, target, &bytes, b, &asked) {
                Ok((out, usage, model)) => {
                    note_answer(&mut log, usage, model);
                    Bytes::from(out)
                }
                Err(reason) => {
                    let e = transformation_error(target, reason);
                    return kong_error(e, ErrorShape::OpenAi, log, snap);
                }
            }
        } else {
            llm::decode_error(target.wire, status.as_u16(), &headers, &bytes)
                .map(Bytes::from)
                .unwrap_or(bytes)
        };
        let out = answer_filtered(c.filter.as_ref(), status, out, &mut capture);
        return json_answer(status, headers, out, log, snap, capture, feedback);
    }
    if translated && !(status == StatusCode::OK && is_sse) {
        // A provider's own answer or error, rewritten whole into OpenAI's shape.
        let bytes = match read_buffered(body, conn, read_timeout).await {
            Ok(b) => b,
            Err(e) => return kong_error(e, ErrorShape::OpenAi, log, snap),
        };
        let out = if status == StatusCode::OK {
            match llm::decode(
                target.wire,
                target.route_type,
                &bytes,
                unix_seconds(),
                &asked,
            ) {
                Ok(d) => {
                    note_answer(&mut log, d.usage, d.model);
                    Bytes::from(d.body)
                }
                Err(reason) => {
                    let e = transformation_error(target, reason);
                    return kong_error(e, ErrorShape::OpenAi, log, snap);
                }
            }
        } else {
            // The provider's status stays; its message moves into OpenAI's error shape.
            llm::decode_error(target.wire, status.as_u16(), &headers, &bytes)
                .map(Bytes::from)
                .unwrap_or(bytes)
        };
        let out = answer_filtered(c.filter.as_ref(), status, out, &mut capture);
        return json_answer(status, headers, out, log, snap, capture, feedback);
    }

    if status == StatusCode::OK && target.route_type != RouteType::Preserve && !is_sse && !stream {
        // Buffered: check the shape and read usage, then send the bytes unchanged.
        let bytes = match read_buffered(body, conn, read_timeout).await {
            Ok(b) => b,
            Err(e) => return kong_error(e, ErrorShape::OpenAi, log, snap),
        };
        match openai::decode_response(target.route_type, &bytes) {
            Ok(d) => {
                note_answer(&mut log, d.usage, d.model.map(Cow::into_owned));
            }
            Err(reason) => {
                let e = transformation_error(target, reason);
                return kong_error(e, ErrorShape::OpenAi, log, snap);
            }
        }
        let bytes = answer_filtered(c.filter.as_ref(), status, bytes, &mut capture);
        // Usually the upstream's own Content-Length, which is then kept as it is.
        let same_length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            == Some(bytes.len());
        if !same_length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        }
        return buffered_response(status, headers, bytes, log, snap, capture, feedback);
    }

    if stream && status == StatusCode::OK && !is_sse && target.route_type != RouteType::Preserve {
        let sent = read_buffered(body, conn, read_timeout)
            .await
            .unwrap_or_default();
        return not_a_stream(target, headers, sent, log, snap, capture, feedback);
    }
    // Streamed (or passed through untouched): observe SSE on the way.
    let dialect = sse_dialect(target);
    let observing = status == StatusCode::OK && is_sse && target.route_type != RouteType::Preserve;
    // A translated stream always ends with a usage chunk; it reaches the client only if asked.
    let mapper = match bridge {
        Some(b) if observing && bridged => {
            let on_complete = b.meta.store.then(|| {
                let store = c.gw.conversations.clone();
                let id = b.meta.id.clone();
                let mut conversation = b.conversation;
                Box::new(move |assistant: serde_json::Value| {
                    conversation.push(assistant);
                    store.put(id, conversation);
                }) as llm::stream::OnComplete
            });
            let stage = responses::StreamMapper::new(b.meta);
            Some(Mapper::responses(
                target.wire,
                unix_seconds(),
                &asked,
                stage,
                on_complete,
            ))
        }
        _ if observing && target.bridge_completions => {
            Some(Mapper::completions(target.wire, unix_seconds(), &asked))
        }
        _ if observing && (translated || native) => {
            Mapper::new(target.wire, unix_seconds(), &asked, native)
        }
        _ => None,
    };
    if mapper.as_ref().is_some_and(|m| !m.observe_only()) {
        // Whatever the provider streams (SSE, NDJSON), the client gets OpenAI's SSE.
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
    }
    let strip_usage = match &mapper {
        Some(m) if m.observe_only() || bridged => false,
        Some(_) => !client_wants_usage,
        None => add_include_usage && dialect == Dialect::ChatLike,
    };
    let observer = observing.then(|| SseObserver::new(dialect, strip_usage));
    if observer.is_some() {
        headers.remove(header::CONTENT_LENGTH);
    }
    log.status = status.as_u16();
    if log.enabled {
        log.response_headers = HeaderCopy::of(&headers);
    }
    let sse = observer.is_some().then_some(dialect);
    let finish = Finish::with_feedback(log, snap, capture, feedback);
    let sse_filter = c
        .filter
        .filter(|f| f.active() && observing && !native)
        .map(ai_sanitizer_filter::SseFilter::new);
    let mut resp = Response::new(ProxyBody::upstream(
        body,
        conn,
        mapper,
        observer,
        sse,
        read_timeout,
        finish,
    ));
    if let Some(f) = sse_filter {
        resp.body_mut().set_filter(f);
    }
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// A Responses request translated for chat-only targets.
pub(super) struct Bridge {
    bytes: Bytes,
    /// History and this input, stored with the answer under the new response id.
    conversation: Vec<serde_json::Value>,
    meta: Arc<responses::Meta>,
}

/// Translates a Responses body to chat, with the conversation its `previous_response_id`
/// names.
pub(super) fn bridge_request(
    gw: &Gateway,
    body: &BodyView<'_>,
    stream: bool,
) -> Result<Bridge, GatewayError> {
    let history = match body.str("previous_response_id") {
        Some(id) => Some(
            gw.conversations
                .get(&id)
                .ok_or_else(|| GatewayError::UnknownPreviousResponse(id.into_owned()))?,
        ),
        None => None,
    };
    let r = responses::to_chat(
        body,
        history.as_deref().map(Vec::as_slice),
        stream,
        unix_seconds(),
    )
    .map_err(|e| GatewayError::BadRequest(e.0))?;
    Ok(Bridge {
        bytes: Bytes::from(r.body),
        conversation: r.conversation,
        meta: r.meta,
    })
}

/// A Response object's bytes, with the usage and model the log records.
pub(super) type BridgedAnswer = (Vec<u8>, Option<llm::usage::Usage>, Option<String>);

/// A bridged target's buffered 200 answer as a Response object (stored for
/// `previous_response_id` unless the client said `store: false`); usage and model for the log.
pub(super) fn bridged_answer(
    gw: &Gateway,
    target: &Target,
    bytes: &[u8],
    b: Bridge,
    asked: &llm::Asked<'_>,
) -> Result<BridgedAnswer, String> {
    let (chat, usage, model) = if target.wire == Wire::OpenAi {
        let d = openai::decode_response(RouteType::Chat, bytes)?;
        (None, d.usage, d.model.map(Cow::into_owned))
    } else {
        let d = llm::decode(target.wire, RouteType::Chat, bytes, unix_seconds(), asked)?;
        (Some(d.body), d.usage, d.model)
    };
    let r = responses::from_chat(chat.as_deref().unwrap_or(bytes), &b.meta, usage.as_ref())?;
    if b.meta.store {
        if let Some(a) = r.assistant {
            let mut conversation = b.conversation;
            conversation.push(a);
            gw.conversations.put(b.meta.id.clone(), conversation);
        }
    }
    Ok((r.body, usage, model))
}

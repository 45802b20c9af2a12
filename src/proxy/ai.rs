//! An AI route's request: parsed once, checked as Kong checks it, bridged or translated
//! for its targets, sent through the retry loop, and answered in the form the client asked.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::config::plugins::{LlmFormat, RouteType};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::gateway::Snapshot;
use crate::llm::body::BodyView;
use crate::llm::responses;
use crate::llm::target::Target;
use crate::llm::Wire;
use crate::llm::{self, openai};
use crate::net::body::read_buffered;
use crate::net::upstream_tls;
use crate::observe::log::{AiLog, RequestLog, Try};
use crate::plugins::ai_proxy::AiProxy;
use crate::plugins::ai_sanitizer_filter::Filter;
use crate::plugins::request_transformer::UpstreamRequest;
use crate::plugins::template::TemplateSources;
use crate::proxy::exchange::Exchange;
use crate::proxy::response::{Feedback, ProxyBody};

use super::ai_answer::UpstreamAnswer;
use super::answer::kong_error;
use super::headers::{add_proxy_headers, strip_hop_by_hop, Forwarded};
use super::{ms, retry, unix_seconds};
use crate::plugins::ai_sanitizer_filter;

/// Kong's answer header naming provider and model, made at compile time.
const X_KONG_LLM_MODEL: HeaderName = HeaderName::from_static("x-kong-llm-model");

pub(super) struct AiCtx<'a> {
    pub(super) gw: &'a Gateway,
    pub(super) ai: Arc<AiProxy>,
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
    /// The client's path split where the route matched it: the matched prefix and the rest.
    pub(super) matched: &'a str,
    /// A multipart upload streamed to the upstream (its body is not in `up.body`).
    pub(super) upload: Option<&'a super::body::UploadSlot>,
    pub(super) suffix: &'a str,
}

pub(super) async fn proxy_ai(
    mut c: AiCtx<'_>,
    mut log: Exchange,
    snap: Arc<Snapshot>,
) -> Response<ProxyBody> {
    let ai: &AiProxy = &c.ai;
    let shape = ai.error_shape();
    let first = ai.targets.first();
    let preserve_only = ai.targets.iter().all(|t| t.passes_through());
    let log_statistics = first.map(|t| t.logging.log_statistics).unwrap_or(false);
    let log_payloads = log.enabled && first.map(|t| t.logging.log_payloads).unwrap_or(false);
    let charging = !log.charges.is_empty();
    open_ai_log(&c.ai, &c.up.body, &mut log);

    let read = match read_request(&c, ai, preserve_only) {
        Ok(r) => r,
        Err(e) => return kong_error(e, shape, log, snap),
    };
    let Read {
        parsed,
        native_call,
        api_model,
        asked,
        stream,
    } = read;
    let client_wants_usage = parsed
        .as_ref()
        .map(openai::client_wants_usage)
        .unwrap_or(false);
    if let Some(a) = log.ai.as_mut() {
        a.stream = stream;
    }
    if let (Some(p), true) = (&parsed, counts_tokens(ai, &c.up.path)) {
        return count_tokens(p, log, snap);
    }
    let AsChat {
        responses: bridge,
        chat,
        messages,
    } = match as_chat(c.gw, ai, parsed.as_ref(), stream) {
        Ok(t) => t,
        Err(e) => return kong_error(e, shape, log, snap),
    };
    let chat_bytes = bridge.as_ref().map(|b| &b.bytes).or(chat.as_ref());
    let chat_view = match chat_bytes.map(|b| BodyView::parse(b)) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            let e = GatewayError::Internal(format!("chat bridge: {e}"));
            return kong_error(e, shape, log, snap);
        }
    };
    let candidates = match allowed_targets(&c, ai, parsed.as_ref()) {
        Ok(t) => t,
        Err(e) => return kong_error(e, shape, log, snap),
    };
    let force_stream = stream && !asked;
    // Token quotas and metrics need the usage of streams too.
    let add_include_usage = stream
        && !client_wants_usage
        && (log_statistics || charging || log.metrics || log.analytics.is_some());
    // Semantic routing picks the preferred targets before the retry loop (access phase).
    let preferred = match (&ai.semantic, &parsed) {
        (Some(s), Some(p)) => match semantic(s, &c.gw.upstreams, p, &mut log).await {
            Ok(c) => Some(c),
            Err(e) => return kong_error(e, shape, log, snap),
        },
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
        path_model: native_call
            .as_ref()
            .map(|(m, _)| m.as_str())
            .or(api_model.as_deref()),
        matched: c.matched,
        upload: c.upload,
        suffix: c.suffix,
        add_include_usage: add_include_usage && ai.llm_format == LlmFormat::Openai,
        forwarded: c.forwarded,
        record: log.enabled || log.metrics || log.trace.is_some(),
        hash_key: hash_key(ai, &c.up.headers),
        candidates: candidates.as_deref(),
        preferred: preferred.as_deref(),
        trust: c.trust,
        trace: log.trace,
        timeouts: c.timeouts,
    };
    log.proxy_latency_ms = Some(ms(log.started.elapsed()));
    let mut tries: Vec<Try> = Vec::new();
    let result = retry::run(&c.gw.upstreams, ai, &req, &mut tries, log.started).await;
    log.tries = tries;
    if c.upload.is_some_and(|u| u.over_limit()) {
        let e = GatewayError::BodyTooLarge { limit: ai.max_body };
        return kong_error(e, shape, log, snap);
    }
    let answered = match result {
        Ok(a) => a,
        Err(e) => return kong_error(e, shape, log, snap),
    };
    let flags = Flags {
        stream,
        force_stream,
        client_wants_usage,
        add_include_usage,
        log_payloads,
    };
    let filter = c.filter.take();
    let bridged = (bridge, messages);
    let mut answer = match upstream_answer(&c, answered, &mut log, bridged, (flags, filter)) {
        Ok(a) => a,
        Err(e) => return kong_error(e, shape, log, snap),
    };
    if let Some(p) = log.cache.as_mut() {
        p.answer_headers(&answer.headers);
    }
    let (read_timeout, status, target) = (answer.read_timeout, answer.status, answer.target);
    let read = match answer
        .needs_whole_body()
        .then(|| answer.take_body())
        .flatten()
    {
        Some(body) => {
            let read = read_buffered(body, read_timeout).await;
            Some(read.and_then(|b| answer.decoded(b)))
        }
        None => None,
    };
    // A translated video job's answer (Veo, Nova Reel) may fetch the video itself.
    let video = target
        .video
        .filter(|_| status == StatusCode::OK)
        .and_then(|f| {
            retry::video_op_of(&c.up.method, c.matched, c.suffix, target.route_type, f).ok()
        });
    match video {
        Some(op) => {
            let fetching = super::video::Fetching {
                connect_timeout: c.timeouts.connect,
                trust: c.trust,
            };
            let answering = super::video::answer(c.gw, answer, op, read, log, snap, fetching);
            Box::pin(answering).await
        }
        None => answer.respond(read, log, snap),
    }
}

/// What the client asked of the answer (and what the gateway added to the request).
#[derive(Clone, Copy)]
struct Flags {
    stream: bool,
    force_stream: bool,
    client_wants_usage: bool,
    add_include_usage: bool,
    log_payloads: bool,
}

/// The upstream's answer as the answer phase reads it: the target that answered, its
/// filtered headers, and how the body is to be read. From here every return carries (or
/// drops) the balancer's feedback, ending the target's in-flight count. Inlined: built in
/// its caller's place, the large answer is not copied on its way out (callgrind).
#[inline(always)]
fn upstream_answer<'a>(
    c: &'a AiCtx<'_>,
    answered: retry::Answered,
    log: &mut Exchange,
    (bridge, messages): (Option<Bridge>, Option<Arc<llm::messages::Meta>>),
    (f, filter): (Flags, Option<Filter>),
) -> Result<UpstreamAnswer<'a>, GatewayError> {
    let ai: &'a AiProxy = &c.ai;
    let feedback = feedback(&c.ai, &answered);
    let target = ai
        .targets
        .get(answered.target)
        .ok_or_else(|| GatewayError::Internal("target".into()))?;
    note_attempt(log, &answered);
    let (parts, body) = answered.resp.into_parts();
    let status = parts.status;
    log.upstream_status = Some(status.as_u16());
    let model = answered
        .model
        .as_deref()
        .filter(|_| ai.model_name_header || c.is_debug);
    let headers = header_filter(parts.headers, status, log, target, model);
    log.source = "upstream";
    // A native client's own streamed call is read as a stream, never buffered.
    let own_stream = status == StatusCode::OK
        && f.stream
        && !f.force_stream
        && ai.llm_format != LlmFormat::Openai
        && target.native_clients_own_api();
    let is_sse = own_stream
        || readable_stream(&headers, target)
        || (f.stream && status == StatusCode::OK && gemini_array(&headers, target));
    Ok(UpstreamAnswer {
        gw: c.gw,
        target,
        status,
        headers,
        body: Some(body),
        read_timeout: c.timeouts.read,
        model: answered.model,
        request: &c.up.body,
        bridge,
        messages,
        shape: ai.error_shape(),
        capture: f.log_payloads.then(Vec::new),
        feedback,
        filter,
        is_sse,
        stream: f.stream,
        client_wants_usage: f.client_wants_usage,
        add_include_usage: f.add_include_usage,
        native: ai.llm_format != LlmFormat::Openai && !target.bridge_messages,
    })
}

/// The value consistent hashing hashes (`hash_on_header`), if the request has it.
fn hash_key<'a>(ai: &AiProxy, headers: &'a HeaderMap) -> Option<&'a [u8]> {
    ai.hash_on_header
        .as_ref()
        .and_then(|h| headers.get(h))
        .map(HeaderValue::as_bytes)
}

/// What the balancer learns from the answer (latency, usage), for balancers that learn.
fn feedback(ai: &Arc<AiProxy>, answered: &retry::Answered) -> Option<Feedback> {
    ai.balancer.learns().then(|| {
        Feedback::new(
            ai.clone(),
            answered.target,
            answered.sent_at,
            answered.resp.status().is_success(),
        )
    })
}

/// The record's `ai` section, when anything reads it: a log plugin, the balancer (it
/// learns from usage even when no log plugin runs), quotas, metrics, analytics, a trace.
/// Opened once (the semantic cache may have opened it before the upstream phase).
pub(super) fn open_ai_log(ai: &Arc<AiProxy>, body: &[u8], log: &mut Exchange) {
    if log.ai.is_some() {
        return;
    }
    let wanted = log.enabled
        || ai.balancer.learns()
        || !log.charges.is_empty()
        || log.metrics
        || log.analytics.is_some()
        || log.trace.is_some_and(|t| t.sampled);
    if wanted {
        let mut a = AiLog::new(ai.targets.clone());
        let log_payloads =
            log.enabled && ai.targets.first().is_some_and(|t| t.logging.log_payloads);
        if log_payloads {
            a.payload_request = Some(String::from_utf8_lossy(body).into_owned());
        }
        log.ai = Some(a);
    }
}

/// The attempt that answered, in the record.
fn note_attempt(log: &mut Exchange, answered: &retry::Answered) {
    log.upstream_latency_ms = Some(ms(answered.sent_at.elapsed()));
    log.upstream_uri = log.tries.last().map(|t| t.upstream_uri.clone());
    if let Some(a) = log.ai.as_mut() {
        a.target = Some(answered.target);
        a.request_model = answered.model.clone();
    }
}

/// A stream the gateway can read: SSE, or the binary event stream Bedrock answers
/// ConverseStream with.
fn readable_stream(headers: &HeaderMap, target: &Target) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| llm::is_native_stream(target.wire, v))
}

/// A Gemini stream answered as one JSON array (`streamGenerateContent` without
/// `alt=sse`, e.g. through a proxy that drops the query): read element by element.
fn gemini_array(headers: &HeaderMap, target: &Target) -> bool {
    target.wire == Wire::Gemini && crate::llm::body::is_json(headers.get(header::CONTENT_TYPE))
}

/// The request as chat, for targets that only have chat.
#[derive(Default)]
struct AsChat {
    /// A Responses request through the bridge (with its conversation).
    responses: Option<Bridge>,
    /// A completions prompt as one chat message, or a Messages request as chat.
    chat: Option<Bytes>,
    /// What the Message object answering a Messages request echoes.
    messages: Option<Arc<llm::messages::Meta>>,
}

/// The request as chat, for the targets that need it: a route's targets may mix them (an
/// Anthropic target takes a Messages request as it is, an OpenAI one its chat translation).
fn as_chat(
    gw: &Gateway,
    ai: &AiProxy,
    parsed: Option<&BodyView<'_>>,
    stream: bool,
) -> Result<AsChat, GatewayError> {
    let Some(p) = parsed else {
        return Ok(AsChat::default());
    };
    let bad = |e: llm::EncodeError| GatewayError::BadRequest(e.0);
    let mut out = AsChat::default();
    if ai.targets.iter().any(|t| t.bridge_responses) {
        out.responses = Some(bridge_request(gw, p, stream)?);
    }
    if ai.targets.iter().any(|t| t.bridge_completions) {
        out.chat = Some(Bytes::from(
            llm::completions::to_chat(p, stream).map_err(bad)?,
        ));
    }
    if ai.targets.iter().any(|t| t.bridge_messages) {
        let r = llm::messages::to_chat(p, stream).map_err(bad)?;
        out.chat = Some(Bytes::from(r.body));
        out.messages = Some(r.meta);
    }
    Ok(out)
}

/// A Messages client's `…/v1/messages/count_tokens` on a route that translates Messages:
/// chat providers have no such endpoint, so the gateway counts.
fn counts_tokens(ai: &AiProxy, path: &str) -> bool {
    path.ends_with("/count_tokens") && ai.targets.iter().any(|t| t.bridge_messages)
}

/// Answers `count_tokens` with the gateway's own estimate of the prompt (the tokenizer the
/// token quotas use), in Anthropic's shape.
fn count_tokens(body: &BodyView<'_>, log: Exchange, snap: Arc<Snapshot>) -> Response<ProxyBody> {
    let counted = llm::messages::to_chat(body, false).and_then(|r| {
        serde_json::from_slice::<serde_json::Value>(&r.body)
            .map_err(|e| llm::EncodeError(e.to_string()))
    });
    let chat = match counted {
        Ok(c) => c,
        Err(e) => {
            let e = GatewayError::BadRequest(e.0);
            return kong_error(e, crate::error::ErrorShape::Anthropic, log, snap);
        }
    };
    let n = llm::tokens::estimate_prompt(&chat, None);
    let out = Bytes::from(serde_json::json!({ "input_tokens": n }).to_string());
    super::answer::json_answer(StatusCode::OK, HeaderMap::new(), out, log, snap, None, None)
}

/// Semantic routing's preferred targets for the prompt, with its decision and timing in
/// the log record (`ai.proxy.semantic`).
async fn semantic(
    router: &crate::balancer::semantic_router::SemanticRouter,
    upstreams: &crate::net::upstream::Upstreams,
    body: &BodyView<'_>,
    log: &mut Exchange,
) -> Result<Vec<usize>, GatewayError> {
    let began = log.started.elapsed();
    let routed = Box::pin(router.route(upstreams, body)).await;
    let took = log.started.elapsed() - began;
    if let Some(a) = log.ai.as_mut() {
        a.semantic = Some(routed.log);
        a.semantic_at = Some((began.as_micros() as u64, took.as_micros() as u64));
    }
    routed.candidates
}

/// What ai-proxy reads of a request before choosing a target.
struct Read<'a> {
    /// The JSON body, parsed once (None on `preserve` routes).
    parsed: Option<BodyView<'a>>,
    /// The model and streaming a Converse client names in its path.
    native_call: Option<(String, bool)>,
    /// The model an API request (files, audio, images…) names in its body.
    api_model: Option<String>,
    /// The client asked for a stream.
    asked: bool,
    /// The answer streams (`response_streaming` applied).
    stream: bool,
}

/// Kong's checks of an AI request: POST, a JSON object body, a native client's path; and
/// whether it streams.
fn read_request<'a>(
    c: &AiCtx<'a>,
    ai: &AiProxy,
    preserve_only: bool,
) -> Result<Read<'a>, GatewayError> {
    // Kong's LLM route types are POST APIs (the WebSocket GET was answered before this);
    // the other APIs take their operations' methods.
    let rt = ai.targets.first().map(|t| t.route_type);
    if let Some(allow) = rt
        .filter(|rt| *rt != RouteType::Preserve)
        .map(RouteType::methods)
    {
        if !allow.split(", ").any(|m| m == c.up.method.as_str()) {
            return Err(GatewayError::method_not_allowed(&c.up.method, allow));
        }
    }
    let api_model = rt.filter(|rt| rt.is_api()).and_then(|_| match c.upload {
        Some(u) => u.model().map(str::to_string),
        None => body_model(&c.up.headers, &c.up.body),
    });
    // Parse once; a non-preserve route needs a JSON object (an API's GET and DELETE have
    // no body).
    let bodyless = matches!(c.up.method, http::Method::GET | http::Method::DELETE);
    let parsed: Option<BodyView<'a>> = if preserve_only
        || (bodyless && rt.is_some_and(RouteType::is_api))
    {
        None
    } else {
        if !crate::llm::body::is_json(c.up.headers.get(header::CONTENT_TYPE)) {
            return Err(GatewayError::BadRequest(
                "content-type header does not match request body, or bad JSON formatting".into(),
            ));
        }
        Some(BodyView::parse(&c.up.body).map_err(|e| GatewayError::BadRequest(e.to_string()))?)
    };
    // A client speaking Converse names the model and streaming in its path.
    let native_call = match (ai.llm_format, &parsed) {
        (LlmFormat::Bedrock, Some(_)) => Some(llm::bedrock::native_call(&c.up.path).ok_or_else(|| {
            GatewayError::BadRequest(
                "llm_format bedrock: the path must end with /model/{modelId}/converse or /model/{modelId}/converse-stream".into(),
            )
        })?),
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
    let stream = match parsed {
        Some(_) => crate::plugins::ai_proxy::streaming(ai.streaming, asked)?,
        None => false,
    };
    Ok(Read {
        parsed,
        native_call,
        api_model,
        asked,
        stream,
    })
}

/// The `model` of an API request's JSON or multipart body (for the log, and the check
/// against the configured model).
fn body_model(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?;
    if crate::llm::body::is_json(Some(ct)) {
        return BodyView::parse(body)
            .ok()?
            .str("model")
            .map(|m| m.into_owned());
    }
    let boundary = llm::multipart::boundary(ct.to_str().ok()?)?;
    llm::multipart::field(body, boundary, "model")
}

/// The targets a request may go to: an alias's (`model.model_alias`) when the client's
/// model names one, narrowed by the `acls`; None: any target.
fn allowed_targets<'a>(
    c: &AiCtx<'_>,
    ai: &'a AiProxy,
    parsed: Option<&BodyView<'_>>,
) -> Result<Option<Cow<'a, [usize]>>, GatewayError> {
    let alias: Option<&'a [usize]> = match (parsed, ai.aliases.is_empty()) {
        (Some(p), false) => p.str("model").and_then(|m| {
            ai.aliases
                .iter()
                .find(|(alias, _)| *alias == m)
                .map(|(_, t)| t.as_slice())
        }),
        _ => None,
    };
    if ai.acls.is_empty() {
        return Ok(alias.map(Cow::Borrowed));
    }
    let client_model = parsed.and_then(|p| p.str("model"));
    let r = crate::balancer::acl::Request {
        headers: &c.up.headers,
        ip: c.forwarded.client_ip.parse().ok(),
        // The client's path, as the route saw it (before strip_path).
        path: c.forwarded.path,
        model: client_model.as_deref(),
    };
    let pool: Vec<usize> = match alias {
        Some(c) => c.to_vec(),
        None => (0..ai.targets.len()).collect(),
    };
    let allowed: Vec<usize> = pool
        .into_iter()
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
        .collect();
    if allowed.is_empty() {
        return Err(GatewayError::AclDenied);
    }
    Ok(Some(Cow::Owned(allowed)))
}

/// The header filter of an AI answer: hop-by-hop headers and cookies dropped, Kong's
/// latency and request-id headers added, and `X-Kong-LLM-Model` (provider/model) on a 200
/// when `model_name_header` (or `kong-debug`) asks for it.
fn header_filter(
    mut headers: HeaderMap,
    status: StatusCode,
    log: &RequestLog,
    target: &Target,
    model: Option<&str>,
) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    headers.remove(header::SET_COOKIE);
    // Room for the five headers added below, so the map grows (rehashing) at most once.
    headers.reserve(5);
    add_proxy_headers(&mut headers, log);
    if let (StatusCode::OK, Some(m)) = (status, model) {
        let provider = target.provider.as_str();
        let mut text = String::with_capacity(provider.len() + 1 + m.len());
        text.push_str(provider);
        text.push('/');
        text.push_str(m);
        // The text's own buffer becomes the value: from_str would copy it.
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(text)) {
            headers.insert(X_KONG_LLM_MODEL, v);
        }
    }
    headers
}

/// A Responses request translated for chat-only targets.
pub(super) struct Bridge {
    pub(super) bytes: Bytes,
    /// History and this input, stored with the answer under the new response id.
    pub(super) conversation: Vec<serde_json::Value>,
    pub(super) meta: Arc<responses::Meta>,
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
    let (chat, usage, model) = chat_answer(target, bytes, asked)?;
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

/// A chat answer's bytes (None: the upstream's own are), usage and model.
pub(super) type ChatAnswer = (Option<Vec<u8>>, Option<llm::usage::Usage>, Option<String>);

/// A chat target's buffered 200 answer in OpenAI's chat shape (None: `bytes` already are),
/// with its usage and model.
pub(super) fn chat_answer(
    target: &Target,
    bytes: &[u8],
    asked: &llm::Asked<'_>,
) -> Result<ChatAnswer, String> {
    Ok(if target.wire == Wire::OpenAi {
        let d = openai::decode_response(RouteType::Chat, bytes)?;
        (None, d.usage, d.model.map(Cow::into_owned))
    } else {
        let d = llm::decode(target.wire, RouteType::Chat, bytes, unix_seconds(), asked)?;
        (Some(d.body), d.usage, d.model)
    })
}

/// A Messages-translated target's buffered 200 answer as a Message object; usage and model
/// for the log.
pub(super) fn messages_answer(
    target: &Target,
    bytes: &[u8],
    meta: &llm::messages::Meta,
    asked: &llm::Asked<'_>,
) -> Result<BridgedAnswer, String> {
    let (chat, usage, model) = chat_answer(target, bytes, asked)?;
    let out = llm::messages::from_chat(chat.as_deref().unwrap_or(bytes), meta, usage.as_ref())?;
    Ok((out, usage, model))
}

//! The AI retry loop: pick a target → encode the request for it → send → classify →
//! fail over per `failover_criteria`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, Uri};

use crate::balancer::{NoTarget, PickCtx};
use crate::config::plugins::{FailoverCriterion, ParamLocation, RouteType};
use crate::error::GatewayError;
use crate::llm::body::BodyView;
use crate::llm::target::Target;
use crate::llm::Wire;
use crate::llm::{self, gemini, openai};
use crate::net::out_headers::OutHeaders;
use crate::net::upstream::{Endpoint, Failure, FailureKind, Incoming, OutRequest, Upstreams};
use crate::observe::log::{Try, UriText};
use crate::plugins::ai_proxy::{self, AiProxy};
use crate::plugins::request_transformer::UpstreamRequest;
use crate::plugins::template::TemplateSources;
use crate::proxy::headers::{forward_headers, query_string, Forwarded};

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const X_GOOG_API_KEY: http::HeaderName = http::HeaderName::from_static("x-goog-api-key");

/// The client request as the AI retry loop needs it.
pub struct AiRequest<'a> {
    /// The JSON body's members (None for `preserve`).
    pub body: Option<&'a BodyView<'a>>,
    /// A Responses or completions body translated to chat, for targets that bridge it.
    pub chat: Option<(&'a BodyView<'a>, &'a Bytes)>,
    pub up: &'a UpstreamRequest,
    pub raw_query: Option<&'a str>,
    pub sources: &'a TemplateSources<'a>,
    pub force_stream: bool,
    /// The client gets a stream (asked for, or forced).
    pub stream: bool,
    /// The client speaks the provider's own API (`llm_format` other than openai).
    pub native: bool,
    /// The model a native client named in its path (Bedrock's `/model/{id}/converse`), or
    /// an API request in its JSON or multipart body.
    pub path_model: Option<&'a str>,
    /// The client's path split where the route matched it: the matched prefix, and what
    /// follows (an API route type's resource id and operation).
    pub matched: &'a str,
    pub suffix: &'a str,
    /// A multipart upload streamed to the upstream: sent by one attempt only.
    pub upload: Option<&'a crate::proxy::body::UploadSlot>,
    pub add_include_usage: bool,
    pub forwarded: &'a Forwarded<'a>,
    /// Fill `tries` with log entries (only when a log plugin will read them).
    pub record: bool,
    /// The value of the balancer's `hash_on_header` (consistent-hashing).
    pub hash_key: Option<&'a [u8]>,
    /// Only these targets may serve (model_alias, acls); None = all.
    pub candidates: Option<&'a [usize]>,
    /// Semantic routing's match: these targets first, then (failing over) any other allowed.
    pub preferred: Option<&'a [usize]>,
    /// The route's service's upstream TLS trust (None: the default).
    pub trust: Option<&'a crate::net::upstream_tls::Trust>,
    /// The request's trace: each attempt gets its own span and `traceparent`.
    pub trace: Option<crate::observe::otel::TraceCtx>,
    /// Per attempt: the balancer's timeouts, else the service's.
    pub timeouts: crate::plugins::ai_proxy::Timeouts,
}

/// The attempt that produced the response the client gets.
pub struct Answered {
    /// Its body reads from the connection (back to the pool at the body's end).
    pub resp: Response<Incoming>,
    pub target: usize,
    pub model: Option<String>,
    pub sent_at: Instant,
}

/// Runs attempts until one answers or the retries are spent. Every await (a service
/// account's token, the send) is in this one function: a nested future would move the
/// send's large state once more per request.
pub async fn run(
    upstreams: &Upstreams,
    ai: &AiProxy,
    req: &AiRequest<'_>,
    tries: &mut Vec<Try>,
    started: Instant,
) -> Result<Answered, GatewayError> {
    let mut tried: Vec<usize> = Vec::new();
    let mut last_failure: Option<Failure> = None;
    let mut auth_failure: Option<GatewayError> = None;
    let attempts = ai.retries.saturating_add(1);
    for attempt in 0..attempts {
        let balancer_start = Instant::now();
        let idx = pick(ai, req, &tried)?;
        // Without retries there is no next pick to steer away from (and no allocation).
        if attempts > 1 {
            tried.push(idx);
        }
        let turn = Turn {
            attempt,
            last: attempt + 1 == attempts,
            idx,
            balancer_start,
        };
        let Some(target) = ai.targets.get(idx) else {
            return Err(GatewayError::Internal(format!("target {idx} out of range")));
        };
        let (mut out, mut t, model) = encode(target, req)?;
        start_attempt(req, started, &turn, &mut out, &mut t);
        if let Some(cloud) = &target.auth.cloud_token {
            let source = cloud
                .as_ref()
                .map_err(|e| GatewayError::BeforeProxying(e.clone()))?;
            let token = source
                .authorization(upstreams, req.timeouts.connect, req.timeouts.read)
                .await;
            match token {
                Ok(v) => {
                    out.headers.insert(header::AUTHORIZATION, v);
                }
                Err(e) => {
                    auth_failure = Some(no_token(ai, req, tries, e, t, &turn)?);
                    continue;
                }
            }
        }
        let ep = Endpoint {
            https: target.upstream.scheme == "https",
            host: &target.upstream.host,
            port: target.upstream.port,
            trust: req.trust,
        };
        let sent_at = Instant::now();
        if ai.balancer.learns() {
            ai.balancer.begin(idx);
        }
        let sent = upstreams
            .send(&ep, out, req.timeouts.connect, req.timeouts.read)
            .await;
        match sent {
            Ok(resp) => {
                if answered(ai, req, tries, &resp, t, &turn) {
                    return Ok(Answered {
                        resp,
                        target: idx,
                        model,
                        sent_at,
                    });
                }
            }
            Err(mut f) => {
                if let (Some(slot), Some(u)) = (req.upload, f.unsent.take()) {
                    slot.put_back(u);
                }
                let retry = failed(ai, req, tries, &f, t, &turn);
                last_failure = Some(f);
                if !retry {
                    break;
                }
            }
        }
    }
    Err(match (last_failure, auth_failure) {
        (Some(f), _) => f.into_gateway_error(),
        (None, Some(e)) => e,
        (None, None) => GatewayError::UpstreamInvalid("no attempt was made".into()),
    })
}

/// An attempt's log entry timed from the balancer's pick, and its span's `traceparent`.
fn start_attempt(
    req: &AiRequest<'_>,
    started: Instant,
    turn: &Turn,
    out: &mut OutRequest<'_>,
    t: &mut Try,
) {
    let balancer_start = turn.balancer_start;
    t.balancer_start = balancer_start.duration_since(started).as_millis() as u64;
    t.balancer_latency = balancer_start.elapsed().as_millis() as u64;
    t.start_us = balancer_start.duration_since(started).as_micros() as u64;
    if let Some(tc) = &req.trace {
        let span = crate::observe::otel::span_id();
        if let Some(v) = tc.traceparent(span) {
            out.headers.insert(TRACEPARENT, v);
            t.span_id = Some(span);
        }
    }
}

/// No access token for the upstream: the attempt is recorded; Ok (the error) when another
/// target may serve the request, Err when none is left to try.
fn no_token(
    ai: &AiProxy,
    req: &AiRequest<'_>,
    tries: &mut Vec<Try>,
    e: GatewayError,
    mut t: Try,
    turn: &Turn,
) -> Result<GatewayError, GatewayError> {
    // Like a failed connect: the request never left, another target may serve it.
    t.outcome = "error".into();
    keep(req, tries, t, turn.balancer_start);
    tracing::debug!(attempt = turn.attempt, error = %e, "no access token for the upstream");
    if turn.last || !ai.failover.contains(&FailoverCriterion::Error) {
        return Err(e);
    }
    Ok(e)
}

/// An answer came: recorded, and true when it is the client's (false: its status fails
/// over to the next attempt).
fn answered(
    ai: &AiProxy,
    req: &AiRequest<'_>,
    tries: &mut Vec<Try>,
    resp: &Response<Incoming>,
    mut t: Try,
    turn: &Turn,
) -> bool {
    let (idx, balancer_start) = (turn.idx, turn.balancer_start);
    let learns = ai.balancer.learns();
    if let Some(a) = resp.body().peer() {
        t.ip = Some(a.ip());
    }
    let status = resp.status().as_u16();
    if learns && status_counts_as_failure(status, &ai.failover) {
        ai.balancer.failure(idx);
    }
    if !turn.last && status_fails_over(status, &ai.failover) {
        if learns {
            ai.balancer.end(idx);
        }
        t.outcome = format!("http_{status}").into();
        keep(req, tries, t, balancer_start);
        return false;
    }
    t.outcome = if resp.status().is_success() {
        "success".into()
    } else {
        format!("http_{status}").into()
    };
    keep(req, tries, t, balancer_start);
    true
}

/// The upstream could not be reached or read: recorded; true when the criteria fail it
/// over to the next attempt.
fn failed(
    ai: &AiProxy,
    req: &AiRequest<'_>,
    tries: &mut Vec<Try>,
    f: &Failure,
    mut t: Try,
    turn: &Turn,
) -> bool {
    if ai.balancer.learns() {
        // Connect, timeout and invalid-header failures always count (spec §4.2).
        ai.balancer.failure(turn.idx);
        ai.balancer.end(turn.idx);
    }
    t.outcome = f.kind.as_str().into();
    keep(req, tries, t, turn.balancer_start);
    tracing::debug!(attempt = turn.attempt, kind = f.kind.as_str(), detail = %f.detail, "upstream attempt failed");
    failure_fails_over(f.kind, &ai.failover)
}

/// One attempt's place in the retry loop.
struct Turn {
    /// Counted from 0.
    attempt: u32,
    /// No attempt follows this one.
    last: bool,
    /// The target picked for it.
    idx: usize,
    /// When the balancer was asked: the attempt's log times count from here.
    balancer_start: Instant,
}

/// The balancer's pick among the targets not tried yet (all of them again once every one was).
fn pick(ai: &AiProxy, req: &AiRequest<'_>, tried: &[usize]) -> Result<usize, GatewayError> {
    let ctx = PickCtx {
        hash_key: req.hash_key,
        exclude: tried,
        candidates: req.candidates,
    };
    // Semantic routing's targets first (within the allowed ones); failing over, any other.
    let preferred = req.preferred.and_then(|p| {
        let within: Vec<usize> = p
            .iter()
            .copied()
            .filter(|i| req.candidates.is_none_or(|c| c.contains(i)))
            .collect();
        ai.balancer
            .pick(&PickCtx {
                candidates: Some(&within),
                ..ctx
            })
            .ok()
    });
    let picked = match preferred {
        Some(i) => Ok(i),
        None => match ai.balancer.pick(&ctx) {
            // Every candidate was tried: start over among the healthy ones.
            Err(NoTarget::Exhausted) => ai.balancer.pick(&PickCtx {
                exclude: &[],
                ..ctx
            }),
            other => other,
        },
    };
    match picked {
        Ok(i) => Ok(i),
        Err(NoTarget::Unhealthy) => Err(GatewayError::AllTargetsUnhealthy),
        Err(NoTarget::Exhausted) => Err(GatewayError::UpstreamUnavailable(
            "no target available".into(),
        )),
    }
}

/// Files an attempt's log entry with its duration, when a log plugin will read it.
fn keep(req: &AiRequest<'_>, tries: &mut Vec<Try>, mut t: Try, balancer_start: Instant) {
    if req.record {
        t.duration_us = balancer_start.elapsed().as_micros() as u64;
        tries.push(t);
    }
}

/// A failure to reach or read the upstream fails over when its kind is listed.
fn failure_fails_over(kind: FailureKind, criteria: &[FailoverCriterion]) -> bool {
    match kind {
        FailureKind::Connect | FailureKind::Reset => criteria.contains(&FailoverCriterion::Error),
        FailureKind::Timeout => criteria.contains(&FailoverCriterion::Timeout),
        FailureKind::InvalidHeader => criteria.contains(&FailoverCriterion::InvalidHeader),
    }
}

/// An upstream status fails over only when listed, and (POST being non-idempotent, like
/// nginx) only when `non_idempotent` is listed too.
fn status_fails_over(status: u16, criteria: &[FailoverCriterion]) -> bool {
    let c = match status {
        403 => FailoverCriterion::Http403,
        404 => FailoverCriterion::Http404,
        429 => FailoverCriterion::Http429,
        500 => FailoverCriterion::Http500,
        502 => FailoverCriterion::Http502,
        503 => FailoverCriterion::Http503,
        504 => FailoverCriterion::Http504,
        _ => return false,
    };
    criteria.contains(&c) && criteria.contains(&FailoverCriterion::NonIdempotent)
}

/// Whether an answer's status counts against the target in the circuit breaker: the
/// `http_*` failover criteria listed, except 403 and 404, which never do (spec §4.2).
fn status_counts_as_failure(status: u16, criteria: &[FailoverCriterion]) -> bool {
    let c = match status {
        429 => FailoverCriterion::Http429,
        500 => FailoverCriterion::Http500,
        502 => FailoverCriterion::Http502,
        503 => FailoverCriterion::Http503,
        504 => FailoverCriterion::Http504,
        _ => return false,
    };
    criteria.contains(&c)
}

/// The model an API request names (its JSON or multipart `model`), checked against the
/// configured one as on chat; the configured one when the request names none.
fn api_model(target: &Target, req: &AiRequest<'_>) -> Result<Option<String>, GatewayError> {
    let client = req
        .path_model
        .filter(|m| target.model_alias.as_deref() != Some(*m));
    match (&target.model_name, client) {
        (None, c) => Ok(c.map(str::to_string)),
        (Some(_), _) => ai_proxy::resolve_model(target, client, req.sources),
    }
}

/// An API request's upstream path: the provider's API prefix (or the configured path), the
/// resource, the client's suffix, then the prefix's query (Azure's `api-version`).
fn api_upstream_path(target: &Target, req: &AiRequest<'_>) -> Result<String, GatewayError> {
    let rendered;
    let configured = match target.upstream.path.as_deref() {
        Some(p) if target.templated_path => {
            rendered = rendered_path(p, req)?;
            rendered.as_str()
        }
        Some(p) => p,
        None => openai::API_PREFIX,
    };
    let (prefix, query) = match configured.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (configured, None),
    };
    let path = openai::api_path(target.route_type, prefix, req.matched, req.suffix)
        .map_err(|e| GatewayError::BadRequest(format!("{e} ({})", target.route_type.as_str())))?;
    Ok(match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    })
}

/// A templated upstream path (an Azure deployment from `$(uri_captures.x)`) rendered with
/// this request's values, which may not add path segments, queries or escapes.
fn rendered_path(p: &str, req: &AiRequest<'_>) -> Result<String, GatewayError> {
    let out = crate::plugins::template::render_ai(p, req.sources)
        .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let added = |c: char| out.matches(c).count() > p.matches(c).count();
    if out.contains("..") || added('/') || added('?') || added('&') || added('%') || added('#') {
        return Err(GatewayError::BadRequest(
            "a templated upstream path may not take '/', '?', '&', '%', '#' or '..' from the request".into(),
        ));
    }
    Ok(out.into_owned())
}

/// The client speaks `target`'s own API (not a bridged one).
fn native(target: &Target, req: &AiRequest<'_>) -> bool {
    req.native && !target.bridge_messages
}

/// A native client of Cohere or Hugging Face: it calls the provider's endpoints itself,
/// with bodies the gateway does not interpret.
fn native_own_api(target: &Target, req: &AiRequest<'_>) -> bool {
    native(target, req) && target.native_clients_own_api()
}

/// An encoded attempt: the request, its log entry and the model it asks for.
type Encoded<'a> = (OutRequest<'a>, Try, Option<String>);

/// Builds the upstream request for one target; client mistakes come back as errors.
fn encode<'a>(target: &Target, req: &AiRequest<'a>) -> Result<Encoded<'a>, GatewayError> {
    let rt = target.route_type;
    // What the upstream is asked for: chat, when the Responses API is bridged.
    let wire_rt = if target.bridges_chat() {
        RouteType::Chat
    } else {
        rt
    };
    let video = match target.video {
        Some(family) => Some(video_call(target, req, family)?),
        None => None,
    };
    let (body_bytes, model) = match (rt, req.body) {
        _ if video.is_some() => match &video {
            Some((call, model)) => (Bytes::from(call.body.clone()), model.clone()),
            None => (Bytes::new(), None),
        },
        _ if rt.is_api() && target.passes_through() => {
            (req.up.body.clone(), api_model(target, req)?)
        }
        (RouteType::Preserve, _) | (_, None) => (req.up.body.clone(), None),
        (_, Some(client_body)) => encode_body(target, req, client_body, wire_rt)?,
    };
    let up = &target.upstream;
    let default_path = openai::default_path(wire_rt);
    let client_path = uses_client_path(target, req);
    let path = if let Some((call, _)) = &video {
        Cow::Borrowed(call.path.as_str())
    } else if rt.is_api() && target.passes_through() {
        Cow::Owned(api_upstream_path(target, req)?)
    } else {
        upstream_path(
            target,
            req,
            wire_rt,
            default_path,
            client_path,
            model.as_deref(),
        )?
    };
    let (target_uri, parts) = upstream_uri(target, req, &path, default_path, client_path)?;
    let mut headers = upstream_headers(target, req)?;
    let upload = match req.upload {
        Some(slot) if target.passes_through() => {
            // An upload goes out once: a later attempt has it only when no connection
            // took any of it.
            let u = slot.take().ok_or_else(|| {
                GatewayError::UpstreamUnavailable(
                    "a streamed upload is sent once and cannot be retried".into(),
                )
            })?;
            Some(u)
        }
        _ => None,
    };
    let method = match &video {
        Some((call, _)) => call.method.clone(),
        None if target.passes_through() => req.up.method.clone(),
        None => Method::POST,
    };
    if let Some(signer) = &target.sigv4 {
        // Last: the signature covers the final path, Host and body.
        let mut map = headers.to_map();
        signer
            .sign(
                &method,
                &target_uri,
                &mut map,
                &body_bytes,
                SystemTime::now(),
            )
            .map_err(GatewayError::BeforeProxying)?;
        headers = map.into();
    }
    let out = OutRequest {
        method,
        target: target_uri,
        headers,
        body: body_bytes,
        upload,
    };
    let t = if req.record {
        Try {
            port: up.port,
            host: up.host.clone(),
            scheme: up.scheme.into(),
            upstream_uri: parts.log_text(&up.path),
            route_type: rt.as_str().into(),
            provider: target.provider.as_str().into(),
            model: model.clone(),
            ..Default::default()
        }
    } else {
        Try::default()
    };
    Ok((out, t, model))
}

/// The provider call for a request on a translated Videos route (Veo, Nova Reel jobs), and
/// the model it asks for.
fn video_call(
    target: &Target,
    req: &AiRequest<'_>,
    family: llm::video::Family,
) -> Result<(llm::video::Call, Option<String>), GatewayError> {
    let op = video_op(target, req, family)?;
    let model = match (&op, req.body) {
        (llm::video::Op::Create, Some(body)) => {
            let client = body.str("model");
            let client = client.filter(|m| target.model_alias.as_deref() != Some(m.as_ref()));
            ai_proxy::resolve_model(target, client.as_deref(), req.sources)?
        }
        _ => target.model_name.clone(),
    };
    let prefix = target.upstream.path.as_deref().unwrap_or_default();
    let s3 = target.options.bedrock.as_ref();
    let s3 = s3.and_then(|b| b.video_output_s3_uri.as_deref());
    let call = llm::video::call(family, &op, prefix, req.body, model.as_deref(), s3)
        .map_err(|e| GatewayError::BadRequest(e.0))?;
    Ok((call, model))
}

/// The Videos API operation a request asks of a translated target.
pub(crate) fn video_op(
    target: &Target,
    req: &AiRequest<'_>,
    family: llm::video::Family,
) -> Result<llm::video::Op, GatewayError> {
    video_op_of(
        &req.up.method,
        req.matched,
        req.suffix,
        target.route_type,
        family,
    )
}

/// [`video_op`] from the request's method and paths.
pub(crate) fn video_op_of(
    method: &Method,
    matched: &str,
    suffix: &str,
    rt: RouteType,
    family: llm::video::Family,
) -> Result<llm::video::Op, GatewayError> {
    let api = openai::api_path(rt, "", matched, suffix)
        .map_err(|e| GatewayError::BadRequest(format!("{e} ({})", rt.as_str())))?;
    llm::video::op(method, &api, family).map_err(|e| match e {
        llm::video::OpError::NoSuchVideo(m) => GatewayError::UnknownObject(m),
        llm::video::OpError::Refused(m) => GatewayError::BadRequest(m),
    })
}

/// The upstream body for a client's JSON body, and the model it asks for.
fn encode_body(
    target: &Target,
    req: &AiRequest<'_>,
    client_body: &BodyView<'_>,
    wire_rt: RouteType,
) -> Result<(Bytes, Option<String>), GatewayError> {
    let rt = target.route_type;
    // Native Gemini and Bedrock clients name the model in the path; Gemini's bodies
    // are not OpenAI-shaped at all.
    let gemini_native = native(target, req) && target.wire == Wire::Gemini;
    // Cohere's and Hugging Face's native bodies are whatever the called endpoint
    // takes (v1 chat, embed, rerank, TGI's generate): no chat shape to check.
    let own_api = native_own_api(target, req);
    let client_model = if gemini_native {
        gemini::model_in_path(&req.up.path).map(std::borrow::Cow::Borrowed)
    } else if own_api {
        client_body.str("model")
    } else {
        ai_proxy::check_format(rt, client_body)?;
        match req.path_model {
            Some(m) => Some(std::borrow::Cow::Borrowed(m)),
            None => client_body.str("model"),
        }
    };
    let bridged = target.bridges_chat();
    let (body, chat_bytes) = match (bridged, req.chat) {
        (true, Some((chat, bytes))) => (chat, Some(bytes)),
        (true, None) => {
            return Err(GatewayError::Internal(
                "a bridged target without its chat translation".into(),
            ))
        }
        (false, _) => (client_body, None),
    };
    let model = if own_api && client_model.is_none() && target.model_name.is_none() {
        // The endpoint's own default model (Cohere v1, a TGI server's one model).
        None
    } else {
        // A client model naming this target's alias stands for its configured model.
        let client_model = client_model.filter(|m| target.model_alias.as_deref() != Some(m));
        ai_proxy::resolve_model(target, client_model.as_deref(), req.sources)?
    };
    let param_value = match &target.auth.param {
        Some((name, value, ParamLocation::Body))
            if !(target.auth.allow_override && body.has(name)) =>
        {
            Some((
                name.as_str(),
                value.get().map_err(GatewayError::BeforeProxying)?,
            ))
        }
        _ => None,
    };
    let body_param = param_value
        .as_ref()
        .map(|(name, v)| (*name, v.expose().as_str()));
    let bytes = match target.wire {
        Wire::OpenAi => {
            let m = model.as_deref();
            openai_body(target, req, wire_rt, body, chat_bytes, m, body_param)
        }
        // A Converse body names neither model nor streaming (the path does): it
        // goes as the client sent it.
        Wire::Bedrock if native(target, req) => req.up.body.clone(),
        _ if native(target, req) => native_body(target, req, body, model.as_deref(), body_param),
        wire => {
            let e = llm::Encode {
                model: model.as_deref(),
                options: &target.options,
                stream: req.stream,
                body_param,
            };
            llm::encode(wire, wire_rt, body, &e)
                .map(Bytes::from)
                .map_err(|e| GatewayError::BadRequest(e.0))?
        }
    };
    Ok((bytes, model))
}

/// An OpenAI-shaped body patched in place (model, options, streaming, auth parameter);
/// the client's bytes (or the bridge's) when nothing changes.
fn openai_body(
    target: &Target,
    req: &AiRequest<'_>,
    wire_rt: RouteType,
    body: &BodyView<'_>,
    chat_bytes: Option<&Bytes>,
    model: Option<&str>,
    body_param: Option<(&str, &str)>,
) -> Bytes {
    let patch = openai::Patch {
        model,
        options: Some(&target.options),
        force_stream: req.force_stream,
        add_include_usage: req.add_include_usage
            && matches!(wire_rt, RouteType::Chat | RouteType::Completions),
        body_param,
        drop_stream_options: target.rejects_stream_options(),
    };
    match openai::patch_request(wire_rt, body, &patch) {
        Some(b) => Bytes::from(b),
        None => chat_bytes.unwrap_or(&req.up.body).clone(),
    }
}

/// A native client's body in the provider's own dialect, with the gateway's few changes.
fn native_body(
    target: &Target,
    req: &AiRequest<'_>,
    body: &BodyView<'_>,
    model: Option<&str>,
    body_param: Option<(&str, &str)>,
) -> Bytes {
    // The client's own Messages body: only the model (and a forced stream,
    // or an auth parameter) may change. Gemini's body has neither.
    // TGI's bodies name no model; Cohere's and Hugging Face's clients pick
    // streaming by endpoint or body themselves (a forced `stream` would break
    // embed and rerank).
    let gemini_native = native(target, req) && target.wire == Wire::Gemini;
    let own_api = native_own_api(target, req);
    let hf_native = target.wire == Wire::HuggingFace;
    let mut set: Vec<(&str, String)> = Vec::new();
    if let (false, false, Some(m)) = (gemini_native, hf_native, model) {
        if body.str("model").as_deref() != Some(m) {
            set.push(("model", serde_json::to_string(m).unwrap_or_default()));
        }
    }
    if req.force_stream && !gemini_native && !own_api {
        set.push(("stream", "true".into()));
    }
    if let Some((k, v)) = body_param {
        set.push((k, serde_json::to_string(v).unwrap_or_default()));
    }
    if set.is_empty() {
        req.up.body.clone()
    } else {
        Bytes::from(body.rewrite(&[], &set))
    }
}

/// A native client's own path goes upstream (rather than the target's).
fn uses_client_path(target: &Target, req: &AiRequest<'_>) -> bool {
    // A Gemini-native client's path already says model and method (AI Studio or Vertex);
    // only a path the user configured replaces it.
    native(target, req)
        && target.route_type != RouteType::Preserve
        && match target.wire {
            Wire::Gemini => target.model_path || target.upstream.path.is_none(),
            // Cohere's and Hugging Face's clients call the endpoint they mean (v1 or v2
            // chat, embed, rerank, generate…), below the route's prefix.
            _ => native_own_api(target, req) && !target.path_configured,
        }
}

/// The upstream path (with a configured query, if any): the client's, the configured
/// one (completed with the model when it is a prefix), or the route type's default.
fn upstream_path<'a>(
    target: &'a Target,
    req: &'a AiRequest<'_>,
    wire_rt: RouteType,
    default_path: Option<&'static str>,
    client_path: bool,
    model: Option<&str>,
) -> Result<Cow<'a, str>, GatewayError> {
    Ok(match (&target.upstream.path, default_path) {
        _ if client_path => Cow::Borrowed(&req.up.path),
        (Some(prefix), _) if target.model_path => {
            let m = model.ok_or_else(|| {
                GatewayError::BadRequest(
                    "model parameter not found in request, nor in gateway configuration".into(),
                )
            })?;
            Cow::Owned(llm::request_path(
                target.wire,
                wire_rt,
                prefix,
                m,
                req.stream,
            ))
        }
        (Some(p), _) if target.wire == Wire::Gemini && req.stream => llm::gemini::sse_path(p),
        (Some(p), _) if target.templated_path => Cow::Owned(rendered_path(p, req)?),
        (Some(p), _) => Cow::Borrowed(p),
        (None, Some(p)) => Cow::Borrowed(p),
        (None, None) => Cow::Borrowed(&req.up.path),
    })
}

/// What the upstream URI is made of, kept for the log's `upstream_uri`.
struct UriParts<'p> {
    /// The route type's own path, when nothing was added to it.
    fixed: Option<&'static str>,
    path_only: &'p str,
    /// The configured path's query, less what the client sends itself.
    path_query: Option<String>,
    /// The client's query, with the auth parameter when it goes there.
    query: Option<String>,
    /// `query` with the auth parameter's value redacted.
    log_query: Option<String>,
}

impl UriParts<'_> {
    /// The URI as the log shows it (`configured`: the target's upstream path).
    fn log_text(&self, configured: &Option<Arc<str>>) -> UriText {
        let path_query = self.path_query.as_deref();
        match (self.fixed, configured) {
            (Some(p), _) => UriText::Fixed(p),
            (None, Some(c))
                if self.query.is_none() && path_query.is_none() && **c == *self.path_only =>
            {
                UriText::Configured(c.clone())
            }
            _ => {
                let q = self.log_query.as_deref().or(self.query.as_deref());
                join(self.path_only, path_query, q).into()
            }
        }
    }
}

/// The upstream request's URI: `path` and the queries (configured, client's, auth).
fn upstream_uri<'p>(
    target: &Target,
    req: &AiRequest<'_>,
    path: &'p str,
    default_path: Option<&'static str>,
    client_path: bool,
) -> Result<(Uri, UriParts<'p>), GatewayError> {
    let (path_only, path_query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    // A parameter the client sends itself (e.g. Azure's `api-version`) wins over the
    // configured one.
    let kept_query: Option<String> = path_query.map(|q| {
        if req.up.query.is_empty() {
            return q.to_string();
        }
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                form_urlencoded::parse(q.as_bytes())
                    .filter(|(k, _)| !req.up.query.iter().any(|(c, _)| c == k.as_ref())),
            )
            .finish()
    });
    let path_query = kept_query.as_deref();
    let (query, log_query) = query_with_auth(target, req)?;
    let invalid = || GatewayError::BadRequest("the upstream path is not a valid URI".into());
    // The common case needs no string building: the route type's own path.
    let fixed = match (query.as_deref(), path_query, default_path) {
        (None, None, Some(p)) if target.upstream.path.is_none() && !client_path => Some(p),
        _ => None,
    };
    let uri: Uri = match (fixed, query.as_deref(), path_query) {
        (Some(p), ..) => Uri::from_static(p),
        (None, None, None) => Uri::try_from(path_only).map_err(|_| invalid())?,
        (None, q, _) => join(path_only, path_query, q)
            .parse()
            .map_err(|_| invalid())?,
    };
    let parts = UriParts {
        fixed,
        path_only,
        path_query: kept_query,
        query,
        log_query,
    };
    Ok((uri, parts))
}

/// The client's query for the upstream and, when the auth parameter goes in the query
/// (and the client may not override it), that query's log form with the value redacted.
fn query_with_auth(
    target: &Target,
    req: &AiRequest<'_>,
) -> Result<(Option<String>, Option<String>), GatewayError> {
    // `?beta=true` and the like are Anthropic's: the chat provider gets none of them. A
    // video job's provider gets none of OpenAI's parameters (`variant`…) either.
    let dropped =
        |k: &str| target.video.is_some() || (target.bridge_messages && is_anthropic_param(k));
    let mut query = match target.bridge_messages || target.video.is_some() {
        true => encode_pairs(req.up.query.iter().filter(|(k, _)| !dropped(k))),
        false => query_string(req.up, req.raw_query),
    };
    let mut log_query = None;
    if let Some((name, value, ParamLocation::Query)) = &target.auth.param {
        let present = req.up.query.iter().any(|(k, _)| k == name);
        if !(target.auth.allow_override && present) {
            let v = value.get().map_err(GatewayError::BeforeProxying)?;
            let mut pairs: Vec<(String, String)> = req
                .up
                .query
                .iter()
                .filter(|(k, _)| k != name)
                .filter(|(k, _)| !dropped(k))
                .cloned()
                .collect();
            let mut log_pairs = pairs.clone();
            pairs.push((name.clone(), v.expose().clone()));
            log_pairs.push((name.clone(), "REDACTED".into()));
            let enc = |p: &[(String, String)]| {
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(p)
                    .finish()
            };
            query = Some(enc(&pairs));
            log_query = Some(enc(&log_pairs));
        }
    }
    Ok((query, log_query))
}

/// A query parameter of Anthropic's Messages API (Claude Code sends `beta=true`).
fn is_anthropic_param(k: &str) -> bool {
    k == "beta"
}

/// Query pairs encoded; None when there are none.
fn encode_pairs<'a>(pairs: impl Iterator<Item = &'a (String, String)>) -> Option<String> {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs {
        ser.append_pair(k, v);
        any = true;
    }
    any.then(|| ser.finish())
}

/// `path_only`, then the non-empty queries joined by `&`.
fn join(path_only: &str, path_query: Option<&str>, q: Option<&str>) -> String {
    let mut s = path_only.to_string();
    let parts: Vec<&str> = [path_query, q]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    if !parts.is_empty() {
        s.push('?');
        s.push_str(&parts.join("&"));
    }
    s
}

/// The upstream request's headers: the client's forwarded ones, the encoding and type the
/// gateway reads and sends, the target's credential and extra headers.
fn upstream_headers<'a>(
    target: &Target,
    req: &AiRequest<'a>,
) -> Result<OutHeaders<'a>, GatewayError> {
    let up = &target.upstream;
    let mut headers = forward_headers(&req.up.headers, up.host_header.clone(), req.forwarded);
    if target.wire == Wire::Gemini {
        // Google reads a bearer token before an API key: an OpenAI SDK's placeholder
        // `Authorization` (or a Gemini SDK's own key) would override the gateway's credential,
        // which always wins for gemini (allow_override is false).
        headers.remove(&header::AUTHORIZATION);
        headers.remove(&X_GOOG_API_KEY);
    }
    // `forward_headers` set neither: appended without a look for them. (No Content-Length:
    // the head writer frames the body itself, `net::h1::encode_head`.)
    headers.append(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if !target.passes_through() {
        headers.append(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Some((name, value)) = &target.auth.header {
        if !(target.auth.allow_override && req.up.headers.contains_key(name)) {
            let v = value.value().map_err(GatewayError::BeforeProxying)?;
            headers.insert(name.clone(), v);
        }
    }
    for (name, value) in &target.extra_headers {
        headers.insert(name.clone(), value.clone());
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_criteria_need_non_idempotent_for_post() {
        use FailoverCriterion::*;
        assert!(!status_fails_over(503, &[Error, Timeout]));
        assert!(!status_fails_over(503, &[Http503]));
        assert!(status_fails_over(503, &[Http503, NonIdempotent]));
        assert!(!status_fails_over(400, &[Http503, NonIdempotent]));
    }
}

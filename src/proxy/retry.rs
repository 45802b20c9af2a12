//! The AI retry loop: pick a target → encode the request for it → send → classify →
//! fail over per `failover_criteria`.

use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, Uri};
use hyper::body::Incoming;

use crate::balancer::{NoTarget, PickCtx};
use crate::config::plugins::{FailoverCriterion, ParamLocation, RouteType};
use crate::error::GatewayError;
use crate::llm::body::BodyView;
use crate::llm::target::Target;
use crate::llm::Wire;
use crate::llm::{self, gemini, openai};
use crate::net::upstream::{Conn, Endpoint, Failure, FailureKind, OutRequest, Upstreams};
use crate::observe::log::{Try, UriText};
use crate::plugins::ai_proxy::{self, AiProxy};
use crate::plugins::request_transformer::UpstreamRequest;
use crate::plugins::template::TemplateSources;
use crate::proxy::headers::{forward_headers, query_string, Forwarded};

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
    /// The model a native client named in its path (Bedrock's `/model/{id}/converse`).
    pub path_model: Option<&'a str>,
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
    pub resp: Response<Incoming>,
    /// The connection the body is read from (returned to the pool at its end).
    pub conn: Conn,
    pub target: usize,
    pub model: Option<String>,
    pub sent_at: Instant,
}

/// Runs attempts until one answers or the retries are spent.
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
        let ctx = PickCtx {
            hash_key: req.hash_key,
            exclude: &tried,
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
        let idx = match picked {
            Ok(i) => i,
            Err(NoTarget::Unhealthy) => return Err(GatewayError::AllTargetsUnhealthy),
            Err(NoTarget::Exhausted) => {
                return Err(GatewayError::UpstreamUnavailable(
                    "no target available".into(),
                ))
            }
        };
        // Without retries there is no next pick to steer away from (and no allocation).
        if attempts > 1 {
            tried.push(idx);
        }
        let Some(target) = ai.targets.get(idx) else {
            return Err(GatewayError::Internal(format!("target {idx} out of range")));
        };
        let (mut out, mut t, model) = encode(target, req)?;
        let ep = Endpoint {
            https: target.upstream.scheme == "https",
            host: &target.upstream.host,
            port: target.upstream.port,
            trust: req.trust,
        };
        t.balancer_start = balancer_start.duration_since(started).as_millis() as u64;
        t.balancer_latency = balancer_start.elapsed().as_millis() as u64;
        t.start_us = balancer_start.duration_since(started).as_micros() as u64;
        if let Some(tc) = &req.trace {
            let span = crate::observe::otel::span_id();
            if let Some(v) = tc.traceparent(span) {
                out.headers.insert("traceparent", v);
                t.span_id = Some(span);
            }
        }
        let last = attempt + 1 == attempts;
        if let Some(gcp) = &target.auth.gcp {
            let source = gcp
                .as_ref()
                .map_err(|e| GatewayError::BeforeProxying(e.clone()))?;
            match source
                .authorization(upstreams, req.timeouts.connect, req.timeouts.read)
                .await
            {
                Ok(v) => {
                    out.headers.insert(header::AUTHORIZATION, v);
                }
                Err(e) => {
                    // Like a failed connect: the request never left, another target may serve it.
                    t.outcome = "error".into();
                    if req.record {
                        t.duration_us = balancer_start.elapsed().as_micros() as u64;
                        tries.push(t);
                    }
                    tracing::debug!(attempt, error = %e, "no access token for the upstream");
                    if last || !ai.failover.contains(&FailoverCriterion::Error) {
                        return Err(e);
                    }
                    auth_failure = Some(e);
                    continue;
                }
            }
        }
        let sent_at = Instant::now();
        let learns = ai.balancer.learns();
        if learns {
            ai.balancer.begin(idx);
        }
        match upstreams
            .send(&ep, out, req.timeouts.connect, req.timeouts.read)
            .await
        {
            Ok((resp, conn)) => {
                if let Some(a) = conn.peer() {
                    t.ip = Some(a.ip());
                }
                let status = resp.status().as_u16();
                if learns && status_counts_as_failure(status, &ai.failover) {
                    ai.balancer.failure(idx);
                }
                if !last && status_fails_over(status, &ai.failover) {
                    if learns {
                        ai.balancer.end(idx);
                    }
                    t.outcome = format!("http_{status}").into();
                    if req.record {
                        t.duration_us = balancer_start.elapsed().as_micros() as u64;
                        tries.push(t);
                    }
                    continue;
                }
                t.outcome = if resp.status().is_success() {
                    "success".into()
                } else {
                    format!("http_{status}").into()
                };
                if req.record {
                    t.duration_us = balancer_start.elapsed().as_micros() as u64;
                    tries.push(t);
                }
                return Ok(Answered {
                    resp,
                    conn,
                    target: idx,
                    model,
                    sent_at,
                });
            }
            Err(f) => {
                if learns {
                    // Connect, timeout and invalid-header failures always count (spec §4.2).
                    ai.balancer.failure(idx);
                    ai.balancer.end(idx);
                }
                t.outcome = f.kind.as_str().into();
                if req.record {
                    t.duration_us = balancer_start.elapsed().as_micros() as u64;
                    tries.push(t);
                }
                tracing::debug!(attempt, kind = f.kind.as_str(), detail = %f.detail, "upstream attempt failed");
                let retry = match f.kind {
                    FailureKind::Connect | FailureKind::Reset => {
                        ai.failover.contains(&FailoverCriterion::Error)
                    }
                    FailureKind::Timeout => ai.failover.contains(&FailoverCriterion::Timeout),
                    FailureKind::InvalidHeader => {
                        ai.failover.contains(&FailoverCriterion::InvalidHeader)
                    }
                };
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

/// A native client of Cohere or Hugging Face: it calls the provider's endpoints itself,
/// with bodies the gateway does not interpret.
fn native_own_api(target: &Target, req: &AiRequest<'_>) -> bool {
    req.native && target.native_clients_own_api()
}

/// An encoded attempt: the request, its log entry and the model it asks for.
type Encoded = (OutRequest, Try, Option<String>);

/// Builds the upstream request for one target; client mistakes come back as errors.
fn encode(target: &Target, req: &AiRequest<'_>) -> Result<Encoded, GatewayError> {
    let rt = target.route_type;
    // What the upstream is asked for: chat, when the Responses API is bridged.
    let wire_rt = if target.bridge_responses || target.bridge_completions {
        RouteType::Chat
    } else {
        rt
    };
    let mut model = None;
    let body_bytes: Bytes = match (rt, req.body) {
        (RouteType::Preserve, _) | (_, None) => req.up.body.clone(),
        (_, Some(client_body)) => {
            // Native Gemini and Bedrock clients name the model in the path; Gemini's bodies
            // are not OpenAI-shaped at all.
            let gemini_native = req.native && target.wire == Wire::Gemini;
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
            let bridged = target.bridge_responses || target.bridge_completions;
            let (body, chat_bytes) = match (bridged, req.chat) {
                (true, Some((chat, bytes))) => (chat, Some(bytes)),
                (true, None) => {
                    return Err(GatewayError::Internal(
                        "a bridged target without its chat translation".into(),
                    ))
                }
                (false, _) => (client_body, None),
            };
            model = if own_api && client_model.is_none() && target.model_name.is_none() {
                // The endpoint's own default model (Cohere v1, a TGI server's one model).
                None
            } else {
                // A client model naming this target's alias stands for its configured model.
                let client_model =
                    client_model.filter(|m| target.model_alias.as_deref() != Some(m));
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
            match target.wire {
                Wire::OpenAi => {
                    let patch = openai::Patch {
                        model: model.as_deref(),
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
                // A Converse body names neither model nor streaming (the path does): it
                // goes as the client sent it.
                Wire::Bedrock if req.native => req.up.body.clone(),
                _ if req.native => {
                    // The client's own Messages body: only the model (and a forced stream,
                    // or an auth parameter) may change. Gemini's body has neither.
                    // TGI's bodies name no model; Cohere's and Hugging Face's clients pick
                    // streaming by endpoint or body themselves (a forced `stream` would break
                    // embed and rerank).
                    let hf_native = target.wire == Wire::HuggingFace;
                    let mut set: Vec<(&str, String)> = Vec::new();
                    if let (false, false, Some(m)) = (gemini_native, hf_native, model.as_deref()) {
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
            }
        }
    };
    let up = &target.upstream;
    let default_path = openai::default_path(wire_rt);
    let model_path;
    // A Gemini-native client's path already says model and method (AI Studio or Vertex);
    // only a path the user configured replaces it.
    let client_path = req.native
        && rt != RouteType::Preserve
        && match target.wire {
            Wire::Gemini => target.model_path || up.path.is_none(),
            // Cohere's and Hugging Face's clients call the endpoint they mean (v1 or v2
            // chat, embed, rerank, generate…), below the route's prefix.
            _ => native_own_api(target, req) && !target.path_configured,
        };
    let path: &str = match (&up.path, default_path) {
        _ if client_path => &req.up.path,
        (Some(prefix), _) if target.model_path => {
            let m = model.as_deref().ok_or_else(|| {
                GatewayError::BadRequest(
                    "model parameter not found in request, nor in gateway configuration".into(),
                )
            })?;
            model_path = llm::request_path(target.wire, wire_rt, prefix, m, req.stream);
            &model_path
        }
        (Some(p), _) => p,
        (None, Some(p)) => p,
        (None, None) => &req.up.path,
    };
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
    let mut query = query_string(req.up, req.raw_query);
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
    let join = |q: Option<&str>| {
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
    };
    let invalid = || GatewayError::BadRequest("the upstream path is not a valid URI".into());
    // The common case needs no string building: the route type's own path.
    let fixed_path = match (query.as_deref(), path_query, default_path) {
        (None, None, Some(p)) if up.path.is_none() && !client_path => Some(p),
        _ => None,
    };
    let target_uri: Uri = match (fixed_path, query.as_deref(), path_query) {
        (Some(p), ..) => Uri::from_static(p),
        (None, None, None) => Uri::try_from(path_only).map_err(|_| invalid())?,
        (None, q, _) => join(q).parse().map_err(|_| invalid())?,
    };
    let mut headers = forward_headers(&req.up.headers, up.host_header.clone(), req.forwarded);
    if target.wire == Wire::Gemini {
        // Google reads a bearer token before an API key: an OpenAI SDK's placeholder
        // `Authorization` (or a Gemini SDK's own key) would override the gateway's credential,
        // which always wins for gemini (allow_override is false).
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-goog-api-key");
    }
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if rt != RouteType::Preserve || !req.up.body.is_empty() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_bytes.len()));
    }
    if rt != RouteType::Preserve {
        headers.insert(
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
    let method = if rt == RouteType::Preserve {
        req.up.method.clone()
    } else {
        Method::POST
    };
    if let Some(signer) = &target.sigv4 {
        // Last: the signature covers the final path, Host and body.
        signer
            .sign(
                &method,
                &target_uri,
                &mut headers,
                &body_bytes,
                SystemTime::now(),
            )
            .map_err(GatewayError::BeforeProxying)?;
    }
    let out = OutRequest {
        method,
        target: target_uri,
        headers,
        body: body_bytes,
    };
    let t = if req.record {
        Try {
            port: up.port,
            host: up.host.clone(),
            scheme: up.scheme.into(),
            upstream_uri: match (fixed_path, &up.path) {
                (Some(p), _) => UriText::Fixed(p),
                (None, Some(c)) if query.is_none() && path_query.is_none() && **c == *path_only => {
                    UriText::Configured(c.clone())
                }
                _ => join(log_query.as_deref().or(query.as_deref())).into(),
            },
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

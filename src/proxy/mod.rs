//! The request path, phase by phase: route → access (plugins by priority) → upstream
//! (retry loop) → header filter → body → log.

pub mod access;
pub mod body;
pub mod exchange;
pub mod response;
pub mod restore;
pub mod retry;
pub mod websocket;
pub mod ws_relay;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::entities::Route;
use crate::config::plugins::{LlmFormat, RouteType};
use crate::error::{self, ErrorShape, GatewayError};
use crate::gateway::router::RequestView;
use crate::gateway::Snapshot;
use crate::gateway::{Gateway, DEFAULT_BODY_LIMIT};
use crate::llm::body::BodyView;
use crate::llm::responses;
use crate::llm::stream::{Dialect, Mapper, SseObserver};
use crate::llm::target::Target;
use crate::llm::Wire;
use crate::llm::{self, openai};
use crate::net::body::read_buffered;
use crate::net::upstream::{self, FailureKind};
use crate::net::upstream_tls;
use crate::observe::log::{AiLog, HeaderCopy, RequestLog, Try};
use crate::plugins::ai_proxy::AiProxy;
use crate::plugins::request_transformer::{self, UpstreamRequest};
use crate::plugins::template::TemplateSources;
use crate::plugins::{key_auth, Plugin};
use crate::proxy::exchange::Exchange;
use crate::proxy::response::{Feedback, Finish, ProxyBody};
use crate::rt::clock::millis_since_epoch;

/// What X-Forwarded-* headers say about the client connection.
pub struct Forwarded<'a> {
    pub client_ip: &'a str,
    pub proto: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    pub request_id: &'a str,
    pub prior_for: Option<&'a str>,
    /// The client's Host header as sent (with port).
    pub original_host: &'a str,
}

/// Hop-by-hop headers, never forwarded in either direction (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers the gateway sets itself for the upstream.
const RECOMPUTED: &[&str] = &["host", "content-length"];

/// The client's headers as the upstream should see them.
pub fn forward_headers(client: &HeaderMap, host: HeaderValue, f: &Forwarded<'_>) -> HeaderMap {
    // Cloning the map copies its table as is; rebuilding it would rehash every name.
    let mut h = client.clone();
    let connection_listed: Vec<String> = client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .chain(RECOMPUTED)
        .copied()
        .chain(connection_listed.iter().map(String::as_str))
    {
        h.remove(name);
    }
    h.insert(header::HOST, host);
    let set = |h: &mut HeaderMap, name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    let ip = HeaderValue::from_str(f.client_ip).ok();
    match (f.prior_for, &ip) {
        (Some(p), _) => set(&mut h, "x-forwarded-for", &format!("{p}, {}", f.client_ip)),
        // One value for both headers: a clone shares its bytes.
        (None, Some(ip)) => {
            h.insert(HeaderName::from_static("x-forwarded-for"), ip.clone());
        }
        (None, None) => {}
    }
    if let Some(ip) = ip {
        h.insert(HeaderName::from_static("x-real-ip"), ip);
    }
    let proto = match f.proto {
        "https" => HeaderValue::from_static("https"),
        "http" => HeaderValue::from_static("http"),
        other => HeaderValue::from_str(other).unwrap_or(HeaderValue::from_static("http")),
    };
    h.insert(HeaderName::from_static("x-forwarded-proto"), proto);
    set(&mut h, "x-forwarded-host", f.host);
    h.insert(
        HeaderName::from_static("x-forwarded-port"),
        HeaderValue::from(f.port),
    );
    set(&mut h, "x-forwarded-path", f.path);
    set(&mut h, "x-kong-request-id", f.request_id);
    h
}

/// A raw query string's decoded pairs, in order.
fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The query string to send: the client's raw one unless a plugin changed the pairs.
pub fn query_string(up: &UpstreamRequest, raw: Option<&str>) -> Option<String> {
    let original = query_pairs(raw);
    if original == up.query {
        return raw.map(str::to_string).filter(|q| !q.is_empty());
    }
    if up.query.is_empty() {
        return None;
    }
    Some(
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&up.query)
            .finish(),
    )
}

/// A 32-hex-digit request id: a random per-process prefix and a counter, so ids are unique
/// without a system call per request.
pub(crate) fn next_request_id() -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    format!(
        "{prefix:016x}{:016x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// An address as text. IPv4 is written with integer formatting alone: `Display` goes
/// through the formatting machinery and cost more than a thousand instructions per
/// request for the client's and the upstream's address.
pub fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(itoa::Buffer::new().format(octet));
            }
            s
        }
        std::net::IpAddr::V6(_) => ip.to_string(),
    }
}

/// Seconds since the Unix epoch (`created` of translated answers).
fn unix_seconds() -> u64 {
    millis_since_epoch() / 1000
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Handles one proxied request end to end; never fails (errors become responses).
pub async fn handle(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
    peer: SocketAddr,
    scheme: &'static str,
    local_port: u16,
) -> Response<ProxyBody> {
    handle_request(
        gw,
        req.map(body::ClientBody::Incoming),
        peer,
        scheme,
        local_port,
    )
    .await
}

/// [`handle`] for a body that may already be in memory.
pub async fn handle_request(
    gw: Arc<Gateway>,
    req: Request<body::ClientBody>,
    peer: SocketAddr,
    scheme: &'static str,
    local_port: u16,
) -> Response<ProxyBody> {
    gw.stats.total_requests.fetch_add(1, Ordering::Relaxed);
    crate::rt::busy_poll::touch();
    let started = Instant::now();
    let request_id = next_request_id();
    let snap = gw.snapshot.load_full();
    let (mut parts, body) = req.into_parts();
    // A clone of the value shares its bytes; the header map itself moves on below.
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host_value = hosts.next().cloned();
    // Over HTTP/2 the authority comes as `:authority`; a `host` naming another is malformed
    // (RFC 9113 §8.3.1), and routing on one while the upstream believes the other is the
    // same confusion as two Host headers.
    let h2_conflict = parts.version == http::Version::HTTP_2
        && matches!((&host_value, parts.uri.authority()),
            (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()));
    let refused = if hosts.next().is_some() || h2_conflict {
        // Which one would the upstream believe? Refused, as nginx does (RFC 9112 §3.2).
        Some(GatewayError::BadRequest("Bad request".into()))
    } else if parts.method == http::Method::TRACE || parts.method == http::Method::CONNECT {
        Some(GatewayError::method_not_allowed(
            &parts.method,
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        ))
    } else {
        None
    };
    let host: &str = host_value
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let mut log = Exchange::new(request_id.clone(), started);
    log.analytics = gw.analytics.get().cloned();
    let client_ip = ip_text(peer.ip());
    if let Some(e) = refused {
        log.metrics = snap.global_metrics;
        body::drain_unread(body, parts.version);
        return kong_error(e, ErrorShape::Kong, log, snap);
    }
    let found = snap.router.find(&RequestView {
        method: parts.method.as_str(),
        host,
        path: parts.uri.path(),
        headers: &parts.headers,
    });
    let Some(m) = found else {
        log.metrics = snap.global_metrics;
        if snap.global_logs {
            log.capture_request(&parts, &client_ip, scheme, host);
        }
        body::drain_unread(body, parts.version);
        return kong_error(GatewayError::NoRoute, ErrorShape::Kong, log, snap);
    };
    log.route = Some(m.route);
    let Some(route) = snap.routes.get(m.route) else {
        return kong_error(
            GatewayError::Internal("route index".into()),
            ErrorShape::Kong,
            log,
            snap,
        );
    };
    if route.logs {
        log.capture_request(&parts, &client_ip, scheme, host);
    }
    log.metrics = route.metrics;
    let service = route.service.and_then(|s| snap.services.get(s));
    let ai: Option<Arc<AiProxy>> =
        route
            .chain
            .iter()
            .find_map(|i| match snap.plugins.get(*i).map(|p| &p.plugin) {
                Some(Plugin::AiProxy(a)) => Some(a.clone()),
                _ => None,
            });
    let shape = if ai.is_some() {
        ErrorShape::OpenAi
    } else {
        ErrorShape::Kong
    };
    let wants_websocket = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.eq_ignore_ascii_case("websocket"))
        .unwrap_or(false);
    if wants_websocket {
        let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        // An unauthenticated client is refused before the upgrade (each frame is checked
        // again when it is proxied).
        if let Some(Plugin::KeyAuth(ka)) = route
            .chain
            .first()
            .and_then(|i| snap.plugins.get(*i))
            .map(|p| &p.plugin)
        {
            let mut probe = UpstreamRequest {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
                query: query_pairs(parts.uri.query()),
                headers: parts.headers.clone(),
                body: Bytes::new(),
            };
            let now = (millis_since_epoch() / 1000) as i64;
            if let Err(refusal) = key_auth::authenticate(ka, &snap, &mut probe, now) {
                let e = GatewayError::Unauthorized {
                    message: refusal.message(),
                    challenge: key_auth::challenge(ka),
                };
                return kong_error(e, shape, log, snap);
            }
        }
        // The relay talks to the upstream directly, so only a route without per-request
        // access plugins (keys, quotas, prompt plugins) may use it; any other goes through
        // the bridge, which runs the whole plugin chain for every request. (The relay's
        // handshake carries the client's headers as they are: request-transformer rules
        // do not apply to its frames, as before.)
        let plain_chain = !snap.consumer_plugins
            && route.chain.iter().all(|i| {
                snap.plugins.get(*i).is_some_and(|p| {
                    matches!(
                        p.plugin,
                        Plugin::AiProxy(_)
                            | Plugin::FileLog(_)
                            | Plugin::HttpLog(_)
                            | Plugin::Prometheus(_)
                            | Plugin::RequestTransformer(_)
                    )
                })
            });
        return match ai.as_ref().filter(|a| websocket::serves(a)) {
            Some(a) => websocket::accept(
                &gw,
                &parts,
                upgrade,
                a.max_body,
                websocket::Origin {
                    peer,
                    scheme,
                    local_port,
                },
                (plain_chain && ws_relay::relayable(a)).then(|| {
                    let mut record = Request::new(());
                    *record.method_mut() = parts.method.clone();
                    *record.uri_mut() = parts.uri.clone();
                    *record.headers_mut() = parts.headers.clone();
                    (
                        ws_relay::RelayRoute {
                            ai: a.clone(),
                            route: m.route,
                            snapshot: snap.clone(),
                            trust: service.and_then(|s| s.tls.clone()),
                            analytics: gw.analytics.get().cloned(),
                        },
                        ws_relay::Client {
                            ip: client_ip.clone(),
                            scheme,
                            host: host.to_string(),
                            parts: record.into_parts().0,
                        },
                    )
                }),
            )
            .unwrap_or_else(|e| kong_error(e, shape, log, snap)),
            None => kong_error(GatewayError::UpgradeRefused, shape, log, snap),
        };
    }

    // Access phase, part 1: the body (read once, bounded).
    let limit = ai
        .as_ref()
        .map(|a| a.max_body)
        .unwrap_or(DEFAULT_BODY_LIMIT);
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read = body::ReadOptions {
        timeout: Duration::from_millis(gw.body_timeout_ms.load(Ordering::Relaxed)),
        linger: parts.version == http::Version::HTTP_2,
    };
    let body_bytes = match body::read_limited(body, content_length, limit, read).await {
        Ok(b) => b,
        Err(e) => {
            if let GatewayError::BodyTimeout = e {
                gw.stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %peer, "request body cut: no data within the body timeout");
            }
            return kong_error(e, shape, log, snap);
        }
    };
    log.request_size = body_bytes.len() as u64;

    let raw_query = parts.uri.query();
    let query = query_pairs(raw_query);
    // Templates read the client's original headers; keep a copy only when a plugin may
    // change them before ai-proxy renders its templates.
    let original_headers = route.transforms.then(|| parts.headers.clone());
    let mut up = UpstreamRequest {
        method: parts.method.clone(),
        path: upstream_path(
            route.strip_path,
            service.and_then(|s| s.path.as_deref()),
            &m.path,
            m.matched_len,
        ),
        query: query.clone(),
        headers: std::mem::take(&mut parts.headers),
        body: body_bytes,
    };

    // Access phase, part 2: plugins in PRIORITY order (ai-proxy is handled after them).
    // key-auth (1250) runs first; the transformer's templates still read the client's
    // original headers (the copy above), as in Kong.
    let mut chain_override: Option<Vec<usize>> = None;
    if let Some(Plugin::KeyAuth(ka)) = route
        .chain
        .first()
        .and_then(|i| snap.plugins.get(*i))
        .map(|p| &p.plugin)
    {
        let preflight = up.method == http::Method::OPTIONS;
        if !preflight || ka.config.run_on_preflight {
            let now = (millis_since_epoch() / 1000) as i64;
            match key_auth::authenticate(ka, &snap, &mut up, now) {
                Ok(who) => {
                    // Consumer-scoped plugins apply from here on (Kong resolves them after
                    // authentication).
                    if snap.consumer_plugins {
                        if let Some(c) = snap.consumers.get(who.consumer) {
                            let groups: Vec<&str> = snap
                                .member_of
                                .get(who.consumer)
                                .into_iter()
                                .flatten()
                                .filter_map(|g| snap.groups.get(*g).map(|(id, _)| id.as_str()))
                                .collect();
                            let chain = crate::gateway::snapshot::resolve_chain(
                                &snap.plugins,
                                Some(m.route),
                                route.service,
                                Some(&c.id),
                                &groups,
                            );
                            if chain != route.chain {
                                chain_override = Some(chain);
                            }
                        }
                    }
                    log.consumer = Some((who.consumer, who.credential));
                    key_auth::redact_log(&ka.config, &mut log);
                }
                Err(refusal) => {
                    key_auth::redact_log(&ka.config, &mut log);
                    let e = GatewayError::Unauthorized {
                        message: refusal.message(),
                        challenge: key_auth::challenge(ka),
                    };
                    return kong_error(e, shape, log, snap);
                }
            }
        }
    }
    let mut original_headers = original_headers;
    let mut ai = ai;
    if let Some(chain) = &chain_override {
        let has = |f: fn(&Plugin) -> bool| {
            chain
                .iter()
                .any(|i| snap.plugins.get(*i).is_some_and(|p| f(&p.plugin)))
        };
        if has(|p| matches!(p, Plugin::RequestTransformer(_))) && original_headers.is_none() {
            original_headers = Some(up.headers.clone());
        }
        if has(Plugin::logs) && !log.enabled {
            let mut seen = Request::new(());
            *seen.method_mut() = up.method.clone();
            *seen.uri_mut() = parts.uri.clone();
            *seen.headers_mut() = up.headers.clone();
            log.capture_request(&seen.into_parts().0, &client_ip, scheme, host);
        }
        log.metrics = has(|p| matches!(p, Plugin::Prometheus(_)));
        ai = chain
            .iter()
            .find_map(|i| match snap.plugins.get(*i).map(|p| &p.plugin) {
                Some(Plugin::AiProxy(a)) => Some(a.clone()),
                _ => None,
            });
        log.chain = Some(chain.clone());
    }
    let chain: &[usize] = chain_override.as_deref().unwrap_or(&route.chain);
    let mut extra_headers: access::Headers = Vec::new();
    if route.tracing || chain_override.is_some() {
        let otel = chain
            .iter()
            .find_map(|i| match snap.plugins.get(*i).map(|p| &p.plugin) {
                Some(Plugin::OpenTelemetry(o)) => Some(o.clone()),
                _ => None,
            });
        if let Some(o) = otel {
            let trace = crate::observe::otel::TraceCtx::start(&up.headers, o.rate);
            // Plain services see this request's span as the parent; AI routes give each
            // upstream attempt its own span (retry.rs).
            if let Some(v) = trace.traceparent(trace.span) {
                up.headers.insert("traceparent", v);
            }
            if let Some(name) = o.config.http_response_header_for_traceid.as_deref() {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::try_from(name),
                    HeaderValue::from_str(&trace.trace_hex()),
                ) {
                    extra_headers.push((n, v));
                }
            }
            log.trace = Some(trace);
        }
    }
    if route.quotas || chain_override.is_some() {
        let caller = access::Caller {
            consumer: log.consumer.as_ref().map(|c| c.0),
            credential: log.consumer.as_ref().and_then(|c| c.1.as_deref()),
            ip: &client_ip,
            path: parts.uri.path(),
            service: route.service,
        };
        let mut charges = Vec::new();
        let r = access::quotas(
            &gw,
            &snap,
            chain,
            &caller,
            &up,
            ai.as_deref(),
            &mut extra_headers,
            &mut charges,
        )
        .await;
        log.charges = charges;
        if let Err(e) = r {
            if matches!(
                e,
                GatewayError::RateLimited { .. } | GatewayError::PromptOverQuota(_)
            ) {
                log.guardrail = Some(e.code());
                log.refusal = Some(e.to_string());
            }
            return kong_error_with(e, shape, log, snap, extra_headers);
        }
    }
    if let Some(orig) = &original_headers {
        let sources = TemplateSources {
            headers: orig,
            query: &query,
            uri_captures: &m.captures,
        };
        for &i in chain {
            if let Some(Plugin::RequestTransformer(cfg)) = snap.plugins.get(i).map(|p| &p.plugin) {
                if let Err(e) = request_transformer::apply(cfg, &mut up, &sources) {
                    let err = GatewayError::Internal(format!("request-transformer: {e}"));
                    return kong_error(err, shape, log, snap);
                }
            }
        }
    }
    let mut filter: Option<restore::Filter> = None;
    if route.shapes_prompt || chain_override.is_some() {
        match access::shape_prompt(&snap, chain, &mut up) {
            Ok(shaped) => {
                filter = shaped.filter;
                if shaped.masked {
                    log.guardrail = Some("masked");
                }
            }
            Err(e) => {
                if matches!(e, GatewayError::PromptBlocked(_)) {
                    log.guardrail = Some("blocked");
                }
                let mut resp = kong_error(e, shape, log, snap);
                add_headers(&mut resp, extra_headers);
                return resp;
            }
        }
    }
    let client_headers = original_headers.as_ref().unwrap_or(&up.headers);
    let sources = TemplateSources {
        headers: client_headers,
        query: &query,
        uri_captures: &m.captures,
    };

    let port = host
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(local_port);
    let forwarded = Forwarded {
        client_ip: &client_ip,
        proto: scheme,
        host: host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
        port,
        path: parts.uri.path(),
        request_id: &request_id,
        prior_for: client_headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok()),
        original_host: host,
    };

    let is_debug = client_headers.contains_key("kong-debug");
    let mut resp = match ai {
        Some(ai) => {
            let ctx = AiCtx {
                gw: &gw,
                ai: &ai,
                up: &up,
                raw_query,
                sources: &sources,
                forwarded: &forwarded,
                is_debug,
                trust: service.and_then(|s| s.tls.as_ref()),
                timeouts: ai.timeouts(
                    service.map(|s| [s.connect_timeout, s.write_timeout, s.read_timeout]),
                ),
                filter,
            };
            // Boxed: hyper keeps room for the whole handler future for the life of each
            // connection, so the large upstream part is allocated only while it runs.
            Box::pin(proxy_ai(ctx, log, snap.clone())).await
        }
        None => match service {
            Some(s) if s.enabled => {
                Box::pin(proxy_plain(
                    &gw,
                    s,
                    route,
                    &up,
                    raw_query,
                    &forwarded,
                    log,
                    snap.clone(),
                ))
                .await
            }
            _ => {
                let e = GatewayError::UpstreamUnavailable("route has no enabled service".into());
                kong_error(e, shape, log, snap.clone())
            }
        },
    };
    add_headers(&mut resp, extra_headers);
    resp
}

/// Adds the headers plugins set for the client (quota state, trace id) to a response.
fn add_headers(resp: &mut Response<ProxyBody>, headers: access::Headers) {
    for (k, v) in headers {
        resp.headers_mut().insert(k, v);
    }
}

/// Kong v0 path handling: `strip_path` removes the matched part, then the rest is joined
/// to the service path with exactly one slash.
fn upstream_path(
    strip_path: bool,
    service_path: Option<&str>,
    path: &str,
    matched_len: usize,
) -> String {
    let rest = if strip_path {
        path.get(matched_len..).unwrap_or("")
    } else {
        path
    };
    let base = service_path.unwrap_or("/");
    if rest.is_empty() {
        return base.to_string();
    }
    let mut out = String::with_capacity(base.len() + rest.len() + 1);
    out.push_str(base);
    match (base.ends_with('/'), rest.starts_with('/')) {
        (true, true) => out.push_str(&rest[1..]),
        (false, false) => {
            out.push('/');
            out.push_str(rest);
        }
        _ => out.push_str(rest),
    }
    out
}

/// A gateway-generated error response that still goes through the log phase.
fn kong_error(
    err: GatewayError,
    shape: ErrorShape,
    log: Exchange,
    snap: Arc<Snapshot>,
) -> Response<ProxyBody> {
    kong_error_with(err, shape, log, snap, Vec::new())
}

/// [`kong_error`] with plugin headers (a quota's), which the log record shows too.
fn kong_error_with(
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

struct AiCtx<'a> {
    gw: &'a Gateway,
    ai: &'a Arc<AiProxy>,
    up: &'a UpstreamRequest,
    raw_query: Option<&'a str>,
    sources: &'a TemplateSources<'a>,
    forwarded: &'a Forwarded<'a>,
    is_debug: bool,
    /// The route's service's upstream TLS trust (None: the default).
    trust: Option<&'a upstream_tls::Trust>,
    /// `ai-sanitizer`'s work on the answer (restoring, masking).
    filter: Option<restore::Filter>,
    timeouts: crate::plugins::ai_proxy::Timeouts,
}

async fn proxy_ai(c: AiCtx<'_>, mut log: Exchange, snap: Arc<Snapshot>) -> Response<ProxyBody> {
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
        if !body::is_json(c.up.headers.get(header::CONTENT_TYPE)) {
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
        .map(restore::SseFilter::new);
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

/// A successful answer after `ai-sanitizer` restored and masked it; the log's payload
/// keeps what the upstream said.
fn answer_filtered(
    f: Option<&restore::Filter>,
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

/// A Responses request translated for chat-only targets.
struct Bridge {
    bytes: Bytes,
    /// History and this input, stored with the answer under the new response id.
    conversation: Vec<serde_json::Value>,
    meta: Arc<responses::Meta>,
}

/// Translates a Responses body to chat, with the conversation its `previous_response_id`
/// names.
fn bridge_request(gw: &Gateway, body: &BodyView<'_>, stream: bool) -> Result<Bridge, GatewayError> {
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
type BridgedAnswer = (Vec<u8>, Option<llm::usage::Usage>, Option<String>);

/// A bridged target's buffered 200 answer as a Response object (stored for
/// `previous_response_id` unless the client said `store: false`); usage and model for the log.
fn bridged_answer(
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

#[allow(clippy::too_many_arguments)]
async fn proxy_plain(
    gw: &Gateway,
    service: &crate::config::entities::Service,
    route: &Route,
    up: &UpstreamRequest,
    raw_query: Option<&str>,
    forwarded: &Forwarded<'_>,
    mut log: Exchange,
    snap: Arc<Snapshot>,
) -> Response<ProxyBody> {
    let default_port = if service.protocol == "https" { 443 } else { 80 };
    let authority = if service.port == default_port {
        service.host.clone()
    } else {
        format!("{}:{}", service.host, service.port)
    };
    let mut upstream_uri = up.path.clone();
    if let Some(q) = query_string(up, raw_query) {
        upstream_uri.push('?');
        upstream_uri.push_str(&q);
    }
    // request-transformer may replace `host`; otherwise Kong's preserve_host rule applies.
    let replaced_host = up
        .headers
        .get(header::HOST)
        .filter(|h| h.as_bytes() != forwarded.original_host.as_bytes());
    let host_header = match replaced_host.and_then(|h| h.to_str().ok()) {
        Some(h) => h.to_string(),
        None if route.preserve_host => forwarded.original_host.to_string(),
        None => authority.clone(),
    };
    let Ok(host_value) = HeaderValue::from_str(&host_header) else {
        let e = GatewayError::BadRequest("the Host for the upstream is not a valid header".into());
        return kong_error(e, ErrorShape::Kong, log, snap);
    };
    let mut headers = forward_headers(&up.headers, host_value, forwarded);
    if !up.body.is_empty() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(up.body.len()));
    }
    let target: http::Uri = match upstream_uri.parse() {
        Ok(u) => u,
        Err(_) => {
            let e = GatewayError::BadRequest("the upstream path is not a valid URI".into());
            return kong_error(e, ErrorShape::Kong, log, snap);
        }
    };
    let out = upstream::OutRequest {
        method: up.method.clone(),
        target,
        headers,
        body: up.body.clone(),
    };
    let ep = upstream::Endpoint {
        https: service.protocol == "https",
        host: &service.host,
        port: service.port,
        trust: service.tls.as_ref(),
    };
    log.upstream_uri = Some(upstream_uri.clone().into());
    log.proxy_latency_ms = Some(ms(log.started.elapsed()));
    let connect = Duration::from_millis(service.connect_timeout.max(1));
    let read = Duration::from_millis(service.read_timeout.max(1));
    let mut last = None;
    for _ in 0..=service.retries {
        let start = Instant::now();
        let mut t = Try {
            port: service.port,
            host: service.host.as_str().into(),
            scheme: service.protocol.clone().into(),
            upstream_uri: upstream_uri.clone().into(),
            balancer_start: ms(start.duration_since(log.started)),
            ..Default::default()
        };
        match gw.upstreams.send(&ep, out.clone(), connect, read).await {
            Ok((resp, conn)) => {
                t.ip = conn.peer().map(|a| a.ip());
                t.outcome = "success".into();
                log.tries.push(t);
                log.upstream_latency_ms = Some(ms(start.elapsed()));
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                add_proxy_headers(&mut parts.headers, &log);
                log.upstream_status = Some(parts.status.as_u16());
                log.status = parts.status.as_u16();
                if log.enabled {
                    log.response_headers = HeaderCopy::of(&parts.headers);
                }
                log.source = "upstream";
                let finish = Finish::boxed(log, snap, None);
                let mut r = Response::new(ProxyBody::upstream(
                    body, conn, None, None, None, read, finish,
                ));
                *r.status_mut() = parts.status;
                *r.headers_mut() = parts.headers;
                return r;
            }
            Err(f) => {
                t.outcome = f.kind.as_str().into();
                log.tries.push(t);
                // Only connection failures are safe to retry: the request never left.
                let again = f.kind == FailureKind::Connect;
                last = Some(f);
                if !again {
                    break;
                }
            }
        }
    }
    let e = match last {
        Some(f) => f.into_gateway_error(),
        None => GatewayError::UpstreamInvalid("no attempt was made".into()),
    };
    kong_error(e, ErrorShape::Kong, log, snap)
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

/// A latency in milliseconds as a header value; the common small ones are made once and
/// shared, since formatting a number into a header allocates.
fn ms_header(n: u64) -> HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..256u64).map(HeaderValue::from).collect());
    usize::try_from(n)
        .ok()
        .and_then(|i| SMALL.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

fn add_proxy_headers(h: &mut HeaderMap, log: &RequestLog) {
    h.insert(
        HeaderName::from_static("x-kong-upstream-latency"),
        ms_header(log.upstream_latency_ms.unwrap_or(0)),
    );
    h.insert(
        HeaderName::from_static("x-kong-proxy-latency"),
        ms_header(log.proxy_latency_ms.unwrap_or(0)),
    );
    if let Ok(v) = HeaderValue::from_str(&log.request_id) {
        h.insert(HeaderName::from_static("x-kong-request-id"), v);
    }
    h.append(header::VIA, HeaderValue::from_static(crate::VIA_TOKEN));
}

/// The usage and model of a buffered answer, for the log (and the balancer's feedback).
fn note_answer(log: &mut RequestLog, usage: Option<llm::usage::Usage>, model: Option<String>) {
    if let Some(a) = log.ai.as_mut() {
        a.usage = usage;
        a.response_model = model;
        a.llm_latency_ms = Some(ms(log.started.elapsed()));
    }
}

/// A body the gateway rewrote (a translated answer, or a provider error in OpenAI's shape),
/// sent as JSON with its own length.
fn json_answer(
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
fn buffered_response(
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
fn not_a_stream(
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
fn sse_dialect(target: &Target) -> Dialect {
    if target.route_type == RouteType::Responses {
        Dialect::Responses
    } else {
        Dialect::ChatLike
    }
}

/// A 200 answer that is not what the route type promises.
fn transformation_error(target: &Target, reason: String) -> GatewayError {
    GatewayError::Transformation {
        provider: target.provider.as_str().into(),
        route_type: target.route_type.as_str().into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.3.255",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let parsed: std::net::IpAddr = ip.parse().expect("test address");
            assert_eq!(ip_text(parsed), parsed.to_string());
        }
    }

    #[test]
    fn forwarded_headers_drop_hop_by_hop_and_add_x_forwarded() {
        let mut client = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("host", "gw.example:8000"),
            ("content-length", "12"),
            ("x-user", "ana"),
            ("accept", "a"),
        ] {
            client.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        client.append("accept", HeaderValue::from_static("b"));
        let f = Forwarded {
            client_ip: "10.1.2.3",
            proto: "http",
            host: "gw.example",
            port: 8000,
            path: "/chat",
            request_id: "rid",
            prior_for: Some("1.1.1.1"),
            original_host: "gw.example:8000",
        };
        let h = forward_headers(&client, HeaderValue::from_static("api.example.com"), &f);
        for gone in [
            "connection",
            "keep-alive",
            "x-secret-hop",
            "transfer-encoding",
            "content-length",
        ] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(h["host"], "api.example.com");
        assert_eq!(h["x-user"], "ana");
        assert_eq!(h.get_all("accept").iter().count(), 2);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        assert_eq!(h["x-forwarded-port"], "8000");
        assert_eq!(h["x-kong-request-id"], "rid");
        assert_eq!(h["x-real-ip"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        let first_hop = Forwarded {
            prior_for: None,
            proto: "https",
            ..f
        };
        let h = forward_headers(&client, HeaderValue::from_static("a"), &first_hop);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn latency_headers_and_upstream_paths() {
        for n in [0, 7, 255, 256, 123_456] {
            assert_eq!(ms_header(n), n.to_string().as_str());
        }
        assert_eq!(upstream_path(false, None, "/v1/chat", 3), "/v1/chat");
        assert_eq!(
            upstream_path(true, Some("/base"), "/v1/chat", 3),
            "/base/chat"
        );
        assert_eq!(
            upstream_path(true, Some("/base/"), "/v1/chat", 3),
            "/base/chat"
        );
        assert_eq!(upstream_path(true, Some("/b/"), "/v1", 3), "/b/");
        assert_eq!(upstream_path(true, Some("/b"), "/v1x", 3), "/b/x");
    }
}

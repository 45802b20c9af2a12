//! The request path, phase by phase: route → access (plugins by priority) → upstream
//! (retry loop) → header filter → body → log.

pub mod access;
mod ai;
mod ai_answer;
mod answer;
pub mod body;
pub mod cached;
pub mod exchange;
mod guarded;
pub mod headers;
mod mcp;
mod mcp_sse;
mod plain;
pub mod realtime;
pub mod response;
pub mod retry;
mod video;
pub mod websocket;
pub mod ws_relay;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response};

use crate::error::{ErrorShape, GatewayError};
use crate::gateway::router::RequestView;
use crate::gateway::{Gateway, DEFAULT_BODY_LIMIT};
use crate::observe::log::RequestId;
use crate::plugins::ai_proxy::AiProxy;
use crate::plugins::request_transformer::UpstreamRequest;
use crate::plugins::template::TemplateSources;
use crate::proxy::exchange::Exchange;
use crate::proxy::response::ProxyBody;
use crate::rt::clock::millis_since_epoch;

use self::ai::{proxy_ai, AiCtx};
use self::answer::{kong_error, kong_error_with};
use self::headers::{add_headers, query_pairs, Forwarded};
use self::plain::{proxy_plain, upstream_path};

/// Request ids a thread takes from the shared counter at once.
const ID_BLOCK: u64 = 4096;

/// A 32-hex-digit request id: a random per-process prefix and a counter, so ids are unique
/// without a system call per request. Each thread counts through a block of its own, so
/// the shared counter (a cache line that would move between the workers' cores on every
/// request) is touched once per `ID_BLOCK` requests.
pub(crate) fn next_request_id() -> RequestId {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        /// The next id of this thread's block, and the end of the block.
        static BLOCK: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    }
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let n = BLOCK.with(|b| {
        let (mut next, mut end) = b.get();
        if next == end {
            next = COUNTER.fetch_add(ID_BLOCK, Ordering::Relaxed);
            end = next + ID_BLOCK;
        }
        b.set((next + 1, end));
        next
    });
    let mut id = [0u8; 32];
    hex_into(&mut id[..16], prefix);
    hex_into(&mut id[16..], n);
    // Hex digits are ASCII: the check cannot fail.
    RequestId::new(String::from_utf8(id.to_vec()).unwrap_or_default())
}

/// `v` as 16 lower-case hex digits into `out` (16 bytes): `format!("{v:016x}")` without
/// the formatting machinery (callgrind: ~500 instructions per request id), and bytes
/// rather than a `String` pushed a char at a time (~400 more).
fn hex_into(out: &mut [u8], v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate().take(16) {
        *b = HEX[((v >> ((15 - i) * 4)) & 0xf) as usize];
    }
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
    gw: &Arc<Gateway>,
    req: Request<crate::net::inbound::Body>,
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

/// [`handle`] for a body that may already be in memory: the request path, one line per
/// phase (Kong's: route, access, upstream with the header and body filters, log).
pub async fn handle_request(
    gw: &Arc<Gateway>,
    req: Request<body::ClientBody>,
    peer: SocketAddr,
    scheme: &'static str,
    local_port: u16,
) -> Response<ProxyBody> {
    gw.stats.total_requests.incr();
    crate::rt::busy_poll::touch();
    let request_id = next_request_id();
    let mut log = Exchange::new(request_id.clone(), Instant::now());
    log.analytics = gw.analytics.get().cloned();
    let snap = gw.snapshot.load_full();
    let (mut parts, body) = req.into_parts();
    let host_value = match screen(&parts) {
        Ok(h) => h,
        Err(e) => {
            if let Some(rest) = body::unread(body, parts.version) {
                // Boxed: only refused HTTP/2 uploads pay for the drain's state.
                Box::pin(body::drain_rest(rest)).await;
            }
            return refuse_early(e, log, snap);
        }
    };
    let upgrade = wants_websocket(&parts.headers)
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
    let c = Conn {
        peer,
        ip: ip_text(peer.ip()),
        scheme,
        local_port,
        host: host_of(host_value.as_ref(), &parts.uri),
    };
    let Some(m) = route(&snap, &mut log, &parts, &c) else {
        if let Some(rest) = body::unread(body, parts.version) {
            // Boxed: only refused HTTP/2 uploads pay for the drain's state.
            Box::pin(body::drain_rest(rest)).await;
        }
        let e = GatewayError::NoRoute;
        return kong_error(e, ErrorShape::Kong, log, snap);
    };
    let Some(route) = snap.routes.get(m.route) else {
        let e = GatewayError::Internal("route index".into());
        return kong_error(e, ErrorShape::Kong, log, snap);
    };
    let ai = access::find_ai(&snap, &route.chain);
    let shape = match &ai {
        Some(a) => a.error_shape(),
        None => ErrorShape::Kong,
    };
    if let Some(a) = ai.as_ref().filter(|a| realtime::serves(a)).cloned() {
        if let Some(rest) = upgrade
            .is_none()
            .then(|| body::unread(body, parts.version))
            .flatten()
        {
            Box::pin(body::drain_rest(rest)).await;
        }
        let upgrade = upgrade.flatten();
        let at = (route, &m);
        // Boxed: hyper keeps room for this handler's future for the life of a connection.
        return Box::pin(realtime::open(gw, &snap, at, &parts, upgrade, a, log, &c)).await;
    }
    if let Some(upgrade) = upgrade {
        return websocket::upgrade(gw, &snap, (route, m.route), &parts, upgrade, ai, log, &c);
    }
    let at = (&mut parts.headers, parts.version);
    // Boxed, like the access phase below: hyper moves this handler's future into its
    // connection state per request, so what is awaited inline adds to every move.
    let (body, upload) = match Box::pin(client_body(gw, at, body, ai.as_deref(), peer)).await {
        Ok(b) => b,
        Err(e) => return kong_error(e, shape, log, snap),
    };
    log.request_size = body.len() as u64;
    let service = route.service.and_then(|s| snap.services.get(s));
    let client_parts = (&mut parts.headers, &parts.uri, &parts.method);
    let (mut up, query, original_headers) =
        upstream_request(client_parts, body, route, service, &m);
    let client = access::Client {
        ip: &c.ip,
        scheme,
        host: c.host,
        uri: &parts.uri,
    };
    let access = (&query[..], &m.captures);
    let admitted = Box::pin(access::run(
        gw,
        &snap,
        (route, m.route),
        &mut log,
        &mut up,
        &client,
        access,
        (ai, original_headers),
    ))
    .await;
    let admitted = match admitted {
        Ok(a) => a,
        Err((e, headers)) => return kong_error_with(e, shape, log, snap, headers),
    };
    let mut extra_headers = admitted.headers;
    let sources = TemplateSources {
        headers: admitted.original_headers.as_ref().unwrap_or(&up.headers),
        query: &query,
        uri_captures: &m.captures,
    };
    let forwarded = forwarded(&c, &parts.uri, &request_id, sources.headers);
    // The upstream phase and its header and body filters: ai-proxy's balancer and retry
    // loop, or the route's service. Boxed: hyper keeps room for the whole handler future
    // for the life of each connection, so the large upstream part is allocated only while
    // it runs; built right here so it is moved as little as possible.
    let raw_query = parts.uri.query();
    if let Some(armed) = admitted.mcp {
        let cx = mcp::McpCtx {
            gw,
            snap: snap.clone(),
            route,
            service,
            up: &up,
            client_headers: sources.headers,
            raw_query,
            forwarded: &forwarded,
            conn: &c,
        };
        // Boxed: MCP routes only; a tool call comes back through this handler.
        let mut resp = Box::pin(mcp::serve(cx, armed, log)).await;
        add_headers(&mut resp, extra_headers);
        return resp;
    }
    // ai-semantic-response-guard reads ai-proxy's route after the upstream phase took it.
    let guarded = admitted.guard.and_then(|g| Some((g, admitted.ai.clone()?)));
    let ids = (&request_id[..], log.started);
    let mut resp = match admitted.ai {
        Some(ai) => {
            let ctx = AiCtx {
                gw,
                trust: service.and_then(|s| s.tls.as_ref()),
                timeouts: ai.timeouts(
                    service.map(|s| [s.connect_timeout, s.write_timeout, s.read_timeout]),
                ),
                ai,
                up: &up,
                raw_query,
                sources: &sources,
                forwarded: &forwarded,
                is_debug: sources.headers.contains_key(headers::KONG_DEBUG),
                matched: m.path.get(..m.matched_len).unwrap_or(""),
                upload: upload.as_ref(),
                suffix: m.path.get(m.matched_len..).unwrap_or(""),
                filter: admitted.filter,
            };
            match (admitted.cache, guarded) {
                (None, None) => Box::pin(proxy_ai(ctx, log, snap.clone())).await,
                (cache, guarded) => {
                    let eh = &mut extra_headers;
                    let phase = ai_phase(ctx, cache, guarded, (log, eh), ids, snap.clone());
                    Box::pin(phase).await
                }
            }
        }
        None => match service {
            Some(s) if s.enabled => {
                let f = &forwarded;
                Box::pin(proxy_plain(
                    gw,
                    s,
                    route,
                    &up,
                    raw_query,
                    f,
                    log,
                    snap.clone(),
                    admitted.respond,
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

/// The upstream phase of an AI route: `ai-semantic-cache`'s lookup (a hit answers without
/// the upstream), ai-proxy's balancer and retry loop, and `ai-semantic-response-guard`'s
/// check of the whole answer. Routes with neither plugin call `proxy_ai` directly: this
/// future is larger (callgrind: ~2k instructions more per request to build and move).
async fn ai_phase(
    ctx: AiCtx<'_>,
    cache: Option<crate::plugins::phases::ArmedCache>,
    guarded: Option<(crate::plugins::phases::ArmedGuard, Arc<AiProxy>)>,
    (log, headers): (Exchange, &mut Vec<(http::HeaderName, http::HeaderValue)>),
    ids: (&str, Instant),
    snap: Arc<crate::gateway::Snapshot>,
) -> Response<ProxyBody> {
    let gw = ctx.gw;
    let resp = match cache {
        None => proxy_ai(ctx, log, snap.clone()).await,
        Some(armed) => {
            let client = (&ctx.up.body[..], &ctx.up.headers);
            // Boxed: only cached routes pay for the lookup's state.
            let lookup = cached::serve(ctx.gw, &ctx.ai, armed, client, log, headers, &snap);
            match Box::pin(lookup).await {
                cached::Served::Answer(resp) => resp,
                cached::Served::Upstream(log) => proxy_ai(ctx, log, snap.clone()).await,
            }
        }
    };
    match guarded {
        // Boxed: only guarded routes pay for the embeddings call's state.
        Some((g, ai)) => Box::pin(guarded::screen(gw, g, &ai, resp, ids, snap)).await,
        None => resp,
    }
}

/// The request as the access phase and the upstream see it (path after the route's
/// prefix, the service's path, the query as pairs), and a copy of the client's headers when
/// a plugin may change them before ai-proxy renders its templates.
fn upstream_request(
    (headers, uri, method): (&mut http::HeaderMap, &http::Uri, &http::Method),
    body: Bytes,
    route: &crate::config::entities::Route,
    service: Option<&crate::config::entities::Service>,
    m: &crate::gateway::router::RouteMatch,
) -> (
    UpstreamRequest,
    Vec<(String, String)>,
    Option<http::HeaderMap>,
) {
    let query = query_pairs(uri.query());
    let original_headers = route.transforms.then(|| headers.clone());
    let up = UpstreamRequest {
        method: method.clone(),
        path: upstream_path(
            route.strip_path,
            service.and_then(|s| s.path.as_deref()),
            &m.path,
            m.matched_len,
        ),
        query: query.clone(),
        headers: std::mem::take(headers),
        body,
    };
    (up, query, original_headers)
}

/// The client's connection, as the later phases need it.
pub(crate) struct Conn<'a> {
    pub peer: SocketAddr,
    pub ip: String,
    pub scheme: &'static str,
    pub local_port: u16,
    /// The request's Host (or HTTP/2 authority), as the client gave it.
    pub host: &'a str,
}

/// A request head the gateway refuses before routing: two Host headers, a Host naming
/// another authority than HTTP/2's `:authority`, TRACE and CONNECT. Ok: the Host header.
fn screen(parts: &http::request::Parts) -> Result<Option<http::HeaderValue>, GatewayError> {
    // A clone of the value shares its bytes; the header map itself moves on later.
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host_value = hosts.next().cloned();
    // Over HTTP/2 the authority comes as `:authority`; a `host` naming another is malformed
    // (RFC 9113 §8.3.1), and routing on one while the upstream believes the other is the
    // same confusion as two Host headers.
    let h2_conflict = parts.version == http::Version::HTTP_2
        && matches!((&host_value, parts.uri.authority()),
            (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()));
    if hosts.next().is_some() || h2_conflict {
        // Which one would the upstream believe? Refused, as nginx does (RFC 9112 §3.2).
        return Err(GatewayError::BadRequest("Bad request".into()));
    }
    if parts.method == http::Method::TRACE || parts.method == http::Method::CONNECT {
        return Err(GatewayError::method_not_allowed(
            &parts.method,
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        ));
    }
    Ok(host_value)
}

/// The Host the request names (or its HTTP/2 authority).
fn host_of<'a>(host_value: Option<&'a http::HeaderValue>, uri: &'a http::Uri) -> &'a str {
    host_value
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// A request refused by [`screen`] (its body drained first): Kong's shape, counted by
/// global metrics.
fn refuse_early(
    e: GatewayError,
    mut log: Exchange,
    snap: Arc<crate::gateway::Snapshot>,
) -> Response<ProxyBody> {
    log.metrics = snap.global_metrics;
    kong_error(e, ErrorShape::Kong, log, snap)
}

/// The route for the request, with the log record set up for it (what it captures, its
/// metrics); None: no route matches (the global plugins' record).
fn route(
    snap: &crate::gateway::Snapshot,
    log: &mut Exchange,
    parts: &http::request::Parts,
    c: &Conn<'_>,
) -> Option<crate::gateway::router::RouteMatch> {
    let found = snap.router.find(&RequestView {
        method: parts.method.as_str(),
        host: c.host,
        path: parts.uri.path(),
        headers: &parts.headers,
    });
    let Some(m) = found else {
        log.metrics = snap.global_metrics;
        if snap.global_logs {
            log.capture_request(parts, &c.ip, c.scheme, c.host);
        }
        return None;
    };
    log.route = Some(m.route);
    if let Some(route) = snap.routes.get(m.route) {
        if route.logs {
            log.capture_request(parts, &c.ip, c.scheme, c.host);
        }
        log.metrics = route.metrics;
    }
    Some(m)
}

fn wants_websocket(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Access phase, part 1: the body, read once and bounded (ai-proxy's
/// `max_request_body_size`, else [`DEFAULT_BODY_LIMIT`]).
/// A multipart upload to one of OpenAI's APIs goes upstream as it arrives (Err: any other
/// body, read whole as before).
/// The client's body: read whole (within the route's limit), or, for a multipart upload
/// to one of OpenAI's APIs, its start read and the rest left to stream to the provider.
async fn client_body(
    gw: &Gateway,
    (headers, version): (&mut http::HeaderMap, http::Version),
    body: body::ClientBody,
    ai: Option<&AiProxy>,
    peer: SocketAddr,
) -> Result<(Bytes, Option<body::UploadSlot>), GatewayError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let multipart = content_type.is_some_and(|ct| {
        ct.get(..19)
            .is_some_and(|p| p.eq_ignore_ascii_case("multipart/form-data"))
    });
    let streams = ai.filter(|a| {
        multipart
            && a.targets
                .iter()
                .all(|t| t.route_type.is_api() && t.passes_through())
    });
    let (ai, incoming) = match (streams, body) {
        (Some(ai), body::ClientBody::Incoming(incoming)) => (ai, incoming),
        (_, body) => {
            let read = read_body(gw, (headers, version), body, ai, peer).await?;
            return Ok((form_as_json(headers, read, ai)?, None));
        }
    };
    let Some(boundary) = content_type.and_then(crate::llm::multipart::boundary) else {
        // The provider could not find the parts either; say why before sending anything.
        return Err(GatewayError::BadRequest(
            "multipart/form-data body without a valid boundary parameter".into(),
        ));
    };
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A file upload's form has no model; audio and image forms name one.
    let peek = ai
        .targets
        .iter()
        .any(|t| t.route_type != crate::config::plugins::RouteType::Files);
    let read = read_options(gw, version);
    let limits = (ai.max_body, read);
    let slot = body::UploadSlot::new(incoming, length, limits, peek.then_some(boundary)).await?;
    Ok((Bytes::new(), Some(slot)))
}

/// A form sent to an API the gateway translates (OpenAI's SDK sends `videos.create` as
/// `multipart/form-data`, which Veo and Nova Reel get as JSON): its fields as a JSON body,
/// from here on read like any JSON request.
fn form_as_json(
    headers: &mut http::HeaderMap,
    body: Bytes,
    ai: Option<&AiProxy>,
) -> Result<Bytes, GatewayError> {
    if !ai.is_some_and(|a| a.targets.iter().any(|t| t.video.is_some())) {
        return Ok(body);
    }
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::llm::multipart::boundary);
    let Some(boundary) = boundary else {
        return Ok(body);
    };
    let json = crate::llm::multipart::to_json(&body, boundary).map_err(GatewayError::BadRequest)?;
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.remove(header::CONTENT_LENGTH);
    Ok(Bytes::from(json))
}

/// How the client's body is read: the body timeout, and lingering after a 413 on HTTP/2.
fn read_options(gw: &Gateway, version: http::Version) -> body::ReadOptions {
    body::ReadOptions {
        timeout: Duration::from_millis(gw.body_timeout_ms.load(Ordering::Relaxed)),
        linger: version == http::Version::HTTP_2,
    }
}

async fn read_body(
    gw: &Gateway,
    (headers, version): (&http::HeaderMap, http::Version),
    body: body::ClientBody,
    ai: Option<&AiProxy>,
    peer: SocketAddr,
) -> Result<Bytes, GatewayError> {
    let limit = ai.map(|a| a.max_body).unwrap_or(DEFAULT_BODY_LIMIT);
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    body::read_limited(body, content_length, limit, read_options(gw, version))
        .await
        .inspect_err(|e| {
            if let GatewayError::BodyTimeout = e {
                gw.stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %peer, "request body cut: no data within the body timeout");
            }
        })
}

/// The X-Forwarded-* facts of the request.
fn forwarded<'a>(
    c: &'a Conn<'a>,
    uri: &'a http::Uri,
    request_id: &'a RequestId,
    client_headers: &'a http::HeaderMap,
) -> Forwarded<'a> {
    let host = c.host;
    Forwarded {
        client_ip: &c.ip,
        proto: c.scheme,
        host: host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
        port: host
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(c.local_port),
        path: uri.path(),
        request_id,
        prior_for: client_headers
            .get(headers::X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok()),
        original_host: host,
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
}
#[cfg(test)]
mod ids {
    #[test]
    fn request_ids_are_32_hex_digits_counting_up() {
        for v in [0, 1, 0xdead_beef, u64::MAX] {
            let mut b = [0u8; 16];
            super::hex_into(&mut b, v);
            assert_eq!(std::str::from_utf8(&b).unwrap(), format!("{v:016x}"));
        }
        let (a, b) = (super::next_request_id(), super::next_request_id());
        assert_eq!((a.len(), &a[..16]), (32, &b[..16]));
        let n = |id: &str| u64::from_str_radix(&id[16..], 16).unwrap_or(0);
        assert!(n(&b) > n(&a), "{a} {b}");
    }

    /// Threads count through blocks of their own: ids stay unique across them, also past
    /// the end of a block.
    #[test]
    fn request_ids_from_many_threads_are_unique() {
        let per_thread = super::ID_BLOCK as usize + 10;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..per_thread)
                        .map(|_| super::next_request_id().to_string())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for t in threads {
            for id in t.join().unwrap() {
                assert!(all.insert(id.clone()), "{id} given twice");
            }
        }
        assert_eq!(all.len(), 4 * per_thread);
    }
}

#[cfg(test)]
mod sizes {
    /// What the handler moves by value on every request stays small: a response and the
    /// exchange are moved through each layer's futures and return values (callgrind: with
    /// the stream's state and the log record inline, 1.5 KB and 0.9 KB, memcpy was a
    /// quarter of the request path's instructions).
    #[test]
    fn values_moved_per_request_stay_small() {
        let response = std::mem::size_of::<http::Response<super::response::ProxyBody>>();
        let exchange = std::mem::size_of::<super::exchange::Exchange>();
        assert!(response <= 256, "Response<ProxyBody> is {response} bytes");
        assert!(exchange <= 64, "Exchange is {exchange} bytes");
    }

    /// hyper builds the handler's future and moves it into its connection state for every
    /// request: large phases are boxed so it stays a few kilobytes (it was 7.8 KB with the
    /// access phase inline).
    #[test]
    fn the_handler_future_stays_small() {
        let snap = crate::gateway::Snapshot::empty();
        let gw = std::sync::Arc::new(crate::gateway::Gateway::new(snap));
        let req = http::Request::new(super::body::ClientBody::Ready(bytes::Bytes::new()));
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let f = super::handle_request(&gw, req, peer, "http", 80);
        let size = std::mem::size_of_val(&f);
        assert!(size <= 3072, "handle_request's future is {size} bytes");
    }
}

//! The request path, phase by phase: route → access (plugins by priority) → upstream
//! (retry loop) → header filter → body → log.

pub mod access;
mod ai;
mod answer;
pub mod body;
pub mod exchange;
pub mod headers;
mod plain;
pub mod response;
pub mod retry;
pub mod websocket;
pub mod ws_relay;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response};
use hyper::body::Incoming;

use crate::error::{ErrorShape, GatewayError};
use crate::gateway::router::RequestView;
use crate::gateway::{Gateway, DEFAULT_BODY_LIMIT};
use crate::plugins::ai_proxy::AiProxy;
use crate::plugins::request_transformer::UpstreamRequest;
use crate::plugins::template::TemplateSources;
use crate::plugins::{key_auth, Plugin};
use crate::proxy::exchange::Exchange;
use crate::proxy::response::ProxyBody;
use crate::rt::clock::millis_since_epoch;

use self::ai::{proxy_ai, AiCtx};
use self::answer::{kong_error, kong_error_with};
use self::headers::{add_headers, query_pairs, Forwarded};
use self::plain::{proxy_plain, upstream_path};

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

    // Access phase, part 2: the plugins' handlers in PRIORITY order.
    let client = access::Client {
        ip: &client_ip,
        scheme,
        host,
        uri: &parts.uri,
    };
    let admitted = access::run(
        &gw,
        &snap,
        (route, m.route),
        &mut log,
        &mut up,
        &client,
        (&query, &m.captures),
        (ai, original_headers),
    )
    .await;
    let access::Admitted {
        ai,
        original_headers,
        headers: extra_headers,
        filter,
    } = match admitted {
        Ok(a) => a,
        Err((e, headers)) => return kong_error_with(e, shape, log, snap, headers),
    };
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

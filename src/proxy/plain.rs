//! Routes without ai-proxy: the request goes to the route's service (`strip_path`, the
//! service path, `preserve_host`), retried on connection failures only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Response};

use crate::config::entities::Route;
use crate::error::{ErrorShape, GatewayError};
use crate::gateway::Gateway;
use crate::gateway::Snapshot;
use crate::net::upstream::{self, FailureKind};
use crate::observe::log::{HeaderCopy, Try};
use crate::plugins::ai_transformer::Transformer;
use crate::plugins::request_transformer::UpstreamRequest;
use crate::proxy::exchange::Exchange;
use crate::proxy::response::{Finish, ProxyBody};

use super::answer::{buffered_response, kong_error};
use super::headers::{
    add_proxy_headers, forward_headers, query_string, strip_hop_by_hop, Forwarded,
};
use super::ms;

/// Kong v0 path handling: `strip_path` removes the matched part, then the rest is joined
/// to the service path with exactly one slash.
pub(super) fn upstream_path(
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

#[allow(clippy::too_many_arguments)]
pub(super) async fn proxy_plain(
    gw: &Gateway,
    service: &crate::config::entities::Service,
    route: &Route,
    up: &UpstreamRequest,
    raw_query: Option<&str>,
    forwarded: &Forwarded<'_>,
    mut log: Exchange,
    snap: Arc<Snapshot>,
    respond: Option<Arc<Transformer>>,
) -> Response<ProxyBody> {
    let default_port = if service.protocol == "https" { 443 } else { 80 };
    let authority = match service
        .upstream
        .as_ref()
        .and_then(|u| u.host_header.clone())
    {
        Some(h) => h,
        None if service.port == default_port => service.host.clone(),
        None => format!("{}:{}", service.host, service.port),
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
    if respond.is_some() {
        // The LLM reads the answer as text, so it must not come compressed.
        let identity = HeaderValue::from_static("identity");
        headers.insert(header::ACCEPT_ENCODING, identity);
    }
    // No Content-Length: the head writer frames the body itself (`net::h1::encode_head`).
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
        upload: None,
    };
    log.upstream_uri = Some(upstream_uri.clone().into());
    log.proxy_latency_ms = Some(ms(log.started.elapsed()));
    let connect = Duration::from_millis(service.connect_timeout.max(1));
    let read = Duration::from_millis(service.read_timeout.max(1));
    let mut last = None;
    let mut tried: Vec<usize> = Vec::new();
    for _ in 0..=service.retries {
        // A service on an upstream goes to its targets, the next one on a retry.
        let (host, port) = match &service.upstream {
            None => (service.host.as_str(), service.port),
            Some(u) => match u.pick(&tried) {
                Some(i) => {
                    tried.push(i);
                    (u.targets[i].0.as_str(), u.targets[i].1)
                }
                None => {
                    let e = GatewayError::UpstreamUnavailable(format!(
                        "upstream '{}' has no target to send to",
                        u.name
                    ));
                    return kong_error(e, ErrorShape::Kong, log, snap);
                }
            },
        };
        let ep = upstream::Endpoint {
            https: service.protocol == "https",
            host,
            port,
            trust: service.tls.as_ref(),
        };
        let start = Instant::now();
        let mut t = Try {
            port,
            host: host.into(),
            scheme: service.protocol.clone().into(),
            upstream_uri: upstream_uri.clone().into(),
            balancer_start: ms(start.duration_since(log.started)),
            ..Default::default()
        };
        let Some(attempt) = out.try_clone() else {
            break;
        };
        match gw.upstreams.send(&ep, attempt, connect, read).await {
            Ok(resp) => {
                t.ip = resp.body().peer().map(|a| a.ip());
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
                if let Some(t) = &respond {
                    let answer = (parts, body);
                    return transform_response(gw, t, answer, read, log, snap).await;
                }
                let finish = Finish::boxed(log, snap, None);
                let mut r =
                    Response::new(ProxyBody::upstream(body, None, None, None, read, finish));
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

/// ai-response-transformer's phase: the service's answer, read whole, goes to the LLM,
/// whose answer (or JSON instructions) the client gets instead.
async fn transform_response(
    gw: &Gateway,
    t: &Transformer,
    (parts, body): (http::response::Parts, upstream::Incoming),
    read: Duration,
    log: Exchange,
    snap: Arc<Snapshot>,
) -> Response<ProxyBody> {
    let answer = match crate::net::body::read_buffered(body, read).await {
        Ok(b) => b,
        Err(e) => return kong_error(e, ErrorShape::Kong, log, snap),
    };
    match t
        .respond(&gw.upstreams, parts.status, parts.headers, &answer)
        .await
    {
        Ok((status, mut headers, out)) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
            buffered_response(status, headers, out, log, snap, None, None)
        }
        Err(e) => kong_error(e, ErrorShape::Kong, log, snap),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::proxy::headers::ms_header;

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

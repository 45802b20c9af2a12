//! The Realtime API (`realtime/v1/realtime`, Kong 3.11+) on OpenAI and Azure OpenAI: the
//! client opens `GET <route>?model=…` with `Upgrade: websocket` (the OpenAI SDK's
//! `client.realtime.connect`), the access phase runs on that request (keys, request and
//! token quotas), the upstream WebSocket is opened with the route's credentials, and only
//! then does the client get its 101; from there `ws_relay` passes every frame both ways
//! and logs each `response.done` with its usage. A plain HTTP request gets 426.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};

use super::access;
use super::answer::{buffered_response, kong_error, kong_error_with};
use super::exchange::Exchange;
use super::headers::{add_headers, query_pairs};
use super::response::ProxyBody;
use super::websocket::{accept_key, frame_limit, server_socket, switching};
use super::ws_relay::{self, Admission, Client, Mode, RelayRoute, Unreachable};
use super::Conn;
use crate::config::entities::Route;
use crate::config::plugins::{ProviderName, RouteType};
use crate::error::{ErrorShape, GatewayError};
use crate::gateway::router::RouteMatch;
use crate::gateway::{Gateway, Snapshot};
use crate::plugins::ai_proxy::{resolve_model, AiProxy};
use crate::plugins::request_transformer::UpstreamRequest;
use crate::plugins::template::TemplateSources;

/// Whether this plugin's route serves the Realtime API (its first target says; a
/// connection is served by one target for its whole life).
pub fn serves(ai: &AiProxy) -> bool {
    ai.targets
        .first()
        .is_some_and(|t| t.route_type == RouteType::Realtime)
}

/// A request on a Realtime route: the upgrade admitted, the upstream connected, then 101;
/// any refusal is an HTTP answer before the upgrade.
#[allow(clippy::too_many_arguments)]
pub(super) async fn open(
    gw: &Arc<Gateway>,
    snap: &Arc<Snapshot>,
    (route, m): (&Route, &RouteMatch),
    parts: &Parts,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    ai: Arc<AiProxy>,
    mut log: Exchange,
    c: &Conn<'_>,
) -> Response<ProxyBody> {
    let shape = ErrorShape::OpenAi;
    let Some(upgrade) = upgrade else {
        return kong_error(GatewayError::WebSocketRequired, shape, log, snap.clone());
    };
    let accept = match accept_key(parts) {
        Ok(k) => k,
        Err(e) => return kong_error(e, shape, log, snap.clone()),
    };
    // The handshake request goes through the access phase as any request does: key-auth,
    // rate-limiting, and ai-rate-limiting-advanced (whose quota must have room now; each
    // response's usage is charged when it is logged).
    let query = query_pairs(parts.uri.query());
    let mut up = UpstreamRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: query.clone(),
        headers: parts.headers.clone(),
        body: Bytes::new(),
    };
    let client = access::Client {
        ip: &c.ip,
        scheme: c.scheme,
        host: c.host,
        uri: &parts.uri,
    };
    let original_headers = route.transforms.then(|| parts.headers.clone());
    let admitted = access::run(
        gw,
        snap,
        (route, m.route),
        &mut log,
        &mut up,
        &client,
        (&query[..], &m.captures),
        (Some(ai), original_headers),
    )
    .await;
    let admitted = match admitted {
        Ok(a) => a,
        Err((e, headers)) => return kong_error_with(e, shape, log, snap.clone(), headers),
    };
    let Some(ai) = admitted.ai.filter(|a| serves(a)) else {
        let e = GatewayError::UpgradeRefused;
        return kong_error_with(e, shape, log, snap.clone(), admitted.headers);
    };
    let sources = TemplateSources {
        headers: admitted.original_headers.as_ref().unwrap_or(&up.headers),
        query: &query,
        uri_captures: &m.captures,
    };
    let (path, model) = match upstream_path(&ai, &query, &sources) {
        Ok(p) => p,
        Err(e) => return kong_error_with(e, shape, log, snap.clone(), admitted.headers),
    };
    // The reservations the quotas made for the handshake go back (dropped charges give
    // them back); each response is charged its own usage instead.
    let charges = std::mem::take(&mut log.charges);
    let admission = Admission {
        consumer: log.consumer.clone(),
        chain: log.chain.clone(),
        logs: log.enabled || route.logs,
        metrics: log.metrics,
        quotas: charges
            .iter()
            .map(|ch| (ch.counters.clone(), ch.plan.clone()))
            .collect(),
    };
    drop(charges);
    let service = route.service.and_then(|s| snap.services.get(s));
    let relay = RelayRoute {
        ai: ai.clone(),
        route: m.route,
        snapshot: snap.clone(),
        trust: service.and_then(|s| s.tls.clone()),
        analytics: gw.analytics.get().cloned(),
        mode: Mode::Realtime,
        path: Some(path),
        model,
        admission: Some(admission),
    };
    let upstream = match ws_relay::connect(&relay, &up.headers).await {
        Ok(u) => u,
        Err(e) => return refused(e, log, snap, admitted.headers),
    };
    let mut record = Request::new(());
    *record.method_mut() = parts.method.clone();
    *record.uri_mut() = parts.uri.clone();
    *record.headers_mut() = parts.headers.clone();
    let who = Client {
        ip: c.ip.clone(),
        scheme: c.scheme,
        host: c.host.to_string(),
        parts: record.into_parts().0,
    };
    let limit = frame_limit(ai.max_body);
    let uri = parts.uri.path().to_string();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => {
                let ws = server_socket(io, limit).await;
                tracing::info!(path = uri, "realtime session relayed");
                ws_relay::run(ws, upstream, relay, who).await;
                tracing::info!(path = uri, "realtime session ended");
            }
            Err(e) => tracing::debug!("websocket upgrade failed: {e}"),
        }
    });
    let mut resp = switching(&accept);
    add_headers(&mut resp, admitted.headers);
    resp
}

/// The upstream path and query of one connection and its model: OpenAI's `?model=`, or
/// Azure's deployment (already in the target's path). The client's model comes from the
/// query's `model` (Azure's SDK: `deployment`); a configured `model.name` must match it.
fn upstream_path(
    ai: &AiProxy,
    query: &[(String, String)],
    sources: &TemplateSources<'_>,
) -> Result<(String, Option<String>), GatewayError> {
    let t = ai
        .targets
        .first()
        .ok_or_else(|| GatewayError::Internal("realtime route without a target".into()))?;
    let arg = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let client_model = match t.provider {
        ProviderName::Azure => arg("model").or_else(|| arg("deployment")),
        _ => arg("model"),
    };
    let base = t
        .upstream
        .path
        .as_deref()
        .unwrap_or(crate::llm::openai::REALTIME_PATH);
    if t.provider == ProviderName::Azure {
        // The deployment names the model; a configured name still refuses another one.
        let model = match (&t.model_name, client_model) {
            (None, m) => m.map(str::to_string),
            _ => resolve_model(t, client_model, sources)?,
        };
        return Ok((base.to_string(), model));
    }
    let model = resolve_model(t, client_model, sources)?;
    let path = match &model {
        // A configured path that already names the model keeps it.
        Some(m) if !has_param(base, "model") => {
            let pair: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("model", m)
                .finish();
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}{pair}")
        }
        _ => base.to_string(),
    };
    Ok((path, model))
}

/// Whether a path's query has parameter `name`.
fn has_param(path: &str, name: &str) -> bool {
    path.split_once('?')
        .is_some_and(|(_, q)| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == name))
}

/// The client's answer when the upstream WebSocket could not be opened. A provider that
/// refused the handshake with a JSON error (a bad key, an unknown model, a rate limit) has
/// its status and answer passed on, as the client would have seen them without the
/// gateway; the rest is the gateway's own error.
fn refused(
    e: Unreachable,
    mut log: Exchange,
    snap: &Arc<Snapshot>,
    headers: access::Headers,
) -> Response<ProxyBody> {
    let shape = ErrorShape::OpenAi;
    let e = match e {
        Unreachable::Connect(m) => GatewayError::UpstreamUnavailable(m),
        Unreachable::Timeout(m) => GatewayError::UpstreamTimeout(m),
        Unreachable::Refused {
            status,
            answer: Some((body, content_type)),
            ..
        } if status >= 400 && crate::llm::body::is_json(content_type.as_ref()) => {
            log.upstream_status = Some(status);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut h = HeaderMap::new();
            if let Some(ct) = content_type {
                h.insert(header::CONTENT_TYPE, ct);
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            let mut resp = buffered_response(status, h, body.into(), log, snap.clone(), None, None);
            add_headers(&mut resp, headers);
            return resp;
        }
        Unreachable::Refused {
            status, message, ..
        } => {
            log.upstream_status = Some(status);
            GatewayError::UpstreamInvalid(message)
        }
    };
    kong_error_with(e, shape, log, snap.clone(), headers)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn model_param_is_detected_in_a_configured_path() {
        assert!(has_param("/v1/realtime?model=gpt-realtime", "model"));
        assert!(!has_param("/v1/realtime?x=1", "model"));
        assert!(!has_param("/v1/realtime", "model"));
    }
}

//! OpenAI's Responses WebSocket mode: `GET …/responses` with `Upgrade: websocket`; each
//! `response.create` text frame is answered with the events the streamed HTTP endpoint
//! would send, one per text frame. Each frame is recorded as a `POST` of its parameters
//! (with the upgrade request's headers), so tests see what reached the upstream.
//! `previous_response_id` is accepted and ignored (the mock keeps no conversations).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::body::MockBody;
use crate::MockState;

/// Whether `req` asks for the WebSocket mode (`x-mock: no_websocket` makes the mock refuse
/// it, like an OpenAI-compatible server without that mode).
pub(crate) fn wanted(req: &Request<Incoming>) -> bool {
    let refused = req
        .headers()
        .get_all("x-mock")
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("no_websocket")));
    !refused
        && req.method() == Method::GET
        && req.uri().path().ends_with("/responses")
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the handshake and serves the connection.
pub(crate) fn accept(state: Arc<MockState>, mut req: Request<Incoming>) -> Response<MockBody> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        let mut r = Response::new(MockBody::full(Bytes::from_static(b"missing key")));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    parts.method = Method::POST;
    for h in [
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
    ] {
        parts.headers.remove(h);
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    tokio::spawn(async move {
        let Ok(io) = upgrade.await else { return };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else {
                if matches!(msg, Message::Close(_)) {
                    return;
                }
                continue;
            };
            let Ok(Value::Object(mut frame)) = serde_json::from_str::<Value>(text.as_str()) else {
                let e = json!({"type": "error", "status": 400, "error": {"message": "not JSON"}});
                let _ = ws.send(Message::Text(e.to_string().into())).await;
                continue;
            };
            frame.remove("type");
            frame.insert("stream".into(), Value::Bool(true));
            let body = Bytes::from(Value::Object(frame).to_string());
            let mut p = Request::new(()).into_parts().0;
            p.method = parts.method.clone();
            p.uri = parts.uri.clone();
            p.headers = parts.headers.clone();
            let resp = match crate::server::respond(state.clone(), p, body).await {
                Ok(r) => r,
                Err(_) => return,
            };
            let status = resp.status();
            let mut body = resp.into_body();
            if !status.is_success() {
                let bytes = match body.collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => return,
                };
                let error = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("error").cloned())
                    .unwrap_or(Value::Null);
                let e = json!({"type": "error", "status": status.as_u16(), "error": error});
                if ws.send(Message::Text(e.to_string().into())).await.is_err() {
                    return;
                }
                continue;
            }
            // Events go out as the stream produces them (delays included).
            let mut buf: Vec<u8> = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = buf.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&event);
                    let data: Vec<&str> = text
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:").map(str::trim_start))
                        .collect();
                    if data.is_empty() || data == ["[DONE]"] {
                        continue;
                    }
                    if ws
                        .send(Message::Text(data.join("\n").into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let mut r = Response::new(MockBody::full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

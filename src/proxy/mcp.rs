//! `ai-mcp-proxy` on a route: MCP over streamable HTTP. A conversion mode (or a
//! `listener`, for the tools of the conversion-only instances tagged with its
//! `server.tag`) is itself the MCP server: sessions, `initialize`, `ping`, `tools/list`
//! filtered by the ACLs, and `tools/call` as a request through the tool's route (its
//! plugins apply, then its service answers). `passthrough-listener` proxies MCP to the
//! route's service, refusing calls the ACLs deny and hiding denied tools from its lists.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::config::entities::{Route, Service};
use crate::gateway::{Gateway, Snapshot};
use crate::mcp::acl::{Acl, Decision};
use crate::mcp::jsonrpc::{self, Message};
use crate::mcp::tools::Tool;
use crate::observe::mcp_log::{McpAudit, McpRpc};
use crate::plugins::ai_mcp_proxy::{McpProxy, Mode, PROTOCOL_VERSION, PROTOCOL_VERSIONS};
use crate::plugins::phases::ArmedMcp;
use crate::plugins::request_transformer::UpstreamRequest;
use crate::plugins::Plugin;
use crate::proxy::exchange::Exchange;
use crate::proxy::response::ProxyBody;

use super::answer::{buffered_response, json_answer};
use super::headers::Forwarded;
use super::mcp_sse;
use super::Conn;

/// The most of a tool's answer (or an upstream MCP list) the gateway reads.
const MAX_ANSWER: usize = 10 << 20;

/// What an MCP request needs of the request path.
pub(super) struct McpCtx<'a> {
    pub gw: &'a Arc<Gateway>,
    pub snap: Arc<Snapshot>,
    pub route: &'a Route,
    pub service: Option<&'a Service>,
    pub up: &'a UpstreamRequest,
    /// The client's headers as they came (key-auth may have hidden the key in `up`).
    pub client_headers: &'a HeaderMap,
    pub raw_query: Option<&'a str>,
    pub forwarded: &'a Forwarded<'a>,
    pub conn: &'a Conn<'a>,
}

/// Answers an MCP request.
pub(super) async fn serve(cx: McpCtx<'_>, armed: ArmedMcp, log: Exchange) -> Response<ProxyBody> {
    match armed.mcp.mode {
        Mode::PassthroughListener => passthrough(cx, armed, log).await,
        _ => listen(cx, armed, log).await,
    }
}

/// A JSON-RPC answer (or an empty one) with `status` and extra headers.
fn reply(
    status: StatusCode,
    body: Option<Value>,
    extra: Vec<(HeaderName, HeaderValue)>,
    log: Exchange,
    snap: Arc<Snapshot>,
) -> Response<ProxyBody> {
    let mut h = HeaderMap::new();
    for (k, v) in extra {
        h.insert(k, v);
    }
    match body {
        Some(v) => {
            let bytes = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
            json_answer(status, h, bytes, log, snap, None, None)
        }
        None => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            buffered_response(status, h, Bytes::new(), log, snap, None, None)
        }
    }
}

fn header_text<'a>(up: &'a UpstreamRequest, name: &str) -> Option<&'a str> {
    up.headers.get(name).and_then(|v| v.to_str().ok())
}

fn now() -> u64 {
    crate::rt::clock::millis_since_epoch() / 1000
}

/// The request's JSON-RPC message, or the answer refusing it (its size, its protocol
/// version, or not JSON-RPC).
fn read_message(
    m: &McpProxy,
    up: &UpstreamRequest,
) -> Result<Message, (StatusCode, Option<Value>)> {
    if let Some(refused) = refused_head(m, up) {
        return Err(refused);
    }
    Message::parse(&up.body).map_err(|e| (StatusCode::BAD_REQUEST, Some(e.response())))
}

/// A request the method or size rules refuse before it is read as JSON-RPC.
fn refused_head(m: &McpProxy, up: &UpstreamRequest) -> Option<(StatusCode, Option<Value>)> {
    let limit = m.max_body();
    if limit > 0 && up.body.len() as u64 > limit {
        let e = jsonrpc::error(
            &Value::Null,
            jsonrpc::INVALID_REQUEST,
            &format!("request body too large: the limit is {limit} bytes (max_request_body_size)"),
            None,
        );
        return Some((StatusCode::PAYLOAD_TOO_LARGE, Some(e)));
    }
    match header_text(up, "mcp-protocol-version") {
        Some(v) if !PROTOCOL_VERSIONS.contains(&v) => {
            let e = jsonrpc::error(
                &Value::Null,
                jsonrpc::INVALID_REQUEST,
                &format!(
                    "Bad Request: unsupported MCP-Protocol-Version '{v}' (supported: {})",
                    PROTOCOL_VERSIONS.join(", ")
                ),
                None,
            );
            Some((StatusCode::BAD_REQUEST, Some(e)))
        }
        _ => None,
    }
}

/// A conversion mode or a listener: the gateway is the MCP server.
async fn listen(cx: McpCtx<'_>, armed: ArmedMcp, mut log: Exchange) -> Response<ProxyBody> {
    let m = &armed.mcp;
    let snap = cx.snap.clone();
    let session = header_text(cx.up, "mcp-session-id");
    match cx.up.method {
        http::Method::POST => {}
        http::Method::DELETE => {
            let status = match session {
                Some(s) if m.sessions.close(s) => StatusCode::OK,
                _ => StatusCode::NOT_FOUND,
            };
            return reply(status, None, Vec::new(), log, snap);
        }
        // No server-initiated stream: the client's GET is told so (MCP allows 405).
        _ => {
            let allow = (header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            return reply(StatusCode::METHOD_NOT_ALLOWED, None, vec![allow], log, snap);
        }
    }
    let msg = match read_message(m, cx.up) {
        Ok(msg) => msg,
        Err((status, body)) => return reply(status, body, Vec::new(), log, snap),
    };
    let initialize = msg.method() == Some("initialize");
    if !initialize {
        let missing = || {
            let e = jsonrpc::error(
                &Value::Null,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is required (send initialize first)",
                None,
            );
            (StatusCode::BAD_REQUEST, e)
        };
        let refused = match session {
            None => Some(missing()),
            Some(s) if !m.sessions.touch(s, now()) => {
                let e = jsonrpc::error(&Value::Null, -32001, "Session not found", None);
                Some((StatusCode::NOT_FOUND, e))
            }
            Some(_) => None,
        };
        if let Some((status, e)) = refused {
            return reply(status, Some(e), Vec::new(), log, snap);
        }
    }
    let Message::Request { id, method, params } = msg else {
        // Notifications and responses need no answer.
        return reply(StatusCode::ACCEPTED, None, Vec::new(), log, snap);
    };
    let mut extra = Vec::new();
    let mut audit = Vec::new();
    let mut opened = None;
    let answer = match method.as_str() {
        "initialize" => {
            let sid = m.sessions.open(now());
            if let Ok(v) = HeaderValue::from_str(&sid) {
                extra.push((HeaderName::from_static("mcp-session-id"), v));
            }
            opened = Some(sid);
            Ok(initialize_result(&params))
        }
        "ping" => Ok(json!({})),
        "tools/list" => {
            let tools: Vec<Value> = catalogue(&snap, m, cx.route)
                .into_iter()
                .filter(|e| acl_allows(e.acl, &armed.subjects))
                .map(|e| e.tool.listing())
                .collect();
            Ok(json!({"tools": tools}))
        }
        "tools/call" => Box::pin(call(&cx, &armed, &params, &mut audit)).await,
        other => Err((
            jsonrpc::METHOD_NOT_FOUND,
            format!("Method not found: {other}"),
        )),
    };
    let error = answer.as_ref().err().cloned().or_else(|| {
        let r = answer.as_ref().ok()?;
        let failed = r.get("isError").and_then(Value::as_bool) == Some(true);
        failed.then(|| (0, "the tool answered with an error".to_string()))
    });
    let body = match answer {
        Ok(result) => jsonrpc::result(&id, result),
        Err((code, message)) => jsonrpc::error(&id, code, &message, None),
    };
    let session = opened.as_deref().or(session);
    let rpc = Rpc {
        id: &id,
        method: &method,
        params: &params,
        error,
    };
    note(&mut log, m, session, rpc, Some(&body), cx.up, audit);
    reply(StatusCode::OK, Some(body), extra, log, snap)
}

/// One JSON-RPC request's facts for the log.
struct Rpc<'a> {
    id: &'a Value,
    method: &'a str,
    params: &'a Value,
    error: Option<(i64, String)>,
}

/// What a request logs under `ai.mcp`, by the instance's `logging` switches.
fn note(
    log: &mut Exchange,
    m: &McpProxy,
    session: Option<&str>,
    rpc: Rpc<'_>,
    answer: Option<&Value>,
    up: &UpstreamRequest,
    audit: Vec<McpAudit>,
) {
    let latency_ms = log.started.elapsed().as_millis() as u64;
    let entry = log.mcp.get_or_insert_with(Default::default);
    let tool = (rpc.method == "tools/call")
        .then(|| rpc.params.get("name").and_then(Value::as_str))
        .flatten();
    entry.method = Some(rpc.method.to_string());
    entry.tool = tool.map(str::to_string);
    let l = &m.config.logging;
    if !(l.log_statistics || l.log_payloads || l.log_audits) {
        return;
    }
    entry.session_id = session.map(str::to_string);
    entry.statistics = l.log_statistics;
    if l.log_statistics || l.log_payloads {
        let answer_text = answer.map(Value::to_string);
        entry.rpc.push(McpRpc {
            id: Some(jsonrpc::id_text(rpc.id)),
            method: rpc.method.to_string(),
            tool_name: tool.map(str::to_string),
            latency_ms,
            response_body_size: answer_text.as_ref().map_or(0, |t| t.len() as u64),
            error: rpc.error,
            payload: l.log_payloads.then(|| {
                let request = String::from_utf8_lossy(&up.body).into_owned();
                (request, answer_text.unwrap_or_default())
            }),
        });
    }
    if l.log_audits {
        entry.audit.extend(audit);
    }
}

/// An ACL decision for the audit log: the subject that decided, and what it is.
fn audited(armed: &ArmedMcp, tool: &str, d: &Decision) -> McpAudit {
    let subject = match d {
        Decision::Allow(s) | Decision::Deny(s) => s.clone(),
    };
    let by_consumer = subject.is_none() || subject.as_ref() == armed.subjects.first();
    let identifier = if by_consumer && armed.consumer.is_some() {
        "consumer"
    } else {
        "consumer_group"
    };
    let name = subject.or_else(|| armed.subjects.first().cloned());
    McpAudit {
        tool: tool.to_string(),
        allowed: d.allowed(),
        consumer: armed
            .consumer
            .as_ref()
            .map(|(id, _)| (id.clone(), name, identifier)),
    }
}

/// `initialize`'s result: the client's protocol version when Tollgate speaks it.
fn initialize_result(params: &Value) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| PROTOCOL_VERSIONS.contains(v))
        .unwrap_or(PROTOCOL_VERSION);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "tollgate", "version": crate::VERSION},
    })
}

/// A tool a listening instance serves: the tool, the ACL that applies to it, and the
/// route its calls go through.
struct Entry<'a> {
    tool: &'a Tool,
    acl: Option<&'a Acl>,
    route: &'a Route,
}

/// The tools an instance serves: its own (a conversion listener, on its route), or those
/// of the conversion instances tagged with a listener's `server.tag`.
fn catalogue<'a>(snap: &'a Snapshot, m: &'a McpProxy, own_route: &'a Route) -> Vec<Entry<'a>> {
    if m.mode != Mode::Listener {
        return m
            .tools
            .iter()
            .map(|t| Entry {
                tool: t,
                acl: m.config.acl_for(t.config.acl.as_ref()),
                route: own_route,
            })
            .collect();
    }
    let Some(tag) = m.config.server.tag.as_deref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in snap.plugins.iter().filter(|p| p.enabled) {
        let Plugin::McpProxy(source) = &p.plugin else {
            continue;
        };
        let tagged = p.tags.as_ref().is_some_and(|t| t.iter().any(|x| x == tag));
        let route = p.route.and_then(|r| snap.routes.get(r));
        let (true, Some(route), Mode::ConversionOnly | Mode::ConversionListener) =
            (tagged, route, source.mode)
        else {
            continue;
        };
        for t in &source.tools {
            out.push(Entry {
                tool: t,
                acl: source.config.acl_for(t.config.acl.as_ref()),
                route,
            });
        }
    }
    out
}

fn acl_allows(acl: Option<&Acl>, subjects: &[String]) -> bool {
    decide(acl, subjects).allowed()
}

fn decide(acl: Option<&Acl>, subjects: &[String]) -> Decision {
    let subjects: Vec<&str> = subjects.iter().map(String::as_str).collect();
    acl.map_or(Decision::Allow(None), |a| a.decide(&subjects))
}

/// Who is asking, as a refusal names them.
fn who(armed: &ArmedMcp) -> String {
    match (&armed.consumer, armed.subjects.first()) {
        (_, Some(s)) => format!("consumer '{s}'"),
        (Some((id, _)), None) => format!("consumer '{id}'"),
        (None, None) => "anonymous requests".to_string(),
    }
}

/// `tools/call`: checked, then sent through the tool's route.
async fn call(
    cx: &McpCtx<'_>,
    armed: &ArmedMcp,
    params: &Value,
    audit: &mut Vec<McpAudit>,
) -> Result<Value, (i64, String)> {
    let invalid = |m: String| (jsonrpc::INVALID_PARAMS, m);
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("tools/call needs params.name".into()))?;
    let entries = catalogue(&cx.snap, &armed.mcp, cx.route);
    let entry = entries
        .iter()
        .find(|e| e.tool.name == name)
        .ok_or_else(|| invalid(format!("Unknown tool: {name}")))?;
    let decision = decide(entry.acl, &armed.subjects);
    audit.push(audited(armed, name, &decision));
    if !decision.allowed() {
        return Err(invalid(format!(
            "Tool '{name}' is not available for {}",
            who(armed)
        )));
    }
    let empty = Value::Null;
    let c = entry
        .tool
        .call(params.get("arguments").unwrap_or(&empty))
        .map_err(invalid)?;
    let req = match subrequest(cx, armed, entry.route, c) {
        Ok(r) => r,
        Err(e) => return Err((jsonrpc::INTERNAL_ERROR, e)),
    };
    let timeout = armed.mcp.timeout();
    let sent = super::handle_request(cx.gw, req, cx.conn.peer, cx.conn.scheme, cx.conn.local_port);
    let read = async {
        let resp = Box::pin(sent).await;
        let status = resp.status();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER);
        let body = limited.collect().await.map(|b| b.to_bytes());
        (status, body)
    };
    let (text, failed) = match tokio::time::timeout(timeout, read).await {
        Err(_) => (
            format!("the tool did not answer within {} ms", timeout.as_millis()),
            true,
        ),
        Ok((_, Err(e))) => (format!("the tool's answer could not be read: {e}"), true),
        Ok((status, Ok(body))) => {
            let text = String::from_utf8_lossy(&body).into_owned();
            let failed = status.is_client_error() || status.is_server_error();
            let text = if text.is_empty() && failed {
                format!("HTTP {}", status.as_u16())
            } else {
                text
            };
            (text, failed)
        }
    };
    Ok(json!({"content": [{"type": "text", "text": text}], "isError": failed}))
}

/// Headers of the MCP request that are not the tool's to receive.
const NOT_FORWARDED: [&str; 7] = [
    "content-length",
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "transfer-encoding",
];

/// The request a tool call makes through `route`.
fn subrequest(
    cx: &McpCtx<'_>,
    armed: &ArmedMcp,
    route: &Route,
    c: crate::mcp::tools::Call,
) -> Result<Request<super::body::ClientBody>, String> {
    let path = if c.path.starts_with('/') {
        c.path
    } else {
        let base = route
            .paths
            .as_ref()
            .and_then(|p| p.iter().find(|p| !p.starts_with('~')))
            .map(|p| p.trim_end_matches('/'))
            .unwrap_or("");
        format!("{base}/{}", c.path.trim_start_matches("./"))
    };
    let mut uri = path;
    if !c.query.is_empty() {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &c.query {
            q.append_pair(k, v);
        }
        uri.push('?');
        uri.push_str(&q.finish());
    }
    let mut b = Request::builder().method(c.method).uri(&uri);
    if armed.mcp.config.server.forward_client_headers {
        for (k, v) in cx.client_headers {
            if !NOT_FORWARDED.contains(&k.as_str()) {
                b = b.header(k, v);
            }
        }
    } else if let Some(h) = cx.up.headers.get(header::HOST) {
        b = b.header(header::HOST, h);
    }
    for (k, v) in &c.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let body = match c.body {
        Some((ct, bytes)) => {
            b = b.header(header::CONTENT_TYPE, ct);
            b = b.header(header::CONTENT_LENGTH, bytes.len());
            Bytes::from(bytes)
        }
        None => Bytes::new(),
    };
    let mut req = b
        .body(super::body::ClientBody::Ready(body))
        .map_err(|e| format!("the tool's request is not valid HTTP: {e}"))?;
    if reaches_mcp_route(&cx.snap, &req, cx.conn.host) {
        req.headers_mut().insert(
            crate::mcp::CALL_HEADER,
            HeaderValue::from_static(crate::mcp::call_marker()),
        );
    }
    Ok(req)
}

/// Whether `req` routes to a route with ai-mcp-proxy: only there is the call's marker
/// needed (to pass that route's listener, which removes it); anywhere else the marker
/// would reach the route's upstream, so it is not added.
fn reaches_mcp_route<B>(snap: &Snapshot, req: &Request<B>, host: &str) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(host);
    let found = snap.router.find(&crate::gateway::router::RequestView {
        method: req.method().as_str(),
        host,
        path: req.uri().path(),
        headers: req.headers(),
    });
    found.is_some_and(|m| {
        snap.plugins
            .iter()
            .any(|p| p.route == Some(m.route) && matches!(p.plugin, Plugin::McpProxy(_)))
    })
}

/// `passthrough-listener`: MCP proxied to the route's service, with the ACLs applied.
async fn passthrough(cx: McpCtx<'_>, armed: ArmedMcp, mut log: Exchange) -> Response<ProxyBody> {
    let m = &armed.mcp;
    let snap = cx.snap.clone();
    let mut lists = false;
    let mut asked: Option<(Value, String, Value)> = None;
    let mut audit = Vec::new();
    if cx.up.method == http::Method::POST {
        match read_message(m, cx.up) {
            Err((status, body)) => return reply(status, body, Vec::new(), log, snap),
            Ok(Message::Request { id, method, params }) => {
                lists = method == "tools/list";
                if method == "tools/call" {
                    let name = params.get("name").and_then(Value::as_str).unwrap_or("");
                    let acl = m
                        .config
                        .acl_for(m.tool(name).and_then(|t| t.config.acl.as_ref()));
                    let decision = decide(acl, &armed.subjects);
                    audit.push(audited(&armed, name, &decision));
                    if !decision.allowed() {
                        let message = format!("Tool '{name}' is not available for {}", who(&armed));
                        let e = jsonrpc::error(&id, jsonrpc::INVALID_PARAMS, &message, None);
                        let rpc = Rpc {
                            id: &id,
                            method: &method,
                            params: &params,
                            error: Some((jsonrpc::INVALID_PARAMS, message)),
                        };
                        let session = header_text(cx.up, "mcp-session-id");
                        note(&mut log, m, session, rpc, Some(&e), cx.up, audit);
                        // HTTP+SSE: the answer goes on the client's stream.
                        let endpoint = match cx.raw_query {
                            Some(q) => format!("{}?{q}", cx.forwarded.path),
                            None => cx.forwarded.path.to_string(),
                        };
                        if mcp_sse::inject(&endpoint, mcp_sse::message_event(&e)) {
                            return reply(StatusCode::ACCEPTED, None, Vec::new(), log, snap);
                        }
                        return reply(StatusCode::OK, Some(e), Vec::new(), log, snap);
                    }
                }
                asked = Some((id, method, params));
            }
            Ok(_) => {}
        }
    }
    let Some(service) = cx.service.filter(|s| s.enabled) else {
        let e =
            crate::error::GatewayError::UpstreamUnavailable("route has no enabled service".into());
        return super::answer::kong_error(e, crate::error::ErrorShape::Kong, log, snap);
    };
    if let Some((id, method, params)) = &asked {
        // Logged as sent: the upstream's answer goes to the client as it comes.
        let rpc = Rpc {
            id,
            method,
            params,
            error: None,
        };
        let session = header_text(cx.up, "mcp-session-id");
        note(&mut log, m, session, rpc, None, cx.up, audit);
    }
    let sent = super::plain::proxy_plain(
        cx.gw,
        service,
        cx.route,
        cx.up,
        cx.raw_query,
        cx.forwarded,
        log,
        snap,
        None,
    );
    let mut resp = Box::pin(sent).await;
    if let Some((id, _, _)) = &asked {
        let filter = lists.then_some((&**m, &armed.subjects[..]));
        checked_answer(&mut resp, id, filter).await;
    } else if cx.up.method == http::Method::GET && is_event_stream(&resp) {
        relay(&mut resp, &cx, &armed);
    }
    resp
}

fn is_event_stream(resp: &Response<ProxyBody>) -> bool {
    resp.status() == StatusCode::OK
        && resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("text/event-stream"))
}

/// A stream the server opened for the client (an HTTP+SSE session, or streamable HTTP's
/// GET stream), relayed event by event: the HTTP+SSE endpoint rewritten to the gateway's
/// path, lists filtered by the ACLs, and the gateway's refusals added.
fn relay(resp: &mut Response<ProxyBody>, cx: &McpCtx<'_>, armed: &ArmedMcp) {
    let (m, subjects) = (armed.mcp.clone(), armed.subjects.clone());
    let filter: mcp_sse::ToolFilter = Box::new(move |v| filter_tools(v, &m, &subjects));
    let map = mcp_sse::PathMap::new(cx.forwarded.path, &cx.up.path);
    let inner = std::mem::replace(resp.body_mut(), ProxyBody::full(Bytes::new(), None));
    let relay = mcp_sse::Relay::new(inner, map, cx.forwarded.path, Some(filter));
    *resp.body_mut() = ProxyBody::wrapped(relay);
}

/// The upstream's answer to the JSON-RPC request `id`, checked before it goes on: a JSON
/// answer is read whole (bounded) and must be JSON-RPC, or the client gets a JSON-RPC error
/// saying what came instead (502); a gateway or upstream failure becomes a JSON-RPC error
/// with its status; a `tools/list` answer (JSON or SSE) loses the tools the ACLs deny.
/// Other streams pass as they come.
async fn checked_answer(
    resp: &mut Response<ProxyBody>,
    id: &Value,
    filter: Option<(&McpProxy, &[String])>,
) {
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let sse = ct.starts_with("text/event-stream");
    let touch = if sse {
        filter.is_some() && status == StatusCode::OK
    } else {
        status != StatusCode::ACCEPTED
    };
    if !touch {
        return;
    }
    let finish = resp.body_mut().take_finish();
    let body = std::mem::replace(resp.body_mut(), ProxyBody::full(Bytes::new(), None));
    let read = tokio::time::timeout(
        Duration::from_secs(60),
        http_body_util::Limited::new(body, MAX_ANSWER).collect(),
    )
    .await;
    let (status, out) = match read {
        Ok(Ok(b)) if sse => (status, filtered_sse(&b.to_bytes(), filter)),
        Ok(Ok(b)) => json_answer_checked(status, &b.to_bytes(), id, filter),
        _ => {
            let e = jsonrpc::error(
                id,
                jsonrpc::INTERNAL_ERROR,
                "the upstream MCP server's answer could not be read (too large, cut or too slow)",
                None,
            );
            (StatusCode::BAD_GATEWAY, json_bytes(&e))
        }
    };
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.remove(header::TRANSFER_ENCODING);
    h.remove(header::CONTENT_ENCODING);
    if !sse {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    *resp.body_mut() = ProxyBody::full(out, finish);
}

fn json_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// A JSON answer: JSON-RPC (filtered when it is a list), or a JSON-RPC error in its place.
fn json_answer_checked(
    status: StatusCode,
    bytes: &[u8],
    id: &Value,
    filter: Option<(&McpProxy, &[String])>,
) -> (StatusCode, Bytes) {
    let parsed = serde_json::from_slice::<Value>(bytes).ok();
    let rpc = parsed.as_ref().filter(|v| {
        v.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
            && (v.get("result").is_some() || v.get("error").is_some())
    });
    if let Some(v) = rpc {
        let mut v = v.clone();
        if let Some((m, subjects)) = filter {
            filter_tools(&mut v, m, subjects);
        }
        return (status, json_bytes(&v));
    }
    let (status, message) = if status.is_success() {
        let what = if parsed.is_some() { "JSON" } else { "not JSON" };
        (
            StatusCode::BAD_GATEWAY,
            format!(
                "the upstream MCP server's answer is not JSON-RPC (HTTP {}, {what}, {} bytes)",
                status.as_u16(),
                bytes.len()
            ),
        )
    } else {
        // The gateway's own error (Kong's `message`), or the upstream's status.
        let said = parsed
            .as_ref()
            .and_then(|v| v.get("message"))
            .and_then(Value::as_str)
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        (
            status,
            format!(
                "the upstream MCP server failed (HTTP {}){said}",
                status.as_u16()
            ),
        )
    };
    let e = jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, &message, None);
    (status, json_bytes(&e))
}

/// Removes the tools the ACLs deny from a `tools/list` answer.
fn filter_tools(v: &mut Value, m: &McpProxy, subjects: &[String]) {
    let keep = |tool: &Value| {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
        acl_allows(
            m.config
                .acl_for(m.tool(name).and_then(|t| t.config.acl.as_ref())),
            subjects,
        )
    };
    if let Some(tools) = v.pointer_mut("/result/tools").and_then(Value::as_array_mut) {
        tools.retain(keep);
    }
}

/// An SSE answer with each `data:` message's tool list filtered.
fn filtered_sse(bytes: &[u8], filter: Option<(&McpProxy, &[String])>) -> Bytes {
    let Some((m, subjects)) = filter else {
        return Bytes::copy_from_slice(bytes);
    };
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let data = line.strip_prefix("data:").map(str::trim);
        match data.and_then(|d| serde_json::from_str::<Value>(d).ok()) {
            Some(mut v) => {
                filter_tools(&mut v, m, subjects);
                out.push_str("data: ");
                out.push_str(&v.to_string());
                out.push('\n');
            }
            None => out.push_str(line),
        }
    }
    Bytes::from(out)
}

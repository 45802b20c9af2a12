//! Accept loop, request routing and fault injection.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::body::{EventStream, MockBody};
use crate::faults::Directives;
use crate::gemini;
use crate::prompt::{PromptScan, Reply, DEFAULT_REPLY};
use crate::{anthropic, bedrock, cohere, ollama, sigv4, tgi};
use crate::{api, embeddings, openai, responses, video_jobs, MockState};

/// How long `hang` waits: far beyond any client timeout, yet bounded so a
/// long-running binary does not collect abandoned requests forever.
const HANG: Duration = Duration::from_secs(3600);

/// Model reported when the request names none.
const DEFAULT_MODEL: &str = "mock-model";

/// Serves the mock on `listener` until the returned future is dropped;
/// dropping it also closes every open connection.
pub async fn serve(listener: TcpListener, state: Arc<MockState>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Usually fd exhaustion or a connection aborted during the
                // handshake; back off briefly instead of spinning.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        // Streams must reach the client event by event, not Nagle-batched.
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let conn = http
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |req| handle(Arc::clone(&state), req)),
            )
            .with_upgrades();
        connections.spawn(async move {
            // Connection errors are expected (injected resets, clients
            // hanging up); there is nobody to report them to.
            let _ = conn.await;
        });
    }
}

/// Which endpoint a request is for, chosen by path suffix so any prefix
/// (`/v1`, `/openai`, ...) works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Chat,
    Completions,
    Embeddings,
    Responses,
    Messages,
    CohereChat,
    /// Cohere's v1 chat (`message` + `chat_history`; NDJSON streams).
    CohereChatV1,
    CohereEmbed,
    /// Cohere's rerank, v1 (false) or v2 (true).
    CohereRerank(bool),
    OllamaChat,
    OllamaEmbed,
    Generate,
    GenerateStream,
    FeatureExtraction,
    Gemini(gemini::Method),
    Token,
    /// Azure's instance metadata service: a managed identity's token.
    ImdsToken,
    /// Entra's `/{tenant}/oauth2/v2.0/token`: the client credentials grant.
    EntraToken,
    /// Bedrock `.../model/{id}/converse` (false) or `.../converse-stream` (true).
    Converse(bool),
    /// Bedrock `.../model/{id}/invoke` (embedding models).
    Invoke,
    /// OpenAI's files, batches, assistants, audio, images and videos.
    Api(api::Endpoint),
    /// Veo (AI Studio, Vertex AI) and Nova Reel (Bedrock, S3) video jobs.
    Video(video_jobs::Endpoint),
    /// The marketplace REST API and MCP server (`ai-mcp-proxy` tests).
    Mcp(crate::mcp::Endpoint),
    NotFound,
}

impl Route {
    fn of(method: &Method, path: &str) -> Route {
        let path = path.trim_end_matches('/');
        if let Some(endpoint) = crate::mcp::Endpoint::of(path) {
            return Route::Mcp(endpoint);
        }
        // Before OpenAI's: `GET …/files/{id}:download` would be a file otherwise.
        if let Some(endpoint) = video_jobs::Endpoint::of(method, path) {
            return Route::Video(endpoint);
        }
        if let Some(endpoint) = api::Endpoint::of(method, path) {
            return Route::Api(endpoint);
        }
        if video_jobs::Endpoint::s3_object(method, path) {
            return Route::Video(video_jobs::Endpoint::S3Object);
        }
        if *method == Method::GET {
            return if path == "/health" {
                Route::Health
            } else if path == "/metadata/identity/oauth2/token" {
                Route::ImdsToken
            } else {
                Route::NotFound
            };
        }
        if *method != Method::POST {
            Route::NotFound
        } else if crate::entra::tenant_of(path).is_some() {
            Route::EntraToken
        } else if path.ends_with("/chat/completions") {
            Route::Chat
        } else if path.ends_with("/completions") {
            Route::Completions
        } else if path.ends_with("/embeddings") {
            Route::Embeddings
        } else if path.ends_with("/responses") {
            Route::Responses
        } else if path.ends_with("/v1/messages") {
            Route::Messages
        } else if bedrock_model(path).is_some() {
            if path.ends_with("/invoke") {
                Route::Invoke
            } else {
                Route::Converse(path.ends_with("/converse-stream"))
            }
        } else if let Some((m, _)) = gemini::Method::of(path) {
            Route::Gemini(m)
        } else if path == "/token" {
            Route::Token
        } else if path.ends_with("/v2/chat") {
            Route::CohereChat
        } else if path.ends_with("/v1/chat") {
            Route::CohereChatV1
        } else if path.ends_with("/v2/embed") {
            Route::CohereEmbed
        } else if path.ends_with("/v1/rerank") || path.ends_with("/v2/rerank") {
            Route::CohereRerank(path.ends_with("/v2/rerank"))
        } else if path.ends_with("/api/chat") {
            Route::OllamaChat
        } else if path.ends_with("/api/embed") {
            Route::OllamaEmbed
        } else if path.ends_with("/generate") {
            Route::Generate
        } else if path.ends_with("/generate_stream") {
            Route::GenerateStream
        } else if path.ends_with("/pipeline/feature-extraction") {
            Route::FeatureExtraction
        } else {
            Route::NotFound
        }
    }
}

/// The model id of a Bedrock `/model/{id}/converse[-stream]` path, percent-decoded.
fn bedrock_model(path: &str) -> Option<String> {
    let rest = path.trim_end_matches('/');
    let rest = rest
        .strip_suffix("/converse-stream")
        .or_else(|| rest.strip_suffix("/converse"))
        .or_else(|| rest.strip_suffix("/invoke"))?;
    let (_, model) = rest.rsplit_once("/model/")?;
    (!model.is_empty() && !model.contains('/')).then(|| crate::percent_decode(model))
}

/// Everything an endpoint needs to build its answer.
pub(crate) struct Ctx<'a> {
    /// Per-server sequence number used in ids.
    pub n: u64,
    pub created: u64,
    pub model: &'a str,
    pub body: &'a Value,
    pub prompt_tokens: u64,
    pub directives: &'a Directives,
}

impl Ctx<'_> {
    pub(crate) fn reply(&self) -> Reply {
        Reply::new(
            self.directives.reply.as_deref().unwrap_or(DEFAULT_REPLY),
            self.directives.chunks,
        )
    }

    pub(crate) fn stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    pub(crate) fn include_usage(&self) -> bool {
        self.body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true)
    }

    /// `status=2xx` changes the success status; anything else never gets here.
    pub(crate) fn status(&self) -> StatusCode {
        self.directives
            .status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .filter(StatusCode::is_success)
            .unwrap_or(StatusCode::OK)
    }

    pub(crate) fn event_stream(&self, mut events: Vec<Bytes>) -> Response<MockBody> {
        if let Some(n) = self.directives.split {
            let all: Vec<u8> = events.concat();
            events = all.chunks(n).map(Bytes::copy_from_slice).collect();
        }
        let gap = Duration::from_millis(self.directives.chunk_delay_ms.unwrap_or(0));
        let body = EventStream::new(events, gap, self.directives.disconnect_after);
        let mut response = Response::new(MockBody::Events(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

async fn handle(state: Arc<MockState>, req: Request<Incoming>) -> io::Result<Response<MockBody>> {
    if crate::realtime::wanted(&req) {
        return Ok(crate::realtime::accept(state, req));
    }
    if crate::websocket::wanted(&req) {
        return Ok(crate::websocket::accept(state, req));
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    respond(state, parts, body).await
}

/// Answers one request whose body has been read (also each WebSocket frame).
pub(crate) async fn respond(
    state: Arc<MockState>,
    parts: http::request::Parts,
    body: Bytes,
) -> io::Result<Response<MockBody>> {
    state.record(&parts, &body);

    let route = Route::of(&parts.method, parts.uri.path());
    if route == Route::Health {
        let mut response = Response::new(MockBody::full(Bytes::from_static(b"ok")));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(response);
    }
    if route == Route::Token {
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        return Ok(gemini::token(&body, host, parts.uri.path(), &state));
    }
    if route == Route::ImdsToken {
        let query = parts.uri.query().unwrap_or("");
        return Ok(crate::entra::imds_token(&parts.headers, query, &state));
    }
    if route == Route::EntraToken {
        return Ok(crate::entra::client_credentials(&body, &state));
    }
    if let Route::Mcp(endpoint) = route {
        let n = state.next_id();
        return Ok(crate::mcp::respond(
            endpoint,
            &parts,
            &body,
            &state.mcp_sessions,
            n,
        ));
    }

    let mut directives = Directives::default();
    let mut scan = PromptScan::default();
    let parsed = match route {
        Route::NotFound | Route::Health | Route::Token | Route::ImdsToken | Route::EntraToken => {
            Ok(Value::Null)
        }
        _ => serde_json::from_slice::<Value>(&body),
    };
    if let Ok(json) = &parsed {
        scan_prompt(route, json, &mut scan, &mut directives);
    }
    // Applied after the markers so the header wins.
    for value in parts.headers.get_all("x-mock") {
        // Not `to_str`: that rejects UTF-8, and a `reply=` may well contain it.
        if let Ok(value) = std::str::from_utf8(value.as_bytes()) {
            directives.apply_header(value);
        }
    }

    if let Route::Video(endpoint) = route {
        // AWS authenticates before anything else.
        if let Some(denied) = video_jobs::aws_auth(endpoint, &parts, &body) {
            return Ok(denied);
        }
    }
    if let Route::Converse(_) | Route::Invoke = route {
        // AWS authenticates before anything else.
        if let Err(r) = sigv4::verify(
            &parts,
            &body,
            "bedrock",
            crate::BEDROCK_SECRET_ACCESS_KEY,
            SystemTime::now(),
        ) {
            return Ok(bedrock::error(StatusCode::FORBIDDEN, r.kind, &r.message));
        }
    }

    if let Some(ms) = directives.delay_ms.filter(|ms| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if directives.reset {
        // A service error makes hyper close the socket without writing
        // anything.
        return Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "mock-llm injected reset",
        ));
    }
    if directives.hang {
        tokio::time::sleep(HANG).await;
    }
    let google = match route {
        Route::Gemini(_) => true,
        Route::Video(endpoint) => endpoint.is_google(),
        _ => false,
    };
    if google {
        if let Some(denied) = gemini::check_auth(&parts.headers, parts.uri.query(), &state) {
            return Ok(denied);
        }
    }
    if let Some(status) = directives.status {
        if let Ok(status) = StatusCode::from_u16(status) {
            if status.as_u16() >= 300 {
                let kind = match status.as_u16() {
                    429 => "rate_limit_error",
                    400..=499 => "invalid_request_error",
                    _ => "server_error",
                };
                let message = format!("mock-llm injected status {}", status.as_u16());
                match route {
                    Route::Messages => return Ok(anthropic::error(status, &message)),
                    Route::CohereChat
                    | Route::CohereChatV1
                    | Route::CohereEmbed
                    | Route::CohereRerank(_) => return Ok(cohere::error(status, &message)),
                    Route::OllamaChat | Route::OllamaEmbed => {
                        return Ok(ollama::error(status, &message))
                    }
                    Route::Generate | Route::GenerateStream | Route::FeatureExtraction => {
                        return Ok(tgi::error(status, &message))
                    }
                    _ => {}
                }
                if let Route::Gemini(_) = route {
                    return Ok(gemini::error(status, &message));
                }
                if let Route::Converse(_) | Route::Invoke = route {
                    return Ok(bedrock::injected(status, &message));
                }
                if let Route::Video(endpoint) = route {
                    return Ok(video_jobs::injected(endpoint, status, &message));
                }
                return Ok(error_response(status, &message, kind, None));
            }
        }
    }
    if directives.non_json {
        let mut response = Response::new(MockBody::full(Bytes::from_static(b"this is not json")));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(response);
    }

    if let Route::Api(endpoint) = route {
        let req = api::Req {
            state: &state,
            parts: &parts,
            body: &body,
            directives: &directives,
            now: unix_now(),
        };
        let response = api::handle(endpoint, &req);
        return Ok(match directives.gzip {
            true => crate::body::gzipped(response),
            false => response,
        });
    }
    if let Route::Video(endpoint) = route {
        let req = api::Req {
            state: &state,
            parts: &parts,
            body: &body,
            directives: &directives,
            now: unix_now(),
        };
        let response = video_jobs::handle(endpoint, &req);
        return Ok(match directives.gzip {
            true => crate::body::gzipped(response),
            false => response,
        });
    }
    if route == Route::NotFound {
        let message = format!(
            "mock-llm: unknown path {} {}",
            parts.method,
            parts.uri.path()
        );
        return Ok(error_response(
            StatusCode::NOT_FOUND,
            &message,
            "invalid_request_error",
            Some("not_found"),
        ));
    }
    let json = match parsed {
        Ok(json) if json.is_object() => json,
        _ if matches!(route, Route::Converse(_) | Route::Invoke) => {
            return Ok(bedrock::injected(
                StatusCode::BAD_REQUEST,
                "Malformed input request, please reformat your input and try again.",
            ));
        }
        Ok(_) => {
            return Ok(bad_request("mock-llm: request body must be a JSON object"));
        }
        Err(err) => {
            return Ok(bad_request(&format!("mock-llm: invalid JSON body: {err}")));
        }
    };

    let path_model = bedrock_model(parts.uri.path());
    let ctx = Ctx {
        n: state.next_id(),
        created: unix_now(),
        // Gemini and Bedrock name the model in the path.
        model: gemini::Method::of(parts.uri.path())
            .map(|(_, m)| m)
            .or(path_model.as_deref())
            .or_else(|| json.get("model").and_then(Value::as_str))
            .unwrap_or(DEFAULT_MODEL),
        body: &json,
        prompt_tokens: scan.tokens(),
        directives: &directives,
    };
    let response = match route {
        Route::Chat => openai::chat(&ctx),
        Route::Completions => openai::completions(&ctx),
        Route::Embeddings => embeddings::embeddings(&ctx),
        Route::Responses => responses::responses(&ctx),
        Route::Messages => {
            anthropic::messages(&ctx, parts.headers.contains_key("anthropic-version"))
        }
        Route::Converse(stream) => bedrock::converse(&ctx, stream),
        Route::Invoke => bedrock::invoke(&ctx),
        Route::CohereChat => cohere::chat(&ctx),
        Route::CohereChatV1 => cohere::chat_v1(&ctx),
        Route::CohereEmbed => cohere::embed_texts(&ctx),
        Route::CohereRerank(v2) => cohere::rerank(&ctx, v2),
        Route::OllamaChat => ollama::chat(&ctx),
        Route::OllamaEmbed => ollama::embed_input(&ctx),
        Route::Generate => tgi::generate(&ctx, false),
        Route::GenerateStream => tgi::generate(&ctx, true),
        Route::FeatureExtraction => tgi::feature_extraction(&ctx),
        Route::Gemini(gemini::Method::Generate) => gemini::generate(&ctx, ctx.model, false, false),
        Route::Gemini(gemini::Method::Stream) => {
            let sse = parts
                .uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
            gemini::generate(&ctx, ctx.model, true, sse)
        }
        Route::Gemini(gemini::Method::Embed) => gemini::embed_batch(&ctx, ctx.model),
        Route::Api(_)
        | Route::Video(_)
        | Route::Mcp(_)
        | Route::NotFound
        | Route::Health
        | Route::Token
        | Route::ImdsToken
        | Route::EntraToken => error_response(
            StatusCode::NOT_FOUND,
            "mock-llm: unknown path",
            "invalid_request_error",
            Some("not_found"),
        ),
    };
    Ok(match directives.gzip {
        true => crate::body::gzipped(response),
        false => response,
    })
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Answers one request of a batch input file: `url` (`/v1/chat/completions`,
/// `/v1/completions`, `/v1/embeddings` or `/v1/responses`) with JSON `body`,
/// never streamed. `[mock:...]` markers in the prompt apply (`status=500` makes
/// the request fail). Returns the status code and the response body.
pub(crate) fn batch_answer(state: &MockState, url: &str, body: &Value) -> (u16, Value) {
    let path = url.split('?').next().unwrap_or_default();
    let route = Route::of(&Method::POST, path);
    if !matches!(
        route,
        Route::Chat | Route::Completions | Route::Embeddings | Route::Responses
    ) {
        return (
            400,
            serde_json::json!({"error": {"message": format!("mock-llm: unsupported batch url {url}"),
                "type": "invalid_request_error", "param": "url", "code": null}}),
        );
    }
    let mut body = body.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.remove("stream");
    }
    let mut directives = Directives::default();
    let mut scan = PromptScan::default();
    scan_prompt(route, &body, &mut scan, &mut directives);
    if let Some(status) = directives.status.filter(|s| *s >= 300) {
        let kind = match status {
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        return (
            status,
            serde_json::json!({"error": {"message": format!("mock-llm injected status {status}"),
                "type": kind, "param": null, "code": null}}),
        );
    }
    let ctx = Ctx {
        n: state.next_id(),
        created: unix_now(),
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_MODEL),
        body: &body,
        prompt_tokens: scan.tokens(),
        directives: &directives,
    };
    let response = match route {
        Route::Completions => openai::completions(&ctx),
        Route::Embeddings => embeddings::embeddings(&ctx),
        Route::Responses => responses::responses(&ctx),
        _ => openai::chat(&ctx),
    };
    let status = response.status().as_u16();
    let json = response
        .into_body()
        .into_full()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// Walks the prompt of a `route` request: counts its tokens, applies its markers.
fn scan_prompt(route: Route, json: &Value, scan: &mut PromptScan, directives: &mut Directives) {
    match route {
        Route::Chat | Route::CohereChat | Route::OllamaChat => scan.chat(json, directives),
        Route::CohereEmbed => scan.prompt(json.get("texts"), directives),
        Route::CohereChatV1 => {
            scan.prompt(json.get("message"), directives);
            for m in json
                .get("chat_history")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                scan.prompt(m.get("message"), directives);
            }
        }
        Route::CohereRerank(_) => scan.prompt(json.get("query"), directives),
        Route::OllamaEmbed => scan.prompt(json.get("input"), directives),
        Route::Generate | Route::GenerateStream | Route::FeatureExtraction => {
            scan.prompt(json.get("inputs"), directives)
        }
        Route::Completions => scan.prompt(json.get("prompt"), directives),
        Route::Embeddings => scan.prompt(json.get("input"), directives),
        Route::Responses => scan.responses(json, directives),
        Route::Messages => {
            scan.chat(json, directives);
            scan.prompt(json.get("system"), directives);
        }
        Route::Converse(_) => {
            scan.chat(json, directives);
            scan.text_blocks(json.get("system"), directives);
        }
        Route::Invoke => {
            scan.prompt(json.get("inputText"), directives);
            scan.prompt(json.get("texts"), directives);
        }
        Route::Gemini(_) => scan.gemini(json, directives),
        Route::Video(endpoint) => endpoint.scan(json, directives),
        // Answered before prompts are read.
        Route::Mcp(_) => {}
        Route::Api(endpoint) => {
            if endpoint.has_json_prompt() {
                scan.prompt(json.get("prompt"), directives);
                scan.prompt(json.get("input"), directives);
            }
        }
        Route::NotFound | Route::Health | Route::Token | Route::ImdsToken | Route::EntraToken => {}
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: Option<&'a str>,
}

fn bad_request(message: &str) -> Response<MockBody> {
    error_response(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        None,
    )
}

/// An error in OpenAI's shape.
fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Response<MockBody> {
    let body = ErrorBody {
        error: ErrorDetail {
            message,
            kind,
            code,
        },
    };
    json_response(status, &body)
}

/// Serializes a value the mock built itself; those have string keys only, so
/// serialization cannot fail and an empty object is a mere formality.
pub(crate) fn to_json(value: &impl Serialize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    write_json(&mut buf, value);
    buf
}

fn write_json(buf: &mut Vec<u8>, value: &impl Serialize) {
    let start = buf.len();
    if serde_json::to_writer(&mut *buf, value).is_err() {
        buf.truncate(start);
        buf.extend_from_slice(b"{}");
    }
}

pub(crate) fn json_response(status: StatusCode, value: &impl Serialize) -> Response<MockBody> {
    raw_json_response(status, to_json(value))
}

/// A JSON response from already serialized bytes.
pub(crate) fn raw_json_response(status: StatusCode, json: Vec<u8>) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(json));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `data: <json>\n\n`.
pub(crate) fn sse_data(value: &impl Serialize) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    write_json(&mut buf, value);
    buf.extend_from_slice(b"\n\n");
    buf.into()
}

/// `data: <json>\n\n` from already serialized JSON.
pub(crate) fn sse_data_raw(json: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(json.len() + 8);
    buf.extend_from_slice(b"data: ");
    buf.extend_from_slice(json);
    buf.extend_from_slice(b"\n\n");
    buf.into()
}

/// `event: <name>\ndata: <json>\n\n`.
pub(crate) fn sse_event(name: &str, value: &impl Serialize) -> Bytes {
    let mut buf = Vec::with_capacity(512);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    write_json(&mut buf, value);
    buf.extend_from_slice(b"\n\n");
    buf.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_suffix() {
        let post = Method::POST;
        assert_eq!(Route::of(&post, "/v1/chat/completions"), Route::Chat);
        assert_eq!(Route::of(&post, "/openai/chat/completions/"), Route::Chat);
        assert_eq!(Route::of(&post, "/v1/completions"), Route::Completions);
        assert_eq!(Route::of(&post, "/x/y/embeddings"), Route::Embeddings);
        assert_eq!(Route::of(&post, "/v1/responses"), Route::Responses);
        assert_eq!(Route::of(&post, "/v1/models"), Route::NotFound);
        assert_eq!(Route::of(&post, "/v2/chat"), Route::CohereChat);
        assert_eq!(Route::of(&post, "/v2/embed"), Route::CohereEmbed);
        assert_eq!(Route::of(&post, "/api/chat"), Route::OllamaChat);
        assert_eq!(Route::of(&post, "/api/embed"), Route::OllamaEmbed);
        assert_eq!(Route::of(&post, "/generate"), Route::Generate);
        assert_eq!(
            Route::of(&post, "/x/generate_stream"),
            Route::GenerateStream
        );
        assert_eq!(Route::of(&post, "/v1/chatcompletions"), Route::NotFound);
        assert_eq!(
            Route::of(&Method::GET, "/v1/chat/completions"),
            Route::NotFound
        );
        assert_eq!(Route::of(&Method::GET, "/health"), Route::Health);
        assert_eq!(Route::of(&post, "/health"), Route::NotFound);
        assert_eq!(
            Route::of(&post, "/v1beta/models/gemini-2.5-flash:generateContent"),
            Route::Gemini(gemini::Method::Generate)
        );
        assert_eq!(Route::of(&post, "/token"), Route::Token);
        assert_eq!(
            Route::of(
                &post,
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
            ),
            Route::Converse(false)
        );
        assert_eq!(
            Route::of(&post, "/x/model/m/converse-stream"),
            Route::Converse(true)
        );
        assert_eq!(Route::of(&post, "/model//converse"), Route::NotFound);
        let get = Method::GET;
        assert_eq!(
            Route::of(&get, "/v1beta/files/abc:download"),
            Route::Video(video_jobs::Endpoint::VeoDownload)
        );
        assert_eq!(
            Route::of(&get, "/v1/files/file-1"),
            Route::Api(api::Endpoint::FileGet)
        );
        assert_eq!(
            Route::of(&get, "/bucket/prefix/mock1/output.mp4"),
            Route::Video(video_jobs::Endpoint::S3Object)
        );
        // OpenAI's paths win over an S3 key that looks like them.
        assert_eq!(
            Route::of(&get, "/v1/files/output.mp4"),
            Route::Api(api::Endpoint::FileGet)
        );
        assert_eq!(
            Route::of(&post, "/async-invoke"),
            Route::Video(video_jobs::Endpoint::ReelCreate)
        );
        assert_eq!(
            Route::of(
                &post,
                "/v1beta/models/veo-3.0-generate-001:predictLongRunning"
            ),
            Route::Video(video_jobs::Endpoint::VeoCreate)
        );
        assert_eq!(
            bedrock_model("/model/a.b-v1%3A0/converse").as_deref(),
            Some("a.b-v1:0")
        );
    }

    #[test]
    fn sse_framing() {
        assert_eq!(
            sse_data(&serde_json::json!({"a": 1})),
            "data: {\"a\":1}\n\n"
        );
        assert_eq!(
            sse_event("x.y", &serde_json::json!({})),
            "event: x.y\ndata: {}\n\n"
        );
    }
}

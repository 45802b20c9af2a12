//! `ai-semantic-cache` on an AI route: the lookup once the body is final, a hit answered
//! in the form the client asked (JSON or SSE, chat or Responses) without an upstream call,
//! and a miss's answer tapped on its way to the client and stored once it is complete.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use crate::config::plugins::RouteType;
use crate::error::GatewayError;
use crate::gateway::Snapshot;
use crate::llm::cached::{self, Api};
use crate::llm::usage::Usage;
use crate::plugins::ai_proxy::AiProxy;
use crate::plugins::ai_semantic_cache::{self as sc, Hit, Lookup, SemanticCache, Ticket};
use crate::plugins::phases::ArmedCache;
use crate::proxy::exchange::Exchange;
use crate::proxy::response::ProxyBody;

use super::answer::buffered_response;
use super::unix_seconds;

/// The most of an answer kept for the cache; a longer one is not stored.
const TAP_LIMIT: usize = 1 << 20;

/// A missed request's answer on its way to the client, stored once complete.
#[derive(Debug)]
pub struct Pending {
    cache: Arc<SemanticCache>,
    ticket: Ticket,
    stream: bool,
    tap: Vec<u8>,
    overflow: bool,
    /// The upstream answer's `Cache-Control` (read with `cache_control`).
    control: Option<HeaderValue>,
}

impl Pending {
    /// Keeps `bytes` the client is sent.
    pub fn tap(&mut self, bytes: &[u8]) {
        if self.tap.len() + bytes.len() > TAP_LIMIT {
            self.overflow = true;
            return;
        }
        self.tap.extend_from_slice(bytes);
    }

    /// The upstream answer's headers (for its `Cache-Control`).
    pub fn answer_headers(&mut self, h: &HeaderMap) {
        self.control = h.get(header::CACHE_CONTROL).cloned();
    }

    /// The log phase of a complete exchange: a 200 answer that ended well is stored.
    pub fn finish(self, status: u16, stream_error: bool) {
        if status != 200 || stream_error || self.overflow {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Off the request path: a shared store is a network round trip.
        rt.spawn(async move {
            let mut h = HeaderMap::new();
            if let Some(c) = &self.control {
                h.insert(header::CACHE_CONTROL, c.clone());
            }
            let p = &self;
            p.cache.store(&p.ticket, p.stream, &p.tap, Some(&h)).await;
        });
    }
}

/// The cache's part of the upstream phase: a hit (or, with `stop_on_failure`, a failed
/// lookup) is the answer; otherwise the request goes upstream with its log record.
// Built once per cached request and moved once; boxing would add an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Served {
    Answer(Response<ProxyBody>),
    Upstream(Exchange),
}

/// Looks the request up and answers a hit; `headers` gets the cache's headers.
pub(super) async fn serve(
    gw: &crate::gateway::Gateway,
    ai: &Arc<AiProxy>,
    armed: ArmedCache,
    (body, client_headers): (&[u8], &HeaderMap),
    mut log: Exchange,
    headers: &mut Vec<(HeaderName, HeaderValue)>,
    snap: &Arc<Snapshot>,
) -> Served {
    let cache = armed.cache.clone();
    super::ai::open_ai_log(ai, body, &mut log);
    match decide(gw, ai, armed, (body, client_headers), &mut log, headers).await {
        Decided::Go => Served::Upstream(log),
        Decided::Fail(e) => Served::Answer(super::answer::kong_error(
            e,
            ai.error_shape(),
            log,
            snap.clone(),
        )),
        Decided::Hit(hit, api, stream, wants_usage) => {
            let asked = (body, stream, wants_usage);
            let cache = Some(&*cache);
            let resp = answer(&hit, api, asked, ai, cache, log, snap.clone());
            Served::Answer(resp)
        }
    }
}

/// What the cache decided for the request.
enum Decided {
    /// Answer from the cache, in the client's API, as a stream or not, with the usage in
    /// the stream or not.
    Hit(Box<Hit>, Api, bool, bool),
    /// Go upstream (a miss stores the answer; the log knows).
    Go,
    /// `stop_on_failure`: the cache failed and the request ends here.
    Fail(GatewayError),
}

/// Whether the client asked for a stream, and for its usage in it.
fn flags(doc: &Value) -> (bool, bool) {
    let stream = doc.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let usage = doc
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    (stream, usage)
}

/// The API of a route the cache serves.
fn api_of(ai: &AiProxy) -> Option<Api> {
    match ai.targets.first().map(|t| t.route_type) {
        Some(RouteType::Chat) => Some(Api::Chat),
        Some(RouteType::Responses) => Some(Api::Responses),
        _ => None,
    }
}

/// Looks the request up; `headers` gets `X-Cache-Status` (and the hit's key, TTL and age).
async fn decide(
    gw: &crate::gateway::Gateway,
    ai: &AiProxy,
    armed: ArmedCache,
    (body, client_headers): (&[u8], &HeaderMap),
    log: &mut Exchange,
    headers: &mut Vec<(HeaderName, HeaderValue)>,
) -> Decided {
    let cache = armed.cache;
    let (provider, model) = cache.embeddings();
    let mut entry = json!({
        "embeddings_provider": provider,
        "embeddings_model": model,
        "vector_db": cache.vector_db(),
    });
    let doc: Option<Value> = serde_json::from_slice(body).ok();
    let (stream, wants_usage) = doc.as_ref().map(flags).unwrap_or((false, false));
    let lookup = match (api_of(ai), &doc) {
        (Some(api), Some(doc)) => {
            let model = doc
                .get("model")
                .and_then(Value::as_str)
                .or_else(|| ai.targets.first().and_then(|t| t.model_name.as_deref()))
                .unwrap_or("UNSPECIFIED");
            let req = sc::Request {
                doc,
                headers: client_headers,
                api,
                model,
                partition: &armed.partition,
            };
            (cache.lookup(&gw.upstreams, &req).await, api)
        }
        _ => (Lookup::Bypass("not a chat or Responses request"), Api::Chat),
    };
    let mut embeddings_ms = None;
    let (status, decided) = match lookup {
        (Lookup::Hit(hit), api) => {
            entry["fetch_latency"] = json!(hit.timing.fetch_ms);
            entry["embeddings_latency"] = json!(hit.timing.embeddings_log_ms());
            embeddings_ms = hit.timing.embeddings_ms;
            entry["distance"] = json!(hit.distance);
            headers.push(named(
                "x-cache-key",
                &sc::cache_key_header(&hit.namespace, &hit.key),
            ));
            headers.push(named("x-cache-ttl", &hit.ttl_left.to_string()));
            headers.push(named("age", &hit.age.to_string()));
            let hit = Decided::Hit(Box::new(hit), api, stream, wants_usage);
            ("Hit", hit)
        }
        (Lookup::Miss(ticket, timing), _) => {
            entry["fetch_latency"] = json!(timing.fetch_ms);
            entry["embeddings_latency"] = json!(timing.embeddings_log_ms());
            embeddings_ms = timing.embeddings_ms;
            let status = if ticket.refresh { "Refresh" } else { "Miss" };
            log.cache = Some(Box::new(Pending {
                cache: cache.clone(),
                ticket,
                stream,
                tap: Vec::new(),
                overflow: false,
                control: None,
            }));
            (status, Decided::Go)
        }
        (Lookup::Bypass(why), _) => {
            entry["bypass_reason"] = json!(why);
            ("Bypass", Decided::Go)
        }
        (Lookup::Failed { message, reason }, _) => {
            tracing::warn!(plugin = "ai-semantic-cache", error = %reason, "{message}");
            entry["error"] = json!(message);
            if cache.config.stop_on_failure {
                ("Failed", Decided::Fail(GatewayError::CacheFailed(message)))
            } else {
                ("Failed", Decided::Go)
            }
        }
    };
    entry["cache_status"] = json!(status);
    headers.push(named("x-cache-status", status));
    if let Some(a) = log.ai.as_mut() {
        a.cache = Some(entry);
        a.cache_embeddings_ms = embeddings_ms;
    }
    decided
}

fn named(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("")),
    )
}

/// The answer of a hit, in the client's form; the log records no usage (or the cached one
/// with `charge_cached_tokens`) and what the hit saved.
fn answer(
    hit: &Hit,
    api: Api,
    (body, stream, wants_usage): (&[u8], bool, bool),
    ai: &AiProxy,
    cache: Option<&SemanticCache>,
    mut log: Exchange,
    snap: Arc<Snapshot>,
) -> Response<ProxyBody> {
    let now = unix_seconds();
    let id = format!("chatcmpl-{}", hit.key.get(..29).unwrap_or(&hit.key));
    let (bytes, content_type) = match (api, stream) {
        (Api::Chat, false) => (cached::chat_json(&hit.answer, &id, now), "application/json"),
        (Api::Chat, true) => (
            cached::chat_sse(&hit.answer, &id, now, wants_usage),
            "text/event-stream",
        ),
        (Api::Responses, _) => {
            let meta = crate::llm::body::BodyView::parse(body)
                .ok()
                .and_then(|v| crate::llm::responses::to_chat(&v, None, stream, now).ok())
                .map(|r| r.meta)
                .unwrap_or_default();
            if stream {
                (
                    cached::responses_sse(&hit.answer, meta),
                    "text/event-stream",
                )
            } else {
                (
                    cached::responses_json(&hit.answer, &meta),
                    "application/json",
                )
            }
        }
    };
    let saved = cached::usage(&hit.answer).unwrap_or_default();
    let target = ai.targets.first();
    let cost = saved.cost(
        target.and_then(|t| t.options.input_cost),
        target.and_then(|t| t.options.output_cost),
    );
    let charged = cache.is_some_and(|c| c.config.charge_cached_tokens);
    log.source = "exit";
    if let Some(a) = log.ai.as_mut() {
        a.stream = stream;
        a.target = Some(0);
        a.response_model = hit.answer["model"].as_str().map(str::to_string);
        a.usage = Some(if charged {
            saved.clone()
        } else {
            Usage::default()
        });
        if let Some(c) = a.cache.as_mut() {
            c["cost_savings"] = json!(if charged { 0.0 } else { cost });
            c["saved_tokens"] = json!(if charged { 0 } else { saved.total_tokens });
        }
    }
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    buffered_response(StatusCode::OK, h, Bytes::from(bytes), log, snap, None, None)
}

//! `ai-semantic-cache` (Kong's config and headers): a complete answer is kept, and a later
//! prompt that is the same (`exact_caching`) or within `vectordb.threshold` of it gets that
//! answer without an upstream call, as JSON or as an SSE stream, in chat or Responses form.
//!
//! The text a prompt is known by is Kong's: the last `message_countback` messages, newest
//! first, each as `role: content`, minus the roles the `ignore_*` flags drop. Entries are kept
//! per plugin, per model and per partition: by default each consumer has its own (Tollgate's
//! `partition_by`), so an answer never reaches another consumer unless the config says so.
//!
//! Not cached (`X-Cache-Status: Bypass`): requests with tools, `n` > 1, a `temperature` above
//! `bypass_temperature_above` (Tollgate, default 0), `Cache-Control: no-store`, and those with
//! no prompt text. Only complete 200 answers are stored (never errors, cut streams or tool
//! calls).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::balancer::embed::Embedder;
use crate::balancer::semantic::Metric;
use crate::balancer::vectordb::cache::{Entry, Found, Memory, RedisCache};
use crate::balancer::vectordb::{self, PgStore};
use crate::config::plugins::nullable;
use crate::config::vault::VaultTable;
use crate::llm::cached::Api;
use crate::net::upstream::Upstreams;
use crate::plugins::ai_prompt_decorator::LlmFormat;

type FieldErrors = Vec<(String, String)>;

/// Kong's `cache_ttl` default (seconds).
const DEFAULT_TTL: u64 = 300;
/// `vectordb.threshold` when left out (Kong 3.13+ makes it optional): cosine distance 0.1.
const DEFAULT_THRESHOLD: f64 = 0.1;

/// Who shares cached answers (Tollgate).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PartitionBy {
    /// Each consumer (or, without one, each client address) has its own entries.
    #[default]
    Consumer,
    /// The consumers of one consumer group share entries.
    ConsumerGroup,
    /// Everyone the route serves shares entries.
    Route,
}

/// Plugin config: Kong's fields, then Tollgate's (marked).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiSemanticCacheConfig {
    /// The embeddings model (Kong's `embeddings` record).
    pub embeddings: Option<Value>,
    /// Where entries live and how near is near enough (Kong's `vectordb` record; no
    /// `strategy` keeps them in this process).
    pub vectordb: Option<Value>,
    /// Seconds an entry lives (Kong: 300).
    pub cache_ttl: Option<f64>,
    /// Honour `Cache-Control` (RFC 7234) on requests and answers.
    #[serde(default, deserialize_with = "nullable")]
    pub cache_control: bool,
    /// Look the prompt's exact text up before embedding it.
    #[serde(default, deserialize_with = "nullable")]
    pub exact_caching: bool,
    /// How many of the latest messages make the prompt's text (Kong: 1, at most 1000).
    pub message_countback: Option<f64>,
    #[serde(default, deserialize_with = "nullable")]
    pub ignore_system_prompts: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub ignore_assistant_prompts: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub ignore_tool_prompts: bool,
    /// Answer 500 when the cache fails, instead of going upstream.
    #[serde(default, deserialize_with = "nullable")]
    pub stop_on_failure: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub llm_format: LlmFormat,
    /// Tollgate: who shares entries (`consumer`, `consumer_group`, `route`).
    #[serde(default, deserialize_with = "nullable")]
    pub partition_by: PartitionBy,
    /// Tollgate: a request whose `temperature` is above this is not cached (default 0: only
    /// deterministic requests, or ones that leave it to the provider, are).
    pub bypass_temperature_above: Option<f64>,
    /// Tollgate: token quotas charge a hit the tokens of the answer it replays (default:
    /// nothing, as the provider was not called).
    #[serde(default, deserialize_with = "nullable")]
    pub charge_cached_tokens: bool,
}

impl AiSemanticCacheConfig {
    /// Field errors (path under `config`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (field, v) in [
            ("embeddings", &self.embeddings),
            ("vectordb", &self.vectordb),
        ] {
            if v.as_ref().is_none_or(Value::is_null) {
                errs.push((field.into(), "required field missing".into()));
            }
        }
        if let Some(t) = self.cache_ttl {
            if !(t > 0.0 && t.fract() == 0.0) {
                errs.push(("cache_ttl".into(), "value must be greater than 0".into()));
            }
        }
        if let Some(n) = self.message_countback {
            if !(1.0..=1000.0).contains(&n) || n.fract() != 0.0 {
                errs.push((
                    "message_countback".into(),
                    "value should be between 1 and 1000".into(),
                ));
            }
        }
        if self.llm_format != LlmFormat::Openai {
            errs.push((
                "llm_format".into(),
                "tollgate caches OpenAI-format routes (chat completions and Responses)".into(),
            ));
        }
        if self
            .bypass_temperature_above
            .is_some_and(|t| t.is_nan() || t < 0.0)
        {
            errs.push((
                "bypass_temperature_above".into(),
                "must be a number ≥ 0".into(),
            ));
        }
        errs
    }
}

/// A compiled instance.
#[derive(Debug)]
pub struct SemanticCache {
    pub id: String,
    pub config: AiSemanticCacheConfig,
    embedder: Embedder,
    store: Store,
    metric: Metric,
    threshold: f64,
    dimensions: u64,
    ttl: u64,
    countback: usize,
}

/// Where the entries live.
#[derive(Debug)]
enum Store {
    Memory(Arc<Memory>),
    Redis(Arc<RedisCache>),
    Pgvector(Arc<PgStore>),
}

impl SemanticCache {
    /// Compiles `config` for plugin `id`; errors name fields under `config`.
    pub fn compile(
        id: &str,
        config: AiSemanticCacheConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(SemanticCache, FieldErrors), FieldErrors> {
        let super::semantic_records::Compiled {
            embedder,
            store,
            vectordb,
            warnings,
        } = super::semantic_records::compile(&config.embeddings, &config.vectordb, vaults, env)?;
        let store = match store {
            vectordb::Store::Memory => Store::Memory(Memory::of(id)),
            vectordb::Store::Redis(r) => Store::Redis(Arc::new(RedisCache::new(*r))),
            vectordb::Store::Pgvector(p) => Store::Pgvector(Arc::from(p)),
        };
        let cache = SemanticCache {
            id: id.to_string(),
            embedder,
            store,
            metric: vectordb.distance_metric,
            threshold: vectordb.threshold.unwrap_or(DEFAULT_THRESHOLD),
            dimensions: vectordb.dimensions,
            ttl: config.cache_ttl.map_or(DEFAULT_TTL, |t| t as u64),
            countback: config.message_countback.map_or(1, |n| n as usize),
            config,
        };
        Ok((cache, warnings))
    }

    /// Checks a pgvector store as the config goes into service (reachable, with the
    /// extension); paths are relative to the plugin.
    pub fn activate(&self) -> Result<Option<(String, String)>, (String, String)> {
        match &self.store {
            Store::Pgvector(p) => vectordb::check_pgvector(p, "config.vectordb"),
            _ => Ok(None),
        }
    }

    /// The embeddings provider and model, for logs and metrics.
    pub fn embeddings(&self) -> (&'static str, &str) {
        (self.embedder.target.provider.as_str(), &self.embedder.model)
    }

    /// The vector store's name, for logs and metrics.
    pub fn vector_db(&self) -> &'static str {
        match self.store {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
            Store::Pgvector(_) => "pgvector",
        }
    }

    /// How a request is served: looked up (hit, or a ticket to store the answer), or not
    /// cached, and why.
    pub async fn lookup(&self, upstreams: &Upstreams, req: &Request<'_>) -> Lookup {
        let started = Instant::now();
        if let Some(why) = bypass(req.doc, req.headers, &self.config) {
            return Lookup::Bypass(why);
        }
        let Some(text) = prompt_text(req.doc, req.api, self.countback, &self.config) else {
            return Lookup::Bypass("no prompt text");
        };
        let ns = namespace(&self.id, req.model, req.partition);
        let key = text_key(&text);
        let control = request_control(req.headers, self.config.cache_control);
        let now = crate::rt::clock::millis_since_epoch();
        let fresh = |f: &Found| match control.max_age {
            Some(max) => now.saturating_sub(f.stored_ms) <= max * 1000,
            None => true,
        };
        let mut timing = Timing::default();
        if !control.no_cache && self.config.exact_caching {
            match self.exact(&ns, &key, now).await {
                Ok(Some(f)) if fresh(&f) => {
                    timing.fetch_ms = ms(started.elapsed());
                    return Lookup::Hit(Hit::new(f, &ns, now, timing));
                }
                Ok(_) => {}
                Err(e) => return self.failed("search", self.query_failed(), e),
            }
        }
        let embed_started = Instant::now();
        let vector = match self.embedder.embed_one(upstreams, &text).await {
            Ok(v) => v,
            Err(e) => {
                return self.failed("embeddings", "Failed to generate embeddings".into(), e);
            }
        };
        timing.embeddings_ms = Some(embed_started.elapsed().as_secs_f64() * 1000.0);
        if vector.len() as u64 != self.dimensions {
            let why = format!(
                "Embedding dimensions do not match the configured vector database. Embeddings were {} dimensions, but the vector database is configured for {} dimensions.",
                vector.len(),
                self.dimensions
            );
            return self.failed("embeddings", why, String::new());
        }
        let ticket = Ticket {
            ns: ns.clone(),
            key: key.clone(),
            vector: vector.clone(),
            api: req.api,
            refresh: control.no_cache,
        };
        if control.no_cache {
            return Lookup::Miss(ticket, timing);
        }
        let fetch_started = Instant::now();
        let found = self.nearest(&ns, &vector, now).await;
        timing.fetch_ms = ms(fetch_started.elapsed());
        match found {
            Ok(Some(f)) if fresh(&f) => Lookup::Hit(Hit::new(f, &ns, now, timing)),
            Ok(Some(_)) => Lookup::Miss(
                Ticket {
                    refresh: true,
                    ..ticket
                },
                timing,
            ),
            Ok(None) => Lookup::Miss(ticket, timing),
            Err(e) => self.failed("search", self.query_failed(), e),
        }
    }

    /// A failure of `operation`, counted (`tollgate_vectordb_errors_total`): Kong's
    /// `message` for the client and the `reason` for the log.
    fn failed(&self, operation: &str, message: String, reason: String) -> Lookup {
        self.count_failure(operation);
        Lookup::Failed { message, reason }
    }

    fn count_failure(&self, operation: &str) {
        crate::observe::metrics::global()
            .vectordb_errors
            .add(&[&self.id, self.vector_db(), operation], 1.0);
    }

    /// Kong's text for a failed search.
    fn query_failed(&self) -> String {
        format!("Failed to query '{}' for cached response", self.vector_db())
    }

    async fn exact(&self, ns: &str, key: &str, now: u64) -> Result<Option<Found>, String> {
        match &self.store {
            Store::Memory(m) => Ok(m.exact(ns, key, now)),
            Store::Redis(r) => r.exact(ns, key, now).await,
            Store::Pgvector(p) => Ok(p.cache_exact(ns, key, now).await?.map(found)),
        }
    }

    async fn nearest(&self, ns: &str, v: &[f32], now: u64) -> Result<Option<Found>, String> {
        let t = self.threshold;
        match &self.store {
            Store::Memory(m) => Ok(m.nearest(ns, v, self.metric, t, now)),
            Store::Redis(r) => r.nearest(ns, v, self.metric, t, now).await,
            Store::Pgvector(p) => {
                let cosine = self.metric == Metric::Cosine;
                Ok(p.cache_nearest(ns, v, cosine, t, now).await?.map(found))
            }
        }
    }

    /// Stores the complete answer `body` (what the client got) of a missed request, with
    /// the answer's own `Cache-Control` when the config honours it.
    pub async fn store(
        &self,
        ticket: &Ticket,
        stream: bool,
        body: &[u8],
        answer_headers: Option<&HeaderMap>,
    ) {
        let Some(answer) = crate::llm::cached::answer_of(ticket.api, stream, body) else {
            return;
        };
        let ttl = match answer_headers.filter(|_| self.config.cache_control) {
            Some(h) => match response_ttl(h) {
                Some(0) => return,
                Some(t) => t,
                None => self.ttl,
            },
            None => self.ttl,
        };
        let now = crate::rt::clock::millis_since_epoch();
        let entry = Entry {
            key: ticket.key.clone(),
            vector: Some(ticket.vector.clone()),
            answer: serde_json::to_string(&answer).unwrap_or_default().into(),
            stored_ms: now,
            expires_ms: now + ttl * 1000,
        };
        let stored = match &self.store {
            Store::Memory(m) => {
                m.put(&ticket.ns, entry, now);
                Ok(())
            }
            Store::Redis(r) => r.put(&ticket.ns, &entry).await,
            Store::Pgvector(p) => {
                let (e, v) = (&entry, &ticket.vector);
                p.cache_put(&ticket.ns, &e.key, v, &e.answer, e.stored_ms, e.expires_ms)
                    .await
            }
        };
        if let Err(e) = stored {
            self.count_failure("store");
            tracing::warn!(plugin = "ai-semantic-cache", error = %e, "answer not stored in the semantic cache");
        }
    }
}

/// A PostgreSQL row as a found entry.
fn found((key, answer, stored_ms, expires_ms, distance): vectordb::pgvector::CacheRow) -> Found {
    Found {
        key,
        answer: answer.into(),
        stored_ms,
        expires_ms,
        distance,
    }
}

/// What a lookup needs of the request.
pub struct Request<'a> {
    pub doc: &'a Value,
    pub headers: &'a HeaderMap,
    pub api: Api,
    /// The model the request names, else the route's.
    pub model: &'a str,
    /// The partition the request belongs to ([`partition`]).
    pub partition: &'a str,
}

/// Latencies of a lookup (ms).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub fetch_ms: u64,
    /// Unrounded, and `None` when no embeddings call was made (an exact hit): a call to a
    /// nearby provider takes under a millisecond, and its histogram must still count it.
    pub embeddings_ms: Option<f64>,
}

impl Timing {
    /// The log's `embeddings_latency`: whole ms, 0 when no embeddings call was made.
    pub fn embeddings_log_ms(&self) -> u64 {
        self.embeddings_ms.map_or(0, |v| v as u64)
    }
}

/// A lookup's result.
#[derive(Debug)]
pub enum Lookup {
    Hit(Hit),
    /// Not found: the answer is stored under the ticket once complete.
    Miss(Ticket, Timing),
    /// Not cached, and why.
    Bypass(&'static str),
    /// The cache failed (the request goes upstream unless `stop_on_failure`): Kong's message
    /// and the reason.
    Failed {
        message: String,
        reason: String,
    },
}

/// A cached answer for the request.
#[derive(Debug)]
pub struct Hit {
    /// The stored answer (a `chat.completion`).
    pub answer: Value,
    pub namespace: String,
    pub key: String,
    /// Seconds it has left, and its age.
    pub ttl_left: u64,
    pub age: u64,
    pub distance: f64,
    pub timing: Timing,
}

impl Hit {
    fn new(f: Found, namespace: &str, now: u64, timing: Timing) -> Hit {
        Hit {
            answer: serde_json::from_str(&f.answer).unwrap_or(Value::Null),
            namespace: namespace.to_string(),
            key: f.key,
            ttl_left: f.expires_ms.saturating_sub(now).div_ceil(1000),
            age: now.saturating_sub(f.stored_ms) / 1000,
            distance: f.distance,
            timing,
        }
    }
}

/// Where a missed request's answer is stored.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub ns: String,
    pub key: String,
    pub vector: Arc<[f32]>,
    pub api: Api,
    /// The client asked for a fresh answer (or the entry found was too old): `Refresh`.
    pub refresh: bool,
}

/// `X-Cache-Key` of an entry: Kong's prefix, the namespace, the prompt's hash.
pub fn cache_key_header(ns: &str, key: &str) -> String {
    format!("kong_semantic_cache:{ns}:{key}")
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A request not to cache, and why.
fn bypass(doc: &Value, headers: &HeaderMap, c: &AiSemanticCacheConfig) -> Option<&'static str> {
    let nonempty = |k: &str| match doc.get(k) {
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    };
    if nonempty("tools") || nonempty("functions") {
        return Some("tools");
    }
    if doc.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Some("n > 1");
    }
    let limit = c.bypass_temperature_above.unwrap_or(0.0);
    if doc
        .get("temperature")
        .and_then(Value::as_f64)
        .is_some_and(|t| t > limit)
    {
        return Some("temperature");
    }
    if directives(headers).any(|(d, _)| d == "no-store") {
        return Some("no-store");
    }
    None
}

/// The `Cache-Control` directives of `headers` (lower-cased name, value).
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| {
            let (name, value) = d.split_once('=').unwrap_or((d, ""));
            let value = value.trim().trim_matches('"');
            (
                name.trim().to_ascii_lowercase(),
                (!value.is_empty()).then(|| value.to_string()),
            )
        })
}

/// What a request's `Cache-Control` asks of the cache (read only with `cache_control`).
#[derive(Debug, Default, PartialEq)]
struct Control {
    /// Do not answer from the cache (store the fresh answer).
    no_cache: bool,
    /// Answer only from entries at most this old (seconds).
    max_age: Option<u64>,
}

fn request_control(headers: &HeaderMap, honoured: bool) -> Control {
    let mut c = Control::default();
    if !honoured {
        return c;
    }
    for (name, value) in directives(headers) {
        match name.as_str() {
            "no-cache" => c.no_cache = true,
            "max-age" => c.max_age = value.and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    if c.max_age == Some(0) {
        c.no_cache = true;
    }
    c
}

/// The TTL an answer's `Cache-Control` gives (Some(0): not to be stored), None when it
/// says nothing.
fn response_ttl(headers: &HeaderMap) -> Option<u64> {
    let mut ttl = None;
    for (name, value) in directives(headers) {
        match name.as_str() {
            "private" | "no-store" | "no-cache" => return Some(0),
            "s-maxage" => ttl = value.and_then(|v| v.parse().ok()).or(ttl),
            "max-age" if ttl.is_none() => ttl = value.and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    ttl
}

/// Kong's text of a prompt: the last `countback` messages, newest first, each as
/// `role: content` (non-text content as JSON), without the ignored roles. A Responses
/// request's `instructions` count as a system message before its `input`.
pub fn prompt_text(
    doc: &Value,
    api: Api,
    countback: usize,
    c: &AiSemanticCacheConfig,
) -> Option<String> {
    let messages: Vec<(String, Value)> = match api {
        Api::Chat => doc
            .get("messages")?
            .as_array()?
            .iter()
            .map(|m| {
                let role = m
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                (role, m.get("content").cloned().unwrap_or(Value::Null))
            })
            .collect(),
        Api::Responses => {
            let mut out = Vec::new();
            if let Some(i) = doc.get("instructions").and_then(Value::as_str) {
                out.push(("system".to_string(), json!(i)));
            }
            match doc.get("input")? {
                Value::String(s) => out.push(("user".to_string(), json!(s))),
                Value::Array(items) => {
                    for it in items {
                        let role = it.get("role").and_then(Value::as_str).unwrap_or("tool");
                        out.push((
                            role.to_string(),
                            it.get("content").cloned().unwrap_or_else(|| it.clone()),
                        ));
                    }
                }
                _ => return None,
            }
            out
        }
    };
    let mut text = String::new();
    for (role, content) in messages.iter().rev().take(countback) {
        let kept = match role.as_str() {
            "user" => true,
            "system" | "developer" => !c.ignore_system_prompts,
            "assistant" => !c.ignore_assistant_prompts,
            "tool" | "function" => !c.ignore_tool_prompts,
            _ => false,
        };
        if !kept {
            continue;
        }
        let content = match content {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        text.push_str(role);
        text.push_str(": ");
        text.push_str(&content);
        text.push_str("\n\n");
    }
    (!text.trim().is_empty()).then_some(text)
}

/// The hash of a prompt's text (hex SHA-256, as Kong keys entries).
pub fn text_key(text: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The namespace of a request's entries: the plugin, the model and the partition (hashed:
/// consumer ids stay out of keys and headers).
pub fn namespace(plugin_id: &str, model: &str, partition: &str) -> String {
    let p = ring::digest::digest(&ring::digest::SHA256, partition.as_bytes());
    format!("{plugin_id}:{model}:{}", hex(&p.as_ref()[..8]))
}

/// The partition a request belongs to under `by`.
pub fn partition(
    by: PartitionBy,
    consumer: Option<&str>,
    group: Option<&str>,
    client_ip: &str,
    route: Option<&str>,
) -> String {
    match by {
        PartitionBy::Consumer => match consumer {
            Some(c) => format!("consumer:{c}"),
            None => format!("ip:{client_ip}"),
        },
        PartitionBy::ConsumerGroup => match (group, consumer) {
            (Some(g), _) => format!("group:{g}"),
            (None, Some(c)) => format!("consumer:{c}"),
            (None, None) => format!("ip:{client_ip}"),
        },
        PartitionBy::Route => format!("route:{}", route.unwrap_or("")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(v: Value) -> AiSemanticCacheConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn prompt_text_is_kongs_countback_newest_first() {
        let doc = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "what is rust?"}]});
        let c = config(json!({}));
        assert_eq!(
            prompt_text(&doc, Api::Chat, 1, &c).unwrap(),
            "user: what is rust?\n\n"
        );
        assert_eq!(
            prompt_text(&doc, Api::Chat, 3, &c).unwrap(),
            "user: what is rust?\n\nassistant: hi\n\nuser: hello\n\n"
        );
        let c = config(json!({"ignore_assistant_prompts": true, "ignore_system_prompts": true}));
        assert_eq!(
            prompt_text(&doc, Api::Chat, 4, &c).unwrap(),
            "user: what is rust?\n\nuser: hello\n\n"
        );
        let r = json!({"instructions": "be brief", "input": "what is rust?"});
        assert_eq!(
            prompt_text(&r, Api::Responses, 2, &config(json!({}))).unwrap(),
            "user: what is rust?\n\nsystem: be brief\n\n"
        );
        assert!(prompt_text(&json!({"messages": []}), Api::Chat, 1, &c).is_none());
    }

    #[test]
    fn bypass_rules() {
        let c = config(json!({}));
        let h = HeaderMap::new();
        let chat = |extra: Value| {
            let mut d = json!({"messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                d[k] = v.clone();
            }
            d
        };
        assert_eq!(bypass(&chat(json!({})), &h, &c), None);
        assert_eq!(
            bypass(&chat(json!({"tools": [{"type": "function"}]})), &h, &c),
            Some("tools")
        );
        assert_eq!(bypass(&chat(json!({"tools": []})), &h, &c), None);
        assert_eq!(bypass(&chat(json!({"n": 2})), &h, &c), Some("n > 1"));
        assert_eq!(
            bypass(&chat(json!({"temperature": 0.7})), &h, &c),
            Some("temperature")
        );
        assert_eq!(bypass(&chat(json!({"temperature": 0})), &h, &c), None);
        let warm = config(json!({"bypass_temperature_above": 1.0}));
        assert_eq!(bypass(&chat(json!({"temperature": 0.7})), &h, &warm), None);
        let mut h = HeaderMap::new();
        h.insert("cache-control", "no-store".parse().unwrap());
        assert_eq!(bypass(&chat(json!({})), &h, &c), Some("no-store"));
    }

    #[test]
    fn cache_control() {
        let mut h = HeaderMap::new();
        h.insert("cache-control", "max-age=60, no-cache".parse().unwrap());
        assert_eq!(request_control(&h, false), Control::default());
        assert_eq!(
            request_control(&h, true),
            Control {
                no_cache: true,
                max_age: Some(60)
            }
        );
        let mut r = HeaderMap::new();
        r.insert(
            "cache-control",
            "public, max-age=30, s-maxage=90".parse().unwrap(),
        );
        assert_eq!(response_ttl(&r), Some(90));
        r.insert("cache-control", "private".parse().unwrap());
        assert_eq!(response_ttl(&r), Some(0));
        assert_eq!(response_ttl(&HeaderMap::new()), None);
    }

    #[test]
    fn partitions_and_config_errors() {
        let a = partition(
            PartitionBy::Consumer,
            Some("c1"),
            Some("g"),
            "1.2.3.4",
            Some("r"),
        );
        let b = partition(
            PartitionBy::Consumer,
            Some("c2"),
            Some("g"),
            "1.2.3.4",
            Some("r"),
        );
        assert_ne!(namespace("p", "m", &a), namespace("p", "m", &b));
        let g1 = partition(
            PartitionBy::ConsumerGroup,
            Some("c1"),
            Some("g"),
            "ip",
            None,
        );
        let g2 = partition(
            PartitionBy::ConsumerGroup,
            Some("c2"),
            Some("g"),
            "ip",
            None,
        );
        assert_eq!(g1, g2);
        assert!(
            !namespace("p", "m", &a).contains("c1"),
            "consumer ids stay out of keys"
        );
        let e = config(json!({"cache_ttl": 0, "message_countback": 0, "llm_format": "gemini"}))
            .validate();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "embeddings",
                "vectordb",
                "cache_ttl",
                "message_countback",
                "llm_format"
            ]
        );
    }
}

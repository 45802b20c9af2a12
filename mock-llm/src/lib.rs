//! A fast, deterministic mock of OpenAI-compatible LLM endpoints, with
//! per-request fault injection.
//!
//! Endpoints are chosen by path suffix (`.../chat/completions`,
//! `.../completions`, `.../embeddings`, `.../responses`, Anthropic's `.../v1/messages`,
//! Cohere's `.../v2/chat`, `.../v1/chat` (NDJSON streams), `.../v2/embed` and
//! `.../v1|v2/rerank`, Ollama's `.../api/chat` and `.../api/embed`,
//! text-generation-inference's `.../generate` and `.../generate_stream`, Hugging Face's
//! `.../pipeline/feature-extraction`, Bedrock's `.../model/{id}/converse[-stream]`, Gemini's `.../models/{model}:generateContent`,
//! `:streamGenerateContent`, `:batchEmbedContents`) plus `GET /health` and OAuth2 token
//! endpoints: `POST /token` (jwt-bearer grant, as Google's for service accounts), Azure's
//! instance metadata service `GET /metadata/identity/oauth2/token` (managed identities,
//! `Metadata: true` required) and Entra's `POST /{tenant}/oauth2/v2.0/token` (client
//! credentials with the secret [`AZURE_CLIENT_SECRET`]).
//!
//! OpenAI's non-chat APIs are served too (see the `api` module): files
//! (`…/files`, multipart uploads kept in memory), batches (`…/batches`, run at
//! once against the mock's own endpoints), assistants, threads and messages
//! (beta), audio speech (fake MP3/WAV bytes sent in frames), transcriptions and
//! translations, image generations and edits (a 1×1 PNG), and Sora videos
//! (`…/videos`, fake MP4). Their paths match on the tail as well, Azure's
//! `/openai/…?api-version=` and `/openai/deployments/{dep}/…` forms included.
//! The Realtime API's WebSocket (`…/realtime`, Azure's `/openai/realtime`) is served by the
//! `realtime` module: a session with text responses and Realtime usage.
//!
//! Long-running video jobs (the `video_jobs` module; see [`MockLlm::video_jobs`]):
//! - Veo on the Gemini API: `POST …/models/{model}:predictLongRunning` →
//!   `{"name": "models/{model}/operations/{id}"}`, polled with
//!   `GET …/models/{model}/operations/{id}`; a finished operation's
//!   `response.generateVideoResponse.generatedSamples[0].video.uri` is
//!   `http://{Host}/v1beta/files/{file}:download?alt=media`, served by
//!   `GET …/files/{file}:download?alt=media` (`video/mp4`). Key or token as for
//!   `generateContent`.
//! - Veo on Vertex AI: `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:predictLongRunning`
//!   → `{"name": "projects/{p}/locations/{l}/publishers/google/models/{model}/operations/{id}"}`,
//!   polled with `POST …/models/{model}:fetchPredictOperation` (`{"operationName"}`); the video
//!   comes inline (`response.videos[0].bytesBase64Encoded`).
//! - Nova Reel on Bedrock: `POST /async-invoke` (SigV4 `bedrock`) →
//!   `{"invocationArn": "arn:aws:bedrock:{region}:000000000000:async-invoke/{id}"}`, polled with
//!   `GET /async-invoke/{arn}` (`status` `Completed`, `InProgress` or `Failed`;
//!   `outputDataConfig.s3OutputDataConfig.s3Uri` is the submitted one plus `/{id}`); the video
//!   is the S3 object `{that s3Uri}/output.mp4`, served path-style by
//!   `GET /{bucket}/{key}/output.mp4` (SigV4 `s3` with `x-amz-content-sha256`; S3's XML errors).
//!
//! A job's prompt decides its fate when it is created: `[mock:failed]` ends it with an error,
//! `[mock:hang]` keeps it running forever, otherwise it has finished with one video: fake MP4
//! bytes (`\0\0\0\x18ftypmp42…`) that carry the prompt. Other markers (`status=`, `delay_ms=`,
//! …) act on the creating request as usual.
//! Faults come from the `x-mock` request header (`key=value` pairs separated
//! by `;` or `,`) or from `[mock:key=value]` markers in the prompt text; the
//! header wins. Keys: `status`, `delay_ms`, `chunk_delay_ms`, `chunks`,
//! `reply`, `disconnect_after`, `reset`, `hang`, `non_json`, `failed`, `tool`
//! (call the request's first tool), `split=N` (stream bytes re-cut into N-byte
//! frames, across event boundaries).
//!
//! Embeddings (every dialect) are deterministic unit vectors: a text's topic words
//! (a small fixed vocabulary: programming, mathematics, geography, cooking, health,
//! finance) set its direction, hash noise adds a little, so texts on one topic are close and
//! others far (for semantic routing tests).
//!
//! Bedrock requests must carry a valid AWS SigV4 signature (service `bedrock`, or `s3` for
//! the S3 object reads; any region and access key id) made with the secret access key
//! [`BEDROCK_SECRET_ACCESS_KEY`]; otherwise the answer is Bedrock's 403
//! (`x-amzn-errortype: InvalidSignatureException`, or
//! `MissingAuthenticationTokenException` without a signature). Streams come as
//! AWS event-stream frames; [`eventstream`] encodes them.

mod anthropic;
mod api;
mod assistants;
mod bedrock;
mod body;
mod cohere;
mod embeddings;
mod entra;
pub mod eventstream;
mod faults;
mod files;
mod gemini;
mod mcp;
mod media;
mod multipart;
mod ollama;
mod openai;
mod prompt;
mod realtime;
mod responses;
mod server;
mod sigv4;
mod tgi;
mod tools;
mod video_jobs;
mod websocket;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use server::serve;
pub use video_jobs::{VideoJob, VideoOutcome};

/// The client secret the mock's Entra token endpoint accepts (any other gets a 401).
pub const AZURE_CLIENT_SECRET: &str = "mock-azure-client-secret";

/// The AWS secret access key the mock checks Bedrock signatures with.
pub const BEDROCK_SECRET_ACCESS_KEY: &str = "mock-llm-bedrock-secret-access-key/EXAMPLE";

/// A running mock server; dropping it shuts the server and its connections
/// down.
#[derive(Debug)]
pub struct MockLlm {
    addr: SocketAddr,
    state: Arc<MockState>,
    task: JoinHandle<()>,
}

impl MockLlm {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    pub async fn start() -> std::io::Result<MockLlm> {
        MockLlm::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts a server on `addr`.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<MockLlm> {
        MockLlm::start_with(TcpListener::bind(addr).await?)
    }

    /// Starts a server on a listener the caller bound (e.g. a port it held closed until now).
    pub fn start_with(listener: TcpListener) -> std::io::Result<MockLlm> {
        let addr = listener.local_addr()?;
        let state = Arc::new(MockState::new());
        let task = tokio::spawn(serve(listener, Arc::clone(&state)));
        Ok(MockLlm { addr, state, task })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state, for callers that want to hold on to it.
    pub fn state(&self) -> &Arc<MockState> {
        &self.state
    }

    /// Every request received since the start or the last [`MockLlm::clear`],
    /// in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    /// The most recent request received.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.state.last_request()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.state.clear();
    }

    /// Turns request recording on (the default) or off.
    pub fn set_recording(&self, on: bool) {
        self.state.set_recording(on);
    }

    /// Access tokens issued so far by the token endpoints (Google's `/token`, Azure's
    /// metadata service and Entra's client credentials grant).
    pub fn token_fetches(&self) -> u64 {
        self.state.token_fetches.load(Ordering::Relaxed)
    }

    /// The video jobs started so far (Veo operations, Bedrock async invocations), oldest
    /// first, each with the request that started it.
    pub fn video_jobs(&self) -> Vec<VideoJob> {
        self.state.video_jobs()
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// State shared by all connections of one server: the request log and the id
/// counter.
#[derive(Debug)]
pub struct MockState {
    recording: AtomicBool,
    requests: Mutex<Vec<RecordedRequest>>,
    next_id: AtomicU64,
    /// Tokens issued by the token endpoints.
    pub(crate) token_fetches: AtomicU64,
    issued: Mutex<Vec<String>>,
    /// Files, batches, assistants, threads and videos created so far.
    pub(crate) api: Mutex<api::Store>,
    /// Veo operations and Bedrock async invocations.
    pub(crate) video: Mutex<video_jobs::Store>,
    /// Sessions of the MCP server.
    pub(crate) mcp_sessions: mcp::Sessions,
}

impl Default for MockState {
    fn default() -> MockState {
        MockState::new()
    }
}

impl MockState {
    /// Fresh state with recording on.
    pub fn new() -> MockState {
        MockState {
            recording: AtomicBool::new(true),
            requests: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            token_fetches: AtomicU64::new(0),
            issued: Mutex::new(Vec::new()),
            api: Mutex::new(api::Store::default()),
            video: Mutex::new(video_jobs::Store::default()),
            mcp_sessions: mcp::Sessions::default(),
        }
    }

    /// The video jobs started so far, oldest first.
    pub fn video_jobs(&self) -> Vec<VideoJob> {
        self.video_store().jobs()
    }

    /// Every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.log().clone()
    }

    /// The most recent recorded request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.log().last().cloned()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.log().clear();
    }

    /// Turns request recording on or off.
    pub fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    /// Whether requests are being recorded.
    pub fn is_recording(&self) -> bool {
        self.recording.load(Ordering::Relaxed)
    }

    /// Whether a token endpoint issued `token`.
    pub(crate) fn issued_token(&self, token: &str) -> bool {
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|t| t == token)
    }

    pub(crate) fn remember_token(&self, token: &str) {
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(token.to_owned());
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn record(&self, parts: &http::request::Parts, body: &Bytes) {
        if !self.is_recording() {
            return;
        }
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let request = RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path,
            headers,
            body: body.clone(),
        };
        self.log().push(request);
    }

    fn log(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        // A panic elsewhere while holding the lock cannot leave the Vec
        // half-updated, so the data is still good.
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path plus `?query` when there is one.
    pub path: String,
    /// Headers in arrival order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The complete request body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// First value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let (_, query) = self.path.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }
}

/// Form-style decoding (`+` is a space); malformed escapes are kept as-is.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(path: &str) -> RecordedRequest {
        RecordedRequest {
            method: "POST".into(),
            path: path.into(),
            headers: vec![("x-api-key".into(), "k".into())],
            body: Bytes::from_static(b"{\"a\":1}"),
        }
    }

    #[test]
    fn query_params_are_decoded() {
        let r = recorded("/v1/chat/completions?api-version=2024-10-21&q=a+b%2Fc&flag&bad=%zz");
        assert_eq!(r.query_param("api-version").as_deref(), Some("2024-10-21"));
        assert_eq!(r.query_param("q").as_deref(), Some("a b/c"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(r.query_param("missing"), None);
        assert_eq!(recorded("/x").query_param("a"), None);
    }

    #[test]
    fn header_and_json_helpers() {
        let r = recorded("/x");
        assert_eq!(r.header("X-API-Key"), Some("k"));
        assert_eq!(r.header("other"), None);
        assert_eq!(r.json(), Some(serde_json::json!({"a": 1})));
    }
}

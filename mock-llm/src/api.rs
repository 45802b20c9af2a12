//! OpenAI's non-chat APIs: files, batches, assistants (beta), audio, images and
//! videos. This module routes them, keeps their objects in memory and holds the
//! helpers their handlers share; the handlers live in [`crate::files`],
//! [`crate::assistants`] and [`crate::media`].
//!
//! Paths match on their tail, so `/v1/files`, `/openai/files?api-version=…` and
//! `/openai/deployments/{dep}/audio/speech` all work. Objects live in bounded
//! in-memory lists (the oldest is evicted first), one store per server.

// Handlers return error responses through `Err` so `?` can end them early; they
// are built once per request, so boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::sync::{MutexGuard, PoisonError};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::MockBody;
use crate::faults::Directives;
use crate::multipart::{self, Form};
use crate::server::json_response;
use crate::MockState;

/// Most files kept; uploading one more evicts the oldest.
pub(crate) const MAX_FILES: usize = 64;
/// Largest file accepted (uploads beyond it get a 400).
pub(crate) const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// Most batches, assistants, threads, messages or videos kept, each.
pub(crate) const MAX_OBJECTS: usize = 256;

/// One endpoint of these APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    FileCreate,
    FileList,
    FileGet,
    FileContent,
    FileDelete,
    BatchCreate,
    BatchList,
    BatchGet,
    BatchCancel,
    AssistantCreate,
    AssistantList,
    AssistantGet,
    AssistantDelete,
    ThreadCreate,
    ThreadGet,
    ThreadDelete,
    MessageCreate,
    MessageList,
    Speech,
    Transcription,
    Translation,
    ImageGenerate,
    ImageEdit,
    /// `GET …/images/{name}.png`: the image behind a `response_format: url` answer.
    ImageContent,
    VideoCreate,
    VideoList,
    VideoGet,
    VideoContent,
    VideoDelete,
}

impl Endpoint {
    /// The endpoint `method` and `path` (no query) ask for, by the path's last segments.
    pub(crate) fn of(method: &http::Method, path: &str) -> Option<Endpoint> {
        use Endpoint::*;
        let path = path.trim_end_matches('/');
        let mut segments = path.rsplit('/');
        let last = segments.next()?;
        let prev = segments.next().unwrap_or_default();
        let prev2 = segments.next().unwrap_or_default();
        let id = |s: &str| !s.is_empty();
        Some(match (method.as_str(), prev2, prev, last) {
            // Three segments: collection, id, action.
            ("GET", "files", f, "content") if id(f) => FileContent,
            ("POST", "batches", b, "cancel") if id(b) => BatchCancel,
            ("POST", "threads", t, "messages") if id(t) => MessageCreate,
            ("GET", "threads", t, "messages") if id(t) => MessageList,
            ("GET", "videos", v, "content") if id(v) => VideoContent,
            // Fixed pairs.
            ("POST", _, "audio", "speech") => Speech,
            ("POST", _, "audio", "transcriptions") => Transcription,
            ("POST", _, "audio", "translations") => Translation,
            ("POST", _, "images", "generations") => ImageGenerate,
            ("POST", _, "images", "edits") => ImageEdit,
            // Kong's route type is named `videos/generations`.
            ("POST", _, "videos", "generations") => VideoCreate,
            ("GET", _, "images", name) if name.ends_with(".png") => ImageContent,
            // Collection and id.
            ("GET", _, "files", f) if id(f) => FileGet,
            ("DELETE", _, "files", f) if id(f) => FileDelete,
            ("GET", _, "batches", b) if id(b) => BatchGet,
            ("GET", _, "assistants", a) if id(a) => AssistantGet,
            ("DELETE", _, "assistants", a) if id(a) => AssistantDelete,
            ("GET", _, "threads", t) if id(t) => ThreadGet,
            ("DELETE", _, "threads", t) if id(t) => ThreadDelete,
            ("GET", _, "videos", v) if id(v) => VideoGet,
            ("DELETE", _, "videos", v) if id(v) => VideoDelete,
            // Collections.
            ("POST", _, _, "files") => FileCreate,
            ("GET", _, _, "files") => FileList,
            ("POST", _, _, "batches") => BatchCreate,
            ("GET", _, _, "batches") => BatchList,
            ("POST", _, _, "assistants") => AssistantCreate,
            ("GET", _, _, "assistants") => AssistantList,
            ("POST", _, _, "threads") => ThreadCreate,
            ("POST", _, _, "videos") => VideoCreate,
            ("GET", _, _, "videos") => VideoList,
            _ => return None,
        })
    }

    /// Whether the request body may carry `[mock:...]` markers in `prompt` or `input`.
    pub(crate) fn has_json_prompt(self) -> bool {
        matches!(
            self,
            Endpoint::Speech | Endpoint::ImageGenerate | Endpoint::VideoCreate
        )
    }
}

/// What a handler gets: the request and the server's state.
pub(crate) struct Req<'a> {
    pub state: &'a MockState,
    pub parts: &'a http::request::Parts,
    pub body: &'a Bytes,
    pub directives: &'a Directives,
    /// Unix seconds.
    pub now: u64,
}

/// A handler's answer; errors are answers too, so `?` can return them early.
pub(crate) type Answer = Result<Response<MockBody>, Response<MockBody>>;

impl Req<'_> {
    /// The path segment `from_end` places before the last (0 is the last).
    pub(crate) fn segment(&self, from_end: usize) -> &str {
        self.parts
            .uri
            .path()
            .trim_end_matches('/')
            .rsplit('/')
            .nth(from_end)
            .unwrap_or_default()
    }

    /// First value of query parameter `name`, percent-decoded.
    pub(crate) fn query(&self, name: &str) -> Option<String> {
        self.parts.uri.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (crate::percent_decode(key) == name).then(|| crate::percent_decode(value))
        })
    }

    fn content_type(&self) -> &str {
        self.parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Whether the body is a multipart form (by its content type).
    pub(crate) fn is_multipart(&self) -> bool {
        self.content_type()
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/")
    }

    /// The body as a JSON object, or OpenAI's 400.
    pub(crate) fn json(&self) -> Result<Value, Response<MockBody>> {
        match serde_json::from_slice::<Value>(self.body) {
            Ok(json) if json.is_object() => Ok(json),
            Ok(_) => Err(invalid(
                "mock-llm: request body must be a JSON object",
                None,
            )),
            Err(err) => Err(invalid(
                &format!(
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.) ({err})"
                ),
                None,
            )),
        }
    }

    /// The body as a multipart form, or OpenAI's 400 (missing or bad boundary,
    /// malformed body).
    pub(crate) fn form(&self) -> Result<Form, Response<MockBody>> {
        multipart::parse(self.content_type(), self.body)
            .map_err(|err| invalid(&format!("mock-llm: invalid multipart body: {err}"), None))
    }

    /// The fields of a JSON body or of a form's text parts, as JSON strings
    /// (for endpoints that take either, like `POST /videos`).
    pub(crate) fn fields(&self) -> Result<(Value, Option<Form>), Response<MockBody>> {
        if !self.is_multipart() {
            return Ok((self.json()?, None));
        }
        let form = self.form()?;
        let mut fields = serde_json::Map::new();
        for part in form.parts.iter().filter(|p| p.filename.is_none()) {
            fields
                .entry(part.name.clone())
                .or_insert_with(|| Value::String(part.text()));
        }
        Ok((Value::Object(fields), Some(form)))
    }

    /// The `Host` the client used, for absolute URLs back to the mock.
    pub(crate) fn host(&self) -> &str {
        self.parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1")
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.state
            .api
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.state.next_id()
    }
}

/// Answers `endpoint`.
pub(crate) fn handle(endpoint: Endpoint, req: &Req<'_>) -> Response<MockBody> {
    use Endpoint::*;
    let answer = match endpoint {
        FileCreate => crate::files::create(req),
        FileList => crate::files::list(req),
        FileGet => crate::files::get(req),
        FileContent => crate::files::content(req),
        FileDelete => crate::files::delete(req),
        BatchCreate => crate::files::batch_create(req),
        BatchList => crate::files::batch_list(req),
        BatchGet => crate::files::batch_get(req),
        BatchCancel => crate::files::batch_cancel(req),
        AssistantCreate => crate::assistants::create(req),
        AssistantList => crate::assistants::list(req),
        AssistantGet => crate::assistants::get(req),
        AssistantDelete => crate::assistants::delete(req),
        ThreadCreate => crate::assistants::thread_create(req),
        ThreadGet => crate::assistants::thread_get(req),
        ThreadDelete => crate::assistants::thread_delete(req),
        MessageCreate => crate::assistants::message_create(req),
        MessageList => crate::assistants::message_list(req),
        Speech => crate::media::speech(req),
        Transcription => crate::media::transcription(req, false),
        Translation => crate::media::transcription(req, true),
        ImageGenerate => crate::media::image_generate(req),
        ImageEdit => crate::media::image_edit(req),
        ImageContent => Ok(crate::media::png_response()),
        VideoCreate => crate::media::video_create(req),
        VideoList => crate::media::video_list(req),
        VideoGet => crate::media::video_get(req),
        VideoContent => crate::media::video_content(req),
        VideoDelete => crate::media::video_delete(req),
    };
    answer.unwrap_or_else(|error| error)
}

/// A file as uploaded (or as a batch wrote it).
#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    pub object: Value,
    pub data: Bytes,
    pub content_type: &'static str,
}

/// Objects of one kind, oldest first, at most `cap` of them.
#[derive(Debug)]
pub(crate) struct Bounded<T> {
    items: VecDeque<(String, T)>,
    cap: usize,
}

impl<T> Bounded<T> {
    pub(crate) fn new(cap: usize) -> Bounded<T> {
        Bounded {
            items: VecDeque::new(),
            cap,
        }
    }

    pub(crate) fn push(&mut self, id: String, item: T) {
        while self.items.len() >= self.cap {
            self.items.pop_front();
        }
        self.items.push_back((id, item));
    }

    pub(crate) fn get(&self, id: &str) -> Option<&T> {
        self.items.iter().find(|(i, _)| i == id).map(|(_, t)| t)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        self.items.iter_mut().find(|(i, _)| i == id).map(|(_, t)| t)
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<T> {
        let at = self.items.iter().position(|(i, _)| i == id)?;
        self.items.remove(at).map(|(_, t)| t)
    }

    /// Items oldest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.items.iter().map(|(_, t)| t)
    }

    /// Drops every item `keep` says no to.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.items.retain(|(_, t)| keep(t));
    }
}

/// Everything these APIs created, per server.
#[derive(Debug)]
pub(crate) struct Store {
    pub files: Bounded<StoredFile>,
    pub batches: Bounded<Value>,
    pub assistants: Bounded<Value>,
    pub threads: Bounded<Value>,
    pub messages: Bounded<Value>,
    pub videos: Bounded<Value>,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            files: Bounded::new(MAX_FILES),
            batches: Bounded::new(MAX_OBJECTS),
            assistants: Bounded::new(MAX_OBJECTS),
            threads: Bounded::new(MAX_OBJECTS),
            messages: Bounded::new(MAX_OBJECTS),
            videos: Bounded::new(MAX_OBJECTS),
        }
    }
}

/// An error in OpenAI's shape, `param` and `code` included (null when absent).
pub(crate) fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<MockBody> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
    )
}

/// 400 `invalid_request_error`.
pub(crate) fn invalid(message: &str, param: Option<&str>) -> Response<MockBody> {
    error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        param,
        None,
    )
}

/// 400 for a missing required parameter, as OpenAI words it.
pub(crate) fn missing(param: &str) -> Response<MockBody> {
    invalid(
        &format!("Missing required parameter: '{param}'."),
        Some(param),
    )
}

/// 404 `invalid_request_error`.
pub(crate) fn not_found(message: &str, param: Option<&str>) -> Response<MockBody> {
    error(
        StatusCode::NOT_FOUND,
        message,
        "invalid_request_error",
        param,
        None,
    )
}

/// A 200 JSON answer.
pub(crate) fn ok(value: &Value) -> Answer {
    Ok(json_response(StatusCode::OK, value))
}

/// A 200 answer with raw bytes of `content_type`.
pub(crate) fn bytes_response(data: Bytes, content_type: &'static str) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(data));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A string field of `body` that must be present and non-empty.
pub(crate) fn required<'a>(body: &'a Value, name: &str) -> Result<&'a str, Response<MockBody>> {
    match body.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(missing(name)),
        Some(other) => Err(invalid(
            &format!("Invalid type for '{name}': expected a string, but got {other} instead."),
            Some(name),
        )),
    }
}

/// A non-negative integer field, given as a number or (in forms) as a string.
pub(crate) fn uint(body: &Value, name: &str) -> Option<u64> {
    match body.get(name)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A cursor page (`{object:"list", data, first_id, last_id, has_more}`) of
/// `items` (oldest first) honouring `order` (default `desc`), `after` and `limit`
/// (default 20, at most 100) from the query.
pub(crate) fn page(req: &Req<'_>, items: Vec<Value>) -> Value {
    let mut items = items;
    if req.query("order").as_deref() != Some("asc") {
        items.reverse();
    }
    if let Some(after) = req.query("after") {
        if let Some(at) = items.iter().position(|v| v["id"] == after.as_str()) {
            items.drain(..=at);
        }
    }
    let limit = req
        .query("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let has_more = items.len() > limit;
    items.truncate(limit);
    json!({
        "object": "list",
        "first_id": items.first().map(|v| v["id"].clone()),
        "last_id": items.last().map(|v| v["id"].clone()),
        "has_more": has_more,
        "data": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn routes_by_tail() {
        use Endpoint::*;
        let cases = [
            ("POST", "/v1/files", Some(FileCreate)),
            ("GET", "/openai/files", Some(FileList)),
            ("GET", "/v1/files/file-mock-1", Some(FileGet)),
            ("GET", "/v1/files/file-mock-1/content", Some(FileContent)),
            ("DELETE", "/v1/files/file-mock-1/", Some(FileDelete)),
            ("POST", "/v1/files/file-mock-1", None),
            ("POST", "/v1/batches", Some(BatchCreate)),
            ("GET", "/v1/batches", Some(BatchList)),
            ("GET", "/v1/batches/batch_mock_2", Some(BatchGet)),
            ("POST", "/v1/batches/batch_mock_2/cancel", Some(BatchCancel)),
            ("POST", "/v1/assistants", Some(AssistantCreate)),
            ("GET", "/v1/assistants/asst_1", Some(AssistantGet)),
            ("POST", "/v1/threads", Some(ThreadCreate)),
            ("POST", "/v1/threads/thread_1/messages", Some(MessageCreate)),
            ("GET", "/v1/threads/thread_1/messages", Some(MessageList)),
            ("POST", "/v1/audio/speech", Some(Speech)),
            ("POST", "/openai/deployments/tts/audio/speech", Some(Speech)),
            ("POST", "/x/audio/transcriptions", Some(Transcription)),
            ("POST", "/v1/audio/translations", Some(Translation)),
            ("POST", "/v1/images/generations", Some(ImageGenerate)),
            ("POST", "/v1/images/edits", Some(ImageEdit)),
            ("GET", "/v1/images/img_mock_1_0.png", Some(ImageContent)),
            ("POST", "/v1/videos", Some(VideoCreate)),
            ("POST", "/v1/videos/generations", Some(VideoCreate)),
            ("GET", "/v1/videos/video_mock_1", Some(VideoGet)),
            ("GET", "/v1/videos/video_mock_1/content", Some(VideoContent)),
            ("DELETE", "/v1/videos/video_mock_1", Some(VideoDelete)),
            ("POST", "/v1/chat/completions", None),
            ("POST", "/v1/messages", None),
            ("GET", "/health", None),
        ];
        for (method, path, want) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(Endpoint::of(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn bounded_evicts_oldest() {
        let mut b = Bounded::new(2);
        b.push("a".into(), 1);
        b.push("b".into(), 2);
        b.push("c".into(), 3);
        assert_eq!(b.get("a"), None);
        assert_eq!(b.iter().copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(b.remove("b"), Some(2));
        assert_eq!(b.remove("b"), None);
    }
}

//! Long-running video jobs: Google's Veo on the Gemini API (AI Studio) and on Vertex AI,
//! and Amazon Nova Reel through Bedrock's async invocations, whose output lands in S3.
//!
//! - AI Studio: `POST …/models/{model}:predictLongRunning` answers
//!   `{"name": "models/{model}/operations/{id}"}`; `GET …/models/{model}/operations/{id}`
//!   polls it; a finished operation names `http://{Host}/v1beta/files/{file}:download?alt=media`,
//!   which `GET …/files/{file}:download?alt=media` serves. API key or bearer token as for
//!   `generateContent` ([`gemini::check_auth`]); errors in Google's shape.
//! - Vertex AI: `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:predictLongRunning`
//!   answers `{"name": "projects/{p}/locations/{l}/publishers/google/models/{model}/operations/{id}"}`;
//!   `POST …:fetchPredictOperation` with `{"operationName"}` polls it and carries the video
//!   inline (`bytesBase64Encoded`).
//! - Bedrock: `POST /async-invoke` (SigV4, service `bedrock`) answers `{"invocationArn"}`;
//!   `GET /async-invoke/{arn}` (the ARN percent-encoded as one segment, or raw) polls it;
//!   a completed job's video is the S3 object `{s3Uri}/{id}/output.mp4`, which
//!   `GET /{bucket}/{key}` serves path-style (SigV4, service `s3`, `x-amz-content-sha256`).
//!
//! A job's fate is decided when it is created, by markers in its prompt: `[mock:failed]`
//! makes it finish with an error, `[mock:hang]` keeps it running forever, otherwise it
//! finishes at once with one video. The video is a small fake MP4 ([`fake_mp4`]) that
//! carries the prompt. Each job remembers its request (see [`crate::MockLlm::video_jobs`]).

// Handlers return error responses through `Err` so `?` can end them early; they
// are built once per request, so boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::api::{Answer, Bounded, Req, MAX_OBJECTS};
use crate::body::MockBody;
use crate::faults::Directives;
use crate::{bedrock, gemini, sigv4, MockState};

/// The `@type` of a finished AI Studio operation's response.
const STUDIO_RESPONSE: &str =
    "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse";
/// The `@type` of a finished Vertex AI operation's response.
const VERTEX_RESPONSE: &str =
    "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse";
/// What a failed job says (Google's `error.message`, Bedrock's `failureMessage`).
const FAILED_MESSAGE: &str = "mock video generation failed";
/// The account in the ARNs the mock makes up.
const ACCOUNT: &str = "000000000000";

/// One endpoint of these APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST …/models/{model}:predictLongRunning`, AI Studio or Vertex AI.
    VeoCreate,
    /// `POST …/projects/…/models/{model}:fetchPredictOperation` (Vertex AI).
    VeoFetch,
    /// `GET …/models/{model}/operations/{id}` (AI Studio).
    VeoOperation,
    /// `GET …/files/{id}:download` (AI Studio).
    VeoDownload,
    /// `POST …/async-invoke` (Bedrock).
    ReelCreate,
    /// `GET …/async-invoke/{arn}` (Bedrock).
    ReelGet,
    /// `GET /{bucket}/{key…}/output.mp4` (S3, path style).
    S3Object,
}

impl Endpoint {
    /// The endpoint `method` and `path` (no query, no trailing `/`) ask for, S3 objects
    /// aside (see [`Endpoint::s3_object`]: they must not shadow OpenAI's paths).
    pub(crate) fn of(method: &Method, path: &str) -> Option<Endpoint> {
        if *method == Method::POST {
            if path.ends_with("/async-invoke") {
                return Some(Endpoint::ReelCreate);
            }
            let (head, verb) = path.rsplit_once(':')?;
            let endpoint = match verb {
                "predictLongRunning" => Endpoint::VeoCreate,
                "fetchPredictOperation" => Endpoint::VeoFetch,
                _ => return None,
            };
            let target = Target::of(head)?;
            return (target.vertex || endpoint == Endpoint::VeoCreate).then_some(endpoint);
        }
        if *method != Method::GET {
            return None;
        }
        if path
            .split_once("/async-invoke/")
            .is_some_and(|(_, arn)| !arn.is_empty())
        {
            return Some(Endpoint::ReelGet);
        }
        if studio_operation(path).is_some() {
            return Some(Endpoint::VeoOperation);
        }
        if file_id(path).is_some() {
            return Some(Endpoint::VeoDownload);
        }
        None
    }

    /// `GET /{bucket}/{…}/output.mp4`: an S3 object read, path style.
    pub(crate) fn s3_object(method: &Method, path: &str) -> bool {
        *method == Method::GET
            && path
                .strip_prefix('/')
                .and_then(|p| p.strip_suffix("/output.mp4"))
                .is_some_and(|p| p.split('/').count() >= 2 && !p.split('/').any(str::is_empty))
    }

    /// Google's endpoints (Gemini API key or bearer token; Google's error shape).
    pub(crate) fn is_google(self) -> bool {
        matches!(
            self,
            Endpoint::VeoCreate
                | Endpoint::VeoFetch
                | Endpoint::VeoOperation
                | Endpoint::VeoDownload
        )
    }

    /// Scans the prompt of a creating request for `[mock:...]` markers. `failed` and `hang`
    /// decide the job's fate, not the request's, so they are taken back out.
    pub(crate) fn scan(self, body: &Value, directives: &mut Directives) {
        let prompts: Vec<&str> = match self {
            Endpoint::VeoCreate => veo_prompts(body),
            Endpoint::ReelCreate => reel_text(body).into_iter().collect(),
            _ => return,
        };
        for prompt in prompts {
            directives.apply_markers(prompt);
        }
        directives.failed = false;
        directives.hang = false;
    }
}

/// Where a Veo model lives: AI Studio's `models/{model}` or Vertex AI's
/// `projects/{p}/locations/{l}/publishers/google/models/{model}`.
struct Target {
    resource: String,
    vertex: bool,
}

impl Target {
    /// From a path up to the model (`…/models/{model}`); `None` when it names none, or names
    /// a Vertex AI project without a location and Google's publisher.
    fn of(head: &str) -> Option<Target> {
        let (before, model) = head.rsplit_once("/models/")?;
        if model.is_empty() || model.contains('/') {
            return None;
        }
        let Some(at) = before.find("/projects/") else {
            return Some(Target {
                resource: format!("models/{model}"),
                vertex: false,
            });
        };
        let segments: Vec<&str> = before[at + 1..].split('/').collect();
        match segments[..] {
            ["projects", project, "locations", location, "publishers", "google"]
                if !project.is_empty() && !location.is_empty() =>
            {
                Some(Target {
                    resource: format!(
                        "projects/{project}/locations/{location}/publishers/google/models/{model}"
                    ),
                    vertex: true,
                })
            }
            _ => None,
        }
    }
}

/// The operation name an AI Studio poll path ends with (`models/{model}/operations/{id}`).
fn studio_operation(path: &str) -> Option<String> {
    let (head, id) = path.rsplit_once("/operations/")?;
    let (_, model) = head.rsplit_once("/models/")?;
    let ok = |s: &str| !s.is_empty() && !s.contains('/') && !s.contains(':');
    (ok(model) && ok(id)).then(|| format!("models/{model}/operations/{id}"))
}

/// The file id of `…/files/{id}:download`.
fn file_id(path: &str) -> Option<&str> {
    let (_, rest) = path.rsplit_once("/files/")?;
    let id = rest.strip_suffix(":download")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// The prompts of a Veo request (`instances[].prompt`).
fn veo_prompts(body: &Value) -> Vec<&str> {
    body.get("instances")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("prompt")?.as_str())
        .collect()
}

/// The text of a Nova Reel request (`modelInput.textToVideoParams.text`).
fn reel_text(body: &Value) -> Option<&str> {
    body.pointer("/modelInput/textToVideoParams/text")?.as_str()
}

// ---------------------------------------------------------------------------
// Jobs

/// How a job ends, decided at creation by its prompt's markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoOutcome {
    /// Finished with one video.
    Succeeded,
    /// Finished with an error (`[mock:failed]`).
    Failed,
    /// Never finishes (`[mock:hang]`).
    Running,
}

impl VideoOutcome {
    fn of(prompt: &str) -> VideoOutcome {
        let mut d = Directives::default();
        d.apply_markers(prompt);
        if d.failed {
            VideoOutcome::Failed
        } else if d.hang {
            VideoOutcome::Running
        } else {
            VideoOutcome::Succeeded
        }
    }
}

/// A video job the mock was asked to start.
#[derive(Debug, Clone)]
pub struct VideoJob {
    /// `models/{model}/operations/{id}` (AI Studio), `projects/…/operations/{id}`
    /// (Vertex AI) or the invocation ARN (Bedrock).
    pub name: String,
    /// The model: from the path (Veo) or `modelId` (Bedrock).
    pub model: String,
    /// `instances[0].prompt` (Veo) or `modelInput.textToVideoParams.text` (Bedrock).
    pub prompt: String,
    /// The creating request's JSON body as received (`parameters`, `modelInput`, …).
    pub request: Value,
    pub outcome: VideoOutcome,
    /// Unix seconds.
    pub created: u64,
}

#[derive(Debug, Clone)]
enum Provider {
    /// AI Studio; `file` is the finished video's file id.
    Studio {
        file: Option<String>,
    },
    Vertex,
    Bedrock {
        model_id: String,
        region: String,
        /// The submitted `s3Uri` plus `/{id}`.
        output_uri: String,
        client_token: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    job: VideoJob,
    provider: Provider,
}

/// The jobs of one server, keyed by name (operation name or ARN), and the AI Studio files
/// (file id → operation name).
#[derive(Debug)]
pub(crate) struct Store {
    jobs: Bounded<Entry>,
    files: Bounded<String>,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            jobs: Bounded::new(MAX_OBJECTS),
            files: Bounded::new(MAX_OBJECTS),
        }
    }
}

impl Store {
    /// Every job, oldest first.
    pub(crate) fn jobs(&self) -> Vec<VideoJob> {
        self.jobs.iter().map(|e| e.job.clone()).collect()
    }
}

/// The fake MP4 of a job: an `ftyp` box (`mp42`), a `free` box holding the prompt, and an
/// `mdat` box of filler. Deterministic: one prompt, one byte string.
pub(crate) fn fake_mp4(prompt: &str) -> Vec<u8> {
    let box_size = |payload: usize| u32::try_from(8 + payload).unwrap_or(u32::MAX).to_be_bytes();
    let filler = 2048;
    let mut out = Vec::with_capacity(24 + 8 + prompt.len() + 8 + filler);
    out.extend_from_slice(b"\0\0\0\x18ftypmp42\0\0\0\0isommp42");
    out.extend_from_slice(&box_size(prompt.len()));
    out.extend_from_slice(b"free");
    out.extend_from_slice(prompt.as_bytes());
    out.extend_from_slice(&box_size(filler));
    out.extend_from_slice(b"mdat");
    out.extend((0..filler).map(|i| (i * 131 % 251) as u8));
    out
}

fn video_response(prompt: &str) -> Response<MockBody> {
    crate::api::bytes_response(Bytes::from(fake_mp4(prompt)), "video/mp4")
}

// ---------------------------------------------------------------------------
// Routing, authentication, injected errors

/// Answers `endpoint`.
pub(crate) fn handle(endpoint: Endpoint, req: &Req<'_>) -> Response<MockBody> {
    let answer = match endpoint {
        Endpoint::VeoCreate => veo_create(req),
        Endpoint::VeoFetch => veo_fetch(req),
        Endpoint::VeoOperation => veo_operation(req),
        Endpoint::VeoDownload => veo_download(req),
        Endpoint::ReelCreate => reel_create(req),
        Endpoint::ReelGet => reel_get(req),
        Endpoint::S3Object => s3_object(req),
    };
    answer.unwrap_or_else(|error| error)
}

/// AWS's check of a Bedrock or S3 request, before anything else; `None` lets it through.
pub(crate) fn aws_auth(
    endpoint: Endpoint,
    parts: &Parts,
    body: &[u8],
) -> Option<Response<MockBody>> {
    let secret = crate::BEDROCK_SECRET_ACCESS_KEY;
    match endpoint {
        Endpoint::ReelCreate | Endpoint::ReelGet => {
            let refusal = sigv4::verify(parts, body, "bedrock", secret, SystemTime::now()).err()?;
            Some(bedrock::error(
                StatusCode::FORBIDDEN,
                refusal.kind,
                &refusal.message,
            ))
        }
        Endpoint::S3Object => {
            let Some(declared) = parts
                .headers
                .get("x-amz-content-sha256")
                .and_then(|v| v.to_str().ok())
            else {
                return Some(s3_error(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    "Missing required header for this request: x-amz-content-sha256",
                    "",
                ));
            };
            let actual = sigv4::sha256_hex(body);
            if declared != "UNSIGNED-PAYLOAD" && declared != actual {
                return Some(s3_error(
                    StatusCode::BAD_REQUEST,
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                    &format!(
                        "<ClientComputedContentSHA256>{}</ClientComputedContentSHA256><S3ComputedContentSHA256>{actual}</S3ComputedContentSHA256>",
                        xml_escape(declared)
                    ),
                ));
            }
            let refusal = sigv4::verify(parts, body, "s3", secret, SystemTime::now()).err()?;
            let code = match refusal.kind {
                "InvalidSignatureException" => "SignatureDoesNotMatch",
                _ => "AccessDenied",
            };
            Some(s3_error(StatusCode::FORBIDDEN, code, &refusal.message, ""))
        }
        _ => None,
    }
}

/// An injected status (`x-mock: status=…` or `[mock:status=…]`) in the provider's shape.
pub(crate) fn injected(
    endpoint: Endpoint,
    status: StatusCode,
    message: &str,
) -> Response<MockBody> {
    match endpoint {
        Endpoint::ReelCreate | Endpoint::ReelGet => bedrock::injected(status, message),
        Endpoint::S3Object => {
            let code = match status.as_u16() {
                403 => "AccessDenied",
                404 => "NoSuchKey",
                429 | 503 => "SlowDown",
                400..=499 => "InvalidRequest",
                _ => "InternalError",
            };
            s3_error(status, code, message, "")
        }
        _ => gemini::error(status, message),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// S3's XML error.
fn s3_error(status: StatusCode, code: &str, message: &str, extra: &str) -> Response<MockBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message>{extra}<RequestId>MOCKREQUEST0001</RequestId><HostId>mock-llm</HostId></Error>",
        xml_escape(message)
    );
    let mut r = Response::new(MockBody::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    r
}

/// The body as a JSON object, or Google's 400.
fn google_json(req: &Req<'_>) -> Result<Value, Response<MockBody>> {
    match serde_json::from_slice::<Value>(req.body) {
        Ok(json) if json.is_object() => Ok(json),
        Ok(_) => Err(google_invalid(
            "Invalid JSON payload received. Expected an object.",
        )),
        Err(err) => Err(google_invalid(&format!(
            "Invalid JSON payload received. {err}"
        ))),
    }
}

fn google_invalid(message: &str) -> Response<MockBody> {
    gemini::error(StatusCode::BAD_REQUEST, message)
}

fn google_not_found(message: &str) -> Response<MockBody> {
    gemini::error(StatusCode::NOT_FOUND, message)
}

fn path<'a>(req: &'a Req<'_>) -> &'a str {
    req.parts.uri.path().trim_end_matches('/')
}

// ---------------------------------------------------------------------------
// Veo

/// What Veo refuses before starting: no prompt, parameters of the wrong type or out of range.
fn check_veo(body: &Value) -> Result<&str, String> {
    let instance = body
        .get("instances")
        .and_then(Value::as_array)
        .and_then(|i| i.first())
        .ok_or("* PredictLongRunningRequest.instances: instances is required")?;
    let prompt = instance
        .get("prompt")
        .and_then(Value::as_str)
        .ok_or("* instances[0].prompt: a text prompt is required")?;
    if instance.get("image").is_some_and(|i| !i.is_object()) {
        return Err("* instances[0].image: must be an object".into());
    }
    let Some(parameters) = body.get("parameters") else {
        return Ok(prompt);
    };
    let parameters = parameters
        .as_object()
        .ok_or("* PredictLongRunningRequest.parameters: must be an object")?;
    let one_of = |name: &str, allowed: &[&str]| -> Result<(), String> {
        match parameters.get(name) {
            None => Ok(()),
            Some(Value::String(v)) if allowed.contains(&v.as_str()) => Ok(()),
            Some(v) => Err(format!(
                "* parameters.{name}: {v} is not supported; use one of {}",
                allowed.join(", ")
            )),
        }
    };
    one_of("aspectRatio", &["16:9", "9:16"])?;
    one_of("resolution", &["720p", "1080p"])?;
    let int_in = |name: &str, lo: u64, hi: u64| -> Result<(), String> {
        match parameters.get(name) {
            None => Ok(()),
            Some(v) if v.as_u64().is_some_and(|n| (lo..=hi).contains(&n)) => Ok(()),
            Some(v) => Err(format!(
                "* parameters.{name}: {v} is out of range; it must be an integer from {lo} to {hi}"
            )),
        }
    };
    int_in("durationSeconds", 4, 8)?;
    int_in("sampleCount", 1, 4)?;
    int_in("seed", 0, u64::from(u32::MAX))?;
    if parameters
        .get("negativePrompt")
        .is_some_and(|v| !v.is_string())
    {
        return Err("* parameters.negativePrompt: must be a string".into());
    }
    Ok(prompt)
}

/// `POST …:predictLongRunning`.
fn veo_create(req: &Req<'_>) -> Answer {
    let head = path(req).rsplit_once(':').map_or("", |(h, _)| h);
    let target = Target::of(head).ok_or_else(|| google_not_found("Model not found."))?;
    let body = google_json(req)?;
    let prompt = check_veo(&body).map_err(|m| google_invalid(&m))?.to_owned();
    let n = req.next_id();
    let name = format!("{}/operations/mockop{n:08}", target.resource);
    let outcome = VideoOutcome::of(&prompt);
    let provider = match target.vertex {
        true => Provider::Vertex,
        false => {
            let file = (outcome == VideoOutcome::Succeeded).then(|| format!("mockvideo{n:08}"));
            Provider::Studio { file }
        }
    };
    let model = target
        .resource
        .rsplit_once("/models/")
        .map_or(target.resource.as_str(), |(_, m)| m)
        .trim_start_matches("models/")
        .to_owned();
    let job = VideoJob {
        name: name.clone(),
        model,
        prompt,
        request: body,
        outcome,
        created: req.now,
    };
    let mut store = req.state.video_store();
    if let Provider::Studio { file: Some(file) } = &provider {
        store.files.push(file.clone(), name.clone());
    }
    store.jobs.push(name.clone(), Entry { job, provider });
    drop(store);
    crate::api::ok(&json!({ "name": name }))
}

fn unfinished_or_failed(job: &VideoJob) -> Option<Value> {
    match job.outcome {
        VideoOutcome::Running => Some(json!({"name": job.name, "done": false})),
        VideoOutcome::Failed => Some(json!({"name": job.name, "done": true,
            "error": {"code": 3, "message": FAILED_MESSAGE}})),
        VideoOutcome::Succeeded => None,
    }
}

/// `GET …/models/{model}/operations/{id}` (AI Studio operations only).
fn veo_operation(req: &Req<'_>) -> Answer {
    let name = studio_operation(path(req)).unwrap_or_default();
    let entry = req.state.video_store().jobs.get(&name).cloned();
    let Some(Entry {
        job,
        provider: Provider::Studio { file },
    }) = entry
    else {
        return Err(google_not_found(&format!("Operation {name} not found.")));
    };
    if let Some(answer) = unfinished_or_failed(&job) {
        return crate::api::ok(&answer);
    }
    let uri = format!(
        "http://{}/v1beta/files/{}:download?alt=media",
        req.host(),
        file.unwrap_or_default()
    );
    crate::api::ok(&json!({
        "name": job.name,
        "done": true,
        "response": {
            "@type": STUDIO_RESPONSE,
            "generateVideoResponse": {"generatedSamples": [{"video": {"uri": uri}}]},
        },
    }))
}

/// `POST …:fetchPredictOperation` (Vertex AI operations only).
fn veo_fetch(req: &Req<'_>) -> Answer {
    let head = path(req).rsplit_once(':').map_or("", |(h, _)| h);
    let target = Target::of(head).ok_or_else(|| google_not_found("Model not found."))?;
    let body = google_json(req)?;
    let name = match body.get("operationName") {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        _ => {
            return Err(google_invalid(
                "* FetchPredictOperationRequest.operation_name: operationName is required",
            ))
        }
    };
    if !name.starts_with(&format!("{}/operations/", target.resource)) {
        return Err(google_invalid(&format!(
            "operationName {name} is not an operation of {}",
            target.resource
        )));
    }
    let entry = req.state.video_store().jobs.get(name).cloned();
    let Some(Entry {
        job,
        provider: Provider::Vertex,
    }) = entry
    else {
        return Err(google_not_found(&format!("Operation {name} not found.")));
    };
    if let Some(answer) = unfinished_or_failed(&job) {
        return crate::api::ok(&answer);
    }
    let video = crate::embeddings::base64_encode(&fake_mp4(&job.prompt));
    crate::api::ok(&json!({
        "name": job.name,
        "done": true,
        "response": {
            "@type": VERTEX_RESPONSE,
            "raiMediaFilteredCount": 0,
            "videos": [{"bytesBase64Encoded": video, "mimeType": "video/mp4"}],
        },
    }))
}

/// `GET …/files/{id}:download?alt=media`.
fn veo_download(req: &Req<'_>) -> Answer {
    let id = file_id(path(req)).unwrap_or_default();
    if req.query("alt").as_deref() != Some("media") {
        return Err(google_invalid(
            "mock-llm: files/{id}:download serves the video with alt=media only",
        ));
    }
    let store = req.state.video_store();
    let prompt = store
        .files
        .get(id)
        .and_then(|name| store.jobs.get(name))
        .map(|e| e.job.prompt.clone());
    drop(store);
    let prompt = prompt.ok_or_else(|| google_not_found(&format!("File files/{id} not found.")))?;
    Ok(video_response(&prompt))
}

// ---------------------------------------------------------------------------
// Bedrock (Nova Reel) and S3

fn validation(message: &str) -> Response<MockBody> {
    bedrock::error(StatusCode::BAD_REQUEST, "ValidationException", message)
}

/// What StartAsyncInvoke refuses for Nova Reel: the fields the job needs, the one task and
/// video shape `TEXT_VIDEO` has (6 s, 24 fps, 1280x720).
fn check_reel(body: &Value) -> Result<(&str, &str, &str), String> {
    let model_id = match body.get("modelId") {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        _ => {
            return Err("1 validation error detected: Value null at 'modelId' failed to satisfy constraint: Member must not be null".into())
        }
    };
    let input = body
        .get("modelInput")
        .filter(|v| v.is_object())
        .ok_or("1 validation error detected: Value null at 'modelInput' failed to satisfy constraint: Member must not be null")?;
    match input.get("taskType").and_then(Value::as_str) {
        Some("TEXT_VIDEO") => {}
        Some(other) => {
            return Err(format!(
                "Malformed input request: #/taskType: {other} is not a valid enum value (mock-llm serves TEXT_VIDEO)"
            ))
        }
        None => return Err("Malformed input request: #: required key [taskType] not found".into()),
    }
    let text = reel_text(body)
        .filter(|t| !t.trim().is_empty())
        .ok_or("Malformed input request: #/textToVideoParams: required key [text] not found")?;
    if let Some(config) = input.get("videoGenerationConfig") {
        let config = config
            .as_object()
            .ok_or("Malformed input request: #/videoGenerationConfig: expected type: JSONObject")?;
        let bad = |key: &str, want: &Value| config.get(key).is_some_and(|v| v != want);
        if bad("durationSeconds", &json!(6)) {
            return Err("Malformed input request: #/videoGenerationConfig/durationSeconds: TEXT_VIDEO videos last 6 seconds".into());
        }
        if bad("fps", &json!(24)) {
            return Err("Malformed input request: #/videoGenerationConfig/fps: 24 is the only supported value".into());
        }
        if bad("dimension", &json!("1280x720")) {
            return Err("Malformed input request: #/videoGenerationConfig/dimension: 1280x720 is the only supported value".into());
        }
        if config
            .get("seed")
            .is_some_and(|s| s.as_u64().is_none_or(|s| s > 2_147_483_646))
        {
            return Err("Malformed input request: #/videoGenerationConfig/seed: must be an integer from 0 to 2147483646".into());
        }
    }
    let uri = body
        .pointer("/outputDataConfig/s3OutputDataConfig/s3Uri")
        .and_then(Value::as_str)
        .ok_or("1 validation error detected: Value null at 'outputDataConfig.s3OutputDataConfig.s3Uri' failed to satisfy constraint: Member must not be null")?;
    let bucket = uri
        .strip_prefix("s3://")
        .map(|rest| rest.split('/').next().unwrap_or_default());
    if bucket.is_none_or(str::is_empty) {
        return Err(format!(
            "1 validation error detected: Value '{uri}' at 'outputDataConfig.s3OutputDataConfig.s3Uri' failed to satisfy constraint: Member must satisfy regular expression pattern: s3://[a-z0-9][\\.\\-a-z0-9]{{1,61}}[a-z0-9](/.*)?"
        ));
    }
    Ok((model_id, text, uri))
}

/// `POST …/async-invoke` (StartAsyncInvoke).
fn reel_create(req: &Req<'_>) -> Answer {
    let body = match serde_json::from_slice::<Value>(req.body) {
        Ok(json) if json.is_object() => json,
        _ => {
            return Err(validation(
                "Malformed input request, please reformat your input and try again.",
            ))
        }
    };
    let (model_id, text, uri) = check_reel(&body).map_err(|m| validation(&m))?;
    let (model_id, text, uri) = (model_id.to_owned(), text.to_owned(), uri.to_owned());
    let client_token = body
        .get("clientRequestToken")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut store = req.state.video_store();
    // The same client token names the same invocation (StartAsyncInvoke is idempotent).
    if let Some(token) = &client_token {
        let earlier = store.jobs.iter().find(|e| {
            matches!(&e.provider, Provider::Bedrock { client_token: Some(t), .. } if t == token)
        });
        if let Some(e) = earlier {
            return crate::api::ok(&json!({ "invocationArn": e.job.name }));
        }
    }
    let region = sigv4::credential_region(req.parts).unwrap_or_else(|| "us-east-1".to_owned());
    let id = format!("mock{:08}", req.next_id());
    let arn = format!("arn:aws:bedrock:{region}:{ACCOUNT}:async-invoke/{id}");
    let job = VideoJob {
        name: arn.clone(),
        model: model_id.clone(),
        outcome: VideoOutcome::of(&text),
        prompt: text,
        request: body,
        created: req.now,
    };
    let provider = Provider::Bedrock {
        model_id,
        region,
        output_uri: format!("{}/{id}", uri.trim_end_matches('/')),
        client_token,
    };
    store.jobs.push(arn.clone(), Entry { job, provider });
    drop(store);
    crate::api::ok(&json!({ "invocationArn": arn }))
}

/// `GET …/async-invoke/{arn}` (GetAsyncInvoke).
fn reel_get(req: &Req<'_>) -> Answer {
    let raw = path(req)
        .split_once("/async-invoke/")
        .map_or("", |(_, arn)| arn);
    let arn = crate::percent_decode(raw);
    let entry = req.state.video_store().jobs.get(&arn).cloned();
    let Some(Entry {
        job,
        provider:
            Provider::Bedrock {
                model_id,
                region,
                output_uri,
                client_token,
            },
    }) = entry
    else {
        return Err(bedrock::error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("The specified invocation ARN {arn} was not found."),
        ));
    };
    let model_arn = match model_id.starts_with("arn:") {
        true => model_id,
        false => format!("arn:aws:bedrock:{region}::foundation-model/{model_id}"),
    };
    let submitted = sigv4::rfc3339(job.created);
    let mut answer = json!({
        "invocationArn": job.name,
        "modelArn": model_arn,
        "status": match job.outcome {
            VideoOutcome::Succeeded => "Completed",
            VideoOutcome::Failed => "Failed",
            VideoOutcome::Running => "InProgress",
        },
        "submitTime": submitted,
        "lastModifiedTime": submitted,
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": output_uri}},
    });
    if let Some(token) = client_token {
        answer["clientRequestToken"] = json!(token);
    }
    if job.outcome != VideoOutcome::Running {
        answer["endTime"] = json!(submitted);
    }
    if job.outcome == VideoOutcome::Failed {
        answer["failureMessage"] = json!(FAILED_MESSAGE);
    }
    crate::api::ok(&answer)
}

/// `GET /{bucket}/{key}`: `{s3Uri}/{id}/output.mp4` of a completed invocation.
fn s3_object(req: &Req<'_>) -> Answer {
    let wanted = crate::percent_decode(path(req).trim_start_matches('/'));
    let store = req.state.video_store();
    let prompt = store.jobs.iter().find_map(|e| match &e.provider {
        Provider::Bedrock { output_uri, .. }
            if e.job.outcome == VideoOutcome::Succeeded
                && output_uri
                    .strip_prefix("s3://")
                    .is_some_and(|o| wanted == format!("{o}/output.mp4")) =>
        {
            Some(e.job.prompt.clone())
        }
        _ => None,
    });
    drop(store);
    match prompt {
        Some(prompt) => Ok(video_response(&prompt)),
        None => {
            let key = wanted.split_once('/').map_or("", |(_, k)| k);
            Err(s3_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
                &format!("<Key>{}</Key>", xml_escape(key)),
            ))
        }
    }
}

impl MockState {
    pub(crate) fn video_store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.video
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let (get, post) = (Method::GET, Method::POST);
        let of = Endpoint::of;
        assert_eq!(
            of(
                &post,
                "/v1beta/models/veo-3.0-generate-001:predictLongRunning"
            ),
            Some(Endpoint::VeoCreate)
        );
        assert_eq!(
            of(
                &post,
                "/v1/projects/p/locations/us-central1/publishers/google/models/veo-3.0-generate-001:predictLongRunning"
            ),
            Some(Endpoint::VeoCreate)
        );
        assert_eq!(
            of(
                &post,
                "/v1/projects/p/locations/l/publishers/google/models/v:fetchPredictOperation"
            ),
            Some(Endpoint::VeoFetch)
        );
        // fetchPredictOperation is Vertex AI's; a Vertex path must be complete.
        assert_eq!(of(&post, "/v1beta/models/v:fetchPredictOperation"), None);
        assert_eq!(
            of(
                &post,
                "/v1/projects/p/publishers/google/models/v:predictLongRunning"
            ),
            None
        );
        assert_eq!(of(&post, "/v1beta/models/v:generateContent"), None);
        assert_eq!(
            of(&get, "/v1beta/models/v/operations/mockop1"),
            Some(Endpoint::VeoOperation)
        );
        assert_eq!(
            of(&get, "/v1beta/files/abc:download"),
            Some(Endpoint::VeoDownload)
        );
        assert_eq!(of(&get, "/v1/files/file-1"), None);
        assert_eq!(of(&post, "/async-invoke"), Some(Endpoint::ReelCreate));
        assert_eq!(
            of(
                &get,
                "/async-invoke/arn%3Aaws%3Abedrock%3Aus-east-1%3A0%3Aasync-invoke%2Fx"
            ),
            Some(Endpoint::ReelGet)
        );
        assert_eq!(
            of(
                &get,
                "/async-invoke/arn:aws:bedrock:us-east-1:0:async-invoke/x"
            ),
            Some(Endpoint::ReelGet)
        );
        assert_eq!(of(&get, "/async-invoke"), None);
        assert!(Endpoint::s3_object(&get, "/bucket/prefix/mock1/output.mp4"));
        assert!(Endpoint::s3_object(&get, "/bucket/mock1/output.mp4"));
        assert!(!Endpoint::s3_object(&get, "/output.mp4"));
        assert!(!Endpoint::s3_object(&get, "/bucket/output.mp4"));
        assert!(!Endpoint::s3_object(&get, "/bucket//output.mp4"));
        assert!(!Endpoint::s3_object(&post, "/bucket/mock1/output.mp4"));
    }

    #[test]
    fn mp4_carries_the_prompt() {
        let mp4 = fake_mp4("a cat");
        assert!(mp4.starts_with(b"\0\0\0\x18ftypmp42"));
        assert_eq!(&mp4[24..37], b"\0\0\0\x0dfreea cat");
        assert_eq!(&mp4[41..45], b"mdat");
        assert_eq!(fake_mp4("a cat"), mp4);
        assert_ne!(fake_mp4("a dog"), mp4);
    }

    #[test]
    fn outcome_from_markers() {
        assert_eq!(VideoOutcome::of("a cat"), VideoOutcome::Succeeded);
        assert_eq!(
            VideoOutcome::of("a cat [mock:failed]"),
            VideoOutcome::Failed
        );
        assert_eq!(VideoOutcome::of("[mock:hang] a cat"), VideoOutcome::Running);
    }

    #[test]
    fn veo_checks() {
        let ok = json!({"instances": [{"prompt": "p"}],
            "parameters": {"aspectRatio": "9:16", "durationSeconds": 8, "resolution": "1080p",
                "negativePrompt": "n", "sampleCount": 1, "seed": 7}});
        assert_eq!(check_veo(&ok), Ok("p"));
        for (bad, says) in [
            (json!({}), "instances"),
            (json!({"instances": [{"image": {}}]}), "prompt"),
            (json!({"instances": [{"prompt": 1}]}), "prompt"),
            (
                json!({"instances": [{"prompt": "p"}], "parameters": {"aspectRatio": "1:1"}}),
                "aspectRatio",
            ),
            (
                json!({"instances": [{"prompt": "p"}], "parameters": {"durationSeconds": "8"}}),
                "durationSeconds",
            ),
            (
                json!({"instances": [{"prompt": "p"}], "parameters": {"resolution": "4k"}}),
                "resolution",
            ),
        ] {
            let e = check_veo(&bad).err().unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn reel_checks() {
        let ok = json!({"modelId": "amazon.nova-reel-v1:0",
            "modelInput": {"taskType": "TEXT_VIDEO", "textToVideoParams": {"text": "t"},
                "videoGenerationConfig": {"durationSeconds": 6, "fps": 24, "dimension": "1280x720", "seed": 3}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://b/p"}}});
        assert_eq!(
            check_reel(&ok),
            Ok(("amazon.nova-reel-v1:0", "t", "s3://b/p"))
        );
        let with = |pointer: &str, value: Value| {
            let mut b = ok.clone();
            if let Some(slot) = b.pointer_mut(pointer) {
                *slot = value;
            }
            b
        };
        for (bad, says) in [
            (with("/modelId", Value::Null), "modelId"),
            (with("/modelInput/textToVideoParams", json!({})), "[text]"),
            (
                with("/modelInput/taskType", json!("IMAGE_VIDEO")),
                "taskType",
            ),
            (
                with(
                    "/modelInput/videoGenerationConfig/durationSeconds",
                    json!(8),
                ),
                "durationSeconds",
            ),
            (
                with("/outputDataConfig/s3OutputDataConfig/s3Uri", json!("s3://")),
                "s3Uri",
            ),
            (
                with("/outputDataConfig/s3OutputDataConfig/s3Uri", json!("b/p")),
                "s3Uri",
            ),
            (with("/outputDataConfig", json!({})), "s3Uri"),
        ] {
            let e = check_reel(&bad).err().unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

//! OpenAI's Videos API (`video/v1/videos/generations`) on providers whose video models run
//! as jobs in their own API: Gemini's and Vertex AI's Veo (`predictLongRunning`, then the
//! operation) and Bedrock's Nova Reel (`StartAsyncInvoke`, then `GetAsyncInvoke`, with the
//! video written to the user's S3 bucket). A client creates a video, polls it and downloads
//! its content as on OpenAI. The provider's job handle travels inside the video's id, so
//! any gateway node answers for any video without shared state.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::Method;
use serde_json::{json, Map, Value};

use crate::llm::body::BodyView;
use crate::llm::translate::{bad, field};
use crate::llm::{EncodeError, Wire};

/// The provider family a video job lives with (its handle means nothing elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Gemini API (AI Studio): the operation is read with `GET /v1beta/{name}`.
    Gemini,
    /// Vertex AI: the operation is read with `:fetchPredictOperation`.
    Vertex,
    Bedrock,
}

impl Family {
    fn tag(self) -> char {
        match self {
            Family::Gemini => 'g',
            Family::Vertex => 'v',
            Family::Bedrock => 'b',
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::Gemini => "gemini",
            Family::Vertex => "gemini (Vertex AI)",
            Family::Bedrock => "bedrock",
        }
    }
}

/// A video job: who runs it, the provider's handle (operation name, invocation ARN) and
/// when it was created (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub family: Family,
    pub handle: String,
    pub created: u64,
}

impl Job {
    /// The OpenAI video id for this job.
    pub fn id(&self) -> String {
        let payload = format!("{}{}:{}", self.family.tag(), self.created, self.handle);
        format!("video_{}", URL_SAFE_NO_PAD.encode(payload))
    }

    /// The job behind a video id the gateway gave out.
    pub fn parse(id: &str) -> Option<Job> {
        let raw = URL_SAFE_NO_PAD.decode(id.strip_prefix("video_")?).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let mut chars = text.chars();
        let family = match chars.next()? {
            'g' => Family::Gemini,
            'v' => Family::Vertex,
            'b' => Family::Bedrock,
            _ => return None,
        };
        let (created, handle) = chars.as_str().split_once(':')?;
        let handle_ok = !handle.is_empty()
            && handle
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%' | b'\\'))
            && !handle.split('/').any(|s| s == "..");
        let created = created.parse().ok()?;
        handle_ok.then(|| Job {
            family,
            handle: handle.to_string(),
            created,
        })
    }
}

/// What a client's request on a translated Videos route asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create,
    Retrieve(Job),
    Content(Job),
}

/// The operation of `method` on `path` (the API path below the prefix: `/videos`,
/// `/videos/{id}`, `/videos/{id}/content`); the others OpenAI's API has (list, delete,
/// remix) have no counterpart in these providers' job APIs.
pub fn op(method: &Method, path: &str, family: Family) -> Result<Op, OpError> {
    let rest = path.strip_prefix("/videos").unwrap_or(path);
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    let job = |id: &str| {
        let job = Job::parse(id)
            .ok_or_else(|| OpError::NoSuchVideo(format!("No video found with id '{id}'.")))?;
        if job.family != family {
            return Err(OpError::Refused(format!(
                "video '{id}' was created on {}, not on {}",
                job.family.name(),
                family.name()
            )));
        }
        Ok(job)
    };
    match (method.as_str(), &segments[..]) {
        ("POST", []) => Ok(Op::Create),
        ("GET", [id]) => Ok(Op::Retrieve(job(id)?)),
        ("GET", [id, "content"]) => Ok(Op::Content(job(id)?)),
        _ => Err(OpError::Refused(format!(
            "{} {path} is not served for {}: its video jobs can be created (POST /videos), retrieved (GET /videos/{{id}}) and downloaded (GET /videos/{{id}}/content)",
            method,
            family.name()
        ))),
    }
}

/// Why a request names no operation of a translated Videos route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The id is none the gateway gave out (404, as OpenAI answers an unknown video).
    NoSuchVideo(String),
    /// An operation these job APIs do not have, or a video of another provider (400).
    Refused(String),
}

/// One upstream call: method, path (below the host) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Vec<u8>,
}

/// The provider call for `op`. `prefix` is the target's model prefix (Gemini's
/// `/v1beta/models/`, Vertex's `…/publishers/google/models/`); `s3_uri` is Bedrock's
/// `video_output_s3_uri`.
pub fn call(
    family: Family,
    op: &Op,
    prefix: &str,
    body: Option<&BodyView<'_>>,
    model: Option<&str>,
    s3_uri: Option<&str>,
) -> Result<Call, EncodeError> {
    let post = |path: String, body: Value| Call {
        method: Method::POST,
        path,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    };
    let model = || {
        model.ok_or_else(|| {
            bad("model parameter not found in request, nor in gateway configuration")
        })
    };
    match (family, op) {
        (Family::Gemini | Family::Vertex, Op::Create) => {
            let body = body.ok_or_else(|| bad("a video is created from a JSON body"))?;
            let m = model()?;
            let path = format!("{prefix}{}:predictLongRunning", segment(m));
            Ok(post(path, veo_request(body)?))
        }
        (Family::Gemini, Op::Retrieve(j) | Op::Content(j)) => {
            let root = prefix.strip_suffix("models/").unwrap_or(prefix);
            Ok(Call {
                method: Method::GET,
                path: format!("{root}{}", j.handle),
                body: Vec::new(),
            })
        }
        (Family::Vertex, Op::Retrieve(j) | Op::Content(j)) => {
            let m = j
                .handle
                .split_once("/models/")
                .and_then(|(_, rest)| rest.split_once("/operations/"))
                .map(|(m, _)| m)
                .ok_or_else(|| bad("the video id does not name a Vertex AI operation"))?;
            let path = format!("{prefix}{}:fetchPredictOperation", segment(m));
            Ok(post(path, json!({"operationName": j.handle})))
        }
        (Family::Bedrock, Op::Create) => {
            let body = body.ok_or_else(|| bad("a video is created from a JSON body"))?;
            let s3 = s3_uri
                .ok_or_else(|| bad("model.options.bedrock.video_output_s3_uri is not set"))?;
            Ok(post(
                "/async-invoke".into(),
                nova_reel_request(body, model()?, s3)?,
            ))
        }
        (Family::Bedrock, Op::Retrieve(j) | Op::Content(j)) => Ok(Call {
            method: Method::GET,
            path: format!("/async-invoke/{}", segment(&j.handle)),
            body: Vec::new(),
        }),
    }
}

/// A path segment, percent-encoded (a model id or an ARN with `:` and `/`).
fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, crate::llm::sigv4::UNRESERVED).to_string()
}

/// The client's prompt, required as on OpenAI.
fn prompt(body: &BodyView<'_>) -> Result<String, EncodeError> {
    match field(body, "prompt")? {
        Some(Value::String(p)) if !p.trim().is_empty() => Ok(p),
        Some(_) => Err(bad("'prompt' must be a non-empty string")),
        None => Err(bad("Missing required parameter: 'prompt'.")),
    }
}

/// OpenAI's `seconds` (a string such as "8", or a number).
fn seconds(body: &BodyView<'_>) -> Result<Option<u64>, EncodeError> {
    match field(body, "seconds")? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad("'seconds' must be a whole number of seconds")),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad("'seconds' must be a whole number of seconds")),
        Some(_) => Err(bad("'seconds' must be a whole number of seconds")),
    }
}

/// OpenAI's `size` ("1280x720") as width and height.
fn size(body: &BodyView<'_>) -> Result<Option<(u32, u32)>, EncodeError> {
    let Some(v) = field(body, "size")? else {
        return Ok(None);
    };
    let s = v.as_str().unwrap_or_default();
    s.split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .filter(|(w, h)| *w > 0 && *h > 0)
        .map(Some)
        .ok_or_else(|| bad("'size' must be WIDTHxHEIGHT, e.g. 1280x720"))
}

/// Fields of OpenAI's create request the job APIs have nothing for.
fn refuse_unsupported(body: &BodyView<'_>, provider: &str) -> Result<(), EncodeError> {
    for name in ["input_reference", "remix_video_id"] {
        if field(body, name)?.is_some() {
            return Err(bad(format!(
                "'{name}' is not supported for {provider} video generation"
            )));
        }
    }
    Ok(())
}

/// A Veo `predictLongRunning` body: the prompt, `seconds` as `durationSeconds`, `size` as
/// the aspect ratio and resolution; a client's `parameters` object is passed through
/// (e.g. `negativePrompt`, `personGeneration`, `storageUri`).
fn veo_request(body: &BodyView<'_>) -> Result<Value, EncodeError> {
    refuse_unsupported(body, "gemini")?;
    let mut params = match field(body, "parameters")? {
        Some(Value::Object(p)) => p,
        Some(_) => return Err(bad("'parameters' must be an object")),
        None => Map::new(),
    };
    if let Some(s) = seconds(body)? {
        params.entry("durationSeconds").or_insert(json!(s));
    }
    if let Some((w, h)) = size(body)? {
        let ratio = if w >= h { "16:9" } else { "9:16" };
        params.entry("aspectRatio").or_insert(json!(ratio));
        let resolution = if w.min(h) >= 1080 { "1080p" } else { "720p" };
        params.entry("resolution").or_insert(json!(resolution));
    }
    Ok(json!({"instances": [{"prompt": prompt(body)?}], "parameters": params}))
}

/// A `StartAsyncInvoke` body for Nova Reel's text-to-video: `seconds` as
/// `durationSeconds` (default 6), `size` as `dimension` (default 1280x720), and Kong's
/// `extra_body` (e.g. `fps`, `seed`) into `videoGenerationConfig`.
fn nova_reel_request(body: &BodyView<'_>, model: &str, s3_uri: &str) -> Result<Value, EncodeError> {
    refuse_unsupported(body, "bedrock")?;
    let mut config = Map::new();
    config.insert("durationSeconds".into(), json!(seconds(body)?.unwrap_or(6)));
    config.insert("fps".into(), json!(24));
    let dimension = match size(body)? {
        Some((w, h)) => format!("{w}x{h}"),
        None => "1280x720".into(),
    };
    config.insert("dimension".into(), json!(dimension));
    match field(body, "extra_body")? {
        Some(Value::Object(extra)) => config.extend(extra),
        Some(_) => return Err(bad("'extra_body' must be an object")),
        None => {}
    }
    Ok(json!({
        "modelId": model,
        "modelInput": {
            "taskType": "TEXT_VIDEO",
            "textToVideoParams": {"text": prompt(body)?},
            "videoGenerationConfig": config,
        },
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": s3_uri}},
    }))
}

/// Where a finished video's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// In the answer itself (Vertex without `storageUri`).
    Inline { data: Vec<u8>, mime: String },
    /// At a URL the target's own credentials read (Gemini's file download, a GCS object).
    Url(String),
    /// In the user's S3 bucket (Bedrock).
    S3 { bucket: String, key: String },
}

/// A job's state as the provider reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// OpenAI's status: `queued`, `in_progress`, `completed` or `failed`.
    pub status: &'static str,
    pub error: Option<String>,
    pub content: Option<Content>,
    /// The model, where the answer names it.
    pub model: Option<String>,
}

/// The job a create answer started.
pub fn created_job(family: Family, body: &[u8], now: u64) -> Result<Job, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let key = match family {
        Family::Bedrock => "invocationArn",
        _ => "name",
    };
    let handle = v
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the answer has no '{key}'"))?;
    let job = Job {
        family,
        handle: handle.to_string(),
        created: now,
    };
    // Refuse a handle that would not survive the round trip through the id.
    Job::parse(&job.id())
        .map(|_| job)
        .ok_or_else(|| format!("the answer's '{key}' is not a job handle"))
}

/// The state of a job from a retrieve answer (Gemini's or Vertex's operation, Bedrock's
/// `GetAsyncInvoke`).
pub fn state(family: Family, body: &[u8]) -> Result<State, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    match family {
        Family::Gemini | Family::Vertex => Ok(operation_state(&v)),
        Family::Bedrock => invocation_state(&v),
    }
}

fn operation_state(v: &Value) -> State {
    let model = v
        .get("name")
        .and_then(Value::as_str)
        .and_then(|n| n.split_once("models/"))
        .and_then(|(_, rest)| rest.split_once("/operations/"))
        .map(|(m, _)| m.to_string());
    let mut state = State {
        status: "in_progress",
        error: None,
        content: None,
        model,
    };
    if v.get("done").and_then(Value::as_bool) != Some(true) {
        return state;
    }
    if let Some(e) = v.get("error") {
        state.status = "failed";
        state.error = Some(
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("video generation failed")
                .to_string(),
        );
        return state;
    }
    let response = v.get("response").unwrap_or(&Value::Null);
    // Gemini API: generateVideoResponse.generatedSamples[].video.uri; Vertex AI:
    // videos[] with inline bytes or a gcsUri.
    let gemini = response
        .pointer("/generateVideoResponse/generatedSamples/0/video/uri")
        .and_then(Value::as_str)
        .map(|u| Content::Url(u.to_string()));
    let vertex = response.pointer("/videos/0").and_then(|video| {
        if let Some(b64) = video.get("bytesBase64Encoded").and_then(Value::as_str) {
            let data = STANDARD.decode(b64).ok()?;
            let mime = video
                .get("mimeType")
                .and_then(Value::as_str)
                .unwrap_or("video/mp4");
            return Some(Content::Inline {
                data,
                mime: mime.to_string(),
            });
        }
        let gcs = video.get("gcsUri").and_then(Value::as_str)?;
        let (bucket, object) = gcs.strip_prefix("gs://")?.split_once('/')?;
        let object: String =
            percent_encoding::utf8_percent_encode(object, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        Some(Content::Url(format!(
            "https://storage.googleapis.com/storage/v1/b/{bucket}/o/{object}?alt=media"
        )))
    });
    match gemini.or(vertex) {
        Some(c) => {
            state.status = "completed";
            state.content = Some(c);
        }
        None => {
            state.status = "failed";
            let filtered = response
                .pointer("/generateVideoResponse/raiMediaFilteredReasons/0")
                .or_else(|| response.pointer("/raiMediaFilteredReasons/0"))
                .and_then(Value::as_str);
            state.error = Some(match filtered {
                Some(r) => format!("the video was filtered: {r}"),
                None => "the provider finished the job without a video".into(),
            });
        }
    }
    state
}

fn invocation_state(v: &Value) -> Result<State, String> {
    let status = v
        .get("status")
        .and_then(Value::as_str)
        .ok_or("the answer has no 'status'")?;
    let model = v
        .get("modelArn")
        .and_then(Value::as_str)
        .and_then(|a| a.rsplit_once('/'))
        .map(|(_, m)| m.to_string());
    let mut state = State {
        status: "in_progress",
        error: None,
        content: None,
        model,
    };
    match status {
        "Completed" => {
            let uri = v
                .pointer("/outputDataConfig/s3OutputDataConfig/s3Uri")
                .and_then(Value::as_str)
                .ok_or("a completed invocation without its s3Uri")?;
            let (bucket, prefix) = uri
                .strip_prefix("s3://")
                .map(|r| r.split_once('/').unwrap_or((r, "")))
                .ok_or("the invocation's s3Uri is not an s3:// URI")?;
            let key = match prefix.trim_matches('/') {
                "" => "output.mp4".to_string(),
                p => format!("{p}/output.mp4"),
            };
            state.status = "completed";
            state.content = Some(Content::S3 {
                bucket: bucket.to_string(),
                key,
            });
        }
        "Failed" => {
            state.status = "failed";
            state.error = Some(
                v.get("failureMessage")
                    .and_then(Value::as_str)
                    .unwrap_or("video generation failed")
                    .to_string(),
            );
        }
        _ => {}
    }
    Ok(state)
}

/// OpenAI's video object for a job in `state`; `request` is the client's create body
/// (for `seconds` and `size`, which the job APIs do not echo).
pub fn video_object(job: &Job, state: &State, model: Option<&str>, request: &[u8]) -> Vec<u8> {
    let asked: Value = serde_json::from_slice(request).unwrap_or(Value::Null);
    let mut v = json!({
        "id": job.id(),
        "object": "video",
        "model": state.model.as_deref().or(model),
        "status": state.status,
        "progress": if state.status == "completed" { 100 } else { 0 },
        "created_at": job.created,
        "completed_at": Value::Null,
        "expires_at": Value::Null,
        "error": state.error.as_ref().map(|m| json!({"code": "video_generation_failed", "message": m})),
        "remixed_from_video_id": Value::Null,
    });
    for key in ["seconds", "size"] {
        if let Some(x) = asked.get(key) {
            v[key] = match x {
                Value::Number(n) => json!(n.to_string()),
                other => other.clone(),
            };
        }
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Whether `wire` runs videos as jobs translated here.
pub fn family(wire: Wire, vertex: bool) -> Option<Family> {
    match (wire, vertex) {
        (Wire::Gemini, false) => Some(Family::Gemini),
        (Wire::Gemini, true) => Some(Family::Vertex),
        (Wire::Bedrock, _) => Some(Family::Bedrock),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn view(v: &Value) -> (Vec<u8>, Value) {
        (serde_json::to_vec(v).unwrap(), v.clone())
    }

    #[test]
    fn ids_carry_the_job_and_refuse_tampering() {
        let job = Job {
            family: Family::Bedrock,
            handle: "arn:aws:bedrock:us-east-1:1:async-invoke/abc".into(),
            created: 1_700_000_000,
        };
        let id = job.id();
        assert!(id.starts_with("video_"));
        assert_eq!(Job::parse(&id), Some(job));
        assert_eq!(Job::parse("video_!!"), None);
        let evil = format!("video_{}", URL_SAFE_NO_PAD.encode("g1:../../admin"));
        assert_eq!(Job::parse(&evil), None);
        let get = |p: &str| op(&Method::GET, p, Family::Gemini);
        let refused = |r: Result<Op, OpError>| match r {
            Err(OpError::Refused(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(refused(get(&format!("/videos/{id}"))).contains("created on bedrock"));
        assert!(
            refused(op(&Method::DELETE, "/videos/x", Family::Gemini)).contains("can be created")
        );
        assert!(matches!(
            get("/videos/video_nope"),
            Err(OpError::NoSuchVideo(_))
        ));
        assert_eq!(
            op(&Method::POST, "/videos", Family::Bedrock),
            Ok(Op::Create)
        );
    }

    #[test]
    fn veo_and_nova_reel_requests() {
        let (bytes, _) = view(
            &json!({"model": "veo-3.1-generate-preview", "prompt": "a fox",
            "seconds": "8", "size": "720x1280", "parameters": {"negativePrompt": "rain"}}),
        );
        let body = BodyView::parse(&bytes).unwrap();
        let c = call(
            Family::Gemini,
            &Op::Create,
            "/v1beta/models/",
            Some(&body),
            Some("veo-3.1-generate-preview"),
            None,
        )
        .unwrap();
        assert_eq!(
            c.path,
            "/v1beta/models/veo-3.1-generate-preview:predictLongRunning"
        );
        let sent: Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(sent["instances"][0]["prompt"], "a fox");
        assert_eq!(sent["parameters"]["durationSeconds"], 8);
        assert_eq!(sent["parameters"]["aspectRatio"], "9:16");
        assert_eq!(sent["parameters"]["resolution"], "720p");
        assert_eq!(sent["parameters"]["negativePrompt"], "rain");

        let (bytes, _) =
            view(&json!({"prompt": "a red square", "extra_body": {"fps": 24, "seed": 7}}));
        let body = BodyView::parse(&bytes).unwrap();
        let c = call(
            Family::Bedrock,
            &Op::Create,
            "/model/",
            Some(&body),
            Some("amazon.nova-reel-v1:0"),
            Some("s3://b/p"),
        )
        .unwrap();
        assert_eq!(c.path, "/async-invoke");
        let sent: Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(sent["modelId"], "amazon.nova-reel-v1:0");
        assert_eq!(sent["modelInput"]["videoGenerationConfig"]["seed"], 7);
        assert_eq!(
            sent["modelInput"]["videoGenerationConfig"]["durationSeconds"],
            6
        );
        assert_eq!(
            sent["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"],
            "s3://b/p"
        );

        let (bytes, _) = view(&json!({"model": "m"}));
        let body = BodyView::parse(&bytes).unwrap();
        let e = call(
            Family::Bedrock,
            &Op::Create,
            "/",
            Some(&body),
            Some("m"),
            Some("s3://b"),
        )
        .unwrap_err();
        assert!(e.0.contains("prompt"), "{}", e.0);
    }

    #[test]
    fn retrieve_calls_and_states() {
        let job = Job {
            family: Family::Vertex,
            created: 1,
            handle: "projects/p/locations/l/publishers/google/models/veo-3/operations/o1".into(),
        };
        let c = call(
            Family::Vertex,
            &Op::Retrieve(job),
            "/v1/projects/p/locations/l/publishers/google/models/",
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.method, Method::POST);
        assert_eq!(
            c.path,
            "/v1/projects/p/locations/l/publishers/google/models/veo-3:fetchPredictOperation"
        );
        let job = Job {
            family: Family::Gemini,
            created: 1,
            handle: "models/veo-3/operations/o1".into(),
        };
        let c = call(
            Family::Gemini,
            &Op::Content(job),
            "/v1beta/models/",
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            (c.method, c.path.as_str()),
            (Method::GET, "/v1beta/models/veo-3/operations/o1")
        );
        let job = Job {
            family: Family::Bedrock,
            created: 1,
            handle: "arn:aws:bedrock:r:1:async-invoke/x".into(),
        };
        let c = call(
            Family::Bedrock,
            &Op::Retrieve(job),
            "/model/",
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            c.path,
            "/async-invoke/arn%3Aaws%3Abedrock%3Ar%3A1%3Aasync-invoke%2Fx"
        );

        let s = state(Family::Gemini, br#"{"name":"models/veo-3/operations/o1"}"#).unwrap();
        assert_eq!(
            (s.status, s.model.as_deref()),
            ("in_progress", Some("veo-3"))
        );
        let s = state(
            Family::Gemini,
            br#"{"name":"n","done":true,"error":{"code":3,"message":"bad"}}"#,
        )
        .unwrap();
        assert_eq!((s.status, s.error.as_deref()), ("failed", Some("bad")));
        let s = state(Family::Vertex, br#"{"done":true,"response":{"videos":[{"bytesBase64Encoded":"AAEC","mimeType":"video/mp4"}]}}"#).unwrap();
        assert_eq!(
            s.content,
            Some(Content::Inline {
                data: vec![0, 1, 2],
                mime: "video/mp4".into()
            })
        );
        let s = state(Family::Bedrock, br#"{"status":"Completed","modelArn":"arn:aws:bedrock:r::foundation-model/amazon.nova-reel-v1:0","outputDataConfig":{"s3OutputDataConfig":{"s3Uri":"s3://bkt/out/x"}}}"#).unwrap();
        assert_eq!(
            s.content,
            Some(Content::S3 {
                bucket: "bkt".into(),
                key: "out/x/output.mp4".into()
            })
        );
        assert_eq!(s.model.as_deref(), Some("amazon.nova-reel-v1:0"));
        assert!(state(Family::Bedrock, br#"{"x":1}"#).is_err());
    }
}

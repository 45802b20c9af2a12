//! End-to-end tests of the long-running video jobs: Veo on the Gemini API and on Vertex AI,
//! Nova Reel through Bedrock's async invocations and its S3 output. A real server, a real
//! HTTP client, and a SigV4 signer written here apart from the mock's checker.

// A failed unwrap or panic is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mock_llm::{MockLlm, VideoOutcome, BEDROCK_SECRET_ACCESS_KEY};
use ring::{digest, hmac};
use serde_json::{json, Value};

const KEY: (&str, &str) = ("x-goog-api-key", "test-key");
const STUDIO_MODEL: &str = "/v1beta/models/veo-3.0-generate-001";
const VERTEX_MODEL: &str =
    "/v1/projects/proj-1/locations/us-central1/publishers/google/models/veo-3.0-fast-generate-001";
const MP4_MAGIC: &[u8] = b"\0\0\0\x18ftypmp42";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }

    /// Asserts Google's error shape and returns the message.
    fn google_error(&self, status: u16, rpc: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        let error = &self.json()["error"];
        assert_eq!(error["code"], status, "{error}");
        assert_eq!(error["status"], rpc, "{error}");
        error["message"].as_str().unwrap().to_owned()
    }

    /// Asserts Bedrock's error shape and returns the message.
    fn aws_error(&self, status: u16, kind: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(self.header("x-amzn-errortype"), kind);
        self.json()["message"].as_str().unwrap().to_owned()
    }

    /// Asserts S3's XML error.
    fn s3_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(self.header("content-type"), "application/xml");
        assert!(
            self.text().contains(&format!("<Code>{code}</Code>")),
            "{}",
            self.text()
        );
    }

    fn is_video_of(&self, prompt: &str) {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text());
        assert_eq!(self.header("content-type"), "video/mp4");
        assert!(self.body.starts_with(MP4_MAGIC));
        let needle = prompt.as_bytes();
        assert!(self.body.windows(needle.len()).any(|w| w == needle));
    }
}

async fn call(
    mock: &MockLlm,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{}{path}", mock.url()));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::from(body))).unwrap();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .unwrap_or_else(|_| panic!("no answer to {path} within 10 s"))
        .unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn post_json(mock: &MockLlm, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut headers = headers.to_vec();
    headers.push(("content-type", "application/json"));
    call(
        mock,
        Method::POST,
        path,
        &headers,
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

async fn get(mock: &MockLlm, path: &str, headers: &[(&str, &str)]) -> Reply {
    call(mock, Method::GET, path, headers, Vec::new()).await
}

fn veo_body(prompt: &str) -> Value {
    json!({"instances": [{"prompt": prompt}],
        "parameters": {"aspectRatio": "16:9", "durationSeconds": 8, "resolution": "720p",
            "negativePrompt": "blur", "sampleCount": 1, "seed": 42}})
}

// ---------------------------------------------------------------------------
// Gemini API (AI Studio)

#[tokio::test]
async fn studio_veo_operation_and_download() {
    let mock = MockLlm::start().await.unwrap();
    let prompt = "a cat surfing at dawn";
    let created = post_json(
        &mock,
        &format!("{STUDIO_MODEL}:predictLongRunning"),
        &[KEY],
        &veo_body(prompt),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let name = created.json()["name"].as_str().unwrap().to_owned();
    let id = name
        .strip_prefix("models/veo-3.0-generate-001/operations/")
        .unwrap();
    assert!(
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    assert_eq!(created.json(), json!({"name": name}));

    // The gateway polls `GET /v1beta/{name}`; the key may come as a query parameter.
    let op = get(&mock, &format!("/v1beta/{name}?key=test-key"), &[]).await;
    assert_eq!(op.status, StatusCode::OK, "{}", op.text());
    let op = op.json();
    assert_eq!(op["name"], name.as_str());
    assert_eq!(op["done"], true);
    assert_eq!(
        op["response"]["@type"],
        "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"
    );
    let samples = op["response"]["generateVideoResponse"]["generatedSamples"]
        .as_array()
        .unwrap();
    assert_eq!(samples.len(), 1);
    let uri = samples[0]["video"]["uri"].as_str().unwrap();
    let path = uri
        .strip_prefix(&format!("http://{}", mock.addr()))
        .unwrap();
    assert!(path.starts_with("/v1beta/files/"), "{uri}");
    assert!(path.ends_with(":download?alt=media"), "{uri}");

    let video = get(&mock, path, &[KEY]).await;
    video.is_video_of(prompt);
    // Deterministic.
    assert_eq!(get(&mock, path, &[KEY]).await.body, video.body);
    let by_query = get(&mock, &format!("{path}&key=k"), &[]).await;
    assert_eq!(by_query.body, video.body);

    // The job remembers what was asked.
    let jobs = mock.video_jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].name, name);
    assert_eq!(jobs[0].model, "veo-3.0-generate-001");
    assert_eq!(jobs[0].prompt, prompt);
    assert_eq!(jobs[0].outcome, VideoOutcome::Succeeded);
    assert_eq!(jobs[0].request["parameters"]["durationSeconds"], 8);
    assert_eq!(jobs[0].request["parameters"]["negativePrompt"], "blur");

    // Ids are unique.
    let second = post_json(
        &mock,
        &format!("{STUDIO_MODEL}:predictLongRunning"),
        &[KEY],
        &json!({"instances": [{"prompt": "x", "image": {"bytesBase64Encoded": "AA==", "mimeType": "image/png"}}]}),
    )
    .await;
    assert_ne!(second.json()["name"], name.as_str());
}

#[tokio::test]
async fn studio_veo_failed_and_hanging_operations() {
    let mock = MockLlm::start().await.unwrap();
    let create = |prompt: &'static str| {
        let mock = &mock;
        async move {
            let r = post_json(
                mock,
                &format!("{STUDIO_MODEL}:predictLongRunning"),
                &[KEY],
                &veo_body(prompt),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.json()["name"].as_str().unwrap().to_owned()
        }
    };
    let failed = create("a storm [mock:failed]").await;
    let op = get(&mock, &format!("/v1beta/{failed}"), &[KEY])
        .await
        .json();
    assert_eq!(
        op,
        json!({"name": failed, "done": true,
            "error": {"code": 3, "message": "mock video generation failed"}})
    );

    // `[mock:hang]` hangs the job, not the request.
    let hanging = create("[mock:hang] a slow river").await;
    for _ in 0..2 {
        let op = get(&mock, &format!("/v1beta/{hanging}"), &[KEY])
            .await
            .json();
        assert_eq!(op, json!({"name": hanging, "done": false}));
    }
    let outcomes: Vec<VideoOutcome> = mock.video_jobs().iter().map(|j| j.outcome).collect();
    assert_eq!(outcomes, [VideoOutcome::Failed, VideoOutcome::Running]);
}

#[tokio::test]
async fn studio_veo_refusals() {
    let mock = MockLlm::start().await.unwrap();
    let create = format!("{STUDIO_MODEL}:predictLongRunning");

    // No key: Google's 401, for every endpoint.
    let r = post_json(&mock, &create, &[], &veo_body("x")).await;
    r.google_error(401, "UNAUTHENTICATED");
    let r = get(
        &mock,
        "/v1beta/models/veo-3.0-generate-001/operations/x",
        &[],
    )
    .await;
    r.google_error(401, "UNAUTHENTICATED");
    let r = get(&mock, "/v1beta/files/x:download?alt=media", &[]).await;
    r.google_error(401, "UNAUTHENTICATED");
    // A bearer token the mock never issued.
    let r = post_json(
        &mock,
        &create,
        &[("authorization", "Bearer made-up")],
        &veo_body("x"),
    )
    .await;
    r.google_error(401, "UNAUTHENTICATED");

    // No prompt.
    for body in [
        json!({}),
        json!({"instances": []}),
        json!({"instances": [{"image": {}}]}),
        json!({"instances": [{"prompt": 3}]}),
        json!({"instances": [{"prompt": "p"}], "parameters": {"aspectRatio": "4:3"}}),
    ] {
        let r = post_json(&mock, &create, &[KEY], &body).await;
        r.google_error(400, "INVALID_ARGUMENT");
    }
    let r = call(&mock, Method::POST, &create, &[KEY], b"{not json".to_vec()).await;
    r.google_error(400, "INVALID_ARGUMENT");

    // Unknown operations and files.
    let r = get(
        &mock,
        "/v1beta/models/veo-3.0-generate-001/operations/nope",
        &[KEY],
    )
    .await;
    r.google_error(404, "NOT_FOUND");
    let r = get(&mock, "/v1beta/files/nope:download?alt=media", &[KEY]).await;
    r.google_error(404, "NOT_FOUND");

    // An operation of another model is not found either.
    let name = post_json(&mock, &create, &[KEY], &veo_body("x"))
        .await
        .json()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = name.replace("veo-3.0-generate-001", "veo-2.0-generate-001");
    get(&mock, &format!("/v1beta/{other}"), &[KEY])
        .await
        .google_error(404, "NOT_FOUND");

    // A download without alt=media.
    let op = get(&mock, &format!("/v1beta/{name}"), &[KEY]).await.json();
    let uri = op["response"]["generateVideoResponse"]["generatedSamples"][0]["video"]["uri"]
        .as_str()
        .unwrap();
    let path = uri.strip_prefix(&mock.url()).unwrap();
    let bare = path.split_once('?').unwrap().0;
    get(&mock, bare, &[KEY])
        .await
        .google_error(400, "INVALID_ARGUMENT");

    // Injected errors come in Google's shape.
    let r = post_json(&mock, &create, &[KEY], &veo_body("x [mock:status=429]")).await;
    r.google_error(429, "RESOURCE_EXHAUSTED");
    let r = post_json(
        &mock,
        &create,
        &[KEY, ("x-mock", "status=503")],
        &veo_body("x"),
    )
    .await;
    r.google_error(503, "UNAVAILABLE");
}

// ---------------------------------------------------------------------------
// Vertex AI

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A bearer token from the mock's `/token` (jwt-bearer grant; the mock checks the shape).
async fn vertex_token(mock: &MockLlm) -> String {
    let header = base64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = json!({"iss": "sa@proj-1.iam.gserviceaccount.com",
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        "aud": format!("{}/token", mock.url())});
    let claims = base64url(claims.to_string().as_bytes());
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={header}.{claims}.c2ln"
    );
    let r = call(
        mock,
        Method::POST,
        "/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        form.into_bytes(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn vertex_veo_operations() {
    let mock = MockLlm::start().await.unwrap();
    let token = format!("Bearer {}", vertex_token(&mock).await);
    let auth = [("authorization", token.as_str())];
    let create = format!("{VERTEX_MODEL}:predictLongRunning");
    let fetch = format!("{VERTEX_MODEL}:fetchPredictOperation");

    let prompt = "a lighthouse in fog";
    let created = post_json(&mock, &create, &auth, &veo_body(prompt)).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let name = created.json()["name"].as_str().unwrap().to_owned();
    assert!(
        name.starts_with(
            "projects/proj-1/locations/us-central1/publishers/google/models/veo-3.0-fast-generate-001/operations/"
        ),
        "{name}"
    );

    let op = post_json(&mock, &fetch, &auth, &json!({"operationName": name})).await;
    assert_eq!(op.status, StatusCode::OK, "{}", op.text());
    let op = op.json();
    assert_eq!(op["name"], name.as_str());
    assert_eq!(op["done"], true);
    let response = &op["response"];
    assert_eq!(
        response["@type"],
        "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"
    );
    assert_eq!(response["raiMediaFilteredCount"], 0);
    let videos = response["videos"].as_array().unwrap();
    assert_eq!(videos.len(), 1);
    assert_eq!(videos[0]["mimeType"], "video/mp4");
    let mp4 = base64_decode(videos[0]["bytesBase64Encoded"].as_str().unwrap());
    assert!(mp4.starts_with(MP4_MAGIC));
    assert!(mp4.windows(prompt.len()).any(|w| w == prompt.as_bytes()));

    // Failed and hanging jobs.
    let failed = post_json(&mock, &create, &auth, &veo_body("x [mock:failed]"))
        .await
        .json()["name"]
        .clone();
    let op = post_json(&mock, &fetch, &auth, &json!({"operationName": failed})).await;
    assert_eq!(
        op.json(),
        json!({"name": failed, "done": true,
            "error": {"code": 3, "message": "mock video generation failed"}})
    );
    let hanging = post_json(&mock, &create, &auth, &veo_body("x [mock:hang]"))
        .await
        .json()["name"]
        .clone();
    let op = post_json(&mock, &fetch, &auth, &json!({"operationName": hanging})).await;
    assert_eq!(op.json(), json!({"name": hanging, "done": false}));

    // Unknown, missing or foreign operation names.
    let unknown = format!(
        "{}/operations/nope",
        VERTEX_MODEL.trim_start_matches("/v1/")
    );
    post_json(&mock, &fetch, &auth, &json!({"operationName": unknown}))
        .await
        .google_error(404, "NOT_FOUND");
    post_json(&mock, &fetch, &auth, &json!({}))
        .await
        .google_error(400, "INVALID_ARGUMENT");
    let elsewhere = "/v1/projects/proj-1/locations/us-central1/publishers/google/models/veo-2.0-generate-001:fetchPredictOperation";
    post_json(&mock, elsewhere, &auth, &json!({"operationName": name}))
        .await
        .google_error(400, "INVALID_ARGUMENT");
    // Vertex operations are not AI Studio's (and the other way round).
    get(&mock, &format!("/v1/{name}"), &auth)
        .await
        .google_error(404, "NOT_FOUND");
    let studio = post_json(
        &mock,
        &format!("{STUDIO_MODEL}:predictLongRunning"),
        &[KEY],
        &veo_body("x"),
    )
    .await
    .json()["name"]
        .clone();
    post_json(&mock, &fetch, &auth, &json!({"operationName": studio}))
        .await
        .google_error(400, "INVALID_ARGUMENT");

    // Auth refusals and bad requests.
    post_json(&mock, &create, &[], &veo_body("x"))
        .await
        .google_error(401, "UNAUTHENTICATED");
    post_json(
        &mock,
        &fetch,
        &[("authorization", "Bearer ya29.forged")],
        &json!({"operationName": name}),
    )
    .await
    .google_error(401, "UNAUTHENTICATED");
    post_json(&mock, &create, &auth, &json!({"instances": [{}]}))
        .await
        .google_error(400, "INVALID_ARGUMENT");

    let jobs = mock.video_jobs();
    assert_eq!(jobs[0].model, "veo-3.0-fast-generate-001");
    assert_eq!(jobs[0].prompt, prompt);
}

// ---------------------------------------------------------------------------
// Bedrock and S3

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn sha256(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// RFC 3986 encoding (unreserved characters stay).
fn uri_encode(s: &str) -> String {
    s.bytes().fold(String::new(), |mut out, c| {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(c));
        } else {
            let _ = write!(out, "%{c:02X}");
        }
        out
    })
}

/// `YYYYMMDDTHHMMSSZ` now.
fn amz_date() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// SigV4 headers for a request to the mock. Bedrock encodes the (already encoded) path
/// again; S3 takes it as sent and signs `x-amz-content-sha256`.
fn sign(
    mock: &MockLlm,
    method: &str,
    path: &str,
    body: &[u8],
    service: &str,
    region: &str,
    secret: &str,
) -> Vec<(String, String)> {
    let host = mock.addr().to_string();
    let date = amz_date();
    let payload = sha256(body);
    let uri = match service {
        "s3" => path.to_owned(),
        _ => path
            .split('/')
            .map(uri_encode)
            .collect::<Vec<_>>()
            .join("/"),
    };
    let mut headers = vec![
        ("host".to_owned(), host),
        ("x-amz-date".to_owned(), date.clone()),
    ];
    if service == "s3" {
        headers.insert(1, ("x-amz-content-sha256".to_owned(), payload.clone()));
    }
    let signed = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let creq = format!("{method}\n{uri}\n\n{canonical_headers}\n{signed}\n{payload}");
    let scope = format!("{}/{region}/{service}/aws4_request", &date[..8]);
    let sts = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        sha256(creq.as_bytes())
    );
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), &date.as_bytes()[..8]);
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, sts.as_bytes()));
    headers.push((
        "authorization".to_owned(),
        format!("AWS4-HMAC-SHA256 Credential=AKIDMOCK/{scope}, SignedHeaders={signed}, Signature={signature}"),
    ));
    headers.retain(|(n, _)| n != "host");
    headers
}

async fn aws_call(
    mock: &MockLlm,
    method: Method,
    path: &str,
    body: Vec<u8>,
    service: &str,
    region: &str,
) -> Reply {
    let signed = sign(
        mock,
        method.as_str(),
        path,
        &body,
        service,
        region,
        BEDROCK_SECRET_ACCESS_KEY,
    );
    let mut headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    headers.push(("content-type", "application/json"));
    call(mock, method, path, &headers, body).await
}

fn reel_body(text: &str, s3_uri: &str) -> Value {
    json!({
        "modelId": "amazon.nova-reel-v1:0",
        "modelInput": {
            "taskType": "TEXT_VIDEO",
            "textToVideoParams": {"text": text},
            "videoGenerationConfig": {"durationSeconds": 6, "fps": 24, "dimension": "1280x720", "seed": 7},
        },
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": s3_uri}},
    })
}

async fn start_reel(mock: &MockLlm, body: &Value, region: &str) -> Reply {
    let body = serde_json::to_vec(body).unwrap();
    aws_call(mock, Method::POST, "/async-invoke", body, "bedrock", region).await
}

async fn get_invocation(mock: &MockLlm, arn: &str, encode: bool) -> Reply {
    let path = match encode {
        true => format!("/async-invoke/{}", uri_encode(arn)),
        false => format!("/async-invoke/{arn}"),
    };
    aws_call(mock, Method::GET, &path, Vec::new(), "bedrock", "eu-west-1").await
}

async fn s3_get(mock: &MockLlm, s3_uri: &str) -> Reply {
    let path = format!("/{}/output.mp4", s3_uri.strip_prefix("s3://").unwrap());
    aws_call(mock, Method::GET, &path, Vec::new(), "s3", "eu-west-1").await
}

#[tokio::test]
async fn bedrock_nova_reel_invocation_and_s3_output() {
    let mock = MockLlm::start().await.unwrap();
    let text = "a drone shot over a glacier";
    let started = start_reel(&mock, &reel_body(text, "s3://my-videos/runs/"), "eu-west-1").await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text());
    let arn = started.json()["invocationArn"].as_str().unwrap().to_owned();
    let id = arn
        .strip_prefix("arn:aws:bedrock:eu-west-1:000000000000:async-invoke/")
        .unwrap();
    assert!(
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    assert_eq!(started.json(), json!({"invocationArn": arn}));

    for encode in [true, false] {
        let r = get_invocation(&mock, &arn, encode).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let inv = r.json();
        assert_eq!(inv["invocationArn"], arn.as_str());
        assert_eq!(
            inv["modelArn"],
            "arn:aws:bedrock:eu-west-1::foundation-model/amazon.nova-reel-v1:0"
        );
        assert_eq!(inv["status"], "Completed");
        let submitted = inv["submitTime"].as_str().unwrap();
        assert_eq!(submitted.len(), 20, "{submitted}");
        assert!(submitted.ends_with('Z') && submitted.as_bytes()[10] == b'T');
        assert!(inv["endTime"].is_string());
        assert!(inv.get("failureMessage").is_none());
        assert_eq!(
            inv["outputDataConfig"],
            json!({"s3OutputDataConfig": {"s3Uri": format!("s3://my-videos/runs/{id}")}})
        );
    }

    let video = s3_get(&mock, &format!("s3://my-videos/runs/{id}")).await;
    video.is_video_of(text);

    let jobs = mock.video_jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].name, arn);
    assert_eq!(jobs[0].model, "amazon.nova-reel-v1:0");
    assert_eq!(jobs[0].prompt, text);
    assert_eq!(
        jobs[0].request["modelInput"]["videoGenerationConfig"]["seed"],
        7
    );

    // A bucket without a prefix; the client token makes the start idempotent.
    let mut body = reel_body("waves", "s3://bare-bucket");
    body["clientRequestToken"] = json!("token-1");
    let first = start_reel(&mock, &body, "us-east-1").await.json();
    let again = start_reel(&mock, &body, "us-east-1").await.json();
    assert_eq!(first, again);
    let arn2 = first["invocationArn"].as_str().unwrap();
    assert_ne!(arn2, arn);
    let inv = get_invocation(&mock, arn2, true).await.json();
    assert_eq!(inv["clientRequestToken"], "token-1");
    let uri = inv["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        .as_str()
        .unwrap();
    assert!(uri.starts_with("s3://bare-bucket/mock"), "{uri}");
    s3_get(&mock, uri).await.is_video_of("waves");
}

#[tokio::test]
async fn bedrock_nova_reel_failed_and_hanging() {
    let mock = MockLlm::start().await.unwrap();
    let start = |text: &'static str| {
        let mock = &mock;
        async move {
            let r = start_reel(mock, &reel_body(text, "s3://b/p"), "us-east-1").await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.json()["invocationArn"].as_str().unwrap().to_owned()
        }
    };
    let failed = start("a crash [mock:failed]").await;
    let inv = get_invocation(&mock, &failed, true).await.json();
    assert_eq!(inv["status"], "Failed");
    assert_eq!(inv["failureMessage"], "mock video generation failed");
    assert!(inv["endTime"].is_string());
    let out = inv["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        .as_str()
        .unwrap()
        .to_owned();
    s3_get(&mock, &out).await.s3_error(404, "NoSuchKey");

    let hanging = start("[mock:hang] slow").await;
    let inv = get_invocation(&mock, &hanging, false).await.json();
    assert_eq!(inv["status"], "InProgress");
    assert!(inv.get("endTime").is_none());
    assert!(inv.get("failureMessage").is_none());
    let out = inv["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        .as_str()
        .unwrap()
        .to_owned();
    s3_get(&mock, &out).await.s3_error(404, "NoSuchKey");
}

#[tokio::test]
async fn bedrock_nova_reel_refusals() {
    let mock = MockLlm::start().await.unwrap();
    let good = reel_body("x", "s3://b/p");

    // Unsigned or badly signed.
    let r = post_json(&mock, "/async-invoke", &[], &good).await;
    r.aws_error(403, "MissingAuthenticationTokenException");
    let body = serde_json::to_vec(&good).unwrap();
    let signed = sign(
        &mock,
        "POST",
        "/async-invoke",
        &body,
        "bedrock",
        "us-east-1",
        "wrong-secret",
    );
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let r = call(&mock, Method::POST, "/async-invoke", &headers, body).await;
    r.aws_error(403, "InvalidSignatureException");
    let r = get(
        &mock,
        "/async-invoke/arn%3Aaws%3Abedrock%3Aus-east-1%3A0%3Aasync-invoke%2Fx",
        &[],
    )
    .await;
    r.aws_error(403, "MissingAuthenticationTokenException");

    // Validation.
    let with = |pointer: &str, value: Value| {
        let mut b = good.clone();
        *b.pointer_mut(pointer).unwrap() = value;
        b
    };
    for bad in [
        with("/modelId", Value::Null),
        with("/modelInput/textToVideoParams", json!({})),
        with("/modelInput/textToVideoParams/text", json!("")),
        with(
            "/outputDataConfig/s3OutputDataConfig/s3Uri",
            json!("https://b/p"),
        ),
        with("/outputDataConfig/s3OutputDataConfig/s3Uri", json!("s3://")),
        with("/outputDataConfig", json!({})),
        with(
            "/modelInput/videoGenerationConfig/durationSeconds",
            json!(8),
        ),
    ] {
        let r = start_reel(&mock, &bad, "us-east-1").await;
        r.aws_error(400, "ValidationException");
    }
    let r = aws_call(
        &mock,
        Method::POST,
        "/async-invoke",
        b"not json".to_vec(),
        "bedrock",
        "us-east-1",
    )
    .await;
    r.aws_error(400, "ValidationException");

    // Unknown invocations.
    let r = get_invocation(
        &mock,
        "arn:aws:bedrock:us-east-1:000000000000:async-invoke/nope",
        true,
    )
    .await;
    r.aws_error(404, "ResourceNotFoundException");

    // Injected errors come in Bedrock's shape.
    let r = start_reel(
        &mock,
        &reel_body("x [mock:status=429]", "s3://b/p"),
        "us-east-1",
    )
    .await;
    r.aws_error(429, "ThrottlingException");
    assert!(mock.video_jobs().is_empty());
}

#[tokio::test]
async fn s3_output_needs_a_signature() {
    let mock = MockLlm::start().await.unwrap();
    let arn = start_reel(&mock, &reel_body("x", "s3://b/p"), "us-east-1")
        .await
        .json()["invocationArn"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = arn.rsplit_once('/').unwrap().1;
    let path = format!("/b/p/{id}/output.mp4");
    s3_get(&mock, &format!("s3://b/p/{id}"))
        .await
        .is_video_of("x");

    // No signature at all.
    get(&mock, &path, &[]).await.s3_error(403, "AccessDenied");
    // Signed, but without x-amz-content-sha256.
    let signed = sign(
        &mock,
        "GET",
        &path,
        b"",
        "bedrock",
        "us-east-1",
        BEDROCK_SECRET_ACCESS_KEY,
    );
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    get(&mock, &path, &headers)
        .await
        .s3_error(403, "AccessDenied");
    // Signed for another service (bedrock), with the header added.
    let mut headers = headers.clone();
    let empty = sha256(b"");
    headers.push(("x-amz-content-sha256", empty.as_str()));
    get(&mock, &path, &headers)
        .await
        .s3_error(403, "SignatureDoesNotMatch");
    // Signed with the wrong secret.
    let signed = sign(&mock, "GET", &path, b"", "s3", "us-east-1", "wrong-secret");
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    get(&mock, &path, &headers)
        .await
        .s3_error(403, "SignatureDoesNotMatch");
    // A payload hash that is not the body's.
    let signed = sign(
        &mock,
        "GET",
        &path,
        b"x",
        "s3",
        "us-east-1",
        BEDROCK_SECRET_ACCESS_KEY,
    );
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    get(&mock, &path, &headers)
        .await
        .s3_error(400, "XAmzContentSHA256Mismatch");

    // Keys that name no completed invocation.
    s3_get(&mock, "s3://b/p/nope")
        .await
        .s3_error(404, "NoSuchKey");
    s3_get(&mock, &format!("s3://other/p/{id}"))
        .await
        .s3_error(404, "NoSuchKey");

    // OpenAI's paths win over S3's: this is a file id, answered in OpenAI's shape.
    let r = get(&mock, "/v1/files/output.mp4", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

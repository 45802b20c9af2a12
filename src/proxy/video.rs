//! The answers of a translated Videos route (Veo on Gemini and Vertex AI, Nova Reel on
//! Bedrock): the provider's job becomes OpenAI's video object, and a finished video's
//! content is sent from the answer itself (Vertex's inline bytes) or fetched, streamed,
//! from where the provider put it (Gemini's file download, a GCS object, the S3 object
//! Bedrock wrote) with the target's own credentials.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};

use super::ai_answer::UpstreamAnswer;
use super::answer::{
    buffered_response, json_answer, kong_error, note_answer, transformation_error,
};
use super::exchange::Exchange;
use super::response::{Finish, ProxyBody};
use crate::error::GatewayError;
use crate::gateway::{Gateway, Snapshot};
use crate::llm::target::Target;
use crate::llm::video::{self, Content, Job, Op, State};
use crate::net::upstream::{Endpoint, OutRequest};
use crate::net::upstream_tls::Trust;

/// How the video's content is fetched: the target's connect timeout and trust.
pub(super) struct Fetching<'a> {
    pub connect_timeout: Duration,
    pub trust: Option<&'a Trust>,
}

/// The client's answer to a 200 from the provider for `op`.
pub(super) async fn answer(
    gw: &Gateway,
    a: UpstreamAnswer<'_>,
    op: Op,
    read: Option<Result<Bytes, GatewayError>>,
    mut log: Exchange,
    snap: Arc<Snapshot>,
    fetching: Fetching<'_>,
) -> Response<ProxyBody> {
    let shape = a.shape;
    let bytes = match read {
        Some(Ok(b)) => b,
        Some(Err(e)) => return kong_error(e, shape, log, snap),
        None => {
            let e = GatewayError::Internal("answer body not read".into());
            return kong_error(e, shape, log, snap);
        }
    };
    let target = a.target;
    let Some(family) = target.video else {
        let e = GatewayError::Internal("not a video target".into());
        return kong_error(e, shape, log, snap);
    };
    let (job, state) = match &op {
        Op::Create => {
            let now = super::unix_seconds();
            match video::created_job(family, &bytes, now) {
                Ok(job) => (job, queued()),
                Err(reason) => {
                    return kong_error(transformation_error(target, reason), shape, log, snap)
                }
            }
        }
        Op::Retrieve(job) | Op::Content(job) => match video::state(family, &bytes) {
            Ok(s) => (job.clone(), s),
            Err(reason) => {
                return kong_error(transformation_error(target, reason), shape, log, snap)
            }
        },
    };
    note_answer(
        &mut log,
        None,
        state.model.clone().or_else(|| a.model.clone()),
    );
    if let Op::Content(_) = op {
        let f = (fetching, a.read_timeout);
        return content(gw, target, &job, state, log, snap, f, shape).await;
    }
    let request: &[u8] = if op == Op::Create { a.request } else { b"" };
    let body = video::video_object(&job, &state, a.model.as_deref(), request);
    json_answer(
        StatusCode::OK,
        HeaderMap::new(),
        body.into(),
        log,
        snap,
        a.capture,
        a.feedback,
    )
}

/// A job just started: OpenAI's status for it.
fn queued() -> State {
    State {
        status: "queued",
        error: None,
        content: None,
        model: None,
    }
}

/// `GET /videos/{id}/content`: the finished video's bytes.
#[allow(clippy::too_many_arguments)]
async fn content(
    gw: &Gateway,
    target: &Target,
    job: &Job,
    state: State,
    log: Exchange,
    snap: Arc<Snapshot>,
    fetching: (Fetching<'_>, Duration),
    shape: crate::error::ErrorShape,
) -> Response<ProxyBody> {
    let (data, mime) = match state.content {
        Some(Content::Inline { data, mime }) => (data, mime),
        Some(at) => return fetch(gw, target, at, log, snap, fetching, shape).await,
        None => {
            let why = match &state.error {
                Some(e) => format!("Video '{}' failed: {e}", job.id()),
                None => format!(
                    "Video '{}' is not ready: its status is {}.",
                    job.id(),
                    state.status
                ),
            };
            return kong_error(GatewayError::BadRequest(why), shape, log, snap);
        }
    };
    let mut headers = HeaderMap::new();
    let mime = HeaderValue::from_str(&mime).unwrap_or(HeaderValue::from_static("video/mp4"));
    headers.insert(header::CONTENT_TYPE, mime);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(data.len()));
    buffered_response(StatusCode::OK, headers, data.into(), log, snap, None, None)
}

/// Reads the video from where the provider wrote it and streams it to the client.
async fn fetch(
    gw: &Gateway,
    target: &Target,
    at: Content,
    mut log: Exchange,
    snap: Arc<Snapshot>,
    (fetching, read_timeout): (Fetching<'_>, Duration),
    shape: crate::error::ErrorShape,
) -> Response<ProxyBody> {
    let (connect_timeout, trust) = (fetching.connect_timeout, fetching.trust);
    let built = build_fetch(gw, target, &at, connect_timeout, read_timeout).await;
    let (https, host, port, out) = match built {
        Ok(b) => b,
        Err(e) => return kong_error(e, shape, log, snap),
    };
    let ep = Endpoint {
        https,
        host: &host,
        port,
        trust,
    };
    let sent = gw
        .upstreams
        .send(&ep, out, connect_timeout, read_timeout)
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(f) => return kong_error(f.into_gateway_error(), shape, log, snap),
    };
    let (parts, body) = resp.into_parts();
    if !parts.status.is_success() {
        let e = GatewayError::UpstreamInvalid(format!(
            "reading the video from {host} answered {}",
            parts.status
        ));
        return kong_error(e, shape, log, snap);
    }
    let mut headers = HeaderMap::new();
    for h in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::ETAG,
        header::LAST_MODIFIED,
    ] {
        if let Some(v) = parts.headers.get(&h) {
            headers.insert(h, v.clone());
        }
    }
    log.status = StatusCode::OK.as_u16();
    let finish = Finish::boxed(log, snap, None);
    let mut r = Response::new(ProxyBody::upstream(
        body,
        None,
        None,
        None,
        read_timeout,
        finish,
    ));
    *r.headers_mut() = headers;
    r
}

/// The GET that reads a video, with the target's credentials: Google's key or access token
/// for a Gemini file or a GCS object, a SigV4 signature (service `s3`) for Bedrock's.
async fn build_fetch(
    gw: &Gateway,
    target: &Target,
    at: &Content,
    connect_timeout: Duration,
    read_timeout: Duration,
) -> Result<(bool, String, u16, OutRequest<'static>), GatewayError> {
    let url = match at {
        Content::Url(u) => u.clone(),
        Content::S3 { bucket, key } => s3_url(target, bucket, key)?,
        Content::Inline { .. } => return Err(GatewayError::Internal("inline video".into())),
    };
    let uri: Uri = url.parse().map_err(|_| {
        GatewayError::UpstreamInvalid(format!("the video's location is not a URL: {url}"))
    })?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(GatewayError::UpstreamInvalid(format!(
                "the video's location is not an http(s) URL: {url}"
            )))
        }
    };
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let mut path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut headers = HeaderMap::new();
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let host_value = HeaderValue::from_str(&authority)
        .map_err(|_| GatewayError::UpstreamInvalid("the video's host".into()))?;
    headers.insert(header::HOST, host_value);
    match at {
        Content::S3 { .. } => {
            let signer = target
                .sigv4
                .as_ref()
                .ok_or_else(|| GatewayError::Internal("a bedrock target without SigV4".into()))?;
            let target_uri: Uri = path
                .parse()
                .map_err(|_| GatewayError::UpstreamInvalid("the S3 object's path".into()))?;
            signer
                .sign_as(
                    "s3",
                    &Method::GET,
                    &target_uri,
                    &mut headers,
                    b"",
                    SystemTime::now(),
                )
                .map_err(GatewayError::BeforeProxying)?;
        }
        _ => {
            if let Some(cloud) = &target.auth.cloud_token {
                let source = cloud
                    .as_ref()
                    .map_err(|e| GatewayError::BeforeProxying(e.clone()))?;
                let token = source
                    .authorization(&gw.upstreams, connect_timeout, read_timeout)
                    .await?;
                headers.insert(header::AUTHORIZATION, token);
            }
            if let Some((name, value)) = &target.auth.header {
                let v = value.value().map_err(GatewayError::BeforeProxying)?;
                headers.insert(name.clone(), v);
            }
            if let Some((name, value, _)) = &target.auth.param {
                let v = value.get().map_err(GatewayError::BeforeProxying)?;
                let pair: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair(name, v.expose())
                    .finish();
                path.push(if path.contains('?') { '&' } else { '?' });
                path.push_str(&pair);
            }
        }
    }
    let target_uri: Uri = path
        .parse()
        .map_err(|_| GatewayError::UpstreamInvalid(format!("the video's path: {url}")))?;
    let out = OutRequest {
        method: Method::GET,
        target: target_uri,
        headers: headers.into(),
        body: Bytes::new(),
        upload: None,
    };
    Ok((https, host, port, out))
}

/// Where Bedrock's video is: the bucket's S3 endpoint in the target's region, or, when
/// `upstream_url` moves the target (a proxy, a test double), path-style on that host.
fn s3_url(target: &Target, bucket: &str, key: &str) -> Result<String, GatewayError> {
    let key: String = key
        .split('/')
        .map(|s| {
            percent_encoding::utf8_percent_encode(s, crate::llm::sigv4::UNRESERVED).to_string()
        })
        .collect::<Vec<_>>()
        .join("/");
    if target.options.upstream_url.is_some() {
        let up = &target.upstream;
        return Ok(format!("{}://{}/{bucket}/{key}", up.scheme, up.authority()));
    }
    let region = target
        .sigv4
        .as_ref()
        .map(|s| s.region.as_str())
        .ok_or_else(|| GatewayError::Internal("a bedrock target without a region".into()))?;
    Ok(format!("https://{bucket}.s3.{region}.amazonaws.com/{key}"))
}

//! `tollgate keys create --consumer NAME`: a new API key through the Admin API, printed
//! once (the gateway keeps only its digest).

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// Creates a key for `consumer` (and the consumer when `create_consumer`); returns the key.
pub async fn create(
    admin: &str,
    token: Option<&str>,
    consumer: &str,
    ttl: Option<u64>,
    create_consumer: bool,
) -> Result<String, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let base = admin.trim_end_matches('/');
    let call = |method: Method, path: String, body: Value| {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_string())));
        let client = client.clone();
        async move {
            let req = req.map_err(|e| format!("bad Admin API address {base}: {e}"))?;
            let resp = client
                .request(req)
                .await
                .map_err(|e| format!("cannot reach the Admin API at {base}: {e}"))?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the Admin API answer: {e}"))?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok::<_, String>((status, v))
        }
    };
    let seg: String = form_urlencoded::byte_serialize(consumer.as_bytes()).collect();
    if create_consumer {
        let (status, _) = call(Method::GET, format!("/consumers/{seg}"), Value::Null).await?;
        if status == 404 {
            let (status, v) = call(
                Method::POST,
                "/consumers".into(),
                json!({"username": consumer}),
            )
            .await?;
            if status >= 300 {
                return Err(format!(
                    "creating consumer {consumer}: {status} {}",
                    message(&v)
                ));
            }
        }
    }
    let mut body = json!({});
    if let Some(t) = ttl {
        body["ttl"] = json!(t);
    }
    let (status, v) = call(Method::POST, format!("/consumers/{seg}/key-auth"), body).await?;
    match status {
        201 => v
            .get("key")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "the Admin API answered without a key".to_string()),
        404 => Err(format!(
            "no consumer '{consumer}' (create it with --create-consumer, or POST /consumers)"
        )),
        _ => Err(format!("{status} {}", message(&v))),
    }
}

fn message(v: &Value) -> String {
    v.get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

//! text-generation-inference's `POST .../generate` and `POST .../generate_stream`
//! (`{inputs, parameters}`), as a raw-prompt Llama-2 server answers; errors are
//! `{"error", "error_type"}`.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::MockBody;
use crate::server::{json_response, sse_data, Ctx};

/// TGI's error body.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    let kind = match status.as_u16() {
        422 | 400 => "validation",
        424 => "generation",
        429 => "overloaded",
        _ => "incomplete_generation",
    };
    json_response(status, &json!({"error": message, "error_type": kind}))
}

/// `POST .../generate` (`stream` false) and `.../generate_stream` (`stream` true).
pub(crate) fn generate(ctx: &Ctx<'_>, stream: bool) -> Response<MockBody> {
    let body = ctx.body;
    if body.get("inputs").and_then(Value::as_str).is_none() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Failed to deserialize the JSON body into the target type: missing field `inputs`",
        );
    }
    let params = body.get("parameters");
    if params.is_some_and(|p| p.get("stream").is_some()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Failed to deserialize the JSON body into the target type: parameters: unknown field `stream`",
        );
    }
    let details = params
        .and_then(|p| p.get("details"))
        .and_then(Value::as_bool)
        == Some(true);
    let max = params
        .and_then(|p| p.get("max_new_tokens"))
        .and_then(Value::as_u64);
    let reply = ctx.reply();
    let output = reply.tokens();
    let finish = match max {
        Some(m) if m <= output => "length",
        _ => "eos_token",
    };
    if !stream {
        let mut answer = json!({"generated_text": reply.text()});
        if details {
            answer["details"] = json!({"finish_reason": finish, "generated_tokens": output,
                "seed": null, "prefill": [], "tokens": []});
        }
        return json_response(ctx.status(), &answer);
    }
    let mut events: Vec<Bytes> = reply
        .pieces()
        .enumerate()
        .map(|(i, p)| {
            sse_data(&json!({"index": i + 1, "token": {"id": 1000 + i, "text": p,
                "logprob": -0.25, "special": false}, "generated_text": null, "details": null}))
        })
        .collect();
    // The end-of-sequence token closes the stream with the whole text and the details.
    events.push(sse_data(&json!({"index": output + 1,
        "token": {"id": 2, "text": "</s>", "logprob": -0.01, "special": true},
        "generated_text": reply.text(),
        "details": if details { json!({"finish_reason": finish, "generated_tokens": output + 1, "seed": null}) } else { Value::Null }})));
    ctx.event_stream(events)
}

/// `POST .../pipeline/feature-extraction` (Hugging Face's inference API): one pooled
/// vector per input text, a bare vector for a bare string.
pub(crate) fn feature_extraction(ctx: &Ctx<'_>) -> Response<MockBody> {
    const DIMENSIONS: usize = 8;
    match ctx.body.get("inputs") {
        Some(Value::String(s)) => json_response(
            ctx.status(),
            &crate::embeddings::embed(s.as_bytes(), DIMENSIONS),
        ),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            let vectors: Vec<Vec<f32>> = items
                .iter()
                .map(|t| crate::embeddings::embed(t.as_str().unwrap_or("").as_bytes(), DIMENSIONS))
                .collect();
            json_response(ctx.status(), &vectors)
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "Input should be a valid string or a list of strings",
        ),
    }
}

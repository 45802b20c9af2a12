//! Ollama's native API (`POST .../api/chat`, `POST .../api/embed`): a whole answer with
//! `stream: false`, else NDJSON lines (Ollama streams unless told not to); errors are
//! `{"error": "..."}`. `[mock:tool]` makes the model call the request's first tool, whole,
//! with an object as arguments, as Ollama does.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::MockBody;
use crate::embeddings::embed;
use crate::server::{json_response, to_json, Ctx};
use crate::tools;

/// Dimension of mock Ollama embeddings.
const DIMENSIONS: usize = 8;
/// A fixed timestamp: the mock's answers are deterministic.
const CREATED_AT: &str = "2025-01-01T00:00:00.000000Z";

/// Ollama's error body.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    json_response(status, &json!({ "error": message }))
}

fn line(v: &Value) -> Bytes {
    let mut b = to_json(v);
    b.push(b'\n');
    b.into()
}

/// `POST .../api/chat`.
pub(crate) fn chat(ctx: &Ctx<'_>) -> Response<MockBody> {
    let body = ctx.body;
    if body.get("model").and_then(Value::as_str).is_none() {
        return error(StatusCode::BAD_REQUEST, "model is required");
    }
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            for c in m
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !c
                    .get("function")
                    .and_then(|f| f.get("arguments"))
                    .is_some_and(Value::is_object)
                {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "json: cannot unmarshal string into Go struct field ToolCallFunction.messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments",
                    );
                }
            }
        }
    } else {
        return error(StatusCode::BAD_REQUEST, "messages is required");
    }
    if body.get("options").is_some_and(|o| !o.is_object()) {
        return error(StatusCode::BAD_REQUEST, "options must be an object");
    }
    let answered = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        == Some("tool");
    let fns = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let f = t.get("function")?;
            Some((f.get("name")?.as_str()?, f.get("parameters")))
        });
    let tool = tools::pick(ctx.directives, fns, answered);
    let reply = ctx.reply();
    let model = ctx.model;
    let num_predict = body
        .get("options")
        .and_then(|o| o.get("num_predict"))
        .and_then(Value::as_u64);
    let output = reply.tokens();
    let done_reason = match num_predict {
        Some(n) if n <= output => "length",
        _ => "stop",
    };
    let last = json!({"model": model, "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": ""},
        "done_reason": done_reason, "done": true, "total_duration": 1_000_000,
        "load_duration": 100_000, "prompt_eval_count": ctx.prompt_tokens,
        "prompt_eval_duration": 200_000, "eval_count": output, "eval_duration": 500_000});
    let calls = tool.map(|c| json!([{"function": {"name": c.name, "arguments": c.arguments}}]));
    // Ollama streams when `stream` is absent.
    let stream = body.get("stream").and_then(Value::as_bool) != Some(false);
    if !stream {
        let mut answer = last;
        answer["message"]["content"] = json!(reply.text());
        if let Some(c) = calls {
            answer["message"]["tool_calls"] = c;
        }
        return json_response(ctx.status(), &answer);
    }
    let mut lines: Vec<Bytes> = reply
        .pieces()
        .map(|p| {
            line(&json!({"model": model, "created_at": CREATED_AT,
                "message": {"role": "assistant", "content": p}, "done": false}))
        })
        .collect();
    if let Some(c) = calls {
        lines.push(line(&json!({"model": model, "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": "", "tool_calls": c}, "done": false})));
    }
    lines.push(line(&last));
    let mut response = ctx.event_stream(lines);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// `POST .../api/embed`.
pub(crate) fn embed_input(ctx: &Ctx<'_>) -> Response<MockBody> {
    let body = ctx.body;
    if body.get("model").and_then(Value::as_str).is_none() {
        return error(StatusCode::BAD_REQUEST, "model is required");
    }
    let inputs: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).collect()
        }
        _ => return error(StatusCode::BAD_REQUEST, "invalid input type"),
    };
    let vectors: Vec<Vec<f32>> = inputs
        .iter()
        .map(|t| embed(t.as_bytes(), DIMENSIONS))
        .collect();
    json_response(
        ctx.status(),
        &json!({"model": ctx.model, "embeddings": vectors, "total_duration": 1_000_000,
            "load_duration": 100_000, "prompt_eval_count": ctx.prompt_tokens}),
    )
}

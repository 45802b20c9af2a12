//! The Anthropic Messages API (`POST .../v1/messages`), buffered and streamed, with
//! Anthropic's error shape. `[mock:tool]` makes the model call the request's first tool.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::MockBody;
use crate::server::{json_response, sse_event, Ctx};
use crate::tools::{self, ToolCall};

/// Anthropic's error body.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json_response(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

/// The tool call `[mock:tool]` asks for, unless the last message already carries a
/// tool result.
fn tool_call(ctx: &Ctx<'_>) -> Option<(String, ToolCall)> {
    let last_is_result = ctx
        .body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    let tools = ctx.body.get("tools").and_then(Value::as_array);
    let named = tools
        .into_iter()
        .flatten()
        .filter_map(|t| Some((t.get("name")?.as_str()?, t.get("input_schema"))));
    let call = tools::pick(ctx.directives, named, last_is_result)?;
    Some((format!("toolu_mock_{}", ctx.n), call))
}

/// `POST .../v1/messages`.
pub(crate) fn messages(ctx: &Ctx<'_>, has_version: bool) -> Response<MockBody> {
    if !has_version {
        return error(
            StatusCode::BAD_REQUEST,
            "anthropic-version: header is required",
        );
    }
    if ctx.body.get("max_tokens").and_then(Value::as_u64).is_none() {
        return error(StatusCode::BAD_REQUEST, "max_tokens: Field required");
    }
    let reply = ctx.reply();
    let id = format!("msg_mock_{}", ctx.n);
    let tool = tool_call(ctx);
    let stop = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    let output_tokens = reply.tokens();
    if !ctx.stream() {
        let mut content = vec![json!({"type": "text", "text": reply.text()})];
        if let Some((tid, call)) = &tool {
            content.push(
                json!({"type": "tool_use", "id": tid, "name": call.name, "input": call.arguments}),
            );
        }
        return json_response(
            ctx.status(),
            &json!({
                "id": id, "type": "message", "role": "assistant", "model": ctx.model,
                "content": content, "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": ctx.prompt_tokens, "output_tokens": output_tokens,
                          "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
            }),
        );
    }
    let mut events: Vec<Bytes> = Vec::new();
    events.push(sse_event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": ctx.model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": ctx.prompt_tokens, "output_tokens": 1}}}),
    ));
    events.push(sse_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    events.push(sse_event("ping", &json!({"type": "ping"})));
    for piece in reply.pieces() {
        events.push(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push(sse_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    if let Some((tid, call)) = &tool {
        events.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 1, "content_block":
                {"type": "tool_use", "id": tid, "name": call.name, "input": {}}}),
        ));
        let args = call.arguments.to_string();
        let (a, b) = tools::halves(&args);
        for part in [a, b] {
            events.push(sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
        events.push(sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    events.push(sse_event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"output_tokens": output_tokens}}),
    ));
    events.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    ctx.event_stream(events)
}

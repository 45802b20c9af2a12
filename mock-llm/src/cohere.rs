//! Cohere's v2 API (`POST .../v2/chat`, `POST .../v2/embed`), buffered and streamed, with
//! Cohere's error shape (`{"id", "message"}`). `[mock:tool]` makes the model call the
//! request's first tool, with its words as the tool plan, as Command models do.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::MockBody;
use crate::embeddings::embed;
use crate::server::{json_response, sse_event, Ctx};
use crate::tools::{self, ToolCall};

/// Dimension of mock Cohere embeddings when the request gives no `output_dimension`.
const DIMENSIONS: usize = 8;

/// Cohere's error body.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    json_response(
        status,
        &json!({"id": "00000000-0000-4000-8000-000000000000", "message": message}),
    )
}

fn bad(message: &str) -> Response<MockBody> {
    error(StatusCode::BAD_REQUEST, message)
}

/// What the real API rejects before generating.
fn check_chat(body: &Value) -> Option<Response<MockBody>> {
    if body.get("model").and_then(Value::as_str).is_none() {
        return Some(bad("invalid request: model must be specified"));
    }
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Some(bad("invalid request: messages must be specified"));
    };
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("system" | "user" | "assistant") => {}
            Some("tool") if m.get("tool_call_id").and_then(Value::as_str).is_some() => {}
            Some("tool") => {
                return Some(bad(&format!(
                    "invalid request: messages[{i}].tool_call_id is required"
                )))
            }
            _ => {
                return Some(bad(&format!(
                "invalid request: messages[{i}].role must be one of system, user, assistant, tool"
            )))
            }
        }
        for c in m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let args = c.get("function").and_then(|f| f.get("arguments"));
            if !args.is_some_and(Value::is_string) {
                return Some(bad(&format!(
                    "invalid request: messages[{i}].tool_calls[].function.arguments must be a string"
                )));
            }
        }
    }
    for k in ["top_p", "top_k", "n", "stop", "max_completion_tokens"] {
        if body.get(k).is_some() {
            return Some(bad(&format!(
                "invalid request: unknown field: parameter {k} is not a valid field"
            )));
        }
    }
    None
}

/// The tool call `[mock:tool]` asks for, unless the last message is already a tool result.
fn tool_call(ctx: &Ctx<'_>) -> Option<(String, ToolCall)> {
    let answered = ctx
        .body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        == Some("tool");
    let fns = ctx
        .body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let f = t.get("function")?;
            Some((f.get("name")?.as_str()?, f.get("parameters")))
        });
    let call = tools::pick(ctx.directives, fns, answered)?;
    Some((format!("get_mock_{}", ctx.n), call))
}

/// `POST .../v2/chat`.
pub(crate) fn chat(ctx: &Ctx<'_>) -> Response<MockBody> {
    if let Some(r) = check_chat(ctx.body) {
        return r;
    }
    let reply = ctx.reply();
    let id = format!("c0e1a2b3-0000-4000-8000-{:012}", ctx.n);
    let tool = tool_call(ctx);
    let finish = if tool.is_some() {
        "TOOL_CALL"
    } else {
        "COMPLETE"
    };
    let args = tool
        .as_ref()
        .map(|(_, c)| c.arguments.to_string())
        .unwrap_or_default();
    let output = reply.tokens();
    let usage = json!({
        "billed_units": {"input_tokens": ctx.prompt_tokens, "output_tokens": output},
        "tokens": {"input_tokens": ctx.prompt_tokens + 200, "output_tokens": output + 1},
    });
    if !ctx.stream() {
        let mut message = json!({"role": "assistant"});
        match &tool {
            Some((tid, call)) => {
                message["tool_plan"] = json!(reply.text());
                message["tool_calls"] = json!([{"id": tid, "type": "function",
                    "function": {"name": call.name, "arguments": args}}]);
            }
            None => message["content"] = json!([{"type": "text", "text": reply.text()}]),
        }
        return json_response(
            ctx.status(),
            &json!({"id": id, "message": message, "finish_reason": finish, "usage": usage}),
        );
    }
    let mut events: Vec<Bytes> = Vec::new();
    events.push(sse_event(
        "message-start",
        &json!({"id": id, "type": "message-start", "delta": {"message": {"role": "assistant",
            "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}),
    ));
    match &tool {
        Some((tid, call)) => {
            for piece in reply.pieces() {
                events.push(sse_event(
                    "tool-plan-delta",
                    &json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}}),
                ));
            }
            events.push(sse_event(
                "tool-call-start",
                &json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls":
                    {"id": tid, "type": "function", "function": {"name": call.name, "arguments": ""}}}}}),
            ));
            let (a, b) = tools::halves(&args);
            for part in [a, b] {
                events.push(sse_event(
                    "tool-call-delta",
                    &json!({"type": "tool-call-delta", "index": 0, "delta": {"message":
                        {"tool_calls": {"function": {"arguments": part}}}}}),
                ));
            }
            events.push(sse_event(
                "tool-call-end",
                &json!({"type": "tool-call-end", "index": 0}),
            ));
        }
        None => {
            events.push(sse_event(
                "content-start",
                &json!({"type": "content-start", "index": 0, "delta": {"message":
                    {"content": {"type": "text", "text": ""}}}}),
            ));
            for piece in reply.pieces() {
                events.push(sse_event(
                    "content-delta",
                    &json!({"type": "content-delta", "index": 0, "delta": {"message":
                        {"content": {"text": piece}}}}),
                ));
            }
            events.push(sse_event(
                "content-end",
                &json!({"type": "content-end", "index": 0}),
            ));
        }
    }
    events.push(sse_event(
        "message-end",
        &json!({"type": "message-end", "delta": {"finish_reason": finish, "usage": usage}}),
    ));
    ctx.event_stream(events)
}

/// `POST .../v2/embed`.
pub(crate) fn embed_texts(ctx: &Ctx<'_>) -> Response<MockBody> {
    let body = ctx.body;
    if body.get("model").and_then(Value::as_str).is_none() {
        return bad("invalid request: model must be specified");
    }
    if body.get("input_type").and_then(Value::as_str).is_none() {
        return bad("invalid request: valid input_type must be provided with the provided model");
    }
    let Some(texts) = body.get("texts").and_then(Value::as_array) else {
        return bad("invalid request: texts must be specified");
    };
    let dims = body
        .get("output_dimension")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .filter(|d| (1..=4096).contains(d))
        .unwrap_or(DIMENSIONS);
    let vectors: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| embed(t.as_str().unwrap_or("").as_bytes(), dims))
        .collect();
    json_response(
        ctx.status(),
        &json!({
            "id": format!("e0e1a2b3-0000-4000-8000-{:012}", ctx.n),
            "embeddings": {"float": vectors},
            "texts": texts,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": ctx.prompt_tokens}},
            "response_type": "embeddings_by_type",
        }),
    )
}

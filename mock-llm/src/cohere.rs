//! Cohere's v2 API (`POST .../v2/chat`, `POST .../v2/embed`), buffered and streamed, the
//! v1 chat and v1/v2 rerank that native clients call, with Cohere's error shape
//! (`{"id", "message"}`). `[mock:tool]` makes the model call the
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

/// `POST .../v1/chat`: the v1 API (`message` + `chat_history`), buffered, or streamed as
/// newline-delimited JSON (`application/stream+json`) ending with `stream-end`, which
/// carries the whole response and its billed units.
pub(crate) fn chat_v1(ctx: &Ctx<'_>) -> Response<MockBody> {
    let body = ctx.body;
    let Some(message) = body
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return bad(
            "invalid request: message must be at least 1 token long or tool results must be specified.",
        );
    };
    if body.get("messages").is_some() {
        return bad("invalid request: unknown field: parameter messages is not a valid field");
    }
    let reply = ctx.reply();
    let output = reply.tokens();
    let generation_id = format!("g0e1a2b3-0000-4000-8000-{:012}", ctx.n);
    let mut history: Vec<Value> = body
        .get("chat_history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    history.push(json!({"role": "USER", "message": message}));
    history.push(json!({"role": "CHATBOT", "message": reply.text()}));
    let response = json!({
        "response_id": format!("r0e1a2b3-0000-4000-8000-{:012}", ctx.n),
        "text": reply.text(),
        "generation_id": generation_id,
        "chat_history": history,
        "finish_reason": "COMPLETE",
        "meta": {"api_version": {"version": "1"},
            "billed_units": {"input_tokens": ctx.prompt_tokens, "output_tokens": output},
            "tokens": {"input_tokens": ctx.prompt_tokens + 60, "output_tokens": output}},
    });
    if !ctx.stream() {
        return json_response(ctx.status(), &response);
    }
    let line = |v: &Value| {
        let mut b = serde_json::to_vec(v).unwrap_or_default();
        b.push(b'\n');
        Bytes::from(b)
    };
    let mut lines = vec![line(
        &json!({"is_finished": false, "event_type": "stream-start", "generation_id": generation_id}),
    )];
    for piece in reply.pieces() {
        lines.push(line(
            &json!({"is_finished": false, "event_type": "text-generation", "text": piece}),
        ));
    }
    lines.push(line(
        &json!({"is_finished": true, "event_type": "stream-end",
        "response": response, "finish_reason": "COMPLETE"}),
    ));
    let mut r = ctx.event_stream(lines);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/stream+json"),
    );
    r
}

/// `POST .../v1/rerank` and `.../v2/rerank`: documents ordered by the share of the
/// query's words they contain; billed one search unit per 100 documents.
pub(crate) fn rerank(ctx: &Ctx<'_>, v2: bool) -> Response<MockBody> {
    let body = ctx.body;
    if v2 && body.get("model").and_then(Value::as_str).is_none() {
        return bad("invalid request: model must be specified");
    }
    let Some(query) = body
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.is_empty())
    else {
        return bad("invalid request: query must not be empty");
    };
    let Some(documents) = body.get("documents").and_then(Value::as_array) else {
        return bad("invalid request: documents must be specified");
    };
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    let mut results: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let text = d
                .as_str()
                .or_else(|| d.get("text").and_then(Value::as_str))
                .unwrap_or("")
                .to_lowercase();
            let hits = words.iter().filter(|w| text.contains(w.as_str())).count();
            // Strictly between 0 and 1, like real relevance scores.
            let score = (hits as f64 + 0.5) / (words.len() as f64 + 1.0);
            (i, score)
        })
        .collect();
    results.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(n) = body
        .get("top_n")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
    {
        results.truncate(n);
    }
    let search_units = documents.len().div_ceil(100).max(1);
    json_response(
        ctx.status(),
        &json!({
            "id": format!("f0e1a2b3-0000-4000-8000-{:012}", ctx.n),
            "results": results.iter().map(|(i, s)| json!({"index": i, "relevance_score": s})).collect::<Vec<_>>(),
            "meta": {"api_version": {"version": if v2 { "2" } else { "1" }},
                "billed_units": {"search_units": search_units}},
        }),
    )
}

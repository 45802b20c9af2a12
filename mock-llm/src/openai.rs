//! Chat completions and legacy text completions.

use bytes::Bytes;
use http::Response;
use serde::Serialize;

use crate::body::MockBody;
use crate::server::{json_response, raw_json_response, sse_data, sse_data_raw, to_json, Ctx};
use crate::tools::{self, ToolCall};
use serde_json::{json, Value};

/// The tool call `[mock:tool]` asks for, unless the last message is already a tool result.
fn tool_call(ctx: &Ctx<'_>) -> Option<ToolCall> {
    let tools = ctx.body.get("tools").and_then(Value::as_array);
    let last_is_tool = ctx
        .body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        == Some("tool");
    let fns = tools.into_iter().flatten().filter_map(|t| {
        let f = t.get("function")?;
        Some((f.get("name")?.as_str()?, f.get("parameters")))
    });
    tools::pick(ctx.directives, fns, last_is_tool)
}

/// Token usage, as OpenAI reports it on completions.
#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl Usage {
    fn new(ctx: &Ctx<'_>, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens: ctx.prompt_tokens,
            completion_tokens,
            total_tokens: ctx.prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: Message<'a>,
    finish_reason: &'static str,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Value>,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    /// Outer `None` omits the field; `Some(None)` is the `null` OpenAI sends
    /// on content chunks when usage was requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
    logprobs: Option<()>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Value>,
}

/// `POST .../chat/completions`.
pub(crate) fn chat(ctx: &Ctx<'_>) -> Response<MockBody> {
    let reply = ctx.reply();
    let id = format!("chatcmpl-mock-{}", ctx.n);
    let usage = Usage::new(ctx, reply.tokens());
    let call = tool_call(ctx);
    let call_id = format!("call_mock_{}", ctx.n);
    let finish = if call.is_some() { "tool_calls" } else { "stop" };
    if !ctx.stream() {
        let body = ChatCompletion {
            id: &id,
            object: "chat.completion",
            created: ctx.created,
            model: ctx.model,
            choices: [ChatChoice {
                index: 0,
                message: Message {
                    role: "assistant",
                    content: call.is_none().then(|| reply.text()),
                    tool_calls: call.as_ref().map(|c| {
                        json!([{"id": call_id, "type": "function", "function": {
                            "name": c.name, "arguments": c.arguments.to_string()}}])
                    }),
                },
                finish_reason: finish,
                logprobs: None,
            }],
            usage,
        };
        return json_response(ctx.status(), &body);
    }

    let include_usage = ctx.include_usage();
    let chunk = |delta: Delta<'_>, finish_reason: Option<&'static str>| -> Bytes {
        sse_data(&ChatChunk {
            id: &id,
            object: "chat.completion.chunk",
            created: ctx.created,
            model: ctx.model,
            choices: &[ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                logprobs: None,
            }],
            usage: include_usage.then_some(None),
        })
    };
    let mut events = Vec::with_capacity(reply.tokens() as usize + 4);
    events.push(chunk(
        Delta {
            role: Some("assistant"),
            content: Some(""),
            tool_calls: None,
        },
        None,
    ));
    match &call {
        Some(c) => {
            // The header first, then the arguments in two pieces, as OpenAI streams them.
            let args = c.arguments.to_string();
            let (a, b) = tools::halves(&args);
            let head = json!([{"index": 0, "id": call_id, "type": "function",
                "function": {"name": c.name, "arguments": ""}}]);
            for tc in [
                head,
                json!([{"index": 0, "function": {"arguments": a}}]),
                json!([{"index": 0, "function": {"arguments": b}}]),
            ] {
                events.push(chunk(
                    Delta {
                        tool_calls: Some(tc),
                        ..Delta::default()
                    },
                    None,
                ));
            }
        }
        None => {
            for piece in reply.pieces() {
                events.push(chunk(
                    Delta {
                        role: None,
                        content: Some(piece),
                        tool_calls: None,
                    },
                    None,
                ));
            }
        }
    }
    events.push(chunk(Delta::default(), Some(finish)));
    if include_usage {
        events.push(sse_data(&ChatChunk {
            id: &id,
            object: "chat.completion.chunk",
            created: ctx.created,
            model: ctx.model,
            choices: &[],
            usage: Some(Some(usage)),
        }));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    ctx.event_stream(events)
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [TextChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    finish_reason: Option<&'static str>,
    logprobs: Option<()>,
}

/// `POST .../completions` (the legacy, non-chat API).
pub(crate) fn completions(ctx: &Ctx<'_>) -> Response<MockBody> {
    let reply = ctx.reply();
    let id = format!("cmpl-mock-{}", ctx.n);
    let usage = Usage::new(ctx, reply.tokens());
    let completion = |choices: &[TextChoice<'_>], usage: Option<Usage>| -> Vec<u8> {
        to_json(&TextCompletion {
            id: &id,
            object: "text_completion",
            created: ctx.created,
            model: ctx.model,
            choices,
            usage,
        })
    };
    let choice = |text, finish_reason| {
        [TextChoice {
            text,
            index: 0,
            finish_reason,
            logprobs: None,
        }]
    };
    if !ctx.stream() {
        let choices = choice(reply.text(), Some("stop"));
        return raw_json_response(ctx.status(), completion(&choices, Some(usage)));
    }

    let mut events = Vec::with_capacity(reply.tokens() as usize + 3);
    for piece in reply.pieces() {
        events.push(sse_data_raw(&completion(&choice(piece, None), None)));
    }
    events.push(sse_data_raw(&completion(&choice("", Some("stop")), None)));
    if ctx.include_usage() {
        events.push(sse_data_raw(&completion(&[], Some(usage))));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    ctx.event_stream(events)
}

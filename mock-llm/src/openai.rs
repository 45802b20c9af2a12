//! Chat completions and legacy text completions.

use bytes::Bytes;
use http::Response;
use serde::Serialize;

use crate::body::MockBody;
use crate::server::{json_response, raw_json_response, sse_data, sse_data_raw, to_json, Ctx};

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
    content: &'a str,
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
}

/// `POST .../chat/completions`.
pub(crate) fn chat(ctx: &Ctx<'_>) -> Response<MockBody> {
    let reply = ctx.reply();
    let id = format!("chatcmpl-mock-{}", ctx.n);
    let usage = Usage::new(ctx, reply.tokens());
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
                    content: reply.text(),
                },
                finish_reason: "stop",
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
        },
        None,
    ));
    for piece in reply.pieces() {
        events.push(chunk(
            Delta {
                role: None,
                content: Some(piece),
            },
            None,
        ));
    }
    events.push(chunk(Delta::default(), Some("stop")));
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

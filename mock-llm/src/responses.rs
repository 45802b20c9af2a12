//! The OpenAI Responses API, streamed the way the Codex CLI consumes it.

use bytes::Bytes;
use http::Response;
use serde::Serialize;

use crate::body::MockBody;
use crate::server::{json_response, sse_event, Ctx};

#[derive(Serialize, Clone, Copy)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct ErrorInfo {
    code: &'static str,
    message: &'static str,
}

#[derive(Serialize)]
struct ResponseObject<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    model: &'a str,
    output: &'a [OutputItem<'a>],
    usage: Option<Usage>,
    error: Option<ErrorInfo>,
}

#[derive(Serialize)]
struct OutputItem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    status: &'static str,
    role: &'static str,
    content: &'a [OutputText<'a>],
}

#[derive(Serialize)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
}

impl<'a> OutputText<'a> {
    fn new(text: &'a str) -> OutputText<'a> {
        OutputText {
            kind: "output_text",
            text,
            annotations: [],
        }
    }
}

/// One streaming event; which optional fields appear depends on the type.
#[derive(Serialize, Default)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a ResponseObject<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<&'a OutputItem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<&'a OutputText<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<[(); 0]>,
}

/// `POST .../responses`.
pub(crate) fn responses(ctx: &Ctx<'_>) -> Response<MockBody> {
    let reply = ctx.reply();
    let id = format!("resp_mock_{}", ctx.n);
    let item_id = format!("msg_mock_{}", ctx.n);
    let usage = Usage {
        input_tokens: ctx.prompt_tokens,
        output_tokens: reply.tokens(),
        total_tokens: ctx.prompt_tokens + reply.tokens(),
    };
    let failed = ctx.directives.failed;
    let content = [OutputText::new(reply.text())];
    let message = [OutputItem {
        kind: "message",
        id: &item_id,
        status: "completed",
        role: "assistant",
        content: &content,
    }];
    let response = |status, output, usage, error| ResponseObject {
        id: &id,
        object: "response",
        created_at: ctx.created,
        status,
        model: ctx.model,
        output,
        usage,
        error,
    };
    let failure = || ErrorInfo {
        code: "server_error",
        message: "mock-llm injected failure",
    };

    if !ctx.stream() {
        let body = if failed {
            response("failed", &[], None, Some(failure()))
        } else {
            response("completed", &message, Some(usage), None)
        };
        return json_response(ctx.status(), &body);
    }

    let mut seq = 0u64;
    let mut events: Vec<Bytes> = Vec::with_capacity(reply.tokens() as usize + 8);
    let mut push = |event: Event<'_>| {
        events.push(sse_event(
            event.kind,
            &Event {
                sequence_number: seq,
                ..event
            },
        ));
        seq += 1;
    };

    let in_progress = response("in_progress", &[], None, None);
    push(Event {
        kind: "response.created",
        response: Some(&in_progress),
        ..Event::default()
    });
    if failed {
        push(Event {
            kind: "response.failed",
            response: Some(&response("failed", &[], None, Some(failure()))),
            ..Event::default()
        });
        return ctx.event_stream(events);
    }
    push(Event {
        kind: "response.in_progress",
        response: Some(&in_progress),
        ..Event::default()
    });
    push(Event {
        kind: "response.output_item.added",
        output_index: Some(0),
        item: Some(&OutputItem {
            kind: "message",
            id: &item_id,
            status: "in_progress",
            role: "assistant",
            content: &[],
        }),
        ..Event::default()
    });
    let empty = OutputText::new("");
    push(Event {
        kind: "response.content_part.added",
        item_id: Some(&item_id),
        output_index: Some(0),
        content_index: Some(0),
        part: Some(&empty),
        ..Event::default()
    });
    for piece in reply.pieces() {
        push(Event {
            kind: "response.output_text.delta",
            item_id: Some(&item_id),
            output_index: Some(0),
            content_index: Some(0),
            delta: Some(piece),
            logprobs: Some([]),
            ..Event::default()
        });
    }
    push(Event {
        kind: "response.output_text.done",
        item_id: Some(&item_id),
        output_index: Some(0),
        content_index: Some(0),
        text: Some(reply.text()),
        logprobs: Some([]),
        ..Event::default()
    });
    push(Event {
        kind: "response.content_part.done",
        item_id: Some(&item_id),
        output_index: Some(0),
        content_index: Some(0),
        part: Some(&content[0]),
        ..Event::default()
    });
    push(Event {
        kind: "response.output_item.done",
        output_index: Some(0),
        item: Some(&message[0]),
        ..Event::default()
    });
    push(Event {
        kind: "response.completed",
        response: Some(&response("completed", &message, Some(usage), None)),
        ..Event::default()
    });
    ctx.event_stream(events)
}

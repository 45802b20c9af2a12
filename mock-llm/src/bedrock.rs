//! Amazon Bedrock's Converse API (`POST .../model/{id}/converse` and
//! `.../model/{id}/converse-stream`): SigV4-verified, with the request checks the real
//! API makes, Bedrock's error shape (`{"message"}` + `x-amzn-errortype`), and
//! ConverseStream's binary event stream. `[mock:tool]` makes the model call the request's
//! first tool.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderName, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::MockBody;
use crate::eventstream;
use crate::server::{json_response, Ctx};
use crate::tools::{self, ToolCall};

/// Bedrock's padding member: real stream events carry a `p` of varying length so their
/// size does not reveal the text; clients must ignore it.
const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEF";

/// A Bedrock error: the name goes in `x-amzn-errortype`, the body has only `message`.
pub(crate) fn error(status: StatusCode, kind: &str, message: &str) -> Response<MockBody> {
    let mut r = json_response(status, &json!({ "message": message }));
    if let Ok(v) = HeaderValue::from_str(kind) {
        r.headers_mut()
            .insert(HeaderName::from_static("x-amzn-errortype"), v);
    }
    r
}

/// An injected status in Bedrock's shape, with the error name AWS uses for it.
pub(crate) fn injected(status: StatusCode, message: &str) -> Response<MockBody> {
    let kind = match status.as_u16() {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    };
    error(status, kind, message)
}

fn invalid(message: impl Into<String>) -> Response<MockBody> {
    error(
        StatusCode::BAD_REQUEST,
        "ValidationException",
        &message.into(),
    )
}

const TOP_LEVEL: &[&str] = &[
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "promptVariables",
    "additionalModelResponseFieldPaths",
    "requestMetadata",
    "performanceConfig",
];
const INFERENCE: &[&str] = &["maxTokens", "temperature", "topP", "stopSequences"];
const BLOCKS: &[&str] = &[
    "text",
    "image",
    "document",
    "video",
    "toolUse",
    "toolResult",
    "guardContent",
    "cachePoint",
    "reasoningContent",
];

/// What the real API refuses with a ValidationException (the checks a translating
/// client most easily gets wrong).
fn check(body: &Value) -> Result<(), String> {
    let Some(obj) = body.as_object() else {
        return Err("Malformed input request, please reformat your input and try again.".into());
    };
    if let Some(k) = obj.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
        return Err(format!(
            "Malformed input request: extraneous key [{k}] is not permitted, please reformat your input and try again."
        ));
    }
    if let Some(ic) = obj.get("inferenceConfig") {
        let ic = ic.as_object().ok_or("inferenceConfig must be an object")?;
        if let Some(k) = ic.keys().find(|k| !INFERENCE.contains(&k.as_str())) {
            return Err(format!(
                "Malformed input request: extraneous key [inferenceConfig.{k}] is not permitted."
            ));
        }
    }
    if let Some(system) = obj.get("system") {
        let ok = system
            .as_array()
            .is_some_and(|s| s.iter().all(|b| b.is_object()));
        if !ok {
            return Err("system must be a list of SystemContentBlock objects".into());
        }
    }
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("A conversation must start with a user message. Try again with a conversation that starts with a user message.")?;
    let mut tool_blocks = false;
    let mut previous = "";
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if !matches!(role, "user" | "assistant") {
            return Err(format!("messages.{i}.role must be user or assistant"));
        }
        if i == 0 && role != "user" {
            return Err("A conversation must start with a user message. Try again with a conversation that starts with a user message.".into());
        }
        if role == previous {
            return Err("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.".into());
        }
        previous = role;
        let content = m
            .get("content")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| format!("messages.{i}.content must be a non-empty list"))?;
        for (j, block) in content.iter().enumerate() {
            let keys: Vec<&String> = block
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            let [key] = keys[..] else {
                return Err(format!(
                    "messages.{i}.content.{j} must have exactly one content type"
                ));
            };
            if !BLOCKS.contains(&key.as_str()) {
                return Err(format!(
                    "Malformed input request: extraneous key [{key}] is not permitted."
                ));
            }
            match key.as_str() {
                "text" if block["text"].as_str().is_none_or(|t| t.trim().is_empty()) => {
                    return Err(format!("The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text to the text field, and try again."));
                }
                "toolUse" | "toolResult" => tool_blocks = true,
                "image" => {
                    let format = block.pointer("/image/format").and_then(Value::as_str);
                    let bytes = block.pointer("/image/source/bytes").and_then(Value::as_str);
                    if !matches!(format, Some("png" | "jpeg" | "gif" | "webp")) || bytes.is_none() {
                        return Err(format!(
                            "messages.{i}.content.{j}.image needs a format and source.bytes"
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    match obj.get("toolConfig") {
        None if tool_blocks => {
            return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".into());
        }
        None => {}
        Some(tc) => {
            let tools = tc
                .get("tools")
                .and_then(Value::as_array)
                .filter(|t| !t.is_empty())
                .ok_or("toolConfig.tools must be a non-empty list")?;
            for (i, t) in tools.iter().enumerate() {
                let named = t
                    .pointer("/toolSpec/name")
                    .and_then(Value::as_str)
                    .is_some();
                let schema = t.pointer("/toolSpec/inputSchema/json").is_some();
                if !named || !schema {
                    return Err(format!(
                        "toolConfig.tools.{i}.toolSpec needs a name and inputSchema.json"
                    ));
                }
            }
            if let Some(choice) = tc.get("toolChoice") {
                let ok = choice.get("auto").is_some()
                    || choice.get("any").is_some()
                    || choice.pointer("/tool/name").is_some();
                if !ok {
                    return Err("toolConfig.toolChoice must be one of auto, any, tool".into());
                }
            }
        }
    }
    Ok(())
}

/// The tool call `[mock:tool]` asks for, unless the last message already carries a
/// tool result.
fn tool_call(ctx: &Ctx<'_>) -> Option<(String, ToolCall)> {
    let answered = ctx
        .body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|b| b.get("toolResult").is_some()));
    let specs = ctx
        .body
        .pointer("/toolConfig/tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let spec = t.get("toolSpec")?;
            Some((
                spec.get("name")?.as_str()?,
                spec.pointer("/inputSchema/json"),
            ))
        });
    let call = tools::pick(ctx.directives, specs, answered)?;
    Some((format!("tooluse_mock_{}", ctx.n), call))
}

/// `POST .../model/{id}/invoke` for embedding models: Amazon Titan (`inputText`, one text;
/// `dimensions`, `normalize`) and Cohere Embed (`texts`, `input_type`).
pub(crate) fn invoke(ctx: &Ctx<'_>) -> Response<MockBody> {
    let body = ctx.body;
    // Image models: Amazon's TEXT_IMAGE tasks and Stability's prompts, answered with PNGs.
    if body.get("taskType").and_then(Value::as_str) == Some("TEXT_IMAGE")
        || ctx.model.starts_with("stability.")
    {
        let n = body
            .pointer("/imageGenerationConfig/numberOfImages")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .clamp(1, 5);
        let images: Vec<String> = (0..n).map(|_| crate::media::png_base64()).collect();
        return json_response(ctx.status(), &json!({"images": images, "error": null}));
    }
    if ctx.model.contains("titan-embed") {
        let Some(text) = body.get("inputText").and_then(Value::as_str) else {
            return invalid("Malformed input request: #: required key [inputText] not found");
        };
        let dims = body
            .get("dimensions")
            .and_then(Value::as_u64)
            .unwrap_or(1024);
        if !matches!(dims, 256 | 512 | 1024) {
            return invalid("Malformed input request: #/dimensions: 8 is not a valid enum value");
        }
        let vector = crate::embeddings::embed(text.as_bytes(), dims as usize);
        return json_response(
            ctx.status(),
            &json!({"embedding": vector, "inputTextTokenCount": ctx.prompt_tokens}),
        );
    }
    if ctx.model.contains("cohere.embed") {
        let Some(texts) = body.get("texts").and_then(Value::as_array) else {
            return invalid("Malformed input request: #: required key [texts] not found");
        };
        if body.get("input_type").and_then(Value::as_str).is_none() {
            return invalid("Malformed input request: #: required key [input_type] not found");
        }
        let vectors: Vec<Vec<f32>> = texts
            .iter()
            .map(|t| crate::embeddings::embed(t.as_str().unwrap_or("").as_bytes(), 1024))
            .collect();
        return json_response(
            ctx.status(),
            &json!({"id": format!("emb-mock-{}", ctx.n), "embeddings": vectors,
                "texts": texts, "response_type": "embeddings_floats"}),
        );
    }
    invalid(format!(
        "The provided model identifier is invalid for InvokeModel in mock-llm: {}",
        ctx.model
    ))
}

/// `POST .../model/{id}/converse` (`stream` false) or `.../converse-stream`.
pub(crate) fn converse(ctx: &Ctx<'_>, stream: bool) -> Response<MockBody> {
    if let Err(message) = check(ctx.body) {
        return invalid(message);
    }
    let reply = ctx.reply();
    let tool = tool_call(ctx);
    let stop = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    let output_tokens = reply.tokens();
    let usage = json!({
        "inputTokens": ctx.prompt_tokens,
        "outputTokens": output_tokens,
        "totalTokens": ctx.prompt_tokens + output_tokens,
    });
    if !stream {
        let mut content = vec![json!({ "text": reply.text() })];
        if let Some((id, call)) = &tool {
            content.push(
                json!({"toolUse": {"toolUseId": id, "name": call.name, "input": call.arguments}}),
            );
        }
        return json_response(
            ctx.status(),
            &json!({
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop,
                "usage": usage,
                "metrics": {"latencyMs": 1},
            }),
        );
    }
    let ev = |kind: &str, payload: Value| -> Bytes {
        Bytes::from(eventstream::event(kind, payload.to_string().as_bytes()))
    };
    let mut events = vec![ev(
        "messageStart",
        json!({"p": PADDING, "role": "assistant"}),
    )];
    for piece in reply.pieces() {
        events.push(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": piece}, "p": &PADDING[..piece.len().min(PADDING.len())]}),
        ));
    }
    events.push(ev("contentBlockStop", json!({"contentBlockIndex": 0})));
    if let Some((id, call)) = &tool {
        events.push(ev(
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": id, "name": call.name}}}),
        ));
        let args = call.arguments.to_string();
        let (a, b) = tools::halves(&args);
        for part in [a, b] {
            events.push(ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": part}}}),
            ));
        }
        events.push(ev("contentBlockStop", json!({"contentBlockIndex": 1})));
    }
    events.push(ev("messageStop", json!({"stopReason": stop})));
    events.push(ev(
        "metadata",
        json!({"usage": usage, "metrics": {"latencyMs": 1}}),
    ));
    let mut r = ctx.event_stream(events);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn checks_what_converse_refuses() {
        let ok = json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "inferenceConfig": {"maxTokens": 5}});
        assert_eq!(check(&ok), Ok(()));
        for (bad, says) in [
            (
                json!({"model": "x", "messages": []}),
                "extraneous key [model]",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": [{"text": "a"}]}]}),
                "start with a user message",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "a"}]},
                    {"role": "user", "content": [{"text": "b"}]}]}),
                "alternate",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": " "}]}]}),
                "is blank",
            ),
            (
                json!({"messages": [{"role": "user", "content": [
                    {"toolResult": {"toolUseId": "t", "content": [{"text": "x"}]}}]}]}),
                "toolConfig field must be defined",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "a"}]}],
                    "inferenceConfig": {"max_tokens": 1}}),
                "inferenceConfig.max_tokens",
            ),
        ] {
            let e = check(&bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}

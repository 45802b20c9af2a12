//! Pieces shared by the dialects that rebuild OpenAI chat requests and answers: reading the
//! client's members and tools, writing OpenAI answers, chunks and embedding lists. Their
//! refusals are written here once, so dialects that share a check share its words.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::llm::body::BodyView;
use crate::llm::sse;
use crate::llm::usage::Usage;
use crate::llm::{Encode, EncodeError};

/// An encode error with `msg`.
pub fn bad(msg: impl Into<String>) -> EncodeError {
    EncodeError(msg.into())
}

/// A member of the client's body as JSON; `null` reads as absent.
pub fn field(body: &BodyView<'_>, k: &str) -> Result<Option<Value>, EncodeError> {
    match body.raw(k) {
        None => Ok(None),
        Some(r) => serde_json::from_str::<Value>(r)
            .map(|v| (!v.is_null()).then_some(v))
            .map_err(|_| bad(format!("'{k}' is not valid JSON"))),
    }
}

/// The model sent upstream: the gateway's choice, else the client's.
pub fn model(body: &BodyView<'_>, e: &Encode<'_>) -> Result<String, EncodeError> {
    match e.model {
        Some(m) => Ok(m.to_string()),
        None => body.str("model").map(|m| m.into_owned()).ok_or_else(|| {
            bad("model parameter not found in request, nor in gateway configuration")
        }),
    }
}

/// The client's `messages` array.
pub fn messages(body: &BodyView<'_>) -> Result<Vec<Value>, EncodeError> {
    match field(body, "messages")? {
        Some(Value::Array(m)) => Ok(m),
        Some(_) => Err(bad("'messages' must be an array")),
        None => Err(bad("'messages' is required")),
    }
}

/// `messages[i].role`.
pub fn role(m: &Value, i: usize) -> Result<&str, EncodeError> {
    m.get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("'messages[{i}].role' is required")))
}

/// Text of a string content or of an array of text parts (joined with `\n`). A non-text
/// part is refused naming its type and `provider`; Anthropic, Bedrock and Gemini pass None
/// and keep their own older wording (they read only system and tool messages with this).
pub fn text_of(
    content: Option<&Value>,
    i: usize,
    provider: Option<&str>,
) -> Result<String, EncodeError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                match p.get("text").and_then(Value::as_str) {
                    Some(t) => out.push(t),
                    None => return Err(not_text(p, i, j, provider)),
                }
            }
            Ok(out.join("\n"))
        }
        Some(_) => Err(bad(format!(
            "'messages[{i}].content' must be a string or an array"
        ))),
    }
}

fn not_text(part: &Value, i: usize, j: usize, provider: Option<&str>) -> EncodeError {
    match provider {
        Some(provider) => {
            let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
            bad(format!(
                "'messages[{i}].content[{j}].type' '{kind}' is not supported by provider {provider} here"
            ))
        }
        None => bad(format!(
            "'messages[{i}].content' may only have text parts here"
        )),
    }
}

/// `messages[i].tool_call_id` of a tool message.
pub fn tool_call_id(m: &Value, i: usize) -> Result<&str, EncodeError> {
    m.get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("'messages[{i}].tool_call_id' is required")))
}

/// The URL of content part `messages[i].content[j]` of type `image_url` (`image_url.url`,
/// or `image_url` as a bare string).
pub fn image_url(part: &Value, i: usize, j: usize) -> Result<&str, EncodeError> {
    part.get("image_url")
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad(format!(
                "'messages[{i}].content[{j}].image_url.url' is required"
            ))
        })
}

/// `data:<media>;base64,<data>` split into its parts.
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

/// `max_completion_tokens` / `max_tokens` from the request, else from the config.
pub fn max_tokens(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Option<u64>, EncodeError> {
    match field(body, "max_completion_tokens")?.or(field(body, "max_tokens")?) {
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad("'max_tokens' must be a positive integer")),
        None => Ok(e.options.max_tokens),
    }
}

/// A sampling parameter: the request's value wins, the config fills the gap.
pub fn sampling(
    body: &BodyView<'_>,
    k: &str,
    conf: Option<Value>,
) -> Result<Option<Value>, EncodeError> {
    Ok(field(body, k)?.or(conf))
}

/// `stop` as a list of strings.
pub fn stop(body: &BodyView<'_>) -> Result<Option<Vec<Value>>, EncodeError> {
    match field(body, "stop")? {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![Value::String(s)])),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(Some(a)),
        Some(_) => Err(bad("'stop' must be a string or an array of strings")),
    }
}

/// Refuses `n` other than 1: these APIs return one choice per request.
pub fn only_one_choice(body: &BodyView<'_>, provider: &str) -> Result<(), EncodeError> {
    match field(body, "n")? {
        Some(n) if n.as_u64() != Some(1) => Err(bad(format!(
            "'n': provider {provider} returns one choice per request; only n=1 is supported"
        ))),
        _ => Ok(()),
    }
}

/// One function tool of the client's `tools`.
pub struct FunctionTool {
    /// The function's name.
    pub name: String,
    /// The description for the model, when the client gave one.
    pub description: Option<Value>,
    /// The arguments' JSON Schema as the client wrote it; None when it gave none.
    pub parameters: Option<Value>,
}

impl FunctionTool {
    /// `{"name", "description"?, key: …}`, the shape of every provider's declaration:
    /// `schema` gets the client's schema and returns what goes under `key` (None leaves
    /// the key out).
    pub fn declaration(
        self,
        key: &str,
        schema: impl FnOnce(Option<Value>) -> Option<Value>,
    ) -> Value {
        let mut d = Map::new();
        d.insert("name".into(), Value::String(self.name));
        if let Some(desc) = self.description {
            d.insert("description".into(), desc);
        }
        if let Some(s) = schema(self.parameters) {
            d.insert(key.into(), s);
        }
        Value::Object(d)
    }

    /// The tool in OpenAI's own shape, for providers that take it (Cohere, Ollama), with
    /// the schema they require.
    pub fn openai(self) -> Value {
        let f = self.declaration("parameters", |p| Some(schema_or_empty(p)));
        json!({"type": "function", "function": f})
    }
}

/// A tool's schema, or the empty object schema for providers that require one.
pub fn schema_or_empty(parameters: Option<Value>) -> Value {
    parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}}))
}

/// The client's `tools`; only function tools exist upstream.
pub fn function_tools(tools: &Value, provider: &str) -> Result<Vec<FunctionTool>, EncodeError> {
    let Value::Array(tools) = tools else {
        return Err(bad("'tools' must be an array"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(format!(
                "'tools[{i}].type': provider {provider} takes function tools only"
            )));
        }
        let f = t.get("function");
        let name = f
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("'tools[{i}].function.name' is required")))?;
        let member = |k: &str| f.and_then(|f| f.get(k)).filter(|v| !v.is_null()).cloned();
        out.push(FunctionTool {
            name: name.to_string(),
            description: member("description"),
            parameters: member("parameters"),
        });
    }
    Ok(out)
}

/// The client's `tool_choice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolChoice<'a> {
    /// The model decides.
    Auto,
    /// No tool may be called.
    None,
    /// Some tool must be called.
    Required,
    /// `{"type": "function", "function": {"name": …}}`: this function must be called.
    Function(&'a str),
}

/// Reads `tool_choice` (a mode string or a named function).
pub fn tool_choice(tc: &Value) -> Result<ToolChoice<'_>, EncodeError> {
    match tc {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad(format!("'tool_choice' '{other}' is not a valid value"))),
        },
        Value::Object(o) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(ToolChoice::Function)
            .ok_or_else(|| bad("'tool_choice.function.name' is required")),
        _ => Err(bad("'tool_choice' must be a string or an object")),
    }
}

/// An assistant message's `tool_calls[j]`.
pub struct ToolCall<'a> {
    /// The call's id, which the tool message answering it names.
    pub id: Option<&'a str>,
    /// The function called.
    pub name: &'a str,
    /// The arguments' JSON text; "" when absent.
    pub arguments: &'a str,
}

/// Reads `messages[i].tool_calls[j]`; the function's name is required.
pub fn tool_call(call: &Value, i: usize, j: usize) -> Result<ToolCall<'_>, EncodeError> {
    let f = call.get("function");
    let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
    let Some(name) = name else {
        return Err(bad(format!(
            "'messages[{i}].tool_calls[{j}].function.name' is required"
        )));
    };
    Ok(ToolCall {
        id: call.get("id").and_then(Value::as_str),
        name,
        arguments: f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or(""),
    })
}

/// `messages[i].tool_calls[j]` for providers that pair results with calls by id (Anthropic,
/// Bedrock): its id, name and arguments as an object.
pub fn tool_use(call: &Value, i: usize, j: usize) -> Result<(&str, &str, Value), EncodeError> {
    let f = call.get("function");
    let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
    let id = call.get("id").and_then(Value::as_str);
    let (Some(name), Some(id)) = (name, id) else {
        return Err(bad(format!(
            "'messages[{i}].tool_calls[{j}]' needs an id and function.name"
        )));
    };
    let args = f
        .and_then(|f| f.get("arguments"))
        .and_then(Value::as_str)
        .unwrap_or("");
    Ok((id, name, arguments_object(args, i, j)?))
}

/// Tool-call arguments (a JSON string from OpenAI) as the object some providers want.
pub fn arguments_object(args: &str, i: usize, j: usize) -> Result<Value, EncodeError> {
    if args.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(args).map_err(|_| {
        bad(format!(
            "'messages[{i}].tool_calls[{j}].function.arguments' is not valid JSON"
        ))
    })
}

/// A provider's tool-call input object as OpenAI's arguments string (`{}` when absent).
pub fn arguments_string(input: Option<&Value>) -> String {
    match input {
        Some(v) => serde_json::to_string(v).unwrap_or_else(|_| "{}".into()),
        None => "{}".into(),
    }
}

/// An OpenAI tool call of an answer; `id` and `name` as the provider gave them (a missing
/// one is `null`).
pub fn openai_tool_call(id: impl Serialize, name: impl Serialize, arguments: String) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

/// The stream delta opening tool call `index` (its arguments may follow in pieces).
pub fn tool_call_start(
    index: u64,
    id: impl Serialize,
    name: impl Serialize,
    arguments: &str,
) -> Value {
    json!({"tool_calls": [{"index": index, "id": id, "type": "function",
        "function": {"name": name, "arguments": arguments}}]})
}

/// The stream delta with a piece of tool call `index`'s arguments.
pub fn tool_call_arguments(index: u64, piece: &str) -> Value {
    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
}

/// 64-bit FNV-1a: stable ids from content, for providers that send none.
pub fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What a decoded answer says, in OpenAI's terms.
pub struct Answer<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: Option<&'a str>,
    pub content: String,
    pub reasoning: Option<String>,
    pub tool_calls: Vec<Value>,
    pub finish_reason: &'a str,
    pub usage: Option<&'a Usage>,
}

/// An OpenAI `chat.completion` body.
pub fn completion(a: Answer<'_>) -> Result<Vec<u8>, String> {
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    let content = if a.content.is_empty() && !a.tool_calls.is_empty() {
        Value::Null
    } else {
        Value::String(a.content)
    };
    message.insert("content".into(), content);
    if let Some(r) = a.reasoning.filter(|r| !r.is_empty()) {
        message.insert("reasoning_content".into(), Value::String(r));
    }
    if !a.tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(a.tool_calls));
    }
    let mut out = json!({
        "id": a.id,
        "object": "chat.completion",
        "created": a.created,
        "model": a.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": a.finish_reason}],
    });
    if let Some(u) = a.usage {
        out["usage"] = u.openai_json();
    }
    serde_json::to_vec(&out).map_err(|e| e.to_string())
}

/// Writes `chat.completion.chunk` events for one translated stream. The id and model are
/// written as the dialect holds them: a `String` (empty until known), or an `Option` for
/// streams whose chunks say `null` when the upstream named none (Gemini's id, Bedrock's model).
#[derive(Debug, Default)]
pub struct Chunks<I = String, M = String> {
    /// The stream's id.
    pub id: I,
    /// The model the chunks name.
    pub model: M,
    /// The `created` stamp of every chunk.
    pub created: u64,
}

impl<I: Serialize, M: Serialize> Chunks<I, M> {
    /// One chunk with `delta` (and a finish reason on the last one).
    pub fn delta(&self, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        self.delta_at(0, delta, finish, out);
    }

    /// One chunk of choice `index` (streams with several candidates).
    pub fn delta_at(&self, index: u64, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        let v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        sse::write_data(out, &v);
    }

    /// The usage chunk (`choices: []`), when the provider reported usage, then `[DONE]`.
    pub fn end(&self, usage: Option<&Usage>, out: &mut Vec<u8>) {
        if let Some(u) = usage {
            let v = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": u.openai_json(),
            });
            sse::write_data(out, &v);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// A `server_error` event (the stream failed after it started).
    pub fn error(&self, message: &str, code: &str, out: &mut Vec<u8>) {
        error_event(message, "server_error", code, out);
    }
}

/// An error event in OpenAI's shape, for a stream that failed after it started.
pub fn error_event(message: &str, kind: &str, code: &str, out: &mut Vec<u8>) {
    sse::write_data(
        out,
        &json!({"error": {"message": message, "type": kind, "code": code}}),
    );
}

/// An OpenAI error body.
pub fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Option<Vec<u8>> {
    serde_json::to_vec(
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
    .ok()
}

/// The texts of an embeddings request's `input` (strings only: token arrays have no
/// meaning for another provider's tokenizer).
pub fn embedding_inputs(body: &BodyView<'_>, provider: &str) -> Result<Vec<String>, EncodeError> {
    match field(body, "input")? {
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad(format!(
                    "'input[{i}]': provider {provider} embeds text; token arrays are not supported"
                ))),
            })
            .collect(),
        _ => Err(bad("'input' must be a string or an array of strings")),
    }
}

/// An OpenAI embeddings list from float vectors.
pub fn embedding_list(
    vectors: Vec<Value>,
    model: Option<&str>,
    usage: Option<&Usage>,
) -> Result<Vec<u8>, String> {
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    let mut out = Map::new();
    out.insert("object".into(), json!("list"));
    out.insert("data".into(), Value::Array(data));
    if let Some(m) = model {
        out.insert("model".into(), json!(m));
    }
    let u = usage.cloned().unwrap_or_default();
    out.insert(
        "usage".into(),
        json!({"prompt_tokens": u.prompt_tokens, "total_tokens": u.total_tokens}),
    );
    serde_json::to_vec(&Value::Object(out)).map_err(|e| e.to_string())
}

/// One OpenAI chat chunk, as the stages that rebuild a chat stream into another API's events
/// (Responses, Messages) read it.
pub enum ChatChunk<'a> {
    /// An in-band `error` object: its message, and its `code` (else `type`) when it names one.
    Error {
        message: &'a str,
        code: Option<&'a str>,
    },
    Data {
        model: Option<&'a str>,
        /// A non-null `usage` member, as sent.
        usage: Option<&'a Value>,
        /// The first choice's delta text (non-empty), tool-call deltas and finish reason;
        /// None when the chunk has no choice (the usage chunk).
        choice: Option<ChunkChoice<'a>>,
    },
}

/// What a chunk's first choice carries.
pub struct ChunkChoice<'a> {
    pub text: Option<&'a str>,
    pub calls: &'a [Value],
    pub finish: Option<&'a str>,
}

/// Reads a parsed chat chunk.
pub fn chat_chunk(v: &Value) -> ChatChunk<'_> {
    if let Some(e) = v.get("error") {
        let s = |k: &str| e.get(k).and_then(Value::as_str);
        return ChatChunk::Error {
            message: s("message").unwrap_or("upstream error"),
            code: s("code").or_else(|| s("type")),
        };
    }
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .map(|c| {
            let delta = c.get("delta");
            ChunkChoice {
                text: delta
                    .and_then(|d| d.get("content"))
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty()),
                calls: delta
                    .and_then(|d| d.get("tool_calls"))
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                finish: c.get("finish_reason").and_then(Value::as_str),
            }
        });
    ChatChunk::Data {
        model: v.get("model").and_then(Value::as_str),
        usage: v.get("usage").filter(|u| !u.is_null()),
        choice,
    }
}

/// The `prompt` of an OpenAI images request for a provider that returns the image itself
/// (translated image generation: `response_format` other than `b64_json` is refused).
pub fn image_prompt(body: &BodyView<'_>, provider: &str) -> Result<String, EncodeError> {
    let prompt = match field(body, "prompt")? {
        Some(Value::String(p)) if !p.is_empty() => p,
        Some(_) => return Err(bad("'prompt' must be a non-empty string")),
        None => return Err(bad("'prompt' is required")),
    };
    if let Some(f) = body.str("response_format") {
        if f != "b64_json" {
            return Err(bad(format!(
                "'response_format' '{f}' is not supported by provider {provider} (b64_json only: the image comes back in the answer)"
            )));
        }
    }
    Ok(prompt)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn fnv_separates_parts() {
        assert_ne!(fnv(&[b"ab", b"c"]), fnv(&[b"a", b"bc"]));
        assert_eq!(fnv(&[b"x"]), fnv(&[b"x"]));
    }

    #[test]
    fn text_parts_and_refusals() {
        let v = json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
        assert_eq!(text_of(Some(&v), 0, Some("p")).unwrap(), "a\nb");
        let v = json!([{"type": "input_audio"}]);
        let e = text_of(Some(&v), 3, Some("prov")).err().unwrap().0;
        assert!(
            e.contains("'messages[3].content[0].type'") && e.contains("prov"),
            "{e}"
        );
        let e = text_of(Some(&v), 3, None).err().unwrap().0;
        assert_eq!(e, "'messages[3].content' may only have text parts here");
        assert_eq!(
            data_url("data:image/png;base64,AAA"),
            Some(("image/png", "AAA"))
        );
        assert_eq!(data_url("https://x/y.png"), None);
    }
}

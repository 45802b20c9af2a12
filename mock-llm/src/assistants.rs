//! OpenAI's Assistants API (beta, `OpenAI-Beta: assistants=v2`; recorded, not
//! required): assistants, threads and thread messages, kept in memory. Runs are
//! not mocked.

// Handlers return error responses through `Err` so `?` can end them early; they
// are built once per request, so boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use serde_json::{json, Value};

use crate::api::{self, invalid, not_found, ok, Answer, Req};

fn field(body: &Value, name: &str) -> Value {
    body.get(name).cloned().unwrap_or(Value::Null)
}

fn or_default(body: &Value, name: &str, default: Value) -> Value {
    match body.get(name) {
        None | Some(Value::Null) => default,
        Some(v) => v.clone(),
    }
}

fn no_assistant(id: &str) -> http::Response<crate::body::MockBody> {
    not_found(&format!("No assistant found with id '{id}'."), None)
}

fn no_thread(id: &str) -> http::Response<crate::body::MockBody> {
    not_found(&format!("No thread found with id '{id}'."), None)
}

/// `POST …/assistants`.
pub(crate) fn create(req: &Req<'_>) -> Answer {
    let body = req.json()?;
    let model = api::required(&body, "model")?;
    let id = format!("asst_mock_{}", req.next_id());
    let assistant = json!({
        "id": id,
        "object": "assistant",
        "created_at": req.now,
        "name": field(&body, "name"),
        "description": field(&body, "description"),
        "model": model,
        "instructions": field(&body, "instructions"),
        "tools": or_default(&body, "tools", json!([])),
        "tool_resources": or_default(&body, "tool_resources", json!({})),
        "metadata": or_default(&body, "metadata", json!({})),
        "top_p": or_default(&body, "top_p", json!(1.0)),
        "temperature": or_default(&body, "temperature", json!(1.0)),
        "reasoning_effort": field(&body, "reasoning_effort"),
        "response_format": or_default(&body, "response_format", json!("auto")),
    });
    req.store().assistants.push(id, assistant.clone());
    ok(&assistant)
}

/// `GET …/assistants/{id}`.
pub(crate) fn get(req: &Req<'_>) -> Answer {
    let id = req.segment(0);
    let assistant = req.store().assistants.get(id).cloned();
    ok(&assistant.ok_or_else(|| no_assistant(id))?)
}

/// `GET …/assistants`.
pub(crate) fn list(req: &Req<'_>) -> Answer {
    let items = req.store().assistants.iter().cloned().collect();
    ok(&api::page(req, items))
}

/// `DELETE …/assistants/{id}`.
pub(crate) fn delete(req: &Req<'_>) -> Answer {
    let id = req.segment(0);
    req.store()
        .assistants
        .remove(id)
        .ok_or_else(|| no_assistant(id))?;
    ok(&json!({"id": id, "object": "assistant.deleted", "deleted": true}))
}

/// A message object for `thread_id` from a create-message body.
fn message(
    req: &Req<'_>,
    thread_id: &str,
    body: &Value,
) -> Result<Value, http::Response<crate::body::MockBody>> {
    let role = api::required(body, "role")?;
    if role != "user" && role != "assistant" {
        return Err(invalid(
            &format!("Invalid value: '{role}'. Supported values are: 'user' and 'assistant'."),
            Some("role"),
        ));
    }
    let text = |value: &str| json!({"type": "text", "text": {"value": value, "annotations": []}});
    let content = match body.get("content") {
        Some(Value::String(s)) => vec![text(s)],
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("text").and_then(Value::as_str) {
                Some(s) if part["type"] == "text" => text(s),
                _ => part.clone(),
            })
            .collect(),
        _ => return Err(api::missing("content")),
    };
    Ok(json!({
        "id": format!("msg_mock_{}", req.next_id()),
        "object": "thread.message",
        "created_at": req.now,
        "thread_id": thread_id,
        "status": "completed",
        "incomplete_details": null,
        "completed_at": req.now,
        "incomplete_at": null,
        "role": role,
        "content": content,
        "assistant_id": null,
        "run_id": null,
        "attachments": or_default(body, "attachments", json!([])),
        "metadata": or_default(body, "metadata", json!({})),
    }))
}

/// `POST …/threads` (optional initial `messages`).
pub(crate) fn thread_create(req: &Req<'_>) -> Answer {
    // The SDK sends `{}` for a bare `threads.create()`; tolerate an empty body too.
    let body = if req.body.is_empty() {
        json!({})
    } else {
        req.json()?
    };
    let id = format!("thread_mock_{}", req.next_id());
    let mut messages = Vec::new();
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        messages.push(message(req, &id, m)?);
    }
    let thread = json!({
        "id": id,
        "object": "thread",
        "created_at": req.now,
        "metadata": or_default(&body, "metadata", json!({})),
        "tool_resources": or_default(&body, "tool_resources", json!({})),
    });
    let mut store = req.store();
    store.threads.push(id, thread.clone());
    for m in messages {
        let message_id = m["id"].as_str().unwrap_or_default().to_owned();
        store.messages.push(message_id, m);
    }
    drop(store);
    ok(&thread)
}

/// `GET …/threads/{id}`.
pub(crate) fn thread_get(req: &Req<'_>) -> Answer {
    let id = req.segment(0);
    let thread = req.store().threads.get(id).cloned();
    ok(&thread.ok_or_else(|| no_thread(id))?)
}

/// `DELETE …/threads/{id}` (its messages go too).
pub(crate) fn thread_delete(req: &Req<'_>) -> Answer {
    let id = req.segment(0);
    let mut store = req.store();
    store.threads.remove(id).ok_or_else(|| no_thread(id))?;
    store.messages.retain(|m| m["thread_id"] != id);
    drop(store);
    ok(&json!({"id": id, "object": "thread.deleted", "deleted": true}))
}

/// `POST …/threads/{id}/messages`.
pub(crate) fn message_create(req: &Req<'_>) -> Answer {
    let thread_id = req.segment(1);
    let body = req.json()?;
    if req.store().threads.get(thread_id).is_none() {
        return Err(no_thread(thread_id));
    }
    let m = message(req, thread_id, &body)?;
    let message_id = m["id"].as_str().unwrap_or_default().to_owned();
    req.store().messages.push(message_id, m.clone());
    ok(&m)
}

/// `GET …/threads/{id}/messages` (newest first unless `order=asc`).
pub(crate) fn message_list(req: &Req<'_>) -> Answer {
    let thread_id = req.segment(1);
    let store = req.store();
    if store.threads.get(thread_id).is_none() {
        return Err(no_thread(thread_id));
    }
    let items = store
        .messages
        .iter()
        .filter(|m| m["thread_id"] == thread_id)
        .cloned()
        .collect();
    drop(store);
    ok(&api::page(req, items))
}

//! OpenAI's Files API (`…/files`) and Batch API (`…/batches`).
//!
//! Uploaded bytes stay in memory ([`api::MAX_FILES`] files of at most
//! [`api::MAX_FILE_BYTES`], the oldest evicted). A batch runs at once when it
//! is created: every input line is answered by the mock's own endpoint for its
//! `url`, the answers go to an output file (JSONL, one line per request, by
//! `custom_id`) and failed requests (`[mock:status=500]` in a line's prompt) to
//! an error file, so the batch is `completed` on its first retrieval and tests
//! need no polling. An input file that does not validate (bad JSON, a line
//! without `custom_id`, a `url` other than the batch's `endpoint`) makes the
//! batch `failed` with `errors`, as OpenAI's validation step does.
//!
//! Cancelling marks the batch `cancelled` (`cancelling_at`, `cancelled_at` set)
//! even though it already ran: tests of the cancel flow see the status they
//! expect, and the output file stays, as OpenAI keeps the results of requests
//! finished before the cancellation.

// Handlers return error responses through `Err` so `?` can end them early; they
// are built once per request, so boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use bytes::Bytes;
use serde_json::{json, Value};

use crate::api::{self, invalid, missing, not_found, ok, Answer, Req, StoredFile};

/// Batch endpoints OpenAI accepts (and the mock answers).
const BATCH_ENDPOINTS: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
];

fn no_such_file(id: &str) -> http::Response<crate::body::MockBody> {
    not_found(&format!("No such File object: {id}"), Some("id"))
}

/// Stores `data` as a new file and returns its object.
fn store_file(
    req: &Req<'_>,
    filename: &str,
    purpose: &str,
    data: Bytes,
    content_type: &'static str,
) -> Value {
    let id = format!("file-mock-{}", req.next_id());
    let object = json!({
        "id": id,
        "object": "file",
        "bytes": data.len(),
        "created_at": req.now,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "status_details": null,
        "expires_at": null,
    });
    req.store().files.push(
        id,
        StoredFile {
            object: object.clone(),
            data,
            content_type,
        },
    );
    object
}

/// `POST …/files` (multipart `file`, `purpose`).
pub(crate) fn create(req: &Req<'_>) -> Answer {
    let form = req.form()?;
    let file = form
        .get("file")
        .filter(|p| p.filename.is_some())
        .ok_or_else(|| missing("file"))?;
    let purpose = form.text("purpose").ok_or_else(|| missing("purpose"))?;
    if file.data.len() > api::MAX_FILE_BYTES {
        return Err(invalid(
            &format!(
                "mock-llm keeps files of at most {} bytes; this one has {}.",
                api::MAX_FILE_BYTES,
                file.data.len()
            ),
            Some("file"),
        ));
    }
    let filename = file.filename.as_deref().unwrap_or("file");
    ok(&store_file(
        req,
        filename,
        &purpose,
        file.data.clone(),
        "application/octet-stream",
    ))
}

/// `GET …/files` (optional `purpose` filter).
pub(crate) fn list(req: &Req<'_>) -> Answer {
    let purpose = req.query("purpose");
    let items = req
        .store()
        .files
        .iter()
        .map(|f| f.object.clone())
        .filter(|o| purpose.as_deref().is_none_or(|p| o["purpose"] == p))
        .collect();
    ok(&api::page(req, items))
}

/// `GET …/files/{id}`.
pub(crate) fn get(req: &Req<'_>) -> Answer {
    let id = req.segment(0);
    let object = req.store().files.get(id).map(|f| f.object.clone());
    ok(&object.ok_or_else(|| no_such_file(id))?)
}

/// `GET …/files/{id}/content`: the stored bytes.
pub(crate) fn content(req: &Req<'_>) -> Answer {
    let id = req.segment(1);
    let file = req
        .store()
        .files
        .get(id)
        .map(|f| (f.data.clone(), f.content_type));
    let (data, content_type) = file.ok_or_else(|| no_such_file(id))?;
    Ok(api::bytes_response(data, content_type))
}

/// `DELETE …/files/{id}`.
pub(crate) fn delete(req: &Req<'_>) -> Answer {
    let id = req.segment(0);
    req.store()
        .files
        .remove(id)
        .ok_or_else(|| no_such_file(id))?;
    ok(&json!({"id": id, "object": "file", "deleted": true}))
}

/// A validation error of a batch input file, in a batch's `errors.data`.
fn line_error(code: &str, message: String, line: usize, param: Option<&str>) -> Value {
    json!({"code": code, "message": message, "param": param, "line": line})
}

/// What running a batch's input produced.
struct Run {
    output: Vec<u8>,
    errors: Vec<u8>,
    total: usize,
    failed: usize,
    input_tokens: u64,
    output_tokens: u64,
    model: Option<String>,
}

/// Validates every line of `input` and, if all are good, answers them.
fn run_batch(
    req: &Req<'_>,
    batch_id: &str,
    endpoint: &str,
    input: &[u8],
) -> Result<Run, Vec<Value>> {
    let mut problems = Vec::new();
    let mut requests = Vec::new();
    for (i, line) in input.split(|b| *b == b'\n').enumerate() {
        let line_no = i + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(value) = serde_json::from_slice::<Value>(line) else {
            problems.push(line_error(
                "invalid_json_line",
                "This line is not parseable as valid JSON.".to_owned(),
                line_no,
                None,
            ));
            continue;
        };
        let Some(custom_id) = value.get("custom_id").and_then(Value::as_str) else {
            problems.push(line_error(
                "missing_required_parameter",
                "Missing required parameter: 'custom_id'.".to_owned(),
                line_no,
                Some("custom_id"),
            ));
            continue;
        };
        let url = value.get("url").and_then(Value::as_str).unwrap_or_default();
        if url != endpoint {
            problems.push(line_error(
                "mismatched_endpoint",
                format!("The provided url '{url}' does not match the batch endpoint '{endpoint}'."),
                line_no,
                Some("url"),
            ));
            continue;
        }
        let body = value.get("body").cloned().unwrap_or(Value::Null);
        if !body.is_object() {
            problems.push(line_error(
                "invalid_request",
                "The request body must be a JSON object.".to_owned(),
                line_no,
                Some("body"),
            ));
            continue;
        }
        requests.push((custom_id.to_owned(), body));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if requests.is_empty() {
        return Err(vec![line_error(
            "empty_file",
            "The batch input file is empty.".to_owned(),
            1,
            None,
        )]);
    }
    let mut run = Run {
        output: Vec::new(),
        errors: Vec::new(),
        total: requests.len(),
        failed: 0,
        input_tokens: 0,
        output_tokens: 0,
        model: None,
    };
    for (i, (custom_id, body)) in requests.iter().enumerate() {
        let (status, answer) = crate::server::batch_answer(req.state, endpoint, body);
        if run.model.is_none() {
            run.model = body.get("model").and_then(Value::as_str).map(str::to_owned);
        }
        let usage = &answer["usage"];
        let tokens =
            |a: &str, b: &str| usage[a].as_u64().or_else(|| usage[b].as_u64()).unwrap_or(0);
        run.input_tokens += tokens("prompt_tokens", "input_tokens");
        run.output_tokens += tokens("completion_tokens", "output_tokens");
        let line = json!({
            "id": format!("batch_req_mock_{}_{}", batch_id.trim_start_matches("batch_mock_"), i + 1),
            "custom_id": custom_id,
            "response": {
                "status_code": status,
                "request_id": format!("req_mock_{}_{}", req.now, i + 1),
                "body": answer,
            },
            "error": null,
        });
        let sink = if (200..300).contains(&status) {
            &mut run.output
        } else {
            run.failed += 1;
            &mut run.errors
        };
        sink.extend_from_slice(&crate::server::to_json(&line));
        sink.push(b'\n');
    }
    Ok(run)
}

/// `POST …/batches` (JSON `input_file_id`, `endpoint`, `completion_window`, `metadata`).
pub(crate) fn batch_create(req: &Req<'_>) -> Answer {
    let body = req.json()?;
    let input_file_id = api::required(&body, "input_file_id")?;
    let endpoint = api::required(&body, "endpoint")?;
    let window = api::required(&body, "completion_window")?;
    if !BATCH_ENDPOINTS.contains(&endpoint) {
        return Err(invalid(
            &format!(
                "Invalid value: '{endpoint}'. Supported values are: {}.",
                BATCH_ENDPOINTS.map(|e| format!("'{e}'")).join(", ")
            ),
            Some("endpoint"),
        ));
    }
    if window != "24h" {
        return Err(invalid(
            &format!("Invalid value: '{window}'. Supported values are: '24h'."),
            Some("completion_window"),
        ));
    }
    let input = req.store().files.get(input_file_id).map(|f| f.data.clone());
    let input = input.ok_or_else(|| {
        invalid(
            &format!(
                "Invalid 'input_file_id': '{input_file_id}'. No such File object: {input_file_id}"
            ),
            Some("input_file_id"),
        )
    })?;
    let id = format!("batch_mock_{}", req.next_id());
    let now = req.now;
    let mut batch = json!({
        "id": id,
        "object": "batch",
        "endpoint": endpoint,
        "model": null,
        "errors": null,
        "input_file_id": input_file_id,
        "completion_window": window,
        "status": "completed",
        "output_file_id": null,
        "error_file_id": null,
        "created_at": now,
        "in_progress_at": now,
        "expires_at": now + 24 * 3600,
        "finalizing_at": now,
        "completed_at": now,
        "failed_at": null,
        "expired_at": null,
        "cancelling_at": null,
        "cancelled_at": null,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "usage": null,
        "metadata": body.get("metadata").cloned().unwrap_or(Value::Null),
    });
    match run_batch(req, &id, endpoint, &input) {
        Ok(run) => {
            let name = |kind: &str| format!("{id}_{kind}.jsonl");
            if !run.output.is_empty() {
                let file = store_file(
                    req,
                    &name("output"),
                    "batch_output",
                    run.output.into(),
                    "application/jsonl",
                );
                batch["output_file_id"] = file["id"].clone();
            }
            if !run.errors.is_empty() {
                let file = store_file(
                    req,
                    &name("error"),
                    "batch_output",
                    run.errors.into(),
                    "application/jsonl",
                );
                batch["error_file_id"] = file["id"].clone();
            }
            batch["model"] = json!(run.model);
            batch["request_counts"] = json!({
                "total": run.total,
                "completed": run.total - run.failed,
                "failed": run.failed,
            });
            batch["usage"] = json!({
                "input_tokens": run.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": run.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": run.input_tokens + run.output_tokens,
            });
        }
        Err(errors) => {
            batch["status"] = json!("failed");
            batch["errors"] = json!({"object": "list", "data": errors});
            batch["failed_at"] = json!(now);
            for key in ["in_progress_at", "finalizing_at", "completed_at"] {
                batch[key] = Value::Null;
            }
        }
    }
    req.store().batches.push(id, batch.clone());
    ok(&batch)
}

fn no_such_batch(id: &str) -> http::Response<crate::body::MockBody> {
    not_found(&format!("No batch found with id '{id}'."), Some("batch_id"))
}

/// `GET …/batches/{id}`.
pub(crate) fn batch_get(req: &Req<'_>) -> Answer {
    let id = req.segment(0);
    let batch = req.store().batches.get(id).cloned();
    ok(&batch.ok_or_else(|| no_such_batch(id))?)
}

/// `POST …/batches/{id}/cancel`: see the module comment.
pub(crate) fn batch_cancel(req: &Req<'_>) -> Answer {
    let id = req.segment(1);
    let mut store = req.store();
    let batch = store.batches.get_mut(id).ok_or_else(|| no_such_batch(id))?;
    if batch["status"] != "failed" && batch["status"] != "cancelled" {
        batch["status"] = json!("cancelled");
        batch["cancelling_at"] = json!(req.now);
        batch["cancelled_at"] = json!(req.now);
    }
    let batch = batch.clone();
    drop(store);
    ok(&batch)
}

/// `GET …/batches`.
pub(crate) fn batch_list(req: &Req<'_>) -> Answer {
    let items = req.store().batches.iter().cloned().collect();
    ok(&api::page(req, items))
}

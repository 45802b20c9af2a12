//! Helpers shared by the provider modules: route YAML builders and readers of OpenAI streams.

use serde_json::{json, Value};

use crate::support::sse_data;

/// The tool the tool-calling tests offer; `[mock:tool]` in a prompt makes mock-llm call it.
pub fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

/// A service with one ai-proxy route per `(path, route_type, model yaml)`; `{MOCK}` is the
/// mock, `{DIR}/<path>.log` each route's file-log.
pub fn routes(auth: &str, list: &[(&str, &str, &str)]) -> String {
    let mut y = String::from(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    host: unused.invalid\n    routes:\n",
    );
    for (path, rt, model) in list {
        y.push_str(&format!(
            "      - name: {path}\n        paths: [\"/{path}\"]\n        plugins:\n          - name: ai-proxy\n            config:\n              route_type: {rt}\n              auth: {auth}\n              logging: {{log_statistics: true}}\n              model: {model}\n          - name: file-log\n            config: {{path: \"{{DIR}}/{path}.log\"}}\n"
        ));
    }
    y
}

/// The JSON chunks of an OpenAI stream, after checking it ends with `[DONE]`.
pub fn chunks(r: &crate::support::Reply) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/event-stream"),
        "{:?}",
        r.header("content-type")
    );
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// The streamed content deltas, joined.
pub fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// The non-null finish reasons of a stream, in order.
pub fn finish_reasons(chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .map(|c| c["choices"][0]["finish_reason"].clone())
        .filter(|f| !f.is_null())
        .collect()
}

/// Streamed tool calls: (name of the first, its arguments joined).
pub fn streamed_call(chunks: &[Value]) -> (String, Value) {
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert!(!deltas.is_empty(), "{chunks:?}");
    assert_eq!(deltas[0][0]["index"], 0);
    assert!(deltas[0][0]["id"].as_str().is_some_and(|s| !s.is_empty()));
    let args: String = deltas
        .iter()
        .filter_map(|d| d[0]["function"]["arguments"].as_str())
        .collect();
    (
        deltas[0][0]["function"]["name"]
            .as_str()
            .unwrap()
            .to_string(),
        serde_json::from_str(&args).unwrap(),
    )
}

/// The error loading `yaml` gives (empty if it loads), with `{MOCK}` as a dead address.
pub fn load_error(yaml: &str) -> String {
    tollgate::gateway::load_str(&yaml.replace("{MOCK}", "http://127.0.0.1:9"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// `routes(...)` with `llm_format: {format}` on every route.
pub fn native_routes(format: &str, auth: &str, list: &[(&str, &str, &str)]) -> String {
    let y = routes(auth, list).replace(
        "            config:\n              route_type:",
        &format!(
            "            config:\n              llm_format: {format}\n              route_type:"
        ),
    );
    assert_eq!(y.matches("llm_format").count(), list.len());
    y
}

/// A native stream reached the client as it came, frame by frame, not buffered.
pub fn streamed_untouched(r: &crate::support::Reply, sent: &str) {
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        !text.contains("chat.completion.chunk") && !text.contains("[DONE]") || sent == "openai",
        "{text}"
    );
    assert!(r.frames.len() > 1, "streamed, not buffered: {:?}", r.frames);
    let (first, last) = (r.frames[0].0, r.frames[r.frames.len() - 1].0);
    assert!(
        last - first >= std::time::Duration::from_millis(60),
        "frames passed as they came: {:?}",
        r.frames.iter().map(|f| f.0).collect::<Vec<_>>()
    );
}

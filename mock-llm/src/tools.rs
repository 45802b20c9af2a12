//! Tool calls the mock makes on `[mock:tool]` (the request's first tool) or
//! `[mock:tool=NAME]`, with arguments that satisfy the tool's JSON schema, so a real agent
//! (Codex) can run them. Once the conversation's last turn is a tool result, the mock answers
//! with text instead: an agent loop then ends after one round trip.

use serde_json::{json, Map, Value};

use crate::faults::Directives;

/// The call to make: the tool's name and its arguments.
pub(crate) struct ToolCall {
    pub name: String,
    pub arguments: Value,
}

/// Picks the tool to call among `tools` (name, parameter schema), or None when the
/// directives did not ask for one or the last turn already carries a tool result.
pub(crate) fn pick<'a>(
    directives: &Directives,
    tools: impl IntoIterator<Item = (&'a str, Option<&'a Value>)>,
    after_tool_result: bool,
) -> Option<ToolCall> {
    if !directives.tool || after_tool_result {
        return None;
    }
    let mut tools = tools.into_iter();
    let (name, schema) = match directives.tool_name.as_deref() {
        Some(wanted) => tools.find(|(n, _)| *n == wanted)?,
        None => tools.next()?,
    };
    Some(ToolCall {
        name: name.to_owned(),
        arguments: schema.map(example).unwrap_or_else(|| json!({})),
    })
}

/// A value satisfying `schema` (required properties only; a `command` (a string array or a
/// command line) gets a harmless `echo`, so an agent that runs it sees output).
fn example(schema: &Value) -> Value {
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let mut out = Map::new();
            let props = schema.get("properties").and_then(Value::as_object);
            let required = schema.get("required").and_then(Value::as_array);
            if let (Some(props), Some(required)) = (props, required) {
                for r in required.iter().filter_map(Value::as_str) {
                    let v = match props.get(r) {
                        Some(p) if r == "command" && is_string_array(p) => {
                            json!(["echo", "mock-tool-ran"])
                        }
                        // A shell command line (Claude Code's Bash tool).
                        Some(p) if r == "command" && p.get("type") == Some(&json!("string")) => {
                            json!("echo mock-tool-ran")
                        }
                        Some(p) => example(p),
                        None => Value::Null,
                    };
                    out.insert(r.to_owned(), v);
                }
            }
            Value::Object(out)
        }
        Some("array") => json!([]),
        Some("string") => schema
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first().cloned())
            .unwrap_or_else(|| json!("mock")),
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(false),
        _ => Value::Null,
    }
}

/// `s` in two pieces at a character boundary near its middle (streamed arguments).
pub(crate) fn halves(s: &str) -> (&str, &str) {
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid += 1;
    }
    s.split_at(mid)
}

fn is_string_array(p: &Value) -> bool {
    p.get("type").and_then(Value::as_str) == Some("array")
        && p.get("items")
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
            == Some("string")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_gets_an_echo() {
        let schema = json!({"type": "object", "required": ["command"],
            "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}}});
        let mut d = Directives::default();
        d.apply_markers("[mock:tool=Bash]");
        let c = pick(&d, [("Bash", Some(&schema))], false).unwrap();
        assert_eq!(c.name, "Bash");
        assert_eq!(c.arguments, json!({"command": "echo mock-tool-ran"}));
    }

    #[test]
    fn picks_first_or_named_and_fills_required_arguments() {
        let schema = json!({"type": "object", "required": ["command", "n"], "properties": {
            "command": {"type": "array", "items": {"type": "string"}},
            "n": {"type": "integer"}, "opt": {"type": "string"}}});
        let mut d = Directives::default();
        d.apply_markers("[mock:tool]");
        let tools = [("shell", Some(&schema)), ("other", None)];
        let c = pick(&d, tools, false).unwrap();
        assert_eq!(c.name, "shell");
        assert_eq!(
            c.arguments,
            json!({"command": ["echo", "mock-tool-ran"], "n": 1})
        );
        assert!(pick(&d, tools, true).is_none(), "not after a tool result");
        d.apply_markers("[mock:tool=other]");
        assert_eq!(pick(&d, tools, false).unwrap().name, "other");
        assert!(pick(&Directives::default(), tools, false).is_none());
    }
}

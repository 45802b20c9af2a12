//! OTLP's protobuf encoding of an `ExportTraceServiceRequest`, written from the same JSON
//! form the HTTP/JSON exporter sends (hex ids, attribute values as `stringValue`/…).
//! Hand-written because the gateway needs only this one message and encoding it takes a
//! few varints; a protobuf code generator would add a build step and a dependency tree.

use serde_json::Value;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn string_field(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes_field(out, field, s.as_bytes());
    }
}

fn fixed64_field(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| s.get(i * 2..i * 2 + 2))
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect()
}

/// `AnyValue` from OTLP JSON's `{"stringValue": …}` forms.
fn any_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(s) = v.get("stringValue").and_then(Value::as_str) {
        bytes_field(&mut out, 1, s.as_bytes());
    } else if let Some(b) = v.get("boolValue").and_then(Value::as_bool) {
        varint_field(&mut out, 2, u64::from(b));
    } else if let Some(i) = v.get("intValue") {
        let n = i
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .or_else(|| i.as_i64())
            .unwrap_or(0);
        varint_field(&mut out, 3, n as u64);
    } else if let Some(d) = v.get("doubleValue").and_then(Value::as_f64) {
        key(&mut out, 4, 1);
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

fn attributes(out: &mut Vec<u8>, field: u32, attrs: Option<&Value>) {
    for a in attrs.and_then(Value::as_array).into_iter().flatten() {
        let mut kv = Vec::new();
        string_field(&mut kv, 1, a["key"].as_str().unwrap_or(""));
        bytes_field(&mut kv, 2, &any_value(&a["value"]));
        bytes_field(out, field, &kv);
    }
}

fn nanos(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
        .unwrap_or(0)
}

fn span(s: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    bytes_field(&mut out, 1, &unhex(s["traceId"].as_str().unwrap_or("")));
    bytes_field(&mut out, 2, &unhex(s["spanId"].as_str().unwrap_or("")));
    if let Some(p) = s["parentSpanId"].as_str() {
        bytes_field(&mut out, 4, &unhex(p));
    }
    string_field(&mut out, 5, s["name"].as_str().unwrap_or(""));
    varint_field(&mut out, 6, s["kind"].as_u64().unwrap_or(0));
    fixed64_field(&mut out, 7, nanos(&s["startTimeUnixNano"]));
    fixed64_field(&mut out, 8, nanos(&s["endTimeUnixNano"]));
    attributes(&mut out, 9, s.get("attributes"));
    let mut status = Vec::new();
    varint_field(&mut status, 3, s["status"]["code"].as_u64().unwrap_or(0));
    bytes_field(&mut out, 15, &status);
    out
}

/// The binary `ExportTraceServiceRequest` for an OTLP JSON body.
pub fn encode(request: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for rs in request["resourceSpans"].as_array().into_iter().flatten() {
        let mut rs_buf = Vec::new();
        let mut resource = Vec::new();
        attributes(&mut resource, 1, rs["resource"].get("attributes"));
        bytes_field(&mut rs_buf, 1, &resource);
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            let mut ss_buf = Vec::new();
            let mut scope = Vec::new();
            string_field(&mut scope, 1, ss["scope"]["name"].as_str().unwrap_or(""));
            string_field(&mut scope, 2, ss["scope"]["version"].as_str().unwrap_or(""));
            bytes_field(&mut ss_buf, 1, &scope);
            for s in ss["spans"].as_array().into_iter().flatten() {
                bytes_field(&mut ss_buf, 2, &span(s));
            }
            bytes_field(&mut rs_buf, 2, &ss_buf);
        }
        bytes_field(&mut out, 1, &rs_buf);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_the_fields_in_protobuf_wire_format() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        let req = json!({"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "tollgate"}}]},
            "scopeSpans": [{"scope": {"name": "tollgate", "version": "0.1.0"}, "spans": [{
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7",
                "name": "chat m", "kind": 2, "startTimeUnixNano": "1000", "endTimeUnixNano": "2000",
                "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}}],
                "status": {"code": 1}}]}]}]});
        let b = encode(&req);
        let trace = unhex("4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(b.windows(16).any(|w| w == trace.as_slice()));
        assert!(b.windows(6).any(|w| w == b"chat m"));
        // start time: field 7, wire type 1 (0x39), then 1000 little-endian.
        assert!(b
            .windows(9)
            .any(|w| w == [0x39, 0xe8, 0x03, 0, 0, 0, 0, 0, 0]));
        // The int attribute: AnyValue field 3 (0x18) = 12.
        assert!(b.windows(2).any(|w| w == [0x18, 12]));
    }
}

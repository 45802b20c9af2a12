//! An encoder for the AWS event-stream binary framing
//! (`application/vnd.amazon.eventstream`) that Bedrock's ConverseStream answers in. Public
//! so tests can turn readable fixtures into the exact bytes Bedrock would send.
//!
//! One message: `total_len u32 · headers_len u32 · prelude_crc u32 · headers · payload ·
//! message_crc u32` (big-endian; CRC-32 of the first 8 bytes, then of everything before
//! the final CRC). A header is `name_len u8 · name · type u8 · value`.

/// A header value, one variant per wire type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 (true) and 1 (false).
    Bool(bool),
    /// Type 2.
    Byte(i8),
    /// Type 3.
    Short(i16),
    /// Type 4.
    Int(i32),
    /// Type 5.
    Long(i64),
    /// Type 6.
    Bytes(Vec<u8>),
    /// Type 7.
    String(String),
    /// Type 8: milliseconds since the Unix epoch.
    Timestamp(i64),
    /// Type 9.
    Uuid([u8; 16]),
}

/// Appends one header; names over 255 bytes and values over 65535 bytes are cut to fit
/// (the format cannot carry more, and nothing the mock sends comes near).
fn put_header(out: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    let name = &name.as_bytes()[..name.len().min(255)];
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    let var = |out: &mut Vec<u8>, kind: u8, b: &[u8]| {
        let b = &b[..b.len().min(u16::MAX as usize)];
        out.push(kind);
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    };
    match value {
        HeaderValue::Bool(true) => out.push(0),
        HeaderValue::Bool(false) => out.push(1),
        HeaderValue::Byte(v) => {
            out.push(2);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Short(v) => {
            out.push(3);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Int(v) => {
            out.push(4);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Long(v) => {
            out.push(5);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Bytes(b) => var(out, 6, b),
        HeaderValue::String(s) => var(out, 7, s.as_bytes()),
        HeaderValue::Timestamp(v) => {
            out.push(8);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Uuid(u) => {
            out.push(9);
            out.extend_from_slice(u);
        }
    }
}

/// One complete message.
pub fn encode(headers: &[(&str, HeaderValue)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        put_header(&mut h, name, value);
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn s(v: &str) -> HeaderValue {
    HeaderValue::String(v.to_owned())
}

/// A ConverseStream event (`messageStart`, `contentBlockDelta`, `metadata`, …) with its
/// JSON payload, headed as Bedrock heads them.
pub fn event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(
        &[
            (":event-type", s(event_type)),
            (":content-type", s("application/json")),
            (":message-type", s("event")),
        ],
        payload,
    )
}

/// A ConverseStream exception (`throttlingException`, `modelStreamErrorException`, …)
/// sent in the stream after it started.
pub fn exception(exception_type: &str, message: &str) -> Vec<u8> {
    let payload = serde_json::json!({ "message": message }).to_string();
    encode(
        &[
            (":exception-type", s(exception_type)),
            (":content-type", s("application/json")),
            (":message-type", s("exception")),
        ],
        payload.as_bytes(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The AWS event-stream test suite's `encoded/positive/all_headers` message: one
    /// header of every type, so each encoding branch matches bytes AWS published.
    #[test]
    fn encodes_the_published_vector() {
        let headers = [
            ("event-type", HeaderValue::Int(40972)),
            ("content-type", s("application/json")),
            ("bool false", HeaderValue::Bool(false)),
            ("bool true", HeaderValue::Bool(true)),
            ("byte", HeaderValue::Byte(-49)),
            (
                "byte buf",
                HeaderValue::Bytes(b"I'm a little teapot!".to_vec()),
            ),
            ("timestamp", HeaderValue::Timestamp(8675309)),
            ("int16", HeaderValue::Short(42)),
            ("int64", HeaderValue::Long(42424242)),
            (
                "uuid",
                HeaderValue::Uuid([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
            ),
        ];
        assert_eq!(
            hex(&encode(&headers, b"{'foo':'bar'}")),
            "000000cc000000af0fae64ca0a6576656e742d74797065040000a00c0c636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0a626f6f6c2066616c73650109626f6f6c207472756500046279746502cf08627974652062756606001449276d2061206c6974746c6520746561706f74210974696d657374616d70080000000000845fed05696e74313603002a05696e7436340500000000028757b20475756964090102030405060708090a0b0c0d0e0f107b27666f6f273a27626172277daba5f10c"
        );
    }

    #[test]
    fn events_carry_bedrocks_headers() {
        let e = event("messageStart", br#"{"role":"assistant"}"#);
        let total = u32::from_be_bytes(e[..4].try_into().unwrap()) as usize;
        assert_eq!(total, e.len());
        let text = String::from_utf8_lossy(&e);
        assert!(text.contains(":event-type") && text.contains("messageStart"));
        assert!(
            String::from_utf8_lossy(&exception("throttlingException", "slow down"))
                .contains("slow down")
        );
    }
}

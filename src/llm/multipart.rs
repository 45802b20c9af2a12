//! Reading one text field of a `multipart/form-data` body (the `model` of an audio or
//! image upload) without building the whole form. Written by hand: the gateway forwards
//! the body untouched and only peeks at a small field, which a streaming form parser
//! crate would do at the cost of a dependency and an async pipeline.

/// The boundary named by a `Content-Type: multipart/form-data; boundary=…` value.
pub fn boundary(content_type: &str) -> Option<&str> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

/// One part of a form: its name, whether it is a file, and its bytes.
struct Part<'a> {
    name: &'a str,
    file: bool,
    value: &'a [u8],
}

/// The form's parts, in order; parts without a readable head are skipped.
fn parts<'a>(body: &'a [u8], boundary: &str) -> Vec<Part<'a>> {
    let delimiter = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let starts: Vec<usize> = finder.find_iter(body).collect();
    let mut out = Vec::new();
    for pair in starts.windows(2) {
        let part = &body[pair[0] + delimiter.len()..pair[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(head_end) = memchr::memmem::find(part, b"\r\n\r\n") else {
            continue;
        };
        let Ok(head) = std::str::from_utf8(&part[..head_end]) else {
            continue;
        };
        let Some(disposition) = head.lines().find(|l| {
            l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
        }) else {
            continue;
        };
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"'))
            })
        };
        let Some(name) = param("name") else {
            continue;
        };
        let value = &part[head_end + 4..];
        out.push(Part {
            name,
            file: param("filename").is_some(),
            value: value.strip_suffix(b"\r\n").unwrap_or(value),
        });
    }
    out
}

/// The value of the first text part named `name` (a part with a filename is a file, not a
/// field); None when absent, not UTF-8, or longer than 1 KiB.
pub fn field(body: &[u8], boundary: &str, name: &str) -> Option<String> {
    let part = parts(body, boundary)
        .into_iter()
        .find(|p| p.name == name && !p.file)?;
    if part.value.len() > 1024 {
        return None;
    }
    std::str::from_utf8(part.value).ok().map(str::to_string)
}

/// A form's text fields as a JSON object of strings, for an API the gateway translates from
/// a form (OpenAI's SDK sends `videos.create` as one). A file part becomes `true` under its
/// name, so the translation can refuse it by name; a field that is not UTF-8 is an error.
pub fn to_json(body: &[u8], boundary: &str) -> Result<Vec<u8>, String> {
    let mut object = serde_json::Map::new();
    for p in parts(body, boundary) {
        let value = if p.file {
            serde_json::Value::Bool(true)
        } else {
            let text = std::str::from_utf8(p.value)
                .map_err(|_| format!("form field '{}' is not UTF-8 text", p.name))?;
            serde_json::Value::String(text.to_string())
        };
        object.entry(p.name.to_string()).or_insert(value);
    }
    serde_json::to_vec(&object).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_field_beside_a_file() {
        let ct = "multipart/form-data; boundary=\"XyZ\"";
        let b = boundary(ct).unwrap();
        assert_eq!(b, "XyZ");
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nmodel\r\n--XyZ\r\n\r\n--XyZ\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ--\r\n";
        assert_eq!(field(body, b, "model").as_deref(), Some("whisper-1"));
        assert_eq!(field(body, b, "prompt"), None);
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(field(b"garbage", b, "model"), None);
        let json: serde_json::Value = serde_json::from_slice(&to_json(body, b).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"file": true, "model": "whisper-1"})
        );
    }
}

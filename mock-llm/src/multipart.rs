//! A small `multipart/form-data` parser (RFC 7578) for the upload endpoints
//! (files, audio transcriptions, image edits, videos).
//!
//! Written by hand rather than pulling in `multer` or similar: mock-llm keeps
//! its dependencies minimal, the bodies are already fully buffered, and the
//! subset clients send (CRLF delimiters, `Content-Disposition: form-data;
//! name="…"; filename="…"`, an optional `Content-Type`) fits in a page.
//! Part contents are kept as [`Bytes`] slices of the body, so binary file
//! contents pass through untouched.

use bytes::Bytes;

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

impl Part {
    /// The part's content as text (lossy), for plain form fields.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// A parsed form: its parts in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Form {
    pub parts: Vec<Part>,
}

impl Form {
    /// The first part named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }

    /// Every part named `name`.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Part> + 'a {
        self.parts.iter().filter(move |p| p.name == name)
    }

    /// The text of the first part named `name`.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(Part::text)
    }
}

/// The `boundary` parameter of a `multipart/form-data` content type.
pub(crate) fn boundary(content_type: &str) -> Result<String, String> {
    let mut params = content_type.split(';');
    let mime = params.next().unwrap_or_default().trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!(
            "expected Content-Type multipart/form-data, got `{mime}`"
        ));
    }
    for param in params {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        if key.trim().eq_ignore_ascii_case("boundary") {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            // RFC 2046: 1 to 70 characters.
            if value.is_empty() || value.len() > 70 {
                return Err("the multipart boundary must be 1 to 70 characters".to_owned());
            }
            return Ok(value.to_owned());
        }
    }
    Err("the multipart Content-Type has no boundary parameter".to_owned())
}

/// Parses `body` with the boundary of `content_type`.
pub(crate) fn parse(content_type: &str, body: &Bytes) -> Result<Form, String> {
    let boundary = boundary(content_type)?;
    parse_with(&boundary, body)
}

/// Parses `body`, whose parts are delimited by `--boundary`.
pub(crate) fn parse_with(boundary: &str, body: &Bytes) -> Result<Form, String> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let next_delimiter = format!("\r\n--{boundary}").into_bytes();
    // The first delimiter may open the body or follow a preamble line.
    let mut pos = if body.starts_with(delimiter) {
        0
    } else {
        find(body, &next_delimiter, 0)
            .map(|i| i + 2)
            .ok_or("no multipart boundary found in the body")?
    };
    let mut form = Form::default();
    loop {
        pos += delimiter.len();
        let rest = body.get(pos..).unwrap_or_default();
        if rest.starts_with(b"--") {
            return Ok(form);
        }
        // Transport padding, then the line break ending the delimiter line.
        let padding = rest
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        pos += padding;
        if !body.get(pos..).unwrap_or_default().starts_with(b"\r\n") {
            return Err("malformed multipart delimiter line (expected CRLF)".to_owned());
        }
        pos += 2;
        let (headers, content_start) = if body.get(pos..).unwrap_or_default().starts_with(b"\r\n") {
            (&b""[..], pos + 2)
        } else {
            let end = find(body, b"\r\n\r\n", pos).ok_or("unterminated multipart part headers")?;
            (body.get(pos..end).unwrap_or_default(), end + 4)
        };
        let content_end = find_delimiter(body, &next_delimiter, content_start)
            .ok_or("unterminated multipart body (no closing boundary)")?;
        form.parts
            .push(part(headers, body.slice(content_start..content_end))?);
        pos = content_end + 2;
    }
}

/// A part from its raw header block and content.
fn part(headers: &[u8], data: Bytes) -> Result<Part, String> {
    let headers = String::from_utf8_lossy(headers);
    let mut name = None;
    let mut filename = None;
    let mut content_type = None;
    for line in headers.split("\r\n") {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("content-disposition") {
            for (k, v) in disposition_params(value) {
                if k.eq_ignore_ascii_case("name") {
                    name = Some(v);
                } else if k.eq_ignore_ascii_case("filename") {
                    filename = Some(v);
                }
            }
        } else if key.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_owned());
        }
    }
    let name = name.ok_or("a multipart part has no Content-Disposition name")?;
    Ok(Part {
        name,
        filename,
        content_type,
        data,
    })
}

/// `form-data; name="a"; filename="b.txt"` → `[("name","a"), ("filename","b.txt")]`.
/// Quoted values may contain `;` and backslash-escaped quotes.
fn disposition_params(value: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = value.chars().peekable();
    // Skip the disposition type (`form-data`).
    for c in chars.by_ref() {
        if c == ';' {
            break;
        }
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ';') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ';') {
            key.push(c);
        }
        if key.is_empty() {
            return params;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'=').is_some() {
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| *c != ';') {
                    value.push(c);
                }
                value = value.trim().to_owned();
            }
        }
        params.push((key.trim().to_owned(), value));
    }
}

/// Position of the next `\r\n--boundary` at or after `from` that really is a
/// delimiter: followed by `--`, or by optional padding and CRLF. Other
/// occurrences are content (a lenient reading of RFC 2046, which forbids them).
fn find_delimiter(body: &[u8], delimiter: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let i = find(body, delimiter, at)?;
        let after = body.get(i + delimiter.len()..).unwrap_or_default();
        let padding = after
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        let rest = after.get(padding..).unwrap_or_default();
        if after.starts_with(b"--") || rest.starts_with(b"\r\n") {
            return Some(i);
        }
        at = i + 1;
    }
}

/// Position of `needle` in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= haystack.len() {
        let offset = haystack.get(i..)?.iter().position(|b| *b == first)?;
        i += offset;
        if haystack.get(i..i + needle.len())? == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Builds a form body, for tests.
#[cfg(test)]
pub(crate) fn encode(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, data) in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{name}\"");
        if let Some(f) = filename {
            disposition.push_str(&format!(
                "; filename=\"{f}\"\r\nContent-Type: application/octet-stream"
            ));
        }
        out.extend_from_slice(disposition.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_from_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc123").as_deref(),
            Ok("abc123")
        );
        assert_eq!(
            boundary("Multipart/Form-Data;charset=utf-8; boundary=\"a b,c\"").as_deref(),
            Ok("a b,c")
        );
        assert!(boundary("multipart/form-data").is_err());
        assert!(boundary("multipart/form-data; boundary=").is_err());
        assert!(boundary("application/json").is_err());
        assert!(boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))).is_err());
    }

    #[test]
    fn fields_and_binary_file() {
        // Contents with CR, LF, NUL, high bytes and a near-miss of the delimiter.
        let binary: Vec<u8> = b"\x00\xff\r\n-bound\r\n--boun\r\n--\r\n--boundX"
            .iter()
            .copied()
            .chain(0..=255u8)
            .collect();
        let body = encode(
            "bound",
            &[
                ("purpose", None, b"batch"),
                ("file", Some("a \\\"q\\\"; b.bin"), &binary),
                ("empty", None, b""),
            ],
        );
        let form = parse("multipart/form-data; boundary=bound", &Bytes::from(body)).unwrap();
        assert_eq!(form.parts.len(), 3);
        assert_eq!(form.text("purpose").as_deref(), Some("batch"));
        let file = form.get("file").unwrap();
        assert_eq!(file.filename.as_deref(), Some("a \"q\"; b.bin"));
        assert_eq!(
            file.content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(file.data, binary);
        assert_eq!(form.text("empty").as_deref(), Some(""));
        assert_eq!(form.get("purpose").unwrap().filename, None);
        assert_eq!(form.all("file").count(), 1);
    }

    #[test]
    fn preamble_padding_and_repeated_names() {
        let body = b"preamble\r\n--b  \r\nContent-Disposition: form-data; name=image[]; filename=x.png\r\n\r\nA\r\n--b\r\ncontent-disposition: form-data; name=\"image[]\"; filename=\"y.png\"\r\n\r\nB\r\n--b--";
        let form = parse_with("b", &Bytes::from_static(body)).unwrap();
        let names: Vec<_> = form.all("image[]").map(|p| p.data.clone()).collect();
        assert_eq!(names, ["A", "B"]);
        assert_eq!(form.parts[0].filename.as_deref(), Some("x.png"));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let ct = "multipart/form-data; boundary=b";
        for body in [
            &b""[..],
            b"no boundary here",
            b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated",
            b"--b\r\nContent-Disposition: form-data; name=\"a\"",
            b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--",
            b"--bX\r\n",
        ] {
            assert!(
                parse(ct, &Bytes::copy_from_slice(body)).is_err(),
                "{body:?}"
            );
        }
        // An empty form is fine.
        assert!(parse(ct, &Bytes::from_static(b"--b--\r\n"))
            .unwrap()
            .parts
            .is_empty());
    }
}

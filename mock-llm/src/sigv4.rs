//! Checking AWS SigV4 signatures the way AWS does for Bedrock (and S3, whose rules differ
//! a little): rebuild the canonical request from what arrived, sign it with the secret the
//! mock knows ([`crate::BEDROCK_SECRET_ACCESS_KEY`]) and compare. Written apart from the
//! gateway's signer, so a test through real HTTP proves the signature, not just
//! self-consistency.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::request::Parts;
use ring::{digest, hmac};

/// How far `x-amz-date` may be from the mock's clock (AWS allows 5 minutes; the mock is
/// looser so slow test machines do not fail).
const SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a request is refused: AWS's error name (`x-amzn-errortype`) and message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub kind: &'static str,
    pub message: String,
}

fn refuse(kind: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        message: message.into(),
    }
}

const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// Checks the request's `Authorization` against `secret` for `service` at `now`.
///
/// For service `s3` the path is encoded once, not twice, and the payload hash is the
/// `x-amz-content-sha256` header's value (which the caller checks against the body).
pub(crate) fn verify(
    parts: &Parts,
    body: &[u8],
    service: &str,
    secret: &str,
    now: SystemTime,
) -> Result<(), Refusal> {
    let header = |n: &str| {
        parts
            .headers
            .get_all(n)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
    };
    let auth = header("authorization")
        .into_iter()
        .next()
        .unwrap_or_default();
    let Some(fields) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(refuse(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let field = |name: &str| {
        fields
            .split(',')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("")
    };
    let (credential, signed_headers, signature) = (
        field("Credential"),
        field("SignedHeaders"),
        field("Signature"),
    );
    let scope: Vec<&str> = credential.splitn(5, '/').collect();
    let [_key_id, date, region, scope_service, terminator] = scope[..] else {
        return Err(refuse(
            "IncompleteSignatureException",
            "Authorization header requires a Credential of the form key/date/region/service/aws4_request.",
        ));
    };
    if scope_service != service || terminator != "aws4_request" {
        return Err(refuse(
            "InvalidSignatureException",
            format!("Credential should be scoped to correct service: '{service}'."),
        ));
    }
    let amz_date = header("x-amz-date").into_iter().next().unwrap_or_default();
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-amz-date") {
        return Err(refuse(
            "IncompleteSignatureException",
            "SignedHeaders must include host and x-amz-date.",
        ));
    }
    if amz_date.get(..8) != Some(date) {
        return Err(refuse(
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.",
        ));
    }
    // The format orders lexicographically like the time it names.
    let earliest = amz_date_of(now.checked_sub(SKEW).unwrap_or(UNIX_EPOCH));
    let latest = amz_date_of(now + SKEW);
    if amz_date < earliest || amz_date > latest {
        return Err(refuse(
            "InvalidSignatureException",
            format!("Signature expired: {amz_date} is now earlier than {earliest}."),
        ));
    }

    let s3 = service == "s3";
    let mut creq = String::new();
    let _ = writeln!(creq, "{}", parts.method);
    let path = parts.uri.path();
    let encoded: Vec<String> = path
        .split('/')
        .map(|segment| match s3 {
            true => aws_encode_bytes(&percent_decode(segment)),
            false => aws_encode(segment),
        })
        .collect();
    let _ = writeln!(creq, "{}", encoded.join("/"));
    let _ = writeln!(creq, "{}", canonical_query(parts.uri.query().unwrap_or("")));
    for n in &names {
        let values: Vec<String> = header(n)
            .iter()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let _ = writeln!(creq, "{n}:{}", values.join(","));
    }
    creq.push('\n');
    creq.push_str(signed_headers);
    creq.push('\n');
    let declared = header("x-amz-content-sha256").into_iter().next();
    match declared {
        Some(hash) if s3 => creq.push_str(&hash),
        _ => creq.push_str(&sha256_hex(body)),
    }

    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex(digest::digest(&digest::SHA256, creq.as_bytes()).as_ref())
    );
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    if hex(&hmac_sha256(&key, sts.as_bytes())) != signature {
        return Err(refuse("InvalidSignatureException", MISMATCH));
    }
    Ok(())
}

/// The region of the request's credential scope (`Credential=key/date/REGION/…`).
pub(crate) fn credential_region(parts: &Parts) -> Option<String> {
    let auth = parts.headers.get("authorization")?.to_str().ok()?;
    let credential = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")?
        .split(',')
        .map(str::trim)
        .find_map(|f| f.strip_prefix("Credential="))?;
    let region = credential.split('/').nth(2)?;
    (!region.is_empty()).then(|| region.to_owned())
}

/// Lower-case hex SHA-256 of `data` (SigV4's payload hash).
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// RFC 3986 encoding of bytes: unreserved characters stay, the rest become `%XX`.
fn aws_encode_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
    out
}

/// A path segment as received (already encoded once) encoded again, as AWS does for
/// every service but S3.
fn aws_encode(segment: &str) -> String {
    aws_encode_bytes(segment.as_bytes())
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn canonical_query(q: &str) -> String {
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                aws_encode_bytes(&percent_decode(k)),
                aws_encode_bytes(&percent_decode(v)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `YYYYMMDDTHHMMSSZ` of a point in time (UTC).
fn amz_date_of(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d, rem) = civil(secs);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`, UTC) of Unix seconds, as AWS's JSON APIs write times.
pub(crate) fn rfc3339(secs: u64) -> String {
    let (y, m, d, rem) = civil(secs);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month, day and seconds into the day of Unix seconds.
fn civil(secs: u64) -> (i64, i64, i64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// AWS's SigV4 test suite `get-vanilla` (service `service`, 2015-08-30T12:36:00Z).
    #[test]
    fn accepts_the_published_get_vanilla_signature() {
        let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let p = parts(
            "GET",
            "/",
            &[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
                ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
            ],
        );
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        assert_eq!(verify(&p, b"", "service", secret, now), Ok(()));
        let wrong = verify(&p, b"", "service", "other", now).unwrap_err();
        assert_eq!(wrong.kind, "InvalidSignatureException");
        assert!(wrong
            .message
            .starts_with("The request signature we calculated"));
        let late = now + Duration::from_secs(3600);
        assert!(verify(&p, b"", "service", secret, late)
            .unwrap_err()
            .message
            .starts_with("Signature expired"));
        assert_eq!(
            verify(&p, b"", "bedrock", secret, now).unwrap_err().kind,
            "InvalidSignatureException"
        );
        let bare = parts("GET", "/", &[("host", "example.amazonaws.com")]);
        assert_eq!(
            verify(&bare, b"", "service", secret, now).unwrap_err().kind,
            "MissingAuthenticationTokenException"
        );
    }

    /// AWS's S3 SigV4 example "GET Object" (examplebucket, 2013-05-24T00:00:00Z): the path
    /// is encoded once and the payload hash is `x-amz-content-sha256`.
    #[test]
    fn accepts_the_published_s3_get_object_signature() {
        let now = UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
        let p = parts(
            "GET",
            "/test.txt",
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", empty),
                ("x-amz-date", "20130524T000000Z"),
                ("authorization", auth),
            ],
        );
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert_eq!(verify(&p, b"", "s3", secret, now), Ok(()));
        assert_eq!(credential_region(&p).as_deref(), Some("us-east-1"));
        assert_eq!(sha256_hex(b""), empty);
        // The signature covers the declared payload hash.
        let mut tampered = p;
        tampered.headers.insert(
            "x-amz-content-sha256",
            http::HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        assert_eq!(
            verify(&tampered, b"", "s3", secret, now).unwrap_err().kind,
            "InvalidSignatureException"
        );
    }

    #[test]
    fn query_and_date_helpers() {
        assert_eq!(canonical_query("b=2&a=%41+&a=1"), "a=1&a=A%2B&b=2");
        assert_eq!(aws_encode("v1%3A0"), "v1%253A0");
        assert_eq!(
            amz_date_of(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229T000000Z"
        );
        assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }
}

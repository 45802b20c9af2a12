//! AWS Signature Version 4, as AWS documents it for header-signed requests to services
//! other than S3 (Bedrock): canonical request → string to sign → HMAC chain from the
//! secret key. Pure functions plus [`Signer::sign`], which adds the headers to a request
//! the proxy is about to send.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use ring::{digest, hmac};

use crate::secret::Secret;

/// What AWS's URI encoding leaves alone: the RFC 3986 unreserved characters.
pub const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Static AWS credentials (from the plugin's `auth` or the environment).
#[derive(Debug)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret<String>,
    /// Temporary credentials (STS) come with a token sent as `x-amz-security-token`.
    pub session_token: Option<Secret<String>>,
}

/// Signs a target's upstream requests.
#[derive(Debug)]
pub struct Signer {
    pub region: String,
    pub service: &'static str,
    /// Resolved at load; a vault reference that failed gives its reason here, and the
    /// requests that need it get a 500 (like other unresolvable auth secrets).
    pub credentials: Result<Credentials, String>,
}

/// The parts of a request that the signature covers.
pub struct Canonical<'a> {
    pub method: &'a str,
    /// The path exactly as sent (already percent-encoded once).
    pub path: &'a str,
    /// The query exactly as sent, without `?`.
    pub query: &'a str,
    /// Header names (any case) and values to sign.
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body.
    pub payload_hash: &'a str,
}

impl Signer {
    /// Adds `x-amz-date`, `x-amz-security-token` (temporary credentials) and
    /// `Authorization` to a request about to be sent with `body`. Signs `host` and those
    /// `x-amz-*` headers; whatever AWS-auth headers the client sent are dropped first.
    pub fn sign(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), String> {
        self.sign_as(self.service, method, uri, headers, body, now)
    }

    /// [`Signer::sign`] for another service of the same account and region: S3 (a video
    /// Bedrock wrote to the user's bucket), which also wants the payload hash as the
    /// signed `x-amz-content-sha256` header.
    pub fn sign_as(
        &self,
        service: &str,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), String> {
        let creds = self.credentials.as_ref().map_err(Clone::clone)?;
        for h in [
            "x-amz-date",
            "x-amz-security-token",
            "x-amz-content-sha256",
            "authorization",
        ] {
            headers.remove(h);
        }
        let amz_date = amz_date(now);
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or("the upstream request has no Host header to sign")?
            .to_string();
        let token = creds.session_token.as_ref().map(|t| t.expose().as_str());
        let mut signed: Vec<(&str, &str)> = vec![("host", &host), ("x-amz-date", &amz_date)];
        if let Some(t) = token {
            signed.push(("x-amz-security-token", t));
        }
        let payload_hash = hex(digest::digest(&digest::SHA256, body).as_ref());
        let s3 = service == "s3";
        if s3 {
            signed.push(("x-amz-content-sha256", &payload_hash));
        }
        let c = Canonical {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            headers: &signed,
            payload_hash: &payload_hash,
        };
        let auth = authorization(
            &c,
            &creds.access_key_id,
            creds.secret_access_key.expose(),
            &self.region,
            service,
            &amz_date,
        );
        if s3 {
            headers.insert(
                HeaderName::from_static("x-amz-content-sha256"),
                HeaderValue::from_str(&payload_hash).map_err(|e| e.to_string())?,
            );
        }
        let mut auth = HeaderValue::from_str(&auth)
            .map_err(|_| "the AWS access key id is not a valid header value".to_string())?;
        auth.set_sensitive(true);
        headers.insert(
            HeaderName::from_static("x-amz-date"),
            HeaderValue::from_str(&amz_date).map_err(|e| e.to_string())?,
        );
        if let Some(t) = token {
            let mut v = HeaderValue::from_str(t)
                .map_err(|_| "the AWS session token is not a valid header value".to_string())?;
            v.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-amz-security-token"), v);
        }
        headers.insert(header::AUTHORIZATION, auth);
        Ok(())
    }
}

/// The `Authorization` header value for a canonical request.
pub fn authorization(
    c: &Canonical<'_>,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let (creq, signed_headers) = canonical_request(c);
    let sts = string_to_sign(amz_date, &scope, &creq);
    let sig = signature(secret, date, region, service, &sts);
    format!("{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={signed_headers}, Signature={sig}")
}

/// The canonical request and its signed-headers list.
pub fn canonical_request(c: &Canonical<'_>) -> (String, String) {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(c.headers.len());
    for (name, value) in c.headers {
        let name = name.to_ascii_lowercase();
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match headers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(&value);
            }
            None => headers.push((name, value)),
        }
    }
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let signed = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut out = String::with_capacity(256);
    out.push_str(c.method);
    out.push('\n');
    out.push_str(&canonical_uri(c.path));
    out.push('\n');
    out.push_str(&canonical_query(c.query));
    out.push('\n');
    for (n, v) in &headers {
        let _ = writeln!(out, "{n}:{v}");
    }
    out.push('\n');
    out.push_str(&signed);
    out.push('\n');
    out.push_str(c.payload_hash);
    (out, signed)
}

/// Services other than S3 encode each path segment once more: the path as sent is
/// already encoded, so a model id's `:` sent as `%3A` is signed as `%253A`.
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(|seg| utf8_percent_encode(seg, UNRESERVED).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Query pairs decoded, encoded the AWS way, sorted by name then value.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| {
                let raw = percent_decode_str(s).collect::<Vec<u8>>();
                percent_encoding::percent_encode(&raw, UNRESERVED).to_string()
            };
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `AWS4-HMAC-SHA256 \n date \n scope \n hex(sha256(canonical request))`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let h = digest::digest(&digest::SHA256, canonical_request.as_bytes());
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex(h.as_ref()))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
}

/// The hex signature: the key derived from the secret through date, region and service.
pub fn signature(secret: &str, date: &str, region: &str, service: &str, sts: &str) -> String {
    let k = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac_sha256(k.as_ref(), region.as_bytes());
    let k = hmac_sha256(k.as_ref(), service.as_bytes());
    let k = hmac_sha256(k.as_ref(), b"aws4_request");
    hex(hmac_sha256(k.as_ref(), sts.as_bytes()).as_ref())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `YYYYMMDDTHHMMSSZ` (UTC) of a point in time.
pub fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;

    // AWS's SigV4 test suite: credentials, scope and time shared by every vector.
    const KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";
    const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const HOST: (&str, &str) = ("Host", "example.amazonaws.com");

    fn sign(c: &Canonical<'_>) -> String {
        authorization(c, KEY_ID, SECRET, "us-east-1", "service", DATE)
    }

    #[test]
    fn get_vanilla() {
        let c = Canonical {
            method: "GET",
            path: "/",
            query: "",
            headers: &[HOST, ("X-Amz-Date", DATE)],
            payload_hash: EMPTY_HASH,
        };
        let (creq, _) = canonical_request(&c);
        assert_eq!(
            creq,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            string_to_sign(DATE, "20150830/us-east-1/service/aws4_request", &creq),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            sign(&c),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        let body_hash = hex(digest::digest(&digest::SHA256, b"Param1=value1").as_ref());
        assert_eq!(
            body_hash,
            "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
        let c = Canonical {
            method: "POST",
            path: "/",
            query: "",
            headers: &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                HOST,
                ("X-Amz-Date", DATE),
            ],
            payload_hash: &body_hash,
        };
        assert!(sign(&c).ends_with(
            "SignedHeaders=content-type;host;x-amz-date, \
             Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        ));
    }

    #[test]
    fn get_vanilla_with_session_token_and_query_order() {
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let c = Canonical {
            method: "GET",
            path: "/",
            query: "",
            headers: &[HOST, ("X-Amz-Date", DATE), ("X-Amz-Security-Token", token)],
            payload_hash: EMPTY_HASH,
        };
        assert!(sign(&c).ends_with(
            "SignedHeaders=host;x-amz-date;x-amz-security-token, \
             Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
        ));
        // get-vanilla-query-order-key-case: the query is sorted before signing.
        let c = Canonical {
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &[HOST, ("X-Amz-Date", DATE)],
            payload_hash: EMPTY_HASH,
        };
        assert!(sign(&c).ends_with(
            "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        ));
    }

    #[test]
    fn paths_are_encoded_once_more_for_non_s3_services() {
        // get-utf8: the raw path `/ሴ` is signed as `/%E1%88%B4`.
        assert_eq!(canonical_uri("/\u{1234}"), "/%E1%88%B4");
        let c = Canonical {
            method: "GET",
            path: "/\u{1234}",
            query: "",
            headers: &[HOST, ("X-Amz-Date", DATE)],
            payload_hash: EMPTY_HASH,
        };
        assert!(sign(&c).ends_with(
            "Signature=8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"
        ));
        // A Bedrock path as sent (model id encoded once) is encoded again.
        assert_eq!(
            canonical_uri("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
            "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse"
        );
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_query("b=2&a=%41+&a=1"), "a=1&a=A%2B&b=2");
    }

    #[test]
    fn dates_are_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        assert_eq!(amz_date(t), "20150830T123600Z");
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        // A leap day and the end of a century year.
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229T000000Z"
        );
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(4_102_444_799)),
            "20991231T235959Z"
        );
    }

    #[test]
    fn signer_sets_the_headers_and_replaces_the_clients() {
        let s = Signer {
            region: "us-east-1".into(),
            service: "service",
            credentials: Ok(Credentials {
                access_key_id: KEY_ID.into(),
                secret_access_key: Secret::new(SECRET.into()),
                session_token: None,
            }),
        };
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            HeaderValue::from_static("example.amazonaws.com"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-client"),
        );
        h.insert("x-amz-security-token", HeaderValue::from_static("stale"));
        let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        s.sign(&Method::GET, &Uri::from_static("/"), &mut h, b"", t)
            .unwrap();
        assert_eq!(h["x-amz-date"], DATE);
        assert!(h.get("x-amz-security-token").is_none());
        assert!(h[header::AUTHORIZATION].is_sensitive());
        assert!(h[header::AUTHORIZATION].to_str().unwrap().ends_with(
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ));
        let broken = Signer {
            credentials: Err("vault down".into()),
            ..s
        };
        assert_eq!(
            broken.sign(&Method::GET, &Uri::from_static("/"), &mut h, b"", t),
            Err("vault down".into())
        );
    }
}

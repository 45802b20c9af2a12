//! `ai-request-transformer` and `ai-response-transformer` (Kong): a body is sent to an LLM
//! (`config.llm`, an ai-proxy target record) as the user message of a chat, with
//! `config.prompt` as the system message, and the LLM's answer replaces it — the request
//! body before it goes upstream, or the service's answer before it reaches the client.
//! The call goes through the same provider catalog and dialects as ai-proxy
//! (`balancer::provider_call`), non-streamed. Kong's texts for every failure.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use crate::balancer::provider_call::{self, Call, CallError};
use crate::config::plugins::{
    nullable, nullable_body_size, AuthConfig, LoggingConfig, ModelConfig, ProviderName, RouteType,
    TargetConfig, AI_BODY_SIZE,
};
use crate::config::vault::VaultTable;
use crate::error::GatewayError;
use crate::llm::target::{compile_target, Target};
use crate::net::upstream::Upstreams;
use crate::net::upstream_tls::{self, Trust};

type FieldErrors = Vec<(String, String)>;

/// Kong's `http_timeout` default (milliseconds).
const HTTP_TIMEOUT_MS: u64 = 60_000;

/// `config.llm`: the ai-proxy target record (Kong's `kong.llm` schema).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub route_type: RouteType,
    #[serde(default, deserialize_with = "nullable")]
    pub auth: AuthConfig,
    pub model: ModelConfig,
    #[serde(default, deserialize_with = "nullable")]
    pub logging: LoggingConfig,
}

/// The `ai-request-transformer` plugin config (Kong's fields and defaults).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiRequestTransformerConfig {
    /// The system message: what the LLM should make of the client's body.
    pub prompt: String,
    /// A regex; its first match in the LLM's answer is the new body (no match: an error).
    pub transformation_extract_pattern: Option<String>,
    #[serde(default = "http_timeout", deserialize_with = "nullable_timeout")]
    pub http_timeout: u64,
    #[serde(default = "verify", deserialize_with = "nullable_verify")]
    pub https_verify: bool,
    #[serde(default = "body_size", deserialize_with = "nullable_body_size")]
    pub max_request_body_size: u64,
    pub http_proxy_host: Option<String>,
    pub http_proxy_port: Option<u16>,
    pub https_proxy_host: Option<String>,
    pub https_proxy_port: Option<u16>,
    pub llm: LlmConfig,
}

/// The `ai-response-transformer` plugin config (Kong's fields and defaults).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiResponseTransformerConfig {
    /// The system message: what the LLM should make of the service's answer.
    pub prompt: String,
    /// A regex; its first match in the LLM's answer is the new body (no match: an error).
    pub transformation_extract_pattern: Option<String>,
    /// The LLM answers `{"status", "headers", "body"}`, which set the client's response.
    #[serde(default, deserialize_with = "nullable")]
    pub parse_llm_response_json_instructions: bool,
    #[serde(default = "http_timeout", deserialize_with = "nullable_timeout")]
    pub http_timeout: u64,
    #[serde(default = "verify", deserialize_with = "nullable_verify")]
    pub https_verify: bool,
    #[serde(default = "body_size", deserialize_with = "nullable_body_size")]
    pub max_request_body_size: u64,
    pub http_proxy_host: Option<String>,
    pub http_proxy_port: Option<u16>,
    pub https_proxy_host: Option<String>,
    pub https_proxy_port: Option<u16>,
    pub llm: LlmConfig,
}

fn http_timeout() -> u64 {
    HTTP_TIMEOUT_MS
}

fn verify() -> bool {
    true
}

fn body_size() -> u64 {
    AI_BODY_SIZE
}

fn nullable_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or(HTTP_TIMEOUT_MS))
}

fn nullable_verify<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// What both configs share, as compiling and checking read it.
struct Common<'a> {
    prompt: &'a str,
    pattern: Option<&'a str>,
    http_timeout: u64,
    https_verify: bool,
    max_request_body_size: u64,
    proxies: [(&'static str, bool); 4],
    llm: &'a LlmConfig,
}

/// Both configs lend their shared fields the same way (serde's `flatten` cannot share the
/// fields themselves: it does not work with `deny_unknown_fields`).
macro_rules! common_fields {
    ($config:ty) => {
        impl $config {
            fn common(&self) -> Common<'_> {
                Common {
                    prompt: &self.prompt,
                    pattern: self.transformation_extract_pattern.as_deref(),
                    http_timeout: self.http_timeout,
                    https_verify: self.https_verify,
                    max_request_body_size: self.max_request_body_size,
                    proxies: [
                        ("http_proxy_host", self.http_proxy_host.is_some()),
                        ("http_proxy_port", self.http_proxy_port.is_some()),
                        ("https_proxy_host", self.https_proxy_host.is_some()),
                        ("https_proxy_port", self.https_proxy_port.is_some()),
                    ],
                    llm: &self.llm,
                }
            }

            /// Field errors serde cannot see (paths relative to `config`).
            pub fn validate(&self) -> FieldErrors {
                self.common().validate()
            }
        }
    };
}

common_fields!(AiRequestTransformerConfig);
common_fields!(AiResponseTransformerConfig);

impl Common<'_> {
    fn validate(&self) -> FieldErrors {
        let mut errs = Vec::new();
        if self.prompt.trim().is_empty() {
            errs.push(("prompt".into(), "required field missing".into()));
        }
        if self.llm.route_type != RouteType::Chat {
            errs.push((
                "llm.route_type".into(),
                "'config.llm.route_type' must be 'llm/v1/chat' for AI transformer plugins".into(),
            ));
        }
        if self
            .llm
            .model
            .name
            .as_deref()
            .is_none_or(|n| n.trim().is_empty())
        {
            // Kong's driver sends no model without it; there is no client to name one.
            errs.push((
                "llm.model.name".into(),
                "required: the transformer's LLM call has no client to name a model".into(),
            ));
        }
        if self.max_request_body_size == 0 {
            errs.push((
                "max_request_body_size".into(),
                "value must be greater than 0".into(),
            ));
        }
        for (field, set) in self.proxies {
            if set {
                errs.push((
                    field.into(),
                    "forward proxies are not supported by tollgate yet: the LLM is reached directly"
                        .into(),
                ));
            }
        }
        if let Some(p) = self.pattern {
            if let Err(e) = extract_regex(p) {
                errs.push((
                    "transformation_extract_pattern".into(),
                    format!("invalid regex: {e}"),
                ));
            }
        }
        errs
    }
}

/// Kong matches with PCRE's `ijom` flags: case-insensitive, `^`/`$` at line ends.
fn extract_regex(p: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&pcre_braces(p))
        .case_insensitive(true)
        .multi_line(true)
        .build()
}

/// PCRE reads a brace that opens no `{n}`, `{n,}` or `{n,m}` as a literal, and Kong's own
/// documented pattern (`{((.|\n)*)}`) relies on it; Rust's regex refuses such braces, so
/// they are escaped first. Escapes (`\p{…}`, `\x{…}`) and classes are kept as written.
fn pcre_braces(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 4);
    let mut chars = p.char_indices().peekable();
    let mut in_class = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                let Some((_, e)) = chars.next() else { break };
                out.push(e);
                if matches!(e, 'p' | 'P' | 'x') && chars.peek().is_some_and(|(_, n)| *n == '{') {
                    for (_, n) in chars.by_ref() {
                        out.push(n);
                        if n == '}' {
                            break;
                        }
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // A `]` first in the class is a member, not its end.
                if let Some((_, n)) = chars.next_if(|(_, n)| *n == ']' || *n == '^') {
                    out.push(n);
                    if n == '^' {
                        if let Some((_, m)) = chars.next_if(|(_, m)| *m == ']') {
                            out.push(m);
                        }
                    }
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            '{' if !in_class => match quantifier_len(&p[i..]) {
                Some(len) => {
                    out.push_str(&p[i..i + len]);
                    for _ in 1..len {
                        chars.next();
                    }
                }
                None => out.push_str("\\{"),
            },
            '}' if !in_class => out.push_str("\\}"),
            _ => out.push(c),
        }
    }
    out
}

/// The length of a `{n}`, `{n,}` or `{n,m}` at the start of `s` (ASCII only).
fn quantifier_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let n = digits(1);
    if n == 0 {
        return None;
    }
    let mut at = 1 + n;
    if b.get(at) == Some(&b',') {
        at += 1 + digits(at + 1);
    }
    (b.get(at) == Some(&b'}')).then_some(at + 1)
}

/// A compiled transformer (either plugin): the LLM target and what to ask it.
#[derive(Debug)]
pub struct Transformer {
    prompt: String,
    extract: Option<Regex>,
    /// `parse_llm_response_json_instructions` (the response transformer only).
    pub json_instructions: bool,
    /// Bodies larger than this are refused (`max_request_body_size`).
    pub max_body: u64,
    target: Target,
    model: String,
    timeout: Duration,
    /// `https_verify: false`: the LLM's certificate is not checked.
    trust: Option<Trust>,
}

impl Transformer {
    /// Compiles `ai-request-transformer`'s config; errors name fields under `config`.
    pub fn request(
        c: &AiRequestTransformerConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Transformer, FieldErrors> {
        Transformer::compile(&c.common(), false, vaults, env)
    }

    /// Compiles `ai-response-transformer`'s config; errors name fields under `config`.
    pub fn response(
        c: &AiResponseTransformerConfig,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Transformer, FieldErrors> {
        Transformer::compile(
            &c.common(),
            c.parse_llm_response_json_instructions,
            vaults,
            env,
        )
    }

    fn compile(
        c: &Common<'_>,
        json_instructions: bool,
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Transformer, FieldErrors> {
        let mut errors = c.validate();
        let t = TargetConfig {
            route_type: c.llm.route_type,
            auth: c.llm.auth.clone(),
            model: c.llm.model.clone(),
            logging: c.llm.logging.clone(),
            weight: 100,
            description: None,
            utterances: Vec::new(),
            metadata: None,
        };
        let mut warnings = Vec::new();
        let target = compile_target("llm", &t, vaults, env, &mut errors, &mut warnings);
        let extract = c.pattern.map(extract_regex).transpose().ok().flatten();
        match target {
            Some(target) if errors.is_empty() => Ok(Transformer {
                prompt: c.prompt.to_string(),
                extract,
                json_instructions,
                max_body: c.max_request_body_size,
                target,
                model: c.llm.model.name.clone().unwrap_or_default(),
                timeout: Duration::from_millis(c.http_timeout.max(1)),
                trust: if c.https_verify {
                    None
                } else {
                    upstream_tls::insecure()
                },
            }),
            _ => Err(errors),
        }
    }

    /// Kong's `ai_introspect_body`: `body` goes to the LLM as the user message after the
    /// prompt; its answer, cut by the extract pattern, comes back. Failures are Kong's
    /// 400 with its text (a credential that is not available: Kong's 500).
    pub async fn introspect(
        &self,
        upstreams: &Upstreams,
        body: &[u8],
    ) -> Result<String, GatewayError> {
        let request = json!({
            "model": self.model,
            "messages": self.messages(body),
            "stream": false,
        })
        .to_string();
        let call = Call {
            target: &self.target,
            route_type: RouteType::Chat,
            model: &self.model,
            request: request.as_bytes(),
            patch_options: Some(&self.target.options),
            connect_timeout: self.timeout,
            read_timeout: self.timeout,
            trust: self.trust.as_ref(),
        };
        let answer = provider_call::send(upstreams, &call)
            .await
            .map_err(call_failed)?;
        let content = answer_content(&answer).map_err(refused)?;
        self.extract(content).map_err(refused)
    }

    /// The prompt as the system message and `body` as the user's; a Bedrock model without
    /// a system role gets the prompt as a first user turn instead, as Kong sends it.
    fn messages(&self, body: &[u8]) -> Value {
        let body = String::from_utf8_lossy(body);
        let no_system = self.target.provider == ProviderName::Bedrock
            && crate::llm::bedrock::refuses_system(&self.model);
        if no_system {
            json!([
                {"role": "user", "content": self.prompt},
                {"role": "assistant", "content": "What is the message?"},
                {"role": "user", "content": body},
            ])
        } else {
            json!([
                {"role": "system", "content": self.prompt},
                {"role": "user", "content": body},
            ])
        }
    }

    /// The first match of the extract pattern (the whole text without one).
    pub fn extract(&self, text: String) -> Result<String, String> {
        match &self.extract {
            None => Ok(text),
            Some(re) => re
                .find(&text)
                .map(|m| m.as_str().to_string())
                .ok_or_else(|| "AI response did not match specified regular expression".into()),
        }
    }

    /// ai-response-transformer on the service's answer: the new status, headers and body
    /// (Kong drops the answer's length and encoding headers, which no longer hold).
    pub async fn respond(
        &self,
        upstreams: &Upstreams,
        status: StatusCode,
        mut headers: HeaderMap,
        body: &[u8],
    ) -> Result<(StatusCode, HeaderMap, Bytes), GatewayError> {
        let answer = self.introspect(upstreams, body).await?;
        for h in [
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::TRANSFER_ENCODING,
        ] {
            headers.remove(h);
        }
        if !self.json_instructions {
            return Ok((status, headers, Bytes::from(answer)));
        }
        let parsed = instructions(&answer).map_err(|e| GatewayError::AiTransformer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("failed to parse JSON response instructions from AI backend: {e}"),
        })?;
        for (name, value) in parsed.headers {
            headers.insert(name, value);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(parsed.body.len()));
        Ok((parsed.status, headers, parsed.body))
    }
}

/// Kong's 400 for a transformation that did not succeed.
fn refused(message: String) -> GatewayError {
    GatewayError::AiTransformer {
        status: StatusCode::BAD_REQUEST,
        message,
    }
}

/// A failed LLM call in Kong's words.
fn call_failed(e: CallError) -> GatewayError {
    const INTROSPECT: &str = "failed to introspect request with AI service";
    match e {
        CallError::Credential(detail) => GatewayError::BeforeProxying(detail),
        CallError::Encode(m) => refused(m),
        CallError::Send { detail, .. } | CallError::Read(detail) => refused(format!(
            "{INTROSPECT}: request to ai service failed: {detail}"
        )),
        CallError::Status { status, .. } => refused(format!("{INTROSPECT}: status code {status}")),
        CallError::Decode(e) => {
            refused(format!("failed to convert AI response to Kong format: {e}"))
        }
    }
}

/// The first choice's message content of an OpenAI chat answer.
fn answer_content(answer: &[u8]) -> Result<String, String> {
    let v: Value = serde_json::from_slice(answer)
        .map_err(|e| format!("failed to convert AI response to JSON: {e}"))?;
    v.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "no 'choices' in upstream AI service response".into())
}

/// What `parse_llm_response_json_instructions` reads from the LLM's answer.
#[derive(Debug)]
pub struct Instructions {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// Kong's `parse_json_instructions`: `status` (200 without it), `headers` (each set on
/// the answer), `body` (a string as it is, anything else as JSON; without it the whole
/// object, as Kong sends a table).
pub fn instructions(answer: &str) -> Result<Instructions, String> {
    let v: Value = serde_json::from_str(answer).map_err(|e| e.to_string())?;
    let Value::Object(o) = &v else {
        return Err("input not table or string".into());
    };
    let status = match o.get("status") {
        None | Some(Value::Null) => StatusCode::OK,
        Some(s) => s
            .as_u64()
            .or_else(|| s.as_str().and_then(|t| t.parse().ok()))
            .and_then(|n| u16::try_from(n).ok())
            .and_then(|n| StatusCode::from_u16(n).ok())
            .ok_or_else(|| format!("'status' is not an HTTP status: {s}"))?,
    };
    let mut headers = Vec::new();
    match o.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, val) in h {
                let text = match val {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => val.to_string(),
                    _ => return Err(format!("header '{k}' is not a string")),
                };
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("'{k}' is not a header name"))?;
                let value = HeaderValue::from_str(&text)
                    .map_err(|_| format!("header '{k}' has a value a header cannot carry"))?;
                headers.push((name, value));
            }
        }
        Some(_) => return Err("'headers' is not an object".into()),
    }
    let body = match o.get("body") {
        Some(Value::String(s)) => Bytes::from(s.clone()),
        None | Some(Value::Null) => Bytes::from(v.to_string()),
        Some(other) => Bytes::from(other.to_string()),
    };
    Ok(Instructions {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn request_config(extra: Value) -> AiRequestTransformerConfig {
        let mut v = json!({
            "prompt": "Add a country to each city.",
            "llm": {"route_type": "llm/v1/chat",
                    "auth": {"header_name": "Authorization", "header_value": "Bearer k"},
                    "model": {"provider": "openai", "name": "gpt-4o"}}
        });
        if let (Value::Object(o), Value::Object(e)) = (&mut v, extra) {
            o.extend(e);
        }
        serde_json::from_value(v).unwrap()
    }

    fn compile(c: &AiRequestTransformerConfig) -> Result<Transformer, FieldErrors> {
        Transformer::request(c, &VaultTable::default(), &|_| None)
    }

    #[test]
    fn kong_defaults() {
        let c = request_config(json!({}));
        assert_eq!(c.http_timeout, 60_000);
        assert!(c.https_verify);
        assert_eq!(c.max_request_body_size, AI_BODY_SIZE);
        let t = compile(&c).unwrap();
        assert_eq!(t.timeout, Duration::from_secs(60));
        assert!(t.trust.is_none());
        let c = request_config(json!({"https_verify": false, "http_timeout": null}));
        let t = compile(&c).unwrap();
        assert_eq!(t.trust.as_ref().map(|t| t.label), Some("tls_verify off"));
        assert_eq!(t.timeout, Duration::from_secs(60));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let c = request_config(json!({"http_proxy_host": "proxy", "http_proxy_port": 3128}));
        let e = compile(&c).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(fields, ["http_proxy_host", "http_proxy_port"]);
        assert!(e[0].1.contains("forward proxies"), "{}", e[0].1);
        let mut c = request_config(json!({"transformation_extract_pattern": "(?<=x)y"}));
        c.llm.route_type = RouteType::Completions;
        c.llm.model.name = None;
        let e = compile(&c).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            fields,
            [
                "llm.route_type",
                "llm.model.name",
                "transformation_extract_pattern"
            ]
        );
        assert_eq!(
            e[0].1,
            "'config.llm.route_type' must be 'llm/v1/chat' for AI transformer plugins"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let v = json!({"prompt": "p", "parse_llm_response_json_instructions": true,
            "llm": {"route_type": "llm/v1/chat", "model": {"provider": "openai", "name": "m"}}});
        assert!(serde_json::from_value::<AiRequestTransformerConfig>(v.clone()).is_err());
        assert!(serde_json::from_value::<AiResponseTransformerConfig>(v).is_ok());
    }

    #[test]
    fn the_first_match_is_the_body() {
        let c = request_config(json!({"transformation_extract_pattern": "\\{((.|\\n)*)\\}"}));
        let t = compile(&c).unwrap();
        let got = t.extract("Sure! Here it is:\n{\"a\":\n 1}\nAnything else?".into());
        assert_eq!(got.unwrap(), "{\"a\":\n 1}");
        let e = t.extract("no braces".into()).unwrap_err();
        assert_eq!(e, "AI response did not match specified regular expression");
        // Kong's documented pattern (PCRE reads a brace that starts no repetition as itself).
        let c = request_config(json!({"transformation_extract_pattern": "{((.|\n)*)}"}));
        let t = compile(&c).unwrap();
        assert_eq!(
            t.extract("ok {\"a\": {}} bye".into()).unwrap(),
            "{\"a\": {}}"
        );
        let c = request_config(json!({"transformation_extract_pattern": "^city: .*$"}));
        let t = compile(&c).unwrap();
        assert_eq!(
            t.extract("x\nCITY: Paris\ny".into()).unwrap(),
            "CITY: Paris"
        );
    }

    #[test]
    fn bedrock_models_without_a_system_role_get_the_prompt_as_a_user_turn() {
        let t = compile(&request_config(json!({}))).unwrap();
        assert_eq!(t.messages(b"x")[0]["role"], "system");
        let mut c = request_config(json!({}));
        c.llm.model.provider = ProviderName::Bedrock;
        c.llm.model.name = Some("amazon.titan-text-express-v1".into());
        c.llm.auth = AuthConfig {
            aws_access_key_id: Some("AKID".into()),
            aws_secret_access_key: Some("secret".into()),
            ..AuthConfig::default()
        };
        c.llm.model.options = Some(crate::config::plugins::ModelOptions {
            bedrock: Some(crate::config::plugins::BedrockOptions {
                aws_region: Some("us-east-1".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let t = compile(&c).unwrap();
        let m = t.messages(b"x");
        let roles: Vec<&str> = m
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(m[2]["content"], "x");
    }

    #[test]
    fn braces_as_pcre_reads_them() {
        assert_eq!(pcre_braces("{((.|\\n)*)}"), "\\{((.|\\n)*)\\}");
        assert_eq!(pcre_braces("a{2}b{1,}c{1,3}"), "a{2}b{1,}c{1,3}");
        assert_eq!(pcre_braces("\\p{Greek}[{}]\\{x{"), "\\p{Greek}[{}]\\{x\\{");
        assert_eq!(pcre_braces("[]{]{"), "[]{]\\{");
        assert_eq!(pcre_braces("x{,2}"), "x\\{,2\\}");
    }

    #[test]
    fn answers_are_read_as_kong_reads_them() {
        let a = br#"{"choices":[{"message":{"role":"assistant","content":"{\"x\":1}"}}]}"#;
        assert_eq!(answer_content(a).unwrap(), "{\"x\":1}");
        assert_eq!(
            answer_content(br#"{"choices":[]}"#).unwrap_err(),
            "no 'choices' in upstream AI service response"
        );
        assert!(answer_content(b"nope")
            .unwrap_err()
            .starts_with("failed to convert AI response to JSON"));
        let e = call_failed(CallError::Status {
            status: 500,
            snippet: "x".into(),
        });
        assert_eq!(
            e.to_string(),
            "failed to introspect request with AI service: status code 500"
        );
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn json_instructions() {
        let i =
            instructions(r#"{"status":201,"headers":{"x-new":"v","x-n":3},"body":"hi"}"#).unwrap();
        assert_eq!(i.status, StatusCode::CREATED);
        assert_eq!(i.headers.len(), 2);
        assert_eq!(i.body, "hi");
        let i = instructions(r#"{"headers":{"content-type":"text/plain"}}"#).unwrap();
        assert_eq!(i.status, StatusCode::OK);
        assert_eq!(i.body, r#"{"headers":{"content-type":"text/plain"}}"#);
        let i = instructions(r#"{"status":"404","body":{"error":"gone"}}"#).unwrap();
        assert_eq!(i.status, StatusCode::NOT_FOUND);
        assert_eq!(i.body, r#"{"error":"gone"}"#);
        assert_eq!(
            instructions("[1]").unwrap_err(),
            "input not table or string"
        );
        assert!(instructions("not json").is_err());
        assert!(instructions(r#"{"status":99999}"#).is_err());
        assert!(instructions(r#"{"headers":{"bad name":"v"}}"#).is_err());
    }
}

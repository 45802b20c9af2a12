//! `ai-sanitizer`: Kong Enterprise's "AI PII Sanitizer", with PII detected in-process by regexes
//! instead of Kong's external AI PII Anonymizer service.
//!
//! Detected values are replaced by `[CATEGORY_N]` placeholders or by synthetic look-alikes; the
//! replacement → original mapping of one request is kept in [`Redactions`] so responses can be
//! restored ([`Redactions::restore`], [`Redactions::restore_json`], [`StreamRestorer`]).
//!
//! What regexes can and cannot do (Kong's service uses NER models):
//! * Detected: email, phone, creditcard (Luhn), bank (IBAN, mod-97), ip (v4/v6), ssn (US), url,
//!   crypto (BTC base58check/bech32, ETH), date, nationalid (Spanish DNI/NIE with their check
//!   letter, UK NINO), domain (deprecated, only when listed explicitly), credentials, custom.
//! * Accepted but never detected: `nrp`, `medical`, `driverlicense`, `passport` — names,
//!   nationalities, conditions and licence/passport numbers have no reliable textual shape.
//! * `general` (names, locations, organisations in Kong) means email, phone, ip and url here.
//! * `all` is every built-in category except credentials and domain; `all_and_credentials` adds
//!   credentials. Custom patterns are applied whenever configured, whatever `anonymize` says.
//!
//! A placeholder the client itself typed (e.g. a literal `[EMAIL_1]`) is indistinguishable from
//! ours on the way back and is "restored" too; that is inherent to placeholder schemes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Null in a decK dump means "use the default", as Kong's schema does.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `nullable` for fields whose default is not `Default::default()`.
macro_rules! null_or {
    ($name:ident, $ty:ty, $default:ident) => {
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            Ok(Option::<$ty>::deserialize(d)?.unwrap_or_else($default))
        }
    };
}

fn default_true() -> bool {
    true
}
fn default_anonymize() -> Vec<AnonymizeCategory> {
    vec![AnonymizeCategory::AllAndCredentials]
}
fn default_score() -> f64 {
    0.5
}
fn default_scheme() -> String {
    "http".into()
}
fn default_host() -> String {
    "localhost".into()
}
fn default_port() -> u16 {
    8080
}
fn default_timeout() -> u64 {
    10_000
}
fn default_keepalive() -> u64 {
    60_000
}
null_or!(null_true, bool, default_true);
null_or!(null_anonymize, Vec<AnonymizeCategory>, default_anonymize);
null_or!(null_score, f64, default_score);
null_or!(null_scheme, String, default_scheme);
null_or!(null_host, String, default_host);
null_or!(null_port, u16, default_port);
null_or!(null_timeout, u64, default_timeout);
null_or!(null_keepalive, u64, default_keepalive);

/// One value of `anonymize` (Kong's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnonymizeCategory {
    /// Every built-in category except credentials and domain.
    All,
    /// `all` plus credentials (the default).
    AllAndCredentials,
    /// Email, phone, ip and url here (Kong: names, locations, organisations via NER).
    General,
    /// International `+…` and common national forms, 9–15 digits.
    Phone,
    /// Email addresses.
    Email,
    /// 13–19 digit card numbers, Luhn-checked.
    Creditcard,
    /// BTC (checksummed) and ETH addresses.
    Crypto,
    /// ISO, numeric and month-name dates.
    Date,
    /// IPv4 and IPv6 addresses.
    Ip,
    /// Nationality/religion/political group: needs NER, detects nothing here.
    Nrp,
    /// US social security numbers.
    Ssn,
    /// Deprecated in Kong; bare domain names, only when listed explicitly.
    Domain,
    /// `http(s)://`, `ftp://` and `www.` URLs.
    Url,
    /// Needs NER, detects nothing here.
    Medical,
    /// No reliable shape, detects nothing here.
    Driverlicense,
    /// No reliable shape, detects nothing here.
    Passport,
    /// IBANs, mod-97 checked.
    Bank,
    /// Spanish DNI/NIE (check letter) and UK NINO.
    Nationalid,
    /// The `custom_patterns` (which apply whenever configured anyway).
    Custom,
    /// API keys, tokens, JWTs and generic high-entropy secrets.
    Credentials,
}

/// `redact_type`: how a detected value is replaced.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RedactType {
    /// `[EMAIL_1]`-style tokens.
    #[default]
    Placeholder,
    /// Realistic fake values of the same kind (placeholders for credentials, nationalid, custom).
    Synthetic,
}

/// `sanitization_mode`: which direction is sanitized.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum SanitizationMode {
    /// Requests only.
    #[default]
    Input,
    /// Responses only.
    Output,
    /// Requests and responses.
    Both,
}

/// One `custom_patterns` entry; the category of its matches is `name`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// The category name of its matches (placeholder label: upper-cased, `_` for others).
    pub name: String,
    /// A Rust `regex` pattern.
    pub regex: String,
    /// Kong's confidence threshold for its service; a regex match is certain, so it is unused.
    #[serde(default = "default_score", deserialize_with = "null_score")]
    pub score: f64,
}

/// The `ai-sanitizer` plugin config (Kong's field names and defaults).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiSanitizerConfig {
    /// Categories to detect.
    #[serde(default = "default_anonymize", deserialize_with = "null_anonymize")]
    pub anonymize: Vec<AnonymizeCategory>,
    /// Extra regexes, each its own category.
    #[serde(default, deserialize_with = "nullable")]
    pub custom_patterns: Vec<CustomPattern>,
    /// Placeholder tokens or synthetic values.
    #[serde(default, deserialize_with = "nullable")]
    pub redact_type: RedactType,
    /// Which direction is sanitized.
    #[serde(default, deserialize_with = "nullable")]
    pub sanitization_mode: SanitizationMode,
    /// Restore originals in responses (done by the integrator with [`Redactions`]).
    #[serde(default = "default_true", deserialize_with = "null_true")]
    pub recover_redacted: bool,
    /// Refuse the request instead of sanitizing it.
    #[serde(default, deserialize_with = "nullable")]
    pub block_if_detected: bool,
    /// Kong: fail when the PII service fails. In-process detection cannot fail; kept for parity.
    #[serde(default = "default_true", deserialize_with = "null_true")]
    pub stop_on_error: bool,
    /// False: only the last user message is sanitized.
    #[serde(default = "default_true", deserialize_with = "null_true")]
    pub allow_all_conversation_history: bool,
    /// Kong: keep sanitized items out of the log; [`Redactions`] never exposes values anyway.
    #[serde(default, deserialize_with = "nullable")]
    pub skip_logging_sanitized_items: bool,
    /// Kong's PII service URL scheme: accepted, unused (detection is in-process).
    #[serde(default = "default_scheme", deserialize_with = "null_scheme")]
    pub scheme: String,
    /// Kong's PII service host: accepted, unused.
    #[serde(default = "default_host", deserialize_with = "null_host")]
    pub host: String,
    /// Kong's PII service port: accepted, unused.
    #[serde(default = "default_port", deserialize_with = "null_port")]
    pub port: u16,
    /// Kong's PII service timeout (ms): accepted, unused.
    #[serde(default = "default_timeout", deserialize_with = "null_timeout")]
    pub timeout: u64,
    /// Kong's PII service keepalive (ms): accepted, unused.
    #[serde(default = "default_keepalive", deserialize_with = "null_keepalive")]
    pub keepalive_timeout: u64,
}

impl Default for AiSanitizerConfig {
    fn default() -> Self {
        AiSanitizerConfig {
            anonymize: default_anonymize(),
            custom_patterns: Vec::new(),
            redact_type: RedactType::default(),
            sanitization_mode: SanitizationMode::default(),
            recover_redacted: true,
            block_if_detected: false,
            stop_on_error: true,
            allow_all_conversation_history: true,
            skip_logging_sanitized_items: false,
            scheme: default_scheme(),
            host: default_host(),
            port: default_port(),
            timeout: default_timeout(),
            keepalive_timeout: default_keepalive(),
        }
    }
}

impl AiSanitizerConfig {
    /// Checks what serde cannot: `(field path relative to config, message)` per problem.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (i, p) in self.custom_patterns.iter().enumerate() {
            if p.name.trim().is_empty() {
                errors.push((
                    format!("custom_patterns[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            if let Err(e) = compile(&p.regex) {
                errors.push((
                    format!("custom_patterns[{i}].regex"),
                    format!("invalid regex: {e}"),
                ));
            }
            if !(0.0..=1.0).contains(&p.score) {
                errors.push((
                    format!("custom_patterns[{i}].score"),
                    "must be between 0 and 1".into(),
                ));
            }
        }
        if self.anonymize.contains(&AnonymizeCategory::Custom) && self.custom_patterns.is_empty() {
            errors.push((
                "anonymize".into(),
                "`custom` requires at least one entry in custom_patterns".into(),
            ));
        }
        errors
    }
}

/// Bounded compile: a config regex must not be able to eat unbounded memory.
fn compile(re: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(re)
        .size_limit(1 << 20)
        .dfa_size_limit(2 << 20)
        .build()
}

/// Built-in detector kinds, in tie-break priority order (earlier wins on an identical span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Credentials,
    Creditcard,
    Bank,
    Ssn,
    NationalId,
    Email,
    Url,
    Ip,
    Crypto,
    Phone,
    Date,
    Domain,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Credentials => "credentials",
            Kind::Creditcard => "creditcard",
            Kind::Bank => "bank",
            Kind::Ssn => "ssn",
            Kind::NationalId => "nationalid",
            Kind::Email => "email",
            Kind::Url => "url",
            Kind::Ip => "ip",
            Kind::Crypto => "crypto",
            Kind::Phone => "phone",
            Kind::Date => "date",
            Kind::Domain => "domain",
        }
    }
}

/// Validates a raw match; returns the accepted length (a prefix, so URLs can drop punctuation).
type Check = fn(&str) -> Option<usize>;

/// A built-in `(kind, check, seps, regex)`: `seps` are separators that, followed by a word character right outside
/// the match, mean the match is a fragment of a longer token (`1.2.3.4.5`, `123-45-6789-0`).
struct Spec(Kind, Check, &'static str, &'static str);

#[rustfmt::skip]
const SPECS: &[Spec] = &[
    Spec(Kind::Credentials, keyish, "", r"\bsk-[A-Za-z0-9_-]{20,}"),
    Spec(Kind::Credentials, any, "", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    Spec(Kind::Credentials, any, "", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    Spec(Kind::Credentials, keyish, "", r"\bgithub_pat_[A-Za-z0-9_]{22,}"),
    Spec(Kind::Credentials, keyish, "", r"\bxox[bpas]-[A-Za-z0-9-]{10,}"),
    Spec(Kind::Credentials, any, "", r"\bAIza[0-9A-Za-z_-]{35}"),
    Spec(Kind::Credentials, any, "", r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    Spec(Kind::Credentials, keyish, "", r"\b(?i:bearer)[ ]+(?P<v>[A-Za-z0-9._~+/-]{20,}=*)"),
    Spec(Kind::Creditcard, card, ".-", r"\b(?:[0-9][ -]?){12,18}[0-9]\b"),
    Spec(Kind::Bank, iban, "", r"\b[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"),
    Spec(Kind::Ssn, ssn, ".-", r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b"),
    Spec(Kind::NationalId, dni, "-", r"\b[0-9]{8}-?[A-Z]\b"),
    Spec(Kind::NationalId, nie, "-", r"\b[XYZ]-?[0-9]{7}-?[A-Z]\b"),
    Spec(Kind::NationalId, nino, "", r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b"),
    Spec(Kind::Email, any, "", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b"),
    Spec(Kind::Url, url, "", r"\b(?:(?i:https?|ftp)://|www\.)[^\s<>\x22'`\[\]{}|\\^]+"),
    Spec(Kind::Ip, any, ".", r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\b"),
    Spec(Kind::Ip, ipv6, "", r"(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}"),
    Spec(Kind::Crypto, base58check, "", r"\b[13][1-9A-HJ-NP-Za-km-z]{25,34}\b"),
    Spec(Kind::Crypto, bech32, "", r"\bbc1[02-9ac-hj-np-z]{11,71}\b"),
    Spec(Kind::Crypto, any, "", r"\b0x[0-9a-fA-F]{40}\b"),
    Spec(Kind::Phone, phone, ".-", r"\+[0-9]{1,3}(?:[ .-]?\([0-9]{1,4}\))?(?:[ .-]?[0-9]{1,5}){2,6}\b"),
    Spec(Kind::Phone, phone, ".-", r"(?:\b1[ .-]?)?(?:\([0-9]{3}\)[ .-]?|\b[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}\b"),
    Spec(Kind::Phone, phone, ".-", r"\b0[0-9]{1,4}(?:[ .-][0-9]{2,4}){2,4}\b"),
    Spec(Kind::Date, any, ".-", r"\b[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?\b"),
    Spec(Kind::Date, numeric_date, ".-", r"\b[0-9]{1,2}[/.-][0-9]{1,2}[/.-][0-9]{4}\b"),
    Spec(Kind::Date, any, "", r"\b(?:[0-9]{1,2}(?:st|nd|rd|th)?[ ]+)?(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?(?:[ ]+[0-9]{1,2}(?:st|nd|rd|th)?,?)?[ ]+[0-9]{4}\b"),
    Spec(Kind::Domain, domain, "", r"\b(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"),
    // Last: a heuristic, so any specific detector (BTC, ETH, …) wins on the same span.
    Spec(Kind::Credentials, generic_secret, "-", r"\b[A-Za-z0-9][A-Za-z0-9_-]{31,127}\b"),
];

/// Categories that `anonymize` turns on.
fn selected(anonymize: &[AnonymizeCategory]) -> Vec<Kind> {
    use AnonymizeCategory as A;
    const ALL: &[Kind] = &[
        Kind::Creditcard,
        Kind::Bank,
        Kind::Ssn,
        Kind::NationalId,
        Kind::Email,
        Kind::Url,
        Kind::Ip,
        Kind::Crypto,
        Kind::Phone,
        Kind::Date,
    ];
    let mut kinds = Vec::new();
    for a in anonymize {
        let add: &[Kind] = match a {
            A::All => ALL,
            A::AllAndCredentials => &[Kind::Credentials],
            A::General => &[Kind::Email, Kind::Phone, Kind::Ip, Kind::Url],
            A::Phone => &[Kind::Phone],
            A::Email => &[Kind::Email],
            A::Creditcard => &[Kind::Creditcard],
            A::Crypto => &[Kind::Crypto],
            A::Date => &[Kind::Date],
            A::Ip => &[Kind::Ip],
            A::Ssn => &[Kind::Ssn],
            A::Domain => &[Kind::Domain],
            A::Url => &[Kind::Url],
            A::Bank => &[Kind::Bank],
            A::Nationalid => &[Kind::NationalId],
            A::Credentials => &[Kind::Credentials],
            A::Nrp | A::Medical | A::Driverlicense | A::Passport | A::Custom => &[],
        };
        kinds.extend_from_slice(add);
        if *a == A::AllAndCredentials {
            kinds.extend_from_slice(ALL);
        }
    }
    kinds
}

/// A compiled detector; `kind` is None for custom patterns (no validation, no boundary rules).
#[derive(Debug)]
struct Detector {
    kind: Option<Kind>,
    category: String,
    label: String,
    re: Regex,
    check: Check,
    seps: &'static str,
}

/// The compiled plugin: config plus detectors in priority order.
#[derive(Debug)]
pub struct Sanitizer {
    cfg: AiSanitizerConfig,
    detectors: Vec<Detector>,
}

/// The request was refused by `block_if_detected`; the message names categories, never values.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Blocked(pub String);

impl Sanitizer {
    /// Validates and compiles `cfg`; errors are `(field path, message)` as in `validate`.
    pub fn new(cfg: &AiSanitizerConfig) -> Result<Sanitizer, Vec<(String, String)>> {
        let errors = cfg.validate();
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut detectors = Vec::new();
        // Custom patterns first: on an identical span the operator's intent wins.
        for (i, p) in cfg.custom_patterns.iter().enumerate() {
            let re = compile(&p.regex).map_err(|e| {
                vec![(
                    format!("custom_patterns[{i}].regex"),
                    format!("invalid regex: {e}"),
                )]
            })?;
            detectors.push(Detector {
                kind: None,
                category: p.name.clone(),
                label: label_of(&p.name),
                re,
                check: any,
                seps: "",
            });
        }
        let kinds = selected(&cfg.anonymize);
        for spec in SPECS.iter().filter(|s| kinds.contains(&s.0)) {
            // ASCII word boundaries keep the lazy DFA usable on non-ASCII text (a Unicode `\b`
            // makes it bail out to a much slower engine); `bounded` re-checks with Unicode.
            let re = compile(&spec.3.replace(r"\b", r"(?-u:\b)"))
                .map_err(|e| vec![("anonymize".to_string(), format!("internal pattern: {e}"))])?;
            detectors.push(Detector {
                kind: Some(spec.0),
                category: spec.0.name().into(),
                label: spec.0.name().to_ascii_uppercase(),
                re,
                check: spec.1,
                seps: spec.2,
            });
        }
        Ok(Sanitizer {
            cfg: cfg.clone(),
            detectors,
        })
    }

    /// The config this was compiled from.
    pub fn config(&self) -> &AiSanitizerConfig {
        &self.cfg
    }

    /// Whether requests are sanitized (`INPUT` or `BOTH`).
    pub fn on_input(&self) -> bool {
        matches!(
            self.cfg.sanitization_mode,
            SanitizationMode::Input | SanitizationMode::Both
        )
    }

    /// Whether responses are sanitized (`OUTPUT` or `BOTH`).
    pub fn on_output(&self) -> bool {
        matches!(
            self.cfg.sanitization_mode,
            SanitizationMode::Output | SanitizationMode::Both
        )
    }

    /// Sanitizes the prompt parts of an OpenAI-shaped request body in place.
    ///
    /// On `Err` the body may be partially rewritten; the request is to be refused anyway.
    pub fn sanitize_request(&self, body: &mut Value) -> Result<Redactions, Blocked> {
        let mut r = Redactions::default();
        let all = self.cfg.allow_all_conversation_history;
        if let Some(obj) = body.as_object_mut() {
            if let Some(Value::Array(msgs)) = obj.get_mut("messages") {
                let is_user = |m: &Value| m.get("role").and_then(Value::as_str) == Some("user");
                let chosen: Vec<&mut Value> = if all {
                    msgs.iter_mut().collect()
                } else {
                    msgs.iter_mut()
                        .rev()
                        .find(|m| is_user(m))
                        .into_iter()
                        .collect()
                };
                for m in chosen {
                    if let Some(c) = m.get_mut("content") {
                        self.sanitize_content(c, &mut r);
                    }
                }
            }
            if let Some(p) = obj.get_mut("prompt") {
                self.sanitize_content(p, &mut r);
            }
            if all {
                if let Some(i) = obj.get_mut("instructions") {
                    self.sanitize_str(i, &mut r);
                }
            }
            match obj.get_mut("input") {
                Some(Value::Array(items)) if !all => {
                    let last_user = items
                        .iter_mut()
                        .rev()
                        .find(|i| i.get("role").and_then(Value::as_str) == Some("user"));
                    if let Some(item) = last_user {
                        self.sanitize_item(item, &mut r);
                    }
                }
                Some(Value::Array(items)) => {
                    items.iter_mut().for_each(|i| self.sanitize_item(i, &mut r))
                }
                Some(input) => self.sanitize_str(input, &mut r),
                None => {}
            }
        }
        if self.cfg.block_if_detected && !r.is_empty() {
            let names: Vec<String> = r.categories().into_iter().map(|(c, _)| c).collect();
            return Err(Blocked(format!(
                "request blocked: the prompt contains personal data ({})",
                names.join(", ")
            )));
        }
        Ok(r)
    }

    /// A Responses `input` item (or a bare string, as in embeddings' `input` arrays).
    fn sanitize_item(&self, item: &mut Value, r: &mut Redactions) {
        if item.is_string() {
            return self.sanitize_str(item, r);
        }
        let is_output = item.get("type").and_then(Value::as_str) == Some("function_call_output");
        let field = if is_output { "output" } else { "content" };
        // Other item types (function_call, reasoning, …) carry no prompt text; arguments are
        // JSON text whose escapes a replacement could break.
        if is_output || item.get("role").is_some() {
            if let Some(c) = item.get_mut(field) {
                self.sanitize_content(c, r);
            }
        }
    }

    /// A string, or an array of strings / text parts; other parts (images, audio) are left alone.
    fn sanitize_content(&self, content: &mut Value, r: &mut Redactions) {
        match content {
            Value::String(_) => self.sanitize_str(content, r),
            Value::Array(parts) => {
                for p in parts {
                    let ty = p.get("type").and_then(Value::as_str);
                    if matches!(ty, Some("text" | "input_text" | "output_text")) {
                        if let Some(t) = p.get_mut("text") {
                            self.sanitize_str(t, r);
                        }
                    } else if p.is_string() {
                        self.sanitize_str(p, r);
                    }
                }
            }
            _ => {}
        }
    }

    fn sanitize_str(&self, v: &mut Value, r: &mut Redactions) {
        if let Value::String(s) = v {
            if let Some(new) = self.sanitize_text(s, r) {
                *s = new;
            }
        }
    }

    /// Sanitizes free text (also used for OUTPUT mode on response text); None = nothing found.
    pub fn sanitize_text(&self, text: &str, r: &mut Redactions) -> Option<String> {
        let spans = self.detect(text);
        if spans.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (s, e, d) in spans {
            out.push_str(&text[last..s]);
            out.push_str(r.replace(&self.detectors[d], &text[s..e], self.cfg.redact_type));
            last = e;
        }
        out.push_str(&text[last..]);
        Some(out)
    }

    /// Non-overlapping `(start, end, detector)` spans, left to right.
    fn detect(&self, text: &str) -> Vec<(usize, usize, usize)> {
        let mut cands = Vec::new();
        for (di, d) in self.detectors.iter().enumerate() {
            for caps in d.re.captures_iter(text) {
                let Some(m) = caps.name("v").or_else(|| caps.get(0)) else {
                    continue;
                };
                let start = m.start();
                let end = match d.kind {
                    None => m.end(),
                    Some(_) => match (d.check)(m.as_str()) {
                        Some(len) if bounded(text, start, start + len, d.seps) => start + len,
                        _ => continue,
                    },
                };
                if end > start {
                    cands.push((start, end, di));
                }
            }
        }
        // Earliest first, then longest, then detector priority; overlapping later ones lose.
        cands.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let mut out: Vec<(usize, usize, usize)> = Vec::new();
        for c in cands {
            if out.last().is_none_or(|l| c.0 >= l.1) {
                out.push(c);
            }
        }
        out
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The match must not be glued to the surrounding token (see [`Spec`] for `seps`).
fn bounded(text: &str, s: usize, e: usize, seps: &str) -> bool {
    let m = &text[s..e];
    let (first, last) = (m.chars().next(), m.chars().next_back());
    let mut before = text[..s].chars().rev();
    let (p1, p2) = (before.next(), before.next());
    let mut after = text[e..].chars();
    let (n1, n2) = (after.next(), after.next());
    let w = |c: Option<char>| c.is_some_and(is_word);
    let sep = |c: Option<char>| c.is_some_and(|c| seps.contains(c));
    !(w(first) && (w(p1) || sep(p1) && w(p2)) || w(last) && (w(n1) || sep(n1) && w(n2)))
}

fn any(s: &str) -> Option<usize> {
    Some(s.len())
}

/// Has a digit and a letter: keeps prose such as `sk-learn-is-a-library` or
/// `Bearer authentication-header` out of the prefix-based key patterns.
fn keyish(s: &str) -> Option<usize> {
    let has = |f: fn(&u8) -> bool| s.as_bytes().iter().any(f);
    (has(u8::is_ascii_digit) && has(u8::is_ascii_alphabetic)).then_some(s.len())
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

fn luhn(ds: &[u8]) -> bool {
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d) * if i % 2 == 1 { 2 } else { 1 };
            if d > 9 {
                d - 9
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// The longest prefix of a match that `ok` accepts: the whole match, or one cut before a
/// separator — the spaced-group regexes may run on into a neighbouring number
/// (`4111 1111 1111 1111 10.0.0.1`), which must not hide the real value.
fn longest_prefix(s: &str, ok: impl Fn(&str) -> bool) -> Option<usize> {
    let cuts = s
        .char_indices()
        .rev()
        .filter(|(_, c)| matches!(c, ' ' | '-' | '.'));
    std::iter::once(s.len())
        .chain(cuts.map(|(i, _)| i))
        .find(|&end| ok(&s[..end]))
}

/// 13–19 digits, a known issuer's first digit (2–6), Luhn-valid.
fn card(s: &str) -> Option<usize> {
    longest_prefix(s, |p| {
        let ds = digits(p);
        (13..=19).contains(&ds.len()) && (2..=6).contains(&ds[0]) && luhn(&ds)
    })
}

/// ISO 13616 mod-97 remainder of an IBAN without spaces; None on a non-alphanumeric char.
fn iban_mod97(iban: &str) -> Option<u32> {
    let (head, tail) = iban.split_at(4.min(iban.len()));
    let mut rem = 0u32;
    for c in tail.chars().chain(head.chars()) {
        let v = c.to_digit(36)?;
        rem = if v < 10 { rem * 10 + v } else { rem * 100 + v } % 97;
    }
    Some(rem)
}

fn iban(s: &str) -> Option<usize> {
    longest_prefix(s, |p| {
        let compact: String = p.chars().filter(|c| *c != ' ').collect();
        (15..=34).contains(&compact.len()) && iban_mod97(&compact) == Some(1)
    })
}

/// US SSN: area not 000, 666 or 9xx; group not 00; serial not 0000.
fn ssn(s: &str) -> Option<usize> {
    let (area, group, serial) = (&s[0..3], &s[4..6], &s[7..11]);
    let ok = area != "000"
        && area != "666"
        && !area.starts_with('9')
        && group != "00"
        && serial != "0000";
    ok.then_some(s.len())
}

const DNI_LETTERS: &[u8] = b"TRWAGMYFPDXBNJZSQVHLCKE";

/// Spanish DNI: the letter is the number mod 23.
fn dni(s: &str) -> Option<usize> {
    let n: u32 = s[..8].parse().ok()?;
    (s.as_bytes().last() == DNI_LETTERS.get((n % 23) as usize)).then_some(s.len())
}

/// Spanish NIE: X/Y/Z stand for 0/1/2, then as a DNI.
fn nie(s: &str) -> Option<usize> {
    let lead = match s.as_bytes().first()? {
        b'X' => '0',
        b'Y' => '1',
        _ => '2',
    };
    let num: String = std::iter::once(lead)
        .chain(s.chars().filter(char::is_ascii_digit))
        .collect();
    let n: u32 = num.parse().ok()?;
    (s.as_bytes().last() == DNI_LETTERS.get((n % 23) as usize)).then_some(s.len())
}

/// UK NINO: the regex has the letter rules; these prefixes are never issued.
fn nino(s: &str) -> Option<usize> {
    (!["BG", "GB", "NK", "KN", "TN", "NT", "ZZ"].contains(&&s[..2])).then_some(s.len())
}

/// Drops trailing punctuation that usually ends the sentence, not the URL.
fn url(s: &str) -> Option<usize> {
    let mut end = s.len();
    while let Some(c) = s[..end].chars().next_back() {
        let unbalanced = c == ')' && s[..end].matches('(').count() < s[..end].matches(')').count();
        if !(".,;:!?'".contains(c) || unbalanced) {
            break;
        }
        end -= 1;
    }
    (end > 0).then_some(end)
}

/// Parses as IPv6 and has some substance (`::1`, `a::b` and C++ paths are ignored); a
/// trailing `:` (`at 2001:db8::1: done`) belongs to the sentence.
fn ipv6(s: &str) -> Option<usize> {
    let ok = |p: &str| {
        p.chars().filter(char::is_ascii_hexdigit).count() >= 4 && p.parse::<Ipv6Addr>().is_ok()
    };
    let trimmed = s.strip_suffix(':').filter(|t| !t.ends_with(':'));
    [Some(s), trimmed]
        .into_iter()
        .flatten()
        .find(|p| ok(p))
        .map(str::len)
}

/// 9–15 digits (E.164 allows at most 15).
fn phone(s: &str) -> Option<usize> {
    longest_prefix(s, |p| (9..=15).contains(&digits(p).len()))
}

/// `d/m/yyyy` or `m/d/yyyy` with one separator kind and a plausible day and month.
fn numeric_date(s: &str) -> Option<usize> {
    let sep = s.chars().find(|c| !c.is_ascii_digit())?;
    let parts: Vec<u32> = s.split(sep).filter_map(|p| p.parse().ok()).collect();
    let [a, b, _] = parts[..] else { return None };
    let ok = (1..=31).contains(&a) && (1..=31).contains(&b) && (a <= 12 || b <= 12);
    ok.then_some(s.len())
}

/// Bare domains only with a common TLD, so `file.txt` or `obj.method` stay untouched.
fn domain(s: &str) -> Option<usize> {
    const TLDS: &[&str] = &[
        "com", "net", "org", "io", "ai", "dev", "app", "co", "uk", "de", "fr", "es", "it", "nl",
        "eu", "us", "ca", "au", "jp", "cn", "in", "br", "ru", "ch", "se", "edu", "gov", "info",
        "biz", "me", "tech", "cloud",
    ];
    let tld = s.rsplit('.').next()?.to_ascii_lowercase();
    TLDS.contains(&tld.as_str()).then_some(s.len())
}

/// Generic secret: ≥ 2 digits, both cases, and frequent class changes (≥ 40 % of positions)
/// — random tokens flip between lower/upper/digit constantly, CamelCase identifiers and
/// hyphenated slugs rarely (separators are skipped, not counted as changes).
/// Lower-case hex (git SHAs, UUIDs) is deliberately not matched.
fn generic_secret(s: &str) -> Option<usize> {
    let class = |b: u8| match b {
        b'0'..=b'9' => 0,
        b'a'..=b'z' => 1,
        b'A'..=b'Z' => 2,
        _ => 3,
    };
    let b: Vec<u8> = s.bytes().filter(u8::is_ascii_alphanumeric).collect();
    let count = |k| b.iter().filter(|&&c| class(c) == k).count();
    let changes = b.windows(2).filter(|w| class(w[0]) != class(w[1])).count();
    let ok = count(0) >= 2 && count(1) >= 1 && count(2) >= 1 && changes * 5 >= b.len() * 2;
    ok.then_some(s.len())
}

/// Legacy BTC address: base58 of 25 bytes whose last 4 are a double-SHA-256 checksum.
fn base58check(s: &str) -> Option<usize> {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut le: Vec<u8> = Vec::new();
    for c in s.bytes() {
        let mut carry = ALPHABET.iter().position(|&a| a == c)? as u32;
        for b in le.iter_mut() {
            carry += u32::from(*b) * 58;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            le.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zeros = s.bytes().take_while(|&c| c == b'1').count();
    let bytes: Vec<u8> = std::iter::repeat_n(0, zeros)
        .chain(le.into_iter().rev())
        .collect();
    if bytes.len() != 25 {
        return None;
    }
    let once = ring::digest::digest(&ring::digest::SHA256, &bytes[..21]);
    let twice = ring::digest::digest(&ring::digest::SHA256, once.as_ref());
    (twice.as_ref()[..4] == bytes[21..]).then_some(s.len())
}

/// Segwit address: bech32 (v0) or bech32m (v1+) checksum over `bc` + data.
fn bech32(s: &str) -> Option<usize> {
    const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let mut chk = 1u32;
    let mut step = |v: u32| {
        let top = chk >> 25;
        chk = ((chk & 0x01ff_ffff) << 5) ^ v;
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    };
    let hrp = b"bc";
    hrp.iter().for_each(|c| step(u32::from(c >> 5)));
    step(0);
    hrp.iter().for_each(|c| step(u32::from(c & 31)));
    for c in s[3..].bytes() {
        step(CHARSET.iter().position(|&a| a == c)? as u32);
    }
    (chk == 1 || chk == 0x2bc8_30a3).then_some(s.len())
}

/// Placeholder label of a custom pattern name: upper-case ASCII, anything else `_`.
fn label_of(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A realistic fake value for the `n`th distinct value of a kind; None = use a placeholder.
fn synthetic(kind: Kind, n: usize, original: &str) -> Option<String> {
    Some(match kind {
        Kind::Email => format!("user{n}@example.com"),
        // 555-0100..0199 are the fictional numbers; past 99 a 5-digit line keeps them distinct.
        Kind::Phone => format!("+1-555-{:04}", if n <= 99 { 100 + n } else { 9900 + n }),
        Kind::Creditcard => {
            let body = format!("400000{n:09}");
            let check = (0..10u8).find(|d| luhn(&[digits(&body), vec![*d]].concat()))?;
            format!("{body}{check}")
        }
        Kind::Bank => {
            let bban = format!("TEST{n:014}");
            let rem = iban_mod97(&format!("GB00{bban}"))?;
            format!("GB{:02}{bban}", 98 - rem)
        }
        // Documentation ranges (RFC 5737 / RFC 3849).
        Kind::Ip if !original.contains(':') && n <= 762 => {
            let (net, host) = match n {
                0..=254 => ("192.0.2", n),
                255..=508 => ("198.51.100", n - 254),
                _ => ("203.0.113", n - 508),
            };
            format!("{net}.{host}")
        }
        Kind::Ip => format!("2001:db8::{n:x}"),
        // Area 987 is never issued.
        Kind::Ssn => format!("987-65-{n:04}"),
        Kind::Url => format!("https://example.com/redacted/{n}"),
        Kind::Domain => format!("redacted{n}.example"),
        Kind::Crypto if original.starts_with("0x") => format!("0x{n:040x}"),
        Kind::Crypto => format!("bc1qsynthetic{n:026}"),
        Kind::Date => {
            let i = n.saturating_sub(1);
            format!(
                "{:04}-{:02}-{:02}",
                2000 + i / 336,
                (i / 28) % 12 + 1,
                i % 28 + 1
            )
        }
        Kind::Credentials | Kind::NationalId => return None,
    })
}

/// One request's replacements: originals, counters, per-category counts.
#[derive(Debug, Default, Clone)]
pub struct Redactions {
    /// `(original, replacement)` in first-seen order.
    entries: Vec<(String, String)>,
    by_original: HashMap<String, usize>,
    by_replacement: HashMap<String, usize>,
    /// Entry indexes by replacement length, longest first: the restore match order.
    longest_first: Vec<usize>,
    /// Bitset of the first bytes of replacements, so restoring skips other bytes quickly.
    first_bytes: [u64; 4],
    /// Last N handed out per placeholder label.
    counters: HashMap<String, usize>,
    /// Occurrences per category, first-seen order.
    counts: Vec<(String, usize)>,
}

impl Redactions {
    /// Nothing was replaced.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(category, occurrences)` in first-seen order — for logs and metrics, never values.
    pub fn categories(&self) -> Vec<(String, usize)> {
        self.counts.clone()
    }

    /// The replacement of `original`; the same value always gets the same one.
    fn replace(&mut self, d: &Detector, original: &str, ty: RedactType) -> &str {
        match self.counts.iter_mut().find(|(c, _)| *c == d.category) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((d.category.clone(), 1)),
        }
        let idx = match self.by_original.get(original) {
            Some(&i) => i,
            None => {
                let counter = self.counters.entry(d.label.clone()).or_insert(0);
                // A replacement must not equal one already handed out (custom names can share a
                // label) nor the value itself (a client typing `user1@example.com`): skip numbers
                // until it is unique so restoring stays unambiguous.
                let replacement = loop {
                    *counter += 1;
                    let n = *counter;
                    let fake = match ty {
                        RedactType::Synthetic => d.kind.and_then(|k| synthetic(k, n, original)),
                        RedactType::Placeholder => None,
                    };
                    let candidate = fake.unwrap_or_else(|| format!("[{}_{n}]", d.label));
                    if !self.by_replacement.contains_key(&candidate) && candidate != original {
                        break candidate;
                    }
                };
                let i = self.entries.len();
                self.by_original.insert(original.to_string(), i);
                self.by_replacement.insert(replacement.clone(), i);
                let len = replacement.len();
                let at = self
                    .longest_first
                    .partition_point(|&j| self.entries.get(j).is_some_and(|(_, r)| r.len() >= len));
                self.longest_first.insert(at, i);
                if let Some(&b) = replacement.as_bytes().first() {
                    self.first_bytes[usize::from(b >> 6)] |= 1 << (b & 63);
                }
                self.entries.push((original.to_string(), replacement));
                i
            }
        };
        self.entries.get(idx).map_or("", |(_, rep)| rep.as_str())
    }

    /// Restores originals in plain text.
    pub fn restore<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.scan(text, false, false).0
    }

    /// Restores originals inside raw JSON text (an SSE `data:` payload, a whole body): originals
    /// are inserted JSON-escaped. Replacements never contain characters JSON would escape.
    pub fn restore_json<'a>(&self, raw: &'a str) -> Cow<'a, str> {
        self.scan(raw, true, false).0
    }

    /// Replaces replacements by originals, longest first at each position. A replacement ending
    /// in a word character must not be followed by one (`192.0.2.1` inside `192.0.2.10`). With
    /// `hold`, stops before a suffix that may still become a replacement and returns how many
    /// bytes of `text` the output covers.
    fn scan<'a>(&self, text: &'a str, json: bool, hold: bool) -> (Cow<'a, str>, usize) {
        if self.entries.is_empty() {
            return (Cow::Borrowed(text), text.len());
        }
        let order: Vec<&(String, String)> = self
            .longest_first
            .iter()
            .filter_map(|&j| self.entries.get(j))
            .collect();
        let first = |b: u8| self.first_bytes[usize::from(b >> 6)] & (1 << (b & 63)) != 0;
        let bytes = text.as_bytes();
        let mut out = String::new();
        let (mut copied, mut i) = (0, 0);
        while i < bytes.len() {
            if !first(bytes[i]) || !text.is_char_boundary(i) {
                i += 1;
                continue;
            }
            let rest = &text[i..];
            let mut found = None;
            for (orig, rep) in &order {
                if let Some(after) = rest.strip_prefix(rep.as_str()) {
                    let word_end = rep.chars().next_back().is_some_and(is_word);
                    match after.chars().next() {
                        None if hold && word_end => return self.held(text, out, copied, i),
                        Some(c) if word_end && is_word(c) => continue,
                        _ => {}
                    }
                    found = Some((orig, rep.len()));
                    break;
                }
                if hold && rep.starts_with(rest) {
                    return self.held(text, out, copied, i);
                }
            }
            match found {
                Some((orig, len)) => {
                    out.push_str(&text[copied..i]);
                    if json {
                        let quoted = serde_json::to_string(orig).unwrap_or_default();
                        out.push_str(
                            quoted
                                .get(1..quoted.len().saturating_sub(1))
                                .unwrap_or(orig),
                        );
                    } else {
                        out.push_str(orig);
                    }
                    i += len;
                    copied = i;
                }
                None => i += 1,
            }
        }
        if copied == 0 {
            return (Cow::Borrowed(text), text.len());
        }
        out.push_str(&text[copied..]);
        (Cow::Owned(out), text.len())
    }

    /// Output up to `at`, where a possible replacement starts.
    fn held<'a>(
        &self,
        text: &'a str,
        mut out: String,
        copied: usize,
        at: usize,
    ) -> (Cow<'a, str>, usize) {
        if copied == 0 {
            return (Cow::Borrowed(&text[..at]), at);
        }
        out.push_str(&text[copied..at]);
        (Cow::Owned(out), at)
    }
}

/// Restores placeholders in a stream of text deltas where a replacement may be split across
/// deltas: holds back a suffix that could be the start of a replacement. Works on plain text
/// (decoded deltas), not on raw JSON.
#[derive(Debug)]
pub struct StreamRestorer {
    r: Arc<Redactions>,
    held: String,
}

impl StreamRestorer {
    /// A restorer for one response.
    pub fn new(r: Arc<Redactions>) -> Self {
        StreamRestorer {
            r,
            held: String::new(),
        }
    }

    /// Adds a delta; returns the text that is safe to emit now.
    pub fn push(&mut self, delta: &str) -> String {
        self.held.push_str(delta);
        let (out, consumed) = self.r.scan(&self.held, false, true);
        let out = out.into_owned();
        self.held.drain(..consumed);
        out
    }

    /// Ends the stream; returns whatever was held back, restored.
    pub fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        self.r.restore(&held).into_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn san(cfg: Value) -> Sanitizer {
        let cfg: AiSanitizerConfig = serde_json::from_value(cfg).unwrap();
        Sanitizer::new(&cfg).unwrap()
    }

    fn default_san() -> Sanitizer {
        Sanitizer::new(&AiSanitizerConfig::default()).unwrap()
    }

    /// The sanitized text, or the input when nothing was found.
    fn run(s: &Sanitizer, text: &str) -> (String, Redactions) {
        let mut r = Redactions::default();
        let out = s
            .sanitize_text(text, &mut r)
            .unwrap_or_else(|| text.to_string());
        (out, r)
    }

    fn detected(s: &Sanitizer, text: &str) -> Vec<String> {
        run(s, text)
            .1
            .categories()
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }

    #[test]
    fn detectors_positive() {
        let s = default_san();
        let cases = [
            ("mail john.doe+x@mail.example.co.uk now", "email"),
            ("call +44 20 7946 0958 today", "phone"),
            ("call (555) 123-4567 today", "phone"),
            ("call +1 (555) 123-4567", "phone"),
            ("at 2001:db8::1: done", "ip"),
            ("call 555-123-4567.", "phone"),
            ("call 1-800-555-0199", "phone"),
            ("ring 020 7946 0958", "phone"),
            ("card 4111 1111 1111 1111 ok", "creditcard"),
            ("card 4012-8888-8888-1881", "creditcard"),
            ("amex 378282246310005", "creditcard"),
            ("iban GB82 WEST 1234 5698 7654 32 thanks", "bank"),
            ("iban DE89370400440532013000", "bank"),
            ("host 192.168.0.1 down", "ip"),
            ("host 2001:db8::1 down", "ip"),
            ("ssn 078-05-1120", "ssn"),
            ("see https://example.org/a?b=c.", "url"),
            ("btc 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "crypto"),
            ("btc bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "crypto"),
            ("eth 0x52908400098527886E0F7030069857D2E4169EE7", "crypto"),
            ("born 1990-02-18", "date"),
            ("born 18/02/1990", "date"),
            ("born September 18, 1990", "date"),
            ("dni 12345678Z", "nationalid"),
            ("nie X1234567L", "nationalid"),
            ("nino AB 12 34 56 C", "nationalid"),
            ("key sk-proj-abcDEF1234567890abcdefGHIJ", "credentials"),
            ("key sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "credentials"),
            ("aws AKIAIOSFODNN7EXAMPLE", "credentials"),
            ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", "credentials"),
            ("slack xoxb-123456789012-abcdefABCDEF", "credentials"),
            ("g AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "credentials"),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
                "credentials",
            ),
            (
                "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345",
                "credentials",
            ),
            ("token x9Kq2LmP7vR4tY8wZ3bN6cD1fG5hJ0sA here", "credentials"),
        ];
        for (text, cat) in cases {
            assert_eq!(detected(&s, text), vec![cat.to_string()], "{text}");
        }
    }

    #[test]
    fn detectors_negative() {
        let s = default_san();
        for text in [
            "order 12345 shipped",
            "call 12-34 or 5551234567",
            "short +1 555 0100",
            "card 4111 1111 1111 1112",
            "iban GB82 WEST 1234 5698 7654 33",
            "ip 999.1.1.1 and 1.2.3.4.5",
            "times 12:30:45 and std::fmt and ::1",
            "ssn 666-12-3456, 123-00-4567, 123-45-6789-0",
            "commit 3f786850e387550fdab836ed7e6dc881de23001b",
            "uuid 123e4567-e89b-12d3-a456-426614174000",
            "ident getUserById2FactorAuthenticationV2Handler",
            "slug state-of-the-art-2024-Model-Version-X1",
            "use sk-learn-is-a-python-library, Bearer authentication-header-value",
            "dni 12345678A, version 1.2.3, file.txt, example.com",
            "passport 191280342",
        ] {
            assert!(
                detected(&s, text).is_empty(),
                "{text}: {:?}",
                detected(&s, text)
            );
        }
    }

    #[test]
    fn category_selection() {
        let crypto = san(json!({"anonymize": ["crypto"]}));
        assert!(detected(&crypto, "btc 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb").is_empty());
        assert!(detected(&crypto, "btc bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5").is_empty());
        let only_email = san(json!({"anonymize": ["email"]}));
        assert_eq!(detected(&only_email, "a@b.io 192.168.0.1"), vec!["email"]);
        let all = san(json!({"anonymize": ["all"]}));
        assert!(detected(&all, "key AKIAIOSFODNN7EXAMPLE").is_empty());
        let domain = san(json!({"anonymize": ["domain"]}));
        assert_eq!(run(&domain, "visit example.com").0, "visit [DOMAIN_1]");
        let general = san(json!({"anonymize": ["general"]}));
        assert!(detected(&general, "born 1990-02-18").is_empty());
        let ner = san(json!({"anonymize": ["passport", "driverlicense", "nrp", "medical"]}));
        assert!(detected(&ner, "a@b.io passport 191280342").is_empty());
    }

    #[test]
    fn overlaps_and_same_value() {
        let s = default_san();
        // The email inside the URL is part of the earlier, longer URL match.
        let (out, _) = run(&s, "go https://x.org/?to=a@b.io now");
        assert_eq!(out, "go [URL_1] now");
        let (out, r) = run(&s, "a@b.io, c@d.io, a@b.io and 4111111111111111");
        assert_eq!(out, "[EMAIL_1], [EMAIL_2], [EMAIL_1] and [CREDITCARD_1]");
        assert_eq!(
            r.categories(),
            vec![("email".into(), 3), ("creditcard".into(), 1)]
        );
        // Counters continue across texts of one request.
        let mut r = r;
        assert_eq!(
            s.sanitize_text("e@f.io and c@d.io", &mut r).unwrap(),
            "[EMAIL_3] and [EMAIL_2]"
        );
    }

    #[test]
    fn custom_patterns_and_restore_json() {
        let s = san(json!({
            "anonymize": ["custom", "email"],
            "custom_patterns": [{"name": "emp-id", "regex": "EMP\"[0-9]{4}"}]
        }));
        let text = "id EMP\"1234 mail a@b.io";
        let (out, r) = run(&s, text);
        assert_eq!(out, "id [EMP_ID_1] mail [EMAIL_1]");
        assert_eq!(r.categories()[0], ("emp-id".into(), 1));
        assert_eq!(r.restore(&out), text);
        let raw = serde_json::to_string(&json!({"content": out})).unwrap();
        let restored: Value = serde_json::from_str(&r.restore_json(&raw)).unwrap();
        assert_eq!(restored["content"], text);
        assert!(matches!(r.restore("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn synthetic_values() {
        let s = san(json!({"redact_type": "synthetic", "anonymize": ["all_and_credentials"]}));
        let text = "a@b.io c@d.io 4111111111111111 10.0.0.1 GB82WEST12345698765432 555-123-4567 \
                    AKIAIOSFODNN7EXAMPLE";
        let (out, r) = run(&s, text);
        assert!(
            out.starts_with("user1@example.com user2@example.com 4000000000000010"),
            "{out}"
        );
        assert!(
            out.contains("192.0.2.1 ") && out.contains("+1-555-0101"),
            "{out}"
        );
        assert!(out.contains("[CREDENTIALS_1]"), "{out}");
        assert_eq!(
            detected(&san(json!({"anonymize": ["bank", "creditcard"]})), &out).len(),
            2
        );
        assert_eq!(r.restore(&out), text);
        // 192.0.2.1 must not eat the start of 192.0.2.10.
        assert_eq!(r.restore("192.0.2.10 192.0.2.1"), "192.0.2.10 10.0.0.1");
    }

    #[test]
    fn chat_body_and_history() {
        let body = json!({"messages": [
            {"role": "system", "content": "admin is root@corp.io"},
            {"role": "user", "content": "I am a@b.io"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi a@b.io"}]},
            {"role": "user", "content": [
                {"type": "text", "text": "call 555-123-4567"},
                {"type": "image_url", "image_url": {"url": "https://x.org/a@b.io.png"}}
            ]}
        ]});
        let mut b = body.clone();
        let r = default_san().sanitize_request(&mut b).unwrap();
        assert_eq!(b["messages"][0]["content"], "admin is [EMAIL_1]");
        assert_eq!(b["messages"][1]["content"], "I am [EMAIL_2]");
        assert_eq!(b["messages"][2]["content"][0]["text"], "Hi [EMAIL_2]");
        assert_eq!(b["messages"][3]["content"][0]["text"], "call [PHONE_1]");
        assert_eq!(
            b["messages"][3]["content"][1],
            body["messages"][3]["content"][1]
        );
        assert_eq!(r.restore_json(&b.to_string()), body.to_string());

        let mut b = body.clone();
        san(json!({"allow_all_conversation_history": false}))
            .sanitize_request(&mut b)
            .unwrap();
        assert_eq!(b["messages"][0], body["messages"][0]);
        assert_eq!(b["messages"][1], body["messages"][1]);
        assert_eq!(b["messages"][3]["content"][0]["text"], "call [PHONE_1]");
    }

    #[test]
    fn completions_and_responses_bodies() {
        let s = default_san();
        let mut b = json!({"prompt": ["mail a@b.io", "ok"]});
        s.sanitize_request(&mut b).unwrap();
        assert_eq!(b, json!({"prompt": ["mail [EMAIL_1]", "ok"]}));
        let mut b = json!({"prompt": "mail a@b.io"});
        s.sanitize_request(&mut b).unwrap();
        assert_eq!(b["prompt"], "mail [EMAIL_1]");

        let mut b = json!({"input": "mail a@b.io", "instructions": "cc c@d.io"});
        s.sanitize_request(&mut b).unwrap();
        assert_eq!(
            b,
            json!({"input": "mail [EMAIL_2]", "instructions": "cc [EMAIL_1]"})
        );
        let mut b = json!({"input": [
            {"role": "user", "content": [{"type": "input_text", "text": "mail a@b.io"},
                                          {"type": "input_image", "image_url": "https://x.org/c@d.io"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok a@b.io"}]},
            {"type": "function_call", "call_id": "1", "arguments": "{\"to\":\"c@d.io\"}"},
            {"type": "function_call_output", "call_id": "1", "output": "sent to c@d.io"}
        ]});
        let r = s.sanitize_request(&mut b).unwrap();
        assert_eq!(b["input"][0]["content"][0]["text"], "mail [EMAIL_1]");
        assert_eq!(
            b["input"][0]["content"][1]["image_url"],
            "https://x.org/c@d.io"
        );
        assert_eq!(b["input"][1]["content"][0]["text"], "ok [EMAIL_1]");
        assert_eq!(b["input"][2]["arguments"], "{\"to\":\"c@d.io\"}");
        assert_eq!(b["input"][3]["output"], "sent to [EMAIL_2]");
        assert_eq!(r.categories(), vec![("email".into(), 3)]);
    }

    #[test]
    fn block_names_categories_not_values() {
        let s = san(json!({"block_if_detected": true}));
        let mut b = json!({"messages": [{"role": "user", "content": "a@b.io 4111111111111111"}]});
        let msg = s.sanitize_request(&mut b).unwrap_err().to_string();
        assert_eq!(
            msg,
            "request blocked: the prompt contains personal data (email, creditcard)"
        );
        assert!(!msg.contains("a@b.io") && !msg.contains("4111"));
        let mut clean = json!({"messages": [{"role": "user", "content": "hello"}]});
        assert!(s.sanitize_request(&mut clean).unwrap().is_empty());
    }

    #[test]
    fn stream_restorer_splits() {
        let s = default_san();
        let (_, r) = run(&s, "a@b.io and c@d.io");
        let mut sr = StreamRestorer::new(Arc::new(r));
        let mut out = sr.push("Hi [EM");
        assert_eq!(out, "Hi ");
        out += &sr.push("AIL_");
        out += &sr.push("1], [EMAIL_2] [x");
        out += &sr.push("] [EMAIL");
        out += &sr.finish();
        assert_eq!(out, "Hi a@b.io, c@d.io [x] [EMAIL");

        let syn = san(json!({"redact_type": "synthetic", "anonymize": ["ip"]}));
        let (_, r) = run(&syn, "10.0.0.1");
        let mut sr = StreamRestorer::new(Arc::new(r));
        // A complete synthetic value at the end is held: the next delta could extend it.
        assert_eq!(sr.push("at 192.0"), "at ");
        assert_eq!(sr.push(".2.1"), "");
        assert_eq!(sr.push("0 and 192.0.2.1"), "192.0.2.10 and ");
        assert_eq!(sr.finish(), "10.0.0.1");
    }

    #[test]
    fn config_defaults_nulls_and_errors() {
        let d: AiSanitizerConfig = serde_json::from_value(json!({})).unwrap();
        let n: AiSanitizerConfig = serde_json::from_value(json!({
            "anonymize": null, "custom_patterns": null, "redact_type": null,
            "sanitization_mode": null, "recover_redacted": null, "block_if_detected": null,
            "stop_on_error": null, "allow_all_conversation_history": null,
            "skip_logging_sanitized_items": null, "scheme": null, "host": null, "port": null,
            "timeout": null, "keepalive_timeout": null
        }))
        .unwrap();
        for c in [&d, &n] {
            assert_eq!(c.anonymize, vec![AnonymizeCategory::AllAndCredentials]);
            assert!(c.recover_redacted && c.stop_on_error && c.allow_all_conversation_history);
            assert!(!c.block_if_detected && !c.skip_logging_sanitized_items);
            assert_eq!(
                (c.redact_type, c.sanitization_mode),
                (RedactType::Placeholder, SanitizationMode::Input)
            );
            assert_eq!(
                (c.scheme.as_str(), c.host.as_str(), c.port),
                ("http", "localhost", 8080)
            );
            assert_eq!((c.timeout, c.keepalive_timeout), (10_000, 60_000));
        }
        let s = Sanitizer::new(&d).unwrap();
        assert!(s.on_input() && !s.on_output());
        let both = san(json!({"sanitization_mode": "BOTH"}));
        assert!(both.on_input() && both.on_output());

        let p: AiSanitizerConfig = serde_json::from_value(
            json!({"custom_patterns": [{"name": "x", "regex": "a", "score": null}]}),
        )
        .unwrap();
        assert_eq!(p.custom_patterns[0].score, 0.5);
        assert!(serde_json::from_value::<AiSanitizerConfig>(json!({"bogus": 1})).is_err());
        assert!(
            serde_json::from_value::<AiSanitizerConfig>(json!({"anonymize": ["names"]})).is_err()
        );

        let bad: AiSanitizerConfig = serde_json::from_value(json!({
            "anonymize": ["custom", "passport"],
            "custom_patterns": [{"name": "ok", "regex": "a"}, {"name": "x", "regex": "(", "score": 2}]
        }))
        .unwrap();
        let errs = Sanitizer::new(&bad).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec!["custom_patterns[1].regex", "custom_patterns[1].score"]
        );
        assert!(errs[0].1.starts_with("invalid regex: "));
        let empty: AiSanitizerConfig =
            serde_json::from_value(json!({"anonymize": ["custom"]})).unwrap();
        assert_eq!(empty.validate()[0].0, "anonymize");
    }
}

//! `key-auth`: the consumer behind an API key sent in a header (any name, e.g. `ApiKey`),
//! the query string or the JSON body. Keys are looked up by digest (stored keys are
//! hashed); Kong's 401 texts; the upstream gets `X-Consumer-*` headers and, by default,
//! not the key (`hide_credentials` defaults to true here, as in Kong Enterprise 3.14+).

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::entities::{key_digest, Entities};
use crate::plugins::request_transformer::UpstreamRequest;

/// `key-auth` config (Kong's fields).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    #[serde(default = "default_key_names")]
    pub key_names: Vec<String>,
    #[serde(default = "yes")]
    pub key_in_header: bool,
    #[serde(default = "yes")]
    pub key_in_query: bool,
    #[serde(default)]
    pub key_in_body: bool,
    #[serde(default = "yes")]
    pub hide_credentials: bool,
    pub anonymous: Option<String>,
    #[serde(default = "yes")]
    pub run_on_preflight: bool,
    pub realm: Option<String>,
    /// Where consumers are looked up (Kong 3.10+): `cp` is this gateway's own consumers,
    /// the default; Konnect's identity realms (`realm`) are refused at validation.
    #[serde(default = "default_realms")]
    pub identity_realms: Vec<IdentityRealm>,
    /// Kong 3.15's Konnect principals directory: only `enabled: false` can be honoured.
    pub principals: Option<Principals>,
}

/// `principals`: consumers looked up in a Konnect principals directory.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Principals {
    #[serde(default)]
    pub enabled: bool,
    pub directory: Option<String>,
}

/// One `identity_realms` entry.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityRealm {
    pub scope: RealmScope,
    pub id: Option<String>,
    pub region: Option<String>,
}

/// `identity_realms[].scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RealmScope {
    /// The control plane's consumers: for tollgate, the configuration's own.
    Cp,
    /// A Konnect identity realm, reached through Konnect's API.
    Realm,
}

fn default_realms() -> Vec<IdentityRealm> {
    vec![IdentityRealm {
        scope: RealmScope::Cp,
        id: None,
        region: None,
    }]
}

fn default_key_names() -> Vec<String> {
    vec!["apikey".into()]
}
fn yes() -> bool {
    true
}

impl KeyAuthConfig {
    /// Field errors (path under `config`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.key_names.is_empty() {
            errs.push(("key_names".into(), "length must be at least 1".into()));
        }
        if self.principals.as_ref().is_some_and(|p| p.enabled) {
            errs.push((
                "principals.enabled".into(),
                "Konnect principals directories cannot be reached by tollgate (it has no Konnect connection); consumers come from this configuration".into(),
            ));
        }
        for (i, r) in self.identity_realms.iter().enumerate() {
            if r.scope == RealmScope::Realm {
                errs.push((
                    format!("identity_realms[{i}].scope"),
                    "Konnect identity realms cannot be reached by tollgate (it has no Konnect connection); use scope 'cp', this configuration's consumers".into(),
                ));
            }
        }
        for (i, n) in self.key_names.iter().enumerate() {
            let ok = !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                errs.push((
                    format!("key_names[{i}]"),
                    "bad header name, only a-z, A-Z, 0-9, '_' and '-' are allowed".into(),
                ));
            }
        }
        errs
    }
}

/// The compiled plugin.
#[derive(Debug)]
pub struct KeyAuth {
    pub config: KeyAuthConfig,
    headers: Vec<HeaderName>,
}

impl KeyAuth {
    /// Compiles a validated config.
    pub fn new(config: KeyAuthConfig) -> KeyAuth {
        let headers = config
            .key_names
            .iter()
            .filter_map(|n| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).ok())
            .collect();
        KeyAuth { config, headers }
    }
}

/// Why a request is refused (Kong's texts; 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoKey,
    BadKey,
    Duplicate,
}

impl Refusal {
    /// Kong's message.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoKey => "No API key found in request",
            Refusal::BadKey => "Unauthorized",
            Refusal::Duplicate => "Duplicate API key found",
        }
    }
}

/// Who the request is from.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Index into the snapshot's consumers.
    pub consumer: usize,
    /// The credential's id (None: anonymous).
    pub credential: Option<String>,
}

/// Headers a client must not set itself: they say who the gateway authenticated. Kong's
/// other auth plugins set the group and OAuth ones (`acl`, `oauth2`, `ldap-auth`); an
/// upstream that trusts them must never see a client's own.
const IDENTITY_HEADERS: [&str; 9] = [
    "x-consumer-id",
    "x-consumer-custom-id",
    "x-consumer-username",
    "x-consumer-groups",
    "x-credential-identifier",
    "x-anonymous-consumer",
    "x-authenticated-groups",
    "x-authenticated-scope",
    "x-authenticated-userid",
];

/// Finds the key, checks it, and rewrites the upstream request: identity headers set,
/// the key removed when `hide_credentials`.
pub fn authenticate(
    ka: &KeyAuth,
    snap: &Entities,
    up: &mut UpstreamRequest,
    now_s: i64,
) -> Result<Identity, Refusal> {
    for h in IDENTITY_HEADERS {
        up.headers.remove(h);
    }
    let c = &ka.config;
    let mut found: Option<String> = None;
    if c.key_in_header {
        for name in &ka.headers {
            let mut values = up.headers.get_all(name).iter();
            if let Some(v) = values.next() {
                if values.next().is_some() {
                    return Err(Refusal::Duplicate);
                }
                found = Some(String::from_utf8_lossy(v.as_bytes()).into_owned());
                if c.hide_credentials {
                    up.headers.remove(name);
                }
                break;
            }
        }
    }
    if found.is_none() && c.key_in_query {
        for name in &c.key_names {
            let hits: Vec<&String> = up
                .query
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v)
                .collect();
            if hits.len() > 1 {
                return Err(Refusal::Duplicate);
            }
            if let Some(v) = hits.first() {
                found = Some((*v).clone());
                if c.hide_credentials {
                    up.query.retain(|(k, _)| k != name);
                }
                break;
            }
        }
    }
    if found.is_none() && c.key_in_body {
        if let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&up.body) {
            for name in &c.key_names {
                if let Some(Value::String(v)) = body.get(name) {
                    found = Some(v.clone());
                    if c.hide_credentials {
                        body.remove(name);
                        if let Ok(b) = serde_json::to_vec(&Value::Object(body)) {
                            up.body = b.into();
                        }
                    }
                    break;
                }
            }
        }
    }
    let identity = match found {
        Some(key) => {
            let cred = snap
                .credentials
                .get(&key_digest(&key))
                .filter(|c| c.expires_at.is_none_or(|t| t > now_s))
                .ok_or(Refusal::BadKey)?;
            Identity {
                consumer: cred.consumer,
                credential: Some(cred.id.clone()),
            }
        }
        None => {
            let anon = c
                .anonymous
                .as_deref()
                .filter(|a| !a.is_empty())
                .ok_or(Refusal::NoKey)?;
            let consumer = snap
                .consumers
                .iter()
                .position(|x| x.id == anon || x.username.as_deref() == Some(anon))
                .ok_or(Refusal::NoKey)?;
            Identity {
                consumer,
                credential: None,
            }
        }
    };
    if let Some(consumer) = snap.consumers.get(identity.consumer) {
        let mut set = |name: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                up.headers.insert(name, v);
            }
        };
        set("x-consumer-id", &consumer.id);
        if let Some(u) = &consumer.username {
            set("x-consumer-username", u);
        }
        if let Some(c) = &consumer.custom_id {
            set("x-consumer-custom-id", c);
        }
        match &identity.credential {
            Some(id) => set("x-credential-identifier", id),
            None => set("x-anonymous-consumer", "true"),
        }
    }
    Ok(identity)
}

/// `WWW-Authenticate` for a refusal.
pub fn challenge(ka: &KeyAuth) -> HeaderValue {
    match &ka.config.realm {
        Some(r) => HeaderValue::from_str(&format!("Key realm=\"{r}\""))
            .unwrap_or(HeaderValue::from_static("Key")),
        None => HeaderValue::from_static("Key"),
    }
}

/// Keeps the key out of the log record, which was captured before authentication: the
/// key headers' values and the key query parameters become `REDACTED`.
pub fn redact_log(c: &KeyAuthConfig, log: &mut crate::observe::log::RequestLog) {
    if !log.enabled {
        return;
    }
    for name in &c.key_names {
        log.request.redact_header(name);
    }
    let redact = |uri: &str| -> String {
        let Some((path, q)) = uri.split_once('?') else {
            return uri.to_string();
        };
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| {
                let v = if c.key_names.iter().any(|n| *n == k) {
                    "REDACTED".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        let q = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        format!("{path}?{q}")
    };
    if log.request.uri().contains('?') {
        let uri = redact(log.request.uri());
        log.request.set_uri(&uri);
    }
}

//! ai-proxy-advanced `acls` (Kong 3.14, spec §4.4): allow/deny rules that decide, per
//! request, which targets may serve it. A rule matches when all its conditions do; deny rules
//! win; when allow rules exist a (request, target) pair must match one. Request conditions
//! (header, ip, path) and target conditions (model, provider) combine, so a rule can say
//! "requests with header X may not use provider Y".

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};

/// `config.acls` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AclsConfig {
    #[serde(default)]
    pub allow: Vec<RuleConfig>,
    #[serde(default)]
    pub deny: Vec<RuleConfig>,
}

/// One rule: every condition must match.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(rename = "match")]
    pub conditions: Vec<ConditionConfig>,
}

/// One condition: the request's (or target's) value of `type`/`key` is one of `values`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    #[serde(rename = "type")]
    pub kind: ConditionType,
    pub key: Option<String>,
    pub values: Vec<String>,
}

/// What a condition looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConditionType {
    Consumer,
    ConsumerGroup,
    Header,
    Ip,
    Model,
    Path,
    Provider,
}

/// A compiled condition.
#[derive(Debug)]
enum Condition {
    Header(HeaderName, Vec<String>),
    Ip(Vec<(IpAddr, u8)>),
    /// The model the target would be asked for (its `model.name`, else the client's).
    Model(Vec<String>),
    /// The request path: a value ending in `*` is a prefix, others match exactly.
    Path(Vec<String>),
    Provider(Vec<String>),
}

/// Compiled `acls`.
#[derive(Debug, Default)]
pub struct Acls {
    allow: Vec<Vec<Condition>>,
    deny: Vec<Vec<Condition>>,
}

/// What the rules look at for one request.
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    pub ip: Option<IpAddr>,
    pub path: &'a str,
    /// The client's `model`.
    pub model: Option<&'a str>,
}

/// What the rules look at for one target.
pub struct TargetView<'a> {
    pub provider: &'a str,
    /// The configured `model.name` (None: the client's model is used).
    pub model: Option<&'a str>,
}

pub(crate) fn parse_cidr(v: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (v, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("'{v}' is not an IP address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("'{v}': bad prefix length"))?,
        None => max,
    };
    Ok((ip, len))
}

pub(crate) fn in_cidr(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    let bits = |ip: IpAddr| -> (u128, u8) {
        match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => (u128::from(u32::from(v4)), 32),
                None => (u128::from(a), 128),
            },
        }
    };
    let (a, wa) = bits(ip);
    let (n, wn) = bits(net);
    if wa != wn {
        return false;
    }
    if len == 0 {
        return true;
    }
    let shift = u32::from(wa - len.min(wa));
    (a >> shift) == (n >> shift)
}

impl Acls {
    /// Compiles `c`; errors name the field under `path` (e.g. `config.acls`).
    pub fn compile(c: &AclsConfig, path: &str) -> Result<Acls, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut rules = |list: &[RuleConfig], which: &str| -> Vec<Vec<Condition>> {
            let mut out = Vec::new();
            for (i, r) in list.iter().enumerate() {
                let mut conds = Vec::new();
                if r.conditions.is_empty() {
                    errors.push((
                        format!("{path}.{which}[{i}].match"),
                        "length must be at least 1".into(),
                    ));
                }
                for (j, c) in r.conditions.iter().enumerate() {
                    let at = format!("{path}.{which}[{i}].match[{j}]");
                    if c.values.is_empty() {
                        errors.push((format!("{at}.values"), "length must be at least 1".into()));
                        continue;
                    }
                    let cond = match c.kind {
                        // Failing open on a deny rule would be a hole: refused until an
                        // authentication plugin gives requests a consumer.
                        ConditionType::Consumer | ConditionType::ConsumerGroup => {
                            errors.push((
                                format!("{at}.type"),
                                "consumer and consumer_group conditions need an authentication plugin (key-auth), which tollgate does not have yet".into(),
                            ));
                            continue;
                        }
                        ConditionType::Header => {
                            match c
                                .key
                                .as_deref()
                                .map(|k| HeaderName::from_bytes(k.as_bytes()))
                            {
                                Some(Ok(h)) => Condition::Header(h, c.values.clone()),
                                _ => {
                                    errors.push((
                                        format!("{at}.key"),
                                        "a header condition needs the header name as 'key'".into(),
                                    ));
                                    continue;
                                }
                            }
                        }
                        ConditionType::Ip => {
                            let mut nets = Vec::new();
                            for v in &c.values {
                                match parse_cidr(v) {
                                    Ok(n) => nets.push(n),
                                    Err(e) => errors.push((format!("{at}.values"), e)),
                                }
                            }
                            Condition::Ip(nets)
                        }
                        ConditionType::Model => Condition::Model(c.values.clone()),
                        ConditionType::Path => Condition::Path(c.values.clone()),
                        ConditionType::Provider => Condition::Provider(c.values.clone()),
                    };
                    conds.push(cond);
                }
                out.push(conds);
            }
            out
        };
        let allow = rules(&c.allow, "allow");
        let deny = rules(&c.deny, "deny");
        if errors.is_empty() {
            Ok(Acls { allow, deny })
        } else {
            Err(errors)
        }
    }

    /// Whether there is any rule.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    fn matches(cond: &Condition, r: &Request<'_>, t: &TargetView<'_>) -> bool {
        let has = |vals: &[String], v: &str| vals.iter().any(|x| x == v);
        match cond {
            Condition::Header(h, vals) => r
                .headers
                .get_all(h)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| has(vals, v))),
            Condition::Ip(nets) => r.ip.is_some_and(|ip| nets.iter().any(|n| in_cidr(ip, *n))),
            Condition::Model(vals) => t.model.or(r.model).is_some_and(|m| has(vals, m)),
            Condition::Path(vals) => vals.iter().any(|v| match v.strip_suffix('*') {
                Some(prefix) => r.path.starts_with(prefix),
                None => r.path == v,
            }),
            Condition::Provider(vals) => has(vals, t.provider),
        }
    }

    /// Whether `r` may be served by `t`.
    pub fn permits(&self, r: &Request<'_>, t: &TargetView<'_>) -> bool {
        let rule = |conds: &Vec<Condition>| conds.iter().all(|c| Acls::matches(c, r, t));
        if self.deny.iter().any(rule) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(rule)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn acls(yaml: &str) -> Result<Acls, Vec<(String, String)>> {
        let c: AclsConfig = serde_norway::from_str(yaml).unwrap();
        Acls::compile(&c, "config.acls")
    }

    #[test]
    fn deny_wins_allow_restricts_and_conditions_combine() {
        let a = acls(
            r#"
allow:
  - match: [{type: ip, values: ["10.0.0.0/8", "::1"]}]
deny:
  - match: [{type: header, key: x-tier, values: [free]}, {type: provider, values: [anthropic]}]
"#,
        )
        .unwrap();
        let mut h = HeaderMap::new();
        fn req<'a>(h: &'a HeaderMap, ip: &str) -> Request<'a> {
            Request {
                headers: h,
                ip: ip.parse().ok(),
                path: "/x",
                model: None,
            }
        }
        let openai = TargetView {
            provider: "openai",
            model: Some("gpt-4o"),
        };
        let claude = TargetView {
            provider: "anthropic",
            model: Some("claude"),
        };
        assert!(a.permits(&req(&h, "10.1.2.3"), &claude));
        assert!(!a.permits(&req(&h, "192.168.0.1"), &claude), "not allowed");
        assert!(a.permits(&req(&h, "::1"), &openai));
        h.insert("x-tier", "free".parse().unwrap());
        assert!(!a.permits(&req(&h, "10.1.2.3"), &claude), "denied");
        assert!(
            a.permits(&req(&h, "10.1.2.3"), &openai),
            "only that provider"
        );
    }

    #[test]
    fn models_and_paths() {
        let a = acls(
            r#"
deny:
  - match: [{type: model, values: [gpt-4o]}, {type: path, values: ["/cheap/*"]}]
"#,
        )
        .unwrap();
        let h = HeaderMap::new();
        let r = |path| Request {
            headers: &h,
            ip: None,
            path,
            model: Some("gpt-4o"),
        };
        let configured = TargetView {
            provider: "openai",
            model: None,
        };
        assert!(
            !a.permits(&r("/cheap/chat"), &configured),
            "the client's model"
        );
        assert!(a.permits(&r("/premium/chat"), &configured));
    }

    #[test]
    fn bad_rules_are_load_errors_with_field_paths() {
        let e = acls("deny: [{match: [{type: consumer, key: username, values: [bob]}]}]")
            .err()
            .unwrap();
        assert_eq!(e[0].0, "config.acls.deny[0].match[0].type");
        let e = acls("allow: [{match: [{type: header, values: [x]}]}]")
            .err()
            .unwrap();
        assert_eq!(e[0].0, "config.acls.allow[0].match[0].key");
        let e = acls("allow: [{match: [{type: ip, values: [10.0.0.0/33]}]}]")
            .err()
            .unwrap();
        assert_eq!(e[0].0, "config.acls.allow[0].match[0].values");
    }
}

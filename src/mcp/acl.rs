//! Kong's MCP access lists (`default_acl`, `tools[].acl`): a subject (the consumer's
//! identifier, and its groups' names with `include_consumer_groups`) matching a `deny`
//! entry is refused; with an `allow` list, a subject matching none of it is refused;
//! otherwise it is allowed. A tool's own list replaces the default one (no merging).

use serde::{Deserialize, Serialize};

/// One access list.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    #[serde(default)]
    pub deny: Option<Vec<String>>,
}

/// A decision, with the entry that made it (for the audit log).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Allowed: by the allow entry matched (None: no list refused it).
    Allow(Option<String>),
    /// Denied: by the deny entry matched (None: no allow entry matched).
    Deny(Option<String>),
}

impl Decision {
    /// Whether the subject may go on.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

impl Acl {
    /// Decides for `subjects` (the consumer's identifier first, then its groups; empty for
    /// an anonymous request).
    pub fn decide(&self, subjects: &[&str]) -> Decision {
        let hit = |list: &Option<Vec<String>>| {
            list.as_ref().and_then(|l| {
                subjects
                    .iter()
                    .find(|s| l.iter().any(|e| e == *s))
                    .map(|s| s.to_string())
            })
        };
        if let Some(who) = hit(&self.deny) {
            return Decision::Deny(Some(who));
        }
        match &self.allow {
            Some(_) => match hit(&self.allow) {
                Some(who) => Decision::Allow(Some(who)),
                None => Decision::Deny(None),
            },
            None => Decision::Allow(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(allow: Option<&[&str]>, deny: Option<&[&str]>) -> Acl {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Acl {
            allow: allow.map(own),
            deny: deny.map(own),
        }
    }

    #[test]
    fn deny_wins_then_allow_must_match() {
        let a = acl(Some(&["admin", "eason"]), Some(&["developer"]));
        assert_eq!(
            a.decide(&["alice", "admin"]),
            Decision::Allow(Some("admin".into()))
        );
        assert_eq!(a.decide(&["eason"]), Decision::Allow(Some("eason".into())));
        assert_eq!(
            a.decide(&["bob", "developer", "admin"]),
            Decision::Deny(Some("developer".into()))
        );
        assert_eq!(a.decide(&["carol", "suspended"]), Decision::Deny(None));
        assert_eq!(a.decide(&[]), Decision::Deny(None));
        let open = Acl::default();
        assert!(open.decide(&[]).allowed());
        let deny_only = acl(None, Some(&["suspended"]));
        assert!(deny_only.decide(&["bob"]).allowed());
        assert!(!deny_only.decide(&["carol", "suspended"]).allowed());
    }
}

//! XMPP addresses (JIDs), and the names the bridge derives from them.

use std::fmt;

/// `node@domain/resource`; node and resource are optional.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Jid {
    /// The part before `@` (a user, or a chat's name).
    pub node: Option<String>,
    /// The server.
    pub domain: String,
    /// The part after `/` (a client's resource, or an occupant's nick in a chat).
    pub resource: Option<String>,
}

/// Longest part of a JID (RFC 7622 §3.1).
const MAX_PART: usize = 1023;

impl Jid {
    /// Parses a JID; `None` if it is not one.
    pub fn parse(s: &str) -> Option<Self> {
        let (rest, resource) = match s.split_once('/') {
            Some((r, res)) => (r, Some(res.to_owned())),
            None => (s, None),
        };
        let (node, domain) = match rest.split_once('@') {
            Some((n, d)) => (Some(n.to_owned()), d),
            None => (None, rest),
        };
        let bad = |p: &str| p.is_empty() || p.len() > MAX_PART;
        if bad(domain)
            || node.as_deref().is_some_and(bad)
            || resource.as_deref().is_some_and(bad)
            || domain.contains('@')
        {
            return None;
        }
        Some(Self {
            node: node.map(|n| n.to_lowercase()),
            domain: domain.to_lowercase(),
            resource,
        })
    }

    /// The JID without its resource, as a string.
    pub fn bare(&self) -> String {
        match &self.node {
            Some(n) => format!("{n}@{}", self.domain),
            None => self.domain.clone(),
        }
    }

    /// The same JID with another resource.
    pub fn with_resource(&self, resource: &str) -> String {
        format!("{}/{resource}", self.bare())
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.bare())?;
        if let Some(r) = &self.resource {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

/// A Matrix localpart for an XMPP name (`bob@example.org` → `bob=40example.org`).
pub use tsunagu_appservice::escape_localpart as localpart_for;

/// The node of a Matrix user's puppet JID: the user ID without `@`, with the characters a
/// JID node cannot hold (`:` among them) as `=xx` (`@alice:example.org` →
/// `alice=3aexample.org`). Reversible, so two users never share a puppet.
pub fn puppet_node(user_id: &str) -> String {
    let mut out = String::new();
    for b in user_id.trim_start_matches('@').bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => out.push(b as char),
            _ => out.push_str(&format!("={b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_jids() {
        let j = Jid::parse("Room@Conference.Example.org/Bob Smith").unwrap();
        assert_eq!(j.node.as_deref(), Some("room"));
        assert_eq!(j.domain, "conference.example.org");
        assert_eq!(j.resource.as_deref(), Some("Bob Smith"));
        assert_eq!(j.bare(), "room@conference.example.org");
        assert_eq!(j.to_string(), "room@conference.example.org/Bob Smith");
        assert_eq!(Jid::parse("example.org").unwrap().node, None);
        for bad in ["", "@x", "a@", "a@b/", "a@b@c"] {
            assert!(Jid::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn names_for_matrix_and_xmpp() {
        assert_eq!(localpart_for("Bob@Example.org"), "bob=40example.org");
        assert_eq!(localpart_for("é"), "=c3=a9");
        assert_eq!(puppet_node("@alice:example.org"), "alice=3aexample.org");
        assert_ne!(puppet_node("@a=3ab:c"), puppet_node("@a:b:c"));
    }
}

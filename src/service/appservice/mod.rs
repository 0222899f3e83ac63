//! Application services (bridges): registrations, namespaces and the queries the server
//! makes to them. [`sender`] pushes them their transactions.

pub mod sender;
pub mod thirdparty;

use std::{path::Path, sync::Arc, time::Duration};

use regex::Regex;
use ruma::{
    OwnedUserId, RoomAliasId, RoomId, UserId,
    api::appservice::{Namespace, Registration},
};
use serde_json::json;

use super::{core::Core, users::Users};
use crate::error::{Error, Result};

/// A compiled namespace regex.
#[derive(Debug)]
pub struct CompiledNamespace {
    pub exclusive: bool,
    pub regex: Regex,
}

/// A loaded, validated appservice registration.
#[derive(Debug)]
pub struct Appservice {
    pub registration: Registration,
    pub sender: OwnedUserId,
    pub users: Vec<CompiledNamespace>,
    pub aliases: Vec<CompiledNamespace>,
    pub rooms: Vec<CompiledNamespace>,
}

fn compile(list: &[Namespace], field: &str) -> Result<Vec<CompiledNamespace>, String> {
    list.iter()
        .enumerate()
        .map(|(i, ns)| {
            // Registrations' regexes match the whole ID.
            Regex::new(&format!("^(?:{})$", ns.regex))
                .map(|regex| CompiledNamespace {
                    exclusive: ns.exclusive,
                    regex,
                })
                .map_err(|e| format!("namespaces.{field}[{i}].regex: {e}"))
        })
        .collect()
}

fn matches(list: &[CompiledNamespace], id: &str, exclusive_only: bool) -> bool {
    list.iter()
        .any(|ns| (!exclusive_only || ns.exclusive) && ns.regex.is_match(id))
}

impl Appservice {
    /// Parses and validates a registration (YAML, the spec's format). Errors name the field.
    pub fn parse(yaml: &str, server_name: &ruma::ServerName) -> Result<Self, String> {
        let registration: Registration =
            serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        if registration.id.is_empty() {
            return Err("id: must not be empty".into());
        }
        if registration.as_token.is_empty() || registration.hs_token.is_empty() {
            return Err("as_token and hs_token: must not be empty".into());
        }
        if registration.as_token == registration.hs_token {
            return Err("hs_token: must differ from as_token".into());
        }
        if let Some(url) = &registration.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "url: {url:?} is not an http(s) URL (use null for none)"
            ));
        }
        let sender =
            UserId::parse_with_server_name(registration.sender_localpart.as_str(), server_name)
                .map_err(|e| format!("sender_localpart: {e}"))?;
        let users = compile(&registration.namespaces.users, "users")?;
        let aliases = compile(&registration.namespaces.aliases, "aliases")?;
        let rooms = compile(&registration.namespaces.rooms, "rooms")?;
        Ok(Self {
            registration,
            sender,
            users,
            aliases,
            rooms,
        })
    }

    pub fn id(&self) -> &str {
        &self.registration.id
    }

    /// Whether the appservice may act as this user (its namespace, or its own sender).
    pub fn is_user(&self, user: &UserId) -> bool {
        user == self.sender || matches(&self.users, user.as_str(), false)
    }

    pub fn is_exclusive_user(&self, user: &UserId) -> bool {
        user == self.sender || matches(&self.users, user.as_str(), true)
    }

    pub fn is_alias(&self, alias: &RoomAliasId) -> bool {
        matches(&self.aliases, alias.as_str(), false)
    }

    pub fn is_exclusive_alias(&self, alias: &RoomAliasId) -> bool {
        matches(&self.aliases, alias.as_str(), true)
    }

    pub fn is_room(&self, room: &RoomId) -> bool {
        matches(&self.rooms, room.as_str(), false)
    }

    /// A summary of what it claims, for `tsunagu admin appservice register`.
    pub fn describe(&self) -> String {
        let ns = |list: &[Namespace]| {
            list.iter()
                .map(|n| {
                    format!(
                        "{}{}",
                        n.regex,
                        if n.exclusive { " (exclusive)" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let r = &self.registration;
        format!(
            "appservice {}\n  url: {}\n  sender: {}\n  users: {}\n  aliases: {}\n  rooms: {}\n  receive_ephemeral: {}",
            r.id,
            r.url
                .as_deref()
                .unwrap_or("(none: the server pushes nothing)"),
            self.sender,
            ns(&r.namespaces.users),
            ns(&r.namespaces.aliases),
            ns(&r.namespaces.rooms),
            r.receive_ephemeral,
        )
    }
}

/// Loads every registration file, refusing duplicates and overlapping tokens.
pub fn load_all(
    paths: &[std::path::PathBuf],
    server_name: &ruma::ServerName,
) -> anyhow::Result<Vec<Arc<Appservice>>> {
    let mut out: Vec<Arc<Appservice>> = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("appservice registration {}: {e}", path.display()))?;
        let a = Appservice::parse(&text, server_name)
            .map_err(|e| anyhow::anyhow!("appservice registration {}: {e}", path.display()))?;
        if out.iter().any(|o| o.id() == a.id()) {
            anyhow::bail!(
                "appservice registration {}: id: {:?} is registered twice",
                path.display(),
                a.id()
            );
        }
        if out
            .iter()
            .any(|o| o.registration.as_token == a.registration.as_token)
        {
            anyhow::bail!(
                "appservice registration {}: as_token: already used by another appservice",
                path.display()
            );
        }
        out.push(Arc::new(a));
    }
    Ok(out)
}

/// Reads one registration file for the admin command.
pub fn check_file(path: &Path, server_name: &ruma::ServerName) -> anyhow::Result<Appservice> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Appservice::parse(&text, server_name).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The registered appservices and what they claim. Depends on [`Core`] and [`Users`].
pub struct Appservices {
    core: Arc<Core>,
    users: Arc<Users>,
    pub list: Vec<Arc<Appservice>>,
}

/// A path segment with everything but letters and digits percent-encoded.
fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Appservices {
    pub fn new(core: Arc<Core>, users: Arc<Users>) -> anyhow::Result<Self> {
        let list = load_all(&core.config.appservices, core.server_name())?;
        Ok(Self { core, users, list })
    }

    /// The appservice whose as_token this is.
    pub fn by_token(&self, token: &str) -> Option<Arc<Appservice>> {
        self.list
            .iter()
            .find(|a| a.registration.as_token == token)
            .cloned()
    }

    /// The appservice that claims this user ID exclusively, if any.
    pub fn exclusive_user_owner(&self, user: &UserId) -> Option<Arc<Appservice>> {
        self.list
            .iter()
            .find(|a| a.is_exclusive_user(user))
            .cloned()
    }

    pub fn exclusive_alias_owner(&self, alias: &RoomAliasId) -> Option<Arc<Appservice>> {
        self.list
            .iter()
            .find(|a| a.is_exclusive_alias(alias))
            .cloned()
    }

    /// True for users that belong to any appservice (their rooms skip default encryption).
    pub fn is_appservice_user(&self, user: &UserId) -> bool {
        self.list.iter().any(|a| a.is_user(user))
    }

    /// Asks the appservices whether an unknown user in their namespace exists (they create
    /// it). True when one did.
    pub async fn query_user(&self, user: &UserId) -> bool {
        for a in self.list.iter().filter(|a| a.is_user(user)) {
            let Some(url) = &a.registration.url else {
                continue;
            };
            let url = format!("{url}/_matrix/app/v1/users/{}", path_segment(user.as_str()));
            if self.get(a, &url).await && self.users.account(user).ok().flatten().is_some() {
                return true;
            }
        }
        false
    }

    /// Whether a local user exists, asking the appservices about their namespaces.
    pub async fn user_exists(&self, user: &UserId) -> Result<bool> {
        Ok(self.users.account(user)?.is_some() || self.query_user(user).await)
    }

    /// Asks the appservices about an unknown alias in their namespace (they create the room).
    /// True when one answered that it did.
    pub async fn query_alias(&self, alias: &RoomAliasId) -> bool {
        for a in self.list.iter().filter(|a| a.is_alias(alias)) {
            let Some(url) = &a.registration.url else {
                continue;
            };
            let url = format!(
                "{url}/_matrix/app/v1/rooms/{}",
                path_segment(alias.as_str())
            );
            if self.get(a, &url).await {
                return true;
            }
        }
        false
    }

    async fn get(&self, a: &Appservice, url: &str) -> bool {
        let res = self
            .core
            .http
            .get(url)
            .bearer_auth(&a.registration.hs_token)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        res.is_ok_and(|r| r.status().is_success())
    }

    /// `/appservice/{id}/ping`: calls the appservice's ping endpoint, returns the round trip.
    /// Only the appservice itself (`caller`) may ask.
    pub async fn ping(
        &self,
        caller: Option<&Appservice>,
        id: &str,
        txn: Option<String>,
    ) -> Result<Duration> {
        let a = caller
            .filter(|a| a.id() == id)
            .ok_or_else(|| Error::forbidden("Only the appservice itself may ask for its ping"))?;
        let Some(url) = &a.registration.url else {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UrlNotSet,
                "The appservice has no URL",
            ));
        };
        let mut body = json!({});
        if let Some(t) = txn {
            body["transaction_id"] = t.into();
        }
        let start = std::time::Instant::now();
        let res = self
            .core
            .http
            .post(format!("{url}/_matrix/app/v1/ping"))
            .bearer_auth(&a.registration.hs_token)
            .json(&body)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => Ok(start.elapsed()),
            Ok(r) => Err(Error::new(
                http::StatusCode::BAD_GATEWAY,
                ruma::api::error::ErrorKind::BadStatus({
                    let mut data = ruma::api::error::BadStatusErrorData::new();
                    data.status = Some(r.status());
                    data.body = r.text().await.ok();
                    data
                }),
                "The appservice answered with an error",
            )),
            Err(e) if e.is_timeout() => Err(Error::new(
                http::StatusCode::GATEWAY_TIMEOUT,
                ruma::api::error::ErrorKind::ConnectionTimeout,
                "The appservice did not answer in time",
            )),
            Err(e) => Err(Error::new(
                http::StatusCode::BAD_GATEWAY,
                ruma::api::error::ErrorKind::ConnectionFailed,
                format!("Cannot reach the appservice: {e}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id: irc
url: http://127.0.0.1:9999
as_token: as_secret
hs_token: hs_secret
sender_localpart: ircbot
namespaces:
  users:
    - exclusive: true
      regex: '@irc_.*:localhost'
  aliases:
    - exclusive: true
      regex: '#irc_.*:localhost'
  rooms: []
rate_limited: false
"#;

    #[test]
    fn parses_and_matches_namespaces() {
        let a = Appservice::parse(GOOD, ruma::server_name!("localhost")).unwrap();
        assert!(a.is_exclusive_user(ruma::user_id!("@irc_bob:localhost")));
        assert!(
            a.is_user(ruma::user_id!("@ircbot:localhost")),
            "the sender is in its own namespace"
        );
        assert!(!a.is_user(ruma::user_id!("@alice:localhost")));
        assert!(
            !a.is_user(ruma::user_id!("@xirc_bob:localhost")),
            "regexes match whole IDs"
        );
        assert!(a.is_exclusive_alias(ruma::room_alias_id!("#irc_chan:localhost")));
    }

    #[test]
    fn errors_name_the_field() {
        let missing = GOOD.replace("hs_token: hs_secret\n", "");
        assert!(
            Appservice::parse(&missing, ruma::server_name!("localhost"))
                .unwrap_err()
                .contains("hs_token")
        );
        let bad_regex = GOOD.replace("'@irc_.*:localhost'", "'@irc_(:localhost'");
        let err = Appservice::parse(&bad_regex, ruma::server_name!("localhost")).unwrap_err();
        assert!(err.contains("namespaces.users[0].regex"), "{err}");
        let null_url = GOOD.replace("url: http://127.0.0.1:9999", "url: null");
        assert!(
            Appservice::parse(&null_url, ruma::server_name!("localhost"))
                .unwrap()
                .registration
                .url
                .is_none()
        );
    }
}

//! Application services (bridges): registrations, namespaces, and the transactions the
//! server pushes to them.
//!
//! Each registered appservice has a sender task. It reads the stream like `/sync` does, picks
//! the events the appservice is interested in, and pushes them as a transaction. The
//! transaction in flight and the last delivered stream position are stored, so nothing is
//! lost, repeated under another ID, or re-ordered across restarts; failures are retried with
//! exponential backoff.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::Arc,
    time::Duration,
};

use regex::Regex;
use ruma::{
    OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId,
    api::appservice::{Namespace, Registration},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, json};

use super::{Services, StreamEntry, pdu::ClientView};
use crate::{
    error::{Error, Result},
    store::{Table, decode, pos_bytes},
};

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

/// Delivery state of one appservice, stored in the Global table.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DeliveryState {
    /// Every interesting event up to here has been delivered.
    delivered: u64,
    /// The next transaction ID.
    next_txn: u64,
    /// A transaction built but not yet acknowledged: resent as is after a restart.
    in_flight: Option<InFlight>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct InFlight {
    txn_id: String,
    upto: u64,
    body: JsonValue,
}

fn state_key(id: &str) -> Vec<u8> {
    format!("appservice:{id}").into_bytes()
}

/// Events per transaction at most.
const MAX_EVENTS_PER_TXN: usize = 100;

impl Services {
    /// The appservice whose as_token this is.
    pub fn appservice_by_token(&self, token: &str) -> Option<Arc<Appservice>> {
        self.appservices
            .iter()
            .find(|a| a.registration.as_token == token)
            .cloned()
    }

    pub fn appservice_by_id(&self, id: &str) -> Option<Arc<Appservice>> {
        self.appservices.iter().find(|a| a.id() == id).cloned()
    }

    /// The appservice that claims this user ID exclusively, if any.
    pub fn exclusive_user_owner(&self, user: &UserId) -> Option<Arc<Appservice>> {
        self.appservices
            .iter()
            .find(|a| a.is_exclusive_user(user))
            .cloned()
    }

    pub fn exclusive_alias_owner(&self, alias: &RoomAliasId) -> Option<Arc<Appservice>> {
        self.appservices
            .iter()
            .find(|a| a.is_exclusive_alias(alias))
            .cloned()
    }

    /// True for users that belong to any appservice (their rooms skip default encryption).
    pub fn is_appservice_user(&self, user: &UserId) -> bool {
        self.appservices.iter().any(|a| a.is_user(user))
    }

    /// Creates each appservice's sender user when missing.
    pub async fn ensure_appservice_users(&self) -> Result<()> {
        for a in &self.appservices {
            if self.account(&a.sender)?.is_none() {
                self.create_account(&a.sender, None, false).await?;
            }
        }
        Ok(())
    }

    /// Asks the appservices whether an unknown user in their namespace exists (they create it).
    pub async fn query_appservice_user(&self, user: &UserId) -> bool {
        for a in self.appservices.iter().filter(|a| a.is_user(user)) {
            let Some(url) = &a.registration.url else {
                continue;
            };
            let url = format!("{url}/_matrix/app/v1/users/{}", urlencode(user.as_str()));
            if self.as_get(a, &url).await && self.account(user).ok().flatten().is_some() {
                return true;
            }
        }
        false
    }

    /// Asks the appservices about an unknown alias in their namespace (they create the room).
    pub async fn query_appservice_alias(&self, alias: &RoomAliasId) -> Option<OwnedRoomId> {
        for a in self.appservices.iter().filter(|a| a.is_alias(alias)) {
            let Some(url) = &a.registration.url else {
                continue;
            };
            let url = format!("{url}/_matrix/app/v1/rooms/{}", urlencode(alias.as_str()));
            if self.as_get(a, &url).await
                && let Ok(Some(room)) = self.resolve_alias(alias)
            {
                return Some(room);
            }
        }
        None
    }

    async fn as_get(&self, a: &Appservice, url: &str) -> bool {
        let res = self
            .http
            .get(url)
            .bearer_auth(&a.registration.hs_token)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        res.is_ok_and(|r| r.status().is_success())
    }

    /// `/appservice/{id}/ping`: calls the appservice's ping endpoint, returns the round trip.
    pub async fn ping_appservice(&self, a: &Appservice, txn: Option<String>) -> Result<Duration> {
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

    /// Starts one sender task per appservice with a URL.
    pub fn start_appservice_senders(self: &Arc<Self>) {
        for a in self
            .appservices
            .iter()
            .filter(|a| a.registration.url.is_some())
        {
            let a = a.clone();
            self.spawn_task(move |this| async move { this.appservice_sender(a).await });
        }
    }

    async fn appservice_sender(self: Arc<Self>, a: Arc<Appservice>) {
        let key = state_key(a.id());
        let mut state: DeliveryState = self
            .store
            .get_json(Table::Global, &key)
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut rx = self.subscribe();
        let mut backoff = Duration::from_millis(250);
        let mut typing_seen: HashMap<OwnedRoomId, u64> = HashMap::new();
        loop {
            rx.borrow_and_update();
            if state.in_flight.is_none() {
                match self.build_transaction(&a, &mut state, &mut typing_seen) {
                    Ok(true) => {
                        if let Err(e) = self.save_delivery(&key, &state).await {
                            tracing::warn!(appservice = a.id(), "cannot store transaction: {e}");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(appservice = a.id(), "cannot build transaction: {e}"),
                }
            }
            if let Some(flight) = state.in_flight.clone() {
                if self.push_transaction(&a, &flight).await {
                    state.delivered = flight.upto;
                    state.in_flight = None;
                    backoff = Duration::from_millis(250);
                    if let Err(e) = self.save_delivery(&key, &state).await {
                        tracing::warn!(appservice = a.id(), "cannot store delivery: {e}");
                    }
                    continue; // more may be waiting
                }
                tracing::info!(appservice = a.id(), txn = %flight.txn_id, "appservice unreachable; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
            if rx.changed().await.is_err() {
                return; // server shutting down
            }
        }
    }

    async fn save_delivery(&self, key: &[u8], state: &DeliveryState) -> Result<()> {
        let mut b = crate::store::Batch::default();
        b.put_json(Table::Global, key, state);
        self.write(b).await
    }

    /// Collects the events after `state.delivered` that interest the appservice into a new
    /// in-flight transaction. Returns whether one was made.
    fn build_transaction(
        &self,
        a: &Appservice,
        state: &mut DeliveryState,
        typing_seen: &mut HashMap<OwnedRoomId, u64>,
    ) -> Result<bool> {
        let upto_max = self.current_pos();
        let mut events = Vec::new();
        let mut ephemeral = Vec::new();
        let mut interested: HashMap<OwnedRoomId, bool> = HashMap::new();
        let mut upto = state.delivered;
        let view = ClientView {
            device: None,
            with_room_id: true,
        };
        let mut receipt_rooms = HashSet::new();
        for item in self.store.scan_range(
            Table::Stream,
            &pos_bytes(state.delivered + 1),
            &pos_bytes(upto_max.saturating_add(1)),
            false,
            0,
        ) {
            let (k, v) = item?;
            let pos = crate::store::pos_from(&k).unwrap_or(upto);
            let entry: StreamEntry = decode(Table::Stream, &v)?;
            upto = pos;
            let Some(room) = entry.room else { continue };
            // The event at this position, if it is a timeline event.
            let ev = self
                .store
                .get(
                    Table::Timeline,
                    &crate::store::key(&[room.as_bytes(), &pos_bytes(pos)]),
                )?
                .and_then(|id| String::from_utf8(id).ok())
                .and_then(|id| ruma::OwnedEventId::try_from(id).ok())
                .map(|id| self.event(&id))
                .transpose()?
                .flatten();
            let room_interesting = match interested.get(&room) {
                Some(b) => *b,
                None => {
                    let b = self.room_interests(a, &room)?;
                    interested.insert(room.clone(), b);
                    b
                }
            };
            match ev {
                Some(ev) => {
                    let direct = ev.sender().is_some_and(|s| a.is_user(&s))
                        || ev
                            .state_key()
                            .and_then(|k| UserId::parse(k).ok())
                            .is_some_and(|u| a.is_user(&u));
                    if direct || room_interesting {
                        events.push(self.client_event(&ev, &view));
                    }
                    if direct && ev.kind() == "m.room.member" {
                        interested.remove(&room); // membership of the room changed
                    }
                }
                None if room_interesting && a.registration.receive_ephemeral => {
                    receipt_rooms.insert(room);
                }
                None => {}
            }
            if events.len() >= MAX_EVENTS_PER_TXN {
                break;
            }
        }
        for room in receipt_rooms {
            if let Some(content) = self.receipts_since(&room, &a.sender, state.delivered)? {
                ephemeral.push(json!({ "type": "m.receipt", "room_id": room, "content": content }));
            }
        }
        if a.registration.receive_ephemeral {
            for room in interested.iter().filter(|(_, i)| **i).map(|(r, _)| r) {
                let (users, serial) = self.ephemeral.typing(room);
                if typing_seen.get(room).copied().unwrap_or(0) != serial {
                    typing_seen.insert(room.clone(), serial);
                    ephemeral.push(json!({ "type": "m.typing", "room_id": room, "content": { "user_ids": users } }));
                }
            }
        }
        if events.is_empty() && ephemeral.is_empty() {
            state.delivered = upto; // nothing for this appservice; persisted with the next txn
            return Ok(false);
        }
        let txn_id = state.next_txn.to_string();
        state.next_txn += 1;
        let mut body = json!({ "events": events });
        if !ephemeral.is_empty() {
            body["ephemeral"] = ephemeral.clone().into();
            body["de.sorunome.msc2409.ephemeral"] = ephemeral.into();
        }
        state.in_flight = Some(InFlight { txn_id, upto, body });
        Ok(true)
    }

    /// Whether an appservice cares about a room: a namespaced member, a namespaced alias, or a
    /// namespaced room ID.
    fn room_interests(&self, a: &Appservice, room: &RoomId) -> Result<bool> {
        if a.is_room(room) {
            return Ok(true);
        }
        if self
            .members(room)?
            .iter()
            .any(|(u, m, _)| (m == "join" || m == "invite") && a.is_user(u))
        {
            return Ok(true);
        }
        Ok(self
            .local_aliases(room)?
            .iter()
            .any(|alias| RoomAliasId::parse(alias).is_ok_and(|al| a.is_alias(&al))))
    }

    async fn push_transaction(&self, a: &Appservice, flight: &InFlight) -> bool {
        let Some(url) = &a.registration.url else {
            return true;
        };
        let res = self
            .http
            .put(format!(
                "{url}/_matrix/app/v1/transactions/{}",
                flight.txn_id
            ))
            .bearer_auth(&a.registration.hs_token)
            .json(&flight.body)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                tracing::warn!(appservice = a.id(), status = %r.status(), "transaction refused");
                false
            }
            Err(e) => {
                tracing::debug!(appservice = a.id(), "transaction failed: {e}");
                false
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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

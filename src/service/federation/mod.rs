//! The Server-Server API's identity and queries: this server's signing key as
//! `/_matrix/key/v2/server` publishes it, other servers' keys (fetched, checked and cached;
//! relayed to those who ask this server as a notary), and the profile and room-alias lookups
//! that let people find each other across servers. Requests to other servers go through
//! [`FedClient`]; this server's events and EDUs go out through the sender (`sender.rs`). Rooms
//! shared with other servers are in [`rooms`].

mod client;
pub mod dns;
pub mod rooms;
mod sender;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use base64::Engine as _;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedRoomId,
    OwnedServerName, OwnedUserId, RoomAliasId, ServerName, UserId,
    api::federation::{
        directory::get_public_rooms_filtered,
        discovery::{get_remote_server_keys_batch, get_server_keys},
        keys::{claim_keys, get_keys},
        query::{get_profile_information, get_room_information},
    },
    serde::Base64,
    signatures::{
        SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes,
    },
};
use serde_json::{Value as JsonValue, json};

pub use client::{Destination, FedClient, FedError};

use super::core::{Core, now_ms};
use crate::{
    error::{Error, Result},
    store::{FEDERATION_TRANSACTIONS, SERVER_KEYS, ServerKeysRecord},
};

/// How long other servers may cache the published key before asking again.
pub const KEY_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// Most servers one notary query may name.
pub const MAX_NOTARY_SERVERS: usize = 20;
/// Transaction IDs remembered per origin server (to answer a retried one without handling
/// it twice).
pub const KEPT_TRANSACTIONS: usize = 1000;

/// The Server-Server API's identity. Depends on [`Core`].
pub struct Federation {
    core: Arc<Core>,
    pub client: FedClient,
    queues: sender::Queues,
    /// Media answers to other servers in memory at once.
    media_serving: tokio::sync::Semaphore,
    /// Key fetches in flight: requests naming strangers as their origin each start one, and
    /// must not take every outgoing slot (`max_key_fetches`; past it they are refused).
    key_fetches: tokio::sync::Semaphore,
}

/// Another server's media file.
pub struct RemoteFile {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// A profile as another server answered it.
#[derive(Debug, Default)]
pub struct RemoteProfile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

impl Federation {
    pub fn new(core: Arc<Core>) -> anyhow::Result<Self> {
        Ok(Self {
            client: FedClient::new(core.clone())?,
            media_serving: tokio::sync::Semaphore::new(
                core.config.federation.max_media_served_at_once,
            ),
            key_fetches: tokio::sync::Semaphore::new(core.config.federation.max_key_fetches),
            core,
            queues: sender::Queues::new(),
        })
    }

    /// The server's keys as `GET /_matrix/key/v2/server` answers: the ed25519 key that signs
    /// every local event, valid for [`KEY_VALIDITY`] from now, and the keys it replaced
    /// (`tsunagu admin rotate-signing-key`) with when they expired; signed by the current key.
    pub fn server_keys(&self) -> Result<CanonicalJsonObject> {
        let key = &self.core.signing_key;
        let server_name = self.core.server_name().as_str();
        let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.public_key());
        let valid_until = now_ms().saturating_add(KEY_VALIDITY.as_millis() as u64);
        let old: serde_json::Map<String, JsonValue> = self
            .core
            .old_signing_keys
            .iter()
            .map(|k| {
                let v = json!({ "key": k.public, "expired_ts": k.expired_ts });
                (k.key_id.clone(), v)
            })
            .collect();
        let mut keys: CanonicalJsonObject = serde_json::from_value(json!({
            "server_name": server_name,
            "verify_keys": { format!("ed25519:{}", key.version()): { "key": public } },
            "old_verify_keys": old,
            "valid_until_ts": valid_until,
        }))
        .map_err(Error::internal)?;
        ruma::signatures::sign_json(server_name, key, &mut keys).map_err(Error::internal)?;
        Ok(keys)
    }

    /// The public key `key_id` of `server`, valid at `valid_at` (ms): from the cache, else
    /// fetched from the server itself and checked.
    pub async fn verify_key(
        &self,
        server: &ServerName,
        key_id: &str,
        valid_at: u64,
    ) -> std::result::Result<Base64, FedError> {
        self.key_of(server, key_id, valid_at, false).await
    }

    /// [`Federation::verify_key`]; with `direct_only`, never through a notary.
    async fn key_of(
        &self,
        server: &ServerName,
        key_id: &str,
        valid_at: u64,
        direct_only: bool,
    ) -> std::result::Result<Base64, FedError> {
        if server == self.core.server_name() {
            let key = &self.core.signing_key;
            if key_id == format!("ed25519:{}", key.version()) {
                return Ok(Base64::new(key.public_key().to_vec()));
            }
            if let Some(old) = self
                .core
                .old_signing_keys
                .iter()
                .find(|k| k.key_id == key_id && k.expired_ts >= valid_at)
                && let Ok(public) = Base64::parse(&old.public)
            {
                return Ok(public);
            }
            return Err(FedError::Invalid(
                server.to_owned(),
                format!("no key {key_id}"),
            ));
        }
        let known = |record: &ServerKeysRecord| {
            record
                .keys
                .get(key_id)
                .filter(|(_, until)| *until >= valid_at)
                .and_then(|(key, _)| Base64::parse(key).ok())
        };
        if let Some(key) = self.stored_keys(server).as_ref().and_then(known) {
            return Ok(key);
        }
        let record = Box::pin(self.fetch_keys(server, direct_only)).await?;
        known(&record).ok_or_else(|| {
            FedError::Invalid(
                server.to_owned(),
                format!("it publishes no key {key_id} valid at {valid_at}"),
            )
        })
    }

    fn stored_keys(&self, server: &ServerName) -> Option<ServerKeysRecord> {
        self.core.store.get(&SERVER_KEYS, server).ok().flatten()
    }

    /// Asks `server` for its keys, checks that it signed them with each key it publishes, and
    /// keeps them (with every key seen before). When the server cannot be asked, the trusted
    /// notaries (`federation.trusted_key_servers`) are, unless `direct_only`.
    async fn fetch_keys(
        &self,
        server: &ServerName,
        direct_only: bool,
    ) -> std::result::Result<ServerKeysRecord, FedError> {
        let invalid = |m: String| FedError::Invalid(server.to_owned(), m);
        let _slot = self
            .key_fetches
            .try_acquire()
            .map_err(|_| FedError::Busy(server.to_owned()))?;
        let object = match self.fetch_direct(server).await {
            Ok(object) => object,
            Err(e) if direct_only => return Err(e),
            Err(e) => match Box::pin(self.fetch_via_notaries(server)).await {
                Some(object) => object,
                None => return Err(e),
            },
        };
        let keys = checked_keys(server, &object).map_err(invalid)?;
        let mut record = self.stored_keys(server).unwrap_or_default();
        record.keys.extend(keys);
        record.response = serde_json::to_value(&object).map_err(|e| invalid(e.to_string()))?;
        let mut batch = crate::store::Batch::default();
        batch.put(&SERVER_KEYS, server, &record);
        self.core
            .store
            .apply(batch)
            .map_err(|e| invalid(format!("cannot keep its keys: {e}")))?;
        Ok(record)
    }

    /// `server`'s own answer to `/_matrix/key/v2/server`, checked.
    async fn fetch_direct(
        &self,
        server: &ServerName,
    ) -> std::result::Result<CanonicalJsonObject, FedError> {
        let invalid = |m: String| FedError::Invalid(server.to_owned(), m);
        let response = self
            .client
            .send_unsigned(server, get_server_keys::v2::Request::new())
            .await?;
        let object: CanonicalJsonObject = serde_json::from_str(response.server_key.json().get())
            .map_err(|e| invalid(format!("keys are not canonical JSON: {e}")))?;
        checked_keys(server, &object).map_err(invalid)?;
        Ok(object)
    }

    /// `server`'s keys as a trusted notary relays them: signed by the server itself (each key
    /// it publishes) and by the notary, whose own keys are fetched from it directly.
    async fn fetch_via_notaries(&self, server: &ServerName) -> Option<CanonicalJsonObject> {
        for notary in &self.core.config.federation.trusted_key_servers {
            if notary == server {
                continue;
            }
            let request = get_remote_server_keys_batch::v2::Request::new(BTreeMap::from([(
                server.to_owned(),
                BTreeMap::new(),
            )]));
            let Ok(response) = self.client.send_unsigned(notary, request).await else {
                continue;
            };
            for raw in response.server_keys {
                let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(raw.json().get())
                else {
                    continue;
                };
                if checked_keys(server, &object).is_ok() && self.signed_by(notary, &object).await {
                    return Some(object);
                }
            }
        }
        None
    }

    /// Whether `signer` signed `object` with one of its keys (known or fetched from it).
    async fn signed_by(&self, signer: &ServerName, object: &CanonicalJsonObject) -> bool {
        let Some(CanonicalJsonValue::Object(all)) = object.get("signatures") else {
            return false;
        };
        let Some(CanonicalJsonValue::Object(theirs)) = all.get(signer.as_str()) else {
            return false;
        };
        let Ok(signed) = to_canonical_json_string_for_signing(object) else {
            return false;
        };
        for (key_id, signature) in theirs {
            let Some(signature) = as_str(signature)
                .and_then(|s| Base64::<ruma::serde::base64::Standard>::parse(s).ok())
            else {
                continue;
            };
            let Ok(key) = self.key_of(signer, key_id, now_ms(), true).await else {
                continue;
            };
            if verify_canonical_json_bytes(
                &SigningKeyAlgorithm::Ed25519,
                key.as_bytes(),
                signature.as_bytes(),
                signed.as_bytes(),
            )
            .is_ok()
            {
                return true;
            }
        }
        false
    }

    /// The answers of a notary query: each named server's keys as it signed them, valid at
    /// least until the time asked for, countersigned by this server. Servers whose keys
    /// cannot be had are left out (as the spec says).
    pub async fn notary_keys(
        &self,
        wanted: Vec<(OwnedServerName, Option<u64>)>,
    ) -> Result<Vec<CanonicalJsonObject>> {
        if wanted.len() > MAX_NOTARY_SERVERS {
            return Err(Error::invalid_param(format!(
                "At most {MAX_NOTARY_SERVERS} servers per query"
            )));
        }
        let mut out = Vec::new();
        for (server, min_valid) in wanted {
            let mut object = if &server == self.core.server_name() {
                self.server_keys()?
            } else {
                let min_valid = min_valid.unwrap_or_else(now_ms);
                let fresh = |r: &ServerKeysRecord| {
                    r.response["valid_until_ts"]
                        .as_u64()
                        .is_some_and(|t| t >= min_valid)
                };
                let record = match self.stored_keys(&server).filter(fresh) {
                    Some(r) => r,
                    None => match self.fetch_keys(&server, false).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::debug!("notary: no keys for {server}: {e}");
                            match self.stored_keys(&server) {
                                // What is known is better than nothing; the asker decides.
                                Some(r) => r,
                                None => continue,
                            }
                        }
                    },
                };
                match serde_json::from_value::<CanonicalJsonObject>(record.response) {
                    Ok(o) => o,
                    Err(_) => continue,
                }
            };
            ruma::signatures::sign_json(
                self.core.server_name().as_str(),
                &self.core.signing_key,
                &mut object,
            )
            .map_err(Error::internal)?;
            out.push(object);
        }
        Ok(out)
    }

    /// Another server's user's profile, asked of their server.
    pub async fn remote_profile(&self, user: &UserId) -> Result<RemoteProfile> {
        let response = self
            .client
            .send(
                user.server_name(),
                get_profile_information::v1::Request::new(user.to_owned()),
            )
            .await
            .map_err(|e| remote_error(e, "Profile not found"))?;
        let text = |k: &str| response.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        Ok(RemoteProfile {
            displayname: text("displayname"),
            avatar_url: text("avatar_url"),
        })
    }

    /// The room another server's alias points at, and servers that can join it.
    pub async fn remote_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let response = self
            .client
            .send(
                alias.server_name(),
                get_room_information::v1::Request::new(alias.to_owned()),
            )
            .await
            .map_err(|e| remote_error(e, "Room alias not found"))?;
        Ok((response.room_id, response.servers))
    }

    /// Device and cross-signing keys of other servers' users, each server asked once (all at
    /// once). Keys that do not belong to the server asked, or whose IDs do not match where
    /// they are listed, are left out. Returns the answers and, per server that could not
    /// answer, why.
    pub async fn remote_device_keys(
        &self,
        wanted: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> (Vec<get_keys::v1::Response>, Failures) {
        self.ask_each_server(wanted, get_keys::v1::Request::new, |server, r| {
            r.device_keys.retain(|user, devices| {
                devices.retain(|device, keys| {
                    let v = keys
                        .deserialize_as_unchecked::<JsonValue>()
                        .unwrap_or_default();
                    v["user_id"] == user.as_str() && v["device_id"] == device.as_str()
                });
                user.server_name() == server
            });
            r.master_keys.retain(|user, _| user.server_name() == server);
            r.self_signing_keys
                .retain(|user, _| user.server_name() == server);
        })
        .await
    }

    /// One-time keys of other servers' users' devices, each server asked once.
    pub async fn remote_claim(
        &self,
        wanted: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> (Vec<claim_keys::v1::Response>, Failures) {
        self.ask_each_server(wanted, claim_keys::v1::Request::new, |server, r| {
            r.one_time_keys
                .retain(|user, _| user.server_name() == server);
        })
        .await
    }

    /// Asks each server about its users in `wanted`, all at once: `request` makes the request
    /// from one server's part, `keep_own` drops what an answer says of other servers' users.
    /// Returns the answers, and per server that could not answer, why (as `/keys/query` and
    /// `/keys/claim` report `failures`).
    async fn ask_each_server<V, R>(
        &self,
        wanted: BTreeMap<OwnedUserId, V>,
        request: impl Fn(BTreeMap<OwnedUserId, V>) -> R,
        keep_own: impl Fn(&ServerName, &mut R::IncomingResponse),
    ) -> (Vec<R::IncomingResponse>, Failures)
    where
        R: ruma::api::OutgoingRequest<
                Authentication = ruma::api::federation::authentication::ServerSignatures,
                PathBuilder = ruma::api::path_builder::SinglePath,
            >,
    {
        let asks = group_by_server(wanted)
            .into_iter()
            .map(|(server, users)| {
                let request = request(users);
                async move {
                    let answer = self.client.send(&server, request).await;
                    (server, answer)
                }
            })
            .collect::<Vec<_>>();
        let mut answers = Vec::new();
        let mut failures = BTreeMap::new();
        for (server, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok(mut r) => {
                    keep_own(&server, &mut r);
                    answers.push(r);
                }
                Err(e) => {
                    failures.insert(server.to_string(), json!({ "error": e.to_string() }));
                }
            }
        }
        (answers, failures)
    }

    /// Queues to-device messages for other servers' users: one `m.direct_to_device` EDU per
    /// server, delivered by the sender.
    pub async fn send_to_device(
        &self,
        sender: &UserId,
        kind: &str,
        message_id: &str,
        messages: Vec<(OwnedUserId, String, JsonValue)>,
    ) -> Result<()> {
        let mut by_server: BTreeMap<OwnedServerName, serde_json::Map<String, JsonValue>> =
            BTreeMap::new();
        for (user, device, content) in messages {
            let users = by_server.entry(user.server_name().to_owned()).or_default();
            let devices = users.entry(user.to_string()).or_insert_with(|| json!({}));
            devices[device] = content;
        }
        for (server, messages) in by_server {
            if self.client.permits(&server).is_err() {
                continue;
            }
            let edu = json!({
                "edu_type": "m.direct_to_device",
                "content": {
                    "sender": sender,
                    "type": kind,
                    "message_id": message_id,
                    "messages": messages,
                },
            });
            self.queue_edu(&server, edu).await?;
        }
        Ok(())
    }

    /// Whether a transaction from `origin` was handled before (a retry to answer at once).
    pub fn already_received(&self, origin: &ServerName, txn_id: &str) -> Result<bool> {
        Ok(self
            .core
            .store
            .contains(&FEDERATION_TRANSACTIONS, (origin, txn_id))?)
    }

    /// Marks a transaction from `origin` as handled (after its contents are). Only the
    /// newest [`KEPT_TRANSACTIONS`] of each server are remembered: a server retries a
    /// transaction soon or not at all, and a hostile one cannot grow the table without bound.
    pub async fn received(&self, origin: &ServerName, txn_id: &str) -> Result<()> {
        let mut batch = crate::store::Batch::default();
        batch.put(&FEDERATION_TRANSACTIONS, (origin, txn_id), &now_ms());
        let mut kept: Vec<(u64, String)> = self
            .core
            .store
            .scan(FEDERATION_TRANSACTIONS.prefix(origin))
            .take(KEPT_TRANSACTIONS * 2)
            .filter_map(|item| item.ok().map(|((_, txn), at)| (at, txn)))
            .collect();
        if kept.len() >= KEPT_TRANSACTIONS {
            kept.sort();
            let excess = kept.len() + 1 - KEPT_TRANSACTIONS;
            for (_, txn) in kept.into_iter().take(excess) {
                batch.delete(&FEDERATION_TRANSACTIONS, (origin, txn.as_str()));
            }
        }
        self.core.write(batch).await
    }

    /// A turn to answer another server's media request (`max_media_served_at_once`): each
    /// answer holds its file in memory.
    pub async fn media_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        let wait = Duration::from_secs(self.core.config.federation.request_timeout_secs);
        match tokio::time::timeout(wait, self.media_serving.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Error::limit_exceeded(Duration::from_secs(5))),
        }
    }

    /// Another server's media (`/_matrix/federation/v1/media/download`), at most `cap` bytes;
    /// followed to where the server says it is when it answers with a location.
    pub async fn remote_media(
        &self,
        server: &ServerName,
        media_id: &str,
        cap: usize,
    ) -> std::result::Result<RemoteFile, FedError> {
        use ruma::api::federation::authenticated_media::{FileOrLocation, get_content};
        let response = self
            .client
            .send_capped(
                server,
                get_content::v1::Request::new(media_id.to_owned()),
                cap,
            )
            .await?;
        match response.content {
            FileOrLocation::File(content) => Ok(RemoteFile {
                bytes: content.file,
                content_type: content.content_type,
                filename: content.content_disposition.and_then(|d| d.filename),
            }),
            FileOrLocation::Location(url) => Ok(RemoteFile {
                bytes: self.client.fetch_url(server, &url, cap).await?,
                content_type: None,
                filename: None,
            }),
            _ => Err(FedError::Invalid(
                server.to_owned(),
                "an unknown media answer".into(),
            )),
        }
    }

    /// A room of another server as its space hierarchy shows it (`/hierarchy`, one level):
    /// its summary and `m.space.child` events, from the first of `via` (at most three asked)
    /// that answers.
    pub async fn remote_hierarchy(
        &self,
        room_id: &ruma::RoomId,
        via: &[OwnedServerName],
        suggested_only: bool,
    ) -> Option<(ruma::room::RoomSummary, Vec<JsonValue>)> {
        use ruma::api::federation::space::get_hierarchy;
        for server in via.iter().take(3) {
            let mut request = get_hierarchy::v1::Request::new(room_id.to_owned());
            request.suggested_only = suggested_only;
            match self.client.send(server, request).await {
                Ok(r) if r.room.summary.room_id == room_id => {
                    let children = r
                        .room
                        .children_state
                        .iter()
                        .filter_map(|c| c.deserialize_as_unchecked::<JsonValue>().ok())
                        .collect();
                    return Some((r.room.summary, children));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("hierarchy of {room_id} from {server}: {e}"),
            }
        }
        None
    }

    /// A page of another server's public room directory.
    pub async fn remote_public_rooms(
        &self,
        server: &ServerName,
        term: Option<&str>,
        limit: Option<ruma::UInt>,
        since: Option<&str>,
    ) -> Result<get_public_rooms_filtered::v1::Response> {
        let mut request = get_public_rooms_filtered::v1::Request::new();
        request.limit = limit;
        request.since = since.map(str::to_owned);
        request.filter.generic_search_term = term.map(str::to_owned);
        self.client
            .send(server, request)
            .await
            .map_err(|e| remote_error(e, "No room directory there"))
    }
}

/// Per server that could not be asked, why.
pub type Failures = BTreeMap<String, JsonValue>;

/// Splits a per-user map by the users' servers.
fn group_by_server<V>(
    wanted: BTreeMap<OwnedUserId, V>,
) -> BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, V>> {
    let mut out: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, V>> = BTreeMap::new();
    for (user, v) in wanted {
        out.entry(user.server_name().to_owned())
            .or_default()
            .insert(user, v);
    }
    out
}

/// What a client sees when another server could not answer: 404 when it said there is no
/// such thing (or federation is off, or the server is not one this one talks with), else 502.
fn remote_error(e: FedError, not_found: &str) -> Error {
    use http::StatusCode;
    use ruma::api::error::ErrorKind;
    match &e {
        FedError::Status { .. } if e.is_not_found() => Error::not_found(not_found),
        FedError::Disabled | FedError::NotPermitted(_) => {
            Error::not_found(format!("{not_found}: {e}"))
        }
        _ => Error::new(StatusCode::BAD_GATEWAY, ErrorKind::Unknown, e.to_string()),
    }
}

/// A public key (unpadded base64) and until when it is valid, in ms.
type KnownKey = (String, u64);

/// The keys in a `/_matrix/key/v2/server` answer from `server`, once it is checked: it names
/// `server`, and each key in `verify_keys` signed it. Key ID -> (key, valid until).
fn checked_keys(
    server: &ServerName,
    object: &CanonicalJsonObject,
) -> std::result::Result<Vec<(String, KnownKey)>, String> {
    if object.get("server_name").and_then(as_str) != Some(server.as_str()) {
        return Err("the keys name another server".into());
    }
    let until = match object.get("valid_until_ts") {
        Some(CanonicalJsonValue::Integer(i)) => u64::try_from(i64::from(*i)).unwrap_or(0),
        _ => return Err("valid_until_ts is missing".into()),
    };
    let Some(CanonicalJsonValue::Object(verify)) = object.get("verify_keys") else {
        return Err("verify_keys is missing".into());
    };
    if verify.is_empty() {
        return Err("verify_keys is empty".into());
    }
    let signatures = match object.get("signatures") {
        Some(CanonicalJsonValue::Object(s)) => match s.get(server.as_str()) {
            Some(CanonicalJsonValue::Object(mine)) => mine,
            _ => return Err("not signed by the server itself".into()),
        },
        _ => return Err("not signed".into()),
    };
    let signed = to_canonical_json_string_for_signing(object).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    for (key_id, v) in verify {
        let key = match v {
            CanonicalJsonValue::Object(o) => o.get("key").and_then(as_str),
            _ => None,
        }
        .ok_or_else(|| format!("{key_id} has no key"))?;
        if !key_id.starts_with("ed25519:") {
            continue;
        }
        let public = Base64::<ruma::serde::base64::Standard>::parse(key)
            .map_err(|e| format!("{key_id}: {e}"))?;
        let signature = signatures
            .get(key_id)
            .and_then(as_str)
            .and_then(|s| Base64::<ruma::serde::base64::Standard>::parse(s).ok())
            .ok_or_else(|| format!("not signed with {key_id}"))?;
        verify_canonical_json_bytes(
            &SigningKeyAlgorithm::Ed25519,
            public.as_bytes(),
            signature.as_bytes(),
            signed.as_bytes(),
        )
        .map_err(|e| format!("the signature of {key_id} does not verify: {e}"))?;
        keys.push((key_id.clone(), (key.to_owned(), until)));
    }
    if keys.is_empty() {
        return Err("no ed25519 key".into());
    }
    // Old keys stay usable for what they signed before they expired.
    if let Some(CanonicalJsonValue::Object(old)) = object.get("old_verify_keys") {
        for (key_id, v) in old {
            if let CanonicalJsonValue::Object(o) = v
                && let (Some(key), Some(CanonicalJsonValue::Integer(expired))) =
                    (o.get("key").and_then(as_str), o.get("expired_ts"))
            {
                let expired = u64::try_from(i64::from(*expired)).unwrap_or(0);
                keys.push((key_id.clone(), (key.to_owned(), expired)));
            }
        }
    }
    Ok(keys)
}

fn as_str(v: &CanonicalJsonValue) -> Option<&str> {
    match v {
        CanonicalJsonValue::String(s) => Some(s),
        _ => None,
    }
}

/// JSON of a profile answer (fields left out when unset).
pub fn profile_json(p: &RemoteProfile, field: Option<&str>) -> JsonValue {
    let mut out = serde_json::Map::new();
    if field.is_none_or(|f| f == "displayname")
        && let Some(d) = &p.displayname
    {
        out.insert("displayname".into(), d.clone().into());
    }
    if field.is_none_or(|f| f == "avatar_url")
        && let Some(a) = &p.avatar_url
    {
        out.insert("avatar_url".into(), a.clone().into());
    }
    JsonValue::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::signatures::Ed25519KeyPair;

    fn signed_keys(server: &str, key: &Ed25519KeyPair) -> CanonicalJsonObject {
        let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.public_key());
        let mut o: CanonicalJsonObject = serde_json::from_value(json!({
            "server_name": server,
            "verify_keys": { format!("ed25519:{}", key.version()): { "key": public } },
            "old_verify_keys": {},
            "valid_until_ts": 1_900_000_000_000u64,
        }))
        .unwrap();
        ruma::signatures::sign_json(server, key, &mut o).unwrap();
        o
    }

    fn key(version: &str) -> Ed25519KeyPair {
        let doc = Ed25519KeyPair::generate();
        Ed25519KeyPair::from_der(&doc, version.into()).unwrap()
    }

    #[test]
    fn keys_are_taken_only_when_the_server_signed_them() {
        let server = <&ServerName>::try_from("a.example").unwrap();
        let k = key("k1");
        let good = signed_keys("a.example", &k);
        let keys = checked_keys(server, &good).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].0, "ed25519:k1");
        assert_eq!(keys[0].1.1, 1_900_000_000_000);

        // Another server's name, a changed validity, a signature by another key: refused.
        let other = <&ServerName>::try_from("b.example").unwrap();
        assert!(checked_keys(other, &good).is_err());
        let mut changed = good.clone();
        changed.insert(
            "valid_until_ts".into(),
            CanonicalJsonValue::Integer(2_000_000_000_000i64.try_into().unwrap()),
        );
        assert!(checked_keys(server, &changed).is_err());
        let mut forged = signed_keys("a.example", &key("k1"));
        forged.insert("verify_keys".into(), good["verify_keys"].clone());
        assert!(checked_keys(server, &forged).is_err());
        let mut unsigned = good.clone();
        unsigned.remove("signatures");
        assert!(checked_keys(server, &unsigned).is_err());
    }
}

/// Whether a room's server ACL (`m.room.server_acl` content; None: the room has none) lets
/// `server` take part: its host (the port does not count) matches no `deny` glob and some
/// `allow` glob, and it is not an IP literal unless `allow_ip_literals`.
pub fn acl_allows(acl: Option<&JsonValue>, server: &ServerName) -> bool {
    let Some(acl) = acl else {
        return true;
    };
    let host = server.host().to_ascii_lowercase();
    let globs = |key: &str| -> Vec<String> {
        acl[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_ascii_lowercase))
            .collect()
    };
    if server.is_ip_literal() && acl["allow_ip_literals"] == false {
        return false;
    }
    if globs("deny").iter().any(|g| glob_matches(g, &host)) {
        return false;
    }
    globs("allow").iter().any(|g| glob_matches(g, &host))
}

/// `*` matches any run of characters, `?` one character.
fn glob_matches(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    // Greedy matching with backtracking to the last `*`.
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == t[ti]) {
            gi += 1;
            ti += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ti));
            gi += 1;
        } else if let Some((sg, st)) = star {
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod acl_tests {
    use super::*;

    #[test]
    fn server_acls_match_hosts_by_glob() {
        let name = |s: &str| <&ServerName>::try_from(s).unwrap().to_owned();
        let acl = json!({ "allow": ["*"], "deny": ["*.evil.example", "bad?.example"] });
        assert!(acl_allows(Some(&acl), &name("good.example")));
        assert!(acl_allows(Some(&acl), &name("good.example:8448")));
        assert!(!acl_allows(Some(&acl), &name("a.evil.example")));
        assert!(!acl_allows(Some(&acl), &name("A.EVIL.example")));
        assert!(!acl_allows(Some(&acl), &name("bad1.example")));
        assert!(acl_allows(Some(&acl), &name("bad12.example")));
        // IP literals only when allowed; nothing allowed without an `allow` match.
        assert!(acl_allows(Some(&acl), &name("1.2.3.4")));
        let no_ips = json!({ "allow": ["*"], "allow_ip_literals": false });
        assert!(!acl_allows(Some(&no_ips), &name("1.2.3.4")));
        assert!(!acl_allows(
            Some(&json!({ "allow": ["only.example"] })),
            &name("other.example")
        ));
        assert!(acl_allows(None, &name("anyone.example")));
        assert!(glob_matches("*a*b", "xxaybb"));
        assert!(!glob_matches("a*c", "abd"));
    }
}

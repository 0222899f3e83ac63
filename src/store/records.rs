//! The records the tables hold: small structs, stored as JSON. They carry data only; the
//! services give them meaning. Field names are the stored format: renaming one loses data.

use ruma::{
    CanonicalJsonObject, OwnedDeviceId, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedTransactionId,
    OwnedUserId, RoomVersionId, events::room::member::MembershipState,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

/// What a stream position changed: a room (its timeline, receipts), a user (account data,
/// an invite, to-device messages), or someone's keys.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StreamEntry {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub room: Option<OwnedRoomId>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<OwnedUserId>,
    /// A user whose device or cross-signing keys changed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub keys: Option<OwnedUserId>,
    /// A user whose presence changed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub presence: Option<OwnedUserId>,
}

/// The server's ed25519 signing key.
#[derive(Serialize, Deserialize)]
pub struct SigningKeyRecord {
    pub version: String,
    pub pkcs8: String,
}

/// Signing keys the server used before its current one (`tsunagu admin rotate-signing-key`),
/// published as `old_verify_keys` so that what they signed can still be checked.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OldSigningKeys {
    pub keys: Vec<OldSigningKey>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OldSigningKey {
    /// `ed25519:<version>`.
    pub key_id: String,
    /// The public key, unpadded base64.
    pub public: String,
    /// When it stopped being used, in ms.
    pub expired_ts: u64,
}

/// The transaction a local client sent an event with (for `unsigned.transaction_id`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TxnInfo {
    pub device_id: OwnedDeviceId,
    pub txn_id: OwnedTransactionId,
}

/// An event as stored: the signed PDU exactly as it federates, plus local metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredEvent {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    /// Stream position at which the event was appended.
    pub pos: u64,
    /// The PDU (redacted in place once a redaction applies to it).
    #[serde(deserialize_with = "canonical::object")]
    pub pdu: CanonicalJsonObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<TxnInfo>,
    /// For state events: the state event this one replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces_state: Option<OwnedEventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_because: Option<OwnedEventId>,
}

/// Reads canonical JSON straight into ruma's canonical values. (ruma's own `Deserialize` goes
/// through a `serde_json::Value` first and converts it: reading every event twice.) The PDUs
/// were written from canonical values, so a float or an integer outside the canonical range
/// is refused as corrupt data, as ruma's conversion refuses it.
mod canonical {
    use std::fmt;

    use ruma::{CanonicalJsonObject, CanonicalJsonValue, Int};
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

    pub fn object<'de, D: Deserializer<'de>>(d: D) -> Result<CanonicalJsonObject, D::Error> {
        match d.deserialize_any(Canonical)? {
            CanonicalJsonValue::Object(o) => Ok(o),
            _ => Err(de::Error::custom("a PDU is a JSON object")),
        }
    }

    struct Canonical;

    struct Value(CanonicalJsonValue);

    impl<'de> de::Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Canonical).map(Value)
        }
    }

    fn int<E: de::Error>(n: Result<Int, impl fmt::Display>) -> Result<CanonicalJsonValue, E> {
        n.map(CanonicalJsonValue::Integer).map_err(E::custom)
    }

    impl<'de> Visitor<'de> for Canonical {
        type Value = CanonicalJsonValue;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("canonical JSON")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(CanonicalJsonValue::Null)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(CanonicalJsonValue::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            int(Int::try_from(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            int(Int::try_from(v))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom("canonical JSON has no floats"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(CanonicalJsonValue::String(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(CanonicalJsonValue::String(v))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(Value(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(CanonicalJsonValue::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = CanonicalJsonObject::new();
            while let Some((k, Value(v))) = map.next_entry::<String, Value>()? {
                out.insert(k, v);
            }
            Ok(CanonicalJsonValue::Object(out))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_what_ruma_reads() {
            let text = r#"{"a":[1,-2,"x",null,true,{"b":{}}],"c":9007199254740991}"#;
            let mine = object(&mut serde_json::Deserializer::from_str(text)).unwrap();
            let ruma: CanonicalJsonObject = serde_json::from_str(text).unwrap();
            assert_eq!(mine, ruma);
            for bad in [r#"{"a":1.5}"#, r#"{"a":9007199254740992}"#, "[1]"] {
                assert!(
                    object(&mut serde_json::Deserializer::from_str(bad)).is_err(),
                    "{bad}"
                );
            }
        }
    }
}

/// The per-room record: version and the DAG's forward edge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoomRecord {
    pub version: RoomVersionId,
    pub create_event_id: OwnedEventId,
    /// Forward extremities: the `prev_events` of the next local event.
    pub extremities: Vec<OwnedEventId>,
    pub depth: u64,
}

/// A user's membership in a room, indexed by user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembershipRecord {
    pub membership: MembershipState,
    pub event_id: OwnedEventId,
    /// Where the membership event is.
    pub pos: u64,
    /// Where the membership became what it is (a profile change keeps a join a join).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

impl MembershipRecord {
    /// The position the user's membership last changed at.
    pub fn changed_at(&self) -> u64 {
        self.since.unwrap_or(self.pos)
    }
}

/// A local account.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Account {
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub avatar_url: Option<OwnedMxcUri>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub deactivated: bool,
    #[serde(default)]
    pub appservice_id: Option<String>,
}

/// A device of a local account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Device {
    pub display_name: Option<String>,
    pub access_token: String,
    pub last_seen_ts: Option<u64>,
    pub last_seen_ip: Option<String>,
}

/// Who an access token belongs to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenOwner {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

/// A registration token and how often it was used.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegistrationToken {
    pub uses_allowed: Option<u32>,
    pub completed: u32,
}

/// One account data event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountDataRecord {
    pub content: JsonValue,
    pub pos: u64,
}

/// A read receipt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Receipt {
    pub event_id: OwnedEventId,
    pub ts: u64,
    pub pos: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
}

/// A local room alias.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: OwnedRoomId,
    pub creator: OwnedUserId,
}

/// A fallback key and whether a claim has used it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FallbackKey {
    pub key_id: String,
    pub key: JsonValue,
    pub used: bool,
}

/// One queued to-device message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToDeviceRecord {
    pub sender: OwnedUserId,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: JsonValue,
}

/// A key backup version: its algorithm and auth data, and a counter that changes with the keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupVersion {
    /// `{ "algorithm": ..., "auth_data": ... }` as the client sent it.
    pub algorithm: JsonValue,
    pub etag: u64,
}

/// Delivery state of one appservice.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Every interesting event up to here has been delivered.
    pub delivered: u64,
    /// The next transaction ID.
    pub next_txn: u64,
    /// A transaction built but not yet acknowledged: resent as is after a restart.
    pub in_flight: Option<InFlight>,
}

/// An appservice transaction waiting for its acknowledgement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InFlight {
    pub txn_id: String,
    pub upto: u64,
    pub body: JsonValue,
}

/// What relates to one event: its thread, the events referencing it, its latest edit.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Aggregation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<ThreadSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<OwnedEventId>,
    /// The newest valid replacement (`m.replace`) and its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_edit: Option<(OwnedEventId, u64)>,
}

/// A thread, from its root.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThreadSummary {
    pub count: u64,
    pub latest: OwnedEventId,
    pub latest_pos: u64,
    /// Who wrote in the thread (the root's sender included).
    pub participants: Vec<OwnedUserId>,
}

/// A user's presence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub presence: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
    pub last_active_ts: u64,
    /// Set by a syncing client rather than by hand.
    #[serde(default)]
    pub from_sync: bool,
}

/// How an event notifies a user.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PushFlags {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub highlight: bool,
    /// The thread the event is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<OwnedEventId>,
}

/// A user's unread counts in a room: the notifying events after `from`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct UnreadSummary {
    pub from: u64,
    pub notify: u64,
    pub highlight: u64,
}

/// A dehydrated device (MSC3814): a device with no client behind it that receives room keys
/// while the user has no device online; a new client of the user rehydrates it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DehydratedDevice {
    pub device_id: OwnedDeviceId,
    /// The client's encrypted device pickle, opaque to the server.
    pub device_data: JsonValue,
}

/// A pusher: where to send a user's notifications.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PusherRecord {
    /// The pusher as the client set it (`kind`, `app_id`, `pushkey`, `data`, ...).
    pub pusher: JsonValue,
    pub created_ts: u64,
}

/// A notification the push rules produced for a user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub actions: JsonValue,
    pub ts: u64,
}

/// A notification waiting to be sent to a push gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueuedPush {
    pub user: OwnedUserId,
    pub app_id: String,
    pub pushkey: String,
    /// The gateway's `/_matrix/push/v1/notify` body.
    pub body: JsonValue,
    pub url: String,
    pub attempts: u32,
    /// Not to be sent before this time (ms since the epoch): the gateway failed.
    #[serde(default)]
    pub not_before_ms: u64,
}

/// An OpenID token a user asked for (widgets and integrations check it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenIdToken {
    pub user: OwnedUserId,
    pub expires_ts: u64,
}

/// A report of an event or a room, kept for the server's admins.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportRecord {
    pub reporter: OwnedUserId,
    pub room_id: OwnedRoomId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<OwnedEventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub ts: u64,
}

/// A local media item. Its bytes are the file named by `sha256` under `{data_dir}/media/`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaRecord {
    /// Who uploaded it; none for media the server made (URL preview images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader: Option<OwnedUserId>,
    /// When the ID was made (ms since the epoch).
    pub created_ms: u64,
    /// The content's SHA-256 (lowercase hex), which names its file; none while an async
    /// upload's content has not arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Bytes of content.
    pub size: u64,
    /// The uploader's `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The uploader's `filename`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// For an ID made by `/media/v1/create`: when it expires unless its content arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// Another server's signing keys, checked: its newest answer to `/_matrix/key/v2/server`
/// (signed by itself, relayed as is to those who ask this server as a notary), and every key
/// it ever published with how long it was valid.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerKeysRecord {
    pub response: JsonValue,
    /// Key ID -> (unpadded base64 public key, valid until this time in ms).
    pub keys: std::collections::BTreeMap<String, (String, u64)>,
}

//! Every table: its prefix byte, the parts of its key and the record it holds. This file is
//! the one place that knows a key layout; services name keys with typed parts.

use std::marker::PhantomData;

use ruma::{
    OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedServerName, OwnedUserId,
    RoomId,
};
use serde_json::Value as JsonValue;

use super::{
    key::{Layout, Part},
    records::*,
};

/// The tables' prefix bytes. Never renumber one: it is the stored format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TableId {
    Global = 1,
    Users = 2,
    Devices = 3,
    AccessTokens = 4,
    RegistrationTokens = 5,
    Events = 6,
    Timeline = 7,
    Stream = 8,
    RoomState = 9,
    Rooms = 10,
    Memberships = 11,
    Transactions = 12,
    Aliases = 13,
    AccountData = 14,
    Receipts = 15,
    Filters = 16,
    PublicRooms = 17,
    DeviceKeys = 18,
    OneTimeKeys = 19,
    FallbackKeys = 20,
    CrossSigningKeys = 21,
    ToDevice = 22,
    BackupVersions = 23,
    BackupKeys = 24,
    StateHistory = 25,
    Relations = 26,
    Aggregations = 27,
    ThreadActivity = 28,
    Search = 29,
    Presence = 30,
    Pushers = 31,
    Notifications = 32,
    PushQueue = 33,
    OpenIdTokens = 34,
    Reports = 35,
    ThreadReceipts = 36,
    Media = 37,
    UserMedia = 38,
    DehydratedDevices = 39,
    PushActions = 40,
    UnreadCounts = 41,
    ServerKeys = 42,
    FederationQueue = 43,
    FederationTransactions = 44,
    FederationPdus = 45,
}

/// A typed table: keys of layout `K` (a tuple of parts) to records `V`.
pub struct Table<K, V> {
    pub(super) id: TableId,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Layout, V: Value> Table<K, V> {
    pub const fn new(id: TableId) -> Self {
        Self {
            id,
            _types: PhantomData,
        }
    }

    /// The full key of an entry: the table byte, then the parts.
    pub(super) fn key(&self, k: K::Ref<'_>) -> Vec<u8> {
        let mut out = vec![self.id as u8];
        K::encode(k, &mut out);
        out
    }
}

/// The bytes every key of a scan starts with: the table byte and the first parts of the key.
pub struct Prefix<'t, K, V> {
    pub(super) table: &'t Table<K, V>,
    pub(super) bytes: Vec<u8>,
}

impl<K, V> Prefix<'_, K, V> {
    fn start<'t>(table: &'t Table<K, V>, put: impl FnOnce(&mut Vec<u8>)) -> Prefix<'t, K, V> {
        let mut bytes = vec![table.id as u8];
        put(&mut bytes);
        bytes.push(super::key::SEP);
        Prefix { table, bytes }
    }
}

impl<K: Layout, V: Value> Table<K, V> {
    /// Every entry of the table.
    pub fn all(&self) -> Prefix<'_, K, V> {
        Prefix {
            table: self,
            bytes: vec![self.id as u8],
        }
    }
}

impl<A: Part, B: Part, V> Table<(A, B), V> {
    /// Entries whose key starts with `a`.
    pub fn prefix(&self, a: A::Ref<'_>) -> Prefix<'_, (A, B), V> {
        Prefix::start(self, |out| A::put(a, out))
    }
}

impl<A: Part, B: Part, C: Part, V> Table<(A, B, C), V> {
    /// Entries whose key starts with `a`.
    pub fn prefix(&self, a: A::Ref<'_>) -> Prefix<'_, (A, B, C), V> {
        Prefix::start(self, |out| A::put(a, out))
    }
    /// Entries whose key starts with `a`, `b`.
    pub fn prefix2(&self, a: A::Ref<'_>, b: B::Ref<'_>) -> Prefix<'_, (A, B, C), V> {
        Prefix::start(self, |out| {
            A::put(a, out);
            out.push(super::key::SEP);
            B::put(b, out);
        })
    }
}

impl<A: Part, C: Part, V> Table<(A, String, C), V> {
    /// Entries whose key starts with `a` and a second part that starts with `text` (a word
    /// and every longer word it begins).
    pub fn prefix_text(&self, a: A::Ref<'_>, text: &str) -> Prefix<'_, (A, String, C), V> {
        let mut bytes = vec![self.id as u8];
        A::put(a, &mut bytes);
        bytes.push(super::key::SEP);
        bytes.extend_from_slice(text.as_bytes());
        Prefix { table: self, bytes }
    }
}

impl<A: Part, B: Part, C: Part, D: Part, V> Table<(A, B, C, D), V> {
    /// Entries whose key starts with `a`.
    pub fn prefix(&self, a: A::Ref<'_>) -> Prefix<'_, (A, B, C, D), V> {
        Prefix::start(self, |out| A::put(a, out))
    }
    /// Entries whose key starts with `a`, `b`.
    pub fn prefix2(&self, a: A::Ref<'_>, b: B::Ref<'_>) -> Prefix<'_, (A, B, C, D), V> {
        Prefix::start(self, |out| {
            A::put(a, out);
            out.push(super::key::SEP);
            B::put(b, out);
        })
    }
    /// Entries whose key starts with `a`, `b`, `c`.
    pub fn prefix3(
        &self,
        a: A::Ref<'_>,
        b: B::Ref<'_>,
        c: C::Ref<'_>,
    ) -> Prefix<'_, (A, B, C, D), V> {
        Prefix::start(self, |out| {
            A::put(a, out);
            out.push(super::key::SEP);
            B::put(b, out);
            out.push(super::key::SEP);
            C::put(c, out);
        })
    }
}

/// How a record is stored.
pub trait Value: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

/// Event IDs are stored as their UTF-8 bytes.
impl Value for OwnedEventId {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let s = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        OwnedEventId::try_from(s).map_err(|e| e.to_string())
    }
}

/// Presence of the key is the record.
impl Value for () {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(_: &[u8]) -> Result<Self, String> {
        Ok(())
    }
}

/// Big-endian, 8 bytes.
impl Value for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let b: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or("not 8 bytes")?;
        Ok(u64::from_be_bytes(b))
    }
}

macro_rules! json_values {
    ($($ty:ty),+ $(,)?) => {$(
        impl Value for $ty {
            fn encode(&self) -> Vec<u8> {
                // Our own records and JSON values always serialize.
                serde_json::to_vec(self).expect("records serialize")
            }
            fn decode(bytes: &[u8]) -> Result<Self, String> {
                serde_json::from_slice(bytes).map_err(|e| e.to_string())
            }
        }
    )+};
}

json_values!(
    JsonValue,
    StreamEntry,
    SigningKeyRecord,
    OldSigningKeys,
    StoredEvent,
    RoomRecord,
    MembershipRecord,
    Account,
    Device,
    TokenOwner,
    RegistrationToken,
    AccountDataRecord,
    Receipt,
    AliasRecord,
    FallbackKey,
    ToDeviceRecord,
    BackupVersion,
    DeliveryState,
    Aggregation,
    PresenceRecord,
    PusherRecord,
    NotificationRecord,
    QueuedPush,
    OpenIdToken,
    ReportRecord,
    MediaRecord,
    DehydratedDevice,
    PushFlags,
    UnreadSummary,
    ServerKeysRecord,
);

/// One named entry of the Global table.
pub struct Single<V> {
    pub(super) table: Table<(String,), V>,
    pub(super) name: &'static str,
}

impl<V: Value> Single<V> {
    const fn new(name: &'static str) -> Self {
        Self {
            table: Table::new(TableId::Global),
            name,
        }
    }
}

/// The key part of an appservice's delivery state: `appservice:{id}`.
pub struct AppserviceKey(pub String);

impl Part for AppserviceKey {
    type Ref<'a> = &'a str;
    fn put(r: Self::Ref<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"appservice:");
        out.extend_from_slice(r.as_bytes());
    }
    fn take(bytes: &[u8], last: bool) -> Option<(Self, &[u8])> {
        let (s, rest) = String::take(bytes, last)?;
        Some((
            AppserviceKey(s.strip_prefix("appservice:")?.to_owned()),
            rest,
        ))
    }
    fn as_key_ref(&self) -> Self::Ref<'_> {
        &self.0
    }
}

/// Where a transaction ID is unique: the spec scopes them per device and endpoint; a send or
/// redaction also per room.
#[derive(Clone, Copy, Debug)]
pub enum TxnScope<'a> {
    Send(&'a RoomId),
    Redact(&'a RoomId),
    ToDevice,
}

/// The transaction-ID part of a [`TRANSACTIONS`] key: the scope, then the client's ID.
pub fn scoped_txn(scope: TxnScope<'_>, txn: &str) -> String {
    match scope {
        TxnScope::Send(room) => format!("send {room} {txn}"),
        TxnScope::Redact(room) => format!("redact {room} {txn}"),
        TxnScope::ToDevice => format!("to_device {txn}"),
    }
}

// ---- the tables ---------------------------------------------------------------------------

/// `"stream_pos"` -> the newest durable stream position.
pub const STREAM_POS: Single<u64> = Single::new("stream_pos");
/// `"schema_version"` -> the newest data migration that ran (see `Services::open`).
pub const SCHEMA_VERSION: Single<u64> = Single::new("schema_version");
/// `"signing_key"` -> the server's ed25519 key.
pub const SIGNING_KEY: Single<SigningKeyRecord> = Single::new("signing_key");
/// `"old_signing_keys"` -> the keys the server signed with before its current one.
pub const OLD_SIGNING_KEYS: Single<OldSigningKeys> = Single::new("old_signing_keys");
/// `"notifier_pos"` -> the stream position up to which push rules have run.
pub const NOTIFIER_POS: Single<u64> = Single::new("notifier_pos");
/// `"appservice:" id` -> delivery state of an appservice.
pub const APPSERVICE_DELIVERY: Table<(AppserviceKey,), DeliveryState> = Table::new(TableId::Global);

/// user -> account.
pub const USERS: Table<(OwnedUserId,), Account> = Table::new(TableId::Users);
/// user, device -> device.
pub const DEVICES: Table<(OwnedUserId, OwnedDeviceId), Device> = Table::new(TableId::Devices);
/// access token -> its user and device.
pub const ACCESS_TOKENS: Table<(String,), TokenOwner> = Table::new(TableId::AccessTokens);
/// registration token -> its uses.
pub const REGISTRATION_TOKENS: Table<(String,), RegistrationToken> =
    Table::new(TableId::RegistrationTokens);

/// event ID -> stored event (PDU and local metadata).
pub const EVENTS: Table<(OwnedEventId,), StoredEvent> = Table::new(TableId::Events);
/// room, stream position -> event ID: a room's timeline in stream order.
pub const TIMELINE: Table<(OwnedRoomId, u64), OwnedEventId> = Table::new(TableId::Timeline);
/// stream position -> what changed there.
pub const STREAM: Table<(u64,), StreamEntry> = Table::new(TableId::Stream);
/// room, event type, state key -> event ID: a room's current state.
pub const ROOM_STATE: Table<(OwnedRoomId, String, String), OwnedEventId> =
    Table::new(TableId::RoomState);
/// room, event type, state key, stream position -> event ID: every value a state key had,
/// so that the state at any point is a seek, not a walk through the timeline.
pub const STATE_HISTORY: Table<(OwnedRoomId, String, String, u64), OwnedEventId> =
    Table::new(TableId::StateHistory);
/// parent event, relation type, stream position -> the relating event: what relates to an
/// event (threads, edits, references, annotations), in stream order per type.
pub const RELATIONS: Table<(OwnedEventId, String, u64), OwnedEventId> =
    Table::new(TableId::Relations);
/// event -> what relates to it, summed up (the bundled aggregations clients show).
pub const AGGREGATIONS: Table<(OwnedEventId,), Aggregation> = Table::new(TableId::Aggregations);
/// room, position of a thread's latest reply -> the thread's root: threads, newest first.
pub const THREAD_ACTIVITY: Table<(OwnedRoomId, u64), OwnedEventId> =
    Table::new(TableId::ThreadActivity);
/// room, word, stream position -> event: the full-text index (unencrypted rooms only).
pub const SEARCH: Table<(OwnedRoomId, String, u64), OwnedEventId> = Table::new(TableId::Search);
/// room -> room record (version, extremities, depth).
pub const ROOMS: Table<(OwnedRoomId,), RoomRecord> = Table::new(TableId::Rooms);
/// user, room -> the user's membership in the room.
pub const MEMBERSHIPS: Table<(OwnedUserId, OwnedRoomId), MembershipRecord> =
    Table::new(TableId::Memberships);
/// user, device, [`scoped_txn`] -> the event it sent (idempotent sends).
pub const TRANSACTIONS: Table<(OwnedUserId, OwnedDeviceId, String), OwnedEventId> =
    Table::new(TableId::Transactions);
/// user, device, [`scoped_txn`] -> () for to-device sends already queued.
pub const TO_DEVICE_TRANSACTIONS: Table<(OwnedUserId, OwnedDeviceId, String), ()> =
    Table::new(TableId::Transactions);
/// room alias -> the room and who made the alias.
pub const ALIASES: Table<(OwnedRoomAliasId,), AliasRecord> = Table::new(TableId::Aliases);
/// room -> () for rooms published in the directory.
pub const PUBLIC_ROOMS: Table<(OwnedRoomId,), ()> = Table::new(TableId::PublicRooms);

/// user, room (none for global), type -> account data.
pub const ACCOUNT_DATA: Table<(OwnedUserId, Option<OwnedRoomId>, String), AccountDataRecord> =
    Table::new(TableId::AccountData);
/// room, receipt type, user, thread root (empty: not threaded; `main`: the main timeline) ->
/// the user's receipt.
pub const RECEIPTS: Table<(OwnedRoomId, String, OwnedUserId, String), Receipt> =
    Table::new(TableId::ThreadReceipts);
/// room, receipt type, user -> receipt: where schema versions before 4 kept receipts, one per
/// user and type. Read only by the migration.
pub const LEGACY_RECEIPTS: Table<(OwnedRoomId, String, OwnedUserId), Receipt> =
    Table::new(TableId::Receipts);
/// user, filter ID -> filter definition.
pub const FILTERS: Table<(OwnedUserId, String), JsonValue> = Table::new(TableId::Filters);

/// user, app ID, pushkey -> pusher.
pub const PUSHERS: Table<(OwnedUserId, String, String), PusherRecord> =
    Table::new(TableId::Pushers);
/// user, stream position -> a notification the push rules produced.
pub const NOTIFICATIONS: Table<(OwnedUserId, u64), NotificationRecord> =
    Table::new(TableId::Notifications);
/// sequence -> a push waiting for its gateway, oldest first.
pub const PUSH_QUEUE: Table<(u64,), QueuedPush> = Table::new(TableId::PushQueue);
/// OpenID access token -> whose it is and until when.
pub const OPENID_TOKENS: Table<(String,), OpenIdToken> = Table::new(TableId::OpenIdTokens);
/// sequence -> a report of an event or a room.
pub const REPORTS: Table<(u64,), ReportRecord> = Table::new(TableId::Reports);

/// user -> presence.
pub const PRESENCE: Table<(OwnedUserId,), PresenceRecord> = Table::new(TableId::Presence);
/// user, device -> signed device keys.
pub const DEVICE_KEYS: Table<(OwnedUserId, OwnedDeviceId), JsonValue> =
    Table::new(TableId::DeviceKeys);
/// user, device, `algorithm:key_id` -> one-time key.
pub const ONE_TIME_KEYS: Table<(OwnedUserId, OwnedDeviceId, String), JsonValue> =
    Table::new(TableId::OneTimeKeys);
/// user, device, algorithm -> fallback key.
pub const FALLBACK_KEYS: Table<(OwnedUserId, OwnedDeviceId, String), FallbackKey> =
    Table::new(TableId::FallbackKeys);
/// user, `master` | `self_signing` | `user_signing` -> cross-signing key.
pub const CROSS_SIGNING_KEYS: Table<(OwnedUserId, String), JsonValue> =
    Table::new(TableId::CrossSigningKeys);
/// user, device, stream position, index -> queued to-device message.
pub const TO_DEVICE: Table<(OwnedUserId, OwnedDeviceId, u64, u32), ToDeviceRecord> =
    Table::new(TableId::ToDevice);
/// user, version -> key backup version.
pub const BACKUP_VERSIONS: Table<(OwnedUserId, u64), BackupVersion> =
    Table::new(TableId::BackupVersions);
/// user, version, room, session -> backed-up room key.
pub const BACKUP_KEYS: Table<(OwnedUserId, u64, OwnedRoomId, String), JsonValue> =
    Table::new(TableId::BackupKeys);

/// media ID -> a local media item: who uploaded it, its content address, type and name.
pub const MEDIA: Table<(String,), MediaRecord> = Table::new(TableId::Media);
/// uploader, media ID -> (): each user's media, for quotas and pending uploads.
pub const USER_MEDIA: Table<(OwnedUserId, String), ()> = Table::new(TableId::UserMedia);
/// user, room, stream position -> an event that notifies the user (written with the event,
/// removed once the user read past it): the source of unread counts.
pub const PUSH_ACTIONS: Table<(OwnedUserId, OwnedRoomId, u64), PushFlags> =
    Table::new(TableId::PushActions);
/// user, room -> the user's unread counts from a read position on.
pub const UNREAD_COUNTS: Table<(OwnedUserId, OwnedRoomId), UnreadSummary> =
    Table::new(TableId::UnreadCounts);
/// user -> their dehydrated device (MSC3814): its ID and the client's encrypted pickle.
pub const DEHYDRATED_DEVICES: Table<(OwnedUserId,), DehydratedDevice> =
    Table::new(TableId::DehydratedDevices);
/// server -> its signing keys as fetched and checked ([`ServerKeysRecord`]).
pub const SERVER_KEYS: Table<(OwnedServerName,), ServerKeysRecord> =
    Table::new(TableId::ServerKeys);
/// destination server, sequence -> an EDU waiting to go out to it, oldest first.
pub const FEDERATION_QUEUE: Table<(OwnedServerName, u64), JsonValue> =
    Table::new(TableId::FederationQueue);
/// destination server, stream position -> an event of this server waiting to go out to it
/// (oldest first; written in the batch that persists the event).
pub const FEDERATION_PDUS: Table<(OwnedServerName, u64), OwnedEventId> =
    Table::new(TableId::FederationPdus);
/// origin server, transaction ID -> when it was received (ms), for the newest transactions
/// received from each server (`federation::KEPT_TRANSACTIONS` of them).
pub const FEDERATION_TRANSACTIONS: Table<(OwnedServerName, String), u64> =
    Table::new(TableId::FederationTransactions);

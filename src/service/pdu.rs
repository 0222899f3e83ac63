//! The event model: signed PDUs as stored, their view for state resolution, and the client
//! format derived from them.

use ruma::{
    CanonicalJsonObject, DeviceId, MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedEventId,
    OwnedRoomId, OwnedTransactionId, OwnedUserId, RoomId, UInt, UserId,
    events::{StateEventType, TimelineEventType},
    serde::Raw,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, value::RawValue as RawJsonValue};

use super::{Services, now_ms};
use crate::{
    error::{Error, Result},
    store::Table,
};

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
    pub pdu: CanonicalJsonObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<TxnInfo>,
    /// For state events: the state event this one replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces_state: Option<OwnedEventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_because: Option<OwnedEventId>,
}

/// The fields of a PDU that the authorization rules and the server read.
#[derive(Clone, Debug, Deserialize)]
pub struct Pdu {
    #[serde(skip)]
    pub event_id: Option<OwnedEventId>,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    pub state_key: Option<String>,
    #[serde(default)]
    pub prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    #[serde(default)]
    pub depth: UInt,
}

impl Pdu {
    /// Reads a PDU object. `event_id` is the reference-hash ID computed (or stored) for it.
    pub fn from_object(event_id: OwnedEventId, obj: &CanonicalJsonObject) -> Result<Self> {
        let json = serde_json::to_string(obj)?;
        let mut pdu: Pdu = serde_json::from_str(&json).map_err(super::json_err)?;
        if pdu.redacts.is_none() {
            #[derive(Deserialize)]
            struct Redacts {
                redacts: Option<OwnedEventId>,
            }
            if let Ok(r) = serde_json::from_str::<Redacts>(pdu.content.get()) {
                pdu.redacts = r.redacts;
            }
        }
        pdu.event_id = Some(event_id);
        Ok(pdu)
    }

    fn id(&self) -> &OwnedEventId {
        self.event_id.as_ref().expect("set by from_object")
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;
    fn event_id(&self) -> &Self::Id {
        self.id()
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawJsonValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}

impl StoredEvent {
    pub fn pdu(&self) -> Result<Pdu> {
        Pdu::from_object(self.event_id.clone(), &self.pdu)
    }

    fn field(&self, name: &str) -> Option<JsonValue> {
        self.pdu.get(name).map(|v| v.clone().into())
    }

    pub fn kind(&self) -> String {
        self.pdu
            .get("type")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn state_key(&self) -> Option<&str> {
        self.pdu.get("state_key").and_then(|v| v.as_str())
    }

    pub fn sender(&self) -> Option<OwnedUserId> {
        self.pdu
            .get("sender")
            .and_then(|v| v.as_str())
            .and_then(|s| s.try_into().ok())
    }

    pub fn content(&self) -> JsonValue {
        self.field("content")
            .unwrap_or_else(|| JsonValue::Object(Default::default()))
    }

    pub fn origin_server_ts(&self) -> u64 {
        self.field("origin_server_ts")
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    }

    pub fn is_state(&self) -> bool {
        self.pdu.contains_key("state_key")
    }

    /// `(type, state_key)` of a state event.
    pub fn state_pair(&self) -> Option<(StateEventType, String)> {
        Some((self.kind().into(), self.state_key()?.to_owned()))
    }
}

/// What a client sees of an event.
pub struct ClientView<'a> {
    /// The device asking, to show `transaction_id` on its own events.
    pub device: Option<(&'a UserId, &'a DeviceId)>,
    /// Include `room_id` (the `/sync` timeline omits it).
    pub with_room_id: bool,
}

impl Services {
    pub fn event(&self, event_id: &ruma::EventId) -> Result<Option<StoredEvent>> {
        Ok(self.store.get_json(Table::Events, event_id.as_bytes())?)
    }

    pub fn pdu(&self, event_id: &ruma::EventId) -> Option<Pdu> {
        self.event(event_id)
            .ok()
            .flatten()
            .and_then(|e| e.pdu().ok())
    }

    /// The client format of a stored event (client-server API "ClientEvent").
    pub fn client_event(&self, ev: &StoredEvent, view: &ClientView<'_>) -> JsonValue {
        let mut out = serde_json::Map::new();
        for field in [
            "type",
            "content",
            "sender",
            "origin_server_ts",
            "state_key",
            "redacts",
        ] {
            if let Some(v) = ev.field(field) {
                out.insert(field.into(), v);
            }
        }
        if !out.contains_key("redacts")
            && let Some(r) = ev.content().get("redacts")
        {
            out.insert("redacts".into(), r.clone());
        }
        out.insert("event_id".into(), ev.event_id.as_str().into());
        if view.with_room_id {
            out.insert("room_id".into(), ev.room_id.as_str().into());
        }
        let mut unsigned = serde_json::Map::new();
        unsigned.insert(
            "age".into(),
            now_ms().saturating_sub(ev.origin_server_ts()).into(),
        );
        if let (Some((user, device)), Some(txn)) = (view.device, &ev.txn)
            && ev.sender().as_deref() == Some(user)
            && txn.device_id == device
        {
            unsigned.insert("transaction_id".into(), txn.txn_id.as_str().into());
        }
        if let Some(prev) = &ev.replaces_state {
            unsigned.insert("replaces_state".into(), prev.as_str().into());
            if let Ok(Some(prev_ev)) = self.event(prev) {
                unsigned.insert("prev_content".into(), prev_ev.content());
                if let Some(sender) = prev_ev.sender() {
                    unsigned.insert("prev_sender".into(), sender.as_str().into());
                }
            }
        }
        if let Some(because) = &ev.redacted_because
            && let Ok(Some(redaction)) = self.event(because)
        {
            let view = ClientView {
                device: None,
                with_room_id: true,
            };
            unsigned.insert(
                "redacted_because".into(),
                self.client_event(&redaction, &view),
            );
        }
        out.insert("unsigned".into(), unsigned.into());
        JsonValue::Object(out)
    }

    pub fn client_raw<T>(&self, ev: &StoredEvent, view: &ClientView<'_>) -> Raw<T> {
        to_raw(&self.client_event(ev, view))
    }

    /// The stripped form used in invite state and the directory.
    pub fn stripped_raw<T>(&self, ev: &StoredEvent) -> Raw<T> {
        let mut out = serde_json::Map::new();
        for field in ["type", "content", "sender", "state_key"] {
            if let Some(v) = ev.field(field) {
                out.insert(field.into(), v);
            }
        }
        to_raw(&JsonValue::Object(out))
    }

    /// Loads an event the user may see or fails with M_NOT_FOUND.
    pub fn visible_event(&self, user: &UserId, event_id: &ruma::EventId) -> Result<StoredEvent> {
        let ev = self
            .event(event_id)?
            .ok_or_else(|| Error::not_found("Event not found"))?;
        if !self.can_see_event(user, &ev)? {
            return Err(Error::not_found("Event not found"));
        }
        Ok(ev)
    }
}

/// Serializes a JSON value into a typed raw JSON value.
pub fn to_raw<T>(value: &JsonValue) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(value).expect("JSON values serialize"))
}

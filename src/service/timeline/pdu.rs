//! The event model: signed PDUs as stored, their view for the authorization rules, and the
//! client format derived from them.

use ruma::{
    CanonicalJsonObject, DeviceId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UInt, UserId,
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
    serde::Raw,
};
use serde::Deserialize;
use serde_json::{Value as JsonValue, value::RawValue as RawJsonValue};

use super::Timeline;
use crate::{
    error::{Error, Result},
    json::to_raw,
    service::core::now_ms,
    store::StoredEvent,
};

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
    #[serde(default, deserialize_with = "event_refs")]
    pub prev_events: Vec<OwnedEventId>,
    #[serde(default, deserialize_with = "event_refs")]
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    #[serde(default)]
    pub depth: UInt,
}

/// `prev_events` and `auth_events`: event IDs (room version 3 on), or `[id, hashes]` pairs
/// (versions 1 and 2).
fn event_refs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<OwnedEventId>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ref {
        Id(OwnedEventId),
        WithHashes(OwnedEventId, serde::de::IgnoredAny),
    }
    Ok(Vec::<Ref>::deserialize(d)?
        .into_iter()
        .map(|r| match r {
            Ref::Id(id) | Ref::WithHashes(id, _) => id,
        })
        .collect())
}

impl Pdu {
    /// Reads a PDU object. `event_id` is the reference-hash ID computed (or stored) for it.
    pub fn from_object(event_id: OwnedEventId, obj: &CanonicalJsonObject) -> Result<Self> {
        let json = serde_json::to_string(obj)?;
        let mut pdu: Pdu =
            serde_json::from_str(&json).map_err(|e| Error::bad_json(e.to_string()))?;
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

    /// The event's depth in the room's DAG.
    pub fn depth(&self) -> u64 {
        self.field("depth").and_then(|v| v.as_u64()).unwrap_or(0)
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

    /// The user a membership event is about and their new membership.
    pub fn member_change(&self) -> Option<(OwnedUserId, MembershipState)> {
        if self.kind() != "m.room.member" {
            return None;
        }
        let user = UserId::parse(self.state_key()?).ok()?;
        Some((user, membership_of(&self.content())))
    }

    /// One string field of the content.
    pub fn content_str(&self, field: &str) -> Option<String> {
        let content = self.pdu.get("content")?;
        match content {
            ruma::CanonicalJsonValue::Object(o) => o.get(field)?.as_str().map(str::to_owned),
            _ => None,
        }
    }
}

/// The `membership` of a member event's content (`leave` when missing or unknown).
pub fn membership_of(content: &JsonValue) -> MembershipState {
    content
        .get("membership")
        .and_then(|m| m.as_str())
        .map(MembershipState::from)
        .unwrap_or(MembershipState::Leave)
}

/// What a client sees of an event.
#[derive(Clone, Copy)]
pub struct ClientView<'a> {
    /// The device asking, to show `transaction_id` on its own events.
    pub device: Option<(&'a UserId, &'a DeviceId)>,
    /// Include `room_id` (the `/sync` timeline omits it).
    pub with_room_id: bool,
}

impl ClientView<'_> {
    /// Events with their room ID, for no device in particular.
    pub const ANYONE: ClientView<'static> = ClientView {
        device: None,
        with_room_id: true,
    };
}

impl Timeline {
    /// The client format of a stored event (client-server API "ClientEvent"). `membership` is
    /// the requesting user's membership at the event (`unsigned.membership`), when known.
    pub fn client_event(
        &self,
        ev: &StoredEvent,
        view: &ClientView<'_>,
        membership: Option<&MembershipState>,
    ) -> JsonValue {
        self.client_event_with(ev, view, membership, true)
    }

    /// [`Timeline::client_event`], with or without the event's bundled aggregations
    /// (`unsigned.m.relations`: its thread, references and latest edit).
    pub(super) fn client_event_with(
        &self,
        ev: &StoredEvent,
        view: &ClientView<'_>,
        membership: Option<&MembershipState>,
        bundle: bool,
    ) -> JsonValue {
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
        if let Some(m) = membership {
            unsigned.insert("membership".into(), m.as_str().into());
        }
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
            unsigned.insert(
                "redacted_because".into(),
                self.client_event_with(&redaction, &ClientView::ANYONE, None, false),
            );
        }
        if bundle
            && ev.redacted_because.is_none()
            && let Some(relations) = self.bundled(ev, view.device.map(|(u, _)| u))
        {
            unsigned.insert("m.relations".into(), relations);
        }
        out.insert("unsigned".into(), unsigned.into());
        JsonValue::Object(out)
    }

    /// [`Timeline::client_raw`] without bundled aggregations: for the state sections of a
    /// sync, whose events clients do not show as messages (Synapse bundles aggregations into
    /// timeline events only, too).
    pub fn client_raw_unbundled<T>(
        &self,
        ev: &StoredEvent,
        view: &ClientView<'_>,
        membership: Option<&MembershipState>,
    ) -> Raw<T> {
        to_raw(&self.client_event_with(ev, view, membership, false))
    }

    /// [`Timeline::client_event`] as a typed raw value.
    pub fn client_raw<T>(
        &self,
        ev: &StoredEvent,
        view: &ClientView<'_>,
        membership: Option<&MembershipState>,
    ) -> Raw<T> {
        to_raw(&self.client_event(ev, view, membership))
    }
}

impl StoredEvent {
    /// The stripped form used in invite state and the directory.
    pub fn stripped<T>(&self) -> Raw<T> {
        let mut out = serde_json::Map::new();
        for field in ["type", "content", "sender", "state_key"] {
            if let Some(v) = self.field(field) {
                out.insert(field.into(), v);
            }
        }
        to_raw(&JsonValue::Object(out))
    }
}

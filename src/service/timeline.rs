//! The one path that appends events to rooms.
//!
//! Local sends, joins, state changes, room creation (and later federation and appservices) all
//! end in [`Services::append`]: build the PDU, select auth events, hash, sign, derive the event
//! ID, authorize with ruma's state-res rules against the current state, then persist the event,
//! its timeline entry, state and membership changes in one atomic batch at a new stream position.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, RoomId,
    RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

use super::{
    Services, StreamEntry, now_ms,
    pdu::{Pdu, StoredEvent, TxnInfo},
};
use crate::{
    error::{Error, Result},
    store::{Table, key, pos_bytes},
};

/// An event a local user wants to add to a room.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub kind: TimelineEventType,
    pub content: JsonValue,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
    /// `origin_server_ts` chosen by an appservice (timestamp massaging); else now.
    pub timestamp: Option<u64>,
}

impl NewEvent {
    pub fn state(
        kind: impl Into<TimelineEventType>,
        state_key: impl Into<String>,
        content: JsonValue,
    ) -> Self {
        Self {
            kind: kind.into(),
            content,
            state_key: Some(state_key.into()),
            redacts: None,
            timestamp: None,
        }
    }
    pub fn message(kind: impl Into<TimelineEventType>, content: JsonValue) -> Self {
        Self {
            kind: kind.into(),
            content,
            state_key: None,
            redacts: None,
            timestamp: None,
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
    pub membership: String,
    pub event_id: OwnedEventId,
    pub pos: u64,
}

pub fn rules_for(version: &RoomVersionId) -> Result<RoomVersionRules> {
    version
        .rules()
        .ok_or_else(|| Error::internal(format!("room version {version} has no rules")))
}

impl Services {
    pub fn room_record(&self, room_id: &RoomId) -> Result<Option<RoomRecord>> {
        Ok(self.store.get_json(Table::Rooms, room_id.as_bytes())?)
    }

    /// Creates a room: appends its `m.room.create` event and returns the new room's ID.
    /// In room version 12 the ID is derived from the create event's ID.
    pub async fn append_create(
        &self,
        sender: &UserId,
        version: &RoomVersionId,
        content: JsonValue,
    ) -> Result<OwnedRoomId> {
        let rules = rules_for(version)?;
        let room_id = if rules.authorization.room_create_event_id_as_room_id {
            None
        } else {
            let id = format!("!{}:{}", super::random_token(12), self.server_name());
            Some(OwnedRoomId::try_from(id).map_err(Error::internal)?)
        };
        let ev = NewEvent::state(TimelineEventType::RoomCreate, "", content);
        let (_, room_id) = self
            .append_inner(room_id.as_deref(), Some(version), sender, ev, None)
            .await?;
        Ok(room_id)
    }

    /// Appends an event by a local user to an existing room.
    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        ev: NewEvent,
        txn: Option<TxnInfo>,
    ) -> Result<OwnedEventId> {
        Ok(self
            .append_inner(Some(room_id), None, sender, ev, txn)
            .await?
            .0)
    }

    async fn append_inner(
        &self,
        room_id: Option<&RoomId>,
        new_version: Option<&RoomVersionId>,
        sender: &UserId,
        ev: NewEvent,
        txn: Option<TxnInfo>,
    ) -> Result<(OwnedEventId, OwnedRoomId)> {
        let lock_key = room_id.map(ToOwned::to_owned).unwrap_or_else(|| {
            ruma::room_id!("!create:tsunagu").to_owned() // v12 rooms have no ID until hashed
        });
        let lock = self.room_lock(&lock_key);
        let _guard = lock.lock().await;

        // Idempotent sends: a repeated transaction returns the first event.
        if let Some(t) = &txn
            && let Some(id) = self.txn_event(sender, t)?
        {
            let ev = self
                .event(&id)?
                .ok_or_else(|| Error::internal("txn event missing"))?;
            return Ok((id, ev.room_id));
        }

        let room = match room_id {
            Some(r) if new_version.is_none() => Some(
                self.room_record(r)?
                    .ok_or_else(|| Error::not_found("Unknown room"))?,
            ),
            _ => None,
        };
        let version = match (&room, new_version) {
            (Some(r), _) => r.version.clone(),
            (None, Some(v)) => v.clone(),
            (None, None) => return Err(Error::not_found("Unknown room")),
        };
        let rules = rules_for(&version)?;
        let content_raw = serde_json::value::to_raw_value(&ev.content)?;

        // Auth events: the spec's selection, from the current state.
        let mut auth_events = Vec::new();
        if let (Some(room_id), Some(_)) = (room_id, &room) {
            let types = state_res::auth_types_for_event(
                &ev.kind,
                sender,
                ev.state_key.as_deref(),
                &content_raw,
                &rules.authorization,
            )
            .map_err(Error::bad_json)?;
            for (ty, sk) in types {
                if let Some(id) = self.state_event_id(room_id, &ty, &sk)? {
                    auth_events.push(id);
                }
            }
        }

        // Build the PDU.
        let mut obj = CanonicalJsonObject::new();
        let (prev_events, depth) = match &room {
            Some(r) => (r.extremities.clone(), r.depth + 1),
            None => (vec![], 1),
        };
        let ids = |v: &[OwnedEventId]| {
            CanonicalJsonValue::Array(
                v.iter()
                    .map(|e| CanonicalJsonValue::String(e.to_string()))
                    .collect(),
            )
        };
        obj.insert("auth_events".into(), ids(&auth_events));
        obj.insert("prev_events".into(), ids(&prev_events));
        obj.insert("content".into(), to_canonical(&ev.content)?);
        obj.insert(
            "depth".into(),
            CanonicalJsonValue::Integer(depth.try_into().map_err(Error::internal)?),
        );
        obj.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(
                ev.timestamp
                    .unwrap_or_else(now_ms)
                    .try_into()
                    .map_err(Error::internal)?,
            ),
        );
        obj.insert(
            "sender".into(),
            CanonicalJsonValue::String(sender.to_string()),
        );
        obj.insert(
            "type".into(),
            CanonicalJsonValue::String(ev.kind.to_string()),
        );
        if let Some(room_id) = room_id {
            obj.insert(
                "room_id".into(),
                CanonicalJsonValue::String(room_id.to_string()),
            );
        }
        if let Some(sk) = &ev.state_key {
            obj.insert("state_key".into(), CanonicalJsonValue::String(sk.clone()));
        }
        if let Some(redacts) = &ev.redacts {
            // From v11 `redacts` lives in content; keep the top-level copy for older clients.
            obj.insert(
                "redacts".into(),
                CanonicalJsonValue::String(redacts.to_string()),
            );
            if rules.redaction.content_field_redacts
                && let Some(CanonicalJsonValue::Object(c)) = obj.get_mut("content")
            {
                c.insert(
                    "redacts".into(),
                    CanonicalJsonValue::String(redacts.to_string()),
                );
            }
        }
        ruma::signatures::hash_and_sign_event(
            self.server_name().as_str(),
            &self.signing_key,
            &mut obj,
            &rules.redaction,
        )
        .map_err(|e| Error::bad_json(format!("cannot sign event: {e}")))?;
        let hash = ruma::signatures::reference_hash(&obj, &rules).map_err(|e| {
            Error::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                ruma::api::error::ErrorKind::TooLarge,
                e.to_string(),
            )
        })?;
        let event_id = OwnedEventId::try_from(format!("${hash}")).map_err(Error::internal)?;
        let room_id: OwnedRoomId = match room_id {
            Some(r) => r.to_owned(),
            None => OwnedRoomId::try_from(format!("!{hash}")).map_err(Error::internal)?,
        };

        // Authorize with the spec's rules (ruma state-res).
        let pdu = Pdu::from_object(event_id.clone(), &obj)?;
        let create_id = room.as_ref().map(|r| r.create_event_id.clone());
        let fetch_event = |id: &EventId| self.pdu(id);
        state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, fetch_event)
            .map_err(|e| Error::forbidden(format!("Event not allowed: {e}")))?;
        let fetch_state = |ty: &StateEventType, sk: &str| -> Option<Pdu> {
            if *ty == StateEventType::RoomCreate {
                return create_id.as_deref().and_then(|id| self.pdu(id));
            }
            self.state_event_id(&room_id, ty, sk)
                .ok()
                .flatten()
                .and_then(|id| self.pdu(&id))
        };
        state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, fetch_state)
            .map_err(|e| Error::forbidden(format!("Event not allowed: {e}")))?;

        // Persist atomically at a new stream position.
        let state_pair = ev
            .state_key
            .as_ref()
            .map(|sk| (StateEventType::from(ev.kind.to_string()), sk.clone()));
        let replaces_state = match &state_pair {
            Some((ty, sk)) if room.is_some() => self.state_event_id(&room_id, ty, sk)?,
            _ => None,
        };
        let member_target = (ev.kind == TimelineEventType::RoomMember)
            .then(|| ev.state_key.as_deref().and_then(|s| UserId::parse(s).ok()))
            .flatten();
        let redaction_target = match (&ev.kind, &ev.redacts) {
            (TimelineEventType::RoomRedaction, Some(target)) => {
                self.event(target)?.filter(|t| t.room_id == room_id)
            }
            _ => None,
        };
        let entry = StreamEntry {
            room: Some(room_id.clone()),
            user: member_target.clone(),
            keys: None,
        };
        self.commit(entry, |pos, b| {
            let stored = StoredEvent {
                event_id: event_id.clone(),
                room_id: room_id.clone(),
                pos,
                pdu: obj,
                txn: txn.clone(),
                replaces_state,
                redacted_because: None,
            };
            b.put_json(Table::Events, event_id.as_bytes(), &stored);
            b.put(
                Table::Timeline,
                &key(&[room_id.as_bytes(), &pos_bytes(pos)]),
                event_id.as_bytes().to_vec(),
            );
            let record = RoomRecord {
                version: version.clone(),
                create_event_id: create_id.clone().unwrap_or_else(|| event_id.clone()),
                extremities: vec![event_id.clone()],
                depth,
            };
            b.put_json(Table::Rooms, room_id.as_bytes(), &record);
            if let Some((ty, sk)) = &state_pair {
                b.put(
                    Table::RoomState,
                    &key(&[room_id.as_bytes(), ty.to_string().as_bytes(), sk.as_bytes()]),
                    event_id.as_bytes().to_vec(),
                );
            }
            if let Some(target) = &member_target {
                let membership = ev
                    .content
                    .get("membership")
                    .and_then(|m| m.as_str())
                    .unwrap_or("leave");
                b.put_json(
                    Table::Memberships,
                    &key(&[target.as_bytes(), room_id.as_bytes()]),
                    &MembershipRecord {
                        membership: membership.to_owned(),
                        event_id: event_id.clone(),
                        pos,
                    },
                );
            }
            if let Some(t) = &txn {
                b.put(
                    Table::Transactions,
                    &key(&[
                        sender.as_bytes(),
                        t.device_id.as_bytes(),
                        t.txn_id.as_bytes(),
                    ]),
                    event_id.as_bytes().to_vec(),
                );
            }
            if let Some(mut target) = redaction_target {
                // The client view adds `redacted_because` from our own record.
                if let Ok(redacted) =
                    ruma::canonical_json::redact(target.pdu.clone(), &rules.redaction, None)
                {
                    target.pdu = redacted;
                    target.redacted_because = Some(event_id.clone());
                    b.put_json(Table::Events, target.event_id.as_bytes(), &target);
                }
            }
            Ok(())
        })
        .await?;
        Ok((event_id, room_id))
    }

    fn txn_event(&self, sender: &UserId, t: &TxnInfo) -> Result<Option<OwnedEventId>> {
        let k = key(&[
            sender.as_bytes(),
            t.device_id.as_bytes(),
            t.txn_id.as_bytes(),
        ]);
        Ok(self
            .store
            .get(Table::Transactions, &k)?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.try_into().ok()))
    }
}

/// Converts client JSON into canonical JSON, refusing floats and out-of-range integers.
pub fn to_canonical(value: &JsonValue) -> Result<CanonicalJsonValue> {
    CanonicalJsonValue::try_from(value.clone())
        .map_err(|e| Error::bad_json(format!("content is not canonical JSON: {e}")))
}

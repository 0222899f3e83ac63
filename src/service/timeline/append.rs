//! The one path that appends events to rooms.
//!
//! Local sends, joins, state changes and room creation all end in [`Timeline::append`] (or
//! [`Timeline::append_create`] for a room's first event), in three steps:
//! [`build`](Timeline::build) the PDU (auth events, hashes, signature, reference-hash ID),
//! [`authorize`](Timeline::authorize) it with ruma's state-res rules against the current state
//! and with the redaction rule, then [`persist`](Timeline::persist) the event, its timeline
//! entry, state, membership, state history, transaction ID and any redaction in one atomic batch
//! at a new stream position.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, RoomId,
    RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res,
};
use serde_json::Value as JsonValue;

use super::{Pdu, Timeline, rules_for};
use crate::{
    error::{Error, Result},
    service::core::now_ms,
    store::{
        EVENTS, MEMBERSHIPS, MembershipRecord, ROOM_STATE, ROOMS, RoomRecord, STATE_HISTORY,
        StoredEvent, StreamEntry, TIMELINE, TRANSACTIONS, TxnInfo, TxnScope, scoped_txn,
    },
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

    pub fn redaction(target: OwnedEventId, content: JsonValue) -> Self {
        Self {
            kind: TimelineEventType::RoomRedaction,
            content,
            state_key: None,
            redacts: Some(target),
            timestamp: None,
        }
    }
}

/// The client transaction an event was sent with: idempotent per device, endpoint and room.
#[derive(Clone, Debug)]
pub struct Txn {
    pub info: TxnInfo,
    /// Sent through `/redact` rather than `/send`: a separate transaction ID space.
    pub via_redact: bool,
}

impl Txn {
    /// Its key part in the transactions table: unique per endpoint and room.
    fn key(&self, room_id: &RoomId) -> String {
        let scope = if self.via_redact {
            TxnScope::Redact(room_id)
        } else {
            TxnScope::Send(room_id)
        };
        scoped_txn(scope, self.info.txn_id.as_str())
    }
}

/// A signed PDU ready to be authorized.
struct Built {
    event_id: OwnedEventId,
    room_id: OwnedRoomId,
    obj: CanonicalJsonObject,
    room: Option<RoomRecord>,
    version: RoomVersionId,
    rules: RoomVersionRules,
    depth: u64,
}

impl Timeline {
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
            let id = format!(
                "!{}:{}",
                crate::service::core::random_token(12),
                self.core.server_name()
            );
            Some(OwnedRoomId::try_from(id).map_err(Error::internal)?)
        };
        let ev = NewEvent::state(TimelineEventType::RoomCreate, "", content);
        // v12 rooms have no ID until the create event is hashed: creations share one lock.
        let lock = self.core.lock("room-create");
        let _guard = lock.lock().await;
        let built = self.build(room_id.as_deref(), Some(version), sender, &ev)?;
        self.authorize(&built)?;
        Ok(self.persist(built, &ev, None).await?.1)
    }

    /// Appends an event by a local user to an existing room.
    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        ev: NewEvent,
        txn: Option<Txn>,
    ) -> Result<OwnedEventId> {
        let lock = self.core.lock(room_id.as_str());
        let _guard = lock.lock().await;
        // Idempotent sends: a repeated transaction returns the first event.
        if let Some(t) = &txn
            && let Some(id) = self.txn_event(room_id, sender, t)?
        {
            return Ok(id);
        }
        let built = self.build(Some(room_id), None, sender, &ev)?;
        self.authorize(&built)?;
        Ok(self.persist(built, &ev, txn).await?.0)
    }

    fn txn_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        t: &Txn,
    ) -> Result<Option<OwnedEventId>> {
        let scope = if t.via_redact {
            TxnScope::Redact(room_id)
        } else {
            TxnScope::Send(room_id)
        };
        let key = scoped_txn(scope, t.info.txn_id.as_str());
        Ok(self
            .core
            .store
            .get(&TRANSACTIONS, (sender, &t.info.device_id, &key))?)
    }

    /// Step 1: the signed PDU with its auth events, prev events, hashes and reference-hash ID.
    fn build(
        &self,
        room_id: Option<&RoomId>,
        new_version: Option<&RoomVersionId>,
        sender: &UserId,
        ev: &NewEvent,
    ) -> Result<Built> {
        let room = match (room_id, new_version) {
            (Some(r), None) => Some(self.known_room(r)?),
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
                if let Some(id) = self.current_state_id(room_id, &ty.to_string(), &sk)? {
                    auth_events.push(id);
                }
            }
        }

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
        let int = |n: u64| -> Result<CanonicalJsonValue> {
            Ok(CanonicalJsonValue::Integer(
                n.try_into().map_err(Error::internal)?,
            ))
        };
        let string = |s: String| CanonicalJsonValue::String(s);
        obj.insert("auth_events".into(), ids(&auth_events));
        obj.insert("prev_events".into(), ids(&prev_events));
        obj.insert("content".into(), to_canonical(&ev.content)?);
        obj.insert("depth".into(), int(depth)?);
        obj.insert(
            "origin_server_ts".into(),
            int(ev.timestamp.unwrap_or_else(now_ms))?,
        );
        obj.insert("sender".into(), string(sender.to_string()));
        obj.insert("type".into(), string(ev.kind.to_string()));
        if let Some(room_id) = room_id {
            obj.insert("room_id".into(), string(room_id.to_string()));
        }
        if let Some(sk) = &ev.state_key {
            obj.insert("state_key".into(), string(sk.clone()));
        }
        if let Some(redacts) = &ev.redacts {
            // From v11 `redacts` lives in content; keep the top-level copy for older clients.
            obj.insert("redacts".into(), string(redacts.to_string()));
            if rules.redaction.content_field_redacts
                && let Some(CanonicalJsonValue::Object(c)) = obj.get_mut("content")
            {
                c.insert("redacts".into(), string(redacts.to_string()));
            }
        }
        ruma::signatures::hash_and_sign_event(
            self.core.server_name().as_str(),
            &self.core.signing_key,
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
        let room_id = match room_id {
            Some(r) => r.to_owned(),
            None => OwnedRoomId::try_from(format!("!{hash}")).map_err(Error::internal)?,
        };
        Ok(Built {
            event_id,
            room_id,
            obj,
            room,
            version,
            rules,
            depth,
        })
    }

    /// Step 2: the spec's authorization rules (ruma state-res) against the current state, and
    /// the redaction rule: only the original sender or someone with the `redact` power level
    /// may redact an event.
    fn authorize(&self, b: &Built) -> Result<()> {
        let pdu = Pdu::from_object(b.event_id.clone(), &b.obj)?;
        let create_id = b.room.as_ref().map(|r| r.create_event_id.clone());
        let fetch_event = |id: &EventId| self.pdu(id);
        state_res::check_state_independent_auth_rules(&b.rules.authorization, &pdu, fetch_event)
            .map_err(|e| Error::forbidden(format!("Event not allowed: {e}")))?;
        let fetch_state = |ty: &StateEventType, sk: &str| -> Option<Pdu> {
            if *ty == StateEventType::RoomCreate {
                return create_id.as_deref().and_then(|id| self.pdu(id));
            }
            self.current_state_id(&b.room_id, &ty.to_string(), sk)
                .ok()
                .flatten()
                .and_then(|id| self.pdu(&id))
        };
        state_res::check_state_dependent_auth_rules(&b.rules.authorization, &pdu, fetch_state)
            .map_err(|e| Error::forbidden(format!("Event not allowed: {e}")))?;
        if pdu.kind == TimelineEventType::RoomRedaction {
            let target = pdu
                .redacts
                .as_ref()
                .ok_or_else(|| Error::bad_json("A redaction needs `redacts`"))?;
            let target = self
                .event(target)?
                .filter(|t| t.room_id == b.room_id)
                .ok_or_else(|| Error::not_found("The event to redact is not in this room"))?;
            if target.sender().as_deref() != Some(&*pdu.sender)
                && !self
                    .power_levels(&b.room_id)?
                    .user_can_redact_event_of_other(&pdu.sender)
            {
                return Err(Error::forbidden("You may not redact other users' events"));
            }
        }
        Ok(())
    }

    /// Step 3: everything the event changes, in one atomic batch at a new stream position.
    async fn persist(
        &self,
        b: Built,
        ev: &NewEvent,
        txn: Option<Txn>,
    ) -> Result<(OwnedEventId, OwnedRoomId)> {
        let Built {
            event_id,
            room_id,
            obj,
            room,
            version,
            rules,
            depth,
        } = b;
        let sender = ruma::OwnedUserId::try_from(
            obj.get("sender")
                .and_then(|s| s.as_str())
                .ok_or_else(|| Error::internal("built event without sender"))?,
        )
        .map_err(Error::internal)?;
        let state_pair = ev
            .state_key
            .as_ref()
            .map(|sk| (ev.kind.to_string(), sk.clone()));
        let replaces_state = match &state_pair {
            Some((ty, sk)) if room.is_some() => self.current_state_id(&room_id, ty, sk)?,
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
        let create_id = room.as_ref().map(|r| r.create_event_id.clone());
        let entry = StreamEntry {
            room: Some(room_id.clone()),
            user: member_target.clone(),
            keys: None,
        };
        self.core
            .commit(entry, |pos, batch| {
                let stored = StoredEvent {
                    event_id: event_id.clone(),
                    room_id: room_id.clone(),
                    pos,
                    pdu: obj,
                    txn: txn.as_ref().map(|t| t.info.clone()),
                    replaces_state,
                    redacted_because: None,
                };
                batch.put(&EVENTS, &event_id, &stored);
                batch.put(&TIMELINE, (&room_id, pos), &event_id);
                let record = RoomRecord {
                    version: version.clone(),
                    create_event_id: create_id.clone().unwrap_or_else(|| event_id.clone()),
                    extremities: vec![event_id.clone()],
                    depth,
                };
                batch.put(&ROOMS, &room_id, &record);
                if let Some((ty, sk)) = &state_pair {
                    batch.put(&ROOM_STATE, (&room_id, ty.as_str(), sk.as_str()), &event_id);
                    batch.put(
                        &STATE_HISTORY,
                        (&room_id, ty.as_str(), sk.as_str(), pos),
                        &event_id,
                    );
                }
                if let Some(target) = &member_target {
                    let membership = super::pdu::membership_of(&ev.content);
                    batch.put(
                        &MEMBERSHIPS,
                        (target, &room_id),
                        &MembershipRecord {
                            membership,
                            event_id: event_id.clone(),
                            pos,
                        },
                    );
                }
                if let Some(t) = &txn {
                    let key = t.key(&room_id);
                    batch.put(&TRANSACTIONS, (&sender, &t.info.device_id, &key), &event_id);
                }
                if let Some(mut target) = redaction_target {
                    // The client view adds `redacted_because` from our own record.
                    if let Ok(redacted) =
                        ruma::canonical_json::redact(target.pdu.clone(), &rules.redaction, None)
                    {
                        target.pdu = redacted;
                        target.redacted_because = Some(event_id.clone());
                        batch.put(&EVENTS, &target.event_id, &target);
                    }
                }
                Ok(())
            })
            .await?;
        Ok((event_id, room_id))
    }
}

/// Converts client JSON into canonical JSON, refusing floats and out-of-range integers.
pub fn to_canonical(value: &JsonValue) -> Result<CanonicalJsonValue> {
    CanonicalJsonValue::try_from(value.clone())
        .map_err(|e| Error::bad_json(format!("content is not canonical JSON: {e}")))
}

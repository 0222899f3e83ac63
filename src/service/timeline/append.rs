//! The one path that appends events to rooms.
//!
//! Local sends, joins, state changes and room creation all end here, in three steps per event:
//! [`build`](Timeline::build) the PDU (auth events, hashes, signature, reference-hash ID),
//! [`authorize`](Timeline::authorize) it with ruma's state-res rules and the redaction rule
//! against the room as it will be, then [`persist`](Timeline::persist) everything the events
//! change in one atomic batch, one stream position per event.
//!
//! Events are built against a [`Pending`] room: the stored room plus the events built so far.
//! [`Timeline::append`] builds one event; [`Timeline::create_room`] builds a whole new room's
//! first events and persists them together, so a refused event leaves no half-made room.

use std::collections::{BTreeMap, HashMap};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, OwnedServerName,
    OwnedUserId, RoomId, RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules},
    state_res,
};
use serde_json::Value as JsonValue;

use super::{
    Pdu, Timeline,
    relations::{AggregationWrites, Relating},
    rules_for,
    search_index::event_words,
};
use crate::{
    error::{Error, Result},
    service::core::now_ms,
    store::{
        EVENTS, FEDERATION_PDUS, MEMBERSHIPS, MembershipRecord, PUSH_ACTIONS, PushFlags,
        ROOM_STATE, ROOMS, RoomRecord, SEARCH, STATE_HISTORY, StoredEvent, StreamEntry, TIMELINE,
        TRANSACTIONS, TxnInfo, TxnScope, UNREAD_COUNTS, UnreadSummary, scoped_txn,
    },
};

/// The largest PDU the spec allows, in bytes of canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

/// The longest event type, state key, sender or room ID the spec allows, in bytes.
pub const MAX_ID_BYTES: usize = 255;

/// Most prev events a new event names (the newest forward extremities).
pub const MAX_PREV_EVENTS: usize = 20;

/// The deepest an event may be: the largest integer canonical JSON allows (another server's
/// event at that depth does not make this server's next one unrepresentable).
pub const MAX_DEPTH: u64 = (1 << 53) - 1;

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

/// Where an event is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In the room's timeline: shown to clients, indexed, counted.
    Timeline,
    /// History from before this server joined the room (backfilled): in the timeline and
    /// indexed, but nobody is notified of it.
    History,
    /// Kept for the room's DAG only (a remote room's state and auth chain at a join, a
    /// soft-failed event): found by ID, never shown in the timeline.
    Outlier,
}

/// Which other servers a persisted event goes out to (over federation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Every server with a member in the room, but for the one named (an event of this
    /// server, or a join another server's user made through this one).
    ToRoomBut(Option<OwnedServerName>),
    /// None: it came from another server, which sends its own events.
    No,
}

/// A signed, authorized PDU waiting to be persisted.
pub(super) struct Built {
    pub(super) event_id: OwnedEventId,
    pub(super) obj: CanonicalJsonObject,
    pub(super) pdu: Pdu,
    pub(super) replaces_state: Option<OwnedEventId>,
    pub(super) txn: Option<Txn>,
    pub(super) placement: Placement,
    /// The room's state keys this event sets (its own, or what state resolution chose).
    pub(super) state_writes: Vec<((String, String), OwnedEventId)>,
    pub(super) forward: Forward,
}

/// A room as it will be once the events built so far are persisted.
pub struct Pending {
    /// None until a version 12 room's create event is built (its hash is the room's ID).
    pub(super) room_id: Option<OwnedRoomId>,
    /// The room is in the store (else it is being created by these events).
    pub(super) stored: bool,
    pub(super) version: RoomVersionId,
    pub(super) rules: RoomVersionRules,
    pub(super) record: Option<RoomRecord>,
    /// State keys the built events set.
    pub(super) state: BTreeMap<(String, String), OwnedEventId>,
    pub(super) built: Vec<Built>,
}

impl Pending {
    pub(super) fn room_id(&self) -> Result<&RoomId> {
        self.room_id
            .as_deref()
            .ok_or_else(|| Error::internal("the room has no create event yet"))
    }
}

impl Timeline {
    /// Creates a room from its first events (`m.room.create` first) and returns its ID. Every
    /// event is built and authorized before any is written: all are persisted, or none.
    pub async fn create_room(
        &self,
        sender: &UserId,
        version: &RoomVersionId,
        events: Vec<NewEvent>,
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
        let mut pending = Pending {
            room_id,
            stored: false,
            version: version.clone(),
            rules,
            record: None,
            state: BTreeMap::new(),
            built: Vec::new(),
        };
        for ev in events {
            self.add(&mut pending, sender, ev, None)?;
        }
        let room_id = pending.room_id()?.to_owned();
        self.persist(pending).await?;
        Ok(room_id)
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
        if let Some(t) = &txn {
            let key = t.key(room_id);
            if let Some(id) = self
                .core
                .store
                .get(&TRANSACTIONS, (sender, &t.info.device_id, &key))?
            {
                return Ok(id);
            }
        }
        let mut pending = self.pending_stored(room_id)?;
        let event_id = self.add(&mut pending, sender, ev, txn)?;
        self.persist(pending).await?;
        Ok(event_id)
    }

    /// A stored room, with nothing built in it yet.
    pub(super) fn pending_stored(&self, room_id: &RoomId) -> Result<Pending> {
        let record = self.known_room(room_id)?;
        Ok(Pending {
            room_id: Some(room_id.to_owned()),
            stored: true,
            version: record.version.clone(),
            rules: rules_for(&record.version)?,
            record: Some(record),
            state: BTreeMap::new(),
            built: Vec::new(),
        })
    }

    /// The state event of `(ty, state_key)` in the pending room.
    pub(super) fn pending_state(
        &self,
        p: &Pending,
        ty: &str,
        state_key: &str,
    ) -> Result<Option<OwnedEventId>> {
        if let Some(id) = p.state.get(&(ty.to_owned(), state_key.to_owned())) {
            return Ok(Some(id.clone()));
        }
        match &p.room_id {
            Some(room_id) if p.stored => self.current_state_id(room_id, ty, state_key),
            _ => Ok(None),
        }
    }

    /// An event of the pending room, built or stored.
    pub(super) fn pending_pdu(&self, p: &Pending, id: &EventId) -> Option<Pdu> {
        match p.built.iter().find(|b| b.event_id == id) {
            Some(b) => Some(b.pdu.clone()),
            None => self.pdu(id),
        }
    }

    /// Builds and authorizes one event against the pending room and adds it there.
    pub(super) fn add(
        &self,
        p: &mut Pending,
        sender: &UserId,
        ev: NewEvent,
        txn: Option<Txn>,
    ) -> Result<OwnedEventId> {
        let (event_id, obj, depth) = self.build(p, sender, &ev)?;
        let pdu = Pdu::from_object(event_id.clone(), &obj)?;
        if p.room_id.is_none() {
            // A version 12 room's ID is its create event's reference hash.
            let hash = event_id.as_str().trim_start_matches('$');
            p.room_id = Some(OwnedRoomId::try_from(format!("!{hash}")).map_err(Error::internal)?);
        }
        self.authorize(p, &pdu)?;
        let replaces_state = match &ev.state_key {
            Some(sk) => self.pending_state(p, ev.kind.to_string().as_str(), sk)?,
            None => None,
        };
        let mut state_writes = Vec::new();
        if let Some(sk) = &ev.state_key {
            let key = (ev.kind.to_string(), sk.clone());
            p.state.insert(key.clone(), event_id.clone());
            state_writes.push((key, event_id.clone()));
        }
        let create_event_id = p
            .record
            .as_ref()
            .map(|r| r.create_event_id.clone())
            .unwrap_or_else(|| event_id.clone());
        p.record = Some(RoomRecord {
            version: p.version.clone(),
            create_event_id,
            extremities: vec![event_id.clone()],
            depth,
        });
        p.built.push(Built {
            event_id: event_id.clone(),
            obj,
            pdu,
            replaces_state,
            txn,
            placement: Placement::Timeline,
            state_writes,
            forward: Forward::ToRoomBut(None),
        });
        Ok(event_id)
    }

    /// Step 1: the signed PDU with its auth events, prev events, hashes and reference-hash ID.
    /// Refuses events over the spec's size limits with M_TOO_LARGE.
    fn build(
        &self,
        p: &Pending,
        sender: &UserId,
        ev: &NewEvent,
    ) -> Result<(OwnedEventId, CanonicalJsonObject, u64)> {
        let (mut obj, depth, made_up_id) = self.template(p, sender, ev)?;
        let rules = &p.rules;
        let too_large = |what: String| {
            Error::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                ruma::api::error::ErrorKind::TooLarge,
                what,
            )
        };
        ruma::signatures::hash_and_sign_event(
            self.core.server_name().as_str(),
            &self.core.signing_key,
            &mut obj,
            &rules.redaction,
        )
        .map_err(|e| match e {
            ruma::signatures::JsonError::PduTooLarge => {
                too_large(format!("Events are at most {MAX_PDU_BYTES} bytes"))
            }
            e => Error::bad_json(format!("cannot sign event: {e}")),
        })?;
        let size = serde_json::to_vec(&obj)?.len();
        if size > MAX_PDU_BYTES {
            return Err(too_large(format!(
                "The event is {size} bytes; events are at most {MAX_PDU_BYTES}"
            )));
        }
        let event_id = match made_up_id {
            Some(id) => id,
            None => {
                let hash = ruma::signatures::reference_hash(&obj, rules)
                    .map_err(|e| too_large(e.to_string()))?;
                format!("${hash}")
            }
        };
        let event_id = OwnedEventId::try_from(event_id).map_err(Error::internal)?;
        Ok((event_id, obj, depth))
    }

    /// The event before it is hashed and signed: auth events, prev events, depth, content
    /// (what `make_join` hands another server to sign), its depth, and for room versions 1
    /// and 2 the made-up event ID it carries.
    fn template(
        &self,
        p: &Pending,
        sender: &UserId,
        ev: &NewEvent,
    ) -> Result<(CanonicalJsonObject, u64, Option<String>)> {
        let too_large = |what: String| {
            Error::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                ruma::api::error::ErrorKind::TooLarge,
                what,
            )
        };
        let kind = ev.kind.to_string();
        if kind.len() > MAX_ID_BYTES {
            return Err(too_large(format!(
                "Event types are at most {MAX_ID_BYTES} bytes"
            )));
        }
        if ev
            .state_key
            .as_ref()
            .is_some_and(|k| k.len() > MAX_ID_BYTES)
        {
            return Err(too_large(format!(
                "State keys are at most {MAX_ID_BYTES} bytes"
            )));
        }
        let rules = &p.rules;
        let content_raw = serde_json::value::to_raw_value(&ev.content)?;

        // Auth events: the spec's selection, from the room's state.
        let mut auth_events = Vec::new();
        if p.record.is_some() {
            let types = state_res::auth_types_for_event(
                &ev.kind,
                sender,
                ev.state_key.as_deref(),
                &content_raw,
                &rules.authorization,
            )
            .map_err(Error::bad_json)?;
            for (ty, sk) in types {
                if let Some(id) = self.pending_state(p, &ty.to_string(), &sk)? {
                    auth_events.push(id);
                }
            }
        }

        let mut obj = CanonicalJsonObject::new();
        let (prev_events, depth) = match &p.record {
            Some(r) => (
                self.newest_extremities(p, &r.extremities),
                r.depth.saturating_add(1).min(MAX_DEPTH),
            ),
            None => (vec![], 1),
        };
        let ids = |v: &[OwnedEventId]| -> Result<CanonicalJsonValue> {
            Ok(CanonicalJsonValue::Array(
                v.iter()
                    .map(|e| self.event_ref(p, e))
                    .collect::<Result<_>>()?,
            ))
        };
        let int = |n: u64| -> Result<CanonicalJsonValue> {
            Ok(CanonicalJsonValue::Integer(
                n.try_into().map_err(Error::internal)?,
            ))
        };
        let string = |s: String| CanonicalJsonValue::String(s);
        obj.insert("auth_events".into(), ids(&auth_events)?);
        obj.insert("prev_events".into(), ids(&prev_events)?);
        // Room versions 1 and 2: the event ID is made up, and signed with the event.
        let made_up_id = (rules.event_id_format == EventIdFormatVersion::V1).then(|| {
            format!(
                "${}:{}",
                crate::service::core::random_token(12),
                self.core.server_name()
            )
        });
        if let Some(id) = &made_up_id {
            obj.insert("event_id".into(), string(id.clone()));
        }
        obj.insert("content".into(), to_canonical(&ev.content)?);
        obj.insert("depth".into(), int(depth)?);
        obj.insert(
            "origin_server_ts".into(),
            int(ev.timestamp.unwrap_or_else(now_ms))?,
        );
        obj.insert("sender".into(), string(sender.to_string()));
        obj.insert("type".into(), string(kind));
        if let Some(room_id) = &p.room_id {
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
        Ok((obj, depth, made_up_id))
    }

    /// `make_join` and `make_leave`: the member event (`membership`: join or leave) of another
    /// server's user, for their server to sign, if the room's rules let them make it now
    /// (checked as the event would be): its room version and the event. 404 for a room this
    /// server is not in.
    pub fn membership_template(
        &self,
        room_id: &RoomId,
        user: &UserId,
        membership: MembershipState,
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        let p = self.pending_stored(room_id)?;
        let mut content = serde_json::json!({ "membership": membership });
        if membership == MembershipState::Join
            && let Some(by) = self.restricted_join_authoriser(room_id, user)?
        {
            content["join_authorised_via_users_server"] = by.as_str().into();
        }
        let ev = NewEvent::state(TimelineEventType::RoomMember, user.as_str(), content);
        let (obj, _, made_up_id) = self.template(&p, user, &ev)?;
        // Checked as the event would be (a stand-in ID: it has no hash yet).
        let id = made_up_id.unwrap_or_else(|| "$template".to_owned());
        let id = OwnedEventId::try_from(id).map_err(Error::internal)?;
        self.authorize(&p, &Pdu::from_object(id, &obj)?)?;
        Ok((p.version, obj))
    }

    /// The forward extremities a new event names as its prev events: all of them, or the
    /// [`MAX_PREV_EVENTS`] deepest when another server's events left more (the rest are
    /// dropped: a server cannot make this server's events grow without bound).
    pub(super) fn newest_extremities(
        &self,
        p: &Pending,
        extremities: &[OwnedEventId],
    ) -> Vec<OwnedEventId> {
        if extremities.len() <= MAX_PREV_EVENTS {
            return extremities.to_vec();
        }
        let mut by_depth: Vec<(u64, OwnedEventId)> = extremities
            .iter()
            .map(|id| {
                let depth = self.pending_pdu(p, id).map_or(0, |e| u64::from(e.depth));
                (depth, id.clone())
            })
            .collect();
        by_depth.sort_by(|a, b| b.cmp(a));
        by_depth.truncate(MAX_PREV_EVENTS);
        by_depth.into_iter().map(|(_, id)| id).collect()
    }

    /// How an event names another in `prev_events` and `auth_events`: its ID, or (room
    /// versions 1 and 2) its ID and reference hash.
    fn event_ref(&self, p: &Pending, id: &EventId) -> Result<CanonicalJsonValue> {
        if p.rules.events_reference_format != EventsReferenceFormatVersion::V1 {
            return Ok(CanonicalJsonValue::String(id.to_string()));
        }
        let obj = match p.built.iter().find(|b| b.event_id == id) {
            Some(b) => b.obj.clone(),
            None => {
                self.event(id)?
                    .ok_or_else(|| Error::internal(format!("{id} is missing")))?
                    .pdu
            }
        };
        let hash = ruma::signatures::reference_hash(&obj, &p.rules).map_err(Error::internal)?;
        let mut hashes = CanonicalJsonObject::new();
        hashes.insert("sha256".into(), CanonicalJsonValue::String(hash));
        Ok(CanonicalJsonValue::Array(vec![
            CanonicalJsonValue::String(id.to_string()),
            CanonicalJsonValue::Object(hashes),
        ]))
    }

    /// Step 2: the spec's authorization rules (ruma state-res) against the pending room's
    /// state, and the redaction rule: only the original sender or someone with the `redact`
    /// power level may redact an event.
    pub(super) fn authorize(&self, p: &Pending, pdu: &Pdu) -> Result<()> {
        let rules = &p.rules.authorization;
        let fetch_event = |id: &EventId| self.pending_pdu(p, id);
        state_res::check_state_independent_auth_rules(rules, pdu, fetch_event)
            .map_err(|e| Error::forbidden(format!("Event not allowed: {e}")))?;
        let fetch_state = |ty: &StateEventType, sk: &str| -> Option<Pdu> {
            if *ty == StateEventType::RoomCreate
                && let Some(record) = &p.record
            {
                return self.pending_pdu(p, &record.create_event_id);
            }
            self.pending_state(p, &ty.to_string(), sk)
                .ok()
                .flatten()
                .and_then(|id| self.pending_pdu(p, &id))
        };
        state_res::check_state_dependent_auth_rules(rules, pdu, fetch_state)
            .map_err(|e| Error::forbidden(format!("Event not allowed: {e}")))?;
        if pdu.kind == TimelineEventType::RoomRedaction {
            let room_id = p.room_id()?;
            let target = pdu
                .redacts
                .as_ref()
                .ok_or_else(|| Error::bad_json("A redaction needs `redacts`"))?;
            let target = self
                .event(target)?
                .filter(|t| t.room_id == room_id)
                .ok_or_else(|| Error::not_found("The event to redact is not in this room"))?;
            if target.sender().as_deref() != Some(&*pdu.sender) {
                let create = p
                    .record
                    .as_ref()
                    .and_then(|r| self.pending_pdu(p, &r.create_event_id));
                let levels = self
                    .pending_state(p, "m.room.power_levels", "")?
                    .and_then(|id| self.pending_pdu(p, &id));
                if !super::state::power_levels_from(&p.rules, create.as_ref(), levels.as_ref())
                    .user_can_redact_event_of_other(&pdu.sender)
                {
                    return Err(Error::forbidden("You may not redact other users' events"));
                }
            }
        }
        Ok(())
    }

    /// Step 3: everything the built events change, in one atomic batch, one stream position
    /// per event. Events for other servers are queued for them in the same batch.
    pub(super) async fn persist(&self, p: Pending) -> Result<()> {
        let room_id = p.room_id()?.to_owned();
        if p.built.is_empty() {
            return Err(Error::internal("nothing was built"));
        }
        // None for a room this server is not in (an invite from another server).
        let record = p.record.clone();
        // Redactions rewrite their targets; load them before taking the writer.
        let mut targets: HashMap<OwnedEventId, StoredEvent> = HashMap::new();
        for b in p.built.iter().filter(|b| b.placement != Placement::Outlier) {
            if b.pdu.kind == TimelineEventType::RoomRedaction
                && let Some(target) = &b.pdu.redacts
                && let Some(ev) = self.event(target)?.filter(|t| t.room_id == room_id)
            {
                targets.insert(target.clone(), ev);
            }
        }
        // The membership each event sets, and the members' current ones (to tell a change
        // from a repeat).
        let mut member_writes: Vec<Vec<(OwnedUserId, MembershipState, OwnedEventId)>> =
            Vec::with_capacity(p.built.len());
        let mut memberships: HashMap<OwnedUserId, MembershipRecord> = HashMap::new();
        for b in &p.built {
            let mut writes = Vec::new();
            for ((ty, sk), id) in &b.state_writes {
                if ty != "m.room.member" {
                    continue;
                }
                let Ok(target) = OwnedUserId::try_from(sk.as_str()) else {
                    continue;
                };
                let content = match p.built.iter().find(|o| o.event_id == *id) {
                    Some(o) => serde_json::from_str(o.pdu.content.get()).unwrap_or_default(),
                    None => self.event(id)?.map(|e| e.content()).unwrap_or_default(),
                };
                if let Some(m) = self.membership(&target, &room_id)? {
                    memberships.insert(target.clone(), m);
                }
                writes.push((target, super::pdu::membership_of(&content), id.clone()));
            }
            member_writes.push(writes);
        }
        let entries = p
            .built
            .iter()
            .zip(&member_writes)
            .map(|(b, writes)| StreamEntry {
                room: Some(room_id.clone()),
                user: member_target(&b.pdu).or_else(|| writes.first().map(|w| w.0.clone())),
                ..Default::default()
            })
            .collect();
        // Who each timeline event notifies, judged before the writer is taken.
        let shown: Vec<usize> = (0..p.built.len())
            .filter(|i| p.built[*i].placement == Placement::Timeline)
            .collect();
        let mut notified: Vec<Vec<super::Notified>> = vec![Vec::new(); p.built.len()];
        if let Some(observer) = self.observer.get().and_then(std::sync::Weak::upgrade) {
            let preview: Vec<StoredEvent> = shown
                .iter()
                .map(|i| &p.built[*i])
                .map(|b| StoredEvent {
                    event_id: b.event_id.clone(),
                    room_id: room_id.clone(),
                    pos: 0,
                    pdu: b.obj.clone(),
                    txn: None,
                    replaces_state: None,
                    redacted_because: None,
                })
                .collect();
            for (i, n) in shown
                .iter()
                .zip(observer.notified(&room_id, &preview).await?)
            {
                notified[*i] = n;
            }
        }
        let destinations = self.destinations(&room_id, &p.built, &member_writes)?;
        let rules = p.rules;
        self.core
            .commit_many(entries, |first, batch| {
                let mut aggregations = AggregationWrites::default();
                let mut unread: HashMap<OwnedUserId, UnreadSummary> = HashMap::new();
                for (i, (b, writes)) in p.built.into_iter().zip(member_writes).enumerate() {
                    let pos = first + i as u64;
                    for ((ty, sk), id) in &b.state_writes {
                        batch.put(&ROOM_STATE, (&room_id, ty.as_str(), sk.as_str()), id);
                        batch.put(
                            &STATE_HISTORY,
                            (&room_id, ty.as_str(), sk.as_str(), pos),
                            id,
                        );
                    }
                    for (target, membership, event_id) in writes {
                        // A join that stays a join (a new display name) keeps its start.
                        let since = memberships
                            .get(&target)
                            .filter(|m| m.membership == membership)
                            .map(MembershipRecord::changed_at);
                        let record = MembershipRecord {
                            membership,
                            event_id,
                            pos,
                            since,
                        };
                        batch.put(&MEMBERSHIPS, (&target, &room_id), &record);
                        memberships.insert(target, record);
                    }
                    if let Some(servers) = destinations.get(i) {
                        for server in servers {
                            batch.put(&FEDERATION_PDUS, (server, pos), &b.event_id);
                        }
                    }
                    let stored = StoredEvent {
                        event_id: b.event_id.clone(),
                        room_id: room_id.clone(),
                        pos,
                        pdu: b.obj,
                        txn: b.txn.as_ref().map(|t| t.info.clone()),
                        replaces_state: b.replaces_state,
                        redacted_because: None,
                    };
                    if b.placement == Placement::Outlier {
                        batch.put(&EVENTS, &b.event_id, &stored);
                        continue;
                    }
                    for n in &notified[i] {
                        batch.put(
                            &PUSH_ACTIONS,
                            (&n.user, &room_id, pos),
                            &PushFlags {
                                highlight: n.highlight,
                                thread: n.thread.clone(),
                            },
                        );
                        let summary = match unread.entry(n.user.clone()) {
                            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                            std::collections::hash_map::Entry::Vacant(v) => v.insert(
                                self.core
                                    .store
                                    .get(&UNREAD_COUNTS, (&n.user, &room_id))?
                                    .unwrap_or_default(),
                            ),
                        };
                        summary.notify += 1;
                        summary.highlight += u64::from(n.highlight);
                    }
                    let sender: OwnedUserId = b.pdu.sender.clone();
                    let content: JsonValue =
                        serde_json::from_str(b.pdu.content.get()).unwrap_or_default();
                    let relating = Relating {
                        room_id: &room_id,
                        event_id: &b.event_id,
                        pos,
                        pdu: &b.pdu,
                    };
                    self.index_relation(batch, &mut aggregations, relating, &content)?;
                    for word in event_words(&b.pdu.kind.to_string(), &content) {
                        batch.put(&SEARCH, (&room_id, word.as_str(), pos), &b.event_id);
                    }
                    if let Some(t) = &b.txn {
                        let key = t.key(&room_id);
                        batch.put(
                            &TRANSACTIONS,
                            (&sender, &t.info.device_id, &key),
                            &b.event_id,
                        );
                    }
                    if let Some(target) = b.pdu.redacts.as_ref().and_then(|t| targets.remove(t)) {
                        // What the redacted content said leaves the indexes with it.
                        self.unindex_relation(batch, &mut aggregations, &target)?;
                        for word in event_words(&target.kind(), &target.content()) {
                            batch.delete(&SEARCH, (&room_id, word.as_str(), target.pos));
                        }
                        // The client view adds `redacted_because` from our own record.
                        let mut target = target;
                        if let Ok(redacted) =
                            ruma::canonical_json::redact(target.pdu.clone(), &rules.redaction, None)
                        {
                            target.pdu = redacted;
                            target.redacted_because = Some(b.event_id.clone());
                            batch.put(&EVENTS, &target.event_id, &target);
                        }
                    }
                    batch.put(&EVENTS, &b.event_id, &stored);
                    batch.put(&TIMELINE, (&room_id, pos), &b.event_id);
                }
                if let Some(record) = &record {
                    batch.put(&ROOMS, &room_id, record);
                }
                for (user, summary) in unread {
                    batch.put(&UNREAD_COUNTS, (&user, &room_id), &summary);
                }
                aggregations.apply(batch);
                Ok(())
            })
            .await?;
        let mut servers: Vec<OwnedServerName> = destinations.into_iter().flatten().collect();
        servers.sort();
        servers.dedup();
        if !servers.is_empty()
            && let Some(listener) = self.outbox.get()
        {
            listener(&servers);
        }
        Ok(())
    }

    /// For each built event, the other servers it goes out to: those with a member joined
    /// after the batch, and a member event's target's server (a remote user kicked or
    /// banned hears of it). Nothing when federation is off.
    /// The other servers with a member joined once these membership changes are made, and
    /// the servers of the members they change (a remote user kicked hears of it).
    fn servers_after(
        &self,
        room_id: &RoomId,
        member_writes: &[Vec<(OwnedUserId, MembershipState, OwnedEventId)>],
    ) -> Result<Vec<OwnedServerName>> {
        let mut joined: BTreeMap<OwnedUserId, bool> = self
            .member_records(room_id)?
            .into_iter()
            .map(|(u, m)| (u, m.membership == MembershipState::Join))
            .collect();
        let mut targets = Vec::new();
        for (user, membership, _) in member_writes.iter().flatten() {
            joined.insert(user.clone(), *membership == MembershipState::Join);
            targets.push(user.server_name().to_owned());
        }
        let mut servers: Vec<OwnedServerName> = joined
            .into_iter()
            .filter(|(_, j)| *j)
            .map(|(u, _)| u.server_name().to_owned())
            .collect();
        servers.extend(targets);
        servers.sort();
        servers.dedup();
        let own = self.core.server_name();
        servers.retain(|s| s != own);
        Ok(servers)
    }

    fn destinations(
        &self,
        room_id: &RoomId,
        built: &[Built],
        member_writes: &[Vec<(OwnedUserId, MembershipState, OwnedEventId)>],
    ) -> Result<Vec<Vec<OwnedServerName>>> {
        let unchanged = member_writes.iter().all(Vec::is_empty);
        if !unchanged {
            // Memberships change with this batch: the room's servers are read again after it.
            self.room_servers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(room_id);
        }
        if !self.core.config.federates() || built.iter().all(|b| b.forward == Forward::No) {
            return Ok(Vec::new());
        }
        let cached = self
            .room_servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(room_id)
            .filter(|_| unchanged)
            .cloned();
        let servers = match cached {
            Some(servers) => servers,
            None => {
                let servers = self.servers_after(room_id, member_writes)?;
                if unchanged {
                    let mut cache = self.room_servers.lock().unwrap_or_else(|p| p.into_inner());
                    if cache.len() >= super::MAX_CACHED_ROOMS {
                        cache.clear();
                    }
                    cache.insert(room_id.to_owned(), servers.clone());
                }
                servers
            }
        };
        Ok(built
            .iter()
            .map(|b| match &b.forward {
                Forward::No => Vec::new(),
                Forward::ToRoomBut(except) => servers
                    .iter()
                    .filter(|s| Some(*s) != except.as_ref())
                    .cloned()
                    .collect(),
            })
            .collect())
    }
}

/// The user a membership event is about.
fn member_target(pdu: &Pdu) -> Option<OwnedUserId> {
    if pdu.kind != TimelineEventType::RoomMember {
        return None;
    }
    pdu.state_key.as_deref().and_then(|s| UserId::parse(s).ok())
}

/// Converts client JSON into canonical JSON, refusing floats and out-of-range integers.
pub fn to_canonical(value: &JsonValue) -> Result<CanonicalJsonValue> {
    CanonicalJsonValue::try_from(value.clone())
        .map_err(|e| Error::bad_json(format!("content is not canonical JSON: {e}")))
}

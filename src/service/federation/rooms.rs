//! Rooms shared with other servers: checking the events they send (format, size, the
//! signatures of every server that must sign, content hashes), joining a room through
//! another server (`make_join`, `send_join`), letting another server's user join through this
//! one, and taking the events of `/send` transactions. Every event then enters the room
//! through the timeline's one append path ([`Timeline::admit`]).

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, OwnedServerName,
    RoomId, RoomVersionId, ServerName, UserId,
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        event::{get_event, get_missing_events, get_room_state},
        membership::{
            RawStrippedState, create_invite, create_join_event, create_knock_event,
            create_leave_event, prepare_join_event, prepare_knock_event, prepare_leave_event,
        },
    },
    events::room::member::MembershipState,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    signatures::{PublicKeyMap, PublicKeySet, Verified},
    state_res,
};
use serde_json::{Value as JsonValue, value::RawValue as RawJsonValue};

use super::{Federation, acl_allows, remote_error};
use crate::{
    error::{Error, Result},
    service::{
        core::{Core, now_ms, random_token},
        presence::Presence,
        timeline::{
            Timeline,
            append::{Forward, MAX_PDU_BYTES},
            remote::{Admitted, RemotePdu},
            rules_for,
            state::StateMap,
        },
        users::Users,
    },
    store::StoredEvent,
};

/// Most stripped state events kept with an invite from another server.
const MAX_STRIPPED_STATE: usize = 20;

/// Most events of history a server fetches when it joins a room (so the newcomer reads what
/// came before them); older history is not fetched.
pub const JOIN_HISTORY: u64 = 50;

/// Most servers a join tries, in order, before it gives up.
const MAX_JOIN_SERVERS: usize = 5;

/// Most missing events asked for before an event whose prev events are unknown.
const MAX_MISSING_EVENTS: u64 = 20;

/// The room state another server answered `send_join` with, as it goes back to it.
pub struct JoinAnswer {
    pub state: Vec<StoredEvent>,
    pub auth_chain: Vec<StoredEvent>,
    /// The join as this server signed it too (a restricted room's join it authorised).
    pub countersigned: Option<StoredEvent>,
}

/// Rooms shared with other servers. Depends on [`Users`], [`Federation`] and [`Timeline`].
pub struct FederatedRooms {
    core: Arc<Core>,
    users: Arc<Users>,
    federation: Arc<Federation>,
    timeline: Arc<Timeline>,
}

impl FederatedRooms {
    pub fn new(
        core: Arc<Core>,
        users: Arc<Users>,
        federation: Arc<Federation>,
        timeline: Arc<Timeline>,
    ) -> Self {
        Self {
            core,
            users,
            federation,
            timeline,
        }
    }

    /// The room another server's alias points at, and servers that can join it.
    pub async fn resolve_remote_alias(
        &self,
        alias: &ruma::RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        self.federation.remote_alias(alias).await
    }

    /// Checks an event another server sent for a room of version `version`: the spec's
    /// format and size limits, the signature of every server that must sign it (their keys
    /// fetched as needed), and its content hash: an event whose hash does not match is kept
    /// redacted, as the spec says. Returns its ID and the object to keep.
    pub async fn verify_pdu(
        &self,
        version: &RoomVersionId,
        raw: &RawJsonValue,
    ) -> Result<RemotePdu> {
        self.verify_object(version, parse_pdu(raw)?).await
    }

    /// [`FederatedRooms::verify_pdu`] of an event already read.
    pub async fn verify_object(
        &self,
        version: &RoomVersionId,
        obj: CanonicalJsonObject,
    ) -> Result<RemotePdu> {
        let rules = rules_for(version)?;
        state_res::check_pdu_format(&obj, &rules.event_format).map_err(Error::bad_json)?;
        let event_id = id_of(&rules, &obj)?;
        let servers =
            ruma::signatures::required_server_signatures_to_verify_event(&obj, &rules.signatures)
                .map_err(|e| Error::bad_json(e.to_string()))?;
        let ts = match obj.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(n)) => u64::try_from(i64::from(*n)).unwrap_or(0),
            _ => 0,
        };
        let mut keys = PublicKeyMap::new();
        for server in servers {
            let Some(CanonicalJsonValue::Object(signatures)) = obj
                .get("signatures")
                .and_then(|s| s.as_object())
                .and_then(|s| s.get(server.as_str()))
            else {
                return Err(Error::forbidden(format!(
                    "The event is not signed by {server}"
                )));
            };
            let mut set = PublicKeySet::new();
            for key_id in signatures.keys() {
                if let Ok(key) = self.federation.verify_key(&server, key_id, ts).await {
                    set.insert(key_id.clone(), key);
                }
            }
            keys.insert(server.to_string(), set);
        }
        let obj = match ruma::signatures::verify_event(&keys, &obj, &rules) {
            Ok(Verified::All) => obj,
            Ok(Verified::Signatures) => {
                tracing::info!(
                    "federation: {event_id}'s content hash does not match; kept redacted"
                );
                ruma::canonical_json::redact(obj, &rules.redaction, None)
                    .map_err(|e| Error::bad_json(e.to_string()))?
            }
            Err(e) => {
                return Err(Error::forbidden(format!(
                    "The event's signatures do not verify: {e}"
                )));
            }
        };
        Ok((event_id, obj))
    }

    /// Joins `user` to a room this server is not in, through the first of `via` that lets
    /// them (`make_join`, then `send_join` with the signed event): the room's state and
    /// auth chain are checked and kept, and the join enters the timeline. `content` is the
    /// member event's content (display name and avatar).
    pub async fn join_remote(
        &self,
        user: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
        content: JsonValue,
    ) -> Result<()> {
        self.through_servers(via, "join", room_id, |server| {
            self.join_through(server, user, room_id, &content)
        })
        .await
    }

    /// Tries `attempt` with each of `via` (not this server, at most [`MAX_JOIN_SERVERS`]) in
    /// order until one works; else the last error.
    async fn through_servers<'a, F, Fut>(
        &self,
        via: &'a [OwnedServerName],
        what: &str,
        room_id: &RoomId,
        attempt: F,
    ) -> Result<()>
    where
        F: Fn(&'a ServerName) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let own = self.core.server_name();
        let mut last = Error::not_found(format!("No server to {what} the room through"));
        for server in via.iter().filter(|s| *s != own).take(MAX_JOIN_SERVERS) {
            match attempt(server).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!("federation: {what} {room_id} through {server} failed: {e:?}");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Knocks on a room this server is not in, through the first of `via` that lets
    /// `user`: `make_knock`, then `send_knock`. The knock is kept with the room's stripped
    /// state the server answered, so the user's clients show what they knocked on.
    pub async fn knock_remote(
        &self,
        user: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
        content: JsonValue,
    ) -> Result<()> {
        self.through_servers(via, "knock on", room_id, |server| async {
            let mut ask =
                prepare_knock_event::v1::Request::new(room_id.to_owned(), user.to_owned());
            ask.ver = crate::config::SUPPORTED_ROOM_VERSIONS.to_vec();
            let template = self
                .federation
                .client
                .send(server, ask)
                .await
                .map_err(|e| remote_error(e, "The room is not known there"))?;
            let version = template.room_version;
            let (event_id, obj) =
                self.sign_template(server, user, room_id, &version, &template.event, &content)?;
            let pdu = serde_json::value::to_raw_value(&obj)?;
            let answer = self
                .federation
                .client
                .send(
                    server,
                    create_knock_event::v1::Request::new(room_id.to_owned(), event_id.clone(), pdu),
                )
                .await
                .map_err(|e| remote_error(e, "The room is not known there"))?;
            let stripped: Vec<JsonValue> = answer
                .knock_room_state
                .iter()
                .take(MAX_STRIPPED_STATE)
                .filter_map(stripped_event)
                .collect();
            self.timeline
                .admit_outside_membership(room_id, &version, (event_id, obj), stripped)
                .await
        })
        .await
    }

    /// The room's state a knock or an invite shows (as full PDUs): what it is and who asks.
    pub fn shown_state(&self, room_id: &RoomId, sender: &str) -> Result<Vec<RawStrippedState>> {
        let mut shown = Vec::new();
        for (ty, key) in crate::service::timeline::state::STRIPPED_STATE
            .iter()
            .map(|t| (t.to_string(), ""))
            .chain([("m.room.member".to_owned(), sender)])
        {
            if let Some(ev) = self
                .timeline
                .state_event(room_id, &ty.as_str().into(), key)?
            {
                shown.push(RawStrippedState::Pdu(serde_json::value::to_raw_value(
                    &ev.pdu,
                )?));
            }
        }
        Ok(shown)
    }

    async fn join_through(
        &self,
        server: &ServerName,
        user: &UserId,
        room_id: &RoomId,
        content: &JsonValue,
    ) -> Result<()> {
        let mut ask = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        ask.ver = crate::config::SUPPORTED_ROOM_VERSIONS.to_vec();
        let template = self
            .federation
            .client
            .send(server, ask)
            .await
            .map_err(|e| remote_error(e, "The room is not known there"))?;
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        let (event_id, obj) =
            self.sign_template(server, user, room_id, &version, &template.event, content)?;
        let pdu = serde_json::value::to_raw_value(&obj)?;
        let answer = self
            .federation
            .client
            .send(
                server,
                create_join_event::v2::Request::new(room_id.to_owned(), event_id.clone(), pdu),
            )
            .await
            .map_err(|e| remote_error(e, "The room is not known there"))?;
        let room_state = answer.room_state;
        // The resident server's countersigned copy, for restricted rooms.
        let join_obj = match &room_state.event {
            Some(raw) => {
                let (id, signed) = self.verify_pdu(&version, raw).await?;
                if id != event_id {
                    return Err(Error::bad_json(format!(
                        "{server} answered another join event"
                    )));
                }
                signed
            }
            None => obj,
        };
        let mut state = Vec::with_capacity(room_state.state.len());
        for raw in &room_state.state {
            match self.verify_pdu(&version, raw).await {
                Ok(ev) => state.push(ev),
                Err(e) => tracing::info!("federation: a state event of {room_id} left out: {e:?}"),
            }
        }
        let mut auth_chain: Vec<RemotePdu> = Vec::with_capacity(room_state.auth_chain.len());
        for raw in &room_state.auth_chain {
            match self.verify_pdu(&version, raw).await {
                Ok(ev) => auth_chain.push(ev),
                Err(e) => tracing::info!("federation: an auth event of {room_id} left out: {e:?}"),
            }
        }
        let prev_events =
            crate::service::timeline::Pdu::from_object(event_id.clone(), &join_obj)?.prev_events;
        let known: HashSet<OwnedEventId> = state
            .iter()
            .chain(&auth_chain)
            .map(|(id, _)| id.clone())
            .collect();
        let (history, more_auth) = self
            .fetch_history(server, room_id, &version, prev_events, &known)
            .await;
        auth_chain.extend(more_auth);
        self.timeline
            .admit_joined_room(
                room_id,
                &version,
                state,
                auth_chain,
                history,
                (event_id, join_obj),
            )
            .await
    }

    /// Recent history of a room just joined, so the newcomer reads what came before them:
    /// up to [`JOIN_HISTORY`] events before `prev_events`, asked of `server` (`/backfill`),
    /// oldest first, and the auth events they name that are not `known` (asked one by one,
    /// at most as many). Best effort: what cannot be had or checked is left out.
    async fn fetch_history(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        prev_events: Vec<OwnedEventId>,
        known: &HashSet<OwnedEventId>,
    ) -> (Vec<RemotePdu>, Vec<RemotePdu>) {
        let ask = get_backfill::v1::Request::new(
            room_id.to_owned(),
            prev_events,
            JOIN_HISTORY.try_into().unwrap_or_default(),
        );
        let answer = match self.federation.client.send(server, ask).await {
            Ok(a) => a,
            Err(e) => {
                tracing::info!("federation: no history of {room_id} from {server}: {e}");
                return (Vec::new(), Vec::new());
            }
        };
        let mut history = Vec::new();
        for raw in answer.pdus.iter().take(JOIN_HISTORY as usize) {
            if let Ok(ev) = self.verify_pdu(version, raw).await {
                history.push((depth_of(&ev.1), ev));
            }
        }
        history.sort_by_key(|(depth, _)| *depth);
        let history: Vec<RemotePdu> = history.into_iter().map(|(_, ev)| ev).collect();
        let have: HashSet<&OwnedEventId> = history.iter().map(|(id, _)| id).chain(known).collect();
        let mut missing: Vec<OwnedEventId> = Vec::new();
        for (id, obj) in &history {
            if let Ok(pdu) = crate::service::timeline::Pdu::from_object(id.clone(), obj) {
                for a in pdu.auth_events {
                    if !have.contains(&a) && !missing.contains(&a) {
                        missing.push(a);
                    }
                }
            }
        }
        let mut auth = Vec::new();
        for id in missing.into_iter().take(JOIN_HISTORY as usize) {
            let Ok(answer) = self
                .federation
                .client
                .send(server, get_event::v1::Request::new(id.clone()))
                .await
            else {
                continue;
            };
            if let Ok(ev) = self.verify_pdu(version, &answer.pdu).await
                && ev.0 == id
            {
                auth.push(ev);
            }
        }
        (history, auth)
    }

    /// The member event template another server handed out (`make_join`, `make_leave`),
    /// checked to be `user`'s own in `room_id`, with `content` (its `membership` kept), hashed
    /// and signed by this server: its ID and the event.
    fn sign_template(
        &self,
        server: &ServerName,
        user: &UserId,
        room_id: &RoomId,
        version: &RoomVersionId,
        template: &RawJsonValue,
        content: &JsonValue,
    ) -> Result<RemotePdu> {
        let rules = rules_for(version)
            .map_err(|_| Error::bad_json(format!("Room version {version} is not supported")))?;
        let mut obj: CanonicalJsonObject = serde_json::from_str(template.get())
            .map_err(|e| Error::bad_json(format!("{server} answered an unusable template: {e}")))?;
        let is_join = obj.get("type").and_then(|v| v.as_str()) == Some("m.room.member")
            && obj.get("state_key").and_then(|v| v.as_str()) == Some(user.as_str())
            && obj.get("sender").and_then(|v| v.as_str()) == Some(user.as_str())
            && obj.get("room_id").and_then(|v| v.as_str()) == Some(room_id.as_str());
        if !is_join {
            return Err(Error::bad_json(format!(
                "{server} answered a template that is not this user's join"
            )));
        }
        let membership = obj
            .get("content")
            .and_then(|c| c.as_object())
            .and_then(|c| c.get("membership"))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::bad_json(format!("{server} answered a template without membership"))
            })?;
        let mut content = content.clone();
        content["membership"] = membership.into();
        // A restricted room's template names who authorises the join.
        if let Some(via) = obj
            .get("content")
            .and_then(|c| c.as_object())
            .and_then(|c| c.get("join_authorised_via_users_server"))
        {
            content["join_authorised_via_users_server"] = JsonValue::from(via.clone());
        }
        obj.insert("content".into(), to_canonical(content)?);
        obj.insert(
            "origin".into(),
            CanonicalJsonValue::String(self.core.server_name().to_string()),
        );
        obj.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(
                i64::try_from(now_ms())
                    .unwrap_or(0)
                    .try_into()
                    .map_err(Error::internal)?,
            ),
        );
        obj.remove("event_id");
        obj.remove("hashes");
        obj.remove("signatures");
        obj.remove("unsigned");
        if rules.event_id_format == EventIdFormatVersion::V1 {
            let id = format!("${}:{}", random_token(12), self.core.server_name());
            obj.insert("event_id".into(), CanonicalJsonValue::String(id));
        }
        ruma::signatures::hash_and_sign_event(
            self.core.server_name().as_str(),
            &self.core.signing_key,
            &mut obj,
            &rules.redaction,
        )
        .map_err(|e| Error::bad_json(format!("cannot sign the join: {e}")))?;
        let event_id = id_of(&rules, &obj)?;
        Ok((event_id, obj))
    }

    /// `send_join`: another server's user joins a room of this server with the event they
    /// signed (from `make_join`). It is checked like any event, must be that user's own join
    /// under the ID the request names, and goes out to the other servers in the room. Answers
    /// the room's state before the join and its auth chain.
    pub async fn accept_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        raw: &RawJsonValue,
    ) -> Result<JoinAnswer> {
        let join = self
            .accept_membership(origin, room_id, event_id, raw, "join")
            .await?;
        let state_ids = self.timeline.state_before(&join)?;
        let mut state = Vec::with_capacity(state_ids.len());
        for state_id in state_ids.values() {
            if let Some(ev) = self.timeline.event(state_id)? {
                state.push(ev);
            }
        }
        let mut chain_of: Vec<OwnedEventId> = state_ids.into_values().collect();
        chain_of.push(join.event_id.clone());
        let auth_chain = self.timeline.auth_chain(chain_of)?;
        let own = self.core.server_name().as_str();
        let signed_here = join
            .pdu
            .get("signatures")
            .and_then(|s| s.as_object())
            .is_some_and(|s| s.contains_key(own));
        Ok(JoinAnswer {
            state,
            auth_chain,
            countersigned: signed_here.then_some(join),
        })
    }

    /// `send_join` and `send_leave`: the asking server's user's own member event with this
    /// `membership`, under the ID the request names, checked like any event and sent on to
    /// the other servers in the room. Returns it as kept.
    pub async fn accept_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        raw: &RawJsonValue,
        wanted: &str,
    ) -> Result<StoredEvent> {
        let record = self.timeline.known_room(room_id)?;
        self.check_acl(room_id, origin)?;
        let mut obj = parse_pdu(raw)?;
        // A join to a restricted room that a user of this server authorises: this server
        // signs it too (its signature is required), and answers the signed copy.
        let authoriser = obj
            .get("content")
            .and_then(|c| c.as_object())
            .and_then(|c| c.get("join_authorised_via_users_server"))
            .and_then(|v| v.as_str())
            .and_then(|u| UserId::parse(u).ok());
        if wanted == "join"
            && authoriser
                .as_ref()
                .is_some_and(|u| u.server_name() == self.core.server_name())
        {
            let rules = rules_for(&record.version)?;
            ruma::signatures::hash_and_sign_event(
                self.core.server_name().as_str(),
                &self.core.signing_key,
                &mut obj,
                &rules.redaction,
            )
            .map_err(|e| Error::bad_json(format!("cannot sign the join: {e}")))?;
        }
        let (id, obj) = self.verify_object(&record.version, obj).await?;
        let field = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let membership = obj
            .get("content")
            .and_then(|c| c.as_object())
            .and_then(|c| c.get("membership"))
            .and_then(|m| m.as_str());
        let sender = field("sender").unwrap_or_default();
        let sender_server = UserId::parse(&sender)
            .map(|u| u.server_name().to_owned())
            .ok();
        if id != event_id
            || field("type").as_deref() != Some("m.room.member")
            || membership != Some(wanted)
            || field("state_key").as_deref() != Some(sender.as_str())
            || field("room_id").as_deref() != Some(room_id.as_str())
            || sender_server.as_deref() != Some(origin)
        {
            return Err(Error::bad_json(
                "The event is not the asking server's user's own member event under this ID",
            ));
        }
        match self
            .timeline
            .admit(
                room_id,
                (id.clone(), obj),
                Forward::ToRoomBut(Some(origin.to_owned())),
            )
            .await?
        {
            Admitted::SoftFailed => {
                return Err(Error::forbidden(
                    "The event is not allowed by the room's state",
                ));
            }
            Admitted::Timeline | Admitted::Known => {}
        }
        self.timeline
            .event(&id)?
            .ok_or_else(|| Error::internal("the event was just kept"))
    }

    /// Invites another server's user: their server gets the event (and the room's state
    /// that shows what the room is) and countersigns it. Returns the countersigned event.
    pub async fn invite_remote(
        &self,
        room_id: &RoomId,
        version: RoomVersionId,
        event_id: OwnedEventId,
        obj: CanonicalJsonObject,
    ) -> Result<CanonicalJsonObject> {
        let target = obj
            .get("state_key")
            .and_then(|v| v.as_str())
            .and_then(|u| UserId::parse(u).ok())
            .ok_or_else(|| Error::bad_json("An invite names its user"))?;
        let sender = obj
            .get("sender")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let shown = self.shown_state(room_id, sender)?;
        let rules = rules_for(&version)?;
        let request = create_invite::v2::Request::new(
            room_id.to_owned(),
            event_id.clone(),
            version,
            serde_json::value::to_raw_value(&obj)?,
            shown,
        );
        let answer = self
            .federation
            .client
            .send(target.server_name(), request)
            .await
            .map_err(|e| remote_error(e, "The user's server does not know them"))?;
        let signed: CanonicalJsonObject = serde_json::from_str(answer.event.get())
            .map_err(|e| Error::bad_json(format!("The invited server answered: {e}")))?;
        if id_of(&rules, &signed)? != event_id {
            return Err(Error::bad_json("The invited server answered another event"));
        }
        Ok(signed)
    }

    /// `/invite` from another server: a local user is invited to one of its rooms. The event
    /// is checked, countersigned, and kept (with the room's stripped state) so the user sees
    /// the invite. Returns the countersigned event.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        version: &RoomVersionId,
        raw: &RawJsonValue,
        shown: &[RawStrippedState],
    ) -> Result<CanonicalJsonObject> {
        if !crate::config::SUPPORTED_ROOM_VERSIONS.contains(version) {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::IncompatibleRoomVersion(
                    ruma::api::error::IncompatibleRoomVersionErrorData::new(version.clone()),
                ),
                "This server does not support the room's version",
            ));
        }
        if self.timeline.room(room_id)?.is_some() {
            self.check_acl(room_id, origin)?;
        }
        let (id, mut obj) = self.verify_pdu(version, raw).await?;
        let field = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let membership = obj
            .get("content")
            .and_then(|c| c.as_object())
            .and_then(|c| c.get("membership"))
            .and_then(|m| m.as_str());
        let sender_server = field("sender")
            .and_then(|s| UserId::parse(s).ok())
            .map(|u| u.server_name().to_owned());
        if id != event_id
            || field("type").as_deref() != Some("m.room.member")
            || membership != Some("invite")
            || field("room_id").as_deref() != Some(room_id.as_str())
            || sender_server.as_deref() != Some(origin)
        {
            return Err(Error::bad_json(
                "The event is not an invite by the asking server's user under this ID",
            ));
        }
        let target = field("state_key")
            .and_then(|u| UserId::parse(u).ok())
            .filter(|u| self.users.is_local(u))
            .ok_or_else(|| Error::bad_json("The invited user is not of this server"))?;
        if self.users.account(&target)?.is_none_or(|a| a.deactivated) {
            return Err(Error::not_found("Unknown user"));
        }
        let rules = rules_for(version)?;
        ruma::signatures::hash_and_sign_event(
            self.core.server_name().as_str(),
            &self.core.signing_key,
            &mut obj,
            &rules.redaction,
        )
        .map_err(|e| Error::bad_json(format!("cannot sign the invite: {e}")))?;
        let stripped: Vec<JsonValue> = shown
            .iter()
            .take(MAX_STRIPPED_STATE)
            .filter_map(stripped_event)
            .collect();
        self.timeline
            .admit_outside_membership(room_id, version, (id, obj.clone()), stripped)
            .await?;
        Ok(obj)
    }

    /// Leaves a room this server is not in (a local user rejects an invite from another
    /// server) through the first of `via` that lets them: `make_leave`, then `send_leave`.
    /// The leave is kept so the user's clients see the invite gone.
    pub async fn leave_remote(
        &self,
        user: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
        content: JsonValue,
    ) -> Result<()> {
        self.through_servers(via, "leave", room_id, |server| async {
            let template = self
                .federation
                .client
                .send(
                    server,
                    prepare_leave_event::v1::Request::new(room_id.to_owned(), user.to_owned()),
                )
                .await
                .map_err(|e| remote_error(e, "The room is not known there"))?;
            let version = template.room_version.unwrap_or(RoomVersionId::V1);
            let (event_id, obj) =
                self.sign_template(server, user, room_id, &version, &template.event, &content)?;
            let pdu = serde_json::value::to_raw_value(&obj)?;
            self.federation
                .client
                .send(
                    server,
                    create_leave_event::v2::Request::new(room_id.to_owned(), event_id.clone(), pdu),
                )
                .await
                .map_err(|e| remote_error(e, "The room is not known there"))?;
            self.timeline
                .admit_outside_membership(room_id, &version, (event_id, obj), Vec::new())
                .await
        })
        .await
    }

    /// The PDUs of a `/send` transaction from `origin`: each checked and admitted, after the
    /// events it follows that this server lacks (asked of `origin`, at most
    /// [`MAX_MISSING_EVENTS`]). Per event, its outcome (an error message when refused).
    /// Events of rooms this server is not in are ignored.
    pub async fn receive_pdus(
        &self,
        origin: &ServerName,
        pdus: &[Box<RawJsonValue>],
    ) -> BTreeMap<OwnedEventId, std::result::Result<(), String>> {
        let mut out = BTreeMap::new();
        for raw in pdus {
            #[derive(serde::Deserialize)]
            struct RoomOf {
                room_id: OwnedRoomId,
            }
            let Ok(RoomOf { room_id }) = serde_json::from_str::<RoomOf>(raw.get()) else {
                continue;
            };
            let Ok(Some(record)) = self.timeline.room(&room_id) else {
                continue;
            };
            let outcome = async {
                self.check_acl(&room_id, origin)?;
                let pdu = self.verify_pdu(&record.version, raw).await?;
                self.fetch_missing(origin, &room_id, &record.version, &pdu)
                    .await;
                self.fetch_auth_events(origin, &room_id, &record.version, &pdu)
                    .await;
                let state = self
                    .fetch_state_for_gap(origin, &room_id, &record.version, &pdu)
                    .await;
                let id = pdu.0.clone();
                self.timeline
                    .admit_with_state(&room_id, pdu, Forward::No, state)
                    .await?;
                Ok::<_, Error>(id)
            }
            .await;
            match outcome {
                Ok(id) => {
                    out.insert(id, Ok(()));
                }
                Err(e) => {
                    tracing::info!("federation: a PDU from {origin} refused: {e:?}");
                    if let Ok(id) = event_id_of(&record.version, raw) {
                        out.insert(id, Err(e.to_string()));
                    }
                }
            }
        }
        out
    }

    /// Asks `origin` for the events between the room's forward extremities and `pdu` that
    /// this server lacks, and admits them oldest first. Best effort: what cannot be had is
    /// passed over (the event then counts its unknown prev events as the current state).
    async fn fetch_missing(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        (event_id, obj): &RemotePdu,
    ) {
        let Ok(pdu) = crate::service::timeline::Pdu::from_object(event_id.clone(), obj) else {
            return;
        };
        let missing = pdu
            .prev_events
            .iter()
            .any(|id| self.timeline.event(id).ok().flatten().is_none());
        if !missing {
            return;
        }
        let Ok(Some(record)) = self.timeline.room(room_id) else {
            return;
        };
        let mut ask = get_missing_events::v1::Request::new(
            room_id.to_owned(),
            record.extremities.clone(),
            vec![event_id.clone()],
        );
        ask.limit = MAX_MISSING_EVENTS.try_into().unwrap_or_default();
        let answer = match self.federation.client.send(origin, ask).await {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(
                    "federation: {origin} did not give the events before {event_id}: {e}"
                );
                return;
            }
        };
        // Oldest first, by depth.
        let mut events = Vec::new();
        for raw in answer.events.iter().take(MAX_MISSING_EVENTS as usize) {
            if let Ok(ev) = self.verify_pdu(version, raw).await {
                events.push((depth_of(&ev.1), ev));
            }
        }
        events.sort_by_key(|(depth, _)| *depth);
        for (_, ev) in events {
            // The oldest of them may still follow a gap: its state comes from `origin`.
            let state = self
                .fetch_state_for_gap(origin, room_id, version, &ev)
                .await;
            if let Err(e) = self
                .timeline
                .admit_with_state(room_id, ev, Forward::No, state)
                .await
            {
                tracing::info!("federation: a missing event of {room_id} refused: {e:?}");
            }
        }
    }

    /// The other servers with a member joined to a room `user` is joined to.
    pub fn servers_sharing_rooms(&self, user: &UserId) -> Result<Vec<OwnedServerName>> {
        let mut out = Vec::new();
        for room in self
            .timeline
            .rooms_with_membership(user, &[MembershipState::Join])?
        {
            out.extend(self.servers_in_room(&room)?);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Starts telling other servers what changes of local users they need to know of: device
    /// list changes (`m.device_list_update`, queued: encryption depends on them) and presence
    /// (`m.presence`, sent at once), to the servers sharing a room with the user. Read from the
    /// stream as it advances.
    pub fn start_announcer(self: &Arc<Self>, presence: Arc<Presence>) {
        if !self.core.config.federates() {
            return;
        }
        let this = Arc::downgrade(self);
        let mut rx = self.core.subscribe();
        let mut last = *rx.borrow();
        self.core.spawn_task(async move {
            while rx.changed().await.is_ok() {
                let now = *rx.borrow_and_update();
                let Some(this) = this.upgrade() else {
                    return;
                };
                if let Err(e) = this.announce(&presence, last, now).await {
                    tracing::warn!("federation: announcing changes failed: {e:?}");
                }
                last = now;
            }
        });
    }

    async fn announce(&self, presence: &Presence, since: u64, upto: u64) -> Result<()> {
        let entries: Vec<(u64, crate::store::StreamEntry)> = self
            .core
            .stream_entries(since, upto)
            .collect::<Result<_>>()?;
        for (pos, entry) in entries {
            if let Some(user) = entry.keys.filter(|u| self.users.is_local(u)) {
                let device = self.users.devices(&user)?.into_iter().next();
                let edu = serde_json::json!({
                    "edu_type": "m.device_list_update",
                    "content": {
                        "user_id": user,
                        "device_id": device.map(|(id, _)| id.to_string()).unwrap_or_default(),
                        "stream_id": pos,
                        "prev_id": [],
                    },
                });
                for server in self.servers_sharing_rooms(&user)? {
                    self.federation.queue_edu(&server, edu.clone()).await?;
                }
            }
            if let Some(user) = entry.presence.filter(|u| self.users.is_local(u))
                && let Some(event) = presence.event(&user)?
            {
                let mut update = event["content"].clone();
                update["user_id"] = user.as_str().into();
                let edu = serde_json::json!({
                    "edu_type": "m.presence",
                    "content": { "push": [update] },
                });
                for server in self.servers_sharing_rooms(&user)? {
                    self.federation.send_edu_now(&server, edu.clone());
                }
            }
        }
        Ok(())
    }

    /// Whether another server's user shares a room with this server's users (what its EDUs
    /// about them must do to be taken).
    pub fn shares_a_room(&self, user: &UserId) -> Result<bool> {
        Ok(!self
            .timeline
            .rooms_with_membership(user, &[MembershipState::Join])?
            .is_empty())
    }

    /// The other servers with a member joined to the room.
    pub fn servers_in_room(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        let own = self.core.server_name();
        let mut servers: Vec<OwnedServerName> = self
            .timeline
            .joined_members(room_id)?
            .into_iter()
            .map(|u| u.server_name().to_owned())
            .filter(|s| s != own)
            .collect();
        servers.sort();
        servers.dedup();
        Ok(servers)
    }

    /// Tells the other servers in the room that a local user is typing (or stopped): at once
    /// and not kept (a typing notice is worth nothing later).
    pub async fn send_typing(
        &self,
        room_id: &RoomId,
        user: &UserId,
        timeout: Option<std::time::Duration>,
    ) -> Result<()> {
        if !self.core.config.federates() {
            return Ok(());
        }
        let mut content = serde_json::json!({
            "room_id": room_id,
            "user_id": user,
            "typing": timeout.is_some(),
        });
        if let Some(t) = timeout {
            content["timeout"] = u64::try_from(t.as_millis()).unwrap_or(u64::MAX).into();
        }
        let edu = serde_json::json!({ "edu_type": "m.typing", "content": content });
        for server in self.servers_in_room(room_id)? {
            self.federation.send_edu_now(&server, edu.clone());
        }
        Ok(())
    }

    /// Queues a local user's public read receipt for the other servers in the room.
    pub async fn send_receipt(
        &self,
        room_id: &RoomId,
        user: &UserId,
        event_id: &EventId,
        thread_id: Option<String>,
    ) -> Result<()> {
        if !self.core.config.federates() {
            return Ok(());
        }
        let mut data = serde_json::json!({ "ts": now_ms() });
        if let Some(thread) = thread_id {
            data["thread_id"] = thread.into();
        }
        let edu = serde_json::json!({
            "edu_type": "m.receipt",
            "content": { room_id.as_str(): { "m.read": { user.as_str(): {
                "event_ids": [event_id],
                "data": data,
            } } } },
        });
        for server in self.servers_in_room(room_id)? {
            self.federation.queue_edu(&server, edu.clone()).await?;
        }
        Ok(())
    }

    /// When an event names auth events this server lacks: asks `origin` for the event's auth
    /// chain (`/event_auth`) and keeps what checks out, so the event can be judged.
    async fn fetch_auth_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        (event_id, obj): &RemotePdu,
    ) {
        let Ok(pdu) = crate::service::timeline::Pdu::from_object(event_id.clone(), obj) else {
            return;
        };
        let unknown = |id: &OwnedEventId| self.timeline.event(id).ok().flatten().is_none();
        if !pdu.auth_events.iter().any(unknown) {
            return;
        }
        let ask = get_event_authorization::v1::Request::new(room_id.to_owned(), event_id.clone());
        let chain = match self.federation.client.send(origin, ask).await {
            Ok(answer) => answer.auth_chain,
            Err(e) => {
                tracing::info!("federation: no auth chain of {event_id} from {origin}: {e}");
                return;
            }
        };
        self.keep_outliers(room_id, version, &chain).await;
    }

    /// When an event follows events this server lacks even after `/get_missing_events` (a
    /// gap): asks `origin` for the room's state before it (`/state`), keeps those events and
    /// their auth chain (checked), and returns that state for judging the event.
    async fn fetch_state_for_gap(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        (event_id, obj): &RemotePdu,
    ) -> Option<StateMap> {
        let pdu = crate::service::timeline::Pdu::from_object(event_id.clone(), obj).ok()?;
        let gap = pdu
            .prev_events
            .iter()
            .any(|id| self.timeline.event(id).ok().flatten().is_none());
        if !gap {
            return None;
        }
        let ask = get_room_state::v1::Request::new(event_id.clone(), room_id.to_owned());
        let answer = match self.federation.client.send(origin, ask).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::info!("federation: no state before {event_id} from {origin}: {e}");
                return None;
            }
        };
        let mut all = answer.auth_chain;
        all.extend(answer.pdus.iter().cloned());
        self.keep_outliers(room_id, version, &all).await;
        let mut state = StateMap::new();
        for raw in &answer.pdus {
            let Ok(id) = event_id_of(version, raw) else {
                continue;
            };
            if let Ok(Some(ev)) = self.timeline.event(&id)
                && ev.room_id == room_id
                && let Some(sk) = ev.state_key()
            {
                state.insert((ev.kind(), sk.to_owned()), id);
            }
        }
        Some(state)
    }

    /// Checks events another server sent for the DAG (signatures, hashes) and keeps those
    /// that pass as outliers (each also checked against its auth events).
    async fn keep_outliers(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        raws: &[Box<RawJsonValue>],
    ) {
        let mut events = Vec::new();
        for raw in raws
            .iter()
            .take(crate::service::timeline::remote::MAX_AUTH_CHAIN)
        {
            if let Ok(ev) = self.verify_pdu(version, raw).await {
                events.push(ev);
            }
        }
        if let Err(e) = self.timeline.admit_outliers(room_id, events).await {
            tracing::info!("federation: events of {room_id} not kept: {e:?}");
        }
    }

    /// 403 when the room's server ACL leaves `server` out.
    pub fn check_acl(&self, room_id: &RoomId, server: &ServerName) -> Result<()> {
        let acl = self.timeline.state_content(
            room_id,
            &ruma::events::StateEventType::RoomServerAcl,
            "",
        )?;
        if acl_allows(acl.as_ref(), server) {
            Ok(())
        } else {
            Err(Error::forbidden(
                "The room's server ACL does not allow your server",
            ))
        }
    }
}

/// A stripped state event (type, state key, content, sender) of what another server sent
/// with an invite: a full PDU or (before Matrix 1.16) a stripped event.
fn stripped_event(shown: &RawStrippedState) -> Option<JsonValue> {
    #[allow(deprecated)]
    let raw = match shown {
        RawStrippedState::Pdu(raw) => raw.get(),
        RawStrippedState::Stripped(raw) => raw.json().get(),
        _ => return None,
    };
    let v: JsonValue = serde_json::from_str(raw).ok()?;
    let mut out = serde_json::Map::new();
    for field in ["type", "state_key", "content", "sender"] {
        out.insert(field.into(), v.get(field)?.clone());
    }
    Some(JsonValue::Object(out))
}

/// An event another server sent, read as canonical JSON: refused past the spec's size limit.
fn parse_pdu(raw: &RawJsonValue) -> Result<CanonicalJsonObject> {
    if raw.get().len() > MAX_PDU_BYTES {
        return Err(Error::bad_json(format!(
            "Events are at most {MAX_PDU_BYTES} bytes"
        )));
    }
    serde_json::from_str(raw.get())
        .map_err(|e| Error::bad_json(format!("The event is not canonical JSON: {e}")))
}

/// An event's `depth` (0 when it has none).
fn depth_of(obj: &CanonicalJsonObject) -> i64 {
    match obj.get("depth") {
        Some(CanonicalJsonValue::Integer(n)) => i64::from(*n),
        _ => 0,
    }
}

/// An event's ID as the room version computes it, without checking the event.
fn event_id_of(version: &RoomVersionId, raw: &RawJsonValue) -> Result<OwnedEventId> {
    let obj: CanonicalJsonObject =
        serde_json::from_str(raw.get()).map_err(|e| Error::bad_json(e.to_string()))?;
    id_of(&rules_for(version)?, &obj)
}

/// An event's ID: its reference hash, or (room versions 1 and 2) the ID it carries.
fn id_of(rules: &RoomVersionRules, obj: &CanonicalJsonObject) -> Result<OwnedEventId> {
    let id = match rules.event_id_format {
        EventIdFormatVersion::V1 => obj
            .get("event_id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .unwrap_or_default(),
        _ => format!(
            "${}",
            ruma::signatures::reference_hash(obj, rules)
                .map_err(|e| Error::bad_json(e.to_string()))?
        ),
    };
    OwnedEventId::try_from(id).map_err(|e| Error::bad_json(e.to_string()))
}

fn to_canonical(value: JsonValue) -> Result<CanonicalJsonValue> {
    crate::service::timeline::append::to_canonical(&value)
}

//! Room state (now and at any point of the timeline), memberships and power levels.

use std::collections::BTreeMap;

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
    events::{
        StateEventType,
        room::{
            member::MembershipState,
            power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent},
        },
    },
    room_version_rules::RoomVersionRules,
};
use serde_json::Value as JsonValue;

use super::{Pdu, Timeline};
use crate::{
    error::{Error, Result},
    store::{MEMBERSHIPS, MembershipRecord, ROOM_STATE, STATE_HISTORY, StoredEvent},
};

/// The state events an invite or a knock shows of its room (with the member event of who
/// invites or knocks): enough for a client to show what the room is.
pub const STRIPPED_STATE: &[StateEventType] = &[
    StateEventType::RoomCreate,
    StateEventType::RoomJoinRules,
    StateEventType::RoomName,
    StateEventType::RoomAvatar,
    StateEventType::RoomTopic,
    StateEventType::RoomCanonicalAlias,
    StateEventType::RoomEncryption,
];

/// A room's state: `(type, state_key)` -> event ID.
pub type StateMap = BTreeMap<(String, String), OwnedEventId>;

impl Timeline {
    pub fn state_event_id(
        &self,
        room_id: &RoomId,
        ty: &StateEventType,
        state_key: &str,
    ) -> Result<Option<OwnedEventId>> {
        self.current_state_id(room_id, &ty.to_string(), state_key)
    }

    pub fn state_event(
        &self,
        room_id: &RoomId,
        ty: &StateEventType,
        state_key: &str,
    ) -> Result<Option<StoredEvent>> {
        match self.state_event_id(room_id, ty, state_key)? {
            Some(id) => self.event(&id),
            None => Ok(None),
        }
    }

    /// The content of a current state event.
    pub fn state_content(
        &self,
        room_id: &RoomId,
        ty: &StateEventType,
        state_key: &str,
    ) -> Result<Option<JsonValue>> {
        Ok(self
            .state_event(room_id, ty, state_key)?
            .map(|e| e.content()))
    }

    /// One string field of a current state event's content (`m.room.name`'s `name`, ...).
    pub fn state_str(
        &self,
        room_id: &RoomId,
        ty: StateEventType,
        field: &str,
    ) -> Result<Option<String>> {
        Ok(self
            .state_event(room_id, &ty, "")?
            .and_then(|e| e.content_str(field)))
    }

    /// The current state of a room.
    pub fn current_state(&self, room_id: &RoomId) -> Result<StateMap> {
        let mut map = StateMap::new();
        for item in self.core.store.scan(ROOM_STATE.prefix(room_id)) {
            let ((_, ty, sk), id) = item?;
            map.insert((ty, sk), id);
        }
        Ok(map)
    }

    /// The state of a room just after the event at stream position `pos`.
    pub fn state_at(&self, room_id: &RoomId, pos: u64) -> Result<StateMap> {
        let mut map = StateMap::new();
        for item in self.core.store.scan(STATE_HISTORY.prefix(room_id)) {
            let ((_, ty, sk, at), id) = item?;
            if at <= pos {
                // Entries of one key come in stream order: the last one at or before wins.
                map.insert((ty, sk), id);
            }
        }
        Ok(map)
    }

    /// The value a state key had just after stream position `pos`.
    pub fn state_id_at(
        &self,
        room_id: &RoomId,
        ty: &str,
        state_key: &str,
        pos: u64,
    ) -> Result<Option<OwnedEventId>> {
        let item = self
            .core
            .store
            .range(
                &STATE_HISTORY,
                (room_id, ty, state_key, 0),
                (room_id, ty, state_key, pos.saturating_add(1)),
                true,
            )
            .next()
            .transpose()?;
        Ok(item.map(|(_, id)| id))
    }

    /// Every value a state key has had: `(stream position, event ID)`, oldest first.
    pub fn state_history(
        &self,
        room_id: &RoomId,
        ty: &str,
        state_key: &str,
    ) -> Result<Vec<(u64, OwnedEventId)>> {
        self.core
            .store
            .scan(STATE_HISTORY.prefix3(room_id, ty, state_key))
            .map(|item| Ok(item.map(|((_, _, _, pos), id)| (pos, id))?))
            .collect()
    }

    /// The current state events of one type in a room (`m.space.child`, ...), by state key.
    pub fn state_of_type(&self, room_id: &RoomId, ty: &str) -> Result<Vec<StoredEvent>> {
        let mut out = Vec::new();
        for item in self.core.store.scan(ROOM_STATE.prefix2(room_id, ty)) {
            let (_, id) = item?;
            if let Some(ev) = self.event(&id)? {
                out.push(ev);
            }
        }
        Ok(out)
    }

    /// Members of a room with their membership, from the current state.
    pub fn members(
        &self,
        room_id: &RoomId,
    ) -> Result<Vec<(OwnedUserId, MembershipState, StoredEvent)>> {
        let mut out = Vec::new();
        for item in self
            .core
            .store
            .scan(ROOM_STATE.prefix2(room_id, "m.room.member"))
        {
            let (_, id) = item?;
            if let Some(ev) = self.event(&id)?
                && let Some((user, membership)) = ev.member_change()
            {
                out.push((user, membership, ev));
            }
        }
        Ok(out)
    }

    /// Everyone with a member event in the room and their current membership record, without
    /// reading the member events themselves (the room's state keys and the users'
    /// membership records are enough): what counts, heroes and member lists need.
    pub fn member_records(&self, room_id: &RoomId) -> Result<Vec<(OwnedUserId, MembershipRecord)>> {
        let mut out = Vec::new();
        for item in self
            .core
            .store
            .scan(ROOM_STATE.prefix2(room_id, "m.room.member"))
        {
            let ((_, _, state_key), _) = item?;
            let Ok(user) = OwnedUserId::try_from(state_key) else {
                continue;
            };
            if let Some(record) = self.membership(&user, room_id)? {
                out.push((user, record));
            }
        }
        Ok(out)
    }

    pub fn joined_members(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
        Ok(self
            .member_records(room_id)?
            .into_iter()
            .filter(|(_, m)| m.membership == MembershipState::Join)
            .map(|(u, _)| u)
            .collect())
    }

    pub fn membership(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Option<MembershipRecord>> {
        Ok(self.core.store.get(&MEMBERSHIPS, (user_id, room_id))?)
    }

    /// The user's current membership (`leave` when they never had one).
    pub fn membership_state(&self, user_id: &UserId, room_id: &RoomId) -> Result<MembershipState> {
        Ok(self
            .membership(user_id, room_id)?
            .map(|m| m.membership)
            .unwrap_or(MembershipState::Leave))
    }

    pub fn is_joined(&self, user_id: &UserId, room_id: &RoomId) -> Result<bool> {
        Ok(self.membership_state(user_id, room_id)? == MembershipState::Join)
    }

    /// Fails with M_FORBIDDEN unless the user is joined.
    pub fn require_joined(&self, user_id: &UserId, room_id: &RoomId) -> Result<()> {
        if self.is_joined(user_id, room_id)? {
            Ok(())
        } else {
            Err(Error::forbidden("You are not joined to this room"))
        }
    }

    /// All of a user's memberships.
    pub fn memberships(&self, user_id: &UserId) -> Result<Vec<(OwnedRoomId, MembershipRecord)>> {
        self.core
            .store
            .scan(MEMBERSHIPS.prefix(user_id))
            .map(|item| Ok(item.map(|((_, room), m)| (room, m))?))
            .collect()
    }

    /// Rooms in which the user's membership is one of `kinds`.
    pub fn rooms_with_membership(
        &self,
        user_id: &UserId,
        kinds: &[MembershipState],
    ) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .memberships(user_id)?
            .into_iter()
            .filter(|(_, m)| kinds.contains(&m.membership))
            .map(|(r, _)| r)
            .collect())
    }

    /// For a join to a restricted room (`restricted`, `knock_restricted`) by a user who is not
    /// invited or joined: a member of this server who may invite and so authorises it
    /// (`join_authorised_via_users_server`), when the user is joined to a room the join rule
    /// allows. None when the room is not restricted or nothing allows the user in.
    pub fn restricted_join_authoriser(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Option<OwnedUserId>> {
        let Some(rule) = self.state_content(room_id, &StateEventType::RoomJoinRules, "")? else {
            return Ok(None);
        };
        if !matches!(
            rule["join_rule"].as_str(),
            Some("restricted" | "knock_restricted")
        ) || matches!(
            self.membership_state(user, room_id)?,
            MembershipState::Join | MembershipState::Invite
        ) {
            return Ok(None);
        }
        let allowed = rule["allow"].as_array().into_iter().flatten().any(|a| {
            a["type"] == "m.room_membership"
                && a["room_id"]
                    .as_str()
                    .and_then(|r| RoomId::parse(r).ok())
                    .is_some_and(|r| self.is_joined(user, &r).unwrap_or(false))
        });
        if !allowed {
            return Ok(None);
        }
        let levels = self.power_levels(room_id)?;
        Ok(self
            .joined_members(room_id)?
            .into_iter()
            .filter(|m| m.server_name() == self.core.server_name())
            .find(|m| levels.user_can_invite(m)))
    }

    /// The room's power levels as the spec defines them (defaults when the room has no
    /// `m.room.power_levels` event; room creators above every number from version 12).
    pub fn power_levels(&self, room_id: &RoomId) -> Result<RoomPowerLevels> {
        let record = self.known_room(room_id)?;
        let create = self.pdu(&record.create_event_id);
        let levels = self
            .state_event_id(room_id, &StateEventType::RoomPowerLevels, "")?
            .and_then(|id| self.pdu(&id));
        Ok(power_levels_from(
            &super::rules_for(&record.version)?,
            create.as_ref(),
            levels.as_ref(),
        ))
    }
}

/// Power levels from a room's create event and its `m.room.power_levels` event (if any).
/// Creators are the create event's sender and, from version 12, its `additional_creators`.
pub fn power_levels_from(
    rules: &RoomVersionRules,
    create: Option<&Pdu>,
    levels: Option<&Pdu>,
) -> RoomPowerLevels {
    let mut creators: Vec<OwnedUserId> = create.map(|c| c.sender.clone()).into_iter().collect();
    if rules.authorization.additional_room_creators
        && let Some(create) = create
    {
        #[derive(serde::Deserialize)]
        struct Extra {
            #[serde(default)]
            additional_creators: Vec<OwnedUserId>,
        }
        if let Ok(extra) = serde_json::from_str::<Extra>(create.content.get()) {
            creators.extend(extra.additional_creators);
        }
    }
    let content = levels
        .and_then(|l| serde_json::from_str::<RoomPowerLevelsEventContent>(l.content.get()).ok());
    RoomPowerLevels::new(content.into(), &rules.authorization, creators)
}

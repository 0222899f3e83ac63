//! Reading room state and memberships, and who may see what.

use std::collections::BTreeMap;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::StateEventType};
use serde_json::Value as JsonValue;

use super::{Services, pdu::StoredEvent, timeline::MembershipRecord};
use crate::{
    error::{Error, Result},
    store::{Table, decode, key, prefix},
};

/// A room's state: `(type, state_key)` -> event ID.
pub type StateMap = BTreeMap<(String, String), OwnedEventId>;

impl Services {
    pub fn state_event_id(
        &self,
        room_id: &RoomId,
        ty: &StateEventType,
        state_key: &str,
    ) -> Result<Option<OwnedEventId>> {
        let k = key(&[
            room_id.as_bytes(),
            ty.to_string().as_bytes(),
            state_key.as_bytes(),
        ]);
        Ok(self
            .store
            .get(Table::RoomState, &k)?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.try_into().ok()))
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

    /// The current state of a room.
    pub fn current_state(&self, room_id: &RoomId) -> Result<StateMap> {
        let mut map = StateMap::new();
        for item in self
            .store
            .scan_prefix(Table::RoomState, &prefix(&[room_id.as_bytes()]))
        {
            let (k, v) = item?;
            let mut parts = k.splitn(2, |b| *b == crate::store::SEP);
            let ty = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let sk = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let id = String::from_utf8(v)
                .ok()
                .and_then(|s| OwnedEventId::try_from(s).ok());
            if let Some(id) = id {
                map.insert((ty, sk), id);
            }
        }
        Ok(map)
    }

    /// The state of a room just after the event at stream position `pos`: the current state
    /// with every later state change undone.
    pub fn state_at(&self, room_id: &RoomId, pos: u64) -> Result<StateMap> {
        let mut state = self.current_state(room_id)?;
        for ev in self.timeline_range(room_id, pos + 1, u64::MAX, true, usize::MAX)? {
            if let Some((ty, sk)) = ev.state_pair() {
                let k = (ty.to_string(), sk);
                match &ev.replaces_state {
                    Some(prev) => state.insert(k, prev.clone()),
                    None => state.remove(&k),
                };
            }
        }
        Ok(state)
    }

    /// Members of a room with their membership (`join`, `invite`, `leave`, `ban`, `knock`).
    pub fn members(&self, room_id: &RoomId) -> Result<Vec<(OwnedUserId, String, StoredEvent)>> {
        let p = prefix(&[room_id.as_bytes(), b"m.room.member"]);
        let mut out = Vec::new();
        for item in self.store.scan_prefix(Table::RoomState, &p) {
            let (k, v) = item?;
            let (Ok(user), Ok(id)) = (
                OwnedUserId::try_from(String::from_utf8_lossy(&k).into_owned()),
                OwnedEventId::try_from(String::from_utf8_lossy(&v).into_owned()),
            ) else {
                continue;
            };
            if let Some(ev) = self.event(&id)? {
                let m = ev
                    .content()
                    .get("membership")
                    .and_then(|m| m.as_str())
                    .unwrap_or("leave")
                    .to_owned();
                out.push((user, m, ev));
            }
        }
        Ok(out)
    }

    pub fn joined_members(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
        Ok(self
            .members(room_id)?
            .into_iter()
            .filter(|(_, m, _)| m == "join")
            .map(|(u, _, _)| u)
            .collect())
    }

    pub fn membership(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Option<MembershipRecord>> {
        Ok(self.store.get_json(
            Table::Memberships,
            &key(&[user_id.as_bytes(), room_id.as_bytes()]),
        )?)
    }

    pub fn is_joined(&self, user_id: &UserId, room_id: &RoomId) -> Result<bool> {
        Ok(self
            .membership(user_id, room_id)?
            .is_some_and(|m| m.membership == "join"))
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
        let mut out = Vec::new();
        for item in self
            .store
            .scan_prefix(Table::Memberships, &prefix(&[user_id.as_bytes()]))
        {
            let (k, v) = item?;
            if let Ok(room) = OwnedRoomId::try_from(String::from_utf8_lossy(&k).into_owned()) {
                out.push((room, decode(Table::Memberships, &v)?));
            }
        }
        Ok(out)
    }

    pub fn rooms_with_membership(
        &self,
        user_id: &UserId,
        kinds: &[&str],
    ) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .memberships(user_id)?
            .into_iter()
            .filter(|(_, m)| kinds.contains(&m.membership.as_str()))
            .map(|(r, _)| r)
            .collect())
    }

    fn history_visibility(&self, room_id: &RoomId) -> Result<String> {
        Ok(self
            .state_content(room_id, &StateEventType::RoomHistoryVisibility, "")?
            .and_then(|c| {
                c.get("history_visibility")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "shared".into()))
    }

    /// Whether a user may see an event, following the room's history visibility: members see
    /// the room's history; former members see it up to when they left; others only see
    /// `world_readable` rooms.
    pub fn can_see_event(&self, user_id: &UserId, ev: &StoredEvent) -> Result<bool> {
        let visibility = self.history_visibility(&ev.room_id)?;
        if visibility == "world_readable" {
            return Ok(true);
        }
        Ok(match self.membership(user_id, &ev.room_id)? {
            Some(m) if m.membership == "join" => true,
            Some(m) if m.membership == "invite" => visibility == "invited" && ev.pos <= m.pos,
            Some(m) => ev.pos <= m.pos && m.membership != "knock",
            None => false,
        })
    }

    /// Whether a user may read the room's state and timeline at all right now.
    pub fn can_read_room(&self, user_id: &UserId, room_id: &RoomId) -> Result<bool> {
        if self.history_visibility(room_id)? == "world_readable" {
            return Ok(true);
        }
        Ok(self
            .membership(user_id, room_id)?
            .is_some_and(|m| m.membership != "invite" && m.membership != "knock"))
    }

    /// The state a user may read: the current state for members, the state at the time they
    /// left for former members.
    pub fn readable_state(&self, user_id: &UserId, room_id: &RoomId) -> Result<StateMap> {
        match self.membership(user_id, room_id)? {
            Some(m) if m.membership == "join" => self.current_state(room_id),
            _ if self.history_visibility(room_id)? == "world_readable" => {
                self.current_state(room_id)
            }
            Some(m) if m.membership == "leave" || m.membership == "ban" => {
                self.state_at(room_id, m.pos)
            }
            _ => Err(Error::forbidden("You are not a member of this room")),
        }
    }

    /// Events of a room's timeline with `from <= pos < to`, oldest first (or newest first).
    pub fn timeline_range(
        &self,
        room_id: &RoomId,
        from: u64,
        to: u64,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let start = key(&[room_id.as_bytes(), &from.to_be_bytes()]);
        let end = key(&[room_id.as_bytes(), &to.to_be_bytes()]);
        let mut out = Vec::new();
        for item in self
            .store
            .scan_range(Table::Timeline, &start, &end, reverse, 0)
        {
            if out.len() >= limit {
                break;
            }
            let (_, v) = item?;
            let id = String::from_utf8_lossy(&v).into_owned();
            if let Ok(id) = OwnedEventId::try_from(id)
                && let Some(ev) = self.event(&id)?
            {
                out.push(ev);
            }
        }
        Ok(out)
    }
}

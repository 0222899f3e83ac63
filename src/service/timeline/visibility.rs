//! Who may see which event: the spec's history visibility rules, in one place for every read
//! path (`/messages`, `/context`, `/event`, `/sync`, receipts, relations).
//!
//! For a user and an event, with the room's `m.room.history_visibility` and the user's
//! membership both taken from the state *before* the event:
//! - `world_readable`: anyone sees it;
//! - the user was joined: they see it;
//! - `shared`: they see it if they joined at that point or later;
//! - `invited`: they see it if they were invited (or joined) then;
//! - `joined`: only if they were joined then.
//!
//! A user's own membership event counts with the more permissive of their membership before
//! and after it, and a user always sees their own leave after an invite or a join (so a client
//! sees a room it left disappear). History visibility events count with the more permissive of
//! the old and new setting. This is what Synapse does.

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UserId,
    events::room::{history_visibility::HistoryVisibility, member::MembershipState},
};

use super::{Timeline, pdu::membership_of, state::StateMap};
use crate::{
    error::{Error, Result},
    store::StoredEvent,
};

const VISIBILITY: &str = "m.room.history_visibility";

/// Lower is more permissive.
fn visibility_rank(v: &HistoryVisibility) -> u8 {
    match v {
        HistoryVisibility::WorldReadable => 0,
        HistoryVisibility::Shared => 1,
        HistoryVisibility::Invited => 2,
        _ => 3,
    }
}

/// Lower is more permissive.
fn membership_rank(m: &MembershipState) -> u8 {
    match m {
        MembershipState::Join => 0,
        MembershipState::Invite => 1,
        MembershipState::Knock => 2,
        MembershipState::Ban => 4,
        _ => 3,
    }
}

fn visibility_of(ev: &StoredEvent) -> HistoryVisibility {
    ev.content_str("history_visibility")
        .map(HistoryVisibility::from)
        .unwrap_or(HistoryVisibility::Shared)
}

/// What one user may read of one room: the room's visibility settings and the user's
/// memberships over time, loaded once for a whole page of events.
pub struct Reader {
    pub user: OwnedUserId,
    pub room: OwnedRoomId,
    /// `m.room.history_visibility` values with the position they took effect at.
    visibility: Vec<(u64, HistoryVisibility)>,
    /// The user's memberships with the position they took effect at.
    memberships: Vec<(u64, MembershipState)>,
    /// Users whose messages this user ignores.
    ignored: std::collections::HashSet<OwnedUserId>,
}

impl Reader {
    fn visibility_before(&self, pos: u64) -> HistoryVisibility {
        self.visibility
            .iter()
            .rev()
            .find(|(p, _)| *p < pos)
            .map(|(_, v)| v.clone())
            .unwrap_or(HistoryVisibility::Shared)
    }

    fn membership_before(&self, pos: u64) -> MembershipState {
        self.memberships
            .iter()
            .rev()
            .find(|(p, _)| *p < pos)
            .map(|(_, m)| m.clone())
            .unwrap_or(MembershipState::Leave)
    }

    /// The user's membership now.
    pub fn current(&self) -> MembershipState {
        self.memberships
            .last()
            .map(|(_, m)| m.clone())
            .unwrap_or(MembershipState::Leave)
    }

    /// The room's history visibility now.
    pub fn current_visibility(&self) -> HistoryVisibility {
        self.visibility_before(u64::MAX)
    }

    /// The user's membership at an event as `unsigned.membership` reports it: from the state
    /// after the event (so a user's own join event says `join`), as Synapse does.
    pub fn membership_at(&self, ev: &StoredEvent) -> MembershipState {
        self.membership_before(ev.pos + 1)
    }

    /// The membership that decides whether the user sees an event: from the state before it;
    /// for their own membership events, the more permissive of before and after.
    fn membership_deciding(&self, ev: &StoredEvent) -> MembershipState {
        let before = self.membership_before(ev.pos);
        match ev.member_change() {
            Some((target, after)) if target == self.user => {
                if membership_rank(&after) < membership_rank(&before) {
                    after
                } else {
                    before
                }
            }
            _ => before,
        }
    }

    /// Whether the user may see the event.
    pub fn sees(&self, ev: &StoredEvent) -> bool {
        if ev.room_id != self.room {
            return false;
        }
        let mut visibility = self.visibility_before(ev.pos);
        if ev.kind() == VISIBILITY && ev.state_key() == Some("") {
            let new = visibility_of(ev);
            if visibility_rank(&new) < visibility_rank(&visibility) {
                visibility = new;
            }
        }
        if visibility == HistoryVisibility::WorldReadable {
            return true;
        }
        if let Some((target, after)) = ev.member_change()
            && target == self.user
            && after == MembershipState::Leave
            && matches!(
                self.membership_before(ev.pos),
                MembershipState::Join | MembershipState::Invite
            )
        {
            return true;
        }
        if !ev.is_state()
            && ev
                .sender()
                .is_some_and(|s| s != self.user && self.ignored.contains(&s))
        {
            return false; // from a user this one ignores (m.ignored_user_list)
        }
        let membership = self.membership_deciding(ev);
        match (membership, visibility) {
            (MembershipState::Join, _) => true,
            (_, HistoryVisibility::Shared) => self
                .memberships
                .iter()
                .any(|(p, m)| *p >= ev.pos && *m == MembershipState::Join),
            (MembershipState::Invite, HistoryVisibility::Invited) => true,
            _ => false,
        }
    }

    /// Whether the user may read the room's history at all: a member now or before, or
    /// anyone in a world-readable room. Invited and knocking users may not.
    pub fn may_read(&self) -> bool {
        self.current_visibility() == HistoryVisibility::WorldReadable
            || matches!(
                self.current(),
                MembershipState::Join | MembershipState::Leave | MembershipState::Ban
            ) && self
                .memberships
                .iter()
                .any(|(_, m)| *m == MembershipState::Join)
    }

    /// The last position the user may read up to: where they left or were banned, unless they
    /// are joined or the room is world-readable.
    pub fn ceiling(&self) -> u64 {
        if self.current_visibility() == HistoryVisibility::WorldReadable {
            return u64::MAX;
        }
        match self.memberships.last() {
            Some((_, MembershipState::Join)) | None => u64::MAX,
            Some((pos, _)) => *pos,
        }
    }
}

impl Timeline {
    /// Loads what `user` may read of `room`.
    pub fn reader(&self, user: &UserId, room: &RoomId) -> Result<Reader> {
        let mut visibility = Vec::new();
        for (pos, id) in self.state_history(room, VISIBILITY, "")? {
            if let Some(ev) = self.event(&id)? {
                visibility.push((pos, visibility_of(&ev)));
            }
        }
        let mut memberships = Vec::new();
        for (pos, id) in self.state_history(room, "m.room.member", user.as_str())? {
            if let Some(ev) = self.event(&id)? {
                memberships.push((pos, membership_of(&ev.content())));
            }
        }
        Ok(Reader {
            user: user.to_owned(),
            room: room.to_owned(),
            visibility,
            memberships,
            ignored: self.account_data.ignored_users(user)?,
        })
    }

    /// Loads what `user` may read of `room`, or M_FORBIDDEN when they may read nothing.
    pub fn readable(&self, user: &UserId, room: &RoomId) -> Result<Reader> {
        let reader = self.reader(user, room)?;
        if !reader.may_read() {
            return Err(Error::forbidden("You are not a member of this room"));
        }
        Ok(reader)
    }

    /// An event the user may see, with their membership at it, or M_NOT_FOUND.
    pub fn visible_event(
        &self,
        user: &UserId,
        event_id: &ruma::EventId,
    ) -> Result<(StoredEvent, MembershipState)> {
        let not_found = || Error::not_found("Event not found");
        let ev = self.event(event_id)?.ok_or_else(not_found)?;
        let reader = self.reader(user, &ev.room_id)?;
        if !reader.sees(&ev) {
            return Err(not_found());
        }
        let membership = reader.membership_at(&ev);
        Ok((ev, membership))
    }

    /// The state a user may read now: the current state for members and in world-readable
    /// rooms, the state when they left for former members.
    pub fn readable_state(&self, user: &UserId, room_id: &RoomId) -> Result<StateMap> {
        let reader = self.readable(user, room_id)?;
        match reader.ceiling() {
            u64::MAX => self.current_state(room_id),
            left => self.state_at(room_id, left),
        }
    }
}

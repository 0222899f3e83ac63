//! Reading history a page at a time: `/messages`, `/context` and `/members?at=`.
//!
//! Pages follow [`StreamToken`]s: backwards from a token returns the events at or before its
//! position, forwards the events after it. Every event passes the reader's visibility check,
//! and each request reads a bounded number of events ([`SCAN_BUDGET`]): a page that runs out
//! of budget ends early with a token to continue from.

use std::collections::BTreeSet;

use ruma::{
    OwnedUserId, RoomId, UserId,
    api::{Direction, client::filter::RoomEventFilter},
    events::{StateEventType, room::member::MembershipState},
};

use super::{Timeline, visibility::Reader};
use crate::{
    error::{Error, Result},
    service::{filter::filter_allows, token::StreamToken},
    store::StoredEvent,
};

/// The most events one request reads from the timeline, visible or not.
pub const SCAN_BUDGET: usize = 1000;

/// Events read in one go while filling a page.
const CHUNK: usize = 100;

/// An event a user may see, with their membership at it.
pub struct Seen {
    pub event: StoredEvent,
    pub membership: MembershipState,
}

/// One page of `/messages`.
pub struct MessagesPage {
    pub start: StreamToken,
    pub end: Option<StreamToken>,
    pub events: Vec<Seen>,
    /// Member events of the page's senders (lazy loading).
    pub members: Vec<StoredEvent>,
}

/// What `/messages` asks for.
pub struct MessagesQuery<'a> {
    pub from: Option<StreamToken>,
    pub to: Option<StreamToken>,
    pub dir: Direction,
    pub limit: usize,
    pub filter: &'a RoomEventFilter,
}

/// An event with the visible events around it (`/context`).
pub struct Context {
    pub event: Seen,
    pub before: Vec<Seen>,
    pub after: Vec<Seen>,
    pub start: StreamToken,
    pub end: StreamToken,
    /// The state at the last event returned (capped where the user left).
    pub state: Vec<StoredEvent>,
}

impl Timeline {
    /// Walks the timeline from a point in one direction and collects up to `limit` events the
    /// reader sees and the filter allows. Returns them and the point the walk reached, or None
    /// when it reached the end of the range.
    fn walk(
        &self,
        reader: &Reader,
        filter: Option<&RoomEventFilter>,
        from: u64,
        bound: u64,
        dir: Direction,
        limit: usize,
    ) -> Result<(Vec<Seen>, Option<u64>)> {
        let mut out = Vec::new();
        let mut scanned = 0;
        // `cursor`: backwards, the newest position not yet read; forwards, the last one read.
        let mut cursor = from;
        loop {
            let chunk = match dir {
                Direction::Backward if cursor > bound => self.timeline_range(
                    &reader.room,
                    bound + 1,
                    cursor.saturating_add(1),
                    true,
                    CHUNK,
                )?,
                Direction::Forward if cursor < bound => self.timeline_range(
                    &reader.room,
                    cursor + 1,
                    bound.saturating_add(1),
                    false,
                    CHUNK,
                )?,
                _ => return Ok((out, None)),
            };
            if chunk.is_empty() {
                return Ok((out, None));
            }
            for ev in chunk {
                scanned += 1;
                cursor = match dir {
                    Direction::Backward => ev.pos - 1,
                    Direction::Forward => ev.pos,
                };
                if reader.sees(&ev) && filter.is_none_or(|f| filter_allows(f, &ev)) {
                    let membership = reader.membership_at(&ev);
                    out.push(Seen {
                        event: ev,
                        membership,
                    });
                    if out.len() >= limit {
                        return Ok((out, Some(cursor)));
                    }
                }
                if scanned >= SCAN_BUDGET {
                    return Ok((out, Some(cursor)));
                }
            }
        }
    }

    /// `/messages`: one page of a room's history as the user may see it.
    pub fn messages(
        &self,
        user: &UserId,
        room_id: &RoomId,
        q: MessagesQuery<'_>,
        lazy_members: bool,
    ) -> Result<MessagesPage> {
        let reader = self.readable(user, room_id)?;
        let ceiling = reader.ceiling().min(self.core.current_pos());
        let limit = q.limit.clamp(1, 1000);
        let (start, bound) = match q.dir {
            Direction::Backward => (
                q.from.map_or(ceiling, |t| t.pos.min(ceiling)),
                q.to.map_or(0, |t| t.pos),
            ),
            Direction::Forward => (
                q.from.map_or(0, |t| t.pos),
                q.to.map_or(ceiling, |t| t.pos.min(ceiling)),
            ),
        };
        let (events, reached) = self.walk(&reader, Some(q.filter), start, bound, q.dir, limit)?;
        let mut members = Vec::new();
        if lazy_members {
            let senders: BTreeSet<OwnedUserId> =
                events.iter().filter_map(|s| s.event.sender()).collect();
            for sender in senders {
                if let Some(ev) =
                    self.state_event(room_id, &StateEventType::RoomMember, sender.as_str())?
                {
                    members.push(ev);
                }
            }
        }
        Ok(MessagesPage {
            start: q.from.unwrap_or(StreamToken::after(start)),
            end: reached.map(StreamToken::after),
            events,
            members,
        })
    }

    /// `/context`: an event the user may see, with up to `limit` visible events around it.
    pub fn context(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<Context> {
        let (event, membership) = self.visible_event(user, event_id)?;
        if event.room_id != room_id {
            return Err(Error::not_found("Event not found"));
        }
        let reader = self.reader(user, room_id)?;
        let ceiling = reader.ceiling().min(self.core.current_pos());
        let limit = limit.min(100);
        let before_n = limit / 2;
        let after_n = limit - before_n;
        let pos = event.pos;
        let (before, _) = self.walk(
            &reader,
            Some(filter),
            pos - 1,
            0,
            Direction::Backward,
            before_n.max(1),
        )?;
        let before: Vec<Seen> = before.into_iter().take(before_n).collect();
        let (after, _) = self.walk(
            &reader,
            Some(filter),
            pos,
            ceiling,
            Direction::Forward,
            after_n.max(1),
        )?;
        let after: Vec<Seen> = after.into_iter().take(after_n).collect();
        let start = StreamToken::before(before.last().map_or(pos, |s| s.event.pos));
        let last = after.last().map_or(pos, |s| s.event.pos);
        let mut state = Vec::new();
        for id in self.state_at(room_id, last.min(ceiling))?.into_values() {
            if let Some(ev) = self.event(&id)? {
                state.push(ev);
            }
        }
        Ok(Context {
            event: Seen { event, membership },
            before,
            after,
            start,
            end: StreamToken::after(last),
            state,
        })
    }

    /// Up to `before` and `after` events the reader sees around an event (search results'
    /// context), nearest first before and oldest first after.
    pub fn around(
        &self,
        reader: &Reader,
        ev: &StoredEvent,
        before: usize,
        after: usize,
    ) -> Result<(Vec<Seen>, Vec<Seen>)> {
        let ceiling = reader.ceiling().min(self.core.current_pos());
        let earlier = if before > 0 {
            self.walk(reader, None, ev.pos - 1, 0, Direction::Backward, before)?
                .0
        } else {
            Vec::new()
        };
        let later = if after > 0 {
            self.walk(reader, None, ev.pos, ceiling, Direction::Forward, after)?
                .0
        } else {
            Vec::new()
        };
        Ok((earlier, later))
    }

    /// `/members`: member events of the room, now or at a token, as the user may see them
    /// (former members see the room as it was when they left).
    pub fn members_at(
        &self,
        user: &UserId,
        room_id: &RoomId,
        at: Option<StreamToken>,
    ) -> Result<Vec<StoredEvent>> {
        let reader = self.readable(user, room_id)?;
        let ceiling = reader.ceiling();
        let state = match at {
            Some(t) => self.state_at(room_id, t.pos.min(ceiling))?,
            None if ceiling == u64::MAX => self.current_state(room_id)?,
            None => self.state_at(room_id, ceiling)?,
        };
        let mut out = Vec::new();
        for ((ty, _), id) in state {
            if ty == "m.room.member"
                && let Some(ev) = self.event(&id)?
            {
                out.push(ev);
            }
        }
        Ok(out)
    }
}

//! Reports of events and rooms (`/rooms/{id}/report[/{eventId}]`), kept for the server's
//! admins (`tsunagu admin reports`). A community's moderators read them; nothing is sent
//! anywhere.

use std::sync::Arc;

use ruma::{EventId, RoomId, UserId};

use super::{core::Core, core::now_ms, ratelimit::RateLimiter, timeline::Timeline};
use crate::{
    error::{Error, Result},
    store::{Batch, REPORTS, ReportRecord},
};

/// Reports kept at most; the oldest go first.
const KEPT: usize = 10_000;

/// The longest reason kept, in characters.
const MAX_REASON_CHARS: usize = 2_000;

/// Reports. Depends on [`Core`] and [`Timeline`].
pub struct Reports {
    core: Arc<Core>,
    timeline: Arc<Timeline>,
    /// Per reporter: a burst of 10, then 10 a minute.
    limiter: RateLimiter,
}

impl Reports {
    pub fn new(core: Arc<Core>, timeline: Arc<Timeline>) -> Self {
        Self {
            core,
            timeline,
            limiter: RateLimiter::new(10, 10),
        }
    }

    /// Reports an event the reporter can see (others are M_NOT_FOUND, as the spec says, so a
    /// report reveals nothing about events the reporter cannot see).
    pub async fn report_event(
        &self,
        reporter: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        reason: Option<String>,
    ) -> Result<()> {
        let not_found = || Error::not_found("Event not found, or you are not in the room");
        let (ev, _) = self
            .timeline
            .visible_event(reporter, event_id)
            .map_err(|_| not_found())?;
        if ev.room_id != room_id {
            return Err(not_found());
        }
        self.keep(reporter, room_id, Some(event_id), reason).await
    }

    /// Reports a room the server knows.
    pub async fn report_room(
        &self,
        reporter: &UserId,
        room_id: &RoomId,
        reason: Option<String>,
    ) -> Result<()> {
        if self.timeline.room(room_id)?.is_none() {
            return Err(Error::not_found("Room not found"));
        }
        self.keep(reporter, room_id, None, reason).await
    }

    async fn keep(
        &self,
        reporter: &UserId,
        room_id: &RoomId,
        event_id: Option<&EventId>,
        reason: Option<String>,
    ) -> Result<()> {
        self.limiter.check(reporter.as_str())?;
        let lock = self.core.lock("reports");
        let _guard = lock.lock().await;
        let next = match self.core.store.scan_rev(REPORTS.all()).next() {
            Some(item) => item?.0.0 + 1,
            None => 1,
        };
        let mut b = Batch::default();
        b.put(
            &REPORTS,
            next,
            &ReportRecord {
                reporter: reporter.to_owned(),
                room_id: room_id.to_owned(),
                event_id: event_id.map(ToOwned::to_owned),
                reason: reason.map(|r| r.chars().take(MAX_REASON_CHARS).collect()),
                ts: now_ms(),
            },
        );
        for item in self
            .core
            .store
            .scan_rev(REPORTS.all())
            .skip(KEPT - 1)
            .take(100)
        {
            b.delete(&REPORTS, item?.0.0);
        }
        self.core.write(b).await
    }

    /// The newest reports, newest first, with their numbers.
    pub fn list(&self, limit: usize) -> Result<Vec<(u64, ReportRecord)>> {
        self.core
            .store
            .scan_rev(REPORTS.all())
            .take(limit)
            .map(|item| Ok(item.map(|((n,), r)| (n, r))?))
            .collect()
    }
}

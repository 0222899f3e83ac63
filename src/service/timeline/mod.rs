//! Rooms as a DAG of signed events: the one path that appends them ([`append`]), the event
//! model and its client format ([`pdu`]), room state and memberships ([`state`]), who may see
//! what ([`visibility`]) and reading history page by page ([`pagination`]).

pub mod append;

/// A local user an appended event notifies, by their push rules.
#[derive(Clone, Debug)]
pub struct Notified {
    pub user: ruma::OwnedUserId,
    pub highlight: bool,
    /// The thread root, for a reply in a thread.
    pub thread: Option<ruma::OwnedEventId>,
}

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An area that judges events as they are appended, so its results are written in the same
/// batch as the events (push rules: unread counts never lag behind the timeline). It lives
/// above [`Timeline`] (it reads the timeline), so it is handed in after both are built.
pub trait AppendObserver: Send + Sync {
    /// For each event of a batch (their `pos` is not known yet), the users it notifies.
    fn notified<'a>(
        &'a self,
        room_id: &'a RoomId,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<Vec<Vec<Notified>>>>;
}
pub mod pagination;
pub mod pdu;
pub mod relations;
pub mod remote;
pub mod search_index;
pub mod state;
pub mod visibility;

use std::sync::Arc;

use ruma::{EventId, RoomId, RoomVersionId, room_version_rules::RoomVersionRules};

pub use append::NewEvent;
pub use pdu::{ClientView, Pdu};

use super::{account_data::AccountData, core::Core};
use crate::{
    error::{Error, Result},
    store::{
        Batch, EVENTS, ROOM_STATE, ROOMS, RoomRecord, SEARCH, STATE_HISTORY, StoredEvent, TIMELINE,
    },
};

/// Events, room state and memberships. Depends on [`Core`] and [`AccountData`] (a reader's
/// ignored users).
pub struct Timeline {
    core: Arc<Core>,
    account_data: Arc<AccountData>,
    /// Told about every batch of events before it is written (see [`AppendObserver`]). Weak:
    /// the observer holds this timeline.
    observer: std::sync::OnceLock<std::sync::Weak<dyn AppendObserver>>,
    /// History reads running at once (`limits.history_reads`).
    history_reads: tokio::sync::Semaphore,
    /// Told which servers have events queued for them, after each batch (the federation
    /// sender: it lives above the timeline).
    outbox: std::sync::OnceLock<OutboxListener>,
    /// Per room, the other servers with a member joined (where its events go), kept between
    /// membership changes so that a message does not read every membership.
    room_servers:
        std::sync::Mutex<std::collections::HashMap<ruma::OwnedRoomId, Vec<ruma::OwnedServerName>>>,
}

/// Most rooms whose servers [`Timeline`] keeps in memory (past it, it forgets them all).
pub const MAX_CACHED_ROOMS: usize = 4096;

/// Called with the servers a persisted batch queued events for.
pub type OutboxListener = Box<dyn Fn(&[ruma::OwnedServerName]) + Send + Sync>;

/// The rules of a room version, or an internal error for a version without rules.
pub fn rules_for(version: &RoomVersionId) -> Result<RoomVersionRules> {
    version
        .rules()
        .ok_or_else(|| Error::internal(format!("room version {version} has no rules")))
}

impl Timeline {
    pub fn new(core: Arc<Core>, account_data: Arc<AccountData>) -> Self {
        let history_reads = tokio::sync::Semaphore::new(core.config.limits.history_reads);
        Self {
            core,
            account_data,
            observer: Default::default(),
            history_reads,
            outbox: Default::default(),
            room_servers: Default::default(),
        }
    }

    /// Sets who learns of appended events before they are written (once, at start).
    pub fn set_append_observer(&self, observer: &Arc<dyn AppendObserver>) {
        let _ = self.observer.set(Arc::downgrade(observer));
    }

    /// Sets who learns that events were queued for other servers (once, at start).
    pub fn set_outbox_listener(&self, listener: OutboxListener) {
        let _ = self.outbox.set(listener);
    }

    /// Runs a history read (`/messages`, `/context`, `/members?at=`) on the blocking pool,
    /// `limits.history_reads` at a time: a deep read neither stalls the request workers nor
    /// piles up when many arrive at once.
    pub async fn read_history<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Timeline) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .history_reads
            .acquire()
            .await
            .map_err(Error::internal)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || read(&this))
            .await
            .map_err(Error::internal)?
    }

    /// Builds the state history index from every room's timeline (data directories from
    /// before schema version 1 lack it).
    pub async fn build_state_history(&self) -> Result<()> {
        let store = &self.core.store;
        let mut rooms = 0;
        for item in store.scan(ROOMS.all()) {
            let ((room_id,), _) = item?;
            let mut b = Batch::default();
            for entry in store.scan(TIMELINE.prefix(&room_id)) {
                let (_, event_id) = entry?;
                if let Some(ev) = store.get(&EVENTS, &event_id)?
                    && let Some(sk) = ev.state_key()
                {
                    b.put(
                        &STATE_HISTORY,
                        (&room_id, &ev.kind(), sk, ev.pos),
                        &event_id,
                    );
                }
            }
            store.apply(b)?;
            rooms += 1;
        }
        self.core.persist().await?;
        if rooms > 0 {
            tracing::info!(rooms, "built the state history index");
        }
        Ok(())
    }

    /// Builds the relation, aggregation and full-text indexes from every room's timeline
    /// (data directories from before schema version 3 lack them).
    pub async fn build_relation_and_search_indexes(&self) -> Result<()> {
        let store = &self.core.store;
        for item in store.scan(ROOMS.all()) {
            let ((room_id,), _) = item?;
            let mut batch = Batch::default();
            let mut aggregations = relations::AggregationWrites::default();
            for entry in store.scan(TIMELINE.prefix(&room_id)) {
                let ((_, pos), event_id) = entry?;
                let Some(ev) = self.event(&event_id)? else {
                    continue;
                };
                if ev.redacted_because.is_some() {
                    continue;
                }
                let content = ev.content();
                let pdu = ev.pdu()?;
                let relating = relations::Relating {
                    room_id: &room_id,
                    event_id: &event_id,
                    pos,
                    pdu: &pdu,
                };
                self.index_relation(&mut batch, &mut aggregations, relating, &content)?;
                for word in search_index::event_words(&ev.kind(), &content) {
                    batch.put(&SEARCH, (&room_id, word.as_str(), pos), &event_id);
                }
            }
            aggregations.apply(&mut batch);
            store.apply(batch)?;
        }
        self.core.persist().await
    }

    pub fn room(&self, room_id: &RoomId) -> Result<Option<RoomRecord>> {
        Ok(self.core.store.get(&ROOMS, room_id)?)
    }

    /// The room's record, or M_NOT_FOUND.
    pub fn known_room(&self, room_id: &RoomId) -> Result<RoomRecord> {
        self.room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))
    }

    /// The rules of the room's version.
    pub fn rules(&self, room_id: &RoomId) -> Result<RoomVersionRules> {
        rules_for(&self.known_room(room_id)?.version)
    }

    pub fn event(&self, event_id: &EventId) -> Result<Option<StoredEvent>> {
        Ok(self.core.store.get(&EVENTS, event_id)?)
    }

    /// Every stored event, in no particular order (offline maintenance: `admin media purge`).
    pub fn all_events(&self) -> impl Iterator<Item = Result<StoredEvent>> + '_ {
        self.core.store.scan(EVENTS.all()).map(|item| Ok(item?.1))
    }

    /// The event appended to a room at a stream position, if one was.
    pub fn event_at(&self, room_id: &RoomId, pos: u64) -> Result<Option<StoredEvent>> {
        match self.core.store.get(&TIMELINE, (room_id, pos))? {
            Some(id) => self.event(&id),
            None => Ok(None),
        }
    }

    /// An event in the shape ruma's authorization rules read.
    pub fn pdu(&self, event_id: &EventId) -> Option<Pdu> {
        self.event(event_id)
            .ok()
            .flatten()
            .and_then(|e| e.pdu().ok())
    }

    /// Events of a room's timeline with `from <= pos < to`, oldest first (or newest first),
    /// at most `limit`.
    pub fn timeline_range(
        &self,
        room_id: &RoomId,
        from: u64,
        to: u64,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        self.timeline_events(room_id, from, to, reverse)
            .take(limit)
            .collect()
    }

    /// [`Timeline::timeline_range`] read one event at a time, as the caller takes them.
    pub fn timeline_events<'a>(
        &'a self,
        room_id: &RoomId,
        from: u64,
        to: u64,
        reverse: bool,
    ) -> impl Iterator<Item = Result<StoredEvent>> + 'a {
        let entries = (from < to).then(|| {
            self.core
                .store
                .range(&TIMELINE, (room_id, from), (room_id, to), reverse)
        });
        entries.into_iter().flatten().filter_map(move |item| {
            let (_, id) = match item {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e.into())),
            };
            self.event(&id).transpose()
        })
    }

    /// Whether the room has an event after `pos`.
    pub fn has_events_after(&self, room_id: &RoomId, pos: u64) -> Result<bool> {
        Ok(self
            .core
            .store
            .range(&TIMELINE, (room_id, pos + 1), (room_id, u64::MAX), false)
            .next()
            .is_some())
    }

    /// The current state's event ID for `(type, state_key)`: the state table's value.
    fn current_state_id(
        &self,
        room_id: &RoomId,
        ty: &str,
        state_key: &str,
    ) -> Result<Option<ruma::OwnedEventId>> {
        Ok(self.core.store.get(&ROOM_STATE, (room_id, ty, state_key))?)
    }
}

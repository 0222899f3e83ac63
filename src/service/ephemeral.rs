//! Typing notifications (in memory) and read receipts (stored, on the stream).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{EventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value as JsonValue, json};

use super::{
    core::{Core, now_ms},
    timeline::Timeline,
};
use crate::{
    error::{Error, Result},
    store::{LEGACY_RECEIPTS, RECEIPTS, Receipt, StreamEntry},
};

#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    serial: u64,
}

/// Who is typing where, kept in memory.
#[derive(Default)]
struct TypingMap {
    typing: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
    serial: std::sync::atomic::AtomicU64,
}

/// Typing notifications and read receipts. Depends on [`Core`] and [`Timeline`].
pub struct Ephemeral {
    core: Arc<Core>,
    timeline: Arc<Timeline>,
    typing: TypingMap,
}

impl Ephemeral {
    pub fn new(core: Arc<Core>, timeline: Arc<Timeline>) -> Self {
        Self {
            core,
            timeline,
            typing: TypingMap::default(),
        }
    }

    /// A counter that moves whenever any typing list changes (part of sync tokens).
    pub fn serial(&self) -> u64 {
        self.typing.serial()
    }

    /// Who is typing in a room now, and the serial of its last change.
    pub fn typing(&self, room_id: &RoomId) -> (Vec<OwnedUserId>, u64) {
        self.typing.typing(room_id)
    }

    /// Whether typing changed in one of `rooms` after serial `since`: a typing notice wakes
    /// every waiting sync, and this tells each whether it concerns it.
    pub fn typing_moved_in<'a>(
        &self,
        rooms: impl IntoIterator<Item = &'a OwnedRoomId>,
        since: u64,
    ) -> bool {
        if self.serial() <= since {
            return false;
        }
        let map = self.typing.typing.lock().unwrap_or_else(|e| e.into_inner());
        rooms
            .into_iter()
            .any(|r| map.get(r).is_some_and(|t| t.serial > since))
    }
}

impl TypingMap {
    /// A counter that moves whenever any typing list changes (part of sync tokens).
    pub fn serial(&self) -> u64 {
        self.serial.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Who is typing in a room now, and the serial of its last change.
    pub fn typing(&self, room_id: &RoomId) -> (Vec<OwnedUserId>, u64) {
        let map = self.typing.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(room_id) {
            Some(t) => {
                let now = Instant::now();
                let mut users: Vec<_> = t
                    .users
                    .iter()
                    .filter(|(_, d)| **d > now)
                    .map(|(u, _)| u.clone())
                    .collect();
                users.sort();
                (users, t.serial)
            }
            None => (vec![], 0),
        }
    }

    fn set(&self, room_id: &RoomId, user: &UserId, until: Option<Instant>) -> bool {
        let mut map = self.typing.lock().unwrap_or_else(|e| e.into_inner());
        let room = map.entry(room_id.to_owned()).or_default();
        let changed = match until {
            Some(d) => room.users.insert(user.to_owned(), d).is_none(),
            None => room.users.remove(user).is_some(),
        };
        // Expired entries leave quietly here; `expire` announced them.
        let now = Instant::now();
        room.users.retain(|_, d| *d > now);
        if changed {
            room.serial = self
                .serial
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
        }
        changed
    }

    fn expire(&self, room_id: &RoomId, user: &UserId) -> bool {
        let mut map = self.typing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(room) = map.get_mut(room_id) else {
            return false;
        };
        if room.users.get(user).is_some_and(|d| *d <= Instant::now()) {
            room.users.remove(user);
            room.serial = self
                .serial
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            return true;
        }
        false
    }
}

impl Ephemeral {
    /// Starts or stops a user's typing notice in a room they are joined to.
    pub fn set_typing(
        self: &Arc<Self>,
        room_id: &RoomId,
        user: &UserId,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.timeline.require_joined(user, room_id)?;
        let timeout = timeout.map(|t| t.min(Duration::from_secs(120)));
        if self
            .typing
            .set(room_id, user, timeout.map(|t| Instant::now() + t))
        {
            self.core.poke();
        }
        if let Some(t) = timeout {
            // A weak reference: a pending expiry must not keep a stopped server's store open.
            let this = Arc::downgrade(self);
            let (room_id, user) = (room_id.to_owned(), user.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(t + Duration::from_millis(10)).await;
                if let Some(this) = this.upgrade()
                    && this.typing.expire(&room_id, &user)
                {
                    this.core.poke();
                }
            });
        }
        Ok(())
    }

    /// Stores a receipt (`m.read` or `m.read.private`) of a joined user for an event they may
    /// see in the room, and puts it on the stream.
    pub async fn set_receipt(
        &self,
        room_id: &RoomId,
        user: &UserId,
        receipt_type: &str,
        event_id: &EventId,
        thread_id: Option<String>,
    ) -> Result<()> {
        self.timeline.require_joined(user, room_id)?;
        let (ev, _) = self.timeline.visible_event(user, event_id)?;
        if ev.room_id != room_id {
            return Err(Error::not_found("Event not in this room"));
        }
        let entry = StreamEntry {
            room: Some(room_id.to_owned()),
            ..Default::default()
        };
        self.core
            .commit(entry, |pos, b| {
                let thread = thread_id.clone().unwrap_or_default();
                b.put(
                    &RECEIPTS,
                    (room_id, receipt_type, user, thread.as_str()),
                    &Receipt {
                        event_id: event_id.to_owned(),
                        ts: now_ms(),
                        pos,
                        thread_id,
                    },
                );
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// A user's read receipts in a room, public and private, of every thread.
    pub fn read_receipts(&self, room_id: &RoomId, user: &UserId) -> Result<Vec<Receipt>> {
        let mut out = Vec::new();
        for ty in ["m.read", "m.read.private"] {
            for item in self.core.store.scan(RECEIPTS.prefix3(room_id, ty, user)) {
                out.push(item?.1);
            }
        }
        Ok(out)
    }

    /// Moves receipts from the layout of schema versions before 4 (one per user and type).
    pub async fn migrate_receipts(&self) -> Result<()> {
        let mut b = crate::store::Batch::default();
        for item in self.core.store.scan(LEGACY_RECEIPTS.all()) {
            let ((room, ty, user), receipt) = item?;
            let thread = receipt.thread_id.clone().unwrap_or_default();
            b.put(
                &RECEIPTS,
                (&room, ty.as_str(), &user, thread.as_str()),
                &receipt,
            );
            b.delete(&LEGACY_RECEIPTS, (&room, ty.as_str(), &user));
        }
        self.core.write(b).await
    }

    /// The `m.receipt` content of receipts changed after `since` that `viewer` may see
    /// (private receipts only to their owner). None when there are none.
    pub fn receipts_since(
        &self,
        room_id: &RoomId,
        viewer: &UserId,
        since: u64,
    ) -> Result<Option<JsonValue>> {
        let mut content = serde_json::Map::new();
        for item in self.core.store.scan(RECEIPTS.prefix(room_id)) {
            let ((_, ty, user, _), r) = item?;
            if r.pos <= since {
                continue;
            }
            if ty == "m.read.private" && user != viewer {
                continue;
            }
            let mut data = json!({ "ts": r.ts });
            if let Some(t) = &r.thread_id {
                data["thread_id"] = t.clone().into();
            }
            let ev = content
                .entry(r.event_id.to_string())
                .or_insert_with(|| json!({}));
            ev[&ty][user.as_str()] = data;
        }
        Ok((!content.is_empty()).then_some(JsonValue::Object(content)))
    }
}

//! Typing notifications (in memory) and read receipts (stored, on the stream).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, json};

use super::{Services, StreamEntry, now_ms};
use crate::{
    error::Result,
    store::{Table, decode, key, prefix},
};

#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    serial: u64,
}

/// Ephemeral room data kept in memory.
#[derive(Default)]
pub struct Ephemeral {
    typing: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
    serial: std::sync::atomic::AtomicU64,
}

impl Ephemeral {
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

/// A stored read receipt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Receipt {
    pub event_id: OwnedEventId,
    pub ts: u64,
    pub pos: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
}

impl Services {
    /// Starts or stops a user's typing notice in a room.
    pub fn set_typing(
        self: &std::sync::Arc<Self>,
        room_id: &RoomId,
        user: &UserId,
        timeout: Option<Duration>,
    ) {
        let timeout = timeout.map(|t| t.min(Duration::from_secs(120)));
        if self
            .ephemeral
            .set(room_id, user, timeout.map(|t| Instant::now() + t))
        {
            self.poke();
        }
        if let Some(t) = timeout {
            // A weak reference: a pending expiry must not keep a stopped server's store open.
            let this = std::sync::Arc::downgrade(self);
            let (room_id, user) = (room_id.to_owned(), user.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(t + Duration::from_millis(10)).await;
                if let Some(this) = this.upgrade()
                    && this.ephemeral.expire(&room_id, &user)
                {
                    this.poke();
                }
            });
        }
    }

    /// Stores a receipt (`m.read` or `m.read.private`) and puts it on the stream.
    pub async fn set_receipt(
        &self,
        room_id: &RoomId,
        user: &UserId,
        receipt_type: &str,
        event_id: OwnedEventId,
        thread_id: Option<String>,
    ) -> Result<()> {
        let k = key(&[room_id.as_bytes(), receipt_type.as_bytes(), user.as_bytes()]);
        let entry = StreamEntry {
            room: Some(room_id.to_owned()),
            ..Default::default()
        };
        self.commit(entry, |pos, b| {
            b.put_json(
                Table::Receipts,
                &k,
                &Receipt {
                    event_id,
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

    pub fn receipt(
        &self,
        room_id: &RoomId,
        user: &UserId,
        receipt_type: &str,
    ) -> Result<Option<Receipt>> {
        Ok(self.store.get_json(
            Table::Receipts,
            &key(&[room_id.as_bytes(), receipt_type.as_bytes(), user.as_bytes()]),
        )?)
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
        for item in self
            .store
            .scan_prefix(Table::Receipts, &prefix(&[room_id.as_bytes()]))
        {
            let (k, v) = item?;
            let r: Receipt = decode(Table::Receipts, &v)?;
            if r.pos <= since {
                continue;
            }
            let mut parts = k.splitn(2, |b| *b == crate::store::SEP);
            let ty = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let user = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            if ty == "m.read.private" && user != viewer.as_str() {
                continue;
            }
            let mut data = json!({ "ts": r.ts });
            if let Some(t) = &r.thread_id {
                data["thread_id"] = t.clone().into();
            }
            let ev = content
                .entry(r.event_id.to_string())
                .or_insert_with(|| json!({}));
            ev[&ty][&user] = data;
        }
        Ok((!content.is_empty()).then_some(JsonValue::Object(content)))
    }
}

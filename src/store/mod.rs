//! Typed tables over an embedded key-value engine. No Matrix rules live here.
//!
//! All tables share one ordered key space: a key is one table byte followed by the table's own
//! key. That makes a [`Batch`] touching several tables one atomic write in every engine.
//! Key parts are joined by [`SEP`] (0xFF, a byte that never occurs in UTF-8), and stream
//! positions are big-endian so that byte order is numeric order.

mod redb_engine;
mod sled_engine;

use std::{path::Path, sync::Arc, time::Duration};

use serde::{Serialize, de::DeserializeOwned};

pub use redb_engine::RedbEngine;
pub use sled_engine::SledEngine;

use crate::config::{EngineKind, StorageConfig};

/// Separator between the parts of a key.
pub const SEP: u8 = 0xFF;

/// A failure of the storage engine or of a stored record's encoding.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("corrupt record in {table:?}: {message}")]
    Corrupt { table: Table, message: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One write in a batch.
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// An ordered list of writes applied atomically.
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub fn put(&mut self, table: Table, key: &[u8], value: Vec<u8>) {
        self.ops.push(Op::Put(table.key(key), value));
    }
    pub fn put_json(&mut self, table: Table, key: &[u8], value: &impl Serialize) {
        // Serializing our own record types cannot fail (no maps with non-string keys).
        let bytes = serde_json::to_vec(value).expect("records serialize");
        self.put(table, key, bytes);
    }
    pub fn delete(&mut self, table: Table, key: &[u8]) {
        self.ops.push(Op::Delete(table.key(key)));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }
}

/// Ordered key-value pairs from an engine.
pub type KvIter<'a> = Box<dyn Iterator<Item = StoreResult<(Vec<u8>, Vec<u8>)>> + Send + 'a>;

/// The narrow interface a storage engine offers. A second engine only implements this.
pub trait Engine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;
    /// Applies all writes atomically, in order.
    fn apply(&self, ops: Vec<Op>) -> StoreResult<()>;
    /// Entries with `start <= key < end`, in key order (or reverse order).
    fn range(&self, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'_>;
    /// Makes every applied write durable.
    fn flush(&self) -> StoreResult<()>;
    /// Bytes used on disk, for benchmarks.
    fn size_on_disk(&self) -> StoreResult<u64>;
}

/// The tables. The discriminant is the key prefix: never renumber one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Table {
    /// Server-wide values ("stream_pos", "signing_key", ...).
    Global = 1,
    /// user_id -> account record.
    Users = 2,
    /// user_id SEP device_id -> device record.
    Devices = 3,
    /// access_token -> (user_id, device_id).
    AccessTokens = 4,
    /// registration token -> uses record.
    RegistrationTokens = 5,
    /// event_id -> stored event (PDU and local metadata).
    Events = 6,
    /// room_id SEP pos -> event_id: a room's timeline in stream order.
    Timeline = 7,
    /// pos -> what changed at that position (room and/or user).
    Stream = 8,
    /// room_id SEP type SEP state_key -> event_id: current room state.
    RoomState = 9,
    /// room_id -> room record (version, extremities, depth).
    Rooms = 10,
    /// user_id SEP room_id -> the user's membership in the room.
    Memberships = 11,
    /// user_id SEP device_id SEP txn_id -> event_id (idempotent sends).
    Transactions = 12,
    /// room alias -> room_id.
    Aliases = 13,
    /// user_id SEP room_id-or-empty SEP type -> account data.
    AccountData = 14,
    /// room_id SEP receipt type SEP user_id -> receipt.
    Receipts = 15,
    /// user_id SEP filter_id -> filter definition.
    Filters = 16,
    /// room_id -> () for rooms published in the directory.
    PublicRooms = 17,
    /// user_id SEP device_id -> signed device keys.
    DeviceKeys = 18,
    /// user_id SEP device_id SEP algorithm:key_id -> one-time key.
    OneTimeKeys = 19,
    /// user_id SEP device_id SEP algorithm -> fallback key.
    FallbackKeys = 20,
    /// user_id SEP master|self_signing|user_signing -> cross-signing key.
    CrossSigningKeys = 21,
    /// user_id SEP device_id SEP pos SEP n -> queued to-device message.
    ToDevice = 22,
    /// user_id SEP version -> key backup version.
    BackupVersions = 23,
    /// user_id SEP version SEP room_id SEP session_id -> backed-up room key.
    BackupKeys = 24,
}

impl Table {
    fn key(self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(key.len() + 1);
        k.push(self as u8);
        k.extend_from_slice(key);
        k
    }
}

/// Joins key parts with [`SEP`].
pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(SEP);
        }
        k.extend_from_slice(p);
    }
    k
}

/// `parts` joined, with a trailing separator: the prefix of everything below them.
pub fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(SEP);
    k
}

/// The typed store every service reads and writes.
#[derive(Clone)]
pub struct Store {
    engine: Arc<dyn Engine>,
    /// Serializes flushes so that one flush covers every write applied before it (group commit).
    flush_lock: Arc<tokio::sync::Mutex<u64>>,
    applied: Arc<std::sync::atomic::AtomicU64>,
    /// How long the flusher waits for more writes to join its flush.
    group_commit: Duration,
}

impl Store {
    /// Opens (or creates) the configured engine in `dir`. Each engine has its own file name,
    /// so switching engines never reads the other's data by mistake.
    pub fn open(dir: &Path, config: &StorageConfig) -> StoreResult<Self> {
        let cache = config.cache_mb * 1024 * 1024;
        let engine: Arc<dyn Engine> = match config.engine {
            EngineKind::Sled => Arc::new(SledEngine::open(&dir.join("db"), cache)?),
            EngineKind::Redb => Arc::new(RedbEngine::open(&dir.join("tsunagu.redb"), cache)?),
        };
        Ok(Self::with_engine(
            engine,
            Duration::from_millis(config.group_commit_ms),
        ))
    }

    pub fn with_engine(engine: Arc<dyn Engine>, group_commit: Duration) -> Self {
        Self {
            engine,
            flush_lock: Arc::new(tokio::sync::Mutex::new(0)),
            applied: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            group_commit,
        }
    }

    pub fn get(&self, table: Table, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.engine.get(&table.key(key))
    }

    pub fn get_json<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> StoreResult<Option<T>> {
        match self.get(table, key)? {
            Some(bytes) => decode(table, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn contains(&self, table: Table, key: &[u8]) -> StoreResult<bool> {
        Ok(self.get(table, key)?.is_some())
    }

    /// Applies a batch atomically. Not yet durable: call [`Store::persist`] before acknowledging.
    pub fn apply(&self, batch: Batch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.engine.apply(batch.into_ops())?;
        self.applied
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// One write, applied atomically (not yet durable).
    pub fn put_json(&self, table: Table, key: &[u8], value: &impl Serialize) -> StoreResult<()> {
        let mut b = Batch::default();
        b.put_json(table, key, value);
        self.apply(b)
    }

    /// Waits until every write applied so far is on disk. Concurrent callers share one flush:
    /// whoever gets the lock flushes everything applied until then, the others see that their
    /// writes are covered and return (group commit).
    pub async fn persist(&self) -> StoreResult<()> {
        let target = self.applied.load(std::sync::atomic::Ordering::SeqCst);
        let mut flushed = self.flush_lock.lock().await;
        if *flushed >= target {
            return Ok(());
        }
        if !self.group_commit.is_zero() {
            // Later writers queue on the lock meanwhile and find their writes covered.
            tokio::time::sleep(self.group_commit).await;
        }
        let now = self.applied.load(std::sync::atomic::Ordering::SeqCst);
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush())
            .await
            .map_err(|e| StoreError::Engine(e.to_string()))??;
        *flushed = now;
        Ok(())
    }

    /// Entries whose key starts with `prefix`, as (key without table byte and prefix, value).
    pub fn scan_prefix<'a>(
        &'a self,
        table: Table,
        prefix: &[u8],
    ) -> impl Iterator<Item = StoreResult<(Vec<u8>, Vec<u8>)>> + use<'a> {
        self.scan_range(table, prefix, &upper_bound(prefix), false, prefix.len())
    }

    /// Entries with `start <= key < end` inside one table, keys returned without the first
    /// `strip` bytes.
    pub fn scan_range<'a>(
        &'a self,
        table: Table,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        strip: usize,
    ) -> impl Iterator<Item = StoreResult<(Vec<u8>, Vec<u8>)>> + use<'a> {
        let start = table.key(start);
        let end = if end.is_empty() {
            vec![table as u8 + 1]
        } else {
            table.key(end)
        };
        self.engine
            .range(&start, &end, reverse)
            .map(move |r| r.map(|(k, v)| (k[1 + strip..].to_vec(), v)))
    }

    pub fn size_on_disk(&self) -> StoreResult<u64> {
        self.engine.size_on_disk()
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub fn upper_bound(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new() // empty prefix: the end of the table
}

pub fn decode<T: DeserializeOwned>(table: Table, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        message: e.to_string(),
    })
}

/// Big-endian bytes of a stream position.
pub fn pos_bytes(pos: u64) -> [u8; 8] {
    pos.to_be_bytes()
}

pub fn pos_from(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batch_scan_and_reopen_sled() {
        batch_scan_and_reopen(EngineKind::Sled).await
    }

    #[tokio::test]
    async fn batch_scan_and_reopen_redb() {
        batch_scan_and_reopen(EngineKind::Redb).await
    }

    async fn batch_scan_and_reopen(engine: EngineKind) {
        let config = StorageConfig {
            engine,
            group_commit_ms: 1,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &config).unwrap();
            let mut b = Batch::default();
            for i in [3u64, 1, 2] {
                b.put(
                    Table::Timeline,
                    &key(&[b"!r", &pos_bytes(i)]),
                    vec![i as u8],
                );
            }
            b.put(Table::Timeline, &key(&[b"!s", &pos_bytes(9)]), vec![9]);
            store.apply(b).unwrap();
            store.persist().await.unwrap();
            let got: Vec<u8> = store
                .scan_prefix(Table::Timeline, &prefix(&[b"!r"]))
                .map(|r| r.unwrap().1[0])
                .collect();
            assert_eq!(got, vec![1, 2, 3]);
        }
        let store = Store::open(dir.path(), &config).unwrap();
        let last = store
            .scan_range(
                Table::Timeline,
                &prefix(&[b"!r"]),
                &upper_bound(&prefix(&[b"!r"])),
                true,
                0,
            )
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(last.1, vec![3]);
        let mut b = Batch::default();
        b.delete(Table::Timeline, &key(&[b"!r", &pos_bytes(3)]));
        store.apply(b).unwrap();
        let n = store
            .scan_prefix(Table::Timeline, &prefix(&[b"!r"]))
            .count();
        assert_eq!(n, 2);
        assert!(store.get(Table::Users, b"!r").unwrap().is_none());
    }
}

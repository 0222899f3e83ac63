//! Typed tables over an embedded key-value engine. No Matrix rules live here.
//!
//! All tables share one ordered key space: a key is one table byte followed by the table's own
//! key (see [`key`]). That makes a [`Batch`] touching several tables one atomic write in every
//! engine. [`tables`] names every table with the parts of its key and the record it holds, so
//! services never build bytes: they name keys with IDs and numbers.

mod key;
pub mod records;
mod redb_engine;
mod sled_engine;
pub mod tables;

use std::{path::Path, sync::Arc, time::Duration};

pub use key::{Layout, Part, SEP};
pub use records::*;
pub use redb_engine::RedbEngine;
pub use sled_engine::SledEngine;
pub use tables::*;

use crate::config::{EngineKind, StorageConfig};

/// A failure of the storage engine or of a stored record's encoding.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("corrupt record in {table:?}: {message}")]
    Corrupt { table: TableId, message: String },
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
    pub fn put<K: Layout, V: Value>(&mut self, table: &Table<K, V>, k: K::Ref<'_>, value: &V) {
        self.ops.push(Op::Put(table.key(k), value.encode()));
    }
    pub fn delete<K: Layout, V: Value>(&mut self, table: &Table<K, V>, k: K::Ref<'_>) {
        self.ops.push(Op::Delete(table.key(k)));
    }
    pub fn put_single<V: Value>(&mut self, single: &Single<V>, value: &V) {
        self.put(&single.table, single.name, value);
    }
    /// Moves `other`'s writes to the end of this batch.
    pub fn append(&mut self, other: Batch) {
        self.ops.extend(other.ops);
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

    /// The record under a key.
    pub fn get<K: Layout, V: Value>(
        &self,
        table: &Table<K, V>,
        k: K::Ref<'_>,
    ) -> StoreResult<Option<V>> {
        match self.engine.get(&table.key(k))? {
            Some(bytes) => decode_value(table.id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn contains<K: Layout, V: Value>(
        &self,
        table: &Table<K, V>,
        k: K::Ref<'_>,
    ) -> StoreResult<bool> {
        Ok(self.engine.get(&table.key(k))?.is_some())
    }

    pub fn get_single<V: Value>(&self, single: &Single<V>) -> StoreResult<Option<V>> {
        self.get(&single.table, single.name)
    }

    /// Entries under a prefix in key order, as (key, record).
    pub fn scan<'a, K: Layout, V: Value>(
        &'a self,
        prefix: Prefix<'_, K, V>,
    ) -> impl Iterator<Item = StoreResult<(K, V)>> + use<'a, K, V> {
        let end = key_upper_bound(&prefix.bytes);
        self.decoded(prefix.table.id, &prefix.bytes, &end, false)
    }

    /// Entries under a prefix, last key first.
    pub fn scan_rev<'a, K: Layout, V: Value>(
        &'a self,
        prefix: Prefix<'_, K, V>,
    ) -> impl Iterator<Item = StoreResult<(K, V)>> + use<'a, K, V> {
        let end = key_upper_bound(&prefix.bytes);
        self.decoded(prefix.table.id, &prefix.bytes, &end, true)
    }

    /// Entries with `from <= key < to`, in key order or reversed.
    pub fn range<'a, K: Layout, V: Value>(
        &'a self,
        table: &Table<K, V>,
        from: K::Ref<'_>,
        to: K::Ref<'_>,
        reverse: bool,
    ) -> impl Iterator<Item = StoreResult<(K, V)>> + use<'a, K, V> {
        self.decoded(table.id, &table.key(from), &table.key(to), reverse)
    }

    fn decoded<'a, K: Layout, V: Value>(
        &'a self,
        id: TableId,
        start: &[u8],
        end: &[u8],
        reverse: bool,
    ) -> impl Iterator<Item = StoreResult<(K, V)>> + use<'a, K, V> {
        self.engine.range(start, end, reverse).map(move |item| {
            let (k, v) = item?;
            let key = K::decode(&k[1..]).ok_or_else(|| StoreError::Corrupt {
                table: id,
                message: format!("undecodable key {k:?}"),
            })?;
            Ok((key, decode_value(id, &v)?))
        })
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

    pub fn size_on_disk(&self) -> StoreResult<u64> {
        self.engine.size_on_disk()
    }
}

fn decode_value<V: Value>(table: TableId, bytes: &[u8]) -> StoreResult<V> {
    V::decode(bytes).map_err(|message| StoreError::Corrupt { table, message })
}

/// The smallest key greater than every key starting with `prefix`.
fn key_upper_bound(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xFF; prefix.len() + 1] // cannot happen: keys start with a table byte below 0xFF
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::{OwnedEventId, owned_event_id, room_id};

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
        let (r, s) = (room_id!("!r:x"), room_id!("!r:xy"));
        let ev = |n: u64| OwnedEventId::try_from(format!("$e{n}")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &config).unwrap();
            let mut b = Batch::default();
            for i in [3u64, 1, 2, 0xFF] {
                b.put(&TIMELINE, (r, i), &ev(i));
            }
            b.put(&TIMELINE, (s, 9), &ev(9));
            store.apply(b).unwrap();
            store.persist().await.unwrap();
            let got: Vec<u64> = store
                .scan(TIMELINE.prefix(r))
                .map(|item| item.unwrap().0.1)
                .collect();
            assert_eq!(
                got,
                vec![1, 2, 3, 0xFF],
                "one room's entries, in numeric order"
            );
        }
        let store = Store::open(dir.path(), &config).unwrap();
        let (key, last) = store.scan_rev(TIMELINE.prefix(r)).next().unwrap().unwrap();
        assert_eq!((key.1, last), (0xFF, ev(0xFF)));
        let between: Vec<u64> = store
            .range(&TIMELINE, (r, 2), (r, 0xFF), false)
            .map(|item| item.unwrap().0.1)
            .collect();
        assert_eq!(between, vec![2, 3]);
        let mut b = Batch::default();
        b.delete(&TIMELINE, (r, 3));
        store.apply(b).unwrap();
        assert_eq!(store.scan(TIMELINE.prefix(r)).count(), 3);
        assert!(
            store
                .get(&EVENTS, &owned_event_id!("$e1"))
                .unwrap()
                .is_none()
        );
    }
}

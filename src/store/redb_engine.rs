//! The redb engine: a copy-on-write B-tree in one file. Batches commit without fsync
//! (`Durability::None`); `flush` commits an empty transaction with `Durability::Immediate`,
//! which makes every earlier commit durable.
//!
//! Reads share one open read transaction until the next commit: opening a transaction and
//! its table for every `get` cost more than the lookup itself in an initial sync, which reads
//! thousands of events.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, TableDefinition};

use super::{Engine, KvIter, Op, StoreError, StoreResult};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// A borrowed key or value of the table.
type Guard = redb::AccessGuard<'static, &'static [u8]>;

pub struct RedbEngine {
    db: Database,
    path: PathBuf,
    /// Commits so far: a snapshot opened after reading `n` here sees every commit up to `n`.
    commits: AtomicU64,
    /// The read snapshot reads share, with the commit count read before it was opened. Each
    /// commit drops it, so no snapshot outlives a write for long (a held snapshot keeps the
    /// pages it sees from being reused).
    snapshot: Mutex<Option<(u64, Arc<ReadOnlyTable<&'static [u8], &'static [u8]>>)>>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl RedbEngine {
    pub fn open(path: &Path, cache_bytes: usize) -> StoreResult<Self> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(KV).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self {
            db,
            path: path.to_owned(),
            commits: AtomicU64::new(0),
            snapshot: Mutex::new(None),
        })
    }

    /// A read snapshot that sees every write applied before this call.
    fn reader(&self) -> StoreResult<Arc<ReadOnlyTable<&'static [u8], &'static [u8]>>> {
        let commits = self.commits.load(Ordering::Acquire);
        let mut slot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, table)) = slot.as_ref()
            && *at == commits
        {
            return Ok(table.clone());
        }
        let txn = self.db.begin_read().map_err(err)?;
        let table = Arc::new(txn.open_table(KV).map_err(err)?);
        *slot = Some((commits, table.clone()));
        Ok(table)
    }

    /// Called after each commit: later reads open a new snapshot.
    fn committed(&self) {
        self.commits.fetch_add(1, Ordering::AcqRel);
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

impl Engine for RedbEngine {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let table = self.reader()?;
        Ok(table.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }

    fn apply(&self, ops: Vec<Op>) -> StoreResult<()> {
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(Durability::None).map_err(err)?;
        {
            let mut table = txn.open_table(KV).map_err(err)?;
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        table.insert(k.as_slice(), v.as_slice()).map_err(err)?;
                    }
                    Op::Delete(k) => {
                        table.remove(k.as_slice()).map_err(err)?;
                    }
                }
            }
        }
        txn.commit().map_err(err)?;
        self.committed();
        Ok(())
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'_> {
        let iter = self
            .reader()
            .and_then(|table| table.range(start..end).map_err(err));
        let map = |r: Result<(Guard, Guard), redb::StorageError>| {
            r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .map_err(err)
        };
        match iter {
            Ok(range) if reverse => Box::new(range.rev().map(map)),
            Ok(range) => Box::new(range.map(map)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn flush(&self) -> StoreResult<()> {
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(Durability::Immediate).map_err(err)?;
        txn.commit().map_err(err)
    }

    fn size_on_disk(&self) -> StoreResult<u64> {
        Ok(std::fs::metadata(&self.path).map_err(err)?.len())
    }
}

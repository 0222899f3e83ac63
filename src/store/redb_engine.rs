//! The redb engine: a copy-on-write B-tree in one file. Batches commit without fsync
//! (`Durability::None`); `flush` commits an empty transaction with `Durability::Immediate`,
//! which makes every earlier commit durable.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use super::{Engine, KvIter, Op, StoreError, StoreResult};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// A borrowed key or value of the table.
type Guard = redb::AccessGuard<'static, &'static [u8]>;

pub struct RedbEngine {
    db: Database,
    path: PathBuf,
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
        })
    }
}

impl Engine for RedbEngine {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(KV).map_err(err)?;
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
        txn.commit().map_err(err)
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'_> {
        let iter = (|| {
            let txn = self.db.begin_read().map_err(err)?;
            let table = txn.open_table(KV).map_err(err)?;
            table.range(start..end).map_err(err)
        })();
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

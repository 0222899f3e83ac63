//! The sled engine: one tree, batches applied atomically, `flush` for durability.

use std::path::Path;

use super::{Engine, KvIter, Op, StoreError, StoreResult};

pub struct SledEngine {
    db: sled::Db,
}

fn err(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl SledEngine {
    pub fn open(path: &Path, cache_bytes: usize) -> StoreResult<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes as u64)
            // We flush ourselves before acknowledging a write; no background flusher needed.
            .flush_every_ms(None)
            .open()
            .map_err(err)?;
        Ok(Self { db })
    }
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.db.get(key).map_err(err)?.map(|v| v.to_vec()))
    }

    fn apply(&self, ops: Vec<Op>) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.insert(k, v),
                Op::Delete(k) => batch.remove(k),
            }
        }
        self.db.apply_batch(batch).map_err(err)
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'_> {
        let iter = self.db.range(start.to_vec()..end.to_vec());
        let map = |r: sled::Result<(sled::IVec, sled::IVec)>| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(err)
        };
        if reverse {
            Box::new(iter.rev().map(map))
        } else {
            Box::new(iter.map(map))
        }
    }

    fn flush(&self) -> StoreResult<()> {
        self.db.flush().map(|_| ()).map_err(err)
    }

    fn size_on_disk(&self) -> StoreResult<u64> {
        self.db.size_on_disk().map_err(err)
    }
}

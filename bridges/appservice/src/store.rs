//! A small persistent store (one redb file): mappings between remote and Matrix identifiers,
//! the transaction IDs already received, and the inbox of received events not yet handled.
//!
//! Every write commits with redb's default durability (fsync) before it returns, so a
//! transaction acknowledged to the homeserver survives a crash.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;

use crate::Error;

/// `"{namespace}\0{key}"` → value.
const MAPPINGS: TableDefinition<&str, &str> = TableDefinition::new("mappings");
/// Transaction IDs received from the homeserver → sequence number of their first event.
const TXNS: TableDefinition<&str, u64> = TableDefinition::new("txns");
/// Sequence number → a received event (JSON), handled in order and then removed.
const INBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("inbox");
/// Counters and single values (`last_txn`, `next_seq`).
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// The store of one appservice. Cheap to share behind an `Arc`.
pub struct Store {
    db: Database,
}

fn key(namespace: &str, key: &str) -> String {
    format!("{namespace}\0{key}")
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.display().to_string(), e))?;
        }
        let db = Database::create(path).map_err(redb::Error::from)?;
        let txn = db.begin_write().map_err(redb::Error::from)?;
        txn.open_table(MAPPINGS).map_err(redb::Error::from)?;
        txn.open_table(TXNS).map_err(redb::Error::from)?;
        txn.open_table(INBOX).map_err(redb::Error::from)?;
        txn.open_table(META).map_err(redb::Error::from)?;
        txn.commit().map_err(redb::Error::from)?;
        Ok(Self { db })
    }

    /// The value mapped to `key` in `namespace`.
    pub fn get(&self, namespace: &str, k: &str) -> Result<Option<String>, Error> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(MAPPINGS).map_err(redb::Error::from)?;
        let v = table
            .get(key(namespace, k).as_str())
            .map_err(redb::Error::from)?;
        Ok(v.map(|v| v.value().to_owned()))
    }

    /// Maps `key` to `value` in `namespace` (replacing any earlier value).
    pub fn set(&self, namespace: &str, k: &str, value: &str) -> Result<(), Error> {
        self.write(|txn| {
            txn.open_table(MAPPINGS)?
                .insert(key(namespace, k).as_str(), value)?;
            Ok(())
        })
    }

    /// Sets several `(namespace, key, value)` mappings in one atomic write.
    pub fn set_all(&self, entries: &[(&str, &str, &str)]) -> Result<(), Error> {
        self.write(|txn| {
            let mut table = txn.open_table(MAPPINGS)?;
            for (namespace, k, value) in entries {
                table.insert(key(namespace, k).as_str(), *value)?;
            }
            Ok(())
        })
    }

    /// Removes `key` from `namespace`.
    pub fn remove(&self, namespace: &str, k: &str) -> Result<(), Error> {
        self.write(|txn| {
            txn.open_table(MAPPINGS)?
                .remove(key(namespace, k).as_str())?;
            Ok(())
        })
    }

    /// Every `(key, value)` of `namespace`, ordered by key.
    pub fn entries(&self, namespace: &str) -> Result<Vec<(String, String)>, Error> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(MAPPINGS).map_err(redb::Error::from)?;
        let start = format!("{namespace}\0");
        let end = format!("{namespace}\u{1}");
        let mut out = Vec::new();
        for item in table
            .range(start.as_str()..end.as_str())
            .map_err(redb::Error::from)?
        {
            let (k, v) = item.map_err(redb::Error::from)?;
            out.push((k.value()[start.len()..].to_owned(), v.value().to_owned()));
        }
        Ok(out)
    }

    /// Records a transaction and queues its events in one atomic write. Returns `false` (and
    /// queues nothing) if `txn_id` was received before.
    pub fn accept_transaction(&self, txn_id: &str, events: &[Value]) -> Result<bool, Error> {
        let mut accepted = false;
        self.write(|txn| {
            let mut txns = txn.open_table(TXNS)?;
            if txns.get(txn_id)?.is_some() {
                return Ok(());
            }
            let mut meta = txn.open_table(META)?;
            let mut seq: u64 = meta
                .get("next_seq")?
                .and_then(|v| v.value().parse().ok())
                .unwrap_or(0);
            txns.insert(txn_id, seq)?;
            let mut inbox = txn.open_table(INBOX)?;
            for event in events {
                inbox.insert(
                    seq,
                    serde_json::to_vec(event).unwrap_or_default().as_slice(),
                )?;
                seq += 1;
            }
            meta.insert("next_seq", seq.to_string().as_str())?;
            meta.insert("last_txn", txn_id)?;
            accepted = true;
            Ok(())
        })?;
        Ok(accepted)
    }

    /// The ID of the last transaction accepted.
    pub fn last_txn(&self) -> Result<Option<String>, Error> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let meta = txn.open_table(META).map_err(redb::Error::from)?;
        let v = meta.get("last_txn").map_err(redb::Error::from)?;
        Ok(v.map(|v| v.value().to_owned()))
    }

    /// The oldest received event not yet handled, with its sequence number.
    pub fn inbox_first(&self) -> Result<Option<(u64, Value)>, Error> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let inbox = txn.open_table(INBOX).map_err(redb::Error::from)?;
        let first = inbox.first().map_err(redb::Error::from)?;
        Ok(first.map(|(k, v)| {
            (
                k.value(),
                serde_json::from_slice(v.value()).unwrap_or(Value::Null),
            )
        }))
    }

    /// Removes a handled event from the inbox.
    pub fn inbox_done(&self, seq: u64) -> Result<(), Error> {
        self.write(|txn| {
            txn.open_table(INBOX)?.remove(seq)?;
            Ok(())
        })
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        f(&txn)?;
        txn.commit().map_err(redb::Error::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mappings_and_inbox_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let store = Store::open(&path).unwrap();
            store.set("room", "#a", "!1:x").unwrap();
            store.set("room", "#b", "!2:x").unwrap();
            store.set("nick", "#a", "other").unwrap();
            store.remove("room", "#b").unwrap();
            assert!(
                store
                    .accept_transaction("t1", &[json!(1), json!(2)])
                    .unwrap()
            );
            assert!(!store.accept_transaction("t1", &[json!(3)]).unwrap());
            store.inbox_done(0).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get("room", "#a").unwrap().as_deref(), Some("!1:x"));
        assert_eq!(store.get("room", "#b").unwrap(), None);
        assert_eq!(
            store.entries("room").unwrap(),
            vec![("#a".to_owned(), "!1:x".to_owned())]
        );
        assert_eq!(store.last_txn().unwrap().as_deref(), Some("t1"));
        assert_eq!(store.inbox_first().unwrap(), Some((1, json!(2))));
        assert!(!store.accept_transaction("t1", &[json!(3)]).unwrap());
        assert!(store.accept_transaction("t2", &[json!(3)]).unwrap());
        store.inbox_done(1).unwrap();
        assert_eq!(store.inbox_first().unwrap(), Some((2, json!(3))));
    }
}

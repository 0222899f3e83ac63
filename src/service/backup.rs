//! Server-side key backup (`/room_keys`): opaque encrypted room keys, versioned per user.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    OwnedRoomId, RoomId, UserId,
    api::error::{ErrorKind, WrongRoomKeysVersionErrorData},
};
use serde_json::Value as JsonValue;

use super::core::Core;
use crate::{
    error::{Error, Result},
    store::{BACKUP_KEYS, BACKUP_VERSIONS, BackupVersion, Batch, Layout},
};

/// Server-side key backup. Depends on [`Core`].
pub struct Backup {
    core: Arc<Core>,
}

/// A backup version with its key count, for responses.
pub struct BackupInfo {
    pub version: String,
    pub algorithm: JsonValue,
    pub count: u64,
    pub etag: String,
}

fn parse_version(v: &str) -> Result<u64> {
    v.parse()
        .map_err(|_| Error::not_found("Unknown backup version"))
}

/// Whether `new` should replace `old` per the spec: verified beats unverified, then the lower
/// first_message_index, then the lower forwarded_count.
fn better(new: &JsonValue, old: &JsonValue) -> bool {
    let verified = |v: &JsonValue| {
        v.get("is_verified")
            .and_then(|b| b.as_bool())
            .unwrap_or(false)
    };
    let num = |v: &JsonValue, f: &str| v.get(f).and_then(|n| n.as_u64()).unwrap_or(u64::MAX);
    if verified(new) != verified(old) {
        return verified(new);
    }
    if num(new, "first_message_index") != num(old, "first_message_index") {
        return num(new, "first_message_index") < num(old, "first_message_index");
    }
    num(new, "forwarded_count") < num(old, "forwarded_count")
}

impl Backup {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    fn current(&self, user: &UserId) -> Result<Option<(u64, BackupVersion)>> {
        match self
            .core
            .store
            .scan_rev(BACKUP_VERSIONS.prefix(user))
            .next()
        {
            Some(item) => {
                let ((_, n), v) = item?;
                Ok(Some((n, v)))
            }
            None => Ok(None),
        }
    }

    fn version(&self, user: &UserId, n: u64) -> Result<BackupVersion> {
        self.core
            .store
            .get(&BACKUP_VERSIONS, (user, n))?
            .ok_or_else(|| Error::not_found("Unknown backup version"))
    }

    pub async fn create(&self, user: &UserId, algorithm: JsonValue) -> Result<String> {
        let lock = self.core.lock("backup");
        let _guard = lock.lock().await;
        let next = self.current(user)?.map(|(n, _)| n + 1).unwrap_or(1);
        let mut b = Batch::default();
        b.put(
            &BACKUP_VERSIONS,
            (user, next),
            &BackupVersion { algorithm, etag: 0 },
        );
        self.core.write(b).await?;
        Ok(next.to_string())
    }

    pub fn info(&self, user: &UserId, version: Option<&str>) -> Result<BackupInfo> {
        let (n, v) = match version {
            Some(v) => {
                let n = parse_version(v)?;
                (n, self.version(user, n)?)
            }
            None => self
                .current(user)?
                .ok_or_else(|| Error::not_found("No current backup version"))?,
        };
        let count = self.core.store.scan(BACKUP_KEYS.prefix2(user, n)).count() as u64;
        Ok(BackupInfo {
            version: n.to_string(),
            algorithm: v.algorithm,
            count,
            etag: v.etag.to_string(),
        })
    }

    pub async fn update(&self, user: &UserId, version: &str, algorithm: JsonValue) -> Result<()> {
        let n = parse_version(version)?;
        let mut rec = self.version(user, n)?;
        if rec.algorithm.get("algorithm") != algorithm.get("algorithm") {
            return Err(Error::invalid_param(
                "The algorithm of a backup version cannot change",
            ));
        }
        rec.algorithm = algorithm;
        let mut b = Batch::default();
        b.put(&BACKUP_VERSIONS, (user, n), &rec);
        self.core.write(b).await
    }

    pub async fn delete(&self, user: &UserId, version: &str) -> Result<()> {
        let n = parse_version(version)?;
        self.version(user, n)?;
        let mut b = Batch::default();
        b.delete(&BACKUP_VERSIONS, (user, n));
        for item in self.core.store.scan(BACKUP_KEYS.prefix2(user, n)) {
            b.delete(&BACKUP_KEYS, item?.0.as_key_ref());
        }
        self.core.write(b).await
    }

    /// Adds keys to the current backup version, keeping the better of old and new per session.
    /// Returns (etag, count).
    pub async fn add_keys(
        &self,
        user: &UserId,
        version: &str,
        keys: Vec<(OwnedRoomId, String, JsonValue)>,
    ) -> Result<(String, u64)> {
        let lock = self.core.lock("backup");
        let _guard = lock.lock().await;
        let n = parse_version(version)?;
        let (current, mut rec) = self
            .current(user)?
            .ok_or_else(|| Error::not_found("No current backup version"))?;
        if current != n {
            return Err(Error::new(
                http::StatusCode::FORBIDDEN,
                ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(
                    current.to_string(),
                )),
                "That backup version is not the current one",
            ));
        }
        let mut b = Batch::default();
        let mut changed = false;
        for (room, session, data) in keys {
            if !data.is_object() || !data.get("session_data").is_some_and(|s| s.is_object()) {
                return Err(Error::bad_json("Backed-up keys need session_data"));
            }
            let k = (user, n, &*room, session.as_str());
            let old = self.core.store.get(&BACKUP_KEYS, k)?;
            if old.as_ref().is_none_or(|old| better(&data, old)) {
                b.put(&BACKUP_KEYS, k, &data);
                changed = true;
            }
        }
        if changed {
            rec.etag += 1;
            b.put(&BACKUP_VERSIONS, (user, n), &rec);
            self.core.write(b).await?;
        }
        let info = self.info(user, Some(version))?;
        Ok((info.etag, info.count))
    }

    /// Backed-up keys, optionally of one room or one session: room -> session -> data.
    pub fn keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<BTreeMap<OwnedRoomId, BTreeMap<String, JsonValue>>> {
        let n = parse_version(version)?;
        self.version(user, n)?;
        let prefix = match room {
            Some(r) => BACKUP_KEYS.prefix3(user, n, r),
            None => BACKUP_KEYS.prefix2(user, n),
        };
        let mut out: BTreeMap<OwnedRoomId, BTreeMap<String, JsonValue>> = BTreeMap::new();
        for item in self.core.store.scan(prefix) {
            let ((_, _, room_id, sid), data) = item?;
            if session.is_some_and(|s| s != sid) {
                continue;
            }
            out.entry(room_id).or_default().insert(sid, data);
        }
        Ok(out)
    }

    /// Deletes backed-up keys (all, one room, or one session). Returns (etag, count).
    pub async fn delete_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<(String, u64)> {
        let n = parse_version(version)?;
        let mut rec = self.version(user, n)?;
        let mut b = Batch::default();
        for (room_id, sessions) in self.keys(user, version, room, session)? {
            for sid in sessions.keys() {
                b.delete(&BACKUP_KEYS, (user, n, &*room_id, sid.as_str()));
            }
        }
        rec.etag += 1;
        b.put(&BACKUP_VERSIONS, (user, n), &rec);
        self.core.write(b).await?;
        let info = self.info(user, Some(version))?;
        Ok((info.etag, info.count))
    }
}

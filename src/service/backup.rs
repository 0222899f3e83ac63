//! Server-side key backup (`/room_keys`): opaque encrypted room keys, versioned per user.

use std::collections::BTreeMap;

use ruma::{
    OwnedRoomId, RoomId, UserId,
    api::error::{ErrorKind, WrongRoomKeysVersionErrorData},
};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

use super::Services;
use crate::{
    error::{Error, Result},
    store::{Batch, Table, decode, key, prefix},
};

/// A backup version: its algorithm and auth data, and a counter that changes with the keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupVersion {
    /// `{ "algorithm": ..., "auth_data": ... }` as the client sent it.
    pub algorithm: JsonValue,
    pub etag: u64,
}

/// A backup version with its key count, for responses.
pub struct BackupInfo {
    pub version: String,
    pub algorithm: JsonValue,
    pub count: u64,
    pub etag: String,
}

fn version_key(user: &UserId, version: u64) -> Vec<u8> {
    key(&[user.as_bytes(), &version.to_be_bytes()])
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

impl Services {
    fn backup_versions(&self, user: &UserId) -> Result<Vec<(u64, BackupVersion)>> {
        let mut out = Vec::new();
        for item in self
            .store
            .scan_prefix(Table::BackupVersions, &prefix(&[user.as_bytes()]))
        {
            let (k, v) = item?;
            let n = crate::store::pos_from(&k).unwrap_or(0);
            out.push((n, decode(Table::BackupVersions, &v)?));
        }
        Ok(out)
    }

    fn current_backup(&self, user: &UserId) -> Result<Option<(u64, BackupVersion)>> {
        Ok(self.backup_versions(user)?.into_iter().last())
    }

    pub async fn create_backup(&self, user: &UserId, algorithm: JsonValue) -> Result<String> {
        let _guard = self
            .room_lock(ruma::room_id!("!backup:tsunagu"))
            .lock_owned()
            .await;
        let next = self
            .backup_versions(user)?
            .last()
            .map(|(n, _)| n + 1)
            .unwrap_or(1);
        let mut b = Batch::default();
        b.put_json(
            Table::BackupVersions,
            &version_key(user, next),
            &BackupVersion { algorithm, etag: 0 },
        );
        self.write(b).await?;
        Ok(next.to_string())
    }

    pub fn backup_info(&self, user: &UserId, version: Option<&str>) -> Result<BackupInfo> {
        let (n, v) = match version {
            Some(v) => {
                let n = parse_version(v)?;
                let rec = self
                    .store
                    .get_json(Table::BackupVersions, &version_key(user, n))?
                    .ok_or_else(|| Error::not_found("Unknown backup version"))?;
                (n, rec)
            }
            None => self
                .current_backup(user)?
                .ok_or_else(|| Error::not_found("No current backup version"))?,
        };
        let count = self
            .store
            .scan_prefix(
                Table::BackupKeys,
                &prefix(&[user.as_bytes(), &n.to_be_bytes()]),
            )
            .count() as u64;
        Ok(BackupInfo {
            version: n.to_string(),
            algorithm: v.algorithm,
            count,
            etag: v.etag.to_string(),
        })
    }

    pub async fn update_backup(
        &self,
        user: &UserId,
        version: &str,
        algorithm: JsonValue,
    ) -> Result<()> {
        let n = parse_version(version)?;
        let mut rec: BackupVersion = self
            .store
            .get_json(Table::BackupVersions, &version_key(user, n))?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        if rec.algorithm.get("algorithm") != algorithm.get("algorithm") {
            return Err(Error::invalid_param(
                "The algorithm of a backup version cannot change",
            ));
        }
        rec.algorithm = algorithm;
        let mut b = Batch::default();
        b.put_json(Table::BackupVersions, &version_key(user, n), &rec);
        self.write(b).await
    }

    pub async fn delete_backup(&self, user: &UserId, version: &str) -> Result<()> {
        let n = parse_version(version)?;
        if !self
            .store
            .contains(Table::BackupVersions, &version_key(user, n))?
        {
            return Err(Error::not_found("Unknown backup version"));
        }
        let mut b = Batch::default();
        b.delete(Table::BackupVersions, &version_key(user, n));
        for item in self.store.scan_prefix(
            Table::BackupKeys,
            &prefix(&[user.as_bytes(), &n.to_be_bytes()]),
        ) {
            let (k, _) = item?;
            b.delete(
                Table::BackupKeys,
                &key(&[user.as_bytes(), &n.to_be_bytes(), &k]),
            );
        }
        self.write(b).await
    }

    /// Adds keys to the current backup version, keeping the better of old and new per session.
    /// Returns (etag, count).
    pub async fn add_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        keys: Vec<(OwnedRoomId, String, JsonValue)>,
    ) -> Result<(String, u64)> {
        let _guard = self
            .room_lock(ruma::room_id!("!backup:tsunagu"))
            .lock_owned()
            .await;
        let n = parse_version(version)?;
        let (current, mut rec) = self
            .current_backup(user)?
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
            let k = key(&[
                user.as_bytes(),
                &n.to_be_bytes(),
                room.as_bytes(),
                session.as_bytes(),
            ]);
            let old: Option<JsonValue> = self.store.get_json(Table::BackupKeys, &k)?;
            if old.as_ref().is_none_or(|old| better(&data, old)) {
                b.put_json(Table::BackupKeys, &k, &data);
                changed = true;
            }
        }
        if changed {
            rec.etag += 1;
            b.put_json(Table::BackupVersions, &version_key(user, n), &rec);
            self.write(b).await?;
        }
        let info = self.backup_info(user, Some(version))?;
        Ok((info.etag, info.count))
    }

    /// Backed-up keys, optionally of one room or one session: room -> session -> data.
    pub fn backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<BTreeMap<OwnedRoomId, BTreeMap<String, JsonValue>>> {
        let n = parse_version(version)?;
        if !self
            .store
            .contains(Table::BackupVersions, &version_key(user, n))?
        {
            return Err(Error::not_found("Unknown backup version"));
        }
        let mut parts: Vec<&[u8]> = vec![user.as_bytes()];
        let nb = n.to_be_bytes();
        parts.push(&nb);
        if let Some(r) = room {
            parts.push(r.as_bytes());
        }
        let p = prefix(&parts);
        let mut out: BTreeMap<OwnedRoomId, BTreeMap<String, JsonValue>> = BTreeMap::new();
        for item in self.store.scan_prefix(Table::BackupKeys, &p) {
            let (k, v) = item?;
            let rest = String::from_utf8_lossy(&k).into_owned();
            let (room_id, sid) = match room {
                Some(r) => (r.to_owned(), rest),
                None => {
                    let mut it = k.splitn(2, |b| *b == crate::store::SEP);
                    let r = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
                    let s = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
                    let Ok(r) = OwnedRoomId::try_from(r) else {
                        continue;
                    };
                    (r, s)
                }
            };
            if session.is_some_and(|s| s != sid) {
                continue;
            }
            out.entry(room_id)
                .or_default()
                .insert(sid, decode(Table::BackupKeys, &v)?);
        }
        Ok(out)
    }

    /// Deletes backed-up keys (all, one room, or one session). Returns (etag, count).
    pub async fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<(String, u64)> {
        let n = parse_version(version)?;
        let mut rec: BackupVersion = self
            .store
            .get_json(Table::BackupVersions, &version_key(user, n))?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        let mut b = Batch::default();
        for (room_id, sessions) in self.backup_keys(user, version, room, session)? {
            for sid in sessions.keys() {
                b.delete(
                    Table::BackupKeys,
                    &key(&[
                        user.as_bytes(),
                        &n.to_be_bytes(),
                        room_id.as_bytes(),
                        sid.as_bytes(),
                    ]),
                );
            }
        }
        rec.etag += 1;
        b.put_json(Table::BackupVersions, &version_key(user, n), &rec);
        self.write(b).await?;
        let info = self.backup_info(user, Some(version))?;
        Ok((info.etag, info.count))
    }
}

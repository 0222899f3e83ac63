//! Account data (global and per room), room tags and filters.

use ruma::{OwnedRoomId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

use super::{Services, StreamEntry};
use crate::{
    error::{Error, Result},
    store::{Table, decode, key, prefix},
};

/// One stored account data event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountDataRecord {
    pub content: JsonValue,
    pub pos: u64,
}

impl Services {
    fn ad_key(user: &UserId, room: Option<&RoomId>, ty: &str) -> Vec<u8> {
        key(&[
            user.as_bytes(),
            room.map(|r| r.as_bytes()).unwrap_or_default(),
            ty.as_bytes(),
        ])
    }

    pub fn account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        ty: &str,
    ) -> Result<Option<JsonValue>> {
        Ok(self
            .store
            .get_json::<AccountDataRecord>(Table::AccountData, &Self::ad_key(user, room, ty))?
            .map(|r| r.content))
    }

    /// Stores account data at a new stream position (sync delivers it).
    pub async fn set_account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        ty: &str,
        content: JsonValue,
    ) -> Result<()> {
        if !content.is_object() {
            return Err(Error::bad_json("Account data must be a JSON object"));
        }
        let k = Self::ad_key(user, room, ty);
        self.commit(
            StreamEntry {
                user: Some(user.to_owned()),
                ..Default::default()
            },
            |pos, b| {
                b.put_json(Table::AccountData, &k, &AccountDataRecord { content, pos });
                Ok(())
            },
        )
        .await?;
        Ok(())
    }

    /// All account data of a user changed after `since`: (room or None, type, content).
    pub fn account_data_since(
        &self,
        user: &UserId,
        since: u64,
    ) -> Result<Vec<(Option<OwnedRoomId>, String, JsonValue)>> {
        let mut out = Vec::new();
        for item in self
            .store
            .scan_prefix(Table::AccountData, &prefix(&[user.as_bytes()]))
        {
            let (k, v) = item?;
            let rec: AccountDataRecord = decode(Table::AccountData, &v)?;
            if rec.pos <= since {
                continue;
            }
            let mut parts = k.splitn(2, |b| *b == crate::store::SEP);
            let room = parts
                .next()
                .filter(|r| !r.is_empty())
                .and_then(|r| OwnedRoomId::try_from(String::from_utf8_lossy(r).into_owned()).ok());
            let ty = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            out.push((room, ty, rec.content));
        }
        Ok(out)
    }

    pub async fn create_filter(&self, user: &UserId, filter: &JsonValue) -> Result<String> {
        let id = super::random_token(6);
        let mut b = crate::store::Batch::default();
        b.put_json(
            Table::Filters,
            &key(&[user.as_bytes(), id.as_bytes()]),
            filter,
        );
        self.write(b).await?;
        Ok(id)
    }

    pub fn filter(&self, user: &UserId, id: &str) -> Result<Option<JsonValue>> {
        Ok(self
            .store
            .get_json(Table::Filters, &key(&[user.as_bytes(), id.as_bytes()]))?)
    }
}

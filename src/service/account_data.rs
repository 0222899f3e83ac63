//! Account data (global and per room, tags included) and stored filters.

use std::sync::Arc;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::Value as JsonValue;

use super::core::{Core, random_token};
use crate::{
    error::{Error, Result},
    store::{ACCOUNT_DATA, AccountDataRecord, Batch, FILTERS, StreamEntry},
};

/// Types a client may not set through the account data endpoints: the server keeps them.
const SERVER_MANAGED: [&str; 2] = ["m.fully_read", "m.push_rules"];

/// Account data and filters. Depends on [`Core`].
pub struct AccountData {
    core: Arc<Core>,
}

impl AccountData {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    pub fn get(&self, user: &UserId, room: Option<&RoomId>, ty: &str) -> Result<Option<JsonValue>> {
        Ok(self
            .core
            .store
            .get(&ACCOUNT_DATA, (user, room, ty))?
            .map(|r| r.content))
    }

    /// Like [`AccountData::get`], or M_NOT_FOUND.
    pub fn require(&self, user: &UserId, room: Option<&RoomId>, ty: &str) -> Result<JsonValue> {
        self.get(user, room, ty)?
            .ok_or_else(|| Error::not_found("Account data not found"))
    }

    /// Sets account data a client sent: a JSON object of a type the server does not manage.
    pub async fn set_by_client(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        ty: &str,
        content: JsonValue,
    ) -> Result<()> {
        if SERVER_MANAGED.contains(&ty) {
            return Err(Error::bad_json(format!(
                "{ty} cannot be set through account data"
            )));
        }
        self.set(user, room, ty, content).await
    }

    /// Stores account data at a new stream position (sync delivers it).
    pub async fn set(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        ty: &str,
        content: JsonValue,
    ) -> Result<()> {
        if !content.is_object() {
            return Err(Error::bad_json("Account data must be a JSON object"));
        }
        let max = self.core.config.limits.max_account_data_bytes;
        if serde_json::to_vec(&content)?.len() > max {
            return Err(Error::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                ruma::api::error::ErrorKind::TooLarge,
                format!("Account data is at most {max} bytes"),
            ));
        }
        let entry = StreamEntry {
            user: Some(user.to_owned()),
            ..Default::default()
        };
        self.core
            .commit(entry, |pos, b| {
                b.put(
                    &ACCOUNT_DATA,
                    (user, room, ty),
                    &AccountDataRecord { content, pos },
                );
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// All account data of a user changed after `since`: (room or None, type, content).
    pub fn since(
        &self,
        user: &UserId,
        since: u64,
    ) -> Result<Vec<(Option<OwnedRoomId>, String, JsonValue)>> {
        let mut out = Vec::new();
        for item in self.core.store.scan(ACCOUNT_DATA.prefix(user)) {
            let ((_, room, ty), rec) = item?;
            if rec.pos > since {
                out.push((room, ty, rec.content));
            }
        }
        Ok(out)
    }

    /// The users `user` ignores (`m.ignored_user_list`).
    pub fn ignored_users(
        &self,
        user: &UserId,
    ) -> Result<std::collections::HashSet<ruma::OwnedUserId>> {
        let Some(list) = self.get(user, None, "m.ignored_user_list")? else {
            return Ok(Default::default());
        };
        Ok(list
            .get("ignored_users")
            .and_then(|u| u.as_object())
            .map(|users| {
                users
                    .keys()
                    .filter_map(|u| ruma::OwnedUserId::try_from(u.as_str()).ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A room's tags (`m.tag`), tag -> info.
    pub fn tags(&self, user: &UserId, room: &RoomId) -> Result<serde_json::Map<String, JsonValue>> {
        Ok(self
            .get(user, Some(room), "m.tag")?
            .and_then(|c| c.get("tags").and_then(|t| t.as_object()).cloned())
            .unwrap_or_default())
    }

    /// Adds, replaces (`Some`) or removes (`None`) one tag of a room.
    pub async fn set_tag(
        &self,
        user: &UserId,
        room: &RoomId,
        tag: &str,
        info: Option<JsonValue>,
    ) -> Result<()> {
        let mut tags = self.tags(user, room)?;
        match info {
            Some(info) => tags.insert(tag.to_owned(), info),
            None => tags.remove(tag),
        };
        self.set(
            user,
            Some(room),
            "m.tag",
            serde_json::json!({ "tags": tags }),
        )
        .await
    }

    pub async fn create_filter(&self, user: &UserId, filter: &JsonValue) -> Result<String> {
        let id = random_token(6);
        let mut b = Batch::default();
        b.put(&FILTERS, (user, &id), filter);
        self.core.write(b).await?;
        Ok(id)
    }

    pub fn filter(&self, user: &UserId, id: &str) -> Result<Option<JsonValue>> {
        Ok(self.core.store.get(&FILTERS, (user, id))?)
    }
}

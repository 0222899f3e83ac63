//! Room aliases and the public room directory.

use ruma::{OwnedRoomId, RoomAliasId, RoomId, UserId, events::StateEventType};
use serde::{Deserialize, Serialize};

use super::Services;
use crate::{
    error::{Error, Result},
    store::{Batch, Table},
};

#[derive(Serialize, Deserialize)]
struct AliasRecord {
    room_id: OwnedRoomId,
    creator: ruma::OwnedUserId,
}

/// One entry of `/publicRooms`.
pub struct PublicRoom {
    pub room_id: OwnedRoomId,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub canonical_alias: Option<String>,
    pub avatar_url: Option<String>,
    pub joined: usize,
    pub world_readable: bool,
    pub guest_can_join: bool,
    pub join_rule: String,
}

impl Services {
    pub fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        Ok(self
            .store
            .get_json::<AliasRecord>(Table::Aliases, alias.as_bytes())?
            .map(|r| r.room_id))
    }

    /// Resolves an alias, asking the appservice that claims it when it is unknown.
    pub async fn resolve_alias_or_ask(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        match self.resolve_alias(alias)? {
            Some(room) => Ok(Some(room)),
            None => Ok(self.query_appservice_alias(alias).await),
        }
    }

    pub async fn set_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<()> {
        if alias.server_name() != self.server_name() {
            return Err(Error::invalid_param("Aliases must be on this server"));
        }
        if self.room_record(room_id)?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        if let Some(owner) = self.exclusive_alias_owner(alias)
            && !owner.is_user(user)
        {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Exclusive,
                format!("{alias} is reserved by the appservice {}", owner.id()),
            ));
        }
        if self.resolve_alias(alias)?.is_some() {
            return Err(Error::new(
                http::StatusCode::CONFLICT,
                ruma::api::error::ErrorKind::Unknown,
                "Alias already exists",
            ));
        }
        let mut b = Batch::default();
        b.put_json(
            Table::Aliases,
            alias.as_bytes(),
            &AliasRecord {
                room_id: room_id.to_owned(),
                creator: user.to_owned(),
            },
        );
        self.write(b).await
    }

    pub async fn delete_alias(&self, alias: &RoomAliasId, user: &UserId) -> Result<()> {
        let record: AliasRecord = self
            .store
            .get_json(Table::Aliases, alias.as_bytes())?
            .ok_or_else(|| Error::not_found("Unknown alias"))?;
        let is_admin = self.account(user)?.is_some_and(|a| a.admin);
        let can_state = self.power_level(&record.room_id, user)?
            >= self.state_level(&record.room_id, "m.room.canonical_alias")?;
        if record.creator != user && !is_admin && !can_state {
            return Err(Error::forbidden(
                "Only the alias' creator or a room moderator may delete it",
            ));
        }
        let mut b = Batch::default();
        b.delete(Table::Aliases, alias.as_bytes());
        self.write(b).await
    }

    /// Aliases on this server that point at the room.
    pub fn local_aliases(&self, room_id: &RoomId) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in self.store.scan_prefix(Table::Aliases, b"") {
            let (k, v) = item?;
            let r: AliasRecord = crate::store::decode(Table::Aliases, &v)?;
            if r.room_id == room_id {
                out.push(String::from_utf8_lossy(&k).into_owned());
            }
        }
        Ok(out)
    }

    /// The power level needed to send a state event of `ty`.
    pub fn state_level(&self, room_id: &RoomId, ty: &str) -> Result<i64> {
        let pl = self
            .state_content(room_id, &StateEventType::RoomPowerLevels, "")?
            .unwrap_or_default();
        Ok(pl
            .get("events")
            .and_then(|e| e.get(ty))
            .or_else(|| pl.get("state_default"))
            .and_then(super::rooms::as_int)
            .unwrap_or(50))
    }

    pub async fn set_published(&self, room_id: &RoomId, published: bool) -> Result<()> {
        let mut b = Batch::default();
        if published {
            b.put(Table::PublicRooms, room_id.as_bytes(), vec![]);
        } else {
            b.delete(Table::PublicRooms, room_id.as_bytes());
        }
        self.write(b).await
    }

    pub fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self
            .store
            .contains(Table::PublicRooms, room_id.as_bytes())?)
    }

    /// Published rooms, most joined first, optionally filtered by a search term.
    pub fn public_rooms(&self, filter: Option<&str>) -> Result<Vec<PublicRoom>> {
        let mut out = Vec::new();
        for item in self.store.scan_prefix(Table::PublicRooms, b"") {
            let (k, _) = item?;
            let Ok(room_id) = OwnedRoomId::try_from(String::from_utf8_lossy(&k).into_owned())
            else {
                continue;
            };
            let get = |ty: StateEventType, field: &str| -> Result<Option<String>> {
                Ok(self
                    .state_content(&room_id, &ty, "")?
                    .and_then(|c| c.get(field).and_then(|v| v.as_str()).map(str::to_owned)))
            };
            let room = PublicRoom {
                name: get(StateEventType::RoomName, "name")?,
                topic: get(StateEventType::RoomTopic, "topic")?,
                canonical_alias: get(StateEventType::RoomCanonicalAlias, "alias")?,
                avatar_url: get(StateEventType::RoomAvatar, "url")?,
                joined: self.joined_members(&room_id)?.len(),
                world_readable: get(StateEventType::RoomHistoryVisibility, "history_visibility")?
                    .as_deref()
                    == Some("world_readable"),
                guest_can_join: get(StateEventType::RoomGuestAccess, "guest_access")?.as_deref()
                    == Some("can_join"),
                join_rule: get(StateEventType::RoomJoinRules, "join_rule")?
                    .unwrap_or_else(|| "invite".into()),
                room_id,
            };
            if let Some(term) = filter.map(str::to_lowercase).filter(|t| !t.is_empty()) {
                let hay = [&room.name, &room.topic, &room.canonical_alias]
                    .iter()
                    .filter_map(|s| s.as_deref())
                    .any(|s| s.to_lowercase().contains(&term));
                if !hay {
                    continue;
                }
            }
            out.push(room);
        }
        out.sort_by(|a, b| b.joined.cmp(&a.joined).then(a.room_id.cmp(&b.room_id)));
        Ok(out)
    }
}

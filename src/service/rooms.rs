//! Room creation and membership changes (join, invite, leave, kick, ban, unban, forget),
//! and profile changes mirrored into member events.

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType},
};
use serde_json::{Value as JsonValue, json};

use super::{
    Services,
    timeline::{NewEvent, rules_for},
};
use crate::{
    config::{EncryptionDefault, SUPPORTED_ROOM_VERSIONS},
    error::{Error, Result},
    store::{Batch, Table, key},
};

/// What a client asked for in `/createRoom`, already parsed.
#[derive(Default)]
pub struct CreateRoom {
    pub preset: Option<String>,
    pub public: bool,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias_localpart: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub room_version: Option<RoomVersionId>,
    pub creation_content: Option<serde_json::Map<String, JsonValue>>,
    pub initial_state: Vec<NewEvent>,
    pub power_level_content_override: Option<serde_json::Map<String, JsonValue>>,
}

impl Services {
    fn member_content(&self, user_id: &UserId, membership: &str) -> Result<JsonValue> {
        let mut c = json!({ "membership": membership });
        if membership == "join"
            && let Some(account) = self.account(user_id)?
        {
            if let Some(name) = account.displayname {
                c["displayname"] = name.into();
            }
            if let Some(url) = account.avatar_url {
                c["avatar_url"] = url.as_str().into();
            }
        }
        Ok(c)
    }

    /// Creates a room per the spec's `/createRoom` steps and returns its ID.
    pub async fn create_room(&self, creator: &UserId, req: CreateRoom) -> Result<OwnedRoomId> {
        let version = req
            .room_version
            .clone()
            .unwrap_or_else(|| self.config.default_room_version.clone());
        if !SUPPORTED_ROOM_VERSIONS.contains(&version) {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                format!("Room version {version} is not supported"),
            ));
        }
        let rules = rules_for(&version)?;
        let preset = req.preset.clone().unwrap_or_else(|| {
            if req.public {
                "public_chat".into()
            } else {
                "private_chat".into()
            }
        });
        if !["public_chat", "private_chat", "trusted_private_chat"].contains(&preset.as_str()) {
            return Err(Error::invalid_param(format!("Unknown preset {preset}")));
        }
        let alias = match &req.alias_localpart {
            Some(local) => {
                let alias =
                    ruma::OwnedRoomAliasId::try_from(format!("#{local}:{}", self.server_name()))
                        .map_err(|e| {
                            Error::new(
                                http::StatusCode::BAD_REQUEST,
                                ruma::api::error::ErrorKind::InvalidParam,
                                format!("Invalid alias: {e}"),
                            )
                        })?;
                if self.resolve_alias(&alias)?.is_some() {
                    return Err(Error::new(
                        http::StatusCode::BAD_REQUEST,
                        ruma::api::error::ErrorKind::RoomInUse,
                        "Alias already taken",
                    ));
                }
                Some(alias)
            }
            None => None,
        };
        for user in &req.invite {
            if self.is_local(user)
                && self.account(user)?.is_none()
                && !self.query_appservice_user(user).await
            {
                return Err(Error::not_found(format!("Unknown user {user}")));
            }
        }

        // 1. m.room.create
        let mut create = req.creation_content.clone().unwrap_or_default();
        create.insert("room_version".into(), version.as_str().into());
        if !rules.authorization.use_room_create_sender {
            create.insert("creator".into(), creator.as_str().into());
        }
        let trusted = preset == "trusted_private_chat";
        if trusted && rules.authorization.additional_room_creators && !req.invite.is_empty() {
            create.insert(
                "additional_creators".into(),
                req.invite
                    .iter()
                    .map(|u| JsonValue::from(u.as_str()))
                    .collect(),
            );
        }
        let room_id = self
            .append_create(creator, &version, JsonValue::Object(create))
            .await?;

        // 2. the creator joins
        self.append(
            &room_id,
            creator,
            NewEvent::state(
                TimelineEventType::RoomMember,
                creator.as_str(),
                self.member_content(creator, "join")?,
            ),
            None,
        )
        .await?;

        // 3. power levels
        let privileged = rules.authorization.explicitly_privilege_room_creators;
        let mut users = serde_json::Map::new();
        if !privileged {
            users.insert(creator.to_string(), 100.into());
            if trusted {
                for u in &req.invite {
                    users.insert(u.to_string(), 100.into());
                }
            }
        }
        let mut pl = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                "m.room.tombstone": if privileged { 150 } else { 100 },
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": if preset == "public_chat" { 50 } else { 0 },
            "notifications": { "room": 50 },
        });
        if let Some(over) = &req.power_level_content_override {
            for (k, v) in over {
                pl[k] = v.clone();
            }
        }
        self.append(
            &room_id,
            creator,
            NewEvent::state(TimelineEventType::RoomPowerLevels, "", pl),
            None,
        )
        .await?;

        // 4. canonical alias
        if let Some(alias) = &alias {
            self.append(
                &room_id,
                creator,
                NewEvent::state(
                    TimelineEventType::RoomCanonicalAlias,
                    "",
                    json!({ "alias": alias }),
                ),
                None,
            )
            .await?;
        }

        // 5. preset state
        let join_rule = if preset == "public_chat" {
            "public"
        } else {
            "invite"
        };
        let mut preset_events = vec![
            NewEvent::state(
                TimelineEventType::RoomJoinRules,
                "",
                json!({ "join_rule": join_rule }),
            ),
            NewEvent::state(
                TimelineEventType::RoomHistoryVisibility,
                "",
                json!({ "history_visibility": "shared" }),
            ),
        ];
        if preset != "public_chat" {
            preset_events.push(NewEvent::state(
                TimelineEventType::RoomGuestAccess,
                "",
                json!({ "guest_access": "can_join" }),
            ));
        }
        // Private rooms and direct chats are end-to-end encrypted from the start.
        // Appservices' users (bridges) get no default encryption: many bridges cannot read
        // encrypted rooms; one that wants encryption asks for it in initial_state.
        let encrypt = !self.is_appservice_user(creator)
            && match self.config.encryption_by_default {
                EncryptionDefault::Private => preset != "public_chat" || req.is_direct,
                EncryptionDefault::All => true,
                EncryptionDefault::Off => false,
            };
        if encrypt {
            preset_events.push(NewEvent::state(
                TimelineEventType::RoomEncryption,
                "",
                json!({ "algorithm": "m.megolm.v1.aes-sha2" }),
            ));
        }
        // 6. initial_state overrides the preset's events of the same type and key
        preset_events.retain(|p| {
            !req.initial_state
                .iter()
                .any(|i| i.kind == p.kind && i.state_key == p.state_key)
        });
        for ev in preset_events.into_iter().chain(req.initial_state) {
            self.append(&room_id, creator, ev, None).await?;
        }
        // 7. name and topic
        if let Some(name) = req.name {
            self.append(
                &room_id,
                creator,
                NewEvent::state(TimelineEventType::RoomName, "", json!({ "name": name })),
                None,
            )
            .await?;
        }
        if let Some(topic) = req.topic {
            self.append(
                &room_id,
                creator,
                NewEvent::state(TimelineEventType::RoomTopic, "", json!({ "topic": topic })),
                None,
            )
            .await?;
        }
        // 8. invites
        for user in &req.invite {
            let mut c = json!({ "membership": "invite" });
            if req.is_direct {
                c["is_direct"] = true.into();
            }
            self.append(
                &room_id,
                creator,
                NewEvent::state(TimelineEventType::RoomMember, user.as_str(), c),
                None,
            )
            .await?;
        }
        if let Some(alias) = alias {
            self.set_alias(&alias, &room_id, creator).await?;
        }
        if req.public {
            self.set_published(&room_id, true).await?;
        }
        Ok(room_id)
    }

    /// Joins a room the server knows.
    pub async fn join_room(&self, user_id: &UserId, room_id: &RoomId) -> Result<()> {
        if self.room_record(room_id)?.is_none() {
            return Err(Error::not_found(
                "Room not found (rooms on other servers need federation)",
            ));
        }
        if self.is_joined(user_id, room_id)? {
            return Ok(());
        }
        let content = self.member_content(user_id, "join")?;
        self.append(
            room_id,
            user_id,
            NewEvent::state(TimelineEventType::RoomMember, user_id.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    /// Changes another user's membership (invite, kick, ban, unban) with an optional reason.
    pub async fn set_membership(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        membership: &str,
        reason: Option<String>,
    ) -> Result<()> {
        if self.room_record(room_id)?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        if membership == "invite"
            && self.is_local(target)
            && self.account(target)?.is_none()
            && !self.query_appservice_user(target).await
        {
            return Err(Error::not_found(format!("Unknown user {target}")));
        }
        let mut content = json!({ "membership": membership });
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        if membership == "invite" && self.is_joined(target, room_id)? {
            return Err(Error::forbidden(format!("{target} is already in the room")));
        }
        self.append(
            room_id,
            sender,
            NewEvent::state(TimelineEventType::RoomMember, target.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    pub async fn leave_room(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        reason: Option<String>,
    ) -> Result<()> {
        match self.membership(user_id, room_id)? {
            Some(m)
                if m.membership == "join"
                    || m.membership == "invite"
                    || m.membership == "knock" => {}
            Some(m) if m.membership == "leave" => return Ok(()),
            _ => return Err(Error::forbidden("You are not in this room")),
        }
        self.set_membership(user_id, room_id, user_id, "leave", reason)
            .await
    }

    /// Forgets a room the user has left: it no longer shows up in their syncs.
    pub async fn forget_room(&self, user_id: &UserId, room_id: &RoomId) -> Result<()> {
        match self.membership(user_id, room_id)? {
            Some(m) if m.membership == "leave" || m.membership == "ban" => {
                let mut b = Batch::default();
                b.delete(
                    Table::Memberships,
                    &key(&[user_id.as_bytes(), room_id.as_bytes()]),
                );
                self.write(b).await
            }
            Some(_) => Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Unknown,
                "Leave the room before forgetting it",
            )),
            None => Err(Error::not_found("You were never in this room")),
        }
    }

    /// Sets display name and/or avatar and mirrors them into every joined room.
    pub async fn set_profile(
        &self,
        user_id: &UserId,
        displayname: Option<Option<String>>,
        avatar_url: Option<Option<ruma::OwnedMxcUri>>,
    ) -> Result<()> {
        let mut account = self
            .account(user_id)?
            .ok_or_else(|| Error::not_found("No such user"))?;
        if let Some(d) = displayname {
            account.displayname = d;
        }
        if let Some(a) = avatar_url {
            account.avatar_url = a;
        }
        self.set_account(user_id, &account).await?;
        for room_id in self.rooms_with_membership(user_id, &["join"])? {
            let content = self.member_content(user_id, "join")?;
            let ev = NewEvent::state(TimelineEventType::RoomMember, user_id.as_str(), content);
            if let Err(e) = self.append(&room_id, user_id, ev, None).await {
                tracing::warn!(%room_id, "profile update not mirrored: {e}");
            }
        }
        Ok(())
    }

    /// The user's power level in a room (creators of v12 rooms rank above every number).
    pub fn power_level(&self, room_id: &RoomId, user_id: &UserId) -> Result<i64> {
        let record = self
            .room_record(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = rules_for(&record.version)?;
        if rules.authorization.explicitly_privilege_room_creators {
            let create = self
                .event(&record.create_event_id)?
                .ok_or_else(|| Error::internal("create event missing"))?;
            let extra = create
                .content()
                .get("additional_creators")
                .cloned()
                .unwrap_or_default();
            let is_creator = create.sender().as_deref() == Some(user_id)
                || extra
                    .as_array()
                    .is_some_and(|a| a.iter().any(|u| u.as_str() == Some(user_id.as_str())));
            if is_creator {
                return Ok(i64::MAX);
            }
        }
        let pl = self.state_content(room_id, &StateEventType::RoomPowerLevels, "")?;
        Ok(match pl {
            Some(pl) => pl
                .get("users")
                .and_then(|u| u.get(user_id.as_str()))
                .or_else(|| pl.get("users_default"))
                .and_then(as_int)
                .unwrap_or(0),
            None => {
                let create = self.event(&record.create_event_id)?;
                if create.and_then(|c| c.sender()).as_deref() == Some(user_id) {
                    100
                } else {
                    0
                }
            }
        })
    }
}

/// Power levels may be numbers or (in old rooms) numeric strings.
pub fn as_int(v: &JsonValue) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

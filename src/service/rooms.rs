//! Rooms as clients change them: creation, membership (join, invite, leave, kick, ban,
//! unban, forget), sending messages, state and redactions, and profile changes mirrored into
//! member events.

use std::sync::Arc;

use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId,
    UserId,
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
};
use serde_json::{Value as JsonValue, json};

use super::{
    appservice::Appservices,
    core::Core,
    directory::Directory,
    federation::rooms::FederatedRooms,
    timeline::{NewEvent, Timeline, append::Txn, rules_for},
    users::Users,
};
use crate::{
    config::{EncryptionDefault, SUPPORTED_ROOM_VERSIONS},
    error::{Error, Result},
    store::{Batch, MEMBERSHIPS},
};

/// The longest display name, in characters (as Synapse).
pub const MAX_DISPLAYNAME_CHARS: usize = 256;

/// What a moderator does to another member.
#[derive(Clone, Copy, Debug)]
pub enum Moderation {
    Kick,
    Ban,
    Unban,
}

/// Room operations clients ask for. Depends on [`Core`], [`Users`], [`Timeline`],
/// [`Directory`] and [`Appservices`].
pub struct Rooms {
    core: Arc<Core>,
    users: Arc<Users>,
    timeline: Arc<Timeline>,
    directory: Arc<Directory>,
    appservices: Arc<Appservices>,
    federated: Arc<FederatedRooms>,
}

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

impl Rooms {
    pub fn new(
        core: Arc<Core>,
        users: Arc<Users>,
        timeline: Arc<Timeline>,
        directory: Arc<Directory>,
        appservices: Arc<Appservices>,
        federated: Arc<FederatedRooms>,
    ) -> Self {
        Self {
            core,
            users,
            timeline,
            directory,
            appservices,
            federated,
        }
    }

    /// A member event's content; joins and invites carry the user's display name and avatar.
    fn member_content(&self, user_id: &UserId, membership: MembershipState) -> Result<JsonValue> {
        let mut c = json!({ "membership": membership });
        if matches!(membership, MembershipState::Join | MembershipState::Invite)
            && let Some(account) = self.users.account(user_id)?
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
    pub async fn create(&self, creator: &UserId, req: CreateRoom) -> Result<OwnedRoomId> {
        let version = req
            .room_version
            .clone()
            .unwrap_or_else(|| self.core.config.default_room_version.clone());
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
                let alias = ruma::OwnedRoomAliasId::try_from(format!(
                    "#{local}:{}",
                    self.core.server_name()
                ))
                .map_err(|e| {
                    Error::new(
                        http::StatusCode::BAD_REQUEST,
                        ruma::api::error::ErrorKind::InvalidParam,
                        format!("Invalid alias: {e}"),
                    )
                })?;
                if self.directory.resolve_alias(&alias)?.is_some() {
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
            if self.users.is_local(user) && !self.appservices.user_exists(user).await? {
                return Err(Error::not_found(format!("Unknown user {user}")));
            }
        }

        // The spec's /createRoom steps, as one list of events built and written together.
        let mut events = Vec::new();
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
        events.push(NewEvent::state(
            TimelineEventType::RoomCreate,
            "",
            JsonValue::Object(create),
        ));

        // 2. the creator joins
        events.push(NewEvent::state(
            TimelineEventType::RoomMember,
            creator.as_str(),
            self.member_content(creator, MembershipState::Join)?,
        ));

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
        events.push(NewEvent::state(TimelineEventType::RoomPowerLevels, "", pl));

        // 4. canonical alias
        if let Some(alias) = &alias {
            events.push(NewEvent::state(
                TimelineEventType::RoomCanonicalAlias,
                "",
                json!({ "alias": alias }),
            ));
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
        let encrypt = !self.appservices.is_appservice_user(creator)
            && match self.core.config.encryption_by_default {
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
        events.extend(preset_events);
        events.extend(req.initial_state);
        // 7. name and topic
        if let Some(name) = req.name {
            events.push(NewEvent::state(
                TimelineEventType::RoomName,
                "",
                json!({ "name": name }),
            ));
        }
        if let Some(topic) = req.topic {
            events.push(NewEvent::state(
                TimelineEventType::RoomTopic,
                "",
                json!({ "topic": topic }),
            ));
        }
        // 8. invites (of other servers' users: once the room exists, as their servers must
        // countersign them)
        let invite_content = || {
            let mut c = json!({ "membership": MembershipState::Invite });
            if req.is_direct {
                c["is_direct"] = true.into();
            }
            c
        };
        let (local, remote): (Vec<&OwnedUserId>, Vec<&OwnedUserId>) =
            req.invite.iter().partition(|u| self.users.is_local(u));
        for user in local {
            events.push(NewEvent::state(
                TimelineEventType::RoomMember,
                user.as_str(),
                invite_content(),
            ));
        }
        let room_id = self.timeline.create_room(creator, &version, events).await?;
        for user in remote {
            if let Err(e) = self
                .invite_with(creator, &room_id, user, invite_content(), None)
                .await
            {
                tracing::warn!(%room_id, "inviting {user} failed: {e:?}");
            }
        }
        if let Some(alias) = alias {
            self.directory.set_alias(&alias, &room_id, creator).await?;
        }
        if req.public {
            self.directory.set_published(&room_id, true).await?;
        }
        Ok(room_id)
    }

    fn append<'a>(
        &'a self,
        room_id: &'a RoomId,
        sender: &'a UserId,
        ev: NewEvent,
        txn: Option<Txn>,
    ) -> impl std::future::Future<Output = Result<OwnedEventId>> + 'a {
        self.timeline.append(room_id, sender, ev, txn)
    }

    /// Joins a room the server knows and someone is still in (as Synapse: a room everyone
    /// left is gone, M_NOT_FOUND).
    pub async fn join(&self, user_id: &UserId, room_id: &RoomId) -> Result<()> {
        self.join_via(user_id, room_id, &[]).await
    }

    /// Joins a room: one this server is in on the spot, else (federation on) through the
    /// servers `via` names, the room ID's server and those of its members this server knows.
    pub async fn join_via(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
    ) -> Result<()> {
        let known = self.timeline.room(room_id)?.is_some();
        if known && self.timeline.is_joined(user_id, room_id)? {
            return Ok(());
        }
        let content = self.member_content(user_id, MembershipState::Join)?;
        let members = if known {
            self.timeline.joined_members(room_id)?
        } else {
            Vec::new()
        };
        let local_member = members.iter().any(|m| self.users.is_local(m));
        if !local_member && self.core.config.federates() {
            let mut servers: Vec<OwnedServerName> = via.to_vec();
            servers.extend(self.outside_room_servers(user_id, room_id)?);
            servers.extend(room_id.server_name().map(ToOwned::to_owned));
            servers.extend(members.iter().map(|m| m.server_name().to_owned()));
            let mut seen = std::collections::HashSet::new();
            servers.retain(|s| seen.insert(s.clone()));
            if !servers.is_empty() {
                return self
                    .federated
                    .join_remote(user_id, room_id, &servers, content)
                    .await;
            }
        }
        if !known {
            return Err(Error::not_found("Room not found"));
        }
        if members.is_empty() {
            return Err(Error::not_found("Everyone has left this room"));
        }
        let mut content = content;
        if let Some(by) = self.timeline.restricted_join_authoriser(room_id, user_id)? {
            content["join_authorised_via_users_server"] = by.as_str().into();
        }
        self.append(
            room_id,
            user_id,
            NewEvent::state(TimelineEventType::RoomMember, user_id.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    /// Joins a room by ID or alias; returns the room's ID.
    pub async fn join_by_id_or_alias(
        &self,
        user_id: &UserId,
        room: &ruma::RoomOrAliasId,
        via: &[OwnedServerName],
    ) -> Result<OwnedRoomId> {
        let (room_id, via) = self.resolve_with_servers(room, via).await?;
        self.join_via(user_id, &room_id, &via).await?;
        Ok(room_id)
    }

    /// A room ID or alias as a room ID, with `via` and the servers an alias of another server
    /// names to reach it through.
    async fn resolve_with_servers(
        &self,
        room: &ruma::RoomOrAliasId,
        via: &[OwnedServerName],
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let mut via = via.to_vec();
        let room_id = match <&RoomId>::try_from(room) {
            Ok(id) => id.to_owned(),
            Err(alias) if alias.server_name() != self.core.server_name() => {
                let (room_id, servers) = self.federated.resolve_remote_alias(alias).await?;
                via.extend(servers);
                room_id
            }
            Err(alias) => self.directory.require_alias(alias).await?,
        };
        via.extend(room_id.server_name().map(ToOwned::to_owned));
        Ok((room_id, via))
    }

    /// Knocks on a room (its join rule is `knock`): on this server's own room at once, else
    /// through `via` and the servers its alias names. Returns the room's ID.
    pub async fn knock(
        &self,
        user_id: &UserId,
        room: &ruma::RoomOrAliasId,
        via: &[OwnedServerName],
        reason: Option<String>,
    ) -> Result<OwnedRoomId> {
        let (room_id, via) = self.resolve_with_servers(room, via).await?;
        let mut content = self.member_content(user_id, MembershipState::Knock)?;
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        let local_member = self.timeline.room(&room_id)?.is_some()
            && self
                .timeline
                .joined_members(&room_id)?
                .iter()
                .any(|m| self.users.is_local(m));
        if local_member || !self.core.config.federates() {
            self.timeline.known_room(&room_id)?;
            let ev = NewEvent::state(TimelineEventType::RoomMember, user_id.as_str(), content);
            self.append(&room_id, user_id, ev, None).await?;
        } else {
            self.federated
                .knock_remote(user_id, &room_id, &via, content)
                .await?;
        }
        Ok(room_id)
    }

    /// Sends a member event about `target` with this content and an optional reason.
    async fn set_membership(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        mut content: JsonValue,
        reason: Option<String>,
    ) -> Result<()> {
        self.timeline.known_room(room_id)?;
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        let ev = NewEvent::state(TimelineEventType::RoomMember, target.as_str(), content);
        self.append(room_id, sender, ev, None).await?;
        Ok(())
    }

    /// Invites a user who exists (locally, or as an appservice's user) and is not in the room.
    /// The invite shows the invitee's display name and avatar, so the room can name them.
    pub async fn invite(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        self.timeline.require_joined(sender, room_id)?;
        if self.users.is_local(target) && !self.appservices.user_exists(target).await? {
            return Err(Error::not_found(format!("Unknown user {target}")));
        }
        if self.timeline.is_joined(target, room_id)? {
            return Err(Error::forbidden(format!("{target} is already in the room")));
        }
        let content = self.member_content(target, MembershipState::Invite)?;
        self.invite_with(sender, room_id, target, content, reason)
            .await
    }

    /// Sends an invite with this content: for another server's user, countersigned by their
    /// server before it is kept.
    async fn invite_with(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        mut content: JsonValue,
        reason: Option<String>,
    ) -> Result<()> {
        if self.users.is_local(target) {
            return self
                .set_membership(sender, room_id, target, content, reason)
                .await;
        }
        // Another server's user: their server countersigns the invite before it is kept.
        if !self.core.config.federates() {
            return Err(Error::forbidden("This server does not federate"));
        }
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        let ev = NewEvent::state(TimelineEventType::RoomMember, target.as_str(), content);
        self.timeline
            .append_countersigned(room_id, sender, ev, |version, id, obj| {
                self.federated.invite_remote(room_id, version, id, obj)
            })
            .await?;
        Ok(())
    }

    /// For a room this server is not in that `user` was invited to or knocked on: the
    /// servers that can reach it (the inviter's, and those of the senders of the room state
    /// the invite or knock showed).
    fn outside_room_servers(
        &self,
        user: &UserId,
        room_id: &RoomId,
    ) -> Result<Vec<OwnedServerName>> {
        let Some(m) = self.timeline.membership(user, room_id)? else {
            return Ok(Vec::new());
        };
        if !matches!(
            m.membership,
            MembershipState::Invite | MembershipState::Knock
        ) {
            return Ok(Vec::new());
        }
        let Some(ev) = self.timeline.event(&m.event_id)? else {
            return Ok(Vec::new());
        };
        let own = self.core.server_name();
        let mut out: Vec<OwnedServerName> = ev
            .sender()
            .map(|s| s.server_name().to_owned())
            .into_iter()
            .collect();
        let unsigned = ev.pdu.get("unsigned").cloned().map(JsonValue::from);
        let shown = unsigned
            .as_ref()
            .and_then(|u| u["invite_room_state"].as_array().cloned())
            .unwrap_or_default();
        out.extend(
            shown
                .iter()
                .filter_map(|e| e["sender"].as_str())
                .filter_map(|s| UserId::parse(s).ok())
                .map(|u| u.server_name().to_owned()),
        );
        let mut seen = std::collections::HashSet::new();
        out.retain(|s| s != own && seen.insert(s.clone()));
        Ok(out)
    }

    /// Kicks, bans or unbans a user: a kick needs them in the room (or invited or knocking),
    /// an unban needs them banned.
    pub async fn moderate(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        action: Moderation,
        reason: Option<String>,
    ) -> Result<()> {
        let current = self.timeline.membership_state(target, room_id)?;
        let (allowed, new) = match action {
            Moderation::Kick => (
                matches!(
                    current,
                    MembershipState::Join | MembershipState::Invite | MembershipState::Knock
                ),
                MembershipState::Leave,
            ),
            Moderation::Ban => (true, MembershipState::Ban),
            Moderation::Unban => (current == MembershipState::Ban, MembershipState::Leave),
        };
        if !allowed {
            return Err(Error::forbidden(match action {
                Moderation::Unban => "The user is not banned",
                _ => "The user is not in the room",
            }));
        }
        let content = json!({ "membership": new });
        self.set_membership(sender, room_id, target, content, reason)
            .await
    }

    /// Leaves a room (or rejects an invite, or withdraws a knock).
    pub async fn leave(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        reason: Option<String>,
    ) -> Result<()> {
        match self
            .timeline
            .membership(user_id, room_id)?
            .map(|m| m.membership)
        {
            Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock) => {}
            Some(MembershipState::Leave) => return Ok(()),
            _ => return Err(Error::forbidden("You are not in this room")),
        }
        let mut content = json!({ "membership": MembershipState::Leave });
        // An invite to (or a knock on) a room of another server is withdrawn through it.
        if self.timeline.room(room_id)?.is_none() {
            let servers = self.outside_room_servers(user_id, room_id)?;
            if let Some(reason) = reason {
                content["reason"] = reason.into();
            }
            return self
                .federated
                .leave_remote(user_id, room_id, &servers, content)
                .await;
        }
        self.set_membership(user_id, room_id, user_id, content, reason)
            .await
    }

    /// Forgets a room the user has left: it no longer shows up in their syncs.
    pub async fn forget(&self, user_id: &UserId, room_id: &RoomId) -> Result<()> {
        match self
            .timeline
            .membership(user_id, room_id)?
            .map(|m| m.membership)
        {
            Some(MembershipState::Leave | MembershipState::Ban) => {
                let mut b = Batch::default();
                b.delete(&MEMBERSHIPS, (user_id, room_id));
                self.core.write(b).await
            }
            Some(_) => Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Unknown,
                "Leave the room before forgetting it",
            )),
            None => Err(Error::not_found("You were never in this room")),
        }
    }

    /// Sends a message event (or any non-state event) to a room the sender is joined to.
    pub async fn send_message(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        ev: NewEvent,
        txn: Txn,
    ) -> Result<OwnedEventId> {
        self.timeline.require_joined(sender, room_id)?;
        self.append(room_id, sender, ev, Some(txn)).await
    }

    /// Sends a state event; `m.room.canonical_alias` must name aliases of this room. Sending
    /// the same content as the current state event by the same sender changes nothing and
    /// returns that event (as Synapse).
    pub async fn send_state(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        ev: NewEvent,
    ) -> Result<OwnedEventId> {
        self.timeline.require_joined(sender, room_id)?;
        if ev.kind == TimelineEventType::RoomCanonicalAlias {
            self.directory.check_canonical_alias(room_id, &ev.content)?;
        }
        if let Some(current) = self.unchanged_state(room_id, sender, &ev)? {
            return Ok(current);
        }
        self.append(room_id, sender, ev, None).await
    }

    /// The current state event that `ev` would repeat: same type, key, sender and content.
    fn unchanged_state(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        ev: &NewEvent,
    ) -> Result<Option<OwnedEventId>> {
        let Some(key) = &ev.state_key else {
            return Ok(None);
        };
        let current = self
            .timeline
            .state_event(room_id, &ev.kind.to_string().into(), key)?;
        Ok(current
            .filter(|c| c.sender().as_deref() == Some(sender) && c.content() == ev.content)
            .map(|c| c.event_id))
    }

    /// Redacts an event (the redaction rule is checked on the append path).
    pub async fn redact(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &EventId,
        reason: Option<String>,
        txn: Txn,
    ) -> Result<OwnedEventId> {
        self.timeline.require_joined(sender, room_id)?;
        let mut content = json!({});
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        let ev = NewEvent::redaction(target.to_owned(), content);
        self.append(room_id, sender, ev, Some(txn)).await
    }

    /// Sets display name and/or avatar and mirrors them into every joined room.
    pub async fn set_profile(
        &self,
        user_id: &UserId,
        displayname: Option<Option<String>>,
        avatar_url: Option<Option<ruma::OwnedMxcUri>>,
    ) -> Result<()> {
        if let Some(Some(name)) = &displayname
            && name.chars().count() > MAX_DISPLAYNAME_CHARS
        {
            return Err(Error::invalid_param(format!(
                "Display names are at most {MAX_DISPLAYNAME_CHARS} characters"
            )));
        }
        let mut account = self
            .users
            .account(user_id)?
            .ok_or_else(|| Error::not_found("No such user"))?;
        if let Some(d) = displayname {
            account.displayname = d;
        }
        if let Some(a) = avatar_url {
            account.avatar_url = a;
        }
        self.users.set_account(user_id, &account).await?;
        for room_id in self
            .timeline
            .rooms_with_membership(user_id, &[MembershipState::Join])?
        {
            let content = self.member_content(user_id, MembershipState::Join)?;
            let ev = NewEvent::state(TimelineEventType::RoomMember, user_id.as_str(), content);
            if self.unchanged_state(&room_id, user_id, &ev)?.is_some() {
                continue; // the room already shows this profile
            }
            if let Err(e) = self.append(&room_id, user_id, ev, None).await {
                tracing::warn!(%room_id, "profile update not mirrored: {e}");
            }
        }
        Ok(())
    }
}

/// A member's name and avatar as their member event shows them.
pub struct MemberProfile {
    pub displayname: Option<String>,
    pub avatar_url: Option<ruma::OwnedMxcUri>,
}

impl Rooms {
    /// `/joined_members`: for members, and for anyone in a world-readable room.
    pub fn joined_profiles(
        &self,
        user: &UserId,
        room_id: &RoomId,
    ) -> Result<Vec<(OwnedUserId, MemberProfile)>> {
        let reader = self.timeline.reader(user, room_id)?;
        if reader.current() != MembershipState::Join
            && reader.current_visibility()
                != ruma::events::room::history_visibility::HistoryVisibility::WorldReadable
        {
            return Err(Error::forbidden("You are not joined to this room"));
        }
        Ok(self
            .timeline
            .members(room_id)?
            .into_iter()
            .filter(|(_, m, _)| *m == MembershipState::Join)
            .map(|(user, _, ev)| {
                let profile = MemberProfile {
                    displayname: ev.content_str("displayname"),
                    avatar_url: ev.content_str("avatar_url").map(Into::into),
                };
                (user, profile)
            })
            .collect())
    }
}

/// State a room upgrade carries over to the new room (as Synapse does).
const CARRIED_OVER: [&str; 9] = [
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.pinned_events",
];

impl Rooms {
    /// `/upgrade`: a new room of `new_version` that continues `old` (its state, bans, aliases and
    /// directory listing), and a tombstone in `old` pointing at it; the old room then lets only
    /// moderators speak. Needs the power to send `m.room.tombstone`.
    pub async fn upgrade(
        &self,
        user: &UserId,
        old: &RoomId,
        new_version: &RoomVersionId,
        additional_creators: Vec<OwnedUserId>,
    ) -> Result<OwnedRoomId> {
        if !SUPPORTED_ROOM_VERSIONS.contains(new_version) {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                format!("Room version {new_version} is not supported"),
            ));
        }
        self.timeline.require_joined(user, old)?;
        let levels = self.timeline.power_levels(old)?;
        if !levels.user_can_send_state(user, ruma::events::StateEventType::RoomTombstone) {
            return Err(Error::forbidden("You may not upgrade this room"));
        }
        let rules = rules_for(new_version)?;
        let record = self.timeline.known_room(old)?;
        let old_create = self
            .timeline
            .event(&record.create_event_id)?
            .map(|e| e.content())
            .unwrap_or_default();

        // 1. The new room's create event names its predecessor.
        let last = record.extremities.first().cloned();
        let mut create = serde_json::Map::new();
        create.insert("room_version".into(), new_version.as_str().into());
        create.insert(
            "predecessor".into(),
            json!({ "room_id": old, "event_id": last }),
        );
        for carried in ["type", "m.federate"] {
            if let Some(v) = old_create.get(carried) {
                create.insert(carried.into(), v.clone());
            }
        }
        if !rules.authorization.use_room_create_sender {
            create.insert("creator".into(), user.as_str().into());
        }
        if rules.authorization.additional_room_creators && !additional_creators.is_empty() {
            create.insert("additional_creators".into(), json!(additional_creators));
        }
        let mut events = vec![
            NewEvent::state(TimelineEventType::RoomCreate, "", JsonValue::Object(create)),
            NewEvent::state(
                TimelineEventType::RoomMember,
                user.as_str(),
                self.member_content(user, MembershipState::Join)?,
            ),
        ];

        // 2. Power levels, with the upgrader able to send what follows.
        let mut power = self
            .timeline
            .state_content(old, &StateEventType::RoomPowerLevels, "")?
            .unwrap_or_else(|| json!({}));
        let creators: Vec<&UserId> = std::iter::once(user)
            .chain(additional_creators.iter().map(|u| &**u))
            .collect();
        if rules.authorization.explicitly_privilege_room_creators {
            // Creators rank above every number and must not be listed.
            if let Some(users) = power.get_mut("users").and_then(|u| u.as_object_mut()) {
                for c in &creators {
                    users.remove(c.as_str());
                }
            }
            events.push(NewEvent::state(
                TimelineEventType::RoomPowerLevels,
                "",
                power.clone(),
            ));
        } else {
            let needed = i64::from(levels.max()).max(100);
            let mut temporary = power.clone();
            temporary["users"][user.as_str()] = needed.into();
            events.push(NewEvent::state(
                TimelineEventType::RoomPowerLevels,
                "",
                temporary,
            ));
        }

        // 3. State and bans carried over.
        for ty in CARRIED_OVER {
            if let Some(content) = self
                .timeline
                .state_content(old, &ty.into(), "")?
                .filter(|c| c.as_object().is_some_and(|o| !o.is_empty()))
            {
                events.push(NewEvent::state(ty, "", content));
            }
        }
        for (banned, m, _) in self.timeline.members(old)? {
            if m == MembershipState::Ban {
                events.push(NewEvent::state(
                    TimelineEventType::RoomMember,
                    banned.as_str(),
                    json!({ "membership": MembershipState::Ban }),
                ));
            }
        }
        if !rules.authorization.explicitly_privilege_room_creators {
            events.push(NewEvent::state(
                TimelineEventType::RoomPowerLevels,
                "",
                power,
            ));
        }
        let new = self.timeline.create_room(user, new_version, events).await?;

        // 4. Aliases and the directory listing move to the new room.
        self.directory.move_aliases(old, &new).await?;
        if let Some(alias) =
            self.timeline
                .state_content(old, &StateEventType::RoomCanonicalAlias, "")?
        {
            let ev = NewEvent::state(TimelineEventType::RoomCanonicalAlias, "", alias);
            if let Err(e) = self.append(&new, user, ev, None).await {
                tracing::info!(%new, "the canonical alias did not move: {e}");
            }
        }
        if self.directory.is_published(old)? {
            self.directory.set_published(&new, true).await?;
            self.directory.set_published(old, false).await?;
        }

        // 5. The old room points at the new one and goes quiet.
        let tombstone = json!({
            "body": "This room has been replaced",
            "replacement_room": new,
        });
        self.append(
            old,
            user,
            NewEvent::state(TimelineEventType::RoomTombstone, "", tombstone),
            None,
        )
        .await?;
        if let Some(mut power) =
            self.timeline
                .state_content(old, &StateEventType::RoomPowerLevels, "")?
        {
            let users_default = power
                .get("users_default")
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            let quiet = (users_default + 1).max(50);
            power["events_default"] = quiet.into();
            power["invite"] = quiet.into();
            let ev = NewEvent::state(TimelineEventType::RoomPowerLevels, "", power);
            if let Err(e) = self.append(old, user, ev, None).await {
                tracing::info!(%old, "the old room stays open: {e}");
            }
        }
        Ok(new)
    }
}

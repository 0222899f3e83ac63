//! Room aliases and the public room directory.

use std::sync::Arc;

use ruma::{
    OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, UInt, UserId,
    api::error::ErrorKind,
    events::{
        StateEventType,
        room::{
            history_visibility::HistoryVisibility,
            join_rules::{AllowRule, JoinRule, RoomJoinRulesEventContent},
            member::MembershipState,
        },
    },
    room::{JoinRuleSummary, RoomSummary, RoomType},
};
use serde_json::Value as JsonValue;

use super::{
    appservice::Appservices,
    core::Core,
    federation::Federation,
    timeline::{NewEvent, Timeline},
    users::Users,
};
use crate::{
    error::{Error, Result},
    store::{ALIASES, AliasRecord, Batch, PUBLIC_ROOMS},
};

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

/// One page of the public room directory.
pub struct DirectoryPage {
    pub chunk: Vec<PublicRoom>,
    pub next: Option<String>,
    pub prev: Option<String>,
    pub total: usize,
}

/// Most rooms one `/hierarchy` request looks at (a space of spaces can be large).
pub const MAX_HIERARCHY_ROOMS: usize = 500;
/// Most rooms of other servers one `/hierarchy` request asks about.
pub const MAX_REMOTE_HIERARCHY_ROOMS: usize = 20;

fn bad_alias(message: impl Into<String>) -> Error {
    Error::new(http::StatusCode::BAD_REQUEST, ErrorKind::BadAlias, message)
}

/// Aliases and the directory. Depends on [`Core`], [`Users`], [`Timeline`] and
/// [`Appservices`].
pub struct Directory {
    core: Arc<Core>,
    users: Arc<Users>,
    timeline: Arc<Timeline>,
    appservices: Arc<Appservices>,
    /// Asks other servers about the rooms of a space this server is not in.
    federation: Arc<Federation>,
}

impl Directory {
    pub fn new(
        core: Arc<Core>,
        users: Arc<Users>,
        timeline: Arc<Timeline>,
        appservices: Arc<Appservices>,
        federation: Arc<Federation>,
    ) -> Self {
        Self {
            core,
            users,
            timeline,
            appservices,
            federation,
        }
    }

    pub fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        Ok(self.core.store.get(&ALIASES, alias)?.map(|r| r.room_id))
    }

    /// Resolves an alias, asking the appservice that claims it when it is unknown.
    pub async fn resolve_alias_or_ask(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        if let Some(room) = self.resolve_alias(alias)? {
            return Ok(Some(room));
        }
        if self.appservices.query_alias(alias).await {
            return self.resolve_alias(alias);
        }
        Ok(None)
    }

    /// Like [`Directory::resolve_alias_or_ask`], or M_NOT_FOUND.
    pub async fn require_alias(&self, alias: &RoomAliasId) -> Result<OwnedRoomId> {
        self.resolve_alias_or_ask(alias)
            .await?
            .ok_or_else(|| Error::not_found("Room alias not found"))
    }

    /// Makes `alias` point at a room the user is joined to.
    pub async fn set_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<()> {
        if alias.server_name() != self.core.server_name() {
            return Err(Error::invalid_param("Aliases must be on this server"));
        }
        self.timeline.known_room(room_id)?;
        self.timeline.require_joined(user, room_id)?;
        if let Some(owner) = self.appservices.exclusive_alias_owner(alias)
            && !owner.is_user(user)
        {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ErrorKind::Exclusive,
                format!("{alias} is reserved by the appservice {}", owner.id()),
            ));
        }
        let lock = self.core.lock("aliases");
        let _guard = lock.lock().await;
        if self.resolve_alias(alias)?.is_some() {
            return Err(Error::new(
                http::StatusCode::CONFLICT,
                ErrorKind::Unknown,
                "Alias already exists",
            ));
        }
        let mut b = Batch::default();
        b.put(
            &ALIASES,
            alias,
            &AliasRecord {
                room_id: room_id.to_owned(),
                creator: user.to_owned(),
            },
        );
        self.core.write(b).await
    }

    /// Deletes an alias: its creator, a server admin or a room moderator may.
    pub async fn delete_alias(&self, alias: &RoomAliasId, user: &UserId) -> Result<()> {
        let record = self
            .core
            .store
            .get(&ALIASES, alias)?
            .ok_or_else(|| Error::not_found("Unknown alias"))?;
        let is_admin = self.users.account(user)?.is_some_and(|a| a.admin);
        let can_state = self
            .timeline
            .power_levels(&record.room_id)?
            .user_can_send_state(user, StateEventType::RoomCanonicalAlias);
        if record.creator != user && !is_admin && !can_state {
            return Err(Error::forbidden(
                "Only the alias' creator or a room moderator may delete it",
            ));
        }
        let mut b = Batch::default();
        b.delete(&ALIASES, alias);
        self.core.write(b).await?;
        self.drop_from_canonical_alias(&record.room_id, alias, user)
            .await;
        Ok(())
    }

    /// Takes a deleted alias out of the room's `m.room.canonical_alias` (as the user who
    /// deleted it, when they may change that event), so clients and the directory stop showing
    /// an alias that no longer resolves.
    async fn drop_from_canonical_alias(
        &self,
        room_id: &RoomId,
        alias: &RoomAliasId,
        user: &UserId,
    ) {
        let Ok(Some(mut content)) =
            self.timeline
                .state_content(room_id, &StateEventType::RoomCanonicalAlias, "")
        else {
            return;
        };
        let mut changed = false;
        if content.get("alias").and_then(|a| a.as_str()) == Some(alias.as_str()) {
            if let Some(o) = content.as_object_mut() {
                o.remove("alias");
            }
            changed = true;
        }
        if let Some(alt) = content
            .get_mut("alt_aliases")
            .and_then(|a| a.as_array_mut())
        {
            let before = alt.len();
            alt.retain(|a| a.as_str() != Some(alias.as_str()));
            changed |= alt.len() != before;
        }
        if !changed {
            return;
        }
        let ev = NewEvent::state(StateEventType::RoomCanonicalAlias.to_string(), "", content);
        if let Err(e) = self.timeline.append(room_id, user, ev, None).await {
            tracing::info!(%room_id, %alias, "the canonical alias still names a deleted alias: {e}");
        }
    }

    /// Points every local alias of `from` at `to` (a room upgrade).
    pub async fn move_aliases(&self, from: &RoomId, to: &RoomId) -> Result<()> {
        let mut b = Batch::default();
        for item in self.core.store.scan(ALIASES.all()) {
            let ((alias,), mut record) = item?;
            if record.room_id == from {
                record.room_id = to.to_owned();
                b.put(&ALIASES, &alias, &record);
            }
        }
        self.core.write(b).await
    }

    /// Aliases on this server that point at the room.
    pub fn local_aliases(&self, room_id: &RoomId) -> Result<Vec<OwnedRoomAliasId>> {
        let mut out = Vec::new();
        for item in self.core.store.scan(ALIASES.all()) {
            let ((alias,), r) = item?;
            if r.room_id == room_id {
                out.push(alias);
            }
        }
        Ok(out)
    }

    /// The spec requires aliases in `m.room.canonical_alias` to be valid and, when they are
    /// ours, to point at the room.
    pub fn check_canonical_alias(&self, room_id: &RoomId, content: &JsonValue) -> Result<()> {
        let mut aliases: Vec<&JsonValue> = content
            .get("alt_aliases")
            .and_then(|a| a.as_array())
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        if let Some(a) = content.get("alias").filter(|a| !a.is_null()) {
            aliases.push(a);
        }
        for alias in aliases {
            let alias = alias
                .as_str()
                .ok_or_else(|| bad_alias("Aliases must be strings"))?;
            let parsed = RoomAliasId::parse(alias)
                .map_err(|_| bad_alias(format!("Invalid alias {alias}")))?;
            if parsed.server_name() == self.core.server_name()
                && self.resolve_alias(&parsed)?.as_deref() != Some(room_id)
            {
                return Err(bad_alias(format!("{alias} does not point to this room")));
            }
        }
        Ok(())
    }

    /// Publishes a room in the directory (or takes it out): for users who may change its
    /// canonical alias.
    pub async fn set_visibility(
        &self,
        user: &UserId,
        room_id: &RoomId,
        public: bool,
    ) -> Result<()> {
        self.timeline.require_joined(user, room_id)?;
        if !self
            .timeline
            .power_levels(room_id)?
            .user_can_send_state(user, StateEventType::RoomCanonicalAlias)
        {
            return Err(Error::forbidden(
                "You may not change this room's directory visibility",
            ));
        }
        self.set_published(room_id, public).await
    }

    pub async fn set_published(&self, room_id: &RoomId, published: bool) -> Result<()> {
        let mut b = Batch::default();
        if published {
            b.put(&PUBLIC_ROOMS, room_id, &());
        } else {
            b.delete(&PUBLIC_ROOMS, room_id);
        }
        self.core.write(b).await
    }

    /// Whether a known room is published, or M_NOT_FOUND.
    pub fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        self.timeline.known_room(room_id)?;
        Ok(self.core.store.contains(&PUBLIC_ROOMS, room_id)?)
    }

    /// Published rooms, most joined first, optionally filtered by a search term.
    pub fn public_rooms(&self, filter: Option<&str>) -> Result<Vec<PublicRoom>> {
        let term = filter.map(str::to_lowercase).filter(|t| !t.is_empty());
        let mut out = Vec::new();
        for item in self.core.store.scan(PUBLIC_ROOMS.all()) {
            let ((room_id,), ()) = item?;
            let room = self.describe(room_id)?;
            if let Some(term) = &term {
                let hay = [&room.name, &room.topic, &room.canonical_alias]
                    .iter()
                    .filter_map(|s| s.as_deref())
                    .any(|s| s.to_lowercase().contains(term));
                if !hay {
                    continue;
                }
            }
            out.push(room);
        }
        out.sort_by(|a, b| b.joined.cmp(&a.joined).then(a.room_id.cmp(&b.room_id)));
        Ok(out)
    }

    /// What the directory shows of a room, from its current state.
    fn describe(&self, room_id: OwnedRoomId) -> Result<PublicRoom> {
        let get = |ty: StateEventType, field: &str| self.timeline.state_str(&room_id, ty, field);
        Ok(PublicRoom {
            name: get(StateEventType::RoomName, "name")?,
            topic: get(StateEventType::RoomTopic, "topic")?,
            canonical_alias: get(StateEventType::RoomCanonicalAlias, "alias")?,
            avatar_url: get(StateEventType::RoomAvatar, "url")?,
            joined: self.timeline.joined_members(&room_id)?.len(),
            world_readable: get(StateEventType::RoomHistoryVisibility, "history_visibility")?
                .map(HistoryVisibility::from)
                == Some(HistoryVisibility::WorldReadable),
            guest_can_join: get(StateEventType::RoomGuestAccess, "guest_access")?.as_deref()
                == Some("can_join"),
            join_rule: get(StateEventType::RoomJoinRules, "join_rule")?
                .unwrap_or_else(|| "invite".into()),
            room_id,
        })
    }

    /// The rooms of a space and of its subspaces that `user` may see (`/hierarchy`), breadth
    /// first from `root`, down to `max_depth` levels: each room's summary and its
    /// `m.space.child` events. Without a user (another server asks), the rooms anyone may
    /// see. Children this server is not in, or the user may not see, are
    /// left out (their `m.space.child` event still lists them). At most [`MAX_HIERARCHY_ROOMS`]
    /// rooms are looked at. A root the user may not see is 403.
    pub async fn hierarchy(
        &self,
        root: &RoomId,
        user: Option<&UserId>,
        max_depth: usize,
        suggested_only: bool,
    ) -> Result<Vec<(RoomSummary, Vec<JsonValue>)>> {
        if self.timeline.room(root)?.is_none() {
            return Err(Error::not_found("Room not found"));
        }
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut remote_asks = 0;
        let mut queue = std::collections::VecDeque::from([(root.to_owned(), 0usize, Vec::new())]);
        let via = |ev: &JsonValue| -> Vec<ruma::OwnedServerName> {
            ev["content"]["via"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str()?.try_into().ok())
                .collect()
        };
        while let Some((room_id, depth, servers)) = queue.pop_front() {
            if out.len() >= MAX_HIERARCHY_ROOMS || !seen.insert(room_id.clone()) {
                continue;
            }
            let found = if self.timeline.room(&room_id)?.is_some() {
                self.local_hierarchy_room(&room_id, root, user, suggested_only)
                    .await?
            } else if user.is_some() && remote_asks < MAX_REMOTE_HIERARCHY_ROOMS {
                // A room this server is not in: asked of the servers its `m.space.child`
                // names, for a user's request only (another server asks them itself).
                remote_asks += 1;
                self.federation
                    .remote_hierarchy(&room_id, &servers, suggested_only)
                    .await
            } else {
                None
            };
            let Some((summary, children_state)) = found else {
                continue;
            };
            if depth < max_depth {
                for ev in &children_state {
                    if let Some(child) = ev["state_key"]
                        .as_str()
                        .and_then(|k| OwnedRoomId::try_from(k).ok())
                    {
                        queue.push_back((child, depth + 1, via(ev)));
                    }
                }
            }
            out.push((summary, children_state));
        }
        Ok(out)
    }

    /// One room of this server in a `/hierarchy`: its summary and its `m.space.child` events
    /// (with `via`, suggested only if asked), in the spec's order. None when `user` may not
    /// see it (403 for the root).
    async fn local_hierarchy_room(
        &self,
        room_id: &RoomId,
        root: &RoomId,
        user: Option<&UserId>,
        suggested_only: bool,
    ) -> Result<Option<(RoomSummary, Vec<JsonValue>)>> {
        let as_target: &ruma::RoomOrAliasId = room_id.into();
        let summary = match self.summary(as_target, user).await {
            Ok((summary, _)) => summary,
            Err(_) if room_id == root => {
                return Err(Error::forbidden("You may not see this room"));
            }
            Err(_) => return Ok(None),
        };
        let mut children: Vec<_> = self
            .timeline
            .state_of_type(room_id, "m.space.child")?
            .into_iter()
            .filter(|ev| {
                let content = ev.content();
                content["via"].as_array().is_some_and(|v| !v.is_empty())
                    && (!suggested_only || content["suggested"] == true)
            })
            .collect();
        // The spec's order: `order` (those with one first), then time, then room ID.
        children.sort_by_key(|ev| {
            let order = ev.content()["order"]
                .as_str()
                .filter(|o| o.len() <= 50 && o.chars().all(|c| (' '..='~').contains(&c)))
                .map(str::to_owned);
            (
                order.is_none(),
                order,
                ev.origin_server_ts(),
                ev.state_key().map(str::to_owned),
            )
        });
        let children_state: Vec<JsonValue> = children
            .iter()
            .map(|ev| {
                serde_json::json!({
                    "type": "m.space.child",
                    "state_key": ev.state_key(),
                    "content": ev.content(),
                    "sender": ev.sender(),
                    "origin_server_ts": ev.origin_server_ts(),
                })
            })
            .collect();
        Ok(Some((summary, children_state)))
    }

    /// The room summary (`/v1/room_summary`, MSC3266) of a room, and the caller's membership
    /// in it. Rooms the caller could neither read nor join are M_NOT_FOUND, as unknown rooms
    /// are, so the endpoint reveals nothing about private rooms.
    pub async fn summary(
        &self,
        room: &ruma::RoomOrAliasId,
        user: Option<&UserId>,
    ) -> Result<(RoomSummary, Option<MembershipState>)> {
        let not_found = || Error::not_found("Room not found");
        let room_id = match <&RoomId>::try_from(room) {
            Ok(id) => id.to_owned(),
            Err(alias) => self.resolve_alias(alias)?.ok_or_else(not_found)?,
        };
        let create = self
            .timeline
            .state_content(&room_id, &StateEventType::RoomCreate, "")?
            .ok_or_else(not_found)?;
        let membership = match user {
            Some(u) => Some(self.timeline.membership_state(u, &room_id)?),
            None => None,
        };
        let join_rule: JoinRule = self
            .timeline
            .state_content(&room_id, &StateEventType::RoomJoinRules, "")?
            .and_then(|c| serde_json::from_value::<RoomJoinRulesEventContent>(c).ok())
            .map_or(JoinRule::Invite, |c| c.join_rule);
        let info = self.describe(room_id.clone())?;
        let in_allowed_room = |rule: &JoinRule| -> Result<bool> {
            let (JoinRule::Restricted(r) | JoinRule::KnockRestricted(r)) = rule else {
                return Ok(false);
            };
            let Some(u) = user else { return Ok(false) };
            for allow in &r.allow {
                if let AllowRule::RoomMembership(m) = allow
                    && self.timeline.is_joined(u, &m.room_id)?
                {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let accessible = matches!(
            membership,
            Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock)
        ) || matches!(
            join_rule,
            JoinRule::Public | JoinRule::Knock | JoinRule::KnockRestricted(_)
        ) || info.world_readable
            || in_allowed_room(&join_rule)?;
        if !accessible {
            return Err(not_found());
        }
        let mut summary = RoomSummary::new(
            room_id.clone(),
            JoinRuleSummary::from(join_rule),
            info.guest_can_join,
            UInt::new_saturating(info.joined as u64),
            info.world_readable,
        );
        summary.name = info.name;
        summary.topic = info.topic;
        summary.canonical_alias = info.canonical_alias.and_then(|a| a.try_into().ok());
        summary.avatar_url = info.avatar_url.map(Into::into);
        summary.room_type = create
            .get("type")
            .and_then(|t| t.as_str())
            .map(RoomType::from);
        summary.room_version = Some(
            create
                .get("room_version")
                .and_then(|v| v.as_str())
                .unwrap_or("1")
                .try_into()
                .map_err(Error::internal)?,
        );
        summary.encryption = self
            .timeline
            .state_str(&room_id, StateEventType::RoomEncryption, "algorithm")?
            .map(Into::into);
        let membership = membership.filter(|m| *m != MembershipState::Leave);
        Ok((summary, membership))
    }

    /// One page of the directory: `since` is the offset a previous page handed out.
    pub fn public_rooms_page(
        &self,
        term: Option<&str>,
        limit: Option<u64>,
        since: Option<&str>,
    ) -> Result<DirectoryPage> {
        let rooms = self.public_rooms(term)?;
        let total = rooms.len();
        let start: usize = since
            .map(|t| {
                t.parse()
                    .map_err(|_| Error::invalid_param("Invalid since token"))
            })
            .transpose()?
            .unwrap_or(0);
        let limit = limit.map(|l| l as usize).unwrap_or(100).clamp(1, 500);
        let chunk = rooms.into_iter().skip(start).take(limit).collect();
        Ok(DirectoryPage {
            chunk,
            next: (start + limit < total).then(|| (start + limit).to_string()),
            prev: (start > 0).then(|| start.saturating_sub(limit).to_string()),
            total,
        })
    }
}

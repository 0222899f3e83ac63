//! Rooms: create, membership, state, sending, redaction, reading history, aliases, directory.

use ruma::{
    OwnedRoomId, RoomId, UInt,
    api::{
        Direction,
        client::{
            alias::{create_alias, delete_alias, get_alias},
            context::get_context,
            directory::{
                get_public_rooms, get_public_rooms_filtered, get_room_visibility,
                set_room_visibility,
            },
            membership::{
                ban_user, forget_room, get_member_events, invite_user, join_room_by_id,
                join_room_by_id_or_alias, joined_members, joined_rooms, kick_user, leave_room,
                unban_user,
            },
            message::{get_message_events, send_message_event},
            redact::redact_event,
            room::{Visibility, create_room, get_room_event},
            state::{get_state_event_for_key, get_state_events, send_state_event},
        },
    },
    events::{StateEventType, TimelineEventType},
};
use serde_json::Value as JsonValue;

use crate::{
    api::{ApiResult, Ruma, RumaResponse, S},
    error::Error,
    service::{
        Services,
        pdu::{ClientView, TxnInfo},
        rooms::CreateRoom,
        sync::filter_allows,
        timeline::NewEvent,
    },
};

fn json_object<T>(raw: &ruma::serde::Raw<T>) -> Result<JsonValue, Error> {
    let v: JsonValue =
        serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if !v.is_object() {
        return Err(Error::bad_json("Expected a JSON object"));
    }
    Ok(v)
}

pub async fn create(
    axum::extract::State(s): S,
    req: Ruma<create_room::v3::Request>,
) -> ApiResult<create_room::v3::Response> {
    let b = &req.body;
    let mut initial_state = Vec::new();
    for raw in &b.initial_state {
        let v = json_object(raw)?;
        let ty = v
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or_else(|| Error::bad_json("initial_state event without type"))?;
        let sk = v.get("state_key").and_then(|t| t.as_str()).unwrap_or("");
        let content = v
            .get("content")
            .cloned()
            .filter(JsonValue::is_object)
            .ok_or_else(|| Error::bad_json("initial_state event without content"))?;
        initial_state.push(NewEvent::state(ty, sk, content));
    }
    let obj = |v: JsonValue| v.as_object().cloned();
    let request = CreateRoom {
        preset: b.preset.as_ref().map(|p| p.as_str().to_owned()),
        public: b.visibility == Visibility::Public,
        name: b.name.clone(),
        topic: b.topic.clone(),
        alias_localpart: b.room_alias_name.clone(),
        invite: b.invite.clone(),
        is_direct: b.is_direct,
        room_version: b.room_version.clone(),
        creation_content: b
            .creation_content
            .as_ref()
            .map(json_object)
            .transpose()?
            .and_then(obj),
        initial_state,
        power_level_content_override: b
            .power_level_content_override
            .as_ref()
            .map(json_object)
            .transpose()?
            .and_then(obj),
    };
    let room_id = s.create_room(req.sender(), request).await?;
    Ok(RumaResponse(create_room::v3::Response::new(room_id)))
}

async fn resolve(s: &Services, room: &ruma::RoomOrAliasId) -> Result<OwnedRoomId, Error> {
    match <&RoomId>::try_from(room) {
        Ok(id) => Ok(id.to_owned()),
        Err(alias) => s
            .resolve_alias_or_ask(alias)
            .await?
            .ok_or_else(|| Error::not_found("Room alias not found")),
    }
}

pub async fn join_by_id_or_alias(
    axum::extract::State(s): S,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> ApiResult<join_room_by_id_or_alias::v3::Response> {
    let room_id = resolve(&s, &req.body.room_id_or_alias).await?;
    s.join_room(req.sender(), &room_id).await?;
    Ok(RumaResponse(join_room_by_id_or_alias::v3::Response::new(
        room_id,
    )))
}

pub async fn join_by_id(
    axum::extract::State(s): S,
    req: Ruma<join_room_by_id::v3::Request>,
) -> ApiResult<join_room_by_id::v3::Response> {
    s.join_room(req.sender(), &req.body.room_id).await?;
    Ok(RumaResponse(join_room_by_id::v3::Response::new(
        req.body.room_id.clone(),
    )))
}

pub async fn invite(
    axum::extract::State(s): S,
    req: Ruma<invite_user::v3::Request>,
) -> ApiResult<invite_user::v3::Response> {
    let invite_user::v3::InvitationRecipient::UserId(r) = &req.body.recipient else {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::Unknown,
            "Third-party invites are not supported",
        ));
    };
    s.require_joined(req.sender(), &req.body.room_id)?;
    s.set_membership(req.sender(), &req.body.room_id, &r.user_id, "invite", None)
        .await?;
    Ok(RumaResponse(invite_user::v3::Response::new()))
}

pub async fn leave(
    axum::extract::State(s): S,
    req: Ruma<leave_room::v3::Request>,
) -> ApiResult<leave_room::v3::Response> {
    s.leave_room(req.sender(), &req.body.room_id, req.body.reason.clone())
        .await?;
    Ok(RumaResponse(leave_room::v3::Response::new()))
}

pub async fn forget(
    axum::extract::State(s): S,
    req: Ruma<forget_room::v3::Request>,
) -> ApiResult<forget_room::v3::Response> {
    s.forget_room(req.sender(), &req.body.room_id).await?;
    Ok(RumaResponse(forget_room::v3::Response::new()))
}

pub async fn kick(
    axum::extract::State(s): S,
    req: Ruma<kick_user::v3::Request>,
) -> ApiResult<kick_user::v3::Response> {
    let b = &req.body;
    if !s
        .membership(&b.user_id, &b.room_id)?
        .is_some_and(|m| m.membership == "join" || m.membership == "invite")
    {
        return Err(Error::forbidden("The user is not in the room"));
    }
    s.set_membership(
        req.sender(),
        &b.room_id,
        &b.user_id,
        "leave",
        b.reason.clone(),
    )
    .await?;
    Ok(RumaResponse(kick_user::v3::Response::new()))
}

pub async fn ban(
    axum::extract::State(s): S,
    req: Ruma<ban_user::v3::Request>,
) -> ApiResult<ban_user::v3::Response> {
    let b = &req.body;
    s.set_membership(
        req.sender(),
        &b.room_id,
        &b.user_id,
        "ban",
        b.reason.clone(),
    )
    .await?;
    Ok(RumaResponse(ban_user::v3::Response::new()))
}

pub async fn unban(
    axum::extract::State(s): S,
    req: Ruma<unban_user::v3::Request>,
) -> ApiResult<unban_user::v3::Response> {
    let b = &req.body;
    if s.membership(&b.user_id, &b.room_id)?
        .is_none_or(|m| m.membership != "ban")
    {
        return Err(Error::forbidden("The user is not banned"));
    }
    s.set_membership(
        req.sender(),
        &b.room_id,
        &b.user_id,
        "leave",
        b.reason.clone(),
    )
    .await?;
    Ok(RumaResponse(unban_user::v3::Response::new()))
}

pub async fn joined(
    axum::extract::State(s): S,
    req: Ruma<joined_rooms::v3::Request>,
) -> ApiResult<joined_rooms::v3::Response> {
    Ok(RumaResponse(joined_rooms::v3::Response::new(
        s.rooms_with_membership(req.sender(), &["join"])?,
    )))
}

pub async fn members(
    axum::extract::State(s): S,
    req: Ruma<get_member_events::v3::Request>,
) -> ApiResult<get_member_events::v3::Response> {
    let b = &req.body;
    let state = match &b.at {
        Some(token) => {
            if !s.can_read_room(req.sender(), &b.room_id)? {
                return Err(Error::forbidden("You are not a member of this room"));
            }
            let pos: u64 = token
                .split('_')
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| Error::invalid_param("Invalid `at` token"))?;
            let limit = s
                .membership(req.sender(), &b.room_id)?
                .filter(|m| m.membership != "join")
                .map(|m| m.pos)
                .unwrap_or(u64::MAX);
            s.state_at(&b.room_id, pos.min(limit))?
        }
        None => s.readable_state(req.sender(), &b.room_id)?,
    };
    let view = ClientView {
        device: None,
        with_room_id: true,
    };
    let mut chunk = Vec::new();
    for ((ty, _), id) in state {
        if ty != "m.room.member" {
            continue;
        }
        let Some(ev) = s.event(&id)? else { continue };
        let m = ev
            .content()
            .get("membership")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_owned();
        if b.membership.as_ref().is_some_and(|want| want.as_str() != m) {
            continue;
        }
        if b.not_membership
            .as_ref()
            .is_some_and(|not| not.as_str() == m)
        {
            continue;
        }
        chunk.push(s.client_raw(&ev, &view));
    }
    Ok(RumaResponse(get_member_events::v3::Response::new(chunk)))
}

pub async fn joined_members(
    axum::extract::State(s): S,
    req: Ruma<joined_members::v3::Request>,
) -> ApiResult<joined_members::v3::Response> {
    s.require_joined(req.sender(), &req.body.room_id)?;
    let mut joined = std::collections::BTreeMap::new();
    for (user, m, ev) in s.members(&req.body.room_id)? {
        if m != "join" {
            continue;
        }
        let c = ev.content();
        let mut member = joined_members::v3::RoomMember::new();
        member.display_name = c
            .get("displayname")
            .and_then(|d| d.as_str())
            .map(str::to_owned);
        member.avatar_url = c
            .get("avatar_url")
            .and_then(|d| d.as_str())
            .map(|u| u.into());
        joined.insert(user, member);
    }
    Ok(RumaResponse(joined_members::v3::Response::new(joined)))
}

pub async fn state(
    axum::extract::State(s): S,
    req: Ruma<get_state_events::v3::Request>,
) -> ApiResult<get_state_events::v3::Response> {
    let state = s.readable_state(req.sender(), &req.body.room_id)?;
    let view = ClientView {
        device: None,
        with_room_id: true,
    };
    let mut out = Vec::new();
    for id in state.values() {
        if let Some(ev) = s.event(id)? {
            out.push(s.client_raw(&ev, &view));
        }
    }
    Ok(RumaResponse(get_state_events::v3::Response::new(out)))
}

pub async fn state_for_key(
    axum::extract::State(s): S,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> ApiResult<get_state_event_for_key::v3::Response> {
    let b = &req.body;
    let state = s.readable_state(req.sender(), &b.room_id)?;
    let id = state
        .get(&(b.event_type.to_string(), b.state_key.clone()))
        .ok_or_else(|| Error::not_found("State event not found"))?;
    let ev = s
        .event(id)?
        .ok_or_else(|| Error::not_found("State event not found"))?;
    let res = match b.format {
        get_state_event_for_key::v3::StateEventFormat::Event => {
            let view = ClientView {
                device: None,
                with_room_id: true,
            };
            get_state_event_for_key::v3::Response::new(serde_json::value::to_raw_value(
                &s.client_event(&ev, &view),
            )?)
        }
        _ => get_state_event_for_key::v3::Response::new(serde_json::value::to_raw_value(
            &ev.content(),
        )?),
    };
    Ok(RumaResponse(res))
}

pub async fn send_state(
    axum::extract::State(s): S,
    req: Ruma<send_state_event::v3::Request>,
) -> ApiResult<send_state_event::v3::Response> {
    let b = &req.body;
    s.require_joined(req.sender(), &b.room_id)?;
    let content = json_object(&b.body)?;
    let mut ev = NewEvent::state(b.event_type.to_string(), b.state_key.clone(), content);
    ev.timestamp = massaged_ts(&req, b.timestamp);
    if ev.kind == TimelineEventType::RoomCanonicalAlias {
        check_canonical_alias(&s, &b.room_id, &ev.content)?;
    }
    let event_id = s.append(&b.room_id, req.sender(), ev, None).await?;
    Ok(RumaResponse(send_state_event::v3::Response::new(event_id)))
}

/// The spec requires aliases in `m.room.canonical_alias` to point at the room.
fn check_canonical_alias(s: &Services, room_id: &RoomId, content: &JsonValue) -> Result<(), Error> {
    let mut aliases: Vec<&str> = content
        .get("alt_aliases")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    if let Some(a) = content.get("alias").and_then(|a| a.as_str()) {
        aliases.push(a);
    }
    for alias in aliases {
        let parsed = ruma::OwnedRoomAliasId::try_from(alias).map_err(|_| {
            Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::BadAlias,
                format!("Invalid alias {alias}"),
            )
        })?;
        if parsed.server_name() == s.server_name()
            && s.resolve_alias(&parsed)?.as_deref() != Some(room_id)
        {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::BadAlias,
                format!("{alias} does not point to this room"),
            ));
        }
    }
    Ok(())
}

pub async fn send(
    axum::extract::State(s): S,
    req: Ruma<send_message_event::v3::Request>,
) -> ApiResult<send_message_event::v3::Response> {
    let b = &req.body;
    s.require_joined(req.sender(), &b.room_id)?;
    let content = json_object(&b.body)?;
    let txn = TxnInfo {
        device_id: req.sender_device().clone(),
        txn_id: b.txn_id.clone(),
    };
    let mut ev = NewEvent::message(b.event_type.to_string(), content);
    ev.timestamp = massaged_ts(&req, b.timestamp);
    let event_id = s.append(&b.room_id, req.sender(), ev, Some(txn)).await?;
    Ok(RumaResponse(send_message_event::v3::Response::new(
        event_id,
    )))
}

/// The `ts` query parameter, honoured for appservices only (timestamp massaging).
fn massaged_ts<T>(req: &Ruma<T>, ts: Option<ruma::MilliSecondsSinceUnixEpoch>) -> Option<u64> {
    req.appservice.as_ref().and(ts).map(|t| u64::from(t.0))
}

pub async fn redact(
    axum::extract::State(s): S,
    req: Ruma<redact_event::v3::Request>,
) -> ApiResult<redact_event::v3::Response> {
    let b = &req.body;
    s.require_joined(req.sender(), &b.room_id)?;
    let target = s
        .event(&b.event_id)?
        .filter(|e| e.room_id == b.room_id)
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let own = target.sender().as_deref() == Some(req.sender().as_ref());
    if !own && s.power_level(&b.room_id, req.sender())? < redact_level(&s, &b.room_id)? {
        return Err(Error::forbidden("You may not redact other users' events"));
    }
    let mut content = serde_json::json!({});
    if let Some(reason) = &b.reason {
        content["reason"] = reason.clone().into();
    }
    let ev = NewEvent {
        kind: TimelineEventType::RoomRedaction,
        content,
        state_key: None,
        redacts: Some(b.event_id.clone()),
        timestamp: None,
    };
    let txn = TxnInfo {
        device_id: req.sender_device().clone(),
        txn_id: b.txn_id.clone(),
    };
    let event_id = s.append(&b.room_id, req.sender(), ev, Some(txn)).await?;
    Ok(RumaResponse(redact_event::v3::Response::new(event_id)))
}

fn redact_level(s: &Services, room_id: &RoomId) -> Result<i64, Error> {
    Ok(
        s.state_content(room_id, &StateEventType::RoomPowerLevels, "")?
            .and_then(|pl| pl.get("redact").and_then(crate::service::rooms::as_int))
            .unwrap_or(50),
    )
}

pub async fn event(
    axum::extract::State(s): S,
    req: Ruma<get_room_event::v3::Request>,
) -> ApiResult<get_room_event::v3::Response> {
    let ev = s.visible_event(req.sender(), &req.body.event_id)?;
    if ev.room_id != req.body.room_id {
        return Err(Error::not_found("Event not found"));
    }
    let view = ClientView {
        device: Some((req.sender(), req.sender_device())),
        with_room_id: true,
    };
    Ok(RumaResponse(get_room_event::v3::Response::new(
        s.client_raw(&ev, &view),
    )))
}

fn parse_pos(token: &str) -> Result<u64, Error> {
    token
        .split('_')
        .next()
        .and_then(|p| p.trim_start_matches(['t', 's']).parse().ok())
        .ok_or_else(|| Error::invalid_param("Invalid pagination token"))
}

pub async fn messages(
    axum::extract::State(s): S,
    req: Ruma<get_message_events::v3::Request>,
) -> ApiResult<get_message_events::v3::Response> {
    let b = &req.body;
    let membership = s.membership(req.sender(), &b.room_id)?;
    if !s.can_read_room(req.sender(), &b.room_id)? {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    // Former members read up to the moment they left.
    let ceiling = membership
        .filter(|m| m.membership != "join")
        .map(|m| m.pos + 1)
        .unwrap_or(u64::MAX);
    let limit = u64::from(b.limit).clamp(1, 1000) as usize;
    let from = b.from.as_deref().map(parse_pos).transpose()?;
    let to = b.to.as_deref().map(parse_pos).transpose()?;
    let filter = &b.filter;
    let (events, next) = match b.dir {
        Direction::Backward => {
            let from = from.unwrap_or(u64::MAX).min(ceiling);
            let lower = to.unwrap_or(0);
            let batch = s.timeline_range(&b.room_id, lower, from, true, limit)?;
            let next = (batch.len() == limit)
                .then(|| batch.last().map(|e| e.pos))
                .flatten();
            (batch, next)
        }
        Direction::Forward => {
            let from = from.unwrap_or(0);
            let upper = to.unwrap_or(u64::MAX).min(ceiling);
            let batch = s.timeline_range(&b.room_id, from, upper, false, limit)?;
            let next = (batch.len() == limit)
                .then(|| batch.last().map(|e| e.pos + 1))
                .flatten();
            (batch, next)
        }
    };
    let view = ClientView {
        device: Some((req.sender(), req.sender_device())),
        with_room_id: true,
    };
    let mut res = get_message_events::v3::Response::new();
    res.start = b.from.clone().unwrap_or_else(|| match b.dir {
        Direction::Backward => (s.current_pos() + 1).to_string(),
        Direction::Forward => "0".into(),
    });
    res.end = next.map(|p| p.to_string());
    let mut senders = std::collections::BTreeSet::new();
    for ev in events.iter().filter(|e| filter_allows(filter, e)) {
        if !s.can_see_event(req.sender(), ev)? {
            continue;
        }
        if let Some(sender) = ev.sender() {
            senders.insert(sender);
        }
        res.chunk.push(s.client_raw(ev, &view));
    }
    if matches!(
        filter.lazy_load_options,
        ruma::api::client::filter::LazyLoadOptions::Enabled { .. }
    ) {
        for sender in senders {
            if let Some(ev) =
                s.state_event(&b.room_id, &StateEventType::RoomMember, sender.as_str())?
            {
                res.state.push(s.client_raw(&ev, &view));
            }
        }
    }
    Ok(RumaResponse(res))
}

pub async fn context(
    axum::extract::State(s): S,
    req: Ruma<get_context::v3::Request>,
) -> ApiResult<get_context::v3::Response> {
    let b = &req.body;
    let ev = s.visible_event(req.sender(), &b.event_id)?;
    if ev.room_id != b.room_id {
        return Err(Error::not_found("Event not found"));
    }
    let limit = u64::from(b.limit).min(100) as usize;
    let before_n = limit / 2;
    let after_n = limit - before_n;
    let view = ClientView {
        device: Some((req.sender(), req.sender_device())),
        with_room_id: true,
    };
    let before = s.timeline_range(&b.room_id, 0, ev.pos, true, before_n)?;
    let after = s.timeline_range(&b.room_id, ev.pos + 1, u64::MAX, false, after_n)?;
    let mut res = get_context::v3::Response::new();
    res.start = Some(before.last().map(|e| e.pos).unwrap_or(ev.pos).to_string());
    res.end = Some(
        after
            .last()
            .map(|e| e.pos + 1)
            .unwrap_or(ev.pos + 1)
            .to_string(),
    );
    res.event = Some(s.client_raw(&ev, &view));
    for e in before.iter().filter(|e| filter_allows(&b.filter, e)) {
        if s.can_see_event(req.sender(), e)? {
            res.events_before.push(s.client_raw(e, &view));
        }
    }
    for e in after.iter().filter(|e| filter_allows(&b.filter, e)) {
        if s.can_see_event(req.sender(), e)? {
            res.events_after.push(s.client_raw(e, &view));
        }
    }
    let at = after.last().map(|e| e.pos).unwrap_or(ev.pos);
    for id in s.state_at(&b.room_id, at)?.values() {
        if let Some(st) = s.event(id)? {
            res.state.push(s.client_raw(&st, &view));
        }
    }
    Ok(RumaResponse(res))
}

pub async fn alias_get(
    axum::extract::State(s): S,
    req: Ruma<get_alias::v3::Request>,
) -> ApiResult<get_alias::v3::Response> {
    let room_id = s
        .resolve_alias_or_ask(&req.body.room_alias)
        .await?
        .ok_or_else(|| Error::not_found("Room alias not found"))?;
    Ok(RumaResponse(get_alias::v3::Response::new(
        room_id,
        vec![s.server_name().clone()],
    )))
}

pub async fn alias_put(
    axum::extract::State(s): S,
    req: Ruma<create_alias::v3::Request>,
) -> ApiResult<create_alias::v3::Response> {
    s.require_joined(req.sender(), &req.body.room_id)?;
    s.set_alias(&req.body.room_alias, &req.body.room_id, req.sender())
        .await?;
    Ok(RumaResponse(create_alias::v3::Response::new()))
}

pub async fn alias_delete(
    axum::extract::State(s): S,
    req: Ruma<delete_alias::v3::Request>,
) -> ApiResult<delete_alias::v3::Response> {
    s.delete_alias(&req.body.room_alias, req.sender()).await?;
    Ok(RumaResponse(delete_alias::v3::Response::new()))
}

/// One page of the public room directory.
struct DirectoryPage {
    chunk: Vec<ruma::directory::PublicRoomsChunk>,
    next: Option<String>,
    prev: Option<String>,
    total: usize,
}

fn public_chunk(
    s: &Services,
    term: Option<&str>,
    limit: Option<UInt>,
    since: Option<&str>,
) -> Result<DirectoryPage, Error> {
    let rooms = s.public_rooms(term)?;
    let total = rooms.len();
    let start: usize = since
        .map(|t| {
            t.parse()
                .map_err(|_| Error::invalid_param("Invalid since token"))
        })
        .transpose()?
        .unwrap_or(0);
    let limit = limit
        .map(|l| u64::from(l) as usize)
        .unwrap_or(100)
        .clamp(1, 500);
    let mut chunk = Vec::new();
    for r in rooms.into_iter().skip(start).take(limit) {
        let mut c: ruma::directory::PublicRoomsChunk = ruma::directory::PublicRoomsChunkInit {
            num_joined_members: UInt::new_saturating(r.joined as u64),
            room_id: r.room_id,
            world_readable: r.world_readable,
            guest_can_join: r.guest_can_join,
        }
        .into();
        c.name = r.name;
        c.topic = r.topic;
        c.canonical_alias = r.canonical_alias.and_then(|a| a.try_into().ok());
        c.avatar_url = r.avatar_url.map(Into::into);
        c.join_rule = r.join_rule.as_str().into();
        chunk.push(c);
    }
    let next = (start + limit < total).then(|| (start + limit).to_string());
    let prev = (start > 0).then(|| start.saturating_sub(limit).to_string());
    Ok(DirectoryPage {
        chunk,
        next,
        prev,
        total,
    })
}

pub async fn public_rooms(
    axum::extract::State(s): S,
    req: Ruma<get_public_rooms::v3::Request>,
) -> ApiResult<get_public_rooms::v3::Response> {
    if req
        .body
        .server
        .as_ref()
        .is_some_and(|srv| srv != s.server_name())
    {
        return Err(Error::not_found(
            "Other servers' directories need federation",
        ));
    }
    let DirectoryPage {
        chunk,
        next,
        prev,
        total,
    } = public_chunk(&s, None, req.body.limit, req.body.since.as_deref())?;
    let mut res = get_public_rooms::v3::Response::new(chunk);
    res.next_batch = next;
    res.prev_batch = prev;
    res.total_room_count_estimate = Some(UInt::new_saturating(total as u64));
    Ok(RumaResponse(res))
}

pub async fn public_rooms_filtered(
    axum::extract::State(s): S,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> ApiResult<get_public_rooms_filtered::v3::Response> {
    if req
        .body
        .server
        .as_ref()
        .is_some_and(|srv| srv != s.server_name())
    {
        return Err(Error::not_found(
            "Other servers' directories need federation",
        ));
    }
    let term = req.body.filter.generic_search_term.as_deref();
    let DirectoryPage {
        chunk,
        next,
        prev,
        total,
    } = public_chunk(&s, term, req.body.limit, req.body.since.as_deref())?;
    let mut res = get_public_rooms_filtered::v3::Response::new();
    res.chunk = chunk;
    res.next_batch = next;
    res.prev_batch = prev;
    res.total_room_count_estimate = Some(UInt::new_saturating(total as u64));
    Ok(RumaResponse(res))
}

pub async fn visibility_get(
    axum::extract::State(s): S,
    req: Ruma<get_room_visibility::v3::Request>,
) -> ApiResult<get_room_visibility::v3::Response> {
    if s.room_record(&req.body.room_id)?.is_none() {
        return Err(Error::not_found("Unknown room"));
    }
    let v = if s.is_published(&req.body.room_id)? {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(RumaResponse(get_room_visibility::v3::Response::new(v)))
}

pub async fn visibility_put(
    axum::extract::State(s): S,
    req: Ruma<set_room_visibility::v3::Request>,
) -> ApiResult<set_room_visibility::v3::Response> {
    let b = &req.body;
    s.require_joined(req.sender(), &b.room_id)?;
    if s.power_level(&b.room_id, req.sender())?
        < s.state_level(&b.room_id, "m.room.canonical_alias")?
    {
        return Err(Error::forbidden(
            "You may not change this room's directory visibility",
        ));
    }
    s.set_published(&b.room_id, b.visibility == Visibility::Public)
        .await?;
    Ok(RumaResponse(set_room_visibility::v3::Response::new()))
}

//! Room membership: joining, inviting, leaving, forgetting, kicking, banning, and who is in a
//! room.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    api::client::knock::knock_room,
    api::client::membership::{
        ban_user, forget_room, get_member_events, invite_user, join_room_by_id,
        join_room_by_id_or_alias, joined_members, joined_rooms, kick_user, leave_room, unban_user,
    },
    events::room::member::MembershipState,
};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    service::{rooms::Moderation, timeline::ClientView, token::StreamToken},
};

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}`
pub async fn join_room_by_id_or_alias(
    State(s): State<AppState>,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> ApiResult<join_room_by_id_or_alias::v3::Response> {
    let room_id = s
        .rooms
        .join_by_id_or_alias(req.sender()?, &req.body.room_id_or_alias, &req.body.via)
        .await?;
    Ok(RumaResponse(join_room_by_id_or_alias::v3::Response::new(
        room_id,
    )))
}

/// `POST /_matrix/client/v3/knock/{roomIdOrAlias}`: asks to join a room whose join rule is
/// `knock` (on this server or, through `via`, another).
pub async fn knock(
    State(s): State<AppState>,
    req: Ruma<knock_room::v3::Request>,
) -> ApiResult<knock_room::v3::Response> {
    let b = &req.body;
    let room_id = s
        .rooms
        .knock(req.sender()?, &b.room_id_or_alias, &b.via, b.reason.clone())
        .await?;
    Ok(RumaResponse(knock_room::v3::Response::new(room_id)))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/join`
pub async fn join_room_by_id(
    State(s): State<AppState>,
    req: Ruma<join_room_by_id::v3::Request>,
) -> ApiResult<join_room_by_id::v3::Response> {
    s.rooms.join(req.sender()?, &req.body.room_id).await?;
    Ok(RumaResponse(join_room_by_id::v3::Response::new(
        req.body.room_id.clone(),
    )))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/invite`
pub async fn invite_user(
    State(s): State<AppState>,
    req: Ruma<invite_user::v3::Request>,
) -> ApiResult<invite_user::v3::Response> {
    let invite_user::v3::InvitationRecipient::UserId(r) = &req.body.recipient else {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::Unknown,
            "Third-party invites are not supported",
        ));
    };
    s.rooms
        .invite(
            req.sender()?,
            &req.body.room_id,
            &r.user_id,
            r.reason.clone(),
        )
        .await?;
    Ok(RumaResponse(invite_user::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave`
pub async fn leave_room(
    State(s): State<AppState>,
    req: Ruma<leave_room::v3::Request>,
) -> ApiResult<leave_room::v3::Response> {
    s.rooms
        .leave(req.sender()?, &req.body.room_id, req.body.reason.clone())
        .await?;
    Ok(RumaResponse(leave_room::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/forget`
pub async fn forget_room(
    State(s): State<AppState>,
    req: Ruma<forget_room::v3::Request>,
) -> ApiResult<forget_room::v3::Response> {
    s.rooms.forget(req.sender()?, &req.body.room_id).await?;
    Ok(RumaResponse(forget_room::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/kick`
pub async fn kick_user(
    State(s): State<AppState>,
    req: Ruma<kick_user::v3::Request>,
) -> ApiResult<kick_user::v3::Response> {
    moderate(&s, &req, Moderation::Kick).await?;
    Ok(RumaResponse(kick_user::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/ban`
pub async fn ban_user(
    State(s): State<AppState>,
    req: Ruma<ban_user::v3::Request>,
) -> ApiResult<ban_user::v3::Response> {
    moderate(&s, &req, Moderation::Ban).await?;
    Ok(RumaResponse(ban_user::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/unban`
pub async fn unban_user(
    State(s): State<AppState>,
    req: Ruma<unban_user::v3::Request>,
) -> ApiResult<unban_user::v3::Response> {
    moderate(&s, &req, Moderation::Unban).await?;
    Ok(RumaResponse(unban_user::v3::Response::new()))
}

/// The member a kick, ban or unban is about, and why.
trait ModerationRequest {
    fn target(&self) -> (&ruma::RoomId, &ruma::UserId, Option<&String>);
}

macro_rules! moderation_requests {
    ($($endpoint:ident),+) => {$(
        impl ModerationRequest for $endpoint::v3::Request {
            fn target(&self) -> (&ruma::RoomId, &ruma::UserId, Option<&String>) {
                (&self.room_id, &self.user_id, self.reason.as_ref())
            }
        }
    )+};
}

moderation_requests!(kick_user, ban_user, unban_user);

/// Kicks, bans and unbans share their body.
async fn moderate<T: ModerationRequest>(
    s: &AppState,
    req: &Ruma<T>,
    action: Moderation,
) -> Result<(), Error> {
    let (room_id, user_id, reason) = req.body.target();
    s.rooms
        .moderate(req.sender()?, room_id, user_id, action, reason.cloned())
        .await
}

/// `GET /_matrix/client/v3/joined_rooms`
pub async fn joined_rooms(
    State(s): State<AppState>,
    req: Ruma<joined_rooms::v3::Request>,
) -> ApiResult<joined_rooms::v3::Response> {
    let rooms = s
        .timeline
        .rooms_with_membership(req.sender()?, &[MembershipState::Join])?;
    Ok(RumaResponse(joined_rooms::v3::Response::new(rooms)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/members`
pub async fn get_member_events(
    State(s): State<AppState>,
    req: Ruma<get_member_events::v3::Request>,
) -> ApiResult<get_member_events::v3::Response> {
    let b = &req.body;
    let at = b.at.as_deref().map(StreamToken::parse).transpose()?;
    let (user, room_id) = (req.sender()?.clone(), b.room_id.clone());
    let members = s
        .timeline
        .read_history(move |t| t.members_at(&user, &room_id, at))
        .await?;
    let mut chunk = Vec::new();
    for ev in members {
        let Some((_, m)) = ev.member_change() else {
            continue;
        };
        if b.membership
            .as_ref()
            .is_some_and(|want| *want.as_str() != *m.as_str())
            || b.not_membership
                .as_ref()
                .is_some_and(|not| *not.as_str() == *m.as_str())
        {
            continue;
        }
        chunk.push(s.timeline.client_raw(&ev, &ClientView::ANYONE, None));
    }
    Ok(RumaResponse(get_member_events::v3::Response::new(chunk)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
pub async fn joined_members(
    State(s): State<AppState>,
    req: Ruma<joined_members::v3::Request>,
) -> ApiResult<joined_members::v3::Response> {
    let mut joined = BTreeMap::new();
    for (user, profile) in s.rooms.joined_profiles(req.sender()?, &req.body.room_id)? {
        let mut member = joined_members::v3::RoomMember::new();
        member.display_name = profile.displayname;
        member.avatar_url = profile.avatar_url;
        joined.insert(user, member);
    }
    Ok(RumaResponse(joined_members::v3::Response::new(joined)))
}

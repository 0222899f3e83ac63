//! Room creation, upgrades and summaries.

use axum::extract::State;
use ruma::api::client::{
    room::{Visibility, create_room, get_summary, upgrade_room},
    space::{SpaceHierarchyRoomsChunk, get_hierarchy},
};
use serde_json::Value as JsonValue;

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    json::json_object,
    service::{rooms::CreateRoom, timeline::NewEvent},
};

/// `POST /_matrix/client/v3/createRoom`
pub async fn create_room(
    State(s): State<AppState>,
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
    let request = CreateRoom {
        preset: b.preset.as_ref().map(|p| p.as_str().to_owned()),
        public: b.visibility == Visibility::Public,
        name: b.name.clone(),
        topic: b.topic.clone(),
        alias_localpart: b.room_alias_name.clone(),
        invite: b.invite.clone(),
        is_direct: b.is_direct,
        room_version: b.room_version.clone(),
        creation_content: b.creation_content.as_ref().map(json_object).transpose()?,
        initial_state,
        power_level_content_override: b
            .power_level_content_override
            .as_ref()
            .map(json_object)
            .transpose()?,
    };
    let room_id = s.rooms.create(req.sender()?, request).await?;
    Ok(RumaResponse(create_room::v3::Response::new(room_id)))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
pub async fn upgrade_room(
    State(s): State<AppState>,
    req: Ruma<upgrade_room::v3::Request>,
) -> ApiResult<upgrade_room::v3::Response> {
    let b = &req.body;
    let replacement = s
        .rooms
        .upgrade(
            req.sender()?,
            &b.room_id,
            &b.new_version,
            b.additional_creators.clone(),
        )
        .await?;
    Ok(RumaResponse(upgrade_room::v3::Response::new(replacement)))
}

/// `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`
pub async fn get_summary(
    State(s): State<AppState>,
    req: Ruma<get_summary::v1::Request>,
) -> ApiResult<get_summary::v1::Response> {
    let (summary, membership) = s
        .directory
        .summary(&req.body.room_id_or_alias, req.user.as_deref())
        .await?;
    let mut res = get_summary::v1::Response::new(summary);
    res.membership = membership;
    Ok(RumaResponse(res))
}

/// Most rooms in one page of `/hierarchy`, and how deep it goes at most.
const HIERARCHY_PAGE: u64 = 100;
const HIERARCHY_DEPTH: u64 = 10;

/// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`: the rooms of a space and its subspaces
/// the caller may see (rooms of other servers are not asked for yet), a page at a time.
pub async fn get_hierarchy(
    State(s): State<AppState>,
    req: Ruma<get_hierarchy::v1::Request>,
) -> ApiResult<get_hierarchy::v1::Response> {
    let b = &req.body;
    let max_depth = b
        .max_depth
        .map_or(HIERARCHY_DEPTH, u64::from)
        .min(HIERARCHY_DEPTH);
    let limit = b.limit.map_or(50, u64::from).clamp(1, HIERARCHY_PAGE) as usize;
    let from: usize = match &b.from {
        Some(token) => token
            .parse()
            .map_err(|_| Error::invalid_param("Unknown `from` token"))?,
        None => 0,
    };
    let rooms = s
        .directory
        .hierarchy(
            &b.room_id,
            Some(req.sender()?.as_ref()),
            max_depth as usize,
            b.suggested_only,
        )
        .await?;
    let total = rooms.len();
    let mut res = get_hierarchy::v1::Response::new();
    for (summary, children) in rooms.into_iter().skip(from).take(limit) {
        let children = children.iter().map(crate::json::to_raw).collect();
        res.rooms
            .push(SpaceHierarchyRoomsChunk::new(summary, children));
    }
    if from + limit < total {
        res.next_batch = Some((from + limit).to_string());
    }
    Ok(RumaResponse(res))
}

//! Room aliases.

use axum::extract::State;
use ruma::api::client::{
    alias::{create_alias, delete_alias, get_alias},
    room::aliases,
};

use crate::api::{ApiResult, AppState, Ruma, RumaResponse};

/// `GET /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn get_alias(
    State(s): State<AppState>,
    req: Ruma<get_alias::v3::Request>,
) -> ApiResult<get_alias::v3::Response> {
    let alias = &req.body.room_alias;
    if alias.server_name() != s.core.server_name() {
        let (room_id, servers) = s.federation.remote_alias(alias).await?;
        return Ok(RumaResponse(get_alias::v3::Response::new(room_id, servers)));
    }
    let room_id = s.directory.require_alias(alias).await?;
    Ok(RumaResponse(get_alias::v3::Response::new(
        room_id,
        vec![s.core.server_name().clone()],
    )))
}

/// `PUT /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn create_alias(
    State(s): State<AppState>,
    req: Ruma<create_alias::v3::Request>,
) -> ApiResult<create_alias::v3::Response> {
    s.directory
        .set_alias(&req.body.room_alias, &req.body.room_id, req.sender()?)
        .await?;
    Ok(RumaResponse(create_alias::v3::Response::new()))
}

/// `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn delete_alias(
    State(s): State<AppState>,
    req: Ruma<delete_alias::v3::Request>,
) -> ApiResult<delete_alias::v3::Response> {
    s.directory
        .delete_alias(&req.body.room_alias, req.sender()?)
        .await?;
    Ok(RumaResponse(delete_alias::v3::Response::new()))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/aliases`
pub async fn aliases(
    State(s): State<AppState>,
    req: Ruma<aliases::v3::Request>,
) -> ApiResult<aliases::v3::Response> {
    // Members and, in world-readable rooms, anyone may list them.
    s.timeline.readable(req.sender()?, &req.body.room_id)?;
    Ok(RumaResponse(aliases::v3::Response::new(
        s.directory.local_aliases(&req.body.room_id)?,
    )))
}

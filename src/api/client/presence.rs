//! Presence.

use axum::extract::State;
use ruma::api::client::presence::{get_presence, set_presence};

use crate::api::{ApiResult, AppState, Ruma, RumaResponse};

/// `GET /_matrix/client/v3/presence/{userId}/status`
pub async fn get_presence(
    State(s): State<AppState>,
    req: Ruma<get_presence::v3::Request>,
) -> ApiResult<get_presence::v3::Response> {
    let status = s.presence.get(req.sender()?, &req.body.user_id)?;
    let mut res = get_presence::v3::Response::new(status.presence);
    res.status_msg = status.status_msg;
    res.currently_active = Some(status.currently_active);
    res.last_active_ago = status.last_active_ago;
    Ok(RumaResponse(res))
}

/// `PUT /_matrix/client/v3/presence/{userId}/status`
pub async fn set_presence(
    State(s): State<AppState>,
    req: Ruma<set_presence::v3::Request>,
) -> ApiResult<set_presence::v3::Response> {
    let b = &req.body;
    s.presence
        .set(req.sender()?, &b.user_id, &b.presence, b.status_msg.clone())
        .await?;
    Ok(RumaResponse(set_presence::v3::Response::new()))
}

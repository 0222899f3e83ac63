//! Typing notifications.

use axum::extract::State;
use ruma::api::client::typing::create_typing_event::{self, v3::Typing};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
};

/// `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
pub async fn create_typing_event(
    State(s): State<AppState>,
    req: Ruma<create_typing_event::v3::Request>,
) -> ApiResult<create_typing_event::v3::Response> {
    let b = &req.body;
    if &b.user_id != req.sender()? {
        return Err(Error::forbidden("You may only set your own typing state"));
    }
    let timeout = match &b.state {
        Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    s.ephemeral.set_typing(&b.room_id, &b.user_id, timeout)?;
    Ok(RumaResponse(create_typing_event::v3::Response::new()))
}

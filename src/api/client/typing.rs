//! Typing notifications.

use axum::extract::State;
use ruma::api::client::typing::create_typing_event::{self, v3::Typing};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
};

/// How long a typing notice lasts when the client names no timeout.
const DEFAULT_TYPING_MS: u64 = 30_000;

/// Fills in `timeout` for `{"typing": true}` (clients leave it out; ruma requires it).
pub fn default_timeout(body: &mut serde_json::Value) {
    if body.get("typing") == Some(&serde_json::Value::Bool(true))
        && body.get("timeout").is_none()
        && let Some(o) = body.as_object_mut()
    {
        o.insert("timeout".into(), DEFAULT_TYPING_MS.into());
    }
}

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
    s.federated_rooms
        .send_typing(&b.room_id, &b.user_id, timeout)
        .await?;
    Ok(RumaResponse(create_typing_event::v3::Response::new()))
}

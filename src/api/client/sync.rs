//! `/sync`.

use std::time::Duration;

use axum::extract::State;
use ruma::api::client::sync::sync_events;

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    service::{sync::SyncRequest, token::StreamToken},
};

/// `GET /_matrix/client/v3/sync`
pub async fn sync_events(
    State(s): State<AppState>,
    req: Ruma<sync_events::v3::Request>,
) -> ApiResult<sync_events::v3::Response> {
    let b = &req.body;
    let user = req.sender()?;
    let filter = super::filter::resolve(&s, user, b.filter.as_ref())?;
    let request = SyncRequest {
        user,
        device: req.sender_device()?,
        since: b.since.as_deref().map(StreamToken::parse).transpose()?,
        filter,
        full_state: b.full_state,
        timeout: b.timeout.unwrap_or(Duration::ZERO),
        set_presence: b.set_presence.clone(),
    };
    Ok(RumaResponse(s.sync.sync(request).await?))
}

//! `/sync` v3 and simplified sliding sync (MSC4186).

use std::time::Duration;

use axum::extract::State;
use ruma::api::client::sync::sync_events;

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    service::{
        sync::{SyncRequest, sliding::SlidingRequest},
        token::StreamToken,
    },
};

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`
pub async fn sync_events_v5(
    State(s): State<AppState>,
    req: Ruma<sync_events::v5::Request>,
) -> ApiResult<sync_events::v5::Response> {
    let request = SlidingRequest {
        user: req.sender()?,
        device: req.sender_device()?,
        body: &req.body,
    };
    Ok(RumaResponse(s.sync.sliding_sync(request).await?))
}

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

//! `/sync` v3 and simplified sliding sync (MSC4186).

use std::time::Duration;

use axum::{extract::State, response::IntoResponse};
use ruma::api::{OutgoingResponse, client::sync::sync_events};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
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
) -> Result<SyncAnswer, Error> {
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
    Ok(SyncAnswer(s.sync.sync(request).await?))
}

/// A v3 sync answer. ruma leaves `rooms` out when only knocked rooms changed (its `is_empty`
/// does not count them); they are put back.
pub struct SyncAnswer(sync_events::v3::Response);

impl crate::api::Answer<sync_events::v3::Request> for SyncAnswer {}

impl IntoResponse for SyncAnswer {
    fn into_response(self) -> axum::response::Response {
        let response = self.0;
        if response.rooms.knock.is_empty() {
            return RumaResponse(response).into_response();
        }
        let answer = || -> Result<axum::response::Response, Error> {
            let knock = serde_json::to_value(&response.rooms.knock)?;
            let http = response
                .try_into_http_response::<Vec<u8>>()
                .map_err(|e| Error::internal(format!("response serialization: {e}")))?;
            let (mut parts, body) = http.into_parts();
            let mut body: serde_json::Value = serde_json::from_slice(&body)?;
            body["rooms"]["knock"] = knock;
            parts.headers.remove(http::header::CONTENT_LENGTH);
            let body = axum::body::Body::from(serde_json::to_vec(&body)?);
            Ok(axum::response::Response::from_parts(parts, body))
        };
        answer().unwrap_or_else(IntoResponse::into_response)
    }
}

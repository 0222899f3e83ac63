//! Reporting events and rooms to the server's admins.

use axum::extract::State;
use ruma::api::client::room::{report_content, report_room};

use crate::api::{ApiResult, AppState, Ruma, RumaResponse};

/// `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`
pub async fn report_content(
    State(s): State<AppState>,
    req: Ruma<report_content::v3::Request>,
) -> ApiResult<report_content::v3::Response> {
    let b = &req.body;
    s.reports
        .report_event(req.sender()?, &b.room_id, &b.event_id, b.reason.clone())
        .await?;
    Ok(RumaResponse(report_content::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report`
pub async fn report_room(
    State(s): State<AppState>,
    req: Ruma<report_room::v3::Request>,
) -> ApiResult<report_room::v3::Response> {
    let b = &req.body;
    s.reports
        .report_room(req.sender()?, &b.room_id, Some(b.reason.clone()))
        .await?;
    Ok(RumaResponse(report_room::v3::Response::new()))
}

//! Send-to-device messaging.

use axum::extract::State;
use ruma::api::client::to_device::send_event_to_device;

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    json::json_value,
};

/// `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
pub async fn send_event_to_device(
    State(s): State<AppState>,
    req: Ruma<send_event_to_device::v3::Request>,
) -> ApiResult<send_event_to_device::v3::Response> {
    let b = &req.body;
    let mut messages = Vec::new();
    for (user, devices) in &b.messages {
        for (device, content) in devices {
            messages.push((user.clone(), device.to_string(), json_value(content)?));
        }
    }
    s.keys
        .send_to_device(
            req.sender()?,
            req.sender_device()?,
            b.txn_id.as_str(),
            &b.event_type.to_string(),
            messages,
        )
        .await?;
    Ok(RumaResponse(send_event_to_device::v3::Response::new()))
}

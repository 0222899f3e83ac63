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
    let mut remote = Vec::new();
    for (user, devices) in &b.messages {
        for (device, content) in devices {
            let message = (user.clone(), device.to_string(), json_value(content)?);
            if !s.users.is_local(user) {
                remote.push(message);
            } else {
                messages.push(message);
            }
        }
    }
    if !remote.is_empty() {
        // The message ID is the same when the client retries: the receiving server keeps
        // each one once.
        let message_id = format!("{}_{}", req.sender_device()?, b.txn_id);
        s.federation
            .send_to_device(
                req.sender()?,
                &b.event_type.to_string(),
                &message_id,
                remote,
            )
            .await?;
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

//! Receipts and the fully-read marker.

use axum::extract::State;
use ruma::{
    api::client::{
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
    },
    events::receipt::ReceiptThread,
};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
};

/// `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
pub async fn create_receipt(
    State(s): State<AppState>,
    req: Ruma<create_receipt::v3::Request>,
) -> ApiResult<create_receipt::v3::Response> {
    let b = &req.body;
    let user = req.sender()?;
    let thread = match &b.thread {
        ReceiptThread::Main => Some("main".to_owned()),
        ReceiptThread::Thread(id) => Some(id.to_string()),
        ReceiptThread::Unthreaded => None,
        _ => {
            return Err(Error::invalid_param(
                "thread_id must be \"main\" or the event ID of a thread root",
            ));
        }
    };
    let receipt_type = match &b.receipt_type {
        ReceiptType::Read => "m.read",
        ReceiptType::ReadPrivate => "m.read.private",
        ReceiptType::FullyRead if thread.is_some() => {
            return Err(Error::invalid_param(
                "m.fully_read markers are for the whole room: no thread_id",
            ));
        }
        ReceiptType::FullyRead => {
            s.set_fully_read(user, &b.room_id, &b.event_id).await?;
            return Ok(RumaResponse(create_receipt::v3::Response::new()));
        }
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown receipt type {other}"
            )));
        }
    };
    s.set_receipt(&b.room_id, user, receipt_type, &b.event_id, thread)
        .await?;
    Ok(RumaResponse(create_receipt::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
pub async fn set_read_marker(
    State(s): State<AppState>,
    req: Ruma<set_read_marker::v3::Request>,
) -> ApiResult<set_read_marker::v3::Response> {
    let b = &req.body;
    let user = req.sender()?;
    if let Some(id) = &b.fully_read {
        s.set_fully_read(user, &b.room_id, id).await?;
    }
    if let Some(id) = &b.read_receipt {
        s.set_receipt(&b.room_id, user, "m.read", id, None).await?;
    }
    if let Some(id) = &b.private_read_receipt {
        s.set_receipt(&b.room_id, user, "m.read.private", id, None)
            .await?;
    }
    Ok(RumaResponse(set_read_marker::v3::Response::new()))
}

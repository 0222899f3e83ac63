//! Voice and video calls: the TURN server clients relay through.

use axum::extract::State;
use ruma::api::client::voip::get_turn_server_info;

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    service::{core::now_ms, voip::turn_credentials},
};

/// `GET /_matrix/client/v3/voip/turnServer`
///
/// With no TURN server configured the answer has no URIs, which clients read as "none".
pub async fn get_turn_server_info(
    State(s): State<AppState>,
    req: Ruma<get_turn_server_info::v3::Request>,
) -> ApiResult<get_turn_server_info::v3::Response> {
    let user = req.sender()?;
    let res = match turn_credentials(&s.config().turn, user, now_ms() / 1000) {
        Some(c) => get_turn_server_info::v3::Response::new(c.username, c.password, c.uris, c.ttl),
        None => get_turn_server_info::v3::Response::new(
            String::new(),
            String::new(),
            Vec::new(),
            std::time::Duration::ZERO,
        ),
    };
    Ok(RumaResponse(res))
}

//! Client-Server endpoints for application services.

use ruma::api::client::appservice::request_ping;

use axum::extract::State;

use crate::api::{ApiResult, AppState, Ruma, RumaResponse};

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: the server pings the appservice.
pub async fn request_ping(
    State(s): State<AppState>,
    req: Ruma<request_ping::v1::Request>,
) -> ApiResult<request_ping::v1::Response> {
    let txn = req.body.transaction_id.as_ref().map(|t| t.to_string());
    let duration = s
        .appservices
        .ping(req.appservice.as_deref(), &req.body.appservice_id, txn)
        .await?;
    Ok(RumaResponse(request_ping::v1::Response::new(duration)))
}

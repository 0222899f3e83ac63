//! Client-Server endpoints for application services.

use ruma::api::client::appservice::request_ping;

use crate::{
    api::{ApiResult, Ruma, RumaResponse, S},
    error::Error,
};

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: the server pings the appservice.
pub async fn ping(
    s: S,
    req: Ruma<request_ping::v1::Request>,
) -> ApiResult<request_ping::v1::Response> {
    let a = req
        .appservice
        .clone()
        .filter(|a| a.id() == req.body.appservice_id)
        .ok_or_else(|| Error::forbidden("Only the appservice itself may ask for its ping"))?;
    let txn = req.body.transaction_id.as_ref().map(|t| t.to_string());
    let duration = s.0.ping_appservice(&a, txn).await?;
    Ok(RumaResponse(request_ping::v1::Response::new(duration)))
}

//! The Server-Server API. For now only what widgets and integrations need: checking a
//! user's OpenID token.

use axum::{Router, extract::State};
use ruma::api::federation::openid::get_openid_userinfo;

use super::{ApiResult, AppState, RouterExt, Ruma, RumaResponse};

/// Every Server-Server endpoint the server implements.
pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router.ruma(get_openid_userinfo)
}

/// `GET /_matrix/federation/v1/openid/userinfo`
pub async fn get_openid_userinfo(
    State(s): State<AppState>,
    req: Ruma<get_openid_userinfo::v1::Request>,
) -> ApiResult<get_openid_userinfo::v1::Response> {
    Ok(RumaResponse(get_openid_userinfo::v1::Response::new(
        s.openid.user_of(&req.body.access_token)?,
    )))
}

//! The Server-Server API. For now only the server's identity (its signing key and version)
//! and what widgets and integrations need: checking a user's OpenID token. Rooms do not
//! federate yet.

use axum::{Router, extract::State};
use ruma::api::federation::{
    discovery::{get_server_keys, get_server_version},
    openid::get_openid_userinfo,
};

use super::{ApiResult, AppState, RouterExt, Ruma, RumaResponse};

/// Every Server-Server endpoint the server implements.
pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .ruma(get_openid_userinfo)
        .ruma(get_server_keys)
        .ruma(get_server_version)
}

/// `GET /_matrix/key/v2/server`
pub async fn get_server_keys(
    State(s): State<AppState>,
    _req: Ruma<get_server_keys::v2::Request>,
) -> ApiResult<get_server_keys::v2::Response> {
    let keys = serde_json::to_value(s.federation.server_keys()?)?;
    Ok(RumaResponse(get_server_keys::v2::Response::new(
        crate::json::to_raw(&keys),
    )))
}

/// `GET /_matrix/federation/v1/version`
pub async fn get_server_version(
    _: State<AppState>,
    _req: Ruma<get_server_version::v1::Request>,
) -> ApiResult<get_server_version::v1::Response> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Tsunagu".into());
    server.version = Some(env!("CARGO_PKG_VERSION").into());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(RumaResponse(response))
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

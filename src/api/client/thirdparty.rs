//! Third-party networks: what the registered bridges (appservices) connect to.

use axum::extract::State;
use ruma::api::client::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols,
    get_user_for_protocol, get_user_for_user_id,
};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    service::appservice::thirdparty::Lookup,
};

/// `GET /_matrix/client/v3/thirdparty/protocols`
pub async fn get_protocols(
    State(s): State<AppState>,
    req: Ruma<get_protocols::v3::Request>,
) -> ApiResult<get_protocols::v3::Response> {
    req.sender()?;
    Ok(RumaResponse(get_protocols::v3::Response::new(
        s.appservices.protocols().await,
    )))
}

/// `GET /_matrix/client/v3/thirdparty/protocol/{protocol}`
pub async fn get_protocol(
    State(s): State<AppState>,
    req: Ruma<get_protocol::v3::Request>,
) -> ApiResult<get_protocol::v3::Response> {
    req.sender()?;
    Ok(RumaResponse(get_protocol::v3::Response::new(
        s.appservices.protocol(&req.body.protocol).await?,
    )))
}

/// `GET /_matrix/client/v3/thirdparty/location/{protocol}`
pub async fn get_location_for_protocol(
    State(s): State<AppState>,
    req: Ruma<get_location_for_protocol::v3::Request>,
) -> ApiResult<get_location_for_protocol::v3::Response> {
    req.sender()?;
    let fields: Vec<_> = req.body.fields.clone().into_iter().collect();
    let found = s
        .appservices
        .thirdparty_locations(Lookup::Locations(&req.body.protocol), &fields)
        .await?;
    Ok(RumaResponse(get_location_for_protocol::v3::Response::new(
        found,
    )))
}

/// `GET /_matrix/client/v3/thirdparty/user/{protocol}`
pub async fn get_user_for_protocol(
    State(s): State<AppState>,
    req: Ruma<get_user_for_protocol::v3::Request>,
) -> ApiResult<get_user_for_protocol::v3::Response> {
    req.sender()?;
    let fields: Vec<_> = req.body.fields.clone().into_iter().collect();
    let found = s
        .appservices
        .thirdparty_users(Lookup::Users(&req.body.protocol), &fields)
        .await?;
    Ok(RumaResponse(get_user_for_protocol::v3::Response::new(
        found,
    )))
}

/// `GET /_matrix/client/v3/thirdparty/location`
pub async fn get_location_for_room_alias(
    State(s): State<AppState>,
    req: Ruma<get_location_for_room_alias::v3::Request>,
) -> ApiResult<get_location_for_room_alias::v3::Response> {
    req.sender()?;
    let query = [("alias".to_owned(), req.body.alias.to_string())];
    let found = s
        .appservices
        .thirdparty_locations(Lookup::LocationsOfAlias, &query)
        .await?;
    Ok(RumaResponse(
        get_location_for_room_alias::v3::Response::new(found),
    ))
}

/// `GET /_matrix/client/v3/thirdparty/user`
pub async fn get_user_for_user_id(
    State(s): State<AppState>,
    req: Ruma<get_user_for_user_id::v3::Request>,
) -> ApiResult<get_user_for_user_id::v3::Response> {
    req.sender()?;
    let query = [("userid".to_owned(), req.body.userid.to_string())];
    let found = s
        .appservices
        .thirdparty_users(Lookup::UsersOfUserId, &query)
        .await?;
    Ok(RumaResponse(get_user_for_user_id::v3::Response::new(found)))
}

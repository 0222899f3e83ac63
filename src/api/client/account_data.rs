//! Client config: global and per-room account data.

use axum::extract::State;
use ruma::{
    UserId,
    api::client::config::{
        get_global_account_data, get_room_account_data, set_global_account_data,
        set_room_account_data,
    },
};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    json::{json_object, to_raw},
};

/// Account data is only ever the caller's own.
pub(super) fn own<'a, T>(req: &'a Ruma<T>, user_id: &UserId) -> Result<&'a UserId, Error> {
    let sender = req.sender()?;
    if sender != user_id {
        return Err(Error::forbidden(
            "You may only access your own account data",
        ));
    }
    Ok(sender)
}

/// `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn get_global_account_data(
    State(s): State<AppState>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> ApiResult<get_global_account_data::v3::Response> {
    let user = own(&req, &req.body.user_id)?;
    let c = s
        .account_data
        .require(user, None, &req.body.event_type.to_string())?;
    Ok(RumaResponse(get_global_account_data::v3::Response::new(
        to_raw(&c),
    )))
}

/// `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn set_global_account_data(
    State(s): State<AppState>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> ApiResult<set_global_account_data::v3::Response> {
    let user = own(&req, &req.body.user_id)?;
    let b = &req.body;
    s.account_data
        .set_by_client(
            user,
            None,
            &b.event_type.to_string(),
            json_object(&b.data)?.into(),
        )
        .await?;
    Ok(RumaResponse(set_global_account_data::v3::Response::new()))
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn get_room_account_data(
    State(s): State<AppState>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> ApiResult<get_room_account_data::v3::Response> {
    let user = own(&req, &req.body.user_id)?;
    let b = &req.body;
    let c = s
        .account_data
        .require(user, Some(&b.room_id), &b.event_type.to_string())?;
    Ok(RumaResponse(get_room_account_data::v3::Response::new(
        to_raw(&c),
    )))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn set_room_account_data(
    State(s): State<AppState>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> ApiResult<set_room_account_data::v3::Response> {
    let user = own(&req, &req.body.user_id)?;
    let b = &req.body;
    s.account_data
        .set_by_client(
            user,
            Some(&b.room_id),
            &b.event_type.to_string(),
            json_object(&b.data)?.into(),
        )
        .await?;
    Ok(RumaResponse(set_room_account_data::v3::Response::new()))
}

//! Room tagging.

use axum::extract::State;
use ruma::api::client::tag::{create_tag, delete_tag, get_tags};

use super::account_data::own;
use crate::api::{ApiResult, AppState, Ruma, RumaResponse};

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
pub async fn get_tags(
    State(s): State<AppState>,
    req: Ruma<get_tags::v3::Request>,
) -> ApiResult<get_tags::v3::Response> {
    let user = own(&req, &req.body.user_id)?;
    let tags = s.account_data.tags(user, &req.body.room_id)?;
    let tags = serde_json::from_value(tags.into())?;
    Ok(RumaResponse(get_tags::v3::Response::new(tags)))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn create_tag(
    State(s): State<AppState>,
    req: Ruma<create_tag::v3::Request>,
) -> ApiResult<create_tag::v3::Response> {
    let user = own(&req, &req.body.user_id)?;
    let b = &req.body;
    let info = serde_json::to_value(&b.tag_info)?;
    s.account_data
        .set_tag(user, &b.room_id, &b.tag, Some(info))
        .await?;
    Ok(RumaResponse(create_tag::v3::Response::new()))
}

/// `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn delete_tag(
    State(s): State<AppState>,
    req: Ruma<delete_tag::v3::Request>,
) -> ApiResult<delete_tag::v3::Response> {
    let user = own(&req, &req.body.user_id)?;
    let b = &req.body;
    s.account_data
        .set_tag(user, &b.room_id, &b.tag, None)
        .await?;
    Ok(RumaResponse(delete_tag::v3::Response::new()))
}

//! Profiles: display name and avatar, mirrored into member events of joined rooms.

use ruma::api::client::profile::{
    get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name,
};

use axum::extract::State;

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    service::federation::profile_json,
};

/// `GET /_matrix/client/v3/profile/{userId}`
pub async fn get_profile(
    State(s): State<AppState>,
    req: Ruma<get_profile::v3::Request>,
) -> ApiResult<get_profile::v3::Response> {
    if !s.users.is_local(&req.body.user_id) {
        let p = s.federation.remote_profile(&req.body.user_id).await?;
        let mut res = get_profile::v3::Response::new();
        if let serde_json::Value::Object(fields) = profile_json(&p, None) {
            for (k, v) in fields {
                res.set(k, v);
            }
        }
        return Ok(RumaResponse(res));
    }
    s.appservices.user_exists(&req.body.user_id).await?;
    let a = s
        .users
        .active_account(&req.body.user_id)?
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    let mut res = get_profile::v3::Response::new();
    res.set("displayname".into(), a.displayname.into());
    res.set(
        "avatar_url".into(),
        a.avatar_url.map(|u| u.to_string()).into(),
    );
    Ok(RumaResponse(res))
}

/// `GET /_matrix/client/v3/profile/{userId}/displayname`
pub async fn get_display_name(
    State(s): State<AppState>,
    req: Ruma<get_display_name::v3::Request>,
) -> ApiResult<get_display_name::v3::Response> {
    if !s.users.is_local(&req.body.user_id) {
        let p = s.federation.remote_profile(&req.body.user_id).await?;
        return Ok(RumaResponse(get_display_name::v3::Response::new(
            p.displayname,
        )));
    }
    let a = s
        .users
        .active_account(&req.body.user_id)?
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    Ok(RumaResponse(get_display_name::v3::Response::new(
        a.displayname,
    )))
}

/// `PUT /_matrix/client/v3/profile/{userId}/displayname`
pub async fn set_display_name(
    State(s): State<AppState>,
    req: Ruma<set_display_name::v3::Request>,
) -> ApiResult<set_display_name::v3::Response> {
    let user = own_profile(&req, &req.body.user_id)?;
    s.rooms
        .set_profile(user, Some(req.body.displayname.clone()), None)
        .await?;
    Ok(RumaResponse(set_display_name::v3::Response::new()))
}

/// `GET /_matrix/client/v3/profile/{userId}/avatar_url`
pub async fn get_avatar_url(
    State(s): State<AppState>,
    req: Ruma<get_avatar_url::v3::Request>,
) -> ApiResult<get_avatar_url::v3::Response> {
    if !s.users.is_local(&req.body.user_id) {
        let p = s.federation.remote_profile(&req.body.user_id).await?;
        let url = p.avatar_url.map(ruma::OwnedMxcUri::from);
        return Ok(RumaResponse(get_avatar_url::v3::Response::new(url)));
    }
    let a = s
        .users
        .active_account(&req.body.user_id)?
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    Ok(RumaResponse(get_avatar_url::v3::Response::new(
        a.avatar_url,
    )))
}

/// `PUT /_matrix/client/v3/profile/{userId}/avatar_url`
pub async fn set_avatar_url(
    State(s): State<AppState>,
    req: Ruma<set_avatar_url::v3::Request>,
) -> ApiResult<set_avatar_url::v3::Response> {
    let user = own_profile(&req, &req.body.user_id)?;
    s.rooms
        .set_profile(user, None, Some(req.body.avatar_url.clone()))
        .await?;
    Ok(RumaResponse(set_avatar_url::v3::Response::new()))
}

fn own_profile<'a, T>(req: &'a Ruma<T>, user_id: &ruma::UserId) -> Result<&'a ruma::UserId, Error> {
    let sender = req.sender()?;
    if sender != user_id {
        return Err(Error::forbidden("You may only change your own profile"));
    }
    Ok(sender)
}

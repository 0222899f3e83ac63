//! Profiles: display name and avatar, mirrored into member events of joined rooms.

use ruma::api::client::profile::{
    get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name,
};

use crate::{
    api::{ApiResult, Ruma, RumaResponse, S},
    error::Error,
};

pub async fn get(
    axum::extract::State(s): S,
    req: Ruma<get_profile::v3::Request>,
) -> ApiResult<get_profile::v3::Response> {
    if s.account(&req.body.user_id)?.is_none() {
        s.query_appservice_user(&req.body.user_id).await;
    }
    let a = s
        .account(&req.body.user_id)?
        .filter(|a| !a.deactivated)
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    let mut res = get_profile::v3::Response::new();
    res.set("displayname".into(), a.displayname.into());
    res.set(
        "avatar_url".into(),
        a.avatar_url.map(|u| u.to_string()).into(),
    );
    Ok(RumaResponse(res))
}

pub async fn get_displayname(
    axum::extract::State(s): S,
    req: Ruma<get_display_name::v3::Request>,
) -> ApiResult<get_display_name::v3::Response> {
    let a = s
        .account(&req.body.user_id)?
        .filter(|a| !a.deactivated)
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    Ok(RumaResponse(get_display_name::v3::Response::new(
        a.displayname,
    )))
}

pub async fn set_displayname(
    axum::extract::State(s): S,
    req: Ruma<set_display_name::v3::Request>,
) -> ApiResult<set_display_name::v3::Response> {
    if &req.body.user_id != req.sender() {
        return Err(Error::forbidden("You may only change your own profile"));
    }
    s.set_profile(req.sender(), Some(req.body.displayname.clone()), None)
        .await?;
    Ok(RumaResponse(set_display_name::v3::Response::new()))
}

pub async fn get_avatar(
    axum::extract::State(s): S,
    req: Ruma<get_avatar_url::v3::Request>,
) -> ApiResult<get_avatar_url::v3::Response> {
    let a = s
        .account(&req.body.user_id)?
        .filter(|a| !a.deactivated)
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    Ok(RumaResponse(get_avatar_url::v3::Response::new(
        a.avatar_url,
    )))
}

pub async fn set_avatar(
    axum::extract::State(s): S,
    req: Ruma<set_avatar_url::v3::Request>,
) -> ApiResult<set_avatar_url::v3::Response> {
    if &req.body.user_id != req.sender() {
        return Err(Error::forbidden("You may only change your own profile"));
    }
    s.set_profile(req.sender(), None, Some(req.body.avatar_url.clone()))
        .await?;
    Ok(RumaResponse(set_avatar_url::v3::Response::new()))
}

//! Account registration and management: register, availability, whoami, password, deactivate,
//! third-party IDs (none: the server keeps no email addresses or phone numbers) and OpenID
//! tokens.

use axum::extract::State;
use ruma::api::client::account::{
    ThirdPartyIdRemovalStatus, change_password, check_registration_token_validity, deactivate,
    get_3pids, get_username_availability, register, request_openid_token, whoami,
};
use ruma::authentication::TokenType;

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    service::session::Registration,
};

/// `POST /_matrix/client/v3/register`
pub async fn register(
    State(s): State<AppState>,
    req: Ruma<register::v3::Request>,
) -> ApiResult<register::v3::Response> {
    let b = &req.body;
    let registration = Registration {
        username: b.username.as_deref(),
        password: b.password.as_deref(),
        auth: b.auth.as_ref(),
        via_appservice: matches!(b.login_type, Some(register::LoginType::ApplicationService)),
        guest: b.kind == register::RegistrationKind::Guest,
        inhibit_login: b.inhibit_login,
        device_id: b.device_id.clone(),
        device_name: b.initial_device_display_name.clone(),
        client_ip: req.client_ip.clone(),
    };
    let session = s.register(registration, req.appservice.as_deref()).await?;
    let mut res = register::v3::Response::new(session.user_id);
    if let Some((device_id, token)) = session.device {
        res.access_token = Some(token);
        res.device_id = Some(device_id);
    }
    Ok(RumaResponse(res))
}

/// `GET /_matrix/client/v3/register/available`
pub async fn get_username_availability(
    State(s): State<AppState>,
    req: Ruma<get_username_availability::v3::Request>,
) -> ApiResult<get_username_availability::v3::Response> {
    s.username_available(&req.body.username)?;
    Ok(RumaResponse(get_username_availability::v3::Response::new(
        true,
    )))
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`
pub async fn check_registration_token_validity(
    State(s): State<AppState>,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> ApiResult<check_registration_token_validity::v1::Response> {
    // Rate-limited like registration: a token is a password to the server.
    let ip = req.client_ip.as_deref().unwrap_or_default();
    s.rate_limiter.check(&format!("register:{ip}"))?;
    let valid = s.uiaa.registration_token_valid(&req.body.token)?;
    Ok(RumaResponse(
        check_registration_token_validity::v1::Response::new(valid),
    ))
}

/// `GET /_matrix/client/v3/account/whoami`
pub async fn whoami(
    State(_s): State<AppState>,
    req: Ruma<whoami::v3::Request>,
) -> ApiResult<whoami::v3::Response> {
    let mut res = whoami::v3::Response::new(req.sender()?.clone(), false);
    res.device_id = req.device.clone();
    Ok(RumaResponse(res))
}

/// `POST /_matrix/client/v3/account/password`
pub async fn change_password(
    State(s): State<AppState>,
    req: Ruma<change_password::v3::Request>,
) -> ApiResult<change_password::v3::Response> {
    let b = &req.body;
    s.change_password(
        req.sender()?,
        req.device.as_deref(),
        b.auth.as_ref(),
        &b.new_password,
        b.logout_devices,
    )
    .await?;
    Ok(RumaResponse(change_password::v3::Response::new()))
}

/// `POST /_matrix/client/v3/account/deactivate`
pub async fn deactivate(
    State(s): State<AppState>,
    req: Ruma<deactivate::v3::Request>,
) -> ApiResult<deactivate::v3::Response> {
    let user = req.sender()?;
    s.uiaa.password_auth(user, req.body.auth.as_ref()).await?;
    s.deactivate(user).await?;
    Ok(RumaResponse(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    )))
}

/// `GET /_matrix/client/v3/account/3pid`
///
/// Written by hand rather than through ruma's response, which leaves an empty `threepids`
/// out: Element's settings page reads the list without checking it is there.
pub async fn get_3pids(
    State(_s): State<AppState>,
    req: Ruma<get_3pids::v3::Request>,
) -> Result<axum::Json<serde_json::Value>, crate::error::Error> {
    req.sender()?;
    Ok(axum::Json(serde_json::json!({ "threepids": [] })))
}

/// `POST /_matrix/client/v3/user/{userId}/openid/request_token`
pub async fn request_openid_token(
    State(s): State<AppState>,
    req: Ruma<request_openid_token::v3::Request>,
) -> ApiResult<request_openid_token::v3::Response> {
    let user = req.sender()?;
    if *user != req.body.user_id {
        return Err(crate::error::Error::forbidden(
            "You may only ask for your own token",
        ));
    }
    let token = s.openid.request_token(user).await?;
    Ok(RumaResponse(request_openid_token::v3::Response::new(
        token,
        TokenType::Bearer,
        s.core.server_name().clone(),
        crate::service::openid::TOKEN_LIFETIME,
    )))
}

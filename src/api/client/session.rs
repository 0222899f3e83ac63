//! Login and logout.

use axum::extract::State;
use ruma::api::client::{
    session::{get_login_types, login, logout, logout_all},
    uiaa::UserIdentifier,
};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    service::session::Login,
};

/// `GET /_matrix/client/v3/login`
pub async fn get_login_types(
    State(_s): State<AppState>,
    _req: Ruma<get_login_types::v3::Request>,
) -> ApiResult<get_login_types::v3::Response> {
    use get_login_types::v3::{LoginType, PasswordLoginType};
    Ok(RumaResponse(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
    ])))
}

/// `POST /_matrix/client/v3/login`
pub async fn login(
    State(s): State<AppState>,
    req: Ruma<login::v3::Request>,
) -> ApiResult<login::v3::Response> {
    let b = &req.body;
    let (identifier, password) = match &b.login_info {
        login::v3::LoginInfo::Password(info) => (info.identifier.as_ref(), Some(&*info.password)),
        login::v3::LoginInfo::ApplicationService(info) => (info.identifier.as_ref(), None),
        _ => {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Unknown,
                "Supported login types: m.login.password, m.login.application_service",
            ));
        }
    };
    let Some(UserIdentifier::Matrix(id)) = identifier else {
        return Err(Error::forbidden("Use an m.id.user identifier"));
    };
    let login = Login {
        user: &id.user,
        password,
        device_id: b.device_id.clone(),
        device_name: b.initial_device_display_name.clone(),
        client_ip: req.client_ip.clone(),
    };
    let session = s.login(login, req.appservice.as_deref()).await?;
    let (device_id, token) = session
        .device
        .ok_or_else(|| Error::internal("login without a device"))?;
    let mut res = login::v3::Response::new(session.user_id, token, device_id);
    res.well_known = None;
    Ok(RumaResponse(res))
}

/// `POST /_matrix/client/v3/logout`
pub async fn logout(
    State(s): State<AppState>,
    req: Ruma<logout::v3::Request>,
) -> ApiResult<logout::v3::Response> {
    s.delete_devices(req.sender()?, std::slice::from_ref(req.sender_device()?))
        .await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

/// `POST /_matrix/client/v3/logout/all`
pub async fn logout_all(
    State(s): State<AppState>,
    req: Ruma<logout_all::v3::Request>,
) -> ApiResult<logout_all::v3::Response> {
    s.delete_all_devices(req.sender()?).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}

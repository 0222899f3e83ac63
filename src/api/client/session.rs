//! Accounts and sessions: register, login, logout, whoami, password, deactivate.

use ruma::api::client::{
    account::{change_password, deactivate, get_username_availability, register, whoami},
    session::{get_login_types, login, logout, logout_all},
    uiaa::UserIdentifier,
};

use crate::{
    api::{ApiResult, Ruma, RumaResponse, S},
    error::Error,
    service::uiaa::Proof,
};

pub async fn register(
    axum::extract::State(s): S,
    req: Ruma<register::v3::Request>,
) -> ApiResult<register::v3::Response> {
    let ip = req.client_ip.clone().unwrap_or_default();
    let appservice = req.appservice.clone();
    let via_appservice = body_is_appservice(&req.body);
    if appservice.is_none() {
        s.rate_limiter.check(&format!("register:{ip}"))?;
    }
    let body = req.body;
    if body.kind == register::RegistrationKind::Guest {
        return Err(Error::forbidden(
            "Guest access is not enabled on this server",
        ));
    }
    let user_id = match &body.username {
        Some(name) => s.user_id_for_localpart(&name.to_lowercase())?,
        None => s.user_id_for_localpart(
            &crate::service::random_token(6)
                .to_lowercase()
                .replace(['-', '_'], "x"),
        )?,
    };
    if s.account(&user_id)?.is_some() {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::UserInUse,
            "That user name is taken",
        ));
    }
    let token = match (&appservice, via_appservice) {
        // Appservices register users of their namespace without user-interactive auth.
        (Some(a), true) => {
            if !a.is_user(&user_id) {
                return Err(exclusive(
                    "That user ID is outside the appservice's namespace",
                ));
            }
            None
        }
        (None, true) => {
            return Err(Error::new(
                http::StatusCode::UNAUTHORIZED,
                ruma::api::error::ErrorKind::MissingToken,
                "m.login.application_service needs the appservice's as_token",
            ));
        }
        (_, false) => {
            if s.exclusive_user_owner(&user_id).is_some() {
                return Err(exclusive("That user ID is reserved by an appservice"));
            }
            let Proof::Registration { token } = s.registration_auth(body.auth.as_ref()).await?
            else {
                return Err(Error::forbidden("Unexpected authentication"));
            };
            token
        }
    };
    let password = body
        .password
        .as_deref()
        .filter(|p| !p.is_empty() && !via_appservice);
    s.create_account(&user_id, password, false).await?;
    if let Some(token) = token {
        s.use_registration_token(&token).await?;
    }
    let mut res = register::v3::Response::new(user_id.clone());
    if !body.inhibit_login {
        let (device_id, token) = s
            .create_device(
                &user_id,
                body.device_id,
                body.initial_device_display_name,
                req.client_ip,
            )
            .await?;
        res.access_token = Some(token);
        res.device_id = Some(device_id);
    }
    tracing::info!(%user_id, "registered");
    Ok(RumaResponse(res))
}

fn body_is_appservice(body: &register::v3::Request) -> bool {
    matches!(
        body.login_type,
        Some(register::LoginType::ApplicationService)
    )
}

fn exclusive(message: &str) -> Error {
    Error::new(
        http::StatusCode::BAD_REQUEST,
        ruma::api::error::ErrorKind::Exclusive,
        message,
    )
}

pub async fn available(
    axum::extract::State(s): S,
    req: Ruma<get_username_availability::v3::Request>,
) -> ApiResult<get_username_availability::v3::Response> {
    let user_id = s.user_id_for_localpart(&req.body.username)?;
    if s.exclusive_user_owner(&user_id).is_some() {
        return Err(exclusive("That user ID is reserved by an appservice"));
    }
    if s.account(&user_id)?.is_some() {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::UserInUse,
            "That user name is taken",
        ));
    }
    Ok(RumaResponse(get_username_availability::v3::Response::new(
        true,
    )))
}

pub async fn login_types(
    _: S,
    _: Ruma<get_login_types::v3::Request>,
) -> ApiResult<get_login_types::v3::Response> {
    use get_login_types::v3::{LoginType, PasswordLoginType};
    Ok(RumaResponse(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
    ])))
}

pub async fn login(
    axum::extract::State(s): S,
    req: Ruma<login::v3::Request>,
) -> ApiResult<login::v3::Response> {
    let ip = req.client_ip.clone().unwrap_or_default();
    let appservice = req.appservice.clone();
    let body = req.body;
    let (identifier, password) = match &body.login_info {
        login::v3::LoginInfo::Password(info) => (info.identifier.as_ref(), Some(&info.password)),
        login::v3::LoginInfo::ApplicationService(info) => (info.identifier.as_ref(), None),
        _ => {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Unknown,
                "Supported login types: m.login.password, m.login.application_service",
            ));
        }
    };
    if appservice.is_none() {
        s.rate_limiter.check(&format!("login:{ip}"))?;
    }
    let user = match identifier {
        Some(UserIdentifier::Matrix(m)) => m.user.clone(),
        _ => return Err(Error::forbidden("Use an m.id.user identifier")),
    };
    let user_id = if user.starts_with('@') {
        ruma::OwnedUserId::try_from(user)
            .map_err(|_| Error::forbidden("Invalid username or password"))?
    } else {
        ruma::UserId::parse_with_server_name(user.to_lowercase(), s.server_name())
            .map_err(|_| Error::forbidden("Invalid username or password"))?
    };
    match (password, &appservice) {
        (Some(password), _) => {
            s.rate_limiter.check(&format!("login-user:{user_id}"))?;
            s.check_password(&user_id, password).await?;
        }
        (None, Some(a)) if a.is_user(&user_id) && s.account(&user_id)?.is_some() => {}
        (None, Some(_)) => return Err(Error::forbidden("That user is not the appservice's")),
        (None, None) => {
            return Err(Error::new(
                http::StatusCode::UNAUTHORIZED,
                ruma::api::error::ErrorKind::MissingToken,
                "m.login.application_service needs the appservice's as_token",
            ));
        }
    }
    let (device_id, token) = s
        .create_device(
            &user_id,
            body.device_id,
            body.initial_device_display_name,
            req.client_ip,
        )
        .await?;
    let mut res = login::v3::Response::new(user_id, token, device_id);
    res.well_known = None;
    Ok(RumaResponse(res))
}

pub async fn logout(
    axum::extract::State(s): S,
    req: Ruma<logout::v3::Request>,
) -> ApiResult<logout::v3::Response> {
    s.delete_devices(req.sender(), std::slice::from_ref(req.sender_device()))
        .await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

pub async fn logout_all(
    axum::extract::State(s): S,
    req: Ruma<logout_all::v3::Request>,
) -> ApiResult<logout_all::v3::Response> {
    s.delete_all_devices(req.sender()).await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}

pub async fn whoami(
    axum::extract::State(_s): S,
    req: Ruma<whoami::v3::Request>,
) -> ApiResult<whoami::v3::Response> {
    let mut res = whoami::v3::Response::new(req.sender().clone(), false);
    res.device_id = req.device.clone();
    Ok(RumaResponse(res))
}

pub async fn change_password(
    axum::extract::State(s): S,
    req: Ruma<change_password::v3::Request>,
) -> ApiResult<change_password::v3::Response> {
    s.password_auth(req.sender(), req.body.auth.as_ref())
        .await?;
    if req.body.new_password.is_empty() {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::WeakPassword,
            "Password must not be empty",
        ));
    }
    s.change_password(req.sender(), &req.body.new_password)
        .await?;
    if req.body.logout_devices {
        let others: Vec<_> = s
            .devices(req.sender())?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id != req.sender_device())
            .collect();
        s.delete_devices(req.sender(), &others).await?;
    }
    Ok(RumaResponse(change_password::v3::Response::new()))
}

pub async fn deactivate(
    axum::extract::State(s): S,
    req: Ruma<deactivate::v3::Request>,
) -> ApiResult<deactivate::v3::Response> {
    s.password_auth(req.sender(), req.body.auth.as_ref())
        .await?;
    s.deactivate(req.sender()).await?;
    Ok(RumaResponse(deactivate::v3::Response::new(
        ruma::api::client::account::ThirdPartyIdRemovalStatus::NoSupport,
    )))
}

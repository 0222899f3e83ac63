//! Registration and login: workflows across accounts, user-interactive auth, appservices and
//! push rules, so they are methods of [`Services`] itself.

use ruma::{OwnedDeviceId, OwnedUserId, UserId, api::error::ErrorKind};

use super::{Services, appservice::Appservice, core::random_token, uiaa::Proof};
use crate::error::{Error, Result};

/// What `/register` asks for, already parsed.
pub struct Registration<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub auth: Option<&'a ruma::api::client::uiaa::AuthData>,
    /// `type: m.login.application_service`.
    pub via_appservice: bool,
    pub guest: bool,
    pub inhibit_login: bool,
    pub device_id: Option<OwnedDeviceId>,
    pub device_name: Option<String>,
    pub client_ip: Option<String>,
}

/// What `/login` asks for, already parsed.
pub struct Login<'a> {
    /// `m.id.user`: a localpart or a full user ID.
    pub user: &'a str,
    /// `m.login.password`, or None for `m.login.application_service`.
    pub password: Option<&'a str>,
    pub device_id: Option<OwnedDeviceId>,
    pub device_name: Option<String>,
    pub client_ip: Option<String>,
}

/// A new session: user, device and access token (none when login was inhibited).
pub struct Session {
    pub user_id: OwnedUserId,
    pub device: Option<(OwnedDeviceId, String)>,
}

fn exclusive(message: &str) -> Error {
    Error::new(http::StatusCode::BAD_REQUEST, ErrorKind::Exclusive, message)
}

fn appservice_token_needed() -> Error {
    Error::new(
        http::StatusCode::UNAUTHORIZED,
        ErrorKind::MissingToken,
        "m.login.application_service needs the appservice's as_token",
    )
}

impl Services {
    /// `/register`: user-interactive auth (or an appservice's token), the account with its
    /// push rules, then a device unless login is inhibited.
    pub async fn register(
        &self,
        req: Registration<'_>,
        appservice: Option<&Appservice>,
    ) -> Result<Session> {
        if appservice.is_none() {
            self.rate_limiter.check(&format!(
                "register:{}",
                req.client_ip.as_deref().unwrap_or_default()
            ))?;
        }
        if req.guest {
            return Err(Error::forbidden(
                "Guest access is not enabled on this server",
            ));
        }
        let user_id = match req.username {
            Some(name) => self.users.user_id_for_localpart(&name.to_lowercase())?,
            None => self
                .users
                .user_id_for_localpart(&random_token(6).to_lowercase().replace(['-', '_'], "x"))?,
        };
        self.users.require_free(&user_id)?;
        let token = match (appservice, req.via_appservice) {
            // Appservices register users of their namespace without user-interactive auth.
            (Some(a), true) => {
                if !a.is_user(&user_id) {
                    return Err(exclusive(
                        "That user ID is outside the appservice's namespace",
                    ));
                }
                None
            }
            (None, true) => return Err(appservice_token_needed()),
            (_, false) => {
                if self.appservices.exclusive_user_owner(&user_id).is_some() {
                    return Err(exclusive("That user ID is reserved by an appservice"));
                }
                if let Some(p) = req.password.filter(|p| !p.is_empty()) {
                    self.users.check_password_strength(p)?;
                }
                let Proof::Registration { token } = self.uiaa.registration_auth(req.auth).await?
                else {
                    return Err(Error::forbidden("Unexpected authentication"));
                };
                token
            }
        };
        let password = req
            .password
            .filter(|p| !p.is_empty() && !req.via_appservice);
        self.users
            .create_account(&user_id, password, false, token.as_deref())
            .await?;
        tracing::info!(%user_id, "registered");
        let device = if req.inhibit_login {
            None
        } else {
            Some(
                self.users
                    .create_device(&user_id, req.device_id, req.device_name, req.client_ip)
                    .await?,
            )
        };
        Ok(Session { user_id, device })
    }

    /// `/register/available`.
    pub fn username_available(&self, localpart: &str) -> Result<()> {
        let user_id = self.users.user_id_for_localpart(localpart)?;
        if self.appservices.exclusive_user_owner(&user_id).is_some() {
            return Err(exclusive("That user ID is reserved by an appservice"));
        }
        self.users.require_free(&user_id)
    }

    /// `/login` with a password or as an appservice's user.
    pub async fn login(&self, req: Login<'_>, appservice: Option<&Appservice>) -> Result<Session> {
        if appservice.is_none() {
            self.rate_limiter.check(&format!(
                "login:{}",
                req.client_ip.as_deref().unwrap_or_default()
            ))?;
        }
        let invalid = || Error::forbidden("Invalid username or password");
        let user_id = if req.user.starts_with('@') {
            OwnedUserId::try_from(req.user).map_err(|_| invalid())?
        } else {
            UserId::parse_with_server_name(req.user.to_lowercase(), self.core.server_name())
                .map_err(|_| invalid())?
        };
        match (req.password, appservice) {
            (Some(password), _) => {
                self.rate_limiter.check(&format!("login-user:{user_id}"))?;
                self.users.check_password(&user_id, password).await?;
            }
            (None, Some(a)) if a.is_user(&user_id) && self.users.account(&user_id)?.is_some() => {}
            (None, Some(_)) => return Err(Error::forbidden("That user is not the appservice's")),
            (None, None) => return Err(appservice_token_needed()),
        }
        let device = self
            .users
            .create_device(&user_id, req.device_id, req.device_name, req.client_ip)
            .await?;
        Ok(Session {
            user_id,
            device: Some(device),
        })
    }

    /// Changes a password after user-interactive auth; optionally logs out the other devices.
    pub async fn change_password(
        &self,
        user: &UserId,
        device: Option<&ruma::DeviceId>,
        auth: Option<&ruma::api::client::uiaa::AuthData>,
        new_password: &str,
        logout_devices: bool,
    ) -> Result<()> {
        self.uiaa.password_auth(user, auth).await?;
        self.users.change_password(user, new_password).await?;
        if logout_devices {
            let others: Vec<_> = self
                .users
                .devices(user)?
                .into_iter()
                .map(|(id, _)| id)
                .filter(|id| Some(&**id) != device)
                .collect();
            self.delete_devices(user, &others).await?;
        }
        Ok(())
    }
}

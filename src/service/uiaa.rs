//! User-interactive authentication sessions.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use ruma::{
    UserId,
    api::client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo},
};

use super::{
    core::{Core, random_token},
    users::Users,
};
use crate::{
    config::Registration,
    error::{Error, Result},
};

struct Session {
    created: Instant,
}

/// User-interactive authentication. Depends on [`Core`] and [`Users`].
pub struct Uiaa {
    core: Arc<Core>,
    users: Arc<Users>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// What a completed user-interactive authentication proved.
pub enum Proof {
    /// For registration: a registration token to count, if one was used.
    Registration { token: Option<String> },
    /// For account actions: the user proved their password.
    Password,
}

impl Uiaa {
    pub fn new(core: Arc<Core>, users: Arc<Users>) -> Self {
        Self {
            core,
            users,
            sessions: Mutex::default(),
        }
    }

    fn uiaa_info(
        &self,
        flows: Vec<AuthFlow>,
        session: String,
        completed: Vec<AuthType>,
        error: Option<Error>,
    ) -> Error {
        let mut info = UiaaInfo::new(flows);
        info.session = Some(session);
        info.completed = completed;
        if let Some(Error::Matrix { kind, message, .. }) = error {
            info.auth_error = Some(ruma::api::error::StandardErrorBody::new(kind, message));
        }
        Error::Uiaa(Box::new(info))
    }

    fn new_session(&self) -> String {
        let id = random_token(16);
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|_, v| v.created.elapsed().as_secs() < 3600);
        s.insert(
            id.clone(),
            Session {
                created: Instant::now(),
            },
        );
        id
    }

    /// Runs one step of registration UIA: m.login.dummy (open) or m.login.registration_token.
    pub async fn registration_auth(&self, auth: Option<&AuthData>) -> Result<Proof> {
        let stage = match self.core.config.registration {
            Registration::Open => AuthType::Dummy,
            Registration::Token => AuthType::RegistrationToken,
            Registration::Closed => {
                return Err(Error::forbidden("Registration is closed on this server"));
            }
        };
        let flows = vec![AuthFlow::new(vec![stage.clone()])];
        let Some(auth) = auth else {
            return Err(self.uiaa_info(flows, self.new_session(), vec![], None));
        };
        let session = auth
            .session()
            .map(str::to_owned)
            .unwrap_or_else(|| self.new_session());
        match (auth, &stage) {
            (AuthData::Dummy(_), AuthType::Dummy) => Ok(Proof::Registration { token: None }),
            (AuthData::RegistrationToken(t), AuthType::RegistrationToken) => {
                if self
                    .users
                    .registration_token(&t.token)?
                    .is_some_and(|r| r.is_valid())
                {
                    Ok(Proof::Registration {
                        token: Some(t.token.clone()),
                    })
                } else {
                    let err = Error::new(
                        http::StatusCode::UNAUTHORIZED,
                        ruma::api::error::ErrorKind::Forbidden,
                        "Invalid registration token",
                    );
                    Err(self.uiaa_info(flows, session, vec![], Some(err)))
                }
            }
            _ => Err(self.uiaa_info(
                flows,
                session,
                vec![],
                Some(Error::forbidden("Unsupported authentication stage")),
            )),
        }
    }

    /// Asks the user to confirm a sensitive action with their password.
    pub async fn password_auth(&self, user: &UserId, auth: Option<&AuthData>) -> Result<Proof> {
        let flows = vec![AuthFlow::new(vec![AuthType::Password])];
        let Some(auth) = auth else {
            return Err(self.uiaa_info(flows, self.new_session(), vec![], None));
        };
        let session = auth
            .session()
            .map(str::to_owned)
            .unwrap_or_else(|| self.new_session());
        if let AuthData::Password(p) = auth {
            let claimed = match &p.identifier {
                ruma::api::client::uiaa::UserIdentifier::Matrix(m) => Some(m.user.clone()),
                _ => None,
            };
            let matches_user = claimed.is_none_or(|c| c == user.as_str() || c == user.localpart());
            if matches_user && self.users.check_password(user, &p.password).await.is_ok() {
                return Ok(Proof::Password);
            }
            return Err(self.uiaa_info(
                flows,
                session,
                vec![],
                Some(Error::forbidden("Invalid password")),
            ));
        }
        Err(self.uiaa_info(
            flows,
            session,
            vec![],
            Some(Error::forbidden("Unsupported authentication stage")),
        ))
    }
}

//! User-interactive authentication (the spec's UIA): sessions, their completed stages, and the
//! 401 answers that tell a client what to do next.
//!
//! Every 401 carries the flows, `params` (an object, empty when no stage needs any), the
//! session and the stages completed so far. A request with only `{"auth": {"session": ...}}`
//! (a client asking where it stands) gets that 401 without an error. A stage that fails adds
//! `errcode` and `error`. When every stage of a flow is done, the session ends and the call
//! goes ahead; repeating a stage that is already done counts as done.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
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

/// How long a session lives without being completed.
const SESSION_LIFETIME: Duration = Duration::from_secs(3600);

/// Sessions at most; the oldest go first (a stranger cannot grow the map without bound).
const MAX_SESSIONS: usize = 10_000;

struct Session {
    created: Instant,
    completed: Vec<AuthType>,
    /// The registration token a `m.login.registration_token` stage proved.
    token: Option<String>,
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

/// What checking one stage found.
enum Stage {
    Passed { token: Option<String> },
    Failed(Error),
}

impl Uiaa {
    pub fn new(core: Arc<Core>, users: Arc<Users>) -> Self {
        Self {
            core,
            users,
            sessions: Mutex::default(),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session a client names, made when it is new or unknown.
    fn session(&self, id: Option<&str>) -> String {
        let mut s = self.sessions();
        s.retain(|_, v| v.created.elapsed() < SESSION_LIFETIME);
        if let Some(id) = id
            && s.contains_key(id)
        {
            return id.to_owned();
        }
        if s.len() >= MAX_SESSIONS
            && let Some(oldest) = s
                .iter()
                .min_by_key(|(_, v)| v.created)
                .map(|(k, _)| k.clone())
        {
            s.remove(&oldest);
        }
        let id = id
            .filter(|id| !id.is_empty() && id.len() <= 64)
            .map(str::to_owned)
            .unwrap_or_else(|| random_token(16));
        s.insert(
            id.clone(),
            Session {
                created: Instant::now(),
                completed: Vec::new(),
                token: None,
            },
        );
        id
    }

    /// The 401 for a session: flows, params, completed stages, and the error if a stage failed.
    fn ask(&self, flows: &[AuthFlow], session: &str, error: Option<Error>) -> Error {
        let mut info = UiaaInfo::new(flows.to_vec());
        info.session = Some(session.to_owned());
        info.completed = self
            .sessions()
            .get(session)
            .map(|s| s.completed.clone())
            .unwrap_or_default();
        info.params = serde_json::value::to_raw_value(&serde_json::json!({})).ok();
        if let Some(Error::Matrix { kind, message, .. }) = error {
            info.auth_error = Some(ruma::api::error::StandardErrorBody::new(kind, message));
        }
        Error::Uiaa(Box::new(info))
    }

    /// The stage a request submits, with its session; or the 401 that answers a request with
    /// no `auth`, or with only a session (the client asks where it stands).
    fn begin<'a>(
        &self,
        flows: &[AuthFlow],
        auth: Option<&'a AuthData>,
    ) -> Result<(String, &'a AuthData, AuthType)> {
        let Some(auth) = auth else {
            let session = self.session(None);
            return Err(self.ask(flows, &session, None));
        };
        let session = self.session(auth.session());
        match auth.auth_type() {
            Some(stage) => Ok((session, auth, stage)),
            None => Err(self.ask(flows, &session, None)),
        }
    }

    /// Records a checked stage. Ok (with a proved registration token) when a flow is complete;
    /// else the 401 that asks for the rest, with the stage's error if it failed.
    fn finish(
        &self,
        flows: &[AuthFlow],
        session: &str,
        stage: AuthType,
        outcome: Stage,
    ) -> Result<Option<String>> {
        let token = match outcome {
            Stage::Failed(e) => return Err(self.ask(flows, session, Some(e))),
            Stage::Passed { token } => token,
        };
        let done = {
            let mut s = self.sessions();
            let entry = s
                .get_mut(session)
                .ok_or_else(|| Error::internal("lost a UIA session"))?;
            if !entry.completed.contains(&stage) {
                entry.completed.push(stage);
            }
            if token.is_some() {
                entry.token = token;
            }
            flows
                .iter()
                .any(|f| f.stages.iter().all(|st| entry.completed.contains(st)))
        };
        if !done {
            return Err(self.ask(flows, session, None));
        }
        Ok(self.sessions().remove(session).and_then(|s| s.token))
    }

    /// Registration's user-interactive authentication: `m.login.dummy` (open registration) or
    /// `m.login.registration_token`.
    pub async fn registration_auth(&self, auth: Option<&AuthData>) -> Result<Proof> {
        let stage = match self.core.config.registration {
            Registration::Open => AuthType::Dummy,
            Registration::Token => AuthType::RegistrationToken,
            Registration::Closed => {
                return Err(Error::forbidden("Registration is closed on this server"));
            }
        };
        let flows = [AuthFlow::new(vec![stage.clone()])];
        let (session, auth, submitted) = self.begin(&flows, auth)?;
        let outcome = match (auth, &stage) {
            (AuthData::Dummy(_), AuthType::Dummy) => Stage::Passed { token: None },
            (AuthData::RegistrationToken(t), AuthType::RegistrationToken) => {
                if self.registration_token_valid(&t.token)? {
                    Stage::Passed {
                        token: Some(t.token.clone()),
                    }
                } else {
                    Stage::Failed(Error::new(
                        http::StatusCode::UNAUTHORIZED,
                        ruma::api::error::ErrorKind::Forbidden,
                        "Invalid registration token",
                    ))
                }
            }
            _ => Stage::Failed(Error::forbidden("Unsupported authentication stage")),
        };
        let token = self.finish(&flows, &session, submitted, outcome)?;
        Ok(Proof::Registration { token })
    }

    /// `GET /register/m.login.registration_token/validity`.
    pub fn registration_token_valid(&self, token: &str) -> Result<bool> {
        Ok(self
            .users
            .registration_token(token)?
            .is_some_and(|r| r.is_valid()))
    }

    /// Asks the user to confirm a sensitive action with their password.
    pub async fn password_auth(&self, user: &UserId, auth: Option<&AuthData>) -> Result<Proof> {
        let flows = [AuthFlow::new(vec![AuthType::Password])];
        let (session, auth, submitted) = self.begin(&flows, auth)?;
        let outcome = match auth {
            AuthData::Password(p) => {
                let claimed = match &p.identifier {
                    ruma::api::client::uiaa::UserIdentifier::Matrix(m) => Some(m.user.clone()),
                    _ => None,
                };
                let matches_user =
                    claimed.is_none_or(|c| c == user.as_str() || c == user.localpart());
                if matches_user && self.users.check_password(user, &p.password).await.is_ok() {
                    Stage::Passed { token: None }
                } else {
                    Stage::Failed(Error::forbidden("Invalid password"))
                }
            }
            _ => Stage::Failed(Error::forbidden("Unsupported authentication stage")),
        };
        self.finish(&flows, &session, submitted, outcome)?;
        Ok(Proof::Password)
    }
}

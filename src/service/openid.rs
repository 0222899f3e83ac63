//! OpenID tokens (`/user/{userId}/openid/request_token`): a widget or integration manager
//! gets a short-lived token from the user's client and checks it at
//! `/_matrix/federation/v1/openid/userinfo`, learning the user's ID and nothing else.

use std::{sync::Arc, time::Duration};

use ruma::{OwnedUserId, UserId};

use super::core::{Core, now_ms, random_token};
use crate::{
    error::{Error, Result},
    store::{Batch, OPENID_TOKENS, OpenIdToken},
};

/// How long a token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Live tokens a user may hold; asking for more replaces the oldest.
const PER_USER: usize = 10;

/// OpenID tokens. Depends on [`Core`].
pub struct OpenId {
    core: Arc<Core>,
}

impl OpenId {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// A new token for the user. Expired tokens (and the user's oldest beyond
    /// [`PER_USER`]) are dropped on the way.
    pub async fn request_token(&self, user: &UserId) -> Result<String> {
        let lock = self.core.lock("openid");
        let _guard = lock.lock().await;
        let now = now_ms();
        let mut b = Batch::default();
        let mut mine = Vec::new();
        for item in self.core.store.scan(OPENID_TOKENS.all()) {
            let ((token,), record) = item?;
            if record.expires_ts <= now {
                b.delete(&OPENID_TOKENS, token.as_str());
            } else if record.user == user {
                mine.push((record.expires_ts, token));
            }
        }
        mine.sort();
        for (_, token) in mine.iter().take((mine.len() + 1).saturating_sub(PER_USER)) {
            b.delete(&OPENID_TOKENS, token.as_str());
        }
        let token = random_token(32);
        b.put(
            &OPENID_TOKENS,
            token.as_str(),
            &OpenIdToken {
                user: user.to_owned(),
                expires_ts: now + TOKEN_LIFETIME.as_millis() as u64,
            },
        );
        self.core.write(b).await?;
        Ok(token)
    }

    /// Whose a token is, or M_UNKNOWN_TOKEN when it is unknown or expired.
    pub fn user_of(&self, token: &str) -> Result<OwnedUserId> {
        match self.core.store.get(&OPENID_TOKENS, token)? {
            Some(record) if record.expires_ts > now_ms() => Ok(record.user),
            _ => Err(Error::unknown_token("Unknown or expired OpenID token")),
        }
    }
}

//! TURN credentials for calls (`/voip/turnServer`), in the time-limited form coturn's
//! `use-auth-secret` checks: the username is `{expiry}:{user}`, the password the base64
//! HMAC-SHA1 of the username under the shared secret.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use ruma::UserId;
use sha1::Sha1;

use crate::config::TurnConfig;

/// Credentials for the configured TURN server.
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
    pub uris: Vec<String>,
    pub ttl: Duration,
}

/// The user's TURN credentials valid from `now_secs`, or None when no TURN server with a
/// shared secret is configured.
pub fn turn_credentials(
    config: &TurnConfig,
    user: &UserId,
    now_secs: u64,
) -> Option<TurnCredentials> {
    let secret = config.shared_secret.as_deref()?;
    if config.uris.is_empty() {
        return None;
    }
    let username = format!("{}:{user}", now_secs + config.ttl_secs);
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Some(TurnCredentials {
        username,
        password,
        uris: config.uris.clone(),
        ttl: Duration::from_secs(config.ttl_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_coturns_hmac() {
        let config = TurnConfig {
            uris: vec!["turn:turn.example.org:3478?transport=udp".into()],
            shared_secret: Some("north".into()),
            ttl_secs: 100,
        };
        let user = ruma::user_id!("@alice:example.org");
        let c = turn_credentials(&config, user, 1_000).unwrap();
        assert_eq!(c.username, "1100:@alice:example.org");
        // echo -n '1100:@alice:example.org' | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(c.password, "u9J8ibLkUlOPYV+fYnvI0L0bYY0=");
        assert!(turn_credentials(&TurnConfig::default(), user, 0).is_none());
    }
}

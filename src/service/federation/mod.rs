//! The server's identity towards other servers: its signing key as the Server-Server API
//! publishes it (`/_matrix/key/v2/server`). The rest of federation (joins, transactions,
//! backfill) is not built yet; nothing here contacts another server.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use ruma::CanonicalJsonObject;
use serde_json::json;

use super::core::{Core, now_ms};
use crate::error::{Error, Result};

/// How long other servers may cache the published key before asking again.
pub const KEY_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// The Server-Server API's identity. Depends on [`Core`].
pub struct Federation {
    core: Arc<Core>,
}

impl Federation {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// The server's keys as `GET /_matrix/key/v2/server` answers: the one ed25519 key that
    /// signs every local event (the server has never replaced it, so there are no old keys),
    /// valid for [`KEY_VALIDITY`] from now, signed by itself.
    pub fn server_keys(&self) -> Result<CanonicalJsonObject> {
        let key = &self.core.signing_key;
        let server_name = self.core.server_name().as_str();
        let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.public_key());
        let valid_until = now_ms().saturating_add(KEY_VALIDITY.as_millis() as u64);
        let mut keys: CanonicalJsonObject = serde_json::from_value(json!({
            "server_name": server_name,
            "verify_keys": { format!("ed25519:{}", key.version()): { "key": public } },
            "old_verify_keys": {},
            "valid_until_ts": valid_until,
        }))
        .map_err(Error::internal)?;
        ruma::signatures::sign_json(server_name, key, &mut keys).map_err(Error::internal)?;
        Ok(keys)
    }
}

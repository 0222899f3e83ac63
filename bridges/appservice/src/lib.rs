//! Building blocks for Matrix application services (bridges) on Tsunagu or any homeserver.
//!
//! - [`Registration`]: the registration file (generate with fresh tokens, write, read).
//! - [`AppService`]: an axum router for the homeserver's calls (transactions, ping, queries)
//!   that checks the `hs_token`, de-duplicates transactions persistently and hands events to
//!   your [`Handler`] in order, surviving restarts.
//! - [`Client`] and [`Intent`]: act on the homeserver as the bridge bot or as ghost users.
//! - [`Store`]: persisted mappings (remote channel ↔ room, nick ↔ ghost) in one redb file.

pub mod cli;
mod client;
mod registration;
mod server;
mod store;

pub use client::{AdminRoom, Client, Intent};
pub use registration::{
    Namespace, Namespaces, Registration, random_token, regex_escape, write_atomically,
};
pub use server::{AppService, Handler};
pub use store::Store;

/// Runs `attempt` until it succeeds, waiting 0.5 s after the first failure and twice as long
/// after each next one (at most a minute); each failure is logged with `what`.
pub async fn retry<F, Fut, E>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        match attempt().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!("{what}: {e:#}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(60));
            }
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A registration file is not valid YAML for a registration.
    #[error("registration YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// The embedded store failed.
    #[error("store: {0}")]
    Store(#[from] redb::Error),
    /// The homeserver could not be reached.
    #[error("homeserver unreachable: {0}")]
    Http(#[from] reqwest::Error),
    /// The homeserver answered with an error.
    #[error("homeserver refused ({status} {errcode}): {message}")]
    Matrix {
        /// HTTP status.
        status: u16,
        /// The spec's `errcode`, e.g. `M_FORBIDDEN`.
        errcode: String,
        /// What was asked and the server's message.
        message: String,
    },
    /// A setting is wrong.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The Matrix `errcode` if the homeserver refused the request.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Error::Matrix { errcode, .. } => Some(errcode),
            _ => None,
        }
    }
}

//! Building blocks for Matrix application services (bridges) on Tsunagu or any homeserver.
//!
//! - [`Registration`]: the registration file (generate with fresh tokens, write, read).
//! - [`AppService`]: an axum router for the homeserver's calls (transactions, ping, queries)
//!   that checks the `hs_token`, de-duplicates transactions persistently and hands events to
//!   your [`Handler`] in order, surviving restarts.
//! - [`Client`] and [`Intent`]: act on the homeserver as the bridge bot or as ghost users.
//! - [`Store`]: persisted mappings (remote channel ↔ room, nick ↔ ghost) in one redb file.

pub mod claims;
pub mod cli;
mod client;
mod registration;
mod server;
mod store;

pub use client::{AdminRoom, Client, Intent, read_limited};
pub use registration::{
    Namespace, Namespaces, Registration, random_token, regex_escape, write_atomically,
};
pub use server::{AppService, Handler};
pub use store::Store;

/// A Matrix localpart for a remote name (a nick, a JID, a mail address): ASCII letters
/// lower-cased, digits and `.-_` kept, every other byte of its UTF-8 as `=xx`
/// (`Bob@example.org` → `bob=40example.org`). Distinct names (up to ASCII case) get distinct
/// localparts.
pub fn escape_localpart(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => out.push(b as char),
            b'A'..=b'Z' => out.push(b.to_ascii_lowercase() as char),
            _ => out.push_str(&format!("={b:02x}")),
        }
    }
    out
}

/// The civil date `(year, month, day)` of a day counted from 1970-01-01 (Howard Hinnant's
/// algorithm), for the dates bridges write (XMPP's XEP-0082, mail's RFC 5322).
pub fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

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

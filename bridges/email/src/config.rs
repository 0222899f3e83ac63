//! The bridge's configuration file (TOML). See `config/email.toml` (in the repository's root)
//! for every setting.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// The whole configuration of the bridge.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the homeserver's Client-Server API is, e.g. `http://127.0.0.1:8008`.
    pub homeserver_url: String,
    /// The homeserver's domain (the part after `:` in user IDs).
    pub server_name: String,
    /// The registration file: written by `generate-registration`, read at start.
    pub registration: PathBuf,
    /// Address the appservice API listens on (the homeserver pushes transactions here).
    pub listen: SocketAddr,
    /// The URL the homeserver uses to reach `listen`; defaults to `http://{listen}`.
    #[serde(default)]
    pub url: Option<String>,
    /// Folder for the bridge's store (subscribers, message mappings, the mail spool).
    pub data_dir: PathBuf,
    /// Localpart of the bridge bot (the registration's `sender_localpart`).
    #[serde(default = "default_bot")]
    pub bot_localpart: String,
    /// Prefix of every ghost user and portal alias this bridge owns (its namespace).
    #[serde(default = "default_prefix")]
    pub user_prefix: String,
    /// A Matrix user invited to the admin room and to every new portal room, where they are
    /// a moderator (room commands need that).
    #[serde(default)]
    pub admin_user: Option<String>,
    /// An existing room to use as the admin room; by default the bot creates one.
    #[serde(default)]
    pub admin_room: Option<String>,
    /// A second registration for double puppeting (user namespace: every user of the server,
    /// not exclusive; `url: null`): with it, mail from someone who claimed their address shows
    /// as their own Matrix account. Without it, as their ghost.
    #[serde(default)]
    pub double_puppet_registration: Option<PathBuf>,
    /// The mail side.
    pub mail: MailConfig,
    /// The lists (one portal room each).
    #[serde(default)]
    pub lists: Vec<ListConfig>,
}

/// How mail comes in and goes out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// Where the bridge takes mail by LMTP; the MTA's transport for the lists' domain.
    pub lmtp_listen: SocketAddr,
    /// The MTA that sends the bridge's mail (SMTP, plain, normally on loopback).
    #[serde(default = "default_smtp_host")]
    pub smtp_host: String,
    /// Its port.
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    /// Largest mail taken, in bytes; a larger one is refused (552) before it is stored.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Most LMTP connections served at once; more wait for a free one.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most recipients of one LMTP transaction.
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// How often digest subscribers get their digest, in seconds.
    #[serde(default = "default_digest_interval")]
    pub digest_interval_secs: u64,
    /// Subscriptions asked for by mail and not confirmed yet, per list; past it, more asks
    /// are dropped (each one sends a mail to the address it names).
    #[serde(default = "default_max_pending")]
    pub max_pending_subscriptions: usize,
    /// Bounces after which an address is unsubscribed.
    #[serde(default = "default_max_bounces")]
    pub max_bounces: u32,
    /// Longest wait between retries when the MTA does not take mail, in milliseconds.
    #[serde(default = "default_retry_max")]
    pub retry_max_ms: u64,
    /// Largest total of files attached to one mail the bridge sends (a file shared in the
    /// room, a post's attachments passed on), in bytes as the mail carries them (base64, a
    /// third larger than the files); a file past it is named in the text. Keep it below the
    /// MTA's message size limit (Postfix: `message_size_limit`, 10,240,000 by default).
    #[serde(default = "default_max_attachment")]
    pub max_attachment_bytes: usize,
}

/// One mailing list, linked to one room.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    /// The list's address, e.g. `alumni@lists.example.org`; `alumni+subscribe@…`,
    /// `alumni+unsubscribe@…`, `alumni+digest@…`, `alumni+each@…` and the bounce addresses
    /// `alumni+bounce-…@…` go to the bridge too.
    pub address: String,
    /// The list's name (room name, `List-Id` label, `[name]` nowhere: subjects stay as
    /// written).
    pub name: String,
}

fn default_bot() -> String {
    "mailbot".into()
}
fn default_prefix() -> String {
    "mail_".into()
}
fn default_smtp_host() -> String {
    "127.0.0.1".into()
}
fn default_smtp_port() -> u16 {
    25
}
fn default_max_message() -> usize {
    10 * 1024 * 1024
}
fn default_max_attachment() -> usize {
    8_000_000
}
fn default_max_connections() -> usize {
    16
}
fn default_max_recipients() -> usize {
    100
}
fn default_digest_interval() -> u64 {
    86_400
}
fn default_max_pending() -> usize {
    1000
}
fn default_max_bounces() -> u32 {
    3
}
fn default_retry_max() -> u64 {
    300_000
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and checks a configuration.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut config: Config = toml::from_str(text)?;
        for list in &mut config.lists {
            list.address = list.address.to_lowercase();
            let valid = list
                .address
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && !l.contains('+') && d.contains('.'));
            if !valid {
                anyhow::bail!(
                    "lists: {:?} is not a list address like alumni@lists.example.org (no '+')",
                    list.address
                );
            }
        }
        Ok(config)
    }

    /// The URL the homeserver should push transactions to.
    pub fn appservice_url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let config = Config::parse(include_str!("../../../config/email.toml")).unwrap();
        assert_eq!(config.lists[0].address, "alumni@lists.example.org");
        assert_eq!(config.mail.smtp_port, 25);
        assert_eq!(config.appservice_url(), "http://127.0.0.1:9900");
    }

    #[test]
    fn bad_list_addresses_are_refused() {
        let base = "homeserver_url='http://x'\nserver_name='x'\nregistration='r'\n\
                    listen='127.0.0.1:1'\ndata_dir='d'\n[mail]\nlmtp_listen='127.0.0.1:2'\n";
        assert!(Config::parse(base).is_ok());
        for bad in ["nobody", "a+b@l.x", "@l.x"] {
            let text = format!("{base}[[lists]]\naddress='{bad}'\nname='n'\n");
            assert!(Config::parse(&text).is_err(), "{bad}");
        }
    }
}

//! The bridge's configuration file (TOML). See `config/xmpp.toml` (in the repository's root) for every setting.

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
    /// Folder for the bridge's store (mappings, received transactions).
    pub data_dir: PathBuf,
    /// Localpart of the bridge bot (the registration's `sender_localpart`).
    #[serde(default = "default_bot")]
    pub bot_localpart: String,
    /// Prefix of every ghost user and portal alias this bridge owns (its namespace).
    #[serde(default = "default_prefix")]
    pub user_prefix: String,
    /// A Matrix user invited to the admin room and to every new portal room.
    #[serde(default)]
    pub admin_user: Option<String>,
    /// An existing room to use as the admin room; by default the bot creates one.
    #[serde(default)]
    pub admin_room: Option<String>,
    /// A second registration for double puppeting (user namespace: every user of the server,
    /// not exclusive; `url: null`): with it, someone who claimed their address (`!claim`)
    /// shows as their own Matrix account. Without it, as their ghost.
    #[serde(default)]
    pub double_puppet_registration: Option<PathBuf>,
    /// The XMPP side.
    pub xmpp: XmppConfig,
}

/// The component connection (XEP-0114) and the multi-user chats to bridge.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppConfig {
    /// The XMPP server's component port: host name or address.
    pub host: String,
    /// The component port (Prosody's `component_ports`, 5347 by default).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The component's domain, e.g. `matrix.example.org`; puppets of Matrix users are
    /// `{user}@{domain}`.
    pub domain: String,
    /// The component's shared secret (Prosody's `component_secret`).
    pub secret: String,
    /// The bridge's own nick in every multi-user chat (it reads the room through it).
    #[serde(default = "default_nick")]
    pub nick: String,
    /// Multi-user chats bridged from the first start, e.g. `alumni@conference.example.org`;
    /// their portal rooms are created when missing.
    #[serde(default)]
    pub mucs: Vec<String>,
    /// Largest stanza taken from the server, in bytes; a larger one drops the connection.
    #[serde(default = "default_max_stanza")]
    pub max_stanza_bytes: usize,
    /// How long a Matrix message waits for the chat to echo it before it is sent again after
    /// a reconnect, in milliseconds.
    #[serde(default = "default_echo_timeout")]
    pub echo_timeout_ms: u64,
    /// How often the bridge checks that it is in every linked chat and joins again where it
    /// is not (a chat that refused it, was locked, or dropped it), in milliseconds.
    #[serde(default = "default_rejoin_interval")]
    pub rejoin_interval_ms: u64,
    /// First wait before reconnecting, in milliseconds; doubles after each failure.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest wait between reconnection attempts, in milliseconds.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// The XMPP server's HTTP upload service (XEP-0363; Prosody's `http_file_share`
    /// component), e.g. `upload.example.org`: files shared in Matrix are uploaded there and
    /// shown in the chat as files. Unset, they are announced by name.
    #[serde(default)]
    pub upload_service: Option<String>,
    /// URL prefixes of files the bridge fetches from XMPP to show in Matrix as files (the
    /// upload service's download URLs, e.g. `https://upload.example.org/`); a file anywhere
    /// else stays a link, so a chat cannot make the bridge fetch from inside the network.
    #[serde(default)]
    pub fetch_files_from: Vec<String>,
    /// Largest file bridged either way, in bytes; a larger one is announced by name or stays
    /// a link.
    #[serde(default = "default_max_file")]
    pub max_file_bytes: usize,
}

fn default_bot() -> String {
    "xmppbot".into()
}
fn default_prefix() -> String {
    "xmpp_".into()
}
fn default_port() -> u16 {
    5347
}
fn default_nick() -> String {
    "Matrix".into()
}
fn default_max_file() -> usize {
    10 * 1024 * 1024
}
fn default_max_stanza() -> usize {
    256 * 1024
}
fn default_echo_timeout() -> u64 {
    10_000
}
fn default_rejoin_interval() -> u64 {
    30_000
}
fn default_reconnect_min() -> u64 {
    1000
}
fn default_reconnect_max() -> u64 {
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
        let config: Config = toml::from_str(text)?;
        for muc in &config.xmpp.mucs {
            if crate::jid::Jid::parse(muc).is_none_or(|j| j.node.is_none() || j.resource.is_some())
            {
                anyhow::bail!(
                    "xmpp.mucs: {muc:?} is not a chat address like room@conference.example.org"
                );
            }
        }
        if config.xmpp.nick.is_empty() {
            anyhow::bail!("xmpp.nick must not be empty");
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
        let config = Config::parse(include_str!("../../../config/xmpp.toml")).unwrap();
        assert_eq!(config.xmpp.port, 5347);
        assert_eq!(config.xmpp.mucs, ["alumni@conference.localhost"]);
        assert_eq!(config.appservice_url(), "http://127.0.0.1:9899");
    }

    #[test]
    fn unknown_keys_and_bad_chats_are_refused() {
        let base = "homeserver_url='http://x'\nserver_name='x'\nregistration='r'\n\
                    listen='127.0.0.1:1'\ndata_dir='d'\n";
        let xmpp = "[xmpp]\nhost='h'\ndomain='b.x'\nsecret='s'\n";
        assert!(Config::parse(&format!("{base}{xmpp}")).is_ok());
        assert!(Config::parse(&format!("{base}colour='red'\n{xmpp}")).is_err());
        assert!(Config::parse(&format!("{base}{xmpp}mucs=['conference.x']\n")).is_err());
        assert!(Config::parse(&format!("{base}{xmpp}mucs=['a@c.x/nick']\n")).is_err());
    }
}

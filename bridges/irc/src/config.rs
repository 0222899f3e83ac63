//! The bridge's configuration file (TOML). See `config/irc.toml` (in the repository's root) for every setting.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// The whole configuration of one bridge.
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
    /// not exclusive; `url: null`): with it, someone who claimed their nick (`!claim`) shows as
    /// their own Matrix account. Without it, as their ghost.
    #[serde(default)]
    pub double_puppet_registration: Option<PathBuf>,
    /// The IRC networks to bridge.
    #[serde(default)]
    pub networks: Vec<NetworkConfig>,
}

/// One IRC network.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// A short name, used in the store and in `!link #channel NAME`.
    pub name: String,
    /// IRC server host name or address.
    pub host: String,
    /// IRC server port (plain text).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The bridge's nick on this network (`_` is appended while it is taken).
    pub nick: String,
    /// IRC user name; defaults to the nick.
    #[serde(default)]
    pub username: Option<String>,
    /// IRC real name.
    #[serde(default = "default_realname")]
    pub realname: String,
    /// Server password (`PASS`), if the server wants one.
    #[serde(default)]
    pub password: Option<String>,
    /// Channels bridged from the first start; their portal rooms are created when missing.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Prefix of ghost users and portal aliases of this network; defaults to the bridge's
    /// `user_prefix`. Give each network its own when bridging several (e.g. `irc_libera_`).
    #[serde(default)]
    pub ghost_prefix: Option<String>,
    /// First wait before reconnecting, in milliseconds; doubles after each failure.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest wait between reconnection attempts, in milliseconds.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
}

fn default_bot() -> String {
    "ircbot".into()
}
fn default_prefix() -> String {
    "irc_".into()
}
fn default_port() -> u16 {
    6667
}
fn default_realname() -> String {
    "Tsunagu IRC bridge".into()
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
        for net in &config.networks {
            let prefix = net.ghost_prefix(&config);
            if !prefix.starts_with(&config.user_prefix) {
                anyhow::bail!(
                    "network {:?}: ghost_prefix {prefix:?} must start with user_prefix {:?}",
                    net.name,
                    config.user_prefix
                );
            }
        }
        let mut names: Vec<_> = config.networks.iter().map(|n| &n.name).collect();
        names.sort();
        names.dedup();
        if names.len() != config.networks.len() {
            anyhow::bail!("two networks have the same name");
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

impl NetworkConfig {
    /// The ghost prefix of this network.
    pub fn ghost_prefix(&self, config: &Config) -> String {
        self.ghost_prefix
            .clone()
            .unwrap_or_else(|| config.user_prefix.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let config = Config::parse(include_str!("../../../config/irc.toml")).unwrap();
        assert_eq!(config.networks.len(), 1);
        assert_eq!(config.networks[0].port, 6667);
        assert_eq!(config.appservice_url(), "http://127.0.0.1:9898");
    }

    #[test]
    fn unknown_keys_and_bad_prefixes_are_refused() {
        let base = "homeserver_url='http://x'\nserver_name='x'\nregistration='r'\n\
                    listen='127.0.0.1:1'\ndata_dir='d'\n";
        assert!(Config::parse(&format!("{base}colour='red'")).is_err());
        let bad = format!("{base}[[networks]]\nname='a'\nhost='h'\nnick='n'\nghost_prefix='x_'\n");
        assert!(
            Config::parse(&bad)
                .unwrap_err()
                .to_string()
                .contains("ghost_prefix")
        );
    }
}

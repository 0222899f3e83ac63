//! Tsunagu's IRC bridge: a Matrix application service that shows IRC channels as Matrix
//! rooms (portals) and IRC nicks as ghost users, and relays Matrix users into IRC through the
//! bridge's own connection (`<displayname> text`).
//!
//! The binary `tsunagu-irc` is the shared bridge command line ([`tsunagu_appservice::cli`])
//! over [`run`] and [`generate_registration`].

pub mod bridge;
pub mod config;
pub mod network;
pub mod proto;

use std::sync::Arc;

use tokio::sync::mpsc;
use tsunagu_appservice::{AppService, Client, Registration, Store};

pub use config::Config;

/// Writes a new registration for `config` (fresh tokens, the bridge's namespaces) to
/// `config.registration`. Refuses to replace an existing file unless `force`.
pub fn generate_registration(config: &Config, force: bool) -> anyhow::Result<Registration> {
    let mut reg = Registration::generate(
        "irc",
        Some(config.appservice_url()),
        &config.bot_localpart,
        &config.user_prefix,
        &config.server_name,
    );
    reg.protocols = vec!["irc".into()];
    reg.save_new(&config.registration, force)?;
    Ok(reg)
}

/// Runs the bridge until the process ends: sets up the Matrix side (waiting for the
/// homeserver if it is not up yet), connects to every network, and serves the appservice API.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let registration = Registration::load_for(&config.registration, "tsunagu-irc")?;
    let store = Arc::new(Store::open(&config.data_dir.join("irc.redb"))?);
    let client = Client::new(&config.homeserver_url, &config.server_name, &registration)?;
    let networks: Vec<_> = config
        .networks
        .iter()
        .map(|n| Arc::new(network::Network::new(n.clone())))
        .collect();
    let double = tsunagu_appservice::claims::double_puppet(
        &config.homeserver_url,
        &config.server_name,
        config.double_puppet_registration.as_deref(),
        &registration.id,
    )?;
    let bridge = Arc::new(bridge::Bridge::new(
        config.clone(),
        client,
        double,
        store.clone(),
        networks.clone(),
    ));

    let appservice = AppService::new(&registration, store, bridge.clone());
    let start = || start_networks(&bridge, networks);
    appservice
        .run(config.listen, || bridge.setup(), start)
        .await
}

/// One task per network keeps it connected; another shows what it sees on Matrix.
fn start_networks(bridge: &Arc<bridge::Bridge>, networks: Vec<Arc<network::Network>>) {
    for net in networks {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let runner = net.clone();
        tokio::spawn(async move { runner.run(tx).await });
        let bridge = bridge.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let what = format!("{event:?}");
                if let Err(e) = bridge.on_irc(&net, event).await {
                    tracing::warn!("showing {what} on Matrix: {e:#}");
                }
            }
        });
    }
}

impl tsunagu_appservice::cli::Bridge for Config {
    const BINARY: &'static str = "tsunagu-irc";
    const ABOUT: &'static str = "Tsunagu's IRC bridge (a Matrix application service)";
    const LOG_VAR: &'static str = "TSUNAGU_IRC_LOG";
    const DEFAULT_LOG: &'static str = "irc=info,tsunagu_appservice=info";

    fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        Config::load(path)
    }
    fn registration_path(&self) -> &std::path::Path {
        &self.registration
    }
    fn server_name(&self) -> &str {
        &self.server_name
    }
    fn generate_registration(&self, force: bool) -> anyhow::Result<Registration> {
        generate_registration(self, force)
    }
    async fn run(self) -> anyhow::Result<()> {
        run(self).await
    }
}

//! Tsunagu's XMPP bridge: a Matrix application service that links Matrix rooms (portals) with
//! XMPP multi-user chats (XEP-0045) through a component connection (XEP-0114). XMPP occupants
//! appear as ghost users; Matrix users appear in the chat as puppets of their own.
//!
//! The binary `tsunagu-xmpp` is the shared bridge command line ([`tsunagu_appservice::cli`])
//! over [`run`] and [`generate_registration`].

pub mod bridge;
pub mod component;
pub mod config;
pub mod jid;
pub mod xml;

use std::sync::Arc;

use tokio::sync::mpsc;
use tsunagu_appservice::{AppService, Client, Registration, Store};

pub use config::Config;

/// Writes a new registration for `config` (fresh tokens, the bridge's namespaces) to
/// `config.registration`. Refuses to replace an existing file unless `force`.
pub fn generate_registration(config: &Config, force: bool) -> anyhow::Result<Registration> {
    let mut reg = Registration::generate(
        "xmpp",
        Some(config.appservice_url()),
        &config.bot_localpart,
        &config.user_prefix,
        &config.server_name,
    );
    reg.protocols = vec!["xmpp".into()];
    reg.save_new(&config.registration, force)?;
    Ok(reg)
}

/// Runs the bridge until the process ends: serves the appservice API, sets up the Matrix
/// side (waiting for the homeserver if it is not up yet), and keeps the component connected.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let registration = Registration::load_for(&config.registration, "tsunagu-xmpp")?;
    let store = Arc::new(Store::open(&config.data_dir.join("xmpp.redb"))?);
    let client = Client::new(&config.homeserver_url, &config.server_name, &registration)?;
    let component = Arc::new(component::Component::new(config.xmpp.clone()));
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
        component.clone(),
    ));

    let appservice = AppService::new(&registration, store, bridge.clone());
    let start = || start_xmpp(&bridge, component);
    appservice
        .run(config.listen, || bridge.setup(), start)
        .await
}

/// One task keeps the component connected, one shows what it receives on Matrix, one keeps
/// the bridge in its chats.
fn start_xmpp(bridge: &Arc<bridge::Bridge>, component: Arc<component::Component>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move { component.run(tx).await });
    // Answers to what the bridge waits for are taken at once; everything else is shown in
    // order, and may wait behind a file being fetched.
    let (queue, mut queued) = mpsc::unbounded_channel();
    let answers = bridge.clone();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if let component::Event::Stanza(s) = &event
                && answers.take_answer(s)
            {
                continue;
            }
            if queue.send(event).is_err() {
                break;
            }
        }
    });
    let xmpp_side = bridge.clone();
    tokio::spawn(async move {
        while let Some(event) = queued.recv().await {
            let what = format!("{event:?}");
            if let Err(e) = xmpp_side.on_xmpp(event).await {
                tracing::warn!("showing {what} on Matrix: {e:#}");
            }
        }
    });
    let rejoin = bridge.clone();
    tokio::spawn(async move { rejoin.keep_joined().await });
}

impl tsunagu_appservice::cli::Bridge for Config {
    const BINARY: &'static str = "tsunagu-xmpp";
    const ABOUT: &'static str = "Tsunagu's XMPP bridge (a Matrix application service)";
    const LOG_VAR: &'static str = "TSUNAGU_XMPP_LOG";
    const DEFAULT_LOG: &'static str = "xmpp=info,tsunagu_appservice=info";

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

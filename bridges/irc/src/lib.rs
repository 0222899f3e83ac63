//! Tsunagu's IRC bridge: a Matrix application service that shows IRC channels as Matrix
//! rooms (portals) and IRC nicks as ghost users, and relays Matrix users into IRC through the
//! bridge's own connection (`<displayname> text`).
//!
//! The binary `tsunagu-irc` is a thin CLI over [`run`] and [`generate_registration`].

pub mod bridge;
pub mod config;
pub mod network;
pub mod proto;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tsunagu_appservice::{AppService, Client, Registration, Store};

pub use config::Config;

/// Writes a new registration for `config` (fresh tokens, the bridge's namespaces) to
/// `config.registration`. Refuses to replace an existing file unless `force`.
pub fn generate_registration(config: &Config, force: bool) -> anyhow::Result<Registration> {
    if config.registration.exists() && !force {
        anyhow::bail!(
            "{} exists; keep it (the server knows its tokens) or pass --force to replace it",
            config.registration.display()
        );
    }
    let mut reg = Registration::generate(
        "irc",
        Some(config.appservice_url()),
        &config.bot_localpart,
        &config.user_prefix,
        &config.server_name,
    );
    reg.protocols = vec!["irc".into()];
    if let Some(dir) = config
        .registration
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    reg.save(&config.registration)?;
    Ok(reg)
}

/// Runs the bridge until the process ends: sets up the Matrix side (waiting for the
/// homeserver if it is not up yet), connects to every network, and serves the appservice API.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let registration = Registration::load(&config.registration).with_context(|| {
        format!(
            "reading the registration {} (make one with `tsunagu-irc generate-registration`)",
            config.registration.display()
        )
    })?;
    let store = Arc::new(Store::open(&config.data_dir.join("irc.redb"))?);
    let client = Client::new(&config.homeserver_url, &config.server_name, &registration)?;
    let networks: Vec<_> = config
        .networks
        .iter()
        .map(|n| Arc::new(network::Network::new(n.clone())))
        .collect();
    let bridge = Arc::new(bridge::Bridge::new(
        config.clone(),
        client,
        store.clone(),
        networks.clone(),
    ));

    // The appservice API first, so the homeserver can deliver what it queued meanwhile.
    let appservice = AppService::new(&registration, store, bridge.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!("appservice API on {}", config.listen);
    let router = appservice.router();
    let mut server = tokio::spawn(async move { axum::serve(listener, router).await });

    let mut delay = Duration::from_millis(500);
    loop {
        match bridge.setup().await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!("setting up on the homeserver: {e:#}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }

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
    let inbox = appservice.clone();
    tokio::spawn(async move { inbox.run_inbox().await });

    match (&mut server).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e).context("appservice API"),
        Err(e) => Err(e).context("appservice API task"),
    }
}

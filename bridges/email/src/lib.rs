//! Tsunagu's mailing-list bridge: a Matrix application service that links a room with a
//! mailing address. The local MTA delivers the list's mail to the bridge by LMTP; the bridge
//! shows each post in the room (by the author's ghost, threaded) and mails what is said in the
//! room to the subscribers through the MTA.
//!
//! The binary `tsunagu-email` is the shared bridge command line ([`tsunagu_appservice::cli`])
//! over [`run`] and [`generate_registration`].

pub mod bridge;
pub mod config;
pub mod lmtp;
pub mod message;
pub mod smtp;

use std::sync::Arc;

use tsunagu_appservice::{AppService, Client, Registration, Store};

pub use config::Config;

/// Writes a new registration for `config` (fresh tokens, the bridge's namespaces) to
/// `config.registration`. Refuses to replace an existing file unless `force`.
pub fn generate_registration(config: &Config, force: bool) -> anyhow::Result<Registration> {
    let mut reg = Registration::generate(
        "email",
        Some(config.appservice_url()),
        &config.bot_localpart,
        &config.user_prefix,
        &config.server_name,
    );
    reg.protocols = vec!["email".into()];
    reg.save_new(&config.registration, force)?;
    Ok(reg)
}

/// Runs the bridge until the process ends: serves the appservice API, sets up the Matrix
/// side (waiting for the homeserver if it is not up yet), then takes mail by LMTP.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let registration = Registration::load_for(&config.registration, "tsunagu-email")?;
    let store = Arc::new(Store::open(&config.data_dir.join("email.redb"))?);
    let client = Client::new(&config.homeserver_url, &config.server_name, &registration)?;
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
    ));
    let appservice = AppService::new(&registration, store, bridge.clone());
    let start = || start_mail(&bridge, &config);
    appservice
        .run(config.listen, || bridge.setup(), start)
        .await
}

/// The LMTP server, the spool worker and the digest timer.
fn start_mail(bridge: &Arc<bridge::Bridge>, config: &Config) {
    let limits = lmtp::Limits {
        max_message: config.mail.max_message_bytes,
        max_connections: config.mail.max_connections,
        max_recipients: config.mail.max_recipients,
    };
    let (listen, inbox) = (config.mail.lmtp_listen, bridge.clone());
    tokio::spawn(async move {
        if let Err(e) = lmtp::serve(listen, limits, inbox).await {
            tracing::error!("the LMTP server stopped: {e:#}");
            std::process::exit(1);
        }
    });
    let spool = bridge.clone();
    tokio::spawn(async move { spool.run_spool().await });
    let digests = bridge.clone();
    tokio::spawn(async move { digests.run_digests().await });
}

impl tsunagu_appservice::cli::Bridge for Config {
    const BINARY: &'static str = "tsunagu-email";
    const ABOUT: &'static str = "Tsunagu's mailing-list bridge (a Matrix application service)";
    const LOG_VAR: &'static str = "TSUNAGU_EMAIL_LOG";
    const DEFAULT_LOG: &'static str = "email=info,tsunagu_appservice=info";

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

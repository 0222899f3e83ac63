//! Tsunagu: a small Matrix homeserver for communities that outlive the organisations their
//! members came from.
//!
//! The server is a library: [`Server::start`] takes a [`Config`] and returns a handle. The
//! `tsunagu` binary, the tests and any embedding program use that same entry point.
//!
//! Layers (see ARCHITECTURE.md): [`api`] (HTTP, thin) → [`service`] (Matrix rules) → [`store`]
//! (typed tables over an embedded engine).

pub mod api;
#[cfg(feature = "bots")]
pub mod bots;
pub mod config;
pub mod error;
pub mod json;
pub mod listener;
pub mod service;
pub mod store;

use std::{net::SocketAddr, sync::Arc};

pub use config::Config;
use service::Services;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// A listener serving in its own task.
struct Listening {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    services: Arc<Services>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    /// The federation listener, when `federation.listen` is set.
    federation: Option<Listening>,
    /// The community bots, when `bots.enabled`.
    #[cfg(feature = "bots")]
    bots: Option<bots::BotRunner>,
    /// A registration token created on the first start (printed by the binary).
    pub first_start_token: Option<String>,
}

impl Server {
    /// Opens the data directory, binds the listener and serves until [`Server::stop`].
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        #[cfg(feature = "bots")]
        return Self::start_with_clock(config, Arc::new(bots::SystemClock)).await;
        #[cfg(not(feature = "bots"))]
        {
            if config.bots.enabled {
                anyhow::bail!(
                    "bots.enabled is set, but this tsunagu was built without the bot layer: \
                     build it with `cargo build --release --features bots`"
                );
            }
            Self::listen(config).await
        }
    }

    /// Like [`Server::start`], with the bots' time source (tests pass a [`bots::ManualClock`]).
    #[cfg(feature = "bots")]
    pub async fn start_with_clock(
        config: Config,
        clock: Arc<dyn bots::Clock>,
    ) -> anyhow::Result<Self> {
        let mut server = Self::listen(config).await?;
        // The bots are a client of this server: started once it listens, over loopback.
        if server.services.config().bots.enabled {
            let mut local = server.addr;
            if local.ip().is_unspecified() {
                local.set_ip(match local {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let url = format!("http://{local}");
            match bots::BotRunner::start(server.services.clone(), &url, clock).await {
                Ok(bots) => server.bots = Some(bots),
                Err(e) => {
                    if let Err(stop) = server.stop().await {
                        tracing::warn!("stopping the server after the bots failed: {stop}");
                    }
                    return Err(e);
                }
            }
        }
        Ok(server)
    }

    /// Opens the services and serves the API; everything but the bots.
    async fn listen(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let listen = config.listen;
        let services = Services::open(config).await?;
        let first_start_token = services.first_start().await?;
        services.ensure_appservice_users().await?;
        services.start_tasks();
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        let federation = Self::listen_federation(&services).await?;
        let app = api::router(services.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let limits = services.config().limits.clone();
        let task =
            tokio::spawn(async move { listener::serve(listener, app, &limits, None, rx).await });
        Ok(Self {
            addr,
            services,
            shutdown: Some(tx),
            task,
            federation,
            #[cfg(feature = "bots")]
            bots: None,
            first_start_token,
        })
    }

    /// The federation listener (`federation.listen`): TLS when the config names a certificate.
    async fn listen_federation(services: &Arc<Services>) -> anyhow::Result<Option<Listening>> {
        let config = &services.config().federation;
        let Some(listen) = config.listen else {
            return Ok(None);
        };
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(listener::tls_acceptor(cert, key)?),
            _ => None,
        };
        let tcp = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (federation.listen): {e}"))?;
        let addr = tcp.local_addr()?;
        let app = api::router(services.clone());
        let limits = services.config().limits.clone();
        let (shutdown, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move { listener::serve(tcp, app, &limits, tls, rx).await });
        Ok(Some(Listening {
            addr,
            shutdown,
            task,
        }))
    }

    /// The address the server listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the federation listener, when there is one.
    pub fn federation_addr(&self) -> Option<SocketAddr> {
        self.federation.as_ref().map(|f| f.addr)
    }

    /// `http://addr` for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// The community bots, when enabled.
    #[cfg(feature = "bots")]
    pub fn bots(&self) -> Option<&bots::BotRunner> {
        self.bots.as_ref()
    }

    /// Stops accepting requests and waits for open requests to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // The bots first: they are a client of this server.
        #[cfg(feature = "bots")]
        if let Some(bots) = self.bots.take() {
            bots.stop().await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let federation = self.federation.take().map(|f| {
            let _ = f.shutdown.send(());
            f.task
        });
        // Wake long-polling syncs and end background tasks first, so that open connections
        // finish at once and release the services (and with them the store).
        self.services.shutdown().await?;
        match tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.task).await {
            Ok(r) => r??,
            Err(_) => self.task.abort(),
        }
        if let Some(mut task) = federation {
            match tokio::time::timeout(std::time::Duration::from_secs(5), &mut task).await {
                Ok(r) => r??,
                Err(_) => task.abort(),
            }
        }
        self.services.core.persist().await?;
        // Requests still finishing on their connections hold the services (and the store's
        // file lock); wait for them, bounded, so a restart in the same process can open it.
        for _ in 0..100 {
            if Arc::strong_count(&self.services) == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Serves until the task ends (the binary's main loop).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }
}

#[cfg(all(test, not(feature = "bots")))]
mod tests {
    /// A lean build asked to run the bots says how to get them, before touching the data dir.
    #[tokio::test]
    async fn bots_need_the_feature() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::Config {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        };
        config.bots.enabled = true;
        let err = crate::Server::start(config)
            .await
            .err()
            .expect("start refused");
        assert!(err.to_string().contains("--features bots"), "{err}");
        assert!(!dir.path().join("data").exists());
    }
}

//! The harness every integration test shares.
//!
//! - [`TestServer`]: an in-process Tsunagu on an ephemeral loopback port, with its own temporary
//!   data directory and a raw HTTP client for it. Every test starts its own.
//! - [`http`]: raw HTTP ([`Http`], [`Account`], [`assert_error`]), to check every field a client
//!   reads and to send what a well-behaved client library never would.
//! - [`client`]: real matrix-sdk clients ([`User`], [`user`]) that sync in the background and
//!   record what they see, for end-to-end behaviour and encryption.
//! - [`eventually`]: tests never sleep to wait for something; they poll with a deadline.
//!
//! Every test crate compiles this whole module and uses part of it, hence the
//! `allow(dead_code)` and `allow(unused_imports)` on the shortcuts below. matrix-sdk's futures
//! are deep: a test crate that includes this module needs `#![recursion_limit = "256"]`.
#![allow(dead_code)]

pub mod client;
pub mod http;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use tempfile::TempDir;
use tsunagu::{Config, Server, config::Registration, store::StoredEvent};

#[allow(unused_imports)]
pub use client::{User, login, register, user};
#[allow(unused_imports)]
pub use http::{Account, Http, assert_error};

/// How long a test waits for something that should happen, in seconds. Generous, because
/// matrix-sdk's crypto on a busy two-core machine is slow; only a failing test waits this long.
pub const WAIT: u64 = 60;

/// The password every test account gets (the harness registers and logs in with it).
pub fn password(name: &str) -> String {
    format!("correct horse battery {name}")
}

/// A config for tests: loopback, port 0, open registration, generous rate limits.
pub fn config(data_dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_owned(),
        registration: Registration::Open,
        rate_limit: tsunagu::config::RateLimit {
            burst: 1000,
            per_minute: 6000,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// One test's server: an in-process Tsunagu on an ephemeral loopback port, its data in a
/// temporary directory (removed when this is dropped), and a raw HTTP client pointed at it.
///
/// matrix-sdk clients keep their stores in [`TestServer::dir`] too. [`TestServer::restart`]
/// stops the server and starts it again on the same data, as an operator would.
pub struct TestServer {
    pub server: Server,
    /// Raw HTTP to [`TestServer::server`].
    pub http: Http,
    config: Config,
    /// References to the services an idle server holds; see
    /// [`TestServer::is_handling_a_request`].
    idle_refs: usize,
    #[cfg(feature = "bots")]
    clock: Option<Arc<dyn tsunagu::bots::Clock>>,
    dir: TempDir,
}

impl TestServer {
    /// A server with the test [`config`].
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server with the test [`config`] as `change` leaves it.
    pub async fn start_with(change: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), change).await
    }

    /// A server whose temporary directory the test prepared (files the config points to); its
    /// data goes to `dir/server`.
    pub async fn start_in(dir: TempDir, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = config(&dir.path().join("server"));
        change(&mut config);
        let server = Server::start(config.clone()).await.expect("server starts");
        Self::around(server, config, dir)
    }

    /// A server with the community bots on, whose time is `clock` (a
    /// [`tsunagu::bots::ManualClock`] lets a test move it). Restarts keep the clock.
    #[cfg(feature = "bots")]
    pub async fn start_with_bots(clock: Arc<dyn tsunagu::bots::Clock>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(&dir.path().join("server"));
        config.bots.enabled = true;
        let server = Server::start_with_clock(config.clone(), clock.clone())
            .await
            .expect("server with bots starts");
        let mut t = Self::around(server, config, dir);
        t.clock = Some(clock);
        t
    }

    fn around(server: Server, config: Config, dir: TempDir) -> Self {
        Self {
            http: Http::new(&server.url()),
            idle_refs: Arc::strong_count(server.services()),
            server,
            config,
            #[cfg(feature = "bots")]
            clock: None,
            dir,
        }
    }

    /// `http://127.0.0.1:port`, for clients.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The test's temporary directory (the server's data is in `server/` below it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server (waiting for open requests, making every write durable) and starts it
    /// again on the same data directory and config. The new server has a new port.
    pub async fn restart(self) -> Self {
        let Self {
            server,
            config,
            dir,
            #[cfg(feature = "bots")]
            clock,
            ..
        } = self;
        server.stop().await.expect("server stops");
        #[cfg(feature = "bots")]
        if let Some(clock) = clock {
            let server = Server::start_with_clock(config.clone(), clock.clone())
                .await
                .expect("server with bots restarts");
            let mut t = Self::around(server, config, dir);
            t.clock = Some(clock);
            return t;
        }
        let server = Server::start(config.clone())
            .await
            .expect("server restarts");
        Self::around(server, config, dir)
    }

    /// Stops the server, keeping its data directory and config to start it again later (on
    /// the same configured addresses; the Client-Server port is new).
    pub async fn stop_keeping_data(self) -> Stopped {
        self.server.stop().await.expect("server stops");
        Stopped {
            config: self.config,
            dir: self.dir,
        }
    }

    /// Stops the server and removes its data.
    pub async fn stop(self) {
        self.server.stop().await.expect("server stops");
    }

    /// Whether the server is handling a request right now: every request holds references to
    /// the services while it is handled (what [`Server::stop`] waits for), so there are more
    /// than an idle server holds. Only meaningful while no matrix-sdk client syncs.
    pub fn is_handling_a_request(&self) -> bool {
        Arc::strong_count(self.server.services()) > self.idle_refs
    }
}

/// A test server that was stopped with its data kept.
pub struct Stopped {
    config: Config,
    dir: TempDir,
}

impl Stopped {
    /// Starts the server again on its data and config.
    pub async fn start_again(self) -> TestServer {
        let server = Server::start(self.config.clone())
            .await
            .expect("server starts again");
        TestServer::around(server, self.config, self.dir)
    }
}

/// Polls `f` until it returns `Some`, or panics naming `what` after `secs` seconds. Tests wait
/// for things with this, never with a sleep.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback address nothing listens on right now, for a server the test starts later (a
/// process, or a fake appservice that is "down" at first).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Every event of the room as the server stored it, oldest first: what a server operator (or
/// someone with the disk) could read.
pub fn stored(server: &Server, room_id: &ruma::RoomId) -> Vec<StoredEvent> {
    server
        .services()
        .timeline
        .timeline_range(room_id, 0, u64::MAX, false, usize::MAX)
        .expect("stored timeline")
}

//! Matrix semantics, no HTTP. One [`Services`] value holds everything a request or a task needs;
//! it is passed as axum state and to background tasks (no global singletons), so a test can run
//! two servers in one process.
//!
//! Each file is one area of the spec; they all add methods to [`Services`].

pub mod account_data;
pub mod appservice;
pub mod backup;
pub mod directory;
pub mod ephemeral;
pub mod keys;
pub mod pdu;
pub mod push;
pub mod ratelimit;
pub mod rooms;
pub mod state;
pub mod sync;
pub mod timeline;
pub mod uiaa;
pub mod users;

use std::sync::Arc;

use ruma::{OwnedServerName, signatures::Ed25519KeyPair};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    config::Config,
    error::{Error, Result},
    store::{Batch, Store, Table, pos_bytes},
};

/// What a stream position changed: a room (its timeline, receipts), a user (account data,
/// an invite), or both.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StreamEntry {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub room: Option<ruma::OwnedRoomId>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<ruma::OwnedUserId>,
    /// A user whose device or cross-signing keys changed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub keys: Option<ruma::OwnedUserId>,
}

/// The server's services. Cheap to clone through `Arc`.
pub struct Services {
    pub config: Config,
    pub store: Store,
    pub signing_key: Ed25519KeyPair,
    /// The newest durable stream position; sync waiters watch it.
    stream: watch::Sender<u64>,
    /// The one writer: every change that advances the stream holds it while it allocates its
    /// position and applies its batch, so positions become visible in order and without holes.
    writer: tokio::sync::Mutex<u64>,
    pub ephemeral: ephemeral::Ephemeral,
    pub uiaa: uiaa::Sessions,
    pub rate_limiter: ratelimit::RateLimiter,
    room_locks:
        std::sync::Mutex<std::collections::HashMap<ruma::OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    /// Registered application services.
    pub appservices: Vec<Arc<appservice::Appservice>>,
    /// Outgoing HTTP (appservice pushes and queries; plain HTTP on the local network).
    pub http: reqwest::Client,
    /// Password hashing runs one at a time (see `users::hash_password`).
    password_work: tokio::sync::Semaphore,
    /// Running unread counts per (user, room); see `push::unread_counts`.
    unread: std::sync::Mutex<
        std::collections::HashMap<(ruma::OwnedUserId, ruma::OwnedRoomId), push::UnreadCount>,
    >,
    /// Set to true when the server stops; background tasks end.
    shutdown: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

const STREAM_POS_KEY: &[u8] = b"stream_pos";
const SIGNING_KEY_KEY: &[u8] = b"signing_key";

#[derive(Serialize, Deserialize)]
struct StoredSigningKey {
    version: String,
    pkcs8: String,
}

impl Services {
    /// Opens the store in the configured data directory and loads (or creates) the signing key.
    pub async fn open(config: Config) -> anyhow::Result<Arc<Self>> {
        let appservices = appservice::load_all(&config.appservices, &config.server_name)?;
        std::fs::create_dir_all(&config.data_dir)?;
        let store = Store::open(&config.data_dir, &config.storage)?;
        let pos = store
            .get(Table::Global, STREAM_POS_KEY)?
            .and_then(|b| crate::store::pos_from(&b))
            .unwrap_or(0);
        let signing_key = load_or_create_signing_key(&store).await?;
        let (stream, _) = watch::channel(pos);
        Ok(Arc::new(Self {
            rate_limiter: ratelimit::RateLimiter::new(config.rate_limit.clone()),
            config,
            store,
            signing_key,
            stream,
            writer: tokio::sync::Mutex::new(pos),
            ephemeral: Default::default(),
            uiaa: Default::default(),
            room_locks: Default::default(),
            appservices,
            shutdown: watch::channel(false).0,
            unread: Default::default(),
            password_work: tokio::sync::Semaphore::new(1),
            tasks: Default::default(),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()?,
        }))
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.config.server_name
    }

    /// The newest stream position a reader may see.
    pub fn current_pos(&self) -> u64 {
        *self.stream.borrow()
    }

    /// The stream entries in `(since, upto]`, oldest first.
    pub fn stream_entries(
        &self,
        since: u64,
        upto: u64,
    ) -> impl Iterator<Item = Result<StreamEntry>> + '_ {
        let end = pos_bytes(upto.saturating_add(1));
        self.store
            .scan_range(Table::Stream, &pos_bytes(since + 1), &end, false, 0)
            .map(|item| Ok(crate::store::decode(Table::Stream, &item?.1)?))
    }

    /// A receiver that wakes when the stream position advances (or ephemeral data changes).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.stream.subscribe()
    }

    /// Runs a background task that ends when the server stops.
    pub fn spawn_task<F>(self: &Arc<Self>, task: impl FnOnce(Arc<Self>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut stop = self.shutdown.subscribe();
        let fut = task(self.clone());
        let handle = tokio::spawn(async move {
            tokio::select! {
                _ = fut => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Gives freed heap memory back to the system once the server has been quiet for a while.
    ///
    /// glibc keeps freed pages of its heaps mapped, so a busy minute (or one big initial sync)
    /// would stay in the RSS for good; on a 512 MiB board that matters more than the few
    /// milliseconds `malloc_trim` takes. It runs once per quiet spell: when the stream has moved
    /// since the last trim and then stood still for ten seconds.
    pub fn start_memory_trim(self: &Arc<Self>) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        self.spawn_task(|s| async move {
            let quiet = std::time::Duration::from_secs(10);
            let mut seen = s.current_pos();
            let mut trimmed = None;
            loop {
                tokio::time::sleep(quiet).await;
                let pos = s.current_pos();
                if pos == seen && trimmed != Some(pos) {
                    // SAFETY: malloc_trim only returns free pages of glibc's heaps to the
                    // kernel; it takes the allocator's own locks.
                    let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
                    trimmed = Some(pos);
                }
                seen = pos;
            }
        });
    }

    /// A receiver that turns true when the server stops.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Ends the background tasks and waits for them (they hold the store open).
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Wakes sync waiters without advancing the stream (typing).
    pub fn poke(&self) {
        self.stream.send_modify(|_| {});
    }

    /// Applies `build`'s batch at a new stream position, makes it durable, then publishes the
    /// position. `build` gets the new position and records what changed there.
    pub async fn commit<T>(
        &self,
        entry: StreamEntry,
        build: impl FnOnce(u64, &mut Batch) -> Result<T>,
    ) -> Result<(T, u64)> {
        let mut writer = self.writer.lock().await;
        let pos = *writer + 1;
        let mut batch = Batch::default();
        let out = build(pos, &mut batch)?;
        batch.put_json(Table::Stream, &pos_bytes(pos), &entry);
        batch.put(Table::Global, STREAM_POS_KEY, pos_bytes(pos).to_vec());
        self.store.apply(batch)?;
        *writer = pos;
        drop(writer);
        self.store.persist().await?;
        self.stream.send_if_modified(|cur| {
            if *cur < pos {
                *cur = pos;
                true
            } else {
                false
            }
        });
        Ok((out, pos))
    }

    /// Writes that no sync reader sees (accounts, devices), made durable before returning.
    pub async fn write(&self, batch: Batch) -> Result<()> {
        self.store.apply(batch)?;
        self.store.persist().await?;
        Ok(())
    }

    /// A lock that serializes appends to one room (auth checks see the state they extend).
    pub fn room_lock(&self, room_id: &ruma::RoomId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.room_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(room_id.to_owned()).or_default().clone()
    }
}

async fn load_or_create_signing_key(store: &Store) -> anyhow::Result<Ed25519KeyPair> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let stored: StoredSigningKey = match store.get_json(Table::Global, SIGNING_KEY_KEY)? {
        Some(k) => k,
        None => {
            let doc = Ed25519KeyPair::generate();
            let version: String = {
                use rand::Rng;
                let n: u32 = rand::thread_rng().r#gen();
                format!("a_{}", &format!("{n:08x}")[..4])
            };
            let k = StoredSigningKey {
                version,
                pkcs8: b64.encode(&*doc),
            };
            store.put_json(Table::Global, SIGNING_KEY_KEY, &k)?;
            store.persist().await?;
            k
        }
    };
    let der = b64.decode(&stored.pkcs8)?;
    Ed25519KeyPair::from_der(&der, stored.version)
        .map_err(|e| anyhow::anyhow!("stored signing key is unusable: {e}"))
}

/// Random URL-safe token with `bytes * 8` bits of entropy.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn json_err(e: impl std::fmt::Display) -> Error {
    Error::bad_json(e.to_string())
}

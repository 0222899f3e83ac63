//! What every area shares: the configuration, the store, the server's signing key, the one
//! writer that advances the stream position, background tasks and named locks.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{OwnedServerName, signatures::Ed25519KeyPair};
use tokio::sync::watch;

use crate::{
    config::Config,
    error::Result,
    store::{
        Batch, OLD_SIGNING_KEYS, OldSigningKey, SCHEMA_VERSION, SIGNING_KEY, STREAM, STREAM_POS,
        SigningKeyRecord, Store, StreamEntry,
    },
};

/// The shared foundation of the service areas. Cheap to share through `Arc`.
pub struct Core {
    pub config: Config,
    /// Only the service layer reads and writes the store.
    pub(in crate::service) store: Store,
    pub signing_key: Ed25519KeyPair,
    /// Keys the server signed with before `signing_key` (published as old keys).
    pub old_signing_keys: Vec<OldSigningKey>,
    /// The newest durable stream position; sync waiters watch it.
    stream: watch::Sender<u64>,
    /// The one writer: every change that advances the stream holds it while it allocates its
    /// position and applies its batch, so positions become visible in order and without holes.
    writer: tokio::sync::Mutex<u64>,
    /// Bumped when a push is queued for a gateway; the push sender watches it.
    pushes: watch::Sender<u64>,
    /// Set to true when the server stops; background tasks end.
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Outgoing HTTP (appservice pushes and queries).
    pub http: reqwest::Client,
}

impl Core {
    /// Opens the store in the configured data directory and loads (or creates) the signing key.
    pub async fn open(config: Config) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let store = Store::open(&config.data_dir, &config.storage)?;
        let pos = store.get_single(&STREAM_POS)?.unwrap_or(0);
        let signing_key = load_or_create_signing_key(&store).await?;
        let old_signing_keys = store
            .get_single(&OLD_SIGNING_KEYS)?
            .unwrap_or_default()
            .keys;
        let (stream, _) = watch::channel(pos);
        Ok(Arc::new(Self {
            config,
            store,
            signing_key,
            old_signing_keys,
            stream,
            writer: tokio::sync::Mutex::new(pos),
            pushes: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            tasks: Default::default(),
            locks: Default::default(),
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

    /// The stream entries in `(since, upto]`, oldest first, with their positions.
    pub fn stream_entries(
        &self,
        since: u64,
        upto: u64,
    ) -> impl Iterator<Item = Result<(u64, StreamEntry)>> + '_ {
        self.store
            .range(&STREAM, since + 1, upto.saturating_add(1), false)
            .map(|item| Ok(item.map(|((pos,), entry)| (pos, entry))?))
    }

    /// A receiver that wakes when the stream position advances (or ephemeral data changes).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.stream.subscribe()
    }

    /// Wakes sync waiters without advancing the stream (typing).
    pub fn poke(&self) {
        self.stream.send_modify(|_| {});
    }

    /// A receiver that wakes when a push is queued.
    pub fn subscribe_pushes(&self) -> watch::Receiver<u64> {
        self.pushes.subscribe()
    }

    /// Wakes the push sender.
    pub fn poke_pushes(&self) {
        self.pushes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Applies `build`'s batch at a new stream position, makes it durable, then publishes the
    /// position. `build` gets the new position and records what changed there.
    pub async fn commit<T>(
        &self,
        entry: StreamEntry,
        build: impl FnOnce(u64, &mut Batch) -> Result<T>,
    ) -> Result<(T, u64)> {
        self.commit_many(vec![entry], build).await
    }

    /// Like [`Core::commit`] for several changes at consecutive positions in one atomic batch:
    /// `build` gets the first position, `entries[i]` is what changed at `first + i`. Returns
    /// the last position.
    pub async fn commit_many<T>(
        &self,
        entries: Vec<StreamEntry>,
        build: impl FnOnce(u64, &mut Batch) -> Result<T>,
    ) -> Result<(T, u64)> {
        let mut writer = self.writer.lock().await;
        let first = *writer + 1;
        let last = *writer + entries.len().max(1) as u64;
        let mut batch = Batch::default();
        let out = build(first, &mut batch)?;
        for (i, entry) in entries.iter().enumerate() {
            batch.put(&STREAM, first + i as u64, entry);
        }
        batch.put_single(&STREAM_POS, &last);
        self.store.apply(batch)?;
        *writer = last;
        drop(writer);
        self.store.persist().await?;
        self.stream.send_if_modified(|cur| {
            if *cur < last {
                *cur = last;
                true
            } else {
                false
            }
        });
        Ok((out, last))
    }

    /// Writes that no sync reader sees (accounts, devices), made durable before returning.
    pub async fn write(&self, batch: Batch) -> Result<()> {
        self.store.apply(batch)?;
        self.store.persist().await?;
        Ok(())
    }

    /// Like [`Core::write`], with the batch built while holding the writer: what `build` reads
    /// cannot change under it by a commit (a read-modify-write of something commits touch).
    pub async fn write_exclusive(
        &self,
        build: impl FnOnce(&mut Batch) -> Result<()>,
    ) -> Result<()> {
        {
            let _writer = self.writer.lock().await;
            let mut batch = Batch::default();
            build(&mut batch)?;
            self.store.apply(batch)?;
        }
        self.store.persist().await?;
        Ok(())
    }

    /// The newest data migration that ran on this data directory.
    pub fn schema_version(&self) -> Result<u64> {
        Ok(self.store.get_single(&SCHEMA_VERSION)?.unwrap_or(0))
    }

    pub async fn set_schema_version(&self, version: u64) -> Result<()> {
        let mut b = Batch::default();
        b.put_single(&SCHEMA_VERSION, &version);
        self.write(b).await
    }

    /// Waits until every write so far is on disk.
    pub async fn persist(&self) -> Result<()> {
        Ok(self.store.persist().await?)
    }

    /// A named lock: appends to one room, claims of one-time keys, account creation.
    pub fn lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = locks.get(name) {
            return lock.clone();
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(name.to_owned(), lock.clone());
        lock
    }

    /// Runs a background task that ends when the server stops.
    pub fn spawn_task<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut stop = self.shutdown.subscribe();
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

    /// Gives freed heap memory back to the system once the server has been quiet for a while.
    ///
    /// glibc keeps freed pages of its heaps mapped, so a busy minute (or one big initial sync)
    /// would stay in the RSS for good; on a 512 MiB board that matters more than the few
    /// milliseconds `malloc_trim` takes. It runs once per quiet spell: when the stream has moved
    /// since the last trim and then stood still for ten seconds.
    pub fn start_memory_trim(self: &Arc<Self>) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            let core = Arc::downgrade(self);
            self.spawn_task(async move {
                let quiet = std::time::Duration::from_secs(10);
                let mut seen = None;
                let mut trimmed = None;
                loop {
                    tokio::time::sleep(quiet).await;
                    let Some(pos) = core.upgrade().map(|c| c.current_pos()) else {
                        return;
                    };
                    if seen == Some(pos) && trimmed != Some(pos) {
                        // SAFETY: malloc_trim only returns free pages of glibc's heaps to the
                        // kernel; it takes the allocator's own locks.
                        let _ =
                            tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
                        trimmed = Some(pos);
                    }
                    seen = Some(pos);
                }
            });
        }
    }
}

/// A new ed25519 key with a random version (`a_1f2e`).
fn new_signing_key() -> SigningKeyRecord {
    use base64::Engine as _;
    use rand::Rng;
    let doc = Ed25519KeyPair::generate();
    let n: u32 = rand::thread_rng().r#gen();
    SigningKeyRecord {
        version: format!("a_{}", &format!("{n:08x}")[..4]),
        pkcs8: base64::engine::general_purpose::STANDARD_NO_PAD.encode(&*doc),
    }
}

impl Core {
    /// Replaces the signing key with a new one (`tsunagu admin rotate-signing-key`, with the
    /// server stopped). The old key is kept as an old key, expired now: other servers can still
    /// check what it signed. Returns the new key's ID; the server signs with it once started.
    pub async fn rotate_signing_key(&self) -> anyhow::Result<String> {
        use base64::Engine as _;
        let mut old = self
            .store
            .get_single(&OLD_SIGNING_KEYS)?
            .unwrap_or_default();
        old.keys.push(OldSigningKey {
            key_id: format!("ed25519:{}", self.signing_key.version()),
            public: base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(self.signing_key.public_key()),
            expired_ts: now_ms(),
        });
        let new = new_signing_key();
        let mut b = Batch::default();
        b.put_single(&SIGNING_KEY, &new);
        b.put_single(&OLD_SIGNING_KEYS, &old);
        self.store.apply(b)?;
        self.store.persist().await?;
        Ok(format!("ed25519:{}", new.version))
    }
}

async fn load_or_create_signing_key(store: &Store) -> anyhow::Result<Ed25519KeyPair> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let stored = match store.get_single(&SIGNING_KEY)? {
        Some(k) => k,
        None => {
            let k = new_signing_key();
            let mut b = Batch::default();
            b.put_single(&SIGNING_KEY, &k);
            store.apply(b)?;
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

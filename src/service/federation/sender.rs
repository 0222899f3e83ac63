//! What this server sends other servers unasked: its rooms' events (PDUs, queued by the
//! timeline in the batch that persists them) and EDUs (to-device messages so far), queued in
//! the store per destination and delivered in order, in transactions of at most 50 PDUs and
//! 100 EDUs, by one background task. A queue survives a restart; a destination that fails is
//! retried after 1, 2, 4, ... seconds, at most `failure_backoff_secs` apart. Each queue holds
//! at most `max_queued_per_server` EDUs (past it new ones are dropped: to-device messages are
//! best effort in the spec) and as many PDUs (past it the oldest are dropped: a server that
//! comes back asks for what it lacks with `/get_missing_events`). A server gone for good must
//! not fill the disk.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedServerName, OwnedTransactionId, ServerName,
    api::federation::transactions::send_transaction_message,
};
use serde_json::Value as JsonValue;
use tokio::sync::Notify;

use super::Federation;
use crate::{
    error::Result,
    json::to_raw,
    service::timeline::Timeline,
    store::{Batch, EVENTS, FEDERATION_PDUS, FEDERATION_QUEUE},
};

/// Most EDUs in one transaction (the spec's limit).
const EDUS_PER_TRANSACTION: usize = 100;
/// Most PDUs in one transaction (the spec's limit).
const PDUS_PER_TRANSACTION: usize = 50;

/// The outgoing queues' bookkeeping in memory (the queues themselves are in the store).
pub(super) struct Queues {
    next_seq: AtomicU64,
    wake: Notify,
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    /// Destinations with queued EDUs (what the store holds, without scanning it).
    pending: HashSet<OwnedServerName>,
    /// Destinations a delivery task is running for.
    busy: HashSet<OwnedServerName>,
    /// Failed destinations: failures in a row, and when to try again.
    retry: HashMap<OwnedServerName, (u32, Instant)>,
}

impl Queues {
    pub(super) fn new() -> Self {
        Self {
            next_seq: AtomicU64::new(0),
            wake: Notify::new(),
            state: Mutex::new(QueueState::default()),
        }
    }
}

impl Federation {
    /// Queues an EDU for `destination`; the sender delivers it. False when the destination's
    /// queue is full (the EDU is dropped).
    pub async fn queue_edu(&self, destination: &ServerName, edu: JsonValue) -> Result<bool> {
        let max = self.core.config.federation.max_queued_per_server;
        let queued = self
            .core
            .store
            .scan(FEDERATION_QUEUE.prefix(destination))
            .take(max)
            .count();
        if queued >= max {
            tracing::warn!("federation: the queue for {destination} is full; an EDU is dropped");
            return Ok(false);
        }
        let seq = self.queues.next_seq.fetch_add(1, Ordering::AcqRel);
        let mut batch = Batch::default();
        batch.put(&FEDERATION_QUEUE, (destination, seq), &edu);
        self.core.write(batch).await?;
        self.queues
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending
            .insert(destination.to_owned());
        self.queues.wake.notify_one();
        Ok(true)
    }

    /// Has the timeline tell the sender which servers it queued events for.
    pub fn listen_to_outbox(self: &Arc<Self>, timeline: &Timeline) {
        let this = Arc::downgrade(self);
        timeline.set_outbox_listener(Box::new(move |servers| {
            if let Some(this) = this.upgrade() {
                this.queues
                    .state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pending
                    .extend(servers.iter().cloned());
                this.queues.wake.notify_one();
            }
        }));
    }

    /// Sends `destination` an EDU at once, in a transaction of its own, without queueing it
    /// (typing notices: worth nothing later). Dropped when the server cannot be reached.
    pub fn send_edu_now(self: &Arc<Self>, destination: &ServerName, edu: JsonValue) {
        let this = self.clone();
        let destination = destination.to_owned();
        self.core.spawn_task(async move {
            let txn_id =
                OwnedTransactionId::from(format!("now{}", crate::service::core::random_token(16)));
            let mut request = send_transaction_message::v1::Request::new(
                txn_id,
                this.core.server_name().clone(),
                MilliSecondsSinceUnixEpoch::now(),
            );
            request.edus = vec![to_raw(&edu)];
            if let Err(e) = this.client.send(&destination, request).await {
                tracing::debug!("federation: an EDU to {destination} was dropped: {e}");
            }
        });
    }

    /// Starts the sender: it delivers what is queued (also what an earlier run left).
    pub fn start_sender(self: &Arc<Self>) {
        let mut last = None;
        let mut pending: HashSet<OwnedServerName> = self
            .core
            .store
            .scan(FEDERATION_PDUS.all())
            .filter_map(|item| item.ok().map(|((server, _), _)| server))
            .collect();
        for item in self.core.store.scan(FEDERATION_QUEUE.all()) {
            let Ok(((server, seq), _)) = item else {
                continue;
            };
            last = last.max(Some(seq));
            pending.insert(server);
        }
        self.queues
            .next_seq
            .store(last.map_or(0, |s| s + 1), Ordering::Release);
        self.queues
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending = pending;
        let this = self.clone();
        self.core
            .spawn_task(async move { this.sender_loop().await });
    }

    async fn sender_loop(self: Arc<Self>) {
        loop {
            let next_retry = self.dispatch();
            let wait = next_retry
                .map(|at| at.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = self.queues.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Starts a delivery task for every destination with queued EDUs that is neither busy
    /// nor waiting to retry; returns the earliest retry time.
    fn dispatch(self: &Arc<Self>) -> Option<Instant> {
        let now = Instant::now();
        let mut state = self.queues.state.lock().unwrap_or_else(|p| p.into_inner());
        let destinations: Vec<OwnedServerName> = state.pending.iter().cloned().collect();
        let mut earliest: Option<Instant> = None;
        for server in destinations {
            if state.busy.contains(&server) {
                continue;
            }
            if let Some((_, at)) = state.retry.get(&server)
                && *at > now
            {
                earliest = Some(earliest.map_or(*at, |e| e.min(*at)));
                continue;
            }
            state.busy.insert(server.clone());
            let this = self.clone();
            self.core.spawn_task(async move {
                let delivered = this.deliver(&server).await;
                let mut state = this.queues.state.lock().unwrap_or_else(|p| p.into_inner());
                state.busy.remove(&server);
                match delivered {
                    Ok(()) => {
                        state.retry.remove(&server);
                        // Emptied; an EDU queued meanwhile puts it back (and wakes the loop).
                        if this.queue_is_empty(&server) {
                            state.pending.remove(&server);
                        }
                    }
                    Err(e) => {
                        let failures = state.retry.get(&server).map_or(0, |(n, _)| *n) + 1;
                        let cap = this.core.config.federation.failure_backoff_secs.max(1);
                        let secs = (1u64 << failures.min(20)).min(cap);
                        tracing::debug!(
                            "federation: delivery to {server} failed ({e}); again in {secs} s"
                        );
                        state.retry.insert(
                            server,
                            (failures, Instant::now() + Duration::from_secs(secs)),
                        );
                    }
                }
                drop(state);
                this.queues.wake.notify_one();
            });
        }
        earliest
    }

    /// How many of this server's events wait to go out to `server`.
    pub fn queued_events(&self, server: &ServerName) -> usize {
        self.core.store.scan(FEDERATION_PDUS.prefix(server)).count()
    }

    fn queue_is_empty(&self, server: &ServerName) -> bool {
        let store = &self.core.store;
        store.scan(FEDERATION_QUEUE.prefix(server)).next().is_none()
            && store.scan(FEDERATION_PDUS.prefix(server)).next().is_none()
    }

    /// Drops the oldest PDUs queued for `server` past `max_queued_per_server`.
    async fn trim_pdus(&self, server: &ServerName) -> Result<()> {
        let max = self.core.config.federation.max_queued_per_server;
        let queued: Vec<u64> = self
            .core
            .store
            .scan(FEDERATION_PDUS.prefix(server))
            .filter_map(|item| item.ok().map(|((_, pos), _)| pos))
            .collect();
        if queued.len() <= max {
            return Ok(());
        }
        let mut drop = Batch::default();
        for pos in &queued[..queued.len() - max] {
            drop.delete(&FEDERATION_PDUS, (server, *pos));
        }
        tracing::warn!(
            "federation: {} events queued for {server} dropped (it asks for them when back)",
            queued.len() - max
        );
        self.core.write(drop).await
    }

    /// Sends `server` its queued EDUs, a transaction at a time, until its queue is empty.
    async fn deliver(&self, server: &ServerName) -> std::result::Result<(), String> {
        if let Err(e) = self.client.permits(server) {
            // Denied since (or federation turned off): what waits for it is dropped.
            tracing::info!("federation: dropping the queue for {server}: {e}");
            let mut drop = Batch::default();
            for ((_, seq), _) in self
                .core
                .store
                .scan(FEDERATION_QUEUE.prefix(server))
                .flatten()
            {
                drop.delete(&FEDERATION_QUEUE, (server, seq));
            }
            for ((_, pos), _) in self
                .core
                .store
                .scan(FEDERATION_PDUS.prefix(server))
                .flatten()
            {
                drop.delete(&FEDERATION_PDUS, (server, pos));
            }
            return self.core.write(drop).await.map_err(|e| e.to_string());
        }
        self.trim_pdus(server).await.map_err(|e| e.to_string())?;
        loop {
            let pdus: Vec<(u64, OwnedEventId)> = self
                .core
                .store
                .scan(FEDERATION_PDUS.prefix(server))
                .take(PDUS_PER_TRANSACTION)
                .filter_map(|item| item.ok().map(|((_, pos), id)| (pos, id)))
                .collect();
            let batch: Vec<(u64, JsonValue)> = self
                .core
                .store
                .scan(FEDERATION_QUEUE.prefix(server))
                .take(EDUS_PER_TRANSACTION)
                .filter_map(|item| item.ok().map(|((_, seq), edu)| (seq, edu)))
                .collect();
            if pdus.is_empty() && batch.is_empty() {
                return Ok(());
            }
            // The same events go out under the same ID when a transaction is retried.
            let span = |ids: &mut dyn Iterator<Item = u64>| {
                let ids: Vec<u64> = ids.collect();
                format!("{}-{}", ids.first().unwrap_or(&0), ids.last().unwrap_or(&0))
            };
            let txn_id = OwnedTransactionId::from(format!(
                "p{}e{}",
                span(&mut pdus.iter().map(|(p, _)| *p)),
                span(&mut batch.iter().map(|(s, _)| *s))
            ));
            let mut request = send_transaction_message::v1::Request::new(
                txn_id,
                self.core.server_name().clone(),
                MilliSecondsSinceUnixEpoch::now(),
            );
            for (_, id) in &pdus {
                if let Ok(Some(ev)) = self.core.store.get(&EVENTS, id) {
                    let raw =
                        serde_json::value::to_raw_value(&ev.pdu).map_err(|e| e.to_string())?;
                    request.pdus.push(raw);
                }
            }
            request.edus = batch.iter().map(|(_, edu)| to_raw(edu)).collect();
            let answer = self
                .client
                .send(server, request)
                .await
                .map_err(|e| e.to_string())?;
            for (id, outcome) in answer.pdus {
                if let Err(e) = outcome {
                    tracing::info!("federation: {server} refused {id}: {e}");
                }
            }
            let mut done = Batch::default();
            for (seq, _) in &batch {
                done.delete(&FEDERATION_QUEUE, (server, *seq));
            }
            for (pos, _) in &pdus {
                done.delete(&FEDERATION_PDUS, (server, *pos));
            }
            self.core.write(done).await.map_err(|e| e.to_string())?;
        }
    }
}

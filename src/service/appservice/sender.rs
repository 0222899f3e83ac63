//! Transactions pushed to appservices.
//!
//! Each registered appservice with a URL has a sender task. It reads the stream like `/sync`
//! does ([`Core::stream_entries`]), picks the events the appservice is interested in, and
//! pushes them as a transaction. The transaction in flight and the last delivered stream
//! position are stored, so nothing is lost, repeated under another ID, or re-ordered across
//! restarts; failures are retried with exponential backoff.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use ruma::{OwnedRoomId, RoomId, UserId, events::room::member::MembershipState};
use serde_json::json;

use super::{Appservice, Appservices};
use crate::{
    error::Result,
    service::{
        core::Core,
        directory::Directory,
        ephemeral::Ephemeral,
        timeline::{ClientView, Timeline},
    },
    store::{APPSERVICE_DELIVERY, Batch, DeliveryState, InFlight},
};

/// Events per transaction at most.
const MAX_EVENTS_PER_TXN: usize = 100;

/// Pushes transactions to appservices. Depends on [`Core`], [`Timeline`], [`Ephemeral`],
/// [`Directory`] and [`Appservices`].
pub struct AppserviceSender {
    core: Arc<Core>,
    timeline: Arc<Timeline>,
    ephemeral: Arc<Ephemeral>,
    directory: Arc<Directory>,
    appservices: Arc<Appservices>,
}

impl AppserviceSender {
    pub fn new(
        core: Arc<Core>,
        timeline: Arc<Timeline>,
        ephemeral: Arc<Ephemeral>,
        directory: Arc<Directory>,
        appservices: Arc<Appservices>,
    ) -> Self {
        Self {
            core,
            timeline,
            ephemeral,
            directory,
            appservices,
        }
    }

    /// Starts one sender task per appservice with a URL.
    pub fn start(self: &Arc<Self>) {
        for a in self
            .appservices
            .list
            .iter()
            .filter(|a| a.registration.url.is_some())
        {
            let (this, a) = (self.clone(), a.clone());
            self.core.spawn_task(async move { this.run(a).await });
        }
    }

    async fn run(&self, a: Arc<Appservice>) {
        let mut state = self
            .core
            .store
            .get(&APPSERVICE_DELIVERY, a.id())
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut rx = self.core.subscribe();
        let mut backoff = Duration::from_millis(250);
        let mut typing_seen: HashMap<OwnedRoomId, u64> = HashMap::new();
        loop {
            rx.borrow_and_update();
            if state.in_flight.is_none() {
                match self.build_transaction(&a, &mut state, &mut typing_seen) {
                    Ok(true) => {
                        if let Err(e) = self.save(&a, &state).await {
                            tracing::warn!(appservice = a.id(), "cannot store transaction: {e}");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(appservice = a.id(), "cannot build transaction: {e}"),
                }
            }
            if let Some(flight) = state.in_flight.clone() {
                if self.push(&a, &flight).await {
                    state.delivered = flight.upto;
                    state.in_flight = None;
                    backoff = Duration::from_millis(250);
                    if let Err(e) = self.save(&a, &state).await {
                        tracing::warn!(appservice = a.id(), "cannot store delivery: {e}");
                    }
                    continue; // more may be waiting
                }
                tracing::info!(appservice = a.id(), txn = %flight.txn_id, "appservice unreachable; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
            if rx.changed().await.is_err() {
                return; // server shutting down
            }
        }
    }

    async fn save(&self, a: &Appservice, state: &DeliveryState) -> Result<()> {
        let mut b = Batch::default();
        b.put(&APPSERVICE_DELIVERY, a.id(), state);
        self.core.write(b).await
    }

    /// Collects the events after `state.delivered` that interest the appservice into a new
    /// in-flight transaction. Returns whether one was made.
    fn build_transaction(
        &self,
        a: &Appservice,
        state: &mut DeliveryState,
        typing_seen: &mut HashMap<OwnedRoomId, u64>,
    ) -> Result<bool> {
        let mut events = Vec::new();
        let mut ephemeral = Vec::new();
        let mut interested: HashMap<OwnedRoomId, bool> = HashMap::new();
        let mut upto = state.delivered;
        let mut receipt_rooms = HashSet::new();
        for item in self
            .core
            .stream_entries(state.delivered, self.core.current_pos())
        {
            let (pos, entry) = item?;
            upto = pos;
            let Some(room) = entry.room else { continue };
            let room_interesting = match interested.get(&room) {
                Some(b) => *b,
                None => {
                    let b = self.room_interests(a, &room)?;
                    interested.insert(room.clone(), b);
                    b
                }
            };
            match self.timeline.event_at(&room, pos)? {
                Some(ev) => {
                    let direct = ev.sender().is_some_and(|s| a.is_user(&s))
                        || ev
                            .state_key()
                            .and_then(|k| UserId::parse(k).ok())
                            .is_some_and(|u| a.is_user(&u));
                    if direct || room_interesting {
                        events.push(self.timeline.client_event(&ev, &ClientView::ANYONE, None));
                    }
                    if direct && ev.kind() == "m.room.member" {
                        interested.remove(&room); // membership of the room changed
                    }
                }
                None if room_interesting && a.registration.receive_ephemeral => {
                    receipt_rooms.insert(room);
                }
                None => {}
            }
            if events.len() >= MAX_EVENTS_PER_TXN {
                break;
            }
        }
        for room in receipt_rooms {
            if let Some(content) =
                self.ephemeral
                    .receipts_since(&room, &a.sender, state.delivered)?
            {
                ephemeral.push(json!({ "type": "m.receipt", "room_id": room, "content": content }));
            }
        }
        if a.registration.receive_ephemeral {
            for room in interested.iter().filter(|(_, i)| **i).map(|(r, _)| r) {
                let (users, serial) = self.ephemeral.typing(room);
                if typing_seen.get(room).copied().unwrap_or(0) != serial {
                    typing_seen.insert(room.clone(), serial);
                    ephemeral.push(json!({ "type": "m.typing", "room_id": room, "content": { "user_ids": users } }));
                }
            }
        }
        if events.is_empty() && ephemeral.is_empty() {
            state.delivered = upto; // nothing for this appservice; persisted with the next txn
            return Ok(false);
        }
        let txn_id = state.next_txn.to_string();
        state.next_txn += 1;
        let mut body = json!({ "events": events });
        if !ephemeral.is_empty() {
            body["ephemeral"] = ephemeral.clone().into();
            body["de.sorunome.msc2409.ephemeral"] = ephemeral.into();
        }
        state.in_flight = Some(InFlight { txn_id, upto, body });
        Ok(true)
    }

    /// Whether an appservice cares about a room: a namespaced member, a namespaced alias, or a
    /// namespaced room ID.
    fn room_interests(&self, a: &Appservice, room: &RoomId) -> Result<bool> {
        if a.is_room(room) {
            return Ok(true);
        }
        if self.timeline.members(room)?.iter().any(|(u, m, _)| {
            matches!(m, MembershipState::Join | MembershipState::Invite) && a.is_user(u)
        }) {
            return Ok(true);
        }
        Ok(self
            .directory
            .local_aliases(room)?
            .iter()
            .any(|alias| a.is_alias(alias)))
    }

    async fn push(&self, a: &Appservice, flight: &InFlight) -> bool {
        let Some(url) = &a.registration.url else {
            return true;
        };
        let res = self
            .core
            .http
            .put(format!(
                "{url}/_matrix/app/v1/transactions/{}",
                flight.txn_id
            ))
            .bearer_auth(&a.registration.hs_token)
            .json(&flight.body)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                tracing::warn!(appservice = a.id(), status = %r.status(), "transaction refused");
                false
            }
            Err(e) => {
                tracing::debug!(appservice = a.id(), "transaction failed: {e}");
                false
            }
        }
    }
}

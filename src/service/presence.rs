//! Presence: online, unavailable or offline, with a status message.
//!
//! A user is online while a client syncs for them (`set_presence` on `/sync`, online by
//! default) and goes offline a minute after the last sync; a client may also set presence by
//! hand. A change is stored and put on the stream, so the syncs of the people who share a room
//! with the user wake and carry it; a sync that only confirms what is known writes nothing.
//! `presence.enabled = false` (for the smallest boards) turns it all off: everyone looks offline.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{OwnedUserId, UserId, events::room::member::MembershipState, presence::PresenceState};
use serde_json::{Value as JsonValue, json};

use super::{
    core::{Core, now_ms},
    timeline::Timeline,
};
use crate::{
    error::{Error, Result},
    store::{PRESENCE, PresenceRecord, StreamEntry},
};

/// How long after its last sync a user who was online by syncing goes offline.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// A user's presence as clients see it.
pub struct Status {
    pub presence: PresenceState,
    pub status_msg: Option<String>,
    pub last_active_ago: Option<Duration>,
    pub currently_active: bool,
}

/// Presence. Depends on [`Core`] and [`Timeline`].
pub struct Presence {
    core: Arc<Core>,
    timeline: Arc<Timeline>,
    /// When each user's clients last synced.
    last_sync: Mutex<HashMap<OwnedUserId, Instant>>,
}

impl Presence {
    pub fn new(core: Arc<Core>, timeline: Arc<Timeline>) -> Self {
        Self {
            core,
            timeline,
            last_sync: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.core.config.presence.enabled
    }

    fn record(&self, user: &UserId) -> Result<Option<PresenceRecord>> {
        Ok(self.core.store.get(&PRESENCE, user)?)
    }

    /// Stores a presence and puts it on the stream, unless nothing changed.
    async fn store(
        &self,
        user: &UserId,
        presence: &PresenceState,
        status_msg: Option<Option<String>>,
        from_sync: bool,
    ) -> Result<()> {
        let old = self.record(user)?;
        let status_msg = match status_msg {
            Some(msg) => msg,
            None => old.as_ref().and_then(|o| o.status_msg.clone()),
        };
        if old
            .as_ref()
            .is_some_and(|o| o.presence == presence.as_str() && o.status_msg == status_msg)
        {
            return Ok(());
        }
        let record = PresenceRecord {
            presence: presence.as_str().to_owned(),
            status_msg,
            last_active_ts: now_ms(),
            from_sync,
        };
        let entry = StreamEntry {
            presence: Some(user.to_owned()),
            ..Default::default()
        };
        self.core
            .commit(entry, |_, b| {
                b.put(&PRESENCE, user, &record);
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Another server's user's presence, as their server announced it (`m.presence`).
    pub async fn receive_remote(
        &self,
        user: &UserId,
        presence: &PresenceState,
        status_msg: Option<String>,
    ) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let status_msg = status_msg.map(|m| m.chars().take(1024).collect());
        self.store(user, presence, Some(status_msg), false).await
    }

    /// `PUT /presence/{userId}/status`: only for oneself.
    pub async fn set(
        &self,
        requester: &UserId,
        user: &UserId,
        presence: &PresenceState,
        status_msg: Option<String>,
    ) -> Result<()> {
        if requester != user {
            return Err(Error::forbidden("You may only set your own presence"));
        }
        if !self.enabled() {
            return Ok(());
        }
        if status_msg
            .as_ref()
            .is_some_and(|m| m.chars().count() > 1024)
        {
            return Err(Error::invalid_param(
                "Status messages are at most 1024 characters",
            ));
        }
        self.store(user, presence, Some(status_msg), false).await
    }

    /// A sync with `set_presence` (online unless the client says otherwise).
    pub async fn synced(&self, user: &UserId, presence: &PresenceState) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        self.last_sync
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.to_owned(), Instant::now());
        let current = self.record(user)?;
        // A status set by hand stays until the client syncs with another one.
        if current
            .as_ref()
            .is_some_and(|c| c.presence == presence.as_str())
        {
            return Ok(());
        }
        self.store(user, presence, None, true).await
    }

    /// `GET /presence/{userId}/status`: of oneself or someone one shares a room with.
    pub fn get(&self, requester: &UserId, user: &UserId) -> Result<Status> {
        if requester != user && !self.shares_a_room(requester, user)? {
            return Err(Error::forbidden("You share no room with this user"));
        }
        self.status(user)
    }

    fn status(&self, user: &UserId) -> Result<Status> {
        let record = if self.enabled() {
            self.record(user)?
        } else {
            None
        };
        Ok(match record {
            Some(r) => {
                let ago = now_ms().saturating_sub(r.last_active_ts);
                Status {
                    currently_active: r.presence == "online" && ago < 5 * 60 * 1000,
                    presence: PresenceState::from(r.presence.as_str()),
                    status_msg: r.status_msg,
                    last_active_ago: Some(Duration::from_millis(ago)),
                }
            }
            None => Status {
                presence: PresenceState::Offline,
                status_msg: None,
                last_active_ago: None,
                currently_active: false,
            },
        })
    }

    pub fn shares_a_room(&self, a: &UserId, b: &UserId) -> Result<bool> {
        for room in self
            .timeline
            .rooms_with_membership(a, &[MembershipState::Join])?
        {
            if self.timeline.is_joined(b, &room)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// An `m.presence` event for `/sync`.
    pub fn event(&self, user: &UserId) -> Result<Option<JsonValue>> {
        if !self.enabled() || self.record(user)?.is_none() {
            return Ok(None);
        }
        let s = self.status(user)?;
        let mut content = json!({
            "presence": s.presence.as_str(),
            "currently_active": s.currently_active,
        });
        if let Some(ago) = s.last_active_ago {
            content["last_active_ago"] = (ago.as_millis() as u64).into();
        }
        if let Some(msg) = s.status_msg {
            content["status_msg"] = msg.into();
        }
        Ok(Some(
            json!({ "type": "m.presence", "sender": user, "content": content }),
        ))
    }

    /// Users online by syncing whose clients stopped go offline (a background task).
    pub fn start_timeouts(self: &Arc<Self>) {
        if !self.enabled() {
            return;
        }
        let this = Arc::downgrade(self);
        self.core.spawn_task(async move {
            loop {
                tokio::time::sleep(SYNC_TIMEOUT / 4).await;
                let Some(this) = this.upgrade() else { return };
                let stale: Vec<OwnedUserId> = {
                    let mut last = this.last_sync.lock().unwrap_or_else(|e| e.into_inner());
                    let stale = last
                        .iter()
                        .filter(|(_, t)| t.elapsed() > SYNC_TIMEOUT)
                        .map(|(u, _)| u.clone())
                        .collect::<Vec<_>>();
                    last.retain(|u, _| !stale.contains(u));
                    stale
                };
                for user in stale {
                    let from_sync = this
                        .record(&user)
                        .ok()
                        .flatten()
                        .is_some_and(|r| r.from_sync);
                    if from_sync
                        && let Err(e) = this.store(&user, &PresenceState::Offline, None, true).await
                    {
                        tracing::warn!(%user, "presence timeout: {e}");
                    }
                }
            }
        });
    }
}

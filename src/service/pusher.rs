//! Pushers and notifications: what the push rules produce for each member of a room, kept for
//! `/notifications` and sent to the users' HTTP push gateways (Sygnal, ntfy's Matrix gateway)
//! in the Push Gateway API's format, so that phones ring.
//!
//! A notifier task reads the stream as `/sync` does. For each new event of a room it runs the
//! push rules of every local member but the sender; a notifying event becomes a stored
//! notification, and for each of the user's pushers a queued push. A second task sends the
//! queue in order, retrying failures with backoff; both positions are stored, so a restart
//! neither loses nor repeats a push.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{
    OwnedUserId, UserId,
    api::client::push::{Pusher, PusherIds, PusherKind},
    events::room::member::MembershipState,
    push::Action,
};
use serde_json::{Value as JsonValue, json};

use super::{
    appservice::Appservices,
    core::{Core, now_ms},
    push::Push,
    timeline::{ClientView, Timeline},
    users::Users,
};
use crate::{
    error::{Error, Result},
    store::{
        Batch, NOTIFICATIONS, NOTIFIER_POS, NotificationRecord, PUSH_QUEUE, PUSHERS, PusherRecord,
        QueuedPush, StoredEvent,
    },
};

/// Notifications kept per user at most; older ones go.
const KEPT_PER_USER: usize = 500;

/// How many new notifications of a user between two trims of their list.
const TRIM_EVERY: usize = 50;

/// Stream entries the notifier handles in one write.
const EVENTS_PER_ROUND: u64 = 200;

/// Attempts to deliver one push before it is dropped.
const MAX_ATTEMPTS: u32 = 12;

/// A notification for `/notifications`.
pub struct Notification {
    pub record: NotificationRecord,
    pub event: StoredEvent,
    pub read: bool,
    pub pos: u64,
}

/// Pushers and notifications. Depends on [`Core`], [`Users`], [`Appservices`], [`Timeline`]
/// and [`Push`].
pub struct Notifier {
    core: Arc<Core>,
    users: Arc<Users>,
    appservices: Arc<Appservices>,
    timeline: Arc<Timeline>,
    push: Arc<Push>,
    /// Notifications stored per user since their list was last trimmed.
    since_trim: Mutex<HashMap<OwnedUserId, usize>>,
}

fn bad_pusher(message: &str) -> Error {
    Error::invalid_param(message)
}

impl Notifier {
    pub fn new(
        core: Arc<Core>,
        users: Arc<Users>,
        appservices: Arc<Appservices>,
        timeline: Arc<Timeline>,
        push: Arc<Push>,
    ) -> Self {
        Self {
            core,
            users,
            appservices,
            timeline,
            push,
            since_trim: Mutex::default(),
        }
    }

    /// The user's pushers.
    pub fn pushers(&self, user: &UserId) -> Result<Vec<Pusher>> {
        let mut out = Vec::new();
        for item in self.core.store.scan(PUSHERS.prefix(user)) {
            let (_, record) = item?;
            if let Ok(p) = serde_json::from_value(record.pusher) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// `POST /pushers/set` with a pusher: adds or replaces it (`append = false` also removes
    /// other users' pushers with the same app ID and pushkey, as the spec says). HTTP pushers
    /// only: the server sends no email.
    pub async fn set_pusher(&self, user: &UserId, pusher: Pusher, append: bool) -> Result<()> {
        let http = match &pusher.kind {
            PusherKind::Http(http) => http,
            PusherKind::Email(_) => {
                return Err(bad_pusher(
                    "This server sends no email: only http pushers are supported",
                ));
            }
            _ => return Err(bad_pusher("Unknown pusher kind")),
        };
        let url =
            reqwest::Url::parse(&http.url).map_err(|_| bad_pusher("data.url is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https")
            || !url.path().ends_with("/_matrix/push/v1/notify")
        {
            return Err(bad_pusher(
                "data.url must be an http(s) URL ending in /_matrix/push/v1/notify",
            ));
        }
        if !self.core.config.push.allow_private_gateways
            && !super::net::is_public_url(&http.url).await
        {
            return Err(bad_pusher(
                "data.url is not on a public address (the server's operator can allow private \
                 gateways with push.allow_private_gateways)",
            ));
        }
        let ids = pusher.ids.clone();
        if ids.pushkey.len() > 512 || ids.app_id.len() > 64 {
            return Err(bad_pusher(
                "pushkey is at most 512 bytes, app_id at most 64",
            ));
        }
        let mut b = Batch::default();
        if !append {
            for item in self.core.store.scan(PUSHERS.all()) {
                let ((owner, app_id, pushkey), _) = item?;
                if owner != user && app_id == ids.app_id && pushkey == ids.pushkey {
                    b.delete(&PUSHERS, (&owner, app_id.as_str(), pushkey.as_str()));
                }
            }
        }
        let record = PusherRecord {
            pusher: serde_json::to_value(&pusher)?,
            created_ts: now_ms(),
        };
        b.put(
            &PUSHERS,
            (user, ids.app_id.as_str(), ids.pushkey.as_str()),
            &record,
        );
        self.core.write(b).await
    }

    /// `POST /pushers/set` with `kind: null`: removes a pusher.
    pub async fn delete_pusher(&self, user: &UserId, ids: &PusherIds) -> Result<()> {
        let mut b = Batch::default();
        b.delete(&PUSHERS, (user, ids.app_id.as_str(), ids.pushkey.as_str()));
        self.core.write(b).await
    }

    /// `/notifications`: newest first, before `from`, optionally only highlights.
    pub fn notifications(
        &self,
        user: &UserId,
        from: Option<u64>,
        limit: usize,
        only_highlight: bool,
    ) -> Result<(Vec<Notification>, Option<u64>)> {
        let limit = limit.clamp(1, 100);
        let mut out = Vec::new();
        let mut next = None;
        let upto = from.unwrap_or(u64::MAX);
        for item in self
            .core
            .store
            .range(&NOTIFICATIONS, (user, 0), (user, upto), true)
        {
            let ((_, pos), record) = item?;
            if only_highlight
                && !serde_json::from_value::<Vec<Action>>(record.actions.clone())
                    .unwrap_or_default()
                    .iter()
                    .any(Action::is_highlight)
            {
                continue;
            }
            if out.len() >= limit {
                next = Some(pos + 1);
                break;
            }
            let Some(event) = self.timeline.event(&record.event_id)? else {
                continue;
            };
            let read = self.push.read_upto(user, &record.room_id)? >= event.pos;
            out.push(Notification {
                record,
                event,
                read,
                pos,
            });
        }
        Ok((out, next))
    }

    /// Starts the notifier and the gateway sender.
    pub fn start(self: &Arc<Self>) {
        let this = self.clone();
        self.core
            .spawn_task(async move { this.notify_loop().await });
        let this = self.clone();
        self.core.spawn_task(async move { this.send_loop().await });
    }

    async fn notify_loop(&self) {
        let mut rx = self.core.subscribe();
        loop {
            rx.borrow_and_update();
            loop {
                match self.notify_new_events().await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!("notifications: {e}");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        break;
                    }
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Runs the push rules over the next events since the stored position (at most
    /// [`EVENTS_PER_ROUND`] stream entries). Ok(true) when more are waiting.
    async fn notify_new_events(&self) -> Result<bool> {
        let current = self.core.current_pos();
        let Some(done) = self.core.store.get_single(&NOTIFIER_POS)? else {
            // A store from before notifications: start from now rather than notify history.
            let mut b = Batch::default();
            b.put_single(&NOTIFIER_POS, &current);
            self.core.write(b).await?;
            return Ok(false);
        };
        if done >= current {
            return Ok(false);
        }
        let upto = current.min(done + EVENTS_PER_ROUND);
        let mut b = Batch::default();
        let mut queued = 0u64;
        let mut next_seq = self.next_queue_seq()?;
        let entries: Vec<_> = self.core.stream_entries(done, upto).collect();
        for entry in entries {
            let (pos, entry) = entry?;
            let Some(room) = entry.room else { continue };
            let Some(ev) = self.timeline.event_at(&room, pos)? else {
                continue;
            };
            let Some(sender) = ev.sender() else { continue };
            for member in self.timeline.joined_members(&room)? {
                // Bridged users' notifications go nowhere: skipping them keeps a bridged room
                // from costing a write per puppet per message.
                if member == sender
                    || !self.users.is_local(&member)
                    || self.appservices.is_appservice_user(&member)
                    || !self.timeline.reader(&member, &room)?.sees(&ev)
                {
                    continue;
                }
                let judge = self.push.evaluator(&member, &room)?;
                let actions = judge.actions(&self.push, &ev).await;
                if !actions.iter().any(|a| matches!(a, Action::Notify)) {
                    continue;
                }
                let record = NotificationRecord {
                    room_id: room.clone(),
                    event_id: ev.event_id.clone(),
                    actions: serde_json::to_value(&actions)?,
                    ts: ev.origin_server_ts(),
                };
                b.put(&NOTIFICATIONS, (&member, pos), &record);
                for pusher in self.pushers(&member)? {
                    if let Some(push) = self.gateway_push(&member, &pusher, &ev, &actions).await? {
                        b.put(&PUSH_QUEUE, next_seq, &push);
                        next_seq += 1;
                        queued += 1;
                    }
                }
                self.trim_notifications(&member, &mut b)?;
            }
        }
        b.put_single(&NOTIFIER_POS, &upto);
        self.core.write(b).await?;
        if queued > 0 {
            self.core.poke_pushes();
        }
        Ok(upto < current)
    }

    fn next_queue_seq(&self) -> Result<u64> {
        Ok(match self.core.store.scan_rev(PUSH_QUEUE.all()).next() {
            Some(item) => item?.0.0 + 1,
            None => 1,
        })
    }

    /// Keeps about the newest [`KEPT_PER_USER`] notifications of a user: every
    /// [`TRIM_EVERY`] new ones, the oldest beyond it go.
    fn trim_notifications(&self, user: &UserId, b: &mut Batch) -> Result<()> {
        {
            let mut counts = self.since_trim.lock().unwrap_or_else(|e| e.into_inner());
            let n = counts.entry(user.to_owned()).or_default();
            *n += 1;
            if *n < TRIM_EVERY {
                return Ok(());
            }
            counts.remove(user);
        }
        let old: Vec<u64> = self
            .core
            .store
            .scan_rev(NOTIFICATIONS.prefix(user))
            .skip(KEPT_PER_USER)
            .take(TRIM_EVERY * 2)
            .filter_map(|i| i.ok().map(|((_, pos), _)| pos))
            .collect();
        for pos in old {
            b.delete(&NOTIFICATIONS, (user, pos));
        }
        Ok(())
    }

    /// The Push Gateway API body for one pusher of a notified user.
    async fn gateway_push(
        &self,
        user: &UserId,
        pusher: &Pusher,
        ev: &StoredEvent,
        actions: &[Action],
    ) -> Result<Option<QueuedPush>> {
        let PusherKind::Http(http) = &pusher.kind else {
            return Ok(None);
        };
        let mut tweaks = serde_json::Map::new();
        for action in actions {
            if let Ok(JsonValue::Object(o)) = serde_json::to_value(action)
                && let Some(name) = o.get("set_tweak").and_then(|t| t.as_str())
            {
                tweaks.insert(name.into(), o.get("value").cloned().unwrap_or(true.into()));
            }
        }
        let mut data = http.data.clone();
        data.remove("url");
        if let Some(format) = &http.format {
            data.insert("format".into(), format.as_str().into());
        }
        let device = json!({
            "app_id": pusher.ids.app_id,
            "pushkey": pusher.ids.pushkey,
            "pushkey_ts": now_ms() / 1000,
            "data": data,
            "tweaks": tweaks,
        });
        let kind = ev.kind();
        let prio = if matches!(kind.as_str(), "m.room.message" | "m.room.encrypted")
            || ev.state_key() == Some(user.as_str())
        {
            "high"
        } else {
            "low"
        };
        let unread = self
            .push
            .unread_counts(user, &ev.room_id, false)
            .await?
            .main
            .0;
        let mut notification = json!({
            "event_id": ev.event_id,
            "room_id": ev.room_id,
            "type": kind,
            "sender": ev.sender(),
            "prio": prio,
            "counts": { "unread": unread, "missed_calls": 0 },
            "devices": [device],
        });
        let event_id_only = http
            .format
            .as_ref()
            .is_some_and(|f| f.as_str() == "event_id_only");
        if !event_id_only {
            let client = self.timeline.client_event(ev, &ClientView::ANYONE, None);
            notification["content"] = client["content"].clone();
            if let Some(sender) = ev.sender()
                && let Some(name) = self
                    .timeline
                    .state_event(&ev.room_id, &"m.room.member".into(), sender.as_str())?
                    .and_then(|m| m.content_str("displayname"))
            {
                notification["sender_display_name"] = name.into();
            }
            if let Some(name) =
                self.timeline
                    .state_str(&ev.room_id, "m.room.name".into(), "name")?
            {
                notification["room_name"] = name.into();
            }
            if ev.state_key() == Some(user.as_str()) {
                notification["user_is_target"] = true.into();
                if let Some(m) = ev.content_str("membership")
                    && m == MembershipState::Invite.as_str()
                {
                    notification["membership"] = m.into();
                }
            }
        }
        Ok(Some(QueuedPush {
            user: user.to_owned(),
            app_id: pusher.ids.app_id.clone(),
            pushkey: pusher.ids.pushkey.clone(),
            body: json!({ "notification": notification }),
            url: http.url.clone(),
            attempts: 0,
        }))
    }

    async fn send_loop(&self) {
        let mut wake = self.core.subscribe_pushes();
        let mut backoff = Duration::from_secs(1);
        loop {
            wake.borrow_and_update();
            match self.send_next().await {
                Ok(true) => {
                    backoff = Duration::from_secs(1);
                    continue; // more may be waiting
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::info!("push gateway: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                    continue;
                }
            }
            if wake.changed().await.is_err() {
                return;
            }
        }
    }

    /// Sends the oldest queued push. Ok(true) when one was handled (sent, or dropped after too
    /// many attempts), Ok(false) when the queue is empty, Err when the gateway failed.
    async fn send_next(&self) -> Result<bool> {
        let Some(item) = self.core.store.scan(PUSH_QUEUE.all()).next() else {
            return Ok(false);
        };
        let ((seq,), mut push) = item?;
        let allowed = self.core.config.push.allow_private_gateways
            || super::net::is_public_url(&push.url).await;
        let result = if allowed {
            self.core
                .http
                .post(&push.url)
                .json(&push.body)
                .timeout(Duration::from_secs(15))
                .send()
                .await
        } else {
            tracing::warn!(url = push.url, "push gateway on a private address refused");
            let mut b = Batch::default();
            b.delete(&PUSH_QUEUE, seq);
            self.core.write(b).await?;
            return Ok(true);
        };
        let mut b = Batch::default();
        match result {
            Ok(res) if res.status().is_success() => {
                b.delete(&PUSH_QUEUE, seq);
                // Pushkeys the gateway no longer knows: their pushers go.
                if let Some(body) = super::net::json_body(res, 64 * 1024).await
                    && let Some(rejected) = body.get("rejected").and_then(|r| r.as_array())
                {
                    for key in rejected.iter().filter_map(|k| k.as_str()) {
                        if key == push.pushkey {
                            b.delete(&PUSHERS, (&push.user, push.app_id.as_str(), key));
                        }
                    }
                }
                self.core.write(b).await?;
                Ok(true)
            }
            failed => {
                push.attempts += 1;
                if push.attempts >= MAX_ATTEMPTS {
                    tracing::warn!(url = push.url, "push dropped after {MAX_ATTEMPTS} attempts");
                    b.delete(&PUSH_QUEUE, seq);
                } else {
                    b.put(&PUSH_QUEUE, seq, &push);
                }
                self.core.write(b).await?;
                Err(Error::internal(match failed {
                    Ok(res) => format!("gateway answered {}", res.status()),
                    Err(e) => format!("gateway unreachable: {e}"),
                }))
            }
        }
    }

    /// Pushers and notifications of a user, gone with the account.
    pub async fn forget_user(&self, user: &UserId) -> Result<()> {
        let mut b = Batch::default();
        for item in self.core.store.scan(PUSHERS.prefix(user)) {
            let ((_, app, key), _) = item?;
            b.delete(&PUSHERS, (user, app.as_str(), key.as_str()));
        }
        for item in self.core.store.scan(NOTIFICATIONS.prefix(user)) {
            let ((_, pos), _) = item?;
            b.delete(&NOTIFICATIONS, (user, pos));
        }
        self.core.write(b).await
    }
}

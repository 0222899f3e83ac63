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
    collections::{HashMap, HashSet},
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
    net::{AddressError, CheckedResolver, check_url},
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

/// Attempts to deliver one push before it is dropped (with the backoff, about three hours).
const MAX_ATTEMPTS: u32 = 12;

/// The longest wait between two attempts.
const MAX_BACKOFF_MS: u64 = 20 * 60 * 1000;

/// Queued pushes one round of the sender looks at.
const QUEUE_WINDOW: usize = 1000;

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
    /// The HTTP client for push gateways.
    client: reqwest::Client,
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
        // Gateways on private addresses are refused where the connection is made, and
        // redirects are not followed (one could lead to an address no resolver checks).
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(15));
        if !core.config.push.allow_private_gateways {
            client = client.no_proxy().dns_resolver(Arc::new(CheckedResolver {
                allow_loopback: false,
            }));
        }
        Self {
            client: client.build().unwrap_or_else(|_| core.http.clone()),
            core,
            users,
            appservices,
            timeline,
            push,
            since_trim: Mutex::default(),
        }
    }

    /// Whether the server may send to a gateway at `url`: Err(refused) for a private address
    /// (unless the operator allowed them), Ok(Err) when the name does not resolve now.
    async fn check_gateway(&self, url: &reqwest::Url) -> std::result::Result<(), AddressError> {
        if self.core.config.push.allow_private_gateways {
            return Ok(());
        }
        check_url(url, false).await
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
        if let Err(e) = self.check_gateway(&url).await {
            return Err(bad_pusher(&format!(
                "data.url: {e} (the server's operator can allow gateways on private addresses \
                 with push.allow_private_gateways)"
            )));
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
        let unread = self.push.unread_counts(user, &ev.room_id, false)?.main.0;
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
            not_before_ms: 0,
        }))
    }

    async fn send_loop(&self) {
        let mut wake = self.core.subscribe_pushes();
        loop {
            wake.borrow_and_update();
            let next = match self.send_due().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!("push queue: {e}");
                    Some(now_ms() + 5_000)
                }
            };
            let changed = match next {
                None => wake.changed().await,
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => Ok(()),
                        changed = wake.changed() => changed,
                    }
                }
            };
            if changed.is_err() {
                return;
            }
        }
    }

    /// Sends the queued pushes that are due, oldest first, among the first [`QUEUE_WINDOW`]
    /// of the queue. A pusher whose gateway failed waits for its retry time with all its
    /// pushes (they stay in order) while other pushers' go on. Returns when the next waiting
    /// push is due (None: the queue is empty).
    async fn send_due(&self) -> Result<Option<u64>> {
        let queue: Vec<(u64, QueuedPush)> = self
            .core
            .store
            .scan(PUSH_QUEUE.all())
            .take(QUEUE_WINDOW)
            .map(|item| Ok(item.map(|((seq,), push)| (seq, push))?))
            .collect::<Result<_>>()?;
        if queue.is_empty() {
            return Ok(None);
        }
        let full = queue.len() == QUEUE_WINDOW;
        let mut waiting: HashSet<(OwnedUserId, String, String)> = HashSet::new();
        let mut next_due: Option<u64> = None;
        for (seq, push) in queue {
            let pusher = (push.user.clone(), push.app_id.clone(), push.pushkey.clone());
            if waiting.contains(&pusher) {
                continue;
            }
            let retry_at = if push.not_before_ms > now_ms() {
                Some(push.not_before_ms)
            } else {
                self.send(seq, push).await?
            };
            if let Some(at) = retry_at {
                waiting.insert(pusher);
                next_due = Some(next_due.map_or(at, |n| n.min(at)));
            }
        }
        // A full window may hide due pushes behind it: look again at once.
        Ok(if full { Some(now_ms()) } else { next_due })
    }

    /// Sends one push. None when it is done with (delivered, or dropped: refused address,
    /// a gateway that answered it can never succeed, too many attempts); otherwise when to
    /// try again.
    async fn send(&self, seq: u64, mut push: QueuedPush) -> Result<Option<u64>> {
        let checked = match reqwest::Url::parse(&push.url) {
            Ok(url) => self.check_gateway(&url).await,
            Err(e) => Err(AddressError::Refused(e.to_string())),
        };
        let failure = match checked {
            Ok(()) => match self.client.post(&push.url).json(&push.body).send().await {
                Ok(res) if res.status().is_success() => {
                    self.delivered(seq, &push, res).await?;
                    return Ok(None);
                }
                // The gateway will never take this one (a bad request, an unknown app).
                Ok(res)
                    if res.status().is_client_error()
                        && res.status() != http::StatusCode::TOO_MANY_REQUESTS =>
                {
                    tracing::warn!(url = push.url, status = %res.status(), "push dropped");
                    self.drop_push(seq).await?;
                    return Ok(None);
                }
                Ok(res) => format!("gateway answered {}", res.status()),
                Err(e) => format!("gateway unreachable: {e}"),
            },
            Err(AddressError::Refused(why)) => {
                tracing::warn!(url = push.url, "push gateway refused: {why}");
                self.drop_push(seq).await?;
                return Ok(None);
            }
            // Perhaps the name resolves later: retried like an unreachable gateway.
            Err(AddressError::Unresolvable(why)) => why,
        };
        push.attempts += 1;
        if push.attempts >= MAX_ATTEMPTS {
            tracing::warn!(
                url = push.url,
                "push dropped after {MAX_ATTEMPTS} attempts: {failure}"
            );
            self.drop_push(seq).await?;
            return Ok(None);
        }
        let backoff = (1000u64 << push.attempts.min(10)).min(MAX_BACKOFF_MS);
        tracing::info!(
            url = push.url,
            "push failed ({failure}); retrying in {backoff} ms"
        );
        push.not_before_ms = now_ms() + backoff;
        let mut b = Batch::default();
        b.put(&PUSH_QUEUE, seq, &push);
        self.core.write(b).await?;
        Ok(Some(push.not_before_ms))
    }

    /// A push the gateway took: it leaves the queue, and the pusher goes if the gateway said
    /// its pushkey is no longer valid.
    async fn delivered(&self, seq: u64, push: &QueuedPush, res: reqwest::Response) -> Result<()> {
        let mut b = Batch::default();
        b.delete(&PUSH_QUEUE, seq);
        if let Some(body) = super::net::json_body(res, 64 * 1024).await
            && let Some(rejected) = body.get("rejected").and_then(|r| r.as_array())
            && rejected
                .iter()
                .any(|k| k.as_str() == Some(push.pushkey.as_str()))
        {
            b.delete(
                &PUSHERS,
                (&push.user, push.app_id.as_str(), push.pushkey.as_str()),
            );
        }
        self.core.write(b).await
    }

    async fn drop_push(&self, seq: u64) -> Result<()> {
        let mut b = Batch::default();
        b.delete(&PUSH_QUEUE, seq);
        self.core.write(b).await
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

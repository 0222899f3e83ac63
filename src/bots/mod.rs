//! Community bots: gatherings, people, thanks, charter and coffee roulette.
//!
//! **The bots are an ordinary Matrix client.** They use matrix-sdk (end-to-end encryption, its
//! SQLite store under `{data_dir}/bots/sdk`) and talk to the server over loopback like any
//! client, so they see exactly what members see, cannot read what members' clients would not
//! share with them, and answer encrypted in encrypted rooms. The server starts them after it
//! listens ([`BotRunner::start`]) and stops them first on shutdown.
//!
//! **One user for every bot**, `@tsunagu:{server_name}` (config `bots.user`): members verify
//! one identity, a small Pi runs one crypto store and one sync loop, and which habits are
//! active is decided per room (`!bots enable gatherings`). The account is created through the
//! service layer on the first start (no password: nobody can log in as the bots); its device
//! ID is kept in the bots' state so the crypto store always matches the device.
//!
//! **Time** comes from a [`Clock`]; the scheduler ([`BotRunner::tick`]) evaluates schedules
//! against it, so tests drive time with a [`ManualClock`] instead of sleeping.
//!
//! **State** (profiles, thanks, schedules, votes) is one JSON file written atomically
//! ([`state::StateFile`]). A scheduled job records the occurrence it fired *before* it posts
//! (and rolls back if posting fails), so a restart never fires it twice; occurrences missed
//! while the server was down are posted once, late, with a note, or reported as missed.
//!
//! Files: `schedule.rs` (local-time schedules), `state.rs`, `clock.rs`, one file per habit.

mod charter;
mod clock;
mod gatherings;
mod people;
mod roulette;
pub mod schedule;
pub mod state;
mod thanks;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use matrix_sdk::{
    Client, Room, SessionMeta, SessionTokens,
    authentication::matrix::MatrixSession,
    config::SyncSettings,
    deserialized_responses::RawAnySyncOrStrippedState,
    ruma::{
        EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::StateEventType,
    },
};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

pub use clock::{Clock, ManualClock, SystemClock};
use state::{Habit, State, StateFile};

use crate::{config::BotsConfig, service::Services};

/// The running bots: a sync loop answering commands and a scheduler.
pub struct BotRunner {
    bots: Arc<Bots>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the habits share: the client, the clock, the state.
pub(crate) struct Bots {
    client: Client,
    user_id: OwnedUserId,
    config: BotsConfig,
    clock: Arc<dyn Clock>,
    state: tokio::sync::Mutex<State>,
    file: StateFile,
    /// Serializes scheduler ticks (background and test-driven): one decision per occurrence.
    tick_lock: tokio::sync::Mutex<()>,
    /// The bridges: who is a bridge's ghost (`!me is @person`, see `people::merge`).
    appservices: Arc<crate::service::appservice::Appservices>,
}

/// The command message being answered.
pub(crate) struct Msg {
    pub sender: OwnedUserId,
    pub event_id: OwnedEventId,
    /// The thread the command was sent in, if any: the answer goes there.
    pub thread: Option<OwnedEventId>,
    pub dm: bool,
}

impl BotRunner {
    /// Creates the bots' user and device on the first start, restores the session, and starts
    /// the sync loop and the scheduler. `url` is the server's loopback address.
    pub async fn start(
        services: Arc<Services>,
        url: &str,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let config = services.config().bots.clone();
        schedule::parse_tz(&config.timezone)
            .map_err(|e| anyhow::anyhow!("setting `bots.timezone`: {e}"))?;
        let dir = services.config().data_dir.join("bots");
        std::fs::create_dir_all(&dir)?;
        let file = StateFile::new(&dir);
        let mut state = file.load()?;
        let user_id = services
            .users
            .user_id_for_localpart(&config.user)
            .map_err(|e| anyhow::anyhow!("setting `bots.user`: {e}"))?;
        let fresh_account = services.users.account(&user_id)?.is_none();
        if fresh_account {
            services
                .users
                .create_account(&user_id, None, false, None)
                .await?;
            info!(%user_id, "created the bots' user");
        }
        let existing = match &state.device_id {
            Some(d) => services
                .users
                .device(&user_id, d)?
                .map(|dev| (d.clone(), dev.access_token)),
            None => None,
        };
        let (device_id, token) = match existing {
            Some(d) => d,
            None => {
                // A new device needs a new crypto store: the old one belongs to another device.
                let _ = std::fs::remove_dir_all(dir.join("sdk"));
                let (d, t) = services
                    .users
                    .create_device(&user_id, None, Some("Tsunagu bots".into()), None)
                    .await?;
                state.device_id = Some(d.clone());
                file.save(&state)?;
                (d, t)
            }
        };
        let client = Client::builder()
            .homeserver_url(url)
            .sqlite_store(dir.join("sdk"), None)
            .build()
            .await?;
        client
            .restore_session(MatrixSession {
                meta: SessionMeta {
                    user_id: user_id.clone(),
                    device_id,
                },
                tokens: SessionTokens {
                    access_token: token,
                    refresh_token: None,
                },
            })
            .await?;
        if fresh_account {
            let _ = client
                .account()
                .set_display_name(Some(&config.display_name))
                .await;
        }
        let bots = Arc::new(Bots {
            client,
            user_id,
            config,
            clock,
            state: tokio::sync::Mutex::new(state),
            file,
            tick_lock: Default::default(),
            appservices: services.appservices.clone(),
        });
        let (stop, _) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(sync_loop(bots.clone(), stop.subscribe())),
            tokio::spawn(tick_loop(bots.clone(), stop.subscribe())),
        ];
        Ok(Self { bots, stop, tasks })
    }

    /// The bots' user ID.
    pub fn user_id(&self) -> &UserId {
        &self.bots.user_id
    }

    /// The bots' Matrix client.
    pub fn client(&self) -> &Client {
        &self.bots.client
    }

    /// Runs the scheduler once against the clock: invitations, reminders, notes threads,
    /// anniversaries, roulette rounds, vote deadlines.
    pub async fn tick(&self) -> anyhow::Result<()> {
        self.bots.tick().await
    }

    /// A copy of the bots' state (for inspection and tests).
    pub async fn state(&self) -> State {
        self.bots.state.lock().await.clone()
    }

    /// Stops the sync loop and the scheduler.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for mut t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}

async fn sync_loop(bots: Arc<Bots>, mut stop: watch::Receiver<bool>) {
    let settings = SyncSettings::default().timeout(Duration::from_secs(30));
    loop {
        let res = tokio::select! {
            r = bots.client.sync_once(settings.clone()) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match res {
            Ok(response) => bots.process(response).await,
            Err(e) => {
                warn!("bots: sync failed: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

async fn tick_loop(bots: Arc<Bots>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(bots.config.tick_seconds.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = bots.tick().await {
            warn!("bots: scheduler: {e:#}");
        }
    }
}

/// HTML-escapes text from members.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Bots {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Writes the state file; the caller holds the state lock.
    pub(crate) fn save(&self, state: &State) {
        if let Err(e) = self.file.save(state) {
            warn!("bots: cannot save state: {e:#}");
        }
    }

    /// The community's time zone in a room.
    pub(crate) fn tz(&self, state: &State, room: &RoomId) -> Tz {
        state
            .rooms
            .get(room)
            .and_then(|r| r.timezone.as_deref())
            .unwrap_or(&self.config.timezone)
            .parse()
            .unwrap_or(chrono_tz::UTC)
    }

    async fn process(&self, response: matrix_sdk::sync::SyncResponse) {
        for room_id in response.rooms.invited.keys() {
            match self.client.join_room_by_id(room_id).await {
                Ok(_) => info!(%room_id, "bots joined on invitation"),
                Err(e) => warn!(%room_id, "bots: cannot join: {e}"),
            }
        }
        for (room_id, update) in response.rooms.joined {
            let Some(room) = self.client.get_room(&room_id) else {
                continue;
            };
            for ev in update.timeline.events {
                let Ok(v) = ev.raw().deserialize_as::<Value>() else {
                    continue;
                };
                if let Err(e) = self.handle_event(&room, &v).await {
                    warn!(%room_id, "bots: {e:#}");
                }
            }
        }
    }

    async fn handle_event(&self, room: &Room, v: &Value) -> anyhow::Result<()> {
        let Some(sender) = v["sender"].as_str().and_then(|s| UserId::parse(s).ok()) else {
            return Ok(());
        };
        let Some(event_id) = v["event_id"].as_str().and_then(|s| EventId::parse(s).ok()) else {
            return Ok(());
        };
        let content = &v["content"];
        let ts = v["origin_server_ts"].as_i64().unwrap_or(0);
        match v["type"].as_str().unwrap_or_default() {
            "m.room.member" => {
                people::on_member(self, room, v, &event_id).await?;
            }
            _ if sender == self.user_id => {}
            "m.room.message" => {
                let body = content["body"].as_str().unwrap_or_default();
                let rel = &content["m.relates_to"];
                if !body.starts_with('!') || rel["rel_type"] == "m.replace" {
                    return Ok(());
                }
                {
                    let mut state = self.state.lock().await;
                    if !state.first_time(&event_id) {
                        return Ok(());
                    }
                    self.save(&state);
                }
                let thread = (rel["rel_type"] == "m.thread")
                    .then(|| {
                        rel["event_id"]
                            .as_str()
                            .and_then(|e| EventId::parse(e).ok())
                    })
                    .flatten();
                let msg = Msg {
                    sender,
                    event_id,
                    thread,
                    dm: self.is_dm(room).await,
                };
                self.command(room, &msg, body.trim()).await?;
            }
            "m.reaction" => gatherings::on_reaction(self, room, &sender, &event_id, content).await,
            "m.room.redaction" => gatherings::on_redaction(self, v).await,
            "org.matrix.msc3381.poll.response" | "m.poll.response" => {
                charter::on_vote(self, &sender, ts, content).await
            }
            _ => {}
        }
        Ok(())
    }

    async fn command(&self, room: &Room, msg: &Msg, body: &str) -> anyhow::Result<()> {
        let (name, args) = body[1..]
            .split_once(char::is_whitespace)
            .map(|(n, a)| (n, a.trim()))
            .unwrap_or((&body[1..], ""));
        let name = name.to_lowercase();
        if name == "me"
            && let Some(person) = args.strip_prefix("is ")
        {
            // A bridge saying one of its ghosts is a person (after they proved it): heard in
            // any room the bots are in, whatever habits are on there.
            return people::merge(self, room, msg, person).await;
        }
        let habit = match name.as_str() {
            "help" => return self.help(room, msg).await,
            "bots" => return self.bots_command(room, msg, args).await,
            "thanks" => Habit::Thanks,
            "me" | "whois" | "ask" => Habit::People,
            "gathering" | "gatherings" => Habit::Gatherings,
            "charter" | "propose" | "close" => Habit::Charter,
            "roulette" => Habit::Roulette,
            _ => {
                if msg.dm || self.any_enabled(room.room_id()).await {
                    self.reply(
                        room,
                        msg,
                        &format!("I don't know <code>!{}</code>. <code>!help</code> lists what I can do.", esc(&name)),
                        &format!("I don't know !{name}. !help lists what I can do."),
                    )
                    .await?;
                }
                return Ok(());
            }
        };
        // In a direct chat with the bots, the personal commands work without enabling.
        let personal = msg.dm && matches!(habit, Habit::People | Habit::Thanks);
        if !personal && !self.state.lock().await.enabled(room.room_id(), habit) {
            let h = habit.name();
            return self
                .reply(
                    room,
                    msg,
                    &format!("The <b>{h}</b> habit is off in this room. A moderator can turn it on with <code>!bots enable {h}</code>."),
                    &format!("The {h} habit is off in this room. A moderator can turn it on with !bots enable {h}."),
                )
                .await;
        }
        match name.as_str() {
            "thanks" => thanks::command(self, room, msg, args).await,
            "me" => people::me(self, room, msg, args).await,
            "whois" => people::whois(self, room, msg, args).await,
            "ask" => people::ask(self, room, msg, args).await,
            "gathering" | "gatherings" => gatherings::command(self, room, msg, args).await,
            "charter" => charter::show(self, room, msg).await,
            "propose" => charter::propose(self, room, msg, args).await,
            "close" => charter::close_command(self, room, msg, args).await,
            _ => roulette::command(self, room, msg, args).await,
        }
    }

    async fn any_enabled(&self, room: &RoomId) -> bool {
        self.state
            .lock()
            .await
            .rooms
            .get(room)
            .is_some_and(|r| !r.enabled.is_empty())
    }

    async fn is_dm(&self, room: &Room) -> bool {
        room.joined_members_count() <= 2
    }

    async fn help(&self, room: &Room, msg: &Msg) -> anyhow::Result<()> {
        let state = self.state.lock().await;
        let on = |h: Habit| {
            if state.enabled(room.room_id(), h) {
                " (on here)"
            } else {
                ""
            }
        };
        let sections = [
            (
                "bots",
                "",
                vec![
                    ("!help", "this list"),
                    ("!bots", "which habits are on in this room"),
                    (
                        "!bots enable|disable gatherings|people|thanks|charter|roulette",
                        "moderators turn a habit on or off",
                    ),
                    (
                        "!bots timezone Europe/Berlin",
                        "moderators set the community's time zone",
                    ),
                    ("!bots leave", "moderators ask me to leave the room"),
                ],
            ),
            (
                "people",
                on(Habit::People),
                vec![
                    (
                        "!me cares about … / working on … / can help with … / org … / former org …",
                        "describe yourself, in your own words (all optional; `-` clears one)",
                    ),
                    ("!me", "show your entry; !me clear forgets it"),
                    ("!whois @user", "what a member says about themselves"),
                    ("!ask <topic>", "who to ask about something, and why"),
                ],
            ),
            (
                "thanks",
                on(Habit::Thanks),
                vec![
                    ("!thanks @user for …", "say thank you, out loud"),
                    ("!thanks mine", "what others thanked you for"),
                ],
            ),
            (
                "gatherings",
                on(Habit::Gatherings),
                vec![
                    (
                        "!gathering every 2nd thursday 19:00",
                        "a regular meetup without an agenda (also `every thursday`, `every other friday`, `on 2026-12-03 19:00`)",
                    ),
                    ("!gatherings", "list them; !gathering cancel <n> stops one"),
                ],
            ),
            (
                "charter",
                on(Habit::Charter),
                vec![
                    ("!charter", "the community's rules"),
                    (
                        "!propose rule <text> / moderator @user / power @user <level>",
                        "put a change to a vote",
                    ),
                    ("!close", "close the open vote now (proposer or moderator)"),
                ],
            ),
            (
                "roulette",
                on(Habit::Roulette),
                vec![(
                    "!roulette join / leave",
                    "meet someone new for a coffee, now and then",
                )],
            ),
        ];
        drop(state);
        let mut html = String::from("<b>What I can do</b>");
        let mut plain = String::from("What I can do");
        for (title, on, cmds) in sections {
            html.push_str(&format!("<br><i>{title}{on}</i><ul>"));
            plain.push_str(&format!("\n{title}{on}:"));
            for (c, what) in cmds {
                html.push_str(&format!("<li><code>{}</code>: {}</li>", esc(c), esc(what)));
                plain.push_str(&format!("\n  {c}: {what}"));
            }
            html.push_str("</ul>");
        }
        self.reply(room, msg, &html, &plain).await
    }

    async fn bots_command(&self, room: &Room, msg: &Msg, args: &str) -> anyhow::Result<()> {
        let mut words = args.split_whitespace();
        let verb = words.next().unwrap_or("").to_lowercase();
        if verb.is_empty() {
            let state = self.state.lock().await;
            let on: Vec<&str> = Habit::ALL
                .into_iter()
                .filter(|h| state.enabled(room.room_id(), *h))
                .map(Habit::name)
                .collect();
            let tz = self.tz(&state, room.room_id());
            drop(state);
            let text = if on.is_empty() {
                format!(
                    "No habits are on in this room yet (time zone {tz}). A moderator can say !bots enable gatherings|people|thanks|charter|roulette."
                )
            } else {
                format!("On in this room: {} (time zone {tz}).", on.join(", "))
            };
            return self.reply(room, msg, &esc(&text), &text).await;
        }
        if !self.is_moderator(room, &msg.sender).await? {
            return self
                .reply(
                    room,
                    msg,
                    "Only moderators can change which habits I keep here.",
                    "Only moderators can change which habits I keep here.",
                )
                .await;
        }
        match verb.as_str() {
            "enable" | "disable" => {
                let names: Vec<String> =
                    words.map(|w| w.trim_matches(',').to_lowercase()).collect();
                let habits: Vec<Habit> = if names.iter().any(|n| n == "all") {
                    Habit::ALL.to_vec()
                } else {
                    let mut hs = Vec::new();
                    for n in &names {
                        match Habit::parse(n) {
                            Some(h) => hs.push(h),
                            None => {
                                let t = format!(
                                    "I don't know the habit `{n}`: choose from gatherings, people, thanks, charter, roulette (or all)."
                                );
                                return self.reply(room, msg, &esc(&t), &t).await;
                            }
                        }
                    }
                    hs
                };
                if habits.is_empty() {
                    let t = "Say which: !bots enable gatherings|people|thanks|charter|roulette";
                    return self.reply(room, msg, &esc(t), t).await;
                }
                let now = self.now().timestamp();
                let mut state = self.state.lock().await;
                let settings = state.room(room.room_id());
                for h in &habits {
                    if verb == "enable" {
                        settings.enabled.entry(*h).or_insert(now);
                        if *h == Habit::Roulette && settings.roulette.since == 0 {
                            settings.roulette.since = now;
                        }
                    } else {
                        settings.enabled.remove(h);
                    }
                }
                self.save(&state);
                drop(state);
                let list = habits
                    .iter()
                    .map(|h| h.name())
                    .collect::<Vec<_>>()
                    .join(", ");
                let t = if verb == "enable" {
                    format!("Turned on: {list}. !help lists the commands.")
                } else {
                    format!("Turned off: {list}.")
                };
                self.reply(room, msg, &esc(&t), &t).await
            }
            "timezone" => {
                let name = words.next().unwrap_or("");
                match schedule::parse_tz(name) {
                    Ok(tz) => {
                        let mut state = self.state.lock().await;
                        state.room(room.room_id()).timezone = Some(tz.name().to_owned());
                        self.save(&state);
                        let t = format!("This community's time is now {tz}.");
                        drop(state);
                        self.reply(room, msg, &esc(&t), &t).await
                    }
                    Err(e) => self.reply(room, msg, &esc(&e), &e).await,
                }
            }
            "leave" => {
                let t = "Goodbye! Invite me again whenever you like.";
                self.notice(room, &esc(t), t, None, &[]).await?;
                {
                    let mut state = self.state.lock().await;
                    state.rooms.remove(room.room_id());
                    self.save(&state);
                }
                room.leave().await?;
                Ok(())
            }
            _ => {
                let t =
                    "Try !bots, !bots enable …, !bots disable …, !bots timezone …, !bots leave.";
                self.reply(room, msg, &esc(t), t).await
            }
        }
    }

    /// Answers a command: in the command's thread (or a new thread under it) so the room stays
    /// calm; in a direct chat, plainly.
    pub(crate) async fn reply(
        &self,
        room: &Room,
        msg: &Msg,
        html: &str,
        plain: &str,
    ) -> anyhow::Result<()> {
        let thread = if msg.dm {
            msg.thread.clone()
        } else {
            Some(msg.thread.clone().unwrap_or_else(|| msg.event_id.clone()))
        };
        self.notice(room, html, plain, thread.as_deref(), &[])
            .await?;
        Ok(())
    }

    /// Posts an `m.notice` with an HTML and a plain body, optionally in a thread, mentioning
    /// `mentions`. matrix-sdk encrypts it when the room is encrypted.
    pub(crate) async fn notice(
        &self,
        room: &Room,
        html: &str,
        plain: &str,
        thread: Option<&EventId>,
        mentions: &[OwnedUserId],
    ) -> anyhow::Result<OwnedEventId> {
        let mut content = json!({
            "msgtype": "m.notice",
            "body": plain,
            "format": "org.matrix.custom.html",
            "formatted_body": html,
            "m.mentions": { "user_ids": mentions },
        });
        if let Some(root) = thread {
            content["m.relates_to"] = json!({
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": true,
                "m.in_reply_to": { "event_id": root },
            });
        }
        Ok(room
            .send_raw("m.room.message", content)
            .await?
            .response
            .event_id)
    }

    /// A member's display name in a room (their localpart when unknown).
    pub(crate) async fn name(&self, room: &Room, user: &UserId) -> String {
        room.get_member_no_sync(user)
            .await
            .ok()
            .flatten()
            .and_then(|m| m.display_name().map(str::to_owned))
            .unwrap_or_else(|| user.localpart().to_owned())
    }

    /// A mention link (HTML) for a member.
    pub(crate) async fn pill(&self, room: &Room, user: &UserId) -> String {
        format!(
            "<a href=\"https://matrix.to/#/{user}\">{}</a>",
            esc(&self.name(room, user).await)
        )
    }

    /// The content of a state event as the bots' client has synced it.
    pub(crate) async fn state_content(
        &self,
        room: &Room,
        event_type: &str,
    ) -> anyhow::Result<Option<Value>> {
        Ok(self
            .state_event(room, event_type)
            .await?
            .map(|v| v["content"].clone()))
    }

    pub(crate) async fn state_event(
        &self,
        room: &Room,
        event_type: &str,
    ) -> anyhow::Result<Option<Value>> {
        Ok(
            match room
                .get_state_event(StateEventType::from(event_type), "")
                .await?
            {
                Some(RawAnySyncOrStrippedState::Sync(raw)) => Some(raw.deserialize_as::<Value>()?),
                Some(RawAnySyncOrStrippedState::Stripped(raw)) => {
                    Some(raw.deserialize_as::<Value>()?)
                }
                None => None,
            },
        )
    }

    /// The room's power: levels by user, with room-v12 creators above everyone.
    pub(crate) async fn power(&self, room: &Room) -> anyhow::Result<charter::Power> {
        let create = self.state_event(room, "m.room.create").await?;
        let levels = self
            .state_content(room, "m.room.power_levels")
            .await?
            .unwrap_or_default();
        Ok(charter::Power::new(create.as_ref(), levels))
    }

    /// Moderator = power level >= the room's `state_default` (50 unless changed): who may
    /// change the room's state may change which habits the bots keep in it.
    pub(crate) async fn is_moderator(&self, room: &Room, user: &UserId) -> anyhow::Result<bool> {
        let power = self.power(room).await?;
        Ok(power.level(user) >= power.moderator_level())
    }

    /// Joined members other than the bots.
    pub(crate) async fn members(&self, room: &Room) -> anyhow::Result<Vec<OwnedUserId>> {
        Ok(room
            .members_no_sync(matrix_sdk::RoomMemberships::JOIN)
            .await?
            .into_iter()
            .map(|m| m.user_id().to_owned())
            .filter(|u| *u != self.user_id)
            .collect())
    }

    /// One scheduler pass; serialized so an occurrence is decided once.
    async fn tick(&self) -> anyhow::Result<()> {
        let _guard = self.tick_lock.lock().await;
        gatherings::tick(self).await?;
        roulette::tick(self).await?;
        charter::tick(self).await?;
        Ok(())
    }

    /// A joined room by ID.
    pub(crate) fn room(&self, room: &OwnedRoomId) -> Option<Room> {
        self.client
            .get_room(room)
            .filter(|r| r.state() == matrix_sdk::RoomState::Joined)
    }
}

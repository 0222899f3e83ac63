//! The bridge: portal rooms for multi-user chats, ghosts for XMPP occupants, puppets in the
//! chats for Matrix users, and the translation of messages, edits, replies and presence both
//! ways.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use tokio::sync::oneshot;
use tsunagu_appservice::{AdminRoom, Client, Handler, Intent, Store, claims};

use crate::{
    component::{Component, Event},
    config::Config,
    jid::{Jid, localpart_for, puppet_node},
    xml::Element,
};

/// Namespaces of the XMPP payloads the bridge reads and writes.
pub mod xmlns {
    /// Joining a multi-user chat (XEP-0045).
    pub const MUC: &str = "http://jabber.org/protocol/muc";
    /// Occupant details in a chat's presence (XEP-0045).
    pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
    /// Last message correction (XEP-0308).
    pub const CORRECT: &str = "urn:xmpp:message-correct:0";
    /// Message replies (XEP-0461).
    pub const REPLY: &str = "urn:xmpp:reply:0";
    /// Fallback indication (XEP-0428).
    pub const FALLBACK: &str = "urn:xmpp:fallback:0";
    /// Delayed delivery: history a chat replays (XEP-0203).
    pub const DELAY: &str = "urn:xmpp:delay";
    /// Message retraction (XEP-0424).
    pub const RETRACT: &str = "urn:xmpp:message-retract:1";
    /// Unique and stable stanza IDs (XEP-0359).
    pub const SID: &str = "urn:xmpp:sid:0";
    /// HTTP file upload (XEP-0363).
    pub const UPLOAD: &str = "urn:xmpp:http:upload:0";
    /// Out-of-band data (XEP-0066): a file's URL beside the body.
    pub const OOB: &str = "jabber:x:oob";
}

/// Store namespaces.
mod ns {
    /// Chat (bare JID) → portal room ID.
    pub const PORTAL: &str = "portal";
    /// Portal room ID → chat (bare JID).
    pub const ROOM: &str = "room";
    /// `{chat}\t{Matrix user}` → the nick of the user's puppet in the chat.
    pub const PUPPET: &str = "puppet";
    /// `{chat}\t{XMPP message id}` → the Matrix event it became (or came from).
    pub const MESSAGE: &str = "message";
    /// Matrix event ID → `{chat}\t{XMPP message id}\t{nick of its author}`.
    pub const EVENT: &str = "event";
    /// Chat → Unix time of the last message seen there (history is asked from then on).
    pub const SEEN: &str = "seen";
}

/// The resource of every JID the bridge speaks as.
const RESOURCE: &str = "tsunagu";
/// History replayed on a rejoin starts this long before the last message seen, so messages
/// of the same second are not missed (repeats are recognised by their IDs).
const HISTORY_MARGIN_SECS: u64 = 5;

/// An occupant of a chat, as its presence says.
#[derive(Clone, Debug)]
struct Occupant {
    /// The ghost user that shows them on Matrix.
    ghost: String,
    /// Their real bare JID, when the chat shows it.
    jid: Option<String>,
}

/// The bridge, shared by the appservice handler and the XMPP event loop.
pub struct Bridge {
    config: Config,
    client: Client,
    /// Acts as people who claimed their address (double puppeting), if configured.
    double: Option<Client>,
    store: Arc<Store>,
    xmpp: Arc<Component>,
    admin_room: AdminRoom,
    /// `(chat, nick)` → occupant, for occupants that are not ours.
    occupants: Mutex<HashMap<(String, String), Occupant>>,
    /// Chats that have confirmed the bridge's own join.
    joined: Mutex<HashSet<String>>,
    /// `(chat, nick)` of the puppets the chat has confirmed.
    puppets_in: Mutex<HashSet<(String, String)>>,
    /// Message IDs sent to a chat and not yet echoed back, with who waits for the echo.
    pending: Mutex<HashMap<String, oneshot::Sender<Result<(), String>>>>,
    /// IQs sent, by ID, waiting for their answer from the JID they went to.
    iqs: Mutex<HashMap<String, (String, oneshot::Sender<Element>)>>,
    /// HTTP for files (uploads to the XMPP server, downloads from it); no redirects.
    http: reqwest::Client,
    /// Ghost user → the display name last set.
    names: Mutex<HashMap<String, String>>,
}

/// The Unix time now.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (XEP-0082).
pub fn format_time(t: u64) -> String {
    let (days, secs) = (t / 86_400, t % 86_400);
    let (y, m, d) = tsunagu_appservice::civil_date(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The Unix time of an XEP-0082 date-time (`2026-12-03T07:00:00Z`, fractions and offsets
/// taken); `None` if it is not one.
pub fn parse_time(s: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if s.get(4..5) != Some("-") || s.get(10..11) != Some("T") || !(1..=12).contains(&m) {
        return None;
    }
    let rest = s[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match rest {
        "Z" | "" => 0,
        r if r.len() == 6 => {
            let sign = if r.starts_with('-') { -1 } else { 1 };
            sign * (r.get(1..3)?.parse::<i64>().ok()? * 3600
                + r.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss - offset).ok()
}

/// The status codes of an occupant presence (`<status code='110'/>` …).
fn status_codes(x: &Element) -> Vec<&str> {
    x.children
        .iter()
        .filter(|c| c.name == "status")
        .filter_map(|c| c.get("code"))
        .collect()
}

/// Removes the part of `body` that a XEP-0428 fallback marks as there for a reply (code
/// points `start..end`); without such a mark, leading `> ` quote lines.
pub fn strip_reply_fallback(message: &Element, body: &str) -> String {
    let marked = message.children.iter().find(|c| {
        c.name == "fallback"
            && c.ns() == Some(xmlns::FALLBACK)
            && c.get("for") == Some(xmlns::REPLY)
    });
    if let Some(range) = marked.and_then(|f| f.child("body", None)) {
        let start: usize = range.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
        let end: usize = range.get("end").and_then(|s| s.parse().ok()).unwrap_or(0);
        if start <= end {
            let chars: Vec<char> = body.chars().collect();
            if end <= chars.len() {
                return chars[..start].iter().chain(&chars[end..]).collect();
            }
        }
    }
    let mut lines = body.lines().peekable();
    let mut quoted = false;
    while lines.peek().is_some_and(|l| l.starts_with('>')) {
        lines.next();
        quoted = true;
    }
    if quoted {
        lines.collect::<Vec<_>>().join("\n")
    } else {
        body.to_owned()
    }
}

/// The chat's own ID for a message (XEP-0359 `stanza-id` set `by` the chat).
fn stanza_id_of<'a>(m: &'a Element, muc: &str) -> Option<&'a str> {
    m.children
        .iter()
        .find(|c| c.name == "stanza-id" && c.ns() == Some(xmlns::SID) && c.get("by") == Some(muc))
        .and_then(|c| c.get("id"))
}

/// Whether `url` is under one of `prefixes`: the same scheme, host and port, a path under the
/// prefix's, and no user name (`https://host@elsewhere/` is elsewhere).
fn under_prefix(prefixes: &[String], url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    prefixes.iter().any(|prefix| {
        reqwest::Url::parse(prefix).is_ok_and(|p| {
            p.scheme() == url.scheme()
                && p.host_str() == url.host_str()
                && p.port_or_known_default() == url.port_or_known_default()
                && under_dir(url.path(), p.path())
                && url.username().is_empty()
                && !url.path().split('/').any(|s| s == ".." || s == "%2e%2e")
        })
    })
}

/// Whether `path` is `dir` or below it (`/share` holds `/share/a`, not `/shared`).
fn under_dir(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether a URL is `http://` or `https://`.
fn is_http(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// A file's name from its URL: the last path segment, percent-decoded (`file` when empty).
fn file_name_of(url: &str) -> String {
    let last = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.path_segments()?.next_back().map(str::to_owned))
        .unwrap_or_default();
    let bytes = last.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    let name: String = String::from_utf8_lossy(&out)
        .chars()
        .filter(|c| !c.is_control() && *c != '/')
        .collect();
    if name.trim().is_empty() {
        "file".into()
    } else {
        name
    }
}

/// The body of a Matrix message without its reply fallback (`> <@user> …` lines, then an
/// empty line), as older clients still send it.
fn strip_matrix_fallback(content: &Value, body: &str) -> String {
    if content["m.relates_to"]["m.in_reply_to"].is_object()
        && body.starts_with("> ")
        && let Some((_, rest)) = body.split_once("\n\n")
    {
        return rest.to_owned();
    }
    body.to_owned()
}

impl Bridge {
    /// A bridge; call [`Bridge::setup`] before use.
    pub fn new(
        config: Config,
        client: Client,
        double: Option<Client>,
        store: Arc<Store>,
        xmpp: Arc<Component>,
    ) -> Self {
        Self {
            config,
            client,
            double,
            store,
            xmpp,
            admin_room: AdminRoom::default(),
            occupants: Mutex::default(),
            joined: Mutex::default(),
            puppets_in: Mutex::default(),
            pending: Mutex::default(),
            iqs: Mutex::default(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap_or_default(),
            names: Mutex::default(),
        }
    }

    /// The bridge's own JID, through which it reads every chat.
    fn bot_jid(&self) -> String {
        format!("bridge@{}/{RESOURCE}", self.xmpp.domain())
    }

    /// The puppet JID of a Matrix user.
    fn puppet_jid(&self, user: &str) -> String {
        format!("{}@{}/{RESOURCE}", puppet_node(user), self.xmpp.domain())
    }

    /// Registers the bot, finds or creates the admin room and the portals of the configured
    /// chats.
    pub async fn setup(&self) -> anyhow::Result<()> {
        self.admin_room
            .setup(
                &self.client,
                &self.store,
                "XMPP bridge",
                "Bridge status and commands: !link room@conference.example.org, !unlink room@conference.example.org, !help",
                self.config.admin_user.as_deref(),
                self.config.admin_room.as_deref(),
            )
            .await?;
        let invite: Vec<String> = self.config.admin_user.iter().cloned().collect();
        for muc in self.config.xmpp.mucs.clone() {
            self.ensure_portal(&muc, &invite).await?;
        }
        Ok(())
    }

    /// Posts a notice in the admin room (logged if that fails).
    pub async fn admin_notice(&self, text: &str) {
        self.admin_room.notice(&self.client, text).await
    }

    /// The portal room of a chat, created (and the chat joined) when missing.
    pub async fn ensure_portal(&self, muc: &str, invite: &[String]) -> anyhow::Result<String> {
        let muc = Jid::parse(muc)
            .filter(|j| j.node.is_some())
            .with_context(|| format!("{muc:?} is not a chat address"))?
            .bare();
        if let Some(room) = self.store.get(ns::PORTAL, &muc)? {
            for user in invite {
                let _ = self.client.bot().invite(&room, user).await;
            }
            return Ok(room);
        }
        let node = muc.split('@').next().unwrap_or(&muc);
        let alias = format!("{}{}", self.config.user_prefix, localpart_for(node));
        let body = json!({
            "preset": "public_chat",
            "name": node,
            "topic": format!("Bridged with the XMPP chat {muc}"),
            "room_alias_name": alias,
            "invite": invite,
        });
        let room = self
            .client
            .bot()
            .create_portal(body)
            .await
            .with_context(|| format!("creating the portal of {muc}"))?;
        self.store
            .set_all(&[(ns::ROOM, &room, &muc), (ns::PORTAL, &muc, &room)])?;
        tracing::info!("portal of {muc}: {room}");
        if self.xmpp.is_ready() {
            self.join_muc(&muc).await;
        }
        Ok(room)
    }

    /// The bridge's own presence into a chat: joins it, asking for the history since the
    /// last message seen (none on the first join).
    async fn join_muc(&self, muc: &str) {
        let seen = self.store.get(ns::SEEN, muc).ok().flatten();
        let history = match seen.and_then(|s| s.parse::<u64>().ok()) {
            Some(t) => Element::new("history")
                .attr("since", format_time(t.saturating_sub(HISTORY_MARGIN_SECS))),
            None => Element::new("history").attr("maxstanzas", "0"),
        };
        let presence = Element::new("presence")
            .attr("from", self.bot_jid())
            .attr("to", format!("{muc}/{}", self.config.xmpp.nick))
            .with(Element::new("x").attr("xmlns", xmlns::MUC).with(history));
        self.xmpp.send_now(&presence).await;
    }

    /// A puppet's presence into a chat (a join, or a nick change when already in).
    async fn send_puppet_presence(&self, muc: &str, user: &str, nick: &str) {
        let presence = Element::new("presence")
            .attr("from", self.puppet_jid(user))
            .attr("to", format!("{muc}/{nick}"))
            .with(
                Element::new("x")
                    .attr("xmlns", xmlns::MUC)
                    .with(Element::new("history").attr("maxstanzas", "0")),
            );
        self.xmpp.send_now(&presence).await;
    }

    /// After (re)connecting: the bridge and every puppet rejoin their chats, then queued
    /// Matrix messages may flow.
    async fn on_connected(&self) -> anyhow::Result<()> {
        self.puppets_in.lock().unwrap().clear();
        self.occupants.lock().unwrap().clear();
        self.joined.lock().unwrap().clear();
        for (muc, _) in self.store.entries(ns::PORTAL)? {
            // Out first: a chat that still counts the bridge in (it may not have noticed the
            // bridge was away) would take the join as a presence update and replay nothing.
            let leave = Element::new("presence")
                .attr("from", self.bot_jid())
                .attr("to", format!("{muc}/{}", self.config.xmpp.nick))
                .attr("type", "unavailable");
            self.xmpp.send_now(&leave).await;
            self.join_muc(&muc).await;
        }
        for (k, nick) in self.store.entries(ns::PUPPET)? {
            if let Some((muc, user)) = k.split_once('\t') {
                self.send_puppet_presence(muc, user, &nick).await;
            }
        }
        self.xmpp.set_ready();
        Ok(())
    }

    /// Joins every linked chat the bridge is not in (yet), every `rejoin_interval_ms`, forever:
    /// a chat may have refused it (locked, or not there yet) or dropped it.
    pub async fn keep_joined(&self) {
        let every = Duration::from_millis(self.config.xmpp.rejoin_interval_ms.max(100));
        loop {
            tokio::time::sleep(every).await;
            if !self.xmpp.is_ready() {
                continue;
            }
            let portals = self.store.entries(ns::PORTAL).unwrap_or_default();
            for (muc, _) in portals {
                if !self.joined.lock().unwrap().contains(&muc) {
                    tracing::info!("not in {muc}: joining again");
                    self.join_muc(&muc).await;
                }
            }
        }
    }

    /// Whether a Matrix user is one of ours (the bot or a ghost).
    fn is_ours(&self, user_id: &str) -> bool {
        user_id == self.client.bot_id()
            || (user_id.starts_with(&format!("@{}", self.config.user_prefix))
                && user_id.ends_with(&format!(":{}", self.config.server_name)))
    }

    /// Whether `nick` in `muc` is the bridge itself or one of its puppets.
    fn is_our_nick(&self, muc: &str, nick: &str) -> bool {
        nick == self.config.xmpp.nick
            || self
                .store
                .entries(ns::PUPPET)
                .unwrap_or_default()
                .iter()
                .any(|(k, n)| n == nick && k.split_once('\t').is_some_and(|(m, _)| m == muc))
    }

    /// The ghost of an occupant: keyed by their real JID when the chat shows it, else by
    /// their address in the chat; registered and named after the nick.
    async fn ghost(&self, muc: &str, nick: &str, real_jid: Option<&str>) -> anyhow::Result<Intent> {
        let known = self
            .occupants
            .lock()
            .unwrap()
            .get(&(muc.to_owned(), nick.to_owned()))
            .cloned();
        let user = match (known, real_jid) {
            (Some(o), None) => o.ghost,
            (_, Some(jid)) => self.client.user_id(&format!(
                "{}{}",
                self.config.user_prefix,
                localpart_for(&Jid::parse(jid).map(|j| j.bare()).unwrap_or_default())
            )),
            (None, None) => self.client.user_id(&format!(
                "{}{}",
                self.config.user_prefix,
                localpart_for(&format!("{muc}/{nick}"))
            )),
        };
        let intent = self.client.intent(&user);
        let named = self.names.lock().unwrap().get(&user) == Some(&nick.to_owned());
        if !named {
            intent.ensure_registered().await?;
            intent.set_display_name(nick).await?;
            self.names
                .lock()
                .unwrap()
                .insert(user.clone(), nick.to_owned());
        }
        Ok(intent)
    }

    /// Handles what the XMPP connection reports.
    pub async fn on_xmpp(&self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Connected => {
                self.admin_notice("Connected to the XMPP server.").await;
                self.on_connected().await
            }
            Event::Disconnected(reason) => {
                self.admin_notice(&format!("Disconnected from the XMPP server: {reason}"))
                    .await;
                Ok(())
            }
            Event::Stanza(s) => match s.name.as_str() {
                "presence" => self.on_presence(&s).await,
                "message" => self.on_message(&s).await,
                "iq" => {
                    self.on_iq(&s).await;
                    Ok(())
                }
                _ => Ok(()),
            },
        }
    }

    /// Answers IQs: pings and anything else with `service-unavailable`, as RFC 6120 wants.
    async fn on_iq(&self, iq: &Element) {
        let kind = iq.get("type").unwrap_or_default();
        if kind != "get" && kind != "set" {
            return;
        }
        let mut answer = Element::new("iq")
            .attr(
                "type",
                if kind == "get" && iq.child("ping", Some("urn:xmpp:ping")).is_some() {
                    "result"
                } else {
                    "error"
                },
            )
            .attr("id", iq.get("id").unwrap_or_default());
        if let Some(to) = iq.get("to") {
            answer = answer.attr("from", to);
        }
        if let Some(from) = iq.get("from") {
            answer = answer.attr("to", from);
        }
        if answer.get("type") == Some("error") {
            answer = answer.with(
                Element::new("error").attr("type", "cancel").with(
                    Element::new("service-unavailable")
                        .attr("xmlns", "urn:ietf:params:xml:ns:xmpp-stanzas"),
                ),
            );
        }
        self.xmpp.send_now(&answer).await;
    }

    /// A presence from a chat: occupants joining, leaving, changing nick; our own joins.
    async fn on_presence(&self, p: &Element) -> anyhow::Result<()> {
        let (Some(from), Some(to)) = (p.get("from").and_then(Jid::parse), p.get("to")) else {
            return Ok(());
        };
        let Some(nick) = from.resource.clone() else {
            return Ok(());
        };
        let muc = from.bare();
        let kind = p.get("type").unwrap_or("available");
        if kind == "error" {
            return self.on_presence_error(&muc, &nick, to, p).await;
        }
        if to != self.bot_jid() {
            // The same presence, as each puppet gets it; the bridge's copy is enough.
            return Ok(());
        }
        let Some(room) = self.store.get(ns::PORTAL, &muc)? else {
            return Ok(());
        };
        let x = p.child("x", Some(xmlns::MUC_USER));
        let codes = x.map(status_codes).unwrap_or_default();
        let item = x.and_then(|x| x.child("item", None));
        let real_jid = item.and_then(|i| i.get("jid"));
        let ours = real_jid
            .and_then(Jid::parse)
            .is_some_and(|j| j.domain == self.xmpp.domain())
            || codes.contains(&"110");
        if codes.contains(&"201") && codes.contains(&"110") {
            // The bridge's join created the chat, which stays locked until its owner accepts
            // the default configuration (an "instant room", XEP-0045 §10.1.2).
            let accept = Element::new("iq")
                .attr("from", to)
                .attr("to", muc.as_str())
                .attr("type", "set")
                .attr("id", format!("instant-{}", now()))
                .with(
                    Element::new("query")
                        .attr("xmlns", "http://jabber.org/protocol/muc#owner")
                        .with(
                            Element::new("x")
                                .attr("xmlns", "jabber:x:data")
                                .attr("type", "submit"),
                        ),
                );
            self.xmpp.send_now(&accept).await;
        }
        if nick == self.config.xmpp.nick && to == self.bot_jid() {
            let mut joined = self.joined.lock().unwrap();
            if kind == "unavailable" {
                joined.remove(&muc);
            } else if codes.contains(&"110") {
                joined.insert(muc.clone());
                if self.store.get(ns::SEEN, &muc)?.is_none() {
                    // From the first join on, what is said while the bridge is away is
                    // replayed when it is back.
                    self.store.set(ns::SEEN, &muc, &now().to_string())?;
                }
            }
        }
        if ours || self.is_our_nick(&muc, &nick) {
            let mut puppets = self.puppets_in.lock().unwrap();
            if kind == "unavailable" {
                puppets.remove(&(muc.clone(), nick.clone()));
            } else {
                puppets.insert((muc.clone(), nick.clone()));
            }
            return Ok(());
        }
        let key = (muc.clone(), nick.clone());
        if kind == "unavailable" {
            let ghost = self.ghost(&muc, &nick, real_jid).await?;
            let gone = self.occupants.lock().unwrap().remove(&key);
            if codes.contains(&"303")
                && let Some(new) = item.and_then(|i| i.get("nick"))
            {
                // A nick change: the same ghost, renamed; its next presence names it.
                let jid = real_jid.and_then(Jid::parse).map(|j| j.bare());
                let occupant = gone.unwrap_or_else(|| Occupant {
                    ghost: ghost.user_id().to_owned(),
                    jid,
                });
                self.occupants
                    .lock()
                    .unwrap()
                    .insert((muc.clone(), new.to_owned()), occupant);
                return Ok(());
            }
            let jid = real_jid.and_then(Jid::parse).map(|j| j.bare());
            let linked = match &jid {
                Some(jid) => claims::linked_user(&self.store, jid)?.is_some(),
                None => false,
            };
            if !(linked && self.double.is_some()) {
                ghost.leave(&room).await?;
            }
            return Ok(());
        }
        let ghost = self.ghost(&muc, &nick, real_jid).await?;
        let jid = real_jid.and_then(Jid::parse).map(|j| j.bare());
        let linked = match &jid {
            Some(jid) => claims::linked_user(&self.store, jid)?,
            None => None,
        };
        self.occupants.lock().unwrap().insert(
            key,
            Occupant {
                ghost: ghost.user_id().to_owned(),
                jid,
            },
        );
        if linked.is_none() || self.double.is_none() {
            ghost.ensure_joined(&room).await?;
        }
        Ok(())
    }

    /// A chat refused a presence: the bridge's or a puppet's nick is taken, or joining is not
    /// allowed.
    async fn on_presence_error(
        &self,
        muc: &str,
        nick: &str,
        to: &str,
        p: &Element,
    ) -> anyhow::Result<()> {
        let condition = p
            .child("error", None)
            .and_then(|e| e.children.first())
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let puppet = self.store.entries(ns::PUPPET)?.into_iter().find(|(k, n)| {
            n == nick
                && k.split_once('\t')
                    .is_some_and(|(m, u)| m == muc && self.puppet_jid(u) == to)
        });
        match (puppet, condition.as_str()) {
            (Some((k, _)), "conflict") => {
                // Someone on XMPP has that nick: the puppet takes it with a mark.
                let user = k
                    .split_once('\t')
                    .map(|(_, u)| u.to_owned())
                    .unwrap_or_default();
                let new = format!("{nick} [m]");
                self.store.set(ns::PUPPET, &k, &new)?;
                self.send_puppet_presence(muc, &user, &new).await;
            }
            _ => {
                self.admin_notice(&format!(
                    "{muc} refused {nick}: {condition} ({})",
                    p.child("error", None)
                        .and_then(|e| e.child_text("text"))
                        .unwrap_or("no reason given")
                ))
                .await;
            }
        }
        Ok(())
    }

    /// A message from a chat: shown by the occupant's ghost, or, for our own, the echo that
    /// confirms a sent message.
    async fn on_message(&self, m: &Element) -> anyhow::Result<()> {
        if self.take_answer(m) {
            return Ok(());
        }
        let kind = m.get("type").unwrap_or("normal");
        let id = m.get("id").unwrap_or_default().to_owned();
        if kind != "groupchat" || m.get("to") != Some(self.bot_jid().as_str()) {
            return Ok(());
        }
        let Some(from) = m.get("from").and_then(Jid::parse) else {
            return Ok(());
        };
        let muc = from.bare();
        let Some(room) = self.store.get(ns::PORTAL, &muc)? else {
            return Ok(());
        };
        let Some(nick) = from.resource.clone() else {
            // From the chat itself: only its subject matters.
            return self.on_subject(&room, None, m).await;
        };
        let stanza_id = stanza_id_of(m, &muc);
        if let Some(retracted) = m
            .child("retract", Some(xmlns::RETRACT))
            .and_then(|r| r.get("id"))
        {
            return self.on_retract(&muc, &room, &nick, retracted).await;
        }
        let Some(body) = m.child_text("body") else {
            return self.on_subject(&room, Some(&nick), m).await;
        };
        let delayed = m
            .child("delay", Some(xmlns::DELAY))
            .and_then(|d| d.get("stamp"))
            .and_then(parse_time);
        let key = if id.is_empty() {
            // No ID: the author, time and text stand for one.
            format!(
                "{muc}\t{nick}/{}/{}",
                delayed.unwrap_or_else(now),
                body.len()
            )
        } else {
            format!("{muc}\t{id}")
        };
        if self.store.get(ns::MESSAGE, &key)?.is_some() {
            // History replayed on a rejoin, already shown.
            return Ok(());
        }
        let jid = self
            .occupants
            .lock()
            .unwrap()
            .get(&(muc.clone(), nick.clone()))
            .and_then(|o| o.jid.clone());
        if let (Some(code), Some(jid)) = (body.trim().strip_prefix("!claim "), &jid) {
            // A proof for a claim, not something to show.
            return self.prove_claim(&muc, &room, &nick, jid, code).await;
        }
        let linked = match &jid {
            Some(jid) => claims::linked_user(&self.store, jid)?,
            None => None,
        };
        let ghost = match (linked, &self.double) {
            (Some(user), Some(double)) => double.intent(&user),
            _ => self.ghost(&muc, &nick, None).await?,
        };
        ghost.ensure_joined(&room).await?;
        let mut content = self.content_from_xmpp(&muc, m, body)?;
        let text = content["body"].as_str().unwrap_or_default().to_owned();
        let correction = content["m.relates_to"]["rel_type"] == "m.replace";
        if !correction && let Some(mut file) = self.file_from_xmpp(m, &text).await {
            // A file sent as a reply stays one.
            if content["m.relates_to"]["m.in_reply_to"].is_object() {
                file["m.relates_to"] = content["m.relates_to"].take();
            }
            content = file;
        }
        // The transaction ID follows from the message, so a message shown just before a crash
        // and replayed after it is the same event.
        let digest = Sha1::digest(key.as_bytes());
        let txn: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let event_id = ghost
            .send_event_txn(&room, "m.room.message", content, &format!("xmpp-{txn}"))
            .await?;
        let seen = delayed.unwrap_or_else(now).to_string();
        let mut writes = vec![
            (ns::MESSAGE, key.as_str(), event_id.as_str()),
            (ns::SEEN, muc.as_str(), seen.as_str()),
        ];
        let event_value = format!("{muc}\t{id}\t{nick}");
        if !id.is_empty() {
            writes.push((ns::EVENT, event_id.as_str(), event_value.as_str()));
        }
        let sid_key = stanza_id.map(|sid| format!("{muc}\t{sid}"));
        if let Some(k) = &sid_key {
            writes.push((ns::MESSAGE, k.as_str(), event_id.as_str()));
        }
        self.store.set_all(&writes)?;
        Ok(())
    }

    /// Hands a waiting request its answer at once, ahead of the stanzas queued before it (one
    /// of which may take a while: a file being fetched): an IQ's answer (from the JID the IQ
    /// went to), a message's error, the chat's echo of a message the bridge sent (recording the
    /// chat's ID for it). Whether the stanza was one of those.
    pub fn take_answer(&self, s: &Element) -> bool {
        let id = s.get("id").unwrap_or_default();
        match (s.name.as_str(), s.get("type").unwrap_or("normal")) {
            ("iq", "result" | "error") => {
                let mut iqs = self.iqs.lock().unwrap();
                let from_there = iqs
                    .get(id)
                    .is_some_and(|(to, _)| s.get("from") == Some(to.as_str()));
                if from_there && let Some((_, waiting)) = iqs.remove(id) {
                    let _ = waiting.send(s.clone());
                }
                true
            }
            ("message", "error") => {
                let reason = s
                    .child("error", None)
                    .and_then(|e| e.children.first())
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                if let Some(waiting) = self.pending.lock().unwrap().remove(id) {
                    let _ = waiting.send(Err(reason));
                }
                true
            }
            ("message", "groupchat") if s.get("to") == Some(self.bot_jid().as_str()) => {
                let Some(from) = s.get("from").and_then(Jid::parse) else {
                    return false;
                };
                let muc = from.bare();
                match from.resource.as_deref() {
                    Some(nick) if self.is_our_nick(&muc, nick) => {}
                    _ => return false,
                }
                if let Some(sid) = stanza_id_of(s, &muc)
                    && id.starts_with('$')
                    && let Err(e) = self.store.set(ns::MESSAGE, &format!("{muc}\t{sid}"), id)
                {
                    tracing::warn!("recording {sid} in {muc}: {e}");
                }
                if let Some(waiting) = self.pending.lock().unwrap().remove(id) {
                    let _ = waiting.send(Ok(()));
                }
                true
            }
            _ => false,
        }
    }

    /// A retraction (XEP-0424): the author's message is redacted on Matrix by whoever showed
    /// it there (the occupant's ghost, or their own account after a claim).
    async fn on_retract(
        &self,
        muc: &str,
        room: &str,
        nick: &str,
        xmpp_id: &str,
    ) -> anyhow::Result<()> {
        let Some(event_id) = self.store.get(ns::MESSAGE, &format!("{muc}\t{xmpp_id}"))? else {
            return Ok(());
        };
        // Only the author retracts: the message must have come from this nick.
        let author = self
            .store
            .get(ns::EVENT, &event_id)?
            .and_then(|v| v.rsplit('\t').next().map(str::to_owned));
        if author.as_deref() != Some(nick) {
            return Ok(());
        }
        let shown_by = self
            .client
            .bot()
            .get_event(room, &event_id)
            .await?
            .get("sender")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_default();
        let intent = match &self.double {
            Some(double) if !self.is_ours(&shown_by) => double.intent(&shown_by),
            _ => self.client.intent(&shown_by),
        };
        intent.redact(room, &event_id).await?;
        Ok(())
    }

    /// The Matrix content of an XMPP message: text or emote (`/me`), a correction as an edit,
    /// a reply as a reply.
    fn content_from_xmpp(&self, muc: &str, m: &Element, body: &str) -> anyhow::Result<Value> {
        let event_for = |xmpp_id: &str| -> anyhow::Result<Option<String>> {
            if let Some(e) = self.store.get(ns::MESSAGE, &format!("{muc}\t{xmpp_id}"))? {
                return Ok(Some(e));
            }
            // Messages from Matrix carry their event ID as their XMPP ID.
            Ok(xmpp_id.starts_with('$').then(|| xmpp_id.to_owned()))
        };
        let reply_to = match m
            .child("reply", Some(xmlns::REPLY))
            .and_then(|r| r.get("id"))
        {
            Some(id) => event_for(id)?,
            None => None,
        };
        let body = if reply_to.is_some() {
            strip_reply_fallback(m, body)
        } else {
            body.to_owned()
        };
        let (msgtype, text) = match body.strip_prefix("/me ") {
            Some(action) => ("m.emote", action.to_owned()),
            None => ("m.text", body),
        };
        let mut content = json!({ "msgtype": msgtype, "body": text });
        if let Some(replaced) = m
            .child("replace", Some(xmlns::CORRECT))
            .and_then(|r| r.get("id"))
            && let Some(original) = event_for(replaced)?
        {
            content = json!({
                "msgtype": msgtype,
                "body": format!("* {text}"),
                "m.new_content": { "msgtype": msgtype, "body": text },
                "m.relates_to": { "rel_type": "m.replace", "event_id": original },
            });
        } else if let Some(parent) = reply_to {
            content["m.relates_to"] = json!({ "m.in_reply_to": { "event_id": parent } });
        }
        Ok(content)
    }

    /// A chat's subject as the room's topic.
    async fn on_subject(&self, room: &str, nick: Option<&str>, m: &Element) -> anyhow::Result<()> {
        let Some(subject) = m.child("subject", None) else {
            return Ok(());
        };
        let current = self
            .client
            .bot()
            .get_state(room, "m.room.topic", "")
            .await?;
        if current.as_ref().and_then(|c| c["topic"].as_str()) == Some(subject.text.as_str()) {
            return Ok(());
        }
        let intent = match nick {
            Some(nick) if m.child("delay", Some(xmlns::DELAY)).is_none() => {
                let muc = self.store.get(ns::ROOM, room)?.unwrap_or_default();
                self.ghost(&muc, nick, None).await?
            }
            _ => self.client.bot(),
        };
        intent.ensure_joined(room).await?;
        intent.set_topic(room, &subject.text).await?;
        Ok(())
    }

    /// The puppet nick of a Matrix user in a chat: stored, or chosen from the display name.
    async fn puppet_nick(&self, muc: &str, room: &str, user: &str) -> anyhow::Result<String> {
        let k = format!("{muc}\t{user}");
        if let Some(nick) = self.store.get(ns::PUPPET, &k)? {
            return Ok(nick);
        }
        let name = self.display_name(room, user).await;
        let taken = self
            .occupants
            .lock()
            .unwrap()
            .contains_key(&(muc.to_owned(), name.clone()))
            || name == self.config.xmpp.nick;
        let nick = if taken { format!("{name} [m]") } else { name };
        self.store.set(ns::PUPPET, &k, &nick)?;
        Ok(nick)
    }

    /// The display name of a Matrix user in a room (falls back to the localpart).
    async fn display_name(&self, room: &str, user: &str) -> String {
        self.client.display_name_in(room, user).await
    }

    /// Makes sure a Matrix user's puppet is in the chat; returns its nick.
    async fn ensure_puppet(&self, muc: &str, room: &str, user: &str) -> anyhow::Result<String> {
        let nick = self.puppet_nick(muc, room, user).await?;
        let joined = self
            .puppets_in
            .lock()
            .unwrap()
            .contains(&(muc.to_owned(), nick.clone()));
        if !joined {
            self.xmpp.wait_ready().await;
            self.send_puppet_presence(muc, user, &nick).await;
        }
        Ok(nick)
    }

    /// Sends a message to a chat and waits for the chat to echo it back; sends it again after
    /// a reconnection. An error from the chat is returned.
    async fn send_confirmed(
        &self,
        muc: &str,
        room: &str,
        user: &str,
        stanza: Element,
    ) -> anyhow::Result<()> {
        let id = stanza.get("id").unwrap_or_default().to_owned();
        let timeout = Duration::from_millis(self.config.xmpp.echo_timeout_ms);
        let mut rejoined = false;
        loop {
            let (tx, rx) = oneshot::channel();
            self.pending.lock().unwrap().insert(id.clone(), tx);
            self.xmpp.send(&stanza).await;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(Ok(()))) => return Ok(()),
                Ok(Ok(Err(reason))) if !rejoined && reason == "not-acceptable" => {
                    // The chat no longer counts the puppet as an occupant: join again, once.
                    rejoined = true;
                    self.puppets_in.lock().unwrap().retain(|(m, _)| m != muc);
                    self.ensure_puppet(muc, room, user).await?;
                }
                Ok(Ok(Err(reason))) => anyhow::bail!("{muc} refused the message: {reason}"),
                Ok(Err(_)) | Err(_) => {
                    self.pending.lock().unwrap().remove(&id);
                    tracing::info!("no echo of {id} from {muc}; sending it again when connected");
                    if self.xmpp.is_ready() {
                        // Connected, but no echo: rejoin the puppet and try again.
                        self.ensure_puppet(muc, room, user).await?;
                    }
                }
            }
        }
    }

    /// Shows one Matrix event in its chat (or runs an admin command).
    async fn on_matrix(&self, event: Value) -> anyhow::Result<()> {
        let sender = event["sender"].as_str().unwrap_or_default();
        let room = event["room_id"].as_str().unwrap_or_default();
        let kind = event["type"].as_str().unwrap_or_default();
        if self.is_ours(sender) {
            return Ok(());
        }
        if self.admin_room.is(room) {
            if kind == "m.room.message" {
                let body = event["content"]["body"].as_str().unwrap_or_default();
                self.command(sender, body.trim()).await?;
            }
            return Ok(());
        }
        let Some(muc) = self.store.get(ns::ROOM, room)? else {
            return Ok(());
        };
        if claims::relayed_by(&event, self.client.appservice_id()) {
            return Ok(()); // Said in the chat by someone who claimed their address.
        }
        let body = event["content"]["body"].as_str().unwrap_or_default().trim();
        if kind == "m.room.message"
            && let Some(jid) = body.strip_prefix("!claim ")
        {
            return self.start_claim(&muc, room, sender, jid.trim()).await;
        }
        if kind == "m.room.message" && body == "!unclaim" {
            let bot = self.client.bot();
            return Ok(claims::unclaim(&self.store, &bot, room, sender, str::to_owned).await?);
        }
        match kind {
            "m.room.member" => self.on_member(&muc, room, &event).await,
            "m.room.message" => self.relay_message(&muc, room, sender, &event).await,
            "m.room.redaction" => self.relay_redaction(&muc, room, sender, &event).await,
            _ => Ok(()),
        }
    }

    /// A Matrix user redacting their own message: its retraction (XEP-0424) from their puppet.
    async fn relay_redaction(
        &self,
        muc: &str,
        room: &str,
        sender: &str,
        event: &Value,
    ) -> anyhow::Result<()> {
        let Some(target) = event["redacts"]
            .as_str()
            .or(event["content"]["redacts"].as_str())
        else {
            return Ok(());
        };
        let (xmpp_id, author) = self.xmpp_id_of(target)?;
        let target_sender = self.client.bot().get_event(room, target).await?["sender"]
            .as_str()
            .map(str::to_owned);
        if author.is_some() || target_sender.as_deref() != Some(sender) {
            // Only an author retracts (a moderator's redaction stays on Matrix).
            return Ok(());
        }
        self.ensure_puppet(muc, room, sender).await?;
        let retract = Element::new("message")
            .attr("from", self.puppet_jid(sender))
            .attr("to", muc)
            .attr("type", "groupchat")
            .attr("id", event["event_id"].as_str().unwrap_or_default())
            .with(
                Element::new("retract")
                    .attr("xmlns", xmlns::RETRACT)
                    .attr("id", xmpp_id),
            )
            .with(
                Element::new("fallback")
                    .attr("xmlns", xmlns::FALLBACK)
                    .attr("for", xmlns::RETRACT),
            )
            .with(Element::new("body").text("/me retracted a previous message"));
        self.send_confirmed(muc, room, sender, retract).await
    }

    /// `!claim JID` in a portal: the asker proves the address is theirs by saying the code in
    /// the chat from it.
    async fn start_claim(
        &self,
        muc: &str,
        room: &str,
        user: &str,
        jid: &str,
    ) -> anyhow::Result<()> {
        let bot = self.client.bot();
        let Some(jid) = Jid::parse(jid)
            .filter(|j| j.node.is_some())
            .map(|j| j.bare())
        else {
            bot.send_notice(room, "Say which address: !claim you@example.org")
                .await?;
            return Ok(());
        };
        let code = claims::start(&self.store, user, &jid)?;
        bot.send_notice(
            room,
            &format!("To prove {jid} is yours, say this in {muc} from {jid} within an hour: !claim {code}"),
        )
        .await?;
        Ok(())
    }

    /// `!claim CODE` said in a chat: if it proves a pending claim of the speaker's address, the
    /// address is linked to the Matrix account that asked, the ghost's entry and thanks move
    /// over (the bots hear the ghost say so), and the ghost leaves: the room shows one person.
    async fn prove_claim(
        &self,
        muc: &str,
        room: &str,
        nick: &str,
        jid: &str,
        code: &str,
    ) -> anyhow::Result<()> {
        let Some(claim) = claims::prove(&self.store, code, |p| p.remote == jid)? else {
            tracing::info!("{nick} in {muc} said a claim code that proves nothing");
            return Ok(());
        };
        claims::link(&self.store, jid, &claim.user)?;
        let ghost = self.ghost(muc, nick, Some(jid)).await?;
        ghost.ensure_joined(room).await?;
        ghost
            .send_message(
                room,
                json!({ "msgtype": "m.text", "body": format!("!me is {}", claim.user) }),
            )
            .await?;
        self.client
            .bot()
            .send_notice(
                room,
                &format!(
                    "{jid} is {}: what they say in {muc} shows as them from now on.",
                    claim.user
                ),
            )
            .await?;
        if self.double.is_some() {
            ghost.leave(room).await?;
        }
        Ok(())
    }

    /// A Matrix user joining, leaving or renaming themselves: their puppet does the same.
    async fn on_member(&self, muc: &str, room: &str, event: &Value) -> anyhow::Result<()> {
        let user = event["state_key"].as_str().unwrap_or_default();
        if self.is_ours(user) {
            return Ok(());
        }
        let k = format!("{muc}\t{user}");
        match event["content"]["membership"].as_str() {
            Some("join") => {
                let name = event["content"]["displayname"]
                    .as_str()
                    .filter(|n| !n.trim().is_empty());
                if let (Some(old), Some(name)) = (self.store.get(ns::PUPPET, &k)?, name)
                    && old.trim_end_matches(" [m]") != name
                {
                    // A new display name: the puppet changes nick.
                    self.store.remove(ns::PUPPET, &k)?;
                }
                self.ensure_puppet(muc, room, user).await?;
            }
            Some("leave" | "ban") => {
                if let Some(nick) = self.store.get(ns::PUPPET, &k)? {
                    self.store.remove(ns::PUPPET, &k)?;
                    self.puppets_in
                        .lock()
                        .unwrap()
                        .remove(&(muc.to_owned(), nick.clone()));
                    let presence = Element::new("presence")
                        .attr("from", self.puppet_jid(user))
                        .attr("to", format!("{muc}/{nick}"))
                        .attr("type", "unavailable");
                    self.xmpp.send(&presence).await;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A Matrix message into the chat, from the sender's puppet: text, emote as `/me`, an
    /// edit as a correction, a reply as a reply, a file by name.
    async fn relay_message(
        &self,
        muc: &str,
        room: &str,
        sender: &str,
        event: &Value,
    ) -> anyhow::Result<()> {
        let event_id = event["event_id"].as_str().unwrap_or_default();
        let content = &event["content"];
        let relates = &content["m.relates_to"];
        let edit_of = (relates["rel_type"] == "m.replace")
            .then(|| relates["event_id"].as_str())
            .flatten();
        let shown = match (edit_of, content["m.new_content"].is_object()) {
            (Some(_), true) => &content["m.new_content"],
            _ => content,
        };
        let body = shown["body"].as_str().unwrap_or_default();
        let body = strip_matrix_fallback(content, body);
        let is_file = matches!(
            shown["msgtype"].as_str(),
            Some("m.image" | "m.file" | "m.audio" | "m.video")
        );
        let nick = self.ensure_puppet(muc, room, sender).await?;
        // A file goes to the XMPP server's upload service and is shown by its URL (XEP-0066).
        let uploaded = match (is_file && edit_of.is_none(), shown["url"].as_str()) {
            (true, Some(url)) => {
                let name = shown["filename"].as_str().unwrap_or(&body);
                let mime = shown["info"]["mimetype"].as_str().unwrap_or_default();
                match self.upload_to_xmpp(sender, url, name, mime).await {
                    Ok(got) => got,
                    Err(e) => {
                        tracing::warn!("{event_id}: the file could not be uploaded: {e:#}");
                        None
                    }
                }
            }
            _ => None,
        };
        let caption = shown["filename"]
            .as_str()
            .is_some_and(|name| name != body)
            .then_some(&body);
        let text = match (shown["msgtype"].as_str().unwrap_or("m.text"), &uploaded) {
            ("m.emote", _) => format!("/me {body}"),
            (_, Some(get)) => match caption {
                Some(caption) => format!("{caption}\n{get}"),
                None => get.clone(),
            },
            _ if is_file => match caption {
                Some(caption) => format!(
                    "[file] {}: {caption}",
                    shown["filename"].as_str().unwrap_or_default()
                ),
                None => format!("[file] {body}"),
            },
            _ => body.clone(),
        };
        let mut message = Element::new("message")
            .attr("from", self.puppet_jid(sender))
            .attr("to", muc)
            .attr("type", "groupchat")
            .attr("id", event_id);
        let mut text = text;
        let mut extra = Vec::new();
        if let Some(original) = edit_of {
            let (xmpp_id, _) = self.xmpp_id_of(original)?;
            extra.push(
                Element::new("replace")
                    .attr("xmlns", xmlns::CORRECT)
                    .attr("id", xmpp_id),
            );
        } else if let Some(parent) = relates["m.in_reply_to"]["event_id"].as_str() {
            let (xmpp_id, author) = self.xmpp_id_of(parent)?;
            let author = match author {
                Some(a) => a,
                None => {
                    let parent_sender = self
                        .client
                        .bot()
                        .get_event(room, parent)
                        .await
                        .ok()
                        .and_then(|e| e["sender"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    self.store
                        .get(ns::PUPPET, &format!("{muc}\t{parent_sender}"))?
                        .unwrap_or(parent_sender)
                }
            };
            let quoted = format!("> {author}\n");
            extra.push(
                Element::new("reply")
                    .attr("xmlns", xmlns::REPLY)
                    .attr("to", format!("{muc}/{author}"))
                    .attr("id", xmpp_id),
            );
            extra.push(
                Element::new("fallback")
                    .attr("xmlns", xmlns::FALLBACK)
                    .attr("for", xmlns::REPLY)
                    .with(
                        Element::new("body")
                            .attr("start", "0")
                            .attr("end", quoted.chars().count().to_string()),
                    ),
            );
            text = format!("{quoted}{text}");
        }
        message = message.with(Element::new("body").text(text));
        if let Some(get) = uploaded {
            extra.push(
                Element::new("x")
                    .attr("xmlns", xmlns::OOB)
                    .with(Element::new("url").text(get)),
            );
        }
        for e in extra {
            message = message.with(e);
        }
        tracing::debug!("{event_id} as {nick} into {muc}");
        self.send_confirmed(muc, room, sender, message).await
    }

    /// Uploads a Matrix file to the XMPP server's upload service (XEP-0363) as the puppet of
    /// `user`: the URL the chat fetches it from, or `None` when there is no upload service or
    /// the file is larger than `max_file_bytes`.
    async fn upload_to_xmpp(
        &self,
        user: &str,
        mxc: &str,
        name: &str,
        mime: &str,
    ) -> anyhow::Result<Option<String>> {
        let Some(service) = self.config.xmpp.upload_service.clone() else {
            return Ok(None);
        };
        let max = self.config.xmpp.max_file_bytes;
        let Some((bytes, served)) = self.client.download(mxc, max).await? else {
            return Ok(None);
        };
        let mime = if mime.is_empty() {
            served
        } else {
            mime.to_owned()
        };
        // Not guessable: only the service's answer may settle it.
        let id = format!("upload-{}", claims::start_code());
        let request = Element::new("iq")
            .attr("type", "get")
            .attr("id", &id)
            .attr("from", self.puppet_jid(user))
            .attr("to", &service)
            .with(
                Element::new("request")
                    .attr("xmlns", xmlns::UPLOAD)
                    .attr("filename", name)
                    .attr("size", bytes.len().to_string())
                    .attr("content-type", &mime),
            );
        let (tx, rx) = oneshot::channel();
        self.iqs
            .lock()
            .unwrap()
            .insert(id.clone(), (service.clone(), tx));
        self.xmpp.send(&request).await;
        let timeout = Duration::from_millis(self.config.xmpp.echo_timeout_ms);
        let answer = tokio::time::timeout(timeout, rx).await;
        self.iqs.lock().unwrap().remove(&id);
        let Ok(Ok(answer)) = answer else {
            anyhow::bail!("{service} did not answer the upload request");
        };
        let slot = answer
            .child("slot", Some(xmlns::UPLOAD))
            .filter(|_| answer.get("type") == Some("result"))
            .with_context(|| format!("{service} gave no upload slot: {}", answer.to_xml()))?;
        let put = slot.child("put", None).context("no put URL")?;
        let (Some(put_url), Some(get_url)) = (
            put.get("url").filter(|u| is_http(u)),
            slot.child("get", None)
                .and_then(|g| g.get("url"))
                .filter(|u| is_http(u)),
        ) else {
            anyhow::bail!("{service} gave no usable URLs: {}", answer.to_xml());
        };
        let mut upload = self
            .http
            .put(put_url)
            .header(reqwest::header::CONTENT_TYPE, &mime)
            .body(bytes);
        // XEP-0363 §5: only these headers may be passed on.
        for header in put.children.iter().filter(|h| h.name == "header") {
            let name = header.get("name").unwrap_or_default();
            if ["Authorization", "Cookie", "Expires"]
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(name))
            {
                upload = upload.header(name, header.text.replace(['\r', '\n'], ""));
            }
        }
        let status = upload.send().await?.status();
        anyhow::ensure!(status.is_success(), "the upload got {status}");
        Ok(Some(get_url.to_owned()))
    }

    /// A file shared in a chat (its URL as the body and out-of-band data, XEP-0066), from a
    /// place `fetch_files_from` allows: fetched and uploaded to Matrix, its file content.
    /// `None` leaves it a link.
    async fn file_from_xmpp(&self, m: &Element, body: &str) -> Option<Value> {
        let url = m.child("x", Some(xmlns::OOB))?.child_text("url")?.trim();
        if body.trim() != url || !under_prefix(&self.config.xmpp.fetch_files_from, url) {
            return None;
        }
        match self.fetch_file(url).await {
            Ok(content) => content,
            Err(e) => {
                tracing::warn!("{url} could not be fetched: {e:#}");
                None
            }
        }
    }

    async fn fetch_file(&self, url: &str) -> anyhow::Result<Option<Value>> {
        let max = self.config.xmpp.max_file_bytes;
        let res = self.http.get(url).send().await?;
        anyhow::ensure!(res.status().is_success(), "got {}", res.status());
        let Some((bytes, mime)) = tsunagu_appservice::read_limited(res, max).await? else {
            return Ok(None);
        };
        let name = file_name_of(url);
        let size = bytes.len();
        let uri = self.client.bot().upload(bytes, &mime, &name).await?;
        let msgtype = match mime.split('/').next() {
            Some("image") => "m.image",
            Some("video") => "m.video",
            Some("audio") => "m.audio",
            _ => "m.file",
        };
        Ok(Some(json!({
            "msgtype": msgtype,
            "body": name,
            "filename": name,
            "url": uri,
            "info": { "mimetype": mime, "size": size },
        })))
    }

    /// The XMPP ID of a Matrix event in its chat and, for one from XMPP, its author's nick.
    /// A Matrix message went out with its event ID as its XMPP ID.
    fn xmpp_id_of(&self, event_id: &str) -> anyhow::Result<(String, Option<String>)> {
        Ok(match self.store.get(ns::EVENT, event_id)? {
            Some(v) => {
                let mut parts = v.splitn(3, '\t');
                let (_, id, nick) = (parts.next(), parts.next(), parts.next());
                (id.unwrap_or(event_id).to_owned(), nick.map(str::to_owned))
            }
            None => (event_id.to_owned(), None),
        })
    }

    /// Admin room commands.
    async fn command(&self, sender: &str, body: &str) -> anyhow::Result<()> {
        let mut words = body.split_whitespace();
        match (words.next(), words.next()) {
            (Some("!link"), Some(muc)) => match self.ensure_portal(muc, &[sender.to_owned()]).await {
                Ok(room) => {
                    self.admin_notice(&format!("Linked {muc} to {room}; you are invited."))
                        .await
                }
                Err(e) => self.admin_notice(&format!("Could not link {muc}: {e:#}")).await,
            },
            (Some("!unlink"), Some(muc)) => {
                let muc = Jid::parse(muc).map(|j| j.bare()).unwrap_or_default();
                match self.store.get(ns::PORTAL, &muc)? {
                    Some(room) => {
                        self.store.remove(ns::PORTAL, &muc)?;
                        self.store.remove(ns::ROOM, &room)?;
                        let leave = Element::new("presence")
                            .attr("from", self.bot_jid())
                            .attr("to", format!("{muc}/{}", self.config.xmpp.nick))
                            .attr("type", "unavailable");
                        self.xmpp.send_now(&leave).await;
                        self.admin_notice(&format!("Unlinked {muc} from {room}.")).await;
                    }
                    None => self.admin_notice(&format!("{muc} is not linked.")).await,
                }
            }
            (Some(c), _) if c.starts_with('!') => {
                self.admin_notice(
                    "Commands: !link room@conference.example.org, !unlink room@conference.example.org",
                )
                .await
            }
            _ => {}
        }
        Ok(())
    }
}

impl Handler for Bridge {
    async fn handle_event(&self, event: Value) {
        let id = event["event_id"].as_str().unwrap_or_default().to_owned();
        if let Err(e) = self.on_matrix(event).await {
            tracing::warn!("relaying {id}: {e:#}");
            self.admin_notice(&format!("Could not relay {id} to XMPP: {e:#}"))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_both_ways() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_796_281_200), "2026-12-03T07:00:00Z");
        assert_eq!(parse_time("2026-12-03T07:00:00Z"), Some(1_796_281_200));
        assert_eq!(parse_time("2026-12-03T07:00:00.123Z"), Some(1_796_281_200));
        assert_eq!(parse_time("2026-12-03T09:00:00+02:00"), Some(1_796_281_200));
        assert_eq!(
            parse_time("2024-02-29T00:00:00Z")
                .map(format_time)
                .as_deref(),
            Some("2024-02-29T00:00:00Z")
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn files_are_fetched_only_from_the_upload_service() {
        let allowed = vec!["https://upload.example.org/share/".to_owned()];
        let ok = |url: &str| under_prefix(&allowed, url);
        assert!(ok("https://upload.example.org/share/abc/photo.jpg"));
        assert!(ok("https://upload.example.org:443/share/abc/photo.jpg"));
        assert!(!ok("http://upload.example.org/share/abc/photo.jpg"));
        assert!(!ok("https://upload.example.org.evil.test/share/x"));
        assert!(!ok("https://upload.example.org@127.0.0.1/share/x"));
        assert!(!ok("https://upload.example.org:8080/share/x"));
        assert!(!ok("https://upload.example.org/admin/x"));
        assert!(!ok("https://127.0.0.1/share/x"));
        assert!(!ok("not a url"));
        let bare = vec!["https://upload.example.org/share".to_owned()];
        assert!(under_prefix(
            &bare,
            "https://upload.example.org/share/a.png"
        ));
        assert!(!under_prefix(
            &bare,
            "https://upload.example.org/shared/a.png"
        ));
        assert_eq!(
            file_name_of("https://u.example/share/abc/Gr%C3%BC%C3%9Fe%20x.png"),
            "Grüße x.png"
        );
        assert_eq!(file_name_of("https://u.example/share/a%2Fb"), "ab");
        assert_eq!(file_name_of("https://u.example/"), "file");
    }

    #[test]
    fn reply_fallbacks_are_removed() {
        let marked = Element::new("message")
            .with(Element::new("body").text("> Alice wrote\nyes"))
            .with(
                Element::new("fallback")
                    .attr("xmlns", xmlns::FALLBACK)
                    .attr("for", xmlns::REPLY)
                    .with(Element::new("body").attr("start", "0").attr("end", "14")),
            );
        assert_eq!(strip_reply_fallback(&marked, "> Alice wrote\nyes"), "yes");
        let unmarked = Element::new("message");
        assert_eq!(
            strip_reply_fallback(&unmarked, "> quote\n> more\nanswer"),
            "answer"
        );
        assert_eq!(strip_reply_fallback(&unmarked, "plain"), "plain");
        // A range past the end is not trusted.
        let bad = Element::new("message").with(
            Element::new("fallback")
                .attr("xmlns", xmlns::FALLBACK)
                .attr("for", xmlns::REPLY)
                .with(Element::new("body").attr("start", "0").attr("end", "99")),
        );
        assert_eq!(strip_reply_fallback(&bad, "hi"), "hi");
    }
}

//! The bridge: a portal room per list, a ghost per subscriber who writes, threads from
//! `In-Reply-To`, the list's mail to its subscribers (one mail per message or a digest),
//! subscription commands by mail and in the room, and bounces.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use mail_parser::{Message, MessageParser, MimeHeaders};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use tokio::sync::Notify;
use tsunagu_appservice::{AdminRoom, Client, Handler, Store, claims, escape_localpart};

use crate::{
    config::{Config, ListConfig},
    lmtp,
    message::{self, Outgoing},
    smtp,
};

/// Store namespaces.
mod ns {
    /// List address → portal room ID.
    pub const PORTAL: &str = "portal";
    /// Portal room ID → list address.
    pub const ROOM: &str = "room";
    /// `{list}\t{subscriber address}` → `each` or `digest`.
    pub const SUB: &str = "sub";
    /// `{list}\t{subscriber address}` → bounces counted.
    pub const BOUNCES: &str = "bounces";
    /// Message-ID (with brackets) → the Matrix event it is.
    pub const MSGID: &str = "msgid";
    /// Event ID → `{Message-ID}\t{author address, empty for Matrix users}\t{subject}`.
    pub const EVENT: &str = "event";
    /// Event ID → the root event of its thread.
    pub const ROOT: &str = "root";
    /// `{seq:020}` → a received mail: `{envelope sender}\n{recipients, comma-separated}\n{base64}`.
    pub const SPOOL: &str = "spool";
    /// `{list}\t{code}` → `{address}\t{expiry}`: a subscription asked for by mail, waiting
    /// for the address to confirm it.
    pub const CONFIRM: &str = "confirm";
    /// `{list}\t{seq:020}` → one item of the next digest.
    pub const DIGEST: &str = "digest";
    /// Counters.
    pub const META: &str = "meta";
}

/// The key, in a message's content, of the mail it came from (`message_id`, `from`,
/// `subject`).
const ORIGIN: &str = "org.tsunagu.email";
/// Most files attached to one mail the bridge sends.
const MAX_ATTACHMENTS: usize = 20;

/// How long a subscription asked for by mail waits for its confirmation, in seconds.
const CONFIRM_TTL_SECS: u64 = 86_400;

/// How often a mail that could not be shown is tried before it is given up (and reported).
const SPOOL_ATTEMPTS: u32 = 5;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn sha1_hex(s: &str) -> String {
    Sha1::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `<id>` for a Message-ID as mail-parser gives it (without brackets).
fn bracketed(id: &str) -> String {
    format!(
        "<{}>",
        id.trim().trim_start_matches('<').trim_end_matches('>')
    )
}

/// The bridge, shared by the LMTP server, the spool worker, the digest timer and the
/// appservice handler.
pub struct Bridge {
    config: Config,
    client: Client,
    /// Acts as people who claimed their address (double puppeting), if configured.
    double: Option<Client>,
    store: Arc<Store>,
    admin_room: AdminRoom,
    spool: Notify,
    /// Held while a counter is read and advanced (LMTP sessions run at once).
    counters: std::sync::Mutex<()>,
}

impl Bridge {
    /// A bridge; call [`Bridge::setup`] before use.
    pub fn new(config: Config, client: Client, double: Option<Client>, store: Arc<Store>) -> Self {
        Self {
            config,
            client,
            double,
            store,
            admin_room: AdminRoom::default(),
            spool: Notify::new(),
            counters: std::sync::Mutex::default(),
        }
    }

    /// Registers the bot, finds or creates the admin room and one portal per list.
    pub async fn setup(&self) -> anyhow::Result<()> {
        self.admin_room
            .setup(
                &self.client,
                &self.store,
                "Mail bridge",
                "Bridge status, bounces and commands: !subscribers LIST, !subscribe LIST ADDRESS [digest], !unsubscribe LIST ADDRESS",
                self.config.admin_user.as_deref(),
                self.config.admin_room.as_deref(),
            )
            .await?;
        for list in &self.config.lists {
            self.ensure_portal(list).await?;
        }
        Ok(())
    }

    async fn admin_notice(&self, text: &str) {
        self.admin_room.notice(&self.client, text).await
    }

    async fn ensure_portal(&self, list: &ListConfig) -> anyhow::Result<String> {
        if let Some(room) = self.store.get(ns::PORTAL, &list.address)? {
            return Ok(room);
        }
        let local = list.address.split('@').next().unwrap_or_default();
        // The bot created the room and has its power already (room version 12 refuses a
        // creator in `users`); the admin user moderates it.
        let mut users = json!({});
        if let Some(admin) = &self.config.admin_user {
            users[admin] = json!(100);
        }
        let body = json!({
            "preset": "public_chat",
            "name": list.name,
            "topic": format!(
                "Bridged with the mailing list {}. Subscribe: mail {} (or ask a moderator: !subscribe ADDRESS [digest]).",
                list.address,
                message::command_address(list, "subscribe")
            ),
            "room_alias_name": format!("{}{}", self.config.user_prefix, escape_localpart(local)),
            "invite": self.config.admin_user.iter().collect::<Vec<_>>(),
            "power_level_content_override": { "users": users },
        });
        let room = self
            .client
            .bot()
            .create_portal(body)
            .await
            .with_context(|| format!("creating the portal of {}", list.address))?;
        self.store.set_all(&[
            (ns::ROOM, &room, &list.address),
            (ns::PORTAL, &list.address, &room),
        ])?;
        tracing::info!("portal of {}: {room}", list.address);
        Ok(room)
    }

    /// The list an address belongs to, and its command (`alumni+unsubscribe@…` →
    /// `unsubscribe`).
    fn list_of(&self, address: &str) -> Option<(&ListConfig, Option<String>)> {
        let (local, domain) = address.rsplit_once('@')?;
        let (base, command) = match local.split_once('+') {
            Some((b, c)) => (b, Some(c.to_owned())),
            None => (local, None),
        };
        self.config
            .lists
            .iter()
            .find(|l| l.address == format!("{base}@{domain}"))
            .map(|l| (l, command))
    }

    fn list_by_address(&self, address: &str) -> Option<&ListConfig> {
        self.config.lists.iter().find(|l| l.address == address)
    }

    /// Subscribers of a list with their mode (`each` or `digest`).
    fn subscribers(&self, list: &ListConfig) -> anyhow::Result<Vec<(String, String)>> {
        let prefix = format!("{}\t", list.address);
        Ok(self
            .store
            .entries(ns::SUB)?
            .into_iter()
            .filter_map(|(k, mode)| k.strip_prefix(&prefix).map(|a| (a.to_owned(), mode)))
            .collect())
    }

    fn subscription(&self, list: &ListConfig, address: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .store
            .get(ns::SUB, &format!("{}\t{address}", list.address))?)
    }

    // ---- Mail in -------------------------------------------------------------------------

    /// Works through the spool forever: each received mail, in order, removed once handled.
    pub async fn run_spool(&self) {
        loop {
            let notified = self.spool.notified();
            let items = self.store.entries(ns::SPOOL).unwrap_or_default();
            for (seq, item) in items {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match self.on_spooled(&item).await {
                        Ok(()) => break,
                        Err(e) if attempt < SPOOL_ATTEMPTS => {
                            let wait = Duration::from_millis(500 << attempt);
                            tracing::warn!("showing mail {seq}: {e:#}; again in {wait:?}");
                            tokio::time::sleep(wait).await;
                        }
                        Err(e) => {
                            self.admin_notice(&format!("Gave up on a received mail: {e:#}"))
                                .await;
                            break;
                        }
                    }
                }
                if let Err(e) = self.store.remove(ns::SPOOL, &seq) {
                    tracing::error!("removing mail {seq} from the spool: {e}");
                }
            }
            notified.await;
        }
    }

    async fn on_spooled(&self, item: &str) -> anyhow::Result<()> {
        let mut parts = item.splitn(3, '\n');
        let (envelope_from, rcpts, raw) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let raw = B64
            .decode(raw)
            .context("a spooled mail that is not base64")?;
        let Some(mail) = MessageParser::default().parse(&raw) else {
            tracing::warn!("dropping a mail that does not parse");
            return Ok(());
        };
        for rcpt in rcpts.split(',').filter(|r| !r.is_empty()) {
            let Some((list, command)) = self.list_of(rcpt) else {
                continue;
            };
            let list = list.clone();
            match command.as_deref() {
                None => self.post(&list, &mail).await?,
                Some(bounce) if bounce.starts_with("bounce-") => {
                    if let Some(address) = message::unhex(&bounce["bounce-".len()..]) {
                        self.bounce(&list, &address).await?;
                    }
                }
                Some(command) => {
                    // Commands act for the author; mail from nobody (bounces) cannot command.
                    if envelope_from.is_empty() {
                        continue;
                    }
                    let Some(from) = sender(&mail) else { continue };
                    self.mail_command(&list, &from, command).await?;
                }
            }
        }
        Ok(())
    }

    /// Subscribes, unsubscribes or changes the mode of the mail's author, and tells them.
    async fn mail_command(
        &self,
        list: &ListConfig,
        from: &str,
        command: &str,
    ) -> anyhow::Result<()> {
        let key = format!("{}\t{from}", list.address);
        let subscribed = self.subscription(list, from)?.is_some();
        // Who the answer goes to, and where a reply to it goes (when not to the list).
        let mut to = from.to_owned();
        let mut reply_to = None;
        let answer = match command {
            "subscribe" | "join" if subscribed => {
                format!("You are subscribed to {} already.", list.name)
            }
            "subscribe" | "join" => {
                // Confirmed by the address itself: a forged sender subscribes nobody.
                let prefix = format!("{}\t", list.address);
                let pending: Vec<(String, String)> = self
                    .store
                    .entries(ns::CONFIRM)?
                    .into_iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .collect();
                let mut live = 0;
                for (k, v) in &pending {
                    let expired = v
                        .rsplit('\t')
                        .next()
                        .and_then(|e| e.parse::<u64>().ok())
                        .is_none_or(|e| e < now());
                    if expired {
                        self.store.remove(ns::CONFIRM, k)?;
                    } else {
                        live += 1;
                    }
                }
                if live >= self.config.mail.max_pending_subscriptions {
                    tracing::warn!(
                        "{}: too many subscriptions waiting; not asking {from}",
                        list.address
                    );
                    return Ok(());
                }
                let code = sha1_hex(&format!("{key}{}{}", now(), claims::start_code()));
                let code = &code[..16];
                self.store.set(
                    ns::CONFIRM,
                    &format!("{}\t{code}", list.address),
                    &format!("{from}\t{}", now() + CONFIRM_TTL_SECS),
                )?;
                let confirm = message::command_address(list, &format!("confirm-{code}"));
                let text = format!(
                    "Someone, maybe you, asked to subscribe {from} to {}.\n\n\
                     To join, reply to this mail (it goes to {confirm}) within a day.\n\
                     If it was not you, ignore this mail: nothing will come.",
                    list.name
                );
                reply_to = Some(confirm);
                text
            }
            confirm if confirm.starts_with("confirm-") => {
                let code = &confirm["confirm-".len()..];
                let k = format!("{}\t{code}", list.address);
                let Some(pending) = self.store.get(ns::CONFIRM, &k)? else {
                    tracing::info!("{}: an unknown confirmation from {from}", list.address);
                    return Ok(());
                };
                self.store.remove(ns::CONFIRM, &k)?;
                let (address, expires) = pending.split_once('\t').unwrap_or((&pending, "0"));
                if expires.parse::<u64>().unwrap_or(0) < now() {
                    return Ok(());
                }
                to = address.to_owned();
                let key = format!("{}\t{address}", list.address);
                self.store.set(ns::SUB, &key, "each")?;
                self.store.remove(ns::BOUNCES, &key)?;
                format!(
                    "You are subscribed to {}: each message comes to you as a mail.\n\n\
                     To write to the list: {}\nOne digest now and then instead of a mail per message: {}\nTo leave: {}",
                    list.name,
                    list.address,
                    message::command_address(list, "digest"),
                    message::command_address(list, "unsubscribe")
                )
            }
            "unsubscribe" | "leave" if subscribed => {
                self.store.remove(ns::SUB, &key)?;
                format!(
                    "You have left {}; no more mail from it will come to you.\nTo come back: {}",
                    list.name,
                    message::command_address(list, "subscribe")
                )
            }
            "digest" | "each" if subscribed => {
                self.store.set(ns::SUB, &key, command)?;
                match command {
                    "digest" => format!(
                        "From now on you get one digest of {} per interval.",
                        list.name
                    ),
                    _ => format!(
                        "From now on each message of {} comes as its own mail.",
                        list.name
                    ),
                }
            }
            "unsubscribe" | "leave" | "digest" | "each" => {
                format!("You are not subscribed to {}.", list.name)
            }
            _ => format!(
                "Commands of {}: mail {} to join, {} to leave, {} for a digest, {} for each message.",
                list.name,
                message::command_address(list, "subscribe"),
                message::command_address(list, "unsubscribe"),
                message::command_address(list, "digest"),
                message::command_address(list, "each")
            ),
        };
        tracing::info!("{}: {command} from {from}", list.address);
        let id = format!(
            "<{}.{}@{}>",
            sha1_hex(&format!("{key}{command}{}", now())),
            "cmd",
            message::domain(list)
        );
        let mail = Outgoing {
            list,
            author: &list.name,
            message_id: &id,
            in_reply_to: None,
            references: vec![],
            reply_to: reply_to.as_deref(),
            subject: &format!("{}: {command}", list.name),
            text: &answer,
            html: None,
            automatic: true,
            date: now(),
            attachments: &[],
        };
        self.deliver(list, std::slice::from_ref(&to), &mail.render())
            .await
    }

    /// A bounce for a subscriber: counted, and past the limit the address is unsubscribed.
    async fn bounce(&self, list: &ListConfig, address: &str) -> anyhow::Result<()> {
        let key = format!("{}\t{address}", list.address);
        if self.subscription(list, address)?.is_none() {
            return Ok(());
        }
        let count = self
            .store
            .get(ns::BOUNCES, &key)?
            .and_then(|c| c.parse::<u32>().ok())
            .unwrap_or(0)
            + 1;
        if count >= self.config.mail.max_bounces {
            self.store.remove(ns::SUB, &key)?;
            self.store.remove(ns::BOUNCES, &key)?;
            self.admin_notice(&format!(
                "{address} bounced {count} times and was unsubscribed from {}.",
                list.address
            ))
            .await;
        } else {
            self.store.set(ns::BOUNCES, &key, &count.to_string())?;
            self.admin_notice(&format!(
                "Mail from {} to {address} bounced ({count} of {}).",
                list.address, self.config.mail.max_bounces
            ))
            .await;
        }
        Ok(())
    }

    /// A post to the list: shown in the room by the author's ghost, threaded.
    async fn post(&self, list: &ListConfig, mail: &Message<'_>) -> anyhow::Result<()> {
        // No loops: our own mail coming back, a mail seen before, an autoresponder.
        let looped = mail.header_values("X-Loop").any(|v| {
            v.as_text()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(&list.address))
        });
        let automatic = mail
            .header_raw("Auto-Submitted")
            .is_some_and(|v| !v.trim().eq_ignore_ascii_case("no"));
        let message_id = mail
            .message_id()
            .map(bracketed)
            .unwrap_or_else(|| format!("<{}@unknown>", sha1_hex(&format!("{:?}", mail.subject()))));
        if looped || automatic || self.store.get(ns::MSGID, &message_id)?.is_some() {
            tracing::info!("not showing {message_id}: a loop, a repeat or automatic");
            return Ok(());
        }
        let Some(from) = sender(mail) else {
            return Ok(());
        };
        if self.subscription(list, &from)?.is_none() {
            self.admin_notice(&format!(
                "Mail to {} from {from}, who is not subscribed, was not shown: {:?}",
                list.address,
                mail.subject().unwrap_or("(no subject)")
            ))
            .await;
            return Ok(());
        }
        let room = self.ensure_portal(list).await?;
        let name = mail
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.name())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(&from)
            .to_owned();
        // Someone who claimed the address writes as themselves; anyone else through a ghost.
        let person = match (claims::linked_user(&self.store, &from)?, &self.double) {
            (Some(user), Some(double)) => Some(double.intent(&user)),
            _ => None,
        };
        let ghost = match person {
            Some(person) => person,
            None => {
                let ghost = self.client.intent(&self.ghost_of(&from));
                ghost.ensure_registered().await?;
                ghost.set_display_name(&name).await?;
                ghost
            }
        };
        ghost.ensure_joined(&room).await?;

        // The thread: the message it answers (In-Reply-To, else the last known reference).
        let mut candidates: Vec<String> = mail
            .in_reply_to()
            .as_text_list()
            .unwrap_or_default()
            .iter()
            .map(|s| bracketed(s))
            .collect();
        let mut refs: Vec<String> = mail
            .references()
            .as_text_list()
            .unwrap_or_default()
            .iter()
            .map(|s| bracketed(s))
            .collect();
        refs.reverse();
        candidates.extend(refs);
        let mut parent = None;
        for id in candidates {
            if let Some(event) = self.store.get(ns::MSGID, &id)? {
                parent = Some(event);
                break;
            }
        }
        let root = match &parent {
            Some(p) => Some(self.store.get(ns::ROOT, p)?.unwrap_or_else(|| p.clone())),
            None => None,
        };
        let subject = mail.subject().unwrap_or("").trim().to_owned();
        let text = mail.body_text(0).unwrap_or_default().replace("\r\n", "\n");
        let html = mail
            .html_bodies()
            .next()
            .filter(|p| p.is_text_html())
            .and_then(|_| mail.body_html(0));
        // A new topic starts with its subject line (none when the mail has no subject).
        let (headline, headline_html) = if subject.is_empty() {
            (String::new(), String::new())
        } else {
            (
                format!("{subject}\n\n"),
                format!("<p><strong>{}</strong></p>", ammonia::clean_text(&subject)),
            )
        };
        let mut content = match (&parent, html) {
            (Some(_), _) => json!({ "msgtype": "m.text", "body": message::strip_quoted(&text) }),
            (None, None) => {
                json!({ "msgtype": "m.text", "body": format!("{headline}{}", text.trim()) })
            }
            (None, Some(html)) => json!({
                "msgtype": "m.text",
                "body": format!("{headline}{}", text.trim()),
                "format": "org.matrix.custom.html",
                "formatted_body": format!("{headline_html}{}", ammonia::clean(&html)),
            }),
        };
        // The attachments go to the media repository first, so the post can name them: the
        // list passes them on with it.
        let mut files = Vec::new();
        for part in mail.attachments() {
            let filename = part.attachment_name().unwrap_or("attachment").to_owned();
            let mime = part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{sub}", ct.ctype()),
                    None => ct.ctype().to_owned(),
                })
                .unwrap_or_else(|| "application/octet-stream".into());
            let bytes = part.contents().to_vec();
            let size = bytes.len();
            match ghost.upload(bytes, &mime, &filename).await {
                Ok(uri) => files.push((filename, mime, size, uri)),
                // Larger than the media repository takes: the post says so, without it.
                Err(e) if e.errcode() == Some("M_TOO_LARGE") => {
                    let body = content["body"].as_str().unwrap_or_default();
                    content["body"] = json!(format!("{body}\n[attachment too large: {filename}]"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Where it came from travels with the event: the appservice may be handed the event
        // before this task has recorded it, and must still know to pass it on as this mail.
        let attached: Vec<Value> = files
            .iter()
            .map(|(name, mime, _, uri)| json!({ "name": name, "mimetype": mime, "url": uri }))
            .collect();
        content[ORIGIN] = json!({
            "message_id": message_id, "from": from, "subject": subject, "attachments": attached,
        });
        if let (Some(parent), Some(root)) = (&parent, &root) {
            content["m.relates_to"] = json!({
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": false,
                "m.in_reply_to": { "event_id": parent },
            });
        }
        // The transaction ID follows from the Message-ID: a mail shown just before a crash
        // and shown again after it is the same event.
        let txn = format!("mail-{}", sha1_hex(&message_id));
        let event_id = ghost
            .send_event_txn(&room, "m.room.message", content, &txn)
            .await?;
        let thread_root = root.clone().unwrap_or_else(|| event_id.clone());
        let mut writes = vec![
            (ns::MSGID, message_id.clone(), event_id.clone()),
            (
                ns::EVENT,
                event_id.clone(),
                format!("{message_id}\t{from}\t{subject}"),
            ),
        ];
        if root.is_some() {
            writes.push((ns::ROOT, event_id.clone(), thread_root.clone()));
        }
        let writes: Vec<(&str, &str, &str)> = writes
            .iter()
            .map(|(n, k, v)| (*n, k.as_str(), v.as_str()))
            .collect();
        self.store.set_all(&writes)?;

        // Attachments, as files in the same thread.
        for (i, (filename, mime, size, uri)) in files.into_iter().enumerate() {
            let msgtype = if mime.starts_with("image/") {
                "m.image"
            } else {
                "m.file"
            };
            let file = json!({
                "msgtype": msgtype,
                "body": filename,
                "filename": filename,
                "url": uri,
                "info": { "mimetype": mime, "size": size },
                ORIGIN: { "attachment_of": message_id },
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": thread_root,
                    "is_falling_back": true,
                    "m.in_reply_to": { "event_id": event_id },
                },
            });
            let file_event = ghost
                .send_event_txn(&room, "m.room.message", file, &format!("{txn}-{i}"))
                .await?;
            self.store.set(ns::ROOT, &file_event, &thread_root)?;
        }
        Ok(())
    }

    // ---- Mail out ------------------------------------------------------------------------

    /// Hands one mail to the MTA, retrying with backoff while it does not take it. The
    /// envelope sender is the subscriber's bounce address (VERP), so a bounce names them.
    async fn deliver(&self, list: &ListConfig, to: &[String], raw: &[u8]) -> anyhow::Result<()> {
        let mail = &self.config.mail;
        let max = Duration::from_millis(mail.retry_max_ms.max(100));
        for rcpt in to {
            let bounce = message::command_address(list, &format!("bounce-{}", message::hex(rcpt)));
            let mut wait = Duration::from_millis(500);
            loop {
                match smtp::send(
                    &mail.smtp_host,
                    mail.smtp_port,
                    message::domain(list),
                    &bounce,
                    std::slice::from_ref(rcpt),
                    raw,
                )
                .await
                {
                    Ok(refused) if refused.is_empty() => break,
                    Ok(refused) if refused.iter().all(|(_, code)| *code >= 500) => {
                        // Refused for good: as good as a bounce.
                        Box::pin(self.bounce(list, rcpt)).await?;
                        break;
                    }
                    Ok(_) => {
                        tracing::warn!("the MTA defers {rcpt}; again in {wait:?}");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(max);
                    }
                    Err(e) if e.downcast_ref::<smtp::Refused>().is_some() => {
                        // Not the address's fault (not a bounce), and no use trying again.
                        tracing::warn!("the MTA refused a mail for {rcpt}: {e:#}");
                        self.admin_notice(&format!(
                            "The MTA refused a mail of {} for {rcpt}, {e:#}; it was not sent.",
                            list.address
                        ))
                        .await;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "handing mail for {rcpt} to the MTA: {e:#}; again in {wait:?}"
                        );
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(max);
                    }
                }
            }
        }
        Ok(())
    }

    /// The Message-ID, author address and subject of an event, as mail knows it.
    fn mail_of(
        &self,
        list: &ListConfig,
        event_id: &str,
    ) -> anyhow::Result<(String, Option<String>, String)> {
        Ok(match self.store.get(ns::EVENT, event_id)? {
            Some(v) => {
                let mut p = v.splitn(3, '\t');
                let id = p.next().unwrap_or_default().to_owned();
                let author = p.next().filter(|a| !a.is_empty()).map(str::to_owned);
                (id, author, p.next().unwrap_or_default().to_owned())
            }
            None => (
                message::message_id_for(event_id, message::domain(list)),
                None,
                String::new(),
            ),
        })
    }

    /// A message in a portal: mailed to every subscriber but its author (digest subscribers
    /// get it in their next digest), threaded with `In-Reply-To` and `References`.
    async fn relay(&self, list: &ListConfig, room: &str, event: &Value) -> anyhow::Result<()> {
        let event_id = event["event_id"].as_str().unwrap_or_default();
        let sender = event["sender"].as_str().unwrap_or_default();
        let content = &event["content"];
        if content["m.relates_to"]["rel_type"] == "m.replace" {
            return Ok(()); // Edits are not mailed: a mail cannot change once sent.
        }
        // Only the bridge's own posts say where they came from: a ghost's, or a claimed
        // person's (double puppeting); anyone else's claim to be a mail is ignored.
        let trusted = self.is_ghost(sender) || claims::remote_of(&self.store, sender)?.is_some();
        let origin = if trusted {
            &content[ORIGIN]
        } else {
            &Value::Null
        };
        let (message_id, author_address, mail_subject) =
            match (origin["message_id"].as_str(), origin["from"].as_str()) {
                (Some(id), Some(from)) => (
                    id.to_owned(),
                    Some(from.to_owned()),
                    origin["subject"].as_str().unwrap_or_default().to_owned(),
                ),
                _ => self.mail_of(list, event_id)?,
            };
        let from_mail = author_address.is_some();
        if (self.is_ghost(sender) && !from_mail) || origin["attachment_of"].is_string() {
            return Ok(()); // An attachment of a mail: it went out with the mail.
        }
        let relates = &content["m.relates_to"];
        let root = (relates["rel_type"] == "m.thread")
            .then(|| relates["event_id"].as_str())
            .flatten()
            .map(str::to_owned);
        let parent = relates["m.in_reply_to"]["event_id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| root.clone());
        let author = self.display_name(room, sender).await;
        let body = content["body"].as_str().unwrap_or_default();
        // The files it carries: a Matrix file, or the attachments of a mail.
        let mut files: Vec<(String, String, String)> = Vec::new();
        let is_file = matches!(
            content["msgtype"].as_str(),
            Some("m.image" | "m.file" | "m.audio" | "m.video")
        );
        let file_name = content["filename"].as_str().unwrap_or(body).to_owned();
        if is_file && let Some(url) = content["url"].as_str() {
            let mime = content["info"]["mimetype"].as_str().unwrap_or_default();
            files.push((url.to_owned(), file_name.clone(), mime.to_owned()));
        }
        for file in origin["attachments"].as_array().into_iter().flatten() {
            if let (Some(url), Some(name)) = (file["url"].as_str(), file["name"].as_str()) {
                let mime = file["mimetype"].as_str().unwrap_or_default();
                files.push((url.to_owned(), name.to_owned(), mime.to_owned()));
            }
        }
        let (attachments, left_out) = self.fetch_files(&files).await;
        let mut text = match content["msgtype"].as_str() {
            Some("m.emote") => format!("* {author} {body}"),
            // With a `filename` beside it, the body is a caption.
            _ if is_file && file_name != body => body.to_owned(),
            _ if is_file => format!("[file] {body}"),
            _ => body.to_owned(),
        };
        for name in &left_out {
            text.push_str(&format!("\n[file not attached: {name}]"));
        }
        let (in_reply_to, references, subject) = match (&parent, &root) {
            (Some(parent), root) => {
                let (parent_id, _, parent_subject) = self.mail_of(list, parent)?;
                let mut refs = Vec::new();
                let mut subject = parent_subject;
                if let Some(root) = root {
                    let (root_id, _, root_subject) = self.mail_of(list, root)?;
                    if root_id != parent_id {
                        refs.push(root_id);
                    }
                    if !root_subject.is_empty() {
                        subject = root_subject;
                    }
                }
                let subject = if subject.is_empty() {
                    format!("Re: {}", list.name)
                } else if subject.to_ascii_lowercase().starts_with("re:") {
                    subject
                } else {
                    format!("Re: {subject}")
                };
                (Some(parent_id), refs, subject)
            }
            (None, _) if from_mail => (None, vec![], mail_subject.clone()),
            (None, _) => {
                let first: String = body.lines().next().unwrap_or("").chars().take(60).collect();
                (
                    None,
                    vec![],
                    if first.trim().is_empty() {
                        list.name.clone()
                    } else {
                        first
                    },
                )
            }
        };
        // A mail's text (not the subject line the room shows first) goes out as it came.
        let text = if from_mail && parent.is_none() {
            text.strip_prefix(&format!("{mail_subject}\n\n"))
                .unwrap_or(&text)
                .to_owned()
        } else {
            text
        };
        let html = (content["format"] == "org.matrix.custom.html")
            .then(|| content["formatted_body"].as_str())
            .flatten()
            .map(ammonia::clean);
        if !from_mail {
            let entry = format!("{message_id}\t\t{subject}");
            let mut writes = vec![
                (ns::MSGID, message_id.as_str(), event_id),
                (ns::EVENT, event_id, entry.as_str()),
            ];
            if let Some(root) = &root {
                // A mail answering this one belongs to the same thread.
                writes.push((ns::ROOT, event_id, root.as_str()));
            }
            self.store.set_all(&writes)?;
        }
        let mail = Outgoing {
            list,
            author: &author,
            message_id: &message_id,
            in_reply_to: in_reply_to.as_deref(),
            references,
            reply_to: None,
            subject: &subject,
            text: &text,
            html: html.as_deref(),
            automatic: false,
            date: now(),
            attachments: &attachments,
        };
        let raw = mail.render();
        drop(attachments);
        let mut each = Vec::new();
        // Someone who claimed their address does not get their own words back either.
        let claimed = claims::remote_of(&self.store, sender)?;
        for (address, mode) in self.subscribers(list)? {
            if Some(&address) == author_address.as_ref() || Some(&address) == claimed.as_ref() {
                continue;
            }
            if mode == "digest" {
                continue;
            }
            each.push(address);
        }
        self.deliver(list, &each, &raw).await?;
        self.append(
            "digest_next",
            ns::DIGEST,
            &format!("{}\t", list.address),
            &format!("{author} ({subject}):\n{text}\n"),
        )
    }

    /// Downloads files to attach to a mail, as long as together, base64-encoded as the mail
    /// carries them, they stay within `max_attachment_bytes` (at most [`MAX_ATTACHMENTS`]);
    /// the names of those left out (too large, or not to be had).
    async fn fetch_files(
        &self,
        files: &[(String, String, String)],
    ) -> (Vec<message::Attachment>, Vec<String>) {
        let mut room_left = self.config.mail.max_attachment_bytes;
        let (mut attached, mut left_out) = (Vec::new(), Vec::new());
        for (i, (url, name, mime)) in files.iter().enumerate() {
            // Base64 takes 4 bytes for 3, and 2 more for each line of 76.
            let raw_left = room_left / 78 * 57;
            if i >= MAX_ATTACHMENTS || raw_left == 0 {
                left_out.push(name.clone());
                continue;
            }
            match self.client.download(url, raw_left).await {
                Ok(Some((data, served_type))) => {
                    room_left = room_left.saturating_sub(message::encoded_len(data.len()));
                    let mime = if mime.is_empty() {
                        served_type
                    } else {
                        mime.clone()
                    };
                    attached.push(message::Attachment {
                        name: name.clone(),
                        mime,
                        data,
                    });
                }
                Ok(None) => left_out.push(name.clone()),
                Err(e) => {
                    tracing::warn!("{url} could not be attached: {e}");
                    left_out.push(name.clone());
                }
            }
        }
        (attached, left_out)
    }

    /// Stores `value` under the next number of `counter` (as `{prefix}{seq:020}` in
    /// `namespace`), advancing the counter in the same atomic write.
    fn append(
        &self,
        counter: &str,
        namespace: &str,
        prefix: &str,
        value: &str,
    ) -> anyhow::Result<()> {
        let _held = self.counters.lock().unwrap();
        let seq = self
            .store
            .get(ns::META, counter)?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0u64);
        self.store.set_all(&[
            (namespace, &format!("{prefix}{seq:020}"), value),
            (ns::META, counter, &(seq + 1).to_string()),
        ])?;
        Ok(())
    }

    /// Sends each list's digest to its digest subscribers every `digest_interval_secs`,
    /// forever; the items are dropped once sent (with none, nothing is sent).
    pub async fn run_digests(&self) {
        let every = Duration::from_secs(self.config.mail.digest_interval_secs.max(1));
        loop {
            tokio::time::sleep(every).await;
            for list in self.config.lists.clone() {
                if let Err(e) = self.send_digest(&list).await {
                    tracing::warn!("the digest of {}: {e:#}", list.address);
                }
            }
        }
    }

    async fn send_digest(&self, list: &ListConfig) -> anyhow::Result<()> {
        let prefix = format!("{}\t", list.address);
        let items: Vec<(String, String)> = self
            .store
            .entries(ns::DIGEST)?
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .collect();
        if items.is_empty() {
            return Ok(());
        }
        let readers: Vec<String> = self
            .subscribers(list)?
            .into_iter()
            .filter(|(_, mode)| mode == "digest")
            .map(|(a, _)| a)
            .collect();
        if !readers.is_empty() {
            let text = items
                .iter()
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join("\n----\n\n");
            let id = format!(
                "<digest.{}@{}>",
                sha1_hex(&items[0].0),
                message::domain(list)
            );
            let subject = format!("{} digest: {} messages", list.name, items.len());
            let mail = Outgoing {
                list,
                author: &list.name,
                message_id: &id,
                in_reply_to: None,
                references: vec![],
                reply_to: None,
                subject: &subject,
                text: &text,
                html: None,
                automatic: false,
                date: now(),
                attachments: &[],
            };
            self.deliver(list, &readers, &mail.render()).await?;
        }
        for (k, _) in items {
            self.store.remove(ns::DIGEST, &k)?;
        }
        Ok(())
    }

    /// The display name of a Matrix user in a room (falls back to the localpart).
    async fn display_name(&self, room: &str, user: &str) -> String {
        self.client.display_name_in(room, user).await
    }

    // ---- Commands in rooms ---------------------------------------------------------------

    /// The power level of a user in a room.
    async fn power(&self, room: &str, user: &str) -> i64 {
        let levels = self
            .client
            .bot()
            .get_state(room, "m.room.power_levels", "")
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        levels["users"][user]
            .as_i64()
            .or_else(|| levels["users_default"].as_i64())
            .unwrap_or(0)
    }

    /// `!subscribe ADDRESS [digest]`, `!unsubscribe ADDRESS`, `!subscribers`: in a portal by
    /// its moderators, or in the admin room with the list's address first.
    async fn command(
        &self,
        list: &ListConfig,
        reply_room: &str,
        words: &[&str],
    ) -> anyhow::Result<()> {
        let answer = match words {
            ["!subscribe", address, rest @ ..] if address.contains('@') => {
                let mode = if rest.first() == Some(&"digest") {
                    "digest"
                } else {
                    "each"
                };
                let address = address.to_lowercase();
                self.store
                    .set(ns::SUB, &format!("{}\t{address}", list.address), mode)?;
                format!("{address} is subscribed to {} ({mode}).", list.address)
            }
            ["!unsubscribe", address] => {
                let address = address.to_lowercase();
                let key = format!("{}\t{address}", list.address);
                if self.store.get(ns::SUB, &key)?.is_some() {
                    self.store.remove(ns::SUB, &key)?;
                    format!("{address} is unsubscribed from {}.", list.address)
                } else {
                    format!("{address} is not subscribed to {}.", list.address)
                }
            }
            ["!subscribers"] => {
                let subs = self.subscribers(list)?;
                let lines: Vec<String> = subs.iter().map(|(a, m)| format!("{a} ({m})")).collect();
                format!(
                    "{} subscribers of {}: {}",
                    subs.len(),
                    list.address,
                    lines.join(", ")
                )
            }
            _ => format!(
                "Commands (moderators): !subscribe ADDRESS [digest], !unsubscribe ADDRESS, !subscribers. \
                 Anyone can mail {} or {}.",
                message::command_address(list, "subscribe"),
                message::command_address(list, "unsubscribe")
            ),
        };
        self.client.bot().send_notice(reply_room, &answer).await?;
        Ok(())
    }

    /// Whether a Matrix user is the bot or one of the ghosts.
    fn is_ghost(&self, user_id: &str) -> bool {
        user_id.starts_with(&format!("@{}", self.config.user_prefix))
            && user_id.ends_with(&format!(":{}", self.config.server_name))
    }

    async fn on_matrix(&self, event: Value) -> anyhow::Result<()> {
        let sender = event["sender"].as_str().unwrap_or_default();
        let room = event["room_id"].as_str().unwrap_or_default();
        if event["type"] != "m.room.message" || sender == self.client.bot_id() {
            return Ok(());
        }
        let body = event["content"]["body"].as_str().unwrap_or_default().trim();
        if self.admin_room.is(room) && !self.is_ghost(sender) {
            let words: Vec<&str> = body.split_whitespace().collect();
            if let Some(command) = words.first().filter(|w| w.starts_with('!')) {
                match words
                    .get(1)
                    .and_then(|l| self.list_by_address(&l.to_lowercase()))
                {
                    Some(list) => {
                        let mut rest = vec![*command];
                        rest.extend(&words[2..]);
                        let list = list.clone();
                        self.command(&list, room, &rest).await?;
                    }
                    None => {
                        let lists: Vec<&str> = self
                            .config
                            .lists
                            .iter()
                            .map(|l| l.address.as_str())
                            .collect();
                        self.admin_notice(&format!(
                            "Commands: !subscribers LIST, !subscribe LIST ADDRESS [digest], !unsubscribe LIST ADDRESS. Lists: {}",
                            lists.join(", ")
                        ))
                        .await;
                    }
                }
            }
            return Ok(());
        }
        let Some(address) = self.store.get(ns::ROOM, room)? else {
            return Ok(());
        };
        let Some(list) = self.list_by_address(&address).cloned() else {
            return Ok(());
        };
        // Commands come from people in the room, not from mail shown as them.
        let person =
            !self.is_ghost(sender) && !claims::relayed_by(&event, self.client.appservice_id());
        let words: Vec<&str> = body.split_whitespace().collect();
        match words.as_slice() {
            ["!claim", address] if person => {
                return self
                    .claim(&list, room, sender, &address.to_lowercase())
                    .await;
            }
            ["!confirm", code] if person => {
                return self.confirm(room, sender, code).await;
            }
            ["!unclaim"] if person => {
                let bot = self.client.bot();
                return Ok(claims::unclaim(&self.store, &bot, room, sender, str::to_owned).await?);
            }
            _ => {}
        }
        let list_command = matches!(
            words.first(),
            Some(&"!subscribe" | &"!unsubscribe" | &"!subscribers")
        );
        if person && list_command {
            if self.power(room, sender).await >= 50 {
                let words: Vec<&str> = body.split_whitespace().collect();
                return self.command(&list, room, &words).await;
            }
            self.client
                .bot()
                .send_notice(room, "List commands are for the room's moderators.")
                .await?;
            return Ok(());
        }
        if body.starts_with('!') {
            return Ok(()); // A command (for the bots, say), not something to mail.
        }
        self.relay(&list, room, &event).await
    }

    /// The ghost user of a mail address.
    fn ghost_of(&self, address: &str) -> String {
        self.client.user_id(&format!(
            "{}{}",
            self.config.user_prefix,
            escape_localpart(address)
        ))
    }

    /// `!claim ADDRESS`: a code goes to the address; whoever reads it there proves it is theirs
    /// by saying `!confirm CODE` from the Matrix account that asked.
    async fn claim(
        &self,
        list: &ListConfig,
        room: &str,
        user: &str,
        address: &str,
    ) -> anyhow::Result<()> {
        let bot = self.client.bot();
        if !address.contains('@') || address.contains(char::is_whitespace) {
            bot.send_notice(room, "Say which address: !claim you@example.org")
                .await?;
            return Ok(());
        }
        let code = claims::start(&self.store, user, address)?;
        let text = format!(
            "{user} asks to be known in the room {} as the person who writes from {address}.

             If that is you, say this in the room from that Matrix account:

    !confirm {code}

             The code is good for an hour. If it is not you, ignore this mail.",
            list.name
        );
        let id = format!(
            "<claim.{}@{}>",
            sha1_hex(&format!("{user}{address}{code}")),
            message::domain(list)
        );
        let mail = Outgoing {
            list,
            author: &list.name,
            message_id: &id,
            in_reply_to: None,
            references: vec![],
            reply_to: None,
            subject: &format!("{}: is {address} yours?", list.name),
            text: &text,
            html: None,
            automatic: true,
            date: now(),
            attachments: &[],
        };
        self.deliver(
            list,
            std::slice::from_ref(&address.to_owned()),
            &mail.render(),
        )
        .await?;
        bot.send_notice(
            room,
            &format!(
                "A code went to {address}. Say !confirm CODE here to prove the address is yours."
            ),
        )
        .await?;
        Ok(())
    }

    /// `!confirm CODE`: links the address to the account, moves the ghost's entry and thanks
    /// over (the bots hear the ghost say so), and the ghost leaves: the room shows one person.
    async fn confirm(&self, room: &str, user: &str, code: &str) -> anyhow::Result<()> {
        let bot = self.client.bot();
        let Some(claim) = claims::prove(&self.store, code, |p| p.user == user)? else {
            bot.send_notice(
                room,
                "That code is not right (or it expired): ask for a new one with !claim ADDRESS.",
            )
            .await?;
            return Ok(());
        };
        claims::link(&self.store, &claim.remote, user)?;
        let ghost = self.client.intent(&self.ghost_of(&claim.remote));
        ghost.ensure_registered().await?;
        ghost
            .send_message(
                room,
                json!({ "msgtype": "m.text", "body": format!("!me is {user}") }),
            )
            .await?;
        bot.send_notice(
            room,
            &format!(
                "{} is {user}: mail from that address shows as them from now on.",
                claim.remote
            ),
        )
        .await?;
        // Out of every portal: the person is there themselves.
        for (_, portal) in self.store.entries(ns::PORTAL)? {
            if self
                .client
                .bot()
                .joined_members(&portal)
                .await?
                .iter()
                .any(|m| m == ghost.user_id())
            {
                ghost.leave(&portal).await?;
            }
        }
        Ok(())
    }
}

/// The author's address (From, else Sender), lower-cased.
fn sender(mail: &Message<'_>) -> Option<String> {
    mail.from()
        .and_then(|a| a.first())
        .or_else(|| mail.sender().and_then(|a| a.first()))
        .and_then(|a| a.address())
        .map(str::to_lowercase)
}

impl lmtp::Inbox for Bridge {
    fn accepts(&self, rcpt: &str) -> bool {
        self.list_of(rcpt).is_some()
    }

    fn store(&self, from: &str, rcpts: &[String], message: &[u8]) -> anyhow::Result<()> {
        let item = format!("{from}\n{}\n{}", rcpts.join(","), B64.encode(message));
        self.append("spool_next", ns::SPOOL, "", &item)?;
        self.spool.notify_one();
        Ok(())
    }
}

impl Handler for Bridge {
    async fn handle_event(&self, event: Value) {
        let id = event["event_id"].as_str().unwrap_or_default().to_owned();
        if let Err(e) = self.on_matrix(event).await {
            tracing::warn!("mailing {id}: {e:#}");
            self.admin_notice(&format!("Could not mail {id}: {e:#}"))
                .await;
        }
    }
}

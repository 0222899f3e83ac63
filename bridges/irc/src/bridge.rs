//! The Matrix side of the bridge: portal rooms, ghost users, the admin room, and the
//! translation of events in both directions.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use serde_json::{Value, json};
use tsunagu_appservice::{AdminRoom, Client, Handler, Intent, Store, claims};

use crate::{
    config::Config,
    network::{IrcEvent, Kind, Network},
    proto::{self, fold, localpart_for},
};

/// Store namespaces.
mod ns {
    /// `{network}\t{folded channel}` → portal room ID.
    pub const PORTAL: &str = "portal";
    /// Portal room ID → `{network}\t{channel}`.
    pub const ROOM: &str = "room";
    /// `{network}\t{folded nick}` → ghost user ID.
    pub const GHOST: &str = "ghost";
    /// Ghost user ID → nick it currently stands for.
    pub const GHOST_NICK: &str = "ghost_nick";
}

/// The bridge: shared by the appservice handler and the per-network IRC event loops.
pub struct Bridge {
    config: Config,
    client: Client,
    /// Acts as people who claimed their nick (double puppeting), if configured.
    double: Option<Client>,
    store: Arc<Store>,
    networks: Vec<Arc<Network>>,
    admin_room: AdminRoom,
    /// `(room, user)` → display name, from member events seen or fetched.
    display_names: Mutex<HashMap<(String, String), String>>,
}

fn key(network: &str, name: &str) -> String {
    format!("{network}\t{}", fold(name))
}

impl Bridge {
    /// A bridge over the given networks; call [`Bridge::setup`] before use.
    pub fn new(
        config: Config,
        client: Client,
        double: Option<Client>,
        store: Arc<Store>,
        networks: Vec<Arc<Network>>,
    ) -> Self {
        Self {
            config,
            client,
            double,
            store,
            networks,
            admin_room: AdminRoom::default(),
            display_names: Mutex::default(),
        }
    }

    /// Registers the bot, finds or creates the admin room, creates the portals of the
    /// configured channels, and tells each network which channels to join.
    pub async fn setup(&self) -> anyhow::Result<()> {
        self.admin_room
            .setup(
                &self.client,
                &self.store,
                "IRC bridge",
                "Bridge status and commands: !link #channel [network], !unlink #channel [network], !help",
                self.config.admin_user.as_deref(),
                self.config.admin_room.as_deref(),
            )
            .await?;
        let invite: Vec<String> = self.config.admin_user.iter().cloned().collect();
        for net in &self.networks {
            for channel in net.config.channels.clone() {
                self.ensure_portal(net, &channel, &invite).await?;
            }
            for (k, _) in self.store.entries(ns::PORTAL)? {
                if let Some((name, _)) = k.split_once('\t')
                    && name == net.config.name
                    && let Some(channel) = self.portal_channel(&k)?
                {
                    net.join_channel(&channel).await;
                }
            }
        }
        Ok(())
    }

    /// The channel name of a portal key (stored beside the room ID).
    fn portal_channel(&self, portal_key: &str) -> anyhow::Result<Option<String>> {
        let Some(room) = self.store.get(ns::PORTAL, portal_key)? else {
            return Ok(None);
        };
        Ok(self
            .store
            .get(ns::ROOM, &room)?
            .and_then(|v| v.split_once('\t').map(|(_, c)| c.to_owned())))
    }

    fn network(&self, name: &str) -> Option<&Arc<Network>> {
        self.networks.iter().find(|n| n.config.name == name)
    }

    /// Posts a notice in the admin room (logged if that fails).
    pub async fn admin_notice(&self, text: &str) {
        self.admin_room.notice(&self.client, text).await
    }

    /// The portal room of a channel, created (and the channel joined) when missing.
    pub async fn ensure_portal(
        &self,
        net: &Network,
        channel: &str,
        invite: &[String],
    ) -> anyhow::Result<String> {
        let k = key(&net.config.name, channel);
        if let Some(room) = self.store.get(ns::PORTAL, &k)? {
            for user in invite {
                let _ = self.client.bot().invite(&room, user).await;
            }
            net.join_channel(channel).await;
            return Ok(room);
        }
        let prefix = net.config.ghost_prefix(&self.config);
        let alias = format!(
            "{prefix}{}",
            localpart_for(channel.trim_start_matches(['#', '&', '+', '!']))
        );
        let body = json!({
            "preset": "public_chat",
            "name": channel,
            "topic": "",
            "room_alias_name": alias,
            "invite": invite,
            "power_level_content_override": { "events": { "m.room.topic": 0 } },
        });
        let room = self
            .client
            .bot()
            .create_portal(body)
            .await
            .with_context(|| format!("creating the portal of {channel}"))?;
        self.store
            .set(ns::ROOM, &room, &format!("{}\t{channel}", net.config.name))?;
        self.store.set(ns::PORTAL, &k, &room)?;
        net.join_channel(channel).await;
        tracing::info!("portal of {channel} on {}: {room}", net.config.name);
        Ok(room)
    }

    fn portal(&self, net: &Network, channel: &str) -> Option<String> {
        self.store
            .get(ns::PORTAL, &key(&net.config.name, channel))
            .ok()
            .flatten()
    }

    /// Whether a Matrix user is one of ours (the bot or a ghost), whose events are not relayed.
    fn is_ours(&self, user_id: &str) -> bool {
        user_id == self.client.bot_id()
            || (user_id.starts_with(&format!("@{}", self.config.user_prefix))
                && user_id.ends_with(&format!(":{}", self.config.server_name)))
    }

    /// The ghost of an IRC nick: registered, named after the nick, mapped persistently.
    async fn ghost(&self, net: &Network, nick: &str) -> anyhow::Result<Intent> {
        let k = key(&net.config.name, nick);
        if let Some(user) = self.store.get(ns::GHOST, &k)? {
            return Ok(self.client.intent(&user));
        }
        // A new nick: its own ghost, unless that ghost still stands for another nick.
        let base = format!(
            "{}{}",
            net.config.ghost_prefix(&self.config),
            localpart_for(nick)
        );
        let mut localpart = base.clone();
        let mut n = 2;
        let user = loop {
            let user = self.client.user_id(&localpart);
            match self.store.get(ns::GHOST_NICK, &user)? {
                Some(other) if fold(&other) != fold(nick) => {
                    localpart = format!("{base}_{n}");
                    n += 1;
                }
                _ => break user,
            }
        };
        let intent = self.client.intent(&user);
        intent.ensure_registered().await?;
        intent.set_display_name(nick).await?;
        self.store.set(ns::GHOST_NICK, &user, nick)?;
        self.store.set(ns::GHOST, &k, &user)?;
        Ok(intent)
    }

    /// Shows one IRC event on Matrix.
    pub async fn on_irc(&self, net: &Network, event: IrcEvent) -> anyhow::Result<()> {
        match event {
            IrcEvent::Status(text) => self.admin_notice(&text).await,
            IrcEvent::Private { nick, text } if text.trim().starts_with("!claim ") => {
                self.prove_claim(net, &nick, text.trim()["!claim ".len()..].trim())
                    .await?
            }
            IrcEvent::Message { nick, text, .. } if text.trim().starts_with("!claim ") => {
                // A proof for a claim, not something to show.
                self.prove_claim(net, &nick, text.trim()["!claim ".len()..].trim())
                    .await?
            }
            IrcEvent::Private { nick, text } => {
                self.admin_notice(&format!(
                    "{}: private message from {nick}: {text}",
                    net.config.name
                ))
                .await
            }
            IrcEvent::Message {
                channel,
                nick,
                text,
                kind,
            } => {
                let Some(room) = self.portal(net, &channel) else {
                    return Ok(());
                };
                let ghost = match self.person(net, &nick)? {
                    Some(person) => person,
                    None => self.ghost(net, &nick).await?,
                };
                ghost.ensure_joined(&room).await?;
                match kind {
                    Kind::Text => ghost.send_text(&room, &text).await?,
                    Kind::Notice => ghost.send_notice(&room, &text).await?,
                    Kind::Emote => ghost.send_emote(&room, &text).await?,
                };
            }
            IrcEvent::Join { channel, nick } => {
                if let Some(room) = self.portal(net, &channel)
                    && self.person(net, &nick)?.is_none()
                {
                    self.ghost(net, &nick).await?.ensure_joined(&room).await?;
                }
            }
            IrcEvent::Names { channel, nicks } => {
                if let Some(room) = self.portal(net, &channel) {
                    for nick in nicks {
                        self.ghost(net, &nick).await?.ensure_joined(&room).await?;
                    }
                }
            }
            IrcEvent::Part { channel, nick } => {
                if let Some(room) = self.portal(net, &channel) {
                    self.ghost(net, &nick).await?.leave(&room).await?;
                }
            }
            IrcEvent::Quit { nick, channels } => {
                let ghost = self.ghost(net, &nick).await?;
                for channel in channels {
                    if let Some(room) = self.portal(net, &channel) {
                        ghost.leave(&room).await?;
                    }
                }
            }
            IrcEvent::Nick { old, new } => {
                // The same ghost follows the person; its display name becomes the new nick.
                let ghost = self.ghost(net, &old).await?;
                let user = ghost.user_id().to_owned();
                self.store.remove(ns::GHOST, &key(&net.config.name, &old))?;
                if let Some(previous) = self.store.get(ns::GHOST, &key(&net.config.name, &new))?
                    && previous != user
                {
                    // Whoever had the new nick before keeps their ghost, without the nick.
                    self.store.remove(ns::GHOST_NICK, &previous)?;
                }
                self.store
                    .set(ns::GHOST, &key(&net.config.name, &new), &user)?;
                self.store.set(ns::GHOST_NICK, &user, &new)?;
                ghost.set_display_name(&new).await?;
            }
            IrcEvent::Topic {
                channel,
                nick,
                topic,
            } => {
                let Some(room) = self.portal(net, &channel) else {
                    return Ok(());
                };
                let current = self
                    .client
                    .bot()
                    .get_state(&room, "m.room.topic", "")
                    .await?;
                if current.as_ref().and_then(|c| c["topic"].as_str()) == Some(topic.as_str()) {
                    return Ok(());
                }
                let intent = match nick {
                    Some(nick) => self.ghost(net, &nick).await?,
                    None => self.client.bot(),
                };
                intent.ensure_joined(&room).await?;
                intent.set_topic(&room, &topic).await?;
            }
        }
        Ok(())
    }

    /// The display name of a Matrix user in a room (falls back to the localpart).
    async fn display_name(&self, room: &str, user: &str) -> String {
        let k = (room.to_owned(), user.to_owned());
        if let Some(name) = self.display_names.lock().unwrap().get(&k) {
            return name.clone();
        }
        let name = self.client.display_name_in(room, user).await;
        self.display_names.lock().unwrap().insert(k, name.clone());
        name
    }

    /// Shows one Matrix event on IRC (or runs an admin command).
    async fn on_matrix(&self, event: Value) -> anyhow::Result<()> {
        let sender = event["sender"].as_str().unwrap_or_default();
        let room = event["room_id"].as_str().unwrap_or_default();
        let kind = event["type"].as_str().unwrap_or_default();
        if kind == "m.room.member" {
            let user = event["state_key"].as_str().unwrap_or_default();
            let k = (room.to_owned(), user.to_owned());
            match event["content"]["displayname"].as_str() {
                Some(name) if event["content"]["membership"] == "join" => {
                    self.display_names
                        .lock()
                        .unwrap()
                        .insert(k, name.to_owned());
                }
                _ => {
                    self.display_names.lock().unwrap().remove(&k);
                }
            }
            return Ok(());
        }
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
        let Some(portal) = self.store.get(ns::ROOM, room)? else {
            return Ok(());
        };
        let Some((net_name, channel)) = portal.split_once('\t') else {
            return Ok(());
        };
        let Some(net) = self.network(net_name).cloned() else {
            return Ok(());
        };
        if claims::relayed_by(&event, self.client.appservice_id()) {
            return Ok(()); // Said on IRC by someone who claimed their nick: it is there already.
        }
        let body = event["content"]["body"].as_str().unwrap_or_default().trim();
        if kind == "m.room.message"
            && let Some(nick) = body.strip_prefix("!claim ")
        {
            return self.start_claim(&net, room, sender, nick.trim()).await;
        }
        if kind == "m.room.message" && body == "!unclaim" {
            let shown = |remote: &str| {
                let (net, nick) = remote
                    .trim_start_matches("irc:")
                    .split_once('/')
                    .unwrap_or(("", remote));
                format!("{nick} on {net}")
            };
            let bot = self.client.bot();
            return Ok(claims::unclaim(&self.store, &bot, room, sender, shown).await?);
        }
        let lines = match kind {
            "m.room.message" => {
                // Someone who claimed a nick here speaks under it; anyone else by their name.
                let claimed = claims::remote_of(&self.store, sender)?.and_then(|r| {
                    r.strip_prefix(&format!("irc:{}/", net.config.name))
                        .map(str::to_owned)
                });
                let name = match claimed {
                    Some(nick) => nick,
                    None => self.display_name(room, sender).await,
                };
                render_message(&event["content"], &name, channel, &net.nick())
            }
            "m.room.topic" => {
                let topic = event["content"]["topic"].as_str().unwrap_or_default();
                vec![proto::line("TOPIC", &[channel, topic])]
            }
            _ => return Ok(()),
        };
        net.send_lines(&lines).await;
        Ok(())
    }

    /// The claim name of a nick: `irc:{network}/{folded nick}`.
    fn remote(net: &Network, nick: &str) -> String {
        format!("irc:{}/{}", net.config.name, fold(nick))
    }

    /// The Matrix account of someone who claimed their nick, to act as (with double
    /// puppeting).
    fn person(&self, net: &Network, nick: &str) -> anyhow::Result<Option<Intent>> {
        let Some(double) = &self.double else {
            return Ok(None);
        };
        Ok(claims::linked_user(&self.store, &Self::remote(net, nick))?.map(|u| double.intent(&u)))
    }

    /// `!claim NICK` in a portal: the asker proves the nick is theirs by saying the code on IRC
    /// from it.
    async fn start_claim(
        &self,
        net: &Network,
        room: &str,
        user: &str,
        nick: &str,
    ) -> anyhow::Result<()> {
        let bot = self.client.bot();
        if nick.is_empty() || nick.contains(char::is_whitespace) {
            bot.send_notice(room, "Say which nick: !claim yournick")
                .await?;
            return Ok(());
        }
        let code = claims::start(&self.store, user, &Self::remote(net, nick))?;
        bot.send_notice(
            room,
            &format!(
                "To prove {nick} on {} is yours, send this from {nick} within an hour: /msg {} !claim {code}",
                net.config.name,
                net.nick()
            ),
        )
        .await?;
        Ok(())
    }

    /// `!claim CODE` from a nick: if it proves a pending claim of that nick, the nick is linked
    /// to the Matrix account that asked, the ghost's entry and thanks move over (the bots hear
    /// the ghost say so), and the ghost leaves the portals: the rooms show one person.
    async fn prove_claim(&self, net: &Network, nick: &str, code: &str) -> anyhow::Result<()> {
        let remote = Self::remote(net, nick);
        let Some(claim) = claims::prove(&self.store, code, |p| p.remote == remote)? else {
            tracing::info!(
                "{nick} on {} said a claim code that proves nothing",
                net.config.name
            );
            return Ok(());
        };
        claims::link(&self.store, &remote, &claim.user)?;
        let ghost = self.ghost(net, nick).await?;
        let mut said = false;
        for (k, room) in self.store.entries(ns::PORTAL)? {
            if !k.starts_with(&format!("{}\t", net.config.name)) {
                continue;
            }
            let members = self.client.bot().joined_members(&room).await?;
            if !members.iter().any(|m| m == ghost.user_id()) {
                continue;
            }
            if !said {
                ghost
                    .send_message(
                        &room,
                        json!({ "msgtype": "m.text", "body": format!("!me is {}", claim.user) }),
                    )
                    .await?;
                said = true;
            }
            self.client
                .bot()
                .send_notice(
                    &room,
                    &format!(
                        "{nick} is {}: what they say on IRC shows as them from now on.",
                        claim.user
                    ),
                )
                .await?;
            if self.double.is_some() {
                ghost.leave(&room).await?;
            }
        }
        Ok(())
    }

    /// Admin room commands.
    async fn command(&self, sender: &str, body: &str) -> anyhow::Result<()> {
        let mut words = body.split_whitespace();
        let (command, channel, network) = (words.next(), words.next(), words.next());
        let net = match network {
            Some(name) => self.network(name),
            None => self.networks.first(),
        };
        match (command, channel, net) {
            (Some("!link"), Some(channel), Some(net))
                if channel.starts_with(['#', '&', '+', '!']) =>
            {
                let net = net.clone();
                let room = self
                    .ensure_portal(&net, channel, &[sender.to_owned()])
                    .await?;
                self.admin_notice(&format!(
                    "Linked {channel} on {} to {room}; you are invited.",
                    net.config.name
                ))
                .await;
            }
            (Some("!unlink"), Some(channel), Some(net)) => {
                let net = net.clone();
                let k = key(&net.config.name, channel);
                if let Some(room) = self.store.get(ns::PORTAL, &k)? {
                    self.store.remove(ns::PORTAL, &k)?;
                    self.store.remove(ns::ROOM, &room)?;
                    net.part_channel(channel).await;
                    self.admin_notice(&format!(
                        "Unlinked {channel} on {} from {room}.",
                        net.config.name
                    ))
                    .await;
                } else {
                    self.admin_notice(&format!("{channel} is not linked."))
                        .await;
                }
            }
            (Some("!link" | "!unlink"), _, None) => {
                let names: Vec<&str> = self
                    .networks
                    .iter()
                    .map(|n| n.config.name.as_str())
                    .collect();
                self.admin_notice(&format!(
                    "No network {:?}. Networks: {}",
                    network.unwrap_or_default(),
                    names.join(", ")
                ))
                .await;
            }
            (Some(c), _, _) if c.starts_with('!') => {
                let names: Vec<&str> = self
                    .networks
                    .iter()
                    .map(|n| n.config.name.as_str())
                    .collect();
                self.admin_notice(&format!(
                    "Commands: !link #channel [network], !unlink #channel [network]. Networks: {}",
                    names.join(", ")
                ))
                .await;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The IRC lines for a Matrix message in relay mode: `<name> text`, one or more IRC lines per
/// Matrix line, each within the line limit; emotes as CTCP ACTION, notices as NOTICE, edits as
/// `<name> * corrected text`.
pub fn render_message(content: &Value, name: &str, channel: &str, own_nick: &str) -> Vec<String> {
    let edit = content["m.relates_to"]["rel_type"] == "m.replace";
    let content = if edit && content["m.new_content"].is_object() {
        &content["m.new_content"]
    } else {
        content
    };
    let mut body = content["body"].as_str().unwrap_or_default();
    if edit {
        body = body.strip_prefix("* ").unwrap_or(body);
    }
    let msgtype = content["msgtype"].as_str().unwrap_or("m.text");
    let (command, prefix, action) = match msgtype {
        "m.emote" => ("PRIVMSG", format!("{name} "), true),
        "m.notice" => ("NOTICE", format!("<{name}> "), false),
        "m.image" | "m.file" | "m.audio" | "m.video" => {
            ("PRIVMSG", format!("<{name}> [file] "), false)
        }
        _ if edit => ("PRIVMSG", format!("<{name}> * "), false),
        _ => ("PRIVMSG", format!("<{name}> "), false),
    };
    let mut budget = proto::text_budget(command, channel, own_nick).saturating_sub(prefix.len());
    if action {
        budget = budget.saturating_sub("\x01ACTION \x01".len());
    }
    let mut lines = Vec::new();
    for text in body.lines().filter(|l| !l.trim().is_empty()) {
        for piece in proto::split_to_fit(text, budget) {
            let text = format!("{prefix}{piece}");
            let text = if action { proto::action(&text) } else { text };
            lines.push(proto::line(command, &[channel, &text]));
        }
    }
    lines
}

impl Handler for Bridge {
    async fn handle_event(&self, event: Value) {
        let id = event["event_id"].as_str().unwrap_or_default().to_owned();
        if let Err(e) = self.on_matrix(event).await {
            tracing::warn!("relaying {id}: {e:#}");
            self.admin_notice(&format!("Could not relay {id} to IRC: {e:#}"))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_emote_notice_edit_and_multiline() {
        let r = |c: Value| render_message(&c, "Alice", "#c", "bridge");
        assert_eq!(
            r(json!({"msgtype":"m.text","body":"hi"})),
            vec!["PRIVMSG #c :<Alice> hi"]
        );
        assert_eq!(
            r(json!({"msgtype":"m.emote","body":"waves"})),
            vec!["PRIVMSG #c :\x01ACTION Alice waves\x01"]
        );
        assert_eq!(
            r(json!({"msgtype":"m.notice","body":"n"})),
            vec!["NOTICE #c :<Alice> n"]
        );
        assert_eq!(
            r(
                json!({"msgtype":"m.text","body":"* fixed","m.new_content":{"msgtype":"m.text","body":"fixed"},
                     "m.relates_to":{"rel_type":"m.replace","event_id":"$x"}})
            ),
            vec!["PRIVMSG #c :<Alice> * fixed"]
        );
        assert_eq!(
            r(json!({"msgtype":"m.text","body":"one\n\ntwo"})),
            vec!["PRIVMSG #c :<Alice> one", "PRIVMSG #c :<Alice> two"]
        );
        let long = "x".repeat(1200);
        let lines = r(json!({"msgtype":"m.text","body": long}));
        assert_eq!(lines.len(), 3);
        for l in &lines {
            // The relayed line, with the longest possible prefix, fits in 512 bytes.
            assert!(
                l.len() + 1 + "bridge".len() + 2 + 10 + 1 + 63 + 1 + 2 <= 512,
                "{}",
                l.len()
            );
        }
        let text: String = lines
            .iter()
            .map(|l| l.trim_start_matches("PRIVMSG #c :<Alice> "))
            .collect();
        assert_eq!(text, long);
    }
}

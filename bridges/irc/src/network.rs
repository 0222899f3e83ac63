//! One IRC network: the bridge's connection (register, join, answer PINGs), reconnection with
//! exponential backoff, and what it sees turned into [`IrcEvent`]s for the Matrix side.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpStream, tcp::OwnedWriteHalf},
    sync::{mpsc, watch},
    time::{Instant, sleep, timeout},
};

use crate::{
    config::NetworkConfig,
    proto::{self, Message, fold},
};

/// How a message was sent on IRC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// PRIVMSG.
    Text,
    /// NOTICE.
    Notice,
    /// CTCP ACTION (`/me`).
    Emote,
}

/// Something that happened on an IRC network that the Matrix side shows.
#[derive(Clone, Debug)]
pub enum IrcEvent {
    /// The connection came up or went down, or the server reported an error.
    Status(String),
    /// A message in a channel.
    Message {
        /// Channel name.
        channel: String,
        /// Sender's nick.
        nick: String,
        /// The text (for an emote, without the CTCP wrapping).
        text: String,
        /// PRIVMSG, NOTICE or ACTION.
        kind: Kind,
    },
    /// A private message to the bridge's nick.
    Private {
        /// Sender's nick.
        nick: String,
        /// The text.
        text: String,
    },
    /// Someone joined a channel.
    Join {
        /// Channel name.
        channel: String,
        /// Nick.
        nick: String,
    },
    /// Someone left a channel (PART or KICK).
    Part {
        /// Channel name.
        channel: String,
        /// Nick.
        nick: String,
    },
    /// Someone quit IRC; `channels` are the bridged channels they were in.
    Quit {
        /// Nick.
        nick: String,
        /// Channels they were in.
        channels: Vec<String>,
    },
    /// Someone changed nick.
    Nick {
        /// The old nick.
        old: String,
        /// The new nick.
        new: String,
    },
    /// A channel's topic was set (`nick` is `None` for the topic shown on join).
    Topic {
        /// Channel name.
        channel: String,
        /// Who set it, if it was just set.
        nick: Option<String>,
        /// The topic.
        topic: String,
    },
    /// The nicks in a channel, after we joined it.
    Names {
        /// Channel name.
        channel: String,
        /// Nicks, without mode prefixes, ours excluded.
        nicks: Vec<String>,
    },
}

/// A bridged IRC network: its connection state, shared by the connection task and the
/// Matrix side that sends into it.
pub struct Network {
    /// Its configuration.
    pub config: NetworkConfig,
    writer: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
    connected: watch::Sender<bool>,
    nick: Mutex<String>,
    /// Channels to be in (folded name → name as configured).
    channels: Mutex<HashMap<String, String>>,
    /// Who is in each channel (folded channel → folded nicks).
    members: Mutex<HashMap<String, HashSet<String>>>,
    /// Send throttle: when the next line may go.
    next_send: tokio::sync::Mutex<Instant>,
}

/// Lines may be sent this often once the burst is spent (flood protection).
const SEND_INTERVAL: Duration = Duration::from_millis(200);
/// How many lines may go at once.
const SEND_BURST: u32 = 10;

impl Network {
    /// A network, not yet connected.
    pub fn new(config: NetworkConfig) -> Self {
        let nick = config.nick.clone();
        Self {
            config,
            writer: tokio::sync::Mutex::new(None),
            connected: watch::channel(false).0,
            nick: Mutex::new(nick),
            channels: Mutex::default(),
            members: Mutex::default(),
            next_send: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// The bridge's current nick.
    pub fn nick(&self) -> String {
        self.nick.lock().unwrap().clone()
    }

    /// Whether `nick` is the bridge's own.
    pub fn is_me(&self, nick: &str) -> bool {
        fold(nick) == fold(&self.nick())
    }

    /// Adds a channel to the set the bridge is in; joins it now if connected.
    pub async fn join_channel(&self, channel: &str) {
        let new = self
            .channels
            .lock()
            .unwrap()
            .insert(fold(channel), channel.to_owned())
            .is_none();
        if new && *self.connected.borrow() {
            let _ = self.write_now(&proto::line("JOIN", &[channel])).await;
        }
    }

    /// Removes a channel from the set and parts it.
    pub async fn part_channel(&self, channel: &str) {
        self.channels.lock().unwrap().remove(&fold(channel));
        if *self.connected.borrow() {
            let _ = self.write_now(&proto::line("PART", &[channel])).await;
        }
    }

    /// Sends lines, in order, waiting for the connection if it is down (messages that arrive
    /// from Matrix while IRC is away are held here, and in the appservice inbox across
    /// restarts). A line is written again after a reconnect only if it had not been written.
    pub async fn send_lines(&self, lines: &[String]) {
        let mut connected = self.connected.subscribe();
        let mut i = 0;
        while i < lines.len() {
            if !*connected.borrow_and_update() {
                let _ = connected.changed().await;
                continue;
            }
            self.throttle().await;
            match self.write_now(&lines[i]).await {
                Ok(()) => i += 1,
                Err(e) => tracing::info!(
                    network = self.config.name,
                    "send failed, waiting for reconnect: {e}"
                ),
            }
        }
    }

    async fn throttle(&self) {
        let mut next = self.next_send.lock().await;
        let now = Instant::now();
        let earliest = now.checked_sub(SEND_INTERVAL * SEND_BURST).unwrap_or(now);
        if *next < earliest {
            *next = earliest;
        }
        if *next > now {
            sleep(*next - now).await;
        }
        *next += SEND_INTERVAL;
    }

    async fn write_now(&self, line: &str) -> std::io::Result<()> {
        let mut writer = self.writer.lock().await;
        let Some(w) = writer.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        tracing::debug!(network = self.config.name, "> {line}");
        let res = async {
            w.write_all(format!("{line}\r\n").as_bytes()).await?;
            w.flush().await
        }
        .await;
        if res.is_err() {
            *writer = None;
            self.connected.send_replace(false);
        }
        res
    }

    /// Connects, and reconnects with exponential backoff whenever the connection ends.
    /// Never returns.
    pub async fn run(&self, events: mpsc::UnboundedSender<IrcEvent>) {
        let min = Duration::from_millis(self.config.reconnect_min_ms.max(1));
        let max = Duration::from_millis(
            self.config
                .reconnect_max_ms
                .max(self.config.reconnect_min_ms),
        );
        let mut delay = min;
        let mut reported_down = false;
        loop {
            let (registered, reason) = match self.session(&events).await {
                Ok(registered) => (registered, "connection closed".to_owned()),
                Err((registered, e)) => (registered, e),
            };
            *self.writer.lock().await = None;
            self.connected.send_replace(false);
            self.members.lock().unwrap().clear();
            if registered {
                delay = min;
                reported_down = false;
            }
            if !reported_down {
                let _ = events.send(IrcEvent::Status(format!(
                    "Disconnected from {} ({}:{}): {reason}. Reconnecting in {} ms; messages from Matrix are queued.",
                    self.config.name,
                    self.config.host,
                    self.config.port,
                    delay.as_millis()
                )));
                reported_down = true;
            }
            tracing::warn!(
                network = self.config.name,
                "disconnected: {reason}; retry in {delay:?}"
            );
            sleep(delay).await;
            delay = (delay * 2).min(max);
        }
    }

    /// One connection, from connect to close. Returns whether it got registered.
    async fn session(
        &self,
        events: &mpsc::UnboundedSender<IrcEvent>,
    ) -> Result<bool, (bool, String)> {
        let addr = format!("{}:{}", self.config.host, self.config.port);
        let stream = timeout(Duration::from_secs(20), TcpStream::connect(&addr))
            .await
            .map_err(|_| (false, format!("connecting to {addr} timed out")))?
            .map_err(|e| (false, format!("connecting to {addr}: {e}")))?;
        let (read, mut write) = stream.into_split();
        let mut nick = self.config.nick.clone();
        let user = self.config.username.clone().unwrap_or_else(|| nick.clone());
        let mut hello = String::new();
        if let Some(pass) = &self.config.password {
            hello += &(proto::line("PASS", &[pass]) + "\r\n");
        }
        hello += &(proto::line("NICK", &[&nick]) + "\r\n");
        hello += &(proto::line("USER", &[&user, "0", "*", &self.config.realname]) + "\r\n");
        write
            .write_all(hello.as_bytes())
            .await
            .map_err(|e| (false, e.to_string()))?;
        let mut write = Some(write);
        let mut registered = false;
        let mut lines = BufReader::new(read).lines();
        let mut names: HashMap<String, Vec<String>> = HashMap::new();
        let mut pinged = false;
        loop {
            let line = match timeout(Duration::from_secs(120), lines.next_line()).await {
                Err(_) if !pinged => {
                    pinged = true;
                    self.raw(&mut write, "PING :keepalive")
                        .await
                        .map_err(|e| (registered, e))?;
                    continue;
                }
                Err(_) => return Err((registered, "the server stopped answering".into())),
                Ok(Err(e)) => return Err((registered, e.to_string())),
                Ok(Ok(None)) => return Ok(registered),
                Ok(Ok(Some(line))) => line,
            };
            pinged = false;
            tracing::debug!(network = self.config.name, "< {line}");
            let Some(msg) = Message::parse(&line) else {
                continue;
            };
            match msg.command.as_str() {
                "PING" => {
                    let pong = proto::line("PONG", &[msg.param(0)]);
                    self.raw(&mut write, &pong)
                        .await
                        .map_err(|e| (registered, e))?;
                }
                "001" => {
                    registered = true;
                    nick = msg.param(0).to_owned();
                    *self.nick.lock().unwrap() = nick.clone();
                    let channels: Vec<String> =
                        self.channels.lock().unwrap().values().cloned().collect();
                    for channel in &channels {
                        self.raw(&mut write, &proto::line("JOIN", &[channel]))
                            .await
                            .map_err(|e| (registered, e))?;
                    }
                    *self.writer.lock().await = write.take();
                    self.connected.send_replace(true);
                    let _ = events.send(IrcEvent::Status(format!(
                        "Connected to {} ({}:{}) as {nick}; joining {}.",
                        self.config.name,
                        self.config.host,
                        self.config.port,
                        if channels.is_empty() {
                            "no channels".into()
                        } else {
                            channels.join(", ")
                        }
                    )));
                }
                "433" | "432" | "436" if !registered => {
                    nick = if msg.command == "432" {
                        "tsunagu".to_owned()
                    } else {
                        format!("{nick}_")
                    };
                    self.raw(&mut write, &proto::line("NICK", &[&nick]))
                        .await
                        .map_err(|e| (registered, e))?;
                }
                "ERROR" => return Err((registered, format!("server said: {}", msg.param(0)))),
                "465" | "464" | "473" | "474" | "475" | "471" | "403" | "405" | "482" => {
                    let text = msg.params[1..].join(" ");
                    let _ =
                        events.send(IrcEvent::Status(format!("{}: {}", self.config.name, text)));
                }
                "332" => {
                    let _ = events.send(IrcEvent::Topic {
                        channel: msg.param(1).to_owned(),
                        nick: None,
                        topic: msg.param(2).to_owned(),
                    });
                }
                "353" => {
                    let channel = msg.param(2).to_owned();
                    let list = names.entry(fold(&channel)).or_default();
                    for n in msg.param(3).split(' ').filter(|n| !n.is_empty()) {
                        list.push(n.trim_start_matches(['@', '+', '%', '&', '~']).to_owned());
                    }
                }
                "366" => {
                    let channel = msg.param(1).to_owned();
                    let nicks: Vec<String> = names
                        .remove(&fold(&channel))
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|n| !self.is_me(n))
                        .collect();
                    self.members
                        .lock()
                        .unwrap()
                        .insert(fold(&channel), nicks.iter().map(|n| fold(n)).collect());
                    let _ = events.send(IrcEvent::Names { channel, nicks });
                }
                _ => self.on_message(&msg, events).await,
            }
        }
    }

    /// Writes a line on the connection: the local half during registration, the shared one after.
    async fn raw(&self, local: &mut Option<OwnedWriteHalf>, line: &str) -> Result<(), String> {
        match local {
            Some(w) => {
                tracing::debug!(network = self.config.name, "> {line}");
                w.write_all(format!("{line}\r\n").as_bytes())
                    .await
                    .map_err(|e| e.to_string())
            }
            None => self.write_now(line).await.map_err(|e| e.to_string()),
        }
    }

    /// Channel and user messages after registration.
    async fn on_message(&self, msg: &Message, events: &mpsc::UnboundedSender<IrcEvent>) {
        let Some(nick) = msg.nick().map(str::to_owned) else {
            return;
        };
        let me = self.is_me(&nick);
        let event = match msg.command.as_str() {
            "PRIVMSG" | "NOTICE" if !me => {
                let (target, text) = (msg.param(0), msg.param(1));
                let (kind, text) = match proto::parse_action(text) {
                    Some(action) => (Kind::Emote, action.to_owned()),
                    None if text.starts_with('\x01') => return, // other CTCP: not shown
                    None if msg.command == "NOTICE" => (Kind::Notice, text.to_owned()),
                    None => (Kind::Text, text.to_owned()),
                };
                if target.starts_with(['#', '&', '+', '!']) {
                    IrcEvent::Message {
                        channel: target.to_owned(),
                        nick,
                        text,
                        kind,
                    }
                } else if msg.prefix.as_deref().is_some_and(|p| p.contains('!')) {
                    IrcEvent::Private { nick, text }
                } else {
                    return; // server notices
                }
            }
            "JOIN" => {
                let channel = msg.param(0).to_owned();
                if me {
                    return;
                }
                self.members
                    .lock()
                    .unwrap()
                    .entry(fold(&channel))
                    .or_default()
                    .insert(fold(&nick));
                IrcEvent::Join { channel, nick }
            }
            "PART" | "KICK" => {
                let channel = msg.param(0).to_owned();
                let who = if msg.command == "KICK" {
                    msg.param(1).to_owned()
                } else {
                    nick
                };
                if self.is_me(&who) {
                    // Kicked or parted: rejoin if the channel is still bridged.
                    let bridged = self.channels.lock().unwrap().get(&fold(&channel)).cloned();
                    if let Some(channel) = bridged {
                        let _ = self.write_now(&proto::line("JOIN", &[&channel])).await;
                    }
                    return;
                }
                if let Some(m) = self.members.lock().unwrap().get_mut(&fold(&channel)) {
                    m.remove(&fold(&who));
                }
                IrcEvent::Part { channel, nick: who }
            }
            "QUIT" if !me => {
                let mut channels = Vec::new();
                for (channel, members) in self.members.lock().unwrap().iter_mut() {
                    if members.remove(&fold(&nick)) {
                        channels.push(channel.clone());
                    }
                }
                IrcEvent::Quit { nick, channels }
            }
            "NICK" => {
                let new = msg.param(0).to_owned();
                if me {
                    *self.nick.lock().unwrap() = new;
                    return;
                }
                for members in self.members.lock().unwrap().values_mut() {
                    if members.remove(&fold(&nick)) {
                        members.insert(fold(&new));
                    }
                }
                IrcEvent::Nick { old: nick, new }
            }
            "TOPIC" if !me => IrcEvent::Topic {
                channel: msg.param(0).to_owned(),
                nick: Some(nick),
                topic: msg.param(1).to_owned(),
            },
            _ => return,
        };
        let _ = events.send(event);
    }
}

//! The component connection (XEP-0114): connect, authenticate with the shared secret, read
//! stanzas, write stanzas, and reconnect with exponential backoff when the connection drops.

use std::time::Duration;

use anyhow::Context as _;
use sha1::{Digest, Sha1};
use tokio::{
    io::{AsyncWriteExt, BufReader},
    net::{TcpStream, tcp::OwnedWriteHalf},
    sync::{mpsc, watch},
    time::timeout,
};

use crate::{
    config::XmppConfig,
    xml::{Element, Item, StreamReader, escape},
};

/// What the connection reports to the bridge.
#[derive(Debug)]
pub enum Event {
    /// Authenticated; the bridge (re)joins its chats, then calls [`Component::set_ready`].
    Connected,
    /// The connection dropped; `reason` says why. A reconnection follows.
    Disconnected(String),
    /// A stanza from the server.
    Stanza(Element),
}

/// One component connection, shared by the bridge's tasks.
pub struct Component {
    config: XmppConfig,
    writer: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
    /// True once the bridge has rejoined its chats after connecting; plain sends wait for it.
    ready: watch::Sender<bool>,
}

/// How long connecting and the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

impl Component {
    /// A component, not yet connected; [`Component::run`] connects it.
    pub fn new(config: XmppConfig) -> Self {
        Self {
            config,
            writer: tokio::sync::Mutex::new(None),
            ready: watch::channel(false).0,
        }
    }

    /// The component's domain.
    pub fn domain(&self) -> &str {
        &self.config.domain
    }

    /// Marks the connection ready for [`Component::send`] (after the bridge rejoined its
    /// chats).
    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Whether the connection is up and ready.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the connection is up and ready.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        while !*ready.borrow_and_update() {
            if ready.changed().await.is_err() {
                return;
            }
        }
    }

    /// Sends a stanza now if connected (used while rejoining); `false` if not connected or
    /// the write failed.
    pub async fn send_now(&self, stanza: &Element) -> bool {
        let xml = stanza.to_xml();
        let mut writer = self.writer.lock().await;
        let Some(w) = writer.as_mut() else {
            return false;
        };
        tracing::debug!("xmpp out: {xml}");
        if let Err(e) = w.write_all(xml.as_bytes()).await {
            tracing::warn!("writing to the XMPP server: {e}");
            *writer = None;
            self.ready.send_replace(false);
            return false;
        }
        true
    }

    /// Sends a stanza once the connection is ready, waiting through reconnections.
    pub async fn send(&self, stanza: &Element) {
        loop {
            self.wait_ready().await;
            if self.send_now(stanza).await {
                return;
            }
        }
    }

    /// Connects, reads, and reconnects forever, reporting to `events`.
    pub async fn run(&self, events: mpsc::UnboundedSender<Event>) {
        let min = Duration::from_millis(self.config.reconnect_min_ms.max(1));
        let max = Duration::from_millis(self.config.reconnect_max_ms.max(1));
        let mut delay = min;
        loop {
            match self.session(&events).await {
                Ok(reason) => {
                    // It was up: start the backoff afresh.
                    delay = min;
                    let _ = events.send(Event::Disconnected(reason));
                }
                Err(e) => {
                    let _ = events.send(Event::Disconnected(format!("{e:#}")));
                }
            }
            *self.writer.lock().await = None;
            self.ready.send_replace(false);
            if events.is_closed() {
                return;
            }
            tracing::info!("reconnecting to the XMPP server in {delay:?}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(max);
        }
    }

    /// One connection: handshake, then stanzas until it ends. `Ok` with the reason once it
    /// was authenticated, `Err` if it never got that far.
    async fn session(&self, events: &mpsc::UnboundedSender<Event>) -> anyhow::Result<String> {
        let addr = (self.config.host.as_str(), self.config.port);
        let stream = timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connecting: timed out")?
            .with_context(|| format!("connecting to {}:{}", addr.0, addr.1))?;
        let (read, mut write) = stream.into_split();
        let mut reader = StreamReader::new(BufReader::new(read), self.config.max_stanza_bytes);
        write
            .write_all(
                format!(
                    "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
                     xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
                    escape(&self.config.domain)
                )
                .as_bytes(),
            )
            .await?;
        let id = match timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
            Ok(Ok(Item::StreamStart(s))) => s
                .get("id")
                .context("the server's stream has no id")?
                .to_owned(),
            Ok(Ok(other)) => anyhow::bail!("expected the server's stream header, got {other:?}"),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow::bail!("no stream header from the server"),
        };
        let digest = Sha1::digest(format!("{id}{}", self.config.secret).as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        write
            .write_all(format!("<handshake>{hex}</handshake>").as_bytes())
            .await?;
        match timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
            Ok(Ok(Item::Stanza(s))) if s.name == "handshake" => {}
            Ok(Ok(Item::Stanza(s))) if s.name == "error" => {
                anyhow::bail!("the server refused the component: {}", s.to_xml())
            }
            Ok(Ok(other)) => anyhow::bail!("handshake answered with {other:?}"),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow::bail!("no handshake answer from the server"),
        }
        tracing::info!("connected to the XMPP server as {}", self.config.domain);
        *self.writer.lock().await = Some(write);
        let _ = events.send(Event::Connected);
        loop {
            match reader.next().await {
                Ok(Item::Stanza(s)) if s.name == "error" => {
                    return Ok(format!("stream error: {}", s.to_xml()));
                }
                Ok(Item::Stanza(s)) => {
                    tracing::debug!("xmpp in: {}", s.to_xml());
                    if events.send(Event::Stanza(s)).is_err() {
                        return Ok("the bridge stopped".into());
                    }
                }
                Ok(Item::StreamStart(_)) => return Ok("a second stream header".into()),
                Ok(Item::End) => return Ok("the server closed the stream".into()),
                Err(e) => {
                    // Tell the server why before going.
                    if let Some(w) = self.writer.lock().await.as_mut() {
                        let _ = w
                            .write_all(
                                b"<stream:error><policy-violation \
                                  xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>\
                                  </stream:stream>",
                            )
                            .await;
                    }
                    return Ok(format!("reading: {e}"));
                }
            }
        }
    }
}

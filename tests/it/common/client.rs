//! Real matrix-sdk clients against the test server. A [`User`] is a logged-in client whose
//! sync loop runs in the background and records every message, redaction, typing notice and
//! receipt it sees in its [`Inbox`]; matrix-sdk decrypts before the recording, so a test reads
//! plaintext and can still tell whether a message arrived encrypted.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use matrix_sdk::{
    Client, Room, RoomState,
    config::SyncSettings,
    deserialized_responses::{EncryptionInfo, TimelineEventKind},
    room::MessagesOptions,
    ruma::{
        DeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
        api::client::{account::register, room::create_room, uiaa},
        events::{
            receipt::SyncReceiptEvent,
            room::{
                member::MembershipState,
                message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
                redaction::OriginalSyncRoomRedactionEvent,
            },
            typing::SyncTypingEvent,
        },
    },
};
use serde_json::{Value, json};

use super::{Http, TestServer, WAIT, eventually, http::next_number, password};

/// A new matrix-sdk client for `url` with its state and crypto stores in `store`.
pub async fn client_for(url: &str, store: &Path) -> Client {
    Client::builder()
        .homeserver_url(url)
        .sqlite_store(store, None)
        .build()
        .await
        .expect("client builds")
}

/// Registers `name` through user-interactive auth (m.login.dummy) with a new matrix-sdk client
/// and returns it logged in. Its stores live under `dir`.
pub async fn register(url: &str, dir: &Path, name: &str) -> Client {
    let client = client_for(url, &store_dir(dir, name)).await;
    let mut req = register::v3::Request::new();
    req.username = Some(name.to_owned());
    req.password = Some(password(name));
    let err = client
        .matrix_auth()
        .register(req.clone())
        .await
        .expect_err("first step asks for auth");
    let info = err
        .as_uiaa_response()
        .expect("a user-interactive auth response")
        .clone();
    let mut dummy = uiaa::Dummy::new();
    dummy.session = info.session.clone();
    req.auth = Some(uiaa::AuthData::Dummy(dummy));
    client
        .matrix_auth()
        .register(req)
        .await
        .expect("registration completes");
    assert!(client.user_id().is_some(), "registered client is logged in");
    client
}

/// Logs an existing user in on a new matrix-sdk client (a new device, a new store under `dir`).
pub async fn login(url: &str, dir: &Path, name: &str) -> Client {
    let client = client_for(url, &store_dir(dir, name)).await;
    client
        .matrix_auth()
        .login_username(name, &password(name))
        .send()
        .await
        .expect("login works");
    client
}

fn store_dir(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("client-{name}-{}", next_number()))
}

/// A room message a client saw through sync.
#[derive(Clone, Debug)]
pub struct Seen {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub sender: OwnedUserId,
    /// The (decrypted) content.
    pub content: Value,
    /// Whether it arrived as an `m.room.encrypted` event.
    pub encrypted: bool,
}

impl Seen {
    pub fn body(&self) -> &str {
        self.content["body"].as_str().unwrap_or_default()
    }
}

/// Everything a client saw through sync, in the order it saw it.
#[derive(Clone, Default)]
pub struct Inbox {
    messages: Arc<Mutex<Vec<Seen>>>,
    redactions: Arc<Mutex<Vec<OwnedEventId>>>,
    typing: Arc<Mutex<Vec<Vec<OwnedUserId>>>>,
    receipts: Arc<Mutex<Vec<OwnedEventId>>>,
}

impl Inbox {
    /// Room messages.
    pub fn messages(&self) -> Vec<Seen> {
        self.messages.lock().unwrap().clone()
    }

    /// The first room message with this body.
    pub fn find(&self, body: &str) -> Option<Seen> {
        self.messages().into_iter().find(|m| m.body() == body)
    }

    /// The events that were redacted.
    pub fn redactions(&self) -> Vec<OwnedEventId> {
        self.redactions.lock().unwrap().clone()
    }

    /// Each typing notice: who was typing.
    pub fn typing(&self) -> Vec<Vec<OwnedUserId>> {
        self.typing.lock().unwrap().clone()
    }

    /// The events that read receipts were for.
    pub fn receipts(&self) -> Vec<OwnedEventId> {
        self.receipts.lock().unwrap().clone()
    }
}

/// Starts recording what `client` sees into a new [`Inbox`] and keeps it syncing in the
/// background until the returned task is aborted.
pub fn watch(client: &Client) -> (Inbox, tokio::task::JoinHandle<()>) {
    let inbox = Inbox::default();
    let i = inbox.clone();
    client.add_event_handler(
        move |ev: OriginalSyncRoomMessageEvent, room: Room, info: Option<EncryptionInfo>| {
            let i = i.clone();
            async move {
                i.messages.lock().unwrap().push(Seen {
                    room_id: room.room_id().to_owned(),
                    event_id: ev.event_id.clone(),
                    sender: ev.sender.clone(),
                    content: serde_json::to_value(&ev.content).unwrap(),
                    encrypted: info.is_some(),
                });
            }
        },
    );
    let i = inbox.clone();
    client.add_event_handler(move |ev: OriginalSyncRoomRedactionEvent| {
        let i = i.clone();
        async move {
            if let Some(id) = ev.redacts.or(ev.content.redacts) {
                i.redactions.lock().unwrap().push(id);
            }
        }
    });
    let i = inbox.clone();
    client.add_event_handler(move |ev: SyncTypingEvent| {
        let i = i.clone();
        async move {
            i.typing.lock().unwrap().push(ev.content.user_ids);
        }
    });
    let i = inbox.clone();
    client.add_event_handler(move |ev: SyncReceiptEvent| {
        let i = i.clone();
        async move {
            i.receipts
                .lock()
                .unwrap()
                .extend(ev.content.0.keys().cloned());
        }
    });
    let c = client.clone();
    let sync = tokio::spawn(async move {
        let _ = c
            .sync(SyncSettings::default().timeout(Duration::from_secs(5)))
            .await;
    });
    (inbox, sync)
}

/// A logged-in matrix-sdk client with a running sync loop and what it has seen. Dropping it
/// stops the sync loop, so no long poll keeps a stopping server's connections open.
pub struct User {
    pub client: Client,
    pub inbox: Inbox,
    sync: tokio::task::JoinHandle<()>,
}

impl Drop for User {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

/// Registers `name` on the test server, starts its sync loop and waits until its device keys
/// are on the server (so others can encrypt for it).
pub async fn user(t: &TestServer, name: &str) -> User {
    User::new(&t.url(), register(&t.url(), t.dir(), name).await).await
}

impl User {
    /// Starts the sync loop of a logged-in client and waits until its device keys are on the
    /// server at `url`.
    pub async fn new(url: &str, client: Client) -> Self {
        let (inbox, sync) = watch(&client);
        client
            .encryption()
            .wait_for_e2ee_initialization_tasks()
            .await;
        wait_for_device_keys(
            url,
            &client.access_token().unwrap(),
            client.user_id().unwrap(),
            client.device_id(),
        )
        .await;
        Self {
            client,
            inbox,
            sync,
        }
    }

    pub fn id(&self) -> OwnedUserId {
        self.client.user_id().unwrap().to_owned()
    }

    /// The room, once this client's sync knows it.
    pub async fn room(&self, room_id: &RoomId) -> Room {
        eventually(WAIT, "the room to appear in sync", || async {
            self.client.get_room(room_id)
        })
        .await
    }

    /// Waits until this client saw a room message with `body`.
    pub async fn receives(&self, body: &str) -> Seen {
        let who = self.id();
        eventually(WAIT, &format!("{who} to receive {body:?}"), || async {
            self.inbox.find(body)
        })
        .await
    }

    /// Waits until this client saw a room message with `body`, and checks that it arrived
    /// encrypted (and was decrypted).
    pub async fn receives_encrypted(&self, body: &str) -> Seen {
        let got = self.receives(body).await;
        assert!(
            got.encrypted,
            "{} received {body:?} as a plaintext event, not an encrypted one",
            self.id()
        );
        got
    }

    /// Waits for an invite to the room to arrive through sync, then joins.
    pub async fn accept_invite(&self, room_id: &RoomId) {
        eventually(WAIT, &format!("{}'s invite", self.id()), || async {
            self.client
                .get_room(room_id)
                .filter(|r| r.state() == RoomState::Invited)
        })
        .await;
        self.client
            .join_room_by_id(room_id)
            .await
            .expect("joining after an invite");
    }
}

/// Waits until the server answers `/keys/query` with device keys of `user` (of `device`, or of
/// any device): the client uploaded them and others can encrypt for it.
pub async fn wait_for_device_keys(
    url: &str,
    token: &str,
    user: &UserId,
    device: Option<&DeviceId>,
) {
    let http = Http::new(url);
    let what = match device {
        Some(d) => format!("{user}/{d}'s device keys on the server"),
        None => format!("{user}'s device keys on the server"),
    };
    eventually(WAIT, &what, || async {
        let (status, res) = http
            .json(
                "POST",
                "/_matrix/client/v3/keys/query",
                Some(token),
                json!({ "device_keys": { user.as_str(): [] } }),
            )
            .await;
        let devices = res["device_keys"][user.as_str()].as_object()?;
        let there = match device {
            Some(d) => devices.contains_key(d.as_str()),
            None => !devices.is_empty(),
        };
        (status == 200 && there).then_some(())
    })
    .await;
}

/// `creator` makes a private_chat room (encrypted, by the server's default) named `name`,
/// invites `members` and `others` (bots, which join by themselves); the members accept. Returns
/// once the creator's client sees all of them joined.
pub async fn private_room(
    creator: &User,
    name: &str,
    members: &[&User],
    others: &[OwnedUserId],
) -> OwnedRoomId {
    let mut req = create_room::v3::Request::new();
    req.name = Some(name.into());
    req.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    req.invite = members
        .iter()
        .map(|m| m.id())
        .chain(others.iter().cloned())
        .collect();
    let room = creator.client.create_room(req).await.expect("room created");
    let room_id = room.room_id().to_owned();
    for m in members {
        m.accept_invite(&room_id).await;
    }
    let room = creator.room(&room_id).await;
    for user in members.iter().map(|m| m.id()).chain(others.iter().cloned()) {
        wait_membership(&room, &user, MembershipState::Join).await;
    }
    room_id
}

/// Waits until `room`'s client sees `user` with `membership` (from its synced state).
pub async fn wait_membership(room: &Room, user: &UserId, membership: MembershipState) {
    eventually(
        WAIT,
        &format!("{} to see {user} as {membership}", room.own_user_id()),
        || async {
            room.get_member_no_sync(user)
                .await
                .ok()
                .flatten()
                .filter(|m| *m.membership() == membership)
                .map(|_| ())
        },
    )
    .await;
}

/// Sends a plain-text message (encrypted if the room is) and returns its event ID.
pub async fn say(room: &Room, body: &str) -> OwnedEventId {
    room.send(RoomMessageEventContent::text_plain(body))
        .await
        .unwrap_or_else(|e| panic!("sending {body:?}: {e}"))
        .response
        .event_id
}

/// The room's messages through back-pagination, oldest first: `Some(body)` for a message the
/// client reads (decrypted or plain), `None` for an encrypted one it cannot decrypt. Messages
/// without a body (redacted ones) are left out.
pub async fn history(room: &Room) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let mut opts = MessagesOptions::backward();
        opts.from = from.clone();
        let page = room.messages(opts).await.expect("messages");
        for ev in &page.chunk {
            match &ev.kind {
                TimelineEventKind::UnableToDecrypt { .. } => out.push(None),
                kind => {
                    let v: Value = kind.raw().deserialize_as().unwrap();
                    if v["type"] == "m.room.message" {
                        if let Some(body) = v["content"]["body"].as_str() {
                            out.push(Some(body.to_owned()));
                        }
                    } else if v["type"] == "m.room.encrypted" {
                        out.push(None);
                    }
                }
            }
        }
        match page.end {
            Some(end) => from = Some(end),
            None => break,
        }
    }
    out.reverse();
    out
}

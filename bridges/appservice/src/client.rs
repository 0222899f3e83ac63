//! The intent API: the appservice acting on the homeserver as its bot or as a ghost user,
//! through the Client-Server API with its `as_token` and the `user_id` query parameter.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use reqwest::{Method, Url};
use serde_json::{Value, json};

use crate::{Error, Registration};

/// A request body.
enum Body {
    Json(Value),
    Bytes(Vec<u8>, String),
}

/// A connection to the homeserver with the appservice's token. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    as_token: String,
    server_name: String,
    bot: String,
    appservice_id: String,
    txn_prefix: String,
    txn_counter: AtomicU64,
    /// Users known to exist (registered by us or found in use).
    registered: Mutex<HashSet<String>>,
    /// `(room, user)` pairs known to be joined.
    joined: Mutex<HashSet<(String, String)>>,
    /// Marks what this client sends (see [`crate::claims::SOURCE`]): set on a double-puppet
    /// client, to the ID of the bridge that acts through it.
    source: Option<String>,
}

impl Client {
    /// A client for the homeserver at `homeserver_url` (e.g. `http://127.0.0.1:8008`), whose
    /// users are `@localpart:server_name`.
    pub fn new(
        homeserver_url: &str,
        server_name: &str,
        registration: &Registration,
    ) -> Result<Self, Error> {
        let base = Url::parse(homeserver_url)
            .map_err(|e| Error::Config(format!("homeserver URL {homeserver_url:?}: {e}")))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Ok(Self {
            inner: Arc::new(Inner {
                http: reqwest::Client::new(),
                base,
                as_token: registration.as_token.clone(),
                server_name: server_name.to_owned(),
                bot: format!("@{}:{server_name}", registration.sender_localpart),
                appservice_id: registration.id.clone(),
                txn_prefix: format!("as{nanos}"),
                txn_counter: AtomicU64::new(0),
                registered: Mutex::default(),
                joined: Mutex::default(),
                source: None,
            }),
        })
    }

    /// A client whose timeline events carry `"org.tsunagu.source": source` in their content,
    /// so the bridge `source` knows them for its own when the homeserver hands them back.
    pub fn marked(
        homeserver_url: &str,
        server_name: &str,
        registration: &Registration,
        source: &str,
    ) -> Result<Self, Error> {
        let mut client = Self::new(homeserver_url, server_name, registration)?;
        if let Some(inner) = Arc::get_mut(&mut client.inner) {
            inner.source = Some(source.to_owned());
        }
        Ok(client)
    }

    /// The ID of the registration this client acts for.
    pub fn appservice_id(&self) -> &str {
        &self.inner.appservice_id
    }

    /// The homeserver's domain.
    pub fn server_name(&self) -> &str {
        &self.inner.server_name
    }

    /// `@{localpart}:{server_name}`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.inner.server_name)
    }

    /// The bridge bot's user ID (the registration's `sender_localpart`).
    pub fn bot_id(&self) -> &str {
        &self.inner.bot
    }

    /// The bridge's admin room, where it reports its state and takes commands: the one
    /// recorded in `store`, else `existing` (joined by the bot), else a new private room named
    /// `name` with `topic`, inviting `admin_user`. Recorded in the store for the next start.
    pub async fn ensure_admin_room(
        &self,
        store: &crate::Store,
        name: &str,
        topic: &str,
        admin_user: Option<&str>,
        existing: Option<&str>,
    ) -> Result<String, Error> {
        if let Some(room) = store.get("admin", "room")? {
            return Ok(room);
        }
        let bot = self.bot();
        let room = match existing {
            Some(room) => bot.join(room).await?,
            None => {
                bot.create_room(json!({
                    "preset": "private_chat",
                    "name": name,
                    "topic": topic,
                    "invite": admin_user.into_iter().collect::<Vec<_>>(),
                }))
                .await?
            }
        };
        store.set("admin", "room", &room)?;
        Ok(room)
    }

    /// The display name of a user in a room, as the bot sees it; the localpart when there is
    /// none (or it cannot be read).
    pub async fn display_name_in(&self, room_id: &str, user_id: &str) -> String {
        self.bot()
            .get_state(room_id, "m.room.member", user_id)
            .await
            .ok()
            .flatten()
            .and_then(|c| c["displayname"].as_str().map(str::to_owned))
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| {
                user_id
                    .trim_start_matches('@')
                    .split(':')
                    .next()
                    .unwrap_or(user_id)
                    .to_owned()
            })
    }

    /// Acting as the bridge bot.
    pub fn bot(&self) -> Intent {
        Intent {
            client: self.clone(),
            user_id: self.inner.bot.clone(),
        }
    }

    /// Acting as `user_id` (a user in the appservice's namespace).
    pub fn intent(&self, user_id: &str) -> Intent {
        Intent {
            client: self.clone(),
            user_id: user_id.to_owned(),
        }
    }

    /// Asks the homeserver to ping the appservice (`POST /_matrix/client/v1/appservice/{id}/ping`),
    /// which checks both directions of the configuration. Returns the homeserver's answer.
    pub async fn ping(&self) -> Result<Value, Error> {
        let id = self.inner.appservice_id.clone();
        self.call(
            Method::POST,
            &["_matrix", "client", "v1", "appservice", &id, "ping"],
            None,
            Some(json!({})),
        )
        .await
    }

    /// A new transaction ID for a send.
    fn txn_id(&self) -> String {
        let n = self.inner.txn_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.inner.txn_prefix)
    }

    /// One Client-Server API call: `segments` are the path's parts (each percent-encoded),
    /// `as_user` adds `?user_id=`. Errors carry the spec's `errcode`.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        as_user: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        self.call_with(method, segments, &[], as_user, body.map(Body::Json))
            .await
    }

    /// The URL of a call: `segments` percent-encoded, `?user_id=` for a ghost, then `query`.
    fn url(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        as_user: Option<&str>,
    ) -> Result<Url, Error> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|_| Error::Config("homeserver URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(segments);
        if let Some(user) = as_user.filter(|u| *u != self.inner.bot) {
            url.query_pairs_mut().append_pair("user_id", user);
        }
        for (k, v) in query {
            url.query_pairs_mut().append_pair(k, v);
        }
        Ok(url)
    }

    /// Downloads a file of the media repository (`mxc://server/id`, through the authenticated
    /// `/_matrix/client/v1/media/download`): its bytes and content type, or `None` when it is
    /// larger than `max_bytes` (the download stops there, so a large file costs no memory).
    pub async fn download(
        &self,
        mxc: &str,
        max_bytes: usize,
    ) -> Result<Option<(Vec<u8>, String)>, Error> {
        let Some((server, media_id)) = mxc
            .strip_prefix("mxc://")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
        else {
            return Err(Error::Config(format!("not a media URI: {mxc:?}")));
        };
        let segments = [
            "_matrix", "client", "v1", "media", "download", server, media_id,
        ];
        let url = self.url(&segments, &[], None)?;
        let res = self
            .inner
            .http
            .get(url)
            .bearer_auth(&self.inner.as_token)
            .send()
            .await?;
        let status = res.status().as_u16();
        if !(200..300).contains(&status) {
            let value: Value = res.json().await.unwrap_or_default();
            return Err(Error::Matrix {
                status,
                errcode: value["errcode"].as_str().unwrap_or("").to_owned(),
                message: format!("GET /{}", segments.join("/")),
            });
        }
        Ok(read_limited(res, max_bytes).await?)
    }

    async fn call_with(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        as_user: Option<&str>,
        body: Option<Body>,
    ) -> Result<Value, Error> {
        let url = self.url(segments, query, as_user)?;
        let mut req = self
            .inner
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.inner.as_token);
        match body {
            Some(Body::Json(body)) => req = req.json(&body),
            Some(Body::Bytes(bytes, content_type)) => {
                req = req.header("Content-Type", content_type).body(bytes);
            }
            None => {}
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(Error::Matrix {
                status,
                errcode: value["errcode"].as_str().unwrap_or("").to_owned(),
                message: format!(
                    "{method} /{}: {}",
                    segments.join("/"),
                    value["error"].as_str().unwrap_or(&value.to_string())
                ),
            })
        }
    }
}

/// A response's body and its media type (without parameters; `application/octet-stream` when
/// it names none), or `None` when the body is larger than `max_bytes`: reading stops there, so
/// a large file costs no memory.
pub async fn read_limited(
    mut res: reqwest::Response,
    max_bytes: usize,
) -> Result<Option<(Vec<u8>, String)>, reqwest::Error> {
    if res.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Ok(None);
    }
    let media_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let mut bytes = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        if bytes.len() + chunk.len() > max_bytes {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some((bytes, media_type)))
}

/// The appservice acting as one user: the bot or a ghost.
#[derive(Clone)]
pub struct Intent {
    client: Client,
    user_id: String,
}

impl Intent {
    /// The user this intent acts as.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
    ) -> Result<Value, Error> {
        self.client
            .call(method, segments, Some(&self.user_id), body)
            .await
    }

    /// Makes sure the user exists: registers it with `m.login.application_service`;
    /// `M_USER_IN_USE` means it exists already. Remembered for the life of the client.
    pub async fn ensure_registered(&self) -> Result<(), Error> {
        if self
            .client
            .inner
            .registered
            .lock()
            .unwrap()
            .contains(&self.user_id)
        {
            return Ok(());
        }
        let localpart = self
            .user_id
            .strip_prefix('@')
            .and_then(|u| u.split(':').next())
            .unwrap_or(&self.user_id)
            .to_owned();
        let body = json!({
            "type": "m.login.application_service",
            "username": localpart,
            "inhibit_login": true,
        });
        match self
            .client
            .call(
                Method::POST,
                &["_matrix", "client", "v3", "register"],
                None,
                Some(body),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.errcode() == Some("M_USER_IN_USE") => {}
            Err(e) => return Err(e),
        }
        self.client
            .inner
            .registered
            .lock()
            .unwrap()
            .insert(self.user_id.clone());
        Ok(())
    }

    /// Sets the user's global display name.
    pub async fn set_display_name(&self, name: &str) -> Result<(), Error> {
        self.ensure_registered().await?;
        self.call(
            Method::PUT,
            &[
                "_matrix",
                "client",
                "v3",
                "profile",
                &self.user_id,
                "displayname",
            ],
            Some(json!({ "displayname": name })),
        )
        .await
        .map(drop)
    }

    /// Creates a room (the body of `POST /createRoom`) and returns its ID.
    pub async fn create_room(&self, body: Value) -> Result<String, Error> {
        self.ensure_registered().await?;
        let res = self
            .call(
                Method::POST,
                &["_matrix", "client", "v3", "createRoom"],
                Some(body),
            )
            .await?;
        let room_id = res["room_id"].as_str().unwrap_or_default().to_owned();
        self.mark_joined(&room_id, true);
        Ok(room_id)
    }

    /// Creates a portal room (the body of `POST /createRoom`, with its `room_alias_name`); if
    /// the alias is taken, creates it without one. Returns the room ID.
    pub async fn create_portal(&self, mut body: Value) -> Result<String, Error> {
        match self.create_room(body.clone()).await {
            Err(e) if e.errcode() == Some("M_ROOM_IN_USE") => {
                tracing::warn!(
                    "alias #{} is taken; creating the portal without it",
                    body["room_alias_name"]
                );
                if let Some(body) = body.as_object_mut() {
                    body.remove("room_alias_name");
                }
                self.create_room(body).await
            }
            other => other,
        }
    }

    /// Joins a room by ID or alias and returns the room ID.
    pub async fn join(&self, room: &str) -> Result<String, Error> {
        self.ensure_registered().await?;
        let res = self
            .call(
                Method::POST,
                &["_matrix", "client", "v3", "join", room],
                Some(json!({})),
            )
            .await?;
        let room_id = res["room_id"].as_str().unwrap_or(room).to_owned();
        self.mark_joined(&room_id, true);
        Ok(room_id)
    }

    /// Leaves a room.
    pub async fn leave(&self, room_id: &str) -> Result<(), Error> {
        self.mark_joined(room_id, false);
        self.call(
            Method::POST,
            &["_matrix", "client", "v3", "rooms", room_id, "leave"],
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// Invites `user_id` into a room.
    pub async fn invite(&self, room_id: &str, user_id: &str) -> Result<(), Error> {
        self.call(
            Method::POST,
            &["_matrix", "client", "v3", "rooms", room_id, "invite"],
            Some(json!({ "user_id": user_id })),
        )
        .await
        .map(drop)
    }

    /// Makes sure the user is registered and joined to the room: tries to join, and if that is
    /// refused, has the bridge bot invite it first.
    pub async fn ensure_joined(&self, room_id: &str) -> Result<(), Error> {
        let key = (room_id.to_owned(), self.user_id.clone());
        if self.client.inner.joined.lock().unwrap().contains(&key) {
            return Ok(());
        }
        self.ensure_registered().await?;
        if let Err(e) = self.join(room_id).await {
            if self.user_id == self.client.inner.bot || e.errcode() != Some("M_FORBIDDEN") {
                return Err(e);
            }
            match self.client.bot().invite(room_id, &self.user_id).await {
                Ok(()) => {}
                // Already invited (or joined meanwhile): the join below tells.
                Err(e) if e.errcode() == Some("M_FORBIDDEN") => {}
                Err(e) => return Err(e),
            }
            self.join(room_id).await?;
        }
        Ok(())
    }

    fn mark_joined(&self, room_id: &str, joined: bool) {
        let key = (room_id.to_owned(), self.user_id.clone());
        let mut set = self.client.inner.joined.lock().unwrap();
        if joined {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    /// Forgets that the user is joined to the room (after it was kicked or left elsewhere).
    pub fn forget_joined(&self, room_id: &str) {
        self.mark_joined(room_id, false);
    }

    /// Sends a message event with the given content; returns the event ID.
    pub async fn send_message(&self, room_id: &str, content: Value) -> Result<String, Error> {
        self.send_event(room_id, "m.room.message", content).await
    }

    /// Sends any timeline event; returns the event ID.
    pub async fn send_event(
        &self,
        room_id: &str,
        event_type: &str,
        content: Value,
    ) -> Result<String, Error> {
        self.send_event_txn(room_id, event_type, content, &self.client.txn_id())
            .await
    }

    /// Sends a timeline event under a transaction ID of the caller's choosing; returns the
    /// event ID. Sending again with the same ID (after a crash, say) yields the same event,
    /// not a second one.
    pub async fn send_event_txn(
        &self,
        room_id: &str,
        event_type: &str,
        mut content: Value,
        txn: &str,
    ) -> Result<String, Error> {
        if let (Some(source), Some(fields)) = (&self.client.inner.source, content.as_object_mut()) {
            fields.insert(crate::claims::SOURCE.into(), Value::String(source.clone()));
        }
        let res = self
            .call(
                Method::PUT,
                &[
                    "_matrix", "client", "v3", "rooms", room_id, "send", event_type, txn,
                ],
                Some(content),
            )
            .await?;
        Ok(res["event_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Sends an `m.text` message.
    pub async fn send_text(&self, room_id: &str, body: &str) -> Result<String, Error> {
        self.send_message(room_id, json!({ "msgtype": "m.text", "body": body }))
            .await
    }

    /// Sends an `m.notice` message.
    pub async fn send_notice(&self, room_id: &str, body: &str) -> Result<String, Error> {
        self.send_message(room_id, json!({ "msgtype": "m.notice", "body": body }))
            .await
    }

    /// Sends an `m.emote` message.
    pub async fn send_emote(&self, room_id: &str, body: &str) -> Result<String, Error> {
        self.send_message(room_id, json!({ "msgtype": "m.emote", "body": body }))
            .await
    }

    /// Sets a state event.
    pub async fn set_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> Result<String, Error> {
        let res = self
            .call(
                Method::PUT,
                &[
                    "_matrix", "client", "v3", "rooms", room_id, "state", event_type, state_key,
                ],
                Some(content),
            )
            .await?;
        Ok(res["event_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Reads a state event's content; `None` if there is none.
    pub async fn get_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Value>, Error> {
        match self
            .call(
                Method::GET,
                &[
                    "_matrix", "client", "v3", "rooms", room_id, "state", event_type, state_key,
                ],
                None,
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Uploads a file to the media repository (as this user); returns its `mxc://` URI.
    pub async fn upload(
        &self,
        bytes: Vec<u8>,
        content_type: &str,
        filename: &str,
    ) -> Result<String, Error> {
        let res = self
            .client
            .call_with(
                Method::POST,
                &["_matrix", "media", "v3", "upload"],
                &[("filename", filename)],
                Some(&self.user_id),
                Some(Body::Bytes(bytes, content_type.to_owned())),
            )
            .await?;
        Ok(res["content_uri"].as_str().unwrap_or_default().to_owned())
    }

    /// Redacts an event (as this user).
    pub async fn redact(&self, room_id: &str, event_id: &str) -> Result<(), Error> {
        let txn = self.client.txn_id();
        self.call(
            Method::PUT,
            &[
                "_matrix", "client", "v3", "rooms", room_id, "redact", event_id, &txn,
            ],
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// Reads one event of a room (as this user).
    pub async fn get_event(&self, room_id: &str, event_id: &str) -> Result<Value, Error> {
        self.call(
            Method::GET,
            &[
                "_matrix", "client", "v3", "rooms", room_id, "event", event_id,
            ],
            None,
        )
        .await
    }

    /// The users joined to a room (as this user sees it).
    pub async fn joined_members(&self, room_id: &str) -> Result<Vec<String>, Error> {
        let res = self
            .call(
                Method::GET,
                &[
                    "_matrix",
                    "client",
                    "v3",
                    "rooms",
                    room_id,
                    "joined_members",
                ],
                None,
            )
            .await?;
        Ok(res["joined"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// Sets the room's topic.
    pub async fn set_topic(&self, room_id: &str, topic: &str) -> Result<String, Error> {
        self.set_state(room_id, "m.room.topic", "", json!({ "topic": topic }))
            .await
    }
}

/// A bridge's admin room, once known: where it reports its state (and takes commands).
#[derive(Default)]
pub struct AdminRoom(std::sync::RwLock<Option<String>>);

impl AdminRoom {
    /// What every bridge does first on the homeserver: registers the bot (named `name`),
    /// then finds or creates the admin room (see [`Client::ensure_admin_room`]) and records it.
    pub async fn setup(
        &self,
        client: &Client,
        store: &crate::Store,
        name: &str,
        topic: &str,
        admin_user: Option<&str>,
        existing: Option<&str>,
    ) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let bot = client.bot();
        bot.ensure_registered()
            .await
            .context("registering the bridge bot")?;
        if let Err(e) = bot.set_display_name(name).await {
            tracing::warn!("setting the bot's display name: {e}");
        }
        let room = client
            .ensure_admin_room(store, name, topic, admin_user, existing)
            .await
            .context("finding or creating the admin room")?;
        self.set(room);
        Ok(())
    }

    /// Records the room's ID.
    pub fn set(&self, room_id: String) {
        *self.0.write().unwrap() = Some(room_id);
    }

    /// The room's ID, once set.
    pub fn get(&self) -> Option<String> {
        self.0.read().unwrap().clone()
    }

    /// Whether `room_id` is the admin room.
    pub fn is(&self, room_id: &str) -> bool {
        self.0.read().unwrap().as_deref() == Some(room_id)
    }

    /// Posts a notice there as the bot (and logs it; a failure to post is logged too).
    pub async fn notice(&self, client: &Client, text: &str) {
        tracing::info!("admin notice: {text}");
        if let Some(room) = self.get()
            && let Err(e) = client.bot().send_notice(&room, text).await
        {
            tracing::warn!("posting to the admin room: {e}");
        }
    }
}

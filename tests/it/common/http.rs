//! Raw HTTP against the server: every field a client reads can be checked, and requests a
//! well-behaved client library would never send can be made. Answers come back as
//! `(status, JSON body)`; a body that is not JSON comes back as a JSON string.

use serde_json::{Value, json};

use super::password;

/// A raw HTTP client for one server.
#[derive(Clone)]
pub struct Http {
    /// `http://127.0.0.1:port`
    pub base: String,
    client: reqwest::Client,
}

/// An account as raw HTTP sees it: what `/register` or `/login` answered.
#[derive(Clone, Debug)]
pub struct Account {
    pub token: String,
    /// The full Matrix ID, `@name:localhost`.
    pub id: String,
    pub device_id: String,
}

impl Account {
    fn from_answer(answer: &Value) -> Self {
        let field = |name: &str| {
            answer[name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} in {answer}"))
                .to_owned()
        };
        Self {
            token: field("access_token"),
            id: field("user_id"),
            device_id: field("device_id"),
        }
    }
}

impl Http {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// Sends `method path` with an optional access token and raw body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends `method path` with a JSON body.
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        self.call(method, path, token, Some(&body.to_string()))
            .await
    }

    /// `GET path`, asserting a 200 answer, which it returns.
    pub async fn get_ok(&self, path: &str, token: Option<&str>) -> Value {
        let (status, res) = self.call("GET", path, token, None).await;
        assert_eq!(status, 200, "GET {path}: {res}");
        res
    }

    /// Registers `name` (open registration, password from [`password`]) on a new device.
    pub async fn register(&self, name: &str) -> Account {
        let body = json!({ "username": name, "password": password(name), "auth": { "type": "m.login.dummy" } });
        let (status, res) = self
            .json("POST", "/_matrix/client/v3/register", None, body)
            .await;
        assert_eq!(status, 200, "register {name}: {res}");
        Account::from_answer(&res)
    }

    /// Logs `name` in on a new device with the password from [`password`].
    pub async fn login(&self, name: &str) -> Account {
        self.login_with(password_login(name, &password(name))).await
    }

    /// Logs in with a `/login` body (see [`password_login`]), asserting it works.
    pub async fn login_with(&self, body: Value) -> Account {
        let (status, res) = self
            .json("POST", "/_matrix/client/v3/login", None, body.clone())
            .await;
        assert_eq!(status, 200, "login with {body}: {res}");
        Account::from_answer(&res)
    }

    /// Makes `room` a child of the space `parent` (`m.space.child` with `content`).
    pub async fn add_space_child(&self, token: &str, parent: &str, room: &str, content: Value) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.space.child/{}",
            urlencode(parent),
            urlencode(room)
        );
        let (status, res) = self.json("PUT", &path, Some(token), content).await;
        assert_eq!(status, 200, "m.space.child: {res}");
    }

    /// Creates a room with a `/createRoom` body and returns its ID.
    pub async fn create_room(&self, token: &str, body: Value) -> String {
        let (status, res) = self
            .json("POST", "/_matrix/client/v3/createRoom", Some(token), body)
            .await;
        assert_eq!(status, 200, "createRoom: {res}");
        res["room_id"].as_str().unwrap().to_owned()
    }

    /// Joins a room by ID or alias (an alias's `#` escaped as `%23`) and returns the answer.
    pub async fn join(&self, token: &str, room: &str) -> (u16, Value) {
        self.json(
            "POST",
            &format!("/_matrix/client/v3/join/{room}"),
            Some(token),
            json!({}),
        )
        .await
    }

    /// Sends an `m.text` message with a fresh transaction ID and returns the event ID.
    pub async fn send_text(&self, token: &str, room: &str, body: &str) -> String {
        self.send_message(token, room, json!({ "msgtype": "m.text", "body": body }))
            .await
    }

    /// Sends an `m.room.message` with this content and a fresh transaction ID; returns the
    /// event ID.
    pub async fn send_message(&self, token: &str, room: &str, content: Value) -> String {
        let txn = format!("t{}", next_number());
        let (status, res) = self
            .json(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
                Some(token),
                content,
            )
            .await;
        assert_eq!(status, 200, "send to {room}: {res}");
        res["event_id"].as_str().unwrap().to_owned()
    }

    /// `GET /sync?{query}`, asserting a 200 answer.
    pub async fn sync(&self, token: &str, query: &str) -> Value {
        self.get_ok(&format!("/_matrix/client/v3/sync?{query}"), Some(token))
            .await
    }
}

/// A `/login` body for `m.login.password` with a user identifier (a localpart or a full ID).
pub fn password_login(user: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    })
}

/// The `auth` of a user-interactive auth step by password, as endpoints that need the password
/// again (deleting a device, changing the password, deactivating) take it.
pub fn password_auth(user: &str, password: &str, session: Option<&str>) -> Value {
    let mut auth = password_login(user, password);
    if let Some(s) = session {
        auth["session"] = json!(s);
    }
    auth
}

/// Asserts the spec's error shape: this status, this `errcode` and an `error` message.
#[track_caller]
pub fn assert_error(got: &(u16, Value), status: u16, errcode: &str) {
    assert_eq!(got.0, status, "status of {}", got.1);
    assert_eq!(got.1["errcode"], errcode, "errcode of {}", got.1);
    assert!(got.1["error"].is_string(), "error message in {}", got.1);
}

/// The `content.body` of every event in a JSON array of events that has one, in order (a
/// timeline's `events`, a `/messages` `chunk`).
pub fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap_or_else(|| panic!("an array of events: {events}"))
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// A sync answer's `next_batch`: where the next incremental sync starts.
pub fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

/// Percent-encodes everything but ASCII letters and digits, for JSON in a query string.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A number unique in this test process, for transaction IDs and client store names.
pub fn next_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

//! Test harness: an in-process server on an ephemeral loopback port with a temporary data dir,
//! real matrix-sdk clients, and a raw HTTP helper for refusal paths.
#![allow(dead_code)]

use std::{path::Path, time::Duration};

use matrix_sdk::{
    Client,
    ruma::api::client::{account::register, uiaa},
};
use serde_json::Value;
use tsunagu::{Config, Server, config::Registration};

/// A config for tests: loopback, port 0, open registration, generous rate limits.
pub fn config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        registration: Registration::Open,
        rate_limit: tsunagu::config::RateLimit {
            burst: 1000,
            per_minute: 6000,
            ..Default::default()
        },
        ..Default::default()
    }
}

pub async fn start(dir: &Path) -> Server {
    Server::start(config(dir)).await.expect("server starts")
}

/// Registers through user-interactive auth (m.login.dummy) with a real matrix-sdk client and
/// returns the logged-in client. Its crypto and state stores live under `dir`.
pub async fn register(server: &Server, dir: &Path, name: &str) -> Client {
    let client = client_for(
        &server.url(),
        &dir.join(format!("client-{name}-{}", rand_suffix())),
    )
    .await;
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

/// Logs an existing user in on a new client (a new device).
pub async fn login(url: &str, dir: &Path, name: &str) -> Client {
    let client = client_for(url, &dir.join(format!("client-{name}-{}", rand_suffix()))).await;
    client
        .matrix_auth()
        .login_username(name, &password(name))
        .send()
        .await
        .expect("login works");
    client
}

pub fn password(name: &str) -> String {
    format!("correct horse battery {name}")
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

pub async fn client_for(url: &str, store: &Path) -> Client {
    Client::builder()
        .homeserver_url(url)
        .sqlite_store(store, None)
        .build()
        .await
        .expect("client builds")
}

/// Polls `f` until it returns Some, or panics after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Raw HTTP against the server, for what a well-behaved client library would never send.
pub struct Http {
    pub base: String,
    client: reqwest::Client,
}

impl Http {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::new(),
        }
    }

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

    /// Registers a user with raw requests (open registration) and returns its access token.
    pub async fn register(&self, name: &str) -> String {
        let body = serde_json::json!({ "username": name, "password": password(name), "auth": { "type": "m.login.dummy" } });
        let (status, res) = self
            .json("POST", "/_matrix/client/v3/register", None, body)
            .await;
        assert_eq!(status, 200, "register {name}: {res}");
        res["access_token"].as_str().unwrap().to_owned()
    }
}

/// Asserts the spec's error shape.
#[track_caller]
pub fn assert_error(got: &(u16, Value), status: u16, errcode: &str) {
    assert_eq!(got.0, status, "status of {}", got.1);
    assert_eq!(got.1["errcode"], errcode, "errcode of {}", got.1);
    assert!(got.1["error"].is_string(), "error message in {}", got.1);
}

/// Logs a user in with raw HTTP (password from [`password`]) and returns the access token.
pub async fn login_token(http: &Http, name: &str) -> String {
    let body = serde_json::json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": name }, "password": password(name) });
    let (status, res) = http
        .json("POST", "/_matrix/client/v3/login", None, body)
        .await;
    assert_eq!(status, 200, "login {name}: {res}");
    res["access_token"].as_str().unwrap().to_owned()
}

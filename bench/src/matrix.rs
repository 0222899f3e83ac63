//! A minimal Matrix Client-Server API client over reqwest: just what the benchmark calls.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use reqwest::Method;
use serde_json::{Value, json};

/// How often a request answered with 429 is retried (after the server's `retry_after_ms`).
const MAX_RATE_LIMIT_RETRIES: u32 = 30;

/// A homeserver at one base URL.
#[derive(Clone)]
pub struct Hs {
    http: reqwest::Client,
    base: String,
    /// Requests answered with 429 (and retried).
    pub rate_limited: Arc<AtomicU64>,
}

/// An answer: status, parsed JSON body (or `Null`), and the body size in bytes.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub bytes: usize,
    /// From sending the (last) request until its whole body arrived, before it is parsed: the
    /// server's latency as the client sees it, without the client's JSON decoding (which for
    /// a 1.4 MB initial sync takes the bench 10-30 ms).
    pub received: Duration,
}

impl Reply {
    /// The body of a 200 answer, or an error naming the request and the answer.
    pub fn ok(self, what: &str) -> Result<Value, String> {
        if self.status == 200 {
            Ok(self.body)
        } else {
            Err(format!(
                "{what}: HTTP {}: {}",
                self.status,
                short(&self.body)
            ))
        }
    }
}

/// A JSON value as text, cut to a readable length.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 400 {
        format!("{}…", &s[..s.floor_char_boundary(400)])
    } else {
        s
    }
}

/// A transport error with its causes (e.g. "connection refused"), without the URL.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A registered account with its access token.
#[derive(Clone, Debug)]
pub struct User {
    pub localpart: String,
    pub user_id: String,
    pub token: String,
    pub password: String,
}

impl Hs {
    pub fn new(base: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            // The benchmark talks to loopback only: never through a proxy from the environment.
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            rate_limited: Arc::default(),
        })
    }

    /// One request; 429 answers are retried after the delay the server asks for (bounded).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let what = || format!("{method} {}", path.split('?').next().unwrap_or(path));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = std::time::Instant::now();
            let mut rb = self
                .http
                .request(method.clone(), format!("{}{}", self.base, path))
                .timeout(timeout);
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let resp = rb
                .send()
                .await
                .map_err(|e| format!("{}: {}", what(), describe(e)))?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok());
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| format!("{}: {}", what(), describe(e)))?;
            let received = sent.elapsed();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            if status == 429 && attempt <= MAX_RATE_LIMIT_RETRIES {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
                let ms = body
                    .get("retry_after_ms")
                    .and_then(Value::as_u64)
                    .or(retry_after.map(|s| s * 1000))
                    .unwrap_or(500)
                    .clamp(10, 10_000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                continue;
            }
            return Ok(Reply {
                status,
                body,
                bytes: bytes.len(),
                received,
            });
        }
    }

    pub async fn get(
        &self,
        path: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Reply, String> {
        self.call(Method::GET, path, token, None, timeout).await
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<Reply, String> {
        self.call(
            Method::POST,
            path,
            token,
            Some(body),
            Duration::from_secs(120),
        )
        .await
    }

    /// Registers `localpart` through user-interactive auth: the first call (no `auth`) returns
    /// 401 with a session and the flows; each stage of a flow we can complete is then sent
    /// (`m.login.dummy`, or `m.login.registration_token` when a token is given).
    pub async fn register(
        &self,
        localpart: &str,
        password: &str,
        registration_token: Option<&str>,
    ) -> Result<User, String> {
        let path = "/_matrix/client/v3/register";
        let mut body = json!({
            "username": localpart,
            "password": password,
            "initial_device_display_name": "tsunagu-bench",
        });
        let first = self.post(path, None, &body).await?;
        let reply = if first.status == 401 {
            let session = first
                .body
                .get("session")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let flows: Vec<Vec<String>> = first
                .body
                .get("flows")
                .and_then(Value::as_array)
                .map(|fs| {
                    fs.iter()
                        .map(|f| {
                            f.get("stages")
                                .and_then(Value::as_array)
                                .map(|st| {
                                    st.iter()
                                        .filter_map(|s| s.as_str().map(str::to_owned))
                                        .collect()
                                })
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let can = |stage: &str| {
                stage == "m.login.dummy"
                    || (stage == "m.login.registration_token" && registration_token.is_some())
            };
            let flow = flows
                .iter()
                .filter(|f| f.iter().all(|s| can(s)))
                .min_by_key(|f| f.len())
                .ok_or_else(|| {
                    format!(
                        "register {localpart}: no registration flow this benchmark can complete \
                         (flows {flows:?}; pass --registration-token if a token is required)"
                    )
                })?
                .clone();
            let mut last = first;
            for stage in &flow {
                let mut auth = json!({ "type": stage });
                if let Some(s) = &session {
                    auth["session"] = json!(s);
                }
                if stage == "m.login.registration_token" {
                    auth["token"] = json!(registration_token.unwrap_or_default());
                }
                body["auth"] = auth;
                last = self.post(path, None, &body).await?;
                if last.status != 401 {
                    break;
                }
            }
            last
        } else {
            first
        };
        let body = reply.ok(&format!("register {localpart}"))?;
        let field = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("register {localpart}: answer lacks {k}: {}", short(&body)))
        };
        Ok(User {
            localpart: localpart.to_owned(),
            user_id: field("user_id")?,
            token: field("access_token")?,
            password: password.to_owned(),
        })
    }

    /// Logs in again as `user` (a new device); returns the new access token.
    pub async fn login(&self, user: &User) -> Result<String, String> {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user.localpart },
            "password": user.password,
            "initial_device_display_name": "tsunagu-bench",
        });
        let v = self
            .post("/_matrix/client/v3/login", None, &body)
            .await?
            .ok(&format!("login {}", user.localpart))?;
        v.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("login {}: no access_token: {}", user.localpart, short(&v)))
    }

    pub async fn create_room(&self, user: &User, name: &str) -> Result<String, String> {
        let body = json!({ "preset": "public_chat", "name": name });
        let v = self
            .post("/_matrix/client/v3/createRoom", Some(&user.token), &body)
            .await?
            .ok(&format!("createRoom by {}", user.user_id))?;
        v.get("room_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("createRoom: no room_id: {}", short(&v)))
    }

    pub async fn join(&self, user: &User, room_id: &str) -> Result<(), String> {
        self.post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(room_id)),
            Some(&user.token),
            &json!({}),
        )
        .await?
        .ok(&format!("join {room_id} as {}", user.user_id))
        .map(drop)
    }
}

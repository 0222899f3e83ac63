//! What the bridges' tests share, with real parts: a Tsunagu homeserver in-process with a
//! bridge's registration, Matrix users over raw HTTP, the bridge binary as a child process,
//! and polling with deadlines.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::time::Instant;

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 25 ms until it returns `Some`, or panics after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Raw Client-Server API calls.
#[derive(Clone)]
pub struct Matrix {
    pub base: String,
    http: reqwest::Client,
}

/// A logged-in Matrix user.
#[derive(Clone)]
pub struct User {
    pub id: String,
    pub token: String,
}

impl Matrix {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Uploads a file as `user` (`/_matrix/media/v3/upload`); its `mxc://` URI.
    pub async fn upload(&self, user: &User, bytes: &[u8], content_type: &str) -> String {
        let res = self
            .http
            .post(format!("{}/_matrix/media/v3/upload", self.base))
            .bearer_auth(&user.token)
            .header("Content-Type", content_type)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("upload sent");
        assert_eq!(res.status().as_u16(), 200, "upload");
        let v: Value = res.json().await.expect("upload answer");
        v["content_uri"].as_str().expect("content_uri").to_owned()
    }

    /// Uploads `bytes` and shares them in `room` as `user`: `m.image` for an image, else
    /// `m.file`, named `name`, with `caption` as its body when given. The event ID.
    pub async fn share_file(
        &self,
        user: &User,
        room: &str,
        (bytes, mime): (&[u8], &str),
        name: &str,
        caption: Option<&str>,
    ) -> String {
        let mxc = self.upload(user, bytes, mime).await;
        let msgtype = if mime.starts_with("image/") {
            "m.image"
        } else {
            "m.file"
        };
        let content = json!({
            "msgtype": msgtype, "body": caption.unwrap_or(name), "filename": name, "url": mxc,
            "info": { "mimetype": mime, "size": bytes.len() },
        });
        self.send(user, room, content).await
    }

    /// Downloads a file of the media repository as `user` (`/_matrix/client/v1/media/download`):
    /// the status and the body (JSON, else its text).
    pub async fn download(&self, user: &User, mxc: &str) -> (u16, Value) {
        let (server, media) = mxc
            .trim_start_matches("mxc://")
            .split_once('/')
            .expect("an mxc URI");
        let path = format!("/_matrix/client/v1/media/download/{server}/{media}");
        self.call("GET", &path, Some(&user.token), None).await
    }

    /// Registers with open registration (m.login.dummy).
    pub async fn register(&self, name: &str) -> User {
        let body = json!({ "username": name, "password": format!("pw {name} pw"),
                           "auth": { "type": "m.login.dummy" } });
        let (status, res) = self
            .call("POST", "/_matrix/client/v3/register", None, Some(body))
            .await;
        assert_eq!(status, 200, "register {name}: {res}");
        User {
            id: res["user_id"].as_str().unwrap().to_owned(),
            token: res["access_token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn set_display_name(&self, user: &User, name: &str) {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&user.id));
        let (status, res) = self
            .call(
                "PUT",
                &path,
                Some(&user.token),
                Some(json!({ "displayname": name })),
            )
            .await;
        assert_eq!(status, 200, "{res}");
    }

    pub async fn display_name(&self, user_id: &str) -> Option<String> {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(user_id));
        let (_, res) = self.call("GET", &path, None, None).await;
        res["displayname"].as_str().map(str::to_owned)
    }

    /// Joins by ID or alias once that works (the bridge may still be creating the room).
    pub async fn join(&self, user: &User, room: &str) -> String {
        let path = format!("/_matrix/client/v3/join/{}", enc(room));
        eventually(60, &format!("{} to join {room}", user.id), || {
            let path = path.clone();
            async move {
                let (status, res) = self
                    .call("POST", &path, Some(&user.token), Some(json!({})))
                    .await;
                (status == 200).then(|| res["room_id"].as_str().unwrap().to_owned())
            }
        })
        .await
    }

    pub async fn send(&self, user: &User, room: &str, content: Value) -> String {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let txn = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/t{txn}",
            enc(room)
        );
        let (status, res) = self
            .call("PUT", &path, Some(&user.token), Some(content))
            .await;
        assert_eq!(status, 200, "send: {res}");
        res["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn send_text(&self, user: &User, room: &str, body: &str) -> String {
        self.send(user, room, json!({ "msgtype": "m.text", "body": body }))
            .await
    }

    pub async fn set_topic(&self, user: &User, room: &str, topic: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(room));
        let (status, res) = self
            .call(
                "PUT",
                &path,
                Some(&user.token),
                Some(json!({ "topic": topic })),
            )
            .await;
        assert_eq!(status, 200, "set topic: {res}");
    }

    pub async fn topic(&self, user: &User, room: &str) -> Option<String> {
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(room));
        let (_, res) = self.call("GET", &path, Some(&user.token), None).await;
        res["topic"].as_str().map(str::to_owned)
    }

    /// The room's latest events (newest first).
    pub async fn recent(&self, user: &User, room: &str) -> Vec<Value> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            enc(room)
        );
        let (_, res) = self.call("GET", &path, Some(&user.token), None).await;
        res["chunk"].as_array().cloned().unwrap_or_default()
    }

    /// Waits for an event in the room that matches `pred`.
    pub async fn wait_event(
        &self,
        user: &User,
        room: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let pred = &pred;
        eventually(60, what, || async move {
            self.recent(user, room).await.into_iter().find(|e| pred(e))
        })
        .await
    }

    /// Waits for a message from `sender` with this msgtype and body.
    pub async fn wait_message(
        &self,
        user: &User,
        room: &str,
        sender: &str,
        msgtype: &str,
        body: &str,
    ) -> Value {
        self.wait_event(
            user,
            room,
            &format!("{msgtype} {body:?} from {sender}"),
            |e| {
                e["type"] == "m.room.message"
                    && e["sender"] == sender
                    && e["content"]["msgtype"] == msgtype
                    && e["content"]["body"] == body
            },
        )
        .await
    }
}

/// A bridge as a child process (`{binary} --config … run`), its output appended to a log.
pub struct BridgeProcess {
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    /// The variable and value that set the bridge's log filter.
    log_filter: (String, String),
    child: Option<Child>,
}

impl BridgeProcess {
    /// Starts `binary --config config run`, logging to `log` with `log_filter` set.
    pub fn start(binary: &Path, config: &Path, log: &Path, log_filter: (&str, &str)) -> Self {
        let mut bridge = Self {
            binary: binary.to_owned(),
            config: config.to_owned(),
            log: log.to_owned(),
            log_filter: (log_filter.0.to_owned(), log_filter.1.to_owned()),
            child: None,
        };
        bridge.spawn();
        bridge
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env(&self.log_filter.0, &self.log_filter.1)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the bridge starts");
        self.child = Some(child);
    }

    /// Kills the bridge (SIGKILL: no chance to flush anything).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes a bridge's registration with its own `generate-registration` command.
pub fn generate_registration(binary: &Path, config: &Path, registration: &Path) {
    let out = Command::new(binary)
        .arg("--config")
        .arg(config)
        .arg("generate-registration")
        .output()
        .unwrap();
    assert!(out.status.success(), "generate-registration: {out:?}");
    assert!(registration.exists());
}

/// What a bridge's test wants of the homeserver beyond the bridge's registration.
#[derive(Clone, Copy, Debug, Default)]
pub struct Extras {
    /// The community bots on (`@tsunagu:localhost`).
    pub bots: bool,
    /// A double-puppet registration (every local user, not exclusive, no URL) written to
    /// `dir/double-puppet.yaml` and listed beside the bridge's.
    pub double_puppet: bool,
}

impl Extras {
    /// The line of a bridge's config that names the double-puppet registration, if any.
    pub fn config_line(&self, dir: &Path) -> String {
        if self.double_puppet {
            format!(
                "double_puppet_registration = {:?}\n",
                dir.join("double-puppet.yaml")
            )
        } else {
            String::new()
        }
    }
}

/// The code at the end of a bridge's claim notice (`… !claim CODE`).
pub fn claim_code(notice: &Value) -> String {
    notice["content"]["body"]
        .as_str()
        .unwrap_or_default()
        .rsplit("!claim ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Writes a double-puppet registration: fresh tokens, `url: null`, every user of
/// `localhost`, not exclusive.
pub fn write_double_puppet(path: &Path) {
    let mut reg = tsunagu_appservice::Registration::generate(
        "double-puppet",
        None,
        "double-puppet",
        "",
        "localhost",
    );
    reg.namespaces.users[0].exclusive = false;
    reg.namespaces.aliases.clear();
    reg.save(path).unwrap();
}

/// Tsunagu in-process with open registration, a generous rate limit and the bridge's
/// registration, its data in `dir`.
pub async fn start_homeserver(dir: &Path, registration: &Path) -> (tsunagu::Server, Matrix) {
    start_homeserver_with(dir, registration, Extras::default()).await
}

/// [`start_homeserver`] with [`Extras`].
pub async fn start_homeserver_with(
    dir: &Path,
    registration: &Path,
    extras: Extras,
) -> (tsunagu::Server, Matrix) {
    let mut registrations = vec![registration.to_owned()];
    if extras.double_puppet {
        let path = dir.join("double-puppet.yaml");
        write_double_puppet(&path);
        registrations.push(path);
    }
    let server_config: tsunagu::Config = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {data:?}\nregistration = \"open\"\n\
         appservices = {registrations:?}\n\
         [rate_limit]\nburst = 1000\nper_minute = 6000\n{bots}",
        data = dir.join("server"),
        bots = if extras.bots {
            "[bots]\nenabled = true\n"
        } else {
            ""
        },
    ))
    .expect("the server's config takes `appservices`");
    let server = tsunagu::Server::start(server_config)
        .await
        .expect("server starts with the bridge's registration");
    let matrix = Matrix::new(&server.url());
    (server, matrix)
}

/// Waits for `user`'s invite to the bridge's admin room (named `name`) and joins it.
pub async fn join_admin_room(matrix: &Matrix, user: &User, name: &str) -> String {
    let room = eventually(60, "an invite to the admin room", || async move {
        let (_, res) = matrix
            .call(
                "GET",
                "/_matrix/client/v3/sync?timeout=0",
                Some(&user.token),
                None,
            )
            .await;
        let invites = res["rooms"]["invite"].as_object()?;
        invites.iter().find_map(|(room, v)| {
            let state = v["invite_state"]["events"].as_array()?;
            state
                .iter()
                .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == name)
                .then(|| room.clone())
        })
    })
    .await;
    matrix.join(user, &room).await
}

/// Prints the last 200 lines of a log when the test fails (or when `show` is set).
pub fn show_log_tail(what: &str, log: &Path, show: bool) {
    if std::thread::panicking() || show {
        let log = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(200).collect();
        eprintln!("--- {what} (last 200 lines) ---");
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
}

/// A bridge under test with its homeserver and its admin user.
pub struct Started {
    pub server: tsunagu::Server,
    pub matrix: Matrix,
    pub bridge: BridgeProcess,
    /// `@alice:localhost` ("Alice Liddell"): name her as the bridge's `admin_user`.
    pub alice: User,
}

/// Starts a bridge the way an operator would: writes its config (`config` gets the
/// homeserver's URL, the registration's path and a free port for the appservice API), has the
/// bridge write its registration, starts Tsunagu with it, registers alice, and runs the bridge
/// (`binary`, logging to `dir/bridge.log` with `log_filter`).
pub async fn start_bridge(
    dir: &Path,
    binary: &Path,
    log_filter: (&str, &str),
    config: impl Fn(&str, &Path, u16) -> String,
) -> Started {
    start_bridge_with(dir, binary, log_filter, Extras::default(), config).await
}

/// [`start_bridge`] with [`Extras`].
pub async fn start_bridge_with(
    dir: &Path,
    binary: &Path,
    log_filter: (&str, &str),
    extras: Extras,
    config: impl Fn(&str, &Path, u16) -> String,
) -> Started {
    let as_port = free_port();
    let config_path = dir.join("bridge.toml");
    let registration = dir.join("registration.yaml");
    let write = |homeserver: &str| {
        fs::write(&config_path, config(homeserver, &registration, as_port)).unwrap();
    };
    // The registration is written before the server runs; the real URL comes after.
    write("http://127.0.0.1:1");
    generate_registration(binary, &config_path, &registration);
    let (server, matrix) = start_homeserver_with(dir, &registration, extras).await;
    let alice = matrix.register("alice").await;
    matrix.set_display_name(&alice, "Alice Liddell").await;
    write(&server.url());
    let bridge = BridgeProcess::start(binary, &config_path, &dir.join("bridge.log"), log_filter);
    Started {
        server,
        matrix,
        bridge,
        alice,
    }
}

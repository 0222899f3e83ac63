//! Test harness for the IRC bridge, with real parts: an ngircd on a free loopback port, Tsunagu
//! in-process with the bridge's registration, the `tsunagu-irc` binary as a child process, a
//! small IRC client, and Matrix users over raw HTTP. Everything waits by polling with a
//! deadline.
#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use irc::proto::Message;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::mpsc,
    time::Instant,
};

pub const NGIRCD: &str = "/usr/sbin/ngircd";
/// The bridge's nick in every test.
pub const BRIDGE_NICK: &str = "tsunagu";

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

/// A real ngircd, in the foreground, as a child process.
pub struct Ngircd {
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Ngircd {
    pub async fn start(dir: &Path) -> Self {
        assert!(
            Path::new(NGIRCD).exists(),
            "{NGIRCD} is missing: apt-get install ngircd"
        );
        let dir = dir.join("ngircd");
        fs::create_dir_all(dir.join("conf.d")).unwrap();
        let mut ircd = Self {
            dir,
            port: free_port(),
            child: None,
        };
        ircd.spawn().await;
        ircd
    }

    fn config(&self) -> String {
        format!(
            "[Global]\nName = irc.test\nInfo = Tsunagu bridge test\nListen = 127.0.0.1\n\
             Ports = {port}\nMotdPhrase = test\nAdminInfo1 = test\nAdminInfo2 = test\n\
             AdminEMail = test@irc.test\nPidFile = {dir}/ngircd.pid\n\
             [Limits]\nMaxConnectionsIP = 0\nMaxJoins = 0\nMaxNickLength = 30\n\
             MaxPenaltyTime = 0\nPingTimeout = 120\nPongTimeout = 20\n\
             [Options]\nPAM = no\nIdent = no\nDNS = no\nIncludeDir = {dir}/conf.d\n",
            port = self.port,
            dir = self.dir.display()
        )
    }

    async fn spawn(&mut self) {
        let conf = self.dir.join("ngircd.conf");
        fs::write(&conf, self.config()).unwrap();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ngircd.log"))
            .unwrap();
        let child = Command::new(NGIRCD)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("ngircd starts");
        self.child = Some(child);
        let port = self.port;
        eventually(20, "ngircd to listen", || async move {
            TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await;
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small IRC client: registers, answers PINGs, and hands every line to the test.
pub struct IrcClient {
    pub nick: String,
    tx: mpsc::UnboundedSender<String>,
    rx: mpsc::UnboundedReceiver<String>,
}

impl IrcClient {
    pub async fn connect(port: u16, nick: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (read, mut write) = stream.into_split();
        let (tx, mut out) = mpsc::unbounded_channel::<String>();
        let (lines_tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(line) = out.recv().await {
                if write
                    .write_all(format!("{line}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let pong = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(m) = Message::parse(&line)
                    && m.command == "PING"
                {
                    let _ = pong.send(format!("PONG :{}", m.param(0)));
                }
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut client = Self {
            nick: nick.to_owned(),
            tx,
            rx,
        };
        client.send(&format!("NICK {nick}"));
        client.send(&format!("USER {nick} 0 * :{nick} test"));
        client
            .expect(20, "registration (001)", |m| m.command == "001")
            .await;
        client
    }

    pub fn send(&self, line: &str) {
        self.tx.send(line.to_owned()).unwrap();
    }

    /// Reads lines until one matches, or panics after `secs` seconds.
    pub async fn expect(
        &mut self,
        secs: u64,
        what: &str,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Message {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(line)) => {
                    if let Some(m) = Message::parse(&line)
                        && pred(&m)
                    {
                        return m;
                    }
                    seen.push(line);
                }
                Ok(None) => panic!("{}: connection closed waiting for {what}", self.nick),
                Err(_) => panic!(
                    "{}: timed out after {secs} s waiting for {what}; saw:\n{}",
                    self.nick,
                    seen.join("\n")
                ),
            }
        }
    }

    /// A PRIVMSG or NOTICE from the bridge to `channel` with exactly `text`.
    pub async fn expect_from_bridge(&mut self, command: &str, channel: &str, text: &str) {
        self.expect(30, &format!("{command} {channel} :{text}"), |m| {
            m.command == command
                && m.nick() == Some(BRIDGE_NICK)
                && m.param(0) == channel
                && m.param(1) == text
        })
        .await;
    }

    /// Joins `channel` and waits until the bridge is in it too (NAMES, or its JOIN later).
    pub async fn join_with_bridge(&mut self, channel: &str) {
        self.send(&format!("JOIN {channel}"));
        let channel = channel.to_owned();
        self.expect(60, &format!("the bridge in {channel}"), |m| {
            (m.command == "353"
                && m.param(2) == channel
                && m.param(3)
                    .split(' ')
                    .any(|n| n.trim_start_matches(['@', '+']) == BRIDGE_NICK))
                || (m.command == "JOIN" && m.nick() == Some(BRIDGE_NICK) && m.param(0) == channel)
        })
        .await;
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

/// The bridge as a child process (`tsunagu-irc --config … run`).
pub struct BridgeProcess {
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl BridgeProcess {
    pub fn start(config: &Path, log: &Path) -> Self {
        let mut bridge = Self {
            config: config.to_owned(),
            log: log.to_owned(),
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
        let child = Command::new(env!("CARGO_BIN_EXE_tsunagu-irc"))
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("TSUNAGU_IRC_LOG", "irc=debug,tsunagu_appservice=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tsunagu-irc starts");
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

/// Everything one test needs: IRC server, homeserver, bridge, and a Matrix admin user.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub ircd: Ngircd,
    pub server: tsunagu::Server,
    pub matrix: Matrix,
    pub bridge: BridgeProcess,
    /// `@alice:localhost`, the bridge's admin user (invited to the admin room and portals).
    pub alice: User,
}

impl Env {
    /// Starts ngircd, Tsunagu with the bridge's registration, alice, and the bridge bridging
    /// `channels`.
    pub async fn start(channels: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ircd = Ngircd::start(dir.path()).await;
        let as_port = free_port();
        let config_path = dir.path().join("irc.toml");
        let registration = dir.path().join("registration.yaml");
        let write_config = |homeserver: &str| {
            let channels: Vec<String> = channels.iter().map(|c| format!("{c:?}")).collect();
            fs::write(
                &config_path,
                format!(
                    "homeserver_url = {homeserver:?}\nserver_name = \"localhost\"\n\
                     registration = {registration:?}\nlisten = \"127.0.0.1:{as_port}\"\n\
                     data_dir = {data:?}\nadmin_user = \"@alice:localhost\"\n\
                     [[networks]]\nname = \"test\"\nhost = \"127.0.0.1\"\nport = {port}\n\
                     nick = \"{BRIDGE_NICK}\"\nchannels = [{channels}]\n\
                     reconnect_min_ms = 3000\nreconnect_max_ms = 6000\n",
                    data = dir.path().join("irc-data"),
                    port = ircd.port,
                    channels = channels.join(", "),
                ),
            )
            .unwrap();
        };
        write_config("http://127.0.0.1:1");
        let out = Command::new(env!("CARGO_BIN_EXE_tsunagu-irc"))
            .arg("--config")
            .arg(&config_path)
            .arg("generate-registration")
            .output()
            .unwrap();
        assert!(out.status.success(), "generate-registration: {out:?}");
        assert!(registration.exists());

        // The server's config, as its TOML file would say it, plus the registration.
        let server_config: tsunagu::Config = toml::from_str(&format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {data:?}\nregistration = \"open\"\n\
             appservices = [{registration:?}]\n\
             [rate_limit]\nburst = 1000\nper_minute = 6000\n",
            data = dir.path().join("server"),
        ))
        .expect("the server's config takes `appservices` (issue 5)");
        let server = tsunagu::Server::start(server_config)
            .await
            .expect("server starts with the bridge's registration");
        let matrix = Matrix::new(&server.url());
        let alice = matrix.register("alice").await;
        matrix.set_display_name(&alice, "Alice Liddell").await;

        write_config(&server.url());
        let bridge = BridgeProcess::start(&config_path, &dir.path().join("bridge.log"));
        Self {
            dir,
            ircd,
            server,
            matrix,
            bridge,
            alice,
        }
    }

    /// The bridge's log so far (for failure messages).
    pub fn bridge_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("bridge.log")).unwrap_or_default()
    }

    /// The admin room's ID, once alice has been invited to it; alice joins it.
    pub async fn join_admin_room(&self) -> String {
        let m = self.matrix.clone();
        let alice = self.alice.clone();
        let room = eventually(60, "an invite to the admin room", || {
            let (m, alice) = (m.clone(), alice.clone());
            async move {
                let (_, res) = m
                    .call(
                        "GET",
                        "/_matrix/client/v3/sync?timeout=0",
                        Some(&alice.token),
                        None,
                    )
                    .await;
                let invites = res["rooms"]["invite"].as_object()?;
                invites.iter().find_map(|(room, v)| {
                    let state = v["invite_state"]["events"].as_array()?;
                    state
                        .iter()
                        .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "IRC bridge")
                        .then(|| room.clone())
                })
            }
        })
        .await;
        self.matrix.join(&self.alice, &room).await
    }
}

impl Drop for Env {
    /// On failure (or with `IRC_TEST_SHOW_LOG=1`), shows what the bridge logged.
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("IRC_TEST_SHOW_LOG").is_some() {
            let log = self.bridge_log();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("--- bridge log (last 200 lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

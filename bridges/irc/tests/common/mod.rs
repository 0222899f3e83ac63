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

pub use bridge_testkit::{BridgeProcess, Matrix, User, eventually, free_port};

use irc::proto::Message;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::mpsc,
    time::Instant,
};

pub const NGIRCD: &str = "/usr/sbin/ngircd";
/// The bridge's nick in every test.
pub const BRIDGE_NICK: &str = "tsunagu";

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
        Self::start_with(channels, bridge_testkit::Extras::default()).await
    }

    /// With the community bots and double puppeting as `extras` says.
    pub async fn start_with(channels: &[&str], extras: bridge_testkit::Extras) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ircd = Ngircd::start(dir.path()).await;
        let binary = Path::new(env!("CARGO_BIN_EXE_tsunagu-irc"));
        let double_puppet = extras.config_line(dir.path());
        let started = bridge_testkit::start_bridge_with(
            dir.path(),
            binary,
            ("TSUNAGU_IRC_LOG", "irc=debug,tsunagu_appservice=debug"),
            extras,
            |homeserver, registration, as_port| {
                let channels: Vec<String> = channels.iter().map(|c| format!("{c:?}")).collect();
                format!(
                    "homeserver_url = {homeserver:?}\nserver_name = \"localhost\"\n\
                     registration = {registration:?}\nlisten = \"127.0.0.1:{as_port}\"\n\
                     data_dir = {data:?}\nadmin_user = \"@alice:localhost\"\n{double_puppet}\
                     [[networks]]\nname = \"test\"\nhost = \"127.0.0.1\"\nport = {port}\n\
                     nick = \"{BRIDGE_NICK}\"\nchannels = [{channels}]\n\
                     reconnect_min_ms = 3000\nreconnect_max_ms = 6000\n",
                    data = dir.path().join("irc-data"),
                    port = ircd.port,
                    channels = channels.join(", "),
                )
            },
        )
        .await;
        Self {
            dir,
            ircd,
            server: started.server,
            matrix: started.matrix,
            bridge: started.bridge,
            alice: started.alice,
        }
    }

    /// The bridge's log so far (for failure messages).
    pub fn bridge_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("bridge.log")).unwrap_or_default()
    }

    /// The admin room's ID, once alice has been invited to it; alice joins it.
    pub async fn join_admin_room(&self) -> String {
        bridge_testkit::join_admin_room(&self.matrix, &self.alice, "IRC bridge").await
    }
}

impl Drop for Env {
    /// On failure (or with `IRC_TEST_SHOW_LOG=1`), shows what the bridge logged.
    fn drop(&mut self) {
        bridge_testkit::show_log_tail(
            "bridge log",
            &self.dir.path().join("bridge.log"),
            std::env::var_os("IRC_TEST_SHOW_LOG").is_some(),
        );
    }
}

//! Test harness for the XMPP bridge, with real parts: a Prosody on free loopback ports (a
//! virtual host for users, a multi-user chat service, and the bridge's component), Tsunagu
//! in-process with the bridge's registration, the `tsunagu-xmpp` binary as a child process, a
//! small XMPP client, and Matrix users over raw HTTP (`bridge_testkit`).
#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::Engine as _;
pub use bridge_testkit::{BridgeProcess, Matrix, User, eventually, free_port};
use tokio::{
    io::{AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::mpsc,
    time::Instant,
};
use xmpp::xml::{Element, Item, StreamReader};

pub const PROSODY: &str = "/usr/bin/prosody";
pub const PROSODYCTL: &str = "/usr/bin/prosodyctl";
/// The chat every test bridges.
pub const MUC: &str = "alumni@conference.localhost";
/// The bridge's nick in the chat.
pub const BRIDGE_NICK: &str = "Matrix";
const SECRET: &str = "component secret for tests";

/// A real Prosody, in the foreground, as a child process.
pub struct Prosody {
    dir: PathBuf,
    pub c2s_port: u16,
    pub component_port: u16,
    /// HTTP, for the upload service `upload.localhost` (XEP-0363).
    pub http_port: u16,
    child: Option<Child>,
}

impl Prosody {
    pub async fn start(dir: &Path) -> Self {
        assert!(
            Path::new(PROSODY).exists(),
            "{PROSODY} is missing: apt-get install prosody"
        );
        let dir = dir.join("prosody");
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::create_dir_all(dir.join("certs")).unwrap();
        let mut prosody = Self {
            dir,
            c2s_port: free_port(),
            component_port: free_port(),
            http_port: free_port(),
            child: None,
        };
        fs::write(prosody.config_path(), prosody.config()).unwrap();
        prosody.spawn().await;
        prosody
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("prosody.cfg.lua")
    }

    fn config(&self) -> String {
        // Tests may run as root (CI), which Prosody refuses unless told.
        format!(
            "run_as_root = true\ndaemonize = false\npidfile = \"{dir}/prosody.pid\"\n\
             data_path = \"{dir}/data\"\ncertificates = \"{dir}/certs\"\n\
             interfaces = {{ \"127.0.0.1\" }}\nc2s_ports = {{ {c2s} }}\n\
             component_ports = {{ {component} }}\ncomponent_interfaces = {{ \"127.0.0.1\" }}\n\
             s2s_ports = {{ }}\nhttp_ports = {{ {http} }}\nhttp_interfaces = {{ \"127.0.0.1\" }}\n\
             https_ports = {{ }}\nhttp_default_host = \"upload.localhost\"\n\
             http_external_url = \"http://127.0.0.1:{http}/\"\n\
             c2s_require_encryption = false\nallow_unencrypted_plain_auth = true\n\
             authentication = \"internal_plain\"\n\
             modules_enabled = {{ \"roster\", \"saslauth\", \"disco\", \"ping\" }}\n\
             modules_disabled = {{ \"s2s\", \"tls\" }}\n\
             log = {{ debug = \"{dir}/prosody.log\" }}\n\
             VirtualHost \"localhost\"\n\
             Component \"conference.localhost\" \"muc\"\n\
             \x20 muc_room_default_public_jids = true\n\
             \x20 muc_room_default_persistent = true\n\
             \x20 restrict_room_creation = false\n\
             Component \"bridge.localhost\"\n\
             \x20 component_secret = \"{SECRET}\"\n\
             Component \"upload.localhost\" \"http_file_share\"\n",
            http = self.http_port,
            dir = self.dir.display(),
            c2s = self.c2s_port,
            component = self.component_port,
        )
    }

    /// Creates an account on the virtual host `localhost`.
    pub fn register(&self, user: &str, password: &str) {
        let out = Command::new(PROSODYCTL)
            .arg("--config")
            .arg(self.config_path())
            .args(["register", user, "localhost", password])
            .output()
            .unwrap();
        assert!(out.status.success(), "prosodyctl register {user}: {out:?}");
    }

    async fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("prosody.out"))
            .unwrap();
        let child = Command::new(PROSODY)
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prosody starts");
        self.child = Some(child);
        for port in [self.c2s_port, self.component_port, self.http_port] {
            eventually(30, "prosody to listen", || async move {
                TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
            })
            .await;
        }
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports, with the same data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("prosody.log")
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small XMPP client (c2s): SASL PLAIN, resource binding, and every stanza handed to the
/// test.
pub struct XmppClient {
    /// The bare JID.
    pub jid: String,
    /// The nick in the chat, once joined.
    pub nick: String,
    tx: mpsc::UnboundedSender<String>,
    rx: mpsc::UnboundedReceiver<Element>,
}

impl XmppClient {
    pub async fn connect(port: u16, user: &str, password: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut reader = StreamReader::new(BufReader::new(read), 1 << 20);
        let header = "<?xml version='1.0'?><stream:stream to='localhost' \
                      xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
                      version='1.0'>";
        let next = async |reader: &mut StreamReader<_>, what: &str| -> Element {
            match tokio::time::timeout(Duration::from_secs(20), reader.next()).await {
                Ok(Ok(Item::Stanza(s))) => s,
                other => panic!("{user}: waiting for {what}: {other:?}"),
            }
        };
        write.write_all(header.as_bytes()).await.unwrap();
        assert!(matches!(reader.next().await, Ok(Item::StreamStart(_))));
        next(&mut reader, "features").await;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        write
            .write_all(
                format!(
                    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let answer = next(&mut reader, "the SASL answer").await;
        assert_eq!(answer.name, "success", "{user}: {}", answer.to_xml());
        write.write_all(header.as_bytes()).await.unwrap();
        assert!(matches!(reader.next().await, Ok(Item::StreamStart(_))));
        next(&mut reader, "features after auth").await;
        write
            .write_all(
                b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                  <resource>test</resource></bind></iq>",
            )
            .await
            .unwrap();
        let bound = next(&mut reader, "the bound JID").await;
        assert_eq!(bound.get("type"), Some("result"), "{}", bound.to_xml());

        let (tx, mut out) = mpsc::unbounded_channel::<String>();
        let (stanzas, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(xml) = out.recv().await {
                if write.write_all(xml.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Ok(Item::Stanza(s)) = reader.next().await {
                if stanzas.send(s).is_err() {
                    break;
                }
            }
        });
        Self {
            jid: format!("{user}@localhost"),
            nick: String::new(),
            tx,
            rx,
        }
    }

    pub fn send(&self, stanza: Element) {
        let _ = self.tx.send(stanza.to_xml());
    }

    /// Reads stanzas until one matches, or panics after `secs` seconds.
    pub async fn expect(
        &mut self,
        secs: u64,
        what: &str,
        mut pred: impl FnMut(&Element) -> bool,
    ) -> Element {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(s)) => {
                    if pred(&s) {
                        return s;
                    }
                    seen.push(s.to_xml());
                }
                Ok(None) => panic!("{}: connection closed waiting for {what}", self.jid),
                Err(_) => panic!(
                    "{}: timed out after {secs} s waiting for {what}; saw:\n{}",
                    self.jid,
                    seen.join("\n")
                ),
            }
        }
    }

    /// Joins the chat as `nick` (history as the chat sends it) and waits until the bridge is
    /// an occupant too.
    pub async fn join_with_bridge(&mut self, muc: &str, nick: &str) {
        self.nick = nick.to_owned();
        let join = Element::new("presence")
            .attr("to", format!("{muc}/{nick}"))
            .with(Element::new("x").attr("xmlns", "http://jabber.org/protocol/muc"));
        self.send(join.clone());
        let bridge = format!("{muc}/{BRIDGE_NICK}");
        let me = format!("{muc}/{nick}");
        let mut retries = 0;
        loop {
            let s = self
                .expect(60, "the bridge in the chat", |s| {
                    s.name == "presence"
                        && matches!(s.get("type"), None | Some("error"))
                        && (s.get("from") == Some(bridge.as_str())
                            || s.get("from") == Some(me.as_str()))
                })
                .await;
            if s.get("type") == Some("error") {
                // The chat is still locked by whoever created it a moment ago: try again,
                // as a user would.
                retries += 1;
                assert!(retries < 50, "{me} keeps refusing: {}", s.to_xml());
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.send(join.clone());
                continue;
            }
            if s.get("from") == Some(bridge.as_str()) {
                return;
            }
            let created = s
                .child("x", Some("http://jabber.org/protocol/muc#user"))
                .is_some_and(|x| x.children.iter().any(|c| c.get("code") == Some("201")));
            if created {
                // Our join created the chat: accept the default configuration, as clients do.
                self.send(
                    Element::new("iq")
                        .attr("to", muc)
                        .attr("type", "set")
                        .attr("id", "instant")
                        .with(
                            Element::new("query")
                                .attr("xmlns", "http://jabber.org/protocol/muc#owner")
                                .with(
                                    Element::new("x")
                                        .attr("xmlns", "jabber:x:data")
                                        .attr("type", "submit"),
                                ),
                        ),
                );
            }
        }
    }

    /// Sends a groupchat message with this ID, body and extra payloads.
    pub fn say(&self, muc: &str, id: &str, body: &str, extra: Vec<Element>) {
        let mut m = Element::new("message")
            .attr("to", muc)
            .attr("type", "groupchat")
            .attr("id", id)
            .with(Element::new("body").text(body));
        for e in extra {
            m = m.with(e);
        }
        self.send(m);
    }

    /// Waits for a groupchat message from `nick` in the chat whose body is `body`.
    pub async fn expect_message(&mut self, muc: &str, nick: &str, body: &str) -> Element {
        let from = format!("{muc}/{nick}");
        self.expect(30, &format!("{body:?} from {nick}"), |s| {
            s.name == "message"
                && s.get("type") == Some("groupchat")
                && s.get("from") == Some(from.as_str())
                && s.child_text("body") == Some(body)
        })
        .await
    }
}

/// Everything one test needs: Prosody, homeserver, bridge, and a Matrix admin user.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub prosody: Prosody,
    pub server: tsunagu::Server,
    pub matrix: Matrix,
    pub bridge: BridgeProcess,
    /// `@alice:localhost`, the bridge's admin user (invited to the admin room and portals).
    pub alice: User,
}

impl Env {
    /// Starts Prosody (with accounts `bob` and `carol`), Tsunagu with the bridge's
    /// registration, alice, and the bridge bridging `mucs`.
    pub async fn start(mucs: &[&str]) -> Self {
        Self::start_with(mucs, bridge_testkit::Extras::default()).await
    }

    /// With the community bots and double puppeting as `extras` says.
    pub async fn start_with(mucs: &[&str], extras: bridge_testkit::Extras) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let prosody = Prosody::start(dir.path()).await;
        prosody.register("bob", "bob's password");
        prosody.register("carol", "carol's password");
        let binary = Path::new(env!("CARGO_BIN_EXE_tsunagu-xmpp"));
        let double_puppet = extras.config_line(dir.path());
        let started = bridge_testkit::start_bridge_with(
            dir.path(),
            binary,
            ("TSUNAGU_XMPP_LOG", "xmpp=debug,tsunagu_appservice=debug"),
            extras,
            |homeserver, registration, as_port| {
            let mucs: Vec<String> = mucs.iter().map(|c| format!("{c:?}")).collect();
                format!(
                    "homeserver_url = {homeserver:?}\nserver_name = \"localhost\"\n\
                     registration = {registration:?}\nlisten = \"127.0.0.1:{as_port}\"\n\
                     data_dir = {data:?}\nadmin_user = \"@alice:localhost\"\n{double_puppet}\
                     [xmpp]\nhost = \"127.0.0.1\"\nport = {port}\n\
                     domain = \"bridge.localhost\"\nsecret = \"{SECRET}\"\n\
                     nick = \"{BRIDGE_NICK}\"\nmucs = [{mucs}]\n\
                     echo_timeout_ms = 5000\nrejoin_interval_ms = 1000\nreconnect_min_ms = 500\nreconnect_max_ms = 2000\n\
                     upload_service = \"upload.localhost\"\n\
                     fetch_files_from = [\"http://127.0.0.1:{http}/\"]\nmax_file_bytes = 100000\n",
                    http = prosody.http_port,
                    data = dir.path().join("xmpp-data"),
                    port = prosody.component_port,
                    mucs = mucs.join(", "),
                )
            },
        )
        .await;
        Self {
            dir,
            prosody,
            server: started.server,
            matrix: started.matrix,
            bridge: started.bridge,
            alice: started.alice,
        }
    }

    /// The admin room's ID, once alice has been invited to it; alice joins it.
    pub async fn join_admin_room(&self) -> String {
        bridge_testkit::join_admin_room(&self.matrix, &self.alice, "XMPP bridge").await
    }

    /// Connects `user` (bob or carol) over c2s.
    pub async fn client(&self, user: &str) -> XmppClient {
        XmppClient::connect(self.prosody.c2s_port, user, &format!("{user}'s password")).await
    }
}

impl Drop for Env {
    /// On failure (or with `XMPP_TEST_SHOW_LOG=1`), shows what the bridge and Prosody logged.
    fn drop(&mut self) {
        let show = std::env::var_os("XMPP_TEST_SHOW_LOG").is_some();
        bridge_testkit::show_log_tail("bridge log", &self.dir.path().join("bridge.log"), show);
        bridge_testkit::show_log_tail("prosody log", &self.prosody.log_path(), show);
    }
}

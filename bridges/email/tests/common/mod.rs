//! Test harness for the mailing-list bridge, with real parts: a Postfix (the MTA: it takes
//! mail by SMTP, hands the lists' domain to the bridge by LMTP and everything else to
//! Dovecot) and a Dovecot (the users' mailboxes, delivered by LMTP into Maildirs), each with a
//! config of its own on free loopback ports; Tsunagu in-process with the bridge's
//! registration; the `tsunagu-email` binary as a child process; Matrix users over raw HTTP.
#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

pub use bridge_testkit::{BridgeProcess, Matrix, User, eventually, free_port};
use tokio::net::TcpStream;

pub const LIST: &str = "alumni@lists.example.test";
pub const PORTAL: &str = "#mail_alumni:localhost";

/// A child server in a process group of its own, killed with its children.
struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    fn spawn(mut command: Command, log: &Path) -> Self {
        use std::os::unix::process::CommandExt as _;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the mail server starts");
        Self { child: Some(child) }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The whole group: the servers' own children too. (Not `kill -KILL -PID` by
            // command: one `kill` binary took that for `kill -1`, every process.)
            if let Ok(group) = i32::try_from(child.id())
                && group > 1
            {
                // SAFETY: kill(2) with a process group ID and a signal number.
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for MailServers {
    /// Postfix's master leaves the process group it was started in (it becomes a session
    /// leader), so it is stopped by its own command.
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.dir.join("postfix").join("etc"))
            .arg("abort")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.postfix.kill();
        self.dovecot.kill();
    }
}

/// Postfix and Dovecot, configured for the domains `example.test` (people) and
/// `lists.example.test` (the bridge's lists); mail to `bounce.example.test` bounces.
pub struct MailServers {
    dir: PathBuf,
    /// Postfix's SMTP port.
    pub smtp_port: u16,
    /// Where Postfix delivers the lists' mail: the bridge's LMTP port.
    pub bridge_lmtp_port: u16,
    postfix: Daemon,
    dovecot: Daemon,
}

async fn listening(port: u16, what: &str) {
    eventually(30, what, || async move {
        TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
    })
    .await;
}

impl MailServers {
    pub async fn start(dir: &Path) -> Self {
        for bin in ["/usr/sbin/postfix", "/usr/sbin/dovecot"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: apt-get install postfix dovecot-lmtpd (scripts/test does)"
            );
        }
        assert!(
            Path::new("/etc/postfix/main.cf").exists(),
            "Postfix reads /etc/postfix/main.cf before any other config: scripts/test writes one"
        );
        let dir = dir.join("mail");
        let (smtp_port, dovecot_lmtp, bridge_lmtp) = (free_port(), free_port(), free_port());

        // Dovecot: mailboxes as Maildirs under dir/mailboxes/<user>, any user, LMTP only.
        let dv = dir.join("dovecot");
        let mailboxes = dir.join("mailboxes");
        for d in [dv.join("run"), dv.join("state"), mailboxes.clone()] {
            fs::create_dir_all(d).unwrap();
        }
        chown("nobody:nogroup", &mailboxes);
        let dovecot_conf = dv.join("dovecot.conf");
        fs::write(
            &dovecot_conf,
            format!(
                "protocols = lmtp\nlisten = 127.0.0.1\nbase_dir = {dv}/run\nstate_dir = {dv}/state\n\
                 log_path = {dv}/dovecot.log\nssl = no\nauth_username_format = %Ln\n\
                 mail_location = maildir:{mb}/%Ln\nmail_uid = nobody\nmail_gid = nogroup\n\
                 passdb {{\n  driver = static\n  args = nopassword=y\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={mb}/%Ln\n}}\n\
                 service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {dovecot_lmtp}\n  }}\n}}\n",
                dv = dv.display(),
                mb = mailboxes.display(),
            ),
        )
        .unwrap();
        let mut command = Command::new("/usr/sbin/dovecot");
        command.arg("-F").arg("-c").arg(&dovecot_conf);
        let dovecot = Daemon::spawn(command, &dv.join("dovecot.out"));
        listening(dovecot_lmtp, "dovecot's LMTP port").await;

        // Postfix: SMTP on loopback; the lists' domain by LMTP to the bridge, people's by LMTP
        // to Dovecot; deferred mail retried within seconds.
        let pf = dir.join("postfix");
        let (etc, queue, data) = (pf.join("etc"), pf.join("queue"), pf.join("data"));
        for d in [&etc, &queue, &data] {
            fs::create_dir_all(d).unwrap();
        }
        chown("postfix:postfix", &data);
        fs::write(
            etc.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {queue}\ndata_directory = {data}\n\
                 mail_owner = postfix\nsetgid_group = postdrop\nmyhostname = mail.example.test\n\
                 mydomain = example.test\nmyorigin = example.test\nmydestination =\n\
                 inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
                 smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
                 virtual_mailbox_domains = example.test\n\
                 virtual_transport = lmtp:inet:127.0.0.1:{dovecot_lmtp}\n\
                 relay_domains = lists.example.test, bounce.example.test\n\
                 transport_maps = inline:{{ lists.example.test=lmtp:inet:127.0.0.1:{bridge_lmtp}, \
                 {{ bounce.example.test = error:5.1.1 mailbox unavailable }} }}\n\
                 maillog_file_prefixes = {pf}\nmaillog_file = {pf}/maillog\n\
                 smtputf8_enable = no\nbiff = no\nalias_maps =\nalias_database =\n\
                 local_recipient_maps =\nqueue_run_delay = 1s\nminimal_backoff_time = 1s\n\
                 maximal_backoff_time = 2s\n\
                 smtpd_reject_unlisted_recipient = no\n",
                queue = queue.display(),
                data = data.display(),
                pf = pf.display(),
            ),
        )
        .unwrap();
        let services = [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ];
        fs::write(
            etc.join("master.cf"),
            format!(
                "127.0.0.1:{smtp_port} inet n - n - - smtpd\n{}\n",
                services.join("\n")
            ),
        )
        .unwrap();
        let mut command = Command::new("/usr/sbin/postfix");
        command.arg("-c").arg(&etc).arg("start-fg");
        let postfix = Daemon::spawn(command, &pf.join("postfix.out"));
        listening(smtp_port, "postfix's SMTP port").await;
        Self {
            dir,
            smtp_port,
            bridge_lmtp_port: bridge_lmtp,
            postfix,
            dovecot,
        }
    }

    /// Submits a mail to Postfix, as a mail client would.
    pub async fn submit(&self, from: &str, to: &str, raw: &[u8]) {
        email::smtp::send(
            "127.0.0.1",
            self.smtp_port,
            "client.example.test",
            from,
            &[to.to_owned()],
            raw,
        )
        .await
        .expect("postfix takes the mail");
    }

    /// The raw mails in a user's mailbox, oldest first.
    pub fn mailbox(&self, user: &str) -> Vec<Vec<u8>> {
        let dir = self.dir.join("mailboxes").join(user);
        let mut files: Vec<PathBuf> = ["new", "cur"]
            .iter()
            .filter_map(|d| fs::read_dir(dir.join(d)).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        // Maildir names start with the delivery time.
        files.sort_by_key(|p| p.file_name().map(|n| n.to_owned()));
        files.into_iter().filter_map(|p| fs::read(p).ok()).collect()
    }

    /// Waits for a mail in `user`'s mailbox that `pred` accepts; returns it raw.
    pub async fn wait_mail(
        &self,
        user: &str,
        what: &str,
        pred: impl Fn(&mail_parser::Message<'_>) -> bool,
    ) -> Vec<u8> {
        let pred = &pred;
        eventually(60, &format!("{what} in {user}'s mailbox"), || async move {
            self.mailbox(user).into_iter().find(|raw| {
                mail_parser::MessageParser::default()
                    .parse(raw)
                    .is_some_and(|m| pred(&m))
            })
        })
        .await
    }

    /// How many mails in `user`'s mailbox contain `text` in their body.
    pub fn count(&self, user: &str, text: &str) -> usize {
        self.mailbox(user)
            .iter()
            .filter_map(|raw| mail_parser::MessageParser::default().parse(raw))
            .filter(|m| m.body_text(0).is_some_and(|b| b.contains(text)))
            .count()
    }

    pub fn logs(&self) -> [PathBuf; 2] {
        [
            self.dir.join("postfix").join("maillog"),
            self.dir.join("dovecot").join("dovecot.log"),
        ]
    }
}

fn chown(owner: &str, path: &Path) {
    let ok = Command::new("chown")
        .arg(owner)
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "chown {owner} {}: the mail tests run as root (Postfix and Dovecot need it)",
        path.display()
    );
}

/// A plain-text mail.
pub fn mail(
    from: &str,
    subject: &str,
    message_id: &str,
    in_reply_to: Option<&str>,
    body: &str,
) -> Vec<u8> {
    let reply = in_reply_to
        .map(|p| format!("In-Reply-To: {p}\r\nReferences: {p}\r\n"))
        .unwrap_or_default();
    format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n{reply}\
         Date: Thu, 03 Dec 2026 07:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Everything one test needs: mail servers, homeserver, bridge, and a Matrix admin user.
pub struct Env {
    pub mail: MailServers,
    pub server: tsunagu::Server,
    pub matrix: Matrix,
    pub bridge: BridgeProcess,
    /// `@alice:localhost`, the bridge's admin user (a moderator of every portal).
    pub alice: User,
    /// Last, so it is removed after the servers that use it are stopped.
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn start() -> Self {
        Self::start_with(bridge_testkit::Extras::default()).await
    }

    /// With the community bots and double puppeting as `extras` says.
    pub async fn start_with(extras: bridge_testkit::Extras) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mail = MailServers::start(dir.path()).await;
        let binary = Path::new(env!("CARGO_BIN_EXE_tsunagu-email"));
        let double_puppet = extras.config_line(dir.path());
        let started = bridge_testkit::start_bridge_with(
            dir.path(),
            binary,
            ("TSUNAGU_EMAIL_LOG", "email=debug,tsunagu_appservice=debug"),
            extras,
            |homeserver, registration, as_port| {
                format!(
                    "homeserver_url = {homeserver:?}\nserver_name = \"localhost\"\n\
                     registration = {registration:?}\nlisten = \"127.0.0.1:{as_port}\"\n\
                     data_dir = {data:?}\nadmin_user = \"@alice:localhost\"\n\
                     {double_puppet}[mail]\nlmtp_listen = \"127.0.0.1:{lmtp}\"\nsmtp_host = \"127.0.0.1\"\n\
                     smtp_port = {smtp}\ndigest_interval_secs = 2\nmax_bounces = 1\n\
                     retry_max_ms = 2000\n\
                     [[lists]]\naddress = \"{LIST}\"\nname = \"Alumni\"\n",
                    data = dir.path().join("email-data"),
                    lmtp = mail.bridge_lmtp_port,
                    smtp = mail.smtp_port,
                )
            },
        )
        .await;
        Self {
            dir,
            mail,
            server: started.server,
            matrix: started.matrix,
            bridge: started.bridge,
            alice: started.alice,
        }
    }

    pub async fn join_admin_room(&self) -> String {
        bridge_testkit::join_admin_room(&self.matrix, &self.alice, "Mail bridge").await
    }

    /// Asks to subscribe `user@example.test` by mail; returns the request that comes back.
    pub async fn ask_to_subscribe(&self, user: &str) -> Vec<u8> {
        let address = format!("{user}@example.test");
        self.mail
            .submit(
                &address,
                "alumni+subscribe@lists.example.test",
                &mail(
                    &address,
                    "subscribe",
                    &format!("<sub-{user}@example.test>"),
                    None,
                    "",
                ),
            )
            .await;
        self.mail
            .wait_mail(user, "the confirmation request", |m| {
                m.body_text(0)
                    .is_some_and(|b| b.contains("asked to subscribe"))
            })
            .await
    }

    /// Subscribes `user@example.test` by mail, confirming with a reply to the request, and
    /// waits for the welcome.
    pub async fn subscribe(&self, user: &str) {
        let address = format!("{user}@example.test");
        let request = self.ask_to_subscribe(user).await;
        let parsed = mail_parser::MessageParser::default()
            .parse(&request)
            .unwrap();
        let confirm = parsed
            .reply_to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .expect("the request says where to reply")
            .to_owned();
        assert!(confirm.starts_with("alumni+confirm-"), "{confirm}");
        self.mail
            .submit(
                &address,
                &confirm,
                &mail(
                    &address,
                    "Re: subscribe",
                    &format!("<yes-{user}@example.test>"),
                    None,
                    "yes",
                ),
            )
            .await;
        self.mail
            .wait_mail(user, "the welcome", |m| {
                m.body_text(0)
                    .is_some_and(|b| b.contains("You are subscribed to Alumni"))
            })
            .await;
    }
}

impl Drop for Env {
    /// On failure (or with `EMAIL_TEST_SHOW_LOG=1`), shows what the bridge and the mail
    /// servers logged.
    fn drop(&mut self) {
        let show = std::env::var_os("EMAIL_TEST_SHOW_LOG").is_some();
        bridge_testkit::show_log_tail("bridge log", &self.dir.path().join("bridge.log"), show);
        for log in self.mail.logs() {
            bridge_testkit::show_log_tail(&log.display().to_string(), &log, show);
        }
    }
}

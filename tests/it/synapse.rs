//! Federation with a real Synapse on loopback: a Synapse user joins a Tsunagu room and a
//! Tsunagu user joins a Synapse room, messages cross both ways, typing shows on Synapse, an
//! invite from Tsunagu is countersigned by Synapse and accepted, and an encrypted room with
//! real matrix-sdk clients on each server decrypts on the other side.
//!
//! Synapse comes from PyPI: `scripts/test` installs it into a virtualenv and names its Python
//! in `SYNAPSE_PYTHON`. Without that variable these tests say so and do nothing (so
//! `cargo test` runs on a machine without Synapse); `scripts/test` and CI always set it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use crate::{
    common::{self, TestServer},
    federation::{federating, self_signed},
};

/// A Synapse homeserver running for one test (killed when dropped).
pub struct Synapse {
    child: Child,
    /// Its server name, `localhost:<federation port>`.
    pub name: String,
    /// Its Client-Server API, plain HTTP on loopback.
    pub url: String,
    pub http: common::Http,
    dir: tempfile::TempDir,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Synapse {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of its log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("synapse.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// The Python with Synapse installed, from `SYNAPSE_PYTHON`; None (and a note) when
/// it is not set.
fn synapse_python() -> Option<PathBuf> {
    match std::env::var_os("SYNAPSE_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "SYNAPSE_PYTHON is not set: the Synapse federation test does nothing \
                 (scripts/test installs Synapse and sets it)"
            );
            None
        }
    }
}

/// Starts Synapse (SQLite, open registration, rate limits raised) with a TLS federation
/// listener presenting the tests' certificate, trusting no notary, allowed to reach loopback
/// and not checking certificates (the tests' is self-signed). Waits until it answers.
pub async fn start_synapse(python: &Path) -> Synapse {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let fed_port = common::free_addr().port();
    let client_port = common::free_addr().port();
    let name = format!("localhost:{fed_port}");
    let config = dir.path().join("homeserver.yaml");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let status = Command::new(python)
        .args(["-m", "synapse.app.homeserver", "--server-name", &name])
        .arg("--config-path")
        .arg(&config)
        .arg("--data-directory")
        .arg(&data)
        .args(["--generate-config", "--report-stats=no"])
        .stdout(Stdio::null())
        .status()
        .expect("Synapse generates its config");
    assert!(status.success(), "Synapse --generate-config failed");
    let script = r#"
import os, yaml
e = os.environ
path = e["SYN_CONFIG"]
c = yaml.safe_load(open(path))
high = {"per_second": 1000000, "burst_count": 1000000}
c.update({
    "listeners": [
        {"port": int(e["SYN_FED_PORT"]), "bind_addresses": ["127.0.0.1"], "type": "http",
         "tls": True, "x_forwarded": False,
         "resources": [{"names": ["federation"], "compress": False}]},
        {"port": int(e["SYN_CLIENT_PORT"]), "bind_addresses": ["127.0.0.1"], "type": "http",
         "tls": False, "x_forwarded": False,
         "resources": [{"names": ["client"], "compress": False}]},
    ],
    "tls_certificate_path": e["SYN_CERT"],
    "tls_private_key_path": e["SYN_KEY"],
    "federation_verify_certificates": False,
    "ip_range_blacklist": [],
    "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
    "database": {"name": "sqlite3", "args": {"database": e["SYN_DATA"] + "/homeserver.db"}},
    "enable_registration": True,
    "enable_registration_without_verification": True,
    "report_stats": False,
    "trusted_key_servers": [],
    "suppress_key_server_warning": True,
    "presence": {"enabled": False},
    "url_preview_enabled": False,
    "rc_message": high,
    "rc_registration": high,
    "rc_login": {"address": high, "account": high, "failed_attempts": high},
    "rc_joins": {"local": high, "remote": high},
    "rc_joins_per_room": high,
    "rc_invites": {"per_room": high, "per_user": high, "per_issuer": high},
    "rc_room_creation": high,
    "rc_federation": {"window_size": 1000, "sleep_limit": 1000, "sleep_delay": 1,
                      "reject_limit": 1000, "concurrent": 100},
    "rc_key_requests": high,
    "federation_rr_transactions_per_room_per_second": 1000,
})
yaml.safe_dump(c, open(path, "w"))
lc_path = c["log_config"]
lc = yaml.safe_load(open(lc_path))
lc["root"]["level"] = "INFO"
lc["root"]["handlers"] = ["console"]
for h in ("file", "buffer"):
    lc["handlers"].pop(h, None)
lc["loggers"]["synapse.storage.SQL"]["level"] = "WARNING"
yaml.safe_dump(lc, open(lc_path, "w"))
"#;
    let status = Command::new(python)
        .args(["-c", script])
        .env("SYN_CONFIG", &config)
        .env("SYN_FED_PORT", fed_port.to_string())
        .env("SYN_CLIENT_PORT", client_port.to_string())
        .env("SYN_CERT", &cert)
        .env("SYN_KEY", &key)
        .env("SYN_DATA", &data)
        .status()
        .expect("the config script runs");
    assert!(status.success(), "configuring Synapse failed");
    let log = std::fs::File::create(dir.path().join("synapse.log")).unwrap();
    let child = Command::new(python)
        .args(["-m", "synapse.app.homeserver", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("Synapse starts");
    let url = format!("http://127.0.0.1:{client_port}");
    let http = common::Http::new(&url);
    let synapse = Synapse {
        child,
        name,
        url,
        http,
        dir,
    };
    for _ in 0..600 {
        let up = reqwest::get(format!("{}/_matrix/client/versions", synapse.url))
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            return synapse;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("Synapse did not start:\n{}", synapse.log_tail());
}

/// A Tsunagu server that federates (TLS listener, trusting the tests' certificate) and a
/// Synapse, each with one user: Alice on Synapse, Bob on Tsunagu.
struct Both {
    t: TestServer,
    t_name: String,
    s: Synapse,
    alice: common::Account,
    bob: common::Account,
}

async fn both(python: &Path) -> Both {
    let (t, t_name) = federating(&[]).await;
    let s = start_synapse(python).await;
    let alice = s.http.register("alice").await;
    let bob = t.http.register("bob").await;
    Both {
        t,
        t_name,
        s,
        alice,
        bob,
    }
}

/// Waits until `who` reads `body` in the room on the server behind `http`.
async fn sees(
    http: &common::Http,
    who: &common::Account,
    room: &str,
    body: &str,
    log: &dyn Fn() -> String,
) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
        common::http::urlencode(room)
    );
    for _ in 0..300 {
        let (status, res) = http
            .json("GET", &path, Some(&who.token), serde_json::Value::Null)
            .await;
        if status == 200
            && common::http::bodies(&res["chunk"])
                .iter()
                .any(|b| b == body)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{} never read {body:?} in {room}\n{}", who.id, log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synapse_user_and_a_tsunagu_user_share_rooms_on_both_servers() {
    let Some(python) = synapse_python() else {
        return;
    };
    let Both {
        t,
        t_name,
        s,
        alice,
        bob,
    } = both(&python).await;
    let log = || s.log_tail();

    // Alice of Synapse joins Bob's room on Tsunagu by its alias.
    let ours = t
        .http
        .create_room(
            &bob.token,
            serde_json::json!({ "room_alias_name": "tsunagu-side", "preset": "public_chat" }),
        )
        .await;
    let (status, res) = s
        .http
        .join(&alice.token, &format!("%23tsunagu-side:{t_name}"))
        .await;
    assert_eq!(status, 200, "{res}\n{}", log());
    assert_eq!(res["room_id"], ours.as_str());
    t.http
        .send_text(&bob.token, &ours, "Hello from Tsunagu")
        .await;
    sees(&s.http, &alice, &ours, "Hello from Tsunagu", &log).await;
    s.http
        .send_text(&alice.token, &ours, "Hello from Synapse")
        .await;
    sees(&t.http, &bob, &ours, "Hello from Synapse", &log).await;

    // Bob's typing and read receipt show on Synapse.
    let (status, res) = t
        .http
        .json(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                common::http::urlencode(&ours),
                common::http::urlencode(&bob.id)
            ),
            Some(&bob.token),
            serde_json::json!({ "typing": true, "timeout": 30000 }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let mut seen_typing = false;
    for _ in 0..300 {
        let sync = s.http.sync(&alice.token, "timeout=0").await;
        let events = &sync["rooms"]["join"][&ours]["ephemeral"]["events"];
        seen_typing = events.as_array().is_some_and(|e| {
            e.iter().any(|e| {
                e["type"] == "m.typing"
                    && e["content"]["user_ids"]
                        .as_array()
                        .is_some_and(|u| u.iter().any(|u| u == bob.id.as_str()))
            })
        });
        if seen_typing {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen_typing, "Synapse never showed Bob typing\n{}", log());

    // Bob of Tsunagu joins Alice's room on Synapse by its alias.
    let theirs = s
        .http
        .create_room(
            &alice.token,
            serde_json::json!({ "room_alias_name": "synapse-side", "preset": "public_chat" }),
        )
        .await;
    let (status, res) = t
        .http
        .join(&bob.token, &format!("%23synapse-side:{}", s.name))
        .await;
    assert_eq!(status, 200, "{res}\n{}", log());
    assert_eq!(res["room_id"], theirs.as_str());
    s.http
        .send_text(&alice.token, &theirs, "Welcome to Synapse")
        .await;
    sees(&t.http, &bob, &theirs, "Welcome to Synapse", &log).await;
    t.http
        .send_text(&bob.token, &theirs, "Thanks from Tsunagu")
        .await;
    sees(&s.http, &alice, &theirs, "Thanks from Tsunagu", &log).await;

    // Bob invites Alice to a private room on Tsunagu; Synapse countersigns, she accepts.
    let private = t
        .http
        .create_room(
            &bob.token,
            serde_json::json!({ "preset": "private_chat", "name": "Just us", "invite": [alice.id] }),
        )
        .await;
    let mut since = String::new();
    for _ in 0..300 {
        let sync = s
            .http
            .sync(&alice.token, &format!("timeout=0{since}"))
            .await;
        since = format!("&since={}", common::http::next_batch(&sync));
        if !sync["rooms"]["invite"][&private].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, res) = s
        .http
        .join(&alice.token, &common::http::urlencode(&private))
        .await;
    assert_eq!(status, 200, "{res}\n{}", log());
    t.http.send_text(&bob.token, &private, "Only for you").await;
    sees(&s.http, &alice, &private, "Only for you", &log).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_room_between_synapse_and_tsunagu_decrypts_on_both_sides() {
    let Some(python) = synapse_python() else {
        return;
    };
    let (t, _) = federating(&[]).await;
    let s = start_synapse(&python).await;
    let alice = common::User::new(
        &s.url,
        common::client::register(&s.url, s.dir(), "alice").await,
    )
    .await;
    let bob = common::user(&t, "bob").await;
    // Alice's encrypted room on Synapse, Bob of Tsunagu invited; his client accepts.
    let mut req = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
    req.name = Some("Across Synapse and Tsunagu".into());
    req.preset =
        Some(matrix_sdk::ruma::api::client::room::create_room::v3::RoomPreset::PrivateChat);
    req.invite = vec![bob.id()];
    req.initial_state = vec![
        matrix_sdk::ruma::events::InitialStateEvent::with_empty_state_key(
            matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent::with_recommended_defaults(),
        )
        .to_raw_any(),
    ];
    let room = alice.client.create_room(req).await.expect("room created");
    let room_id = room.room_id().to_owned();
    bob.accept_invite(&room_id).await;
    common::client::wait_membership(
        &room,
        &bob.id(),
        matrix_sdk::ruma::events::room::member::MembershipState::Join,
    )
    .await;
    common::client::say(&room, "A secret from Synapse").await;
    bob.receives_encrypted("A secret from Synapse").await;
    let bob_room = bob.room(&room_id).await;
    common::client::say(&bob_room, "A secret from Tsunagu").await;
    alice.receives_encrypted("A secret from Tsunagu").await;
    drop((alice, bob));
    drop(s);
    t.stop().await;
}

//! The `tsunagu` binary: admin commands on a data directory, environment settings, and an
//! acknowledged write surviving `kill -9`.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::Http;
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tsunagu(data: &std::path::Path, port: u16, engine: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tsunagu"));
    cmd.env("TSUNAGU_DATA_DIR", data)
        .env("TSUNAGU_LISTEN", format!("127.0.0.1:{port}"))
        .env("TSUNAGU_SERVER_NAME", "alumni.test")
        .env("TSUNAGU_REGISTRATION", "closed")
        .env("TSUNAGU_LOG", "warn")
        .env("TSUNAGU_STORAGE__ENGINE", engine)
        .stdin(Stdio::null());
    cmd
}

async fn serve(data: &std::path::Path, engine: &str) -> (Child, Http) {
    let port = free_port();
    let child = tsunagu(data, port, engine)
        .arg("serve")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    common::eventually(20, "the server to answer /versions", || async {
        reqwest::get(format!("{}/_matrix/client/versions", http.base))
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
    (child, http)
}

async fn login(http: &Http, user: &str, password: &str) -> String {
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
    let (status, res) = http
        .json("POST", "/_matrix/client/v3/login", None, body)
        .await;
    assert_eq!(status, 200, "{res}");
    res["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn admin_commands_and_kill_9_durability_sled() {
    admin_commands_and_kill_9_durability("sled").await
}

#[tokio::test]
async fn admin_commands_and_kill_9_durability_redb() {
    admin_commands_and_kill_9_durability("redb").await
}

async fn admin_commands_and_kill_9_durability(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // Admin commands work on the data directory before the server runs.
    let out = tsunagu(&data, 1, engine)
        .args([
            "admin",
            "create-user",
            "alice",
            "--admin",
            "--password",
            "pw-alice",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("@alice:alumni.test"));
    let out = tsunagu(&data, 1, engine)
        .args(["admin", "token", "new", "--uses", "2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.len() >= 16, "a token was printed: {token:?}");

    // A wrong setting stops the start and names it.
    let out = tsunagu(&data, 1, engine)
        .env("TSUNAGU_REGISTRATION", "sometimes")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sometimes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tsunagu(&data, 1, engine)
        .env("TSUNAGU_LISTN", "x")
        .arg("serve")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listn"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (mut child, http) = serve(&data, engine).await;
    let access = login(&http, "alice", "pw-alice").await;
    let (_, room) = http
        .json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&access),
            json!({ "name": "durable" }),
        )
        .await;
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let mut sent = Vec::new();
    for i in 0..20 {
        let (status, res) = http
            .json(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/k{i}"),
                Some(&access),
                json!({ "msgtype": "m.text", "body": format!("acked {i}") }),
            )
            .await;
        assert_eq!(status, 200, "{res}");
        sent.push(format!("acked {i}"));
    }
    // Pull the plug right after the last acknowledgement.
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (mut child, http) = serve(&data, engine).await;
    let access = login(&http, "alice", "pw-alice").await;
    let (status, msgs) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=f&limit=100"),
            Some(&access),
            None,
        )
        .await;
    assert_eq!(status, 200, "{msgs}");
    let bodies: Vec<String> = msgs["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(bodies, sent, "every acknowledged message survived kill -9");
    child.kill().unwrap();
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
}

//! The `tsunagu` binary: admin commands on a data directory, environment settings, and an
//! acknowledged write surviving `kill -9`.

use crate::common;

use std::process::{Child, Command, Stdio};

use common::{
    Http, WAIT,
    http::{bodies, password_login},
};
use serde_json::json;

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
    let port = common::free_addr().port();
    let child = tsunagu(data, port, engine)
        .arg("serve")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    common::eventually(WAIT, "the server to answer /versions", || async {
        reqwest::get(format!("{}/_matrix/client/versions", http.base))
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
    (child, http)
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
    let access = http
        .login_with(password_login("alice", "pw-alice"))
        .await
        .token;
    let room_id = http
        .create_room(&access, json!({ "name": "durable" }))
        .await;
    let mut sent = Vec::new();
    for i in 0..20 {
        let body = format!("acked {i}");
        http.send_text(&access, &room_id, &body).await;
        sent.push(body);
    }
    // Pull the plug right after the last acknowledgement.
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (mut child, http) = serve(&data, engine).await;
    let access = http
        .login_with(password_login("alice", "pw-alice"))
        .await
        .token;
    let msgs = http
        .get_ok(
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=f&limit=100"),
            Some(&access),
        )
        .await;
    assert_eq!(
        bodies(&msgs["chunk"]),
        sent,
        "every acknowledged message survived kill -9"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

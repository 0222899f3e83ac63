//! matrix-js-sdk, the client library of Element Web, against an in-process Tsunagu: everyday
//! chat (invites, messages, edits, typing, read markers and unread badges, reactions, a link to
//! an edited message), media through the
//! authenticated media paths, threads, search and the user directory, and end-to-end encryption
//! with js-sdk's Rust crypto.
//!
//! Each test starts a server and runs one scenario, `node tests/js/<scenario>.mjs <server url>`,
//! with a timeout. The script drives real js-sdk clients as Element Web sets them up, prints what
//! they saw as one line of JSON, and exits 0; the test asserts on that JSON what a user would
//! notice. The JS dependencies are pinned in `tests/js/package-lock.json`; `scripts/test`
//! installs them (`npm ci --prefix tests/js`), and a missing Node or `node_modules` fails the
//! test with that advice.

use crate::common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use common::TestServer;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// How long one scenario may run before it is killed. The scripts bound each of their own waits
/// (60 s), so this only ends a script that hangs outright.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);

/// The oldest Node the pinned matrix-js-sdk supports (its `engines` field).
const MIN_NODE: u32 = 20;

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Fails the test, clearly, when the scenarios cannot run here.
async fn require_node(dir: &Path) {
    let out = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `node` ({e}): the matrix-js-sdk tests need Node.js {MIN_NODE} or newer. \
                 Run scripts/test, which installs Node and the JS dependencies when it can, or \
                 install Node {MIN_NODE}+ and run `npm ci --prefix tests/js`."
            )
        });
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= MIN_NODE,
        "node is {version:?}; the pinned matrix-js-sdk needs Node.js {MIN_NODE} or newer"
    );
    assert!(
        dir.join("node_modules/matrix-js-sdk/package.json").exists(),
        "{} is missing: run scripts/test, which installs the JS dependencies \
         (or `npm ci --prefix tests/js` yourself)",
        dir.join("node_modules").display()
    );
}

/// Runs `node tests/js/{scenario}.mjs {server url}` to its end (killing it after
/// [`SCENARIO_TIMEOUT`]), asserts it succeeded, and returns the JSON it printed.
async fn run(t: &TestServer, scenario: &str) -> Value {
    let dir = js_dir();
    require_node(&dir).await;
    let started = Instant::now();
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join(format!("{scenario}.mjs")))
        .arg(t.url())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let read = |mut pipe: Box<dyn tokio::io::AsyncRead + Send + Unpin>| {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf).await;
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let status = match tokio::time::timeout(SCENARIO_TIMEOUT, child.wait()).await {
        Ok(status) => Some(status.expect("node runs")),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    let (stdout, stderr) = (stdout.await.unwrap(), stderr.await.unwrap());
    // The SDK logs a lot; the end of it says what went wrong.
    let tail: String = {
        let lines: Vec<&str> = stderr.lines().collect();
        lines[lines.len().saturating_sub(120)..].join("\n")
    };
    let Some(status) = status else {
        panic!(
            "{scenario}.mjs was killed after {SCENARIO_TIMEOUT:?}\n--- stderr (end) ---\n{tail}"
        );
    };
    assert!(
        status.success(),
        "{scenario}.mjs failed ({status})\n--- stdout ---\n{stdout}\n--- stderr (end) ---\n{tail}"
    );
    eprintln!(
        "{scenario}.mjs took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty());
    serde_json::from_str(line.unwrap_or_default())
        .unwrap_or_else(|e| panic!("{scenario}.mjs printed no JSON ({e}):\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_web_chat_invite_messages_edit_and_reaction() {
    let t = TestServer::start().await;
    let seen = run(&t, "chat").await;

    let conversation = json!([
        "Hi Bob, coffee on Friday?",
        "Gladly, at the usual place",
        "See you at 11",
    ]);
    assert_eq!(seen["alice_sees"], conversation, "{seen}");
    assert_eq!(seen["bob_sees"], conversation, "{seen}");
    assert_eq!(
        seen["bob_sees_edit"],
        json!({ "body": "See you at 11", "edited_by": "@alice:localhost" })
    );
    assert_eq!(
        seen["alice_sees_reactions"],
        json!([{ "key": "👍", "senders": ["@bob:localhost"] }])
    );
    assert_eq!(
        seen["bob_unread"],
        json!({ "before": 2, "after": 0 }),
        "bob's badge counts alice's two messages (not the edit, not the invite), then clears"
    );
    assert_eq!(seen["alice_sees_read_by"], json!(["@bob:localhost"]));
    assert_eq!(
        seen["bob_new_device_link"],
        json!({ "body": "See you at 11", "edited": true, "bundled_edit": "See you at 11" }),
        "a new device opening a link to the edited message shows the new text"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_web_image_download_and_thumbnails_through_authenticated_media() {
    let t = TestServer::start().await;
    let seen = run(&t, "media").await;

    assert_eq!(seen["msgtype"], "m.image");
    assert_eq!(seen["authenticated_media"], true, "{seen}");
    assert_eq!(
        seen["download_path"],
        "/_matrix/client/v1/media/download/localhost/{mediaId}"
    );
    let (up, down) = (&seen["uploaded"], &seen["downloaded"]);
    assert_eq!(down["status"], 200, "{seen}");
    assert_eq!(down["type"], "image/png");
    assert_eq!(down["sha256"], up["sha256"], "bob gets alice's bytes");
    assert_eq!(down["size"], up["size"]);
    assert_eq!(
        seen["anonymous_status"], 401,
        "authenticated media needs the token"
    );
    // The 64x48 image scaled into 32x32 keeps its shape; cropped to 16x16 it fills the box.
    assert_eq!(
        seen["thumbnail_scale"],
        json!({ "status": 200, "type": "image/png", "size": { "width": 32, "height": 24 } })
    );
    assert_eq!(
        seen["thumbnail_crop"],
        json!({ "status": 200, "type": "image/png", "size": { "width": 16, "height": 16 } })
    );
    assert_eq!(seen["max_upload_size"], 52_428_800);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_web_threads_show_replies_and_count() {
    let t = TestServer::start().await;
    let seen = run(&t, "threads").await;

    assert_eq!(
        seen["server_side_support"], "stable",
        "js-sdk uses the server's threads"
    );
    assert_eq!(seen["threads_in_room"], json!(["root"]));
    assert_eq!(
        seen["main_timeline"],
        json!(["Who is coming to the reunion?"]),
        "thread replies stay out of the main timeline"
    );
    let thread = json!({
        "root": "Who is coming to the reunion?",
        "count": 2,
        "replies": ["I am", "And I bring cake"],
        "latest": "And I bring cake",
        "senders": ["@bob:localhost"],
    });
    assert_eq!(seen["live_thread"], thread);
    assert_eq!(
        seen["new_device_panel"],
        json!(["Who is coming to the reunion?"]),
        "the thread panel of a new device lists the thread"
    );
    assert_eq!(seen["new_device_thread"], thread);
    assert_eq!(seen["new_device_bundled_count"], 2);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_web_search_with_context_and_user_directory() {
    let t = TestServer::start().await;
    let seen = run(&t, "search").await;

    let rounds = |from: u32, to: u32| -> Vec<String> {
        (from..=to)
            .rev()
            .map(|i| format!("Coffee round {i}"))
            .collect()
    };
    assert_eq!(seen["count"], 12, "{seen}");
    assert_eq!(
        seen["pages"],
        json!([10, 2]),
        "ten at a time, then the rest"
    );
    assert_eq!(seen["first_page"], json!(rounds(2, 11)), "newest first");
    let mut all = rounds(1, 11);
    all.push("The coffee machine is fixed".into());
    assert_eq!(seen["all"], json!(all));
    assert_eq!(
        seen["context_of_fixed"],
        json!([
            "Morning all",
            "The coffee machine is fixed",
            "See you at lunch"
        ]),
        "one event of context either side"
    );
    assert_eq!(seen["context_sender_name"], "Bobby Tables");
    assert_eq!(seen["tea"], json!(["Tea anyone?"]));
    let bob = json!([{ "user_id": "@bob:localhost", "display_name": "Bobby Tables" }]);
    assert_eq!(seen["directory_bobby"], bob);
    assert_eq!(seen["directory_tables"], bob);
    assert_eq!(seen["directory_nobody"], json!([]));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_web_encrypted_messages_decrypt_on_the_other_side() {
    let t = TestServer::start().await;
    let seen = run(&t, "e2ee").await;

    assert_eq!(seen["room_encrypted"], true);
    assert!(
        seen["crypto_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("Rust SDK")),
        "{seen}"
    );
    assert_eq!(
        seen["devices_seen"],
        json!([1, 1]),
        "each sees the other's one device with keys"
    );
    assert_eq!(
        seen["bob_reads"],
        json!({ "body": "Only Bob can read this", "was_encrypted": true, "wire_type": "m.room.encrypted" })
    );
    assert_eq!(
        seen["alice_reads"],
        json!({ "body": "And only Alice this", "was_encrypted": true, "wire_type": "m.room.encrypted" })
    );

    // What the server stored: ciphertext, never the words.
    let room_id: ruma::OwnedRoomId = seen["room_id"].as_str().unwrap().try_into().unwrap();
    let events = common::stored(&t.server, &room_id);
    let kinds: Vec<String> = events.iter().map(|e| e.kind().to_string()).collect();
    assert!(!kinds.iter().any(|k| k == "m.room.message"), "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| *k == "m.room.encrypted").count() >= 2,
        "{kinds:?}"
    );
    for e in &events {
        let pdu = serde_json::to_string(&e.pdu).unwrap();
        assert!(
            !pdu.contains("Only Bob") && !pdu.contains("only Alice"),
            "plaintext stored: {pdu}"
        );
    }
    t.stop().await;
}

//! A hostile client against the in-process server, on loopback: every attack is refused with
//! the spec's error or bounded, and the server keeps answering `/versions` meanwhile.

use crate::common;

use std::time::{Duration, Instant};

use common::{Http, TestServer, assert_error};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The tests of this file run one at a time: each measures `/versions` while it attacks, and
/// another test's attack would be measured with it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The median and the slowest of nine `/versions` calls, each on a new connection.
async fn versions_latency(url: &str) -> (Duration, Duration) {
    let mut times = Vec::new();
    for _ in 0..9 {
        let client = reqwest::Client::builder().build().unwrap();
        let start = Instant::now();
        let res = client
            .get(format!("{url}/_matrix/client/versions"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("/versions answers");
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
        times.push(start.elapsed());
    }
    times.sort();
    (times[4], times[8])
}

/// `/versions` answers within 50 ms (median of nine), the slowest within 2 s.
#[track_caller]
fn assert_responsive((median, slowest): (Duration, Duration), during: &str) {
    assert!(
        median < Duration::from_millis(50),
        "/versions took {median:?} (median) during {during}"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "/versions took {slowest:?} (slowest) during {during}"
    );
}

/// This process's resident memory in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Raises this process's open-file limit to its hard limit (the server does the same).
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the process's own limits.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn addr(t: &TestServer) -> std::net::SocketAddr {
    t.server.addr()
}

/// Reads what the server sends until it closes the connection or `secs` pass.
async fn read_until_closed(tcp: &mut TcpStream, secs: u64) -> Option<String> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&buf).into_owned()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return None, // still open
        }
    }
}

fn status_and_json(raw: &str) -> (u16, Value) {
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Sends a message with a chosen transaction ID and returns the event ID.
async fn send_text(http: &Http, token: &str, room: &str, txn: &str, body: &str) -> String {
    let (status, res) = http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            Some(token),
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    res["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_are_refused_before_they_are_read() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t = TestServer::start().await;
    let (server, http) = (&t, &t.http);
    let token = http.register("alice").await.token;
    let before = rss_kib();
    // Sixteen strangers announce 19 MB each and start sending.
    let mut attackers = Vec::new();
    for i in 0..16 {
        let addr = addr(server);
        attackers.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "PUT /_matrix/client/v3/rooms/!r:localhost/send/m.room.message/{i} HTTP/1.1\r\n\
                 Host: localhost\r\nContent-Type: application/json\r\n\
                 Content-Length: 19000000\r\n\r\n"
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..16 {
                if tcp.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            read_until_closed(&mut tcp, 10).await
        }));
    }
    assert_responsive(
        versions_latency(&server.url()).await,
        "16 unauthenticated 19 MB uploads",
    );
    for a in attackers {
        let answer = a.await.unwrap().expect("the server answers and closes");
        let (status, body) = status_and_json(&answer);
        assert_eq!(status, 401, "{answer}");
        assert_eq!(body["errcode"], "M_MISSING_TOKEN");
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");

    // A member announcing more than the limit is refused before a byte of it is read.
    let mut tcp = TcpStream::connect(addr(server)).await.unwrap();
    let head = format!(
        "POST /_matrix/client/v3/user/@alice:localhost/filter HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 19000000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut tcp, 10).await.expect("answered");
    let (status, body) = status_and_json(&answer);
    assert_eq!(
        (status, body["errcode"].as_str()),
        (413, Some("M_TOO_LARGE"))
    );
}

#[tokio::test]
async fn events_over_the_spec_limits_are_too_large() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t = TestServer::start().await;
    let http = &t.http;
    let token = http.register("alice").await.token;
    let room = http.create_room(&token, json!({})).await;
    let big = "x".repeat(70_000);
    let send = |path: String, body: Value| {
        let token = &token;
        async move { http.json("PUT", &path, Some(token), body).await }
    };
    assert_error(
        &send(
            format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/1"),
            json!({ "msgtype": "m.text", "body": big }),
        )
        .await,
        413,
        "M_TOO_LARGE",
    );
    // Under the body limit but over the event limit once signed: still M_TOO_LARGE.
    assert_error(
        &send(
            format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/2"),
            json!({ "msgtype": "m.text", "body": "y".repeat(65_000) }),
        )
        .await,
        413,
        "M_TOO_LARGE",
    );
    let long_key = "k".repeat(300);
    assert_error(
        &send(
            format!("/_matrix/client/v3/rooms/{room}/state/org.example.test/{long_key}"),
            json!({}),
        )
        .await,
        413,
        "M_TOO_LARGE",
    );
    let long_type = "t".repeat(300);
    assert_error(
        &send(
            format!("/_matrix/client/v3/rooms/{room}/send/{long_type}/3"),
            json!({}),
        )
        .await,
        413,
        "M_TOO_LARGE",
    );
    // Account data and display names are bounded too.
    assert_error(
        &send(
            "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.big".into(),
            json!({ "data": "z".repeat(100_000) }),
        )
        .await,
        413,
        "M_TOO_LARGE",
    );
    assert_error(
        &send(
            "/_matrix/client/v3/profile/@alice:localhost/displayname".into(),
            json!({ "displayname": "n".repeat(300) }),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_times_out() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t = TestServer::start_with(|c| c.limits.body_timeout_secs = 1).await;
    let (server, http) = (&t, &t.http);
    let token = http.register("alice").await.token;
    let mut tcp = TcpStream::connect(addr(server)).await.unwrap();
    let head = format!(
        "POST /_matrix/client/v3/user/@alice:localhost/filter HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n{{\"room\":"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut tcp, 5)
        .await
        .expect("the server gives up on the body");
    let (status, body) = status_and_json(&answer);
    assert_eq!(status, 408, "{answer}");
    assert!(body["errcode"].is_string(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_and_do_not_lock_clients_out() {
    let _serial = ONE_AT_A_TIME.lock().await;
    raise_open_file_limit();
    let t = TestServer::start_with(|c| c.limits.header_timeout_secs = 1).await;
    let server = &t;
    // 1,100 connections that never send a byte: more than systemd's default file limit.
    let mut idle = Vec::new();
    for _ in 0..1100 {
        idle.push(TcpStream::connect(addr(server)).await.unwrap());
    }
    assert_responsive(
        versions_latency(&server.url()).await,
        "1,100 idle connections",
    );
    // They are closed once the header deadline passes.
    let mut first = idle.swap_remove(0);
    assert!(
        read_until_closed(&mut first, 5).await.is_some(),
        "an idle connection is closed"
    );
    // So is one that dribbles its headers.
    let mut slow = TcpStream::connect(addr(server)).await.unwrap();
    slow.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut closed = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if slow.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut byte)).await
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a connection sending its headers byte by byte is closed"
    );
}

#[tokio::test]
async fn connections_over_the_cap_get_a_spec_error() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t = TestServer::start_with(|c| c.limits.max_connections = 8).await;
    let server = &t;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr(server)).await.unwrap());
    }
    let mut extra = TcpStream::connect(addr(server)).await.unwrap();
    let answer = read_until_closed(&mut extra, 5).await.expect("answered");
    let (status, body) = status_and_json(&answer);
    assert_eq!(status, 429, "{answer}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    drop(held);
    // Slots come back when connections close.
    common::eventually(5, "a free connection slot", || async {
        reqwest::get(format!("{}/_matrix/client/versions", server.url()))
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
}

async fn to_device(
    http: &Http,
    token: &str,
    txn: &str,
    to: &str,
    device: &str,
    body: Value,
) -> (u16, Value) {
    http.json(
        "PUT",
        &format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"),
        Some(token),
        json!({ "messages": { to: { device: body } } }),
    )
    .await
}

async fn sync(http: &Http, token: &str, since: Option<&str>) -> Value {
    let path = match since {
        Some(s) => format!("/_matrix/client/v3/sync?timeout=0&since={s}"),
        None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
    };
    let (status, res) = http.call("GET", &path, Some(token), None).await;
    assert_eq!(status, 200, "{res}");
    res
}

fn to_device_count(sync: &Value) -> usize {
    sync["to_device"]["events"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

#[tokio::test]
async fn to_device_messages_are_capped_per_sync_queue_and_size() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t = TestServer::start_with(|c| {
        c.limits.to_device_per_sync = 10;
        c.limits.to_device_queue = 25;
    })
    .await;
    let http = &t.http;
    let alice = http.register("alice").await.token;
    let eve = http.register("eve").await.token;
    let (_, who) = http
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&alice),
            None,
        )
        .await;
    let device = who["device_id"].as_str().unwrap().to_owned();
    let first = sync(http, &alice, None).await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    // A message over the size limit is refused whole.
    let big = json!({ "pad": "p".repeat(70_000) });
    assert_error(
        &to_device(http, &eve, "big", "@alice:localhost", &device, big).await,
        413,
        "M_TOO_LARGE",
    );
    // Messages to a device that does not exist are dropped, not kept forever.
    let (status, _) = to_device(
        http,
        &eve,
        "ghost",
        "@alice:localhost",
        "NOSUCHDEVICE",
        json!({ "n": -1 }),
    )
    .await;
    assert_eq!(status, 200);
    // 40 messages to a queue of 25: 25 are kept, delivered 10 per sync.
    for n in 0..40 {
        let (status, res) = to_device(
            http,
            &eve,
            &format!("t{n}"),
            "@alice:localhost",
            &device,
            json!({ "n": n }),
        )
        .await;
        assert_eq!(status, 200, "{res}");
    }
    let mut since = since;
    let mut received = Vec::new();
    for _ in 0..10 {
        let res = sync(http, &alice, Some(&since)).await;
        let n = to_device_count(&res);
        assert!(n <= 10, "one sync carried {n} to-device messages");
        received.extend(
            res["to_device"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["content"]["n"].as_i64().unwrap()),
        );
        since = res["next_batch"].as_str().unwrap().to_owned();
        if n == 0 {
            break;
        }
    }
    assert_eq!(
        received,
        (0..25).collect::<Vec<_>>(),
        "in order, none lost, none twice"
    );
    // The device that did not exist gets nothing when it appears.
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": common::password("alice"), "device_id": "NOSUCHDEVICE" });
    let (status, res) = http
        .json("POST", "/_matrix/client/v3/login", None, login)
        .await;
    assert_eq!(status, 200, "{res}");
    let ghost = res["access_token"].as_str().unwrap().to_owned();
    assert_eq!(to_device_count(&sync(http, &ghost, None).await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_history_reads_do_not_stall_the_server() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t = TestServer::start().await;
    let (server, http) = (&t, &t.http);
    let alice = http.register("alice").await.token;
    let room = http
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let first = send_text(http, &alice, &room, "first", "the first message").await;
    let early = sync(http, &alice, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..600 {
        send_text(
            http,
            &alice,
            &room,
            &format!("m{i}"),
            &format!("message {i}"),
        )
        .await;
    }
    for i in 0..40 {
        let name = format!("member{i}");
        let token = http.register(&name).await.token;
        let (status, _) = http
            .json(
                "POST",
                &format!("/_matrix/client/v3/join/{room}"),
                Some(&token),
                json!({}),
            )
            .await;
        assert_eq!(status, 200);
    }
    // Sixteen clients ask for deep history at once, again and again.
    let url = server.url();
    let mut readers = Vec::new();
    for i in 0..16 {
        let (url, alice, room, first, early) = (
            url.clone(),
            alice.clone(),
            room.clone(),
            first.clone(),
            early.clone(),
        );
        readers.push(tokio::spawn(async move {
            let http = Http::new(&url);
            for _ in 0..5 {
                let path = if i % 2 == 0 {
                    format!("/_matrix/client/v3/rooms/{room}/context/{first}?limit=100")
                } else {
                    format!("/_matrix/client/v3/rooms/{room}/members?at={early}")
                };
                let (status, res) = http.call("GET", &path, Some(&alice), None).await;
                assert_eq!(status, 200, "{res}");
            }
        }));
    }
    assert_responsive(
        versions_latency(&server.url()).await,
        "16 parallel deep history reads",
    );
    for r in readers {
        r.await.unwrap();
    }
    // /members at an early token shows the room as it was then.
    let (_, res) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/members?at={early}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(res["chunk"].as_array().unwrap().len(), 1, "only alice then");
}

#[tokio::test]
async fn one_time_keys_cannot_be_drained() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t = TestServer::start_with(|c| {
        c.rate_limit.key_claims_burst = 5;
        c.rate_limit.key_claims_per_minute = 1;
    })
    .await;
    let http = &t.http;
    let alice = http.register("alice").await.token;
    let eve = http.register("eve").await.token;
    let (_, who) = http
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&alice),
            None,
        )
        .await;
    let device = who["device_id"].as_str().unwrap().to_owned();
    let keys: serde_json::Map<String, Value> = (0..20)
        .map(|i| {
            (
                format!("signed_curve25519:K{i}"),
                json!({ "key": format!("k{i}") }),
            )
        })
        .collect();
    let (status, _) = http
        .json(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(&alice),
            json!({ "one_time_keys": keys }),
        )
        .await;
    assert_eq!(status, 200);
    let claim =
        json!({ "one_time_keys": { "@alice:localhost": { &device: "signed_curve25519" } } });
    let mut refused = None;
    for i in 0..20 {
        let res = http
            .json(
                "POST",
                "/_matrix/client/v3/keys/claim",
                Some(&eve),
                claim.clone(),
            )
            .await;
        if res.0 != 200 {
            refused = Some((i, res));
            break;
        }
    }
    let (after, res) = refused.expect("claims are rate-limited");
    assert_eq!(after, 5, "the burst is five keys");
    assert_error(&res, 429, "M_LIMIT_EXCEEDED");
    let (_, counts) = http
        .json(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(&alice),
            json!({}),
        )
        .await;
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 15);
}

#[tokio::test]
async fn a_member_cannot_redact_others_through_send() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t = TestServer::start().await;
    let http = &t.http;
    let alice = http.register("alice").await.token;
    let bob = http.register("bob").await.token;
    let room = http
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    http.json(
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        json!({}),
    )
    .await;
    let target = send_text(http, &alice, &room, "a1", "keep me").await;
    let forged = http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.redaction/r1"),
            Some(&bob),
            json!({ "redacts": target }),
        )
        .await;
    assert_error(&forged, 403, "M_FORBIDDEN");
    let via_redact = http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/redact/{target}/r2"),
            Some(&bob),
            json!({}),
        )
        .await;
    assert_error(&via_redact, 403, "M_FORBIDDEN");
    let (_, ev) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{target}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(ev["content"]["body"], "keep me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_makes_one_account() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t = TestServer::start_with(|c| {
        c.registration = tsunagu::config::Registration::Token;
    })
    .await;
    let server = &t;
    let token = server
        .server
        .services()
        .users
        .new_registration_token(Some(1))
        .await
        .unwrap();
    let url = server.url();
    let mut tries = Vec::new();
    for i in 0..10 {
        let (url, token) = (url.clone(), token.clone());
        tries.push(tokio::spawn(async move {
            let body = json!({ "username": format!("racer{i}"), "password": common::password("racer"), "auth": { "type": "m.login.registration_token", "token": token } });
            Http::new(&url)
                .json("POST", "/_matrix/client/v3/register", None, body)
                .await
                .0
        }));
    }
    let mut statuses = Vec::new();
    for t in tries {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(statuses.iter().all(|s| *s == 200 || *s == 401 || *s == 403));
}

#[tokio::test]
async fn spec_refusals_of_the_core() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t = TestServer::start().await;
    let http = &t.http;
    // Without a token: 401, never a dropped connection.
    for path in [
        "/_matrix/client/v3/account/password",
        "/_matrix/client/v3/account/deactivate",
    ] {
        let (status, res) = http
            .json(
                "POST",
                path,
                None,
                json!({ "new_password": "a long new one" }),
            )
            .await;
        assert_eq!(status, 401, "{path}: {res}");
    }
    // Short passwords are weak.
    let weak =
        json!({ "username": "shorty", "password": "pw", "auth": { "type": "m.login.dummy" } });
    assert_error(
        &http
            .json("POST", "/_matrix/client/v3/register", None, weak)
            .await,
        400,
        "M_WEAK_PASSWORD",
    );
    let alice = http.register("alice").await.token;
    let change = json!({ "new_password": "short", "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": common::password("alice") } });
    assert_error(
        &http
            .json(
                "POST",
                "/_matrix/client/v3/account/password",
                Some(&alice),
                change,
            )
            .await,
        400,
        "M_WEAK_PASSWORD",
    );
    // Transaction IDs are per room and per endpoint.
    let (r1, r2) = (
        http.create_room(&alice, json!({})).await,
        http.create_room(&alice, json!({})).await,
    );
    let a = send_text(http, &alice, &r1, "same", "in one").await;
    let b = send_text(http, &alice, &r2, "same", "in two").await;
    assert_ne!(
        a, b,
        "the same transaction ID in another room is another message"
    );
    let (status, res) = http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{r1}/redact/{a}/same"),
            Some(&alice),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert_ne!(
        res["event_id"], a,
        "a redaction with a send's transaction ID is a redaction"
    );
    // A refused createRoom leaves no room behind.
    let (_, before) = http
        .call("GET", "/_matrix/client/v3/joined_rooms", Some(&alice), None)
        .await;
    let bad = json!({ "initial_state": [{ "type": "m.room.member", "state_key": "@bob:localhost", "content": { "membership": "join" } }] });
    let (status, _) = http
        .json("POST", "/_matrix/client/v3/createRoom", Some(&alice), bad)
        .await;
    assert_eq!(status, 403);
    let huge_name = json!({ "name": "n".repeat(70_000) });
    let (status, res) = http
        .json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            huge_name,
        )
        .await;
    assert_eq!(status, 413, "{res}");
    let (_, after) = http
        .call("GET", "/_matrix/client/v3/joined_rooms", Some(&alice), None)
        .await;
    assert_eq!(before, after, "no half-made room");
}

#[tokio::test]
async fn context_shows_a_former_member_the_state_when_they_left() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t = TestServer::start().await;
    let http = &t.http;
    let alice = http.register("alice").await.token;
    let bob = http.register("bob").await.token;
    let room = http
        .create_room(&alice, json!({ "preset": "public_chat", "name": "before" }))
        .await;
    http.json(
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        json!({}),
    )
    .await;
    let seen = send_text(http, &alice, &room, "s1", "while bob is here").await;
    http.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/leave"),
        Some(&bob),
        json!({}),
    )
    .await;
    http.json(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
        Some(&alice),
        json!({ "name": "after" }),
    )
    .await;
    send_text(http, &alice, &room, "s2", "after bob left").await;
    let (status, ctx) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/context/{seen}?limit=10"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 200, "{ctx}");
    let names: Vec<&Value> = ctx["state"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.name")
        .map(|e| &e["content"]["name"])
        .collect();
    assert_eq!(names, [&json!("before")]);
    let after: Vec<&Value> = ctx["events_after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["content"]["body"])
        .collect();
    assert!(!after.contains(&&json!("after bob left")), "{after:?}");
}

#![recursion_limit = "256"]
//! The rest of the Client-Server API surface, driven with raw HTTP so every field a client
//! reads is checked: sync (filters, limited timelines, lazy-loaded members, summaries, unread
//! counts, long-polling), profiles mirrored into rooms, devices and user-interactive auth,
//! account data, tags, push rules, aliases, the directory, /context, /members, room versions.

mod common;

use std::time::{Duration, Instant};

use common::{Account as User, Http, TestServer, assert_error};
use serde_json::{Value, json};
use tsunagu::config::EngineKind;

async fn user(http: &Http, name: &str) -> User {
    http.register(name).await
}

async fn send(http: &Http, u: &User, room: &str, body: &str) -> String {
    let txn = format!("t{}", rand_id());
    let (status, res) = http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            Some(&u.token),
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    res["event_id"].as_str().unwrap().to_owned()
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

async fn sync(http: &Http, u: &User, query: &str) -> Value {
    let (status, res) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/sync?{query}"),
            Some(&u.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{res}");
    res
}

fn bodies(timeline: &Value) -> Vec<String> {
    timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_features_sled() {
    sync_features(EngineKind::Sled).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_features_redb() {
    sync_features(EngineKind::Redb).await
}

async fn sync_features(engine: EngineKind) {
    let t = TestServer::start_with(|c| {
        c.storage.engine = engine;
        c.storage.group_commit_ms = 2;
    })
    .await;
    let http = &t.http;
    let alice = user(http, "alice").await;
    let bob = user(http, "bob").await;
    let carol = user(http, "carol").await;

    let (_, room) = http
        .json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({ "name": "circle", "preset": "public_chat" }),
        )
        .await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    for u in [&bob, &carol] {
        assert_eq!(
            http.json(
                "POST",
                &format!("/_matrix/client/v3/join/{room}"),
                Some(&u.token),
                json!({})
            )
            .await
            .0,
            200
        );
    }
    for i in 0..15 {
        send(
            http,
            if i % 2 == 0 { &alice } else { &carol },
            &room,
            &format!("m{i}"),
        )
        .await;
    }

    // A stored filter with a small timeline limit and lazy-loaded members.
    let filter =
        json!({ "room": { "timeline": { "limit": 3 }, "state": { "lazy_load_members": true } } });
    let (status, f) = http
        .json(
            "POST",
            &format!("/_matrix/client/v3/user/{}/filter", bob.id),
            Some(&bob.token),
            filter,
        )
        .await;
    assert_eq!(status, 200);
    let filter_id = f["filter_id"].as_str().unwrap().to_owned();
    let (_, back) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/user/{}/filter/{filter_id}", bob.id),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(back["room"]["timeline"]["limit"], 3);

    let initial = sync(http, &bob, &format!("filter={filter_id}")).await;
    let joined = &initial["rooms"]["join"][&room];
    assert_eq!(bodies(&joined["timeline"]), vec!["m12", "m13", "m14"]);
    assert_eq!(joined["timeline"]["limited"], true);
    assert!(joined["timeline"]["prev_batch"].is_string());
    // Lazy loading: member events only for the timeline's senders (alice, carol) and bob himself.
    let members: Vec<&str> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert!(
        members.contains(&"@alice:localhost")
            && members.contains(&"@carol:localhost")
            && members.contains(&"@bob:localhost"),
        "{members:?}"
    );
    assert!(
        joined["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "circle")
    );
    assert_eq!(joined["summary"]["m.joined_member_count"], 3);
    let heroes = joined["summary"]["m.heroes"].as_array().unwrap();
    assert!(
        heroes.contains(&json!("@alice:localhost")) && !heroes.contains(&json!("@bob:localhost"))
    );
    // Every message is unread for bob and notifies (room default rule for messages).
    assert_eq!(joined["unread_notifications"]["notification_count"], 15);

    // prev_batch continues into /messages without gaps or repeats.
    let prev = joined["timeline"]["prev_batch"].as_str().unwrap();
    let (_, page) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=2&from={prev}"),
            Some(&bob.token),
            None,
        )
        .await;
    let page_bodies: Vec<_> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(page_bodies, vec!["m11", "m10"]);

    // Inline filter JSON works too; an unknown filter ID is refused.
    let inline = urlencode(&json!({ "room": { "timeline": { "limit": 1 } } }).to_string());
    let one = sync(http, &bob, &format!("filter={inline}")).await;
    assert_eq!(
        bodies(&one["rooms"]["join"][&room]["timeline"]),
        vec!["m14"]
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/sync?filter=nosuch",
                Some(&bob.token),
                None,
            )
            .await,
        404,
        "M_NOT_FOUND",
    );

    // A read receipt clears the unread count; a mention highlights.
    let next = initial["next_batch"].as_str().unwrap().to_owned();
    let last = send(http, &alice, &room, "m15").await;
    assert_eq!(
        http.json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{last}"),
            Some(&bob.token),
            json!({})
        )
        .await
        .0,
        200
    );
    let mention = json!({ "msgtype": "m.text", "body": "hey bob, look", "m.mentions": { "user_ids": ["@bob:localhost"] } });
    assert_eq!(
        http.json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/mention"),
            Some(&alice.token),
            mention
        )
        .await
        .0,
        200
    );
    let inc = sync(http, &bob, &format!("since={next}&filter={filter_id}")).await;
    let j = &inc["rooms"]["join"][&room];
    assert_eq!(bodies(&j["timeline"]), vec!["m15", "hey bob, look"]);
    assert_ne!(j["timeline"]["limited"], true, "nothing was skipped");
    assert_eq!(j["unread_notifications"]["notification_count"], 1);
    assert_eq!(
        j["unread_notifications"]["highlight_count"], 1,
        "an intentional mention highlights"
    );
    let receipts = j["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("receipt in ephemeral");
    assert!(receipts["content"][&last]["m.read"]["@bob:localhost"]["ts"].is_u64());

    // Long-polling: an incremental sync waits, and returns soon after a new event.
    let since = inc["next_batch"].as_str().unwrap().to_owned();
    let poll = {
        let http = Http::new(&t.url());
        let token = bob.token.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let (_, res) = http
                .call(
                    "GET",
                    &format!("/_matrix/client/v3/sync?since={since}&timeout=10000"),
                    Some(&token),
                    None,
                )
                .await;
            (start.elapsed(), res)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(http, &carol, &room, "wake up").await;
    let (elapsed, res) = poll.await.unwrap();
    assert!(
        elapsed < Duration::from_secs(9),
        "the long poll returned on the event, not the timeout"
    );
    assert_eq!(
        bodies(&res["rooms"]["join"][&room]["timeline"]),
        vec!["wake up"]
    );
    // With nothing new, a short timeout returns an empty response with the same position.
    let quiet = sync(
        http,
        &bob,
        &format!("since={}&timeout=50", res["next_batch"].as_str().unwrap()),
    )
    .await;
    assert!(
        quiet["rooms"]["join"]
            .as_object()
            .is_none_or(|j| j.is_empty()),
        "{quiet}"
    );

    // Leaving: the leave section shows the room once.
    let before_leave = quiet["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(
        http.json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&carol.token),
            json!({})
        )
        .await
        .0,
        200
    );
    let since_carol = sync(http, &carol, &format!("since={before_leave}")).await;
    assert!(
        since_carol["rooms"]["leave"][&room]["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave")
    );
    assert_eq!(
        http.json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            Some(&carol.token),
            json!({})
        )
        .await
        .0,
        200
    );
    let (_, rooms) = http
        .call(
            "GET",
            "/_matrix/client/v3/joined_rooms",
            Some(&carol.token),
            None,
        )
        .await;
    assert_eq!(rooms["joined_rooms"], json!([]));
    t.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn accounts_devices_profiles() {
    let t = TestServer::start().await;
    let http = &t.http;
    let alice = user(http, "alice").await;
    let (_, room) = http
        .json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({}),
        )
        .await;
    let room = room["room_id"].as_str().unwrap().to_owned();

    // Profile changes are mirrored into member events of joined rooms.
    assert_eq!(
        http.json(
            "PUT",
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.id),
            Some(&alice.token),
            json!({ "displayname": "Alice A." })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        http.json(
            "PUT",
            &format!("/_matrix/client/v3/profile/{}/avatar_url", alice.id),
            Some(&alice.token),
            json!({ "avatar_url": "mxc://localhost/abc" })
        )
        .await
        .0,
        200
    );
    let (_, p) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/profile/{}", alice.id),
            None,
            None,
        )
        .await;
    assert_eq!(
        (p["displayname"].as_str(), p["avatar_url"].as_str()),
        (Some("Alice A."), Some("mxc://localhost/abc"))
    );
    let (_, member) = http
        .call(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                alice.id
            ),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(member["displayname"], "Alice A.");
    assert_eq!(member["avatar_url"], "mxc://localhost/abc");
    let (_, jm) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(jm["joined"][&alice.id]["display_name"], "Alice A.");
    assert_error(
        &http
            .json(
                "PUT",
                "/_matrix/client/v3/profile/@bob:localhost/displayname",
                Some(&alice.token),
                json!({ "displayname": "x" }),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );

    // Devices: a second login is a second device; rename; delete needs the password.
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": common::password("alice"), "initial_device_display_name": "laptop" });
    let (_, second) = http
        .json("POST", "/_matrix/client/v3/login", None, login)
        .await;
    let second_dev = second["device_id"].as_str().unwrap().to_owned();
    let second_token = second["access_token"].as_str().unwrap().to_owned();
    let (_, devices) = http
        .call(
            "GET",
            "/_matrix/client/v3/devices",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2);
    assert_eq!(
        http.json(
            "PUT",
            &format!("/_matrix/client/v3/devices/{second_dev}"),
            Some(&alice.token),
            json!({ "display_name": "old laptop" })
        )
        .await
        .0,
        200
    );
    let (_, d) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/devices/{second_dev}"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(d["display_name"], "old laptop");
    let (status, uia) = http
        .json(
            "DELETE",
            &format!("/_matrix/client/v3/devices/{second_dev}"),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(uia["flows"][0]["stages"][0], "m.login.password");
    let session = uia["session"].as_str().unwrap();
    let wrong = json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "nope", "session": session } });
    assert_eq!(
        http.json(
            "DELETE",
            &format!("/_matrix/client/v3/devices/{second_dev}"),
            Some(&alice.token),
            wrong
        )
        .await
        .0,
        401
    );
    let right = json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": common::password("alice"), "session": session } });
    assert_eq!(
        http.json(
            "DELETE",
            &format!("/_matrix/client/v3/devices/{second_dev}"),
            Some(&alice.token),
            right
        )
        .await
        .0,
        200
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/account/whoami",
                Some(&second_token),
                None,
            )
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );

    // Password change (with UIA), logout, logout/all.
    let change = json!({ "new_password": "new secret", "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": common::password("alice") } });
    assert_eq!(
        http.json(
            "POST",
            "/_matrix/client/v3/account/password",
            Some(&alice.token),
            change
        )
        .await
        .0,
        200
    );
    let old = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": common::password("alice") });
    assert_error(
        &http
            .json("POST", "/_matrix/client/v3/login", None, old)
            .await,
        403,
        "M_FORBIDDEN",
    );
    let new = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "@alice:localhost" }, "password": "new secret" });
    let (_, third) = http
        .json("POST", "/_matrix/client/v3/login", None, new.clone())
        .await;
    let third = third["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        http.json("POST", "/_matrix/client/v3/logout", Some(&third), json!({}))
            .await
            .0,
        200
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/account/whoami",
                Some(&third),
                None,
            )
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(
        http.json(
            "POST",
            "/_matrix/client/v3/logout/all",
            Some(&alice.token),
            json!({})
        )
        .await
        .0,
        200
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/account/whoami",
                Some(&alice.token),
                None,
            )
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );

    // Deactivation: with the password; afterwards no login and the rooms are left.
    let (_, fresh) = http
        .json("POST", "/_matrix/client/v3/login", None, new.clone())
        .await;
    let fresh = fresh["access_token"].as_str().unwrap().to_owned();
    let deact = json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "new secret" } });
    assert_eq!(
        http.json(
            "POST",
            "/_matrix/client/v3/account/deactivate",
            Some(&fresh),
            deact
        )
        .await
        .0,
        200
    );
    assert_error(
        &http
            .json("POST", "/_matrix/client/v3/login", None, new)
            .await,
        403,
        "M_FORBIDDEN",
    );
    t.stop().await;
}

#[tokio::test]
async fn account_data_tags_push_rules() {
    let t = TestServer::start().await;
    let http = &t.http;
    let a = user(http, "alice").await;
    let (_, room) = http
        .json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&a.token),
            json!({}),
        )
        .await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let first = sync(http, &a, "").await;
    assert!(
        first["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.push_rules"),
        "default push rules in the initial sync"
    );

    let base = format!("/_matrix/client/v3/user/{}", a.id);
    assert_eq!(
        http.json(
            "PUT",
            &format!("{base}/account_data/org.example.settings"),
            Some(&a.token),
            json!({ "theme": "dark" })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        http.call(
            "GET",
            &format!("{base}/account_data/org.example.settings"),
            Some(&a.token),
            None
        )
        .await
        .1["theme"],
        "dark"
    );
    assert_error(
        &http
            .call(
                "GET",
                &format!("{base}/account_data/org.example.none"),
                Some(&a.token),
                None,
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &http
            .json(
                "PUT",
                "/_matrix/client/v3/user/@bob:localhost/account_data/x",
                Some(&a.token),
                json!({}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        http.json(
            "PUT",
            &format!("{base}/rooms/{room}/account_data/org.example.room"),
            Some(&a.token),
            json!({ "n": 1 })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        http.json(
            "PUT",
            &format!("{base}/rooms/{room}/tags/m.favourite"),
            Some(&a.token),
            json!({ "order": 0.5 })
        )
        .await
        .0,
        200
    );
    let (_, tags) = http
        .call(
            "GET",
            &format!("{base}/rooms/{room}/tags"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5);
    let inc = sync(
        http,
        &a,
        &format!("since={}", first["next_batch"].as_str().unwrap()),
    )
    .await;
    assert!(
        inc["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "org.example.settings" && e["content"]["theme"] == "dark")
    );
    let room_ad = inc["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap();
    assert!(
        room_ad
            .iter()
            .any(|e| e["type"] == "m.tag" && e["content"]["tags"]["m.favourite"]["order"] == 0.5)
    );
    assert!(room_ad.iter().any(|e| e["type"] == "org.example.room"));
    assert_eq!(
        http.call(
            "DELETE",
            &format!("{base}/rooms/{room}/tags/m.favourite"),
            Some(&a.token),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        http.call(
            "GET",
            &format!("{base}/rooms/{room}/tags"),
            Some(&a.token),
            None
        )
        .await
        .1["tags"],
        json!({})
    );

    // Push rules: the default set, then edit.
    let (_, rules) = http
        .call("GET", "/_matrix/client/v3/pushrules/", Some(&a.token), None)
        .await;
    assert!(
        rules["global"]["override"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.master")
    );
    assert!(
        rules["global"]["underride"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.message")
    );
    let path = "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled";
    assert_eq!(
        http.json("PUT", path, Some(&a.token), json!({ "enabled": true }))
            .await
            .0,
        200
    );
    assert_eq!(
        http.call("GET", path, Some(&a.token), None).await.1["enabled"],
        true
    );
    let rule = json!({ "actions": ["notify"], "pattern": "coffee" });
    assert_eq!(
        http.json(
            "PUT",
            "/_matrix/client/v3/pushrules/global/content/coffee",
            Some(&a.token),
            rule
        )
        .await
        .0,
        200
    );
    assert_eq!(
        http.call(
            "GET",
            "/_matrix/client/v3/pushrules/global/content/coffee",
            Some(&a.token),
            None
        )
        .await
        .1["pattern"],
        "coffee"
    );
    assert_eq!(
        http.json(
            "PUT",
            "/_matrix/client/v3/pushrules/global/content/coffee/actions",
            Some(&a.token),
            json!({ "actions": [] })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        http.call(
            "GET",
            "/_matrix/client/v3/pushrules/global/content/coffee/actions",
            Some(&a.token),
            None
        )
        .await
        .1["actions"],
        json!([])
    );
    assert_eq!(
        http.call(
            "DELETE",
            "/_matrix/client/v3/pushrules/global/content/coffee",
            Some(&a.token),
            None
        )
        .await
        .0,
        200
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/pushrules/global/content/coffee",
                Some(&a.token),
                None,
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &http
            .call(
                "DELETE",
                "/_matrix/client/v3/pushrules/global/override/.m.rule.master",
                Some(&a.token),
                None,
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    t.stop().await;
}

#[tokio::test]
async fn rooms_aliases_directory_context_members() {
    let t = TestServer::start().await;
    let http = &t.http;
    let a = user(http, "alice").await;
    let b = user(http, "bob").await;

    // Versions and capabilities.
    let (_, versions) = http
        .call("GET", "/_matrix/client/versions", None, None)
        .await;
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .contains(&json!("v1.11"))
    );
    let (_, caps) = http
        .call(
            "GET",
            "/_matrix/client/v3/capabilities",
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "12");
    let (_, wk) = http
        .call("GET", "/.well-known/matrix/client", None, None)
        .await;
    assert!(wk["m.homeserver"]["base_url"].is_string());

    // Every supported room version creates working rooms; unknown versions are refused.
    for v in ["10", "11", "12"] {
        let (status, r) = http
            .json(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&a.token),
                json!({ "room_version": v, "name": format!("v{v}") }),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        let id = r["room_id"].as_str().unwrap();
        let (_, create) = http
            .call(
                "GET",
                &format!("/_matrix/client/v3/rooms/{id}/state/m.room.create/"),
                Some(&a.token),
                None,
            )
            .await;
        assert_eq!(create["room_version"], v);
        send(http, &a, id, "works").await;
    }
    assert_error(
        &http
            .json(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&a.token),
                json!({ "room_version": "1" }),
            )
            .await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );

    // A public room with an alias, published in the directory.
    let (_, r) = http.json("POST", "/_matrix/client/v3/createRoom", Some(&a.token), json!({
        "visibility": "public", "preset": "public_chat", "room_alias_name": "alumni", "name": "Alumni", "topic": "old friends",
        "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "world_readable" } }],
        "power_level_content_override": { "events_default": 10 },
    })).await;
    let room = r["room_id"].as_str().unwrap().to_owned();
    let (_, alias) = http
        .call(
            "GET",
            "/_matrix/client/v3/directory/room/%23alumni:localhost",
            None,
            None,
        )
        .await;
    assert_eq!(alias["room_id"], room);
    let (_, hv) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(
        hv["history_visibility"], "world_readable",
        "initial_state overrides the preset"
    );
    let (_, pl) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(pl["events_default"], 10);
    let (_, dir) = http
        .call("GET", "/_matrix/client/v3/publicRooms", None, None)
        .await;
    let entry = &dir["chunk"][0];
    assert_eq!(
        (
            entry["room_id"].as_str(),
            entry["name"].as_str(),
            entry["topic"].as_str()
        ),
        (Some(room.as_str()), Some("Alumni"), Some("old friends"))
    );
    assert_eq!(entry["canonical_alias"], "#alumni:localhost");
    let (_, found) = http
        .json(
            "POST",
            "/_matrix/client/v3/publicRooms",
            Some(&b.token),
            json!({ "filter": { "generic_search_term": "friends" } }),
        )
        .await;
    assert_eq!(found["chunk"].as_array().unwrap().len(), 1);
    let (_, none) = http
        .json(
            "POST",
            "/_matrix/client/v3/publicRooms",
            Some(&b.token),
            json!({ "filter": { "generic_search_term": "zzz" } }),
        )
        .await;
    assert_eq!(none["chunk"].as_array().unwrap().len(), 0);
    assert_error(
        &http
            .json(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&b.token),
                json!({ "room_alias_name": "alumni" }),
            )
            .await,
        400,
        "M_ROOM_IN_USE",
    );

    // Join by alias; a second alias; canonical alias must point to the room.
    let (status, j) = http
        .json(
            "POST",
            "/_matrix/client/v3/join/%23alumni:localhost",
            Some(&b.token),
            json!({}),
        )
        .await;
    assert_eq!((status, j["room_id"].as_str()), (200, Some(room.as_str())));
    assert_eq!(
        http.json(
            "PUT",
            "/_matrix/client/v3/directory/room/%23old-friends:localhost",
            Some(&a.token),
            json!({ "room_id": room })
        )
        .await
        .0,
        200
    );
    assert_error(
        &http
            .json(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias/"),
                Some(&a.token),
                json!({ "alias": "#nowhere:localhost" }),
            )
            .await,
        400,
        "M_BAD_ALIAS",
    );
    assert_error(
        &http
            .call(
                "DELETE",
                "/_matrix/client/v3/directory/room/%23old-friends:localhost",
                Some(&b.token),
                None,
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        http.call(
            "DELETE",
            "/_matrix/client/v3/directory/room/%23old-friends:localhost",
            Some(&a.token),
            None
        )
        .await
        .0,
        200
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/directory/room/%23old-friends:localhost",
                None,
                None,
            )
            .await,
        404,
        "M_NOT_FOUND",
    );

    // Context around an event.
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(send(http, &a, &room, &format!("c{i}")).await);
    }
    let (_, ctx) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=4", ids[3]),
            Some(&b.token),
            None,
        )
        .await;
    assert_eq!(ctx["event"]["content"]["body"], "c3");
    let before: Vec<_> = ctx["events_before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    let after: Vec<_> = ctx["events_after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!((before, after), (vec!["c2", "c1"], vec!["c4", "c5"]));
    assert!(
        ctx["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );

    // Members, with membership filters and `at`; kick; event lookup.
    let (_, ms) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/members?membership=join"),
            Some(&b.token),
            None,
        )
        .await;
    assert_eq!(ms["chunk"].as_array().unwrap().len(), 2);
    let (_, first_sync) = http
        .call("GET", "/_matrix/client/v3/sync", Some(&a.token), None)
        .await;
    let at = first_sync["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(
        http.json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            Some(&a.token),
            json!({ "user_id": b.id, "reason": "test" })
        )
        .await
        .0,
        200
    );
    let (_, now) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/members?not_membership=leave"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(now["chunk"].as_array().unwrap().len(), 1);
    let (_, then) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/members?at={at}&membership=join"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(
        then["chunk"].as_array().unwrap().len(),
        2,
        "membership as it was at the token"
    );
    let (_, ev) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", ids[0]),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(ev["content"]["body"], "c0");
    assert_eq!(ev["room_id"], room);
    assert_error(
        &http
            .call(
                "GET",
                &format!("/_matrix/client/v3/rooms/{room}/event/$nope"),
                Some(&a.token),
                None,
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    // Unban a user who is not banned is refused; ban then unban works.
    assert_error(
        &http
            .json(
                "POST",
                &format!("/_matrix/client/v3/rooms/{room}/unban"),
                Some(&a.token),
                json!({ "user_id": b.id }),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        http.json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            Some(&a.token),
            json!({ "user_id": b.id })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        http.json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/unban"),
            Some(&a.token),
            json!({ "user_id": b.id })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        http.json(
            "POST",
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&b.token),
            json!({})
        )
        .await
        .0,
        200
    );
    t.stop().await;
}

//! The core as the spec (v1.16) describes it, in the places real clients and conformance
//! suites found it differing: history and its visibility, what `/sync` carries, state changes,
//! lenient requests real clients make, user-interactive auth, `/versions`, push rules, room
//! versions and upgrades. Raw HTTP, so every field and error code is checked.

use crate::common;

use std::collections::{BTreeSet, HashMap};

use common::{
    Account, TestServer, assert_error,
    http::{bodies, next_batch, urlencode},
};
use serde_json::{Value, json};

fn path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", urlencode(room))
}

async fn two(t: &TestServer) -> (Account, Account) {
    (t.http.register("alice").await, t.http.register("bob").await)
}

/// A room of alice's with this history visibility, public so others may join.
async fn room_with_visibility(t: &TestServer, alice: &Account, visibility: &str) -> String {
    let body = json!({
        "preset": "public_chat",
        "initial_state": [{
            "type": "m.room.history_visibility", "state_key": "",
            "content": { "history_visibility": visibility },
        }],
    });
    t.http.create_room(&alice.token, body).await
}

async fn messages(t: &TestServer, who: &Account, room: &str, query: &str) -> (u16, Value) {
    t.http
        .call(
            "GET",
            &path(room, &format!("messages?{query}")),
            Some(&who.token),
            None,
        )
        .await
}

fn room_in<'a>(sync: &'a Value, section: &str, room: &str) -> &'a Value {
    &sync["rooms"][section][room]
}

#[tokio::test]
async fn paginating_back_from_a_sync_token_starts_with_the_newest_event() {
    let t = TestServer::start().await;
    let (alice, _) = two(&t).await;
    let room = t.http.create_room(&alice.token, json!({})).await;
    for i in 1..=20 {
        t.http
            .send_text(&alice.token, &room, &format!("m{i}"))
            .await;
    }
    let sync = t.http.sync(&alice.token, "timeout=0").await;
    let from = urlencode(&next_batch(&sync));
    let (status, page) = messages(&t, &alice, &room, &format!("dir=b&limit=5&from={from}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(bodies(&page["chunk"]), ["m20", "m19", "m18", "m17", "m16"]);
    // And from the sync timeline's prev_batch: the event just before the timeline.
    let timeline = &room_in(&sync, "join", &room)["timeline"];
    let first = bodies(&timeline["events"]).first().cloned().unwrap();
    let prev = urlencode(timeline["prev_batch"].as_str().unwrap());
    let (_, page) = messages(&t, &alice, &room, &format!("dir=b&limit=1&from={prev}")).await;
    let n: u32 = first.trim_start_matches('m').parse().unwrap();
    assert_eq!(bodies(&page["chunk"]), [format!("m{}", n - 1)]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_rebuilt_from_sync_and_messages_under_load_has_every_event_once() {
    let t = TestServer::start_with(|c| c.storage.group_commit_ms = 2).await;
    let reader = t.http.register("reader").await;
    let room = t
        .http
        .create_room(&reader.token, json!({ "preset": "public_chat" }))
        .await;
    let filter = urlencode(&json!({ "room": { "timeline": { "limit": 3 } } }).to_string());
    let mut since = next_batch(
        &t.http
            .sync(&reader.token, &format!("filter={filter}"))
            .await,
    );
    // Three people send forty messages each while the reader follows along.
    let mut senders = Vec::new();
    for n in 0..3 {
        let account = t.http.register(&format!("sender{n}")).await;
        assert_eq!(t.http.join(&account.token, &room).await.0, 200);
        let (url, room) = (t.url(), room.clone());
        senders.push(tokio::spawn(async move {
            let http = common::Http::new(&url);
            let mut sent = Vec::new();
            for i in 0..40 {
                sent.push(
                    http.send_text(&account.token, &room, &format!("{n}:{i}"))
                        .await,
                );
            }
            sent
        }));
    }
    let mut seen: Vec<String> = Vec::new();
    let follow = |sync: &Value, since_token: &str| {
        let timeline = &room_in(sync, "join", &room)["timeline"];
        let mut got: Vec<String> = timeline["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.room.message")
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect();
        let gap = (timeline["limited"] == true).then(|| {
            (
                timeline["prev_batch"].as_str().unwrap().to_owned(),
                since_token.to_owned(),
            )
        });
        (std::mem::take(&mut got), gap)
    };
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 2000, "the reader never caught up");
        let sync = t
            .http
            .sync(
                &reader.token,
                &format!("filter={filter}&timeout=200&since={}", urlencode(&since)),
            )
            .await;
        let (got, gap) = follow(&sync, &since);
        if let Some((prev, to)) = gap {
            // Fill the gap: back from the timeline's start to the previous sync.
            let mut from = prev;
            let mut filled = Vec::new();
            loop {
                let (status, page) = messages(
                    &t,
                    &reader,
                    &room,
                    &format!(
                        "dir=b&limit=7&from={}&to={}",
                        urlencode(&from),
                        urlencode(&to)
                    ),
                )
                .await;
                assert_eq!(status, 200, "{page}");
                filled.extend(
                    page["chunk"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|e| e["type"] == "m.room.message")
                        .map(|e| e["event_id"].as_str().unwrap().to_owned()),
                );
                match page["end"].as_str() {
                    Some(end) => from = end.to_owned(),
                    None => break,
                }
            }
            filled.reverse();
            seen.extend(filled);
        }
        seen.extend(got);
        since = next_batch(&sync);
        if senders.iter().all(|s| s.is_finished()) && seen.len() >= 120 {
            break;
        }
    }
    let mut sent = BTreeSet::new();
    for s in senders {
        sent.extend(s.await.unwrap());
    }
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for id in &seen {
        *counts.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "seen more than once: {twice:?}");
    let seen: BTreeSet<String> = seen.into_iter().collect();
    let missing: Vec<_> = sent.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never seen: {missing:?}"
    );
    assert_eq!(sent.len(), 120);
    t.stop().await;
}

#[tokio::test]
async fn joined_and_invited_visibility_hide_the_history_before() {
    let t = TestServer::start().await;
    let (alice, bob) = two(&t).await;
    for (visibility, want) in [
        ("joined", vec!["after"]),
        ("invited", vec!["invited", "after"]),
        ("shared", vec!["before", "invited", "after"]),
    ] {
        let room = room_with_visibility(&t, &alice, visibility).await;
        let before = t.http.send_text(&alice.token, &room, "before").await;
        t.http
            .json(
                "POST",
                &path(&room, "invite"),
                Some(&alice.token),
                json!({ "user_id": bob.id }),
            )
            .await;
        t.http.send_text(&alice.token, &room, "invited").await;
        assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
        let after = t.http.send_text(&alice.token, &room, "after").await;
        let (_, page) = messages(&t, &bob, &room, "dir=b&limit=50").await;
        let mut got = bodies(&page["chunk"]);
        got.reverse();
        assert_eq!(got, want, "/messages in a {visibility} room");
        let sync = t.http.sync(&bob.token, "timeout=0").await;
        let synced = bodies(&room_in(&sync, "join", &room)["timeline"]["events"]);
        assert!(
            synced.iter().all(|b| want.contains(&b.as_str())),
            "{visibility}: {synced:?}"
        );
        let (status, _) = t
            .http
            .call(
                "GET",
                &path(&room, &format!("event/{}", urlencode(&before))),
                Some(&bob.token),
                None,
            )
            .await;
        assert_eq!(
            status == 200,
            want.contains(&"before"),
            "/event in a {visibility} room"
        );
        let (_, ctx) = t
            .http
            .call(
                "GET",
                &path(&room, &format!("context/{}", urlencode(&after))),
                Some(&bob.token),
                None,
            )
            .await;
        let earlier = bodies(&ctx["events_before"]);
        assert!(
            earlier.iter().all(|b| want.contains(&b.as_str())),
            "{visibility}: {earlier:?}"
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn former_members_read_up_to_their_leave_and_strangers_read_world_readable_rooms() {
    let t = TestServer::start().await;
    let (alice, bob) = two(&t).await;
    let eve = t.http.register("eve").await;
    let room = room_with_visibility(&t, &alice, "shared").await;
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
    t.http
        .send_text(&alice.token, &room, "while bob is here")
        .await;
    t.http
        .json("POST", &path(&room, "leave"), Some(&bob.token), json!({}))
        .await;
    t.http
        .send_text(&alice.token, &room, "after bob left")
        .await;
    let (_, page) = messages(&t, &bob, &room, "dir=b&limit=50").await;
    let got = bodies(&page["chunk"]);
    assert!(
        got.contains(&"while bob is here".to_owned())
            && !got.contains(&"after bob left".to_owned()),
        "{got:?}"
    );
    assert_error(
        &messages(&t, &eve, &room, "dir=b").await,
        403,
        "M_FORBIDDEN",
    );

    let open = room_with_visibility(&t, &alice, "world_readable").await;
    t.http.send_text(&alice.token, &open, "for everyone").await;
    for rest in ["state", "members", "joined_members", "messages?dir=b"] {
        let (status, res) = t
            .http
            .call("GET", &path(&open, rest), Some(&eve.token), None)
            .await;
        assert_eq!(status, 200, "{rest}: {res}");
    }
    let (_, page) = messages(&t, &eve, &open, "dir=b").await;
    assert!(bodies(&page["chunk"]).contains(&"for everyone".to_owned()));
    t.stop().await;
}

#[tokio::test]
async fn served_events_carry_the_readers_membership_then() {
    let t = TestServer::start().await;
    let (alice, bob) = two(&t).await;
    let room = room_with_visibility(&t, &alice, "shared").await;
    let before = t.http.send_text(&alice.token, &room, "before").await;
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
    let after = t.http.send_text(&alice.token, &room, "after").await;
    let membership_in = |events: &Value, id: &str| {
        events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event_id"] == id)
            .map(|e| e["unsigned"]["membership"].clone())
    };
    let (_, page) = messages(&t, &bob, &room, "dir=b&limit=50").await;
    assert_eq!(membership_in(&page["chunk"], &before), Some(json!("leave")));
    assert_eq!(membership_in(&page["chunk"], &after), Some(json!("join")));
    let (_, ev) = t
        .http
        .call(
            "GET",
            &path(&room, &format!("event/{}", urlencode(&after))),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(ev["unsigned"]["membership"], "join");
    let (_, ctx) = t
        .http
        .call(
            "GET",
            &path(&room, &format!("context/{}", urlencode(&after))),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(ctx["event"]["unsigned"]["membership"], "join");
    assert_eq!(
        membership_in(&ctx["events_before"], &before),
        Some(json!("leave"))
    );
    let sync = t.http.sync(&bob.token, "timeout=0").await;
    let timeline = &room_in(&sync, "join", &room)["timeline"]["events"];
    assert_eq!(membership_in(timeline, &after), Some(json!("join")));
    t.stop().await;
}

#[tokio::test]
async fn sync_carries_the_state_of_gaps_left_rooms_and_names_unnamed_rooms() {
    let t = TestServer::start().await;
    let (alice, bob) = two(&t).await;
    let room = t
        .http
        .create_room(&alice.token, json!({ "preset": "public_chat" }))
        .await;
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
    let filter = urlencode(&json!({ "room": { "timeline": { "limit": 2 } } }).to_string());
    let first = t.http.sync(&bob.token, &format!("filter={filter}")).await;
    // An unnamed room comes with heroes.
    let heroes = &room_in(&first, "join", &room)["summary"]["m.heroes"];
    assert_eq!(heroes, &json!([alice.id]), "{first}");
    // A name set inside a gap arrives as state.
    t.http
        .json(
            "PUT",
            &path(&room, "state/m.room.name/"),
            Some(&alice.token),
            json!({ "name": "renamed" }),
        )
        .await;
    for i in 0..5 {
        t.http
            .send_text(&alice.token, &room, &format!("m{i}"))
            .await;
    }
    let second = t
        .http
        .sync(
            &bob.token,
            &format!("filter={filter}&since={}", urlencode(&next_batch(&first))),
        )
        .await;
    let joined = room_in(&second, "join", &room);
    assert_eq!(joined["timeline"]["limited"], true, "{joined}");
    let names: Vec<&Value> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.name")
        .collect();
    assert_eq!(names.len(), 1, "{joined}");
    // A room bob left shows its state too.
    t.http
        .json("POST", &path(&room, "leave"), Some(&bob.token), json!({}))
        .await;
    let include_leave = urlencode(&json!({ "room": { "include_leave": true } }).to_string());
    let with_left = t
        .http
        .sync(&bob.token, &format!("filter={include_leave}"))
        .await;
    let left = room_in(&with_left, "leave", &room);
    assert!(
        left["state"]["events"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{left}"
    );
    t.stop().await;
}

#[tokio::test]
async fn inline_filters_are_honoured_and_invalid_ones_are_400() {
    let t = TestServer::start().await;
    let (alice, _) = two(&t).await;
    let room = t.http.create_room(&alice.token, json!({})).await;
    for i in 0..3 {
        t.http
            .send_text(&alice.token, &room, &format!("m{i}"))
            .await;
    }
    let one = urlencode(&json!({ "room": { "timeline": { "limit": 1 } } }).to_string());
    let sync = t.http.sync(&alice.token, &format!("filter={one}")).await;
    assert_eq!(
        room_in(&sync, "join", &room)["timeline"]["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, res) = t
        .http
        .call(
            "GET",
            &format!("/_matrix/client/v3/sync?filter={}", urlencode("{not json")),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 400, "{res}");
    t.stop().await;
}

#[tokio::test]
async fn ignored_users_messages_and_invites_are_left_out() {
    let t = TestServer::start().await;
    let (alice, bob) = two(&t).await;
    let eve = t.http.register("eve").await;
    let room = t
        .http
        .create_room(&alice.token, json!({ "preset": "public_chat" }))
        .await;
    for u in [&bob, &eve] {
        assert_eq!(t.http.join(&u.token, &room).await.0, 200);
    }
    let ignore = json!({ "ignored_users": { eve.id.clone(): {} } });
    let (status, _) = t
        .http
        .json(
            "PUT",
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
                alice.id
            ),
            Some(&alice.token),
            ignore,
        )
        .await;
    assert_eq!(status, 200);
    t.http.send_text(&eve.token, &room, "from eve").await;
    t.http.send_text(&bob.token, &room, "from bob").await;
    let sync = t.http.sync(&alice.token, "timeout=0").await;
    let seen = bodies(&room_in(&sync, "join", &room)["timeline"]["events"]);
    assert!(
        seen.contains(&"from bob".to_owned()) && !seen.contains(&"from eve".to_owned()),
        "{seen:?}"
    );
    let (_, page) = messages(&t, &alice, &room, "dir=b").await;
    assert!(!bodies(&page["chunk"]).contains(&"from eve".to_owned()));
    // Eve's invite does not reach alice.
    let eves = t.http.create_room(&eve.token, json!({})).await;
    t.http
        .json(
            "POST",
            &path(&eves, "invite"),
            Some(&eve.token),
            json!({ "user_id": alice.id }),
        )
        .await;
    let sync = t.http.sync(&alice.token, "timeout=0").await;
    assert!(
        sync["rooms"]["invite"].get(&eves).is_none(),
        "{}",
        sync["rooms"]["invite"]
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_shows_in_device_lists_at_once() {
    let t = TestServer::start().await;
    let (alice, bob) = two(&t).await;
    let room = t
        .http
        .create_room(&alice.token, json!({ "preset": "public_chat" }))
        .await;
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
    let since = next_batch(&t.http.sync(&bob.token, "timeout=0").await);
    let waiting = {
        let (url, token) = (t.url(), bob.token.clone());
        tokio::spawn(async move {
            let http = common::Http::new(&url);
            let start = std::time::Instant::now();
            let sync = http
                .sync(
                    &token,
                    &format!("timeout=20000&since={}", urlencode(&since)),
                )
                .await;
            (sync, start.elapsed())
        })
    };
    common::eventually(common::WAIT, "bob's sync waiting", || async {
        t.is_handling_a_request().then_some(())
    })
    .await;
    t.http.login("alice").await;
    let (sync, took) = waiting.await.unwrap();
    assert!(
        sync["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.contains(&json!(alice.id))),
        "{sync}"
    );
    assert!(
        took < std::time::Duration::from_secs(15),
        "the long poll woke: {took:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn repeated_state_and_profiles_make_no_new_events() {
    let t = TestServer::start().await;
    let (alice, _) = two(&t).await;
    let rooms = [
        t.http.create_room(&alice.token, json!({})).await,
        t.http.create_room(&alice.token, json!({})).await,
    ];
    let member_events = |sync: &Value, room: &str| {
        room_in(sync, "join", room)["timeline"]["events"]
            .as_array()
            .map(|evs| evs.iter().filter(|e| e["type"] == "m.room.member").count())
            .unwrap_or(0)
    };
    let since = next_batch(&t.http.sync(&alice.token, "timeout=0").await);
    let name = json!({ "displayname": "Alice A." });
    let profile = format!("/_matrix/client/v3/profile/{}/displayname", alice.id);
    t.http
        .json("PUT", &profile, Some(&alice.token), name.clone())
        .await;
    t.http.json("PUT", &profile, Some(&alice.token), name).await;
    let sync = t
        .http
        .sync(
            &alice.token,
            &format!("timeout=0&since={}", urlencode(&since)),
        )
        .await;
    for room in &rooms {
        assert_eq!(
            member_events(&sync, room),
            1,
            "one member event per room: {sync}"
        );
    }
    let topic = json!({ "topic": "same" });
    let (_, first) = t
        .http
        .json(
            "PUT",
            &path(&rooms[0], "state/m.room.topic/"),
            Some(&alice.token),
            topic.clone(),
        )
        .await;
    let (_, second) = t
        .http
        .json(
            "PUT",
            &path(&rooms[0], "state/m.room.topic/"),
            Some(&alice.token),
            topic,
        )
        .await;
    assert_eq!(
        first["event_id"], second["event_id"],
        "identical state is not sent twice"
    );
    t.stop().await;
}

#[tokio::test]
async fn rooms_everyone_left_are_404_and_deleted_aliases_leave_the_room() {
    let t = TestServer::start().await;
    let (alice, bob) = two(&t).await;
    let empty = t
        .http
        .create_room(&alice.token, json!({ "preset": "public_chat" }))
        .await;
    t.http
        .json(
            "POST",
            &path(&empty, "leave"),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_error(&t.http.join(&bob.token, &empty).await, 404, "M_NOT_FOUND");

    let room = t
        .http
        .create_room(
            &alice.token,
            json!({ "preset": "public_chat", "visibility": "public", "room_alias_name": "gone" }),
        )
        .await;
    let (status, _) = t
        .http
        .call(
            "DELETE",
            "/_matrix/client/v3/directory/room/%23gone:localhost",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, canonical) = t
        .http
        .call(
            "GET",
            &path(&room, "state/m.room.canonical_alias/"),
            Some(&alice.token),
            None,
        )
        .await;
    assert!(canonical.get("alias").is_none(), "{canonical}");
    let search = json!({ "filter": { "generic_search_term": "gone" } });
    let (_, found) = t
        .http
        .json(
            "POST",
            "/_matrix/client/v3/publicRooms",
            Some(&bob.token),
            search,
        )
        .await;
    assert_eq!(found["chunk"], json!([]), "{found}");
    t.stop().await;
}

#[tokio::test]
async fn requests_real_clients_send_are_accepted() {
    let t = TestServer::start().await;
    let (alice, bob) = two(&t).await;
    let room = t
        .http
        .create_room(&alice.token, json!({ "preset": "public_chat" }))
        .await;
    // A join with no body at all (matrix-nio).
    let (status, res) = t
        .http
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{}", urlencode(&room)),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{res}");
    // Typing without a timeout.
    let (status, res) = t
        .http
        .json(
            "PUT",
            &path(&room, &format!("typing/{}", bob.id)),
            Some(&bob.token),
            json!({ "typing": true }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    // A send without a transaction ID (the legacy POST form).
    let (status, res) = t
        .http
        .json(
            "POST",
            &path(&room, "send/m.room.message"),
            Some(&bob.token),
            json!({ "msgtype": "m.text", "body": "old style" }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert!(res["event_id"].is_string());
    // Push rules with and without the trailing slash.
    for p in [
        "/_matrix/client/v3/pushrules/",
        "/_matrix/client/v3/pushrules",
        "/_matrix/client/v3/pushrules/global/",
    ] {
        let (status, res) = t.http.call("GET", p, Some(&bob.token), None).await;
        assert_eq!(status, 200, "{p}: {res}");
    }
    // A body that is not UTF-8 is not JSON.
    let client = reqwest::Client::new();
    let res = client
        .post(format!(
            "{}/_matrix/client/v3/user/{}/filter",
            t.url(),
            bob.id
        ))
        .bearer_auth(&bob.token)
        .header("content-type", "application/json")
        .body(vec![0xFF, 0xFE, b'{'])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_JSON");
    t.stop().await;
}

#[tokio::test]
async fn user_interactive_auth_answers_as_the_spec_says() {
    let t = TestServer::start_with(|c| c.registration = tsunagu::config::Registration::Token).await;
    let token = t
        .server
        .services()
        .users
        .new_registration_token(Some(1))
        .await
        .unwrap();
    let register = "/_matrix/client/v3/register";
    let (status, first) = t
        .http
        .json(
            "POST",
            register,
            None,
            json!({ "username": "alice", "password": common::password("alice") }),
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        first["params"].is_object() && first["flows"].is_array(),
        "{first}"
    );
    let session = first["session"].as_str().unwrap().to_owned();
    // Only the session: where do I stand? No error.
    let (status, poll) = t
        .http
        .json(
            "POST",
            register,
            None,
            json!({ "auth": { "session": session } }),
        )
        .await;
    assert_eq!(status, 401, "{poll}");
    assert!(
        poll.get("errcode").is_none() && poll["params"].is_object(),
        "{poll}"
    );
    // The token's validity, as Element checks it before asking.
    let validity = |tok: &str| {
        format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={tok}")
    };
    assert_eq!(
        t.http.call("GET", &validity(&token), None, None).await.1["valid"],
        true
    );
    assert_eq!(
        t.http.call("GET", &validity("nope"), None, None).await.1["valid"],
        false
    );
    // A wrong token: 401 with the error and the flows.
    let wrong = json!({ "username": "alice", "password": common::password("alice"), "auth": { "type": "m.login.registration_token", "token": "nope", "session": session } });
    let (status, res) = t.http.json("POST", register, None, wrong).await;
    assert_eq!(status, 401);
    assert!(
        res["errcode"].is_string() && res["params"].is_object(),
        "{res}"
    );
    // inhibit_login: an account but no device.
    let right = json!({ "username": "alice", "password": common::password("alice"), "inhibit_login": true, "auth": { "type": "m.login.registration_token", "token": token, "session": session } });
    let (status, res) = t.http.json("POST", register, None, right).await;
    assert_eq!(status, 200, "{res}");
    assert!(
        res["access_token"].is_null() && res["device_id"].is_null(),
        "{res}"
    );
    t.stop().await;
}

#[tokio::test]
async fn versions_promise_only_what_exists() {
    let t = TestServer::start().await;
    let (_, versions) = t
        .http
        .call("GET", "/_matrix/client/versions", None, None)
        .await;
    assert_eq!(
        versions["unstable_features"]["org.matrix.e2e_cross_signing"], true,
        "{versions}"
    );
    for p in [
        "/_matrix/client/v1/auth_metadata",
        "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
        "/_matrix/client/v3/no_such_thing",
    ] {
        assert_error(
            &t.http.call("GET", p, None, None).await,
            404,
            "M_UNRECOGNIZED",
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn push_rules_and_invites_are_what_the_spec_lists() {
    let t = TestServer::start().await;
    let (alice, bob) = two(&t).await;
    let (_, rules) = t
        .http
        .call(
            "GET",
            "/_matrix/client/v3/pushrules/",
            Some(&alice.token),
            None,
        )
        .await;
    let ids = |kind: &str| -> Vec<String> {
        rules["global"][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule_id"].as_str().unwrap().to_owned())
            .collect()
    };
    for id in [
        ".m.rule.master",
        ".m.rule.is_user_mention",
        ".m.rule.contains_display_name",
        ".m.rule.is_room_mention",
        ".m.rule.roomnotif",
    ] {
        assert!(
            ids("override").contains(&id.to_owned()),
            "{id} in {}",
            rules["global"]["override"]
        );
    }
    assert!(ids("content").contains(&".m.rule.contains_user_name".to_owned()));
    // An invite shows the invitee's name.
    t.http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.id),
            Some(&bob.token),
            json!({ "displayname": "Bobby" }),
        )
        .await;
    let room = t.http.create_room(&alice.token, json!({})).await;
    t.http
        .json(
            "POST",
            &path(&room, "invite"),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await;
    let (_, member) = t
        .http
        .call(
            "GET",
            &path(&room, &format!("state/m.room.member/{}", bob.id)),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(member["membership"], "invite");
    assert_eq!(member["displayname"], "Bobby");
    t.stop().await;
}

#[tokio::test]
async fn a_room_upgrade_continues_the_room() {
    let t = TestServer::start().await;
    let (alice, bob) = two(&t).await;
    let old = t
        .http
        .create_room(
            &alice.token,
            json!({ "room_version": "9", "preset": "public_chat", "name": "old friends", "room_alias_name": "friends", "visibility": "public" }),
        )
        .await;
    assert_eq!(t.http.join(&bob.token, &old).await.0, 200);
    // Bob may not upgrade it.
    assert_error(
        &t.http
            .json(
                "POST",
                &path(&old, "upgrade"),
                Some(&bob.token),
                json!({ "new_version": "12" }),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    let (status, res) = t
        .http
        .json(
            "POST",
            &path(&old, "upgrade"),
            Some(&alice.token),
            json!({ "new_version": "12" }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let new = res["replacement_room"].as_str().unwrap().to_owned();
    let state = |room: &str, rest: &str| {
        let (http, token, p) = (&t.http, alice.token.clone(), path(room, rest));
        async move { http.call("GET", &p, Some(&token), None).await.1 }
    };
    assert_eq!(
        state(&old, "state/m.room.tombstone/").await["replacement_room"],
        new
    );
    let create = state(&new, "state/m.room.create/").await;
    assert_eq!(create["predecessor"]["room_id"], old);
    assert_eq!(create["room_version"], "12");
    assert_eq!(
        state(&new, "state/m.room.name/").await["name"],
        "old friends"
    );
    let (_, alias) = t
        .http
        .call(
            "GET",
            "/_matrix/client/v3/directory/room/%23friends:localhost",
            None,
            None,
        )
        .await;
    assert_eq!(alias["room_id"], new, "the alias moved");
    // The old room is quiet for ordinary members.
    let (status, _) = t
        .http
        .json(
            "PUT",
            &path(&old, "send/m.room.message/late"),
            Some(&bob.token),
            json!({ "msgtype": "m.text", "body": "hello?" }),
        )
        .await;
    assert_eq!(status, 403);
    t.stop().await;
}

//! Simplified sliding sync (MSC4186) with raw HTTP: lists and ranges, ordering by recency,
//! filters, required state, room subscriptions, incremental answers, `pos` handling and the
//! extensions. `tests/element_x.rs` drives the same endpoint with matrix-sdk-ui, as Element X.

use crate::common;

use common::{Account, TestServer, assert_error};
use serde_json::{Value, json};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

async fn sliding(t: &TestServer, who: &Account, pos: Option<&str>, body: Value) -> (u16, Value) {
    let path = match pos {
        Some(p) => format!("{PATH}?pos={p}&timeout=0"),
        None => format!("{PATH}?timeout=0"),
    };
    t.http.json("POST", &path, Some(&who.token), body).await
}

async fn sliding_ok(t: &TestServer, who: &Account, pos: Option<&str>, body: Value) -> Value {
    let (status, res) = sliding(t, who, pos, body).await;
    assert_eq!(status, 200, "{res}");
    res
}

fn all_rooms(range_end: u64, timeline_limit: u64) -> Value {
    json!({
        "conn_id": "room-list",
        "lists": { "all": {
            "ranges": [[0, range_end]],
            "timeline_limit": timeline_limit,
            "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"]],
        }},
    })
}

fn bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Alice in three named rooms, written to in the order A, C, B.
async fn three_rooms(t: &TestServer) -> (Account, Account, [String; 3]) {
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let mut rooms = Vec::new();
    for name in ["A", "B", "C"] {
        let room = t
            .http
            .create_room(&bob.token, json!({ "preset": "public_chat", "name": name }))
            .await;
        assert_eq!(t.http.join(&alice.token, &room).await.0, 200);
        rooms.push(room);
    }
    for i in [0, 2, 1] {
        t.http
            .send_text(&bob.token, &rooms[i], &format!("news in {i}"))
            .await;
    }
    (alice, bob, rooms.try_into().unwrap())
}

#[tokio::test]
async fn lists_sort_rooms_by_recency_and_count_them() {
    let t = TestServer::start().await;
    let (alice, bob, [a, b, c]) = three_rooms(&t).await;
    let res = sliding_ok(&t, &alice, None, all_rooms(1, 1)).await;
    assert_eq!(res["lists"]["all"]["count"], 3, "{res}");
    // Only the window [0, 1]: the two most recent rooms, B then C.
    let rooms = res["rooms"].as_object().unwrap();
    assert_eq!(rooms.len(), 2, "{res}");
    assert!(rooms.contains_key(&b) && rooms.contains_key(&c), "{res}");
    let stamp = |r: &str| res["rooms"][r]["bump_stamp"].as_u64().unwrap();
    assert!(stamp(&b) > stamp(&c));
    let room_b = &res["rooms"][&b];
    assert_eq!(room_b["initial"], true);
    assert_eq!(room_b["name"], "B");
    assert_eq!(bodies(room_b), ["news in 1"]);
    assert_eq!(room_b["limited"], true, "more history than the one event");
    assert!(room_b["prev_batch"].is_string());
    assert_eq!(room_b["joined_count"], 2);
    // $ME and $LAZY: Alice's member event and Bob's (the sender).
    let members: Vec<&str> = room_b["required_state"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert!(members.contains(&alice.id.as_str()) && members.contains(&bob.id.as_str()));
    assert!(
        room_b["required_state"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] != "m.room.create"),
        "only the state asked for"
    );

    // Growing the window brings A; B and C, already sent and unchanged, do not come again.
    let pos = res["pos"].as_str().unwrap();
    let res = sliding_ok(&t, &alice, Some(pos), all_rooms(2, 1)).await;
    let rooms = res["rooms"].as_object().unwrap();
    assert_eq!(rooms.keys().collect::<Vec<_>>(), [&a], "{res}");

    // A new message in C: C comes again with just that message, live.
    let pos = res["pos"].as_str().unwrap().to_owned();
    t.http.send_text(&bob.token, &c, "more in C").await;
    let res = sliding_ok(&t, &alice, Some(&pos), all_rooms(2, 1)).await;
    let room_c = &res["rooms"][&c];
    assert_eq!(bodies(room_c), ["more in C"], "{res}");
    assert_eq!(room_c["num_live"], 1);
    assert!(room_c.get("initial").is_none());
    assert_eq!(res["rooms"].as_object().unwrap().len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn a_pos_can_be_repeated_and_an_unknown_one_is_refused() {
    let t = TestServer::start().await;
    let (alice, bob, [a, ..]) = three_rooms(&t).await;
    let first = sliding_ok(&t, &alice, None, all_rooms(10, 1)).await;
    let pos = first["pos"].as_str().unwrap().to_owned();
    t.http.send_text(&bob.token, &a, "once").await;
    // The answer got lost: the same pos again gives the same news again.
    for _ in 0..2 {
        let res = sliding_ok(&t, &alice, Some(&pos), all_rooms(10, 1)).await;
        assert_eq!(bodies(&res["rooms"][&a]), ["once"], "{res}");
    }
    let got = sliding(&t, &alice, Some("nonsense"), all_rooms(10, 1)).await;
    assert_error(&got, 400, "M_UNKNOWN_POS");
    // Another connection's pos is unknown in this one.
    let mut other = all_rooms(10, 1);
    other["conn_id"] = "encryption".into();
    let got = sliding(&t, &alice, Some(&pos), other).await;
    assert_error(&got, 400, "M_UNKNOWN_POS");
    // txn_id comes back.
    let mut body = all_rooms(10, 1);
    body["txn_id"] = "abc".into();
    let res = sliding_ok(&t, &alice, None, body).await;
    assert_eq!(res["txn_id"], "abc");

    // After a restart every pos is unknown; starting again works.
    let t = t.restart().await;
    let alice = t.http.login("alice").await;
    let got = sliding(&t, &alice, Some(&pos), all_rooms(10, 1)).await;
    assert_error(&got, 400, "M_UNKNOWN_POS");
    let res = sliding_ok(&t, &alice, None, all_rooms(10, 1)).await;
    assert_eq!(res["lists"]["all"]["count"], 3);
    t.stop().await;
}

#[tokio::test]
async fn an_idle_connection_expires() {
    let t = TestServer::start_with(|c| c.limits.sync_connection_idle_secs = 1).await;
    let alice = t.http.register("alice").await;
    let res = sliding_ok(&t, &alice, None, all_rooms(10, 1)).await;
    let pos = res["pos"].as_str().unwrap().to_owned();
    // Time has to pass for this one: nothing else happens to wait for.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let got = sliding(&t, &alice, Some(&pos), all_rooms(10, 1)).await;
    assert_error(&got, 400, "M_UNKNOWN_POS");
    t.stop().await;
}

#[tokio::test]
async fn filters_pick_invites_dms_and_spaces() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let invite = t
        .http
        .create_room(
            &bob.token,
            json!({ "preset": "private_chat", "invite": [alice.id], "name": "Invite" }),
        )
        .await;
    let dm = t
        .http
        .create_room(
            &alice.token,
            json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob.id] }),
        )
        .await;
    let (status, _) = t
        .http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/user/{}/account_data/m.direct", alice.id),
            Some(&alice.token),
            json!({ bob.id.as_str(): [dm] }),
        )
        .await;
    assert_eq!(status, 200);
    let space = t
        .http
        .create_room(
            &alice.token,
            json!({ "name": "Alumni space", "creation_content": { "type": "m.space" } }),
        )
        .await;
    let plain = t
        .http
        .create_room(&alice.token, json!({ "name": "Plain" }))
        .await;

    let list =
        |filters: Value| json!({ "ranges": [[0, 20]], "timeline_limit": 0, "filters": filters });
    let res = sliding_ok(
        &t,
        &alice,
        None,
        json!({ "lists": {
            "invites": list(json!({ "is_invite": true })),
            "dms": list(json!({ "is_dm": true })),
            "spaces": list(json!({ "room_types": ["m.space"] })),
            "no_spaces": list(json!({ "not_room_types": ["m.space"] })),
            "everything": list(json!({})),
        }}),
    )
    .await;
    let count = |l: &str| res["lists"][l]["count"].as_u64().unwrap();
    assert_eq!(count("invites"), 1, "{res}");
    assert_eq!(count("dms"), 1);
    assert_eq!(count("spaces"), 1);
    assert_eq!(count("no_spaces"), 3);
    assert_eq!(count("everything"), 4, "spaces are in an unfiltered list");
    let inv = &res["rooms"][&invite];
    assert!(
        inv["invite_state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name")
    );
    assert!(inv.get("timeline").is_none());
    assert_eq!(res["rooms"][&dm]["is_dm"], true);
    assert_eq!(res["rooms"][&plain]["is_dm"], false);
    assert!(res["rooms"].get(&space).is_some());
    t.stop().await;
}

#[tokio::test]
async fn a_room_subscription_brings_a_longer_timeline_and_more_state() {
    let t = TestServer::start().await;
    let (alice, _bob, [a, ..]) = three_rooms(&t).await;
    for i in 0..5 {
        t.http
            .send_text(&alice.token, &a, &format!("line {i}"))
            .await;
    }
    let res = sliding_ok(&t, &alice, None, all_rooms(10, 1)).await;
    assert_eq!(bodies(&res["rooms"][&a]), ["line 4"]);
    let pos = res["pos"].as_str().unwrap();
    // Opening the room: a subscription with 4 events and the power levels.
    let mut body = all_rooms(10, 1);
    body["room_subscriptions"] = json!({ a.clone(): {
        "timeline_limit": 4,
        "required_state": [["m.room.power_levels", ""]],
    }});
    let res = sliding_ok(&t, &alice, Some(pos), body).await;
    let room = &res["rooms"][&a];
    assert_eq!(
        bodies(room),
        ["line 1", "line 2", "line 3", "line 4"],
        "{res}"
    );
    assert!(
        room["required_state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.power_levels"),
        "{room}"
    );
    // prev_batch continues with /messages right before the timeline.
    let prev = room["prev_batch"].as_str().unwrap();
    let older = t
        .http
        .get_ok(
            &format!("/_matrix/client/v3/rooms/{a}/messages?dir=b&limit=1&from={prev}"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(older["chunk"][0]["content"]["body"], "line 0", "{older}");
    t.stop().await;
}

#[tokio::test]
async fn extensions_bring_to_device_account_data_receipts_and_typing() {
    let t = TestServer::start().await;
    let (alice, bob, [a, ..]) = three_rooms(&t).await;
    let body = |since: Option<&str>| {
        let mut b = all_rooms(10, 1);
        b["extensions"] = json!({
            "to_device": { "enabled": true, "since": since },
            "e2ee": { "enabled": true },
            "account_data": { "enabled": true },
            "receipts": { "enabled": true },
            "typing": { "enabled": true },
        });
        b
    };
    let res = sliding_ok(&t, &alice, None, body(None)).await;
    let ext = &res["extensions"];
    assert!(ext["to_device"]["next_batch"].is_string(), "{ext}");
    assert!(
        ext["account_data"]["global"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.push_rules"),
        "{ext}"
    );
    let pos = res["pos"].as_str().unwrap().to_owned();
    let since = ext["to_device"]["next_batch"].as_str().unwrap().to_owned();

    // Bob: a to-device message, a receipt, typing; Alice: account data on room A.
    let (status, _) = t
        .http
        .json(
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.test/t1",
            Some(&bob.token),
            json!({ "messages": { alice.id.as_str(): { "*": { "hello": "there" } } } }),
        )
        .await;
    assert_eq!(status, 200);
    let msg = t.http.send_text(&alice.token, &a, "read me").await;
    for (method, path, body) in [
        (
            "POST",
            format!("/_matrix/client/v3/rooms/{a}/receipt/m.read/{msg}"),
            json!({}),
        ),
        (
            "PUT",
            format!("/_matrix/client/v3/rooms/{a}/typing/{}", bob.id),
            json!({ "typing": true, "timeout": 30000 }),
        ),
    ] {
        let (status, res) = t.http.json(method, &path, Some(&bob.token), body).await;
        assert_eq!(status, 200, "{res}");
    }
    let (status, _) = t
        .http
        .json(
            "PUT",
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{a}/account_data/m.tag",
                alice.id
            ),
            Some(&alice.token),
            json!({ "tags": { "u.alumni": {} } }),
        )
        .await;
    assert_eq!(status, 200);

    let res = sliding_ok(&t, &alice, Some(&pos), body(Some(&since))).await;
    let ext = &res["extensions"];
    assert_eq!(
        ext["to_device"]["events"][0]["content"]["hello"], "there",
        "{ext}"
    );
    assert_eq!(ext["to_device"]["events"][0]["sender"], bob.id.as_str());
    assert!(
        ext["receipts"]["rooms"][&a]["content"][&msg]["m.read"][bob.id.as_str()].is_object(),
        "{ext}"
    );
    assert_eq!(
        ext["typing"]["rooms"][&a]["content"]["user_ids"][0],
        bob.id.as_str(),
        "{ext}"
    );
    assert_eq!(
        ext["account_data"]["rooms"][&a][0]["type"], "m.tag",
        "{ext}"
    );

    // Acknowledged by the next since: the to-device message does not come again.
    let next = ext["to_device"]["next_batch"].as_str().unwrap().to_owned();
    let pos = res["pos"].as_str().unwrap().to_owned();
    let res = sliding_ok(&t, &alice, Some(&pos), body(Some(&next))).await;
    assert!(
        res["extensions"]["to_device"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty())
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_on_a_new_message() {
    let t = TestServer::start().await;
    let (alice, bob, [a, ..]) = three_rooms(&t).await;
    let res = sliding_ok(&t, &alice, None, all_rooms(10, 1)).await;
    let pos = res["pos"].as_str().unwrap().to_owned();
    let poll = {
        let http = common::Http::new(&t.url());
        let token = alice.token.clone();
        let body = all_rooms(10, 1);
        tokio::spawn(async move {
            http.json(
                "POST",
                &format!("{PATH}?pos={pos}&timeout=20000"),
                Some(&token),
                body,
            )
            .await
        })
    };
    common::eventually(common::WAIT, "the long poll to be waiting", || async {
        t.is_handling_a_request().then_some(())
    })
    .await;
    t.http.send_text(&bob.token, &a, "wake up").await;
    let (status, res) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(bodies(&res["rooms"][&a]), ["wake up"], "{res}");
    t.stop().await;
}

//! `/sync` as a client sees it, driven with raw HTTP so every field a client reads is checked:
//! stored and inline filters, limited timelines that continue into `/messages`, lazy-loaded
//! members, room summaries, unread and highlight counts, read receipts, long polling, and
//! leaving and forgetting rooms. The tests that read the stored timeline run on both storage
//! engines.

use crate::common;

use std::time::{Duration, Instant};

use common::{
    Account, TestServer, WAIT, assert_error,
    http::{bodies, next_batch, urlencode},
};
use serde_json::{Value, json};
use tsunagu::config::EngineKind;

/// Alice's public room "circle" with bob and carol in it, and fifteen messages `m0`..`m14`,
/// alice's and carol's in turn. Bob has read none of them.
struct Circle {
    t: TestServer,
    alice: Account,
    bob: Account,
    carol: Account,
    room: String,
}

impl Circle {
    async fn new() -> Self {
        Self::on(EngineKind::default(), &[]).await
    }

    /// The circle on this storage engine; `lurkers` join before the messages and never speak.
    async fn on(engine: EngineKind, lurkers: &[&str]) -> Self {
        let t = TestServer::start_with(|c| {
            c.storage.engine = engine;
            // Writes wait a little to share an fsync; syncs must still see each one.
            c.storage.group_commit_ms = 2;
        })
        .await;
        let alice = t.http.register("alice").await;
        let bob = t.http.register("bob").await;
        let carol = t.http.register("carol").await;
        let room = t
            .http
            .create_room(
                &alice.token,
                json!({ "name": "circle", "preset": "public_chat" }),
            )
            .await;
        for u in [&bob, &carol] {
            assert_eq!(t.http.join(&u.token, &room).await.0, 200);
        }
        for name in lurkers {
            let lurker = t.http.register(name).await;
            assert_eq!(t.http.join(&lurker.token, &room).await.0, 200);
        }
        for i in 0..15 {
            let sender = if i % 2 == 0 { &alice } else { &carol };
            t.http
                .send_text(&sender.token, &room, &format!("m{i}"))
                .await;
        }
        Self {
            t,
            alice,
            bob,
            carol,
            room,
        }
    }

    /// Stores the filter bob's client syncs with: three timeline events, lazy-loaded members.
    /// Returns its ID.
    async fn bob_filter(&self) -> String {
        let filter = json!({ "room": { "timeline": { "limit": 3 }, "state": { "lazy_load_members": true } } });
        let (status, f) = self
            .t
            .http
            .json(
                "POST",
                &format!("/_matrix/client/v3/user/{}/filter", self.bob.id),
                Some(&self.bob.token),
                filter,
            )
            .await;
        assert_eq!(status, 200, "{f}");
        f["filter_id"].as_str().unwrap().to_owned()
    }

    /// Bob's `/sync?{query}`.
    async fn bob_syncs(&self, query: &str) -> Value {
        self.t.http.sync(&self.bob.token, query).await
    }

    /// Bob's first sync with his stored filter.
    async fn bob_syncs_filtered(&self) -> Value {
        let filter = self.bob_filter().await;
        self.bob_syncs(&format!("filter={filter}")).await
    }

    /// The circle in a sync answer's joined rooms.
    fn in_sync<'a>(&self, sync: &'a Value) -> &'a Value {
        &sync["rooms"]["join"][&self.room]
    }

    async fn stop(self) {
        self.t.stop().await
    }
}

#[tokio::test]
async fn a_stored_filter_reads_back_as_saved() {
    let c = Circle::new().await;
    let filter_id = c.bob_filter().await;
    let back =
        c.t.http
            .get_ok(
                &format!("/_matrix/client/v3/user/{}/filter/{filter_id}", c.bob.id),
                Some(&c.bob.token),
            )
            .await;
    assert_eq!(back["room"]["timeline"]["limit"], 3);
    assert_eq!(back["room"]["state"]["lazy_load_members"], true);
    c.stop().await;
}

#[tokio::test]
async fn a_filtered_initial_sync_is_limited_and_continues_into_messages_sled() {
    a_filtered_initial_sync_is_limited_and_continues_into_messages(EngineKind::Sled).await
}

#[tokio::test]
async fn a_filtered_initial_sync_is_limited_and_continues_into_messages_redb() {
    a_filtered_initial_sync_is_limited_and_continues_into_messages(EngineKind::Redb).await
}

/// The last three messages, marked limited, and `prev_batch` continues into `/messages`
/// without gaps or repeats.
async fn a_filtered_initial_sync_is_limited_and_continues_into_messages(engine: EngineKind) {
    let c = Circle::on(engine, &[]).await;
    let initial = c.bob_syncs_filtered().await;
    let joined = c.in_sync(&initial);
    assert_eq!(bodies(&joined["timeline"]["events"]), ["m12", "m13", "m14"]);
    assert_eq!(joined["timeline"]["limited"], true);
    let prev = joined["timeline"]["prev_batch"]
        .as_str()
        .expect("a prev_batch token");
    let page =
        c.t.http
            .get_ok(
                &format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=2&from={prev}",
                    c.room
                ),
                Some(&c.bob.token),
            )
            .await;
    assert_eq!(bodies(&page["chunk"]), ["m11", "m10"]);
    c.stop().await;
}

#[tokio::test]
async fn lazy_loading_sends_only_the_members_a_client_needs() {
    let c = Circle::on(EngineKind::default(), &["dave"]).await;
    let initial = c.bob_syncs_filtered().await;
    let members: Vec<&str> = c.in_sync(&initial)["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    // The timeline's senders (alice, carol) and bob himself...
    assert!(
        members.contains(&"@alice:localhost")
            && members.contains(&"@carol:localhost")
            && members.contains(&"@bob:localhost"),
        "{members:?}"
    );
    // ...but not dave, who never spoke.
    assert!(!members.contains(&"@dave:localhost"), "{members:?}");
    c.stop().await;
}

#[tokio::test]
async fn the_initial_sync_names_the_room_and_summarises_its_members() {
    let c = Circle::new().await;
    let initial = c.bob_syncs_filtered().await;
    let joined = c.in_sync(&initial);
    assert!(
        joined["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "circle"),
        "{joined}"
    );
    assert_eq!(joined["summary"]["m.joined_member_count"], 3);
    assert!(
        joined["summary"].get("m.heroes").is_none(),
        "a named room needs no heroes: {joined}"
    );
    c.stop().await;
}

#[tokio::test]
async fn every_unread_message_notifies() {
    let c = Circle::new().await;
    let initial = c.bob_syncs_filtered().await;
    // The default underride rule for messages notifies.
    assert_eq!(
        c.in_sync(&initial)["unread_notifications"]["notification_count"],
        15
    );
    c.stop().await;
}

/// Found by matrix-js-sdk (tests/js_client.rs) and matrix-sdk-ui (tests/element_x.rs): a room
/// joined late showed its whole earlier history, and the invite, as unread. Without a read
/// receipt, the count starts at the join (as Synapse's does), with and without per-thread
/// counts.
#[tokio::test]
async fn messages_from_before_joining_are_not_unread() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let room = t
        .http
        .create_room(&alice.token, json!({ "preset": "public_chat" }))
        .await;
    for i in 0..3 {
        t.http
            .send_text(&alice.token, &room, &format!("before {i}"))
            .await;
    }
    // The invite notifies bob (`.m.rule.invite_for_me`) while he is invited.
    let (status, res) = t
        .http
        .json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);

    let by_thread = format!(
        "filter={}",
        urlencode(
            &json!({ "room": { "timeline": { "unread_thread_notifications": true } } }).to_string()
        )
    );
    let count = |sync: &Value| sync["rooms"]["join"][&room]["unread_notifications"].clone();
    for query in ["", by_thread.as_str()] {
        let joined = t.http.sync(&bob.token, query).await;
        assert_eq!(
            count(&joined)["notification_count"],
            0,
            "nothing from before bob joined is unread ({query:?}): {joined}"
        );
    }
    t.http.send_text(&alice.token, &room, "after").await;
    for query in ["", by_thread.as_str()] {
        let later = t.http.sync(&bob.token, query).await;
        assert_eq!(
            count(&later)["notification_count"],
            1,
            "a message after the join is ({query:?}): {later}"
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn an_inline_filter_limits_the_timeline() {
    let c = Circle::new().await;
    let inline = urlencode(&json!({ "room": { "timeline": { "limit": 1 } } }).to_string());
    let one = c.bob_syncs(&format!("filter={inline}")).await;
    assert_eq!(bodies(&c.in_sync(&one)["timeline"]["events"]), ["m14"]);
    c.stop().await;
}

#[tokio::test]
async fn an_unknown_filter_id_is_refused() {
    let c = Circle::new().await;
    assert_error(
        &c.t.http
            .call(
                "GET",
                "/_matrix/client/v3/sync?filter=nosuch",
                Some(&c.bob.token),
                None,
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    c.stop().await;
}

/// After bob's filtered initial sync, alice sends `m15`, bob marks it read, and alice mentions
/// bob. Returns bob's incremental sync after that, and `m15`'s event ID.
async fn read_then_mentioned(c: &Circle) -> (Value, String) {
    let filter = c.bob_filter().await;
    let initial = c.bob_syncs(&format!("filter={filter}")).await;
    let last = c.t.http.send_text(&c.alice.token, &c.room, "m15").await;
    let (status, res) =
        c.t.http
            .json(
                "POST",
                &format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{last}", c.room),
                Some(&c.bob.token),
                json!({}),
            )
            .await;
    assert_eq!(status, 200, "{res}");
    c.t.http
        .send_message(
            &c.alice.token,
            &c.room,
            json!({ "msgtype": "m.text", "body": "hey bob, look", "m.mentions": { "user_ids": ["@bob:localhost"] } }),
        )
        .await;
    let since = next_batch(&initial);
    let inc = c.bob_syncs(&format!("since={since}&filter={filter}")).await;
    (inc, last)
}

#[tokio::test]
async fn an_incremental_sync_brings_only_the_new_messages() {
    let c = Circle::new().await;
    let (inc, _) = read_then_mentioned(&c).await;
    let joined = c.in_sync(&inc);
    assert_eq!(
        bodies(&joined["timeline"]["events"]),
        ["m15", "hey bob, look"]
    );
    assert_ne!(joined["timeline"]["limited"], true, "nothing was skipped");
    c.stop().await;
}

#[tokio::test]
async fn a_read_receipt_clears_the_unread_count() {
    let c = Circle::new().await;
    let (inc, _) = read_then_mentioned(&c).await;
    assert_eq!(
        c.in_sync(&inc)["unread_notifications"]["notification_count"],
        1,
        "only the mention after the read receipt is unread"
    );
    c.stop().await;
}

#[tokio::test]
async fn an_intentional_mention_highlights() {
    let c = Circle::new().await;
    let (inc, _) = read_then_mentioned(&c).await;
    assert_eq!(
        c.in_sync(&inc)["unread_notifications"]["highlight_count"],
        1
    );
    c.stop().await;
}

#[tokio::test]
async fn a_read_receipt_arrives_in_the_ephemeral_events() {
    let c = Circle::new().await;
    let (inc, last) = read_then_mentioned(&c).await;
    let receipts = c.in_sync(&inc)["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("receipt in ephemeral");
    assert!(
        receipts["content"][&last]["m.read"]["@bob:localhost"]["ts"].is_u64(),
        "{receipts}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_long_poll_wakes_on_a_new_message_sled() {
    a_sync_long_poll_wakes_on_a_new_message(EngineKind::Sled).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_long_poll_wakes_on_a_new_message_redb() {
    a_sync_long_poll_wakes_on_a_new_message(EngineKind::Redb).await
}

/// An incremental sync with nothing new waits, and returns soon after a new message, not at
/// its timeout.
async fn a_sync_long_poll_wakes_on_a_new_message(engine: EngineKind) {
    let c = Circle::on(engine, &[]).await;
    let since = next_batch(&c.bob_syncs("").await);
    let poll = {
        let http = common::Http::new(&c.t.url());
        let token = c.bob.token.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let (status, res) = http
                .call(
                    "GET",
                    &format!("/_matrix/client/v3/sync?since={since}&timeout=10000"),
                    Some(&token),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{res}");
            (start.elapsed(), res)
        })
    };
    common::eventually(WAIT, "the long poll to reach the server", || async {
        c.t.is_handling_a_request().then_some(())
    })
    .await;
    assert!(!poll.is_finished(), "with nothing new, the sync waits");
    c.t.http.send_text(&c.carol.token, &c.room, "wake up").await;
    let (elapsed, res) = poll.await.unwrap();
    assert!(
        elapsed < Duration::from_secs(9),
        "the long poll returned on the event, not the timeout ({elapsed:?})"
    );
    assert_eq!(bodies(&c.in_sync(&res)["timeline"]["events"]), ["wake up"]);
    c.stop().await;
}

#[tokio::test]
async fn a_sync_with_nothing_new_returns_empty_at_its_timeout() {
    let c = Circle::new().await;
    let since = next_batch(&c.bob_syncs("").await);
    let start = Instant::now();
    let quiet = c.bob_syncs(&format!("since={since}&timeout=50")).await;
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "the sync waited for its timeout"
    );
    assert!(
        quiet["rooms"]["join"]
            .as_object()
            .is_none_or(|j| j.is_empty()),
        "{quiet}"
    );
    assert_eq!(next_batch(&quiet), since, "the position did not move");
    c.stop().await;
}

#[tokio::test]
async fn leaving_shows_the_room_once_in_the_leave_section() {
    let c = Circle::new().await;
    let http = &c.t.http;
    let before_leave = next_batch(&http.sync(&c.carol.token, "").await);
    let (status, res) = http
        .json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/leave", c.room),
            Some(&c.carol.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let after = http
        .sync(&c.carol.token, &format!("since={before_leave}"))
        .await;
    assert!(
        after["rooms"]["leave"][&c.room]["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave"),
        "{after}"
    );
    let later = http
        .sync(
            &c.carol.token,
            &format!("since={}&timeout=0", next_batch(&after)),
        )
        .await;
    assert!(
        later["rooms"]["leave"].get(&c.room).is_none(),
        "the leave is reported once: {later}"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_forgotten_room_is_gone_from_sync() {
    let c = Circle::new().await;
    let http = &c.t.http;
    let carol = &c.carol.token;
    let room = &c.room;
    let (status, res) = http
        .json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(carol),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let with_left = format!(
        "filter={}",
        urlencode(&json!({ "room": { "include_leave": true } }).to_string())
    );
    let before = http.sync(carol, &with_left).await;
    assert!(
        before["rooms"]["leave"].get(room).is_some(),
        "a left room is in an initial sync that asks for left rooms: {before}"
    );
    let (status, res) = http
        .json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            Some(carol),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let rooms = http
        .get_ok("/_matrix/client/v3/joined_rooms", Some(carol))
        .await;
    assert_eq!(rooms["joined_rooms"], json!([]));
    let after = http.sync(carol, &with_left).await;
    assert!(
        after["rooms"]["leave"].get(room).is_none(),
        "a forgotten room is not: {after}"
    );
    c.stop().await;
}

/// An initial sync of an account in many rooms builds them on several threads when the
/// runtime has several workers: every room comes back whole, with its own name, newest
/// message, members and unread count, as the same sync does room by room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_sync_of_many_rooms_shows_each_room_as_it_is() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let mut rooms = Vec::new();
    for i in 0..70 {
        let room = t
            .http
            .create_room(
                &alice.token,
                json!({ "name": format!("room {i}"), "preset": "public_chat" }),
            )
            .await;
        if i % 2 == 0 {
            let (status, res) = t.http.join(&bob.token, &room).await;
            assert_eq!(status, 200, "{res}");
        }
        t.http
            .send_text(&alice.token, &room, &format!("hello {i}"))
            .await;
        rooms.push(room);
    }
    let sync = t.http.sync(&alice.token, "").await;
    let joined = &sync["rooms"]["join"];
    assert_eq!(joined.as_object().map(|o| o.len()), Some(70), "every room");
    for (i, room) in rooms.iter().enumerate() {
        let r = &joined[room.as_str()];
        let events = |section: &str| r[section]["events"].as_array().cloned().unwrap_or_default();
        let name = events("state")
            .into_iter()
            .chain(events("timeline"))
            .find(|e| e["type"] == "m.room.name")
            .map(|e| e["content"]["name"].clone());
        assert_eq!(name, Some(json!(format!("room {i}"))), "{room}");
        let last = r["timeline"]["events"].as_array().unwrap().last().cloned();
        assert_eq!(
            last.map(|e| e["content"]["body"].clone()),
            Some(json!(format!("hello {i}")))
        );
        let members = if i % 2 == 0 { 2 } else { 1 };
        assert_eq!(r["summary"]["m.joined_member_count"], members, "{room}");
    }
    // Bob's unread counts: alice's message in each room he is in.
    let sync = t.http.sync(&bob.token, "").await;
    let joined = sync["rooms"]["join"].as_object().unwrap();
    assert_eq!(joined.len(), 35);
    for r in joined.values() {
        assert_eq!(r["unread_notifications"]["notification_count"], 1, "{r}");
    }
    t.stop().await;
}

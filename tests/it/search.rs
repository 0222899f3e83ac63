//! Server-side message search (`POST /search`) as Element's search box uses it: words found
//! with their context, ranked or newest first, grouped by room, paged with `next_batch`, and
//! only where the searcher may read.

use crate::common;

use common::{Account, TestServer, assert_error};
use serde_json::{Value, json};

async fn search(
    t: &TestServer,
    who: &Account,
    room_events: Value,
    next: Option<&str>,
) -> (u16, Value) {
    let path = match next {
        Some(n) => format!("/_matrix/client/v3/search?next_batch={n}"),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    t.http
        .json(
            "POST",
            &path,
            Some(&who.token),
            json!({ "search_categories": { "room_events": room_events } }),
        )
        .await
}

async fn search_ok(t: &TestServer, who: &Account, room_events: Value) -> Value {
    let (status, res) = search(t, who, room_events, None).await;
    assert_eq!(status, 200, "{res}");
    res["search_categories"]["room_events"].clone()
}

fn result_bodies(found: &Value) -> Vec<String> {
    // `results` may be left out when there are none.
    found["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| r["result"]["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

/// Alice and Bob chat in a room; returns it.
async fn chat(t: &TestServer, alice: &Account, bob: &Account, lines: &[&str]) -> String {
    let room = t
        .http
        .create_room(
            &alice.token,
            json!({ "preset": "public_chat", "name": "Alumni" }),
        )
        .await;
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
    for (i, line) in lines.iter().enumerate() {
        let who = if i % 2 == 0 { alice } else { bob };
        t.http.send_text(&who.token, &room, line).await;
    }
    room
}

#[tokio::test]
async fn a_word_is_found_with_the_messages_around_it() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let room = chat(
        &t,
        &alice,
        &bob,
        &[
            "good morning",
            "shall we meet for the reunion?",
            "yes, Friday works",
            "see you then",
        ],
    )
    .await;

    let found = search_ok(
        &t,
        &bob,
        json!({
            "search_term": "Reunion",
            "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
            "groupings": { "group_by": [{ "key": "room_id" }] },
        }),
    )
    .await;
    assert_eq!(found["count"], 1, "{found}");
    assert_eq!(result_bodies(&found), ["shall we meet for the reunion?"]);
    let hit = &found["results"][0];
    assert_eq!(hit["result"]["room_id"], room.as_str());
    let context = &hit["context"];
    assert_eq!(
        context["events_before"][0]["content"]["body"], "good morning",
        "{hit}"
    );
    assert_eq!(
        context["events_after"][0]["content"]["body"],
        "yes, Friday works"
    );
    assert!(
        context["profile_info"][bob.id.as_str()].is_object(),
        "the sender's profile comes along: {context}"
    );
    assert!(
        found["highlights"]
            .as_array()
            .unwrap()
            .contains(&json!("reunion"))
    );
    assert_eq!(
        found["groups"]["room_id"][&room]["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Nothing for a word nobody wrote.
    let none = search_ok(&t, &bob, json!({ "search_term": "barbecue" })).await;
    assert!(result_bodies(&none).is_empty(), "{none}");
    t.stop().await;
}

#[tokio::test]
async fn results_page_with_next_batch_newest_first() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let lines: Vec<String> = (0..25).map(|i| format!("coffee number {i}")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    chat(&t, &alice, &bob, &refs).await;

    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..10 {
        let (status, res) = search(
            &t,
            &alice,
            json!({ "search_term": "coffee", "order_by": "recent", "filter": { "limit": 10 } }),
            next.as_deref(),
        )
        .await;
        assert_eq!(status, 200, "{res}");
        let found = &res["search_categories"]["room_events"];
        assert_eq!(found["count"], 25);
        seen.extend(result_bodies(found));
        match found["next_batch"].as_str() {
            Some(n) => next = Some(n.to_owned()),
            None => break,
        }
    }
    let newest_first: Vec<String> = lines.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    t.stop().await;
}

#[tokio::test]
async fn rank_puts_the_closer_match_first_and_a_filter_narrows_rooms() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let first = chat(
        &t,
        &alice,
        &bob,
        &[
            "hiking",
            "we talked about many things that day, hiking among them",
        ],
    )
    .await;
    let second = chat(&t, &alice, &bob, &["hiking again"]).await;

    let ranked = search_ok(
        &t,
        &alice,
        json!({ "search_term": "hiking", "order_by": "rank" }),
    )
    .await;
    assert_eq!(ranked["count"], 3);
    assert_eq!(result_bodies(&ranked)[0], "hiking", "{ranked}");
    let ranks: Vec<f64> = ranked["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rank"].as_f64().unwrap())
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");

    let only = search_ok(
        &t,
        &alice,
        json!({ "search_term": "hiking", "filter": { "rooms": [second] } }),
    )
    .await;
    assert_eq!(result_bodies(&only), ["hiking again"]);
    let not_second = search_ok(
        &t,
        &alice,
        json!({ "search_term": "hiking", "filter": { "not_rooms": [second], "senders": [bob.id] } }),
    )
    .await;
    assert_eq!(
        result_bodies(&not_second),
        ["we talked about many things that day, hiking among them"]
    );
    let _ = first;
    t.stop().await;
}

#[tokio::test]
async fn nobody_finds_what_they_may_not_read() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let eve = t.http.register("eve").await;
    let room = chat(&t, &alice, &bob, &["the secret plan"]).await;
    // Eve is in no room: she finds nothing.
    let found = search_ok(&t, &eve, json!({ "search_term": "secret" })).await;
    assert!(result_bodies(&found).is_empty(), "{found}");

    // Bob leaves; what is said afterwards stays out of his results, what he saw stays in.
    let (status, _) = t
        .http
        .json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    t.http
        .send_text(&alice.token, &room, "a secret after Bob left")
        .await;
    let found = search_ok(&t, &bob, json!({ "search_term": "secret" })).await;
    assert_eq!(result_bodies(&found), ["the secret plan"]);
    let found = search_ok(&t, &alice, json!({ "search_term": "secret" })).await;
    assert_eq!(found["count"], 2);
    t.stop().await;
}

#[tokio::test]
async fn encrypted_messages_are_not_searchable_on_the_server() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let room = t
        .http
        .create_room(&alice.token, json!({ "preset": "private_chat" }))
        .await;
    // What a client sends in an encrypted room: only ciphertext reaches the server.
    let txn = "enc1";
    let (status, _) = t
        .http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/{txn}"),
            Some(&alice.token),
            json!({
                "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnAcipherbody",
                "sender_key": "k", "device_id": "D", "session_id": "s",
            }),
        )
        .await;
    assert_eq!(status, 200);
    let found = search_ok(&t, &alice, json!({ "search_term": "AwgAEnAcipherbody" })).await;
    assert!(result_bodies(&found).is_empty(), "{found}");
    t.stop().await;
}

#[tokio::test]
async fn a_bad_search_is_refused() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let got = search(&t, &alice, json!({ "search_term": "  " }), None).await;
    assert_error(&got, 400, "M_INVALID_PARAM");
    let got = search(
        &t,
        &alice,
        json!({ "search_term": "x" }),
        Some("not-a-token"),
    )
    .await;
    assert_error(&got, 400, "M_INVALID_PARAM");
    // Every word is a scan: a term of thousands of words is refused, not run.
    let many = (0..5000)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let got = search(&t, &alice, json!({ "search_term": many }), None).await;
    assert_error(&got, 400, "M_INVALID_PARAM");
    let got = search(&t, &alice, json!({ "search_term": 5 }), None).await;
    assert_error(&got, 400, "M_BAD_JSON");
    t.stop().await;
}

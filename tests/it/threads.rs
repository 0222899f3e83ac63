//! Threads and relations as Element shows them: the thread panel (`/threads`), a thread's
//! replies (`/relations`), the summaries bundled into the root (`unsigned.m.relations`), edits,
//! and per-thread unread counts and receipts in `/sync`.

use crate::common;

use common::{
    Account, TestServer, WAIT,
    client::{private_room, say},
    eventually,
    http::bodies,
};
use matrix_sdk::{
    room::{IncludeRelations, ListThreadsOptions, RelationsOptions},
    ruma::events::relation::RelationType,
};
use serde_json::{Value, json};

/// Alice and Bob in a public room; Alice wrote a thread root.
struct Thread {
    t: TestServer,
    alice: Account,
    bob: Account,
    room: String,
    root: String,
}

impl Thread {
    async fn new() -> Self {
        let t = TestServer::start().await;
        let alice = t.http.register("alice").await;
        let bob = t.http.register("bob").await;
        let room = t
            .http
            .create_room(&alice.token, json!({ "preset": "public_chat" }))
            .await;
        assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
        let root = t
            .http
            .send_text(&alice.token, &room, "who is coming to the reunion?")
            .await;
        Self {
            t,
            alice,
            bob,
            room,
            root,
        }
    }

    /// Sends a reply in the thread as `who`.
    async fn reply(&self, who: &Account, body: &str) -> String {
        self.t
            .http
            .send_message(
                &who.token,
                &self.room,
                json!({
                    "msgtype": "m.text", "body": body,
                    "m.relates_to": {
                        "rel_type": "m.thread", "event_id": self.root,
                        "is_falling_back": true,
                        "m.in_reply_to": { "event_id": self.root },
                    },
                }),
            )
            .await
    }

    async fn threads(&self, who: &Account, query: &str) -> Value {
        self.t
            .http
            .get_ok(
                &format!("/_matrix/client/v1/rooms/{}/threads?{query}", self.room),
                Some(&who.token),
            )
            .await
    }

    async fn relations(&self, who: &Account, path: &str) -> Value {
        self.t
            .http
            .get_ok(
                &format!(
                    "/_matrix/client/v1/rooms/{}/relations/{}{path}",
                    self.room, self.root
                ),
                Some(&who.token),
            )
            .await
    }
}

fn thread_summary(root: &Value) -> &Value {
    &root["unsigned"]["m.relations"]["m.thread"]
}

#[tokio::test]
async fn a_reply_in_a_thread_shows_in_the_thread_panel_of_others() {
    let th = Thread::new().await;
    assert_eq!(th.threads(&th.alice, "").await["chunk"], json!([]));

    let reply = th.reply(&th.bob, "me, and I bring cake").await;

    // Alice's thread panel lists the root, summarised: one reply, Bob's, hers not among them.
    let panel = th.threads(&th.alice, "").await;
    let chunk = panel["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 1, "{panel}");
    assert_eq!(chunk[0]["event_id"], th.root.as_str());
    let summary = thread_summary(&chunk[0]);
    assert_eq!(summary["count"], 1, "{panel}");
    assert_eq!(summary["latest_event"]["event_id"], reply.as_str());
    assert_eq!(
        summary["latest_event"]["content"]["body"],
        "me, and I bring cake"
    );
    assert_eq!(
        summary["current_user_participated"], true,
        "Alice wrote the root"
    );

    // Only the threads one took part in: Bob's reply makes it his too; Carol has none.
    let bobs = th.threads(&th.bob, "include=participated").await;
    assert_eq!(bobs["chunk"].as_array().unwrap().len(), 1, "{bobs}");
    let carol = th.t.http.register("carol").await;
    assert_eq!(th.t.http.join(&carol.token, &th.room).await.0, 200);
    let carols = th.threads(&carol, "include=participated").await;
    assert_eq!(carols["chunk"], json!([]));
    let all = th.threads(&carol, "include=all").await;
    assert_eq!(
        thread_summary(&all["chunk"][0])["current_user_participated"],
        false
    );

    // The root fetched on its own carries the same summary.
    let root =
        th.t.http
            .get_ok(
                &format!("/_matrix/client/v3/rooms/{}/event/{}", th.room, th.root),
                Some(&th.alice.token),
            )
            .await;
    assert_eq!(thread_summary(&root)["count"], 1, "{root}");
    th.t.stop().await;
}

#[tokio::test]
async fn a_threads_replies_page_through_relations() {
    let th = Thread::new().await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let who = if i % 2 == 0 { &th.bob } else { &th.alice };
        sent.push(th.reply(who, &format!("reply {i}")).await);
    }
    // An edit of the root relates to it too, but is no thread reply.
    th.t.http
        .send_message(
            &th.alice.token,
            &th.room,
            json!({
                "msgtype": "m.text", "body": "* who is coming to the reunion on Friday?",
                "m.new_content": { "msgtype": "m.text", "body": "who is coming to the reunion on Friday?" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": th.root },
            }),
        )
        .await;

    // Newest first, two a page, until there is no next_batch.
    let mut seen = Vec::new();
    let mut from = String::new();
    for _ in 0..10 {
        let page = th
            .relations(&th.bob, &format!("/m.thread?limit=2{from}"))
            .await;
        let chunk = page["chunk"].as_array().unwrap();
        assert!(chunk.len() <= 2, "{page}");
        seen.extend(
            chunk
                .iter()
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match page["next_batch"].as_str() {
            Some(next) => from = format!("&from={next}"),
            None => break,
        }
    }
    let mut newest_first = sent.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    // Oldest first with dir=f; every relation type without a type in the path.
    let forward = th.relations(&th.bob, "/m.thread?dir=f&limit=10").await;
    let ids: Vec<&str> = forward["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, sent.iter().map(String::as_str).collect::<Vec<_>>());
    let every = th.relations(&th.bob, "?limit=50").await;
    assert_eq!(every["chunk"].as_array().unwrap().len(), 6, "{every}");
    let edits = th.relations(&th.bob, "/m.replace").await;
    assert_eq!(edits["chunk"].as_array().unwrap().len(), 1, "{edits}");

    // The root shows its latest edit bundled, and the thread's count.
    let root =
        th.t.http
            .get_ok(
                &format!("/_matrix/client/v3/rooms/{}/event/{}", th.room, th.root),
                Some(&th.bob.token),
            )
            .await;
    let relations = &root["unsigned"]["m.relations"];
    assert_eq!(relations["m.thread"]["count"], 5, "{root}");
    assert_eq!(
        relations["m.replace"]["content"]["m.new_content"]["body"],
        "who is coming to the reunion on Friday?",
        "{root}"
    );
    th.t.stop().await;
}

#[tokio::test]
async fn someone_who_cannot_read_the_room_gets_no_relations() {
    let th = Thread::new().await;
    th.reply(&th.bob, "a private aside").await;
    let eve = th.t.http.register("eve").await;
    // Not a member of a room whose history is for members only.
    let private =
        th.t.http
            .create_room(&th.alice.token, json!({ "preset": "private_chat" }))
            .await;
    let secret =
        th.t.http
            .send_text(&th.alice.token, &private, "secret")
            .await;
    let (status, _) =
        th.t.http
            .call(
                "GET",
                &format!("/_matrix/client/v1/rooms/{private}/relations/{secret}"),
                Some(&eve.token),
                None,
            )
            .await;
    assert!(status == 403 || status == 404, "got {status}");
    let (status, _) =
        th.t.http
            .call(
                "GET",
                &format!("/_matrix/client/v1/rooms/{private}/threads"),
                Some(&eve.token),
                None,
            )
            .await;
    assert_eq!(status, 403);
    th.t.stop().await;
}

/// Alice's sync with per-thread unread counts.
async fn alice_syncs(th: &Thread) -> Value {
    let filter = json!({ "room": { "timeline": { "unread_thread_notifications": true } } });
    let sync =
        th.t.http
            .sync(
                &th.alice.token,
                &format!("filter={}", common::http::urlencode(&filter.to_string())),
            )
            .await;
    sync["rooms"]["join"][&th.room].clone()
}

#[tokio::test]
async fn thread_replies_count_in_their_thread_and_a_thread_receipt_clears_them() {
    let th = Thread::new().await;
    let main =
        th.t.http
            .send_text(&th.bob.token, &th.room, "in the main timeline")
            .await;
    let reply = th.reply(&th.bob, "in the thread").await;
    th.reply(&th.bob, "also in the thread").await;

    let room = alice_syncs(&th).await;
    assert_eq!(
        room["unread_notifications"]["notification_count"], 1,
        "{room}"
    );
    assert_eq!(
        room["unread_thread_notifications"][&th.root]["notification_count"], 2,
        "{room}"
    );

    // Reading the main timeline leaves the thread unread, and the other way round.
    let receipt = |event: &str, thread: &str| {
        let (http, token, room) = (&th.t.http, th.alice.token.clone(), th.room.clone());
        let (event, thread) = (event.to_owned(), thread.to_owned());
        async move {
            let (status, res) = http
                .json(
                    "POST",
                    &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"),
                    Some(&token),
                    json!({ "thread_id": thread }),
                )
                .await;
            assert_eq!(status, 200, "{res}");
        }
    };
    receipt(&main, "main").await;
    let room = alice_syncs(&th).await;
    assert_eq!(
        room["unread_notifications"]["notification_count"], 0,
        "{room}"
    );
    assert_eq!(
        room["unread_thread_notifications"][&th.root]["notification_count"], 2,
        "{room}"
    );
    receipt(&reply, &th.root).await;
    let room = alice_syncs(&th).await;
    assert_eq!(
        room["unread_thread_notifications"][&th.root]["notification_count"], 1,
        "one reply is still after the receipt: {room}"
    );

    // The thread receipt reaches Bob with its thread.
    let bob_sync = th.t.http.sync(&th.bob.token, "").await;
    let receipts = &bob_sync["rooms"]["join"][&th.room]["ephemeral"]["events"];
    let content = receipts
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .map(|e| e["content"].clone())
        .unwrap_or_default();
    assert_eq!(
        content[&reply]["m.read"][th.alice.id.as_str()]["thread_id"],
        th.root.as_str(),
        "{receipts}"
    );
    th.t.stop().await;
}

#[tokio::test]
async fn a_receipt_for_no_real_thread_is_refused() {
    let th = Thread::new().await;
    let main = th.t.http.send_text(&th.bob.token, &th.room, "main").await;
    for (receipt_type, thread) in [("m.read", "not a thread"), ("m.fully_read", "main")] {
        let got =
            th.t.http
                .json(
                    "POST",
                    &format!(
                        "/_matrix/client/v3/rooms/{}/receipt/{receipt_type}/{main}",
                        th.room
                    ),
                    Some(&th.alice.token),
                    json!({ "thread_id": thread }),
                )
                .await;
        common::assert_error(&got, 400, "M_INVALID_PARAM");
    }
    th.t.stop().await;
}

/// The same in an encrypted room with real clients: the relation stays readable to the server
/// (it is outside the ciphertext), so the thread panel works while the messages stay secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_thread_replies_show_in_the_thread_panel_of_a_real_client() {
    let t = TestServer::start().await;
    let alice = common::user(&t, "alice").await;
    let bob = common::user(&t, "bob").await;
    let room_id = private_room(&alice, "Reunion", &[&bob], &[]).await;
    let alice_room = alice.room(&room_id).await;
    let root = say(&alice_room, "who is coming?").await;
    bob.receives_encrypted("who is coming?").await;
    let bob_room = bob.room(&room_id).await;
    bob_room
        .send_raw(
            "m.room.message",
            json!({
                "msgtype": "m.text", "body": "me!",
                "m.relates_to": { "rel_type": "m.thread", "event_id": root },
            }),
        )
        .await
        .unwrap();
    alice.receives_encrypted("me!").await;

    let threads = eventually(WAIT, "Alice's thread list", || async {
        let roots = alice_room
            .list_threads(ListThreadsOptions::default())
            .await
            .ok()?;
        (!roots.chunk.is_empty()).then_some(roots)
    })
    .await;
    assert_eq!(threads.chunk.len(), 1);
    let root_json: Value = threads.chunk[0].raw().deserialize_as().unwrap();
    assert_eq!(root_json["event_id"], root.as_str());
    assert_eq!(root_json["unsigned"]["m.relations"]["m.thread"]["count"], 1);

    let opts = RelationsOptions {
        include_relations: IncludeRelations::RelationsOfType(RelationType::Thread),
        ..Default::default()
    };
    let replies = alice_room.relations(root.clone(), opts).await.unwrap();
    assert_eq!(replies.chunk.len(), 1);
    let reply: Value = replies.chunk[0].raw().deserialize_as().unwrap();
    assert_eq!(
        reply["content"]["body"], "me!",
        "decrypted by Alice's client"
    );
    // The server only ever held the ciphertext.
    let stored = common::stored(&t.server, &room_id);
    assert!(
        !bodies(&json!(
            stored.iter().map(|e| e.content()).collect::<Vec<_>>()
        ))
        .iter()
        .any(|b| b == "me!")
    );
    drop((alice, bob));
    t.stop().await;
}

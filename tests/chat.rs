#![recursion_limit = "256"]
//! Two matrix-sdk clients chat through an in-process Tsunagu: register, log in, create a room,
//! invite, join, messages via sync, edits, redactions, typing, receipts, back-pagination, and a
//! restart on the same data directory.

mod common;

use std::sync::{Arc, Mutex};

use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    room::MessagesOptions,
    ruma::{
        OwnedEventId, OwnedRoomId,
        api::client::{receipt::create_receipt::v3::ReceiptType, room::create_room},
        events::{
            receipt::{ReceiptThread, SyncReceiptEvent},
            room::{
                message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
                redaction::OriginalSyncRoomRedactionEvent,
            },
            typing::SyncTypingEvent,
        },
    },
};
use serde_json::{Value, json};

/// Everything a client saw through sync, for assertions.
#[derive(Default, Clone)]
struct Seen {
    messages: Arc<Mutex<Vec<(OwnedEventId, String, Value)>>>,
    redactions: Arc<Mutex<Vec<OwnedEventId>>>,
    typing: Arc<Mutex<Vec<Vec<String>>>>,
    receipts: Arc<Mutex<Vec<OwnedEventId>>>,
}

fn watch(client: &Client) -> Seen {
    let seen = Seen::default();
    let s = seen.clone();
    client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent| {
        let s = s.clone();
        async move {
            let content = serde_json::to_value(&ev.content).unwrap();
            s.messages.lock().unwrap().push((
                ev.event_id.clone(),
                ev.content.body().to_owned(),
                content,
            ));
        }
    });
    let s = seen.clone();
    client.add_event_handler(move |ev: OriginalSyncRoomRedactionEvent| {
        let s = s.clone();
        async move {
            if let Some(id) = ev.redacts.or(ev.content.redacts) {
                s.redactions.lock().unwrap().push(id);
            }
        }
    });
    let s = seen.clone();
    client.add_event_handler(move |ev: SyncTypingEvent| {
        let s = s.clone();
        async move {
            s.typing
                .lock()
                .unwrap()
                .push(ev.content.user_ids.iter().map(|u| u.to_string()).collect());
        }
    });
    let s = seen.clone();
    client.add_event_handler(move |ev: SyncReceiptEvent| {
        let s = s.clone();
        async move {
            s.receipts
                .lock()
                .unwrap()
                .extend(ev.content.0.keys().cloned());
        }
    });
    let c = client.clone();
    tokio::spawn(async move {
        let _ = c
            .sync(SyncSettings::default().timeout(std::time::Duration::from_secs(5)))
            .await;
    });
    seen
}

async fn room_of(client: &Client, room_id: &OwnedRoomId) -> Room {
    common::eventually(10, "room to appear in sync", || async {
        client.get_room(room_id)
    })
    .await
}

fn bodies(room_messages: &[(OwnedEventId, String, Value)]) -> Vec<String> {
    room_messages.iter().map(|(_, b, _)| b.clone()).collect()
}

async fn history(room: &Room) -> Vec<String> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let mut opts = MessagesOptions::backward();
        opts.from = from.clone();
        let page = room.messages(opts).await.expect("messages");
        for ev in &page.chunk {
            let v: Value = ev.raw().deserialize_as().unwrap();
            if v["type"] == "m.room.message" && v["content"]["body"].is_string() {
                out.push(v["content"]["body"].as_str().unwrap().to_owned());
            }
        }
        match page.end {
            Some(end) => from = Some(end),
            None => break,
        }
    }
    out.reverse();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_and_history_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let server = common::start(&data).await;

    let alice = common::register(&server, dir.path(), "alice").await;
    let bob = common::register(&server, dir.path(), "bob").await;
    // Logging in again gives a second device: /login works too.
    let alice2 = common::login(&server.url(), dir.path(), "alice").await;
    assert_ne!(alice.device_id(), alice2.device_id());

    let alice_seen = watch(&alice);
    let bob_seen = watch(&bob);

    let mut req = create_room::v3::Request::new();
    req.name = Some("Alumni coffee".into());
    // Unencrypted on purpose: a new device after the restart reads the history in clear
    // (encrypted history across devices is tested in tests/e2ee.rs).
    req.preset = Some(create_room::v3::RoomPreset::PublicChat);
    req.invite = vec![bob.user_id().unwrap().to_owned()];
    let room = alice.create_room(req).await.expect("room created");
    let room_id = room.room_id().to_owned();

    // Bob sees the invite through sync and joins.
    common::eventually(10, "bob's invite", || async {
        bob.get_room(&room_id)
            .filter(|r| r.state() == matrix_sdk::RoomState::Invited)
    })
    .await;
    bob.join_room_by_id(&room_id).await.expect("bob joins");

    // Messages both ways arrive through sync.
    let hello = room
        .send(RoomMessageEventContent::text_plain("hello bob"))
        .await
        .unwrap()
        .response
        .event_id;
    common::eventually(10, "bob receives hello", || async {
        bob_seen
            .messages
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.1 == "hello bob")
            .then_some(())
    })
    .await;
    let bob_room = room_of(&bob, &room_id).await;
    bob_room
        .send(RoomMessageEventContent::text_plain("hi alice"))
        .await
        .unwrap();
    common::eventually(10, "alice receives reply", || async {
        alice_seen
            .messages
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.1 == "hi alice")
            .then_some(())
    })
    .await;

    // An edit arrives as a replacement of the original.
    room.send_raw(
        "m.room.message",
        json!({
            "msgtype": "m.text", "body": "* hello Bob",
            "m.new_content": { "msgtype": "m.text", "body": "hello Bob" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": hello },
        }),
    )
    .await
    .unwrap();
    common::eventually(10, "bob sees the edit", || async {
        bob_seen
            .messages
            .lock()
            .unwrap()
            .iter()
            .any(|(_, _, c)| {
                c["m.relates_to"]["event_id"] == hello.as_str()
                    && c["m.new_content"]["body"] == "hello Bob"
            })
            .then_some(())
    })
    .await;

    // A redaction arrives, and the redacted event has lost its content on the server.
    let oops = room
        .send(RoomMessageEventContent::text_plain("oops, wrong room"))
        .await
        .unwrap()
        .response
        .event_id;
    room.redact(&oops, Some("mistake"), None).await.unwrap();
    common::eventually(10, "bob sees the redaction", || async {
        bob_seen
            .redactions
            .lock()
            .unwrap()
            .contains(&oops)
            .then_some(())
    })
    .await;
    let redacted = bob_room
        .event(&oops, None)
        .await
        .expect("event still fetchable");
    let v: Value = redacted.raw().deserialize_as().unwrap();
    assert!(
        v["content"].as_object().unwrap().is_empty(),
        "redacted content is gone: {v}"
    );

    // Typing and receipts reach the other user.
    bob_room.typing_notice(true).await.unwrap();
    let bob_id = bob.user_id().unwrap().to_string();
    common::eventually(10, "alice sees bob typing", || async {
        alice_seen
            .typing
            .lock()
            .unwrap()
            .iter()
            .any(|t| t.contains(&bob_id))
            .then_some(())
    })
    .await;
    bob_room
        .send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, hello.clone())
        .await
        .unwrap();
    common::eventually(10, "alice sees bob's receipt", || async {
        alice_seen
            .receipts
            .lock()
            .unwrap()
            .contains(&hello)
            .then_some(())
    })
    .await;

    // Many messages, then back-pagination returns the whole history in order.
    let mut sent = vec![
        "hello bob".to_owned(),
        "hi alice".to_owned(),
        "* hello Bob".to_owned(),
    ];
    for i in 0..45 {
        let body = format!("message {i}");
        room.send(RoomMessageEventContent::text_plain(body.clone()))
            .await
            .unwrap();
        sent.push(body);
    }
    common::eventually(10, "bob receives all", || async {
        bodies(&bob_seen.messages.lock().unwrap())
            .contains(&"message 44".to_owned())
            .then_some(())
    })
    .await;
    let got = history(&bob_room).await;
    assert_eq!(got, sent, "back-pagination returns every message in order");

    // Restart on the same data directory: accounts, rooms and history are all there.
    server.stop().await.unwrap();
    let server = common::start(&data).await;
    let bob_again = common::login(&server.url(), dir.path(), "bob").await;
    bob_again.sync_once(SyncSettings::default()).await.unwrap();
    let room_again = bob_again
        .get_room(&room_id)
        .expect("room survives the restart");
    assert_eq!(room_again.name().as_deref(), Some("Alumni coffee"));
    assert_eq!(
        history(&room_again).await,
        sent,
        "history survives the restart"
    );
    server.stop().await.unwrap();
}

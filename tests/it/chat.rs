//! Two matrix-sdk clients chat through an in-process Tsunagu: register, log in, create a room,
//! invite, join, messages via sync, edits, redactions, typing, receipts, back-pagination, and a
//! restart on the same data directory.

use crate::common;

use common::{
    TestServer, WAIT,
    client::{history, say},
};
use matrix_sdk::{
    config::SyncSettings,
    ruma::{
        api::client::{receipt::create_receipt::v3::ReceiptType, room::create_room},
        events::receipt::ReceiptThread,
    },
};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_and_history_survives_restart() {
    let t = TestServer::start().await;
    let alice = common::user(&t, "alice").await;
    let bob = common::user(&t, "bob").await;
    // Logging in again gives a second device: /login works too.
    let alice2 = common::login(&t.url(), t.dir(), "alice").await;
    assert_ne!(alice.client.device_id(), alice2.device_id());

    let mut req = create_room::v3::Request::new();
    req.name = Some("Alumni coffee".into());
    // Unencrypted on purpose: a new device after the restart reads the history in clear
    // (encrypted history across devices is tested in tests/e2ee.rs).
    req.preset = Some(create_room::v3::RoomPreset::PublicChat);
    req.invite = vec![bob.id()];
    let room = alice.client.create_room(req).await.expect("room created");
    let room_id = room.room_id().to_owned();

    // Bob sees the invite through sync and joins.
    bob.accept_invite(&room_id).await;

    // Messages both ways arrive through sync.
    let hello = say(&room, "hello bob").await;
    bob.receives("hello bob").await;
    let bob_room = bob.room(&room_id).await;
    say(&bob_room, "hi alice").await;
    alice.receives("hi alice").await;

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
    let edit = bob.receives("* hello Bob").await;
    assert_eq!(edit.content["m.relates_to"]["event_id"], hello.as_str());
    assert_eq!(edit.content["m.new_content"]["body"], "hello Bob");

    // A redaction arrives, and the redacted event has lost its content on the server.
    let oops = say(&room, "oops, wrong room").await;
    room.redact(&oops, Some("mistake"), None).await.unwrap();
    common::eventually(WAIT, "bob sees the redaction", || async {
        bob.inbox.redactions().contains(&oops).then_some(())
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
    common::eventually(WAIT, "alice sees bob typing", || async {
        alice
            .inbox
            .typing()
            .iter()
            .any(|typing| typing.contains(&bob.id()))
            .then_some(())
    })
    .await;
    bob_room
        .send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, hello.clone())
        .await
        .unwrap();
    common::eventually(WAIT, "alice sees bob's receipt", || async {
        alice.inbox.receipts().contains(&hello).then_some(())
    })
    .await;

    // Many messages, then back-pagination returns the whole history in order (the redacted
    // message has no body left, so it is not in the history).
    let mut sent = vec![
        Some("hello bob".to_owned()),
        Some("hi alice".to_owned()),
        Some("* hello Bob".to_owned()),
    ];
    for i in 0..45 {
        let body = format!("message {i}");
        say(&room, &body).await;
        sent.push(Some(body));
    }
    bob.receives("message 44").await;
    let got = history(&bob_room).await;
    assert_eq!(got, sent, "back-pagination returns every message in order");

    // Restart on the same data directory: accounts, rooms and history are all there.
    drop((alice, bob));
    let t = t.restart().await;
    let bob_again = common::login(&t.url(), t.dir(), "bob").await;
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
    t.stop().await;
}

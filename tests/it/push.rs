//! Push notifications: pushers (`/pushers`, `/pushers/set`), the notifications the push rules
//! produce (`/notifications`), and their delivery to an HTTP push gateway in the Push Gateway
//! API's format: a small gateway runs in the test, as Sygnal or ntfy would for a phone.

use crate::common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use common::{Account, TestServer, WAIT, assert_error, eventually};
use serde_json::{Value, json};

/// What the gateway received, and how it answers.
#[derive(Default, Clone)]
struct Gateway {
    received: Arc<Mutex<Vec<Value>>>,
    /// Pushkeys it answers as rejected (the app was uninstalled).
    rejects: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    fn notifications(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|b| b["notification"].clone())
            .collect()
    }

    async fn receives(&self, what: &str, n: usize) -> Vec<Value> {
        eventually(WAIT, what, || async {
            let got = self.notifications();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

async fn notify(State(g): State<Gateway>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    g.received.lock().unwrap().push(body.clone());
    let rejects = g.rejects.lock().unwrap().clone();
    let rejected: Vec<&String> = rejects
        .iter()
        .filter(|k| {
            body["notification"]["devices"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["pushkey"] == k.as_str()))
        })
        .collect();
    (StatusCode::OK, Json(json!({ "rejected": rejected })))
}

/// Serves the gateway on `addr` until the handle is aborted.
async fn serve_gateway(addr: SocketAddr, g: Gateway) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/_matrix/push/v1/notify", post(notify))
        .with_state(g);
    let listener = eventually(10, "the gateway port to be free", || async {
        tokio::net::TcpListener::bind(addr).await.ok()
    })
    .await;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

fn pusher(addr: SocketAddr, pushkey: &str, format: Option<&str>) -> Value {
    let mut data = json!({ "url": format!("http://{addr}/_matrix/push/v1/notify") });
    if let Some(f) = format {
        data["format"] = f.into();
    }
    json!({
        "kind": "http",
        "app_id": "im.tsunagu.test",
        "pushkey": pushkey,
        "app_display_name": "Test phone",
        "device_display_name": "Alice's phone",
        "lang": "en",
        "data": data,
    })
}

async fn set_pusher(t: &TestServer, who: &Account, body: Value) -> (u16, Value) {
    t.http
        .json(
            "POST",
            "/_matrix/client/v3/pushers/set",
            Some(&who.token),
            body,
        )
        .await
}

async fn pushers(t: &TestServer, who: &Account) -> Vec<Value> {
    t.http
        .get_ok("/_matrix/client/v3/pushers", Some(&who.token))
        .await["pushers"]
        .as_array()
        .cloned()
        .unwrap()
}

/// A server that may push to gateways on loopback, with Alice, Bob and Carol in a room.
async fn circle() -> (TestServer, Account, Account, String) {
    let t = TestServer::start_with(|c| c.push.allow_private_gateways = true).await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let carol = t.http.register("carol").await;
    let room = t
        .http
        .create_room(
            &alice.token,
            json!({ "preset": "public_chat", "name": "Alumni circle" }),
        )
        .await;
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
    assert_eq!(t.http.join(&carol.token, &room).await.0, 200);
    (t, alice, bob, room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_rings_the_phone_through_the_gateway() {
    let (t, alice, bob, room) = circle().await;
    let addr = common::free_addr();
    let gateway = Gateway::default();
    let serving = serve_gateway(addr, gateway.clone()).await;
    let (status, res) = set_pusher(&t, &alice, pusher(addr, "alice-phone", None)).await;
    assert_eq!(status, 200, "{res}");
    let listed = pushers(&t, &alice).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["pushkey"], "alice-phone");
    assert_eq!(
        listed[0]["data"]["url"],
        format!("http://{addr}/_matrix/push/v1/notify")
    );

    // Alice's own message does not ring her phone; Bob's message and mention do.
    t.http.send_text(&alice.token, &room, "I am writing").await;
    let hello = t.http.send_text(&bob.token, &room, "hello everyone").await;
    let mention = t
        .http
        .send_message(
            &bob.token,
            &room,
            json!({
                "msgtype": "m.text", "body": "alice: are you coming?",
                "m.mentions": { "user_ids": [alice.id] },
            }),
        )
        .await;
    let got = gateway.receives("two pushes at the gateway", 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["event_id"], hello.as_str());
    let push = &got[1];
    assert_eq!(push["event_id"], mention.as_str());
    assert_eq!(push["room_id"], room.as_str());
    assert_eq!(push["type"], "m.room.message");
    assert_eq!(push["sender"], bob.id.as_str());
    assert_eq!(push["room_name"], "Alumni circle");
    assert_eq!(push["content"]["body"], "alice: are you coming?");
    assert_eq!(push["prio"], "high");
    assert_eq!(push["counts"]["unread"], 2, "{push}");
    let device = &push["devices"][0];
    assert_eq!(device["app_id"], "im.tsunagu.test");
    assert_eq!(device["pushkey"], "alice-phone");
    assert_eq!(device["tweaks"]["highlight"], true, "{device}");
    assert_eq!(device["tweaks"]["sound"], "default");
    assert!(
        device["data"].get("url").is_none(),
        "the url is for the server only"
    );
    assert!(
        got[0]["devices"][0]["tweaks"]
            .get("highlight")
            .is_none_or(|h| h == false)
    );

    // /notifications lists both, newest first; `only=highlight` the mention.
    let all = t
        .http
        .get_ok("/_matrix/client/v3/notifications", Some(&alice.token))
        .await;
    let ids: Vec<&str> = all["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mention.as_str(), hello.as_str()], "{all}");
    assert_eq!(all["notifications"][0]["read"], false);
    assert_eq!(all["notifications"][0]["room_id"], room.as_str());
    let highlights = t
        .http
        .get_ok(
            "/_matrix/client/v3/notifications?only=highlight",
            Some(&alice.token),
        )
        .await;
    assert_eq!(highlights["notifications"].as_array().unwrap().len(), 1);
    let page = t
        .http
        .get_ok(
            "/_matrix/client/v3/notifications?limit=1",
            Some(&alice.token),
        )
        .await;
    let next = page["next_token"].as_str().expect("a next page");
    let rest = t
        .http
        .get_ok(
            &format!("/_matrix/client/v3/notifications?limit=1&from={next}"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(
        rest["notifications"][0]["event"]["event_id"],
        hello.as_str()
    );

    // Once Alice read up to the mention, both show as read.
    let (status, _) = t
        .http
        .json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{mention}"),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let all = t
        .http
        .get_ok("/_matrix/client/v3/notifications", Some(&alice.token))
        .await;
    assert!(
        all["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["read"] == true),
        "{all}"
    );
    serving.abort();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_id_only_pushers_get_no_message_content() {
    let (t, alice, bob, room) = circle().await;
    let addr = common::free_addr();
    let gateway = Gateway::default();
    let serving = serve_gateway(addr, gateway.clone()).await;
    let (status, _) = set_pusher(&t, &alice, pusher(addr, "k", Some("event_id_only"))).await;
    assert_eq!(status, 200);
    let id = t
        .http
        .send_text(&bob.token, &room, "a secret-ish note")
        .await;
    let got = gateway.receives("a push", 1).await;
    assert_eq!(got[0]["event_id"], id.as_str());
    assert!(got[0].get("content").is_none(), "{}", got[0]);
    assert!(got[0].get("sender_display_name").is_none());
    assert_eq!(got[0]["devices"][0]["data"]["format"], "event_id_only");
    serving.abort();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_wait_for_a_down_gateway_across_a_restart() {
    let (t, alice, bob, room) = circle().await;
    let addr = common::free_addr(); // nothing listens there yet
    let (status, _) = set_pusher(&t, &alice, pusher(addr, "k", None)).await;
    assert_eq!(status, 200);
    let first = t
        .http
        .send_text(&bob.token, &room, "while the gateway is down")
        .await;
    // The notification is stored before the restart; its push waits in the queue.
    eventually(WAIT, "the notification to be stored", || async {
        let n = t
            .http
            .get_ok("/_matrix/client/v3/notifications", Some(&alice.token))
            .await;
        (!n["notifications"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    let t = t.restart().await;
    let bob = t.http.login("bob").await;
    let second = t
        .http
        .send_text(&bob.token, &room, "after the restart")
        .await;

    let gateway = Gateway::default();
    let serving = serve_gateway(addr, gateway.clone()).await;
    let got = gateway.receives("both pushes", 2).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|n| n["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [first.as_str(), second.as_str()],
        "in order, each once"
    );
    serving.abort();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushkey_the_gateway_rejects_loses_its_pusher() {
    let (t, alice, bob, room) = circle().await;
    let addr = common::free_addr();
    let gateway = Gateway::default();
    gateway.rejects.lock().unwrap().push("old-phone".into());
    let serving = serve_gateway(addr, gateway.clone()).await;
    assert_eq!(
        set_pusher(&t, &alice, pusher(addr, "old-phone", None))
            .await
            .0,
        200
    );
    assert_eq!(
        set_pusher(&t, &alice, pusher(addr, "new-phone", None))
            .await
            .0,
        200
    );
    assert_eq!(pushers(&t, &alice).await.len(), 2);
    t.http.send_text(&bob.token, &room, "ping").await;
    eventually(WAIT, "the rejected pusher to go", || async {
        let left = pushers(&t, &alice).await;
        (left.len() == 1).then_some(left)
    })
    .await;
    assert_eq!(pushers(&t, &alice).await[0]["pushkey"], "new-phone");
    serving.abort();
    t.stop().await;
}

#[tokio::test]
async fn pushers_are_checked_and_removed() {
    // The default config: no gateways on private addresses.
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let got = set_pusher(&t, &alice, pusher(addr, "k", None)).await;
    assert_error(&got, 400, "M_INVALID_PARAM");

    let mut email = pusher(addr, "alice@example.org", None);
    email["kind"] = "email".into();
    let got = set_pusher(&t, &alice, email).await;
    assert_error(&got, 400, "M_INVALID_PARAM");

    let mut wrong_path = pusher(addr, "k", None);
    wrong_path["data"]["url"] = "https://push.example.org/notify".into();
    let got = set_pusher(&t, &alice, wrong_path).await;
    assert_error(&got, 400, "M_INVALID_PARAM");
    assert!(pushers(&t, &alice).await.is_empty());
    t.stop().await;

    // Allowed, set, then removed with `kind: null`.
    let t = TestServer::start_with(|c| c.push.allow_private_gateways = true).await;
    let alice = t.http.register("alice").await;
    assert_eq!(set_pusher(&t, &alice, pusher(addr, "k", None)).await.0, 200);
    assert_eq!(pushers(&t, &alice).await.len(), 1);
    let got = set_pusher(
        &t,
        &alice,
        json!({ "kind": null, "app_id": "im.tsunagu.test", "pushkey": "k" }),
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert!(pushers(&t, &alice).await.is_empty());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_gateway_does_not_hold_up_the_others() {
    let t = TestServer::start_with(|c| c.push.allow_private_gateways = true).await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let carol = t.http.register("carol").await;
    let room = t
        .http
        .create_room(&bob.token, json!({ "preset": "public_chat" }))
        .await;
    assert_eq!(t.http.join(&alice.token, &room).await.0, 200);
    assert_eq!(t.http.join(&carol.token, &room).await.0, 200);
    // Alice's phone app registered a gateway that never answers; Carol's works.
    let dead = common::free_addr();
    assert_eq!(set_pusher(&t, &alice, pusher(dead, "a", None)).await.0, 200);
    let addr = common::free_addr();
    let gateway = Gateway::default();
    let serving = serve_gateway(addr, gateway.clone()).await;
    assert_eq!(set_pusher(&t, &carol, pusher(addr, "c", None)).await.0, 200);

    // Alice's pushes come first in the queue, and fail; Carol's still arrive, in order.
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(
            t.http
                .send_text(&bob.token, &room, &format!("news {i}"))
                .await,
        );
    }
    let got = gateway.receives("Carol's three pushes", 3).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|n| n["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, sent.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(got.iter().all(|n| n["devices"][0]["pushkey"] == "c"));
    serving.abort();
    t.stop().await;
}

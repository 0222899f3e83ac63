//! The Application Service API: registration files, namespaces, masquerading, and
//! transactions pushed to a real HTTP appservice (an axum server in the test) that retries
//! while the appservice is down and survives a server restart.

use crate::common;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post, put},
};
use common::{Http, TestServer, assert_error};
use serde_json::{Value, json};
use tempfile::TempDir;

const AS_TOKEN: &str = "as_token_for_tests";
const HS_TOKEN: &str = "hs_token_for_tests";

/// What the fake appservice received.
#[derive(Default, Clone)]
struct Received {
    txns: Arc<Mutex<Vec<(String, Value)>>>,
    pings: Arc<Mutex<Vec<Value>>>,
    user_queries: Arc<Mutex<Vec<String>>>,
    bad_auth: Arc<Mutex<u32>>,
}

impl Received {
    fn bodies(&self) -> Vec<String> {
        self.txns
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, t)| t["events"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    }
}

fn authorized(headers: &HeaderMap, r: &Received) -> bool {
    let ok = headers.get("authorization").and_then(|h| h.to_str().ok())
        == Some(&format!("Bearer {HS_TOKEN}"));
    if !ok {
        *r.bad_auth.lock().unwrap() += 1;
    }
    ok
}

async fn txn(
    State(r): State<Received>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers, &r) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({ "errcode": "M_FORBIDDEN" })),
        );
    }
    let mut txns = r.txns.lock().unwrap();
    if !txns.iter().any(|(t, _)| *t == id) {
        txns.push((id, body));
    }
    (StatusCode::OK, Json(json!({})))
}

async fn ping(
    State(r): State<Received>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers, &r) {
        return (StatusCode::FORBIDDEN, Json(json!({})));
    }
    r.pings.lock().unwrap().push(body);
    (StatusCode::OK, Json(json!({})))
}

async fn user_query(
    State(r): State<Received>,
    UrlPath(user): UrlPath<String>,
) -> (StatusCode, Json<Value>) {
    r.user_queries.lock().unwrap().push(user);
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "errcode": "M_NOT_FOUND" })),
    )
}

/// The IRC network the fake appservice bridges.
async fn protocol(UrlPath(protocol): UrlPath<String>) -> (StatusCode, Json<Value>) {
    if protocol != "irc" {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "errcode": "M_NOT_FOUND" })),
        );
    }
    (
        StatusCode::OK,
        Json(json!({
            "user_fields": ["network", "nickname"],
            "location_fields": ["network", "channel"],
            "icon": "mxc://localhost/irc",
            "field_types": {
                "network": { "regexp": "([a-z0-9]+\\.)*[a-z0-9]+", "placeholder": "irc.libera.chat" },
                "nickname": { "regexp": "[^\\s#]+", "placeholder": "alice" },
                "channel": { "regexp": "#[^\\s]+", "placeholder": "#alumni" },
            },
            "instances": [{
                "network_id": "libera", "desc": "Libera Chat", "icon": "mxc://localhost/libera",
                "fields": { "network": "irc.libera.chat" },
            }],
        })),
    )
}

/// Portal rooms of the fake IRC network: the channel asked for, on the network asked for.
async fn locations(
    UrlPath(protocol): UrlPath<String>,
    axum::extract::Query(fields): axum::extract::Query<std::collections::BTreeMap<String, String>>,
) -> Json<Value> {
    let channel = fields.get("channel").cloned().unwrap_or_default();
    Json(json!([{
        "alias": format!("#remote_{}:localhost", channel.trim_start_matches('#')),
        "protocol": protocol,
        "fields": { "network": fields.get("network"), "channel": channel },
    }]))
}

/// Serves the fake appservice on `addr` until the returned handle is aborted.
async fn serve_appservice(addr: SocketAddr, r: Received) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/_matrix/app/v1/transactions/{id}", put(txn))
        .route("/_matrix/app/v1/ping", post(ping))
        .route("/_matrix/app/v1/users/{user}", get(user_query))
        .route(
            "/_matrix/app/v1/thirdparty/protocol/{protocol}",
            get(protocol),
        )
        .route(
            "/_matrix/app/v1/thirdparty/location/{protocol}",
            get(locations),
        )
        .with_state(r);
    let listener = common::eventually(10, "the appservice port to be free", || async {
        tokio::net::TcpListener::bind(addr).await.ok()
    })
    .await;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

fn write_registration(dir: &Path, url: Option<SocketAddr>) -> std::path::PathBuf {
    let url = url
        .map(|a| format!("http://{a}"))
        .map(|u| format!("'{u}'"))
        .unwrap_or_else(|| "null".into());
    let yaml = format!(
        "id: bridge\nurl: {url}\nas_token: {AS_TOKEN}\nhs_token: {HS_TOKEN}\nsender_localpart: bridgebot\nprotocols: [irc]\nrate_limited: false\nreceive_ephemeral: true\nnamespaces:\n  users:\n    - exclusive: true\n      regex: '@remote_.*:localhost'\n  aliases:\n    - exclusive: true\n      regex: '#remote_.*:localhost'\n  rooms: []\n"
    );
    let path = dir.join("bridge.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A server that knows the appservice "bridge", reached at `url` (none: it has no URL).
async fn start(url: Option<SocketAddr>) -> TestServer {
    let dir = TempDir::new().unwrap();
    let registration = write_registration(dir.path(), url);
    TestServer::start_in(dir, |c| c.appservices = vec![registration]).await
}

async fn as_register(http: &Http, localpart: &str) -> (u16, Value) {
    http.json(
        "POST",
        "/_matrix/client/v3/register",
        Some(AS_TOKEN),
        json!({ "type": "m.login.application_service", "username": localpart }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_masquerading_and_transactions() {
    let as_addr = common::free_addr();
    let received = Received::default();
    let appservice = serve_appservice(as_addr, received.clone()).await;
    let t = start(Some(as_addr)).await;
    let http = &t.http;

    // Exclusive namespaces: nobody else registers or makes aliases there.
    let grab = json!({ "username": "remote_alice", "password": "pw", "auth": { "type": "m.login.dummy" } });
    assert_error(
        &http
            .json("POST", "/_matrix/client/v3/register", None, grab)
            .await,
        400,
        "M_EXCLUSIVE",
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/register/available?username=remote_x",
                None,
                None,
            )
            .await,
        400,
        "M_EXCLUSIVE",
    );
    let alice = http.register("alice").await.token;
    let room = http
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    assert_error(
        &http
            .json(
                "PUT",
                "/_matrix/client/v3/directory/room/%23remote_chan:localhost",
                Some(&alice),
                json!({ "room_id": room }),
            )
            .await,
        400,
        "M_EXCLUSIVE",
    );

    // The appservice registers a ghost without UIA, and acts as it.
    assert_error(
        &http
            .json(
                "POST",
                "/_matrix/client/v3/register",
                None,
                json!({ "type": "m.login.application_service", "username": "remote_bob" }),
            )
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_eq!(as_register(http, "remote_bob").await.0, 200);
    assert_error(&as_register(http, "someone_else").await, 400, "M_EXCLUSIVE");
    let (status, me) = http
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami?user_id=@remote_bob:localhost",
            Some(AS_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (status, me["user_id"].as_str()),
        (200, Some("@remote_bob:localhost"))
    );
    let (_, me) = http
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(AS_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        me["user_id"], "@bridgebot:localhost",
        "without user_id the appservice is its sender"
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/account/whoami?user_id=@alice:localhost",
                Some(AS_TOKEN),
                None,
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/account/whoami?user_id=@remote_nobody:localhost",
                Some(AS_TOKEN),
                None,
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    // The appservice may create aliases in its namespace.
    assert_error(&http.json("PUT", "/_matrix/client/v3/directory/room/%23remote_chan:localhost?user_id=@remote_bob:localhost", Some(AS_TOKEN), json!({ "room_id": room })).await, 403, "M_FORBIDDEN");

    // The ghost joins alice's room and talks, with a massaged timestamp.
    assert_eq!(
        http.json(
            "POST",
            &format!("/_matrix/client/v3/join/{room}?user_id=@remote_bob:localhost"),
            Some(AS_TOKEN),
            json!({})
        )
        .await
        .0,
        200
    );
    let (status, sent) = http
        .json("PUT", &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/g1?user_id=@remote_bob:localhost&ts=1000000"), Some(AS_TOKEN), json!({ "msgtype": "m.text", "body": "from the other side" }))
        .await;
    assert_eq!(status, 200, "{sent}");
    let (_, ev) = http
        .call(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{room}/event/{}",
                sent["event_id"].as_str().unwrap()
            ),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        (ev["sender"].as_str(), ev["origin_server_ts"].as_u64()),
        (Some("@remote_bob:localhost"), Some(1000000))
    );
    assert_eq!(http.json("PUT", "/_matrix/client/v3/directory/room/%23remote_chan:localhost?user_id=@remote_bob:localhost", Some(AS_TOKEN), json!({ "room_id": room })).await.0, 200);

    // Alice's messages in a room with a namespaced member reach the appservice, in order.
    for i in 0..5 {
        http.send_text(&alice, &room, &format!("to the bridge {i}"))
            .await;
    }
    let want: Vec<String> = std::iter::once("from the other side".to_owned())
        .chain((0..5).map(|i| format!("to the bridge {i}")))
        .collect();
    common::eventually(10, "transactions with every message", || async {
        (received.bodies() == want).then_some(())
    })
    .await;
    assert_eq!(
        *received.bad_auth.lock().unwrap(),
        0,
        "every push carried the hs_token"
    );

    // Ping, and a user query for an unknown namespaced user.
    let (status, pong) = http
        .json(
            "POST",
            "/_matrix/client/v1/appservice/bridge/ping",
            Some(AS_TOKEN),
            json!({ "transaction_id": "p1" }),
        )
        .await;
    assert_eq!(status, 200, "{pong}");
    assert!(pong["duration_ms"].is_u64());
    assert_eq!(received.pings.lock().unwrap()[0]["transaction_id"], "p1");
    assert_error(
        &http
            .json(
                "POST",
                "/_matrix/client/v1/appservice/bridge/ping",
                Some(&alice),
                json!({}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/profile/@remote_unknown:localhost",
                None,
                None,
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(
        received.user_queries.lock().unwrap().as_slice(),
        ["@remote_unknown:localhost"]
    );

    // Rooms created by the appservice's users are not encrypted by default.
    let (_, as_room) = http
        .json(
            "POST",
            "/_matrix/client/v3/createRoom?user_id=@remote_bob:localhost",
            Some(AS_TOKEN),
            json!({ "preset": "private_chat" }),
        )
        .await;
    let as_room = as_room["room_id"].as_str().unwrap();
    assert_error(&http.call("GET", &format!("/_matrix/client/v3/rooms/{as_room}/state/m.room.encryption/?user_id=@remote_bob:localhost"), Some(AS_TOKEN), None).await, 404, "M_NOT_FOUND");
    let (_, own_room) = http
        .json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            json!({ "preset": "private_chat" }),
        )
        .await;
    let own_room = own_room["room_id"].as_str().unwrap();
    assert_eq!(
        http.call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{own_room}/state/m.room.encryption/"),
            Some(&alice),
            None
        )
        .await
        .0,
        200
    );

    appservice.abort();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_wait_for_a_down_appservice_across_restarts() {
    let as_addr = common::free_addr(); // nothing listens there yet
    let t = start(Some(as_addr)).await;
    let http = &t.http;
    let alice = http.register("alice").await.token;
    assert_eq!(as_register(http, "remote_carol").await.0, 200);
    let room = http
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    assert_eq!(
        http.json(
            "POST",
            &format!("/_matrix/client/v3/join/{room}?user_id=@remote_carol:localhost"),
            Some(AS_TOKEN),
            json!({})
        )
        .await
        .0,
        200
    );
    for i in 0..3 {
        http.send_text(&alice, &room, &format!("while down {i}"))
            .await;
    }
    // Restart the server while the appservice is still down; then more messages.
    let t = t.restart().await;
    let http = &t.http;
    let alice = http.login("alice").await.token;
    for i in 3..5 {
        http.send_text(&alice, &room, &format!("while down {i}"))
            .await;
    }
    // The appservice comes up: everything arrives once, in order.
    let received = Received::default();
    let appservice = serve_appservice(as_addr, received.clone()).await;
    let want: Vec<String> = (0..5).map(|i| format!("while down {i}")).collect();
    common::eventually(30, "retried transactions", || async {
        (received.bodies() == want).then_some(())
    })
    .await;
    let ids: Vec<String> = received
        .txns
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "no transaction ID repeats with other content");
    appservice.abort();
    t.stop().await;
}

#[tokio::test]
async fn registration_files_are_checked() {
    let t = start(None).await; // url: null is accepted
    assert_eq!(as_register(&t.http, "remote_dave").await.0, 200);
    t.stop().await;

    let dir = TempDir::new().unwrap();
    let registration = write_registration(dir.path(), None);

    std::fs::write(
        &registration,
        "id: x\nurl: null\nas_token: a\nsender_localpart: bot\nnamespaces: {}\n",
    )
    .unwrap();
    let mut config = common::config(&dir.path().join("data"));
    config.appservices = vec![registration.clone()];
    let err = tsunagu::Server::start(config)
        .await
        .err()
        .expect("a bad file stops the start")
        .to_string();
    assert!(err.contains("hs_token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_discover_the_networks_a_bridge_connects() {
    let as_addr = common::free_addr();
    let received = Received::default();
    let appservice = serve_appservice(as_addr, received.clone()).await;
    let t = start(Some(as_addr)).await;
    let alice = t.http.register("alice").await;

    let protocols = t
        .http
        .get_ok(
            "/_matrix/client/v3/thirdparty/protocols",
            Some(&alice.token),
        )
        .await;
    let irc = &protocols["irc"];
    assert_eq!(
        irc["location_fields"],
        json!(["network", "channel"]),
        "{protocols}"
    );
    let instance = &irc["instances"][0];
    assert_eq!(instance["desc"], "Libera Chat");
    assert_eq!(instance["network_id"], "libera");
    assert_eq!(
        instance["instance_id"], "bridge|libera",
        "clients need an instance ID"
    );

    let one = t
        .http
        .get_ok(
            "/_matrix/client/v3/thirdparty/protocol/irc",
            Some(&alice.token),
        )
        .await;
    assert_eq!(one["user_fields"], json!(["network", "nickname"]));
    let got = t
        .http
        .call(
            "GET",
            "/_matrix/client/v3/thirdparty/protocol/xmpp",
            Some(&alice.token),
            None,
        )
        .await;
    assert_error(&got, 404, "M_NOT_FOUND");

    let found = t
        .http
        .get_ok(
            "/_matrix/client/v3/thirdparty/location/irc?network=irc.libera.chat&channel=%23alumni",
            Some(&alice.token),
        )
        .await;
    assert_eq!(found[0]["alias"], "#remote_alumni:localhost", "{found}");
    assert_eq!(found[0]["fields"]["channel"], "#alumni");
    appservice.abort();
    t.stop().await;
}

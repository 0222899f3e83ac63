//! Every refusal path answers with the spec's error and changes nothing.

use crate::common;

use common::{
    TestServer, assert_error,
    http::{bodies, password_login},
};
use serde_json::json;

#[tokio::test]
async fn tokens_json_size_and_unknown_endpoints() {
    let t = TestServer::start_with(|c| c.max_request_size = 64 * 1024).await;
    let http = &t.http;
    let token = http.register("alice").await.token;

    assert_error(
        &http
            .call("GET", "/_matrix/client/v3/account/whoami", None, None)
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/account/whoami",
                Some("nope"),
                None,
            )
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let (status, me) = http
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, me["user_id"].as_str()),
        (200, Some("@alice:localhost"))
    );
    // The token also works as a query parameter, and on the legacy r0 path.
    let (status, _) = http
        .call(
            "GET",
            &format!("/_matrix/client/r0/account/whoami?access_token={token}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);

    assert_error(
        &http
            .call(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&token),
                Some("{not json"),
            )
            .await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &http
            .json(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&token),
                json!({ "name": 5 }),
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/no/such/endpoint",
                Some(&token),
                None,
            )
            .await,
        404,
        "M_UNRECOGNIZED",
    );
    let huge = json!({ "body": "x".repeat(100 * 1024), "msgtype": "m.text" });
    let room_id = http.create_room(&token, json!({})).await;
    assert_error(
        &http
            .json(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1"),
                Some(&token),
                huge,
            )
            .await,
        413,
        "M_TOO_LARGE",
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/rooms/not-a-room-id/state",
                Some(&token),
                None,
            )
            .await,
        400,
        "M_BAD_JSON",
    );
    // Nothing was stored by the refused requests.
    let (_, msgs) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=100"),
            Some(&token),
            None,
        )
        .await;
    assert!(
        msgs["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] != "m.room.message"),
        "{msgs}"
    );
    t.stop().await;
}

#[tokio::test]
async fn registration_refusals() {
    let t = TestServer::start().await;
    let http = &t.http;
    http.register("alice").await;
    let again =
        json!({ "username": "alice", "password": "x", "auth": { "type": "m.login.dummy" } });
    assert_error(
        &http
            .json("POST", "/_matrix/client/v3/register", None, again)
            .await,
        400,
        "M_USER_IN_USE",
    );
    let bad =
        json!({ "username": "Al ice!", "password": "x", "auth": { "type": "m.login.dummy" } });
    assert_error(
        &http
            .json("POST", "/_matrix/client/v3/register", None, bad)
            .await,
        400,
        "M_INVALID_USERNAME",
    );
    assert_error(
        &http
            .call(
                "GET",
                "/_matrix/client/v3/register/available?username=alice",
                None,
                None,
            )
            .await,
        400,
        "M_USER_IN_USE",
    );
    let (status, ok) = http
        .call(
            "GET",
            "/_matrix/client/v3/register/available?username=bob",
            None,
            None,
        )
        .await;
    assert_eq!((status, ok["available"].as_bool()), (200, Some(true)));
    // Wrong password.
    let login = password_login("alice", "wrong");
    assert_error(
        &http
            .json("POST", "/_matrix/client/v3/login", None, login)
            .await,
        403,
        "M_FORBIDDEN",
    );
    t.stop().await;
}

#[tokio::test]
async fn registration_token_is_single_use() {
    let t = TestServer::start_with(|c| c.registration = tsunagu::config::Registration::Token).await;
    let token = t
        .server
        .first_start_token
        .clone()
        .expect("first start prints a token");
    let http = &t.http;
    // Without auth: the flows name the registration token stage.
    let (status, flows) = http
        .json(
            "POST",
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "alice", "password": "password1" }),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(flows["flows"][0]["stages"][0], "m.login.registration_token");
    let session = flows["session"].as_str().unwrap();
    let wrong = json!({ "username": "alice", "password": "password1", "auth": { "type": "m.login.registration_token", "token": "guess", "session": session } });
    let (status, res) = http
        .json("POST", "/_matrix/client/v3/register", None, wrong)
        .await;
    assert_eq!(status, 401);
    assert_eq!(res["errcode"], "M_FORBIDDEN");
    let dummy = json!({ "username": "alice", "password": "password1", "auth": { "type": "m.login.dummy" } });
    assert_eq!(
        http.json("POST", "/_matrix/client/v3/register", None, dummy)
            .await
            .0,
        401,
        "dummy auth is not enough"
    );
    let right = json!({ "username": "alice", "password": "password1", "auth": { "type": "m.login.registration_token", "token": token } });
    let (status, res) = http
        .json("POST", "/_matrix/client/v3/register", None, right)
        .await;
    assert_eq!(status, 200, "{res}");
    let reuse = json!({ "username": "bob", "password": "password1", "auth": { "type": "m.login.registration_token", "token": token } });
    assert_eq!(
        http.json("POST", "/_matrix/client/v3/register", None, reuse)
            .await
            .0,
        401,
        "the token was single-use"
    );
    t.stop().await;
}

#[tokio::test]
async fn non_members_cannot_read_or_write_private_rooms() {
    let t = TestServer::start().await;
    let http = &t.http;
    let alice = http.register("alice").await.token;
    let eve = http.register("eve").await.token;
    let room_id = http
        .create_room(
            &alice,
            json!({ "preset": "private_chat", "name": "secret" }),
        )
        .await;
    http.send_text(&alice, &room_id, "for members only").await;
    // Eve's message attempts, with raw transaction IDs.
    let eve_sends = |txn: &str, body: &str| {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}");
        let content = json!({ "msgtype": "m.text", "body": body });
        let eve = &eve;
        async move { http.json("PUT", &path, Some(eve), content).await }
    };

    for path in [
        "messages?dir=b",
        "state",
        "members",
        "state/m.room.name/",
        "joined_members",
    ] {
        assert_error(
            &http
                .call(
                    "GET",
                    &format!("/_matrix/client/v3/rooms/{room_id}/{path}"),
                    Some(&eve),
                    None,
                )
                .await,
            403,
            "M_FORBIDDEN",
        );
    }
    assert_error(&eve_sends("e1", "sneaky").await, 403, "M_FORBIDDEN");
    assert_error(&http.join(&eve, &room_id).await, 403, "M_FORBIDDEN");
    assert_error(
        &http
            .json(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.name/"),
                Some(&eve),
                json!({ "name": "pwned" }),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Eve's sync does not show the room.
    let (_, sync) = http
        .call("GET", "/_matrix/client/v3/sync", Some(&eve), None)
        .await;
    assert!(
        sync["rooms"]["join"].get(&room_id).is_none()
            && sync["rooms"]["invite"].get(&room_id).is_none(),
        "{sync}"
    );

    // After an invite she may join; a ban keeps her out again.
    assert_eq!(
        http.json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/invite"),
            Some(&alice),
            json!({ "user_id": "@eve:localhost" })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        http.json(
            "POST",
            &format!("/_matrix/client/v3/join/{room_id}"),
            Some(&eve),
            json!({})
        )
        .await
        .0,
        200
    );
    assert_error(
        &http
            .json(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/"),
                Some(&eve),
                json!({ "users": { "@eve:localhost": 100 } }),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        http.json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/ban"),
            Some(&alice),
            json!({ "user_id": "@eve:localhost", "reason": "test" })
        )
        .await
        .0,
        200
    );
    assert_error(&http.join(&eve, &room_id).await, 403, "M_FORBIDDEN");
    assert_error(&eve_sends("e2", "still here?").await, 403, "M_FORBIDDEN");

    // The room's name never changed and Eve's messages were never stored.
    let (_, name) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.name/"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(name["name"], "secret");
    let (_, msgs) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=100"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(bodies(&msgs["chunk"]), ["for members only"]);
    t.stop().await;
}

#[tokio::test]
async fn login_is_rate_limited() {
    let t = TestServer::start_with(|c| {
        c.rate_limit.burst = 3;
        c.rate_limit.per_minute = 1;
    })
    .await;
    let http = &t.http;
    let login = password_login("nobody", "x");
    let mut last = (0, serde_json::Value::Null);
    for _ in 0..4 {
        last = http
            .json("POST", "/_matrix/client/v3/login", None, login.clone())
            .await;
    }
    assert_error(&last, 429, "M_LIMIT_EXCEEDED");
    assert!(last.1["retry_after_ms"].as_u64().unwrap() > 0, "{}", last.1);
    t.stop().await;
}

#[tokio::test]
async fn idempotent_sends_and_cors() {
    let t = TestServer::start().await;
    let http = &t.http;
    let alice = http.register("alice").await.token;
    let room_id = http.create_room(&alice, json!({})).await;
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/same-txn");
    let (_, first) = http
        .json(
            "PUT",
            &path,
            Some(&alice),
            json!({ "msgtype": "m.text", "body": "once" }),
        )
        .await;
    let (_, second) = http
        .json(
            "PUT",
            &path,
            Some(&alice),
            json!({ "msgtype": "m.text", "body": "once" }),
        )
        .await;
    assert_eq!(first["event_id"], second["event_id"]);
    let (_, msgs) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        msgs["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["content"]["body"] == "once")
            .count(),
        1
    );

    let res = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/_matrix/client/v3/sync", t.url()),
        )
        .header("origin", "https://app.element.io")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    t.stop().await;
}

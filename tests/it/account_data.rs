//! What a user keeps on the server for their clients, with raw HTTP: global and per-room
//! account data, room tags, and push rules; and how they arrive through `/sync`.

use crate::common;

use common::{Account, TestServer, assert_error};
use serde_json::{Value, json};

/// `/_matrix/client/v3/user/{alice}`: where her account data and tags live.
fn base(alice: &Account) -> String {
    format!("/_matrix/client/v3/user/{}", alice.id)
}

/// Alice saves `content` as her account data of `kind` (in `room`, when given).
async fn put_account_data(
    t: &TestServer,
    alice: &Account,
    room: Option<&str>,
    kind: &str,
    content: Value,
) {
    let path = match room {
        Some(room) => format!("{}/rooms/{room}/account_data/{kind}", base(alice)),
        None => format!("{}/account_data/{kind}", base(alice)),
    };
    let (status, res) = t.http.json("PUT", &path, Some(&alice.token), content).await;
    assert_eq!(status, 200, "{path}: {res}");
}

/// Alice tags `room` as a favourite, ordered 0.5.
async fn favourite(t: &TestServer, alice: &Account, room: &str) {
    let (status, res) = t
        .http
        .json(
            "PUT",
            &format!("{}/rooms/{room}/tags/m.favourite", base(alice)),
            Some(&alice.token),
            json!({ "order": 0.5 }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
}

#[tokio::test]
async fn the_initial_sync_carries_the_default_push_rules() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let first = t.http.sync(&alice.token, "").await;
    assert!(
        first["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.push_rules"),
        "default push rules in the initial sync: {first}"
    );
    t.stop().await;
}

#[tokio::test]
async fn account_data_is_saved_and_read_back() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    put_account_data(
        &t,
        &alice,
        None,
        "org.example.settings",
        json!({ "theme": "dark" }),
    )
    .await;
    let saved = t
        .http
        .get_ok(
            &format!("{}/account_data/org.example.settings", base(&alice)),
            Some(&alice.token),
        )
        .await;
    assert_eq!(saved["theme"], "dark");
    assert_error(
        &t.http
            .call(
                "GET",
                &format!("{}/account_data/org.example.none", base(&alice)),
                Some(&alice.token),
                None,
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    t.stop().await;
}

#[tokio::test]
async fn nobody_writes_another_users_account_data() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    assert_error(
        &t.http
            .json(
                "PUT",
                "/_matrix/client/v3/user/@bob:localhost/account_data/x",
                Some(&alice.token),
                json!({}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    t.stop().await;
}

#[tokio::test]
async fn account_data_and_tags_arrive_through_sync() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let room = t.http.create_room(&alice.token, json!({})).await;
    let first = t.http.sync(&alice.token, "").await;
    put_account_data(
        &t,
        &alice,
        None,
        "org.example.settings",
        json!({ "theme": "dark" }),
    )
    .await;
    put_account_data(
        &t,
        &alice,
        Some(&room),
        "org.example.room",
        json!({ "n": 1 }),
    )
    .await;
    favourite(&t, &alice, &room).await;
    let since = first["next_batch"].as_str().unwrap();
    let inc = t.http.sync(&alice.token, &format!("since={since}")).await;
    assert!(
        inc["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "org.example.settings" && e["content"]["theme"] == "dark"),
        "{inc}"
    );
    let room_ad = inc["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap();
    assert!(
        room_ad
            .iter()
            .any(|e| e["type"] == "m.tag" && e["content"]["tags"]["m.favourite"]["order"] == 0.5),
        "{room_ad:?}"
    );
    assert!(
        room_ad.iter().any(|e| e["type"] == "org.example.room"),
        "{room_ad:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_room_tag_can_be_set_read_and_removed() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let room = t.http.create_room(&alice.token, json!({})).await;
    favourite(&t, &alice, &room).await;
    let tags_path = format!("{}/rooms/{room}/tags", base(&alice));
    let tags = t.http.get_ok(&tags_path, Some(&alice.token)).await;
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5);
    assert_eq!(
        t.http
            .call(
                "DELETE",
                &format!("{tags_path}/m.favourite"),
                Some(&alice.token),
                None
            )
            .await
            .0,
        200
    );
    assert_eq!(
        t.http.get_ok(&tags_path, Some(&alice.token)).await["tags"],
        json!({})
    );
    t.stop().await;
}

#[tokio::test]
async fn the_default_push_rules_include_master_and_message() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let rules = t
        .http
        .get_ok("/_matrix/client/v3/pushrules/", Some(&alice.token))
        .await;
    let has = |kind: &str, id: &str| {
        rules["global"][kind]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == id)
    };
    assert!(has("override", ".m.rule.master"), "{rules}");
    assert!(has("underride", ".m.rule.message"), "{rules}");
    t.stop().await;
}

#[tokio::test]
async fn a_default_push_rule_can_be_turned_on() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let path = "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled";
    assert_eq!(
        t.http.get_ok(path, Some(&alice.token)).await["enabled"],
        false,
        "the master rule is off by default"
    );
    assert_eq!(
        t.http
            .json("PUT", path, Some(&alice.token), json!({ "enabled": true }))
            .await
            .0,
        200
    );
    assert_eq!(
        t.http.get_ok(path, Some(&alice.token)).await["enabled"],
        true
    );
    t.stop().await;
}

#[tokio::test]
async fn a_content_push_rule_can_be_added_changed_and_deleted() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let token = Some(alice.token.as_str());
    let rule = "/_matrix/client/v3/pushrules/global/content/coffee";
    let actions = format!("{rule}/actions");
    let added = json!({ "actions": ["notify"], "pattern": "coffee" });
    assert_eq!(t.http.json("PUT", rule, token, added).await.0, 200);
    assert_eq!(t.http.get_ok(rule, token).await["pattern"], "coffee");
    assert_eq!(
        t.http
            .json("PUT", &actions, token, json!({ "actions": [] }))
            .await
            .0,
        200
    );
    assert_eq!(t.http.get_ok(&actions, token).await["actions"], json!([]));
    assert_eq!(t.http.call("DELETE", rule, token, None).await.0, 200);
    assert_error(
        &t.http.call("GET", rule, token, None).await,
        404,
        "M_NOT_FOUND",
    );
    t.stop().await;
}

#[tokio::test]
async fn a_server_default_push_rule_cannot_be_deleted() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    assert_error(
        &t.http
            .call(
                "DELETE",
                "/_matrix/client/v3/pushrules/global/override/.m.rule.master",
                Some(&alice.token),
                None,
            )
            .await,
        400,
        "M_INVALID_PARAM",
    );
    t.stop().await;
}

#[tokio::test]
async fn a_room_push_rule_named_by_the_rooms_alias_is_the_rooms_rule() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let token = Some(alice.token.as_str());
    let room = t
        .http
        .create_room(&alice.token, json!({ "room_alias_name": "quiet" }))
        .await;
    let by_alias = "/_matrix/client/v3/pushrules/global/room/%23quiet:localhost";
    let by_id = format!(
        "/_matrix/client/v3/pushrules/global/room/{}",
        room.replace('!', "%21").replace(':', "%3A")
    );
    let (status, body) = t
        .http
        .json("PUT", by_alias, token, json!({ "actions": [] }))
        .await;
    assert_eq!(status, 200, "{body}");
    // The rule is the room's: found by the room ID, with the room ID as its rule ID.
    let rule = t.http.get_ok(&by_id, token).await;
    assert_eq!(rule["rule_id"], room.as_str(), "{rule}");
    assert_eq!(
        t.http.get_ok(by_alias, token).await["rule_id"],
        room.as_str()
    );
    assert_eq!(
        t.http.get_ok(&format!("{by_alias}/enabled"), token).await["enabled"],
        true
    );
    // An alias nobody has names no room.
    let unknown = t
        .http
        .json(
            "PUT",
            "/_matrix/client/v3/pushrules/global/room/%23nowhere:localhost",
            token,
            json!({ "actions": [] }),
        )
        .await;
    assert!(unknown.0 == 400 || unknown.0 == 404, "{unknown:?}");
    assert_eq!(t.http.call("DELETE", by_alias, token, None).await.0, 200);
    assert_error(
        &t.http.call("GET", &by_id, token, None).await,
        404,
        "M_NOT_FOUND",
    );
    t.stop().await;
}

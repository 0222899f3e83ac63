//! Rooms with raw HTTP: what the server advertises (versions, capabilities, well-known), room
//! versions, what `/createRoom` applies, aliases, the public room directory, `/context`,
//! `/members`, fetching one event, unbanning, and the hierarchy of a space.

use crate::common;

use common::{Account, Http, TestServer, assert_error, http::bodies};
use serde_json::json;

#[tokio::test]
async fn the_server_advertises_the_spec_versions_it_speaks() {
    let t = TestServer::start().await;
    let versions = t.http.get_ok("/_matrix/client/versions", None).await;
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .contains(&json!("v1.11")),
        "{versions}"
    );
    t.stop().await;
}

#[tokio::test]
async fn capabilities_name_room_version_12_the_default() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let caps = t
        .http
        .get_ok("/_matrix/client/v3/capabilities", Some(&alice.token))
        .await;
    assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "12");
    t.stop().await;
}

#[tokio::test]
async fn well_known_names_the_homeserver() {
    let t = TestServer::start().await;
    let wk = t.http.get_ok("/.well-known/matrix/client", None).await;
    assert!(wk["m.homeserver"]["base_url"].is_string(), "{wk}");
    t.stop().await;
}

#[tokio::test]
async fn every_supported_room_version_makes_a_working_room() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    for v in 1..=12 {
        let v = v.to_string();
        let id = t
            .http
            .create_room(
                &alice.token,
                json!({ "room_version": v, "name": format!("v{v}") }),
            )
            .await;
        let create = t
            .http
            .get_ok(
                &format!("/_matrix/client/v3/rooms/{id}/state/m.room.create/"),
                Some(&alice.token),
            )
            .await;
        assert_eq!(create["room_version"], v);
        let kept = t.http.send_text(&alice.token, &id, "works").await;
        let gone = t.http.send_text(&alice.token, &id, "redact me").await;
        let (status, res) = t
            .http
            .json(
                "PUT",
                &format!(
                    "/_matrix/client/v3/rooms/{id}/redact/{}/r{v}",
                    common::http::urlencode(&gone)
                ),
                Some(&alice.token),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "v{v}: {res}");
        let page = t
            .http
            .get_ok(
                &format!("/_matrix/client/v3/rooms/{id}/messages?dir=b&limit=5"),
                Some(&alice.token),
            )
            .await;
        let chunk = page["chunk"].as_array().unwrap();
        let body_of = |id: &str| {
            chunk
                .iter()
                .find(|e| e["event_id"] == id)
                .map(|e| e["content"]["body"].clone())
        };
        assert_eq!(body_of(&kept), Some(json!("works")), "v{v}");
        assert_eq!(
            body_of(&gone),
            Some(serde_json::Value::Null),
            "v{v}: redacted"
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn an_unsupported_room_version_is_refused() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    assert_error(
        &t.http
            .json(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&alice.token),
                json!({ "room_version": "13" }),
            )
            .await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    t.stop().await;
}

/// Alice's public room "Alumni" ("old friends"), alias `#alumni:localhost`, published in the
/// directory, world-readable by its initial state, and messages need power level 10. Returns
/// its ID.
async fn alumni(http: &Http, alice: &Account) -> String {
    http.create_room(&alice.token, json!({
        "visibility": "public", "preset": "public_chat", "room_alias_name": "alumni", "name": "Alumni", "topic": "old friends",
        "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "world_readable" } }],
        "power_level_content_override": { "events_default": 10 },
    }))
    .await
}

#[tokio::test]
async fn an_alias_given_at_creation_resolves_to_the_room() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let room = alumni(&t.http, &alice).await;
    let alias = t
        .http
        .get_ok(
            "/_matrix/client/v3/directory/room/%23alumni:localhost",
            None,
        )
        .await;
    assert_eq!(alias["room_id"], room);
    t.stop().await;
}

#[tokio::test]
async fn initial_state_and_power_levels_given_at_creation_apply() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let room = alumni(&t.http, &alice).await;
    let hv = t
        .http
        .get_ok(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(
        hv["history_visibility"], "world_readable",
        "initial_state overrides the preset"
    );
    let pl = t
        .http
        .get_ok(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(pl["events_default"], 10);
    t.stop().await;
}

#[tokio::test]
async fn a_public_room_is_listed_in_the_directory() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let room = alumni(&t.http, &alice).await;
    let dir = t.http.get_ok("/_matrix/client/v3/publicRooms", None).await;
    let entry = &dir["chunk"][0];
    assert_eq!(
        (
            entry["room_id"].as_str(),
            entry["name"].as_str(),
            entry["topic"].as_str()
        ),
        (Some(room.as_str()), Some("Alumni"), Some("old friends"))
    );
    assert_eq!(entry["canonical_alias"], "#alumni:localhost");
    t.stop().await;
}

#[tokio::test]
async fn the_directory_finds_rooms_by_a_search_term() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    alumni(&t.http, &alice).await;
    for (term, found) in [("friends", 1), ("zzz", 0)] {
        let (status, res) = t
            .http
            .json(
                "POST",
                "/_matrix/client/v3/publicRooms",
                Some(&bob.token),
                json!({ "filter": { "generic_search_term": term } }),
            )
            .await;
        assert_eq!(status, 200, "{res}");
        assert_eq!(
            res["chunk"].as_array().unwrap().len(),
            found,
            "{term}: {res}"
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn a_taken_alias_is_refused() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    alumni(&t.http, &alice).await;
    assert_error(
        &t.http
            .json(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&bob.token),
                json!({ "room_alias_name": "alumni" }),
            )
            .await,
        400,
        "M_ROOM_IN_USE",
    );
    t.stop().await;
}

#[tokio::test]
async fn joining_by_alias_joins_its_room() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let room = alumni(&t.http, &alice).await;
    let (status, j) = t.http.join(&bob.token, "%23alumni:localhost").await;
    assert_eq!((status, j["room_id"].as_str()), (200, Some(room.as_str())));
    t.stop().await;
}

#[tokio::test]
async fn only_its_creator_removes_an_alias() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let room = alumni(&t.http, &alice).await;
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
    let path = "/_matrix/client/v3/directory/room/%23old-friends:localhost";
    assert_eq!(
        t.http
            .json("PUT", path, Some(&alice.token), json!({ "room_id": room }))
            .await
            .0,
        200
    );
    assert_error(
        &t.http.call("DELETE", path, Some(&bob.token), None).await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        t.http.get_ok(path, None).await["room_id"],
        room,
        "the refused delete changed nothing"
    );
    assert_eq!(
        t.http
            .call("DELETE", path, Some(&alice.token), None)
            .await
            .0,
        200
    );
    assert_error(
        &t.http.call("GET", path, None, None).await,
        404,
        "M_NOT_FOUND",
    );
    t.stop().await;
}

#[tokio::test]
async fn the_canonical_alias_must_point_to_the_room() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let room = alumni(&t.http, &alice).await;
    assert_error(
        &t.http
            .json(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias/"),
                Some(&alice.token),
                json!({ "alias": "#nowhere:localhost" }),
            )
            .await,
        400,
        "M_BAD_ALIAS",
    );
    t.stop().await;
}

/// Alice's room with bob joined and seven messages `c0`..`c6` from alice. Returns the room and
/// the messages' event IDs.
async fn room_with_messages(http: &Http, alice: &Account, bob: &Account) -> (String, Vec<String>) {
    let room = http
        .create_room(&alice.token, json!({ "preset": "public_chat" }))
        .await;
    assert_eq!(http.join(&bob.token, &room).await.0, 200);
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(http.send_text(&alice.token, &room, &format!("c{i}")).await);
    }
    (room, ids)
}

#[tokio::test]
async fn context_returns_the_events_around_one() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let (room, ids) = room_with_messages(&t.http, &alice, &bob).await;
    let ctx = t
        .http
        .get_ok(
            &format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=4", ids[3]),
            Some(&bob.token),
        )
        .await;
    assert_eq!(ctx["event"]["content"]["body"], "c3");
    assert_eq!(
        (bodies(&ctx["events_before"]), bodies(&ctx["events_after"])),
        (
            vec!["c2".to_owned(), "c1".into()],
            vec!["c4".to_owned(), "c5".into()]
        )
    );
    assert!(
        ctx["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create"),
        "{ctx}"
    );
    t.stop().await;
}

#[tokio::test]
async fn members_can_be_filtered_by_membership_and_read_as_they_were() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let (room, _) = room_with_messages(&t.http, &alice, &bob).await;
    let count = |query: &'static str, token: &str| {
        let http = &t.http;
        let path = format!("/_matrix/client/v3/rooms/{room}/members?{query}");
        let token = token.to_owned();
        async move {
            http.get_ok(&path, Some(&token)).await["chunk"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(count("membership=join", &bob.token).await, 2);
    let at = t.http.sync(&alice.token, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(moderate(&t.http, &alice, "kick", &room, &bob).await.0, 200);
    assert_eq!(count("not_membership=leave", &alice.token).await, 1);
    let path = format!("/_matrix/client/v3/rooms/{room}/members?at={at}&membership=join");
    assert_eq!(
        t.http.get_ok(&path, Some(&alice.token)).await["chunk"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "membership as it was at the token"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_event_can_be_fetched_by_its_id() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let (room, ids) = room_with_messages(&t.http, &alice, &bob).await;
    let ev = t
        .http
        .get_ok(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", ids[0]),
            Some(&alice.token),
        )
        .await;
    assert_eq!(ev["content"]["body"], "c0");
    assert_eq!(ev["room_id"], room);
    assert_error(
        &t.http
            .call(
                "GET",
                &format!("/_matrix/client/v3/rooms/{room}/event/$nope"),
                Some(&alice.token),
                None,
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    t.stop().await;
}

/// Alice's `action` (kick, ban, unban) on bob in `room`.
async fn moderate(
    http: &Http,
    alice: &Account,
    action: &str,
    room: &str,
    bob: &Account,
) -> (u16, serde_json::Value) {
    http.json(
        "POST",
        &format!("/_matrix/client/v3/rooms/{room}/{action}"),
        Some(&alice.token),
        json!({ "user_id": bob.id }),
    )
    .await
}

#[tokio::test]
async fn unbanning_someone_who_is_not_banned_is_refused() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let (room, _) = room_with_messages(&t.http, &alice, &bob).await;
    assert_eq!(moderate(&t.http, &alice, "kick", &room, &bob).await.0, 200);
    assert_error(
        &moderate(&t.http, &alice, "unban", &room, &bob).await,
        403,
        "M_FORBIDDEN",
    );
    t.stop().await;
}

#[tokio::test]
async fn an_unbanned_user_may_join_again() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let (room, _) = room_with_messages(&t.http, &alice, &bob).await;
    assert_eq!(moderate(&t.http, &alice, "ban", &room, &bob).await.0, 200);
    assert_error(&t.http.join(&bob.token, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(moderate(&t.http, &alice, "unban", &room, &bob).await.0, 200);
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
    t.stop().await;
}

#[tokio::test]
async fn a_rooms_aliases_are_listed_for_those_who_may_read_it() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let eve = t.http.register("eve").await;
    let room = t
        .http
        .create_room(
            &alice.token,
            json!({ "preset": "private_chat", "room_alias_name": "circle" }),
        )
        .await;
    let (status, res) = t
        .http
        .json(
            "PUT",
            "/_matrix/client/v3/directory/room/%23circle-2:localhost",
            Some(&alice.token),
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let path = format!("/_matrix/client/v3/rooms/{room}/aliases");
    let got = t.http.get_ok(&path, Some(&alice.token)).await;
    let mut aliases: Vec<&str> = got["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    aliases.sort();
    assert_eq!(aliases, ["#circle-2:localhost", "#circle:localhost"]);
    let got = t.http.call("GET", &path, Some(&eve.token), None).await;
    assert_error(&got, 403, "M_FORBIDDEN");
    t.stop().await;
}

#[tokio::test]
async fn a_room_summary_previews_rooms_one_could_join_and_hides_the_others() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let public = t
        .http
        .create_room(
            &alice.token,
            json!({
                "preset": "public_chat", "name": "Open circle", "topic": "all welcome",
                "room_alias_name": "open",
            }),
        )
        .await;
    let private = t
        .http
        .create_room(
            &alice.token,
            json!({ "preset": "private_chat", "name": "Inner" }),
        )
        .await;

    // By alias, before joining: what a "join this room?" preview shows.
    let summary = t
        .http
        .get_ok(
            "/_matrix/client/v1/room_summary/%23open:localhost",
            Some(&bob.token),
        )
        .await;
    assert_eq!(summary["room_id"], public.as_str());
    assert_eq!(summary["name"], "Open circle");
    assert_eq!(summary["topic"], "all welcome");
    assert_eq!(summary["canonical_alias"], "#open:localhost");
    // Absent means public, as the spec says.
    assert!(
        summary.get("join_rule").is_none_or(|j| j == "public"),
        "{summary}"
    );
    assert_eq!(summary["num_joined_members"], 1);
    assert_eq!(summary["room_version"], "12");
    assert!(
        summary
            .get("membership")
            .is_none_or(|m| m.is_null() || m == "leave")
    );
    // Without an access token too, for public rooms.
    let anonymous = t
        .http
        .get_ok(&format!("/_matrix/client/v1/room_summary/{public}"), None)
        .await;
    assert_eq!(anonymous["name"], "Open circle");

    // A private room is as unknown to Bob as a room that does not exist...
    let got = t
        .http
        .call(
            "GET",
            &format!("/_matrix/client/v1/room_summary/{private}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_error(&got, 404, "M_NOT_FOUND");
    // ...until he is invited.
    let (status, _) = t
        .http
        .json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{private}/invite"),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await;
    assert_eq!(status, 200);
    let summary = t
        .http
        .get_ok(
            &format!("/_matrix/client/v1/room_summary/{private}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(summary["name"], "Inner");
    assert_eq!(summary["membership"], "invite");
    assert_eq!(summary["join_rule"], "invite");
    assert_eq!(summary["encryption"], "m.megolm.v1.aes-sha2");
    t.stop().await;
}

#[tokio::test]
async fn reports_reach_the_admins_and_reveal_nothing() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let eve = t.http.register("eve").await;
    let room = t
        .http
        .create_room(&alice.token, json!({ "preset": "public_chat" }))
        .await;
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
    let rude = t.http.send_text(&bob.token, &room, "something rude").await;

    let (status, res) = t
        .http
        .json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/report/{rude}"),
            Some(&alice.token),
            json!({ "reason": "rude" }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let (status, res) = t
        .http
        .json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/report"),
            Some(&alice.token),
            json!({ "reason": "the whole room is rude" }),
        )
        .await;
    assert_eq!(status, 200, "{res}");

    // Eve is not in the room: the event is "not found" to her, not "forbidden".
    let got = t
        .http
        .json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/report/{rude}"),
            Some(&eve.token),
            json!({ "reason": "?" }),
        )
        .await;
    assert_error(&got, 404, "M_NOT_FOUND");
    let got = t
        .http
        .json(
            "POST",
            "/_matrix/client/v3/rooms/!nowhere:localhost/report",
            Some(&eve.token),
            json!({ "reason": "?" }),
        )
        .await;
    assert_error(&got, 404, "M_NOT_FOUND");

    let reports = t.server.services().reports.list(10).unwrap();
    assert_eq!(reports.len(), 2);
    let (_, room_report) = &reports[0];
    assert_eq!(
        room_report.reason.as_deref(),
        Some("the whole room is rude")
    );
    assert!(room_report.event_id.is_none());
    let (_, event_report) = &reports[1];
    assert_eq!(event_report.event_id.as_ref().unwrap().as_str(), rude);
    assert_eq!(event_report.reporter, alice.id);
    t.stop().await;
}

#[tokio::test]
async fn a_space_lists_the_rooms_a_member_may_see_breadth_first() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let create = |name: &str, preset: &str, space: bool| {
        let mut body = json!({ "name": name, "preset": preset });
        if space {
            body["creation_content"] = json!({ "type": "m.space" });
        }
        let (http, token) = (&t.http, alice.token.clone());
        async move { http.create_room(&token, body).await }
    };
    let space = create("Alumni", "public_chat", true).await;
    let coffee = create("Coffee", "public_chat", false).await;
    let board = create("Board", "private_chat", false).await;
    let berlin = create("Berlin", "public_chat", true).await;
    let meetups = create("Berlin meetups", "public_chat", false).await;
    let gone = create("Gone", "public_chat", false).await;
    t.http
        .add_space_child(
            &alice.token,
            &space,
            &coffee,
            json!({ "via": ["localhost"], "order": "b", "suggested": true }),
        )
        .await;
    t.http
        .add_space_child(
            &alice.token,
            &space,
            &board,
            json!({ "via": ["localhost"], "order": "a" }),
        )
        .await;
    t.http
        .add_space_child(
            &alice.token,
            &space,
            &berlin,
            json!({ "via": ["localhost"] }),
        )
        .await;
    t.http
        .add_space_child(&alice.token, &space, &gone, json!({}))
        .await; // no `via`: not a child any more
    t.http
        .add_space_child(
            &alice.token,
            &berlin,
            &meetups,
            json!({ "via": ["localhost"] }),
        )
        .await;

    let hierarchy = |who: &Account, room: &str, query: &str| {
        let (http, token) = (&t.http, who.token.clone());
        let path = format!(
            "/_matrix/client/v1/rooms/{}/hierarchy{query}",
            common::http::urlencode(room)
        );
        async move { http.call("GET", &path, Some(&token), None).await }
    };
    let ids = |res: &serde_json::Value| -> Vec<String> {
        res["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["room_id"].as_str().unwrap().to_owned())
            .collect()
    };

    // Bob does not see the private board; the rest comes breadth first, in the spec's order.
    let (status, res) = hierarchy(&bob, &space, "").await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(
        ids(&res),
        [
            space.as_str(),
            coffee.as_str(),
            berlin.as_str(),
            meetups.as_str()
        ],
        "{res}"
    );
    let root = &res["rooms"][0];
    assert_eq!(root["room_type"], "m.space");
    assert_eq!(root["name"], "Alumni");
    assert_eq!(
        root["children_state"].as_array().map(Vec::len),
        Some(3),
        "{root}"
    );
    assert_eq!(
        root["children_state"][0]["state_key"],
        board.as_str(),
        "{root}"
    );
    assert_eq!(res["rooms"][1]["name"], "Coffee");
    // Alice, in every room, sees the board too.
    let (_, res) = hierarchy(&alice, &space, "").await;
    assert_eq!(
        ids(&res),
        [
            space.as_str(),
            board.as_str(),
            coffee.as_str(),
            berlin.as_str(),
            meetups.as_str()
        ],
        "{res}"
    );
    // Suggested rooms only; one level only.
    let (_, res) = hierarchy(&bob, &space, "?suggested_only=true").await;
    assert_eq!(ids(&res), [space.as_str(), coffee.as_str()], "{res}");
    let (_, res) = hierarchy(&bob, &space, "?max_depth=1").await;
    assert_eq!(
        ids(&res),
        [space.as_str(), coffee.as_str(), berlin.as_str()],
        "{res}"
    );
    // Pages.
    let (_, first) = hierarchy(&bob, &space, "?limit=2").await;
    assert_eq!(ids(&first), [space.as_str(), coffee.as_str()], "{first}");
    let next = first["next_batch"].as_str().expect("next_batch").to_owned();
    let (_, rest) = hierarchy(&bob, &space, &format!("?limit=2&from={next}")).await;
    assert_eq!(ids(&rest), [berlin.as_str(), meetups.as_str()], "{rest}");
    assert!(rest.get("next_batch").is_none(), "{rest}");
    // A private room Bob is not in, and a room that does not exist.
    let (status, res) = hierarchy(&bob, &board, "").await;
    assert_eq!(
        (status, res["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{res}"
    );
    let (status, res) = hierarchy(&bob, "!nothing:localhost", "").await;
    assert_eq!(
        (status, res["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{res}"
    );
    t.stop().await;
}

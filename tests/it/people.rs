//! Finding people and seeing who is around: the user directory (`/user_directory/search`)
//! and presence (`/presence`, `presence` in `/sync`, `set_presence`).

use crate::common;

use common::{Account, TestServer, assert_error};
use serde_json::{Value, json};

async fn find(t: &TestServer, who: &Account, term: &str, limit: u64) -> Value {
    let (status, res) = t
        .http
        .json(
            "POST",
            "/_matrix/client/v3/user_directory/search",
            Some(&who.token),
            json!({ "search_term": term, "limit": limit }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    res
}

fn ids(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn set_name(t: &TestServer, who: &Account, name: &str) {
    let (status, res) = t
        .http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/profile/{}/displayname", who.id),
            Some(&who.token),
            json!({ "displayname": name }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
}

#[tokio::test]
async fn people_are_found_by_name_where_they_can_be_seen() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let carol = t.http.register("carol").await;
    let dave = t.http.register("dave").await;
    set_name(&t, &carol, "Carol Tanaka").await;
    set_name(&t, &dave, "Dave Tanaka").await;

    // Nobody shares a room yet and no room is public: Alice finds nobody.
    assert!(ids(&find(&t, &alice, "tanaka", 10).await).is_empty());

    // Carol is in a public room; Dave shares a private room with Bob only.
    let public = t
        .http
        .create_room(&bob.token, json!({ "preset": "public_chat" }))
        .await;
    assert_eq!(t.http.join(&carol.token, &public).await.0, 200);
    let private = t
        .http
        .create_room(
            &bob.token,
            json!({ "preset": "private_chat", "invite": [dave.id] }),
        )
        .await;
    assert_eq!(t.http.join(&dave.token, &private).await.0, 200);

    let found = find(&t, &alice, "tanaka", 10).await;
    assert_eq!(ids(&found), [carol.id.as_str()], "{found}");
    assert_eq!(found["results"][0]["display_name"], "Carol Tanaka");
    assert_eq!(found["limited"], false);

    // Bob shares a room with both; by the start of a word, of the name or of the user ID.
    let mut both = ids(&find(&t, &bob, "tan", 10).await);
    both.sort();
    assert_eq!(both, [carol.id.as_str(), dave.id.as_str()]);
    assert_eq!(ids(&find(&t, &bob, "dav", 10).await), [dave.id.as_str()]);
    assert_eq!(
        ids(&find(&t, &bob, "@carol", 10).await),
        [carol.id.as_str()]
    );
    assert!(
        ids(&find(&t, &bob, "naka", 10).await).is_empty(),
        "not the middle of a word"
    );

    // One at a time: the answer says there are more.
    let one = find(&t, &bob, "tanaka", 1).await;
    assert_eq!(ids(&one).len(), 1);
    assert_eq!(one["limited"], true);

    // A renamed user is found by the new name.
    set_name(&t, &carol, "Carol Suzuki").await;
    assert_eq!(
        ids(&find(&t, &alice, "suzuki", 10).await),
        [carol.id.as_str()]
    );
    t.stop().await;
}

#[tokio::test]
async fn a_deactivated_account_is_not_found() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let erin = t.http.register("erin").await;
    let room = t
        .http
        .create_room(&alice.token, json!({ "preset": "public_chat" }))
        .await;
    assert_eq!(t.http.join(&erin.token, &room).await.0, 200);
    assert_eq!(ids(&find(&t, &alice, "erin", 10).await), [erin.id.as_str()]);
    let (status, res) = t
        .http
        .json(
            "POST",
            "/_matrix/client/v3/account/deactivate",
            Some(&erin.token),
            json!({ "auth": common::http::password_auth(erin.id.as_str(), &common::password("erin"), None) }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert!(ids(&find(&t, &alice, "erin", 10).await).is_empty());
    t.stop().await;
}

async fn presence_of(t: &TestServer, asker: &Account, of: &Account) -> (u16, Value) {
    t.http
        .call(
            "GET",
            &format!("/_matrix/client/v3/presence/{}/status", of.id),
            Some(&asker.token),
            None,
        )
        .await
}

async fn set_presence(t: &TestServer, who: &Account, body: Value) -> (u16, Value) {
    t.http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/presence/{}/status", who.id),
            Some(&who.token),
            body,
        )
        .await
}

#[tokio::test]
async fn presence_is_shared_with_people_in_the_same_rooms() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let stranger = t.http.register("stranger").await;
    let room = t
        .http
        .create_room(
            &alice.token,
            json!({ "preset": "private_chat", "invite": [bob.id] }),
        )
        .await;
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
    let since = common::http::next_batch(&t.http.sync(&bob.token, "set_presence=offline").await);

    let (status, _) = set_presence(
        &t,
        &alice,
        json!({ "presence": "unavailable", "status_msg": "hiking until Sunday" }),
    )
    .await;
    assert_eq!(status, 200);

    let (status, got) = presence_of(&t, &bob, &alice).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["presence"], "unavailable");
    assert_eq!(got["status_msg"], "hiking until Sunday");

    // Bob's sync brings Alice's presence.
    let sync = t
        .http
        .sync(&bob.token, &format!("since={since}&set_presence=offline"))
        .await;
    let events = sync["presence"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let alices = events
        .iter()
        .find(|e| e["sender"] == alice.id.as_str())
        .unwrap_or_else(|| panic!("no presence of Alice in {sync}"));
    assert_eq!(alices["type"], "m.presence");
    assert_eq!(alices["content"]["status_msg"], "hiking until Sunday");

    // A syncing client is online.
    t.http.sync(&alice.token, "timeout=0").await;
    let (_, got) = presence_of(&t, &bob, &alice).await;
    assert_eq!(got["presence"], "online", "{got}");

    // Someone who shares no room with Alice learns nothing; nobody sets another's presence.
    let got = presence_of(&t, &stranger, &alice).await;
    assert_error(&got, 403, "M_FORBIDDEN");
    let got = t
        .http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/presence/{}/status", alice.id),
            Some(&bob.token),
            json!({ "presence": "offline" }),
        )
        .await;
    assert_error(&got, 403, "M_FORBIDDEN");
    t.stop().await;
}

#[tokio::test]
async fn with_presence_off_everyone_shows_offline() {
    let t = TestServer::start_with(|c| c.presence.enabled = false).await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let room = t
        .http
        .create_room(
            &alice.token,
            json!({ "preset": "private_chat", "invite": [bob.id] }),
        )
        .await;
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
    let (status, _) = set_presence(
        &t,
        &alice,
        json!({ "presence": "online", "status_msg": "hi" }),
    )
    .await;
    assert_eq!(status, 200, "setting is accepted, and changes nothing");
    t.http.sync(&alice.token, "timeout=0").await;
    let (status, got) = presence_of(&t, &bob, &alice).await;
    assert_eq!(status, 200);
    assert_eq!(got["presence"], "offline", "{got}");
    assert!(got.get("status_msg").is_none_or(Value::is_null));
    let sync = t.http.sync(&bob.token, "").await;
    assert!(
        sync["presence"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{sync}"
    );
    t.stop().await;
}

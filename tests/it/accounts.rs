//! Accounts as their owner sees them, with raw HTTP: profiles (and their mirror in the rooms'
//! member events), devices, user-interactive auth by password, password changes, logging out,
//! and deactivation.

use crate::common;

use common::{
    Account, Http, TestServer, assert_error,
    http::{password_auth, password_login},
};
use serde_json::json;

/// Alice sets her display name and avatar.
async fn set_profile(http: &Http, alice: &Account) {
    for (field, value) in [
        ("displayname", "Alice A."),
        ("avatar_url", "mxc://localhost/abc"),
    ] {
        let (status, res) = http
            .json(
                "PUT",
                &format!("/_matrix/client/v3/profile/{}/{field}", alice.id),
                Some(&alice.token),
                json!({ field: value }),
            )
            .await;
        assert_eq!(status, 200, "{field}: {res}");
    }
}

/// Alice logs in a second time, on her "laptop": a second device.
async fn laptop(http: &Http) -> Account {
    let mut login = password_login("alice", &common::password("alice"));
    login["initial_device_display_name"] = json!("laptop");
    http.login_with(login).await
}

/// Whether `token` still works (`/whoami`); asserts the spec's error when it does not.
async fn token_works(http: &Http, token: &str) -> bool {
    let res = http
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(token),
            None,
        )
        .await;
    if res.0 != 200 {
        assert_error(&res, 401, "M_UNKNOWN_TOKEN");
    }
    res.0 == 200
}

#[tokio::test]
async fn a_profile_change_shows_in_the_public_profile() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    set_profile(&t.http, &alice).await;
    let p = t
        .http
        .get_ok(&format!("/_matrix/client/v3/profile/{}", alice.id), None)
        .await;
    assert_eq!(
        (p["displayname"].as_str(), p["avatar_url"].as_str()),
        (Some("Alice A."), Some("mxc://localhost/abc"))
    );
    t.stop().await;
}

#[tokio::test]
async fn a_profile_change_is_mirrored_into_the_rooms_member_events() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let room = t.http.create_room(&alice.token, json!({})).await;
    set_profile(&t.http, &alice).await;
    let member = t
        .http
        .get_ok(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                alice.id
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(member["displayname"], "Alice A.");
    assert_eq!(member["avatar_url"], "mxc://localhost/abc");
    let jm = t
        .http
        .get_ok(
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(jm["joined"][&alice.id]["display_name"], "Alice A.");
    t.stop().await;
}

#[tokio::test]
async fn nobody_changes_another_users_profile() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    assert_error(
        &t.http
            .json(
                "PUT",
                "/_matrix/client/v3/profile/@bob:localhost/displayname",
                Some(&alice.token),
                json!({ "displayname": "x" }),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    t.stop().await;
}

#[tokio::test]
async fn a_second_login_is_a_second_device() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let second = laptop(&t.http).await;
    assert_ne!(second.device_id, alice.device_id);
    let devices = t
        .http
        .get_ok("/_matrix/client/v3/devices", Some(&alice.token))
        .await;
    let devices = devices["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    assert!(
        devices
            .iter()
            .any(|d| d["device_id"] == second.device_id.as_str() && d["display_name"] == "laptop"),
        "the initial display name: {devices:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_device_can_be_renamed() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let second = laptop(&t.http).await;
    let path = format!("/_matrix/client/v3/devices/{}", second.device_id);
    assert_eq!(
        t.http
            .json(
                "PUT",
                &path,
                Some(&alice.token),
                json!({ "display_name": "old laptop" })
            )
            .await
            .0,
        200
    );
    let d = t.http.get_ok(&path, Some(&alice.token)).await;
    assert_eq!(d["display_name"], "old laptop");
    t.stop().await;
}

/// Alice's first step to delete a device: the server asks for her password. Returns the
/// user-interactive auth session.
async fn delete_device_asks_for_the_password(http: &Http, alice: &Account, device: &str) -> String {
    let (status, uia) = http
        .json(
            "DELETE",
            &format!("/_matrix/client/v3/devices/{device}"),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 401, "{uia}");
    assert_eq!(uia["flows"][0]["stages"][0], "m.login.password");
    uia["session"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn deleting_a_device_needs_the_right_password() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let second = laptop(&t.http).await;
    let session = delete_device_asks_for_the_password(&t.http, &alice, &second.device_id).await;
    let wrong = json!({ "auth": password_auth("alice", "nope", Some(&session)) });
    assert_eq!(
        t.http
            .json(
                "DELETE",
                &format!("/_matrix/client/v3/devices/{}", second.device_id),
                Some(&alice.token),
                wrong
            )
            .await
            .0,
        401
    );
    assert!(
        token_works(&t.http, &second.token).await,
        "the refused delete changed nothing"
    );
    t.stop().await;
}

#[tokio::test]
async fn deleting_a_device_logs_it_out() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let second = laptop(&t.http).await;
    let session = delete_device_asks_for_the_password(&t.http, &alice, &second.device_id).await;
    let right =
        json!({ "auth": password_auth("alice", &common::password("alice"), Some(&session)) });
    assert_eq!(
        t.http
            .json(
                "DELETE",
                &format!("/_matrix/client/v3/devices/{}", second.device_id),
                Some(&alice.token),
                right
            )
            .await
            .0,
        200
    );
    assert!(!token_works(&t.http, &second.token).await);
    let devices = t
        .http
        .get_ok("/_matrix/client/v3/devices", Some(&alice.token))
        .await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn changing_the_password_retires_the_old_one() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let change = json!({ "new_password": "new secret", "auth": password_auth("alice", &common::password("alice"), None) });
    assert_eq!(
        t.http
            .json(
                "POST",
                "/_matrix/client/v3/account/password",
                Some(&alice.token),
                change
            )
            .await
            .0,
        200
    );
    assert_error(
        &t.http
            .json(
                "POST",
                "/_matrix/client/v3/login",
                None,
                password_login("alice", &common::password("alice")),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    // The new one works, with the full user ID too.
    t.http
        .login_with(password_login("@alice:localhost", "new secret"))
        .await;
    t.stop().await;
}

#[tokio::test]
async fn logging_out_ends_only_that_session() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let other = t.http.login("alice").await;
    assert_eq!(
        t.http
            .json(
                "POST",
                "/_matrix/client/v3/logout",
                Some(&other.token),
                json!({})
            )
            .await
            .0,
        200
    );
    assert!(!token_works(&t.http, &other.token).await);
    assert!(token_works(&t.http, &alice.token).await);
    t.stop().await;
}

#[tokio::test]
async fn logging_out_everywhere_ends_every_session() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let other = t.http.login("alice").await;
    assert_eq!(
        t.http
            .json(
                "POST",
                "/_matrix/client/v3/logout/all",
                Some(&alice.token),
                json!({})
            )
            .await
            .0,
        200
    );
    assert!(!token_works(&t.http, &alice.token).await);
    assert!(!token_works(&t.http, &other.token).await);
    t.stop().await;
}

/// Alice deactivates her account, confirming with her password.
async fn deactivate(http: &Http, alice: &Account) {
    let deact = json!({ "auth": password_auth("alice", &common::password("alice"), None) });
    assert_eq!(
        http.json(
            "POST",
            "/_matrix/client/v3/account/deactivate",
            Some(&alice.token),
            deact
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn a_deactivated_account_cannot_log_in() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    deactivate(&t.http, &alice).await;
    assert_error(
        &t.http
            .json(
                "POST",
                "/_matrix/client/v3/login",
                None,
                password_login("alice", &common::password("alice")),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    t.stop().await;
}

#[tokio::test]
async fn a_deactivated_account_leaves_its_rooms() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let room = t
        .http
        .create_room(&alice.token, json!({ "preset": "public_chat" }))
        .await;
    assert_eq!(t.http.join(&bob.token, &room).await.0, 200);
    deactivate(&t.http, &alice).await;
    let member = t
        .http
        .get_ok(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                alice.id
            ),
            Some(&bob.token),
        )
        .await;
    assert_eq!(member["membership"], "leave", "{member}");
    t.stop().await;
}

#[tokio::test]
async fn a_widget_checks_who_a_user_is_with_an_openid_token() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let (status, res) = t
        .http
        .json(
            "POST",
            &format!("/_matrix/client/v3/user/{}/openid/request_token", alice.id),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["token_type"], "Bearer");
    assert_eq!(res["matrix_server_name"], "localhost");
    assert!(res["expires_in"].as_u64().unwrap() > 0);
    let token = res["access_token"].as_str().unwrap();

    // The widget's server asks ours, without any other credential.
    let who = t
        .http
        .get_ok(
            &format!("/_matrix/federation/v1/openid/userinfo?access_token={token}"),
            None,
        )
        .await;
    assert_eq!(who["sub"], alice.id.as_str());
    let got = t
        .http
        .call(
            "GET",
            "/_matrix/federation/v1/openid/userinfo?access_token=forged",
            None,
            None,
        )
        .await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN");
    // Nor is an access token an OpenID token.
    let got = t
        .http
        .call(
            "GET",
            &format!(
                "/_matrix/federation/v1/openid/userinfo?access_token={}",
                alice.token
            ),
            None,
            None,
        )
        .await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN");
    // Bob cannot get a token in Alice's name.
    let got = t
        .http
        .json(
            "POST",
            &format!("/_matrix/client/v3/user/{}/openid/request_token", alice.id),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_error(&got, 403, "M_FORBIDDEN");
    t.stop().await;
}

#[tokio::test]
async fn settings_pages_find_no_third_party_ids_and_the_configured_turn_server() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let ids = t
        .http
        .get_ok("/_matrix/client/v3/account/3pid", Some(&alice.token))
        .await;
    assert_eq!(ids["threepids"], json!([]));
    let turn = t
        .http
        .get_ok("/_matrix/client/v3/voip/turnServer", Some(&alice.token))
        .await;
    assert_eq!(turn["uris"], json!([]), "no TURN server configured: {turn}");
    t.stop().await;

    let t = TestServer::start_with(|c| {
        c.turn.uris = vec!["turn:turn.example.org:3478?transport=udp".into()];
        c.turn.shared_secret = Some("coturn secret".into());
    })
    .await;
    let alice = t.http.register("alice").await;
    let turn = t
        .http
        .get_ok("/_matrix/client/v3/voip/turnServer", Some(&alice.token))
        .await;
    assert_eq!(turn["uris"][0], "turn:turn.example.org:3478?transport=udp");
    assert_eq!(turn["ttl"], 86400);
    let username = turn["username"].as_str().unwrap();
    assert!(username.ends_with(&format!(":{}", alice.id)), "{turn}");
    assert!(!turn["password"].as_str().unwrap().is_empty());
    t.stop().await;
}

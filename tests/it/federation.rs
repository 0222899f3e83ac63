//! The server's identity towards other servers (the Server-Server API's discovery endpoints):
//! the signing key it publishes is signed by itself and stays the same across restarts, and
//! it names its software. Rooms do not federate yet.

use crate::common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::TestServer;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet, verify_json},
};

#[tokio::test]
async fn the_published_signing_key_verifies_itself_and_survives_a_restart() {
    let t = TestServer::start().await;
    let keys = t.http.get_ok("/_matrix/key/v2/server", None).await;
    assert_eq!(keys["server_name"], "localhost", "{keys}");
    let verify = keys["verify_keys"].as_object().expect("verify_keys");
    assert_eq!(verify.len(), 1, "{keys}");
    let (key_id, key) = verify.iter().next().unwrap();
    assert!(key_id.starts_with("ed25519:"), "{key_id}");
    assert!(
        keys["old_verify_keys"]
            .as_object()
            .is_some_and(|o| o.is_empty())
    );
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let until = keys["valid_until_ts"].as_u64().expect("valid_until_ts");
    assert!(
        until > now_ms + 3_600_000,
        "valid for a while: {until} vs {now_ms}"
    );

    // Another server checks the answer with the key it holds.
    let public = Base64::parse(key["key"].as_str().expect("key")).expect("unpadded base64");
    let map = PublicKeyMap::from([(
        "localhost".to_owned(),
        PublicKeySet::from([(key_id.clone(), public)]),
    )]);
    let signed: CanonicalJsonObject = serde_json::from_value(keys.clone()).unwrap();
    verify_json(&map, &signed).expect("signed by the key it publishes");
    let mut forged = signed.clone();
    forged.insert(
        "valid_until_ts".into(),
        CanonicalJsonValue::Integer((until as u32).into()),
    );
    assert!(
        verify_json(&map, &forged).is_err(),
        "a changed answer fails"
    );

    // The key is the server's own, kept in its store.
    let t = t.restart().await;
    let again = t.http.get_ok("/_matrix/key/v2/server", None).await;
    assert_eq!(again["verify_keys"], keys["verify_keys"]);
    t.stop().await;
}

#[tokio::test]
async fn the_server_names_its_software() {
    let t = TestServer::start().await;
    let version = t.http.get_ok("/_matrix/federation/v1/version", None).await;
    assert_eq!(version["server"]["name"], "Tsunagu", "{version}");
    assert_eq!(version["server"]["version"], env!("CARGO_PKG_VERSION"));
    t.stop().await;
}

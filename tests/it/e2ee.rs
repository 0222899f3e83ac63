//! End-to-end encryption through an in-process Tsunagu with real matrix-sdk clients: encrypted
//! rooms by default, what the server stores, several devices, cross-signing, server-side key
//! backup with recovery on a fresh device, megolm rotation when a member leaves, and the
//! refusal / delivery rules of the key and to-device endpoints with raw HTTP.

use crate::common;

use common::{
    Http, TestServer, User, WAIT,
    client::{history, private_room, say, wait_membership},
    http::next_batch,
    stored,
};
use matrix_sdk::{
    Client,
    config::SyncSettings,
    ruma::{
        OwnedEventId, OwnedRoomId, RoomId,
        api::client::uiaa,
        events::room::{encrypted::OriginalSyncRoomEncryptedEvent, member::MembershipState},
        serde::Raw,
    },
};
use serde_json::{Value, json};
use tsunagu::{Server, store::StoredEvent};

/// Alice's private room with `members`: encrypted by the server's default.
async fn encrypted_room(alice: &User, members: &[&User]) -> OwnedRoomId {
    private_room(alice, "Secret alumni plans", members, &[]).await
}

/// Alice and bob, both with their device keys on the server, in alice's encrypted room.
async fn alice_and_bob(t: &TestServer) -> (User, User, OwnedRoomId) {
    let alice = common::user(t, "alice").await;
    let bob = common::user(t, "bob").await;
    let room_id = encrypted_room(&alice, &[&bob]).await;
    (alice, bob, room_id)
}

/// The stored event with this ID.
fn stored_event(server: &Server, room_id: &RoomId, event_id: &OwnedEventId) -> StoredEvent {
    stored(server, room_id)
        .into_iter()
        .find(|e| &e.event_id == event_id)
        .unwrap_or_else(|| panic!("{event_id} is stored"))
}

/// A stored event in the client (sync) format, as `Room::decrypt_event` takes it.
fn sync_format(ev: &StoredEvent) -> Raw<OriginalSyncRoomEncryptedEvent> {
    let pdu = serde_json::to_value(&ev.pdu).unwrap();
    let v = json!({
        "type": pdu["type"],
        "content": pdu["content"],
        "sender": pdu["sender"],
        "origin_server_ts": pdu["origin_server_ts"],
        "room_id": ev.room_id,
        "event_id": ev.event_id,
        "unsigned": {},
    });
    Raw::new(&v).unwrap().cast_unchecked()
}

/// Bootstraps cross-signing through user-interactive auth with the account password.
async fn bootstrap_cross_signing(client: &Client, name: &str) {
    let err = client
        .encryption()
        .bootstrap_cross_signing(None)
        .await
        .expect_err("uploading cross-signing keys first asks for user-interactive auth");
    let uiaa_info = err
        .as_uiaa_response()
        .unwrap_or_else(|| panic!("a user-interactive auth response, got {err:?}"))
        .clone();
    assert!(
        uiaa_info
            .flows
            .iter()
            .any(|f| f.stages.iter().any(|s| s.as_str() == "m.login.password")),
        "m.login.password is offered: {:?}",
        uiaa_info.flows
    );
    let mut password = uiaa::Password::new(
        client.user_id().unwrap().to_owned().into(),
        common::password(name),
    );
    password.session = uiaa_info.session.clone();
    client
        .encryption()
        .bootstrap_cross_signing(Some(uiaa::AuthData::Password(password)))
        .await
        .expect("cross-signing bootstrap completes with the password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_room_by_default_and_the_server_stores_only_ciphertext() {
    let t = TestServer::start().await;
    let (alice, bob, room_id) = alice_and_bob(&t).await;

    // The private_chat preset got m.room.encryption in the initial state (encryption_by_default).
    let http = &t.http;
    let state = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.encryption/"),
            Some(&alice.client.access_token().unwrap()),
            None,
        )
        .await;
    assert_eq!(state.0, 200, "m.room.encryption state: {}", state.1);
    assert_eq!(state.1["algorithm"], "m.megolm.v1.aes-sha2", "{}", state.1);
    let alice_room = alice.room(&room_id).await;
    assert!(
        alice_room
            .latest_encryption_state()
            .await
            .unwrap()
            .is_encrypted(),
        "alice's client sees the room as encrypted"
    );
    let bob_room = bob.room(&room_id).await;
    assert!(
        bob_room
            .latest_encryption_state()
            .await
            .unwrap()
            .is_encrypted(),
        "bob's client sees the room as encrypted"
    );

    // Both directions decrypt.
    let plaintexts = [
        "the reunion is at the old boathouse",
        "I'll bring the photos from 2009",
        "don't tell the committee yet",
    ];
    say(&alice_room, plaintexts[0]).await;
    bob.receives_encrypted(plaintexts[0]).await;
    say(&bob_room, plaintexts[1]).await;
    alice.receives_encrypted(plaintexts[1]).await;
    say(&alice_room, plaintexts[2]).await;
    bob.receives_encrypted(plaintexts[2]).await;

    // What the server stored: ciphertext only.
    let events = stored(&t.server, &room_id);
    assert!(
        events.iter().all(|e| e.kind() != "m.room.message"),
        "no m.room.message is stored in an encrypted room: {:?}",
        events.iter().map(|e| e.kind()).collect::<Vec<_>>()
    );
    let encrypted: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| e.kind() == "m.room.encrypted")
        .collect();
    assert!(
        encrypted.len() >= plaintexts.len(),
        "every message is stored as m.room.encrypted ({} found)",
        encrypted.len()
    );
    for e in &encrypted {
        assert_eq!(
            e.content()["algorithm"],
            "m.megolm.v1.aes-sha2",
            "{:?}",
            e.pdu
        );
        assert!(e.content()["ciphertext"].is_string(), "{:?}", e.pdu);
    }
    for e in &events {
        let text = serde_json::to_string(e).unwrap();
        for p in plaintexts {
            assert!(!text.contains(p), "plaintext {p:?} stored in {text}");
            // Words from the plaintexts must not leak either.
            assert!(!text.contains("boathouse"), "plaintext leaked in {text}");
        }
    }
    assert!(
        events.iter().any(|e| e.kind() == "m.room.encryption"),
        "m.room.encryption is part of the stored state"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_receives_and_decrypts_new_messages() {
    let t = TestServer::start().await;
    let (alice, bob, room_id) = alice_and_bob(&t).await;
    let alice_room = alice.room(&room_id).await;
    say(&alice_room, "before the second device").await;
    bob.receives_encrypted("before the second device").await;

    // Bob logs in on a second device.
    let bob2 = User::new(&t.url(), common::login(&t.url(), t.dir(), "bob").await).await;
    let bob2_device = bob2.client.device_id().unwrap().to_owned();
    assert_ne!(bob.client.device_id().unwrap(), bob2_device);

    // Alice's client learns about the new device (device_lists.changed in her sync), as a
    // user would see it in Bob's session list.
    common::eventually(
        WAIT,
        "alice's client to know bob's second device",
        || async {
            alice
                .client
                .encryption()
                .get_device(&bob.id(), &bob2_device)
                .await
                .ok()
                .flatten()
        },
    )
    .await;

    for body in ["after the second device", "and another one"] {
        say(&alice_room, body).await;
        let on1 = bob.receives_encrypted(body).await;
        let on2 = bob2.receives_encrypted(body).await;
        assert_eq!(on1.event_id, on2.event_id);
        assert_eq!(on2.room_id, room_id);
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_signing_identity_is_visible_to_others() {
    let t = TestServer::start().await;
    let (alice, bob, room_id) = alice_and_bob(&t).await;
    // They chat, so each client tracks the other's devices.
    let alice_room = alice.room(&room_id).await;
    say(&alice_room, "hi before cross-signing").await;
    bob.receives_encrypted("hi before cross-signing").await;

    let alice_id = alice.id();
    let alice_device = alice.client.device_id().unwrap().to_owned();
    common::eventually(WAIT, "bob's client to know alice's device", || async {
        bob.client
            .encryption()
            .get_device(&alice_id, &alice_device)
            .await
            .ok()
            .flatten()
    })
    .await;
    assert!(
        bob.client
            .encryption()
            .get_user_identity(&alice_id)
            .await
            .unwrap()
            .is_none(),
        "alice has no cross-signing identity yet"
    );

    bootstrap_cross_signing(&alice.client, "alice").await;
    let status = alice
        .client
        .encryption()
        .cross_signing_status()
        .await
        .expect("cross-signing status");
    assert!(
        status.has_master && status.has_self_signing && status.has_user_signing,
        "{status:?}"
    );
    let own = alice
        .client
        .encryption()
        .get_user_identity(&alice_id)
        .await
        .unwrap()
        .expect("alice's own identity");
    let master = own.master_key().get_first_key().expect("master key");

    // Bob's client is told (device_lists.changed) and re-queries: it sees Alice's identity with
    // the same master key, and her device signed by her self-signing key.
    let seen = common::eventually(WAIT, "bob's client to see alice's identity", || async {
        bob.client
            .encryption()
            .get_user_identity(&alice_id)
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(seen.master_key().get_first_key(), Some(master));
    common::eventually(
        WAIT,
        "bob's client to see alice's device as cross-signed by alice",
        || async {
            bob.client
                .encryption()
                .get_device(&alice_id, &alice_device)
                .await
                .ok()
                .flatten()
                .filter(|d| d.is_cross_signed_by_owner())
        },
    )
    .await;

    // A client that asks the server directly sees the same.
    let fetched = bob
        .client
        .encryption()
        .request_user_identity(&alice_id)
        .await
        .expect("keys query")
        .expect("identity on the server");
    assert_eq!(fetched.master_key().get_first_key(), Some(master));

    // The raw /keys/query carries all three public keys and the device's cross-signature.
    let http = &t.http;
    let q = http
        .json(
            "POST",
            "/_matrix/client/v3/keys/query",
            Some(&bob.client.access_token().unwrap()),
            json!({ "device_keys": { alice_id.as_str(): [] } }),
        )
        .await;
    assert_eq!(q.0, 200, "{}", q.1);
    assert!(q.1["master_keys"][alice_id.as_str()].is_object(), "{}", q.1);
    assert!(
        q.1["self_signing_keys"][alice_id.as_str()].is_object(),
        "{}",
        q.1
    );
    assert!(
        q.1["user_signing_keys"].get(alice_id.as_str()).is_none(),
        "another user's user-signing key is private: {}",
        q.1
    );
    let sigs = &q.1["device_keys"][alice_id.as_str()][alice_device.as_str()]["signatures"]
        [alice_id.as_str()];
    assert!(
        sigs.as_object().map(|s| s.len()).unwrap_or(0) >= 2,
        "alice's device carries its own and the self-signing signature: {sigs}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_backup_lets_a_fresh_device_read_history() {
    let t = TestServer::start().await;
    let (alice, bob, room_id) = alice_and_bob(&t).await;
    let alice_room = alice.room(&room_id).await;

    bootstrap_cross_signing(&alice.client, "alice").await;
    let recovery_key = alice
        .client
        .encryption()
        .recovery()
        .enable()
        .await
        .expect("recovery (secret storage + key backup) enabled");
    assert!(alice.client.encryption().backups().are_enabled().await);

    let sent = [
        "minutes of the first meeting",
        "budget: 300 for the hall",
        "bob volunteers for the music",
    ];
    for body in sent {
        say(&alice_room, body).await;
        bob.receives_encrypted(body).await;
    }
    alice
        .client
        .encryption()
        .backups()
        .wait_for_steady_state()
        .await
        .expect("room keys uploaded to the backup");

    // The server holds the backup with at least one room key.
    let http = &t.http;
    let version = http
        .call(
            "GET",
            "/_matrix/client/v3/room_keys/version",
            Some(&alice.client.access_token().unwrap()),
            None,
        )
        .await;
    assert_eq!(version.0, 200, "{}", version.1);
    assert_eq!(
        version.1["algorithm"],
        "m.megolm_backup.v1.curve25519-aes-sha2"
    );
    assert!(
        version.1["count"].as_u64().unwrap_or(0) >= 1,
        "backup holds the room keys: {}",
        version.1
    );

    // A fresh device (new client, new store) cannot read the history...
    let fresh = common::login(&t.url(), t.dir(), "alice").await;
    fresh.sync_once(SyncSettings::default()).await.unwrap();
    fresh
        .encryption()
        .wait_for_e2ee_initialization_tasks()
        .await;
    let fresh_room = fresh
        .get_room(&room_id)
        .expect("room known to the fresh device");
    let before = history(&fresh_room).await;
    assert_eq!(
        before.len(),
        sent.len(),
        "history before recovery: {before:?}"
    );
    assert!(
        before.iter().all(Option::is_none),
        "without the backup the history is unreadable: {before:?}"
    );

    // ...until it recovers with the recovery key and downloads the room's keys from the backup.
    fresh
        .encryption()
        .recovery()
        .recover(&recovery_key)
        .await
        .expect("recovery with the recovery key");
    assert!(fresh.encryption().backups().are_enabled().await);
    fresh
        .encryption()
        .backups()
        .download_room_keys_for_room(&room_id)
        .await
        .expect("room keys downloaded from the backup");
    let after = history(&fresh_room).await;
    assert_eq!(
        after,
        sent.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>(),
        "the fresh device reads the whole history"
    );

    // Recovering imported the cross-signing keys: the fresh device signed itself.
    let fresh_device = fresh.device_id().unwrap().to_owned();
    let alice_id = alice.id();
    common::eventually(
        WAIT,
        "alice's first device to see the fresh device as cross-signed",
        || async {
            alice
                .client
                .encryption()
                .get_device(&alice_id, &fresh_device)
                .await
                .ok()
                .flatten()
                .filter(|d| d.is_cross_signed_by_owner())
        },
    )
    .await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_rotates_when_a_member_leaves() {
    let t = TestServer::start().await;
    let alice = common::user(&t, "alice").await;
    let bob = common::user(&t, "bob").await;
    let carol = common::user(&t, "carol").await;
    let room_id = encrypted_room(&alice, &[&bob, &carol]).await;
    let alice_room = alice.room(&room_id).await;

    let before = say(&alice_room, "carol is still here").await;
    bob.receives_encrypted("carol is still here").await;
    let carol_got = carol.receives_encrypted("carol is still here").await;
    assert_eq!(carol_got.event_id, before);
    let old_session = stored_event(&t.server, &room_id, &before).content()["session_id"].clone();
    assert!(
        old_session.is_string(),
        "megolm session_id in the stored event"
    );

    carol
        .room(&room_id)
        .await
        .leave()
        .await
        .expect("carol leaves");
    wait_membership(&alice_room, &carol.id(), MembershipState::Leave).await;

    let after = say(&alice_room, "carol has left the building").await;
    bob.receives_encrypted("carol has left the building").await;
    let after_stored = stored_event(&t.server, &room_id, &after);
    assert_eq!(after_stored.kind(), "m.room.encrypted");
    let new_session = after_stored.content()["session_id"].clone();
    assert!(new_session.is_string());
    assert_ne!(
        new_session, old_session,
        "the megolm session rotated after carol left"
    );

    // Carol's client holds the old session's key but not the new one.
    let raw = sync_format(&after_stored);
    let carol_room = carol
        .client
        .get_room(&room_id)
        .expect("carol's client remembers the left room");
    let carol_try = carol_room.decrypt_event(&raw, None).await.unwrap();
    assert!(
        carol_try.kind.is_utd(),
        "carol cannot decrypt a message sent after she left: {:?}",
        carol_try.kind
    );
    let old_raw = sync_format(&stored_event(&t.server, &room_id, &before));
    let carol_old = carol_room.decrypt_event(&old_raw, None).await.unwrap();
    assert!(
        !carol_old.kind.is_utd(),
        "carol still reads the old message"
    );

    // Bob decrypts the same stored event.
    let bob_room = bob.room(&room_id).await;
    let bob_try = bob_room.decrypt_event(&raw, None).await.unwrap();
    assert!(!bob_try.kind.is_utd(), "bob decrypts: {:?}", bob_try.kind);
    let v: Value = bob_try.raw().deserialize_as().unwrap();
    assert_eq!(v["content"]["body"], "carol has left the building");
    assert!(
        carol.inbox.find("carol has left the building").is_none(),
        "carol's sync never delivered the plaintext"
    );
    t.stop().await;
}

/// Device keys for `user`/`device`, correctly self-signed with a fresh ed25519 key (so a
/// refusal can only be about whose keys they are). Returns the keys and the ed25519 public key.
fn device_keys(user: &str, device: &str) -> (Value, String) {
    device_keys_with(user, device, json!({}))
}

/// [`device_keys`] with more fields (signed with the rest).
fn device_keys_with(user: &str, device: &str, extra: Value) -> (Value, String) {
    use base64::Engine as _;
    use ruma::signatures::{Ed25519KeyPair, sign_json};
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let pair = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), device.to_owned()).unwrap();
    let ed = b64.encode(pair.public_key());
    let keys = json!({
        "user_id": user,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device}"): "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
            format!("ed25519:{device}"): ed,
        },
    });
    let mut keys = keys;
    for (k, v) in extra.as_object().unwrap() {
        keys[k] = v.clone();
    }
    let mut obj = match ruma::CanonicalJsonValue::try_from(keys).unwrap() {
        ruma::CanonicalJsonValue::Object(o) => o,
        _ => unreachable!(),
    };
    sign_json(user, &pair, &mut obj).unwrap();
    (serde_json::to_value(&obj).unwrap(), ed)
}

async fn query_devices(http: &Http, token: &str, user: &str) -> Value {
    let res = http
        .json(
            "POST",
            "/_matrix/client/v3/keys/query",
            Some(token),
            json!({ "device_keys": { user: [] } }),
        )
        .await;
    assert_eq!(res.0, 200, "keys/query: {}", res.1);
    res.1["device_keys"]
        .get(user)
        .cloned()
        .unwrap_or_else(|| json!({}))
}

/// An immediate `/sync` (timeout 0), from `since` when given.
async fn raw_sync(http: &Http, token: &str, since: Option<&str>) -> Value {
    match since {
        Some(s) => http.sync(token, &format!("timeout=0&since={s}")).await,
        None => http.sync(token, "timeout=0").await,
    }
}

fn to_device_events(sync: &Value) -> Vec<Value> {
    sync["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_endpoints_refuse_bad_input_and_to_device_delivery_rules() {
    let t = TestServer::start().await;
    let http = &t.http;
    let common::Account {
        token: alice_token,
        device_id: alice_device,
        ..
    } = http.register("alice").await;
    let common::Account {
        token: bob_token,
        device_id: bob_device,
        ..
    } = http.register("bob").await;
    let common::Account {
        token: alice2_token,
        device_id: alice2_device,
        ..
    } = http.login("alice").await;
    let (alice, bob) = ("@alice:localhost", "@bob:localhost");

    // Claiming keys of an unknown user: 200, and no keys.
    let claim = http
        .json(
            "POST",
            "/_matrix/client/v3/keys/claim",
            Some(&alice_token),
            json!({ "one_time_keys": { "@nobody:localhost": { "DEV": "signed_curve25519" } } }),
        )
        .await;
    assert_eq!(claim.0, 200, "{}", claim.1);
    let none = claim.1["one_time_keys"]
        .get("@nobody:localhost")
        .map(|u| {
            u.as_object().is_none_or(|m| {
                m.values()
                    .all(|d| d.as_object().is_none_or(|k| k.is_empty()))
            })
        })
        .unwrap_or(true);
    assert!(none, "no keys for an unknown user: {}", claim.1);

    // Device keys claiming to be another user's: refused, nothing stored.
    let upload = |token: String, body: Value| {
        let http = &http;
        async move {
            http.json("POST", "/_matrix/client/v3/keys/upload", Some(&token), body)
                .await
        }
    };
    let res = upload(
        alice_token.clone(),
        json!({ "device_keys": device_keys(bob, &alice_device).0 }),
    )
    .await;
    common::assert_error(&res, 400, "M_INVALID_PARAM");
    // ...or another device's.
    let res = upload(
        alice_token.clone(),
        json!({ "device_keys": device_keys(alice, &alice2_device).0 }),
    )
    .await;
    common::assert_error(&res, 400, "M_INVALID_PARAM");
    // ...or another user's other device.
    let res = upload(
        alice_token.clone(),
        json!({ "device_keys": device_keys(bob, &bob_device).0 }),
    )
    .await;
    common::assert_error(&res, 400, "M_INVALID_PARAM");
    let bob_devices = query_devices(http, &bob_token, bob).await;
    assert!(
        bob_devices.as_object().unwrap().is_empty(),
        "no device keys appeared for bob: {bob_devices}"
    );
    let alice_devices = query_devices(http, &bob_token, alice).await;
    assert!(
        alice_devices.as_object().unwrap().is_empty(),
        "no device keys appeared for alice: {alice_devices}"
    );

    // Malformed key objects: M_BAD_JSON.
    let res = upload(
        alice_token.clone(),
        json!({ "device_keys": { "user_id": 5 } }),
    )
    .await;
    common::assert_error(&res, 400, "M_BAD_JSON");
    let res = upload(alice_token.clone(), json!({ "one_time_keys": "lots" })).await;
    common::assert_error(&res, 400, "M_BAD_JSON");
    let alice_devices = query_devices(http, &bob_token, alice).await;
    assert!(
        alice_devices.as_object().unwrap().is_empty(),
        "{alice_devices}"
    );

    // The honest upload works (control), and a one-time key is handed out once.
    let (honest_keys, honest_ed) = device_keys(alice, &alice_device);
    let res = upload(
        alice_token.clone(),
        json!({
            "device_keys": honest_keys,
            "one_time_keys": {
                "signed_curve25519:AAAAAQ": {
                    "key": "zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs",
                    "signatures": { alice: { format!("ed25519:{alice_device}"): "sig" } }
                }
            }
        }),
    )
    .await;
    assert_eq!(res.0, 200, "{}", res.1);
    assert_eq!(
        res.1["one_time_key_counts"]["signed_curve25519"], 1,
        "{}",
        res.1
    );
    let alice_devices = query_devices(http, &bob_token, alice).await;
    assert_eq!(
        alice_devices[&alice_device]["keys"][format!("ed25519:{alice_device}")],
        honest_ed.as_str(),
        "{alice_devices}"
    );
    assert!(
        alice_devices.get(&alice2_device).is_none(),
        "{alice_devices}"
    );
    let claim_body = json!({ "one_time_keys": { alice: { &alice_device: "signed_curve25519" } } });
    let first = http
        .json(
            "POST",
            "/_matrix/client/v3/keys/claim",
            Some(&bob_token),
            claim_body.clone(),
        )
        .await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(
        first.1["one_time_keys"][alice][&alice_device]["signed_curve25519:AAAAAQ"]["key"],
        "zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs",
        "{}",
        first.1
    );
    let second = http
        .json(
            "POST",
            "/_matrix/client/v3/keys/claim",
            Some(&bob_token),
            claim_body,
        )
        .await;
    assert_eq!(second.0, 200, "{}", second.1);
    assert!(
        second.1["one_time_keys"][alice][&alice_device]
            .get("signed_curve25519:AAAAAQ")
            .is_none(),
        "a one-time key is claimed once: {}",
        second.1
    );
    let _ = alice2_token;

    // To-device: idempotent per transaction, in order, kept until acknowledged, even across a
    // restart.
    let s0 = raw_sync(http, &bob_token, None).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let send_to_device = |txn: &'static str, n: u32| {
        let http = &http;
        let token = alice_token.clone();
        let bob_device = bob_device.clone();
        async move {
            http.json(
                "PUT",
                &format!("/_matrix/client/v3/sendToDevice/org.example.ping/{txn}"),
                Some(&token),
                json!({ "messages": { bob: { bob_device: { "n": n } } } }),
            )
            .await
        }
    };
    for (txn, n) in [("t1", 1), ("t1", 1), ("t2", 2), ("t3", 3)] {
        let res = send_to_device(txn, n).await;
        assert_eq!(res.0, 200, "sendToDevice {txn}: {}", res.1);
    }
    let expect = |sync: &Value| {
        let evs = to_device_events(sync);
        let got: Vec<(String, String, Value)> = evs
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_owned(),
                    e["sender"].as_str().unwrap_or_default().to_owned(),
                    e["content"]["n"].clone(),
                )
            })
            .collect();
        let want: Vec<(String, String, Value)> = (1..=3)
            .map(|n| ("org.example.ping".to_owned(), alice.to_owned(), json!(n)))
            .collect();
        assert_eq!(got, want, "to-device events once each, in order: {sync}");
    };
    let first = raw_sync(http, &bob_token, Some(&s0)).await;
    expect(&first);
    let s1 = first["next_batch"].as_str().unwrap().to_owned();
    // Not acknowledged yet: syncing again from s0 returns them again.
    expect(&raw_sync(http, &bob_token, Some(&s0)).await);
    // Alice's devices got nothing.
    let alice_sync = raw_sync(http, &alice_token, None).await;
    assert!(to_device_events(&alice_sync).is_empty(), "{alice_sync}");

    // A restart before the acknowledgement keeps them.
    let t = t.restart().await;
    let http = &t.http;
    let again = raw_sync(http, &bob_token, Some(&s0)).await;
    expect(&again);
    let s1_again = again["next_batch"].as_str().unwrap().to_owned();

    // Syncing with the next token acknowledges them: they are gone.
    let acked = raw_sync(http, &bob_token, Some(&s1_again)).await;
    assert!(
        to_device_events(&acked).is_empty(),
        "acknowledged to-device events are not delivered again: {acked}"
    );
    let _ = s1;
    // A retried transaction after delivery is still not delivered again.
    let res = http
        .json(
            "PUT",
            "/_matrix/client/v3/sendToDevice/org.example.ping/t1",
            Some(&alice_token),
            json!({ "messages": { bob: { &bob_device: { "n": 1 } } } }),
        )
        .await;
    assert_eq!(res.0, 200, "{}", res.1);
    let next = acked["next_batch"].as_str().unwrap().to_owned();
    let later = raw_sync(http, &bob_token, Some(&next)).await;
    assert!(
        to_device_events(&later).is_empty(),
        "a retried transaction is not delivered twice: {later}"
    );
    t.stop().await;
}

/// A one-time or fallback key object as clients upload it (the server does not check it).
fn otk(key: &str, fallback: bool) -> Value {
    let mut k = json!({ "key": key, "signatures": { "@alice:localhost": { "ed25519:X": "sig" } } });
    if fallback {
        k["fallback"] = json!(true);
    }
    k
}

fn list_has(v: &Value, user: &str) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().any(|u| u.as_str() == Some(user)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_counts_fallback_keys_and_device_list_changes_in_sync() {
    let t = TestServer::start().await;
    let http = &t.http;
    let common::Account {
        token: alice_token,
        device_id: alice_device,
        ..
    } = http.register("alice").await;
    let bob_token = http.register("bob").await.token;
    let (alice, bob) = ("@alice:localhost", "@bob:localhost");

    // Alice's device uploads its keys, two one-time keys and a fallback key.
    let (keys, _) = device_keys(alice, &alice_device);
    let res = http
        .json(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(&alice_token),
            json!({
                "device_keys": keys,
                "one_time_keys": {
                    "signed_curve25519:AAAAAQ": otk("otk-one", false),
                    "signed_curve25519:AAAAAg": otk("otk-two", false),
                },
                "fallback_keys": { "signed_curve25519:AAAAAw": otk("the-fallback", true) },
            }),
        )
        .await;
    assert_eq!(res.0, 200, "{}", res.1);
    assert_eq!(
        res.1["one_time_key_counts"]["signed_curve25519"], 2,
        "{}",
        res.1
    );
    let a0 = raw_sync(http, &alice_token, None).await;
    assert_eq!(
        a0["device_one_time_keys_count"]["signed_curve25519"], 2,
        "{a0}"
    );
    assert_eq!(
        a0["device_unused_fallback_key_types"],
        json!(["signed_curve25519"]),
        "{a0}"
    );
    let a0_token = next_batch(&a0);

    // They share an encrypted room.
    let created = http
        .json(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice_token),
            json!({ "preset": "private_chat", "invite": [bob] }),
        )
        .await;
    assert_eq!(created.0, 200, "{}", created.1);
    let room_id = created.1["room_id"].as_str().unwrap().to_owned();
    let joined = http
        .json(
            "POST",
            &format!("/_matrix/client/v3/join/{room_id}"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    let b0 = next_batch(&raw_sync(http, &bob_token, None).await);

    // Alice logs in on a new device that uploads keys: Bob's sync and /keys/changes say so.
    let common::Account {
        token: alice2_token,
        device_id: alice2_device,
        ..
    } = http.login("alice").await;
    let (keys2, _) = device_keys(alice, &alice2_device);
    let res = http
        .json(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(&alice2_token),
            json!({ "device_keys": keys2 }),
        )
        .await;
    assert_eq!(res.0, 200, "{}", res.1);
    let b1 = common::eventually(WAIT, "alice in bob's device_lists.changed", || async {
        let s = raw_sync(http, &bob_token, Some(&b0)).await;
        list_has(&s["device_lists"]["changed"], alice).then_some(s)
    })
    .await;
    let changes = http
        .call(
            "GET",
            &format!(
                "/_matrix/client/v3/keys/changes?from={b0}&to={}",
                next_batch(&b1)
            ),
            Some(&bob_token),
            None,
        )
        .await;
    assert_eq!(changes.0, 200, "{}", changes.1);
    assert!(list_has(&changes.1["changed"], alice), "{}", changes.1);
    // Nothing changed after that.
    let b2 = raw_sync(http, &bob_token, Some(&next_batch(&b1))).await;
    assert!(
        !list_has(&b2["device_lists"]["changed"], alice),
        "a change is reported once: {b2}"
    );

    // Bob claims both one-time keys, then gets the fallback key.
    let claim = || async {
        let res = http
            .json(
                "POST",
                "/_matrix/client/v3/keys/claim",
                Some(&bob_token),
                json!({ "one_time_keys": { alice: { &alice_device: "signed_curve25519" } } }),
            )
            .await;
        assert_eq!(res.0, 200, "{}", res.1);
        let keys = res.1["one_time_keys"][alice][&alice_device]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(keys.len(), 1, "one key per claim: {}", res.1);
        keys.values().next().unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut got = vec![claim().await, claim().await];
    got.sort();
    assert_eq!(got, ["otk-one", "otk-two"]);
    assert_eq!(
        claim().await,
        "the-fallback",
        "fallback key once the one-time keys are gone"
    );
    assert_eq!(
        claim().await,
        "the-fallback",
        "the fallback key is handed out again"
    );

    // Alice's sync shows zero one-time keys (explicitly: matrix-sdk only replenishes when it
    // sees the count) and that the fallback key was used.
    let a1 = raw_sync(http, &alice_token, Some(&a0_token)).await;
    assert_eq!(
        a1["device_one_time_keys_count"]["signed_curve25519"], 0,
        "{a1}"
    );
    assert_eq!(a1["device_unused_fallback_key_types"], json!([]), "{a1}");
    // A new fallback key makes it unused again.
    let res = http
        .json(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(&alice_token),
            json!({ "fallback_keys": { "signed_curve25519:AAAABA": otk("new-fallback", true) } }),
        )
        .await;
    assert_eq!(res.0, 200, "{}", res.1);
    let a2 = raw_sync(http, &alice_token, Some(&next_batch(&a1))).await;
    assert_eq!(
        a2["device_unused_fallback_key_types"],
        json!(["signed_curve25519"]),
        "{a2}"
    );
    assert_eq!(claim().await, "new-fallback");

    // Bob leaves their only shared encrypted room: Alice's sync lists him in device_lists.left.
    let a3_token = next_batch(&raw_sync(http, &alice_token, Some(&next_batch(&a2))).await);
    let left = http
        .json(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/leave"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    assert_eq!(left.0, 200, "{}", left.1);
    let a4 = common::eventually(WAIT, "bob in alice's device_lists.left", || async {
        let s = raw_sync(http, &alice_token, Some(&a3_token)).await;
        list_has(&s["device_lists"]["left"], bob).then_some(s)
    })
    .await;
    assert!(!list_has(&a4["device_lists"]["changed"], bob), "{a4}");
    let changes = http
        .call(
            "GET",
            &format!(
                "/_matrix/client/v3/keys/changes?from={a3_token}&to={}",
                next_batch(&a4)
            ),
            Some(&alice_token),
            None,
        )
        .await;
    assert_eq!(changes.0, 200, "{}", changes.1);
    assert!(list_has(&changes.1["left"], bob), "{}", changes.1);

    // The /keys/upload answer of a device without one-time keys says 0 too (same reason).
    let res = http
        .json(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(&alice2_token),
            json!({}),
        )
        .await;
    assert_eq!(res.0, 200, "{}", res.1);
    assert_eq!(
        res.1["one_time_key_counts"]["signed_curve25519"], 0,
        "{}",
        res.1
    );
    t.stop().await;
}

const DEHYDRATED: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";

#[tokio::test]
async fn a_dehydrated_device_collects_room_keys_for_the_next_client() {
    let t = TestServer::start().await;
    let http = &t.http;
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let got = http.call("GET", DEHYDRATED, Some(&alice.token), None).await;
    common::assert_error(&got, 404, "M_NOT_FOUND");

    // Alice's client leaves a dehydrated device behind: its keys, and its pickle (opaque).
    let (keys, _) = device_keys_with(
        alice.id.as_str(),
        "DEHYDRATED1",
        json!({ "dehydrated": true }),
    );
    let body = json!({
        "device_id": "DEHYDRATED1",
        "initial_device_display_name": "Dehydrated device",
        "device_data": { "algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "encrypted pickle" },
        "device_keys": keys,
        "one_time_keys": {},
        "fallback_keys": {},
    });
    let (status, res) = http
        .json("PUT", DEHYDRATED, Some(&alice.token), body.clone())
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["device_id"], "DEHYDRATED1");
    let got = http.get_ok(DEHYDRATED, Some(&alice.token)).await;
    assert_eq!(got["device_id"], "DEHYDRATED1");
    assert_eq!(got["device_data"]["device_pickle"], "encrypted pickle");

    // Bob sees the device's keys and sends it a room key while no client of Alice's runs.
    let devices = query_devices(http, &bob.token, alice.id.as_str()).await;
    assert_eq!(devices["DEHYDRATED1"]["dehydrated"], true, "{devices}");
    let (status, _) = http
        .json(
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.room.encrypted/k1",
            Some(&bob.token),
            json!({ "messages": { alice.id.as_str(): { "DEHYDRATED1": { "ciphertext": "room key" } } } }),
        )
        .await;
    assert_eq!(status, 200);

    // Alice's next client rehydrates: it reads the messages page by page.
    let events = format!("{DEHYDRATED}/DEHYDRATED1/events");
    let (status, page) = http
        .json("POST", &events, Some(&alice.token), json!({}))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["events"][0]["content"]["ciphertext"], "room key",
        "{page}"
    );
    assert_eq!(page["events"][0]["sender"], bob.id.as_str());
    let next = page["next_batch"].as_str().unwrap();
    let (status, page) = http
        .json(
            "POST",
            &events,
            Some(&alice.token),
            json!({ "next_batch": next }),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        page["events"].as_array().unwrap().is_empty(),
        "acknowledged: {page}"
    );
    // Only its owner reads it.
    let got = http
        .json(
            "POST",
            &format!("{DEHYDRATED}/DEHYDRATED1/events"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert!(got.0 == 403 || got.0 == 404, "{got:?}");

    // A device ID of one of Alice's real devices cannot become the dehydrated one.
    let mut clash = body.clone();
    clash["device_id"] = alice.device_id.as_str().into();
    let got = http
        .json("PUT", DEHYDRATED, Some(&alice.token), clash)
        .await;
    common::assert_error(&got, 400, "M_INVALID_PARAM");

    // Deleting it removes the device and its keys.
    let (status, res) = http
        .call("DELETE", DEHYDRATED, Some(&alice.token), None)
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["device_id"], "DEHYDRATED1");
    let devices = query_devices(http, &bob.token, alice.id.as_str()).await;
    assert!(devices.get("DEHYDRATED1").is_none(), "{devices}");
    t.stop().await;
}

//! Federation: the server's identity (its signing key, self-signed, the same across restarts,
//! replaced by `admin rotate-signing-key` with the old one still published; its software; its
//! delegation), and between two in-process servers with TLS listeners on loopback: notary key
//! queries, X-Matrix signatures checked, profile and alias lookups, device keys, to-device
//! messages queued across restarts, and shared rooms: joins, invites, messages both ways,
//! typing and receipts, a restart with nothing lost, a fork resolved alike on both sides, and
//! an encrypted room with real matrix-sdk clients on each server.

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

/// One self-signed certificate for `localhost` (PEM files written into `dir`), which every
/// test server presents on its federation listener and trusts as its one extra authority.
pub fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    static PEMS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    let (cert, key) = PEMS.get_or_init(|| {
        let c = rcgen::generate_simple_self_signed(vec![
            "localhost".into(),
            "127.0.0.1".into(),
            SRV_NAMED.into(),
        ])
        .expect("certificate");
        (c.cert.pem(), c.signing_key.serialize_pem())
    });
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (cert_path, key_path)
}

/// A server named `localhost:<port>` whose federation listener speaks TLS on that port.
pub async fn federating(deny: &[&str]) -> (TestServer, String) {
    let deny: Vec<String> = deny.iter().map(|s| s.to_string()).collect();
    federating_with(move |c| c.federation.deny_servers = deny).await
}

/// [`federating`], with more settings.
async fn federating_with(change: impl FnOnce(&mut tsunagu::Config)) -> (TestServer, String) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let addr = common::free_addr();
    let name = format!("localhost:{}", addr.port());
    let server_name = name.clone();
    let t = TestServer::start_in(dir, move |c| {
        c.server_name = server_name.as_str().try_into().unwrap();
        c.federation.enabled = Some(true);
        c.federation.listen = Some(addr);
        c.federation.tls_cert = Some(cert.clone());
        c.federation.tls_key = Some(key);
        c.federation.tls_ca_file = Some(cert);
        c.federation.allow_private_addresses = true;
        // Queues are retried within a second or two.
        c.federation.failure_backoff_secs = 1;
        change(c);
    })
    .await;
    (t, name)
}

/// Two federating servers, Alice on the first and Bob on the second.
struct Pair {
    a: TestServer,
    a_name: String,
    b: TestServer,
    b_name: String,
    alice: common::Account,
    bob: common::Account,
}

async fn pair() -> Pair {
    let (a, a_name) = federating(&[]).await;
    let (b, b_name) = federating(&[]).await;
    let alice = a.http.register("alice").await;
    let bob = b.http.register("bob").await;
    Pair {
        a,
        a_name,
        b,
        b_name,
        alice,
        bob,
    }
}

/// HTTPS to a federation listener, trusting the tests' certificate.
fn https_client(t: &TestServer) -> reqwest::Client {
    let pem = std::fs::read(t.dir().join("cert.pem")).unwrap();
    reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn people_on_two_servers_find_each_other_by_profile_and_room_alias() {
    let Pair {
        a,
        a_name,
        b,
        alice,
        bob,
        ..
    } = pair().await;
    let (status, res) = a
        .http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.id),
            Some(&alice.token),
            serde_json::json!({ "displayname": "Alice from the old team" }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let room = a
        .http
        .create_room(
            &alice.token,
            serde_json::json!({
                "room_alias_name": "alumni",
                "preset": "public_chat",
                "visibility": "public",
                "name": "Alumni of the old team",
            }),
        )
        .await;

    // Bob's server asks Alice's, which checks its signature.
    let profile = b
        .http
        .get_ok(
            &format!("/_matrix/client/v3/profile/{}", alice.id),
            Some(&bob.token),
        )
        .await;
    assert_eq!(
        profile["displayname"], "Alice from the old team",
        "{profile}"
    );
    let name = b
        .http
        .get_ok(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.id),
            Some(&bob.token),
        )
        .await;
    assert_eq!(name["displayname"], "Alice from the old team", "{name}");
    let alias = format!("#alumni:{a_name}");
    let found = b
        .http
        .get_ok(
            &format!("/_matrix/client/v3/directory/room/{}", urlencode(&alias)),
            Some(&bob.token),
        )
        .await;
    assert_eq!(found["room_id"], room.as_str(), "{found}");
    assert_eq!(found["servers"], serde_json::json!([a_name]), "{found}");

    // Bob browses the room directory of Alice's server through his own, and searches it.
    let listed = b
        .http
        .get_ok(
            &format!(
                "/_matrix/client/v3/publicRooms?server={}",
                urlencode(&a_name)
            ),
            Some(&bob.token),
        )
        .await;
    assert_eq!(listed["chunk"][0]["room_id"], room.as_str(), "{listed}");
    assert_eq!(
        listed["chunk"][0]["name"], "Alumni of the old team",
        "{listed}"
    );
    for (term, found) in [("old team", 1), ("nothing like it", 0)] {
        let (status, res) = b
            .http
            .json(
                "POST",
                &format!(
                    "/_matrix/client/v3/publicRooms?server={}",
                    urlencode(&a_name)
                ),
                Some(&bob.token),
                serde_json::json!({ "filter": { "generic_search_term": term } }),
            )
            .await;
        assert_eq!(status, 200, "{res}");
        assert_eq!(
            res["chunk"].as_array().map(Vec::len),
            Some(found),
            "{term}: {res}"
        );
    }

    // What Alice's server does not have is not found, on Bob's side too.
    let nobody = format!("@nobody:{a_name}");
    let (status, res) = b
        .http
        .call(
            "GET",
            &format!("/_matrix/client/v3/profile/{nobody}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(
        (status, res["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{res}"
    );
    let (status, res) = b
        .http
        .call(
            "GET",
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                urlencode(&format!("#nothing:{a_name}"))
            ),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(
        (status, res["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{res}"
    );

    // A server nobody runs: an answer, not a hang or a 500.
    let gone = common::free_addr().port();
    let (status, res) = b
        .http
        .call(
            "GET",
            &format!("/_matrix/client/v3/profile/@carol:localhost:{gone}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, 502, "{res}");
    a.stop().await;
    b.stop().await;
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn a_notary_relays_another_servers_keys_signed_by_both() {
    let (a, a_name) = federating(&[]).await;
    let (b, b_name) = federating(&[]).await;
    let client = https_client(&b);
    let b_url = format!("https://{b_name}");
    let a_keys = a.http.get_ok("/_matrix/key/v2/server", None).await;

    let res: serde_json::Value = client
        .post(format!("{b_url}/_matrix/key/v2/query"))
        .json(&serde_json::json!({ "server_keys": { &a_name: {} } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = res["server_keys"].as_array().expect("server_keys");
    assert_eq!(list.len(), 1, "{res}");
    let relayed = &list[0];
    assert_eq!(relayed["server_name"], a_name.as_str());
    assert_eq!(relayed["verify_keys"], a_keys["verify_keys"]);
    let b_keys = b.http.get_ok("/_matrix/key/v2/server", None).await;
    let key_map = |keys: &serde_json::Value| {
        keys["verify_keys"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(id, k)| {
                (
                    id.clone(),
                    Base64::parse(k["key"].as_str().unwrap()).unwrap(),
                )
            })
            .collect::<PublicKeySet>()
    };
    let map = PublicKeyMap::from([
        (a_name.clone(), key_map(&a_keys)),
        (b_name.clone(), key_map(&b_keys)),
    ]);
    let signed: CanonicalJsonObject = serde_json::from_value(relayed.clone()).unwrap();
    assert_eq!(
        signed["signatures"].as_object().map(|s| s.len()),
        Some(2),
        "signed by the server and the notary: {relayed}"
    );
    verify_json(&map, &signed).expect("both signatures verify");

    // The GET form, and a server that does not exist: left out, not an error.
    let gone = common::free_addr().port();
    let res: serde_json::Value = client
        .get(format!("{b_url}/_matrix/key/v2/query/localhost:{gone}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["server_keys"], serde_json::json!([]), "{res}");
    a.stop().await;
    b.stop().await;
}

/// The X-Matrix `Authorization` header `origin` signs with `key` for `GET uri` to
/// `destination`.
fn x_matrix(
    key: &ruma::signatures::Ed25519KeyPair,
    origin: &str,
    destination: &str,
    uri: &str,
) -> String {
    x_matrix_request(key, origin, destination, "GET", uri, Vec::new())
}

/// The X-Matrix header for `PUT uri` with this JSON body.
fn x_matrix_with_body(
    key: &ruma::signatures::Ed25519KeyPair,
    origin: &str,
    destination: &str,
    uri: &str,
    body: &serde_json::Value,
) -> String {
    let body = serde_json::to_vec(body).unwrap();
    x_matrix_request(key, origin, destination, "PUT", uri, body)
}

fn x_matrix_request(
    key: &ruma::signatures::Ed25519KeyPair,
    origin: &str,
    destination: &str,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> String {
    use ruma::api::federation::authentication::{ServerSignaturesInput, XMatrix};
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .unwrap();
    XMatrix::try_from_http_request(
        &request,
        ServerSignaturesInput::new(
            origin.try_into().unwrap(),
            destination.try_into().unwrap(),
            key,
        ),
    )
    .unwrap()
    .to_string()
}

#[tokio::test]
async fn requests_from_other_servers_must_carry_a_valid_signature() {
    use ruma::signatures::Ed25519KeyPair;
    let (a, a_name) = federating(&[]).await;
    let (b, b_name) = federating(&[]).await;
    // A third server whose name Alice's server refuses.
    let (c, c_name) = federating(&[]).await;
    let (d, _d_name) = federating(&[&c_name]).await;
    let alice = a.http.register("alice").await;
    let client = https_client(&a);
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        urlencode(&alice.id)
    );
    let url = format!("https://{a_name}{path}");

    // No signature at all.
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");

    // Signed with a key that is not Bob's server's, in its name.
    let forged_key = {
        let doc = Ed25519KeyPair::generate();
        let b_key_id = b.http.get_ok("/_matrix/key/v2/server", None).await["verify_keys"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .trim_start_matches("ed25519:")
            .to_owned();
        Ed25519KeyPair::from_der(&doc, b_key_id).unwrap()
    };
    let res = client
        .get(&url)
        .header(
            "authorization",
            x_matrix(&forged_key, &b_name, &a_name, &path),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Bob's server's own signature passes (the profile answers), for another URI it fails.
    let signed =
        |key: &Ed25519KeyPair, origin: &str, uri: &str| x_matrix(key, origin, &a_name, uri);
    let b_key = &b.server.services().core.signing_key;
    let res = client
        .get(&url)
        .header("authorization", signed(b_key, &b_name, &path))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .get(&url)
        .header(
            "authorization",
            signed(b_key, &b_name, "/_matrix/federation/v1/version"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // A server on the deny list is refused whatever it signs.
    let d_client = https_client(&d);
    let d_name = d.server.services().core.server_name().to_string();
    let d_path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        urlencode(&format!("@x:{d_name}"))
    );
    let c_key = &c.server.services().core.signing_key;
    let header = x_matrix(c_key, &c_name, &d_name, &d_path);
    let res = d_client
        .get(format!("https://{d_name}{d_path}"))
        .header("authorization", header)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    for t in [a, b, c, d] {
        t.stop().await;
    }
}

#[tokio::test]
async fn a_server_on_localhost_does_not_federate_unless_told_to() {
    let t = TestServer::start().await;
    let me = t.http.register("me").await;
    let (status, res) = t
        .http
        .call(
            "GET",
            "/_matrix/client/v3/profile/@someone:example.org",
            Some(&me.token),
            None,
        )
        .await;
    assert_eq!(
        (status, res["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{res}"
    );
    t.stop().await;
}

/// Uploads device keys (signed by the device's own ed25519 key, as a client does) and two
/// one-time keys for `who`'s device on `t`; returns the ed25519 public key.
async fn upload_device_keys(t: &TestServer, who: &common::Account) -> String {
    use ruma::signatures::Ed25519KeyPair;
    let doc = Ed25519KeyPair::generate();
    let key = Ed25519KeyPair::from_der(&doc, who.device_id.clone()).unwrap();
    let public = Base64::<ruma::serde::base64::Standard>::new(key.public_key().to_vec()).encode();
    let dev = &who.device_id;
    let mut keys: CanonicalJsonObject = serde_json::from_value(serde_json::json!({
        "user_id": who.id,
        "device_id": dev,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("ed25519:{dev}"): public,
            format!("curve25519:{dev}"): "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
        },
    }))
    .unwrap();
    ruma::signatures::sign_json(&who.id, &key, &mut keys).unwrap();
    let otk = |k: &str| serde_json::json!({ "key": k, "signatures": {} });
    let (status, res) = t
        .http
        .json(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(&who.token),
            serde_json::json!({
                "device_keys": keys,
                "one_time_keys": {
                    "signed_curve25519:AAAAAQ": otk("j3fR3HemM16M7CWhoI4Sk5ZsdmdfQHsKL1xuSft6MSw"),
                    "signed_curve25519:AAAAAg": otk("Aw/6c6Yc7mBJfsUyYpM7kxv5hWPLjJXgIZbszZVMCCo"),
                },
            }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    public
}

/// The to-device messages of `kind` an initial sync shows `who`, by their `body`.
async fn to_device_bodies(t: &TestServer, who: &common::Account, kind: &str) -> Vec<String> {
    let sync = t.http.sync(&who.token, "").await;
    sync["to_device"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == kind)
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn device_keys_and_to_device_messages_cross_servers_and_survive_restarts() {
    let Pair {
        a,
        b,
        b_name,
        alice,
        bob,
        ..
    } = pair().await;
    let bob_key = upload_device_keys(&b, &bob).await;

    // Alice's server asks Bob's for his device keys: the keys his device signed.
    let (status, res) = a
        .http
        .json(
            "POST",
            "/_matrix/client/v3/keys/query",
            Some(&alice.token),
            serde_json::json!({ "device_keys": { &bob.id: [] } }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let device = &res["device_keys"][&bob.id][&bob.device_id];
    assert_eq!(
        device["keys"][format!("ed25519:{}", bob.device_id)],
        bob_key.as_str(),
        "{res}"
    );
    assert!(
        res["failures"].as_object().is_none_or(|f| f.is_empty()),
        "{res}"
    );

    // She claims one of his one-time keys through her server, then the other: two different.
    let mut claimed = Vec::new();
    for _ in 0..2 {
        let (status, res) = a
            .http
            .json(
                "POST",
                "/_matrix/client/v3/keys/claim",
                Some(&alice.token),
                serde_json::json!({ "one_time_keys": { &bob.id: { &bob.device_id: "signed_curve25519" } } }),
            )
            .await;
        assert_eq!(status, 200, "{res}");
        let keys = res["one_time_keys"][&bob.id][&bob.device_id]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(keys.len(), 1, "{res}");
        claimed.extend(keys.keys().cloned());
    }
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), 2, "{claimed:?}");

    // A to-device message from Alice reaches Bob's device through his server.
    let send = |txn: &'static str, body: &'static str| {
        let http = a.http.clone();
        let (token, bob_id, dev) = (alice.token.clone(), bob.id.clone(), bob.device_id.clone());
        async move {
            let (status, res) = http
                .json(
                    "PUT",
                    &format!("/_matrix/client/v3/sendToDevice/org.example.hello/{txn}"),
                    Some(&token),
                    serde_json::json!({ "messages": { bob_id: { dev: { "body": body } } } }),
                )
                .await;
            assert_eq!(status, 200, "{res}");
        }
    };
    send("t1", "first").await;
    common::eventually(
        common::WAIT,
        "the first message on Bob's server",
        || async {
            to_device_bodies(&b, &bob, "org.example.hello")
                .await
                .contains(&"first".to_owned())
                .then_some(())
        },
    )
    .await;

    // Bob's server goes down; Alice sends again (and her client retries the same request);
    // then her server restarts too. The message waits in her server's queue and arrives
    // once Bob's server is back, once.
    let b = b.stop_keeping_data().await;
    send("t2", "second").await;
    send("t2", "second").await;
    let a = a.restart().await;
    let b = b.start_again().await;
    let bodies = common::eventually(
        common::WAIT,
        "the queued message on Bob's server",
        || async {
            let bodies = to_device_bodies(&b, &bob, "org.example.hello").await;
            bodies.contains(&"second".to_owned()).then_some(bodies)
        },
    )
    .await;
    assert_eq!(
        bodies.iter().filter(|b| *b == "second").count(),
        1,
        "{bodies:?} on {b_name}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_rotated_signing_key_stays_published_as_an_old_key() {
    let t = TestServer::start_with(|c| {
        c.federation.well_known_server = Some("chat.example.org:443".try_into().unwrap());
    })
    .await;
    // Where other servers are told to reach this one.
    let delegation = t.http.get_ok("/.well-known/matrix/server", None).await;
    assert_eq!(
        delegation["m.server"], "chat.example.org:443",
        "{delegation}"
    );

    let before = t.http.get_ok("/_matrix/key/v2/server", None).await;
    let (old_id, old_key) = before["verify_keys"]
        .as_object()
        .and_then(|k| k.iter().next())
        .map(|(id, k)| (id.clone(), k["key"].clone()))
        .unwrap();
    let data_dir = t.dir().join("server");
    let stopped = t.stop_keeping_data().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tsunagu"))
        .env("TSUNAGU_DATA_DIR", &data_dir)
        .env("TSUNAGU_SERVER_NAME", "localhost")
        .env("TSUNAGU_LOG", "warn")
        .args(["admin", "rotate-signing-key"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = stopped.start_again().await;
    let after = t.http.get_ok("/_matrix/key/v2/server", None).await;
    let verify = after["verify_keys"].as_object().unwrap();
    assert_eq!(verify.len(), 1, "{after}");
    let (new_id, new_key) = verify.iter().next().unwrap();
    assert_ne!(*new_id, old_id, "a new key: {after}");
    assert_eq!(after["old_verify_keys"][&old_id]["key"], old_key, "{after}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let expired = after["old_verify_keys"][&old_id]["expired_ts"]
        .as_u64()
        .unwrap();
    assert!(expired <= now && expired + 600_000 > now, "{after}");
    // Signed by the new key.
    let map = PublicKeyMap::from([(
        "localhost".to_owned(),
        PublicKeySet::from([(
            new_id.clone(),
            Base64::parse(new_key["key"].as_str().unwrap()).unwrap(),
        )]),
    )]);
    let signed: CanonicalJsonObject = serde_json::from_value(after.clone()).unwrap();
    verify_json(&map, &signed).expect("signed by the new key");
    t.stop().await;

    // A server that does not delegate says so.
    let t = TestServer::start().await;
    let (status, res) = t
        .http
        .call("GET", "/.well-known/matrix/server", None, None)
        .await;
    assert_eq!(
        (status, res["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{res}"
    );
    t.stop().await;
}

#[tokio::test]
async fn media_of_another_server_is_fetched_once_and_kept() {
    let Pair {
        a,
        a_name,
        b,
        alice,
        bob,
        ..
    } = pair().await;
    let picture = {
        let pixels =
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90]));
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(pixels)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    };
    let uploaded: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/_matrix/media/v3/upload?filename=avatar.png",
            a.url()
        ))
        .bearer_auth(&alice.token)
        .header("content-type", "image/png")
        .body(picture.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mxc = uploaded["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    let media_id = mxc.rsplit('/').next().unwrap().to_owned();
    assert!(mxc.starts_with(&format!("mxc://{a_name}/")), "{mxc}");

    // Bob's client asks his own server, which asks Alice's.
    let get = |path: String| {
        let (url, token) = (b.url(), bob.token.clone());
        async move {
            reqwest::Client::new()
                .get(format!("{url}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let download = format!("/_matrix/client/v1/media/download/{a_name}/{media_id}");
    let res = get(download.clone()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.bytes().await.unwrap().as_ref(), picture.as_slice());
    let res = get(format!(
        "/_matrix/client/v1/media/thumbnail/{a_name}/{media_id}?width=32&height=32&method=scale"
    ))
    .await;
    assert_eq!(res.status(), 200);
    let thumb = image::load_from_memory(&res.bytes().await.unwrap()).expect("an image");
    assert!(
        thumb.width() <= 32 && thumb.height() <= 32,
        "{}x{}",
        thumb.width(),
        thumb.height()
    );

    // What Alice's server does not have is not found.
    let res = get(format!(
        "/_matrix/client/v1/media/download/{a_name}/nothingHere"
    ))
    .await;
    assert_eq!(res.status(), 404);

    // With Alice's server gone, Bob's server still has its copy.
    a.stop().await;
    let res = get(download).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), picture.as_slice());
    b.stop().await;
}

#[tokio::test]
async fn keys_of_a_server_that_is_down_come_from_a_trusted_notary() {
    // B will vouch for A's keys; C trusts B as a notary; D trusts nobody.
    let (a, a_name) = federating(&[]).await;
    let (b, b_name) = federating(&[]).await;
    let notary: ruma::OwnedServerName = b_name.as_str().try_into().unwrap();
    let (c, c_name) =
        federating_with(move |cfg| cfg.federation.trusted_key_servers = vec![notary]).await;
    let (d, d_name) = federating(&[]).await;
    let carol = c.http.register("carol").await;
    let dave = d.http.register("dave").await;

    // B learns A's keys (answering a notary query for them).
    let res: serde_json::Value = https_client(&b)
        .post(format!("https://{b_name}/_matrix/key/v2/query"))
        .json(&serde_json::json!({ "server_keys": { &a_name: {} } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        res["server_keys"].as_array().map(Vec::len),
        Some(1),
        "{res}"
    );

    // A signs two requests, then goes down before they arrive.
    let a_key = &a.server.services().core.signing_key;
    let path = |user: &common::Account| {
        format!(
            "/_matrix/federation/v1/query/profile?user_id={}",
            urlencode(&user.id)
        )
    };
    let to_c = x_matrix(a_key, &a_name, &c_name, &path(&carol));
    let to_d = x_matrix(a_key, &a_name, &d_name, &path(&dave));
    a.stop().await;

    // C cannot ask A, asks B, and checks both signatures: the request passes.
    let res = https_client(&c)
        .get(format!("https://{c_name}{}", path(&carol)))
        .header("authorization", to_c)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    // D has nobody to ask: the signature cannot be checked.
    let res = https_client(&d)
        .get(format!("https://{d_name}{}", path(&dave)))
        .header("authorization", to_d)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    for t in [b, c, d] {
        t.stop().await;
    }
}

#[tokio::test]
async fn another_server_gets_a_join_event_to_sign_for_a_room_its_user_may_join() {
    let Pair {
        a,
        a_name,
        b,
        b_name,
        alice,
        bob,
    } = pair().await;
    let open = a
        .http
        .create_room(&alice.token, serde_json::json!({ "preset": "public_chat" }))
        .await;
    let closed = a
        .http
        .create_room(
            &alice.token,
            serde_json::json!({ "preset": "private_chat" }),
        )
        .await;
    let b_key = &b.server.services().core.signing_key;
    let client = https_client(&a);
    let make_join = |room: &str, user: &str, ver: &str| {
        let uri = format!(
            "/_matrix/federation/v1/make_join/{}/{}{ver}",
            urlencode(room),
            urlencode(user)
        );
        let header = x_matrix(b_key, &b_name, &a_name, &uri);
        let request = client
            .get(format!("https://{a_name}{uri}"))
            .header("authorization", header);
        async move {
            let res = request.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.unwrap())
        }
    };

    let (status, res) = make_join(&open, &bob.id, "?ver=11&ver=12").await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["room_version"], "12", "{res}");
    let event = &res["event"];
    assert_eq!(event["type"], "m.room.member");
    assert_eq!(event["state_key"], bob.id.as_str());
    assert_eq!(event["sender"], bob.id.as_str());
    assert_eq!(event["room_id"], open.as_str());
    assert_eq!(event["content"]["membership"], "join");
    assert!(event["depth"].as_u64().unwrap() > 1, "{event}");
    assert_eq!(
        event["prev_events"].as_array().map(Vec::len),
        Some(1),
        "{event}"
    );
    assert!(
        event["auth_events"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{event}"
    );
    assert!(
        event.get("signatures").is_none() && event.get("hashes").is_none(),
        "{event}"
    );

    // A server that cannot read the room's version, a room the user may not join, a room the
    // server is not in, and a user of another server than the one asking.
    for (room, user, ver, status, errcode) in [
        (
            open.as_str(),
            bob.id.as_str(),
            "?ver=1",
            400,
            "M_INCOMPATIBLE_ROOM_VERSION",
        ),
        (
            closed.as_str(),
            bob.id.as_str(),
            "?ver=12",
            403,
            "M_FORBIDDEN",
        ),
        (
            "!nothing:elsewhere.example",
            bob.id.as_str(),
            "?ver=12",
            404,
            "M_NOT_FOUND",
        ),
        (
            open.as_str(),
            alice.id.as_str(),
            "?ver=12",
            403,
            "M_FORBIDDEN",
        ),
    ] {
        let (got, res) = make_join(room, user, ver).await;
        assert_eq!(
            (got, res["errcode"].as_str()),
            (status, Some(errcode)),
            "{room} {user}: {res}"
        );
    }

    // A server the room's ACL leaves out gets nothing (the tests' servers are all on the
    // host `localhost`; the ACL matches hosts, not ports).
    let (status, res) = a
        .http
        .json(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.server_acl/",
                urlencode(&open)
            ),
            Some(&alice.token),
            serde_json::json!({ "allow": ["*"], "deny": ["localhost"] }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let (got, res) = make_join(&open, &bob.id, "?ver=12").await;
    assert_eq!(
        (got, res["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{res}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn another_server_sees_the_public_part_of_a_space() {
    let Pair {
        a,
        a_name,
        b,
        b_name,
        alice,
        ..
    } = pair().await;
    let create = |body: serde_json::Value| {
        let (http, token) = (&a.http, alice.token.clone());
        async move { http.create_room(&token, body).await }
    };
    let space = create(serde_json::json!({
        "name": "Alumni", "preset": "public_chat", "creation_content": { "type": "m.space" },
    }))
    .await;
    let open = create(serde_json::json!({ "name": "Coffee", "preset": "public_chat" })).await;
    let closed = create(serde_json::json!({ "name": "Board", "preset": "private_chat" })).await;
    for room in [&open, &closed] {
        let via = serde_json::json!({ "via": [&a_name] });
        a.http
            .add_space_child(&alice.token, &space, room, via)
            .await;
    }
    let b_key = &b.server.services().core.signing_key;
    let ask = |room: &str| {
        let uri = format!("/_matrix/federation/v1/hierarchy/{}", urlencode(room));
        let header = x_matrix(b_key, &b_name, &a_name, &uri);
        let request = https_client(&a)
            .get(format!("https://{a_name}{uri}"))
            .header("authorization", header);
        async move {
            let res = request.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, res) = ask(&space).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["room"]["room_id"], space.as_str(), "{res}");
    assert_eq!(res["room"]["room_type"], "m.space", "{res}");
    assert_eq!(
        res["room"]["children_state"].as_array().map(Vec::len),
        Some(2),
        "{res}"
    );
    assert_eq!(res["children"].as_array().map(Vec::len), Some(1), "{res}");
    assert_eq!(res["children"][0]["name"], "Coffee", "{res}");
    assert_eq!(
        res["inaccessible_children"],
        serde_json::json!([closed]),
        "{res}"
    );
    let (status, res) = ask(&closed).await;
    assert_eq!(
        (status, res["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{res}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_space_lists_a_room_of_another_server() {
    let Pair {
        a,
        b,
        b_name,
        alice,
        bob,
        ..
    } = pair().await;
    let space = a
        .http
        .create_room(
            &alice.token,
            serde_json::json!({
                "name": "Alumni", "preset": "public_chat", "creation_content": { "type": "m.space" },
            }),
        )
        .await;
    let theirs = b
        .http
        .create_room(
            &bob.token,
            serde_json::json!({ "name": "Berlin meetups", "preset": "public_chat" }),
        )
        .await;
    let via = serde_json::json!({ "via": [&b_name] });
    a.http
        .add_space_child(&alice.token, &space, &theirs, via)
        .await;
    let res = a
        .http
        .get_ok(
            &format!("/_matrix/client/v1/rooms/{}/hierarchy", urlencode(&space)),
            Some(&alice.token),
        )
        .await;
    let rooms = res["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 2, "{res}");
    assert_eq!(rooms[1]["room_id"], theirs.as_str(), "{res}");
    assert_eq!(rooms[1]["name"], "Berlin meetups", "{res}");
    a.stop().await;
    b.stop().await;
}

/// The messages of a room as `who` reads them on `t` (`/messages`, oldest first).
async fn room_bodies(t: &TestServer, who: &common::Account, room: &str) -> Vec<String> {
    let res = t
        .http
        .get_ok(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
                urlencode(room)
            ),
            Some(&who.token),
        )
        .await;
    let mut out = common::http::bodies(&res["chunk"]);
    out.reverse();
    out
}

/// Waits until `who` on `t` reads `bodies` in the room, in this order (with anything between).
async fn sees_in_order(t: &TestServer, who: &common::Account, room: &str, wanted: &[&str]) {
    common::eventually(30, &format!("{} to see {wanted:?}", who.id), || async {
        let got = room_bodies(t, who, room).await;
        let mut at = got.iter();
        wanted.iter().all(|w| at.any(|g| g == w)).then_some(())
    })
    .await;
}

/// `user`'s member event content in the room, as `who` reads it on `t`.
async fn member_event(
    t: &TestServer,
    who: &common::Account,
    room: &str,
    user: &str,
) -> serde_json::Value {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        urlencode(room),
        urlencode(user)
    );
    t.http.get_ok(&path, Some(&who.token)).await
}

/// The joined members of a room as `who` sees them on `t`.
async fn joined(t: &TestServer, who: &common::Account, room: &str) -> Vec<String> {
    let res = t
        .http
        .get_ok(
            &format!(
                "/_matrix/client/v3/rooms/{}/joined_members",
                urlencode(room)
            ),
            Some(&who.token),
        )
        .await;
    let mut out: Vec<String> = res["joined"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Alice's public room on A, with the alias `#alumni:A`, and Bob of B joined to it by that
/// alias (his server asks A, joins through it and keeps the room's state).
async fn shared_room(p: &Pair) -> String {
    let room =
        p.a.http
            .create_room(
                &p.alice.token,
                serde_json::json!({
                    "room_alias_name": "alumni",
                    "preset": "public_chat",
                    "name": "Alumni of the old team",
                }),
            )
            .await;
    let alias = format!("%23alumni:{}", p.a_name);
    let (status, res) = p.b.http.join(&p.bob.token, &alias).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["room_id"], room.as_str());
    room
}

#[tokio::test]
async fn people_on_two_servers_share_a_room_and_nothing_is_lost_when_one_restarts() {
    let p = pair().await;
    let room = shared_room(&p).await;
    let mut members = vec![p.alice.id.clone(), p.bob.id.clone()];
    members.sort();
    // Both servers know the room and who is in it.
    assert_eq!(joined(&p.b, &p.bob, &room).await, members);
    common::eventually(30, "A to see Bob joined", || async {
        (joined(&p.a, &p.alice, &room).await == members).then_some(())
    })
    .await;
    let state =
        p.b.http
            .get_ok(
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/m.room.name/",
                    urlencode(&room)
                ),
                Some(&p.bob.token),
            )
            .await;
    assert_eq!(state["name"], "Alumni of the old team");

    // Messages cross both ways, and each side sees the other's in its timeline.
    p.a.http
        .send_text(&p.alice.token, &room, "Welcome, Bob!")
        .await;
    sees_in_order(&p.b, &p.bob, &room, &["Welcome, Bob!"]).await;
    p.b.http
        .send_text(&p.bob.token, &room, "Glad to be here")
        .await;
    sees_in_order(&p.a, &p.alice, &room, &["Welcome, Bob!", "Glad to be here"]).await;

    // B goes down; what Alice says meanwhile waits in A's queue, and arrives in order once B
    // is back.
    let Pair {
        a, b, alice, bob, ..
    } = p;
    let stopped = b.stop_keeping_data().await;
    for text in ["one", "two", "three"] {
        a.http.send_text(&alice.token, &room, text).await;
    }
    let b = stopped.start_again().await;
    sees_in_order(
        &b,
        &bob,
        &room,
        &["Welcome, Bob!", "Glad to be here", "one", "two", "three"],
    )
    .await;
    // And B's server keeps sending after its restart.
    b.http.send_text(&bob.token, &room, "back again").await;
    sees_in_order(&a, &alice, &room, &["three", "back again"]).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn device_list_changes_and_presence_cross_servers() {
    let p = pair().await;
    shared_room(&p).await;
    let since = common::http::next_batch(&p.a.http.sync(&p.alice.token, "timeout=0").await);
    // Bob signs in on a new device on B, which uploads its keys.
    let phone = p.b.http.login("bob").await;
    upload_device_keys(&p.b, &phone).await;
    common::eventually(30, "Alice's sync to say Bob's devices changed", || async {
        let sync =
            p.a.http
                .sync(&p.alice.token, &format!("timeout=0&since={since}"))
                .await;
        let changed = sync["device_lists"]["changed"].as_array()?;
        changed.iter().any(|u| u == p.bob.id.as_str()).then_some(())
    })
    .await;
    // Her server asks his for the new device's keys.
    let keys =
        p.a.http
            .json(
                "POST",
                "/_matrix/client/v3/keys/query",
                Some(&p.alice.token),
                serde_json::json!({ "device_keys": { p.bob.id.as_str(): [] } }),
            )
            .await
            .1;
    assert!(
        !keys["device_keys"][&p.bob.id][phone.device_id.as_str()].is_null(),
        "{keys}"
    );

    // Bob's status reaches Alice's server.
    let (status, res) =
        p.b.http
            .json(
                "PUT",
                &format!(
                    "/_matrix/client/v3/presence/{}/status",
                    urlencode(&p.bob.id)
                ),
                Some(&p.bob.token),
                serde_json::json!({ "presence": "online", "status_msg": "At the reunion" }),
            )
            .await;
    assert_eq!(status, 200, "{res}");
    common::eventually(30, "Alice to see Bob's status", || async {
        let res =
            p.a.http
                .get_ok(
                    &format!(
                        "/_matrix/client/v3/presence/{}/status",
                        urlencode(&p.bob.id)
                    ),
                    Some(&p.alice.token),
                )
                .await;
        (res["status_msg"] == "At the reunion" && res["presence"] == "online").then_some(())
    })
    .await;
    p.a.stop().await;
    p.b.stop().await;
}

#[tokio::test]
async fn typing_and_read_receipts_cross_servers() {
    let p = pair().await;
    let room = shared_room(&p).await;
    let said =
        p.a.http
            .send_text(&p.alice.token, &room, "Anyone there?")
            .await;
    sees_in_order(&p.b, &p.bob, &room, &["Anyone there?"]).await;
    let (status, res) =
        p.b.http
            .json(
                "PUT",
                &format!(
                    "/_matrix/client/v3/rooms/{}/typing/{}",
                    urlencode(&room),
                    urlencode(&p.bob.id)
                ),
                Some(&p.bob.token),
                serde_json::json!({ "typing": true, "timeout": 30000 }),
            )
            .await;
    assert_eq!(status, 200, "{res}");
    let (status, res) =
        p.b.http
            .json(
                "POST",
                &format!(
                    "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                    urlencode(&room),
                    urlencode(&said)
                ),
                Some(&p.bob.token),
                serde_json::json!({}),
            )
            .await;
    assert_eq!(status, 200, "{res}");
    // Alice's sync on A shows Bob typing and Bob's receipt on her message.
    common::eventually(30, "Alice to see Bob typing and his receipt", || async {
        let sync = p.a.http.sync(&p.alice.token, "timeout=0").await;
        let ephemeral = &sync["rooms"]["join"][&room]["ephemeral"]["events"];
        let events = ephemeral.as_array()?;
        let typing = events.iter().any(|e| {
            e["type"] == "m.typing"
                && e["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|u| u == p.bob.id.as_str()))
        });
        let receipt = events.iter().any(|e| {
            e["type"] == "m.receipt" && !e["content"][&said]["m.read"][&p.bob.id].is_null()
        });
        (typing && receipt).then_some(())
    })
    .await;
    p.a.stop().await;
    p.b.stop().await;
}

/// The room's current power levels event on `t`, as `who` reads the room's state.
async fn power_levels_event(
    t: &TestServer,
    who: &common::Account,
    room: &str,
) -> serde_json::Value {
    let state = t
        .http
        .get_ok(
            &format!("/_matrix/client/v3/rooms/{}/state", urlencode(room)),
            Some(&who.token),
        )
        .await;
    state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.power_levels")
        .cloned()
        .unwrap()
}

/// Sets the room's power levels to its current ones with `field` changed; returns the event ID.
async fn change_power_levels(
    t: &TestServer,
    who: &common::Account,
    room: &str,
    field: &str,
    value: serde_json::Value,
) -> String {
    let mut content = power_levels_event(t, who, room).await["content"].clone();
    content[field] = value;
    let (status, res) = t
        .http
        .json(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
                urlencode(room)
            ),
            Some(&who.token),
            content,
        )
        .await;
    assert_eq!(status, 200, "{res}");
    res["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn concurrent_power_level_changes_resolve_the_same_on_both_servers() {
    let p = pair().await;
    let room = shared_room(&p).await;
    // Alice makes Bob an admin, and B learns of it.
    let mut content = power_levels_event(&p.a, &p.alice, &room).await["content"].clone();
    content["users"][&p.bob.id] = 100.into();
    let (status, res) =
        p.a.http
            .json(
                "PUT",
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
                    urlencode(&room)
                ),
                Some(&p.alice.token),
                content,
            )
            .await;
    assert_eq!(status, 200, "{res}");
    let promoted = res["event_id"].as_str().unwrap().to_owned();
    common::eventually(30, "B to see Bob promoted", || async {
        (power_levels_event(&p.b, &p.bob, &room).await["event_id"] == promoted.as_str())
            .then_some(())
    })
    .await;

    // Each changes the power levels while the other server is down: the room forks.
    let Pair {
        a, b, alice, bob, ..
    } = p;
    let a_stopped = a.stop_keeping_data().await;
    let by_bob = change_power_levels(&b, &bob, &room, "invite", 50.into()).await;
    let b_stopped = b.stop_keeping_data().await;
    let a = a_stopped.start_again().await;
    let by_alice = change_power_levels(&a, &alice, &room, "kick", 60.into()).await;
    let b = b_stopped.start_again().await;

    // Both servers get the other's change and resolve the fork to the same state.
    let resolved = common::eventually(30, "both servers to resolve the fork alike", || async {
        let on_a = power_levels_event(&a, &alice, &room).await;
        let on_b = power_levels_event(&b, &bob, &room).await;
        let both_known = a
            .http
            .json(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{}/event/{}",
                    urlencode(&room),
                    urlencode(&by_bob)
                ),
                Some(&alice.token),
                serde_json::Value::Null,
            )
            .await
            .0
            == 200
            && b.http
                .json(
                    "GET",
                    &format!(
                        "/_matrix/client/v3/rooms/{}/event/{}",
                        urlencode(&room),
                        urlencode(&by_alice)
                    ),
                    Some(&bob.token),
                    serde_json::Value::Null,
                )
                .await
                .0
                == 200;
        (both_known && on_a["event_id"] == on_b["event_id"]).then_some(on_a)
    })
    .await;
    let winner = resolved["event_id"].as_str().unwrap();
    assert!(winner == by_alice || winner == by_bob, "{resolved}");

    // The fork is merged by the next message, which crosses as before.
    a.http
        .send_text(&alice.token, &room, "after the fork")
        .await;
    sees_in_order(&b, &bob, &room, &["after the fork"]).await;
    b.http.send_text(&bob.token, &room, "agreed").await;
    sees_in_order(&a, &alice, &room, &["after the fork", "agreed"]).await;
    assert_eq!(
        power_levels_event(&a, &alice, &room).await["event_id"],
        power_levels_event(&b, &bob, &room).await["event_id"]
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_encrypted_room_is_shared_across_servers_with_real_clients() {
    let (a, _) = federating(&[]).await;
    let (b, _) = federating(&[]).await;
    let alice = common::user(&a, "alice").await;
    let bob = common::user(&b, "bob").await;
    // Alice's private room (encrypted by default) with Bob invited from the other server; his
    // client accepts, and joins through A.
    let room_id = common::client::private_room(&alice, "Across two servers", &[&bob], &[]).await;
    let room = alice.room(&room_id).await;
    assert!(
        room.latest_encryption_state().await.unwrap().is_encrypted(),
        "the room is encrypted"
    );
    common::client::say(&room, "A secret from A").await;
    bob.receives_encrypted("A secret from A").await;
    let bob_room = bob.room(&room_id).await;
    common::client::say(&bob_room, "And one from B").await;
    alice.receives_encrypted("And one from B").await;
    // Neither server holds the words: both keep ciphertext only.
    for (server, who) in [(&a, "A"), (&b, "B")] {
        let events = common::stored(&server.server, &room_id);
        assert!(
            events.iter().all(|e| {
                let text = serde_json::to_string(&e.pdu).unwrap();
                !text.contains("secret from A") && !text.contains("one from B")
            }),
            "server {who} stored a message in the clear"
        );
    }
    drop((alice, bob));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_late_joiner_on_another_server_reads_the_history_before_they_joined() {
    let p = pair().await;
    let room =
        p.a.http
            .create_room(
                &p.alice.token,
                serde_json::json!({ "room_alias_name": "history", "preset": "public_chat" }),
            )
            .await;
    let said: Vec<String> = (1..=5).map(|i| format!("old news {i}")).collect();
    for text in &said {
        p.a.http.send_text(&p.alice.token, &room, text).await;
    }
    let (status, res) =
        p.b.http
            .join(&p.bob.token, &format!("%23history:{}", p.a_name))
            .await;
    assert_eq!(status, 200, "{res}");
    // At once, from his own server: what was said before, in order, then his join.
    let got = room_bodies(&p.b, &p.bob, &room).await;
    assert_eq!(got, said, "Bob's history of the room");
    // And what was said before does not count as unread for him.
    let sync = p.b.http.sync(&p.bob.token, "timeout=0").await;
    let unread = &sync["rooms"]["join"][&room]["unread_notifications"]["notification_count"];
    assert!(unread.is_null() || unread == 0, "{sync}");
    p.a.stop().await;
    p.b.stop().await;
}

#[tokio::test]
async fn a_forged_event_in_a_transaction_is_refused_and_changes_nothing() {
    let p = pair().await;
    let room = shared_room(&p).await;
    let said =
        p.b.http
            .send_text(&p.bob.token, &room, "a real message")
            .await;
    sees_in_order(&p.a, &p.alice, &room, &["a real message"]).await;
    // B's real event with its text changed (so its signature no longer holds), sent by B as a
    // new event: A refuses it, answering why, and no one sees it.
    let original =
        p.b.server
            .services()
            .timeline
            .event(&ruma::OwnedEventId::try_from(said.as_str()).unwrap())
            .unwrap()
            .unwrap();
    let mut forged = serde_json::to_value(&original.pdu).unwrap();
    forged["content"]["body"] = "a forged message".into();
    forged["origin_server_ts"] = (forged["origin_server_ts"].as_u64().unwrap() + 1).into();
    // A message claiming to be Alice's (of A), sent by B with B's signature only.
    let mut impostor = forged.clone();
    impostor["sender"] = p.alice.id.as_str().into();
    impostor["content"]["body"] = "an impostor's message".into();
    let b_key = &p.b.server.services().core.signing_key;
    let client = https_client(&p.a);
    let uri = "/_matrix/federation/v1/send/forged1";
    let body = serde_json::json!({
        "origin": p.b_name,
        "origin_server_ts": 1,
        "pdus": [forged, impostor],
    });
    let header = x_matrix_with_body(b_key, &p.b_name, &p.a_name, uri, &body);
    let res = client
        .put(format!("https://{}{uri}", p.a_name))
        .header("authorization", header)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let refused = answer["pdus"].as_object().unwrap();
    assert_eq!(refused.len(), 2, "{answer}");
    assert!(refused.values().all(|r| r["error"].is_string()), "{answer}");
    let got = room_bodies(&p.a, &p.alice, &room).await;
    assert!(
        !got.iter()
            .any(|b| b.contains("forged") || b.contains("impostor")),
        "{got:?}"
    );
    // A transaction as large as the spec allows (here 40 events of 60 KB: more than a client
    // request may be) is read and answered event by event, not refused whole.
    let mut big = serde_json::to_value(&original.pdu).unwrap();
    big["content"]["body"] = "x".repeat(60_000).into();
    let pdus: Vec<serde_json::Value> = (0..40)
        .map(|i| {
            let mut e = big.clone();
            e["origin_server_ts"] = (i as u64 + 10).into();
            e
        })
        .collect();
    let uri = "/_matrix/federation/v1/send/big1";
    let body = serde_json::json!({ "origin": p.b_name, "origin_server_ts": 1, "pdus": pdus });
    assert!(serde_json::to_vec(&body).unwrap().len() > 2_000_000);
    let header = x_matrix_with_body(b_key, &p.b_name, &p.a_name, uri, &body);
    let res = client
        .put(format!("https://{}{uri}", p.a_name))
        .header("authorization", header)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        answer["pdus"].as_object().map(|o| o.len()),
        Some(40),
        "{answer}"
    );
    p.a.stop().await;
    p.b.stop().await;
}

#[tokio::test]
async fn a_user_of_another_server_knocks_is_let_in_and_joins() {
    let p = pair().await;
    let room =
        p.a.http
            .create_room(
                &p.alice.token,
                serde_json::json!({
                    "preset": "private_chat",
                    "name": "Knock to come in",
                    "initial_state": [{
                        "type": "m.room.join_rules", "state_key": "",
                        "content": { "join_rule": "knock" },
                    }],
                }),
            )
            .await;
    let (status, res) =
        p.b.http
            .json(
                "POST",
                &format!(
                    "/_matrix/client/v3/knock/{}?via={}",
                    urlencode(&room),
                    urlencode(&p.a_name)
                ),
                Some(&p.bob.token),
                serde_json::json!({ "reason": "We worked together in 2019" }),
            )
            .await;
    assert_eq!(status, 200, "{res}");
    // Bob's clients show the room he knocked on, by name.
    let sync = p.b.http.sync(&p.bob.token, "timeout=0").await;
    let shown = &sync["rooms"]["knock"][&room]["knock_state"]["events"];
    assert!(
        shown
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["content"]["name"] == "Knock to come in")),
        "{sync}"
    );
    // Alice sees the knock, with its reason, and lets him in (an invite).
    let member = member_event(&p.a, &p.alice, &room, &p.bob.id).await;
    assert_eq!(member["membership"], "knock", "{member}");
    assert_eq!(member["reason"], "We worked together in 2019", "{member}");
    let (status, res) =
        p.a.http
            .json(
                "POST",
                &format!("/_matrix/client/v3/rooms/{}/invite", urlencode(&room)),
                Some(&p.alice.token),
                serde_json::json!({ "user_id": p.bob.id }),
            )
            .await;
    assert_eq!(status, 200, "{res}");
    let (status, res) = p.b.http.join(&p.bob.token, &urlencode(&room)).await;
    assert_eq!(status, 200, "{res}");
    p.a.http.send_text(&p.alice.token, &room, "Come in!").await;
    sees_in_order(&p.b, &p.bob, &room, &["Come in!"]).await;
    p.a.stop().await;
    p.b.stop().await;
}

#[tokio::test]
async fn a_user_rejects_an_invite_from_another_server() {
    let p = pair().await;
    let room = p
        .a
        .http
        .create_room(
            &p.alice.token,
            serde_json::json!({ "preset": "private_chat", "name": "Old team", "invite": [p.bob.id] }),
        )
        .await;
    // The invite shows on B with the room's name, before B knows anything else of the room.
    let sync = p.b.http.sync(&p.bob.token, "timeout=0").await;
    let shown = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
    assert!(
        shown
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["content"]["name"] == "Old team")),
        "{sync}"
    );
    let since = common::http::next_batch(&sync);
    let (status, res) =
        p.b.http
            .json(
                "POST",
                &format!("/_matrix/client/v3/rooms/{}/leave", urlencode(&room)),
                Some(&p.bob.token),
                serde_json::json!({}),
            )
            .await;
    assert_eq!(status, 200, "{res}");
    // Gone from Bob's invites, and Alice's server knows he said no.
    let sync =
        p.b.http
            .sync(&p.bob.token, &format!("timeout=0&since={since}"))
            .await;
    assert!(!sync["rooms"]["leave"][&room].is_null(), "{sync}");
    let member = member_event(&p.a, &p.alice, &room, &p.bob.id).await;
    assert_eq!(member["membership"], "leave", "{member}");
    p.a.stop().await;
    p.b.stop().await;
}

/// A server name that only an SRV record locates (the tests' certificate names it too).
const SRV_NAMED: &str = "srv.tsunagu.test";

/// A DNS resolver on loopback that knows these SRV records (and nothing else), answering
/// until the test ends.
async fn fake_resolver(
    records: Vec<(String, tsunagu::service::federation::dns::Srv)>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if let Some(answer) = tsunagu::service::federation::dns::answer_for(&buf[..n], &records)
            {
                let _ = socket.send_to(&answer, from).await;
            }
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_server_is_found_by_its_srv_record() {
    // B is named without a port; only its SRV record says where it listens.
    let b_addr = common::free_addr();
    let (b, _) = federating_with(move |c| {
        c.server_name = SRV_NAMED.try_into().unwrap();
        c.federation.listen = Some(b_addr);
    })
    .await;
    let (resolver, task) = fake_resolver(vec![(
        format!("_matrix-fed._tcp.{SRV_NAMED}"),
        tsunagu::service::federation::dns::Srv {
            priority: 10,
            weight: 0,
            port: b_addr.port(),
            target: "localhost".into(),
        },
    )])
    .await;
    let (a, _) = federating_with(move |c| c.federation.dns_resolver = Some(resolver)).await;
    let alice = a.http.register("alice").await;
    let bob = b.http.register("bob").await;
    let (status, res) = b
        .http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.id),
            Some(&bob.token),
            serde_json::json!({ "displayname": "Bob behind an SRV record" }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert!(bob.id.ends_with(&format!(":{SRV_NAMED}")), "{}", bob.id);
    let profile = a
        .http
        .get_ok(
            &format!("/_matrix/client/v3/profile/{}", urlencode(&bob.id)),
            Some(&alice.token),
        )
        .await;
    assert_eq!(
        profile["displayname"], "Bob behind an SRV record",
        "{profile}"
    );
    task.abort();
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_server_back_from_a_long_absence_learns_the_state_it_missed() {
    // A keeps at most 3 events for a server that is down: the rest B must ask for.
    let (a, a_name) = federating_with(|c| c.federation.max_queued_per_server = 3).await;
    let (b, b_name) = federating(&[]).await;
    let alice = a.http.register("alice").await;
    let bob = b.http.register("bob").await;
    let p = Pair {
        a,
        a_name,
        b,
        b_name,
        alice,
        bob,
    };
    let room = shared_room(&p).await;
    let Pair {
        a,
        b,
        b_name,
        alice,
        bob,
        ..
    } = p;
    let stopped = b.stop_keeping_data().await;
    let (status, res) = a
        .http
        .json(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.name/",
                urlencode(&room)
            ),
            Some(&alice.token),
            serde_json::json!({ "name": "Renamed while you were away" }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    for i in 1..=40 {
        a.http
            .send_text(&alice.token, &room, &format!("news {i}"))
            .await;
    }
    // A's queue for B is trimmed by its next delivery attempt (B is down).
    common::eventually(30, "A to trim its queue for B", || async {
        let queued = a
            .server
            .services()
            .federation
            .queued_events(&ruma::OwnedServerName::try_from(b_name.as_str()).unwrap());
        (queued <= 3).then_some(())
    })
    .await;
    let b = stopped.start_again().await;
    // The newest events arrive, the ones before are asked for, and the state before the gap
    // comes from A: the room's new name.
    sees_in_order(&b, &bob, &room, &["news 40"]).await;
    common::eventually(30, "B to know the room's new name", || async {
        let name = b
            .http
            .get_ok(
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/m.room.name/",
                    urlencode(&room)
                ),
                Some(&bob.token),
            )
            .await;
        (name["name"] == "Renamed while you were away").then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn members_of_a_space_join_its_restricted_room_from_either_server() {
    let p = pair().await;
    let space =
        p.a.http
            .create_room(
                &p.alice.token,
                serde_json::json!({
                    "preset": "public_chat",
                    "name": "Alumni space",
                    "creation_content": { "type": "m.space" },
                }),
            )
            .await;
    let room =
        p.a.http
            .create_room(
                &p.alice.token,
                serde_json::json!({
                    "preset": "private_chat",
                    "name": "Space members only",
                    "initial_state": [{
                        "type": "m.room.join_rules", "state_key": "",
                        "content": {
                            "join_rule": "restricted",
                            "allow": [{ "type": "m.room_membership", "room_id": space }],
                        },
                    }],
                }),
            )
            .await;
    let join_via = |t: &TestServer, token: &str, room: &str| {
        let path = format!(
            "/_matrix/client/v3/join/{}?via={}",
            urlencode(room),
            urlencode(&p.a_name)
        );
        let http = t.http.clone();
        let token = token.to_owned();
        async move {
            http.json("POST", &path, Some(&token), serde_json::json!({}))
                .await
        }
    };
    // Not in the space yet: neither a local nor a remote user gets in.
    let carol = p.a.http.register("carol").await;
    common::assert_error(
        &join_via(&p.a, &carol.token, &room).await,
        403,
        "M_FORBIDDEN",
    );
    let (status, _) = join_via(&p.b, &p.bob.token, &room).await;
    assert_ne!(status, 200);
    // Members of the space do: Carol on A, and Bob on B (A's Alice authorises his join, and
    // A signs it).
    for (t, who) in [(&p.a, &carol), (&p.b, &p.bob)] {
        let (status, res) = join_via(t, &who.token, &space).await;
        assert_eq!(status, 200, "{res}");
        let (status, res) = join_via(t, &who.token, &room).await;
        assert_eq!(status, 200, "{res}");
    }
    let member = member_event(&p.b, &p.bob, &room, &p.bob.id).await;
    assert_eq!(member["membership"], "join", "{member}");
    assert_eq!(
        member["join_authorised_via_users_server"],
        p.alice.id.as_str(),
        "{member}"
    );
    p.a.http
        .send_text(&p.alice.token, &room, "Welcome, space members")
        .await;
    sees_in_order(&p.b, &p.bob, &room, &["Welcome, space members"]).await;
    p.a.stop().await;
    p.b.stop().await;
}

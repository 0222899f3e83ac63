//! The XMPP bridge against a real Prosody and a real Tsunagu (see `common/`).

mod common;

use common::{Env, MUC};
use serde_json::{Value, json};
use xmpp::{bridge::xmlns, xml::Element};

const GHOST_BOB: &str = "@xmpp_bob=40localhost:localhost";
const PORTAL: &str = "#xmpp_alumni:localhost";

fn is_member(e: &Value, user: &str, membership: &str) -> bool {
    e["type"] == "m.room.member"
        && e["state_key"] == user
        && e["content"]["membership"] == membership
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_edits_replies_and_presence_flow_both_ways() {
    let env = Env::start(&[MUC]).await;
    let (m, alice) = (&env.matrix, &env.alice);
    let mut bob = env.client("bob").await;
    bob.join_with_bridge(MUC, "Bob").await;
    let room = m.join(alice, PORTAL).await;

    // Presence is membership: bob's ghost is in the room, named after his nick; alice's
    // puppet is in the chat, named after her display name.
    m.wait_event(alice, &room, "bob's ghost joining", |e| {
        is_member(e, GHOST_BOB, "join")
    })
    .await;
    assert_eq!(m.display_name(GHOST_BOB).await.as_deref(), Some("Bob"));
    let alice_in_muc = format!("{MUC}/Alice Liddell");
    bob.expect(30, "alice's puppet in the chat", |s| {
        s.name == "presence"
            && s.get("from") == Some(alice_in_muc.as_str())
            && s.get("type").is_none()
    })
    .await;

    // XMPP → Matrix: text, then a correction (XEP-0308) as an edit of the same event.
    bob.say(MUC, "b1", "helo from xmpp", vec![]);
    let original = m
        .wait_message(alice, &room, GHOST_BOB, "m.text", "helo from xmpp")
        .await;
    let original_id = original["event_id"].as_str().unwrap().to_owned();
    bob.say(
        MUC,
        "b2",
        "hello from xmpp",
        vec![
            Element::new("replace")
                .attr("xmlns", xmlns::CORRECT)
                .attr("id", "b1"),
        ],
    );
    let edit = m
        .wait_event(alice, &room, "bob's correction as an edit", |e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
        })
        .await;
    assert_eq!(edit["sender"], GHOST_BOB);
    assert_eq!(
        edit["content"]["m.relates_to"]["event_id"],
        original_id.as_str()
    );
    assert_eq!(edit["content"]["m.new_content"]["body"], "hello from xmpp");
    bob.say(MUC, "b3", "/me waves", vec![]);
    m.wait_message(alice, &room, GHOST_BOB, "m.emote", "waves")
        .await;

    // Matrix → XMPP, from alice's puppet, with the event ID as the message ID.
    let hi = m.send_text(alice, &room, "hi from matrix").await;
    let got = bob
        .expect_message(MUC, "Alice Liddell", "hi from matrix")
        .await;
    assert_eq!(got.get("id"), Some(hi.as_str()));
    m.send(
        alice,
        &room,
        json!({ "msgtype": "m.emote", "body": "waves back" }),
    )
    .await;
    bob.expect_message(MUC, "Alice Liddell", "/me waves back")
        .await;

    // A Matrix edit is a correction of the message it edits.
    let typo = m.send_text(alice, &room, "teh plan").await;
    bob.expect_message(MUC, "Alice Liddell", "teh plan").await;
    m.send(
        alice,
        &room,
        json!({
            "msgtype": "m.text", "body": "* the plan",
            "m.new_content": { "msgtype": "m.text", "body": "the plan" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": typo },
        }),
    )
    .await;
    let correction = bob.expect_message(MUC, "Alice Liddell", "the plan").await;
    let replace = correction
        .child("replace", Some(xmlns::CORRECT))
        .expect("a correction");
    assert_eq!(replace.get("id"), Some(typo.as_str()));

    // A Matrix reply to bob's message is an XMPP reply to it (XEP-0461), quoting his nick in a
    // marked fallback.
    m.send(
        alice,
        &room,
        json!({
            "msgtype": "m.text", "body": "glad you made it",
            "m.relates_to": { "m.in_reply_to": { "event_id": original_id } },
        }),
    )
    .await;
    let reply = bob
        .expect(30, "alice's reply", |s| {
            s.name == "message"
                && s.child_text("body")
                    .is_some_and(|b| b.ends_with("glad you made it"))
        })
        .await;
    let to = reply
        .child("reply", Some(xmlns::REPLY))
        .expect("a reply payload");
    assert_eq!(to.get("id"), Some("b1"));
    assert_eq!(to.get("to"), Some(format!("{MUC}/Bob").as_str()));
    assert!(reply.child("fallback", Some(xmlns::FALLBACK)).is_some());

    // An XMPP reply to alice's message is a Matrix reply, without the quote.
    bob.say(
        MUC,
        "b4",
        "> Alice Liddell\nsame here",
        vec![
            Element::new("reply")
                .attr("xmlns", xmlns::REPLY)
                .attr("to", &alice_in_muc)
                .attr("id", &hi),
            Element::new("fallback")
                .attr("xmlns", xmlns::FALLBACK)
                .attr("for", xmlns::REPLY)
                .with(Element::new("body").attr("start", "0").attr("end", "16")),
        ],
    );
    let answer = m
        .wait_message(alice, &room, GHOST_BOB, "m.text", "same here")
        .await;
    assert_eq!(
        answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        hi.as_str()
    );

    // A nick change renames the same ghost; leaving the chat leaves the room.
    bob.send(Element::new("presence").attr("to", format!("{MUC}/Robert")));
    common::eventually(60, "the ghost renamed to Robert", || async {
        (m.display_name(GHOST_BOB).await.as_deref() == Some("Robert")).then_some(())
    })
    .await;
    bob.say(MUC, "b5", "still me", vec![]);
    let still = m
        .wait_message(alice, &room, GHOST_BOB, "m.text", "still me")
        .await;

    // Retractions (XEP-0424) are redactions, both ways, by their authors.
    bob.say(
        MUC,
        "b6",
        "/me retracted a previous message",
        vec![
            Element::new("retract")
                .attr("xmlns", xmlns::RETRACT)
                .attr("id", "b5"),
        ],
    );
    let still_id = still["event_id"].as_str().unwrap().to_owned();
    m.wait_event(alice, &room, "bob's message redacted", |e| {
        e["event_id"] == still_id.as_str() && e["content"].as_object().is_some_and(|c| c.is_empty())
    })
    .await;
    let (status, res) = m
        .call(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r1",
                bridge_testkit::enc(&room),
                bridge_testkit::enc(&hi)
            ),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let hi_id = hi.clone();
    bob.expect(30, "alice's retraction", |s| {
        s.get("from") == Some(alice_in_muc.as_str())
            && s.child("retract", Some(xmlns::RETRACT))
                .and_then(|r| r.get("id"))
                == Some(hi_id.as_str())
    })
    .await;
    bob.send(
        Element::new("presence")
            .attr("to", format!("{MUC}/Robert"))
            .attr("type", "unavailable"),
    );
    m.wait_event(alice, &room, "bob's ghost leaving", |e| {
        is_member(e, GHOST_BOB, "leave")
    })
    .await;

    // alice leaving the room takes her puppet out of the chat.
    let mut carol = env.client("carol").await;
    carol.join_with_bridge(MUC, "Carol").await;
    let (status, res) = m
        .call(
            "POST",
            &format!(
                "/_matrix/client/v3/rooms/{}/leave",
                bridge_testkit::enc(&room)
            ),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    carol
        .expect(30, "alice's puppet leaving", |s| {
            s.name == "presence"
                && s.get("from") == Some(alice_in_muc.as_str())
                && s.get("type") == Some("unavailable")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prosody_restart_loses_nothing() {
    let mut env = Env::start(&[MUC]).await;
    let admin = env.join_admin_room().await;
    let (m, alice) = (env.matrix.clone(), env.alice.clone());
    let mut bob = env.client("bob").await;
    bob.join_with_bridge(MUC, "Bob").await;
    let room = m.join(&alice, PORTAL).await;
    m.send_text(&alice, &room, "before").await;
    bob.expect_message(MUC, "Alice Liddell", "before").await;

    env.prosody.kill();
    m.wait_event(&alice, &admin, "a disconnect notice", |e| {
        e["content"]["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("Disconnected from the XMPP server"))
    })
    .await;
    // Sent while XMPP is away: held, and delivered once the chat is back.
    m.send_text(&alice, &room, "while the server was down")
        .await;

    env.prosody.restart().await;
    let mut bob = env.client("bob").await;
    bob.join_with_bridge(MUC, "Bob").await;
    // Live, or from the chat's history if the bridge was back before bob: either way once.
    bob.expect_message(MUC, "Alice Liddell", "while the server was down")
        .await;
    bob.say(MUC, "after-restart", "back again", vec![]);
    m.wait_message(&alice, &room, GHOST_BOB, "m.text", "back again")
        .await;
    let copies = m
        .recent(&alice, &room)
        .await
        .into_iter()
        .filter(|e| e["content"]["body"] == "back again")
        .count();
    assert_eq!(copies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_restart_loses_nothing() {
    let mut env = Env::start(&[MUC]).await;
    let (m, alice) = (env.matrix.clone(), env.alice.clone());
    let mut bob = env.client("bob").await;
    bob.join_with_bridge(MUC, "Bob").await;
    let room = m.join(&alice, PORTAL).await;
    bob.say(MUC, "first", "first", vec![]);
    m.wait_message(&alice, &room, GHOST_BOB, "m.text", "first")
        .await;

    env.bridge.kill();
    // Both sides talk while the bridge is away.
    bob.say(MUC, "while-1", "said while the bridge was down", vec![]);
    m.send_text(&alice, &room, "sent while the bridge was down")
        .await;
    env.bridge.restart();

    bob.expect_message(MUC, "Alice Liddell", "sent while the bridge was down")
        .await;
    m.wait_message(
        &alice,
        &room,
        GHOST_BOB,
        "m.text",
        "said while the bridge was down",
    )
    .await;
    // Nothing twice, either way: the chat's replayed history is recognised.
    bob.say(MUC, "marker", "marker", vec![]);
    m.wait_message(&alice, &room, GHOST_BOB, "m.text", "marker")
        .await;
    let events = m.recent(&alice, &room).await;
    for body in ["first", "said while the bridge was down"] {
        let n = events
            .iter()
            .filter(|e| e["content"]["body"] == body)
            .count();
        assert_eq!(n, 1, "{body:?} shown {n} times");
    }
    m.send_text(&alice, &room, "after").await;
    let next = bob
        .expect(30, "the next message from alice", |s| {
            s.name == "message" && s.get("from") == Some(format!("{MUC}/Alice Liddell").as_str())
        })
        .await;
    assert_eq!(next.child_text("body"), Some("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_command_in_the_admin_room_creates_a_portal() {
    let env = Env::start(&[]).await;
    let admin = env.join_admin_room().await;
    let (m, alice) = (&env.matrix, &env.alice);
    m.send_text(alice, &admin, "!link garden@conference.localhost")
        .await;
    let room = m.join(alice, "#xmpp_garden:localhost").await;
    let mut carol = env.client("carol").await;
    carol
        .join_with_bridge("garden@conference.localhost", "Carol")
        .await;
    carol.say("garden@conference.localhost", "c1", "found you", vec![]);
    m.wait_message(
        alice,
        &room,
        "@xmpp_carol=40localhost:localhost",
        "m.text",
        "found you",
    )
    .await;
    m.send_text(alice, &room, "hello carol").await;
    carol
        .expect_message(
            "garden@conference.localhost",
            "Alice Liddell",
            "hello carol",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_occupant_claims_their_address_and_becomes_one_person() {
    let env = Env::start_with(
        &[MUC],
        bridge_testkit::Extras {
            bots: false,
            double_puppet: true,
        },
    )
    .await;
    let (m, alice) = (&env.matrix, &env.alice);
    let mut bob_xmpp = env.client("bob").await;
    bob_xmpp.join_with_bridge(MUC, "Bob").await;
    let room = m.join(alice, PORTAL).await;
    bob_xmpp.say(MUC, "x1", "hello as a ghost", vec![]);
    m.wait_message(alice, &room, GHOST_BOB, "m.text", "hello as a ghost")
        .await;

    // bob's own Matrix account asks; the code is said in the chat from bob@localhost.
    let bob = m.register("bob").await;
    m.join(&bob, PORTAL).await;
    m.send_text(&bob, &room, "!claim bob@localhost").await;
    let notice = m
        .wait_event(alice, &room, "the claim code", |e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("To prove bob@localhost is yours"))
        })
        .await;
    let code = bridge_testkit::claim_code(&notice);
    // carol saying the code proves nothing: it is not her address.
    let mut carol = env.client("carol").await;
    carol.join_with_bridge(MUC, "Carol").await;
    carol.say(MUC, "c1", &format!("!claim {code}"), vec![]);
    bob_xmpp.say(MUC, "x2", &format!("!claim {code}"), vec![]);

    m.wait_event(alice, &room, "the ghost leaving", |e| {
        is_member(e, GHOST_BOB, "leave")
    })
    .await;
    bob_xmpp.say(MUC, "x3", "now as myself", vec![]);
    let mine = m
        .wait_event(alice, &room, "bob's next message", |e| {
            e["content"]["body"] == "now as myself"
        })
        .await;
    assert_eq!(mine["sender"], bob.id.as_str());
    // The codes themselves were not shown, and the ghost did not come back.
    let events = m.recent(alice, &room).await;
    assert!(
        !events.iter().any(|e| e["content"]["body"]
            .as_str()
            .is_some_and(|b| b.ends_with(&code) && e["sender"] != "@xmppbot:localhost")),
        "a claim code was shown"
    );
    let last_ghost_membership = events
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == GHOST_BOB)
        .unwrap();
    assert_eq!(last_ghost_membership["content"]["membership"], "leave");

    // What bob said in the chat is not said there once more by a puppet of his account.
    m.send_text(alice, &room, "after bob").await;
    let bob_nick = format!("{MUC}/Bob");
    carol
        .expect(30, "alice's next message", |s| {
            let body = s.child_text("body").unwrap_or_default();
            assert!(
                body != "now as myself" || s.get("from") == Some(bob_nick.as_str()),
                "echoed: {}",
                s.to_xml()
            );
            s.name == "message" && body == "after bob"
        })
        .await;

    // bob undoes the link: his address shows as its ghost again.
    m.send_text(&bob, &room, "!unclaim").await;
    m.wait_event(alice, &room, "the link undone", |e| {
        e["content"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("is no longer linked with bob@localhost"))
    })
    .await;
    bob_xmpp.say(MUC, "x4", "a ghost again", vec![]);
    m.wait_message(alice, &room, GHOST_BOB, "m.text", "a ghost again")
        .await;
}

/// Out-of-band data (XEP-0066) naming a file's URL.
fn oob(url: &str) -> Element {
    Element::new("x")
        .attr("xmlns", xmlns::OOB)
        .with(Element::new("url").text(url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_cross_both_ways_through_the_upload_service() {
    let env = Env::start(&[MUC]).await;
    let (m, alice) = (&env.matrix, &env.alice);
    let mut bob = env.client("bob").await;
    bob.join_with_bridge(MUC, "Bob").await;
    let room = m.join(alice, PORTAL).await;
    let http = reqwest::Client::new();
    let upload_base = format!("http://127.0.0.1:{}/", env.prosody.http_port);

    // Matrix → XMPP: a picture alice shares goes to the chat's upload service (XEP-0363) and
    // is shown by its URL, which serves the same bytes.
    let picture: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    m.share_file(alice, &room, (&picture, "image/png"), "venue.png", None)
        .await;
    let from = format!("{MUC}/Alice Liddell");
    let got = bob
        .expect(30, "alice's picture", |s| {
            s.name == "message"
                && s.get("from") == Some(from.as_str())
                && s.child("x", Some(xmlns::OOB)).is_some()
        })
        .await;
    let url = got.child("x", Some(xmlns::OOB)).unwrap().child_text("url");
    let url = url.unwrap().to_owned();
    assert_eq!(got.child_text("body"), Some(url.as_str()));
    assert!(url.starts_with(&upload_base), "{url}");
    let res = http.get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.bytes().await.unwrap().to_vec(), picture);

    // A file larger than max_file_bytes is announced by name.
    let big = vec![7u8; 150_000];
    let file = (&big[..], "application/octet-stream");
    m.share_file(alice, &room, file, "big.bin", None).await;
    bob.expect_message(MUC, "Alice Liddell", "[file] big.bin")
        .await;

    // XMPP → Matrix: bob uploads a file as his client does (a slot from the upload service,
    // then a PUT) and shares its URL; alice gets a file in the room, the same bytes.
    bob.send(
        Element::new("iq")
            .attr("to", "upload.localhost")
            .attr("type", "get")
            .attr("id", "slot1")
            .with(
                Element::new("request")
                    .attr("xmlns", xmlns::UPLOAD)
                    .attr("filename", "notes.txt")
                    .attr("size", "10")
                    .attr("content-type", "text/plain"),
            ),
    );
    let answer = bob
        .expect(30, "an upload slot", |s| {
            s.name == "iq" && s.get("id") == Some("slot1")
        })
        .await;
    let slot = answer
        .child("slot", Some(xmlns::UPLOAD))
        .unwrap_or_else(|| panic!("no slot: {}", answer.to_xml()));
    let put = slot.child("put", None).unwrap();
    let get = slot
        .child("get", None)
        .unwrap()
        .get("url")
        .unwrap()
        .to_owned();
    let mut upload = http
        .put(put.get("url").unwrap())
        .header("Content-Type", "text/plain")
        .body("hello file");
    for header in put.children.iter().filter(|h| h.name == "header") {
        upload = upload.header(header.get("name").unwrap(), header.text.as_str());
    }
    let status = upload.send().await.unwrap().status();
    assert!(status.is_success(), "{status}");
    bob.say(MUC, "f1", &get, vec![oob(&get)]);
    let file = m
        .wait_event(alice, &room, "bob's file", |e| {
            e["sender"] == GHOST_BOB && e["content"]["msgtype"] == "m.file"
        })
        .await;
    assert_eq!(file["content"]["body"], "notes.txt");
    let mxc = file["content"]["url"].as_str().unwrap();
    assert_eq!(
        m.download(alice, mxc).await,
        (200, Value::String("hello file".into()))
    );

    // A URL anywhere else stays a link: the bridge does not fetch it.
    let elsewhere = format!("{}/_matrix/client/versions", m.base);
    bob.say(MUC, "f2", &elsewhere, vec![oob(&elsewhere)]);
    m.wait_message(alice, &room, GHOST_BOB, "m.text", &elsewhere)
        .await;
}

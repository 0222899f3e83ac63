//! The mailing-list bridge against a real Postfix and Dovecot and a real Tsunagu (see
//! `common/`).

mod common;

use common::{Env, LIST, PORTAL, mail};
use mail_parser::MessageParser;
use serde_json::{Value, json};

const GHOST_BOB: &str = "@mail_bob=40example.test:localhost";
const BOB: &str = "bob@example.test";

fn parse(raw: &[u8]) -> mail_parser::Message<'_> {
    MessageParser::default().parse(raw).expect("a mail")
}

fn header(raw: &[u8], name: &str) -> Option<String> {
    parse(raw).header_raw(name).map(|v| v.trim().to_owned())
}

/// A mail's attachments: name, media type, bytes.
fn attachments(raw: &[u8]) -> Vec<(String, String, Vec<u8>)> {
    use mail_parser::MimeHeaders;
    parse(raw)
        .attachments()
        .map(|a| {
            let mime = a
                .content_type()
                .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()));
            (
                a.attachment_name().unwrap_or_default().to_owned(),
                mime.unwrap_or_default(),
                a.contents().to_vec(),
            )
        })
        .collect()
}

fn file_of(name: &str, bytes: &[u8]) -> (String, String, Vec<u8>) {
    let mime = if name.ends_with(".png") {
        "image/png"
    } else {
        "text/plain"
    };
    (name.to_owned(), mime.to_owned(), bytes.to_vec())
}

fn body_is(e: &Value, body: &str) -> bool {
    e["type"] == "m.room.message" && e["content"]["body"] == body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailing_list_and_a_room_talk_both_ways_in_threads() {
    let env = Env::start().await;
    let (m, alice) = (&env.matrix, &env.alice);
    let room = m.join(alice, PORTAL).await;
    env.subscribe("bob").await;
    // A moderator subscribes carol with a room command.
    m.send_text(alice, &room, "!subscribe carol@example.test")
        .await;
    m.wait_event(alice, &room, "the subscription confirmed", |e| {
        e["content"]["body"]
            == "carol@example.test is subscribed to alumni@lists.example.test (each)."
    })
    .await;

    // Mail → room: a post with an HTML part shows as bob's ghost, sanitised.
    let post = format!(
        "From: Bob Example <{BOB}>\r\nTo: {LIST}\r\nSubject: Reunion\r\n\
         Message-ID: <reunion@example.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nShall we meet on Friday?\r\n\
         --b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
         <p>Shall we meet on <b>Friday</b>?<script>alert(1)</script></p>\r\n--b--\r\n"
    );
    env.mail.submit(BOB, LIST, post.as_bytes()).await;
    let root = m
        .wait_event(alice, &room, "bob's post", |e| {
            e["sender"] == GHOST_BOB && body_is(e, "Reunion\n\nShall we meet on Friday?")
        })
        .await;
    let root_id = root["event_id"].as_str().unwrap().to_owned();
    let html = root["content"]["formatted_body"].as_str().unwrap();
    assert!(
        html.contains("<b>Friday</b>") && !html.contains("script"),
        "{html}"
    );
    assert_eq!(
        m.display_name(GHOST_BOB).await.as_deref(),
        Some("Bob Example")
    );

    // The list passes it on to carol, as the same message with list headers.
    let passed = env
        .mail
        .wait_mail("carol", "bob's post", |m| {
            m.message_id() == Some("reunion@example.test")
        })
        .await;
    assert_eq!(
        header(&passed, "List-Id").as_deref(),
        Some("Alumni <alumni.lists.example.test>")
    );

    // Room → mail: alice answers in the thread; the mail answers bob's, with list headers.
    let answer = m
        .send(
            alice,
            &room,
            json!({
                "msgtype": "m.text", "body": "Friday works for me",
                "m.relates_to": { "rel_type": "m.thread", "event_id": root_id,
                                  "is_falling_back": true,
                                  "m.in_reply_to": { "event_id": root_id } },
            }),
        )
        .await;
    let got = env
        .mail
        .wait_mail("bob", "alice's answer", |m| {
            m.body_text(0)
                .is_some_and(|b| b.contains("Friday works for me"))
        })
        .await;
    let mail_in = parse(&got);
    assert_eq!(mail_in.subject(), Some("Re: Reunion"));
    assert_eq!(
        mail_in.in_reply_to().as_text(),
        Some("reunion@example.test")
    );
    let from = mail_in.from().and_then(|a| a.first()).unwrap();
    assert_eq!(from.name(), Some("Alice Liddell via Alumni"));
    assert_eq!(
        header(&got, "Reply-To").as_deref(),
        Some("\"Alumni\" <alumni@lists.example.test>")
    );
    assert_eq!(
        header(&got, "List-Unsubscribe").as_deref(),
        Some("<mailto:alumni+unsubscribe@lists.example.test>")
    );
    let answer_mail_id = mail_in.message_id().unwrap().to_owned();

    // bob answers that mail from his mail client: it lands in the same thread, unquoted.
    let reply = mail(
        &format!("Bob Example <{BOB}>"),
        "Re: Reunion",
        "<great@example.test>",
        Some(&format!("<{answer_mail_id}>")),
        "Great, see you there\r\n\r\nOn Thu, Alice wrote:\r\n> Friday works for me\r\n",
    );
    env.mail.submit(BOB, LIST, &reply).await;
    let threaded = m
        .wait_event(alice, &room, "bob's answer", |e| {
            body_is(e, "Great, see you there")
        })
        .await;
    let rel = &threaded["content"]["m.relates_to"];
    assert_eq!(rel["rel_type"], "m.thread");
    assert_eq!(rel["event_id"], root_id.as_str());
    assert_eq!(rel["m.in_reply_to"]["event_id"], answer.as_str());

    // An attachment arrives as a file in the room, the same bytes.
    let with_file = format!(
        "From: {BOB}\r\nTo: {LIST}\r\nSubject: Notes\r\nMessage-ID: <notes@example.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n\
         --m\r\nContent-Type: text/plain\r\n\r\nThe notes.\r\n\
         --m\r\nContent-Type: text/plain; name=\"notes.txt\"\r\n\
         Content-Disposition: attachment; filename=\"notes.txt\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\naGVsbG8gZmlsZQ==\r\n--m--\r\n"
    );
    env.mail.submit(BOB, LIST, with_file.as_bytes()).await;
    let file = m
        .wait_event(alice, &room, "the attachment", |e| {
            e["content"]["msgtype"] == "m.file"
        })
        .await;
    assert_eq!(file["content"]["body"], "notes.txt");
    let mxc = file["content"]["url"].as_str().unwrap();
    assert_eq!(
        m.download(alice, mxc).await,
        (200, Value::String("hello file".into()))
    );
    // The list passes the post on to carol with its attachment.
    let passed = env
        .mail
        .wait_mail("carol", "bob's notes", |m| {
            m.message_id() == Some("notes@example.test")
        })
        .await;
    assert_eq!(
        attachments(&passed),
        vec![file_of("notes.txt", b"hello file")]
    );

    // Room → mail: a picture alice shares (with a caption) is attached to the mail, the same
    // bytes.
    let picture: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let file = (&picture[..], "image/png");
    m.share_file(alice, &room, file, "venue.png", Some("The venue"))
        .await;
    let shared = env
        .mail
        .wait_mail("bob", "alice's picture", |m| {
            m.body_text(0).is_some_and(|b| b.contains("The venue"))
        })
        .await;
    assert_eq!(attachments(&shared), vec![file_of("venue.png", &picture)]);
    assert_eq!(parse(&shared).subject(), Some("The venue"));

    // No loops: alice's mail sent back to the list, and bob's post sent again, show nothing.
    env.mail.submit(BOB, LIST, &got).await;
    env.mail.submit(BOB, LIST, post.as_bytes()).await;
    // Someone who is not subscribed is not shown either.
    let stranger = mail(
        "dave@example.test",
        "Hi",
        "<dave@example.test>",
        None,
        "let me in",
    );
    env.mail.submit("dave@example.test", LIST, &stranger).await;
    env.mail
        .submit(
            BOB,
            LIST,
            &mail(BOB, "Marker", "<marker@example.test>", None, "marker"),
        )
        .await;
    m.wait_event(alice, &room, "the marker", |e| {
        body_is(e, "Marker\n\nmarker")
    })
    .await;
    let events = m.recent(alice, &room).await;
    let count = |body: &str| events.iter().filter(|e| body_is(e, body)).count();
    assert_eq!(count("Friday works for me"), 1);
    assert_eq!(count("Reunion\n\nShall we meet on Friday?"), 1);
    assert_eq!(count("Hi\n\nlet me in"), 0);
    // bob does not get his own posts back.
    assert_eq!(env.mail.count("bob", "Shall we meet"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_stops_delivery_digests_collect_and_bounces_unsubscribe() {
    let env = Env::start().await;
    let admin = env.join_admin_room().await;
    let (m, alice) = (&env.matrix, &env.alice);
    let room = m.join(alice, PORTAL).await;
    env.subscribe("bob").await;
    env.subscribe("carol").await;
    let carol = "carol@example.test";
    env.mail
        .submit(
            carol,
            "alumni+digest@lists.example.test",
            &mail(carol, "digest", "<digest-carol@example.test>", None, ""),
        )
        .await;
    env.mail
        .wait_mail("carol", "the digest confirmation", |m| {
            m.body_text(0).is_some_and(|b| b.contains("one digest"))
        })
        .await;

    m.send_text(alice, &room, "first news").await;
    m.send_text(alice, &room, "second news").await;
    for text in ["first news", "second news"] {
        env.mail
            .wait_mail("bob", text, |m| {
                m.body_text(0).is_some_and(|b| b.contains(text))
            })
            .await;
    }
    // carol gets both in one digest, not one mail each.
    let digest = env
        .mail
        .wait_mail("carol", "a digest", |m| {
            m.subject().is_some_and(|s| s.contains("digest"))
                && m.body_text(0).is_some_and(|b| b.contains("second news"))
        })
        .await;
    assert!(parse(&digest).body_text(0).unwrap().contains("first news"));
    assert_eq!(env.mail.count("carol", "first news"), 1);

    // bob leaves by mail; what follows reaches carol's digest but not bob.
    env.mail
        .submit(
            BOB,
            "alumni+unsubscribe@lists.example.test",
            &mail(BOB, "unsubscribe", "<unsub-bob@example.test>", None, ""),
        )
        .await;
    env.mail
        .wait_mail("bob", "the goodbye", |m| {
            m.body_text(0)
                .is_some_and(|b| b.contains("You have left Alumni"))
        })
        .await;
    m.send_text(alice, &room, "third news").await;
    env.mail
        .wait_mail("carol", "the next digest", |m| {
            m.body_text(0).is_some_and(|b| b.contains("third news"))
        })
        .await;
    assert_eq!(env.mail.count("bob", "third news"), 0);

    // A subscriber whose mail bounces is unsubscribed (max_bounces = 1 here).
    m.send_text(alice, &room, "!subscribe ghost@bounce.example.test")
        .await;
    m.wait_event(alice, &room, "the subscription", |e| {
        e["content"]["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("ghost@bounce.example.test is subscribed"))
    })
    .await;
    m.send_text(alice, &room, "fourth news").await;
    m.wait_event(alice, &admin, "the bounce notice", |e| {
        e["content"]["body"]
            == "ghost@bounce.example.test bounced 1 times and was unsubscribed from alumni@lists.example.test."
    })
    .await;
    m.send_text(alice, &room, "!subscribers").await;
    let list = m
        .wait_event(alice, &room, "the subscriber list", |e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("1 subscribers of"))
        })
        .await;
    assert!(
        list["content"]["body"]
            .as_str()
            .unwrap()
            .contains("carol@example.test (digest)")
    );

    // Room commands are for moderators only.
    let mallory = m.register("mallory").await;
    m.join(&mallory, PORTAL).await;
    m.send_text(&mallory, &room, "!unsubscribe carol@example.test")
        .await;
    m.wait_event(alice, &room, "the refusal", |e| {
        e["content"]["body"] == "List commands are for the room's moderators."
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_restart_loses_nothing() {
    let mut env = Env::start().await;
    let (m, alice) = (env.matrix.clone(), env.alice.clone());
    let room = m.join(&alice, PORTAL).await;
    env.subscribe("bob").await;

    env.bridge.kill();
    // Both sides write while the bridge is away: Postfix keeps bob's mail queued, the
    // homeserver keeps alice's message.
    env.mail
        .submit(
            BOB,
            LIST,
            &mail(
                BOB,
                "Away",
                "<away@example.test>",
                None,
                "written while the bridge was down",
            ),
        )
        .await;
    m.send_text(&alice, &room, "said while the bridge was down")
        .await;
    env.bridge.restart();

    m.wait_event(&alice, &room, "bob's mail", |e| {
        body_is(e, "Away\n\nwritten while the bridge was down")
    })
    .await;
    env.mail
        .wait_mail("bob", "alice's message", |m| {
            m.body_text(0)
                .is_some_and(|b| b.contains("said while the bridge was down"))
        })
        .await;
    // Once each.
    m.send_text(&alice, &room, "after").await;
    env.mail
        .wait_mail("bob", "the next message", |m| {
            m.body_text(0).is_some_and(|b| b.contains("after"))
        })
        .await;
    assert_eq!(env.mail.count("bob", "said while the bridge was down"), 1);
    let events = m.recent(&alice, &room).await;
    let shown = events
        .iter()
        .filter(|e| body_is(e, "Away\n\nwritten while the bridge was down"))
        .count();
    assert_eq!(shown, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_claims_their_address_and_becomes_one_person() {
    let env = Env::start_with(bridge_testkit::Extras {
        bots: true,
        double_puppet: true,
    })
    .await;
    let (m, alice) = (&env.matrix, &env.alice);
    let room = m.join(alice, PORTAL).await;
    // The community bots are in the room, thanks on.
    m.call(
        "POST",
        &format!(
            "/_matrix/client/v3/rooms/{}/invite",
            bridge_testkit::enc(&room)
        ),
        Some(&alice.token),
        Some(json!({ "user_id": "@tsunagu:localhost" })),
    )
    .await;
    m.wait_event(alice, &room, "the bots joining", |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == "@tsunagu:localhost"
            && e["content"]["membership"] == "join"
    })
    .await;
    for habit in ["thanks", "people"] {
        m.send_text(alice, &room, &format!("!bots enable {habit}"))
            .await;
        m.wait_event(alice, &room, &format!("{habit} on"), |e| {
            e["sender"] == "@tsunagu:localhost"
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(habit))
        })
        .await;
    }

    // bob writes by mail, and is thanked as his ghost.
    env.subscribe("bob").await;
    env.mail
        .submit(
            BOB,
            LIST,
            &mail(
                BOB,
                "Photos",
                "<photos@example.test>",
                None,
                "the photos are up",
            ),
        )
        .await;
    m.wait_event(alice, &room, "bob's mail", |e| {
        e["sender"] == GHOST_BOB && body_is(e, "Photos\n\nthe photos are up")
    })
    .await;
    // A mail without a subject is just its text: bob tells the bots about himself by mail.
    env.mail
        .submit(
            BOB,
            LIST,
            &mail(
                BOB,
                "",
                "<me@example.test>",
                None,
                "!me cares about gardening",
            ),
        )
        .await;
    m.wait_event(alice, &room, "bob's entry", |e| {
        e["sender"] == "@tsunagu:localhost"
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("cares about gardening"))
    })
    .await;
    m.send_text(alice, &room, &format!("!thanks {GHOST_BOB} for the photos"))
        .await;
    m.wait_event(alice, &room, "the thanks note", |e| {
        e["sender"] == "@tsunagu:localhost"
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("the photos"))
    })
    .await;

    // bob gets an account of his own and claims his address with the code mailed to it.
    let bob = m.register("bob").await;
    m.join(&bob, PORTAL).await;
    m.send_text(&bob, &room, "!claim bob@example.test").await;
    let code_mail = env
        .mail
        .wait_mail("bob", "the claim code", |m| {
            m.body_text(0).is_some_and(|b| b.contains("!confirm "))
        })
        .await;
    let text = parse(&code_mail).body_text(0).unwrap().into_owned();
    let code = text
        .split("!confirm ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    // Someone else cannot use the code.
    let mallory = m.register("mallory").await;
    m.join(&mallory, PORTAL).await;
    m.send_text(&mallory, &room, &format!("!confirm {code}"))
        .await;
    m.wait_event(alice, &room, "mallory refused", |e| {
        e["content"]["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("That code is not right"))
    })
    .await;
    m.send_text(&bob, &room, &format!("!confirm {code}")).await;

    // One person: the ghost leaves, the thanks are bob's, and his mail shows as him.
    m.wait_event(alice, &room, "the ghost leaving", |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == GHOST_BOB
            && e["content"]["membership"] == "leave"
    })
    .await;
    m.wait_event(alice, &room, "the bots taking note", |e| {
        e["sender"] == "@tsunagu:localhost"
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("is the same person"))
    })
    .await;
    let me = m.send_text(&bob, &room, "!me").await;
    m.wait_event(alice, &room, "bob's entry, now his", |e| {
        e["sender"] == "@tsunagu:localhost"
            && e["content"]["m.relates_to"]["event_id"] == me.as_str()
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("cares about gardening"))
    })
    .await;
    m.send_text(&bob, &room, "!thanks mine").await;
    m.wait_event(alice, &room, "bob's thanks", |e| {
        e["sender"] == "@tsunagu:localhost"
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("for the photos"))
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| !b.contains("Thanks are for"))
    })
    .await;
    // His next mail, with a file, shows as him; the list passes it on to carol once, the file
    // attached (not once more as a mail of its own).
    env.subscribe("carol").await;
    let again = format!(
        "From: {BOB}\r\nTo: {LIST}\r\nSubject: Again\r\nMessage-ID: <again@example.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n\
         --m\r\nContent-Type: text/plain\r\n\r\nnow as myself\r\n\
         --m\r\nContent-Type: text/plain; name=\"plan.txt\"\r\n\
         Content-Disposition: attachment; filename=\"plan.txt\"\r\n\r\nthe plan\r\n--m--\r\n"
    );
    env.mail.submit(BOB, LIST, again.as_bytes()).await;
    let again = m
        .wait_event(alice, &room, "bob's next mail", |e| {
            body_is(e, "Again\n\nnow as myself")
        })
        .await;
    assert_eq!(again["sender"], bob.id.as_str());
    let passed = env
        .mail
        .wait_mail("carol", "bob's mail passed on", |m| {
            m.message_id() == Some("again@example.test")
        })
        .await;
    assert_eq!(attachments(&passed), vec![file_of("plan.txt", b"the plan")]);
    // What bob says in the room is not mailed back to him.
    m.send_text(&bob, &room, "said in the room by bob").await;
    m.send_text(alice, &room, "alice after bob").await;
    env.mail
        .wait_mail("bob", "alice's message", |m| {
            m.body_text(0)
                .is_some_and(|b| b.contains("alice after bob"))
        })
        .await;
    assert_eq!(env.mail.count("bob", "said in the room by bob"), 0);
    env.mail
        .wait_mail("carol", "alice's message", |m| {
            m.body_text(0)
                .is_some_and(|b| b.contains("alice after bob"))
        })
        .await;
    assert_eq!(env.mail.count("carol", "[file]"), 0);
}

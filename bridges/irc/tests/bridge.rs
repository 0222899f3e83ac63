//! The IRC bridge against a real ngircd and a real Tsunagu (see `common/`).

mod common;

use common::{BRIDGE_NICK, Env, IrcClient};
use serde_json::json;

const GHOST_BOB: &str = "@irc_bob:localhost";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_nicks_and_topics_flow_both_ways() {
    let env = Env::start(&["#test"]).await;
    let (m, alice) = (&env.matrix, &env.alice);

    let mut bob = IrcClient::connect(env.ircd.port, "bob").await;
    bob.join_with_bridge("#test").await;
    let room = m.join(alice, "#irc_test:localhost").await;

    // IRC → Matrix: a ghost user named after the nick.
    bob.send("PRIVMSG #test :hello from irc");
    m.wait_message(alice, &room, GHOST_BOB, "m.text", "hello from irc")
        .await;
    assert_eq!(m.display_name(GHOST_BOB).await.as_deref(), Some("bob"));
    bob.send("PRIVMSG #test :\x01ACTION dances\x01");
    m.wait_message(alice, &room, GHOST_BOB, "m.emote", "dances")
        .await;
    bob.send("NOTICE #test :a notice");
    m.wait_message(alice, &room, GHOST_BOB, "m.notice", "a notice")
        .await;

    // Matrix → IRC: relayed by the bridge's nick as `<displayname> text`.
    m.send_text(alice, &room, "hi from matrix").await;
    bob.expect_from_bridge("PRIVMSG", "#test", "<Alice Liddell> hi from matrix")
        .await;
    m.send(
        alice,
        &room,
        json!({ "msgtype": "m.emote", "body": "waves" }),
    )
    .await;
    bob.expect_from_bridge("PRIVMSG", "#test", "\x01ACTION Alice Liddell waves\x01")
        .await;
    m.send(
        alice,
        &room,
        json!({ "msgtype": "m.notice", "body": "psst" }),
    )
    .await;
    bob.expect_from_bridge("NOTICE", "#test", "<Alice Liddell> psst")
        .await;
    m.send_text(alice, &room, "line one\nline two").await;
    bob.expect_from_bridge("PRIVMSG", "#test", "<Alice Liddell> line one")
        .await;
    bob.expect_from_bridge("PRIVMSG", "#test", "<Alice Liddell> line two")
        .await;
    let original = m.send_text(alice, &room, "teh typo").await;
    bob.expect_from_bridge("PRIVMSG", "#test", "<Alice Liddell> teh typo")
        .await;
    m.send(
        alice,
        &room,
        json!({
            "msgtype": "m.text", "body": "* the typo",
            "m.new_content": { "msgtype": "m.text", "body": "the typo" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": original },
        }),
    )
    .await;
    bob.expect_from_bridge("PRIVMSG", "#test", "<Alice Liddell> * the typo")
        .await;

    // A long message arrives whole, split into lines that each fit IRC's limit.
    let long: String = (0..120)
        .map(|i| format!("w{i} "))
        .collect::<String>()
        .repeat(2);
    let long = long.trim_end().to_owned();
    m.send_text(alice, &room, &long).await;
    let mut got = String::new();
    while got.len() < long.len() {
        let line = bob
            .expect(30, "a piece of the long message", |msg| {
                msg.command == "PRIVMSG" && msg.nick() == Some(BRIDGE_NICK)
            })
            .await;
        let piece = line.param(1).strip_prefix("<Alice Liddell> ").unwrap();
        assert!(
            line.param(1).len() < 450,
            "line too long: {}",
            line.param(1).len()
        );
        if !got.is_empty() {
            got.push(' ');
        }
        got.push_str(piece);
    }
    assert_eq!(got, long);

    // Topics, both ways.
    bob.send("TOPIC #test :set on irc");
    common::eventually(60, "the IRC topic on Matrix", || async {
        (m.topic(alice, &room).await.as_deref() == Some("set on irc")).then_some(())
    })
    .await;
    m.set_topic(alice, &room, "set on matrix").await;
    bob.expect(30, "the Matrix topic on IRC", |msg| {
        msg.command == "TOPIC" && msg.param(0) == "#test" && msg.param(1) == "set on matrix"
    })
    .await;

    // A nick change renames the same ghost.
    bob.send("NICK bobby");
    common::eventually(60, "the ghost renamed to bobby", || async {
        (m.display_name(GHOST_BOB).await.as_deref() == Some("bobby")).then_some(())
    })
    .await;
    bob.nick = "bobby".into();
    bob.send("PRIVMSG #test :still me");
    m.wait_message(alice, &room, GHOST_BOB, "m.text", "still me")
        .await;

    // A newcomer appears as their own ghost when they join, and leaves with PART.
    let mut carol = IrcClient::connect(env.ircd.port, "carol").await;
    carol.join_with_bridge("#test").await;
    m.wait_event(alice, &room, "carol's ghost joining", |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == "@irc_carol:localhost"
            && e["content"]["membership"] == "join"
    })
    .await;
    carol.send("PART #test :bye");
    m.wait_event(alice, &room, "carol's ghost leaving", |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == "@irc_carol:localhost"
            && e["content"]["membership"] == "leave"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_irc_server_restarts_without_losing_messages() {
    let mut env = Env::start(&["#test"]).await;
    let admin = env.join_admin_room().await;
    let (m, alice) = (env.matrix.clone(), env.alice.clone());
    let mut bob = IrcClient::connect(env.ircd.port, "bob").await;
    bob.join_with_bridge("#test").await;
    let room = m.join(&alice, "#irc_test:localhost").await;
    m.send_text(&alice, &room, "before").await;
    bob.expect_from_bridge("PRIVMSG", "#test", "<Alice Liddell> before")
        .await;

    env.ircd.kill();
    m.wait_event(
        &alice,
        &admin,
        "a disconnect notice in the admin room",
        |e| {
            e["content"]["msgtype"] == "m.notice"
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("Disconnected from test"))
        },
    )
    .await;
    // Sent while IRC is away: queued, delivered after the reconnect.
    m.send_text(&alice, &room, "while you were away").await;

    env.ircd.restart().await;
    // bob is back before the bridge's first retry (reconnect_min_ms = 3000).
    let mut bob = IrcClient::connect(env.ircd.port, "bob").await;
    bob.join_with_bridge("#test").await;
    bob.expect_from_bridge("PRIVMSG", "#test", "<Alice Liddell> while you were away")
        .await;
    bob.send("PRIVMSG #test :back again");
    m.wait_message(&alice, &room, GHOST_BOB, "m.text", "back again")
        .await;
    m.send_text(&alice, &room, "welcome back").await;
    bob.expect_from_bridge("PRIVMSG", "#test", "<Alice Liddell> welcome back")
        .await;
    m.wait_event(&alice, &admin, "a reconnect notice", |e| {
        e["content"]["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("Connected to test"))
            && e["origin_server_ts"].as_u64().is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_while_the_bridge_is_down_reaches_irc() {
    let mut env = Env::start(&["#test"]).await;
    let (m, alice) = (env.matrix.clone(), env.alice.clone());
    let mut bob = IrcClient::connect(env.ircd.port, "bob").await;
    bob.join_with_bridge("#test").await;
    let room = m.join(&alice, "#irc_test:localhost").await;
    m.send_text(&alice, &room, "first").await;
    bob.expect_from_bridge("PRIVMSG", "#test", "<Alice Liddell> first")
        .await;

    env.bridge.kill();
    bob.expect(30, "the bridge quitting", |msg| {
        msg.command == "QUIT" && msg.nick() == Some(BRIDGE_NICK)
    })
    .await;
    m.send_text(&alice, &room, "sent while the bridge was down")
        .await;
    env.bridge.restart();
    bob.expect(60, "the bridge back in #test", |msg| {
        msg.command == "JOIN" && msg.nick() == Some(BRIDGE_NICK)
    })
    .await;
    bob.expect_from_bridge(
        "PRIVMSG",
        "#test",
        "<Alice Liddell> sent while the bridge was down",
    )
    .await;
    // And nothing twice: the next line is the next message.
    m.send_text(&alice, &room, "after").await;
    let next = bob
        .expect(30, "the next relayed line", |msg| {
            msg.command == "PRIVMSG" && msg.nick() == Some(BRIDGE_NICK)
        })
        .await;
    assert_eq!(
        next.param(1),
        "<Alice Liddell> after",
        "log:\n{}",
        env.bridge_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_command_in_the_admin_room_creates_a_portal() {
    let env = Env::start(&[]).await;
    let admin = env.join_admin_room().await;
    let (m, alice) = (&env.matrix, &env.alice);
    m.send_text(alice, &admin, "!link #elsewhere").await;
    let mut dave = IrcClient::connect(env.ircd.port, "dave").await;
    dave.join_with_bridge("#elsewhere").await;
    let room = m.join(alice, "#irc_elsewhere:localhost").await;
    dave.send("PRIVMSG #elsewhere :found you");
    m.wait_message(alice, &room, "@irc_dave:localhost", "m.text", "found you")
        .await;
    m.send_text(alice, &room, "hello dave").await;
    dave.expect_from_bridge("PRIVMSG", "#elsewhere", "<Alice Liddell> hello dave")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_the_bridge_and_keeps_the_namespace() {
    let env = Env::start(&[]).await;
    env.join_admin_room().await; // the bridge is up
    let text = std::fs::read_to_string(env.dir.path().join("registration.yaml")).unwrap();
    let reg = tsunagu_appservice::Registration::from_yaml(&text).unwrap();
    let m = &env.matrix;
    let (status, res) = m
        .call(
            "POST",
            "/_matrix/client/v1/appservice/irc/ping",
            Some(&reg.as_token),
            Some(json!({ "transaction_id": "ping-1" })),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert!(res["duration_ms"].is_u64(), "{res}");

    // Acting outside its namespace is refused; a plain user cannot take a ghost's name.
    let (status, res) = m
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami?user_id=%40alice%3Alocalhost",
            Some(&reg.as_token),
            None,
        )
        .await;
    assert_eq!(
        (status, res["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{res}"
    );
    let (status, res) = m
        .call(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(
                json!({ "username": "irc_mallory", "password": "pw pw pw pw",
                          "auth": { "type": "m.login.dummy" } }),
            ),
        )
        .await;
    assert_eq!(
        (status, res["errcode"].as_str()),
        (400, Some("M_EXCLUSIVE")),
        "{res}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nick_is_claimed_and_becomes_one_person() {
    let env = Env::start_with(
        &["#test"],
        bridge_testkit::Extras {
            bots: false,
            double_puppet: true,
        },
    )
    .await;
    let (m, alice) = (&env.matrix, &env.alice);
    let mut bob_irc = IrcClient::connect(env.ircd.port, "bob").await;
    bob_irc.join_with_bridge("#test").await;
    let room = m.join(alice, "#irc_test:localhost").await;
    bob_irc.send("PRIVMSG #test :hello as a ghost");
    m.wait_message(alice, &room, GHOST_BOB, "m.text", "hello as a ghost")
        .await;

    let bob = m.register("bob").await;
    m.join(&bob, "#irc_test:localhost").await;
    m.send_text(&bob, &room, "!claim bob").await;
    let notice = m
        .wait_event(alice, &room, "the claim code", |e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("To prove bob on test is yours"))
        })
        .await;
    let code = bridge_testkit::claim_code(&notice);
    // Another nick saying the code proves nothing.
    let carol = IrcClient::connect(env.ircd.port, "carol").await;
    carol.send(&format!("PRIVMSG {BRIDGE_NICK} :!claim {code}"));
    bob_irc.send(&format!("PRIVMSG {BRIDGE_NICK} :!claim {code}"));
    m.wait_event(alice, &room, "the ghost leaving", |e| {
        e["type"] == "m.room.member"
            && e["state_key"] == GHOST_BOB
            && e["content"]["membership"] == "leave"
    })
    .await;
    bob_irc.send("PRIVMSG #test :now as myself");
    let mine = m
        .wait_event(alice, &room, "bob's next message", |e| {
            e["content"]["body"] == "now as myself"
        })
        .await;
    assert_eq!(mine["sender"], bob.id.as_str());
    // What he said on IRC is not said there once more by the bridge.
    m.send_text(alice, &room, "after bob").await;
    bob_irc
        .expect(30, "alice's next message", |l| {
            let text = l.param(1);
            assert!(!text.contains("now as myself"), "echoed: {text}");
            l.command == "PRIVMSG" && text.ends_with("after bob")
        })
        .await;

    // bob undoes the link: the nick shows as its ghost again.
    m.send_text(&bob, &room, "!unclaim").await;
    m.wait_event(alice, &room, "the link undone", |e| {
        e["content"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("is no longer linked with bob on test"))
    })
    .await;
    bob_irc.send("PRIVMSG #test :a ghost again");
    m.wait_message(alice, &room, GHOST_BOB, "m.text", "a ghost again")
        .await;
}

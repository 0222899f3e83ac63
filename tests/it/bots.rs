//! The community bots against an in-process Tsunagu, with real matrix-sdk clients in encrypted
//! rooms: commands are decrypted and answered encrypted; schedules run on a manual clock driven
//! through `BotRunner::tick` (no sleeps); thanks, people, gatherings, roulette and the charter
//! work end to end; the bots' state survives a restart.

use crate::common;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::{
    TestServer, User, WAIT,
    client::{Seen, private_room, say, wait_for_device_keys, wait_membership},
};
use matrix_sdk::ruma::{
    EventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::room::member::MembershipState, int,
};
use serde_json::json;
use tsunagu::bots::{ManualClock, state::Habit};

/// What a member does with the bots: bots-only helpers on the shared [`User`].
impl User {
    /// The m.notice messages from `from` in the room containing `containing`, so far.
    fn notices(&self, room_id: &RoomId, from: &UserId, containing: &str) -> Vec<Seen> {
        self.inbox
            .messages()
            .into_iter()
            .filter(|s| {
                s.room_id == room_id
                    && s.sender == from
                    && s.content["msgtype"] == "m.notice"
                    && s.body().contains(containing)
            })
            .collect()
    }

    /// Waits for an m.notice from the bots containing `text`; checks it arrived encrypted and
    /// carries an HTML body.
    async fn notice(&self, room_id: &RoomId, bot: &UserId, text: &str) -> Seen {
        let who = self.id();
        let seen = common::eventually(
            WAIT,
            &format!("{who} to see a notice with {text:?}"),
            || async { self.notices(room_id, bot, text).into_iter().next() },
        )
        .await;
        assert!(
            seen.encrypted,
            "the bots' answer {:?} arrived unencrypted",
            seen.body()
        );
        assert_eq!(
            seen.content["format"], "org.matrix.custom.html",
            "{:?}",
            seen.content
        );
        assert!(
            seen.content["formatted_body"].is_string(),
            "{:?}",
            seen.content
        );
        seen
    }

    /// Says `command` in the room and waits for the bots' answer to it (in its thread)
    /// containing `text`.
    async fn ask(&self, room_id: &RoomId, bot: &UserId, command: &str, text: &str) -> Seen {
        let room = self.room(room_id).await;
        let cmd = say(&room, command).await;
        let who = self.id();
        let seen = common::eventually(
            WAIT,
            &format!("{who} to see the answer to {command:?} with {text:?}"),
            || async {
                self.notices(room_id, bot, text)
                    .into_iter()
                    .find(|s| s.content["m.relates_to"]["event_id"] == cmd.as_str())
            },
        )
        .await;
        assert!(
            seen.encrypted,
            "the bots' answer {:?} arrived unencrypted",
            seen.body()
        );
        seen
    }

    /// Answers the bots' poll (an MSC3381 poll response, encrypted like any message).
    async fn vote(&self, room_id: &RoomId, poll: &EventId, answer: &str) {
        self.room(room_id)
            .await
            .send_raw(
                "org.matrix.msc3381.poll.response",
                json!({
                    "m.relates_to": { "rel_type": "m.reference", "event_id": poll },
                    "org.matrix.msc3381.poll.response": { "answers": [answer] },
                }),
            )
            .await
            .expect("the vote is sent");
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A server with the bots on, whose time only moves when the test sets `clock`.
async fn start(clock: Arc<ManualClock>) -> TestServer {
    // `TSUNAGU_LOG=tsunagu=debug cargo test --test bots` shows what the bots do.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TSUNAGU_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
    TestServer::start_with_bots(clock).await
}

fn bot_id(t: &TestServer) -> OwnedUserId {
    t.server.bots().expect("bots run").user_id().to_owned()
}

/// `alice` makes an encrypted (private_chat) room, invites `members` and the bots, gives the
/// bots admin power and turns every habit on.
async fn community(t: &TestServer, alice: &User, members: &[&User]) -> OwnedRoomId {
    let bot = bot_id(t);
    wait_for_device_keys(&t.url(), &alice.client.access_token().unwrap(), &bot, None).await;
    let room_id = private_room(alice, "Alumni circle", members, std::slice::from_ref(&bot)).await;
    let room = alice.room(&room_id).await;
    room.update_power_levels(vec![(&bot, int!(100))])
        .await
        .expect("alice gives the bots admin power");
    say(&room, "!bots enable all").await;
    alice.notice(&room_id, &bot, "Turned on").await;
    room_id
}

/// Every event of the room as the server stored it, as (type, sender).
fn stored(t: &TestServer, room_id: &RoomId) -> Vec<(String, String)> {
    common::stored(&t.server, room_id)
        .into_iter()
        .map(|e| {
            (
                e.kind(),
                e.sender().map(|s| s.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_answer_encrypted_and_remember_people_and_thanks_across_a_restart() {
    let clock = Arc::new(ManualClock::new(utc("2026-11-02T09:00:00Z")));
    let t = start(clock.clone()).await;
    let bot = bot_id(&t);
    assert_eq!(bot.as_str(), "@tsunagu:localhost");
    let alice = common::user(&t, "alice").await;
    let bob = common::user(&t, "bob").await;
    let carol = common::user(&t, "carol").await;
    let room_id = community(&t, &alice, &[&bob]).await;
    let room = alice.room(&room_id).await;

    // !help answers in a thread under the command, encrypted, with HTML.
    let help = say(&room, "!help").await;
    let answer = alice.notice(&room_id, &bot, "What I can do").await;
    assert_eq!(answer.content["m.relates_to"]["rel_type"], "m.thread");
    assert_eq!(answer.content["m.relates_to"]["event_id"], help.as_str());
    assert!(
        answer.content["formatted_body"]
            .as_str()
            .unwrap()
            .contains("<code>!thanks")
    );

    // People: members describe themselves; !whois shows their own words.
    alice
        .ask(&room_id, &bot, "!me org Acme", "is at Acme")
        .await;
    bob.ask(
        &room_id,
        &bot,
        "!me can help with rust and embedded boards",
        "can help with rust",
    )
    .await;
    bob.ask(&room_id, &bot, "!me org Globex", "is at Globex")
        .await;
    alice
        .ask(
            &room_id,
            &bot,
            "!whois @bob:localhost",
            "can help with rust and embedded boards",
        )
        .await;

    // Only a bridge's ghost may say who it is (after its person proved it to the bridge);
    // a member cannot take over someone else's entry and thanks that way.
    bob.ask(
        &room_id,
        &bot,
        "!me is @alice:localhost",
        "Only a bridge says who its people are",
    )
    .await;
    alice
        .ask(&room_id, &bot, "!whois @bob:localhost", "is at Globex")
        .await;

    // A newcomer is greeted once.
    room.invite_user_by_id(&carol.id())
        .await
        .expect("carol invited");
    carol.accept_invite(&room_id).await;
    let carol_room = carol.room(&room_id).await;
    alice.notice(&room_id, &bot, "Welcome, carol").await;
    let _ = carol_room;
    carol
        .ask(
            &room_id,
            &bot,
            "!me cares about gardening and rust",
            "cares about gardening",
        )
        .await;

    // !ask finds who can help, with why.
    let ask = alice
        .ask(
            &room_id,
            &bot,
            "!ask who knows about embedded?",
            "you could ask",
        )
        .await;
    assert!(ask.body().contains("@bob:localhost"), "{}", ask.body());
    assert!(
        ask.body()
            .contains("can help with rust and embedded boards"),
        "{}",
        ask.body()
    );
    assert!(!ask.body().contains("@carol:localhost"), "{}", ask.body());

    // Thanks: a warm note in the room, remembered for the thanked member.
    say(&room, "!thanks @bob:localhost for fixing my bike").await;
    let note = bob
        .notice(&room_id, &bot, "thanks bob for fixing my bike")
        .await;
    assert!(
        note.content["m.relates_to"].is_null(),
        "the thanks note is for everyone"
    );
    bob.ask(&room_id, &bot, "!thanks mine", "alice (").await;
    // A member without the right power cannot change the habits.
    bob.ask(&room_id, &bot, "!bots disable thanks", "Only moderators")
        .await;

    // The server only ever stored ciphertext for this room's messages, the bots' included.
    let events = stored(&t, &room_id);
    assert!(
        events
            .iter()
            .any(|(kind, sender)| kind == "m.room.encrypted" && sender == bot.as_str()),
        "the bots sent encrypted events: {events:?}"
    );
    assert!(
        !events.iter().any(|(kind, _)| kind == "m.room.message"),
        "no plaintext message is stored: {events:?}"
    );

    // Restart on the same data directory: the bots still know the thanks, the profiles and
    // who was greeted.
    let state_before = t.server.bots().unwrap().state().await;
    assert_eq!(state_before.thanks.len(), 1);
    drop((alice, bob, carol));
    let t = t.restart().await;
    assert_eq!(bot_id(&t), bot);
    let state = t.server.bots().unwrap().state().await;
    assert_eq!(
        state.device_id, state_before.device_id,
        "same device, same crypto store"
    );
    assert!(state.enabled(&room_id, Habit::People));
    let bob = User::new(&t.url(), common::login(&t.url(), t.dir(), "bob").await).await;
    let bob_room = bob.room(&room_id).await;
    let mine = bob
        .ask(
            &room_id,
            &bot,
            "!thanks mine",
            "What others thanked you for",
        )
        .await;
    assert!(mine.body().contains("fixing my bike"), "{}", mine.body());
    // Carol leaves and comes back: no second greeting.
    let carol = User::new(&t.url(), common::login(&t.url(), t.dir(), "carol").await).await;
    let carol_room = carol.room(&room_id).await;
    carol_room.leave().await.unwrap();
    wait_membership(&bob_room, &carol.id(), MembershipState::Leave).await;
    bob_room.invite_user_by_id(&carol.id()).await.unwrap();
    carol.accept_invite(&room_id).await;
    bob.ask(
        &room_id,
        &bot,
        "!whois @carol:localhost",
        "cares about gardening",
    )
    .await;
    assert!(
        bob.notices(&room_id, &bot, "Welcome").is_empty(),
        "carol is not greeted twice"
    );
    let state = t.server.bots().unwrap().state().await;
    assert!(state.rooms[&room_id].greeted.contains(&carol.id()));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gathering_fires_once_with_rsvps_reminder_and_notes() {
    let clock = Arc::new(ManualClock::new(utc("2026-11-02T09:00:00Z")));
    let t = start(clock.clone()).await;
    let bot = bot_id(&t);
    let alice = common::user(&t, "alice").await;
    let bob = common::user(&t, "bob").await;
    let room_id = community(&t, &alice, &[&bob]).await;
    let bots = t.server.bots().unwrap();

    alice
        .ask(
            &room_id,
            &bot,
            "!bots timezone Europe/Berlin",
            "Europe/Berlin",
        )
        .await;
    alice
        .ask(
            &room_id,
            &bot,
            "!gathering on 2026-12-03 19:00",
            "Thursday 3 December 2026, 19:00",
        )
        .await;

    // Nothing is due yet.
    bots.tick().await.unwrap();
    // 19:00 in Berlin is 18:00 UTC; the invitation goes out 48 hours before.
    clock.set(utc("2026-12-01T18:30:00Z"));
    bots.tick().await.unwrap();
    bots.tick().await.unwrap();
    let invitation = bob
        .notice(&room_id, &bot, "Gathering: Thursday 3 December, 19:00")
        .await;
    assert!(
        invitation.body().contains("No agenda"),
        "{}",
        invitation.body()
    );
    // A marker message after the ticks: once bob sees it, any second invitation would be there.
    bob.ask(&room_id, &bot, "!gatherings", "Gatherings here")
        .await;
    assert_eq!(
        bob.notices(&room_id, &bot, "Gathering: Thursday").len(),
        1,
        "one invitation"
    );

    // Bob says yes with a reaction; the reminder goes to him, in the invitation's thread.
    let bob_room = bob.room(&room_id).await;
    bob_room
        .send_raw(
            "m.reaction",
            json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": invitation.event_id, "key": "👍" } }),
        )
        .await
        .unwrap();
    common::eventually(WAIT, "bob's RSVP", || async {
        let s = bots.state().await;
        s.gatherings[0]
            .invitations
            .first()
            .and_then(|i| i.rsvps.get(&bob.id()).filter(|a| *a == "yes").map(|_| ()))
    })
    .await;
    clock.set(utc("2026-12-03T17:15:00Z"));
    bots.tick().await.unwrap();
    let reminder = bob.notice(&room_id, &bot, "see you at 19:00").await;
    assert_eq!(
        reminder.content["m.relates_to"]["event_id"],
        invitation.event_id.as_str()
    );
    assert_eq!(
        reminder.content["m.mentions"]["user_ids"],
        json!([bob.id()])
    );

    // Afterwards a notes thread opens.
    clock.set(utc("2026-12-03T22:00:00Z"));
    bots.tick().await.unwrap();
    bob.notice(
        &room_id,
        &bot,
        "Notes from the gathering on Thursday 3 December",
    )
    .await;
    bob.notice(&room_id, &bot, "Add your notes here").await;

    // A restart does not fire it again.
    drop((alice, bob));
    let t = t.restart().await;
    t.server.bots().unwrap().tick().await.unwrap();
    let s = t.server.bots().unwrap().state().await;
    assert_eq!(s.gatherings[0].invitations.len(), 1);
    assert_eq!(
        s.rooms[&room_id].first_gathering.unwrap().to_string(),
        "2026-12-03"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roulette_pairs_people_from_different_organisations() {
    // Monday 2 November 2026, 09:00 UTC: the roulette runs on Mondays at 10:00.
    let clock = Arc::new(ManualClock::new(utc("2026-11-02T09:00:00Z")));
    let t = start(clock.clone()).await;
    let bot = bot_id(&t);
    let alice = common::user(&t, "alice").await;
    let bob = common::user(&t, "bob").await;
    let carol = common::user(&t, "carol").await;
    let dave = common::user(&t, "dave").await;
    let room_id = community(&t, &alice, &[&bob, &carol, &dave]).await;
    for (u, org) in [
        (&alice, "Acme"),
        (&bob, "Acme"),
        (&carol, "Globex"),
        (&dave, "Globex"),
    ] {
        u.ask(
            &room_id,
            &bot,
            &format!("!me org {org}"),
            &format!("is at {org}"),
        )
        .await;
        u.ask(&room_id, &bot, "!roulette join", "You're in").await;
    }
    let bots = t.server.bots().unwrap();
    bots.tick().await.unwrap();
    assert!(
        bots.state().await.rooms[&room_id]
            .roulette
            .history
            .is_empty(),
        "not yet"
    );
    clock.set(utc("2026-11-02T10:00:30Z"));
    bots.tick().await.unwrap();
    bots.tick().await.unwrap();
    alice.notice(&room_id, &bot, "2 pair(s) made").await;
    let s = bots.state().await;
    let history = &s.rooms[&room_id].roulette.history;
    assert_eq!(history.len(), 2, "one round of two pairs: {history:?}");
    let org = |u: &OwnedUserId| s.profiles[u].org.clone().unwrap();
    for (a, b, _) in history {
        assert_ne!(
            org(a),
            org(b),
            "{a} and {b} are from different organisations"
        );
    }
    // Each member got a direct chat with their partner and an introduction.
    for u in [&alice, &bob, &carol, &dave] {
        let dm = common::eventually(WAIT, "the coffee chat invite", || async {
            u.client
                .invited_rooms()
                .into_iter()
                .find(|r| r.room_id() != room_id)
        })
        .await;
        u.client.join_room_by_id(dm.room_id()).await.unwrap();
        u.notice(dm.room_id(), &bot, "coffee pair").await;
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_is_voted_through_a_poll_and_one_organisation_cannot_take_over() {
    let clock = Arc::new(ManualClock::new(utc("2026-11-02T09:00:00Z")));
    let t = start(clock.clone()).await;
    let bot = bot_id(&t);
    let alice = common::user(&t, "alice").await;
    let bob = common::user(&t, "bob").await;
    let carol = common::user(&t, "carol").await;
    let room_id = community(&t, &alice, &[&bob, &carol]).await;
    for (u, org) in [(&alice, "Acme"), (&bob, "Globex"), (&carol, "Acme")] {
        u.ask(
            &room_id,
            &bot,
            &format!("!me org {org}"),
            &format!("is at {org}"),
        )
        .await;
    }
    let bots = t.server.bots().unwrap();
    let room = alice.room(&room_id).await;

    // Carol (Acme) as a second moderator would give Acme, alice's organisation, all of the
    // moderator power: refused with the reason.
    let refused = alice
        .ask(
            &room_id,
            &bot,
            "!propose moderator @carol:localhost",
            "can't put this to a vote",
        )
        .await;
    assert!(refused.body().contains("acme"), "{}", refused.body());
    assert!(bots.state().await.proposals.is_empty());

    // Bob (Globex) as a moderator is put to a vote, as an MSC3381 poll.
    say(&room, "!propose moderator @bob:localhost").await;
    let poll = common::eventually(WAIT, "the poll", || async {
        bots.state().await.proposals.first().map(|p| p.poll.clone())
    })
    .await;
    // The poll start is stored encrypted; members vote (carol changes her mind: latest counts).
    for (u, answer) in [
        (&alice, "yes"),
        (&bob, "yes"),
        (&carol, "no"),
        (&carol, "yes"),
    ] {
        u.vote(&room_id, &poll, answer).await;
    }
    common::eventually(WAIT, "the votes to be tallied", || async {
        let s = bots.state().await;
        let v = &s.proposals[0].votes;
        (v.len() == 3 && v.values().all(|(_, a)| a == "yes")).then_some(())
    })
    .await;
    // The deadline passes (72 hours by default).
    clock.set(utc("2026-11-05T10:00:00Z"));
    bots.tick().await.unwrap();
    let summary = alice.notice(&room_id, &bot, "Proposal #").await;
    assert!(summary.body().contains("passed"), "{}", summary.body());
    assert!(summary.body().contains("3 yes, 0 no"), "{}", summary.body());
    let levels = common::eventually(WAIT, "bob's new power level in the room state", || async {
        let c = t
            .server
            .services()
            .timeline
            .state_content(&room_id, &"m.room.power_levels".into(), "")
            .ok()
            .flatten()?;
        let c = serde_json::to_value(c).ok()?;
        (c["users"]["@bob:localhost"] == 50).then_some(c)
    })
    .await;
    assert_eq!(levels["users"][bot.as_str()], 100);
    let charter = t
        .server
        .services()
        .timeline
        .state_content(&room_id, &"org.tsunagu.charter".into(), "")
        .unwrap()
        .expect("the charter is in room state");
    let charter = serde_json::to_value(charter).unwrap();
    assert_eq!(
        charter["changes"][0]["change"]["kind"], "moderator",
        "{charter}"
    );
    let events = stored(&t, &room_id);
    assert!(
        !events
            .iter()
            .any(|(kind, _)| kind.starts_with("org.matrix.msc3381.poll")),
        "polls and votes are stored encrypted: {events:?}"
    );

    // A rule: passes by !close, lands in the charter, and !charter shows it.
    say(&room, "!propose rule We meet without an agenda").await;
    let poll = common::eventually(WAIT, "the second poll", || async {
        bots.state().await.proposals.get(1).map(|p| p.poll.clone())
    })
    .await;
    for u in [&alice, &bob] {
        u.vote(&room_id, &poll, "yes").await;
    }
    common::eventually(WAIT, "two votes", || async {
        (bots.state().await.proposals[1].votes.len() == 2).then_some(())
    })
    .await;
    say(&room, "!close").await;
    alice
        .notice(&room_id, &bot, "It is now in the charter")
        .await;
    alice
        .ask(&room_id, &bot, "!charter", "We meet without an agenda")
        .await;
    t.stop().await;
}

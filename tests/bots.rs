#![recursion_limit = "256"]
#![cfg(feature = "bots")]
//! The community bots against an in-process Tsunagu, with real matrix-sdk clients in encrypted
//! rooms: commands are decrypted and answered encrypted; schedules run on a manual clock driven
//! through `BotRunner::tick` (no sleeps); thanks, people, gatherings, roulette and the charter
//! work end to end; the bots' state survives a restart.

mod common;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    ruma::{
        OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
        api::client::room::create_room,
        events::room::{member::MembershipState, message::OriginalSyncRoomMessageEvent},
        int,
    },
};
use serde_json::{Value, json};
use tsunagu::{
    Server,
    bots::{ManualClock, state::Habit},
};

const WAIT: u64 = 60;

/// A message a client saw: who sent it, its decrypted content, whether it was encrypted.
#[derive(Clone, Debug)]
struct Seen {
    room_id: OwnedRoomId,
    event_id: OwnedEventId,
    sender: OwnedUserId,
    content: Value,
    encrypted: bool,
}

impl Seen {
    fn body(&self) -> &str {
        self.content["body"].as_str().unwrap_or_default()
    }
}

#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<Seen>>>);

struct User {
    client: Client,
    inbox: Inbox,
    sync: tokio::task::JoinHandle<()>,
}

/// A dropped user stops syncing, so no long-poll keeps a stopping server's connections open.
impl Drop for User {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

impl User {
    fn id(&self) -> OwnedUserId {
        self.client.user_id().unwrap().to_owned()
    }

    async fn room(&self, room_id: &RoomId) -> Room {
        common::eventually(WAIT, "the room in sync", || async {
            self.client.get_room(room_id)
        })
        .await
    }

    fn notices(&self, room_id: &RoomId, from: &UserId, containing: &str) -> Vec<Seen> {
        self.inbox
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| {
                s.room_id == room_id
                    && s.sender == from
                    && s.content["msgtype"] == "m.notice"
                    && s.body().contains(containing)
            })
            .cloned()
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
}

impl User {
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
}

fn watch(client: &Client) -> (Inbox, tokio::task::JoinHandle<()>) {
    let inbox = Inbox::default();
    let i = inbox.clone();
    client.add_event_handler(
        move |ev: OriginalSyncRoomMessageEvent,
              room: Room,
              info: Option<matrix_sdk::deserialized_responses::EncryptionInfo>| {
            let i = i.clone();
            async move {
                i.0.lock().unwrap().push(Seen {
                    room_id: room.room_id().to_owned(),
                    event_id: ev.event_id.clone(),
                    sender: ev.sender.clone(),
                    content: serde_json::to_value(&ev.content).unwrap(),
                    encrypted: info.is_some(),
                });
            }
        },
    );
    let c = client.clone();
    let sync = tokio::spawn(async move {
        let _ = c
            .sync(SyncSettings::default().timeout(Duration::from_secs(5)))
            .await;
    });
    (inbox, sync)
}

async fn keys_on_server(url: &str, token: &str, user: &UserId) {
    let http = common::Http::new(url);
    common::eventually(
        WAIT,
        &format!("{user}'s device keys on the server"),
        || async {
            let res = http
                .json(
                    "POST",
                    "/_matrix/client/v3/keys/query",
                    Some(token),
                    json!({ "device_keys": { user.as_str(): [] } }),
                )
                .await;
            (res.0 == 200
                && res.1["device_keys"][user.as_str()]
                    .as_object()
                    .is_some_and(|d| !d.is_empty()))
            .then_some(())
        },
    )
    .await;
}

async fn user(server: &Server, dir: &Path, name: &str) -> User {
    let client = common::register(server, dir, name).await;
    user_from(server, client).await
}

async fn user_from(server: &Server, client: Client) -> User {
    let (inbox, sync) = watch(&client);
    client
        .encryption()
        .wait_for_e2ee_initialization_tasks()
        .await;
    let token = client.access_token().unwrap();
    keys_on_server(&server.url(), &token, client.user_id().unwrap()).await;
    User {
        client,
        inbox,
        sync,
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn start(dir: &Path, clock: Arc<ManualClock>) -> Server {
    // `TSUNAGU_LOG=tsunagu=debug cargo test --test bots` shows what the bots do.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TSUNAGU_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
    let mut config = common::config(&dir.join("server"));
    config.bots.enabled = true;
    Server::start_with_clock(config, clock)
        .await
        .expect("server with bots starts")
}

fn bot_id(server: &Server) -> OwnedUserId {
    server.bots().expect("bots run").user_id().to_owned()
}

async fn wait_member(room: &Room, user: &UserId, state: MembershipState) {
    common::eventually(WAIT, &format!("{user} to be {state}"), || async {
        room.get_member_no_sync(user)
            .await
            .ok()
            .flatten()
            .filter(|m| *m.membership() == state)
            .map(|_| ())
    })
    .await;
}

/// `alice` makes an encrypted (private_chat) room, invites `members` and the bots, gives the
/// bots admin power and turns every habit on.
async fn community(server: &Server, alice: &User, members: &[&User]) -> OwnedRoomId {
    let bot = bot_id(server);
    keys_on_server(&server.url(), &alice.client.access_token().unwrap(), &bot).await;
    let mut req = create_room::v3::Request::new();
    req.name = Some("Alumni circle".into());
    req.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    req.invite = members
        .iter()
        .map(|m| m.id())
        .chain([bot.clone()])
        .collect();
    let room = alice.client.create_room(req).await.expect("room created");
    let room_id = room.room_id().to_owned();
    for m in members {
        common::eventually(WAIT, "the invite", || async {
            m.client
                .get_room(&room_id)
                .filter(|r| r.state() == matrix_sdk::RoomState::Invited)
        })
        .await;
        m.client
            .join_room_by_id(&room_id)
            .await
            .expect("member joins");
    }
    let room = alice.room(&room_id).await;
    for m in members {
        wait_member(&room, &m.id(), MembershipState::Join).await;
    }
    wait_member(&room, &bot, MembershipState::Join).await;
    room.update_power_levels(vec![(&bot, int!(100))])
        .await
        .expect("alice gives the bots admin power");
    say(&room, "!bots enable all").await;
    alice.notice(&room_id, &bot, "Turned on").await;
    room_id
}

async fn say(room: &Room, body: &str) -> OwnedEventId {
    room.send(matrix_sdk::ruma::events::room::message::RoomMessageEventContent::text_plain(body))
        .await
        .unwrap_or_else(|e| panic!("sending {body:?}: {e}"))
        .response
        .event_id
}

/// Every event of the room as the server stored it, as (type, sender).
fn stored(server: &Server, room_id: &RoomId) -> Vec<(String, String)> {
    server
        .services()
        .timeline
        .timeline_range(room_id, 0, u64::MAX, false, usize::MAX)
        .expect("stored timeline")
        .into_iter()
        .map(|e| {
            let pdu = serde_json::to_value(&e.pdu).unwrap();
            (
                pdu["type"].as_str().unwrap().to_owned(),
                pdu["sender"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_answer_encrypted_and_remember_people_and_thanks_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(utc("2026-11-02T09:00:00Z")));
    let server = start(dir.path(), clock.clone()).await;
    let bot = bot_id(&server);
    assert_eq!(bot.as_str(), "@tsunagu:localhost");
    let alice = user(&server, dir.path(), "alice").await;
    let bob = user(&server, dir.path(), "bob").await;
    let carol = user(&server, dir.path(), "carol").await;
    let room_id = community(&server, &alice, &[&bob]).await;
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

    // A newcomer is greeted once.
    room.invite_user_by_id(&carol.id())
        .await
        .expect("carol invited");
    common::eventually(WAIT, "carol's invite", || async {
        carol
            .client
            .get_room(&room_id)
            .filter(|r| r.state() == matrix_sdk::RoomState::Invited)
    })
    .await;
    carol.client.join_room_by_id(&room_id).await.unwrap();
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
    let events = stored(&server, &room_id);
    assert!(
        events
            .iter()
            .any(|(t, s)| t == "m.room.encrypted" && s == bot.as_str()),
        "the bots sent encrypted events: {events:?}"
    );
    assert!(
        !events.iter().any(|(t, _)| t == "m.room.message"),
        "no plaintext message is stored: {events:?}"
    );

    // Restart on the same data directory: the bots still know the thanks, the profiles and
    // who was greeted.
    let state_before = server.bots().unwrap().state().await;
    assert_eq!(state_before.thanks.len(), 1);
    for u in [alice, bob, carol] {
        drop(u);
    }
    server.stop().await.unwrap();
    let server = start(dir.path(), clock.clone()).await;
    assert_eq!(bot_id(&server), bot);
    let state = server.bots().unwrap().state().await;
    assert_eq!(
        state.device_id, state_before.device_id,
        "same device, same crypto store"
    );
    assert!(state.enabled(&room_id, Habit::People));
    let bob = user_from(
        &server,
        common::login(&server.url(), dir.path(), "bob").await,
    )
    .await;
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
    let carol = user_from(
        &server,
        common::login(&server.url(), dir.path(), "carol").await,
    )
    .await;
    let carol_room = carol.room(&room_id).await;
    carol_room.leave().await.unwrap();
    wait_member(&bob_room, &carol.id(), MembershipState::Leave).await;
    bob_room.invite_user_by_id(&carol.id()).await.unwrap();
    common::eventually(WAIT, "carol's second invite", || async {
        carol
            .client
            .get_room(&room_id)
            .filter(|r| r.state() == matrix_sdk::RoomState::Invited)
    })
    .await;
    carol.client.join_room_by_id(&room_id).await.unwrap();
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
    let state = server.bots().unwrap().state().await;
    assert!(state.rooms[&room_id].greeted.contains(&carol.id()));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gathering_fires_once_with_rsvps_reminder_and_notes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(utc("2026-11-02T09:00:00Z")));
    let server = start(dir.path(), clock.clone()).await;
    let bot = bot_id(&server);
    let alice = user(&server, dir.path(), "alice").await;
    let bob = user(&server, dir.path(), "bob").await;
    let room_id = community(&server, &alice, &[&bob]).await;
    let bots = server.bots().unwrap();

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
    drop(alice);
    drop(bob);
    server.stop().await.unwrap();
    let server = start(dir.path(), clock.clone()).await;
    server.bots().unwrap().tick().await.unwrap();
    let s = server.bots().unwrap().state().await;
    assert_eq!(s.gatherings[0].invitations.len(), 1);
    assert_eq!(
        s.rooms[&room_id].first_gathering.unwrap().to_string(),
        "2026-12-03"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roulette_pairs_people_from_different_organisations() {
    let dir = tempfile::tempdir().unwrap();
    // Monday 2 November 2026, 09:00 UTC: the roulette runs on Mondays at 10:00.
    let clock = Arc::new(ManualClock::new(utc("2026-11-02T09:00:00Z")));
    let server = start(dir.path(), clock.clone()).await;
    let bot = bot_id(&server);
    let alice = user(&server, dir.path(), "alice").await;
    let bob = user(&server, dir.path(), "bob").await;
    let carol = user(&server, dir.path(), "carol").await;
    let dave = user(&server, dir.path(), "dave").await;
    let room_id = community(&server, &alice, &[&bob, &carol, &dave]).await;
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
    let bots = server.bots().unwrap();
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
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_is_voted_through_a_poll_and_one_organisation_cannot_take_over() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(utc("2026-11-02T09:00:00Z")));
    let server = start(dir.path(), clock.clone()).await;
    let bot = bot_id(&server);
    let alice = user(&server, dir.path(), "alice").await;
    let bob = user(&server, dir.path(), "bob").await;
    let carol = user(&server, dir.path(), "carol").await;
    let room_id = community(&server, &alice, &[&bob, &carol]).await;
    for (u, org) in [(&alice, "Acme"), (&bob, "Globex"), (&carol, "Acme")] {
        u.ask(
            &room_id,
            &bot,
            &format!("!me org {org}"),
            &format!("is at {org}"),
        )
        .await;
    }
    let bots = server.bots().unwrap();
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
        let r = u.room(&room_id).await;
        r.send_raw(
            "org.matrix.msc3381.poll.response",
            json!({
                "m.relates_to": { "rel_type": "m.reference", "event_id": poll },
                "org.matrix.msc3381.poll.response": { "answers": [answer] },
            }),
        )
        .await
        .unwrap();
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
        let c = server
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
    let charter = server
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
    let events = stored(&server, &room_id);
    assert!(
        !events
            .iter()
            .any(|(t, _)| t.starts_with("org.matrix.msc3381.poll")),
        "polls and votes are stored encrypted: {events:?}"
    );

    // A rule: passes by !close, lands in the charter, and !charter shows it.
    say(&room, "!propose rule We meet without an agenda").await;
    let poll = common::eventually(WAIT, "the second poll", || async {
        bots.state().await.proposals.get(1).map(|p| p.poll.clone())
    })
    .await;
    for u in [&alice, &bob] {
        u.room(&room_id)
            .await
            .send_raw(
                "org.matrix.msc3381.poll.response",
                json!({
                    "m.relates_to": { "rel_type": "m.reference", "event_id": poll },
                    "org.matrix.msc3381.poll.response": { "answers": ["yes"] },
                }),
            )
            .await
            .unwrap();
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
    server.stop().await.unwrap();
}

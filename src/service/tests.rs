//! Unit tests of the service layer: a real store in a temporary directory, no HTTP.

use std::sync::Arc;

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UserId,
    api::{Direction, client::filter::RoomEventFilter},
    events::{TimelineEventType, room::member::MembershipState},
};
use serde_json::json;

use super::{
    Services,
    rooms::{CreateRoom, Moderation},
    timeline::{NewEvent, append::Txn, pagination::MessagesQuery},
    token::StreamToken,
};
use crate::store::{StoredEvent, TxnInfo};

struct Fixture {
    _dir: tempfile::TempDir,
    s: Arc<Services>,
}

async fn services() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let s = Services::open(config).await.unwrap();
    Fixture { _dir: dir, s }
}

async fn user(s: &Services, name: &str) -> OwnedUserId {
    let id = s.users.user_id_for_localpart(name).unwrap();
    s.users
        .create_account(&id, None, false, None)
        .await
        .unwrap();
    id
}

/// A room with `history_visibility` as given, public so anyone may join.
async fn room(s: &Services, creator: &UserId, visibility: &str) -> OwnedRoomId {
    let req = CreateRoom {
        preset: Some("public_chat".into()),
        initial_state: vec![NewEvent::state(
            "m.room.history_visibility",
            "",
            json!({ "history_visibility": visibility }),
        )],
        ..Default::default()
    };
    s.rooms.create(creator, req).await.unwrap()
}

async fn say(s: &Services, room: &RoomId, sender: &UserId, body: &str) -> StoredEvent {
    let ev = NewEvent::message(
        "m.room.message",
        json!({ "msgtype": "m.text", "body": body }),
    );
    let id = s.timeline.append(room, sender, ev, None).await.unwrap();
    s.timeline.event(&id).unwrap().unwrap()
}

fn body(ev: &StoredEvent) -> String {
    ev.content()["body"].as_str().unwrap_or_default().to_owned()
}

fn txn(id: &str) -> Txn {
    Txn {
        info: TxnInfo {
            device_id: "DEV".into(),
            txn_id: id.into(),
        },
        via_redact: false,
    }
}

#[tokio::test]
async fn appended_events_are_signed_pdus_in_stream_order() {
    let f = services().await;
    let alice = user(&f.s, "alice").await;
    let room = room(&f.s, &alice, "shared").await;
    let a = say(&f.s, &room, &alice, "one").await;
    let b = say(&f.s, &room, &alice, "two").await;
    assert!(b.pos > a.pos);
    let prev: serde_json::Value = b.pdu["prev_events"].clone().into();
    assert_eq!(prev, json!([a.event_id]));
    assert!(b.pdu.contains_key("hashes") && b.pdu.contains_key("signatures"));
    let rules = f.s.timeline.rules(&room).unwrap();
    let hash = ruma::signatures::reference_hash(&b.pdu, &rules).unwrap();
    assert_eq!(
        b.event_id.as_str(),
        format!("${hash}"),
        "the ID is the reference hash"
    );
}

#[tokio::test]
async fn a_transaction_id_is_idempotent_per_room() {
    let f = services().await;
    let alice = user(&f.s, "alice").await;
    let (r1, r2) = (
        room(&f.s, &alice, "shared").await,
        room(&f.s, &alice, "shared").await,
    );
    let ev = || NewEvent::message("m.room.message", json!({ "body": "hi" }));
    let first =
        f.s.timeline
            .append(&r1, &alice, ev(), Some(txn("t1")))
            .await
            .unwrap();
    let again =
        f.s.timeline
            .append(&r1, &alice, ev(), Some(txn("t1")))
            .await
            .unwrap();
    assert_eq!(first, again, "a retry returns the first event");
    let other_room =
        f.s.timeline
            .append(&r2, &alice, ev(), Some(txn("t1")))
            .await
            .unwrap();
    assert_ne!(
        first, other_room,
        "the same ID in another room is another send"
    );
}

#[tokio::test]
async fn redacting_someone_elses_event_needs_the_redact_level_on_every_path() {
    let f = services().await;
    let (alice, bob) = (user(&f.s, "alice").await, user(&f.s, "bob").await);
    let room = room(&f.s, &alice, "shared").await;
    f.s.rooms.join(&bob, &room).await.unwrap();
    let mine = say(&f.s, &room, &alice, "alice's").await;
    let his = say(&f.s, &room, &bob, "bob's").await;
    // Bob (power 0) through the raw append path, as `/send/m.room.redaction` would.
    let forged = NewEvent::redaction(mine.event_id.clone(), json!({}));
    let err =
        f.s.timeline
            .append(&room, &bob, forged, None)
            .await
            .unwrap_err();
    assert_eq!(
        err.kind(),
        Some(&ruma::api::error::ErrorKind::Forbidden),
        "{err}"
    );
    assert!(
        f.s.timeline
            .event(&mine.event_id)
            .unwrap()
            .unwrap()
            .redacted_because
            .is_none()
    );
    // His own event, and alice (the creator) redacting his: both allowed.
    let own = NewEvent::redaction(his.event_id.clone(), json!({}));
    f.s.timeline.append(&room, &bob, own, None).await.unwrap();
    let other = say(&f.s, &room, &bob, "again").await;
    let by_mod = NewEvent::redaction(other.event_id.clone(), json!({}));
    f.s.timeline
        .append(&room, &alice, by_mod, None)
        .await
        .unwrap();
    let redacted = f.s.timeline.event(&other.event_id).unwrap().unwrap();
    assert!(redacted.redacted_because.is_some());
    assert_eq!(body(&redacted), "", "the content is gone");
}

#[tokio::test]
async fn state_at_a_position_is_the_state_then() {
    let f = services().await;
    let alice = user(&f.s, "alice").await;
    let room = room(&f.s, &alice, "shared").await;
    let name = |n: &str| NewEvent::state(TimelineEventType::RoomName, "", json!({ "name": n }));
    let first =
        f.s.timeline
            .append(&room, &alice, name("first"), None)
            .await
            .unwrap();
    let first_pos = f.s.timeline.event(&first).unwrap().unwrap().pos;
    say(&f.s, &room, &alice, "between").await;
    let second =
        f.s.timeline
            .append(&room, &alice, name("second"), None)
            .await
            .unwrap();
    let key = ("m.room.name".to_owned(), String::new());
    assert_eq!(
        f.s.timeline.state_at(&room, first_pos).unwrap()[&key],
        first
    );
    assert_eq!(f.s.timeline.current_state(&room).unwrap()[&key], second);
    assert_eq!(
        f.s.timeline
            .state_id_at(&room, "m.room.name", "", first_pos - 1)
            .unwrap(),
        None,
        "before the first name there was none"
    );
    let history =
        f.s.timeline
            .state_history(&room, "m.room.name", "")
            .unwrap();
    assert_eq!(
        history.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        [first, second]
    );
}

#[tokio::test]
async fn moderation_checks_the_targets_membership() {
    let f = services().await;
    let (alice, bob) = (user(&f.s, "alice").await, user(&f.s, "bob").await);
    let room = room(&f.s, &alice, "shared").await;
    let kick =
        f.s.rooms
            .moderate(&alice, &room, &bob, Moderation::Kick, None)
            .await;
    assert!(kick.is_err(), "bob is not in the room");
    let unban =
        f.s.rooms
            .moderate(&alice, &room, &bob, Moderation::Unban, None)
            .await;
    assert!(unban.is_err(), "bob is not banned");
    f.s.rooms.join(&bob, &room).await.unwrap();
    f.s.rooms
        .moderate(&alice, &room, &bob, Moderation::Ban, None)
        .await
        .unwrap();
    assert_eq!(
        f.s.timeline.membership_state(&bob, &room).unwrap(),
        MembershipState::Ban
    );
    f.s.rooms
        .moderate(&alice, &room, &bob, Moderation::Unban, None)
        .await
        .unwrap();
    assert_eq!(
        f.s.timeline.membership_state(&bob, &room).unwrap(),
        MembershipState::Leave
    );
}

/// Bodies of the messages `user` can see in the room, oldest first.
fn seen_bodies(s: &Services, user: &UserId, room: &RoomId) -> Vec<String> {
    let reader = s.timeline.reader(user, room).unwrap();
    s.timeline
        .timeline_range(room, 0, u64::MAX, false, usize::MAX)
        .unwrap()
        .iter()
        .filter(|e| e.kind() == "m.room.message" && reader.sees(e))
        .map(body)
        .collect()
}

#[tokio::test]
async fn history_visibility_decides_what_each_member_sees() {
    let f = services().await;
    let (alice, bob) = (user(&f.s, "alice").await, user(&f.s, "bob").await);
    for (visibility, before_invite, while_invited) in [
        ("shared", true, true),
        ("invited", false, true),
        ("joined", false, false),
    ] {
        let room = room(&f.s, &alice, visibility).await;
        say(&f.s, &room, &alice, "before").await;
        f.s.rooms.invite(&alice, &room, &bob, None).await.unwrap();
        say(&f.s, &room, &alice, "invited").await;
        f.s.rooms.join(&bob, &room).await.unwrap();
        say(&f.s, &room, &alice, "joined").await;
        let mut want = Vec::new();
        if before_invite {
            want.push("before");
        }
        if while_invited {
            want.push("invited");
        }
        want.push("joined");
        assert_eq!(seen_bodies(&f.s, &bob, &room), want, "{visibility}");
        assert_eq!(
            seen_bodies(&f.s, &alice, &room),
            ["before", "invited", "joined"],
            "{visibility}: the creator sees everything"
        );
    }
}

#[tokio::test]
async fn former_members_see_up_to_their_leave_and_strangers_only_world_readable() {
    let f = services().await;
    let (alice, bob, eve) = (
        user(&f.s, "alice").await,
        user(&f.s, "bob").await,
        user(&f.s, "eve").await,
    );
    let room = room(&f.s, &alice, "shared").await;
    f.s.rooms.join(&bob, &room).await.unwrap();
    say(&f.s, &room, &alice, "while in").await;
    f.s.rooms.leave(&bob, &room, None).await.unwrap();
    say(&f.s, &room, &alice, "after leaving").await;
    assert_eq!(seen_bodies(&f.s, &bob, &room), ["while in"]);
    let reader = f.s.timeline.reader(&bob, &room).unwrap();
    let leave =
        f.s.timeline
            .state_event(&room, &"m.room.member".into(), bob.as_str())
            .unwrap()
            .unwrap();
    assert!(reader.sees(&leave), "a user sees their own leave");
    assert!(seen_bodies(&f.s, &eve, &room).is_empty());
    assert!(
        f.s.timeline.readable(&eve, &room).is_err(),
        "strangers may not read"
    );

    let open = room_with_visibility_and_message(&f.s, &alice, "world_readable").await;
    assert_eq!(seen_bodies(&f.s, &eve, &open), ["hello world"]);
    assert!(f.s.timeline.readable(&eve, &open).is_ok());
}

async fn room_with_visibility_and_message(s: &Services, creator: &UserId, v: &str) -> OwnedRoomId {
    let room = room(s, creator, v).await;
    say(s, &room, creator, "hello world").await;
    room
}

#[tokio::test]
async fn membership_at_an_event_is_the_membership_then() {
    let f = services().await;
    let (alice, bob) = (user(&f.s, "alice").await, user(&f.s, "bob").await);
    let room = room(&f.s, &alice, "shared").await;
    let before = say(&f.s, &room, &alice, "before").await;
    f.s.rooms.join(&bob, &room).await.unwrap();
    let after = say(&f.s, &room, &alice, "after").await;
    let reader = f.s.timeline.reader(&bob, &room).unwrap();
    assert_eq!(reader.membership_at(&before), MembershipState::Leave);
    assert_eq!(reader.membership_at(&after), MembershipState::Join);
}

#[tokio::test]
async fn paginating_back_from_the_newest_point_returns_every_event_once() {
    let f = services().await;
    let alice = user(&f.s, "alice").await;
    let room = room(&f.s, &alice, "shared").await;
    for i in 1..=20 {
        say(&f.s, &room, &alice, &format!("m{i}")).await;
    }
    let filter = RoomEventFilter::default();
    let mut from = Some(StreamToken::after(f.s.core.current_pos()));
    let mut seen = Vec::new();
    while let Some(token) = from {
        let query = MessagesQuery {
            from: Some(token),
            to: None,
            dir: Direction::Backward,
            limit: 5,
            filter: &filter,
        };
        let page = f.s.timeline.messages(&alice, &room, query, false).unwrap();
        seen.extend(
            page.events
                .iter()
                .filter(|s| s.event.kind() == "m.room.message")
                .map(|s| body(&s.event)),
        );
        from = page.end;
    }
    let want: Vec<String> = (1..=20).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(seen, want, "newest first, none skipped, none twice");
}

#[tokio::test]
async fn typing_wakes_only_the_rooms_members() {
    let f = services().await;
    let (alice, bob) = (user(&f.s, "alice").await, user(&f.s, "bob").await);
    let (r1, r2) = (
        room(&f.s, &alice, "shared").await,
        room(&f.s, &bob, "shared").await,
    );
    let before = f.s.ephemeral.serial();
    f.s.ephemeral
        .set_typing(&r1, &alice, Some(std::time::Duration::from_secs(5)))
        .unwrap();
    assert!(f.s.ephemeral.typing_moved_in([&r1], before));
    assert!(
        !f.s.ephemeral.typing_moved_in([&r2], before),
        "bob's room did not change"
    );
    let err = f.s.ephemeral.set_typing(&r2, &alice, None).unwrap_err();
    assert_eq!(err.kind(), Some(&ruma::api::error::ErrorKind::Forbidden));
}

/// A server remembers the newest transactions of each other server, a bounded number: a
/// retried one is recognised, and a flood of new IDs does not grow the table past the bound.
#[tokio::test]
async fn received_transactions_are_remembered_up_to_a_bound() {
    use super::federation::KEPT_TRANSACTIONS;
    let f = services().await;
    let fed = &f.s.federation;
    let origin = <&ruma::ServerName>::try_from("other.example").unwrap();
    let other = <&ruma::ServerName>::try_from("third.example").unwrap();
    fed.received(other, "t-other").await.unwrap();
    for i in 0..KEPT_TRANSACTIONS + 10 {
        fed.received(origin, &format!("t{i:05}")).await.unwrap();
        // A new ID is never dropped at once, so a retry right after is recognised.
        assert!(fed.already_received(origin, &format!("t{i:05}")).unwrap());
    }
    let kept = (0..KEPT_TRANSACTIONS + 10)
        .filter(|i| fed.already_received(origin, &format!("t{i:05}")).unwrap())
        .count();
    assert_eq!(kept, KEPT_TRANSACTIONS);
    assert!(
        fed.already_received(other, "t-other").unwrap(),
        "another server's are kept"
    );
    assert!(!fed.already_received(origin, "never-sent").unwrap());
}

/// An event as another server could send it after a gap: a message by `sender` whose prev
/// event this server never saw, at `depth`, authorised by the room's current state.
fn gap_event(
    s: &Services,
    room: &RoomId,
    sender: &UserId,
    n: u64,
    depth: u64,
) -> (ruma::OwnedEventId, ruma::CanonicalJsonObject) {
    // Room version 12 (the default): the create event is not named among auth events.
    let auth: Vec<String> = ["m.room.power_levels"]
        .iter()
        .filter_map(|ty| s.timeline.state_event_id(room, &(*ty).into(), "").unwrap())
        .chain(
            s.timeline
                .state_event_id(room, &"m.room.member".into(), sender.as_str())
                .unwrap(),
        )
        .map(|id| id.to_string())
        .collect();
    let obj: ruma::CanonicalJsonObject = serde_json::from_value(json!({
        "type": "m.room.message",
        "room_id": room,
        "sender": sender,
        "content": { "msgtype": "m.text", "body": format!("after a gap {n}") },
        "depth": depth,
        "origin_server_ts": 1_000 + n,
        "prev_events": [format!("$unknown{n}")],
        "auth_events": auth,
        "hashes": { "sha256": "x" },
        "signatures": {},
    }))
    .unwrap();
    let rules = s.timeline.rules(room).unwrap();
    let hash = ruma::signatures::reference_hash(&obj, &rules).unwrap();
    (format!("${hash}").try_into().unwrap(), obj)
}

#[tokio::test]
async fn events_after_gaps_cannot_make_the_next_local_event_unbounded() {
    let f = services().await;
    let alice = user(&f.s, "alice").await;
    let room = room(&f.s, &alice, "shared").await;
    // 30 events, each after a different unknown event: 30 forward extremities at most 20 of
    // which are kept; the deepest one as deep as canonical JSON allows.
    for n in 0..30 {
        let depth = if n == 29 { (1 << 53) - 1 } else { 10 + n };
        let ev = gap_event(&f.s, &room, &alice, n, depth);
        f.s.timeline
            .admit(&room, ev, super::timeline::append::Forward::No)
            .await
            .unwrap();
    }
    let record = f.s.timeline.room(&room).unwrap().unwrap();
    assert_eq!(record.extremities.len(), 20);
    // The next local event names 20 prev events and a depth that still fits.
    let ev = say(&f.s, &room, &alice, "still here").await;
    let pdu = ev.pdu().unwrap();
    assert_eq!(pdu.prev_events.len(), 20);
    assert_eq!(u64::from(pdu.depth), (1 << 53) - 1);
}

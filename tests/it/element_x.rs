//! Element X's stack against Tsunagu: matrix-sdk discovers native sliding sync from
//! `/versions`, logs in with a password, and matrix-sdk-ui's SyncService (RoomListService and
//! EncryptionSyncService), Timeline and NotificationClient do what the app does: list rooms by
//! recency with unread counts, accept an invite, read an encrypted room, resolve a push, page
//! back to a room's first event, and recover when the server forgot the connection.

use crate::common;

use std::sync::{Arc, Mutex};

use common::{Account, TestServer, WAIT, eventually};
use eyeball_im::Vector;
use futures_util::StreamExt;
use matrix_sdk::{
    Client, RoomState,
    ruma::{
        OwnedRoomId, RoomId,
        api::client::receipt::create_receipt::v3::ReceiptType,
        events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent, receipt::ReceiptThread},
    },
    sliding_sync::Version as SlidingSyncVersion,
};
use matrix_sdk_ui::{
    Timeline,
    notification_client::{
        NotificationClient, NotificationEvent, NotificationProcessSetup, NotificationStatus,
    },
    room_list_service::{RoomListItem, filters},
    sync_service::SyncService,
    timeline::RoomExt,
};
use serde_json::json;

/// Element X on a phone: a client that found native sliding sync in `/versions`, logged in
/// with a password (Element X registers only through OAuth, so the account exists already),
/// and runs the SyncService.
struct ElementX {
    client: Client,
    sync: Arc<SyncService>,
    /// The room list as the app shows it, top first.
    rooms: Arc<Mutex<Vec<OwnedRoomId>>>,
    _list: tokio::task::JoinHandle<()>,
}

impl ElementX {
    async fn log_in(t: &TestServer, name: &str) -> Self {
        let client = Client::builder()
            .homeserver_url(t.url())
            .sqlite_store(
                t.dir()
                    .join(format!("element-x-{name}-{}", common::http::next_number())),
                None,
            )
            .sliding_sync_version_builder(matrix_sdk::sliding_sync::VersionBuilder::DiscoverNative)
            .build()
            .await
            .expect("the client finds native sliding sync");
        assert!(
            matches!(client.sliding_sync_version(), SlidingSyncVersion::Native),
            "/versions advertises simplified sliding sync"
        );
        client
            .matrix_auth()
            .login_username(name, &common::password(name))
            .initial_device_display_name("Element X")
            .send()
            .await
            .expect("password login");
        client.event_cache().subscribe().expect("event cache");
        // Element X runs the sync in offline mode: when the server cannot be reached it waits
        // for it and starts again by itself.
        let sync = Arc::new(
            SyncService::builder(client.clone())
                .with_offline_mode()
                .build()
                .await
                .unwrap(),
        );
        sync.start().await;
        let rooms = Arc::new(Mutex::new(Vec::new()));
        let list = {
            let room_list_service = sync.room_list_service();
            let shown = rooms.clone();
            tokio::spawn(async move {
                let all = room_list_service.all_rooms().await.expect("the room list");
                let (stream, controller) = all.entries_with_dynamic_adapters(100);
                controller.set_filter(Box::new(filters::new_filter_non_left()));
                futures_util::pin_mut!(stream);
                let mut items: Vector<RoomListItem> = Vector::new();
                while let Some(diffs) = stream.next().await {
                    for diff in diffs {
                        diff.apply(&mut items);
                    }
                    *shown.lock().unwrap() = items.iter().map(|r| r.room_id().to_owned()).collect();
                }
            })
        };
        Self {
            client,
            sync,
            rooms,
            _list: list,
        }
    }

    /// Waits until the room list shows exactly `want`, top first.
    async fn shows(&self, want: &[&str]) {
        eventually(WAIT, &format!("the room list to show {want:?}"), || async {
            let shown = self.rooms.lock().unwrap().clone();
            (shown.iter().map(|r| r.as_str()).collect::<Vec<_>>() == want).then_some(())
        })
        .await;
    }

    async fn room(&self, room_id: &RoomId) -> matrix_sdk::Room {
        eventually(WAIT, "the room in the client", || async {
            self.client.get_room(room_id)
        })
        .await
    }

    /// Waits until the server's unread notification count of the room is `n`.
    async fn unread(&self, room_id: &RoomId, n: u64) {
        let room = self.room(room_id).await;
        eventually(WAIT, &format!("{n} unread notifications"), || async {
            (room.unread_notification_counts().notification_count == n).then_some(())
        })
        .await;
    }

    async fn stop(self) {
        self.sync.stop().await;
    }
}

/// The bodies of the messages a timeline shows.
async fn timeline_bodies(timeline: &Timeline) -> Vec<String> {
    timeline
        .items()
        .await
        .iter()
        .filter_map(|item| {
            item.as_event()
                .and_then(|e| e.content().as_message().map(|m| m.body().to_owned()))
        })
        .collect()
}

async fn waits_for_body(timeline: &Timeline, body: &str) {
    eventually(WAIT, &format!("{body:?} in the timeline"), || async {
        timeline_bodies(timeline)
            .await
            .iter()
            .any(|b| b == body)
            .then_some(())
    })
    .await;
}

/// Bob (raw HTTP) makes rooms and invites Alice.
async fn room_with(t: &TestServer, bob: &Account, alice: &Account, name: &str) -> String {
    let room = t
        .http
        .create_room(
            &bob.token,
            json!({ "preset": "public_chat", "name": name, "invite": [alice.id] }),
        )
        .await;
    assert_eq!(t.http.join(&alice.token, &room).await.0, 200);
    room
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_list_follows_recency_and_unread_counts_come_and_go() {
    let t = TestServer::start().await;
    let alice_http = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let a = room_with(&t, &bob, &alice_http, "Alumni A").await;
    let b = room_with(&t, &bob, &alice_http, "Alumni B").await;
    let c = room_with(&t, &bob, &alice_http, "Alumni C").await;
    for room in [&a, &c, &b] {
        t.http.send_text(&bob.token, room, "news").await;
    }
    let alice = ElementX::log_in(&t, "alice").await;
    alice.shows(&[&b, &c, &a]).await;

    // A message in A moves it to the top and counts as unread.
    t.http.send_text(&bob.token, &a, "A again").await;
    t.http.send_text(&bob.token, &a, "A once more").await;
    alice.shows(&[&a, &b, &c]).await;
    let a_id = RoomId::parse(&a).unwrap();
    alice.unread(&a_id, 3).await;

    // Reading up to the latest message brings the count back to zero.
    let room = alice.room(&a_id).await;
    let newest = t.http.send_text(&bob.token, &a, "the newest").await;
    alice.unread(&a_id, 4).await;
    room.send_single_receipt(
        ReceiptType::Read,
        ReceiptThread::Unthreaded,
        newest.parse().unwrap(),
    )
    .await
    .unwrap();
    alice.unread(&a_id, 0).await;
    alice.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_shows_up_and_can_be_accepted() {
    let t = TestServer::start().await;
    let _alice_http = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let alice = ElementX::log_in(&t, "alice").await;
    alice.shows(&[]).await;
    let room = t
        .http
        .create_room(
            &bob.token,
            json!({ "preset": "private_chat", "name": "Reunion", "invite": ["@alice:localhost"] }),
        )
        .await;
    alice.shows(&[&room]).await;
    let room_id = RoomId::parse(&room).unwrap();
    let invited = alice.room(&room_id).await;
    eventually(WAIT, "the room to be an invite", || async {
        (invited.state() == RoomState::Invited).then_some(())
    })
    .await;
    invited.join().await.expect("joining");
    eventually(WAIT, "the room to be joined", || async {
        (invited.state() == RoomState::Joined).then_some(())
    })
    .await;
    t.http.send_text(&bob.token, &room, "welcome!").await;
    let timeline = invited.timeline().await.unwrap();
    waits_for_body(&timeline, "welcome!").await;
    alice.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_room_decrypts_and_a_push_resolves_to_its_message() {
    let t = TestServer::start().await;
    t.http.register("alice").await;
    let alice = ElementX::log_in(&t, "alice").await;
    // Bob on a classic client (sync v3), which encrypts for Alice's Element X device.
    let bob = common::user(&t, "bob").await;
    common::client::wait_for_device_keys(
        &t.url(),
        &bob.client.access_token().unwrap(),
        alice.client.user_id().unwrap(),
        alice.client.device_id(),
    )
    .await;
    let mut req = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
    req.name = Some("Secret circle".into());
    req.preset =
        Some(matrix_sdk::ruma::api::client::room::create_room::v3::RoomPreset::PrivateChat);
    req.invite = vec![alice.client.user_id().unwrap().to_owned()];
    let bob_room = bob.client.create_room(req).await.unwrap();
    let room_id = bob_room.room_id().to_owned();
    let invited = alice.room(&room_id).await;
    eventually(WAIT, "the invite", || async {
        (invited.state() == RoomState::Invited).then_some(())
    })
    .await;
    invited.join().await.unwrap();
    common::client::wait_membership(
        &bob_room,
        alice.client.user_id().unwrap(),
        matrix_sdk::ruma::events::room::member::MembershipState::Join,
    )
    .await;
    let secret = common::client::say(&bob_room, "the secret plan").await;
    let stored = common::stored(&t.server, &room_id);
    assert!(
        stored
            .iter()
            .any(|e| e.event_id == secret && e.kind() == "m.room.encrypted"),
        "the server holds only ciphertext"
    );
    let timeline = invited.timeline().await.unwrap();
    waits_for_body(&timeline, "the secret plan").await;

    // A push arrives for a new message: the NotificationClient resolves it, decrypted.
    let ping = common::client::say(&bob_room, "ping for your phone").await;
    let notifications = NotificationClient::new(
        alice.client.clone(),
        NotificationProcessSetup::SingleProcess {
            sync_service: alice.sync.clone(),
        },
    )
    .await
    .unwrap();
    let status = eventually(WAIT, "the notification to resolve", || async {
        match notifications.get_notification(&room_id, &ping).await {
            Ok(NotificationStatus::Event(item)) => Some(item),
            _ => None,
        }
    })
    .await;
    let NotificationEvent::Timeline(ev) = &status.event else {
        panic!("a timeline event, not an invite");
    };
    let AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(msg)) = &**ev else {
        panic!("a decrypted room message: {ev:?}");
    };
    assert_eq!(
        msg.as_original().unwrap().content.body(),
        "ping for your phone"
    );
    assert_eq!(status.room_computed_display_name, "Secret circle");
    alice.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeline_pages_back_to_the_rooms_first_event() {
    let t = TestServer::start().await;
    let alice_http = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let room = room_with(&t, &bob, &alice_http, "Long history").await;
    for i in 0..60 {
        t.http
            .send_text(&bob.token, &room, &format!("message {i}"))
            .await;
    }
    let alice = ElementX::log_in(&t, "alice").await;
    let room_id = RoomId::parse(&room).unwrap();
    let timeline = alice.room(&room_id).await.timeline().await.unwrap();
    waits_for_body(&timeline, "message 59").await;
    let mut reached_start = false;
    for _ in 0..20 {
        if timeline.paginate_backwards(20).await.unwrap() {
            reached_start = true;
            break;
        }
    }
    assert!(reached_start, "pagination reaches the start of the room");
    let bodies = timeline_bodies(&timeline).await;
    let expected: Vec<String> = (0..60).map(|i| format!("message {i}")).collect();
    assert_eq!(bodies, expected, "every message once, in order, no gap");
    alice.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_recovers_when_the_server_forgot_its_connection() {
    // A fixed port, so that the restarted server is where the app left it.
    let addr = common::free_addr();
    let t = TestServer::start_with(|c| c.listen = addr).await;
    let alice_http = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let room = room_with(&t, &bob, &alice_http, "Steady").await;
    let alice = ElementX::log_in(&t, "alice").await;
    alice.shows(&[&room]).await;
    let room_id = RoomId::parse(&room).unwrap();
    let timeline = alice.room(&room_id).await.timeline().await.unwrap();
    t.http
        .send_text(&bob.token, &room, "before the restart")
        .await;
    waits_for_body(&timeline, "before the restart").await;

    // The server restarts and forgets every connection; the app's next pos is unknown.
    let t = t.restart().await;
    let bob = t.http.login("bob").await;
    t.http
        .send_text(&bob.token, &room, "after the restart")
        .await;
    eventually(WAIT * 2, "the app to sync again", || async {
        timeline_bodies(&timeline)
            .await
            .iter()
            .any(|b| b == "after the restart")
            .then_some(())
    })
    .await;
    // The app starts its connection again: a fresh (limited) timeline, with the earlier
    // message a page back.
    for _ in 0..5 {
        if timeline_bodies(&timeline)
            .await
            .contains(&"before the restart".to_owned())
            || timeline.paginate_backwards(20).await.unwrap()
        {
            break;
        }
    }
    assert!(
        timeline_bodies(&timeline)
            .await
            .contains(&"before the restart".to_owned())
    );
    alice.stop().await;
    t.stop().await;
}

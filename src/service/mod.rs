//! Matrix semantics, no HTTP. The service layer is a set of areas, one per part of the spec,
//! each a struct that names the areas it depends on. [`Services`] builds them in dependency
//! order (so no two areas can depend on each other) and holds them for the API layer and the
//! background tasks. Operations that span several areas (creating an account, deleting
//! devices, deactivating) are methods of [`Services`] itself.
//!
//! ```text
//! core ─┬─ users ─┬─ uiaa
//!       │         ├─ appservices ───────┐
//!       ├─ account_data ─ timeline ─────┼─ directory ─ rooms
//!       │                    ├─ ephemeral ─ push      └─ appservice sender
//!       ├─ keys (users, timeline)      sync (timeline, account_data, ephemeral, push, keys)
//!       ├─ federation ─ federated rooms (users, timeline) ─ rooms
//!       ├─ backup
//!       └─ media (users)
//! ```

pub mod account_data;
pub mod appservice;
pub mod backup;
pub mod core;
pub mod dehydrated;
pub mod directory;
pub mod ephemeral;
pub mod federation;
pub mod filter;
pub mod keys;
pub mod media;
pub mod net;
pub mod openid;
pub mod presence;
pub mod push;
pub mod pusher;
pub mod ratelimit;
pub mod reports;
pub mod rooms;
pub mod search;
pub mod session;
pub mod sync;
pub mod timeline;
pub mod token;
pub mod uiaa;
pub mod user_directory;
pub mod users;
pub mod voip;

use std::sync::Arc;

use ruma::{OwnedDeviceId, UserId, events::room::member::MembershipState};

use crate::{config::Config, error::Result};

/// The data layout this version writes: 1 added the state history index, 2 dropped queued
/// to-device messages of devices that no longer exist, 3 added the relation, aggregation and
/// full-text indexes, 4 keeps one receipt per thread.
pub const SCHEMA_VERSION: u64 = 4;

/// Every service area of one server. Cheap to share through `Arc`.
pub struct Services {
    pub core: Arc<core::Core>,
    pub users: Arc<users::Users>,
    pub uiaa: uiaa::Uiaa,
    pub rate_limiter: ratelimit::RateLimiter,
    pub appservices: Arc<appservice::Appservices>,
    pub timeline: Arc<timeline::Timeline>,
    pub account_data: Arc<account_data::AccountData>,
    pub ephemeral: Arc<ephemeral::Ephemeral>,
    pub directory: Arc<directory::Directory>,
    pub rooms: rooms::Rooms,
    pub push: Arc<push::Push>,
    pub keys: Arc<keys::Keys>,
    pub backup: backup::Backup,
    pub media: media::Media,
    pub sync: sync::Sync,
    pub appservice_sender: Arc<appservice::sender::AppserviceSender>,
    pub user_directory: user_directory::UserDirectory,
    pub search: search::Search,
    pub presence: Arc<presence::Presence>,
    pub notifier: Arc<pusher::Notifier>,
    pub openid: openid::OpenId,
    pub federation: Arc<federation::Federation>,
    pub federated_rooms: Arc<federation::rooms::FederatedRooms>,
    pub reports: reports::Reports,
}

impl Services {
    /// Opens the store in the configured data directory and builds every area.
    pub async fn open(config: Config) -> anyhow::Result<Arc<Self>> {
        let core = core::Core::open(config).await?;
        let users = Arc::new(users::Users::new(core.clone()));
        let appservices = Arc::new(appservice::Appservices::new(core.clone(), users.clone())?);
        let account_data = Arc::new(account_data::AccountData::new(core.clone()));
        let timeline = Arc::new(timeline::Timeline::new(core.clone(), account_data.clone()));
        let ephemeral = Arc::new(ephemeral::Ephemeral::new(core.clone(), timeline.clone()));
        let federation = Arc::new(federation::Federation::new(core.clone())?);
        let federated_rooms = Arc::new(federation::rooms::FederatedRooms::new(
            core.clone(),
            users.clone(),
            federation.clone(),
            timeline.clone(),
        ));
        federation.listen_to_outbox(&timeline);
        let directory = Arc::new(directory::Directory::new(
            core.clone(),
            users.clone(),
            timeline.clone(),
            appservices.clone(),
            federation.clone(),
        ));
        let push = Arc::new(push::Push::new(
            core.clone(),
            users.clone(),
            appservices.clone(),
            account_data.clone(),
            timeline.clone(),
            ephemeral.clone(),
        ));
        let observer: Arc<dyn timeline::AppendObserver> = push.clone();
        timeline.set_append_observer(&observer);
        let keys = Arc::new(keys::Keys::new(
            core.clone(),
            users.clone(),
            timeline.clone(),
        ));
        let presence = Arc::new(presence::Presence::new(core.clone(), timeline.clone()));
        let services = Arc::new(Self {
            uiaa: uiaa::Uiaa::new(core.clone(), users.clone()),
            rate_limiter: ratelimit::RateLimiter::new(
                core.config.rate_limit.burst,
                core.config.rate_limit.per_minute,
            ),
            rooms: rooms::Rooms::new(
                core.clone(),
                users.clone(),
                timeline.clone(),
                directory.clone(),
                appservices.clone(),
                federated_rooms.clone(),
            ),
            backup: backup::Backup::new(core.clone()),
            openid: openid::OpenId::new(core.clone()),
            federation: federation.clone(),
            federated_rooms,
            reports: reports::Reports::new(core.clone(), timeline.clone()),
            search: search::Search::new(core.clone(), timeline.clone()),
            presence: presence.clone(),
            notifier: Arc::new(pusher::Notifier::new(
                core.clone(),
                users.clone(),
                appservices.clone(),
                timeline.clone(),
                push.clone(),
            )),
            user_directory: user_directory::UserDirectory::new(
                core.clone(),
                users.clone(),
                timeline.clone(),
            ),
            media: media::Media::new(core.clone(), users.clone(), federation.clone())?,
            sync: sync::Sync {
                core: core.clone(),
                timeline: timeline.clone(),
                account_data: account_data.clone(),
                ephemeral: ephemeral.clone(),
                push: push.clone(),
                keys: keys.clone(),
                presence: presence.clone(),
                connections: Default::default(),
            },
            appservice_sender: Arc::new(appservice::sender::AppserviceSender::new(
                core.clone(),
                timeline.clone(),
                ephemeral.clone(),
                directory.clone(),
                appservices.clone(),
            )),
            core,
            users,
            appservices,
            timeline,
            account_data,
            ephemeral,
            directory,
            push,
            keys,
        });
        services.migrate().await?;
        Ok(services)
    }

    /// Brings an older data directory up to [`SCHEMA_VERSION`], once.
    async fn migrate(&self) -> Result<()> {
        let version = self.core.schema_version()?;
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        if version < 1 {
            self.timeline.build_state_history().await?;
        }
        if version < 2 {
            let dropped = self.keys.drop_orphaned_to_device().await?;
            if dropped > 0 {
                tracing::info!(dropped, "dropped to-device messages of deleted devices");
            }
        }
        if version < 3 {
            self.timeline.build_relation_and_search_indexes().await?;
        }
        if version < 4 {
            self.ephemeral.migrate_receipts().await?;
        }
        self.core.set_schema_version(SCHEMA_VERSION).await
    }

    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Creates each appservice's sender user when missing.
    pub async fn ensure_appservice_users(&self) -> Result<()> {
        for a in &self.appservices.list {
            if self.users.account(&a.sender)?.is_none() {
                self.users
                    .create_account(&a.sender, None, false, None)
                    .await?;
            }
        }
        Ok(())
    }

    /// Logs devices out and forgets their keys and queued messages.
    pub async fn delete_devices(&self, user_id: &UserId, devices: &[OwnedDeviceId]) -> Result<()> {
        self.users.remove_devices(user_id, devices).await?;
        self.keys.forget_devices(user_id, devices).await
    }

    pub async fn delete_all_devices(&self, user_id: &UserId) -> Result<()> {
        let ids: Vec<_> = self
            .users
            .devices(user_id)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.delete_devices(user_id, &ids).await
    }

    /// Deactivates an account: no login, no devices, out of every room.
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        self.users.mark_deactivated(user_id).await?;
        self.delete_all_devices(user_id).await?;
        self.notifier.forget_user(user_id).await?;
        for room_id in self
            .timeline
            .rooms_with_membership(user_id, &[MembershipState::Join, MembershipState::Invite])?
        {
            if let Err(e) = self.rooms.leave(user_id, &room_id, None).await {
                tracing::warn!(%room_id, "leaving on deactivation failed: {e}");
            }
        }
        Ok(())
    }

    /// A read receipt (`m.read` or `m.read.private`): stored and sent to the room (a public
    /// one also to the other servers in it), then the user's unread count in the room moves up
    /// to it.
    pub async fn set_receipt(
        &self,
        room_id: &ruma::RoomId,
        user: &UserId,
        receipt_type: &str,
        event_id: &ruma::EventId,
        thread_id: Option<String>,
    ) -> Result<()> {
        self.ephemeral
            .set_receipt(room_id, user, receipt_type, event_id, thread_id.clone())
            .await?;
        if receipt_type == "m.read" {
            self.federated_rooms
                .send_receipt(room_id, user, event_id, thread_id)
                .await?;
        }
        self.push.rebase_unread(user, room_id).await
    }

    /// Moves a joined user's fully-read marker (`m.fully_read` room account data) to an event
    /// they may see.
    pub async fn set_fully_read(
        &self,
        user: &UserId,
        room_id: &ruma::RoomId,
        event_id: &ruma::EventId,
    ) -> Result<()> {
        self.timeline.require_joined(user, room_id)?;
        let (ev, _) = self.timeline.visible_event(user, event_id)?;
        if ev.room_id != room_id {
            return Err(crate::error::Error::not_found("Event not in this room"));
        }
        self.account_data
            .set(
                user,
                Some(room_id),
                "m.fully_read",
                serde_json::json!({ "event_id": event_id }),
            )
            .await
    }

    /// Starts the background tasks: appservice senders and the memory trim.
    pub fn start_tasks(&self) {
        self.appservice_sender.start();
        self.presence.start_timeouts();
        self.notifier.start();
        self.federation.start_sender();
        self.federated_rooms.start_announcer(self.presence.clone());
        self.core.start_memory_trim();
    }

    /// On the first start with registration by token, creates one single-use token.
    pub async fn first_start(&self) -> Result<Option<String>> {
        if self.core.config.registration == crate::config::Registration::Token
            && self.users.has_no_accounts()?
            && self.users.has_no_registration_tokens()?
        {
            return Ok(Some(self.users.new_registration_token(Some(1)).await?));
        }
        Ok(None)
    }

    /// Ends the background tasks and makes every write durable.
    pub async fn shutdown(&self) -> Result<()> {
        self.core.shutdown().await;
        self.core.persist().await
    }
}

#[cfg(test)]
mod tests;

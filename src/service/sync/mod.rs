//! `/sync`: what changed for a user since a token, long-polling until something does.
//!
//! Everything durable (timeline, state, memberships, receipts, account data, to-device
//! messages, key changes) is read from the store up to the published stream position; typing
//! comes from memory. Tokens are [`StreamToken`]s.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
    time::Duration,
};

use ruma::{
    DeviceId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    api::client::{
        filter::{FilterDefinition, LazyLoadOptions, RoomEventFilter},
        sync::sync_events::{
            UnreadNotificationsCount,
            v3::{
                InvitedRoom, JoinedRoom, KnockedRoom, LeftRoom, Response, State, StateEvents,
                Timeline as SyncTimeline,
            },
        },
    },
    events::{
        AnyGlobalAccountDataEvent, AnyRoomAccountDataEvent, StateEventType,
        room::member::MembershipState,
    },
    presence::PresenceState,
    serde::Raw,
};
use serde_json::json;

pub mod sliding;

use super::{
    account_data::AccountData,
    core::Core,
    ephemeral::Ephemeral,
    filter::{filter_allows, room_allowed, type_matches},
    keys::Keys,
    presence::Presence,
    push::Push,
    timeline::{ClientView, Timeline, state::StateMap, visibility::Reader},
    token::StreamToken,
};
use crate::{
    error::Result,
    json::to_raw,
    store::{MembershipRecord, StoredEvent},
};

/// One sync request, parsed.
pub struct SyncRequest<'a> {
    pub user: &'a UserId,
    pub device: &'a DeviceId,
    pub since: Option<StreamToken>,
    pub filter: FilterDefinition,
    pub full_state: bool,
    pub timeout: Duration,
    /// The presence the syncing client sets (`set_presence`, online by default).
    pub set_presence: PresenceState,
}

/// `/sync`. Depends on [`Core`], [`Timeline`], [`AccountData`], [`Ephemeral`], [`Push`] and
/// [`Keys`].
pub struct Sync {
    pub(super) core: Arc<Core>,
    pub(super) timeline: Arc<Timeline>,
    pub(super) account_data: Arc<AccountData>,
    pub(super) ephemeral: Arc<Ephemeral>,
    pub(super) push: Arc<Push>,
    pub(super) keys: Arc<Keys>,
    pub(super) presence: Arc<Presence>,
    /// Sliding sync connections.
    pub(super) connections: sliding::Connections,
}

impl Sync {
    /// Answers a sync request, waiting up to its timeout for something to report.
    pub async fn sync(&self, req: SyncRequest<'_>) -> Result<Response> {
        self.presence.synced(req.user, &req.set_presence).await?;
        let deadline = tokio::time::Instant::now() + req.timeout.min(Duration::from_secs(300));
        let mut rx = self.core.subscribe();
        let mut stop = self.core.shutdown_signal();
        loop {
            rx.borrow_and_update();
            let mut seen = self.core.current_pos();
            let typing = self.ephemeral.serial();
            let response = self.build(&req).await?;
            let has_news = !response.rooms.is_empty()
                || !response.rooms.knock.is_empty()
                || !response.presence.is_empty()
                || !response.account_data.is_empty()
                || !response.to_device.is_empty()
                || !response.device_lists.is_empty();
            if req.since.is_none() || req.full_state || has_news {
                return Ok(response);
            }
            // Wait until something this user can see moves. Most wakes are other rooms'
            // messages: a look at the new stream entries is far cheaper than a rebuild.
            let my_rooms: HashSet<OwnedRoomId> = self
                .timeline
                .memberships(req.user)?
                .into_iter()
                .map(|(room, _)| room)
                .collect();
            loop {
                tokio::select! {
                    r = tokio::time::timeout_at(deadline, rx.changed()) => match r {
                        Ok(Ok(())) => {}
                        _ => return Ok(response),
                    },
                    _ = stop.wait_for(|s| *s) => return Ok(response),
                }
                rx.borrow_and_update();
                let now = self.core.current_pos();
                if self.ephemeral.typing_moved_in(&my_rooms, typing)
                    || self.stream_concerns(req.user, &my_rooms, seen, now)?
                {
                    break;
                }
                seen = now;
            }
        }
    }

    /// Whether a stream entry in `(since, upto]` may change what `user` sees: a room they
    /// have a membership in, their own data (account data, invites, to-device), or anyone's
    /// keys (device lists).
    fn stream_concerns(
        &self,
        user: &UserId,
        my_rooms: &HashSet<OwnedRoomId>,
        since: u64,
        upto: u64,
    ) -> Result<bool> {
        for entry in self.core.stream_entries(since, upto) {
            let (_, entry) = entry?;
            if entry.keys.is_some()
                || entry.user.as_deref() == Some(user)
                || entry.room.as_ref().is_some_and(|r| my_rooms.contains(r))
            {
                return Ok(true);
            }
            if let Some(other) = entry.presence {
                for room in my_rooms {
                    if self.timeline.is_joined(&other, room)? {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Rooms, users whose presence changed, and whether the user's own entries moved in
    /// `(since, upto]`.
    fn changes_since(
        &self,
        user: &UserId,
        since: u64,
        upto: u64,
    ) -> Result<(HashSet<OwnedRoomId>, BTreeSet<OwnedUserId>, bool)> {
        let mut rooms = HashSet::new();
        let mut presence = BTreeSet::new();
        let mut mine = false;
        for entry in self.core.stream_entries(since, upto) {
            let (_, entry) = entry?;
            if let Some(r) = entry.room {
                rooms.insert(r);
            }
            if let Some(u) = entry.presence {
                presence.insert(u);
            }
            mine |= entry.user.as_deref() == Some(user);
        }
        Ok((rooms, presence, mine))
    }

    /// Presence events of the people who share a room with the user (and the user's own):
    /// those in `changed`, or everyone's on an initial sync.
    fn presence_events(
        &self,
        user: &UserId,
        changed: Option<&BTreeSet<OwnedUserId>>,
    ) -> Result<Vec<ruma::serde::Raw<ruma::events::presence::PresenceEvent>>> {
        if changed.is_some_and(BTreeSet::is_empty) || !self.presence.enabled() {
            return Ok(Vec::new());
        }
        let mut people = BTreeSet::from([user.to_owned()]);
        for room in self
            .timeline
            .rooms_with_membership(user, &[MembershipState::Join])?
        {
            people.extend(self.timeline.joined_members(&room)?);
        }
        let mut out = Vec::new();
        for person in people {
            if changed.is_some_and(|c| !c.contains(&person)) {
                continue;
            }
            if let Some(ev) = self.presence.event(&person)? {
                out.push(to_raw(&ev));
            }
        }
        Ok(out)
    }

    async fn build(&self, req: &SyncRequest<'_>) -> Result<Response> {
        let pos = self.core.current_pos();
        let typing_serial = self.ephemeral.serial();
        // To-device messages first: the token says how far they went out.
        let (to_device, to_device_reached) = self
            .keys
            .take_to_device(req.user, req.device, req.since.map(|s| s.to_device), pos)
            .await?;
        let mut response = Response::new(
            StreamToken {
                pos,
                typing: typing_serial,
                to_device: to_device_reached,
            }
            .to_string(),
        );
        response.to_device.events = to_device.iter().map(to_raw).collect();
        let since_pos = req.since.map(|s| s.pos);
        let (changed, presence_changed, mine) = match since_pos {
            Some(s) => {
                let (rooms, presence, mine) = self.changes_since(req.user, s, pos)?;
                (Some(rooms), Some(presence), mine)
            }
            None => (None, None, true),
        };
        response.presence.events = self.presence_events(req.user, presence_changed.as_ref())?;
        let typing_since = req.since.map(|s| {
            if s.typing > typing_serial {
                0
            } else {
                s.typing
            }
        });

        // End-to-end encryption: key counts, device-list changes.
        response.device_one_time_keys_count = self
            .keys
            .one_time_key_counts(req.user, req.device)?
            .into_iter()
            .map(|(alg, n)| (alg.as_str().into(), UInt::new_saturating(n)))
            .collect();
        response.device_unused_fallback_key_types = Some(
            self.keys
                .unused_fallback_key_types(req.user, req.device)?
                .iter()
                .map(|alg| alg.as_str().into())
                .collect(),
        );
        if let Some(since) = since_pos {
            let (changed, left) = self.keys.device_list_changes(req.user, since, pos)?;
            response.device_lists.changed = changed.into_iter().collect();
            response.device_lists.left = left.into_iter().collect();
        }

        // Account data moves only at the user's own stream entries.
        let (global, mut room_account_data) = if mine {
            let types = req.filter.account_data.types.as_deref();
            self.account_data_since(req.user, since_pos, |ty| {
                types.is_none_or(|t| type_matches(t, ty))
            })?
        } else {
            Default::default()
        };
        response.account_data.events = global;

        let ignored = self.account_data.ignored_users(req.user)?;
        let mut joined_rooms: Vec<RoomJob> = Vec::new();
        for (room_id, m) in self.timeline.memberships(req.user)? {
            if !room_allowed(&req.filter, &room_id) || m.pos > pos {
                continue;
            }
            let is_new = since_pos.is_none_or(|s| m.changed_at() > s);
            match m.membership {
                MembershipState::Join => {
                    let full = is_new || req.full_state;
                    let typing_changed =
                        typing_since.is_some_and(|t| self.ephemeral.typing(&room_id).1 > t);
                    let touched = changed.as_ref().is_none_or(|c| c.contains(&room_id))
                        || typing_changed
                        || room_account_data.contains_key(&room_id);
                    if !full && !touched {
                        continue;
                    }
                    let from = if is_new { None } else { since_pos };
                    joined_rooms.push(RoomJob {
                        room_id,
                        m,
                        from,
                        full,
                    });
                }
                MembershipState::Invite if is_new && !self.invited_by(&m, &ignored)? => {
                    let mut invited = InvitedRoom::new();
                    invited.invite_state.events = self.invite_state(&room_id, &m)?;
                    response.rooms.invite.insert(room_id, invited);
                }
                MembershipState::Knock if is_new => {
                    let mut knocked = KnockedRoom::new();
                    knocked.knock_state.events = self.invite_state(&room_id, &m)?;
                    response.rooms.knock.insert(room_id, knocked);
                }
                MembershipState::Leave | MembershipState::Ban
                    if (since_pos.is_some() && is_new)
                        || (since_pos.is_none() && req.filter.room.include_leave) =>
                {
                    let left = self.left_room(req, &room_id, &m, since_pos)?;
                    response.rooms.leave.insert(room_id, left);
                }
                _ => {}
            }
        }
        let built = self.joined_rooms(req, &joined_rooms, pos, typing_since, &ignored);
        for (job, joined) in joined_rooms.into_iter().zip(built) {
            let mut joined = joined?;
            if let Some(ad) = room_account_data.remove(&job.room_id) {
                joined.account_data.events = ad;
            }
            if !joined.is_empty() || job.full {
                response.rooms.join.insert(job.room_id, joined);
            }
        }
        Ok(response)
    }

    /// Builds the joined rooms of a sync. An initial sync of an account in hundreds of rooms
    /// is most of its time here, and the rooms are independent: with a multi-threaded runtime
    /// they are split across up to [`MAX_SYNC_THREADS`] scoped threads (the calling worker
    /// steps aside meanwhile), so that a new device is not kept waiting on one core.
    fn joined_rooms(
        &self,
        req: &SyncRequest<'_>,
        jobs: &[RoomJob],
        upto: u64,
        typing_since: Option<u64>,
        ignored: &HashSet<OwnedUserId>,
    ) -> Vec<Result<JoinedRoom>> {
        let one = |j: &RoomJob| {
            self.joined_room(
                req,
                &j.room_id,
                &j.m,
                j.from,
                upto,
                j.full,
                typing_since,
                ignored,
            )
        };
        let threads = sync_threads(jobs.len());
        if threads <= 1 {
            return jobs.iter().map(one).collect();
        }
        let chunk = jobs.len().div_ceil(threads);
        tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let parts: Vec<_> = jobs
                    .chunks(chunk)
                    .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
                    .collect();
                parts
                    .into_iter()
                    .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            })
        })
    }

    /// Account data changed after `since` (all of it when None): the global events `wanted`
    /// allows, and room account data by room. A user who never changed a push rule has the
    /// server's defaults, stored nowhere: an initial sync shows them.
    #[allow(clippy::type_complexity)]
    fn account_data_since(
        &self,
        user: &UserId,
        since: Option<u64>,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<(
        Vec<Raw<AnyGlobalAccountDataEvent>>,
        BTreeMap<OwnedRoomId, Vec<Raw<AnyRoomAccountDataEvent>>>,
    )> {
        let mut global = Vec::new();
        let mut rooms: BTreeMap<OwnedRoomId, Vec<_>> = BTreeMap::new();
        let changed = self.account_data.since(user, since.unwrap_or(0))?;
        if since.is_none()
            && wanted("m.push_rules")
            && !changed
                .iter()
                .any(|(r, ty, _)| r.is_none() && ty == "m.push_rules")
        {
            let rules = self.push.rules(user)?;
            global.push(to_raw(
                &json!({ "type": "m.push_rules", "content": { "global": rules } }),
            ));
        }
        for (room, ty, content) in changed {
            let ev = json!({ "type": ty, "content": content });
            match room {
                Some(r) => rooms.entry(r).or_default().push(to_raw(&ev)),
                None if wanted(&ty) => global.push(to_raw(&ev)),
                None => {}
            }
        }
        Ok((global, rooms))
    }

    /// Whether an invite comes from one of the users the invitee ignores.
    fn invited_by(
        &self,
        m: &MembershipRecord,
        ignored: &std::collections::HashSet<OwnedUserId>,
    ) -> Result<bool> {
        Ok(self
            .timeline
            .event(&m.event_id)?
            .and_then(|ev| ev.sender())
            .is_some_and(|sender| ignored.contains(&sender)))
    }

    /// A room the user left or was banned from: the timeline up to the moment they left.
    fn left_room(
        &self,
        req: &SyncRequest<'_>,
        room_id: &RoomId,
        m: &MembershipRecord,
        since: Option<u64>,
    ) -> Result<LeftRoom> {
        let mut left = LeftRoom::new();
        let limit = timeline_limit(&req.filter);
        let view = ClientView {
            device: Some((req.user, req.device)),
            with_room_id: false,
        };
        let reader = self.timeline.reader(req.user, room_id)?;
        let from = since.unwrap_or(0) + 1;
        let mut events: Vec<StoredEvent> = self
            .timeline
            .timeline_range(room_id, from, m.pos + 1, true, limit + 1)?
            .into_iter()
            .filter(|e| reader.sees(e))
            .collect();
        left.timeline.limited = events.len() > limit;
        events.truncate(limit);
        events.reverse();
        left.timeline.prev_batch =
            Some(StreamToken::before(events.first().map_or(m.pos + 1, |e| e.pos)).pagination());
        let mut state = StateEvents::new();
        state.events = self.state_section(
            req,
            room_id,
            &events,
            since,
            m.pos,
            since.is_none(),
            left.timeline.limited,
            &view,
        )?;
        left.state = State::Before(state);
        left.timeline.events = events
            .iter()
            .map(|e| {
                self.timeline
                    .client_raw(e, &view, Some(&reader.membership_at(e)))
            })
            .collect();
        Ok(left)
    }

    /// The `state` of a room in a sync: the state at the start of the timeline. Everything for
    /// a full sync; else what changed in the gap a limited timeline skipped; with lazy loading,
    /// only the members of the timeline's senders (and of the user).
    #[allow(clippy::too_many_arguments)]
    fn state_section(
        &self,
        req: &SyncRequest<'_>,
        room_id: &RoomId,
        events: &[StoredEvent],
        from: Option<u64>,
        upto: u64,
        full: bool,
        limited: bool,
        view: &ClientView<'_>,
    ) -> Result<Vec<ruma::serde::Raw<ruma::events::AnySyncStateEvent>>> {
        let filter = &req.filter.room;
        let first_pos = events.first().map(|e| e.pos);
        // State at the start of the timeline: everything for a full sync, else what changed
        // in the gap a limited timeline skipped.
        let state_before = |p: Option<u64>| -> Result<StateMap> {
            match p {
                Some(p) => self.timeline.state_at(room_id, p.saturating_sub(1)),
                None => self.timeline.state_at(room_id, upto),
            }
        };
        let mut state_ids: Vec<ruma::OwnedEventId> = Vec::new();
        if full {
            state_ids = state_before(first_pos)?.into_values().collect();
        } else if limited && let Some(from) = from {
            let old = self.timeline.state_at(room_id, from)?;
            let new = state_before(first_pos)?;
            state_ids = new
                .into_iter()
                .filter(|(k, v)| old.get(k) != Some(v))
                .map(|(_, v)| v)
                .collect();
        }
        let lazy = matches!(
            filter.state.lazy_load_options,
            LazyLoadOptions::Enabled { .. }
        );
        let senders: BTreeSet<OwnedUserId> = events
            .iter()
            .filter_map(|e| e.sender())
            .chain([req.user.to_owned()])
            .collect();
        let timeline_ids: HashSet<_> = events.iter().map(|e| e.event_id.clone()).collect();
        let mut state_events = Vec::new();
        for id in state_ids {
            if timeline_ids.contains(&id) {
                continue;
            }
            let Some(ev) = self.timeline.event(&id)? else {
                continue;
            };
            if lazy
                && ev.kind() == "m.room.member"
                && !ev
                    .state_key()
                    .is_some_and(|k| senders.iter().any(|s| s.as_str() == k))
            {
                continue;
            }
            if filter_allows(&filter.state, &ev) {
                state_events.push(self.timeline.client_raw_unbundled(&ev, view, None));
            }
        }
        if lazy && !full {
            // Members of timeline senders whose events the client may not have yet.
            for sender in &senders {
                if let Some(ev) = self.timeline.state_event(
                    room_id,
                    &StateEventType::RoomMember,
                    sender.as_str(),
                )? && !timeline_ids.contains(&ev.event_id)
                    && from.is_some_and(|f| ev.pos > f)
                {
                    state_events.push(self.timeline.client_raw_unbundled(&ev, view, None));
                }
            }
        }
        Ok(state_events)
    }

    #[allow(clippy::too_many_arguments)]
    fn joined_room(
        &self,
        req: &SyncRequest<'_>,
        room_id: &RoomId,
        m: &MembershipRecord,
        from: Option<u64>,
        upto: u64,
        full: bool,
        typing_since: Option<u64>,
        ignored: &std::collections::HashSet<OwnedUserId>,
    ) -> Result<JoinedRoom> {
        let mut joined = JoinedRoom::new();
        let filter = &req.filter.room;
        let limit = timeline_limit(&req.filter);
        let view = ClientView {
            device: Some((req.user, req.device)),
            with_room_id: false,
        };

        let Window {
            events,
            limited,
            reader,
        } = self.timeline_window(
            req.user,
            room_id,
            m,
            from,
            upto,
            limit,
            Some(&filter.timeline),
            ignored,
        )?;
        let first_pos = events.first().map(|e| e.pos);
        joined.timeline = SyncTimeline::new();
        joined.timeline.limited = limited;
        joined.timeline.prev_batch = Some(
            first_pos
                .map(StreamToken::before)
                .unwrap_or(StreamToken::after(upto))
                .pagination(),
        );

        let state_events =
            self.state_section(req, room_id, &events, from, upto, full, limited, &view)?;
        let members_changed = full || events.iter().any(|e| e.kind() == "m.room.member");
        joined.timeline.events = events
            .iter()
            .map(|e| {
                self.timeline
                    .client_raw(e, &view, Some(&membership_at(reader.as_ref(), e)))
            })
            .collect();
        let mut state = StateEvents::new();
        state.events = state_events;
        joined.state = State::Before(state);

        // Ephemeral: typing and receipts.
        let (typing, serial) = self.ephemeral.typing(room_id);
        if typing_since.is_none_or(|t| serial > t) && (serial > 0 || typing_since.is_none()) {
            joined.ephemeral.events.push(to_raw(
                &json!({ "type": "m.typing", "content": { "user_ids": typing } }),
            ));
        }
        if let Some(receipts) =
            self.ephemeral
                .receipts_since(room_id, req.user, from.unwrap_or(0))?
        {
            joined
                .ephemeral
                .events
                .push(to_raw(&json!({ "type": "m.receipt", "content": receipts })));
        }

        if members_changed {
            let members = self.timeline.member_records(room_id)?;
            if !self.has_name(room_id)? {
                joined.summary.heroes = heroes(req.user, &members).into_iter().cloned().collect();
            }
            joined.summary.joined_member_count = Some(UInt::new_saturating(member_count(
                &members,
                MembershipState::Join,
            )));
            joined.summary.invited_member_count = Some(UInt::new_saturating(member_count(
                &members,
                MembershipState::Invite,
            )));
        }
        let by_thread = req.filter.room.timeline.unread_thread_notifications;
        let unread = self.push.unread_counts(req.user, room_id, by_thread)?;
        let counts = |(notify, highlight): (u64, u64)| {
            let mut c = UnreadNotificationsCount::new();
            c.notification_count = Some(UInt::new_saturating(notify));
            c.highlight_count = Some(UInt::new_saturating(highlight));
            c
        };
        joined.unread_notifications = counts(unread.main);
        joined.unread_thread_notifications = unread
            .threads
            .into_iter()
            .map(|(root, c)| (root, counts(c)))
            .collect();
        Ok(joined)
    }

    /// Stripped state shown with an invite or a knock: enough for a client to show what the
    /// room is.
    fn invite_state(
        &self,
        room_id: &RoomId,
        m: &MembershipRecord,
    ) -> Result<Vec<ruma::serde::Raw<ruma::events::AnyStrippedStateEvent>>> {
        let mut out = Vec::new();
        // A room of another server this one is not in: the state its server sent.
        if self.timeline.room(room_id)?.is_none()
            && let Some(invite) = self.timeline.event(&m.event_id)?
        {
            let unsigned = invite
                .pdu
                .get("unsigned")
                .cloned()
                .map(serde_json::Value::from);
            let shown = unsigned
                .as_ref()
                .and_then(|u| u["invite_room_state"].as_array().cloned())
                .unwrap_or_default();
            out.extend(shown.iter().map(crate::json::to_raw));
            out.push(invite.stripped());
            return Ok(out);
        }
        for ty in crate::service::timeline::state::STRIPPED_STATE {
            if let Some(ev) = self.timeline.state_event(room_id, ty, "")? {
                out.push(ev.stripped());
            }
        }
        if let Some(invite) = self.timeline.event(&m.event_id)? {
            if let Some(sender) = invite.sender()
                && let Some(ev) = self.timeline.state_event(
                    room_id,
                    &StateEventType::RoomMember,
                    sender.as_str(),
                )?
            {
                out.push(ev.stripped());
            }
            out.push(invite.stripped());
        }
        Ok(out)
    }
}

/// A joined room a sync has to build.
struct RoomJob {
    room_id: OwnedRoomId,
    m: MembershipRecord,
    from: Option<u64>,
    full: bool,
}

/// Most threads one sync builds its rooms on.
const MAX_SYNC_THREADS: usize = 4;
/// Fewest rooms per thread worth starting a thread for (a thread costs tens of microseconds;
/// a room about half a millisecond in an initial sync).
const ROOMS_PER_THREAD: usize = 32;

/// How many threads to build `rooms` joined rooms on: one unless there are many and the
/// runtime has several workers (a current-thread runtime cannot step aside for them).
fn sync_threads(rooms: usize) -> usize {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if !multi {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (rooms / ROOMS_PER_THREAD).clamp(1, cores.min(MAX_SYNC_THREADS))
}

/// Members of a room with their membership records ([`Timeline::member_records`]).
type Members = [(OwnedUserId, MembershipRecord)];

/// How many members of a room have a membership.
fn member_count(members: &Members, want: MembershipState) -> u64 {
    members.iter().filter(|(_, m)| m.membership == want).count() as u64
}

/// The heroes that name a room without a name: the first five other members, joined or
/// invited (left or banned when there are none), in the order of their member events.
fn heroes<'m>(user: &UserId, members: &'m Members) -> Vec<&'m OwnedUserId> {
    let mut others: Vec<_> = members.iter().filter(|(u, _)| u != user).collect();
    others.sort_by_key(|(_, m)| m.pos);
    let present =
        |m: &MembershipState| matches!(m, MembershipState::Join | MembershipState::Invite);
    let mut heroes: Vec<_> = others
        .iter()
        .filter(|(_, m)| present(&m.membership))
        .map(|(u, _)| u)
        .collect();
    if heroes.is_empty() {
        heroes = others.iter().map(|(u, _)| u).collect();
    }
    heroes.truncate(5);
    heroes
}

/// A user's membership at an event of a timeline window (joined when the window needed no
/// reader: they were joined before its oldest event).
fn membership_at(reader: Option<&Reader>, ev: &StoredEvent) -> MembershipState {
    match reader {
        Some(r) => r.membership_at(ev),
        None => MembershipState::Join,
    }
}

/// The newest events of a room a user sees in a sync, oldest first.
struct Window {
    events: Vec<StoredEvent>,
    /// Events were left out between the window and where the client's timeline ends.
    limited: bool,
    /// Set when history visibility had to be checked event by event.
    reader: Option<Reader>,
}

impl Sync {
    /// The newest (at most `limit`) events of a room in `(from, upto]` the user sees and the
    /// filter allows, leaving out ignored users' messages.
    #[allow(clippy::too_many_arguments)]
    fn timeline_window(
        &self,
        user: &UserId,
        room_id: &RoomId,
        m: &MembershipRecord,
        from: Option<u64>,
        upto: u64,
        limit: usize,
        filter: Option<&RoomEventFilter>,
        ignored: &HashSet<OwnedUserId>,
    ) -> Result<Window> {
        let start = from.map(|f| f + 1).unwrap_or(0);
        // Newest first, a little more than the limit at a time: most rooms need one read of
        // `limit + 1` events; filters and ignored users may need more (at most `4 * limit + 50`
        // read in all).
        let mut events: Vec<StoredEvent> = Vec::new();
        let mut end = upto + 1;
        let mut batch = limit + 2;
        let mut budget = limit * 4 + 50;
        while events.len() <= limit && budget > 0 && end > start {
            let read =
                self.timeline
                    .timeline_range(room_id, start, end, true, batch.min(budget))?;
            let Some(oldest) = read.last().map(|e| e.pos) else {
                break;
            };
            budget = budget.saturating_sub(read.len());
            let exhausted = read.len() < batch.min(budget + read.len());
            end = oldest;
            events.extend(
                read.into_iter()
                    .filter(|e| filter.is_none_or(|f| filter_allows(f, e)))
                    .filter(|e| e.is_state() || e.sender().is_none_or(|s| !ignored.contains(&s))),
            );
            if exhausted {
                break;
            }
            batch *= 2;
        }
        // A user joined since before the oldest candidate sees all of them; otherwise the
        // room's history visibility decides event by event.
        let reader = match events.last() {
            Some(oldest) if m.pos > oldest.pos => {
                let reader = self.timeline.reader(user, room_id)?;
                events.retain(|e| reader.sees(e));
                Some(reader)
            }
            _ => None,
        };
        let limited = events.len() > limit
            || (from.is_none()
                && events.len() == limit
                && events.last().is_some_and(|e| e.pos > 1));
        events.truncate(limit);
        events.reverse();
        Ok(Window {
            events,
            limited,
            reader,
        })
    }

    /// Whether a room has a name or a canonical alias (else heroes name it).
    fn has_name(&self, room_id: &RoomId) -> Result<bool> {
        for (ty, field) in [
            (StateEventType::RoomName, "name"),
            (StateEventType::RoomCanonicalAlias, "alias"),
        ] {
            if self
                .timeline
                .state_str(room_id, ty, field)?
                .is_some_and(|v| !v.is_empty())
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn timeline_limit(filter: &FilterDefinition) -> usize {
    filter
        .room
        .timeline
        .limit
        .map(|l| u64::from(l) as usize)
        .unwrap_or(10)
        .clamp(1, 500)
}

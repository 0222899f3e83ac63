//! Simplified sliding sync (MSC4186, `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`),
//! what Element X and every matrix-rust-sdk client use.
//!
//! A client keeps a *connection* (user, device, `conn_id`). Each answer hands out a `pos`; the
//! server remembers, for that `pos`, what the client was sent: for every room, the stream
//! position it was sent up to and with which settings; the positions of the account data,
//! typing and device lists. A request with that `pos` gets what changed since then, so a
//! client that went to sleep continues exactly where it stopped (with `limited` timelines and
//! a `prev_batch` for what it skipped). A request may repeat a `pos` (the answer was lost): the
//! state of that `pos` is kept until a newer one is used. Connections live in memory: after a
//! restart, or when unused for `limits.sync_connection_idle_secs`, a `pos` is unknown and the
//! answer is 400 `M_UNKNOWN_POS`, on which clients start the connection again.
//!
//! Lists select rooms (joined, invited, knocked, and rooms left since the last answer) by
//! filters and sort them by recency (`bump_stamp`: the position of the latest message-like
//! event, or of the user's own membership for rooms they are not in); `ranges` pick the rooms
//! whose details are sent, `count` says how many there are. `room_subscriptions` add rooms by
//! ID. The extensions (to-device, e2ee, account data, receipts, typing) reuse `/sync` v3's
//! sources.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ruma::{
    DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    api::client::sync::sync_events::{
        UnreadNotificationsCount,
        v5::{self, request, response},
    },
    directory::RoomTypeFilter,
    events::{StateEventType, room::member::MembershipState},
    room::RoomType,
};
use serde_json::json;

use super::{Sync, heroes, member_count, membership_at};
use crate::{
    error::{Error, Result},
    json::to_raw,
    store::MembershipRecord,
};

/// The events that move a room up the list (Synapse's set).
const BUMP_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// The most timeline events one room gets in one answer.
const MAX_TIMELINE_LIMIT: usize = 100;

/// States of one connection kept at once (a client repeats at most its last `pos`).
const STATES_PER_CONNECTION: usize = 4;

/// One sliding sync request, parsed.
pub struct SlidingRequest<'a> {
    pub user: &'a UserId,
    pub device: &'a DeviceId,
    pub body: &'a v5::Request,
}

/// What a connection's client was sent, as of one `pos`.
#[derive(Clone, Debug, Default)]
struct ConnState {
    /// The stream position the answer covered (0: nothing sent yet).
    pos: u64,
    /// The typing serial the answer covered.
    typing: u64,
    rooms: HashMap<OwnedRoomId, SentRoom>,
    lists: BTreeMap<String, usize>,
}

/// What a client has of one room.
#[derive(Clone, Debug)]
struct SentRoom {
    /// Sent up to this stream position.
    pos: u64,
    timeline_limit: usize,
    required_state: BTreeSet<(String, String)>,
    membership: MembershipState,
}

struct Connection {
    /// States by their `pos` number, oldest first.
    states: Vec<(u64, ConnState)>,
    last_used: Instant,
}

type ConnKey = (OwnedUserId, OwnedDeviceId, Option<String>);

/// The connections of every client, in memory.
pub struct Connections {
    /// Tells this process's `pos` values from an earlier one's.
    instance: String,
    next: AtomicU64,
    map: Mutex<HashMap<ConnKey, Connection>>,
    /// Per room: the stream position checked up to and the bump stamp found.
    bumps: Mutex<HashMap<OwnedRoomId, (u64, u64)>>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            instance: crate::service::core::random_token(6),
            next: AtomicU64::new(1),
            map: Mutex::default(),
            bumps: Mutex::default(),
        }
    }
}

fn unknown_pos() -> Error {
    Error::new(
        http::StatusCode::BAD_REQUEST,
        ruma::api::error::ErrorKind::UnknownPos,
        "Unknown or expired pos: start the connection again",
    )
}

/// What a room is sent with: the largest timeline and the union of the required state of
/// every list and subscription that selects it.
#[derive(Clone, Debug, Default)]
struct RoomConfig {
    timeline_limit: usize,
    required_state: BTreeSet<(String, String)>,
}

impl RoomConfig {
    fn add(&mut self, timeline_limit: UInt, required_state: &[(StateEventType, String)]) {
        self.timeline_limit = self
            .timeline_limit
            .max((u64::from(timeline_limit) as usize).min(MAX_TIMELINE_LIMIT));
        self.required_state.extend(
            required_state
                .iter()
                .map(|(ty, key)| (ty.to_string(), key.clone())),
        );
    }
}

/// Whether the required state asks for the state event `(ty, key)`.
fn wanted(
    spec: &BTreeSet<(String, String)>,
    ty: &str,
    key: &str,
    user: &UserId,
    lazy: &BTreeSet<OwnedUserId>,
) -> bool {
    spec.iter().any(|(t, k)| {
        (t == "*" || t == ty)
            && (k == "*"
                || k == key
                || (k == "$ME" && key == user.as_str())
                || (k == "$LAZY" && ty == "m.room.member" && lazy.iter().any(|u| u == key)))
    })
}

/// One room of the user with what the lists need to know of it.
struct Candidate {
    room_id: OwnedRoomId,
    membership: MembershipRecord,
    bump: u64,
}

impl Sync {
    /// Answers a sliding sync request, waiting up to its timeout for something to report.
    pub async fn sliding_sync(&self, req: SlidingRequest<'_>) -> Result<v5::Response> {
        self.presence
            .synced(req.user, &req.body.set_presence)
            .await?;
        let key: ConnKey = (
            req.user.to_owned(),
            req.device.to_owned(),
            req.body.conn_id.clone(),
        );
        let state = self.connection_state(&key, req.body.pos.as_deref())?;
        let timeout = req
            .body
            .timeout
            .unwrap_or_default()
            .min(Duration::from_secs(300));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.core.subscribe();
        let mut stop = self.core.shutdown_signal();
        loop {
            rx.borrow_and_update();
            let mut seen = self.core.current_pos();
            let typing = self.ephemeral.serial();
            let (mut response, new_state, news) = self.build_sliding(&req, &state).await?;
            if news || state.pos == 0 || timeout.is_zero() {
                response.pos = self.keep_state(key, new_state);
                response.txn_id = req.body.txn_id.clone();
                return Ok(response);
            }
            let my_rooms: HashSet<OwnedRoomId> = self
                .timeline
                .memberships(req.user)?
                .into_iter()
                .map(|(room, _)| room)
                .collect();
            loop {
                let timed_out = tokio::select! {
                    r = tokio::time::timeout_at(deadline, rx.changed()) => !matches!(r, Ok(Ok(()))),
                    _ = stop.wait_for(|s| *s) => true,
                };
                if timed_out {
                    response.pos = self.keep_state(key, new_state);
                    response.txn_id = req.body.txn_id.clone();
                    return Ok(response);
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

    /// The state a `pos` stands for (a new connection without one). Newer states the client
    /// did not build on are forgotten.
    fn connection_state(&self, key: &ConnKey, pos: Option<&str>) -> Result<ConnState> {
        let conns = &self.connections;
        let mut map = conns.map.lock().unwrap_or_else(|e| e.into_inner());
        let idle = Duration::from_secs(self.core.config.limits.sync_connection_idle_secs);
        map.retain(|_, c| c.last_used.elapsed() < idle);
        let Some(pos) = pos else {
            map.remove(key);
            return Ok(ConnState::default());
        };
        let number = pos
            .strip_prefix(&conns.instance)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(unknown_pos)?;
        let conn = map.get_mut(key).ok_or_else(unknown_pos)?;
        let state = conn
            .states
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, s)| s.clone())
            .ok_or_else(unknown_pos)?;
        conn.states.retain(|(n, _)| *n <= number);
        conn.last_used = Instant::now();
        Ok(state)
    }

    /// Keeps the state of a new answer and returns its `pos`.
    fn keep_state(&self, key: ConnKey, state: ConnState) -> String {
        let conns = &self.connections;
        let number = conns.next.fetch_add(1, Ordering::Relaxed);
        let mut map = conns.map.lock().unwrap_or_else(|e| e.into_inner());
        let per_device = self.core.config.limits.sync_connections_per_device;
        if !map.contains_key(&key) {
            // The device's least recently used connection makes room for a new one.
            let mine: Vec<(ConnKey, Instant)> = map
                .iter()
                .filter(|((u, d, _), _)| *u == key.0 && *d == key.1)
                .map(|(k, c)| (k.clone(), c.last_used))
                .collect();
            if mine.len() >= per_device.max(1)
                && let Some((oldest, _)) = mine.into_iter().min_by_key(|(_, t)| *t)
            {
                map.remove(&oldest);
            }
        }
        let conn = map.entry(key).or_insert_with(|| Connection {
            states: Vec::new(),
            last_used: Instant::now(),
        });
        conn.states.push((number, state));
        if conn.states.len() > STATES_PER_CONNECTION {
            conn.states.remove(0);
        }
        conn.last_used = Instant::now();
        format!("{}_{number}", conns.instance)
    }

    /// The position of the latest event that moves the room up the list.
    fn bump_stamp(&self, room_id: &RoomId, upto: u64) -> Result<u64> {
        let cached = self
            .connections
            .bumps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(room_id)
            .copied();
        let (checked, mut bump) = cached.unwrap_or((0, 0));
        if checked >= upto {
            return Ok(bump);
        }
        // Newest first, down to where the last look stopped.
        let mut newest = 0;
        for ev in self
            .timeline
            .timeline_events(room_id, checked + 1, upto + 1, true)
            .take(200)
        {
            let ev = ev?;
            newest = newest.max(ev.pos);
            if BUMP_TYPES.contains(&ev.kind().as_str()) {
                bump = bump.max(ev.pos);
                break;
            }
        }
        if bump == 0 {
            // Nothing message-like in the newest events: the newest event will do.
            bump = newest;
        }
        self.connections
            .bumps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room_id.to_owned(), (upto, bump));
        Ok(bump)
    }

    /// The user's rooms the lists choose from: joined, invited and knocked rooms, and rooms
    /// left since the last answer (so the client learns it left), newest first.
    fn candidates(&self, user: &UserId, since: u64, upto: u64) -> Result<Vec<Candidate>> {
        let ignored = self.account_data.ignored_users(user)?;
        let mut out = Vec::new();
        for (room_id, m) in self.timeline.memberships(user)? {
            if m.pos > upto {
                continue;
            }
            let keep = match m.membership {
                MembershipState::Join | MembershipState::Knock => true,
                MembershipState::Invite => !self.invited_by(&m, &ignored)?,
                _ => since > 0 && m.changed_at() > since,
            };
            if !keep {
                continue;
            }
            let bump = match m.membership {
                MembershipState::Join => self.bump_stamp(&room_id, upto)?.max(m.changed_at()),
                _ => m.pos,
            };
            out.push(Candidate {
                room_id,
                membership: m,
                bump,
            });
        }
        out.sort_by(|a, b| b.bump.cmp(&a.bump).then(a.room_id.cmp(&b.room_id)));
        Ok(out)
    }

    /// Whether a room passes a list's filters.
    fn passes(
        &self,
        filters: Option<&request::ListFilters>,
        c: &Candidate,
        direct: &HashSet<OwnedRoomId>,
    ) -> Result<bool> {
        let Some(f) = filters else { return Ok(true) };
        if let Some(invite) = f.is_invite
            && invite != (c.membership.membership == MembershipState::Invite)
        {
            return Ok(false);
        }
        if let Some(dm) = f.is_dm
            && dm != direct.contains(&c.room_id)
        {
            return Ok(false);
        }
        if let Some(enc) = f.is_encrypted {
            let encrypted = self
                .timeline
                .state_event_id(&c.room_id, &StateEventType::RoomEncryption, "")?
                .is_some();
            if enc != encrypted {
                return Ok(false);
            }
        }
        if !f.room_types.is_empty() || !f.not_room_types.is_empty() {
            let room_type = self
                .timeline
                .state_content(&c.room_id, &StateEventType::RoomCreate, "")?
                .and_then(|c| c.get("type").and_then(|t| t.as_str()).map(RoomType::from));
            let is = |filter: &RoomTypeFilter| match filter {
                RoomTypeFilter::Default => room_type.is_none(),
                other => room_type.as_ref().map(|t| t.as_str()) == other.as_str(),
            };
            if !f.room_types.is_empty() && !f.room_types.iter().any(is) {
                return Ok(false);
            }
            if f.not_room_types.iter().any(is) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Rooms the user's `m.direct` names.
    fn direct_rooms(&self, user: &UserId) -> Result<HashSet<OwnedRoomId>> {
        let Some(direct) = self.account_data.get(user, None, "m.direct")? else {
            return Ok(HashSet::new());
        };
        Ok(direct
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|rooms| rooms.as_array())
            .flatten()
            .filter_map(|r| r.as_str())
            .filter_map(|r| RoomId::parse(r).ok())
            .collect())
    }

    /// Builds one answer from the state of the request's `pos`: the answer, the state it
    /// leaves the connection in, and whether it says anything new.
    async fn build_sliding(
        &self,
        req: &SlidingRequest<'_>,
        state: &ConnState,
    ) -> Result<(v5::Response, ConnState, bool)> {
        let body = req.body;
        let upto = self.core.current_pos();
        let typing_serial = self.ephemeral.serial();
        let mut response = v5::Response::new(String::new());
        let mut next = ConnState {
            pos: upto,
            typing: typing_serial,
            rooms: state.rooms.clone(),
            lists: BTreeMap::new(),
        };
        let initial = state.pos == 0;

        // The lists, and the rooms their ranges select.
        let candidates = self.candidates(req.user, state.pos, upto)?;
        let direct = self.direct_rooms(req.user)?;
        let mut selected: BTreeMap<OwnedRoomId, RoomConfig> = BTreeMap::new();
        let mut list_news = false;
        for (name, list) in &body.lists {
            let mut matching = Vec::new();
            for c in &candidates {
                if self.passes(list.filters.as_ref(), c, &direct)? {
                    matching.push(c);
                }
            }
            for (start, end) in &list.ranges {
                let (start, end) = (u64::from(*start) as usize, u64::from(*end) as usize);
                for c in matching
                    .iter()
                    .skip(start)
                    .take(end.saturating_sub(start) + 1)
                {
                    selected.entry(c.room_id.clone()).or_default().add(
                        list.room_details.timeline_limit,
                        &list.room_details.required_state,
                    );
                }
            }
            list_news |= state.lists.get(name) != Some(&matching.len());
            next.lists.insert(name.clone(), matching.len());
            response.lists.insert(
                name.clone(),
                assign_count(UInt::new_saturating(matching.len() as u64)),
            );
        }
        let memberships: HashMap<&RoomId, &MembershipRecord> = candidates
            .iter()
            .map(|c| (&*c.room_id, &c.membership))
            .collect();
        let bumps: HashMap<&RoomId, u64> =
            candidates.iter().map(|c| (&*c.room_id, c.bump)).collect();
        let mut subscribed: Vec<(OwnedRoomId, MembershipRecord)> = Vec::new();
        for (room_id, sub) in &body.room_subscriptions {
            // Only rooms the user is in, was invited to, or left (their history up to then).
            let m = match memberships.get(&**room_id) {
                Some(m) => (*m).clone(),
                None => match self.timeline.membership(req.user, room_id)? {
                    Some(m) if m.pos <= upto => m,
                    _ => continue,
                },
            };
            selected
                .entry(room_id.clone())
                .or_default()
                .add(sub.timeline_limit, &sub.required_state);
            subscribed.push((room_id.clone(), m));
        }
        let subscribed: HashMap<OwnedRoomId, MembershipRecord> = subscribed.into_iter().collect();

        // Which rooms changed since the state's position.
        let changed: HashSet<OwnedRoomId> = if initial {
            HashSet::new()
        } else {
            self.changes_since(req.user, state.pos, upto)?.0
        };
        let typing_moved: HashSet<OwnedRoomId> = selected
            .keys()
            .filter(|r| self.ephemeral.typing(r).1 > state.typing)
            .cloned()
            .collect();

        let ignored = self.account_data.ignored_users(req.user)?;
        let mut sent_initially: HashSet<OwnedRoomId> = HashSet::new();
        for (room_id, config) in &selected {
            let Some(m) = memberships
                .get(&**room_id)
                .copied()
                .or_else(|| subscribed.get(room_id))
            else {
                continue;
            };
            let prev = state.rooms.get(room_id);
            let fresh = match prev {
                None => true,
                Some(p) => {
                    p.timeline_limit < config.timeline_limit
                        || p.membership != m.membership
                            && matches!(p.membership, MembershipState::Invite)
                }
            };
            let state_grew = prev.is_some_and(|p| p.required_state != config.required_state);
            let touched = fresh
                || state_grew
                || changed.contains(room_id)
                || prev.is_some_and(|p| p.pos < state.pos);
            if !touched {
                continue;
            }
            let from = if fresh { None } else { prev.map(|p| p.pos) };
            let room = self
                .sliding_room(
                    req,
                    room_id,
                    m,
                    config,
                    from,
                    state_grew,
                    upto,
                    bumps.get(&**room_id).copied(),
                    &direct,
                    &ignored,
                )
                .await?;
            if fresh {
                sent_initially.insert(room_id.clone());
            }
            if let Some(room) = room {
                response.rooms.insert(room_id.clone(), room);
            }
            next.rooms.insert(
                room_id.clone(),
                SentRoom {
                    pos: upto,
                    timeline_limit: config.timeline_limit,
                    required_state: config.required_state.clone(),
                    membership: m.membership.clone(),
                },
            );
        }
        // Rooms the user no longer has anything to do with leave the connection's memory.
        next.rooms
            .retain(|r, _| memberships.contains_key(&**r) || subscribed.contains_key(r));

        let extensions_news = self
            .extensions(
                req,
                state,
                upto,
                &selected,
                &sent_initially,
                &typing_moved,
                &mut response,
            )
            .await?;
        let news = list_news || !response.rooms.is_empty() || extensions_news;
        Ok((response, next, news))
    }

    /// One room of an answer: everything for a room the client does not have yet (`from`
    /// None), else what changed since `from`. None when nothing changed.
    #[allow(clippy::too_many_arguments)]
    async fn sliding_room(
        &self,
        req: &SlidingRequest<'_>,
        room_id: &RoomId,
        m: &MembershipRecord,
        config: &RoomConfig,
        from: Option<u64>,
        state_grew: bool,
        upto: u64,
        bump: Option<u64>,
        direct: &HashSet<OwnedRoomId>,
        ignored: &HashSet<OwnedUserId>,
    ) -> Result<Option<response::Room>> {
        let mut room = response::Room::new();
        let initial = from.is_none();
        if initial {
            room.initial = Some(true);
        }
        let view = crate::service::timeline::ClientView {
            device: Some((req.user, req.device)),
            with_room_id: false,
        };
        if matches!(
            m.membership,
            MembershipState::Invite | MembershipState::Knock
        ) {
            if !initial {
                return Ok(None);
            }
            room.invite_state = Some(self.invite_state(room_id, m)?);
            room.bump_stamp = Some(UInt::new_saturating(m.pos));
            return Ok(Some(room));
        }
        // Left rooms show what happened up to the leave.
        let end = match m.membership {
            MembershipState::Join => upto,
            _ => m.pos.min(upto),
        };
        let window = self.timeline_window(
            req.user,
            room_id,
            m,
            from,
            end,
            config.timeline_limit,
            None,
            ignored,
        )?;
        room.limited = window.limited;
        if !initial {
            room.num_live = Some(UInt::new_saturating(window.events.len() as u64));
        }
        room.prev_batch = Some(
            window
                .events
                .first()
                .map(|e| super::StreamToken::before(e.pos))
                .unwrap_or(super::StreamToken::after(end))
                .pagination(),
        );
        room.timeline = window
            .events
            .iter()
            .map(|e| {
                self.timeline
                    .client_raw(e, &view, Some(&membership_at(window.reader.as_ref(), e)))
            })
            .collect();

        // Required state: all of it for a new room (or new settings); else what changed in
        // a gap the timeline skipped, and the members of new senders.
        let lazy: BTreeSet<OwnedUserId> = window.events.iter().filter_map(|e| e.sender()).collect();
        let timeline_ids: HashSet<_> = window.events.iter().map(|e| &e.event_id).collect();
        // A member's room: its current state (one short scan); a left room: the state when
        // they left.
        let state_now = match m.membership {
            MembershipState::Join => self.timeline.current_state(room_id)?,
            _ => self.timeline.state_at(room_id, end)?,
        };
        let mut state_ids = Vec::new();
        let mut name_changed = initial;
        let mut members_changed = initial;
        if initial || state_grew {
            state_ids.extend(
                state_now
                    .iter()
                    .filter(|((ty, key), _)| {
                        wanted(&config.required_state, ty, key, req.user, &lazy)
                    })
                    .map(|(_, id)| id),
            );
        } else if let Some(from) = from {
            let before = if window.limited {
                self.timeline.state_at(room_id, from)?
            } else {
                Default::default()
            };
            for ((ty, key), id) in &state_now {
                let new_in_gap =
                    window.limited && before.get(&(ty.clone(), key.clone())) != Some(id);
                let lazy_member = ty == "m.room.member" && lazy.iter().any(|u| u.as_str() == key);
                if (new_in_gap && wanted(&config.required_state, ty, key, req.user, &lazy))
                    || (lazy_member && wanted(&config.required_state, ty, key, req.user, &lazy))
                {
                    state_ids.push(id);
                }
                if new_in_gap {
                    name_changed |= matches!(ty.as_str(), "m.room.name" | "m.room.avatar");
                    members_changed |= ty == "m.room.member";
                }
            }
            for e in &window.events {
                name_changed |= matches!(e.kind().as_str(), "m.room.name" | "m.room.avatar");
                members_changed |= e.kind() == "m.room.member";
            }
        }
        for id in state_ids {
            if timeline_ids.contains(id) && !initial {
                continue;
            }
            if let Some(ev) = self.timeline.event(id)? {
                room.required_state
                    .push(self.timeline.client_raw_unbundled(&ev, &view, None));
            }
        }

        if name_changed {
            room.name = self
                .timeline
                .state_str(room_id, StateEventType::RoomName, "name")?
                .filter(|n| !n.is_empty());
            let avatar = self
                .timeline
                .state_str(room_id, StateEventType::RoomAvatar, "url")?
                .filter(|a| !a.is_empty());
            room.avatar = match avatar {
                Some(url) => js_option::JsOption::Some(url.into()),
                None if initial => js_option::JsOption::Undefined,
                None => js_option::JsOption::Null,
            };
        }
        if members_changed {
            let members = self.timeline.member_records(room_id)?;
            let count = |want| UInt::new_saturating(member_count(&members, want));
            room.joined_count = Some(count(MembershipState::Join));
            room.invited_count = Some(count(MembershipState::Invite));
            if !self.has_name(room_id)? {
                let mut list = Vec::new();
                for user in heroes(req.user, &members) {
                    let mut hero = response::Hero::new(user.clone());
                    if let Some(ev) = self.timeline.state_event(
                        room_id,
                        &StateEventType::RoomMember,
                        user.as_str(),
                    )? {
                        hero.name = ev.content_str("displayname");
                        hero.avatar = ev.content_str("avatar_url").map(Into::into);
                    }
                    list.push(hero);
                }
                room.heroes = Some(list);
            }
        }
        if initial {
            room.is_dm = Some(direct.contains(room_id));
        }
        let unread = self.push.unread_counts(req.user, room_id, false)?;
        let mut counts = UnreadNotificationsCount::new();
        counts.notification_count = Some(UInt::new_saturating(unread.main.0));
        counts.highlight_count = Some(UInt::new_saturating(unread.main.1));
        room.unread_notifications = counts;
        room.bump_stamp = bump.map(UInt::new_saturating);
        Ok(Some(room))
    }

    /// The extensions of an answer. Returns whether they hold anything new.
    #[allow(clippy::too_many_arguments)]
    async fn extensions(
        &self,
        req: &SlidingRequest<'_>,
        state: &ConnState,
        upto: u64,
        selected: &BTreeMap<OwnedRoomId, RoomConfig>,
        sent_initially: &HashSet<OwnedRoomId>,
        typing_moved: &HashSet<OwnedRoomId>,
        response: &mut v5::Response,
    ) -> Result<bool> {
        let ext = &req.body.extensions;
        let since = (state.pos > 0).then_some(state.pos);
        let mut news = false;
        // The rooms an extension covers: those of the lists and subscriptions it names.
        let relevant = |lists: &Option<Vec<String>>,
                        rooms: &Option<Vec<request::ExtensionRoomConfig>>|
         -> Vec<OwnedRoomId> {
            let all = lists.is_none() && rooms.is_none();
            let any_list = lists.as_ref().is_some_and(|l| l.iter().any(|n| n == "*"));
            let any_room = rooms.as_ref().is_some_and(|r| {
                r.iter()
                    .any(|c| matches!(c, request::ExtensionRoomConfig::AllSubscribed))
            });
            selected
                .keys()
                .filter(|r| {
                    all || any_list
                        || any_room
                        || lists
                            .as_ref()
                            .is_some_and(|l| l.iter().any(|n| req.body.lists.contains_key(n)))
                        || rooms.as_ref().is_some_and(|rs| {
                            rs.iter().any(
                                |c| matches!(c, request::ExtensionRoomConfig::Room(id) if id == *r),
                            )
                        })
                })
                .cloned()
                .collect()
        };

        if ext.to_device.enabled == Some(true) {
            let acked = match ext.to_device.since.as_deref() {
                Some(s) => Some(
                    s.parse::<u64>()
                        .map_err(|_| Error::invalid_param("Invalid to_device since"))?,
                ),
                None => None,
            };
            let (events, reached) = self
                .keys
                .take_to_device(req.user, req.device, acked, upto)
                .await?;
            news |= !events.is_empty();
            let mut td = response::ToDevice::default();
            td.next_batch = reached.to_string();
            td.events = events.iter().map(to_raw).collect();
            response.extensions.to_device = Some(td);
        }

        if ext.e2ee.enabled == Some(true) {
            let e2ee = &mut response.extensions.e2ee;
            e2ee.device_one_time_keys_count = self
                .keys
                .one_time_key_counts(req.user, req.device)?
                .into_iter()
                .map(|(alg, n)| (alg.as_str().into(), UInt::new_saturating(n)))
                .collect();
            e2ee.device_unused_fallback_key_types = Some(
                self.keys
                    .unused_fallback_key_types(req.user, req.device)?
                    .iter()
                    .map(|alg| alg.as_str().into())
                    .collect(),
            );
            if let Some(since) = since {
                let (changed, left) = self.keys.device_list_changes(req.user, since, upto)?;
                news |= !changed.is_empty() || !left.is_empty();
                e2ee.device_lists.changed = changed.into_iter().collect();
                e2ee.device_lists.left = left.into_iter().collect();
            }
        }

        if ext.account_data.enabled == Some(true) {
            let (global, mut by_room) = self.account_data_since(req.user, since, |_| true)?;
            news |= !global.is_empty();
            response.extensions.account_data.global = global;
            let rooms = relevant(&ext.account_data.lists, &ext.account_data.rooms);
            for room_id in rooms {
                // A room new to the client gets all of its account data.
                let events = if sent_initially.contains(&room_id) && since.is_some() {
                    self.account_data
                        .since(req.user, 0)?
                        .into_iter()
                        .filter(|(r, _, _)| r.as_ref() == Some(&room_id))
                        .map(|(_, ty, content)| to_raw(&json!({ "type": ty, "content": content })))
                        .collect()
                } else {
                    by_room.remove(&room_id).unwrap_or_default()
                };
                if !events.is_empty() {
                    news = true;
                    response
                        .extensions
                        .account_data
                        .rooms
                        .insert(room_id, events);
                }
            }
        }

        if ext.receipts.enabled == Some(true) {
            for room_id in relevant(&ext.receipts.lists, &ext.receipts.rooms) {
                let from = match (sent_initially.contains(&room_id), state.rooms.get(&room_id)) {
                    (true, _) | (_, None) => 0,
                    (false, Some(p)) => p.pos,
                };
                if from >= upto {
                    continue;
                }
                if let Some(content) = self.ephemeral.receipts_since(&room_id, req.user, from)? {
                    news = true;
                    response.extensions.receipts.rooms.insert(
                        room_id,
                        to_raw(&json!({ "type": "m.receipt", "content": content })),
                    );
                }
            }
        }

        if ext.typing.enabled == Some(true) {
            for room_id in relevant(&ext.typing.lists, &ext.typing.rooms) {
                if !typing_moved.contains(&room_id) && !sent_initially.contains(&room_id) {
                    continue;
                }
                let (users, serial) = self.ephemeral.typing(&room_id);
                if serial == 0 && users.is_empty() {
                    continue;
                }
                news |= typing_moved.contains(&room_id);
                response.extensions.typing.rooms.insert(
                    room_id,
                    to_raw(&json!({ "type": "m.typing", "content": { "user_ids": users } })),
                );
            }
        }
        Ok(news)
    }
}

fn assign_count(count: UInt) -> response::List {
    let mut list = response::List::default();
    list.count = count;
    list
}

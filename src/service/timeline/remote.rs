//! Events of other servers entering the one append path: an event another server sent
//! ([`Timeline::admit`]) and a room joined through another server ([`Timeline::admit_joined_room`]).
//! Signatures and hashes are checked by the federation area before; here each event is
//! authorized against its own auth events and against the state before it, rejected or
//! soft-failed as the spec says, and persisted by [`Timeline::persist`] like a local event.
//! Where the room's DAG forked, the state after the event is resolved with state resolution v2
//! (ruma's `resolve`) between the room's current state and the state the event saw.
//!
//! The state after an older event is read from the state history at its stream position:
//! the state this server had after persisting it (which, past a fork, is already resolved).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, RoomVersionId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::StateResolutionVersion,
    state_res::{self, Event as _},
};

use super::{
    Pdu, Timeline,
    append::{Built, Forward, Pending, Placement},
    rules_for,
    state::StateMap,
};
use crate::{
    error::{Error, Result},
    store::{RoomRecord, StoredEvent},
};

/// Most events an auth chain walk reads (a hostile chain cannot make one unbounded).
pub const MAX_AUTH_CHAIN: usize = 20_000;

/// What became of an event another server sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Added to the room's timeline.
    Timeline,
    /// Allowed by the state it saw but not by the room's current state: kept, not shown.
    SoftFailed,
    /// Already known.
    Known,
}

/// An event as another server sent it, its ID computed.
pub type RemotePdu = (OwnedEventId, CanonicalJsonObject);

impl Timeline {
    /// Admits an event of another server into a room this server is in. Its auth events must
    /// be known; prev events it names that are not known are passed over (their state is
    /// taken to be the current one). Err (403) when the event is rejected.
    pub async fn admit(
        &self,
        room_id: &RoomId,
        pdu: RemotePdu,
        forward: Forward,
    ) -> Result<Admitted> {
        self.admit_with_state(room_id, pdu, forward, None).await
    }

    /// [`Timeline::admit`], with the state before the event as its server answered it
    /// (`/state`, its events kept already) for an event whose prev events this server lacks.
    pub async fn admit_with_state(
        &self,
        room_id: &RoomId,
        (event_id, mut obj): RemotePdu,
        forward: Forward,
        state_before: Option<StateMap>,
    ) -> Result<Admitted> {
        let lock = self.core.lock(room_id.as_str());
        let _guard = lock.lock().await;
        if self.event(&event_id)?.is_some() {
            return Ok(Admitted::Known);
        }
        obj.remove("unsigned");
        let mut p = self.pending_stored(room_id)?;
        let pdu = Pdu::from_object(event_id.clone(), &obj)?;
        if pdu.room_id.as_deref() != Some(room_id) {
            return Err(Error::bad_json("The event is not of this room"));
        }
        self.check_against_auth_events(&p, &pdu, |id| self.pdu(id))?;

        let mut record = p
            .record
            .clone()
            .ok_or_else(|| Error::internal("a stored room has a record"))?;
        let current = self.current_state(room_id)?;
        let prevs: Vec<StoredEvent> = pdu
            .prev_events
            .iter()
            .filter_map(|id| self.event(id).ok().flatten())
            .filter(|e| e.room_id == room_id)
            .collect();
        let prev_ids: BTreeSet<&EventId> = prevs.iter().map(|e| &*e.event_id).collect();
        let extremities: BTreeSet<&EventId> = record.extremities.iter().map(|e| &**e).collect();
        let complete = prevs.len() == pdu.prev_events.len();
        let linear =
            complete && prev_ids == extremities || prevs.is_empty() && state_before.is_none();
        let before = if linear {
            current.clone()
        } else if let Some(given) = state_before.filter(|_| !complete) {
            given
        } else {
            let states = prevs
                .iter()
                .map(|e| self.state_at(room_id, e.pos))
                .collect::<Result<Vec<_>>>()?;
            self.resolve(&p, states, None)?
        };
        self.check_against_state(&p, &pdu, &before, None)
            .map_err(|e| Error::forbidden(format!("Event rejected: {e}")))?;

        let own_key = pdu
            .state_key
            .as_ref()
            .map(|sk| (pdu.kind.to_string(), sk.clone()));
        let mut after = before;
        if let Some(key) = &own_key {
            after.insert(key.clone(), event_id.clone());
        }
        let (after, soft_failed) = if linear {
            (after, false)
        } else {
            // Also allowed by the room's state as it is now?
            let soft_failed = self.check_against_state(&p, &pdu, &current, None).is_err();
            let resolved = self.resolve(&p, vec![current.clone(), after], Some(&pdu))?;
            (resolved, soft_failed)
        };
        let (placement, state_writes) = if soft_failed {
            tracing::info!("federation: {event_id} in {room_id} soft-failed");
            (Placement::Outlier, Vec::new())
        } else {
            let writes = after
                .into_iter()
                .filter(|(k, v)| current.get(k) != Some(v))
                .collect();
            record.extremities.retain(|e| !pdu.prev_events.contains(e));
            record.extremities.push(event_id.clone());
            record.depth = record.depth.max(u64::from(pdu.depth));
            (Placement::Timeline, writes)
        };
        let replaces_state = own_key.as_ref().and_then(|k| current.get(k).cloned());
        p.record = Some(record);
        p.built.push(Built {
            event_id,
            obj,
            pdu,
            replaces_state,
            txn: None,
            placement,
            state_writes,
            forward,
        });
        // Events whose prev events are unknown each leave one more forward extremity: only
        // the newest are kept.
        if let Some(extremities) = p.record.as_ref().map(|r| r.extremities.clone())
            && extremities.len() > super::append::MAX_PREV_EVENTS
        {
            let newest = self.newest_extremities(&p, &extremities);
            if let Some(r) = p.record.as_mut() {
                r.extremities = newest;
            }
        }
        self.persist(p).await?;
        Ok(if soft_failed {
            Admitted::SoftFailed
        } else {
            Admitted::Timeline
        })
    }

    /// A room joined through another server: the room's `state` and `auth_chain` as that
    /// server answered `send_join`, recent `history` before the join (oldest first), and this
    /// server's `join` event (signatures already checked). Each event is checked against its
    /// auth events (one that fails is left out), the join against the state; then all are
    /// persisted at once: the state and auth chain as outliers, the history in the timeline
    /// (notifying nobody) and the join after it. A room already known gets the join only.
    pub async fn admit_joined_room(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        state: Vec<RemotePdu>,
        auth_chain: Vec<RemotePdu>,
        history: Vec<RemotePdu>,
        join: RemotePdu,
    ) -> Result<()> {
        if self.room(room_id)?.is_some() {
            self.admit(room_id, join, Forward::No).await?;
            return Ok(());
        }
        let lock = self.core.lock(room_id.as_str());
        let _guard = lock.lock().await;
        let rules = rules_for(version)?;
        let state_ids: HashSet<OwnedEventId> = state.iter().map(|(id, _)| id.clone()).collect();
        let mut events: BTreeMap<OwnedEventId, (CanonicalJsonObject, Pdu)> = BTreeMap::new();
        for (id, mut obj) in state.into_iter().chain(auth_chain) {
            if events.len() >= MAX_AUTH_CHAIN {
                return Err(Error::bad_json("The room's state is too large"));
            }
            obj.remove("unsigned");
            let pdu = Pdu::from_object(id.clone(), &obj)?;
            if pdu.room_id.as_deref().is_some_and(|r| r != room_id) {
                return Err(Error::bad_json(
                    "An event of the room's state is of another room",
                ));
            }
            events.insert(id, (obj, pdu));
        }
        let create_event_id: OwnedEventId = events
            .values()
            .find(|(_, pdu)| {
                pdu.kind == TimelineEventType::RoomCreate && pdu.state_key.as_deref() == Some("")
            })
            .map(|(_, pdu)| pdu.event_id().clone())
            .ok_or_else(|| Error::bad_json("The room's state has no create event"))?;
        let mut p = Pending {
            room_id: Some(room_id.to_owned()),
            stored: false,
            version: version.clone(),
            rules,
            record: Some(RoomRecord {
                version: version.clone(),
                create_event_id: create_event_id.clone(),
                extremities: Vec::new(),
                depth: 0,
            }),
            state: BTreeMap::new(),
            built: Vec::new(),
        };
        // The create event first (version 12 events do not name it), then auth events before
        // the events they authorize.
        let mut order = vec![create_event_id.clone()];
        order.extend(
            auth_order(&events)
                .into_iter()
                .filter(|id| *id != create_event_id),
        );
        for id in order {
            let Some((obj, pdu)) = events.remove(&id) else {
                continue;
            };
            let key = pdu
                .state_key
                .as_ref()
                .filter(|_| state_ids.contains(&id))
                .map(|sk| (pdu.kind.to_string(), sk.clone()));
            let state_writes: Vec<_> = key.iter().map(|k| (k.clone(), id.clone())).collect();
            if self.keep_checked(
                &mut p,
                (id.clone(), obj, pdu),
                Placement::Outlier,
                state_writes,
            ) && let Some(key) = key
            {
                p.state.insert(key, id);
            }
        }
        for (id, mut obj) in history {
            if p.built.iter().any(|b| b.event_id == id) {
                continue; // kept already, as state or an auth event
            }
            obj.remove("unsigned");
            let Ok(pdu) = Pdu::from_object(id.clone(), &obj) else {
                continue;
            };
            if pdu.room_id.as_deref().is_some_and(|r| r != room_id) {
                continue;
            }
            self.keep_checked(&mut p, (id, obj, pdu), Placement::History, Vec::new());
        }
        let (join_id, mut join_obj) = join;
        join_obj.remove("unsigned");
        let pdu = Pdu::from_object(join_id.clone(), &join_obj)?;
        self.authorize(&p, &pdu)?;
        let key = (
            pdu.kind.to_string(),
            pdu.state_key.clone().unwrap_or_default(),
        );
        let replaces_state = p.state.insert(key.clone(), join_id.clone());
        if let Some(record) = &mut p.record {
            record.extremities = vec![join_id.clone()];
            record.depth = u64::from(pdu.depth);
        }
        p.built.push(Built {
            event_id: join_id.clone(),
            obj: join_obj,
            pdu,
            replaces_state,
            txn: None,
            placement: Placement::Timeline,
            state_writes: vec![(key, join_id)],
            forward: Forward::No,
        });
        self.persist(p).await
    }

    /// Adds another server's event to the pending room if it passes the checks against its
    /// auth events (built already or stored); one that fails is left out (and logged).
    /// Returns whether it was kept.
    fn keep_checked(
        &self,
        p: &mut Pending,
        (id, obj, pdu): (OwnedEventId, CanonicalJsonObject, Pdu),
        placement: Placement,
        state_writes: Vec<((String, String), OwnedEventId)>,
    ) -> bool {
        let fetch = |id: &EventId| {
            p.built
                .iter()
                .find(|b| b.event_id == id)
                .map(|b| b.pdu.clone())
        };
        if let Err(e) = self.check_against_auth_events(p, &pdu, fetch) {
            tracing::info!("federation: {id} left out: {e:?}");
            return false;
        }
        p.built.push(Built {
            event_id: id,
            obj,
            pdu,
            replaces_state: None,
            txn: None,
            placement,
            state_writes,
            forward: Forward::No,
        });
        true
    }

    /// The spec's checks of an event against its own auth events: the state-independent
    /// rules, then the state-dependent ones with the auth events as the state. Every auth
    /// event must be known (`fetch`, else the store) and of the room.
    fn check_against_auth_events(
        &self,
        p: &Pending,
        pdu: &Pdu,
        fetch: impl Fn(&EventId) -> Option<Pdu>,
    ) -> Result<()> {
        let fetch = |id: &EventId| fetch(id).or_else(|| self.pdu(id));
        let rules = &p.rules.authorization;
        let mut auth: HashMap<(StateEventType, String), Pdu> = HashMap::new();
        for id in &pdu.auth_events {
            let ev = fetch(id)
                .filter(|e| e.room_id.is_none() || e.room_id == pdu.room_id)
                .ok_or_else(|| Error::forbidden(format!("Unknown auth event {id}")))?;
            if let Some(sk) = &ev.state_key {
                auth.insert((ev.kind.to_string().into(), sk.clone()), ev);
            }
        }
        state_res::check_state_independent_auth_rules(rules, pdu, fetch)
            .map_err(|e| Error::forbidden(format!("Event rejected: {e}")))?;
        let create = p.record.as_ref().and_then(|r| fetch(&r.create_event_id));
        state_res::check_state_dependent_auth_rules(rules, pdu, |ty, sk| {
            auth.get(&(ty.clone(), sk.to_owned())).cloned().or_else(|| {
                (*ty == StateEventType::RoomCreate)
                    .then(|| create.clone())
                    .flatten()
            })
        })
        .map_err(|e| Error::forbidden(format!("Event rejected: {e}")))
    }

    /// The state-dependent authorization rules against a state map (`extra`: an event not
    /// stored yet that the map may name).
    fn check_against_state(
        &self,
        p: &Pending,
        pdu: &Pdu,
        state: &StateMap,
        extra: Option<&Pdu>,
    ) -> std::result::Result<(), String> {
        let fetch = |id: &EventId| match extra {
            Some(e) if e.event_id() == id => Some(e.clone()),
            _ => self.pending_pdu(p, id),
        };
        let create = p.record.as_ref().and_then(|r| fetch(&r.create_event_id));
        state_res::check_state_dependent_auth_rules(&p.rules.authorization, pdu, |ty, sk| {
            if *ty == StateEventType::RoomCreate && create.is_some() {
                return create.clone();
            }
            state
                .get(&(ty.to_string(), sk.to_owned()))
                .and_then(|id| fetch(id))
        })
        .map_err(|e| e.to_string())
    }

    /// State resolution v2 between state maps (`extra`: an event not stored yet that they
    /// may name). Rooms of version 1 (state resolution v1) keep the first map.
    fn resolve(&self, p: &Pending, states: Vec<StateMap>, extra: Option<&Pdu>) -> Result<StateMap> {
        let StateResolutionVersion::V2(res_rules) = &p.rules.state_res else {
            return Ok(states.into_iter().next().unwrap_or_default());
        };
        if states.len() < 2 {
            return Ok(states.into_iter().next().unwrap_or_default());
        }
        let fetch = |id: &EventId| match extra {
            Some(e) if e.event_id() == id => Some(e.clone()),
            _ => self.pending_pdu(p, id),
        };
        let maps: Vec<state_res::StateMap<OwnedEventId>> = states
            .iter()
            .map(|s| {
                s.iter()
                    .map(|((ty, sk), id)| ((ty.as_str().into(), sk.clone()), id.clone()))
                    .collect()
            })
            .collect();
        let chains = states
            .iter()
            .map(|s| auth_chain_of(s.values().cloned(), &fetch).map(|c| c.into_iter().collect()))
            .collect::<Result<Vec<_>>>()?;
        let subgraph = |conflicted: &state_res::StateMap<Vec<OwnedEventId>>| {
            conflicted_subgraph(conflicted.values().flatten().cloned(), &fetch)
                .ok()
                .map(|s| s.into_iter().collect())
        };
        let resolved = state_res::resolve(
            &p.rules.authorization,
            res_rules,
            &maps,
            chains,
            fetch,
            subgraph,
        )
        .map_err(|e| Error::internal(format!("state resolution failed: {e}")))?;
        Ok(resolved
            .into_iter()
            .map(|((ty, sk), id)| ((ty.to_string(), sk), id))
            .collect())
    }

    /// The auth chain of events (every event their auth events name, recursively), stored
    /// events only, at most [`MAX_AUTH_CHAIN`].
    pub fn auth_chain(
        &self,
        ids: impl IntoIterator<Item = OwnedEventId>,
    ) -> Result<Vec<StoredEvent>> {
        let chain = auth_chain_of(ids, &|id: &EventId| self.pdu(id))?;
        let mut out = Vec::with_capacity(chain.len());
        for id in chain {
            if let Some(ev) = self.event(&id)? {
                out.push(ev);
            }
        }
        Ok(out)
    }

    /// The room's state just before an event (as this server had it).
    pub fn state_before(&self, ev: &StoredEvent) -> Result<StateMap> {
        self.state_at(&ev.room_id, ev.pos.saturating_sub(1))
    }
}

/// Every event the given events' auth events name, recursively (not the events themselves,
/// unless one names another).
fn auth_chain_of(
    ids: impl IntoIterator<Item = OwnedEventId>,
    fetch: &impl Fn(&EventId) -> Option<Pdu>,
) -> Result<HashSet<OwnedEventId>> {
    let mut seen = HashSet::new();
    let mut todo: Vec<OwnedEventId> = ids
        .into_iter()
        .filter_map(|id| fetch(&id))
        .flat_map(|p| p.auth_events)
        .collect();
    while let Some(id) = todo.pop() {
        if seen.len() >= MAX_AUTH_CHAIN {
            return Err(Error::internal("an auth chain is too long"));
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(p) = fetch(&id) {
            todo.extend(p.auth_events);
        }
    }
    Ok(seen)
}

/// The conflicted state subgraph (state resolution v2.1): the events on an auth-event path
/// between two conflicted events, both ends included.
fn conflicted_subgraph(
    conflicted: impl IntoIterator<Item = OwnedEventId>,
    fetch: &impl Fn(&EventId) -> Option<Pdu>,
) -> Result<HashSet<OwnedEventId>> {
    let conflicted: HashSet<OwnedEventId> = conflicted.into_iter().collect();
    // Every event reachable from a conflicted one, and its auth events.
    let mut graph: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
    let mut todo: Vec<OwnedEventId> = conflicted.iter().cloned().collect();
    while let Some(id) = todo.pop() {
        if graph.contains_key(&id) {
            continue;
        }
        if graph.len() >= MAX_AUTH_CHAIN {
            return Err(Error::internal("an auth chain is too long"));
        }
        let auth = fetch(&id).map(|p| p.auth_events).unwrap_or_default();
        todo.extend(auth.iter().cloned());
        graph.insert(id, auth);
    }
    // Which of them reach a conflicted event (memoised depth-first walk).
    fn reaches(
        id: &OwnedEventId,
        graph: &HashMap<OwnedEventId, Vec<OwnedEventId>>,
        conflicted: &HashSet<OwnedEventId>,
        memo: &mut HashMap<OwnedEventId, bool>,
    ) -> bool {
        if let Some(r) = memo.get(id) {
            return *r;
        }
        memo.insert(id.clone(), false);
        let r = graph
            .get(id)
            .into_iter()
            .flatten()
            .any(|a| conflicted.contains(a) || reaches(a, graph, conflicted, memo));
        memo.insert(id.clone(), r);
        r
    }
    let mut memo = HashMap::new();
    let ids: Vec<OwnedEventId> = graph.keys().cloned().collect();
    Ok(ids
        .into_iter()
        .filter(|id| conflicted.contains(id) || reaches(id, &graph, &conflicted, &mut memo))
        .collect())
}

/// The events in an order where each comes after the auth events it names among them.
fn auth_order(events: &BTreeMap<OwnedEventId, (CanonicalJsonObject, Pdu)>) -> Vec<OwnedEventId> {
    let mut out = Vec::with_capacity(events.len());
    let mut done: HashSet<&EventId> = HashSet::new();
    // On the walk's path: an auth-event cycle (only a hostile server makes one) stops here.
    let mut visiting: HashSet<&EventId> = HashSet::new();
    for start in events.keys() {
        let mut stack: Vec<(&OwnedEventId, bool)> = vec![(start, false)];
        while let Some((id, expanded)) = stack.pop() {
            if done.contains(&**id) {
                continue;
            }
            if expanded {
                done.insert(id);
                out.push(id.clone());
                continue;
            }
            if !visiting.insert(id) {
                continue;
            }
            stack.push((id, true));
            if let Some((_, pdu)) = events.get(id) {
                for a in &pdu.auth_events {
                    if let Some((k, _)) = events.get_key_value(a)
                        && !done.contains(&**k)
                    {
                        stack.push((k, false));
                    }
                }
            }
        }
    }
    out
}

impl Timeline {
    /// `/get_missing_events`: the events before `latest` back to (not into) `earliest`, at
    /// most `limit`, none below `min_depth`, oldest first.
    pub fn missing_events(
        &self,
        room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: usize,
        min_depth: u64,
    ) -> Result<Vec<StoredEvent>> {
        let stop: HashSet<&EventId> = earliest.iter().map(|e| &**e).collect();
        let mut events = self.walk_back(room_id, latest, &stop, limit, false)?;
        events.retain(|e| e.depth() >= min_depth);
        events.sort_by_key(|e| (e.depth(), e.pos));
        Ok(events)
    }

    /// `/backfill`: the events from `from` back through their prev events, at most `limit`,
    /// newest first.
    pub fn backfill(
        &self,
        room_id: &RoomId,
        from: &[OwnedEventId],
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let mut events = self.walk_back(room_id, from, &HashSet::new(), limit, true)?;
        events.sort_by_key(|e| std::cmp::Reverse((e.depth(), e.pos)));
        Ok(events)
    }

    /// Events of the room reached from `start` through prev events, breadth first, not past
    /// `stop`, at most `limit` (`start` itself included or not).
    fn walk_back(
        &self,
        room_id: &RoomId,
        start: &[OwnedEventId],
        stop: &HashSet<&EventId>,
        limit: usize,
        include_start: bool,
    ) -> Result<Vec<StoredEvent>> {
        let mut out = Vec::new();
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        let mut queue: std::collections::VecDeque<(OwnedEventId, bool)> =
            start.iter().map(|id| (id.clone(), include_start)).collect();
        while let Some((id, take)) = queue.pop_front() {
            if out.len() >= limit || seen.len() >= MAX_AUTH_CHAIN {
                break;
            }
            if !seen.insert(id.clone()) || stop.contains(&*id) {
                continue;
            }
            let Some(ev) = self.event(&id)?.filter(|e| e.room_id == room_id) else {
                continue;
            };
            if let Ok(pdu) = ev.pdu() {
                queue.extend(pdu.prev_events.into_iter().map(|p| (p, true)));
            }
            if take {
                out.push(ev);
            }
        }
        Ok(out)
    }
}

impl Timeline {
    /// A local event that another server must countersign before it is kept (an invite of
    /// its user): built and authorized as any local event, handed to `countersign` with the
    /// room's lock held, then persisted with the signatures of other servers it came back
    /// with (the event itself stays as built).
    pub async fn append_countersigned<F, Fut>(
        &self,
        room_id: &RoomId,
        sender: &ruma::UserId,
        ev: super::NewEvent,
        countersign: F,
    ) -> Result<OwnedEventId>
    where
        F: FnOnce(RoomVersionId, OwnedEventId, CanonicalJsonObject) -> Fut,
        Fut: Future<Output = Result<CanonicalJsonObject>>,
    {
        let lock = self.core.lock(room_id.as_str());
        let _guard = lock.lock().await;
        let mut p = self.pending_stored(room_id)?;
        let id = self.add(&mut p, sender, ev, None)?;
        let built = p
            .built
            .last_mut()
            .ok_or_else(|| Error::internal("the event was just built"))?;
        let signed = countersign(p.version.clone(), id.clone(), built.obj.clone()).await?;
        let own = self.core.server_name().as_str();
        if let (Some(CanonicalJsonValue::Object(theirs)), Some(CanonicalJsonValue::Object(ours))) =
            (signed.get("signatures"), built.obj.get_mut("signatures"))
        {
            for (server, sigs) in theirs {
                if server != own {
                    ours.insert(server.clone(), sigs.clone());
                }
            }
        }
        self.persist(p).await?;
        Ok(id)
    }

    /// Events of a stored room kept for its DAG only (the auth events or the state another
    /// server answered for a gap): each checked against its auth events in auth order; one
    /// that fails is left out. Returns how many were kept.
    pub async fn admit_outliers(&self, room_id: &RoomId, events: Vec<RemotePdu>) -> Result<usize> {
        let lock = self.core.lock(room_id.as_str());
        let _guard = lock.lock().await;
        let mut p = self.pending_stored(room_id)?;
        let mut map: BTreeMap<OwnedEventId, (CanonicalJsonObject, Pdu)> = BTreeMap::new();
        for (id, mut obj) in events.into_iter().take(MAX_AUTH_CHAIN) {
            if self.event(&id)?.is_some() {
                continue;
            }
            obj.remove("unsigned");
            let Ok(pdu) = Pdu::from_object(id.clone(), &obj) else {
                continue;
            };
            if pdu.room_id.as_deref().is_some_and(|r| r != room_id) {
                continue;
            }
            map.insert(id, (obj, pdu));
        }
        for id in auth_order(&map) {
            let Some((obj, pdu)) = map.remove(&id) else {
                continue;
            };
            self.keep_checked(&mut p, (id, obj, pdu), Placement::Outlier, Vec::new());
        }
        let kept = p.built.len();
        if kept > 0 {
            self.persist(p).await?;
        }
        Ok(kept)
    }

    /// A member event of a room this server is not in, kept so its local user sees it: an
    /// invite from another server (with the room's stripped state it sent, kept in
    /// `unsigned.invite_room_state`), or the user's rejection of one. For a room this server
    /// is in, the event is admitted as any other.
    pub async fn admit_outside_membership(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        (event_id, mut obj): RemotePdu,
        invite_room_state: Vec<serde_json::Value>,
    ) -> Result<()> {
        if self.room(room_id)?.is_some() {
            self.admit(room_id, (event_id, obj), Forward::No).await?;
            return Ok(());
        }
        let lock = self.core.lock(room_id.as_str());
        let _guard = lock.lock().await;
        obj.remove("unsigned");
        if !invite_room_state.is_empty() {
            let unsigned = serde_json::json!({ "invite_room_state": invite_room_state });
            obj.insert("unsigned".into(), super::append::to_canonical(&unsigned)?);
        }
        let pdu = Pdu::from_object(event_id.clone(), &obj)?;
        let key = match (&pdu.kind, &pdu.state_key) {
            (TimelineEventType::RoomMember, Some(sk)) => ("m.room.member".to_owned(), sk.clone()),
            _ => return Err(Error::bad_json("Not a member event")),
        };
        let p = Pending {
            room_id: Some(room_id.to_owned()),
            stored: false,
            version: version.clone(),
            rules: rules_for(version)?,
            record: None,
            state: BTreeMap::new(),
            built: vec![Built {
                event_id: event_id.clone(),
                obj,
                pdu,
                replaces_state: None,
                txn: None,
                placement: Placement::Outlier,
                state_writes: vec![(key, event_id)],
                forward: Forward::No,
            }],
        };
        self.persist(p).await
    }
}

//! Relations between events (spec "Event relationships", "Threading", "Event replacements",
//! "Reference relations"): the indexes the append path keeps, the bundled aggregations
//! clients read in `unsigned.m.relations`, and `/relations` and `/threads`.
//!
//! An event relates to another through `content.m.relates_to` (`rel_type`, `event_id`); the
//! relation is readable in encrypted rooms too, since clients leave it outside the
//! ciphertext. Each relating event is indexed by its parent and type; each parent keeps an
//! [`Aggregation`]: its thread (reply count, latest reply, who took part), the events
//! referencing it, and its latest valid edit (same sender, not a state event).

use std::collections::HashMap;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value as JsonValue, json};

use super::{ClientView, Timeline, pdu::Pdu, visibility::Reader};
use crate::{
    error::{Error, Result},
    service::token::StreamToken,
    store::{
        AGGREGATIONS, Aggregation, Batch, RELATIONS, StoredEvent, THREAD_ACTIVITY, ThreadSummary,
    },
};

/// The relation an event declares.
#[derive(Clone, Debug)]
pub struct Relation {
    pub rel_type: String,
    pub parent: OwnedEventId,
}

/// `content.m.relates_to` with a `rel_type` (a reply alone, `m.in_reply_to`, is no relation).
pub fn relation_of(content: &JsonValue) -> Option<Relation> {
    let relates = content.get("m.relates_to")?;
    let rel_type = relates.get("rel_type")?.as_str()?.to_owned();
    let parent = OwnedEventId::try_from(relates.get("event_id")?.as_str()?).ok()?;
    Some(Relation { rel_type, parent })
}

/// What the append path needs to know of a relating event.
pub struct Relating<'a> {
    pub room_id: &'a RoomId,
    pub event_id: &'a OwnedEventId,
    pub pos: u64,
    pub pdu: &'a Pdu,
}

/// The aggregations a batch of events changes, read once and written at the end.
#[derive(Default)]
pub struct AggregationWrites {
    changed: HashMap<OwnedEventId, Aggregation>,
    /// Thread activity entries to remove (room, old position).
    moved: Vec<(OwnedRoomId, u64)>,
}

impl AggregationWrites {
    /// Writes what changed into the batch.
    pub fn apply(self, batch: &mut Batch) {
        for (room, pos) in &self.moved {
            batch.delete(&THREAD_ACTIVITY, (room, *pos));
        }
        for (parent, agg) in &self.changed {
            batch.put(&AGGREGATIONS, parent, agg);
        }
    }
}

/// One page of `/relations` or `/threads`.
pub struct RelationsPage {
    pub events: Vec<StoredEvent>,
    pub next: Option<StreamToken>,
}

impl Timeline {
    pub fn aggregation(&self, event_id: &ruma::EventId) -> Result<Option<Aggregation>> {
        Ok(self.core.store.get(&AGGREGATIONS, event_id)?)
    }

    fn aggregation_for<'a>(
        &self,
        writes: &'a mut AggregationWrites,
        parent: &OwnedEventId,
    ) -> Result<&'a mut Aggregation> {
        if !writes.changed.contains_key(parent) {
            let current = self.aggregation(parent)?.unwrap_or_default();
            writes.changed.insert(parent.clone(), current);
        }
        Ok(writes.changed.get_mut(parent).expect("inserted above"))
    }

    /// Indexes a new event that relates to another (part of the append path's batch).
    pub(super) fn index_relation(
        &self,
        batch: &mut Batch,
        writes: &mut AggregationWrites,
        ev: Relating<'_>,
        content: &JsonValue,
    ) -> Result<()> {
        let Some(rel) = relation_of(content) else {
            return Ok(());
        };
        batch.put(
            &RELATIONS,
            (&rel.parent, rel.rel_type.as_str(), ev.pos),
            ev.event_id,
        );
        let Some(parent) = self.event(&rel.parent)?.filter(|p| p.room_id == ev.room_id) else {
            return Ok(()); // unknown parent: indexed, but nothing to sum up
        };
        let sender = ev.pdu.sender.clone();
        match rel.rel_type.as_str() {
            "m.thread" => {
                let agg = self.aggregation_for(writes, &rel.parent)?;
                let mut summary = agg.thread.take().unwrap_or(ThreadSummary {
                    count: 0,
                    latest: ev.event_id.clone(),
                    latest_pos: ev.pos,
                    participants: parent.sender().into_iter().collect(),
                });
                if summary.count > 0 {
                    writes
                        .moved
                        .push((ev.room_id.to_owned(), summary.latest_pos));
                }
                summary.count += 1;
                summary.latest = ev.event_id.clone();
                summary.latest_pos = ev.pos;
                if !summary.participants.contains(&sender) {
                    summary.participants.push(sender);
                }
                let agg = self.aggregation_for(writes, &rel.parent)?;
                agg.thread = Some(summary);
                batch.put(&THREAD_ACTIVITY, (ev.room_id, ev.pos), &rel.parent);
            }
            "m.reference" => {
                let agg = self.aggregation_for(writes, &rel.parent)?;
                if !agg.references.contains(ev.event_id) {
                    agg.references.push(ev.event_id.clone());
                }
            }
            "m.replace"
                // Only the original sender edits, and only what is not state.
                if parent.sender().as_ref() == Some(&sender)
                    && !parent.is_state()
                    && parent.kind() == ev.pdu.kind.to_string()
                => {
                    let agg = self.aggregation_for(writes, &rel.parent)?;
                    if agg.latest_edit.as_ref().is_none_or(|(_, p)| *p < ev.pos) {
                        agg.latest_edit = Some((ev.event_id.clone(), ev.pos));
                    }
                }
            _ => {}
        }
        Ok(())
    }

    /// Takes a redacted event out of its parent's relations and aggregation (part of the
    /// append path's batch).
    pub(super) fn unindex_relation(
        &self,
        batch: &mut Batch,
        writes: &mut AggregationWrites,
        target: &StoredEvent,
    ) -> Result<()> {
        let Some(rel) = relation_of(&target.content()) else {
            return Ok(());
        };
        batch.delete(&RELATIONS, (&rel.parent, rel.rel_type.as_str(), target.pos));
        let remaining: Vec<StoredEvent> = self
            .core
            .store
            .scan(RELATIONS.prefix2(&rel.parent, &rel.rel_type))
            .filter_map(|item| item.ok())
            .filter(|((_, _, pos), _)| *pos != target.pos)
            .filter_map(|(_, id)| self.event(&id).ok().flatten())
            .filter(|e| e.redacted_because.is_none())
            .collect();
        let parent_sender = self.event(&rel.parent)?.and_then(|p| p.sender());
        let agg = self.aggregation_for(writes, &rel.parent)?;
        match rel.rel_type.as_str() {
            "m.thread" => {
                if let Some(old) = agg.thread.take() {
                    writes.moved.push((target.room_id.clone(), old.latest_pos));
                }
                let agg = self.aggregation_for(writes, &rel.parent)?;
                if let Some(latest) = remaining.last() {
                    let mut participants: Vec<OwnedUserId> = parent_sender.into_iter().collect();
                    for e in &remaining {
                        if let Some(s) = e.sender()
                            && !participants.contains(&s)
                        {
                            participants.push(s);
                        }
                    }
                    agg.thread = Some(ThreadSummary {
                        count: remaining.len() as u64,
                        latest: latest.event_id.clone(),
                        latest_pos: latest.pos,
                        participants,
                    });
                    batch.put(&THREAD_ACTIVITY, (&target.room_id, latest.pos), &rel.parent);
                }
            }
            "m.reference" => agg.references.retain(|r| *r != target.event_id),
            "m.replace" => {
                agg.latest_edit = remaining
                    .iter()
                    .rfind(|e| e.sender() == parent_sender)
                    .map(|e| (e.event_id.clone(), e.pos));
            }
            _ => {}
        }
        Ok(())
    }

    /// The bundled aggregations of an event as `unsigned.m.relations` shows them to `viewer`.
    pub(super) fn bundled(&self, ev: &StoredEvent, viewer: Option<&UserId>) -> Option<JsonValue> {
        let agg = self.aggregation(&ev.event_id).ok().flatten()?;
        let mut out = serde_json::Map::new();
        if let Some(thread) = &agg.thread
            && let Ok(Some(latest)) = self.event(&thread.latest)
        {
            out.insert(
                "m.thread".into(),
                json!({
                    "latest_event": self.client_event_plain(&latest),
                    "count": thread.count,
                    "current_user_participated":
                        viewer.is_some_and(|v| thread.participants.iter().any(|p| p == v)),
                }),
            );
        }
        if !agg.references.is_empty() {
            let chunk: Vec<JsonValue> = agg
                .references
                .iter()
                .map(|id| json!({ "event_id": id }))
                .collect();
            out.insert("m.reference".into(), json!({ "chunk": chunk }));
        }
        if let Some((edit, _)) = &agg.latest_edit
            && let Ok(Some(edit)) = self.event(edit)
        {
            out.insert("m.replace".into(), self.client_event_plain(&edit));
        }
        (!out.is_empty()).then_some(JsonValue::Object(out))
    }

    /// `/relations`: the events relating to `parent` (of one relation type and event type,
    /// optionally, and with `recurse` the events relating to those too), as `user` may see
    /// them, a page at a time.
    #[allow(clippy::too_many_arguments)]
    pub fn relations(
        &self,
        user: &UserId,
        room_id: &RoomId,
        parent: &ruma::EventId,
        rel_type: Option<&str>,
        event_type: Option<&str>,
        from: Option<StreamToken>,
        to: Option<StreamToken>,
        forward: bool,
        limit: usize,
        recurse: bool,
    ) -> Result<RelationsPage> {
        let (root, _) = self.visible_event(user, parent)?;
        if root.room_id != room_id {
            return Err(Error::not_found("Event not found"));
        }
        let reader = self.reader(user, room_id)?;
        let mut children: Vec<(u64, OwnedEventId)> = Vec::new();
        let mut parents = vec![parent.to_owned()];
        let mut depth = 0;
        while let Some(p) = parents.pop() {
            let prefix = match rel_type {
                Some(t) if depth == 0 || !recurse => RELATIONS.prefix2(&p, t),
                _ => RELATIONS.prefix(&p),
            };
            for item in self.core.store.scan(prefix) {
                let ((_, _, pos), id) = item?;
                if recurse && depth < 3 {
                    parents.push(id.clone());
                }
                children.push((pos, id));
            }
            depth += 1;
            if !recurse || children.len() > 10_000 {
                break;
            }
        }
        children.sort();
        children.dedup();
        if !forward {
            children.reverse();
        }
        let in_range = |pos: u64| {
            let after_from = from.is_none_or(|f| if forward { pos > f.pos } else { pos <= f.pos });
            let before_to = to.is_none_or(|t| if forward { pos <= t.pos } else { pos > t.pos });
            after_from && before_to
        };
        self.page(
            &reader,
            children.into_iter().filter(|(p, _)| in_range(*p)),
            event_type,
            forward,
            limit,
        )
    }

    /// `/threads`: the room's threads, newest activity first; with `participated`, only those
    /// `user` wrote in (or started).
    pub fn threads(
        &self,
        user: &UserId,
        room_id: &RoomId,
        participated: bool,
        from: Option<StreamToken>,
        limit: usize,
    ) -> Result<RelationsPage> {
        let reader = self.readable(user, room_id)?;
        let upto = from.map_or(u64::MAX, |f| f.pos.saturating_add(1));
        let mut roots = Vec::new();
        for item in self
            .core
            .store
            .range(&THREAD_ACTIVITY, (room_id, 0), (room_id, upto), true)
        {
            let ((_, pos), root) = item?;
            if participated {
                let took_part = self
                    .aggregation(&root)?
                    .and_then(|a| a.thread)
                    .is_some_and(|t| t.participants.iter().any(|p| p == user));
                if !took_part {
                    continue;
                }
            }
            roots.push((pos, root));
            if roots.len() > limit * 4 + 100 {
                break;
            }
        }
        self.page(&reader, roots.into_iter(), None, false, limit)
    }

    /// Up to `limit` visible events of `(position, event)` candidates in order, with the
    /// token after the last one when there may be more.
    fn page(
        &self,
        reader: &Reader,
        candidates: impl Iterator<Item = (u64, OwnedEventId)>,
        event_type: Option<&str>,
        forward: bool,
        limit: usize,
    ) -> Result<RelationsPage> {
        let limit = limit.clamp(1, 1000);
        let mut events = Vec::new();
        let mut next = None;
        for (pos, id) in candidates {
            if events.len() >= limit {
                next = Some(if forward {
                    StreamToken::after(pos.saturating_sub(1))
                } else {
                    StreamToken::after(pos)
                });
                break;
            }
            let Some(ev) = self.event(&id)? else { continue };
            if event_type.is_some_and(|t| ev.kind() != t) || !reader.sees(&ev) {
                continue;
            }
            events.push(ev);
        }
        Ok(RelationsPage { events, next })
    }

    /// The client format of an event inside another's bundle (no nested bundles).
    fn client_event_plain(&self, ev: &StoredEvent) -> JsonValue {
        self.client_event_with(ev, &ClientView::ANYONE, None, false)
    }
}

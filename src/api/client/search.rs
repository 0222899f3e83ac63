//! Server-side search.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    UInt,
    api::client::search::search_events::{
        self,
        v3::{
            EventContextResult, GroupingKey, OrderBy, ResultCategories, ResultGroup,
            ResultGroupMap, ResultRoomEvents, SearchResult, UserProfile,
        },
    },
};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    service::{
        search::Query,
        timeline::{ClientView, pagination::Seen},
    },
};

/// Gives groups their `order`, in the order they come.
fn number_groups<'a>(groups: impl Iterator<Item = &'a mut ResultGroup>) {
    for (i, g) in groups.enumerate() {
        g.order = Some(UInt::new_saturating(i as u64));
    }
}

/// `POST /_matrix/client/v3/search`
pub async fn search_events(
    State(s): State<AppState>,
    req: Ruma<search_events::v3::Request>,
) -> ApiResult<search_events::v3::Response> {
    let user = req.sender()?;
    let Some(criteria) = &req.body.search_categories.room_events else {
        return Ok(RumaResponse(search_events::v3::Response::new(
            ResultCategories::new(),
        )));
    };
    let context = &criteria.event_context;
    let query = Query {
        term: &criteria.search_term,
        filter: &criteria.filter,
        recent: criteria.order_by == Some(OrderBy::Recent),
        before: u64::from(context.before_limit) as usize,
        after: u64::from(context.after_limit) as usize,
        next_batch: req.body.next_batch.as_deref(),
        limit: criteria.filter.limit.map_or(10, |l| u64::from(l) as usize),
    };
    let found = s.search.search(user, query)?;
    let view = ClientView {
        device: Some((user, req.sender_device()?)),
        with_room_id: true,
    };
    let raw = |seen: &Seen| {
        s.timeline
            .client_raw(&seen.event, &view, Some(&seen.membership))
    };
    let mut room_events = ResultRoomEvents::new();
    room_events.count = Some(UInt::new_saturating(found.count as u64));
    room_events.next_batch = found.next_batch.clone();
    room_events.highlights = found.words.clone();
    for hit in &found.hits {
        let mut result = SearchResult::new();
        result.rank = Some(hit.rank);
        result.result = Some(raw(&hit.seen));
        if !hit.before.is_empty() || !hit.after.is_empty() || context.include_profile {
            let mut ctx = EventContextResult::new();
            ctx.events_before = hit.before.iter().map(raw).collect();
            ctx.events_after = hit.after.iter().map(raw).collect();
            if context.include_profile {
                let events: Vec<_> = std::iter::once(&hit.seen)
                    .chain(&hit.before)
                    .chain(&hit.after)
                    .map(|s| &s.event)
                    .collect();
                for (user, (name, avatar)) in s.search.profiles(&events)? {
                    let mut profile = UserProfile::new();
                    profile.displayname = name;
                    profile.avatar_url = avatar.map(Into::into);
                    ctx.profile_info.insert(user, profile);
                }
            }
            result.context = ctx;
        }
        room_events.results.push(result);
    }
    for grouping in &criteria.groupings.group_by {
        let mut by_room: BTreeMap<_, ResultGroup> = BTreeMap::new();
        let mut by_sender: BTreeMap<_, ResultGroup> = BTreeMap::new();
        for hit in &found.hits {
            let ev = &hit.seen.event;
            match grouping.key {
                Some(GroupingKey::RoomId) => by_room
                    .entry(ev.room_id.clone())
                    .or_default()
                    .results
                    .push(ev.event_id.clone()),
                Some(GroupingKey::Sender) => {
                    if let Some(sender) = ev.sender() {
                        by_sender
                            .entry(sender)
                            .or_default()
                            .results
                            .push(ev.event_id.clone());
                    }
                }
                _ => {
                    return Err(Error::invalid_param("Group by room_id or sender"));
                }
            }
        }
        if !by_room.is_empty() {
            number_groups(by_room.values_mut());
            room_events.groups.insert(ResultGroupMap::RoomId(by_room));
        }
        if !by_sender.is_empty() {
            number_groups(by_sender.values_mut());
            room_events.groups.insert(ResultGroupMap::Sender(by_sender));
        }
    }
    if criteria.include_state == Some(true) {
        for room in &found.rooms {
            let state = s.timeline.readable_state(user, room)?;
            let mut events = Vec::new();
            for id in state.values() {
                if let Some(ev) = s.timeline.event(id)? {
                    events.push(s.timeline.client_raw(&ev, &ClientView::ANYONE, None));
                }
            }
            room_events.state.insert(room.clone(), events);
        }
    }
    let mut categories = ResultCategories::new();
    categories.room_events = room_events;
    Ok(RumaResponse(search_events::v3::Response::new(categories)))
}

//! Event filters (`/sync`, `/messages`, `/context`): which events and rooms a filter lets
//! through.

use ruma::{
    RoomId,
    api::client::filter::{FilterDefinition, RoomEventFilter},
};

use crate::store::StoredEvent;

/// Whether `ty` matches one of the filter's type patterns (`*` ends a prefix).
pub fn type_matches(patterns: &[String], ty: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => ty.starts_with(prefix),
        None => p == ty,
    })
}

/// Whether an event passes a room event filter (types, senders).
pub fn filter_allows(filter: &RoomEventFilter, ev: &StoredEvent) -> bool {
    let ty = ev.kind();
    if filter.types.as_ref().is_some_and(|t| !type_matches(t, &ty))
        || type_matches(&filter.not_types, &ty)
    {
        return false;
    }
    if let Some(s) = &ev.sender()
        && (filter
            .senders
            .as_ref()
            .is_some_and(|list| !list.contains(s))
            || filter.not_senders.contains(s))
    {
        return false;
    }
    true
}

/// Whether a filter lets a room through (`rooms`, `not_rooms`).
pub fn room_allowed(filter: &FilterDefinition, room: &RoomId) -> bool {
    filter
        .room
        .rooms
        .as_ref()
        .is_none_or(|r| r.iter().any(|x| x == room))
        && !filter.room.not_rooms.iter().any(|x| x == room)
}

//! Push rules (kept in the `m.push_rules` account data, as the spec says) and the unread
//! notification counts that sync reports.

use ruma::{
    RoomId, UInt, UserId,
    events::StateEventType,
    push::{Action, PushConditionRoomCtx, Ruleset},
};
use serde_json::json;

use super::{Services, pdu::ClientView};
use crate::error::Result;

const PUSH_RULES: &str = "m.push_rules";

impl Services {
    /// Stores the spec's default rule set for a new account.
    pub async fn init_push_rules(&self, user: &UserId) -> Result<()> {
        self.set_push_rules(user, &Ruleset::server_default(user))
            .await
    }

    pub fn push_rules(&self, user: &UserId) -> Result<Ruleset> {
        Ok(self
            .account_data(user, None, PUSH_RULES)?
            .and_then(|c| serde_json::from_value(c.get("global").cloned()?).ok())
            .unwrap_or_else(|| Ruleset::server_default(user)))
    }

    pub async fn set_push_rules(&self, user: &UserId, rules: &Ruleset) -> Result<()> {
        self.set_account_data(user, None, PUSH_RULES, json!({ "global": rules }))
            .await
    }

    /// (notification_count, highlight_count) of events after the user's newest read receipt.
    ///
    /// Counts are kept in memory per user and room and extended with only the events that
    /// arrived since the last count, so a sync costs O(new events), not O(unread history).
    /// After a restart, or when the receipt moves, the count starts again from the receipt
    /// (at most [`MAX_COUNTED`] events).
    pub async fn unread_counts(&self, user: &UserId, room_id: &RoomId) -> Result<(u64, u64)> {
        let read_pos = ["m.read", "m.read.private"]
            .iter()
            .filter_map(|t| self.receipt(room_id, user, t).ok().flatten())
            .filter_map(|r| self.event(&r.event_id).ok().flatten().map(|e| e.pos))
            .max()
            .unwrap_or(0);
        let key = (user.to_owned(), room_id.to_owned());
        let cached = self
            .unread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
            .filter(|c| c.read_pos == read_pos);
        let mut count = cached.unwrap_or(UnreadCount {
            read_pos,
            counted_upto: read_pos,
            notify: 0,
            highlight: 0,
        });
        let events = self.timeline_range(
            room_id,
            count.counted_upto + 1,
            u64::MAX,
            false,
            MAX_COUNTED,
        )?;
        let Some(last) = events.last().map(|e| e.pos) else {
            return Ok((count.notify, count.highlight));
        };
        let others: Vec<_> = events
            .iter()
            .filter(|e| e.sender().as_deref() != Some(user))
            .collect();
        if !others.is_empty() {
            let rules = self.push_rules(user)?;
            let members = self.joined_members(room_id)?.len();
            let name = self
                .state_content(room_id, &StateEventType::RoomMember, user.as_str())?
                .and_then(|c| {
                    c.get("displayname")
                        .and_then(|d| d.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| user.localpart().to_owned());
            let ctx = PushConditionRoomCtx::new(
                room_id.to_owned(),
                UInt::new_saturating(members as u64),
                user.to_owned(),
                name,
            );
            let view = ClientView {
                device: None,
                with_room_id: true,
            };
            for ev in others {
                let raw: ruma::serde::Raw<ruma::events::AnySyncTimelineEvent> =
                    self.client_raw(ev, &view);
                let actions = rules.get_actions(&raw, &ctx).await;
                if actions.iter().any(|a| matches!(a, Action::Notify)) {
                    count.notify += 1;
                    if actions.iter().any(|a| a.is_highlight()) {
                        count.highlight += 1;
                    }
                }
            }
        }
        count.counted_upto = last;
        self.unread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, count);
        Ok((count.notify, count.highlight))
    }
}

/// At most this many unread events are evaluated at once (clients show "99+" anyway).
const MAX_COUNTED: usize = 1000;

/// A running unread count of one user in one room.
#[derive(Clone, Copy, Debug)]
pub struct UnreadCount {
    read_pos: u64,
    counted_upto: u64,
    notify: u64,
    highlight: u64,
}

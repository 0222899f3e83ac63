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
    pub async fn unread_counts(&self, user: &UserId, room_id: &RoomId) -> Result<(u64, u64)> {
        let read_pos = ["m.read", "m.read.private"]
            .iter()
            .filter_map(|t| self.receipt(room_id, user, t).ok().flatten())
            .filter_map(|r| self.event(&r.event_id).ok().flatten().map(|e| e.pos))
            .max()
            .unwrap_or(0);
        let events = self.timeline_range(room_id, read_pos + 1, u64::MAX, false, 1000)?;
        if events.iter().all(|e| e.sender().as_deref() == Some(user)) {
            return Ok((0, 0));
        }
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
        let (mut notify, mut highlight) = (0, 0);
        for ev in events
            .iter()
            .filter(|e| e.sender().as_deref() != Some(user))
        {
            let raw: ruma::serde::Raw<ruma::events::AnySyncTimelineEvent> =
                self.client_raw(ev, &view);
            let actions = rules.get_actions(&raw, &ctx).await;
            if actions.iter().any(|a| matches!(a, Action::Notify)) {
                notify += 1;
                if actions.iter().any(|a| a.is_highlight()) {
                    highlight += 1;
                }
            }
        }
        Ok((notify, highlight))
    }
}

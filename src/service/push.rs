//! Push rules (kept in the `m.push_rules` account data, as the spec says) and the unread
//! notification counts that sync reports.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    events::StateEventType,
    push::{
        Action, AnyPushRule, InsertPushRuleError, NewPushRule, PushConditionRoomCtx,
        RemovePushRuleError, RuleKind, RuleNotFoundError, Ruleset,
    },
};
use serde_json::json;

use super::{
    account_data::AccountData,
    ephemeral::Ephemeral,
    timeline::{ClientView, Timeline},
};
use crate::error::{Error, Result};

const PUSH_RULES: &str = "m.push_rules";

fn rule_not_found() -> Error {
    Error::not_found("Push rule not found")
}

/// Push rules and unread counts. Depends on [`AccountData`], [`Timeline`] and [`Ephemeral`].
pub struct Push {
    account_data: Arc<AccountData>,
    timeline: Arc<Timeline>,
    ephemeral: Arc<Ephemeral>,
    /// Running unread counts per (user, room); see [`Push::unread_counts`].
    unread: Mutex<HashMap<(OwnedUserId, OwnedRoomId), UnreadCount>>,
}

impl Push {
    pub fn new(
        account_data: Arc<AccountData>,
        timeline: Arc<Timeline>,
        ephemeral: Arc<Ephemeral>,
    ) -> Self {
        Self {
            account_data,
            timeline,
            ephemeral,
            unread: Mutex::default(),
        }
    }

    /// Stores the spec's default rule set for a new account.
    pub async fn init_rules(&self, user: &UserId) -> Result<()> {
        self.set_rules(user, &Ruleset::server_default(user)).await
    }

    pub fn rules(&self, user: &UserId) -> Result<Ruleset> {
        Ok(self
            .account_data
            .get(user, None, PUSH_RULES)?
            .and_then(|c| serde_json::from_value(c.get("global").cloned()?).ok())
            .unwrap_or_else(|| Ruleset::server_default(user)))
    }

    pub async fn set_rules(&self, user: &UserId, rules: &Ruleset) -> Result<()> {
        self.account_data
            .set(user, None, PUSH_RULES, json!({ "global": rules }))
            .await
    }

    /// One rule of the user's rule set, or M_NOT_FOUND.
    pub fn rule(&self, user: &UserId, kind: RuleKind, id: &str) -> Result<AnyPushRule> {
        self.rules(user)?
            .get(kind, id)
            .map(|r| r.to_owned())
            .ok_or_else(rule_not_found)
    }

    /// Adds or replaces a user-defined rule, placed `after` or `before` another.
    pub async fn put_rule(
        &self,
        user: &UserId,
        rule: NewPushRule,
        after: Option<&str>,
        before: Option<&str>,
    ) -> Result<()> {
        let mut rules = self.rules(user)?;
        rules.insert(rule, after, before).map_err(|e| match e {
            InsertPushRuleError::UnknownRuleId => rule_not_found(),
            e => Error::invalid_param(e.to_string()),
        })?;
        self.set_rules(user, &rules).await
    }

    /// Removes a user-defined rule (server-default rules cannot be removed).
    pub async fn remove_rule(&self, user: &UserId, kind: RuleKind, id: &str) -> Result<()> {
        let mut rules = self.rules(user)?;
        rules.remove(kind, id).map_err(|e| match e {
            RemovePushRuleError::NotFound => rule_not_found(),
            e => Error::invalid_param(e.to_string()),
        })?;
        self.set_rules(user, &rules).await
    }

    pub async fn set_rule_enabled(
        &self,
        user: &UserId,
        kind: RuleKind,
        id: &str,
        enabled: bool,
    ) -> Result<()> {
        let mut rules = self.rules(user)?;
        rules
            .set_enabled(kind, id, enabled)
            .map_err(|_: RuleNotFoundError| rule_not_found())?;
        self.set_rules(user, &rules).await
    }

    pub async fn set_rule_actions(
        &self,
        user: &UserId,
        kind: RuleKind,
        id: &str,
        actions: Vec<Action>,
    ) -> Result<()> {
        let mut rules = self.rules(user)?;
        rules
            .set_actions(kind, id, actions)
            .map_err(|_: RuleNotFoundError| rule_not_found())?;
        self.set_rules(user, &rules).await
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
            .filter_map(|t| self.ephemeral.receipt(room_id, user, t).ok().flatten())
            .filter_map(|r| {
                self.timeline
                    .event(&r.event_id)
                    .ok()
                    .flatten()
                    .map(|e| e.pos)
            })
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
        let events = self.timeline.timeline_range(
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
            let rules = self.rules(user)?;
            let members = self.timeline.joined_members(room_id)?.len();
            let name = self
                .timeline
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
            for ev in others {
                let raw: ruma::serde::Raw<ruma::events::AnySyncTimelineEvent> =
                    self.timeline.client_raw(ev, &ClientView::ANYONE, None);
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

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
    timeline::{ClientView, Timeline, relations::relation_of},
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

    /// The user's rules: their own, and the server-default rules (kept up to date with this
    /// version's set, with the user's choices of enabled and actions).
    pub fn rules(&self, user: &UserId) -> Result<Ruleset> {
        let stored: Option<Ruleset> = self
            .account_data
            .get(user, None, PUSH_RULES)?
            .and_then(|c| serde_json::from_value(c.get("global").cloned()?).ok());
        Ok(match stored {
            Some(mut rules) => {
                rules.update_with_server_default(server_default(user));
                rules
            }
            None => server_default(user),
        })
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

    /// The push rules of one user in one room, ready to judge events.
    pub fn evaluator(&self, user: &UserId, room_id: &RoomId) -> Result<Evaluator> {
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
        let mut ctx = PushConditionRoomCtx::new(
            room_id.to_owned(),
            UInt::new_saturating(members as u64),
            user.to_owned(),
            name,
        );
        // `@room` notifies only from those the power levels allow to.
        ctx.power_levels = Some(self.timeline.power_levels(room_id)?.into());
        Ok(Evaluator {
            rules,
            ctx,
            user: user.to_owned(),
        })
    }

    /// The unread counts of a room: events from others after the user's read receipts that
    /// the push rules say notify (and highlight). With `by_thread` (a client that asked for
    /// `unread_thread_notifications`), replies in threads are counted per thread against
    /// that thread's receipt and left out of the main count.
    ///
    /// The plain counts are kept in memory per user and room and extended with only the events
    /// that arrived since the last count, so a sync costs O(new events), not O(unread
    /// history). After a restart, or when the receipt moves, the count starts again from the
    /// receipt (at most [`MAX_COUNTED`] events).
    pub async fn unread_counts(
        &self,
        user: &UserId,
        room_id: &RoomId,
        by_thread: bool,
    ) -> Result<Unread> {
        let mut receipts = self.receipt_positions(user, room_id)?;
        // What came before the user joined is not unread (their invite included).
        if let Some(joined) = self.joined_at(user, room_id)? {
            receipts.push((None, joined));
        }
        if by_thread {
            return self.unread_by_thread(user, room_id, &receipts).await;
        }
        let read_pos = receipts.iter().map(|(_, p)| *p).max().unwrap_or(0);
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
            return Ok(Unread::main(count.notify, count.highlight));
        };
        if events.iter().any(|e| e.sender().as_deref() != Some(user)) {
            let judge = self.evaluator(user, room_id)?;
            for ev in &events {
                if let Some(highlight) = judge.notifies(self, ev).await {
                    count.notify += 1;
                    count.highlight += u64::from(highlight);
                }
            }
        }
        count.counted_upto = last;
        self.unread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, count);
        Ok(Unread::main(count.notify, count.highlight))
    }

    /// The stream positions of the user's read receipts in a room, with their threads.
    fn receipt_positions(
        &self,
        user: &UserId,
        room_id: &RoomId,
    ) -> Result<Vec<(Option<String>, u64)>> {
        Ok(self
            .ephemeral
            .read_receipts(room_id, user)?
            .into_iter()
            .filter_map(|r| {
                let pos = self.timeline.event(&r.event_id).ok().flatten()?.pos;
                Some((r.thread_id.filter(|t| !t.is_empty()), pos))
            })
            .collect())
    }

    /// Where the user joined the room they are in.
    fn joined_at(&self, user: &UserId, room_id: &RoomId) -> Result<Option<u64>> {
        Ok(self
            .timeline
            .membership(user, room_id)?
            .filter(|m| m.membership == ruma::events::room::member::MembershipState::Join)
            .map(|m| m.changed_at()))
    }

    /// The position of the user's newest read receipt in a room (0: none).
    pub fn read_upto(&self, user: &UserId, room_id: &RoomId) -> Result<u64> {
        Ok(self
            .receipt_positions(user, room_id)?
            .into_iter()
            .map(|(_, p)| p)
            .max()
            .unwrap_or(0))
    }

    async fn unread_by_thread(
        &self,
        user: &UserId,
        room_id: &RoomId,
        receipts: &[(Option<String>, u64)],
    ) -> Result<Unread> {
        let read_in = |thread: Option<&str>| {
            receipts
                .iter()
                .filter(|(t, _)| t.is_none() || t.as_deref() == thread)
                .map(|(_, p)| *p)
                .max()
                .unwrap_or(0)
        };
        let from = read_in(None).min(read_in(Some("main")));
        let events =
            self.timeline
                .timeline_range(room_id, from + 1, u64::MAX, false, MAX_COUNTED)?;
        let mut unread = Unread::main(0, 0);
        if !events.iter().any(|e| e.sender().as_deref() != Some(user)) {
            return Ok(unread);
        }
        let judge = self.evaluator(user, room_id)?;
        for ev in &events {
            let thread = relation_of(&ev.content())
                .filter(|r| r.rel_type == "m.thread")
                .map(|r| r.parent);
            let read = match &thread {
                Some(root) => read_in(Some(root.as_str())),
                None => read_in(Some("main")),
            };
            if ev.pos <= read {
                continue;
            }
            if let Some(highlight) = judge.notifies(self, ev).await {
                let counts = match thread {
                    Some(root) => unread.threads.entry(root).or_default(),
                    None => &mut unread.main,
                };
                counts.0 += 1;
                counts.1 += u64::from(highlight);
            }
        }
        Ok(unread)
    }
}

/// A room's unread counts: (notifications, highlights) of the main timeline (or of all of it)
/// and of each thread.
#[derive(Debug, Default)]
pub struct Unread {
    pub main: (u64, u64),
    pub threads: std::collections::BTreeMap<ruma::OwnedEventId, (u64, u64)>,
}

impl Unread {
    fn main(notify: u64, highlight: u64) -> Self {
        Self {
            main: (notify, highlight),
            threads: Default::default(),
        }
    }
}

/// One user's push rules in one room.
pub struct Evaluator {
    rules: Ruleset,
    ctx: PushConditionRoomCtx,
    user: ruma::OwnedUserId,
}

impl Evaluator {
    /// The actions the rules give an event (none for the user's own events).
    pub async fn actions(&self, push: &Push, ev: &crate::store::StoredEvent) -> Vec<Action> {
        if ev.sender().as_deref() == Some(&*self.user) {
            return Vec::new();
        }
        let raw: ruma::serde::Raw<ruma::events::AnySyncTimelineEvent> =
            push.timeline.client_raw(ev, &ClientView::ANYONE, None);
        self.rules.get_actions(&raw, &self.ctx).await.to_vec()
    }

    /// Whether an event notifies the user, and if so whether it highlights.
    pub async fn notifies(&self, push: &Push, ev: &crate::store::StoredEvent) -> Option<bool> {
        let actions = self.actions(push, ev).await;
        actions
            .iter()
            .any(|a| matches!(a, Action::Notify))
            .then(|| actions.iter().any(|a| a.is_highlight()))
    }
}

/// The spec's server-default push rules (v1.16): ruma's set, plus the legacy mention rules the
/// spec still lists (`.m.rule.contains_display_name`, `.m.rule.roomnotif` and
/// `.m.rule.contains_user_name`), for clients that send mentions only in the body.
pub fn server_default(user: &UserId) -> Ruleset {
    let mut rules = Ruleset::server_default(user);
    let legacy_override = |id: &str, conditions: serde_json::Value, actions: serde_json::Value| {
        serde_json::from_value::<ruma::push::ConditionalPushRule>(json!({
            "rule_id": id, "default": true, "enabled": true,
            "conditions": conditions, "actions": actions,
        }))
        .expect("the spec's rules parse")
    };
    let highlight_sound = json!([
        "notify",
        { "set_tweak": "sound", "value": "default" },
        { "set_tweak": "highlight" },
    ]);
    let display_name = legacy_override(
        ".m.rule.contains_display_name",
        json!([{ "kind": "contains_display_name" }]),
        highlight_sound.clone(),
    );
    let room_notif = legacy_override(
        ".m.rule.roomnotif",
        json!([
            { "kind": "event_match", "key": "content.body", "pattern": "@room" },
            { "kind": "sender_notification_permission", "key": "room" },
        ]),
        json!(["notify", { "set_tweak": "highlight" }]),
    );
    // In the spec's order: after the intentional mention rules they stand in for.
    let mut overrides: Vec<_> = rules.override_.into_iter().collect();
    let after = |rules: &[ruma::push::ConditionalPushRule], id: &str| {
        rules
            .iter()
            .position(|r| r.rule_id == id)
            .map_or(rules.len(), |i| i + 1)
    };
    let at = after(&overrides, ".m.rule.is_user_mention");
    overrides.insert(at, display_name);
    let at = after(&overrides, ".m.rule.is_room_mention");
    overrides.insert(at, room_notif);
    rules.override_ = overrides.into_iter().collect();
    let user_name = serde_json::from_value::<ruma::push::PatternedPushRule>(json!({
        "rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
        "pattern": user.localpart(), "actions": highlight_sound,
    }))
    .expect("the spec's rules parse");
    rules.content.insert(user_name);
    rules
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

//! Push rules (kept in the `m.push_rules` account data, as the spec says) and the unread
//! notification counts that sync reports.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    OwnedUserId, RoomId, UInt, UserId,
    events::StateEventType,
    push::{
        Action, AnyPushRule, InsertPushRuleError, NewPushRule, PushConditionRoomCtx,
        RemovePushRuleError, RuleKind, RuleNotFoundError, Ruleset,
    },
};
use serde_json::json;

use super::{
    account_data::AccountData,
    appservice::Appservices,
    core::Core,
    ephemeral::Ephemeral,
    timeline::{AppendObserver, ClientView, Notified, Timeline, relations::relation_of},
    users::Users,
};
use crate::{
    error::{Error, Result},
    store::{PUSH_ACTIONS, StoredEvent, UNREAD_COUNTS, UnreadSummary},
};

const PUSH_RULES: &str = "m.push_rules";

fn rule_not_found() -> Error {
    Error::not_found("Push rule not found")
}

/// Push rules and unread counts. Depends on [`Core`], [`Users`], [`Appservices`],
/// [`AccountData`], [`Timeline`] and [`Ephemeral`].
pub struct Push {
    core: Arc<Core>,
    users: Arc<Users>,
    appservices: Arc<Appservices>,
    account_data: Arc<AccountData>,
    timeline: Arc<Timeline>,
    ephemeral: Arc<Ephemeral>,
    /// Rule sets by user, as last read (a change of a user's rules drops theirs).
    rules: Mutex<HashMap<OwnedUserId, Arc<Ruleset>>>,
}

/// Rule sets kept in memory at most.
const RULES_CACHED: usize = 10_000;

impl Push {
    pub fn new(
        core: Arc<Core>,
        users: Arc<Users>,
        appservices: Arc<Appservices>,
        account_data: Arc<AccountData>,
        timeline: Arc<Timeline>,
        ephemeral: Arc<Ephemeral>,
    ) -> Self {
        Self {
            core,
            users,
            appservices,
            account_data,
            timeline,
            ephemeral,
            rules: Mutex::default(),
        }
    }

    /// The user's rules: their own, and the server-default rules (kept up to date with this
    /// version's set, with the user's choices of enabled and actions).
    pub fn rules(&self, user: &UserId) -> Result<Ruleset> {
        Ok((*self.shared_rules(user)?).clone())
    }

    /// [`Push::rules`], shared from memory.
    fn shared_rules(&self, user: &UserId) -> Result<Arc<Ruleset>> {
        if let Some(r) = self
            .rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
        {
            return Ok(r.clone());
        }
        let stored: Option<Ruleset> = self
            .account_data
            .get(user, None, PUSH_RULES)?
            .and_then(|c| serde_json::from_value(c.get("global").cloned()?).ok());
        let rules = Arc::new(match stored {
            Some(mut rules) => {
                rules.update_with_server_default(server_default(user));
                rules
            }
            None => server_default(user),
        });
        let mut cache = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= RULES_CACHED {
            cache.clear();
        }
        cache.insert(user.to_owned(), rules.clone());
        Ok(rules)
    }

    pub async fn set_rules(&self, user: &UserId, rules: &Ruleset) -> Result<()> {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user);
        let result = self
            .account_data
            .set(user, None, PUSH_RULES, json!({ "global": rules }))
            .await;
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user);
        result
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
        let members = self.timeline.joined_members(room_id)?.len();
        let levels = Some(self.timeline.power_levels(room_id)?.into());
        self.evaluator_in(user, room_id, members, levels.as_ref())
    }

    /// [`Push::evaluator`] with the room's member count and power levels already known.
    fn evaluator_in(
        &self,
        user: &UserId,
        room_id: &RoomId,
        members: usize,
        levels: Option<&ruma::push::PushConditionPowerLevelsCtx>,
    ) -> Result<Evaluator> {
        let rules = self.shared_rules(user)?;
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
        ctx.power_levels = levels.cloned();
        Ok(Evaluator {
            rules,
            ctx,
            user: user.to_owned(),
        })
    }

    /// The unread counts of a room: notifying events from others after the user's read
    /// receipts (and after they joined). With `by_thread` (a client that asked for
    /// `unread_thread_notifications`), replies in threads are counted per thread against
    /// that thread's receipt and left out of the main count.
    ///
    /// The push rules ran when each event was appended ([`AppendObserver`]): what notifies
    /// whom is in the `PUSH_ACTIONS` index, and a running count per user and room in
    /// `UNREAD_COUNTS`. So a plain count is one read (and a short scan of what was read since
    /// the count was last moved to the receipt, see [`Push::rebase_unread`]).
    pub fn unread_counts(
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
            return self.unread_by_thread(user, room_id, &receipts);
        }
        let read_pos = receipts.iter().map(|(_, p)| *p).max().unwrap_or(0);
        let summary = self
            .core
            .store
            .get(&UNREAD_COUNTS, (user, room_id))?
            .unwrap_or_default();
        if read_pos <= summary.from {
            return Ok(Unread::main(summary.notify, summary.highlight));
        }
        // The count started before the receipt: take away what was read since.
        let (mut read, mut read_highlights) = (0u64, 0u64);
        for item in self.core.store.range(
            &PUSH_ACTIONS,
            (user, room_id, summary.from + 1),
            (user, room_id, read_pos + 1),
            false,
        ) {
            let (_, flags) = item?;
            read += 1;
            read_highlights += u64::from(flags.highlight);
        }
        Ok(Unread::main(
            summary.notify.saturating_sub(read),
            summary.highlight.saturating_sub(read_highlights),
        ))
    }

    /// Moves a user's running count in a room to their read position and drops the index
    /// entries everything is read up to. Called after a receipt.
    pub async fn rebase_unread(&self, user: &UserId, room_id: &RoomId) -> Result<()> {
        let mut receipts = self.receipt_positions(user, room_id)?;
        let joined = self.joined_at(user, room_id)?.unwrap_or(0);
        receipts.push((None, joined));
        let read_pos = receipts.iter().map(|(_, p)| *p).max().unwrap_or(0);
        // An unthreaded receipt reads every thread; a threaded one only its own.
        let all_read = receipts
            .iter()
            .filter(|(t, _)| t.is_none())
            .map(|(_, p)| *p)
            .max()
            .unwrap_or(0);
        let store = &self.core.store;
        self.core
            .write_exclusive(|b| {
                let mut summary = UnreadSummary {
                    from: read_pos,
                    ..Default::default()
                };
                for item in store.range(
                    &PUSH_ACTIONS,
                    (user, room_id, 0),
                    (user, room_id, u64::MAX),
                    false,
                ) {
                    let ((_, _, pos), flags) = item?;
                    if pos <= all_read {
                        b.delete(&PUSH_ACTIONS, (user, room_id, pos));
                    } else if pos > read_pos {
                        summary.notify += 1;
                        summary.highlight += u64::from(flags.highlight);
                    }
                }
                b.put(&UNREAD_COUNTS, (user, room_id), &summary);
                Ok(())
            })
            .await
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

    fn unread_by_thread(
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
        let mut unread = Unread::main(0, 0);
        for item in self.core.store.range(
            &PUSH_ACTIONS,
            (user, room_id, from + 1),
            (user, room_id, u64::MAX),
            false,
        ) {
            let ((_, _, pos), flags) = item?;
            let read = match &flags.thread {
                Some(root) => read_in(Some(root.as_str())),
                None => read_in(Some("main")),
            };
            if pos <= read {
                continue;
            }
            let counts = match flags.thread {
                Some(root) => unread.threads.entry(root).or_default(),
                None => &mut unread.main,
            };
            counts.0 += 1;
            counts.1 += u64::from(flags.highlight);
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
    rules: Arc<Ruleset>,
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

    /// Whether an event (in the client format) notifies the user, and if so whether it
    /// highlights. The caller leaves out the user's own events.
    async fn notifies_raw(
        &self,
        raw: &ruma::serde::Raw<ruma::events::AnySyncTimelineEvent>,
    ) -> Option<bool> {
        let actions = self.rules.get_actions(raw, &self.ctx).await;
        actions
            .iter()
            .any(|a| matches!(a, Action::Notify))
            .then(|| actions.iter().any(|a| a.is_highlight()))
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

impl AppendObserver for Push {
    /// The local members of the room (and the target of an invite) each event notifies, by
    /// their own rules: the sender, bridged users and people who ignore the sender left out.
    fn notified<'a>(
        &'a self,
        room_id: &'a RoomId,
        events: &'a [StoredEvent],
    ) -> super::timeline::BoxFuture<'a, Result<Vec<Vec<Notified>>>> {
        Box::pin(async move {
            let joined = self.timeline.joined_members(room_id)?;
            let count = joined.len();
            let local =
                |u: &UserId| self.users.is_local(u) && !self.appservices.is_appservice_user(u);
            let mut members: Vec<OwnedUserId> = joined.into_iter().filter(|u| local(u)).collect();
            let mut out = Vec::with_capacity(events.len());
            if members.is_empty() && events.iter().all(|e| e.kind() != "m.room.member") {
                out.resize(events.len(), Vec::new());
                return Ok(out);
            }
            // A room being created has no stored power levels yet: nobody may `@room` in it.
            let levels: Option<ruma::push::PushConditionPowerLevelsCtx> =
                self.timeline.power_levels(room_id).ok().map(Into::into);
            let mut judges: HashMap<
                OwnedUserId,
                (Evaluator, std::collections::HashSet<OwnedUserId>),
            > = HashMap::new();
            for ev in events {
                let mut notified = Vec::new();
                let Some(sender) = ev.sender() else {
                    out.push(notified);
                    continue;
                };
                // An invite is for someone not yet in the room.
                if ev.kind() == "m.room.member"
                    && ev.content_str("membership").as_deref() == Some("invite")
                    && let Some(target) = ev.state_key().and_then(|k| UserId::parse(k).ok())
                    && local(&target)
                    && !members.contains(&target)
                {
                    members.push(target);
                }
                let raw: ruma::serde::Raw<ruma::events::AnySyncTimelineEvent> =
                    self.timeline.client_raw(ev, &ClientView::ANYONE, None);
                let thread = relation_of(&ev.content())
                    .filter(|r| r.rel_type == "m.thread")
                    .map(|r| r.parent);
                for member in &members {
                    if *member == sender {
                        continue;
                    }
                    let (judge, ignored) = match judges.entry(member.clone()) {
                        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => v.insert((
                            self.evaluator_in(member, room_id, count, levels.as_ref())?,
                            self.account_data.ignored_users(member)?,
                        )),
                    };
                    if ignored.contains(&sender) {
                        continue;
                    }
                    if let Some(highlight) = judge.notifies_raw(&raw).await {
                        notified.push(Notified {
                            user: member.clone(),
                            highlight,
                            thread: thread.clone(),
                        });
                    }
                }
                out.push(notified);
            }
            Ok(out)
        })
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

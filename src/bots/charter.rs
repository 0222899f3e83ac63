//! Charter (the rules belong to the members): the rules live in room state
//! (`org.tsunagu.charter`: rules, quorum, majority, vote length, the record of passed changes),
//! `!charter` shows them, `!propose …` puts a change to a vote as an MSC3381 poll (the unstable
//! `org.matrix.msc3381.poll.*` types Element renders), one member one vote (each member's latest
//! response counts), closed at the deadline or by `!close`, summarised in an `m.notice`; a
//! passed change is carried out by the bots (who need admin power in rooms they govern) and
//! recorded in the charter.
//!
//! The guard: no proposal may leave the members of one organisation (from their People
//! profiles) holding a majority of moderator power, if it increases that organisation's share.
//! It is checked when a proposal is made and again before a passed one is carried out.

use std::collections::BTreeMap;

use matrix_sdk::{
    Room,
    ruma::{OwnedRoomId, OwnedUserId, UserId},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Bots, Msg, esc,
    people::resolve_user,
    state::{Change, Proposal},
};

/// The state event type holding a room's charter.
pub const CHARTER_TYPE: &str = "org.tsunagu.charter";

/// Creators of room version 12 rooms have a power above every number.
const CREATOR: i64 = i64::MAX;

/// A room's power levels as the auth rules read them.
pub(crate) struct Power {
    pub content: Value,
    users: BTreeMap<String, i64>,
    users_default: i64,
    state_default: i64,
    creators: Vec<String>,
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

impl Power {
    pub fn new(create: Option<&Value>, content: Value) -> Self {
        let mut creators = Vec::new();
        if let Some(create) = create {
            let version = create["content"]["room_version"].as_str().unwrap_or("1");
            if version == "12" {
                creators.extend(create["sender"].as_str().map(str::to_owned));
                if let Some(extra) = create["content"]["additional_creators"].as_array() {
                    creators.extend(extra.iter().filter_map(|u| u.as_str().map(str::to_owned)));
                }
            }
        }
        let users = content["users"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(u, l)| int(l).map(|l| (u.clone(), l)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            users,
            users_default: int(&content["users_default"]).unwrap_or(0),
            state_default: int(&content["state_default"]).unwrap_or(50),
            creators,
            content,
        }
    }

    pub fn level(&self, user: &UserId) -> i64 {
        if self.creators.iter().any(|c| c == user.as_str()) {
            return CREATOR;
        }
        self.users
            .get(user.as_str())
            .copied()
            .unwrap_or(self.users_default)
    }

    /// Moderators are those who may change the room's state.
    pub fn moderator_level(&self) -> i64 {
        self.state_default
    }

    /// The level needed to send a state event of this type.
    fn needed_for(&self, event_type: &str) -> i64 {
        int(&self.content["events"][event_type]).unwrap_or(self.state_default)
    }

    /// Moderators' power (capped at 100: a creator counts as an admin), without the bots.
    fn moderator_weights(&self, bots: &UserId) -> BTreeMap<String, i64> {
        let mut m: BTreeMap<String, i64> = self
            .users
            .iter()
            .filter(|(u, l)| **l >= self.state_default && u.as_str() != bots.as_str())
            .map(|(u, l)| (u.clone(), (*l).min(100)))
            .collect();
        for c in &self.creators {
            if c != bots.as_str() {
                m.insert(c.clone(), 100);
            }
        }
        m
    }
}

/// The charter as stored in room state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Charter {
    pub rules: Vec<String>,
    /// Share of members (percent) who must vote for a result to count.
    pub quorum_percent: u32,
    /// A proposal passes with more than this share (percent) of the votes cast.
    pub majority_percent: u32,
    pub vote_hours: Option<u32>,
    /// Passed changes, in order.
    pub changes: Vec<Value>,
}

impl Default for Charter {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            quorum_percent: 50,
            majority_percent: 50,
            vote_hours: None,
            changes: Vec::new(),
        }
    }
}

async fn charter(bots: &Bots, room: &Room) -> anyhow::Result<Charter> {
    Ok(bots
        .state_content(room, CHARTER_TYPE)
        .await?
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default())
}

pub(crate) async fn show(bots: &Bots, room: &Room, msg: &Msg) -> anyhow::Result<()> {
    let c = charter(bots, room).await?;
    let mut html = String::from("<b>Our charter</b>");
    let mut plain = String::from("Our charter");
    if c.rules.is_empty() {
        html.push_str("<br>No rules yet. Propose one: <code>!propose rule …</code>");
        plain.push_str("\nNo rules yet. Propose one: !propose rule …");
    } else {
        html.push_str("<ol>");
        for r in &c.rules {
            html.push_str(&format!("<li>{}</li>", esc(r)));
            plain.push_str(&format!("\n{}. {r}", plain.lines().count()));
        }
        html.push_str("</ol>");
    }
    let votes = format!(
        "Changes are decided by the members: a vote counts when {}% of members take part, and passes with more than {}% yes. No single organisation may hold most of the moderator power. {} change(s) passed so far.",
        c.quorum_percent,
        c.majority_percent,
        c.changes.len()
    );
    html.push_str(&format!("<br>{}", esc(&votes)));
    plain.push_str(&format!("\n{votes}"));
    bots.reply(room, msg, &html, &plain).await
}

/// Why a change would let one organisation dominate, if it would.
fn guard(
    bots: &Bots,
    power: &Power,
    change: &Change,
    orgs: &BTreeMap<String, String>,
) -> Option<String> {
    let (user, level) = match change {
        Change::Rule { .. } => return None,
        Change::Moderator { user } => (user, power.level(user).max(power.moderator_level())),
        Change::Power { user, level } => (user, *level),
    };
    let before = power.moderator_weights(&bots.user_id);
    let mut after = before.clone();
    if level >= power.moderator_level() && power.level(user) != CREATOR {
        after.insert(user.to_string(), level.min(100));
    } else if power.level(user) != CREATOR {
        after.remove(user.as_str());
    }
    let by_org = |m: &BTreeMap<String, i64>| {
        let mut o: BTreeMap<String, (i64, Vec<String>)> = BTreeMap::new();
        for (u, w) in m {
            if let Some(org) = orgs.get(u) {
                let e = o.entry(org.clone()).or_default();
                e.0 += w;
                e.1.push(u.clone());
            }
        }
        o
    };
    let (tb, ta): (i64, i64) = (before.values().sum(), after.values().sum());
    let (ob, oa) = (by_org(&before), by_org(&after));
    for (org, (wa, who)) in oa {
        let wb = ob.get(&org).map(|x| x.0).unwrap_or(0);
        // A majority after the change, reached or grown by it: more power, or a larger share.
        if wa * 2 > ta && (wa > wb || tb == 0 || wa * tb > wb * ta) {
            return Some(format!(
                "afterwards members of {org} ({}) would hold {}% of the moderator power. The charter keeps any single organisation below a majority, so that the community's rules stay its members'.",
                who.join(", "),
                wa * 100 / ta.max(1)
            ));
        }
    }
    None
}

async fn orgs(bots: &Bots) -> BTreeMap<String, String> {
    bots.state
        .lock()
        .await
        .profiles
        .iter()
        .filter_map(|(u, p)| {
            p.org
                .as_ref()
                .map(|o| (u.to_string(), o.trim().to_lowercase()))
        })
        .collect()
}

fn describe(change: &Change) -> String {
    match change {
        Change::Rule { text } => format!("add the rule “{text}”"),
        Change::Moderator { user } => format!("make {user} a moderator"),
        Change::Power { user, level } => format!("set {user}'s power level to {level}"),
    }
}

/// Whether the bots can carry out the change; the reason when not.
fn can_execute(bots: &Bots, power: &Power, change: &Change) -> Result<(), String> {
    let mine = power.level(&bots.user_id);
    let need_admin = "I need admin power in this room to carry out the members' decisions: a room admin can raise my power level to 100.";
    match change {
        Change::Rule { .. } => {
            if mine < power.needed_for(CHARTER_TYPE) {
                return Err(need_admin.into());
            }
        }
        Change::Moderator { user } | Change::Power { user, .. } => {
            let level = match change {
                Change::Power { level, .. } => *level,
                _ => power.moderator_level(),
            };
            if mine < power.needed_for("m.room.power_levels") || level > mine {
                return Err(need_admin.into());
            }
            let current = power.level(user);
            if current == CREATOR {
                return Err(format!(
                    "{user} created this room; their power cannot be changed."
                ));
            }
            if current >= mine && user != &bots.user_id {
                return Err(format!(
                    "{user} has as much power as I do, so I cannot change theirs."
                ));
            }
        }
    }
    Ok(())
}

pub(crate) async fn propose(bots: &Bots, room: &Room, msg: &Msg, args: &str) -> anyhow::Result<()> {
    let (kind, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
    let rest = rest.trim();
    let usage =
        "Propose: !propose rule <text>, !propose moderator @user, or !propose power @user <level>";
    let change = match kind.to_lowercase().as_str() {
        "rule" if !rest.is_empty() => Change::Rule {
            text: rest.to_owned(),
        },
        "moderator" | "mod" => match resolve_user(bots, room, rest).await {
            Some(user) => Change::Moderator { user },
            None => return bots.reply(room, msg, usage, usage).await,
        },
        "power" => {
            let (who, level) = rest.rsplit_once(char::is_whitespace).unwrap_or((rest, ""));
            match (
                resolve_user(bots, room, who).await,
                level.trim().parse::<i64>(),
            ) {
                (Some(user), Ok(level)) if (0..=100).contains(&level) => {
                    Change::Power { user, level }
                }
                _ => return bots.reply(room, msg, usage, usage).await,
            }
        }
        _ => return bots.reply(room, msg, usage, usage).await,
    };
    let power = bots.power(room).await?;
    if let Some(why) = guard(bots, &power, &change, &orgs(bots).await) {
        let t = format!("I can't put this to a vote: {why}");
        return bots.reply(room, msg, &esc(&t), &t).await;
    }
    if let Err(why) = can_execute(bots, &power, &change) {
        return bots.reply(room, msg, &esc(&why), &why).await;
    }
    let c = charter(bots, room).await?;
    let hours = c.vote_hours.unwrap_or(bots.config.vote_hours);
    let now = bots.now();
    let deadline = now + chrono::Duration::hours(hours.into());
    let id = bots.state.lock().await.new_id();
    let question = format!(
        "Proposal #{id} by {}: {}?",
        bots.name(room, &msg.sender).await,
        describe(&change)
    );
    let fallback = format!(
        "{question}\n1. Yes\n2. No\n(Vote open until {} UTC; it counts with {}% of members voting and passes with more than {}% yes.)",
        deadline.format("%Y-%m-%d %H:%M"),
        c.quorum_percent,
        c.majority_percent
    );
    let content = json!({
        "org.matrix.msc3381.poll.start": {
            "question": { "org.matrix.msc1767.text": question, "body": question, "msgtype": "m.text" },
            "kind": "org.matrix.msc3381.poll.disclosed",
            "max_selections": 1,
            "answers": [
                { "id": "yes", "org.matrix.msc1767.text": "Yes" },
                { "id": "no", "org.matrix.msc1767.text": "No" },
            ],
        },
        "org.matrix.msc1767.text": fallback,
    });
    let poll = room
        .send_raw("org.matrix.msc3381.poll.start", content)
        .await?
        .response
        .event_id;
    let mut state = bots.state.lock().await;
    state.proposals.push(Proposal {
        id,
        room: room.room_id().to_owned(),
        poll,
        change,
        proposer: msg.sender.clone(),
        created_at: now.timestamp(),
        deadline: deadline.timestamp(),
        votes: Default::default(),
        closed: false,
    });
    bots.save(&state);
    Ok(())
}

/// A poll response: the member's latest answer counts.
pub(crate) async fn on_vote(bots: &Bots, sender: &UserId, ts: i64, content: &Value) {
    let Some(poll) = content["m.relates_to"]["event_id"].as_str() else {
        return;
    };
    let answers = content["org.matrix.msc3381.poll.response"]["answers"]
        .as_array()
        .or(content["m.poll.response"]["answers"].as_array());
    let answer = answers
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut state = bots.state.lock().await;
    let Some(p) = state
        .proposals
        .iter_mut()
        .find(|p| p.poll.as_str() == poll && !p.closed)
    else {
        return;
    };
    let newer = p.votes.get(sender).is_none_or(|(t, _)| *t <= ts);
    if newer {
        if answer.is_empty() {
            p.votes.remove(sender);
        } else {
            p.votes.insert(sender.to_owned(), (ts, answer));
        }
        bots.save(&state);
    }
}

pub(crate) async fn close_command(
    bots: &Bots,
    room: &Room,
    msg: &Msg,
    args: &str,
) -> anyhow::Result<()> {
    let wanted: Option<u32> = args.trim().trim_start_matches('#').parse().ok();
    let found = {
        let state = bots.state.lock().await;
        state
            .proposals
            .iter()
            .rev()
            .find(|p| p.room == room.room_id() && !p.closed && wanted.is_none_or(|w| w == p.id))
            .map(|p| (p.id, p.proposer.clone()))
    };
    let Some((id, proposer)) = found else {
        let t = "There is no open vote here.";
        return bots.reply(room, msg, t, t).await;
    };
    if proposer != msg.sender && !bots.is_moderator(room, &msg.sender).await? {
        let t = "Only the proposer or a moderator can close a vote early.";
        return bots.reply(room, msg, t, t).await;
    }
    close(bots, room.room_id().to_owned(), id).await
}

/// Closes a proposal once: tallies, ends the poll, carries out a passed change, summarises.
async fn close(bots: &Bots, room_id: OwnedRoomId, id: u32) -> anyhow::Result<()> {
    let Some(room) = bots.room(&room_id) else {
        return Ok(());
    };
    let p = {
        let mut state = bots.state.lock().await;
        let Some(p) = state.proposals.iter_mut().find(|p| p.id == id && !p.closed) else {
            return Ok(());
        };
        p.closed = true;
        let p = p.clone();
        bots.save(&state);
        p
    };
    let c = charter(bots, &room).await?;
    let members = bots.members(&room).await?;
    let counted: Vec<(&OwnedUserId, &String)> = p
        .votes
        .iter()
        .filter(|(u, _)| members.contains(u))
        .map(|(u, (_, a))| (u, a))
        .collect();
    let yes = counted.iter().filter(|(_, a)| *a == "yes").count();
    let no = counted.iter().filter(|(_, a)| *a == "no").count();
    let cast = yes + no;
    let quorum = cast * 100 >= c.quorum_percent as usize * members.len() && cast > 0;
    let passed = quorum && yes * 100 > c.majority_percent as usize * cast;
    let result = format!(
        "{yes} yes, {no} no, of {} members (counts with {}% voting, passes with more than {}% yes)",
        members.len(),
        c.quorum_percent,
        c.majority_percent
    );
    let end = json!({
        "m.relates_to": { "rel_type": "m.reference", "event_id": p.poll },
        "org.matrix.msc3381.poll.end": {},
        "org.matrix.msc1767.text": format!("The vote on proposal #{} has ended: {result}.", p.id),
    });
    room.send_raw("org.matrix.msc3381.poll.end", end).await?;
    let what = describe(&p.change);
    let outcome = if !passed {
        if quorum {
            "did not pass".to_owned()
        } else {
            "did not count: too few members voted".to_owned()
        }
    } else {
        match execute(bots, &room, &p, c, yes, no).await {
            Ok(done) => format!("passed. {done}"),
            Err(e) => format!("passed, but I could not carry it out: {e}"),
        }
    };
    let t = format!("📜 Proposal #{} ({what}) {outcome} Votes: {result}.", p.id);
    bots.notice(&room, &esc(&t), &t, Some(&p.poll), &[]).await?;
    Ok(())
}

async fn execute(
    bots: &Bots,
    room: &Room,
    p: &Proposal,
    mut c: Charter,
    yes: usize,
    no: usize,
) -> anyhow::Result<String> {
    let power = bots.power(room).await?;
    if let Some(why) = guard(bots, &power, &p.change, &orgs(bots).await) {
        anyhow::bail!("{why}");
    }
    can_execute(bots, &power, &p.change).map_err(|e| anyhow::anyhow!(e))?;
    let done = match &p.change {
        Change::Rule { text } => {
            c.rules.push(text.clone());
            "It is now in the charter (!charter).".to_owned()
        }
        Change::Moderator { user } | Change::Power { user, .. } => {
            let level = match &p.change {
                Change::Power { level, .. } => *level,
                _ => power.level(user).max(power.moderator_level()),
            };
            let mut content = power.content.clone();
            if !content["users"].is_object() {
                content["users"] = json!({});
            }
            content["users"][user.as_str()] = json!(level);
            room.send_state_event_raw("m.room.power_levels", "", content)
                .await?;
            format!(
                "{}'s power level is now {level}.",
                bots.name(room, user).await
            )
        }
    };
    c.changes.push(json!({
        "proposal": p.id,
        "change": p.change,
        "proposer": p.proposer,
        "passed_at": bots.now().timestamp(),
        "yes": yes,
        "no": no,
    }));
    room.send_state_event_raw(CHARTER_TYPE, "", serde_json::to_value(&c)?)
        .await?;
    Ok(done)
}

/// Closes votes whose deadline has passed.
pub(crate) async fn tick(bots: &Bots) -> anyhow::Result<()> {
    let now = bots.now().timestamp();
    let due: Vec<(OwnedRoomId, u32)> = bots
        .state
        .lock()
        .await
        .proposals
        .iter()
        .filter(|p| !p.closed && p.deadline <= now)
        .map(|p| (p.room.clone(), p.id))
        .collect();
    for (room, id) in due {
        if let Err(e) = close(bots, room, id).await {
            tracing::warn!("bots: closing proposal #{id}: {e:#}");
        }
    }
    Ok(())
}

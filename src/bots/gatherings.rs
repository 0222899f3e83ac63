//! Gatherings (habit 1: meet regularly without a preset purpose): a schedule in the
//! community's local time; an invitation without an agenda goes out before each gathering,
//! reactions on it are the RSVPs, those who said yes are reminded, a notes thread opens
//! afterwards, and the anniversary of a community's first gathering is noted.
//!
//! Exactly once: the scheduler records an occurrence as fired before posting (and undoes that
//! if posting fails), under the tick lock, in the state file. After downtime, an occurrence
//! that is still ahead or under way gets its invitation late with a note; one that is over is
//! reported as missed, once.

use chrono::{DateTime, Datelike, Duration, Utc};
use matrix_sdk::{
    Room,
    ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, UserId},
};
use serde_json::Value;

use super::{
    Bots, Msg, esc,
    schedule::Schedule,
    state::{Gathering, Invitation},
};

fn ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

pub(crate) async fn command(bots: &Bots, room: &Room, msg: &Msg, args: &str) -> anyhow::Result<()> {
    let lower = args.to_lowercase();
    if lower.is_empty() || lower == "list" {
        return list(bots, room, msg).await;
    }
    if let Some(n) = lower.strip_prefix("cancel") {
        let id: u32 = n.trim().trim_start_matches('#').parse().unwrap_or(0);
        let moderator = bots.is_moderator(room, &msg.sender).await?;
        let mut state = bots.state.lock().await;
        let Some(g) = state
            .gatherings
            .iter_mut()
            .find(|g| g.id == id && g.room == room.room_id() && !g.cancelled)
        else {
            drop(state);
            let t = "No such gathering here; !gatherings lists them.";
            return bots.reply(room, msg, t, t).await;
        };
        if g.created_by != msg.sender && !moderator {
            drop(state);
            let t = "Only whoever scheduled it or a moderator can cancel it.";
            return bots.reply(room, msg, t, t).await;
        }
        g.cancelled = true;
        bots.save(&state);
        drop(state);
        let t = format!("Gathering #{id} is cancelled.");
        return bots.reply(room, msg, &t, &t).await;
    }
    let now = bots.now();
    let mut state = bots.state.lock().await;
    let tz = bots.tz(&state, room.room_id());
    let schedule = match Schedule::parse(args, now.with_timezone(&tz).date_naive()) {
        Ok(s) => s,
        Err(e) => {
            drop(state);
            let t = format!("I couldn't read that: {e}.");
            return bots.reply(room, msg, &esc(&t), &t).await;
        }
    };
    let Some(next) = schedule.next_after(now, tz) else {
        drop(state);
        let t = "That time has passed already.";
        return bots.reply(room, msg, t, t).await;
    };
    let id = state.new_id();
    state.gatherings.push(Gathering {
        id,
        room: room.room_id().to_owned(),
        schedule: schedule.clone(),
        created_by: msg.sender.clone(),
        created_at: now.timestamp(),
        last_fired: None,
        cancelled: false,
        invitations: Vec::new(),
    });
    bots.save(&state);
    drop(state);
    let when = next.with_timezone(&tz).format("%A %-d %B %Y, %H:%M");
    let t = format!(
        "Gathering #{id}: {} ({tz}). The first one is on {when}. I'll post an invitation {} hours before; no agenda needed, people just come.",
        schedule.describe(),
        bots.config.invite_hours_before
    );
    bots.reply(room, msg, &esc(&t), &t).await
}

async fn list(bots: &Bots, room: &Room, msg: &Msg) -> anyhow::Result<()> {
    let now = bots.now();
    let state = bots.state.lock().await;
    let tz = bots.tz(&state, room.room_id());
    let lines: Vec<String> = state
        .gatherings
        .iter()
        .filter(|g| g.room == room.room_id() && !g.cancelled)
        .map(|g| {
            let next = g
                .schedule
                .next_after(ts(g.last_fired.unwrap_or(0)).max(now), tz)
                .map(|n| {
                    n.with_timezone(&tz)
                        .format(", next on %A %-d %B, %H:%M")
                        .to_string()
                })
                .unwrap_or_default();
            format!("#{}: {}{next}", g.id, g.schedule.describe())
        })
        .collect();
    drop(state);
    let t = if lines.is_empty() {
        "No gatherings yet. Start one: !gathering every 2nd thursday 19:00".to_owned()
    } else {
        format!("Gatherings here ({tz}):\n{}", lines.join("\n"))
    };
    let html = esc(&t).replace('\n', "<br>");
    bots.reply(room, msg, &html, &t).await
}

enum Action {
    Invite {
        gathering: u32,
        room: OwnedRoomId,
        occurrence: i64,
        previous: Option<i64>,
        late: bool,
        missed: usize,
    },
    Missed {
        room: OwnedRoomId,
        count: usize,
        last: i64,
    },
    Remind {
        room: OwnedRoomId,
        invitation: OwnedEventId,
        occurrence: i64,
        yes: Vec<OwnedUserId>,
    },
    Notes {
        room: OwnedRoomId,
        occurrence: i64,
    },
    Anniversary {
        room: OwnedRoomId,
        years: i32,
    },
}

/// Decides what is due (recording it), then posts.
pub(crate) async fn tick(bots: &Bots) -> anyhow::Result<()> {
    let now = bots.now();
    let cfg = &bots.config;
    let invite_ahead = Duration::hours(cfg.invite_hours_before.into());
    let remind_ahead = Duration::minutes(cfg.remind_minutes_before.into());
    let over_after = Duration::hours(cfg.notes_hours_after.into());
    let mut actions = Vec::new();
    {
        let mut state = bots.state.lock().await;
        let tzs: Vec<_> = state
            .gatherings
            .iter()
            .map(|g| bots.tz(&state, &g.room))
            .collect();
        for (g, tz) in state.gatherings.iter_mut().zip(tzs) {
            if g.cancelled {
                continue;
            }
            let previous = g.last_fired;
            let mut after = ts(g.last_fired.unwrap_or(g.created_at));
            let mut missed = 0;
            let mut last_missed = None;
            let mut next = g.schedule.next_after(after, tz);
            while let Some(n) = next.filter(|n| now >= *n + over_after) {
                missed += 1;
                last_missed = Some(n.timestamp());
                after = n;
                next = g.schedule.next_after(after, tz);
            }
            if let Some(n) = next.filter(|n| now >= *n - invite_ahead) {
                g.last_fired = Some(n.timestamp());
                actions.push(Action::Invite {
                    gathering: g.id,
                    room: g.room.clone(),
                    occurrence: n.timestamp(),
                    previous,
                    late: now > n,
                    missed,
                });
            } else if let Some(last) = last_missed {
                g.last_fired = Some(last);
                actions.push(Action::Missed {
                    room: g.room.clone(),
                    count: missed,
                    last,
                });
            }
            for inv in &mut g.invitations {
                let occ = ts(inv.occurrence);
                if !inv.reminded && now >= occ - remind_ahead {
                    inv.reminded = true;
                    let yes: Vec<OwnedUserId> = inv
                        .rsvps
                        .iter()
                        .filter(|(_, a)| *a == "yes")
                        .map(|(u, _)| u.clone())
                        .collect();
                    if !yes.is_empty() && now < occ {
                        actions.push(Action::Remind {
                            room: g.room.clone(),
                            invitation: inv.event_id.clone(),
                            occurrence: inv.occurrence,
                            yes,
                        });
                    }
                }
                if !inv.notes_opened && now >= occ + over_after {
                    inv.notes_opened = true;
                    actions.push(Action::Notes {
                        room: g.room.clone(),
                        occurrence: inv.occurrence,
                    });
                }
            }
            if matches!(g.schedule, Schedule::Once { .. })
                && next.is_none()
                && g.last_fired.is_some()
            {
                let done = g.invitations.iter().all(|i| i.notes_opened);
                if done {
                    g.cancelled = true;
                }
            }
        }
        let rooms: Vec<OwnedRoomId> = state.rooms.keys().cloned().collect();
        for room in rooms {
            let tz = bots.tz(&state, &room);
            let today = now.with_timezone(&tz).date_naive();
            let r = state.room(&room);
            if let Some(first) = r.first_gathering {
                let years = today.year() - first.year();
                if years > 0
                    && today.month() == first.month()
                    && today.day() == first.day()
                    && r.anniversary_noted != Some(today.year())
                {
                    r.anniversary_noted = Some(today.year());
                    actions.push(Action::Anniversary { room, years });
                }
            }
        }
        if !actions.is_empty() {
            bots.save(&state);
        }
    }
    for action in actions {
        if let Err(e) = post(bots, action).await {
            tracing::warn!("bots: gathering: {e:#}");
        }
    }
    Ok(())
}

async fn post(bots: &Bots, action: Action) -> anyhow::Result<()> {
    match action {
        Action::Invite {
            gathering,
            room,
            occurrence,
            previous,
            late,
            missed,
        } => {
            let sent = invite(bots, &room, occurrence, late, missed).await;
            let mut state = bots.state.lock().await;
            match sent {
                Ok(event_id) => {
                    let tz = bots.tz(&state, &room);
                    let date = ts(occurrence).with_timezone(&tz).date_naive();
                    let r = state.room(&room);
                    r.first_gathering.get_or_insert(date);
                    if let Some(g) = state.gatherings.iter_mut().find(|g| g.id == gathering) {
                        g.invitations.push(Invitation {
                            occurrence,
                            event_id,
                            rsvps: Default::default(),
                            reactions: Default::default(),
                            reminded: false,
                            notes_opened: false,
                        });
                    }
                    bots.save(&state);
                    Ok(())
                }
                Err(e) => {
                    // Not posted: the next tick tries again.
                    if let Some(g) = state.gatherings.iter_mut().find(|g| g.id == gathering) {
                        g.last_fired = previous;
                    }
                    bots.save(&state);
                    Err(e)
                }
            }
        }
        Action::Missed { room, count, last } => {
            let Some(r) = bots.room(&room) else {
                return Ok(());
            };
            let tz = bots.tz(&*bots.state.lock().await, &room);
            let when = ts(last).with_timezone(&tz).format("%A %-d %B, %H:%M");
            let t = if count == 1 {
                format!(
                    "I was offline and missed announcing the gathering of {when}. Sorry! The next invitation will come on time."
                )
            } else {
                format!(
                    "I was offline and missed announcing {count} gatherings, the last on {when}. Sorry! The next invitation will come on time."
                )
            };
            bots.notice(&r, &esc(&t), &t, None, &[]).await?;
            Ok(())
        }
        Action::Remind {
            room,
            invitation,
            occurrence,
            yes,
        } => {
            let Some(r) = bots.room(&room) else {
                return Ok(());
            };
            let tz = bots.tz(&*bots.state.lock().await, &room);
            let when = ts(occurrence).with_timezone(&tz).format("%H:%M");
            let mut pills = Vec::new();
            let mut names = Vec::new();
            for u in &yes {
                pills.push(bots.pill(&r, u).await);
                names.push(bots.name(&r, u).await);
            }
            let html = format!("⏰ {}: see you at {when}!", pills.join(", "));
            let plain = format!("⏰ {}: see you at {when}!", names.join(", "));
            bots.notice(&r, &html, &plain, Some(&invitation), &yes)
                .await?;
            Ok(())
        }
        Action::Notes { room, occurrence } => {
            let Some(r) = bots.room(&room) else {
                return Ok(());
            };
            let tz = bots.tz(&*bots.state.lock().await, &room);
            let day = ts(occurrence).with_timezone(&tz).format("%A %-d %B");
            let t = format!(
                "📝 Notes from the gathering on {day}: who came, what you talked about, photos, anything you want to remember. Reply in this thread."
            );
            let root = bots.notice(&r, &esc(&t), &t, None, &[]).await?;
            let t = "Add your notes here 👇";
            bots.notice(&r, t, t, Some(&root), &[]).await?;
            Ok(())
        }
        Action::Anniversary { room, years } => {
            let Some(r) = bots.room(&room) else {
                return Ok(());
            };
            let t = if years == 1 {
                "🎂 One year ago today, this community had its first gathering. Here's to the people who keep coming!".to_owned()
            } else {
                format!(
                    "🎂 {years} years ago today, this community had its first gathering. Here's to the people who keep coming!"
                )
            };
            bots.notice(&r, &esc(&t), &t, None, &[]).await?;
            Ok(())
        }
    }
}

async fn invite(
    bots: &Bots,
    room: &OwnedRoomId,
    occurrence: i64,
    late: bool,
    missed: usize,
) -> anyhow::Result<OwnedEventId> {
    let r = bots
        .room(room)
        .ok_or_else(|| anyhow::anyhow!("not in room {room}"))?;
    let tz = bots.tz(&*bots.state.lock().await, room);
    let when = ts(occurrence).with_timezone(&tz).format("%A %-d %B, %H:%M");
    let mut t = format!(
        "🌿 Gathering: {when} ({tz}). No agenda and no goal: come as you are and enjoy each other's company. React 👍 if you'll come, 🤔 if maybe."
    );
    if late {
        t.push_str(" (Sorry, this comes late: I was offline.)");
    }
    if missed > 0 {
        t.push_str(&format!(
            " (While I was offline I missed announcing {missed} earlier gathering{}.)",
            if missed == 1 { "" } else { "s" }
        ));
    }
    bots.notice(&r, &esc(&t), &t, None, &[]).await
}

fn answer(key: &str) -> Option<&'static str> {
    if key.starts_with('👍') || key.starts_with('✅') || key.starts_with("🙋") {
        Some("yes")
    } else if key.starts_with('🤔') {
        Some("maybe")
    } else if key.starts_with('👎') || key.starts_with('❌') {
        Some("no")
    } else {
        None
    }
}

/// A reaction on an invitation is an RSVP.
pub(crate) async fn on_reaction(
    bots: &Bots,
    room: &Room,
    sender: &UserId,
    event_id: &EventId,
    content: &Value,
) {
    let rel = &content["m.relates_to"];
    let (Some(target), Some(key)) = (rel["event_id"].as_str(), rel["key"].as_str()) else {
        return;
    };
    let Some(a) = answer(key) else { return };
    let mut state = bots.state.lock().await;
    let Some(inv) = state
        .gatherings
        .iter_mut()
        .filter(|g| g.room == room.room_id())
        .flat_map(|g| g.invitations.iter_mut())
        .find(|i| i.event_id.as_str() == target)
    else {
        return;
    };
    inv.rsvps.insert(sender.to_owned(), a.to_owned());
    inv.reactions
        .insert(event_id.to_owned(), (sender.to_owned(), a.to_owned()));
    bots.save(&state);
}

/// A redacted reaction takes its RSVP back.
pub(crate) async fn on_redaction(bots: &Bots, v: &Value) {
    let Some(redacts) = v["redacts"].as_str().or(v["content"]["redacts"].as_str()) else {
        return;
    };
    let mut state = bots.state.lock().await;
    let mut changed = false;
    for inv in state
        .gatherings
        .iter_mut()
        .flat_map(|g| g.invitations.iter_mut())
    {
        if let Some(k) = inv
            .reactions
            .keys()
            .find(|k| k.as_str() == redacts)
            .cloned()
            && let Some((user, a)) = inv.reactions.remove(&k)
        {
            if inv.rsvps.get(&user) == Some(&a) {
                inv.rsvps.remove(&user);
            }
            changed = true;
        }
    }
    if changed {
        bots.save(&state);
    }
}

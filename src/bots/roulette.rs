//! Coffee roulette (habit 1, in pairs): members opt in with `!roulette join`; every week (or
//! `bots.roulette_every_weeks`) at `bots.roulette_day`/`bots.roulette_time` in the community's
//! time zone, the bots pair them, preferring people from different organisations and who have
//! not met this way recently, and open a direct chat per pair with a short introduction.
//! A round missed while the server was down runs once, late.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveTime, Utc, Weekday};
use matrix_sdk::{
    Room,
    ruma::{OwnedRoomId, OwnedUserId, api::client::room::create_room},
};

use super::{Bots, Msg, esc, schedule::Schedule, state::Profile};

pub(crate) async fn command(bots: &Bots, room: &Room, msg: &Msg, args: &str) -> anyhow::Result<()> {
    let verb = args.trim().to_lowercase();
    let mut state = bots.state.lock().await;
    let r = &mut state.room(room.room_id()).roulette;
    let t = match verb.as_str() {
        "join" => {
            r.members.insert(msg.sender.clone());
            "You're in: now and then I'll pair you with someone for a coffee (or a call). !roulette leave to stop."
        }
        "leave" => {
            r.members.remove(&msg.sender);
            "You're out of the coffee roulette. Come back any time with !roulette join."
        }
        _ => {
            let n = r.members.len();
            drop(state);
            let t = format!(
                "{n} member(s) take part in the coffee roulette here ({} at {}, every {} week(s)). !roulette join / !roulette leave",
                bots.config.roulette_day,
                bots.config.roulette_time,
                bots.config.roulette_every_weeks
            );
            return bots.reply(room, msg, &esc(&t), &t).await;
        }
    };
    bots.save(&state);
    drop(state);
    bots.reply(room, msg, t, t).await
}

fn schedule(bots: &Bots, since: DateTime<Utc>, tz: chrono_tz::Tz) -> Option<Schedule> {
    Some(Schedule::Weekly {
        weekday: bots.config.roulette_day.parse::<Weekday>().ok()?,
        time: NaiveTime::parse_from_str(&bots.config.roulette_time, "%H:%M").ok()?,
        weeks: bots.config.roulette_every_weeks.max(1),
        anchor: since.with_timezone(&tz).date_naive(),
    })
}

/// Pairs members at the lowest cost: same organisation 10, met in a recent round 5 (per time).
/// Exhaustive for small groups, greedy beyond; an odd one out joins the pair that suits best.
pub(crate) fn pair(
    members: &[OwnedUserId],
    profiles: &BTreeMap<OwnedUserId, Profile>,
    recent: &[(OwnedUserId, OwnedUserId)],
) -> Vec<Vec<OwnedUserId>> {
    let org = |u: &OwnedUserId| {
        profiles
            .get(u)
            .and_then(|p| p.org.as_ref())
            .map(|o| o.trim().to_lowercase())
    };
    let cost = |a: &OwnedUserId, b: &OwnedUserId| -> i64 {
        let mut c = 0;
        if org(a).is_some() && org(a) == org(b) {
            c += 10;
        }
        c += 5 * recent
            .iter()
            .filter(|(x, y)| (x == a && y == b) || (x == b && y == a))
            .count() as i64;
        c
    };
    let n = members.len();
    if n < 2 {
        return Vec::new();
    }
    let (even, odd) = if n % 2 == 1 {
        (&members[..n - 1], Some(&members[n - 1]))
    } else {
        (members, None)
    };
    let pairs: Vec<(usize, usize)> = if even.len() <= 12 {
        fn best(
            left: &mut Vec<usize>,
            cost: &dyn Fn(usize, usize) -> i64,
        ) -> (i64, Vec<(usize, usize)>) {
            if left.is_empty() {
                return (0, Vec::new());
            }
            let a = left.remove(0);
            let mut out = (i64::MAX, Vec::new());
            for i in 0..left.len() {
                let b = left.remove(i);
                let (c, mut rest) = best(left, cost);
                let c = c + cost(a, b);
                if c < out.0 {
                    rest.push((a, b));
                    out = (c, rest);
                }
                left.insert(i, b);
            }
            left.insert(0, a);
            out
        }
        let mut left: Vec<usize> = (0..even.len()).collect();
        best(&mut left, &|a, b| cost(&even[a], &even[b])).1
    } else {
        let mut left: Vec<usize> = (0..even.len()).collect();
        let mut out = Vec::new();
        while left.len() >= 2 {
            let a = left.remove(0);
            let (i, _) = left
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| cost(&even[a], &even[**b]))
                .unwrap_or((0, &0));
            out.push((a, left.remove(i)));
        }
        out
    };
    let mut groups: Vec<Vec<OwnedUserId>> = pairs
        .into_iter()
        .map(|(a, b)| vec![even[a].clone(), even[b].clone()])
        .collect();
    if let Some(extra) = odd
        && let Some(g) = groups
            .iter_mut()
            .min_by_key(|g| g.iter().map(|u| cost(u, extra)).sum::<i64>())
    {
        g.push(extra.clone());
    }
    groups
}

/// Runs due rounds.
pub(crate) async fn tick(bots: &Bots) -> anyhow::Result<()> {
    let now = bots.now();
    let mut due: Vec<(OwnedRoomId, i64, bool)> = Vec::new();
    {
        let mut state = bots.state.lock().await;
        let rooms: Vec<OwnedRoomId> = state
            .rooms
            .iter()
            .filter(|(_, r)| r.enabled.contains_key(&super::state::Habit::Roulette))
            .map(|(id, _)| id.clone())
            .collect();
        for room in rooms {
            let tz = bots.tz(&state, &room);
            let r = &mut state.room(&room).roulette;
            let since = DateTime::from_timestamp(r.since, 0).unwrap_or_default();
            let Some(s) = schedule(bots, since, tz) else {
                continue;
            };
            let mut after =
                DateTime::from_timestamp(r.last_fired.unwrap_or(r.since), 0).unwrap_or_default();
            let mut latest = None;
            while let Some(n) = s.next_after(after, tz).filter(|n| *n <= now) {
                latest = Some(n);
                after = n;
            }
            tracing::debug!(%room, ?latest, since = r.since, "bots: roulette check");
            if let Some(n) = latest {
                r.last_fired = Some(n.timestamp());
                due.push((room, n.timestamp(), now - n > Duration::hours(1)));
            }
        }
        if !due.is_empty() {
            bots.save(&state);
        }
    }
    for (room, at, late) in due {
        if let Err(e) = round(bots, &room, at, late).await {
            tracing::warn!("bots: roulette in {room}: {e:#}");
        }
    }
    Ok(())
}

async fn round(bots: &Bots, room_id: &OwnedRoomId, at: i64, late: bool) -> anyhow::Result<()> {
    let Some(room) = bots.room(room_id) else {
        return Ok(());
    };
    let joined = bots.members(&room).await?;
    let (members, profiles, recent) = {
        let state = bots.state.lock().await;
        let r = state
            .rooms
            .get(room_id)
            .map(|r| r.roulette.clone())
            .unwrap_or_default();
        let members: Vec<OwnedUserId> = r
            .members
            .iter()
            .filter(|u| joined.contains(u))
            .cloned()
            .collect();
        // "Recently": the last eight weeks.
        let recent: Vec<(OwnedUserId, OwnedUserId)> = r
            .history
            .iter()
            .filter(|(_, _, t)| at - t < 8 * 7 * 24 * 3600)
            .map(|(a, b, _)| (a.clone(), b.clone()))
            .collect();
        (members, state.profiles.clone(), recent)
    };
    let groups = pair(&members, &profiles, &recent);
    tracing::debug!(?members, ?groups, "bots: roulette round");
    if groups.is_empty() {
        return Ok(());
    }
    {
        let mut state = bots.state.lock().await;
        let r = &mut state.room(room_id).roulette;
        for g in &groups {
            for (i, a) in g.iter().enumerate() {
                for b in &g[i + 1..] {
                    let (x, y) = if a < b { (a, b) } else { (b, a) };
                    r.history.push((x.clone(), y.clone(), at));
                }
            }
        }
        bots.save(&state);
    }
    for g in &groups {
        let mut names = Vec::new();
        let mut about = Vec::new();
        for u in g {
            let name = bots.name(&room, u).await;
            if let Some(x) = profiles
                .get(u)
                .and_then(|p| p.cares_about.as_ref().or(p.working_on.as_ref()))
            {
                about.push(format!("{name}: {x}"));
            }
            names.push(name);
        }
        let mut req = create_room::v3::Request::new();
        req.name = Some(format!("☕ {}", names.join(" & ")));
        req.invite = g.clone();
        req.is_direct = true;
        req.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
        let dm = bots.client.create_room(req).await?;
        let mut t = format!(
            "☕ Hello {}! You're this round's coffee pair from {}. No agenda: find a time that suits you, online or in person, and just talk.",
            names.join(" and "),
            room.name().unwrap_or_else(|| "your community".into())
        );
        if !about.is_empty() {
            t.push_str(&format!(" In your own words: {}.", about.join("; ")));
        }
        if late {
            t.push_str(" (This comes late: I was offline.)");
        }
        bots.notice(&dm, &esc(&t), &t, None, g).await?;
    }
    let t = format!(
        "☕ Coffee roulette: {} pair(s) made; look for a new direct chat from me.",
        groups.len()
    );
    bots.notice(&room, &esc(&t), &t, None, &[]).await?;
    Ok(())
}

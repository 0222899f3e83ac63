//! People (habit 2: know each other as individuals): members describe themselves in their own
//! words (`!me …`), `!whois` shows them, `!ask <topic>` suggests whom to ask and why, across
//! organisations, and a newcomer is invited once to introduce themselves. Profiles belong to
//! the person, not to a room: they are the same in every room the bots are in.

use matrix_sdk::{
    Room,
    ruma::{EventId, OwnedUserId, UserId},
};
use serde_json::Value;

use super::{
    Bots, Msg, esc,
    state::{Habit, Profile},
};

/// Reads `@bob:server`, `@bob` (this server) or a member's display name.
pub(crate) async fn resolve_user(bots: &Bots, room: &Room, token: &str) -> Option<OwnedUserId> {
    let token = token.trim().trim_end_matches([':', ',']);
    if token.is_empty() {
        return None;
    }
    if let Ok(u) = UserId::parse(token) {
        return Some(u);
    }
    if let Some(local) = token.strip_prefix('@')
        && let Ok(u) = UserId::parse(format!("@{local}:{}", bots.user_id.server_name()))
    {
        return Some(u);
    }
    let wanted = token.trim_start_matches('@').to_lowercase();
    for m in room
        .members_no_sync(matrix_sdk::RoomMemberships::JOIN)
        .await
        .ok()?
    {
        if m.display_name().map(str::to_lowercase).as_deref() == Some(wanted.as_str()) {
            return Some(m.user_id().to_owned());
        }
    }
    None
}

const FIELDS: [(&str, &str); 5] = [
    ("cares about", "cares about"),
    ("working on", "is working on"),
    ("can help with", "can help with"),
    ("former org", "used to be at"),
    ("org", "is at"),
];

fn field<'a>(p: &'a mut Profile, name: &str) -> &'a mut Option<String> {
    match name {
        "cares about" => &mut p.cares_about,
        "working on" => &mut p.working_on,
        "can help with" => &mut p.can_help_with,
        "former org" => &mut p.former_orgs,
        _ => &mut p.org,
    }
}

fn describe(p: &Profile) -> Vec<(&'static str, String)> {
    let mut p = p.clone();
    FIELDS
        .iter()
        .filter_map(|(name, verb)| field(&mut p, name).clone().map(|v| (*verb, v)))
        .collect()
}

async fn show(
    bots: &Bots,
    room: &Room,
    msg: &Msg,
    user: &UserId,
    p: &Profile,
) -> anyhow::Result<()> {
    let name = bots.name(room, user).await;
    let mut html = format!("<b>{}</b>, in their own words:<ul>", esc(&name));
    let mut plain = format!("{name}, in their own words:");
    for (verb, v) in describe(p) {
        html.push_str(&format!("<li>{verb} {}</li>", esc(&v)));
        plain.push_str(&format!("\n- {verb} {v}"));
    }
    html.push_str("</ul>");
    bots.reply(room, msg, &html, &plain).await
}

/// `!me`, `!me clear`, `!me <field> <words>` (`-` clears a field).
pub(crate) async fn me(bots: &Bots, room: &Room, msg: &Msg, args: &str) -> anyhow::Result<()> {
    let lower = args.to_lowercase();
    if args.is_empty() {
        let p = bots.state.lock().await.profiles.get(&msg.sender).cloned();
        return match p.filter(|p| !p.is_empty()) {
            Some(p) => show(bots, room, msg, &msg.sender.clone(), &p).await,
            None => {
                let t = "You haven't said anything about yourself yet. Try !me cares about …, !me working on …, !me can help with …, !me org …";
                bots.reply(room, msg, &esc(t), t).await
            }
        };
    }
    if lower == "clear" {
        let mut state = bots.state.lock().await;
        state.profiles.remove(&msg.sender);
        bots.save(&state);
        drop(state);
        let t = "Forgotten: your entry is empty now.";
        return bots.reply(room, msg, t, t).await;
    }
    let Some((name, _)) = FIELDS.iter().find(|(name, _)| {
        lower.starts_with(name) && lower[name.len()..].starts_with(char::is_whitespace)
            || lower == *name
    }) else {
        let t = "Start with one of: cares about, working on, can help with, org, former org.";
        return bots.reply(room, msg, t, t).await;
    };
    let value = args[name.len()..].trim();
    let mut state = bots.state.lock().await;
    let p = state.profiles.entry(msg.sender.clone()).or_default();
    *field(p, name) = (!value.is_empty() && value != "-").then(|| value.to_owned());
    let p = p.clone();
    bots.save(&state);
    drop(state);
    show(bots, room, msg, &msg.sender.clone(), &p).await
}

/// `!me is @person:server`, said by a bridge's ghost once the person behind it proved (to the
/// bridge) that the bridged identity is theirs: the ghost's entry fills in what the person's
/// own entry leaves empty, and thanks to and from the ghost become theirs, so the community
/// sees one person. Only a ghost of a registered bridge may say it, only of a local person who
/// is not a ghost.
pub(crate) async fn merge(bots: &Bots, room: &Room, msg: &Msg, person: &str) -> anyhow::Result<()> {
    let ghost = msg.sender.clone();
    let person = UserId::parse(person.trim()).ok();
    let allowed = bots.appservices.exclusive_user_owner(&ghost).is_some()
        && person.as_ref().is_some_and(|p| {
            p.server_name() == bots.user_id.server_name()
                && bots.appservices.exclusive_user_owner(p).is_none()
                && *p != bots.user_id
        });
    let Some(person) = person.filter(|_| allowed) else {
        let t = "Only a bridge says who its people are.";
        return bots.reply(room, msg, t, t).await;
    };
    {
        let mut state = bots.state.lock().await;
        if let Some(old) = state.profiles.remove(&ghost) {
            let p = state.profiles.entry(person.clone()).or_default();
            for (name, _) in FIELDS {
                let mut old = old.clone();
                let theirs = field(p, name);
                if theirs.is_none() {
                    *theirs = field(&mut old, name).clone();
                }
            }
        }
        for t in &mut state.thanks {
            if t.from == ghost {
                t.from = person.clone();
            }
            if t.to == ghost {
                t.to = person.clone();
            }
        }
        bots.save(&state);
    }
    let name = bots.name(room, &person).await;
    let t = format!(
        "{name} is the same person who wrote here through the bridge: their entry and thanks are theirs now."
    );
    bots.reply(room, msg, &esc(&t), &t).await
}

pub(crate) async fn whois(bots: &Bots, room: &Room, msg: &Msg, args: &str) -> anyhow::Result<()> {
    let Some(user) = resolve_user(bots, room, args).await else {
        let t = "Say who: !whois @user";
        return bots.reply(room, msg, t, t).await;
    };
    let p = bots.state.lock().await.profiles.get(&user).cloned();
    match p.filter(|p| !p.is_empty()) {
        Some(p) => show(bots, room, msg, &user, &p).await,
        None => {
            let t = format!(
                "{} hasn't said anything about themselves yet. Why not ask them?",
                bots.name(room, &user).await
            );
            bots.reply(room, msg, &esc(&t), &t).await
        }
    }
}

const STOP: &[&str] = &[
    "the", "and", "for", "with", "about", "who", "what", "how", "can", "someone", "anyone",
    "knows", "know", "help", "me", "our", "your", "some",
];

/// A member to ask: score, who, and the own words that matched.
type Suggestion = (i32, OwnedUserId, Vec<(&'static str, String)>);

/// `!ask <topic>`: members whose own words match the topic, people from other organisations
/// than the asker's first, each with the words that matched.
pub(crate) async fn ask(bots: &Bots, room: &Room, msg: &Msg, topic: &str) -> anyhow::Result<()> {
    let words: Vec<String> = topic
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '+' && c != '#')
        .filter(|w| w.len() >= 2 && !STOP.contains(w))
        .map(str::to_owned)
        .collect();
    if words.is_empty() {
        let t = "Ask about something: !ask gardening";
        return bots.reply(room, msg, t, t).await;
    }
    let candidates: Vec<OwnedUserId> = if msg.dm {
        bots.state.lock().await.profiles.keys().cloned().collect()
    } else {
        bots.members(room).await?
    };
    let state = bots.state.lock().await;
    let asker_org = state
        .profiles
        .get(&msg.sender)
        .and_then(|p| p.org.clone())
        .map(|o| o.to_lowercase());
    let mut found: Vec<Suggestion> = Vec::new();
    for user in candidates {
        if user == msg.sender {
            continue;
        }
        let Some(p) = state.profiles.get(&user) else {
            continue;
        };
        let mut score = 0;
        let mut why = Vec::new();
        for (weight, verb, text) in [
            (3, "can help with", &p.can_help_with),
            (2, "is working on", &p.working_on),
            (1, "cares about", &p.cares_about),
        ] {
            let Some(text) = text else { continue };
            let t = text.to_lowercase();
            if words.iter().any(|w| t.contains(w.as_str())) {
                score += weight;
                why.push((verb, text.clone()));
            }
        }
        if score == 0 {
            continue;
        }
        let org = p.org.as_ref().map(|o| o.to_lowercase());
        if asker_org.is_some() && org != asker_org {
            score += 2;
        }
        found.push((score, user, why));
    }
    drop(state);
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    found.truncate(3);
    if found.is_empty() {
        let t = format!(
            "Nobody has mentioned “{topic}” yet. Ask the room: someone may know someone. (Members can add what they can help with: !me can help with …)"
        );
        return bots.reply(room, msg, &esc(&t), &t).await;
    }
    let mut html = format!("About “{}”, you could ask:<ul>", esc(topic));
    let mut plain = format!("About “{topic}”, you could ask:");
    for (_, user, why) in &found {
        let reasons: Vec<String> = why.iter().map(|(v, t)| format!("{v} {t}")).collect();
        let reasons = reasons.join("; ");
        html.push_str(&format!(
            "<li>{}: {}</li>",
            bots.pill(room, user).await,
            esc(&reasons)
        ));
        plain.push_str(&format!(
            "\n- {} ({user}): {reasons}",
            bots.name(room, user).await
        ));
    }
    html.push_str("</ul>");
    bots.reply(room, msg, &html, &plain).await
}

/// A member joined: invite them, once ever per room, to introduce themselves.
pub(crate) async fn on_member(
    bots: &Bots,
    room: &Room,
    v: &Value,
    _event_id: &EventId,
) -> anyhow::Result<()> {
    let content = &v["content"];
    if content["membership"] != "join" || v["unsigned"]["prev_content"]["membership"] == "join" {
        return Ok(());
    }
    let Some(user) = v["state_key"].as_str().and_then(|s| UserId::parse(s).ok()) else {
        return Ok(());
    };
    if user == bots.user_id {
        return Ok(());
    }
    {
        let mut state = bots.state.lock().await;
        let Some(settings) = state.rooms.get_mut(room.room_id()) else {
            return Ok(());
        };
        // Events arrive in order: a join seen after the habit was turned on is a newcomer's.
        if !settings.enabled.contains_key(&Habit::People) || !settings.greeted.insert(user.clone())
        {
            return Ok(());
        }
        bots.save(&state);
    }
    let name = esc(&content["displayname"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| user.localpart().to_owned()));
    let html = format!(
        "Welcome, <a href=\"https://matrix.to/#/{user}\">{name}</a>! People here like to know each other as people. If you like, tell us a little about yourself: <code>!me cares about …</code>, <code>!me working on …</code>, <code>!me can help with …</code>. (I'll only ask this once.)"
    );
    let plain = format!(
        "Welcome, {}! People here like to know each other as people. If you like, tell us a little about yourself: !me cares about …, !me working on …, !me can help with …. (I'll only ask this once.)",
        content["displayname"].as_str().unwrap_or(user.localpart())
    );
    bots.notice(room, &html, &plain, None, &[user]).await?;
    Ok(())
}

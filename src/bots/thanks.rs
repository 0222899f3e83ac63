//! Thanks (habit 3: enjoy the relationship itself): `!thanks @user for …` posts a warm note
//! and remembers it, `!thanks mine` shows what others thanked you for. No counts, no
//! leaderboards: thanks are words between people, not a score.

use matrix_sdk::Room;

use super::{Bots, Msg, esc, people::resolve_user, state::Thanks};

pub(crate) async fn command(bots: &Bots, room: &Room, msg: &Msg, args: &str) -> anyhow::Result<()> {
    if args.eq_ignore_ascii_case("mine") {
        return mine(bots, room, msg).await;
    }
    let (who, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
    let Some(to) = resolve_user(bots, room, who).await else {
        let t = "Say who: !thanks @user for …";
        return bots.reply(room, msg, t, t).await;
    };
    let reason = rest.trim();
    let reason = reason
        .strip_prefix("for ")
        .or_else(|| reason.strip_prefix("For "))
        .unwrap_or(reason)
        .trim();
    if to == msg.sender || to == bots.user_id {
        let t = "Thanks are for someone else. Who helped you?";
        return bots.reply(room, msg, t, t).await;
    }
    {
        let mut state = bots.state.lock().await;
        state.thanks.push(Thanks {
            from: msg.sender.clone(),
            to: to.clone(),
            room: room.room_id().to_owned(),
            reason: reason.to_owned(),
            ts: bots.now().timestamp(),
        });
        bots.save(&state);
    }
    let (from_name, to_name) = (
        bots.name(room, &msg.sender).await,
        bots.name(room, &to).await,
    );
    let (from_pill, to_pill) = (
        bots.pill(room, &msg.sender).await,
        bots.pill(room, &to).await,
    );
    let (html, plain) = if reason.is_empty() {
        (
            format!("💐 {from_pill} thanks {to_pill}!"),
            format!("💐 {from_name} thanks {to_name}!"),
        )
    } else {
        (
            format!(
                "💐 {from_pill} thanks {to_pill} for {}.",
                esc(reason.trim_end_matches('.'))
            ),
            format!(
                "💐 {from_name} thanks {to_name} for {}.",
                reason.trim_end_matches('.')
            ),
        )
    };
    bots.notice(room, &html, &plain, None, &[to]).await?;
    Ok(())
}

async fn mine(bots: &Bots, room: &Room, msg: &Msg) -> anyhow::Result<()> {
    let got: Vec<Thanks> = {
        let state = bots.state.lock().await;
        state
            .thanks
            .iter()
            .filter(|t| t.to == msg.sender)
            .cloned()
            .collect()
    };
    if got.is_empty() {
        let t = "Nobody has thanked you through me yet. It will come!";
        return bots.reply(room, msg, t, t).await;
    }
    let mut html = String::from("What others thanked you for:<ul>");
    let mut plain = String::from("What others thanked you for:");
    for t in &got {
        let from = bots.name(room, &t.from).await;
        let date = chrono::DateTime::from_timestamp(t.ts, 0)
            .map(|d| d.date_naive().to_string())
            .unwrap_or_default();
        let why = if t.reason.is_empty() {
            "(no reason needed)".to_owned()
        } else {
            t.reason.clone()
        };
        html.push_str(&format!("<li>{} ({date}): {}</li>", esc(&from), esc(&why)));
        plain.push_str(&format!("\n- {from} ({date}): {why}"));
    }
    html.push_str("</ul>");
    bots.reply(room, msg, &html, &plain).await
}

//! Claiming a bridged identity. Someone who was bridged (a mail address, an IRC nick, an
//! XMPP address) and now has a Matrix account of their own asks for a code from that account
//! (`!claim …`), and proves the remote identity is theirs with it: the code is mailed to the
//! address, or they say it from the nick or the address. Once proven, the bridge links the two:
//! it shows the remote identity as their account (double puppeting, see [`double_puppet`]),
//! no longer as a ghost.
//!
//! A Matrix user has at most one claim pending (a new one replaces it), so the store is
//! bounded by the number of people who ask.

use std::{
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use rand::{Rng, distributions::Uniform};

use crate::{Client, Error, Registration, Store};

/// Store namespace of claims and links.
const NS: &str = "claim";
/// How long a code is good for, in seconds.
pub const CODE_TTL_SECS: u64 = 3600;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A claim waiting for its proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The Matrix user who asked.
    pub user: String,
    /// The remote identity they claim (as the bridge names it: an address, `network/nick`).
    pub remote: String,
}

/// A fresh random code: 8 letters and digits, without look-alikes.
pub fn start_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..8)
        .map(|_| ALPHABET[rng.sample(Uniform::new(0, ALPHABET.len()))] as char)
        .collect()
}

/// Starts a claim of `remote` by `user`; returns the code that proves it (8 letters and
/// digits, without look-alikes). Replaces the user's earlier pending claim.
pub fn start(store: &Store, user: &str, remote: &str) -> Result<String, Error> {
    let code = start_code();
    if let Some(old) = store.get(NS, &format!("user\t{user}"))? {
        store.remove(NS, &format!("code\t{old}"))?;
    }
    let expires = now() + CODE_TTL_SECS;
    store.set_all(&[
        (
            NS,
            &format!("code\t{code}"),
            &format!("{user}\t{remote}\t{expires}"),
        ),
        (NS, &format!("user\t{user}"), &code),
    ])?;
    Ok(code)
}

/// The pending claim a code stands for, if it has not expired; `accept` decides whether this
/// proof fits it (the right sender, the right remote identity). An accepted claim is used up.
pub fn prove(
    store: &Store,
    code: &str,
    accept: impl FnOnce(&Pending) -> bool,
) -> Result<Option<Pending>, Error> {
    let code = code.trim().to_ascii_uppercase();
    let Some(value) = store.get(NS, &format!("code\t{code}"))? else {
        return Ok(None);
    };
    let mut parts = value.splitn(3, '\t');
    let (user, remote, expires) = (parts.next(), parts.next(), parts.next());
    let (Some(user), Some(remote), Some(expires)) = (user, remote, expires) else {
        return Ok(None);
    };
    let pending = Pending {
        user: user.to_owned(),
        remote: remote.to_owned(),
    };
    if expires.parse::<u64>().unwrap_or(0) < now() {
        store.remove(NS, &format!("code\t{code}"))?;
        return Ok(None);
    }
    if !accept(&pending) {
        return Ok(None);
    }
    store.remove(NS, &format!("code\t{code}"))?;
    store.remove(NS, &format!("user\t{}", pending.user))?;
    Ok(Some(pending))
}

/// Links a proven remote identity to its Matrix user (replacing an earlier link of either).
pub fn link(store: &Store, remote: &str, user: &str) -> Result<(), Error> {
    if let Some(old) = store.get(NS, &format!("remote-of\t{user}"))? {
        store.remove(NS, &format!("linked\t{old}"))?;
    }
    store.set_all(&[
        (NS, &format!("linked\t{remote}"), user),
        (NS, &format!("remote-of\t{user}"), remote),
    ])
}

/// Undoes `user`'s link, if any; returns the remote identity it was linked to. From then on
/// the bridge shows that identity by its ghost again, and relays `user` as anyone else.
pub fn unlink(store: &Store, user: &str) -> Result<Option<String>, Error> {
    let Some(remote) = remote_of(store, user)? else {
        return Ok(None);
    };
    store.remove(NS, &format!("remote-of\t{user}"))?;
    if linked_user(store, &remote)?.as_deref() == Some(user) {
        store.remove(NS, &format!("linked\t{remote}"))?;
    }
    Ok(Some(remote))
}

/// `!unclaim` in a portal: undoes the asker's link ([`unlink`]) and says so in the room, as
/// the bridge's bot. `shown` names the remote identity for people (`bob on libera`).
pub async fn unclaim(
    store: &Store,
    bot: &crate::Intent,
    room: &str,
    user: &str,
    shown: impl Fn(&str) -> String,
) -> Result<(), Error> {
    let text = match unlink(store, user)? {
        Some(remote) => format!(
            "{user} is no longer linked with {}: it shows as a bridged person of its own again.",
            shown(&remote)
        ),
        None => format!("{user} has not claimed anything here."),
    };
    bot.send_notice(room, &text).await.map(drop)
}

/// The Matrix user a remote identity is linked to.
pub fn linked_user(store: &Store, remote: &str) -> Result<Option<String>, Error> {
    store.get(NS, &format!("linked\t{remote}"))
}

/// The remote identity a Matrix user is linked to.
pub fn remote_of(store: &Store, user: &str) -> Result<Option<String>, Error> {
    store.get(NS, &format!("remote-of\t{user}"))
}

/// The content field naming the bridge that sent an event as a person (double puppeting):
/// the homeserver hands such events back to the bridge, which must not relay them again.
pub const SOURCE: &str = "org.tsunagu.source";

/// Whether `event` is one the bridge `appservice_id` sent as a person (see [`SOURCE`]).
pub fn relayed_by(event: &serde_json::Value, appservice_id: &str) -> bool {
    event["content"][SOURCE] == appservice_id
}

/// A client for double puppeting: acting as the people who linked their remote identity, with
/// the `as_token` of a second registration whose user namespace is every user of the server,
/// not exclusive, and whose `url` is null (the homeserver pushes nothing to it). What it sends
/// is marked as the bridge `source`'s ([`SOURCE`]). `None` without such a registration: linked
/// people are then still shown by their ghost.
pub fn double_puppet(
    homeserver_url: &str,
    server_name: &str,
    registration: Option<&Path>,
    source: &str,
) -> Result<Option<Client>, Error> {
    let Some(path) = registration else {
        return Ok(None);
    };
    let reg = Registration::load(path)?;
    Ok(Some(Client::marked(
        homeserver_url,
        server_name,
        &reg,
        source,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_proven_once_by_the_right_proof() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let first = start(&store, "@bob:x", "bob@example.org").unwrap();
        let code = start(&store, "@bob:x", "bob@example.org").unwrap();
        assert_eq!(code.len(), 8);
        // The earlier code is gone; a wrong proof uses nothing up.
        assert_eq!(prove(&store, &first, |_| true).unwrap(), None);
        assert_eq!(
            prove(&store, &code, |p| p.user == "@mallory:x").unwrap(),
            None
        );
        let p = prove(&store, &code.to_lowercase(), |p| p.user == "@bob:x")
            .unwrap()
            .unwrap();
        assert_eq!(p.remote, "bob@example.org");
        assert_eq!(prove(&store, &code, |_| true).unwrap(), None);
        link(&store, "bob@example.org", "@bob:x").unwrap();
        assert_eq!(
            linked_user(&store, "bob@example.org").unwrap().as_deref(),
            Some("@bob:x")
        );
        link(&store, "bob@other.org", "@bob:x").unwrap();
        assert_eq!(linked_user(&store, "bob@example.org").unwrap(), None);
        assert_eq!(
            remote_of(&store, "@bob:x").unwrap().as_deref(),
            Some("bob@other.org")
        );

        // Unlinking undoes only the asker's own link.
        link(&store, "bob@other.org", "@eve:x").unwrap();
        assert_eq!(
            unlink(&store, "@bob:x").unwrap().as_deref(),
            Some("bob@other.org")
        );
        assert_eq!(
            linked_user(&store, "bob@other.org").unwrap().as_deref(),
            Some("@eve:x")
        );
        assert_eq!(unlink(&store, "@bob:x").unwrap(), None);
        assert_eq!(
            unlink(&store, "@eve:x").unwrap().as_deref(),
            Some("bob@other.org")
        );
        assert_eq!(linked_user(&store, "bob@other.org").unwrap(), None);
    }
}

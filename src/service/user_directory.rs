//! The user directory: finding people by name.
//!
//! A search finds users who share a room with the searcher and users in public rooms (join
//! rule `public`), as the spec allows and Synapse does by default, by a word of their user ID's
//! localpart or display name starting with what was typed.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    OwnedMxcUri, OwnedUserId, UserId,
    events::{StateEventType, room::member::MembershipState},
};

use super::{core::Core, timeline::Timeline, users::Users};
use crate::{
    error::Result,
    store::{PUBLIC_ROOMS, ROOMS},
};

/// Words of a search term that count; the rest are ignored.
const MAX_TERM_WORDS: usize = 8;

/// One user found.
pub struct Found {
    pub user_id: OwnedUserId,
    pub display_name: Option<String>,
    pub avatar_url: Option<OwnedMxcUri>,
}

/// The user directory. Depends on [`Core`], [`Users`] and [`Timeline`].
pub struct UserDirectory {
    core: Arc<Core>,
    users: Arc<Users>,
    timeline: Arc<Timeline>,
}

/// Whether `term` (lowercase words) matches a user: every word of it starts a word of the
/// localpart or display name.
fn matches(term: &[String], user: &UserId, name: Option<&str>) -> bool {
    let mut words: Vec<String> = user
        .localpart()
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .collect();
    words.push(user.localpart().to_lowercase());
    words.push(user.as_str().to_lowercase());
    if let Some(name) = name {
        words.extend(
            name.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase),
        );
        words.push(name.to_lowercase());
    }
    term.iter()
        .all(|t| words.iter().any(|w| w.starts_with(t.as_str())))
}

impl UserDirectory {
    pub fn new(core: Arc<Core>, users: Arc<Users>, timeline: Arc<Timeline>) -> Self {
        Self {
            core,
            users,
            timeline,
        }
    }

    /// Users `searcher` may find, matching `term`: at most `limit`, and whether there were more.
    pub fn search(
        &self,
        searcher: &UserId,
        term: &str,
        limit: usize,
    ) -> Result<(Vec<Found>, bool)> {
        let term: Vec<String> = term
            .split_whitespace()
            .map(|w| w.trim_start_matches('@').to_lowercase())
            .filter(|w| !w.is_empty())
            .take(MAX_TERM_WORDS)
            .collect();
        // Who the searcher may see, with the name their member events show.
        let mut candidates: BTreeMap<OwnedUserId, Option<String>> = BTreeMap::new();
        let mut rooms = self
            .timeline
            .rooms_with_membership(searcher, &[MembershipState::Join])?;
        for item in self.core.store.scan(PUBLIC_ROOMS.all()) {
            rooms.push(item?.0.0);
        }
        for item in self.core.store.scan(ROOMS.all()) {
            let ((room,), _) = item?;
            if self
                .timeline
                .state_str(&room, StateEventType::RoomJoinRules, "join_rule")?
                .as_deref()
                == Some("public")
            {
                rooms.push(room);
            }
        }
        rooms.sort();
        rooms.dedup();
        for room in rooms {
            for (user, m, ev) in self.timeline.members(&room)? {
                if m == MembershipState::Join {
                    candidates
                        .entry(user)
                        .or_insert_with(|| ev.content_str("displayname"));
                }
            }
        }
        let mut found = Vec::new();
        let mut limited = false;
        for (user, room_name) in candidates {
            let account = if self.users.is_local(&user) {
                match self.users.active_account(&user)? {
                    Some(a) => Some(a),
                    None => continue, // deactivated
                }
            } else {
                None
            };
            let name = account
                .as_ref()
                .and_then(|a| a.displayname.clone())
                .or(room_name);
            if !matches(&term, &user, name.as_deref()) {
                continue;
            }
            if found.len() >= limit {
                limited = true;
                break;
            }
            found.push(Found {
                display_name: name,
                avatar_url: account.and_then(|a| a.avatar_url),
                user_id: user,
            });
        }
        Ok((found, limited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_of_the_name_and_id_match_by_prefix() {
        let user = ruma::user_id!("@ada.lovelace:localhost");
        let t = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert!(matches(&t("love"), user, None));
        assert!(matches(&t("ada"), user, Some("Countess")));
        assert!(matches(&t("count"), user, Some("Countess")));
        assert!(matches(&t("ada count"), user, Some("Countess")));
        assert!(!matches(&t("ess"), user, Some("Countess")));
    }
}

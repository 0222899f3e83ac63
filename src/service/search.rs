//! Server-side search (`POST /search`, room events) over the full-text index the append path
//! keeps (`timeline::search_index`).
//!
//! A search looks in the rooms the user may read (joined, or left: up to their leave), finds
//! events holding every word of the query (the last word also as the start of a longer
//! word), keeps those the user may see and the filter allows, and orders them by rank (how
//! often the query's words occur in the text, for its length) or by recency. Encrypted rooms
//! hold only ciphertext, so the server finds nothing in them (as every server).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, UserId, api::client::filter::RoomEventFilter,
    events::room::member::MembershipState,
};

use super::{
    core::Core,
    filter::filter_allows,
    timeline::{
        Timeline,
        pagination::Seen,
        search_index::{searchable_text, words},
    },
};
use crate::{
    error::{Error, Result},
    store::{SEARCH, StoredEvent},
};

/// Candidate events one search reads at most (visible or not).
const MAX_CANDIDATES: usize = 2000;

/// Words one query may hold (each is a scan per room).
const MAX_QUERY_WORDS: usize = 16;

/// What a search asks.
pub struct Query<'a> {
    pub term: &'a str,
    pub filter: &'a RoomEventFilter,
    /// Newest first instead of best first.
    pub recent: bool,
    pub before: usize,
    pub after: usize,
    /// Where a previous page ended.
    pub next_batch: Option<&'a str>,
    pub limit: usize,
}

/// One event found, with what surrounds it.
pub struct Hit {
    pub seen: Seen,
    pub rank: f64,
    pub before: Vec<Seen>,
    pub after: Vec<Seen>,
}

/// The answer to a search.
pub struct Found {
    pub hits: Vec<Hit>,
    pub count: usize,
    pub next_batch: Option<String>,
    /// The words to highlight.
    pub words: Vec<String>,
    /// Rooms of the hits.
    pub rooms: BTreeSet<OwnedRoomId>,
}

/// Senders' display names and avatar URLs.
pub type Profiles = BTreeMap<OwnedUserId, (Option<String>, Option<String>)>;

/// Search. Depends on [`Core`] and [`Timeline`].
pub struct Search {
    core: Arc<Core>,
    timeline: Arc<Timeline>,
}

/// How well a text matches: occurrences of the query's words per square root of its length.
fn rank(text: &str, query: &BTreeSet<String>) -> f64 {
    let lower = text.to_lowercase();
    let hits: usize = query
        .iter()
        .map(|w| lower.matches(w.as_str()).count())
        .sum();
    hits as f64 / (lower.chars().count().max(1) as f64).sqrt()
}

impl Search {
    pub fn new(core: Arc<Core>, timeline: Arc<Timeline>) -> Self {
        Self { core, timeline }
    }

    /// Events of one room holding `word` (and, for a prefix, every word starting with it).
    fn postings(
        &self,
        room: &ruma::RoomId,
        word: &str,
        prefix: bool,
    ) -> Result<BTreeMap<u64, OwnedEventId>> {
        let mut out = BTreeMap::new();
        let scan = if prefix {
            SEARCH.prefix_text(room, word)
        } else {
            SEARCH.prefix2(room, word)
        };
        for item in self.core.store.scan(scan) {
            let ((_, _, pos), id) = item?;
            out.insert(pos, id);
            if out.len() > MAX_CANDIDATES {
                break;
            }
        }
        Ok(out)
    }

    /// Runs a search for `user`.
    pub fn search(&self, user: &UserId, q: Query<'_>) -> Result<Found> {
        let query = words(q.term);
        let last = q
            .term
            .split(|c: char| !c.is_alphanumeric())
            .rfind(|w| !w.is_empty())
            .map(str::to_lowercase);
        if query.is_empty() {
            return Err(Error::invalid_param("Search for at least one word"));
        }
        if query.len() > MAX_QUERY_WORDS {
            return Err(Error::invalid_param(format!(
                "Search for at most {MAX_QUERY_WORDS} words"
            )));
        }
        let offset: usize = match q.next_batch {
            Some(t) => t
                .parse()
                .map_err(|_| Error::invalid_param("Invalid next_batch"))?,
            None => 0,
        };
        let mut rooms: Vec<OwnedRoomId> = self
            .timeline
            .memberships(user)?
            .into_iter()
            .filter(|(_, m)| {
                matches!(
                    m.membership,
                    MembershipState::Join | MembershipState::Leave | MembershipState::Ban
                )
            })
            .map(|(r, _)| r)
            .collect();
        if let Some(only) = &q.filter.rooms {
            rooms.retain(|r| only.contains(r));
        }
        rooms.retain(|r| !q.filter.not_rooms.contains(r));

        let mut candidates: Vec<(OwnedRoomId, u64, OwnedEventId)> = Vec::new();
        for room in &rooms {
            let mut hits: Option<BTreeMap<u64, OwnedEventId>> = None;
            for word in &query {
                let prefix = last.as_deref() == Some(word.as_str());
                let postings = self.postings(room, word, prefix)?;
                hits = Some(match hits {
                    None => postings,
                    Some(h) => h
                        .into_iter()
                        .filter(|(pos, _)| postings.contains_key(pos))
                        .collect(),
                });
                if hits.as_ref().is_some_and(BTreeMap::is_empty) {
                    break;
                }
            }
            for (pos, id) in hits.unwrap_or_default() {
                candidates.push((room.clone(), pos, id));
            }
            if candidates.len() > MAX_CANDIDATES {
                break;
            }
        }

        // What the user may see, best or newest first.
        let mut readers = HashMap::new();
        let mut seen: Vec<(f64, u64, Seen)> = Vec::new();
        for (room, pos, id) in candidates {
            let Some(ev) = self.timeline.event(&id)? else {
                continue;
            };
            if !filter_allows(q.filter, &ev) {
                continue;
            }
            let reader = match readers.entry(room.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.timeline.reader(user, &room)?)
                }
            };
            if !reader.sees(&ev) {
                continue;
            }
            let score = searchable_text(&ev.kind(), &ev.content())
                .map(|t| rank(&t, &query))
                .unwrap_or(0.0);
            let membership = reader.membership_at(&ev);
            seen.push((
                score,
                pos,
                Seen {
                    event: ev,
                    membership,
                },
            ));
        }
        if q.recent {
            seen.sort_by_key(|s| std::cmp::Reverse(s.1));
        } else {
            seen.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        }
        let count = seen.len();
        let limit = q.limit.clamp(1, 100);
        let page: Vec<_> = seen.into_iter().skip(offset).take(limit).collect();
        let next_batch = (offset + page.len() < count).then(|| (offset + page.len()).to_string());
        let mut hits = Vec::new();
        let mut result_rooms = BTreeSet::new();
        for (rank, _, seen) in page {
            let (before, after) = if q.before + q.after > 0 {
                let reader = &readers[&seen.event.room_id];
                self.timeline
                    .around(reader, &seen.event, q.before.min(20), q.after.min(20))?
            } else {
                (Vec::new(), Vec::new())
            };
            result_rooms.insert(seen.event.room_id.clone());
            hits.push(Hit {
                seen,
                rank,
                before,
                after,
            });
        }
        Ok(Found {
            hits,
            count,
            next_batch,
            words: query.into_iter().collect(),
            rooms: result_rooms,
        })
    }

    /// The display name and avatar of the senders of events, as the room's state shows them.
    pub fn profiles(&self, events: &[&StoredEvent]) -> Result<Profiles> {
        let mut out = BTreeMap::new();
        for ev in events {
            let Some(sender) = ev.sender() else { continue };
            if out.contains_key(&sender) {
                continue;
            }
            let member =
                self.timeline
                    .state_event(&ev.room_id, &"m.room.member".into(), sender.as_str())?;
            let profile = member
                .map(|m| (m.content_str("displayname"), m.content_str("avatar_url")))
                .unwrap_or_default();
            out.insert(sender, profile);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_prefers_dense_matches() {
        let q: BTreeSet<String> = ["tea".to_owned()].into();
        assert!(rank("tea time", &q) > rank("a long message that mentions tea once", &q));
    }
}

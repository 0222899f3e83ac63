//! The bots' persistent state: one JSON file, `{data_dir}/bots/state.json`, replaced atomically
//! (write a temporary file, fsync it, rename it over the old one, fsync the folder). The state
//! is small (profiles, thanks, schedules, votes of one community) and written after each change,
//! so a JSON document is simpler to inspect and repair than another database.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    io::Write,
    path::{Path, PathBuf},
};

use ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

use super::schedule::Schedule;

/// Everything the bots remember.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// The bots' device: the matrix-sdk crypto store under `bots/sdk` belongs to it.
    pub device_id: Option<OwnedDeviceId>,
    pub rooms: BTreeMap<OwnedRoomId, RoomSettings>,
    pub profiles: BTreeMap<OwnedUserId, Profile>,
    pub thanks: Vec<Thanks>,
    pub gatherings: Vec<Gathering>,
    pub proposals: Vec<Proposal>,
    /// Events already handled (commands, joins): a replayed sync never answers twice.
    pub handled: VecDeque<OwnedEventId>,
    pub next_id: u32,
}

/// A habit the bots can keep in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Habit {
    Gatherings,
    People,
    Thanks,
    Charter,
    Roulette,
}

impl Habit {
    pub const ALL: [Habit; 5] = [
        Habit::Gatherings,
        Habit::People,
        Habit::Thanks,
        Habit::Charter,
        Habit::Roulette,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Habit::Gatherings => "gatherings",
            Habit::People => "people",
            Habit::Thanks => "thanks",
            Habit::Charter => "charter",
            Habit::Roulette => "roulette",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == s)
    }
}

/// Per-room settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomSettings {
    /// Enabled habits and when (unix seconds): joins before enabling are not greeted.
    pub enabled: BTreeMap<Habit, i64>,
    /// The community's time zone (IANA name); None = the configured default.
    pub timezone: Option<String>,
    /// Members greeted once in this room.
    pub greeted: BTreeSet<OwnedUserId>,
    /// Local date of the first gathering, for anniversaries, and the last year one was noted.
    pub first_gathering: Option<chrono::NaiveDate>,
    pub anniversary_noted: Option<i32>,
    pub roulette: Roulette,
}

/// A member's own words about themselves.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Profile {
    pub cares_about: Option<String>,
    pub working_on: Option<String>,
    pub can_help_with: Option<String>,
    pub org: Option<String>,
    pub former_orgs: Option<String>,
}

impl Profile {
    pub fn is_empty(&self) -> bool {
        *self == Profile::default()
    }
}

/// One thanks, as said.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Thanks {
    pub from: OwnedUserId,
    pub to: OwnedUserId,
    pub room: OwnedRoomId,
    pub reason: String,
    pub ts: i64,
}

/// A scheduled, purpose-free gathering in a room.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Gathering {
    pub id: u32,
    pub room: OwnedRoomId,
    pub schedule: Schedule,
    pub created_by: OwnedUserId,
    /// Occurrences are counted from here (unix seconds).
    pub created_at: i64,
    /// The last occurrence whose invitation went out (or was reported missed), unix seconds.
    pub last_fired: Option<i64>,
    pub cancelled: bool,
    pub invitations: Vec<Invitation>,
}

/// The invitation to one occurrence and what happened to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Invitation {
    pub occurrence: i64,
    pub event_id: OwnedEventId,
    /// user -> "yes" | "maybe" | "no", from reactions.
    pub rsvps: BTreeMap<OwnedUserId, String>,
    /// reaction event id -> (user, answer), to forget a redacted reaction.
    #[serde(default)]
    pub reactions: BTreeMap<OwnedEventId, (OwnedUserId, String)>,
    pub reminded: bool,
    pub notes_opened: bool,
}

/// Coffee roulette of one room.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Roulette {
    pub members: BTreeSet<OwnedUserId>,
    /// Occurrences are counted from here (unix seconds).
    pub since: i64,
    pub last_fired: Option<i64>,
    /// Past pairs (sorted user ids) with the round's time.
    pub history: Vec<(OwnedUserId, OwnedUserId, i64)>,
}

/// What a proposal changes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Change {
    Rule { text: String },
    Moderator { user: OwnedUserId },
    Power { user: OwnedUserId, level: i64 },
}

/// A charter proposal and its poll.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u32,
    pub room: OwnedRoomId,
    pub poll: OwnedEventId,
    pub change: Change,
    pub proposer: OwnedUserId,
    pub created_at: i64,
    pub deadline: i64,
    /// user -> (origin_server_ts, answer id): the latest response counts.
    pub votes: BTreeMap<OwnedUserId, (i64, String)>,
    pub closed: bool,
}

impl State {
    pub fn room(&mut self, room: &ruma::RoomId) -> &mut RoomSettings {
        self.rooms.entry(room.to_owned()).or_default()
    }

    pub fn enabled(&self, room: &ruma::RoomId, habit: Habit) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.enabled.contains_key(&habit))
    }

    /// Remembers an event as handled; false if it was handled before.
    pub fn first_time(&mut self, event: &ruma::EventId) -> bool {
        if self.handled.iter().any(|e| e == event) {
            return false;
        }
        self.handled.push_back(event.to_owned());
        while self.handled.len() > 2000 {
            self.handled.pop_front();
        }
        true
    }

    pub fn new_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }
}

/// Where the state lives and how it is written.
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("state.json"),
        }
    }

    pub fn load(&self) -> anyhow::Result<State> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "bot state {} is unreadable ({e}); fix or move it away to start afresh",
                    self.path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(anyhow::anyhow!(
                "cannot read bot state {}: {e}",
                self.path.display()
            )),
        }
    }

    /// Writes the whole state durably: temporary file, fsync, rename, fsync of the folder.
    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state)?;
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

//! Server configuration: a TOML file, overridden by `TSUNAGU_*` environment variables.
//!
//! Every setting has a default, so `tsunagu serve` works with no file at all. Unknown keys and
//! wrong values stop the start with a message that names the setting.

use std::{net::SocketAddr, path::PathBuf};

use ruma::{OwnedServerName, RoomVersionId, ServerName};
use serde::Deserialize;

/// Who may create an account through `/register`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone who can reach the server (user-interactive auth with `m.login.dummy`).
    Open,
    /// Only with a registration token (`m.login.registration_token`), made by `tsunagu admin token new`.
    Token,
    /// Nobody: accounts are made with `tsunagu admin create-user`.
    Closed,
}

/// Limits on login and registration attempts, per client address and per account.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// Attempts allowed in a burst before requests are refused with `M_LIMIT_EXCEEDED`.
    pub burst: u32,
    /// Attempts regained per minute.
    pub per_minute: u32,
    /// One-time keys one user may claim in a burst (`/keys/claim`, all devices together).
    pub key_claims_burst: u32,
    /// One-time keys regained per minute.
    pub key_claims_per_minute: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            burst: 10,
            per_minute: 10,
            key_claims_burst: 500,
            key_claims_per_minute: 200,
        }
    }
}

/// Bounds that keep one client, or many, from exhausting a small server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections at most; one more is answered 429 `M_LIMIT_EXCEEDED` and closed.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers. A connection that sends nothing, or
    /// idles between requests, is closed after it.
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    pub body_timeout_secs: u64,
    /// Request bodies being read at once, in MiB across all connections; a request that would
    /// go over waits (up to the body timeout) for others to finish.
    pub body_memory_mb: usize,
    /// Largest account data item (one type, global or per room), in bytes of JSON.
    pub max_account_data_bytes: usize,
    /// Largest to-device message for one device, in bytes of JSON.
    pub max_to_device_bytes: usize,
    /// To-device messages waiting for one device at most; messages to a full queue are
    /// dropped (and logged).
    pub to_device_queue: usize,
    /// To-device messages in one `/sync` at most; the rest come with the next one.
    pub to_device_per_sync: usize,
    /// History reads (`/messages`, `/context`, `/members?at=`) running at once, off the
    /// request workers; more wait their turn.
    pub history_reads: usize,
    /// Sliding sync connections one device may keep; a new one replaces the least recently
    /// used.
    pub sync_connections_per_device: usize,
    /// Seconds an unused sliding sync connection is kept; its `pos` is unknown afterwards.
    pub sync_connection_idle_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            body_memory_mb: 64,
            max_account_data_bytes: 65_536,
            max_to_device_bytes: 65_536,
            to_device_queue: 1000,
            to_device_per_sync: 100,
            history_reads: 2,
            sync_connections_per_device: 8,
            sync_connection_idle_secs: 3600,
        }
    }
}

/// Presence (online, away, offline).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Track and share presence. Off, everyone shows as offline and nothing is written.
    pub enabled: bool,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Push notifications to phones, through the HTTP push gateways that clients register.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Send pushes to gateways on loopback, private or link-local addresses. Off, a pusher
    /// cannot make the server call into its own network.
    pub allow_private_gateways: bool,
}

/// A TURN server for voice and video calls, handed to clients at `/voip/turnServer`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// `turn:` / `turns:` URIs; empty means no TURN server (calls then need a direct path).
    pub uris: Vec<String>,
    /// The TURN server's shared secret (coturn `static-auth-secret`), for time-limited
    /// credentials.
    pub shared_secret: Option<String>,
    /// How long handed-out credentials stay valid, in seconds.
    pub ttl_secs: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            uris: Vec::new(),
            shared_secret: None,
            ttl_secs: 86_400,
        }
    }
}

/// The media repository: uploads, thumbnails and URL previews.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Largest upload in bytes, advertised as `m.upload.size`; larger ones get 413
    /// `M_TOO_LARGE`.
    pub max_upload_size: usize,
    /// Seconds a client has to send an upload's body (a phone on a slow uplink needs minutes
    /// for a video; other bodies have `limits.body_timeout_secs`).
    pub upload_timeout_secs: u64,
    /// Bytes of media one user may keep; an upload past it gets 403 `M_FORBIDDEN`.
    pub user_quota_bytes: u64,
    /// Media IDs one user may have created (`/media/v1/create`) and not yet uploaded to; one
    /// more gets 429 `M_LIMIT_EXCEEDED`.
    pub max_pending_uploads: usize,
    /// Seconds a created media ID waits for its content before it expires.
    pub pending_upload_expiry_secs: u64,
    /// Largest image, in pixels (width × height), decoded for a thumbnail; larger ones get 413
    /// `M_TOO_LARGE` without being decoded.
    pub max_thumbnail_pixels: u64,
    /// Fetch web pages for URL previews (`/media/preview_url`). Off: the endpoint answers 404
    /// `M_UNRECOGNIZED`, and the server never fetches a URL a user names.
    pub url_previews: bool,
    /// For tests only: let URL previews fetch from loopback addresses (127.0.0.0/8, ::1).
    /// Private, link-local and unspecified addresses stay refused.
    pub url_preview_allow_loopback: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_size: 50 * 1024 * 1024,
            upload_timeout_secs: 300,
            user_quota_bytes: 1024 * 1024 * 1024,
            max_pending_uploads: 10,
            pending_upload_expiry_secs: 24 * 60 * 60,
            max_thumbnail_pixels: 32_000_000,
            url_previews: false,
            url_preview_allow_loopback: false,
        }
    }
}

impl MediaConfig {
    fn validate(&self, body_memory_mb: usize) -> Result<(), ConfigError> {
        if self.max_upload_size < 1024 {
            return Err(ConfigError::Invalid {
                name: "media.max_upload_size",
                message: "must be at least 1024 bytes".into(),
            });
        }
        if self.max_upload_size / (1024 * 1024) >= body_memory_mb {
            return Err(ConfigError::Invalid {
                name: "limits.body_memory_mb",
                message: "must be larger than media.max_upload_size".into(),
            });
        }
        for (name, value) in [
            ("media.upload_timeout_secs", self.upload_timeout_secs),
            (
                "media.pending_upload_expiry_secs",
                self.pending_upload_expiry_secs,
            ),
            ("media.max_thumbnail_pixels", self.max_thumbnail_pixels),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    message: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

/// Which new rooms get end-to-end encryption in their initial state.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionDefault {
    /// Private rooms (private_chat and trusted_private_chat presets) and direct chats.
    #[default]
    Private,
    /// Every new room.
    All,
    /// None: clients decide.
    Off,
}

/// Which embedded storage engine holds the data.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// sled 0.34: a lock-free log-structured B-tree.
    Sled,
    /// redb: a copy-on-write B-tree in one file. The default: in our soak it held a flat
    /// ~31 MiB RSS and half the disk of sled at the same throughput (BENCHMARKS.md).
    #[default]
    Redb,
}

/// Storage settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The engine: `sled` or `redb`. Each keeps its own files in the data directory.
    pub engine: EngineKind,
    /// Engine cache size in MiB (an upper bound: it fills as pages are read). Small by
    /// default: the kernel's page cache keeps the database file in spare RAM anyway. Sending
    /// is as fast with 2 MiB as with 16; an initial sync of an account in 200 rooms was faster
    /// with 32 MiB, but the server then held 35 MiB more at rest (BENCHMARKS.md).
    pub cache_mb: usize,
    /// A write waits up to this many milliseconds so that concurrent writes share one fsync.
    /// Writes are still durable before they are acknowledged. 0 = flush at once.
    pub group_commit_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            engine: EngineKind::default(),
            cache_mb: 2,
            group_commit_ms: 0,
        }
    }
}

/// The community bots (see `src/bots/`): one Matrix user that runs every habit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotsConfig {
    /// Start the bots with the server.
    pub enabled: bool,
    /// Localpart of the bots' user (`@tsunagu:{server_name}`), created on the first start.
    pub user: String,
    /// Display name of the bots' user.
    pub display_name: String,
    /// Time zone for schedules (IANA name), until a community sets its own with `!bots timezone`.
    pub timezone: String,
    /// Gathering invitations are posted this many hours before a gathering.
    pub invite_hours_before: u32,
    /// Members who said yes are reminded this many minutes before a gathering.
    pub remind_minutes_before: u32,
    /// Hours after a gathering's start when its notes thread is opened.
    pub notes_hours_after: u32,
    /// Coffee roulette day (`monday` .. `sunday`) and local time (`HH:MM`).
    pub roulette_day: String,
    /// Coffee roulette local time (`HH:MM`).
    pub roulette_time: String,
    /// Weeks between two coffee roulette rounds.
    pub roulette_every_weeks: u32,
    /// Hours a charter vote stays open unless the charter says otherwise.
    pub vote_hours: u32,
    /// Seconds between two checks of the schedules.
    pub tick_seconds: u64,
}

impl Default for BotsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            user: "tsunagu".into(),
            display_name: "Tsunagu".into(),
            timezone: "UTC".into(),
            invite_hours_before: 48,
            remind_minutes_before: 60,
            notes_hours_after: 3,
            roulette_day: "monday".into(),
            roulette_time: "10:00".into(),
            roulette_every_weeks: 1,
            vote_hours: 72,
            tick_seconds: 30,
        }
    }
}

/// Federation: the Server-Server API towards other homeservers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Talk with other servers. Unset: on when `server_name` is a domain others can reach
    /// (not `localhost`, not an IP literal).
    pub enabled: Option<bool>,
    /// Address and port of the federation listener; unset, the Server-Server API is served on
    /// `listen` beside the Client-Server API (behind a reverse proxy that terminates TLS).
    pub listen: Option<SocketAddr>,
    /// Certificate chain (PEM) of the federation listener; with `tls_key`, it speaks TLS.
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Extra certificate authorities (PEM) trusted for other servers' certificates, besides
    /// the system's: a community's private CA, or the self-signed certificates of tests.
    pub tls_ca_file: Option<PathBuf>,
    /// Notaries asked for another server's keys when that server cannot be asked itself
    /// (`/_matrix/key/v2/query`); their answers must carry the server's and their own
    /// signatures. Empty: only servers themselves are asked.
    pub trusted_key_servers: Vec<OwnedServerName>,
    /// What `/.well-known/matrix/server` answers (`"example.org:443"`): where other servers
    /// reach this one when that is not `server_name` on port 8448. Unset, it answers 404.
    pub well_known_server: Option<OwnedServerName>,
    /// Contact other servers on loopback, private or link-local addresses. Off, naming a
    /// server that resolves there gets nothing (no way into the network the server runs in).
    pub allow_private_addresses: bool,
    /// Server names this server never contacts and whose requests it refuses.
    pub deny_servers: Vec<String>,
    /// When not empty, the only server names this server talks with.
    pub allow_servers: Vec<String>,
    /// Seconds to wait for another server's answer (connection included).
    pub request_timeout_secs: u64,
    /// Largest answer read from another server, in bytes.
    pub max_response_size: usize,
    /// Requests to other servers in flight at once (key fetches included): a flood of
    /// requests naming strangers cannot make the server open unbounded connections.
    pub max_outgoing_requests: usize,
    /// Seconds a server that did not answer (or answered nonsense) is not asked again; also
    /// the longest wait between two tries to deliver a queue (1, 2, 4, ... seconds up to it).
    pub failure_backoff_secs: u64,
    /// Most EDUs (to-device messages) queued for one server; past it new ones are dropped.
    pub max_queued_per_server: usize,
    /// Key fetches from other servers in flight at once; more are refused at once (a request
    /// from a server whose key is not known yet then gets 401 and is retried by its sender).
    pub max_key_fetches: usize,
    /// Media files sent to other servers at once (each is held in memory while it goes out,
    /// up to `media.max_upload_size`); more wait, then get 429.
    pub max_media_served_at_once: usize,
    /// Largest `/send` transaction taken from another server, in bytes (the spec allows 50
    /// events of 65,536 bytes and 100 EDUs in one).
    pub max_transaction_size: usize,
    /// The DNS resolver asked for other servers' SRV records (`_matrix-fed._tcp`); unset,
    /// the first `nameserver` of /etc/resolv.conf.
    pub dns_resolver: Option<SocketAddr>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            listen: None,
            tls_cert: None,
            tls_key: None,
            tls_ca_file: None,
            well_known_server: None,
            trusted_key_servers: Vec::new(),
            allow_private_addresses: false,
            deny_servers: Vec::new(),
            allow_servers: Vec::new(),
            request_timeout_secs: 20,
            max_response_size: 4 * 1024 * 1024,
            max_outgoing_requests: 32,
            failure_backoff_secs: 60,
            max_queued_per_server: 1000,
            max_media_served_at_once: 2,
            max_key_fetches: 8,
            max_transaction_size: 8 * 1024 * 1024,
            dns_resolver: None,
        }
    }
}

impl FederationConfig {
    /// Whether `server` may be talked with: not denied, and allowed when a list is set.
    pub fn permits(&self, server: &ServerName) -> bool {
        let host = server.host();
        let named = |list: &[String]| {
            list.iter()
                .any(|s| s.eq_ignore_ascii_case(server.as_str()) || s.eq_ignore_ascii_case(host))
        };
        !named(&self.deny_servers) && (self.allow_servers.is_empty() || named(&self.allow_servers))
    }
}

/// The whole configuration of one server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The domain in user IDs (`@alice:server_name`) and room aliases.
    pub server_name: OwnedServerName,
    /// Address and port the Client-Server API listens on.
    pub listen: SocketAddr,
    /// Folder holding the database and the server's signing key.
    pub data_dir: PathBuf,
    /// Who may register: `open`, `token` or `closed`.
    pub registration: Registration,
    /// Room version for new rooms when the client names none (`"12"` or `12`).
    #[serde(deserialize_with = "string_or_number")]
    pub default_room_version: RoomVersionId,
    /// Largest accepted request body, in bytes (event bodies: at most 65,536, as the spec).
    pub max_request_size: usize,
    /// Shortest password a user may choose.
    pub min_password_length: usize,
    /// Connection, body, queue and size limits.
    pub limits: Limits,
    /// Presence.
    pub presence: PresenceConfig,
    /// Push gateways.
    pub push: PushConfig,
    /// TURN server for calls.
    pub turn: TurnConfig,
    /// Login and registration rate limits.
    pub rate_limit: RateLimit,
    /// The base URL clients should use, served at `/.well-known/matrix/client`.
    /// Defaults to `http://{listen}`.
    pub public_base_url: Option<String>,
    /// Async worker threads; 0 means one per CPU core.
    pub worker_threads: usize,
    /// Which new rooms are end-to-end encrypted from the start: `private`, `all` or `off`.
    pub encryption_by_default: EncryptionDefault,
    /// Storage engine settings.
    pub storage: StorageConfig,
    /// Application service registration files (YAML) to load at start.
    pub appservices: Vec<PathBuf>,
    /// Community bots.
    pub bots: BotsConfig,
    /// The media repository.
    pub media: MediaConfig,
    /// Federation with other servers.
    pub federation: FederationConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".try_into().expect("valid server name"),
            listen: "127.0.0.1:8008".parse().expect("valid address"),
            data_dir: PathBuf::from("tsunagu-data"),
            registration: Registration::Token,
            default_room_version: RoomVersionId::V12,
            max_request_size: 1024 * 1024,
            min_password_length: 8,
            limits: Limits::default(),
            presence: PresenceConfig::default(),
            push: PushConfig::default(),
            turn: TurnConfig::default(),
            rate_limit: RateLimit::default(),
            public_base_url: None,
            worker_threads: 0,
            encryption_by_default: EncryptionDefault::default(),
            storage: StorageConfig::default(),
            appservices: Vec::new(),
            bots: BotsConfig::default(),
            media: MediaConfig::default(),
            federation: FederationConfig::default(),
        }
    }
}

/// A setting that is a string in the spec but a number to a person (`default_room_version =
/// 11`, or `TSUNAGU_DEFAULT_ROOM_VERSION=11`, which TOML reads as a number).
fn string_or_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<String>,
    T::Error: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(i64),
    }
    let text = match Either::deserialize(deserializer)? {
        Either::Text(t) => t,
        Either::Number(n) => n.to_string(),
    };
    T::try_from(text).map_err(serde::de::Error::custom)
}

/// A setting that could not be used, with its name.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("setting `{name}`: {message}")]
    Invalid { name: &'static str, message: String },
}

/// Room versions this server can create and join: the spec's stable versions, all of which
/// ruma's authorization rules and state resolution implement.
pub const SUPPORTED_ROOM_VERSIONS: &[RoomVersionId] = &[
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

impl Config {
    /// Reads the file (if any), then applies `TSUNAGU_*` environment variables, then validates.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        path: path.into(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, std::env::vars())?;
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path
                        .map(Into::into)
                        .unwrap_or_else(|| "(environment)".into()),
                    message: e.message().to_owned(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !SUPPORTED_ROOM_VERSIONS.contains(&self.default_room_version) {
            return Err(ConfigError::Invalid {
                name: "default_room_version",
                message: format!(
                    "room version {} is not supported (use one of 1 to 12)",
                    self.default_room_version
                ),
            });
        }
        if self.max_request_size < 1024 {
            return Err(ConfigError::Invalid {
                name: "max_request_size",
                message: "must be at least 1024 bytes".into(),
            });
        }
        let l = &self.limits;
        for (name, value) in [
            ("limits.max_connections", l.max_connections),
            ("limits.header_timeout_secs", l.header_timeout_secs as usize),
            ("limits.body_timeout_secs", l.body_timeout_secs as usize),
            ("limits.body_memory_mb", l.body_memory_mb),
            ("limits.to_device_queue", l.to_device_queue),
            ("limits.to_device_per_sync", l.to_device_per_sync),
            ("limits.history_reads", l.history_reads),
            (
                "limits.sync_connections_per_device",
                l.sync_connections_per_device,
            ),
            (
                "limits.sync_connection_idle_secs",
                l.sync_connection_idle_secs as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    message: "must be at least 1".into(),
                });
            }
        }
        if self.max_request_size / (1024 * 1024) >= l.body_memory_mb {
            return Err(ConfigError::Invalid {
                name: "limits.body_memory_mb",
                message: "must be larger than max_request_size".into(),
            });
        }
        if self.storage.cache_mb == 0 {
            return Err(ConfigError::Invalid {
                name: "storage.cache_mb",
                message: "must be at least 1".into(),
            });
        }
        if self.storage.group_commit_ms > 1000 {
            return Err(ConfigError::Invalid {
                name: "storage.group_commit_ms",
                message: "must be at most 1000 (every acknowledged write waits this long)".into(),
            });
        }
        self.media.validate(l.body_memory_mb)?;
        let f = &self.federation;
        for (name, value) in [
            (
                "federation.request_timeout_secs",
                f.request_timeout_secs as usize,
            ),
            ("federation.max_response_size", f.max_response_size),
            ("federation.max_outgoing_requests", f.max_outgoing_requests),
            ("federation.max_queued_per_server", f.max_queued_per_server),
            (
                "federation.max_media_served_at_once",
                f.max_media_served_at_once,
            ),
            ("federation.max_key_fetches", f.max_key_fetches),
            ("federation.max_transaction_size", f.max_transaction_size),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    message: "must be at least 1".into(),
                });
            }
        }
        if f.tls_cert.is_some() != f.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                name: "federation.tls_cert",
                message: "tls_cert and tls_key go together".into(),
            });
        }
        if self.rate_limit.burst == 0 {
            return Err(ConfigError::Invalid {
                name: "rate_limit.burst",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// Whether the server talks with other servers (`federation.enabled`, else whether
    /// `server_name` is a domain others can reach).
    pub fn federates(&self) -> bool {
        self.federation.enabled.unwrap_or_else(|| {
            let host = self.server_name.host();
            !(self.server_name.is_ip_literal() || host.eq_ignore_ascii_case("localhost"))
        })
    }

    /// The URL clients are told to use.
    pub fn base_url(&self) -> String {
        self.public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

/// Overlays `TSUNAGU_SECTION__KEY=value` variables onto the TOML table. Values are parsed as TOML
/// when they can be (numbers, booleans), else taken as strings.
fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("TSUNAGU_") else {
            continue;
        };
        if rest == "LOG" {
            continue; // read by the logger, not a setting
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let mut node = &mut *table;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                node.insert(part.clone(), parsed.clone());
            } else {
                let entry = node
                    .entry(part.clone())
                    .or_insert_with(|| toml::Value::Table(Default::default()));
                node = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
                    name: name.clone(),
                    message: format!("`{part}` is not a section"),
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_env(vars: &[(&str, &str)]) -> Result<Config, String> {
        let mut table = toml::Table::new();
        apply_env(
            &mut table,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .map_err(|e| e.to_string())?;
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())
    }

    #[test]
    fn env_overrides_settings() {
        let c = from_env(&[
            ("TSUNAGU_SERVER_NAME", "example.org"),
            ("TSUNAGU_LISTEN", "127.0.0.1:9000"),
            ("TSUNAGU_REGISTRATION", "open"),
            ("TSUNAGU_RATE_LIMIT__BURST", "3"),
            ("TSUNAGU_STORAGE__ENGINE", "redb"),
        ])
        .unwrap();
        assert_eq!(c.server_name.as_str(), "example.org");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.registration, Registration::Open);
        assert_eq!(c.rate_limit.burst, 3);
        assert_eq!(c.storage.engine, EngineKind::Redb);
    }

    #[test]
    fn numbers_are_accepted_for_string_settings() {
        let c = from_env(&[("TSUNAGU_DEFAULT_ROOM_VERSION", "11")]).unwrap();
        assert_eq!(c.default_room_version, RoomVersionId::V11);
        let c: Config = toml::from_str("default_room_version = 10").unwrap();
        assert_eq!(c.default_room_version, RoomVersionId::V10);
        let c: Config = toml::from_str("default_room_version = \"12\"").unwrap();
        assert_eq!(c.default_room_version, RoomVersionId::V12);
    }

    #[test]
    fn unknown_setting_is_named() {
        let err = from_env(&[("TSUNAGU_SERVR_NAME", "x")]).unwrap_err();
        assert!(err.contains("servr_name"), "{err}");
        let err = from_env(&[("TSUNAGU_REGISTRATION", "maybe")]).unwrap_err();
        assert!(err.contains("maybe"), "{err}");
    }

    #[test]
    fn example_config_is_the_default() {
        let text = include_str!("../config/tsunagu.toml");
        let c: Config = toml::from_str(text).unwrap();
        let d = Config::default();
        assert_eq!(c.server_name, d.server_name);
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.data_dir, d.data_dir);
        assert_eq!(c.registration, d.registration);
        assert_eq!(c.default_room_version, d.default_room_version);
        assert_eq!(c.max_request_size, d.max_request_size);
        assert_eq!(c.min_password_length, d.min_password_length);
        assert_eq!(format!("{:?}", c.limits), format!("{:?}", d.limits));
        assert_eq!(c.presence.enabled, d.presence.enabled);
        assert_eq!(c.rate_limit.key_claims_burst, d.rate_limit.key_claims_burst);
        assert_eq!(
            c.rate_limit.key_claims_per_minute,
            d.rate_limit.key_claims_per_minute
        );
        assert_eq!(c.worker_threads, d.worker_threads);
        assert_eq!(c.encryption_by_default, d.encryption_by_default);
        assert_eq!(c.storage.engine, d.storage.engine);
        assert_eq!(c.storage.cache_mb, d.storage.cache_mb);
        assert_eq!(c.storage.group_commit_ms, d.storage.group_commit_ms);
        assert_eq!(format!("{:?}", c.bots), format!("{:?}", d.bots));
        assert_eq!(format!("{:?}", c.media), format!("{:?}", d.media));
        assert_eq!(format!("{:?}", c.federation), format!("{:?}", d.federation));
    }
}

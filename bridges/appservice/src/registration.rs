//! The registration file a homeserver reads to know an application service (spec: "Registration").

use std::{fs, io::Write, path::Path};

use rand::{Rng, distributions::Alphanumeric};
use serde::{Deserialize, Serialize};

use crate::Error;

/// One namespace entry: a regular expression and whether the appservice owns it alone.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Namespace {
    /// Whether only this appservice may create users or aliases matching `regex`.
    pub exclusive: bool,
    /// A regular expression over full IDs, e.g. `@irc_.*:example.org`.
    pub regex: String,
}

/// The user, alias and room namespaces an appservice is interested in.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Namespaces {
    /// User IDs (ghost users).
    #[serde(default)]
    pub users: Vec<Namespace>,
    /// Room aliases (portal rooms).
    #[serde(default)]
    pub aliases: Vec<Namespace>,
    /// Room IDs.
    #[serde(default)]
    pub rooms: Vec<Namespace>,
}

/// An application service registration, in the spec's YAML format.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    /// A unique, user-defined ID of the application service.
    pub id: String,
    /// Where the homeserver sends transactions; `None` if it should send none.
    pub url: Option<String>,
    /// The token the appservice uses to talk to the homeserver.
    pub as_token: String,
    /// The token the homeserver uses to talk to the appservice.
    pub hs_token: String,
    /// The localpart of the appservice's own user (the bridge bot).
    pub sender_localpart: String,
    /// The namespaces the appservice is interested in.
    pub namespaces: Namespaces,
    /// Whether requests from the appservice's users are rate-limited.
    #[serde(default)]
    pub rate_limited: bool,
    /// The external protocols the appservice provides (e.g. `irc`).
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Whether the homeserver should also send ephemeral events (typing, receipts).
    #[serde(default)]
    pub receive_ephemeral: bool,
}

/// A random token of 64 alphanumeric characters.
pub fn random_token() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}

impl Registration {
    /// A new registration with fresh random tokens and an exclusive user namespace
    /// `@{user_prefix}.*:{server_name}` (and alias namespace `#{user_prefix}.*`).
    pub fn generate(
        id: &str,
        url: Option<String>,
        sender_localpart: &str,
        user_prefix: &str,
        server_name: &str,
    ) -> Self {
        let prefix = regex_escape(user_prefix);
        let server = regex_escape(server_name);
        Self {
            id: id.to_owned(),
            url,
            as_token: random_token(),
            hs_token: random_token(),
            sender_localpart: sender_localpart.to_owned(),
            namespaces: Namespaces {
                users: vec![Namespace {
                    exclusive: true,
                    regex: format!("@{prefix}.*:{server}"),
                }],
                aliases: vec![Namespace {
                    exclusive: true,
                    regex: format!("#{prefix}.*:{server}"),
                }],
                rooms: vec![],
            },
            rate_limited: false,
            protocols: vec![],
            receive_ephemeral: false,
        }
    }

    /// The registration as YAML.
    pub fn to_yaml(&self) -> Result<String, Error> {
        Ok(serde_yaml_ng::to_string(self)?)
    }

    /// Parses a registration from YAML.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        Ok(serde_yaml_ng::from_str(text)?)
    }

    /// Reads a bridge's registration file; the error names the command that makes one.
    pub fn load_for(path: &Path, binary: &str) -> anyhow::Result<Self> {
        Self::load(path).map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "reading the registration {} (make one with `{binary} generate-registration`)",
                path.display()
            ))
        })
    }

    /// Reads a registration file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text =
            fs::read_to_string(path).map_err(|e| Error::Io(path.display().to_string(), e))?;
        Self::from_yaml(&text)
    }

    /// Writes a new registration to `path` (creating its folder), refusing to replace an
    /// existing one unless `force`: the homeserver knows the old tokens.
    pub fn save_new(&self, path: &Path, force: bool) -> Result<(), Error> {
        if path.exists() && !force {
            return Err(Error::Config(format!(
                "{} exists; keep it (the server knows its tokens) or pass --force to replace it",
                path.display()
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| Error::Io(dir.display().to_string(), e))?;
        }
        self.save(path)
    }

    /// Writes the registration to `path` atomically (temporary file, fsync, rename), readable
    /// only by its owner since it holds both tokens.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        write_atomically(path, self.to_yaml()?.as_bytes())
    }
}

/// Escapes the characters that have a meaning in regular expressions.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |e| Error::Io(path.display().to_string(), e);
    let tmp = path.with_extension("tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_registration_round_trips_through_yaml() {
        let reg = Registration::generate(
            "irc",
            Some("http://127.0.0.1:9000".into()),
            "ircbot",
            "irc_",
            "example.org",
        );
        assert_eq!(reg.as_token.len(), 64);
        assert_ne!(reg.as_token, reg.hs_token);
        assert_eq!(reg.namespaces.users[0].regex, "@irc_.*:example\\.org");
        let yaml = reg.to_yaml().unwrap();
        assert!(yaml.contains("sender_localpart: ircbot"), "{yaml}");
        assert_eq!(Registration::from_yaml(&yaml).unwrap(), reg);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg.yaml");
        reg.save(&path).unwrap();
        assert_eq!(Registration::load(&path).unwrap(), reg);
    }

    #[test]
    fn reads_the_spec_example_with_null_url() {
        let yaml = "id: x\nurl: null\nas_token: a\nhs_token: h\nsender_localpart: bot\n\
                    namespaces:\n  users:\n    - exclusive: true\n      regex: '@x_.*'\n";
        let reg = Registration::from_yaml(yaml).unwrap();
        assert_eq!(reg.url, None);
        assert!(reg.namespaces.rooms.is_empty());
    }
}

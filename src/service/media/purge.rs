//! `tsunagu admin media purge --older-than D`: the operator's way to take back disk, run on the
//! data directory with the server stopped.
//!
//! It deletes:
//! - media uploaded more than D ago that no stored event's content and no profile (avatar)
//!   names by its `mxc://` URI. The server cannot read encrypted messages, so a file sent in an
//!   encrypted room counts as named by nothing and goes once it is older than D;
//! - every media item of a deactivated account (no longer served anyway), whatever its age;
//! - media IDs made for a later upload that expired without content;
//! - then every file and thumbnail that no remaining media item names (identical uploads share
//!   one file, which stays while any of them does), and leftovers of interrupted writes.

use std::{collections::HashSet, time::Duration};

use ruma::ServerName;
use serde_json::Value as JsonValue;

use super::{Media, blobs, now_ms, valid_media_id};
use crate::{
    error::{Error, Result},
    service::Services,
    store::{Batch, MEDIA, USER_MEDIA},
};

/// What a purge deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Media IDs deleted.
    pub media: usize,
    /// Files deleted (contents and thumbnails no media item names any more).
    pub files: usize,
    /// Bytes those files held.
    pub bytes: u64,
}

impl Services {
    /// Purges media (see the module's documentation for exactly what): the references come
    /// from every stored event and every account, so this spans areas.
    pub async fn purge_media(&self, older_than: Duration) -> Result<Purged> {
        let server = self.core.server_name().clone();
        let mut named = HashSet::new();
        for event in self.timeline.all_events() {
            if let Some(content) = event?.pdu.get("content") {
                let content: JsonValue = serde_json::to_value(content)?;
                media_ids_in(&content, &server, &mut named);
            }
        }
        for account in self.users.all_accounts() {
            if let Some(avatar) = account?.1.avatar_url {
                media_ids_in(&JsonValue::String(avatar.to_string()), &server, &mut named);
            }
        }
        let cutoff = now_ms().saturating_sub(older_than.as_millis() as u64);
        self.media.purge(cutoff, &named).await
    }
}

/// Collects the IDs of `server`'s media named in `value`'s strings (`url` fields, `<img
/// src="mxc://…">` in formatted bodies, avatars of member events).
fn media_ids_in(value: &JsonValue, server: &ServerName, out: &mut HashSet<String>) {
    match value {
        JsonValue::String(s) => {
            let prefix = format!("mxc://{server}/");
            let mut rest = s.as_str();
            while let Some(at) = rest.find(&prefix) {
                rest = &rest[at + prefix.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .unwrap_or(rest.len());
                if valid_media_id(&rest[..end]) {
                    out.insert(rest[..end].to_owned());
                }
            }
        }
        JsonValue::Array(items) => items.iter().for_each(|v| media_ids_in(v, server, out)),
        JsonValue::Object(map) => map.values().for_each(|v| media_ids_in(v, server, out)),
        _ => {}
    }
}

impl Media {
    /// Deletes the media items the purge rules select (uploaded before `cutoff_ms` and not in
    /// `named`; a deactivated account's; expired pending IDs), then the files nothing names.
    pub(super) async fn purge(&self, cutoff_ms: u64, named: &HashSet<String>) -> Result<Purged> {
        let now = now_ms();
        let mut purged = Purged::default();
        let mut batch = Batch::default();
        let mut kept = HashSet::new();
        for item in self.core.store.scan(MEDIA.all()) {
            let ((id,), record) = item?;
            let delete = match &record.sha256 {
                None => record.expires_ms.is_none_or(|t| t <= now),
                Some(_) => {
                    self.withdrawn(&record)?
                        || (record.created_ms < cutoff_ms && !named.contains(&id))
                }
            };
            if delete {
                batch.delete(&MEDIA, &id);
                if let Some(user) = &record.uploader {
                    batch.delete(&USER_MEDIA, (user, &id));
                }
                purged.media += 1;
            } else if let Some(sha) = record.sha256 {
                kept.insert(sha);
            }
        }
        // The records go first: a file is deleted only once nothing can name it.
        self.core.write(batch).await?;
        let blobs = self.blobs.clone();
        let (files, bytes) = tokio::task::spawn_blocking(move || {
            let mut files = 0usize;
            let mut bytes = 0u64;
            let mut unnamed: Vec<String> = blobs
                .addresses()?
                .into_iter()
                .filter(|sha| !kept.contains(sha))
                .collect();
            unnamed.extend(
                blobs
                    .thumbnail_addresses()?
                    .into_iter()
                    .filter(|sha| !kept.contains(sha) && !blobs.path(sha).exists()),
            );
            for sha in unnamed.iter().filter(|sha| blobs::is_address(sha)) {
                bytes += blobs.remove(sha)?;
                files += 1;
            }
            Ok::<_, std::io::Error>((files, bytes))
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| Error::internal(format!("deleting media files: {e}")))?;
        purged.files = files;
        purged.bytes = bytes;
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_servers_media_in_any_string() {
        let server: &ServerName = "example.org".try_into().unwrap();
        let content = serde_json::json!({
            "url": "mxc://example.org/abc_DEF-1",
            "info": { "thumbnail_url": "mxc://example.org/thumb" },
            "formatted_body": "<img src=\"mxc://example.org/inline1\"> and <img src='mxc://example.org/inline2'>",
            "other": ["mxc://elsewhere.net/remote", "mxc://example.org/"],
        });
        let mut found = HashSet::new();
        media_ids_in(&content, server, &mut found);
        let mut found: Vec<_> = found.into_iter().collect();
        found.sort();
        assert_eq!(found, vec!["abc_DEF-1", "inline1", "inline2", "thumb"]);
    }
}

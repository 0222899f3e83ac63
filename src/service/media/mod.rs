//! The content repository ("media"): uploads (at once, or an ID first and the content later),
//! downloads, thumbnails ([`thumbnail`]) and URL previews ([`preview`]).
//!
//! A media item's metadata is a [`MediaRecord`] in the `MEDIA` table (and an entry per
//! uploader in `USER_MEDIA`, for quotas); its bytes are a content-addressed file ([`blobs`]),
//! written durably before the record that names it. Media of a deactivated account is no
//! longer served (404) and is deleted by `tsunagu admin media purge` ([`purge`]).
//!
//! Other servers' media is fetched over federation on first use and kept as a copy under
//! `{server}/{media_id}` (no local media ID has a `/`); the purge deletes old copies like any
//! unused media, and they are fetched again when asked for.

pub mod blobs;
pub mod preview;
mod purge;
pub mod thumbnail;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::StatusCode;
use ruma::{OwnedMxcUri, ServerName, UserId, api::error::ErrorKind};
use serde_json::{Value as JsonValue, json};
use tokio::sync::{Notify, Semaphore};

pub use purge::Purged;

use self::{
    blobs::Blobs,
    preview::{Fetched, PreviewError, Previewer},
    thumbnail::{Plan, Refusal},
};
use super::{
    core::{Core, now_ms, random_token},
    federation::{FedError, Federation},
    users::Users,
};
use crate::{
    error::{Error, Result},
    store::{Batch, MEDIA, MediaRecord, USER_MEDIA},
};

/// The longest a download waits for the content of an async upload (`timeout_ms` is capped to
/// it; the spec's default is 20 seconds).
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Longest `Content-Type` and `filename` kept with an upload.
const MAX_META_LEN: usize = 255;
/// How long a URL preview is answered from memory, and how many are kept.
const PREVIEW_TTL_MS: u64 = 60 * 60 * 1000;
const PREVIEW_CACHE: usize = 256;
/// Largest image a URL preview stores.
const MAX_PREVIEW_IMAGE: usize = 10 * 1024 * 1024;

/// The media repository. Depends on [`Core`] and [`Users`] (quotas are per user; a deactivated
/// user's media is not served).
pub struct Media {
    core: Arc<Core>,
    users: Arc<Users>,
    /// Fetches other servers' media.
    federation: Arc<Federation>,
    blobs: Arc<Blobs>,
    /// Woken whenever an async upload's content arrives, for the downloads waiting for it.
    uploaded: Notify,
    /// Thumbnails are made one at a time: decoding a photo takes tens of MiB. The permit
    /// travels with the blocking work, so a client that hangs up does not free it early.
    thumbnailing: Arc<Semaphore>,
    /// None when URL previews are off.
    previewer: Option<Previewer>,
    /// Recent previews by URL, with when they were made.
    previews: Mutex<HashMap<String, (u64, JsonValue)>>,
}

/// A content to answer with.
pub struct Content {
    pub body: ContentBody,
    pub size: u64,
    pub content_type: String,
    pub filename: Option<String>,
}

/// Where a content's bytes are.
pub enum ContentBody {
    /// A media file, to be streamed.
    File(tokio::fs::File),
    /// A thumbnail made for this request.
    Bytes(Vec<u8>),
}

fn unknown_media() -> Error {
    Error::not_found("Unknown media")
}

fn not_yet_uploaded() -> Error {
    Error::new(
        StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::NotYetUploaded,
        "The media's content has not been uploaded yet",
    )
}

/// A `Content-Type` or `filename` from a client: at most [`MAX_META_LEN`] bytes and no
/// control characters (they are repeated in response headers).
fn checked_meta(value: Option<String>, what: &str) -> Result<Option<String>> {
    match value {
        Some(v) if v.len() > MAX_META_LEN || v.chars().any(char::is_control) => Err(
            Error::invalid_param(format!("The {what} is too long or has control characters")),
        ),
        Some(v) if v.trim().is_empty() => Ok(None),
        v => Ok(v),
    }
}

/// Whether a media ID has only the characters the spec allows (`A-Za-z0-9_-`): IDs from
/// clients are checked before they reach the store.
pub fn valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Media {
    pub fn new(
        core: Arc<Core>,
        users: Arc<Users>,
        federation: Arc<Federation>,
    ) -> anyhow::Result<Self> {
        let blobs = Arc::new(Blobs::open(core.config.data_dir.join("media"))?);
        let previewer = if core.config.media.url_previews {
            Some(Previewer::new(
                core.config.media.url_preview_allow_loopback,
            )?)
        } else {
            None
        };
        Ok(Self {
            core,
            users,
            federation,
            blobs,
            uploaded: Notify::new(),
            thumbnailing: Arc::new(Semaphore::new(1)),
            previewer,
            previews: Mutex::default(),
        })
    }

    /// The largest upload, in bytes (`m.upload.size`).
    pub fn max_upload_size(&self) -> u64 {
        self.core.config.media.max_upload_size as u64
    }

    fn mxc(&self, id: &str) -> OwnedMxcUri {
        OwnedMxcUri::from(format!("mxc://{}/{id}", self.core.server_name()))
    }

    /// The local media ID of an `mxc://` URI's parts: 400 for an ID with other characters than
    /// the spec allows, 404 for another server's media (there is no federation yet).
    fn local_id<'a>(&self, server: &ServerName, media_id: &'a str) -> Result<&'a str> {
        if !valid_media_id(media_id) {
            return Err(Error::invalid_param(
                "A media ID has only the characters A-Z, a-z, 0-9, _ and -",
            ));
        }
        if server != self.core.server_name() {
            return Err(Error::not_found("Media of other servers is not available"));
        }
        Ok(media_id)
    }

    /// A user's stored bytes, their pending (not yet uploaded, not expired) media IDs, and
    /// when the first of those expires.
    fn usage(&self, user: &UserId) -> Result<(u64, usize, Option<u64>)> {
        let now = now_ms();
        let (mut bytes, mut pending, mut first_expiry) = (0u64, 0usize, None::<u64>);
        for item in self.core.store.scan(USER_MEDIA.prefix(user)) {
            let ((_, id), ()) = item?;
            let Some(record) = self.core.store.get(&MEDIA, &id)? else {
                continue;
            };
            bytes += record.size;
            if let (None, Some(expires)) = (&record.sha256, record.expires_ms)
                && expires > now
            {
                pending += 1;
                first_expiry = Some(first_expiry.map_or(expires, |f| f.min(expires)));
            }
        }
        Ok((bytes, pending, first_expiry))
    }

    fn check_quota(&self, user: &UserId, adding: u64) -> Result<()> {
        let quota = self.core.config.media.user_quota_bytes;
        let (used, _, _) = self.usage(user)?;
        if used.saturating_add(adding) > quota {
            return Err(Error::forbidden(format!(
                "Uploading this would exceed your media quota of {quota} bytes ({used} used)"
            )));
        }
        Ok(())
    }

    /// Writes a content's file (on the blocking pool) and returns its address.
    async fn store_file(&self, file: Vec<u8>) -> Result<String> {
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || blobs.store(&file))
            .await
            .map_err(Error::internal)?
            .map_err(|e| Error::internal(format!("writing a media file: {e}")))
    }

    /// `POST /upload`: stores the content under a new media ID.
    pub async fn upload(
        &self,
        user: &UserId,
        file: Vec<u8>,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<OwnedMxcUri> {
        let content_type = checked_meta(content_type, "content type")?;
        let filename = checked_meta(filename, "file name")?;
        let id = random_token(18);
        let lock = self.core.lock(&format!("media:{user}"));
        let _guard = lock.lock().await;
        self.check_quota(user, file.len() as u64)?;
        let size = file.len() as u64;
        // The file is durable before the record that names it.
        let sha = self.store_file(file).await?;
        let record = MediaRecord {
            uploader: Some(user.to_owned()),
            created_ms: now_ms(),
            sha256: Some(sha),
            size,
            content_type,
            filename,
            expires_ms: None,
        };
        let mut b = Batch::default();
        b.put(&MEDIA, &id, &record);
        b.put(&USER_MEDIA, (user, &id), &());
        self.core.write(b).await?;
        Ok(self.mxc(&id))
    }

    /// `POST /media/v1/create`: a media ID whose content the user uploads later, and when it
    /// expires.
    pub async fn create(&self, user: &UserId) -> Result<(OwnedMxcUri, u64)> {
        let config = &self.core.config.media;
        let lock = self.core.lock(&format!("media:{user}"));
        let _guard = lock.lock().await;
        let (_, pending, first_expiry) = self.usage(user)?;
        if pending >= config.max_pending_uploads {
            let wait = first_expiry.unwrap_or(0).saturating_sub(now_ms());
            return Err(Error::limit_exceeded(Duration::from_millis(wait.max(1000))));
        }
        let now = now_ms();
        let expires = now + config.pending_upload_expiry_secs * 1000;
        let id = random_token(18);
        let record = MediaRecord {
            uploader: Some(user.to_owned()),
            created_ms: now,
            sha256: None,
            size: 0,
            content_type: None,
            filename: None,
            expires_ms: Some(expires),
        };
        let mut b = Batch::default();
        b.put(&MEDIA, &id, &record);
        b.put(&USER_MEDIA, (user, &id), &());
        self.core.write(b).await?;
        Ok((self.mxc(&id), expires))
    }

    /// `PUT /upload/{serverName}/{mediaId}`: the content of a media ID made by `create`; only
    /// by its creator, once, before it expires.
    pub async fn upload_to(
        &self,
        user: &UserId,
        server: &ServerName,
        media_id: &str,
        file: Vec<u8>,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<()> {
        let id = self.local_id(server, media_id)?;
        let content_type = checked_meta(content_type, "content type")?;
        let filename = checked_meta(filename, "file name")?;
        let lock = self.core.lock(&format!("media:{user}"));
        let _guard = lock.lock().await;
        let mut record = self.core.store.get(&MEDIA, id)?.ok_or_else(unknown_media)?;
        if record.uploader.as_deref() != Some(user) {
            return Err(Error::forbidden(
                "Only the user who created this media ID may upload to it",
            ));
        }
        if record.sha256.is_some() {
            return Err(Error::new(
                StatusCode::CONFLICT,
                ErrorKind::CannotOverwriteMedia,
                "This media ID already has its content",
            ));
        }
        if record.expires_ms.is_some_and(|t| t <= now_ms()) {
            return Err(Error::not_found("This media ID has expired"));
        }
        self.check_quota(user, file.len() as u64)?;
        record.size = file.len() as u64;
        record.sha256 = Some(self.store_file(file).await?);
        record.content_type = content_type;
        record.filename = filename;
        record.expires_ms = None;
        let mut b = Batch::default();
        b.put(&MEDIA, id, &record);
        self.core.write(b).await?;
        self.uploaded.notify_waiters();
        Ok(())
    }

    /// Whether a media item is no longer served: its uploader's account is deactivated.
    fn withdrawn(&self, record: &MediaRecord) -> Result<bool> {
        let Some(user) = &record.uploader else {
            return Ok(false);
        };
        Ok(self.users.account(user)?.is_some_and(|a| a.deactivated))
    }

    /// The record of a media item with content, waiting up to `wait` (at most [`MAX_WAIT`])
    /// for an async upload's content: 504 `M_NOT_YET_UPLOADED` when it does not come.
    async fn with_content(
        &self,
        server: &ServerName,
        media_id: &str,
        wait: Duration,
    ) -> Result<(MediaRecord, String)> {
        if server != self.core.server_name() {
            return self.remote_content(server, media_id).await;
        }
        let id = self.local_id(server, media_id)?;
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        let mut stopping = self.core.shutdown_signal();
        loop {
            // Registered before the check, so an upload between the two is not missed.
            let uploaded = self.uploaded.notified();
            tokio::pin!(uploaded);
            uploaded.as_mut().enable();
            let record = self.core.store.get(&MEDIA, id)?.ok_or_else(unknown_media)?;
            if let Some(sha) = record.sha256.clone() {
                if self.withdrawn(&record)? || !blobs::is_address(&sha) {
                    return Err(unknown_media());
                }
                return Ok((record, sha));
            }
            if record.expires_ms.is_some_and(|t| t <= now_ms()) {
                return Err(unknown_media());
            }
            tokio::select! {
                _ = &mut uploaded => {}
                _ = tokio::time::sleep_until(deadline) => return Err(not_yet_uploaded()),
                _ = stopping.wait_for(|s| *s) => return Err(not_yet_uploaded()),
            }
        }
    }

    /// Another server's media: from this server's copy, else fetched (at most
    /// `max_upload_size` bytes) and kept under `{server}/{media_id}`, which no local media ID
    /// can be. Copies are purged like unused local media (`admin media purge`).
    async fn remote_content(
        &self,
        server: &ServerName,
        media_id: &str,
    ) -> Result<(MediaRecord, String)> {
        if !valid_media_id(media_id) {
            return Err(Error::invalid_param(
                "A media ID has only the characters A-Z, a-z, 0-9, _ and -",
            ));
        }
        let key = format!("{server}/{media_id}");
        if let Some(record) = self.core.store.get(&MEDIA, key.as_str())?
            && let Some(sha) = record.sha256.clone()
            && blobs::is_address(&sha)
            && self.blobs.path(&sha).exists()
        {
            return Ok((record, sha));
        }
        let cap = self.core.config.media.max_upload_size;
        let file = self
            .federation
            .remote_media(server, media_id, cap)
            .await
            .map_err(|e| match e {
                FedError::Disabled | FedError::NotPermitted(_) => unknown_media(),
                e if e.is_not_found() => unknown_media(),
                e => Error::new(
                    http::StatusCode::BAD_GATEWAY,
                    ruma::api::error::ErrorKind::Unknown,
                    e.to_string(),
                ),
            })?;
        let size = file.bytes.len() as u64;
        let sha = self.store_file(file.bytes).await?;
        let record = MediaRecord {
            uploader: None,
            created_ms: now_ms(),
            sha256: Some(sha.clone()),
            size,
            content_type: file.content_type,
            filename: file.filename,
            expires_ms: None,
        };
        let mut batch = Batch::default();
        batch.put(&MEDIA, key.as_str(), &record);
        self.core.write(batch).await?;
        Ok((record, sha))
    }

    async fn open(&self, sha: &str) -> Result<tokio::fs::File> {
        match tokio::fs::File::open(self.blobs.path(sha)).await {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(sha, "a media file is missing from the media directory");
                Err(unknown_media())
            }
            Err(e) => Err(Error::internal(format!("opening a media file: {e}"))),
        }
    }

    /// `GET /download/{serverName}/{mediaId}`: the content as uploaded.
    pub async fn download(
        &self,
        server: &ServerName,
        media_id: &str,
        wait: Duration,
    ) -> Result<Content> {
        let (record, sha) = self.with_content(server, media_id, wait).await?;
        Ok(Content {
            body: ContentBody::File(self.open(&sha).await?),
            size: record.size,
            content_type: record
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into()),
            filename: record.filename,
        })
    }

    /// `GET /thumbnail/{serverName}/{mediaId}`: a `width` x `height` thumbnail (`crop` fills
    /// the box, else the image is scaled to fit it), kept on disk for the next request; the
    /// image itself when it is no larger than asked.
    pub async fn thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        (width, height): (u32, u32),
        crop: bool,
        wait: Duration,
    ) -> Result<Content> {
        if width == 0 || height == 0 {
            return Err(Error::invalid_param("width and height must be at least 1"));
        }
        let (_, sha) = self.with_content(server, media_id, wait).await?;
        let dir = self.blobs.thumbnail_dir(&sha);
        if let Some((path, format)) = thumbnail::cached(&dir, width, height, crop) {
            return self.thumbnail_file(&path, format).await;
        }
        let file = self.blobs.path(&sha);
        let max_pixels = self.core.config.media.max_thumbnail_pixels;
        // The header first, without waiting for a decode: small images (avatars) are their own
        // thumbnails, and bombs are refused at once.
        let plan = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || {
                thumbnail::plan(&file, width, height, crop, max_pixels)
            })
            .await
            .map_err(Error::internal)?
            .map_err(refusal)?
        };
        let measured = match plan {
            Plan::Original(format) => {
                let file = self.open(&sha).await?;
                let size = file.metadata().await.map_err(Error::internal)?.len();
                return Ok(Content {
                    body: ContentBody::File(file),
                    size,
                    content_type: thumbnail::mime(format).into(),
                    filename: Some(thumbnail_name(format)),
                });
            }
            Plan::Resize {
                format,
                width,
                height,
            } => (format, width, height),
        };
        let turn = self
            .thumbnailing
            .clone()
            .acquire_owned()
            .await
            .map_err(Error::internal)?;
        let blobs = self.blobs.clone();
        let made = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            // Another request may have made it while this one waited its turn.
            if let Some(hit) = thumbnail::cached(&dir, width, height, crop) {
                return Ok(Made::Kept(hit.0, hit.1));
            }
            let (bytes, format) =
                thumbnail::render(&file, measured, (width, height), crop, max_pixels)?;
            if thumbnail::may_keep(&dir) {
                let name = thumbnail::cache_name(width, height, crop, format);
                if let Err(e) = blobs.write_atomically(&dir.join(name), &bytes) {
                    tracing::warn!("keeping a thumbnail: {e}");
                }
            }
            Ok(Made::New(bytes, format))
        })
        .await
        .map_err(Error::internal)?
        .map_err(refusal)?;
        match made {
            Made::New(bytes, format) => Ok(Content {
                size: bytes.len() as u64,
                body: ContentBody::Bytes(bytes),
                content_type: thumbnail::mime(format).into(),
                filename: Some(thumbnail_name(format)),
            }),
            Made::Kept(path, format) => self.thumbnail_file(&path, format).await,
        }
    }

    async fn thumbnail_file(
        &self,
        path: &std::path::Path,
        format: image::ImageFormat,
    ) -> Result<Content> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::internal(format!("opening a thumbnail: {e}")))?;
        let size = file.metadata().await.map_err(Error::internal)?.len();
        Ok(Content {
            body: ContentBody::File(file),
            size,
            content_type: thumbnail::mime(format).into(),
            filename: Some(thumbnail_name(format)),
        })
    }

    /// `GET /preview_url`: the OpenGraph data of a page (its image stored as media), or 404
    /// `M_UNRECOGNIZED` while URL previews are off.
    pub async fn preview(&self, url: &str) -> Result<JsonValue> {
        let Some(previewer) = &self.previewer else {
            return Err(Error::new(
                StatusCode::NOT_FOUND,
                ErrorKind::Unrecognized,
                "URL previews are turned off on this server",
            ));
        };
        let url = Previewer::parse(url).map_err(preview_error)?;
        let now = now_ms();
        if let Some((made, value)) = self.previews_cache().get(url.as_str())
            && now.saturating_sub(*made) < PREVIEW_TTL_MS
        {
            return Ok(value.clone());
        }
        let value =
            tokio::time::timeout(preview::DEADLINE, self.make_preview(previewer, url.clone()))
                .await
                .map_err(|_| preview_error(PreviewError::Failed("the page took too long".into())))?
                .map_err(preview_error)?;
        let mut cache = self.previews_cache();
        if cache.len() >= PREVIEW_CACHE {
            cache.retain(|_, (made, _)| now.saturating_sub(*made) < PREVIEW_TTL_MS);
            if cache.len() >= PREVIEW_CACHE {
                cache.clear();
            }
        }
        cache.insert(url.to_string(), (now, value.clone()));
        Ok(value)
    }

    fn previews_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, JsonValue)>> {
        self.previews.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn make_preview(
        &self,
        previewer: &Previewer,
        url: reqwest::Url,
    ) -> std::result::Result<JsonValue, PreviewError> {
        let max_image = MAX_PREVIEW_IMAGE.min(self.core.config.media.max_upload_size);
        let is_html = |ct: &str| matches!(ct, "text/html" | "application/xhtml+xml");
        let page = previewer
            .fetch(url, |ct| {
                if ct.starts_with("image/") {
                    max_image
                } else if is_html(ct) {
                    preview::MAX_PAGE_BYTES
                } else {
                    0
                }
            })
            .await?;
        let mut out = serde_json::Map::new();
        let image = if page.content_type.starts_with("image/") {
            Some(page)
        } else if is_html(&page.content_type) {
            let html = String::from_utf8_lossy(&page.body);
            let mut image_url = None;
            for (key, value) in preview::open_graph(&html) {
                if key == "og:image" {
                    image_url = page.url.join(&value).ok();
                } else if !key.starts_with("og:image") {
                    out.insert(key, value.into());
                }
            }
            match image_url {
                // A page without its image is still a preview.
                Some(u) => previewer
                    .fetch(u, |ct| {
                        if ct.starts_with("image/") {
                            max_image
                        } else {
                            0
                        }
                    })
                    .await
                    .ok(),
                None => None,
            }
        } else {
            None
        };
        if let Some(image) = image
            && let Some(preview) = self.store_preview_image(image).await
        {
            out.extend(preview);
        }
        Ok(JsonValue::Object(out))
    }

    /// Stores a preview's image as media made by the server (no uploader, no quota) and
    /// returns its `og:image*` fields. Only a complete image of a decoded format is kept: the
    /// preview is no way to make the server store any file from the web.
    async fn store_preview_image(
        &self,
        image: Fetched,
    ) -> Option<serde_json::Map<String, JsonValue>> {
        if image.truncated {
            return None;
        }
        let (format, width, height) = thumbnail::measure(&image.body)?;
        let size = image.body.len() as u64;
        let sha = self.store_file(image.body).await.ok()?;
        let id = random_token(18);
        let record = MediaRecord {
            uploader: None,
            created_ms: now_ms(),
            sha256: Some(sha),
            size,
            content_type: Some(thumbnail::mime(format).into()),
            filename: None,
            expires_ms: None,
        };
        let mut b = Batch::default();
        b.put(&MEDIA, &id, &record);
        self.core.write(b).await.ok()?;
        let fields = json!({
            "og:image": self.mxc(&id),
            "og:image:type": thumbnail::mime(format),
            "og:image:width": width,
            "og:image:height": height,
            "matrix:image:size": size,
        });
        fields.as_object().cloned()
    }
}

/// A refused thumbnail as the spec's error: 400 for what is no image, 413 for one too large.
fn refusal(refusal: Refusal) -> Error {
    match refusal {
        Refusal::NotAnImage(why) => Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unknown,
            format!("Cannot make a thumbnail of this content: {why}"),
        ),
        Refusal::TooLarge { width, height } => Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooLarge,
            format!("The image ({width}x{height}) is too large to make a thumbnail of"),
        ),
        Refusal::Io(e) if e.kind() == std::io::ErrorKind::NotFound => unknown_media(),
        Refusal::Io(e) => Error::internal(format!("making a thumbnail: {e}")),
    }
}

/// A thumbnail made for a request, or found kept on disk by the time its turn came.
enum Made {
    New(Vec<u8>, image::ImageFormat),
    Kept(std::path::PathBuf, image::ImageFormat),
}

fn thumbnail_name(format: image::ImageFormat) -> String {
    let ext = format.extensions_str().first().copied().unwrap_or("img");
    format!("thumbnail.{ext}")
}

fn preview_error(e: PreviewError) -> Error {
    match e {
        PreviewError::BadUrl(m) => Error::invalid_param(m),
        PreviewError::Refused(m) => Error::forbidden(m),
        PreviewError::Failed(m) => Error::new(
            StatusCode::BAD_GATEWAY,
            ErrorKind::Unknown,
            format!("Cannot preview the URL: {m}"),
        ),
    }
}

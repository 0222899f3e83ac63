//! The content repository: two people exchange an image and its thumbnail with matrix-sdk, an
//! encrypted file decrypts on the other side, the async upload, the headers of downloads,
//! thumbnails (crop, scale, decompression bombs), limits and quotas, every refusal, URL
//! previews (off by default, SSRF refusals), a deactivated user's media, and the operator's
//! purge.

use crate::common;

use std::{
    io::Cursor,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{Account, TestServer, WAIT, assert_error, client::private_room, http::password_auth};
use matrix_sdk::{
    attachment::AttachmentConfig,
    media::{MediaFormat, MediaRequestParameters, MediaThumbnailSettings},
    ruma::{
        OwnedMxcUri, UInt,
        api::{Metadata, client::authenticated_media, client::room::create_room},
        events::room::{
            EncryptedFile, MediaSource,
            message::{ImageMessageEventContent, RoomMessageEventContent},
        },
        media::Method,
    },
};
use serde_json::{Value, json};

// ---- raw HTTP with bytes ------------------------------------------------------------------

/// An answer with its headers and raw body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// As `(status, JSON)`, for [`assert_error`].
    fn error(&self) -> (u16, Value) {
        (self.status, self.json())
    }
}

async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&[u8], &str)>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some((bytes, content_type)) = body {
        req = req
            .header("content-type", content_type)
            .body(bytes.to_vec());
    }
    let res = req.send().await.expect("request sent");
    Answer {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: res.bytes().await.unwrap_or_default().to_vec(),
    }
}

/// `POST /_matrix/media/v3/upload`, asserting a 200; returns the `mxc://` URI.
async fn upload(
    t: &TestServer,
    who: &Account,
    bytes: &[u8],
    content_type: &str,
    filename: Option<&str>,
) -> String {
    let path = match filename {
        Some(name) => format!(
            "/_matrix/media/v3/upload?filename={}",
            common::http::urlencode(name)
        ),
        None => "/_matrix/media/v3/upload".to_owned(),
    };
    let res = call(
        &t.url(),
        "POST",
        &path,
        Some(&who.token),
        Some((bytes, content_type)),
    )
    .await;
    assert_eq!(res.status, 200, "upload: {}", res.json());
    res.json()["content_uri"].as_str().unwrap().to_owned()
}

/// `server/mediaId` of an `mxc://` URI.
fn media_path(mxc: &str) -> &str {
    mxc.strip_prefix("mxc://").unwrap()
}

/// `GET /_matrix/client/v1/media/download/…` as `who`.
async fn download(t: &TestServer, who: &Account, mxc: &str) -> Answer {
    let path = format!("/_matrix/client/v1/media/download/{}", media_path(mxc));
    call(&t.url(), "GET", &path, Some(&who.token), None).await
}

/// `GET /_matrix/client/v1/media/thumbnail/…?width&height&method` as `who`.
async fn thumbnail(
    t: &TestServer,
    who: &Account,
    mxc: &str,
    w: u32,
    h: u32,
    method: &str,
) -> Answer {
    let path = format!(
        "/_matrix/client/v1/media/thumbnail/{}?width={w}&height={h}&method={method}",
        media_path(mxc)
    );
    call(&t.url(), "GET", &path, Some(&who.token), None).await
}

// ---- images -------------------------------------------------------------------------------

fn image(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 90])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(pixels)
        .write_to(&mut Cursor::new(&mut out), format)
        .unwrap();
    out
}

fn png(width: u32, height: u32) -> Vec<u8> {
    image(width, height, image::ImageFormat::Png)
}

fn size_of(bytes: &[u8]) -> (u32, u32) {
    image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .unwrap()
        .into_dimensions()
        .unwrap()
}

/// A real 1x1 PNG whose header claims `width` x `height`: a few hundred bytes that would need
/// gigabytes to decode.
fn bomb_png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(1, 1);
    // Signature (8), IHDR length (4) and type (4), then width and height.
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---- matrix-sdk: images, thumbnails and encrypted files ------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_exchange_an_image_and_its_thumbnail() {
    let t = TestServer::start().await;
    let alice = common::user(&t, "alice").await;
    let bob = common::user(&t, "bob").await;
    // The server announces v1.11, so matrix-sdk (as Element X) uses /_matrix/client/v1/media.
    let versions = bob.client.supported_versions().await.unwrap();
    assert!(authenticated_media::get_content::v1::Request::PATH_BUILDER.is_supported(&versions));

    let mut req = create_room::v3::Request::new();
    req.preset = Some(create_room::v3::RoomPreset::PublicChat);
    req.invite = vec![bob.id()];
    let room = alice.client.create_room(req).await.unwrap();
    bob.accept_invite(room.room_id()).await;

    let photo = image(640, 480, image::ImageFormat::Jpeg);
    let uploaded = alice
        .client
        .media()
        .upload(&mime::IMAGE_JPEG, photo.clone(), None)
        .await
        .expect("upload");
    let content = ImageMessageEventContent::plain("harbour.jpg".into(), uploaded.content_uri);
    room.send(RoomMessageEventContent::new(
        matrix_sdk::ruma::events::room::message::MessageType::Image(content),
    ))
    .await
    .unwrap();

    let seen = bob.receives("harbour.jpg").await;
    assert_eq!(seen.content["msgtype"], "m.image");
    let uri = OwnedMxcUri::from(seen.content["url"].as_str().unwrap());
    let media = bob.client.media();
    let file = media
        .get_media_content(
            &MediaRequestParameters {
                source: MediaSource::Plain(uri.clone()),
                format: MediaFormat::File,
            },
            false,
        )
        .await
        .expect("download");
    assert_eq!(file, photo, "bob gets alice's bytes");
    let thumb = media
        .get_media_content(
            &MediaRequestParameters {
                source: MediaSource::Plain(uri),
                format: MediaFormat::Thumbnail(MediaThumbnailSettings::with_method(
                    Method::Scale,
                    UInt::from(320u32),
                    UInt::from(240u32),
                )),
            },
            false,
        )
        .await
        .expect("thumbnail");
    assert_eq!(
        size_of(&thumb),
        (320, 240),
        "scaled to fit 320x240, aspect kept"
    );
    assert_eq!(
        image::guess_format(&thumb).unwrap(),
        image::ImageFormat::Jpeg,
        "a photo's thumbnail stays JPEG"
    );
    drop((alice, bob));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_file_decrypts_on_the_other_side() {
    let t = TestServer::start().await;
    let alice = common::user(&t, "alice").await;
    let bob = common::user(&t, "bob").await;
    let room_id = private_room(&alice, "Board", &[&bob], &[]).await;
    let room = alice.room(&room_id).await;
    assert!(room.latest_encryption_state().await.unwrap().is_encrypted());

    let minutes = b"Minutes of the board meeting: the summer party is on.".to_vec();
    room.send_attachment(
        "minutes.txt",
        &mime::TEXT_PLAIN,
        minutes.clone(),
        AttachmentConfig::new(),
    )
    .await
    .expect("attachment sent");

    let seen = bob.receives_encrypted("minutes.txt").await;
    assert_eq!(seen.content["msgtype"], "m.file");
    assert!(
        seen.content.get("url").is_none(),
        "no plain URL in an encrypted room"
    );
    let file: EncryptedFile = serde_json::from_value(seen.content["file"].clone()).unwrap();
    let mxc = file.url.to_string();
    let got = bob
        .client
        .media()
        .get_media_content(
            &MediaRequestParameters {
                source: MediaSource::Encrypted(Box::new(file)),
                format: MediaFormat::File,
            },
            false,
        )
        .await
        .expect("download and decrypt");
    assert_eq!(got, minutes, "bob decrypts alice's bytes");

    // The server holds opaque bytes only.
    let raw = call(
        &t.url(),
        "GET",
        &format!("/_matrix/client/v1/media/download/{}", media_path(&mxc)),
        Some(&bob.client.access_token().unwrap()),
        None,
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-type"), "application/octet-stream");
    assert!(raw.header("content-disposition").starts_with("attachment"));
    assert_ne!(raw.body, minutes);
    assert!(!raw.body.windows(7).any(|w| w == b"Minutes"));
    drop((alice, bob));
    t.stop().await;
}

// ---- raw HTTP ------------------------------------------------------------------------------

#[tokio::test]
async fn downloads_carry_disposition_and_safety_headers() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;

    // Not a safe type: an attachment, with the uploader's file name.
    let page = upload(
        &t,
        &alice,
        b"<script>alert(1)</script>",
        "text/html",
        Some("page.html"),
    )
    .await;
    let res = download(&t, &bob, &page).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"<script>alert(1)</script>");
    assert_eq!(res.header("content-type"), "text/html");
    assert_eq!(
        res.header("content-disposition"),
        "attachment; filename=page.html"
    );
    assert_eq!(res.header("x-content-type-options"), "nosniff");
    assert!(
        res.header("content-security-policy")
            .starts_with("sandbox; default-src 'none'; script-src 'none';"),
        "{}",
        res.header("content-security-policy")
    );
    assert_eq!(res.header("cross-origin-resource-policy"), "cross-origin");
    assert_eq!(res.header("content-length"), "25");

    // A safe type: inline; a name outside ASCII is written as RFC 6266 `filename*=`.
    let photo = png(8, 8);
    let cafe = upload(&t, &alice, &photo, "image/png", Some("café.png")).await;
    let res = download(&t, &bob, &cafe).await;
    assert_eq!(res.header("content-type"), "image/png");
    assert_eq!(
        res.header("content-disposition"),
        "inline; filename*=utf-8''caf%C3%A9.png"
    );
    // The file name in the path replaces the uploader's.
    let res = call(
        &t.url(),
        "GET",
        &format!(
            "/_matrix/client/v1/media/download/{}/menu.png",
            media_path(&cafe)
        ),
        Some(&bob.token),
        None,
    )
    .await;
    assert_eq!(
        res.header("content-disposition"),
        "inline; filename=menu.png"
    );
    // No file name at upload: none in the header.
    let plain = upload(&t, &alice, b"just text", "text/plain; charset=utf-8", None).await;
    let res = download(&t, &bob, &plain).await;
    assert_eq!(res.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(res.header("content-disposition"), "inline");

    // A thumbnail is inline, with a name the server gives it.
    let big = upload(&t, &alice, &png(100, 100), "image/png", Some("big.png")).await;
    let res = thumbnail(&t, &bob, &big, 32, 32, "crop").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), "image/png");
    assert_eq!(
        res.header("content-disposition"),
        "inline; filename=thumbnail.png"
    );
    assert_eq!(res.header("x-content-type-options"), "nosniff");

    // CORS, for web clients.
    let res = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{}",
            t.url(),
            media_path(&cafe)
        ))
        .bearer_auth(&bob.token)
        .header("origin", "https://app.element.io")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");

    // The deprecated unauthenticated download serves the same file, with the same headers.
    let res = call(
        &t.url(),
        "GET",
        &format!("/_matrix/media/v3/download/{}", media_path(&page)),
        None,
        None,
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-disposition"),
        "attachment; filename=page.html"
    );
    assert_eq!(res.header("x-content-type-options"), "nosniff");
    let res = call(
        &t.url(),
        "GET",
        &format!("/_matrix/media/r0/download/{}", media_path(&page)),
        None,
        None,
    )
    .await;
    assert_eq!(res.status, 200, "the r0 path too");
    t.stop().await;
}

#[tokio::test]
async fn async_upload_by_its_creator_once_and_waiting_downloads() {
    let t = TestServer::start_with(|c| c.media.max_pending_uploads = 2).await;
    let alice = t.http.register("alice").await;
    let eve = t.http.register("eve").await;
    let base = t.url();

    let res = call(
        &base,
        "POST",
        "/_matrix/media/v1/create",
        Some(&alice.token),
        None,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.json());
    let mxc = res.json()["content_uri"].as_str().unwrap().to_owned();
    let expires = res.json()["unused_expires_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(expires > now + 23 * 3600 * 1000, "expires in 24 hours");

    // Before the content: 504 M_NOT_YET_UPLOADED once timeout_ms runs out.
    let path = format!("/_matrix/client/v1/media/download/{}", media_path(&mxc));
    let res = call(
        &base,
        "GET",
        &format!("{path}?timeout_ms=50"),
        Some(&eve.token),
        None,
    )
    .await;
    assert_error(&res.error(), 504, "M_NOT_YET_UPLOADED");
    let thumb = format!(
        "/_matrix/client/v1/media/thumbnail/{}?width=8&height=8&timeout_ms=50",
        media_path(&mxc)
    );
    let res = call(&base, "GET", &thumb, Some(&eve.token), None).await;
    assert_error(&res.error(), 504, "M_NOT_YET_UPLOADED");

    // A download that waits gets the content as soon as it arrives.
    let waiting = {
        let (base, token, path) = (base.clone(), eve.token.clone(), path.clone());
        tokio::spawn(async move {
            call(
                &base,
                "GET",
                &format!("{path}?timeout_ms=30000"),
                Some(&token),
                None,
            )
            .await
        })
    };

    let put = format!(
        "/_matrix/media/v3/upload/{}?filename=notes.txt",
        media_path(&mxc)
    );
    // Only the creator uploads.
    let res = call(
        &base,
        "PUT",
        &put,
        Some(&eve.token),
        Some((b"eve's", "text/plain")),
    )
    .await;
    assert_error(&res.error(), 403, "M_FORBIDDEN");
    let res = call(
        &base,
        "PUT",
        &put,
        Some(&alice.token),
        Some((b"the notes", "text/plain")),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.json());
    assert_eq!(res.json(), json!({}));
    // Once.
    let res = call(
        &base,
        "PUT",
        &put,
        Some(&alice.token),
        Some((b"other", "text/plain")),
    )
    .await;
    assert_error(&res.error(), 409, "M_CANNOT_OVERWRITE_MEDIA");

    let got = tokio::time::timeout(Duration::from_secs(WAIT), waiting)
        .await
        .expect("the waiting download answers")
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"the notes");
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=notes.txt"
    );

    // Unknown and foreign media IDs.
    let res = call(
        &base,
        "PUT",
        "/_matrix/media/v3/upload/localhost/NoSuchMediaId",
        Some(&alice.token),
        Some((b"x", "text/plain")),
    )
    .await;
    assert_error(&res.error(), 404, "M_NOT_FOUND");
    // An ID made by a direct upload is not open for a PUT.
    let direct = upload(&t, &alice, b"direct", "text/plain", None).await;
    let res = call(
        &base,
        "PUT",
        &format!("/_matrix/media/v3/upload/{}", media_path(&direct)),
        Some(&alice.token),
        Some((b"x", "text/plain")),
    )
    .await;
    assert_error(&res.error(), 409, "M_CANNOT_OVERWRITE_MEDIA");

    // Pending uploads per user are limited (2 here): the third waits with 429.
    for _ in 0..2 {
        let res = call(
            &base,
            "POST",
            "/_matrix/media/v1/create",
            Some(&alice.token),
            None,
        )
        .await;
        assert_eq!(res.status, 200);
    }
    let res = call(
        &base,
        "POST",
        "/_matrix/media/v1/create",
        Some(&alice.token),
        None,
    )
    .await;
    assert_error(&res.error(), 429, "M_LIMIT_EXCEEDED");
    assert!(res.json()["retry_after_ms"].as_u64().unwrap() > 1000);
    // Others are not held back by alice's.
    let res = call(
        &base,
        "POST",
        "/_matrix/media/v1/create",
        Some(&eve.token),
        None,
    )
    .await;
    assert_eq!(res.status, 200);
    t.stop().await;
}

#[tokio::test]
async fn an_unused_media_id_expires() {
    let t = TestServer::start_with(|c| c.media.pending_upload_expiry_secs = 1).await;
    let alice = t.http.register("alice").await;
    let res = call(
        &t.url(),
        "POST",
        "/_matrix/media/v1/create",
        Some(&alice.token),
        None,
    )
    .await;
    let mxc = res.json()["content_uri"].as_str().unwrap().to_owned();
    let path = format!(
        "/_matrix/client/v1/media/download/{}?timeout_ms=0",
        media_path(&mxc)
    );
    let res = call(&t.url(), "GET", &path, Some(&alice.token), None).await;
    assert_error(&res.error(), 504, "M_NOT_YET_UPLOADED");
    common::eventually(WAIT, "the media ID to expire", || async {
        let res = call(&t.url(), "GET", &path, Some(&alice.token), None).await;
        (res.status == 404).then_some(())
    })
    .await;
    let res = call(
        &t.url(),
        "PUT",
        &format!("/_matrix/media/v3/upload/{}", media_path(&mxc)),
        Some(&alice.token),
        Some((b"late", "text/plain")),
    )
    .await;
    assert_error(&res.error(), 404, "M_NOT_FOUND");
    t.stop().await;
}

#[tokio::test]
async fn uploads_over_the_size_limit_get_413() {
    let t = TestServer::start_with(|c| c.media.max_upload_size = 4096).await;
    let alice = t.http.register("alice").await;
    for path in [
        "/_matrix/client/v1/media/config",
        "/_matrix/media/v3/config",
    ] {
        let config = t.http.get_ok(path, Some(&alice.token)).await;
        assert_eq!(config["m.upload.size"], 4096, "{path}");
    }
    let res = call(
        &t.url(),
        "POST",
        "/_matrix/media/v3/upload",
        Some(&alice.token),
        Some((&[7u8; 4097], "application/octet-stream")),
    )
    .await;
    assert_error(&res.error(), 413, "M_TOO_LARGE");
    // Exactly the limit is fine; so is an empty file, which stays empty.
    let full = upload(&t, &alice, &[7u8; 4096], "application/octet-stream", None).await;
    assert_eq!(download(&t, &alice, &full).await.body.len(), 4096);
    let empty = upload(&t, &alice, b"", "text/plain", None).await;
    let res = download(&t, &alice, &empty).await;
    assert_eq!((res.status, res.body.len()), (200, 0));
    // Larger than the limit, but much smaller than max_request_size: uploads have their own.
    let res = call(
        &t.url(),
        "POST",
        "/_matrix/media/v1/create",
        Some(&alice.token),
        None,
    )
    .await;
    let mxc = res.json()["content_uri"].as_str().unwrap().to_owned();
    let res = call(
        &t.url(),
        "PUT",
        &format!("/_matrix/media/v3/upload/{}", media_path(&mxc)),
        Some(&alice.token),
        Some((&[1u8; 5000], "application/octet-stream")),
    )
    .await;
    assert_error(&res.error(), 413, "M_TOO_LARGE");
    t.stop().await;
}

#[tokio::test]
async fn uploads_past_the_quota_get_403() {
    let t = TestServer::start_with(|c| c.media.user_quota_bytes = 10_000).await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    upload(&t, &alice, &[1u8; 6000], "application/octet-stream", None).await;
    let res = call(
        &t.url(),
        "POST",
        "/_matrix/media/v3/upload",
        Some(&alice.token),
        Some((&[2u8; 6000], "application/octet-stream")),
    )
    .await;
    assert_error(&res.error(), 403, "M_FORBIDDEN");
    // What still fits is accepted.
    upload(&t, &alice, &[3u8; 4000], "application/octet-stream", None).await;
    // The async upload counts too.
    let res = call(
        &t.url(),
        "POST",
        "/_matrix/media/v1/create",
        Some(&alice.token),
        None,
    )
    .await;
    let mxc = res.json()["content_uri"].as_str().unwrap().to_owned();
    let res = call(
        &t.url(),
        "PUT",
        &format!("/_matrix/media/v3/upload/{}", media_path(&mxc)),
        Some(&alice.token),
        Some((b"x", "text/plain")),
    )
    .await;
    assert_error(&res.error(), 403, "M_FORBIDDEN");
    // The quota is alice's, not the server's.
    upload(&t, &bob, &[4u8; 6000], "application/octet-stream", None).await;
    t.stop().await;
}

#[tokio::test]
async fn media_refusals_are_the_specs_errors() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let base = t.url();
    let text = upload(&t, &alice, b"not an image", "text/plain", None).await;

    // Unauthenticated /v1 calls: 401.
    for path in [
        format!("/_matrix/client/v1/media/download/{}", media_path(&text)),
        format!(
            "/_matrix/client/v1/media/download/{}/x.txt",
            media_path(&text)
        ),
        format!(
            "/_matrix/client/v1/media/thumbnail/{}?width=8&height=8",
            media_path(&text)
        ),
        "/_matrix/client/v1/media/config".to_owned(),
        "/_matrix/client/v1/media/preview_url?url=https://example.org".to_owned(),
    ] {
        let res = call(&base, "GET", &path, None, None).await;
        assert_error(&res.error(), 401, "M_MISSING_TOKEN");
        let res = call(&base, "GET", &path, Some("not-a-token"), None).await;
        assert_error(&res.error(), 401, "M_UNKNOWN_TOKEN");
    }
    for (method, path) in [
        ("POST", "/_matrix/media/v3/upload"),
        ("POST", "/_matrix/media/v1/create"),
        ("PUT", "/_matrix/media/v3/upload/localhost/abc"),
    ] {
        let res = call(&base, method, path, None, Some((b"x", "text/plain"))).await;
        assert_error(&res.error(), 401, "M_MISSING_TOKEN");
    }

    // Unknown media: 404; IDs with characters the spec does not allow, or a server name that
    // is not one: 400; other servers' media: 404 (no federation).
    for (path, status, errcode) in [
        ("localhost/NoSuchMedia", 404, "M_NOT_FOUND"),
        ("other.example/abc", 404, "M_NOT_FOUND"),
        ("localhost/bad.id", 400, "M_INVALID_PARAM"),
        ("localhost/%2E%2E%2Fetc", 400, "M_INVALID_PARAM"),
        ("not_a_server!/abc", 400, "M_BAD_JSON"),
    ] {
        for prefix in [
            "/_matrix/client/v1/media/download",
            "/_matrix/media/v3/download",
        ] {
            let res = call(
                &base,
                "GET",
                &format!("{prefix}/{path}"),
                Some(&alice.token),
                None,
            )
            .await;
            assert_error(&res.error(), status, errcode);
        }
        let res = call(
            &base,
            "GET",
            &format!("/_matrix/client/v1/media/thumbnail/{path}?width=8&height=8"),
            Some(&alice.token),
            None,
        )
        .await;
        assert_error(&res.error(), status, errcode);
    }

    // Thumbnails: of something that is not an image 400; sizes and methods that make no sense 400.
    let res = thumbnail(&t, &alice, &text, 32, 32, "scale").await;
    assert_error(&res.error(), 400, "M_UNKNOWN");
    let photo = upload(&t, &alice, &png(64, 64), "image/png", None).await;
    let res = thumbnail(&t, &alice, &photo, 0, 32, "scale").await;
    assert_error(&res.error(), 400, "M_INVALID_PARAM");
    let res = thumbnail(&t, &alice, &photo, 32, 32, "zoom").await;
    assert_error(&res.error(), 400, "M_INVALID_PARAM");
    let res = call(
        &base,
        "GET",
        &format!(
            "/_matrix/client/v1/media/thumbnail/{}?width=-5&height=8",
            media_path(&photo)
        ),
        Some(&alice.token),
        None,
    )
    .await;
    assert_eq!(res.status, 400);
    // A filename with a line break would end up in a header: refused.
    let res = call(
        &base,
        "POST",
        "/_matrix/media/v3/upload?filename=a%0D%0Ab",
        Some(&alice.token),
        Some((b"x", "text/plain")),
    )
    .await;
    assert_error(&res.error(), 400, "M_INVALID_PARAM");
    t.stop().await;
}

#[tokio::test]
async fn thumbnails_crop_and_scale_to_the_asked_size() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let wide = upload(&t, &alice, &png(400, 200), "image/png", None).await;

    for (w, h, method, want) in [
        (100, 100, "scale", (100, 50)),
        (320, 240, "scale", (320, 160)),
        (96, 96, "crop", (96, 96)),
        (32, 32, "crop", (32, 32)),
        (200, 50, "crop", (200, 50)),
    ] {
        let res = thumbnail(&t, &alice, &wide, w, h, method).await;
        assert_eq!(res.status, 200, "{w}x{h} {method}: {}", res.json());
        assert_eq!(res.header("content-type"), "image/png");
        assert_eq!(size_of(&res.body), want, "{w}x{h} {method}");
    }
    // No upscaling: asked for more than the image has, the image itself answers.
    let original = png(400, 200);
    for (w, h, method) in [(800, 600, "scale"), (320, 240, "crop"), (400, 200, "crop")] {
        let res = thumbnail(&t, &alice, &wide, w, h, method).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body, original, "{w}x{h} {method}: the original");
    }
    // Thumbnails are kept on disk per (media, size, method) and served again from there.
    let first = thumbnail(&t, &alice, &wide, 96, 96, "crop").await;
    let kept: Vec<_> = walk(&t.dir().join("server/media/thumbnails"));
    assert!(
        kept.iter().any(|p| p.ends_with("96x96-crop.png")),
        "{kept:?}"
    );
    let again = thumbnail(&t, &alice, &wide, 96, 96, "crop").await;
    assert_eq!(first.body, again.body);
    // The deprecated path and the default method (scale).
    let res = call(
        &t.url(),
        "GET",
        &format!(
            "/_matrix/media/v3/thumbnail/{}?width=100&height=100",
            media_path(&wide)
        ),
        None,
        None,
    )
    .await;
    assert_eq!(size_of(&res.body), (100, 50));
    t.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_without_decoding() {
    let t = TestServer::start_with(|c| c.media.max_thumbnail_pixels = 50_000).await;
    let alice = t.http.register("alice").await;
    // 100,000 x 100,000 pixels (40 GB decoded) in a few hundred bytes.
    let bomb = bomb_png(100_000, 100_000);
    assert!(bomb.len() < 200);
    assert_eq!(size_of(&bomb), (100_000, 100_000));
    let mxc = upload(&t, &alice, &bomb, "image/png", None).await;
    let started = std::time::Instant::now();
    let res = thumbnail(&t, &alice, &mxc, 32, 32, "crop").await;
    assert_error(&res.error(), 413, "M_TOO_LARGE");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered from the header alone"
    );
    // A real image over the pixel limit too; the server did not fall over, and the original is
    // still there to download.
    let large = upload(&t, &alice, &png(300, 200), "image/png", None).await;
    let res = thumbnail(&t, &alice, &large, 32, 32, "scale").await;
    assert_error(&res.error(), 413, "M_TOO_LARGE");
    let small = upload(&t, &alice, &png(200, 100), "image/png", None).await;
    assert_eq!(
        thumbnail(&t, &alice, &small, 32, 32, "scale").await.status,
        200
    );
    assert_eq!(download(&t, &alice, &mxc).await.body, bomb);
    t.stop().await;
}

#[tokio::test]
async fn a_deactivated_users_media_is_no_longer_served() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let mxc = upload(&t, &alice, &png(50, 50), "image/png", None).await;
    assert_eq!(download(&t, &bob, &mxc).await.status, 200);
    let deact = json!({ "auth": password_auth("alice", &common::password("alice"), None) });
    let (status, _) = t
        .http
        .json(
            "POST",
            "/_matrix/client/v3/account/deactivate",
            Some(&alice.token),
            deact,
        )
        .await;
    assert_eq!(status, 200);
    assert_error(&download(&t, &bob, &mxc).await.error(), 404, "M_NOT_FOUND");
    assert_error(
        &thumbnail(&t, &bob, &mxc, 16, 16, "crop").await.error(),
        404,
        "M_NOT_FOUND",
    );
    t.stop().await;
}

#[tokio::test]
async fn identical_uploads_share_one_file() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let bob = t.http.register("bob").await;
    let a = upload(&t, &alice, b"the same bytes", "text/plain", Some("a.txt")).await;
    let b = upload(&t, &bob, b"the same bytes", "text/plain", Some("b.txt")).await;
    assert_ne!(a, b, "two media IDs");
    let files = walk(&t.dir().join("server/media/blobs"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        download(&t, &bob, &a).await.header("content-disposition"),
        "inline; filename=a.txt"
    );
    assert_eq!(
        download(&t, &bob, &b).await.header("content-disposition"),
        "inline; filename=b.txt"
    );
    assert!(walk(&t.dir().join("server/media/tmp")).is_empty());
    t.stop().await;
}

// ---- URL previews --------------------------------------------------------------------------

#[tokio::test]
async fn url_previews_are_off_by_default() {
    let t = TestServer::start().await;
    let alice = t.http.register("alice").await;
    let site = Site::start().await;
    for path in [
        "/_matrix/client/v1/media/preview_url",
        "/_matrix/media/v3/preview_url",
    ] {
        let res = call(
            &t.url(),
            "GET",
            &format!("{path}?url={}", common::http::urlencode(&site.url("/"))),
            Some(&alice.token),
            None,
        )
        .await;
        assert_error(&res.error(), 404, "M_UNRECOGNIZED");
    }
    assert_eq!(site.requests(), 0, "the server fetched nothing");
    t.stop().await;
}

#[tokio::test]
async fn url_previews_refuse_loopback_and_private_addresses() {
    let t = TestServer::start_with(|c| c.media.url_previews = true).await;
    let alice = t.http.register("alice").await;
    let site = Site::start().await;
    let port = site.port;
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0.0.0.0:{port}/"),
    ] {
        let res = call(
            &t.url(),
            "GET",
            &format!(
                "/_matrix/client/v1/media/preview_url?url={}",
                common::http::urlencode(&url)
            ),
            Some(&alice.token),
            None,
        )
        .await;
        assert_error(&res.error(), 403, "M_FORBIDDEN");
    }
    for url in ["ftp://example.org/", "not a url", "file:///etc/passwd"] {
        let res = call(
            &t.url(),
            "GET",
            &format!(
                "/_matrix/client/v1/media/preview_url?url={}",
                common::http::urlencode(url)
            ),
            Some(&alice.token),
            None,
        )
        .await;
        assert_error(&res.error(), 400, "M_INVALID_PARAM");
    }
    assert_eq!(site.requests(), 0, "the server connected to none of them");
    t.stop().await;
}

#[tokio::test]
async fn url_previews_read_open_graph_tags_and_recheck_redirects() {
    let t = TestServer::start_with(|c| {
        c.media.url_previews = true;
        c.media.url_preview_allow_loopback = true;
    })
    .await;
    let alice = t.http.register("alice").await;
    let site = Site::start().await;
    let preview = |url: String| {
        let (base, token) = (t.url(), alice.token.clone());
        async move {
            call(
                &base,
                "GET",
                &format!(
                    "/_matrix/client/v1/media/preview_url?url={}",
                    common::http::urlencode(&url)
                ),
                Some(&token),
                None,
            )
            .await
        }
    };

    let res = preview(site.url("/page")).await;
    assert_eq!(res.status, 200, "{}", res.json());
    let og = res.json();
    assert_eq!(og["og:title"], "Reunion & picnic");
    assert_eq!(og["og:description"], "Saturday at the old campus");
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!(og["og:image:width"], 64);
    assert_eq!(og["og:image:height"], 32);
    assert_eq!(og["matrix:image:size"], png(64, 32).len());
    // The image is media of this server now.
    let image = og["og:image"].as_str().unwrap();
    assert!(image.starts_with("mxc://localhost/"), "{image}");
    assert_eq!(download(&t, &alice, image).await.body, png(64, 32));

    // A redirect is followed, and checked again: one to an unspecified address is refused.
    let res = preview(site.url("/moved")).await;
    assert_eq!(res.json()["og:title"], "Reunion & picnic");
    let res = preview(site.url("/to-nowhere")).await;
    assert_error(&res.error(), 403, "M_FORBIDDEN");
    // Too many redirects, and pages that fail, are the page's fault: 502.
    let res = preview(site.url("/loop")).await;
    assert_error(&res.error(), 502, "M_UNKNOWN");
    let res = preview(site.url("/missing")).await;
    assert_error(&res.error(), 502, "M_UNKNOWN");
    t.stop().await;
}

/// A tiny web site on loopback for URL previews, counting the requests it gets.
struct Site {
    port: u16,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Site {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut len = 0;
                    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
                        match socket.read(&mut buf[len..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => len += n,
                        }
                    }
                    let request = String::from_utf8_lossy(&buf[..len]);
                    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let (status, content_type, body): (&str, &str, Vec<u8>) = match path.as_str() {
                        "/page" => (
                            "200 OK",
                            "text/html; charset=utf-8",
                            br#"<html><head><title>ignored</title>
                            <meta property="og:title" content="Reunion &amp; picnic">
                            <meta property="og:description" content="Saturday at the old campus">
                            <meta property="og:image" content="/picnic.png">
                            </head><body>Hello</body></html>"#
                                .to_vec(),
                        ),
                        "/picnic.png" => ("200 OK", "image/png", png(64, 32)),
                        "/moved" => ("302 Found\r\nLocation: /page", "text/plain", Vec::new()),
                        "/to-nowhere" => (
                            "302 Found\r\nLocation: http://0.0.0.0:1/",
                            "text/plain",
                            Vec::new(),
                        ),
                        "/loop" => ("302 Found\r\nLocation: /loop", "text/plain", Vec::new()),
                        _ => ("404 Not Found", "text/plain", b"no".to_vec()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self {
            port,
            requests,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

// ---- the operator's purge ------------------------------------------------------------------

#[tokio::test]
async fn admin_purge_deletes_old_unused_media_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&dir.path().join("server"));
    let server = tsunagu::Server::start(config.clone()).await.unwrap();
    let url = server.url();
    let http = common::Http::new(&url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let t_upload = |who: &Account, bytes: &'static [u8]| {
        let (url, token) = (url.clone(), who.token.clone());
        async move {
            let res = call(
                &url,
                "POST",
                "/_matrix/media/v3/upload",
                Some(&token),
                Some((bytes, "text/plain")),
            )
            .await;
            assert_eq!(res.status, 200);
            res.json()["content_uri"].as_str().unwrap().to_owned()
        }
    };
    let in_message = t_upload(&alice, b"sent in a message").await;
    let in_html = t_upload(&alice, b"an inline image in a formatted body").await;
    let avatar = t_upload(&alice, b"alice's face").await;
    let unused = t_upload(&alice, b"uploaded, never sent").await;
    let shared_unused = t_upload(&alice, b"same bytes").await;
    let shared_used = t_upload(&alice, b"same bytes").await;
    let bobs = t_upload(&bob, b"bob's file").await;
    let room = http.create_room(&alice.token, json!({})).await;
    http.send_message(
        &alice.token,
        &room,
        json!({ "msgtype": "m.file", "body": "f", "url": in_message }),
    )
    .await;
    http.send_message(
        &alice.token,
        &room,
        json!({ "msgtype": "m.text", "body": "x", "format": "org.matrix.custom.html",
                "formatted_body": format!("<img src=\"{in_html}\"> and <img src='{shared_used}'>") }),
    )
    .await;
    let (status, _) = http
        .json(
            "PUT",
            &format!("/_matrix/client/v3/profile/{}/avatar_url", alice.id),
            Some(&alice.token),
            json!({ "avatar_url": avatar }),
        )
        .await;
    assert_eq!(status, 200);
    let res = call(
        &url,
        "POST",
        "/_matrix/media/v1/create",
        Some(&alice.token),
        None,
    )
    .await;
    let pending = res.json()["content_uri"].as_str().unwrap().to_owned();
    let deact = json!({ "auth": password_auth("bob", &common::password("bob"), None) });
    assert_eq!(
        http.json(
            "POST",
            "/_matrix/client/v3/account/deactivate",
            Some(&bob.token),
            deact
        )
        .await
        .0,
        200
    );
    let files_before = walk(&dir.path().join("server/media/blobs")).len();
    assert_eq!(files_before, 6, "seven uploads, two identical");
    server.stop().await.unwrap();

    // The binary, on the stopped server's data directory.
    let purge = |age: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tsunagu"))
            .env("TSUNAGU_DATA_DIR", &config.data_dir)
            .env("TSUNAGU_LOG", "warn")
            .args(["admin", "media", "purge", "--older-than", age])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Nothing is a day old yet: only the deactivated account's media goes (its file with it).
    // The pending ID has not expired: it stays.
    assert_eq!(purge("1d").trim(), "Deleted 1 media, 1 files (10 bytes).");
    // Everything older than 0 seconds that nothing names goes.
    assert_eq!(purge("0s").trim(), "Deleted 2 media, 1 files (20 bytes).");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_tsunagu"))
        .env("TSUNAGU_DATA_DIR", &config.data_dir)
        .args(["admin", "media", "purge", "--older-than", "30"])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "a unit is needed");

    let server = tsunagu::Server::start(config.clone()).await.unwrap();
    let url = server.url();
    let carol = common::Http::new(&url).register("carol").await;
    let status = |mxc: String| {
        let (url, token) = (url.clone(), carol.token.clone());
        async move {
            call(
                &url,
                "GET",
                &format!(
                    "/_matrix/client/v1/media/download/{}?timeout_ms=0",
                    media_path(&mxc)
                ),
                Some(&token),
                None,
            )
            .await
            .status
        }
    };
    for kept in [&in_message, &in_html, &avatar, &shared_used] {
        assert_eq!(status(kept.clone()).await, 200, "{kept} is named, so kept");
    }
    for gone in [&unused, &shared_unused, &bobs] {
        assert_eq!(status(gone.clone()).await, 404, "{gone} purged");
    }
    assert_eq!(
        status(pending.clone()).await,
        504,
        "a pending ID that has not expired stays"
    );
    assert_eq!(walk(&dir.path().join("server/media/blobs")).len(), 4);
    server.stop().await.unwrap();
}

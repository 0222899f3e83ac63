//! The content repository: uploads, downloads, thumbnails, the media config and URL previews,
//! at the authenticated `/_matrix/client/v1/media/` paths (spec v1.11, MSC3916) and the older
//! `/_matrix/media/` ones. Downloads stream their files; every answer carries the headers the
//! spec asks of media ([`media_headers`]).
// The unauthenticated `/_matrix/media/v3/` downloads are deprecated since v1.11, and still
// served: clients that predate authenticated media use them.
#![allow(deprecated)]

use std::time::Duration;

use axum::{Router, extract::State, response::Response};
use http::HeaderValue;
use ruma::{
    MilliSecondsSinceUnixEpoch, ServerName, UInt,
    api::client::{
        authenticated_media,
        media::{
            create_content, create_content_async, create_mxc_uri, get_content,
            get_content_as_filename, get_content_thumbnail, get_media_config, get_media_preview,
        },
    },
    http_headers::{ContentDisposition, ContentDispositionType},
    media::Method,
};
use tokio_util::io::ReaderStream;

use crate::{
    api::{Answer, ApiResult, AppState, RouterExt, Ruma, RumaResponse, Streamed, StreamedResult},
    error::Error,
    service::media::{Content, ContentBody},
};

/// Every media endpoint, with the media headers on each answer.
pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma_upload(create_content)
        .ruma(create_mxc_uri)
        .ruma_upload(create_content_async)
        .ruma(get_content)
        .ruma(get_content_as_filename)
        .ruma(get_content_thumbnail)
        .ruma(get_media_config)
        .ruma(get_media_preview)
        .ruma(get_content_v3)
        .ruma(get_content_as_filename_v3)
        .ruma(get_content_thumbnail_v3)
        .ruma(get_media_config_v3)
        .ruma(get_media_preview_v3)
        .layer(axum::middleware::map_response(media_headers))
}

/// The policy the spec recommends for served content.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

/// What the spec asks of every media answer: no type sniffing, the sandboxing content security
/// policy, and `Cross-Origin-Resource-Policy: cross-origin` so web clients may embed it (CORS
/// itself is the router's, for every endpoint).
async fn media_headers(mut res: Response) -> Response {
    let headers = res.headers_mut();
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers
        .entry("cross-origin-resource-policy")
        .or_insert(HeaderValue::from_static("cross-origin"));
    res
}

/// The content types the spec lists as safe to serve `inline` ("Serving inline content");
/// everything else is served as an `attachment`.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// `inline` for the safe types, `attachment` for the rest; with the uploader's file name (or
/// the one the request names), which ruma writes as RFC 6266 `filename*=` when it is not ASCII.
fn disposition(content_type: &str, filename: Option<String>) -> ContentDisposition {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let kind = if INLINE_TYPES.contains(&essence.as_str()) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    ContentDisposition::new(kind).with_filename(filename)
}

fn body(content: ContentBody) -> axum::body::Body {
    match content {
        ContentBody::File(file) => axum::body::Body::from_stream(ReaderStream::new(file)),
        ContentBody::Bytes(bytes) => axum::body::Body::from(bytes),
    }
}

/// A ruma response `head` (made from the content's type and disposition) with the content
/// streamed as its body.
fn streamed<T>(
    content: Content,
    head: impl FnOnce(String, ContentDisposition) -> T,
) -> Streamed<T> {
    let disposition = disposition(&content.content_type, content.filename);
    Streamed {
        head: head(content.content_type, disposition),
        body: body(content.body),
        len: content.size,
    }
}

fn dimensions(width: UInt, height: UInt) -> Result<(u32, u32), Error> {
    let side = |v: UInt| {
        u32::try_from(u64::from(v)).map_err(|_| Error::invalid_param("Thumbnail size out of range"))
    };
    Ok((side(width)?, side(height)?))
}

/// Whether a thumbnail `method` crops (the default is `scale`).
fn crops(method: Option<&Method>) -> Result<bool, Error> {
    match method {
        None | Some(Method::Scale) => Ok(false),
        Some(Method::Crop) => Ok(true),
        Some(other) => Err(Error::invalid_param(format!(
            "Unknown thumbnail method {other}: use crop or scale"
        ))),
    }
}

async fn download(
    s: &AppState,
    server: &ServerName,
    media_id: &str,
    wait: Duration,
    filename: Option<&str>,
) -> Result<Content, Error> {
    let mut content = s.media.download(server, media_id, wait).await?;
    if let Some(name) = filename {
        content.filename = Some(name.to_owned());
    }
    Ok(content)
}

/// `POST /_matrix/media/v3/upload`
pub async fn create_content(
    State(s): State<AppState>,
    req: Ruma<create_content::v3::Request>,
) -> ApiResult<create_content::v3::Response> {
    let user = req.sender()?.clone();
    let body = req.body;
    let uri = s
        .media
        .upload(&user, body.file, body.content_type, body.filename)
        .await?;
    Ok(RumaResponse(create_content::v3::Response::new(uri)))
}

/// `POST /_matrix/media/v1/create`
pub async fn create_mxc_uri(
    State(s): State<AppState>,
    req: Ruma<create_mxc_uri::v1::Request>,
) -> ApiResult<create_mxc_uri::v1::Response> {
    let (uri, expires) = s.media.create(req.sender()?).await?;
    let mut res = create_mxc_uri::v1::Response::new(uri);
    res.unused_expires_at = UInt::new(expires).map(MilliSecondsSinceUnixEpoch);
    Ok(RumaResponse(res))
}

/// The answer `{}`, for the async upload: its ruma response is an empty struct that ruma gives
/// servers no way to make.
pub struct EmptyObject;

impl axum::response::IntoResponse for EmptyObject {
    fn into_response(self) -> Response {
        ([(http::header::CONTENT_TYPE, "application/json")], "{}").into_response()
    }
}

impl Answer<create_content_async::v3::Request> for EmptyObject {}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
pub async fn create_content_async(
    State(s): State<AppState>,
    req: Ruma<create_content_async::v3::Request>,
) -> Result<EmptyObject, Error> {
    let user = req.sender()?.clone();
    let body = req.body;
    s.media
        .upload_to(
            &user,
            &body.server_name,
            &body.media_id,
            body.file,
            body.content_type,
            body.filename,
        )
        .await?;
    Ok(EmptyObject)
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
pub async fn get_content(
    State(s): State<AppState>,
    req: Ruma<authenticated_media::get_content::v1::Request>,
) -> StreamedResult<authenticated_media::get_content::v1::Response> {
    let b = &req.body;
    let content = download(&s, &b.server_name, &b.media_id, b.timeout_ms, None).await?;
    Ok(streamed(content, |ct, cd| {
        authenticated_media::get_content::v1::Response::new(Vec::new(), ct, cd)
    }))
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
pub async fn get_content_as_filename(
    State(s): State<AppState>,
    req: Ruma<authenticated_media::get_content_as_filename::v1::Request>,
) -> StreamedResult<authenticated_media::get_content_as_filename::v1::Response> {
    let b = &req.body;
    let content = download(
        &s,
        &b.server_name,
        &b.media_id,
        b.timeout_ms,
        Some(&b.filename),
    )
    .await?;
    Ok(streamed(content, |ct, cd| {
        authenticated_media::get_content_as_filename::v1::Response::new(Vec::new(), ct, cd)
    }))
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
pub async fn get_content_thumbnail(
    State(s): State<AppState>,
    req: Ruma<authenticated_media::get_content_thumbnail::v1::Request>,
) -> StreamedResult<authenticated_media::get_content_thumbnail::v1::Response> {
    let b = &req.body;
    let content = s
        .media
        .thumbnail(
            &b.server_name,
            &b.media_id,
            dimensions(b.width, b.height)?,
            crops(b.method.as_ref())?,
            b.timeout_ms,
        )
        .await?;
    Ok(streamed(content, |ct, cd| {
        authenticated_media::get_content_thumbnail::v1::Response::new(Vec::new(), ct, cd)
    }))
}

/// `GET /_matrix/client/v1/media/config`
pub async fn get_media_config(
    State(s): State<AppState>,
    _req: Ruma<authenticated_media::get_media_config::v1::Request>,
) -> ApiResult<authenticated_media::get_media_config::v1::Response> {
    Ok(RumaResponse(
        authenticated_media::get_media_config::v1::Response::new(UInt::new_saturating(
            s.media.max_upload_size(),
        )),
    ))
}

/// `GET /_matrix/client/v1/media/preview_url`
pub async fn get_media_preview(
    State(s): State<AppState>,
    req: Ruma<authenticated_media::get_media_preview::v1::Request>,
) -> ApiResult<authenticated_media::get_media_preview::v1::Response> {
    let preview = s.media.preview(&req.body.url).await?;
    Ok(RumaResponse(
        authenticated_media::get_media_preview::v1::Response::from_serialize(&preview)?,
    ))
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}`
pub async fn get_content_v3(
    State(s): State<AppState>,
    req: Ruma<get_content::v3::Request>,
) -> StreamedResult<get_content::v3::Response> {
    let b = &req.body;
    let content = download(&s, &b.server_name, &b.media_id, b.timeout_ms, None).await?;
    Ok(streamed(content, |ct, cd| {
        get_content::v3::Response::new(Vec::new(), ct, cd)
    }))
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}`
pub async fn get_content_as_filename_v3(
    State(s): State<AppState>,
    req: Ruma<get_content_as_filename::v3::Request>,
) -> StreamedResult<get_content_as_filename::v3::Response> {
    let b = &req.body;
    let content = download(
        &s,
        &b.server_name,
        &b.media_id,
        b.timeout_ms,
        Some(&b.filename),
    )
    .await?;
    Ok(streamed(content, |ct, cd| {
        get_content_as_filename::v3::Response::new(Vec::new(), ct, cd)
    }))
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`
pub async fn get_content_thumbnail_v3(
    State(s): State<AppState>,
    req: Ruma<get_content_thumbnail::v3::Request>,
) -> StreamedResult<get_content_thumbnail::v3::Response> {
    let b = &req.body;
    let content = s
        .media
        .thumbnail(
            &b.server_name,
            &b.media_id,
            dimensions(b.width, b.height)?,
            crops(b.method.as_ref())?,
            b.timeout_ms,
        )
        .await?;
    Ok(streamed(content, |ct, cd| {
        get_content_thumbnail::v3::Response::new(Vec::new(), ct, cd)
    }))
}

/// `GET /_matrix/media/v3/config`
pub async fn get_media_config_v3(
    State(s): State<AppState>,
    _req: Ruma<get_media_config::v3::Request>,
) -> ApiResult<get_media_config::v3::Response> {
    Ok(RumaResponse(get_media_config::v3::Response::new(
        UInt::new_saturating(s.media.max_upload_size()),
    )))
}

/// `GET /_matrix/media/v3/preview_url`
pub async fn get_media_preview_v3(
    State(s): State<AppState>,
    req: Ruma<get_media_preview::v3::Request>,
) -> ApiResult<get_media_preview::v3::Response> {
    let preview = s.media.preview(&req.body.url).await?;
    Ok(RumaResponse(
        get_media_preview::v3::Response::from_serialize(&preview)?,
    ))
}

//! The public room directory.

use axum::extract::State;
use ruma::{
    UInt,
    api::client::{
        directory::{
            get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
        },
        room::Visibility,
    },
    directory::PublicRoomsChunk,
};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    service::directory::{DirectoryPage, PublicRoom},
};

fn chunk(r: PublicRoom) -> PublicRoomsChunk {
    let mut c: PublicRoomsChunk = ruma::directory::PublicRoomsChunkInit {
        num_joined_members: UInt::new_saturating(r.joined as u64),
        room_id: r.room_id,
        world_readable: r.world_readable,
        guest_can_join: r.guest_can_join,
    }
    .into();
    c.name = r.name;
    c.topic = r.topic;
    c.canonical_alias = r.canonical_alias.and_then(|a| a.try_into().ok());
    c.avatar_url = r.avatar_url.map(Into::into);
    c.join_rule = r.join_rule.as_str().into();
    c
}

/// One page of a room directory: this server's, or another server's asked over federation.
pub(crate) struct Page {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next: Option<String>,
    pub prev: Option<String>,
    pub total: Option<UInt>,
}

async fn page(
    s: &AppState,
    server: Option<&ruma::ServerName>,
    term: Option<&str>,
    limit: Option<UInt>,
    since: Option<&str>,
) -> Result<Page, Error> {
    if let Some(server) = server.filter(|srv| *srv != s.core.server_name()) {
        let r = s
            .federation
            .remote_public_rooms(server, term, limit, since)
            .await?;
        return Ok(Page {
            chunk: r.chunk,
            next: r.next_batch,
            prev: r.prev_batch,
            total: r.total_room_count_estimate,
        });
    }
    local_page(s, term, limit, since)
}

/// A page of this server's directory (also what other servers are answered).
pub(crate) fn local_page(
    s: &AppState,
    term: Option<&str>,
    limit: Option<UInt>,
    since: Option<&str>,
) -> Result<Page, Error> {
    let p: DirectoryPage = s
        .directory
        .public_rooms_page(term, limit.map(u64::from), since)?;
    Ok(Page {
        chunk: p.chunk.into_iter().map(chunk).collect(),
        next: p.next,
        prev: p.prev,
        total: Some(UInt::new_saturating(p.total as u64)),
    })
}

/// `GET /_matrix/client/v3/publicRooms`
pub async fn get_public_rooms(
    State(s): State<AppState>,
    req: Ruma<get_public_rooms::v3::Request>,
) -> ApiResult<get_public_rooms::v3::Response> {
    let b = &req.body;
    let p = page(&s, b.server.as_deref(), None, b.limit, b.since.as_deref()).await?;
    let mut res = get_public_rooms::v3::Response::new(p.chunk);
    res.next_batch = p.next;
    res.prev_batch = p.prev;
    res.total_room_count_estimate = p.total;
    Ok(RumaResponse(res))
}

/// `POST /_matrix/client/v3/publicRooms`
pub async fn get_public_rooms_filtered(
    State(s): State<AppState>,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> ApiResult<get_public_rooms_filtered::v3::Response> {
    let b = &req.body;
    let term = b.filter.generic_search_term.as_deref();
    let p = page(&s, b.server.as_deref(), term, b.limit, b.since.as_deref()).await?;
    let mut res = get_public_rooms_filtered::v3::Response::new();
    res.chunk = p.chunk;
    res.next_batch = p.next;
    res.prev_batch = p.prev;
    res.total_room_count_estimate = p.total;
    Ok(RumaResponse(res))
}

/// `GET /_matrix/client/v3/directory/list/room/{roomId}`
pub async fn get_room_visibility(
    State(s): State<AppState>,
    req: Ruma<get_room_visibility::v3::Request>,
) -> ApiResult<get_room_visibility::v3::Response> {
    let v = if s.directory.is_published(&req.body.room_id)? {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(RumaResponse(get_room_visibility::v3::Response::new(v)))
}

/// `PUT /_matrix/client/v3/directory/list/room/{roomId}`
pub async fn set_room_visibility(
    State(s): State<AppState>,
    req: Ruma<set_room_visibility::v3::Request>,
) -> ApiResult<set_room_visibility::v3::Response> {
    let b = &req.body;
    s.directory
        .set_visibility(
            req.sender()?,
            &b.room_id,
            b.visibility == Visibility::Public,
        )
        .await?;
    Ok(RumaResponse(set_room_visibility::v3::Response::new()))
}

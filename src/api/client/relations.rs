//! Event relationships and threads.

use axum::extract::State;
use ruma::{
    OwnedEventId, OwnedRoomId, UInt,
    api::{
        Direction,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads::{self, v1::IncludeThreads},
        },
    },
};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    service::{timeline::ClientView, token::StreamToken},
};

/// What the three `/relations` endpoints ask.
struct Query {
    room_id: OwnedRoomId,
    event_id: OwnedEventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    dir: Direction,
    limit: Option<UInt>,
    recurse: bool,
}

trait RelationsRequest {
    fn query(&self) -> Query;
}

macro_rules! relations_requests {
    ($($endpoint:ident => |$r:ident| ($rel:expr, $ty:expr)),+ $(,)?) => {$(
        impl RelationsRequest for $endpoint::v1::Request {
            fn query(&self) -> Query {
                let $r = self;
                Query {
                    room_id: $r.room_id.clone(),
                    event_id: $r.event_id.clone(),
                    rel_type: $rel,
                    event_type: $ty,
                    from: $r.from.clone(),
                    to: $r.to.clone(),
                    dir: $r.dir,
                    limit: $r.limit,
                    recurse: $r.recurse,
                }
            }
        }
    )+};
}

relations_requests!(
    get_relating_events => |r| (None, None),
    get_relating_events_with_rel_type => |r| (Some(r.rel_type.to_string()), None),
    get_relating_events_with_rel_type_and_event_type =>
        |r| (Some(r.rel_type.to_string()), Some(r.event_type.to_string())),
);

/// The page of events relating to one, as the three endpoints answer it: chunk, next batch,
/// recursion depth.
async fn relating<T: RelationsRequest>(
    s: &AppState,
    req: &Ruma<T>,
) -> Result<
    (
        Vec<ruma::serde::Raw<ruma::events::AnyMessageLikeEvent>>,
        Option<String>,
        Option<UInt>,
    ),
    Error,
> {
    let q = req.body.query();
    let user = req.sender()?.clone();
    let from = q.from.as_deref().map(StreamToken::parse).transpose()?;
    let to = q.to.as_deref().map(StreamToken::parse).transpose()?;
    let limit = q.limit.map_or(50, |l| u64::from(l) as usize);
    let forward = q.dir == Direction::Forward;
    let (viewer, room_id, event_id) = (user.clone(), q.room_id.clone(), q.event_id.clone());
    let page = s
        .timeline
        .read_history(move |t| {
            t.relations(
                &user,
                &room_id,
                &event_id,
                q.rel_type.as_deref(),
                q.event_type.as_deref(),
                from,
                to,
                forward,
                limit,
                q.recurse,
            )
        })
        .await?;
    let view = ClientView {
        device: Some((&viewer, req.sender_device()?)),
        with_room_id: true,
    };
    let chunk = page
        .events
        .iter()
        .map(|e| s.timeline.client_raw(e, &view, None))
        .collect();
    let depth = q.recurse.then(|| UInt::from(3u32));
    Ok((chunk, page.next.map(StreamToken::pagination), depth))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
pub async fn get_relating_events(
    State(s): State<AppState>,
    req: Ruma<get_relating_events::v1::Request>,
) -> ApiResult<get_relating_events::v1::Response> {
    let (chunk, next, depth) = relating(&s, &req).await?;
    let mut res = get_relating_events::v1::Response::new(chunk);
    res.next_batch = next;
    res.recursion_depth = depth;
    Ok(RumaResponse(res))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
pub async fn get_relating_events_with_rel_type(
    State(s): State<AppState>,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> ApiResult<get_relating_events_with_rel_type::v1::Response> {
    let (chunk, next, depth) = relating(&s, &req).await?;
    let mut res = get_relating_events_with_rel_type::v1::Response::new(chunk);
    res.next_batch = next;
    res.recursion_depth = depth;
    Ok(RumaResponse(res))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
pub async fn get_relating_events_with_rel_type_and_event_type(
    State(s): State<AppState>,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> ApiResult<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let (chunk, next, depth) = relating(&s, &req).await?;
    let mut res = get_relating_events_with_rel_type_and_event_type::v1::Response::new(chunk);
    res.next_batch = next;
    res.recursion_depth = depth;
    Ok(RumaResponse(res))
}

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`
pub async fn get_threads(
    State(s): State<AppState>,
    req: Ruma<get_threads::v1::Request>,
) -> ApiResult<get_threads::v1::Response> {
    let b = &req.body;
    let user = req.sender()?.clone();
    let from = b.from.as_deref().map(StreamToken::parse).transpose()?;
    let limit = b.limit.map_or(50, |l| u64::from(l) as usize);
    let participated = b.include == IncludeThreads::Participated;
    let (viewer, room_id) = (user.clone(), b.room_id.clone());
    let page = s
        .timeline
        .read_history(move |t| t.threads(&user, &room_id, participated, from, limit))
        .await?;
    let view = ClientView {
        device: Some((&viewer, req.sender_device()?)),
        with_room_id: true,
    };
    let mut res = get_threads::v1::Response::new(
        page.events
            .iter()
            .map(|e| s.timeline.client_raw(e, &view, None))
            .collect(),
    );
    res.next_batch = page.next.map(StreamToken::pagination);
    Ok(RumaResponse(res))
}

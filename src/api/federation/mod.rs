//! The Server-Server API: the server's identity (its signing key and version), notary key
//! queries, profile and room-alias lookups, and what widgets and integrations need (checking a
//! user's OpenID token). Requests other servers sign are checked by the `Ruma` extractor
//! (X-Matrix) before a handler runs. Rooms shared with other servers: joins, leaves, knocks
//! and invites for their users, their `/send` transactions, and the DAG readers they ask.

use axum::{Router, extract::State};
use ruma::{
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, ServerName,
    api::federation::{
        authenticated_media::{
            Content, ContentMetadata, FileOrLocation, get_content, get_content_thumbnail,
        },
        authorization::get_event_authorization,
        backfill::get_backfill,
        device::get_devices,
        directory::{get_public_rooms, get_public_rooms_filtered},
        discovery::{
            discover_homeserver, get_remote_server_keys, get_remote_server_keys_batch,
            get_server_keys, get_server_version,
        },
        event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
        keys::{claim_keys, get_keys},
        membership::{
            create_invite, create_join_event, create_knock_event, create_leave_event,
            prepare_join_event, prepare_knock_event, prepare_leave_event,
        },
        openid::get_openid_userinfo,
        query::{get_profile_information, get_room_information},
        space::{SpaceHierarchyParentSummary, get_hierarchy},
        transactions::send_transaction_message,
    },
    events::{StateEventType, room::member::MembershipState},
    serde::Raw,
};
use serde_json::value::RawValue as RawJsonValue;

use super::{ApiResult, AppState, RouterExt, Ruma, RumaResponse};
use crate::{
    error::Error,
    service::federation::{RemoteProfile, profile_json},
    store::StoredEvent,
};

/// Every Server-Server endpoint the server implements.
pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .ruma(get_openid_userinfo)
        .ruma(get_server_keys)
        .ruma(get_server_version)
        .ruma(get_remote_server_keys)
        .ruma(get_remote_server_keys_batch)
        .ruma(get_profile_information)
        .ruma(get_room_information)
        .ruma(get_keys)
        .ruma(claim_keys)
        .ruma(get_devices)
        .ruma_transaction(send_transaction_message)
        .ruma(discover_homeserver)
        .ruma(media_download)
        .ruma(media_thumbnail)
        .ruma(public_rooms)
        .ruma(public_rooms_filtered)
        .ruma(make_join)
        .ruma(send_join)
        .ruma(make_leave)
        .ruma(make_knock)
        .ruma(send_knock)
        .ruma(send_leave)
        .ruma(invite)
        .ruma(get_event)
        .ruma(get_room_state)
        .ruma(get_room_state_ids)
        .ruma(get_event_authorization)
        .ruma(get_missing_events)
        .ruma(get_backfill)
        .ruma(hierarchy)
}

/// An event as it goes to another server.
fn pdu_raw(ev: &StoredEvent) -> Result<Box<RawJsonValue>, Error> {
    Ok(serde_json::value::to_raw_value(&ev.pdu)?)
}

fn pdus_raw(events: &[StoredEvent]) -> Result<Vec<Box<RawJsonValue>>, Error> {
    events.iter().map(pdu_raw).collect()
}

/// 403 unless `server` may read the room's events: it has a member in it, or the room is
/// world-readable; and the room's server ACL lets it in. 404 for a room this server is not in.
fn server_reads_room(s: &AppState, room_id: &RoomId, server: &ServerName) -> Result<(), Error> {
    s.timeline.known_room(room_id)?;
    room_acl(s, room_id, server)?;
    let member = s
        .timeline
        .joined_members(room_id)?
        .iter()
        .any(|u| u.server_name() == server);
    let world_readable = s
        .timeline
        .state_str(
            room_id,
            StateEventType::RoomHistoryVisibility,
            "history_visibility",
        )?
        .as_deref()
        == Some("world_readable");
    if member || world_readable {
        Ok(())
    } else {
        Err(Error::forbidden("Your server has no member in this room"))
    }
}

/// An event of a room `server` may read, or 404.
fn readable_event(
    s: &AppState,
    room_id: Option<&RoomId>,
    event_id: &EventId,
    server: &ServerName,
) -> Result<StoredEvent, Error> {
    let ev = s
        .timeline
        .event(event_id)?
        .filter(|e| room_id.is_none_or(|r| e.room_id == r))
        .ok_or_else(|| Error::not_found("Event not found"))?;
    server_reads_room(s, &ev.room_id, server)?;
    Ok(ev)
}

/// Most events `/get_missing_events` and `/backfill` answer with.
const MAX_EVENTS_ANSWERED: usize = 100;

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`: another server's user joins a
/// room of this server with the event its server signed. Answers the room's state before the
/// join and its auth chain.
pub async fn send_join(
    State(s): State<AppState>,
    req: Ruma<create_join_event::v2::Request>,
) -> ApiResult<create_join_event::v2::Response> {
    let origin = origin(&req)?;
    let b = &req.body;
    let answer = s
        .federated_rooms
        .accept_join(origin, &b.room_id, &b.event_id, &b.pdu)
        .await?;
    let mut state = create_join_event::v2::RoomState::new();
    state.state = pdus_raw(&answer.state)?;
    state.auth_chain = pdus_raw(&answer.auth_chain)?;
    state.event = answer.countersigned.as_ref().map(pdu_raw).transpose()?;
    Ok(RumaResponse(create_join_event::v2::Response::new(state)))
}

/// `make_join`, `make_leave` and `make_knock`: the member event of the asking server's
/// user, unsigned, if the room's ACL lets that server in and the room's rules let the user
/// make it now; with the room's version.
fn member_template<T>(
    s: &AppState,
    req: &Ruma<T>,
    room_id: &RoomId,
    user: &ruma::UserId,
    membership: MembershipState,
) -> Result<(ruma::RoomVersionId, Box<RawJsonValue>), Error> {
    let origin = origin(req)?;
    if user.server_name() != origin {
        return Err(Error::forbidden("The user is not on the asking server"));
    }
    room_acl(s, room_id, origin)?;
    let (version, event) = s.timeline.membership_template(room_id, user, membership)?;
    Ok((version, serde_json::value::to_raw_value(&event)?))
}

/// 400 M_INCOMPATIBLE_ROOM_VERSION unless the asking server names the room's version among
/// those it supports (`ver`, which defaults to version 1 alone, as the spec says).
fn check_version_supported(
    version: &ruma::RoomVersionId,
    ver: &[ruma::RoomVersionId],
) -> Result<(), Error> {
    let supported = if ver.is_empty() {
        *version == ruma::RoomVersionId::V1
    } else {
        ver.contains(version)
    };
    if supported {
        return Ok(());
    }
    Err(Error::new(
        http::StatusCode::BAD_REQUEST,
        ruma::api::error::ErrorKind::IncompatibleRoomVersion(
            ruma::api::error::IncompatibleRoomVersionErrorData::new(version.clone()),
        ),
        "Your server does not support this room's version",
    ))
}

/// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`: the knock of another server's
/// user, for their server to sign, when the room's join rule lets them knock.
pub async fn make_knock(
    State(s): State<AppState>,
    req: Ruma<prepare_knock_event::v1::Request>,
) -> ApiResult<prepare_knock_event::v1::Response> {
    let b = &req.body;
    let (version, event) =
        member_template(&s, &req, &b.room_id, &b.user_id, MembershipState::Knock)?;
    check_version_supported(&version, &b.ver)?;
    Ok(RumaResponse(prepare_knock_event::v1::Response::new(
        version, event,
    )))
}

/// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`: another server's user knocks
/// with the event its server signed. Answers the room's state that shows what it is.
pub async fn send_knock(
    State(s): State<AppState>,
    req: Ruma<create_knock_event::v1::Request>,
) -> ApiResult<create_knock_event::v1::Response> {
    let origin = origin(&req)?;
    let b = &req.body;
    let knock = s
        .federated_rooms
        .accept_membership(origin, &b.room_id, &b.event_id, &b.pdu, "knock")
        .await?;
    let sender = knock.sender().map(|u| u.to_string()).unwrap_or_default();
    let shown = s.federated_rooms.shown_state(&b.room_id, &sender)?;
    Ok(RumaResponse(create_knock_event::v1::Response::new(shown)))
}

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`: the leave event of another
/// server's user (who is invited, or knocked), for their server to sign.
pub async fn make_leave(
    State(s): State<AppState>,
    req: Ruma<prepare_leave_event::v1::Request>,
) -> ApiResult<prepare_leave_event::v1::Response> {
    let b = &req.body;
    let (version, event) =
        member_template(&s, &req, &b.room_id, &b.user_id, MembershipState::Leave)?;
    Ok(RumaResponse(prepare_leave_event::v1::Response::new(
        Some(version),
        event,
    )))
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`: another server's user leaves
/// (rejects an invite) with the event its server signed.
pub async fn send_leave(
    State(s): State<AppState>,
    req: Ruma<create_leave_event::v2::Request>,
) -> ApiResult<create_leave_event::v2::Response> {
    let origin = origin(&req)?;
    let b = &req.body;
    s.federated_rooms
        .accept_membership(origin, &b.room_id, &b.event_id, &b.pdu, "leave")
        .await?;
    Ok(RumaResponse(create_leave_event::v2::Response::new()))
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: a user of this server is invited to
/// another server's room. Answers the event countersigned.
pub async fn invite(
    State(s): State<AppState>,
    req: Ruma<create_invite::v2::Request>,
) -> ApiResult<create_invite::v2::Response> {
    let origin = origin(&req)?;
    let b = &req.body;
    let signed = s
        .federated_rooms
        .receive_invite(
            origin,
            &b.room_id,
            &b.event_id,
            &b.room_version,
            &b.event,
            &b.invite_room_state,
        )
        .await?;
    Ok(RumaResponse(create_invite::v2::Response::new(
        serde_json::value::to_raw_value(&signed)?,
    )))
}

/// `GET /_matrix/federation/v1/event/{eventId}`
pub async fn get_event(
    State(s): State<AppState>,
    req: Ruma<get_event::v1::Request>,
) -> ApiResult<get_event::v1::Response> {
    let ev = readable_event(&s, None, &req.body.event_id, origin(&req)?)?;
    Ok(RumaResponse(get_event::v1::Response::new(
        s.core.server_name().clone(),
        MilliSecondsSinceUnixEpoch::now(),
        pdu_raw(&ev)?,
    )))
}

/// The room's state before an event and that state's auth chain.
fn state_and_chain(
    s: &AppState,
    ev: &StoredEvent,
) -> Result<(Vec<StoredEvent>, Vec<StoredEvent>), Error> {
    let ids: Vec<OwnedEventId> = s.timeline.state_before(ev)?.into_values().collect();
    let mut state = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(e) = s.timeline.event(id)? {
            state.push(e);
        }
    }
    Ok((state, s.timeline.auth_chain(ids)?))
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=`: the room's state before the event.
pub async fn get_room_state(
    State(s): State<AppState>,
    req: Ruma<get_room_state::v1::Request>,
) -> ApiResult<get_room_state::v1::Response> {
    let b = &req.body;
    let ev = readable_event(&s, Some(&b.room_id), &b.event_id, origin(&req)?)?;
    let (state, chain) = state_and_chain(&s, &ev)?;
    Ok(RumaResponse(get_room_state::v1::Response::new(
        pdus_raw(&chain)?,
        pdus_raw(&state)?,
    )))
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`
pub async fn get_room_state_ids(
    State(s): State<AppState>,
    req: Ruma<get_room_state_ids::v1::Request>,
) -> ApiResult<get_room_state_ids::v1::Response> {
    let b = &req.body;
    let ev = readable_event(&s, Some(&b.room_id), &b.event_id, origin(&req)?)?;
    let (state, chain) = state_and_chain(&s, &ev)?;
    let ids = |v: Vec<StoredEvent>| v.into_iter().map(|e| e.event_id).collect();
    Ok(RumaResponse(get_room_state_ids::v1::Response::new(
        ids(chain),
        ids(state),
    )))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
pub async fn get_event_authorization(
    State(s): State<AppState>,
    req: Ruma<get_event_authorization::v1::Request>,
) -> ApiResult<get_event_authorization::v1::Response> {
    let b = &req.body;
    let ev = readable_event(&s, Some(&b.room_id), &b.event_id, origin(&req)?)?;
    let chain = s.timeline.auth_chain([ev.event_id])?;
    Ok(RumaResponse(get_event_authorization::v1::Response::new(
        pdus_raw(&chain)?,
    )))
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`
pub async fn get_missing_events(
    State(s): State<AppState>,
    req: Ruma<get_missing_events::v1::Request>,
) -> ApiResult<get_missing_events::v1::Response> {
    let b = &req.body;
    server_reads_room(&s, &b.room_id, origin(&req)?)?;
    let limit = usize::try_from(u64::from(b.limit))
        .unwrap_or(MAX_EVENTS_ANSWERED)
        .min(MAX_EVENTS_ANSWERED);
    let events = s.timeline.missing_events(
        &b.room_id,
        &b.earliest_events,
        &b.latest_events,
        limit,
        b.min_depth.into(),
    )?;
    Ok(RumaResponse(get_missing_events::v1::Response::new(
        pdus_raw(&events)?,
    )))
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=`
pub async fn get_backfill(
    State(s): State<AppState>,
    req: Ruma<get_backfill::v1::Request>,
) -> ApiResult<get_backfill::v1::Response> {
    let b = &req.body;
    server_reads_room(&s, &b.room_id, origin(&req)?)?;
    let limit = usize::try_from(u64::from(b.limit))
        .unwrap_or(MAX_EVENTS_ANSWERED)
        .min(MAX_EVENTS_ANSWERED);
    let events = s.timeline.backfill(&b.room_id, &b.v, limit)?;
    Ok(RumaResponse(get_backfill::v1::Response::new(
        s.core.server_name().clone(),
        MilliSecondsSinceUnixEpoch::now(),
        pdus_raw(&events)?,
    )))
}

/// `GET /_matrix/federation/v1/hierarchy/{roomId}`: a space and its direct children as anyone
/// may see them (public or world-readable rooms), and which of its children the asking server
/// may not see.
pub async fn hierarchy(
    State(s): State<AppState>,
    req: Ruma<get_hierarchy::v1::Request>,
) -> ApiResult<get_hierarchy::v1::Response> {
    let origin = origin(&req)?;
    let b = &req.body;
    room_acl(&s, &b.room_id, origin)?;
    let mut rooms = s
        .directory
        .hierarchy(&b.room_id, None, 1, b.suggested_only)
        .await?
        .into_iter();
    let (summary, children_state) = rooms
        .next()
        .ok_or_else(|| Error::not_found("Room not found"))?;
    let children: Vec<_> = rooms.map(|(summary, _)| summary).collect();
    let inaccessible = children_state
        .iter()
        .filter_map(|c| c["state_key"].as_str())
        .filter_map(|id| ruma::OwnedRoomId::try_from(id).ok())
        .filter(|id| !children.iter().any(|c| &c.room_id == id))
        .filter(|id| s.timeline.room(id).ok().flatten().is_some())
        .collect();
    let parent = SpaceHierarchyParentSummary::new(
        summary,
        children_state.iter().map(crate::json::to_raw).collect(),
    );
    let mut res = get_hierarchy::v1::Response::new(parent);
    res.children = children;
    res.inaccessible_children = inaccessible;
    Ok(RumaResponse(res))
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`: the join event of another
/// server's user for their server to sign, when the room's rules let them join (its
/// counterpart is `send_join`).
pub async fn make_join(
    State(s): State<AppState>,
    req: Ruma<prepare_join_event::v1::Request>,
) -> ApiResult<prepare_join_event::v1::Response> {
    let b = &req.body;
    let (version, event) =
        member_template(&s, &req, &b.room_id, &b.user_id, MembershipState::Join)?;
    check_version_supported(&version, &b.ver)?;
    let mut res = prepare_join_event::v1::Response::new(event);
    res.room_version = Some(version);
    Ok(RumaResponse(res))
}

/// `GET /_matrix/federation/v1/publicRooms`: this server's room directory.
pub async fn public_rooms(
    State(s): State<AppState>,
    req: Ruma<get_public_rooms::v1::Request>,
) -> ApiResult<get_public_rooms::v1::Response> {
    origin(&req)?;
    let b = &req.body;
    let p = crate::api::client::directory::local_page(&s, None, b.limit, b.since.as_deref())?;
    let mut res = get_public_rooms::v1::Response::new();
    res.chunk = p.chunk;
    res.next_batch = p.next;
    res.prev_batch = p.prev;
    res.total_room_count_estimate = p.total;
    Ok(RumaResponse(res))
}

/// `POST /_matrix/federation/v1/publicRooms`: this server's room directory, searched.
pub async fn public_rooms_filtered(
    State(s): State<AppState>,
    req: Ruma<get_public_rooms_filtered::v1::Request>,
) -> ApiResult<get_public_rooms_filtered::v1::Response> {
    origin(&req)?;
    let b = &req.body;
    let term = b.filter.generic_search_term.as_deref();
    let p = crate::api::client::directory::local_page(&s, term, b.limit, b.since.as_deref())?;
    let mut res = get_public_rooms_filtered::v1::Response::new();
    res.chunk = p.chunk;
    res.next_batch = p.next;
    res.prev_batch = p.prev;
    res.total_room_count_estimate = p.total;
    Ok(RumaResponse(res))
}

/// A local media content's bytes, for a multipart answer to another server (at most
/// `media.max_upload_size`; `federation.max_media_served_at_once` such answers at a time).
async fn media_answer(content: crate::service::media::Content) -> Result<FileOrLocation, Error> {
    use tokio::io::AsyncReadExt;
    let bytes = match content.body {
        crate::service::media::ContentBody::Bytes(b) => b,
        crate::service::media::ContentBody::File(mut f) => {
            let mut out = Vec::with_capacity(content.size as usize);
            f.read_to_end(&mut out).await.map_err(Error::internal)?;
            out
        }
    };
    let disposition = ruma::http_headers::ContentDisposition::new(
        ruma::http_headers::ContentDispositionType::Attachment,
    )
    .with_filename(content.filename);
    Ok(FileOrLocation::File(Content::new(
        bytes,
        content.content_type,
        disposition,
    )))
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`: a local media file.
pub async fn media_download(
    State(s): State<AppState>,
    req: Ruma<get_content::v1::Request>,
) -> ApiResult<get_content::v1::Response> {
    origin(&req)?;
    let _slot = s.federation.media_slot().await?;
    let ours = s.core.server_name().clone();
    let content = s
        .media
        .download(&ours, &req.body.media_id, req.body.timeout_ms)
        .await?;
    Ok(RumaResponse(get_content::v1::Response::new(
        ContentMetadata::new(),
        media_answer(content).await?,
    )))
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`: a thumbnail of a local image.
pub async fn media_thumbnail(
    State(s): State<AppState>,
    req: Ruma<get_content_thumbnail::v1::Request>,
) -> ApiResult<get_content_thumbnail::v1::Response> {
    origin(&req)?;
    let _slot = s.federation.media_slot().await?;
    let b = &req.body;
    let size = (
        u32::try_from(u64::from(b.width)).unwrap_or(u32::MAX),
        u32::try_from(u64::from(b.height)).unwrap_or(u32::MAX),
    );
    let crop = b.method == Some(ruma::media::Method::Crop);
    let ours = s.core.server_name().clone();
    let content = s
        .media
        .thumbnail(&ours, &b.media_id, size, crop, b.timeout_ms)
        .await?;
    Ok(RumaResponse(get_content_thumbnail::v1::Response::new(
        ContentMetadata::new(),
        media_answer(content).await?,
    )))
}

/// `GET /.well-known/matrix/server`: where other servers reach this one, when the config
/// delegates (`federation.well_known_server`).
pub async fn discover_homeserver(
    State(s): State<AppState>,
    _req: Ruma<discover_homeserver::Request>,
) -> ApiResult<discover_homeserver::Response> {
    let server = s
        .config()
        .federation
        .well_known_server
        .clone()
        .ok_or_else(|| Error::not_found("This server does not delegate federation"))?;
    Ok(RumaResponse(discover_homeserver::Response::new(server)))
}

/// The server that signed the request (set by the extractor for these endpoints).
fn origin<T>(req: &Ruma<T>) -> Result<&ruma::OwnedServerName, Error> {
    req.origin
        .as_ref()
        .ok_or_else(|| Error::forbidden("Only other servers may call this"))
}

/// 403 when the room's server ACL (`m.room.server_acl`) leaves `server` out.
fn room_acl(s: &AppState, room_id: &RoomId, server: &ServerName) -> Result<(), Error> {
    s.federated_rooms.check_acl(room_id, server)
}

/// Most PDUs and EDUs in one transaction (the spec's limits).
const MAX_TXN_PDUS: usize = 50;
const MAX_TXN_EDUS: usize = 100;

/// `PUT /_matrix/federation/v1/send/{txnId}`: the events (PDUs) and EDUs another server
/// pushes. Each PDU is checked and admitted to its room (an answer per PDU says which were
/// refused and why); EDUs: to-device messages.
pub async fn send_transaction_message(
    State(s): State<AppState>,
    req: Ruma<send_transaction_message::v1::Request>,
) -> ApiResult<send_transaction_message::v1::Response> {
    let origin = origin(&req)?.clone();
    let b = &req.body;
    if b.origin != origin {
        return Err(Error::forbidden(
            "The transaction's origin is not the signing server",
        ));
    }
    if b.pdus.len() > MAX_TXN_PDUS || b.edus.len() > MAX_TXN_EDUS {
        return Err(Error::bad_json(format!(
            "At most {MAX_TXN_PDUS} PDUs and {MAX_TXN_EDUS} EDUs per transaction"
        )));
    }
    let txn = b.transaction_id.as_str();
    let mut pdus = Default::default();
    if !s.federation.already_received(&origin, txn)? {
        pdus = s.federated_rooms.receive_pdus(&origin, &b.pdus).await;
        for edu in &b.edus {
            let Ok(edu) = edu.deserialize_as_unchecked::<serde_json::Value>() else {
                continue;
            };
            let taken = match edu["edu_type"].as_str() {
                Some("m.direct_to_device") => {
                    s.keys
                        .receive_remote_to_device(&origin, &edu["content"])
                        .await
                }
                Some("m.typing") => remote_typing(&s, &origin, &edu["content"]),
                Some("m.device_list_update" | "m.signing_key_update") => {
                    remote_keys_changed(&s, &origin, &edu["content"]).await
                }
                Some("m.presence") => remote_presence(&s, &origin, &edu["content"]).await,
                Some("m.receipt") => remote_receipts(&s, &origin, &edu["content"]).await,
                _ => Ok(()),
            };
            if let Err(e) = taken {
                tracing::debug!("federation: an EDU from {origin} refused: {e:?}");
            }
        }
        s.federation.received(&origin, txn).await?;
    }
    Ok(RumaResponse(send_transaction_message::v1::Response::new(
        pdus,
    )))
}

/// The user an EDU speaks for, who must be of the server that sent it.
fn origin_user(origin: &ServerName, user: &serde_json::Value) -> Result<ruma::OwnedUserId, Error> {
    let user = user
        .as_str()
        .and_then(|u| ruma::OwnedUserId::try_from(u).ok())
        .ok_or_else(|| Error::bad_json("No user ID"))?;
    if user.server_name() != origin {
        return Err(Error::forbidden("The user is not of the sending server"));
    }
    Ok(user)
}

/// An `m.typing` EDU: another server's user typing (or stopping) in a room shared with it.
fn remote_typing(
    s: &AppState,
    origin: &ServerName,
    content: &serde_json::Value,
) -> Result<(), Error> {
    let user = origin_user(origin, &content["user_id"])?;
    let room_id = content["room_id"]
        .as_str()
        .and_then(|r| ruma::OwnedRoomId::try_from(r).ok())
        .ok_or_else(|| Error::bad_json("No room ID"))?;
    room_acl(s, &room_id, origin)?;
    let timeout = (content["typing"] == true).then(|| {
        let ms = content["timeout"].as_u64().unwrap_or(30_000);
        std::time::Duration::from_millis(ms)
    });
    s.ephemeral.set_typing(&room_id, &user, timeout)
}

/// `m.device_list_update` and `m.signing_key_update`: another server's user's keys changed.
async fn remote_keys_changed(
    s: &AppState,
    origin: &ServerName,
    content: &serde_json::Value,
) -> Result<(), Error> {
    let user = origin_user(origin, &content["user_id"])?;
    if s.federated_rooms.shares_a_room(&user)? {
        s.keys.remote_keys_changed(&user).await?;
    }
    Ok(())
}

/// Most presence updates taken from one `m.presence` EDU.
const MAX_PRESENCE_UPDATES: usize = 100;

/// `m.presence`: other servers' users' presence.
async fn remote_presence(
    s: &AppState,
    origin: &ServerName,
    content: &serde_json::Value,
) -> Result<(), Error> {
    let updates = content["push"].as_array().into_iter().flatten();
    for update in updates.take(MAX_PRESENCE_UPDATES) {
        let Ok(user) = origin_user(origin, &update["user_id"]) else {
            continue;
        };
        let Some(presence) = update["presence"].as_str() else {
            continue;
        };
        if s.federated_rooms.shares_a_room(&user)? {
            let status = update["status_msg"].as_str().map(str::to_owned);
            s.presence
                .receive_remote(&user, &presence.into(), status)
                .await?;
        }
    }
    Ok(())
}

/// An `m.receipt` EDU: other servers' users' read receipts in rooms shared with them.
async fn remote_receipts(
    s: &AppState,
    origin: &ServerName,
    content: &serde_json::Value,
) -> Result<(), Error> {
    let rooms = content.as_object().into_iter().flatten();
    for (room_id, receipts) in rooms {
        let Ok(room_id) = ruma::OwnedRoomId::try_from(room_id.as_str()) else {
            continue;
        };
        room_acl(s, &room_id, origin)?;
        let users = receipts["m.read"].as_object().into_iter().flatten();
        for (user, receipt) in users {
            let Ok(user) = origin_user(origin, &serde_json::Value::from(user.as_str())) else {
                continue;
            };
            let thread = receipt["data"]["thread_id"].as_str().map(str::to_owned);
            let ids = receipt["event_ids"].as_array().into_iter().flatten();
            for id in ids.filter_map(|i| i.as_str()) {
                let Ok(id) = OwnedEventId::try_from(id) else {
                    continue;
                };
                if let Err(e) = s
                    .ephemeral
                    .set_receipt(&room_id, &user, "m.read", &id, thread.clone())
                    .await
                {
                    tracing::debug!("federation: a receipt of {user} refused: {e:?}");
                }
            }
        }
    }
    Ok(())
}

/// Only the users of this server out of a request's map.
fn local_users<V>(
    s: &AppState,
    wanted: &std::collections::BTreeMap<ruma::OwnedUserId, V>,
) -> std::collections::BTreeMap<ruma::OwnedUserId, V>
where
    V: Clone,
{
    wanted
        .iter()
        .filter(|(u, _)| s.users.is_local(u))
        .map(|(u, v)| (u.clone(), v.clone()))
        .collect()
}

/// `POST /_matrix/federation/v1/user/keys/query`: device and cross-signing keys of local users.
pub async fn get_keys(
    State(s): State<AppState>,
    req: Ruma<get_keys::v1::Request>,
) -> ApiResult<get_keys::v1::Response> {
    origin(&req)?;
    let found = s
        .keys
        .query(None, &local_users(&s, &req.body.device_keys))?;
    let mut res = get_keys::v1::Response::new(Default::default());
    for (user, keys) in found.users {
        res.device_keys.insert(
            user.clone(),
            keys.devices
                .iter()
                .map(|(d, k)| (d.clone(), crate::json::to_raw(k)))
                .collect(),
        );
        if let Some(k) = keys.master {
            res.master_keys
                .insert(user.clone(), crate::json::to_raw(&k));
        }
        if let Some(k) = keys.self_signing {
            res.self_signing_keys.insert(user, crate::json::to_raw(&k));
        }
    }
    Ok(RumaResponse(res))
}

/// `POST /_matrix/federation/v1/user/keys/claim`: one-time keys of local users' devices,
/// rate limited per asking server.
pub async fn claim_keys(
    State(s): State<AppState>,
    req: Ruma<claim_keys::v1::Request>,
) -> ApiResult<claim_keys::v1::Response> {
    let origin = origin(&req)?.to_string();
    let wanted = local_users(&s, &req.body.one_time_keys);
    let (found, _) = s.keys.claim(&origin, &wanted).await?;
    let mut keys: claim_keys::v1::OneTimeKeys = Default::default();
    for (user, device, id, key) in found {
        let Ok(id) = ruma::OwnedOneTimeKeyId::try_from(id) else {
            continue;
        };
        keys.entry(user)
            .or_default()
            .entry(device)
            .or_default()
            .insert(id, crate::json::to_raw(&key));
    }
    Ok(RumaResponse(claim_keys::v1::Response::new(keys)))
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`: a local user's devices with their keys
/// (device names are not shared with other servers).
pub async fn get_devices(
    State(s): State<AppState>,
    req: Ruma<get_devices::v1::Request>,
) -> ApiResult<get_devices::v1::Response> {
    origin(&req)?;
    let user = &req.body.user_id;
    if !s.users.is_local(user) {
        return Err(Error::not_found("Not a user of this server"));
    }
    let wanted = std::collections::BTreeMap::from([(user.clone(), Vec::new())]);
    let found = s.keys.query(None, &wanted)?;
    let stream_id = ruma::UInt::new_saturating(s.core.current_pos());
    let mut res = get_devices::v1::Response::new(user.clone(), stream_id);
    if let Some(keys) = found.users.get(user) {
        res.devices = keys
            .devices
            .iter()
            .map(|(d, k)| get_devices::v1::UserDevice::new(d.clone(), crate::json::to_raw(k)))
            .collect();
        res.master_key = keys.master.as_ref().map(crate::json::to_raw);
        res.self_signing_key = keys.self_signing.as_ref().map(crate::json::to_raw);
    }
    Ok(RumaResponse(res))
}

fn raw_keys<T>(objects: Vec<CanonicalJsonObject>) -> Result<Vec<Raw<T>>, Error> {
    objects
        .into_iter()
        .map(|o| Ok(crate::json::to_raw(&serde_json::to_value(o)?)))
        .collect()
}

/// `GET /_matrix/key/v2/query/{serverName}`: another server's keys, through this one.
pub async fn get_remote_server_keys(
    State(s): State<AppState>,
    req: Ruma<get_remote_server_keys::v2::Request>,
) -> ApiResult<get_remote_server_keys::v2::Response> {
    let min_valid = u64::from(req.body.minimum_valid_until_ts.get());
    let keys = s
        .federation
        .notary_keys(vec![(req.body.server_name, Some(min_valid))])
        .await?;
    Ok(RumaResponse(get_remote_server_keys::v2::Response::new(
        raw_keys(keys)?,
    )))
}

/// `POST /_matrix/key/v2/query`: several servers' keys, through this one.
pub async fn get_remote_server_keys_batch(
    State(s): State<AppState>,
    req: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> ApiResult<get_remote_server_keys_batch::v2::Response> {
    let wanted = req
        .body
        .server_keys
        .into_iter()
        .map(|(server, keys)| {
            let min_valid = keys
                .values()
                .filter_map(|c| c.minimum_valid_until_ts)
                .map(|t| u64::from(t.get()))
                .max();
            (server, min_valid)
        })
        .collect();
    let keys = s.federation.notary_keys(wanted).await?;
    Ok(RumaResponse(
        get_remote_server_keys_batch::v2::Response::new(raw_keys(keys)?),
    ))
}

/// `GET /_matrix/federation/v1/query/profile`: a local user's profile.
pub async fn get_profile_information(
    State(s): State<AppState>,
    req: Ruma<get_profile_information::v1::Request>,
) -> ApiResult<get_profile_information::v1::Response> {
    let account = s
        .users
        .active_account(&req.body.user_id)?
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    let profile = RemoteProfile {
        displayname: account.displayname,
        avatar_url: account.avatar_url.map(|u| u.to_string()),
    };
    let field = req.body.field.as_ref().map(|f| f.as_str().to_owned());
    let mut response = get_profile_information::v1::Response::new();
    if let serde_json::Value::Object(fields) = profile_json(&profile, field.as_deref()) {
        for (k, v) in fields {
            response.set(k, v);
        }
    }
    Ok(RumaResponse(response))
}

/// `GET /_matrix/federation/v1/query/directory`: the room a local alias points at.
pub async fn get_room_information(
    State(s): State<AppState>,
    req: Ruma<get_room_information::v1::Request>,
) -> ApiResult<get_room_information::v1::Response> {
    let alias = &req.body.room_alias;
    if alias.server_name() != s.core.server_name() {
        return Err(Error::not_found("Room alias not found"));
    }
    let room_id = s.directory.require_alias(alias).await?;
    Ok(RumaResponse(get_room_information::v1::Response::new(
        room_id,
        vec![s.core.server_name().clone()],
    )))
}

/// `GET /_matrix/key/v2/server`
pub async fn get_server_keys(
    State(s): State<AppState>,
    _req: Ruma<get_server_keys::v2::Request>,
) -> ApiResult<get_server_keys::v2::Response> {
    let keys = serde_json::to_value(s.federation.server_keys()?)?;
    Ok(RumaResponse(get_server_keys::v2::Response::new(
        crate::json::to_raw(&keys),
    )))
}

/// `GET /_matrix/federation/v1/version`
pub async fn get_server_version(
    _: State<AppState>,
    _req: Ruma<get_server_version::v1::Request>,
) -> ApiResult<get_server_version::v1::Response> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Tsunagu".into());
    server.version = Some(env!("CARGO_PKG_VERSION").into());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(RumaResponse(response))
}

/// `GET /_matrix/federation/v1/openid/userinfo`
pub async fn get_openid_userinfo(
    State(s): State<AppState>,
    req: Ruma<get_openid_userinfo::v1::Request>,
) -> ApiResult<get_openid_userinfo::v1::Response> {
    Ok(RumaResponse(get_openid_userinfo::v1::Response::new(
        s.openid.user_of(&req.body.access_token)?,
    )))
}

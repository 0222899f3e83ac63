//! Messages: sending, redacting, reading one event, `/messages` and `/context`.

use axum::extract::State;
use ruma::api::client::{
    context::get_context,
    filter::LazyLoadOptions,
    message::{get_message_events, send_message_event},
    redact::redact_event,
    room::get_room_event,
};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    json::json_object,
    service::{
        timeline::{
            ClientView, NewEvent,
            append::Txn,
            pagination::{MessagesQuery, Seen},
        },
        token::StreamToken,
    },
    store::TxnInfo,
};

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
pub async fn send_message_event(
    State(s): State<AppState>,
    req: Ruma<send_message_event::v3::Request>,
) -> ApiResult<send_message_event::v3::Response> {
    let b = &req.body;
    let content = json_object(&b.body)?.into();
    let txn = Txn {
        info: TxnInfo {
            device_id: req.sender_device()?.clone(),
            txn_id: b.txn_id.clone(),
        },
        via_redact: false,
    };
    let mut ev = NewEvent::message(b.event_type.to_string(), content);
    ev.timestamp = super::massaged_ts(&req, b.timestamp);
    let event_id = s
        .rooms
        .send_message(&b.room_id, req.sender()?, ev, txn)
        .await?;
    Ok(RumaResponse(send_message_event::v3::Response::new(
        event_id,
    )))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
pub async fn redact_event(
    State(s): State<AppState>,
    req: Ruma<redact_event::v3::Request>,
) -> ApiResult<redact_event::v3::Response> {
    let b = &req.body;
    let txn = Txn {
        info: TxnInfo {
            device_id: req.sender_device()?.clone(),
            txn_id: b.txn_id.clone(),
        },
        via_redact: true,
    };
    let event_id = s
        .rooms
        .redact(
            &b.room_id,
            req.sender()?,
            &b.event_id,
            b.reason.clone(),
            txn,
        )
        .await?;
    Ok(RumaResponse(redact_event::v3::Response::new(event_id)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
pub async fn get_room_event(
    State(s): State<AppState>,
    req: Ruma<get_room_event::v3::Request>,
) -> ApiResult<get_room_event::v3::Response> {
    let (ev, membership) = s
        .timeline
        .visible_event(req.sender()?, &req.body.event_id)?;
    if ev.room_id != req.body.room_id {
        return Err(Error::not_found("Event not found"));
    }
    let view = device_view(&req)?;
    Ok(RumaResponse(get_room_event::v3::Response::new(
        s.timeline.client_raw(&ev, &view, Some(&membership)),
    )))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/messages`
pub async fn get_message_events(
    State(s): State<AppState>,
    req: Ruma<get_message_events::v3::Request>,
) -> ApiResult<get_message_events::v3::Response> {
    let b = &req.body;
    let (from, to) = (
        b.from.as_deref().map(StreamToken::parse).transpose()?,
        b.to.as_deref().map(StreamToken::parse).transpose()?,
    );
    let lazy = matches!(b.filter.lazy_load_options, LazyLoadOptions::Enabled { .. });
    let (user, room_id, filter) = (req.sender()?.clone(), b.room_id.clone(), b.filter.clone());
    let (dir, limit) = (b.dir, u64::from(b.limit) as usize);
    let page = s
        .timeline
        .read_history(move |t| {
            let query = MessagesQuery {
                from,
                to,
                dir,
                limit,
                filter: &filter,
            };
            t.messages(&user, &room_id, query, lazy)
        })
        .await?;
    let view = device_view(&req)?;
    let raw = |seen: &Seen| seen_raw(&s, &view, seen);
    let mut res = get_message_events::v3::Response::new();
    res.start = page.start.pagination();
    res.end = page.end.map(StreamToken::pagination);
    res.chunk = page.events.iter().map(raw).collect();
    res.state = page
        .members
        .iter()
        .map(|ev| s.timeline.client_raw(ev, &view, None))
        .collect();
    Ok(RumaResponse(res))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
pub async fn get_context(
    State(s): State<AppState>,
    req: Ruma<get_context::v3::Request>,
) -> ApiResult<get_context::v3::Response> {
    let b = &req.body;
    let (user, room_id, event_id) = (req.sender()?.clone(), b.room_id.clone(), b.event_id.clone());
    let (limit, filter) = (u64::from(b.limit) as usize, b.filter.clone());
    let context = s
        .timeline
        .read_history(move |t| t.context(&user, &room_id, &event_id, limit, &filter))
        .await?;
    let view = device_view(&req)?;
    let raw = |seen: &Seen| seen_raw(&s, &view, seen);
    let mut res = get_context::v3::Response::new();
    res.start = Some(context.start.pagination());
    res.end = Some(context.end.pagination());
    res.event = Some(raw(&context.event));
    res.events_before = context.before.iter().map(raw).collect();
    res.events_after = context.after.iter().map(raw).collect();
    res.state = context
        .state
        .iter()
        .map(|ev| s.timeline.client_raw(ev, &view, None))
        .collect();
    Ok(RumaResponse(res))
}

/// Events as the asking device sees them (its own transaction IDs included).
fn device_view<T>(req: &Ruma<T>) -> Result<ClientView<'_>, Error> {
    Ok(ClientView {
        device: Some((req.sender()?, req.sender_device()?)),
        with_room_id: true,
    })
}

fn seen_raw<T>(s: &AppState, view: &ClientView<'_>, seen: &Seen) -> ruma::serde::Raw<T> {
    s.timeline
        .client_raw(&seen.event, view, Some(&seen.membership))
}

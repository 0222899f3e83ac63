//! Room state: reading it whole or by key, and sending state events.

use axum::extract::State;
use ruma::api::client::state::{get_state_event_for_key, get_state_events, send_state_event};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    json::json_object,
    service::timeline::{ClientView, NewEvent},
};

/// `GET /_matrix/client/v3/rooms/{roomId}/state`
pub async fn get_state_events(
    State(s): State<AppState>,
    req: Ruma<get_state_events::v3::Request>,
) -> ApiResult<get_state_events::v3::Response> {
    let state = s
        .timeline
        .readable_state(req.sender()?, &req.body.room_id)?;
    let mut out = Vec::new();
    for id in state.values() {
        if let Some(ev) = s.timeline.event(id)? {
            out.push(s.timeline.client_raw(&ev, &ClientView::ANYONE, None));
        }
    }
    Ok(RumaResponse(get_state_events::v3::Response::new(out)))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn get_state_event_for_key(
    State(s): State<AppState>,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> ApiResult<get_state_event_for_key::v3::Response> {
    let b = &req.body;
    let not_found = || Error::not_found("State event not found");
    let state = s.timeline.readable_state(req.sender()?, &b.room_id)?;
    let id = state
        .get(&(b.event_type.to_string(), b.state_key.clone()))
        .ok_or_else(not_found)?;
    let ev = s.timeline.event(id)?.ok_or_else(not_found)?;
    let json = match b.format {
        get_state_event_for_key::v3::StateEventFormat::Event => {
            s.timeline.client_event(&ev, &ClientView::ANYONE, None)
        }
        _ => ev.content(),
    };
    Ok(RumaResponse(get_state_event_for_key::v3::Response::new(
        serde_json::value::to_raw_value(&json)?,
    )))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn send_state_event(
    State(s): State<AppState>,
    req: Ruma<send_state_event::v3::Request>,
) -> ApiResult<send_state_event::v3::Response> {
    let b = &req.body;
    let content = json_object(&b.body)?.into();
    let mut ev = NewEvent::state(b.event_type.to_string(), b.state_key.clone(), content);
    ev.timestamp = super::massaged_ts(&req, b.timestamp);
    let event_id = s.rooms.send_state(&b.room_id, req.sender()?, ev).await?;
    Ok(RumaResponse(send_state_event::v3::Response::new(event_id)))
}

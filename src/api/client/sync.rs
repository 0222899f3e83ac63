//! /sync and filters.

use std::time::Duration;

use ruma::api::client::{
    filter::{FilterDefinition, create_filter, get_filter},
    sync::sync_events,
};

use crate::{
    api::{ApiResult, Ruma, RumaResponse, S},
    error::Error,
    service::sync::{Since, SyncRequest},
};

pub async fn sync(
    axum::extract::State(s): S,
    req: Ruma<sync_events::v3::Request>,
) -> ApiResult<sync_events::v3::Response> {
    let b = &req.body;
    let filter = match &b.filter {
        None => FilterDefinition::default(),
        Some(sync_events::v3::Filter::FilterDefinition(f)) => f.clone(),
        Some(sync_events::v3::Filter::FilterId(id)) => {
            let stored = s
                .filter(req.sender(), id)?
                .ok_or_else(|| Error::not_found("Unknown filter"))?;
            serde_json::from_value(stored).map_err(|e| Error::bad_json(e.to_string()))?
        }
        Some(_) => FilterDefinition::default(),
    };
    let since = b.since.as_deref().map(Since::parse).transpose()?;
    let request = SyncRequest {
        user: req.sender(),
        device: req.sender_device(),
        since,
        filter,
        full_state: b.full_state,
        timeout: b.timeout.unwrap_or(Duration::ZERO),
    };
    Ok(RumaResponse(s.sync(request).await?))
}

pub async fn filter_create(
    axum::extract::State(s): S,
    req: Ruma<create_filter::v3::Request>,
) -> ApiResult<create_filter::v3::Response> {
    if &req.body.user_id != req.sender() {
        return Err(Error::forbidden("You may only create filters for yourself"));
    }
    let json = serde_json::to_value(&req.body.filter)?;
    let id = s.create_filter(req.sender(), &json).await?;
    Ok(RumaResponse(create_filter::v3::Response::new(id)))
}

pub async fn filter_get(
    axum::extract::State(s): S,
    req: Ruma<get_filter::v3::Request>,
) -> ApiResult<get_filter::v3::Response> {
    if &req.body.user_id != req.sender() {
        return Err(Error::forbidden("You may only read your own filters"));
    }
    let stored = s
        .filter(req.sender(), &req.body.filter_id)?
        .ok_or_else(|| Error::not_found("Unknown filter"))?;
    let filter: FilterDefinition =
        serde_json::from_value(stored).map_err(|e| Error::bad_json(e.to_string()))?;
    Ok(RumaResponse(get_filter::v3::Response::new(filter)))
}

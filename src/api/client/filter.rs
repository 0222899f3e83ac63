//! Filters: stored per user, or given inline.

use axum::extract::State;
use ruma::{
    UserId,
    api::client::{
        filter::{FilterDefinition, create_filter, get_filter},
        sync::sync_events::v3::Filter,
    },
};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
};

/// The filter a `/sync` names: inline JSON or the ID of a stored one.
pub(super) fn resolve(
    s: &AppState,
    user: &UserId,
    filter: Option<&Filter>,
) -> Result<FilterDefinition, Error> {
    match filter {
        None => Ok(FilterDefinition::default()),
        Some(Filter::FilterDefinition(f)) => Ok(f.clone()),
        // ruma reads `filter={...}` that is not a valid filter as a filter ID.
        Some(Filter::FilterId(id)) if id.trim_start().starts_with('{') => {
            match serde_json::from_str::<serde_json::Value>(id) {
                Err(e) => Err(Error::new(
                    http::StatusCode::BAD_REQUEST,
                    ruma::api::error::ErrorKind::NotJson,
                    format!("The filter is not JSON: {e}"),
                )),
                Ok(v) => serde_json::from_value(v)
                    .map_err(|e| Error::bad_json(format!("Invalid filter: {e}"))),
            }
        }
        Some(Filter::FilterId(id)) => {
            let stored = s
                .account_data
                .filter(user, id)?
                .ok_or_else(|| Error::not_found("Unknown filter"))?;
            serde_json::from_value(stored).map_err(|e| Error::bad_json(e.to_string()))
        }
        Some(_) => Ok(FilterDefinition::default()),
    }
}

/// `POST /_matrix/client/v3/user/{userId}/filter`
pub async fn create_filter(
    State(s): State<AppState>,
    req: Ruma<create_filter::v3::Request>,
) -> ApiResult<create_filter::v3::Response> {
    if &req.body.user_id != req.sender()? {
        return Err(Error::forbidden("You may only create filters for yourself"));
    }
    let json = serde_json::to_value(&req.body.filter)?;
    let id = s.account_data.create_filter(req.sender()?, &json).await?;
    Ok(RumaResponse(create_filter::v3::Response::new(id)))
}

/// `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
pub async fn get_filter(
    State(s): State<AppState>,
    req: Ruma<get_filter::v3::Request>,
) -> ApiResult<get_filter::v3::Response> {
    if &req.body.user_id != req.sender()? {
        return Err(Error::forbidden("You may only read your own filters"));
    }
    let stored = s
        .account_data
        .filter(req.sender()?, &req.body.filter_id)?
        .ok_or_else(|| Error::not_found("Unknown filter"))?;
    let filter: FilterDefinition =
        serde_json::from_value(stored).map_err(|e| Error::bad_json(e.to_string()))?;
    Ok(RumaResponse(get_filter::v3::Response::new(filter)))
}

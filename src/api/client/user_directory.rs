//! The user directory.

use axum::extract::State;
use ruma::api::client::user_directory::search_users;

use crate::api::{ApiResult, AppState, Ruma, RumaResponse};

/// `POST /_matrix/client/v3/user_directory/search`
pub async fn search_users(
    State(s): State<AppState>,
    req: Ruma<search_users::v3::Request>,
) -> ApiResult<search_users::v3::Response> {
    let limit = (u64::from(req.body.limit) as usize).clamp(1, 100);
    let (found, limited) = s
        .user_directory
        .search(req.sender()?, &req.body.search_term, limit)?;
    let results = found
        .into_iter()
        .map(|f| {
            let mut u = search_users::v3::User::new(f.user_id);
            u.display_name = f.display_name;
            u.avatar_url = f.avatar_url;
            u
        })
        .collect();
    Ok(RumaResponse(search_users::v3::Response::new(
        results, limited,
    )))
}

//! Server discovery: /versions, /.well-known/matrix/client, /capabilities.

use std::collections::BTreeMap;

use ruma::{
    RoomVersionId,
    api::client::discovery::{
        discover_homeserver, get_capabilities,
        get_capabilities::v3::{Capabilities, RoomVersionStability, RoomVersionsCapability},
        get_supported_versions,
    },
};

use axum::extract::State;

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    config::SUPPORTED_ROOM_VERSIONS,
};

/// Spec versions this server speaks.
pub const SPEC_VERSIONS: &[&str] = &[
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12",
];

/// `GET /_matrix/client/versions`
pub async fn get_supported_versions(
    State(_s): State<AppState>,
    _req: Ruma<get_supported_versions::Request>,
) -> ApiResult<get_supported_versions::Response> {
    let mut res = get_supported_versions::Response::new(
        SPEC_VERSIONS.iter().map(|v| v.to_string()).collect(),
    );
    res.unstable_features = BTreeMap::new();
    Ok(RumaResponse(res))
}

/// `GET /.well-known/matrix/client`
pub async fn discover_homeserver(
    State(s): State<AppState>,
    _req: Ruma<discover_homeserver::Request>,
) -> ApiResult<discover_homeserver::Response> {
    Ok(RumaResponse(discover_homeserver::Response::new(
        discover_homeserver::HomeserverInfo::new(s.config().base_url()),
    )))
}

/// `GET /_matrix/client/v3/capabilities`
pub async fn get_capabilities(
    State(s): State<AppState>,
    _req: Ruma<get_capabilities::v3::Request>,
) -> ApiResult<get_capabilities::v3::Response> {
    let available: BTreeMap<RoomVersionId, RoomVersionStability> = SUPPORTED_ROOM_VERSIONS
        .iter()
        .map(|v| (v.clone(), RoomVersionStability::Stable))
        .collect();
    let mut caps = Capabilities::new();
    caps.room_versions =
        RoomVersionsCapability::new(s.config().default_room_version.clone(), available);
    Ok(RumaResponse(get_capabilities::v3::Response::new(caps)))
}

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

use crate::{
    api::{ApiResult, Ruma, RumaResponse, S},
    config::SUPPORTED_ROOM_VERSIONS,
};

/// Spec versions this server speaks.
pub const SPEC_VERSIONS: &[&str] = &[
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12",
];

pub async fn versions(
    _: S,
    _: Ruma<get_supported_versions::Request>,
) -> ApiResult<get_supported_versions::Response> {
    let mut res = get_supported_versions::Response::new(
        SPEC_VERSIONS.iter().map(|v| v.to_string()).collect(),
    );
    res.unstable_features = BTreeMap::new();
    Ok(RumaResponse(res))
}

pub async fn well_known(
    axum::extract::State(s): S,
    _: Ruma<discover_homeserver::Request>,
) -> ApiResult<discover_homeserver::Response> {
    Ok(RumaResponse(discover_homeserver::Response::new(
        discover_homeserver::HomeserverInfo::new(s.config.base_url()),
    )))
}

pub async fn capabilities(
    axum::extract::State(s): S,
    _: Ruma<get_capabilities::v3::Request>,
) -> ApiResult<get_capabilities::v3::Response> {
    let available: BTreeMap<RoomVersionId, RoomVersionStability> = SUPPORTED_ROOM_VERSIONS
        .iter()
        .map(|v| (v.clone(), RoomVersionStability::Stable))
        .collect();
    let mut caps = Capabilities::new();
    caps.room_versions =
        RoomVersionsCapability::new(s.config.default_room_version.clone(), available);
    Ok(RumaResponse(get_capabilities::v3::Response::new(caps)))
}

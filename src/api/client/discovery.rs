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
    config::{EncryptionDefault, SUPPORTED_ROOM_VERSIONS},
};

/// Spec versions this server speaks.
pub const SPEC_VERSIONS: &[&str] = &[
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12",
];

/// `GET /_matrix/client/versions`
pub async fn get_supported_versions(
    State(s): State<AppState>,
    _req: Ruma<get_supported_versions::Request>,
) -> ApiResult<get_supported_versions::Response> {
    let mut res = get_supported_versions::Response::new(
        SPEC_VERSIONS.iter().map(|v| v.to_string()).collect(),
    );
    res.unstable_features = unstable_features(s.config().encryption_by_default);
    Ok(RumaResponse(res))
}

/// Features beyond the spec versions that clients look for. Each is a promise: only what the
/// server does.
fn unstable_features(encryption: EncryptionDefault) -> BTreeMap<String, bool> {
    let mut features = BTreeMap::from([
        // Cross-signing (keys/device_signing, keys/signatures): Element sets it up only when
        // it sees this.
        ("org.matrix.e2e_cross_signing".to_owned(), true),
        // Simplified sliding sync (MSC4186): Element X logs in only when it sees this.
        ("org.matrix.simplified_msc3575".to_owned(), true),
    ]);
    // Element keeps encryption on (greyed out) for rooms the server encrypts by default.
    let (private, public) = match encryption {
        EncryptionDefault::Private => (true, false),
        EncryptionDefault::All => (true, true),
        EncryptionDefault::Off => (false, false),
    };
    for (flag, on) in [
        ("io.element.e2ee_forced.private", private),
        ("io.element.e2ee_forced.trusted_private", private),
        ("io.element.e2ee_forced.public", public),
    ] {
        features.insert(flag.to_owned(), on);
    }
    features
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

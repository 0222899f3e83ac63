//! Devices: list, get, rename, delete (with user-interactive auth).

use ruma::api::client::device::{
    self as dev, delete_device, delete_devices, get_device, get_devices, update_device,
};

use axum::extract::State;

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    store::Device,
};

fn to_ruma(id: ruma::OwnedDeviceId, d: Device) -> dev::Device {
    let mut out = dev::Device::new(id);
    out.display_name = d.display_name;
    out.last_seen_ip = d.last_seen_ip;
    out.last_seen_ts = d
        .last_seen_ts
        .and_then(ruma::UInt::new)
        .map(ruma::MilliSecondsSinceUnixEpoch);
    out
}

/// `GET /_matrix/client/v3/devices`
pub async fn get_devices(
    State(s): State<AppState>,
    req: Ruma<get_devices::v3::Request>,
) -> ApiResult<get_devices::v3::Response> {
    let devices = s
        .users
        .devices(req.sender()?)?
        .into_iter()
        .map(|(id, d)| to_ruma(id, d))
        .collect();
    Ok(RumaResponse(get_devices::v3::Response::new(devices)))
}

/// `GET /_matrix/client/v3/devices/{deviceId}`
pub async fn get_device(
    State(s): State<AppState>,
    req: Ruma<get_device::v3::Request>,
) -> ApiResult<get_device::v3::Response> {
    let d = s
        .users
        .device(req.sender()?, &req.body.device_id)?
        .ok_or_else(|| Error::not_found("No such device"))?;
    Ok(RumaResponse(get_device::v3::Response::new(to_ruma(
        req.body.device_id.clone(),
        d,
    ))))
}

/// `PUT /_matrix/client/v3/devices/{deviceId}`
pub async fn update_device(
    State(s): State<AppState>,
    req: Ruma<update_device::v3::Request>,
) -> ApiResult<update_device::v3::Response> {
    s.users
        .rename_device(
            req.sender()?,
            &req.body.device_id,
            req.body.display_name.clone(),
        )
        .await?;
    Ok(RumaResponse(update_device::v3::Response::new()))
}

/// `DELETE /_matrix/client/v3/devices/{deviceId}`
pub async fn delete_device(
    State(s): State<AppState>,
    req: Ruma<delete_device::v3::Request>,
) -> ApiResult<delete_device::v3::Response> {
    let user = req.sender()?;
    if s.users.device(user, &req.body.device_id)?.is_none() {
        return Err(Error::not_found("No such device"));
    }
    s.uiaa.password_auth(user, req.body.auth.as_ref()).await?;
    s.delete_devices(user, std::slice::from_ref(&req.body.device_id))
        .await?;
    Ok(RumaResponse(delete_device::v3::Response::new()))
}

/// `POST /_matrix/client/v3/delete_devices`
pub async fn delete_devices(
    State(s): State<AppState>,
    req: Ruma<delete_devices::v3::Request>,
) -> ApiResult<delete_devices::v3::Response> {
    let user = req.sender()?;
    s.uiaa.password_auth(user, req.body.auth.as_ref()).await?;
    s.delete_devices(user, &req.body.devices).await?;
    Ok(RumaResponse(delete_devices::v3::Response::new()))
}

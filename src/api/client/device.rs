//! Devices: list, get, rename, delete (with user-interactive auth).

use ruma::api::client::device::{
    self as dev, delete_device, delete_devices, get_device, get_devices, update_device,
};

use crate::{
    api::{ApiResult, Ruma, RumaResponse, S},
    error::Error,
    service::users::Device,
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

pub async fn list(
    axum::extract::State(s): S,
    req: Ruma<get_devices::v3::Request>,
) -> ApiResult<get_devices::v3::Response> {
    let devices = s
        .devices(req.sender())?
        .into_iter()
        .map(|(id, d)| to_ruma(id, d))
        .collect();
    Ok(RumaResponse(get_devices::v3::Response::new(devices)))
}

pub async fn get(
    axum::extract::State(s): S,
    req: Ruma<get_device::v3::Request>,
) -> ApiResult<get_device::v3::Response> {
    let d = s
        .device(req.sender(), &req.body.device_id)?
        .ok_or_else(|| Error::not_found("No such device"))?;
    Ok(RumaResponse(get_device::v3::Response::new(to_ruma(
        req.body.device_id.clone(),
        d,
    ))))
}

pub async fn update(
    axum::extract::State(s): S,
    req: Ruma<update_device::v3::Request>,
) -> ApiResult<update_device::v3::Response> {
    s.rename_device(
        req.sender(),
        &req.body.device_id,
        req.body.display_name.clone(),
    )
    .await?;
    Ok(RumaResponse(update_device::v3::Response::new()))
}

pub async fn delete(
    axum::extract::State(s): S,
    req: Ruma<delete_device::v3::Request>,
) -> ApiResult<delete_device::v3::Response> {
    if s.device(req.sender(), &req.body.device_id)?.is_none() {
        return Err(Error::not_found("No such device"));
    }
    s.password_auth(req.sender(), req.body.auth.as_ref())
        .await?;
    s.delete_devices(req.sender(), std::slice::from_ref(&req.body.device_id))
        .await?;
    Ok(RumaResponse(delete_device::v3::Response::new()))
}

pub async fn delete_many(
    axum::extract::State(s): S,
    req: Ruma<delete_devices::v3::Request>,
) -> ApiResult<delete_devices::v3::Response> {
    s.password_auth(req.sender(), req.body.auth.as_ref())
        .await?;
    s.delete_devices(req.sender(), &req.body.devices).await?;
    Ok(RumaResponse(delete_devices::v3::Response::new()))
}

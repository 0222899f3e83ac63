//! Dehydrated devices (MSC3814).

use axum::extract::State;
use ruma::api::client::dehydrated_device::{
    delete_dehydrated_device, get_dehydrated_device, get_events, put_dehydrated_device,
};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    json::json_value,
    service::dehydrated::NewDehydratedDevice,
};

/// `PUT /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`
pub async fn put_dehydrated_device(
    State(s): State<AppState>,
    req: Ruma<put_dehydrated_device::unstable::Request>,
) -> ApiResult<put_dehydrated_device::unstable::Response> {
    let b = &req.body;
    let keys = |map: &std::collections::BTreeMap<_, _>| -> Result<Vec<(String, _)>, Error> {
        map.iter()
            .map(
                |(id, key): (&ruma::OwnedOneTimeKeyId, &ruma::serde::Raw<_>)| {
                    Ok((id.to_string(), json_value(key)?))
                },
            )
            .collect()
    };
    let new = NewDehydratedDevice {
        device_id: b.device_id.clone(),
        display_name: b.initial_device_display_name.clone(),
        device_data: json_value(&b.device_data)?,
        device_keys: json_value(&b.device_keys)?,
        one_time_keys: keys(&b.one_time_keys)?,
        fallback_keys: keys(&b.fallback_keys)?,
    };
    let device_id = s
        .put_dehydrated_device(req.sender()?, req.sender_device()?, new)
        .await?;
    Ok(RumaResponse(
        put_dehydrated_device::unstable::Response::new(device_id),
    ))
}

/// `GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`
pub async fn get_dehydrated_device(
    State(s): State<AppState>,
    req: Ruma<get_dehydrated_device::unstable::Request>,
) -> ApiResult<get_dehydrated_device::unstable::Response> {
    let device = s.dehydrated_device(req.sender()?)?;
    Ok(RumaResponse(
        get_dehydrated_device::unstable::Response::new(
            device.device_id,
            crate::json::to_raw(&device.device_data),
        ),
    ))
}

/// `DELETE /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`
pub async fn delete_dehydrated_device(
    State(s): State<AppState>,
    req: Ruma<delete_dehydrated_device::unstable::Request>,
) -> ApiResult<delete_dehydrated_device::unstable::Response> {
    let device_id = s.delete_dehydrated_device(req.sender()?).await?;
    Ok(RumaResponse(
        delete_dehydrated_device::unstable::Response::new(device_id),
    ))
}

/// `POST /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events`
pub async fn get_events(
    State(s): State<AppState>,
    req: Ruma<get_events::unstable::Request>,
) -> ApiResult<get_events::unstable::Response> {
    let b = &req.body;
    let (events, next) = s
        .dehydrated_device_events(req.sender()?, &b.device_id, b.next_batch.as_deref())
        .await?;
    let mut res =
        get_events::unstable::Response::new(events.iter().map(crate::json::to_raw).collect());
    res.next_batch = Some(next);
    Ok(RumaResponse(res))
}

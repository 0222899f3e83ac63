//! End-to-end encryption: keys, cross-signing, signatures, to-device messages.

use std::collections::BTreeMap;

use ruma::{
    OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, UInt,
    api::client::{
        keys::{
            claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures,
            upload_signing_keys,
        },
        to_device::send_event_to_device,
    },
    serde::Raw,
};
use serde_json::{Value as JsonValue, json};

use crate::{
    api::{ApiResult, Ruma, RumaResponse, S},
    error::Error,
    service::pdu::to_raw,
};

fn value<T>(raw: &Raw<T>) -> Result<JsonValue, Error> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))
}

pub async fn upload(
    s: S,
    req: Ruma<upload_keys::v3::Request>,
) -> ApiResult<upload_keys::v3::Response> {
    let b = &req.body;
    let device_keys = b.device_keys.as_ref().map(value).transpose()?;
    let otks = b
        .one_time_keys
        .iter()
        .map(|(id, k)| Ok((id.to_string(), value(k)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let fallback = b
        .fallback_keys
        .iter()
        .map(|(id, k)| Ok((id.to_string(), value(k)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let counts =
        s.0.upload_keys(
            req.sender(),
            req.sender_device(),
            device_keys,
            otks,
            fallback,
        )
        .await?;
    let counts = counts
        .into_iter()
        .map(|(alg, n)| (alg.as_str().into(), UInt::new_saturating(n)))
        .collect();
    Ok(RumaResponse(upload_keys::v3::Response::new(counts)))
}

pub async fn query(s: S, req: Ruma<get_keys::v3::Request>) -> ApiResult<get_keys::v3::Response> {
    let mut res = get_keys::v3::Response::new();
    for (user, devices) in &req.body.device_keys {
        if !s.0.is_local(user) {
            res.failures.insert(
                user.server_name().to_string(),
                json!({ "error": "federation is not enabled on this server" }),
            );
            continue;
        }
        let keys = s.0.all_device_keys(user, devices)?;
        res.device_keys.insert(
            user.clone(),
            keys.iter().map(|(d, k)| (d.clone(), to_raw(k))).collect(),
        );
        if let Some(k) = s.0.cross_signing_key(user, "master")? {
            res.master_keys.insert(user.clone(), to_raw(&k));
        }
        if let Some(k) = s.0.cross_signing_key(user, "self_signing")? {
            res.self_signing_keys.insert(user.clone(), to_raw(&k));
        }
        if user == req.sender()
            && let Some(k) = s.0.cross_signing_key(user, "user_signing")?
        {
            res.user_signing_keys.insert(user.clone(), to_raw(&k));
        }
    }
    Ok(RumaResponse(res))
}

pub async fn claim(
    s: S,
    req: Ruma<claim_keys::v3::Request>,
) -> ApiResult<claim_keys::v3::Response> {
    let mut claimed: BTreeMap<
        OwnedUserId,
        BTreeMap<OwnedDeviceId, BTreeMap<OwnedOneTimeKeyId, Raw<ruma::encryption::OneTimeKey>>>,
    > = BTreeMap::new();
    let mut failures = BTreeMap::new();
    for (user, devices) in &req.body.one_time_keys {
        if !s.0.is_local(user) {
            failures.insert(
                user.server_name().to_string(),
                json!({ "error": "federation is not enabled on this server" }),
            );
            continue;
        }
        for (device, algorithm) in devices {
            if let Some((id, k)) = s.0.claim_key(user, device, algorithm.as_str()).await? {
                let Ok(id) = OwnedOneTimeKeyId::try_from(id) else {
                    continue;
                };
                claimed
                    .entry(user.clone())
                    .or_default()
                    .entry(device.clone())
                    .or_default()
                    .insert(id, to_raw(&k));
            }
        }
    }
    let mut res = claim_keys::v3::Response::new(claimed);
    res.failures = failures;
    Ok(RumaResponse(res))
}

pub async fn changes(
    s: S,
    req: Ruma<get_key_changes::v3::Request>,
) -> ApiResult<get_key_changes::v3::Response> {
    let parse = |t: &str| crate::service::sync::Since::parse(t).map(|s| s.pos);
    let from = parse(&req.body.from)?;
    let to = parse(&req.body.to)?.min(s.0.current_pos());
    let (changed, left) = s.0.device_list_changes(req.sender(), from, to)?;
    Ok(RumaResponse(get_key_changes::v3::Response::new(
        changed.into_iter().collect(),
        left.into_iter().collect(),
    )))
}

pub async fn upload_signing(
    s: S,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> ApiResult<upload_signing_keys::v3::Response> {
    s.0.password_auth(req.sender(), req.body.auth.as_ref())
        .await?;
    let b = &req.body;
    let mut keys = Vec::new();
    for (kind, raw) in [
        ("master", &b.master_key),
        ("self_signing", &b.self_signing_key),
        ("user_signing", &b.user_signing_key),
    ] {
        if let Some(raw) = raw {
            keys.push((kind, value(raw)?));
        }
    }
    s.0.upload_cross_signing_keys(req.sender(), keys).await?;
    Ok(RumaResponse(upload_signing_keys::v3::Response::new()))
}

pub async fn upload_signatures(
    s: S,
    req: Ruma<upload_signatures::v3::Request>,
) -> ApiResult<upload_signatures::v3::Response> {
    let mut signed = Vec::new();
    for (user, keys) in &req.body.signed_keys {
        for (key_id, raw) in keys.iter() {
            let v: JsonValue =
                serde_json::from_str(raw.get()).map_err(|e| Error::bad_json(e.to_string()))?;
            signed.push((user.clone(), key_id.to_string(), v));
        }
    }
    let failures = s.0.upload_signatures(req.sender(), signed).await?;
    let failures_json: JsonValue = failures
        .into_iter()
        .map(|(user, keys)| {
            let keys: serde_json::Map<String, JsonValue> = keys
                .into_iter()
                .map(|(k, (code, msg))| (k, json!({ "errcode": code, "error": msg })))
                .collect();
            (user.to_string(), JsonValue::Object(keys))
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    let mut res = upload_signatures::v3::Response::new();
    res.failures = serde_json::from_value(failures_json)?;
    Ok(RumaResponse(res))
}

pub async fn send_to_device(
    s: S,
    req: Ruma<send_event_to_device::v3::Request>,
) -> ApiResult<send_event_to_device::v3::Response> {
    let b = &req.body;
    let mut messages = Vec::new();
    for (user, devices) in &b.messages {
        for (device, content) in devices {
            messages.push((user.clone(), device.to_string(), value(content)?));
        }
    }
    s.0.send_to_device(
        req.sender(),
        req.sender_device(),
        b.txn_id.as_str(),
        &b.event_type.to_string(),
        messages,
    )
    .await?;
    Ok(RumaResponse(send_event_to_device::v3::Response::new()))
}

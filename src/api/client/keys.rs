//! End-to-end encryption keys: upload, query, claim, changes, cross-signing, signatures.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, UInt,
    api::client::keys::{
        claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
    },
    serde::Raw,
};
use serde_json::{Value as JsonValue, json};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    json::{json_value, to_raw},
    service::token::StreamToken,
};

fn key_list<K: ToString, T>(keys: &BTreeMap<K, Raw<T>>) -> Result<Vec<(String, JsonValue)>, Error> {
    keys.iter()
        .map(|(id, k)| Ok((id.to_string(), json_value(k)?)))
        .collect()
}

/// `POST /_matrix/client/v3/keys/upload`
pub async fn upload_keys(
    State(s): State<AppState>,
    req: Ruma<upload_keys::v3::Request>,
) -> ApiResult<upload_keys::v3::Response> {
    let b = &req.body;
    let counts = s
        .keys
        .upload_keys(
            req.sender()?,
            req.sender_device()?,
            b.device_keys.as_ref().map(json_value).transpose()?,
            key_list(&b.one_time_keys)?,
            key_list(&b.fallback_keys)?,
        )
        .await?;
    let counts = counts
        .into_iter()
        .map(|(alg, n)| (alg.as_str().into(), UInt::new_saturating(n)))
        .collect();
    Ok(RumaResponse(upload_keys::v3::Response::new(counts)))
}

/// `POST /_matrix/client/v3/keys/query`
pub async fn get_keys(
    State(s): State<AppState>,
    req: Ruma<get_keys::v3::Request>,
) -> ApiResult<get_keys::v3::Response> {
    let (remote, local): (BTreeMap<_, _>, BTreeMap<_, _>) = req
        .body
        .device_keys
        .clone()
        .into_iter()
        .partition(|(user, _)| !s.users.is_local(user));
    let found = s.keys.query(Some(req.sender()?), &local)?;
    let mut res = get_keys::v3::Response::new();
    let (answers, failures) = s.federation.remote_device_keys(remote).await;
    for answer in answers {
        res.device_keys.extend(answer.device_keys);
        res.master_keys.extend(answer.master_keys);
        res.self_signing_keys.extend(answer.self_signing_keys);
    }
    for (user, keys) in found.users {
        res.device_keys.insert(
            user.clone(),
            keys.devices
                .iter()
                .map(|(d, k)| (d.clone(), to_raw(k)))
                .collect(),
        );
        if let Some(k) = keys.master {
            res.master_keys.insert(user.clone(), to_raw(&k));
        }
        if let Some(k) = keys.self_signing {
            res.self_signing_keys.insert(user.clone(), to_raw(&k));
        }
        if let Some(k) = keys.user_signing {
            res.user_signing_keys.insert(user, to_raw(&k));
        }
    }
    res.failures = found.failures;
    res.failures.extend(failures);
    Ok(RumaResponse(res))
}

/// `POST /_matrix/client/v3/keys/claim`
pub async fn claim_keys(
    State(s): State<AppState>,
    req: Ruma<claim_keys::v3::Request>,
) -> ApiResult<claim_keys::v3::Response> {
    let (remote, local): (BTreeMap<_, _>, BTreeMap<_, _>) = req
        .body
        .one_time_keys
        .clone()
        .into_iter()
        .partition(|(user, _)| !s.users.is_local(user));
    let (found, mut failures) = s.keys.claim(req.sender()?.as_str(), &local).await?;
    let (answers, remote_failures) = s.federation.remote_claim(remote).await;
    failures.extend(remote_failures);
    let mut claimed: BTreeMap<
        OwnedUserId,
        BTreeMap<OwnedDeviceId, BTreeMap<OwnedOneTimeKeyId, Raw<ruma::encryption::OneTimeKey>>>,
    > = BTreeMap::new();
    for (user, device, id, key) in found {
        let Ok(id) = OwnedOneTimeKeyId::try_from(id) else {
            continue;
        };
        claimed
            .entry(user)
            .or_default()
            .entry(device)
            .or_default()
            .insert(id, to_raw(&key));
    }
    for answer in answers {
        claimed.extend(answer.one_time_keys);
    }
    let mut res = claim_keys::v3::Response::new(claimed);
    res.failures = failures;
    Ok(RumaResponse(res))
}

/// `GET /_matrix/client/v3/keys/changes`
pub async fn get_key_changes(
    State(s): State<AppState>,
    req: Ruma<get_key_changes::v3::Request>,
) -> ApiResult<get_key_changes::v3::Response> {
    let from = StreamToken::parse(&req.body.from)?.pos;
    let to = StreamToken::parse(&req.body.to)?.pos;
    let (changed, left) = s.keys.key_changes(req.sender()?, from, to)?;
    Ok(RumaResponse(get_key_changes::v3::Response::new(
        changed.into_iter().collect(),
        left.into_iter().collect(),
    )))
}

/// `POST /_matrix/client/v3/keys/device_signing/upload`
pub async fn upload_signing_keys(
    State(s): State<AppState>,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> ApiResult<upload_signing_keys::v3::Response> {
    let user = req.sender()?;
    s.uiaa.password_auth(user, req.body.auth.as_ref()).await?;
    let b = &req.body;
    let mut keys = Vec::new();
    for (kind, raw) in [
        ("master", &b.master_key),
        ("self_signing", &b.self_signing_key),
        ("user_signing", &b.user_signing_key),
    ] {
        if let Some(raw) = raw {
            keys.push((kind, json_value(raw)?));
        }
    }
    s.keys.upload_cross_signing_keys(user, keys).await?;
    Ok(RumaResponse(upload_signing_keys::v3::Response::new()))
}

/// `POST /_matrix/client/v3/keys/signatures/upload`
pub async fn upload_signatures(
    State(s): State<AppState>,
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
    let failures = s.keys.upload_signatures(req.sender()?, signed).await?;
    let failures_json: serde_json::Map<String, JsonValue> = failures
        .into_iter()
        .map(|(user, keys)| {
            let keys: serde_json::Map<String, JsonValue> = keys
                .into_iter()
                .map(|(k, (code, msg))| (k, json!({ "errcode": code, "error": msg })))
                .collect();
            (user.to_string(), JsonValue::Object(keys))
        })
        .collect();
    let mut res = upload_signatures::v3::Response::new();
    res.failures = serde_json::from_value(failures_json.into())?;
    Ok(RumaResponse(res))
}

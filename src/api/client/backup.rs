//! Server-side key backup (`/room_keys`).

use std::collections::BTreeMap;

use ruma::{
    UInt,
    api::client::backup::{
        RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
        create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
        delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
        get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
        update_backup_version,
    },
    serde::Raw,
};
use serde_json::Value as JsonValue;

use crate::{
    api::{ApiResult, Ruma, RumaResponse, S},
    error::Error,
    service::pdu::to_raw,
};

fn value<T>(raw: &Raw<T>) -> Result<JsonValue, Error> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))
}

fn algorithm(raw: &Raw<ruma::api::client::backup::BackupAlgorithm>) -> Result<JsonValue, Error> {
    let v = value(raw)?;
    if !v.get("algorithm").is_some_and(|a| a.is_string())
        || !v.get("auth_data").is_some_and(|a| a.is_object())
    {
        return Err(Error::bad_json(
            "A backup needs `algorithm` and `auth_data`",
        ));
    }
    Ok(v)
}

fn n(count: u64) -> UInt {
    UInt::new_saturating(count)
}

pub async fn create_version(
    s: S,
    req: Ruma<create_backup_version::v3::Request>,
) -> ApiResult<create_backup_version::v3::Response> {
    let version =
        s.0.create_backup(req.sender(), algorithm(&req.body.algorithm)?)
            .await?;
    Ok(RumaResponse(create_backup_version::v3::Response::new(
        version,
    )))
}

pub async fn latest_version(
    s: S,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> ApiResult<get_latest_backup_info::v3::Response> {
    let info = s.0.backup_info(req.sender(), None)?;
    Ok(RumaResponse(get_latest_backup_info::v3::Response::new(
        to_raw(&info.algorithm),
        n(info.count),
        info.etag,
        info.version,
    )))
}

pub async fn get_version(
    s: S,
    req: Ruma<get_backup_info::v3::Request>,
) -> ApiResult<get_backup_info::v3::Response> {
    let info = s.0.backup_info(req.sender(), Some(&req.body.version))?;
    Ok(RumaResponse(get_backup_info::v3::Response::new(
        to_raw(&info.algorithm),
        n(info.count),
        info.etag,
        info.version,
    )))
}

pub async fn update_version(
    s: S,
    req: Ruma<update_backup_version::v3::Request>,
) -> ApiResult<update_backup_version::v3::Response> {
    s.0.update_backup(
        req.sender(),
        &req.body.version,
        algorithm(&req.body.algorithm)?,
    )
    .await?;
    Ok(RumaResponse(update_backup_version::v3::Response::new()))
}

pub async fn delete_version(
    s: S,
    req: Ruma<delete_backup_version::v3::Request>,
) -> ApiResult<delete_backup_version::v3::Response> {
    s.0.delete_backup(req.sender(), &req.body.version).await?;
    Ok(RumaResponse(delete_backup_version::v3::Response::new()))
}

pub async fn put_keys(
    s: S,
    req: Ruma<add_backup_keys::v3::Request>,
) -> ApiResult<add_backup_keys::v3::Response> {
    let mut keys = Vec::new();
    for (room, backup) in &req.body.rooms {
        for (session, data) in &backup.sessions {
            keys.push((room.clone(), session.clone(), value(data)?));
        }
    }
    let (etag, count) =
        s.0.add_backup_keys(req.sender(), &req.body.version, keys)
            .await?;
    Ok(RumaResponse(add_backup_keys::v3::Response::new(
        etag,
        n(count),
    )))
}

pub async fn put_room_keys(
    s: S,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> ApiResult<add_backup_keys_for_room::v3::Response> {
    let b = &req.body;
    let keys = b
        .sessions
        .iter()
        .map(|(sid, d)| Ok((b.room_id.clone(), sid.clone(), value(d)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let (etag, count) = s.0.add_backup_keys(req.sender(), &b.version, keys).await?;
    Ok(RumaResponse(add_backup_keys_for_room::v3::Response::new(
        etag,
        n(count),
    )))
}

pub async fn put_session_key(
    s: S,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> ApiResult<add_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let keys = vec![(
        b.room_id.clone(),
        b.session_id.clone(),
        value(&b.session_data)?,
    )];
    let (etag, count) = s.0.add_backup_keys(req.sender(), &b.version, keys).await?;
    Ok(RumaResponse(
        add_backup_keys_for_session::v3::Response::new(etag, n(count)),
    ))
}

pub async fn get_keys(
    s: S,
    req: Ruma<get_backup_keys::v3::Request>,
) -> ApiResult<get_backup_keys::v3::Response> {
    let rooms =
        s.0.backup_keys(req.sender(), &req.body.version, None, None)?;
    let rooms = rooms
        .into_iter()
        .map(|(room, sessions)| {
            (
                room,
                RoomKeyBackup::new(
                    sessions
                        .iter()
                        .map(|(k, v)| (k.clone(), to_raw(v)))
                        .collect(),
                ),
            )
        })
        .collect();
    Ok(RumaResponse(get_backup_keys::v3::Response::new(rooms)))
}

pub async fn get_room_keys(
    s: S,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> ApiResult<get_backup_keys_for_room::v3::Response> {
    let b = &req.body;
    let sessions =
        s.0.backup_keys(req.sender(), &b.version, Some(&b.room_id), None)?
            .remove(&b.room_id)
            .unwrap_or_default();
    let sessions: BTreeMap<String, Raw<_>> = sessions
        .iter()
        .map(|(k, v)| (k.clone(), to_raw(v)))
        .collect();
    Ok(RumaResponse(get_backup_keys_for_room::v3::Response::new(
        sessions,
    )))
}

pub async fn get_session_key(
    s: S,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> ApiResult<get_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let data =
        s.0.backup_keys(
            req.sender(),
            &b.version,
            Some(&b.room_id),
            Some(&b.session_id),
        )?
        .remove(&b.room_id)
        .and_then(|mut m| m.remove(&b.session_id))
        .ok_or_else(|| Error::not_found("No backed-up key for that session"))?;
    Ok(RumaResponse(
        get_backup_keys_for_session::v3::Response::new(to_raw(&data)),
    ))
}

pub async fn delete_keys(
    s: S,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> ApiResult<delete_backup_keys::v3::Response> {
    let (etag, count) =
        s.0.delete_backup_keys(req.sender(), &req.body.version, None, None)
            .await?;
    Ok(RumaResponse(delete_backup_keys::v3::Response::new(
        etag,
        n(count),
    )))
}

pub async fn delete_room_keys(
    s: S,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> ApiResult<delete_backup_keys_for_room::v3::Response> {
    let (etag, count) =
        s.0.delete_backup_keys(
            req.sender(),
            &req.body.version,
            Some(&req.body.room_id),
            None,
        )
        .await?;
    Ok(RumaResponse(
        delete_backup_keys_for_room::v3::Response::new(etag, n(count)),
    ))
}

pub async fn delete_session_key(
    s: S,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> ApiResult<delete_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let (etag, count) =
        s.0.delete_backup_keys(
            req.sender(),
            &b.version,
            Some(&b.room_id),
            Some(&b.session_id),
        )
        .await?;
    Ok(RumaResponse(
        delete_backup_keys_for_session::v3::Response::new(etag, n(count)),
    ))
}

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

use axum::extract::State;

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    error::Error,
    json::{json_value, to_raw},
};

fn algorithm(raw: &Raw<ruma::api::client::backup::BackupAlgorithm>) -> Result<JsonValue, Error> {
    let v = json_value(raw)?;
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

/// `POST /_matrix/client/v3/room_keys/version`
pub async fn create_backup_version(
    State(s): State<AppState>,
    req: Ruma<create_backup_version::v3::Request>,
) -> ApiResult<create_backup_version::v3::Response> {
    let version = s
        .backup
        .create(req.sender()?, algorithm(&req.body.algorithm)?)
        .await?;
    Ok(RumaResponse(create_backup_version::v3::Response::new(
        version,
    )))
}

/// `GET /_matrix/client/v3/room_keys/version`
pub async fn get_latest_backup_info(
    State(s): State<AppState>,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> ApiResult<get_latest_backup_info::v3::Response> {
    let info = s.backup.info(req.sender()?, None)?;
    Ok(RumaResponse(get_latest_backup_info::v3::Response::new(
        to_raw(&info.algorithm),
        n(info.count),
        info.etag,
        info.version,
    )))
}

/// `GET /_matrix/client/v3/room_keys/version/{version}`
pub async fn get_backup_info(
    State(s): State<AppState>,
    req: Ruma<get_backup_info::v3::Request>,
) -> ApiResult<get_backup_info::v3::Response> {
    let info = s.backup.info(req.sender()?, Some(&req.body.version))?;
    Ok(RumaResponse(get_backup_info::v3::Response::new(
        to_raw(&info.algorithm),
        n(info.count),
        info.etag,
        info.version,
    )))
}

/// `PUT /_matrix/client/v3/room_keys/version/{version}`
pub async fn update_backup_version(
    State(s): State<AppState>,
    req: Ruma<update_backup_version::v3::Request>,
) -> ApiResult<update_backup_version::v3::Response> {
    s.backup
        .update(
            req.sender()?,
            &req.body.version,
            algorithm(&req.body.algorithm)?,
        )
        .await?;
    Ok(RumaResponse(update_backup_version::v3::Response::new()))
}

/// `DELETE /_matrix/client/v3/room_keys/version/{version}`
pub async fn delete_backup_version(
    State(s): State<AppState>,
    req: Ruma<delete_backup_version::v3::Request>,
) -> ApiResult<delete_backup_version::v3::Response> {
    s.backup.delete(req.sender()?, &req.body.version).await?;
    Ok(RumaResponse(delete_backup_version::v3::Response::new()))
}

/// `PUT /_matrix/client/v3/room_keys/keys`
pub async fn add_backup_keys(
    State(s): State<AppState>,
    req: Ruma<add_backup_keys::v3::Request>,
) -> ApiResult<add_backup_keys::v3::Response> {
    let mut keys = Vec::new();
    for (room, backup) in &req.body.rooms {
        for (session, data) in &backup.sessions {
            keys.push((room.clone(), session.clone(), json_value(data)?));
        }
    }
    let (etag, count) = s
        .backup
        .add_keys(req.sender()?, &req.body.version, keys)
        .await?;
    Ok(RumaResponse(add_backup_keys::v3::Response::new(
        etag,
        n(count),
    )))
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
pub async fn add_backup_keys_for_room(
    State(s): State<AppState>,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> ApiResult<add_backup_keys_for_room::v3::Response> {
    let b = &req.body;
    let keys = b
        .sessions
        .iter()
        .map(|(sid, d)| Ok((b.room_id.clone(), sid.clone(), json_value(d)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let (etag, count) = s.backup.add_keys(req.sender()?, &b.version, keys).await?;
    Ok(RumaResponse(add_backup_keys_for_room::v3::Response::new(
        etag,
        n(count),
    )))
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub async fn add_backup_keys_for_session(
    State(s): State<AppState>,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> ApiResult<add_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let keys = vec![(
        b.room_id.clone(),
        b.session_id.clone(),
        json_value(&b.session_data)?,
    )];
    let (etag, count) = s.backup.add_keys(req.sender()?, &b.version, keys).await?;
    Ok(RumaResponse(
        add_backup_keys_for_session::v3::Response::new(etag, n(count)),
    ))
}

/// `GET /_matrix/client/v3/room_keys/keys`
pub async fn get_backup_keys(
    State(s): State<AppState>,
    req: Ruma<get_backup_keys::v3::Request>,
) -> ApiResult<get_backup_keys::v3::Response> {
    let rooms = s
        .backup
        .keys(req.sender()?, &req.body.version, None, None)?;
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

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}`
pub async fn get_backup_keys_for_room(
    State(s): State<AppState>,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> ApiResult<get_backup_keys_for_room::v3::Response> {
    let b = &req.body;
    let sessions = s
        .backup
        .keys(req.sender()?, &b.version, Some(&b.room_id), None)?
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

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub async fn get_backup_keys_for_session(
    State(s): State<AppState>,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> ApiResult<get_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let data = s
        .backup
        .keys(
            req.sender()?,
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

/// `DELETE /_matrix/client/v3/room_keys/keys`
pub async fn delete_backup_keys(
    State(s): State<AppState>,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> ApiResult<delete_backup_keys::v3::Response> {
    let (etag, count) = s
        .backup
        .delete_keys(req.sender()?, &req.body.version, None, None)
        .await?;
    Ok(RumaResponse(delete_backup_keys::v3::Response::new(
        etag,
        n(count),
    )))
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
pub async fn delete_backup_keys_for_room(
    State(s): State<AppState>,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> ApiResult<delete_backup_keys_for_room::v3::Response> {
    let (etag, count) = s
        .backup
        .delete_keys(
            req.sender()?,
            &req.body.version,
            Some(&req.body.room_id),
            None,
        )
        .await?;
    Ok(RumaResponse(
        delete_backup_keys_for_room::v3::Response::new(etag, n(count)),
    ))
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub async fn delete_backup_keys_for_session(
    State(s): State<AppState>,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> ApiResult<delete_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let (etag, count) = s
        .backup
        .delete_keys(
            req.sender()?,
            &b.version,
            Some(&b.room_id),
            Some(&b.session_id),
        )
        .await?;
    Ok(RumaResponse(
        delete_backup_keys_for_session::v3::Response::new(etag, n(count)),
    ))
}

//! Typing, receipts, read markers, account data, tags and push rules.

use ruma::{
    api::client::{
        config::{
            get_global_account_data, get_room_account_data, set_global_account_data,
            set_room_account_data,
        },
        push::{
            delete_pushrule, get_pushers, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
            get_pushrules_all, get_pushrules_global_scope, set_pushrule, set_pushrule_actions,
            set_pushrule_enabled,
        },
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
        tag::{create_tag, delete_tag, get_tags},
        typing::create_typing_event,
    },
    events::receipt::ReceiptThread,
    push::{InsertPushRuleError, RemovePushRuleError, RuleKind, RuleNotFoundError},
};
use serde_json::{Value as JsonValue, json};

use crate::{
    api::{ApiResult, Ruma, RumaResponse, S},
    error::Error,
    service::pdu::to_raw,
};

pub async fn typing(
    axum::extract::State(s): S,
    req: Ruma<create_typing_event::v3::Request>,
) -> ApiResult<create_typing_event::v3::Response> {
    let b = &req.body;
    if &b.user_id != req.sender() {
        return Err(Error::forbidden("You may only set your own typing state"));
    }
    s.require_joined(req.sender(), &b.room_id)?;
    let timeout = match &b.state {
        create_typing_event::v3::Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    s.set_typing(&b.room_id, req.sender(), timeout);
    Ok(RumaResponse(create_typing_event::v3::Response::new()))
}

async fn receipt(
    s: &S,
    user: &ruma::UserId,
    room_id: &ruma::RoomId,
    ty: &str,
    event_id: &ruma::EventId,
    thread: Option<String>,
) -> Result<(), Error> {
    let axum::extract::State(s) = s;
    let ev = s.visible_event(user, event_id)?;
    if ev.room_id != room_id {
        return Err(Error::not_found("Event not in this room"));
    }
    s.set_receipt(room_id, user, ty, event_id.to_owned(), thread)
        .await
}

pub async fn create_receipt(
    s: S,
    req: Ruma<create_receipt::v3::Request>,
) -> ApiResult<create_receipt::v3::Response> {
    let b = &req.body;
    s.0.require_joined(req.sender(), &b.room_id)?;
    let thread = match &b.thread {
        ReceiptThread::Main => Some("main".to_owned()),
        ReceiptThread::Thread(id) => Some(id.to_string()),
        _ => None,
    };
    match &b.receipt_type {
        ReceiptType::Read => {
            receipt(&s, req.sender(), &b.room_id, "m.read", &b.event_id, thread).await?
        }
        ReceiptType::ReadPrivate => {
            receipt(
                &s,
                req.sender(),
                &b.room_id,
                "m.read.private",
                &b.event_id,
                thread,
            )
            .await?
        }
        ReceiptType::FullyRead => {
            s.0.visible_event(req.sender(), &b.event_id)?;
            s.0.set_account_data(
                req.sender(),
                Some(&b.room_id),
                "m.fully_read",
                json!({ "event_id": b.event_id }),
            )
            .await?
        }
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown receipt type {other}"
            )));
        }
    }
    Ok(RumaResponse(create_receipt::v3::Response::new()))
}

pub async fn read_markers(
    s: S,
    req: Ruma<set_read_marker::v3::Request>,
) -> ApiResult<set_read_marker::v3::Response> {
    let b = &req.body;
    s.0.require_joined(req.sender(), &b.room_id)?;
    if let Some(id) = &b.fully_read {
        s.0.visible_event(req.sender(), id)?;
        s.0.set_account_data(
            req.sender(),
            Some(&b.room_id),
            "m.fully_read",
            json!({ "event_id": id }),
        )
        .await?;
    }
    if let Some(id) = &b.read_receipt {
        receipt(&s, req.sender(), &b.room_id, "m.read", id, None).await?;
    }
    if let Some(id) = &b.private_read_receipt {
        receipt(&s, req.sender(), &b.room_id, "m.read.private", id, None).await?;
    }
    Ok(RumaResponse(set_read_marker::v3::Response::new()))
}

fn own(req_user: &ruma::UserId, sender: &ruma::UserId) -> Result<(), Error> {
    if req_user != sender {
        return Err(Error::forbidden(
            "You may only access your own account data",
        ));
    }
    Ok(())
}

fn object<T>(raw: &ruma::serde::Raw<T>) -> Result<JsonValue, Error> {
    let v: JsonValue =
        serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if !v.is_object() {
        return Err(Error::bad_json("Account data must be a JSON object"));
    }
    Ok(v)
}

pub async fn global_data_get(
    s: S,
    req: Ruma<get_global_account_data::v3::Request>,
) -> ApiResult<get_global_account_data::v3::Response> {
    own(&req.body.user_id, req.sender())?;
    let c =
        s.0.account_data(req.sender(), None, &req.body.event_type.to_string())?
            .ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(RumaResponse(get_global_account_data::v3::Response::new(
        to_raw(&c),
    )))
}

pub async fn global_data_put(
    s: S,
    req: Ruma<set_global_account_data::v3::Request>,
) -> ApiResult<set_global_account_data::v3::Response> {
    own(&req.body.user_id, req.sender())?;
    let ty = req.body.event_type.to_string();
    if ty == "m.fully_read" || ty == "m.push_rules" {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::BadJson,
            format!("{ty} cannot be set through account data"),
        ));
    }
    s.0.set_account_data(req.sender(), None, &ty, object(&req.body.data)?)
        .await?;
    Ok(RumaResponse(set_global_account_data::v3::Response::new()))
}

pub async fn room_data_get(
    s: S,
    req: Ruma<get_room_account_data::v3::Request>,
) -> ApiResult<get_room_account_data::v3::Response> {
    own(&req.body.user_id, req.sender())?;
    let c =
        s.0.account_data(
            req.sender(),
            Some(&req.body.room_id),
            &req.body.event_type.to_string(),
        )?
        .ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(RumaResponse(get_room_account_data::v3::Response::new(
        to_raw(&c),
    )))
}

pub async fn room_data_put(
    s: S,
    req: Ruma<set_room_account_data::v3::Request>,
) -> ApiResult<set_room_account_data::v3::Response> {
    own(&req.body.user_id, req.sender())?;
    let ty = req.body.event_type.to_string();
    if ty == "m.fully_read" || ty == "m.push_rules" {
        return Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::BadJson,
            format!("{ty} cannot be set through account data"),
        ));
    }
    s.0.set_account_data(
        req.sender(),
        Some(&req.body.room_id),
        &ty,
        object(&req.body.data)?,
    )
    .await?;
    Ok(RumaResponse(set_room_account_data::v3::Response::new()))
}

fn tags_of(
    s: &S,
    user: &ruma::UserId,
    room: &ruma::RoomId,
) -> Result<serde_json::Map<String, JsonValue>, Error> {
    Ok(s.0
        .account_data(user, Some(room), "m.tag")?
        .and_then(|c| c.get("tags").and_then(|t| t.as_object()).cloned())
        .unwrap_or_default())
}

pub async fn tags(s: S, req: Ruma<get_tags::v3::Request>) -> ApiResult<get_tags::v3::Response> {
    own(&req.body.user_id, req.sender())?;
    let tags = tags_of(&s, req.sender(), &req.body.room_id)?;
    let tags = serde_json::from_value(JsonValue::Object(tags))?;
    Ok(RumaResponse(get_tags::v3::Response::new(tags)))
}

pub async fn tag_put(
    s: S,
    req: Ruma<create_tag::v3::Request>,
) -> ApiResult<create_tag::v3::Response> {
    own(&req.body.user_id, req.sender())?;
    let mut tags = tags_of(&s, req.sender(), &req.body.room_id)?;
    tags.insert(
        req.body.tag.clone(),
        serde_json::to_value(&req.body.tag_info)?,
    );
    s.0.set_account_data(
        req.sender(),
        Some(&req.body.room_id),
        "m.tag",
        json!({ "tags": tags }),
    )
    .await?;
    Ok(RumaResponse(create_tag::v3::Response::new()))
}

pub async fn tag_delete(
    s: S,
    req: Ruma<delete_tag::v3::Request>,
) -> ApiResult<delete_tag::v3::Response> {
    own(&req.body.user_id, req.sender())?;
    let mut tags = tags_of(&s, req.sender(), &req.body.room_id)?;
    tags.remove(&req.body.tag);
    s.0.set_account_data(
        req.sender(),
        Some(&req.body.room_id),
        "m.tag",
        json!({ "tags": tags }),
    )
    .await?;
    Ok(RumaResponse(delete_tag::v3::Response::new()))
}

pub async fn pushrules_all(
    s: S,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> ApiResult<get_pushrules_all::v3::Response> {
    Ok(RumaResponse(get_pushrules_all::v3::Response::new(
        s.0.push_rules(req.sender())?,
    )))
}

pub async fn pushrules_global(
    s: S,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> ApiResult<get_pushrules_global_scope::v3::Response> {
    Ok(RumaResponse(get_pushrules_global_scope::v3::Response::new(
        s.0.push_rules(req.sender())?,
    )))
}

fn rule_not_found() -> Error {
    Error::not_found("Push rule not found")
}

pub async fn pushrule_get(
    s: S,
    req: Ruma<get_pushrule::v3::Request>,
) -> ApiResult<get_pushrule::v3::Response> {
    let rules = s.0.push_rules(req.sender())?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(rule_not_found)?;
    Ok(RumaResponse(get_pushrule::v3::Response::new(
        rule.to_owned().into(),
    )))
}

pub async fn pushrule_put(
    s: S,
    req: Ruma<set_pushrule::v3::Request>,
) -> ApiResult<set_pushrule::v3::Response> {
    let mut rules = s.0.push_rules(req.sender())?;
    let b = req.body;
    rules
        .insert(b.rule, b.after.as_deref(), b.before.as_deref())
        .map_err(|e| match e {
            InsertPushRuleError::UnknownRuleId => rule_not_found(),
            e => Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::InvalidParam,
                e.to_string(),
            ),
        })?;
    s.0.set_push_rules(req.user.as_ref().expect("authenticated"), &rules)
        .await?;
    Ok(RumaResponse(set_pushrule::v3::Response::new()))
}

pub async fn pushrule_delete(
    s: S,
    req: Ruma<delete_pushrule::v3::Request>,
) -> ApiResult<delete_pushrule::v3::Response> {
    let mut rules = s.0.push_rules(req.sender())?;
    rules
        .remove(req.body.kind.clone(), &req.body.rule_id)
        .map_err(|e| match e {
            RemovePushRuleError::NotFound => rule_not_found(),
            e => Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::InvalidParam,
                e.to_string(),
            ),
        })?;
    s.0.set_push_rules(req.sender(), &rules).await?;
    Ok(RumaResponse(delete_pushrule::v3::Response::new()))
}

pub async fn pushrule_enabled_get(
    s: S,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> ApiResult<get_pushrule_enabled::v3::Response> {
    let rules = s.0.push_rules(req.sender())?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(rule_not_found)?;
    Ok(RumaResponse(get_pushrule_enabled::v3::Response::new(
        rule.enabled(),
    )))
}

pub async fn pushrule_enabled_put(
    s: S,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> ApiResult<set_pushrule_enabled::v3::Response> {
    let mut rules = s.0.push_rules(req.sender())?;
    rules
        .set_enabled(req.body.kind.clone(), &req.body.rule_id, req.body.enabled)
        .map_err(|_: RuleNotFoundError| rule_not_found())?;
    s.0.set_push_rules(req.sender(), &rules).await?;
    Ok(RumaResponse(set_pushrule_enabled::v3::Response::new()))
}

pub async fn pushrule_actions_get(
    s: S,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> ApiResult<get_pushrule_actions::v3::Response> {
    let rules = s.0.push_rules(req.sender())?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(rule_not_found)?;
    Ok(RumaResponse(get_pushrule_actions::v3::Response::new(
        rule.actions().to_vec(),
    )))
}

pub async fn pushrule_actions_put(
    s: S,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> ApiResult<set_pushrule_actions::v3::Response> {
    let mut rules = s.0.push_rules(req.sender())?;
    let kind: RuleKind = req.body.kind.clone();
    rules
        .set_actions(kind, &req.body.rule_id, req.body.actions.clone())
        .map_err(|_: RuleNotFoundError| rule_not_found())?;
    s.0.set_push_rules(req.sender(), &rules).await?;
    Ok(RumaResponse(set_pushrule_actions::v3::Response::new()))
}

pub async fn pushers(
    _: S,
    _req: Ruma<get_pushers::v3::Request>,
) -> ApiResult<get_pushers::v3::Response> {
    Ok(RumaResponse(get_pushers::v3::Response::new(vec![])))
}

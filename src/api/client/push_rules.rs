//! Push rules, pushers and the notifications they produced.

use axum::extract::State;
use ruma::api::client::push::{
    delete_pushrule, get_notifications, get_pushers, get_pushrule, get_pushrule_actions,
    get_pushrule_enabled, get_pushrules_all, get_pushrules_global_scope, set_pusher, set_pushrule,
    set_pushrule_actions, set_pushrule_enabled,
};

use ruma::{MilliSecondsSinceUnixEpoch, UInt};

use crate::{
    api::{ApiResult, AppState, Ruma, RumaResponse},
    service::timeline::ClientView,
};

/// `GET /_matrix/client/v3/pushrules/`
pub async fn get_pushrules_all(
    State(s): State<AppState>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> ApiResult<get_pushrules_all::v3::Response> {
    Ok(RumaResponse(get_pushrules_all::v3::Response::new(
        s.push.rules(req.sender()?)?,
    )))
}

/// `GET /_matrix/client/v3/pushrules/global/`
pub async fn get_pushrules_global_scope(
    State(s): State<AppState>,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> ApiResult<get_pushrules_global_scope::v3::Response> {
    Ok(RumaResponse(get_pushrules_global_scope::v3::Response::new(
        s.push.rules(req.sender()?)?,
    )))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn get_pushrule(
    State(s): State<AppState>,
    req: Ruma<get_pushrule::v3::Request>,
) -> ApiResult<get_pushrule::v3::Response> {
    let b = &req.body;
    let rule = s.push.rule(req.sender()?, b.kind.clone(), &b.rule_id)?;
    Ok(RumaResponse(get_pushrule::v3::Response::new(rule.into())))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn set_pushrule(
    State(s): State<AppState>,
    req: Ruma<set_pushrule::v3::Request>,
) -> ApiResult<set_pushrule::v3::Response> {
    let user = req.sender()?.clone();
    let b = req.body;
    s.push
        .put_rule(&user, b.rule, b.after.as_deref(), b.before.as_deref())
        .await?;
    Ok(RumaResponse(set_pushrule::v3::Response::new()))
}

/// `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn delete_pushrule(
    State(s): State<AppState>,
    req: Ruma<delete_pushrule::v3::Request>,
) -> ApiResult<delete_pushrule::v3::Response> {
    let b = &req.body;
    s.push
        .remove_rule(req.sender()?, b.kind.clone(), &b.rule_id)
        .await?;
    Ok(RumaResponse(delete_pushrule::v3::Response::new()))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
pub async fn get_pushrule_enabled(
    State(s): State<AppState>,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> ApiResult<get_pushrule_enabled::v3::Response> {
    let b = &req.body;
    let rule = s.push.rule(req.sender()?, b.kind.clone(), &b.rule_id)?;
    Ok(RumaResponse(get_pushrule_enabled::v3::Response::new(
        rule.enabled(),
    )))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
pub async fn set_pushrule_enabled(
    State(s): State<AppState>,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> ApiResult<set_pushrule_enabled::v3::Response> {
    let b = &req.body;
    s.push
        .set_rule_enabled(req.sender()?, b.kind.clone(), &b.rule_id, b.enabled)
        .await?;
    Ok(RumaResponse(set_pushrule_enabled::v3::Response::new()))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
pub async fn get_pushrule_actions(
    State(s): State<AppState>,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> ApiResult<get_pushrule_actions::v3::Response> {
    let b = &req.body;
    let rule = s.push.rule(req.sender()?, b.kind.clone(), &b.rule_id)?;
    Ok(RumaResponse(get_pushrule_actions::v3::Response::new(
        rule.actions().to_vec(),
    )))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
pub async fn set_pushrule_actions(
    State(s): State<AppState>,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> ApiResult<set_pushrule_actions::v3::Response> {
    let b = &req.body;
    s.push
        .set_rule_actions(req.sender()?, b.kind.clone(), &b.rule_id, b.actions.clone())
        .await?;
    Ok(RumaResponse(set_pushrule_actions::v3::Response::new()))
}

/// `GET /_matrix/client/v3/pushers`
pub async fn get_pushers(
    State(s): State<AppState>,
    req: Ruma<get_pushers::v3::Request>,
) -> ApiResult<get_pushers::v3::Response> {
    Ok(RumaResponse(get_pushers::v3::Response::new(
        s.notifier.pushers(req.sender()?)?,
    )))
}

/// `POST /_matrix/client/v3/pushers/set`
pub async fn set_pusher(
    State(s): State<AppState>,
    req: Ruma<set_pusher::v3::Request>,
) -> ApiResult<set_pusher::v3::Response> {
    let user = req.sender()?;
    match req.body.action.clone() {
        set_pusher::v3::PusherAction::Post(data) => {
            s.notifier
                .set_pusher(user, data.pusher, data.append)
                .await?
        }
        set_pusher::v3::PusherAction::Delete(ids) => s.notifier.delete_pusher(user, &ids).await?,
        _ => return Err(crate::error::Error::invalid_param("Unknown pusher action")),
    }
    Ok(RumaResponse(set_pusher::v3::Response::new()))
}

/// `GET /_matrix/client/v3/notifications`
pub async fn get_notifications(
    State(s): State<AppState>,
    req: Ruma<get_notifications::v3::Request>,
) -> ApiResult<get_notifications::v3::Response> {
    let user = req.sender()?;
    let from = match &req.body.from {
        Some(f) => Some(
            f.parse::<u64>()
                .map_err(|_| crate::error::Error::invalid_param("Unknown from token"))?,
        ),
        None => None,
    };
    let limit = req.body.limit.map_or(20, |l| u64::from(l) as usize);
    let only_highlight = req.body.only.as_deref() == Some("highlight");
    let (found, next) = s
        .notifier
        .notifications(user, from, limit, only_highlight)?;
    let notifications = found
        .into_iter()
        .map(|n| {
            get_notifications::v3::Notification::new(
                serde_json::from_value(n.record.actions).unwrap_or_default(),
                s.timeline.client_raw(&n.event, &ClientView::ANYONE, None),
                n.read,
                n.record.room_id,
                MilliSecondsSinceUnixEpoch(UInt::new_saturating(n.record.ts)),
            )
        })
        .collect();
    let mut res = get_notifications::v3::Response::new(notifications);
    res.next_token = next.map(|n| n.to_string());
    Ok(RumaResponse(res))
}

//! The Client-Server API, one file per area of the spec. Every handler is named after its ruma
//! endpoint and opens with a doc line naming its method and path.

mod account;
mod account_data;
mod alias;
mod appservice;
mod backup;
mod dehydrated_device;
mod device;
pub(crate) mod directory;
mod discovery;
mod filter;
mod keys;
mod media;
mod membership;
mod message;
mod presence;
mod profile;
mod push_rules;
mod receipt;
mod relations;
mod report;
mod room;
mod search;
mod session;
mod state;
mod sync;
mod tag;
mod thirdparty;
mod to_device;
mod typing;
mod user_directory;
mod voip;

use axum::Router;

use super::{AppState, Lenient, RouterExt, Ruma};

pub use discovery::SPEC_VERSIONS;

/// Every Client-Server endpoint the server implements.
pub fn routes(mut router: Router<AppState>) -> Router<AppState> {
    use ruma::api::{Metadata, client::account::get_3pids, path_builder::PathBuilder};
    for path in get_3pids::v3::Request::PATH_BUILDER.all_paths() {
        router = router.route(path, axum::routing::get(account::get_3pids));
    }
    router
        // server discovery
        .ruma(discovery::get_supported_versions)
        .ruma(discovery::discover_homeserver)
        .ruma(discovery::get_capabilities)
        // accounts and sessions
        .ruma(account::register)
        .ruma(account::get_username_availability)
        .ruma(account::check_registration_token_validity)
        .ruma(account::whoami)
        .ruma(account::change_password)
        .ruma(account::deactivate)
        .ruma(account::request_openid_token)
        .ruma(session::get_login_types)
        .ruma(session::login)
        .ruma(session::logout)
        .ruma(session::logout_all)
        // devices and profiles
        .ruma(device::get_devices)
        .ruma(device::get_device)
        .ruma(device::update_device)
        .ruma(device::delete_device)
        .ruma(device::delete_devices)
        .ruma(profile::get_profile)
        .ruma(profile::get_display_name)
        .ruma(profile::set_display_name)
        .ruma(profile::get_avatar_url)
        .ruma(profile::set_avatar_url)
        .ruma(presence::get_presence)
        .ruma(presence::set_presence)
        // rooms
        .ruma(room::create_room)
        .ruma(room::upgrade_room)
        .ruma(room::get_summary)
        .ruma(room::get_hierarchy)
        .ruma(report::report_content)
        .ruma(report::report_room)
        .ruma(membership::join_room_by_id_or_alias)
        .ruma(membership::knock)
        .ruma(membership::join_room_by_id)
        .ruma(membership::invite_user)
        .ruma(membership::leave_room)
        .ruma(membership::forget_room)
        .ruma(membership::kick_user)
        .ruma(membership::ban_user)
        .ruma(membership::unban_user)
        .ruma(membership::joined_rooms)
        .ruma(membership::get_member_events)
        .ruma(membership::joined_members)
        .ruma(state::get_state_events)
        .ruma(state::get_state_event_for_key)
        .ruma_event(state::send_state_event)
        .ruma_event(message::send_message_event)
        .ruma_event(message::redact_event)
        .ruma(message::get_room_event)
        .ruma(message::get_message_events)
        .ruma(message::get_context)
        .ruma(relations::get_relating_events)
        .ruma(relations::get_relating_events_with_rel_type)
        .ruma(relations::get_relating_events_with_rel_type_and_event_type)
        .ruma_lenient(
            relations::get_threads,
            Lenient::QueryDefaults(&[("include", "all")]),
        )
        .ruma(alias::get_alias)
        .ruma(alias::create_alias)
        .ruma(alias::delete_alias)
        .ruma(alias::aliases)
        .ruma(directory::get_public_rooms)
        .ruma(directory::get_public_rooms_filtered)
        .ruma(directory::get_room_visibility)
        .ruma(directory::set_room_visibility)
        .ruma(user_directory::search_users)
        .ruma(search::search_events)
        // sync and filters
        .ruma(sync::sync_events)
        .ruma(sync::sync_events_v5)
        .ruma(filter::create_filter)
        .ruma(filter::get_filter)
        // ephemeral, account data, push
        .ruma_lenient(
            typing::create_typing_event,
            Lenient::Body(typing::default_timeout),
        )
        .ruma(receipt::create_receipt)
        .ruma(receipt::set_read_marker)
        .ruma(account_data::get_global_account_data)
        .ruma(account_data::set_global_account_data)
        .ruma(account_data::get_room_account_data)
        .ruma(account_data::set_room_account_data)
        .ruma(tag::get_tags)
        .ruma(tag::create_tag)
        .ruma(tag::delete_tag)
        .ruma(push_rules::get_pushrules_all)
        .ruma(push_rules::get_pushrules_global_scope)
        .ruma(push_rules::get_pushrule)
        .ruma(push_rules::set_pushrule)
        .ruma(push_rules::delete_pushrule)
        .ruma(push_rules::get_pushrule_enabled)
        .ruma(push_rules::set_pushrule_enabled)
        .ruma(push_rules::get_pushrule_actions)
        .ruma(push_rules::set_pushrule_actions)
        .ruma(push_rules::get_pushers)
        .ruma(push_rules::set_pusher)
        .ruma(push_rules::get_notifications)
        // end-to-end encryption
        .ruma(keys::upload_keys)
        .ruma(keys::get_keys)
        .ruma(keys::claim_keys)
        .ruma(keys::get_key_changes)
        .ruma(keys::upload_signing_keys)
        .ruma(keys::upload_signatures)
        .ruma(to_device::send_event_to_device)
        .ruma(dehydrated_device::put_dehydrated_device)
        .ruma(dehydrated_device::get_dehydrated_device)
        .ruma(dehydrated_device::delete_dehydrated_device)
        .ruma(dehydrated_device::get_events)
        .ruma(backup::create_backup_version)
        .ruma(backup::get_latest_backup_info)
        .ruma(backup::get_backup_info)
        .ruma(backup::update_backup_version)
        .ruma(backup::delete_backup_version)
        .ruma(backup::add_backup_keys)
        .ruma(backup::add_backup_keys_for_room)
        .ruma(backup::add_backup_keys_for_session)
        .ruma(backup::get_backup_keys)
        .ruma(backup::get_backup_keys_for_room)
        .ruma(backup::get_backup_keys_for_session)
        .ruma(backup::delete_backup_keys)
        .ruma(backup::delete_backup_keys_for_room)
        .ruma(backup::delete_backup_keys_for_session)
        // application services and the networks they bridge
        .ruma(appservice::request_ping)
        .ruma(thirdparty::get_protocols)
        .ruma(thirdparty::get_protocol)
        .ruma(thirdparty::get_location_for_protocol)
        .ruma(thirdparty::get_user_for_protocol)
        .ruma(thirdparty::get_location_for_room_alias)
        .ruma(thirdparty::get_user_for_user_id)
        // calls
        .ruma(voip::get_turn_server_info)
        // the content repository (media), with its own response headers
        .merge(media::routes())
}

/// The `ts` query parameter, honoured for appservices only (timestamp massaging).
fn massaged_ts<T>(req: &Ruma<T>, ts: Option<ruma::MilliSecondsSinceUnixEpoch>) -> Option<u64> {
    req.appservice.as_ref().and(ts).map(|t| u64::from(t.0))
}

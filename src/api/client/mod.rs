//! The Client-Server API, one file per area of the spec.

mod appservice;
mod backup;
mod device;
mod discovery;
mod keys;
mod misc;
mod profile;
mod room;
mod session;
mod sync;

use axum::Router;
use ruma::api::client::{
    account, alias, config, context, device as d, directory, discovery as disc, filter, membership,
    message, profile as p, push, read_marker, receipt, redact, room as r, session as sess, state,
    sync::sync_events, tag, typing,
};

use super::{AppState, route};

pub use discovery::SPEC_VERSIONS;

pub fn routes(router: Router<AppState>) -> Router<AppState> {
    let r0 = router;
    let r0 = route::<disc::get_supported_versions::Request, _, _>(r0, discovery::versions);
    let r0 = route::<disc::discover_homeserver::Request, _, _>(r0, discovery::well_known);
    let r0 = route::<disc::get_capabilities::v3::Request, _, _>(r0, discovery::capabilities);
    // accounts and sessions
    let r0 = route::<account::register::v3::Request, _, _>(r0, session::register);
    let r0 = route::<account::get_username_availability::v3::Request, _, _>(r0, session::available);
    let r0 = route::<sess::get_login_types::v3::Request, _, _>(r0, session::login_types);
    let r0 = route::<sess::login::v3::Request, _, _>(r0, session::login);
    let r0 = route::<sess::logout::v3::Request, _, _>(r0, session::logout);
    let r0 = route::<sess::logout_all::v3::Request, _, _>(r0, session::logout_all);
    let r0 = route::<account::whoami::v3::Request, _, _>(r0, session::whoami);
    let r0 = route::<account::change_password::v3::Request, _, _>(r0, session::change_password);
    let r0 = route::<account::deactivate::v3::Request, _, _>(r0, session::deactivate);
    // devices
    let r0 = route::<d::get_devices::v3::Request, _, _>(r0, device::list);
    let r0 = route::<d::get_device::v3::Request, _, _>(r0, device::get);
    let r0 = route::<d::update_device::v3::Request, _, _>(r0, device::update);
    let r0 = route::<d::delete_device::v3::Request, _, _>(r0, device::delete);
    let r0 = route::<d::delete_devices::v3::Request, _, _>(r0, device::delete_many);
    // profiles
    let r0 = route::<p::get_profile::v3::Request, _, _>(r0, profile::get);
    let r0 = route::<p::get_display_name::v3::Request, _, _>(r0, profile::get_displayname);
    let r0 = route::<p::set_display_name::v3::Request, _, _>(r0, profile::set_displayname);
    let r0 = route::<p::get_avatar_url::v3::Request, _, _>(r0, profile::get_avatar);
    let r0 = route::<p::set_avatar_url::v3::Request, _, _>(r0, profile::set_avatar);
    // rooms
    let r0 = route::<r::create_room::v3::Request, _, _>(r0, room::create);
    let r0 = route::<membership::join_room_by_id_or_alias::v3::Request, _, _>(
        r0,
        room::join_by_id_or_alias,
    );
    let r0 = route::<membership::join_room_by_id::v3::Request, _, _>(r0, room::join_by_id);
    let r0 = route::<membership::invite_user::v3::Request, _, _>(r0, room::invite);
    let r0 = route::<membership::leave_room::v3::Request, _, _>(r0, room::leave);
    let r0 = route::<membership::forget_room::v3::Request, _, _>(r0, room::forget);
    let r0 = route::<membership::kick_user::v3::Request, _, _>(r0, room::kick);
    let r0 = route::<membership::ban_user::v3::Request, _, _>(r0, room::ban);
    let r0 = route::<membership::unban_user::v3::Request, _, _>(r0, room::unban);
    let r0 = route::<membership::joined_rooms::v3::Request, _, _>(r0, room::joined);
    let r0 = route::<membership::get_member_events::v3::Request, _, _>(r0, room::members);
    let r0 = route::<membership::joined_members::v3::Request, _, _>(r0, room::joined_members);
    let r0 = route::<state::get_state_events::v3::Request, _, _>(r0, room::state);
    let r0 = route::<state::get_state_event_for_key::v3::Request, _, _>(r0, room::state_for_key);
    let r0 = route::<state::send_state_event::v3::Request, _, _>(r0, room::send_state);
    let r0 = route::<message::send_message_event::v3::Request, _, _>(r0, room::send);
    let r0 = route::<redact::redact_event::v3::Request, _, _>(r0, room::redact);
    let r0 = route::<r::get_room_event::v3::Request, _, _>(r0, room::event);
    let r0 = route::<message::get_message_events::v3::Request, _, _>(r0, room::messages);
    let r0 = route::<context::get_context::v3::Request, _, _>(r0, room::context);
    let r0 = route::<alias::get_alias::v3::Request, _, _>(r0, room::alias_get);
    let r0 = route::<alias::create_alias::v3::Request, _, _>(r0, room::alias_put);
    let r0 = route::<alias::delete_alias::v3::Request, _, _>(r0, room::alias_delete);
    let r0 = route::<directory::get_public_rooms::v3::Request, _, _>(r0, room::public_rooms);
    let r0 = route::<directory::get_public_rooms_filtered::v3::Request, _, _>(
        r0,
        room::public_rooms_filtered,
    );
    let r0 = route::<directory::get_room_visibility::v3::Request, _, _>(r0, room::visibility_get);
    let r0 = route::<directory::set_room_visibility::v3::Request, _, _>(r0, room::visibility_put);
    // sync
    let r0 = route::<sync_events::v3::Request, _, _>(r0, sync::sync);
    let r0 = route::<filter::create_filter::v3::Request, _, _>(r0, sync::filter_create);
    let r0 = route::<filter::get_filter::v3::Request, _, _>(r0, sync::filter_get);
    // ephemeral, account data, push
    let r0 = route::<typing::create_typing_event::v3::Request, _, _>(r0, misc::typing);
    let r0 = route::<receipt::create_receipt::v3::Request, _, _>(r0, misc::create_receipt);
    let r0 = route::<read_marker::set_read_marker::v3::Request, _, _>(r0, misc::read_markers);
    let r0 = route::<config::get_global_account_data::v3::Request, _, _>(r0, misc::global_data_get);
    let r0 = route::<config::set_global_account_data::v3::Request, _, _>(r0, misc::global_data_put);
    let r0 = route::<config::get_room_account_data::v3::Request, _, _>(r0, misc::room_data_get);
    let r0 = route::<config::set_room_account_data::v3::Request, _, _>(r0, misc::room_data_put);
    let r0 = route::<tag::get_tags::v3::Request, _, _>(r0, misc::tags);
    let r0 = route::<tag::create_tag::v3::Request, _, _>(r0, misc::tag_put);
    let r0 = route::<tag::delete_tag::v3::Request, _, _>(r0, misc::tag_delete);
    let r0 = route::<push::get_pushrules_all::v3::Request, _, _>(r0, misc::pushrules_all);
    let r0 =
        route::<push::get_pushrules_global_scope::v3::Request, _, _>(r0, misc::pushrules_global);
    let r0 = route::<push::get_pushrule::v3::Request, _, _>(r0, misc::pushrule_get);
    let r0 = route::<push::set_pushrule::v3::Request, _, _>(r0, misc::pushrule_put);
    let r0 = route::<push::delete_pushrule::v3::Request, _, _>(r0, misc::pushrule_delete);
    let r0 = route::<push::get_pushrule_enabled::v3::Request, _, _>(r0, misc::pushrule_enabled_get);
    let r0 = route::<push::set_pushrule_enabled::v3::Request, _, _>(r0, misc::pushrule_enabled_put);
    let r0 = route::<push::get_pushrule_actions::v3::Request, _, _>(r0, misc::pushrule_actions_get);
    let r0 = route::<push::set_pushrule_actions::v3::Request, _, _>(r0, misc::pushrule_actions_put);
    let r0 = route::<push::get_pushers::v3::Request, _, _>(r0, misc::pushers);
    // end-to-end encryption
    use ruma::api::client::{backup as bk, keys as k, to_device};
    let r0 = route::<k::upload_keys::v3::Request, _, _>(r0, keys::upload);
    let r0 = route::<k::get_keys::v3::Request, _, _>(r0, keys::query);
    let r0 = route::<k::claim_keys::v3::Request, _, _>(r0, keys::claim);
    let r0 = route::<k::get_key_changes::v3::Request, _, _>(r0, keys::changes);
    let r0 = route::<k::upload_signing_keys::v3::Request, _, _>(r0, keys::upload_signing);
    let r0 = route::<k::upload_signatures::v3::Request, _, _>(r0, keys::upload_signatures);
    let r0 = route::<to_device::send_event_to_device::v3::Request, _, _>(r0, keys::send_to_device);
    let r0 = route::<bk::create_backup_version::v3::Request, _, _>(r0, backup::create_version);
    let r0 = route::<bk::get_latest_backup_info::v3::Request, _, _>(r0, backup::latest_version);
    let r0 = route::<bk::get_backup_info::v3::Request, _, _>(r0, backup::get_version);
    let r0 = route::<bk::update_backup_version::v3::Request, _, _>(r0, backup::update_version);
    let r0 = route::<bk::delete_backup_version::v3::Request, _, _>(r0, backup::delete_version);
    let r0 = route::<bk::add_backup_keys::v3::Request, _, _>(r0, backup::put_keys);
    let r0 = route::<bk::add_backup_keys_for_room::v3::Request, _, _>(r0, backup::put_room_keys);
    let r0 =
        route::<bk::add_backup_keys_for_session::v3::Request, _, _>(r0, backup::put_session_key);
    let r0 = route::<bk::get_backup_keys::v3::Request, _, _>(r0, backup::get_keys);
    let r0 = route::<bk::get_backup_keys_for_room::v3::Request, _, _>(r0, backup::get_room_keys);
    let r0 =
        route::<bk::get_backup_keys_for_session::v3::Request, _, _>(r0, backup::get_session_key);
    let r0 = route::<bk::delete_backup_keys::v3::Request, _, _>(r0, backup::delete_keys);
    let r0 =
        route::<bk::delete_backup_keys_for_room::v3::Request, _, _>(r0, backup::delete_room_keys);
    let r0 = route::<ruma::api::client::appservice::request_ping::v1::Request, _, _>(
        r0,
        appservice::ping,
    );
    route::<bk::delete_backup_keys_for_session::v3::Request, _, _>(r0, backup::delete_session_key)
}

//! Dehydrated devices (MSC3814): a device kept on the server for a user with no device
//! online, so that others still encrypt room keys for it; the user's next client
//! rehydrates it (downloads its pickle and its to-device messages) and reads the history it
//! would otherwise have missed. The server holds the pickle encrypted by the client and the
//! to-device messages as sent, never a key.
//!
//! Creating and deleting one spans devices, keys and the store, so these are methods of
//! [`Services`].

use ruma::{DeviceId, OwnedDeviceId, UserId};
use serde_json::Value as JsonValue;

use super::Services;
use crate::{
    error::{Error, Result},
    store::{Batch, DEHYDRATED_DEVICES, DehydratedDevice},
};

/// A new dehydrated device, as the client sends it.
pub struct NewDehydratedDevice {
    pub device_id: OwnedDeviceId,
    pub display_name: Option<String>,
    pub device_data: JsonValue,
    pub device_keys: JsonValue,
    pub one_time_keys: Vec<(String, JsonValue)>,
    pub fallback_keys: Vec<(String, JsonValue)>,
}

impl Services {
    /// The user's dehydrated device, or M_NOT_FOUND.
    pub fn dehydrated_device(&self, user: &UserId) -> Result<DehydratedDevice> {
        self.core
            .store
            .get(&DEHYDRATED_DEVICES, user)?
            .ok_or_else(|| Error::not_found("No dehydrated device"))
    }

    /// Stores a dehydrated device with its keys, replacing the user's previous one.
    pub async fn put_dehydrated_device(
        &self,
        user: &UserId,
        caller: &DeviceId,
        new: NewDehydratedDevice,
    ) -> Result<OwnedDeviceId> {
        let previous = self.core.store.get(&DEHYDRATED_DEVICES, user)?;
        let is_previous = previous
            .as_ref()
            .is_some_and(|p| p.device_id == new.device_id);
        if new.device_id == caller
            || (!is_previous && self.users.device(user, &new.device_id)?.is_some())
        {
            return Err(Error::invalid_param(
                "device_id names a device of the user that is not their dehydrated device",
            ));
        }
        if let Some(previous) = previous {
            self.delete_devices(user, &[previous.device_id]).await?;
        }
        self.users
            .create_device(user, Some(new.device_id.clone()), new.display_name, None)
            .await?;
        self.keys
            .upload_keys(
                user,
                &new.device_id,
                Some(new.device_keys),
                new.one_time_keys,
                new.fallback_keys,
            )
            .await?;
        let mut b = Batch::default();
        b.put(
            &DEHYDRATED_DEVICES,
            user,
            &DehydratedDevice {
                device_id: new.device_id.clone(),
                device_data: new.device_data,
            },
        );
        self.core.write(b).await?;
        Ok(new.device_id)
    }

    /// Deletes the user's dehydrated device (and its keys and messages).
    pub async fn delete_dehydrated_device(&self, user: &UserId) -> Result<OwnedDeviceId> {
        let device = self.dehydrated_device(user)?;
        let mut b = Batch::default();
        b.delete(&DEHYDRATED_DEVICES, user);
        self.core.write(b).await?;
        self.delete_devices(user, std::slice::from_ref(&device.device_id))
            .await?;
        Ok(device.device_id)
    }

    /// The to-device messages of the dehydrated device after `next_batch` (those up to it
    /// are acknowledged and deleted), and the token of the next call.
    pub async fn dehydrated_device_events(
        &self,
        user: &UserId,
        device_id: &DeviceId,
        next_batch: Option<&str>,
    ) -> Result<(Vec<JsonValue>, String)> {
        let device = self.dehydrated_device(user)?;
        if device.device_id != device_id {
            return Err(Error::forbidden("Not your dehydrated device"));
        }
        let acked = match next_batch {
            Some(t) => Some(
                t.parse::<u64>()
                    .map_err(|_| Error::invalid_param("Invalid next_batch"))?,
            ),
            None => None,
        };
        let upto = self.core.current_pos();
        let (events, reached) = self
            .keys
            .take_to_device(user, device_id, acked, upto)
            .await?;
        Ok((events, reached.to_string()))
    }
}

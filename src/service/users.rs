//! Accounts, devices, access tokens and registration tokens.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use ruma::{DeviceId, OwnedDeviceId, OwnedMxcUri, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::{Services, now_ms, random_token};
use crate::{
    error::{Error, Result},
    store::{Batch, Table, key, prefix},
};

/// A stored account.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Account {
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub avatar_url: Option<OwnedMxcUri>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub deactivated: bool,
    #[serde(default)]
    pub appservice_id: Option<String>,
}

/// A stored device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Device {
    pub display_name: Option<String>,
    pub access_token: String,
    pub last_seen_ts: Option<u64>,
    pub last_seen_ip: Option<String>,
}

/// Who an access token belongs to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenOwner {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

/// A registration token and how often it was used.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegistrationToken {
    pub uses_allowed: Option<u32>,
    pub completed: u32,
}

impl RegistrationToken {
    pub fn is_valid(&self) -> bool {
        self.uses_allowed.is_none_or(|n| self.completed < n)
    }
}

fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Error::internal)
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

impl Services {
    pub fn account(&self, user_id: &UserId) -> Result<Option<Account>> {
        Ok(self.store.get_json(Table::Users, user_id.as_bytes())?)
    }

    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name()
    }

    /// Checks a localpart a client wants to register and returns the full user ID.
    pub fn user_id_for_localpart(&self, localpart: &str) -> Result<OwnedUserId> {
        let valid = !localpart.is_empty()
            && localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
        let user_id = UserId::parse_with_server_name(localpart, self.server_name())
            .ok()
            .filter(|u| valid && u.as_str().len() <= 255)
            .ok_or_else(|| {
                Error::new(
                    http::StatusCode::BAD_REQUEST,
                    ruma::api::error::ErrorKind::InvalidUsername,
                    "User names may contain only a-z, 0-9, '.', '_', '=', '-', '/' and '+'",
                )
            })?;
        Ok(user_id)
    }

    /// Creates an account. Fails with M_USER_IN_USE if the name is taken.
    pub async fn create_account(
        &self,
        user_id: &UserId,
        password: Option<&str>,
        admin: bool,
    ) -> Result<()> {
        let _guard = self
            .room_lock(ruma::room_id!("!accounts:tsunagu"))
            .lock_owned()
            .await;
        if self.account(user_id)?.is_some() {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UserInUse,
                "That user name is taken",
            ));
        }
        let account = Account {
            password_hash: match password {
                Some(p) => Some(self.hash_password(p).await?),
                None => None,
            },
            displayname: Some(user_id.localpart().to_owned()),
            admin,
            ..Default::default()
        };
        let mut b = Batch::default();
        b.put_json(Table::Users, user_id.as_bytes(), &account);
        self.write(b).await?;
        self.init_push_rules(user_id).await?;
        Ok(())
    }

    pub async fn set_account(&self, user_id: &UserId, account: &Account) -> Result<()> {
        let mut b = Batch::default();
        b.put_json(Table::Users, user_id.as_bytes(), account);
        self.write(b).await
    }

    /// Hashes a password off the async workers, one at a time: argon2 takes ~19 MiB and
    /// tens of milliseconds per hash, which must neither stall other requests nor multiply
    /// memory on a small board.
    pub async fn hash_password(&self, password: &str) -> Result<String> {
        let _permit = self
            .password_work
            .acquire()
            .await
            .map_err(Error::internal)?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(Error::internal)?
    }

    /// Checks a password; the same error for unknown users and wrong passwords.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let hash = self
            .account(user_id)?
            .filter(|a| !a.deactivated)
            .and_then(|a| a.password_hash);
        let ok = match hash {
            Some(hash) => {
                let _permit = self
                    .password_work
                    .acquire()
                    .await
                    .map_err(Error::internal)?;
                let password = password.to_owned();
                tokio::task::spawn_blocking(move || verify_password(&hash, &password))
                    .await
                    .map_err(Error::internal)?
            }
            None => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::forbidden("Invalid username or password"))
        }
    }

    /// Creates (or replaces) a device with a fresh access token, returning the token.
    pub async fn create_device(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        ip: Option<String>,
    ) -> Result<(OwnedDeviceId, String)> {
        let device_id = device_id.unwrap_or_else(DeviceId::new);
        let token = random_token(32);
        let mut b = Batch::default();
        let dkey = key(&[user_id.as_bytes(), device_id.as_bytes()]);
        let old: Option<Device> = self.store.get_json(Table::Devices, &dkey)?;
        if let Some(old) = &old {
            b.delete(Table::AccessTokens, old.access_token.as_bytes());
        }
        let device = Device {
            display_name: display_name.or(old.and_then(|d| d.display_name)),
            access_token: token.clone(),
            last_seen_ts: Some(now_ms()),
            last_seen_ip: ip,
        };
        b.put_json(Table::Devices, &dkey, &device);
        b.put_json(
            Table::AccessTokens,
            token.as_bytes(),
            &TokenOwner {
                user_id: user_id.to_owned(),
                device_id: device_id.clone(),
            },
        );
        self.write(b).await?;
        Ok((device_id, token))
    }

    pub fn token_owner(&self, token: &str) -> Result<Option<TokenOwner>> {
        Ok(self.store.get_json(Table::AccessTokens, token.as_bytes())?)
    }

    pub fn device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<Device>> {
        Ok(self.store.get_json(
            Table::Devices,
            &key(&[user_id.as_bytes(), device_id.as_bytes()]),
        )?)
    }

    pub fn devices(&self, user_id: &UserId) -> Result<Vec<(OwnedDeviceId, Device)>> {
        let mut out = Vec::new();
        for item in self
            .store
            .scan_prefix(Table::Devices, &prefix(&[user_id.as_bytes()]))
        {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(&k).into_owned();
            out.push((id.into(), crate::store::decode(Table::Devices, &v)?));
        }
        Ok(out)
    }

    pub async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        name: Option<String>,
    ) -> Result<()> {
        let dkey = key(&[user_id.as_bytes(), device_id.as_bytes()]);
        let mut device: Device = self
            .store
            .get_json(Table::Devices, &dkey)?
            .ok_or_else(|| Error::not_found("No such device"))?;
        device.display_name = name;
        let mut b = Batch::default();
        b.put_json(Table::Devices, &dkey, &device);
        self.write(b).await
    }

    /// Deletes devices, their access tokens and their keys (log out).
    pub async fn delete_devices(
        &self,
        user_id: &UserId,
        device_ids: &[OwnedDeviceId],
    ) -> Result<()> {
        self.logout_devices(user_id, device_ids).await?;
        self.forget_device_keys(user_id, device_ids).await
    }

    async fn logout_devices(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> Result<()> {
        let mut b = Batch::default();
        for device_id in device_ids {
            let dkey = key(&[user_id.as_bytes(), device_id.as_bytes()]);
            if let Some(device) = self.store.get_json::<Device>(Table::Devices, &dkey)? {
                b.delete(Table::AccessTokens, device.access_token.as_bytes());
                b.delete(Table::Devices, &dkey);
            }
        }
        self.write(b).await
    }

    pub async fn delete_all_devices(&self, user_id: &UserId) -> Result<()> {
        let ids: Vec<_> = self
            .devices(user_id)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.delete_devices(user_id, &ids).await
    }

    pub async fn change_password(&self, user_id: &UserId, new_password: &str) -> Result<()> {
        let mut account = self
            .account(user_id)?
            .ok_or_else(|| Error::not_found("No such user"))?;
        account.password_hash = Some(self.hash_password(new_password).await?);
        self.set_account(user_id, &account).await
    }

    /// Deactivates an account: no login, no devices, leaves every room.
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        let mut account = self
            .account(user_id)?
            .ok_or_else(|| Error::not_found("No such user"))?;
        account.deactivated = true;
        account.password_hash = None;
        self.set_account(user_id, &account).await?;
        self.delete_all_devices(user_id).await?;
        for room_id in self.rooms_with_membership(user_id, &["join", "invite"])? {
            if let Err(e) = self.leave_room(user_id, &room_id, None).await {
                tracing::warn!(%room_id, "leaving on deactivation failed: {e}");
            }
        }
        Ok(())
    }

    // Registration tokens.

    pub async fn new_registration_token(&self, uses_allowed: Option<u32>) -> Result<String> {
        let token = random_token(12);
        let mut b = Batch::default();
        b.put_json(
            Table::RegistrationTokens,
            token.as_bytes(),
            &RegistrationToken {
                uses_allowed,
                completed: 0,
            },
        );
        self.write(b).await?;
        Ok(token)
    }

    pub fn registration_token(&self, token: &str) -> Result<Option<RegistrationToken>> {
        Ok(self
            .store
            .get_json(Table::RegistrationTokens, token.as_bytes())?)
    }

    /// Counts one completed registration with the token.
    pub async fn use_registration_token(&self, token: &str) -> Result<()> {
        let mut t = self
            .registration_token(token)?
            .filter(RegistrationToken::is_valid)
            .ok_or_else(|| Error::forbidden("Invalid registration token"))?;
        t.completed += 1;
        let mut b = Batch::default();
        b.put_json(Table::RegistrationTokens, token.as_bytes(), &t);
        self.write(b).await
    }

    /// True when no account exists yet (first start).
    pub fn has_no_accounts(&self) -> Result<bool> {
        Ok(self.store.scan_prefix(Table::Users, b"").next().is_none())
    }

    pub fn has_no_registration_tokens(&self) -> Result<bool> {
        Ok(self
            .store
            .scan_prefix(Table::RegistrationTokens, b"")
            .next()
            .is_none())
    }
}

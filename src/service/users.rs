//! Accounts, devices, access tokens and registration tokens.

use std::sync::Arc;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use super::core::{Core, now_ms, random_token};
use crate::{
    error::{Error, Result},
    store::{
        ACCESS_TOKENS, Account, Batch, DEVICES, Device, REGISTRATION_TOKENS, RegistrationToken,
        StreamEntry, TokenOwner, USERS,
    },
};

/// Accounts and their devices. Depends on [`Core`].
pub struct Users {
    core: Arc<Core>,
    /// Password hashing runs one at a time (see [`Users::hash_password`]).
    password_work: tokio::sync::Semaphore,
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

impl Users {
    pub fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            password_work: tokio::sync::Semaphore::new(1),
        }
    }

    pub fn account(&self, user_id: &UserId) -> Result<Option<Account>> {
        Ok(self.core.store.get(&USERS, user_id)?)
    }

    /// Every account (offline maintenance: `admin media purge`).
    pub fn all_accounts(&self) -> impl Iterator<Item = Result<(OwnedUserId, Account)>> + '_ {
        self.core
            .store
            .scan(USERS.all())
            .map(|item| Ok(item.map(|((user,), account)| (user, account))?))
    }

    /// An account that exists and is not deactivated.
    pub fn active_account(&self, user_id: &UserId) -> Result<Option<Account>> {
        Ok(self.account(user_id)?.filter(|a| !a.deactivated))
    }

    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.core.server_name()
    }

    /// Checks a localpart a client wants to register and returns the full user ID.
    pub fn user_id_for_localpart(&self, localpart: &str) -> Result<OwnedUserId> {
        let valid = !localpart.is_empty()
            && localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
        let user_id = UserId::parse_with_server_name(localpart, self.core.server_name())
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
    /// Creates an account. Fails with M_USER_IN_USE if the name is taken. A registration
    /// token, when given, is counted in the same atomic write, so a single-use token makes
    /// exactly one account however many registrations race for it.
    pub async fn create_account(
        &self,
        user_id: &UserId,
        password: Option<&str>,
        admin: bool,
        registration_token: Option<&str>,
    ) -> Result<()> {
        let password_hash = match password {
            Some(p) => {
                self.check_password_strength(p)?;
                Some(self.hash_password(p).await?)
            }
            None => None,
        };
        let lock = self.core.lock("accounts");
        let _guard = lock.lock().await;
        self.require_free(user_id)?;
        let mut b = Batch::default();
        if let Some(token) = registration_token {
            let mut t = self
                .registration_token(token)?
                .filter(RegistrationToken::is_valid)
                .ok_or_else(|| Error::forbidden("Invalid registration token"))?;
            t.completed += 1;
            b.put(&REGISTRATION_TOKENS, token, &t);
        }
        let account = Account {
            password_hash,
            displayname: Some(user_id.localpart().to_owned()),
            admin,
            ..Default::default()
        };
        b.put(&USERS, user_id, &account);
        self.core.write(b).await
    }

    /// Fails with M_USER_IN_USE when the user ID has an account.
    pub fn require_free(&self, user_id: &UserId) -> Result<()> {
        if self.account(user_id)?.is_some() {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UserInUse,
                "That user name is taken",
            ));
        }
        Ok(())
    }

    pub async fn set_account(&self, user_id: &UserId, account: &Account) -> Result<()> {
        let mut b = Batch::default();
        b.put(&USERS, user_id, account);
        self.core.write(b).await
    }

    /// Hashes a password off the async workers, one at a time: argon2 takes ~19 MiB and
    /// tens of milliseconds per hash, which must neither stall other requests nor multiply
    /// memory on a small board.
    pub async fn hash_password(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        self.password_work(move || hash_password(&password)).await?
    }

    /// Runs argon2 work on the blocking pool, one job at a time.
    async fn password_work<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .password_work
            .acquire()
            .await
            .map_err(Error::internal)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(Error::internal)
    }

    /// Checks a password; the same error for unknown users and wrong passwords.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let hash = self
            .account(user_id)?
            .filter(|a| !a.deactivated)
            .and_then(|a| a.password_hash);
        let ok = match hash {
            Some(hash) => {
                let password = password.to_owned();
                self.password_work(move || verify_password(&hash, &password))
                    .await?
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
        let old = self.device(user_id, &device_id)?;
        if let Some(old) = &old {
            b.delete(&ACCESS_TOKENS, &old.access_token);
        }
        let device = Device {
            display_name: display_name.or(old.as_ref().and_then(|d| d.display_name.clone())),
            access_token: token.clone(),
            last_seen_ts: Some(now_ms()),
            last_seen_ip: ip,
        };
        b.put(&DEVICES, (user_id, &device_id), &device);
        b.put(
            &ACCESS_TOKENS,
            &token,
            &TokenOwner {
                user_id: user_id.to_owned(),
                device_id: device_id.clone(),
            },
        );
        if old.is_none() {
            // A new device: people who share a room with its owner see the owner's device list
            // change (`device_lists.changed`) and fetch its keys.
            let entry = StreamEntry {
                keys: Some(user_id.to_owned()),
                ..Default::default()
            };
            self.core
                .commit(entry, |_, batch| {
                    batch.append(b);
                    Ok(())
                })
                .await?;
        } else {
            self.core.write(b).await?;
        }
        Ok((device_id, token))
    }

    pub fn token_owner(&self, token: &str) -> Result<Option<TokenOwner>> {
        Ok(self.core.store.get(&ACCESS_TOKENS, token)?)
    }

    pub fn device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<Device>> {
        Ok(self.core.store.get(&DEVICES, (user_id, device_id))?)
    }

    pub fn devices(&self, user_id: &UserId) -> Result<Vec<(OwnedDeviceId, Device)>> {
        self.core
            .store
            .scan(DEVICES.prefix(user_id))
            .map(|item| Ok(item.map(|((_, id), d)| (id, d))?))
            .collect()
    }

    pub async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        name: Option<String>,
    ) -> Result<()> {
        let mut device = self
            .device(user_id, device_id)?
            .ok_or_else(|| Error::not_found("No such device"))?;
        device.display_name = name;
        let mut b = Batch::default();
        b.put(&DEVICES, (user_id, device_id), &device);
        self.core.write(b).await
    }

    /// Deletes devices and their access tokens (their keys: `Keys::forget_devices`).
    pub async fn remove_devices(
        &self,
        user_id: &UserId,
        device_ids: &[OwnedDeviceId],
    ) -> Result<()> {
        let mut b = Batch::default();
        for device_id in device_ids {
            if let Some(device) = self.device(user_id, device_id)? {
                b.delete(&ACCESS_TOKENS, &device.access_token);
                b.delete(&DEVICES, (user_id, device_id));
            }
        }
        self.core.write(b).await
    }

    /// Fails with M_WEAK_PASSWORD when a password is shorter than `min_password_length`.
    pub fn check_password_strength(&self, password: &str) -> Result<()> {
        let min = self.core.config.min_password_length;
        if password.chars().count() < min {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::WeakPassword,
                format!("Passwords have at least {min} characters"),
            ));
        }
        Ok(())
    }

    pub async fn change_password(&self, user_id: &UserId, new_password: &str) -> Result<()> {
        self.check_password_strength(new_password)?;
        let mut account = self
            .account(user_id)?
            .ok_or_else(|| Error::not_found("No such user"))?;
        account.password_hash = Some(self.hash_password(new_password).await?);
        self.set_account(user_id, &account).await
    }

    /// Marks an account deactivated: no password, no login (the rest is
    /// `Services::deactivate`).
    pub async fn mark_deactivated(&self, user_id: &UserId) -> Result<()> {
        let mut account = self
            .account(user_id)?
            .ok_or_else(|| Error::not_found("No such user"))?;
        account.deactivated = true;
        account.password_hash = None;
        self.set_account(user_id, &account).await
    }

    // Registration tokens.

    pub async fn new_registration_token(&self, uses_allowed: Option<u32>) -> Result<String> {
        let token = random_token(12);
        let mut b = Batch::default();
        b.put(
            &REGISTRATION_TOKENS,
            &token,
            &RegistrationToken {
                uses_allowed,
                completed: 0,
            },
        );
        self.core.write(b).await?;
        Ok(token)
    }

    pub fn registration_token(&self, token: &str) -> Result<Option<RegistrationToken>> {
        Ok(self.core.store.get(&REGISTRATION_TOKENS, token)?)
    }

    /// True when no account exists yet (first start).
    pub fn has_no_accounts(&self) -> Result<bool> {
        Ok(self.core.store.scan(USERS.all()).next().is_none())
    }

    pub fn has_no_registration_tokens(&self) -> Result<bool> {
        Ok(self
            .core
            .store
            .scan(REGISTRATION_TOKENS.all())
            .next()
            .is_none())
    }
}

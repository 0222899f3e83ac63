//! End-to-end encryption support: device keys, one-time and fallback keys, cross-signing keys
//! and signatures, device-list changes, and to-device messages. The server only relays and
//! stores public keys and ciphertext; it never holds room keys.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
};

use ruma::{
    CanonicalJsonObject, DeviceId, OwnedDeviceId, OwnedUserId, UserId,
    events::room::member::MembershipState,
};
use serde_json::{Value as JsonValue, json};

use super::{core::Core, ratelimit::RateLimiter, timeline::Timeline, users::Users};
use crate::{
    error::{Error, Result},
    store::{
        Batch, CROSS_SIGNING_KEYS, DEVICE_KEYS, FALLBACK_KEYS, FallbackKey, Layout, ONE_TIME_KEYS,
        StreamEntry, TO_DEVICE, TO_DEVICE_TRANSACTIONS, ToDeviceRecord, TxnScope, scoped_txn,
    },
};

/// One user's public keys, as `/keys/query` shows them to a requester.
#[derive(Default)]
pub struct UserKeys {
    pub devices: BTreeMap<OwnedDeviceId, JsonValue>,
    pub master: Option<JsonValue>,
    pub self_signing: Option<JsonValue>,
    /// Only for the requester's own keys.
    pub user_signing: Option<JsonValue>,
}

/// The answer to `/keys/query`.
pub struct KeyQuery {
    pub users: BTreeMap<OwnedUserId, UserKeys>,
    /// Servers that could not be asked, with why.
    pub failures: BTreeMap<String, JsonValue>,
}

/// A claimed key: user, device, key ID, key.
pub type ClaimedKey = (OwnedUserId, OwnedDeviceId, String, JsonValue);

fn federation_failure() -> JsonValue {
    json!({ "error": "federation is not enabled on this server" })
}

/// End-to-end encryption keys and to-device messages. Depends on [`Core`], [`Users`] and
/// [`Timeline`].
pub struct Keys {
    core: Arc<Core>,
    users: Arc<Users>,
    timeline: Arc<Timeline>,
    /// One-time keys claimed per requester (`rate_limit.key_claims_*`).
    claims: RateLimiter,
}

/// Where a cross-signing key sits in the user's identity.
pub const CROSS_SIGNING_KINDS: [&str; 3] = ["master", "self_signing", "user_signing"];

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid_param(msg)
}

fn as_object(v: &JsonValue, what: &str) -> Result<CanonicalJsonObject> {
    match ruma::CanonicalJsonValue::try_from(v.clone()) {
        Ok(ruma::CanonicalJsonValue::Object(o)) => Ok(o),
        _ => Err(Error::bad_json(format!("{what} must be a JSON object"))),
    }
}

/// Checks the signature `signer`/`key_id` on `obj` with an unpadded-base64 ed25519 public key.
pub fn signature_valid(obj: &JsonValue, signer: &str, key_id: &str, public_key: &str) -> bool {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let Ok(canonical) = as_object(obj, "key") else {
        return false;
    };
    let Some(sig) = obj
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id))
        .and_then(|s| s.as_str())
    else {
        return false;
    };
    let (Ok(sig), Ok(pk)) = (
        b64.decode(sig.trim_end_matches('=')),
        b64.decode(public_key.trim_end_matches('=')),
    ) else {
        return false;
    };
    let Ok(message) = ruma::signatures::to_canonical_json_string_for_signing(&canonical) else {
        return false;
    };
    ruma::signatures::verify_canonical_json_bytes(
        &ruma::SigningKeyAlgorithm::Ed25519,
        &pk,
        &sig,
        message.as_bytes(),
    )
    .is_ok()
}

/// The single ed25519 public key of a cross-signing key object: (key id, key).
fn cross_signing_public_key(obj: &JsonValue) -> Option<(String, String)> {
    let keys = obj.get("keys")?.as_object()?;
    let (id, k) = keys.iter().next()?;
    Some((id.clone(), k.as_str()?.to_owned()))
}

fn merge_signatures(target: &mut JsonValue, from: &JsonValue) {
    let Some(sigs) = from.get("signatures").and_then(|s| s.as_object()) else {
        return;
    };
    if !target.get("signatures").is_some_and(|s| s.is_object()) {
        target["signatures"] = json!({});
    }
    for (signer, keys) in sigs {
        let Some(keys) = keys.as_object() else {
            continue;
        };
        if !target["signatures"]
            .get(signer)
            .is_some_and(|s| s.is_object())
        {
            target["signatures"][signer] = json!({});
        }
        for (key_id, sig) in keys {
            target["signatures"][signer][key_id] = sig.clone();
        }
    }
}

impl Keys {
    pub fn new(core: Arc<Core>, users: Arc<Users>, timeline: Arc<Timeline>) -> Self {
        let limits = &core.config.rate_limit;
        let claims = RateLimiter::new(limits.key_claims_burst, limits.key_claims_per_minute);
        Self {
            core,
            users,
            timeline,
            claims,
        }
    }

    /// Writes `batch` at a new stream position that tells sync that `user`'s keys changed.
    async fn commit_key_change(&self, user: &UserId, batch: Batch) -> Result<()> {
        let entry = StreamEntry {
            keys: Some(user.to_owned()),
            ..Default::default()
        };
        self.core
            .commit(entry, |_, b| {
                b.append(batch);
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Another server's user's devices or cross-signing keys changed (as their server
    /// announced): local users who share a room with them see it in `device_lists.changed`
    /// and ask for their keys again.
    pub async fn remote_keys_changed(&self, user: &UserId) -> Result<()> {
        self.commit_key_change(user, Batch::default()).await
    }

    // ---- device keys -------------------------------------------------------------------

    pub fn device_keys(&self, user: &UserId, device: &DeviceId) -> Result<Option<JsonValue>> {
        Ok(self.core.store.get(&DEVICE_KEYS, (user, device))?)
    }

    /// Device keys of a user's devices (all when `devices` is empty).
    pub fn all_device_keys(
        &self,
        user: &UserId,
        devices: &[OwnedDeviceId],
    ) -> Result<BTreeMap<OwnedDeviceId, JsonValue>> {
        let mut out = BTreeMap::new();
        for item in self.core.store.scan(DEVICE_KEYS.prefix(user)) {
            let ((_, device), mut keys) = item?;
            if !devices.is_empty() && !devices.contains(&device) {
                continue;
            }
            if let Some(d) = self.users.device(user, &device)? {
                keys["unsigned"] = json!({ "device_display_name": d.display_name });
            }
            out.insert(device, keys);
        }
        Ok(out)
    }

    /// `/keys/query`: the keys of the local users (and devices; all when empty) asked for;
    /// other servers' users are failures here (the caller asks their servers). `requester` is
    /// None when another server asks: it never sees a user-signing key.
    pub fn query(
        &self,
        requester: Option<&UserId>,
        wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<KeyQuery> {
        let mut out = KeyQuery {
            users: BTreeMap::new(),
            failures: BTreeMap::new(),
        };
        for (user, devices) in wanted {
            if !self.users.is_local(user) {
                out.failures
                    .insert(user.server_name().to_string(), federation_failure());
                continue;
            }
            let keys = UserKeys {
                devices: self.all_device_keys(user, devices)?,
                master: self.cross_signing_key(user, "master")?,
                self_signing: self.cross_signing_key(user, "self_signing")?,
                user_signing: if Some(user.as_ref()) == requester {
                    self.cross_signing_key(user, "user_signing")?
                } else {
                    None
                },
            };
            out.users.insert(user.clone(), keys);
        }
        Ok(out)
    }

    /// `/keys/claim`: one key per device asked for, within the requester's claim rate
    /// (M_LIMIT_EXCEEDED beyond it). Returns the keys and the servers that could not be asked.
    /// `requester` names who is rate limited: a user, or another server.
    pub async fn claim(
        &self,
        requester: &str,
        wanted: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, ruma::OneTimeKeyAlgorithm>>,
    ) -> Result<(Vec<ClaimedKey>, BTreeMap<String, JsonValue>)> {
        let asked: usize = wanted.values().map(BTreeMap::len).sum();
        self.claims
            .take(requester, u32::try_from(asked).unwrap_or(u32::MAX))?;
        let mut claimed = Vec::new();
        let mut failures = BTreeMap::new();
        for (user, devices) in wanted {
            if !self.users.is_local(user) {
                failures.insert(user.server_name().to_string(), federation_failure());
                continue;
            }
            for (device, algorithm) in devices {
                if let Some((id, k)) = self.claim_key(user, device, algorithm.as_str()).await? {
                    claimed.push((user.clone(), device.clone(), id, k));
                }
            }
        }
        Ok((claimed, failures))
    }

    /// `/keys/changes`: device-list changes between two tokens.
    pub fn key_changes(
        &self,
        user: &UserId,
        from: u64,
        to: u64,
    ) -> Result<(BTreeSet<OwnedUserId>, BTreeSet<OwnedUserId>)> {
        self.device_list_changes(user, from, to.min(self.core.current_pos()))
    }

    /// `/keys/upload`: device keys, one-time keys and fallback keys of the caller's device.
    /// Returns the unclaimed one-time key counts.
    pub async fn upload_keys(
        &self,
        user: &UserId,
        device: &DeviceId,
        device_keys: Option<JsonValue>,
        one_time_keys: Vec<(String, JsonValue)>,
        fallback_keys: Vec<(String, JsonValue)>,
    ) -> Result<BTreeMap<String, u64>> {
        let mut batch = Batch::default();
        let mut keys_changed = false;
        if let Some(dk) = device_keys {
            if !dk.is_object() {
                return Err(Error::bad_json("device_keys must be an object"));
            }
            let uid = dk
                .get("user_id")
                .and_then(|v| v.as_str())
                .ok_or_else(|| Error::bad_json("device_keys.user_id must be a string"))?;
            let did = dk
                .get("device_id")
                .and_then(|v| v.as_str())
                .ok_or_else(|| Error::bad_json("device_keys.device_id must be a string"))?;
            if uid != user.as_str() || did != device.as_str() {
                return Err(invalid(
                    "device_keys must be for your own user and this device",
                ));
            }
            let ed_id = format!("ed25519:{device}");
            let ed = dk
                .get("keys")
                .and_then(|k| k.get(&ed_id))
                .and_then(|k| k.as_str())
                .ok_or_else(|| Error::bad_json(format!("device_keys.keys needs {ed_id}")))?;
            if !dk.get("algorithms").is_some_and(|a| a.is_array()) {
                return Err(Error::bad_json("device_keys.algorithms must be an array"));
            }
            if !signature_valid(&dk, user.as_str(), &ed_id, ed) {
                return Err(invalid(
                    "device_keys are not signed by the device's own key",
                ));
            }
            let old = self.device_keys(user, device)?;
            let mut stored = dk.clone();
            if let Some(sigs) = stored.as_object_mut() {
                sigs.remove("unsigned");
            }
            if let Some(old) = &old {
                if old.get("keys") != stored.get("keys") {
                    // New identity keys for the same device: start over (old signatures are void).
                } else {
                    merge_signatures(&mut stored, old);
                }
            }
            if old.as_ref() != Some(&stored) {
                batch.put(&DEVICE_KEYS, (user, device), &stored);
                keys_changed = true;
            }
        }
        for (id, k) in one_time_keys {
            if !k.is_object() && !k.is_string() {
                return Err(Error::bad_json(format!(
                    "one-time key {id} must be an object or string"
                )));
            }
            if !self
                .core
                .store
                .contains(&ONE_TIME_KEYS, (user, device, &id))?
            {
                batch.put(&ONE_TIME_KEYS, (user, device, &id), &k);
            }
        }
        for (id, k) in fallback_keys {
            let algorithm = id.split(':').next().unwrap_or_default().to_owned();
            let record = FallbackKey {
                key_id: id,
                key: k,
                used: false,
            };
            batch.put(&FALLBACK_KEYS, (user, device, &algorithm), &record);
        }
        if keys_changed {
            self.commit_key_change(user, batch).await?;
        } else if !batch.is_empty() {
            self.core.write(batch).await?;
        }
        self.one_time_key_counts(user, device)
    }

    pub fn one_time_key_counts(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<BTreeMap<String, u64>> {
        // Clients (matrix-sdk, like Synapse's behaviour) expect an explicit 0 when none are left.
        let mut counts = BTreeMap::from([("signed_curve25519".to_owned(), 0)]);
        for item in self.core.store.scan(ONE_TIME_KEYS.prefix2(user, device)) {
            let ((_, _, id), _) = item?;
            *counts
                .entry(id.split(':').next().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
        Ok(counts)
    }

    pub fn unused_fallback_key_types(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in self.core.store.scan(FALLBACK_KEYS.prefix2(user, device)) {
            let ((_, _, algorithm), fb) = item?;
            if !fb.used {
                out.push(algorithm);
            }
        }
        Ok(out)
    }

    /// `/keys/claim`: one one-time key per requested device, else its fallback key.
    async fn claim_key(
        &self,
        user: &UserId,
        device: &DeviceId,
        algorithm: &str,
    ) -> Result<Option<(String, JsonValue)>> {
        let lock = self.core.lock("keys-claim");
        let _guard = lock.lock().await;
        let wanted = format!("{algorithm}:");
        let mut found = None;
        for item in self.core.store.scan(ONE_TIME_KEYS.prefix2(user, device)) {
            let ((_, _, id), k) = item?;
            if id.starts_with(&wanted) {
                found = Some((id, k));
                break;
            }
        }
        if let Some((id, k)) = found {
            let mut b = Batch::default();
            b.delete(&ONE_TIME_KEYS, (user, device, &id));
            self.core.write(b).await?;
            return Ok(Some((id, k)));
        }
        if let Some(mut fb) = self
            .core
            .store
            .get(&FALLBACK_KEYS, (user, device, algorithm))?
        {
            if !fb.used {
                fb.used = true;
                let mut b = Batch::default();
                b.put(&FALLBACK_KEYS, (user, device, algorithm), &fb);
                self.core.write(b).await?;
            }
            return Ok(Some((fb.key_id, fb.key)));
        }
        Ok(None)
    }

    /// Removes deleted devices' keys and queued messages, and tells the people who share
    /// rooms with their owner.
    pub async fn forget_devices(&self, user: &UserId, devices: &[OwnedDeviceId]) -> Result<()> {
        let store = &self.core.store;
        let mut batch = Batch::default();
        for device in devices {
            batch.delete(&DEVICE_KEYS, (user, device));
            for item in store.scan(ONE_TIME_KEYS.prefix2(user, device)) {
                batch.delete(&ONE_TIME_KEYS, item?.0.as_key_ref());
            }
            for item in store.scan(FALLBACK_KEYS.prefix2(user, device)) {
                batch.delete(&FALLBACK_KEYS, item?.0.as_key_ref());
            }
            for item in store.scan(TO_DEVICE.prefix2(user, device)) {
                batch.delete(&TO_DEVICE, item?.0.as_key_ref());
            }
        }
        self.commit_key_change(user, batch).await
    }

    // ---- cross-signing ------------------------------------------------------------------

    pub fn cross_signing_key(&self, user: &UserId, kind: &str) -> Result<Option<JsonValue>> {
        Ok(self.core.store.get(&CROSS_SIGNING_KEYS, (user, kind))?)
    }

    /// `/keys/device_signing/upload`: validated cross-signing keys (the self-signing and
    /// user-signing keys must be signed by the master key).
    pub async fn upload_cross_signing_keys(
        &self,
        user: &UserId,
        keys: Vec<(&'static str, JsonValue)>,
    ) -> Result<()> {
        let mut master = self.cross_signing_key(user, "master")?;
        let mut batch = Batch::default();
        for (kind, k) in &keys {
            if !k.is_object() {
                return Err(Error::bad_json(format!("{kind} key must be an object")));
            }
            if k.get("user_id").and_then(|v| v.as_str()) != Some(user.as_str()) {
                return Err(invalid(format!("{kind} key must be for your own user")));
            }
            let usage = k
                .get("usage")
                .and_then(|u| u.as_array())
                .ok_or_else(|| Error::bad_json(format!("{kind} key needs usage")))?;
            if !usage.iter().any(|u| u.as_str() == Some(kind)) {
                return Err(invalid(format!("{kind} key has the wrong usage")));
            }
            if cross_signing_public_key(k).is_none() {
                return Err(Error::bad_json(format!("{kind} key needs one ed25519 key")));
            }
            if *kind == "master" {
                master = Some(k.clone());
            }
        }
        for (kind, k) in &keys {
            if *kind != "master" {
                let Some((mid, mpk)) = master.as_ref().and_then(cross_signing_public_key) else {
                    return Err(invalid("Upload a master key first"));
                };
                if !signature_valid(k, user.as_str(), &mid, &mpk) {
                    return Err(invalid(format!(
                        "{kind} key is not signed by the master key"
                    )));
                }
            }
            batch.put(&CROSS_SIGNING_KEYS, (user, kind), k);
        }
        self.commit_key_change(user, batch).await
    }

    /// `/keys/signatures/upload`: adds verified signatures to device keys and cross-signing
    /// keys. Returns failures per user and key ID.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        signed: Vec<(OwnedUserId, String, JsonValue)>,
    ) -> Result<BTreeMap<OwnedUserId, BTreeMap<String, (String, String)>>> {
        let mut failures: BTreeMap<OwnedUserId, BTreeMap<String, (String, String)>> =
            BTreeMap::new();
        let mut batch = Batch::default();
        let mut changed = BTreeSet::new();
        let self_signing = self
            .cross_signing_key(signer, "self_signing")?
            .as_ref()
            .and_then(cross_signing_public_key);
        let user_signing = self
            .cross_signing_key(signer, "user_signing")?
            .as_ref()
            .and_then(cross_signing_public_key);
        let master = self.cross_signing_key(signer, "master")?;
        let master_pk = master.as_ref().and_then(cross_signing_public_key);
        for (user, key_id, obj) in signed {
            let mut fail = |code: &str, msg: &str| {
                failures
                    .entry(user.clone())
                    .or_default()
                    .insert(key_id.clone(), (code.to_owned(), msg.to_owned()));
            };
            if !obj.is_object() {
                fail("M_INVALID_SIGNATURE", "not an object");
                continue;
            }
            // Which stored object is being signed?
            let device_target = self.device_keys(&user, key_id.as_str().into())?;
            let user_master = self.cross_signing_key(&user, "master")?;
            let is_master = user_master
                .as_ref()
                .and_then(cross_signing_public_key)
                .is_some_and(|(_, pk)| pk == key_id);
            let (device, mut target, signing_key) = if let Some(dk) = device_target {
                if user != signer {
                    fail(
                        "M_INVALID_SIGNATURE",
                        "only a device's owner signs its keys",
                    );
                    continue;
                }
                (
                    Some(OwnedDeviceId::from(key_id.as_str())),
                    dk,
                    self_signing.clone().or(master_pk.clone()),
                )
            } else if is_master {
                let signing = if user == signer {
                    None
                } else {
                    user_signing.clone()
                };
                (None, user_master.clone().unwrap_or_default(), signing)
            } else {
                fail("M_NOT_FOUND", "unknown key");
                continue;
            };
            // The uploaded object must be the stored one (apart from signatures) ...
            let strip = |v: &JsonValue| {
                let mut v = v.clone();
                if let Some(o) = v.as_object_mut() {
                    o.remove("signatures");
                    o.remove("unsigned");
                }
                v
            };
            if strip(&obj) != strip(&target) {
                fail(
                    "M_INVALID_SIGNATURE",
                    "the signed object differs from the stored key",
                );
                continue;
            }
            // ... and carry a valid signature by the signer's appropriate key.
            let valid = match (&signing_key, is_master && user == signer) {
                (_, true) => {
                    // A user's own device signs their master key: check with any of their devices.
                    obj.get("signatures")
                        .and_then(|s| s.get(signer.as_str()))
                        .and_then(|s| s.as_object())
                        .is_some_and(|sigs| {
                            sigs.keys().any(|kid| {
                                kid.strip_prefix("ed25519:")
                                    .and_then(|d| self.device_keys(signer, d.into()).ok().flatten())
                                    .and_then(|dk| {
                                        dk.get("keys")?.get(kid)?.as_str().map(str::to_owned)
                                    })
                                    .is_some_and(|pk| {
                                        signature_valid(&obj, signer.as_str(), kid, &pk)
                                    })
                            })
                        })
                }
                (Some((kid, pk)), false) => signature_valid(&obj, signer.as_str(), kid, pk),
                (None, false) => false,
            };
            if !valid {
                fail("M_INVALID_SIGNATURE", "signature does not verify");
                continue;
            }
            merge_signatures(&mut target, &obj);
            match &device {
                Some(device) => batch.put(&DEVICE_KEYS, (&user, device), &target),
                None => batch.put(&CROSS_SIGNING_KEYS, (&user, "master"), &target),
            }
            changed.insert(user.clone());
        }
        for user in changed {
            let b = std::mem::take(&mut batch);
            self.commit_key_change(&user, b).await?;
        }
        Ok(failures)
    }

    // ---- device lists -------------------------------------------------------------------

    /// Users who share at least one joined room with `user` (including `user`).
    pub fn users_sharing_rooms(&self, user: &UserId) -> Result<HashSet<OwnedUserId>> {
        let mut out = HashSet::from([user.to_owned()]);
        for room in self
            .timeline
            .rooms_with_membership(user, &[MembershipState::Join])?
        {
            out.extend(self.timeline.joined_members(&room)?);
        }
        Ok(out)
    }

    /// Device-list changes between two stream positions, as `/keys/changes` and sync report
    /// them: users whose keys changed or who newly share a room (`changed`), and users who no
    /// longer share any room (`left`).
    pub fn device_list_changes(
        &self,
        user: &UserId,
        since: u64,
        upto: u64,
    ) -> Result<(BTreeSet<OwnedUserId>, BTreeSet<OwnedUserId>)> {
        let (mut changed, mut left) = (BTreeSet::new(), BTreeSet::new());
        let mut entries = Vec::new();
        for entry in self.core.stream_entries(since, upto) {
            let (_, entry) = entry?;
            if entry.keys.is_some() || (entry.room.is_some() && entry.user.is_some()) {
                entries.push(entry);
            }
        }
        if entries.is_empty() {
            return Ok((changed, left)); // the common case: only messages moved
        }
        let sharing = self.users_sharing_rooms(user)?;
        let my_rooms: HashSet<_> = self
            .timeline
            .rooms_with_membership(
                user,
                &[
                    MembershipState::Join,
                    MembershipState::Leave,
                    MembershipState::Ban,
                ],
            )?
            .into_iter()
            .collect();
        for entry in entries {
            if let Some(k) = entry.keys
                && sharing.contains(&k)
            {
                changed.insert(k);
            }
            if let (Some(room), Some(target)) = (entry.room, entry.user) {
                if !my_rooms.contains(&room) {
                    continue;
                }
                if target == user {
                    // I joined: everyone in the room may be new to me.
                    if self.timeline.is_joined(user, &room)? {
                        changed.extend(
                            self.timeline
                                .joined_members(&room)?
                                .into_iter()
                                .filter(|u| u != user),
                        );
                    }
                } else if sharing.contains(&target) {
                    changed.insert(target);
                } else {
                    left.insert(target);
                }
            }
        }
        left.retain(|u| !sharing.contains(u));
        changed.retain(|u| !left.contains(u));
        Ok((changed, left))
    }

    // ---- to-device ----------------------------------------------------------------------

    /// Queues to-device messages; `*` means every device of the user. Idempotent per
    /// sender device and transaction ID. Messages for devices that do not exist are dropped,
    /// as are messages to a device whose queue is full (`limits.to_device_queue`); a message
    /// over `limits.max_to_device_bytes` refuses the whole request with M_TOO_LARGE.
    pub async fn send_to_device(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        txn_id: &str,
        kind: &str,
        messages: Vec<(OwnedUserId, String, JsonValue)>,
    ) -> Result<()> {
        let limits = &self.core.config.limits;
        let txn = scoped_txn(TxnScope::ToDevice, txn_id);
        let txn_key = (sender, sender_device, txn.as_str());
        if self.core.store.contains(&TO_DEVICE_TRANSACTIONS, txn_key)? {
            return Ok(());
        }
        for (_, _, content) in &messages {
            if serde_json::to_vec(content)?.len() > limits.max_to_device_bytes {
                return Err(Error::new(
                    http::StatusCode::PAYLOAD_TOO_LARGE,
                    ruma::api::error::ErrorKind::TooLarge,
                    format!(
                        "A to-device message is at most {} bytes",
                        limits.max_to_device_bytes
                    ),
                ));
            }
        }
        let mut deliveries = Vec::new();
        for (user, device, content) in messages {
            if !self.users.is_local(&user) {
                continue; // federation comes later
            }
            let targets: Vec<OwnedDeviceId> = if device == "*" {
                self.users
                    .devices(&user)?
                    .into_iter()
                    .map(|(d, _)| d)
                    .collect()
            } else if self.users.device(&user, device.as_str().into())?.is_some() {
                vec![device.into()]
            } else {
                tracing::debug!(%user, device, "to-device message for an unknown device dropped");
                continue;
            };
            for d in targets {
                let queued = self.core.store.scan(TO_DEVICE.prefix2(&user, &d)).count();
                if queued >= limits.to_device_queue {
                    tracing::warn!(%user, device = %d, "to-device queue full; message dropped");
                    continue;
                }
                deliveries.push((user.clone(), d, content.clone()));
            }
        }
        let users: BTreeSet<_> = deliveries.iter().map(|(u, _, _)| u.clone()).collect();
        // One stream position per recipient so each recipient's sync wakes.
        let mut first = true;
        for user in users {
            let mark_txn = std::mem::replace(&mut first, false);
            let entry = StreamEntry {
                user: Some(user.clone()),
                ..Default::default()
            };
            self.core
                .commit(entry, |pos, b| {
                    for (i, (_, d, content)) in
                        deliveries.iter().filter(|(u, _, _)| *u == user).enumerate()
                    {
                        let rec = ToDeviceRecord {
                            sender: sender.to_owned(),
                            kind: kind.to_owned(),
                            content: content.clone(),
                        };
                        b.put(&TO_DEVICE, (&user, d, pos, i as u32), &rec);
                    }
                    if mark_txn {
                        b.put(&TO_DEVICE_TRANSACTIONS, txn_key, &());
                    }
                    Ok(())
                })
                .await?;
        }
        if first {
            let mut b = Batch::default();
            b.put(&TO_DEVICE_TRANSACTIONS, txn_key, &());
            self.core.write(b).await?;
        }
        Ok(())
    }

    /// A to-device EDU (`m.direct_to_device`) another server sent: its messages for local
    /// devices are queued as a local sender's are, once per `message_id`. Messages whose
    /// sender is not on `origin`, or for users not on this server, are dropped.
    pub async fn receive_remote_to_device(
        &self,
        origin: &ruma::ServerName,
        content: &JsonValue,
    ) -> Result<()> {
        let (Some(sender), Some(kind), Some(message_id), Some(messages)) = (
            content["sender"]
                .as_str()
                .and_then(|s| OwnedUserId::try_from(s).ok()),
            content["type"].as_str(),
            content["message_id"].as_str(),
            content["messages"].as_object(),
        ) else {
            return Err(Error::bad_json(
                "m.direct_to_device needs sender, type, message_id and messages",
            ));
        };
        if sender.server_name() != origin {
            return Err(Error::forbidden("The sender is not on the sending server"));
        }
        let mut deliveries = Vec::new();
        for (user, devices) in messages {
            let Ok(user) = OwnedUserId::try_from(user.as_str()) else {
                continue;
            };
            if !self.users.is_local(&user) {
                continue;
            }
            for (device, message) in devices.as_object().into_iter().flatten() {
                deliveries.push((user.clone(), device.clone(), message.clone()));
            }
        }
        // The remote sender's messages are deduplicated by their ID, under a device ID no
        // client can have (device IDs of this server never contain a space).
        let via: &DeviceId = "federation sender".into();
        self.send_to_device(&sender, via, message_id, kind, deliveries)
            .await
    }

    /// Pending to-device messages for a device up to `upto`, at most
    /// `limits.to_device_per_sync`, after deleting those the client acknowledged by syncing
    /// with `acked` (everything at or before it). Returns them and the position they reach:
    /// `upto` when none are left behind.
    pub async fn take_to_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        acked: Option<u64>,
        upto: u64,
    ) -> Result<(Vec<JsonValue>, u64)> {
        let store = &self.core.store;
        if let Some(acked) = acked {
            let mut b = Batch::default();
            for item in store.range(
                &TO_DEVICE,
                (user, device, 0, 0),
                (user, device, acked.saturating_add(1), 0),
                false,
            ) {
                b.delete(&TO_DEVICE, item?.0.as_key_ref());
            }
            if !b.is_empty() {
                self.core.write(b).await?;
            }
        }
        let limit = self.core.config.limits.to_device_per_sync;
        let mut out = Vec::new();
        let mut reached = upto;
        for item in store.range(
            &TO_DEVICE,
            (user, device, acked.map_or(0, |a| a + 1), 0),
            (user, device, upto.saturating_add(1), 0),
            false,
        ) {
            let ((_, _, pos, _), rec) = item?;
            if out.len() >= limit {
                // Everything before this message's position went out.
                reached = pos - 1;
                break;
            }
            out.push(json!({ "sender": rec.sender, "type": rec.kind, "content": rec.content }));
        }
        Ok((out, reached))
    }

    /// Removes queued to-device messages of devices that no longer exist (older versions
    /// kept them forever).
    pub async fn drop_orphaned_to_device(&self) -> Result<usize> {
        let mut b = Batch::default();
        let mut dropped = 0;
        for item in self.core.store.scan(TO_DEVICE.all()) {
            let (key, _) = item?;
            if self.users.device(&key.0, &key.1)?.is_none() {
                b.delete(&TO_DEVICE, key.as_key_ref());
                dropped += 1;
            }
        }
        self.core.write(b).await?;
        Ok(dropped)
    }
}

//! Third-party networks the appservices bridge (`/thirdparty/...`): the server asks the
//! appservices that registered a protocol and passes their answers on, as the Application
//! Service API describes.

use std::{collections::BTreeMap, time::Duration};

use ruma::thirdparty::{Location, Protocol, User};
use serde::de::DeserializeOwned;
use serde_json::Value as JsonValue;

use super::{Appservice, Appservices, path_segment};
use crate::{
    error::{Error, Result},
    service::net::json_body,
};

/// The largest answer read from an appservice.
const MAX_ANSWER: usize = 1024 * 1024;

/// What to look up on the bridged networks.
pub enum Lookup<'a> {
    /// Portal rooms of a protocol matching the fields.
    Locations(&'a str),
    /// Remote users of a protocol matching the fields.
    Users(&'a str),
    /// The remote rooms behind a Matrix alias.
    LocationsOfAlias,
    /// The remote users behind a Matrix user ID.
    UsersOfUserId,
}

impl Appservices {
    fn bridging<'a>(&'a self, protocol: Option<&'a str>) -> impl Iterator<Item = &'a Appservice> {
        self.list.iter().map(|a| &**a).filter(move |a| {
            a.registration.url.is_some()
                && a.registration
                    .protocols
                    .as_ref()
                    .is_some_and(|p| protocol.is_none_or(|want| p.iter().any(|have| have == want)))
        })
    }

    async fn ask(
        &self,
        a: &Appservice,
        path: &str,
        query: &[(String, String)],
    ) -> Option<JsonValue> {
        let mut url = format!(
            "{}/_matrix/app/v1/thirdparty/{path}",
            a.registration.url.as_deref()?
        );
        if !query.is_empty() {
            url.push('?');
            url.push_str(
                &form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(query)
                    .finish(),
            );
        }
        let res = self
            .core
            .http
            .get(url)
            .bearer_auth(&a.registration.hs_token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        if !res.status().is_success() {
            return None;
        }
        json_body(res, MAX_ANSWER).await
    }

    /// Every protocol the appservices registered that one of them describes. Instances get
    /// the `instance_id` clients need (`{appservice}|{network_id}`); several appservices
    /// bridging one protocol share its entry.
    pub async fn protocols(&self) -> BTreeMap<String, Protocol> {
        let mut out = BTreeMap::new();
        let names: Vec<String> = self
            .bridging(None)
            .flat_map(|a| a.registration.protocols.clone().unwrap_or_default())
            .collect();
        for name in names {
            if !out.contains_key(&name)
                && let Ok(p) = self.protocol(&name).await
            {
                out.insert(name, p);
            }
        }
        out
    }

    /// One protocol's description, or M_NOT_FOUND when no appservice describes it.
    pub async fn protocol(&self, name: &str) -> Result<Protocol> {
        let mut merged: Option<JsonValue> = None;
        for a in self.bridging(Some(name)) {
            let Some(mut p) = self
                .ask(a, &format!("protocol/{}", path_segment(name)), &[])
                .await
            else {
                continue;
            };
            let instances = p
                .get_mut("instances")
                .and_then(|i| i.as_array_mut())
                .map(std::mem::take)
                .unwrap_or_default();
            let instances: Vec<JsonValue> = instances
                .into_iter()
                .map(|mut i| {
                    if i.get("instance_id").is_none() {
                        let network = i.get("network_id").and_then(|n| n.as_str()).unwrap_or("");
                        i["instance_id"] = format!("{}|{network}", a.id()).into();
                    }
                    i
                })
                .collect();
            match &mut merged {
                None => {
                    p["instances"] = instances.into();
                    merged = Some(p);
                }
                Some(m) => {
                    if let Some(list) = m["instances"].as_array_mut() {
                        list.extend(instances);
                    }
                }
            }
        }
        merged
            .and_then(|m| serde_json::from_value(m).ok())
            .ok_or_else(|| Error::not_found("No bridge for this protocol"))
    }

    /// Looks up rooms or users on the bridged networks; the answers of every appservice that
    /// bridges the protocol (or, for alias and user ID lookups, of every bridge) together.
    pub async fn thirdparty_locations(
        &self,
        lookup: Lookup<'_>,
        query: &[(String, String)],
    ) -> Result<Vec<Location>> {
        self.lookup(lookup, query).await
    }

    /// See [`Appservices::thirdparty_locations`].
    pub async fn thirdparty_users(
        &self,
        lookup: Lookup<'_>,
        query: &[(String, String)],
    ) -> Result<Vec<User>> {
        self.lookup(lookup, query).await
    }

    async fn lookup<T: DeserializeOwned>(
        &self,
        lookup: Lookup<'_>,
        query: &[(String, String)],
    ) -> Result<Vec<T>> {
        let (protocol, path) = match lookup {
            Lookup::Locations(p) => (Some(p), format!("location/{}", path_segment(p))),
            Lookup::Users(p) => (Some(p), format!("user/{}", path_segment(p))),
            Lookup::LocationsOfAlias => (None, "location".to_owned()),
            Lookup::UsersOfUserId => (None, "user".to_owned()),
        };
        let mut bridges = self.bridging(protocol).peekable();
        if protocol.is_some() && bridges.peek().is_none() {
            return Err(Error::not_found("No bridge for this protocol"));
        }
        let mut out = Vec::new();
        for a in bridges {
            if let Some(JsonValue::Array(items)) = self.ask(a, &path, query).await {
                out.extend(
                    items
                        .into_iter()
                        .filter_map(|i| serde_json::from_value(i).ok()),
                );
            }
        }
        Ok(out)
    }
}

//! Requests to other servers: where a server name is served (the spec's server discovery),
//! each request signed with X-Matrix, and bounds on what asking strangers may cost.
//!
//! Every limit is in `[federation]`: a request waits at most `request_timeout_secs`, reads at
//! most `max_response_size` bytes, at most `max_outgoing_requests` are in flight, and a server
//! that failed is left alone for `failure_backoff_secs`. Addresses are checked after DNS
//! resolution (no loopback, private or link-local ones unless `allow_private_addresses`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::StatusCode;
use ruma::{
    OwnedServerName, ServerName,
    api::{
        IncomingResponse, OutgoingRequest,
        auth_scheme::NoAuthentication,
        federation::authentication::{ServerSignatures, ServerSignaturesInput},
        path_builder::SinglePath,
    },
};
use tokio::sync::Semaphore;

use crate::{
    config::FederationConfig,
    service::{core::Core, net},
};

/// How long a discovered address is used before the server name is resolved again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Most server names whose address or failure is remembered (a flood of strangers' names
/// cannot grow the tables without bound: past it, the oldest half is forgotten).
const REMEMBERED_SERVERS: usize = 1024;
/// Largest `/.well-known/matrix/server` answer read.
const WELL_KNOWN_MAX: usize = 64 * 1024;

/// Why another server could not be asked, or what it answered instead.
#[derive(Debug, thiserror::Error)]
pub enum FedError {
    #[error("federation is turned off on this server")]
    Disabled,
    #[error("{0} is not a server this one talks with")]
    NotPermitted(OwnedServerName),
    #[error("{0} failed a moment ago; it is not asked again yet")]
    BackingOff(OwnedServerName),
    #[error("{0} is busy: too many requests to other servers are in flight")]
    Busy(OwnedServerName),
    #[error("cannot reach {0}: {1}")]
    Unreachable(OwnedServerName, String),
    #[error("{server} answered {status}: {errcode} {error}")]
    Status {
        server: OwnedServerName,
        status: StatusCode,
        errcode: String,
        error: String,
    },
    #[error("{0} answered something unusable: {1}")]
    Invalid(OwnedServerName, String),
}

impl FedError {
    /// Whether the other server said that what was asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FedError::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

/// Where a server's API is, found by discovery: `https://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub base_url: String,
}

/// The outgoing half of federation.
pub struct FedClient {
    core: Arc<Core>,
    http: reqwest::Client,
    config: FederationConfig,
    enabled: bool,
    slots: Semaphore,
    destinations: Mutex<HashMap<OwnedServerName, (Destination, Instant)>>,
    /// Host -> the host its SRV record names: connections to the host go there.
    srv_targets: SrvTargets,
    failures: Mutex<HashMap<OwnedServerName, Instant>>,
}

impl FedClient {
    pub fn new(core: Arc<Core>) -> anyhow::Result<Self> {
        let config = core.config.federation.clone();
        let enabled = core.config.federates();
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .no_proxy()
            .user_agent(concat!("Tsunagu/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(config.request_timeout_secs))
            .timeout(Duration::from_secs(config.request_timeout_secs))
            .redirect(reqwest::redirect::Policy::limited(3));
        let srv_targets = SrvTargets::default();
        builder = builder.dns_resolver(Arc::new(FedResolver {
            check: !config.allow_private_addresses,
            srv_targets: srv_targets.clone(),
        }));
        if let Some(path) = &config.tls_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("federation.tls_ca_file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("federation.tls_ca_file {}: {e}", path.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        Ok(Self {
            slots: Semaphore::new(config.max_outgoing_requests),
            http: builder.build()?,
            enabled,
            config,
            core,
            destinations: Mutex::new(HashMap::new()),
            srv_targets,
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this server talks with other servers at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `server` may be talked with (federation on, not this server, allowed by the
    /// config's lists).
    pub fn permits(&self, server: &ServerName) -> Result<(), FedError> {
        if !self.enabled {
            return Err(FedError::Disabled);
        }
        if server == self.core.server_name() || !self.config.permits(server) {
            return Err(FedError::NotPermitted(server.to_owned()));
        }
        Ok(())
    }

    /// Sends a request that X-Matrix authenticates, signed with this server's key.
    pub async fn send<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FedError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        self.send_capped(destination, request, self.config.max_response_size)
            .await
    }

    /// [`FedClient::send`] reading an answer of at most `cap` bytes (media).
    pub async fn send_capped<R>(
        &self,
        destination: &ServerName,
        request: R,
        cap: usize,
    ) -> Result<R::IncomingResponse, FedError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        let origin = self.core.server_name().clone();
        let key = &self.core.signing_key;
        self.call(destination, cap, |base| {
            let input = ServerSignaturesInput::new(origin, destination.to_owned(), key);
            request.try_into_http_request::<Vec<u8>>(base, input, ())
        })
        .await
    }

    /// Sends a request that needs no authentication (the key server's).
    pub async fn send_unsigned<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FedError>
    where
        R: OutgoingRequest<Authentication = NoAuthentication, PathBuilder = SinglePath>,
    {
        self.call(destination, self.config.max_response_size, |base| {
            request.try_into_http_request::<Vec<u8>>(base, (), ())
        })
        .await
    }

    /// GETs a URL another server named (media that redirects elsewhere), over HTTPS to a
    /// permitted address, at most `cap` bytes.
    pub async fn fetch_url(
        &self,
        server: &ServerName,
        url: &str,
        cap: usize,
    ) -> Result<Vec<u8>, FedError> {
        let request = http::Request::get(url)
            .body(Vec::new())
            .map_err(|e| FedError::Invalid(server.to_owned(), e.to_string()))?;
        let response = self.execute(server, request, cap).await?;
        if !response.status().is_success() {
            return Err(FedError::Invalid(
                server.to_owned(),
                format!("its media location answered {}", response.status()),
            ));
        }
        Ok(response.into_body())
    }

    async fn call<Resp: IncomingResponse>(
        &self,
        destination: &ServerName,
        cap: usize,
        build: impl FnOnce(&str) -> Result<http::Request<Vec<u8>>, ruma::api::error::IntoHttpError>,
    ) -> Result<Resp, FedError> {
        self.permits(destination)?;
        self.check_backoff(destination)?;
        let target = self.destination(destination).await?;
        let request = build(&target.base_url)
            .map_err(|e| FedError::Invalid(destination.to_owned(), e.to_string()))?;
        let response = self.execute(destination, request, cap).await?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value =
                serde_json::from_slice(response.body()).unwrap_or_default();
            let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
            return Err(FedError::Status {
                server: destination.to_owned(),
                status,
                errcode: text("errcode"),
                error: text("error"),
            });
        }
        Resp::try_from_http_response(response)
            .map_err(|e| FedError::Invalid(destination.to_owned(), e.to_string()))
    }

    /// Sends one request and reads its answer, bounded in time, size and concurrency.
    async fn execute(
        &self,
        server: &ServerName,
        request: http::Request<Vec<u8>>,
        cap: usize,
    ) -> Result<http::Response<Vec<u8>>, FedError> {
        let timeout = Duration::from_secs(self.config.request_timeout_secs);
        let _slot = tokio::time::timeout(timeout, self.slots.acquire())
            .await
            .map_err(|_| FedError::Busy(server.to_owned()))?
            .map_err(|_| FedError::Busy(server.to_owned()))?;
        let (parts, body) = request.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string())
            .map_err(|e| FedError::Invalid(server.to_owned(), e.to_string()))?;
        if !self.config.allow_private_addresses {
            net::check_url(&url, false)
                .await
                .map_err(|e| self.failed(server, e.to_string()))?;
        }
        let mut req = self.http.request(parts.method, url).body(body);
        for (name, value) in &parts.headers {
            req = req.header(name, value);
        }
        let response = req
            .send()
            .await
            .map_err(|e| self.failed(server, error_chain(&e)))?;
        let status = response.status();
        let mut headers = response.headers().clone();
        let body = read_capped(response, cap)
            .await
            .map_err(|e| self.failed(server, e))?;
        if status.is_server_error() {
            self.failed(server, format!("answered {status}"));
        }
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        // Multipart answers (media) are parsed by their Content-Type's boundary.
        std::mem::swap(out.headers_mut(), &mut headers);
        Ok(out)
    }

    /// Notes that `server` failed: it is not asked again for `failure_backoff_secs`.
    fn failed(&self, server: &ServerName, why: String) -> FedError {
        let until = Instant::now() + Duration::from_secs(self.config.failure_backoff_secs);
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        remember(&mut failures, server.to_owned(), until, |t| *t);
        tracing::debug!("federation: {server} failed: {why}");
        FedError::Unreachable(server.to_owned(), why)
    }

    fn check_backoff(&self, server: &ServerName) -> Result<(), FedError> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(server) {
            Some(until) if *until > Instant::now() => Err(FedError::BackingOff(server.to_owned())),
            Some(_) => {
                failures.remove(server);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Where `server` is served, from the cache or by discovery.
    pub async fn destination(&self, server: &ServerName) -> Result<Destination, FedError> {
        {
            let cache = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((d, at)) = cache.get(server)
                && at.elapsed() < DISCOVERY_TTL
            {
                return Ok(d.clone());
            }
        }
        let (found, settled) = self.discover(server).await;
        if settled {
            let mut cache = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
            remember(
                &mut cache,
                server.to_owned(),
                (found.clone(), Instant::now()),
                |(_, at)| *at,
            );
        }
        Ok(found)
    }

    /// The spec's server discovery: an IP literal or a name with a port is used as it is;
    /// else `/.well-known/matrix/server` may delegate to another name (used as it is when it
    /// names an IP literal or a port); else the name's SRV record (`_matrix-fed._tcp`, then
    /// the deprecated `_matrix._tcp`) names the host and port to connect to, while TLS and
    /// the `Host` header still name the server; else port 8448. The flag says whether the
    /// answer may be kept (not when the well-known lookup could not even be tried).
    async fn discover(&self, server: &ServerName) -> (Destination, bool) {
        if server.is_ip_literal() || server.port().is_some() {
            return (direct(server), true);
        }
        let (name, settled) = match self.well_known(server).await {
            Ok(Some(delegated)) => (delegated, true),
            Ok(None) => (server.to_owned(), true),
            Err(Busy) => (server.to_owned(), false),
        };
        if name.is_ip_literal() || name.port().is_some() {
            return (direct(&name), settled);
        }
        match self.srv(name.host()).await {
            Some(srv) => {
                let mut targets = self.srv_targets.lock().unwrap_or_else(|p| p.into_inner());
                if targets.len() >= REMEMBERED_SERVERS {
                    targets.clear();
                }
                targets.insert(name.host().to_ascii_lowercase(), srv.target.clone());
                let base_url = format!("https://{}:{}", name.host(), srv.port);
                (Destination { base_url }, settled)
            }
            None => (direct(&name), settled),
        }
    }

    /// The best SRV record of `host` (`_matrix-fed._tcp`, then `_matrix._tcp`), if any.
    async fn srv(&self, host: &str) -> Option<super::dns::Srv> {
        let resolver = self
            .config
            .dns_resolver
            .or_else(super::dns::system_resolver)?;
        let timeout = Duration::from_secs(self.config.request_timeout_secs.min(5));
        for prefix in ["_matrix-fed._tcp", "_matrix._tcp"] {
            match super::dns::lookup_srv(resolver, &format!("{prefix}.{host}"), timeout).await {
                Ok(records) => {
                    // A target of "." says the service is not there.
                    if let Some(best) = records.into_iter().find(|r| !r.target.is_empty()) {
                        return Some(best);
                    }
                }
                Err(e) => tracing::debug!("federation: no SRV record of {host}: {e}"),
            }
        }
        None
    }

    /// The server name `/.well-known/matrix/server` of `server` delegates to, if any; `Busy`
    /// when no outgoing request could be made for it in time.
    async fn well_known(&self, server: &ServerName) -> Result<Option<OwnedServerName>, Busy> {
        let url = format!("https://{}/.well-known/matrix/server", server.host());
        let Ok(url) = reqwest::Url::parse(&url) else {
            return Ok(None);
        };
        if !self.config.allow_private_addresses && net::check_url(&url, false).await.is_err() {
            return Ok(None);
        }
        let timeout = Duration::from_secs(self.config.request_timeout_secs);
        let _slot = match tokio::time::timeout(timeout, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => return Err(Busy),
        };
        Ok(self.fetch_well_known(url).await)
    }

    async fn fetch_well_known(&self, url: reqwest::Url) -> Option<OwnedServerName> {
        let response = self.http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = net::json_body(response, WELL_KNOWN_MAX).await?;
        let name = body.get("m.server")?.as_str()?;
        OwnedServerName::try_from(name).ok()
    }
}

/// No outgoing request slot was free in time.
struct Busy;

/// Hosts whose SRV record names another host to connect to.
type SrvTargets = Arc<Mutex<HashMap<String, String>>>;

/// The federation client's resolver: a host with an SRV record resolves to its target's
/// addresses (the URL, TLS and `Host` keep the server's name); refused addresses are dropped
/// unless private addresses are allowed.
struct FedResolver {
    check: bool,
    srv_targets: SrvTargets,
}

impl reqwest::dns::Resolve for FedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let host = self
            .srv_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&host)
            .cloned()
            .unwrap_or(host);
        let check = self.check;
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = if check {
                net::allowed_addresses(&host, false).await?
            } else {
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect()
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// `https://host:port` for a server name used directly (port 8448 when it names none).
fn direct(server: &ServerName) -> Destination {
    Destination {
        base_url: format!(
            "https://{}:{}",
            server.host(),
            server.port().unwrap_or(8448)
        ),
    }
}

/// Inserts into a bounded map: past [`REMEMBERED_SERVERS`] entries, the older half goes.
fn remember<V, T: Ord + Copy>(
    map: &mut HashMap<OwnedServerName, V>,
    key: OwnedServerName,
    value: V,
    age: impl Fn(&V) -> T,
) {
    if map.len() >= REMEMBERED_SERVERS && !map.contains_key(&key) {
        let mut ages: Vec<T> = map.values().map(&age).collect();
        ages.sort();
        let cut = ages[ages.len() / 2];
        map.retain(|_, v| age(v) > cut);
    }
    map.insert(key, value);
}

/// An answer's body, at most `cap` bytes.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(format!("answer larger than {cap} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > cap {
            return Err(format!("answer larger than {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its causes (reqwest's own message says little: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_destinations() {
        let d = |s: &str| direct(<&ServerName>::try_from(s).unwrap()).base_url;
        assert_eq!(d("example.org"), "https://example.org:8448");
        assert_eq!(d("example.org:443"), "https://example.org:443");
        assert_eq!(d("1.2.3.4"), "https://1.2.3.4:8448");
        assert_eq!(d("[2001:db8::1]:8000"), "https://[2001:db8::1]:8000");
    }

    #[test]
    fn remembered_servers_stay_bounded() {
        let mut map = HashMap::new();
        for i in 0..5000u32 {
            let name = OwnedServerName::try_from(format!("s{i}.example")).unwrap();
            remember(&mut map, name, i, |v| *v);
            assert!(map.len() <= REMEMBERED_SERVERS);
        }
        assert!(map.contains_key(<&ServerName>::try_from("s4999.example").unwrap()));
    }
}

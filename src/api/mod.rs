//! HTTP routes. Handlers are thin: a ruma request in (through the [`Ruma`] extractor), one call
//! on a service area, a ruma response out. Nothing here touches the store.
//!
//! A handler's signature names its endpoint: `async fn h(State(s): State<AppState>,
//! req: Ruma<send_message_event::v3::Request>) -> ApiResult<send_message_event::v3::Response>`.
//! [`RouterExt::ruma`] reads the request type from it and registers every path ruma knows for
//! that endpoint, so a route cannot be paired with the wrong handler.

pub mod client;
pub mod federation;

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{ConnectInfo, FromRequest, Request, State},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::Bytes;
use http::StatusCode;
use ruma::{
    OwnedDeviceId, OwnedServerName, OwnedUserId,
    api::{
        IncomingRequest, OutgoingResponse,
        auth_scheme::{
            AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional,
            NoAccessToken, NoAuthentication,
        },
        error::ErrorKind,
        federation::authentication::{ServerSignatures, XMatrix},
        path_builder::PathBuilder,
    },
};

use crate::{error::Error, service::Services};

/// Shared state of every handler.
pub type AppState = Arc<Services>;

/// How an endpoint authenticates its caller.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    None,
    Optional,
    Required,
    /// Another server, by an X-Matrix signature over the request.
    Server,
}

/// Maps ruma's authentication schemes to what the extractor must check.
pub trait AuthRequirement {
    const KIND: AuthKind;
}
impl AuthRequirement for NoAuthentication {
    const KIND: AuthKind = AuthKind::None;
}
impl AuthRequirement for NoAccessToken {
    const KIND: AuthKind = AuthKind::None;
}
impl AuthRequirement for AccessToken {
    const KIND: AuthKind = AuthKind::Required;
}
impl AuthRequirement for AccessTokenOptional {
    const KIND: AuthKind = AuthKind::Optional;
}
impl AuthRequirement for AppserviceToken {
    const KIND: AuthKind = AuthKind::Required;
}
impl AuthRequirement for AppserviceTokenOptional {
    const KIND: AuthKind = AuthKind::Optional;
}
impl AuthRequirement for ServerSignatures {
    const KIND: AuthKind = AuthKind::Server;
}

/// A parsed ruma request with the authenticated caller.
pub struct Ruma<T> {
    pub body: T,
    pub user: Option<OwnedUserId>,
    pub device: Option<OwnedDeviceId>,
    pub client_ip: Option<String>,
    /// Set when the caller authenticated with an appservice's `as_token`.
    pub appservice: Option<Arc<crate::service::appservice::Appservice>>,
    /// The server that signed a Server-Server request.
    pub origin: Option<OwnedServerName>,
}

impl<T> Ruma<T> {
    /// The caller of an endpoint that requires authentication.
    pub fn sender(&self) -> Result<&OwnedUserId, Error> {
        self.user.as_ref().ok_or_else(missing_token)
    }

    pub fn sender_device(&self) -> Result<&OwnedDeviceId, Error> {
        self.device.as_ref().ok_or_else(missing_token)
    }
}

fn missing_token() -> Error {
    Error::new(
        StatusCode::UNAUTHORIZED,
        ErrorKind::MissingToken,
        "Missing access token",
    )
}

/// The query string's parameters, decoded.
fn query_pairs(parts: &http::request::Parts) -> Vec<(String, String)> {
    parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn access_token(parts: &http::request::Parts) -> Option<String> {
    if let Some(h) = parts.headers.get(http::header::AUTHORIZATION) {
        return h
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(|t| t.trim().to_owned());
    }
    query_pairs(parts)
        .into_iter()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v)
}

/// The caller: from the access token in the headers (or query), before any body is read.
type Caller = (
    Option<OwnedUserId>,
    Option<OwnedDeviceId>,
    Option<Arc<crate::service::appservice::Appservice>>,
);

fn authenticate(
    state: &AppState,
    parts: &http::request::Parts,
    kind: AuthKind,
) -> Result<Caller, Error> {
    if matches!(kind, AuthKind::None | AuthKind::Server) {
        return Ok((None, None, None));
    }
    match access_token(parts) {
        Some(token) => {
            if let Some(owner) = state.users.token_owner(&token)? {
                Ok((Some(owner.user_id), Some(owner.device_id), None))
            } else if let Some(a) = state.appservices.by_token(&token) {
                let (u, d) = appservice_identity(state, &a, parts)?;
                Ok((Some(u), Some(d), Some(a)))
            } else {
                Err(Error::unknown_token("Unknown access token"))
            }
        }
        None if kind == AuthKind::Required => Err(missing_token()),
        None => Ok((None, None, None)),
    }
}

impl<T> FromRequest<AppState> for Ruma<T>
where
    T: IncomingRequest + Send,
    T::Authentication: AuthRequirement,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let (mut parts, body) = req.into_parts();
        let path_params: Vec<String> = {
            use axum::extract::FromRequestParts;
            let raw = axum::extract::RawPathParams::from_request_parts(&mut parts, state)
                .await
                .map_err(|e| Error::invalid_param(e.to_string()))?;
            let mut params: Vec<String> = raw.iter().map(|(_, v)| v.to_owned()).collect();
            // An empty trailing `{state_key}` was routed without that segment.
            let expected = T::PATH_BUILDER
                .all_paths()
                .next()
                .map(|p| p.matches('{').count())
                .unwrap_or(0);
            params.resize(expected.max(params.len()), String::new());
            params
        };
        let client_ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        // Who is asking, from the headers alone: a stranger's body is never read.
        let kind = <T::Authentication as AuthRequirement>::KIND;
        let (user, device, appservice) = authenticate(state, &parts, kind)?;
        // Another server: its key is known (or fetched) before its body is read.
        let server = match kind {
            AuthKind::Server => Some(server_caller(state, &parts).await?),
            _ => None,
        };
        let upload = parts.extensions.get::<BodyLimit>() == Some(&BodyLimit::Upload);
        let mut bytes = read_body(state, &parts, body).await?;
        // The signature covers the body exactly as sent.
        let origin = match server {
            Some((x_matrix, key)) => Some(verify_server(state, &parts, &bytes, x_matrix, key)?),
            None => None,
        };
        if bytes.is_empty()
            && !upload
            && T::METHOD != http::Method::GET
            && T::METHOD != http::Method::DELETE
        {
            // Clients leave the body out when every field is optional (matrix-nio's join).
            bytes = Bytes::from_static(b"{}");
        }
        match parts.extensions.get::<Lenient>().copied() {
            Some(Lenient::Body(fill_in)) => {
                if let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                    fill_in(&mut json);
                    bytes = Bytes::from(serde_json::to_vec(&json)?);
                }
            }
            Some(Lenient::QueryDefaults(defaults)) => fill_query(&mut parts, defaults),
            None => {}
        }
        let http_req = http::Request::from_parts(parts, bytes.clone());
        let body = T::try_from_http_request(http_req, &path_params).map_err(|e| {
            if upload {
                // The body is the file, whatever its bytes: what failed is a parameter.
                return Error::invalid_param(format!("Invalid request: {e}"));
            }
            let not_json = T::METHOD != http::Method::GET
                && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err();
            if not_json {
                Error::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::NotJson,
                    format!("Body is not JSON: {e}"),
                )
            } else {
                Error::bad_json(format!("Invalid request: {e}"))
            }
        })?;
        Ok(Ruma {
            body,
            user,
            device,
            client_ip,
            appservice,
            origin,
        })
    }
}

fn unauthorized(message: impl Into<String>) -> Error {
    Error::new(StatusCode::UNAUTHORIZED, ErrorKind::Unauthorized, message)
}

/// The X-Matrix header of a Server-Server request and the public key it names, from the
/// headers alone: a server this one does not talk with, or whose key cannot be had, is
/// refused before its body is read.
async fn server_caller(
    state: &AppState,
    parts: &http::request::Parts,
) -> Result<(XMatrix, ruma::serde::Base64), Error> {
    let header = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("Missing X-Matrix authorization"))?;
    let x_matrix = XMatrix::try_from(header)
        .map_err(|e| unauthorized(format!("Invalid X-Matrix authorization: {e}")))?;
    let ours = state.core.server_name();
    if x_matrix.destination.as_ref().is_some_and(|d| d != ours) {
        return Err(unauthorized("The request is for another server"));
    }
    let client = &state.federation.client;
    if let Err(e) = client.permits(&x_matrix.origin) {
        return Err(Error::forbidden(e.to_string()));
    }
    let now = crate::service::core::now_ms();
    let key = state
        .federation
        .verify_key(&x_matrix.origin, x_matrix.key.as_str(), now)
        .await
        .map_err(|e| unauthorized(format!("Cannot check the request's signature: {e}")))?;
    Ok((x_matrix, key))
}

/// Checks the X-Matrix signature over the whole request (method, URI, body); the origin.
fn verify_server(
    state: &AppState,
    parts: &http::request::Parts,
    body: &Bytes,
    x_matrix: XMatrix,
    key: ruma::serde::Base64,
) -> Result<OwnedServerName, Error> {
    let map = ruma::signatures::PublicKeyMap::from([(
        x_matrix.origin.to_string(),
        ruma::signatures::PublicKeySet::from([(x_matrix.key.to_string(), key)]),
    )]);
    let mut request = http::Request::new(body.clone());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    x_matrix
        .verify_request(&request, state.core.server_name(), &map)
        .map_err(|e| unauthorized(format!("The request's signature does not verify: {e}")))?;
    Ok(x_matrix.origin)
}

/// How large a body an endpoint reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLimit {
    /// `max_request_size` from the config.
    Request,
    /// An event's content: at most 65,536 bytes, the spec's limit for a whole event.
    Event,
    /// A file upload: raw bytes, up to `media.max_upload_size`, within
    /// `media.upload_timeout_secs`.
    Upload,
    /// Another server's transaction (`/send`): up to `federation.max_transaction_size`, as a
    /// transaction may carry 50 events of 65,536 bytes and 100 EDUs.
    Transaction,
}

/// Fills in what real clients leave out of a request before ruma reads it.
#[derive(Clone, Copy)]
pub enum Lenient {
    /// Completes the JSON body (a typing notice without its timeout).
    Body(fn(&mut serde_json::Value)),
    /// Query parameters with a default the spec gives but ruma requires (`/threads` without
    /// `include`, as matrix-sdk sends it).
    QueryDefaults(&'static [(&'static str, &'static str)]),
}

/// Appends the defaults of query parameters the request left out.
fn fill_query(parts: &mut http::request::Parts, defaults: &[(&str, &str)]) {
    let present = query_pairs(parts);
    let missing: Vec<_> = defaults
        .iter()
        .filter(|(k, _)| !present.iter().any(|(p, _)| p == k))
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut query = parts.uri.query().unwrap_or("").to_owned();
    for (k, v) in missing {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("{k}={v}"));
    }
    if let Ok(uri) = format!("{}?{query}", parts.uri.path()).parse() {
        parts.uri = uri;
    }
}

/// The bytes of request bodies being read at once, across all connections, in KiB.
pub struct BodyBudget(tokio::sync::Semaphore);

impl BodyBudget {
    pub fn new(mib: usize) -> Self {
        Self(tokio::sync::Semaphore::new(mib * 1024))
    }
}

fn too_large() -> Error {
    Error::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::TooLarge,
        "Request body too large",
    )
}

/// Reads a request body: at most the endpoint's limit, within the body timeout, and only
/// while the bodies being read at once stay within the server's budget.
async fn read_body(
    state: &AppState,
    parts: &http::request::Parts,
    body: axum::body::Body,
) -> Result<Bytes, Error> {
    let config = state.config();
    let kind = parts.extensions.get::<BodyLimit>().copied();
    let limit = match kind {
        Some(BodyLimit::Event) => crate::service::timeline::append::MAX_PDU_BYTES,
        Some(BodyLimit::Upload) => config.media.max_upload_size,
        Some(BodyLimit::Transaction) => config.federation.max_transaction_size,
        _ => config.max_request_size,
    };
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let timeout = std::time::Duration::from_secs(match kind {
        Some(BodyLimit::Upload) => config.media.upload_timeout_secs,
        _ => config.limits.body_timeout_secs,
    });
    let deadline = tokio::time::Instant::now() + timeout;
    let _permit = match (declared, parts.extensions.get::<Arc<BodyBudget>>()) {
        (Some(0), _) | (_, None) => None,
        (declared, Some(budget)) => {
            let kib = declared.unwrap_or(limit).div_ceil(1024).max(1) as u32;
            match tokio::time::timeout_at(deadline, budget.0.acquire_many(kib)).await {
                Ok(Ok(permit)) => Some(permit),
                _ => {
                    return Err(Error::limit_exceeded(std::time::Duration::from_secs(1)));
                }
            }
        }
    };
    match tokio::time::timeout_at(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(Error::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Unknown,
            "The request body did not arrive in time",
        )),
    }
}

/// Who an appservice acts as: the `user_id` query parameter (inside its namespace) or its own
/// sender; on the `device_id` given (if that device exists) or a device named after it.
fn appservice_identity(
    state: &AppState,
    a: &crate::service::appservice::Appservice,
    parts: &http::request::Parts,
) -> Result<(OwnedUserId, OwnedDeviceId), Error> {
    let query = query_pairs(parts);
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let user = match param("user_id") {
        Some(u) => OwnedUserId::try_from(u).map_err(|_| Error::invalid_param("Invalid user_id"))?,
        None => a.sender.clone(),
    };
    if !a.is_user(&user) {
        return Err(Error::forbidden(
            "That user is outside the appservice's namespace",
        ));
    }
    if state.users.account(&user)?.is_none() && user != a.sender {
        // Registration itself is allowed; everything else needs the user to exist.
        if parts.uri.path().ends_with("/register") {
            return Ok((a.sender.clone(), OwnedDeviceId::from(a.id())));
        }
        return Err(Error::forbidden(
            "The appservice has not registered this user",
        ));
    }
    let device = param("device_id")
        .map(OwnedDeviceId::from)
        .filter(|d| state.users.device(&user, d).ok().flatten().is_some())
        .unwrap_or_else(|| OwnedDeviceId::from(a.id()));
    Ok((user, device))
}

/// A ruma response as an axum response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(res) => res.map(axum::body::Body::from).into_response(),
            Err(e) => Error::internal(format!("response serialization: {e}")).into_response(),
        }
    }
}

/// Handler result type.
pub type ApiResult<T> = Result<RumaResponse<T>, Error>;

/// A ruma response whose body is streamed rather than held in memory: ruma's type makes the
/// status and headers, `body` replaces its (empty) body. Media downloads answer with it.
pub struct Streamed<T> {
    pub head: T,
    pub body: axum::body::Body,
    /// The body's length, for `Content-Length`.
    pub len: u64,
}

impl<T: OutgoingResponse> IntoResponse for Streamed<T> {
    fn into_response(self) -> Response {
        match self.head.try_into_http_response::<Vec<u8>>() {
            Ok(res) => {
                let (mut parts, _) = res.into_parts();
                parts
                    .headers
                    .insert(http::header::CONTENT_LENGTH, self.len.into());
                Response::from_parts(parts, self.body)
            }
            Err(e) => Error::internal(format!("response serialization: {e}")).into_response(),
        }
    }
}

/// Result type of a handler that streams its answer.
pub type StreamedResult<T> = Result<Streamed<T>, Error>;

/// What a handler of `Req` may answer with: `Req`'s own ruma response, in memory or streamed.
/// It ties a handler's answer to its request type, so a route cannot answer with another
/// endpoint's response.
pub trait Answer<Req>: IntoResponse {}
impl<Req: IncomingRequest> Answer<Req> for RumaResponse<Req::OutgoingResponse> {}
impl<Req: IncomingRequest> Answer<Req> for Streamed<Req::OutgoingResponse> {}

/// A handler of one ruma endpoint; implemented for every `async fn(State<AppState>,
/// Ruma<Request>) -> ApiResult<Request::OutgoingResponse>` (or
/// `StreamedResult<Request::OutgoingResponse>`).
pub trait RumaHandler<Req> {
    /// Registers the handler for every path (stable and legacy `r0`) of its endpoint.
    fn add_to(
        self,
        router: Router<AppState>,
        limit: BodyLimit,
        lenient: Option<Lenient>,
    ) -> Router<AppState>;
}

impl<Req, F, Fut, A> RumaHandler<Req> for F
where
    Req: IncomingRequest + Send + 'static,
    Req::Authentication: AuthRequirement,
    F: FnOnce(State<AppState>, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<A, Error>> + Send + 'static,
    A: Answer<Req> + 'static,
{
    fn add_to(
        self,
        mut router: Router<AppState>,
        limit: BodyLimit,
        lenient: Option<Lenient>,
    ) -> Router<AppState> {
        let filter =
            MethodFilter::try_from(Req::METHOD).expect("ruma endpoints use standard methods");
        let mut method_router = on(filter, self).layer(axum::Extension(limit));
        if let Some(lenient) = lenient {
            method_router = method_router.layer(axum::Extension(lenient));
        }
        for path in Req::PATH_BUILDER.all_paths() {
            router = router.route(path, method_router.clone());
            // `/pushrules/` and `/pushrules`: clients call both.
            if let Some(trimmed) = path.strip_suffix('/').filter(|p| !p.is_empty()) {
                router = router.route(trimmed, method_router.clone());
            }
            // State events with an empty state key: `/state/{event_type}/` and
            // `/state/{event_type}`.
            if let Some(prefix) = path.strip_suffix("/{state_key}") {
                router = router.route(&format!("{prefix}/"), method_router.clone());
                router = router.route(prefix, method_router.clone());
            }
        }
        router
    }
}

/// `router.ruma(handler)`: registers a [`RumaHandler`].
pub trait RouterExt {
    /// An endpoint whose body may be up to `max_request_size`.
    fn ruma<Req, H: RumaHandler<Req>>(self, handler: H) -> Self;
    /// An endpoint whose body is an event's content (at most 65,536 bytes).
    fn ruma_event<Req, H: RumaHandler<Req>>(self, handler: H) -> Self;
    /// An endpoint whose request `fill_in` completes before ruma reads it.
    fn ruma_lenient<Req, H: RumaHandler<Req>>(self, handler: H, fill_in: Lenient) -> Self;
    /// An endpoint whose body is a file (raw bytes up to `media.max_upload_size`).
    fn ruma_upload<Req, H: RumaHandler<Req>>(self, handler: H) -> Self;
    /// Another server's `/send` transaction (up to `federation.max_transaction_size`).
    fn ruma_transaction<Req, H: RumaHandler<Req>>(self, handler: H) -> Self;
}

impl RouterExt for Router<AppState> {
    fn ruma<Req, H: RumaHandler<Req>>(self, handler: H) -> Self {
        handler.add_to(self, BodyLimit::Request, None)
    }

    fn ruma_event<Req, H: RumaHandler<Req>>(self, handler: H) -> Self {
        handler.add_to(self, BodyLimit::Event, None)
    }

    fn ruma_lenient<Req, H: RumaHandler<Req>>(self, handler: H, fill_in: Lenient) -> Self {
        handler.add_to(self, BodyLimit::Request, Some(fill_in))
    }

    fn ruma_upload<Req, H: RumaHandler<Req>>(self, handler: H) -> Self {
        handler.add_to(self, BodyLimit::Upload, None)
    }

    fn ruma_transaction<Req, H: RumaHandler<Req>>(self, handler: H) -> Self {
        handler.add_to(self, BodyLimit::Transaction, None)
    }
}

async fn unrecognized() -> Error {
    Error::new(
        StatusCode::NOT_FOUND,
        ErrorKind::Unrecognized,
        "Unrecognized request",
    )
}

async fn method_not_allowed(req: Request, next: axum::middleware::Next) -> Response {
    let res = next.run(req).await;
    if res.status() == StatusCode::METHOD_NOT_ALLOWED {
        return Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Unrecognized,
            "Method not allowed",
        )
        .into_response();
    }
    res
}

/// The whole HTTP application.
pub fn router(services: AppState) -> Router {
    let budget = Arc::new(BodyBudget::new(services.config().limits.body_memory_mb));
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([
            http::Method::GET,
            http::Method::POST,
            http::Method::PUT,
            http::Method::DELETE,
            http::Method::OPTIONS,
        ])
        .allow_headers([
            http::header::AUTHORIZATION,
            http::header::CONTENT_TYPE,
            http::header::ACCEPT,
            http::HeaderName::from_static("x-requested-with"),
        ]);
    let routes = federation::routes(client::routes(Router::new()))
        .fallback(unrecognized)
        .layer(axum::middleware::from_fn(method_not_allowed))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::Extension(budget))
        .layer(cors)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(services.clone());
    // Rewritten before routing: an old form of a request becomes the one the routes serve.
    let rewrite = move |req| room_rule_alias(&services, legacy_send(req));
    Router::new().fallback_service(tower::ServiceExt::map_request(routes, rewrite))
}

/// `/pushrules/global/room/{roomAlias}…` (clients that name a room rule by the room's alias)
/// becomes `/pushrules/global/room/{roomId}…` when the alias is known here: a room rule is
/// the room's, however the client named it. Anything else passes unchanged (an unknown alias
/// then fails as an invalid room ID would).
fn room_rule_alias(services: &Services, mut req: Request) -> Request {
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [
        "_matrix",
        "client",
        "r0" | "v3",
        "pushrules",
        "global",
        "room",
        id,
        rest @ ..,
    ] = segments.as_slice()
    else {
        return req;
    };
    let decoded = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
    let Ok(alias) = <&ruma::RoomAliasId>::try_from(decoded.as_ref()) else {
        return req;
    };
    let Ok(Some(room_id)) = services.directory.resolve_alias(alias) else {
        return req;
    };
    let mut new_path = segments[..6].join("/");
    new_path = format!(
        "/{new_path}/{}",
        percent_encoding::utf8_percent_encode(room_id.as_str(), percent_encoding::NON_ALPHANUMERIC)
    );
    for segment in rest {
        new_path.push('/');
        new_path.push_str(segment);
    }
    if let Some(q) = req.uri().query() {
        new_path = format!("{new_path}?{q}");
    }
    if let Ok(uri) = new_path.parse() {
        *req.uri_mut() = uri;
    }
    req
}

/// `POST /rooms/{roomId}/send/{eventType}` (no transaction ID, as old clients send) becomes
/// `PUT .../send/{eventType}/{fresh ID}`: the same send, made idempotent by a new ID.
fn legacy_send(mut req: Request) -> Request {
    if req.method() != http::Method::POST {
        return req;
    }
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is_legacy_send = matches!(
        segments.as_slice(),
        ["_matrix", "client", "r0" | "v3", "rooms", _, "send", _]
    );
    if !is_legacy_send {
        return req;
    }
    let txn = crate::service::core::random_token(12);
    let new_path = match req.uri().query() {
        Some(q) => format!("{path}/{txn}?{q}"),
        None => format!("{path}/{txn}"),
    };
    if let Ok(uri) = new_path.parse() {
        *req.uri_mut() = uri;
        *req.method_mut() = http::Method::PUT;
    }
    req
}

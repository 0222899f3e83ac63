//! The appservice's own HTTP API, called by the homeserver: transactions, ping, and queries.
//!
//! Received events are first written to the [`Store`]'s inbox together with the transaction ID
//! (one atomic write), then acknowledged. A separate loop ([`AppService::run_inbox`]) hands
//! them to the [`Handler`] one at a time, in order, and removes each one only after the handler
//! returned. A repeated transaction ID is acknowledged without queuing anything again, even
//! after a restart.

use std::{future::Future, sync::Arc};

use axum::{
    Json, Router,
    body::{Body, to_bytes},
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::{Registration, store::Store};

/// What an appservice does with what the homeserver sends it.
pub trait Handler: Send + Sync + 'static {
    /// Handles one event (client format, with `room_id`). Called one at a time, in the order
    /// the homeserver sent them. An event is handled again after a crash if this had not
    /// returned yet, so it should tolerate repeats.
    fn handle_event(&self, event: Value) -> impl Future<Output = ()> + Send;

    /// Handles an ephemeral event (typing, receipt, presence). Not persisted.
    fn handle_ephemeral(&self, _event: Value) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Whether the user ID exists on the remote side (`GET /users/{userId}`); the handler
    /// creates the user before answering `true`.
    fn query_user(&self, _user_id: &str) -> impl Future<Output = bool> + Send {
        async { false }
    }

    /// Whether the alias exists on the remote side (`GET /rooms/{alias}`); the handler creates
    /// the room before answering `true`.
    fn query_alias(&self, _alias: &str) -> impl Future<Output = bool> + Send {
        async { false }
    }
}

/// The receiving side of an appservice: an axum router plus the inbox loop.
pub struct AppService<H> {
    inner: Arc<Inner<H>>,
}

impl<H> Clone for AppService<H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<H> {
    hs_token: String,
    store: Arc<Store>,
    handler: Arc<H>,
    wake: Notify,
}

impl<H: Handler> AppService<H> {
    /// An appservice that accepts requests bearing `registration.hs_token`.
    pub fn new(registration: &Registration, store: Arc<Store>, handler: Arc<H>) -> Self {
        Self {
            inner: Arc::new(Inner {
                hs_token: registration.hs_token.clone(),
                store,
                handler,
                wake: Notify::new(),
            }),
        }
    }

    /// The routes of the Application Service API (v1 paths, plus the legacy
    /// `/transactions/{txnId}` path).
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/_matrix/app/v1/transactions/{txn_id}",
                put(transaction::<H>),
            )
            .route("/transactions/{txn_id}", put(transaction::<H>))
            .route("/_matrix/app/v1/ping", post(ping::<H>))
            .route("/_matrix/app/v1/users/{user_id}", get(query_user::<H>))
            .route("/_matrix/app/v1/rooms/{alias}", get(query_alias::<H>))
            .fallback(|| async {
                error(StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "unknown endpoint")
            })
            .with_state(self.clone())
    }

    /// Listens on `listen` and serves [`AppService::router`] in a task of its own (first, so
    /// the homeserver can deliver what it queued while the bridge was down).
    pub async fn spawn_server(
        &self,
        listen: std::net::SocketAddr,
    ) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, crate::Error> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| crate::Error::Io(format!("listening on {listen}"), e))?;
        tracing::info!("appservice API on {listen}");
        let router = self.router();
        Ok(tokio::spawn(
            async move { axum::serve(listener, router).await },
        ))
    }

    /// The whole appservice side of a bridge: serves the API on `listen` (first, so the
    /// homeserver can deliver what it queued meanwhile), runs `setup` until it succeeds,
    /// calls `start` (the bridge's own connections), then hands queued events to the handler.
    /// Returns when the API server stops.
    pub async fn run<S, Fut, E>(
        &self,
        listen: std::net::SocketAddr,
        setup: S,
        start: impl FnOnce(),
    ) -> anyhow::Result<()>
    where
        S: FnMut() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let server = self.spawn_server(listen).await?;
        crate::retry("setting up on the homeserver", setup).await;
        start();
        let inbox = self.clone();
        tokio::spawn(async move { inbox.run_inbox().await });
        match server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("appservice API")),
            Err(e) => Err(anyhow::Error::new(e).context("appservice API task")),
        }
    }

    /// Hands queued events to the handler, in order, forever. Run it as a task beside the
    /// HTTP server; events received before a restart are handled first.
    pub async fn run_inbox(&self) {
        loop {
            loop {
                let next = match self.inner.store.inbox_first() {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::error!("reading the inbox: {e}");
                        None
                    }
                };
                let Some((seq, event)) = next else { break };
                self.inner.handler.handle_event(event).await;
                if let Err(e) = self.inner.store.inbox_done(seq) {
                    tracing::error!("removing event {seq} from the inbox: {e}");
                    break;
                }
            }
            self.inner.wake.notified().await;
        }
    }
}

/// Largest transaction body read: the homeserver sends at most 100 events of at most 64 KiB
/// each (the spec's event size limit) plus ephemeral events, so 16 MiB leaves room; the body is
/// read only after the token is checked.
pub const MAX_TRANSACTION_BYTES: usize = 16 * 1024 * 1024;

fn error(status: StatusCode, errcode: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "errcode": errcode, "error": message })),
    )
        .into_response()
}

/// Checks the homeserver's token: `Authorization: Bearer` or the legacy `access_token` query
/// parameter. Missing: 401 `M_UNAUTHORIZED`; wrong: 403 `M_FORBIDDEN` (spec: "Authorization").
/// Returns the refusal to send, if any.
fn authorize<H>(app: &AppService<H>, headers: &HeaderMap, query: Option<&str>) -> Option<Response> {
    let from_header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let from_query = query.and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
    });
    match from_header.or(from_query) {
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "missing the homeserver token",
        )),
        Some(token) if constant_time_eq(token.as_bytes(), app.inner.hs_token.as_bytes()) => None,
        Some(_) => Some(error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "wrong homeserver token",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn transaction<H: Handler>(
    State(app): State<AppService<H>>,
    Path(txn_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refusal) = authorize(&app, &headers, query.as_deref()) {
        return refusal;
    }
    let Ok(body) = to_bytes(body, MAX_TRANSACTION_BYTES).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "transaction body too large",
        );
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "M_NOT_JSON", "body is not JSON");
    };
    let list = |key: &str| {
        body.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let events = list("events");
    let mut ephemeral = list("ephemeral");
    ephemeral.extend(list("de.sorunome.msc2409.ephemeral"));
    match app.inner.store.accept_transaction(&txn_id, &events) {
        Ok(true) => {
            tracing::debug!(txn_id, events = events.len(), "transaction accepted");
            app.inner.wake.notify_one();
            for event in ephemeral {
                app.inner.handler.handle_ephemeral(event).await;
            }
        }
        Ok(false) => tracing::debug!(txn_id, "transaction already received"),
        Err(e) => {
            tracing::error!("storing transaction {txn_id}: {e}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "storage failed",
            );
        }
    }
    Json(json!({})).into_response()
}

async fn ping<H: Handler>(
    State(app): State<AppService<H>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    authorize(&app, &headers, query.as_deref()).unwrap_or_else(|| Json(json!({})).into_response())
}

async fn query_user<H: Handler>(
    State(app): State<AppService<H>>,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = authorize(&app, &headers, query.as_deref()) {
        return refusal;
    }
    if app.inner.handler.query_user(&user_id).await {
        Json(json!({})).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such user")
    }
}

async fn query_alias<H: Handler>(
    State(app): State<AppService<H>>,
    Path(alias): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = authorize(&app, &headers, query.as_deref()) {
        return refusal;
    }
    if app.inner.handler.query_alias(&alias).await {
        Json(json!({})).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such room alias")
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Mutex, time::Duration};

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Value>>);

    impl Handler for Recorder {
        async fn handle_event(&self, event: Value) {
            self.0.lock().unwrap().push(event);
        }
    }

    struct Running {
        url: String,
        handler: Arc<Recorder>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.tasks.iter().for_each(|t| t.abort());
        }
    }

    fn registration() -> Registration {
        let mut reg = Registration::generate("test", None, "bot", "t_", "localhost");
        reg.hs_token = "the-hs-token".into();
        reg
    }

    async fn start(store: Arc<Store>) -> Running {
        let handler = Arc::new(Recorder::default());
        let app = AppService::new(&registration(), store, handler.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = app.router();
        let serve = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let inbox = tokio::spawn(async move { app.run_inbox().await });
        Running {
            url,
            handler,
            tasks: vec![serve, inbox],
        }
    }

    async fn put(url: &str, token: Option<&str>, txn: &str, body: Value) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .put(format!("{url}/_matrix/app/v1/transactions/{txn}"))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    async fn wait_for(handler: &Recorder, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while handler.0.lock().unwrap().len() < n {
            assert!(tokio::time::Instant::now() < deadline, "events not handled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn wrong_or_missing_hs_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
        let app = start(store).await;
        let body = json!({ "events": [{ "type": "m.room.message" }] });

        let (status, res) = put(&app.url, Some("wrong"), "1", body.clone()).await;
        assert_eq!(
            (status, res["errcode"].as_str()),
            (403, Some("M_FORBIDDEN"))
        );
        let (status, res) = put(&app.url, None, "1", body.clone()).await;
        assert_eq!(
            (status, res["errcode"].as_str()),
            (401, Some("M_UNAUTHORIZED"))
        );

        let res = reqwest::Client::new()
            .post(format!("{}/_matrix/app/v1/ping", app.url))
            .bearer_auth("wrong")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 403);

        // The refused transaction was not recorded: the same ID with the right token is new.
        let (status, _) = put(&app.url, Some("the-hs-token"), "1", body).await;
        assert_eq!(status, 200);
        wait_for(&app.handler, 1).await;
    }

    #[tokio::test]
    async fn a_full_transaction_is_taken_and_a_larger_body_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
        let app = start(store).await;
        // The most a homeserver sends at once: 100 events near the 64 KiB event limit.
        let text = "x".repeat(60_000);
        let events: Vec<Value> = (0..100)
            .map(|n| json!({ "type": "m.room.message", "n": n, "content": { "body": text } }))
            .collect();
        let (status, _) = put(
            &app.url,
            Some("the-hs-token"),
            "big",
            json!({ "events": events }),
        )
        .await;
        assert_eq!(status, 200);
        wait_for(&app.handler, 100).await;

        let huge =
            json!({ "events": [{ "content": { "body": "x".repeat(MAX_TRANSACTION_BYTES) } }] });
        let (status, res) = put(&app.url, Some("the-hs-token"), "huge", huge).await;
        assert_eq!(
            (status, res["errcode"].as_str()),
            (413, Some("M_TOO_LARGE"))
        );
        // Nothing of it was taken: the same ID, sent small, is new.
        let (status, _) = put(
            &app.url,
            Some("the-hs-token"),
            "huge",
            json!({ "events": [{ "n": 100 }] }),
        )
        .await;
        assert_eq!(status, 200);
        wait_for(&app.handler, 101).await;
    }

    #[tokio::test]
    async fn repeated_transaction_is_handled_once_even_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let events = json!({ "events": [{ "n": 1 }, { "n": 2 }] });
        {
            let app = start(Arc::new(Store::open(&path).unwrap())).await;
            for _ in 0..3 {
                let (status, res) =
                    put(&app.url, Some("the-hs-token"), "txn-a", events.clone()).await;
                assert_eq!((status, res), (200, json!({})));
            }
            let (status, _) = put(
                &app.url,
                Some("the-hs-token"),
                "txn-b",
                json!({ "events": [{ "n": 3 }] }),
            )
            .await;
            assert_eq!(status, 200);
            wait_for(&app.handler, 3).await;
            let got = app.handler.0.lock().unwrap().clone();
            assert_eq!(got, vec![json!({"n":1}), json!({"n":2}), json!({"n":3})]);
        }
        // Let the aborted tasks drop their handle on the database before reopening it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let store = loop {
            match Store::open(&path) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "reopen: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let app = start(Arc::new(store)).await;
        let (status, _) = put(&app.url, Some("the-hs-token"), "txn-a", events).await;
        assert_eq!(status, 200);
        let (status, _) = put(
            &app.url,
            Some("the-hs-token"),
            "txn-c",
            json!({ "events": [{ "n": 4 }] }),
        )
        .await;
        assert_eq!(status, 200);
        wait_for(&app.handler, 1).await;
        assert_eq!(app.handler.0.lock().unwrap().clone(), vec![json!({"n":4})]);
    }

    #[tokio::test]
    async fn queries_answer_404_and_bad_json_400() {
        let dir = tempfile::tempdir().unwrap();
        let app = start(Arc::new(Store::open(&dir.path().join("s.redb")).unwrap())).await;
        let client = reqwest::Client::new();
        for path in ["users/@t_x:localhost", "rooms/%23t_x:localhost"] {
            let res = client
                .get(format!("{}/_matrix/app/v1/{path}", app.url))
                .bearer_auth("the-hs-token")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), 404);
        }
        let res = client
            .put(format!("{}/_matrix/app/v1/transactions/x", app.url))
            .bearer_auth("the-hs-token")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 400);
        let res = client
            .post(format!("{}/_matrix/app/v1/ping", app.url))
            .bearer_auth("the-hs-token")
            .json(&json!({ "transaction_id": "p1" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
    }
}

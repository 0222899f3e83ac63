//! The HTTP listener: accepts connections up to a cap and serves HTTP/1.1 on each, with a
//! deadline for every request's headers.
//!
//! A connection over `limits.max_connections` is answered `429 M_LIMIT_EXCEEDED` and closed,
//! never silently dropped. A connection that sends nothing, sends its headers too slowly, or
//! idles between requests is closed after `limits.header_timeout_secs` (hyper's header read
//! timeout runs from the moment the server waits for a request head). HTTP/2 is left to a
//! reverse proxy in front. TLS ends there too, except on a federation listener given a
//! certificate ([`tls_acceptor`]): its handshake must finish within the same header timeout.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::Limits;

const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
Content-Type: application/json\r\n\
Retry-After: 1\r\n\
Connection: close\r\n\
Content-Length: 88\r\n\
\r\n\
{\"errcode\":\"M_LIMIT_EXCEEDED\",\"error\":\"Too many open connections\",\"retry_after_ms\":1000}";

/// A TLS acceptor from a certificate chain and its private key, both PEM files.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("federation.tls_cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "federation.tls_cert {}: no certificate in it",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("federation.tls_key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` (over TLS with `tls`) until `stop` fires, then lets open
/// requests finish (bounded).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    tls: Option<TlsAcceptor>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let header_timeout = Duration::from_secs(limits.header_timeout_secs);
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait a
                    // moment rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        // Answers go out as soon as they are written, not held back by Nagle's algorithm
        // waiting for the client's ACK: a long-polling /sync is woken to send one small answer.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let mut tcp = tcp;
                let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(TOO_MANY)).await;
                let _ = tcp.shutdown().await;
            });
            continue;
        };
        let service = app
            .clone()
            .map_request(move |req: http::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
                req
            });
        let service = TowerToHyperService::new(service);
        match &tls {
            None => {
                let conn = graceful.watch(http1(header_timeout, tcp, service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::trace!("connection ended: {e}");
                    }
                    drop(slot);
                });
            }
            Some(acceptor) => {
                // The handshake runs on the connection's own task, bounded like a request head.
                let handshake = tokio::time::timeout(header_timeout, acceptor.accept(tcp));
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let conn = watcher.watch(http1(header_timeout, stream, service));
                            if let Err(e) = conn.await {
                                tracing::trace!("connection ended: {e}");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake from {addr} failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake from {addr} timed out"),
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("open connections did not finish within 5 s");
    }
    Ok(())
}

/// One HTTP/1.1 connection with the header deadline.
fn http1<IO, S>(
    header_timeout: Duration,
    io: IO,
    service: S,
) -> hyper::server::conn::http1::Connection<TokioIo<IO>, S>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = axum::body::Body>,
{
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
}

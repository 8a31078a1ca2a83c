//! The HTTPS server: TLS ([`tls`]), the routes ([`routes`]), the
//! AdmissionReview codec ([`review`]), what a client may cost ([`limits`],
//! [`body`]) and metrics ([`metrics`]).
//!
//! The accept loop is hyper's connection builder over rustls streams:
//! HTTP/2 or HTTP/1.1 by ALPN, `TCP_NODELAY` (admission answers are small and
//! latency-bound), and graceful shutdown that marks the server unready,
//! stops accepting, and lets in-flight requests finish. Each connection
//! holds one of `max_connections` permits (further clients wait in the
//! listen queue), has the header-read timeout to finish its TLS handshake
//! (run at a lower priority than evaluations, [`handshake`]),
//! to send its first bytes ([`silence`]) and each HTTP/1.1 request's headers
//! (idle keep-alive connections close after it too), and HTTP/2 connections
//! are bounded in streams, header size and resets.

pub mod body;
mod handshake;
pub mod limits;
pub mod metrics;
pub mod readiness;
pub mod reload;
pub mod review;
pub mod routes;
mod silence;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

pub use limits::Limits;
pub use routes::AppState;

/// How long in-flight requests may take to finish on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest HTTP/2 header block: the apiserver sends a few short headers.
const MAX_HEADER_LIST_BYTES: u32 = 64 << 10;

/// HTTP/2 streams a client may reset before the connection is closed
/// (CVE-2023-44487, "rapid reset").
const MAX_PENDING_RESETS: usize = 32;

/// The connection builder with the server's limits.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(MAX_PENDING_RESETS)
        // Dead peers are found and their connections (and permits) freed.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Serves HTTPS on `listener` until `shutdown` completes, then drains.
///
/// # Errors
///
/// When the TLS handshake thread cannot start.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let handshakes = Arc::new(handshake::Handshakes::start()?);
    let service = TowerToHyperService::new(routes::router(state.clone()));
    let builder = builder(&state.limits);
    let header_read_timeout = state.limits.header_read_timeout;
    // One permit per connection being served; dropped when it closes.
    let connections = Arc::new(Semaphore::new(state.limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (permit, (stream, peer)) = tokio::select! {
            accepted = async {
                let permit = connections.clone().acquire_owned().await.expect("never closed");
                (permit, listener.accept().await)
            } => match accepted {
                (permit, Ok(accepted)) => (permit, accepted),
                (_, Err(error)) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handshakes = handshakes.clone();
        let service = service.clone();
        let mut builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let timeout = limits::spread(header_read_timeout);
            builder.http1().header_read_timeout(timeout);
            let Some(tls) = handshakes.accept(acceptor, stream, peer, timeout).await else {
                return;
            };
            let io = TokioIo::new(silence::FirstBytes::new(tls, timeout));
            let connection = builder.serve_connection_with_upgrades(io, service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, "connection ended with an error: {error}");
            }
        });
    }
    state.shutting_down.store(true, Ordering::Release);
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
    }
    Ok(())
}

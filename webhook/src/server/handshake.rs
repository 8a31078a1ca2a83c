//! TLS handshakes on a thread of their own, at a lower CPU priority than
//! the async workers that evaluate admission requests.
//!
//! A handshake costs the server about 100 µs of key exchange and signing.
//! Hundreds of clients connecting at once (slow clients cut off together by
//! their timeout, then reconnecting) would otherwise hold both workers of a
//! small node for tens of milliseconds, in front of admission requests
//! already in progress. Here handshakes take their turns on one thread at
//! nice 10: when the workers want the CPU they get it first, and a burst of
//! handshakes waits instead (within the header-read timeout) while the
//! apiserver's established connections are served. The connection, once
//! encrypted, is served on the workers as before.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Lower than the workers, but not the aside lane's 19: under a full load a
/// new connection still gets about a tenth of a core for its handshake.
const NICE: i32 = 10;

/// The handshake thread's runtime; the thread runs it for the process's
/// life.
pub struct Handshakes {
    runtime: tokio::runtime::Handle,
}

impl Handshakes {
    /// Starts the thread.
    ///
    /// # Errors
    ///
    /// When the thread or its runtime cannot be created.
    pub fn start() -> std::io::Result<Self> {
        // Timers only: the sockets stay registered with the main runtime's
        // I/O driver, which wakes this thread's tasks.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("tollgate-handshakes".into())
            .spawn(move || {
                let me = rustix::thread::gettid();
                if let Err(error) = rustix::process::setpriority_process(Some(me), NICE) {
                    tracing::warn!("cannot lower the TLS handshakes' priority: {error}");
                }
                runtime.block_on(std::future::pending::<()>());
            })?;
        Ok(Handshakes { runtime: handle })
    }

    /// The handshake with `peer`, finished within `timeout`; `None` (logged)
    /// when it failed or ran out of time.
    pub async fn accept(
        &self,
        acceptor: TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Option<TlsStream<TcpStream>> {
        let handshake = self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, acceptor.accept(stream)).await });
        match handshake.await {
            Ok(Ok(Ok(tls))) => Some(tls),
            Ok(Ok(Err(error))) => {
                tracing::debug!(%peer, "TLS handshake failed: {error}");
                None
            }
            Ok(Err(_)) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                None
            }
            Err(error) => {
                tracing::warn!(%peer, "TLS handshake task failed: {error}");
                None
            }
        }
    }
}

//! What every benchmark peer shares: binding with a clear error, and the
//! real `tsoracle-server` in front of a driver until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tsoracle_consensus::ConsensusDriver;

/// Binds a listener whose accepted connections have `TCP_NODELAY` set (they
/// inherit it from the listening socket), as `tsoracle-paxos serve` does:
/// `tsoracle-server`'s `serve_with_listener` leaves Nagle's algorithm on,
/// which stalls small replies for 40 ms behind the client's delayed ACKs.
/// Every driver of the benchmark gets the same socket setup.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    listen().with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Serves tsoracle clients over `driver` until SIGTERM or SIGINT.
pub async fn serve_clients(
    driver: Arc<dyn ConsensusDriver>,
    listener: TcpListener,
    window_ahead_ms: Option<u64>,
) -> Result<()> {
    let mut builder = tsoracle_server::Server::builder().consensus_driver(driver);
    if let Some(ms) = window_ahead_ms {
        builder = builder.window_ahead(Duration::from_millis(ms));
    }
    let server = builder
        .build()
        .context("cannot build the tsoracle server")?;
    tracing::info!(addr = ?listener.local_addr().ok(), "serving");
    server
        .serve_with_listener(listener, shutdown_signal())
        .await
        .context("the tsoracle server failed")
}

/// Resolves at the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}

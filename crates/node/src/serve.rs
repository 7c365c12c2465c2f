//! `tsoracle-paxos serve`: one node until SIGTERM or SIGINT, or until it
//! can no longer serve.

use crate::config::NodeConfig;
use crate::error::Error;
use crate::node::Node;

/// Runs one node until SIGTERM or SIGINT, until a membership change removed
/// it (`Ok`: exit 0), or until it can no longer serve ([`Node::failure`];
/// then `Err`, so the process exits non-zero), and
/// shuts it down in order ([`Node::shutdown`]): client service, driver,
/// peer service, consensus thread (last sync).
pub async fn serve(config: NodeConfig) -> Result<(), Error> {
    // SIGHUP's default action ends the process. A supervisor's reload
    // (systemd's ExecReload) may come while the node still starts (a join
    // or a restore can wait for minutes): from here on the signal is
    // caught (tokio keeps a handler installed once registered), and once
    // the node runs it reloads the certificates.
    if let Err(err) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tracing::warn!(%err, "no SIGHUP handler: a SIGHUP during start-up would end the process");
    }
    // SIGTERM and SIGINT are caught from here on, before the start's first
    // step: a future registers its handler only when first polled, and the
    // start's first poll opens the storage before anything else runs, so a
    // SIGTERM then would take the default action and kill the process.
    let mut signals = ShutdownSignals::new();
    // A joining node may wait minutes for its `member add`: a signal
    // meanwhile ends the start (nothing was written before admission).
    let mut node = tokio::select! {
        node = Node::start(config) => node?,
        signal = signals.recv() => {
            tracing::info!(signal, "stopped before the node started");
            return Ok(());
        }
    };
    let outcome = tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "shutting down");
            Ok(())
        }
        reason = node.failure() => match reason {
            // Not a failure: a supervisor must not restart it.
            Error::Removed { .. } => {
                tracing::info!(%reason, "leaving the cluster");
                Ok(())
            }
            reason => {
                // One line a supervisor's log shows; the exit code says the rest.
                tracing::error!(%reason, "stopping: this node can no longer serve");
                Err(reason)
            }
        }
    };
    let stopped = node.shutdown().await;
    // A failure that stopped the node is the outcome; otherwise how the
    // shutdown went.
    outcome.and(stopped)
}

/// Resolves with the name of the first SIGTERM or SIGINT (also how the
/// test kit's runs notice Ctrl-C). The handlers are installed when this is
/// first polled; [`serve`] installs them before its start instead.
pub async fn shutdown_signal() -> &'static str {
    ShutdownSignals::new().recv().await
}

/// SIGTERM and SIGINT, caught from [`new`](Self::new) on (tokio keeps a
/// handler installed once registered).
struct ShutdownSignals {
    /// `None` when the handlers could not be installed: the node can then
    /// only be killed.
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl ShutdownSignals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Self {
                streams: Some((term, int)),
            },
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(%err, "no SIGTERM/SIGINT handler: the node can only be killed");
                Self { streams: None }
            }
        }
    }

    /// The name of the next SIGTERM or SIGINT.
    async fn recv(&mut self) -> &'static str {
        let Some((term, int)) = self.streams.as_mut() else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

//! Reloads TLS material without a restart, for both ports: the peer port's
//! (the node's certificate, key and cluster CA: inbound handshakes, new
//! outbound links and admin calls use the new files) and the client
//! port's (its certificate, key and client CA). On SIGHUP, and when a file changed (checked every
//! `--tls-reload-secs`). A reload that fails keeps the material in use and
//! logs why; the next signal or change tries again.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tsoracle_paxos_tonic::TlsMaterial;

use crate::client_tls::ClientTls;

/// What a node can reload.
pub(crate) struct Reloadable {
    /// The peer port's material and the node id its certificate must name.
    pub(crate) peer: Option<(TlsMaterial, u64)>,
    /// The client port's certificate, key and client CA.
    pub(crate) client: Option<Arc<ClientTls>>,
}

impl Reloadable {
    fn reload_peer(&self, why: &str) {
        if let Some((tls, node)) = &self.peer {
            match tls.reload(Some(*node)) {
                Ok(()) => tracing::info!(why, "reloaded the peer port's TLS material"),
                Err(err) => tracing::warn!(
                    why,
                    %err,
                    "the peer port's TLS material was not reloaded; the previous one stays in use"
                ),
            }
        }
    }

    fn reload_client(&self, why: &str) {
        if let Some(cert) = &self.client {
            match cert.reload() {
                Ok(()) => tracing::info!(why, "reloaded the client port's TLS files"),
                Err(err) => tracing::warn!(
                    why,
                    %err,
                    "the client port's TLS files were not reloaded; the previous ones stay in use"
                ),
            }
        }
    }
}

/// Watches for SIGHUP and, every `every`, for changed files; reloads what
/// changed (everything on SIGHUP). Runs until aborted. With nothing to
/// reload it still takes SIGHUP, whose default action would end the
/// process: a supervisor's `reload` must never kill a node.
pub(crate) fn spawn(what: Reloadable, every: Option<Duration>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(err) => {
                tracing::warn!(%err, "no SIGHUP handler: TLS files reload only on change");
                None
            }
        };
        let anything = what.peer.is_some() || what.client.is_some();
        let mut ticker = every.filter(|_| anything).map(tokio::time::interval);
        loop {
            tokio::select! {
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(hangup) => hangup.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if !anything {
                        tracing::info!("SIGHUP: no TLS material to reload");
                    }
                    what.reload_peer("SIGHUP");
                    what.reload_client("SIGHUP");
                }
                _ = async {
                    match ticker.as_mut() {
                        Some(ticker) => ticker.tick().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if what.peer.as_ref().is_some_and(|(tls, _)| tls.changed()) {
                        what.reload_peer("the files changed");
                    }
                    if what.client.as_ref().is_some_and(|cert| cert.changed()) {
                        what.reload_client("the files changed");
                    }
                }
            }
        }
    })
}

//! `tsoracle-paxos`: a tsoracle timestamp oracle node on the OmniPaxos
//! driver, as a library and as the `tsoracle-paxos` binary.
//!
//! [`Node::start`] wires one node from a [`NodeConfig`]: RocksDB storage
//! under the data directory, the consensus thread (a `StandaloneHost`), the
//! gRPC peer transport (mutual TLS when configured), the `PaxosDriver`, and
//! a real `tsoracle-server` whose routes sit behind the reply gate, served
//! on the client address with `TCP_NODELAY`; optionally the Prometheus
//! endpoint. Everything that can be refused (the configuration, the TLS
//! files, the listen addresses, the data directory's lock and identity) is
//! checked before anything is written. [`Node::failure`] resolves once the
//! node can no longer serve (its consensus thread failed, a StopSign ended
//! the configuration, the server's leadership watch ended);
//! [`Node::shutdown`] stops it in order: client service, driver, peer
//! service, consensus thread after its last sync.
//!
//! [`serve`] is the `serve` command (a node until SIGTERM or SIGINT, or
//! until it fails), and [`cli`] the whole command line of the binary.
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use tsoracle_paxos::{Error, InitialClusterState, Node, NodeConfig, member};
//!
//! # async fn example() -> Result<(), Error> {
//! let members = vec![
//!     member(1, "10.0.0.1:6001", "10.0.0.1:7001")?,
//!     member(2, "10.0.0.2:6001", "10.0.0.2:7001")?,
//!     member(3, "10.0.0.3:6001", "10.0.0.3:7001")?,
//! ];
//! let mut config = NodeConfig::new(
//!     1,
//!     "prod-tso",
//!     "/var/lib/tsoracle-paxos",
//!     SocketAddr::from(([0, 0, 0, 0], 7001)),
//!     SocketAddr::from(([10, 0, 0, 1], 6001)),
//!     members,
//! );
//! // The founding start of a new cluster; afterwards an empty data
//! // directory is refused (a node that lost its state must not vote).
//! config.initial_cluster_state = InitialClusterState::New;
//! config.tls = Some(tsoracle_paxos::TlsFiles {
//!     ca: "/etc/tsoracle-paxos/ca.pem".into(),
//!     cert: "/etc/tsoracle-paxos/node-1.pem".into(),
//!     key: "/etc/tsoracle-paxos/node-1.key".into(),
//! });
//! let mut node = Node::start(config).await?;
//! tracing::info!(client = %node.client_addr(), "serving");
//! let outcome = tokio::select! {
//!     _ = tokio::signal::ctrl_c() => Ok(()),
//!     reason = node.failure() => Err(reason),
//! };
//! node.shutdown().await?;
//! outcome
//! # }
//! ```

mod admin;
pub mod cli;
mod client_cmd;
mod client_tls;
mod config;
mod disk;
mod error;
mod export;
mod export_cmd;
mod health;
mod http;
mod member_cmd;
mod metrics;
mod next;
mod node;
mod record;
mod reload;
mod serve;
mod status;

pub use client_cmd::ClientTlsArgs;
pub use config::{ClientTlsFiles, DriverSettings, InitialClusterState, NodeConfig, member};
pub use error::Error;
pub use node::{Listeners, Node};
pub use serve::{serve, shutdown_signal};
pub use tsoracle_driver_paxos::{Member, Timing};
pub use tsoracle_paxos_tonic::TlsFiles;
pub use tsoracle_paxos_toolkit::RunnerStatus;

//! gRPC peer transport for OmniPaxos over [tonic].
//!
//! This crate carries the messages of a [`tsoracle_paxos_toolkit::Runner`]
//! between nodes:
//!
//! - [`TonicSink`] is the runner's [`MessageSink`](tsoracle_paxos_toolkit::MessageSink):
//!   one task, one bounded queue and one long-lived gRPC stream per peer.
//!   `send` never blocks; a full queue drops the new batch and counts it.
//! - [`PeerService`] is the inbound side: it checks every link before it
//!   reads a frame, decodes frames, and hands messages to the runner's
//!   [`Inbox`](tsoracle_paxos_toolkit::Inbox); [`serve`] runs it.
//! - [`TlsMaterial`] loads mutual-TLS material from PEM files
//!   ([`TlsFiles`]); node identities follow the `node-<id>` DNS-name
//!   convention described in [`tls`].
//! - [`TransportStats`] counts frames, bytes, refusals and drops by reason.
//!
//! # Wire protocol (version [`PROTOCOL_VERSION`])
//!
//! Service `tsoracle.paxos.peer.v1.PaxosPeer` (see `proto/peer.proto`):
//! `rpc Link(stream Frame) returns (LinkClosed)` carries the messages, and
//! `rpc Held(HeldRequest) returns (HeldReply)` tells a sender how much of a
//! transfer it can skip. Each *directed* link (sender → receiver) is one
//! long-lived client-streaming call, so messages on a link arrive in order,
//! as OmniPaxos needs. The call's request metadata names the cluster, the
//! sender and receiver node ids, the OmniPaxos configuration id and the
//! protocol version ([`config::metadata`] lists the keys); the receiver
//! refuses the link, with a status and a counter, unless all of them match.
//!
//! A `Frame { bytes payload }` carries one batch: a format byte
//! ([`FRAME_FORMAT`], 1) then the postcard encoding of `Vec<Message<T>>`.
//! A batch larger than [`TransportConfig::max_frame_bytes`] (4 MiB by
//! default) is split at message boundaries. tonic's message size limits are
//! set from the same value, so an oversize frame is refused before it is
//! buffered. [`decode_frame`] is the decoder the receiver runs, public for
//! fuzzing.
//!
//! A single message above the frame limit (a catch-up `AcceptSync` with the
//! snapshot of a large state) is a **transfer**, in its place on the link:
//! the sender spools it to disk, sends its body in frame-sized chunks
//! ([`BODY_FORMAT`]) and then its head ([`HEAD_FORMAT`]); the receiver spools
//! the chunks and checks the body's SHA-256 before it decodes. Memory on
//! either end is a chunk, whatever the state's size (up to
//! [`TransportConfig::max_chunked_message_bytes`], 1 GiB by default). After
//! a broken link, the re-sent message continues after the prefix the
//! receiver already holds (asked with `Held`).
//!
//! # Example
//!
//! ```
//! use tsoracle_paxos_tonic::TransportConfig;
//!
//! // Node 1 of a three-node cluster, OmniPaxos configuration 1.
//! let mut config = TransportConfig::new("cluster-a", 1, 1, [1, 2, 3]);
//! config.queue_capacity = 256;
//! config.validate()?;
//! # Ok::<(), tsoracle_paxos_tonic::Error>(())
//! ```
//!
//! Wiring one node: a sink towards its peers, a runner, and the peer server
//! feeding the runner's inbox (here node 1 of three, its peers not started).
//!
//! ```
//! use std::sync::Arc;
//!
//! use omnipaxos::storage::{Entry, NoSnapshot};
//! use omnipaxos::util::LogEntry;
//! use tsoracle_paxos_toolkit::storage::MemoryStorage;
//! use tsoracle_paxos_toolkit::{ConfigBuilder, DecidedHook, Runner, RunnerConfig, SyncedWrites};
//! use tsoracle_paxos_tonic::{PeerService, TonicSink, TransportConfig, serve};
//!
//! #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
//! struct Put(u64);
//! impl Entry for Put {
//!     type Snapshot = NoSnapshot;
//! }
//!
//! struct Count(usize);
//! impl DecidedHook<Put> for Count {
//!     fn next_idx(&self) -> usize {
//!         self.0
//!     }
//!     fn on_decided(
//!         &mut self,
//!         entries: Vec<LogEntry<Put>>,
//!     ) -> Result<Option<usize>, Box<dyn std::error::Error + Send + Sync>> {
//!         self.0 += entries.len();
//!         Ok(None)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! # rt.block_on(async {
//! let config = TransportConfig::new("cluster-a", 1, 1, [1, 2, 3]);
//! let peers = [(2, "127.0.0.1:7002".to_owned()), (3, "127.0.0.1:7003".to_owned())];
//! let sink = Arc::new(TonicSink::spawn(&config, peers, None)?);
//! let omnipaxos = ConfigBuilder::new([1, 2, 3])
//!     .election_ticks(5)
//!     .build(1)?
//!     .build(MemoryStorage::<Put>::new())?;
//! let runner = Runner::spawn(
//!     omnipaxos,
//!     &[1, 2, 3],
//!     Arc::clone(&sink),
//!     SyncedWrites,
//!     Count(0),
//!     RunnerConfig::default(),
//! )?;
//! let service = PeerService::new(runner.inbox(), &config)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = serve(listener, service, &config, None)?;
//! // ... propose through `runner`, watch `sink.stats()` ...
//! server.shutdown().await?;
//! sink.shutdown().await;
//! runner.shutdown().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

pub mod accept;
pub mod config;
mod error;
mod frame;
mod router;
mod server;
mod sink;
mod stats;
pub mod tls;
mod transfer;

/// The generated gRPC types of `proto/peer.proto` (client, server, frames).
///
/// Most users need only [`PeerService`] and [`TonicSink`]; the raw types are
/// public for tests and tools that speak the protocol directly.
// Generated by tonic-prost-build: its items carry no docs of their own and
// some (such as the server's inner service) are public but unreachable.
#[allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
pub mod proto {
    tonic::include_proto!("tsoracle.paxos.peer.v1");
}

pub use config::{
    DEFAULT_MAX_CHUNKED_MESSAGE_BYTES, DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION, TransportConfig,
    node_dns_name,
};
pub use error::Error;
pub use frame::{FRAME_FORMAT, decode_frame, encode_frame};
pub use router::PeerRouter;
pub use server::{PeerService, ServerHandle, serve, serve_with};
pub use sink::TonicSink;
pub use stats::{DropReason, RefusalReason, TransportStats};
pub use tls::{FileStamp, TlsFiles, TlsMaterial, file_stamp};
pub use transfer::{BODY_FORMAT, HEAD_FORMAT};

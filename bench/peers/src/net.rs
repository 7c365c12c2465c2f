//! The openraft peer transport of the benchmark: one small request/response
//! protocol over plain TCP on loopback.
//!
//! The published openraft driver brings no transport (its README says "bring
//! your own `RaftNetworkFactory`"), so the benchmark supplies the simplest one
//! that is not a bottleneck: a frame is `[tag: u8][len: u32 LE][postcard
//! body]`, each call takes an idle connection from a per-peer pool (or opens
//! one) so concurrent RPCs to one peer never queue behind each other, and
//! every connect and call has a deadline. There is no TLS and no peer
//! authentication: it listens on 127.0.0.1 for the benchmark only.

use std::collections::HashMap;
use std::io::{self, Cursor};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, StreamingError, Timeout, Unreachable};
use openraft::errors::ReplicationClosed;
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::{OptionalSend, Raft};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tsoracle_driver_openraft::{
    CapabilitySource, HighWaterStateMachine, NodeCapabilities, OpenraftPeer, TypeConfig,
};

const APPEND: u8 = 1;
const VOTE: u8 = 2;
const SNAPSHOT: u8 = 3;
const CAPABILITIES: u8 = 4;
const OK: u8 = 0;
const FAILED: u8 = 1;

/// Largest frame either side accepts. A snapshot of the benchmark's state
/// machine is a few kilobytes; this only bounds a broken peer.
const MAX_FRAME: usize = 64 << 20;
/// How long a connect may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Deadline of a call when openraft gives none shorter.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per peer.
const POOL: usize = 8;

async fn write_frame(stream: &mut TcpStream, tag: u8, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame too large"))?;
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(tag);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame).await
}

async fn read_frame(stream: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!(
            "frame of {len} bytes is above the {MAX_FRAME} limit"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok((head[0], body))
}

/// Why a call failed, in the terms openraft distinguishes.
#[derive(Debug)]
enum CallError {
    /// No connection could be made: back off.
    Unreachable(String),
    /// The connection broke or the peer answered with an error: retry.
    Network(String),
    /// No answer within the deadline.
    Timeout,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "unreachable: {why}"),
            Self::Network(why) => write!(f, "network: {why}"),
            Self::Timeout => write!(f, "timed out"),
        }
    }
}

/// The peer addresses and a pool of idle connections per peer.
pub struct Peers {
    addrs: HashMap<u64, String>,
    pools: HashMap<u64, Mutex<Vec<TcpStream>>>,
}

impl Peers {
    pub fn new(addrs: HashMap<u64, String>) -> Arc<Self> {
        let pools = addrs
            .keys()
            .map(|&id| (id, Mutex::new(Vec::new())))
            .collect();
        Arc::new(Self { addrs, pools })
    }

    async fn call(
        &self,
        target: u64,
        tag: u8,
        body: &[u8],
        deadline: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let pool = self
            .pools
            .get(&target)
            .ok_or_else(|| CallError::Unreachable(format!("node {target} is not a member")))?;
        let idle = pool.lock().await.pop();
        let mut stream = match idle {
            Some(stream) => stream,
            None => {
                let addr = self.addrs.get(&target).ok_or_else(|| {
                    CallError::Unreachable(format!("no address for node {target}"))
                })?;
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                    .await
                    .map_err(|_| CallError::Unreachable(format!("connect to {addr} timed out")))?
                    .map_err(|err| CallError::Unreachable(format!("connect to {addr}: {err}")))?;
                // Raft messages are small and latency-bound: no Nagle delay.
                let _ = stream.set_nodelay(true);
                stream
            }
        };
        let exchange = async {
            write_frame(&mut stream, tag, body).await?;
            read_frame(&mut stream).await
        };
        let (status, reply) = tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| CallError::Timeout)?
            .map_err(|err| CallError::Network(err.to_string()))?;
        // Only a connection that finished its exchange goes back to the pool;
        // a broken or timed-out one is dropped (closed).
        {
            let mut idle = pool.lock().await;
            if idle.len() < POOL {
                idle.push(stream);
            }
        }
        if status == OK {
            Ok(reply)
        } else {
            Err(CallError::Network(
                String::from_utf8_lossy(&reply).into_owned(),
            ))
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(value).map_err(|err| err.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|err| err.to_string())
}

/// Builds one [`PeerClient`] per target for openraft.
pub struct Factory {
    pub id: u64,
    pub peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, _node: &OpenraftPeer) -> PeerClient {
        PeerClient {
            id: self.id,
            target,
            peers: Arc::clone(&self.peers),
        }
    }
}

/// The RPCs of one node to one target.
pub struct PeerClient {
    id: u64,
    target: u64,
    peers: Arc<Peers>,
}

impl PeerClient {
    fn rpc_error(&self, err: CallError, action: RPCTypes, ttl: Duration) -> RPCError<TypeConfig> {
        match err {
            CallError::Unreachable(why) => RPCError::Unreachable(Unreachable::from_string(why)),
            CallError::Network(why) => RPCError::Network(NetworkError::from_string(why)),
            CallError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.target,
                timeout: ttl,
            }),
        }
    }

    async fn request<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        tag: u8,
        action: RPCTypes,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let ttl = option.hard_ttl().min(CALL_TIMEOUT);
        let body =
            encode(request).map_err(|why| RPCError::Network(NetworkError::from_string(why)))?;
        let reply = self
            .peers
            .call(self.target, tag, &body, ttl)
            .await
            .map_err(|err| self.rpc_error(err, action, ttl))?;
        decode(&reply).map_err(|why| RPCError::Network(NetworkError::from_string(why)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.request(APPEND, RPCTypes::AppendEntries, &rpc, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.request(VOTE, RPCTypes::Vote, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Self::SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let ttl = option.hard_ttl().max(CALL_TIMEOUT);
        let body = encode(&(vote, snapshot.meta, snapshot.snapshot.into_inner()))
            .map_err(|why| StreamingError::Network(NetworkError::from_string(why)))?;
        let call = self.peers.call(self.target, SNAPSHOT, &body, ttl);
        let reply = tokio::select! {
            reply = call => reply,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let reply = reply.map_err(|err| match err {
            CallError::Unreachable(why) => {
                StreamingError::Unreachable(Unreachable::from_string(why))
            }
            CallError::Network(why) => StreamingError::Network(NetworkError::from_string(why)),
            CallError::Timeout => StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id: self.id,
                target: self.target,
                timeout: ttl,
            }),
        })?;
        decode(&reply).map_err(|why| StreamingError::Network(NetworkError::from_string(why)))
    }
}

/// Answers the format-activation gate's capability queries over the same
/// transport.
pub struct Capabilities {
    pub peers: Arc<Peers>,
}

#[async_trait::async_trait]
impl CapabilitySource for Capabilities {
    type Node = OpenraftPeer;

    async fn query(
        &self,
        node_id: u64,
        _member: &OpenraftPeer,
    ) -> Result<NodeCapabilities, String> {
        let reply = self
            .peers
            .call(node_id, CAPABILITIES, &[], CALL_TIMEOUT)
            .await
            .map_err(|err| err.to_string())?;
        let version: u8 = decode(&reply)?;
        Ok(NodeCapabilities::local(version))
    }
}

/// Serves this node's side of the transport until the process ends.
pub fn serve(
    listener: TcpListener,
    raft: Raft<TypeConfig, HighWaterStateMachine>,
    active_write_version: impl Fn() -> u8 + Send + Sync + 'static,
) {
    let active_write_version = Arc::new(active_write_version);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                // Out of descriptors or similar: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let raft = raft.clone();
            let active_write_version = Arc::clone(&active_write_version);
            tokio::spawn(async move {
                while let Ok((tag, body)) = read_frame(&mut stream).await {
                    let answer = handle(&raft, tag, &body, active_write_version.as_ref()).await;
                    let sent = match answer {
                        Ok(reply) => write_frame(&mut stream, OK, &reply).await,
                        Err(why) => write_frame(&mut stream, FAILED, why.as_bytes()).await,
                    };
                    if sent.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

async fn handle(
    raft: &Raft<TypeConfig, HighWaterStateMachine>,
    tag: u8,
    body: &[u8],
    active_write_version: &(dyn Fn() -> u8 + Send + Sync),
) -> Result<Vec<u8>, String> {
    match tag {
        APPEND => {
            let rpc: AppendEntriesRequest<TypeConfig> = decode(body)?;
            let resp = raft
                .append_entries(rpc)
                .await
                .map_err(|err| err.to_string())?;
            encode(&resp)
        }
        VOTE => {
            let rpc: VoteRequest<TypeConfig> = decode(body)?;
            let resp = raft.vote(rpc).await.map_err(|err| err.to_string())?;
            encode(&resp)
        }
        SNAPSHOT => {
            let (vote, meta, data): (VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>, Vec<u8>) =
                decode(body)?;
            let snapshot = SnapshotOf::<TypeConfig, Cursor<Vec<u8>>> {
                meta,
                snapshot: Cursor::new(data),
            };
            let resp = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|err| err.to_string())?;
            encode(&resp)
        }
        CAPABILITIES => encode(&active_write_version()),
        other => Err(format!("unknown request tag {other}")),
    }
}

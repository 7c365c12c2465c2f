//! A tower layer that holds back every `tsoracle-server` reply produced under
//! an epoch this node no longer leads.
//!
//! `tsoracle-server` checks leadership when a request *arrives*. A process
//! that pauses between that check and its reply (SIGSTOP, a debugger, the
//! cgroup freezer, a long stall) resumes with requests already read from its
//! sockets and answers them from its old in-memory window, while a newer
//! leader may have served larger timestamps meanwhile. [`ReplyGateLayer`]
//! wraps the server's routes (`Server::into_router`) and, once a reply has
//! been produced, reads the epoch it carries and asks the driver's
//! [`ReplyGate`] whether this node still holds its lease under that epoch.
//! If not, the reply is replaced by the server's own not-leader answer
//! (`FAILED_PRECONDITION` with a leader-hint trailer), which every
//! `tsoracle-client` call retries elsewhere: a timestamp or dense block
//! granted but never delivered is a harmless gap.
//!
//! Replies without data (errors, `ReleaseLease`) and routes this layer does
//! not know pass unchanged. A reply the layer cannot read (compressed, or not
//! a valid message) is held back too: the gate fails closed.
//!
//! # Wiring
//!
//! ```no_run
//! use std::sync::Arc;
//! use tsoracle_driver_paxos::ReplyGate;
//! use tsoracle_paxos_reply_gate::ReplyGateLayer;
//!
//! # async fn run(
//! #     server: tsoracle_server::Server,
//! #     gate: Arc<dyn ReplyGate>,
//! #     listener: tokio::net::TcpListener,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! // `gate` is `PaxosDriver::reply_gate()` of the driver the server runs on.
//! let (routes, watch) = server.into_router()?;
//! tonic::transport::Server::builder()
//!     .layer(ReplyGateLayer::new(gate))
//!     .add_routes(routes)
//!     .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
//!     .await?;
//! // Keep `watch` alive while serving; stop serving when it finishes.
//! drop(watch);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::metadata::{BinaryMetadataKey, BinaryMetadataValue};
use tower_layer::Layer;
use tower_service::Service;
use tsoracle_core::Epoch;
use tsoracle_driver_paxos::{NotServing, ReplyGate};
use tsoracle_proto::v1 as pb;

/// The gRPC service path prefix of `tsoracle.v1.TsoService`.
const SERVICE_PREFIX: &str = "/tsoracle.v1.TsoService/";

/// Wraps a service (a `tsoracle-server`'s routes) in [`ReplyGateService`].
#[derive(Clone)]
pub struct ReplyGateLayer {
    gate: Arc<dyn ReplyGate>,
}

impl ReplyGateLayer {
    /// A layer asking `gate` (the driver's `reply_gate()`).
    #[must_use]
    pub fn new(gate: Arc<dyn ReplyGate>) -> Self {
        Self { gate }
    }
}

impl<S> Layer<S> for ReplyGateLayer {
    type Service = ReplyGateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReplyGateService {
            inner,
            gate: Arc::clone(&self.gate),
        }
    }
}

/// The gated service: see the crate docs.
#[derive(Clone)]
pub struct ReplyGateService<S> {
    inner: S,
    gate: Arc<dyn ReplyGate>,
}

impl<S, B> Service<http::Request<B>> for ReplyGateService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = Method::from_path(request.uri().path());
        // The clone that was driven to readiness serves this call (tower's
        // usual pattern); the fresh clone waits for the next `poll_ready`.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = Arc::clone(&self.gate);
        Box::pin(async move {
            let response = inner.call(request).await?;
            match method {
                Some(method) => Ok(gate_reply(method, response, gate.as_ref()).await),
                None => Ok(response),
            }
        })
    }
}

/// The methods whose replies carry data, each with where its epoch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    GetTs,
    GetCurrentMaxSafe,
    GetSeq,
    GetSeqBatch,
    AcquireLease,
    RenewLease,
    GetSafeFrontier,
}

impl Method {
    fn from_path(path: &str) -> Option<Self> {
        match path.strip_prefix(SERVICE_PREFIX)? {
            "GetTs" => Some(Self::GetTs),
            "GetCurrentMaxSafe" => Some(Self::GetCurrentMaxSafe),
            "GetSeq" => Some(Self::GetSeq),
            "GetSeqBatch" => Some(Self::GetSeqBatch),
            "AcquireLease" => Some(Self::AcquireLease),
            "RenewLease" => Some(Self::RenewLease),
            "GetSafeFrontier" => Some(Self::GetSafeFrontier),
            // ReleaseLease answers nothing but success; unknown routes are
            // not this layer's business.
            _ => None,
        }
    }

    /// What the reply claims: `None` when it carries no value (a node that
    /// does not serve answers the max-safe and frontier reads with zero
    /// under no epoch), or the epoch it was produced under.
    fn claim(self, message: &[u8]) -> Result<Option<Epoch>, prost::DecodeError> {
        let wire =
            |epoch: Option<pb::EpochWire>| epoch.map_or(Epoch::ZERO, |e| from_wire(e.hi, e.lo));
        let (epoch, carries_value) = match self {
            Self::GetTs => {
                let reply = pb::GetTsResponse::decode(message)?;
                (from_wire(reply.epoch_hi, reply.epoch_lo), true)
            }
            Self::GetCurrentMaxSafe => {
                let reply = pb::GetCurrentMaxSafeResponse::decode(message)?;
                (
                    from_wire(reply.epoch_hi, reply.epoch_lo),
                    reply.max_safe_physical_ms != 0,
                )
            }
            Self::GetSafeFrontier => {
                let reply = pb::GetSafeFrontierResponse::decode(message)?;
                (
                    from_wire(reply.epoch_hi, reply.epoch_lo),
                    reply.frontier_physical_ms != 0,
                )
            }
            Self::GetSeq => (wire(pb::GetSeqResponse::decode(message)?.epoch), true),
            Self::GetSeqBatch => (wire(pb::GetSeqBatchResponse::decode(message)?.epoch), true),
            Self::AcquireLease => (wire(pb::AcquireLeaseResponse::decode(message)?.epoch), true),
            Self::RenewLease => (wire(pb::RenewLeaseResponse::decode(message)?.epoch), true),
        };
        // Zero under no epoch claims nothing; any value under no epoch is
        // checked like the rest (and fails: no node leads under epoch 0).
        Ok((carries_value || epoch != Epoch::ZERO).then_some(epoch))
    }
}

fn from_wire(hi: u64, lo: u64) -> Epoch {
    Epoch::from_wire(hi, lo)
}

/// Checks one produced reply; returns it unchanged or the not-leader answer.
async fn gate_reply(
    method: Method,
    response: http::Response<Body>,
    gate: &dyn ReplyGate,
) -> http::Response<Body> {
    // A trailers-only answer (any error status) carries no data.
    if response.headers().contains_key(Status::GRPC_STATUS) {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The reply is produced already; collecting its one encoded message
    // polls only in-memory frames.
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(status) => return status.into_http(),
    };
    let trailers = collected.trailers().cloned();
    let data = collected.to_bytes();
    let verdict = match read_claim(method, &data, trailers.as_ref()) {
        Ok(None) => Ok(()),
        Ok(Some(epoch)) => gate.check(epoch),
        Err(()) => Err(NotServing {
            leader_endpoint: None,
            leader_epoch: None,
        }),
    };
    match verdict {
        Ok(()) => http::Response::from_parts(parts, rebuild(data, trailers)),
        Err(not_serving) => not_leader(&not_serving).into_http(),
    }
}

/// The claim of a unary reply `[compressed: u8][length: u32 BE][message]`
/// ending with an OK status; `Err` when it cannot be read.
fn read_claim(
    method: Method,
    data: &Bytes,
    trailers: Option<&HeaderMap>,
) -> Result<Option<Epoch>, ()> {
    // A reply whose trailers say it failed carries no value.
    if let Some(status) = trailers.and_then(Status::from_header_map)
        && status.code() != tonic::Code::Ok
    {
        return Ok(None);
    }
    let mut frame = data.clone();
    if frame.remaining() < 5 {
        return Err(());
    }
    let compressed = frame.get_u8();
    let length = usize::try_from(frame.get_u32()).map_err(|_| ())?;
    if compressed != 0 || frame.remaining() != length {
        return Err(());
    }
    method.claim(&frame).map_err(|_| ())
}

fn rebuild(data: Bytes, trailers: Option<HeaderMap>) -> Body {
    let mut frames = vec![Ok::<_, Status>(Frame::data(data))];
    if let Some(trailers) = trailers {
        frames.push(Ok(Frame::trailers(trailers)));
    }
    Body::new(StreamBody::new(futures_util::stream::iter(frames)))
}

/// The answer `tsoracle-server` gives when it does not lead:
/// `FAILED_PRECONDITION` with the leader-hint trailer, which the client
/// follows (or rides out while no leader is known).
fn not_leader(not_serving: &NotServing) -> Status {
    let mut status = Status::failed_precondition("not leader");
    let hint = pb::LeaderHint {
        leader_endpoint: not_serving
            .leader_endpoint
            .as_ref()
            .map(ToString::to_string),
        leader_epoch: not_serving.leader_epoch.map(|epoch| {
            let (hi, lo) = epoch.to_wire();
            pb::EpochWire { hi, lo }
        }),
    };
    if let Ok(key) = BinaryMetadataKey::from_bytes(pb::LEADER_HINT_TRAILER_KEY.as_bytes()) {
        status
            .metadata_mut()
            .insert_bin(key, BinaryMetadataValue::from_bytes(&hint.encode_to_vec()));
    }
    status
}

#[cfg(test)]
mod tests;

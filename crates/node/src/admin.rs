//! The admin service on the peer port: the member list, membership changes
//! and leader moves (`proto/admin.proto`), with the client side the
//! `member` commands and the nodes themselves use.
//!
//! Only an authenticated request may end a configuration: with mutual TLS
//! (the TLS layer already checked the client's chain against the cluster
//! CA), `ChangeMembership` and `MoveLeader` also need a client certificate
//! that names
//! [`ADMIN_DNS_NAME`]; a node's own certificate is not enough, so a
//! compromised member's key cannot reconfigure the cluster. Without TLS the
//! peer port is loopback (or the operator accepted plaintext with
//! `--insecure-peer-plaintext`), and whoever reaches it is trusted, as for
//! the peer transport.

use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tsoracle_consensus::ConsensusError;
use tsoracle_driver_paxos::{
    ChangeError, ChangeFailure, ChangeRequest, HandOverError, PaxosDriver, PaxosHighWaterHost,
    Role, StandaloneHost,
};
use tsoracle_paxos_state::{MemberRecord, Membership};
use tsoracle_paxos_tonic::TlsMaterial;
use tsoracle_paxos_tonic::config::metadata;
use tsoracle_paxos_tonic::tls::{ADMIN_DNS_NAME, certificate_names};
use tsoracle_paxos_toolkit::InstanceId;

use crate::error::Error;
use crate::metrics::Observer;

/// The generated admin service types of `proto/admin.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
pub mod proto {
    tonic::include_proto!("tsoracle.paxos.admin.v1");
}

use proto::paxos_admin_client::PaxosAdminClient;
use proto::paxos_admin_server::{PaxosAdmin, PaxosAdminServer};
use proto::{
    ChangeRequest as WireChange, ExportReply, ExportRequest, Member as WireMember, MembersReply,
    MembersRequest, MoveLeaderReply, MoveLeaderRequest, PeerLink as WirePeerLink, StatusReply,
    StatusRequest,
};

/// How long a change waits for the next configuration unless told.
pub(crate) const DEFAULT_CHANGE_WAIT: Duration = Duration::from_secs(60);

/// How long a leader move waits for the successor unless told.
pub(crate) const DEFAULT_MOVE_WAIT: Duration = Duration::from_secs(5);

/// How long an admin call may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The admin service of one node.
#[derive(Clone)]
pub(crate) struct AdminService {
    cluster_id: String,
    node_id: u64,
    host: Arc<StandaloneHost>,
    driver: Arc<PaxosDriver<StandaloneHost>>,
    /// Mutual TLS is on: changes need the admin certificate.
    check_certificates: bool,
    /// What `Status` reports beyond the host: health, links, identity.
    observer: Arc<Observer>,
    instance: InstanceId,
    incarnation: u64,
}

impl AdminService {
    pub(crate) fn new(
        cluster_id: String,
        node_id: u64,
        host: Arc<StandaloneHost>,
        driver: Arc<PaxosDriver<StandaloneHost>>,
        check_certificates: bool,
        observer: Arc<Observer>,
        (instance, incarnation): (InstanceId, u64),
    ) -> Self {
        Self {
            cluster_id,
            node_id,
            host,
            driver,
            check_certificates,
            observer,
            instance,
            incarnation,
        }
    }

    pub(crate) fn into_server(self) -> PaxosAdminServer<Self> {
        PaxosAdminServer::new(self)
    }

    fn check_cluster<R>(&self, request: &Request<R>) -> Result<(), Status> {
        let named = request
            .metadata()
            .get(metadata::CLUSTER_ID)
            .and_then(|value| value.to_str().ok());
        match named {
            Some(cluster) if cluster == self.cluster_id => Ok(()),
            Some(cluster) => Err(Status::permission_denied(format!(
                "admin request for cluster {cluster:?}, but this node belongs to cluster {:?}",
                self.cluster_id
            ))),
            None => Err(Status::invalid_argument(format!(
                "admin request without the {:?} metadata key",
                metadata::CLUSTER_ID
            ))),
        }
    }

    fn check_admin<R>(&self, request: &Request<R>) -> Result<(), Status> {
        if !self.check_certificates {
            return Ok(());
        }
        let certs = request.peer_certs();
        let Some(leaf) = certs.as_ref().and_then(|certs| certs.first()) else {
            return Err(Status::unauthenticated(
                "mutual TLS is required: present the admin client certificate",
            ));
        };
        if !certificate_names(leaf, ADMIN_DNS_NAME) {
            return Err(Status::permission_denied(format!(
                "membership changes, leader moves and exports need a client certificate that \
                 names {ADMIN_DNS_NAME:?} (signed by the cluster CA); a node certificate is not \
                 enough"
            )));
        }
        Ok(())
    }

    fn members_reply(&self) -> MembersReply {
        let membership = self.host.membership();
        let (mut pending, mut started) = (None, false);
        let configuration = membership.as_ref().map_or(0, Membership::configuration);
        self.host.read_state(&mut |state| {
            pending = state.pending_change().cloned();
            started = state
                .membership()
                .is_some_and(|list| list.configuration() >= configuration);
        });
        let status = self.host.status().borrow().clone();
        MembersReply {
            configuration,
            members: membership.as_ref().map(wire_members).unwrap_or_default(),
            started,
            leader: self
                .host
                .leadership()
                .borrow()
                .leader
                .map_or(0, |(id, _)| id),
            pending: pending.as_ref().map(wire_members).unwrap_or_default(),
            node: self.node_id,
            decided: u64::try_from(status.decided_idx).unwrap_or(u64::MAX),
        }
    }
}

impl AdminService {
    fn status_reply(&self) -> StatusReply {
        let status = self.host.status().borrow().clone();
        let (role, leader) = match self.driver.role() {
            Role::Leader(term) => ("leader", term.leader()),
            Role::Follower(term) => ("follower", term.leader()),
            Role::Unknown => ("unknown", 0),
        };
        let mut high_water = 0;
        self.host
            .read_state(&mut |state| high_water = state.high_water());
        let live = self.observer.live();
        let ready = self.observer.ready();
        let peers = self
            .observer
            .peers()
            .into_iter()
            .map(|link| WirePeerLink {
                id: link.id,
                up: link.up,
                last_heard_ms: link.heard_ago.map(|ago| millis(ago.as_millis())),
                round_trip_us: link.round_trip.map(|rtt| millis(rtt.as_micros())),
            })
            .collect();
        let (live, live_detail) = verdict(live);
        let (ready, ready_detail) = verdict(ready);
        StatusReply {
            node: self.node_id,
            role: role.to_owned(),
            leader,
            ballot: status.promise.n,
            ballot_node: status.promise.pid,
            configuration: self
                .host
                .membership()
                .map_or(0, |list| list.configuration()),
            decided: index(status.decided_idx),
            applied: index(self.host.applied_idx()),
            compacted: index(status.compacted_idx),
            high_water,
            pending: index(self.host.pending()),
            instance: self.instance.to_string(),
            incarnation: self.incarnation,
            live,
            live_detail,
            ready,
            ready_detail,
            peers,
            version: crate::metrics::VERSION.to_owned(),
        }
    }
}

fn verdict(decision: Result<String, String>) -> (bool, String) {
    match decision {
        Ok(what) => (true, what),
        Err(why) => (false, why),
    }
}

fn index(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

fn millis(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl PaxosAdmin for AdminService {
    async fn export(
        &self,
        request: Request<ExportRequest>,
    ) -> Result<Response<ExportReply>, Status> {
        self.check_cluster(&request)?;
        self.check_admin(&request)?;
        let local = request.get_ref().local;
        let document = crate::export::export(
            &self.cluster_id,
            self.node_id,
            &self.host,
            &self.driver,
            local,
        )
        .await
        .map_err(|err| match err {
            ConsensusError::NotLeader { .. } | ConsensusError::Fenced { .. } => {
                Status::failed_precondition(format!(
                    "node {} does not lead; export from the leader: {err}",
                    self.node_id
                ))
            }
            other => Status::unavailable(other.to_string()),
        })?;
        tracing::info!(
            local,
            high_water = document.high_water,
            dense_keys = document.dense.len(),
            leases = document.leases.len(),
            "state exported"
        );
        let document = serde_json::to_vec_pretty(&document)
            .map_err(|err| Status::internal(err.to_string()))?;
        Ok(Response::new(ExportReply { document }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        self.check_cluster(&request)?;
        Ok(Response::new(self.status_reply()))
    }

    async fn members(
        &self,
        request: Request<MembersRequest>,
    ) -> Result<Response<MembersReply>, Status> {
        self.check_cluster(&request)?;
        Ok(Response::new(self.members_reply()))
    }

    async fn change_membership(
        &self,
        request: Request<WireChange>,
    ) -> Result<Response<MembersReply>, Status> {
        self.check_cluster(&request)?;
        self.check_admin(&request)?;
        let change = request.into_inner();
        let wait = match change.wait_ms {
            0 => DEFAULT_CHANGE_WAIT,
            ms => Duration::from_millis(ms),
        };
        let asked = match change.change {
            Some(proto::change_request::Change::Add(member)) => {
                ChangeRequest::Add(record_of(&member).map_err(Status::invalid_argument)?)
            }
            Some(proto::change_request::Change::Remove(id)) => ChangeRequest::Remove(id),
            None => return Err(Status::invalid_argument("the request names no change")),
        };
        tracing::info!(node = self.node_id, change = %asked, "membership change asked");
        match self.driver.change_membership(&asked, wait).await {
            Ok(next) => {
                tracing::info!(node = self.node_id, %next, "membership change done");
                let mut reply = self.members_reply();
                if reply.configuration < next.configuration() {
                    // This node left: answer with the list it left.
                    reply.configuration = next.configuration();
                    reply.members = wire_members(&next);
                }
                Ok(Response::new(reply))
            }
            Err(failure) => Err(status_of(&failure)),
        }
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderReply>, Status> {
        self.check_cluster(&request)?;
        self.check_admin(&request)?;
        let asked = request.into_inner();
        let wait = match asked.wait_ms {
            0 => DEFAULT_MOVE_WAIT,
            ms => Duration::from_millis(ms),
        };
        let to = (asked.to != 0).then_some(asked.to);
        tracing::info!(node = self.node_id, ?to, "leader move asked");
        match self.driver.hand_over(to, wait).await {
            Ok(leader) => {
                tracing::info!(node = self.node_id, leader, "leadership moved");
                Ok(Response::new(MoveLeaderReply { leader }))
            }
            Err(failure) => Err(move_status(&failure)),
        }
    }
}

/// The gRPC status of a failed leader move.
fn move_status(failure: &HandOverError) -> Status {
    let text = failure.to_string();
    match failure {
        HandOverError::NotAMember(_) => Status::invalid_argument(text),
        HandOverError::NotLeader { .. } => Status::failed_precondition(text),
        HandOverError::Unfinished(_) => Status::deadline_exceeded(text),
        _ => Status::unavailable(text),
    }
}

/// The gRPC status of a failed change: a refusal is the caller's to fix,
/// the rest is worth repeating.
fn status_of(failure: &ChangeFailure) -> Status {
    let text = failure.to_string();
    match failure {
        ChangeFailure::Refused(ChangeError::NoMemberList | ChangeError::InProgress { .. }) => {
            Status::failed_precondition(text)
        }
        ChangeFailure::Refused(_) => Status::invalid_argument(text),
        ChangeFailure::NotAgreed(_) | ChangeFailure::NotLeader { .. } => Status::unavailable(text),
        ChangeFailure::Unfinished { .. } => Status::deadline_exceeded(text),
        _ => Status::unknown(text),
    }
}

fn wire_members(membership: &Membership) -> Vec<WireMember> {
    membership
        .members()
        .iter()
        .map(|member| WireMember {
            id: member.id,
            peer: member.peer_address.clone(),
            client: member.client_endpoint.clone(),
        })
        .collect()
}

/// A member record from the wire, its addresses checked.
pub(crate) fn record_of(member: &WireMember) -> Result<MemberRecord, String> {
    let record = crate::config::member(member.id, &member.peer, &member.client)
        .map_err(|err| err.to_string())?;
    Ok(MemberRecord {
        id: record.id,
        peer_address: record.peer_address,
        client_endpoint: record.client_endpoint.as_str().to_owned(),
    })
}

/// The member list of a reply (`None` for a node that runs no list).
pub(crate) fn membership_of(reply: &MembersReply) -> Result<Option<Membership>, String> {
    if reply.configuration == 0 || reply.members.is_empty() {
        return Ok(None);
    }
    let records = reply
        .members
        .iter()
        .map(record_of)
        .collect::<Result<Vec<_>, _>>()?;
    Membership::new(reply.configuration, records)
        .map(Some)
        .map_err(|err| err.to_string())
}

/// An admin client of one node: which node, where, and how to reach it.
#[derive(Clone)]
pub(crate) struct AdminTarget {
    /// The node's id (its TLS server name is `node-<id>`).
    pub(crate) node: u64,
    /// Its peer address, HOST:PORT.
    pub(crate) address: String,
}

impl AdminTarget {
    /// The members of `membership`.
    pub(crate) fn all_of(membership: &Membership) -> Vec<Self> {
        Self::all(
            membership
                .members()
                .iter()
                .map(|m| (m.id, m.peer_address.as_str())),
        )
    }

    /// One target per `(node, peer address)`.
    pub(crate) fn all<'a>(members: impl IntoIterator<Item = (u64, &'a str)>) -> Vec<Self> {
        members
            .into_iter()
            .map(|(node, address)| Self {
                node,
                address: address.to_owned(),
            })
            .collect()
    }
}

/// Connects to `target`'s admin service of cluster `cluster_id`.
pub(crate) async fn connect(
    target: &AdminTarget,
    tls: Option<&TlsMaterial>,
) -> Result<PaxosAdminClient<Channel>, Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", target.address))
        .map_err(|err| Error::Config(format!("bad address {:?}: {err}", target.address)))?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.client_config(target.node))
            .map_err(|err| Error::Tls(err.to_string()))?;
    }
    let channel = endpoint.connect().await.map_err(|err| {
        Error::Client(format!(
            "cannot reach node {} at {}: {err}",
            target.node, target.address
        ))
    })?;
    Ok(PaxosAdminClient::new(channel))
}

/// `message` as a request of cluster `cluster_id`, with a deadline.
pub(crate) fn request<M>(
    cluster_id: &str,
    message: M,
    deadline: Duration,
) -> Result<Request<M>, Error> {
    let mut request = Request::new(message);
    request.set_timeout(deadline);
    let value = MetadataValue::try_from(cluster_id)
        .map_err(|_| Error::Config(format!("cluster id {cluster_id:?} is not ASCII")))?;
    request.metadata_mut().insert(metadata::CLUSTER_ID, value);
    Ok(request)
}

/// The member list `target` runs.
pub(crate) async fn members_of(
    target: &AdminTarget,
    cluster_id: &str,
    tls: Option<&TlsMaterial>,
    deadline: Duration,
) -> Result<MembersReply, Error> {
    let mut client = connect(target, tls).await?;
    client
        .members(request(cluster_id, MembersRequest {}, deadline)?)
        .await
        .map(Response::into_inner)
        .map_err(|status| {
            Error::Client(format!(
                "node {} refused the member list: {}",
                target.node,
                status.message()
            ))
        })
}

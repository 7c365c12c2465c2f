//! Routing links by OmniPaxos configuration: one peer port for every
//! configuration a node runs.
//!
//! A membership change starts a new OmniPaxos instance (configuration id + 1)
//! beside the old one, which lingers so peers that missed its StopSign can
//! still learn it. Both are served on the node's one peer port. Each link
//! names its configuration in its metadata
//! ([`metadata::CONFIGURATION_ID`](crate::config::metadata::CONFIGURATION_ID));
//! the router hands it to that configuration's [`PeerService`] and to no
//! other, so a Prepare of the old configuration can never reach the new
//! instance. A link for a configuration the node does not run (ended and
//! dropped, or not started yet) is refused, counted as
//! [`RefusalReason::ForeignConfiguration`]; its sender retries with backoff.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use omnipaxos::messages::Message;
use omnipaxos::storage::Entry;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::config::metadata;
use crate::proto::paxos_peer_server::{PaxosPeer, PaxosPeerServer};
use crate::proto::{Frame, HeldReply, HeldRequest, LinkClosed};
use crate::server::PeerService;
use crate::stats::{RefusalReason, TransportStats};

/// The peer services of one node, one per OmniPaxos configuration it runs,
/// behind one gRPC service that routes each link by the configuration its
/// metadata names.
///
/// Cheap to clone (shared); [`add`](Self::add) and [`remove`](Self::remove)
/// take effect for links opened afterwards. Serve it with
/// [`serve`](crate::serve).
pub struct PeerRouter<T: Entry> {
    shared: Arc<RouterShared<T>>,
    /// Set by [`serve`](crate::serve): every routed link closes with it.
    closing: Option<watch::Receiver<bool>>,
    check_certificates: bool,
}

impl<T: Entry> Clone for PeerRouter<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            closing: self.closing.clone(),
            check_certificates: self.check_certificates,
        }
    }
}

struct RouterShared<T: Entry> {
    node_id: u64,
    /// Refusals of links no configuration takes.
    stats: Arc<TransportStats>,
    /// Never held across an await: a link clones its service out.
    services: RwLock<BTreeMap<u32, PeerService<T>>>,
    /// The largest gRPC message any configuration accepts.
    max_message_bytes: usize,
}

impl<T> PeerRouter<T>
where
    T: Entry + DeserializeOwned + Send + 'static,
    T::Snapshot: Send,
    Message<T>: DeserializeOwned,
{
    /// A router serving `first`'s configuration; refusals of links that
    /// name no configuration served are counted in `first`'s counters.
    #[must_use]
    pub fn new(first: PeerService<T>) -> Self {
        let shared = RouterShared {
            node_id: first.node_id(),
            stats: Arc::clone(first.stats()),
            max_message_bytes: first.max_message_bytes(),
            services: RwLock::new(BTreeMap::from([(first.configuration_id(), first)])),
        };
        Self {
            shared: Arc::new(shared),
            closing: None,
            check_certificates: false,
        }
    }

    /// Serves `service`'s configuration too (replacing an earlier service
    /// of the same configuration). Its gRPC message limit must not exceed
    /// the first service's: the server's limits are set once.
    pub fn add(&self, service: PeerService<T>) {
        let configuration = service.configuration_id();
        self.services_mut().insert(configuration, service);
        tracing::debug!(
            node = self.shared.node_id,
            configuration,
            "peer links of this configuration are served"
        );
    }

    /// Stops routing new links to `configuration` (links already open run
    /// on until their sender closes them or the server stops).
    pub fn remove(&self, configuration: u32) {
        self.services_mut().remove(&configuration);
    }

    /// The configurations served, in order.
    #[must_use]
    pub fn configurations(&self) -> Vec<u32> {
        self.services().keys().copied().collect()
    }

    /// The counters of refusals that no configuration's service took.
    #[must_use]
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.shared.stats
    }

    /// The tonic service, with its message size limits set from the first
    /// service's frame limit.
    pub fn into_server(self) -> PaxosPeerServer<Self> {
        let limit = self.shared.max_message_bytes;
        PaxosPeerServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    /// This router as [`serve`](crate::serve) runs it: every routed link
    /// closes when `closing` turns true, and checks client certificates
    /// when `check_certificates`.
    pub(crate) fn serving(mut self, closing: watch::Receiver<bool>, check: bool) -> Self {
        self.closing = Some(closing);
        self.check_certificates = check;
        self
    }

    pub(crate) fn node_id(&self) -> u64 {
        self.shared.node_id
    }

    fn services(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, PeerService<T>>> {
        self.shared
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn services_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u32, PeerService<T>>> {
        self.shared
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The service of the configuration `md` names, ready to serve a link.
    fn route(&self, md: &MetadataMap) -> Result<PeerService<T>, Status> {
        let refuse = |reason: RefusalReason, status: Status| {
            self.shared.stats.refuse(reason);
            tracing::warn!(
                node = self.shared.node_id,
                reason = reason.as_str(),
                "refused a peer link: {}",
                status.message()
            );
            status
        };
        let Some(value) = md.get(metadata::CONFIGURATION_ID) else {
            return Err(refuse(
                RefusalReason::MissingMetadata,
                Status::invalid_argument(format!(
                    "missing link metadata {:?}",
                    metadata::CONFIGURATION_ID
                )),
            ));
        };
        let Some(configuration) = value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<u32>().ok())
        else {
            return Err(refuse(
                RefusalReason::GarbledMetadata,
                Status::invalid_argument(format!(
                    "link metadata {:?} is not a configuration id",
                    metadata::CONFIGURATION_ID
                )),
            ));
        };
        let services = self.services();
        match services.get(&configuration) {
            Some(service) => Ok(service.serving(self.closing.clone(), self.check_certificates)),
            None => {
                let served: Vec<u32> = services.keys().copied().collect();
                drop(services);
                Err(refuse(
                    RefusalReason::ForeignConfiguration,
                    Status::failed_precondition(format!(
                        "link for OmniPaxos configuration {configuration}, but this node runs \
                         configuration{} {served:?}",
                        if served.len() == 1 { "" } else { "s" }
                    )),
                ))
            }
        }
    }
}

impl<T> From<PeerService<T>> for PeerRouter<T>
where
    T: Entry + DeserializeOwned + Send + 'static,
    T::Snapshot: Send,
    Message<T>: DeserializeOwned,
{
    fn from(service: PeerService<T>) -> Self {
        Self::new(service)
    }
}

#[tonic::async_trait]
impl<T> PaxosPeer for PeerRouter<T>
where
    T: Entry + DeserializeOwned + Send + 'static,
    T::Snapshot: Send,
    Message<T>: DeserializeOwned,
{
    async fn held(&self, request: Request<HeldRequest>) -> Result<Response<HeldReply>, Status> {
        let service = self.route(request.metadata())?;
        service.held(request).await
    }

    async fn link(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<LinkClosed>, Status> {
        let service = self.route(request.metadata())?;
        service.link(request).await
    }
}

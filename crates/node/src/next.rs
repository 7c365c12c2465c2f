//! How a node starts its instance of a later configuration: RocksDB of its
//! own under `db-<id>/`, a tonic sink whose links name that configuration,
//! and the configuration's peer service added to the node's router (the
//! driver's [`NextConfiguration`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tsoracle_driver_paxos::{NextConfiguration, PaxosApplier};
use tsoracle_paxos_state::{Membership, PaxosEntry};
use tsoracle_paxos_tonic::{
    PeerRouter, PeerService, TlsMaterial, TonicSink, TransportConfig, TransportStats,
};
use tsoracle_paxos_toolkit::omnipaxos::OmniPaxosConfig;
use tsoracle_paxos_toolkit::storage::{RocksdbOptions, RocksdbStorage, StorageIdentity};
use tsoracle_paxos_toolkit::{Inbox, InstanceId, Runner, RunnerConfig};

use crate::admin::{AdminTarget, members_of, membership_of};
use crate::record::{ConfigRecord, db_dir};

/// How long one ask of a peer for a newer configuration may take.
const ASK_DEADLINE: Duration = Duration::from_secs(2);

/// How often peers are asked (the driver asks every 2 s; every ask opens
/// a connection to each peer, so the answer is reused for this long).
const ASK_EVERY: Duration = Duration::from_secs(10);

/// A node's [`NextConfiguration`]: see the module docs.
pub(crate) struct NodeNext {
    pub(crate) data_dir: PathBuf,
    pub(crate) identity: StorageIdentity,
    pub(crate) instance: InstanceId,
    /// The transport settings of the first configuration; a later one
    /// differs in its id and its peers.
    pub(crate) transport: TransportConfig,
    pub(crate) tls: Option<TlsMaterial>,
    pub(crate) router: PeerRouter<PaxosEntry>,
    pub(crate) inbound: Arc<TransportStats>,
    /// The first sink's counters, shared by every later one.
    pub(crate) outbound: Arc<TransportStats>,
    /// The newest list a peer reported, and when the last ask began.
    pub(crate) asked: Arc<Mutex<Asked>>,
    /// Peers to ask when the current list names none reachable.
    pub(crate) seeds: Vec<AdminTarget>,
}

/// What the asks for a newer configuration found so far.
#[derive(Default)]
pub(crate) struct Asked {
    newest: Option<Membership>,
    last: Option<Instant>,
    /// The peers of the newest configuration this node knows.
    peers: Vec<AdminTarget>,
    /// The ask in flight (owned here: aborted when the node stops).
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Asked {
    /// Nothing asked yet; `peers` (the members of the configuration the
    /// node boots) are asked first, then the `--peer` seeds.
    pub(crate) fn knowing(peers: Vec<AdminTarget>) -> Self {
        Self {
            newest: None,
            last: None,
            peers,
            task: None,
        }
    }
}

impl Drop for Asked {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl NodeNext {
    fn transport_for(&self, membership: &Membership) -> TransportConfig {
        let mut transport = self.transport.clone();
        transport.configuration_id = membership.configuration();
        transport.peers = membership.members().iter().map(|m| m.id).collect();
        transport
    }
}

impl NextConfiguration<PaxosEntry> for NodeNext {
    fn spawn(
        &self,
        membership: &Membership,
        config: OmniPaxosConfig,
        hook: PaxosApplier,
        runner: RunnerConfig,
    ) -> Result<Runner<PaxosEntry>, String> {
        let configuration = membership.configuration();
        let dir = db_dir(&self.data_dir, configuration);
        // Reopened when it exists: a node that crashed after starting this
        // configuration must not forget what it promised there.
        let storage = RocksdbStorage::<PaxosEntry>::open(
            &dir,
            self.identity.clone(),
            RocksdbOptions::default(),
        )
        .map_err(|err| format!("cannot open {}: {err}", dir.display()))?;
        let durability = storage.group_commit();
        let omnipaxos = config.build(storage).map_err(|err| err.to_string())?;
        let transport = self.transport_for(membership);
        let peers: Vec<(u64, String)> = membership
            .members()
            .iter()
            .filter(|m| m.id != self.identity.node_id)
            .map(|m| (m.id, m.peer_address.clone()))
            .collect();
        let sink = Arc::new(
            TonicSink::spawn_counting(
                &transport,
                peers,
                self.tls.as_ref(),
                Arc::clone(&self.outbound),
            )
            .map_err(|err| err.to_string())?,
        );
        let ids: Vec<u64> = membership.members().iter().map(|m| m.id).collect();
        tracing::info!(
            node = self.identity.node_id,
            configuration,
            storage = %dir.display(),
            "starting this node's instance of the next configuration"
        );
        Runner::spawn(omnipaxos, &ids, sink, durability, hook, runner)
            .map_err(|err| err.to_string())
    }

    fn attach(&self, membership: &Membership, inbox: Inbox<PaxosEntry>) {
        let transport = self.transport_for(membership);
        match PeerService::counting(inbox, &transport, Arc::clone(&self.inbound)) {
            Ok(service) => self.router.add(service),
            Err(err) => tracing::error!(
                configuration = membership.configuration(),
                %err,
                "cannot serve the next configuration's peer links"
            ),
        }
    }

    fn newer(&self, configuration: u32) -> Option<Membership> {
        let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = asked
            .task
            .as_ref()
            .is_none_or(tokio::task::JoinHandle::is_finished);
        if idle && asked.last.is_none_or(|last| last.elapsed() >= ASK_EVERY) {
            asked.last = Some(Instant::now());
            let mut targets = asked.peers.clone();
            targets.extend(self.seeds.iter().cloned());
            targets.retain(|t| t.node != self.identity.node_id);
            let cluster = self.identity.cluster_id.clone();
            let tls = self.tls.clone();
            let found = Arc::clone(&self.asked);
            // Asked off the follow task: `newer` is called again in a few
            // seconds and then reads what this found.
            asked.task = Some(tokio::spawn(async move {
                for target in targets {
                    let Ok(reply) = members_of(&target, &cluster, tls.as_ref(), ASK_DEADLINE).await
                    else {
                        continue;
                    };
                    let Ok(Some(list)) = membership_of(&reply) else {
                        continue;
                    };
                    let mut asked = found.lock().unwrap_or_else(PoisonError::into_inner);
                    if asked
                        .newest
                        .as_ref()
                        .is_none_or(|newest| newest.configuration() < list.configuration())
                    {
                        asked.peers = AdminTarget::all_of(&list);
                        asked.newest = Some(list);
                    }
                }
            }));
        }
        asked
            .newest
            .clone()
            .filter(|newest| newest.configuration() > configuration)
    }

    fn started(&self, membership: &Membership) {
        let record = ConfigRecord {
            membership: membership.clone(),
            joining: false,
            instance: self.instance,
        };
        match record.store(&self.data_dir) {
            Ok(()) => tracing::info!(
                node = self.identity.node_id,
                configuration = membership.configuration(),
                members = %membership,
                "configuration began on this node; a restart starts it"
            ),
            // The node goes on; a restart boots the previous configuration,
            // finds its StopSign and starts this one again.
            Err(err) => tracing::error!(
                %err,
                "cannot record the configuration this node began; a restart replays the change"
            ),
        }
        let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
        asked.peers = AdminTarget::all_of(membership);
    }
}

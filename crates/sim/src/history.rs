//! The client-visible history of a run, on the virtual clock.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;
use tsoracle_paxos_checker::{History, Op, Outcome};

/// Records operations into one shared [`History`], timed in microseconds of
/// virtual time since the run began.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    origin: Instant,
    history: Arc<Mutex<History>>,
    stale: Arc<Mutex<Vec<StaleServing>>>,
}

/// A server that started serving an epoch its driver no longer led under
/// (beyond the server's reaction time): what epoch fencing prevents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleServing {
    /// The node.
    pub node: u64,
    /// The epoch it started serving.
    pub epoch: u128,
    /// When (virtual µs).
    pub at: u64,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            history: Arc::default(),
            stale: Arc::default(),
        }
    }

    /// Virtual microseconds since the run began.
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records one successful operation.
    pub(crate) fn record(&self, worker: u32, invoked: u64, outcome: Outcome) {
        let completed = self.now_us();
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Op {
                worker,
                invoked,
                completed,
                outcome,
            });
    }

    /// Notes a server that started serving a stale epoch.
    pub(crate) fn stale_serving(&self, node: u64, epoch: u128) {
        let at = self.now_us();
        self.stale
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(StaleServing { node, epoch, at });
    }

    /// Every stale start of serving noted.
    pub(crate) fn stale(&self) -> Vec<StaleServing> {
        self.stale
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether an operation invoked at or after `since` (µs) matches `what`.
    /// Scans back from the newest operation only as far as `since`: each is
    /// recorded at its completion, never before its invocation.
    pub(crate) fn any_invoked_since(&self, since: u64, what: impl Fn(&Op) -> bool) -> bool {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history
            .ops
            .iter()
            .rev()
            .take_while(|op| op.completed >= since)
            .any(|op| op.invoked >= since && what(op))
    }

    /// The history so far.
    pub(crate) fn snapshot(&self) -> History {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

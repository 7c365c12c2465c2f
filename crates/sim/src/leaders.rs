//! Who claimed leadership when: the lease's promise, checked directly.
//!
//! Invariant 5 (`docs/architecture.md`): a deposed leader stops reporting
//! `Leader` before any new leader can serve. Each node's driver publishes its
//! leadership; a monitor records every span of virtual time during which a
//! node reported `Leader`, and [`overlaps`] finds two nodes' spans that
//! intersect (which the lease forbids, whatever the clients happened to
//! observe).
//!
//! It also answers whether a node led under an epoch a moment ago, for the
//! servers' own check: a server may start serving an epoch only while its
//! driver leads under it (or did so within the server's reaction time), which
//! is what epoch fencing guarantees.

use std::sync::{Arc, Mutex, PoisonError};

use omnipaxos::util::NodeId;
use tokio::sync::watch;
use tsoracle_consensus::LeaderState;

use crate::history::Recorder;

/// One node's uninterrupted claim of leadership, in virtual µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderSpan {
    /// The node.
    pub node: NodeId,
    /// The epoch it led under.
    pub epoch: u128,
    /// When it started reporting `Leader`.
    pub start: u64,
    /// When it stopped (or crashed, or the run ended).
    pub end: u64,
}

/// The spans of a run, shared by the per-node monitors.
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaderLog {
    spans: Arc<Mutex<Vec<LeaderSpan>>>,
    /// Every span's start and epoch, open ones included.
    starts: Arc<Mutex<Vec<(u64, u128)>>>,
}

impl LeaderLog {
    fn started(&self, at: u64, epoch: u128) {
        self.starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((at, epoch));
    }

    /// Whether some node started reporting `Leader` under an epoch above
    /// `epoch` at or before `at`: a reply produced under `epoch` at `at` may
    /// then be below what that newer leader served (the reply gate's reason
    /// to be).
    fn newer_leader_by(&self, epoch: u128, at: u64) -> bool {
        self.starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|&(start, e)| e > epoch && start <= at)
    }

    fn push(&self, span: LeaderSpan) {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(span);
    }

    /// Whether a recorded span matches `what`.
    fn any(&self, what: impl Fn(&LeaderSpan) -> bool) -> bool {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(what)
    }

    pub(crate) fn spans(&self) -> Vec<LeaderSpan> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Follows one node's leadership until the watch closes or the task is
    /// aborted; [`Monitor::close`] records a span still open.
    pub(crate) fn monitor(&self, node: NodeId, recorder: Recorder) -> Monitor {
        Monitor {
            log: self.clone(),
            node,
            recorder,
            open: Arc::new(Mutex::new(None)),
            paused: Arc::new(Mutex::new(false)),
        }
    }
}

/// The monitor of one node incarnation.
#[derive(Debug, Clone)]
pub(crate) struct Monitor {
    log: LeaderLog,
    node: NodeId,
    recorder: Recorder,
    /// Start and epoch of the span in progress.
    open: Arc<Mutex<Option<(u64, u128)>>>,
    /// The process is paused: it claims nothing, whatever its stream last
    /// said (no one can ask it).
    paused: Arc<Mutex<bool>>,
}

impl Monitor {
    fn set(&self, leading: Option<u128>) {
        if *self.paused.lock().unwrap_or_else(PoisonError::into_inner) {
            return;
        }
        self.record(leading);
    }

    fn record(&self, leading: Option<u128>) {
        let now = self.recorder.now_us();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((start, epoch)) = *open
            && leading != Some(epoch)
        {
            *open = None;
            self.log.push(LeaderSpan {
                node: self.node,
                epoch,
                start,
                end: now,
            });
        }
        if let (None, Some(epoch)) = (*open, leading) {
            *open = Some((now, epoch));
            self.log.started(now, epoch);
        }
    }

    /// Whether this node leads under `epoch` now, or did until at most
    /// `within` µs ago.
    pub(crate) fn led_lately(&self, epoch: u128, within: u64) -> bool {
        if let Some((_, open)) = *self.open.lock().unwrap_or_else(PoisonError::into_inner)
            && open == epoch
        {
            return true;
        }
        let now = self.recorder.now_us();
        self.log
            .any(|s| s.node == self.node && s.epoch == epoch && s.end.saturating_add(within) >= now)
    }

    /// Whether a newer leader than `epoch` had started by now: a reply under
    /// `epoch` leaving now is stale (see [`LeaderLog::newer_leader_by`]).
    pub(crate) fn superseded(&self, epoch: u128) -> bool {
        self.log.newer_leader_by(epoch, self.recorder.now_us())
    }

    /// Records every change of `events` until it closes.
    pub(crate) async fn run(self, mut events: watch::Receiver<LeaderState>) {
        loop {
            let leading = match *events.borrow_and_update() {
                LeaderState::Leader { epoch } => Some(epoch.0),
                LeaderState::Follower { .. } | LeaderState::Unknown => None,
            };
            self.set(leading);
            if events.changed().await.is_err() {
                self.set(None);
                return;
            }
        }
    }

    /// Ends the span in progress (the node crashed, or the run ended).
    pub(crate) fn close(&self) {
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.set(None);
    }

    /// The process was paused: its claim ends now. Returns the epoch it was
    /// leading under, if any.
    pub(crate) fn pause(&self) -> Option<u128> {
        let epoch = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|(_, epoch)| epoch);
        self.record(None);
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner) = true;
        epoch
    }

    /// The process resumed, leading under `leading` as its lease says *now*
    /// (its stream catches up only when its leadership task next runs).
    pub(crate) fn resume(&self, leading: Option<u128>) {
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.record(leading);
    }
}

/// Pairs of spans of different nodes that intersect.
#[must_use]
pub(crate) fn overlaps(spans: &[LeaderSpan]) -> Vec<(LeaderSpan, LeaderSpan)> {
    let mut sorted = spans.to_vec();
    sorted.sort_by_key(|s| (s.start, s.end, s.node));
    let mut found = Vec::new();
    for (i, a) in sorted.iter().enumerate() {
        for b in &sorted[i + 1..] {
            if b.start >= a.end {
                break;
            }
            if a.node != b.node {
                found.push((*a, *b));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(node: NodeId, start: u64, end: u64) -> LeaderSpan {
        LeaderSpan {
            node,
            epoch: 1,
            start,
            end,
        }
    }

    #[test]
    fn only_spans_of_different_nodes_that_intersect_overlap() {
        let spans = [
            span(1, 0, 10),
            span(2, 10, 20), // touches: fine
            span(1, 15, 16), // inside node 2's span
            span(2, 30, 40),
            span(2, 35, 45), // the same node twice: not an overlap
        ];
        assert_eq!(overlaps(&spans), vec![(span(2, 10, 20), span(1, 15, 16))]);
    }
}

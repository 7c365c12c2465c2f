//! State export and restore: the disaster-recovery path from one cluster
//! to a new one.
//!
//! [`export`] runs on the old cluster's leader: a linearized read (the
//! driver's barrier through the log, `load_high_water`), then the lease set
//! and every dense counter of the state applied past it. Everything the
//! cluster acknowledged before the export began is in the document. A
//! cluster that lost its quorum cannot do that; `export --local` reads one
//! survivor's applied state instead (marked `linearized: false`), which may
//! miss what the lost majority decided, so the operator adds margins
//! ([`Document::add_margins`]).
//!
//! [`restore`] runs on each founding node of the new cluster, started with
//! `serve --restore-from FILE`, before its client service exists: the node
//! that leads raises the high-water to the export's (and to every lease's
//! bound), each dense counter to the exported value, and writes the lease
//! set if the new cluster has none; every node waits until its applied
//! state holds all of it. Only then does the node serve, so no timestamp or
//! dense block of the old cluster is handed out again, provided the old
//! cluster served nothing after the export (stop its clients, or the
//! cluster, first).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::{LeaseRecord, SeqKey};
use tsoracle_driver_paxos::{PaxosDriver, PaxosHighWaterHost, Role, StandaloneHost};

use crate::error::Error;

/// The `format` of an export document.
pub(crate) const FORMAT: &str = "tsoracle-paxos-export";

/// The version of the document layout this build writes and reads.
pub(crate) const VERSION: u32 = 1;

/// How often a restoring node looks again.
const RESTORE_POLL: Duration = Duration::from_millis(100);

/// How often a waiting restore says what it waits for.
const RESTORE_REPORT: Duration = Duration::from_secs(5);

/// What a restore must reach: each dense key's value, and the lease set.
type Targets = (Vec<(SeqKey, u64)>, Vec<LeaseRecord>);

/// The exported state, as written to the file (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    /// Always [`FORMAT`].
    pub(crate) format: String,
    /// The layout version ([`VERSION`]).
    pub(crate) version: u32,
    /// The cluster it was exported from.
    pub(crate) cluster_id: String,
    /// The leader that exported it.
    pub(crate) exported_by: u64,
    /// When, in milliseconds since the Unix epoch (the exporter's clock).
    pub(crate) exported_at_unix_ms: u64,
    /// Whether it was read after a barrier through the log on the leader
    /// (`false`: one node's own applied state, `export --local`).
    pub(crate) linearized: bool,
    /// The exporting node's decided log index when it read the state.
    pub(crate) decided_index: u64,
    /// Milliseconds `export --add-ms` added to the high-water (included in
    /// `high_water`).
    pub(crate) added_ms: u64,
    /// Values `export --add-dense` added to every dense counter (included
    /// in `dense`).
    pub(crate) added_dense: u64,
    /// The replicated high-water.
    pub(crate) high_water: u64,
    /// Each dense key's next value (the next block starts there).
    pub(crate) dense: BTreeMap<String, u64>,
    /// The live lease set.
    pub(crate) leases: Vec<ExportedLease>,
}

/// A lease record, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportedLease {
    pub(crate) lease_id: u64,
    /// The holder key, hex.
    pub(crate) holder: String,
    pub(crate) holder_epoch: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) ts_upper_bound: u64,
    pub(crate) expires_at_ms: u64,
    pub(crate) superseded: bool,
}

impl ExportedLease {
    fn of(record: &LeaseRecord) -> Self {
        Self {
            lease_id: record.lease_id,
            holder: record.holder.iter().map(|b| format!("{b:02x}")).collect(),
            holder_epoch: record.holder_epoch,
            ttl_ms: record.ttl_ms,
            ts_upper_bound: record.ts_upper_bound,
            expires_at_ms: record.expires_at_ms,
            superseded: record.superseded,
        }
    }

    fn record(&self) -> Result<LeaseRecord, String> {
        if !self.holder.len().is_multiple_of(2) {
            return Err(format!("lease {}: holder is not hex", self.lease_id));
        }
        let holder = (0..self.holder.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&self.holder[at..at + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| format!("lease {}: holder is not hex", self.lease_id))?;
        Ok(LeaseRecord {
            lease_id: self.lease_id,
            holder,
            holder_epoch: self.holder_epoch,
            ttl_ms: self.ttl_ms,
            ts_upper_bound: self.ts_upper_bound,
            expires_at_ms: self.expires_at_ms,
            superseded: self.superseded,
        })
    }
}

impl Document {
    /// Adds `ms` to the high-water and `dense` to every dense counter:
    /// room for what the old cluster may have handed out beyond what the
    /// export saw (`export --local`), recorded in the document.
    pub(crate) fn add_margins(&mut self, ms: u64, dense: u64) {
        self.high_water = self.high_water.saturating_add(ms);
        self.added_ms = self.added_ms.saturating_add(ms);
        for value in self.dense.values_mut() {
            *value = value.saturating_add(dense);
        }
        self.added_dense = self.added_dense.saturating_add(dense);
    }

    /// Reads and checks an export file.
    pub(crate) fn read(path: &Path) -> Result<Self, Error> {
        let bad = |why: String| Error::Config(format!("the export file {}: {why}", path.display()));
        let text = std::fs::read(path).map_err(|err| bad(format!("cannot read it: {err}")))?;
        let document: Self =
            serde_json::from_slice(&text).map_err(|err| bad(format!("not an export: {err}")))?;
        if document.format != FORMAT {
            return Err(bad(format!(
                "format {:?}, expected {FORMAT:?}",
                document.format
            )));
        }
        if document.version != VERSION {
            return Err(bad(format!(
                "layout version {}, this build reads version {VERSION}",
                document.version
            )));
        }
        document.targets().map_err(bad)?;
        Ok(document)
    }

    /// The high-water the new cluster must reach: the export's, and every
    /// lease's bound (a holder may stamp up to it).
    pub(crate) fn high_water_floor(&self) -> u64 {
        self.leases
            .iter()
            .map(|lease| lease.ts_upper_bound)
            .fold(self.high_water, u64::max)
    }

    /// The dense keys and the values they must reach, and the lease set.
    fn targets(&self) -> Result<Targets, String> {
        let dense = self
            .dense
            .iter()
            .map(|(key, value)| {
                SeqKey::try_new(key.clone())
                    .map(|key| (key, *value))
                    .map_err(|err| format!("dense key {key:?}: {err}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let leases = self
            .leases
            .iter()
            .map(ExportedLease::record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((dense, leases))
    }
}

/// The state of this node's cluster at a linearized point (only the
/// leader can: a follower answers `NotLeader`), or with `local` this
/// node's own applied state, without the barrier.
pub(crate) async fn export(
    cluster_id: &str,
    node_id: u64,
    host: &StandaloneHost,
    driver: &PaxosDriver<StandaloneHost>,
    local: bool,
) -> Result<Document, tsoracle_consensus::ConsensusError> {
    // The barrier: every write acknowledged before now is applied here
    // once it returns.
    let (high_water, leases) = if local {
        (0, None)
    } else {
        (
            driver.load_high_water().await?,
            Some(driver.load_leases().await?),
        )
    };
    let mut dense = BTreeMap::new();
    let mut applied_high_water = 0;
    let mut applied_leases = Vec::new();
    host.read_state(&mut |state| {
        applied_high_water = state.high_water();
        applied_leases = state
            .leases()
            .iter()
            .cloned()
            .map(LeaseRecord::from)
            .collect();
        dense = state
            .dense_entries()
            .map(|(key, value)| (key.as_str().to_owned(), value))
            .collect();
    });
    let leases = leases.unwrap_or(applied_leases);
    Ok(Document {
        format: FORMAT.to_owned(),
        version: VERSION,
        cluster_id: cluster_id.to_owned(),
        exported_by: node_id,
        exported_at_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            }),
        linearized: !local,
        decided_index: u64::try_from(host.status().borrow().decided_idx).unwrap_or(u64::MAX),
        added_ms: 0,
        added_dense: 0,
        high_water: high_water.max(applied_high_water),
        dense,
        leases: leases.iter().map(ExportedLease::of).collect(),
    })
}

/// What the applied state still lacks of the export: whether the
/// high-water is short, the dense keys below their exported value with
/// their shortfall, and whether the lease set is missing.
struct Shortfall {
    high_water: bool,
    keys: Vec<(SeqKey, u64)>,
    leases: bool,
}

impl Shortfall {
    fn none(&self) -> bool {
        !self.high_water && self.keys.is_empty() && !self.leases
    }
}

fn shortfall(
    host: &StandaloneHost,
    floor: u64,
    dense: &[(SeqKey, u64)],
    leases: &[LeaseRecord],
) -> Shortfall {
    let mut high_water = false;
    let mut leases_missing = false;
    let mut keys = Vec::new();
    host.read_state(&mut |state| {
        high_water = state.high_water() < floor;
        leases_missing = !leases.is_empty() && state.leases().is_empty();
        keys = dense
            .iter()
            .filter_map(|(key, target)| {
                let now = state.dense_value(key);
                (now < *target).then(|| (key.clone(), target - now))
            })
            .collect();
    });
    Shortfall {
        high_water,
        keys,
        leases: leases_missing,
    }
}

/// Whether a failed restore step can never succeed (retrying would only
/// hang the start).
fn permanent(error: &tsoracle_consensus::ConsensusError) -> bool {
    use tsoracle_consensus::ConsensusError as E;
    matches!(
        error,
        E::PermanentDriver(_)
            | E::SeqKeyCardinalityExceeded { .. }
            | E::SeqOverflow
            | E::AdvanceOutOfRange(_)
            | E::DenseUnsupported
            | E::LeasesUnsupported
    )
}

/// Raises this node's cluster to `document` (see the module docs) and
/// returns once this node's applied state holds all of it.
pub(crate) async fn restore(
    document: &Document,
    host: &Arc<StandaloneHost>,
    driver: &Arc<PaxosDriver<StandaloneHost>>,
) -> Result<(), Error> {
    let (dense, leases) = document.targets().map_err(Error::Config)?;
    let floor = document.high_water_floor();
    let started = Instant::now();
    let mut reported = Instant::now();
    tracing::info!(
        from = %document.cluster_id,
        high_water = floor,
        dense_keys = dense.len(),
        leases = leases.len(),
        "restoring the exported state before serving"
    );
    let mut last_error = None;
    loop {
        // Judged only on a state rebuilt up to what this node knows is
        // decided (a restart replays its log first): a leader that raised
        // on a state still being rebuilt would add the counts twice.
        let caught_up = host.applied_idx() >= host.status().borrow().decided_idx;
        let short = shortfall(host, floor, &dense, &leases);
        if caught_up && short.none() {
            break;
        }
        if caught_up && let Role::Leader(term) = driver.role() {
            match raise(driver, term.epoch(), floor, &short, &leases).await {
                Ok(()) => {}
                Err(err) if permanent(&err) => {
                    return Err(Error::Config(format!(
                        "the export cannot be restored into this cluster: {err} (a dense key \
                         cap, --dense-key-cap, below the export's key count is one cause)"
                    )));
                }
                // A leadership that moved or a quorum not there yet: look
                // again, and say it in the next report.
                Err(err) => last_error = Some(err.to_string()),
            }
        }
        if reported.elapsed() >= RESTORE_REPORT {
            tracing::warn!(
                waited = ?started.elapsed(),
                high_water_short = short.high_water,
                dense_keys_short = short.keys.len(),
                leases_missing = short.leases,
                last_error = last_error.as_deref().unwrap_or("none"),
                "still waiting for the exported state to be restored (every founding node needs \
                 --restore-from; the one that leads writes it)"
            );
            reported = Instant::now();
        }
        tokio::time::sleep(RESTORE_POLL).await;
    }
    tracing::info!(elapsed = ?started.elapsed(), "the exported state is restored");
    Ok(())
}

/// One leader's attempt: the high-water, each short dense key, and the
/// lease set when the new cluster has none.
async fn raise(
    driver: &PaxosDriver<StandaloneHost>,
    epoch: tsoracle_core::Epoch,
    floor: u64,
    short: &Shortfall,
    leases: &[LeaseRecord],
) -> Result<(), tsoracle_consensus::ConsensusError> {
    if short.high_water {
        driver.persist_high_water(floor, epoch).await?;
    }
    for (key, missing) in &short.keys {
        // A fetch-add of at most u32::MAX at a time; the next look adds
        // the rest.
        let step = u32::try_from(*missing).unwrap_or(u32::MAX);
        driver.advance_dense(key, step, epoch).await?;
    }
    if short.leases && driver.load_leases().await?.is_empty() {
        driver.persist_leases(leases, epoch).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Document {
        Document {
            format: FORMAT.to_owned(),
            version: VERSION,
            cluster_id: "old".to_owned(),
            exported_by: 1,
            exported_at_unix_ms: 1,
            linearized: true,
            decided_index: 10,
            added_ms: 0,
            added_dense: 0,
            high_water: 1000,
            dense: BTreeMap::from([("orders".to_owned(), 42)]),
            leases: vec![ExportedLease {
                lease_id: 7,
                holder: "0aff".to_owned(),
                holder_epoch: 1,
                ttl_ms: 100,
                ts_upper_bound: 1500,
                expires_at_ms: 2000,
                superseded: false,
            }],
        }
    }

    #[test]
    fn a_document_round_trips_and_its_floor_covers_every_lease() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.json");
        std::fs::write(&path, serde_json::to_vec(&document()).unwrap()).unwrap();
        let read = Document::read(&path).unwrap();
        assert_eq!(read, document());
        assert_eq!(read.high_water_floor(), 1500);
        let (dense, leases) = read.targets().unwrap();
        assert_eq!(dense[0].1, 42);
        assert_eq!(leases[0].holder, vec![0x0a, 0xff]);
    }

    #[test]
    fn margins_raise_the_high_water_and_every_counter_and_are_recorded() {
        let mut margined = document();
        margined.add_margins(60_000, 1_000);
        assert_eq!(margined.high_water, 61_000);
        assert_eq!(margined.dense["orders"], 1_042);
        assert_eq!((margined.added_ms, margined.added_dense), (60_000, 1_000));
        // The lease bound is below the raised high-water now.
        assert_eq!(margined.high_water_floor(), 61_000);
    }

    #[test]
    fn another_format_version_or_a_bad_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.json");
        let refused = |document: &Document| {
            std::fs::write(&path, serde_json::to_vec(document).unwrap()).unwrap();
            Document::read(&path).unwrap_err().to_string()
        };
        let mut other = document();
        other.version = 2;
        assert!(refused(&other).contains("layout version 2"));
        let mut other = document();
        other.format = "something".to_owned();
        assert!(refused(&other).contains("format"));
        let mut other = document();
        other.dense.insert(String::new(), 1);
        assert!(refused(&other).contains("dense key"));
        let mut other = document();
        other.leases[0].holder = "zz".to_owned();
        assert!(refused(&other).contains("holder is not hex"));
        std::fs::write(&path, b"{}").unwrap();
        assert!(
            Document::read(&path)
                .unwrap_err()
                .to_string()
                .contains("not an export")
        );
    }
}

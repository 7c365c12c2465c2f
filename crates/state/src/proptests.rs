//! Property tests of the fold, the snapshot and the codecs.
//!
//! They live in the crate (not in `tests/`) to build base states that a short
//! fold cannot reach, such as dense counters next to `u64::MAX`.

use std::collections::BTreeMap;

use omnipaxos::storage::Snapshot;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use tsoracle_core::{Epoch, SeqKey};

use crate::{
    ApplyState, Command, Lease, MemberRecord, Membership, Outcome, PaxosEntry, PaxosSnapshot,
    ProposalId,
};

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn key(i: usize) -> SeqKey {
    SeqKey::try_new(KEYS[i % KEYS.len()]).unwrap()
}

fn lease(id: u64) -> Lease {
    Lease {
        lease_id: id,
        holder: vec![u8::try_from(id % 3).unwrap() + 1],
        holder_epoch: id,
        ttl_ms: 5_000,
        ts_upper_bound: id * 10,
        expires_at_ms: 10_000 + id,
        superseded: id.is_multiple_of(2),
    }
}

/// How a step picks its proposal id relative to its node's last one.
#[derive(Clone, Debug)]
enum IdMode {
    Next,
    /// Reuse the last id: a replay.
    Repeat,
    /// An older id: out of order, must be a duplicate.
    Back(u64),
    /// The node restarted with a new incarnation.
    Restart,
}

/// How a step picks its epoch relative to the newest leader's.
#[derive(Clone, Debug)]
enum EpochMode {
    Same,
    /// A new leader.
    Bump,
    /// A deposed leader's late proposal.
    Stale(u128),
}

#[derive(Clone, Debug)]
enum Kind {
    Advance(u64),
    Barrier,
    Dense(Vec<(usize, u32)>, u64),
    Leases(Vec<u64>),
    /// A member registers one of a few instances.
    Register(u128),
    /// A node records one of two member lists.
    Members(bool),
    /// The leader agrees on one of two next lists.
    Change(bool),
    /// A member proposes a genesis (it starts only a pristine log).
    Genesis,
}

#[derive(Clone, Debug)]
struct Step {
    node: u64,
    id: IdMode,
    epoch: EpochMode,
    kind: Kind,
}

fn step() -> impl Strategy<Value = Step> {
    let id = prop_oneof![
        14 => Just(IdMode::Next),
        1 => Just(IdMode::Repeat),
        1 => (1..4u64).prop_map(IdMode::Back),
        1 => Just(IdMode::Restart),
    ];
    let epoch = prop_oneof![
        10 => Just(EpochMode::Same),
        2 => Just(EpochMode::Bump),
        2 => (1..3u128).prop_map(EpochMode::Stale),
    ];
    let count = prop_oneof![7 => 0..=10u32, 2 => Just(u32::MAX), 1 => any::<u32>()];
    let kind = prop_oneof![
        3 => prop_oneof![9 => 0..1_000u64, 1 => any::<u64>()].prop_map(Kind::Advance),
        1 => Just(Kind::Barrier),
        4 => (vec((0..KEYS.len(), count), 1..=3), prop_oneof![4 => 0..=4u64, 1 => Just(100u64)])
            .prop_map(|(entries, cap)| Kind::Dense(entries, cap)),
        2 => vec(0..5u64, 0..=2).prop_map(Kind::Leases),
        1 => (0..3u128).prop_map(Kind::Register),
        1 => any::<bool>().prop_map(Kind::Members),
        1 => any::<bool>().prop_map(Kind::Change),
        1 => Just(Kind::Genesis),
    ];
    (1..=3u64, id, epoch, kind).prop_map(|(node, id, epoch, kind)| Step {
        node,
        id,
        epoch,
        kind,
    })
}

/// Turns steps into commands: per-node proposal counters and a leader epoch
/// that mostly climbs, with replays, reordering, restarts and stale epochs.
fn build(steps: &[Step]) -> Vec<Command> {
    let mut ids: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut leader_epoch: u128 = 1;
    steps
        .iter()
        .map(|step| {
            let (inc, seq) = ids.entry(step.node).or_insert((0, 0));
            let (incarnation, seq) = match step.id {
                IdMode::Next => {
                    *seq += 1;
                    (*inc, *seq)
                }
                IdMode::Repeat => (*inc, *seq),
                IdMode::Back(d) => (*inc, seq.saturating_sub(d)),
                IdMode::Restart => {
                    *inc += 1;
                    *seq = 0;
                    (*inc, 0)
                }
            };
            let proposal = ProposalId::new(step.node, incarnation, seq);
            let epoch = Epoch(match step.epoch {
                EpochMode::Same => leader_epoch,
                EpochMode::Bump => {
                    leader_epoch += 1;
                    leader_epoch
                }
                EpochMode::Stale(d) => leader_epoch.saturating_sub(d),
            });
            match &step.kind {
                Kind::Advance(at_least) => Command::Advance {
                    at_least: *at_least,
                    epoch,
                    proposal,
                },
                Kind::Barrier => Command::Barrier { epoch, proposal },
                Kind::Dense(entries, key_cap) => Command::DenseAdvance {
                    entries: entries.iter().map(|(k, c)| (key(*k), *c)).collect(),
                    key_cap: *key_cap,
                    epoch,
                    proposal,
                },
                Kind::Leases(ids) => Command::ReplaceLeases {
                    leases: ids.iter().copied().map(lease).collect(),
                    epoch,
                    proposal,
                },
                Kind::Register(instance) => Command::Register {
                    node: step.node,
                    instance: *instance,
                    epoch,
                    proposal,
                },
                Kind::Members(edited) => Command::RecordMembership {
                    membership: members(*edited),
                    epoch,
                    proposal,
                },
                Kind::Change(shrink) => Command::PrepareChange {
                    next: next_members(*shrink),
                    epoch,
                    proposal,
                },
                Kind::Genesis => Command::Genesis {
                    prior: Box::new(PaxosSnapshot::from_state(
                        crate::apply::tests::changing_three_to_four(),
                    )),
                    epoch,
                    proposal,
                },
            }
        })
        .collect()
}

/// The founding list of three, or one with node 3's address edited.
fn members(edited: bool) -> Membership {
    let member = |id: u64| MemberRecord {
        id,
        peer_address: format!("10.0.0.{id}:6001"),
        client_endpoint: format!("http://10.0.0.{id}:7001"),
    };
    let mut list = vec![member(1), member(2), member(3)];
    if edited {
        list[2].peer_address = "10.0.0.9:6001".to_owned();
    }
    // Three distinct ids: never refused.
    Membership::new(1, list).unwrap()
}

/// Configuration 2: node 4 added, or node 3 removed.
fn next_members(shrink: bool) -> Membership {
    let mut list = members(false).members().to_vec();
    if shrink {
        list.pop();
    } else {
        list.push(MemberRecord {
            id: 4,
            peer_address: "10.0.0.4:6001".to_owned(),
            client_endpoint: "http://10.0.0.4:7001".to_owned(),
        });
    }
    Membership::new(2, list).unwrap()
}

fn commands() -> impl Strategy<Value = Vec<Command>> {
    vec(step(), 0..40).prop_map(|steps| build(&steps))
}

/// A state to start from: often empty, otherwise with counters that may sit
/// right below `u64::MAX` so overflow is reachable.
fn base_state() -> impl Strategy<Value = ApplyState> {
    let counter = prop_oneof![
        2 => 0..100u64,
        1 => (0..20u64).prop_map(|d| u64::MAX - d),
        1 => (0..=2 * u64::from(u32::MAX)).prop_map(|d| u64::MAX - d),
    ];
    let parts = (
        prop_oneof![0..1_000u64, any::<u64>()],
        vec((0..KEYS.len(), counter), 0..=3),
        vec(0..5u64, 0..=2),
        0..=2u128,
        vec((1..=3u64, 0..=1u64, 0..=3u64), 0..=3),
        0..=10u64,
    )
        .prop_map(|(hw, dense, leases, epoch, ledger, applied)| {
            ApplyState::from_parts(
                hw,
                dense.into_iter().map(|(k, v)| (key(k), v)).collect(),
                leases.into_iter().map(lease).collect(),
                Epoch(epoch),
                ledger.into_iter().map(|(n, i, s)| (n, (i, s))).collect(),
                applied,
            )
        });
    prop_oneof![1 => Just(ApplyState::default()), 2 => parts]
}

fn fold(base: &ApplyState, commands: &[Command]) -> (ApplyState, Vec<Outcome>) {
    let mut state = base.clone();
    let outcomes = commands.iter().map(|c| state.apply(c)).collect();
    (state, outcomes)
}

fn create(commands: &[Command]) -> PaxosSnapshot {
    let entries: Vec<PaxosEntry> = commands.iter().cloned().map(PaxosEntry).collect();
    <PaxosSnapshot as Snapshot<PaxosEntry>>::create(&entries)
}

fn split_points(len: usize, picks: &[Index]) -> Vec<usize> {
    let mut points: Vec<usize> = picks.iter().map(|i| i.index(len + 1)).collect();
    points.push(0);
    points.push(len);
    points.sort_unstable();
    points
}

fn dense_map(state: &ApplyState) -> BTreeMap<SeqKey, u64> {
    state.dense_entries().map(|(k, v)| (k.clone(), v)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) Same commands from the same state: same state, same outcomes, also
    /// after the commands went through their byte encoding (as on a replica).
    #[test]
    fn folding_is_deterministic(base in base_state(), cmds in commands()) {
        let (s1, o1) = fold(&base, &cmds);
        let (s2, o2) = fold(&base, &cmds.clone());
        prop_assert_eq!(&s1, &s2);
        prop_assert_eq!(&o1, &o2);
        let decoded: Vec<Command> = cmds
            .iter()
            .map(|c| PaxosEntry::from_bytes(&PaxosEntry(c.clone()).to_bytes().unwrap()).unwrap().0)
            .collect();
        let (s3, o3) = fold(&base, &decoded);
        prop_assert_eq!(&s1, &s3);
        prop_assert_eq!(&o1, &o3);
    }

    /// (b) Snapshots made by `create` over consecutive slices, merged in log
    /// order (through bytes or not), give exactly the folded state.
    #[test]
    fn merged_snapshots_equal_the_fold(
        base in base_state(),
        cmds in commands(),
        picks in vec(any::<Index>(), 0..4),
        first_unmerged in any::<bool>(),
        through_bytes in any::<bool>(),
    ) {
        let (expected, _) = fold(&base, &cmds);
        let points = split_points(cmds.len(), &picks);
        let first = &cmds[points[0]..points[1]];
        // OmniPaxos stores a fresh log's first snapshot as `create` alone.
        let mut snapshot = if first_unmerged && base == ApplyState::default() {
            create(first)
        } else {
            let mut s = PaxosSnapshot::from_state(base.clone());
            s.merge(create(first));
            s
        };
        for window in points[1..].windows(2) {
            if through_bytes {
                snapshot = PaxosSnapshot::from_bytes(&snapshot.to_bytes().unwrap()).unwrap();
            }
            snapshot.merge(create(&cmds[window[0]..window[1]]));
        }
        prop_assert_eq!(snapshot.to_state(), expected.clone());
        prop_assert_eq!(snapshot.into_state(), expected);
    }

    /// (b) Merging a full snapshot of a later point (as a lagging node might)
    /// then the rest also gives exactly the folded state.
    #[test]
    fn merging_a_later_full_snapshot_is_exact(
        base in base_state(),
        cmds in commands(),
        picks in vec(any::<Index>(), 2),
    ) {
        let (expected, _) = fold(&base, &cmds);
        let points = split_points(cmds.len(), &picks);
        let (k1, k2) = (points[1], points[2]);
        let mut early = PaxosSnapshot::from_state(base.clone());
        early.merge(create(&cmds[..k1]));
        let (later, _) = fold(&base, &cmds[..k2]);
        early.merge(PaxosSnapshot::from_state(later));
        early.merge(create(&cmds[k2..]));
        prop_assert_eq!(early.into_state(), expected);
    }

    /// (c) The high-water never goes down, and an Advance reports the new value.
    #[test]
    fn high_water_never_regresses(base in base_state(), cmds in commands()) {
        let mut state = base;
        for cmd in &cmds {
            let before = state.high_water();
            let outcome = state.apply(cmd);
            prop_assert!(state.high_water() >= before);
            if let (Command::Advance { at_least, .. }, Outcome::HighWater(v)) = (cmd, &outcome) {
                prop_assert!(*v >= *at_least);
                prop_assert_eq!(*v, state.high_water());
            }
        }
    }

    /// (d) Dense blocks handed out never overlap, and every counter stays at
    /// or above the end of every block handed out for its key.
    #[test]
    fn dense_blocks_never_overlap(base in base_state(), cmds in commands()) {
        let mut state = base;
        let mut blocks: BTreeMap<SeqKey, Vec<(u64, u64)>> = BTreeMap::new();
        for cmd in &cmds {
            let outcome = state.apply(cmd);
            if let (Command::DenseAdvance { entries, .. }, Outcome::Dense(Ok(starts))) = (cmd, &outcome) {
                prop_assert_eq!(starts.len(), entries.len());
                for ((key, count), start) in entries.iter().zip(starts) {
                    if *count > 0 {
                        let end = start.checked_add(u64::from(*count));
                        prop_assert!(end.is_some(), "block past u64::MAX");
                        blocks.entry(key.clone()).or_default().push((*start, end.unwrap()));
                    }
                }
            }
        }
        for (key, mut list) in blocks {
            list.sort_unstable();
            for pair in list.windows(2) {
                prop_assert!(pair[0].1 <= pair[1].0, "overlap on {:?}: {:?}", key, pair);
            }
            let last_end = list.last().map_or(0, |b| b.1);
            prop_assert!(state.dense_value(&key) >= last_end);
        }
    }

    /// (e) A rejected (or duplicate) batch changes no key; an accepted one
    /// advances exactly its keys by their counts.
    #[test]
    fn dense_batches_are_all_or_nothing(base in base_state(), cmds in commands()) {
        let mut state = base;
        for cmd in &cmds {
            let before = dense_map(&state);
            let before_leases = state.leases().to_vec();
            let outcome = state.apply(cmd);
            let after = dense_map(&state);
            match (cmd, &outcome) {
                (Command::DenseAdvance { entries, .. }, Outcome::Dense(Ok(_))) => {
                    let mut expected = before.clone();
                    for (key, count) in entries {
                        if *count > 0 {
                            *expected.entry(key.clone()).or_insert(0) += u64::from(*count);
                        }
                    }
                    prop_assert_eq!(after, expected);
                }
                // A genesis starts a pristine log from the carried state.
                (Command::Genesis { prior, .. }, Outcome::Genesis(Ok(_))) => {
                    prop_assert_eq!(after, dense_map(&prior.to_state()));
                }
                (_, Outcome::Leases(Err(_))) => {
                    prop_assert_eq!(after, before);
                    prop_assert_eq!(state.leases(), before_leases.as_slice());
                }
                _ => prop_assert_eq!(after, before),
            }
        }
    }

    /// Every command and snapshot survives its byte encoding.
    #[test]
    fn codecs_round_trip(base in base_state(), cmds in commands()) {
        for cmd in &cmds {
            let entry = PaxosEntry(cmd.clone());
            prop_assert_eq!(PaxosEntry::from_bytes(&entry.to_bytes().unwrap()).unwrap(), entry);
        }
        let mut snapshot = PaxosSnapshot::from_state(base);
        snapshot.merge(create(&cmds));
        let with_tail = {
            let mut s = PaxosSnapshot::from_state(snapshot.to_state());
            s.merge(create(&cmds));
            s
        };
        for s in [snapshot, with_tail, create(&cmds)] {
            prop_assert_eq!(PaxosSnapshot::from_bytes(&s.to_bytes().unwrap()).unwrap(), s);
        }
    }

    /// Decoders never panic on arbitrary bytes (a cheap stand-in for the fuzzer).
    #[test]
    fn decoders_never_panic(mut bytes in vec(any::<u8>(), 0..64), version_first in any::<bool>()) {
        if version_first && !bytes.is_empty() {
            bytes[0] = 1;
        }
        let _ = PaxosEntry::from_bytes(&bytes);
        let _ = PaxosSnapshot::from_bytes(&bytes);
    }
}

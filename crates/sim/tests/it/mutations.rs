//! Each guard the simulation checks is needed: removing it (a test-only
//! mutation switch) makes some seed fail within the CI seed budget, while the
//! same seeds pass with every guard in place (see `seeds.rs` and
//! `cargo xtask sim`).

use tsoracle_driver_paxos::mutation::Guard;
use tsoracle_paxos_sim::{SimConfig, run};

/// The seeds CI runs (`cargo xtask sim --seeds 300`).
const CI_SEED_BUDGET: u64 = 300;

/// The first seed that fails without `guard`, and what it reported.
fn first_failure(guard: Guard) -> (u64, String) {
    let config = SimConfig {
        mutation: Some(guard),
        ..SimConfig::default()
    };
    for seed in 0..CI_SEED_BUDGET {
        let report = run(seed, &config).unwrap();
        if !report.passed() {
            return (seed, report.to_string());
        }
    }
    panic!(
        "removing {} failed no seed of {CI_SEED_BUDGET}: the simulation cannot see it",
        guard.name()
    );
}

#[test]
fn without_the_read_barrier_a_stale_read_is_caught() {
    let (seed, report) = first_failure(Guard::ReadBarrier);
    assert!(
        report.contains("smaller high-water") || report.contains("below its end"),
        "seed {seed}: {report}"
    );
}

#[test]
fn without_the_epoch_fence_a_server_serves_a_stale_epoch() {
    let (seed, report) = first_failure(Guard::EpochFence);
    assert!(
        report.contains("no longer led under"),
        "seed {seed}: {report}"
    );
}

#[test]
fn without_the_grant_hold_two_leaders_overlap() {
    let (seed, report) = first_failure(Guard::GrantHold);
    assert!(
        report.contains("both reported Leader"),
        "seed {seed}: {report}"
    );
}

/// A follower that acknowledges entries before its sync, and whose sync
/// then fails, lets the leader decide entries that no majority kept: after
/// the follower restarts and the old leader is cut off, a dense block is
/// handed out twice (the `TornSync` fault).
#[test]
fn without_the_sync_before_acknowledging_an_acknowledged_block_is_lost() {
    let (seed, report) = first_failure(Guard::SyncBeforeAcknowledge);
    assert!(
        [
            "overlap",
            "below its end",
            "above the final counter",
            "smaller high-water",
            "smaller timestamp",
            "returned twice",
        ]
        .iter()
        .any(|lost| report.contains(lost)),
        "seed {seed}: {report}"
    );
}

/// A hand-over that releases the lease before the old leader stopped
/// serving lets the successor serve beside it.
#[test]
fn without_stopping_before_the_release_two_leaders_overlap() {
    let (seed, report) = first_failure(Guard::StopBeforeRelease);
    assert!(
        report.contains("both reported Leader"),
        "seed {seed}: {report}"
    );
}

#[test]
fn without_the_reply_gate_a_resumed_node_answers_from_its_old_window() {
    let (seed, report) = first_failure(Guard::ReplyGate);
    assert!(
        report.contains("no longer led under") || report.contains("real-time"),
        "seed {seed}: {report}"
    );
}

/// A configuration started by a membership change without the previous
/// one's state hands dense blocks out again from zero.
#[test]
fn without_the_carried_state_a_new_configuration_hands_out_blocks_again() {
    let (seed, report) = first_failure(Guard::CarryState);
    assert!(
        report.contains("overlap") || report.contains("smaller") || report.contains("twice"),
        "seed {seed}: {report}"
    );
}

/// Without the StopSign admission, a `ForwardStopSign` forged on a peer
/// link (naming no agreed change) reaches the leader's OmniPaxos, which
/// ends the configuration with it: every node leaves, and nothing is
/// served after the heal. With the admission the same seeds pass (the
/// forged messages are dropped).
#[test]
fn without_the_stop_sign_admission_a_forged_stop_sign_ends_the_cluster() {
    let (seed, report) = first_failure(Guard::StopSignAdmission);
    assert!(report.contains("forged StopSign"), "seed {seed}: {report}");
    assert!(report.contains("liveness: FAILED"), "seed {seed}: {report}");
}

/// Removing the identity check lets a member that lost its data directory
/// vote again, which can fail liveness too; the test looks for the first
/// seed that breaks a safety rule.
#[test]
fn without_the_identity_check_a_wiped_member_hands_out_again_what_was_decided() {
    let config = SimConfig {
        mutation: Some(Guard::IdentityCheck),
        ..SimConfig::default()
    };
    let repeated = |report: &str| {
        report.contains("returned twice")
            || report.contains("overlap")
            || report.contains("smaller")
            || report.contains("below its end")
    };
    let caught = (0..CI_SEED_BUDGET).find_map(|seed| {
        let report = run(seed, &config).unwrap();
        (!report.passed() && repeated(&report.to_string())).then_some((seed, report))
    });
    let Some((seed, report)) = caught else {
        panic!("removing the identity check broke no safety rule in {CI_SEED_BUDGET} seeds");
    };
    assert_eq!(report.faults.wipes, 1, "seed {seed}: {report}");
}

//! A seed replays exactly: the same history, faults and counts.

use tsoracle_paxos_sim::{SimConfig, run};

#[test]
fn a_seed_replays_exactly_and_another_seed_differs() {
    let config = SimConfig::default();
    let first = run(42, &config).unwrap();
    let again = run(42, &config).unwrap();
    assert_eq!(first.digest, again.digest);
    assert_eq!(first.to_string(), again.to_string());
    let other = run(43, &config).unwrap();
    assert_ne!(first.digest, other.digest);
}

/// Tokio picks at random which of its eight `Notify` shards a `watch`
/// receiver waits on, and so the order a change wakes receivers in: unless
/// its generator is seeded from the run's seed, runs of these seeds (found
/// by replaying seeds 0..200 in two processes each without the seeding)
/// differ from one runtime to the next.
#[test]
fn tokio_wake_up_order_is_part_of_the_replay() {
    let config = SimConfig::default();
    for seed in [29, 158] {
        let first = run(seed, &config).unwrap();
        for _ in 0..4 {
            let again = run(seed, &config).unwrap();
            assert_eq!(first.to_string(), again.to_string(), "seed {seed}");
            assert_eq!(first.digest, again.digest, "seed {seed}");
        }
    }
}

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

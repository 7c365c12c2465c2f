//! Every safety invariant the checker and the simulation's oracles see
//! (invariants 2 to 5, 7 and 8 in `docs/architecture.md`) holds on a band of
//! seeds, with a 3-node and a 5-node cluster. `cargo xtask sim` runs hundreds
//! more.

use tsoracle_paxos_sim::{SimConfig, run};

fn all_pass(config: &SimConfig, seeds: std::ops::Range<u64>) {
    for seed in seeds {
        let report = run(seed, config).unwrap();
        assert!(report.passed(), "{report}");
        // The run did something: faults happened and clients were served.
        assert!(report.calls.ok > 100, "{report}");
        assert!(report.check.timestamps > 100, "{report}");
        assert!(
            report.check.dense_blocks > 0 && report.check.lease_ops > 0,
            "{report}"
        );
    }
}

#[test]
fn three_node_clusters_keep_every_invariant() {
    all_pass(&SimConfig::default(), 1_000..1_006);
}

#[test]
fn five_node_clusters_keep_every_invariant() {
    let config = SimConfig {
        nodes: 5,
        ..SimConfig::default()
    };
    all_pass(&config, 2_000..2_003);
}

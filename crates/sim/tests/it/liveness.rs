//! The liveness check can fail: with no time allowed after the heal, no
//! timestamp can be served in it, and the run does not pass.

use tsoracle_paxos_sim::{SimConfig, run};

#[test]
fn a_run_without_service_after_the_heal_fails() {
    let config = SimConfig {
        fault_phase: 20,
        heal_deadline: 0,
        ..SimConfig::default()
    };
    let report = run(7, &config).unwrap();
    assert_eq!(report.recovery, None, "{report}");
    assert!(!report.passed());
    // With time allowed, the same seed recovers.
    let healthy = run(
        7,
        &SimConfig {
            heal_deadline: 60,
            ..config
        },
    )
    .unwrap();
    assert!(healthy.passed(), "{healthy}");
}

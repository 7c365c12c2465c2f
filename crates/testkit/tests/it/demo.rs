//! `demo` end to end: it passes on a real cluster, and its checker fails on
//! a forged history.

use std::time::Duration;

use crate::common::kit;

fn demo(extra: &[&str]) -> (bool, String) {
    let mut args = vec!["demo".to_owned(), "--workers".to_owned(), "4".to_owned()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let out = kit().run(&args, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.success(),
        format!("{stdout}\n--- stderr ---\n{stderr}"),
    )
}

#[test]
fn the_demo_passes_every_check_across_a_leader_kill() {
    let (ok, output) = demo(&["--duration", "8"]);
    assert!(ok, "{output}");
    assert!(output.contains("killing the leader"), "{output}");
    assert_eq!(output.matches("PASS").count(), 5, "{output}");
    assert!(!output.contains("FAIL"), "{output}");
}

#[test]
fn the_demo_fails_on_a_forged_history() {
    let (ok, output) = demo(&["--duration", "5", "--forge-history"]);
    assert!(!ok, "a forged history passed: {output}");
    assert!(
        output.contains("FAIL  a timestamp received before a request started"),
        "{output}"
    );
    assert!(output.contains("a check failed"), "{output}");
}

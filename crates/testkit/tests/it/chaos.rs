//! `chaos` end to end on the debug binary: a short seeded run with every
//! kind of fault (a leader pause included) passes, and its checker fails on
//! a forged history.

use std::path::Path;
use std::time::Duration;

use crate::common::kit;

/// Runs `chaos` with `extra`, data and report under `dir`; returns whether
/// it succeeded, its output, and the JSON report (if written).
fn chaos(extra: &[&str], dir: &Path) -> (bool, String, Option<serde_json::Value>) {
    let report = dir.join("report.json");
    let mut args = vec![
        "chaos".to_owned(),
        "--workers".to_owned(),
        "3".to_owned(),
        "--dir".to_owned(),
        dir.join("data").display().to_string(),
        "--report".to_owned(),
        report.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let out = kit().run(&args, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json = std::fs::read(&report)
        .ok()
        .map(|bytes| serde_json::from_slice(&bytes).unwrap());
    (
        out.status.success(),
        format!("{stdout}\n--- stderr ---\n{stderr}"),
        json,
    )
}

#[test]
fn a_seeded_chaos_run_with_every_kind_of_fault_passes() {
    let dir = tempfile::tempdir().unwrap();
    // Seed 30 over 16 s of faults: first a 1 s SIGSTOP of the leader,
    // started once its timestamp window reaches past the pause, while
    // workers pinned to it keep sending (a new leader serves meanwhile);
    // then a one-way cut, a leader isolation, a leader kill and restart, a
    // link cut and, last, a SIGTERM of the leader (it hands its leadership
    // over, exits 0) and its restart; then 4 s quiet.
    let (ok, output, report) = chaos(
        &["--duration", "20s", "--quiet", "4s", "--seed", "30"],
        dir.path(),
    );
    let report = report.expect("no JSON report");
    let faults = &report["faults"];
    for kind in [
        "kills",
        "restarts",
        "link_cuts",
        "one_way_cuts",
        "heals",
        "pauses",
        "resumes",
        "terminations",
    ] {
        assert!(faults[kind].as_u64().unwrap() >= 1, "no {kind}: {output}");
    }
    // A leader stopped by SIGTERM handed over before it exited (a
    // termination that found no leader is not counted as the leader's).
    assert!(
        faults["hand_overs"].as_u64().unwrap() >= faults["leader_terminations"].as_u64().unwrap(),
        "{output}"
    );
    let isolations = faults["leader_isolations"].as_u64().unwrap()
        + faults["other_isolations"].as_u64().unwrap();
    assert!(isolations >= 1, "{output}");
    // Requests kept flowing to the stopped node: every pinned worker's
    // first request, sent during the pause, came back one way or the other
    // (answered, or refused when the resumed node knew no leader yet).
    let pinned = &report["pinned"];
    let workers = pinned["workers"].as_u64().unwrap();
    assert!(workers >= 1, "{output}");
    assert!(
        pinned["ok"].as_u64().unwrap() + pinned["failed"].as_u64().unwrap() >= workers,
        "{output}"
    );
    assert!(
        report["ops"]["get_ts"]["ok"].as_u64().unwrap() > 0,
        "{output}"
    );
    assert!(
        report["ops"]["get_seq"]["ok"].as_u64().unwrap() > 0,
        "{output}"
    );
    let availability = report["availability"]["fraction"].as_f64().unwrap();
    assert!(availability > 0.0 && availability <= 1.0, "{output}");
    // Last, so that a violation (a resumed leader answering from its old
    // window breaks real-time order) fails here with the whole report.
    assert!(ok, "{output}");
    assert_eq!(report["pass"], true, "{output}");
    assert!(!output.contains("FAIL"), "{output}");
    assert_eq!(output.matches("PASS").count(), 7, "{output}");
}

/// Issue 15's chaos fault: the leader replaced by a new member (started
/// empty in join mode) with `member replace` while the workers keep
/// sending; the old leader leaves with exit 0, and the history passes the
/// checker.
#[test]
fn a_chaos_run_replaces_the_leader_under_load() {
    let dir = tempfile::tempdir().unwrap();
    // Seed 1: the replacement targets the leader.
    let (ok, output, report) = chaos(
        &[
            "--duration",
            "18s",
            "--quiet",
            "4s",
            "--faults",
            "replace",
            "--seed",
            "1",
        ],
        dir.path(),
    );
    let report = report.expect("no JSON report");
    assert_eq!(report["faults"]["replacements"], 1, "{output}");
    assert_eq!(report["faults"]["leader_replacements"], 1, "{output}");
    assert!(
        report["worst_gaps_ms"]["replace"].as_f64().is_some(),
        "{output}"
    );
    assert!(
        output.contains("left the cluster (exit status: 0)"),
        "{output}"
    );
    assert!(ok, "{output}");
    assert_eq!(report["pass"], true, "{output}");
}

#[test]
fn the_chaos_checker_fails_on_a_forged_history() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, output, report) = chaos(
        &["--duration", "6s", "--quiet", "2s", "--forge-history"],
        dir.path(),
    );
    assert!(!ok, "a forged history passed: {output}");
    assert!(
        output.contains("FAIL  a timestamp received before a request started"),
        "{output}"
    );
    assert!(output.contains("a check failed"), "{output}");
    assert!(
        output.contains("replay this schedule with --seed"),
        "{output}"
    );
    assert_eq!(report.expect("no JSON report")["pass"], false);
}

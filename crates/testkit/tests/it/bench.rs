//! `bench` against a running cluster: its text report, and the JSON that
//! `cargo xtask bench` reads.

use std::time::Duration;

use crate::common::{Layout, cli, kit};

#[test]
fn bench_reports_its_load_as_text_and_as_json() {
    let layout = Layout::new();
    let mut nodes: Vec<_> = (1..=3)
        .map(|id| cli().spawn(&layout.args(id), &layout.root().join(format!("n{id}.log"))))
        .collect();
    cli().get_ts(&layout.endpoints(), 5);
    // A bounded bench run.
    let mut bench = vec!["bench".to_owned(), "--clients".to_owned(), "4".to_owned()];
    bench.extend([
        "--duration".to_owned(),
        "20".to_owned(),
        "--max-ops".to_owned(),
        "200".to_owned(),
    ]);
    for e in layout.endpoints() {
        bench.push("--endpoint".to_owned());
        bench.push(e);
    }
    let out = kit().run(&bench, Duration::from_secs(60));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    let ok: u64 = report.split_whitespace().next().unwrap().parse().unwrap();
    assert!(ok > 0 && ok <= 200, "{report}");
    assert!(report.contains("p99"), "{report}");
    // The same run as JSON, as `cargo xtask bench` reads it.
    bench.extend([
        "--json".to_owned(),
        "--gap-ms".to_owned(),
        "1000".to_owned(),
    ]);
    let out = kit().run(&bench, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ok = json["ok"].as_u64().unwrap();
    assert!(ok > 0 && ok <= 200, "{json}");
    assert!(json["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["ops_per_s"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["gaps"].is_array(), "{json}");
    for node in &mut nodes {
        node.terminate();
    }
}

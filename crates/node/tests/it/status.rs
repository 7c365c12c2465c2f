//! `serve --metrics-listen` and `status` against one cluster (the test
//! kit's tests run `bench` against one).

use std::time::{Duration, Instant};

use crate::common::{Layout, cli};

#[test]
fn status_shows_one_leader_and_every_node() {
    let layout = Layout::new();
    let mut nodes: Vec<_> = (1..=3)
        .map(|id| {
            let mut args = layout.args(id);
            args.push("--metrics-listen".to_owned());
            args.push(format!("127.0.0.1:{}", layout.metrics[&id]));
            cli().spawn(&args, &layout.root().join(format!("n{id}.log")))
        })
        .collect();
    cli().get_ts(&layout.endpoints(), 5);
    let mut args = vec!["status".to_owned()];
    for port in layout.metrics.values() {
        args.push("--metrics".to_owned());
        args.push(format!("127.0.0.1:{port}"));
    }
    // The gauges are sampled every 250 ms: wait for a settled view.
    let deadline = Instant::now() + Duration::from_secs(30);
    let table = loop {
        let out = cli().run(&args, Duration::from_secs(30));
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let roles: Vec<&str> = table
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        let count = |r: &str| roles.iter().filter(|&&x| x == r).count();
        if out.status.success() && count("leader") == 1 && count("follower") == 2 {
            break table;
        }
        assert!(Instant::now() < deadline, "no settled status: {table}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(table.lines().count(), 4, "{table}");
    // Every page has the sampled gauges and the server's own metrics; the
    // leader's has the proposal latency histogram.
    let pages: Vec<String> = layout
        .metrics
        .values()
        .map(|&port| metrics_page(port))
        .collect();
    for page in &pages {
        assert!(page.contains("tsoracle_paxos_role"), "{page}");
        assert!(page.contains("tsoracle_get_ts_requests_total"), "{page}");
    }
    assert!(
        pages
            .iter()
            .any(|p| p.contains("tsoracle_paxos_proposal_seconds")),
        "no proposal latency histogram on any node"
    );
    for node in &mut nodes {
        node.terminate();
    }
}

fn metrics_page(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page
}

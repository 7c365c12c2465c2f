//! TLS on the client port: `get-ts` and `seq` connect with `--tls-ca`; a
//! plaintext client, a client that does not trust the port's CA, and (with
//! `--client-tls-ca`) a client without a certificate are refused; a new
//! certificate, and a new client CA, are used after SIGHUP without a
//! restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tsoracle_paxos_metrics::TLS_HANDSHAKES_REFUSED as HANDSHAKES;
use tsoracle_paxos_testkit::process::metrics;

use crate::common::{Layout, ServeChild, TestCa, cli, signal, with_metrics};

/// A test CA and certificates it signs.
struct Ca(TestCa);

impl Ca {
    fn new(name: &str) -> Self {
        Self(TestCa::new(name))
    }

    /// Writes this CA as `<stem>-ca.pem` and a certificate for 127.0.0.1
    /// and `name` as `<stem>.pem` / `<stem>.key`; their paths.
    fn write(&self, dir: &Path, stem: &str, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let (cert, key) = self.0.issue(&[name, "127.0.0.1"]);
        let ca = dir.join(format!("{stem}-ca.pem"));
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&ca, &self.0.pem).unwrap();
        // Written aside and renamed: a node never reads half a file.
        let replace = |path: &Path, text: String| {
            let aside = path.with_extension("tmp");
            std::fs::write(&aside, text).unwrap();
            std::fs::rename(&aside, path).unwrap();
        };
        replace(&cert_path, cert);
        replace(&key_path, key);
        (ca, cert_path, key_path)
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `get-ts` against every node with `extra` flags, once (no retry).
fn get_ts(layout: &Layout, extra: &[String]) -> std::process::Output {
    let mut args = vec!["get-ts".to_owned()];
    for endpoint in layout.endpoints() {
        args.extend(["--endpoint".to_owned(), endpoint]);
    }
    args.extend_from_slice(extra);
    cli().run(&args, Duration::from_secs(60))
}

/// Retries `get-ts` with `extra` until it succeeds (60 s at most).
fn until_served(layout: &Layout, extra: &[String]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = get_ts(layout, extra);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "get-ts never succeeded: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_client_port_serves_tls_refuses_strangers_and_reloads_its_certificate() {
    let layout = Layout::new();
    let dir = layout.root().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let (ca, cert, key) = server_ca.write(&dir, "server", "localhost");
    let (clients_ca, client_cert, client_key) = client_ca.write(&dir, "client", "client");
    let mut nodes: Vec<ServeChild> = (1..=3)
        .map(|id| {
            let mut args = layout.args(id);
            args.extend([
                "--client-tls-cert".to_owned(),
                path(&cert),
                "--client-tls-key".to_owned(),
                path(&key),
                "--client-tls-ca".to_owned(),
                path(&clients_ca),
                // Only SIGHUP reloads: the test decides when.
                "--tls-reload-secs".to_owned(),
                "0".to_owned(),
            ]);
            cli().spawn(&args, &layout.log(&format!("node-{id}")))
        })
        .collect();
    let trusted = |ca: &Path| {
        vec![
            "--tls-ca".to_owned(),
            path(ca),
            "--tls-cert".to_owned(),
            path(&client_cert),
            "--tls-key".to_owned(),
            path(&client_key),
        ]
    };
    let first = until_served(&layout, &trusted(&ca));

    // Plaintext, an untrusted server CA, and no client certificate: refused.
    assert!(
        !get_ts(&layout, &[]).status.success(),
        "plaintext was served"
    );
    assert!(
        !get_ts(&layout, &trusted(&clients_ca)).status.success(),
        "a client that does not trust the port's CA was served"
    );
    assert!(
        !get_ts(&layout, &["--tls-ca".to_owned(), path(&ca)])
            .status
            .success(),
        "a client without a certificate was served"
    );

    // A new certificate from another CA, served after SIGHUP. (The write
    // replaces `server-ca.pem` too: keep the old CA aside.)
    let ca = {
        let old = dir.join("old-server-ca.pem");
        std::fs::copy(&ca, &old).unwrap();
        old
    };
    let renewed_ca = Ca::new("renewed server CA");
    let (new_ca, _, _) = renewed_ca.write(&dir, "server", "localhost");
    // Before the signal the old certificate is still served.
    assert!(!get_ts(&layout, &trusted(&new_ca)).status.success());
    for node in &nodes {
        signal(node, "HUP");
    }
    let second = until_served(&layout, &trusted(&new_ca));
    assert!(second > first, "{second} after {first}");
    assert!(
        !get_ts(&layout, &trusted(&ca)).status.success(),
        "the old certificate is still served after SIGHUP"
    );

    // A new client CA: its clients are refused until SIGHUP, then served,
    // and a client of the old client CA is refused from then on.
    let (old_client_cert, old_client_key) =
        (dir.join("old-client.pem"), dir.join("old-client.key"));
    std::fs::copy(&client_cert, &old_client_cert).unwrap();
    std::fs::copy(&client_key, &old_client_key).unwrap();
    let old_client = vec![
        "--tls-ca".to_owned(),
        path(&new_ca),
        "--tls-cert".to_owned(),
        path(&old_client_cert),
        "--tls-key".to_owned(),
        path(&old_client_key),
    ];
    Ca::new("renewed client CA").write(&dir, "client", "client");
    assert!(
        !get_ts(&layout, &trusted(&new_ca)).status.success(),
        "a client of a client CA not yet loaded was served"
    );
    for node in &nodes {
        signal(node, "HUP");
    }
    let third = until_served(&layout, &trusted(&new_ca));
    assert!(third > second, "{third} after {second}");
    assert!(
        !get_ts(&layout, &old_client).status.success(),
        "a client of the replaced client CA is still served after SIGHUP"
    );
    for node in &mut nodes {
        node.terminate();
    }
}

/// `--tls-handshakes-per-address` (here from its environment variable)
/// reaches the client port: with 1, an idle socket from 127.0.0.1 holds
/// that address's only handshake slot, so a TLS client from there is
/// refused, and counted, until the idle socket goes.
#[test]
fn the_client_port_caps_handshakes_per_address() {
    let layout = Layout::new();
    let dir = layout.root().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = Ca::new("server CA").write(&dir, "server", "localhost");
    let mut nodes: Vec<ServeChild> = (1..=3)
        .map(|id| {
            let mut args = with_metrics(&layout, layout.args(id), id);
            args.extend([
                "--client-tls-cert".to_owned(),
                path(&cert),
                "--client-tls-key".to_owned(),
                path(&key),
            ]);
            let mut command = cli().command(&args);
            command.env("TSORACLE_PAXOS_TLS_HANDSHAKES_PER_ADDRESS", "1");
            ServeChild::spawn(command, &layout.log(&format!("node-{id}")))
        })
        .collect();
    let trusted = vec!["--tls-ca".to_owned(), path(&ca)];
    until_served(&layout, &trusted);

    let client_port = layout.client[&1];
    let one_node = |extra: &[String]| {
        let mut args = vec![
            "get-ts".to_owned(),
            "--endpoint".to_owned(),
            format!("127.0.0.1:{client_port}"),
        ];
        args.extend_from_slice(extra);
        cli().run(&args, Duration::from_secs(60))
    };
    let idle = std::net::TcpStream::connect(("127.0.0.1", client_port)).unwrap();
    // The accept loop takes the idle socket before the client's.
    std::thread::sleep(Duration::from_millis(200));
    let out = one_node(&trusted);
    assert!(
        !out.status.success(),
        "a second handshake from 127.0.0.1 was served: {out:?}"
    );
    let refused =
        format!("{HANDSHAKES}{{listener=\"127.0.0.1:{client_port}\",reason=\"address\"}}");
    let counted = metrics(layout.metrics[&1])
        .and_then(|page| page.get(&refused).copied())
        .unwrap_or(0.0);
    assert!(counted >= 1.0, "{refused} reads {counted}");

    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !one_node(&trusted).status.success() {
        assert!(
            Instant::now() < deadline,
            "the slot never came back after the idle socket closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for node in &mut nodes {
        node.terminate();
    }
}

//! Only an authenticated admin may end a configuration: with mutual TLS,
//! `member add` presenting a node's certificate is refused (and changes
//! nothing), while the same command with a certificate naming
//! `tsoracle-admin` adds the member. Any certificate of the cluster CA may
//! list the members.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tsoracle_paxos_testkit::process::free_port;

use crate::common::{Layout, ServeChild, TestCa, cli, signal};

struct Pki {
    ca: TestCa,
}

impl Pki {
    fn new() -> Self {
        Self {
            ca: TestCa::new("admin test CA"),
        }
    }

    /// Writes `<stem>.pem`, `<stem>.key` (a certificate naming `name`) and
    /// `ca.pem` under `dir`; the three TLS flags. Every file is written
    /// before any node starts: a node reading one mid-write fails to start.
    fn files(&self, dir: &Path, stem: &str, name: &str) -> Vec<String> {
        let (cert, key) = self.ca.issue(&[name]);
        let path = |file: &str| -> PathBuf { dir.join(file) };
        std::fs::write(path("ca.pem"), &self.ca.pem).unwrap();
        std::fs::write(path(&format!("{stem}.pem")), cert).unwrap();
        std::fs::write(path(&format!("{stem}.key")), key).unwrap();
        let flag = |flag: &str, file: String| [flag.to_owned(), path(&file).display().to_string()];
        [
            flag("--tls-ca", "ca.pem".to_owned()),
            flag("--tls-cert", format!("{stem}.pem")),
            flag("--tls-key", format!("{stem}.key")),
        ]
        .concat()
    }
}

fn admin(layout: &Layout, command: &str, tls: &[String], extra: &[String]) -> std::process::Output {
    let mut args = vec![
        "member".to_owned(),
        command.to_owned(),
        "--cluster-id".to_owned(),
        "it".to_owned(),
        "--node".to_owned(),
        format!("1=127.0.0.1:{}", layout.peer[&1]),
        "--wait-secs".to_owned(),
        "30".to_owned(),
    ];
    args.extend_from_slice(tls);
    args.extend_from_slice(extra);
    cli().run(&args, Duration::from_secs(60))
}

#[test]
fn only_the_admin_certificate_changes_members() {
    let layout = Layout::new();
    let pki = Pki::new();
    let certs = layout.root().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    // A client holding a node's certificate (another key pair naming
    // node-2), and the operator's.
    let node_cert = pki.files(&certs, "client-node-2", "node-2");
    let admin_cert = pki.files(&certs, "admin", "tsoracle-admin");
    let flags: Vec<Vec<String>> = (1..=3)
        .map(|id| pki.files(&certs, &format!("node-{id}"), &format!("node-{id}")))
        .collect();
    let _nodes: Vec<ServeChild> = (1..=3)
        .zip(flags)
        .map(|(id, tls)| {
            let mut args = layout.args(id);
            args.extend(tls);
            cli().spawn(&args, &layout.log(&format!("node-{id}")))
        })
        .collect();
    let fourth = [
        "--id".to_owned(),
        "4".to_owned(),
        "--peer-address".to_owned(),
        format!("127.0.0.1:{}", free_port()),
        "--client-address".to_owned(),
        format!("127.0.0.1:{}", free_port()),
    ];

    // Listing needs only a certificate of the CA (retried while the
    // cluster forms).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let out = admin(&layout, "list", &node_cert, &[]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains("leader") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "no list: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(listed.starts_with("configuration 1"), "{listed}");

    let refused = admin(&layout, "add", &node_cert, &fourth);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a node certificate changed members"
    );
    assert!(stderr.contains("tsoracle-admin"), "{stderr}");
    let out = admin(&layout, "list", &node_cert, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("configuration 1"), "{text}");
    assert!(
        !text.contains("agreed"),
        "a refused change was agreed: {text}"
    );

    let added = admin(&layout, "add", &admin_cert, &fourth);
    assert!(
        added.status.success(),
        "the admin certificate was refused: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let text = String::from_utf8_lossy(&added.stdout);
    assert!(text.starts_with("added node 4\nconfiguration 2"), "{text}");
}

/// A new CA and new certificates for every node, put in place of the old
/// files and announced with SIGHUP, are used without a restart: the admin
/// service answers only clients of the new CA, and a node restarted on the
/// new files links up with the others in both directions (their server
/// side and their new outbound links use the reloaded material).
#[test]
fn rotated_peer_certificates_are_used_after_sighup_without_a_restart() {
    let layout = Layout::new();
    let (old, new) = (Pki::new(), Pki::new());
    let certs = layout.root().join("certs");
    let (old_dir, new_dir) = (layout.root().join("old"), layout.root().join("new"));
    for dir in [&certs, &old_dir, &new_dir] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let old_admin = old.files(&old_dir, "admin", "tsoracle-admin");
    let flags: Vec<Vec<String>> = (1..=3)
        .map(|id| old.files(&certs, &format!("node-{id}"), &format!("node-{id}")))
        .collect();
    let mut nodes: Vec<ServeChild> = (1..=3)
        .zip(flags.clone())
        .map(|(id, tls)| {
            let mut args = layout.args(id);
            // Only SIGHUP reloads: the test decides when.
            args.extend(
                tls.into_iter()
                    .chain(["--tls-reload-secs".to_owned(), "0".to_owned()]),
            );
            cli().spawn(&args, &layout.log(&format!("node-{id}")))
        })
        .collect();
    let listed = |tls: &[String]| {
        let out = admin(&layout, "list", tls, &[]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("leader")
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what} within 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("the old admin certificate lists members", &|| {
        listed(&old_admin)
    });

    // A certificate of a stray CA put in node 1's place is refused by the
    // reload: node 1 keeps its working one.
    let stray = Pki::new();
    let (cert, key) = stray.ca.issue(&["node-1"]);
    std::fs::write(certs.join("node-1.pem"), cert).unwrap();
    std::fs::write(certs.join("node-1.key"), key).unwrap();
    signal(&nodes[0], "HUP");
    wait("node 1 refuses the stray certificate", &|| {
        std::fs::read_to_string(layout.log("node-1"))
            .is_ok_and(|log| log.contains("was not reloaded") && log.contains("does not chain"))
    });
    assert!(listed(&old_admin), "node 1 dropped its working certificate");

    // The new files replace the old ones in place.
    for id in 1..=3 {
        new.files(&certs, &format!("node-{id}"), &format!("node-{id}"));
    }
    let new_admin = new.files(&new_dir, "admin", "tsoracle-admin");
    assert!(!listed(&new_admin), "the new CA was trusted before SIGHUP");
    for node in &nodes {
        signal(node, "HUP");
    }
    wait("the new admin certificate lists members", &|| {
        listed(&new_admin)
    });
    assert!(
        !listed(&old_admin),
        "the old CA is still trusted after SIGHUP"
    );

    // Node 2 restarts on the new files: every link to and from it is new.
    nodes[1].terminate();
    let mut args = layout.rejoin_args(2);
    args.extend(flags[1].clone());
    nodes[1] = cli().spawn(&args, &layout.log("node-2-again"));
    let all_linked = || {
        let mut args = vec![
            "status".to_owned(),
            "--json".to_owned(),
            "--cluster-id".to_owned(),
            "it".to_owned(),
            "--node".to_owned(),
            format!("1=127.0.0.1:{}", layout.peer[&1]),
        ];
        args.extend_from_slice(&new_admin);
        let out = cli().run(&args, Duration::from_secs(60));
        let Ok(report) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return false;
        };
        out.status.success()
            && report["members"].as_array().is_some_and(|members| {
                members.iter().all(|m| {
                    m["status"]["peers"]
                        .as_array()
                        .is_some_and(|peers| peers.iter().all(|p| p["up"] == true))
                })
            })
    };
    wait(
        "every member linked to every other after the restart",
        &all_linked,
    );
    let _ = cli().get_ts(&layout.endpoints(), 1);
    for node in &mut nodes {
        node.terminate();
    }
}

//! Settings from flags, `TSORACLE_PAXOS_*` environment variables and the
//! file, with one precedence (flag, then environment, then file), and the
//! packaging's files in step with the binary.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tsoracle_paxos_testkit::process::ServeChild;

use crate::common::{Layout, cli};

/// `serve` with `args` and `env`, expected to be refused; its error line.
fn refusal(args: &[&str], env: &[(&str, &str)]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let mut command = cli().command(&args);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    assert!(!out.status.success(), "{args:?} {env:?} was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    stderr
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| panic!("no error line in {stderr}"))
        .to_owned()
}

#[test]
fn a_flag_wins_over_its_variable_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        format!(
            "node_id = 1\ncluster_id = \"c\"\ndata_dir = \"{}\"\n\
             client_listen = \"127.0.0.1:0\"\npeer_listen = \"127.0.0.1:0\"\n\
             [[peers]]\nid = 1\npeer = \"127.0.0.1:1\"\nclient = \"127.0.0.1:2\"\n\
             [[peers]]\nid = 2\npeer = \"127.0.0.1:3\"\nclient = \"127.0.0.1:4\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();
    // The variable beats the file's node_id = 1.
    let line = refusal(
        &["serve", "--config", config],
        &[("TSORACLE_PAXOS_NODE_ID", "5")],
    );
    assert!(
        line.contains("this node's id 5 is not in the peer list"),
        "{line}"
    );
    // The flag beats the variable.
    let line = refusal(
        &["serve", "--config", config, "--node-id", "6"],
        &[("TSORACLE_PAXOS_NODE_ID", "5")],
    );
    assert!(line.contains("this node's id 6"), "{line}");
    // The member list from the environment, `;`-separated, replaces the
    // file's.
    let line = refusal(
        &["serve", "--config", config],
        &[(
            "TSORACLE_PAXOS_PEERS",
            "2=127.0.0.1:3,127.0.0.1:4;3=127.0.0.1:5,127.0.0.1:6",
        )],
    );
    assert!(line.contains("not in the peer list [2, 3]"), "{line}");
    // A setting this release made settable, from the environment.
    let line = refusal(
        &["serve", "--config", config],
        &[("TSORACLE_PAXOS_DENSE_KEY_CAP", "0")],
    );
    assert!(line.contains("dense_key_cap"), "{line}");
    // The ordinal gives the id (ordinal 4: node 5).
    let line = refusal(
        &["serve", "--config", config],
        &[("TSORACLE_PAXOS_NODE_ORDINAL", "4")],
    );
    assert!(line.contains("this node's id 5"), "{line}");
}

/// A node's log in a file (a journal, a container log) is plain text, with
/// no terminal colour codes; `TSORACLE_PAXOS_LOG_FORMAT=json` makes every
/// line a JSON object.
#[test]
fn logs_in_a_file_are_plain_text_or_json_lines() {
    for format in ["text", "json"] {
        let layout = Layout::new();
        let log = layout.log(&format!("node-1-{format}"));
        let mut command = cli().command(&layout.args(1));
        command.env("TSORACLE_PAXOS_LOG_FORMAT", format);
        let mut node = ServeChild::spawn(command, &log);
        node.wait_for_log("storage opened", Duration::from_secs(30));
        node.terminate();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            !text.contains('\u{1b}'),
            "{format} log has terminal escapes:\n{text}"
        );
        for line in text.lines() {
            let parsed = serde_json::from_str::<serde_json::Value>(line);
            if format == "json" {
                let object = parsed.unwrap_or_else(|err| panic!("{line:?}: {err}"));
                assert!(object.get("level").is_some(), "{line}");
            } else {
                assert!(parsed.is_err(), "a JSON line in the text log: {line}");
            }
        }
    }
}

/// Every `TSORACLE_PAXOS_*` variable that the packaging and the docs name is
/// one the binary reads, and the example configuration file parses.
#[test]
fn the_packaging_names_only_settings_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut help = String::new();
    for command in [
        &["serve", "--help"][..],
        &["get-ts", "--help"],
        &["seq", "--help"],
        &["status", "--help"],
        &["export", "--help"],
        &["member", "list", "--help"],
    ] {
        let args: Vec<String> = command.iter().map(|a| (*a).to_owned()).collect();
        let out = cli().run(&args, Duration::from_secs(30));
        assert!(out.status.success(), "{command:?}");
        help.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    let mut named = BTreeSet::new();
    for file in [
        "deploy/kubernetes/tsoracle-paxos.yaml",
        "deploy/systemd/tsoracle-paxos.service",
        "deploy/systemd/node.toml.example",
        "deploy/README.md",
        "docs/operations.md",
        "README.md",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("TSORACLE_PAXOS_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            // A build argument, not a setting; and `TSORACLE_PAXOS_*` itself.
            if name != "TSORACLE_PAXOS_COMMIT" && name != "TSORACLE_PAXOS_" {
                named.insert((name, file));
            }
        }
    }
    assert!(named.len() > 10, "{named:?}");
    for (name, file) in &named {
        assert!(
            help.contains(&format!("[env: {name}=")),
            "{file} names {name}, which no command reads"
        );
    }

    // The example file is valid: `serve` gets past the file and its checks
    // and stops at the first TLS file, which is not on this machine.
    let example = root.join("deploy/systemd/node.toml.example");
    let line = refusal(&["serve", "--config", example.to_str().unwrap()], &[]);
    assert!(line.to_lowercase().contains("tls"), "{line}");
}

/// The systemd unit passes `systemd-analyze verify` with this binary as its
/// `ExecStart` (where systemd's tools are installed, as on the CI machine;
/// elsewhere the test says so and checks nothing).
#[test]
fn the_systemd_unit_verifies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let present = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !present {
        eprintln!("systemd-analyze is not installed: the unit was not verified");
        return;
    }
    let out = std::process::Command::new(root.join("deploy/systemd/verify.sh"))
        .arg(env!("CARGO_BIN_EXE_tsoracle-paxos"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

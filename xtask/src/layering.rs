//! The layering check: each crate depends only on layers below it, the
//! piggyback promise (no tonic, no RocksDB without opting in) is enforced,
//! and the shipped packages link no test tooling (the node none at all, and
//! none of them the test harness with its in-memory network).
//!
//! Rules are checked against `cargo tree`, i.e. against what really gets
//! compiled, not against what the manifests intend. One rule is about
//! source, not dependencies: the driver's decision core
//! (`crates/driver/src/core/`) names no runtime, no lock and no clock, and
//! reaches no other part of the driver ([`impure_lines`]).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::env::BuildEnv;

/// One rule: building `package` with `args` must not compile any `forbidden`
/// crate. A trailing `*` matches a name prefix.
struct Rule {
    package: &'static str,
    no_default_features: bool,
    forbidden: &'static [&'static str],
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        package: "tsoracle-paxos-epoch",
        no_default_features: false,
        forbidden: &[
            "tsoracle-paxos-*",
            "tokio",
            "rocksdb",
            "tonic",
            "tsoracle-consensus",
        ],
        why: "the epoch codec is layer 0: only omnipaxos and tsoracle-core",
    },
    Rule {
        package: "tsoracle-paxos-state",
        no_default_features: false,
        forbidden: &["tsoracle-paxos-toolkit", "tokio", "rocksdb", "tonic"],
        why: "the state crate is pure: no I/O, no runtime, no transport",
    },
    Rule {
        package: "tsoracle-paxos-toolkit",
        no_default_features: false,
        // `tsoracle-*` includes the test harness.
        forbidden: &["tsoracle-*", "tonic", "fastrand"],
        why: "the toolkit is generic OmniPaxos glue with no tsoracle types and no transport; \
              the in-memory network (and its fastrand) is the test harness'",
    },
    Rule {
        package: "tsoracle-paxos-toolkit",
        no_default_features: true,
        forbidden: &[
            "rocksdb",
            "librocksdb-sys",
            "tsoracle-paxos-harness",
            "fastrand",
        ],
        why: "piggyback hosts turn default features off and must not compile RocksDB, nor the \
              test harness",
    },
    Rule {
        package: "tsoracle-paxos-tonic",
        no_default_features: false,
        forbidden: &[
            "tsoracle-core",
            "tsoracle-consensus",
            "tsoracle-server",
            "tsoracle-client",
            "tsoracle-proto",
            "tsoracle-paxos-epoch",
            "tsoracle-paxos-state",
            "tsoracle-driver-paxos",
            "rocksdb",
            "librocksdb-sys",
            "aws-lc-rs",
            "aws-lc-sys",
            "tsoracle-paxos-harness",
        ],
        why: "the tonic transport is layer 2: toolkit (no RocksDB) and tonic on ring, no tsoracle \
              types, no test harness (its reconnect jitter's fastrand is its own)",
    },
    Rule {
        package: "tsoracle-driver-paxos",
        no_default_features: true,
        forbidden: &[
            "tonic",
            "rocksdb",
            "librocksdb-sys",
            "tsoracle-paxos-tonic",
            "tsoracle-paxos-harness",
            "fastrand",
        ],
        why: "piggyback hosts use the driver without compiling tonic, RocksDB or the test harness",
    },
    Rule {
        package: "tsoracle-paxos-harness",
        no_default_features: false,
        forbidden: &[
            "tsoracle-driver-paxos",
            "tsoracle-paxos",
            "tsoracle-paxos-tonic",
            "tsoracle-paxos-state",
            "tsoracle-paxos-epoch",
            "tsoracle-paxos-testkit",
            "tsoracle-paxos-sim",
            "tsoracle-core",
            "tsoracle-consensus",
            "tsoracle-server",
            "tsoracle-client",
            "tonic",
            "rocksdb",
            "librocksdb-sys",
        ],
        why: "the test harness is generic OmniPaxos test tooling on the toolkit without RocksDB: \
              no tsoracle types, no driver, no node, no transport, no disk",
    },
    Rule {
        package: "paxos-piggyback",
        no_default_features: false,
        forbidden: &["tonic", "rocksdb", "librocksdb-sys", "tsoracle-paxos-tonic"],
        why: "the piggyback example shows a host that compiles neither tonic nor RocksDB",
    },
    Rule {
        package: "tsoracle-paxos-sim",
        no_default_features: false,
        forbidden: &[
            "tonic",
            "rocksdb",
            "librocksdb-sys",
            "tsoracle-paxos-tonic",
            "tsoracle-paxos",
            "tsoracle-server",
            "tsoracle-client",
        ],
        why: "the simulation runs the in-memory stack only: no transport, no disk, no node",
    },
    Rule {
        package: "tsoracle-paxos",
        no_default_features: false,
        forbidden: &[
            "tsoracle-paxos-testkit",
            "tsoracle-paxos-checker",
            "tsoracle-paxos-sim",
            "tsoracle-paxos-harness",
            "indicatif",
            "hdrhistogram",
        ],
        why: "the shipped node links no test tooling: the demo, the chaos run and its fault \
              proxy, the load generator and the history checker are the test kit's, the \
              in-memory network and the storage conformance suite the harness'",
    },
    Rule {
        package: "tsoracle-paxos-testkit",
        no_default_features: true,
        forbidden: &[
            "tsoracle-paxos",
            "tsoracle-driver-paxos",
            "tsoracle-paxos-toolkit",
            "tsoracle-paxos-tonic",
            "tonic",
            "tokio",
            "rocksdb",
            "librocksdb-sys",
        ],
        why: "the test kit's library (its process cluster, which xtask links) compiles no node, \
              no runtime and no RocksDB",
    },
    Rule {
        package: "xtask",
        no_default_features: false,
        forbidden: &[
            "tsoracle-paxos",
            "tsoracle-driver-paxos",
            "rocksdb",
            "librocksdb-sys",
            "tonic",
        ],
        why: "xtask prepares the build environment (libclang for RocksDB's bindgen), so it must \
              build without RocksDB or the node",
    },
    Rule {
        package: "tsoracle-paxos-metrics",
        no_default_features: false,
        forbidden: &["tsoracle-*", "tokio"],
        why: "the metric names and the Prometheus text reader are a leaf that xtask and the node share",
    },
];

/// The driver's pure decision core: every `.rs` file below it is checked.
const PURE_CORE: &str = "crates/driver/src/core";

/// What the core's code (comments aside) must not name: an async runtime or
/// async code, a lock or other shared-state synchronization, a clock of its
/// own, threads, files or sockets. Time comes in as an argument. A name
/// matches where it starts a word (`Mutex` also catches `MutexGuard`).
const CORE_FORBIDDEN: &[&str] = &[
    "tokio",
    "async",
    ".await",
    "futures",
    "Mutex",
    "RwLock",
    "Condvar",
    "Atomic",
    "Instant",
    "SystemTime",
    "std::thread",
    "std::fs",
    "std::net",
];

/// The only `crate::` paths the core may use: itself, the error types and
/// the simulation's mutation switches. The rest of the driver is the async
/// shell, which the core must not reach into.
const CORE_CRATE_PATHS: &[&str] = &["crate::core::", "crate::error::", "crate::mutation::"];

/// Packages that ship: built on their own, none may turn on the driver's
/// test-only `mutations` feature.
const SHIPPED: &[&str] = &[
    "tsoracle-paxos",
    "tsoracle-driver-paxos",
    "paxos-standalone",
    "paxos-piggyback",
];

pub(crate) fn check(build_env: &BuildEnv) -> Result<()> {
    let mut violations = Vec::new();
    for rule in RULES {
        let names = dependency_names(build_env, rule)?;
        for found in forbidden_found(rule, &names) {
            violations.push(format!(
                "{}{} depends on {found}: {}",
                rule.package,
                if rule.no_default_features {
                    " (no default features)"
                } else {
                    ""
                },
                rule.why
            ));
        }
    }
    for package in SHIPPED {
        if driver_features(build_env, package)?
            .iter()
            .any(|feature| feature == "mutations")
        {
            violations.push(format!(
                "{package} turns on tsoracle-driver-paxos/mutations: the mutation switches \
                 are for the simulation only"
            ));
        }
    }
    if let Some(path) = published_omnipaxos(build_env)? {
        violations.push(format!(
            "the published omnipaxos is compiled ({path}): every crate must use the fixed \
             copy, package tsoracle-paxos-omnipaxos (vendor/README.md)"
        ));
    }
    violations.extend(pure_core_violations(&crate::bench::workspace_root())?);
    if violations.is_empty() {
        eprintln!(
            "layering: {} rules hold; no shipped package enables the mutation switches; \
             only the fixed OmniPaxos is compiled; the driver's core names no runtime, lock \
             or clock",
            RULES.len()
        );
        return Ok(());
    }
    bail!("layering violations:\n  {}", violations.join("\n  "));
}

/// The first crate that reaches the published `omnipaxos` (whose 0.2.4 loses
/// a lagging follower's decided prefix), over every package, target, feature
/// and edge of the workspace; `None` when only the fixed copy is compiled.
fn published_omnipaxos(build_env: &BuildEnv) -> Result<Option<String>> {
    let mut command = Command::new("cargo");
    command.args([
        "tree",
        "--locked",
        "--workspace",
        "--all-features",
        "-e",
        "all",
        "-i",
        "omnipaxos",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]);
    build_env.apply(&mut command);
    let output = command.output().context("could not run cargo tree")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // `cargo tree -i` fails when no package of that name is in the
        // graph, which is the state this check wants; any other failure is
        // an error, not a pass.
        if stderr.contains("did not match any packages") {
            return Ok(None);
        }
        bail!(
            "cargo tree -i omnipaxos failed ({}): {stderr}",
            output.status
        );
    }
    Ok(Some(first_dependent(&String::from_utf8_lossy(
        &output.stdout,
    ))))
}

/// The first crate other than `omnipaxos` itself in an inverted tree.
fn first_dependent(inverted: &str) -> String {
    parse_tree(inverted)
        .into_iter()
        .find(|name| name != "omnipaxos")
        .unwrap_or_else(|| "omnipaxos".to_owned())
}

/// Every line of a file under [`PURE_CORE`] that breaks the core's rule.
fn pure_core_violations(root: &Path) -> Result<Vec<String>> {
    let dir = root.join(PURE_CORE);
    let mut files = Vec::new();
    rust_files(&dir, &mut files)?;
    if files.is_empty() {
        bail!("{} holds no Rust files: has the core moved?", dir.display());
    }
    files.sort();
    let mut violations = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("could not read {}", file.display()))?;
        let name = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        violations.extend(impure_lines(&name, &text));
    }
    Ok(violations)
}

fn rust_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// The lines of `text` (the file `name`) whose code, comments aside, names
/// something in [`CORE_FORBIDDEN`] or a `crate::` path outside
/// [`CORE_CRATE_PATHS`].
fn impure_lines(name: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = without_comment(line);
        for word in CORE_FORBIDDEN {
            if starts_a_word(code, word) {
                found.push(format!(
                    "{name}:{}: the driver's core names `{word}`: it must stay pure \
                     (no runtime, no lock, no clock; time is an argument)",
                    number + 1
                ));
            }
        }
        for (at, _) in code.match_indices("crate::") {
            let path = &code[at..];
            if !CORE_CRATE_PATHS
                .iter()
                .any(|allowed| path.starts_with(allowed))
            {
                let end = path
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(path.len());
                found.push(format!(
                    "{name}:{}: the driver's core reaches `{}` outside itself (only {} are \
                     allowed): the shell depends on the core, never the other way",
                    number + 1,
                    &path[..end],
                    CORE_CRATE_PATHS.join(", ")
                ));
            }
        }
    }
    found
}

/// `line` up to a `//` comment that is not inside a string literal. (The
/// core uses no block comments; a `/*` would be checked as code.)
fn without_comment(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    let bytes = line.as_bytes();
    for (at, &byte) in bytes.iter().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(at + 1) == Some(&b'/') => return &line[..at],
            _ => {}
        }
    }
    line
}

/// Whether `word` occurs in `code` where no identifier character precedes
/// it (anywhere, for a word such as `.await` that starts with punctuation).
fn starts_a_word(code: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let needs_boundary = word.starts_with(is_ident);
    code.match_indices(word)
        .any(|(at, _)| !needs_boundary || !code[..at].chars().next_back().is_some_and(is_ident))
}

/// Names of every crate compiled for `rule.package` (normal and build edges),
/// the package itself excluded.
fn dependency_names(build_env: &BuildEnv, rule: &Rule) -> Result<Vec<String>> {
    let stdout = cargo_tree(
        build_env,
        rule.package,
        rule.no_default_features,
        "normal,build",
        "{p}",
    )?;
    Ok(parse_tree(&stdout))
}

/// `cargo tree -p package -e edges --prefix none --format format`, one line
/// per crate.
fn cargo_tree(
    build_env: &BuildEnv,
    package: &str,
    no_default_features: bool,
    edges: &str,
    format: &str,
) -> Result<String> {
    let mut command = Command::new("cargo");
    command.args([
        "tree", "--locked", "-p", package, "-e", edges, "--prefix", "none", "--format", format,
    ]);
    if no_default_features {
        command.arg("--no-default-features");
    }
    build_env.apply(&mut command);
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("could not run cargo tree")?;
    if !output.status.success() {
        bail!("cargo tree -p {package} failed ({})", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The features of `tsoracle-driver-paxos` when `package` is built alone.
fn driver_features(build_env: &BuildEnv, package: &str) -> Result<Vec<String>> {
    let stdout = cargo_tree(build_env, package, false, "normal", "{p} [{f}]")?;
    Ok(parse_features(&stdout, "tsoracle-driver-paxos"))
}

/// The features listed for `crate_name` in `cargo tree --format "{p} [{f}]"`.
fn parse_features(stdout: &str, crate_name: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|line| line.split_whitespace().next() == Some(crate_name))
        .filter_map(|line| {
            let open = line.rfind('[')?;
            let close = line.rfind(']')?;
            line.get(open + 1..close)
        })
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|feature| !feature.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_tree(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The fixed OmniPaxos (`vendor/omnipaxos`): below every layer, so no
/// `tsoracle-*` pattern of a rule forbids it.
const FIXED_OMNIPAXOS: &str = "tsoracle-paxos-omnipaxos";

fn forbidden_found<'a>(rule: &Rule, names: &'a [String]) -> Vec<&'a str> {
    let mut found: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|name| *name != rule.package && *name != FIXED_OMNIPAXOS)
        .filter(|name| {
            rule.forbidden
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => name == pattern,
                })
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = "tsoracle-paxos-toolkit v0.1.0 (/w/crates/toolkit)\n\
        omnipaxos v0.2.4\n\
        rocksdb v0.25.0\n\
        librocksdb-sys v0.19.0+11.8.1\n\
        tsoracle-core v2.3.0\n\
        serde v1.0.228 (*)\n";

    #[test]
    fn a_forbidden_dependency_is_reported() {
        let names = parse_tree(TREE);
        let no_rocksdb = &RULES[3];
        assert_eq!(
            forbidden_found(no_rocksdb, &names),
            ["librocksdb-sys", "rocksdb"]
        );
        let no_tsoracle = &RULES[2];
        assert_eq!(forbidden_found(no_tsoracle, &names), ["tsoracle-core"]);
    }

    #[test]
    fn features_are_read_from_the_tree() {
        let tree = "tsoracle-paxos v0.1.0 (/w/crates/node) []\n\
            tsoracle-driver-paxos v0.1.0 (/w/crates/driver) [mutations]\n\
            tokio v1.48.0 [default,rt,sync]\n";
        assert_eq!(
            parse_features(tree, "tsoracle-driver-paxos"),
            vec!["mutations".to_owned()]
        );
        assert!(parse_features(tree, "tsoracle-paxos").is_empty());
    }

    #[test]
    fn a_path_to_the_published_omnipaxos_is_reported() {
        let inverted = "omnipaxos v0.2.4\n\
            omnipaxos feature \"serde\"\n\
            tsoracle-paxos-state v0.1.0 (/w/crates/state)\n";
        assert_eq!(first_dependent(inverted), "tsoracle-paxos-state");
    }

    #[test]
    fn test_tooling_in_the_node_is_reported() {
        let names = parse_tree(
            "tsoracle-paxos v0.1.0 (/w/crates/node)\n\
             tsoracle-paxos-metrics v0.1.0 (/w/crates/metrics)\n\
             tsoracle-paxos-checker v0.1.0 (/w/crates/checker)\n\
             indicatif v0.17.11\n\
             hdrhistogram v7.5.4\n",
        );
        let node = RULES
            .iter()
            .find(|rule| rule.package == "tsoracle-paxos")
            .unwrap();
        assert_eq!(
            forbidden_found(node, &names),
            ["hdrhistogram", "indicatif", "tsoracle-paxos-checker"]
        );
        // The test kit's library may not pull the node, but the exact name
        // is meant, not every crate it prefixes.
        let testkit = RULES
            .iter()
            .find(|rule| rule.package == "tsoracle-paxos-testkit")
            .unwrap();
        let names = parse_tree(
            "tsoracle-paxos-testkit v0.1.0\ntsoracle-paxos-metrics v0.1.0\nthiserror v2.0.0\n",
        );
        assert!(forbidden_found(testkit, &names).is_empty());
        let names = parse_tree("tsoracle-paxos-testkit v0.1.0\ntsoracle-paxos v0.1.0\n");
        assert_eq!(forbidden_found(testkit, &names), ["tsoracle-paxos"]);
    }

    fn rule(package: &str, no_default_features: bool) -> &'static Rule {
        RULES
            .iter()
            .find(|rule| rule.package == package && rule.no_default_features == no_default_features)
            .unwrap()
    }

    #[test]
    fn the_test_harness_in_a_shipped_package_is_reported() {
        let tree = |root: &str| {
            parse_tree(&format!(
                "{root} v0.1.0\n\
                 tsoracle-paxos-toolkit v0.1.0 (/w/crates/toolkit)\n\
                 tsoracle-paxos-harness v0.1.0 (/w/crates/harness)\n\
                 fastrand v2.5.0\n"
            ))
        };
        for (package, no_default_features, expected) in [
            (
                "tsoracle-driver-paxos",
                true,
                &["fastrand", "tsoracle-paxos-harness"][..],
            ),
            (
                "tsoracle-paxos-toolkit",
                true,
                &["fastrand", "tsoracle-paxos-harness"],
            ),
            (
                "tsoracle-paxos-toolkit",
                false,
                &["fastrand", "tsoracle-paxos-harness"],
            ),
            ("tsoracle-paxos-tonic", false, &["tsoracle-paxos-harness"]),
            ("tsoracle-paxos", false, &["tsoracle-paxos-harness"]),
        ] {
            assert_eq!(
                forbidden_found(rule(package, no_default_features), &tree(package)),
                expected,
                "{package}"
            );
        }
        // The harness itself may use the toolkit and fastrand, but not the
        // driver, the node, the transport or the disk.
        let harness = rule("tsoracle-paxos-harness", false);
        let names = parse_tree(
            "tsoracle-paxos-harness v0.1.0\n\
             tsoracle-paxos-toolkit v0.1.0\n\
             fastrand v2.5.0\n\
             tokio v1.48.0\n",
        );
        assert!(forbidden_found(harness, &names).is_empty());
        let names = parse_tree(
            "tsoracle-paxos-harness v0.1.0\n\
             tsoracle-driver-paxos v0.1.0\n\
             tsoracle-paxos-tonic v0.1.0\n\
             rocksdb v0.25.0\n",
        );
        assert_eq!(
            forbidden_found(harness, &names),
            ["rocksdb", "tsoracle-driver-paxos", "tsoracle-paxos-tonic"]
        );
    }

    #[test]
    fn the_core_check_catches_a_runtime_a_lock_a_clock_and_the_shell() {
        let text = "use std::time::Duration;\n\
            use tokio::sync::watch;\n\
            pub async fn f() { x.await }\n\
            let lease: std::sync::Mutex<u8>;\n\
            let now = std::time::Instant::now();\n\
            use crate::driver::Shell;\n\
            use crate::core::role::Role; use crate::error::ConfigError;\n";
        let found = impure_lines("core/x.rs", text);
        let lines: Vec<&str> = found
            .iter()
            .map(|v| v.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                "core/x.rs:2",
                "core/x.rs:3",
                "core/x.rs:3",
                "core/x.rs:4",
                "core/x.rs:5",
                "core/x.rs:6",
            ],
            "{found:#?}"
        );
        assert!(found[0].contains("`tokio`"), "{}", found[0]);
        assert!(found[5].contains("`crate::driver::Shell`"), "{}", found[5]);
    }

    #[test]
    fn the_core_check_ignores_comments_and_words_that_only_contain_a_name() {
        let text = "//! Not tokio, no async: the shell's job.\n\
            /// An `Instant::now()` reading, passed in.\n\
            let s = \"a // b\"; // then tokio\n\
            fn is_async_free(now: Duration) {} // crate::driver\n";
        assert_eq!(impure_lines("core/x.rs", text), Vec::<String>::new());
        assert_eq!(
            without_comment("let s = \"a // b\"; // c"),
            "let s = \"a // b\"; "
        );
    }

    #[test]
    fn the_driver_core_is_pure() {
        let root = crate::bench::workspace_root();
        assert_eq!(pure_core_violations(&root).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn the_package_itself_is_not_a_violation() {
        let names = parse_tree(
            "tsoracle-paxos-epoch v0.1.0\ntsoracle-paxos-omnipaxos v0.2.4 (/w/vendor/omnipaxos)\n",
        );
        assert!(forbidden_found(&RULES[0], &names).is_empty());
    }
}

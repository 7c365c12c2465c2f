//! Running child commands as named, timed steps.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::env::BuildEnv;

/// One named step of a pipeline: a command line plus environment overrides.
pub(crate) struct Step {
    name: String,
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(&'static str, OsString)>,
}

impl Step {
    pub(crate) fn new(name: impl Into<String>, program: impl Into<OsString>) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// `tsoracle-paxos-testkit <subcommand>` with its nodes run by the
    /// `tsoracle-paxos` built beside it (`--node-bin`), both from [`Bins`];
    /// add its flags with [`args`](Self::args). The binary is run as built:
    /// `cargo run` would resolve the test kit's features alone and rebuild
    /// what the workspace build already compiled.
    pub(crate) fn testkit(name: impl Into<String>, bins: &Bins, subcommand: &str) -> Self {
        Self::new(name, bins.testkit.as_os_str())
            .args([subcommand, "--node-bin"])
            .args([bins.node.as_os_str()])
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn env(mut self, key: &'static str, value: impl Into<OsString>) -> Self {
        self.envs.push((key, value.into()));
        self
    }

    /// Runs the command with the prepared build environment; a non-zero exit
    /// fails the step with the step's name.
    pub(crate) fn run(self, build_env: &BuildEnv) -> Result<()> {
        let name = self.name.clone();
        let rendered = self.render();
        self.run_fn(|| {
            eprintln!("  $ {rendered}");
            let mut command = Command::new(&self.program);
            command.args(&self.args).stdin(Stdio::null());
            build_env.apply(&mut command);
            for (key, value) in &self.envs {
                command.env(key, value);
            }
            let status = command
                .status()
                .with_context(|| format!("could not start `{}`", self.program.to_string_lossy()))?;
            if !status.success() {
                bail!("step `{name}` failed ({status})");
            }
            Ok(())
        })
    }

    /// Runs an in-process step with the same banner and timing as a command.
    pub(crate) fn run_fn(&self, f: impl FnOnce() -> Result<()>) -> Result<()> {
        eprintln!("==> {}", self.name);
        let started = Instant::now();
        let result = f();
        let verdict = if result.is_ok() { "ok" } else { "FAILED" };
        eprintln!("<== {} {verdict} in {:.1?}", self.name, started.elapsed());
        result
    }

    fn render(&self) -> String {
        let mut out = self.program.to_string_lossy().into_owned();
        for arg in &self.args {
            out.push(' ');
            out.push_str(&arg.to_string_lossy());
        }
        out
    }
}

/// Whether `cargo <name>` exists (an installed `cargo-<name>` binary).
pub(crate) fn cargo_subcommand_available(name: &str) -> bool {
    Command::new("cargo")
        .args([name, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The binaries of the node and the test kit, of one build.
pub(crate) struct Bins {
    /// Where that build puts binaries (`target/debug`, `target/release`).
    pub(crate) dir: PathBuf,
    /// `tsoracle-paxos`.
    pub(crate) node: PathBuf,
    /// `tsoracle-paxos-testkit`.
    pub(crate) testkit: PathBuf,
}

/// Builds `tsoracle-paxos` and `tsoracle-paxos-testkit` in release mode, as
/// one step named `name`, and returns where they are (under the target
/// directory cargo uses, `CARGO_TARGET_DIR` included).
pub(crate) fn build_release(name: &str, build_env: &BuildEnv) -> Result<Bins> {
    Step::new(name, "cargo")
        .args([
            "build",
            "--release",
            "--locked",
            "-q",
            "-p",
            "tsoracle-paxos",
            "-p",
            "tsoracle-paxos-testkit",
            "--bins",
        ])
        .run(build_env)?;
    Ok(Bins::under(&target_dir(build_env)?.join("release")))
}

/// Builds what `cargo xtask ci`'s tests build (every library, test and
/// binary of the workspace, all features, the dev and test profiles), as
/// one step named `name`, and returns where the node and the test kit are.
///
/// The same command line as the tests' build, so that `cargo xtask demo`
/// and `cargo xtask ci` on a fresh machine compile one dependency set
/// (RocksDB included) once: a build of the two binaries alone resolves
/// fewer features (no dev-dependencies) and would compile tokio and all
/// above it a second time.
pub(crate) fn build_with_tests(name: &str, build_env: &BuildEnv) -> Result<Bins> {
    // `--tests` resolves features as the tests do (dev-dependencies on);
    // unlike `cargo test --no-run` it also links every binary, examples'
    // packages included, which `ci` then runs. Not `--all-targets`: the
    // benches would build the dependencies again in the release profile.
    Step::new(name, "cargo")
        .args(["build"])
        .args(TEST_SELECTION)
        .args(["--lib", "--bins", "--tests", "--examples"])
        .run(build_env)?;
    Ok(Bins::under(&target_dir(build_env)?.join("debug")))
}

/// What CI's tests build (`cargo nextest run` and `cargo test` take the
/// same): any change here changes the demo's build with them.
pub(crate) const TEST_SELECTION: [&str; 3] = ["--workspace", "--all-features", "--locked"];

impl Bins {
    fn under(dir: &std::path::Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            node: dir.join("tsoracle-paxos"),
            testkit: dir.join("tsoracle-paxos-testkit"),
        }
    }
}

/// The workspace's target directory, as `cargo metadata` reports it.
fn target_dir(build_env: &BuildEnv) -> Result<PathBuf> {
    #[derive(Deserialize)]
    struct Metadata {
        target_directory: PathBuf,
    }
    let mut command = Command::new("cargo");
    command.args(["metadata", "--locked", "--no-deps", "--format-version", "1"]);
    build_env.apply(&mut command);
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("could not run cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed ({})", output.status);
    }
    let metadata: Metadata =
        serde_json::from_slice(&output.stdout).context("unreadable cargo metadata")?;
    Ok(metadata.target_directory)
}

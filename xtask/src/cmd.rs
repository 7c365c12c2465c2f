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
    program: &'static str,
    args: Vec<OsString>,
    envs: Vec<(&'static str, OsString)>,
}

impl Step {
    pub(crate) fn new(name: impl Into<String>, program: &'static str) -> Self {
        Self {
            name: name.into(),
            program,
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// `tsoracle-paxos-testkit <subcommand>` in release mode with its nodes
    /// run by the release `tsoracle-paxos` (`--node-bin`), both built by
    /// [`build_release`] (`demo`, `chaos`); add its flags with
    /// [`args`](Self::args).
    pub(crate) fn release_testkit(
        name: impl Into<String>,
        bins: &ReleaseBins,
        subcommand: &str,
    ) -> Self {
        Self::new(name, "cargo")
            .args([
                "run",
                "--release",
                "--locked",
                "-q",
                "-p",
                "tsoracle-paxos-testkit",
                "--",
                subcommand,
                "--node-bin",
            ])
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
            let mut command = Command::new(self.program);
            command.args(&self.args).stdin(Stdio::null());
            build_env.apply(&mut command);
            for (key, value) in &self.envs {
                command.env(key, value);
            }
            let status = command
                .status()
                .with_context(|| format!("could not start `{}`", self.program))?;
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
        let mut out = String::from(self.program);
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

/// The release binaries of the node and the test kit.
pub(crate) struct ReleaseBins {
    /// `tsoracle-paxos`.
    pub(crate) node: PathBuf,
    /// `tsoracle-paxos-testkit`.
    pub(crate) testkit: PathBuf,
}

/// Builds `tsoracle-paxos` and `tsoracle-paxos-testkit` in release mode, as
/// one step named `name`, and returns where they are (under the target
/// directory cargo uses, `CARGO_TARGET_DIR` included).
pub(crate) fn build_release(name: &str, build_env: &BuildEnv) -> Result<ReleaseBins> {
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
    let release = target_dir(build_env)?.join("release");
    Ok(ReleaseBins {
        node: release.join("tsoracle-paxos"),
        testkit: release.join("tsoracle-paxos-testkit"),
    })
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

//! `cargo xtask fuzz`: runs the cargo-fuzz targets under `fuzz/`.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cmd::Step;
use crate::env::BuildEnv;

/// The fuzzer needs nightly (sanitizer flags) and the cargo-fuzz subcommand.
const NIGHTLY: &str = "+nightly";
const SETUP_HINT: &str = "fuzzing needs the nightly toolchain and cargo-fuzz: \
    `rustup toolchain install nightly` and `cargo install cargo-fuzz`";

pub(crate) fn run(build_env: &BuildEnv, seconds: u64, only: Option<&str>) -> Result<()> {
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let targets = list_targets(build_env)?;
    let chosen: Vec<&str> = match only {
        Some(name) if targets.iter().any(|t| t == name) => vec![name],
        Some(name) => bail!("no fuzz target `{name}`; targets: {}", targets.join(", ")),
        None => targets.iter().map(String::as_str).collect(),
    };
    for target in chosen {
        Step::new(format!("fuzz {target} for {seconds}s"), "cargo")
            .args([NIGHTLY, "fuzz", "run", target, "--"])
            .args([format!("-max_total_time={seconds}")])
            .run(build_env)?;
    }
    Ok(())
}

fn list_targets(build_env: &BuildEnv) -> Result<Vec<String>> {
    let mut command = Command::new("cargo");
    command.args([NIGHTLY, "fuzz", "list"]).stdin(Stdio::null());
    build_env.apply(&mut command);
    let output = command.output().with_context(|| SETUP_HINT.to_owned())?;
    if !output.status.success() {
        bail!(
            "{SETUP_HINT}\n(cargo fuzz list said: {})",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let targets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("cargo fuzz list found no targets under fuzz/");
    }
    Ok(targets)
}

//! Check builds of the two workspaces that live outside the main one, so
//! neither rots unseen: the fuzz targets (`fuzz/`, cargo-fuzz needs nightly
//! to *run* them, not to compile them) and the benchmark's file and openraft
//! peers (`bench/peers`, built for real only by `cargo xtask bench`).
//!
//! Both share the main target directory, so the crates they have in common
//! with the workspace (tokio, tonic, serde...) are checked once.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cmd::Step;
use crate::env::BuildEnv;

pub(crate) fn check(build_env: &BuildEnv) -> Result<()> {
    let root = crate::bench::workspace_root();
    let target = target_dir(&root);
    check_step("check fuzz targets (fuzz/)", &root.join("fuzz"), &target).run(build_env)?;
    // A check build never links, so librocksdb-sys 0.17 (RocksDB 10, the
    // openraft driver's) is told its library is prebuilt instead of
    // compiling RocksDB's C++ a second time: its bindings are still
    // generated and every Rust line of the peers is still type-checked.
    check_step(
        "check benchmark peers (bench/peers)",
        &root.join("bench").join("peers"),
        &target,
    )
    .env(
        "ROCKSDB_LIB_DIR",
        target.join("no-rocksdb-in-a-check-build"),
    )
    .run(build_env)
}

fn check_step(name: &str, package_dir: &Path, target: &Path) -> Step {
    Step::new(name, "cargo")
        .args(["check", "--locked", "--all-targets", "--manifest-path"])
        .args([
            package_dir.join("Cargo.toml").into_os_string(),
            OsString::from("--target-dir"),
            target.as_os_str().to_owned(),
        ])
}

/// The main workspace's target directory: `CARGO_TARGET_DIR` when set
/// (relative to the working directory, as cargo reads it), else `target/` at
/// the root.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or(dir),
        None => root.join("target"),
    }
}

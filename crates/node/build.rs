//! Generates the admin service from `proto/admin.proto`, and stamps the
//! build with its git commit (`--version`, `tsoracle_paxos_build_info`).
//!
//! protoc is found through the `PROTOC` environment variable; `cargo xtask`
//! sets it to the vendored binary of `protoc-bin-vendored`. The commit is
//! `TSORACLE_PAXOS_COMMIT` when set (a build from a source archive, such as
//! the container image's), else `git rev-parse` of the checkout, else
//! `unknown`.

use std::path::Path;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/admin.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!(
        "cargo:rustc-env=TSORACLE_PAXOS_COMMIT={}",
        commit().unwrap_or_else(|| "unknown".to_owned())
    );
    if std::env::var_os("PROTOC").is_none() {
        return Err(
            "PROTOC is not set: build through `cargo xtask` (which points it at the \
                    vendored protoc) or set PROTOC to a protoc binary"
                .into(),
        );
    }
    // `status --json` prints the replies as they came.
    let serialize = "#[derive(serde::Serialize)]";
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .type_attribute(".tsoracle.paxos.admin.v1.StatusReply", serialize)
        .type_attribute(".tsoracle.paxos.admin.v1.PeerLink", serialize)
        .compile_protos(&["proto/admin.proto"], &["proto"])?;
    Ok(())
}

/// The commit this build is of, 12 hex digits. (No `-dirty` mark: it
/// would need the index watched, and every `git add` would rebuild the
/// node.)
fn commit() -> Option<String> {
    println!("cargo:rerun-if-env-changed=TSORACLE_PAXOS_COMMIT");
    if let Ok(given) = std::env::var("TSORACLE_PAXOS_COMMIT")
        && !given.is_empty()
    {
        return Some(given);
    }
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let git_dir = git(&["rev-parse", "--absolute-git-dir"])?;
    // Rebuilt when HEAD moves (a checkout, or a commit on the branch).
    let git_dir = Path::new(&git_dir);
    for watched in ["HEAD", "packed-refs"] {
        let path = git_dir.join(watched);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let path = git_dir.join(head);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}

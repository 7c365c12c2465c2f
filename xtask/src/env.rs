//! The build environment a fresh machine lacks: `protoc` (for `tsoracle-proto`)
//! and libclang (for RocksDB's bindgen).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The exact command a Debian-like machine needs when libclang is missing.
const APT_INSTALL: &str = "apt-get install -y libclang-dev";

/// Environment overrides applied to every command xtask runs.
pub(crate) struct BuildEnv {
    /// `Some` when xtask supplies protoc; `None` when the user's `PROTOC` is kept.
    protoc: Option<PathBuf>,
    libclang: PathBuf,
}

impl BuildEnv {
    pub(crate) fn apply(&self, command: &mut Command) {
        if let Some(protoc) = &self.protoc {
            command.env("PROTOC", protoc);
        }
    }

    #[allow(
        clippy::print_stdout,
        reason = "printing is what `cargo xtask env` is for"
    )]
    pub(crate) fn describe(&self) {
        match &self.protoc {
            Some(protoc) => println!("PROTOC={} (vendored)", protoc.display()),
            None => println!("PROTOC={} (from your environment)", env_or_empty("PROTOC")),
        }
        println!("libclang: {}", self.libclang.display());
    }
}

fn env_or_empty(key: &str) -> String {
    std::env::var(key).unwrap_or_default()
}

/// Finds or installs what the build needs; fails with the command to run when
/// it cannot install it itself.
pub(crate) fn prepare() -> Result<BuildEnv> {
    let protoc = if std::env::var_os("PROTOC").is_some() {
        None
    } else {
        Some(
            protoc_bin_vendored::protoc_bin_path()
                .context("the protoc-bin-vendored crate has no protoc for this platform; install protoc and set PROTOC")?,
        )
    };
    let libclang = match find_libclang() {
        Some(found) => found,
        None => install_libclang()?,
    };
    Ok(BuildEnv { protoc, libclang })
}

/// Looks where clang-sys (bindgen's loader) looks: `LIBCLANG_PATH`, then the
/// usual library directories of Linux distributions.
fn find_libclang() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LIBCLANG_PATH") {
        let dir = PathBuf::from(dir);
        if let Some(found) = libclang_in(&dir) {
            return Some(found);
        }
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for pattern_root in ["/usr/lib", "/usr/local/lib", "/usr/lib64", "/usr/local/opt"] {
        let root = Path::new(pattern_root);
        dirs.push(root.to_path_buf());
        if let Ok(children) = root.read_dir() {
            for child in children.flatten() {
                let name = child.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("llvm") {
                    dirs.push(child.path().join("lib"));
                } else if name.ends_with("-linux-gnu") {
                    dirs.push(child.path());
                }
            }
        }
    }
    dirs.iter().find_map(|dir| libclang_in(dir))
}

/// `libclang.so`, `libclang.so.N` or `libclang-N.so*`, but not `libclang-cpp`,
/// which is a different library that bindgen cannot use.
fn libclang_in(dir: &Path) -> Option<PathBuf> {
    dir.read_dir().ok()?.flatten().find_map(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_libclang = (name.starts_with("libclang.so") || name.starts_with("libclang-"))
            && name.contains(".so")
            && !name.starts_with("libclang-cpp");
        is_libclang.then(|| entry.path())
    })
}

fn install_libclang() -> Result<PathBuf> {
    let debian_like = Path::new("/usr/bin/apt-get").exists();
    if !debian_like {
        bail!(
            "libclang was not found; RocksDB's bindgen needs it. Install your distribution's \
             libclang development package and, if it lands outside the usual library \
             directories, set LIBCLANG_PATH to its folder."
        );
    }
    if !running_as_root() {
        bail!("libclang was not found; RocksDB's bindgen needs it. Run:\n    sudo {APT_INSTALL}");
    }
    eprintln!(
        "xtask: libclang was not found; installing Debian's libclang-dev with apt-get (needed by RocksDB's bindgen)"
    );
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "libclang-dev"][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("could not start apt-get")?;
        if !status.success() {
            bail!(
                "`apt-get {}` failed ({status}); run `{APT_INSTALL}` yourself",
                args.join(" ")
            );
        }
    }
    find_libclang().with_context(|| {
        format!("libclang-dev was installed but libclang is still not found; set LIBCLANG_PATH (tried `{APT_INSTALL}`)")
    })
}

/// Effective uid 0, read from procfs so xtask needs no libc bindings.
pub(crate) fn running_as_root() -> bool {
    process_uids("self").is_some_and(|uids| uids.get(1).is_some_and(|euid| euid == "0"))
}

/// The real, effective, saved and filesystem uids of process `pid`
/// (`self`: this one), from its `/proc/<pid>/status`.
pub(crate) fn process_uids(pid: &str) -> Option<Vec<String>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    Some(uids.split_whitespace().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libclang_matcher_skips_libclang_cpp() {
        let dir = tempdir_with(&["libclang-cpp.so.14", "libfoo.so"]);
        assert_eq!(libclang_in(dir.path()), None);
        std::fs::write(dir.path().join("libclang-14.so.1"), b"").unwrap();
        assert!(libclang_in(dir.path()).is_some());
    }

    #[test]
    fn libclang_matcher_finds_plain_soname() {
        let dir = tempdir_with(&["libclang.so.1"]);
        assert!(libclang_in(dir.path()).is_some());
    }

    fn tempdir_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            std::fs::write(dir.path().join(file), b"").unwrap();
        }
        dir
    }
}

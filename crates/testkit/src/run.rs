//! What `demo` and `chaos` share around their cluster: the nodes' program,
//! the run directory, the signal that ends a run early, and output.

use std::path::{Path, PathBuf};

use tsoracle_paxos_testkit::cluster::Serve;

use crate::error::Error;

/// `serve` nodes of the cluster `cluster_id`: run by `node_bin` (a built
/// `tsoracle-paxos`) when given, else by this binary's own copy of the
/// node's command line (`tsoracle-paxos-testkit node serve ...`).
pub(crate) fn serve_nodes(node_bin: Option<&Path>, cluster_id: &str) -> Result<Serve, Error> {
    Ok(match node_bin {
        Some(program) => Serve::new(program, cluster_id),
        None => {
            let exe = std::env::current_exe().map_err(|err| Error::runtime("cluster", err))?;
            Serve::new(exe, cluster_id).leading_args(["node"])
        }
    })
}

/// Where a run keeps its nodes' data and logs: `--dir` (kept), or a fresh
/// temporary directory (removed at the end unless asked to keep it).
pub(crate) struct RunDir {
    path: PathBuf,
    temporary: bool,
}

impl RunDir {
    /// `dir`, created if missing, or `$TMPDIR/tsoracle-paxos-<what>-<pid>`.
    pub(crate) fn new(dir: Option<&Path>, what: &str) -> Result<Self, Error> {
        let (path, temporary) = match dir {
            Some(dir) => (dir.to_path_buf(), false),
            None => (
                std::env::temp_dir().join(format!("tsoracle-paxos-{what}-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&path).map_err(|err| Error::runtime("run directory", err))?;
        Ok(Self { path, temporary })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes a temporary directory, unless `keep`; says where kept data is.
    pub(crate) fn finish(self, keep: bool) {
        if self.temporary && !keep {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            println_out(&format!("data and logs kept in {}", self.path.display()));
        }
    }
}

/// Resolves with the name of the first SIGTERM or SIGINT: a run that is
/// interrupted (Ctrl-C) ends through it and its cluster's cleanup.
pub(crate) use tsoracle_paxos::shutdown_signal as interrupted;

/// One line on stdout (a closed stdout is not an error worth stopping for).
pub(crate) fn println_out(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

//! Test tooling for tsoracle-paxos (not published).
//!
//! The library is [`cluster`]: a local cluster of node processes on
//! 127.0.0.1 (ports reserved until the nodes start and a start that tries
//! again on fresh ports when one was taken, data directories and logs,
//! SIGKILL, SIGSTOP and SIGCONT, restarts, each node's metrics page, and
//! every child stopped on every exit path). The `tsoracle-paxos-testkit`
//! binary (feature `cli`, on by default) runs on it:
//!
//! ```text
//! tsoracle-paxos-testkit demo                         # a local cluster, a leader kill, the checks
//! tsoracle-paxos-testkit chaos --duration 60s         # kills, cuts, pauses, a checked history
//! tsoracle-paxos-testkit bench --endpoint HOST:PORT   # a bounded load, latency percentiles
//! tsoracle-paxos-testkit node serve ...               # the tsoracle-paxos command line
//! ```
//!
//! `demo` and `chaos` run their nodes with the test kit's own copy of the
//! node's command line (`node serve`), or with `--node-bin PATH` (a built
//! `tsoracle-paxos`, as `cargo xtask demo` and `chaos` pass).
//!
//! [`process`] is for tests that run the node's command line themselves
//! (the node's tests and the test kit's): a three-node layout, node
//! processes killed when dropped, client calls retried until answered.
//!
//! `cargo xtask bench` links the library without default features: it
//! compiles neither the node nor RocksDB.
//!
//! ```no_run
//! use tsoracle_paxos_testkit::cluster::{Cluster, Serve, Setup};
//!
//! # fn example() -> Result<(), tsoracle_paxos_testkit::cluster::Error> {
//! let dir = std::path::Path::new("/tmp/cluster");
//! let serve = Serve::new("target/release/tsoracle-paxos", "demo").with_metrics();
//! let mut cluster = Cluster::plan(serve, Setup::new(3, dir))?;
//! cluster.start()?;
//! println!("clients connect to {:?}", cluster.endpoints());
//! cluster.kill(1);
//! cluster.restart(1)?;
//! cluster.stop();
//! # Ok(())
//! # }
//! ```

pub mod cluster;
mod ports;
pub mod process;

//! Test tooling for tsoracle-paxos (not published).
//!
//! [`cluster`] is a local cluster of node processes on 127.0.0.1 (ports
//! reserved until the nodes start and a start that tries again on fresh
//! ports when one was taken, data directories and logs, SIGKILL, SIGSTOP
//! and SIGCONT, restarts, each node's metrics page, and every child stopped
//! on every exit path). It compiles neither the node nor RocksDB, so
//! `cargo xtask bench` links it.
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

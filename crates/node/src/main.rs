//! `tsoracle-paxos`: a tsoracle timestamp oracle node on the OmniPaxos
//! driver, and the client commands to talk to one.
//!
//! ```text
//! tsoracle-paxos serve --config node.toml          # run a node
//! tsoracle-paxos status --metrics 10.0.0.1:9101    # each node's role, indices, lag
//! tsoracle-paxos get-ts --endpoint 10.0.0.1:7001   # one timestamp
//! tsoracle-paxos seq --endpoint 10.0.0.1:7001 --key orders --count 10
//! ```
//!
//! The command line lives in the library (`tsoracle_paxos::cli`); the demo,
//! the chaos run and the load generator are the test kit's
//! (`tsoracle-paxos-testkit`).

fn main() -> std::process::ExitCode {
    tsoracle_paxos::cli::main()
}

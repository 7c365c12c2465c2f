//! `tsoracle-paxos`: a tsoracle timestamp oracle node on the OmniPaxos
//! driver, and the client commands to talk to one.
//!
//! ```text
//! tsoracle-paxos serve --config node.toml          # run a node
//! tsoracle-paxos status --cluster-id prod-tso --node 1=10.0.0.1:6001   # every member
//! tsoracle-paxos get-ts --endpoint 10.0.0.1:7001   # one timestamp
//! tsoracle-paxos seq --endpoint 10.0.0.1:7001 --key orders --count 10
//! tsoracle-paxos member list --cluster-id prod-tso --node 1=10.0.0.1:6001
//! tsoracle-paxos export --cluster-id prod-tso --node 1=10.0.0.1:6001 --out state.json
//! ```
//!
//! The command line lives in the library (`tsoracle_paxos::cli`); the demo,
//! the chaos run and the load generator are the test kit's
//! (`tsoracle-paxos-testkit`).

fn main() -> std::process::ExitCode {
    tsoracle_paxos::cli::main()
}

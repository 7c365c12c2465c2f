//! The pure decision core of the driver: no runtime, no I/O, no locks and
//! no clock of its own. Every function that depends on time takes `now`, a
//! reading of this node's monotonic clock, as an argument, so unit tests,
//! property tests and a simulation drive it as plain functions.
//!
//! - [`timing`] — ticks, election timeout, lease and clock drift, and the
//!   assumptions the lease rests on.
//! - [`lease`] — [`LeaseTracker`](lease::LeaseTracker): OmniPaxos
//!   observations and decisions in, a [`Role`](role::Role) out (invariant 5).
//! - [`identity`] and [`membership`] — who may take part: a peer's data
//!   directory instance against the registered one, and the member list a
//!   node was given against the recorded one (invariant 11).
//! - [`change`] — membership change: the next list a request makes, the
//!   one StopSign a node admits, and what a node does once its
//!   configuration ended (invariant 12).
//! - [`role`] — [`Role`](role::Role) and [`Term`](role::Term).
//! - [`events`] — [`LeaderEvents`](events::LeaderEvents): roles in,
//!   `LeaderState` changes out, epochs never decreasing (invariant 6).
//! - [`fence`] — the checks before a proposal and the mapping of apply
//!   outcomes (invariant 4).
//! - [`gate`] — the rule every reply carrying data passes after it was
//!   produced (invariant 5, paused processes).
//! - [`step`] — [`Engine`]: every leadership decision of the driver over
//!   the pieces above, as `step(now, event) -> actions` (publish a state,
//!   log a lapse, propose the single in-flight renewal, wake, sleep until
//!   the next lease event) and plain questions asked with `now` (admit a
//!   write, acknowledge it once applied, is its term lost, may a reply
//!   leave). The async driver is a shell that carries the actions out.
//!
//! `cargo xtask layering` keeps it so: no file of this folder may name
//! tokio, `async`/`.await`, a lock or atomic, `Instant` or `SystemTime`,
//! threads, files or sockets, nor any `crate::` path but `crate::core`,
//! `crate::error` and `crate::mutation`.

pub mod change;
pub mod events;
pub mod fence;
pub mod gate;
pub mod identity;
pub mod lease;
pub mod membership;
pub mod role;
pub mod step;
pub mod timing;

pub use step::{Action, Engine, Event};

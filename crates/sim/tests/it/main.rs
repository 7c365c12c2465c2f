//! The simulation's own tests: one module per property it must have.

mod liveness;
mod mutations;
mod replay;
mod seeds;

//! The snapshot decoder (a lagging peer may receive one over the network)
//! must reject any malformed input without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsoracle_paxos_state::PaxosSnapshot;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = PaxosSnapshot::from_bytes(data) {
        // Folding an accepted snapshot must not panic either.
        let _ = snapshot.into_state();
    }
});

//! The inbound peer-frame decoder (bytes straight off the network) must
//! reject any malformed frame without panicking, and what it accepts must
//! re-encode and decode to the same messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsoracle_paxos_state::PaxosEntry;
use tsoracle_paxos_tonic::{decode_frame, encode_frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(messages) = decode_frame::<PaxosEntry>(data) {
        let again = encode_frame(&messages).expect("decoded messages re-encode");
        let back = decode_frame::<PaxosEntry>(&again).expect("re-encoded frame decodes");
        assert_eq!(back.len(), messages.len());
    }
});

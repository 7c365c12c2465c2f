//! The replicated command decoder must reject any malformed input without
//! panicking, and re-encode what it accepts to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsoracle_paxos_state::PaxosEntry;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = PaxosEntry::from_bytes(data) {
        let again = entry.to_bytes().expect("a decoded entry re-encodes");
        let back = PaxosEntry::from_bytes(&again).expect("re-encoded bytes decode");
        assert_eq!(back, entry);
    }
});

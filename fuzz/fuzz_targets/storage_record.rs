//! The storage record decoder (version byte, postcard payload, checksum) must
//! return an error on any corrupt input, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omnipaxos::ballot_leader_election::Ballot;
use tsoracle_paxos_state::PaxosEntry;
use tsoracle_paxos_toolkit::storage::codec::decode_record;

fuzz_target!(|data: &[u8]| {
    // The record kinds RocksdbStorage reads back: log entries and metadata.
    let _ = decode_record::<PaxosEntry>("fuzz entry", data);
    let _ = decode_record::<Option<Ballot>>("fuzz promise", data);
    let _ = decode_record::<u64>("fuzz index", data);
});

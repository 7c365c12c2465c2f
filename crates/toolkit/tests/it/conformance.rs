//! The storage conformance suite (`tsoracle_paxos_harness::conformance`):
//! every case runs against every backend (`memory::*` and `rocksdb::*`), so
//! the backends cannot drift apart. Both also insist that a refused write
//! is the toolkit's `Error::InvalidOperation`.

use tsoracle_paxos_harness::conformance::{self, CASES};

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[test]
                fn $case() {
                    if let Err(failure) =
                        super::conformance::$case(&mut crate::common::MemoryHarness)
                    {
                        panic!("{failure}");
                    }
                }
            )*
        }

        #[cfg(feature = "rocksdb")]
        mod rocksdb {
            $(
                #[test]
                fn $case() {
                    if let Err(failure) =
                        super::conformance::$case(&mut crate::common::RocksHarness::new())
                    {
                        panic!("{failure}");
                    }
                }
            )*
        }

        /// One test per case of the suite, none forgotten.
        #[test]
        fn every_case_of_the_suite_runs_here() {
            assert_eq!([$(stringify!($case)),*].as_slice(), CASES);
        }
    };
}

conformance!(
    append_and_read,
    out_of_range_reads_are_empty,
    append_on_prefix_truncates_and_replaces,
    append_on_prefix_refuses_gaps_and_trimmed_indices,
    trim_below_at_and_beyond_end,
    snapshot_install_on_a_lagging_follower,
    compacted_idx,
    snapshot_set_get_none,
    metadata_set_and_get,
    write_atomically_applies_in_order,
    refused_write_changes_nothing,
    reopen_preserves_everything,
    empty_writes_are_noops,
);

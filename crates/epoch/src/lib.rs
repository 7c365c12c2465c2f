//! Lossless, injective and order-preserving codec between OmniPaxos ballots
//! and tsoracle epochs.
//!
//! tsoracle fences writes by comparing [`Epoch`]s, and its client orders them to
//! pick the newest leader. An OmniPaxos leader is identified by its
//! [`Ballot`], so the driver needs an encoding that keeps every ballot distinct
//! (no two leaders share an epoch) and keeps the election order (a newer leader
//! never looks older than the one it replaced).
//!
//! # Layout
//!
//! ```text
//!  127        96 95         64 63         32 31          0
//! +-------------+-------------+-------------+-------------+
//! |  config_id  |      n      |  priority   |     pid     |
//! +-------------+-------------+-------------+-------------+
//! ```
//!
//! - `config_id` is the top field because a new configuration ranks above every
//!   ballot of older ones: its leaders must never be fenced by a leader of the
//!   configuration it replaced, whatever their round numbers.
//! - `priority` is encoded because OmniPaxos orders ballots by
//!   `(n, priority, pid)`: a codec that dropped it would disagree with
//!   OmniPaxos whenever priorities differ (a higher-priority node with a lower
//!   pid wins the election, yet would encode to a smaller epoch).
//! - `pid` therefore has 32 bits. OmniPaxos node ids are `u64`, so
//!   [`encode_epoch`] refuses a pid above [`MAX_NODE_ID`] with
//!   [`EpochError::PidOutOfRange`] rather than truncating it into a collision.
//!   Check node ids once at build time with [`validate_node_id`].
//!
//! The default ballot (all fields zero, what OmniPaxos reports before any
//! election) encodes to [`Epoch::ZERO`]. Real ballots carry `config_id >= 1`
//! (OmniPaxos refuses a configuration id of 0 when it builds a cluster), so
//! they encode strictly above zero.
//!
//! # Example
//!
//! ```
//! use omnipaxos::ballot_leader_election::Ballot;
//! use tsoracle_paxos_epoch::{decode_epoch, encode_epoch, validate_node_id};
//!
//! validate_node_id(3)?;
//! let ballot = Ballot::with(1, 7, 0, 3);
//! let epoch = encode_epoch(ballot)?;
//! assert_eq!(decode_epoch(epoch), ballot);
//!
//! // A higher round encodes to a higher epoch.
//! let newer = encode_epoch(Ballot::with(1, 8, 0, 2))?;
//! assert!(newer > epoch);
//! # Ok::<(), tsoracle_paxos_epoch::EpochError>(())
//! ```

use omnipaxos::ballot_leader_election::Ballot;
use tsoracle_core::Epoch;

/// The largest node id (OmniPaxos pid) the codec can encode: pids have 32 bits
/// in the epoch layout.
pub const MAX_NODE_ID: u64 = u32::MAX as u64;

/// Bit offset of each field inside the `u128` epoch.
const CONFIG_SHIFT: u32 = 96;
const N_SHIFT: u32 = 64;
const PRIORITY_SHIFT: u32 = 32;
const FIELD_MASK: u128 = u32::MAX as u128;

/// Errors of the epoch codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    /// The ballot's pid (node id) does not fit the 32-bit pid field.
    #[error("node id {pid} does not fit the epoch's 32-bit pid field (max {MAX_NODE_ID})")]
    PidOutOfRange {
        /// The offending pid.
        pid: u64,
    },
    /// Node id 0 is not a valid OmniPaxos node id (ids are `1..=N`).
    #[error("node id 0 is invalid: OmniPaxos node ids are 1..=N")]
    ZeroNodeId,
}

/// Encodes a ballot as an epoch, losslessly.
///
/// Within one configuration the numeric order of the result equals the
/// ballot order `(n, priority, pid)`; across configurations a higher
/// `config_id` always encodes higher.
///
/// # Errors
///
/// [`EpochError::PidOutOfRange`] when `ballot.pid > MAX_NODE_ID`; the pid is
/// never truncated.
pub fn encode_epoch(ballot: Ballot) -> Result<Epoch, EpochError> {
    let pid =
        u32::try_from(ballot.pid).map_err(|_| EpochError::PidOutOfRange { pid: ballot.pid })?;
    Ok(Epoch(
        (u128::from(ballot.config_id) << CONFIG_SHIFT)
            | (u128::from(ballot.n) << N_SHIFT)
            | (u128::from(ballot.priority) << PRIORITY_SHIFT)
            | u128::from(pid),
    ))
}

/// Decodes an epoch back into the ballot it was encoded from.
///
/// Total: every `u128` is a valid layout, so this never fails.
#[must_use]
pub fn decode_epoch(epoch: Epoch) -> Ballot {
    // Each field is masked to 32 bits first, so the narrowing is exact.
    let field = |shift: u32| ((epoch.0 >> shift) & FIELD_MASK) as u32;
    Ballot::with(
        field(CONFIG_SHIFT),
        field(N_SHIFT),
        field(PRIORITY_SHIFT),
        u64::from(field(0)),
    )
}

/// Checks that `node_id` is usable as an OmniPaxos pid with this codec:
/// `1..=MAX_NODE_ID`. Call it when building a node, so a bad id fails at
/// start-up rather than at the first election.
///
/// # Errors
///
/// [`EpochError::ZeroNodeId`] for 0, [`EpochError::PidOutOfRange`] above
/// [`MAX_NODE_ID`].
pub fn validate_node_id(node_id: u64) -> Result<(), EpochError> {
    if node_id == 0 {
        return Err(EpochError::ZeroNodeId);
    }
    if node_id > MAX_NODE_ID {
        return Err(EpochError::PidOutOfRange { pid: node_id });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ballot(config_id: u32, n: u32, priority: u32, pid: u64) -> Ballot {
        Ballot::with(config_id, n, priority, pid)
    }

    fn fields(b: Ballot) -> (u32, u32, u32, u64) {
        (b.config_id, b.n, b.priority, b.pid)
    }

    #[test]
    fn default_ballot_is_epoch_zero() {
        assert_eq!(encode_epoch(Ballot::default()), Ok(Epoch::ZERO));
        assert_eq!(fields(decode_epoch(Epoch::ZERO)), fields(Ballot::default()));
    }

    #[test]
    fn real_ballots_encode_above_zero() {
        assert!(encode_epoch(ballot(1, 0, 0, 0)).unwrap() > Epoch::ZERO);
    }

    #[test]
    fn golden_layout_is_pinned() {
        // Changing this value changes every epoch a running cluster has handed out.
        let e = encode_epoch(ballot(0x0102_0304, 0x0506_0708, 0x090a_0b0c, 0x0d0e_0f10)).unwrap();
        assert_eq!(e.0, 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10_u128);
        let e = encode_epoch(ballot(1, 2, 3, 4)).unwrap();
        assert_eq!(e.0, 79_228_162_551_157_825_753_847_955_460);
    }

    #[test]
    fn max_fields_round_trip() {
        let b = ballot(u32::MAX, u32::MAX, u32::MAX, MAX_NODE_ID);
        let e = encode_epoch(b).unwrap();
        assert_eq!(e, Epoch(u128::MAX));
        assert_eq!(fields(decode_epoch(e)), fields(b));
    }

    #[test]
    fn pid_above_u32_is_an_error_not_a_truncation() {
        let pid = MAX_NODE_ID + 1;
        assert_eq!(
            encode_epoch(ballot(1, 1, 0, pid)),
            Err(EpochError::PidOutOfRange { pid })
        );
        assert_eq!(
            encode_epoch(ballot(1, 1, 0, u64::MAX)),
            Err(EpochError::PidOutOfRange { pid: u64::MAX })
        );
        assert!(encode_epoch(ballot(1, 1, 0, MAX_NODE_ID)).is_ok());
    }

    #[test]
    fn validate_node_id_bounds() {
        assert_eq!(validate_node_id(0), Err(EpochError::ZeroNodeId));
        assert_eq!(validate_node_id(1), Ok(()));
        assert_eq!(validate_node_id(MAX_NODE_ID), Ok(()));
        assert_eq!(
            validate_node_id(MAX_NODE_ID + 1),
            Err(EpochError::PidOutOfRange {
                pid: MAX_NODE_ID + 1
            })
        );
    }

    #[test]
    fn priority_outranks_pid() {
        // OmniPaxos elects the higher priority even with a lower pid.
        let low_pid_high_prio = ballot(1, 5, 9, 1);
        let high_pid_low_prio = ballot(1, 5, 1, 3);
        assert!(low_pid_high_prio > high_pid_low_prio);
        assert!(
            encode_epoch(low_pid_high_prio).unwrap() > encode_epoch(high_pid_low_prio).unwrap()
        );
    }

    #[test]
    fn newer_configuration_outranks_any_older_ballot() {
        let old = ballot(1, u32::MAX, u32::MAX, MAX_NODE_ID);
        let new = ballot(2, 0, 0, 1);
        assert!(encode_epoch(new).unwrap() > encode_epoch(old).unwrap());
    }

    #[test]
    fn error_messages_name_the_problem() {
        let msg = EpochError::PidOutOfRange { pid: 1 << 40 }.to_string();
        assert!(msg.contains(&(1u64 << 40).to_string()), "{msg}");
        assert!(EpochError::ZeroNodeId.to_string().contains("1..=N"));
    }

    fn any_ballot() -> impl Strategy<Value = Ballot> {
        // Small ranges make equal fields (ties) common, which is where order bugs hide.
        let small = || prop_oneof![0u32..4, any::<u32>()];
        (
            small(),
            small(),
            small(),
            prop_oneof![0u64..4, 0..=MAX_NODE_ID],
        )
            .prop_map(|(c, n, p, pid)| ballot(c, n, p, pid))
    }

    proptest! {
        #[test]
        fn round_trip(b in any_ballot()) {
            let e = encode_epoch(b).unwrap();
            prop_assert_eq!(fields(decode_epoch(e)), fields(b));
        }

        #[test]
        fn decode_then_encode_is_identity(raw in any::<u128>()) {
            prop_assert_eq!(encode_epoch(decode_epoch(Epoch(raw))), Ok(Epoch(raw)));
        }

        #[test]
        fn order_matches_ballot_order_within_a_configuration(
            mut a in any_ballot(),
            b in any_ballot(),
        ) {
            a.config_id = b.config_id;
            prop_assert_eq!(a.cmp(&b), encode_epoch(a).unwrap().cmp(&encode_epoch(b).unwrap()));
        }

        #[test]
        fn configuration_id_dominates(a in any_ballot(), b in any_ballot()) {
            prop_assume!(a.config_id != b.config_id);
            prop_assert_eq!(
                a.config_id.cmp(&b.config_id),
                encode_epoch(a).unwrap().cmp(&encode_epoch(b).unwrap())
            );
        }

        #[test]
        fn distinct_ballots_never_collide(a in any_ballot(), b in any_ballot()) {
            if encode_epoch(a).unwrap() == encode_epoch(b).unwrap() {
                prop_assert_eq!(fields(a), fields(b));
            }
        }

        #[test]
        fn out_of_range_pid_is_always_rejected(b in any_ballot(), pid in (MAX_NODE_ID + 1)..=u64::MAX) {
            let b = ballot(b.config_id, b.n, b.priority, pid);
            prop_assert_eq!(encode_epoch(b), Err(EpochError::PidOutOfRange { pid }));
        }
    }
}

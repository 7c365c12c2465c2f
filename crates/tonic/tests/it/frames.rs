//! Property tests of the frame decoder the receiver runs on network bytes.

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::Message;
use omnipaxos::messages::sequence_paxos::{PaxosMessage, PaxosMsg};
use proptest::prelude::*;
use tsoracle_paxos_tonic::{FRAME_FORMAT, decode_frame, encode_frame};

use crate::common::{TestEntry, heartbeat};

fn message() -> impl Strategy<Value = Message<TestEntry>> {
    prop_oneof![
        (1u64..10, 1u64..10).prop_map(|(from, to)| heartbeat(from, to)),
        (
            1u64..10,
            1u64..10,
            proptest::collection::vec(any::<u64>(), 0..20)
        )
            .prop_map(|(from, to, values)| {
                Message::SequencePaxos(PaxosMessage {
                    from,
                    to,
                    msg: PaxosMsg::ProposalForward(values.into_iter().map(TestEntry).collect()),
                })
            }),
        (1u64..10, 1u64..10, any::<u32>(), any::<u32>()).prop_map(|(from, to, n, prio)| {
            Message::SequencePaxos(PaxosMessage {
                from,
                to,
                msg: PaxosMsg::PrepareReq(omnipaxos::messages::sequence_paxos::PrepareReq {
                    n: Ballot::with(1, n, prio, from),
                }),
            })
        }),
    ]
}

fn shape(messages: &[Message<TestEntry>]) -> Vec<String> {
    messages.iter().map(|m| format!("{m:?}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame::<TestEntry>(&bytes);
        // With the right format byte the postcard path is exercised too.
        let mut framed = vec![FRAME_FORMAT];
        framed.extend_from_slice(&bytes);
        let _ = decode_frame::<TestEntry>(&framed);
    }

    #[test]
    fn valid_batches_round_trip(batch in proptest::collection::vec(message(), 0..16)) {
        let frame = encode_frame(&batch).unwrap();
        prop_assert_eq!(frame[0], FRAME_FORMAT);
        let decoded = decode_frame::<TestEntry>(&frame).unwrap();
        prop_assert_eq!(shape(&decoded), shape(&batch));
    }

    #[test]
    fn truncated_or_extended_frames_are_errors(
        batch in proptest::collection::vec(message(), 1..8),
        cut in any::<prop::sample::Index>(),
        extra in 1u8..=255,
    ) {
        let frame = encode_frame(&batch).unwrap();
        let cut = cut.index(frame.len());
        // A strict prefix either fails or decodes to fewer messages; never panics.
        if let Ok(decoded) = decode_frame::<TestEntry>(&frame[..cut]) {
            prop_assert!(decoded.len() < batch.len());
        }
        let mut longer = frame.clone();
        longer.push(extra);
        prop_assert!(decode_frame::<TestEntry>(&longer).is_err());
    }
}

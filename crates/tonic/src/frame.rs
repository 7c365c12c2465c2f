//! The batch frame format, and the split of a batch into frames and
//! transfers.
//!
//! Format 1 is `[1][postcard(Vec<Message<T>>)]`: the format byte, then
//! postcard's encoding of the batch (a varint message count followed by each
//! message's postcard encoding). Trailing bytes are refused. The sender
//! splits a batch whose encoding exceeds the frame limit at message
//! boundaries, so each frame decodes on its own. A single message above the
//! frame limit (a catch-up `AcceptSync` with a large snapshot or a long log
//! suffix) is sent as a transfer instead, in its place (formats 3 and 4, see
//! `transfer`); one above `max_message_bytes` is dropped and counted.

use omnipaxos::messages::Message;
use omnipaxos::messages::sequence_paxos::{PaxosMessage, PaxosMsg};
use omnipaxos::storage::Entry;
use postcard::ser_flavors::Size;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::transfer::{BODY_FORMAT, HEAD_FORMAT};

/// The frame format byte of a batch (what [`encode_frame`] writes).
pub const FRAME_FORMAT: u8 = 1;

/// Decodes one frame payload into its messages.
///
/// Never panics, whatever the bytes: a frame that is empty, of another
/// format, truncated, or followed by trailing bytes is an error. This is the
/// function a fuzz target calls. Transfer frames (formats 3 and 4) are read
/// by the peer service, which spools them.
pub fn decode_frame<T>(bytes: &[u8]) -> Result<Vec<Message<T>>, Error>
where
    T: Entry,
    Message<T>: DeserializeOwned,
{
    let (&format, payload) = bytes.split_first().ok_or(Error::EmptyFrame)?;
    if format != FRAME_FORMAT {
        return Err(Error::UnsupportedFrameFormat {
            found: format,
            supported: FRAME_FORMAT,
        });
    }
    let (messages, rest) = postcard::take_from_bytes::<Vec<Message<T>>>(payload)
        .map_err(|err| Error::MalformedFrame(err.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::MalformedFrame(format!(
            "{} trailing bytes after the batch",
            rest.len()
        )));
    }
    Ok(messages)
}

/// Encodes `messages` as one frame payload, whatever its size.
pub fn encode_frame<T>(messages: &[Message<T>]) -> Result<Vec<u8>, Error>
where
    T: Entry,
    Message<T>: Serialize,
{
    let out = vec![FRAME_FORMAT];
    postcard::to_extend(messages, out).map_err(|err| Error::Encode(err.to_string()))
}

/// What a frame payload is, by its format byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    TransferBody,
    TransferHead,
    /// A batch, or any other byte: [`decode_frame`] refuses those.
    Batch,
}

pub(crate) fn kind(payload: &[u8]) -> FrameKind {
    match payload.first() {
        Some(&BODY_FORMAT) => FrameKind::TransferBody,
        Some(&HEAD_FORMAT) => FrameKind::TransferHead,
        _ => FrameKind::Batch,
    }
}

/// A frame ready to send, with the number of messages it carries.
#[derive(Debug)]
pub(crate) struct EncodedFrame {
    pub(crate) payload: Vec<u8>,
    pub(crate) messages: usize,
}

/// One unit of a link's outbound order.
#[derive(Debug)]
pub(crate) enum Piece<T: Entry> {
    /// A frame ready to send.
    Frame(EncodedFrame),
    /// A message too large for a frame, to send as a transfer.
    Large(Message<T>),
}

/// What [`split_into_frames`] could not encode, and what it set apart.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Rejected {
    /// Messages whose own encoding exceeds the message limit.
    pub(crate) oversize: usize,
    /// Messages that failed to encode.
    pub(crate) failed: usize,
    /// Messages set apart as transfers (not rejected; counted here for
    /// the stats).
    pub(crate) large: usize,
}

/// The frame and message limits of a link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest frame payload.
    pub(crate) frame: usize,
    /// Largest single message, sent as a transfer when above `frame`.
    pub(crate) message: usize,
}

/// Encodes `batch` into as few frames as fit `limits.frame`, in order; a
/// message too large for a frame (but not above `limits.message`) takes its
/// place as a [`Piece::Large`]. A message that can carry log entries or a
/// snapshot is measured first, so a large one is never encoded here; any
/// other is small, and is encoded once, without measuring.
pub(crate) fn split_into_frames<T>(
    batch: Vec<Message<T>>,
    limits: Limits,
) -> (Vec<Piece<T>>, Rejected)
where
    T: Entry,
    Message<T>: Serialize,
{
    let mut frames = Frames {
        limits,
        pieces: Vec::new(),
        rejected: Rejected::default(),
        body: Vec::new(),
        count: 0,
    };
    for message in batch {
        if carries_log(&message) {
            let Ok(size) =
                postcard::serialize_with_flavor::<_, Size, usize>(&message, Size::default())
            else {
                frames.rejected.failed += 1;
                continue;
            };
            if frame_len(1, size) > limits.frame {
                frames.set_apart(message, size);
                continue;
            }
        }
        let Ok(encoded) = postcard::to_allocvec(&message) else {
            frames.rejected.failed += 1;
            continue;
        };
        if frame_len(1, encoded.len()) > limits.frame {
            frames.set_apart(message, encoded.len());
            continue;
        }
        frames.push(&encoded);
    }
    frames.finish_frame();
    (frames.pieces, frames.rejected)
}

/// Whether `message` can carry log entries or a snapshot, and so be of any
/// size.
fn carries_log<T: Entry>(message: &Message<T>) -> bool {
    matches!(
        message,
        Message::SequencePaxos(PaxosMessage {
            msg: PaxosMsg::Promise(_)
                | PaxosMsg::AcceptSync(_)
                | PaxosMsg::AcceptDecide(_)
                | PaxosMsg::ProposalForward(_),
            ..
        })
    )
}

/// The pieces of a batch being split.
struct Frames<T: Entry> {
    limits: Limits,
    pieces: Vec<Piece<T>>,
    rejected: Rejected,
    /// Encoded messages of the frame being filled.
    body: Vec<u8>,
    count: usize,
}

impl<T: Entry> Frames<T> {
    /// Adds an encoded message, closing the frame being filled first when
    /// it would not fit.
    fn push(&mut self, encoded: &[u8]) {
        if self.count > 0
            && frame_len(self.count + 1, self.body.len() + encoded.len()) > self.limits.frame
        {
            self.finish_frame();
        }
        self.body.extend_from_slice(encoded);
        self.count += 1;
    }

    /// A message of `size` bytes too large for a frame: a transfer in its
    /// place, or dropped above the message limit.
    fn set_apart(&mut self, message: Message<T>, size: usize) {
        if size > self.limits.message {
            self.rejected.oversize += 1;
            return;
        }
        // What was gathered goes first: the link keeps message order.
        self.finish_frame();
        self.pieces.push(Piece::Large(message));
        self.rejected.large += 1;
    }

    fn finish_frame(&mut self) {
        if self.count > 0 {
            self.pieces
                .push(Piece::Frame(finish(&self.body, self.count)));
            self.body.clear();
            self.count = 0;
        }
    }
}

fn frame_len(count: usize, body: usize) -> usize {
    1 + varint_len(count) + body
}

fn finish(body: &[u8], count: usize) -> EncodedFrame {
    let mut payload = Vec::with_capacity(frame_len(count, body.len()));
    payload.push(FRAME_FORMAT);
    push_varint(&mut payload, count);
    payload.extend_from_slice(body);
    EncodedFrame {
        payload,
        messages: count,
    }
}

/// postcard's varint for a `u64`: unsigned LEB128.
fn push_varint_u64(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// postcard's length prefix: unsigned LEB128.
fn push_varint(out: &mut Vec<u8>, value: usize) {
    push_varint_u64(out, u64::try_from(value).unwrap_or(u64::MAX));
}

fn varint_len(value: usize) -> usize {
    let bits = usize::BITS - value.leading_zeros();
    (bits.max(1) as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use omnipaxos::ballot_leader_election::Ballot;
    use omnipaxos::messages::sequence_paxos::{PaxosMessage, PaxosMsg, PrepareReq};
    use omnipaxos::storage::NoSnapshot;

    use super::*;

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Blob(Vec<u8>);

    impl Entry for Blob {
        type Snapshot = NoSnapshot;
    }

    fn message(from: u64, pad: usize) -> Message<Blob> {
        // A forwarded proposal carries entries: its size follows `pad`.
        Message::SequencePaxos(PaxosMessage {
            from,
            to: 2,
            msg: PaxosMsg::ProposalForward(vec![Blob(vec![7; pad])]),
        })
    }

    fn senders(messages: &[Message<Blob>]) -> Vec<u64> {
        messages.iter().map(Message::get_sender).collect()
    }

    #[test]
    fn varint_matches_postcard() {
        for value in [0usize, 1, 127, 128, 300, 16_383, 16_384, usize::MAX] {
            let mut ours = Vec::new();
            push_varint(&mut ours, value);
            assert_eq!(ours.len(), varint_len(value));
            let theirs = postcard::to_allocvec(&(value as u64)).unwrap();
            assert_eq!(ours, theirs, "{value}");
        }
    }

    #[test]
    fn split_frames_decode_in_order_and_respect_the_limit() {
        let batch: Vec<_> = (1..=40).map(|i| message(i, 100)).collect();
        let limit = 1000;
        let (pieces, rejected) = split_into_frames(batch.clone(), limits(limit));
        assert_eq!(rejected, Rejected::default());
        let frames = frames_of(pieces);
        assert!(frames.len() > 1);
        let mut decoded = Vec::new();
        for frame in &frames {
            assert!(frame.payload.len() <= limit);
            let part = decode_frame::<Blob>(&frame.payload).unwrap();
            assert_eq!(part.len(), frame.messages);
            decoded.extend(part);
        }
        assert_eq!(senders(&decoded), senders(&batch));
        // One frame when it fits, byte-identical to `encode_frame`.
        let frames = frames_of(split_into_frames(batch.clone(), limits(1 << 20)).0);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].payload, encode_frame(&batch).unwrap());
    }

    fn frames_of(pieces: Vec<Piece<Blob>>) -> Vec<EncodedFrame> {
        pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Frame(frame) => frame,
                Piece::Large(_) => panic!("a message was set apart"),
            })
            .collect()
    }

    fn limits(frame: usize) -> Limits {
        Limits {
            frame,
            message: frame,
        }
    }

    #[test]
    fn a_message_above_the_message_limit_is_dropped_alone() {
        let batch = vec![message(1, 10), message(2, 5000), message(3, 10)];
        let (pieces, rejected) = split_into_frames(batch, limits(1000));
        assert_eq!(rejected.oversize, 1);
        let frames = frames_of(pieces);
        let decoded: Vec<_> = frames
            .iter()
            .flat_map(|f| decode_frame::<Blob>(&f.payload).unwrap())
            .collect();
        assert_eq!(senders(&decoded), vec![1, 3]);
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(matches!(decode_frame::<Blob>(&[]), Err(Error::EmptyFrame)));
        assert!(matches!(
            decode_frame::<Blob>(&[2, 0]),
            Err(Error::UnsupportedFrameFormat { found: 2, .. })
        ));
        assert!(matches!(
            decode_frame::<Blob>(&[1, 0, 0]),
            Err(Error::MalformedFrame(_))
        ));
        assert!(matches!(
            decode_frame::<Blob>(&[1, 5]),
            Err(Error::MalformedFrame(_))
        ));
        assert_eq!(decode_frame::<Blob>(&[1, 0]).unwrap().len(), 0);
        let prep: Message<Blob> = Message::SequencePaxos(PaxosMessage {
            from: 1,
            to: 2,
            msg: PaxosMsg::PrepareReq(PrepareReq {
                n: Ballot::default(),
            }),
        });
        let frame = encode_frame(&[prep]).unwrap();
        assert_eq!(decode_frame::<Blob>(&frame).unwrap().len(), 1);
    }

    #[test]
    fn a_message_larger_than_a_frame_is_set_apart_in_its_place() {
        let batch = vec![
            message(1, 10),
            message(2, 50_000),
            message(3, 10),
            message(4, 3_000),
        ];
        let limits = Limits {
            frame: 1000,
            message: 1 << 20,
        };
        let (pieces, rejected) = split_into_frames(batch, limits);
        assert_eq!(rejected.large, 2);
        assert_eq!(rejected.oversize, 0);
        let order: Vec<Vec<u64>> = pieces
            .iter()
            .map(|piece| match piece {
                Piece::Frame(frame) => senders(&decode_frame::<Blob>(&frame.payload).unwrap()),
                Piece::Large(message) => vec![message.get_sender() * 100],
            })
            .collect();
        assert_eq!(order, vec![vec![1], vec![200], vec![3], vec![400]]);
    }
}

//! The frame formats: a batch of OmniPaxos messages, or a chunk of one
//! message too large for a frame.
//!
//! Format 1 is `[1][postcard(Vec<Message<T>>)]`: the format byte, then
//! postcard's encoding of the batch (a varint message count followed by each
//! message's postcard encoding). Trailing bytes are refused. The sender
//! splits a batch whose encoding exceeds the frame limit at message
//! boundaries, so each frame decodes on its own.
//!
//! Format 2 carries one slice of a single message whose encoding alone
//! exceeds the frame limit (a catch-up `AcceptSync` with a long log suffix
//! or a large snapshot): `[2][varint transfer][varint offset][varint
//! total][bytes]`. A message's chunks follow each other on the link, in
//! order; the receiver ([`Reassembler`]) appends them and decodes the
//! message when `offset + len == total`. A broken link drops what was
//! assembled: OmniPaxos resends, and the transfer starts over on the next
//! link. A message above `max_message_bytes` is still dropped and counted.

use omnipaxos::messages::Message;
use omnipaxos::storage::Entry;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// The frame format byte of a batch (what [`encode_frame`] writes).
pub const FRAME_FORMAT: u8 = 1;

/// The frame format byte of a chunk of one large message.
pub const CHUNK_FORMAT: u8 = 2;

/// Longest chunk header: the format byte and three `u64` varints.
const CHUNK_HEADER_MAX: usize = 1 + 3 * 10;

/// Decodes one frame payload into its messages.
///
/// Never panics, whatever the bytes: a frame that is empty, of another
/// format, truncated, or followed by trailing bytes is an error. This is the
/// function a fuzz target calls.
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

/// A frame ready to send, with the number of messages it carries.
#[derive(Debug)]
pub(crate) struct EncodedFrame {
    pub(crate) payload: Vec<u8>,
    pub(crate) messages: usize,
}

/// What [`split_into_frames`] could not encode, and what it chunked.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Rejected {
    /// Messages whose own encoding exceeds the message limit.
    pub(crate) oversize: usize,
    /// Messages that failed to encode.
    pub(crate) failed: usize,
    /// Messages sent in chunks (not rejected; counted here for the stats).
    pub(crate) chunked: usize,
}

/// The frame and message limits of a link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest frame payload.
    pub(crate) frame: usize,
    /// Largest single message, sent in chunks when above `frame`.
    pub(crate) message: usize,
}

/// Encodes `batch` into as few frames as fit `limits.frame`, in order; a
/// message too large for a frame (but not above `limits.message`) becomes a
/// run of chunk frames numbered from `next_transfer`.
pub(crate) fn split_into_frames<T>(
    batch: &[Message<T>],
    limits: Limits,
    next_transfer: &mut u64,
) -> (Vec<EncodedFrame>, Rejected)
where
    T: Entry,
    Message<T>: Serialize,
{
    let max_frame_bytes = limits.frame;
    let mut frames = Vec::new();
    let mut rejected = Rejected::default();
    // Encoded messages of the frame being filled.
    let mut body: Vec<u8> = Vec::new();
    let mut count = 0usize;
    for message in batch {
        let encoded = match postcard::to_allocvec(message) {
            Ok(encoded) => encoded,
            Err(_) => {
                rejected.failed += 1;
                continue;
            }
        };
        if frame_len(1, encoded.len()) > max_frame_bytes {
            if encoded.len() > limits.message || max_frame_bytes <= CHUNK_HEADER_MAX {
                rejected.oversize += 1;
                continue;
            }
            // What was gathered goes first: the link keeps message order.
            if count > 0 {
                frames.push(finish(&body, count));
                body.clear();
                count = 0;
            }
            frames.extend(chunks(&encoded, max_frame_bytes, *next_transfer));
            *next_transfer = next_transfer.wrapping_add(1);
            rejected.chunked += 1;
            continue;
        }
        if count > 0 && frame_len(count + 1, body.len() + encoded.len()) > max_frame_bytes {
            frames.push(finish(&body, count));
            body.clear();
            count = 0;
        }
        body.extend_from_slice(&encoded);
        count += 1;
    }
    if count > 0 {
        frames.push(finish(&body, count));
    }
    (frames, rejected)
}

/// The chunk frames of one encoded message, each at most `max_frame_bytes`.
fn chunks(encoded: &[u8], max_frame_bytes: usize, transfer: u64) -> Vec<EncodedFrame> {
    let room = max_frame_bytes - CHUNK_HEADER_MAX;
    let total = encoded.len();
    encoded
        .chunks(room)
        .enumerate()
        .map(|(i, slice)| {
            let mut payload = Vec::with_capacity(CHUNK_HEADER_MAX + slice.len());
            payload.push(CHUNK_FORMAT);
            push_varint_u64(&mut payload, transfer);
            push_varint(&mut payload, i * room);
            push_varint(&mut payload, total);
            payload.extend_from_slice(slice);
            // The message counts once, with its last chunk.
            let last = i * room + slice.len() == total;
            EncodedFrame {
                payload,
                messages: usize::from(last),
            }
        })
        .collect()
}

/// A message being put back together from its chunks.
#[derive(Debug)]
struct Partial {
    transfer: u64,
    total: usize,
    bytes: Vec<u8>,
}

/// The receiving end of one link: decodes batch frames, and puts chunked
/// messages back together (at most one at a time, at most
/// `max_message_bytes`, grown as its chunks arrive rather than reserved
/// from the header a peer sends).
#[derive(Debug)]
pub struct Reassembler {
    max_message_bytes: usize,
    partial: Option<Partial>,
}

impl Reassembler {
    /// A reassembler refusing messages above `max_message_bytes`.
    #[must_use]
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            partial: None,
        }
    }

    /// Bytes held for a message not complete yet.
    #[must_use]
    pub fn pending_bytes(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.bytes.len())
    }

    /// The messages `payload` completes: a batch frame's messages, a
    /// chunked message once its last chunk arrived, or none.
    ///
    /// # Errors
    ///
    /// What [`decode_frame`] refuses, and for chunks: a message above the
    /// limit, a chunk that does not continue the message being assembled,
    /// or one that overruns it. Never panics, whatever the bytes.
    pub fn accept<T>(&mut self, payload: &[u8]) -> Result<Vec<Message<T>>, Error>
    where
        T: Entry,
        Message<T>: DeserializeOwned,
    {
        match payload.first() {
            Some(&CHUNK_FORMAT) => self
                .accept_chunk(&payload[1..])
                .map(|m| m.into_iter().collect()),
            _ => decode_frame(payload),
        }
    }

    fn accept_chunk<T>(&mut self, body: &[u8]) -> Result<Option<Message<T>>, Error>
    where
        T: Entry,
        Message<T>: DeserializeOwned,
    {
        let malformed = |what: String| Error::MalformedFrame(format!("chunk: {what}"));
        let ((transfer, offset, total), slice) = postcard::take_from_bytes::<(u64, u64, u64)>(body)
            .map_err(|err| malformed(err.to_string()))?;
        let too_large = || malformed(format!("a message of {total} bytes is above the limit"));
        let total = usize::try_from(total).map_err(|_| too_large())?;
        let offset = usize::try_from(offset).map_err(|_| too_large())?;
        if total > self.max_message_bytes {
            return Err(too_large());
        }
        if offset == 0 {
            // A new message; one left unfinished was given up by its sender.
            self.partial = Some(Partial {
                transfer,
                total,
                bytes: Vec::new(),
            });
        }
        let Some(partial) = self.partial.as_mut() else {
            return Err(malformed(format!(
                "offset {offset} of a message never started"
            )));
        };
        if partial.transfer != transfer || partial.total != total || partial.bytes.len() != offset {
            self.partial = None;
            return Err(malformed(format!(
                "transfer {transfer} at offset {offset} does not continue the message being \
                 assembled"
            )));
        }
        if slice.is_empty() || offset + slice.len() > total {
            self.partial = None;
            return Err(malformed(format!(
                "{} bytes at offset {offset} of {total}",
                slice.len()
            )));
        }
        partial.bytes.extend_from_slice(slice);
        if partial.bytes.len() < total {
            return Ok(None);
        }
        let bytes = self.partial.take().map(|p| p.bytes).unwrap_or_default();
        let (message, rest) = postcard::take_from_bytes(&bytes)
            .map_err(|err| malformed(format!("the assembled message does not decode: {err}")))?;
        if !rest.is_empty() {
            return Err(malformed(format!(
                "{} trailing bytes after the message",
                rest.len()
            )));
        }
        Ok(Some(message))
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
        let (frames, rejected) = split_into_frames(&batch, limits(limit), &mut 0);
        assert_eq!(rejected, Rejected::default());
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
        let (frames, _) = split_into_frames(&batch, limits(1 << 20), &mut 0);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].payload, encode_frame(&batch).unwrap());
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
        let (frames, rejected) = split_into_frames(&batch, limits(1000), &mut 0);
        assert_eq!(rejected.oversize, 1);
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

    /// The messages' encodings (`Message` has no `PartialEq`).
    fn bytes(messages: &[Message<Blob>]) -> Vec<Vec<u8>> {
        messages
            .iter()
            .map(|m| postcard::to_allocvec(m).unwrap())
            .collect()
    }

    /// Frames of `batch` with 1000-byte frames and 1 MB messages, through
    /// a reassembler: every message, in order.
    fn round_trip(batch: &[Message<Blob>], next: &mut u64) -> (Vec<Message<Blob>>, Rejected) {
        let limits = Limits {
            frame: 1000,
            message: 1 << 20,
        };
        let (frames, rejected) = split_into_frames(batch, limits, next);
        let mut receiver = Reassembler::new(1 << 20);
        let mut out = Vec::new();
        for frame in &frames {
            assert!(frame.payload.len() <= 1000, "{}", frame.payload.len());
            out.extend(receiver.accept::<Blob>(&frame.payload).unwrap());
        }
        assert_eq!(receiver.pending_bytes(), 0);
        (out, rejected)
    }

    #[test]
    fn a_message_larger_than_a_frame_travels_in_chunks_in_its_place() {
        let batch = vec![
            message(1, 10),
            message(2, 50_000),
            message(3, 10),
            message(4, 3_000),
        ];
        let mut next = 7;
        let (out, rejected) = round_trip(&batch, &mut next);
        assert_eq!(rejected.chunked, 2);
        assert_eq!(rejected.oversize, 0);
        assert_eq!(next, 9, "one transfer id per chunked message");
        assert_eq!(senders(&out), vec![1, 2, 3, 4]);
        assert_eq!(bytes(&out), bytes(&batch), "a message changed on the way");
    }

    #[test]
    fn chunks_out_of_order_or_above_the_limit_are_refused() {
        let big = vec![message(2, 5_000)];
        let (frames, _) = split_into_frames(
            &big,
            Limits {
                frame: 1000,
                message: 1 << 20,
            },
            &mut 0,
        );
        assert!(frames.len() > 2);
        // A middle chunk first.
        let mut receiver = Reassembler::new(1 << 20);
        assert!(receiver.accept::<Blob>(&frames[1].payload).is_err());
        // A chunk skipped.
        let mut receiver = Reassembler::new(1 << 20);
        assert!(
            receiver
                .accept::<Blob>(&frames[0].payload)
                .unwrap()
                .is_empty()
        );
        assert!(receiver.accept::<Blob>(&frames[2].payload).is_err());
        assert_eq!(receiver.pending_bytes(), 0, "a refused message is not kept");
        // Above the receiver's own limit, whatever the sender allowed.
        let mut receiver = Reassembler::new(4_000);
        assert!(receiver.accept::<Blob>(&frames[0].payload).is_err());
        // A new message restarts the assembly (a sender that gave one up).
        let mut receiver = Reassembler::new(1 << 20);
        receiver.accept::<Blob>(&frames[0].payload).unwrap();
        let mut whole = Vec::new();
        for frame in &frames {
            whole.extend(receiver.accept::<Blob>(&frame.payload).unwrap());
        }
        assert_eq!(bytes(&whole), bytes(&big));
        // Garbage never panics.
        for bytes in [
            &[2u8][..],
            &[2, 0],
            &[2, 0, 0, 1],
            &[2, 0, 5, 1, 9],
            &[2, 0, 0, 0],
        ] {
            assert!(
                Reassembler::new(100).accept::<Blob>(bytes).is_err(),
                "{bytes:?}"
            );
        }
    }
}

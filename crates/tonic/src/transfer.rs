//! Messages too large for one frame: spooled to disk, sent as a body in
//! chunks and a small head, resumable after a broken link.
//!
//! A catch-up `AcceptSync` carries the leader's snapshot and log suffix: its
//! size is the state's. Holding its encoding in memory on both ends would
//! cost a copy of the state per transfer, and a link that breaks would send
//! it all again. So the sender writes the message to an anonymous spool
//! file, splits it into a **body** (the snapshot, then the suffix entries,
//! one after the other) and a **head** (the rest of the message), and sends
//! the body in chunk frames read from the file, then the head. The receiver
//! appends chunks to a spool file of its own, one per sender; the head
//! carries the body's length and SHA-256, and completes the message. Memory
//! on either end is a chunk, not the message (the message object itself
//! exists once on each side: OmniPaxos hands it over and takes it by value).
//!
//! **Resume.** A broken link drops the message, as it drops any other:
//! OmniPaxos re-syncs the follower with a new `AcceptSync`. Its body starts
//! with the same bytes as long as the leader's snapshot is the same (the
//! snapshot leads the body; only the head carries the round, sequence
//! number and decided index that differ). Before sending a body, the sender
//! asks the receiver what it holds from it (`Held`: a length and the SHA-256
//! of those bytes) and starts after that prefix when its own body begins
//! with the same bytes. The receiver checks the whole body against the
//! head's digest before it decodes anything.
//!
//! The first chunk of a resumed body names the prefix it continues (its
//! SHA-256): the receiver checks it against what it holds, and cuts back
//! what an older link appended after the sender asked, so a resumed body
//! never continues the wrong bytes. The sender asks only for the first
//! transfer of a new link: later ones on the same link follow a transfer
//! that completed, so the receiver holds nothing of theirs.
//!
//! Wire formats, inside `Frame.payload`:
//! - body chunk [`BODY_FORMAT`]: `[3][postcard (offset: u64, body_len: u64,
//!   resumes: Option<[u8; 32]>)][bytes]`, `resumes` set on the first chunk
//!   of a resumed body only;
//! - head [`HEAD_FORMAT`]: `[4][postcard Head<T>]`.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use omnipaxos::messages::Message;
use omnipaxos::messages::sequence_paxos::{AcceptSync, PaxosMessage, PaxosMsg};
use omnipaxos::storage::{Entry, SnapshotType};
use ring::digest::{Context, SHA256};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The frame format byte of a chunk of a transfer's body.
pub const BODY_FORMAT: u8 = 3;

/// The frame format byte of a transfer's head (the message completes).
pub const HEAD_FORMAT: u8 = 4;

/// Longest body chunk header: the format byte, two `u64` varints and a
/// digest with its option tag.
pub(crate) const BODY_HEADER_MAX: usize = 1 + 2 * 10 + 1 + 32;

/// A SHA-256 digest.
pub(crate) type Digest = [u8; 32];

/// Why a transfer failed. Never returned to a caller of the crate: a failed
/// transfer is dropped, counted and logged, and OmniPaxos sends again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransferError {
    #[error("spool file: {0}")]
    Io(#[from] io::Error),
    #[error("cannot encode the message: {0}")]
    Encode(String),
    #[error("malformed transfer frame: {0}")]
    Malformed(String),
    #[error("a body of {len} bytes is above the message limit of {max} bytes")]
    TooLarge { len: u64, max: usize },
    #[error("a chunk at offset {offset} does not continue the {held} bytes held")]
    Gap { offset: u64, held: u64 },
    #[error("a chunk from link {link}, older than the one the body continues on")]
    StaleLink { link: u64 },
    #[error("the body held ({held} bytes) is not the one the head names ({len} bytes, digest)")]
    Mismatch { held: u64, len: u64 },
    #[error("the body does not decode: {0}")]
    Decode(String),
}

/// What the body holds besides the message's head.
#[derive(Debug, Serialize, Deserialize)]
enum Layout<M> {
    /// The body is the whole message's postcard encoding.
    Whole,
    /// The body is the `AcceptSync`'s snapshot (if any) then `suffix`
    /// entries; `rest` is the message without them.
    Sync {
        snapshot: SnapshotKind,
        suffix: u64,
        rest: M,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum SnapshotKind {
    None,
    Complete,
    Delta,
}

/// The last frame of a transfer.
#[derive(Debug, Serialize, Deserialize)]
struct Head<M> {
    body_len: u64,
    digest: Digest,
    layout: Layout<M>,
}

/// A writer that counts and hashes what passes through it.
struct Hashing<W> {
    inner: W,
    context: Context,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.context.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn digest_of(context: Context) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The outbound side of one transfer: the body in an anonymous spool file
/// and the head frame, with how far the body was sent.
#[derive(Debug)]
pub(crate) struct OutTransfer {
    file: Arc<File>,
    body_len: u64,
    head: Vec<u8>,
    /// The next body offset to send; `None` until it was decided where
    /// the body starts.
    next: Option<u64>,
    /// The digest of the prefix a resumed body continues, until its first
    /// chunk is read.
    resumes: Option<Digest>,
}

impl OutTransfer {
    /// Spools `message` into `dir` (blocking: call it off the runtime).
    pub(crate) fn spool<T>(mut message: Message<T>, dir: &Path) -> Result<Self, TransferError>
    where
        T: Entry + Serialize,
        Message<T>: Serialize,
    {
        let file = tempfile::tempfile_in(dir)?;
        let mut body = Hashing {
            inner: BufWriter::new(file),
            context: Context::new(&SHA256),
            len: 0,
        };
        let encode = |err: postcard::Error| TransferError::Encode(err.to_string());
        let layout = match take_bulk(&mut message) {
            None => {
                body = postcard::to_io(&message, body).map_err(encode)?;
                Layout::Whole
            }
            Some((snapshot, suffix)) => {
                let kind = match &snapshot {
                    None => SnapshotKind::None,
                    Some(SnapshotType::Complete(s)) => {
                        body = postcard::to_io(s, body).map_err(encode)?;
                        SnapshotKind::Complete
                    }
                    Some(SnapshotType::Delta(s)) => {
                        body = postcard::to_io(s, body).map_err(encode)?;
                        SnapshotKind::Delta
                    }
                };
                // The bulk is on disk: free it before the next is encoded.
                drop(snapshot);
                let count = suffix.len() as u64;
                for entry in suffix {
                    body = postcard::to_io(&entry, body).map_err(encode)?;
                }
                Layout::Sync {
                    snapshot: kind,
                    suffix: count,
                    rest: message,
                }
            }
        };
        body.flush()?;
        let Hashing {
            inner,
            context,
            len,
        } = body;
        let file = inner.into_inner().map_err(|err| err.into_error())?;
        let head = Head {
            body_len: len,
            digest: digest_of(context),
            layout,
        };
        let mut frame = vec![HEAD_FORMAT];
        frame = postcard::to_extend(&head, frame).map_err(encode)?;
        Ok(Self {
            file: Arc::new(file),
            body_len: len,
            head: frame,
            next: None,
            resumes: None,
        })
    }

    /// The head frame's length.
    pub(crate) fn head_len(&self) -> usize {
        self.head.len()
    }

    pub(crate) fn body_len(&self) -> u64 {
        self.body_len
    }

    pub(crate) fn next(&self) -> Option<u64> {
        self.next
    }

    pub(crate) fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Sets where the body starts: at 0, or after a prefix the receiver
    /// holds (with that prefix's digest).
    pub(crate) fn start_at(&mut self, resume: Option<(u64, Digest)>) {
        match resume {
            // A receiver holding the whole body gets it again from 0: a
            // resume needs a chunk to carry the prefix's digest.
            Some((offset, digest)) if offset > 0 && offset < self.body_len => {
                self.next = Some(offset);
                self.resumes = Some(digest);
            }
            _ => self.next = Some(0),
        }
    }

    /// The digest the next chunk carries (the first chunk of a resumed
    /// body), taken once.
    pub(crate) fn take_resumes(&mut self) -> Option<Digest> {
        self.resumes.take()
    }

    /// Marks `len` more body bytes as sent.
    pub(crate) fn advance(&mut self, len: u64) {
        self.next = self.next.map(|next| (next + len).min(self.body_len));
    }

    /// The head frame, once the whole body is sent.
    pub(crate) fn take_head(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.head)
    }
}

/// Whether the first `len` bytes of `file` hash to `digest` (blocking).
pub(crate) fn prefix_matches(file: &File, len: u64, digest: &Digest) -> io::Result<bool> {
    Ok(prefix_context(file, len)?.is_some_and(|context| &digest_of(context) == digest))
}

/// The hash state after the first `len` bytes of `file` (`None` when it is
/// shorter), reading it from the start (blocking).
fn prefix_context(file: &File, len: u64) -> io::Result<Option<Context>> {
    let mut context = Context::new(&SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    while at < len {
        let want = usize::try_from((len - at).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Ok(None);
        }
        context.update(&buf[..n]);
        at += n as u64;
    }
    Ok(Some(context))
}

/// The chunk frame of the body bytes at `offset`, at most `room` of them
/// (blocking).
pub(crate) fn chunk_frame(
    file: &File,
    offset: u64,
    body_len: u64,
    room: usize,
    resumes: Option<Digest>,
) -> Result<Vec<u8>, TransferError> {
    let len = usize::try_from((body_len - offset.min(body_len)).min(room as u64)).unwrap_or(room);
    let mut frame = vec![BODY_FORMAT];
    frame = postcard::to_extend(&(offset, body_len, resumes), frame)
        .map_err(|err| TransferError::Encode(err.to_string()))?;
    let start = frame.len();
    frame.resize(start + len, 0);
    file.read_exact_at(&mut frame[start..], offset)?;
    Ok(frame)
}

/// The `AcceptSync` `message` is, if it is one.
pub(crate) fn accept_sync<T: Entry>(message: &Message<T>) -> Option<&AcceptSync<T>> {
    match message {
        Message::SequencePaxos(PaxosMessage {
            msg: PaxosMsg::AcceptSync(sync),
            ..
        }) => Some(sync),
        _ => None,
    }
}

fn accept_sync_mut<T: Entry>(message: &mut Message<T>) -> Option<&mut AcceptSync<T>> {
    match message {
        Message::SequencePaxos(PaxosMessage {
            msg: PaxosMsg::AcceptSync(sync),
            ..
        }) => Some(sync),
        _ => None,
    }
}

/// Moves an `AcceptSync`'s snapshot and suffix out of `message`.
fn take_bulk<T: Entry>(message: &mut Message<T>) -> Option<(Option<SnapshotType<T>>, Vec<T>)> {
    accept_sync_mut(message).map(|sync| {
        (
            sync.log_sync.decided_snapshot.take(),
            std::mem::take(&mut sync.log_sync.suffix),
        )
    })
}

/// The body received so far from one sender.
struct Partial {
    file: File,
    len: u64,
    context: Context,
    /// When a chunk was last appended.
    touched: Instant,
    /// The sender's link (the server's generation count) that started or
    /// resumed the body: chunks of older links are refused.
    link: u64,
}

impl Partial {
    /// Whether the first `offset` bytes held hash to `digest`; if so, what
    /// was appended after them is cut off (an older link's chunks that
    /// arrived after the sender asked what is held).
    fn cut_back_to(&mut self, offset: u64, digest: &Digest) -> io::Result<bool> {
        if self.len == offset {
            return Ok(&digest_of(self.context.clone()) == digest);
        }
        if self.len < offset {
            return Ok(false);
        }
        let Some(context) = prefix_context(&self.file, offset)? else {
            return Ok(false);
        };
        if &digest_of(context.clone()) != digest {
            return Ok(false);
        }
        self.file.set_len(offset)?;
        self.len = offset;
        self.context = context;
        Ok(true)
    }
}

/// The inbound side: what one sender's body spool holds. Shared by the
/// sender's links and its `Held` calls; every method blocks (file IO under
/// the lock) and runs off the runtime.
#[derive(Default, Clone)]
pub(crate) struct InTransfer {
    partial: Arc<Mutex<Option<Partial>>>,
}

impl InTransfer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Partial>> {
        self.partial.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The length and digest of the body prefix held.
    pub(crate) fn held(&self) -> (u64, Digest) {
        match &*self.lock() {
            Some(partial) => (partial.len, digest_of(partial.context.clone())),
            None => (0, digest_of(Context::new(&SHA256))),
        }
    }

    /// Appends a body chunk (`payload` without its format byte). Offset 0
    /// starts a new body; any other offset must continue the one held.
    /// `link` numbers the sender's links, newer ones higher: a chunk of an
    /// older link than the one the body continues on is refused alone (a
    /// superseded link's late chunk), the body kept.
    pub(crate) fn append(
        &self,
        payload: &[u8],
        dir: &Path,
        max_body: usize,
        link: u64,
    ) -> Result<(), TransferError> {
        let ((offset, body_len, resumes), bytes) =
            postcard::take_from_bytes::<(u64, u64, Option<Digest>)>(payload)
                .map_err(|err| TransferError::Malformed(err.to_string()))?;
        let mut slot = self.lock();
        if body_len > max_body as u64 {
            *slot = None;
            return Err(TransferError::TooLarge {
                len: body_len,
                max: max_body,
            });
        }
        if offset == 0 {
            *slot = Some(Partial {
                file: tempfile::tempfile_in(dir)?,
                len: 0,
                context: Context::new(&SHA256),
                touched: Instant::now(),
                link,
            });
        }
        let held = slot.as_ref().map_or(0, |p| p.len);
        if offset > 0 && resumes.is_none() && slot.as_ref().is_some_and(|p| link < p.link) {
            return Err(TransferError::StaleLink { link });
        }
        if let (Some(digest), Some(partial)) = (resumes, slot.as_mut())
            && offset > 0
        {
            if !partial.cut_back_to(offset, &digest)? {
                *slot = None;
                return Err(TransferError::Gap { offset, held });
            }
            partial.link = link;
        }
        let Some(partial) = slot.as_mut().filter(|p| p.len == offset) else {
            *slot = None;
            return Err(TransferError::Gap { offset, held });
        };
        if bytes.is_empty() || offset + bytes.len() as u64 > body_len {
            *slot = None;
            return Err(TransferError::Malformed(format!(
                "{} bytes at offset {offset} of a {body_len}-byte body",
                bytes.len()
            )));
        }
        if let Err(err) = partial.file.write_all_at(bytes, offset) {
            *slot = None;
            return Err(err.into());
        }
        partial.context.update(bytes);
        partial.len += bytes.len() as u64;
        partial.touched = Instant::now();
        Ok(())
    }

    /// Gives up a body nothing was appended to for `idle`: a resume comes
    /// within seconds of a cut, and the spool file holds disk space.
    pub(crate) fn expire(&self, idle: Duration) {
        let mut slot = self.lock();
        if slot.as_ref().is_some_and(|p| p.touched.elapsed() >= idle) {
            *slot = None;
        }
    }

    /// Completes the message with its head (`payload` without its format
    /// byte): checks the body held against the head, decodes it with a
    /// scratch buffer of at most `scratch` bytes (postcard's reader keeps
    /// borrowed strings and byte arrays there; owned ones, such as the
    /// entries' keys, take it one at a time), and puts the message back
    /// together. The
    /// body held is given up either way.
    pub(crate) fn complete<T>(
        &self,
        payload: &[u8],
        scratch: usize,
    ) -> Result<Message<T>, TransferError>
    where
        T: Entry + DeserializeOwned,
        Message<T>: DeserializeOwned,
    {
        let (head, rest): (Head<Message<T>>, _) = postcard::take_from_bytes(payload)
            .map_err(|err| TransferError::Malformed(err.to_string()))?;
        if !rest.is_empty() {
            *self.lock() = None;
            return Err(TransferError::Malformed(format!(
                "{} trailing bytes after the head",
                rest.len()
            )));
        }
        let Some(partial) = self.lock().take() else {
            return Err(TransferError::Mismatch {
                held: 0,
                len: head.body_len,
            });
        };
        if partial.len != head.body_len || digest_of(partial.context) != head.digest {
            return Err(TransferError::Mismatch {
                held: partial.len,
                len: head.body_len,
            });
        }
        let mut reader = BufReader::new(partial.file);
        reader.seek(SeekFrom::Start(0))?;
        let scratch = usize::try_from(head.body_len).map_or(scratch, |len| len.min(scratch));
        let mut buf = vec![0u8; scratch.max(64)];
        let message = match head.layout {
            Layout::Whole => decode_next::<Message<T>, _>(&mut reader, &mut buf)?,
            Layout::Sync {
                snapshot,
                suffix,
                mut rest,
            } => {
                // Every entry takes a byte at least: a count above the body's
                // length is a lie that would spin this loop.
                if suffix > head.body_len {
                    return Err(TransferError::Malformed(format!(
                        "{suffix} entries in a {}-byte body",
                        head.body_len
                    )));
                }
                let snapshot = match snapshot {
                    SnapshotKind::None => None,
                    SnapshotKind::Complete => {
                        Some(SnapshotType::Complete(decode_next(&mut reader, &mut buf)?))
                    }
                    SnapshotKind::Delta => {
                        Some(SnapshotType::Delta(decode_next(&mut reader, &mut buf)?))
                    }
                };
                let mut entries = Vec::new();
                for _ in 0..suffix {
                    entries.push(decode_next::<T, _>(&mut reader, &mut buf)?);
                }
                let Some(sync) = accept_sync_mut(&mut rest) else {
                    return Err(TransferError::Malformed(
                        "a sync layout around a message that is not an AcceptSync".into(),
                    ));
                };
                sync.log_sync.decided_snapshot = snapshot;
                sync.log_sync.suffix = entries;
                rest
            }
        };
        let mut trailing = [0u8; 1];
        if reader.read(&mut trailing)? != 0 {
            return Err(TransferError::Decode(
                "trailing bytes after the body".into(),
            ));
        }
        Ok(message)
    }
}

/// Decodes the next value from `reader`.
fn decode_next<V: DeserializeOwned, R: Read>(
    reader: &mut R,
    scratch: &mut [u8],
) -> Result<V, TransferError> {
    postcard::from_io::<V, _>((reader, scratch))
        .map(|(value, _)| value)
        .map_err(|err| TransferError::Decode(err.to_string()))
}

#[cfg(test)]
mod tests {
    use omnipaxos::ballot_leader_election::Ballot;
    use omnipaxos::messages::sequence_paxos::{AcceptSync, PrepareReq};
    use omnipaxos::storage::Snapshot;
    use omnipaxos::util::{LogSync, SequenceNumber};

    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Key(String);

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Keys(Vec<String>);

    impl Snapshot<Key> for Keys {
        fn create(entries: &[Key]) -> Self {
            Keys(entries.iter().map(|k| k.0.clone()).collect())
        }
        fn merge(&mut self, delta: Self) {
            self.0.extend(delta.0);
        }
        fn use_snapshots() -> bool {
            true
        }
    }

    impl Entry for Key {
        type Snapshot = Keys;
    }

    /// An `AcceptSync` with a snapshot of `keys` keys and `suffix` entries;
    /// `round` changes only the head.
    fn sync(keys: usize, suffix: usize, round: u64) -> Message<Key> {
        Message::SequencePaxos(PaxosMessage {
            from: 1,
            to: 2,
            msg: PaxosMsg::AcceptSync(AcceptSync {
                n: Ballot::with(1, 3, 0, 1),
                seq_num: SequenceNumber {
                    session: round,
                    counter: 1,
                },
                decided_idx: 10 + usize::try_from(round).unwrap(),
                log_sync: LogSync {
                    decided_snapshot: Some(SnapshotType::Complete(Keys(
                        (0..keys).map(|i| format!("key-{i:08}")).collect(),
                    ))),
                    suffix: (0..suffix).map(|i| Key(format!("tail-{i}"))).collect(),
                    sync_idx: 10,
                    stopsign: None,
                },
            }),
        })
    }

    fn encoded(message: &Message<Key>) -> Vec<u8> {
        postcard::to_allocvec(message).unwrap()
    }

    /// Sends the body of `transfer` from where it stands, then the head;
    /// returns what the receiver completed.
    fn send(
        transfer: &mut OutTransfer,
        to: &InTransfer,
        room: usize,
    ) -> Result<Message<Key>, TransferError> {
        send_on(transfer, to, room, 1)
    }

    /// [`send`] on the sender's link number `link`.
    fn send_on(
        transfer: &mut OutTransfer,
        to: &InTransfer,
        room: usize,
        link: u64,
    ) -> Result<Message<Key>, TransferError> {
        let dir = std::env::temp_dir();
        while let Some(next) = transfer.next().filter(|&n| n < transfer.body_len()) {
            let frame = chunk_frame(
                &transfer.file(),
                next,
                transfer.body_len(),
                room,
                transfer.take_resumes(),
            )
            .unwrap();
            assert!(frame.len() <= room + BODY_HEADER_MAX);
            assert_eq!(frame[0], BODY_FORMAT);
            to.append(&frame[1..], &dir, 1 << 30, link)?;
            transfer.advance((transfer.body_len() - next).min(room as u64));
        }
        let head = transfer.take_head();
        assert_eq!(head[0], HEAD_FORMAT);
        to.complete::<Key>(&head[1..], 1 << 20)
    }

    fn spool(message: Message<Key>) -> OutTransfer {
        OutTransfer::spool(message, &std::env::temp_dir()).unwrap()
    }

    #[test]
    fn a_sync_with_a_snapshot_and_a_suffix_arrives_whole() {
        let message = sync(20_000, 50, 1);
        let expected = encoded(&message);
        let mut transfer = spool(message);
        assert!(
            transfer.head_len() < 200,
            "the head is small: {}",
            transfer.head_len()
        );
        transfer.start_at(None);
        let receiver = InTransfer::default();
        let got = send(&mut transfer, &receiver, 4096).unwrap();
        assert_eq!(encoded(&got), expected);
        assert_eq!(receiver.held().0, 0, "the body is given up once complete");
    }

    #[test]
    fn a_message_of_another_kind_travels_whole() {
        let message: Message<Key> = Message::SequencePaxos(PaxosMessage {
            from: 1,
            to: 2,
            msg: PaxosMsg::ProposalForward((0..5_000).map(|i| Key(format!("p{i}"))).collect()),
        });
        let expected = encoded(&message);
        let mut transfer = spool(message);
        transfer.start_at(None);
        let got = send(&mut transfer, &InTransfer::default(), 1000).unwrap();
        assert_eq!(encoded(&got), expected);
    }

    #[test]
    fn a_cut_transfer_resumes_after_the_prefix_held() {
        let receiver = InTransfer::default();
        let dir = std::env::temp_dir();
        // The first transfer is cut after three chunks.
        let mut first = spool(sync(20_000, 10, 1));
        first.start_at(None);
        for _ in 0..3 {
            let next = first.next().unwrap();
            let frame = chunk_frame(&first.file(), next, first.body_len(), 4096, None).unwrap();
            receiver.append(&frame[1..], &dir, 1 << 30, 1).unwrap();
            first.advance(4096);
        }
        let (held, digest) = receiver.held();
        assert_eq!(held, 3 * 4096);
        // OmniPaxos sends the sync again: another round and decided index
        // (the head), a longer suffix, the same snapshot.
        let again = sync(20_000, 12, 2);
        let expected = encoded(&again);
        let mut second = spool(again);
        assert!(prefix_matches(&second.file(), held, &digest).unwrap());
        second.start_at(Some((held, digest)));
        let got = send(&mut second, &receiver, 4096).unwrap();
        assert_eq!(encoded(&got), expected);
        // Another snapshot shares no prefix: the sender starts over.
        let other = spool(sync(19_999, 10, 3));
        assert!(!prefix_matches(&other.file(), held, &digest).unwrap());
    }

    #[test]
    fn a_resumed_body_cuts_back_what_an_older_link_appended_after_the_ask() {
        let dir = std::env::temp_dir();
        let receiver = InTransfer::default();
        let mut first = spool(sync(20_000, 0, 1));
        first.start_at(None);
        let mut send_chunks = |count: usize, to: &InTransfer| {
            for _ in 0..count {
                let next = first.next().unwrap();
                let frame = chunk_frame(&first.file(), next, first.body_len(), 4096, None).unwrap();
                to.append(&frame[1..], &dir, 1 << 30, 1).unwrap();
                first.advance(4096);
            }
        };
        send_chunks(3, &receiver);
        // The sender asks here; two more chunks of the old link land after.
        let (held, digest) = receiver.held();
        send_chunks(2, &receiver);
        assert_eq!(receiver.held().0, 5 * 4096);
        let again = sync(20_000, 0, 2);
        let expected = encoded(&again);
        let mut second = spool(again);
        second.start_at(Some((held, digest)));
        // The new link's first chunk names the prefix: the old link's two
        // late chunks are cut back.
        let next = second.next().unwrap();
        let resumes = second.take_resumes();
        let frame = chunk_frame(&second.file(), next, second.body_len(), 4096, resumes).unwrap();
        receiver.append(&frame[1..], &dir, 1 << 30, 2).unwrap();
        second.advance(4096);
        assert_eq!(receiver.held().0, 4 * 4096);
        // A later chunk of the old link, at the offset that would continue
        // the body, is refused alone; the body goes on.
        let late = chunk_frame(&first.file(), 4 * 4096, first.body_len(), 4096, None).unwrap();
        assert!(matches!(
            receiver.append(&late[1..], &dir, 1 << 30, 1),
            Err(TransferError::StaleLink { link: 1 })
        ));
        assert_eq!(receiver.held().0, 4 * 4096);
        let got = send_on(&mut second, &receiver, 4096, 2).unwrap();
        assert_eq!(encoded(&got), expected);
        // A receiver holding the whole body gets it again from 0 (a resume
        // needs a chunk to name the prefix).
        let mut whole = spool(sync(20_000, 0, 4));
        whole.start_at(Some((whole.body_len(), [0; 32])));
        assert_eq!(whole.next(), Some(0));
        // A resume that names a prefix the receiver does not hold fails.
        let receiver = InTransfer::default();
        let mut third = spool(sync(20_000, 0, 3));
        third.start_at(Some((4096, [7; 32])));
        assert!(matches!(
            send(&mut third, &receiver, 4096),
            Err(TransferError::Gap { .. })
        ));
    }

    #[test]
    fn an_idle_body_is_given_up() {
        let dir = std::env::temp_dir();
        let receiver = InTransfer::default();
        let transfer = spool(sync(5_000, 0, 1));
        let frame = chunk_frame(&transfer.file(), 0, transfer.body_len(), 1000, None).unwrap();
        receiver.append(&frame[1..], &dir, 1 << 30, 1).unwrap();
        receiver.expire(Duration::from_secs(60));
        assert_eq!(receiver.held().0, 1000, "a fresh body is kept");
        receiver.expire(Duration::ZERO);
        assert_eq!(receiver.held().0, 0);
    }

    #[test]
    fn a_body_that_is_not_the_one_the_head_names_is_refused() {
        let dir = std::env::temp_dir();
        // A chunk changed on the way: the digest catches it.
        let receiver = InTransfer::default();
        let mut transfer = spool(sync(5_000, 0, 1));
        let body_len = transfer.body_len();
        let mut frame = chunk_frame(&transfer.file(), 0, body_len, 1 << 20, None).unwrap();
        let last = frame.len() - 1;
        frame[last] ^= 1;
        receiver.append(&frame[1..], &dir, 1 << 30, 1).unwrap();
        let head = transfer.take_head();
        assert!(matches!(
            receiver.complete::<Key>(&head[1..], 1 << 20),
            Err(TransferError::Mismatch { .. })
        ));
        // A head without its body.
        assert!(matches!(
            receiver.complete::<Key>(&head[1..], 1 << 20),
            Err(TransferError::Mismatch { held: 0, .. })
        ));
    }

    #[test]
    fn chunks_that_skip_or_overrun_or_exceed_the_limit_are_refused() {
        let dir = std::env::temp_dir();
        let transfer = spool(sync(5_000, 0, 1));
        let len = transfer.body_len();
        let chunk = |offset, room| chunk_frame(&transfer.file(), offset, len, room, None).unwrap();
        // A chunk that does not continue what is held.
        let receiver = InTransfer::default();
        assert!(matches!(
            receiver.append(&chunk(100, 100)[1..], &dir, 1 << 30, 1),
            Err(TransferError::Gap {
                offset: 100,
                held: 0
            })
        ));
        receiver
            .append(&chunk(0, 100)[1..], &dir, 1 << 30, 1)
            .unwrap();
        assert!(matches!(
            receiver.append(&chunk(200, 100)[1..], &dir, 1 << 30, 1),
            Err(TransferError::Gap { .. })
        ));
        assert_eq!(receiver.held().0, 0, "a gap gives up the body held");
        // Above the receiver's own limit, whatever the sender allowed.
        assert!(matches!(
            receiver.append(&chunk(0, 100)[1..], &dir, 100, 1),
            Err(TransferError::TooLarge { .. })
        ));
        // Bytes past the announced length.
        let mut overrun = vec![];
        overrun = postcard::to_extend(&(0u64, 10u64, None::<Digest>), overrun).unwrap();
        overrun.extend_from_slice(&[0; 11]);
        assert!(receiver.append(&overrun, &dir, 1 << 30, 1).is_err());
        // Garbage never panics.
        for bytes in [&[][..], &[0x80], &[0, 0], &[5, 0xff, 0xff]] {
            assert!(
                receiver.append(bytes, &dir, 1 << 30, 1).is_err(),
                "{bytes:?}"
            );
            assert!(receiver.complete::<Key>(bytes, 64).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn a_sync_layout_around_another_message_is_refused() {
        let dir = std::env::temp_dir();
        let body = postcard::to_allocvec(&Keys(vec!["a".into()])).unwrap();
        let mut context = Context::new(&SHA256);
        context.update(&body);
        let head = Head {
            body_len: body.len() as u64,
            digest: digest_of(context),
            layout: Layout::Sync {
                snapshot: SnapshotKind::Complete,
                suffix: 0,
                rest: Message::<Key>::SequencePaxos(PaxosMessage {
                    from: 1,
                    to: 2,
                    msg: PaxosMsg::PrepareReq(PrepareReq {
                        n: Ballot::default(),
                    }),
                }),
            },
        };
        let receiver = InTransfer::default();
        let mut chunk = postcard::to_allocvec(&(0u64, body.len() as u64, None::<Digest>)).unwrap();
        chunk.extend_from_slice(&body);
        receiver.append(&chunk, &dir, 1 << 30, 1).unwrap();
        let head = postcard::to_allocvec(&head).unwrap();
        assert!(matches!(
            receiver.complete::<Key>(&head, 64),
            Err(TransferError::Malformed(_))
        ));
    }
}

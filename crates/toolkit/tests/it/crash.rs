//! kill -9 crash test.
//!
//! The parent test re-executes this test binary as a child that runs
//! [`crash_child_writer`] (selected with `--exact --ignored`, enabled by an
//! environment variable). The child writes numbered batches to a
//! `RocksdbStorage` and prints `ACK i` after each `write_atomically`
//! returned. The parent SIGKILLs it at a seeded random moment, reopens the
//! directory and checks that every acknowledged batch is there in full and
//! that no batch is half-applied. The same directory goes through every
//! iteration, so recovery is itself crashed and recovered.
//!
//! `TSORACLE_CRASH_ITERATIONS` (default 50) sets the number of kills;
//! `TSORACLE_CRASH_SEED` replays a schedule (the seed is printed).

use std::{
    env,
    fs::File,
    io::{BufRead, BufReader, Write},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use omnipaxos::{
    ballot_leader_election::Ballot,
    storage::{Storage, StorageOp},
};

use crate::common::{TestEntry, open_rocks};

const CHILD_DIR_ENV: &str = "TSORACLE_CRASH_CHILD_DIR";
const CHILD_TEST: &str = "crash::crash_child_writer";
/// No single wait in the parent lasts longer than this.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// A child whose parent vanished stops on its own after this.
const CHILD_LIFETIME: Duration = Duration::from_secs(120);

const ENTRIES_PER_BATCH: usize = 3;
/// Every `TRIM_EVERY`-th batch also trims the log, in the same write.
const TRIM_EVERY: usize = 5;

/// The ops of batch `i`: three entries whose values are their absolute
/// indices, a promise with `n = i`, the decided index at the new end, and
/// every fifth batch a trim of all but the last batch.
fn batch(i: usize) -> Vec<StorageOp<TestEntry>> {
    let mut ops = Vec::new();
    if let Some(t) = trim_point_of(i) {
        ops.push(StorageOp::Trim(t));
        ops.push(StorageOp::SetCompactedIdx(t));
    }
    let start = ENTRIES_PER_BATCH * i;
    ops.push(StorageOp::AppendEntries(
        (start..start + ENTRIES_PER_BATCH)
            .map(|v| TestEntry(v as u64))
            .collect(),
    ));
    ops.push(StorageOp::SetPromise(promise(i)));
    ops.push(StorageOp::SetDecidedIndex(ENTRIES_PER_BATCH * (i + 1)));
    ops
}

fn trim_point_of(i: usize) -> Option<usize> {
    (i % TRIM_EVERY == TRIM_EVERY - 1).then(|| ENTRIES_PER_BATCH * (i - 1))
}

fn promise(i: usize) -> Ballot {
    Ballot::with(1, u32::try_from(i).unwrap(), 0, 1)
}

/// The compacted index after batches `0..batches` were applied.
fn expected_compacted(batches: usize) -> usize {
    (0..batches).rev().find_map(trim_point_of).unwrap_or(0)
}

#[test]
#[ignore = "child process of kill_9_never_loses_or_splits_a_batch; a no-op unless TSORACLE_CRASH_CHILD_DIR is set"]
fn crash_child_writer() {
    let Some(dir) = env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let started = Instant::now();
    let mut storage = open_rocks(Path::new(&dir)).unwrap();
    let mut i = storage.get_decided_idx().unwrap() / ENTRIES_PER_BATCH;
    let mut out = std::io::stdout().lock();
    while started.elapsed() < CHILD_LIFETIME {
        storage.write_atomically(batch(i)).unwrap();
        // Acknowledged only after write_atomically returned.
        if writeln!(out, "ACK {i}").and_then(|()| out.flush()).is_err() {
            return; // The parent is gone.
        }
        i += 1;
    }
}

/// Reads the child's stdout on a thread so the parent can wait with a
/// timeout; ends when the child's stdout closes.
fn ack_reader(child: &mut Child) -> mpsc::Receiver<usize> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // libtest prints `test <name> ... ` without a newline before the
            // test's own output, so the first ACK shares its line.
            if let Some((_, n)) = line.split_once("ACK ")
                && tx.send(n.trim().parse().unwrap()).is_err()
            {
                return;
            }
        }
    });
    rx
}

fn child_stderr(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Checks the recovered directory and returns the number of complete batches.
fn verify(dir: &Path, acked: Option<usize>, context: &str) -> usize {
    let s = open_rocks(dir).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    let decided = s.get_decided_idx().unwrap();
    assert_eq!(
        decided % ENTRIES_PER_BATCH,
        0,
        "{context}: decided {decided}"
    );
    let batches = decided / ENTRIES_PER_BATCH;
    if let Some(a) = acked {
        assert!(
            batches > a,
            "{context}: acknowledged batch {a} lost ({batches} batches)"
        );
    }
    // The child writes one batch at a time: at most one is unacknowledged.
    let acked_batches = acked.map_or(0, |a| a + 1);
    assert!(
        batches <= acked_batches + 1,
        "{context}: {batches} batches, {acked_batches} acked"
    );
    // Promise, compacted index and log agree with the same last batch.
    let expected_promise = batches.checked_sub(1).map(promise);
    assert_eq!(
        s.get_promise().unwrap(),
        expected_promise,
        "{context}: promise"
    );
    let compacted = expected_compacted(batches);
    assert_eq!(
        s.get_compacted_idx().unwrap(),
        compacted,
        "{context}: compacted"
    );
    let log_len = s.get_log_len().unwrap();
    assert_eq!(log_len + compacted, decided, "{context}: log end");
    let values: Vec<u64> = s
        .get_entries(compacted, decided)
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    let expected: Vec<u64> = (compacted as u64..decided as u64).collect();
    assert_eq!(values, expected, "{context}: entries");
    assert_eq!(
        s.verify_log().unwrap(),
        log_len as u64,
        "{context}: verify_log"
    );
    batches
}

#[test]
fn kill_9_never_loses_or_splits_a_batch() {
    let iterations: usize = env::var("TSORACLE_CRASH_ITERATIONS")
        .ok()
        .map(|v| v.parse().expect("TSORACLE_CRASH_ITERATIONS"))
        .unwrap_or(50);
    let seed: u64 = env::var("TSORACLE_CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("TSORACLE_CRASH_SEED"))
        .unwrap_or_else(|| fastrand::u64(..));
    println!(
        "crash test: seed {seed} (replay with TSORACLE_CRASH_SEED={seed}), {iterations} kills"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let exe = env::current_exe().unwrap();
    let mut acked: Option<usize> = None;
    let started = Instant::now();
    let mut total_acks = 0usize;
    let mut kills_before_first_ack = 0usize;
    for iteration in 0..iterations {
        let context = format!("seed {seed} iteration {iteration}");
        // A quarter of the kills land at a random time, possibly during the
        // child's open or recovery; the rest after a random number of acks
        // plus a random delay, i.e. anywhere inside a write.
        let kill_on_timer = rng.usize(0..4) == 0;
        let target_acks = rng.usize(1..=12);
        let delay = Duration::from_micros(rng.u64(0..if kill_on_timer { 80_000 } else { 4_000 }));
        let stderr_path = tmp.path().join(format!("child-{iteration}.stderr"));
        let mut child = Command::new(&exe)
            .args([
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let acks = ack_reader(&mut child);
        let mut next = acked.map_or(0, |a| a + 1);
        let mut seen = 0;
        if kill_on_timer {
            thread::sleep(delay);
        } else {
            while seen < target_acks {
                match acks.recv_timeout(STEP_TIMEOUT) {
                    Ok(i) => {
                        assert_eq!(i, next, "{context}: acks out of order");
                        acked = Some(i);
                        next += 1;
                        seen += 1;
                    }
                    Err(e) => {
                        let _ = child.kill();
                        let status = child.wait().unwrap();
                        panic!(
                            "{context}: no ack from the child ({e:?}, {status}); stderr:\n{}",
                            child_stderr(&stderr_path)
                        );
                    }
                }
            }
            thread::sleep(delay);
        }
        // SIGKILL on Unix: no destructors, no flush, no clean close.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        // Every ACK the child printed before it died counts as acknowledged.
        loop {
            match acks.recv_timeout(STEP_TIMEOUT) {
                Ok(i) => {
                    assert_eq!(i, next, "{context}: acks out of order");
                    acked = Some(i);
                    next += 1;
                    seen += 1;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{context}: child stdout did not close after the kill")
                }
            }
        }
        // Anything but death by SIGKILL means the child failed on its own.
        assert_eq!(
            status.signal(),
            Some(9),
            "{context}: child was not killed but exited: {status}; stderr:\n{}",
            child_stderr(&stderr_path)
        );
        total_acks += seen;
        kills_before_first_ack += usize::from(seen == 0);
        let batches = verify(&dir, acked, &context);
        // Batches past the last ack were durable but unacknowledged: the
        // next child continues after them, and they count from now on.
        if batches > acked.map_or(0, |a| a + 1) {
            acked = Some(batches - 1);
        }
    }
    println!(
        "crash test: {iterations} kills ({kills_before_first_ack} before the child's first ack), \
         {total_acks} acknowledged batches, {:?}",
        started.elapsed()
    );
}

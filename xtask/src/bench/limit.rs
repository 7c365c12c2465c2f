//! The machine's own limit for one durable, replicated commit, measured in
//! the same run as the drivers: one synced 64-byte write on the file system
//! that holds the nodes' data, plus one 64-byte round trip over loopback TCP.
//! No consensus protocol can commit faster than its leader can sync once and
//! hear back from a peer once.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::report::{Limit, percentile};

/// Measures `rounds` synced writes in `dir` and `rounds` loopback round trips.
pub(crate) fn measure(dir: &Path, rounds: usize) -> Result<Limit> {
    let path = dir.join("limit-probe");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let record = [0x5au8; 64];
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on loopback")?;
    let addr = listener.local_addr()?;
    // The echo side: one connection, 64 bytes back for every 64 bytes in.
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        loop {
            if stream.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            stream.write_all(&buf)?;
        }
    });
    let mut client = TcpStream::connect(addr).context("cannot connect over loopback")?;
    client.set_nodelay(true)?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut sync_ms = Vec::with_capacity(rounds);
    let mut rtt_ms = Vec::with_capacity(rounds);
    let mut both_ms = Vec::with_capacity(rounds);
    let mut buf = [0u8; 64];
    for round in 0..rounds {
        if round % 64 == 0 {
            super::cluster::interrupt::check()?;
        }
        // Appending (not overwriting) so each sync also persists a size
        // change, as a log append does.
        let offset = (round as u64) * 64;
        let start = Instant::now();
        file.write_all_at(&record, offset)?;
        file.sync_data()?;
        let synced = start.elapsed();
        let start = Instant::now();
        client.write_all(&record)?;
        client.read_exact(&mut buf)?;
        let rtt = start.elapsed();
        sync_ms.push(synced.as_secs_f64() * 1e3);
        rtt_ms.push(rtt.as_secs_f64() * 1e3);
        both_ms.push((synced + rtt).as_secs_f64() * 1e3);
    }
    drop(client);
    let _ = echo.join();
    let _ = std::fs::remove_file(&path);
    Ok(Limit {
        rounds,
        sync_p50_ms: percentile(&mut sync_ms, 0.5),
        sync_p99_ms: percentile(&mut sync_ms, 0.99),
        rtt_p50_ms: percentile(&mut rtt_ms, 0.5),
        rtt_p99_ms: percentile(&mut rtt_ms, 0.99),
        p50_ms: percentile(&mut both_ms, 0.5),
        p99_ms: percentile(&mut both_ms, 0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_measured_and_positive() {
        let dir = tempfile::tempdir().unwrap();
        let limit = measure(dir.path(), 20).unwrap();
        assert_eq!(limit.rounds, 20);
        assert!(limit.p50_ms > 0.0 && limit.p99_ms >= limit.p50_ms);
        assert!(limit.sync_p50_ms > 0.0 && limit.rtt_p50_ms > 0.0);
    }
}

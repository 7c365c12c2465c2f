//! A node's incarnation number, persisted in one small file.
//!
//! Proposal ids are `(node, incarnation, seq)`. After a crash the durable log
//! can still hold ids of the last run that this node never saw applied, so a
//! restart must not mint them again: each start takes a number larger than
//! every earlier one, and makes it durable before using it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Reads the incarnation stored in `path` (0 when the file does not exist),
/// stores the next one durably (write a temporary file, sync it, rename it
/// over `path`, sync the directory) and returns it.
///
/// # Errors
///
/// I/O errors, and [`io::ErrorKind::InvalidData`] when the file does not hold
/// a number (a corrupt file is never silently reset to 0).
pub fn next_incarnation(path: &Path) -> io::Result<u64> {
    let previous = match fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold an incarnation number: {err}",
                    path.display()
                ),
            )
        })?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => 0,
        Err(err) => return Err(err),
    };
    let next = previous.checked_add(1).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "incarnation number exhausted")
    })?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp)?;
        writeln!(file, "{next}")?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_returns_a_larger_number_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incarnation");
        assert_eq!(next_incarnation(&path).unwrap(), 1);
        assert_eq!(next_incarnation(&path).unwrap(), 2);
        assert_eq!(next_incarnation(&path).unwrap(), 3);
        fs::write(&path, "not a number").unwrap();
        let err = next_incarnation(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a number");
    }
}

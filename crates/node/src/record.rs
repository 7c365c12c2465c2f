//! The node's durable record of the configuration it boots:
//! `<data-dir>/configuration`.
//!
//! A membership change moves a node from one OmniPaxos configuration to the
//! next, each on storage of its own (`db/` for the founding configuration 1,
//! `db-<id>/` for configuration `id` > 1, never a log shared between two
//! configurations). The record names the configuration to start after a
//! restart, whether this node still waits for that configuration's genesis
//! (a new member that joined), and the node's instance: the data directory's
//! identity, the same in every configuration (the cluster's registry carries
//! it across a change, so a new instance would read as an impostor).
//!
//! It is written when the node founds a cluster, when it joins, and when it
//! applied the genesis of a later configuration; always to a temporary file,
//! synced, renamed over the old one, and the directory synced, so a crash
//! leaves the old record or the new one. A node that crashes between a
//! configuration's StopSign and the next one's genesis boots the old
//! configuration again, finds the StopSign in its log and moves on.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tsoracle_paxos_state::Membership;
use tsoracle_paxos_toolkit::InstanceId;
use tsoracle_paxos_toolkit::storage::codec::{decode_record, encode_record};

/// The record file's name in the data directory.
const FILE: &str = "configuration";

/// What a node boots: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConfigRecord {
    /// The configuration's member list (and id).
    pub(crate) membership: Membership,
    /// This node joined that configuration and has not applied its genesis.
    pub(crate) joining: bool,
    /// The data directory's instance, presented in every configuration.
    pub(crate) instance: InstanceId,
}

/// Why the record cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a record this build reads (torn, edited, foreign).
    #[error("{path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigRecord {
    /// The record in `data_dir`, or `None` when there is none (a directory
    /// that never ran, or one from before membership changes: configuration
    /// 1 under `db/`).
    ///
    /// # Errors
    ///
    /// [`RecordError`] for an unreadable or damaged file.
    pub(crate) fn load(data_dir: &Path) -> Result<Option<Self>, RecordError> {
        let path = data_dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RecordError::Io { path, source }),
        };
        decode_record("configuration record", &bytes)
            .map(Some)
            .map_err(|err| RecordError::Damaged {
                path,
                reason: err.to_string(),
            })
    }

    /// Replaces the record in `data_dir` atomically and durably.
    ///
    /// # Errors
    ///
    /// [`RecordError`] when it cannot be written and synced.
    pub(crate) fn store(&self, data_dir: &Path) -> Result<(), RecordError> {
        let path = data_dir.join(FILE);
        let bytes =
            encode_record("configuration record", self).map_err(|err| RecordError::Damaged {
                path: path.clone(),
                reason: err.to_string(),
            })?;
        let temporary = data_dir.join(format!("{FILE}.tmp"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordError::Io { path, source }
        };
        let mut file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
        file.write_all(&bytes).map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
        drop(file);
        std::fs::rename(&temporary, &path).map_err(io(&path))?;
        std::fs::File::open(data_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io(data_dir))
    }
}

/// Where configuration `configuration`'s storage lives in `data_dir`.
#[must_use]
pub(crate) fn db_dir(data_dir: &Path, configuration: u32) -> PathBuf {
    if configuration <= 1 {
        data_dir.join("db")
    } else {
        data_dir.join(format!("db-{configuration}"))
    }
}

#[cfg(test)]
mod tests {
    use tsoracle_paxos_state::MemberRecord;

    use super::*;

    fn record(configuration: u32) -> ConfigRecord {
        let members = (1..=3)
            .map(|id| MemberRecord {
                id,
                peer_address: format!("127.0.0.1:{}", 6000 + id),
                client_endpoint: format!("127.0.0.1:{}", 7000 + id),
            })
            .collect();
        ConfigRecord {
            membership: Membership::new(configuration, members).unwrap(),
            joining: configuration > 2,
            instance: InstanceId(u128::from(configuration) << 64 | 7),
        }
    }

    #[test]
    fn a_stored_record_loads_back_and_a_newer_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ConfigRecord::load(dir.path()).unwrap(), None);
        record(2).store(dir.path()).unwrap();
        assert_eq!(ConfigRecord::load(dir.path()).unwrap(), Some(record(2)));
        record(3).store(dir.path()).unwrap();
        assert_eq!(ConfigRecord::load(dir.path()).unwrap(), Some(record(3)));
        assert!(!dir.path().join("configuration.tmp").exists());
    }

    #[test]
    fn a_damaged_record_is_refused_not_mistaken_for_none() {
        let dir = tempfile::tempdir().unwrap();
        record(2).store(dir.path()).unwrap();
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = ConfigRecord::load(dir.path()).unwrap_err();
        assert!(matches!(err, RecordError::Damaged { .. }), "{err}");
    }

    #[test]
    fn configuration_one_keeps_the_founding_directory() {
        let dir = Path::new("/data");
        assert_eq!(db_dir(dir, 1), Path::new("/data/db"));
        assert_eq!(db_dir(dir, 4), Path::new("/data/db-4"));
    }
}

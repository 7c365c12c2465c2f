//! Which cluster and node a storage directory belongs to.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The owner of a storage directory: one node of one cluster.
///
/// It is recorded when a directory is initialized and checked on every open,
/// so a node started with another node's (or another cluster's) data
/// directory refuses to run instead of joining with a foreign log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StorageIdentity {
    /// The cluster's name, chosen by the operator and the same on every node.
    pub cluster_id: String,
    /// This node's OmniPaxos id.
    pub node_id: u64,
}

impl StorageIdentity {
    /// Builds an identity.
    pub fn new(cluster_id: impl Into<String>, node_id: u64) -> Self {
        StorageIdentity {
            cluster_id: cluster_id.into(),
            node_id,
        }
    }
}

impl fmt::Display for StorageIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {:?} node {}", self.cluster_id, self.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::codec::{decode_record, encode_record};

    #[test]
    fn golden_identity_record() {
        let fixture = include_bytes!("../../testdata/record-identity.bin");
        let id = StorageIdentity::new("c1", 5);
        assert_eq!(encode_record("identity", &id).unwrap(), fixture);
        assert_eq!(
            decode_record::<StorageIdentity>("identity", fixture).unwrap(),
            id
        );
    }

    #[test]
    fn display_names_cluster_and_node() {
        assert_eq!(
            StorageIdentity::new("prod", 3).to_string(),
            "cluster \"prod\" node 3"
        );
    }
}

//! A data directory's instance id and the peer admission that checks it.
//!
//! A node id names a seat in the configuration; the instance id names the
//! data directory sitting in it. It is drawn at random when a directory is
//! initialized and never changes, so a node that lost its directory (a wiped
//! disk, a failed mount, an operator's mistake) comes back with another
//! instance. Its promises are gone with the old directory: Paxos forbids it
//! to vote again under its old id. Every transport presents the sender's
//! instance with its messages, and the [`Inbox`](crate::Inbox) asks a
//! [`PeerAdmission`] whether that instance may speak for that node.

use std::fmt;

use omnipaxos::util::NodeId;
use serde::{Deserialize, Serialize};

/// The random identity of one data directory (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceId(pub u128);

impl InstanceId {
    /// A fresh id from the operating system's random generator.
    ///
    /// # Errors
    ///
    /// The generator's error, when the OS has none to offer.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(Self(u128::from_le_bytes(bytes)))
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for InstanceId {
    type Err = std::num::ParseIntError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(text, 16).map(Self)
    }
}

/// A peer that presents an instance other than the one its cluster holds
/// for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "node {node} presents data directory instance {}, but the cluster registered node {node} \
     with instance {registered}: that node's data directory was wiped or replaced, so it has \
     lost its Paxos promises and may not vote under id {node} again; restore its data \
     directory, or remove node {node} from the cluster and add it back as a new member",
    presented.map_or_else(|| "none".to_owned(), |id| id.to_string())
)]
pub struct Impostor {
    /// The node id the peer speaks as.
    pub node: NodeId,
    /// The instance it presented (`None`: its transport presents none).
    pub presented: Option<InstanceId>,
    /// The instance on record for `node`.
    pub registered: InstanceId,
}

/// Decides whether a peer presenting `instance` may speak as `node`.
///
/// Called for every inbound message on the transport's task, so it must be
/// cheap and must not block. A node not registered yet is admitted (a
/// founding member before its registration is decided).
pub trait PeerAdmission: Send + Sync + 'static {
    /// `Ok` to deliver, or why not.
    ///
    /// # Errors
    ///
    /// [`Impostor`] when `node` is registered with another instance.
    fn admit(&self, node: NodeId, instance: Option<InstanceId>) -> Result<(), Impostor>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_prints_and_parses_as_32_hex_digits() {
        let id = InstanceId(0xfeed);
        assert_eq!(id.to_string(), "0000000000000000000000000000feed");
        assert_eq!(id.to_string().parse::<InstanceId>().unwrap(), id);
        assert!("not hex".parse::<InstanceId>().is_err());
    }

    #[test]
    fn random_instances_differ() {
        assert_ne!(InstanceId::random().unwrap(), InstanceId::random().unwrap());
    }

    #[test]
    fn the_refusal_says_what_happened_and_the_way_out() {
        let text = Impostor {
            node: 2,
            presented: Some(InstanceId(0xb)),
            registered: InstanceId(0xa),
        }
        .to_string();
        assert!(
            text.contains("node 2 presents data directory instance"),
            "{text}"
        );
        assert!(text.contains("wiped or replaced"), "{text}");
        assert!(text.contains("restore its data directory"), "{text}");
        assert!(text.contains("add it back as a new member"), "{text}");
    }
}

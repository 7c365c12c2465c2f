//! Versioned byte framing shared by the command and the snapshot.
//!
//! Every record is serialized as `(version: u8, payload...)`. The serde impls
//! check the version so any serde format refuses a record it cannot read; the
//! byte helpers also check it up front, because postcard drops the text of a
//! custom serde error and the operator deserves the version number.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::StateError;

/// Serializes `payload` behind a leading `version` byte.
pub(crate) fn serialize_versioned<S, T>(
    serializer: S,
    version: u8,
    payload: &T,
) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    T: Serialize,
{
    let mut tuple = serializer.serialize_tuple(2)?;
    tuple.serialize_element(&version)?;
    tuple.serialize_element(payload)?;
    tuple.end()
}

/// Reads a `version` byte, refuses any other version, then reads the payload.
pub(crate) fn deserialize_versioned<'de, D, T>(
    deserializer: D,
    version: u8,
    what: &'static str,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct VersionedVisitor<T> {
        version: u8,
        what: &'static str,
        _payload: PhantomData<T>,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for VersionedVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a version {} {}", self.version, self.what)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
            let found: u8 = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(0, &self))?;
            if found != self.version {
                return Err(de::Error::custom(format_args!(
                    "{} has format version {found}, this build reads version {}",
                    self.what, self.version
                )));
            }
            seq.next_element()?
                .ok_or_else(|| de::Error::invalid_length(1, &self))
        }
    }

    deserializer.deserialize_tuple(
        2,
        VersionedVisitor {
            version,
            what,
            _payload: PhantomData,
        },
    )
}

/// Encodes a record with postcard.
pub(crate) fn to_bytes<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, StateError> {
    postcard::to_stdvec(value).map_err(|source| StateError::Encode { what, source })
}

/// Decodes exactly one record of `version` from `bytes`.
pub(crate) fn from_bytes<T: DeserializeOwned>(
    bytes: &[u8],
    version: u8,
    what: &'static str,
) -> Result<T, StateError> {
    from_bytes_since(bytes, version, version, what)
}

/// Decodes exactly one record of any version from `oldest` to `version`
/// (the serde impl of `T` reads each of them).
pub(crate) fn from_bytes_since<T: DeserializeOwned>(
    bytes: &[u8],
    oldest: u8,
    version: u8,
    what: &'static str,
) -> Result<T, StateError> {
    if let Some(&found) = bytes.first()
        && !(oldest..=version).contains(&found)
    {
        return Err(StateError::UnsupportedVersion {
            what,
            found,
            supported: version,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|source| StateError::Decode { what, source })?;
    if !rest.is_empty() {
        return Err(StateError::TrailingBytes {
            what,
            count: rest.len(),
        });
    }
    Ok(value)
}

/// Serde adapter that pins an [`Epoch`](tsoracle_core::Epoch) to a bare `u128`
/// on the wire, whatever derive the upstream type carries in future releases.
pub(crate) mod epoch_u128 {
    use serde::{Deserialize, Deserializer, Serializer};
    use tsoracle_core::Epoch;

    pub(crate) fn serialize<S: Serializer>(epoch: &Epoch, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u128(epoch.0)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Epoch, D::Error> {
        u128::deserialize(d).map(Epoch)
    }
}

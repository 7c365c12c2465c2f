//! Record framing for every value this crate persists.
//!
//! A record is `[format version: u8][postcard payload][crc32: u32 LE]`, the
//! checksum (CRC-32/ISO-HDLC, as computed by `crc32fast`) covering the version
//! byte and the payload. The version byte lets the format evolve online: a
//! later build can read version 1 and write version 2, and an older build
//! refuses a newer record with [`Error::UnsupportedFormat`] instead of
//! misreading it. The checksum catches bit rot and torn or foreign values
//! that RocksDB's own block checksums cannot see (e.g. a value written by a
//! buggy tool).
//!
//! Decoding never panics on any input; it is a fuzzing target.

use std::fmt::Display;

use serde::{Serialize, de::DeserializeOwned};

use crate::Error;

/// The record format version this build writes, and the only one it reads.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes of framing around the payload: one version byte and four checksum bytes.
pub const FRAME_OVERHEAD: usize = 1 + CRC_LEN;

const CRC_LEN: usize = 4;

/// Encodes `value` as a framed record. `what` names the record in errors (it
/// is formatted only on the error path, so `format_args!` costs nothing).
pub fn encode_record<V: Serialize + ?Sized>(
    what: impl Display,
    value: &V,
) -> Result<Vec<u8>, Error> {
    let framed = postcard::to_extend(value, vec![FORMAT_VERSION]).map_err(|e| Error::Encode {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    Ok(seal(framed))
}

/// Appends the checksum of `body` (version byte and payload) to it.
fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

/// Decodes a framed record, checking its length, checksum, version and that
/// the payload is consumed exactly. `what` names the record in errors.
pub fn decode_record<V: DeserializeOwned>(what: impl Display, bytes: &[u8]) -> Result<V, Error> {
    let Some(body_len) = bytes.len().checked_sub(CRC_LEN).filter(|&n| n >= 1) else {
        return Err(Error::corrupt(
            what.to_string(),
            format!(
                "record is {} bytes, shorter than its {FRAME_OVERHEAD}-byte frame",
                bytes.len()
            ),
        ));
    };
    let (body, crc_bytes) = bytes.split_at(body_len);
    let mut stored = [0u8; CRC_LEN];
    stored.copy_from_slice(crc_bytes);
    let stored = u32::from_le_bytes(stored);
    let computed = crc32fast::hash(body);
    // Checksum before version: garbage must read as corruption, and only an
    // intact record can claim to be from a newer format.
    if stored != computed {
        return Err(Error::corrupt(
            what.to_string(),
            format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"),
        ));
    }
    let Some((&version, payload)) = body.split_first() else {
        return Err(Error::corrupt(
            what.to_string(),
            "record has no version byte",
        ));
    };
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            what: what.to_string(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let (value, rest) = postcard::take_from_bytes::<V>(payload)
        .map_err(|e| Error::corrupt(what.to_string(), format!("payload does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::corrupt(
            what.to_string(),
            format!("{} trailing bytes after the payload", rest.len()),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    // The fixtures under testdata/ were produced by an independent script
    // (Python's zlib.crc32 over hand-written postcard bytes; see
    // testdata/README.md), so these tests pin the framing, not just
    // round-trip it.

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u32,
        name: String,
        flag: bool,
    }

    fn sample() -> Sample {
        Sample {
            id: 7,
            name: "ab".to_owned(),
            flag: true,
        }
    }

    #[test]
    fn golden_u64() {
        let f42 = include_bytes!("../../testdata/record-u64-42.bin");
        let f300 = include_bytes!("../../testdata/record-u64-300.bin");
        assert_eq!(encode_record("x", &42u64).unwrap(), f42);
        assert_eq!(encode_record("x", &300u64).unwrap(), f300);
        assert_eq!(decode_record::<u64>("x", f42).unwrap(), 42);
        assert_eq!(decode_record::<u64>("x", f300).unwrap(), 300);
        assert_eq!(f42, &[0x01, 0x2a, 0x68, 0xea, 0x79, 0x83]);
    }

    #[test]
    fn golden_struct() {
        let fixture = include_bytes!("../../testdata/record-sample-struct.bin");
        assert_eq!(encode_record("x", &sample()).unwrap(), fixture);
        assert_eq!(decode_record::<Sample>("x", fixture).unwrap(), sample());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let good = encode_record("x", &sample()).unwrap();
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                let err = decode_record::<Sample>("x", &bad).unwrap_err();
                assert!(matches!(err, Error::Corrupt { .. }), "{byte}/{bit}: {err}");
            }
        }
    }

    #[test]
    fn short_records_are_corrupt() {
        for len in 0..FRAME_OVERHEAD {
            let err = decode_record::<()>("short", &vec![1u8; len]).unwrap_err();
            assert!(
                matches!(&err, Error::Corrupt { what, reason } if what == "short" && reason.contains("shorter")),
                "{err}"
            );
        }
        // The smallest valid record: a unit payload is zero bytes.
        let unit = encode_record("unit", &()).unwrap();
        assert_eq!(unit.len(), FRAME_OVERHEAD);
        decode_record::<()>("unit", &unit).unwrap();
    }

    #[test]
    fn truncated_record_is_corrupt() {
        let good = encode_record("x", &sample()).unwrap();
        for len in 0..good.len() {
            assert!(matches!(
                decode_record::<Sample>("x", &good[..len]),
                Err(Error::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn newer_version_is_unsupported_not_corrupt() {
        let body = vec![2u8, 0x2a];
        let record = seal(body);
        let err = decode_record::<u64>("meta/promise", &record).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::UnsupportedFormat { what, found: 2, supported: 1 } if what == "meta/promise"
            ),
            "{err}"
        );
    }

    #[test]
    fn trailing_and_undecodable_payloads_are_corrupt() {
        let trailing = seal(vec![FORMAT_VERSION, 0x2a, 0x00]);
        let err = decode_record::<u64>("x", &trailing).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
        // A bool must be 0 or 1.
        let bad_bool = seal(vec![FORMAT_VERSION, 0x02]);
        let err = decode_record::<bool>("x", &bad_bool).unwrap_err();
        assert!(err.to_string().contains("does not decode"), "{err}");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..64 {
            for _ in 0..64 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng.to_le_bytes()[0]
                    })
                    .collect();
                let _ = decode_record::<Sample>("x", &bytes);
                let _ = decode_record::<Vec<String>>("x", &seal(bytes.clone()));
            }
        }
    }
}

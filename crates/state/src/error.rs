//! The crate's error type.

/// Errors of the state crate: byte codecs and the apply cursor.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Serializing a record failed.
    #[error("failed to encode {what}: {source}")]
    Encode {
        /// Which record was being encoded.
        what: &'static str,
        /// The postcard error.
        source: postcard::Error,
    },
    /// The bytes are not a valid record of this format version.
    #[error("failed to decode {what}: {source}")]
    Decode {
        /// Which record was being decoded.
        what: &'static str,
        /// The postcard error.
        source: postcard::Error,
    },
    /// The record starts with a format version this build cannot read.
    #[error("{what} has format version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        /// Which record was being decoded.
        what: &'static str,
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A complete record was followed by unread bytes (a framing bug or corruption).
    #[error("{what} is followed by {count} unexpected trailing bytes")]
    TrailingBytes {
        /// Which record was being decoded.
        what: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// The log was trimmed without a snapshot past what this node applied:
    /// the missing entries' effects are gone, so the state cannot be rebuilt.
    #[error(
        "apply state lost: the log was trimmed up to index {trimmed_idx} without a snapshot, \
         but only entries below {next_idx} were applied"
    )]
    StateLost {
        /// The index the log was trimmed to.
        trimmed_idx: usize,
        /// The cursor's next index when the trim was seen.
        next_idx: usize,
    },
}

//! Errors of the storage crate.
//!
//! Every message says what was expected, what was found and where (object
//! key, byte offset, LSN), because an operator reading it has nothing else.
//! [`Error::kind`] gives the coarse class a caller decides on.

use std::path::PathBuf;
use std::sync::Arc;

use crate::types::{Lsn, PartitionId};

/// Result alias of the storage crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coarse class of an [`Error`], for callers that must decide what to do
/// (retry, report to the user, stop) without parsing messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something unusable (too large, out of range).
    InvalidInput,
    /// Stored data disagrees with what the caller asked for (another
    /// partition count, another owner, a lock held elsewhere).
    Conflict,
    /// The storage backend failed or could not be reached.
    Unavailable,
    /// Stored bytes are damaged: a checksum, length or sequence is wrong.
    Corrupted,
    /// The log was closed or failed earlier and takes no more writes.
    ShutDown,
}

/// What is wrong with a stored object, found while decoding it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The object ends before a structure it must hold is complete.
    #[error("truncated: {what} needs {needed} bytes, {available} available")]
    Truncated {
        /// Which structure was cut (segment header, record header, payload).
        what: &'static str,
        /// Bytes the structure needs from the offset.
        needed: u64,
        /// Bytes the object still has from the offset.
        available: u64,
    },
    /// The magic bytes do not name this kind of object.
    #[error("bad magic (expected {expected:?}, found {found:?})")]
    BadMagic {
        /// The magic this kind of object starts with.
        expected: [u8; 4],
        /// The bytes found instead.
        found: [u8; 4],
    },
    /// The object was written by a format this build does not read.
    #[error("unsupported format version (expected {expected}, found {found})")]
    UnsupportedVersion {
        /// The newest format this build reads.
        expected: u16,
        /// The version in the object.
        found: u16,
    },
    /// A checksum does not match the bytes it covers.
    #[error("checksum mismatch (expected {expected:#010x}, found {found:#010x})")]
    ChecksumMismatch {
        /// The checksum stored in the object.
        expected: u32,
        /// The checksum computed over the bytes read.
        found: u32,
    },
    /// The object belongs to another partition than its key says.
    #[error("wrong partition (expected {expected}, found {found})")]
    WrongPartition {
        /// The partition the key names.
        expected: u32,
        /// The partition in the header.
        found: u32,
    },
    /// A header field disagrees with the object's key.
    #[error("header disagrees with object name on {field} (expected {expected}, found {found})")]
    NameMismatch {
        /// Which field (epoch, first LSN, checkpoint LSN).
        field: &'static str,
        /// The value in the name.
        expected: u64,
        /// The value in the header.
        found: u64,
    },
    /// A record's LSN skips ahead: records are missing.
    #[error("LSN gap (expected LSN {expected}, found {found})")]
    LsnGap {
        /// The next LSN in sequence.
        expected: u64,
        /// The LSN found.
        found: u64,
    },
    /// A record's LSN goes backwards or repeats.
    #[error("LSN repeat (expected LSN {expected}, found {found})")]
    LsnRepeat {
        /// The next LSN in sequence.
        expected: u64,
        /// The LSN found.
        found: u64,
    },
    /// A length field claims more than any valid object can hold.
    #[error("length {found} exceeds the maximum {max}")]
    LengthTooLarge {
        /// The largest valid length.
        max: u64,
        /// The length found.
        found: u64,
    },
    /// A metadata document (JSON) does not parse.
    #[error("unreadable metadata: {0}")]
    BadMetadata(String),
}

/// A damaged stored object: which object, where in it, and what is wrong (I6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {problem} at offset {offset}")]
pub struct Damage {
    /// The object key (relative to the task hub root).
    pub object: String,
    /// Byte offset in the object where the damage starts.
    pub offset: u64,
    /// What is wrong.
    pub problem: Problem,
}

/// Errors of the storage crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Stored bytes are damaged (I6).
    #[error("corrupted {0}")]
    Corrupted(#[from] Damage),

    /// The log is missing records between two objects, or two objects overlap.
    #[error(
        "partition {partition}: log is not contiguous: {after} ends at LSN {end}, but {next} starts at LSN {start}"
    )]
    Discontinuous {
        /// The partition whose log is broken.
        partition: PartitionId,
        /// The object (or checkpoint) before the break.
        after: String,
        /// The last LSN it covers.
        end: Lsn,
        /// The object after the break.
        next: String,
        /// The first LSN it holds.
        start: Lsn,
    },

    /// The object store failed on an object.
    #[error("object store failed on {object}: {source}")]
    Store {
        /// The object key.
        object: String,
        /// What the store said.
        #[source]
        source: object_store::Error,
    },

    /// A local file operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },

    /// Another process holds the task hub (I5).
    #[error(
        "task hub {} is in use by another process (lock file {}{holder}); stop it first",
        dir.display(),
        lock.display()
    )]
    Locked {
        /// The task hub directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// ", held by pid N" when the holder wrote its pid, else empty.
        holder: String,
    },

    /// The stored task hub was created with other parameters.
    #[error(
        "task hub {location}: {field} mismatch: this process expects {expected}, the hub has {found}"
    )]
    HubMismatch {
        /// Where the hub is.
        location: String,
        /// Which parameter.
        field: &'static str,
        /// What this process asked for.
        expected: String,
        /// What `taskhub.json` holds.
        found: String,
    },

    /// There is no task hub where one was expected.
    #[error("no task hub at {location} ({object} not found)")]
    HubNotFound {
        /// Where the hub was looked for.
        location: String,
        /// The metadata object key.
        object: String,
    },

    /// The caller passed something unusable.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A partition log is already open in this process.
    #[error("partition {0} is already open in this process")]
    AlreadyOpen(PartitionId),

    /// An earlier write failed, so the log takes no more writes; reopen it to
    /// recover. Every waiter of the failed batch and after gets this error.
    #[error("partition {partition} log failed and takes no more writes: {cause}")]
    LogFailed {
        /// The partition.
        partition: PartitionId,
        /// The first failure.
        cause: Arc<Error>,
    },

    /// The log was closed.
    #[error("partition {0} log is closed")]
    Closed(PartitionId),

    /// A partition's store of records (its lower tier) failed.
    #[error("state store {store} failed to {operation}: {source}")]
    StateStore {
        /// The store (`location/p{NN}/state`).
        store: String,
        /// What was being done.
        operation: &'static str,
        /// What the store said.
        #[source]
        source: Box<slatedb::Error>,
    },
}

impl Error {
    /// The coarse class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Corrupted(_) | Error::Discontinuous { .. } => ErrorKind::Corrupted,
            Error::Store { .. } | Error::Io { .. } | Error::HubNotFound { .. } => {
                ErrorKind::Unavailable
            }
            Error::Locked { .. } | Error::HubMismatch { .. } | Error::AlreadyOpen(_) => {
                ErrorKind::Conflict
            }
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::LogFailed { .. } | Error::Closed(_) => ErrorKind::ShutDown,
            Error::StateStore { source, .. } => match source.kind() {
                slatedb::ErrorKind::Data => ErrorKind::Corrupted,
                slatedb::ErrorKind::Invalid => ErrorKind::InvalidInput,
                slatedb::ErrorKind::Closed(_) => ErrorKind::ShutDown,
                _ => ErrorKind::Unavailable,
            },
        }
    }

    pub(crate) fn store(object: impl Into<String>, source: object_store::Error) -> Error {
        Error::Store {
            object: object.into(),
            source,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
